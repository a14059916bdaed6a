//! Token buckets in this Envoy process's shared data (`scope: process`): one key per counter,
//! `mcp-gateway/limit/{server}/{tool|*}/{limit}/{consumer|*}`, holding `"{level} {at_ms}"`
//! ([`super::bucket`]). Every worker of the process reads and writes the same key with compare-and-swap,
//! retrying from a fresh read when another worker wrote in between, so no two workers spend one token.
//!
//! A key is created empty before its first token is taken, and the counters of `per: all` limits are
//! created at configure time ([`prepare`]), before traffic: only then is every write a compare-and-swap.
//! (Creating a key races with nothing but another creation of the same key, so at worst a new consumer's
//! very first call could reset that consumer's fresh bucket once.)
//!
//! Shared data cannot delete a key: counters stay for the life of the process, one small key per limit
//! (and per consumer, for `per: consumer`), a bounded set since consumers are configured.
//!
//! A worker takes a token with one write, without reading first, when its guess of the counter's CAS
//! holds ([`Written`]).
//!
//! Token leasing: on a counter whose burst is at least 64, a take may also lease the worker a few more
//! tokens (at most 32, a sixteenth of the tokens in the bucket, and a sixteenth of the capacity per lease
//! period of one window, at most a second), in the same write; the worker then spends them without a
//! hostcall until they run out or their period ends (unspent ones are lost, never given back). The
//! counter stores `"{level} {at_ms} {leased}"`, and within a period refills only up to its capacity less
//! the tokens leased in it ([`bucket::Rate::lease`]), so that over any interval all workers together
//! admit at most what one strict bucket of the same capacity and rate admits; what leasing costs is the
//! other way only: a call may be refused while another worker still holds up to a sixteenth of the
//! capacity, for at most its period. A smaller burst never leases and counts exactly as before.

use super::bucket::{self, Level};
use super::{Bucket, BucketKind};
use crate::error::GatewayError;
use crate::session::KeyValue;
use std::cell::RefCell;

/// The prefix of the counters' keys.
pub const PREFIX: &str = "mcp-gateway/limit/";
/// Compare-and-swap attempts per counter before the check gives up on contention.
const CAS_RETRIES: usize = 32;

/// What one attempt on a counter found.
enum Took {
    /// From the counter, or (`true`) from this worker's lease.
    Taken(bool),
    Refused(u64),
    /// Other workers kept winning the race.
    Contended,
}

/// What this worker last wrote to its counters, so that it can take the next token with the write alone.
///
/// Envoy's shared data gives each write the next value of one counter of the whole process as its CAS
/// (proxy-wasm-cpp-host's `SharedData::nextCas`): when nothing else in the process wrote between the
/// write a worker read and its own, its own write's CAS is the one it read plus one. The next take writes
/// with that guess without reading: the compare-and-swap checks it, and succeeds only if the counter still
/// holds what this worker wrote (every later write of any key gets a larger CAS), so the level computed
/// from it is the stored one and the limit stays exact. A wrong guess (another worker, a new session or
/// another plugin wrote meanwhile) costs one refused write, then the read and write as before; after a
/// miss the counter is read first for twice as many takes as after the miss before (up to 64), so a
/// process whose workers keep writing wastes about one write in 64 takes. A refusal is always decided
/// on a fresh read (another worker may have given tokens back). Per worker (one per VM), never shared.
/// It also holds the worker's leased tokens, by counter.
#[derive(Debug, Default)]
pub struct Written(RefCell<Vec<Last>>);

/// This worker's last write of one counter.
#[derive(Debug)]
struct Last {
    key: Box<str>,
    level: Level,
    /// The CAS the write most likely got.
    cas: u32,
    /// Takes left that read first, and how many the last miss asked for.
    wait: u8,
    backoff: u8,
    /// Leased tokens not yet spent, and the lease period (`at_ms / period`) they may be spent in.
    left: u64,
    period: u64,
}

/// Counters remembered per server (the first ones written; more are read first, as without a guess).
const REMEMBERED: usize = 32;
/// The most takes that read first after a wrong guess.
const MAX_BACKOFF: u8 = 64;

/// A copy (of a server's limits) starts knowing nothing.
impl Clone for Written {
    fn clone(&self) -> Written {
        Written::default()
    }
}

/// Not part of a configuration: two servers' limits are equal whatever their workers wrote.
impl PartialEq for Written {
    fn eq(&self, _: &Written) -> bool {
        true
    }
}

impl Written {
    /// Spends a token leased for `key`, if one is left in the period of `now_ms`.
    fn spend(&self, key: &str, now_ms: u64, period_ms: u64) -> bool {
        let Ok(mut all) = self.0.try_borrow_mut() else { return false };
        let Some(last) = all.iter_mut().find(|l| &*l.key == key) else { return false };
        if last.left == 0 {
            return false;
        }
        if now_ms / period_ms != last.period {
            last.left = 0;
            return false;
        }
        last.left -= 1;
        true
    }

    /// Gives back a leased token of `key` spent by a call another limit refused.
    fn unspend(&self, key: &str) {
        let Ok(mut all) = self.0.try_borrow_mut() else { return };
        if let Some(last) = all.iter_mut().find(|l| &*l.key == key) {
            last.left += 1;
        }
    }

    /// Whether a lease of `key` would be remembered (a worker that cannot hold one takes single tokens).
    fn can_hold(&self, key: &str) -> bool {
        self.0.try_borrow().is_ok_and(|all| all.len() < REMEMBERED || all.iter().any(|l| &*l.key == key))
    }

    /// The level and CAS to write `key` with, when a guess is due.
    fn guess(&self, key: &str) -> Option<(Level, u32)> {
        let mut all = self.0.try_borrow_mut().ok()?;
        let last = all.iter_mut().find(|l| &*l.key == key)?;
        if last.wait > 0 {
            last.wait -= 1;
            return None;
        }
        Some((last.level, last.cas))
    }

    /// `key` now holds `level`, written with `cas`, and this worker holds `left` tokens of it for the lease
    /// period `period`; a guess that held resets the back-off.
    fn wrote(&self, key: &str, level: Level, cas: u32, guessed: bool, left: u64, period: u64) {
        let Ok(mut all) = self.0.try_borrow_mut() else { return };
        // Envoy's counter skips 0 when it wraps.
        let next = cas.wrapping_add(1).max(1);
        if let Some(last) = all.iter_mut().find(|l| &*l.key == key) {
            (last.level, last.cas, last.left, last.period) = (level, next, left, period);
            if guessed {
                last.backoff = 0;
            }
        } else if all.len() < REMEMBERED {
            all.push(Last { key: key.into(), level, cas: next, wait: 0, backoff: 0, left, period });
        }
    }

    /// The guess for `key` was wrong: read first for a while.
    fn missed(&self, key: &str) {
        let Ok(mut all) = self.0.try_borrow_mut() else { return };
        if let Some(last) = all.iter_mut().find(|l| &*l.key == key) {
            last.backoff = last.backoff.saturating_mul(2).clamp(1, MAX_BACKOFF);
            last.wait = last.backoff;
        }
    }
}

fn take_one(kv: &mut dyn KeyValue, bucket: &Bucket, now_ms: u64, written: &Written) -> Took {
    let BucketKind::Rate(rate) = bucket.kind else {
        return Took::Taken(false); // quotas live in Redis only (refused at load otherwise)
    };
    let key = bucket.key.as_str();
    let period_ms = rate.lease_period_ms();
    if written.spend(key, now_ms, period_ms) {
        return Took::Taken(true);
    }
    let may_lease = written.can_hold(key);
    if let Some((level, cas)) = written.guess(key) {
        if let Ok((next, k)) = rate.lease(Some(level), now_ms, may_lease) {
            if matches!(kv.set(key, bucket::encode(next).as_bytes(), Some(cas)), Ok(true)) {
                written.wrote(key, next, cas, true, k - 1, next.at_ms / period_ms);
                return Took::Taken(false);
            }
            written.missed(key);
        }
    }
    for _ in 0..CAS_RETRIES {
        let (value, cas) = kv.get(key);
        let Some(cas) = cas else {
            // A missing key is written whatever the CAS, so it is created empty (a full bucket) first, and
            // every token is then taken with a compare-and-swap.
            let _ = kv.set(key, b"", None);
            continue;
        };
        match rate.lease(bucket::decode(&value), now_ms, may_lease) {
            Err(wait_ms) => return Took::Refused(wait_ms),
            Ok((next, k)) => {
                if matches!(kv.set(key, bucket::encode(next).as_bytes(), Some(cas)), Ok(true)) {
                    written.wrote(key, next, cas, false, k - 1, next.at_ms / period_ms);
                    return Took::Taken(false);
                }
            }
        }
    }
    Took::Contended
}

/// Takes one token from each of `buckets`, or none: a counter without room refuses the call, and the
/// tokens already taken from the others are given back. `written`: this worker's last writes.
pub fn take(kv: &mut dyn KeyValue, buckets: &[Bucket], now_ms: u64, written: &Written) -> Result<(), GatewayError> {
    // Which of the first 64 counters gave a leased token (given back to the lease, not the counter).
    let mut leased = 0u64;
    for (i, b) in buckets.iter().enumerate() {
        let refusal = match take_one(kv, b, now_ms, written) {
            Took::Taken(from_lease) => {
                if from_lease && i < 64 {
                    leased |= 1 << i;
                }
                continue;
            }
            Took::Refused(wait_ms) => b.refusal(wait_ms),
            // Thousands of calls a second on one counter: refusing one briefly is what the limit is for.
            Took::Contended => b.refusal(1),
        };
        for (j, taken) in buckets[..i].iter().enumerate() {
            if j < 64 && leased & (1 << j) != 0 {
                written.unspend(taken.key.as_str());
            } else {
                refund(kv, std::slice::from_ref(taken));
            }
        }
        return Err(refusal);
    }
    Ok(())
}

/// Creates the counters whose keys are known before traffic (those of `per: all` limits), empty.
pub fn prepare(kv: &mut dyn KeyValue, buckets: &[Bucket]) {
    for b in buckets {
        let key = b.key.as_str();
        if kv.get(key).1.is_none() {
            let _ = kv.set(key, b"", None);
        }
    }
}

/// Gives back one token to each of `buckets` (a call another limit refused).
pub fn refund(kv: &mut dyn KeyValue, buckets: &[Bucket]) {
    for b in buckets {
        let BucketKind::Rate(rate) = b.kind else { continue };
        let key = b.key.as_str();
        for _ in 0..CAS_RETRIES {
            let (value, cas) = kv.get(key);
            let Some(state) = bucket::decode(&value) else { break };
            let back: Level = bucket::refund(state, rate.capacity);
            if matches!(kv.set(key, bucket::encode(back).as_bytes(), cas), Ok(true)) {
                break;
            }
        }
    }
}
