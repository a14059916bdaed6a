//! Performs a tool call's [`CallRecord`]: its Envoy stats (defined once per name per VM, then only
//! incremented), its access-log properties and its audit line.

use super::abi;
use crate::metrics::{AuditLevel, CallRecord, MetricKind, Observability, Sampled, Stats};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MetricType};
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    /// Envoy's log level, read at most once a second (see [`Sampled`]).
    static LOG_LEVEL: RefCell<Sampled> = RefCell::new(Sampled::default());
    /// Metric ids by name, for the tools [`Stats`] does not know: a name is defined with Envoy the first
    /// time it is counted.
    static IDS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
}

/// Counts, logs and (for the request's first call) sets the access-log properties of `records`.
pub fn emit(obs: &Observability, stats: &Stats, records: &[CallRecord], now_ms: u64, first: bool) {
    if first && obs.access_log {
        if let Some(r) = records.first() {
            for (name, value) in r.properties() {
                let _ = abi::set_property(name, value);
            }
        }
    }
    // Envoy drops a line below its log level; the line is not even formatted then (at `info`, under an Envoy
    // running at `warn`, formatting it was most of the audit's cost per call). The level is read only for
    // audit lines, and at most once a second.
    let envoy_level = match obs.audit {
        AuditLevel::Off => 0,
        _ => LOG_LEVEL.with(|l| l.borrow_mut().get(now_ms, || hostcalls::get_log_level().map_or(0, |l| l as u32))),
    };
    for r in records {
        if obs.stats {
            stats.count(r, &mut define, &mut update);
        }
        log_audit(obs, r, now_ms, envoy_level);
    }
}

/// Writes `r`'s audit line alone (no stats, no access-log properties).
pub fn audit(obs: &Observability, r: &CallRecord, now_ms: u64) {
    if obs.audit != AuditLevel::Off {
        let envoy_level =
            LOG_LEVEL.with(|l| l.borrow_mut().get(now_ms, || hostcalls::get_log_level().map_or(0, |l| l as u32)));
        log_audit(obs, r, now_ms, envoy_level);
    }
}

/// `r`'s audit line at the configured level, unless Envoy's level (`envoy_level`) drops it.
fn log_audit(obs: &Observability, r: &CallRecord, now_ms: u64, envoy_level: u32) {
    let level = match obs.audit {
        AuditLevel::Off => return,
        AuditLevel::Debug => LogLevel::Debug,
        AuditLevel::Info => LogLevel::Info,
        AuditLevel::Warn => LogLevel::Warn,
    };
    if (level as u32) >= envoy_level {
        let _ = hostcalls::log(level, &r.audit_line(now_ms));
    }
}

/// Marks a virtual server's own call through the bridge ([`crate::loopback`]) as that virtual server's, which
/// Envoy otherwise logs and counts as any request to the SSE server: the access-log properties
/// `mcp_server_name` and `mcp_virtual_server`, and its own counter.
pub fn loopback(obs: &Observability, server: &str, caller: &str) {
    if obs.access_log {
        let _ = abi::set_property("mcp_server_name", server);
        let _ = abi::set_property("mcp_virtual_server", caller);
    }
    if obs.stats {
        if let Some(id) = define(MetricKind::Counter, &crate::metrics::loopback_metric(server, caller)) {
            update(MetricKind::Counter, id, 1);
        }
    }
}

/// Envoy's id for a metric name, defined the first time (by name: the ids of [`Stats`]'s slots are kept
/// there, this map holds the others).
fn define(kind: MetricKind, name: &str) -> Option<u32> {
    IDS.with(|ids| {
        let mut ids = ids.borrow_mut();
        if let Some(id) = ids.get(name) {
            return Some(*id);
        }
        let t = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Histogram => MetricType::Histogram,
        };
        let id = hostcalls::define_metric(t, name).ok()?;
        ids.insert(name.to_string(), id);
        Some(id)
    })
}

fn update(kind: MetricKind, id: u32, value: u64) {
    let _ = match kind {
        MetricKind::Counter => hostcalls::increment_metric(id, value as i64),
        MetricKind::Histogram => hostcalls::record_metric(id, value),
    };
}
