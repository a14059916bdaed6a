//! Upstream HTTP requests and answers as plain data, so the core never touches the network.
//!
//! The host turns an [`UpstreamRequest`] into `dispatch_http_call` and hands the answer back as an
//! [`UpstreamResult`].

use crate::config::UpstreamConfig;

/// Default upstream timeout when the config sets none.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// Where requests of a tool go; fixed at configure time, never influenced by arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The cluster of `dispatch: call`; empty for `dispatch: route`.
    pub cluster: String,
    /// The `:authority` sent; empty for `dispatch: route` without one (the client's is kept).
    pub authority: String,
    pub timeout_ms: u64,
    pub dispatch: Dispatch,
}

/// How a tool's request reaches its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dispatch {
    /// Envoy's async HTTP client, to the configured cluster (`dispatch_http_call`): any number of calls
    /// per request, each with its own connection pool entry.
    #[default]
    Call,
    /// The client's own request, rewritten into the tool's request, goes on through Envoy's router to the
    /// cluster its route chooses, and the answer is rewritten on its way back (Higress's way). Cheaper, but
    /// one call per request, and the rewritten path must match a route.
    Route,
}

impl Target {
    /// Resolves a tool's target: tool settings override server settings, field by field.
    pub fn resolve(
        server: Option<&UpstreamConfig>,
        tool: Option<&UpstreamConfig>,
        url_host: Option<&str>,
    ) -> Result<Target, String> {
        let pick = |f: fn(&UpstreamConfig) -> Option<String>| tool.and_then(f).or_else(|| server.and_then(f));
        let cluster = pick(|u| u.cluster.clone());
        let dispatch = match (pick(|u| u.dispatch.clone()).as_deref(), &cluster) {
            (Some("call") | None, Some(_)) => Dispatch::Call,
            (Some("route") | None, None) => Dispatch::Route,
            (Some("call"), None) => return Err("upstream.cluster is required with dispatch: call".into()),
            (Some("route"), Some(_)) => {
                return Err("upstream.cluster has no effect with dispatch: route (the request's route chooses \
                            the cluster); remove one of them"
                    .into())
            }
            (Some(other), _) => return Err(format!("upstream.dispatch '{other}' is not call or route")),
        };
        let cluster = cluster.unwrap_or_default();
        if dispatch == Dispatch::Call && (cluster.is_empty() || cluster.bytes().any(|b| b.is_ascii_control())) {
            return Err("upstream.cluster must be a non-empty cluster name".into());
        }
        let authority = pick(|u| u.authority.clone()).or_else(|| url_host.map(str::to_string));
        let authority = match dispatch {
            Dispatch::Call => authority.unwrap_or_else(|| cluster.clone()),
            Dispatch::Route => authority.unwrap_or_default(),
        };
        let keeps_client_authority = dispatch == Dispatch::Route && authority.is_empty();
        if !keeps_client_authority
            && (authority.is_empty()
                || !authority.bytes().all(|b| b.is_ascii_graphic())
                || authority.contains(['/', '@']))
        {
            return Err(format!("upstream.authority '{authority}' is not a valid host[:port]"));
        }
        let timeout_ms =
            tool.and_then(|u| u.timeout_ms).or_else(|| server.and_then(|u| u.timeout_ms)).unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 {
            return Err("upstream.timeoutMs must be at least 1".into());
        }
        Ok(Target { cluster, authority, timeout_ms, dispatch })
    }
}

/// One HTTP request to send through an Envoy cluster, or through the request's route.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRequest {
    /// How it is sent; with [`Dispatch::Route`], `cluster` is empty and an empty `authority` keeps the
    /// client's.
    pub dispatch: Dispatch,
    pub cluster: String,
    pub method: String,
    pub authority: String,
    /// Path and query, already percent-encoded.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
    pub timeout_ms: u64,
}

impl UpstreamRequest {
    /// The header list as `dispatch_http_call` wants it, pseudo-headers first.
    pub fn wire_headers(&self) -> Vec<(&str, &str)> {
        let mut h = vec![
            (":method", self.method.as_str()),
            (":path", self.path.as_str()),
            (":authority", self.authority.as_str()),
        ];
        h.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        h
    }
}

/// What came back from the upstream.
#[derive(Debug, Clone, PartialEq)]
pub enum UpstreamResult {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// No HTTP answer: connection failure, reset, timeout, or a dispatch the host refused.
    Failed(String),
}

/// Header names a template may not set: routing is the config's business, framing is Envoy's.
pub fn is_forbidden_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with(':')
        || matches!(n.as_str(), "host" | "content-length" | "transfer-encoding" | "connection" | "upgrade" | "te")
}

/// An HTTP token (RFC 9110) such as a header name or method.
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value is safe when it has no CR, LF, NUL or other control character (tab aside).
pub fn is_safe_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Client headers that go on with a request the gateway sends in the client's name (route dispatch, proxied
/// MCP servers): tracing and forwarding facts only. Credentials, cookies and anything else stay behind.
pub const TRACING_HEADERS: [&str; 10] = [
    "x-request-id",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-sampled",
    "b3",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_overrides_server_field_by_field() {
        let server = UpstreamConfig {
            cluster: Some("a".into()),
            authority: Some("a.local".into()),
            timeout_ms: Some(500),
            ..Default::default()
        };
        let tool = UpstreamConfig { cluster: Some("b".into()), ..Default::default() };
        let t = Target::resolve(Some(&server), Some(&tool), None).unwrap();
        let want =
            Target { cluster: "b".into(), authority: "a.local".into(), timeout_ms: 500, dispatch: Dispatch::Call };
        assert_eq!(t, want);
        let t = Target::resolve(
            Some(&UpstreamConfig { cluster: Some("c".into()), ..Default::default() }),
            None,
            Some("api.example.com"),
        )
        .unwrap();
        assert_eq!(t.authority, "api.example.com");
        assert_eq!(t.timeout_ms, DEFAULT_TIMEOUT_MS);
        let bad =
            UpstreamConfig { cluster: Some("c".into()), authority: Some("evil.com/x".into()), ..Default::default() };
        assert!(Target::resolve(Some(&bad), None, None).is_err());
    }

    #[test]
    fn without_a_cluster_the_request_goes_through_its_route() {
        // Higress's configs name no cluster: the client's request is rewritten for Envoy's router.
        let t = Target::resolve(None, None, None).unwrap();
        assert_eq!((t.dispatch, t.cluster.as_str(), t.authority.as_str()), (Dispatch::Route, "", ""));
        let t = Target::resolve(None, None, Some("restapi.amap.com")).unwrap();
        assert_eq!((t.dispatch, t.authority.as_str()), (Dispatch::Route, "restapi.amap.com"));
        let route = |cluster: Option<&str>, dispatch: &str| {
            let u = UpstreamConfig {
                cluster: cluster.map(str::to_string),
                dispatch: Some(dispatch.into()),
                ..Default::default()
            };
            Target::resolve(Some(&u), None, None)
        };
        assert_eq!(route(None, "route").unwrap().dispatch, Dispatch::Route);
        assert_eq!(route(Some("c"), "call").unwrap().dispatch, Dispatch::Call);
        assert!(route(Some("c"), "route").unwrap_err().contains("has no effect"));
        assert!(route(None, "call").unwrap_err().contains("required"));
        assert!(route(Some("c"), "teleport").unwrap_err().contains("not call or route"));
    }

    #[test]
    fn header_rules() {
        assert!(is_forbidden_header("Host") && is_forbidden_header(":authority") && !is_forbidden_header("x-api-key"));
        assert!(is_token("X-Api-Key") && !is_token("bad header") && !is_token(""));
        assert!(
            is_safe_header_value("Bearer abc\t1") && !is_safe_header_value("a\r\nb") && !is_safe_header_value("a\0")
        );
    }
}
