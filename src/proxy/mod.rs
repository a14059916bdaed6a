//! Proxied MCP servers (`type: mcp-proxy`, Higress's shape): the gateway fronts a server that already
//! speaks MCP. The client's request goes on through Envoy's router to the backend (as `upstream.dispatch:
//! route` does for REST tools), so the backend's answer streams back chunk by chunk; the relay only decides
//! what to rewrite:
//!
//! ```text
//! request head  ──[`route`]──> our session opened, the backend's id put in its place, credentials dropped,
//!                              :path/:authority set to `mcpServerURL`  (or a local answer: 404, 403, ...)
//! request body  ──[`Relay::on_body`]──> only when a tool filter, `toolOverrides`, a policy or guardrails
//!                              apply: tools/call of other tools refused, of renamed tools given the
//!                              backend's name, arguments checked by the guardrails
//!               ──[`Relay::gate`]──> held while Redis counts the calls and the guard service checks
//!                              their arguments ([`gate`], [`wait`])
//! answer head   ──[`Relay::on_response_head`]──> a new backend session bound to a new one of ours, our id
//!                              in its place; backend failures turned into JSON-RPC errors
//! answer body   ──[`Relay::on_chunk`]──> passed through, or `tools/list` filtered and renamed
//!                              ([`tools`]), or `tools/call` results masked and size-checked by the
//!                              guardrails ([`crate::guard`]); JSON whole, SSE per event
//!               ──[`Relay::answer_gate`]──> held whole while the guard service checks results
//! ```
//!
//! SSE backends (`transport: sse`) serve SSE clients through the same relay (the `endpoint` event rewritten),
//! and Streamable HTTP clients through [`bridge`] (each request a backend stream of its own).
//!
//! Plain Rust: the host (`crate::host`) performs what the relay decides.

pub mod bridge;
pub mod gate;
pub mod reinit;
pub mod sse;
pub mod tools;
pub mod wait;

use crate::admission::policy::Kind;
use crate::b64::URL_SAFE_NO_PAD;
use crate::config::ServerConfig;
use crate::gateway::{Gateway, Server};
use crate::header_edits::{diff, Edit};
use crate::headers::one_of;
use crate::jsonrpc;
use crate::mcp::Revision;
use crate::session::{redis, signed, Env, Session, SessionOp, SessionOutcome, Started};
use crate::transport::{Headers, HttpResponse, RequestHead, SESSION_NOT_FOUND};
use serde_json::Value;
use std::sync::Arc;

/// The session header, both ways.
const SESSION: &str = "mcp-session-id";
/// Client headers the backend gets besides [`crate::upstream::TRACING_HEADERS`]: the MCP exchange's own
/// (`mcp-method` and `mcp-name` too: a 2026-07-28 backend checks them against the body). Credentials,
/// cookies and anything else stay behind.
const KEPT: [&str; 8] = [
    "content-type",
    "content-length",
    "accept",
    "mcp-protocol-version",
    "mcp-method",
    "mcp-name",
    "last-event-id",
    "user-agent",
];
/// The id prefix of a `ping` that stands for a refused message to an SSE backend: the rest is the refusal
/// (base64url JSON), which the relay of the client's stream puts in place of the ping's answer. It is
/// stateless, as the POST and the stream may be served by different workers; a client that forges one
/// only misleads itself.
const REFUSED: &str = "mcp-gateway-refused:";
/// The id prefix of a `tools/call` to an SSE backend whose tool has its own guardrails (`guardrails.tools`):
/// `{CALLED}{base64url(the client's id as JSON)}:{tool}`, so that the stream's relay, which sees the result
/// come by another exchange, restores the client's id and applies that tool's guardrails. Other tools'
/// results are known by their shape and get the server's. Clients may not send ids with this prefix. A
/// client's `notifications/cancelled` goes on as sent, and once more for each such tool under the id a
/// call of it would have had ([`Relay::take_also`]): the POST that carries it cannot know the tool.
const CALLED: &str = "mcp-gateway-call:";
/// Where a 2026-07-28 request says its revision (in `params._meta`).
const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// Default `timeout` of a proxied server, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;

/// Where a proxied server lives: compiled from `mcpServerURL`.
#[derive(Debug, Clone)]
pub struct Backend {
    /// The server's name, shared: every relay of this server holds it (a copy of it was an allocation per
    /// proxied request).
    pub name: Arc<str>,
    /// The path the backend serves MCP at, with its query if any.
    pub path: String,
    /// `host[:port]` of an absolute URL; `None`: the client's `:authority` is kept.
    pub authority: Option<String>,
    pub timeout_ms: u64,
    /// `transport: sse`: `path` is the backend's SSE endpoint, and clients use ours (`.../sse`, `.../message`).
    pub sse: bool,
    /// `defaultUpstreamSecurity`: the operator's credential for the backend.
    pub credential: Option<crate::credential::Credential>,
    /// `passthroughAuthHeader`: the client's `Authorization` goes on to the backend.
    pub passthrough_auth: bool,
    /// `toolOverrides`: tools renamed and re-described.
    pub overrides: Arc<tools::Overrides>,
    /// `upstream.cluster`: where the gateway's own calls go, on behalf of virtual servers
    /// ([`crate::composed`]); clients' requests go through their route.
    pub cluster: Option<String>,
    /// `upstream.authority`: the `:authority` of those calls when `mcpServerURL` is a path (default: the
    /// cluster's name; a backend that checks `Host`, as the SDKs' DNS-rebinding protection does, needs its own).
    pub call_authority: Option<String>,
}

impl Backend {
    /// The backend of a `type: mcp-proxy` server, `None` for other servers; errors name the field.
    pub fn compile(s: &ServerConfig) -> Result<Option<Backend>, (String, String)> {
        let err = |field: &str, msg: String| Err((field.to_string(), msg));
        match s.kind.as_deref() {
            None | Some("virtual") => {
                if !s.tool_overrides.is_empty() {
                    return err("toolOverrides", "renames a proxied server's tools; it needs type: mcp-proxy".into());
                }
                if s.mcp_server_url.is_some() || s.transport.is_some() {
                    return err("type", "mcpServerURL and transport need type: mcp-proxy".into());
                }
                return Ok(None);
            }
            Some("mcp-proxy") => {}
            Some(other) => return err("type", format!("'{other}' is not a server type: use mcp-proxy or virtual")),
        }
        match s.transport.as_deref() {
            None | Some("http") => {}
            Some("sse") => {}
            Some(other) => return err("transport", format!("'{other}' must be http or sse")),
        }
        if !s.tools.is_empty() || !s.prompts.is_empty() || !s.resources.is_empty() {
            let msg = "a proxied server offers its backend's tools, prompts and resources only (toolOverrides renames \
                       and re-describes its tools)";
            return err("tools", msg.into());
        }
        let Some(url) = s.mcp_server_url.as_deref() else {
            return err("mcpServerURL", "a proxied server needs the backend's MCP endpoint".into());
        };
        if !crate::upstream::is_safe_header_value(url) || url.contains(' ') || url.contains("{{") {
            return err("mcpServerURL", format!("'{url}' must be a literal path or URL"));
        }
        let (authority, path) = if url.starts_with('/') {
            (None, url.to_string())
        } else if let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) {
            let (host, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
            if host.is_empty() || host.contains('@') {
                return err("mcpServerURL", format!("'{url}' needs a literal host (no user info)"));
            }
            (Some(host.to_string()), path.to_string())
        } else {
            return err("mcpServerURL", format!("'{url}' must be a path (/mcp) or an http(s):// URL"));
        };
        let credential = match &s.default_upstream_security {
            Some(wanted) => Some(
                crate::credential::Credential::compile(&s.security_schemes, wanted)
                    .map_err(|m| ("defaultUpstreamSecurity".to_string(), m))?,
            ),
            None => None,
        };
        let overrides = tools::Overrides::compile(&s.tool_overrides, s.allow_tools.as_deref())?;
        Ok(Some(Backend {
            name: Arc::from(s.name.as_str()),
            overrides: Arc::new(overrides),
            path,
            authority,
            timeout_ms: s.timeout.unwrap_or(DEFAULT_TIMEOUT_MS),
            sse: s.transport.as_deref() == Some("sse"),
            credential,
            passthrough_auth: s.passthrough_auth_header,
            cluster: s.upstream.as_ref().and_then(|u| u.cluster.clone()),
            call_authority: s.upstream.as_ref().and_then(|u| u.authority.clone()),
        }))
    }

    /// Adds the operator's credential (`defaultUpstreamSecurity`) to a request: a header, a query
    /// parameter appended to `path`, or a cookie.
    pub fn add_credential(&self, own: Option<&str>, headers: &mut Vec<(String, String)>, path: &mut String) {
        let Some(credential) = &self.credential else { return };
        let (mut query, mut cookies) = (Vec::new(), Vec::new());
        credential.apply(own, headers, &mut query, &mut cookies);
        if !query.is_empty() {
            path.push(if path.contains('?') { '&' } else { '?' });
            for (i, (k, v)) in query.into_iter().enumerate() {
                if i > 0 {
                    path.push('&');
                }
                path.push_str(&k);
                path.push('=');
                path.push_str(&v);
            }
        }
        if !cookies.is_empty() {
            headers.push(("cookie".into(), cookies.join("; ")));
        }
    }
}

/// What to do with a request to a proxied server.
#[derive(Debug)]
// `Forward` is the large one, and the one every proxied request takes: its relay moves into the stream's
// state, which holds it inline, so boxing it here was an allocation and a free per request for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Start {
    /// Answer locally (an unknown session, a refused origin).
    Respond(HttpResponse),
    /// Send the request on with its headers changed by these edits (only the headers that change).
    Forward(Relay, Vec<Edit>),
    /// The session store answers later (Redis): send `pending.command`, finish it with
    /// [`SessionStore::on_redis_reply`](crate::session::SessionStore::on_redis_reply), and hand the outcome
    /// to [`resume`]. The request stays paused meanwhile.
    Redis(Box<Opening>, redis::Pending),
    /// A Streamable HTTP client's POST to an SSE backend: read its body, then [`bridge::Bridge::on_body`].
    Bridge(Box<bridge::Bridge>),
}

/// A request head waiting for the session store: what [`resume`] needs to decide once it has answered.
#[derive(Debug)]
pub struct Opening {
    server: String,
    head: RequestHead,
    /// The caller's own upstream credential (per-user credentials), if any.
    own: Option<String>,
    caller: crate::caller::Caller,
    step: OpenStep,
}

/// Which store answer an [`Opening`] waits for.
#[derive(Debug)]
enum OpenStep {
    /// The client's session (`Mcp-Session-Id`), for a Streamable HTTP backend.
    Open,
    /// A `DELETE`'s session (when bound to a backend session), ended on our side; to end there too.
    Delete(Option<Session>),
    /// An SSE backend's session (`sessionId=`), for a POST to its message endpoint.
    Message,
    /// The client's session, for a Streamable HTTP client's POST to an SSE backend ([`bridge`]).
    Bridge,
}

/// A request head's next move: decided, or a session operation first.
#[allow(clippy::large_enum_variant)] // as `Start`, whose forwarded relay it carries
enum Then {
    Done(Start),
    Op(Box<Opening>, SessionOp),
}

/// What to do with the backend's answer.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// Let it through, its headers changed by these edits (none: as it came).
    Pass(Vec<Edit>),
    /// Let it through with its headers changed by these edits, rewriting the body ([`Relay::on_chunk`]).
    Rewrite(Vec<Edit>),
    /// As `Rewrite`, but hold the head (and the body so far) until [`Relay::bind`] says the SSE backend's
    /// `endpoint` event is bound to a session of ours: a store that fails can still answer with an error.
    Hold(Vec<Edit>),
    /// Replace it with this response.
    Replace(HttpResponse),
    /// Hold the answer while the session store (Redis) runs this command; its outcome goes to
    /// [`Relay::on_session`], which says what to do instead.
    Redis(redis::Pending),
    /// The backend forgot the session: hold its answer and re-initialise it ([`reinit`]).
    Reinit(Box<reinit::Reinit>),
}

/// What the answer head waits for from the session store.
#[derive(Debug)]
enum After {
    /// Our session, whose backend session has ended, is deleted: the client is told to initialize again.
    Forgotten,
    /// A session of ours for the backend's new one: the head (status, headers) then gets its id.
    Created(u16, Vec<(String, String)>),
}

/// How the body of a `tools/list` answer is filtered.
#[derive(Debug)]
enum Filter {
    None,
    /// JSON: read whole (the host buffers it), then filtered.
    Json(Vec<u8>),
    /// SSE: event by event as the chunks come.
    Sse(sse::Parser),
    /// SSE read whole (the host buffers it): the guard service checks results before the client sees them.
    SseWhole(Vec<u8>),
    /// An SSE backend's stream: its `endpoint` event is bound to a session of ours and rewritten.
    Endpoint(sse::Parser),
}

/// An SSE backend's stream while its `endpoint` event is bound to a session of ours ([`Relay::bind`]).
#[derive(Debug, Default)]
struct Binding {
    /// The endpoint is bound: the head and the events before it have gone on.
    bound: bool,
    /// The store (Redis) creates our session: the endpoint event and the events after it wait for it.
    waiting: Option<(Vec<u8>, Vec<Vec<u8>>)>,
    pending: Option<redis::Pending>,
    failed: Option<HttpResponse>,
}

/// Where an SSE backend's stream is with its `endpoint` event.
#[derive(Debug)]
pub enum Bind {
    /// Not seen yet: the head stays held and the rewritten stream so far is kept.
    Seeking,
    /// Bound (or nothing to bind): the held head and the stream so far go on.
    Bound,
    /// The store answers later: send this command, then hand its outcome to [`Relay::on_bound`].
    Redis(redis::Pending),
    /// No session for the stream: this answer goes to the client instead (the backend's stream is ended).
    Failed(HttpResponse),
}

/// One proxied request, from its head to the end of its answer.
#[derive(Debug)]
pub struct Relay {
    server: Arc<str>,
    /// The request is a POST (a flag, not a copy of the method: this is every proxied request's relay).
    post: bool,
    /// The client's session id (ours), when it sent one that is live.
    ours: Option<String>,
    /// The revision a new session is recorded with.
    version: Revision,
    /// The server's `allowTools`, and the request's `x-envoy-allow-mcp-tools`.
    allow: Option<Vec<String>>,
    header_allow: Option<Vec<String>>,
    overrides: Arc<tools::Overrides>,
    /// The request lists `tools`, `prompts`, `resources` or `resourceTemplates`, whose answer is filtered.
    lists: Option<&'static str>,
    /// Who calls (admission), and what the server's policy lets it use.
    caller: crate::caller::Caller,
    policy: Option<Arc<crate::admission::policy::Policy>>,
    /// The id a gateway error answers to.
    request_id: Value,
    filter: Filter,
    /// The server's guardrails.
    guard: Option<Arc<crate::guard::Guard>>,
    /// The `tools/call`s of the request whose results the guardrails filter: (id, tool as the client calls it).
    guarded: Vec<(Value, String)>,
    /// The server has rate limits or quotas, so `tools/call` bodies are read to count them.
    limited_server: bool,
    /// A POST to an SSE backend's message endpoint: its answer travels on the client's stream, so a refusal
    /// goes there too ([`REFUSED`]).
    via_stream: bool,
    /// The session operation the answer head waits for ([`Answer::Redis`]).
    after: Option<After>,
    /// The client's live session, as the store had it.
    found: Option<Session>,
    /// The request body is kept (a POST to a Streamable HTTP backend, with a store that can update a
    /// session): for the `initialize` params, and to send the request again after a re-initialisation.
    keeps: bool,
    /// The request head the backend got, and its body (once whole), when [`Relay::keeps_body`].
    sent: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    /// An SSE backend's stream: its endpoint's binding to a session of ours.
    binding: Binding,
    /// Messages the gateway also sends to an SSE backend's message endpoint, with the head in `sent`.
    also: Vec<Vec<u8>>,
    /// The request's `tools/call`s, for the checks that wait ([`gate`]).
    checks: gate::Checks,
    /// An SSE backend's stream: the result the guard service checks now, and the events queued behind it.
    stream_hold: Option<Box<gate::StreamHold>>,
}

/// Decides what to do with a request from its head; `None` when it is not for a proxied server. Session
/// operations the store completes at once (local, signed) are run here; a Redis one is handed to the host
/// ([`Start::Redis`]).
pub fn route(gw: &Gateway, head: &RequestHead, env: &mut dyn Env) -> Option<Start> {
    // Bytes, not a `char` pattern: this runs for every request under the prefix.
    let end = head.path.bytes().position(|b| b == b'?' || b == b'#').unwrap_or(head.path.len());
    let path = head.path.get(..end).unwrap_or("");
    let rest = path.strip_prefix(gw.prefix.as_str())?.strip_prefix('/')?;
    let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let server = gw.server(name)?;
    let backend = server.proxy.as_ref()?;
    if backend.sse || tail.is_empty() {
        let own = if backend.sse && tail.is_empty() { own_call(gw, head, &server.name, env) } else { None };
        if let Some(caller) = own {
            let bridge = bridge::Bridge::own(server, head.clone(), caller);
            return Some(bridge.map_or_else(|| Start::Respond(unknown_session()), |b| Start::Bridge(Box::new(b))));
        }
        // Admission first: nothing reaches the backend for a caller the server does not admit.
        let caller = match crate::transport::admit(gw, server, head) {
            Ok(caller) => caller,
            Err(refused) => return Some(Start::Respond(refused.response(Value::Null))),
        };
        let own = gw.admission.upstream_credential(&server.auth, &server.name, &caller);
        let then = match (backend.sse, tail.is_empty()) {
            (false, _) => start(gw, server, head, own, caller),
            (true, true) => bridge::start(gw, server, head, own, caller),
            (true, false) => start_sse(gw, server, backend, head, tail, own, caller),
        };
        return Some(settle(gw, env, then));
    }
    None
}

/// The calling virtual server when a request to SSE server `server`'s bridge is its own call through this
/// Envoy ([`crate::loopback`]): a sessionless POST with a valid pass. Anything else is a client's request,
/// pass or not.
fn own_call<'h>(gw: &Gateway, head: &'h RequestHead, server: &str, env: &mut dyn Env) -> Option<&'h str> {
    let keys = gw.loopback.as_ref()?;
    let pass = head.header(crate::loopback::HEADER)?;
    if head.method != "POST" || head.header(SESSION).is_some() {
        return None;
    }
    keys.admits(env, pass, server)
}

/// Runs session operations until the request's fate is decided or the store answers later.
fn settle(gw: &Gateway, env: &mut dyn Env, mut then: Then) -> Start {
    loop {
        let (opening, op) = match then {
            Then::Done(start) => return start,
            Then::Op(opening, op) => (opening, op),
        };
        then = match gw.sessions.start(op, env) {
            Started::Done(outcome) => opening.next(gw, outcome),
            Started::Redis(pending) => return Start::Redis(opening, pending),
        };
    }
}

/// Goes on with a request head once the session store has answered ([`Start::Redis`]); may ask again
/// (a `DELETE` ends the session it opened).
pub fn resume(gw: &Gateway, env: &mut dyn Env, opening: Opening, outcome: SessionOutcome) -> Start {
    let then = opening.next(gw, outcome);
    settle(gw, env, then)
}

impl Opening {
    fn next(self, gw: &Gateway, outcome: SessionOutcome) -> Then {
        let respond = |status, code, msg: String| HttpResponse::error(status, Value::Null, code, msg);
        let done = |r: HttpResponse| Then::Done(Start::Respond(r));
        let Some((server, backend)) = gw.server(&self.server).and_then(|s| Some((s, s.proxy.as_ref()?))) else {
            return done(respond(404, jsonrpc::INVALID_REQUEST, format!("no proxied server '{}'", self.server)));
        };
        match (&outcome, &self.step) {
            (_, OpenStep::Delete(_)) => {} // ours is gone or will expire: the backend's is ended all the same
            (SessionOutcome::Failed(e), _) => {
                return done(respond(503, jsonrpc::INTERNAL_ERROR, format!("session store: {e}")))
            }
            _ => {}
        }
        let Opening { head, own, caller, step, .. } = self;
        let picked = Picked::of(&head);
        let ours = picked.session.map(str::to_string);
        match step {
            OpenStep::Open => {
                let found = match outcome {
                    SessionOutcome::Found(s) if s.server == server.name => s,
                    _ => return done(unknown_session()),
                };
                if head.method == "DELETE" {
                    let id = ours.unwrap_or_default();
                    let op = SessionOp::Delete { id, server: server.name.clone() };
                    let step = OpenStep::Delete(found.backend.is_some().then_some(found));
                    return Then::Op(Box::new(Opening { server: server.name.clone(), head, own, caller, step }), op);
                }
                Then::Done(forward(gw, server, &head, &picked, own.as_deref(), caller, ours, Some(found)))
            }
            OpenStep::Delete(None) => done(HttpResponse { status: 204, headers: Vec::new(), body: Vec::new() }),
            OpenStep::Delete(found) => {
                Then::Done(forward(gw, server, &head, &picked, own.as_deref(), caller, ours, found))
            }
            OpenStep::Message => match outcome {
                SessionOutcome::Found(Session { backend: Some(path), server: s, .. }) if s == server.name => {
                    Then::Done(forward_sse(server, backend, &head, path, own.as_deref(), caller))
                }
                _ => done(respond(404, SESSION_NOT_FOUND, "Session not found: open a new SSE stream".into())),
            },
            OpenStep::Bridge => match outcome {
                SessionOutcome::Found(s) if s.server == server.name => {
                    match bridge::Bridge::new(server, head, own, caller, Some(s)) {
                        Some(b) => Then::Done(Start::Bridge(Box::new(b))),
                        None => done(unknown_session()),
                    }
                }
                _ => done(unknown_session()),
            },
        }
    }
}

fn unknown_session() -> HttpResponse {
    let msg = "Session not found: initialize a new session (no Mcp-Session-Id)";
    HttpResponse::error(404, Value::Null, SESSION_NOT_FOUND, msg)
}

/// The legacy SSE transport to an SSE backend: `GET {prefix}/{name}/sse` streams the backend's SSE endpoint
/// (its `endpoint` event rewritten to ours), `POST {prefix}/{name}/message?sessionId=` goes on to the
/// backend's message endpoint that session stands for.
fn start_sse(
    gw: &Gateway,
    server: &Server,
    backend: &Backend,
    head: &RequestHead,
    tail: &str,
    own: Option<String>,
    caller: crate::caller::Caller,
) -> Then {
    let respond =
        |status, code, msg: String| Then::Done(Start::Respond(HttpResponse::error(status, Value::Null, code, msg)));
    if let Some(origin) = head.header("origin").filter(|o| !gw.origin_allowed(o)) {
        return respond(403, jsonrpc::INVALID_REQUEST, format!("Forbidden: origin '{origin}' is not allowed"));
    }
    match (&*head.method, tail) {
        ("GET", "sse") => Then::Done(forward_sse(server, backend, head, backend.path.clone(), own.as_deref(), caller)),
        ("POST", "message") => {
            let query = head.path.split_once('?').map_or("", |(_, q)| q);
            let id = query.split('&').find_map(|kv| kv.strip_prefix("sessionId=")).unwrap_or("");
            let open = SessionOp::Open { id: id.to_string(), server: server.name.clone() };
            let step = OpenStep::Message;
            Then::Op(Box::new(Opening { server: server.name.clone(), head: head.clone(), own, caller, step }), open)
        }
        _ => {
            let msg = format!(
                "'{}' is an SSE server: GET {}/{}/sse opens its stream, whose endpoint event says where to POST",
                server.name, gw.prefix, server.name
            );
            respond(404, jsonrpc::INVALID_REQUEST, msg)
        }
    }
}

/// A request to an SSE backend goes on: its stream (`GET`), or a message to the endpoint at `path`.
fn forward_sse(
    server: &Server,
    backend: &Backend,
    head: &RequestHead,
    path: String,
    own: Option<&str>,
    caller: crate::caller::Caller,
) -> Start {
    let mut relay = new_relay(server, head, &Picked::of(head), None);
    relay.caller = caller;
    if head.method == "GET" {
        relay.filter = Filter::Endpoint(sse::Parser::default());
    }
    let timeout = (head.method == "POST").then_some(backend.timeout_ms);
    relay.via_stream = head.method == "POST";
    let mut headers = forward_headers(head, backend, path, None, timeout, own);
    if relay.needs_body() {
        headers.retain(|(k, _)| k != "content-length"); // a renamed or refused call's body changes length
    }
    let edits = edits(&head.headers, &headers);
    if relay.via_stream && relay.guard.as_ref().is_some_and(|g| g.own_tools().next().is_some()) {
        relay.sent = headers; // for the cancellations it may also send
    }
    Start::Forward(relay, edits)
}

/// The client headers the forward path reads, found in one pass over the head (each the first value of
/// its name, case-insensitively, as [`RequestHead::header`] finds it): a proxied call asked the head for
/// each one by one, eight scans of the whole head.
#[derive(Debug, Default)]
pub(super) struct Picked<'a> {
    origin: Option<&'a str>,
    session: Option<&'a str>,
    allow: Option<&'a str>,
    version: Option<&'a str>,
    authority: Option<&'a str>,
    scheme: Option<&'a str>,
    authorization: Option<&'a str>,
}

impl<'a> Picked<'a> {
    /// One pass over `head`: each name is told by its length (all differ) before it is compared.
    pub(super) fn of(head: &'a RequestHead) -> Picked<'a> {
        let mut p = Picked::default();
        for (k, v) in &head.headers {
            let (slot, name) = match k.len() {
                6 => (&mut p.origin, "origin"),
                14 => (&mut p.session, SESSION),
                23 => (&mut p.allow, "x-envoy-allow-mcp-tools"),
                20 => (&mut p.version, "mcp-protocol-version"),
                10 => (&mut p.authority, ":authority"),
                7 => (&mut p.scheme, ":scheme"),
                13 => (&mut p.authorization, "authorization"),
                _ => continue,
            };
            if slot.is_none() && k.eq_ignore_ascii_case(name) {
                *slot = Some(v);
            }
        }
        p
    }
}

fn new_relay(server: &Server, head: &RequestHead, picked: &Picked, ours: Option<String>) -> Relay {
    let header_allow = picked.allow.map(|v| {
        let mut tools = Vec::new();
        for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            tools.push(t.to_string());
        }
        tools
    });
    Relay {
        server: server.proxy.as_ref().map_or_else(|| Arc::from(server.name.as_str()), |b| b.name.clone()),
        post: head.method == "POST",
        ours,
        version: Revision::negotiate(picked.version),
        allow: server.allow_tools.clone(),
        header_allow,
        overrides: server.proxy.as_ref().map(|b| b.overrides.clone()).unwrap_or_default(),
        lists: None,
        caller: crate::caller::Caller::anonymous(),
        policy: server.policy.clone(),
        request_id: Value::Null,
        filter: Filter::None,
        guard: server.guard.clone(),
        guarded: Vec::new(),
        limited_server: !server.limits.is_empty(),
        via_stream: false,
        after: None,
        found: None,
        keeps: false,
        sent: Vec::new(),
        body: None,
        binding: Binding::default(),
        also: Vec::new(),
        checks: gate::Checks::default(),
        stream_hold: None,
    }
}

/// The request head the backend gets: `path` on the backend's authority, the kept client headers, the
/// backend's session id, the timeout.
fn forward_headers(
    head: &RequestHead,
    backend: &Backend,
    path: String,
    session: Option<String>,
    timeout_ms: Option<u64>,
    own: Option<&str>,
) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = vec![(":method".into(), head.method.to_string()), (":path".into(), path)];
    let authority = backend.authority.as_deref().or(head.header(":authority")).unwrap_or("");
    headers.push((":authority".into(), authority.into()));
    headers.push((":scheme".into(), head.header(":scheme").unwrap_or("http").into()));
    for (k, v) in &head.headers {
        if one_of(k, &KEPT) || one_of(k, &crate::upstream::TRACING_HEADERS) {
            headers.push((k.to_string(), v.to_string()));
        }
    }
    if let Some(id) = session {
        headers.push((SESSION.into(), id));
    }
    if backend.passthrough_auth {
        if let Some(auth) = head.header("authorization") {
            headers.push(("authorization".into(), auth.into()));
        }
    }
    let mut path = std::mem::take(&mut headers[1].1);
    // The caller's own upstream credential (per-user credentials) in place of the operator's.
    backend.add_credential(own, &mut headers, &mut path);
    headers[1].1 = path;
    if let Some(ms) = timeout_ms {
        headers.push((TIMEOUT.into(), ms.to_string()));
    }
    headers
}

/// The edits that turn the client's request head into [`forward_headers`]'s, computed in place: the four
/// pseudo-headers, the session id, the passed-through `authorization` and the timeout set where they
/// differ, every other client header that is not kept removed (`content-length` too when `drop_length`).
/// The same edits as diffing the two heads, without building the wanted one. `None` for a backend with a
/// credential to add (a header, query or cookie of its own): [`forward_headers`] and a diff decide then.
fn forward_edits(
    head: &RequestHead,
    picked: &Picked,
    backend: &Backend,
    path: &str,
    session: Option<&str>,
    timeout_ms: Option<u64>,
    drop_length: bool,
) -> Option<Vec<Edit>> {
    if backend.credential.is_some() {
        return None;
    }
    let current = &head.headers;
    let auth = picked.authorization.filter(|_| backend.passthrough_auth);
    let mut digits = [0u8; 20];
    let timeout = timeout_ms.map(|ms| crate::encoding::decimal(ms, &mut digits));
    // The headers the backend's head sets, in the order their edits go, with the values they get; `None`:
    // not set (then removed if the client sent it).
    let targets = [
        (":method", Some(&*head.method)),
        (":path", Some(path)),
        (":authority", Some(backend.authority.as_deref().or(picked.authority).unwrap_or(""))),
        (":scheme", Some(picked.scheme.unwrap_or("http"))),
        (SESSION, session),
        ("authorization", auth),
        (TIMEOUT, timeout),
    ];
    // One pass over the head: each target's values as they are (exact names, as the host applies the
    // edits), and the first of every other name that does not go on, removed.
    let mut now: [Now; 7] = Default::default();
    let mut removals = Vec::new();
    for (i, (k, v)) in current.iter().enumerate() {
        if let Some(t) = targets.iter().position(|(name, _)| name.len() == k.len() && k == *name) {
            if targets[t].1.is_none() && now[t].first.is_none() {
                removals.push(Edit::Remove(k.to_string().into())); // not set: removed, once
            }
            now[t].see(v);
            continue;
        }
        let kept = match k {
            "content-length" => !drop_length,
            k => one_of(k, &KEPT) || one_of(k, &crate::upstream::TRACING_HEADERS),
        };
        if !kept && !current.iter().take(i).any(|(n, _)| n == k) {
            removals.push(Edit::Remove(k.to_string().into()));
        }
    }
    let mut edits = Vec::new();
    for ((name, value), now) in targets.iter().zip(&now) {
        if let Some(value) = value {
            now.edit(&mut edits, name, value);
        }
    }
    edits.extend(removals);
    Some(edits)
}

/// What the client's head holds of one header the backend's head sets: its first value, and whether it
/// has more than one.
#[derive(Default)]
struct Now<'a> {
    first: Option<&'a str>,
    several: bool,
}

impl<'a> Now<'a> {
    fn see(&mut self, value: &'a str) {
        match self.first {
            None => self.first = Some(value),
            Some(_) => self.several = true,
        }
    }

    /// The edit (if any) that gives the header the one value `value`, as [`set`] decides it.
    fn edit(&self, edits: &mut Vec<Edit>, name: &'static str, value: &str) {
        match (self.first, self.several) {
            (Some(v), false) if v == value => {}
            (_, false) => edits.push(Edit::Set(name.into(), value.into())),
            _ => {
                edits.push(Edit::Remove(name.into()));
                edits.push(Edit::Add(name.into(), value.into()));
            }
        }
    }
}

/// The backend's request timeout, as Envoy's router reads it.
const TIMEOUT: &str = "x-envoy-upstream-rq-timeout-ms";

/// The edit (if any) that gives the header `name` of `current` the one value `value`: none if it has it,
/// a set over one value or none, else the values removed and the one added (hosts differ on whether a set
/// replaces every value of a name), as [`diff`] decides it.
fn set<S: AsRef<str>>(edits: &mut Vec<Edit>, current: &[(S, S)], name: &'static str, value: &str) {
    let mut now = current.iter().filter(|(k, _)| k.as_ref() == name).map(|(_, v)| v.as_ref());
    match (now.next(), now.next()) {
        (Some(v), None) if v == value => {}
        (_, None) => edits.push(Edit::Set(name.into(), value.into())),
        _ => {
            edits.push(Edit::Remove(name.into()));
            edits.push(Edit::Add(name.into(), value.into()));
        }
    }
}

/// A head as owned pairs, for an answer that waits (its head is kept).
fn owned<S: AsRef<str>>(headers: &[(S, S)]) -> Vec<(String, String)> {
    headers.iter().map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string())).collect()
}

fn start(
    gw: &Gateway,
    server: &Server,
    head: &RequestHead,
    own: Option<String>,
    caller: crate::caller::Caller,
) -> Then {
    let respond =
        |status, code, msg: String| Then::Done(Start::Respond(HttpResponse::error(status, Value::Null, code, msg)));
    let picked = Picked::of(head);
    if let Some(origin) = picked.origin {
        if !gw.origin_allowed(origin) {
            return respond(403, jsonrpc::INVALID_REQUEST, format!("Forbidden: origin '{origin}' is not allowed"));
        }
    }
    let method = &*head.method;
    if !matches!(method, "POST" | "GET" | "DELETE") {
        let mut r = HttpResponse::error(405, Value::Null, jsonrpc::INVALID_REQUEST, "Method Not Allowed");
        r.headers.push(("allow".into(), "GET, POST, DELETE".into()));
        return Then::Done(Start::Respond(r));
    }
    let Some(id) = picked.session else {
        return Then::Done(forward(gw, server, head, &picked, own.as_deref(), caller, None, None));
    };
    if id.len() > 256 || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Then::Done(Start::Respond(unknown_session()));
    }
    let op = SessionOp::Open { id: id.to_string(), server: server.name.clone() };
    let step = OpenStep::Open;
    Then::Op(Box::new(Opening { server: server.name.clone(), head: head.clone(), own, caller, step }), op)
}

/// A request to a Streamable HTTP backend goes on, carrying the backend's session id for ours (of the
/// client's live session `found`).
#[allow(clippy::too_many_arguments)]
fn forward(
    gw: &Gateway,
    server: &Server,
    head: &RequestHead,
    picked: &Picked,
    own: Option<&str>,
    caller: crate::caller::Caller,
    ours: Option<String>,
    found: Option<Session>,
) -> Start {
    let Some(backend) = server.proxy.as_ref() else {
        return Start::Respond(unknown_session());
    };
    let mut relay = new_relay(server, head, picked, ours);
    relay.caller = caller;
    // The standalone GET stream lives as long as the client wants: the route's timeout applies to it.
    let timeout = (head.method != "GET").then_some(backend.timeout_ms);
    let backend_id = found.as_ref().and_then(|s| s.backend.as_deref());
    let drop_length = head.method == "POST" && !backend.overrides.is_empty(); // a renamed call's body changes length
                                                                              // Kept for an `initialize` (no session yet), or to send again in a session that can be re-initialised.
                                                                              // A request without a session that carries MCP-Protocol-Version is no `initialize` (clients send it on
                                                                              // the requests after the handshake, stateless clients on every one): its body passes uncopied.
    let reinitialisable = match &found {
        Some(s) => s.init.is_some(),
        None => picked.version.is_none(),
    };
    relay.keeps = head.method == "POST" && gw.sessions.updatable() && reinitialisable;
    let mut edits = forward_edits(head, picked, backend, &backend.path, backend_id, timeout, drop_length);
    if relay.keeps || edits.is_none() {
        let id = backend_id.map(str::to_string);
        let mut headers = forward_headers(head, backend, backend.path.clone(), id, timeout, own);
        if drop_length {
            headers.retain(|(k, _)| k != "content-length");
        }
        if edits.is_none() {
            edits = Some(self::edits(&head.headers, &headers));
        }
        if relay.keeps {
            relay.sent = headers;
        }
    }
    let edits = edits.unwrap_or_default();
    relay.found = found;
    Start::Forward(relay, edits)
}

/// The edits that turn the headers a request or answer came with into `wanted`.
fn edits(current: &Headers, wanted: &[(String, String)]) -> Vec<Edit> {
    let wanted: Vec<(&str, &str)> = wanted.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    diff(current, &wanted)
}

/// The edits that put the local answer `r` in place of a held backend answer that came with `answer` (its
/// headers, without `:status`): `r`'s status, headers and length; the backend's other headers removed.
pub fn replacing(answer: &[(String, String)], r: &HttpResponse) -> Vec<Edit> {
    let length = r.body.len().to_string();
    let mut wanted: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    wanted.push(("content-length", &length));
    let mut edits = vec![Edit::Set(":status".into(), r.status.to_string())];
    edits.extend(diff(&answer.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(), &wanted));
    edits
}

/// Why a session could not be created, for the client (never a credential).
fn failure(outcome: &SessionOutcome) -> &str {
    match outcome {
        SessionOutcome::Failed(e) => &e.0,
        SessionOutcome::Refused(r) => &r.message,
        _ => "the store gave no new session",
    }
}

/// A backend failure as the client sees it: the one place proxied errors get their status and code.
pub fn backend_failure(status: u16, id: Value, server: &str) -> HttpResponse {
    let (code, why) = match status {
        504 => (504, "did not answer within its timeout"),
        502 | 503 => (502, "could not be reached"),
        _ => (502, "failed"),
    };
    HttpResponse::error(
        code,
        id,
        jsonrpc::INTERNAL_ERROR,
        format!("the proxied MCP server of '{server}' {why} (HTTP {status})"),
    )
}

impl Relay {
    /// Whether the request body must be read before it goes on (a tool filter applies to it).
    pub fn needs_body(&self) -> bool {
        self.post && self.filters()
    }

    /// Whether anything filters, renames or refuses on this server (else bodies and streams pass unread).
    fn filters(&self) -> bool {
        self.allow.is_some()
            || self.header_allow.is_some()
            || !self.overrides.is_empty()
            || self.policy.is_some()
            || self.guard.is_some()
            || self.limited_server
    }

    fn allowed(&self, tool: &str) -> bool {
        let listed = |list: &Vec<String>| list.iter().any(|t| t == tool);
        self.allow.as_ref().is_none_or(listed) && self.header_allow.as_ref().is_none_or(listed)
    }

    /// Whether the server's policy lets the caller use an item (every item, without a policy).
    fn permitted(&self, kind: Kind, name: &str) -> bool {
        self.policy.as_ref().is_none_or(|p| p.allows(&self.caller, kind, name))
    }

    /// The whole request body (read only when [`Relay::needs_body`]): `Err` answers a call of a tool the
    /// client may not call or cannot know; `Ok(Some)` is the body the backend gets instead, its renamed
    /// tools called by their backend names. For an SSE backend the answer must come on the client's stream:
    /// a refused message goes on as a `ping` whose id carries the refusal, which the stream's relay turns
    /// back into it ([`REFUSED`]).
    pub fn on_body(&mut self, gw: &Gateway, env: &mut dyn Env, body: &[u8]) -> Result<Option<Vec<u8>>, HttpResponse> {
        let checked = self.check_body(gw, env, body);
        if let Ok(sent) = &checked {
            self.keep(sent.clone().unwrap_or_else(|| body.to_vec()));
        }
        match checked {
            Err(refused) if self.via_stream => Ok(Some(carried(&refused))),
            other => other,
        }
    }

    fn check_body(&mut self, gw: &Gateway, env: &mut dyn Env, body: &[u8]) -> Result<Option<Vec<u8>>, HttpResponse> {
        self.checks = gate::Checks::default();
        let Ok(mut value) = serde_json::from_slice::<Value>(body) else {
            if self.guard.is_some() {
                // A body the guardrails cannot read could hold a call they would refuse or filter.
                let msg = "Parse error: the guardrails read only JSON request bodies";
                return Err(HttpResponse::error(400, Value::Null, jsonrpc::PARSE_ERROR, msg));
            }
            return Ok(None); // the backend answers what it cannot parse
        };
        let mut renamed = false;
        let messages = match &mut value {
            Value::Array(items) => items.iter_mut().collect(),
            one => vec![one],
        };
        for m in messages {
            let id = m.get("id").cloned().unwrap_or(Value::Null);
            let reserved = id.as_str().is_some_and(|i| i.starts_with(CALLED));
            if reserved && self.via_stream && self.guard.is_some() && m.get("method").is_some() {
                let msg = format!("Invalid request: ids starting with '{CALLED}' are the gateway's");
                return Err(HttpResponse::error(200, id, jsonrpc::INVALID_REQUEST, msg));
            }
            let refuse = |kind: Kind, name: &str| {
                let refused =
                    crate::mcp::refused(&crate::gateway::Access { caller: &self.caller, header: None }, kind, name);
                Err(HttpResponse::json_reply(refused.reply(id.clone())))
            };
            let listed = match m.get("method").and_then(Value::as_str) {
                Some("tools/list") => Some("tools"),
                Some("prompts/list") if self.policy.is_some() => Some("prompts"),
                Some("resources/list") if self.policy.is_some() => Some("resources"),
                Some("resources/templates/list") if self.policy.is_some() => Some("resourceTemplates"),
                _ => None,
            };
            if listed.is_some() {
                self.lists = listed;
                self.request_id = id;
                continue;
            }
            match m.get("method").and_then(Value::as_str) {
                Some("notifications/cancelled") if self.via_stream => {
                    let Some((guard, cancelled)) = self.guard.as_ref().zip(m.pointer("/params/requestId")) else {
                        continue;
                    };
                    let id = URL_SAFE_NO_PAD.encode(cancelled.to_string());
                    for tool in guard.own_tools() {
                        let mut also = m.clone();
                        if let Some(request) = also.pointer_mut("/params/requestId") {
                            *request = Value::String(format!("{CALLED}{id}:{tool}"));
                        }
                        self.also.push(serde_json::to_vec(&also).unwrap_or_default());
                    }
                }
                Some("prompts/get") => {
                    let name = m.pointer("/params/name").and_then(Value::as_str).unwrap_or("");
                    if !self.permitted(Kind::Prompt, name) {
                        return refuse(Kind::Prompt, name);
                    }
                }
                Some("resources/read" | "resources/subscribe") => {
                    let uri = m.pointer("/params/uri").and_then(Value::as_str).unwrap_or("");
                    if !self.permitted(Kind::Resource, uri) {
                        return refuse(Kind::Resource, uri);
                    }
                }
                Some("tools/call") => {
                    let name = m.pointer("/params/name").and_then(Value::as_str).unwrap_or("").to_string();
                    let backend = self.overrides.backend_name(&name).map(str::to_string);
                    let refused = match &backend {
                        None => Some("Unknown tool"),
                        Some(_) if !self.allowed(&name) => Some("Tool not allowed"),
                        Some(_) => None,
                    };
                    if let Some(why) = refused {
                        let msg = format!("{why}: {name}");
                        return Err(HttpResponse::error(200, id, jsonrpc::INVALID_PARAMS, msg));
                    }
                    if !self.permitted(Kind::Tool, &name) {
                        return refuse(Kind::Tool, &name);
                    }
                    let mut called = None;
                    if let Some(guard) = &self.guard {
                        if let Err(e) = guard.check_input(&name, m.pointer("/params/arguments")) {
                            return Err(HttpResponse::json_reply(e.reply(id)));
                        }
                        let checked = guard.external(&name).is_some_and(|e| e.output);
                        if guard.filters_results(&name) || checked {
                            self.guarded.push((id.clone(), name.clone()));
                        }
                        // The stream's relay needs the tool's name for its own guardrails and the guard service.
                        if self.via_stream && (guard.has_own(&name) || checked) {
                            called = Some(format!("{CALLED}{}:{name}", URL_SAFE_NO_PAD.encode(id.to_string())));
                        }
                    }
                    self.called(&id, &name, m);
                    if let (Some(backend), Some(n)) = (backend.filter(|b| *b != name), m.pointer_mut("/params/name")) {
                        *n = Value::String(backend);
                        renamed = true;
                    }
                    if let (Some(called), Some(sent)) = (called, m.get_mut("id")) {
                        *sent = Value::String(called);
                        renamed = true;
                    }
                    self.request_id = id;
                }
                _ => {}
            }
        }
        // Counted once every call of the request passed the other checks: a refused call costs nothing.
        self.count(gw, env)?;
        Ok(renamed.then(|| serde_json::to_vec(&value).unwrap_or_else(|_| body.to_vec())))
    }

    /// Messages to send to an SSE backend's message endpoint besides the client's (cancellations of calls
    /// under ids of ours, [`CALLED`]), with the head the client's went with; each answer is ignored.
    pub fn take_also(&mut self) -> (Vec<(String, String)>, Vec<Vec<u8>>) {
        match self.also.is_empty() {
            true => (Vec::new(), Vec::new()),
            false => (self.sent.clone(), std::mem::take(&mut self.also)),
        }
    }

    /// The backend's answer head (`headers` without pseudo-headers): binds a new backend session to one
    /// of ours, puts our id in place of the backend's, and maps failures. [`Answer::Redis`] when the store
    /// answers later: then [`Relay::on_session`] gives the answer. `headers` may borrow the host's map: a
    /// proxied answer's head is only looked at, and copied only when it has to wait.
    pub fn on_response_head<S: AsRef<str>>(
        &mut self,
        gw: &Gateway,
        env: &mut dyn Env,
        status: u16,
        headers: &[(S, S)],
    ) -> Answer {
        if status == 404 && self.ours.is_some() {
            if let Some(reinit) = self.reinit() {
                return Answer::Reinit(Box::new(reinit));
            }
            if !self.post && self.found.as_ref().is_some_and(|s| s.init.is_some()) {
                // A GET stream cannot be sent again; ours stays, for the next POST to re-initialise (ending
                // it here would fail that POST, which a client sends while it reconnects its stream).
                return self.after(After::Forgotten, SessionOutcome::Deleted);
            }
            let id = self.ours.clone().unwrap_or_default();
            return self.store(gw, env, SessionOp::Delete { id, server: self.server.to_string() }, After::Forgotten);
        }
        if status >= 500 {
            return Answer::Replace(backend_failure(status, self.request_id.clone(), &self.server));
        }
        let theirs = headers.iter().find(|(k, _)| k.as_ref() == SESSION).map(|(_, v)| v.as_ref().to_string());
        if let (Some(backend), None) = (&theirs, &self.ours) {
            if gw.sessions.kind() == "signed" && backend.len() > signed::MAX_BACKEND {
                let msg = format!(
                    "the proxied server's session id has {} bytes; store: signed carries at most {} (use store: local)",
                    backend.len(),
                    signed::MAX_BACKEND
                );
                return Answer::Replace(HttpResponse::error(
                    502,
                    self.request_id.clone(),
                    jsonrpc::INTERNAL_ERROR,
                    msg,
                ));
            }
            let mut session = Session::new(self.server.to_string(), self.version.as_str());
            session.backend = Some(backend.clone());
            session.init = self.body.as_deref().and_then(reinit::init_params);
            return self.store(gw, env, SessionOp::Create(session), After::Created(status, owned(headers)));
        }
        let ours = self.ours.clone();
        self.head(status, headers, ours)
    }

    /// A re-initialisation of the backend that forgot the client's session, when one can be done: the
    /// session keeps the client's `initialize` params, and the request (a POST) was kept whole.
    fn reinit(&mut self) -> Option<reinit::Reinit> {
        let found = self.found.clone().filter(|s| s.init.is_some())?;
        let body = self.body.take()?;
        let ours = self.ours.clone()?;
        Some(reinit::Reinit::new(ours, found, std::mem::take(&mut self.sent), body))
    }

    /// The proxied server's name.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Whether the host must keep the request body for the relay ([`Relay::keep`]) while it streams on.
    pub fn keeps_body(&self) -> bool {
        self.keeps && self.body.is_none()
    }

    /// The whole request body as the backend got it (see [`Relay::keeps_body`]).
    pub fn keep(&mut self, body: Vec<u8>) {
        if self.keeps {
            self.body = Some(body);
        }
    }

    /// The backend's answer to a request sent again after a re-initialisation (read whole): what the
    /// client gets, filtered as the first answer would have been, without the backend's session id.
    pub fn retried(
        &mut self,
        gw: &Gateway,
        env: &mut dyn Env,
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    ) -> HttpResponse {
        if let Some(failed) = reinit::failure(status, &self.server) {
            return failed;
        }
        let framing = |k: &str| k.starts_with(':') || k == "content-length" || k == "transfer-encoding";
        let mut headers: Vec<(String, String)> = headers.into_iter().filter(|(k, _)| !framing(k)).collect();
        // The edits that the answer head would get, applied here to the answer the client gets whole.
        let body = match self.head(status, &headers, None) {
            Answer::Pass(edits) => {
                crate::header_edits::apply(&mut headers, &edits);
                body
            }
            Answer::Rewrite(edits) => {
                crate::header_edits::apply(&mut headers, &edits);
                self.on_chunk(gw, env, &body, true)
            }
            Answer::Replace(r) => return r,
            _ => body,
        };
        let headers = headers.into_iter().filter(|(k, _)| !framing(k) && k != SESSION).collect();
        HttpResponse { status, headers, body }
    }

    /// Runs a session operation for the answer head: at once, or later ([`Answer::Redis`]).
    fn store(&mut self, gw: &Gateway, env: &mut dyn Env, op: SessionOp, after: After) -> Answer {
        match gw.sessions.start(op, env) {
            Started::Done(outcome) => self.after(after, outcome),
            Started::Redis(pending) => {
                self.after = Some(after);
                Answer::Redis(pending)
            }
        }
    }

    /// The session store's answer to the operation an [`Answer::Redis`] asked for: what to do with the
    /// backend's answer now.
    pub fn on_session(&mut self, outcome: SessionOutcome) -> Answer {
        match self.after.take() {
            Some(after) => self.after(after, outcome),
            None => Answer::Pass(Vec::new()),
        }
    }

    fn after(&mut self, after: After, outcome: SessionOutcome) -> Answer {
        let id = self.request_id.clone();
        match (after, outcome) {
            (After::Forgotten, _) => Answer::Replace(HttpResponse::error(
                404,
                id,
                SESSION_NOT_FOUND,
                "Session not found: the proxied server ended it; initialize a new session",
            )),
            (After::Created(status, headers), SessionOutcome::Created(ours)) => self.head(status, &headers, Some(ours)),
            (_, SessionOutcome::Refused(r)) => {
                Answer::Replace(HttpResponse::error(r.status, id, jsonrpc::LIMIT_EXCEEDED, r.message))
            }
            (_, other) => {
                let msg = format!("session store: {}", failure(&other));
                Answer::Replace(HttpResponse::error(503, id, jsonrpc::INTERNAL_ERROR, msg))
            }
        }
    }

    /// The answer head once our session is known: our id in place of the backend's, the body's rewriting.
    fn head<S: AsRef<str>>(&mut self, status: u16, headers: &[(S, S)], ours: Option<String>) -> Answer {
        let theirs = headers.iter().any(|(k, _)| k.as_ref() == SESSION);
        let content_type = headers.iter().find(|(k, _)| k.as_ref() == "content-type").map_or("", |(_, v)| v.as_ref());
        if matches!(self.filter, Filter::Endpoint(_)) {
            if status != 200 || !content_type.starts_with("text/event-stream") {
                self.filter = Filter::None;
                return Answer::Pass(Vec::new());
            }
            let has_length = headers.iter().any(|(k, _)| k.as_ref() == "content-length");
            return Answer::Hold(has_length.then(|| Edit::Remove("content-length".into())).into_iter().collect());
        }
        let rewrites = self.lists.is_some() || !self.guarded.is_empty();
        self.filter = match (rewrites && status == 200, content_type) {
            (true, t) if t.starts_with("application/json") => Filter::Json(Vec::new()),
            (true, t) if t.starts_with("text/event-stream") && self.checks_output() => Filter::SseWhole(Vec::new()),
            (true, t) if t.starts_with("text/event-stream") => Filter::Sse(sse::Parser::default()),
            _ => Filter::None,
        };
        let rewrite = !matches!(self.filter, Filter::None);
        if !theirs && !rewrite {
            return Answer::Pass(Vec::new());
        }
        // In place: our session id for the backend's, the backend's dropped when there is none of ours,
        // `content-length` dropped from an answer rewritten.
        let mut edits = Vec::new();
        let ours = ours.filter(|_| theirs);
        if let Some(id) = &ours {
            set(&mut edits, headers, SESSION, id);
        }
        for (i, (k, _)) in headers.iter().enumerate() {
            let k = k.as_ref();
            let gone = (k == SESSION && ours.is_none()) || (rewrite && k == "content-length");
            if gone && !headers[..i].iter().any(|(n, _)| n.as_ref() == k) {
                edits.push(Edit::Remove(k.to_string().into()));
            }
        }
        if rewrite {
            Answer::Rewrite(edits)
        } else {
            Answer::Pass(edits)
        }
    }

    /// Whether the host must hold the body until its end (a JSON answer to filter).
    pub fn buffers(&self) -> bool {
        matches!(self.filter, Filter::Json(_) | Filter::SseWhole(_))
    }

    /// A chunk of a rewritten answer: what goes to the client in its place.
    pub fn on_chunk(&mut self, gw: &Gateway, env: &mut dyn Env, chunk: &[u8], end: bool) -> Vec<u8> {
        if let Filter::Endpoint(parser) = &mut self.filter {
            let mut events = parser.feed(chunk);
            if end {
                events.push(parser.rest()); // an event without its blank line, if any
            }
            return self.stream_events(gw, env, events);
        }
        let (allow, header_allow, overrides) = (self.allow.clone(), self.header_allow.clone(), self.overrides.clone());
        let (policy, caller, lists) = (self.policy.clone(), self.caller.clone(), self.lists.unwrap_or("tools"));
        let kind = match lists {
            "tools" => Kind::Tool,
            "prompts" => Kind::Prompt,
            _ => Kind::Resource,
        };
        let keep_kind = |kind: Kind, name: &str| {
            let listed = |list: &Vec<String>| list.iter().any(|t| t == name);
            let tools_ok =
                kind != Kind::Tool || (allow.as_ref().is_none_or(listed) && header_allow.as_ref().is_none_or(listed));
            tools_ok && policy.as_ref().is_none_or(|p| p.allows(&caller, kind, name))
        };
        let keep = |name: &str| keep_kind(kind, name);
        let (listing, guard, guarded) = (self.lists.is_some(), self.guard.clone(), std::mem::take(&mut self.guarded));
        let rewrite = |v: &mut Value| {
            let listed = listing
                && match kind {
                    Kind::Tool => tools::rewrite_list(v, &overrides, &keep),
                    _ => tools::filter_list(v, lists, &keep),
                };
            let filtered = guard.as_ref().is_some_and(|g| guard_results(g, &guarded, v));
            listed || filtered
        };
        let out = match &mut self.filter {
            Filter::None => chunk.to_vec(),
            Filter::Json(buf) => {
                buf.extend_from_slice(chunk);
                if !end {
                    return Vec::new();
                }
                let whole = std::mem::take(buf);
                match serde_json::from_slice::<Value>(&whole) {
                    Ok(mut v) => {
                        rewrite(&mut v);
                        match self.checks.hold(gate::Held::Json(v)) {
                            Some(held) => held.into_body(),
                            None => Vec::new(), // held for the guard service ([`Relay::answer_gate`])
                        }
                    }
                    Err(_) => whole,
                }
            }
            Filter::Endpoint(_) => Vec::new(), // read above
            Filter::SseWhole(buf) => {
                buf.extend_from_slice(chunk);
                if !end {
                    return Vec::new();
                }
                let mut parser = sse::Parser::default();
                let events = parser.feed(buf);
                let events = events
                    .into_iter()
                    .map(|event| {
                        let mut parsed =
                            sse::data(&event).and_then(|d| serde_json::from_slice::<Value>(d.as_bytes()).ok());
                        let changed = parsed.as_mut().is_some_and(&rewrite);
                        (event, parsed.filter(|_| changed))
                    })
                    .collect();
                let held = gate::Held::Sse(events, parser.rest());
                *buf = Vec::new();
                match self.checks.hold(held) {
                    Some(held) => held.into_body(),
                    None => Vec::new(),
                }
            }
            Filter::Sse(parser) => {
                let mut out = Vec::with_capacity(chunk.len());
                for event in parser.feed(chunk) {
                    let mut parsed = sse::data(&event).and_then(|d| serde_json::from_slice::<Value>(d.as_bytes()).ok());
                    let changed = parsed.as_mut().is_some_and(&rewrite);
                    match parsed {
                        Some(v) if changed => out.extend(sse::with_data(&event, &v.to_string())),
                        _ => out.extend(event),
                    }
                }
                if end {
                    out.extend(parser.rest());
                }
                out
            }
        };
        self.guarded = guarded;
        out
    }
}

impl Relay {
    /// Events of an SSE backend's stream, as the client gets them: the first `endpoint` event bound to a
    /// session of ours and rewritten to our message endpoint, the others messages ([`Relay::stream_message`]).
    /// Stops at the endpoint when the store answers later or fails ([`Relay::bind`] says which).
    fn stream_events(&mut self, gw: &Gateway, env: &mut dyn Env, events: Vec<Vec<u8>>) -> Vec<u8> {
        let mut out = Vec::new();
        let mut events = events.into_iter();
        while let Some(event) = events.next() {
            if let Some(hold) = self.stream_hold.as_mut() {
                hold.queue.push(event); // behind the result the guard service checks, in order
                continue;
            }
            if sse::event_type(&event).as_deref() != Some("endpoint") {
                out.extend(self.stream_message(event));
                continue;
            }
            if self.binding.bound {
                // Backends send one; another is never passed on (the backend's own URL would bypass us).
                out.extend(b": mcp-gateway: a second endpoint event was dropped\n\n");
                continue;
            }
            let url = sse::data(&event).unwrap_or_default();
            let path = match url.split_once("://") {
                Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]).to_string(),
                None => url,
            };
            let mut session = Session::new(self.server.to_string(), self.version.as_str());
            session.backend = Some(path);
            match gw.sessions.start(SessionOp::Create(session), env) {
                Started::Done(outcome) => match self.endpoint(gw, &event, outcome) {
                    Ok(rewritten) => out.extend(rewritten),
                    Err(failed) => {
                        self.binding.failed = Some(failed);
                        return out;
                    }
                },
                Started::Redis(pending) => {
                    self.binding.pending = Some(pending);
                    self.binding.waiting = Some((event, events.collect()));
                    return out;
                }
            }
        }
        out
    }

    /// The endpoint event rewritten to ours once the store has created our session, or the answer that
    /// replaces the stream when it could not.
    fn endpoint(&mut self, gw: &Gateway, event: &[u8], outcome: SessionOutcome) -> Result<Vec<u8>, HttpResponse> {
        match outcome {
            SessionOutcome::Created(id) => {
                self.binding.bound = true;
                Ok(sse::with_data(event, &format!("{}/{}/message?sessionId={id}", gw.prefix, self.server)))
            }
            SessionOutcome::Refused(r) => {
                Err(HttpResponse::error(r.status, Value::Null, jsonrpc::LIMIT_EXCEEDED, r.message))
            }
            other => {
                let msg = format!("session store: {}", failure(&other));
                Err(HttpResponse::error(503, Value::Null, jsonrpc::INTERNAL_ERROR, msg))
            }
        }
    }

    /// Where an SSE backend's stream is with its endpoint (the host holds the answer head until it is bound).
    pub fn bind(&mut self) -> Bind {
        if !matches!(self.filter, Filter::Endpoint(_)) || self.binding.bound {
            return Bind::Bound;
        }
        if let Some(failed) = self.binding.failed.take() {
            return Bind::Failed(failed);
        }
        match self.binding.pending.take() {
            Some(pending) => Bind::Redis(pending),
            None => Bind::Seeking,
        }
    }

    /// The store's answer to the session a stream's endpoint waits for ([`Bind::Redis`]): the endpoint
    /// event rewritten and the events held after it, or the answer that replaces the stream.
    pub fn on_bound(
        &mut self,
        gw: &Gateway,
        env: &mut dyn Env,
        outcome: SessionOutcome,
    ) -> Result<Vec<u8>, HttpResponse> {
        let Some((event, rest)) = self.binding.waiting.take() else { return Ok(Vec::new()) };
        let mut out = self.endpoint(gw, &event, outcome)?;
        out.extend(self.stream_events(gw, env, rest));
        Ok(out)
    }

    /// One message of an SSE backend's stream, as its client may see it ([`from_stream`]); read only when
    /// something filters the stream or refusals travel on it.
    fn stream_message(&mut self, event: Vec<u8>) -> Vec<u8> {
        if !self.filters() {
            return event;
        }
        let keep = |kind: Kind, name: &str| (kind != Kind::Tool || self.allowed(name)) && self.permitted(kind, name);
        let mut parsed = sse::data(&event).and_then(|d| serde_json::from_slice::<Value>(d.as_bytes()).ok());
        let mut checked = None;
        let changed = parsed.as_mut().is_some_and(|v| {
            let refusal = v.get("id").and_then(Value::as_str).is_some_and(|id| id.starts_with(REFUSED));
            let listed = from_stream(v, &self.overrides, &keep);
            let guarded = !refusal && self.guard.as_ref().is_some_and(|g| guard_stream(g, v, &mut checked));
            listed || guarded
        });
        match (parsed, checked) {
            (Some(v), Some(tool)) => self.hold_result(tool, event, v),
            (Some(v), None) if changed => sse::with_data(&event, &v.to_string()),
            _ => event,
        }
    }
}

/// A message on an SSE backend's stream, as its client may see it: a refusal carried by a `ping`'s id put
/// back in place of the ping's answer; a list result filtered (and tools renamed), recognised by its shape
/// since the request it answers went by another HTTP exchange. True when it changed.
fn from_stream(v: &mut Value, overrides: &tools::Overrides, keep: &dyn Fn(Kind, &str) -> bool) -> bool {
    let carried = v.get("id").and_then(Value::as_str).and_then(|id| id.strip_prefix(REFUSED));
    if let Some(refusal) = carried {
        let decoded = URL_SAFE_NO_PAD.decode(refusal).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        *v = decoded.unwrap_or_else(|| jsonrpc::error(Value::Null, jsonrpc::INVALID_REQUEST, "refused"));
        return true;
    }
    let Some(result) = v.get("result") else { return false };
    if result.get("tools").is_some() {
        return tools::rewrite_list(v, overrides, &|n| keep(Kind::Tool, n));
    }
    let key = ["prompts", "resources", "resourceTemplates"].into_iter().find(|k| result.get(*k).is_some());
    let kind = if key == Some("prompts") { Kind::Prompt } else { Kind::Resource };
    key.is_some_and(|key| tools::filter_list(v, key, &|n| keep(kind, n)))
}

/// Runs the guardrails over a result on an SSE backend's stream: a call of a tool with its own guardrails
/// by its id ([`CALLED`], the client's id put back), any other tool's by its shape (`content`), under the
/// server's guardrails. True when it changed.
/// `checked`: the tool, when the guard service checks this result (`output: true`) before the client sees it.
fn guard_stream(guard: &crate::guard::Guard, v: &mut Value, checked: &mut Option<String>) -> bool {
    let called = v.get("id").and_then(Value::as_str).and_then(|id| id.strip_prefix(CALLED));
    let (id, tool) = match called.and_then(|c| c.split_once(':')) {
        Some((id, tool)) => {
            let id = URL_SAFE_NO_PAD.decode(id).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            (id.unwrap_or(Value::Null), tool.to_string())
        }
        None if guard.filters_results("") && v.pointer("/result/content").is_some_and(Value::is_array) => {
            (v.get("id").cloned().unwrap_or(Value::Null), String::new())
        }
        None => return false,
    };
    if let Some(sent) = v.get_mut("id") {
        *sent = id.clone();
    }
    guard_results(guard, &[(id, tool.clone())], v);
    if !tool.is_empty() && v.get("result").is_some() && guard.external(&tool).is_some_and(|e| e.output) {
        *checked = Some(tool);
    }
    true
}

/// The message that stands for a refusal to an SSE backend: a `ping` whose id carries it ([`REFUSED`]).
fn carried(refused: &HttpResponse) -> Vec<u8> {
    let error: Value = serde_json::from_slice(&refused.body).unwrap_or(Value::Null);
    let carried = format!("{REFUSED}{}", URL_SAFE_NO_PAD.encode(error.to_string()));
    crate::json::object(vec![
        ("jsonrpc", Value::from("2.0")),
        ("id", Value::from(carried)),
        ("method", Value::from("ping")),
    ])
    .to_string()
    .into_bytes()
}

/// Runs the guardrails over the results of guarded `tools/call`s in an answer (one message or a batch):
/// masked in place, or the message replaced by the guardrail's JSON-RPC error. True when it found one.
fn guard_results(guard: &crate::guard::Guard, guarded: &[(Value, String)], v: &mut Value) -> bool {
    if let Value::Array(items) = v {
        return items.iter_mut().fold(false, |changed, m| guard_results(guard, guarded, m) | changed);
    }
    let Some(id) = v.get("id").cloned() else { return false };
    let Some((_, tool)) = guarded.iter().find(|(g, _)| *g == id) else { return false };
    let Some(result) = v.get_mut("result") else { return false };
    match guard.filter_result(tool, result) {
        Ok(()) => true, // written anew whether or not a mask applied: cheaper than comparing
        Err(e) => {
            *v = e.reply(id);
            true
        }
    }
}

#[cfg(test)]
mod tests;
