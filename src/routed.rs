//! The answer to a routed tool call (`upstream.dispatch: route`), collected chunk by chunk as it passes
//! the plugin on its way back to the client.
//!
//! Envoy is never left to buffer it: a buffered answer larger than the listener's buffer becomes Envoy's
//! own 500 (`response_payload_too_large`), and a router timeout after the answer has started becomes
//! Envoy's own 504, both sent straight to the client past the plugin. So the host takes each chunk out of
//! Envoy's buffer, and this keeps it, bounded by `maxResponseBytes`, and decides when the call is over: at
//! the answer's end, as soon as it outgrows the limit, or at the tool's timeout, which the plugin enforces
//! itself ([`ROUTER_GRACE_MS`] before the router would). The outcomes are those `dispatch: call` gives.

use crate::gateway::Gateway;
use crate::header_edits::{diff, Edit};
use crate::headers::{one_of, Headers};
use crate::upstream::{UpstreamRequest, UpstreamResult};

/// How much longer than the tool's timeout Envoy's router is told to wait (`x-envoy-upstream-rq-timeout-ms`):
/// the plugin ends the call at the tool's timeout itself, checked on every chunk and on the root's tick
/// (once a second), so the router's timeout, whose 504 the plugin cannot rewrite once the answer has
/// started, never comes first.
pub const ROUTER_GRACE_MS: u64 = 2_000;

/// How the client's request head becomes the tool's (`Host::forward`): the edits that turn `client`, the
/// headers it came with, into the tool's method, path and authority (the client's when the tool names
/// none), the client's scheme and tracing headers, the tool's headers, the body's length and the router's
/// timeout. Every other client header goes (credentials are never forwarded unless the tool's own
/// headers say so); headers that stay the same are not written again.
pub fn request_edits(r: &UpstreamRequest, client: &Headers) -> Vec<Edit> {
    let authority = if r.authority.is_empty() { client.get(":authority").unwrap_or("") } else { &r.authority };
    let timeout = r.timeout_ms.saturating_add(ROUTER_GRACE_MS).to_string();
    let length = r.body.as_deref().unwrap_or_default().len().to_string();
    let scheme = client.get(":scheme").unwrap_or("http");
    let mut headers: Vec<(&str, &str)> =
        vec![(":method", &r.method), (":path", &r.path), (":authority", authority), (":scheme", scheme)];
    headers.extend(client.iter().filter(|(k, _)| one_of(k, &crate::upstream::TRACING_HEADERS)));
    headers.extend(r.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    headers.push(("content-length", &length));
    headers.push(("x-envoy-upstream-rq-timeout-ms", &timeout));
    diff(client, &headers)
}

/// Envoy router's own answer to a request it timed out before the upstream answered; the plugin gives the
/// same when it ends such a call itself, as `dispatch: call` gets from Envoy.
const ROUTER_TIMEOUT_BODY: &[u8] = b"upstream request timeout";

/// A routed call's answer so far.
#[derive(Debug)]
pub struct Answer {
    sent_ms: u64,
    timeout_ms: u64,
    /// The status and headers, once they are in.
    head: Option<(u16, Vec<(String, String)>)>,
    body: Vec<u8>,
}

impl Answer {
    /// A call sent at `sent_ms` with the tool's timeout.
    pub fn new(sent_ms: u64, timeout_ms: u64) -> Answer {
        Answer { sent_ms, timeout_ms, head: None, body: Vec::new() }
    }

    /// Whether the answer's status and headers are in.
    pub fn started(&self) -> bool {
        self.head.is_some()
    }

    /// The answer's status and headers; with `end`, the answer has no body and this is the outcome.
    pub fn headers(&mut self, status: u16, headers: Vec<(String, String)>, end: bool) -> Option<UpstreamResult> {
        if end {
            return Some(UpstreamResult::Response { status, headers, body: Vec::new() });
        }
        self.head = Some((status, headers));
        None
    }

    /// One chunk of the body (`end`: the last). The outcome once the call is over: the whole answer, an
    /// answer over `maxResponseBytes` (at once, without reading the rest), or the tool's timeout.
    pub fn chunk(&mut self, gw: &Gateway, bytes: &[u8], end: bool, now_ms: u64) -> Option<UpstreamResult> {
        let received = self.body.len().saturating_add(bytes.len());
        if received > gw.max_response_bytes {
            let declared = self.declared_length().filter(|&n| n >= received);
            self.body = Vec::new();
            return Some(match declared {
                Some(size) => gw.oversized_answer(size).unwrap_or_else(|| gw.oversized_stream(received)),
                None => gw.oversized_stream(received),
            });
        }
        self.body.extend_from_slice(bytes);
        if end {
            let (status, headers) = self.head.as_mut().map_or((502, Vec::new()), |(s, h)| (*s, std::mem::take(h)));
            return Some(UpstreamResult::Response { status, headers, body: std::mem::take(&mut self.body) });
        }
        self.expired(gw, now_ms)
    }

    /// The outcome when the tool's timeout has run out at `now_ms`: Envoy's router's 504 if nothing has come
    /// back yet, else the answer cut off, as `dispatch: call` reports them.
    pub fn expired(&mut self, gw: &Gateway, now_ms: u64) -> Option<UpstreamResult> {
        let elapsed = now_ms.saturating_sub(self.sent_ms);
        if elapsed < self.timeout_ms {
            return None;
        }
        self.body = Vec::new();
        Some(match self.head {
            None => UpstreamResult::Response {
                status: 504,
                headers: vec![("content-type".into(), "text/plain".into())],
                body: ROUTER_TIMEOUT_BODY.to_vec(),
            },
            Some(_) => gw.cut_off_answer(Some(elapsed), Some(self.timeout_ms)),
        })
    }

    /// The size the upstream announced (`content-length`), if any.
    fn declared_length(&self) -> Option<usize> {
        let (_, headers) = self.head.as_ref()?;
        headers.iter().find(|(k, _)| k.eq_ignore_ascii_case("content-length")).and_then(|(_, v)| v.trim().parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rewritten_request_writes_only_what_changes_and_drops_the_rest() {
        let client: Vec<(String, String)> = [
            (":method", "POST"),
            (":path", "/mcp-servers/demo"),
            (":authority", "gw"),
            (":scheme", "http"),
            ("content-type", "application/json"),
            ("authorization", "Bearer client"),
            ("x-request-id", "r1"),
            ("content-length", "120"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = UpstreamRequest {
            dispatch: crate::upstream::Dispatch::Route,
            cluster: String::new(),
            method: "GET".into(),
            authority: String::new(),
            path: "/weather?city=Paris".into(),
            headers: Vec::new(),
            body: None,
            timeout_ms: 1000,
        };
        let edits = request_edits(&r, &client.clone().into());
        let mut map = client.clone();
        crate::header_edits::apply(&mut map, &edits);
        map.sort();
        let want: Vec<(String, String)> = [
            (":authority", "gw"),
            (":method", "GET"),
            (":path", "/weather?city=Paris"),
            (":scheme", "http"),
            ("content-length", "0"),
            ("x-envoy-upstream-rq-timeout-ms", "3000"),
            ("x-request-id", "r1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(map, want);
        // Authority, scheme and the tracing header are left as they are.
        assert_eq!(edits.len(), 6, "{edits:?}");
    }

    fn gw(limit: usize) -> Gateway {
        Gateway::from_config_str(&format!("maxResponseBytes: {limit}\nservers:\n- name: a\n")).unwrap()
    }

    fn failed(outcome: Option<UpstreamResult>) -> String {
        match outcome {
            Some(UpstreamResult::Failed(m)) => m,
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn chunks_make_the_whole_answer_at_its_end() {
        let g = gw(100);
        let mut a = Answer::new(1_000, 5_000);
        assert!(a.headers(200, vec![("x".into(), "y".into())], false).is_none());
        assert!(a.started());
        assert!(a.chunk(&g, b"hello ", false, 1_010).is_none());
        let Some(UpstreamResult::Response { status, headers, body }) = a.chunk(&g, b"world", true, 1_020) else {
            panic!()
        };
        assert_eq!((status, headers, body), (200, vec![("x".into(), "y".into())], b"hello world".to_vec()));
    }

    #[test]
    fn a_bodiless_answer_is_the_outcome_at_its_headers() {
        let mut a = Answer::new(0, 5_000);
        let Some(UpstreamResult::Response { status, body, .. }) = a.headers(204, vec![], true) else { panic!() };
        assert_eq!((status, body.len()), (204, 0));
    }

    #[test]
    fn an_answer_over_the_limit_ends_the_call_at_once_and_is_dropped() {
        let g = gw(10);
        let mut a = Answer::new(0, 5_000);
        a.headers(200, vec![], false);
        assert!(a.chunk(&g, b"0123456789", false, 1).is_none(), "exactly the limit is fine");
        let m = failed(a.chunk(&g, b"x", false, 2));
        assert!(m.contains("maxResponseBytes") && m.contains("more than 10 bytes") && m.contains("11"), "{m}");
        assert!(a.body.capacity() == 0, "what was kept is freed");
        // An announced size is reported as such.
        let mut a = Answer::new(0, 5_000);
        a.headers(200, vec![("Content-Length".into(), "67108864".into())], false);
        let m = failed(a.chunk(&g, &[b'a'; 64], false, 1));
        assert!(m.contains("has 67108864 bytes") && m.contains("limit of 10 bytes"), "{m}");
    }

    #[test]
    fn the_tools_timeout_ends_a_slow_answer() {
        let g = gw(1_000);
        let mut a = Answer::new(1_000, 2_000);
        assert!(a.expired(&g, 2_999).is_none());
        // Nothing back yet: what Envoy's router answers, as dispatch: call gets it.
        let Some(UpstreamResult::Response { status, body, .. }) = a.expired(&g, 3_000) else { panic!() };
        assert_eq!((status, body.as_slice()), (504, ROUTER_TIMEOUT_BODY));
        // Started: cut off at the timeout, checked on each chunk as well.
        let mut a = Answer::new(1_000, 2_000);
        a.headers(200, vec![], false);
        assert!(a.chunk(&g, b"abc", false, 2_500).is_none());
        let m = failed(a.chunk(&g, b"def", false, 3_001));
        assert!(m.contains("timeout of 2000 ms"), "{m}");
        let mut a = Answer::new(1_000, 2_000);
        a.headers(200, vec![], false);
        assert!(failed(a.expired(&g, 3_500)).contains("timeout of 2000 ms"));
    }

    #[test]
    fn the_last_chunk_wins_over_the_timeout() {
        let g = gw(1_000);
        let mut a = Answer::new(0, 100);
        a.headers(200, vec![], false);
        assert!(matches!(
            a.chunk(&g, b"late but whole", true, 500),
            Some(UpstreamResult::Response { status: 200, .. })
        ));
    }
}
