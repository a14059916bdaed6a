//! Transparent re-initialisation of a Streamable HTTP backend that forgot a session (it answers 404 to a
//! request carrying its session id: restarted, or its sessions expired), for the buffered path: the
//! backend's 404 is held, and the gateway, with the gateway's own calls to the backend's cluster,
//!
//! ```text
//! POST initialize (the client's own params, kept with the session)  ──> a new backend session id
//! POST notifications/initialized                                     ──> 202
//! the store: our session now stands for the new backend session      ──> (local CAS, or one Redis EVAL)
//!     unless another request's re-initialisation stored its own first: then for that one
//! POST the client's request again, once, on the session ours stands for ──> its answer replaces the 404
//! ```
//!
//! The retried answer is read whole before it goes to the client (a call's progress and logs arrive with
//! its result, not as they happen). Whatever fails on the way ends our session as before: the client gets
//! 404 (-32001) and initializes again itself.

use super::SESSION;
use crate::json::object;
use crate::session::{Session, SessionOp, SessionOutcome};
use crate::transport::{HttpResponse, SESSION_NOT_FOUND};
use serde_json::Value;

/// The longest `initialize` params kept with a session for re-initialisation (bytes of JSON); a client
/// declaring more is not re-initialised transparently.
pub const MAX_INIT: usize = 4096;

/// One re-initialisation in progress.
#[derive(Debug, PartialEq)]
pub struct Reinit {
    /// Our session id, and the session as the store had it.
    ours: String,
    session: Session,
    /// The request head the backend got (pseudo-headers first), the source of every call's head.
    head: Vec<(String, String)>,
    /// The client's request body as the backend got it, sent again once.
    body: Vec<u8>,
    state: State,
}

#[derive(Debug, PartialEq)]
enum State {
    Initializing,
    /// The backend's new session id.
    Notifying(String),
    Storing,
    Retrying,
    Forgetting,
}

/// What the host does next.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Send this request (head with pseudo-headers, body) to the backend's cluster, then
    /// [`Reinit::on_answer`] with its answer (status 0: no answer).
    Call(Vec<(String, String)>, Vec<u8>),
    /// Perform this session operation, then [`Reinit::on_session`].
    Session(SessionOp),
    /// The backend's answer to the retried request (status, headers, body): the client's answer once the
    /// relay has filtered it ([`super::Relay::retried`]).
    Retried(u16, Vec<(String, String)>, Vec<u8>),
    /// Re-initialising failed; our session is ended and the client gets this.
    Gone(HttpResponse),
}

impl Reinit {
    /// A re-initialisation of `session` (ours: `ours`), whose kept `initialize` params are `session.init`.
    pub fn new(ours: String, session: Session, head: Vec<(String, String)>, body: Vec<u8>) -> Reinit {
        Reinit { ours, session, head, body, state: State::Initializing }
    }

    /// The first step: `initialize` with the client's params.
    pub fn start(&mut self) -> Step {
        // `from_slice`, as everywhere in the module: `from_str` would instantiate serde_json's parser again.
        let params: Value = self
            .session
            .init
            .as_deref()
            .and_then(|p| serde_json::from_slice(p.as_bytes()).ok())
            .unwrap_or_else(|| object(vec![]));
        let body = object(vec![
            ("jsonrpc", Value::from("2.0")),
            ("id", Value::from("mcp-gateway-reinit")),
            ("method", Value::from("initialize")),
            ("params", params),
        ]);
        self.state = State::Initializing;
        self.call(None, "initialize", body.to_string().into_bytes())
    }

    /// The backend's answer to the last [`Step::Call`].
    pub fn on_answer(&mut self, status: u16, headers: &[(String, String)], body: Vec<u8>) -> Step {
        match std::mem::replace(&mut self.state, State::Forgetting) {
            State::Initializing => {
                let theirs = headers.iter().find(|(k, _)| k == SESSION).map(|(_, v)| v.clone());
                match theirs.filter(|id| status == 200 && crate::upstream::is_safe_header_value(id)) {
                    Some(theirs) => {
                        let note = object(vec![
                            ("jsonrpc", Value::from("2.0")),
                            ("method", Value::from("notifications/initialized")),
                        ]);
                        let call = self.call(Some(&theirs), "notifications/initialized", note.to_string().into_bytes());
                        self.state = State::Notifying(theirs);
                        call
                    }
                    None => self.forget(),
                }
            }
            State::Notifying(theirs) if (200..300).contains(&status) => {
                let was = self.session.backend.replace(theirs);
                self.state = State::Storing;
                Step::Session(SessionOp::Rebind { id: self.ours.clone(), was, session: self.session.clone() })
            }
            State::Retrying => Step::Retried(status, headers.to_vec(), body),
            _ => self.forget(),
        }
    }

    /// The store's answer to the last [`Step::Session`].
    pub fn on_session(&mut self, outcome: SessionOutcome) -> Step {
        match (std::mem::replace(&mut self.state, State::Forgetting), outcome) {
            (State::Storing, SessionOutcome::Found(now)) => {
                // Another request that found the same backend session forgotten may have stored its new
                // one first: the client's requests already go there, so this one does too (ours is left to
                // expire on the backend).
                self.session = now;
                self.state = State::Retrying;
                let (theirs, body) = (self.session.backend.clone(), std::mem::take(&mut self.body));
                let method = self.header("mcp-method").map(str::to_string);
                self.call(theirs.as_deref(), method.as_deref().unwrap_or(""), body)
            }
            (State::Forgetting, _) => Step::Gone(HttpResponse::error(
                404,
                Value::Null,
                SESSION_NOT_FOUND,
                "Session not found: the proxied server ended it; initialize a new session",
            )),
            _ => self.forget(),
        }
    }

    fn forget(&mut self) -> Step {
        self.state = State::Forgetting;
        Step::Session(SessionOp::Delete { id: self.ours.clone(), server: self.session.server.clone() })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A POST with the head the backend got, for session `theirs`, its `Mcp-Method` (where the client
    /// sent one) saying `method`.
    fn call(&self, theirs: Option<&str>, method: &str, body: Vec<u8>) -> Step {
        let drop = |k: &str| {
            k == SESSION || k == "content-length" || k == "x-envoy-upstream-rq-timeout-ms" || k == "last-event-id"
        };
        let mut head: Vec<(String, String)> = Vec::with_capacity(self.head.len());
        for (k, v) in &self.head {
            if !drop(k) {
                head.push((k.clone(), v.clone()));
            }
        }
        for (k, v) in head.iter_mut() {
            match k.as_str() {
                ":method" => *v = "POST".into(),
                "mcp-method" => *v = method.into(),
                _ => {}
            }
        }
        if method != self.header("mcp-method").unwrap_or("") {
            head.retain(|(k, _)| k != "mcp-name");
        }
        if let Some(id) = theirs {
            head.push((SESSION.into(), id.into()));
        }
        head.push(("content-length".into(), body.len().to_string()));
        Step::Call(head, body)
    }
}

/// The `initialize` params of a request body, kept with a new session when they are small enough.
pub fn init_params(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    if v.get("method").and_then(Value::as_str) != Some("initialize") {
        return None;
    }
    let params = v.get("params")?.to_string();
    (params.len() <= MAX_INIT).then_some(params)
}

/// The retried answer as the client's: a backend failure or a second 404 as JSON-RPC errors.
pub fn failure(status: u16, server: &str) -> Option<HttpResponse> {
    match status {
        0 => Some(super::backend_failure(502, Value::Null, server)),
        404 => Some(HttpResponse::error(
            404,
            Value::Null,
            SESSION_NOT_FOUND,
            "Session not found: the proxied server ended it again after re-initialisation; initialize a new session",
        )),
        s if s >= 500 => Some(super::backend_failure(s, Value::Null, server)),
        _ => None,
    }
}
