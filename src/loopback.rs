//! The gateway's own calls to itself: a virtual server reaches the tools of a `transport: sse` proxied
//! server through this Envoy's Streamable HTTP bridge ([`crate::proxy::bridge`]), POSTing to
//! `{prefix}/{name}` through its `gatewayCluster`. Only a client's request stream can carry an SSE
//! exchange, and the bridge gives each request one and answers it whole, which is what the plugin's HTTP
//! calls can deliver.
//!
//! Such a request is the gateway's own call, as its direct calls to a Streamable HTTP backend are: the
//! virtual server has applied the tool's guardrails itself, so the SSE server's admission and policy
//! (`auth`, `allowTools`, `toolOverrides`, `policy`, limits, guardrails) must not apply again. It proves
//! it with a pass in [`HEADER`] that clients cannot forge:
//!
//! ```text
//! pass  {expires_ms}.{base64url(tag)}.{virtual}
//! tag   HMAC-SHA256(loopback key, len(server) | server | expires_ms | len(virtual) | virtual), 32 bytes
//! ```
//!
//! A pass names the server it is for and the virtual server that calls (under the MAC: the bridge reports
//! the request as that virtual server's, in the access log and stats), and expires (the call's timeout and
//! [`SLACK_MS`] after it was made).
//! A request without a valid pass is served as any client's, so sending the header gains nothing; the
//! bridge never passes it on. Keys: the `signed` session store's `signingKeys` (every replica accepts the
//! pass; the first key signs, every key verifies), otherwise one random secret per Envoy in its shared data
//! ([`SHARED_KEY`]), which all its workers read.

use crate::b64::URL_SAFE_NO_PAD;
use crate::session::Env;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The request header that carries a pass.
pub const HEADER: &str = "x-mcp-gateway-loopback";
/// The shared-data key of the per-Envoy secret (when no `signingKeys` are configured).
pub const SHARED_KEY: &str = "mcp-gateway/loopback-key";
/// How long a pass outlives its call's timeout: the call's own retries (a list's next pages) reuse it.
pub const SLACK_MS: u64 = 60_000;
const LABEL: &[u8] = b"mcp-gateway/loopback/v1";

/// A derived loopback key.
#[derive(Clone)]
pub struct Key {
    /// HMAC state already keyed; cloned per pass.
    mac: HmacSha256,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("Key")
    }
}

impl Key {
    /// The loopback key of a secret: a label of its own, so that a pass is never a valid session id or
    /// input state, nor the other way round.
    pub fn new(secret: &[u8]) -> Key {
        let mut derived = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
        derived.update(LABEL);
        let derived = derived.finalize().into_bytes();
        Key { mac: <HmacSha256 as Mac>::new_from_slice(&derived).expect("HMAC takes keys of any length") }
    }

    fn tag(&self, server: &str, expires_ms: u64, caller: &str) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(&(server.len() as u64).to_be_bytes());
        mac.update(server.as_bytes());
        mac.update(&expires_ms.to_be_bytes());
        mac.update(&(caller.len() as u64).to_be_bytes());
        mac.update(caller.as_bytes());
        mac
    }

    /// A pass for virtual server `caller`'s calls to `server` until `expires_ms`.
    pub fn sign(&self, server: &str, caller: &str, expires_ms: u64) -> String {
        let tag = self.tag(server, expires_ms, caller).finalize().into_bytes();
        format!("{expires_ms}.{}.{caller}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The calling virtual server's name when `pass` is one of ours for `server`, still valid at `now_ms`
    /// (tags compared in constant time).
    pub fn verify<'p>(&self, pass: &'p str, server: &str, now_ms: u64) -> Option<&'p str> {
        let (expires, rest) = pass.split_once('.')?;
        let (tag, caller) = rest.split_once('.')?;
        let expires_ms = expires.parse::<u64>().ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let valid = now_ms <= expires_ms && self.tag(server, expires_ms, caller).verify_slice(&tag).is_ok();
        valid.then_some(caller)
    }
}

/// The loopback keys of a gateway whose virtual servers reach SSE servers.
#[derive(Debug)]
pub struct Keys {
    /// From `sessions.signingKeys`; empty: this Envoy's shared secret.
    configured: Vec<Key>,
    /// The key of this Envoy's shared secret, once this worker has read it: the secret never changes once
    /// written, so one shared-data read and one derivation per worker, not per request.
    shared: std::cell::OnceCell<Key>,
}

impl Keys {
    /// Keys from the signed session store's secrets (already validated by it), or none configured.
    pub fn from_secrets(secrets: &[Vec<u8>]) -> Keys {
        Keys { configured: secrets.iter().map(|s| Key::new(s)).collect(), shared: std::cell::OnceCell::new() }
    }

    /// Whether the host must prepare this Envoy's shared secret ([`crate::session::prepare_secret`]).
    pub fn shared(&self) -> bool {
        self.configured.is_empty()
    }

    /// The key passes are signed with; `None` when the host has no randomness for a shared secret.
    pub fn signer(&self, env: &mut dyn Env) -> Option<Key> {
        self.first(env).cloned()
    }

    /// The signing key, borrowed. This Envoy's secret is kept only once read: a worker that found no
    /// secret (no randomness) tries again on its next request.
    fn first(&self, env: &mut dyn Env) -> Option<&Key> {
        if let Some(k) = self.configured.first().or_else(|| self.shared.get()) {
            return Some(k);
        }
        let key = Key::new(&crate::session::shared_secret(env, SHARED_KEY)?);
        Some(self.shared.get_or_init(|| key))
    }

    /// The calling virtual server's name when `pass` lets a request to `server` in as the gateway's own call.
    pub fn admits<'p>(&self, env: &mut dyn Env, pass: &'p str, server: &str) -> Option<&'p str> {
        let now = env.now_ms();
        if self.configured.is_empty() {
            return self.first(env)?.verify(pass, server, now);
        }
        self.configured.iter().find_map(|k| k.verify(pass, server, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::memory::MemoryKv;
    use crate::session::KeyValue;

    struct TestEnv {
        now: u64,
        kv: Counted,
        random: bool,
    }

    /// Shared data that counts its reads (each one a hostcall in Envoy).
    #[derive(Default)]
    struct Counted {
        inner: MemoryKv,
        reads: std::cell::Cell<u32>,
    }

    impl KeyValue for Counted {
        fn get(&self, key: &str) -> (Vec<u8>, Option<u32>) {
            self.reads.set(self.reads.get() + 1);
            self.inner.get(key)
        }
        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, String> {
            self.inner.set(key, value, cas)
        }
    }

    impl Env for TestEnv {
        fn now_ms(&self) -> u64 {
            self.now
        }
        fn random(&mut self, buf: &mut [u8]) -> bool {
            buf.iter_mut().enumerate().for_each(|(i, b)| *b = i as u8 ^ 0x5a);
            self.random
        }
        fn kv(&mut self) -> &mut dyn KeyValue {
            &mut self.kv
        }
    }

    fn env(now: u64) -> TestEnv {
        TestEnv { now, kv: Counted::default(), random: true }
    }

    #[test]
    fn a_pass_is_valid_for_its_server_until_it_expires() {
        let k = Key::new(b"0123456789abcdef0123456789abcdef");
        let pass = k.sign("legacy", "v", 10_000);
        assert!(k.verify(&pass, "legacy", 9_999).is_some());
        assert!(k.verify(&pass, "legacy", 10_000).is_some());
        assert!(k.verify(&pass, "legacy", 10_001).is_none(), "expired");
        assert!(k.verify(&pass, "legacy2", 5_000).is_none(), "another server");
        assert!(k.verify(&pass, "legac", 5_000).is_none(), "another server");
    }

    #[test]
    fn a_tampered_or_foreign_pass_is_refused() {
        let k = Key::new(b"0123456789abcdef0123456789abcdef");
        let pass = k.sign("legacy", "v", 10_000);
        let (expires, rest) = pass.split_once('.').unwrap();
        let (tag, caller) = rest.split_once('.').unwrap();
        assert_eq!((expires, caller), ("10000", "v"));
        assert_eq!(k.verify(&pass, "legacy", 5_000), Some("v"));
        // A later expiry under the same tag, or another virtual server's name.
        assert!(k.verify(&format!("{}.{tag}.v", 20_000), "legacy", 5_000).is_none());
        assert!(k.verify(&format!("{expires}.{tag}.w"), "legacy", 5_000).is_none());
        assert!(k.verify(&format!("{expires}.{tag}.v."), "legacy", 5_000).is_none());
        assert!(k.verify(&format!("{expires}.{tag}"), "legacy", 5_000).is_none());
        // One character of the tag changed.
        let mut bytes = tag.as_bytes().to_vec();
        bytes[3] = if bytes[3] == b'A' { b'B' } else { b'A' };
        assert!(k.verify(&format!("{expires}.{}.v", String::from_utf8(bytes).unwrap()), "legacy", 5_000).is_none());
        // Another key's pass, a truncated tag, and junk.
        assert!(k
            .verify(&Key::new(b"another secret of thirty-two b!!").sign("legacy", "v", 10_000), "legacy", 5_000)
            .is_none());
        assert!(k.verify(&pass.replace(".v", ""), "legacy", 5_000).is_none());
        for junk in ["", ".", "10000", "10000.", "x.abc", "-1.abc", "10000.!!!"] {
            assert!(k.verify(junk, "legacy", 5_000).is_none(), "{junk:?}");
        }
    }

    #[test]
    fn configured_keys_sign_with_the_first_and_verify_with_any() {
        let (a, b) = (b"a".repeat(32), b"b".repeat(32));
        let old = Keys::from_secrets(std::slice::from_ref(&a));
        let rotated = Keys::from_secrets(&[b.clone(), a.clone()]);
        let mut e = env(1_000);
        let pass = old.signer(&mut e).unwrap().sign("s", "v", 2_000);
        assert!(rotated.admits(&mut e, &pass, "s").is_some(), "an old key still verifies");
        let pass = rotated.signer(&mut e).unwrap().sign("s", "v", 2_000);
        assert!(old.admits(&mut e, &pass, "s").is_none(), "the new key signs");
        assert!(e.kv.inner.map.is_empty(), "configured keys never touch shared data");
        assert_eq!(e.kv.reads.get(), 0);
    }

    #[test]
    fn without_configured_keys_the_workers_share_one_secret() {
        let keys = Keys::from_secrets(&[]);
        assert!(keys.shared());
        let mut e = env(1_000);
        crate::session::prepare_secret(&mut e.kv, SHARED_KEY);
        let pass = keys.signer(&mut e).unwrap().sign("s", "v", 2_000);
        // Another worker's `Keys` (the same config compiled again) reads the same secret.
        assert!(Keys::from_secrets(&[]).admits(&mut e, &pass, "s").is_some());
        assert_eq!(e.kv.get(SHARED_KEY).0.len(), 32);
        // A host without randomness has no key: nothing is admitted, nothing signed.
        let mut bare = TestEnv { random: false, ..env(1_000) };
        let fresh = Keys::from_secrets(&[]);
        assert!(fresh.signer(&mut bare).is_none());
        assert!(fresh.admits(&mut bare, &pass, "s").is_none());
    }

    #[test]
    fn a_worker_reads_the_shared_secret_once_it_is_there_and_then_never_again() {
        let keys = Keys::from_secrets(&[]);
        // No secret and no randomness yet: nothing kept, so the next request reads again.
        let mut e = TestEnv { random: false, ..env(1_000) };
        assert!(keys.signer(&mut e).is_none());
        let before = e.kv.reads.get();
        assert!(before > 0);
        assert!(keys.admits(&mut e, "1.x", "s").is_none());
        assert!(e.kv.reads.get() > before, "a worker without the key must read again");
        // The host's prepared secret: read once by this worker, then its derived key serves every request.
        crate::session::prepare_secret(&mut e.kv, SHARED_KEY);
        e.random = true;
        let reads = e.kv.reads.get();
        let pass = keys.signer(&mut e).unwrap().sign("s", "v", 2_000);
        assert_eq!(e.kv.reads.get(), reads + 1, "the first request reads the secret");
        assert!(keys.admits(&mut e, &pass, "s").is_some());
        assert_eq!(keys.signer(&mut e).unwrap().sign("s", "v", 2_000), pass);
        assert_eq!(e.kv.reads.get(), reads + 1, "later requests do not read shared data again");
        // The same secret read by another worker verifies the pass.
        assert!(Keys::from_secrets(&[]).admits(&mut e, &pass, "s").is_some());
    }
}
