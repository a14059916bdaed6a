//! MCP methods over JSON-RPC: initialize, server/discover, ping, tools, prompts, resources and completion,
//! at every revision ([`Revision`]).
//!
//! Each message is handled on its own and yields a reply, nothing, or a pending upstream call (a tool call
//! or a fetched resource); the transport decides how replies travel. A method is served only where the
//! server declares its capability, which follows from what the server has. Results of the stateless
//! revision carry `resultType`, and list and read results also `ttlMs` and `cacheScope` ([`complete`]).

pub mod client_caps;
pub mod revision;

pub use client_caps::ClientCaps;
pub use revision::Revision;

use crate::admission::policy::Kind;
use crate::credential::Presented;
use crate::gateway::{Access, Gateway, Server};
use crate::input;
use crate::json::object;
use crate::jsonrpc::{self, Message, RpcError};
use crate::resource::Read;
use crate::tool::{Prepared, Tool};
use crate::upstream::UpstreamRequest;
use serde_json::{json, Value};

/// How long a stateless client may cache a list, read or discovery result. Tools, prompts and resources
/// come from the plugin config, which changes only when Envoy reloads it.
pub const LIST_TTL_MS: u64 = 60_000;

/// Methods the stateless revision removed (its changelog): a request for one is a method not found, while
/// a session of the handshake era keeps them.
const REMOVED_IN_2026: [&str; 5] =
    ["initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"];

/// The outcome of one message.
#[derive(Debug)]
pub enum Handled {
    Reply(Value),
    /// A successful reply's id and result, written around them (see [`jsonrpc::Reply::Result`]).
    Result {
        id: Value,
        result: Value,
    },
    /// A whole reply written as JSON text (list pages).
    Text(String),
    /// Notifications and client responses get no reply.
    Silent,
    /// A call that needs the upstream; its reply is built by [`finish_call`].
    Call {
        id: Value,
        call: Pending,
        request: Box<UpstreamRequest>,
        args: Value,
    },
}

/// What an upstream call answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// `tools/call` of this tool, with the client's answers to its input requests (for its response
    /// templates).
    Tool(String, Option<Value>),
    /// `resources/read` of this URI, with the client's answers to its input requests.
    Resource(String, Option<Value>),
}

/// What the server offers, from what it serves: a capability for each kind it has (none of them changes
/// while the config stands, and no update can be pushed, so no `listChanged` or `subscribe`).
pub fn capabilities(server: &Server) -> Value {
    let mut c = serde_json::Map::new();
    if !server.tools.is_empty() {
        c.insert("tools".into(), json!({"listChanged": false}));
    }
    if !server.prompts.is_empty() {
        c.insert("prompts".into(), json!({"listChanged": false}));
    }
    if !server.resources.is_empty() || !server.resource_templates.is_empty() {
        c.insert("resources".into(), json!({"listChanged": false}));
    }
    if server.completes() {
        c.insert("completions".into(), json!({}));
    }
    if server.notifications.iter().any(crate::notify::Notifications::logs) {
        c.insert("logging".into(), json!({}));
    }
    Value::Object(c)
}

/// Whether the server declares the capability a method belongs to.
fn declares(server: &Server, method: &str) -> bool {
    let capability = match method.split('/').next().unwrap_or_default() {
        "completion" => "completions",
        other => other,
    };
    !matches!(capability, "tools" | "prompts" | "resources" | "completions" | "logging")
        || server.capabilities.get(capability).is_some()
}

/// The `initialize` result for a server at a negotiated revision.
pub fn initialize_result(server: &Server, version: Revision) -> Value {
    let mut r = vec![
        ("protocolVersion", Value::from(version.as_str())),
        ("capabilities", server.capabilities.clone()),
        ("serverInfo", server.info.clone()),
    ];
    if let Some(i) = &server.instructions {
        r.push(("instructions", Value::from(i.as_str())));
    }
    object(r)
}

/// The `server/discover` result of the stateless revision: what `initialize` told a legacy client.
pub fn discover_result(server: &Server) -> Value {
    let mut r = vec![
        ("supportedVersions", Value::from(Revision::all_names())),
        ("capabilities", server.capabilities.clone()),
        ("_meta", object(vec![("io.modelcontextprotocol/serverInfo", server.info.clone())])),
    ];
    if let Some(i) = &server.instructions {
        r.push(("instructions", Value::from(i.as_str())));
    }
    object(r)
}

/// Completes a result for the revision it answers: at the stateless revision every result says its
/// `resultType`, and list and discovery results how long they may be cached, and by whom (`private`: a
/// listing may one day depend on who asks).
pub fn complete(method: &str, mut result: Value, revision: Revision) -> Value {
    if !revision.is_stateless() {
        return result;
    }
    if let Some(obj) = result.as_object_mut() {
        obj.entry("resultType").or_insert_with(|| Value::from("complete"));
        if matches!(
            method,
            "server/discover"
                | "tools/list"
                | "prompts/list"
                | "resources/list"
                | "resources/templates/list"
                | "resources/read"
        ) {
            obj.insert("ttlMs".into(), Value::from(LIST_TTL_MS));
            obj.insert("cacheScope".into(), Value::from("private"));
        }
    }
    result
}

/// Handles one message (everything except a legacy `initialize`, which opens a session).
pub fn handle(gw: &Gateway, server: &Server, msg: Message, revision: Revision) -> Handled {
    let caller = crate::caller::Caller::anonymous();
    let access = Access { caller: &caller, header: None };
    handle_allowed(gw, server, msg, revision, &access, &Presented::NONE, &input::Ctx::default())
}

/// [`handle`] for a request that names the tools it may use (`x-envoy-allow-mcp-tools`) and presented
/// credentials (read where [`Server::credential_sources`] says).
pub fn handle_allowed(
    gw: &Gateway,
    server: &Server,
    msg: Message,
    revision: Revision,
    access: &Access,
    presented: &Presented,
    ctx: &input::Ctx,
) -> Handled {
    let (id, method, mut params) = match msg {
        Message::Request { id, method, params } => (id, method, params),
        Message::Notification { .. } | Message::Response => return Handled::Silent,
    };
    let not_found =
        |id| Handled::Reply(jsonrpc::error(id, jsonrpc::METHOD_NOT_FOUND, format!("Method not found: {method}")));
    if (revision.is_stateless() && REMOVED_IN_2026.contains(&method.as_str())) || !declares(server, &method) {
        return not_found(id);
    }
    let Some(p) = jsonrpc::params_object(&params) else {
        return Handled::Reply(jsonrpc::error(id, jsonrpc::INVALID_PARAMS, "params must be an object"));
    };
    let done = |id, result| Handled::Result { id, result: complete(&method, result, revision) };
    let answer = |id, r: Result<Value, RpcError>| match r {
        Ok(result) => done(id, result),
        Err(e) => Handled::Reply(e.reply(id)),
    };
    match method.as_str() {
        "ping" => done(id, json!({})),
        "initialize" => {
            Handled::Reply(jsonrpc::error(id, jsonrpc::INVALID_REQUEST, "the session is already initialized"))
        }
        "server/discover" if revision.is_stateless() => done(id, discover_result(server)),
        // Cursors page over what this caller may see. Pages are written as text: each listing is serialised
        // once (a tool's when it is first listed), not copied as a tree per page.
        "tools/list" if server.filters(access, Kind::Tool) => {
            let mut visible: Vec<&Tool> = Vec::new();
            for t in &server.tools {
                if server.may(access, Kind::Tool, &t.name) {
                    visible.push(t);
                }
            }
            list(gw, &id, "tools", revision, visible.len(), p.get("cursor"), &|i, out| {
                out.push_str(visible[i].listing_json())
            })
        }
        "tools/list" => list(gw, &id, "tools", revision, server.tools.len(), p.get("cursor"), &|i, out| {
            out.push_str(server.tools[i].listing_json())
        }),
        "prompts/list" => {
            let mut visible = Vec::new();
            for p in &server.prompts {
                if server.may(access, Kind::Prompt, &p.name) {
                    visible.push(p);
                }
            }
            list(gw, &id, "prompts", revision, visible.len(), p.get("cursor"), &|i, out| {
                write_json(out, &visible[i].listing)
            })
        }
        "resources/list" => {
            let mut visible = Vec::new();
            for r in &server.resources {
                if server.may(access, Kind::Resource, &r.uri) {
                    visible.push(r);
                }
            }
            list(gw, &id, "resources", revision, visible.len(), p.get("cursor"), &|i, out| {
                write_json(out, &visible[i].listing)
            })
        }
        "resources/templates/list" => {
            let mut visible = Vec::new();
            for r in &server.resource_templates {
                if server.may(access, Kind::Resource, &r.uri) {
                    visible.push(r);
                }
            }
            list(gw, &id, "resourceTemplates", revision, visible.len(), p.get("cursor"), &|i, out| {
                write_json(out, &visible[i].listing)
            })
        }
        "prompts/get" => {
            let Some(name) = p.get("name").and_then(Value::as_str) else {
                return Handled::Reply(jsonrpc::error(
                    id,
                    jsonrpc::INVALID_PARAMS,
                    "prompts/get needs a string `name`",
                ));
            };
            let Some(prompt) = server.prompt(name) else {
                return Handled::Reply(jsonrpc::error(id, jsonrpc::INVALID_PARAMS, format!("Unknown prompt: {name}")));
            };
            if !server.may(access, Kind::Prompt, name) {
                return Handled::Reply(refused(access, Kind::Prompt, name).reply(id));
            }
            let Some(inputs) = &prompt.inputs else {
                return answer(id, prompt.get(&gw.templates, &server.config, p.get("arguments"), None));
            };
            let arguments = p.get("arguments").unwrap_or(&Value::Null);
            let call = input::Call { server: &server.name, kind: "prompts", name, arguments };
            match input::resolve(inputs, ctx, &gw.templates, &server.config, &call, p, revision) {
                input::Next::Run { arguments: filled, input } => answer(
                    id,
                    prompt.get(&gw.templates, &server.config, Some(filled.as_ref().unwrap_or(arguments)), Some(&input)),
                ),
                input::Next::Reply(r) => answer(id, r),
                input::Next::Declined(why) => answer(id, Err(RpcError::invalid_params(why))),
            }
        }
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            let Some(uri) = p.get("uri").and_then(Value::as_str) else {
                return Handled::Reply(jsonrpc::error(
                    id,
                    jsonrpc::INVALID_PARAMS,
                    format!("{method} needs a string `uri`"),
                ));
            };
            let Some((resource, vars)) = server.resource(uri) else {
                return Handled::Reply(resource_not_found(uri, revision).reply(id));
            };
            // A listed resource by its URI, a template's by the template (what resources/templates/list shows),
            // or by the URI read.
            if !server.may(access, Kind::Resource, &resource.uri) && !server.may(access, Kind::Resource, uri) {
                return Handled::Reply(refused(access, Kind::Resource, uri).reply(id));
            }
            if method != "resources/read" {
                // Acknowledged: the resource exists, but its contents change only with the config, so there
                // is never an update to send.
                return done(id, json!({}));
            }
            let input = match &resource.inputs {
                None => None,
                Some(inputs) => {
                    let arguments = Value::Object(vars.clone());
                    let call =
                        input::Call { server: &server.name, kind: "resources", name: uri, arguments: &arguments };
                    match input::resolve(inputs, ctx, &gw.templates, &server.config, &call, p, revision) {
                        input::Next::Run { input, .. } => Some(input),
                        input::Next::Reply(r) => return answer(id, r),
                        input::Next::Declined(why) => return answer(id, Err(RpcError::invalid_params(why))),
                    }
                }
            };
            match resource.read(&gw.templates, &server.config, uri, vars, input.as_ref()) {
                Read::Done(r) => answer(id, r),
                Read::Upstream(request, args) => Handled::Call {
                    id,
                    call: Pending::Resource(uri.to_string(), input),
                    request: Box::new(request),
                    args,
                },
            }
        }
        "completion/complete" => answer(id, complete_argument(server, p)),
        // Validated here; the transport keeps the level in the session.
        "logging/setLevel" => answer(
            id,
            crate::notify::LogLevel::from_json(p.get("level")).map(|_| json!({})).map_err(RpcError::invalid_params),
        ),
        "tools/call" => {
            let Some(name) = p.get("name").and_then(Value::as_str) else {
                return Handled::Reply(jsonrpc::error(id, jsonrpc::INVALID_PARAMS, "tools/call needs a string `name`"));
            };
            let Some(tool) = server.tool(name) else {
                return Handled::Reply(jsonrpc::error(id, jsonrpc::INVALID_PARAMS, format!("Unknown tool: {name}")));
            };
            if !server.tool_allowed(name, access.header) {
                // Higress's words for it.
                return Handled::Reply(jsonrpc::error(
                    id,
                    jsonrpc::INVALID_PARAMS,
                    format!("Tool not allowed: {name}"),
                ));
            }
            if !server.may(access, Kind::Tool, name) {
                return Handled::Reply(refused(access, Kind::Tool, name).reply(id));
            }
            if revision.is_stateless() {
                if let Some(missing) = missing_capabilities(tool, p) {
                    return Handled::Reply(jsonrpc::error_with_data(
                        id,
                        crate::transport::stateless::MISSING_CLIENT_CAPABILITY,
                        format!("Tool {name} needs client capabilities the request does not declare"),
                        object(vec![("requiredCapabilities", missing)]),
                    ));
                }
            } else if let Some(missing) = ctx.client.and_then(|caps| missing_in_session(tool, caps)) {
                return Handled::Reply(jsonrpc::error_with_data(
                    id,
                    jsonrpc::INVALID_REQUEST,
                    format!("Tool {name} needs client capabilities this session's initialize did not declare"),
                    object(vec![("requiredCapabilities", missing)]),
                ));
            }
            let (filled, input) = match &tool.inputs {
                None => (None, None),
                Some(inputs) => {
                    let arguments = p.get("arguments").unwrap_or(&Value::Null);
                    let call = input::Call { server: &server.name, kind: "tools", name, arguments };
                    match input::resolve(inputs, ctx, &gw.templates, &server.config, &call, p, revision) {
                        input::Next::Run { arguments, input } => (arguments, Some(input)),
                        input::Next::Reply(r) => return answer(id, r),
                        input::Next::Declined(why) => return done(id, crate::tool::error_result(&why)),
                    }
                }
            };
            if let Some(Err(e)) =
                server.guard.as_ref().map(|g| g.check_input(name, filled.as_ref().or(p.get("arguments"))))
            {
                return Handled::Reply(e.reply(id));
            }
            // The arguments are taken out of the parsed request, not copied: the tool coerces them in place.
            let name = name.to_string();
            let arguments = filled.or_else(|| params.as_mut().and_then(|p| p.get_mut("arguments")).map(Value::take));
            match crate::template::with_input(input.as_ref(), || {
                tool.prepare_owned(&gw.templates, &server.config, arguments, presented)
            }) {
                Prepared::Done(mut result) => match guarded(server, &name, &mut result) {
                    Ok(()) => done(id, result),
                    Err(e) => Handled::Reply(e.reply(id)),
                },
                Prepared::Upstream(request, args) => {
                    Handled::Call { id, call: Pending::Tool(name, input), request: Box::new(request), args }
                }
            }
        }
        _ => not_found(id),
    }
}

/// The refusal of an item the server's policy does not allow the caller.
pub fn refused(access: &Access, kind: Kind, name: &str) -> crate::error::GatewayError {
    crate::error::GatewayError::Forbidden {
        message: format!("Forbidden: {} may not use {} '{name}'", caller_words(access.caller), kind.noun()),
    }
}

/// How a refusal names the caller: its consumer, or that it is anonymous.
pub fn caller_words(caller: &crate::caller::Caller) -> String {
    match &caller.consumer {
        Some(c) => format!("consumer '{c}'"),
        None => "an anonymous caller".into(),
    }
}

/// The capabilities a tool requires that the request's `_meta` does not declare (stateless revision: the
/// client declares them on every request).
fn missing_capabilities(tool: &Tool, params: &serde_json::Map<String, Value>) -> Option<Value> {
    let required = tool.required_client_capabilities.as_ref()?;
    let declared = params.get("_meta").and_then(|m| m.get("io.modelcontextprotocol/clientCapabilities"));
    let mut missing = serde_json::Map::new();
    for (k, v) in required {
        if declared.and_then(|d| d.get(k.as_str())).is_none() {
            missing.insert(k.clone(), v.clone());
        }
    }
    (!missing.is_empty()).then_some(Value::Object(missing))
}

/// The capabilities a tool requires that a 2025 session's client did not declare in `initialize`; only
/// the capabilities a session keeps ([`ClientCaps`]) can be checked.
fn missing_in_session(tool: &Tool, caps: ClientCaps) -> Option<Value> {
    let required = tool.required_client_capabilities.as_ref()?;
    let mut missing = serde_json::Map::new();
    for (k, v) in required {
        if caps.has(k) == Some(false) {
            missing.insert(k.clone(), v.clone());
        }
    }
    (!missing.is_empty()).then_some(Value::Object(missing))
}

/// Builds the reply of an upstream call (a tool call, a fetched resource) from the upstream answer.
pub fn finish_call(
    gw: &Gateway,
    server: &Server,
    id: Value,
    call: &Pending,
    args: &Value,
    outcome: crate::upstream::UpstreamResult,
    revision: Revision,
) -> jsonrpc::Reply {
    let tree = jsonrpc::Reply::Tree;
    match call {
        Pending::Tool(tool, input) => match server.tool(tool) {
            Some(t) => {
                let mut result = crate::template::with_input(input.as_ref(), || {
                    t.finish(&gw.templates, &server.config, args, outcome)
                });
                if let Err(e) = guarded(server, tool, &mut result) {
                    return tree(e.reply(id));
                }
                jsonrpc::Reply::Result { id, result: complete("tools/call", result, revision) }
            }
            None => tree(jsonrpc::error(id, jsonrpc::INTERNAL_ERROR, "the tool disappeared during the call")),
        },
        Pending::Resource(uri, input) => match server.resource(uri) {
            Some((r, _)) => match crate::template::with_input(input.as_ref(), || {
                r.finish(&gw.templates, &server.config, uri, args, outcome)
            }) {
                Ok(result) => jsonrpc::Reply::Result { id, result: complete("resources/read", result, revision) },
                Err(e) => tree(e.reply(id)),
            },
            None => tree(jsonrpc::error(id, jsonrpc::INTERNAL_ERROR, "the resource disappeared during the read")),
        },
    }
}

/// A tool result through the server's guardrails (masking, size), when it has any.
fn guarded(server: &Server, tool: &str, result: &mut Value) -> Result<(), crate::error::GatewayError> {
    server.guard.as_ref().map_or(Ok(()), |g| g.filter_result(tool, result))
}

/// The error for a URI no resource or template serves: -32002 in the 2025 revisions, -32602 from
/// 2026-07-28 (SEP-2164); both carry the URI.
fn resource_not_found(uri: &str, revision: Revision) -> RpcError {
    let code = if revision.is_stateless() { jsonrpc::INVALID_PARAMS } else { jsonrpc::RESOURCE_NOT_FOUND_LEGACY };
    RpcError::new(code, format!("Resource not found: {uri}")).with_data(object(vec![("uri", Value::from(uri))]))
}

/// `completion/complete` for a prompt's argument or a resource template's variable.
fn complete_argument(server: &Server, p: &serde_json::Map<String, Value>) -> Result<Value, RpcError> {
    let r = p.get("ref").ok_or_else(|| RpcError::invalid_params("completion/complete needs `ref`"))?;
    let field = |k: &str| r.get(k).and_then(Value::as_str);
    let (args, owner) = match (field("type"), field("name"), field("uri")) {
        (Some("ref/prompt"), Some(name), _) => {
            let prompt =
                server.prompt(name).ok_or_else(|| RpcError::invalid_params(format!("Unknown prompt: {name}")))?;
            (&prompt.arguments, format!("prompt '{name}'"))
        }
        (Some("ref/resource"), _, Some(uri)) => {
            let template = server
                .resource_templates
                .iter()
                .chain(&server.resources)
                .find(|t| t.uri == uri)
                .ok_or_else(|| RpcError::invalid_params(format!("Unknown resource template: {uri}")))?;
            (&template.arguments, format!("resource template '{uri}'"))
        }
        _ => {
            return Err(RpcError::invalid_params("`ref` must be {type: ref/prompt, name} or {type: ref/resource, uri}"))
        }
    };
    let (name, value) = crate::completion::requested(p).map_err(RpcError::invalid_params)?;
    let argument = crate::completion::find(args, name, &owner).map_err(RpcError::invalid_params)?;
    let given = crate::completion::context_arguments(p).map_err(RpcError::invalid_params)?;
    Ok(object(vec![("completion", argument.complete(value, &given))]))
}

/// The reply to a list request: one page ([`page`]) as JSON text, with what the stateless revision adds
/// to list results ([`complete`]), or the cursor's error.
fn list(
    gw: &Gateway,
    id: &Value,
    kind: &str,
    revision: Revision,
    total: usize,
    cursor: Option<&Value>,
    item: &dyn Fn(usize, &mut String),
) -> Handled {
    match page_text(gw, kind, total, cursor, item) {
        Ok(mut result) => {
            if revision.is_stateless() {
                result.pop(); // the closing brace
                result.push_str(&format!(
                    ",\"resultType\":\"complete\",\"ttlMs\":{LIST_TTL_MS},\"cacheScope\":\"private\"}}"
                ));
            }
            Handled::Text(jsonrpc::result_text(id, &result))
        }
        Err(e) => Handled::Reply(e.reply(id.clone())),
    }
}

/// Appends a value's JSON text.
fn write_json(out: &mut String, v: &Value) {
    out.push_str(&v.to_string());
}

/// One page of a list, `toolsPageSize` long, behind an opaque cursor that names the list it belongs to: the
/// items' range and the next page's cursor, if any.
pub fn page(
    gw: &Gateway,
    kind: &str,
    total: usize,
    cursor: Option<&Value>,
) -> Result<(std::ops::Range<usize>, Option<String>), RpcError> {
    let start = match cursor {
        None | Some(Value::Null) => 0,
        Some(Value::String(c)) => {
            decode_cursor(kind, c).filter(|s| *s <= total).ok_or_else(|| RpcError::invalid_params("invalid cursor"))?
        }
        Some(_) => return Err(RpcError::invalid_params("the cursor must be a string")),
    };
    let end = (start + gw.page_size).min(total);
    Ok((start..end, (end < total).then(|| encode_cursor(kind, end))))
}

/// One page ([`page`]) as the result object's JSON text, each item written by `item` (by index).
fn page_text(
    gw: &Gateway,
    kind: &str,
    total: usize,
    cursor: Option<&Value>,
    item: &dyn Fn(usize, &mut String),
) -> Result<String, RpcError> {
    let (range, next) = page(gw, kind, total, cursor)?;
    let mut out = format!("{{\"{kind}\":[");
    for i in range.clone() {
        if i > range.start {
            out.push(',');
        }
        item(i, &mut out);
    }
    out.push(']');
    if let Some(next) = next {
        out.push_str(",\"nextCursor\":");
        write_json(&mut out, &Value::String(next));
    }
    out.push('}');
    Ok(out)
}

fn encode_cursor(kind: &str, offset: usize) -> String {
    crate::b64::URL_SAFE_NO_PAD.encode(format!("{kind}:{offset}"))
}

fn decode_cursor(kind: &str, c: &str) -> Option<usize> {
    let raw = crate::b64::URL_SAFE_NO_PAD.decode(c).ok()?;
    std::str::from_utf8(&raw).ok()?.strip_prefix(kind)?.strip_prefix(':')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gw() -> Gateway {
        let mut tools = String::new();
        for i in 0..7 {
            tools.push_str(&format!("  - {{name: t{i}, description: d, responseTemplate: {{body: 'r{i}'}}}}\n"));
        }
        Gateway::from_config_str(&format!("toolsPageSize: 3\nservers:\n- name: s\n  tools:\n{tools}")).unwrap()
    }

    fn req(method: &str, params: Value) -> Message {
        Message::Request { id: json!(1), method: method.into(), params: Some(params) }
    }

    fn reply(h: Handled) -> Value {
        match h {
            Handled::Reply(v) => v,
            Handled::Result { id, result } => jsonrpc::result(id, result),
            Handled::Text(t) => serde_json::from_str(&t).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    const LEGACY: Revision = Revision::V2025_11_25;
    const STATELESS: Revision = Revision::V2026_07_28;

    #[test]
    fn results_keep_their_member_order() {
        let g = Gateway::from_config_str(
            "servers:\n- name: s\n  instructions: Be brief\n  tools: [{name: t, responseTemplate: {body: x}}]\n",
        )
        .unwrap();
        let s = &g.servers[0];
        let (caps, info) = (s.capabilities.to_string(), s.info.to_string());
        assert_eq!(
            initialize_result(s, LEGACY).to_string(),
            format!(
                r#"{{"protocolVersion":"{}","capabilities":{caps},"serverInfo":{info},"instructions":"Be brief"}}"#,
                LEGACY.as_str()
            )
        );
        let versions = Value::from(Revision::all_names()).to_string();
        assert_eq!(
            discover_result(s).to_string(),
            format!(
                r#"{{"supportedVersions":{versions},"capabilities":{caps},"_meta":{{"io.modelcontextprotocol/serverInfo":{info}}},"instructions":"Be brief"}}"#
            )
        );
        assert_eq!(
            complete("tools/list", json!({"tools": []}), STATELESS).to_string(),
            format!(r#"{{"tools":[],"resultType":"complete","ttlMs":{LIST_TTL_MS},"cacheScope":"private"}}"#)
        );
        assert_eq!(
            resource_not_found("u://x", STATELESS).reply(json!(1)).to_string(),
            r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Resource not found: u://x","data":{"uri":"u://x"}}}"#
        );
    }

    #[test]
    fn stateless_results_say_their_type_and_cache_life() {
        let g = gw();
        let s = &g.servers[0];
        let list = reply(handle(&g, s, req("tools/list", json!({})), STATELESS));
        assert_eq!(list["result"]["resultType"], json!("complete"));
        assert_eq!(
            (list["result"]["ttlMs"].clone(), list["result"]["cacheScope"].clone()),
            (json!(60_000), json!("private"))
        );
        let call = reply(handle(&g, s, req("tools/call", json!({"name": "t1"})), STATELESS));
        assert_eq!(call["result"]["resultType"], json!("complete"));
        assert!(call["result"].get("ttlMs").is_none());
        let legacy = reply(handle(&g, s, req("tools/list", json!({})), LEGACY));
        assert!(legacy["result"].get("resultType").is_none(), "legacy results are as they were");
        let d = reply(handle(&g, s, req("server/discover", json!({})), STATELESS));
        assert_eq!(d["result"]["supportedVersions"][4], json!("2026-07-28"));
        assert_eq!(d["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], json!("s"));
        assert_eq!(d["result"]["capabilities"]["tools"], json!({"listChanged": false}));
        for removed in ["ping", "initialize", "logging/setLevel", "resources/subscribe"] {
            assert_eq!(reply(handle(&g, s, req(removed, json!({})), STATELESS))["error"]["code"], json!(-32601));
        }
        assert_eq!(reply(handle(&g, s, req("server/discover", json!({})), LEGACY))["error"]["code"], json!(-32601));
    }

    #[test]
    fn list_pages_are_written_from_each_tools_text_serialised_once() {
        let g = Gateway::from_config_str(
            "toolsPageSize: 2\nservers:\n- name: s\n  tools:\n  - {name: a, title: A, description: 'say \"hi\"', \
             args: [{name: city, type: string, required: true}], responseTemplate: {body: x}}\n  \
             - {name: b, description: d, annotations: {readOnlyHint: true}, responseTemplate: {body: x}}\n  \
             - {name: c, description: d, responseTemplate: {body: x}}\n",
        )
        .unwrap();
        let s = &g.servers[0];
        let Handled::Text(text) = handle(&g, s, req("tools/list", json!({})), STATELESS) else {
            panic!("a list page is written as text");
        };
        let page: Value = serde_json::from_str(&text).unwrap();
        let listed: Vec<Value> = s.tools[..2].iter().map(Tool::listing).collect();
        assert_eq!(page["result"]["tools"], Value::Array(listed));
        assert_eq!(page["jsonrpc"], json!("2.0"));
        assert_eq!(page["id"], json!(1));
        assert_eq!(page["result"]["resultType"], json!("complete"));
        assert_eq!(page["result"]["nextCursor"], json!(encode_cursor("tools", 2)));
        // The text is the tool's own, kept: the same bytes serve the next page request.
        assert!(std::ptr::eq(s.tools[0].listing_json(), s.tools[0].listing_json()));
        assert!(text.contains(s.tools[0].listing_json()));
        let last = reply(handle(&g, s, req("tools/list", json!({"cursor": encode_cursor("tools", 2)})), LEGACY));
        assert_eq!(last["result"], json!({"tools": [s.tools[2].listing()]}));
    }

    #[test]
    fn paginates_tools_with_opaque_cursors() {
        let g = gw();
        let s = &g.servers[0];
        let mut names = Vec::new();
        let mut cursor = Value::Null;
        for _ in 0..5 {
            let r = reply(handle(&g, s, req("tools/list", json!({"cursor": cursor})), LEGACY));
            names.extend(
                r["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()),
            );
            cursor = r["result"].get("nextCursor").cloned().unwrap_or(Value::Null);
            if cursor.is_null() {
                break;
            }
        }
        assert_eq!(names, ["t0", "t1", "t2", "t3", "t4", "t5", "t6"]);
        let bad = reply(handle(&g, s, req("tools/list", json!({"cursor": "nope"})), LEGACY));
        assert_eq!(bad["error"]["code"], json!(jsonrpc::INVALID_PARAMS));
    }

    const PROMPTS_AND_RESOURCES: &str = r#"
servers:
- name: s
  upstream: {cluster: api}
  description: A test server
  prompts:
  - name: greet
    description: Greets
    arguments: [{name: who, required: true, completions: [Ada, Alan, Grace]}]
    messages: [{role: user, text: "Hello {{ args.who }}"}]
  resources:
  - {uri: "test://text", name: text, mimeType: text/plain, text: hi}
  resourceTemplates:
  - uriTemplate: "users://{id}"
    name: user
    arguments: [{name: id, enum: ["1", "2"]}]
    requestTemplate: {url: "/users/{{ args.id }}"}
- name: bare
  resources: [{uri: "test://x", name: x, text: x}]
"#;

    #[test]
    fn prompts_resources_and_completion_in_both_eras() {
        let g = Gateway::from_config_str(PROMPTS_AND_RESOURCES).unwrap();
        let s = &g.servers[0];
        assert_eq!(
            s.capabilities,
            json!({"prompts": {"listChanged": false}, "resources": {"listChanged": false}, "completions": {}})
        );
        assert_eq!(initialize_result(s, LEGACY)["serverInfo"]["description"], json!("A test server"));
        for rev in [LEGACY, STATELESS] {
            let list = reply(handle(&g, s, req("prompts/list", json!({})), rev));
            assert_eq!(list["result"]["prompts"][0]["name"], json!("greet"));
            let got =
                reply(handle(&g, s, req("prompts/get", json!({"name": "greet", "arguments": {"who": "Ada"}})), rev));
            assert_eq!(got["result"]["messages"][0]["content"]["text"], json!("Hello Ada"));
            let read = reply(handle(&g, s, req("resources/read", json!({"uri": "test://text"})), rev));
            assert_eq!(read["result"]["contents"][0]["text"], json!("hi"));
            let templates = reply(handle(&g, s, req("resources/templates/list", json!({})), rev));
            assert_eq!(templates["result"]["resourceTemplates"][0]["uriTemplate"], json!("users://{id}"));
            let c = reply(handle(
                &g,
                s,
                req(
                    "completion/complete",
                    json!({"ref": {"type": "ref/prompt", "name": "greet"}, "argument": {"name": "who", "value": "al"}}),
                ),
                rev,
            ));
            assert_eq!(c["result"]["completion"]["values"], json!(["Alan"]));
            let c = reply(handle(
                &g,
                s,
                req(
                    "completion/complete",
                    json!({"ref": {"type": "ref/resource", "uri": "users://{id}"}, "argument": {"name": "id", "value": ""}}),
                ),
                rev,
            ));
            assert_eq!(c["result"]["completion"]["values"], json!(["1", "2"]));
            let bad_context = json!({"ref": {"type": "ref/resource", "uri": "users://{id}"},
                "argument": {"name": "id", "value": ""}, "context": {"arguments": "id=1"}});
            let c = reply(handle(&g, s, req("completion/complete", bad_context), rev));
            assert_eq!(c["error"]["code"], json!(-32602), "{c}");
            let missing = reply(handle(&g, s, req("resources/read", json!({"uri": "test://nope"})), rev));
            let code = if rev.is_stateless() { -32602 } else { -32002 };
            assert_eq!(missing["error"]["code"], json!(code));
            assert_eq!(missing["error"]["data"]["uri"], json!("test://nope"));
            assert_eq!(reply(handle(&g, s, req("tools/list", json!({})), rev))["error"]["code"], json!(-32601));
            let bad = reply(handle(&g, s, req("prompts/get", json!({"name": "greet"})), rev));
            assert_eq!(bad["error"]["code"], json!(-32602));
            assert_eq!(
                reply(handle(&g, s, req("prompts/get", json!({"name": "x"})), rev))["error"]["code"],
                json!(-32602)
            );
        }
        let stateless = reply(handle(&g, s, req("resources/list", json!({})), STATELESS));
        assert_eq!(
            (stateless["result"]["ttlMs"].clone(), stateless["result"]["resultType"].clone()),
            (json!(60_000), json!("complete"))
        );
        let read = reply(handle(&g, s, req("resources/read", json!({"uri": "test://text"})), STATELESS));
        assert_eq!(read["result"]["cacheScope"], json!("private"));
        assert_eq!(
            reply(handle(&g, s, req("resources/subscribe", json!({"uri": "test://text"})), LEGACY))["result"],
            json!({})
        );
        assert_eq!(
            reply(handle(&g, s, req("resources/subscribe", json!({"uri": "test://text"})), STATELESS))["error"]["code"],
            json!(-32601)
        );
        match handle(&g, s, req("resources/read", json!({"uri": "users://2"})), LEGACY) {
            Handled::Call { call: Pending::Resource(uri, _), request, .. } => {
                assert_eq!((uri.as_str(), request.path.as_str()), ("users://2", "/users/2"))
            }
            other => panic!("expected an upstream read, got {other:?}"),
        }
        let bare = &g.servers[1];
        assert_eq!(bare.capabilities, json!({"resources": {"listChanged": false}}));
        let c = reply(handle(&g, bare, req("completion/complete", json!({})), LEGACY));
        assert_eq!(c["error"]["code"], json!(-32601), "no completions declared, none served");
        assert_eq!(reply(handle(&g, bare, req("prompts/list", json!({})), STATELESS))["error"]["code"], json!(-32601));
    }

    #[test]
    fn methods_and_errors() {
        let g = gw();
        let s = &g.servers[0];
        assert_eq!(reply(handle(&g, s, req("ping", json!({})), LEGACY))["result"], json!({}));
        assert_eq!(reply(handle(&g, s, req("nope", json!({})), LEGACY))["error"]["code"], json!(-32601));
        assert_eq!(
            reply(handle(&g, s, req("tools/call", json!({"name": "zz"})), LEGACY))["error"]["code"],
            json!(-32602)
        );
        assert_eq!(reply(handle(&g, s, req("tools/call", json!({"name": 3})), LEGACY))["error"]["code"], json!(-32602));
        let r = reply(handle(&g, s, req("tools/call", json!({"name": "t2"})), LEGACY));
        assert_eq!(r["result"]["content"][0]["text"], json!("r2"));
        assert!(matches!(
            handle(&g, s, Message::Notification { method: "x".into(), params: None }, LEGACY),
            Handled::Silent
        ));
    }
}
