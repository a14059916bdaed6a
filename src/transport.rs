//! The Streamable HTTP transport at `{prefix}/{server}`, as a sans-IO state machine.
//!
//! [`route`] decides from the request head whether a request is ours and rejects what can be rejected
//! early. An accepted request becomes an [`Exchange`], which the host drives: it feeds the body, then
//! performs each [`Step`] (store I/O, upstream calls) and reports the outcome back, until a response is due.

use crate::gateway::{Gateway, Server};
use crate::jsonrpc::{self, Message};
use crate::mcp::{self, Handled};
use crate::session::{self, Session};
use crate::upstream::{UpstreamRequest, UpstreamResult};
use serde_json::{json, Value};

/// JSON-RPC error code for an unknown or expired session (as the reference SDKs use it).
pub const SESSION_NOT_FOUND: i64 = -32001;

/// The parts of an HTTP request head the transport looks at; header names lower-case.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A response for the host to send.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    fn json(status: u16, body: &Value) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    fn empty(status: u16) -> HttpResponse {
        HttpResponse { status, headers: Vec::new(), body: Vec::new() }
    }

    fn error(status: u16, id: Value, code: i64, message: impl Into<String>) -> HttpResponse {
        Self::json(status, &jsonrpc::error(id, code, message))
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What to do with a request, decided from its head.
#[derive(Debug)]
pub enum Route {
    /// Not under the prefix: leave it alone.
    PassThrough,
    Respond(HttpResponse),
    /// Ours: read the body (if any), then drive the exchange.
    Accept(Exchange),
}

/// The next thing the host must do for an exchange.
#[derive(Debug, PartialEq)]
pub enum Step {
    Respond(HttpResponse),
    /// Look the session up, then call [`Exchange::on_session`].
    LoadSession(String),
    /// Store the session, then call [`Exchange::on_stored`].
    SaveSession(String, Session),
    /// Delete the session, then call [`Exchange::on_stored`].
    DeleteSession(String),
    /// Send these requests; report each answer with [`Exchange::on_upstream`] by its index.
    Dispatch(Vec<UpstreamRequest>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Post,
    Delete,
}

/// Incoming messages: one, or a batch whose slots keep their order.
#[derive(Debug)]
enum Batch {
    One(Message),
    Many(Vec<Result<Message, (Value, String)>>),
}

#[derive(Debug)]
struct PendingCall {
    slot: usize,
    id: Value,
    tool: String,
    args: Value,
}

#[derive(Debug)]
enum Phase {
    Start,
    Initializing(Value),
    Loading(Batch),
    Refreshing(Batch),
    Deleting,
    Calling { single: bool, slots: Vec<Option<Value>>, calls: Vec<Option<PendingCall>>, remaining: usize },
    Done,
}

/// One HTTP request being served.
#[derive(Debug)]
pub struct Exchange {
    server: usize,
    kind: Kind,
    session_id: Option<String>,
    cors_origin: Option<String>,
    now_ms: u64,
    phase: Phase,
}

/// Decides what to do with a request from its head alone.
pub fn route(gw: &Gateway, head: &RequestHead) -> Route {
    let path = head.path.split(['?', '#']).next().unwrap_or("");
    let Some(rest) = path.strip_prefix(gw.prefix.as_str()) else {
        return Route::PassThrough;
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return Route::PassThrough;
    }
    let name = rest.trim_start_matches('/');
    let not_found = || {
        Route::Respond(HttpResponse::error(404, Value::Null, jsonrpc::INVALID_REQUEST, "no MCP server at this path"))
    };
    if name.is_empty() || name.contains('/') {
        return not_found();
    }
    let Some(server) = gw.servers.iter().position(|s| s.name == name) else {
        return not_found();
    };
    let origin = head.header("origin");
    if let Some(o) = origin {
        if !gw.origin_allowed(o) {
            return Route::Respond(HttpResponse::error(
                403,
                Value::Null,
                jsonrpc::INVALID_REQUEST,
                "Origin not allowed",
            ));
        }
    }
    let cors_origin = origin.map(str::to_string);
    let with_cors = |r: HttpResponse| add_cors(r, cors_origin.as_deref());
    if let Some(v) = head.header("mcp-protocol-version") {
        if !mcp::VERSIONS.contains(&v) {
            let body = jsonrpc::error_with_data(
                Value::Null,
                jsonrpc::INVALID_REQUEST,
                format!("Unsupported MCP-Protocol-Version: {v}"),
                json!({"supported": mcp::VERSIONS, "requested": v}),
            );
            return Route::Respond(with_cors(HttpResponse::json(400, &body)));
        }
    }
    let session_id = head.header("mcp-session-id").map(str::to_string);
    let kind = match head.method.as_str() {
        "POST" => {
            if let Some(accept) = head.header("accept") {
                if !accepts(accept, "application/json") || !accepts(accept, "text/event-stream") {
                    return Route::Respond(with_cors(HttpResponse::error(
                        406,
                        Value::Null,
                        jsonrpc::INVALID_REQUEST,
                        "Not Acceptable: the client must accept application/json and text/event-stream",
                    )));
                }
            }
            let ct = head.header("content-type").unwrap_or("");
            if !ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json") {
                return Route::Respond(with_cors(HttpResponse::error(
                    415,
                    Value::Null,
                    jsonrpc::INVALID_REQUEST,
                    "Unsupported Media Type: POST a JSON-RPC message as application/json",
                )));
            }
            Kind::Post
        }
        "DELETE" => {
            if session_id.is_none() {
                return Route::Respond(with_cors(HttpResponse::error(
                    400,
                    Value::Null,
                    jsonrpc::INVALID_REQUEST,
                    "Missing Mcp-Session-Id header",
                )));
            }
            Kind::Delete
        }
        "OPTIONS" if cors_origin.is_some() => {
            return Route::Respond(with_cors(
                HttpResponse::empty(204)
                    .header("access-control-allow-methods", "POST, DELETE, OPTIONS")
                    .header(
                        "access-control-allow-headers",
                        "content-type, accept, authorization, mcp-session-id, mcp-protocol-version, last-event-id",
                    )
                    .header("access-control-max-age", "600"),
            ));
        }
        _ => {
            // GET would open a server-to-client SSE stream; this server sends no unsolicited messages.
            return Route::Respond(with_cors(
                HttpResponse::error(
                    405,
                    Value::Null,
                    jsonrpc::INVALID_REQUEST,
                    "Method Not Allowed: use POST (or DELETE to end a session)",
                )
                .header("allow", "POST, DELETE"),
            ));
        }
    };
    Route::Accept(Exchange { server, kind, session_id, cors_origin, now_ms: 0, phase: Phase::Start })
}

/// Whether an Accept header admits a media type (exactly, by `type/*`, or by `*/*`).
fn accepts(accept: &str, media: &str) -> bool {
    let major = media.split('/').next().unwrap_or("");
    accept.split(',').any(|part| {
        let m = part.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        m == media || m == "*/*" || m.strip_suffix("/*") == Some(major)
    })
}

fn add_cors(mut r: HttpResponse, origin: Option<&str>) -> HttpResponse {
    if let Some(o) = origin {
        r.headers.push(("access-control-allow-origin".into(), o.to_string()));
        r.headers.push(("access-control-expose-headers".into(), "mcp-session-id, mcp-protocol-version".into()));
        r.headers.push(("vary".into(), "origin".into()));
    }
    r
}

impl Exchange {
    fn server<'g>(&self, gw: &'g Gateway) -> &'g Server {
        &gw.servers[self.server]
    }

    fn respond(&mut self, r: HttpResponse) -> Step {
        self.phase = Phase::Done;
        Step::Respond(add_cors(r, self.cors_origin.as_deref()))
    }

    /// Starts processing once the whole body is in. `new_id` is called only when a session is created;
    /// it returns `None` when no secure randomness is available.
    pub fn on_body(
        &mut self,
        gw: &Gateway,
        body: &[u8],
        now_ms: u64,
        new_id: &mut dyn FnMut() -> Option<String>,
    ) -> Step {
        self.now_ms = now_ms;
        if !matches!(self.phase, Phase::Start) {
            return self.respond(HttpResponse::error(
                500,
                Value::Null,
                jsonrpc::INTERNAL_ERROR,
                "request body delivered twice",
            ));
        }
        if self.kind == Kind::Delete {
            let id = self.session_id.clone().unwrap_or_default();
            self.phase = Phase::Deleting;
            return self.load_or_404(id, Value::Null);
        }
        if body.len() > gw.max_request_bytes {
            return self.respond(too_large(gw));
        }
        let value: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => {
                return self.respond(HttpResponse::error(
                    400,
                    Value::Null,
                    jsonrpc::PARSE_ERROR,
                    format!("Parse error: {e}"),
                ))
            }
        };
        let batch = match value {
            Value::Array(items) => {
                if items.is_empty() {
                    return self.respond(HttpResponse::error(
                        400,
                        Value::Null,
                        jsonrpc::INVALID_REQUEST,
                        "empty batch",
                    ));
                }
                let msgs: Vec<_> = items.into_iter().map(Message::from_value).collect();
                if msgs.iter().any(|m| matches!(m, Ok(Message::Request { method, .. }) if method == "initialize")) {
                    return self.respond(HttpResponse::error(
                        400,
                        Value::Null,
                        jsonrpc::INVALID_REQUEST,
                        "initialize must not be part of a batch",
                    ));
                }
                Batch::Many(msgs)
            }
            other => match Message::from_value(other) {
                Ok(m) => Batch::One(m),
                Err((id, why)) => {
                    return self.respond(HttpResponse::error(
                        400,
                        id,
                        jsonrpc::INVALID_REQUEST,
                        format!("Invalid Request: {why}"),
                    ))
                }
            },
        };
        if let Batch::One(Message::Request { id, method, params }) = &batch {
            if method == "initialize" {
                return self.initialize(gw, id.clone(), params.as_ref(), new_id);
            }
        }
        let reply_id = match &batch {
            Batch::One(Message::Request { id, .. }) => id.clone(),
            _ => Value::Null,
        };
        let Some(sid) = self.session_id.clone() else {
            return self.respond(HttpResponse::error(
                400,
                reply_id,
                jsonrpc::INVALID_REQUEST,
                "Bad Request: missing Mcp-Session-Id header (send initialize first)",
            ));
        };
        self.phase = Phase::Loading(batch);
        self.load_or_404(sid, reply_id)
    }

    fn load_or_404(&mut self, sid: String, reply_id: Value) -> Step {
        if !session::is_well_formed_id(&sid) {
            return self.respond(session_not_found(reply_id));
        }
        Step::LoadSession(sid)
    }

    fn initialize(
        &mut self,
        gw: &Gateway,
        id: Value,
        params: Option<&Value>,
        new_id: &mut dyn FnMut() -> Option<String>,
    ) -> Step {
        let params = params.and_then(Value::as_object);
        let Some(requested) = params.and_then(|p| p.get("protocolVersion")).and_then(Value::as_str) else {
            return self.respond(HttpResponse::json(
                200,
                &jsonrpc::error(id, jsonrpc::INVALID_PARAMS, "initialize needs params.protocolVersion"),
            ));
        };
        let version = mcp::negotiate(Some(requested));
        let server = self.server(gw);
        let reply = jsonrpc::result(id, mcp::initialize_result(server, version));
        let session = Session {
            server: server.name.clone(),
            version: version.to_string(),
            expires_ms: self.now_ms.saturating_add(gw.session_ttl_ms),
        };
        let Some(sid) = new_id() else {
            return self.respond(HttpResponse::error(
                503,
                reply["id"].clone(),
                jsonrpc::INTERNAL_ERROR,
                "no randomness available for a session id",
            ));
        };
        self.session_id = Some(sid.clone());
        self.phase = Phase::Initializing(reply);
        Step::SaveSession(sid, session)
    }

    /// Resumes after a session lookup; `Err` is a store failure.
    pub fn on_session(&mut self, gw: &Gateway, found: Result<Option<Session>, String>) -> Step {
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        let reply_id = match &phase {
            Phase::Loading(Batch::One(Message::Request { id, .. })) => id.clone(),
            _ => Value::Null,
        };
        let session = match found {
            Err(e) => {
                return self.respond(HttpResponse::error(
                    503,
                    reply_id,
                    jsonrpc::INTERNAL_ERROR,
                    format!("session store unavailable: {e}"),
                ))
            }
            Ok(s) => s.filter(|s| s.server == self.server(gw).name && !s.is_expired(self.now_ms)),
        };
        let Some(mut session) = session else {
            return self.respond(session_not_found(reply_id));
        };
        let sid = self.session_id.clone().unwrap_or_default();
        match phase {
            Phase::Deleting => {
                self.phase = Phase::Deleting;
                Step::DeleteSession(sid)
            }
            Phase::Loading(batch) => {
                if matches!(batch, Batch::Many(_)) && !mcp::allows_batch(&session.version) {
                    return self.respond(HttpResponse::error(
                        400,
                        Value::Null,
                        jsonrpc::INVALID_REQUEST,
                        format!("JSON-RPC batches are not allowed at protocol revision {}", session.version),
                    ));
                }
                if session.needs_refresh(self.now_ms, gw.session_ttl_ms) {
                    session.expires_ms = self.now_ms.saturating_add(gw.session_ttl_ms);
                    self.phase = Phase::Refreshing(batch);
                    return Step::SaveSession(sid, session);
                }
                self.process(gw, batch)
            }
            _ => self.respond(HttpResponse::error(
                500,
                Value::Null,
                jsonrpc::INTERNAL_ERROR,
                "unexpected session lookup",
            )),
        }
    }

    /// Resumes after a store write or delete.
    pub fn on_stored(&mut self, gw: &Gateway, outcome: Result<(), String>) -> Step {
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        match (phase, outcome) {
            (Phase::Initializing(reply), Ok(())) => {
                let sid = self.session_id.clone().unwrap_or_default();
                self.respond(HttpResponse::json(200, &reply).header("mcp-session-id", sid))
            }
            (Phase::Initializing(reply), Err(e)) => {
                let id = reply.get("id").cloned().unwrap_or(Value::Null);
                self.respond(HttpResponse::error(
                    503,
                    id,
                    jsonrpc::INTERNAL_ERROR,
                    format!("could not create the session: {e}"),
                ))
            }
            // A failed refresh only shortens the session's life; the request itself still proceeds.
            (Phase::Refreshing(batch), _) => self.process(gw, batch),
            (Phase::Deleting, Ok(())) => self.respond(HttpResponse::empty(204)),
            (Phase::Deleting, Err(e)) => self.respond(HttpResponse::error(
                503,
                Value::Null,
                jsonrpc::INTERNAL_ERROR,
                format!("could not delete the session: {e}"),
            )),
            _ => self.respond(HttpResponse::error(
                500,
                Value::Null,
                jsonrpc::INTERNAL_ERROR,
                "unexpected store completion",
            )),
        }
    }

    fn process(&mut self, gw: &Gateway, batch: Batch) -> Step {
        let server = self.server(gw);
        let (single, inputs) = match batch {
            Batch::One(m) => (true, vec![Ok(m)]),
            Batch::Many(v) => (false, v),
        };
        let mut slots = Vec::with_capacity(inputs.len());
        let mut calls = Vec::new();
        let mut requests = Vec::new();
        for (slot, input) in inputs.into_iter().enumerate() {
            match input {
                Err((id, why)) => {
                    slots.push(Some(jsonrpc::error(id, jsonrpc::INVALID_REQUEST, format!("Invalid Request: {why}"))))
                }
                Ok(m) => match mcp::handle(gw, server, m) {
                    Handled::Reply(v) => slots.push(Some(v)),
                    Handled::Silent => slots.push(None),
                    Handled::Call { id, tool, request, args } => {
                        slots.push(None);
                        calls.push(Some(PendingCall { slot, id, tool, args }));
                        requests.push(*request);
                    }
                },
            }
        }
        if requests.is_empty() {
            return self.reply(single, slots);
        }
        self.phase = Phase::Calling { single, slots, remaining: calls.len(), calls };
        Step::Dispatch(requests)
    }

    /// Reports the answer to dispatched request `index`; returns the response once every call is answered.
    pub fn on_upstream(&mut self, gw: &Gateway, index: usize, outcome: UpstreamResult) -> Option<Step> {
        let server = &gw.servers[self.server];
        let Phase::Calling { slots, calls, remaining, .. } = &mut self.phase else {
            return None;
        };
        let call = calls.get_mut(index)?.take()?;
        slots[call.slot] = Some(mcp::finish_call(gw, server, call.id, &call.tool, &call.args, outcome));
        *remaining -= 1;
        if *remaining > 0 {
            return None;
        }
        let Phase::Calling { single, slots, .. } = std::mem::replace(&mut self.phase, Phase::Done) else {
            return None;
        };
        Some(self.reply(single, slots))
    }

    fn reply(&mut self, single: bool, slots: Vec<Option<Value>>) -> Step {
        let replies: Vec<Value> = slots.into_iter().flatten().collect();
        if replies.is_empty() {
            return self.respond(HttpResponse::empty(202));
        }
        let body = if single { replies.into_iter().next().unwrap_or(Value::Null) } else { Value::Array(replies) };
        self.respond(HttpResponse::json(200, &body))
    }
}

fn session_not_found(id: Value) -> HttpResponse {
    HttpResponse::error(
        404,
        id,
        SESSION_NOT_FOUND,
        "Session not found: it expired or was deleted; initialize a new one",
    )
}

/// The response for a body over the configured limit.
pub fn too_large(gw: &Gateway) -> HttpResponse {
    HttpResponse::error(
        413,
        Value::Null,
        jsonrpc::INVALID_REQUEST,
        format!("Payload Too Large: the limit is {} bytes", gw.max_request_bytes),
    )
}

#[cfg(test)]
mod tests;
