//! Who sends a request: the identity admission establishes before the exchange starts, carried through
//! it so that authorization, limits, per-user credentials, guardrails, stats and audit lines all agree on
//! one caller.
//!
//! Built by admission (consumers' API keys, claims verified by Envoy's `jwt_authn`, a Higress auth
//! plugin's consumer header); everything after admission only reads it.

use serde_json::{Map, Value};

/// The caller of one request. The default is the anonymous caller.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Caller {
    /// The configured consumer the request was matched to; `None`: anonymous.
    pub consumer: Option<String>,
    /// OAuth scopes granted to the caller (from a verified token's `scope`/`scp` claim), for rules and
    /// scope checks.
    pub scopes: Vec<String>,
    /// Claims of a verified token (empty without one), for rules that match on claims.
    pub claims: Map<String, Value>,
}

impl Caller {
    /// The anonymous caller: no consumer, no scopes, no claims.
    pub fn anonymous() -> Caller {
        Caller::default()
    }

    /// The consumer's name, or `-` for an anonymous caller: the key limits, stats and audit lines use.
    pub fn label(&self) -> &str {
        self.consumer.as_deref().unwrap_or("-")
    }
}
