//! Signed sessions (`store: signed`): the session id carries the session, authenticated with a key from
//! config, so every replica that has the key accepts it and no store is consulted.
//!
//! An id is `base64url(payload || tag)`:
//!
//! ```text
//! payload  format (1) = 1 | key id (4) | nonce (12) | expires_ms (8, big-endian) | revision (4)
//! tag      HMAC-SHA256(session key, payload || server name), first 16 bytes
//! revision yyyymmdd in the low 25 bits; bit 31 set: the client's capabilities are kept, in bits 25..30
//!          ([`crate::mcp::ClientCaps`]; ids issued before they were kept have the bit clear)
//! ```
//!
//! A session bound to a proxied server's own session (`Session::backend`) uses format 2: the payload goes
//! on with the backend's id (at most [`MAX_BACKEND`] bytes), authenticated with the rest. It is visible
//! to the client (base64url, not encrypted), and cannot be changed by it.
//!
//! The server name is authenticated but not carried (the request path names it), so an id opened on one
//! server fails verification on another. Each configured key is turned into a session key and a key id
//! with HMAC-SHA256 under fixed labels, once, at configure time; per request the precomputed keyed state
//! is cloned, so no key derivation runs on the request path. The first key signs; every key verifies,
//! which is how keys rotate.
//!
//! The expiry is fixed when the session is created (an id cannot change under a client), so a signed
//! session lives `ttlSeconds` from `initialize`, used or not. `DELETE` cannot reach other replicas: it
//! records the id in this Envoy's revocation list ([`super::local::REVOKED`], shared by its workers) until
//! the id would have expired anyway.

use super::local::{Edit, REVOKED};
use super::{Env, Session, SessionOp, SessionOutcome, StoreError};
use crate::b64::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// Configured keys shorter than this are refused: a 256-bit key is what HMAC-SHA256 is built for.
pub const MIN_KEY_BYTES: usize = 32;
const FORMAT: u8 = 1;
/// A payload followed by a proxied server's session id.
const FORMAT_BOUND: u8 = 2;
/// The longest backend session id a signed id carries (which keeps ids near 128 characters or below).
pub const MAX_BACKEND: usize = 64;
const NONCE: usize = 12;
/// The bits of the revision word that hold the date; above them, the client's capabilities.
const DATE_BITS: u32 = (1 << 25) - 1;
const CAPS_KEPT: u32 = 1 << 31;
const CAPS_SHIFT: u32 = 25;
const PAYLOAD: usize = 1 + 4 + NONCE + 8 + 4;
const TAG: usize = 16;
/// Length of an id in characters: base64url without padding of payload and tag.
pub const ID_CHARS: usize = (PAYLOAD + TAG) * 4 / 3;

struct Key {
    id: [u8; 4],
    /// HMAC state already keyed with the session key; cloned per id.
    mac: HmacSha256,
}

/// The `signed` store: the keys, derived at configure time, and the session lifetime.
pub struct SignedStore {
    keys: Vec<Key>,
    ttl_ms: u64,
}

impl fmt::Debug for SignedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("SignedStore").field("keys", &self.keys.len()).field("ttl_ms", &self.ttl_ms).finish()
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// A configured key's bytes (any base64 alphabet, padded or not).
pub fn decode_key(text: &str) -> Option<Vec<u8>> {
    let t = text.trim();
    [&STANDARD, &URL_SAFE, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD].iter().find_map(|e| e.decode(t).ok())
}

fn revision_number(version: &str) -> Option<u32> {
    let digits = version.replace('-', "");
    (version.len() == 10 && digits.len() == 8).then(|| digits.parse().ok()).flatten()
}

fn revision_text(n: u32) -> Option<String> {
    let text = format!("{:04}-{:02}-{:02}", n / 10_000, n / 100 % 100, n % 100);
    crate::mcp::Revision::parse(&text).is_some().then_some(text)
}

impl SignedStore {
    /// Decodes and derives the keys. Errors name the field and never echo a key.
    pub fn new(keys: &[String], ttl_ms: u64) -> Result<SignedStore, (String, String)> {
        if keys.is_empty() {
            return Err((
                "sessions.signingKeys".into(),
                "store: signed needs at least one key (generate one with `openssl rand -base64 32`)".into(),
            ));
        }
        let mut derived: Vec<Key> = Vec::with_capacity(keys.len());
        for (i, text) in keys.iter().enumerate() {
            let field = format!("sessions.signingKeys[{i}]");
            let Some(secret) = decode_key(text) else {
                return Err((field, "is not base64 (generate a key with `openssl rand -base64 32`)".into()));
            };
            if secret.len() < MIN_KEY_BYTES {
                return Err((field, format!("decodes to {} bytes; at least {MIN_KEY_BYTES} are needed", secret.len())));
            }
            let session_key = hmac(&secret, &[b"mcp-gateway/session-id/v1"]);
            let kid = hmac(&secret, &[b"mcp-gateway/key-id/v1"]);
            let id = [kid[0], kid[1], kid[2], kid[3]];
            if derived.iter().any(|k| k.id == id) {
                return Err((field, "repeats an earlier key".into()));
            }
            let mac = <HmacSha256 as Mac>::new_from_slice(&session_key).expect("HMAC takes keys of any length");
            derived.push(Key { id, mac });
        }
        Ok(SignedStore { keys: derived, ttl_ms })
    }

    fn tag(key: &Key, payload: &[u8], server: &str) -> HmacSha256 {
        let mut mac = key.mac.clone();
        mac.update(payload);
        mac.update(server.as_bytes());
        mac
    }

    /// The id of a new session, signed with the first key.
    pub fn issue(&self, session: &Session, expires_ms: u64, nonce: [u8; NONCE]) -> Option<String> {
        let key = self.keys.first()?;
        let mut revision = revision_number(&session.version)?;
        if revision > DATE_BITS {
            return None;
        }
        if let Some(caps) = session.client {
            revision |= CAPS_KEPT | (u32::from(caps.bits()) << CAPS_SHIFT);
        }
        let backend = session.backend.as_deref().unwrap_or("").as_bytes();
        if backend.len() > MAX_BACKEND {
            return None;
        }
        let mut bytes = Vec::with_capacity(PAYLOAD + backend.len() + TAG);
        bytes.push(if session.backend.is_some() { FORMAT_BOUND } else { FORMAT });
        bytes.extend_from_slice(&key.id);
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&expires_ms.to_be_bytes());
        bytes.extend_from_slice(&revision.to_be_bytes());
        bytes.extend_from_slice(backend);
        let tag = Self::tag(key, &bytes, &session.server).finalize().into_bytes();
        bytes.extend_from_slice(&tag[..TAG]);
        Some(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The session an id stands for on `server`, and its expiry; `None` for anything not issued by one of
    /// our keys for that server, or expired.
    pub fn verify(&self, id: &str, server: &str, now_ms: u64) -> Option<(Session, u64)> {
        if id.len() < ID_CHARS || id.len() > ID_CHARS + MAX_BACKEND * 4 / 3 + 2 {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(id).ok()?;
        let (payload, tag) = bytes.split_at(bytes.len().checked_sub(TAG)?);
        let backend = match (payload.first(), payload.len()) {
            (Some(&FORMAT), PAYLOAD) => None,
            (Some(&FORMAT_BOUND), n) if n > PAYLOAD => Some(&payload[PAYLOAD..]),
            _ => return None,
        };
        let key = self.keys.iter().find(|k| k.id == payload[1..5])?;
        Self::tag(key, payload, server).verify_truncated_left(tag).ok()?;
        let expires_ms = u64::from_be_bytes(payload[17..25].try_into().ok()?);
        if now_ms >= expires_ms {
            return None;
        }
        let word = u32::from_be_bytes(payload[25..29].try_into().ok()?);
        let version = revision_text(word & DATE_BITS)?;
        let mut session = Session::new(server, version);
        if word & CAPS_KEPT != 0 {
            session.client = Some(crate::mcp::ClientCaps::from_bits(((word & !CAPS_KEPT) >> CAPS_SHIFT) as u8));
        }
        session.backend = match backend {
            Some(b) => Some(String::from_utf8(b.to_vec()).ok()?),
            None => None,
        };
        Some((session, expires_ms))
    }

    /// Performs an operation; only a revocation touches (local) shared data.
    pub fn run(&self, op: SessionOp, env: &mut dyn Env) -> SessionOutcome {
        let now = env.now_ms();
        match op {
            SessionOp::Create(session) => {
                let mut nonce = [0u8; NONCE];
                if !env.random(&mut nonce) {
                    return SessionOutcome::Failed(StoreError("no randomness available for a session id".into()));
                }
                match self.issue(&session, now.saturating_add(self.ttl_ms), nonce) {
                    Some(id) => SessionOutcome::Created(id),
                    None => SessionOutcome::Failed(StoreError(format!("cannot sign revision {}", session.version))),
                }
            }
            SessionOp::Open { id, server } => match self.verify(&id, &server, now) {
                Some((session, _)) if REVOKED.get(env.kv(), &id, now).is_none() => SessionOutcome::Found(session),
                _ => SessionOutcome::NotFound,
            },
            SessionOp::Delete { id, server } => {
                let Some((_, expires_ms)) = self.verify(&id, &server, now) else {
                    return SessionOutcome::NotFound;
                };
                let revoke = |current: Option<(u64, &str)>| match current {
                    Some(_) => (Edit::Keep, SessionOutcome::NotFound),
                    None => (Edit::Put { expires_ms, payload: String::new() }, SessionOutcome::Deleted),
                };
                REVOKED
                    .update(env.kv(), &id, now, revoke)
                    .map_or_else(|e| SessionOutcome::Failed(StoreError(e)), |(outcome, _)| outcome)
            }
            // The id is the session: it cannot change after `initialize` (see `SessionStore::updatable`).
            SessionOp::Update { .. } | SessionOp::Rebind { .. } => SessionOutcome::Failed(StoreError(
                "signed sessions cannot change after initialize (their id is their state)".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::memory::MemoryEnv;
    use super::*;

    const K1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
    const K2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA"; // 32 bytes, unpadded

    fn store(keys: &[&str]) -> SignedStore {
        SignedStore::new(&keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(), 60_000).unwrap()
    }

    fn env() -> MemoryEnv {
        let mut env = MemoryEnv { now_ms: 1_000_000, ..Default::default() };
        REVOKED.prepare(&mut env.kv);
        env
    }

    #[test]
    fn a_bound_session_carries_the_backend_id_authenticated() {
        const NOW: u64 = 1_000_000;
        let st = store(&[K1]);
        let mut bound = s("demo");
        bound.backend = Some("2f6e1c0a-backend".into());
        let id = st.issue(&bound, NOW + 1000, [3; NONCE]).unwrap();
        assert!(crate::session::is_plausible_id(&id), "{id}");
        assert_eq!(st.verify(&id, "demo", NOW).unwrap().0, bound);
        assert!(st.verify(&id, "other", NOW).is_none());
        // Another backend id under the same tag fails.
        let mut bytes = URL_SAFE_NO_PAD.decode(&id).unwrap();
        bytes[PAYLOAD] ^= 1;
        assert!(st.verify(&URL_SAFE_NO_PAD.encode(&bytes), "demo", NOW).is_none());
        bound.backend = Some("x".repeat(MAX_BACKEND + 1));
        assert!(st.issue(&bound, NOW + 1000, [3; NONCE]).is_none());
    }

    #[test]
    fn the_client_capabilities_ride_in_the_revision_word() {
        const NOW: u64 = 1_000_000;
        let st = store(&[K1]);
        let mut with = Session::new("demo", "2025-11-25");
        for caps in
            [serde_json::json!({}), serde_json::json!({"elicitation": {"url": {}}, "roots": {}, "experimental": {}})]
        {
            with.client = Some(crate::mcp::ClientCaps::from_json(Some(&caps)));
            let id = st.issue(&with, NOW + 1000, [5; NONCE]).unwrap();
            assert_eq!(id.len(), ID_CHARS);
            assert_eq!(st.verify(&id, "demo", NOW).unwrap().0, with);
        }
        // An id without them (issued before they were kept) opens with none known.
        let old = st.issue(&Session::new("demo", "2025-11-25"), NOW + 1000, [5; NONCE]).unwrap();
        assert_eq!(st.verify(&old, "demo", NOW).unwrap().0.client, None);
        // The bits are authenticated like the rest.
        let mut bytes = URL_SAFE_NO_PAD.decode(&old).unwrap();
        bytes[25] |= 0x80;
        assert!(st.verify(&URL_SAFE_NO_PAD.encode(&bytes), "demo", NOW).is_none());
    }

    fn s(server: &str) -> Session {
        Session::new(server, "2025-06-18")
    }

    fn create(store: &SignedStore, env: &mut MemoryEnv) -> String {
        match store.run(SessionOp::Create(s("demo")), env) {
            SessionOutcome::Created(id) => id,
            other => panic!("{other:?}"),
        }
    }

    fn open(store: &SignedStore, env: &mut MemoryEnv, id: &str, server: &str) -> SessionOutcome {
        store.run(SessionOp::Open { id: id.into(), server: server.into() }, env)
    }

    #[test]
    fn ids_verify_on_every_store_with_the_key_and_only_there() {
        let a = store(&[K1]);
        let mut env = env();
        let id = create(&a, &mut env);
        assert_eq!(id.len(), ID_CHARS);
        assert!(super::super::is_plausible_id(&id));
        assert_ne!(id, create(&a, &mut env), "every id is unique");
        // Another replica with the same key: no shared state at all.
        let mut other_env = MemoryEnv { now_ms: env.now_ms, ..Default::default() };
        assert_eq!(open(&store(&[K1]), &mut other_env, &id, "demo"), SessionOutcome::Found(s("demo")));
        assert_eq!(open(&a, &mut env, &id, "other"), SessionOutcome::NotFound, "foreign server");
        assert_eq!(open(&store(&[K2]), &mut env, &id, "demo"), SessionOutcome::NotFound, "unknown key");
    }

    #[test]
    fn tampering_anywhere_is_refused() {
        let a = store(&[K1]);
        let mut env = env();
        let id = create(&a, &mut env);
        let bytes = URL_SAFE_NO_PAD.decode(&id).unwrap();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                let forged = URL_SAFE_NO_PAD.encode(&b);
                assert_eq!(open(&a, &mut env, &forged, "demo"), SessionOutcome::NotFound, "byte {i}");
            }
        }
        for bad in ["", "x", &id[..id.len() - 1], &format!("{id}A"), &id.replace(|_| true, "!")] {
            assert_eq!(open(&a, &mut env, bad, "demo"), SessionOutcome::NotFound);
        }
    }

    #[test]
    fn ids_expire_at_a_fixed_time() {
        let a = store(&[K1]);
        let mut env = env();
        let id = create(&a, &mut env);
        env.now_ms += 59_999;
        assert!(matches!(open(&a, &mut env, &id, "demo"), SessionOutcome::Found(_)));
        env.now_ms += 1;
        assert_eq!(open(&a, &mut env, &id, "demo"), SessionOutcome::NotFound);
    }

    #[test]
    fn keys_rotate_the_first_signs_every_one_verifies() {
        let mut env = env();
        let old_id = create(&store(&[K1]), &mut env);
        let rotated = store(&[K2, K1]);
        assert!(matches!(open(&rotated, &mut env, &old_id, "demo"), SessionOutcome::Found(_)));
        let new_id = create(&rotated, &mut env);
        assert!(matches!(open(&store(&[K2]), &mut env, &new_id, "demo"), SessionOutcome::Found(_)));
        assert_eq!(open(&store(&[K1]), &mut env, &new_id, "demo"), SessionOutcome::NotFound);
    }

    #[test]
    fn delete_revokes_on_this_process_until_expiry() {
        let a = store(&[K1]);
        let mut env = env();
        let id = create(&a, &mut env);
        let del = |id: &str| SessionOp::Delete { id: id.into(), server: "demo".into() };
        assert_eq!(a.run(del(&id), &mut env), SessionOutcome::Deleted);
        assert_eq!(open(&a, &mut env, &id, "demo"), SessionOutcome::NotFound);
        assert_eq!(a.run(del(&id), &mut env), SessionOutcome::NotFound);
        let mut elsewhere = MemoryEnv { now_ms: env.now_ms, ..Default::default() };
        assert!(matches!(open(&a, &mut elsewhere, &id, "demo"), SessionOutcome::Found(_)), "other replicas");
        // The revocation is kept exactly as long as the id could be valid, then swept.
        env.now_ms += 60_000;
        let swept: usize = (0..super::super::local::BUCKETS)
            .step_by(128)
            .map(|_| REVOKED.sweep_step(&mut env.kv, env.now_ms).len())
            .sum();
        assert_eq!(swept, 1);
    }

    #[test]
    fn config_errors_name_the_key_and_never_echo_it() {
        let err =
            |keys: &[&str]| SignedStore::new(&keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(), 1).unwrap_err();
        assert_eq!(err(&[]).0, "sessions.signingKeys");
        let (field, msg) = err(&[K1, "c2hvcnQ="]);
        assert_eq!(field, "sessions.signingKeys[1]");
        assert!(msg.contains("5 bytes") && !msg.contains("c2hvcnQ"), "{msg}");
        assert!(err(&["not base64!"]).1.contains("openssl rand"));
        assert_eq!(err(&[K1, K1]).1, "repeats an earlier key");
        assert!(!format!("{:?}", store(&[K1])).contains("MDEy"));
    }

    #[test]
    fn revisions_round_trip() {
        for v in crate::mcp::Revision::all_names() {
            assert_eq!(revision_text(revision_number(v).unwrap()).as_deref(), Some(v));
        }
        assert_eq!(revision_number("1.0"), None);
        assert_eq!(revision_text(20991231), None);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const K1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const K2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA";
    const NOW: u64 = 1_700_000_000_000;

    fn store(keys: &[&str]) -> SignedStore {
        SignedStore::new(&keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(), 60_000).unwrap()
    }

    /// Ids a client could send: anything, anything of the right length and alphabet, and issued ids with one
    /// character changed.
    fn foreign_id() -> impl Strategy<Value = String> {
        let issued = store(&[K1]).issue(&Session::new("demo", "2025-06-18"), NOW + 1000, [7; NONCE]).unwrap();
        prop_oneof![
            ".{0,80}",
            "[A-Za-z0-9_-]{60}",
            "[A-Za-z0-9_=+/-]{58,62}",
            (0..ID_CHARS, "[A-Za-z0-9_-]").prop_filter_map("a change", move |(i, c)| {
                let mut id = issued.clone().into_bytes();
                (id[i] != c.as_bytes()[0]).then(|| {
                    id[i] = c.as_bytes()[0];
                    String::from_utf8(id).unwrap()
                })
            }),
        ]
    }

    proptest! {
        #![proptest_config(crate::strategies::cases(2000))]

        /// Guards the signed store's codec against forged ids: whatever a client sends as `Mcp-Session-Id`
        /// (any text, well-formed base64url of the right length, an issued id with one character changed),
        /// it verifies to nothing, without a panic.
        #[test]
        fn ids_not_issued_never_verify(id in foreign_id(), server in prop_oneof![Just("demo".to_string()), ".{0,12}"]) {
            prop_assert_eq!(store(&[K1]).verify(&id, &server, NOW), None);
            prop_assert_eq!(store(&[K2, K1]).verify(&id, &server, NOW), None);
        }

        /// Guards the codec's round trip: an issued id is visible ASCII of the documented length and verifies to
        /// its session and expiry on the server it was issued for, with the key or a rotation that keeps it;
        /// never on another server, with other keys, or once expired.
        #[test]
        fn issued_ids_round_trip(
            server in ".{0,40}",
            other in ".{0,40}",
            version in prop::sample::select(crate::mcp::Revision::all_names()),
            nonce in any::<[u8; NONCE]>(),
            life in 1..u64::MAX / 2,
        ) {
            let session = Session::new(server.clone(), version.to_string());
            let expires = NOW.saturating_add(life);
            let id = store(&[K1]).issue(&session, expires, nonce).unwrap();
            prop_assert_eq!(id.len(), ID_CHARS);
            prop_assert!(super::super::is_plausible_id(&id));
            prop_assert_eq!(store(&[K1]).verify(&id, &server, NOW), Some((session.clone(), expires)));
            prop_assert_eq!(store(&[K2, K1]).verify(&id, &server, expires - 1), Some((session, expires)));
            prop_assert_eq!(store(&[K1]).verify(&id, &server, expires), None);
            prop_assert_eq!(store(&[K2]).verify(&id, &server, NOW), None);
            if other != server {
                prop_assert_eq!(store(&[K1]).verify(&id, &other, NOW), None);
            }
        }
    }
}
