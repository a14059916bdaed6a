//! The gateway as an MCP client of a proxied server, on a virtual server's behalf. A virtual server holds
//! no backend session of its client's, so each worker keeps one backend session of its own per proxied
//! server ([`Session`]), opened on demand: `initialize`, then `notifications/initialized`, then the
//! request. A backend that answers 404 for that session (it restarted, or expired it) gets a new one and
//! the request once more. Calls go through Envoy's async HTTP client to the proxied server's
//! `upstream.cluster`, with its `defaultUpstreamSecurity`; never with anything of the client's.
//!
//! A `transport: sse` server is reached through this Envoy's own Streamable HTTP bridge instead ([`Loop`],
//! [`crate::loopback`]): `POST {prefix}/{name}` on the virtual server's `gatewayCluster`, with a pass in
//! place of a credential (the bridge adds the server's own). The bridge opens a backend stream and
//! initialises it for every request, so the link holds no session there and sends the request alone.
//!
//! ```text
//! no session:  initialize ──200──> notifications/initialized ──2xx──> request ──> answer
//! session:     request ──200──> answer
//!                 └──404──> initialize ──> notifications/initialized ──> request (once)
//! ```

use crate::gateway::Gateway;
use crate::json::object;
use crate::jsonrpc;
use crate::proxy::sse;
use crate::upstream::{Dispatch, UpstreamRequest, UpstreamResult};
use serde_json::Value;

/// The id of the gateway's own `initialize`; a request's is `mcp-gateway-request-{n}`, unique on the session
/// ([`Link::start`]).
const INIT_ID: &str = "mcp-gateway-initialize";

/// A backend session the gateway holds (per worker): the backend's id (none for a stateless backend)
/// and the revision it agreed to.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub id: Option<String>,
    pub version: String,
}

/// How a link reaches a `transport: sse` server: through this Envoy's own bridge, on this cluster, with
/// this pass ([`crate::loopback`]; none when the host had no key, and the bridge then serves the request as
/// a client's).
#[derive(Debug, Clone, PartialEq)]
pub struct Loop {
    pub cluster: String,
    pub pass: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Initializing,
    Notifying,
    Requesting,
}

/// One request to one proxied server, with the handshake it needs first.
#[derive(Debug)]
pub struct Link {
    /// The proxied server's index in [`Gateway::servers`].
    pub backend: usize,
    method: &'static str,
    params: Value,
    /// The request's JSON-RPC id. Calls in flight together share the worker's backend session (a batch
    /// sends them at once), and a backend tells their answers apart by id alone.
    request_id: String,
    timeout_ms: u64,
    phase: Phase,
    /// A forgotten session was replaced once already.
    retried: bool,
    /// The backend session in use, once known: what the caller keeps for the next request.
    pub session: Option<Session>,
    /// The session the worker held when the link started: [`Link::session`] replaces it only if it is
    /// still held (links in flight together finish in any order).
    pub(super) began: Option<Box<Session>>,
    /// The log and progress notifications the backend sent ahead of its answer (an SSE answer), in order.
    pub notes: Vec<Value>,
    /// A `transport: sse` server's loopback (boxed: rare, and a job holds links by value).
    via: Option<Box<Loop>>,
}

/// What a link needs next.
#[derive(Debug, PartialEq)]
pub enum LinkStep {
    Send(UpstreamRequest),
    /// The backend's JSON-RPC answer to the request, or why there is none.
    Done(Result<Value, String>),
}

impl Link {
    /// Starts `method` on proxied server `backend`, with the session this worker holds for it if any;
    /// through `via` for a `transport: sse` server (no session: each bridged request initialises its own).
    /// `request`: a number no other request in flight on that session carries (its JSON-RPC id's).
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        gw: &Gateway,
        backend: usize,
        session: Option<Session>,
        request: u64,
        method: &'static str,
        params: Value,
        timeout_ms: u64,
        via: Option<Loop>,
    ) -> (Link, UpstreamRequest) {
        let stateless = || Session { id: None, version: crate::mcp::Revision::LATEST_LEGACY.as_str().to_string() };
        let began = session.clone().map(Box::new);
        let session = if via.is_some() { Some(stateless()) } else { session };
        let phase = if session.is_some() { Phase::Requesting } else { Phase::Initializing };
        let link = Link {
            backend,
            method,
            params,
            request_id: format!("mcp-gateway-request-{request}"),
            timeout_ms,
            phase,
            retried: false,
            session,
            began,
            notes: Vec::new(),
            via: via.map(Box::new),
        };
        let first = link.request(gw);
        (link, first)
    }

    /// The same link sends `params` next (the next page of a list), on the session it has.
    pub fn again(&mut self, gw: &Gateway, params: Value) -> UpstreamRequest {
        self.params = params;
        self.phase = if self.session.is_some() { Phase::Requesting } else { Phase::Initializing };
        self.request(gw)
    }

    /// The call's arguments (what a guard service is asked about).
    pub fn arguments(&self) -> &Value {
        self.params.get("arguments").unwrap_or(&Value::Null)
    }

    /// The backend's answer to what was sent last.
    pub fn on_answer(&mut self, gw: &Gateway, result: UpstreamResult) -> LinkStep {
        let (status, headers, body) = match result {
            UpstreamResult::Response { status, headers, body } => (status, headers, body),
            UpstreamResult::Failed(why) => return LinkStep::Done(Err(why)),
        };
        match self.phase {
            Phase::Initializing => {
                if status != 200 {
                    return LinkStep::Done(Err(format!("initialize answered HTTP {status}")));
                }
                let Some(answer) = find_answer(&headers, &body, INIT_ID) else {
                    return LinkStep::Done(Err("initialize got no JSON-RPC answer".into()));
                };
                let Some(version) = answer.pointer("/result/protocolVersion").and_then(Value::as_str) else {
                    let why = answer.pointer("/error/message").and_then(Value::as_str).unwrap_or("no result");
                    return LinkStep::Done(Err(format!("initialize failed: {why}")));
                };
                let id = header(&headers, "mcp-session-id").map(str::to_string);
                if id.as_deref().is_some_and(|i| !crate::upstream::is_safe_header_value(i)) {
                    return LinkStep::Done(Err("the backend's session id is not a valid header value".into()));
                }
                self.session = Some(Session { id, version: version.to_string() });
                self.phase = Phase::Notifying;
                LinkStep::Send(self.request(gw))
            }
            Phase::Notifying if (200..300).contains(&status) => {
                self.phase = Phase::Requesting;
                LinkStep::Send(self.request(gw))
            }
            Phase::Notifying => LinkStep::Done(Err(format!("notifications/initialized answered HTTP {status}"))),
            Phase::Requesting
                if status == 404 && !self.retried && self.session.as_ref().is_some_and(|s| s.id.is_some()) =>
            {
                // The backend forgot our session: a new one, and the request once more.
                self.retried = true;
                self.session = None;
                self.phase = Phase::Initializing;
                LinkStep::Send(self.request(gw))
            }
            Phase::Requesting => {
                if status == 404 {
                    self.session = None;
                }
                // The notifications to pass on and the first answer to our request, moved out in one pass.
                let mut notes = Vec::new();
                let mut answer = None;
                for m in messages(&headers, &body) {
                    let note = m.get("id").is_none()
                        && matches!(
                            m.get("method").and_then(Value::as_str),
                            Some("notifications/message" | "notifications/progress")
                        );
                    if note {
                        notes.push(m);
                    } else if answer.is_none() && m.get("id").and_then(Value::as_str) == Some(self.request_id.as_str())
                    {
                        answer = Some(m);
                    }
                }
                self.notes = notes;
                match answer {
                    Some(answer) => LinkStep::Done(Ok(answer)),
                    None if status != 200 => LinkStep::Done(Err(format!("{} answered HTTP {status}", self.method))),
                    None => LinkStep::Done(Err(format!("{} got no JSON-RPC answer", self.method))),
                }
            }
        }
    }

    /// The HTTP request of the current phase.
    fn request(&self, gw: &Gateway) -> UpstreamRequest {
        let body = match self.phase {
            Phase::Initializing => object(vec![
                ("jsonrpc", Value::from("2.0")),
                ("id", Value::from(INIT_ID)),
                ("method", Value::from("initialize")),
                (
                    "params",
                    object(vec![
                        ("protocolVersion", Value::from(crate::mcp::Revision::LATEST_LEGACY.as_str())),
                        ("capabilities", object(vec![])),
                        (
                            "clientInfo",
                            object(vec![
                                ("name", Value::from("mcp-gateway")),
                                ("version", Value::from(env!("CARGO_PKG_VERSION"))),
                            ]),
                        ),
                    ]),
                ),
            ]),
            Phase::Notifying => {
                object(vec![("jsonrpc", Value::from("2.0")), ("method", Value::from("notifications/initialized"))])
            }
            Phase::Requesting => object(vec![
                ("jsonrpc", Value::from("2.0")),
                ("id", Value::from(self.request_id.as_str())),
                ("method", Value::from(self.method)),
                ("params", self.params.clone()),
            ]),
        };
        let server = &gw.servers[self.backend];
        let backend = server.proxy.as_ref();
        let (cluster, mut path) = match &self.via {
            Some(l) => (l.cluster.clone(), format!("{}/{}", gw.prefix, server.name)),
            None => (
                backend.and_then(|b| b.cluster.clone()).unwrap_or_default(),
                backend.map_or_else(|| "/".to_string(), |b| b.path.clone()),
            ),
        };
        let mut headers: Vec<(String, String)> = vec![
            ("content-type".into(), "application/json".into()),
            ("accept".into(), "application/json, text/event-stream".into()),
        ];
        if let Some(s) = self.session.as_ref().filter(|_| self.phase != Phase::Initializing) {
            headers.push(("mcp-protocol-version".into(), s.version.clone()));
            if let Some(id) = &s.id {
                headers.push(("mcp-session-id".into(), id.clone()));
            }
        }
        match (&self.via, backend) {
            (Some(l), _) => {
                if let Some(pass) = &l.pass {
                    headers.push((crate::loopback::HEADER.into(), pass.clone()));
                }
            }
            (None, Some(b)) => b.add_credential(None, &mut headers, &mut path),
            (None, None) => {}
        }
        let authority =
            backend.and_then(|b| b.authority.clone().or(b.call_authority.clone())).unwrap_or_else(|| cluster.clone());
        UpstreamRequest {
            dispatch: Dispatch::Call,
            cluster,
            method: "POST".into(),
            authority,
            path,
            headers,
            body: Some(serde_json::to_vec(&body).unwrap_or_default()),
            timeout_ms: self.timeout_ms,
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The JSON-RPC answer with id `id` in a JSON or SSE body (an SSE answer may carry notifications first).
fn find_answer(headers: &[(String, String)], body: &[u8], id: &str) -> Option<Value> {
    messages(headers, body).into_iter().find(|v| v.get("id").and_then(Value::as_str) == Some(id))
}

/// The JSON-RPC messages of a JSON or SSE body, in order.
fn messages(headers: &[(String, String)], body: &[u8]) -> Vec<Value> {
    if header(headers, "content-type").is_some_and(|t| t.starts_with("text/event-stream")) {
        let mut parser = sse::Parser::default();
        let mut events = parser.feed(body);
        events.push(parser.rest());
        let mut out = Vec::new();
        for e in &events {
            if let Some(v) = sse::data(e).and_then(|d| serde_json::from_slice::<Value>(d.as_bytes()).ok()) {
                out.push(v);
            }
        }
        return out;
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        out.push(v);
    }
    out
}

/// The client's answer from the backend's: its result or error, under the client's id.
pub fn reply(id: Value, answer: Result<Value, String>, backend: &str) -> Value {
    match answer {
        Ok(mut a) => {
            if let Some(result) = a.get_mut("result").map(Value::take) {
                return jsonrpc::result(id, result);
            }
            let error = a.get_mut("error").map(Value::take).unwrap_or_default();
            if !error.get("code").is_some_and(Value::is_i64) || !error.get("message").is_some_and(Value::is_string) {
                let why = format!("proxied server '{backend}' sent an invalid answer");
                return jsonrpc::error(id, jsonrpc::INTERNAL_ERROR, why);
            }
            object(vec![("jsonrpc", Value::from("2.0")), ("id", id), ("error", error)])
        }
        Err(why) => jsonrpc::error(id, jsonrpc::INTERNAL_ERROR, format!("proxied server '{backend}' failed: {why}")),
    }
}
