//! Answers of SSE polling ([`super::poll`]) kept in Redis (`sessions.store: redis`), so that the client's
//! answer POST and its poll may reach different replicas.
//!
//! One key per answer, `{keyPrefix}answer:{<session>}:<request id>`, expiring with the request state
//! ([`super::STATE_TTL_MS`]) by Redis's own TTL; the session id in braces puts all the answers of one
//! session in one hash slot, so the take below also runs on a Redis Cluster. Each operation is one command:
//!
//! | operation | command                              | reply                                      |
//! |-----------|--------------------------------------|--------------------------------------------|
//! | put       | `SET key answer PX 600000`           | `+OK`                                      |
//! | take      | `EVAL` [`TAKE`] with the round's keys | each answer or nil; all deleted if all in |
//!
//! The take is a script so that it is atomic: when two polls of one call reach two replicas at once,
//! exactly one gets the answers (and makes the upstream call); the other finds none and gets the priming
//! event again, as a poll after the answers were taken does.

use super::poll::{AnswerOp, AnswerOutcome};
use super::STATE_TTL_MS;
use crate::resp::{self, Reply};
use crate::session::redis::{read, Answer, Read, RedisStore};

/// Reads every answer of a round and deletes them all, only if every one is in (Redis runs a script alone).
pub const TAKE: &str = r#"local v = redis.call('MGET', unpack(KEYS))
for i = 1, #KEYS do
  if not v[i] then return v end
end
redis.call('DEL', unpack(KEYS))
return v
"#;

/// A command waiting for its reply; the host sends `command` (again, after a re-initialisation).
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// How many answers a take waits for (`None`: a put).
    take: Option<usize>,
    pub command: Vec<u8>,
    /// Whether the command was already sent again (after `NOAUTH` or an interrupted connection).
    pub retried: bool,
}

/// What to do with the host's answer. A command is sent at most twice.
#[derive(Debug, PartialEq)]
pub enum Next {
    Done(AnswerOutcome),
    /// Re-initialise the host's Redis client, then send the command again.
    Reauthenticate,
    /// Send the command again as it is.
    Resend,
}

fn key(store: &RedisStore, session: &str, id: &str) -> String {
    format!("{}answer:{{{session}}}:{id}", store.key_prefix())
}

/// The command for an answer operation (no I/O here; the host sends it).
pub fn start(store: &RedisStore, op: AnswerOp) -> Pending {
    let (command, take) = match op {
        AnswerOp::Put { session, id, answer } => {
            let ttl = STATE_TTL_MS.to_string();
            (resp::command(&["SET", &key(store, &session, &id), &answer, "PX", &ttl]), None)
        }
        AnswerOp::Take { session, ids } => {
            let mut args = vec!["EVAL".to_string(), TAKE.to_string(), ids.len().to_string()];
            args.extend(ids.iter().map(|id| key(store, &session, id)));
            (resp::command(&args), Some(ids.len()))
        }
    };
    Pending { take, command, retried: false }
}

/// Interprets the host's answer.
pub fn finish(pending: &Pending, answer: Answer<'_>) -> Next {
    let failed = |why: String| Next::Done(AnswerOutcome::Failed(why));
    let reply = match read(answer, pending.retried) {
        Read::Reply(r) => r,
        Read::Reauthenticate => return Next::Reauthenticate,
        Read::Resend => return Next::Resend,
        Read::Failed(why) => return failed(why),
    };
    Next::Done(match (pending.take, reply) {
        (None, Reply::Simple(ok)) if ok == "OK" => AnswerOutcome::Stored,
        (Some(n), Reply::Array(Some(items))) if items.len() == n => {
            let mut found = Vec::with_capacity(n);
            for item in items {
                match item {
                    Reply::Bulk(Some(v)) => match String::from_utf8(v) {
                        Ok(text) => found.push(Some(text)),
                        Err(_) => return failed("an answer in Redis is not UTF-8".into()),
                    },
                    Reply::Bulk(None) => found.push(None),
                    other => return failed(format!("unexpected Redis reply ({})", other.kind())),
                }
            }
            AnswerOutcome::Found(found)
        }
        (_, Reply::Error(e)) => {
            // Redis's errors are short; whatever else answers may send anything, so the text is bounded.
            let e: String = e.split_whitespace().take(12).collect::<Vec<_>>().join(" ").chars().take(200).collect();
            AnswerOutcome::Failed(format!("Redis refused the command: {e}"))
        }
        (_, other) => AnswerOutcome::Failed(format!("unexpected Redis reply ({})", other.kind())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisConfig;

    fn store() -> RedisStore {
        RedisStore::new(&RedisConfig { cluster: "redis".into(), key_prefix: "p:".into(), ..RedisConfig::default() }, 0)
    }

    fn args(p: &Pending) -> Vec<String> {
        resp::decode_command(&p.command).unwrap().into_iter().map(|a| String::from_utf8(a).unwrap()).collect()
    }

    #[test]
    fn one_command_per_operation_keyed_by_session() {
        let put = start(&store(), AnswerOp::Put { session: "s1".into(), id: "mcpgw.ab.k".into(), answer: "{}".into() });
        assert_eq!(args(&put), ["SET", "p:answer:{s1}:mcpgw.ab.k", "{}", "PX", "600000"]);
        assert_eq!(finish(&put, Answer::Reply(b"+OK\r\n")), Next::Done(AnswerOutcome::Stored));
        let ids = vec!["mcpgw.ab.a".to_string(), "mcpgw.ab.b".to_string()];
        let take = start(&store(), AnswerOp::Take { session: "s1".into(), ids });
        assert_eq!(args(&take), ["EVAL", TAKE, "2", "p:answer:{s1}:mcpgw.ab.a", "p:answer:{s1}:mcpgw.ab.b"]);
        let reply = Reply::Array(Some(vec![Reply::Bulk(Some(b"1".to_vec())), Reply::Bulk(None)]));
        let found = AnswerOutcome::Found(vec![Some("1".into()), None]);
        assert_eq!(finish(&take, Answer::Reply(&resp::encode_reply(&reply))), Next::Done(found));
    }

    #[test]
    fn failures_are_clear_bounded_and_resent_once() {
        let take = start(&store(), AnswerOp::Take { session: "s".into(), ids: vec!["mcpgw.a.k".into()] });
        assert_eq!(finish(&take, Answer::Reply(b"-NOAUTH Authentication required.\r\n")), Next::Reauthenticate);
        assert_eq!(finish(&take, Answer::Interrupted), Next::Resend);
        let again = Pending { retried: true, ..take.clone() };
        assert!(matches!(finish(&again, Answer::Interrupted), Next::Done(AnswerOutcome::Failed(_))));
        let Next::Done(AnswerOutcome::Failed(e)) =
            finish(&again, Answer::Reply(b"-NOAUTH Authentication required.\r\n"))
        else {
            panic!()
        };
        assert!(e.contains("NOAUTH"), "{e}");
        let timeout = finish(&take, Answer::Failed("timeout".into()));
        assert_eq!(timeout, Next::Done(AnswerOutcome::Failed("Redis did not answer (timeout)".into())));
        let long = format!("-ERR {}\r\n", "y".repeat(100_000));
        let Next::Done(AnswerOutcome::Failed(e)) = finish(&take, Answer::Reply(long.as_bytes())) else { panic!() };
        assert!(e.len() < 300, "{}", e.len());
        for bad in
            [&b"garbage"[..], b":1\r\n", b"*2\r\n$1\r\na\r\n$1\r\nb\r\n", b"*1\r\n:1\r\n", b"*1\r\n$1\r\n\xff\r\n"]
        {
            assert!(matches!(finish(&take, Answer::Reply(bad)), Next::Done(AnswerOutcome::Failed(_))), "{bad:?}");
        }
        let put = start(&store(), AnswerOp::Put { session: "s".into(), id: "i".into(), answer: "{}".into() });
        assert!(matches!(finish(&put, Answer::Reply(b"$-1\r\n")), Next::Done(AnswerOutcome::Failed(_))));
    }
}
