//! A [`Host`] in memory: a clock the test moves, shared data, a small Redis that speaks RESP, and an
//! upstream answered by a closure. Completions are delivered when the test says so, in any order, so the
//! tests exercise the same later-completion paths as the proxy-wasm host.

use super::{Driver, Host, Progress};
use crate::gateway::Gateway;
use crate::resp::{self, Reply};
use crate::session::memory::MemoryEnv;
use crate::session::redis::Answer;
use crate::session::{Env, KeyValue};
use crate::transport::{self, HttpResponse, RequestHead, Route};
use crate::upstream::{UpstreamRequest, UpstreamResult};
use std::collections::HashMap;

/// How the fake Redis behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisMode {
    #[default]
    Up,
    /// Every call fails as the host reports a refused connection or a timeout.
    Down,
    /// Calls are accepted and never answered (a host that loses them).
    Silent,
    /// Answers `-NOAUTH` until re-initialised.
    LostAuth,
}

/// A Redis in memory: keys with absolute expiry on the test clock. Enough for the commands the store uses.
#[derive(Debug, Default)]
pub struct FakeRedis {
    pub keys: HashMap<Vec<u8>, (Vec<u8>, u64)>,
    pub mode: RedisMode,
    pub commands: Vec<Vec<Vec<u8>>>,
}

impl FakeRedis {
    /// Runs one RESP command as Redis would, on the test clock.
    pub fn execute(&mut self, command: &[u8], now_ms: u64) -> Result<Vec<u8>, String> {
        match self.mode {
            RedisMode::Down => return Err("connection refused".into()),
            RedisMode::LostAuth => return Ok(b"-NOAUTH Authentication required.\r\n".to_vec()),
            RedisMode::Up | RedisMode::Silent => {}
        }
        let args = resp::decode_command(command).map_err(|e| e.to_string())?;
        self.commands.push(args.clone());
        self.keys.retain(|_, (_, exp)| *exp > now_ms);
        let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
        let px = |i: usize| -> u64 {
            args.get(i).and_then(|a| std::str::from_utf8(a).ok()).and_then(|a| a.parse().ok()).unwrap_or(0)
        };
        let reply = match (name.as_str(), args.len()) {
            // SET key value [PX ms] [NX | XX] [KEEPTTL]
            ("SET", n) if n >= 3 => {
                let opts: Vec<String> =
                    args[3..].iter().map(|a| String::from_utf8_lossy(a).to_ascii_uppercase()).collect();
                let has = |o: &str| opts.iter().any(|x| x == o);
                let exists = self.keys.contains_key(&args[1]);
                if (has("NX") && exists) || (has("XX") && !exists) {
                    Reply::Bulk(None)
                } else {
                    let expires = match opts.iter().position(|o| o == "PX") {
                        Some(i) => now_ms + px(4 + i),
                        None if has("KEEPTTL") => self.keys.get(&args[1]).map_or(u64::MAX, |(_, e)| *e),
                        None => u64::MAX,
                    };
                    self.keys.insert(args[1].clone(), (args[2].clone(), expires));
                    Reply::Simple("OK".into())
                }
            }
            ("GETEX", 4) => match self.keys.get_mut(&args[1]) {
                Some((v, exp)) => {
                    *exp = now_ms + px(3);
                    Reply::Bulk(Some(v.clone()))
                }
                None => Reply::Bulk(None),
            },
            ("DEL", 2) => Reply::Integer(self.keys.remove(&args[1]).is_some() as i64),
            ("EVAL", _) if args[1] == crate::limits::redis::SCRIPT.as_bytes() => self.limit_script(&args[2..], now_ms),
            // What crate::input::redis::TAKE does (the Lua itself runs against a real redis-server in e2e).
            ("EVAL", _) if args[1] == crate::input::redis::TAKE.as_bytes() => {
                let keys = &args[3..];
                let found: Vec<Option<Vec<u8>>> =
                    keys.iter().map(|k| self.keys.get(k).map(|(v, _)| v.clone())).collect();
                if found.iter().all(Option::is_some) {
                    keys.iter().for_each(|k| drop(self.keys.remove(k)));
                }
                Reply::Array(Some(found.into_iter().map(Reply::Bulk).collect()))
            }
            _ => Reply::Error(format!("ERR unknown command '{name}'")),
        };
        Ok(resp::encode_reply(&reply))
    }
}

impl FakeRedis {
    /// What [`crate::limits::redis::SCRIPT`] does, in Rust on the same arithmetic ([`crate::limits::bucket`]),
    /// with the test clock for Redis's: the driver's round trips are tested here, the Lua itself against a
    /// real redis-server (e2e/test_higress_redis.py).
    fn limit_script(&mut self, args: &[Vec<u8>], now_ms: u64) -> Reply {
        use crate::limits::bucket::{self, Rate, TOKEN};
        let text: Vec<String> = args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        let num = |i: usize| text.get(i).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
        let nkeys = num(0) as usize;
        let (keys, argv) = (&args[1..=nkeys], &text[nkeys + 1..]);
        let arg = |i: usize| argv.get(i).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
        let (mut out, mut a, mut k) = (Vec::new(), 1, 0);
        for _ in 0..arg(0) {
            let n = arg(a) as usize;
            a += 1;
            let (mut refused, mut wait, mut writes) = (0, 0, Vec::new());
            for b in 1..=n {
                let (kind, x, y, z) = (argv[a].as_str(), arg(a + 1), arg(a + 2), arg(a + 3));
                let key = keys[k].clone();
                let value = self.keys.get(&key).map(|(v, _)| v.clone()).unwrap_or_default();
                if kind == "r" {
                    let rate = Rate { requests: y, window_ms: z, capacity: x / TOKEN };
                    match rate.take(bucket::decode(&value), now_ms) {
                        Ok(next) => {
                            writes.push((key, bucket::encode(next).as_bytes().to_vec(), now_ms + rate.fill_ms() + 1000))
                        }
                        Err(ms) if refused == 0 => (refused, wait) = (b as i64, ms as i64),
                        Err(_) => {}
                    }
                } else {
                    let used: u64 = String::from_utf8_lossy(&value).parse().unwrap_or(0);
                    if used >= x && refused == 0 {
                        (refused, wait) = (b as i64, y.saturating_sub(now_ms).max(1) as i64);
                    }
                    writes.push((key, (used + 1).to_string().into_bytes(), y));
                }
                a += 4;
                k += 1;
            }
            if refused == 0 {
                for (key, value, expires) in writes {
                    self.keys.insert(key, (value, expires));
                }
            }
            out.extend([Reply::Integer(refused), Reply::Integer(wait)]);
        }
        Reply::Array(Some(out))
    }
}

/// The host of the native tests.
#[derive(Debug, Default)]
pub struct TestHost {
    pub env: MemoryEnv,
    pub redis: FakeRedis,
    pub redis_inits: usize,
    /// Redis commands sent and not yet answered: token and command.
    pub redis_queue: Vec<(u32, Vec<u8>)>,
    /// Upstream requests sent and not yet answered.
    pub upstream_queue: Vec<(u32, UpstreamRequest)>,
    /// Every upstream request ever sent.
    pub dispatched: Vec<UpstreamRequest>,
    /// Requests sent with [`Host::forward`] (also in `dispatched`).
    pub forwarded: usize,
    pub refuse_dispatch: bool,
    /// What [`Host::body_bytes_received`] answers.
    pub body_received: Option<u64>,
    pub responses: Vec<HttpResponse>,
    pub warnings: Vec<String>,
    next_token: u32,
}

impl Env for TestHost {
    fn now_ms(&self) -> u64 {
        self.env.now_ms
    }
    fn random(&mut self, buf: &mut [u8]) -> bool {
        self.env.random(buf)
    }
    fn kv(&mut self) -> &mut dyn KeyValue {
        &mut self.env.kv
    }
}

impl Host for TestHost {
    fn redis(&mut self, command: &[u8]) -> Result<u32, String> {
        self.next_token += 1;
        self.redis_queue.push((self.next_token, command.to_vec()));
        Ok(self.next_token)
    }
    fn redis_reinit(&mut self) -> Result<(), String> {
        self.redis_inits += 1;
        if self.redis.mode == RedisMode::LostAuth {
            self.redis.mode = RedisMode::Up;
        }
        Ok(())
    }
    fn dispatch(&mut self, request: &UpstreamRequest) -> Result<u32, String> {
        if self.refuse_dispatch {
            return Err("InternalFailure".into());
        }
        self.next_token += 1;
        self.upstream_queue.push((self.next_token, request.clone()));
        self.dispatched.push(request.clone());
        Ok(self.next_token)
    }
    fn forward(&mut self, request: &UpstreamRequest) -> Result<u32, String> {
        self.forwarded += 1;
        self.dispatch(request)
    }
    fn calls_in_flight(&self) -> usize {
        self.upstream_queue.len()
    }
    fn body_bytes_received(&mut self) -> Option<u64> {
        self.body_received
    }
    fn respond(&mut self, response: HttpResponse) {
        self.responses.push(response);
    }
    fn warn(&mut self, message: &str) {
        self.warnings.push(message.to_string());
    }
}

impl TestHost {
    pub fn new() -> TestHost {
        let mut h = TestHost { env: MemoryEnv { now_ms: 1_000_000, ..Default::default() }, ..Default::default() };
        crate::session::local::SESSIONS.prepare(&mut h.env.kv);
        crate::session::local::REVOKED.prepare(&mut h.env.kv);
        crate::input::prepare(&mut h.env.kv);
        crate::session::local::ANSWERS.prepare(&mut h.env.kv);
        h
    }

    /// Starts an exchange: routes the head and feeds the body. `Err` is an answer given from the head alone
    /// (status 0 for a pass-through).
    pub fn start(&mut self, gw: &Gateway, head: &RequestHead, body: &[u8]) -> Result<Driver, HttpResponse> {
        let mut driver = match transport::route(gw, head) {
            Route::PassThrough => {
                return Err(HttpResponse { status: 0, headers: vec![], body: b"passthrough".to_vec() })
            }
            Route::Respond(r) => return Err(r),
            Route::Accept(ex) => Driver::new(ex, self.env.now_ms),
        };
        driver.on_body(gw, self, body);
        Ok(driver)
    }

    /// Delivers every pending Redis reply, then every upstream answer for this driver (last sent first, to
    /// show that slots keep their places), until the driver is done or nothing is left to deliver.
    pub fn settle(
        &mut self,
        gw: &Gateway,
        driver: &mut Driver,
        upstream: &dyn Fn(&UpstreamRequest) -> UpstreamResult,
    ) -> Progress {
        let mut progress = if self.responses.is_empty() { Progress::Waiting } else { Progress::Done };
        loop {
            if let Some((token, command)) = self.redis_queue.pop() {
                if self.redis.mode == RedisMode::Silent {
                    continue;
                }
                let reply = self.redis.execute(&command, self.env.now_ms);
                let answer = match &reply {
                    Ok(bytes) => Answer::Reply(bytes),
                    Err(why) => Answer::Failed(why.clone()),
                };
                progress = driver.on_redis_reply(gw, self, token, answer);
            } else if let Some(at) =
                self.upstream_queue.iter().rposition(|(t, _)| driver.upstream_tokens().any(|m| m == *t))
            {
                let (token, request) = self.upstream_queue.remove(at);
                let answer = upstream(&request);
                progress = driver.on_upstream(gw, self, token, answer);
            } else {
                return progress;
            }
        }
    }

    /// One whole request: the response, answering upstream calls with `upstream`.
    pub fn send(
        &mut self,
        gw: &Gateway,
        head: RequestHead,
        body: &str,
        upstream: &dyn Fn(&UpstreamRequest) -> UpstreamResult,
    ) -> HttpResponse {
        self.responses.clear();
        let mut driver = match self.start(gw, &head, body.as_bytes()) {
            Ok(d) => d,
            Err(r) => return r,
        };
        assert_eq!(self.settle(gw, &mut driver, upstream), Progress::Done, "the exchange answered");
        assert_eq!(self.responses.len(), 1, "exactly one response");
        self.responses.pop().expect("a response")
    }
}
