//! JSON-RPC 2.0 messages: classification of incoming values and construction of replies.

use serde_json::{json, Map, Value};

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
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error reply.
pub fn error(id: Value, code: i64, message: impl Into<String>) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into()}})
}

/// An error reply carrying structured `data`.
pub fn error_with_data(id: Value, code: i64, message: impl Into<String>, data: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message.into(), "data": data}})
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
