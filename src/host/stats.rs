//! Performs a tool call's [`CallRecord`]: its Envoy stats (defined once per name per VM, then only
//! incremented), its access-log properties and its audit line.

use super::abi;
use crate::metrics::{AuditLevel, CallRecord, MetricKind, Observability};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MetricType};
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    /// Metric ids by name: a name is defined with Envoy the first time it is counted.
    static IDS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
}

/// Counts, logs and (for the request's first call) sets the access-log properties of `records`.
pub fn emit(obs: &Observability, records: &[CallRecord], now_ms: u64, first: bool) {
    if first {
        if let Some(r) = records.first() {
            for (name, value) in r.properties() {
                let _ = abi::set_property(name, value);
            }
        }
    }
    // Envoy drops a line below its log level; the line is not even formatted then (at `info`, under an Envoy
    // running at `warn`, formatting it was most of the audit's cost per call).
    let envoy_level = hostcalls::get_log_level().map_or(0, |l| l as u32);
    for r in records {
        if obs.stats {
            for m in r.metrics() {
                count(m.kind, m.name, m.value);
            }
        }
        let level = match obs.audit {
            AuditLevel::Off => continue,
            AuditLevel::Debug => LogLevel::Debug,
            AuditLevel::Info => LogLevel::Info,
            AuditLevel::Warn => LogLevel::Warn,
        };
        if (level as u32) >= envoy_level {
            let _ = hostcalls::log(level, &r.audit_line(now_ms));
        }
    }
}

fn count(kind: MetricKind, name: String, value: u64) {
    IDS.with(|ids| {
        let mut ids = ids.borrow_mut();
        let id = match ids.get(&name) {
            Some(id) => *id,
            None => {
                let t = match kind {
                    MetricKind::Counter => MetricType::Counter,
                    MetricKind::Histogram => MetricType::Histogram,
                };
                let Ok(id) = hostcalls::define_metric(t, &name) else { return };
                ids.insert(name, id);
                id
            }
        };
        let _ = match kind {
            MetricKind::Counter => hostcalls::increment_metric(id, value as i64),
            MetricKind::Histogram => hostcalls::record_metric(id, value),
        };
    });
}
