//! The gateway's own refusals and failures, typed, and the one place that maps each to its HTTP status,
//! JSON-RPC code and the cause label stats count it under.
//!
//! An error of the upstream's (a REST API answering 500) is a tool result, not one of these: these are
//! the answers the gateway gives on its own account.

use crate::jsonrpc;

/// A refusal or failure of the gateway's own.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayError {
    /// No acceptable credential; `challenge` is the `WWW-Authenticate` value to send, if any.
    Unauthenticated { message: String, challenge: Option<String> },
    /// The caller is known but may not do this (a tool, prompt or resource it is not allowed).
    Forbidden { message: String },
    /// The caller's token lacks a scope the server requires: 403 with RFC 6750's `insufficient_scope`
    /// challenge (a variant of its own so that `Forbidden` stays challenge-free for policy refusals).
    InsufficientScope { message: String, challenge: Option<String> },
    /// A rate limit or quota is exhausted; the caller may retry after `retry_after_secs`.
    RateLimited { message: String, retry_after_secs: u64 },
    /// A guardrail refused the input or the output of a call.
    Guardrail { message: String },
    /// The upstream did not answer within the configured timeout.
    UpstreamTimeout { message: String },
    /// The host refused to send the upstream request (unknown cluster, too many calls in flight).
    RefusedDispatch { message: String },
    /// The upstream's answer is larger than the configured limit.
    OversizedAnswer { message: String },
    /// A store the gateway must consult before it may go on (the rate-limit counters in Redis, with
    /// `onStoreError: deny`) did not answer: not the caller's fault, so 503 rather than 429.
    StoreUnavailable { message: String },
}

impl GatewayError {
    /// The HTTP status of the response that carries this error.
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::Unauthenticated { .. } => 401,
            GatewayError::Forbidden { .. } | GatewayError::InsufficientScope { .. } => 403,
            GatewayError::RateLimited { .. } => 429,
            GatewayError::Guardrail { .. } => 200,
            GatewayError::UpstreamTimeout { .. } => 504,
            GatewayError::RefusedDispatch { .. } => 502,
            GatewayError::OversizedAnswer { .. } => 502,
            GatewayError::StoreUnavailable { .. } => 503,
        }
    }

    /// The JSON-RPC error code of the error reply.
    pub fn code(&self) -> i64 {
        match self {
            GatewayError::Unauthenticated { .. }
            | GatewayError::Forbidden { .. }
            | GatewayError::InsufficientScope { .. } => jsonrpc::INVALID_REQUEST,
            GatewayError::RateLimited { .. } => jsonrpc::LIMIT_EXCEEDED,
            GatewayError::Guardrail { .. } => jsonrpc::INVALID_PARAMS,
            GatewayError::UpstreamTimeout { .. }
            | GatewayError::RefusedDispatch { .. }
            | GatewayError::OversizedAnswer { .. }
            | GatewayError::StoreUnavailable { .. } => jsonrpc::INTERNAL_ERROR,
        }
    }

    /// The cause stats and audit lines count this error under.
    pub fn cause(&self) -> &'static str {
        match self {
            GatewayError::Unauthenticated { .. } => "unauthenticated",
            GatewayError::Forbidden { .. } | GatewayError::InsufficientScope { .. } => "forbidden",
            GatewayError::RateLimited { .. } => "rate_limited",
            GatewayError::Guardrail { .. } => "guardrail",
            GatewayError::UpstreamTimeout { .. } => "upstream_timeout",
            GatewayError::RefusedDispatch { .. } => "refused_dispatch",
            GatewayError::OversizedAnswer { .. } => "oversized_answer",
            GatewayError::StoreUnavailable { .. } => "store_unavailable",
        }
    }

    /// What the client reads.
    pub fn message(&self) -> &str {
        match self {
            GatewayError::Unauthenticated { message, .. }
            | GatewayError::InsufficientScope { message, .. }
            | GatewayError::Forbidden { message }
            | GatewayError::RateLimited { message, .. }
            | GatewayError::Guardrail { message }
            | GatewayError::UpstreamTimeout { message }
            | GatewayError::RefusedDispatch { message }
            | GatewayError::OversizedAnswer { message }
            | GatewayError::StoreUnavailable { message } => message,
        }
    }

    /// The JSON-RPC error reply to request `id`: the message, and [`GatewayError::data`].
    pub fn reply(&self, id: serde_json::Value) -> serde_json::Value {
        jsonrpc::error_with_data(id, self.code(), self.message(), self.data())
    }

    /// Headers the response carries beside the body (`WWW-Authenticate`, `Retry-After`).
    pub fn headers(&self) -> Vec<(String, String)> {
        match self {
            GatewayError::Unauthenticated { challenge: Some(c), .. }
            | GatewayError::InsufficientScope { challenge: Some(c), .. } => {
                vec![("www-authenticate".into(), c.clone())]
            }
            GatewayError::RateLimited { retry_after_secs, .. } => {
                vec![("retry-after".into(), retry_after_secs.to_string())]
            }
            _ => Vec::new(),
        }
    }

    /// The error as the whole HTTP response (a request refused before its exchange starts).
    pub fn response(&self, id: serde_json::Value) -> crate::transport::HttpResponse {
        let mut r = crate::transport::HttpResponse::error(self.status(), id, self.code(), self.message());
        r.headers.extend(self.headers());
        r
    }

    /// The JSON-RPC error's `data`: the cause, so that clients (and the gateway's own stats) can tell a
    /// guardrail from an unknown tool, and when to retry, for clients that never see the HTTP headers (a
    /// call answered inside a 200, a batch).
    pub fn data(&self) -> serde_json::Value {
        match self {
            GatewayError::RateLimited { retry_after_secs, .. } => crate::json::object(vec![
                ("cause", self.cause().into()),
                ("retryAfterSeconds", serde_json::Value::from(*retry_after_secs)),
            ]),
            _ => crate::json::object(vec![("cause", self.cause().into())]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_one_status_code_and_cause() {
        let limited = GatewayError::RateLimited { message: "slow down".into(), retry_after_secs: 3 };
        assert_eq!((limited.status(), limited.code(), limited.cause()), (429, -32000, "rate_limited"));
        assert_eq!(limited.headers(), vec![("retry-after".to_string(), "3".to_string())]);
        let denied = GatewayError::Unauthenticated { message: "who?".into(), challenge: Some("Bearer".into()) };
        assert_eq!(denied.status(), 401);
        assert_eq!(denied.headers()[0].0, "www-authenticate");
        assert_eq!(denied.message(), "who?");
        let reply = limited.reply(serde_json::json!(7));
        assert_eq!(reply["error"]["data"]["retryAfterSeconds"], 3);
        assert_eq!((reply["id"].clone(), reply["error"]["message"].clone()), (7.into(), "slow down".into()));
        let down = GatewayError::StoreUnavailable { message: "redis down".into() };
        assert_eq!((down.status(), down.code(), down.cause()), (503, -32603, "store_unavailable"));
        assert_eq!(
            down.reply(serde_json::Value::Null)["error"]["data"],
            serde_json::json!({"cause": "store_unavailable"})
        );
        let limited = GatewayError::RateLimited { message: "slow down".into(), retry_after_secs: 3 };
        assert_eq!(limited.data().to_string(), r#"{"cause":"rate_limited","retryAfterSeconds":3}"#);
    }
}
