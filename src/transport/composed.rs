//! A virtual server's requests ([`crate::composed`]): `tools/list` and `tools/call` of its proxied tools
//! wait on proxied servers (the exchange's [`Phase::Composed`]); a call of its REST tool is served by the
//! tool's own server; everything else is the virtual server's own (initialize, ping, discovery).

use super::{Batch, Exchange, Phase, Step};
use crate::composed::{Job, ListRequest, Next};
use crate::gateway::Gateway;
use crate::jsonrpc::{self, Message, Reply};
use crate::upstream::UpstreamResult;
use serde_json::{Map, Value};

/// Methods whose answer depends on the referenced servers.
fn is_tools(m: &Result<Message, (Value, String)>) -> bool {
    matches!(m, Ok(Message::Request { method, .. }) if method == "tools/list" || method == "tools/call")
}

impl Exchange {
    pub(super) fn composed(&mut self, gw: &Gateway, batch: Batch) -> Step {
        let me = self.server;
        let server = &gw.servers[me];
        let Some(v) = server.composed.as_deref() else { return self.process_on(gw, me, batch) };
        let (id, method, params) = match batch {
            Batch::One(Message::Request { id, method, params }) if method == "tools/list" || method == "tools/call" => {
                (id, method, params)
            }
            Batch::Many(items) if items.iter().any(is_tools) => {
                // Each of those members is answered with its own error (-32600, its id); the others are served.
                let why = "a virtual server's tools/list and tools/call must each be sent as a request of its own, \
                           not in a batch";
                let items = items
                    .into_iter()
                    .map(|m| match m {
                        Ok(Message::Request { id, method, .. }) if method == "tools/list" || method == "tools/call" => {
                            Err((id, why.to_string()))
                        }
                        other => other,
                    })
                    .collect();
                return self.process_on(gw, me, Batch::Many(items));
            }
            other => return self.process_on(gw, me, other),
        };
        let params: Map<String, Value> = match params {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p,
            Some(_) => {
                return self.reply(
                    true,
                    vec![Some(Reply::Tree(jsonrpc::error(id, jsonrpc::INVALID_PARAMS, "params must be an object")))],
                )
            }
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
            let (job, next) = v.list(gw, request, self.now_ms);
            return self.composed_next(job, next);
        }
        let name = params.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let refused = match v.find(&name) {
            None => Some("Unknown tool"),
            Some(_) if !server.tool_allowed(&name, self.allowed_tools.as_deref()) => Some("Tool not allowed"),
            Some(_) => None,
        };
        if let Some(why) = refused {
            let reply = jsonrpc::error(id, jsonrpc::INVALID_PARAMS, format!("{why}: {name}"));
            return self.reply(true, vec![Some(Reply::Tree(reply))]);
        }
        // The virtual server's own policy: the caller may call only what it may see.
        let access = crate::gateway::Access { caller: &self.caller, header: self.allowed_tools.as_deref() };
        if !server.may(&access, crate::admission::policy::Kind::Tool, &name) {
            let reply = crate::mcp::refused(&access, crate::admission::policy::Kind::Tool, &name).reply(id);
            return self.reply(true, vec![Some(Reply::Tree(reply))]);
        }
        let Some(r) = v.find(&name) else { return self.respond(super::HttpResponse::empty(500)) };
        self.called.get_or_insert_with(|| (server.name.clone(), name.clone()));
        if gw.servers[r.owner].proxy.is_some() {
            // Who listens to the backend's notifications, as for a REST tool's (`listen`): a session's level
            // (every level until it sets one), a stateless request's `_meta` level, the progress token.
            let p = Value::Object(params);
            let level = if self.revision.is_stateless() {
                crate::notify::meta_log_level(Some(&p)).ok().flatten()
            } else {
                Some(self.session.as_ref().and_then(|s| s.log_level).unwrap_or(crate::notify::LogLevel::Debug))
            };
            let listener = crate::notify::Listener { level, progress_token: crate::notify::progress_token(Some(&p)) };
            let Value::Object(params) = p else { return self.respond(super::HttpResponse::empty(500)) };
            let (job, next) = Job::call(gw, me, v, r, id, params, listener);
            return self.composed_next(Some(job), next);
        }
        // A REST tool runs on its own server, under its own name; the virtual server checked who may call it.
        let mut params = params;
        params.insert("name".into(), Value::String(r.tool.clone()));
        let owner = r.owner;
        let allowed = self.allowed_tools.take();
        let step = self.process_on(
            gw,
            owner,
            Batch::One(Message::Request { id, method, params: Some(Value::Object(params)) }),
        );
        self.allowed_tools = allowed;
        step
    }

    /// The answer to request `index` of a virtual server's job.
    pub(super) fn composed_answer(&mut self, gw: &Gateway, index: usize, outcome: UpstreamResult) -> Option<Step> {
        let Phase::Composed(job) = &mut self.phase else { return None };
        let next = job.on_answer(gw, index, outcome, self.now_ms, &mut self.warnings);
        match next {
            Next::Wait => None,
            Next::Send(sends) => Some(Step::More(sends)),
            Next::Reply(v) => {
                let notes = if self.sse { job.take_notes() } else { Vec::new() };
                self.note(0, notes);
                self.phase = Phase::Done;
                Some(self.reply(true, vec![Some(Reply::Tree(v))]))
            }
        }
    }

    fn composed_next(&mut self, job: Option<Job>, next: Next) -> Step {
        match (job, next) {
            (Some(job), Next::Send(sends)) => {
                self.phase = Phase::Composed(job);
                Step::More(sends)
            }
            (_, Next::Reply(v)) => self.reply(true, vec![Some(Reply::Tree(v))]),
            (_, _) => self.respond(super::HttpResponse::error(
                500,
                Value::Null,
                jsonrpc::INTERNAL_ERROR,
                "a virtual server's request has nothing to wait for",
            )),
        }
    }
}
