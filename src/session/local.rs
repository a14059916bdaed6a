//! Sessions in one Envoy's shared data (`store: local`), and the revocation list of signed sessions.
//!
//! Envoy's shared data cannot delete a key (a key once written stays until the process exits) nor list
//! keys, so one key per session would leak a key per session forever. Entries therefore live in a fixed
//! set of [`BUCKETS`] keys per kind, each value a list of lines `{id} {expires_ms} {payload}`. Writes drop
//! the expired lines of the bucket they touch, and every tick the host sweeps a slice of the buckets
//! ([`Buckets::sweep_step`]), so memory follows the number of live sessions, not of sessions ever opened.
//! Every write is a compare-and-swap on the bucket, so concurrent workers never lose each other's entries,
//! and an update applies only to an entry that is still there: refreshing a session can never bring back
//! one that a concurrent `DELETE` removed.

use super::limits::Limits;
use super::{random_id, Env, KeyValue, Session, SessionOp, SessionOutcome, StoreError};

/// Buckets per kind of entry: a fixed cost of a few hundred kilobytes of keys, and about 25 entries per
/// bucket at 100,000 live sessions.
pub const BUCKETS: usize = 4096;
/// Buckets swept per tick per worker: a full pass every `BUCKETS / SWEEP_BATCH` ticks.
const SWEEP_BATCH: usize = 128;
/// Compare-and-swap attempts before a write gives up (contention between workers).
const CAS_RETRIES: usize = 16;

/// One kind of expiring entries spread over [`BUCKETS`] shared-data keys.
#[derive(Debug)]
pub struct Buckets {
    prefix: &'static str,
}

/// Sessions of the `local` store.
pub const SESSIONS: Buckets = Buckets { prefix: "mcp-gateway/sessions/" };
/// Signed session ids revoked by `DELETE`, kept until they would have expired anyway.
pub const REVOKED: Buckets = Buckets { prefix: "mcp-gateway/revoked/" };
/// Clients' answers to input requests sent over SSE (2025-11-25), until the poll that reads them.
pub const ANSWERS: Buckets = Buckets { prefix: "mcp-gateway/answers/" };

/// What an update does to the entry it looked at.
#[derive(Debug, PartialEq)]
pub enum Edit {
    /// Write nothing.
    Keep,
    /// Insert or replace the entry.
    Put {
        expires_ms: u64,
        payload: String,
    },
    Remove,
}

struct Line<'a> {
    id: &'a str,
    expires_ms: u64,
    payload: &'a str,
}

fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    text.lines().filter_map(|l| {
        let mut parts = l.splitn(3, ' ');
        let id = parts.next().filter(|s| !s.is_empty())?;
        let expires_ms = parts.next()?.parse().ok()?;
        Some(Line { id, expires_ms, payload: parts.next().unwrap_or("") })
    })
}

/// What [`Buckets::apply`] asks of its caller: the edit for the live entry (its expiry and payload), if any.
type Choose<'a> = dyn FnMut(Option<(u64, &str)>) -> Edit + 'a;

/// FNV-1a: cheap, stable across builds, and spreads random ids (and signed ids) evenly.
fn bucket_of(id: &str) -> usize {
    let h = id.bytes().fold(0x811c_9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x0100_0193));
    h as usize % BUCKETS
}

impl Buckets {
    fn key(&self, index: usize) -> String {
        format!("{}{index:03x}", self.prefix)
    }

    /// Creates every bucket key, empty, that does not exist yet. Hosts call it at configure time, before
    /// traffic: a write to a missing key cannot be compare-and-swapped (Envoy writes it whatever the CAS),
    /// so buckets must exist before two workers may race to fill one.
    pub fn prepare(&self, kv: &mut dyn KeyValue) {
        for i in 0..BUCKETS {
            let key = self.key(i);
            if kv.get(&key).1.is_none() {
                let _ = kv.set(&key, b"", None);
            }
        }
    }

    /// The live entry for `id`: its expiry and payload.
    pub fn get(&self, kv: &dyn KeyValue, id: &str, now_ms: u64) -> Option<(u64, String)> {
        let (value, _) = kv.get(&self.key(bucket_of(id)));
        let text = String::from_utf8_lossy(&value);
        let found =
            lines(&text).find(|l| l.id == id && l.expires_ms > now_ms).map(|l| (l.expires_ms, l.payload.to_string()));
        found
    }

    /// Looks at the live entry for `id` (if any), lets `decide` choose an [`Edit`], and applies it with a
    /// compare-and-swap, retrying from a fresh read when another worker wrote in between. Expired lines of
    /// the bucket are dropped by any write. Returns what `decide` returned for the state it was applied to,
    /// and the payloads of the expired entries the write dropped.
    pub fn update<T>(
        &self,
        kv: &mut dyn KeyValue,
        id: &str,
        now_ms: u64,
        mut decide: impl FnMut(Option<(u64, &str)>) -> (Edit, T),
    ) -> Result<(T, Vec<String>), String> {
        // The work is one non-generic function: each caller's `decide` and result type made a copy of it
        // (1.5 KB each, five of them).
        let mut result = None;
        let dropped = self.apply(kv, id, now_ms, &mut |current| {
            let (edit, r) = decide(current);
            result = Some(r);
            edit
        })?;
        // `apply` returns `Ok` only after calling `decide`.
        result.map(|r| (r, dropped)).ok_or_else(|| "the session store is contended; try again".into())
    }

    /// [`Buckets::update`] with the decision's result kept by the caller.
    fn apply(
        &self,
        kv: &mut dyn KeyValue,
        id: &str,
        now_ms: u64,
        decide: &mut Choose<'_>,
    ) -> Result<Vec<String>, String> {
        let key = self.key(bucket_of(id));
        for _ in 0..CAS_RETRIES {
            let (value, cas) = kv.get(&key);
            let text = String::from_utf8_lossy(&value);
            let current = lines(&text).find(|l| l.id == id && l.expires_ms > now_ms).map(|l| (l.expires_ms, l.payload));
            let edit = decide(current);
            let put = match edit {
                Edit::Keep => return Ok(Vec::new()),
                Edit::Put { expires_ms, payload } => Some((expires_ms, payload)),
                Edit::Remove => None,
            };
            let mut out = String::with_capacity(text.len() + 96);
            for l in lines(&text).filter(|l| l.id != id && l.expires_ms > now_ms) {
                push_line(&mut out, l.id, l.expires_ms, l.payload);
            }
            if let Some((expires_ms, payload)) = &put {
                push_line(&mut out, id, *expires_ms, payload);
            }
            if !kv.set(&key, out.as_bytes(), cas)? {
                continue;
            }
            // A missing bucket was written unconditionally: make sure no other writer replaced it meanwhile.
            if cas.is_none() {
                let (check, _) = kv.get(&key);
                let check = String::from_utf8_lossy(&check);
                let now_there = lines(&check).find(|l| l.id == id).map(|l| (l.expires_ms, l.payload.to_string()));
                if now_there != put {
                    continue;
                }
            }
            let mut dropped = Vec::new();
            expired_payloads(&text, now_ms, &mut dropped);
            return Ok(dropped);
        }
        Err("the session store is contended; try again".into())
    }

    /// Sweeps the next [`SWEEP_BATCH`] buckets, taking turns with the other workers through a shared
    /// cursor. Returns the payloads of the expired entries it removed.
    pub fn sweep_step(&self, kv: &mut dyn KeyValue, now_ms: u64) -> Vec<String> {
        let cursor_key = format!("{}sweep", self.prefix);
        let (value, cas) = kv.get(&cursor_key);
        let start: usize = std::str::from_utf8(&value).ok().and_then(|s| s.parse().ok()).unwrap_or(0) % BUCKETS;
        let next = (start + SWEEP_BATCH) % BUCKETS;
        if !matches!(kv.set(&cursor_key, next.to_string().as_bytes(), cas), Ok(true)) {
            return Vec::new(); // another worker took this slice
        }
        let mut swept = Vec::new();
        for i in start..start + SWEEP_BATCH {
            self.sweep_bucket(kv, i % BUCKETS, now_ms, &mut swept);
        }
        swept
    }

    /// Drops the expired lines of bucket `index`, adding their payloads to `swept`.
    fn sweep_bucket(&self, kv: &mut dyn KeyValue, index: usize, now_ms: u64, swept: &mut Vec<String>) {
        let key = self.key(index);
        let (value, cas) = kv.get(&key);
        if value.is_empty() || cas.is_none() {
            return;
        }
        let text = String::from_utf8_lossy(&value);
        let mut expired = Vec::new();
        expired_payloads(&text, now_ms, &mut expired);
        if expired.is_empty() {
            return;
        }
        let mut out = String::with_capacity(text.len());
        for l in lines(&text).filter(|l| l.expires_ms > now_ms) {
            push_line(&mut out, l.id, l.expires_ms, l.payload);
        }
        // On a CAS mismatch a writer got there first (and dropped the expired lines itself).
        if matches!(kv.set(&key, out.as_bytes(), cas), Ok(true)) {
            swept.append(&mut expired);
        }
    }
}

/// The payloads of the lines of a bucket's `text` expired at `now_ms`, in order.
fn expired_payloads(text: &str, now_ms: u64, out: &mut Vec<String>) {
    for l in lines(text).filter(|l| l.expires_ms <= now_ms) {
        out.push(l.payload.to_string());
    }
}

fn push_line(out: &mut String, id: &str, expires_ms: u64, payload: &str) {
    use std::fmt::Write;
    let _ = writeln!(out, "{id} {expires_ms} {payload}");
}

/// How an operation edits the entry it finds (see [`Buckets::update`]).
type Decide<'a, T> = dyn FnMut(Option<(u64, &str)>) -> (Edit, T) + 'a;

/// The `local` store: sessions with a sliding idle expiry in [`SESSIONS`], counted per server against
/// `maxSessions`.
#[derive(Debug)]
pub struct LocalStore {
    ttl_ms: u64,
    limits: Limits,
}

/// Gives back the live-session room of expired entries, per server.
fn release_expired(kv: &mut dyn KeyValue, payloads: &[String]) {
    let mut per_server: Vec<(String, u64)> = Vec::new();
    for server in payloads.iter().filter_map(|p| Session::decode(p)).map(|s| s.server) {
        match per_server.iter_mut().find(|(s, _)| *s == server) {
            Some((_, n)) => *n += 1,
            None => per_server.push((server, 1)),
        }
    }
    for (server, n) in per_server {
        Limits::release_live(kv, &server, n);
    }
}

impl LocalStore {
    pub fn new(ttl_ms: u64, limits: Limits) -> LocalStore {
        LocalStore { ttl_ms, limits }
    }

    /// One sweep step over the session buckets; expired sessions free their room. Returns how many.
    pub fn sweep(&self, kv: &mut dyn KeyValue, now_ms: u64) -> usize {
        let expired = SESSIONS.sweep_step(kv, now_ms);
        release_expired(kv, &expired);
        expired.len()
    }

    /// [`SessionOp::Rebind`], or with `was` `None` [`SessionOp::Update`].
    fn rebind(
        &self,
        env: &mut dyn Env,
        id: &str,
        was: Option<Option<String>>,
        session: Session,
        now: u64,
    ) -> SessionOutcome {
        let payload = session.encode();
        let decide = |current: Option<(u64, &str)>| match current.and_then(|(e, p)| Some((e, Session::decode(p)?))) {
            Some((expires_ms, s)) if s.server == session.server && was.as_ref().is_none_or(|w| *w == s.backend) => {
                (Edit::Put { expires_ms, payload: payload.clone() }, SessionOutcome::Found(session.clone()))
            }
            Some((_, s)) if s.server == session.server => (Edit::Keep, SessionOutcome::Found(s)),
            _ => (Edit::Keep, SessionOutcome::NotFound),
        };
        self.update(env.kv(), id, now, &mut { decide }).unwrap_or_else(|e| SessionOutcome::Failed(StoreError(e)))
    }

    /// Applies an update and frees the room of the expired entries its write dropped. (`dyn`: one copy of
    /// the bucket update in the module, not one per operation.)
    fn update<T>(&self, kv: &mut dyn KeyValue, id: &str, now_ms: u64, decide: &mut Decide<'_, T>) -> Result<T, String> {
        let (result, expired) = SESSIONS.update(kv, id, now_ms, decide)?;
        release_expired(kv, &expired);
        Ok(result)
    }

    /// Sliding expiry is written back at most once per tenth of the TTL, to keep writes off most requests.
    fn needs_refresh(&self, expires_ms: u64, now_ms: u64) -> bool {
        expires_ms.saturating_sub(now_ms) < self.ttl_ms - self.ttl_ms / 10
    }

    /// Performs an operation; shared data answers at once.
    pub fn run(&self, op: SessionOp, env: &mut dyn Env) -> SessionOutcome {
        let now = env.now_ms();
        match op {
            SessionOp::Create(session) => {
                let Some(id) = random_id(env) else {
                    return SessionOutcome::Failed(StoreError("no randomness available for a session id".into()));
                };
                if let Err(refusal) = self.limits.reserve_live(env.kv(), &session.server) {
                    return SessionOutcome::Refused(refusal);
                }
                let expires_ms = now.saturating_add(self.ttl_ms);
                let payload = session.encode();
                let put = |_: Option<(u64, &str)>| (Edit::Put { expires_ms, payload: payload.clone() }, ());
                match self.update(env.kv(), &id, now, &mut { put }) {
                    Ok(()) => SessionOutcome::Created(id),
                    Err(e) => {
                        Limits::release_live(env.kv(), &session.server, 1);
                        SessionOutcome::Failed(StoreError(e))
                    }
                }
            }
            SessionOp::Open { id, server } => {
                let decide = |current: Option<(u64, &str)>| {
                    let Some((expires_ms, payload)) = current else {
                        return (Edit::Keep, SessionOutcome::NotFound);
                    };
                    match Session::decode(payload).filter(|s| s.server == server) {
                        None => (Edit::Keep, SessionOutcome::NotFound),
                        Some(s) if self.needs_refresh(expires_ms, now) => (
                            Edit::Put { expires_ms: now.saturating_add(self.ttl_ms), payload: payload.to_string() },
                            SessionOutcome::Found(s),
                        ),
                        Some(s) => (Edit::Keep, SessionOutcome::Found(s)),
                    }
                };
                match self.update(env.kv(), &id, now, &mut { decide }) {
                    Ok(outcome) => outcome,
                    // A refresh that lost every race only shortens the session's life; the request proceeds.
                    Err(_) => match SESSIONS.get(env.kv(), &id, now).and_then(|(_, p)| Session::decode(&p)) {
                        Some(s) if s.server == server => SessionOutcome::Found(s),
                        _ => SessionOutcome::NotFound,
                    },
                }
            }
            SessionOp::Delete { id, server } => {
                let decide = |current: Option<(u64, &str)>| match current.and_then(|(_, p)| Session::decode(p)) {
                    Some(s) if s.server == server => (Edit::Remove, SessionOutcome::Deleted),
                    _ => (Edit::Keep, SessionOutcome::NotFound),
                };
                let outcome = self
                    .update(env.kv(), &id, now, &mut { decide })
                    .unwrap_or_else(|e| SessionOutcome::Failed(StoreError(e)));
                if outcome == SessionOutcome::Deleted {
                    Limits::release_live(env.kv(), &server, 1);
                }
                outcome
            }
            // One arm for both (a closure each cost a copy of the store's update): an update is a rebind
            // that holds whatever backend session the session stands for.
            SessionOp::Update { id, session } => self.rebind(env, &id, None, session, now),
            SessionOp::Rebind { id, was, session } => self.rebind(env, &id, Some(was), session, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::memory::{MemoryEnv, MemoryKv};
    use super::*;

    const LIMITS: Limits = Limits { max_sessions: 1_000_000, max_new_per_second: 1_000_000 };

    fn session(server: &str) -> Session {
        Session::new(server, "2025-06-18")
    }

    fn env() -> MemoryEnv {
        let mut env = MemoryEnv { now_ms: 1_000_000, ..Default::default() };
        SESSIONS.prepare(&mut env.kv);
        env
    }

    fn create(store: &LocalStore, env: &mut MemoryEnv, server: &str) -> String {
        match store.run(SessionOp::Create(session(server)), env) {
            SessionOutcome::Created(id) => id,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_update_keeps_the_expiry_and_only_touches_a_live_session_of_its_server() {
        let store = LocalStore::new(60_000, LIMITS);
        let mut env = env();
        let id = create(&store, &mut env, "a");
        let before = SESSIONS.get(&env.kv, &id, env.now_ms).unwrap().0;
        let mut leveled = session("a");
        leveled.log_level = Some(crate::notify::LogLevel::Error);
        env.now_ms += 1_000;
        let update = |s: &Session| SessionOp::Update { id: id.clone(), session: s.clone() };
        assert_eq!(store.run(update(&leveled), &mut env), SessionOutcome::Found(leveled.clone()));
        assert_eq!(SESSIONS.get(&env.kv, &id, env.now_ms).unwrap().0, before, "the expiry is untouched");
        let open = SessionOp::Open { id: id.clone(), server: "a".into() };
        assert_eq!(store.run(open, &mut env), SessionOutcome::Found(leveled.clone()));
        let mut foreign = leveled.clone();
        foreign.server = "b".into();
        assert_eq!(store.run(update(&foreign), &mut env), SessionOutcome::NotFound);
        env.now_ms += 60_000;
        assert_eq!(store.run(update(&leveled), &mut env), SessionOutcome::NotFound, "expired stays gone");
    }

    fn open(store: &LocalStore, env: &mut MemoryEnv, id: &str, server: &str) -> SessionOutcome {
        store.run(SessionOp::Open { id: id.into(), server: server.into() }, env)
    }

    #[test]
    fn creates_opens_deletes() {
        let store = LocalStore::new(60_000, LIMITS);
        let mut env = env();
        let id = create(&store, &mut env, "a");
        assert_eq!(open(&store, &mut env, &id, "a"), SessionOutcome::Found(session("a")));
        assert_eq!(open(&store, &mut env, &id, "b"), SessionOutcome::NotFound, "bound to its server");
        assert_eq!(open(&store, &mut env, "0123", "a"), SessionOutcome::NotFound);
        let del = |id: &str, server: &str| SessionOp::Delete { id: id.into(), server: server.into() };
        assert_eq!(store.run(del(&id, "b"), &mut env), SessionOutcome::NotFound);
        assert_eq!(store.run(del(&id, "a"), &mut env), SessionOutcome::Deleted);
        assert_eq!(open(&store, &mut env, &id, "a"), SessionOutcome::NotFound);
        assert_eq!(store.run(del(&id, "a"), &mut env), SessionOutcome::NotFound);
    }

    #[test]
    fn expiry_slides_with_use_and_ends_idle_sessions() {
        let store = LocalStore::new(60_000, LIMITS);
        let mut env = env();
        let id = create(&store, &mut env, "a");
        env.now_ms += 50_000;
        assert!(matches!(open(&store, &mut env, &id, "a"), SessionOutcome::Found(_)));
        assert_eq!(SESSIONS.get(&env.kv, &id, env.now_ms).unwrap().0, env.now_ms + 60_000, "activity extends it");
        let writes = env.kv.map.values().map(|(_, c)| *c).max();
        env.now_ms += 1_000;
        assert!(matches!(open(&store, &mut env, &id, "a"), SessionOutcome::Found(_)));
        assert_eq!(env.kv.map.values().map(|(_, c)| *c).max(), writes, "no write within a tenth of the TTL");
        env.now_ms += 60_000;
        assert_eq!(open(&store, &mut env, &id, "a"), SessionOutcome::NotFound);
    }

    #[test]
    fn a_refresh_never_brings_back_a_deleted_session() {
        // The refresh decides on one read; a DELETE lands before its write: the CAS fails, the retry
        // sees the session gone and answers NotFound without writing it back.
        let store = LocalStore::new(60_000, LIMITS);
        let mut env = env();
        let id = create(&store, &mut env, "a");
        env.now_ms += 50_000;
        let now = env.now_ms;
        let mut deleted = false;
        let result = SESSIONS.update(
            &mut RacingKv { inner: &mut env.kv, id: &id, done: &mut deleted },
            &id,
            now,
            |cur| match cur {
                Some((_, p)) => (Edit::Put { expires_ms: now + 60_000, payload: p.to_string() }, true),
                None => (Edit::Keep, false),
            },
        );
        assert_eq!(result, Ok((false, vec![])), "the second attempt saw the session gone");
        assert!(deleted);
        assert_eq!(SESSIONS.get(&env.kv, &id, now), None);
    }

    /// Deletes `id` behind the back of the first write.
    struct RacingKv<'a> {
        inner: &'a mut MemoryKv,
        id: &'a str,
        done: &'a mut bool,
    }

    impl KeyValue for RacingKv<'_> {
        fn get(&self, key: &str) -> (Vec<u8>, Option<u32>) {
            self.inner.get(key)
        }
        fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, String> {
            if !*self.done {
                *self.done = true;
                SESSIONS.update(self.inner, self.id, 0, |_| (Edit::Remove, ())).unwrap();
            }
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn concurrent_writers_keep_each_others_entries() {
        let mut kv = MemoryKv::default();
        SESSIONS.prepare(&mut kv);
        // Two ids in one bucket, written in an interleaving where the second writer's CAS fails once.
        let a = "a".repeat(32);
        let b = (0..).map(|i| format!("{i:032x}")).find(|id| bucket_of(id) == bucket_of(&a)).unwrap();
        let put = |e: u64| move |_: Option<(u64, &str)>| (Edit::Put { expires_ms: e, payload: "p".into() }, ());
        let key = SESSIONS.key(bucket_of(&a));
        let (_, stale_cas) = kv.get(&key);
        SESSIONS.update(&mut kv, &a, 0, put(10)).unwrap();
        assert!(!kv.set(&key, b"lost", stale_cas).unwrap(), "a stale CAS is refused");
        SESSIONS.update(&mut kv, &b, 0, put(10)).unwrap();
        assert!(SESSIONS.get(&kv, &a, 0).is_some() && SESSIONS.get(&kv, &b, 0).is_some());
    }

    #[test]
    fn missing_buckets_are_verified_after_an_unconditional_write() {
        let mut kv = MemoryKv::default(); // not prepared
        let put = |_: Option<(u64, &str)>| (Edit::Put { expires_ms: 10, payload: "p".into() }, ());
        SESSIONS.update(&mut kv, "x1", 0, put).unwrap();
        assert_eq!(SESSIONS.get(&kv, "x1", 0), Some((10, "p".into())));
    }

    #[test]
    fn sweeps_free_expired_entries_bucket_by_bucket() {
        let store = LocalStore::new(1_000, LIMITS);
        let mut env = env();
        let ids: Vec<String> = (0..500).map(|_| create(&store, &mut env, "a")).collect();
        let bytes = |kv: &MemoryKv| kv.map.values().map(|(v, _)| v.len()).sum::<usize>();
        assert!(bytes(&env.kv) > 500 * 40);
        env.now_ms += 1_000;
        assert_eq!(Limits::live(&env.kv, "a"), 500);
        let removed: usize = (0..BUCKETS / SWEEP_BATCH).map(|_| store.sweep(&mut env.kv, env.now_ms)).sum();
        assert_eq!(removed, 500);
        assert_eq!(Limits::live(&env.kv, "a"), 0, "expired sessions free their room");
        assert!(bytes(&env.kv) < 100, "only the sweep cursor and counters are left: {}", bytes(&env.kv));
        assert_eq!(env.kv.map.len(), BUCKETS + 2, "the key count stays bounded (buckets, cursor, counter)");
        assert_eq!(open(&store, &mut env, &ids[0], "a"), SessionOutcome::NotFound);
    }

    #[test]
    fn writes_drop_expired_lines_of_their_bucket() {
        let mut kv = MemoryKv::default();
        SESSIONS.prepare(&mut kv);
        let a = "a".repeat(32);
        let b = (0..).map(|i| format!("{i:032x}")).find(|id| bucket_of(id) == bucket_of(&a)).unwrap();
        SESSIONS.update(&mut kv, &a, 0, |_| (Edit::Put { expires_ms: 5, payload: String::new() }, ())).unwrap();
        SESSIONS.update(&mut kv, &b, 10, |_| (Edit::Put { expires_ms: 50, payload: String::new() }, ())).unwrap();
        let (value, _) = kv.get(&SESSIONS.key(bucket_of(&a)));
        assert_eq!(String::from_utf8(value).unwrap(), format!("{b} 50 \n"));
    }
}

#[cfg(test)]
mod properties {
    use super::super::memory::MemoryEnv;
    use super::*;
    use crate::strategies::hostile_string;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const TTL: u64 = 10_000;
    const SERVERS: [&str; 2] = ["a", "b"];

    #[derive(Debug, Clone)]
    enum Op {
        Create(usize),
        /// A session created earlier (by index), or an id a client made up.
        Open(Result<usize, String>, usize),
        Delete(Result<usize, String>, usize),
        Advance(u64),
        Sweep,
        /// Lines written into the bucket of a session created earlier: foreign bytes, and lines naming that
        /// session that are expired or do not parse.
        Garbage(usize, Vec<Junk>),
    }

    #[derive(Debug, Clone)]
    enum Junk {
        Bytes(Vec<u8>),
        Foreign(String, u64, String),
        ExpiredCopy(u64),
        Unparsable(String),
    }

    fn id_ref() -> impl Strategy<Value = Result<usize, String>> {
        prop_oneof![3 => any::<usize>().prop_map(Ok), 1 => hostile_string().prop_map(Err)]
    }

    fn op() -> impl Strategy<Value = Op> {
        let junk = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..40).prop_map(Junk::Bytes),
            ("[a-z0-9]{1,32}", any::<u64>(), ".{0,20}").prop_map(|(i, e, p)| Junk::Foreign(i, e, p)),
            (0..TTL).prop_map(Junk::ExpiredCopy),
            "[^\n]{0,20}".prop_map(Junk::Unparsable),
        ];
        prop_oneof![
            3 => (0..2usize).prop_map(Op::Create),
            4 => (id_ref(), 0..2usize).prop_map(|(i, s)| Op::Open(i, s)),
            2 => (id_ref(), 0..2usize).prop_map(|(i, s)| Op::Delete(i, s)),
            2 => prop_oneof![0..2_000u64, Just(TTL), Just(TTL / 10)].prop_map(Op::Advance),
            1 => Just(Op::Sweep),
            1 => (any::<usize>(), prop::collection::vec(junk, 1..4)).prop_map(|(i, j)| Op::Garbage(i, j)),
        ]
    }

    proptest! {
        #![proptest_config(crate::strategies::cases(200))]

        /// Guards the local store's bucket lines against any history and any bucket contents: every session
        /// opens exactly while the model says it is live (sliding expiry, bound to its server), a deleted or
        /// expired session never comes back (not through foreign bytes, stale copies of its line, or sweeps), ids
        /// a client makes up are never found, and nothing panics.
        #[test]
        fn sessions_follow_the_model_and_never_resurrect(ops in prop::collection::vec(op(), 1..60)) {
            let store = LocalStore::new(TTL, Limits { max_sessions: u64::MAX, max_new_per_second: u32::MAX });
            let mut env = MemoryEnv { now_ms: 1_000_000, ..Default::default() };
            SESSIONS.prepare(&mut env.kv);
            let mut ids: Vec<String> = Vec::new();
            // id -> (server, expiry) of the sessions the model holds live.
            let mut model: HashMap<String, (usize, u64)> = HashMap::new();
            let pick = |ids: &Vec<String>, r: &Result<usize, String>| match r {
                Ok(i) if !ids.is_empty() => ids[i % ids.len()].clone(),
                Ok(_) => String::new(),
                Err(made_up) => made_up.clone(),
            };
            for op in ops {
                let now = env.now_ms;
                model.retain(|_, (_, expires)| *expires > now);
                match op {
                    Op::Create(s) => {
                        let session = Session::new(SERVERS[s], "2025-06-18");
                        let SessionOutcome::Created(id) = store.run(SessionOp::Create(session), &mut env) else {
                            return Err(TestCaseError::fail("create failed"));
                        };
                        prop_assert!(!model.contains_key(&id));
                        model.insert(id.clone(), (s, now + TTL));
                        ids.push(id);
                    }
                    Op::Open(r, s) => {
                        let id = pick(&ids, &r);
                        let got = store.run(SessionOp::Open { id: id.clone(), server: SERVERS[s].into() }, &mut env);
                        match model.get_mut(&id) {
                            Some((server, expires)) if *server == s => {
                                prop_assert_eq!(got, SessionOutcome::Found(Session::new(SERVERS[s], "2025-06-18")));
                                if *expires - now < TTL - TTL / 10 {
                                    *expires = now + TTL;
                                }
                            }
                            _ => prop_assert_eq!(got, SessionOutcome::NotFound, "{:?}", id),
                        }
                    }
                    Op::Delete(r, s) => {
                        let id = pick(&ids, &r);
                        let got = store.run(SessionOp::Delete { id: id.clone(), server: SERVERS[s].into() }, &mut env);
                        if model.get(&id).is_some_and(|(server, _)| *server == s) {
                            prop_assert_eq!(got, SessionOutcome::Deleted);
                            model.remove(&id);
                        } else {
                            prop_assert_eq!(got, SessionOutcome::NotFound, "{:?}", id);
                        }
                    }
                    Op::Advance(ms) => env.now_ms += ms,
                    Op::Sweep => {
                        store.sweep(&mut env.kv, now);
                    }
                    Op::Garbage(i, junk) => {
                        let Some(target) = (!ids.is_empty()).then(|| ids[i % ids.len()].clone()) else { continue };
                        let key = SESSIONS.key(bucket_of(&target));
                        let (mut value, cas) = env.kv.get(&key);
                        for j in junk {
                            let line = match j {
                                Junk::Bytes(b) => b,
                                Junk::Foreign(id, e, p) => format!("{id} {e} {p}").into_bytes(),
                                Junk::ExpiredCopy(back) => format!("{target} {} {{\"s\":\"a\",\"v\":\"2025-06-18\"}}", now.saturating_sub(back)).into_bytes(),
                                Junk::Unparsable(rest) => format!("{target} x{rest}").into_bytes(),
                            };
                            value.push(b'\n');
                            value.extend_from_slice(&line);
                        }
                        prop_assert!(env.kv.set(&key, &value, cas).unwrap());
                    }
                }
                let now = env.now_ms;
                for id in &ids {
                    let live = model.get(id).filter(|(_, e)| *e > now).map(|(_, e)| *e);
                    prop_assert_eq!(SESSIONS.get(&env.kv, id, now).map(|(e, _)| e), live, "{}", id);
                }
            }
        }
    }
}
