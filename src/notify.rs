//! Log and progress notifications a tool sends before its result (`notifications` of a tool).
//!
//! A proxy-wasm filter answers with one complete response, so a tool's notifications cannot be sent while
//! its upstream works: they are rendered once the call is over (with the same context as the response
//! template) and travel ahead of the result in the POST's SSE answer, which the transport frames. What a
//! client gets is decided per request by a [`Listener`]: log messages at or above its level (the session's
//! `logging/setLevel`, or at 2026-07-28 the request's `_meta` `io.modelcontextprotocol/logLevel`), progress
//! only for a request that carries `_meta.progressToken`.

use crate::config::ToolConfig;
use crate::json::object;
use crate::template::{map_of, AnswerData, Data, Dialect, Escape, Role, Spec, TemplateId, Templates};
use crate::upstream::UpstreamResult;
use minijinja::value::Value as MjValue;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::sync::Arc;

/// The `_meta` key of the 2026-07-28 per-request log level.
pub const LOG_LEVEL_META: &str = "io.modelcontextprotocol/logLevel";

/// The syslog severities of MCP logging (RFC 5424), least severe first, so that `>=` filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Debug,
    Info,
    Notice,
    Warning,
    Error,
    Critical,
    Alert,
    Emergency,
}

impl LogLevel {
    /// Every level, least severe first.
    pub const ALL: [LogLevel; 8] = [
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Notice,
        LogLevel::Warning,
        LogLevel::Error,
        LogLevel::Critical,
        LogLevel::Alert,
        LogLevel::Emergency,
    ];

    /// The level's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Notice => "notice",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
            LogLevel::Alert => "alert",
            LogLevel::Emergency => "emergency",
        }
    }

    /// The level of a wire name (lower-case, as the spec spells them).
    pub fn parse(s: &str) -> Option<LogLevel> {
        Self::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// A level sent by a client (`logging/setLevel`, `_meta`), or the error that names the valid ones.
    pub fn from_json(v: Option<&Value>) -> Result<LogLevel, String> {
        v.and_then(Value::as_str).and_then(Self::parse).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|l| l.as_str()).collect();
            format!("the log level must be one of {}", names.join(", "))
        })
    }
}

/// One entry of a tool's `notifications`: a log message (`log: <level>`) or a progress report
/// (`progress: <number>`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NotificationConfig {
    /// A log message at this level (`debug` .. `emergency`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<String>,
    /// The log message's `logger` (a template).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logger: Option<String>,
    /// The log message's `data` (a template).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// A progress report: how far along (non-decreasing over a tool's reports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// The progress report's `total`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    /// The progress report's `message` (a template).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `always` (default), `success` (the upstream answered 2xx; a tool without upstream: its result is not
    /// an error) or `error` (any other answer, or none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
}

impl NotificationConfig {
    /// Reads one entry of a tool's `notifications`.
    pub fn read(v: &Value, at: &str) -> Result<NotificationConfig, crate::fields::FieldError> {
        let mut f = crate::fields::Fields::read(v, at, &[]);
        let mut n = NotificationConfig::default();
        n.log = f.string("log");
        n.logger = f.string("logger");
        n.data = f.string("data");
        n.progress = f.number("progress");
        n.total = f.number("total");
        n.message = f.string("message");
        n.when = f.string("when");
        f.finish()?;
        Ok(n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum When {
    Always,
    Success,
    Error,
}

#[derive(Debug)]
enum Kind {
    Log { level: LogLevel, logger: Option<TemplateId>, data: TemplateId },
    Progress { progress: f64, total: Option<f64>, message: Option<TemplateId> },
}

#[derive(Debug)]
struct Entry {
    kind: Kind,
    when: When,
}

/// A tool's compiled notifications.
#[derive(Debug, Default)]
pub struct Notifications {
    entries: Vec<Entry>,
    /// A template reads the parsed answer, so it is parsed for them.
    reads_answer: bool,
}

/// An upstream call as notifications see it: its outcome and, when measured, how long it took.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    pub outcome: &'a UpstreamResult,
    pub elapsed_ms: Option<u64>,
}

/// What one request lets the server send: log messages at or above `level` (none without one), progress
/// reports for `progress_token`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Listener {
    pub level: Option<LogLevel>,
    pub progress_token: Option<Value>,
}

impl Listener {
    /// Whether nothing could be sent to this listener.
    pub fn is_deaf(&self) -> bool {
        self.level.is_none() && self.progress_token.is_none()
    }
}

/// The request's progress token (`_meta.progressToken`, a string or an integer).
pub fn progress_token(params: Option<&Value>) -> Option<Value> {
    let t = params?.get("_meta")?.get("progressToken")?;
    (t.is_string() || t.is_i64() || t.is_u64()).then(|| t.clone())
}

/// The request's 2026-07-28 log level: `Ok(None)` when it sets none (then no log message may be sent).
pub fn meta_log_level(params: Option<&Value>) -> Result<Option<LogLevel>, String> {
    match params.and_then(|p| p.get("_meta")).and_then(|m| m.get(LOG_LEVEL_META)) {
        None => Ok(None),
        Some(v) => LogLevel::from_json(Some(v)).map(Some).map_err(|e| format!("_meta {LOG_LEVEL_META}: {e}")),
    }
}

impl Notifications {
    /// Compiles a tool's `notifications`; `upstream`: the tool calls one (else its templates see only
    /// `args` and `config`, and one that reads anything else is refused). Errors name the entry's field.
    pub fn compile(
        server: &str,
        cfg: &ToolConfig,
        upstream: bool,
        templates: &mut Templates,
        config: &MjValue,
    ) -> Result<Notifications, (String, String)> {
        let mut arg_names: Vec<&str> = Vec::new();
        match &cfg.input_schema {
            Some(s) => {
                if let Some(p) = s.get("properties").and_then(Value::as_object) {
                    for k in p.keys() {
                        arg_names.push(k);
                    }
                }
            }
            None => {
                for a in &cfg.args {
                    arg_names.push(&a.name);
                }
            }
        }
        let mut out = Notifications::default();
        for (i, n) in cfg.notifications.iter().enumerate() {
            let at = |field: &str| format!("notifications[{i}].{field}");
            let mut compile = |field: &str, src: &str| {
                let name = format!("{server}/{}/{}", cfg.name, at(field));
                let id = if upstream {
                    templates.add_resolving(
                        &name,
                        src,
                        Spec { escape: Escape::None, dialect: Dialect::Jinja, role: Role::Result },
                        config,
                    )
                } else {
                    templates.add_checked(&name, src, &["args", "config"], &arg_names, config)
                };
                id.map_err(|e| (at(field), e))
            };
            let when = match n.when.as_deref() {
                None | Some("always") => When::Always,
                Some("success") => When::Success,
                Some("error") => When::Error,
                Some(other) => return Err((at("when"), format!("'{other}' is not always, success or error"))),
            };
            let kind = match (&n.log, n.progress) {
                (Some(level), None) => {
                    let level = LogLevel::parse(level).ok_or_else(|| {
                        (at("log"), format!("'{level}' is not a log level: {}", LogLevel::from_json(None).unwrap_err()))
                    })?;
                    if n.total.is_some() || n.message.is_some() {
                        return Err((at("log"), "a log message has logger and data, not total or message".into()));
                    }
                    let Some(data) = &n.data else {
                        return Err((at("data"), "a log message needs data (the text to log)".into()));
                    };
                    let data = compile("data", data)?;
                    let logger = n.logger.as_deref().map(|l| compile("logger", l)).transpose()?;
                    Kind::Log { level, logger, data }
                }
                (None, Some(progress)) => {
                    if n.logger.is_some() || n.data.is_some() {
                        return Err((
                            at("progress"),
                            "a progress report has total and message, not logger or data".into(),
                        ));
                    }
                    if !progress.is_finite() || progress < 0.0 {
                        return Err((at("progress"), "must be a number >= 0".into()));
                    }
                    if let Some(t) = n.total {
                        if !t.is_finite() || t < progress {
                            return Err((at("total"), format!("must be a number >= progress ({})", number(progress))));
                        }
                    }
                    let message = n.message.as_deref().map(|m| compile("message", m)).transpose()?;
                    Kind::Progress { progress, total: n.total, message }
                }
                (Some(_), Some(_)) => {
                    return Err((
                        at("log"),
                        "an entry is either a log message (log) or a progress report (progress)".into(),
                    ))
                }
                (None, None) => {
                    return Err((format!("notifications[{i}]"), "needs `log: <level>` or `progress: <number>`".into()))
                }
            };
            out.entries.push(Entry { kind, when });
        }
        let mut progress = 0.0;
        for (i, e) in out.entries.iter().enumerate() {
            if let Kind::Progress { progress: p, .. } = e.kind {
                if p < progress {
                    return Err((
                        format!("notifications[{i}].progress"),
                        format!(
                            "{} is less than an earlier {}: progress must not go down",
                            number(p),
                            number(progress)
                        ),
                    ));
                }
                progress = p;
            }
        }
        out.reads_answer = out.entries.iter().any(|e| match &e.kind {
            Kind::Log { logger, data, .. } => {
                templates.reads_answer(data) || logger.as_ref().is_some_and(|l| templates.reads_answer(l))
            }
            Kind::Progress { message, .. } => message.as_ref().is_some_and(|m| templates.reads_answer(m)),
        });
        Ok(out)
    }

    /// Whether the tool sends nothing (most tools).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether any entry is a log message (the server then declares the `logging` capability).
    pub fn logs(&self) -> bool {
        self.entries.iter().any(|e| matches!(e.kind, Kind::Log { .. }))
    }

    /// The notifications `listener` gets for a call, as JSON-RPC notifications in config order.
    /// `outcome`: the upstream's answer (`None` for a tool without upstream, whose result `failed` or not).
    /// A template that fails to render sends its error text instead: the call itself is not at stake.
    pub fn render(
        &self,
        templates: &Templates,
        config: &MjValue,
        args: &Value,
        answer: Option<Answer<'_>>,
        failed: bool,
        listener: &Listener,
    ) -> Vec<Value> {
        let outcome = answer.map(|a| a.outcome);
        let wanted = |e: &&Entry| match &e.kind {
            Kind::Log { level, .. } => listener.level.is_some_and(|min| *level >= min),
            Kind::Progress { .. } => listener.progress_token.is_some(),
        };
        if !self.entries.iter().any(|e| wanted(&e)) {
            return Vec::new();
        }
        let (status, headers, body): (u16, &[(String, String)], String) = match outcome {
            Some(UpstreamResult::Response { status, headers, body }) => {
                (*status, headers, String::from_utf8_lossy(body).into_owned())
            }
            // No HTTP answer: status 0, and the body says why.
            Some(UpstreamResult::Failed(why)) => (0, &[], why.clone()),
            None => (0, &[], String::new()),
        };
        let ok = match outcome {
            Some(_) => (200..300).contains(&status),
            None => !failed,
        };
        let parsed = (outcome.is_some() && self.reads_answer)
            .then(|| serde_json::from_slice::<Value>(body.as_bytes()).ok().map(Arc::new))
            .flatten();
        let mut header_map = Map::new();
        for (k, v) in headers {
            header_map.insert(k.to_ascii_lowercase(), Value::String(v.clone()));
        }
        let data = match outcome {
            Some(_) => Data::answer(
                args,
                config,
                AnswerData { parsed, body: &body, body_base64: "", status, headers: &header_map },
            ),
            None => Data::request(args, config),
        };
        // `elapsedMs` joins the response template's context (our dialect only, as notifications are).
        // (0 when the host could not measure it: a call refused before it was sent.)
        // (A merge of two maps, as `context!` would build it, through the one `merge_maps` over a `Vec`.)
        let timed = answer.map(|a| {
            let elapsed = map_of(vec![("elapsedMs", MjValue::from(a.elapsed_ms.unwrap_or(0)))]);
            minijinja::value::merge_maps(vec![data.jinja().clone(), elapsed])
        });
        let render = |t: &TemplateId| {
            match &timed {
                Some(ctx) => templates.render_ctx(t, ctx),
                None => templates.render(t, &data),
            }
            .unwrap_or_else(|e| format!("(template failed: {e})"))
        };
        // A loop, not an iterator chain: its adapters would be instantiated for this closure alone.
        let mut out = Vec::new();
        for e in &self.entries {
            let when = match e.when {
                When::Always => true,
                When::Success => ok,
                When::Error => !ok,
            };
            if !when || !wanted(&e) {
                continue;
            }
            let (method, params) = match &e.kind {
                Kind::Log { level, logger, data } => {
                    let mut params = vec![("level", Value::from(level.as_str())), ("data", Value::from(render(data)))];
                    if let Some(l) = logger {
                        params.push(("logger", Value::from(render(l))));
                    }
                    ("notifications/message", params)
                }
                Kind::Progress { progress, total, message } => {
                    let mut params = vec![
                        ("progressToken", listener.progress_token.clone().unwrap_or(Value::Null)),
                        ("progress", number(*progress)),
                    ];
                    if let Some(t) = total {
                        params.push(("total", number(*t)));
                    }
                    if let Some(m) = message {
                        params.push(("message", Value::from(render(m))));
                    }
                    ("notifications/progress", params)
                }
            };
            out.push(object(vec![
                ("jsonrpc", Value::from("2.0")),
                ("method", Value::from(method)),
                ("params", object(params)),
            ]));
        }
        out
    }
}

/// A whole number as an integer (`50`, not `50.0`), anything else as it is.
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9e15 {
        Value::from(n as i64)
    } else {
        Value::from(n)
    }
}

/// Frames notifications and the response as one SSE body: one `message` event each, the response last.
pub fn sse_body(notifications: &[Value], response: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in notifications {
        out.extend_from_slice(b"event: message\ndata: ");
        out.extend_from_slice(&serde_json::to_vec(m).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
    }
    out.extend_from_slice(b"event: message\ndata: ");
    out.extend_from_slice(response);
    out.extend_from_slice(b"\n\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::Gateway;
    use serde_json::json;

    fn load(notifications: &str, upstream: bool) -> Result<Gateway, String> {
        let answer = if upstream { "requestTemplate: {url: /x}" } else { "responseTemplate: {body: ok}" };
        let config = format!(
            "servers:\n- name: s\n  upstream: {{cluster: api}}\n  tools:\n  - name: t\n    description: d\n    \
             args: [{{name: city}}]\n    {answer}\n    notifications: {notifications}\n"
        );
        Gateway::from_config_str(&config).map_err(|e| e.to_string())
    }

    #[test]
    fn levels_are_ordered_and_named_as_the_spec_names_them() {
        assert!(LogLevel::Debug < LogLevel::Info && LogLevel::Alert < LogLevel::Emergency);
        for l in LogLevel::ALL {
            assert_eq!(LogLevel::parse(l.as_str()), Some(l));
            assert_eq!(serde_json::to_value(l).unwrap(), json!(l.as_str()));
        }
        assert_eq!(LogLevel::from_json(Some(&json!("notice"))), Ok(LogLevel::Notice));
        let e = LogLevel::from_json(Some(&json!("INFO"))).unwrap_err();
        assert!(e.contains("debug, info, notice, warning, error, critical, alert, emergency"), "{e}");
        assert!(LogLevel::from_json(Some(&json!(3))).is_err() && LogLevel::from_json(None).is_err());
        let meta = json!({"_meta": {"io.modelcontextprotocol/logLevel": "error", "progressToken": 4}});
        assert_eq!(meta_log_level(Some(&meta)), Ok(Some(LogLevel::Error)));
        assert_eq!(meta_log_level(Some(&json!({}))), Ok(None));
        assert!(meta_log_level(Some(&json!({"_meta": {LOG_LEVEL_META: null}}))).is_err());
        assert_eq!(progress_token(Some(&meta)), Some(json!(4)));
        assert_eq!(progress_token(Some(&json!({"_meta": {"progressToken": 1.5}}))), None);
    }

    #[test]
    fn bad_entries_are_refused_at_load_naming_server_tool_and_field() {
        let cases = [
            ("[{log: loud, data: x}]", true, "notifications[0].log", "'loud' is not a log level"),
            ("[{log: info}]", true, "notifications[0].data", "needs data"),
            ("[{log: info, data: x, progress: 1}]", true, "notifications[0].log", "either"),
            ("[{data: x}]", true, "notifications[0]", "needs `log: <level>` or `progress: <number>`"),
            ("[{log: info, data: x, total: 3}]", true, "notifications[0].log", "not total or message"),
            ("[{progress: 1, logger: x}]", true, "notifications[0].progress", "not logger or data"),
            ("[{progress: -1}]", true, "notifications[0].progress", ">= 0"),
            ("[{progress: 5, total: 2}]", true, "notifications[0].total", ">= progress (5)"),
            ("[{progress: 5}, {progress: 2}]", true, "notifications[1].progress", "2 is less than an earlier 5"),
            ("[{log: info, data: x, when: sometimes}]", true, "notifications[0].when", "always, success or error"),
            ("[{log: info, data: '{{ x'}]", true, "notifications[0].data", "syntax"),
            ("[{log: info, data: x, logger: '{{ status | nope }}'}]", true, "notifications[0].logger", "nope"),
            // Without an upstream there is no answer to read: naming one would render empty.
            ("[{log: info, data: '{{ status }}'}]", false, "notifications[0].data", "`status`"),
            ("[{progress: 1, message: '{{ args.town }}'}]", false, "notifications[0].message", "`args.town`"),
            ("[{log: info, data: '{{ elapsedMs }}'}]", false, "notifications[0].data", "`elapsedMs`"),
            ("[{log: info, data: x, colour: red}]", true, "", "colour"),
        ];
        for (entries, upstream, field, words) in cases {
            let e = load(entries, upstream).expect_err(entries);
            assert!(e.contains("server 's'") && e.contains("tool 't'"), "{entries}: {e}");
            assert!(e.contains(field) && e.contains(words), "{entries}: {e}");
        }
        let g = load("[{log: info, data: '{{ args.city }} {{ config.x }}'}]", false);
        assert!(g.is_err_and(|e| e.contains("config.x")), "config keys are checked too");
        load("[{log: info, data: '{{ args.city }}'}, {progress: 1, total: 1, message: m}]", false).unwrap();
        load("[{log: debug, data: '{{ status }} {{ headers.date }} {{ response.a }}', logger: '{{ body }}'}]", true)
            .unwrap();
    }

    #[test]
    fn only_what_the_listener_hears_is_rendered_in_order() {
        let g = load(
            "[{progress: 0, total: 10}, {log: debug, data: 'd {{ status }} in {{ elapsedMs }} ms'}, {log: error, when: error, data: \
             'e {{ body }}'}, {log: info, when: success, data: 'i {{ response.n }}'}, {progress: 10, total: 10, \
             message: '{{ args.city }}'}]",
            true,
        )
        .unwrap();
        let s = &g.servers[0];
        let n = s.notifications("t").unwrap();
        assert!(n.logs() && s.notifications("nope").is_none());
        let ok = UpstreamResult::Response { status: 200, headers: vec![], body: br#"{"n": 4}"#.to_vec() };
        let all = Listener { level: Some(LogLevel::Debug), progress_token: Some(json!("p")) };
        let args = json!({"city": "Oslo"});
        let got =
            n.render(&g.templates, &s.config, &args, Some(Answer { outcome: &ok, elapsed_ms: Some(12) }), false, &all);
        let summary: Vec<String> = got
            .iter()
            .map(|m| {
                format!(
                    "{} {}",
                    m["method"],
                    m["params"]["data"].as_str().or(m["params"]["message"].as_str()).unwrap_or("")
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                "\"notifications/progress\" ",
                "\"notifications/message\" d 200 in 12 ms",
                "\"notifications/message\" i 4",
                "\"notifications/progress\" Oslo"
            ]
        );
        let failed = UpstreamResult::Failed("timeout".into());
        let errors = Listener { level: Some(LogLevel::Warning), progress_token: None };
        let got = n.render(
            &g.templates,
            &s.config,
            &args,
            Some(Answer { outcome: &failed, elapsed_ms: None }),
            false,
            &errors,
        );
        assert_eq!(
            got,
            [
                json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "error", "data": "e timeout"}})
            ]
        );
        let answer = Answer { outcome: &ok, elapsed_ms: None };
        assert!(n.render(&g.templates, &s.config, &args, Some(answer), false, &Listener::default()).is_empty());
        assert!(Listener::default().is_deaf());
    }

    #[test]
    fn sse_frames_each_message_as_one_event_and_the_response_last() {
        let body = sse_body(&[json!({"a": "x\ny"}), json!(2)], br#"{"id":1}"#);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            "event: message\ndata: {\"a\":\"x\\ny\"}\n\nevent: message\ndata: 2\n\nevent: message\ndata: {\"id\":1}\n\n"
        );
        assert_eq!((number(50.0), number(0.5)), (json!(50), json!(0.5)));
    }
}
