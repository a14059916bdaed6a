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
    pub cluster: String,
    pub authority: String,
    pub timeout_ms: u64,
}

impl Target {
    /// Resolves a tool's target: tool settings override server settings, field by field.
    pub fn resolve(
        server: Option<&UpstreamConfig>,
        tool: Option<&UpstreamConfig>,
        url_host: Option<&str>,
    ) -> Result<Target, String> {
        let pick = |f: fn(&UpstreamConfig) -> Option<String>| tool.and_then(f).or_else(|| server.and_then(f));
        let cluster = pick(|u| u.cluster.clone()).ok_or("upstream.cluster is required for a tool with a url")?;
        if cluster.is_empty() || cluster.bytes().any(|b| b.is_ascii_control()) {
            return Err("upstream.cluster must be a non-empty cluster name".into());
        }
        let authority =
            pick(|u| u.authority.clone()).or_else(|| url_host.map(str::to_string)).unwrap_or_else(|| cluster.clone());
        if authority.is_empty() || !authority.bytes().all(|b| b.is_ascii_graphic()) || authority.contains(['/', '@']) {
            return Err(format!("upstream.authority '{authority}' is not a valid host[:port]"));
        }
        let timeout_ms =
            tool.and_then(|u| u.timeout_ms).or_else(|| server.and_then(|u| u.timeout_ms)).unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 {
            return Err("upstream.timeoutMs must be at least 1".into());
        }
        Ok(Target { cluster, authority, timeout_ms })
    }
}

/// One HTTP request to send through an Envoy cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRequest {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_overrides_server_field_by_field() {
        let server =
            UpstreamConfig { cluster: Some("a".into()), authority: Some("a.local".into()), timeout_ms: Some(500) };
        let tool = UpstreamConfig { cluster: Some("b".into()), authority: None, timeout_ms: None };
        let t = Target::resolve(Some(&server), Some(&tool), None).unwrap();
        assert_eq!(t, Target { cluster: "b".into(), authority: "a.local".into(), timeout_ms: 500 });
        let t = Target::resolve(
            Some(&UpstreamConfig { cluster: Some("c".into()), ..Default::default() }),
            None,
            Some("api.example.com"),
        )
        .unwrap();
        assert_eq!(t.authority, "api.example.com");
        assert_eq!(t.timeout_ms, DEFAULT_TIMEOUT_MS);
        assert!(Target::resolve(None, None, None).is_err());
        let bad = UpstreamConfig { cluster: Some("c".into()), authority: Some("evil.com/x".into()), timeout_ms: None };
        assert!(Target::resolve(Some(&bad), None, None).is_err());
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
