//! The external check (`guardrails.external`): an HTTP call per tool call to a team's own guard service,
//! on the arguments before the upstream call and/or on the result before the client sees it.
//!
//! Contract: `POST {path}` on `cluster`, `Content-Type: application/json`, body
//! `{"phase": "input"|"output", "server", "tool", "consumer", "arguments"}` (+ `"result"` for `output`, after
//! masking). The service answers 200 with `{"allow": true}` or `{"allow": false, "reason": "..."}`.
//! Anything else (another status, another body, no answer within `timeoutMs`) is a failure: the call goes
//! on (`failOpen: true`) or is refused (default).

use crate::error::GatewayError;
use crate::fields::{FieldError, Fields};
use crate::upstream::{Dispatch, UpstreamRequest, UpstreamResult};
use serde_json::Value;

/// `guardrails.external` as written.
#[derive(Debug, Clone)]
pub struct ExternalConfig {
    /// The Envoy cluster of the guard service.
    pub cluster: String,
    /// Default `/check`.
    pub path: String,
    /// `:authority` of the call; default: the cluster's name.
    pub authority: Option<String>,
    /// Default 500.
    pub timeout_ms: u64,
    /// On failure, let the call go on (true) or refuse it (false, the default).
    pub fail_open: bool,
    /// Check the arguments before the upstream call (default true).
    pub input: bool,
    /// Check the result before the client sees it (default false).
    pub output: bool,
}

impl ExternalConfig {
    pub const FIELDS: &'static [&'static str] =
        &["cluster", "path", "authority", "timeoutMs", "failOpen", "input", "output"];

    /// Reads `external` at `at`, field by field ([`crate::fields`]).
    pub fn read(v: &Value, at: &str) -> Result<ExternalConfig, FieldError> {
        let mut f = Fields::read(v, at, Self::FIELDS);
        let cfg = ExternalConfig {
            cluster: f.required_string("cluster"),
            path: f.string("path").unwrap_or_else(|| "/check".into()),
            authority: f.string("authority"),
            timeout_ms: f.unsigned("timeoutMs").unwrap_or(500),
            fail_open: f.boolean("failOpen"),
            input: f.flag("input").unwrap_or(true),
            output: f.boolean("output"),
        };
        f.finish()?;
        Ok(cfg)
    }
}

/// Which side of the call is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Input,
    Output,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Input => "input",
            Phase::Output => "output",
        }
    }
}

/// `guardrails.external` compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct External {
    cluster: String,
    path: String,
    authority: String,
    timeout_ms: u64,
    fail_open: bool,
    pub input: bool,
    pub output: bool,
}

/// The parties of the call a check is about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub server: &'a str,
    pub tool: &'a str,
    pub consumer: &'a str,
}

impl External {
    /// Validates the config; errors are (field under `external`, message).
    pub fn compile(cfg: &ExternalConfig) -> Result<External, (String, String)> {
        if cfg.cluster.trim().is_empty() {
            return Err(crate::fields::pair("cluster", "must name an Envoy cluster"));
        }
        if !cfg.path.starts_with('/') || cfg.path.contains(['\r', '\n', ' ']) {
            return Err(crate::fields::pair("path", "must be a path starting with / (no spaces or line breaks)"));
        }
        if cfg.authority.as_deref().is_some_and(|a| a.is_empty() || a.contains(['\r', '\n', ' ', '/'])) {
            return Err(crate::fields::pair("authority", "must be a host[:port]"));
        }
        if cfg.timeout_ms == 0 {
            return Err(crate::fields::pair("timeoutMs", "must be at least 1"));
        }
        if !cfg.input && !cfg.output {
            return Err(crate::fields::pair("input", "input and output are both false: the check would never run"));
        }
        Ok(External {
            cluster: cfg.cluster.clone(),
            path: cfg.path.clone(),
            authority: cfg.authority.clone().unwrap_or_else(|| cfg.cluster.clone()),
            timeout_ms: cfg.timeout_ms,
            fail_open: cfg.fail_open,
            input: cfg.input,
            output: cfg.output,
        })
    }

    /// The request that asks the guard service about a call's arguments (`result: None`) or its result.
    pub fn request(
        &self,
        phase: Phase,
        who: Subject<'_>,
        arguments: &Value,
        result: Option<&Value>,
    ) -> UpstreamRequest {
        let mut body = vec![
            ("phase", Value::from(phase.name())),
            ("server", Value::from(who.server)),
            ("tool", Value::from(who.tool)),
            ("consumer", Value::from(who.consumer)),
            ("arguments", arguments.clone()),
        ];
        if let Some(r) = result {
            body.push(("result", r.clone()));
        }
        let body = crate::json::object(body);
        UpstreamRequest {
            dispatch: Dispatch::Call,
            cluster: self.cluster.clone(),
            method: "POST".into(),
            authority: self.authority.clone(),
            path: self.path.clone(),
            headers: vec![crate::fields::pair("content-type", "application/json")],
            body: Some(body.to_string().into_bytes()),
            timeout_ms: self.timeout_ms,
        }
    }

    /// The guard service's verdict: `Ok` lets the call go on.
    pub fn verdict(&self, phase: Phase, tool: &str, answer: &UpstreamResult) -> Result<(), GatewayError> {
        let failure = match answer {
            UpstreamResult::Response { status: 200, body, .. } => match serde_json::from_slice::<Value>(body) {
                Ok(v) => match v.get("allow").and_then(Value::as_bool) {
                    Some(true) => return Ok(()),
                    Some(false) => {
                        let reason = v.get("reason").and_then(Value::as_str).unwrap_or("no reason given");
                        let reason: String = reason.chars().take(200).collect();
                        return Err(GatewayError::Guardrail {
                            message: format!(
                                "guardrail: the guard service refused the {} of tool '{tool}': {reason}",
                                phase.name()
                            ),
                        });
                    }
                    None => "its answer has no boolean `allow`".to_string(),
                },
                Err(_) => "its answer is not JSON".to_string(),
            },
            UpstreamResult::Response { status, .. } => format!("it answered HTTP {status}"),
            UpstreamResult::Failed(why) => format!("no answer ({why})"),
        };
        if self.fail_open {
            return Ok(());
        }
        Err(GatewayError::Guardrail {
            message: format!(
                "guardrail: the guard service could not check the {} of tool '{tool}' ({failure}), and \
                 guardrails.external.failOpen is false",
                phase.name()
            ),
        })
    }
}

/// The guard services that check one tool call, in the order they are asked: for a call through a
/// virtual server, the virtual server's (stage 0, told the virtual server's name of the tool), then the
/// tool's own server's (stage 1). Each is asked only when the one before allowed the call.
#[derive(Debug, Clone, Copy)]
pub struct Checks<'a> {
    /// The virtual server and its name of the tool, for a call through one.
    pub via: Option<(usize, &'a str)>,
    /// The tool's own server, and the tool's name there.
    pub owner: usize,
    pub tool: &'a str,
}

impl<'a> Checks<'a> {
    /// The guard service of `stage`, with the server and tool names it is told.
    fn at(&self, gw: &'a crate::gateway::Gateway, stage: u8) -> Option<(&'a str, &'a str, &'a External)> {
        let (server, tool) = match (stage, self.via) {
            (0, Some(via)) => via,
            (1, _) => (self.owner, self.tool),
            _ => return None,
        };
        let server = gw.servers.get(server)?;
        Some((&server.name, tool, server.guard.as_ref()?.external(tool)?))
    }

    /// The first request, from `stage` on, that asks a guard service about `phase` (`result`: the
    /// output's), with the stage it is.
    pub fn next(
        &self,
        gw: &'a crate::gateway::Gateway,
        stage: u8,
        phase: Phase,
        consumer: &str,
        arguments: &Value,
        result: Option<&Value>,
    ) -> Option<(u8, UpstreamRequest)> {
        (stage..2).find_map(|s| {
            let (server, tool, e) = self.at(gw, s)?;
            let asks = if phase == Phase::Input { e.input } else { e.output };
            asks.then(|| (s, e.request(phase, Subject { server, tool, consumer }, arguments, result)))
        })
    }

    /// The verdict of the guard service of `stage` on `phase`.
    pub fn verdict(
        &self,
        gw: &'a crate::gateway::Gateway,
        stage: u8,
        phase: Phase,
        answer: &UpstreamResult,
    ) -> Result<(), GatewayError> {
        self.at(gw, stage).map_or(Ok(()), |(_, tool, e)| e.verdict(phase, tool, answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn external(extra: Value) -> External {
        let mut cfg = json!({"cluster": "guard", "timeoutMs": 300});
        cfg.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        External::compile(&ExternalConfig::read(&cfg, "external").unwrap()).unwrap()
    }

    fn answer(status: u16, body: &str) -> UpstreamResult {
        UpstreamResult::Response { status, headers: vec![], body: body.as_bytes().to_vec() }
    }

    const WHO: Subject<'static> = Subject { server: "s", tool: "t", consumer: "alice" };

    #[test]
    fn the_request_follows_the_documented_contract() {
        let e = external(json!({"path": "/v1/check", "output": true}));
        let r = e.request(Phase::Output, WHO, &json!({"q": 1}), Some(&json!({"content": []})));
        assert_eq!(
            (r.cluster.as_str(), r.method.as_str(), r.path.as_str(), r.authority.as_str()),
            ("guard", "POST", "/v1/check", "guard")
        );
        assert_eq!(r.timeout_ms, 300);
        assert_eq!(
            std::str::from_utf8(r.body.as_deref().unwrap()).unwrap(),
            r#"{"phase":"output","server":"s","tool":"t","consumer":"alice","arguments":{"q":1},"result":{"content":[]}}"#,
            "the members in their documented order"
        );
        let body: Value = serde_json::from_slice(r.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"phase": "output", "server": "s", "tool": "t", "consumer": "alice", "arguments": {"q": 1},
                   "result": {"content": []}})
        );
        let r = e.request(Phase::Input, WHO, &json!({}), None);
        assert!(serde_json::from_slice::<Value>(r.body.as_deref().unwrap()).unwrap().get("result").is_none());
    }

    #[test]
    fn allow_and_deny_verdicts() {
        let e = external(json!({}));
        assert_eq!(e.verdict(Phase::Input, "t", &answer(200, r#"{"allow": true}"#)), Ok(()));
        let denied = e.verdict(Phase::Input, "t", &answer(200, r#"{"allow": false, "reason": "PII in query"}"#));
        let Err(GatewayError::Guardrail { message }) = denied else { panic!("{denied:?}") };
        assert!(message.contains("refused the input of tool 't': PII in query"), "{message}");
    }

    #[test]
    fn failures_refuse_when_fail_closed_and_pass_when_fail_open() {
        let closed = external(json!({}));
        let open = external(json!({"failOpen": true}));
        for (bad, why) in [
            (answer(503, "down"), "HTTP 503"),
            (answer(200, "yes"), "not JSON"),
            (answer(200, r#"{"ok": true}"#), "no boolean `allow`"),
            (UpstreamResult::Failed("timeout".into()), "no answer (timeout)"),
        ] {
            let r = closed.verdict(Phase::Output, "t", &bad);
            let Err(GatewayError::Guardrail { message }) = r else { panic!("{r:?}") };
            assert!(message.contains(why) && message.contains("failOpen is false"), "{message}");
            assert_eq!(open.verdict(Phase::Output, "t", &bad), Ok(()));
        }
        // A refusal is a refusal even when failing open.
        assert!(open.verdict(Phase::Input, "t", &answer(200, r#"{"allow": false}"#)).is_err());
    }

    #[test]
    fn invalid_config_names_the_field() {
        let bad = |v: Value| External::compile(&ExternalConfig::read(&v, "external").unwrap()).unwrap_err().0;
        assert_eq!(bad(json!({"cluster": ""})), "cluster");
        assert_eq!(bad(json!({"cluster": "g", "path": "check"})), "path");
        assert_eq!(bad(json!({"cluster": "g", "authority": "a\r\nb"})), "authority");
        assert_eq!(bad(json!({"cluster": "g", "timeoutMs": 0})), "timeoutMs");
        assert_eq!(bad(json!({"cluster": "g", "input": false})), "input");
        let unread = |v: Value| ExternalConfig::read(&v, "guardrails.external").unwrap_err().0;
        assert_eq!(unread(json!({"path": "/c"})), "guardrails.external.cluster");
        assert_eq!(unread(json!({"cluster": "g", "failopen": true})), "guardrails.external.failopen");
        assert_eq!(unread(json!({"cluster": "g", "timeoutMs": "5"})), "guardrails.external.timeoutMs");
    }
}
