//! `upstream.dispatch: route`: the client's own request becomes the tool's request and goes on through
//! Envoy's router (as Higress sends its tools' requests), and the upstream's answer is turned into the
//! JSON-RPC response on its way back. No second HTTP client, no second connection pool.
//!
//! ```text
//! request body in ──driver: Host::forward──> headers edited, body replaced, request continues to the router
//!                                            (resumed, when the call came from a Redis reply or the tick)
//! response headers ──> held (Pause), status and headers kept
//! response body ──> each chunk taken out of Envoy's buffer into a bounded one (crate::routed), until
//!                   the end, the limit or the tool's timeout ──driver: on_upstream──> Host::respond
//! ```
//!
//! Traps, documented in the README: Envoy clears the route cache when the plugin rewrites `:path` and
//! `:authority`, so the rewritten request must match a route to the tool's upstream; the route's retry
//! policy applies; holding the response headers needs `allow_on_headers_stop_iteration` on vanilla Envoy,
//! as the request path already does. Envoy answers past the plugin (straight to the client) once the
//! answer has started: an answer it buffered beyond the listener's limit (500), and its router's timeout
//! (504). So the plugin leaves nothing in Envoy's buffer, enforces the tool's timeout itself and gives the
//! router [`crate::routed::ROUTER_GRACE_MS`] more (`x-envoy-upstream-rq-timeout-ms`). An answer that ends at its end is
//! rewritten in place; one ended early (over `maxResponseBytes`, timed out) is replaced by a local reply,
//! which Envoy sends straight to the client and which ends the upstream request.

use super::{abi, answer_head, log, now_ms};
use crate::gateway::Gateway;
use crate::routed::Answer;
use crate::slots::Slots;
use crate::transport::HttpResponse;
use crate::upstream::{UpstreamRequest, UpstreamResult};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType};
use std::cell::{Cell, RefCell};

/// A request sent on through the router, and what has come back of its answer.
struct Forward {
    token: u32,
    answer: Answer,
    /// The answer is at its end in the callback now running: its body can be rewritten in place. Otherwise
    /// (no body, or ended early) the response is replaced by a local reply.
    at_end: bool,
}

thread_local! {
    static FORWARDS: RefCell<Slots<Forward>> = const { RefCell::new(Slots::new()) };
    /// Contexts whose current callback must let the rewritten request go on (return Continue).
    static GO_ON: RefCell<Slots<()>> = const { RefCell::new(Slots::new()) };
    /// Tokens for forwarded requests; from the top of the range, away from Envoy's call tokens.
    static NEXT_TOKEN: Cell<u32> = const { Cell::new(u32::MAX) };
}

/// Rewrites context `id`'s request into `r` and lets it go on. `foreign`: the caller is not one of the
/// context's own request callbacks, so the request is resumed here rather than by the callback's return.
/// `client`: the request's headers as the plugin read them when they arrived (the request has been paused
/// since, so they are still Envoy's; not reading them again saves a hostcall and a copy per call), from which
/// [`crate::routed::request_edits`] decides the headers that change.
pub fn forward(id: u32, foreign: bool, r: &UpstreamRequest, client: &crate::headers::Headers) -> Result<u32, String> {
    let body = r.body.as_deref().unwrap_or_default();
    abi::edit_map(MapType::HttpRequestHeaders, &crate::routed::request_edits(r, client))
        .map_err(|s| format!("rewriting the request: {s:?}"))?;
    abi::set_buffer(BufferType::HttpRequestBody, 0, usize::MAX, body)
        .map_err(|s| format!("rewriting the request body: {s:?}"))?;
    let token = NEXT_TOKEN.with(|t| {
        let token = t.get();
        t.set(token.checked_sub(1).unwrap_or(u32::MAX));
        token
    });
    let answer = Answer::new(now_ms(), r.timeout_ms);
    FORWARDS.with(|f| f.borrow_mut().insert(id, Forward { token, answer, at_end: false }));
    if foreign {
        abi::resume_request().map_err(|s| format!("resuming the request: {s:?}"))?;
    } else {
        GO_ON.with(|g| g.borrow_mut().insert(id, ()));
    }
    Ok(token)
}

/// Whether the callback now running for context `id` must let its request go on (and forget that).
pub fn take_go_on(id: u32) -> bool {
    GO_ON.with(|g| g.borrow_mut().remove(&id).is_some())
}

/// Whether context `id`'s request was forwarded: its response is the tool's answer.
pub fn is_forwarded(id: u32) -> bool {
    FORWARDS.with(|f| f.borrow().contains_key(&id))
}

/// Response headers of a forwarded request: kept for the result. Returns the token and, when the answer
/// has no body, the finished outcome.
pub fn on_headers(id: u32, end_of_stream: bool) -> Option<(u32, Option<UpstreamResult>)> {
    let (status, kept) = answer_head(MapType::HttpResponseHeaders);
    let status = status.unwrap_or(502);
    FORWARDS.with(|f| {
        let mut f = f.borrow_mut();
        let fwd = f.get_mut(&id)?;
        Some((fwd.token, fwd.answer.headers(status, kept, end_of_stream)))
    })
}

/// A chunk of a forwarded request's answer (`size` bytes in Envoy's buffer now): taken out of Envoy's
/// buffer, so that Envoy never holds more than a chunk. Returns the token and outcome once the call is
/// over (see [`Answer::chunk`]).
pub fn on_body(id: u32, gw: &Gateway, size: usize, end_of_stream: bool) -> Option<(u32, UpstreamResult)> {
    if !is_forwarded(id) {
        return None;
    }
    let chunk = match size {
        0 => Vec::new(),
        _ => hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size).ok().flatten().unwrap_or_default(),
    };
    // The last chunk stays: the response replaces it (one hostcall fewer for a one-chunk answer).
    if size > 0 && !end_of_stream {
        if let Err(s) = abi::set_buffer(BufferType::HttpResponseBody, 0, size, &[]) {
            log(LogLevel::Debug, &format!("mcp-gateway: could not take a chunk out of Envoy's buffer ({s:?})"));
        }
    }
    // The clock matters only while the answer goes on.
    let now = if end_of_stream { 0 } else { now_ms() };
    FORWARDS.with(|f| {
        let mut f = f.borrow_mut();
        let fwd = f.get_mut(&id)?;
        let outcome = fwd.answer.chunk(gw, &chunk, end_of_stream, now)?;
        fwd.at_end = end_of_stream;
        Some((fwd.token, outcome))
    })
}

/// The outcome of context `id`'s forwarded request if the tool's timeout has run out by `now` (the tick).
pub fn expired(id: u32, gw: &Gateway, now: u64) -> Option<(u32, UpstreamResult)> {
    FORWARDS.with(|f| {
        let mut f = f.borrow_mut();
        let fwd = f.get_mut(&id)?;
        Some((fwd.token, fwd.answer.expired(gw, now)?))
    })
}

/// Sends `r` to the client of a forwarded request: by rewriting the upstream's answer in place at its end,
/// else by a local reply in its place; false when the answer has not started (then the caller replies as
/// usual, which also ends the upstream request).
pub fn respond_in_place(id: u32, r: &HttpResponse) -> bool {
    let Some(fwd) = FORWARDS.with(|f| f.borrow_mut().remove(&id)) else {
        return false;
    };
    if !fwd.answer.started() {
        return false;
    }
    let status = r.status.to_string();
    let length = r.body.len().to_string();
    let mut headers: Vec<(&str, &str)> = vec![(":status", &status)];
    headers.extend(r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let done = if fwd.at_end {
        headers.push(("content-length", &length));
        abi::set_map(MapType::HttpResponseHeaders, &headers)
            .and_then(|_| abi::set_buffer(BufferType::HttpResponseBody, 0, usize::MAX, &r.body))
    } else {
        // Ended early (over the limit, timed out): the answer is still coming, its headers have not left
        // yet, so a local reply takes their place and ends the upstream request. (An answer that ended with
        // its headers never started: the caller's local reply takes its place.)
        abi::send_response(r.status, &headers[1..], &r.body)
    };
    if let Err(s) = done {
        log(LogLevel::Warn, &format!("mcp-gateway: could not rewrite the upstream's answer ({s:?})"));
    }
    true
}

/// Forgets context `id` (its stream has ended).
pub fn forget(id: u32) {
    FORWARDS.with(|f| f.borrow_mut().remove(&id));
    GO_ON.with(|g| g.borrow_mut().remove(&id));
}
