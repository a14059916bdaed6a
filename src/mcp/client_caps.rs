//! The client capabilities the gateway acts on, in a form small enough to keep with a session.
//!
//! A 2026-07-28 request declares its client's capabilities in `_meta` on every request; a 2025 client
//! declares them once, in `initialize`, and the session keeps them (a signed id carries them in a few bits).
//! Either way the same checks follow: an input request the client cannot answer is not sent (MCP
//! 2025-11-25: a server must not send requests, or elicitation modes, the client did not declare), and a
//! tool's `requiredClientCapabilities` are checked. Only presence counts, as the revisions define it; of
//! the sub-capabilities, only elicitation's form mode matters (the gateway's elicitations are forms).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A set of client capabilities, as bits (stored as a number by the local and Redis stores).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientCaps(u8);

/// Capability names the set can hold, by bit.
const NAMES: [&str; 5] = ["roots", "sampling", "elicitation", "tasks", "experimental"];
/// Elicitation in form mode: `elicitation: {}` (the 2025-06-18 shape) or `elicitation: {form: ...}`.
const FORM: u8 = 1 << 5;
/// Every bit in use.
pub const ALL_BITS: u8 = (1 << 6) - 1;

impl ClientCaps {
    /// The capabilities a client declares (`initialize`'s `params.capabilities`, or the stateless
    /// request's `_meta` entry); anything but an object declares none.
    pub fn from_json(declared: Option<&Value>) -> ClientCaps {
        let Some(map) = declared.and_then(Value::as_object) else {
            return ClientCaps(0);
        };
        let mut bits = 0;
        for (i, name) in NAMES.iter().enumerate() {
            if map.get(*name).is_some_and(|v| !v.is_null()) {
                bits |= 1 << i;
            }
        }
        if let Some(e) = map.get("elicitation").and_then(Value::as_object) {
            if e.is_empty() || e.get("form").is_some_and(|v| !v.is_null()) {
                bits |= FORM;
            }
        }
        ClientCaps(bits)
    }

    /// The set from its stored bits (unknown bits are dropped).
    pub fn from_bits(bits: u8) -> ClientCaps {
        ClientCaps(bits & ALL_BITS)
    }

    /// The set as a session store kept it (its bits as written, as `Deserialize` read them).
    pub fn from_stored(bits: u8) -> ClientCaps {
        ClientCaps(bits)
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    /// Whether the client declared capability `name`; `None` for a name the set does not keep.
    pub fn has(self, name: &str) -> Option<bool> {
        NAMES.iter().position(|n| *n == name).map(|i| self.0 & (1 << i) != 0)
    }

    /// Whether the client can answer an elicitation form.
    pub fn elicits_forms(self) -> bool {
        self.0 & FORM != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn presence_counts_and_elicitation_needs_form_mode() {
        let c = ClientCaps::from_json(Some(&json!({"sampling": {}, "roots": {"listChanged": true}})));
        assert_eq!((c.has("sampling"), c.has("roots"), c.has("elicitation")), (Some(true), Some(true), Some(false)));
        assert!(!c.elicits_forms());
        assert_eq!(c.has("somethingElse"), None);
        for (elicitation, form) in [
            (json!({}), true),
            (json!({"form": {}}), true),
            (json!({"form": {}, "url": {}}), true),
            (json!({"url": {}}), false),
        ] {
            let c = ClientCaps::from_json(Some(&json!({ "elicitation": elicitation })));
            assert_eq!(c.has("elicitation"), Some(true));
            assert_eq!(c.elicits_forms(), form, "{elicitation}");
        }
        assert_eq!(ClientCaps::from_json(Some(&json!("x"))), ClientCaps::default());
        assert_eq!(ClientCaps::from_json(Some(&json!({"sampling": null}))), ClientCaps::default());
        assert_eq!(ClientCaps::from_json(None), ClientCaps::default());
    }

    #[test]
    fn bits_round_trip() {
        let c = ClientCaps::from_json(Some(&json!({"elicitation": {}, "tasks": {}, "experimental": {"x": {}}})));
        assert_eq!(ClientCaps::from_bits(c.bits()), c);
        assert_eq!(ClientCaps::from_bits(0xff).bits(), ALL_BITS);
    }
}
