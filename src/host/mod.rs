//! The thin proxy-wasm layer: reads the request, drives a [`transport::Exchange`], performs its steps with
//! hostcalls (shared data, `dispatch_http_call`, local replies). No protocol logic lives here.

mod shared_data;

use crate::gateway::Gateway;
use crate::kv_store::KvStore;
use crate::session::{self, SessionStore};
use crate::transport::{self, Exchange, RequestHead, Route, Step};
use crate::upstream::UpstreamResult;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType};
use shared_data::SharedData;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

/// How often each index shard of the session store is swept (one worker wins each shard's lease).
const SWEEP_PERIOD: Duration = Duration::from_secs(15);
/// The root context's tick: drives the sweep and the body watchdog.
const TICK: Duration = Duration::from_secs(1);
/// A request paused on its headers that has not seen a body chunk after this long is failed: Envoy is
/// almost certainly not honouring the pause (see [`STALL_HINT`]).
const BODY_STALL_MS: u64 = 10_000;
const STALL_HINT: &str = "the plugin never received the request body: set allow_on_headers_stop_iteration: true in the Envoy Wasm filter config (Envoy >= 1.35)";

/// Requests waiting for their first body chunk: context id to the time they paused.
type Waiting = Rc<RefCell<HashMap<u32, u64>>>;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { gateway: None, waiting: Rc::default(), ticks: 0 })
    });
}}

fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads a header map without the SDK's UTF-8 unwrap: a non-UTF-8 value from a client or an upstream
/// must not panic the VM (that would take the worker down), so values are decoded lossily.
fn headers_lossy(map: MapType) -> Vec<(String, String)> {
    hostcalls::get_map_bytes(map)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

fn new_session_id() -> Option<String> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).ok()?;
    Some(session::format_id(bytes))
}

struct Root {
    gateway: Option<Rc<Gateway>>,
    waiting: Waiting,
    ticks: usize,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let bytes = hostcalls::get_buffer(proxy_wasm::types::BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        match Gateway::from_config_str(&text) {
            Ok(gw) => {
                for notice in &gw.notices {
                    log(LogLevel::Warn, &format!("mcp-gateway: {notice}"));
                }
                let tools: usize = gw.servers.iter().map(|s| s.tools.len()).sum();
                log(
                    LogLevel::Info,
                    &format!(
                        "mcp-gateway: serving {} server(s), {tools} tool(s) under {}",
                        gw.servers.len(),
                        gw.prefix
                    ),
                );
                self.gateway = Some(Rc::new(gw));
                let _ = hostcalls::set_tick_period(TICK);
                true
            }
            Err(e) => {
                log(LogLevel::Error, &format!("mcp-gateway: {e}"));
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let now = now_ms();
        self.fail_stalled_requests(now);
        if self.gateway.is_some() {
            // One shard per tick keeps each tick's work to a sixteenth of the sessions.
            self.ticks = self.ticks.wrapping_add(1);
            let shard = self.ticks % crate::kv_store::SHARDS;
            let removed = KvStore::new(SharedData).sweep_shard(shard, now, SWEEP_PERIOD.as_millis() as u64);
            if removed > 0 {
                log(LogLevel::Debug, &format!("mcp-gateway: swept {removed} expired session(s)"));
            }
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            id: context_id,
            waiting: self.waiting.clone(),
            gateway: self.gateway.clone(),
            exchange: None,
            calls: HashMap::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl Root {
    /// Fails requests that paused on their headers and never got a body callback (a misconfigured Envoy
    /// would otherwise leave the client hanging until a stream timeout).
    fn fail_stalled_requests(&mut self, now: u64) {
        let stalled: Vec<u32> =
            self.waiting.borrow().iter().filter(|(_, t)| now >= **t + BODY_STALL_MS).map(|(id, _)| *id).collect();
        for id in stalled {
            self.waiting.borrow_mut().remove(&id);
            log(LogLevel::Error, &format!("mcp-gateway: {STALL_HINT}"));
            if hostcalls::set_effective_context(id).is_ok() {
                let body = crate::jsonrpc::error(serde_json::Value::Null, crate::jsonrpc::INTERNAL_ERROR, STALL_HINT);
                let body = body.to_string();
                let _ = hostcalls::send_http_response(
                    500,
                    vec![("content-type", "application/json")],
                    Some(body.as_bytes()),
                );
            }
        }
    }
}

struct Http {
    id: u32,
    waiting: Waiting,
    gateway: Option<Rc<Gateway>>,
    exchange: Option<Exchange>,
    /// Outstanding upstream calls: host token to the exchange's call index.
    calls: HashMap<u32, usize>,
}

impl Http {
    fn header(&self, name: &str) -> Option<String> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    fn send(&self, r: transport::HttpResponse) {
        let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let body = if r.body.is_empty() { None } else { Some(r.body.as_slice()) };
        let _ = hostcalls::send_http_response(r.status as u32, headers, body);
    }

    /// Performs steps until the exchange waits on upstream calls or has answered.
    fn drive(&mut self, gw: &Gateway, mut step: Step) -> Action {
        let mut store = KvStore::new(SharedData);
        loop {
            let Some(ex) = self.exchange.as_mut() else {
                return Action::Pause;
            };
            step = match step {
                Step::Respond(r) => {
                    self.send(r);
                    return Action::Pause;
                }
                Step::LoadSession(id) => ex.on_session(gw, store.load(&id)),
                Step::SaveSession(id, s) => ex.on_stored(gw, store.save(&id, &s)),
                Step::DeleteSession(id) => ex.on_stored(gw, store.delete(&id)),
                Step::Dispatch(requests) => {
                    let mut done = None;
                    for (i, r) in requests.iter().enumerate() {
                        let timeout = Duration::from_millis(r.timeout_ms);
                        match hostcalls::dispatch_http_call(
                            &r.cluster,
                            r.wire_headers(),
                            r.body.as_deref(),
                            vec![],
                            timeout,
                        ) {
                            Ok(token) => {
                                self.calls.insert(token, i);
                            }
                            Err(status) => {
                                let why = format!("the gateway could not send the request to cluster '{}' ({status:?}); is the cluster defined?", r.cluster);
                                log(LogLevel::Warn, &format!("mcp-gateway: {why}"));
                                if let Some(s) = ex.on_upstream(gw, i, UpstreamResult::Failed(why)) {
                                    done = Some(s);
                                }
                            }
                        }
                    }
                    match done {
                        Some(s) => s,
                        None => return Action::Pause,
                    }
                }
            };
        }
    }
}

impl Context for Http {
    fn on_done(&mut self) -> bool {
        self.waiting.borrow_mut().remove(&self.id);
        true
    }

    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let (Some(gw), Some(index)) = (self.gateway.clone(), self.calls.remove(&token)) else {
            return;
        };
        let headers = headers_lossy(MapType::HttpCallResponseHeaders);
        let status = headers.iter().find(|(k, _)| k == ":status").and_then(|(_, v)| v.parse::<u16>().ok());
        let outcome = match (status, gw.oversized_answer(body_size)) {
            (Some(_), Some(refused)) => refused,
            (Some(status), None) => {
                let body = hostcalls::get_buffer(proxy_wasm::types::BufferType::HttpCallResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                let headers = headers.into_iter().filter(|(k, _)| !k.starts_with(':')).collect();
                UpstreamResult::Response { status, headers, body }
            }
            (None, _) => UpstreamResult::Failed("no answer from the upstream (timeout or connection failure)".into()),
        };
        let Some(ex) = self.exchange.as_mut() else {
            return;
        };
        if let Some(step) = ex.on_upstream(&gw, index, outcome) {
            self.drive(&gw, step);
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(gw) = self.gateway.clone() else {
            return Action::Continue;
        };
        let path = self.header(":path").unwrap_or_default();
        if !path.starts_with(gw.prefix.as_str()) {
            return Action::Continue;
        }
        // One hostcall for the whole map; :method is in it.
        let headers = headers_lossy(MapType::HttpRequestHeaders);
        let method = headers.iter().find(|(k, _)| k == ":method").map(|(_, v)| v.clone()).unwrap_or_default();
        let head = RequestHead { method, path, headers };
        match transport::route(&gw, &head) {
            Route::PassThrough => Action::Continue,
            Route::Respond(r) => {
                self.send(r);
                Action::Pause
            }
            Route::Accept(ex) => {
                self.exchange = Some(ex);
                if end_of_stream {
                    self.on_body(&gw, &[])
                } else {
                    // Pause so the router never sees an MCP request. Envoy honours this (and still
                    // delivers the body) only with allow_on_headers_stop_iteration; the root context's
                    // watchdog answers requests whose body never comes.
                    self.waiting.borrow_mut().insert(self.id, now_ms());
                    Action::Pause
                }
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(gw) = self.gateway.clone() else {
            return Action::Continue;
        };
        if self.exchange.is_none() {
            return Action::Continue;
        }
        self.waiting.borrow_mut().remove(&self.id);
        if body_size > gw.max_request_bytes {
            self.exchange = None;
            self.send(transport::too_large(&gw));
            return Action::Pause;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = hostcalls::get_buffer(proxy_wasm::types::BufferType::HttpRequestBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.on_body(&gw, &body)
    }
}

impl Http {
    fn on_body(&mut self, gw: &Gateway, body: &[u8]) -> Action {
        let Some(ex) = self.exchange.as_mut() else {
            return Action::Pause;
        };
        let step = ex.on_body(gw, body, now_ms(), &mut new_session_id);
        self.drive(gw, step)
    }
}
