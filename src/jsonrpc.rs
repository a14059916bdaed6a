//! JSON-RPC 2.0 messages: classification of incoming values and construction of replies.

use crate::json::object;
use serde_json::{Map, Value};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// A configured limit refused the request; the message names the limit (JSON-RPC's implementation-defined
/// server error range).
pub const LIMIT_EXCEEDED: i64 = -32000;

/// One incoming JSON-RPC message, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request {
        id: Value,
        method: String,
        params: Option<Value>,
    },
    Notification {
        method: String,
        params: Option<Value>,
    },
    /// A response from the client to a server-initiated request; accepted and ignored.
    Response,
}

impl Message {
    /// Classifies a JSON value; the error carries the id (when one could be read) and a reason.
    pub fn from_value(value: Value) -> Result<Message, (Value, String)> {
        let Value::Object(mut obj) = value else {
            return Err((Value::Null, "a JSON-RPC message must be an object".into()));
        };
        let id = obj.remove("id");
        let valid_id = match &id {
            None => true,
            Some(Value::String(_)) => true,
            Some(Value::Number(n)) => n.is_i64() || n.is_u64(),
            Some(_) => false,
        };
        let reply_id = if valid_id { id.clone().unwrap_or(Value::Null) } else { Value::Null };
        if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err((reply_id, "\"jsonrpc\" must be \"2.0\"".into()));
        }
        if !valid_id {
            return Err((reply_id, "\"id\" must be a string or an integer".into()));
        }
        match obj.remove("method") {
            Some(Value::String(method)) => {
                let params = obj.remove("params");
                if let Some(p) = &params {
                    if !p.is_object() && !p.is_array() {
                        return Err((reply_id, "\"params\" must be an object or an array".into()));
                    }
                }
                Ok(match id {
                    Some(id) => Message::Request { id, method, params },
                    None => Message::Notification { method, params },
                })
            }
            Some(_) => Err((reply_id, "\"method\" must be a string".into())),
            None if id.is_some() && (obj.contains_key("result") || obj.contains_key("error")) => Ok(Message::Response),
            None => Err((reply_id, "missing \"method\"".into())),
        }
    }
}

/// MCP 2025's code for a resource that does not exist; the stateless revision uses [`INVALID_PARAMS`] with
/// `data.uri` instead (SEP-2164).
pub const RESOURCE_NOT_FOUND_LEGACY: i64 = -32002;

/// An error a method answers with, before it knows the request's id.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> RpcError {
        RpcError { code, message: message.into(), data: None }
    }

    pub fn invalid_params(message: impl Into<String>) -> RpcError {
        RpcError::new(INVALID_PARAMS, message)
    }

    pub fn with_data(mut self, data: Value) -> RpcError {
        self.data = Some(data);
        self
    }

    /// The error reply to request `id`.
    pub fn reply(self, id: Value) -> Value {
        match self.data {
            Some(d) => error_with_data(id, self.code, self.message, d),
            None => error(id, self.code, self.message),
        }
    }
}

/// A successful reply.
pub fn result(id: Value, result: Value) -> Value {
    object(vec![("jsonrpc", Value::from("2.0")), ("id", id), ("result", result)])
}

/// A reply as the transport holds it until the answer is written: a tree, or JSON text written once
/// (list pages, whose listings are serialised once per tool instead of being copied as trees per page).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Tree(Value),
    Text(String),
    /// A successful reply, written around its id and result: the reply object is never built (tool calls).
    Result {
        id: Value,
        result: Value,
    },
}

impl Reply {
    /// The reply as a tree (parsed again for text: for tests and the CLI, not the request path).
    pub fn into_value(self) -> Value {
        match self {
            Reply::Tree(v) => v,
            Reply::Text(t) => serde_json::from_slice(t.as_bytes()).unwrap_or(Value::Null),
            Reply::Result { id, result: r } => result(id, r),
        }
    }

    /// A successful reply's result (not looked for in text replies: list pages).
    pub fn result(&self) -> Option<&Value> {
        match self {
            Reply::Tree(v) => v.get("result"),
            Reply::Result { result, .. } => Some(result),
            Reply::Text(_) => None,
        }
    }

    /// An error reply's error.
    pub fn error(&self) -> Option<&Value> {
        match self {
            Reply::Tree(v) => v.get("error"),
            _ => None,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Reply::Tree(v) => {
                let _ = serde_json::to_writer(&mut *out, v);
            }
            Reply::Text(t) => out.extend_from_slice(t.as_bytes()),
            Reply::Result { id, result } => {
                out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
                let _ = serde_json::to_writer(&mut *out, id);
                out.extend_from_slice(b",\"result\":");
                let _ = serde_json::to_writer(&mut *out, result);
                out.push(b'}');
            }
        }
    }
}

/// The body of an answer: one reply, or a batch's as an array.
pub fn write_replies(single: bool, replies: &[Reply]) -> Vec<u8> {
    let mut out = Vec::new();
    match (single, replies) {
        (true, [one, ..]) => one.write(&mut out),
        _ => {
            out.push(b'[');
            for (i, r) in replies.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                r.write(&mut out);
            }
            out.push(b']');
        }
    }
    out
}

/// A successful reply whose result is JSON text already (`result_json`, an object).
pub fn result_text(id: &Value, result_json: &str) -> String {
    let mut out = String::with_capacity(result_json.len() + 48);
    out.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
    out.push_str(&id.to_string());
    out.push_str(",\"result\":");
    out.push_str(result_json);
    out.push('}');
    out
}

/// An error reply.
pub fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    error_text(id, code, message.into())
}

/// [`error`] once its message is a `String` (one copy of the JSON building for every message type).
fn error_text(id: Value, code: i64, message: String) -> Value {
    error_reply(id, code, message, None)
}

/// An error reply carrying structured `data`.
pub fn error_with_data(id: Value, code: i64, message: impl Into<String>, data: Value) -> Value {
    error_reply(id, code, message.into(), Some(data))
}

/// The one builder of error replies (no `json!`: the id and data are moved in, not serialised again).
fn error_reply(id: Value, code: i64, message: String, data: Option<Value>) -> Value {
    let mut error = vec![("code", Value::from(code)), ("message", Value::from(message))];
    if let Some(d) = data {
        error.push(("data", d));
    }
    object(vec![("jsonrpc", Value::from("2.0")), ("id", id), ("error", object(error))])
}

/// The params object of a request, or an empty one; arrays (by-position params) are not used by MCP.
pub fn params_object(params: &Option<Value>) -> Option<&Map<String, Value>> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    match params {
        None => Some(EMPTY.get_or_init(Map::new)),
        Some(Value::Object(m)) => Some(m),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies_are_the_objects_json_built() {
        let data = json!({"k": [1, "two"]});
        assert_eq!(result(json!(7), data.clone()), json!({"jsonrpc": "2.0", "id": 7, "result": data}));
        assert_eq!(
            serde_json::to_string(&error(json!("i"), -32601, "no")).unwrap(),
            r#"{"jsonrpc":"2.0","id":"i","error":{"code":-32601,"message":"no"}}"#
        );
        assert_eq!(
            serde_json::to_string(&error_with_data(Value::Null, -32000, String::from("m"), data)).unwrap(),
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32000,"message":"m","data":{"k":[1,"two"]}}}"#
        );
    }

    /// The module reads JSON through one serde_json reader type (`from_slice`): a `from_str` outside tests
    /// instantiates the parser a second time (7.8 KB of wasm when the proxied relay's re-initialisation
    /// and `Reply::into_value` used it).
    #[test]
    fn the_module_parses_json_through_one_reader_type() {
        fn walk(dir: &std::path::Path, found: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().to_string();
                if path.is_dir() {
                    if name != "bin" {
                        walk(&path, found);
                    }
                } else if name.ends_with(".rs") && !name.ends_with("tests.rs") && name != "strategies.rs" {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let code = text.split("#[cfg(test)]").next().unwrap();
                    for reader in ["serde_json::from_str", "serde_json::from_reader", "Deserializer::from_str"] {
                        if code.contains(reader) {
                            found.push(format!("{}: {reader}", path.display()));
                        }
                    }
                }
            }
        }
        let mut found = Vec::new();
        walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
        assert!(found.is_empty(), "use serde_json::from_slice: {found:?}");
    }

    #[test]
    fn a_result_written_around_its_parts_is_the_reply_tree_written() {
        let (id, r) = (json!("a\"b"), json!({"content": [{"type": "text", "text": "x\ny"}], "isError": false}));
        let written = Reply::Result { id: id.clone(), result: r.clone() };
        assert_eq!(
            write_replies(true, std::slice::from_ref(&written)),
            serde_json::to_vec(&result(id.clone(), r.clone())).unwrap()
        );
        assert_eq!(written.result(), Some(&r));
        assert_eq!(written.into_value(), result(id, r));
    }

    #[test]
    fn replies_written_as_text_and_as_trees_make_one_body() {
        let text = Reply::Text(result_text(&json!("a"), r#"{"tools":[]}"#));
        let tree = Reply::Tree(error(json!(2), INVALID_PARAMS, "no"));
        let batch: Value = serde_json::from_slice(&write_replies(false, &[text.clone(), tree.clone()])).unwrap();
        assert_eq!(batch, json!([result(json!("a"), json!({"tools": []})), error(json!(2), INVALID_PARAMS, "no")]));
        assert_eq!(
            write_replies(true, std::slice::from_ref(&text)),
            serde_json::to_vec(&result(json!("a"), json!({"tools": []}))).unwrap()
        );
        assert_eq!(text.into_value(), result(json!("a"), json!({"tools": []})));
    }

    #[test]
    fn classifies_messages() {
        let r = Message::from_value(json!({"jsonrpc":"2.0","id":1,"method":"ping"})).unwrap();
        assert!(matches!(r, Message::Request { ref method, .. } if method == "ping"));
        let n = Message::from_value(json!({"jsonrpc":"2.0","method":"notifications/initialized"})).unwrap();
        assert!(matches!(n, Message::Notification { .. }));
        assert_eq!(Message::from_value(json!({"jsonrpc":"2.0","id":"a","result":{}})).unwrap(), Message::Response);
    }

    #[test]
    fn rejects_invalid_messages_keeping_the_id() {
        assert_eq!(Message::from_value(json!({"id":7,"method":"x"})).unwrap_err().0, json!(7));
        assert_eq!(Message::from_value(json!({"jsonrpc":"2.0","id":{},"method":"x"})).unwrap_err().0, Value::Null);
        assert!(Message::from_value(json!({"jsonrpc":"2.0","id":1.5,"method":"x"})).is_err());
        assert!(Message::from_value(json!({"jsonrpc":"2.0","id":1,"method":3})).is_err());
        assert!(Message::from_value(json!({"jsonrpc":"2.0","id":1,"method":"x","params":3})).is_err());
        assert!(Message::from_value(json!([1])).is_err());
        assert!(Message::from_value(json!({"jsonrpc":"2.0","id":1})).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::strategies::{hostile_string, json_number, json_value};
    use proptest::prelude::*;
    use serde_json::json;

    const KEYS: &[&str] = &["jsonrpc", "id", "method", "params", "result", "error", "name", "x"];

    /// Objects with every JSON-RPC member present or absent and of any type, biased towards the valid ones;
    /// and arbitrary JSON.
    fn message_like() -> impl Strategy<Value = Value> {
        let any_json = json_value(KEYS);
        let member =
            |valid: BoxedStrategy<Value>| prop::option::weighted(0.8, prop_oneof![3 => valid, 1 => json_value(KEYS)]);
        let version =
            prop_oneof![Just(json!("2.0")), Just(json!("1.0")), Just(json!(2.0)), Just(json!("2.0 "))].boxed();
        let id = prop_oneof![json_number(), hostile_string().prop_map(Value::from), Just(Value::Null)].boxed();
        let method =
            prop_oneof![Just(json!("ping")), Just(json!("tools/call")), hostile_string().prop_map(Value::from)].boxed();
        let params = prop_oneof![Just(json!({})), Just(json!([])), json_value(KEYS)].boxed();
        let outcome = prop_oneof![Just(json!({})), Just(json!({"code": 1, "message": "m"})), json_value(KEYS)].boxed();
        let shaped =
            (member(version), member(id), member(method), member(params), member(outcome.clone()), member(outcome))
                .prop_map(|(v, i, m, p, r, e)| {
                    let mut o = Map::new();
                    for (k, val) in
                        [("jsonrpc", v), ("id", i), ("method", m), ("params", p), ("result", r), ("error", e)]
                    {
                        if let Some(val) = val {
                            o.insert(k.into(), val);
                        }
                    }
                    Value::Object(o)
                });
        prop_oneof![4 => shaped, 1 => any_json]
    }

    proptest! {
        #![proptest_config(crate::strategies::cases(3000))]

        /// Guards the first thing every POST body goes through: any JSON value is classified (request,
        /// notification, response or error, never a panic) exactly as JSON-RPC 2.0 says, and an error keeps the
        /// request's id only when that id is valid, so a reply never echoes a forged id type.
        #[test]
        fn any_value_is_classified_by_the_rules(v in message_like()) {
            let obj = v.as_object();
            let get = |k: &str| obj.and_then(|o| o.get(k));
            let id = get("id");
            let id_ok = match id {
                None | Some(Value::String(_)) => true,
                Some(Value::Number(n)) => n.is_i64() || n.is_u64(),
                Some(_) => false,
            };
            let version_ok = get("jsonrpc") == Some(&json!("2.0"));
            let params_ok = get("params").is_none_or(|p| p.is_object() || p.is_array());
            let method = get("method").and_then(Value::as_str);
            let is_response = get("method").is_none() && id.is_some() && (get("result").is_some() || get("error").is_some());
            let valid = obj.is_some() && version_ok && id_ok && ((method.is_some() && params_ok) || is_response);
            match Message::from_value(v.clone()) {
                Ok(Message::Request { id: rid, method: m, params }) => {
                    prop_assert!(valid);
                    prop_assert_eq!(Some(&rid), id);
                    prop_assert_eq!(Some(m.as_str()), method);
                    prop_assert_eq!(params.as_ref(), get("params"));
                }
                Ok(Message::Notification { method: m, params }) => {
                    prop_assert!(valid && id.is_none());
                    prop_assert_eq!(Some(m.as_str()), method);
                    prop_assert_eq!(params.as_ref(), get("params"));
                }
                Ok(Message::Response) => prop_assert!(valid && is_response),
                Err((rid, why)) => {
                    prop_assert!(!valid, "a valid message was refused: {}", why);
                    prop_assert!(!why.is_empty());
                    let expected = if obj.is_some() && id_ok { id.cloned().unwrap_or(Value::Null) } else { Value::Null };
                    prop_assert_eq!(&rid, &expected);
                    // The error reply for it is JSON-RPC itself.
                    let reply = error(rid, INVALID_REQUEST, why);
                    prop_assert!(serde_json::to_string(&reply).is_ok_and(|t| serde_json::from_str::<Value>(&t).is_ok()));
                }
            }
        }
    }
}
