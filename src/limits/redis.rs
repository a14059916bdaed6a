//! Limits in Redis (`scope: cluster`, and every quota), shared by every replica on that Redis: all the
//! counters of one request's calls are checked and spent by one `EVAL` of [`SCRIPT`], so one round trip,
//! atomically (Redis runs a script alone).
//!
//! Keys: `{keyPrefix}limit:{server}/{tool|*}/{limit}/{consumer|*}`, and for quotas `.../{period}`
//! (`2026-11-26`, `2026-11`):
//!
//! | counter     | value                    | expiry                                           |
//! |-------------|--------------------------|--------------------------------------------------|
//! | token bucket| `"{level} {at_ms}"` (level in thousandths of a token) | once it would be full again (`PX`) |
//! | quota       | calls so far this period (`INCR`) | the end of the period (`PEXPIREAT`)     |
//!
//! The script reads the clock of Redis (`TIME`), so replicas whose clocks differ still refill one bucket
//! alike; quota periods are named by the gateway's clock (UTC). Its arguments: the number of calls, then
//! for each call the number of its counters and for each counter `r capacity requests window_ms` or
//! `q requests until_ms 0`; its keys, the counters in the same order. Its reply: two integers per call,
//! the (1-based) counter that refused it, or 0, and how many milliseconds until that counter has room.
//! A call passes only when every counter has room, and then spends one from each.
//!
//! All the keys of one request go in one script, so a Redis Cluster would need them in one hash slot:
//! use a standalone Redis (or a primary with replicas), as Higress's own rate-limit plugins do.

use super::bucket::TOKEN;
use super::{local, Bucket, BucketKind, LimitOutcome, OnStoreError};
use crate::error::GatewayError;
use crate::resp::{self, Reply};
use crate::session::redis::{read, Answer, Read, RedisStore};
use crate::session::Env;

/// The check, in Lua. Kept in step with [`super::bucket`]: the same sums, on the same integers.
pub const SCRIPT: &str = r#"if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out, a, k = {}, 2, 1
for c = 1, tonumber(ARGV[1]) do
  local n, refused, wait, seen = tonumber(ARGV[a]), 0, 0, {}
  a = a + 1
  for b = 1, n do
    local kind, x, y, z = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local v = redis.call('GET', KEYS[k])
    local level = x
    if kind == 'r' then
      local l, at = string.match(v or '', '^(%d+) (%d+)$')
      if l then
        level = math.min(x, tonumber(l) + math.floor(math.max(0, now - tonumber(at)) * y * 1000 / z))
      end
      if level < 1000 and refused == 0 then
        refused, wait = b, math.ceil((1000 - level) * z / (y * 1000))
      end
    elseif (tonumber(v or '0') or 0) >= x and refused == 0 then
      refused, wait = b, math.max(1, y - now)
    end
    seen[b] = {KEYS[k], kind, x, y, z, level}
    a, k = a + 4, k + 1
  end
  if refused == 0 then
    for b = 1, n do
      local s = seen[b]
      if s[2] == 'r' then
        local fill = math.floor(s[3] * s[5] / (s[4] * 1000)) + 1000
        redis.call('SET', s[1], string.format('%d %d', s[6] - 1000, now), 'PX', string.format('%d', fill))
      else
        redis.call('INCR', s[1])
        redis.call('PEXPIREAT', s[1], string.format('%d', s[4]))
      end
    end
  end
  out[2 * c - 1] = refused
  out[2 * c] = wait
end
return out
"#;

/// One call's counters: those in this process (already spent, given back if Redis refuses the call) and
/// those in Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub index: usize,
    pub local: Vec<Bucket>,
    pub buckets: Vec<Bucket>,
}

/// A check waiting for its reply; the host sends `command` (again, after a re-initialisation).
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub command: Vec<u8>,
    /// Whether the command was already sent again after `NOAUTH` or an interrupted connection.
    pub retried: bool,
    checks: Vec<Check>,
    outcome: LimitOutcome,
}

/// What to do with an answer. A command is sent at most twice, as the session store's are.
#[derive(Debug, PartialEq)]
pub enum Next {
    Done(LimitOutcome),
    /// Re-initialise the host's Redis client, then send `pending.command` again.
    Reauthenticate(Pending),
    /// Send `pending.command` again as it is.
    Resend(Pending),
}

impl Pending {
    /// The `EVAL` for `checks`; `outcome` holds the verdicts already reached in this process.
    pub fn new(store: &RedisStore, checks: Vec<Check>, outcome: LimitOutcome) -> Pending {
        let mut keys = Vec::new();
        let mut args = vec![checks.len().to_string()];
        for check in &checks {
            args.push(check.buckets.len().to_string());
            for b in &check.buckets {
                keys.push(format!("{}limit:{}", store.key_prefix(), b.key.as_str()));
                let (kind, x, y, z) = match b.kind {
                    BucketKind::Rate(r) => ("r", r.capacity.saturating_mul(TOKEN), r.requests, r.window_ms),
                    BucketKind::Quota { requests, until_ms } => ("q", requests, until_ms, 0),
                };
                args.extend([kind.to_string(), x.to_string(), y.to_string(), z.to_string()]);
            }
        }
        let mut command: Vec<&str> = vec!["EVAL", SCRIPT];
        let count = keys.len().to_string();
        command.push(&count);
        command.extend(keys.iter().map(String::as_str));
        command.extend(args.iter().map(String::as_str));
        Pending { command: resp::command(&command), retried: false, checks, outcome }
    }
}

/// Interprets the host's answer; `env` gives back this process's tokens of calls Redis refused.
pub fn finish(mut pending: Pending, answer: Answer<'_>, env: &mut dyn Env) -> Next {
    let reply = match read(answer, pending.retried) {
        Read::Reply(r) => r,
        Read::Reauthenticate => {
            pending.retried = true;
            return Next::Reauthenticate(pending);
        }
        Read::Resend => {
            pending.retried = true;
            return Next::Resend(pending);
        }
        Read::Failed(why) => return failed(pending, env, &why),
    };
    let verdicts = match &reply {
        Reply::Array(Some(items)) if items.len() == 2 * pending.checks.len() => {
            let ints: Option<Vec<i64>> =
                items.iter().map(|r| if let Reply::Integer(n) = r { Some(*n) } else { None }).collect();
            ints
        }
        _ => None,
    };
    let Some(verdicts) = verdicts else {
        let why = match &reply {
            // Redis's errors are short; whatever else answers may send anything, so the text is bounded.
            Reply::Error(e) => format!("Redis refused the limit check: {}", e.chars().take(160).collect::<String>()),
            other => format!("unexpected Redis reply to the limit check ({})", other.kind()),
        };
        return failed(pending, env, &why);
    };
    let mut outcome = pending.outcome;
    for (check, pair) in pending.checks.iter().zip(verdicts.chunks(2)) {
        let (refused_by, wait_ms) = (pair[0], pair[1]);
        if refused_by <= 0 {
            continue;
        }
        let bucket = usize::try_from(refused_by - 1).ok().and_then(|i| check.buckets.get(i));
        let refusal = match bucket {
            Some(b) => b.refusal(u64::try_from(wait_ms).unwrap_or(0)),
            None => check.buckets[0].refusal(1000),
        };
        local::refund(env.kv(), &check.local);
        outcome.refused.push((check.index, refusal));
    }
    Next::Done(outcome)
}

fn failed(pending: Pending, env: &mut dyn Env, why: &str) -> Next {
    Next::Done(unanswered(pending, env, why))
}

/// The verdicts when the command could not be sent or was never answered (each limit's `onStoreError`).
pub fn unanswered(pending: Pending, env: &mut dyn Env, why: &str) -> LimitOutcome {
    store_failed(env, pending.checks, pending.outcome, why)
}

/// The verdicts when Redis cannot answer: each call passes unless one of its counters says `deny`.
pub fn store_failed(env: &mut dyn Env, checks: Vec<Check>, mut outcome: LimitOutcome, why: &str) -> LimitOutcome {
    for check in checks {
        let Some(strict) = check.buckets.iter().find(|b| b.on_store_error == OnStoreError::Deny) else { continue };
        local::refund(env.kv(), &check.local);
        let message = format!(
            "the rate-limit store is unavailable and {} refuses calls then (onStoreError: deny): {why}",
            strict.describe()
        );
        outcome.refused.push((check.index, GatewayError::StoreUnavailable { message }));
    }
    outcome.store_error = Some(why.to_string());
    outcome
}
