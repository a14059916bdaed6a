//! What each tool call leaves behind for operators: Envoy stats (counters and a latency histogram per
//! server and tool), access-log properties and one structured audit line. The exchange produces one
//! [`CallRecord`] per `tools/call`; this module turns it into metric names, property values and the audit
//! line, and the host (`crate::host`) performs them with hostcalls.
//!
//! Metric names carry their tags Istio's way (`mcp_server=.=demo;.;...;.;mcp_calls_total`) so that the
//! `stats_tags` of envoy/envoy.yaml extract them: `/stats/prometheus` then shows
//! `mcp_calls_total{mcp_server="demo",mcp_tool="get_user",outcome="ok"}` (Envoy strips the `wasmcustom.`
//! namespace it gives plugin metrics, and adds no `envoy_` prefix to them).

use crate::caller::Caller;
use crate::json::object;
use crate::jsonrpc::Reply;
use crate::upstream::UpstreamResult;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

/// `observability:` as written.
#[derive(Debug, Clone)]
pub struct ObservabilityConfig {
    /// Define and update the plugin's Envoy stats (default true).
    pub stats: bool,
    /// The Envoy log level of audit lines: `debug`, `info` (default), `warn`, or `off`.
    pub audit: String,
    /// Set the access-log properties (filter state `wasm.mcp_*`, default true): five hostcalls per call.
    pub access_log: bool,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        ObservabilityConfig { stats: true, audit: "info".into(), access_log: true }
    }
}

impl ObservabilityConfig {
    pub const FIELDS: &'static [&'static str] = &["stats", "audit", "accessLog"];

    /// Reads `observability` at `at`, field by field ([`crate::fields`]).
    pub fn read(v: &Value, at: &str) -> Result<ObservabilityConfig, crate::fields::FieldError> {
        let mut f = crate::fields::Fields::read(v, at, Self::FIELDS);
        let mut cfg = ObservabilityConfig::default();
        cfg.stats = f.flag("stats").unwrap_or(true);
        cfg.audit = f.string("audit").unwrap_or_else(|| "info".into());
        cfg.access_log = f.flag("accessLog").unwrap_or(true);
        f.finish()?;
        Ok(cfg)
    }
}

/// The level audit lines are logged at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditLevel {
    Off,
    Debug,
    Info,
    Warn,
}

/// `observability:` compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observability {
    pub stats: bool,
    pub audit: AuditLevel,
    pub access_log: bool,
}

impl Default for Observability {
    fn default() -> Self {
        Observability { stats: true, audit: AuditLevel::Info, access_log: true }
    }
}

impl Observability {
    /// Compiles the config; the error is (field, message).
    pub fn compile(cfg: &ObservabilityConfig) -> Result<Observability, (String, String)> {
        let audit = match cfg.audit.as_str() {
            "off" => AuditLevel::Off,
            "debug" => AuditLevel::Debug,
            "info" => AuditLevel::Info,
            "warn" => AuditLevel::Warn,
            other => {
                return Err(("observability.audit".into(), format!("'{other}' is not one of off, debug, info, warn")))
            }
        };
        Ok(Observability { stats: cfg.stats, audit, access_log: cfg.access_log })
    }
}

/// A value read from the host at most once per [`Sampled::PERIOD_MS`] (Envoy's log level, which an operator
/// changes rarely, through the admin endpoint): a call then asks the host for it only when the last reading
/// is a second old, instead of once per call.
#[derive(Debug, Default)]
pub struct Sampled {
    last: Option<(u64, u32)>,
}

impl Sampled {
    pub const PERIOD_MS: u64 = 1000;

    /// The value at `now_ms`: the last reading while it is recent, else `read()`'s.
    pub fn get(&mut self, now_ms: u64, read: impl FnOnce() -> u32) -> u32 {
        match self.last {
            Some((at, v)) if now_ms >= at && now_ms - at < Self::PERIOD_MS => v,
            _ => {
                let v = read();
                self.last = Some((now_ms, v));
                v
            }
        }
    }
}

/// Causes that are denials: the caller or its input was refused.
const DENIALS: [&str; 3] = ["unauthenticated", "forbidden", "guardrail"];
/// Every outcome a [`CallRecord`] can have: the gateway's own ones, then [`CAUSES`].
const OUTCOMES: [&str; 12] = [
    "ok",
    "tool_error",
    "upstream_error",
    "upstream_failed",
    "invalid",
    "unauthenticated",
    "forbidden",
    "rate_limited",
    "guardrail",
    "upstream_timeout",
    "refused_dispatch",
    "oversized_answer",
];
/// Outcomes that are the gateway's own refusals or failures ([`crate::error::GatewayError::cause`]).
const CAUSES: &[&str] = OUTCOMES.split_at(5).1;
/// A tool's metrics in [`Stats`]: calls and errors by outcome, denials by cause, rate-limit rejections,
/// upstream latency.
const ERRORS_AT: usize = OUTCOMES.len();
const DENIALS_AT: usize = 2 * OUTCOMES.len();
const RATE_LIMITED_AT: usize = DENIALS_AT + DENIALS.len();
const LATENCY_AT: usize = RATE_LIMITED_AT + 1;
const PER_TOOL: usize = LATENCY_AT + 1;
/// No Envoy metric defined yet for a slot.
const UNDEFINED: u32 = u32::MAX;

/// The metrics of the tools a configuration serves, laid out when it is compiled so that counting a call
/// costs two map lookups by borrowed name and integer ids, no string built (formatting each name per call
/// was most of what stats cost). Each metric is defined with Envoy the first time it is counted (a tool
/// never called adds nothing to `/stats`); its name is built then, once per VM. Calls of tools the table
/// does not know (a client's unknown tool name) are counted under the one label [`UNKNOWN_TOOL`].
#[derive(Debug, Default)]
pub struct Stats {
    /// Each server's place in `tools`, by name.
    servers: HashMap<String, u32>,
    /// Per server: each tool's number, by tool name (maps of one type: their code is the host's too).
    tools: Vec<HashMap<String, u32>>,
    /// Each tool's tags (`mcp_server=.=demo;.;mcp_tool=.=get_user;.;`), by tool number.
    tags: Vec<Box<str>>,
    /// Envoy's id of each metric, [`PER_TOOL`] per tool number; [`UNDEFINED`] until first counted.
    ids: Box<[AtomicU32]>,
}

/// One metric a call updates: its slot in [`Stats`], what it is and by how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    pub slot: usize,
    pub kind: MetricKind,
    pub value: u64,
}

impl Stats {
    /// The table for these (server, tool) names.
    pub fn new<'a>(tools: impl IntoIterator<Item = (&'a str, &'a str)>) -> Stats {
        let mut stats = Stats::default();
        for (server, tool) in tools {
            let n = stats.tags.len() as u32;
            let next = stats.tools.len() as u32;
            let s = *stats.servers.entry(server.to_string()).or_insert(next) as usize;
            if s == stats.tools.len() {
                stats.tools.push(HashMap::new());
            }
            if !stats.tools[s].contains_key(tool) {
                stats.tools[s].insert(tool.to_string(), n);
                stats.tags.push(format!("mcp_server=.={};.;mcp_tool=.={};.;", tag(server), tag(tool)).into());
            }
        }
        stats.ids = (0..stats.tags.len() * PER_TOOL).map(|_| AtomicU32::new(UNDEFINED)).collect();
        stats
    }

    /// The metrics `r` updates (at most five), or `None` when its tool is not in the table.
    pub fn updates(&self, r: &CallRecord) -> Option<impl Iterator<Item = Update>> {
        let server = *self.servers.get(r.server.as_str())? as usize;
        let base = *self.tools.get(server)?.get(r.tool.as_str())? as usize * PER_TOOL;
        let outcome = OUTCOMES.iter().position(|o| *o == r.outcome)?;
        let counter = |at: usize| Some(Update { slot: base + at, kind: MetricKind::Counter, value: 1 });
        let all = [
            counter(outcome),
            if outcome == 0 { None } else { counter(ERRORS_AT + outcome) },
            DENIALS.iter().position(|d| *d == r.outcome).and_then(|d| counter(DENIALS_AT + d)),
            if r.outcome == "rate_limited" { counter(RATE_LIMITED_AT) } else { None },
            r.latency_ms.map(|ms| Update { slot: base + LATENCY_AT, kind: MetricKind::Histogram, value: ms }),
        ];
        Some(all.into_iter().flatten())
    }

    /// Envoy's id of a slot's metric, once defined.
    pub fn id(&self, slot: usize) -> Option<u32> {
        let id = self.ids.get(slot)?.load(Ordering::Relaxed);
        (id != UNDEFINED).then_some(id)
    }

    /// Remembers the id Envoy gave a slot's metric.
    pub fn set_id(&self, slot: usize, id: u32) {
        if let Some(s) = self.ids.get(slot) {
            s.store(id, Ordering::Relaxed);
        }
    }

    /// A slot's metric name, as [`CallRecord::metrics`] spells it (built once, to define the metric).
    pub fn name(&self, slot: usize) -> String {
        let tags = self.tags.get(slot / PER_TOOL).map_or("", |t| t);
        match slot % PER_TOOL {
            at if at < ERRORS_AT => format!("{tags}outcome=.={};.;mcp_calls_total", OUTCOMES[at]),
            at if at < DENIALS_AT => format!("{tags}cause=.={};.;mcp_errors_total", OUTCOMES[at - ERRORS_AT]),
            at if at < RATE_LIMITED_AT => format!("{tags}cause=.={};.;mcp_denials_total", DENIALS[at - DENIALS_AT]),
            RATE_LIMITED_AT => format!("{tags}mcp_rate_limited_total"),
            _ => format!("{tags}mcp_upstream_latency_ms"),
        }
    }

    /// Counts `r`: each metric is defined with `define` (kind, name) the first time, then updated by id
    /// with `update`; a tool outside the table is defined by name each time (the host keeps those ids).
    pub fn count(
        &self,
        r: &CallRecord,
        define: &mut dyn FnMut(MetricKind, &str) -> Option<u32>,
        update: &mut dyn FnMut(MetricKind, u32, u64),
    ) {
        match self.updates(r) {
            Some(updates) => {
                for u in updates {
                    let id = match self.id(u.slot) {
                        Some(id) => id,
                        None => {
                            let Some(id) = define(u.kind, &self.name(u.slot)) else { continue };
                            self.set_id(u.slot, id);
                            id
                        }
                    };
                    update(u.kind, id, u.value);
                }
            }
            None => {
                // A name the server does not have is the client's: counted under one label, so that clients
                // cannot create a metric per name they send (Envoy keeps every metric for good).
                let bounded = CallRecord { tool: UNKNOWN_TOOL.to_string(), ..r.clone() };
                for m in bounded.metrics() {
                    if let Some(id) = define(m.kind, &m.name) {
                        update(m.kind, id, m.value);
                    }
                }
            }
        }
    }
}

/// The `mcp_tool` label of calls of a tool the server does not have (no tool name can be this).
pub const UNKNOWN_TOOL: &str = "(unknown)";

/// One tool call, as stats, the access log and the audit line see it.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    pub server: String,
    pub tool: String,
    pub method: &'static str,
    /// [`Caller::label`]: the consumer, or `-`.
    pub consumer: String,
    /// `ok`; `tool_error` (an error result of the tool's own); `upstream_error` (the upstream answered with
    /// an HTTP error status); `upstream_failed` (no answer: refused, reset, timeout); `invalid` (a JSON-RPC
    /// error such as an unknown tool or invalid arguments); or a [`crate::error::GatewayError`] cause.
    pub outcome: &'static str,
    pub upstream_status: Option<u16>,
    pub latency_ms: Option<u64>,
    /// The names of the arguments the call sent (never their values).
    pub arguments: Vec<String>,
    /// The virtual server whose own call this was, through the bridge ([`crate::loopback`]): not a client's.
    pub for_virtual: Option<String>,
}

impl CallRecord {
    /// The record of `tools/call` of `tool` answered with `reply` (after the upstream answered `upstream`,
    /// if it was called).
    pub fn tool_call(
        server: &str,
        tool: &str,
        caller: &Caller,
        arguments: Vec<String>,
        reply: &Reply,
        upstream: Option<(Upstream, Option<u64>)>,
    ) -> CallRecord {
        let status = match upstream {
            Some((Upstream::Status(status), _)) => Some(status),
            _ => None,
        };
        CallRecord {
            server: server.to_string(),
            tool: tool.to_string(),
            method: "tools/call",
            consumer: caller.label().to_string(),
            outcome: outcome(reply, upstream.map(|(u, _)| u)),
            upstream_status: status,
            latency_ms: upstream.and_then(|(_, ms)| ms),
            arguments,
            for_virtual: None,
        }
    }

    /// What to count for this call.
    pub fn metrics(&self) -> Vec<Metric> {
        let tool_tags = format!("mcp_server=.={};.;mcp_tool=.={};.;", tag(&self.server), tag(&self.tool));
        let mut out = Vec::with_capacity(4);
        let counter = |name: String| Metric { kind: MetricKind::Counter, name, value: 1 };
        out.push(counter(format!("{tool_tags}outcome=.={};.;mcp_calls_total", self.outcome)));
        if self.outcome != "ok" {
            out.push(counter(format!("{tool_tags}cause=.={};.;mcp_errors_total", self.outcome)));
        }
        if DENIALS.contains(&self.outcome) {
            out.push(counter(format!("{tool_tags}cause=.={};.;mcp_denials_total", self.outcome)));
        }
        if self.outcome == "rate_limited" {
            out.push(counter(format!("{tool_tags}mcp_rate_limited_total")));
        }
        if let Some(ms) = self.latency_ms {
            out.push(Metric {
                kind: MetricKind::Histogram,
                name: format!("{tool_tags}mcp_upstream_latency_ms"),
                value: ms,
            });
        }
        out
    }

    /// The access-log properties (Envoy filter state `wasm.<name>`), besides `mcp_server_name` and
    /// `mcp_tool_name` which the exchange already reports.
    pub fn properties(&self) -> [(&'static str, &str); 3] {
        [("mcp_consumer", &self.consumer), ("mcp_method", self.method), ("mcp_outcome", self.outcome)]
    }

    /// The audit line, `mcp-audit {json}`: argument names only, never values, credentials or results.
    pub fn audit_line(&self, now_ms: u64) -> String {
        let mut arguments = Vec::with_capacity(self.arguments.len());
        for a in &self.arguments {
            arguments.push(Value::from(a.as_str()));
        }
        let mut fields = vec![
            ("time", Value::from(rfc3339_ms(now_ms))),
            ("server", Value::from(self.server.as_str())),
            ("tool", Value::from(self.tool.as_str())),
            ("consumer", Value::from(self.consumer.as_str())),
            ("method", Value::from(self.method)),
            ("outcome", Value::from(self.outcome)),
            ("upstreamStatus", self.upstream_status.map_or(Value::Null, Value::from)),
            ("latencyMs", self.latency_ms.map_or(Value::Null, Value::from)),
            ("arguments", Value::Array(arguments)),
        ];
        if let Some(v) = &self.for_virtual {
            fields.push(("gatewayCallFor", Value::from(v.as_str())));
        }
        format!("mcp-audit {}", object(fields))
    }
}

/// The names of a call's arguments (at most 32), for its audit line.
pub fn argument_names(args: Option<&Value>) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(m) = args.and_then(Value::as_object) {
        for k in m.keys().take(32) {
            names.push(k.clone());
        }
    }
    names
}

/// What the upstream answered, as far as records tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstream {
    /// An HTTP answer with this status.
    Status(u16),
    /// No answer (refused, reset, timed out).
    Failed,
}

impl From<&UpstreamResult> for Upstream {
    fn from(r: &UpstreamResult) -> Upstream {
        match r {
            UpstreamResult::Response { status, .. } => Upstream::Status(*status),
            UpstreamResult::Failed(_) => Upstream::Failed,
        }
    }
}

/// How a call ended, read from its reply.
fn outcome(reply: &Reply, upstream: Option<Upstream>) -> &'static str {
    if let Some(e) = reply.error() {
        let cause = e.get("data").and_then(|d| d.get("cause")).and_then(Value::as_str).unwrap_or_default();
        return CAUSES.iter().find(|c| **c == cause).copied().unwrap_or("invalid");
    }
    if reply.result().and_then(|r| r.get("isError")) != Some(&Value::Bool(true)) {
        return "ok";
    }
    match upstream {
        Some(Upstream::Status(status)) if status >= 400 => "upstream_error",
        Some(Upstream::Failed) => "upstream_failed",
        _ => "tool_error",
    }
}

/// The counter of virtual server `caller`'s own requests to SSE server `server` through the bridge
/// ([`crate::loopback`]): apart from the SSE server's clients' requests. The pass's MAC covers `caller`, so
/// only this gateway's virtual servers name one.
pub fn loopback_metric(server: &str, caller: &str) -> String {
    format!("mcp_server=.={};.;mcp_virtual_server=.={};.;mcp_loopback_requests_total", tag(server), tag(caller))
}

/// A tag value as a metric name can carry it (`;` would end the tag early).
fn tag(v: &str) -> String {
    v.replace(';', "_")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Histogram,
}

/// A counter to increment by `value`, or a histogram to record `value` in.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub kind: MetricKind,
    pub name: String,
    pub value: u64,
}

/// `2026-11-26T02:10:00.123Z` for milliseconds since the epoch.
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::GatewayError;
    use serde_json::json;

    fn ok_reply() -> Reply {
        Reply::Tree(json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [], "isError": false}}))
    }

    /// The outcome of a reply built as a tree.
    fn outcome(reply: &Value, upstream: Option<Upstream>) -> &'static str {
        super::outcome(&Reply::Tree(reply.clone()), upstream)
    }

    fn response(status: u16) -> Upstream {
        Upstream::Status(status)
    }

    #[test]
    fn a_loopback_request_is_counted_under_its_virtual_server() {
        assert_eq!(
            loopback_metric("legacy", "mixed"),
            "mcp_server=.=legacy;.;mcp_virtual_server=.=mixed;.;mcp_loopback_requests_total"
        );
        assert_eq!(
            loopback_metric("a;b", "v;w"),
            "mcp_server=.=a_b;.;mcp_virtual_server=.=v_w;.;mcp_loopback_requests_total"
        );
    }

    #[test]
    fn outcomes_are_read_from_the_reply_and_the_upstream_answer() {
        let err_result = json!({"result": {"isError": true}});
        assert_eq!(super::outcome(&ok_reply(), Some(response(200))), "ok");
        let written = Reply::Result { id: json!(1), result: json!({"content": [], "isError": true}) };
        assert_eq!(super::outcome(&written, Some(response(502))), "upstream_error");
        assert_eq!(outcome(&err_result, Some(response(503))), "upstream_error");
        assert_eq!(
            outcome(&err_result, Some(Upstream::from(&UpstreamResult::Failed("reset".into())))),
            "upstream_failed"
        );
        assert_eq!(outcome(&err_result, None), "tool_error");
        let guard = GatewayError::Guardrail { message: "no".into() }.reply(json!(1));
        assert_eq!(outcome(&guard, None), "guardrail");
        let limited = GatewayError::RateLimited { message: "slow".into(), retry_after_secs: 1 }.reply(json!(1));
        assert_eq!(outcome(&limited, None), "rate_limited");
        assert_eq!(outcome(&crate::jsonrpc::error(json!(1), -32602, "Unknown tool: x"), None), "invalid");
    }

    #[test]
    fn a_call_counts_calls_errors_denials_and_latency_with_tags() {
        let caller = Caller { consumer: Some("alice".into()), ..Caller::default() };
        let ok = CallRecord::tool_call(
            "demo",
            "get_user",
            &caller,
            argument_names(Some(&json!({"id": 1}))),
            &ok_reply(),
            Some((response(200), Some(12))),
        );
        let names: Vec<(MetricKind, String, u64)> =
            ok.metrics().into_iter().map(|m| (m.kind, m.name, m.value)).collect();
        let owned =
            |v: Vec<(MetricKind, &str, u64)>| v.into_iter().map(|(k, n, x)| (k, n.to_string(), x)).collect::<Vec<_>>();
        assert_eq!(
            names,
            owned(vec![
                (MetricKind::Counter, "mcp_server=.=demo;.;mcp_tool=.=get_user;.;outcome=.=ok;.;mcp_calls_total", 1),
                (MetricKind::Histogram, "mcp_server=.=demo;.;mcp_tool=.=get_user;.;mcp_upstream_latency_ms", 12),
            ])
        );
        let refused = Reply::Tree(GatewayError::Guardrail { message: "no".into() }.reply(json!(1)));
        let denied = CallRecord::tool_call("demo", "a;b", &Caller::anonymous(), vec![], &refused, None);
        let names: Vec<String> = denied.metrics().into_iter().map(|m| m.name).collect();
        assert_eq!(
            names,
            vec![
                "mcp_server=.=demo;.;mcp_tool=.=a_b;.;outcome=.=guardrail;.;mcp_calls_total",
                "mcp_server=.=demo;.;mcp_tool=.=a_b;.;cause=.=guardrail;.;mcp_errors_total",
                "mcp_server=.=demo;.;mcp_tool=.=a_b;.;cause=.=guardrail;.;mcp_denials_total",
            ]
        );
        assert_eq!(
            denied.properties(),
            [("mcp_consumer", "-"), ("mcp_method", "tools/call"), ("mcp_outcome", "guardrail")]
        );
    }

    #[test]
    fn the_stats_table_counts_what_records_name_and_defines_each_metric_once() {
        let stats = Stats::new([("demo", "get_user"), ("demo", "a;b"), ("other", "get_user")]);
        let caller = Caller { consumer: Some("alice".into()), ..Caller::default() };
        let reply = |e: GatewayError| Reply::Tree(e.reply(json!(1)));
        let records = [
            CallRecord::tool_call("demo", "get_user", &caller, vec![], &ok_reply(), Some((response(200), Some(12)))),
            CallRecord::tool_call(
                "demo",
                "a;b",
                &caller,
                vec![],
                &reply(GatewayError::Guardrail { message: "no".into() }),
                None,
            ),
            CallRecord::tool_call(
                "other",
                "get_user",
                &caller,
                vec![],
                &reply(GatewayError::RateLimited { message: "slow".into(), retry_after_secs: 1 }),
                None,
            ),
            CallRecord::tool_call(
                "demo",
                "get_user",
                &caller,
                vec![],
                &Reply::Tree(json!({"result": {"isError": true}})),
                Some((response(503), Some(3))),
            ),
            // Not in the table: counted under the one unknown label.
            CallRecord::tool_call(
                "demo",
                "no_such_tool",
                &caller,
                vec![],
                &Reply::Tree(crate::jsonrpc::error(json!(1), -32602, "Unknown tool")),
                None,
            ),
        ];
        let mut defined: Vec<(MetricKind, String)> = Vec::new();
        for round in 0..2 {
            let mut counted = Vec::new();
            for r in &records {
                let mut define = |k: MetricKind, name: &str| {
                    let id = defined.iter().position(|(_, n)| n == name).unwrap_or_else(|| {
                        defined.push((k, name.to_string()));
                        defined.len() - 1
                    });
                    Some(id as u32)
                };
                stats.count(r, &mut define, &mut |k, id, v| counted.push((k, id, v)));
            }
            let by_name: Vec<Metric> = counted
                .iter()
                .map(|(k, id, v)| Metric { kind: *k, name: defined[*id as usize].1.clone(), value: *v })
                .collect();
            let bounded = |r: &CallRecord| match stats.updates(r) {
                Some(_) => r.clone(),
                None => CallRecord { tool: UNKNOWN_TOOL.to_string(), ..r.clone() },
            };
            let expected: Vec<Metric> = records.iter().map(bounded).flat_map(|r| r.metrics()).collect();
            assert_eq!(by_name, expected, "round {round}");
            assert!(defined.iter().all(|(k, n)| expected.iter().any(|m| m.kind == *k && m.name == *n)));
        }
        assert_eq!(stats.id(0), Some(0), "the slot keeps Envoy's id");
        assert!(stats.updates(&records[4]).is_none());
        assert!(defined.iter().any(|(_, n)| n.contains("mcp_tool=.=(unknown);.;")), "{defined:?}");
        assert!(!defined.iter().any(|(_, n)| n.contains("no_such_tool")), "{defined:?}");
    }

    #[test]
    fn the_audit_line_is_json_with_argument_names_but_no_values() {
        let caller = Caller { consumer: Some("alice".into()), ..Caller::default() };
        let args = json!({"password": "hunter2", "id": 7});
        let r = CallRecord::tool_call(
            "demo",
            "login",
            &caller,
            argument_names(Some(&args)),
            &ok_reply(),
            Some((response(201), Some(5))),
        );
        let line = r.audit_line(1_764_122_400_123);
        let json: Value = serde_json::from_str(line.strip_prefix("mcp-audit ").unwrap()).unwrap();
        assert_eq!(
            json,
            json!({"time": "2025-11-26T02:00:00.123Z", "server": "demo", "tool": "login", "consumer": "alice",
                   "method": "tools/call", "outcome": "ok", "upstreamStatus": 201, "latencyMs": 5,
                   "arguments": ["password", "id"]})
        );
        assert!(!line.contains("hunter2"));
        // A virtual server's own call through the bridge says so.
        let own = CallRecord { for_virtual: Some("mixed".into()), ..r };
        let json: Value = serde_json::from_str(own.audit_line(0).strip_prefix("mcp-audit ").unwrap()).unwrap();
        assert_eq!(json["gatewayCallFor"], "mixed");
    }

    #[test]
    fn a_sampled_value_is_read_again_only_once_a_second_has_passed() {
        let mut s = Sampled::default();
        let reads = std::cell::Cell::new(0);
        let mut at = |now: u64, v: u32| {
            s.get(now, || {
                reads.set(reads.get() + 1);
                v
            })
        };
        assert_eq!(at(10_000, 2), 2);
        assert_eq!(at(10_999, 5), 2, "within the second: the last reading");
        assert_eq!(at(11_000, 5), 5, "a second later: read again");
        assert_eq!(at(10_500, 3), 3, "a clock that went back: read again");
        assert_eq!(reads.get(), 3);
    }

    #[test]
    fn config_compiles_audit_levels_and_refuses_others() {
        let read = |v: Value| ObservabilityConfig::read(&v, "observability");
        let cfg = read(json!({"audit": "warn", "stats": false})).unwrap();
        assert_eq!(
            Observability::compile(&cfg),
            Ok(Observability { stats: false, audit: AuditLevel::Warn, access_log: true })
        );
        let quiet = read(json!({"accessLog": false})).unwrap();
        assert!(!Observability::compile(&quiet).unwrap().access_log);
        assert_eq!(read(json!({"accessLog": "no"})).unwrap_err().0, "observability.accessLog");
        assert_eq!(read(json!({"stat": false})).unwrap_err().0, "observability.stat");
        assert_eq!(read(json!({"stats": "no"})).unwrap_err().0, "observability.stats");
        let cfg = read(json!({"audit": "loud"})).unwrap();
        assert_eq!(Observability::compile(&cfg).unwrap_err().0, "observability.audit");
        assert_eq!(Observability::compile(&ObservabilityConfig::default()), Ok(Observability::default()));
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
