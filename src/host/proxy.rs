//! Proxied servers on the wire: performs what [`crate::proxy`]'s relay decides. The client's request goes
//! on through the router to the backend with its head rewritten; the answer comes back through the
//! response callbacks, passed on chunk by chunk (or, for a filtered JSON `tools/list`, held to its end).

use super::{abi, headers_lossy, log, Calls};
use crate::gateway::Gateway;
use crate::proxy::{self, Answer, Relay, Start};
use crate::transport::{HttpResponse, RequestHead};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A proxied request in flight.
struct Held {
    gw: Rc<Gateway>,
    relay: Relay,
    /// The request body is still being read for the tool filter.
    reading_body: bool,
    /// The answer is replaced by this once its body has ended (headers held meanwhile).
    replacement: Option<HttpResponse>,
    /// The answer's body is rewritten.
    rewriting: bool,
}

thread_local! {
    static RELAYS: RefCell<HashMap<u32, Held>> = RefCell::new(HashMap::new());
}

fn calls(gw: &Gateway, id: u32) -> Calls<'_> {
    Calls::new(gw, id, false, &[])
}

fn send(r: &HttpResponse) {
    let headers: Vec<(&str, &str)> = r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if let Err(s) = abi::send_response(r.status, &headers, &r.body) {
        log(LogLevel::Debug, &format!("mcp-gateway: the local reply was refused ({s:?})"));
    }
}

fn set_headers(map: MapType, headers: &[(String, String)]) {
    let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if let Err(s) = abi::set_map(map, &pairs) {
        log(LogLevel::Warn, &format!("mcp-gateway: could not rewrite a proxied exchange's headers ({s:?})"));
    }
}

fn edit_headers(map: MapType, edits: &[crate::header_edits::Edit]) {
    if let Err(s) = abi::edit_map(map, edits) {
        log(LogLevel::Warn, &format!("mcp-gateway: could not rewrite a proxied exchange's headers ({s:?})"));
    }
}

/// The request head: `None` when the request is not for a proxied server.
pub fn on_request_headers(id: u32, gw: &Rc<Gateway>, head: &RequestHead, end_of_stream: bool) -> Option<Action> {
    let start = proxy::route(gw, head, &mut calls(gw, id))?;
    let (relay, headers) = match start {
        Start::Respond(r) => {
            send(&r);
            return Some(Action::Pause);
        }
        Start::Forward(relay, headers) => (relay, headers),
    };
    edit_headers(MapType::HttpRequestHeaders, &headers);
    let reading_body = relay.needs_body() && !end_of_stream;
    RELAYS.with(|r| {
        let held = Held { gw: gw.clone(), relay: *relay, reading_body, replacement: None, rewriting: false };
        r.borrow_mut().insert(id, held)
    });
    Some(if reading_body { Action::Pause } else { Action::Continue })
}

/// A request body chunk; `None` when the context is not a proxied request.
pub fn on_request_body(id: u32, size: usize, end_of_stream: bool) -> Option<Action> {
    RELAYS.with(|r| {
        let mut relays = r.borrow_mut();
        let held = relays.get_mut(&id)?;
        if !held.reading_body {
            return Some(Action::Continue);
        }
        if size > held.gw.max_request_bytes {
            send(&crate::transport::too_large(&held.gw));
            relays.remove(&id);
            return Some(Action::Pause);
        }
        if !end_of_stream {
            return Some(Action::Pause);
        }
        held.reading_body = false;
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size).ok().flatten().unwrap_or_default();
        let gw = held.gw.clone();
        match held.relay.on_body(&gw, &mut calls(&gw, id), &body) {
            Err(refused) => {
                send(&refused);
                relays.remove(&id);
                Some(Action::Pause)
            }
            Ok(Some(renamed)) if renamed.len() > held.gw.max_request_bytes => {
                send(&crate::transport::too_large(&held.gw));
                relays.remove(&id);
                Some(Action::Pause)
            }
            Ok(Some(renamed)) => {
                let _ = abi::set_buffer(BufferType::HttpRequestBody, 0, size, &renamed);
                Some(Action::Continue)
            }
            Ok(None) => Some(Action::Continue),
        }
    })
}

/// The backend's answer head.
pub fn on_response_headers(id: u32, end_of_stream: bool) -> Option<Action> {
    RELAYS.with(|r| {
        let mut relays = r.borrow_mut();
        let held = relays.get_mut(&id)?;
        let all = headers_lossy(MapType::HttpResponseHeaders);
        let status = all.iter().find(|(k, _)| k == ":status").and_then(|(_, v)| v.parse().ok()).unwrap_or(502);
        let headers: Vec<(String, String)> = all.into_iter().filter(|(k, _)| !k.starts_with(':')).collect();
        let gw = held.gw.clone();
        match held.relay.on_response_head(&gw, &mut calls(&gw, id), status, &headers) {
            Answer::Pass(edits) => {
                edit_headers(MapType::HttpResponseHeaders, &edits);
                Some(Action::Continue)
            }
            Answer::Rewrite(edits) => {
                edit_headers(MapType::HttpResponseHeaders, &edits);
                held.rewriting = true;
                Some(Action::Continue)
            }
            Answer::Replace(resp) if end_of_stream => {
                send(&resp);
                relays.remove(&id);
                Some(Action::Continue)
            }
            Answer::Replace(resp) => {
                held.replacement = Some(resp);
                Some(Action::Pause)
            }
        }
    })
}

/// A chunk of the backend's answer.
pub fn on_response_body(id: u32, size: usize, end_of_stream: bool) -> Option<Action> {
    RELAYS.with(|r| {
        let mut relays = r.borrow_mut();
        let held = relays.get_mut(&id)?;
        if let Some(resp) = &held.replacement {
            if !end_of_stream {
                return Some(Action::Pause);
            }
            let mut headers = vec![(":status".to_string(), resp.status.to_string())];
            headers.extend(resp.headers.iter().cloned());
            headers.push(("content-length".into(), resp.body.len().to_string()));
            set_headers(MapType::HttpResponseHeaders, &headers);
            let _ = abi::set_buffer(BufferType::HttpResponseBody, 0, usize::MAX, &resp.body);
            return Some(Action::Continue);
        }
        if !held.rewriting {
            return Some(Action::Continue);
        }
        if held.relay.buffers() && !end_of_stream {
            return Some(Action::Pause); // Envoy keeps the chunks; the whole body is read at its end
        }
        let chunk = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size).ok().flatten().unwrap_or_default();
        let gw = held.gw.clone();
        let out = held.relay.on_chunk(&gw, &mut calls(&gw, id), &chunk, end_of_stream);
        if out != chunk {
            let _ = abi::set_buffer(BufferType::HttpResponseBody, 0, size, &out);
        }
        Some(Action::Continue)
    })
}

/// Forgets context `id` (its stream has ended).
pub fn forget(id: u32) {
    RELAYS.with(|r| r.borrow_mut().remove(&id));
}
