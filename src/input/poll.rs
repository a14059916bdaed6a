//! Input requests for 2025-11-25 sessions, by SSE polling (docs/conformance.md, fact 3).
//!
//! That revision has no `InputRequiredResult`; instead the server sends its requests on the POST's SSE
//! answer and may end that stream early. So the round a 2026-07-28 client would get as a result becomes
//! one SSE answer: a priming event (`id: E`, `retry`), then one `elicitation/create`,
//! `sampling/createMessage` or `roots/list` request per key, JSON-RPC id `mcpgw.<h>.<key>`. The client
//! answers each with a POST of its own (202; the answer is kept in this Envoy's shared data,
//! [`crate::session::local::ANSWERS`], for any worker, or with `sessions.store: redis` in Redis
//! ([`super::redis`]), for any replica), and resumes with `GET` + `Last-Event-ID: E`.
//! Once every answer is in, the GET runs the call exactly as a 2026-07-28 retry would (the answers as
//! `inputResponses`, the round's `requestState`), and carries its result; until then it gets the priming
//! event again, so that the client polls on with the same id.
//!
//! `E` carries what the GET needs to run the call again: the original request id, method, tool, prompt or
//! resource URI, arguments, the keys asked, and the signed `requestState` (which binds the name and the arguments, so
//! altering them in `E` fails the retry). Answers are kept per session and expire with the state.

use super::STATE_TTL_MS;
use crate::b64::URL_SAFE_NO_PAD;
use crate::json::object;
use crate::session::local::{Edit, ANSWERS};
use crate::session::Env;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt::Write;

/// The JSON-RPC ids of the gateway's own requests to clients start so.
pub const ID_PREFIX: &str = "mcpgw.";
/// How long a client waits before it polls again, in milliseconds (the SSE `retry` field).
pub const RETRY_MS: u64 = 300;

/// What a poll resumes: the call and the round it waits on.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    pub id: Value,
    pub method: String,
    pub name: String,
    pub arguments: Value,
    pub keys: Vec<String>,
    pub state: String,
}

impl Resume {
    /// The SSE event id (`Last-Event-ID` on the poll).
    pub fn encode(&self) -> String {
        let v = object(vec![
            ("i", self.id.clone()),
            ("m", Value::from(self.method.as_str())),
            ("n", Value::from(self.name.as_str())),
            ("g", self.arguments.clone()),
            ("k", Value::from(self.keys.clone())),
            ("s", Value::from(self.state.as_str())),
        ]);
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    pub fn decode(text: &str) -> Option<Resume> {
        let v: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text.trim()).ok()?).ok()?;
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let mut keys = Vec::new();
        for k in v.get("k")?.as_array()? {
            keys.push(k.as_str()?.to_string());
        }
        Some(Resume {
            id: v.get("i").cloned().filter(|i| i.is_string() || i.is_number())?,
            method: s("m").filter(|m| m == "tools/call" || m == "prompts/get" || m == "resources/read")?,
            name: s("n")?,
            arguments: v.get("g").cloned().unwrap_or(Value::Null),
            keys,
            state: s("s")?,
        })
    }

    /// The JSON-RPC id of the request asked under `key` in this round.
    pub fn request_id(&self, key: &str) -> String {
        let digest = Sha256::digest(self.state.as_bytes());
        let mut id = String::from(ID_PREFIX);
        for b in &digest[..6] {
            let _ = write!(id, "{b:02x}");
        }
        id.push('.');
        id.push_str(key);
        id
    }

    /// The request that runs the call again with the answers (`None` where one is still missing).
    pub fn retry(&self, answers: &[Option<String>]) -> Option<crate::jsonrpc::Message> {
        let mut responses = Map::new();
        for (key, answer) in self.keys.iter().zip(answers) {
            let v: Value = serde_json::from_slice(answer.as_deref()?.as_bytes()).unwrap_or(Value::Null);
            // A client's error response stands in for the answer, and fails its check naming the key.
            let result = v.get("result").cloned().unwrap_or(v);
            responses.insert(key.clone(), result);
        }
        // A resource is named by its URI, whose variables are its arguments.
        let params = if self.method == "resources/read" {
            object(vec![
                ("uri", Value::from(self.name.as_str())),
                ("inputResponses", Value::Object(responses)),
                ("requestState", Value::from(self.state.as_str())),
            ])
        } else {
            object(vec![
                ("name", Value::from(self.name.as_str())),
                ("arguments", self.arguments.clone()),
                ("inputResponses", Value::Object(responses)),
                ("requestState", Value::from(self.state.as_str())),
            ])
        };
        Some(crate::jsonrpc::Message::Request {
            id: self.id.clone(),
            method: self.method.clone(),
            params: Some(params),
        })
    }
}

/// What an exchange asks of the answer store.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerOp {
    /// Keep the client's response (JSON text) to our request `id` in `session`.
    Put { session: String, id: String, answer: String },
    /// The responses to these request ids in `session`, in order, taken once all are in: a call runs at
    /// most once, even when two polls race for it on two workers.
    Take { session: String, ids: Vec<String> },
}

/// What the answer store answers.
#[derive(Debug, Clone, PartialEq)]
pub enum AnswerOutcome {
    Stored,
    Found(Vec<Option<String>>),
    Failed(String),
}

fn entry(session: &str, id: &str) -> String {
    format!("{session}|{id}")
}

/// Performs an answer operation on this Envoy's shared data (the driver sends it to Redis instead with
/// `sessions.store: redis`).
pub fn run(op: AnswerOp, env: &mut dyn Env) -> AnswerOutcome {
    let now = env.now_ms();
    match op {
        AnswerOp::Put { session, id, answer } => {
            let expires_ms = now.saturating_add(STATE_TTL_MS);
            let put = |_: Option<(u64, &str)>| (Edit::Put { expires_ms, payload: answer.clone() }, ());
            match ANSWERS.update(env.kv(), &entry(&session, &id), now, put) {
                Ok(_) => AnswerOutcome::Stored,
                Err(e) => AnswerOutcome::Failed(e),
            }
        }
        AnswerOp::Take { session, ids } => {
            let mut found: Vec<Option<String>> = Vec::with_capacity(ids.len());
            for id in &ids {
                found.push(ANSWERS.get(env.kv(), &entry(&session, id), now).map(|(_, a)| a));
            }
            let Some(first) = ids.first().filter(|_| found.iter().all(Option::is_some)) else {
                return AnswerOutcome::Found(found);
            };
            // The first answer is the claim: removed with a compare-and-swap, by exactly one poll.
            let claim = |current: Option<(u64, &str)>| match current {
                Some((_, a)) => (Edit::Remove, Some(a.to_string())),
                None => (Edit::Keep, None),
            };
            match ANSWERS.update(env.kv(), &entry(&session, first), now, claim) {
                Ok((Some(a), _)) => {
                    found[0] = Some(a);
                    AnswerOutcome::Found(found)
                }
                // Another poll took it: that one carries the result.
                Ok((None, _)) => AnswerOutcome::Found(vec![None; ids.len()]),
                Err(e) => AnswerOutcome::Failed(e),
            }
        }
    }
}

/// The client's response in a POST body, when it answers one of our requests: its id and what to keep.
pub fn response_to_us(body: &Value) -> Option<(String, String)> {
    let obj = body.as_object()?;
    let id = obj.get("id")?.as_str().filter(|id| id.starts_with(ID_PREFIX) && id.len() <= 200)?;
    if obj.contains_key("method") {
        return None;
    }
    let kept = match (obj.get("result"), obj.get("error")) {
        (Some(r), _) => object(vec![("result", r.clone())]),
        (None, Some(e)) => object(vec![("error", e.clone())]),
        _ => return None,
    };
    Some((id.to_string(), kept.to_string()))
}

fn event(out: &mut String, id: &str, data: &str) {
    out.push_str("id: ");
    out.push_str(id);
    out.push_str("\ndata: ");
    out.push_str(data);
    out.push_str("\n\n");
}

/// The priming event: the id to resume from, and how long to wait.
pub fn priming(resume_id: &str) -> String {
    format!("id: {resume_id}\nretry: {RETRY_MS}\ndata: \n\n")
}

/// The SSE answer that asks an `InputRequiredResult`'s requests: `None` when `result` is not one.
pub fn ask(result: &Value, id: &Value, method: &str, name: &str, arguments: &Value) -> Option<(Resume, String)> {
    if result.get("resultType").and_then(Value::as_str) != Some("input_required") {
        return None;
    }
    let requests = result.get("inputRequests")?.as_object()?;
    let resume = Resume {
        id: id.clone(),
        method: method.to_string(),
        name: name.to_string(),
        arguments: arguments.clone(),
        keys: requests.keys().cloned().collect(),
        state: result.get("requestState")?.as_str()?.to_string(),
    };
    let e = resume.encode();
    let mut body = priming(&e);
    for (key, req) in requests {
        let msg = object(vec![
            ("jsonrpc", Value::from("2.0")),
            ("id", Value::from(resume.request_id(key))),
            ("method", req["method"].clone()),
            ("params", req["params"].clone()),
        ]);
        event(&mut body, &e, &msg.to_string());
    }
    Some((resume, body))
}

/// The SSE answer that carries a reply on a poll.
pub fn reply(resume_id: &str, reply: &str) -> String {
    let mut body = String::new();
    event(&mut body, resume_id, reply);
    body
}
