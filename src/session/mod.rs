//! MCP sessions: what a session is, what an exchange asks of the store, and the three stores.
//!
//! The transport never touches a store: it asks for a [`SessionOp`] and resumes with a [`SessionOutcome`].
//! The store chosen at configure time ([`SessionStore`]) turns the operation into work:
//!
//! | store    | where a session lives                   | valid on                    | per-request I/O            |
//! |----------|-----------------------------------------|-----------------------------|----------------------------|
//! | `local`  | this Envoy's shared data ([`local`])    | every worker of one process | shared data, synchronous   |
//! | `signed` | the session id itself ([`signed`])      | every replica with the key  | a revocation lookup, local |
//! | `redis`  | Redis, through Higress's host ([`redis`]) | every replica on that Redis | one Redis round trip       |
//!
//! Synchronous work completes at once ([`Started::Done`]); a Redis operation hands the host a command
//! ([`Started::Redis`]) and finishes when the reply comes back ([`SessionStore::on_redis_reply`]).

pub mod limits;
pub mod local;
pub mod redis;
pub mod signed;

use crate::config::{SessionsConfig, StoreKind};
use serde_json::Value;
use std::fmt;

/// One client session, as the exchange sees it. Stored as a JSON object of one-letter keys (`s`, `v`, `l`,
/// `b`, `c`, `i`, in that order; an unset option is left out), written and read by hand ([`Session::encode`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// The server the session was opened on; a session id is not valid on another server.
    pub server: String,
    /// The negotiated protocol revision.
    pub version: String,
    /// The client's `logging/setLevel`, where the store keeps it (not in a signed id, which cannot change).
    pub log_level: Option<crate::notify::LogLevel>,
    /// A proxied server's own `Mcp-Session-Id` for this session (`type: mcp-proxy`): kept with ours, in
    /// whichever store holds ours, so any worker or replica can continue the backend's session.
    pub backend: Option<String>,
    /// The capabilities the client declared in `initialize`; `None` for a session opened before they were
    /// kept (every input request is then asked, as before).
    pub client: Option<crate::mcp::ClientCaps>,
    /// A proxied server's session: the client's `initialize` params (JSON), with which the gateway
    /// re-initialises a backend that forgot the session ([`crate::proxy::reinit`]). Not in a signed id.
    pub init: Option<String>,
}

impl Session {
    /// A new session of `server` at `version`.
    pub fn new(server: impl Into<String>, version: impl Into<String>) -> Session {
        Session {
            server: server.into(),
            version: version.into(),
            log_level: None,
            backend: None,
            client: None,
            init: None,
        }
    }
}

impl Session {
    /// The compact JSON kept by the local and Redis stores (one line: JSON escapes newlines).
    pub fn encode(&self) -> String {
        let mut m = serde_json::Map::new();
        m.insert("s".into(), Value::String(self.server.clone()));
        m.insert("v".into(), Value::String(self.version.clone()));
        if let Some(l) = self.log_level {
            m.insert("l".into(), Value::String(l.as_str().into()));
        }
        if let Some(b) = &self.backend {
            m.insert("b".into(), Value::String(b.clone()));
        }
        if let Some(c) = self.client {
            m.insert("c".into(), Value::from(c.bits()));
        }
        if let Some(i) = &self.init {
            m.insert("i".into(), Value::String(i.clone()));
        }
        serde_json::to_string(&Value::Object(m)).unwrap_or_default()
    }

    /// Reads a stored session; foreign bytes mean "no session". Read from a `Value` by hand, as the derived
    /// `Deserialize` read it (a missing or `null` optional field is `None`, a mistyped one refuses the whole):
    /// the derived one instantiated serde_json's parser once more (11 KB of the module).
    pub fn decode(text: &str) -> Option<Session> {
        let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(text.as_bytes()) else { return None };
        let text = |key: &str| m.get(key).map(|v| v.as_str().map(str::to_string));
        let optional = |key: &str| match m.get(key) {
            None | Some(Value::Null) => Some(None),
            Some(v) => v.as_str().map(|s| Some(s.to_string())),
        };
        let log_level = match m.get("l") {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_str().and_then(crate::notify::LogLevel::parse)?),
        };
        let client = match m.get("c") {
            None | Some(Value::Null) => None,
            Some(v) => Some(crate::mcp::ClientCaps::from_stored(u8::try_from(v.as_u64()?).ok()?)),
        };
        Some(Session {
            server: text("s")??,
            version: text("v")??,
            log_level,
            backend: optional("b")?,
            client,
            init: optional("i")?,
        })
    }
}

/// What an exchange asks of the session store.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionOp {
    /// Start a session (`initialize`); the store picks the id.
    Create(Session),
    /// Find a live session of `server`, extending its idle expiry where the store slides it.
    Open { id: String, server: String },
    /// End a session of `server` (`DELETE`).
    Delete { id: String, server: String },
    /// Replace a live session's data (its log level), keeping its expiry; answered `Found` or `NotFound`.
    Update { id: String, session: Session },
    /// As `Update`, only while the session still stands for backend session `was` (a re-initialisation's
    /// new one in its place); answered `Found` with the session as it now is: `session`, or the one another
    /// re-initialisation of the same forgotten backend session stored first.
    Rebind { id: String, was: Option<String>, session: Session },
}

/// What the store answers.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionOutcome {
    Created(String),
    Found(Session),
    Deleted,
    /// Unknown, expired, deleted, tampered with, or opened on another server: all the same to a client.
    NotFound,
    /// The store could not answer; the request fails, the session (if any) is untouched.
    Failed(StoreError),
    /// A limit refused a new session.
    Refused(limits::Refusal),
}

/// A store failure, worded for the client and the log; never carries a credential.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The compare-and-swap key-value space of one process: Envoy's shared data, or memory in tests.
pub trait KeyValue {
    /// The value (empty when absent) and its CAS token (`None` when absent).
    fn get(&self, key: &str) -> (Vec<u8>, Option<u32>);
    /// Writes the value; with `cas`, only if the key is still at that version. `Ok(false)` on a CAS mismatch.
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, String>;
}

/// What a store may use synchronously while it works: the host's clock, randomness and shared data.
pub trait Env {
    fn now_ms(&self) -> u64;
    /// Fills `buf` with secure random bytes; `false` when the host has none.
    fn random(&mut self, buf: &mut [u8]) -> bool;
    fn kv(&mut self) -> &mut dyn KeyValue;
}

/// The host's clock as one callback sees it: read once, the first time it is asked for (each read is a
/// hostcall, and a callback takes microseconds), then the same instant for the rest of the callback.
#[derive(Debug, Default)]
pub struct CallbackClock(std::cell::Cell<Option<u64>>);

impl CallbackClock {
    /// The callback's instant: `read()`'s the first time, the same one after.
    pub fn get(&self, read: impl FnOnce() -> u64) -> u64 {
        if let Some(now) = self.0.get() {
            return now;
        }
        let now = read();
        self.0.set(Some(now));
        now
    }
}

/// How a store operation proceeds.
#[derive(Debug)]
pub enum Started {
    Done(SessionOutcome),
    /// Send `pending.command` to Redis, then report the reply with [`SessionStore::on_redis_reply`].
    Redis(redis::Pending),
}

/// The session store chosen by `sessions.store`, with everything it needs derived at configure time, and
/// the limits on new sessions.
#[derive(Debug)]
pub struct SessionStore {
    backend: Backend,
    limits: limits::Limits,
}

#[derive(Debug)]
enum Backend {
    Local(local::LocalStore),
    Signed(signed::SignedStore),
    Redis(redis::RedisStore),
}

impl SessionStore {
    /// Builds the configured store; keys are decoded and derived here, once.
    pub fn from_config(cfg: &SessionsConfig) -> Result<SessionStore, (String, String)> {
        let ttl_ms = cfg.ttl_seconds.saturating_mul(1000);
        let limits = limits::Limits { max_sessions: cfg.max_sessions, max_new_per_second: cfg.max_new_per_second };
        let backend = match cfg.store {
            StoreKind::Local => Backend::Local(local::LocalStore::new(ttl_ms, limits)),
            StoreKind::Signed => Backend::Signed(signed::SignedStore::new(&cfg.signing_keys, ttl_ms)?),
            StoreKind::Redis => {
                let Some(r) = &cfg.redis else {
                    return Err(("sessions.redis".into(), "store: redis needs a `redis` block".into()));
                };
                Backend::Redis(redis::RedisStore::new(r, ttl_ms))
            }
        };
        Ok(SessionStore { backend, limits })
    }

    /// The Redis connection the host must set up at configure time, if this store uses one.
    pub fn redis(&self) -> Option<&redis::RedisStore> {
        match &self.backend {
            Backend::Redis(r) => Some(r),
            _ => None,
        }
    }

    /// Whether a session's data can change after `initialize` ([`SessionOp::Update`]): not in a signed id.
    pub fn updatable(&self) -> bool {
        !matches!(self.backend, Backend::Signed(_))
    }

    /// Name of the store, for logs.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Local(_) => "local",
            Backend::Signed(_) => "signed",
            Backend::Redis(_) => "redis",
        }
    }

    /// Makes sure the store's shared-data keys exist before traffic arrives (see [`local::Buckets::prepare`]).
    pub fn prepare(&self, kv: &mut dyn KeyValue) {
        match self.backend {
            Backend::Local(_) => local::SESSIONS.prepare(kv),
            Backend::Signed(_) => local::REVOKED.prepare(kv),
            Backend::Redis(_) => {}
        }
    }

    /// Removes expired entries from a slice of the shared-data buckets; hosts call it on every tick.
    /// Returns how many it removed.
    pub fn sweep(&self, kv: &mut dyn KeyValue, now_ms: u64) -> usize {
        match &self.backend {
            Backend::Local(s) => s.sweep(kv, now_ms),
            Backend::Signed(_) => local::REVOKED.sweep_step(kv, now_ms).len(),
            Backend::Redis(_) => 0,
        }
    }

    /// Starts an operation. A new session first passes the rate limit, whatever the store.
    pub fn start(&self, op: SessionOp, env: &mut dyn Env) -> Started {
        if let SessionOp::Create(session) = &op {
            let now = env.now_ms();
            if let Err(refusal) = self.limits.admit_new(env.kv(), &session.server, now) {
                return Started::Done(SessionOutcome::Refused(refusal));
            }
        }
        match &self.backend {
            Backend::Local(s) => Started::Done(s.run(op, env)),
            Backend::Signed(s) => Started::Done(s.run(op, env)),
            Backend::Redis(s) => s.start(op, env),
        }
    }

    /// Finishes a Redis operation with the host's answer.
    pub fn on_redis_reply(&self, pending: &redis::Pending, answer: redis::Answer<'_>) -> redis::Next {
        match &self.backend {
            Backend::Redis(s) => s.finish(pending, answer),
            _ => redis::Next::Done(SessionOutcome::Failed(StoreError("unexpected Redis reply".into()))),
        }
    }
}

/// Whether a client-supplied id could be one of ours at all: visible ASCII (as MCP requires) and short.
/// Anything else is unknown without asking a store.
pub fn is_plausible_id(id: &str) -> bool {
    (1..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// 16 random bytes as 32 lower-case hex characters: the id of a local or Redis session.
pub fn random_id(env: &mut dyn Env) -> Option<String> {
    let mut bytes = [0u8; 16];
    env.random(&mut bytes).then(|| bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates the shared-data entry `key` of a per-Envoy secret, empty, if it does not exist: hosts call it at
/// configure time, so that the first worker to need the secret can compare-and-swap it in (a write to a
/// missing key is unconditional in Envoy).
pub fn prepare_secret(kv: &mut dyn KeyValue, key: &str) {
    if kv.get(key).1.is_none() {
        let _ = kv.set(key, b"", None);
    }
}

/// This Envoy's 32-byte secret under shared-data entry `key`: read, or created there by the first worker
/// that needs it; `None` when the host has no randomness or the entry stays contended.
pub fn shared_secret(env: &mut dyn Env, key: &str) -> Option<[u8; 32]> {
    for _ in 0..4 {
        let (value, cas) = env.kv().get(key);
        if let Ok(secret) = <[u8; 32]>::try_from(value.as_slice()) {
            return Some(secret);
        }
        let mut fresh = [0u8; 32];
        if !env.random(&mut fresh) {
            return None;
        }
        match env.kv().set(key, &fresh, cas) {
            // Written over a missing entry: read back what is there now, in case another worker wrote too.
            Ok(true) if cas.is_none() => continue,
            Ok(true) => return Some(fresh),
            Ok(false) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// Memory stand-ins for the host, for tests and native tools.
pub mod memory {
    use super::{Env, KeyValue};
    use std::collections::HashMap;

    /// A [`KeyValue`] with CAS semantics like Envoy's (a missing key is written whatever the CAS).
    #[derive(Debug, Default)]
    pub struct MemoryKv {
        pub map: HashMap<String, (Vec<u8>, u32)>,
        next: u32,
    }

    impl KeyValue for MemoryKv {
        fn get(&self, key: &str) -> (Vec<u8>, Option<u32>) {
            match self.map.get(key) {
                Some((v, cas)) => (v.clone(), Some(*cas)),
                None => (Vec::new(), None),
            }
        }
        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, String> {
            if let (Some(expected), Some((_, current))) = (cas, self.map.get(key)) {
                if *current != expected {
                    return Ok(false);
                }
            }
            self.next += 1;
            self.map.insert(key.to_string(), (value.to_vec(), self.next));
            Ok(true)
        }
    }

    /// A clock the test moves, counter "randomness", and a [`MemoryKv`].
    #[derive(Debug, Default)]
    pub struct MemoryEnv {
        pub now_ms: u64,
        pub kv: MemoryKv,
        pub counter: u64,
    }

    impl Env for MemoryEnv {
        fn now_ms(&self) -> u64 {
            self.now_ms
        }
        fn random(&mut self, buf: &mut [u8]) -> bool {
            self.counter += 1;
            let c = self.counter.to_le_bytes();
            for (i, b) in buf.iter_mut().enumerate() {
                *b = c[i % 8] ^ (i / 8) as u8;
            }
            true
        }
        fn kv(&mut self) -> &mut dyn KeyValue {
            &mut self.kv
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryEnv;
    use super::*;

    #[test]
    fn sessions_encode_on_one_line() {
        let s = Session::new("a\nb", "2025-06-18");
        assert!(!s.encode().contains('\n'));
        assert_eq!(Session::decode(&s.encode()), Some(s));
        assert_eq!(Session::decode("garbage"), None);
        let mut with_caps = Session::new("a", "2025-11-25");
        with_caps.client = Some(crate::mcp::ClientCaps::from_json(Some(&serde_json::json!({"elicitation": {}}))));
        assert_eq!(Session::decode(&with_caps.encode()), Some(with_caps));
    }

    #[test]
    fn decoding_reads_what_was_stored_and_nothing_mistyped() {
        let mut full = Session::new("s1", "2025-06-18");
        full.log_level = Some(crate::notify::LogLevel::Warning);
        full.backend = Some("b-1".into());
        full.client = Some(crate::mcp::ClientCaps::from_bits(0b10_0101));
        full.init = Some("{}".into());
        // The text the derived `Serialize` wrote, which stores already hold.
        assert_eq!(full.encode(), r#"{"s":"s1","v":"2025-06-18","l":"warning","b":"b-1","c":37,"i":"{}"}"#);
        assert_eq!(Session::new("a", "b").encode(), r#"{"s":"a","v":"b"}"#);
        assert_eq!(Session::decode(&full.encode()), Some(full.clone()));
        assert_eq!(
            Session::decode(r#"{"s":"s1","v":"x","l":null,"b":null,"c":null,"i":null,"z":[1]}"#),
            Some(Session::new("s1", "x"))
        );
        for foreign in [
            r#"{"v":"x"}"#,
            r#"{"s":"s1"}"#,
            r#"{"s":1,"v":"x"}"#,
            r#"{"s":"s1","v":"x","l":"loud"}"#,
            r#"{"s":"s1","v":"x","l":3}"#,
            r#"{"s":"s1","v":"x","b":3}"#,
            r#"{"s":"s1","v":"x","i":{}}"#,
            r#"{"s":"s1","v":"x","c":256}"#,
            r#"{"s":"s1","v":"x","c":-1}"#,
            r#"{"s":"s1","v":"x","c":1.5}"#,
            r#"{"s":"s1","v":"x","c":"1"}"#,
            "[]",
            "",
        ] {
            assert_eq!(Session::decode(foreign), None, "{foreign}");
        }
    }

    #[test]
    fn a_callback_reads_the_clock_once() {
        // The host's clock cache copied the cell's value and filled the copy, so every call read the clock
        // (eight hostcalls per `tools/call` in Envoy instead of three).
        let clock = CallbackClock::default();
        let reads = std::cell::Cell::new(0u64);
        let read = || {
            reads.set(reads.get() + 1);
            1_000 + reads.get()
        };
        assert_eq!((clock.get(read), clock.get(read), clock.get(read)), (1_001, 1_001, 1_001));
        assert_eq!(reads.get(), 1);
    }

    #[test]
    fn ids_are_visible_ascii() {
        let mut env = MemoryEnv::default();
        let a = random_id(&mut env).unwrap();
        let b = random_id(&mut env).unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(is_plausible_id(&a));
        assert!(!is_plausible_id("") && !is_plausible_id("a b") && !is_plausible_id(&"a".repeat(129)));
    }
}
