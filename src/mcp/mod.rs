//! MCP methods over JSON-RPC: initialize, server/discover, ping, tools/list and tools/call, at every
//! revision ([`Revision`]).
//!
//! Each message is handled on its own and yields a reply, nothing, or a pending tool call; the transport
//! decides how replies travel. Results of the stateless revision carry `resultType`, and list results also
//! `ttlMs` and `cacheScope` ([`complete`]).

pub mod revision;

pub use revision::Revision;

use crate::gateway::{Gateway, Server};
use crate::jsonrpc::{self, Message};
use crate::tool::{Prepared, Tool};
use crate::upstream::UpstreamRequest;
use base64::Engine;
use serde_json::{json, Value};

/// How long a stateless client may cache a list or discovery result. The tools come from the plugin
/// config, which changes only when Envoy reloads it.
pub const LIST_TTL_MS: u64 = 60_000;

/// Methods the stateless revision removed (its changelog): a request for one is a method not found, while
/// a session of the handshake era keeps them.
const REMOVED_IN_2026: [&str; 5] =
    ["initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"];

/// The outcome of one message.
#[derive(Debug)]
pub enum Handled {
    Reply(Value),
    /// Notifications and client responses get no reply.
    Silent,
    /// A tool call that needs the upstream; its reply is built by [`finish_call`].
    Call {
        id: Value,
        tool: String,
        request: Box<UpstreamRequest>,
        args: Value,
    },
}

fn server_info(server: &Server) -> Value {
    let mut info = json!({"name": server.name, "version": server.version});
    if let Some(t) = &server.title {
        info["title"] = json!(t);
    }
    info
}

/// What the server offers; computed from what it serves.
fn capabilities() -> Value {
    json!({"tools": {"listChanged": false}})
}

/// The `initialize` result for a server at a negotiated revision.
pub fn initialize_result(server: &Server, version: Revision) -> Value {
    let mut r = json!({
        "protocolVersion": version.as_str(),
        "capabilities": capabilities(),
        "serverInfo": server_info(server),
    });
    if let Some(i) = &server.instructions {
        r["instructions"] = json!(i);
    }
    r
}

/// The `server/discover` result of the stateless revision: what `initialize` told a legacy client.
pub fn discover_result(server: &Server) -> Value {
    let mut r = json!({
        "supportedVersions": Revision::all_names(),
        "capabilities": capabilities(),
        "_meta": {"io.modelcontextprotocol/serverInfo": server_info(server)},
    });
    if let Some(i) = &server.instructions {
        r["instructions"] = json!(i);
    }
    r
}

/// Completes a result for the revision it answers: at the stateless revision every result says its
/// `resultType`, and list and discovery results how long they may be cached, and by whom (`private`: a
/// listing may one day depend on who asks).
pub fn complete(method: &str, mut result: Value, revision: Revision) -> Value {
    if !revision.is_stateless() {
        return result;
    }
    if let Some(obj) = result.as_object_mut() {
        obj.entry("resultType").or_insert_with(|| json!("complete"));
        if matches!(method, "server/discover" | "tools/list") {
            obj.insert("ttlMs".into(), json!(LIST_TTL_MS));
            obj.insert("cacheScope".into(), json!("private"));
        }
    }
    result
}

/// Handles one message (everything except a legacy `initialize`, which opens a session).
pub fn handle(gw: &Gateway, server: &Server, msg: Message, revision: Revision) -> Handled {
    let (id, method, params) = match msg {
        Message::Request { id, method, params } => (id, method, params),
        Message::Notification { .. } | Message::Response => return Handled::Silent,
    };
    let not_found =
        |id| Handled::Reply(jsonrpc::error(id, jsonrpc::METHOD_NOT_FOUND, format!("Method not found: {method}")));
    if revision.is_stateless() && REMOVED_IN_2026.contains(&method.as_str()) {
        return not_found(id);
    }
    let Some(p) = jsonrpc::params_object(&params) else {
        return Handled::Reply(jsonrpc::error(id, jsonrpc::INVALID_PARAMS, "params must be an object"));
    };
    let done = |id, result| Handled::Reply(jsonrpc::result(id, complete(&method, result, revision)));
    match method.as_str() {
        "ping" => done(id, json!({})),
        "initialize" => {
            Handled::Reply(jsonrpc::error(id, jsonrpc::INVALID_REQUEST, "the session is already initialized"))
        }
        "server/discover" if revision.is_stateless() => done(id, discover_result(server)),
        "tools/list" => match list_tools(gw, server, p.get("cursor")) {
            Ok(r) => done(id, r),
            Err(e) => Handled::Reply(jsonrpc::error(id, jsonrpc::INVALID_PARAMS, e)),
        },
        "tools/call" => {
            let Some(name) = p.get("name").and_then(Value::as_str) else {
                return Handled::Reply(jsonrpc::error(id, jsonrpc::INVALID_PARAMS, "tools/call needs a string `name`"));
            };
            let Some(tool) = server.tool(name) else {
                return Handled::Reply(jsonrpc::error(id, jsonrpc::INVALID_PARAMS, format!("Unknown tool: {name}")));
            };
            if revision.is_stateless() {
                if let Some(missing) = missing_capabilities(tool, p) {
                    return Handled::Reply(jsonrpc::error_with_data(
                        id,
                        crate::transport::stateless::MISSING_CLIENT_CAPABILITY,
                        format!("Tool {name} needs client capabilities the request does not declare"),
                        json!({"requiredCapabilities": missing}),
                    ));
                }
            }
            match tool.prepare(&gw.templates, &server.config, p.get("arguments")) {
                Prepared::Done(result) => done(id, result),
                Prepared::Upstream(request, args) => {
                    Handled::Call { id, tool: name.to_string(), request: Box::new(request), args }
                }
            }
        }
        _ => not_found(id),
    }
}

/// The capabilities a tool requires that the request's `_meta` does not declare (stateless revision: the
/// client declares them on every request).
fn missing_capabilities(tool: &Tool, params: &serde_json::Map<String, Value>) -> Option<Value> {
    let required = tool.required_client_capabilities.as_ref()?;
    let declared = params.get("_meta").and_then(|m| m.get("io.modelcontextprotocol/clientCapabilities"));
    let missing: serde_json::Map<String, Value> = required
        .iter()
        .filter(|(k, _)| declared.and_then(|d| d.get(k.as_str())).is_none())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (!missing.is_empty()).then_some(Value::Object(missing))
}

/// Builds the reply of a tool call from the upstream answer.
pub fn finish_call(
    gw: &Gateway,
    server: &Server,
    id: Value,
    tool: &str,
    args: &Value,
    outcome: crate::upstream::UpstreamResult,
    revision: Revision,
) -> Value {
    match server.tool(tool) {
        Some(t) => {
            let result = t.finish(&gw.templates, &server.config, args, outcome);
            jsonrpc::result(id, complete("tools/call", result, revision))
        }
        None => jsonrpc::error(id, jsonrpc::INTERNAL_ERROR, "the tool disappeared during the call"),
    }
}

fn list_tools(gw: &Gateway, server: &Server, cursor: Option<&Value>) -> Result<Value, String> {
    let start = match cursor {
        None | Some(Value::Null) => 0,
        Some(Value::String(c)) => decode_cursor(c).filter(|s| *s <= server.tools.len()).ok_or("invalid cursor")?,
        Some(_) => return Err("the cursor must be a string".into()),
    };
    let end = (start + gw.page_size).min(server.tools.len());
    let tools: Vec<Value> = server.tools[start..end].iter().map(Tool::listing).collect();
    let mut r = json!({ "tools": tools });
    if end < server.tools.len() {
        r["nextCursor"] = json!(encode_cursor(end));
    }
    Ok(r)
}

fn encode_cursor(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("tools:{offset}"))
}

fn decode_cursor(c: &str) -> Option<usize> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).ok()?;
    std::str::from_utf8(&raw).ok()?.strip_prefix("tools:")?.parse().ok()
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
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    const LEGACY: Revision = Revision::V2025_11_25;
    const STATELESS: Revision = Revision::V2026_07_28;

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
