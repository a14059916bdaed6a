//! Proxied servers on the wire: performs what [`crate::proxy`]'s relay decides. The client's request goes
//! on through the router to the backend with its head rewritten; the answer comes back through the
//! response callbacks, passed on chunk by chunk (or, for a filtered JSON `tools/list`, held to its end).
//!
//! Some steps complete later ([`wait`]): a session operation with `sessions.store: redis` (the request
//! opening the client's session, or the answer binding the backend's new session to one of ours). The
//! request or answer is held meanwhile, its body buffered by Envoy, in one place ([`Held::hold`]) until
//! the step's answer comes ([`on_redis_reply`], [`on_call_response`]) or its deadline passes
//! ([`expired`]); then the relay decides, and the exchange is rewritten and resumed or answered locally.

use super::{abi, answer_head, answer_view, borrowed, log, now_ms, Calls};
use crate::driver::Host;
use crate::gateway::Gateway;
use crate::proxy::bridge::{self, Begin, Bridge, Post};
use crate::proxy::gate::Gate;
use crate::proxy::reinit::{Reinit, Step};
use crate::proxy::wait::{self, Done, Pending};
use crate::proxy::{self, Answer, Bind, Opening, Relay, Start};
use crate::session::{redis, SessionOutcome};
use crate::slots::Slots;
use crate::transport::{HttpResponse, RequestHead};
use crate::upstream::UpstreamResult;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};
use std::cell::RefCell;
use std::rc::Rc;

/// How much of a buffered body is read at once: all of it (a bound the hosts' `i32` arguments take).
const WHOLE: usize = 1 << 30;

/// A proxied request in flight.
struct Held {
    gw: Rc<Gateway>,
    /// `None` while the request head waits for the session store.
    relay: Option<Relay>,
    /// The step this request or its answer waits for.
    wait: Option<Wait>,
    /// The request's body has ended (seen while the head waited).
    request_end: bool,
    /// The answer's body has ended (seen while its head waited).
    response_end: bool,
    /// The request body so far, kept for the relay ([`Relay::keeps_body`]).
    kept: Vec<u8>,
    /// The backend forgot the session: its re-initialisation, and the gateway's call it waits for.
    reinit: Option<Box<Reinit>>,
    call: Option<u32>,
    /// The request body is still being read for the tool filter.
    reading_body: bool,
    /// The answer is replaced by this once its body has ended (headers held meanwhile).
    replacement: Option<HttpResponse>,
    /// The answer's body is rewritten.
    rewriting: bool,
    /// The backend's answer head as it came (without `:status`) while it is held: what the edits that put
    /// a replacement in its place are computed against.
    answer: Vec<(String, String)>,
    /// A Streamable HTTP client's request to an SSE backend, and the gateway's POSTs it waits for.
    bridge: Option<Box<Bridge>>,
    posts: Vec<(u32, Post)>,
    /// An SSE backend's stream whose head is held until its endpoint is bound ([`Relay::bind`]): how much
    /// of the body Envoy holds the relay has read, and what goes to the client in its place.
    holding: bool,
    fed: usize,
    out: Vec<u8>,
    /// The answer to a request sent again after a re-initialisation, held for the guard service.
    retried: Option<HttpResponse>,
}

/// A step in flight for a held request: a Redis command or an HTTP call (`token` is the host's, for one or
/// the other, as `pending` says).
struct Wait {
    token: u32,
    pending: Pending,
    /// When the watchdog gives up on the host ([`expired`]).
    deadline_ms: u64,
    phase: Phase,
}

/// Which half of the exchange waits.
enum Phase {
    /// The request head: [`proxy::resume`] decides once the store has answered.
    Request(Box<Opening>),
    /// The answer head: [`Relay::on_session`] decides.
    Response,
    /// A re-initialisation's store operation: [`Reinit::on_session`] goes on.
    Reinit,
    /// The session a bridged `initialize` opens: [`Bridge::on_session`] gives the client's answer.
    Bridge,
    /// An SSE backend's stream, for the session its endpoint is bound to: [`Relay::on_bound`] goes on.
    Stream,
    /// The whole request body, for its calls' checks: [`Relay::on_gate`] decides.
    Body,
    /// The whole answer body, for the guard service's output checks: [`Relay::on_answer_gate`] goes on.
    Answer,
    /// A bridged request's body, for its call's checks: [`Bridge::on_gate`] decides.
    BridgeBody,
    /// A bridged call's answer, for the guard service's output check: [`Bridge::on_answer_gate`] goes on.
    BridgeAnswer,
    /// A result on an SSE client's stream, for the guard service: [`Relay::on_stream_gate`] goes on.
    StreamResult,
}

thread_local! {
    static RELAYS: RefCell<Slots<Held>> = const { RefCell::new(Slots::new()) };
}

fn calls(gw: &Gateway, id: u32) -> Calls<'_> {
    Calls::new(gw, id, false, crate::headers::NONE)
}

fn send(r: &HttpResponse) {
    let headers = borrowed(&r.headers);
    if let Err(s) = abi::send_response(r.status, &headers, &r.body) {
        log(LogLevel::Debug, &format!("mcp-gateway: the local reply was refused ({s:?})"));
    }
}

fn edit_headers(map: MapType, edits: &[crate::header_edits::Edit]) {
    if let Err(s) = abi::edit_map(map, edits) {
        log(LogLevel::Warn, &format!("mcp-gateway: could not rewrite a proxied exchange's headers ({s:?})"));
    }
}

/// The request head: `None` when the request is not for a proxied server.
pub fn on_request_headers(id: u32, gw: &Rc<Gateway>, head: &RequestHead, end_of_stream: bool) -> Option<Action> {
    let start = proxy::route(gw, head, &mut calls(gw, id))?;
    let mut held = Held {
        gw: gw.clone(),
        relay: None,
        wait: None,
        request_end: end_of_stream,
        response_end: false,
        kept: Vec::new(),
        reinit: None,
        call: None,
        reading_body: false,
        replacement: None,
        rewriting: false,
        answer: Vec::new(),
        bridge: None,
        posts: Vec::new(),
        holding: false,
        fed: 0,
        out: Vec::new(),
        retried: None,
    };
    let (relay, headers) = match start {
        Start::Bridge(bridge) => {
            if let Some(caller) = bridge.for_virtual() {
                super::stats::loopback(&gw.observability, bridge.server(), caller);
            }
            held.bridge = Some(bridge);
            // The body says what to do; an empty one is answered at once.
            let action = match end_of_stream {
                true => held.begin(&mut calls(gw, id), &[]),
                false => Some(Action::Pause),
            };
            if action.is_some() {
                RELAYS.with(|r| r.borrow_mut().insert(id, held));
            }
            return Some(action.unwrap_or(Action::Pause));
        }
        Start::Respond(r) => {
            send(&r);
            return Some(Action::Pause);
        }
        Start::Redis(opening, pending) => {
            let mut env = calls(gw, id);
            if !held.hold(&mut env, Pending::Session(pending), Phase::Request(opening)) {
                return Some(Action::Pause); // answered
            }
            RELAYS.with(|r| r.borrow_mut().insert(id, held));
            return Some(Action::Pause);
        }
        Start::Forward(relay, headers) => (relay, headers),
    };
    edit_headers(MapType::HttpRequestHeaders, &headers);
    held.reading_body = relay.needs_body() && !end_of_stream;
    let reading_body = held.reading_body;
    held.relay = Some(relay);
    RELAYS.with(|r| r.borrow_mut().insert(id, held));
    Some(if reading_body { Action::Pause } else { Action::Continue })
}

impl Held {
    /// Holds the exchange while `pending` runs: sends its Redis command or its HTTP call, and waits for the
    /// answer until its deadline. A step that cannot be sent fails at once. False when the exchange was
    /// answered (and is to be forgotten).
    fn hold(&mut self, env: &mut Calls, pending: Pending, phase: Phase) -> bool {
        match self.send(env, pending, phase) {
            Ok(()) => true,
            Err((phase, done)) => self.resumed(env, phase, done),
        }
    }

    /// Sends `pending`'s Redis command or HTTP call, and waits for it in `phase`; what it came to when it
    /// could not be sent.
    fn send(&mut self, env: &mut Calls, pending: Pending, phase: Phase) -> Result<(), (Phase, Done)> {
        let sent = match (&pending, pending.command()) {
            (_, Some(command)) => env.redis(command).map_err(|e| format!("the Redis call could not be sent ({e})")),
            (Pending::Call(r), None) => {
                let timeout = std::time::Duration::from_millis(r.timeout_ms);
                hostcalls::dispatch_http_call(&r.cluster, r.wire_headers(), r.body.as_deref(), vec![], timeout)
                    .map_err(|s| format!("the call to cluster '{}' could not be sent ({s:?})", r.cluster))
            }
            (_, None) => Err("nothing to send".into()),
        };
        match sent {
            Ok(token) => {
                let deadline_ms = pending.deadline_ms(&self.gw, now_ms());
                self.wait = Some(Wait { token, pending, deadline_ms, phase });
                Ok(())
            }
            Err(why) => Err((phase, pending.failed(env, why))),
        }
    }

    /// Goes on once the step has answered. False when the exchange was answered locally.
    fn resumed(&mut self, env: &mut Calls, phase: Phase, done: Done) -> bool {
        if let Done::Limit(crate::limits::LimitOutcome { store_error: Some(e), .. }) = &done {
            env.warn(&format!("rate-limit store (redis): {e}; each limit did what its onStoreError says"));
        }
        match phase {
            Phase::Body => {
                let Some(relay) = self.relay.as_mut() else { return false };
                let gate = relay.on_gate(done);
                return match self.gated(env, gate) {
                    Ok(true) => true,
                    Ok(false) => resume(abi::resume_request(), "request"),
                    Err(refused) => {
                        send(&refused);
                        false
                    }
                };
            }
            Phase::Answer => {
                let Some(relay) = self.relay.as_mut() else { return false };
                let gate = relay.on_answer_gate(done);
                return match self.answer_gated(env, gate) {
                    None => true,
                    Some(true) => true,
                    Some(false) => resume(abi::resume_response(), "answer"),
                };
            }
            Phase::BridgeBody => {
                let Some(bridge) = self.bridge.as_mut() else { return false };
                let begin = bridge.on_gate(done, now_ms());
                return match self.began(env, begin) {
                    None => false,
                    Some(Action::Pause) => true,
                    Some(_) => resume(abi::resume_request(), "request"),
                };
            }
            Phase::BridgeAnswer => {
                let gw = self.gw.clone();
                let Some(bridge) = self.bridge.as_mut() else { return false };
                let step = bridge.on_answer_gate(&gw, env, done);
                return self.bridge_answered(env, step);
            }
            Phase::StreamResult => {
                let gw = self.gw.clone();
                let Some(relay) = self.relay.as_mut() else { return false };
                let released = relay.on_stream_gate(&gw, env, done);
                self.out.extend(released);
                return self.stream_resumed(env);
            }
            _ => {}
        }
        let outcome = match done {
            Done::Session(outcome) => outcome,
            _ => SessionOutcome::Failed(crate::session::StoreError("an unexpected answer".into())),
        };
        if let SessionOutcome::Failed(e) = &outcome {
            env.warn(&format!("session store ({}): {e}", self.gw.sessions.kind()));
        }
        let gw = self.gw.clone();
        match phase {
            Phase::Request(opening) => match proxy::resume(&gw, env, *opening, outcome) {
                Start::Respond(r) => {
                    send(&r);
                    false
                }
                Start::Redis(opening, pending) => self.hold(env, Pending::Session(pending), Phase::Request(opening)),
                Start::Bridge(bridge) => {
                    self.bridge = Some(bridge);
                    if !self.request_end {
                        return true; // the body's end comes to on_request_body, still paused
                    }
                    let body = buffered(BufferType::HttpRequestBody);
                    match self.begin(env, &body) {
                        None => false,
                        Some(Action::Pause) => true, // held for its call's checks
                        Some(_) => resume(abi::resume_request(), "request"),
                    }
                }
                Start::Forward(relay, headers) => {
                    edit_headers(MapType::HttpRequestHeaders, &headers);
                    let needs_body = relay.needs_body();
                    self.relay = Some(relay);
                    if needs_body && !self.request_end {
                        self.reading_body = true; // the body's end comes to on_request_body, still paused
                        return true;
                    }
                    let keeps = self.relay.as_ref().is_some_and(Relay::keeps_body);
                    if needs_body || keeps {
                        // What Envoy buffered meanwhile is not handed to on_request_body again.
                        let body = buffered(BufferType::HttpRequestBody);
                        if needs_body {
                            match self.checked_body(env, &body) {
                                Err(refused) => {
                                    send(&refused);
                                    return false;
                                }
                                Ok(true) => return true, // held for the calls' checks (Phase::Body)
                                Ok(false) => {}
                            }
                        } else if self.request_end {
                            if let Some(relay) = self.relay.as_mut() {
                                relay.keep(body);
                            }
                        } else {
                            self.kept = body;
                        }
                    }
                    resume(abi::resume_request(), "request")
                }
            },
            Phase::Bridge => {
                let Some(bridge) = self.bridge.as_mut() else { return false };
                let r = bridge.on_session(outcome);
                if self.response_end {
                    replace_response(&self.answer, &r);
                    resume(abi::resume_response(), "answer");
                } else {
                    send(&r);
                }
                false
            }
            Phase::Stream => {
                let Some(relay) = self.relay.as_mut() else { return false };
                match relay.on_bound(&gw, env, outcome) {
                    Ok(bound) => {
                        self.out.extend(bound);
                        self.holding = false;
                        self.stream_resumed(env)
                    }
                    Err(failed) => {
                        send(&failed);
                        false
                    }
                }
            }
            Phase::Body | Phase::Answer | Phase::BridgeBody | Phase::BridgeAnswer | Phase::StreamResult => false, // above
            Phase::Reinit => match self.reinit.as_mut() {
                Some(reinit) => {
                    let step = reinit.on_session(outcome);
                    self.reinit_step(env, step)
                }
                None => false,
            },
            Phase::Response => {
                let Some(relay) = self.relay.as_mut() else { return false };
                match relay.on_session(outcome) {
                    Answer::Redis(pending) => self.hold(env, Pending::Session(pending), Phase::Response),
                    Answer::Pass(edits) => {
                        edit_headers(MapType::HttpResponseHeaders, &edits);
                        resume(abi::resume_response(), "answer")
                    }
                    Answer::Rewrite(edits) | Answer::Hold(edits) => {
                        edit_headers(MapType::HttpResponseHeaders, &edits);
                        self.rewriting = true;
                        if relay.buffers() && !self.response_end {
                            return true; // the body's end comes to on_response_body, still paused
                        }
                        let body = buffered(BufferType::HttpResponseBody);
                        let out = relay.on_chunk(&gw, env, &body, self.response_end);
                        let gate = if self.response_end { relay.answer_gate() } else { Gate::Go(None) };
                        if let Gate::Go(None) = gate {
                            if out != body {
                                let _ = abi::set_buffer(BufferType::HttpResponseBody, 0, WHOLE, &out);
                            }
                        } else if self.answer_gated(env, gate).is_none_or(|resumed| resumed) {
                            return true; // held for the guard service, or resumed
                        }
                        resume(abi::resume_response(), "answer")
                    }
                    Answer::Replace(r) if self.response_end => {
                        replace_response(&self.answer, &r);
                        resume(abi::resume_response(), "answer");
                        false
                    }
                    Answer::Replace(r) => {
                        self.replacement = Some(r); // put in place at the body's end
                        true
                    }
                    Answer::Reinit(reinit) => {
                        let reinit = self.reinit.insert(reinit);
                        let step = reinit.start();
                        self.reinit_step(env, step)
                    }
                }
            }
        }
    }

    /// Performs a re-initialisation's steps until it waits (for the backend or Redis) or is done. False
    /// when the exchange was answered locally.
    fn reinit_step(&mut self, env: &mut Calls, mut step: Step) -> bool {
        let gw = self.gw.clone();
        loop {
            step = match step {
                Step::Call(head, body) => match self.dispatch(&head, &body) {
                    Ok(token) => {
                        self.call = Some(token);
                        return true;
                    }
                    Err(why) => {
                        env.warn(&format!("re-initialising the proxied server of '{}': {why}", self.server()));
                        let Some(reinit) = self.reinit.as_mut() else { return false };
                        reinit.on_answer(0, &[], Vec::new())
                    }
                },
                Step::Session(op) => match gw.sessions.start(op, env) {
                    crate::session::Started::Done(outcome) => {
                        let Some(reinit) = self.reinit.as_mut() else { return false };
                        reinit.on_session(outcome)
                    }
                    crate::session::Started::Redis(pending) => {
                        return self.hold(env, Pending::Session(pending), Phase::Reinit)
                    }
                },
                Step::Retried(status, headers, body) => {
                    let Some(relay) = self.relay.as_mut() else { return false };
                    let r = relay.retried(&gw, env, status, headers, body);
                    let gate = relay.answer_gate();
                    if let Gate::Go(None) = gate {
                        return self.answer_held(r);
                    }
                    // Held for the guard service's output checks; put in place once they are done.
                    self.reinit = None;
                    self.retried = Some(r);
                    let _ = self.answer_gated(env, gate); // held, or put in place and resumed
                    return true;
                }
                Step::Gone(r) => return self.answer_held(r),
            };
        }
    }

    /// Puts `r` in place of the held backend answer: now if its body has ended, else at its end.
    fn answer_held(&mut self, r: HttpResponse) -> bool {
        self.reinit = None;
        if self.response_end {
            replace_response(&self.answer, &r);
            return resume(abi::resume_response(), "answer");
        }
        self.replacement = Some(r);
        true
    }

    fn server(&self) -> String {
        let bridged = self.bridge.as_ref().map(|b| b.server().to_string());
        self.relay.as_ref().map(|r| r.server().to_string()).or(bridged).unwrap_or_default()
    }

    /// A bridge's whole request body: answered at once (`None`), held for its call's checks (`Pause`), or
    /// the request goes on as the backend's stream (`Continue`: its headers rewritten, its body dropped).
    fn begin(&mut self, env: &mut Calls, body: &[u8]) -> Option<Action> {
        let gw = self.gw.clone();
        let begin = self.bridge.as_mut()?.on_body(&gw, env, body, now_ms());
        self.began(env, begin)
    }

    /// Performs what a bridged request's body led to until its checks wait or its fate is decided (see
    /// [`Held::begin`]).
    fn began(&mut self, env: &mut Calls, mut begin: Begin) -> Option<Action> {
        loop {
            begin = match begin {
                Begin::Respond(r) => {
                    send(&r);
                    return None;
                }
                Begin::Stream(edits) => {
                    edit_headers(MapType::HttpRequestHeaders, &edits);
                    let _ = abi::set_buffer(BufferType::HttpRequestBody, 0, WHOLE, &[]);
                    return Some(Action::Continue);
                }
                Begin::Wait(pending) => match self.send(env, pending, Phase::BridgeBody) {
                    Ok(()) => return Some(Action::Pause),
                    Err((_, done)) => self.bridge.as_mut()?.on_gate(done, now_ms()),
                },
            };
        }
    }

    /// Performs what a bridged call's answer came to once the guard service checked its result. False when
    /// the client was answered.
    fn bridge_answered(&mut self, env: &mut Calls, step: bridge::Step) -> bool {
        match step {
            bridge::Step::Reply(r) if self.response_end => {
                replace_response(&self.answer, &r);
                resume(abi::resume_response(), "answer");
                false
            }
            bridge::Step::Reply(r) => {
                send(&r);
                false
            }
            bridge::Step::Redis(pending) => self.hold(env, Pending::Session(pending), Phase::Bridge),
            bridge::Step::Wait(pending) => self.hold(env, pending, Phase::BridgeAnswer),
            bridge::Step::Post(..) => true, // none after the answer
        }
    }

    /// Goes on with an SSE client's stream held for a result's check (or its endpoint's binding): the
    /// chunks Envoy held meanwhile are read after those the relay had read (`fed`), and what the client
    /// gets of all of them put in their place; held again when a later result is checked in turn.
    fn stream_resumed(&mut self, env: &mut Calls) -> bool {
        let gw = self.gw.clone();
        let Some(relay) = self.relay.as_mut() else { return false };
        let whole = buffered(BufferType::HttpResponseBody);
        let later = whole.get(self.fed..).unwrap_or_default();
        self.fed = whole.len();
        let more = relay.on_chunk(&gw, env, later, self.response_end);
        self.out.extend(more);
        if let Some(pending) = relay.stream_gate() {
            if self.stream_checks(env, pending) {
                return true;
            }
        }
        self.fed = 0;
        let _ = abi::set_buffer(BufferType::HttpResponseBody, 0, WHOLE, &std::mem::take(&mut self.out));
        resume(abi::resume_response(), "answer")
    }

    /// Sends the guard service's checks of results on an SSE client's stream until one waits (true: the
    /// stream stays held) or none is left (what they released added to `out`).
    fn stream_checks(&mut self, env: &mut Calls, mut pending: Pending) -> bool {
        let gw = self.gw.clone();
        loop {
            let done = match self.send(env, pending, Phase::StreamResult) {
                Ok(()) => return true,
                Err((_, done)) => done,
            };
            let Some(relay) = self.relay.as_mut() else { return false };
            let released = relay.on_stream_gate(&gw, env, done);
            self.out.extend(released);
            match relay.stream_gate() {
                Some(next) => pending = next,
                None => return false,
            }
        }
    }

    /// Performs a bridge's steps: the gateway's POSTs sent, or the client answered. `end`: the backend's
    /// stream is at its end in the callback now running, so an answer replaces it in place; otherwise a
    /// local reply takes the held answer's place (and ends the backend's stream).
    fn bridge_steps(&mut self, env: &mut Calls, steps: Vec<bridge::Step>, end: bool) -> Action {
        let mut queue = steps;
        queue.reverse(); // popped from the end, in order
        while let Some(step) = queue.pop() {
            match step {
                bridge::Step::Post(post, head, body) => match self.dispatch(&head, &body) {
                    Ok(token) => self.posts.push((token, post)),
                    Err(why) => {
                        env.warn(&format!("the proxied SSE server of '{}': {why}", self.server()));
                        let Some(bridge) = self.bridge.as_mut() else { break };
                        queue.extend(bridge.on_posted(post, 0).into_iter().rev());
                    }
                },
                bridge::Step::Redis(pending) => {
                    self.response_end = end;
                    self.hold(env, Pending::Session(pending), Phase::Bridge); // false: answered already
                    break;
                }
                bridge::Step::Wait(pending) => {
                    self.response_end = end;
                    self.hold(env, pending, Phase::BridgeAnswer); // false: answered already
                    break;
                }
                bridge::Step::Reply(r) if end => {
                    replace_response(&self.answer, &r);
                    return Action::Continue;
                }
                bridge::Step::Reply(r) => {
                    send(&r);
                    break;
                }
            }
        }
        Action::Pause
    }

    /// Sends one of the gateway's own requests to the backend: to `upstream.cluster` when configured,
    /// else to the cluster of the route the client's request took.
    fn dispatch(&self, head: &[(String, String)], body: &[u8]) -> Result<u32, String> {
        let server = self.server();
        let backend = self.gw.server(&server).and_then(|s| s.proxy.as_ref());
        let Some(backend) = backend else { return Err("the server is gone".into()) };
        let cluster = match &backend.cluster {
            Some(c) => c.clone(),
            None => {
                let property = |path: Vec<&str>| hostcalls::get_property(path).ok().flatten().filter(|v| !v.is_empty());
                let found = property(vec!["cluster_name"]).or_else(|| property(vec!["xds", "cluster_name"]));
                String::from_utf8_lossy(&found.ok_or("the route's cluster is unknown; set upstream.cluster")?)
                    .into_owned()
            }
        };
        let pairs = borrowed(head);
        let timeout = std::time::Duration::from_millis(backend.timeout_ms);
        hostcalls::dispatch_http_call(&cluster, pairs, Some(body), vec![], timeout)
            .map_err(|status| format!("the call to cluster '{cluster}' could not be sent ({status:?})"))
    }

    /// A chunk of an SSE backend's stream whose head is held until its endpoint is bound: Envoy holds the
    /// chunks so far (`size` bytes), of which the relay reads the new ones. `None` when the exchange was
    /// answered locally (the store failed or refused a session). An Envoy without PR #36411 (Higress's
    /// envoy-1.27) shows a paused body without its newest chunk: an endpoint event split over two reads is
    /// then bound one read late, and that read goes on unread (no client has posted yet, so it holds no
    /// answer); the endpoint event, a backend's first write, comes whole in the first read in practice.
    fn bind_stream(&mut self, env: &mut Calls, size: usize, end: bool) -> Option<Action> {
        let gw = self.gw.clone();
        let relay = self.relay.as_mut()?;
        let whole = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size).ok().flatten().unwrap_or_default();
        let new = whole.get(self.fed..).unwrap_or_default();
        self.fed = whole.len();
        let out = relay.on_chunk(&gw, env, new, end);
        self.out.extend(out);
        match relay.bind() {
            Bind::Seeking if !end => Some(Action::Pause),
            Bind::Seeking | Bind::Bound => {
                self.holding = false;
                if let Some(pending) = relay.stream_gate() {
                    self.response_end = end;
                    if self.stream_checks(env, pending) {
                        return Some(Action::Pause); // a result held for the guard service
                    }
                }
                self.fed = 0;
                let _ = abi::set_buffer(BufferType::HttpResponseBody, 0, WHOLE, &std::mem::take(&mut self.out));
                Some(Action::Continue)
            }
            Bind::Failed(failed) => {
                send(&failed);
                None
            }
            Bind::Redis(pending) => {
                self.response_end = end;
                self.hold(env, Pending::Session(pending), Phase::Stream).then_some(Action::Pause)
            }
        }
    }

    /// The whole request body through the relay's checks (renamed in place where the relay renamed it),
    /// then the checks that wait ([`Relay::gate`]): `Ok(true)` when the request is held for them,
    /// `Ok(false)` when it goes on now, `Err` the refusal to answer with.
    fn checked_body(&mut self, env: &mut Calls, body: &[u8]) -> Result<bool, HttpResponse> {
        let gw = self.gw.clone();
        let Some(relay) = self.relay.as_mut() else { return Ok(false) };
        let checked = relay.on_body(&gw, env, body);
        let (head, also) = relay.take_also();
        for message in also {
            // Sent alongside, its answer ignored (an SSE backend answers on the stream).
            if let Err(why) = self.dispatch(&head, &message) {
                env.warn(&format!("a cancellation for the proxied server of '{}': {why}", self.server()));
            }
        }
        let Some(relay) = self.relay.as_mut() else { return Ok(false) };
        match checked? {
            Some(renamed) if renamed.len() > gw.max_request_bytes => return Err(crate::transport::too_large(&gw)),
            Some(renamed) => {
                let _ = abi::set_buffer(BufferType::HttpRequestBody, 0, WHOLE, &renamed);
            }
            None => {}
        }
        let gate = relay.gate();
        self.gated(env, gate)
    }

    /// Performs a request's checks until one waits ([`Phase::Body`]: `Ok(true)`) or they are decided:
    /// `Ok(false)` goes on (with the body they put in place), `Err` is the refusal.
    fn gated(&mut self, env: &mut Calls, mut gate: Gate) -> Result<bool, HttpResponse> {
        loop {
            gate = match gate {
                Gate::Go(body) => {
                    if let Some(body) = body {
                        let _ = abi::set_buffer(BufferType::HttpRequestBody, 0, WHOLE, &body);
                    }
                    return Ok(false);
                }
                Gate::Refuse(refused) => return Err(refused),
                Gate::Wait(pending) => match self.send(env, pending, Phase::Body) {
                    Ok(()) => return Ok(true),
                    Err((_, done)) => {
                        let Some(relay) = self.relay.as_mut() else { return Ok(false) };
                        relay.on_gate(done)
                    }
                },
            };
        }
    }

    /// Performs the output checks of an answer read whole until one waits ([`Phase::Answer`]: `None`) or
    /// they are done: the answer then goes on with the body they put in place. `Some(true)` when that
    /// resumed the exchange already (an answer to a request sent again, [`Held::answer_held`]).
    fn answer_gated(&mut self, env: &mut Calls, mut gate: Gate) -> Option<bool> {
        loop {
            gate = match gate {
                Gate::Go(body) => {
                    if let Some(mut r) = self.retried.take() {
                        r.body = body.unwrap_or(r.body);
                        self.answer_held(r);
                        return Some(true);
                    }
                    if let Some(body) = body {
                        let _ = abi::set_buffer(BufferType::HttpResponseBody, 0, WHOLE, &body);
                    }
                    return Some(false);
                }
                Gate::Refuse(r) => Gate::Go(Some(r.body)), // not given by output checks
                Gate::Wait(pending) => match self.send(env, pending, Phase::Answer) {
                    Ok(()) => return None,
                    Err((_, done)) => {
                        let relay = self.relay.as_mut()?;
                        relay.on_answer_gate(done)
                    }
                },
            };
        }
    }
}

/// All that Envoy buffered of a held body (empty when there is none).
fn buffered(buffer: BufferType) -> Vec<u8> {
    hostcalls::get_buffer(buffer, 0, WHOLE).ok().flatten().unwrap_or_default()
}

/// Resumes a held request or answer; a refusal (the stream is gone) is only logged, and the exchange stays
/// held until Envoy ends it, so this is always true (go on), as the callers' results are.
fn resume(result: Result<(), abi::Refused>, what: &str) -> bool {
    if let Err(s) = result {
        log(LogLevel::Debug, &format!("mcp-gateway: the proxied {what} could not be resumed ({s:?})"));
    }
    true
}

/// Puts a local answer in place of a held backend answer whose body has ended (`answer`: its headers as
/// they came).
fn replace_response(answer: &[(String, String)], resp: &HttpResponse) {
    edit_headers(MapType::HttpResponseHeaders, &proxy::replacing(answer, resp));
    let _ = abi::set_buffer(BufferType::HttpResponseBody, 0, WHOLE, &resp.body);
}

/// A Redis reply for context `id`; false when no proxied request of this VM waits for it.
#[cfg_attr(not(feature = "higress"), allow(dead_code))]
pub fn on_redis_reply(id: u32, token: u32, answer: redis::Answer<'_>) -> bool {
    RELAYS.with(|r| {
        let mut relays = r.borrow_mut();
        let Some(held) = relays.get_mut(&id) else { return false };
        if held.wait.as_ref().is_none_or(|w| w.token != token || w.pending.command().is_none()) {
            return true; // a late reply
        }
        let Some(wait) = held.wait.take() else { return true };
        if hostcalls::set_effective_context(id).is_err() {
            relays.remove(&id);
            return true;
        }
        let gw = held.gw.clone();
        let mut env = calls(&gw, id);
        let go_on = match wait.pending.on_redis(&gw, answer, &mut env) {
            wait::Next::Done(done) => held.resumed(&mut env, wait.phase, done),
            wait::Next::Reauthenticate(pending) => {
                env.reauthenticate();
                held.hold(&mut env, pending, wait.phase)
            }
            wait::Next::Resend(pending) => held.hold(&mut env, pending, wait.phase),
        };
        if !go_on {
            relays.remove(&id);
        }
        true
    })
}

/// The answer to one of the gateway's calls (a re-initialisation's, or a step's the exchange waits for);
/// false when no proxied request of this VM waits for `token`.
pub fn on_call_response(token: u32, body_size: usize) -> bool {
    RELAYS.with(|r| {
        let mut relays = r.borrow_mut();
        let waits = |h: &Held| h.wait.as_ref().is_some_and(|w| w.token == token && w.pending.command().is_none());
        let mine = |h: &Held| h.call == Some(token) || h.posts.iter().any(|(t, _)| *t == token) || waits(h);
        let Some((&id, held)) = relays.iter_mut().find(|(_, h)| mine(h)) else { return false };
        if hostcalls::set_effective_context(id).is_err() {
            relays.remove(&id);
            return true;
        }
        let (status, headers) = answer_head(MapType::HttpCallResponseHeaders);
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten();
        let gw = held.gw.clone();
        if let Some(i) = held.posts.iter().position(|(t, _)| *t == token) {
            let (_, post) = held.posts.swap_remove(i);
            let steps = held.bridge.as_mut().map(|b| b.on_posted(post, status.unwrap_or(0))).unwrap_or_default();
            held.bridge_steps(&mut calls(&gw, id), steps, false);
            return true;
        }
        if let Some(wait) = held.wait.take_if(|_| held.call != Some(token)) {
            let result = match status {
                Some(status) => UpstreamResult::Response { status, headers, body: body.unwrap_or_default() },
                None => UpstreamResult::Failed("no answer within its timeout, or the connection failed".into()),
            };
            if !held.resumed(&mut calls(&gw, id), wait.phase, Done::Call(result)) {
                relays.remove(&id);
            }
            return true;
        }
        held.call = None;
        let status = status.unwrap_or(0);
        let Some(reinit) = held.reinit.as_mut() else { return true };
        let step = reinit.on_answer(status, &headers, body.unwrap_or_default());
        if !held.reinit_step(&mut calls(&gw, id), step) {
            relays.remove(&id);
        }
        true
    })
}

/// Fails the held requests whose step the host never answered (it should have, at its timeout).
pub fn expired(now: u64) {
    // Bridges past their server's timeout: the client gets the timeout's error, the backend's stream ends.
    let mut timed_out = Vec::new();
    RELAYS.with(|r| {
        for (id, h) in r.borrow_mut().iter_mut() {
            if let Some(answer) = h.bridge.as_mut().and_then(|b| b.expired(now)) {
                timed_out.push((*id, answer));
            }
        }
    });
    for (id, r) in timed_out {
        if hostcalls::set_effective_context(id).is_ok() {
            send(&r);
        }
    }
    let mut late = Vec::new();
    RELAYS.with(|r| {
        for (id, h) in r.borrow().iter() {
            if h.wait.as_ref().is_some_and(|w| now >= w.deadline_ms) {
                late.push(*id);
            }
        }
    });
    for id in late {
        RELAYS.with(|r| {
            let mut relays = r.borrow_mut();
            let Some(held) = relays.get_mut(&id) else { return };
            let Some(wait) = held.wait.take() else { return };
            if hostcalls::set_effective_context(id).is_err() {
                relays.remove(&id);
                return;
            }
            let gw = held.gw.clone();
            let mut env = calls(&gw, id);
            let why = match wait.pending {
                Pending::Call(_) => "no answer in time (the host reported nothing)",
                _ => "Redis did not answer in time (the host reported nothing)",
            };
            let done = wait.pending.failed(&mut env, why.to_string());
            if !held.resumed(&mut env, wait.phase, done) {
                relays.remove(&id);
            }
        });
    }
}

/// A request body chunk; `None` when the context is not a proxied request.
pub fn on_request_body(id: u32, size: usize, end_of_stream: bool) -> Option<Action> {
    RELAYS.with(|r| {
        let mut relays = r.borrow_mut();
        let held = relays.get_mut(&id)?;
        if held.wait.is_some() {
            // The head waits for the session store: Envoy buffers the body meanwhile.
            held.request_end = end_of_stream;
            if size > held.gw.max_request_bytes {
                send(&crate::transport::too_large(&held.gw));
                relays.remove(&id);
            }
            return Some(Action::Pause);
        }
        if held.bridge.as_ref().is_some_and(|b| b.reading()) {
            if size > held.gw.max_request_bytes {
                send(&crate::transport::too_large(&held.gw));
                relays.remove(&id);
                return Some(Action::Pause);
            }
            if !end_of_stream {
                return Some(Action::Pause);
            }
            let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size).ok().flatten().unwrap_or_default();
            let gw = held.gw.clone();
            if let Some(action) = held.begin(&mut calls(&gw, id), &body) {
                return Some(action);
            }
            relays.remove(&id);
            return Some(Action::Pause);
        }
        if !held.reading_body {
            if held.relay.as_ref().is_some_and(Relay::keeps_body) {
                // Kept for the relay while the body streams on (a re-initialisation sends it again).
                if held.kept.len().saturating_add(size) > held.gw.max_request_bytes {
                    if let Some(relay) = held.relay.as_mut() {
                        relay.keep(Vec::new()); // too long to keep: never sent again
                    }
                } else {
                    if size > 0 {
                        // No hostcall for the empty chunk that may end the body.
                        let chunk = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size).ok().flatten();
                        held.kept.extend(chunk.unwrap_or_default());
                    }
                    if end_of_stream {
                        let kept = std::mem::take(&mut held.kept);
                        if let Some(relay) = held.relay.as_mut() {
                            relay.keep(kept);
                        }
                    }
                }
            }
            return Some(Action::Continue);
        }
        if size > held.gw.max_request_bytes {
            send(&crate::transport::too_large(&held.gw));
            relays.remove(&id);
            return Some(Action::Pause);
        }
        if !end_of_stream {
            return Some(Action::Pause);
        }
        held.reading_body = false;
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size).ok().flatten().unwrap_or_default();
        let gw = held.gw.clone();
        match held.checked_body(&mut calls(&gw, id), &body) {
            Err(refused) => {
                send(&refused);
                relays.remove(&id);
                Some(Action::Pause)
            }
            Ok(true) => Some(Action::Pause), // held for the calls' checks
            Ok(false) => Some(Action::Continue),
        }
    })
}

/// The backend's answer head.
pub fn on_response_headers(id: u32, end_of_stream: bool) -> Option<Action> {
    RELAYS.with(|r| {
        let mut relays = r.borrow_mut();
        let held = relays.get_mut(&id)?;
        let bytes = abi::header_map(MapType::HttpResponseHeaders);
        let (status, headers) = answer_view(&bytes);
        let status = status.unwrap_or(502);
        // What the edits that replace a held answer are computed against; a passed one is not copied.
        let owned = || headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let gw = held.gw.clone();
        if let Some(bridge) = held.bridge.as_mut() {
            // The head is held: the client's answer is a local reply in its place.
            held.answer = owned();
            return Some(match bridge.on_head(status, &held.answer) {
                None => Action::Pause,
                Some(r) if end_of_stream => {
                    send(&r);
                    relays.remove(&id);
                    Action::Continue
                }
                Some(r) => {
                    held.replacement = Some(r); // put in place at the body's end
                    Action::Pause
                }
            });
        }
        let relay = held.relay.as_mut()?;
        let mut env = calls(&gw, id);
        match relay.on_response_head(&gw, &mut env, status, &headers) {
            Answer::Redis(pending) => {
                held.response_end = end_of_stream;
                held.answer = owned();
                if !held.hold(&mut env, Pending::Session(pending), Phase::Response) {
                    relays.remove(&id);
                }
                Some(Action::Pause)
            }
            Answer::Reinit(reinit) => {
                held.response_end = end_of_stream;
                held.answer = owned();
                let step = held.reinit.insert(reinit).start();
                if !held.reinit_step(&mut env, step) {
                    relays.remove(&id);
                }
                Some(Action::Pause)
            }
            Answer::Pass(edits) => {
                edit_headers(MapType::HttpResponseHeaders, &edits);
                Some(Action::Continue)
            }
            Answer::Rewrite(edits) => {
                edit_headers(MapType::HttpResponseHeaders, &edits);
                held.rewriting = true;
                Some(Action::Continue)
            }
            Answer::Hold(edits) => {
                edit_headers(MapType::HttpResponseHeaders, &edits);
                held.rewriting = true;
                held.holding = !end_of_stream;
                Some(if end_of_stream { Action::Continue } else { Action::Pause })
            }
            Answer::Replace(resp) if end_of_stream => {
                send(&resp);
                relays.remove(&id);
                Some(Action::Continue)
            }
            Answer::Replace(resp) => {
                held.answer = owned();
                held.replacement = Some(resp);
                Some(Action::Pause)
            }
        }
    })
}

/// A chunk of the backend's answer.
pub fn on_response_body(id: u32, size: usize, end_of_stream: bool) -> Option<Action> {
    RELAYS.with(|r| {
        let mut relays = r.borrow_mut();
        let held = relays.get_mut(&id)?;
        if held.wait.is_some() || held.reinit.is_some() {
            // The head waits for the session store or a re-initialisation: Envoy buffers the body.
            held.response_end = end_of_stream;
            return Some(Action::Pause);
        }
        if let Some(resp) = &held.replacement {
            if !end_of_stream {
                return Some(Action::Pause);
            }
            replace_response(&held.answer, resp);
            return Some(Action::Continue);
        }
        if let Some(bridge) = held.bridge.as_mut() {
            if bridge.done() {
                return Some(Action::Pause); // answered: Envoy ends the stream
            }
            // Each chunk is taken out of Envoy's buffer, so Envoy never holds more than one.
            let chunk = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size).ok().flatten().unwrap_or_default();
            if size > 0 && !end_of_stream {
                let _ = abi::set_buffer(BufferType::HttpResponseBody, 0, size, &[]);
            }
            let gw = held.gw.clone();
            let mut env = calls(&gw, id);
            let steps = bridge.on_chunk(&gw, &mut env, &chunk, end_of_stream);
            return Some(held.bridge_steps(&mut env, steps, end_of_stream));
        }
        if !held.rewriting {
            return Some(Action::Continue);
        }
        if held.holding {
            let gw = held.gw.clone();
            let go_on = held.bind_stream(&mut calls(&gw, id), size, end_of_stream);
            if go_on.is_none() {
                relays.remove(&id);
            }
            return Some(go_on.unwrap_or(Action::Pause));
        }
        let relay = held.relay.as_mut()?;
        if relay.buffers() && !end_of_stream {
            return Some(Action::Pause); // Envoy keeps the chunks; the whole body is read at its end
        }
        let chunk = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size).ok().flatten().unwrap_or_default();
        let gw = held.gw.clone();
        let mut env = calls(&gw, id);
        let out = relay.on_chunk(&gw, &mut env, &chunk, end_of_stream);
        if let Some(pending) = relay.stream_gate() {
            // A result on an SSE client's stream waits for the guard service: Envoy holds this chunk (as
            // it came) and the next ones; what the client gets of what was read is kept meanwhile.
            (held.out, held.fed, held.response_end) = (out, size, end_of_stream);
            if held.stream_checks(&mut env, pending) {
                return Some(Action::Pause);
            }
            let out = std::mem::take(&mut held.out);
            held.fed = 0;
            let _ = abi::set_buffer(BufferType::HttpResponseBody, 0, size, &out);
            return Some(Action::Continue);
        }
        let gate = if end_of_stream { relay.answer_gate() } else { Gate::Go(None) };
        if let Gate::Go(None) = gate {
            if out != chunk {
                let _ = abi::set_buffer(BufferType::HttpResponseBody, 0, size, &out);
            }
        } else if held.answer_gated(&mut env, gate).is_none() {
            held.response_end = true;
            return Some(Action::Pause); // held for the guard service's output checks
        }
        Some(Action::Continue)
    })
}

/// Forgets context `id` (its stream has ended).
pub fn forget(id: u32) {
    let held = RELAYS.with(|r| r.borrow_mut().remove(&id));
    // A virtual server's own call through the bridge: its audit line, apart from clients' (no call stats:
    // `mcp_loopback_requests_total` counted the request).
    if let Some(h) = held {
        if let Some(record) = h.bridge.as_ref().and_then(|b| b.own_call()) {
            super::stats::audit(&h.gw.observability, &record, now_ms());
        }
    }
}
