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

use super::bucket::{self, Level};
use super::{Bucket, BucketKind};
use crate::error::GatewayError;
use crate::session::KeyValue;

/// The prefix of the counters' keys.
pub const PREFIX: &str = "mcp-gateway/limit/";
/// Compare-and-swap attempts per counter before the check gives up on contention.
const CAS_RETRIES: usize = 32;

/// What one attempt on a counter found.
enum Took {
    Taken,
    Refused(u64),
    /// Other workers kept winning the race.
    Contended,
}

fn take_one(kv: &mut dyn KeyValue, bucket: &Bucket, now_ms: u64) -> Took {
    let BucketKind::Rate(rate) = bucket.kind else {
        return Took::Taken; // quotas live in Redis only (refused at load otherwise)
    };
    let key = bucket.key.as_str();
    for _ in 0..CAS_RETRIES {
        let (value, cas) = kv.get(key);
        if cas.is_none() {
            // A missing key is written whatever the CAS, so it is created empty (a full bucket) first, and
            // every token is then taken with a compare-and-swap.
            let _ = kv.set(key, b"", None);
            continue;
        }
        match rate.take(bucket::decode(&value), now_ms) {
            Err(wait_ms) => return Took::Refused(wait_ms),
            Ok(next) => {
                if matches!(kv.set(key, bucket::encode(next).as_bytes(), cas), Ok(true)) {
                    return Took::Taken;
                }
            }
        }
    }
    Took::Contended
}

/// Takes one token from each of `buckets`, or none: a counter without room refuses the call, and the
/// tokens already taken from the others are given back.
pub fn take(kv: &mut dyn KeyValue, buckets: &[Bucket], now_ms: u64) -> Result<(), GatewayError> {
    for (i, b) in buckets.iter().enumerate() {
        let refusal = match take_one(kv, b, now_ms) {
            Took::Taken => continue,
            Took::Refused(wait_ms) => b.refusal(wait_ms),
            // Thousands of calls a second on one counter: refusing one briefly is what the limit is for.
            Took::Contended => b.refusal(1),
        };
        refund(kv, &buckets[..i]);
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
