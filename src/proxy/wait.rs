//! What a held proxied request or answer waits for: the relay's counterpart of the step driver's wait
//! ([`crate::driver`]). The relay decides that a request (or its answer) must wait for an asynchronous step
//! (a session store's or the rate limits' Redis command, a call to the guard service); the host sends it,
//! holds the exchange, and reports the completion here, which reads it (resend or re-authenticate once,
//! as the driver does) into the [`Done`] the relay goes on with. A step that cannot be sent, or that the
//! host never answers by its deadline, fails the same way.

use crate::driver::REDIS_GRACE_MS;
use crate::gateway::Gateway;
use crate::limits::LimitOutcome;
use crate::session::{redis, Env, SessionOutcome, StoreError};
use crate::upstream::{UpstreamRequest, UpstreamResult};

/// An asynchronous step a proxied exchange is held for.
#[derive(Debug)]
pub enum Pending {
    /// A session store operation in Redis.
    Session(redis::Pending),
    /// The Redis counters of a request's `tools/call`s ([`crate::limits::redis`]).
    Limit(crate::limits::redis::Pending),
    /// An HTTP call to a cluster (the guard service).
    Call(UpstreamRequest),
}

/// What a step came to.
#[derive(Debug)]
pub enum Done {
    Session(SessionOutcome),
    Limit(LimitOutcome),
    Call(UpstreamResult),
}

/// What to do with the host's answer to a Redis command.
#[derive(Debug)]
pub enum Next {
    Done(Done),
    /// Re-initialise the host's Redis client ([`crate::driver::Host::reauthenticate`]), then send again.
    Reauthenticate(Pending),
    /// Send again as it is.
    Resend(Pending),
}

impl Pending {
    /// The Redis command to send; `None` for an HTTP call.
    pub fn command(&self) -> Option<&[u8]> {
        match self {
            Pending::Session(p) => Some(&p.command),
            Pending::Limit(p) => Some(&p.command),
            Pending::Call(_) => None,
        }
    }

    /// When the exchange stops waiting on a host that never reported (it should have, at the step's own
    /// timeout): that timeout plus the driver's grace.
    pub fn deadline_ms(&self, gw: &Gateway, now_ms: u64) -> u64 {
        let timeout = match self {
            Pending::Call(r) => r.timeout_ms,
            _ => gw.redis().map_or(0, |r| r.timeout_ms),
        };
        now_ms.saturating_add(timeout).saturating_add(REDIS_GRACE_MS)
    }

    /// Reads the host's answer to the Redis command; `env` gives back this process's tokens of calls
    /// Redis refused.
    pub fn on_redis(self, gw: &Gateway, answer: redis::Answer<'_>, env: &mut dyn Env) -> Next {
        match self {
            Pending::Session(mut p) => match gw.sessions.on_redis_reply(&p, answer) {
                redis::Next::Done(outcome) => Next::Done(Done::Session(outcome)),
                redis::Next::Reauthenticate => {
                    p.retried = true;
                    Next::Reauthenticate(Pending::Session(p))
                }
                redis::Next::Resend => {
                    p.retried = true;
                    Next::Resend(Pending::Session(p))
                }
            },
            Pending::Limit(p) => match crate::limits::redis::finish(p, answer, env) {
                crate::limits::redis::Next::Done(outcome) => Next::Done(Done::Limit(outcome)),
                crate::limits::redis::Next::Reauthenticate(p) => Next::Reauthenticate(Pending::Limit(p)),
                crate::limits::redis::Next::Resend(p) => Next::Resend(Pending::Limit(p)),
            },
            call @ Pending::Call(_) => Next::Done(call.failed(env, "a Redis reply for an HTTP call".into())),
        }
    }

    /// The step failed: it could not be sent, or nothing was reported by its deadline.
    pub fn failed(self, env: &mut dyn Env, why: String) -> Done {
        match self {
            Pending::Session(_) => Done::Session(SessionOutcome::Failed(StoreError(why))),
            Pending::Limit(p) => Done::Limit(crate::limits::redis::unanswered(p, env, &why)),
            Pending::Call(_) => Done::Call(UpstreamResult::Failed(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::memory::MemoryEnv;
    use crate::session::SessionOp;

    fn gateway() -> Gateway {
        let cfg = "sessions: {store: redis, redis: {cluster: r, timeoutMs: 250}}\nservers:\n- name: up\n  type: \
                   mcp-proxy\n  mcpServerURL: /mcp\n";
        Gateway::from_config_str(cfg).unwrap()
    }

    fn session(gw: &Gateway, env: &mut MemoryEnv) -> Pending {
        let op = SessionOp::Open { id: "0123456789abcdef0123456789abcdef".into(), server: "up".into() };
        match gw.sessions.start(op, env) {
            crate::session::Started::Redis(p) => Pending::Session(p),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_session_command_is_sent_again_once_then_fails_and_its_deadline_is_redis_timeout_and_grace() {
        let gw = gateway();
        let mut env = MemoryEnv::default();
        let pending = session(&gw, &mut env);
        assert_eq!(pending.deadline_ms(&gw, 10), 10 + 250 + REDIS_GRACE_MS);
        let Next::Reauthenticate(again) = pending.on_redis(&gw, redis::Answer::Reply(b"-NOAUTH x\r\n"), &mut env)
        else {
            panic!()
        };
        let Next::Done(Done::Session(SessionOutcome::Failed(_))) =
            again.on_redis(&gw, redis::Answer::Interrupted, &mut env)
        else {
            panic!("a command is sent again once")
        };
        let Next::Resend(again) = session(&gw, &mut env).on_redis(&gw, redis::Answer::Interrupted, &mut env) else {
            panic!()
        };
        let found = again.on_redis(&gw, redis::Answer::Reply(b"$-1\r\n"), &mut env);
        assert!(matches!(found, Next::Done(Done::Session(SessionOutcome::NotFound))), "{found:?}");
        let failed = session(&gw, &mut env).failed(&mut env, "down".into());
        assert!(matches!(failed, Done::Session(SessionOutcome::Failed(e)) if e.0 == "down"));
    }

    #[test]
    fn an_http_call_waits_for_its_own_timeout_and_fails_as_an_upstream_failure() {
        let gw = gateway();
        let call = Pending::Call(UpstreamRequest {
            dispatch: crate::upstream::Dispatch::Call,
            cluster: "guard".into(),
            method: "POST".into(),
            authority: "guard".into(),
            path: "/check".into(),
            headers: Vec::new(),
            body: None,
            timeout_ms: 700,
        });
        assert!(call.command().is_none());
        assert_eq!(call.deadline_ms(&gw, 5), 5 + 700 + REDIS_GRACE_MS);
        let failed = call.failed(&mut MemoryEnv::default(), "no answer".into());
        assert!(matches!(failed, Done::Call(UpstreamResult::Failed(why)) if why == "no answer"));
    }
}
