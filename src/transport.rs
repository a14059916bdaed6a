//! The Streamable HTTP transport at `{prefix}/{server}`, as a sans-IO state machine.
//!
//! [`route`] decides from the request head whether a request is ours and rejects what can be rejected
//! early. An accepted request becomes an [`Exchange`]: it takes the body, asks for each [`Step`] (a
//! session operation, upstream calls) and resumes with the outcome, until a response is due. The
//! [`crate::driver::Driver`] performs the steps, for the proxy-wasm host and the tests alike.

use crate::caller::Caller;
use crate::gateway::{Gateway, Server};
use crate::guard::external::{Checks, Phase as Side};
pub use crate::headers::Headers;
use crate::jsonrpc::{self, Message, Reply};
use crate::mcp::{self, Handled, Revision};
use crate::metrics::CallRecord;
use crate::notify::{self, Listener};
use crate::session::{self, Session, SessionOp, SessionOutcome};
use crate::upstream::{UpstreamRequest, UpstreamResult};
use listen::Listening;
use serde_json::Value;
use std::borrow::Cow;

/// JSON-RPC error code for an unknown or expired session (as the reference SDKs use it).
pub const SESSION_NOT_FOUND: i64 = -32001;

/// The parts of an HTTP request head the transport looks at; header names lower-case.
#[derive(Debug, Clone, Default)]
pub struct RequestHead {
    /// Borrowed for good when it is a common method ([`method`]).
    pub method: Cow<'static, str>,
    pub path: String,
    /// One buffer of text for all of them (`Headers`), not two allocations per header.
    pub headers: Headers,
    /// The downstream peer's address (Envoy's `source.address`, `ip:port`), for templates' `getRealIP`.
    pub client_address: Option<String>,
    /// The token payload Envoy's `jwt_authn` verified (read by the host only when `jwtAuth` is configured).
    pub jwt: Option<serde_json::Map<String, Value>>,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }
}

/// A request's method as [`RequestHead`] keeps it: the host reads one for every request under the prefix,
/// and a copy of it was an allocation (and a free) per request; only a method outside this list is copied.
pub fn method(text: &str) -> Cow<'static, str> {
    const COMMON: [&str; 7] = ["POST", "GET", "DELETE", "OPTIONS", "HEAD", "PUT", "PATCH"];
    match COMMON.iter().find(|m| **m == text) {
        Some(m) => Cow::Borrowed(m),
        None => Cow::Owned(text.to_string()),
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
    /// A JSON body (a JSON-RPC message) with its status.
    pub fn json(status: u16, body: &Value) -> HttpResponse {
        HttpResponse {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }

    /// A JSON body already written.
    pub fn json_bytes(status: u16, body: Vec<u8>) -> HttpResponse {
        HttpResponse { status, headers: vec![("content-type".into(), "application/json".into())], body }
    }

    /// A JSON-RPC reply (a result or an error) as a 200 JSON answer.
    pub fn json_reply(body: Value) -> HttpResponse {
        Self::json(200, &body)
    }

    /// A `text/event-stream` answer of whole events (input requests by SSE polling).
    fn sse(body: String) -> HttpResponse {
        HttpResponse {
            status: 200,
            headers: vec![
                ("content-type".into(), "text/event-stream".into()),
                ("cache-control".into(), "no-cache".into()),
            ],
            body: body.into_bytes(),
        }
    }

    fn empty(status: u16) -> HttpResponse {
        HttpResponse { status, headers: Vec::new(), body: Vec::new() }
    }

    /// A JSON-RPC error as the body of an HTTP error.
    pub fn error(status: u16, id: Value, code: i64, message: impl Into<String>) -> HttpResponse {
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
    Accept(Box<Exchange>),
}

/// The next thing an exchange needs done.
#[derive(Debug, PartialEq)]
pub enum Step {
    Respond(HttpResponse),
    /// Perform this session operation, then call [`Exchange::on_session`] with its outcome.
    Session(SessionOp),
    /// Send these requests; report each answer with [`Exchange::on_upstream`] by its index, numbered after
    /// every request this exchange dispatched before (some may still be outstanding).
    Dispatch(Vec<UpstreamRequest>),
    /// Keep or read clients' answers to input requests, then call [`Exchange::on_answers`].
    Answers(crate::input::poll::AnswerOp),
    /// Check these calls against their rate limits and quotas, then call [`Exchange::on_limit`].
    Limit(crate::limits::LimitOp),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Post,
    Delete,
    /// `GET` with `Last-Event-ID`: a 2025-11-25 client polling for the result of a call that asked it for
    /// input ([`crate::input::poll`]).
    Poll,
}

/// Incoming messages: one, or a batch whose slots keep their order.
#[derive(Debug)]
enum Batch {
    One(Message),
    Many(Vec<Result<Message, (Value, String)>>),
}

impl Batch {
    /// The id an error about the whole body answers to: the request's, when there is one request.
    fn reply_id(&self) -> Value {
        match self {
            Batch::One(Message::Request { id, .. }) => id.clone(),
            _ => Value::Null,
        }
    }
}

/// What a dispatched request is for.
#[derive(Debug)]
enum Job {
    /// The call's own upstream request.
    Call(PendingCall),
    /// The guard service of a stage ([`Checks`]) checks the call's arguments; then `request` goes upstream.
    CheckInput(PendingCall, u8, Box<UpstreamRequest>),
    /// The guard service of a stage checks the finished reply's result (the upstream answered as recorded).
    CheckOutput(PendingCall, u8, Reply, Option<(crate::metrics::Upstream, Option<u64>)>),
    /// Request `index` of a virtual server's message waiting on proxied servers: the exchange's
    /// composed job `job`, whose reply goes to `slot` ([`crate::composed::Job`]); `tool`: the name the
    /// virtual server's limits count a `tools/call` under.
    Virtual { slot: usize, job: usize, index: usize, tool: Option<String> },
}

impl Job {
    /// The call the job is a step of (none for a virtual server's request to a proxied server).
    fn call(&self) -> Option<&PendingCall> {
        match self {
            Job::Call(c) | Job::CheckInput(c, ..) | Job::CheckOutput(c, ..) => Some(c),
            Job::Virtual { .. } => None,
        }
    }

    /// The tool the request's rate limits and quotas count the job under, if it is a tool call: a virtual
    /// server's calls under the virtual server's names.
    fn limited_tool(&self) -> Option<&str> {
        match self {
            Job::Virtual { tool, .. } => tool.as_deref(),
            _ => match self.call()? {
                PendingCall { via: Some(name), .. } => Some(name),
                PendingCall { call: mcp::Pending::Tool(name, _), .. } => Some(name),
                _ => None,
            },
        }
    }
}

/// What serving a request's messages gathers: each message's reply (or none, or one to come), and the
/// calls to make with their first requests.
#[derive(Default)]
struct Gathered {
    slots: Vec<Option<Reply>>,
    calls: Vec<Option<Job>>,
    requests: Vec<UpstreamRequest>,
    /// Tool calls started (`maxCallsPerRequest`).
    started: usize,
}

impl Gathered {
    fn with_capacity(n: usize) -> Gathered {
        Gathered { slots: Vec::with_capacity(n), ..Gathered::default() }
    }
}

/// The refusal of a call past `maxCallsPerRequest`.
fn too_many_calls(gw: &Gateway, id: Value) -> Value {
    jsonrpc::error(
        id,
        jsonrpc::LIMIT_EXCEEDED,
        format!("too many tool calls in one request: at most {} (maxCallsPerRequest)", gw.max_calls_per_request),
    )
}

#[derive(Debug)]
struct PendingCall {
    slot: usize,
    /// The server whose tool it is (a virtual server's REST tool runs on its own server).
    owner: usize,
    /// The virtual server's name of the tool, for a virtual server's call: its limits and guardrails apply.
    via: Option<String>,
    id: Value,
    call: mcp::Pending,
    args: Value,
    /// Who hears the tool's notifications, when it has some and the request can hear any.
    listener: Option<Listener>,
    /// A `tools/call`'s tool and argument names, for its [`CallRecord`].
    record: Option<(String, Vec<String>)>,
}

/// Where an exchange is (a POST relayed by Higress's SSE filter goes from Start straight to Calling or Done;
/// calls that rate limits or quotas apply to pass through Limiting on the way to Calling):
///
/// ```text
/// Start ──initialize──> Creating ──Created──────────────────────────> Done (200 + Mcp-Session-Id)
///   │ ──POST──────────> Opening ──Found──> (Limiting) ──> Calling ──all answered──> Done
///   │                      └──────Found, nothing to call───────────> Done
///   │          (a logging/setLevel among them: ──> Saving ──Found───> Done)
///   └──DELETE─────────> Deleting ──Deleted─────────────────────────> Done (204)
///   NotFound: 404; Failed: 503; anything refused early: its error
/// ```
#[derive(Debug)]
enum Phase {
    Start,
    Creating(Value),
    Opening(Batch),
    Deleting,
    /// The calls are known; their rate limits and quotas are being checked before any goes upstream.
    Limiting {
        single: bool,
        slots: Vec<Option<Reply>>,
        calls: Vec<Option<Job>>,
        requests: Vec<UpstreamRequest>,
    },
    Calling {
        single: bool,
        slots: Vec<Option<Reply>>,
        /// What each dispatched request is for, by its dispatch index.
        calls: Vec<Option<Job>>,
        remaining: usize,
    },
    /// The session's new log level is being stored; then this response goes out.
    Saving(HttpResponse),
    /// Keeping a client's answer to one of our requests.
    Storing,
    /// A poll: finding its session, then its answers.
    Polling,
    Fetching(crate::input::poll::Resume),
    Done,
}

/// One HTTP request being served.
#[derive(Debug)]
pub struct Exchange {
    /// Who sent the request, as templates' `getRealIP`/`getSocketIP` report it.
    client: crate::template::Client,
    server: usize,
    kind: Kind,
    session_id: Option<String>,
    cors_origin: Option<String>,
    mcp_headers: stateless::McpHeaders,
    /// The revision the request is served at: its session's, or the one a stateless request names.
    revision: Revision,
    /// A message of a legacy SSE session that Higress's `mcp-session` filter relays (`POST ...?sessionId=`):
    /// served without an `Mcp-Session-Id`, as Higress's own plugin serves it (see [`relayed_by_higress`]).
    relayed: bool,
    /// The server and tool of the request's first `tools/call`, until the host takes them for its access
    /// log (Higress's `mcp_server_name` and `mcp_tool_name` properties).
    called: Option<(String, String)>,
    /// The tool calls answered so far, until the host takes them for stats, access log and audit.
    records: Vec<CallRecord>,
    /// The tools the request's `x-envoy-allow-mcp-tools` header allows (set by an earlier filter, e.g. an
    /// authorization plugin); `None`: no such restriction.
    allowed_tools: Option<Vec<String>>,
    /// Who sent the request, established by admission before the exchange started.
    caller: crate::caller::Caller,
    /// The client accepts an SSE answer, so notifications can precede the response.
    sse: bool,
    /// The request's session, once opened (its log level).
    session: Option<Session>,
    /// A `logging/setLevel` changed the session, which must be stored before the answer goes out.
    save_session: bool,
    /// Notifications to send before the response, by the slot of the request they belong to.
    notes: Vec<(usize, Vec<Value>)>,
    /// How long the upstream call being reported took, when the driver measured it.
    elapsed_ms: Option<u64>,
    /// The credentials the request presented where the server's tools read them (downstream security).
    presented: crate::credential::Presented,
    /// The clock and keys of input requests (set by the driver when the configuration has any).
    input: crate::input::Ctx,
    /// A poll's `Last-Event-ID`, which its SSE answer repeats.
    last_event_id: Option<String>,
    /// A POST that answers one of our requests to the client: its id and what to keep.
    answer: Option<(String, String)>,
    /// The host's clock when it last called (a virtual server's cache decisions).
    now_ms: u64,
    /// The key of a virtual server's passes to this Envoy's own bridge (set by the driver when the
    /// configuration has a loopback, [`crate::loopback`]); boxed: a keyed HMAC state is a few hundred
    /// bytes that every other exchange would carry and move.
    loopback: Option<Box<crate::loopback::Key>>,
    /// What the operator should read (a proxied server of a virtual server failing), for the driver to log.
    warnings: Vec<String>,
    /// A virtual server's messages waiting on proxied servers, by the number [`Job::Virtual`] gives.
    composed: Vec<Option<crate::composed::Job>>,
    phase: Phase,
}

/// Higress's SSE transport lives in its `mcp-session` Go filter, ahead of the wasm plugins: it holds the
/// client's `GET .../sse` stream, and relays each message the client POSTs to `{path}?sessionId=<id>`
/// unchanged to the plugin, then publishes the plugin's JSON answer on the stream (Redis pub/sub, so any
/// replica may take the POST). The plugin never sees the stream or a `Mcp-Session-Id`: such a POST is
/// served on its own, `initialize` included (no session is created; nothing is stored).
fn relayed_by_higress(path: &str) -> bool {
    let query = path.split_once('?').map_or("", |(_, q)| q).split('#').next().unwrap_or("");
    query.split('&').any(|pair| pair.strip_prefix("sessionId=").is_some_and(|v| !v.is_empty()))
}

/// Higress's per-request server config: its `mcp-session` filter (with `enableUserLevelServer`) puts a
/// user's `server.config`, base64 JSON, in this header ([`crate::config_header`]). Refused unless
/// `trustConfigHeader: true`; then the host serves the request with a gateway compiled for that config,
/// never with the operator's. The header never reaches an upstream either way: no client header does.
pub const CONFIG_HEADER: &str = "x-higress-mcpserver-config";
/// Why [`CONFIG_HEADER`] is refused on a request, without `trustConfigHeader: true`.
pub const CONFIG_HEADER_UNSUPPORTED: &str = "x-higress-mcpserver-config (a per-user server config, from Higress's \
mcp-session filter with enableUserLevelServer) is not trusted by this gateway: the operator can set \
trustConfigHeader: true where a filter in front of the plugin sets or removes it on every request";
/// The notice at load with `trustConfigHeader: true`: the trust it takes.
pub const CONFIG_HEADER_TRUSTED: &str = "trustConfigHeader: true: a request's x-higress-mcpserver-config replaces \
its server's config, so whoever can set that header chooses the config (its keys, its hosts). Make sure a filter \
in front of this plugin sets or removes it on every request: Higress's mcp-session filter sets it only for users \
with a stored config and lets a client's own value through otherwise";

/// The answer to a request whose [`CONFIG_HEADER`] cannot be taken, saying why.
pub fn config_header_refused(gw: &Gateway, head: &RequestHead, why: String) -> HttpResponse {
    let origin = head.header("origin").filter(|o| gw.origin_allowed(o));
    add_cors(HttpResponse::error(400, Value::Null, jsonrpc::INVALID_REQUEST, why), origin)
}

/// Decides what to do with a request from its head alone.
pub fn route(gw: &Gateway, head: &RequestHead) -> Route {
    let path = head.path.split(['?', '#']).next().unwrap_or("");
    if let Some(resource) = path.strip_prefix(crate::admission::WELL_KNOWN) {
        return protected_resource(gw, head, resource);
    }
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
    // Admission: who calls, and whether it may use this server at all, before anything else is done.
    let caller = match admit(gw, &gw.servers[server], head) {
        Ok(caller) => caller,
        Err(refused) => return Route::Respond(with_cors(refused.response(Value::Null))),
    };
    if head.header(CONFIG_HEADER).is_some() {
        use crate::config_header::ConfigHeader;
        let refused = match gw.config_header {
            ConfigHeader::Applied => None,
            ConfigHeader::Refused => Some(CONFIG_HEADER_UNSUPPORTED.to_string()),
            // The host compiles a trusted header's config before this; not done: never the operator's config.
            ConfigHeader::Trusted(_) => Some(format!("{CONFIG_HEADER} could not be applied to this request")),
        };
        if let Some(why) = refused {
            return Route::Respond(with_cors(HttpResponse::error(400, Value::Null, jsonrpc::INVALID_REQUEST, why)));
        }
    }
    // The protocol version is judged with the body: a stateless request names it there too, and every
    // error must answer the request's id.
    let mcp_headers = stateless::McpHeaders {
        protocol_version: head.header("mcp-protocol-version").map(str::to_string),
        method: head.header("mcp-method").map(str::to_string),
        name: head.header("mcp-name").map(str::to_string),
    };
    let session_id = head.header("mcp-session-id").map(str::to_string);
    let last_event_id = head.header("last-event-id").map(str::to_string);
    let relayed = head.method == "POST" && session_id.is_none() && relayed_by_higress(&head.path);
    // (JSON, SSE) admitted, read once; `None` without an Accept header or for Higress's relayed POSTs.
    let accept = head.header("accept").filter(|_| !relayed).map(accepted);
    let kind = match &*head.method {
        "POST" => {
            // Legacy SSE clients POST JSON without the Streamable HTTP Accept header.
            if let Some((json, sse)) = accept {
                if !json || !sse {
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
        // A 2025-11-25 client resuming the SSE answer of a call that asked it for input.
        "GET" if last_event_id.is_some() && session_id.is_some() => Kind::Poll,
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
    Route::Accept(Box::new(Exchange {
        client: if gw.templates.has_go() {
            crate::template::Client::from_request(head.header("x-forwarded-for"), head.client_address.as_deref())
        } else {
            crate::template::Client::default()
        },
        server,
        kind,
        session_id,
        cors_origin,
        mcp_headers,
        revision: Revision::LATEST_LEGACY,
        relayed,
        called: None,
        records: Vec::new(),
        allowed_tools: head.header("x-envoy-allow-mcp-tools").and_then(allowed_tools),
        presented: crate::credential::Presented::read(
            &gw.servers[server].credential_sources,
            |name| head.header(name),
            &head.path,
        )
        .with_own(gw.admission.upstream_credential(
            &gw.servers[server].auth,
            &gw.servers[server].name,
            &caller,
        )),
        caller,
        sse: accept.is_some_and(|(_, sse)| sse),
        session: None,
        save_session: false,
        notes: Vec::new(),
        elapsed_ms: None,
        input: crate::input::Ctx::default(),
        last_event_id,
        answer: None,
        now_ms: 0,
        loopback: None,
        warnings: Vec::new(),
        composed: Vec::new(),
        phase: Phase::Start,
    }))
}

/// Admission for one request to `server`: its caller, or why it is refused (shared with proxied servers).
pub fn admit(
    gw: &Gateway,
    server: &Server,
    head: &RequestHead,
) -> Result<crate::caller::Caller, crate::error::GatewayError> {
    let caller = gw.admission.identify(head)?;
    // Where the server is, worked out only when admission names it (a refusal, a token's audience).
    server.auth.admit(&caller, || crate::admission::Place::of(head, format!("{}/{}", gw.prefix, server.name)))?;
    Ok(caller)
}

/// `GET /.well-known/oauth-protected-resource{prefix}/{name}`: a server's RFC 9728 metadata.
fn protected_resource(gw: &Gateway, head: &RequestHead, resource: &str) -> Route {
    let name = resource.strip_prefix(gw.prefix.as_str()).and_then(|r| r.strip_prefix('/')).unwrap_or("");
    let Some(server) = gw.server(name) else { return Route::PassThrough };
    let place = crate::admission::Place::of(head, format!("{}/{}", gw.prefix, server.name));
    let Some(doc) = server.auth.metadata(&place, &server.name) else { return Route::PassThrough };
    if !matches!(&*head.method, "GET" | "HEAD") {
        let r = HttpResponse::error(405, Value::Null, jsonrpc::INVALID_REQUEST, "Method Not Allowed: use GET");
        return Route::Respond(r.header("allow", "GET"));
    }
    let mut r = HttpResponse::json(200, &doc);
    if head.header("origin").is_some() {
        // Public metadata: browser-based clients fetch it from anywhere.
        r = r.header("access-control-allow-origin", "*");
    }
    Route::Respond(r)
}

/// Whether an Accept header admits `application/json` and `text/event-stream` (exactly, by `type/*`, or by
/// `*/*`), case aside: one pass, compared in place (each part was lowered into a new string, three times
/// per request).
fn accepted(accept: &str) -> (bool, bool) {
    let (mut json, mut sse) = (false, false);
    for part in accept.split(',') {
        let m = part.split(';').next().unwrap_or("").trim();
        let any = m == "*/*";
        json |= any || m.eq_ignore_ascii_case("application/json") || m.eq_ignore_ascii_case("application/*");
        sse |= any || m.eq_ignore_ascii_case("text/event-stream") || m.eq_ignore_ascii_case("text/*");
    }
    (json, sse)
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

    /// Whether the exchange is a virtual server's that calls SSE servers through the loopback (decided at
    /// configure time, [`crate::composed::Virtual::loops_back`]): only such an exchange takes the key.
    pub fn loops_back(&self, gw: &Gateway) -> bool {
        self.server(gw).composed.as_ref().is_some_and(|v| v.loops_back)
    }

    /// Whether the exchange holds the loopback key.
    #[cfg(test)]
    pub fn has_loopback(&self) -> bool {
        self.loopback.is_some()
    }

    /// Gives the exchange the key of its virtual server's passes to this Envoy's bridge.
    pub fn set_loopback(&mut self, key: Option<crate::loopback::Key>) {
        self.loopback = key.map(Box::new);
    }

    /// Gives the exchange what its input requests need: the host's clock and the state keys.
    pub fn set_input(&mut self, ctx: crate::input::Ctx) {
        self.input = ctx;
    }

    /// Starts processing once the whole body is in.
    pub fn on_body(&mut self, gw: &Gateway, body: &[u8]) -> Step {
        if !matches!(self.phase, Phase::Start) {
            return self.respond(HttpResponse::error(
                500,
                Value::Null,
                jsonrpc::INTERNAL_ERROR,
                "request body delivered twice",
            ));
        }
        if self.kind == Kind::Poll {
            let id = self.session_id.clone().unwrap_or_default();
            if !session::is_plausible_id(&id) {
                return self.respond(session_not_found(Value::Null));
            }
            self.phase = Phase::Polling;
            return Step::Session(SessionOp::Open { id, server: self.server(gw).name.clone() });
        }
        if self.kind == Kind::Delete {
            if let Some(v) = self.unsupported_header() {
                return self.respond(stateless::unsupported_version(Value::Null, &v));
            }
            let id = self.session_id.clone().unwrap_or_default();
            if !session::is_plausible_id(&id) {
                return self.respond(session_not_found(Value::Null));
            }
            self.phase = Phase::Deleting;
            return Step::Session(SessionOp::Delete { id, server: self.server(gw).name.clone() });
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
        self.answer = crate::input::poll::response_to_us(&value);
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
                let mut msgs = Vec::with_capacity(items.len());
                for item in items {
                    msgs.push(Message::from_value(item));
                }
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
        let reply_id = batch.reply_id();
        let header_stateless =
            self.mcp_headers.protocol_version.as_deref().and_then(Revision::parse).is_some_and(Revision::is_stateless);
        match &batch {
            Batch::One(Message::Request { id, method, params })
                if stateless::is_stateless(params.as_ref(), &self.mcp_headers) =>
            {
                let (id, method) = (id.clone(), method.clone());
                return match stateless::check(&self.mcp_headers, &id, &method, params.as_ref()) {
                    Ok(revision) => {
                        self.revision = revision;
                        self.process(gw, batch)
                    }
                    Err(refusal) => self.respond(refusal),
                };
            }
            // Notifications and responses of a stateless client need no session; nothing answers them.
            Batch::One(Message::Notification { params, .. })
                if stateless::is_stateless(params.as_ref(), &self.mcp_headers) =>
            {
                return self.respond(HttpResponse::empty(202));
            }
            Batch::One(Message::Response) if header_stateless => return self.respond(HttpResponse::empty(202)),
            Batch::Many(_) if header_stateless => {
                return self.respond(HttpResponse::error(
                    400,
                    Value::Null,
                    jsonrpc::INVALID_REQUEST,
                    "JSON-RPC batches are not allowed at protocol revision 2026-07-28",
                ));
            }
            _ => {}
        }
        if let Some(v) = self.unsupported_header() {
            return self.respond(stateless::unsupported_version(reply_id, &v));
        }
        if self.relayed {
            return self.relay(gw, batch);
        }
        if let Batch::One(Message::Request { id, method, params }) = &batch {
            if method == "initialize" {
                return self.initialize(gw, id.clone(), params.as_ref());
            }
        }
        let Some(sid) = self.session_id.clone() else {
            return self.respond(HttpResponse::error(
                400,
                reply_id,
                jsonrpc::INVALID_REQUEST,
                "Bad Request: missing Mcp-Session-Id header (send initialize first)",
            ));
        };
        if !session::is_plausible_id(&sid) {
            return self.respond(session_not_found(reply_id));
        }
        self.phase = Phase::Opening(batch);
        Step::Session(SessionOp::Open { id: sid, server: self.server(gw).name.clone() })
    }

    /// A message Higress's SSE filter relays: `initialize` answered without a session, the rest served at
    /// the revision the client's `MCP-Protocol-Version` names (2024-11-05, the SSE transport's, without one).
    fn relay(&mut self, gw: &Gateway, batch: Batch) -> Step {
        if let Batch::One(Message::Request { id, method, params }) = &batch {
            if method == "initialize" {
                let requested = params.as_ref().and_then(|p| p.get("protocolVersion")).and_then(Value::as_str);
                let Some(requested) = requested else {
                    let e =
                        jsonrpc::error(id.clone(), jsonrpc::INVALID_PARAMS, "initialize needs params.protocolVersion");
                    return self.respond(HttpResponse::json(200, &e));
                };
                let version = Revision::negotiate(Some(requested));
                let reply = jsonrpc::result(id.clone(), mcp::initialize_result(self.server(gw), version));
                return self.respond(HttpResponse::json(200, &reply));
            }
        }
        self.revision = self
            .mcp_headers
            .protocol_version
            .as_deref()
            .and_then(Revision::parse)
            .filter(|r| !r.is_stateless())
            .unwrap_or(Revision::V2024_11_05);
        if matches!(batch, Batch::Many(_)) && !self.revision.allows_batch() {
            return self.respond(HttpResponse::error(
                400,
                Value::Null,
                jsonrpc::INVALID_REQUEST,
                format!("JSON-RPC batches are not allowed at protocol revision {}", self.revision),
            ));
        }
        self.process(gw, batch)
    }

    fn initialize(&mut self, gw: &Gateway, id: Value, params: Option<&Value>) -> Step {
        let params = params.and_then(Value::as_object);
        let Some(requested) = params.and_then(|p| p.get("protocolVersion")).and_then(Value::as_str) else {
            return self.respond(HttpResponse::json(
                200,
                &jsonrpc::error(id, jsonrpc::INVALID_PARAMS, "initialize needs params.protocolVersion"),
            ));
        };
        let version = Revision::negotiate(Some(requested));
        let server = self.server(gw);
        let reply = jsonrpc::result(id, mcp::initialize_result(server, version));
        let mut session = Session::new(server.name.clone(), version.as_str().to_string());
        session.client = Some(mcp::ClientCaps::from_json(params.and_then(|p| p.get("capabilities"))));
        self.phase = Phase::Creating(reply);
        Step::Session(SessionOp::Create(session))
    }

    /// Resumes after a session operation.
    pub fn on_session(&mut self, gw: &Gateway, outcome: SessionOutcome) -> Step {
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        let reply_id = match &phase {
            Phase::Opening(batch) => batch.reply_id(),
            Phase::Creating(reply) => reply.get("id").cloned().unwrap_or(Value::Null),
            _ => Value::Null,
        };
        match (phase, outcome) {
            (_, SessionOutcome::Failed(e)) => self.respond(HttpResponse::error(
                503,
                reply_id,
                jsonrpc::INTERNAL_ERROR,
                format!("session store unavailable: {e}"),
            )),
            (_, SessionOutcome::Refused(refusal)) => {
                let r = HttpResponse::error(refusal.status, reply_id, jsonrpc::LIMIT_EXCEEDED, refusal.message);
                self.respond(if refusal.status == 429 { r.header("retry-after", "1") } else { r })
            }
            (Phase::Creating(reply), SessionOutcome::Created(sid)) => {
                self.session_id = Some(sid.clone());
                self.respond(HttpResponse::json(200, &reply).header("mcp-session-id", sid))
            }
            (Phase::Opening(_) | Phase::Deleting, SessionOutcome::NotFound) => {
                self.respond(session_not_found(reply_id))
            }
            (Phase::Saving(r), SessionOutcome::Found(_)) => self.respond(r),
            (Phase::Saving(_), SessionOutcome::NotFound) => self.respond(session_not_found(reply_id)),
            (Phase::Opening(_), SessionOutcome::Found(_)) if self.answer.is_some() => {
                let Some((id, answer)) = self.answer.take() else { return self.respond(HttpResponse::empty(202)) };
                self.phase = Phase::Storing;
                let session = self.session_id.clone().unwrap_or_default();
                Step::Answers(crate::input::poll::AnswerOp::Put { session, id, answer })
            }
            (Phase::Polling, SessionOutcome::Found(session)) => {
                self.revision = Revision::parse(&session.version).unwrap_or(Revision::LATEST_LEGACY);
                self.input.client = session.client;
                let resume = self.last_event_id.as_deref().and_then(crate::input::poll::Resume::decode);
                let Some(resume) = resume.filter(|_| self.revision == Revision::V2025_11_25) else {
                    return self.respond(HttpResponse::error(
                        400,
                        Value::Null,
                        jsonrpc::INVALID_REQUEST,
                        "Last-Event-ID names no call of this session that waits for input",
                    ));
                };
                let mut ids = Vec::with_capacity(resume.keys.len());
                for k in &resume.keys {
                    ids.push(resume.request_id(k));
                }
                self.phase = Phase::Fetching(resume);
                let session = self.session_id.clone().unwrap_or_default();
                Step::Answers(crate::input::poll::AnswerOp::Take { session, ids })
            }
            (Phase::Polling, SessionOutcome::NotFound) => self.respond(session_not_found(Value::Null)),
            (Phase::Opening(batch), SessionOutcome::Found(session)) => {
                self.revision = Revision::parse(&session.version).unwrap_or(Revision::LATEST_LEGACY);
                self.input.client = session.client;
                self.session = Some(session.clone());
                if matches!(batch, Batch::Many(_)) && !self.revision.allows_batch() {
                    return self.respond(HttpResponse::error(
                        400,
                        Value::Null,
                        jsonrpc::INVALID_REQUEST,
                        format!("JSON-RPC batches are not allowed at protocol revision {}", session.version),
                    ));
                }
                self.process(gw, batch)
            }
            (Phase::Deleting, SessionOutcome::Deleted) => self.respond(HttpResponse::empty(204)),
            (_, outcome) => self.respond(HttpResponse::error(
                500,
                reply_id,
                jsonrpc::INTERNAL_ERROR,
                format!("unexpected session store answer {outcome:?}"),
            )),
        }
    }

    /// Resumes after an answer-store operation (input requests by SSE polling).
    pub fn on_answers(&mut self, gw: &Gateway, outcome: crate::input::poll::AnswerOutcome) -> Step {
        use crate::input::poll::{self, AnswerOutcome};
        let phase = std::mem::replace(&mut self.phase, Phase::Done);
        match (phase, outcome) {
            // The answers, if any, stay where they are: the client may poll again.
            (Phase::Fetching(resume), AnswerOutcome::Failed(e)) => self.respond(HttpResponse::error(
                503,
                resume.id,
                jsonrpc::INTERNAL_ERROR,
                format!("input answers unavailable: the answers could not be read: {e}"),
            )),
            (_, AnswerOutcome::Failed(e)) => self.respond(HttpResponse::error(
                503,
                Value::Null,
                jsonrpc::INTERNAL_ERROR,
                format!("input answers unavailable: the answer could not be kept: {e}"),
            )),
            (Phase::Storing, AnswerOutcome::Stored) => self.respond(HttpResponse::empty(202)),
            (Phase::Fetching(resume), AnswerOutcome::Found(answers)) => match resume.retry(&answers) {
                // Not every answer is in yet: the client polls again, from the same event.
                None => self.respond(HttpResponse::sse(poll::priming(&resume.encode()))),
                Some(msg) => self.process(gw, Batch::One(msg)),
            },
            (_, outcome) => self.respond(HttpResponse::error(
                500,
                Value::Null,
                jsonrpc::INTERNAL_ERROR,
                format!("unexpected answer store outcome {outcome:?}"),
            )),
        }
    }

    /// The server and tool of the request's first `tools/call`, once (for the host's access-log properties).
    pub fn take_called(&mut self) -> Option<(String, String)> {
        self.called.take()
    }

    /// The caller admission established, whose counters the rate limits check.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// The caller admission established; stats, access log and audit lines name it.
    pub fn set_caller(&mut self, caller: Caller) {
        self.caller = caller;
    }

    /// The records of the tool calls answered since the last call, for the host to count and log.
    pub fn take_records(&mut self) -> Vec<CallRecord> {
        std::mem::take(&mut self.records)
    }

    /// Whether the exchange has produced its response.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// The host's clock, before each call that may start or finish upstream calls.
    pub fn set_now(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// What the operator should read since the last call.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    fn process(&mut self, gw: &Gateway, batch: Batch) -> Step {
        if gw.servers[self.server].composed.is_some() {
            return self.composed(gw, batch);
        }
        self.process_on(gw, self.server, batch)
    }

    /// Serves the messages with the methods of server `owner` (the request's own, or the one that has a
    /// virtual server's REST tool).
    fn process_on(&mut self, gw: &Gateway, owner: usize, batch: Batch) -> Step {
        let (single, inputs) = match batch {
            Batch::One(m) => (true, vec![Ok(m)]),
            Batch::Many(v) => (false, v),
        };
        let mut acc = Gathered::with_capacity(inputs.len());
        let origin = self.origin(gw, single, inputs.first());
        for input in inputs {
            if let Some(step) = self.member(gw, owner, None, input, origin.as_ref(), &mut acc) {
                return step;
            }
        }
        self.start_calls(gw, single, acc)
    }

    /// A single call of a 2025-11-25 session may ask the client for input over SSE: what to resume. Only a
    /// configuration with input requests can ask (`input_keys`); others do not copy the arguments.
    fn origin(
        &self,
        gw: &Gateway,
        single: bool,
        first: Option<&Result<Message, (Value, String)>>,
    ) -> Option<(Value, String, String, Value)> {
        match first {
            Some(Ok(Message::Request { id, method, params: Some(p) }))
                if single && self.revision == Revision::V2025_11_25 && !self.relayed && gw.input_keys.is_some() =>
            {
                let name = p.get("name").or(p.get("uri")).and_then(Value::as_str).unwrap_or_default().to_string();
                let arguments = p.get("arguments").cloned().unwrap_or(Value::Null);
                Some((id.clone(), method.clone(), name, arguments))
            }
            _ => None,
        }
    }

    /// Serves one message with server `owner`'s methods: its reply (or none) goes to its slot, a call it
    /// makes to `acc`'s calls. `via`: the virtual server's name of the tool it calls, when it is one of a
    /// virtual server's calls. Returns the response when one is due at once (a call that asks for input).
    fn member(
        &mut self,
        gw: &Gateway,
        owner: usize,
        via: Option<String>,
        input: Result<Message, (Value, String)>,
        origin: Option<&(Value, String, String, Value)>,
        acc: &mut Gathered,
    ) -> Option<Step> {
        let server = &gw.servers[owner];
        let slot = acc.slots.len();
        let listening = match input.as_ref().map(|m| self.listening(gw, server, m)) {
            Ok(Err(refused)) => {
                acc.slots.push(Some(Reply::Tree(refused)));
                return None;
            }
            Ok(Ok(l)) => l,
            Err(_) => Listening::Nothing,
        };
        let record = input.as_ref().ok().and_then(tool_call_of);
        match input {
            Err((id, why)) => acc.slots.push(Some(Reply::Tree(jsonrpc::error(
                id,
                jsonrpc::INVALID_REQUEST,
                format!("Invalid Request: {why}"),
            )))),
            Ok(m) => match crate::template::with_client(&self.client, || {
                mcp::handle_allowed(
                    gw,
                    server,
                    note_call(&mut self.called, &server.name, m),
                    self.revision,
                    &crate::gateway::Access { caller: &self.caller, header: self.allowed_tools.as_deref() },
                    &self.presented,
                    &self.input,
                )
            }) {
                Handled::Result { id, result }
                    if result.get("resultType").is_some_and(|t| t == "input_required")
                        && !self.revision.is_stateless() =>
                {
                    let v = jsonrpc::result(id, result);
                    let asked = origin.and_then(|(id, method, name, args)| {
                        crate::input::poll::ask(&v["result"], id, method, name, args)
                    });
                    match asked {
                        Some((resume, body)) => {
                            self.last_event_id = Some(resume.encode());
                            return Some(self.respond(HttpResponse::sse(body)));
                        }
                        None => acc.slots.push(Some(Reply::Tree(jsonrpc::error(
                            v["id"].clone(),
                            jsonrpc::INVALID_REQUEST,
                            "a call that asks the client for input must be a request of its own",
                        )))),
                    }
                }
                Handled::Result { id, result } => {
                    // A virtual server's guardrails filter what its call answers, before it is recorded.
                    let reply = self.through_virtual(gw, via.as_deref(), Reply::Result { id, result });
                    acc.slots.push(Some(self.replied(gw, server, slot, record, reply, listening)))
                }
                Handled::Reply(v) => {
                    let reply = self.through_virtual(gw, via.as_deref(), Reply::Tree(v));
                    acc.slots.push(Some(self.replied(gw, server, slot, record, reply, listening)))
                }
                // List pages: nothing to record or listen for.
                Handled::Text(t) => acc.slots.push(Some(Reply::Text(t))),
                Handled::Silent => acc.slots.push(None),
                // One request may not start more calls than the limit: a batch of thousands would take
                // every upstream connection Envoy allows, from every client.
                Handled::Call { id, .. } if acc.started >= gw.max_calls_per_request => {
                    acc.slots.push(Some(Reply::Tree(too_many_calls(gw, id))));
                }
                Handled::Call { id, call, request, args } => {
                    acc.slots.push(None);
                    acc.started += 1;
                    let listener = match listening {
                        Listening::Call(_, _, l) => Some(l),
                        _ => None,
                    };
                    let pending = PendingCall { slot, owner, via, id, call, args, listener, record };
                    match self.input_check(gw, &pending) {
                        Some((stage, check)) => {
                            acc.calls.push(Some(Job::CheckInput(pending, stage, request)));
                            acc.requests.push(check);
                        }
                        None => {
                            acc.calls.push(Some(Job::Call(pending)));
                            acc.requests.push(*request);
                        }
                    }
                }
            },
        }
        None
    }

    /// Starts the calls gathered: answered at once when there are none; else through the rate limits and
    /// quotas of the request's server (a virtual server's include those of each tool's own server), then
    /// upstream.
    fn start_calls(&mut self, gw: &Gateway, single: bool, acc: Gathered) -> Step {
        let Gathered { slots, calls, requests, .. } = acc;
        if requests.is_empty() {
            return self.reply(single, slots);
        }
        let limits = &gw.servers[self.server].limits;
        let mut limited: Vec<(usize, String)> = Vec::new();
        for (i, c) in calls.iter().enumerate() {
            if let Some(t) = c.as_ref().and_then(Job::limited_tool).filter(|t| limits.applies(t)) {
                limited.push((i, t.to_string()));
            }
        }
        if !limited.is_empty() {
            self.phase = Phase::Limiting { single, slots, calls, requests };
            return Step::Limit(crate::limits::LimitOp { server: self.server, calls: limited });
        }
        let remaining = self.outstanding(&calls);
        self.phase = Phase::Calling { single, slots, remaining, calls };
        Step::Dispatch(requests)
    }

    /// Resumes after the rate limits and quotas were checked: refused calls are answered with their error
    /// (a request of one refused call, at the stateless revision, with HTTP 429 and `Retry-After`, as any
    /// HTTP client understands; in a session, with a JSON-RPC error in a 200, whose `data` says when to
    /// retry, since SDKs turn an HTTP error status in a session into a transport failure), the rest go on.
    pub fn on_limit(&mut self, gw: &Gateway, outcome: crate::limits::LimitOutcome) -> Step {
        let Phase::Limiting { single, mut slots, mut calls, requests } =
            std::mem::replace(&mut self.phase, Phase::Done)
        else {
            return self.respond(HttpResponse::error(
                500,
                Value::Null,
                jsonrpc::INTERNAL_ERROR,
                "a rate-limit verdict came at the wrong time",
            ));
        };
        if let ([(_, refusal)], true, true) = (outcome.refused.as_slice(), single, self.revision.is_stateless()) {
            let id = calls.first().and_then(Option::as_ref).map_or(Value::Null, |c| self.job_id(c));
            let mut r = HttpResponse::json(refusal.status(), &refusal.reply(id));
            r.headers.extend(refusal.headers());
            return self.respond(r);
        }
        if outcome.refused.is_empty() {
            // The common case: every call goes on as gathered, with no copy of the calls or requests.
            let remaining = self.outstanding(&calls);
            self.phase = Phase::Calling { single, slots, remaining, calls };
            return Step::Dispatch(requests);
        }
        for (index, refusal) in &outcome.refused {
            if let Some(job) = calls.get_mut(*index).and_then(Option::take) {
                let call = match job {
                    Job::Call(c) | Job::CheckInput(c, ..) | Job::CheckOutput(c, ..) => c,
                    Job::Virtual { slot, job, .. } => {
                        // Its proxied server is not asked.
                        let id = self.composed.get_mut(job).and_then(Option::take).map_or(Value::Null, |j| j.id());
                        slots[slot] = Some(Reply::Tree(refusal.reply(id)));
                        continue;
                    }
                };
                let reply = Reply::Tree(refusal.reply(call.id));
                if let Some((tool, arguments)) = call.record {
                    // Counted under the refusal's cause (`rate_limited`), as every call is.
                    let server = &gw.servers[call.owner].name;
                    self.records.push(CallRecord::tool_call(server, &tool, &self.caller, arguments, &reply, None));
                }
                slots[call.slot] = Some(reply);
            }
        }
        // Loops, not `zip`/`unzip` and `flat_map`: their adapters are instantiated for these types alone.
        let (mut kept, mut sent) = (Vec::new(), Vec::new());
        let mut requests = requests.into_iter();
        for c in calls {
            let Some(r) = requests.next() else { break };
            if c.is_some() {
                kept.push(c);
                sent.push(r);
            }
        }
        let (calls, requests) = (kept, sent);
        if requests.is_empty() {
            let mut retry = None;
            for (_, e) in &outcome.refused {
                let mut headers = e.headers();
                if !headers.is_empty() {
                    retry = Some(headers.swap_remove(0));
                    break;
                }
            }
            return match self.reply(single, slots) {
                Step::Respond(mut r) if r.status == 200 => {
                    r.headers.extend(retry);
                    Step::Respond(r)
                }
                other => other,
            };
        }
        let remaining = self.outstanding(&calls);
        self.phase = Phase::Calling { single, slots, remaining, calls };
        Step::Dispatch(requests)
    }

    /// The calls of a request still to be answered: each call once, each virtual server's message once
    /// (a `tools/list` waits on several requests).
    fn outstanding(&self, calls: &[Option<Job>]) -> usize {
        let own = calls.iter().filter(|c| !matches!(c, Some(Job::Virtual { .. }) | None)).count();
        own + self.composed.iter().filter(|j| j.is_some()).count()
    }

    /// The id of the message a job answers.
    fn job_id(&self, job: &Job) -> Value {
        match job {
            Job::Virtual { job, .. } => {
                self.composed.get(*job).and_then(Option::as_ref).map_or(Value::Null, |j| j.id())
            }
            _ => job.call().map_or(Value::Null, |c| c.id.clone()),
        }
    }

    /// How long the upstream call reported next took (its notifications' `elapsedMs`).
    pub fn upstream_took(&mut self, ms: u64) {
        self.elapsed_ms = Some(ms);
    }

    /// Reports the answer to dispatched request `index`; returns the response once every call is answered,
    /// or the next request a call needs (its upstream request after the guard service allowed it, the
    /// guard service's check of its result).
    pub fn on_upstream(&mut self, gw: &Gateway, index: usize, outcome: UpstreamResult) -> Option<Step> {
        let Phase::Calling { calls, .. } = &mut self.phase else {
            return None;
        };
        let job = calls.get_mut(index)?.take()?;
        let elapsed_ms = self.elapsed_ms.take();
        let server = match &job {
            Job::Virtual { slot, job, index, .. } => return self.composed_answer(gw, *slot, *job, *index, outcome),
            Job::Call(c) | Job::CheckInput(c, ..) | Job::CheckOutput(c, ..) => &gw.servers[c.owner],
        };
        match job {
            Job::Virtual { .. } => None,
            Job::Call(call) => self.answered(gw, call, outcome, elapsed_ms),
            Job::CheckInput(call, stage, request) => {
                match self.checked(gw, &call, stage, Side::Input, &outcome, None) {
                    Ok(Some((stage, check))) => self.next_request(Job::CheckInput(call, stage, request), check),
                    Ok(None) => self.next_request(Job::Call(call), *request),
                    Err(e) => {
                        let reply = Reply::Tree(e.reply(call.id.clone()));
                        self.finished(server, call, reply, None)
                    }
                }
            }
            Job::CheckOutput(call, stage, reply, upstream) => {
                match self.checked(gw, &call, stage, Side::Output, &outcome, reply.result()) {
                    Ok(Some((stage, check))) => {
                        self.next_request(Job::CheckOutput(call, stage, reply, upstream), check)
                    }
                    Ok(None) => self.finished(server, call, reply, upstream),
                    Err(e) => {
                        let reply = Reply::Tree(e.reply(call.id.clone()));
                        self.finished(server, call, reply, upstream)
                    }
                }
            }
        }
    }

    /// The upstream answered a call: its notifications, its reply, and the guard service's check of it.
    fn answered(
        &mut self,
        gw: &Gateway,
        call: PendingCall,
        outcome: UpstreamResult,
        elapsed_ms: Option<u64>,
    ) -> Option<Step> {
        // The tool's own server: a virtual server's REST tool runs on it.
        let server = &gw.servers[call.owner];
        if let (Some(listener), mcp::Pending::Tool(tool, _)) = (&call.listener, &call.call) {
            if let Some(n) = server.notifications(tool) {
                let answer = notify::Answer { outcome: &outcome, elapsed_ms };
                let notes = n.render(&gw.templates, &server.config, &call.args, Some(answer), false, listener);
                self.note(call.slot, notes);
            }
        }
        let revision = self.revision;
        let upstream = Some((crate::metrics::Upstream::from(&outcome), elapsed_ms));
        let reply = crate::template::with_client(&self.client, || {
            mcp::finish_call(gw, server, call.id.clone(), &call.call, &call.args, outcome, revision)
        });
        let reply = self.through_virtual(gw, call.via.as_deref(), reply);
        let check = self.checks(&call).zip(reply.result()).and_then(|(checks, result)| {
            checks.next(gw, 0, Side::Output, self.caller.label(), &call.args, Some(result))
        });
        match check {
            Some((stage, request)) => self.next_request(Job::CheckOutput(call, stage, reply, upstream), request),
            None => self.finished(server, call, reply, upstream),
        }
    }

    /// A reply made without the upstream: recorded when it answers a tool call, and heard.
    fn replied(
        &mut self,
        gw: &Gateway,
        server: &Server,
        slot: usize,
        record: Option<(String, Vec<String>)>,
        reply: Reply,
        listening: Listening,
    ) -> Reply {
        if let Some((tool, arguments)) = record {
            self.records.push(CallRecord::tool_call(&server.name, &tool, &self.caller, arguments, &reply, None));
        }
        self.heard(gw, server, slot, &reply, listening);
        reply
    }

    /// The guard services of a tool call: a virtual server's (its REST tool's calls), then the tool's own
    /// server's.
    fn checks<'a>(&self, call: &'a PendingCall) -> Option<Checks<'a>> {
        let mcp::Pending::Tool(tool, _) = &call.call else { return None };
        Some(Checks { via: call.via.as_deref().map(|v| (self.server, v)), owner: call.owner, tool })
    }

    /// The first guard service's check of a call's arguments, when one checks them.
    fn input_check(&self, gw: &Gateway, call: &PendingCall) -> Option<(u8, UpstreamRequest)> {
        self.checks(call)?.next(gw, 0, Side::Input, self.caller.label(), &call.args, None)
    }

    /// The verdict of the guard service of `stage` on a call's `phase`, and the next service's check if any.
    fn checked(
        &self,
        gw: &Gateway,
        call: &PendingCall,
        stage: u8,
        phase: Side,
        outcome: &UpstreamResult,
        result: Option<&Value>,
    ) -> Result<Option<(u8, UpstreamRequest)>, crate::error::GatewayError> {
        let Some(checks) = self.checks(call) else { return Ok(None) };
        checks.verdict(gw, stage, phase, outcome)?;
        Ok(checks.next(gw, stage + 1, phase, self.caller.label(), &call.args, result))
    }

    /// One more request for a call: numbered after every request dispatched so far, as the driver does.
    fn next_request(&mut self, job: Job, request: UpstreamRequest) -> Option<Step> {
        self.next_requests(vec![(job, request)])
    }

    /// More requests, numbered after every request dispatched so far.
    fn next_requests(&mut self, jobs: Vec<(Job, UpstreamRequest)>) -> Option<Step> {
        let Phase::Calling { calls, .. } = &mut self.phase else {
            return None;
        };
        let mut requests = Vec::with_capacity(jobs.len());
        for (job, request) in jobs {
            calls.push(Some(job));
            requests.push(request);
        }
        Some(Step::Dispatch(requests))
    }

    /// A call's final reply: recorded, put in its slot; the response once every call has one.
    fn finished(
        &mut self,
        server: &Server,
        call: PendingCall,
        reply: Reply,
        upstream: Option<(crate::metrics::Upstream, Option<u64>)>,
    ) -> Option<Step> {
        if let Some((tool, arguments)) = call.record {
            self.records.push(CallRecord::tool_call(&server.name, &tool, &self.caller, arguments, &reply, upstream));
        }
        self.settle(call.slot, reply)
    }

    /// A message's final reply, in its slot; the response once every call has one.
    fn settle(&mut self, slot: usize, reply: Reply) -> Option<Step> {
        let Phase::Calling { slots, remaining, .. } = &mut self.phase else {
            return None;
        };
        if let Some(s) = slots.get_mut(slot) {
            *s = Some(reply);
        }
        *remaining = remaining.saturating_sub(1);
        if *remaining > 0 {
            return None;
        }
        let Phase::Calling { single, slots, .. } = std::mem::replace(&mut self.phase, Phase::Done) else {
            return None;
        };
        Some(self.reply(single, slots))
    }

    fn reply(&mut self, single: bool, slots: Vec<Option<Reply>>) -> Step {
        let mut replies: Vec<Reply> = Vec::with_capacity(slots.len());
        for r in slots {
            let Some(r) = r else { continue };
            replies.push(r);
        }
        if replies.is_empty() {
            return self.respond(HttpResponse::empty(202));
        }
        // The stateless revision answers a method it does not serve with HTTP 404, so that intermediaries
        // routing on Mcp-Method see it too. (Text replies are list pages, never errors.)
        let status = match replies.first() {
            Some(Reply::Tree(v)) if single => match v["error"]["code"].as_i64() {
                Some(jsonrpc::METHOD_NOT_FOUND) if self.revision.is_stateless() => 404,
                Some(stateless::MISSING_CLIENT_CAPABILITY) => 400,
                _ => 200,
            },
            _ => 200,
        };
        let body = jsonrpc::write_replies(single, &replies);
        if let (Kind::Poll, Some(e)) = (self.kind, self.last_event_id.as_deref()) {
            let sse = HttpResponse::sse(crate::input::poll::reply(e, &String::from_utf8_lossy(&body)));
            return self.respond(sse);
        }
        let response = self.framed(status, body);
        self.after_saving(response)
    }

    /// The `MCP-Protocol-Version` header, when it names no revision this server speaks.
    fn unsupported_header(&self) -> Option<String> {
        self.mcp_headers.protocol_version.clone().filter(|v| Revision::parse(v).is_none())
    }
}

/// The tool names of an `x-envoy-allow-mcp-tools` header (comma-separated); an empty one restricts nothing.
fn allowed_tools(header: &str) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for n in header.split(',') {
        let n = n.trim();
        if !n.is_empty() {
            names.push(n.to_string());
        }
    }
    (!names.is_empty()).then_some(names)
}

/// The tool and argument names of a `tools/call` message.
fn tool_call_of(m: &Message) -> Option<(String, Vec<String>)> {
    match m {
        Message::Request { method, params: Some(p), .. } if method == "tools/call" => {
            let tool = p.get("name")?.as_str()?.to_string();
            Some((tool, crate::metrics::argument_names(p.get("arguments"))))
        }
        _ => None,
    }
}

/// Remembers the first `tools/call` of a request (its server and tool), and passes the message on.
fn note_call(called: &mut Option<(String, String)>, server: &str, m: Message) -> Message {
    if let (None, Message::Request { method, params: Some(p), .. }) = (&called, &m) {
        if let (true, Some(tool)) = (method == "tools/call", p.get("name").and_then(Value::as_str)) {
            *called = Some((server.to_string(), tool.to_string()));
        }
    }
    m
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
        format!("Payload Too Large: the limit is {} bytes (maxRequestBytes)", gw.max_request_bytes),
    )
}

mod composed;
mod listen;
pub mod stateless;

#[cfg(test)]
mod security_tests;
#[cfg(test)]
mod tests;
