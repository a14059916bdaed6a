//! Multi-round-trip input (MCP 2026-07-28, SEP-2322): a tool or prompt asks the client before it runs.
//!
//! A tool's or prompt's `inputRequests` name what to ask (`elicitation/create`, `sampling/createMessage`,
//! `roots/list`), in which round, and when (`ifMissing`: only while an argument is missing; else always,
//! as a confirmation). A request without the answers of its round gets an `InputRequiredResult`
//! (`resultType: input_required`, `inputRequests`, `requestState`); the client retries the same request
//! with `inputResponses` and the `requestState`, and once every round is answered the call runs, its
//! templates reading the answers as `input.<key>` and the missing arguments filled from them.
//!
//! `requestState` carries the round being asked and the answers of the earlier rounds, authenticated,
//! never encrypted (they are the client's own answers):
//!
//! ```text
//! state    base64url(format (1) = 1 | key id (4) | tag (16) | payload)
//! payload  JSON {"r": round index, "e": expires_ms, "a": answers so far}
//! tag      HMAC-SHA256(state key, payload | server | tools or prompts | name | arguments), first 16 bytes
//! ```
//!
//! The server, the tool or prompt and the client's arguments (canonical JSON) are authenticated but not
//! carried: a state issued for one call fails on another, so a confirmation of `DELETE /users/1` cannot be
//! replayed for user 2. A state lives [`STATE_TTL_MS`]. Keys: `inputSigningKeys`, else the `signed`
//! session store's `signingKeys` (every replica with the keys accepts the state; the first key signs, every
//! key verifies), otherwise one random key per Envoy, created by the first worker that needs it and kept in
//! the Envoy's shared data ([`SHARED_KEY`]), so that every worker of that Envoy accepts it (a key per VM
//! would fail as soon as the retry reached another worker). Replicas without configured keys do not share
//! it: there, a retry must reach the Envoy that asked.

use crate::b64::URL_SAFE_NO_PAD;
use crate::fields::{FieldError, Fields};
use crate::json::object;
use crate::jsonrpc::{self, RpcError};
use crate::mcp::{ClientCaps, Revision};
use crate::schema::Validator;
use crate::session::{Env, KeyValue};
use crate::template::{Data, TemplateId, Templates};
use hmac::{Hmac, Mac};
use minijinja::value::Value as MjValue;
use serde_json::{Map, Value};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How long a `requestState` stays valid: time for a person to answer a question.
pub const STATE_TTL_MS: u64 = 600_000;
/// The shared-data key of the per-Envoy state key (when no `signingKeys` are configured).
pub const SHARED_KEY: &str = "mcp-gateway/input-state-key";
const FORMAT: u8 = 1;
const TAG: usize = 16;

/// What can be asked of a client, and the client capability that answers it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Method {
    Elicit,
    Sample,
    Roots,
}

impl Method {
    fn parse(s: &str) -> Option<Method> {
        match s {
            "elicitation/create" => Some(Method::Elicit),
            "sampling/createMessage" => Some(Method::Sample),
            "roots/list" => Some(Method::Roots),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::Elicit => "elicitation/create",
            Method::Sample => "sampling/createMessage",
            Method::Roots => "roots/list",
        }
    }

    /// The client capability a request of this method needs.
    pub fn capability(self) -> &'static str {
        match self {
            Method::Elicit => "elicitation",
            Method::Sample => "sampling",
            Method::Roots => "roots",
        }
    }

    /// Whether a client with these capabilities can answer a request of this method (an elicitation of
    /// ours is a form, so it needs form mode).
    pub fn answerable(self, caps: ClientCaps) -> bool {
        match self {
            Method::Elicit => caps.elicits_forms(),
            other => caps.has(other.capability()) == Some(true),
        }
    }
}

/// One compiled input request.
#[derive(Debug)]
struct Request {
    key: String,
    method: Method,
    params: Value,
    /// String leaves of `params` that are templates, by JSON pointer.
    templated: Vec<(String, TemplateId)>,
    /// Asked only while one of these arguments is missing; an accepted elicitation fills them.
    if_missing: Vec<String>,
    /// A client that cannot answer, or declines, does not stop the call.
    optional: bool,
    /// The elicitation's `requestedSchema`, to check accepted answers against.
    schema: Option<Validator>,
}

/// A tool's or prompt's input requests, by round.
#[derive(Debug)]
pub struct Inputs {
    rounds: Vec<Vec<Request>>,
}

fn key_ok(key: &str) -> bool {
    !key.is_empty() && key.len() <= 64 && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The string leaves of `v` that are templates (`{{` or `{%`), by JSON pointer.
fn template_leaves(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) if s.contains("{{") || s.contains("{%") => out.push((at.to_string(), s.clone())),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                template_leaves(item, &format!("{at}/{i}"), out);
            }
        }
        Value::Object(m) => {
            for (k, item) in m {
                template_leaves(item, &format!("{at}/{}", pointer_escape(k)), out);
            }
        }
        _ => {}
    }
}

impl Inputs {
    /// Compiles `inputRequests` (a map of key to request); errors name the field (`inputRequests.confirm.method`).
    /// `args` are the names of the tool's or prompt's arguments, which templates and `ifMissing` may name.
    pub fn compile(
        raw: &Value,
        prefix: &str,
        args: &[&str],
        templates: &mut Templates,
        config: &MjValue,
    ) -> Result<Inputs, FieldError> {
        let Value::Object(map) = raw else {
            return Err(crate::fields::pair("inputRequests", "must be a map of keys to requests"));
        };
        if map.is_empty() {
            return Err(crate::fields::pair("inputRequests", "names no request"));
        }
        let mut by_round: Vec<(u64, Request)> = Vec::with_capacity(map.len());
        for (key, v) in map {
            let at = format!("inputRequests.{key}");
            if !key_ok(key) {
                return Err((at, "keys use 1-64 characters from A-Z a-z 0-9 _ - .".into()));
            }
            let mut f = Fields::read(v, &at, &[]);
            let method_name = f.required_string("method");
            f.check()?;
            let method = Method::parse(&method_name).ok_or_else(|| {
                (
                    f.path("method"),
                    format!("'{method_name}' is not one of elicitation/create, sampling/createMessage, roots/list"),
                )
            })?;
            let params = Value::Object(f.object("params").unwrap_or_default());
            let round = f.unsigned("round").unwrap_or(1);
            f.check()?;
            if round == 0 {
                return Err((f.path("round"), "rounds count from 1".into()));
            }
            let if_missing = f.strings("ifMissing").unwrap_or_default();
            let optional = f.boolean("optional");
            let params_at = f.path("params");
            f.finish()?;
            for name in &if_missing {
                if !args.contains(&name.as_str()) {
                    let known = if args.is_empty() { "none".to_string() } else { args.join(", ") };
                    return Err((
                        format!("{at}.ifMissing"),
                        format!("'{name}' is not an argument (arguments: {known})"),
                    ));
                }
            }
            let schema = check_params(method, &params, &params_at, &if_missing)?;
            let mut leaves = Vec::new();
            template_leaves(&params, "", &mut leaves);
            let mut templated = Vec::with_capacity(leaves.len());
            for (pointer, source) in leaves {
                let field = format!("{params_at}{}", pointer.replace('/', "."));
                let id = templates
                    .add_checked(&format!("{prefix}/{field}"), &source, &["args", "config", "input"], args, config)
                    .map_err(|e| (field.clone(), e))?;
                templated.push((pointer, id));
            }
            by_round
                .push((round, Request { key: key.clone(), method, params, templated, if_missing, optional, schema }));
        }
        crate::sort::sort_by_key(&mut by_round, |(r, _)| *r);
        let mut rounds: Vec<Vec<Request>> = Vec::new();
        let mut last = None;
        for (r, req) in by_round {
            if last != Some(r) {
                rounds.push(Vec::new());
                last = Some(r);
            }
            if let Some(round) = rounds.last_mut() {
                round.push(req);
            }
        }
        Ok(Inputs { rounds })
    }
}

/// Checks a request's `params` for its method; returns an elicitation's schema validator.
fn check_params(
    method: Method,
    params: &Value,
    at: &str,
    if_missing: &[String],
) -> Result<Option<Validator>, FieldError> {
    let field = |k: &str| format!("{at}.{k}");
    match method {
        Method::Elicit => {
            if !params.get("message").is_some_and(Value::is_string) {
                return Err((field("message"), "an elicitation needs a message (a string)".into()));
            }
            let Some(schema) = params.get("requestedSchema") else {
                return Err((field("requestedSchema"), "an elicitation needs a requestedSchema".into()));
            };
            if schema.get("type").and_then(Value::as_str) != Some("object")
                || !schema.get("properties").is_some_and(Value::is_object)
            {
                return Err((
                    field("requestedSchema"),
                    "must be an object schema with properties (\"type\": \"object\")".into(),
                ));
            }
            for name in if_missing {
                if schema.pointer(&format!("/properties/{}", pointer_escape(name))).is_none() {
                    return Err((
                        field("requestedSchema"),
                        format!("has no property '{name}', which ifMissing names: the answer fills the argument"),
                    ));
                }
            }
            Validator::for_answer(schema.clone()).map(Some).map_err(|e| (field("requestedSchema"), e))
        }
        Method::Sample => {
            if params.get("messages").and_then(Value::as_array).is_none_or(|m| m.is_empty()) {
                return Err((field("messages"), "a sampling request needs at least one message".into()));
            }
            if !params.get("maxTokens").is_some_and(Value::is_u64) {
                return Err((field("maxTokens"), "a sampling request needs maxTokens (a whole number)".into()));
            }
            Ok(None)
        }
        Method::Roots => match params.as_object().map(Map::len) {
            Some(0) => Ok(None),
            _ => Err((at.to_string(), "roots/list takes no params".into())),
        },
    }
}

/// A derived state key and its id.
#[derive(Clone)]
pub struct Key {
    id: [u8; 4],
    /// HMAC state already keyed; cloned per state.
    mac: HmacSha256,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("Key")
    }
}

fn derive(secret: &[u8]) -> Key {
    let mut state_key = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    state_key.update(b"mcp-gateway/input-state/v1");
    let state_key = state_key.finalize().into_bytes();
    let mut kid = <HmacSha256 as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    kid.update(b"mcp-gateway/key-id/v1");
    let kid = kid.finalize().into_bytes();
    let mac = <HmacSha256 as Mac>::new_from_slice(&state_key).expect("HMAC takes keys of any length");
    Key { id: [kid[0], kid[1], kid[2], kid[3]], mac }
}

/// State keys from the signed session store's keys (already validated by it): a label of their own, so a
/// state never verifies as a session id.
pub fn keys_from_secrets(secrets: &[Vec<u8>]) -> Vec<Key> {
    let mut out = Vec::with_capacity(secrets.len());
    for s in secrets {
        out.push(derive(s));
    }
    out
}

/// Creates the shared-data entry of the per-Envoy key, empty, if it does not exist (hosts call it at
/// configure time: [`crate::session::prepare_secret`]).
pub fn prepare(kv: &mut dyn KeyValue) {
    crate::session::prepare_secret(kv, SHARED_KEY);
}

/// This Envoy's state key: read from shared data, or created there by the first worker that needs it.
fn shared_key(env: &mut dyn Env) -> Option<Key> {
    crate::session::shared_secret(env, SHARED_KEY).map(|s| derive(&s))
}

/// What a request needs to ask for input: the clock and the state keys (none when the host has none).
#[derive(Debug, Default)]
pub struct Ctx {
    pub now_ms: u64,
    keys: Vec<Key>,
    /// The capabilities a 2025 session's client declared in `initialize` (`None`: no session, or one opened
    /// before they were kept).
    pub client: Option<crate::mcp::ClientCaps>,
}

impl Ctx {
    /// The context of one request, from the gateway's configured keys or this Envoy's shared key.
    pub fn new(configured: Option<&[Key]>, env: &mut dyn Env) -> Ctx {
        let keys = match configured {
            Some(k) => k.to_vec(),
            None => match shared_key(env) {
                Some(k) => vec![k],
                None => Vec::new(),
            },
        };
        Ctx { now_ms: env.now_ms(), keys, client: None }
    }

    /// A context with these keys (tests).
    pub fn with_keys(now_ms: u64, secrets: &[&[u8]]) -> Ctx {
        Ctx { now_ms, keys: secrets.iter().map(|s| derive(s)).collect(), client: None }
    }

    fn tag(key: &Key, payload: &[u8], call: &Call) -> HmacSha256 {
        let mut mac = key.mac.clone();
        for part in [payload, call.server.as_bytes(), call.kind.as_bytes(), call.name.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        // No arguments and `{}` are the same call.
        let arguments = if call.arguments.is_null() { "{}".to_string() } else { canonical(call.arguments) };
        mac.update(arguments.as_bytes());
        mac
    }

    fn sign(&self, round: usize, answers: &Map<String, Value>, call: &Call) -> Option<String> {
        let key = self.keys.first()?;
        let payload = object(vec![
            ("r", Value::from(round)),
            ("e", Value::from(self.now_ms.saturating_add(STATE_TTL_MS))),
            ("a", Value::Object(answers.clone())),
        ])
        .to_string();
        let tag = Self::tag(key, payload.as_bytes(), call).finalize().into_bytes();
        let mut bytes = Vec::with_capacity(1 + 4 + TAG + payload.len());
        bytes.push(FORMAT);
        bytes.extend_from_slice(&key.id);
        bytes.extend_from_slice(&tag[..TAG]);
        bytes.extend_from_slice(payload.as_bytes());
        Some(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The round and answers a state carries; `None` for a state not issued by one of our keys for this
    /// very call, or expired.
    fn verify(&self, state: &str, call: &Call) -> Option<(usize, Map<String, Value>)> {
        let bytes = URL_SAFE_NO_PAD.decode(state).ok()?;
        if bytes.len() < 1 + 4 + TAG || bytes[0] != FORMAT {
            return None;
        }
        let (kid, rest) = bytes[1..].split_at(4);
        let (tag, payload) = rest.split_at(TAG);
        let key = self.keys.iter().find(|k| k.id == kid)?;
        Self::tag(key, payload, call).verify_truncated_left(tag).ok()?;
        let v: Value = serde_json::from_slice(payload).ok()?;
        if v.get("e").and_then(Value::as_u64)? <= self.now_ms {
            return None;
        }
        let round = usize::try_from(v.get("r")?.as_u64()?).ok()?;
        Some((round, v.get("a")?.as_object()?.clone()))
    }
}

/// JSON with object keys sorted at every level, so that a client that re-serialises its arguments in
/// another order still presents the same call.
fn canonical(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                crate::sort::sort(&mut keys);
                let mut out = Map::new();
                for k in keys {
                    if let Some(v) = m.get(k) {
                        out.insert(k.clone(), sort(v));
                    }
                }
                Value::Object(out)
            }
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(sort(i));
                }
                Value::Array(out)
            }
            other => other.clone(),
        }
    }
    sort(v).to_string()
}

/// The call input is asked for.
pub struct Call<'a> {
    pub server: &'a str,
    /// `tools` or `prompts`.
    pub kind: &'static str,
    pub name: &'a str,
    /// The client's arguments, as sent (`null` when absent).
    pub arguments: &'a Value,
}

/// What a call does next.
#[derive(Debug)]
pub enum Next {
    /// Run: with the arguments filled from the answers (`None`: as sent), templates reading `input`.
    Run { arguments: Option<Value>, input: Value },
    /// Answer this: an `InputRequiredResult`, or an error.
    Reply(Result<Value, RpcError>),
    /// A required request was declined or cancelled: the call does not run, for this reason.
    Declined(String),
}

/// How an answer reads.
fn check_answer(req: &Request, answer: &Value) -> Result<bool, String> {
    let Value::Object(a) = answer else {
        return Err(format!("must be the result of {} (an object)", req.method.name()));
    };
    match req.method {
        Method::Elicit => match a.get("action").and_then(Value::as_str) {
            Some("accept") => {
                let content = a.get("content").ok_or("an accepted elicitation needs `content`")?;
                if !content.is_object() {
                    return Err("`content` must be an object".into());
                }
                if let Some(problems) = req.schema.as_ref().map(|s| s.validate(content)).filter(|p| !p.is_empty()) {
                    return Err(format!("`content` does not match the requested schema: {}", problems.join("; ")));
                }
                Ok(true)
            }
            Some("decline" | "cancel") => Ok(false),
            _ => Err("`action` must be accept, decline or cancel".into()),
        },
        Method::Sample if a.contains_key("content") => Ok(true),
        Method::Sample => Err("a sampling result needs `content`".into()),
        Method::Roots if a.get("roots").is_some_and(Value::is_array) => Ok(true),
        Method::Roots => Err("a roots/list result needs `roots` (a list)".into()),
    }
}

fn missing(args: &Map<String, Value>, name: &str) -> bool {
    args.get(name).is_none_or(Value::is_null)
}

/// Decides what a call of a tool or prompt with input requests does: ask (again), refuse, or run.
///
/// `params` are the request's; `caps` the client capabilities it declares (`None`: the request's revision
/// cannot carry input requests, so required ones fail and optional ones are skipped).
pub fn resolve(
    inputs: &Inputs,
    ctx: &Ctx,
    templates: &Templates,
    config: &MjValue,
    call: &Call,
    params: &Map<String, Value>,
    revision: Revision,
) -> Next {
    let stateless = revision.is_stateless();
    let invalid = |m: String| Next::Reply(Err(RpcError::invalid_params(m)));
    let mut args = match call.arguments {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        // The tool or prompt says what is wrong with its arguments.
        _ => return Next::Run { arguments: None, input: Value::Object(Map::new()) },
    };
    let (start, mut answers) = match params.get("requestState") {
        None | Some(Value::Null) => (0, Map::new()),
        Some(Value::String(s)) => match ctx.verify(s, call) {
            Some(state) => state,
            None => {
                return invalid(
                    "requestState is not valid: altered, expired, or issued for another call or server".into(),
                )
            }
        },
        Some(_) => return invalid("requestState must be a string".into()),
    };
    let mut responses = match params.get("inputResponses") {
        None => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return invalid("inputResponses must be an object of answers by key".into()),
    };
    // A stateless request declares its client's capabilities; a 2025-11-25 session is asked by SSE polling
    // ([`poll`]) what its `initialize` declared (a session opened before they were kept: every kind, and a
    // client that cannot answer says so in its response). Older revisions cannot be asked.
    let caps = if stateless {
        Some(ClientCaps::from_json(
            params.get("_meta").and_then(|m| m.get("io.modelcontextprotocol/clientCapabilities")),
        ))
    } else if revision == Revision::V2025_11_25 {
        Some(ctx.client.unwrap_or(ClientCaps::from_bits(crate::mcp::client_caps::ALL_BITS)))
    } else {
        None
    };
    // Earlier rounds' answers fill the arguments they were asked for.
    for req in inputs.rounds.iter().take(start).flatten() {
        fill(req, answers.get(&req.key), &mut args);
    }
    let mut filled = false;
    for (index, round) in inputs.rounds.iter().enumerate().skip(start) {
        let mut asked: Vec<&Request> = Vec::new();
        for req in round {
            if !req.if_missing.is_empty() && !req.if_missing.iter().any(|n| missing(&args, n)) {
                continue;
            }
            if !caps.is_some_and(|c| req.method.answerable(c)) {
                if req.optional {
                    continue;
                }
                if caps.is_some() && !stateless {
                    return Next::Reply(Err(RpcError::new(
                        jsonrpc::INVALID_REQUEST,
                        format!(
                            "{} {} asks the client for input ({} `{}`), which needs the client capability `{}`{}; \
                             this session's initialize did not declare it",
                            &call.kind[..call.kind.len() - 1],
                            call.name,
                            req.method.name(),
                            req.key,
                            req.method.capability(),
                            if req.method == Method::Elicit { " (form mode)" } else { "" },
                        ),
                    )
                    .with_data(required(req.method))));
                }
                if !stateless {
                    return Next::Reply(Err(RpcError::new(
                        jsonrpc::INVALID_REQUEST,
                        format!(
                            "{} {} asks the client for input ({} `{}`), which needs protocol revision 2025-11-25 \
                             or later (this request is at {revision})",
                            &call.kind[..call.kind.len() - 1],
                            call.name,
                            req.method.name(),
                            req.key
                        ),
                    )));
                }
                return Next::Reply(Err(RpcError::new(
                    crate::transport::stateless::MISSING_CLIENT_CAPABILITY,
                    format!("{} asks for input the request's client capabilities cannot answer", call.name),
                )
                .with_data(required(req.method))));
            }
            asked.push(req);
        }
        if asked.is_empty() {
            continue;
        }
        if let Some(given) = responses.take() {
            if asked.iter().all(|r| given.contains_key(&r.key)) {
                for req in &asked {
                    let answer = &given[&req.key];
                    match check_answer(req, answer) {
                        Err(why) => return invalid(format!("inputResponses.{}: {why}", req.key)),
                        Ok(false) if !req.optional => {
                            return Next::Declined(format!(
                                "The client declined the input request `{}` ({}); {} {} did not run.",
                                req.key,
                                answer.get("action").and_then(Value::as_str).unwrap_or("decline"),
                                &call.kind[..call.kind.len() - 1],
                                call.name
                            ))
                        }
                        Ok(_) => {}
                    }
                    answers.insert(req.key.clone(), answer.clone());
                    filled |= fill(req, Some(answer), &mut args);
                }
                continue;
            }
        }
        // Ask this round (again, when the answers were missing).
        let mut requests = Map::new();
        for req in &asked {
            match render(req, templates, config, &args, &answers) {
                Ok(params) => {
                    requests.insert(
                        req.key.clone(),
                        object(vec![("method", Value::from(req.method.name())), ("params", params)]),
                    );
                }
                Err(e) => {
                    return Next::Reply(Err(RpcError::new(
                        jsonrpc::INTERNAL_ERROR,
                        format!("{} input request `{}`: {e}", call.name, req.key),
                    )))
                }
            }
        }
        let Some(state) = ctx.sign(index, &answers, call) else {
            return Next::Reply(Err(RpcError::new(
                jsonrpc::INTERNAL_ERROR,
                "no key to sign requestState with (the host gave no shared data or randomness)",
            )));
        };
        return Next::Reply(Ok(object(vec![
            ("resultType", Value::from("input_required")),
            ("inputRequests", Value::Object(requests)),
            ("requestState", Value::from(state)),
        ])));
    }
    let arguments = filled.then(|| Value::Object(args));
    Next::Run { arguments, input: Value::Object(answers) }
}

/// The error data naming the client capability an input request needs.
fn required(method: Method) -> Value {
    object(vec![("requiredCapabilities", object(vec![(method.capability(), Value::Object(Map::new()))]))])
}

/// Fills the arguments an accepted elicitation was asked for; whether it filled any.
fn fill(req: &Request, answer: Option<&Value>, args: &mut Map<String, Value>) -> bool {
    let Some(content) = answer.filter(|a| a["action"] == "accept").and_then(|a| a.get("content")) else {
        return false;
    };
    let mut any = false;
    for name in &req.if_missing {
        if let (true, Some(v)) = (missing(args, name), content.get(name)) {
            args.insert(name.clone(), v.clone());
            any = true;
        }
    }
    any
}

/// A request's params with its templates rendered over the arguments and the answers so far.
fn render(
    req: &Request,
    templates: &Templates,
    config: &MjValue,
    args: &Map<String, Value>,
    answers: &Map<String, Value>,
) -> Result<Value, String> {
    let mut params = req.params.clone();
    if req.templated.is_empty() {
        return Ok(params);
    }
    let args = Value::Object(args.clone());
    let input = Value::Object(answers.clone());
    crate::template::with_input(Some(&input), || {
        let data = Data::request(&args, config);
        for (pointer, id) in &req.templated {
            let text = templates.render(id, &data)?;
            if let Some(slot) = params.pointer_mut(pointer) {
                *slot = Value::String(text);
            }
        }
        Ok(params)
    })
}

pub mod poll;
pub mod redis;
#[cfg(test)]
mod tests;
