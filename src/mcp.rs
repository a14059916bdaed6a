//! MCP methods over JSON-RPC: version negotiation, initialize, ping, tools/list and tools/call.
//!
//! Each message is handled on its own and yields a reply, nothing, or a pending tool call; the transport
//! decides how replies travel.

use crate::gateway::{Gateway, Server};
use crate::jsonrpc::{self, Message};
use crate::tool::{Prepared, Tool};
use crate::upstream::UpstreamRequest;
use base64::Engine;
use serde_json::{json, Value};

/// Revisions reachable through the `initialize` handshake, oldest first.
pub const VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];
/// What the server answers when the client asks for a revision it does not know.
pub const LATEST: &str = "2025-11-25";

/// Picks the revision to speak: the client's if supported, else the latest.
pub fn negotiate(requested: Option<&str>) -> &'static str {
    requested.and_then(|r| VERSIONS.iter().find(|v| **v == r).copied()).unwrap_or(LATEST)
}

/// JSON-RPC batches exist in 2024-11-05 and 2025-03-26 and were removed in 2025-06-18.
pub fn allows_batch(version: &str) -> bool {
    matches!(version, "2024-11-05" | "2025-03-26")
}

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

/// The `initialize` result for a server at a negotiated revision.
pub fn initialize_result(server: &Server, version: &str) -> Value {
    let mut info = json!({"name": server.name, "version": server.version});
    if let Some(t) = &server.title {
        info["title"] = json!(t);
    }
    let mut r = json!({
        "protocolVersion": version,
        "capabilities": {"tools": {"listChanged": false}},
        "serverInfo": info,
    });
    if let Some(i) = &server.instructions {
        r["instructions"] = json!(i);
    }
    r
}

/// Handles one message of an established session (everything except `initialize`).
pub fn handle(gw: &Gateway, server: &Server, msg: Message) -> Handled {
    let (id, method, params) = match msg {
        Message::Request { id, method, params } => (id, method, params),
        Message::Notification { .. } | Message::Response => return Handled::Silent,
    };
    let Some(p) = jsonrpc::params_object(&params) else {
        return Handled::Reply(jsonrpc::error(id, jsonrpc::INVALID_PARAMS, "params must be an object"));
    };
    match method.as_str() {
        "ping" => Handled::Reply(jsonrpc::result(id, json!({}))),
        "initialize" => {
            Handled::Reply(jsonrpc::error(id, jsonrpc::INVALID_REQUEST, "the session is already initialized"))
        }
        "tools/list" => Handled::Reply(match list_tools(gw, server, p.get("cursor")) {
            Ok(r) => jsonrpc::result(id, r),
            Err(e) => jsonrpc::error(id, jsonrpc::INVALID_PARAMS, e),
        }),
        "tools/call" => {
            let Some(name) = p.get("name").and_then(Value::as_str) else {
                return Handled::Reply(jsonrpc::error(id, jsonrpc::INVALID_PARAMS, "tools/call needs a string `name`"));
            };
            let Some(tool) = server.tool(name) else {
                return Handled::Reply(jsonrpc::error(id, jsonrpc::INVALID_PARAMS, format!("Unknown tool: {name}")));
            };
            match tool.prepare(&gw.templates, &server.config, p.get("arguments")) {
                Prepared::Done(result) => Handled::Reply(jsonrpc::result(id, result)),
                Prepared::Upstream(request, args) => {
                    Handled::Call { id, tool: name.to_string(), request: Box::new(request), args }
                }
            }
        }
        _ => Handled::Reply(jsonrpc::error(id, jsonrpc::METHOD_NOT_FOUND, format!("Method not found: {method}"))),
    }
}

/// Builds the reply of a tool call from the upstream answer.
pub fn finish_call(
    gw: &Gateway,
    server: &Server,
    id: Value,
    tool: &str,
    args: &Value,
    outcome: crate::upstream::UpstreamResult,
) -> Value {
    match server.tool(tool) {
        Some(t) => jsonrpc::result(id, t.finish(&gw.templates, &server.config, args, outcome)),
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

    #[test]
    fn negotiates_versions() {
        assert_eq!(negotiate(Some("2025-03-26")), "2025-03-26");
        assert_eq!(negotiate(Some("1999-01-01")), LATEST);
        assert_eq!(negotiate(None), LATEST);
        assert!(allows_batch("2025-03-26") && !allows_batch("2025-06-18"));
    }

    #[test]
    fn paginates_tools_with_opaque_cursors() {
        let g = gw();
        let s = &g.servers[0];
        let mut names = Vec::new();
        let mut cursor = Value::Null;
        for _ in 0..5 {
            let r = reply(handle(&g, s, req("tools/list", json!({"cursor": cursor}))));
            names.extend(
                r["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()),
            );
            cursor = r["result"].get("nextCursor").cloned().unwrap_or(Value::Null);
            if cursor.is_null() {
                break;
            }
        }
        assert_eq!(names, ["t0", "t1", "t2", "t3", "t4", "t5", "t6"]);
        let bad = reply(handle(&g, s, req("tools/list", json!({"cursor": "nope"}))));
        assert_eq!(bad["error"]["code"], json!(jsonrpc::INVALID_PARAMS));
    }

    #[test]
    fn methods_and_errors() {
        let g = gw();
        let s = &g.servers[0];
        assert_eq!(reply(handle(&g, s, req("ping", json!({}))))["result"], json!({}));
        assert_eq!(reply(handle(&g, s, req("nope", json!({}))))["error"]["code"], json!(-32601));
        assert_eq!(reply(handle(&g, s, req("tools/call", json!({"name": "zz"}))))["error"]["code"], json!(-32602));
        assert_eq!(reply(handle(&g, s, req("tools/call", json!({"name": 3}))))["error"]["code"], json!(-32602));
        let r = reply(handle(&g, s, req("tools/call", json!({"name": "t2"}))));
        assert_eq!(r["result"]["content"][0]["text"], json!("r2"));
        assert!(matches!(handle(&g, s, Message::Notification { method: "x".into(), params: None }), Handled::Silent));
    }
}
