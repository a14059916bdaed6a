use super::*;
use crate::gateway::Gateway;
use crate::resp;
use crate::session::memory::{MemoryEnv, MemoryKv};
use crate::session::redis::Answer;
use crate::session::KeyValue;

const REDIS: &str = "sessions: {store: local, redis: {cluster: redis, keyPrefix: 'p:'}}\n";

fn gateway(limits: &str, tool_limits: &str) -> Result<Gateway, String> {
    let uses_redis = [limits, tool_limits].iter().any(|l| l.contains("cluster") || l.contains("quotas"));
    let redis = if uses_redis { REDIS } else { "" };
    let text = format!(
        "{redis}servers:\n  - name: demo\n    upstream: {{cluster: api}}\n{limits}    tools:\n      - name: weather\n        \
         requestTemplate: {{url: /w}}\n{tool_limits}      - name: other\n        requestTemplate: {{url: /o}}\n"
    );
    Gateway::from_config_str(&text).map_err(|e| e.to_string())
}

fn limits_of(gw: &Gateway) -> &ServerLimits {
    &gw.servers[0].limits
}

fn alice() -> Caller {
    Caller { consumer: Some("alice".into()), ..Caller::default() }
}

#[test]
fn limits_are_read_per_server_and_per_tool() {
    let gw = gateway(
        "    rateLimits: [{requests: 100, window: 1m}]\n",
        "        rateLimits: [{requests: 5, window: 2s, burst: 10, per: consumer}]\n        quotas: [{requests: 1000, period: day, per: consumer, onStoreError: deny}]\n",
    )
    .unwrap();
    let l = limits_of(&gw);
    assert!(l.applies("weather") && l.applies("other"), "the server's limit applies to every tool");
    let plan = l.plan("demo", "weather", &alice(), 1_764_122_700_000);
    let keys: Vec<&str> = plan.iter().map(|b| b.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "mcp-gateway/limit/demo/*/r100w60000b100/*",
            "mcp-gateway/limit/demo/weather/r5w2000b10/alice",
            "demo/weather/q1000d/alice/2025-11-26"
        ]
    );
    assert_eq!(plan[0].kind, BucketKind::Rate(Rate { requests: 100, window_ms: 60_000, capacity: 100 }));
    assert_eq!(plan[2].kind, BucketKind::Quota { requests: 1000, until_ms: 1_764_201_600_000 });
    assert_eq!(
        (plan[1].scope, plan[2].scope, plan[2].on_store_error),
        (Scope::Process, Scope::Cluster, OnStoreError::Deny)
    );
    assert_eq!(
        plan[1].describe(),
        "tool 'weather' of server 'demo' allows 5 calls per 2s, bursts of 10 for consumer 'alice' (rateLimits[0])"
    );
    assert!(matches!(plan[0].key, Key::Fixed(_)), "a per: all rate limit's key is written at load");
    assert!(matches!(plan[1].key, Key::Built(_)));
    assert_eq!(plan[0].describe(), "server 'demo' allows 100 calls per 1m (rateLimits[0])");
    assert_eq!(l.plan("demo", "other", &alice(), 0).len(), 1);
    // Per consumer: the anonymous caller has a counter of its own, and no name reaches into another key.
    let anon = l.plan("demo", "weather", &Caller::anonymous(), 0);
    assert_eq!(anon[1].key, "mcp-gateway/limit/demo/weather/r5w2000b10/-");
    assert!(anon[1].describe().ends_with("for anonymous callers (rateLimits[0])"), "{}", anon[1].describe());
    let sly = Caller { consumer: Some("a/../b:c%d é".into()), ..Caller::default() };
    assert_eq!(
        l.plan("demo", "weather", &sly, 0)[1].key,
        "mcp-gateway/limit/demo/weather/r5w2000b10/a%2F..%2Fb%3Ac%25d%20%C3%A9"
    );
    assert_eq!(l.first_in_redis().as_deref(), Some("tool 'weather' field 'quotas[0]'"));
    let known: Vec<String> = l.known_process_buckets("demo").into_iter().map(|b| b.key.as_str().to_string()).collect();
    assert_eq!(known, ["mcp-gateway/limit/demo/*/r100w60000b100/*"], "only per: all counters are known before traffic");
}

#[test]
fn windows_read_as_durations() {
    for (w, ms) in
        [("500ms", 500), ("10s", 10_000), ("1m", 60_000), ("2h", 7_200_000), ("1d", 86_400_000), ("30", 30_000)]
    {
        assert_eq!(duration_ms(&Value::from(w)), Some(ms), "{w}");
    }
    assert_eq!(duration_ms(&Value::from(5)), Some(5000));
    for bad in ["", "m", "1y", "-1s", "1.5s"] {
        assert_eq!(duration_ms(&Value::from(bad)), None, "{bad}");
    }
}

#[test]
fn invalid_limits_are_refused_at_load_naming_server_tool_and_field() {
    let cases = [
        ("    rateLimits: [{window: 1s}]\n", "", "server 'demo' field 'rateLimits[0].requests': is required"),
        ("    rateLimits: [{requests: 0, window: 1s}]\n", "", "field 'rateLimits[0].requests': must be between 1"),
        (
            "",
            "        rateLimits: [{requests: 5}]\n",
            "server 'demo' tool 'weather' field 'rateLimits[0].window': is required",
        ),
        ("", "        rateLimits: [{requests: 5, window: 1y}]\n", "field 'rateLimits[0].window': must be a duration"),
        ("", "        rateLimits: [{requests: 5, window: 32d}]\n", "must be between 1ms and 31d"),
        ("", "        rateLimits: [{requests: 5, window: 1s, burst: 0}]\n", "field 'rateLimits[0].burst'"),
        (
            "",
            "        rateLimits: [{requests: 5, window: 1s, per: user}]\n",
            "field 'rateLimits[0].per': 'user' is not one of all, consumer",
        ),
        ("", "        rateLimits: [{requests: 5, window: 1s, scope: global}]\n", "field 'rateLimits[0].scope'"),
        (
            "",
            "        rateLimits: [{requests: 5, window: 1s, onStoreError: deny}]\n",
            "field 'rateLimits[0].onStoreError': only limits in Redis",
        ),
        (
            "",
            "        rateLimits: [{requests: 5, window: 1s, scope: cluster, onStoreError: maybe}]\n",
            "'maybe' is not one of allow, deny",
        ),
        (
            "",
            "        rateLimits: [{requests: 5, window: 1s, windw: 2s}]\n",
            "field 'rateLimits[0].windw': unknown field",
        ),
        ("", "        rateLimits: {requests: 5}\n", "field 'rateLimits': must be a list"),
        ("", "        quotas: [{requests: 5}]\n", "tool 'weather' field 'quotas[0].period': is required"),
        ("", "        quotas: [{requests: 5, period: week}]\n", "'week' is not one of day, month"),
    ];
    for (server, tool, expected) in cases {
        let e = gateway(server, tool).unwrap_err();
        assert!(e.contains(expected), "{server}{tool}: {e}");
    }
}

#[test]
fn limits_in_redis_need_a_redis_and_a_redis_block_needs_a_use() {
    let text = |limits: &str, sessions: &str| {
        format!("{sessions}servers:\n  - name: demo\n    upstream: {{cluster: api}}\n{limits}    tools:\n      - name: weather\n        requestTemplate: {{url: /w}}\n")
    };
    let e = Gateway::from_config_str(&text("    quotas: [{requests: 5, period: day}]\n", "")).unwrap_err().to_string();
    assert!(e.contains("server 'demo' field 'quotas[0].period': counts in Redis, and no Redis is configured"), "{e}");
    let e = Gateway::from_config_str(&text("    rateLimits: [{requests: 5, window: 1s, scope: cluster}]\n", ""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("field 'rateLimits[0].scope'") && e.contains("scope: process"), "{e}");
    // A Redis block with a local store: wanted by a cluster limit, refused without one.
    let with_redis = "sessions: {store: local, redis: {cluster: redis}}\n";
    assert!(Gateway::from_config_str(&text(
        "    rateLimits: [{requests: 5, window: 1s, scope: cluster}]\n",
        with_redis
    ))
    .is_ok());
    let e = Gateway::from_config_str(&text("    rateLimits: [{requests: 5, window: 1s}]\n", with_redis))
        .unwrap_err()
        .to_string();
    assert!(e.contains("field 'sessions.redis'") && e.contains("scope: cluster"), "{e}");
    let gw = Gateway::from_config_str(&text("    quotas: [{requests: 5, period: month}]\n", with_redis)).unwrap();
    assert_eq!(gw.redis().map(|r| r.cluster.as_str()), Some("redis"), "the limits' own Redis connection");
    assert!(gw.sessions.redis().is_none());
    let proxied = |limits: &str, redis: &str| {
        Gateway::from_config_str(&format!(
            "{redis}servers:\n  - name: p\n    type: mcp-proxy\n    mcpServerURL: /mcp\n{limits}"
        ))
    };
    assert!(proxied("    rateLimits: [{requests: 5, window: 1s}]\n", "").is_ok());
    // Counted in Redis on a proxied server too: the relay waits for them (crate::proxy::gate).
    let cluster = "    rateLimits: [{requests: 5, window: 1s, scope: cluster}]\n";
    assert!(proxied(cluster, "sessions: {redis: {cluster: redis}}\n").is_ok());
    let e = proxied(cluster, "").unwrap_err().to_string();
    assert!(e.contains("server 'p' field 'rateLimits[0].scope'") && e.contains("no Redis"), "{e}");
}

fn rate(requests: u64, window_ms: u64, capacity: u64) -> BucketKind {
    BucketKind::Rate(Rate { requests, window_ms, capacity })
}

fn bucket(key: &str, kind: BucketKind) -> Bucket {
    Bucket {
        key: Key::Built(format!("{}{key}", local::PREFIX)),
        kind,
        scope: Scope::Process,
        on_store_error: OnStoreError::Allow,
        about: About::text(&format!("limit {key}"), "f"),
    }
}

#[test]
fn process_counters_take_all_or_nothing() {
    let mut kv = MemoryKv::default();
    let w = local::Written::default();
    let wide = bucket("wide", rate(3, 1000, 3));
    let narrow = bucket("narrow", rate(1, 1000, 1));
    local::take(&mut kv, &[wide.clone(), narrow.clone()], 0, &w).unwrap();
    let refused = local::take(&mut kv, &[wide.clone(), narrow.clone()], 0, &w).unwrap_err();
    assert_eq!(
        refused,
        GatewayError::RateLimited {
            message: "rate limit exceeded: limit narrow (f); retry in 1 s".into(),
            retry_after_secs: 1
        }
    );
    // The refused call cost the wide counter nothing: two more calls fit in it.
    local::take(&mut kv, std::slice::from_ref(&wide), 0, &w).unwrap();
    local::take(&mut kv, std::slice::from_ref(&wide), 0, &w).unwrap();
    assert!(local::take(&mut kv, std::slice::from_ref(&wide), 0, &w).is_err());
    assert_eq!(kv.get("mcp-gateway/limit/wide").0, b"0 0");
    // 400 ms later the wide counter has 1.2 tokens again.
    local::take(&mut kv, std::slice::from_ref(&wide), 400, &w).unwrap();
    assert_eq!(kv.get("mcp-gateway/limit/wide").0, b"200 400");
}

/// A shared-data space where another worker writes between each read and write, `races` times.
struct Racing {
    kv: MemoryKv,
    races: usize,
}

impl KeyValue for Racing {
    fn get(&self, key: &str) -> (Vec<u8>, Option<u32>) {
        self.kv.get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, String> {
        if self.races > 0 && cas.is_some() {
            self.races -= 1;
            // The other worker takes a token first.
            let (v, c) = self.kv.get(key);
            let b = Rate { requests: 5, window_ms: 1000, capacity: 5 };
            let next = b.take(bucket::decode(&v), 0).unwrap();
            self.kv.set(key, bucket::encode(next).as_bytes(), c)?;
        }
        self.kv.set(key, value, cas)
    }
}

#[test]
fn a_worker_that_loses_a_race_reads_again_and_no_token_is_spent_twice() {
    let b = bucket("k", rate(5, 1000, 5));
    let mut kv = Racing { kv: MemoryKv::default(), races: 3 };
    let w = local::Written::default();
    local::take(&mut kv, std::slice::from_ref(&b), 0, &w).unwrap();
    assert_eq!(kv.kv.get("mcp-gateway/limit/k").0, b"1000 0", "3 taken by the other worker, 1 by us");
    local::take(&mut kv, std::slice::from_ref(&b), 0, &w).unwrap();
    assert!(local::take(&mut kv, std::slice::from_ref(&b), 0, &w).is_err());
    // Contention that never ends refuses rather than spins.
    let mut kv = Racing { kv: MemoryKv::default(), races: usize::MAX };
    let w = local::Written::default();
    let e = local::take(&mut kv, &[bucket("c", rate(1_000_000, 1000, 1_000_000))], 0, &w).unwrap_err();
    assert!(matches!(e, GatewayError::RateLimited { retry_after_secs: 1, .. }), "{e:?}");
    // Prepared counters exist before the first call.
    let mut kv = MemoryKv::default();
    local::prepare(&mut kv, std::slice::from_ref(&b));
    assert_eq!(kv.get("mcp-gateway/limit/k"), (Vec::new(), Some(1)));
}

/// A shared-data space that counts the reads and writes asked of it.
#[derive(Default)]
struct Counting {
    kv: MemoryKv,
    gets: std::cell::Cell<u32>,
    sets: u32,
}

impl KeyValue for Counting {
    fn get(&self, key: &str) -> (Vec<u8>, Option<u32>) {
        self.gets.set(self.gets.get() + 1);
        self.kv.get(key)
    }
    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, String> {
        self.sets += 1;
        self.kv.set(key, value, cas)
    }
}

#[test]
fn a_worker_whose_guess_holds_takes_a_token_with_one_write() {
    let b = bucket("k", rate(1, 1000, 3));
    let (mut kv, w) = (Counting::default(), local::Written::default());
    local::take(&mut kv, std::slice::from_ref(&b), 0, &w).unwrap();
    // The first take creates the counter, reads it and writes it.
    assert_eq!((kv.gets.get(), kv.sets), (2, 2));
    local::take(&mut kv, std::slice::from_ref(&b), 0, &w).unwrap();
    local::take(&mut kv, std::slice::from_ref(&b), 500, &w).unwrap();
    assert_eq!((kv.gets.get(), kv.sets), (2, 4), "the next two took one write each");
    assert_eq!(kv.kv.get("mcp-gateway/limit/k").0, b"500 500");
    // An empty bucket is refused on a fresh read, never on the guess alone.
    assert!(local::take(&mut kv, std::slice::from_ref(&b), 500, &w).is_err());
    assert_eq!((kv.gets.get(), kv.sets), (3, 4));
    // Another worker gives a token back: the guess no longer holds, and the take reads what is stored.
    local::refund(&mut kv, std::slice::from_ref(&b));
    local::take(&mut kv, std::slice::from_ref(&b), 500, &w).unwrap();
    assert_eq!(kv.kv.get("mcp-gateway/limit/k").0, b"500 500");
}

#[test]
fn workers_that_guess_spend_each_token_once() {
    // Two workers (each its own `Written`) on one shared-data space, and other keys written in between:
    // whatever each guesses, exactly the bucket's tokens are taken, and the other keys are untouched.
    let b = bucket("k", rate(1, 1_000_000, 40));
    let mut kv = Counting::default();
    let workers = [local::Written::default(), local::Written::default()];
    let mut taken = 0;
    for i in 0..100u32 {
        let w = &workers[usize::from(i % 7 < 3)];
        if i % 5 == 0 {
            kv.set("mcp-gateway/session/x", i.to_string().as_bytes(), None).unwrap();
        }
        if local::take(&mut kv, std::slice::from_ref(&b), 0, w).is_ok() {
            taken += 1;
        }
    }
    assert_eq!(taken, 40);
    assert_eq!(kv.kv.get("mcp-gateway/limit/k").0, b"0 0");
    assert_eq!(kv.kv.get("mcp-gateway/session/x").0, b"95");
    // Guesses that held saved reads; misses back off.
    println!("{} reads, {} writes", kv.gets.get(), kv.sets);
    assert!(kv.gets.get() < 100, "{} reads", kv.gets.get());
}

fn store() -> crate::session::redis::RedisStore {
    let cfg = crate::config::RedisConfig { cluster: "redis".into(), key_prefix: "p:".into(), ..Default::default() };
    crate::session::redis::RedisStore::new(&cfg, 0)
}

fn cluster(mut b: Bucket, on_store_error: OnStoreError) -> Bucket {
    // Redis's counters have no shared-data prefix (Redis's own is added to the command's keys).
    b.key = Key::Built(b.key.as_str().trim_start_matches(local::PREFIX).to_string());
    b.scope = Scope::Cluster;
    b.on_store_error = on_store_error;
    b
}

fn two_checks(env: &mut MemoryEnv) -> redis::Pending {
    let here = bucket("here", rate(10, 1000, 10));
    local::take(env.kv(), std::slice::from_ref(&here), 0, &local::Written::default()).unwrap();
    let checks = vec![
        redis::Check {
            index: 0,
            local: vec![here],
            buckets: vec![cluster(bucket("r", rate(5, 2000, 8)), OnStoreError::Allow)],
        },
        redis::Check {
            index: 3,
            local: vec![],
            buckets: vec![
                cluster(bucket("r", rate(5, 2000, 8)), OnStoreError::Allow),
                cluster(bucket("q/2025-11", BucketKind::Quota { requests: 100, until_ms: 9_000 }), OnStoreError::Deny),
            ],
        },
    ];
    redis::Pending::new(&store(), checks, LimitOutcome::default())
}

#[test]
fn one_eval_checks_every_call_of_a_request() {
    let mut env = MemoryEnv::default();
    let pending = two_checks(&mut env);
    let args: Vec<String> =
        resp::decode_command(&pending.command).unwrap().into_iter().map(|a| String::from_utf8(a).unwrap()).collect();
    assert_eq!(args[0], "EVAL");
    assert_eq!(args[1], redis::SCRIPT);
    assert_eq!(
        args[2..],
        [
            "3",
            "p:limit:r",
            "p:limit:r",
            "p:limit:q/2025-11",
            "2",
            "1",
            "r",
            "8000",
            "5",
            "2000",
            "2",
            "r",
            "8000",
            "5",
            "2000",
            "q",
            "100",
            "9000",
            "0"
        ]
    );
}

#[test]
fn script_replies_become_verdicts() {
    let mut env = MemoryEnv::default();
    let pending = two_checks(&mut env);
    // The first call passes; the second is refused by its quota (its second counter) for 4.2 s.
    let reply = b"*4\r\n:0\r\n:0\r\n:2\r\n:4200\r\n";
    let redis::Next::Done(outcome) = redis::finish(pending.clone(), Answer::Reply(reply), &mut env) else { panic!() };
    assert_eq!(outcome.store_error, None);
    assert_eq!(outcome.refused.len(), 1);
    let (index, e) = &outcome.refused[0];
    assert_eq!(*index, 3);
    assert_eq!(
        e,
        &GatewayError::RateLimited {
            message: "quota exceeded: limit q/2025-11 (f); retry in 5 s".into(),
            retry_after_secs: 5
        }
    );
    // A refusal in Redis gives back the call's process token.
    let reply = b"*4\r\n:1\r\n:400\r\n:0\r\n:0\r\n";
    let redis::Next::Done(outcome) = redis::finish(pending.clone(), Answer::Reply(reply), &mut env) else { panic!() };
    assert_eq!(outcome.refused[0].0, 0);
    assert_eq!(outcome.refused[0].1.headers(), vec![("retry-after".to_string(), "1".to_string())]);
    assert_eq!(env.kv.get("mcp-gateway/limit/here").0, b"10000 0", "refunded");
}

#[test]
fn a_failing_redis_fails_open_or_closed_per_limit() {
    for answer in [
        Answer::Failed("timeout".into()),
        Answer::Reply(b"-ERR Error running script\r\n"),
        Answer::Reply(b"*1\r\n:0\r\n"),
        Answer::Reply(b"garbage"),
        Answer::Reply(b"*4\r\n$1\r\nx\r\n:0\r\n:0\r\n:0\r\n"),
    ] {
        let mut env = MemoryEnv::default();
        let pending = two_checks(&mut env);
        let redis::Next::Done(outcome) = redis::finish(pending, answer.clone(), &mut env) else { panic!("{answer:?}") };
        assert!(outcome.store_error.as_ref().is_some_and(|e| e.len() < 300), "{answer:?}: {outcome:?}");
        // The first call's counter allows on a store error; the second's quota denies.
        assert_eq!(outcome.refused.len(), 1, "{answer:?}");
        let (index, e) = &outcome.refused[0];
        assert_eq!(*index, 3);
        assert_eq!(e.status(), 503);
        assert!(e.message().contains("limit q/2025-11 (f) refuses calls then (onStoreError: deny)"), "{}", e.message());
    }
}

#[test]
fn noauth_and_interruptions_send_the_check_once_more() {
    let mut env = MemoryEnv::default();
    let pending = two_checks(&mut env);
    let redis::Next::Reauthenticate(again) =
        redis::finish(pending.clone(), Answer::Reply(b"-NOAUTH Authentication required.\r\n"), &mut env)
    else {
        panic!()
    };
    assert!(again.retried && again.command == pending.command);
    assert!(matches!(redis::finish(again.clone(), Answer::Reply(b"-NOAUTH x\r\n"), &mut env), redis::Next::Done(_)));
    let redis::Next::Resend(again) = redis::finish(pending, Answer::Interrupted, &mut env) else { panic!() };
    assert!(
        matches!(redis::finish(again, Answer::Interrupted, &mut env), redis::Next::Done(o) if o.store_error.is_some())
    );
}

/// Token leasing (`scope: process`, a burst of 64 or more): sound against a strict bucket, exact below.
mod leases {
    use super::rate as rate_kind;
    use super::*;
    use proptest::prelude::*;

    /// Whether a strict token bucket of `rate`, full at the first call, admits calls at every one of
    /// `times` (sorted): exact sums, in 1/window_ms of a token, with no rounding in the calls' favour.
    fn strict_bucket_admits(rate: Rate, times: &[u64]) -> Result<(), String> {
        let (unit, per_ms) = (u128::from(rate.window_ms), u128::from(rate.requests));
        let cap = u128::from(rate.capacity) * unit;
        let (mut level, mut last) = (cap, times.first().copied().unwrap_or(0));
        for (i, t) in times.iter().enumerate() {
            level = (level + u128::from(t - last) * per_ms).min(cap);
            last = *t;
            if level < unit {
                return Err(format!("call {i} at {t} ms: a strict bucket has {level}/{unit} of a token"));
            }
            level -= unit;
        }
        Ok(())
    }

    /// One step of the simulation: which worker calls, how far the clock moves first, how far behind it
    /// the worker's own reading is, and whether something else writes shared data first.
    #[derive(Debug, Clone)]
    struct Step {
        worker: usize,
        dt: u64,
        lag: u64,
        other_write: bool,
    }

    fn step() -> impl Strategy<Value = Step> {
        let dt = prop_oneof![70 => Just(0u64), 29 => 0u64..5, 1 => 0u64..3000];
        (0usize..4, dt, 0u64..20, proptest::bool::weighted(0.05)).prop_map(|(worker, dt, lag, other_write)| Step {
            worker,
            dt,
            lag,
            other_write,
        })
    }

    /// Runs `steps` through [`local::take`] with one `Written` per worker on one shared-data space: the
    /// times at which calls were admitted (a take that wrote the counter: the counter's new time; a leased
    /// token: when spent, or when leased if that was later), and the reads and writes it took.
    fn simulate(rate: Rate, workers: usize, steps: &[Step]) -> (Vec<u64>, u32, u32) {
        let b = bucket("sim", BucketKind::Rate(rate));
        let key = b.key.as_str().to_string();
        let mut kv = Counting::default();
        let written: Vec<local::Written> = (0..workers).map(|_| local::Written::default()).collect();
        let (mut clock, mut stamps, mut leased_at) = (0u64, vec![0u64; workers], vec![0u64; workers]);
        let mut admitted = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            clock += s.dt;
            let w = s.worker % workers;
            // A worker's clock never goes back, but may lag the others'.
            stamps[w] = stamps[w].max(clock.saturating_sub(s.lag));
            if s.other_write {
                kv.set("mcp-gateway/session/x", i.to_string().as_bytes(), None).unwrap();
            }
            let before = kv.kv.get(&key).0;
            if local::take(&mut kv, std::slice::from_ref(&b), stamps[w], &written[w]).is_err() {
                continue;
            }
            let after = kv.kv.get(&key).0;
            if after != before {
                leased_at[w] = bucket::decode(&after).expect("a stored level").at_ms;
                admitted.push(leased_at[w]);
            } else {
                admitted.push(stamps[w].max(leased_at[w]));
            }
        }
        admitted.sort_unstable();
        (admitted, kv.gets.get(), kv.sets)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Any number of workers, any interleaving, any call times: never more calls than a strict bucket.
        #[test]
        fn workers_with_leases_never_admit_more_than_a_strict_bucket(
            capacity in 64u64..200,
            requests in 1u64..2000,
            window_ms in prop_oneof![1u64..50, 50u64..5000],
            workers in 2usize..5,
            steps in proptest::collection::vec(step(), 1..1500),
        ) {
            let rate = Rate { requests, window_ms, capacity };
            let (admitted, _, _) = simulate(rate, workers, &steps);
            prop_assert!(strict_bucket_admits(rate, &admitted).is_ok(), "{:?}", strict_bucket_admits(rate, &admitted));
        }

        /// Below a burst of 64 nothing is leased: every worker admits exactly what one strict bucket
        /// taken in turn by the same calls admits, and the counter holds two fields.
        #[test]
        fn small_bursts_never_lease(
            capacity in 1u64..64,
            requests in 1u64..200,
            window_ms in 100u64..5000,
            steps in proptest::collection::vec(step(), 1..300),
        ) {
            let rate = Rate { requests, window_ms, capacity };
            let steps: Vec<Step> = steps.into_iter().map(|s| Step { lag: 0, ..s }).collect();
            let (admitted, _, _) = simulate(rate, 3, &steps);
            let (mut clock, mut state, mut expected) = (0, None, Vec::new());
            for s in &steps {
                clock += s.dt;
                if let Ok(next) = rate.take(state, clock) {
                    state = Some(next);
                    expected.push(clock);
                }
            }
            prop_assert_eq!(admitted, expected);
        }
    }

    #[test]
    fn a_lease_saves_the_writes_of_a_large_limit() {
        // The policy benchmark's limit: a billion calls a second. One worker, 1,000 calls in one second.
        let rate = Rate { requests: 1_000_000_000, window_ms: 1000, capacity: 1_000_000_000 };
        let steps: Vec<Step> =
            (0..1000).map(|i| Step { worker: 0, dt: u64::from(i % 10 == 0), lag: 0, other_write: false }).collect();
        let (admitted, gets, sets) = simulate(rate, 1, &steps);
        assert_eq!(admitted.len(), 1000);
        // 32 tokens a write (the first take creates the counter and reads it).
        assert_eq!((gets, sets), (2, 1 + 1000_u32.div_ceil(32)));
    }

    #[test]
    fn leased_tokens_are_counted_and_expire_with_their_period() {
        let rate = Rate { requests: 640, window_ms: 2000, capacity: 640 };
        let b = bucket("l", BucketKind::Rate(rate));
        let (mut kv, a, other) = (MemoryKv::default(), local::Written::default(), local::Written::default());
        local::take(&mut kv, std::slice::from_ref(&b), 0, &a).unwrap();
        // 32 taken (a sixteenth of 640 would be 40), 31 of them held by the worker.
        assert_eq!(kv.get("mcp-gateway/limit/l").0, b"608000 0 32");
        for _ in 0..31 {
            local::take(&mut kv, std::slice::from_ref(&b), 500, &a).unwrap();
        }
        assert_eq!(kv.get("mcp-gateway/limit/l").0, b"608000 0 32", "spent without a write");
        // Another worker leases 8 more: the period's leases reach 640 / 16 = 40.
        local::take(&mut kv, std::slice::from_ref(&b), 500, &other).unwrap();
        assert_eq!(kv.get("mcp-gateway/limit/l").0, b"600000 500 40");
        // Within the period the bucket refills only to 640 - 40 tokens ...
        local::take(&mut kv, std::slice::from_ref(&b), 999, &a).unwrap();
        assert_eq!(kv.get("mcp-gateway/limit/l").0, b"599000 999 40");
        // ... a new period (a second: the window is longer) to all 640, and the old leases are gone.
        local::take(&mut kv, std::slice::from_ref(&b), 1000, &other).unwrap();
        assert_eq!(kv.get("mcp-gateway/limit/l").0, b"567320 1000 32", "0.32 of a token in 1 ms, 32 leased");
        for _ in 0..7 {
            local::take(&mut kv, std::slice::from_ref(&b), 1001, &other).unwrap();
        }
        // The first worker's 7 left from the old period are lost: it takes anew.
        local::take(&mut kv, std::slice::from_ref(&b), 1001, &a).unwrap();
        assert_eq!(kv.get("mcp-gateway/limit/l").0, b"559640 1001 40");
        // The refill the cap held back in a period does not come back when it ends.
        let capped = bucket::Level { milli: 600_000, at_ms: 0, leased: 40 };
        assert_eq!(
            rate.lease(Some(capped), 1000, true),
            Ok((bucket::Level { milli: 568_000, at_ms: 1000, leased: 32 }, 32))
        );
        assert_eq!(
            rate.lease(Some(capped), 1500, true),
            Ok((bucket::Level { milli: 608_000, at_ms: 1500, leased: 32 }, 32))
        );
        // The first worker leased the last 8 of the period (7 held). A call that another limit refuses
        // gives its leased token back to the lease.
        let narrow = bucket("n", rate_kind(1, 1000, 1));
        local::take(&mut kv, &[b.clone(), narrow.clone()], 1001, &a).unwrap();
        local::take(&mut kv, &[b.clone(), narrow.clone()], 1001, &a).unwrap_err();
        for _ in 0..6 {
            local::take(&mut kv, std::slice::from_ref(&b), 1001, &a).unwrap();
        }
        assert_eq!(kv.get("mcp-gateway/limit/l").0, b"559640 1001 40", "6 left, one of them given back");
        local::take(&mut kv, std::slice::from_ref(&b), 1001, &a).unwrap();
        assert_eq!(kv.get("mcp-gateway/limit/l").0, b"558640 1001 40");
        // Old two-field values read as nothing leased.
        assert_eq!(bucket::decode(b"5 7"), Some(bucket::Level { milli: 5, at_ms: 7, leased: 0 }));
    }

    #[test]
    fn a_refusal_reads_afresh_and_says_when_a_token_is_back() {
        // 64 tokens, one back every 100 ms: a worker leases 4, the other spends the rest.
        let rate = Rate { requests: 10, window_ms: 1000, capacity: 64 };
        let b = bucket("r", BucketKind::Rate(rate));
        let (mut kv, a, other) = (Counting::default(), local::Written::default(), local::Written::default());
        local::take(&mut kv, std::slice::from_ref(&b), 0, &a).unwrap();
        assert_eq!(kv.kv.get("mcp-gateway/limit/r").0, b"60000 0 4");
        let mut taken = 4;
        while local::take(&mut kv, std::slice::from_ref(&b), 0, &other).is_ok() {
            taken += 1;
        }
        assert_eq!(taken, 64);
        let (gets, sets) = (kv.gets.get(), kv.sets);
        let refused = local::take(&mut kv, std::slice::from_ref(&b), 30, &other).unwrap_err();
        assert!(matches!(refused, GatewayError::RateLimited { retry_after_secs: 1, .. }), "{refused:?}");
        assert_eq!((kv.gets.get(), kv.sets), (gets + 1, sets), "refused on a fresh read, nothing written");
        // The leasing worker still spends its 3.
        for _ in 0..3 {
            local::take(&mut kv, std::slice::from_ref(&b), 30, &a).unwrap();
        }
        // 970 ms later the bucket has 9.7 tokens, of which the period allowed none before: its 60 less
        // 4 leased is the cap until the period ends at 1,000 ms.
        let refused = local::take(&mut kv, std::slice::from_ref(&b), 99, &a).unwrap_err();
        assert!(matches!(refused, GatewayError::RateLimited { retry_after_secs: 1, .. }), "{refused:?}");
        local::take(&mut kv, std::slice::from_ref(&b), 100, &a).unwrap();
        // The retry hint: a long window, 1 token an hour.
        let slow = Rate { requests: 64, window_ms: 64 * 3_600_000, capacity: 64 };
        let s = bucket::Level { milli: 500, at_ms: 0, leased: 4 };
        assert_eq!(slow.lease(Some(s), 0, true), Err(1_800_000));
        let none_leased = bucket::Level { leased: 0, ..s };
        assert_eq!(slow.lease(Some(none_leased), 36_000, true), Err(1_764_000), "the hour runs from the write");
        assert_eq!(slow.lease(Some(bucket::Level { at_ms: 2000, ..s }), 1000, true), Err(1_801_000), "a lagging clock");
    }
}

/// The cost of one check of a call against a server limit and a tool limit per consumer, in this
/// process's counters (memory standing in for shared data): `cargo test --release --lib
/// limits::tests::cost_of_a_check -- --ignored --nocapture`.
#[test]
#[ignore]
fn cost_of_a_check() {
    let gw = gateway(
        "    rateLimits: [{requests: 1000000000, window: 1s}]\n",
        "        rateLimits: [{requests: 1000000000, window: 1s, per: consumer}]\n",
    )
    .unwrap();
    let mut env = MemoryEnv::default();
    let (op, caller) = (LimitOp { server: 0, calls: vec![(0, "weather".into())] }, alice());
    let n = 200_000;
    let started = std::time::Instant::now();
    for i in 0..n {
        env.now_ms = i;
        let Started::Done(o) = start(limits_of(&gw), "demo", &caller, &op, &mut env, None) else { panic!() };
        assert!(o.refused.is_empty());
    }
    let per_call = started.elapsed().as_nanos() / u128::from(n);
    println!("one limit check (2 process counters): {per_call} ns");
}

// --- through the driver: the exchange asks, the host's counters answer --------------------------------

mod through_the_driver {
    use super::*;
    use crate::driver::test_host::{RedisMode, TestHost};
    use crate::driver::Progress;
    use crate::transport::RequestHead;
    use crate::upstream::UpstreamResult;

    const STATELESS: &str = "2026-07-28";

    /// A POST; with `tool`, a stateless `tools/call` of it (its MCP headers).
    fn post(sid: Option<&str>, tool: Option<&str>) -> RequestHead {
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("accept".to_string(), "application/json, text/event-stream".to_string()),
        ];
        if let Some(s) = sid {
            headers.push(("mcp-session-id".into(), s.into()));
        }
        if let Some(tool) = tool {
            headers.push(("mcp-protocol-version".into(), STATELESS.into()));
            headers.push(("mcp-method".into(), "tools/call".into()));
            headers.push(("mcp-name".into(), tool.into()));
        }
        RequestHead {
            method: "POST".into(),
            path: "/mcp-servers/demo".into(),
            headers: headers.into(),
            client_address: None,
            jwt: None,
        }
    }

    fn ok(_: &crate::upstream::UpstreamRequest) -> UpstreamResult {
        UpstreamResult::Response { status: 200, headers: vec![], body: b"sunny".to_vec() }
    }

    fn stateless_call(id: u64, tool: &str) -> String {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"{STATELESS}","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
        )
    }

    fn call(id: u64, tool: &str) -> String {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#)
    }

    fn session(h: &mut TestHost, g: &Gateway) -> String {
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26"}}"#;
        let r = h.send(g, post(None, None), init, &ok);
        r.headers.iter().find(|(k, _)| k == "mcp-session-id").unwrap().1.clone()
    }

    fn body(r: &crate::transport::HttpResponse) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    fn header<'r>(r: &'r crate::transport::HttpResponse, name: &str) -> Option<&'r str> {
        r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_stateless_call_over_its_limit_is_429_with_retry_after_and_never_goes_upstream() {
        let g = gateway("", "        rateLimits: [{requests: 2, window: 10s}]\n").unwrap();
        let mut h = TestHost::new();
        for id in 1..=2 {
            let r = h.send(&g, post(None, Some("weather")), &stateless_call(id, "weather"), &ok);
            assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        }
        assert_eq!(h.dispatched.len(), 2);
        let r = h.send(&g, post(None, Some("weather")), &stateless_call(3, "weather"), &ok);
        assert_eq!(r.status, 429);
        assert_eq!(header(&r, "retry-after"), Some("5"), "a token every 5 s");
        let b = body(&r);
        assert_eq!((b["id"].clone(), b["error"]["code"].clone()), (3.into(), (-32000).into()));
        assert_eq!(b["error"]["data"]["retryAfterSeconds"], 5);
        assert_eq!(
            b["error"]["message"],
            "rate limit exceeded: tool 'weather' of server 'demo' allows 2 calls per 10s (rateLimits[0]); retry in 5 s"
        );
        assert_eq!(h.dispatched.len(), 2, "refused before any upstream call");
        // Another tool is not limited; tools/list never is.
        assert_eq!(h.send(&g, post(None, Some("other")), &stateless_call(4, "other"), &ok).status, 200);
        // The bucket refills: 5 s later one call passes again.
        h.env.now_ms += 5_000;
        assert_eq!(h.send(&g, post(None, Some("weather")), &stateless_call(5, "weather"), &ok).status, 200);
        assert_eq!(h.send(&g, post(None, Some("weather")), &stateless_call(6, "weather"), &ok).status, 429);
    }

    #[test]
    fn in_a_session_a_refused_call_is_a_json_rpc_error_and_a_batch_goes_on_without_it() {
        let g = gateway("    rateLimits: [{requests: 2, window: 1m}]\n", "").unwrap();
        let mut h = TestHost::new();
        let sid = session(&mut h, &g);
        let batch = format!("[{},{},{}]", call(1, "weather"), call(2, "other"), call(3, "weather"));
        let r = h.send(&g, post(Some(&sid), None), &batch, &ok);
        assert_eq!(r.status, 200);
        let replies = body(&r);
        assert!(replies[0]["result"].is_object() && replies[1]["result"].is_object(), "{replies}");
        assert_eq!(replies[2]["id"], 3);
        assert_eq!(replies[2]["error"]["data"]["retryAfterSeconds"], 30);
        assert_eq!(h.dispatched.len(), 2);
        let r = h.send(&g, post(Some(&sid), None), &call(4, "other"), &ok);
        assert_eq!(r.status, 200, "a session's call is answered in a 200");
        assert_eq!(body(&r)["error"]["code"], -32000);
        assert_eq!(header(&r, "retry-after"), Some("30"));
        assert_eq!(h.dispatched.len(), 2);
    }

    #[test]
    fn per_consumer_limits_count_each_consumer_apart() {
        let g = gateway("", "        rateLimits: [{requests: 1, window: 1h, per: consumer}]\n").unwrap();
        let mut h = TestHost::new();
        let send = |h: &mut TestHost, who: Option<&str>, id: u64| {
            let crate::transport::Route::Accept(mut ex) = crate::transport::route(&g, &post(None, Some("weather")))
            else {
                panic!()
            };
            // Where admission will hand its caller over.
            ex.set_caller(Caller { consumer: who.map(str::to_string), ..Caller::default() });
            h.responses.clear();
            let mut d = crate::driver::Driver::new(ex, h.env.now_ms);
            d.on_body(&g, h, stateless_call(id, "weather").as_bytes());
            assert_eq!(h.settle(&g, &mut d, &ok), Progress::Done);
            h.responses.pop().unwrap().status
        };
        assert_eq!(send(&mut h, Some("alice"), 1), 200);
        assert_eq!(send(&mut h, Some("bob"), 2), 200);
        assert_eq!(send(&mut h, None, 3), 200);
        assert_eq!(send(&mut h, Some("alice"), 4), 429);
        assert_eq!(send(&mut h, None, 5), 429, "anonymous callers share one counter");
        assert_eq!(send(&mut h, Some("bob"), 6), 429);
    }

    #[test]
    fn cluster_limits_and_quotas_take_one_round_trip() {
        let g = gateway(
            "    rateLimits: [{requests: 100, window: 1s}]\n",
            "        rateLimits: [{requests: 3, window: 1m, scope: cluster}]\n        quotas: [{requests: 2, period: day}]\n",
        )
        .unwrap();
        let mut h = TestHost::new();
        for id in 1..=2 {
            assert_eq!(h.send(&g, post(None, Some("weather")), &stateless_call(id, "weather"), &ok).status, 200);
        }
        assert_eq!(h.redis.commands.len(), 2, "one EVAL per request");
        let r = h.send(&g, post(None, Some("weather")), &stateless_call(3, "weather"), &ok);
        assert_eq!(r.status, 429);
        let message = body(&r)["error"]["message"].as_str().unwrap().to_string();
        assert!(
            message.starts_with("quota exceeded: tool 'weather' of server 'demo' allows 2 calls per day (UTC)"),
            "{message}"
        );
        let until_midnight = 86_400 - (h.env.now_ms / 1000) % 86_400;
        assert_eq!(header(&r, "retry-after"), Some(until_midnight.to_string().as_str()));
        assert_eq!(h.dispatched.len(), 2);
        let keys: Vec<String> = h.redis.keys.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
        assert!(keys.contains(&"p:limit:demo/weather/q2d/*/1970-01-01".to_string()), "{keys:?}");
        assert!(keys.contains(&"p:limit:demo/weather/r3w60000b3/*".to_string()), "{keys:?}");
        // The first call leased 6 tokens (100 / 16) and the second spent one of them; the refused call's
        // token is given back to the counter, but within the lease period only up to 100 - 6.
        assert_eq!(h.env.kv.get("mcp-gateway/limit/demo/*/r100w1000b100/*").0, b"94000 1000000 6");
    }

    #[test]
    fn redis_down_or_silent_fails_open_or_closed_as_each_limit_says() {
        for (on_error, mode) in [("allow", RedisMode::Down), ("deny", RedisMode::Down), ("deny", RedisMode::Silent)] {
            let tool = format!(
                "        rateLimits: [{{requests: 3, window: 1m, scope: cluster, onStoreError: {on_error}}}]\n"
            );
            let g = gateway("", &tool).unwrap();
            let mut h = TestHost::new();
            h.redis.mode = mode;
            h.responses.clear();
            let mut d = h.start(&g, &post(None, Some("weather")), stateless_call(1, "weather").as_bytes()).unwrap();
            let mut progress = h.settle(&g, &mut d, &ok);
            if mode == RedisMode::Silent {
                assert_eq!(progress, Progress::Waiting);
                h.env.now_ms += 500 + crate::driver::REDIS_GRACE_MS;
                let now = h.env.now_ms;
                progress = d.on_tick(&g, &mut h, now);
            }
            if on_error == "allow" {
                progress = h.settle(&g, &mut d, &ok);
            }
            assert_eq!(progress, Progress::Done, "{on_error} {mode:?}");
            let r = h.responses.pop().unwrap();
            assert!(h.warnings.iter().any(|w| w.contains("rate-limit store")), "{:?}", h.warnings);
            if on_error == "allow" {
                assert_eq!((r.status, h.dispatched.len()), (200, 1), "fail-open: the call went upstream");
            } else {
                assert_eq!(
                    (r.status, h.dispatched.len()),
                    (503, 0),
                    "fail-closed: {}",
                    String::from_utf8_lossy(&r.body)
                );
                let b = body(&r);
                assert_eq!(b["error"]["code"], -32603);
                assert!(b["error"]["message"].as_str().unwrap().contains("onStoreError: deny"), "{b}");
            }
        }
    }
}
