//! The thin proxy-wasm layer: reads requests, and performs the [`Driver`]'s operations with hostcalls
//! (shared data, `dispatch_http_call`, local replies, and on Higress its Redis calls). No protocol logic
//! lives here.
//!
//! Exchanges in flight live in one registry per VM ([`LIVE`]), keyed by HTTP context id, rather than in
//! the SDK's context objects: completions arrive through the HTTP context (upstream answers), through an
//! export the SDK does not know (`proxy_on_redis_call_response`, Higress only) and from the root context's
//! tick (watchdogs), and all three must reach the same driver.

mod abi;
mod proxy;
#[cfg(feature = "higress")]
mod redis;
mod route;
mod shared_data;
mod stats;

use crate::driver::{Driver, Host, Progress};
use crate::gateway::Gateway;
use crate::rules::{RequestFacts, Rules};
use crate::session::{CallbackClock, Env, KeyValue};
use crate::slots::Slots;
use crate::transport::{self, Headers, HttpResponse, RequestHead, Route};
use crate::upstream::{UpstreamRequest, UpstreamResult};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use shared_data::SharedData;
use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

/// The root context's tick: drives the session sweep and the drivers' watchdogs.
const TICK: Duration = Duration::from_secs(1);

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> {
        ROOT_ID.with(|r| r.set(id));
        Box::new(Root { rules: None })
    });
}}

/// Announces Higress's own ABI version. Higress turns a pause on request headers into "stop everything" (the
/// body is never delivered) for modules on ABI 0.2.0/0.2.1, and the proxy-wasm crate always exports 0.2.1,
/// so the build drops that export from this artifact (scripts/wasm-drop-export.py). Vanilla Envoy refuses
/// 0.2.100, which is one more reason the Higress build is a separate artifact.
#[cfg(feature = "higress")]
#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_100() {}

/// An exchange in flight and the configuration it started under (a reload does not change it midway).
struct Live {
    gateway: Rc<Gateway>,
    driver: Driver,
    /// The client's request headers as read once in `on_http_request_headers` (moved, not copied): route
    /// dispatch builds the rewritten request from them instead of reading the map a second time.
    client: Headers,
    /// The exchange's first call record was emitted (its access-log properties are set).
    recorded: bool,
}

/// An upstream call in flight: when it was sent and its timeout, to tell why Envoy ended it without an answer.
struct Sent {
    token: u32,
    at_ms: u64,
    timeout_ms: u64,
}

thread_local! {
    /// The root context's id (the SDK's), for [`calls_go_to_the_root`].
    static ROOT_ID: Cell<u32> = const { Cell::new(0) };
    /// Exchanges in flight on this VM, by HTTP context id.
    static LIVE: RefCell<Slots<Live>> = const { RefCell::new(Slots::new()) };
    /// Upstream calls outstanding on this VM: the sum of the drivers' `calls_in_flight`, kept up to date by
    /// [`with_driver`] and `on_done`.
    static IN_FLIGHT: Cell<usize> = const { Cell::new(0) };
    /// Upstream calls in flight on this VM, by HTTP context id.
    static SENT: RefCell<Slots<Vec<Sent>>> = const { RefCell::new(Slots::new()) };
    /// Gateways compiled for requests' `x-higress-mcpserver-config` (`trustConfigHeader`), most recent last.
    static PER_REQUEST: RefCell<crate::config_header::Cache<Rc<Gateway>>> = RefCell::new(Default::default());
}

/// The gateway a request is served by: `gw`, or, for a trusted `x-higress-mcpserver-config`, `gw` compiled
/// with that config (cached per worker); the refusal when the header's config cannot be had.
fn per_request(gw: Rc<Gateway>, head: &RequestHead) -> Result<Rc<Gateway>, HttpResponse> {
    use crate::config_header::{compile_admitted, requested};
    let Some((server, header)) = requested(&gw, head) else {
        return Ok(gw);
    };
    let base = Rc::as_ptr(&gw) as usize;
    PER_REQUEST.with(|c| {
        c.borrow_mut().get_or_make(base, server, header, || compile_admitted(&gw, server, head, header).map(Rc::new))
    })
}

/// Forgets the call `token`; returns the context that sent it, its start time and its timeout.
///
/// The SDK hands a call's answer to the context that was active when the call was sent, as *it* tracks
/// it: a call sent from a callback the SDK does not route (a Redis reply, the root's tick) is recorded
/// under whichever context ran last, so the answer is matched to its sender here, by token.
fn take_sent(token: u32) -> Option<(u32, u64, u64)> {
    SENT.with(|sent| {
        let mut sent = sent.borrow_mut();
        let (id, pos) =
            sent.iter().find_map(|(id, calls)| calls.iter().position(|c| c.token == token).map(|pos| (*id, pos)))?;
        let calls = sent.get_mut(&id)?;
        let call = calls.swap_remove(pos);
        if calls.is_empty() {
            sent.remove(&id);
        }
        Some((id, call.at_ms, call.timeout_ms))
    })
}

/// Makes the SDK file the upstream calls sent next under the root context, whose answers
/// [`http_call_response`] then matches to their senders. For callbacks the SDK does not route (a Redis
/// reply): it would file them under whichever context ran last, and drop their answers if that context
/// has ended meanwhile. The SDK's own export notes the active context and calls the root's
/// `on_queue_ready`, which does nothing here. Never from inside an SDK callback of the root (the tick).
#[cfg_attr(not(feature = "higress"), allow(dead_code))]
fn calls_go_to_the_root() {
    extern "C" {
        // The SDK's export (proxy_wasm::dispatcher), linked within this module.
        fn proxy_on_queue_ready(context_id: u32, queue_id: u32);
    }
    let root = ROOT_ID.with(Cell::get);
    if root != 0 {
        // SAFETY: a plain function of this module; the root context exists once configured.
        unsafe { proxy_on_queue_ready(root, u32::MAX) }
    }
}

/// The answer to upstream call `token`, delivered by the SDK to context `current` (see [`take_sent`]).
fn http_call_response(current: u32, token: u32, body_size: usize) {
    if proxy::on_call_response(token, body_size) {
        return;
    }
    let Some((id, at_ms, timeout_ms)) = take_sent(token) else {
        return; // its exchange is gone
    };
    with_driver(id, id != current, |gw, driver, calls| {
        let (status, headers) = answer_head(MapType::HttpCallResponseHeaders);
        let outcome = match (status, gw.oversized_answer(body_size)) {
            (Some(_), Some(refused)) => refused,
            (Some(status), None) => {
                let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                UpstreamResult::Response { status, headers, body }
            }
            // No headers: Envoy reset the call after the answer had started (see `cut_off_answer`).
            (None, _) => gw.cut_off_answer(Some(now_ms().saturating_sub(at_ms)), Some(timeout_ms)),
        };
        driver.on_upstream(gw, calls, token, outcome)
    });
}

fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// The token payload Envoy's `jwt_authn` verified for this request, if any. The namespace's property is a
/// map, which Envoy serializes as a `google.protobuf.Struct`; Envoys that serialize maps otherwise still
/// give the whole `metadata` property as its protobuf message, read as the fallback.
fn jwt_payload(jwt: &crate::admission::JwtAuth) -> Option<serde_json::Map<String, serde_json::Value>> {
    use crate::admission::claims;
    let direct = hostcalls::get_property(vec!["metadata", "filter_metadata", &jwt.namespace]).ok().flatten();
    let namespace = match direct.as_deref().and_then(claims::decode_struct) {
        Some(ns) => ns,
        None => {
            let whole = hostcalls::get_property(vec!["metadata"]).ok().flatten()?;
            let ns = claims::decode_metadata(&whole, &jwt.namespace)?;
            log(LogLevel::Debug, "mcp-gateway: jwt_authn's payload read from the whole metadata property");
            ns
        }
    };
    claims::payload(&namespace, &jwt.payload_key)
}

/// An answer's head, read once from the host: its `:status` (the first, when valid) and its other
/// headers. Values are decoded lossily without the SDK's UTF-8 unwrap: a non-UTF-8 value from an upstream
/// must not panic the VM (that would take the worker down). One reader for the four heads that need it.
fn answer_head(map: MapType) -> (Option<u16>, Vec<(String, String)>) {
    let bytes = abi::header_map(map);
    let (status, headers) = answer_view(&bytes);
    (status, headers.into_iter().map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
}

/// A header of a head read from the host, borrowed unless it had to be decoded lossily.
type Viewed<'a> = (Cow<'a, str>, Cow<'a, str>);

/// [`answer_head`] borrowing `bytes` (a map [`abi::header_map`] read): a proxied answer's head is looked
/// at, not kept, so its headers are not copied one by one (two allocations each in the VM).
fn answer_view(bytes: &[u8]) -> (Option<u16>, Vec<Viewed<'_>>) {
    let pairs = abi::pairs(bytes);
    let (mut status, mut headers) = (None, Vec::with_capacity(pairs.declared()));
    for (k, v) in pairs {
        match k.first() {
            Some(b':') if k == b":status" && status.is_none() => {
                status = Some(std::str::from_utf8(v).ok().and_then(|v| v.parse().ok()));
            }
            Some(b':') => {}
            _ => headers.push((lossy(k), lossy(v))),
        }
    }
    (status.flatten(), headers)
}

/// Header text from the host, borrowed: checked by `str::from_utf8` (ASCII a word at a time), decoded
/// lossily only when that fails. `String::from_utf8_lossy` walks every text byte by byte through its
/// chunk iterator, valid or not: 11k of the ~90k instructions a proxied call ran in the module.
fn lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Headers as the host ABI takes them, borrowed.
fn borrowed(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    let mut out = Vec::with_capacity(headers.len());
    for (k, v) in headers {
        out.push((k.as_str(), v.as_str()));
    }
    out
}

/// The first value of header `name` in a map [`abi::header_map`] read (empty when absent).
fn header<'a>(map: &'a [u8], name: &[u8]) -> &'a [u8] {
    abi::pairs(map).find(|(k, _)| *k == name).map_or(&[], |(_, v)| v)
}

/// Runs `f` on the driver of context `id`, if it is still in flight, and retires it once it is done.
/// `foreign` says the call comes from outside that context's own callbacks (the tick, a Redis reply), so
/// the context is made effective first: responses and dispatches must land on the right stream.
fn with_driver(id: u32, foreign: bool, f: impl FnOnce(&Gateway, &mut Driver, &mut Calls) -> Progress) {
    LIVE.with(|live| {
        let mut live = live.borrow_mut();
        let Some(entry) = live.get_mut(&id) else {
            return;
        };
        if foreign && hostcalls::set_effective_context(id).is_err() {
            live.remove(&id);
            return;
        }
        let gw = entry.gateway.clone();
        let Live { driver, client, recorded, .. } = entry;
        let mut calls = Calls::new(&gw, id, foreign, client);
        let before = driver.calls_in_flight();
        let progress = f(&gw, driver, &mut calls);
        let called = driver.take_called();
        if let (Some((server, tool)), true) = (&called, gw.observability.access_log) {
            // For access logs, as Higress's plugin sets them: %FILTER_STATE(wasm.mcp_tool_name:PLAIN)%.
            let _ = abi::set_property("mcp_server_name", server);
            let _ = abi::set_property("mcp_tool_name", tool);
        }
        let records = driver.take_records();
        if !records.is_empty() {
            // The request's first call names consumer, method and outcome for the access log.
            let first = !std::mem::replace(recorded, true);
            // The callback's clock (read once per callback), not a clock hostcall of its own.
            stats::emit(&gw.observability, &gw.stats, &records, calls.now_ms(), first);
        }
        let after = driver.calls_in_flight();
        IN_FLIGHT.with(|n| n.set((n.get() + after).saturating_sub(before)));
        if progress == Progress::Done {
            live.remove(&id);
        }
    });
}

/// The hostcalls behind [`Host`], for one HTTP context.
struct Calls<'g> {
    #[cfg_attr(not(feature = "higress"), allow(dead_code))]
    gw: &'g Gateway,
    context_id: u32,
    /// The call comes from outside the context's own callbacks (a Redis reply, the tick).
    foreign: bool,
    shared: SharedData,
    /// The client's request headers (for route dispatch).
    client: &'g Headers,
    /// The clock, read once per callback: a callback takes microseconds, and each read is a hostcall (a
    /// `tools/call` asked for it eight times).
    now: CallbackClock,
}

impl<'g> Calls<'g> {
    fn new(gw: &'g Gateway, context_id: u32, foreign: bool, client: &'g Headers) -> Calls<'g> {
        Calls { gw, context_id, foreign, shared: SharedData, client, now: CallbackClock::default() }
    }
}

impl Env for Calls<'_> {
    fn now_ms(&self) -> u64 {
        self.now.get(now_ms)
    }
    fn random(&mut self, buf: &mut [u8]) -> bool {
        getrandom::getrandom(buf).is_ok()
    }
    fn kv(&mut self) -> &mut dyn KeyValue {
        &mut self.shared
    }
}

impl Host for Calls<'_> {
    #[cfg(feature = "higress")]
    fn redis(&mut self, command: &[u8]) -> Result<u32, String> {
        let store = self.gw.redis().ok_or("no Redis is configured")?;
        redis::call(store, command, self.context_id)
    }
    #[cfg(not(feature = "higress"))]
    fn redis(&mut self, _command: &[u8]) -> Result<u32, String> {
        Err("this build has no Redis (use mcp_gateway_higress.wasm on Higress)".into())
    }

    #[cfg(feature = "higress")]
    fn redis_reinit(&mut self) -> Result<(), String> {
        let store = self.gw.redis().ok_or("no Redis is configured")?;
        redis::init(store)
    }
    #[cfg(not(feature = "higress"))]
    fn redis_reinit(&mut self) -> Result<(), String> {
        Err("this build has no Redis".into())
    }

    fn dispatch(&mut self, r: &UpstreamRequest) -> Result<u32, String> {
        let timeout = Duration::from_millis(r.timeout_ms);
        let token = hostcalls::dispatch_http_call(&r.cluster, r.wire_headers(), r.body.as_deref(), vec![], timeout)
            .map_err(|status| format!("{status:?}"))?;
        let call = Sent { token, at_ms: self.now_ms(), timeout_ms: r.timeout_ms };
        SENT.with(|sent| sent.borrow_mut().get_or_insert_with(self.context_id, Vec::new).push(call));
        Ok(token)
    }

    fn forward(&mut self, r: &UpstreamRequest) -> Result<u32, String> {
        route::forward(self.context_id, self.foreign, r, self.client)
    }

    fn calls_in_flight(&self) -> usize {
        IN_FLIGHT.with(Cell::get)
    }

    fn body_bytes_received(&mut self) -> Option<u64> {
        // Envoy's `request.total_size` is the bytes received from the client plus the headers' size.
        let int = |name: &str| {
            let bytes = hostcalls::get_property(vec!["request", name]).ok().flatten()?;
            Some(i64::from_le_bytes(bytes.get(..8)?.try_into().ok()?))
        };
        let received = int("total_size")? - int("headers_bytes")?;
        u64::try_from(received).ok()
    }

    fn respond(&mut self, r: HttpResponse) {
        if route::respond_in_place(self.context_id, &r) {
            return;
        }
        let headers = borrowed(&r.headers);
        // Refused when a reply was already sent: nothing more to do, and never a reason to panic.
        if let Err(refused) = abi::send_response(r.status, &headers, &r.body) {
            log(LogLevel::Debug, &format!("mcp-gateway: the local reply was refused ({refused:?})"));
        }
    }

    fn warn(&mut self, message: &str) {
        log(LogLevel::Warn, &format!("mcp-gateway: {message}"));
    }
}

/// The gateways of this plugin instance: one, or one per Higress rule (`_rules_`) plus the global one.
type Gateways = Rc<Rules<Rc<Gateway>>>;

struct Root {
    rules: Option<Gateways>,
}

impl Context for Root {
    /// An answer the SDK hands the root: a call sent from the tick (see [`take_sent`]).
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        http_call_response(0, token, body_size);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes =
            hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten().unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let rules = match Gateway::rules_from_config_str(&text) {
            Ok(rules) => rules,
            Err(e) => {
                log(LogLevel::Error, &format!("mcp-gateway: {e}"));
                return false;
            }
        };
        for gw in rules.all() {
            if let Err(why) = connect_store(gw) {
                log(LogLevel::Error, &format!("mcp-gateway: invalid plugin config: {why}"));
                return false;
            }
        }
        let scope = if rules.has_rules() { "per route (_rules_): " } else { "" };
        for gw in rules.all() {
            gw.sessions.prepare(&mut SharedData);
            for server in &gw.servers {
                crate::limits::local::prepare(&mut SharedData, &server.limits.known_process_buckets(&server.name));
            }
            if gw.input_keys.as_ref().is_some_and(Option::is_none) {
                crate::input::prepare(&mut SharedData);
            }
            if gw.input_keys.is_some() {
                crate::session::local::ANSWERS.prepare(&mut SharedData);
            }
            if gw.loopback.as_ref().is_some_and(crate::loopback::Keys::shared) {
                crate::session::prepare_secret(&mut SharedData, crate::loopback::SHARED_KEY);
            }
            for notice in &gw.notices {
                log(LogLevel::Warn, &format!("mcp-gateway: {notice}"));
            }
            let tools: usize = gw.servers.iter().map(|s| s.tools.len()).sum();
            log(
                LogLevel::Info,
                &format!(
                    "mcp-gateway: {scope}serving {} server(s), {tools} tool(s) under {}, sessions: {}",
                    gw.servers.len(),
                    gw.prefix,
                    gw.sessions.kind()
                ),
            );
        }
        self.rules = Some(Rc::new(rules.map(Rc::new)));
        // Its gateways are keyed by their base's address, which a new configuration may reuse.
        PER_REQUEST.with(|c| c.borrow_mut().clear());
        let _ = hostcalls::set_tick_period(TICK);
        true
    }

    fn on_tick(&mut self) {
        let now = now_ms();
        for gw in self.rules.iter().flat_map(|rules| rules.all()) {
            let removed = gw.sessions.sweep(&mut SharedData, now);
            if removed > 0 {
                log(LogLevel::Debug, &format!("mcp-gateway: swept {removed} expired session entries"));
            }
        }
        proxy::expired(now);
        let mut ids = Vec::new();
        LIVE.with(|live| live.borrow().keys().for_each(|id| ids.push(*id)));
        for id in ids {
            with_driver(id, true, |gw, driver, calls| match route::expired(id, gw, now) {
                // A routed call's timeout is the plugin's to enforce (see route.rs).
                Some((token, outcome)) => driver.on_upstream(gw, calls, token, outcome),
                None => driver.on_tick(gw, calls, now),
            });
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http { id: context_id, rules: self.rules.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Sets up the connection the configured store and rate limits need, or says why this build cannot serve
/// them (naming the field at fault).
#[cfg(feature = "higress")]
fn connect_store(gw: &Gateway) -> Result<(), String> {
    match gw.redis() {
        Some(store) => redis::init(store).map_err(|why| format!("field 'sessions.redis': {why}")),
        None => Ok(()),
    }
}

#[cfg(not(feature = "higress"))]
fn connect_store(gw: &Gateway) -> Result<(), String> {
    if gw.sessions.redis().is_some() {
        return Err("field 'sessions.store': store: redis needs Higress's Redis calls, which vanilla Envoy does not \
                    have; load mcp_gateway_higress.wasm into Higress, or use store: signed to share sessions \
                    between Envoy replicas"
            .into());
    }
    for server in &gw.servers {
        if let Some(site) = server.limits.first_in_redis() {
            return Err(format!(
                "server '{}' {site}: counts in Redis (scope: cluster, or a quota), which needs Higress's Redis \
                 calls, and vanilla Envoy has none; load mcp_gateway_higress.wasm into Higress, or use a rate \
                 limit with scope: process (one counter per Envoy process)",
                server.name
            ));
        }
    }
    Ok(())
}

struct Http {
    id: u32,
    rules: Option<Gateways>,
}

impl Http {
    /// The gateway for this request: the only one, or the one its route, host or service selects (Higress's
    /// rule matching: `:authority`, and the name and cluster of the route Envoy chose).
    /// `head`: the request's headers as [`abi::header_map`] read them.
    fn gateway(&self, head: &[u8]) -> Option<Rc<Gateway>> {
        let rules = self.rules.as_ref()?;
        if !rules.has_rules() {
            return rules.select(&RequestFacts::default()).cloned();
        }
        let text = |bytes: Option<Vec<u8>>| String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned();
        let authority = String::from_utf8_lossy(header(head, b":authority")).into_owned();
        // Higress's Envoy answers `route_name`/`cluster_name` while the request headers are decoded; vanilla
        // Envoy only under `xds.` (its older top-level names are empty until the router has run).
        let property = |name: &str| {
            let found = hostcalls::get_property(vec![name]).ok().flatten().filter(|v| !v.is_empty());
            text(found.or_else(|| hostcalls::get_property(vec!["xds", name]).ok().flatten()))
        };
        let route_name = property("route_name");
        let cluster_name = property("cluster_name");
        let facts = RequestFacts { authority: &authority, route_name: &route_name, cluster_name: &cluster_name };
        let chosen = rules.select(&facts).cloned();
        log(
            LogLevel::Debug,
            &format!(
                "mcp-gateway: route '{route_name}', host '{authority}', cluster '{cluster_name}': {}",
                if chosen.is_some() { "configuration selected" } else { "no configuration, passed through" }
            ),
        );
        chosen
    }
}

/// A stream's state goes when the SDK drops its context, in `proxy_on_delete`, which Envoy calls right after
/// `proxy_on_done` when the stream ends. Not in `on_done`: scripts/wasm-opt.sh drops the `proxy_on_done`
/// and `proxy_on_log` exports (this plugin does nothing in either), and Envoy skips a callback the module
/// does not export, so each request costs two VM entries fewer.
impl Drop for Http {
    fn drop(&mut self) {
        // Envoy cancels the calls of a stream that ends (a client gone): they are no longer in flight.
        if let Some(gone) = LIVE.with(|live| live.borrow_mut().remove(&self.id)) {
            IN_FLIGHT.with(|n| n.set(n.get().saturating_sub(gone.driver.calls_in_flight())));
        }
        SENT.with(|sent| sent.borrow_mut().remove(&self.id));
        route::forget(self.id);
        proxy::forget(self.id);
        #[cfg(feature = "higress")]
        redis::forget_context(self.id);
    }
}

impl Context for Http {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        http_call_response(self.id, token, body_size);
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if self.rules.is_none() {
            return Action::Continue;
        }
        // One hostcall for the whole head (a proxied call's cost is mostly such host work), tested for ours
        // as bytes: traffic that is not ours pays this read (one buffer) and nothing else.
        let map = abi::header_map(MapType::HttpRequestHeaders);
        let Some(gw) = self.gateway(&map) else {
            return Action::Continue;
        };
        let path = header(&map, b":path");
        if !path.starts_with(gw.prefix.as_bytes()) && !path.starts_with(crate::admission::WELL_KNOWN.as_bytes()) {
            return Action::Continue;
        }
        let path = lossy(path).into_owned();
        // The head is the map as the host gave it (checked once, not copied).
        let headers = Headers::from_map(map);
        let method = transport::method(headers.get(":method").unwrap_or_default());
        // Only Go templates read the client's address (`getRealIP`): one hostcall fewer for everyone else.
        let client_address = if gw.templates.has_go() {
            hostcalls::get_property(vec!["source", "address"])
                .ok()
                .flatten()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        } else {
            None
        };
        let jwt = gw.admission.jwt.as_ref().and_then(jwt_payload);
        let head = RequestHead { method, path, headers, client_address, jwt };
        let gw = match per_request(gw.clone(), &head) {
            Ok(gw) => gw,
            Err(refused) => {
                Calls::new(&gw, self.id, false, crate::headers::NONE).respond(refused);
                return Action::Pause;
            }
        };
        if let Some(action) = proxy::on_request_headers(self.id, &gw, &head, end_of_stream) {
            return action;
        }
        match transport::route(&gw, &head) {
            Route::PassThrough => Action::Continue,
            Route::Respond(r) => {
                Calls::new(&gw, self.id, false, crate::headers::NONE).respond(r);
                Action::Pause
            }
            Route::Accept(ex) => {
                let driver = Driver::new(ex, now_ms());
                let live_entry = Live { gateway: gw, driver, client: head.headers, recorded: false };
                LIVE.with(|live| live.borrow_mut().insert(self.id, live_entry));
                if end_of_stream {
                    with_driver(self.id, false, |gw, driver, calls| driver.on_body(gw, calls, &[]));
                    if route::take_go_on(self.id) {
                        return Action::Continue;
                    }
                }
                // Pause so the router never sees an MCP request. Envoy honours this (and still delivers the
                // body) only with allow_on_headers_stop_iteration; the driver's watchdog answers requests
                // whose body never comes.
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(action) = proxy::on_request_body(self.id, body_size, end_of_stream) {
            return action;
        }
        let ours = LIVE.with(|live| live.borrow().get(&self.id).map(|l| l.driver.awaits_body()));
        match ours {
            None => return Action::Continue, // not an MCP request (or already answered)
            Some(false) => return Action::Pause,
            Some(true) => {}
        }
        with_driver(self.id, false, |gw, driver, calls| {
            if body_size > gw.max_request_bytes {
                calls.respond(transport::too_large(gw));
                return Progress::Done;
            }
            if !end_of_stream {
                driver.on_body_chunk();
                return Progress::Waiting;
            }
            let body =
                hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size).ok().flatten().unwrap_or_default();
            driver.on_body(gw, calls, &body)
        });
        if route::take_go_on(self.id) {
            return Action::Continue; // the request, rewritten into a tool's request, goes to the router
        }
        Action::Pause
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if let Some(action) = proxy::on_response_headers(self.id, end_of_stream) {
            return action;
        }
        if !route::is_forwarded(self.id) {
            return Action::Continue;
        }
        match route::on_headers(self.id, end_of_stream) {
            Some((token, Some(outcome))) => {
                with_driver(self.id, false, |gw, driver, calls| driver.on_upstream(gw, calls, token, outcome));
                Action::Continue
            }
            // Hold the headers until the body is in: the answer becomes the JSON-RPC response.
            Some((_, None)) => Action::Pause,
            None => Action::Continue,
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if let Some(action) = proxy::on_response_body(self.id, body_size, end_of_stream) {
            return action;
        }
        if !route::is_forwarded(self.id) {
            return Action::Continue;
        }
        let Some(gw) = LIVE.with(|live| live.borrow().get(&self.id).map(|l| l.gateway.clone())) else {
            return Action::Continue;
        };
        // Each chunk is taken out of Envoy's buffer (see route.rs): Pause leaves Envoy nothing to buffer.
        match route::on_body(self.id, &gw, body_size, end_of_stream) {
            Some((token, outcome)) => {
                with_driver(self.id, false, |gw, driver, calls| driver.on_upstream(gw, calls, token, outcome));
                Action::Continue
            }
            None => Action::Pause,
        }
    }
}
