//! The one step driver: performs an [`Exchange`]'s steps through a [`Host`], for the proxy-wasm host and
//! the tests alike.
//!
//! A host operation completes now or later. Shared data, signing and a refused dispatch complete now, and
//! the driver goes straight on to the next step; a Redis command or an upstream request completes later,
//! under a token the host chose, and the driver waits. The host then reports the completion with that
//! token, and the driver goes on from there until the exchange has responded.
//!
//! Call order, for each request the transport accepted:
//! 1. [`Driver::new`] when the request head is accepted;
//! 2. [`Driver::on_body_chunk`] for each partial body chunk (optional), then [`Driver::on_body`] once the
//!    body is complete;
//! 3. [`Driver::on_redis_reply`] / [`Driver::on_upstream`] for each completion the host was promised;
//! 4. [`Driver::on_tick`] periodically, so that nothing waits forever on a host that never answers.
//!
//! An exchange may have several upstream calls outstanding: [`Step::Dispatch`] sends a set of them, and
//! adds to the set when an answer leads to more requests (a virtual server's next handshake request to one
//! backend, a guard check, while the others are still out). Each answer is reported once, by its index, in
//! the order the host delivers them; the exchange responds when its last one is in.
//!
//! Every call returns [`Progress`]: `Done` once the response has been handed to [`Host::respond`]; late
//! completions after that are ignored.

use crate::gateway::Gateway;
use crate::input::poll::AnswerOutcome;
use crate::jsonrpc;
use crate::session::{redis, Env, SessionOutcome, Started};
use crate::transport::{Exchange, HttpResponse, Step};
use crate::upstream::{Dispatch, UpstreamRequest, UpstreamResult};
use serde_json::Value;

/// The answer to a body that Envoy received but never handed to the plugin.
pub const STALL_HINT: &str = "the plugin never received the request body although Envoy did: set allow_on_headers_stop_iteration: true in the Envoy Wasm filter config (Envoy >= 1.35)";
/// How much longer than its own timeout a Redis command may stay unanswered before the driver gives up
/// on the host (which should have answered with a failure at the timeout).
pub const REDIS_GRACE_MS: u64 = 1_000;

/// What a host does for exchanges. Operations that complete later return a token, and the host reports
/// the completion to the driver with it.
pub trait Host: Env {
    /// Sends one RESP command to the configured Redis; the reply comes to [`Driver::on_redis_reply`].
    fn redis(&mut self, command: &[u8]) -> Result<u32, String>;
    /// Sets the Redis client up again (after `NOAUTH`). Commands of other exchanges still in flight then
    /// fail; the host reports them as [`redis::Answer::Interrupted`] so that they are sent again.
    fn redis_reinit(&mut self) -> Result<(), String>;
    /// Sends an upstream request; the answer comes to [`Driver::on_upstream`].
    fn dispatch(&mut self, request: &UpstreamRequest) -> Result<u32, String>;
    /// Rewrites the client's own request into `request` and lets it go on through Envoy's router
    /// ([`Dispatch::Route`]); the answer comes back through the response path, to [`Driver::on_upstream`],
    /// and the response the driver then gives [`Host::respond`] replaces it. At most once per exchange.
    fn forward(&mut self, request: &UpstreamRequest) -> Result<u32, String>;
    /// Upstream calls this worker has outstanding, all exchanges together (`maxCallsInFlight`).
    fn calls_in_flight(&self) -> usize;
    /// How many body bytes of this request Envoy has received from the client, when the host can tell.
    /// Bytes received but never handed to the plugin mean Envoy holds the body back (a configuration
    /// fault); none mean the client is slow.
    fn body_bytes_received(&mut self) -> Option<u64>;
    /// Sends the response to the client.
    fn respond(&mut self, response: HttpResponse);
    /// Something the operator should see (a refused dispatch, a failing store).
    fn warn(&mut self, message: &str);
    /// Sets the Redis client up again after `NOAUTH`, before the command goes once more; a failure is only
    /// worth a warning, since the command sent again then fails and says why.
    fn reauthenticate(&mut self) {
        if let Err(e) = self.redis_reinit() {
            self.warn(&format!("re-initialising the Redis client failed: {e}"));
        }
    }
}

/// Whether the exchange still needs the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Waiting for the body, a Redis reply or upstream answers.
    Waiting,
    /// The response was handed to the host.
    Done,
}

#[derive(Debug)]
enum Waiting {
    /// Headers seen at `since_ms`; no body chunk yet.
    Body {
        since_ms: u64,
    },
    /// Part of the body is in; the headers came at `since_ms`.
    MoreBody {
        since_ms: u64,
    },
    Redis {
        token: u32,
        pending: RedisWait,
        deadline_ms: u64,
    },
    /// Upstream tokens and the exchange's call index of each.
    Upstream(Vec<(u32, usize)>),
    Done,
}

/// What a Redis command in flight is for.
#[derive(Debug)]
enum RedisWait {
    Session(redis::Pending),
    Limit(crate::limits::redis::Pending),
    /// Answers of SSE polling ([`crate::input::redis`]).
    Answers(crate::input::redis::Pending),
}

impl RedisWait {
    fn command(&self) -> &[u8] {
        match self {
            RedisWait::Session(p) => &p.command,
            RedisWait::Limit(p) => &p.command,
            RedisWait::Answers(p) => &p.command,
        }
    }
}

/// One exchange and what it waits for.
#[derive(Debug)]
pub struct Driver {
    exchange: Box<Exchange>,
    waiting: Waiting,
    /// When the upstream calls were sent (what notifications report as `elapsedMs`).
    sent_ms: u64,
    /// Requests dispatched so far: a later dispatch (after a guard check) numbers its calls from here, as
    /// the exchange does.
    dispatched: usize,
    /// The client's request was forwarded through its route (possible once per exchange).
    forwarded: bool,
}

impl Driver {
    pub fn new(exchange: Box<Exchange>, now_ms: u64) -> Driver {
        Driver {
            exchange,
            waiting: Waiting::Body { since_ms: now_ms },
            sent_ms: now_ms,
            dispatched: 0,
            forwarded: false,
        }
    }

    /// Part of the body arrived (so the host does deliver bodies: a timeout is the client's).
    pub fn on_body_chunk(&mut self) {
        if let Waiting::Body { since_ms } = self.waiting {
            self.waiting = Waiting::MoreBody { since_ms };
        }
    }

    /// The whole body is in: the exchange starts.
    pub fn on_body(&mut self, gw: &Gateway, host: &mut dyn Host, body: &[u8]) -> Progress {
        if !self.awaits_body() {
            return self.progress();
        }
        if let Some(keys) = &gw.input_keys {
            self.exchange.set_input(crate::input::Ctx::new(keys.as_deref(), host));
        }
        // Only a virtual server that references an SSE server calls through the loopback.
        if let Some(keys) = gw.loopback.as_ref().filter(|_| self.exchange.loops_back(gw)) {
            self.exchange.set_loopback(keys.signer(host));
        }
        self.exchange.set_now(host.now_ms());
        let step = self.exchange.on_body(gw, body);
        self.run(gw, host, step)
    }

    /// The host's answer to the Redis command sent under `token`.
    pub fn on_redis_reply(
        &mut self,
        gw: &Gateway,
        host: &mut dyn Host,
        token: u32,
        answer: redis::Answer<'_>,
    ) -> Progress {
        let pending = match std::mem::replace(&mut self.waiting, Waiting::Done) {
            Waiting::Redis { token: t, pending, .. } if t == token => pending,
            other => {
                self.waiting = other;
                return self.progress();
            }
        };
        let mut pending = match pending {
            RedisWait::Session(p) => p,
            RedisWait::Answers(mut p) => {
                return match crate::input::redis::finish(&p, answer) {
                    crate::input::redis::Next::Done(outcome) => self.answers_outcome(gw, host, outcome),
                    crate::input::redis::Next::Reauthenticate => {
                        host.reauthenticate();
                        p.retried = true;
                        self.send_redis(gw, host, RedisWait::Answers(p))
                    }
                    crate::input::redis::Next::Resend => {
                        p.retried = true;
                        self.send_redis(gw, host, RedisWait::Answers(p))
                    }
                };
            }
            RedisWait::Limit(p) => {
                return match crate::limits::redis::finish(p, answer, host) {
                    crate::limits::redis::Next::Done(outcome) => self.limit_outcome(gw, host, outcome),
                    crate::limits::redis::Next::Reauthenticate(p) => {
                        host.reauthenticate();
                        self.send_redis(gw, host, RedisWait::Limit(p))
                    }
                    crate::limits::redis::Next::Resend(p) => self.send_redis(gw, host, RedisWait::Limit(p)),
                };
            }
        };
        match gw.sessions.on_redis_reply(&pending, answer) {
            redis::Next::Done(outcome) => self.session_outcome(gw, host, outcome),
            redis::Next::Reauthenticate => {
                host.reauthenticate();
                pending.retried = true;
                self.send_redis(gw, host, RedisWait::Session(pending))
            }
            redis::Next::Resend => {
                pending.retried = true;
                self.send_redis(gw, host, RedisWait::Session(pending))
            }
        }
    }

    /// The upstream answer to the request sent under `token`.
    pub fn on_upstream(&mut self, gw: &Gateway, host: &mut dyn Host, token: u32, result: UpstreamResult) -> Progress {
        let Waiting::Upstream(tokens) = &mut self.waiting else {
            return self.progress();
        };
        let Some(pos) = tokens.iter().position(|(t, _)| *t == token) else {
            return self.progress();
        };
        let (_, index) = tokens.swap_remove(pos);
        self.exchange.upstream_took(host.now_ms().saturating_sub(self.sent_ms));
        self.exchange.set_now(host.now_ms());
        match self.exchange.on_upstream(gw, index, result) {
            Some(step) => self.run(gw, host, step),
            None => {
                self.flush_warnings(host);
                Progress::Waiting
            }
        }
    }

    /// Fails what has waited too long: a body that does not arrive within `requestBodyTimeoutMs`, a Redis
    /// command the host never answered.
    pub fn on_tick(&mut self, gw: &Gateway, host: &mut dyn Host, now_ms: u64) -> Progress {
        match &self.waiting {
            Waiting::Body { since_ms } | Waiting::MoreBody { since_ms }
                if now_ms >= since_ms.saturating_add(gw.request_body_timeout_ms) =>
            {
                let no_chunk = matches!(self.waiting, Waiting::Body { .. });
                self.waiting = Waiting::Done;
                // Envoy has the body but never called the plugin with it: only then is it Envoy's config.
                if no_chunk && host.body_bytes_received().is_some_and(|n| n > 0) {
                    host.warn(STALL_HINT);
                    host.respond(HttpResponse::error(500, Value::Null, jsonrpc::INTERNAL_ERROR, STALL_HINT));
                } else {
                    let why = format!(
                        "Request Timeout: the request body did not arrive within {} ms (requestBodyTimeoutMs)",
                        gw.request_body_timeout_ms
                    );
                    host.respond(HttpResponse::error(408, Value::Null, jsonrpc::INVALID_REQUEST, why));
                }
                Progress::Done
            }
            Waiting::Redis { deadline_ms, .. } if now_ms >= *deadline_ms => {
                let Waiting::Redis { pending, .. } = std::mem::replace(&mut self.waiting, Waiting::Done) else {
                    return self.progress();
                };
                let why = "Redis did not answer in time (the host reported nothing)".to_string();
                match pending {
                    RedisWait::Session(_) => {
                        self.session_outcome(gw, host, SessionOutcome::Failed(crate::session::StoreError(why)))
                    }
                    RedisWait::Answers(_) => self.answers_outcome(gw, host, AnswerOutcome::Failed(why)),
                    RedisWait::Limit(p) => {
                        let answer = redis::Answer::Failed(why);
                        match crate::limits::redis::finish(p, answer, host) {
                            crate::limits::redis::Next::Done(outcome) => self.limit_outcome(gw, host, outcome),
                            _ => self.progress(), // a failure is never sent again
                        }
                    }
                }
            }
            _ => self.progress(),
        }
    }

    /// The token of the Redis command this exchange waits for, if any.
    pub fn redis_token(&self) -> Option<u32> {
        match &self.waiting {
            Waiting::Redis { token, .. } => Some(*token),
            _ => None,
        }
    }

    /// Whether the body has not arrived yet (the host keeps the request paused meanwhile).
    pub fn awaits_body(&self) -> bool {
        matches!(self.waiting, Waiting::Body { .. } | Waiting::MoreBody { .. })
    }

    /// The server and tool of the request's first `tools/call`, once: hosts record them for access logs.
    pub fn take_called(&mut self) -> Option<(String, String)> {
        self.exchange.take_called()
    }

    /// The records of the tool calls answered since the last call: hosts count and log them.
    pub fn take_records(&mut self) -> Vec<crate::metrics::CallRecord> {
        self.exchange.take_records()
    }

    /// Upstream calls this exchange has outstanding; hosts sum them for [`Host::calls_in_flight`].
    pub fn calls_in_flight(&self) -> usize {
        self.upstream_tokens().count()
    }

    /// The tokens of the upstream calls this exchange waits for.
    pub fn upstream_tokens(&self) -> impl Iterator<Item = u32> + '_ {
        let tokens = match &self.waiting {
            Waiting::Upstream(tokens) => tokens.as_slice(),
            _ => &[],
        };
        tokens.iter().map(|(t, _)| *t)
    }

    fn progress(&self) -> Progress {
        if matches!(self.waiting, Waiting::Done) {
            Progress::Done
        } else {
            Progress::Waiting
        }
    }

    fn session_outcome(&mut self, gw: &Gateway, host: &mut dyn Host, outcome: SessionOutcome) -> Progress {
        let step = self.resume(gw, host, outcome);
        self.run(gw, host, step)
    }

    /// Hands a session outcome to the exchange; store failures are also the operator's business.
    fn resume(&mut self, gw: &Gateway, host: &mut dyn Host, outcome: SessionOutcome) -> Step {
        if let SessionOutcome::Failed(e) = &outcome {
            host.warn(&format!("session store ({}): {e}", gw.sessions.kind()));
        }
        self.exchange.on_session(gw, outcome)
    }

    fn answers_outcome(&mut self, gw: &Gateway, host: &mut dyn Host, outcome: AnswerOutcome) -> Progress {
        let step = self.answers_step(gw, host, outcome);
        self.run(gw, host, step)
    }

    /// Hands an answer-store outcome to the exchange; a failing store is also the operator's business.
    fn answers_step(&mut self, gw: &Gateway, host: &mut dyn Host, outcome: AnswerOutcome) -> Step {
        if let AnswerOutcome::Failed(e) = &outcome {
            host.warn(&format!(
                "input answers ({}): {e}",
                if gw.sessions.redis().is_some() { "redis" } else { "local" }
            ));
        }
        self.exchange.on_answers(gw, outcome)
    }

    /// Hands the rate limits' verdicts to the exchange; a failing store is also the operator's business.
    fn limit_outcome(&mut self, gw: &Gateway, host: &mut dyn Host, outcome: crate::limits::LimitOutcome) -> Progress {
        if let Some(e) = &outcome.store_error {
            host.warn(&format!("rate-limit store (redis): {e}; each limit did what its onStoreError says"));
        }
        let step = self.exchange.on_limit(gw, outcome);
        self.run(gw, host, step)
    }

    fn send_redis(&mut self, gw: &Gateway, host: &mut dyn Host, pending: RedisWait) -> Progress {
        match host.redis(pending.command()) {
            Ok(token) => {
                let timeout = gw.redis().map_or(0, |r| r.timeout_ms);
                let deadline_ms = host.now_ms().saturating_add(timeout + REDIS_GRACE_MS);
                self.waiting = Waiting::Redis { token, pending, deadline_ms };
                Progress::Waiting
            }
            Err(e) => {
                let why = format!("the Redis call could not be sent ({e})");
                match pending {
                    RedisWait::Session(_) => {
                        self.session_outcome(gw, host, SessionOutcome::Failed(crate::session::StoreError(why)))
                    }
                    RedisWait::Answers(_) => self.answers_outcome(gw, host, AnswerOutcome::Failed(why)),
                    RedisWait::Limit(p) => match crate::limits::redis::finish(p, redis::Answer::Failed(why), host) {
                        crate::limits::redis::Next::Done(outcome) => self.limit_outcome(gw, host, outcome),
                        _ => self.progress(),
                    },
                }
            }
        }
    }

    fn flush_warnings(&mut self, host: &mut dyn Host) {
        for w in self.exchange.take_warnings() {
            host.warn(&w);
        }
    }

    /// Sends `requests` (each with the index the exchange knows its answer by) and adds them to the calls
    /// outstanding; a call that cannot be sent is answered with its failure at once, which may give the
    /// next step.
    fn send(&mut self, gw: &Gateway, host: &mut dyn Host, requests: Vec<(usize, UpstreamRequest)>) -> Option<Step> {
        // Calls still outstanding stay: a virtual server's next handshake request, a guard check answered
        // while the other calls are out.
        let mut tokens = match std::mem::replace(&mut self.waiting, Waiting::Done) {
            Waiting::Upstream(tokens) => tokens,
            _ => Vec::with_capacity(requests.len()),
        };
        let mut next = None;
        // Requests an immediate failure led to (a guard check that could not be sent, failing open): sent
        // next, numbered after these.
        let mut more = Vec::new();
        let busy = host.calls_in_flight();
        self.sent_ms = host.now_ms();
        let mut forwarded = std::mem::replace(&mut self.forwarded, false);
        let mut added = 0;
        for (i, r) in requests {
            // Past the worker's limit a call is refused here, with a reason, instead of by
            // Envoy's circuit breakers, which would also fail other clients' calls.
            let sent = if r.dispatch == Dispatch::Route {
                // The client's request can become one upstream request, not several.
                if std::mem::replace(&mut forwarded, true) {
                    Err("this tool is reached through the request's route (upstream.dispatch: route), \
                         and one request can make one such call: send it in a request of its own"
                        .to_string())
                } else {
                    host.forward(&r)
                }
            } else if busy + added >= gw.max_calls_in_flight {
                Err(format!(
                    "the gateway has {} tool calls in flight on this worker, its limit \
                     (maxCallsInFlight); try again shortly",
                    gw.max_calls_in_flight
                ))
            } else {
                host.dispatch(&r).map_err(|status| {
                    let why = format!(
                        "the gateway could not send the request to cluster '{}' ({status}): the \
                         cluster is not defined, or its circuit breaker is open (too many requests)",
                        r.cluster
                    );
                    host.warn(&why);
                    why
                })
            };
            match sent {
                Ok(token) => {
                    added += 1;
                    tokens.push((token, i));
                }
                Err(why) => {
                    self.exchange.upstream_took(0);
                    match self.exchange.on_upstream(gw, i, UpstreamResult::Failed(why)) {
                        Some(Step::Dispatch(rs)) => more.extend(rs),
                        Some(s) => next = Some(s),
                        None => {}
                    }
                }
            }
        }
        self.forwarded = forwarded;
        self.waiting = Waiting::Upstream(tokens);
        match next {
            Some(s) => Some(s),
            None if !more.is_empty() => Some(Step::Dispatch(more)),
            None => None,
        }
    }

    /// Performs steps until the exchange waits on the host or has responded.
    fn run(&mut self, gw: &Gateway, host: &mut dyn Host, mut step: Step) -> Progress {
        loop {
            self.flush_warnings(host);
            step = match step {
                Step::Respond(r) => {
                    self.waiting = Waiting::Done;
                    host.respond(r);
                    return Progress::Done;
                }
                Step::Answers(op) => match gw.sessions.redis() {
                    // With Redis sessions the answers are kept there too, for every replica.
                    Some(store) => {
                        let pending = crate::input::redis::start(store, op);
                        return self.send_redis(gw, host, RedisWait::Answers(pending));
                    }
                    None => {
                        let outcome = crate::input::poll::run(op, host);
                        self.answers_step(gw, host, outcome)
                    }
                },
                Step::Session(op) => match gw.sessions.start(op, host) {
                    Started::Done(outcome) => self.resume(gw, host, outcome),
                    Started::Redis(pending) => return self.send_redis(gw, host, RedisWait::Session(pending)),
                },
                Step::Limit(op) => {
                    let server = &gw.servers[op.server];
                    match crate::limits::start(
                        &server.limits,
                        &server.name,
                        self.exchange.caller(),
                        &op,
                        host,
                        gw.redis(),
                    ) {
                        crate::limits::Started::Done(outcome) => {
                            if let Some(e) = &outcome.store_error {
                                host.warn(&format!("rate-limit store: {e}"));
                            }
                            self.exchange.on_limit(gw, outcome)
                        }
                        crate::limits::Started::Redis(p) => return self.send_redis(gw, host, RedisWait::Limit(p)),
                    }
                }
                Step::Dispatch(requests) => {
                    // Numbered after every request dispatched so far: a guard check answered while other
                    // calls are in flight adds its next request to them.
                    let base = self.dispatched;
                    self.dispatched += requests.len();
                    let indexed = requests.into_iter().enumerate().map(|(i, r)| (base + i, r)).collect();
                    match self.send(gw, host, indexed) {
                        Some(s) => s,
                        None => return Progress::Waiting,
                    }
                }
            };
        }
    }
}

#[cfg(test)]
mod cost;
#[cfg(test)]
pub mod test_host;
#[cfg(test)]
mod tests;
