//! A virtual server's requests ([`crate::composed`]): its `tools/list` and its proxied tools' `tools/call`
//! wait on proxied servers ([`Job::Virtual`], one per request sent), a call of its REST tool is served by
//! the tool's own server ([`Exchange::member`]); everything else is the virtual server's own (initialize,
//! ping, discovery). A 2025-03-26 batch mixes them: each message gets its reply in its slot, the proxied
//! servers are asked in parallel with the REST calls, and the batch is answered once all are in.
//!
//! The virtual server's `rateLimits`/`quotas` count its calls under the names it gives them, beside the
//! tools' own servers' limits (one check, [`crate::limits::ServerLimits::through`]); its `guardrails`
//! check their arguments before they go and filter their results, after the tool's own server's. Guard
//! services (`guardrails.external`) are asked the virtual server's first, then the tool's own server's
//! ([`crate::guard::external::Checks`]): for a REST tool by the transport's own call steps, for a proxied
//! tool by its [`composed::Job`].

use super::{Batch, Exchange, Gathered, Job, Step};
use crate::composed::{self, ListRequest, Next};
use crate::gateway::Gateway;
use crate::jsonrpc::{self, Message, Reply};
use crate::upstream::UpstreamResult;
use serde_json::{Map, Value};

impl Exchange {
    pub(super) fn composed(&mut self, gw: &Gateway, batch: Batch) -> Step {
        let me = self.server;
        let Some(v) = gw.servers[me].composed.as_deref() else { return self.process_on(gw, me, batch) };
        let (single, inputs) = match batch {
            Batch::One(m) => (true, vec![Ok(m)]),
            Batch::Many(v) => (false, v),
        };
        let mut acc = Gathered::with_capacity(inputs.len());
        for input in inputs {
            let step = match input {
                Ok(Message::Request { id, method, params }) if method == "tools/list" || method == "tools/call" => {
                    self.virtual_member(gw, v, single, id, method, params, &mut acc)
                }
                other => self.member(gw, me, None, other, None, &mut acc),
            };
            if let Some(step) = step {
                return step;
            }
        }
        self.start_calls(gw, single, acc)
    }

    /// A virtual server's `tools/list` or `tools/call`: its reply, or what it waits on, goes to `acc`.
    #[allow(clippy::too_many_arguments)]
    fn virtual_member(
        &mut self,
        gw: &Gateway,
        v: &composed::Virtual,
        single: bool,
        id: Value,
        method: String,
        params: Option<Value>,
        acc: &mut Gathered,
    ) -> Option<Step> {
        let me = self.server;
        let server = &gw.servers[me];
        let slot = acc.slots.len();
        let refuse = |acc: &mut Gathered, reply: Value| {
            acc.slots.push(Some(Reply::Tree(reply)));
            None
        };
        let mut params: Map<String, Value> = match params {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p,
            Some(_) => return refuse(acc, jsonrpc::error(id, jsonrpc::INVALID_PARAMS, "params must be an object")),
        };
        if method == "tools/list" {
            let request = ListRequest {
                id,
                server: me,
                cursor: params.get("cursor").cloned(),
                allowed: self.allowed_tools.clone(),
                caller: self.caller.clone(),
                revision: self.revision,
            };
            let (job, next) = v.list(gw, request, self.now_ms, self.loopback.as_deref());
            self.wait_on(slot, job, next, None, acc);
            return None;
        }
        let name = params.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let refused = match v.find(&name) {
            None => Some("Unknown tool"),
            Some(_) if !server.tool_allowed(&name, self.allowed_tools.as_deref()) => Some("Tool not allowed"),
            Some(_) => None,
        };
        if let Some(why) = refused {
            return refuse(acc, jsonrpc::error(id, jsonrpc::INVALID_PARAMS, format!("{why}: {name}")));
        }
        // The virtual server's own policy: the caller may call only what it may see.
        let access = crate::gateway::Access { caller: &self.caller, header: self.allowed_tools.as_deref() };
        if !server.may(&access, crate::admission::policy::Kind::Tool, &name) {
            return refuse(acc, crate::mcp::refused(&access, crate::admission::policy::Kind::Tool, &name).reply(id));
        }
        let Some(r) = v.find(&name) else { return refuse(acc, jsonrpc::error(id, jsonrpc::INTERNAL_ERROR, "no tool")) };
        // The virtual server's guardrails, then (below) the tool's own server's.
        if let Some(Err(e)) = server.guard.as_ref().map(|g| g.check_input(&name, params.get("arguments"))) {
            return refuse(acc, e.reply(id));
        }
        self.called.get_or_insert_with(|| (server.name.clone(), name.clone()));
        let owner = &gw.servers[r.owner];
        if owner.proxy.is_some() {
            if acc.started >= gw.max_calls_per_request {
                return refuse(acc, super::too_many_calls(gw, id));
            }
            // The proxied server's guardrails, which the relay applies to its own clients' calls.
            if let Some(Err(e)) = owner.guard.as_ref().map(|g| g.check_input(&r.tool, params.get("arguments"))) {
                return refuse(acc, e.reply(id));
            }
            acc.started += 1;
            // Who listens to the backend's notifications, as for a REST tool's (`listen`): a session's level
            // (every level until it sets one), a stateless request's `_meta` level, the progress token.
            let p = Value::Object(params);
            let level = if self.revision.is_stateless() {
                crate::notify::meta_log_level(Some(&p)).ok().flatten()
            } else {
                Some(self.session.as_ref().and_then(|s| s.log_level).unwrap_or(crate::notify::LogLevel::Debug))
            };
            let listener = crate::notify::Listener { level, progress_token: crate::notify::progress_token(Some(&p)) };
            let Value::Object(params) = p else { return None };
            let (signer, now) = (self.loopback.as_deref(), self.now_ms);
            let (job, next) = composed::Job::call(gw, me, v, r, id, params, listener, self.caller.label(), signer, now);
            self.wait_on(slot, Some(job), next, Some(name), acc);
            return None;
        }
        // A REST tool runs on its own server, under its own name; the virtual server checked who may call it.
        params.insert("name".into(), Value::String(r.tool.clone()));
        let input = Ok(Message::Request { id, method, params: Some(Value::Object(params)) });
        let origin = self.origin(gw, single, Some(&input));
        let allowed = self.allowed_tools.take();
        let step = self.member(gw, r.owner, Some(name), input, origin.as_ref(), acc);
        self.allowed_tools = allowed;
        step
    }

    /// A message that waits on proxied servers: its job kept, its requests gathered; or its reply, when
    /// none is needed (a `tools/list` whose lists are all fresh). `tool`: a call's name, for limits.
    fn wait_on(
        &mut self,
        slot: usize,
        job: Option<composed::Job>,
        next: Next,
        tool: Option<String>,
        acc: &mut Gathered,
    ) {
        match (job, next) {
            (Some(job), Next::Send(sends)) => {
                let n = self.composed.len();
                self.composed.push(Some(job));
                acc.slots.push(None);
                for (index, r) in sends {
                    acc.calls.push(Some(Job::Virtual { slot, job: n, index, tool: tool.clone() }));
                    acc.requests.push(r);
                }
            }
            (_, Next::Reply(v)) => acc.slots.push(Some(Reply::Tree(v))),
            (_, _) => acc.slots.push(Some(Reply::Tree(jsonrpc::error(
                Value::Null,
                jsonrpc::INTERNAL_ERROR,
                "a virtual server's request has nothing to wait for",
            )))),
        }
    }

    /// The answer to request `index` of composed job `n`, whose reply goes to `slot`.
    pub(super) fn composed_answer(
        &mut self,
        gw: &Gateway,
        slot: usize,
        n: usize,
        index: usize,
        outcome: UpstreamResult,
    ) -> Option<Step> {
        let job = self.composed.get_mut(n)?.as_mut()?;
        match job.on_answer(gw, index, outcome, self.now_ms, &mut self.warnings) {
            Next::Wait => None,
            Next::Send(sends) => self.next_requests(
                sends.into_iter().map(|(index, r)| (Job::Virtual { slot, job: n, index, tool: None }, r)).collect(),
            ),
            Next::Reply(v) => {
                let mut job = self.composed.get_mut(n)?.take()?;
                let notes = if self.sse { job.take_notes() } else { Vec::new() };
                self.note(slot, notes);
                // A call's reply went through the guardrails and guard services in the job.
                self.settle(slot, Reply::Tree(v))
            }
        }
    }

    /// A virtual server's REST tool's reply through the virtual server's guardrails (`via`: the virtual
    /// server's name of the tool); other replies unchanged.
    pub(super) fn through_virtual(&self, gw: &Gateway, via: Option<&str>, reply: Reply) -> Reply {
        match via {
            Some(name) => guarded(gw.servers[self.server].guard.as_deref(), name, reply),
            None => reply,
        }
    }
}

/// A tool call's reply with its result filtered by `guard` (masking, size): its error when the result is
/// refused.
fn guarded(guard: Option<&crate::guard::Guard>, tool: &str, reply: Reply) -> Reply {
    let Some(g) = guard.filter(|g| g.filters_results(tool)) else { return reply };
    match reply {
        Reply::Result { id, mut result } => match g.filter_result(tool, &mut result) {
            Ok(()) => Reply::Result { id, result },
            Err(e) => Reply::Tree(e.reply(id)),
        },
        Reply::Tree(v) => Reply::Tree(composed::guarded(Some(g), tool, v)),
        other => other,
    }
}
