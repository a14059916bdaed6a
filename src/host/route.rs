//! `upstream.dispatch: route`: the client's own request becomes the tool's request and goes on through
//! Envoy's router (as Higress sends its tools' requests), and the upstream's answer is turned into the
//! JSON-RPC response on its way back. No second HTTP client, no second connection pool.
//!
//! ```text
//! request body in ──driver: Host::forward──> headers and body replaced, request continues to the router
//!                                            (resumed, when the call came from a Redis reply or the tick)
//! response headers ──> held (Pause), status and headers kept
//! response body ──> buffered until its end ──driver: on_upstream──> Host::respond rewrites it in place
//! ```
//!
//! Traps, documented in the README: Envoy clears the route cache when the plugin rewrites `:path` and
//! `:authority`, so the rewritten request must match a route to the tool's upstream; the route's timeout
//! and retry policy apply (the tool's timeout is passed as `x-envoy-upstream-rq-timeout-ms`); the answer is
//! buffered in Envoy, so the listener's buffer limit must exceed `maxResponseBytes`; holding the response
//! headers needs `allow_on_headers_stop_iteration` on vanilla Envoy, as the request path already does.

use super::{abi, headers_lossy, log, now_ms};
use crate::transport::HttpResponse;
use crate::upstream::{UpstreamRequest, UpstreamResult};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};

/// A request sent on through the router, and what has come back of its answer.
struct Forward {
    token: u32,
    sent_ms: u64,
    /// The answer's status and headers, once they are in.
    head: Option<(u16, Vec<(String, String)>)>,
    /// The answer had no body: there is none to rewrite, so the response is replaced by a local reply.
    bodiless: bool,
}

thread_local! {
    static FORWARDS: RefCell<HashMap<u32, Forward>> = RefCell::new(HashMap::new());
    /// Contexts whose current callback must let the rewritten request go on (return Continue).
    static GO_ON: RefCell<HashSet<u32>> = RefCell::new(HashSet::new());
    /// Tokens for forwarded requests; from the top of the range, away from Envoy's call tokens.
    static NEXT_TOKEN: Cell<u32> = const { Cell::new(u32::MAX) };
}

/// Rewrites context `id`'s request into `r` and lets it go on. `foreign`: the caller is not one of the
/// context's own request callbacks, so the request is resumed here rather than by the callback's return.
/// `client`: the request's headers as the plugin read them when they arrived (the request has been paused
/// since, so they are still Envoy's; not reading them again saves a hostcall and a copy per call).
pub fn forward(id: u32, foreign: bool, r: &UpstreamRequest, client: &[(String, String)]) -> Result<u32, String> {
    let client_value = |name: &str| client.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let authority = if r.authority.is_empty() { client_value(":authority").unwrap_or("") } else { &r.authority };
    let body = r.body.as_deref().unwrap_or_default();
    let timeout = r.timeout_ms.to_string();
    let length = body.len().to_string();
    let mut headers: Vec<(&str, &str)> =
        vec![(":method", &r.method), (":path", &r.path), (":authority", authority), (":scheme", "http")];
    if let Some(scheme) = client_value(":scheme") {
        headers[3].1 = scheme;
    }
    headers.extend(
        client
            .iter()
            .filter(|(k, _)| crate::upstream::TRACING_HEADERS.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    headers.extend(r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    headers.push(("content-length", &length));
    headers.push(("x-envoy-upstream-rq-timeout-ms", &timeout));
    abi::set_map(MapType::HttpRequestHeaders, &headers).map_err(|s| format!("rewriting the request: {s:?}"))?;
    abi::set_buffer(BufferType::HttpRequestBody, 0, usize::MAX, body)
        .map_err(|s| format!("rewriting the request body: {s:?}"))?;
    let token = NEXT_TOKEN.with(|t| {
        let token = t.get();
        t.set(token.checked_sub(1).unwrap_or(u32::MAX));
        token
    });
    FORWARDS.with(|f| f.borrow_mut().insert(id, Forward { token, sent_ms: now_ms(), head: None, bodiless: false }));
    if foreign {
        abi::resume_request().map_err(|s| format!("resuming the request: {s:?}"))?;
    } else {
        GO_ON.with(|g| g.borrow_mut().insert(id));
    }
    Ok(token)
}

/// Whether the callback now running for context `id` must let its request go on (and forget that).
pub fn take_go_on(id: u32) -> bool {
    GO_ON.with(|g| g.borrow_mut().remove(&id))
}

/// Whether context `id`'s request was forwarded: its response is the tool's answer.
pub fn is_forwarded(id: u32) -> bool {
    FORWARDS.with(|f| f.borrow().contains_key(&id))
}

/// Response headers of a forwarded request: kept for the result. Returns the token and, when the answer
/// has no body, the finished outcome.
pub fn on_headers(id: u32, end_of_stream: bool) -> Option<(u32, Option<UpstreamResult>)> {
    let headers = headers_lossy(MapType::HttpResponseHeaders);
    let status = headers.iter().find(|(k, _)| k == ":status").and_then(|(_, v)| v.parse::<u16>().ok()).unwrap_or(502);
    let kept: Vec<(String, String)> = headers.into_iter().filter(|(k, _)| !k.starts_with(':')).collect();
    FORWARDS.with(|f| {
        let mut f = f.borrow_mut();
        let fwd = f.get_mut(&id)?;
        let outcome =
            end_of_stream.then(|| UpstreamResult::Response { status, headers: kept.clone(), body: Vec::new() });
        fwd.head = Some((status, kept));
        fwd.bodiless = end_of_stream;
        Some((fwd.token, outcome))
    })
}

/// The whole answer of a forwarded request, once its body has ended (`oversized`: what to report instead
/// of reading a body that is too large).
pub fn on_body_end(id: u32, size: usize, oversized: Option<UpstreamResult>) -> Option<(u32, UpstreamResult)> {
    let (token, head) = FORWARDS.with(|f| f.borrow().get(&id).map(|fwd| (fwd.token, fwd.head.clone())))?;
    let (status, headers) = head.unwrap_or((502, Vec::new()));
    if let Some(refused) = oversized {
        return Some((token, refused));
    }
    let body = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size).ok().flatten().unwrap_or_default();
    Some((token, UpstreamResult::Response { status, headers, body }))
}

/// Sends `r` to the client of a forwarded request by rewriting the upstream's answer in place; false when
/// the answer has not started (then the caller replies as usual, which also ends the upstream request).
pub fn respond_in_place(id: u32, r: &HttpResponse) -> bool {
    let Some(fwd) = FORWARDS.with(|f| f.borrow_mut().remove(&id)) else {
        return false;
    };
    if fwd.head.is_none() {
        return false;
    }
    let status = r.status.to_string();
    let length = r.body.len().to_string();
    let mut headers: Vec<(&str, &str)> = vec![(":status", &status)];
    headers.extend(r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    headers.push(("content-length", &length));
    let done = if fwd.bodiless {
        // Envoy cannot give a body to an answer that ended with its headers; its headers have not left yet,
        // so a local reply takes their place.
        headers.pop();
        abi::send_response(r.status, &headers[1..], &r.body)
    } else {
        abi::set_map(MapType::HttpResponseHeaders, &headers)
            .and_then(|_| abi::set_buffer(BufferType::HttpResponseBody, 0, usize::MAX, &r.body))
    };
    if let Err(s) = done {
        let after = now_ms().saturating_sub(fwd.sent_ms);
        log(LogLevel::Warn, &format!("mcp-gateway: could not rewrite the upstream's answer ({s:?}) after {after} ms"));
    }
    true
}

/// Forgets context `id` (its stream has ended).
pub fn forget(id: u32) {
    FORWARDS.with(|f| f.borrow_mut().remove(&id));
    GO_ON.with(|g| g.borrow_mut().remove(&id));
}
