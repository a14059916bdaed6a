//! The checks of a proxied request's `tools/call`s that wait ([`super::wait`]): the rate limits and quotas
//! counted in Redis before the request goes on, and the guard service (`guardrails.external`), asked about
//! each call's arguments before it goes on and about its result before the client sees it.
//!
//! ```text
//! request body ──[`Relay::on_body`]──> the relay's own checks; process counters taken
//!              ──[`Relay::gate`]────> Redis counters (one EVAL for the request) ─> guard service, input,
//!                                     one call after another ─> on to the backend, or refused
//! answer body  ──[`Relay::on_chunk`]─> read whole, masked ─[`Relay::answer_gate`]─> guard service, output,
//!                                     per result ─> to the client, a refused result replaced by its error
//! ```
//!
//! The order is the REST tools' ([`crate::transport`]): limits, then the input check, then the call.
//!
//! SSE backends (`transport: sse`): a Streamable HTTP client's request ([`super::bridge`]) waits here before
//! the backend's stream is opened, and its answer, built by the gateway, before it is sent. An SSE client's
//! POST waits here too (a refusal goes on as a `ping` for its stream); the result comes on the client's
//! stream, under an id that names the tool ([`super::CALLED`]), and is held there, the events after it
//! queued in order ([`Relay::stream_gate`]). The stream does not see the call's arguments (they came by
//! another exchange, maybe to another replica): that check is sent `"arguments": null`.

use super::wait::{Done, Pending};
use super::{sse, Relay, Revision, META_VERSION};
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::guard::external::{External, Phase, Subject};
use crate::session::Env;
use crate::transport::HttpResponse;
use serde_json::Value;

/// What a held request or answer does next.
#[derive(Debug)]
pub enum Gate {
    /// Goes on; with a body, this one in place of what was held.
    Go(Option<Vec<u8>>),
    /// Answered locally instead.
    Refuse(HttpResponse),
    /// Held until this step answers (then [`Relay::on_gate`] or [`Relay::on_answer_gate`]).
    Wait(Pending),
}

/// One `tools/call` of the request that passed the relay's own checks.
#[derive(Debug)]
pub(super) struct Called {
    id: Value,
    /// As the client calls it.
    tool: String,
    arguments: Value,
    /// At the stateless revision (2026-07-28), whose limit refusals are HTTP 429.
    stateless: bool,
}

/// What the request's calls still wait for.
#[derive(Debug, Default)]
pub(super) struct Checks {
    calls: Vec<Called>,
    /// The Redis counters' command, sent first.
    limit: Option<Box<crate::limits::redis::Pending>>,
    /// The next call whose input the guard service is asked about, and the one asked now.
    next_input: usize,
    asked: Option<usize>,
    /// Some call's result goes to the guard service: the answer is read whole and held for it.
    output: bool,
    /// The answer read whole for the output checks, the next call checked, the one asked now.
    answer: Option<Box<Held>>,
    next_output: usize,
    asked_output: Option<usize>,
}

impl Checks {
    /// Holds a parsed answer for the output checks ([`Relay::answer_gate`]); gives it back when there are
    /// none.
    pub(super) fn hold(&mut self, held: Held) -> Option<Held> {
        if !self.output {
            return Some(held);
        }
        self.answer = Some(Box::new(held));
        None
    }
}

/// An answer held for the guard service.
#[derive(Debug)]
pub(super) enum Held {
    Json(Value),
    /// Each event with its message (when it has one), and what followed the last whole event.
    Sse(Vec<(Vec<u8>, Option<Value>)>, Vec<u8>),
}

impl Held {
    fn messages(&mut self) -> Vec<&mut Value> {
        match self {
            Held::Json(Value::Array(items)) => items.iter_mut().collect(),
            Held::Json(one) => vec![one],
            Held::Sse(events, _) => events.iter_mut().filter_map(|(_, v)| v.as_mut()).collect(),
        }
    }

    pub(super) fn into_body(self) -> Vec<u8> {
        match self {
            Held::Json(v) => serde_json::to_vec(&v).unwrap_or_default(),
            Held::Sse(events, rest) => {
                let mut out = Vec::new();
                for (event, v) in events {
                    match v {
                        Some(v) => out.extend(sse::with_data(&event, &v.to_string())),
                        None => out.extend(event),
                    }
                }
                out.extend(rest);
                out
            }
        }
    }
}

/// A result on an SSE backend's stream held for the guard service, and the events that came after it.
#[derive(Debug)]
pub(super) struct StreamHold {
    tool: String,
    /// The event as it came, and its message (masked, the client's id restored).
    event: Vec<u8>,
    message: Value,
    pub(super) queue: Vec<Vec<u8>>,
    /// The check, until the host takes it.
    pending: Option<Pending>,
}

impl Relay {
    fn external(&self, tool: &str) -> Option<&External> {
        self.guard.as_ref()?.external(tool)
    }

    /// Whether the answer is held for the guard service's output check.
    pub(super) fn checks_output(&self) -> bool {
        self.checks.output
    }

    /// Notes a `tools/call` that passed the relay's own checks (`m`: its message), when something counts
    /// or checks it here.
    pub(super) fn called(&mut self, id: &Value, tool: &str, m: &Value) {
        if !self.limited_server && self.external(tool).is_none() {
            return;
        }
        let (id, tool) = (id.clone(), tool.to_string());
        // `get`, not `pointer`: that one splits its path into new strings, a few thousand instructions a call.
        let params = m.get("params");
        let revision = params.and_then(|p| p.get("_meta")?.get(META_VERSION)?.as_str());
        let stateless = revision.and_then(Revision::parse).is_some_and(Revision::is_stateless);
        let (checked, output) = self.external(&tool).map_or((false, false), |e| (true, e.output));
        self.checks.output |= output;
        // Only the guard service reads them: a copy otherwise would cost every call.
        let arguments = match checked {
            true => params.and_then(|p| p.get("arguments")).cloned().unwrap_or(Value::Null),
            false => Value::Null,
        };
        self.checks.calls.push(Called { id, tool, arguments, stateless });
    }

    /// Takes a token for each call from the server's rate limits and quotas: this process's counters now
    /// (the refusal, if one has no room), Redis's by the command [`Relay::gate`] hands the host.
    pub(super) fn count(&mut self, gw: &Gateway, env: &mut dyn Env) -> Result<(), HttpResponse> {
        let Some(server) = gw.server(&self.server) else { return Ok(()) };
        let mut calls: Vec<(usize, String)> = Vec::new();
        for (i, c) in self.checks.calls.iter().enumerate() {
            if server.limits.applies(&c.tool) {
                calls.push((i, c.tool.clone()));
            }
        }
        if calls.is_empty() {
            return Ok(());
        }
        let op = crate::limits::LimitOp { server: 0, calls };
        match crate::limits::start(&server.limits, &server.name, &self.caller, &op, env, gw.redis()) {
            crate::limits::Started::Done(outcome) => self.limit_refusal(outcome).map_or(Ok(()), Err),
            crate::limits::Started::Redis(pending) => {
                self.checks.limit = Some(Box::new(pending));
                Ok(())
            }
        }
    }

    /// The refusal of the first call a limit refused, as for REST tools: HTTP 429 with `Retry-After` at the
    /// stateless revision, else the JSON-RPC error in a 200.
    fn limit_refusal(&self, outcome: crate::limits::LimitOutcome) -> Option<HttpResponse> {
        let (index, refusal) = outcome.refused.into_iter().next()?;
        let call = self.checks.calls.get(index)?;
        if call.stateless {
            let mut r = HttpResponse::json(refusal.status(), &refusal.reply(call.id.clone()));
            r.headers.extend(refusal.headers());
            return Some(r);
        }
        Some(HttpResponse::json_reply(refusal.reply(call.id.clone())))
    }

    /// What the request (its body read and checked by [`Relay::on_body`]) waits for before it goes on.
    pub fn gate(&mut self) -> Gate {
        if let Some(pending) = self.checks.limit.take() {
            return Gate::Wait(Pending::Limit(*pending));
        }
        while let Some(call) = self.checks.calls.get(self.checks.next_input) {
            let index = self.checks.next_input;
            self.checks.next_input += 1;
            if let Some(e) = self.external(&call.tool).filter(|e| e.input) {
                let who = Subject { server: &self.server, tool: &call.tool, consumer: self.caller.label() };
                let request = e.request(Phase::Input, who, &call.arguments, None);
                self.checks.asked = Some(index);
                return Gate::Wait(Pending::Call(request));
            }
        }
        Gate::Go(None)
    }

    /// What the step a [`Relay::gate`] waited for came to: the next step, or the request's fate.
    pub fn on_gate(&mut self, done: Done) -> Gate {
        let refused = match done {
            Done::Limit(outcome) => self.limit_refusal(outcome),
            Done::Call(result) => self.checks.asked.take().and_then(|index| {
                let call = self.checks.calls.get(index)?;
                let e = self.external(&call.tool)?;
                let refusal = e.verdict(Phase::Input, &call.tool, &result).err()?;
                Some(HttpResponse::json_reply(refusal.reply(call.id.clone())))
            }),
            Done::Session(_) => None,
        };
        match refused {
            // A message to an SSE backend is answered on the client's stream: it goes on as a ping.
            Some(r) if self.via_stream => Gate::Go(Some(super::carried(&r))),
            Some(r) => Gate::Refuse(r),
            None => self.gate(),
        }
    }

    /// What the answer (read whole by [`Relay::on_chunk`]) waits for before the client gets it:
    /// `Go(None)` when it was not held.
    pub fn answer_gate(&mut self) -> Gate {
        let Some(held) = self.checks.answer.as_mut() else { return Gate::Go(None) };
        while let Some(call) = self.checks.calls.get(self.checks.next_output) {
            let index = self.checks.next_output;
            self.checks.next_output += 1;
            let Some(e) = self.guard.as_ref().and_then(|g| g.external(&call.tool)).filter(|e| e.output) else {
                continue;
            };
            let messages = held.messages();
            let result = messages.iter().find(|m| m.get("id") == Some(&call.id)).and_then(|m| m.get("result"));
            let Some(result) = result else { continue }; // an error, or not in this answer
            let who = Subject { server: &self.server, tool: &call.tool, consumer: self.caller.label() };
            let request = e.request(Phase::Output, who, &call.arguments, Some(result));
            self.checks.asked_output = Some(index);
            return Gate::Wait(Pending::Call(request));
        }
        Gate::Go(self.checks.answer.take().map(|held| held.into_body()))
    }

    /// What the guard service said about a result [`Relay::answer_gate`] asked about: a refused result is
    /// replaced by the guardrail's error.
    pub fn on_answer_gate(&mut self, done: Done) -> Gate {
        let index = self.checks.asked_output.take();
        if let (Done::Call(result), Some(call)) = (done, index.and_then(|i| self.checks.calls.get(i))) {
            let refusal = self.external(&call.tool).and_then(|e| e.verdict(Phase::Output, &call.tool, &result).err());
            if let (Some(refusal), Some(held)) = (refusal, self.checks.answer.as_mut()) {
                replace(held, &call.id, refusal);
            }
        }
        self.answer_gate()
    }
}

impl Relay {
    /// Holds a result of `tool` on an SSE backend's stream for the guard service's output check: what the
    /// client gets of it now (nothing while it is held; the event as rewritten when no check applies).
    pub(super) fn hold_result(&mut self, tool: String, event: Vec<u8>, message: Value) -> Vec<u8> {
        let request = match (self.external(&tool), message.get("result")) {
            (Some(e), Some(result)) => {
                let who = Subject { server: &self.server, tool: &tool, consumer: self.caller.label() };
                e.request(Phase::Output, who, &Value::Null, Some(result))
            }
            _ => return sse::with_data(&event, &message.to_string()),
        };
        let pending = Some(Pending::Call(request));
        self.stream_hold = Some(Box::new(StreamHold { tool, event, message, queue: Vec::new(), pending }));
        Vec::new()
    }

    /// The guard service's check a stream's held result waits for, handed out once: the host sends it and
    /// holds the stream (Envoy buffers what comes meanwhile) until [`Relay::on_stream_gate`].
    pub fn stream_gate(&mut self) -> Option<Pending> {
        self.stream_hold.as_mut()?.pending.take()
    }

    /// What the guard service said about the held result: it (or the guardrail's error in its place), then
    /// the events queued behind it, as the client gets them. A later result may be held in turn
    /// ([`Relay::stream_gate`]), and what follows it queued.
    pub fn on_stream_gate(&mut self, gw: &Gateway, env: &mut dyn Env, done: Done) -> Vec<u8> {
        let Some(hold) = self.stream_hold.take() else { return Vec::new() };
        let StreamHold { tool, event, mut message, queue, .. } = *hold;
        let result = match done {
            Done::Call(result) => result,
            _ => crate::upstream::UpstreamResult::Failed("an unexpected answer".into()),
        };
        if let Some(refusal) = self.external(&tool).and_then(|e| e.verdict(Phase::Output, &tool, &result).err()) {
            let id = message.get("id").cloned().unwrap_or(Value::Null);
            message = refusal.reply(id);
        }
        let mut out = sse::with_data(&event, &message.to_string());
        out.extend(self.stream_events(gw, env, queue));
        out
    }
}

/// Puts the error in place of the message answering `id`.
fn replace(held: &mut Held, id: &Value, refusal: GatewayError) {
    for m in held.messages() {
        if m.get("id") == Some(id) {
            *m = refusal.reply(id.clone());
        }
    }
}

#[cfg(test)]
#[path = "gate_tests.rs"]
mod tests;
