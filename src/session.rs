//! MCP sessions: what a session records, how it is encoded, and the store interface.
//!
//! The core never performs store I/O itself: the transport asks the host to load, save or delete a session
//! (see [`crate::transport::Step`]) and resumes with the outcome. That keeps synchronous stores (Envoy shared
//! data) and asynchronous ones (Redis through the Higress host ABI) behind the same state machine.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One client session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    /// The server the session was opened on; a session id is not valid on another server.
    #[serde(rename = "s")]
    pub server: String,
    /// The negotiated protocol revision.
    #[serde(rename = "v")]
    pub version: String,
    /// Milliseconds since the Unix epoch after which the session is gone.
    #[serde(rename = "e")]
    pub expires_ms: u64,
}

impl Session {
    /// Serialized form kept in the store.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a stored session; empty or foreign bytes mean "no session".
    pub fn decode(bytes: &[u8]) -> Option<Session> {
        if bytes.is_empty() {
            return None;
        }
        serde_json::from_slice(bytes).ok()
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_ms
    }

    /// Sliding expiry is refreshed at most every tenth of the TTL, to keep store writes off most requests.
    pub fn needs_refresh(&self, now_ms: u64, ttl_ms: u64) -> bool {
        self.expires_ms.saturating_sub(now_ms) < ttl_ms - ttl_ms / 10
    }
}

/// Formats 16 random bytes as a session id: 32 lower-case hex characters (visible ASCII, as MCP requires).
pub fn format_id(random: [u8; 16]) -> String {
    random.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a client-supplied id has the shape of ours; anything else is unknown without a store lookup.
pub fn is_well_formed_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A synchronous session store (Envoy shared data, or memory in tests).
pub trait SessionStore {
    fn load(&self, id: &str) -> Result<Option<Session>, String>;
    fn save(&mut self, id: &str, session: &Session) -> Result<(), String>;
    fn delete(&mut self, id: &str) -> Result<(), String>;
}

/// An in-memory store, for tests and native tools.
#[derive(Debug, Default)]
pub struct MemoryStore {
    pub sessions: HashMap<String, Session>,
}

impl SessionStore for MemoryStore {
    fn load(&self, id: &str) -> Result<Option<Session>, String> {
        Ok(self.sessions.get(id).cloned())
    }
    fn save(&mut self, id: &str, session: &Session) -> Result<(), String> {
        self.sessions.insert(id.to_string(), session.clone());
        Ok(())
    }
    fn delete(&mut self, id: &str) -> Result<(), String> {
        self.sessions.remove(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_expires() {
        let s = Session { server: "a".into(), version: "2025-06-18".into(), expires_ms: 1000 };
        assert_eq!(Session::decode(&s.encode()), Some(s.clone()));
        assert_eq!(Session::decode(b""), None);
        assert_eq!(Session::decode(b"garbage"), None);
        assert!(!s.is_expired(999) && s.is_expired(1000));
        assert!(!s.needs_refresh(0, 1000) && s.needs_refresh(200, 1000));
    }

    #[test]
    fn ids_are_visible_ascii_hex() {
        let id = format_id([0xab; 16]);
        assert_eq!(id.len(), 32);
        assert!(is_well_formed_id(&id));
        assert!(!is_well_formed_id("../etc") && !is_well_formed_id(""));
    }
}
