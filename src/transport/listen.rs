//! What a request means for the notifications of its answer: who listens to a tool's notifications (the
//! session's or the request's log level, its progress token), and a `logging/setLevel` the session keeps.
//! The exchange asks before handling a message ([`Exchange::listening`]) and follows up after
//! ([`Exchange::heard`]); [`crate::notify`] renders, the exchange frames the answer.

use super::{Exchange, HttpResponse, Phase, Server, Step};
use crate::gateway::Gateway;
use crate::jsonrpc::{self, Message, Reply};
use crate::notify::{self, Listener, LogLevel};
use crate::session::SessionOp;
use serde_json::Value;

/// What a request means for notifications (see [`Exchange::listening`]).
#[derive(Debug)]
pub(super) enum Listening {
    Nothing,
    /// `logging/setLevel` with a valid level.
    SetLevel(LogLevel),
    /// A call to a tool with notifications: its name, arguments and who listens.
    Call(String, Value, Listener),
}

impl Exchange {
    /// Keeps a request's notifications in the order of the requests (upstream answers come in any order).
    pub(super) fn note(&mut self, slot: usize, notes: Vec<Value>) {
        if !notes.is_empty() {
            let at = self.notes.iter().position(|(s, _)| *s > slot).unwrap_or(self.notes.len());
            self.notes.insert(at, (slot, notes));
        }
    }

    /// What a request means for notifications, before it is handled: the listener of a call to a tool with
    /// notifications, the level a `logging/setLevel` asks for, or a refusal (an unknown `_meta` log level;
    /// a level the session cannot keep).
    pub(super) fn listening(&self, gw: &Gateway, server: &Server, m: &Message) -> Result<Listening, Value> {
        let Message::Request { id, method, params } = m else { return Ok(Listening::Nothing) };
        let meta_level = if self.revision.is_stateless() {
            notify::meta_log_level(params.as_ref())
                .map_err(|e| jsonrpc::error(id.clone(), jsonrpc::INVALID_PARAMS, e))?
        } else {
            None
        };
        match method.as_str() {
            "logging/setLevel" if !self.revision.is_stateless() && server.capabilities.get("logging").is_some() => {
                if self.session.is_none() || !gw.sessions.updatable() {
                    let why = if self.session.is_none() {
                        "the request has no session to keep it in"
                    } else {
                        "signed sessions (sessions.store: signed) keep no state; every level is sent"
                    };
                    return Err(jsonrpc::error(
                        id.clone(),
                        jsonrpc::INTERNAL_ERROR,
                        format!("logging/setLevel cannot be kept: {why}"),
                    ));
                }
                Ok(LogLevel::from_json(params.as_ref().and_then(|p| p.get("level")))
                    .map_or(Listening::Nothing, Listening::SetLevel))
            }
            "tools/call" => {
                let p = params.as_ref();
                let Some(name) = p.and_then(|p| p.get("name")).and_then(Value::as_str) else {
                    return Ok(Listening::Nothing);
                };
                if server.notifications(name).is_none() {
                    return Ok(Listening::Nothing);
                }
                // A session that never set a level hears every level (as the reference SDKs do); a
                // stateless request only the level it names, if any.
                let level = if self.revision.is_stateless() {
                    meta_level
                } else {
                    Some(self.session.as_ref().and_then(|s| s.log_level).unwrap_or(LogLevel::Debug))
                };
                let listener = Listener { level, progress_token: notify::progress_token(p) };
                if !self.sse || listener.is_deaf() {
                    return Ok(Listening::Nothing);
                }
                let args =
                    p.and_then(|p| p.get("arguments")).cloned().unwrap_or_else(|| Value::Object(Default::default()));
                Ok(Listening::Call(name.to_string(), args, listener))
            }
            _ => Ok(Listening::Nothing),
        }
    }

    /// Follows up a handled request: a tool answered without an upstream sends its notifications now, and an
    /// accepted `logging/setLevel` changes the session.
    pub(super) fn heard(&mut self, gw: &Gateway, server: &Server, slot: usize, reply: &Reply, listening: Listening) {
        let Some(result) = reply.result() else { return };
        match listening {
            Listening::SetLevel(level) => {
                if let Some(s) = &mut self.session {
                    s.log_level = Some(level);
                    self.save_session = true;
                }
            }
            Listening::Call(tool, args, listener) => {
                let templated = server.tool(&tool).is_some_and(|t| t.dispatch().is_none());
                if let (true, Some(n)) = (templated, server.notifications(&tool)) {
                    let failed = result.get("isError") == Some(&Value::Bool(true));
                    let notes = n.render(&gw.templates, &server.config, &args, None, failed, &listener);
                    self.note(slot, notes);
                }
            }
            Listening::Nothing => {}
        }
    }

    /// The answer: the notifications ahead of the response in one SSE answer, when there are some and the
    /// client takes one; otherwise the JSON it always was.
    pub(super) fn framed(&mut self, status: u16, body: Vec<u8>) -> HttpResponse {
        // A loop, not a flat_map collect (whose adapters were instantiated for this closure alone).
        let mut notes: Vec<Value> = Vec::new();
        for (_, mut n) in std::mem::take(&mut self.notes) {
            notes.append(&mut n);
        }
        if status != 200 || !self.sse || notes.is_empty() {
            return HttpResponse::json_bytes(status, body);
        }
        HttpResponse {
            status,
            headers: vec![
                ("content-type".into(), "text/event-stream".into()),
                ("cache-control".into(), "no-cache".into()),
            ],
            body: notify::sse_body(&notes, &body),
        }
    }

    /// Sends the response, once a session a `logging/setLevel` changed is stored.
    pub(super) fn after_saving(&mut self, response: HttpResponse) -> Step {
        if std::mem::take(&mut self.save_session) {
            if let (Some(id), Some(session)) = (self.session_id.clone(), self.session.clone()) {
                self.phase = Phase::Saving(response);
                return Step::Session(SessionOp::Update { id, session });
            }
        }
        self.respond(response)
    }
}
