//! Sessions in Redis (`store: redis`), reached through Higress's host (`proxy_redis_call`).
//!
//! One key per session, `{keyPrefix}session:{server}:{id}`, holding the session as JSON and expiring by
//! Redis's own TTL. Each operation is one command, so one round trip:
//!
//! | operation | command                                  | reply                                  |
//! |-----------|------------------------------------------|----------------------------------------|
//! | create    | `SET key value PX ttl NX`                | `+OK`; nil if the id exists (never, in practice) |
//! | open      | `GETEX key PX ttl` (Redis >= 6.2)         | the value, TTL reset; nil if gone       |
//! | delete    | `DEL key`                                | `:1` deleted, `:0` unknown              |
//! | update    | `SET key value XX KEEPTTL` (log level)    | `+OK`; nil if gone                      |
//! | rebind    | `EVAL` [`REBIND`]: the update, while the session still stands for the backend session it did | the value now; nil if gone |
//!
//! `GETEX` on a missing key creates nothing, so an open racing a `DELETE` cannot bring the session back.
//! The server is part of the key, so an id used on another server's path finds nothing. A `NOAUTH` reply
//! means the host's connection lost its credentials (Redis restarted with a password): the host
//! re-initialises and the command is sent once more, as Higress's own Redis wrapper does.

use super::{random_id, Env, Session, SessionOp, SessionOutcome, Started, StoreError};
use crate::config::RedisConfig;
use crate::resp::{self, Reply};

/// The `redis` store: the connection settings the host needs at configure time, and key naming.
#[derive(Clone, PartialEq)]
pub struct RedisStore {
    /// The Envoy cluster, with `?db=N` when a database other than 0 is selected (Higress's syntax).
    pub cluster: String,
    pub username: String,
    pub password: String,
    pub timeout_ms: u64,
    key_prefix: String,
    ttl_ms: u64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("RedisStore")
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &if self.password.is_empty() { "" } else { "<redacted>" })
            .field("timeout_ms", &self.timeout_ms)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// An operation waiting for its reply; the host sends `command` (again, after a re-initialisation).
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    what: Waiting,
    pub command: Vec<u8>,
    /// Whether the command was already retried after `NOAUTH`.
    pub retried: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Waiting {
    Create(String),
    Open(String),
    Delete,
    Update(Session),
}

/// What the host reports for a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer<'a> {
    /// The raw RESP reply.
    Reply(&'a [u8]),
    /// No reply: connection failure, timeout, refused call.
    Failed(String),
    /// No reply because the host's client was re-initialised (after another command's `NOAUTH`) while this
    /// command was in flight: re-initialising closes the connection and fails what was pending on it.
    Interrupted,
}

/// The first reading of a host's answer, the same for every Redis user (sessions, limits, input answers):
/// a decoded reply, or what to do instead of interpreting one. A command is sent at most twice.
#[derive(Debug, PartialEq)]
pub enum Read {
    Reply(Reply),
    /// Re-initialise the host's Redis client, then send the command again.
    Reauthenticate,
    /// Send the command again as it is.
    Resend,
    /// No usable reply; the text says why.
    Failed(String),
}

/// Reads a host's answer to a command that was already sent again (`retried`) or not.
pub fn read(answer: Answer<'_>, retried: bool) -> Read {
    let bytes = match answer {
        Answer::Reply(b) => b,
        Answer::Interrupted if !retried => return Read::Resend,
        Answer::Interrupted => return Read::Failed("Redis did not answer (the connection was reset twice)".into()),
        Answer::Failed(why) => return Read::Failed(format!("Redis did not answer ({why})")),
    };
    match resp::decode(bytes) {
        Ok(r) if r.is_error("NOAUTH") && !retried => Read::Reauthenticate,
        Ok(r) => Read::Reply(r),
        Err(e) => Read::Failed(e.to_string()),
    }
}

/// What to do with an answer. A command is sent at most twice.
#[derive(Debug, PartialEq)]
pub enum Next {
    Done(SessionOutcome),
    /// Re-initialise the host's Redis client, then send `pending.command` again (with `retried` set).
    Reauthenticate,
    /// Send `pending.command` again as it is (with `retried` set).
    Resend,
}

impl RedisStore {
    pub fn new(cfg: &RedisConfig, ttl_ms: u64) -> RedisStore {
        let cluster =
            if cfg.database == 0 { cfg.cluster.clone() } else { format!("{}?db={}", cfg.cluster, cfg.database) };
        RedisStore {
            cluster,
            username: cfg.username.clone(),
            password: cfg.password.clone(),
            timeout_ms: cfg.timeout_ms,
            key_prefix: cfg.key_prefix.clone(),
            ttl_ms,
        }
    }

    /// What every key of this gateway's starts with (`keyPrefix`), sessions' and rate limits' alike.
    pub fn key_prefix(&self) -> &str {
        &self.key_prefix
    }

    fn key(&self, server: &str, id: &str) -> String {
        format!("{}session:{server}:{id}", self.key_prefix)
    }

    /// The command for an operation (no I/O here; the host sends it).
    pub fn start(&self, op: SessionOp, env: &mut dyn Env) -> Started {
        let ttl = self.ttl_ms.to_string();
        let (command, what) = match op {
            SessionOp::Create(session) => {
                let Some(id) = random_id(env) else {
                    return Started::Done(SessionOutcome::Failed(StoreError(
                        "no randomness available for a session id".into(),
                    )));
                };
                let key = self.key(&session.server, &id);
                (resp::command(&["SET", &key, &session.encode(), "PX", &ttl, "NX"]), Waiting::Create(id))
            }
            SessionOp::Open { id, server } => {
                if !is_hex_id(&id) {
                    return Started::Done(SessionOutcome::NotFound);
                }
                (resp::command(&["GETEX", &self.key(&server, &id), "PX", &ttl]), Waiting::Open(server))
            }
            SessionOp::Delete { id, server } => {
                if !is_hex_id(&id) {
                    return Started::Done(SessionOutcome::NotFound);
                }
                (resp::command(&["DEL", &self.key(&server, &id)]), Waiting::Delete)
            }
            SessionOp::Update { id, session } => {
                if !is_hex_id(&id) {
                    return Started::Done(SessionOutcome::NotFound);
                }
                // XX: only a live session; KEEPTTL: its expiry stays as the last open set it.
                let key = self.key(&session.server, &id);
                (resp::command(&["SET", &key, &session.encode(), "XX", "KEEPTTL"]), Waiting::Update(session))
            }
            SessionOp::Rebind { id, was, session } => {
                if !is_hex_id(&id) {
                    return Started::Done(SessionOutcome::NotFound);
                }
                let key = self.key(&session.server, &id);
                let was = was.unwrap_or_default();
                // Answered as an open is: the session as it now is, or nil.
                (resp::command(&["EVAL", REBIND, "1", &key, &was, &session.encode()]), Waiting::Open(session.server))
            }
        };
        Started::Redis(Pending { what, command, retried: false })
    }

    /// Interprets the host's answer.
    pub fn finish(&self, pending: &Pending, answer: Answer<'_>) -> Next {
        let failed = |why: String| Next::Done(SessionOutcome::Failed(StoreError(why)));
        let reply = match read(answer, pending.retried) {
            Read::Reply(r) => r,
            Read::Reauthenticate => return Next::Reauthenticate,
            Read::Resend => return Next::Resend,
            Read::Failed(why) => return failed(why),
        };
        if let Reply::Error(e) = &reply {
            // Redis's errors are short; whatever else answers may send anything, so the text is bounded.
            // At most 200 bytes (whole characters), so that a reply of multibyte characters stays as short.
            let mut e = e.split_whitespace().take(12).collect::<Vec<_>>().join(" ");
            let mut end = e.len().min(200);
            while !e.is_char_boundary(end) {
                end -= 1;
            }
            e.truncate(end);
            if e.contains("unknown command") && e.to_ascii_lowercase().contains("getex") {
                return failed("Redis refused GETEX: the redis session store needs Redis 6.2 or later".into());
            }
            return failed(format!("Redis refused the command: {e}"));
        }
        Next::Done(match (&pending.what, reply) {
            (Waiting::Create(id), Reply::Simple(ok)) if ok == "OK" => SessionOutcome::Created(id.clone()),
            (Waiting::Create(_), Reply::Bulk(None)) => {
                SessionOutcome::Failed(StoreError("a fresh session id already existed in Redis".into()))
            }
            (Waiting::Open(server), Reply::Bulk(Some(value))) => {
                match std::str::from_utf8(&value).ok().and_then(Session::decode) {
                    Some(s) if &s.server == server => SessionOutcome::Found(s),
                    _ => SessionOutcome::NotFound,
                }
            }
            (Waiting::Open(_), Reply::Bulk(None)) => SessionOutcome::NotFound,
            (Waiting::Update(s), Reply::Simple(ok)) if ok == "OK" => SessionOutcome::Found(s.clone()),
            (Waiting::Update(_), Reply::Bulk(None)) => SessionOutcome::NotFound,
            (Waiting::Delete, Reply::Integer(n)) => {
                if n > 0 {
                    SessionOutcome::Deleted
                } else {
                    SessionOutcome::NotFound
                }
            }
            (_, other) => SessionOutcome::Failed(StoreError(format!("unexpected Redis reply ({})", other.kind()))),
        })
    }
}

/// [`SessionOp::Rebind`]: KEYS[1] the session, ARGV[1] the backend session it must still stand for ('' for
/// none), ARGV[2] the new value. Answers the value now stored, nil if the session is gone.
pub const REBIND: &str = "local c=redis.call('GET',KEYS[1]) if c and (cjson.decode(c).b or '')==ARGV[1] then \
redis.call('SET',KEYS[1],ARGV[2],'KEEPTTL') return ARGV[2] end return c";

/// Ids of the Redis store are 32 hex characters; anything else is unknown without a round trip.
fn is_hex_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::super::memory::MemoryEnv;
    use super::*;

    fn store() -> RedisStore {
        let cfg = RedisConfig {
            cluster: "outbound|6379||redis.dns".into(),
            password: "s3cret".into(),
            database: 2,
            ..RedisConfig::default()
        };
        RedisStore::new(&cfg, 60_000)
    }

    fn started(op: SessionOp) -> (Vec<Vec<u8>>, Pending) {
        match store().start(op, &mut MemoryEnv::default()) {
            Started::Redis(pending) => (resp::decode_command(&pending.command).unwrap(), pending),
            Started::Done(o) => panic!("{o:?}"),
        }
    }

    fn args(v: &[&str]) -> Vec<Vec<u8>> {
        v.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    #[test]
    fn one_command_per_operation() {
        let s = store();
        assert_eq!(s.cluster, "outbound|6379||redis.dns?db=2");
        let (cmd, p) = started(SessionOp::Create(Session::new("demo", "2025-06-18")));
        let Waiting::Create(id) = &p.what else { panic!() };
        let key = format!("mcp-gateway:session:demo:{id}");
        assert_eq!(cmd, args(&["SET", &key, r#"{"s":"demo","v":"2025-06-18"}"#, "PX", "60000", "NX"]));
        assert_eq!(s.finish(&p, Answer::Reply(b"+OK\r\n")), Next::Done(SessionOutcome::Created(id.clone())));
        let (cmd, p) = started(SessionOp::Open { id: id.clone(), server: "demo".into() });
        assert_eq!(cmd, args(&["GETEX", &key, "PX", "60000"]));
        let found = resp::encode_reply(&Reply::Bulk(Some(br#"{"s":"demo","v":"2025-06-18"}"#.to_vec())));
        assert!(matches!(s.finish(&p, Answer::Reply(&found)), Next::Done(SessionOutcome::Found(_))));
        assert_eq!(s.finish(&p, Answer::Reply(b"$-1\r\n")), Next::Done(SessionOutcome::NotFound));
        let (cmd, p) = started(SessionOp::Delete { id: id.clone(), server: "demo".into() });
        assert_eq!(cmd, args(&["DEL", &key]));
        assert_eq!(s.finish(&p, Answer::Reply(b":1\r\n")), Next::Done(SessionOutcome::Deleted));
        assert_eq!(s.finish(&p, Answer::Reply(b":0\r\n")), Next::Done(SessionOutcome::NotFound));
        let mut leveled = Session::new("demo", "2025-06-18");
        leveled.log_level = Some(crate::notify::LogLevel::Warning);
        let (cmd, p) = started(SessionOp::Update { id: id.clone(), session: leveled.clone() });
        assert_eq!(cmd, args(&["SET", &key, r#"{"s":"demo","v":"2025-06-18","l":"warning"}"#, "XX", "KEEPTTL"]));
        assert_eq!(s.finish(&p, Answer::Reply(b"+OK\r\n")), Next::Done(SessionOutcome::Found(leveled)));
        assert_eq!(s.finish(&p, Answer::Reply(b"$-1\r\n")), Next::Done(SessionOutcome::NotFound));
        // A rebind answers the session as it now is: ours, or the one another re-initialisation stored first.
        let mut rebound = Session::new("demo", "2025-06-18");
        rebound.backend = Some("b-2".into());
        let was = Some("b-1".into());
        let (cmd, p) = started(SessionOp::Rebind { id: id.clone(), was, session: rebound.clone() });
        assert_eq!(cmd, args(&["EVAL", REBIND, "1", &key, "b-1", r#"{"s":"demo","v":"2025-06-18","b":"b-2"}"#]));
        let now = |v: &[u8]| s.finish(&p, Answer::Reply(&resp::encode_reply(&Reply::Bulk(Some(v.to_vec())))));
        assert_eq!(
            now(br#"{"s":"demo","v":"2025-06-18","b":"b-2"}"#),
            Next::Done(SessionOutcome::Found(rebound.clone()))
        );
        rebound.backend = Some("b-3".into());
        assert_eq!(now(br#"{"s":"demo","v":"2025-06-18","b":"b-3"}"#), Next::Done(SessionOutcome::Found(rebound)));
        assert_eq!(s.finish(&p, Answer::Reply(b"$-1\r\n")), Next::Done(SessionOutcome::NotFound));
    }

    #[test]
    fn malformed_ids_cost_no_round_trip() {
        for op in [
            SessionOp::Open { id: "x".into(), server: "demo".into() },
            SessionOp::Delete { id: "../*".into(), server: "demo".into() },
        ] {
            assert!(matches!(store().start(op, &mut MemoryEnv::default()), Started::Done(SessionOutcome::NotFound)));
        }
    }

    #[test]
    fn failures_are_clear_and_noauth_retries_once() {
        let s = store();
        let (_, mut p) = started(SessionOp::Open { id: "a".repeat(32), server: "demo".into() });
        assert_eq!(s.finish(&p, Answer::Reply(b"-NOAUTH Authentication required.\r\n")), Next::Reauthenticate);
        assert_eq!(s.finish(&p, Answer::Interrupted), Next::Resend, "another command's re-init reset this one");
        p.retried = true;
        let Next::Done(SessionOutcome::Failed(e)) =
            s.finish(&p, Answer::Reply(b"-NOAUTH Authentication required.\r\n"))
        else {
            panic!()
        };
        assert!(e.0.contains("NOAUTH"), "{e}");
        assert!(
            matches!(s.finish(&p, Answer::Interrupted), Next::Done(SessionOutcome::Failed(_))),
            "sent twice at most"
        );
        let Next::Done(SessionOutcome::Failed(e)) = s.finish(&p, Answer::Failed("timeout".into())) else { panic!() };
        assert_eq!(e.0, "Redis did not answer (timeout)");
        let Next::Done(SessionOutcome::Failed(e)) = s.finish(&p, Answer::Reply(b"-ERR unknown command 'GETEX'\r\n"))
        else {
            panic!()
        };
        assert!(e.0.contains("6.2"), "{e}");
        // An error reply of multibyte characters is cut by bytes, at a character's edge (found by the property
        // test below: 200 characters of it were 300 bytes and more).
        let long = format!("-{}\r\n", "é".repeat(400));
        let Next::Done(SessionOutcome::Failed(e)) = s.finish(&p, Answer::Reply(long.as_bytes())) else { panic!() };
        assert!(e.0.len() <= 227 && e.0.ends_with('é'), "{} bytes: {e}", e.0.len());
        assert!(matches!(s.finish(&p, Answer::Reply(b"garbage")), Next::Done(SessionOutcome::Failed(_))));
        assert!(matches!(s.finish(&p, Answer::Reply(b":1\r\n")), Next::Done(SessionOutcome::Failed(_))));
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn failures_never_quote_the_reply() {
        // The text goes to the client (503) and the log: an unexpected reply was quoted whole, of any size
        // (found by `properties::any_reply_ends_in_a_bounded_outcome`).
        let s = store();
        let (_, open) = started(SessionOp::Open { id: "a".repeat(32), server: "demo".into() });
        let array = resp::encode_reply(&Reply::Array(Some(vec![Reply::Bulk(Some(vec![b'x'; 100_000]))])));
        let error = format!("-ERR {}\r\n", "y".repeat(100_000));
        for (answer, expected) in [
            (array, "unexpected Redis reply (an array)".to_string()),
            (error.into_bytes(), format!("Redis refused the command: ERR {}", "y".repeat(196))),
        ] {
            assert_eq!(
                s.finish(&open, Answer::Reply(&answer)),
                Next::Done(SessionOutcome::Failed(StoreError(expected)))
            );
        }
    }

    #[test]
    fn a_session_of_another_server_is_not_found() {
        let s = store();
        let (_, p) = started(SessionOp::Open { id: "a".repeat(32), server: "demo".into() });
        let other = resp::encode_reply(&Reply::Bulk(Some(br#"{"s":"other","v":"2025-06-18"}"#.to_vec())));
        assert_eq!(s.finish(&p, Answer::Reply(&other)), Next::Done(SessionOutcome::NotFound));
    }
}

#[cfg(test)]
mod properties {
    use super::super::memory::MemoryEnv;
    use super::*;
    use crate::strategies::hostile_string;
    use proptest::prelude::*;

    fn store() -> RedisStore {
        RedisStore::new(&RedisConfig { cluster: "redis".into(), ..RedisConfig::default() }, 60_000)
    }

    /// Replies a Redis server, or whatever else listens there, may send.
    fn reply() -> impl Strategy<Value = Reply> {
        let session = prop_oneof![Just("demo"), Just("other")]
            .prop_map(|server| Session::new(server, "2025-06-18").encode().into_bytes());
        let leaf = prop_oneof![
            prop_oneof![Just("OK".to_string()), "[^\r\n]{0,300}"].prop_map(Reply::Simple),
            prop_oneof![Just("NOAUTH Authentication required.".to_string()), "[^\r\n]{0,3000}"].prop_map(Reply::Error),
            any::<i64>().prop_map(Reply::Integer),
            prop::option::of(prop_oneof![session, prop::collection::vec(any::<u8>(), 0..3000)]).prop_map(Reply::Bulk),
            Just(Reply::Array(None)),
        ];
        leaf.prop_recursive(2, 16, 4, |inner| prop::collection::vec(inner, 0..4).prop_map(|v| Reply::Array(Some(v))))
    }

    fn op() -> impl Strategy<Value = SessionOp> {
        let id = prop_oneof![3 => "[0-9a-f]{32}", 1 => hostile_string()];
        let server = prop_oneof![Just("demo".to_string()), hostile_string()];
        prop_oneof![
            server.clone().prop_map(|server| SessionOp::Create(Session::new(server, "2025-06-18"))),
            (id.clone(), server.clone()).prop_map(|(id, server)| SessionOp::Open { id, server }),
            (id, server).prop_map(|(id, server)| SessionOp::Delete { id, server }),
        ]
    }

    proptest! {
        #![proptest_config(crate::strategies::cases(1000))]

        /// Guards the Redis store against whatever answers on its cluster: any reply, or any bytes, to any
        /// operation ends in an outcome (or one retry), never a panic; a session is found only in a value
        /// that is a session of the server asked about, created only on `+OK`, deleted only on a positive
        /// count; and a failure's text, which goes to the client and the log, stays short and never quotes
        /// the reply's data.
        #[test]
        fn any_reply_ends_in_a_bounded_outcome(
            op in op(),
            answer in prop_oneof![3 => reply().prop_map(|r| resp::encode_reply(&r)), 1 => prop::collection::vec(any::<u8>(), 0..64)],
            retried in any::<bool>(),
        ) {
            let s = store();
            let asked = match &op {
                SessionOp::Open { server, .. } => Some(server.clone()),
                _ => None,
            };
            let pending = match s.start(op, &mut MemoryEnv::default()) {
                Started::Redis(p) => Pending { retried, ..p },
                Started::Done(o) => {
                    prop_assert_eq!(o, SessionOutcome::NotFound);
                    return Ok(());
                }
            };
            let reply = resp::decode(&answer).ok();
            match s.finish(&pending, Answer::Reply(&answer)) {
                Next::Reauthenticate => prop_assert!(!retried && reply.is_some_and(|r| r.is_error("NOAUTH"))),
                Next::Resend => prop_assert!(false, "a reply is never resent"),
                Next::Done(SessionOutcome::Found(found)) => {
                    prop_assert_eq!(Some(&found.server), asked.as_ref());
                    let Some(Reply::Bulk(Some(value))) = reply else { return Err(TestCaseError::fail("found in no value")) };
                    prop_assert_eq!(Session::decode(std::str::from_utf8(&value).unwrap()), Some(found));
                }
                Next::Done(SessionOutcome::Created(id)) => {
                    prop_assert!(matches!(pending.what, Waiting::Create(_)) && reply == Some(Reply::Simple("OK".into())));
                    prop_assert!(is_hex_id(&id));
                }
                Next::Done(SessionOutcome::Deleted) => {
                    prop_assert!(matches!(pending.what, Waiting::Delete) && matches!(reply, Some(Reply::Integer(n)) if n > 0));
                }
                Next::Done(SessionOutcome::Failed(StoreError(why))) => {
                    prop_assert!(why.len() <= 300, "{} bytes: {}", why.len(), why);
                }
                Next::Done(_) => {}
            }
        }
    }
}
