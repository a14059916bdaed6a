//! Streamable HTTP clients of SSE backends (`transport: sse`, a client POSTing to `{prefix}/{name}`), as
//! Higress serves them: each client request becomes a backend SSE stream of its own. The request goes on
//! through Envoy's router as `GET mcpServerURL`, the answer's head is held, and its events are read here;
//! the gateway's own POSTs to the backend's message endpoint carry the exchange, and the client gets its
//! answer as a local reply (which also ends the backend's stream: Envoy 1.40 cannot end a stream whose
//! head has gone on, but sends a local reply in place of a held one).
//!
//! ```text
//! client POST ──[on_body]──> a notification or a response: 202, nothing reaches the backend; a request is
//!     checked as on http backends (allowTools, toolOverrides, policy, rate limits), held while Redis counts
//!     its call and the guard service checks its arguments ([`super::gate`], [`Bridge::on_gate`]), then goes
//!     on as the GET
//! answer head ──[on_head]──> 200 text/event-stream: held and read; anything else: the client's error
//! Opening      ──endpoint event──> POST initialize (the client's kept params, under INIT_ID) ──> Initializing
//!              (the client's own initialize: POST it as it came ──> Asking)
//! Initializing ──the answer to INIT_ID on the stream──> POST notifications/initialized ──> Notifying
//! Notifying    ──that POST's 2xx──> POST the client's message ──> Asking
//! Asking       ──the answer to the client's id──> Reply: JSON, or SSE with the notifications that came
//!                                                 before it (logs, progress), then the answer ──> Done
//!                                                 (held while the guard service checks a result first:
//!                                                 Wait, then [`Bridge::on_answer_gate`])
//! any state    ──timeout, a failed POST, the stream's end, a server-to-client request──> Reply: a JSON-RPC
//!                                                 error for the client's request ──> Done
//! ```
//!
//! Plain Rust: `crate::host::proxy` performs the steps.

use super::gate::Gate;
use super::wait::{Done, Pending};
use super::{
    backend_failure, edits, failure, forward_headers, new_relay, reinit, sse, unknown_session, Backend, Filter,
    OpenStep, Opening, Picked, Relay, Start, Then, SESSION,
};
use crate::gateway::{Gateway, Server};
use crate::header_edits::Edit;
use crate::jsonrpc;
use crate::mcp::Revision;
use crate::session::{redis, Env, Session, SessionOp, SessionOutcome, Started};
use crate::transport::{HttpResponse, RequestHead};
use serde_json::Value;

/// The id of the gateway's own `initialize` on a backend stream.
const INIT_ID: &str = "mcp-gateway-init";
/// Client headers that do not go on with the gateway's GET and POSTs (each sets its own).
const DROPPED: [&str; 6] = ["content-length", "content-type", "accept", "mcp-method", "mcp-name", "last-event-id"];

/// One client request to an SSE backend, from its body to its answer.
#[derive(Debug)]
pub struct Bridge {
    /// The request checks and the answer's rewriting, as on http backends.
    relay: Relay,
    backend: Backend,
    /// The client's request head, the source of the GET's and the POSTs' heads.
    head: RequestHead,
    own: Option<String>,
    /// The virtual server whose own call this is ([`crate::loopback`]), for the access log and stats.
    for_virtual: Option<Box<str>>,
    /// The tool and argument names of a virtual server's own `tools/call`, for the audit line that tells it
    /// from a client's ([`Bridge::own_call`]).
    own_call: Option<(String, Vec<String>)>,
    /// The client's live session, when it sent one.
    found: Option<Session>,
    client_id: Value,
    /// The request is the client's `initialize`: posted as it came, its answer gets our session.
    initialize: bool,
    /// The client's message as the backend gets it (a renamed tool's call under the backend's name).
    message: Vec<u8>,
    /// The client's `initialize` params (at its `initialize`), kept with the session it opens.
    init: Option<String>,
    version: Revision,
    parser: sse::Parser,
    /// The notifications that came before the answer, as SSE events.
    notes: Vec<u8>,
    /// The backend's message endpoint (path and query), from its `endpoint` event.
    endpoint: String,
    state: State,
    deadline_ms: u64,
    /// The client's answer to `initialize` while the store opens its session.
    reply: Option<HttpResponse>,
    /// The backend's answer had a result (not an error); at `initialize`, the revision it chose.
    answered: bool,
    chosen: Option<Revision>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Reading,
    Opening,
    Initializing,
    Notifying,
    Asking,
    Done,
}

/// Which of the gateway's POSTs an answer is for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Post {
    Initialize,
    Initialized,
    Message,
    /// The answer to the backend's `ping`.
    Pong,
}

/// What the request body leads to.
#[derive(Debug)]
pub enum Begin {
    Respond(HttpResponse),
    /// The request goes on as the backend's GET: its head changed by these edits, its body dropped.
    Stream(Vec<Edit>),
    /// The request's call waits for this step (its Redis counters, the guard service's input check) before
    /// anything reaches the backend: send it, then [`Bridge::on_gate`].
    Wait(Pending),
}

/// What the host does next.
#[derive(Debug)]
pub enum Step {
    /// POST this (head with pseudo-headers, body) to the backend's cluster, then [`Bridge::on_posted`].
    Post(Post, Vec<(String, String)>, Vec<u8>),
    /// Answer the client with this; the backend's stream ends with it.
    Reply(HttpResponse),
    /// The session store (Redis) opens the `initialize`'s session later: send this, then
    /// [`Bridge::on_session`] gives the reply.
    Redis(redis::Pending),
    /// The guard service checks the call's result first: send this, then [`Bridge::on_answer_gate`].
    Wait(Pending),
}

/// A POST to `{prefix}/{name}` of an SSE server: a bridge once the body is in; `GET` gets 405 (no
/// standalone stream), `DELETE` ends our session.
pub(super) fn start(
    gw: &Gateway,
    server: &Server,
    head: &RequestHead,
    own: Option<String>,
    caller: crate::caller::Caller,
) -> Then {
    let respond = |r: HttpResponse| Then::Done(Start::Respond(r));
    if let Some(origin) = head.header("origin").filter(|o| !gw.origin_allowed(o)) {
        let msg = format!("Forbidden: origin '{origin}' is not allowed");
        return respond(HttpResponse::error(403, Value::Null, jsonrpc::INVALID_REQUEST, msg));
    }
    let id = head.header(SESSION);
    if id.is_some_and(|id| id.len() > 256 || !id.bytes().all(|b| b.is_ascii_graphic())) {
        return respond(unknown_session());
    }
    let op = match (&*head.method, id) {
        ("POST", None) => {
            return match Bridge::new(server, head.clone(), own, caller, None) {
                Some(bridge) => Then::Done(Start::Bridge(Box::new(bridge))),
                None => respond(unknown_session()),
            }
        }
        ("POST", Some(id)) => (OpenStep::Bridge, SessionOp::Open { id: id.to_string(), server: server.name.clone() }),
        ("DELETE", Some(id)) => {
            (OpenStep::Delete(None), SessionOp::Delete { id: id.to_string(), server: server.name.clone() })
        }
        ("DELETE", None) => return respond(unknown_session()),
        _ => {
            let mut r = HttpResponse::error(405, Value::Null, jsonrpc::INVALID_REQUEST, "Method Not Allowed");
            r.headers.push(("allow".into(), "POST, DELETE".into()));
            return respond(r);
        }
    };
    let (step, op) = op;
    Then::Op(Box::new(Opening { server: server.name.clone(), head: head.clone(), own, caller, step }), op)
}

impl Bridge {
    /// A bridge for a client request to `server` (an SSE backend), in the client's session `found`.
    pub(super) fn new(
        server: &Server,
        head: RequestHead,
        own: Option<String>,
        caller: crate::caller::Caller,
        found: Option<Session>,
    ) -> Option<Bridge> {
        let backend = server.proxy.clone()?;
        let picked = Picked::of(&head);
        let mut relay = new_relay(server, &head, &picked, picked.session.map(str::to_string));
        relay.caller = caller;
        Some(Bridge {
            relay,
            backend,
            head,
            own,
            for_virtual: None,
            own_call: None,
            found,
            client_id: Value::Null,
            initialize: false,
            message: Vec::new(),
            init: None,
            version: Revision::LATEST_LEGACY,
            parser: sse::Parser::default(),
            notes: Vec::new(),
            endpoint: String::new(),
            state: State::Reading,
            deadline_ms: u64::MAX,
            reply: None,
            answered: false,
            chosen: None,
        })
    }

    /// A bridge for a virtual server's own call to `server` ([`crate::loopback`]): the virtual server has
    /// applied the server's guardrails and counted its limits, so the relay checks and renames nothing, and
    /// the backend gets the operator's credential only.
    pub(super) fn own(server: &Server, head: RequestHead, caller: &str) -> Option<Bridge> {
        let mut bridge = Bridge::new(server, head, None, crate::caller::Caller::anonymous(), None)?;
        bridge.for_virtual = Some(caller.into());
        let relay = &mut bridge.relay;
        (relay.allow, relay.header_allow, relay.policy, relay.guard) = (None, None, None, None);
        relay.overrides = Default::default();
        relay.limited_server = false;
        Some(bridge)
    }

    /// The proxied server's name.
    pub fn server(&self) -> &str {
        &self.relay.server
    }

    /// The virtual server this request is the own call of, if it is one.
    pub fn for_virtual(&self) -> Option<&str> {
        self.for_virtual.as_deref()
    }

    /// The audit line's record of a virtual server's own `tools/call`, once answered: it names the virtual
    /// server, so that an operator tells the gateway's own calls from clients'.
    pub fn own_call(&self) -> Option<crate::metrics::CallRecord> {
        let (tool, arguments) = self.own_call.as_ref().filter(|_| self.state == State::Done)?;
        Some(crate::metrics::CallRecord {
            server: self.server().to_string(),
            tool: tool.clone(),
            method: "tools/call",
            consumer: crate::caller::Caller::anonymous().label().to_string(),
            outcome: if self.answered { "ok" } else { "upstream_error" },
            upstream_status: None,
            latency_ms: None,
            arguments: arguments.clone(),
            for_virtual: self.for_virtual.as_deref().map(str::to_string),
        })
    }

    /// Whether the client's request body is still awaited.
    pub fn reading(&self) -> bool {
        self.state == State::Reading
    }

    /// Whether the exchange is over (answered): nothing more is done for it.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// The client's whole request body: answered at once, or the backend's stream opened for it.
    pub fn on_body(&mut self, gw: &Gateway, env: &mut dyn Env, body: &[u8], now_ms: u64) -> Begin {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            let r = HttpResponse::error(400, Value::Null, jsonrpc::PARSE_ERROR, "Parse error: the body is not JSON");
            return Begin::Respond(r);
        };
        if !v.is_object() {
            let msg = "an SSE backend takes one JSON-RPC message per POST from Streamable HTTP clients (no batches)";
            return Begin::Respond(HttpResponse::error(400, Value::Null, jsonrpc::INVALID_REQUEST, msg));
        }
        let method = v.get("method").and_then(Value::as_str);
        let (Some(method), Some(id)) = (method, v.get("id").filter(|id| !id.is_null())) else {
            // A notification or a response: each backend stream is the client's request's own, and a new
            // one is initialised for every request, so nothing the client notifies has a session to reach.
            return Begin::Respond(HttpResponse { status: 202, headers: Vec::new(), body: Vec::new() });
        };
        self.client_id = id.clone();
        self.relay.request_id = id.clone();
        self.initialize = method == "initialize";
        if self.for_virtual.is_some() && method == "tools/call" {
            let params = v.get("params");
            let tool = params.and_then(|p| p.get("name")).and_then(Value::as_str).unwrap_or_default();
            let arguments = crate::metrics::argument_names(params.and_then(|p| p.get("arguments")));
            self.own_call = Some((tool.to_string(), arguments));
        }
        self.message = match self.relay.on_body(gw, env, body) {
            Err(refused) => return Begin::Respond(refused),
            Ok(Some(renamed)) => renamed,
            Ok(None) => body.to_vec(),
        };
        let params = v.get("params");
        let asked = params.and_then(|p| p.get("protocolVersion")).and_then(Value::as_str);
        self.version = match &self.found {
            Some(s) if !self.initialize => Revision::parse(&s.version).unwrap_or(Revision::LATEST_LEGACY),
            _ => Revision::negotiate(asked),
        };
        if self.initialize {
            self.init = params.map(Value::to_string).filter(|p| p.len() <= reinit::MAX_INIT);
        }
        let gate = self.relay.gate();
        self.gated(gate, now_ms)
    }

    /// What the step a [`Begin::Wait`] waited for came to (by `now_ms`): the next step, or the request's
    /// fate.
    pub fn on_gate(&mut self, done: Done, now_ms: u64) -> Begin {
        let gate = self.relay.on_gate(done);
        self.gated(gate, now_ms)
    }

    fn gated(&mut self, gate: Gate, now_ms: u64) -> Begin {
        match gate {
            Gate::Wait(pending) => return Begin::Wait(pending),
            Gate::Refuse(refused) => return Begin::Respond(refused),
            Gate::Go(_) => {} // a body in place of the request's comes only for an SSE client's stream
        }
        self.state = State::Opening;
        self.deadline_ms = now_ms.saturating_add(self.backend.timeout_ms);
        // The router's own timeout comes later than ours, which answers the client itself.
        let router_ms = self.backend.timeout_ms.saturating_add(crate::routed::ROUTER_GRACE_MS);
        let path = self.backend.path.clone();
        let mut wanted = forward_headers(&self.head, &self.backend, path, None, Some(router_ms), self.own.as_deref());
        if let Some(method) = wanted.first_mut() {
            method.1 = "GET".into(); // `:method` comes first
        }
        wanted.retain(|(k, _)| !DROPPED.contains(&k.as_str()));
        wanted.push(("accept".into(), "text/event-stream".into()));
        Begin::Stream(edits(&self.head.headers, &wanted))
    }

    /// The backend stream's answer head: `None` when it is a stream to read (the host holds the head),
    /// else the client's error.
    pub fn on_head(&mut self, status: u16, headers: &[(String, String)]) -> Option<HttpResponse> {
        let content_type = headers.iter().find(|(k, _)| k == "content-type").map_or("", |(_, v)| v.as_str());
        if status == 200 && content_type.starts_with("text/event-stream") {
            return None;
        }
        self.state = State::Done;
        if status >= 500 {
            return Some(backend_failure(status, self.client_id.clone(), self.server()));
        }
        Some(self.fail(502, &format!("answered its SSE stream's GET with HTTP {status}")))
    }

    /// A chunk of the backend's stream (split anywhere); `end`: the stream has ended.
    pub fn on_chunk(&mut self, gw: &Gateway, env: &mut dyn Env, chunk: &[u8], end: bool) -> Vec<Step> {
        let mut steps = Vec::new();
        if self.state == State::Done {
            return steps;
        }
        for event in self.parser.feed(chunk) {
            if let Some(step) = self.on_event(gw, env, &event) {
                let replied = matches!(step, Step::Reply(_));
                steps.push(step);
                if replied {
                    return steps;
                }
            }
        }
        if end {
            steps.push(Step::Reply(self.fail(502, "ended its SSE stream before answering")));
        }
        steps
    }

    fn on_event(&mut self, gw: &Gateway, env: &mut dyn Env, event: &[u8]) -> Option<Step> {
        let data = sse::data(event)?;
        if sse::event_type(event).as_deref() == Some("endpoint") {
            if self.state != State::Opening {
                return None;
            }
            self.endpoint = match endpoint_path(&data, &self.backend.path) {
                Some(path) => path,
                None => return Some(Step::Reply(self.fail(502, "sent an endpoint that is not a URL"))),
            };
            if self.initialize {
                self.state = State::Asking;
                return Some(self.post(Post::Message, self.message.clone()));
            }
            self.state = State::Initializing;
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":"{INIT_ID}","method":"initialize","params":{}}}"#,
                self.init_params()
            );
            return Some(self.post(Post::Initialize, body.into_bytes()));
        }
        let v: Value = serde_json::from_slice(data.as_bytes()).ok()?;
        let method = v.get("method").and_then(Value::as_str);
        match (method, v.get("id")) {
            (Some("ping"), Some(id)) => {
                let pong = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{{}}}}"#);
                Some(self.post(Post::Pong, pong.into_bytes()))
            }
            (Some(asked), Some(_)) => {
                let what = format!(
                    "sent a server-to-client request ({asked}), which the gateway cannot pass to a Streamable HTTP \
                     client of an SSE backend (its SSE clients get it, at {}/{}/sse)",
                    gw.prefix,
                    self.server()
                );
                Some(Step::Reply(self.fail(200, &what)))
            }
            (Some(_), None) => {
                // A notification (a log, progress): delivered with the answer, within the answer's limit.
                if self.state == State::Asking && self.notes.len().saturating_add(data.len()) < gw.max_response_bytes {
                    self.notes.extend_from_slice(b"event: message\ndata: ");
                    self.notes.extend_from_slice(data.as_bytes());
                    self.notes.extend_from_slice(b"\n\n");
                }
                None
            }
            (None, Some(id)) if self.state == State::Initializing && id == INIT_ID => {
                if let Some(error) = v.get("error") {
                    let why = error.get("message").and_then(Value::as_str).unwrap_or("");
                    return Some(Step::Reply(self.fail(502, &format!("refused the gateway's initialize: {why}"))));
                }
                self.state = State::Notifying;
                let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
                Some(self.post(Post::Initialized, note.to_vec()))
            }
            (None, Some(id)) if self.state == State::Asking && *id == self.client_id => {
                self.state = State::Done;
                Some(self.answer(gw, env, v))
            }
            _ => None,
        }
    }

    /// The answer to one of the gateway's POSTs (`status` 0: none came).
    pub fn on_posted(&mut self, post: Post, status: u16) -> Vec<Step> {
        if self.state == State::Done {
            return Vec::new();
        }
        if !(200..300).contains(&status) {
            if status == 0 || status >= 500 {
                self.state = State::Done;
                let status = if status == 0 { 502 } else { status };
                return vec![Step::Reply(backend_failure(status, self.client_id.clone(), self.server()))];
            }
            let what = format!("refused the gateway's POST to its message endpoint (HTTP {status})");
            return vec![Step::Reply(self.fail(502, &what))];
        }
        if post == Post::Initialized && self.state == State::Notifying {
            self.state = State::Asking;
            return vec![self.post(Post::Message, self.message.clone())];
        }
        Vec::new()
    }

    /// The client's error once the server's `timeout` has run out by `now_ms`, while the exchange goes on.
    pub fn expired(&mut self, now_ms: u64) -> Option<HttpResponse> {
        if matches!(self.state, State::Reading | State::Done) || now_ms < self.deadline_ms {
            return None;
        }
        self.state = State::Done;
        Some(backend_failure(504, self.client_id.clone(), self.server()))
    }

    /// Ends the exchange with an error for the client's request: the backend `what` (did).
    fn fail(&mut self, status: u16, what: &str) -> HttpResponse {
        self.state = State::Done;
        let msg = format!("the proxied MCP server of '{}' {what}", self.server());
        HttpResponse::error(status, self.client_id.clone(), jsonrpc::INTERNAL_ERROR, msg)
    }

    /// The params of the gateway's `initialize`: the client's own, kept with its session; else (a signed
    /// session, which cannot carry them, or a request without a session) the session's revision and no
    /// capabilities.
    fn init_params(&self) -> String {
        match self.found.as_ref().and_then(|s| s.init.clone()) {
            Some(kept) => kept,
            None => format!(
                r#"{{"protocolVersion":"{}","capabilities":{{}},"clientInfo":{{"name":"mcp-gateway","version":"{}"}}}}"#,
                self.version.as_str(),
                env!("CARGO_PKG_VERSION")
            ),
        }
    }

    /// A POST of `body` to the backend's message endpoint, with the head of the client's request
    /// (credentials as configured for the server).
    fn post(&self, post: Post, body: Vec<u8>) -> Step {
        let endpoint = self.endpoint.clone();
        let mut headers = forward_headers(&self.head, &self.backend, endpoint, None, None, self.own.as_deref());
        // `:method` is the client's: POST, as bridged requests are.
        headers.retain(|(k, _)| !DROPPED.contains(&k.as_str()));
        headers.push(("content-type".into(), "application/json".into()));
        headers.push(("content-length".into(), body.len().to_string()));
        Step::Post(post, headers, body)
    }

    /// The client's answer: the backend's, rewritten as on http backends (lists filtered, tools renamed),
    /// after the notifications that came before it; at `initialize`, once the store has opened our session
    /// ([`Step::Redis`] when it answers later).
    fn answer(&mut self, gw: &Gateway, env: &mut dyn Env, v: Value) -> Step {
        let mut body = serde_json::to_vec(&v).unwrap_or_default();
        self.answered = v.get("result").is_some();
        // The revision the backend chose, which later requests declare in the gateway's initialize.
        self.chosen = v.pointer("/result/protocolVersion").and_then(Value::as_str).and_then(Revision::parse);
        if self.relay.lists.is_some() || !self.relay.guarded.is_empty() {
            self.relay.filter = Filter::Json(Vec::new());
            body = self.relay.on_chunk(gw, env, &body, true);
            match self.relay.answer_gate() {
                Gate::Wait(pending) => return Step::Wait(pending), // the answer is held in the relay
                Gate::Go(Some(checked)) => body = checked,
                Gate::Go(None) | Gate::Refuse(_) => {}
            }
        }
        self.reply(gw, env, body)
    }

    /// What the guard service said about the result a [`Step::Wait`] held: the next check, or the
    /// client's answer (a refused result replaced by the guardrail's error).
    pub fn on_answer_gate(&mut self, gw: &Gateway, env: &mut dyn Env, done: Done) -> Step {
        match self.relay.on_answer_gate(done) {
            Gate::Wait(pending) => Step::Wait(pending),
            Gate::Go(Some(body)) => self.reply(gw, env, body),
            Gate::Go(None) | Gate::Refuse(_) => {
                Step::Reply(self.fail(502, "answered a call whose result the gateway lost"))
                // not reached
            }
        }
    }

    /// The client's answer from the answer's body as rewritten and checked.
    fn reply(&mut self, gw: &Gateway, env: &mut dyn Env, mut body: Vec<u8>) -> Step {
        self.state = State::Done;
        let mut headers = Vec::new();
        let streams = self.head.header("accept").is_some_and(|a| a.contains("text/event-stream"));
        if !self.notes.is_empty() && streams {
            let mut events = std::mem::take(&mut self.notes);
            events.extend_from_slice(b"event: message\ndata: ");
            events.extend_from_slice(&body);
            events.extend_from_slice(b"\n\n");
            headers.push(("content-type".into(), "text/event-stream".into()));
            headers.push(("cache-control".into(), "no-cache".into()));
            body = events;
        } else {
            headers.push(("content-type".into(), "application/json".into()));
        }
        if body.len() > gw.max_response_bytes {
            let msg = format!("the answer has more than {} bytes (maxResponseBytes)", gw.max_response_bytes);
            return Step::Reply(HttpResponse::error(502, self.client_id.clone(), jsonrpc::INTERNAL_ERROR, msg));
        }
        if !self.initialize || !self.answered {
            return Step::Reply(HttpResponse { status: 200, headers, body });
        }
        let chosen = self.chosen;
        let reply = HttpResponse { status: 200, headers, body };
        let mut session = Session::new(self.server(), chosen.unwrap_or(self.version).as_str());
        session.init = self.init.take();
        self.reply = Some(reply);
        match gw.sessions.start(SessionOp::Create(session), env) {
            Started::Done(outcome) => Step::Reply(self.on_session(outcome)),
            Started::Redis(pending) => Step::Redis(pending),
        }
    }

    /// The store's answer to the session an `initialize` opens: the client's answer, with our id.
    pub fn on_session(&mut self, outcome: SessionOutcome) -> HttpResponse {
        match (self.reply.take(), outcome) {
            (Some(mut reply), SessionOutcome::Created(id)) => {
                reply.headers.push((SESSION.to_string(), id));
                reply
            }
            (_, other) => {
                let msg = format!("session store: {}", failure(&other));
                HttpResponse::error(503, self.client_id.clone(), jsonrpc::INTERNAL_ERROR, msg)
            }
        }
    }
}

/// The path (with query) of the message endpoint an `endpoint` event names: an absolute URL's path, a
/// path, or a path relative to the stream's; `None` for what cannot go in a header.
fn endpoint_path(url: &str, stream: &str) -> Option<String> {
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]).to_string(),
        None if url.starts_with('/') => url.to_string(),
        None => {
            let dir = stream.split('?').next().unwrap_or("").rsplit_once('/').map_or("", |(d, _)| d);
            format!("{dir}/{url}")
        }
    };
    (crate::upstream::is_safe_header_value(&path) && !path.contains(' ')).then_some(path)
}

#[cfg(test)]
#[path = "bridge_tests.rs"]
mod tests;
