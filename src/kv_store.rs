//! A session store over a key-value space with compare-and-swap: Envoy's shared data.
//!
//! Shared data is visible to every worker thread of one Envoy process, but keys never expire and cannot be
//! listed. So each session id is also recorded in one of 16 index shards (by its first hex digit), and a
//! periodic sweep walks the shards, blanks expired sessions and rewrites the shards without them. Writers
//! use compare-and-swap, so concurrent workers never lose each other's index entries.

use crate::session::{Session, SessionStore};

/// The compare-and-swap key-value space the store runs on.
pub trait KeyValue {
    /// The value (empty when absent) and its CAS token.
    fn get(&self, key: &str) -> (Vec<u8>, Option<u32>);
    /// Writes the value; with `cas`, only if the key is still at that version. `Ok(false)` on a CAS mismatch.
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, String>;
}

const SESSION_PREFIX: &str = "mcp-gateway/session/";
const INDEX_PREFIX: &str = "mcp-gateway/index/";
const SWEEP_LEASE_PREFIX: &str = "mcp-gateway/sweep-lease/";
/// Index shards: sessions are spread by the first hex digit of their id.
pub const SHARDS: usize = 16;
const CAS_RETRIES: usize = 16;

/// Sessions kept in a [`KeyValue`].
pub struct KvStore<K: KeyValue> {
    pub kv: K,
}

fn shard_of(id: &str) -> String {
    format!("{INDEX_PREFIX}{}", id.chars().next().unwrap_or('0'))
}

impl<K: KeyValue> KvStore<K> {
    pub fn new(kv: K) -> Self {
        KvStore { kv }
    }

    fn add_to_index(&mut self, id: &str) -> Result<(), String> {
        let key = shard_of(id);
        for _ in 0..CAS_RETRIES {
            let (mut value, cas) = self.kv.get(&key);
            if !value.is_empty() {
                value.push(b'\n');
            }
            value.extend_from_slice(id.as_bytes());
            if self.kv.set(&key, &value, cas)? {
                return Ok(());
            }
        }
        Err("session index is contended; try again".into())
    }

    /// Removes expired sessions from every shard (see [`Self::sweep_shard`]); returns how many.
    pub fn sweep(&mut self, now_ms: u64, period_ms: u64) -> usize {
        (0..SHARDS).map(|shard| self.sweep_shard(shard, now_ms, period_ms)).sum()
    }

    /// Removes the expired sessions of one index shard. Each shard is swept at most once per `period_ms`
    /// across all workers (a CAS-taken lease). Hosts sweep one shard per tick, so no single tick walks
    /// every session. Returns how many sessions it removed.
    pub fn sweep_shard(&mut self, shard: usize, now_ms: u64, period_ms: u64) -> usize {
        let digit = char::from_digit((shard % SHARDS) as u32, 16).unwrap_or('0');
        let lease_key = format!("{SWEEP_LEASE_PREFIX}{digit}");
        let (lease, cas) = self.kv.get(&lease_key);
        let last: u64 = std::str::from_utf8(&lease).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
        if now_ms < last.saturating_add(period_ms)
            || !matches!(self.kv.set(&lease_key, now_ms.to_string().as_bytes(), cas), Ok(true))
        {
            return 0;
        }
        let key = format!("{INDEX_PREFIX}{digit}");
        let (value, cas) = self.kv.get(&key);
        let text = String::from_utf8_lossy(&value).into_owned();
        let (keep, gone): (Vec<&str>, Vec<&str>) = text
            .lines()
            .filter(|l| !l.is_empty())
            .partition(|id| matches!(self.load(id), Ok(Some(s)) if !s.is_expired(now_ms)));
        // Rewrite the shard first: if another worker appended meanwhile, skip and retry next sweep.
        if gone.is_empty() || !matches!(self.kv.set(&key, keep.join("\n").as_bytes(), cas), Ok(true)) {
            return 0;
        }
        for id in &gone {
            let _ = self.kv.set(&format!("{SESSION_PREFIX}{id}"), b"", None);
        }
        gone.len()
    }
}

impl<K: KeyValue> SessionStore for KvStore<K> {
    fn load(&self, id: &str) -> Result<Option<Session>, String> {
        let (value, _) = self.kv.get(&format!("{SESSION_PREFIX}{id}"));
        Ok(Session::decode(&value))
    }

    fn save(&mut self, id: &str, session: &Session) -> Result<(), String> {
        let key = format!("{SESSION_PREFIX}{id}");
        let (existing, _) = self.kv.get(&key);
        self.kv.set(&key, &session.encode(), None)?;
        if existing.is_empty() {
            self.add_to_index(id)?;
        }
        Ok(())
    }

    fn delete(&mut self, id: &str) -> Result<(), String> {
        self.kv.set(&format!("{SESSION_PREFIX}{id}"), b"", None).map(|_| ())
    }
}

/// An in-memory [`KeyValue`] with CAS semantics like Envoy's, for tests.
#[derive(Debug, Default)]
pub struct MemoryKv {
    pub map: std::collections::HashMap<String, (Vec<u8>, u32)>,
}

impl KeyValue for MemoryKv {
    fn get(&self, key: &str) -> (Vec<u8>, Option<u32>) {
        match self.map.get(key) {
            Some((v, cas)) => (v.clone(), Some(*cas)),
            None => (Vec::new(), None),
        }
    }
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, String> {
        let current = self.map.get(key).map(|(_, c)| *c);
        if let Some(expected) = cas {
            if current.is_some_and(|c| c != expected) {
                return Ok(false);
            }
        }
        self.map.insert(key.to_string(), (value.to_vec(), current.unwrap_or(0) + 1));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(exp: u64) -> Session {
        Session { server: "s".into(), version: "2025-06-18".into(), expires_ms: exp }
    }

    #[test]
    fn saves_loads_deletes_and_indexes_once() {
        let mut st = KvStore::new(MemoryKv::default());
        st.save("a1", &session(100)).unwrap();
        st.save("a1", &session(200)).unwrap();
        st.save("a2", &session(100)).unwrap();
        assert_eq!(st.load("a1").unwrap(), Some(session(200)));
        assert_eq!(st.kv.get("mcp-gateway/index/a").0, b"a1\na2");
        st.delete("a1").unwrap();
        assert_eq!(st.load("a1").unwrap(), None);
    }

    #[test]
    fn sweep_removes_expired_sessions_once_per_period() {
        let mut st = KvStore::new(MemoryKv::default());
        st.save("b1", &session(100)).unwrap();
        st.save("b2", &session(1000)).unwrap();
        st.save("c1", &session(50)).unwrap();
        assert_eq!(st.sweep(500, 60), 2);
        assert_eq!(st.load("b1").unwrap(), None);
        assert_eq!(st.load("b2").unwrap(), Some(session(1000)));
        assert_eq!(st.kv.get("mcp-gateway/index/b").0, b"b2");
        assert_eq!(st.kv.get("mcp-gateway/index/c").0, b"");
        st.save("b3", &session(10)).unwrap();
        assert_eq!(st.sweep(520, 60), 0, "lease not yet expired");
        assert_eq!(st.sweep(600, 60), 1);
    }

    #[test]
    fn cas_mismatch_is_reported() {
        let mut kv = MemoryKv::default();
        assert!(kv.set("k", b"1", None).unwrap());
        let (_, cas) = kv.get("k");
        assert!(kv.set("k", b"2", cas).unwrap());
        assert!(!kv.set("k", b"3", cas).unwrap());
    }
}
