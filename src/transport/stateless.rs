//! The request rules of the stateless revision (2026-07-28) over Streamable HTTP.
//!
//! A stateless request names its revision and the client's capabilities in `params._meta`, and mirrors what
//! an intermediary needs to route it in headers: `MCP-Protocol-Version`, `Mcp-Method`, and `Mcp-Name` (the
//! tool or prompt name, or the resource URI). A header that disagrees with the body is refused (-32020), so
//! that what a proxy routed on is what the server executes.

use super::HttpResponse;
use crate::json::object;
use crate::jsonrpc;
use crate::mcp::Revision;
use serde_json::Value;

/// A request's headers disagree with its body (or one is missing).
pub const HEADER_MISMATCH: i64 = -32020;
/// A request needs a client capability the client did not declare.
pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
/// A request names a revision the server does not speak.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

const META_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";

/// The headers these rules read, taken from the request head.
#[derive(Debug, Clone, Default)]
pub struct McpHeaders {
    pub protocol_version: Option<String>,
    pub method: Option<String>,
    pub name: Option<String>,
}

/// The revision a request names in its `_meta`, if it names one.
pub fn meta_version(params: Option<&Value>) -> Option<&str> {
    params?.get("_meta")?.get(META_VERSION)?.as_str()
}

/// Whether a request is of the stateless era: it names its revision in `_meta`, or its header names a
/// stateless revision (and then its missing `_meta` is its error).
pub fn is_stateless(params: Option<&Value>, headers: &McpHeaders) -> bool {
    meta_version(params).is_some()
        || headers.protocol_version.as_deref().and_then(Revision::parse).is_some_and(Revision::is_stateless)
}

/// The answer to a request whose revision the server does not speak (either era).
pub fn unsupported_version(id: Value, requested: &str) -> HttpResponse {
    let mut names = Vec::new();
    for name in Revision::all_names() {
        names.push(Value::from(name));
    }
    let supported = Value::Array(names);
    HttpResponse::json(
        400,
        &jsonrpc::error_with_data(
            id,
            UNSUPPORTED_PROTOCOL_VERSION,
            format!("Unsupported protocol version: {requested}"),
            object(vec![("supported", supported), ("requested", Value::from(requested))]),
        ),
    )
}

/// What a request of this method must carry in `Mcp-Name`.
fn routed_name<'a>(method: &str, params: Option<&'a Value>) -> Option<&'a str> {
    let key = match method {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return None,
    };
    params?.get(key)?.as_str()
}

/// Checks a stateless request against its headers; the revision it may be served at, or the refusal.
pub fn check(headers: &McpHeaders, id: &Value, method: &str, params: Option<&Value>) -> Result<Revision, HttpResponse> {
    let refuse = |code: i64, message: String| Err(HttpResponse::error(400, id.clone(), code, message));
    let Some(header) = headers.protocol_version.as_deref() else {
        return refuse(HEADER_MISMATCH, "Missing MCP-Protocol-Version header".into());
    };
    let meta = params.and_then(|p| p.get("_meta"));
    let mut missing: Vec<&str> = Vec::new();
    for k in [META_VERSION, META_CAPABILITIES] {
        if meta.and_then(|m| m.get(k)).is_none() {
            missing.push(k);
        }
    }
    if !missing.is_empty() {
        return refuse(jsonrpc::INVALID_PARAMS, format!("Invalid params: _meta lacks {}", missing.join(", ")));
    }
    let named = meta_version(params).unwrap_or_default();
    if named != header {
        return refuse(
            HEADER_MISMATCH,
            format!("MCP-Protocol-Version header {header} does not match _meta protocolVersion {named}"),
        );
    }
    let Some(revision) = Revision::parse(named).filter(|r| r.is_stateless()) else {
        return Err(unsupported_version(id.clone(), named));
    };
    // Header values are compared exactly (they are case-sensitive), after the optional whitespace HTTP
    // allows around a field value.
    if headers.method.as_deref().map(str::trim) != Some(method) {
        let got = headers.method.as_deref().map_or("missing".to_string(), |m| format!("'{}'", m.trim()));
        return refuse(
            HEADER_MISMATCH,
            format!("Mcp-Method header ({got}) does not match the body's method '{method}'"),
        );
    }
    if let Some(name) = routed_name(method, params) {
        if headers.name.as_deref().map(str::trim) != Some(name) {
            let got = headers.name.as_deref().map_or("missing".to_string(), |n| format!("'{}'", n.trim()));
            return refuse(HEADER_MISMATCH, format!("Mcp-Name header ({got}) does not match the body's '{name}'"));
        }
    }
    Ok(revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(version: Option<&str>, method: Option<&str>, name: Option<&str>) -> McpHeaders {
        McpHeaders {
            protocol_version: version.map(String::from),
            method: method.map(String::from),
            name: name.map(String::from),
        }
    }

    fn params(version: &str, extra: Value) -> Value {
        let mut p = json!({"_meta": {META_VERSION: version, META_CAPABILITIES: {}}});
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    }

    fn code(r: Result<Revision, HttpResponse>) -> (u16, i64) {
        let r = r.unwrap_err();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["id"], json!(7), "errors answer the request");
        (r.status, v["error"]["code"].as_i64().unwrap())
    }

    #[test]
    fn headers_must_mirror_the_body() {
        let id = json!(7);
        let call = params("2026-07-28", json!({"name": "t"}));
        let ok = headers(Some("2026-07-28"), Some("tools/call"), Some(" t\t"));
        assert_eq!(check(&ok, &id, "tools/call", Some(&call)).unwrap(), Revision::V2026_07_28);
        let cases = [
            (headers(None, Some("tools/call"), Some("t")), HEADER_MISMATCH),
            (headers(Some("2026-07-28"), None, Some("t")), HEADER_MISMATCH),
            (headers(Some("2026-07-28"), Some("tools/list"), Some("t")), HEADER_MISMATCH),
            (headers(Some("2026-07-28"), Some("TOOLS/CALL"), Some("t")), HEADER_MISMATCH),
            (headers(Some("2026-07-28"), Some("tools/call"), None), HEADER_MISMATCH),
            (headers(Some("2026-07-28"), Some("tools/call"), Some("other")), HEADER_MISMATCH),
            (headers(Some("2025-11-25"), Some("tools/call"), Some("t")), HEADER_MISMATCH),
        ];
        for (h, expected) in cases {
            assert_eq!(code(check(&h, &id, "tools/call", Some(&call))), (400, expected), "{h:?}");
        }
        let no_caps = json!({"_meta": {META_VERSION: "2026-07-28"}, "name": "t"});
        assert_eq!(code(check(&ok, &id, "tools/call", Some(&no_caps))), (400, jsonrpc::INVALID_PARAMS));
        assert_eq!(code(check(&ok, &id, "tools/call", None)), (400, jsonrpc::INVALID_PARAMS));
        let future = params("2099-01-01", json!({"name": "t"}));
        let h = headers(Some("2099-01-01"), Some("tools/call"), Some("t"));
        assert_eq!(code(check(&h, &id, "tools/call", Some(&future))), (400, UNSUPPORTED_PROTOCOL_VERSION));
        let list = params("2026-07-28", json!({}));
        let h = headers(Some("2026-07-28"), Some("tools/list"), None);
        assert!(check(&h, &id, "tools/list", Some(&list)).is_ok(), "no Mcp-Name for methods that name nothing");
    }

    #[test]
    fn the_era_is_the_requests() {
        let h = headers(None, None, None);
        assert!(is_stateless(Some(&params("2026-07-28", json!({}))), &h));
        assert!(!is_stateless(Some(&json!({"name": "t"})), &h));
        assert!(is_stateless(None, &headers(Some("2026-07-28"), None, None)));
        assert!(!is_stateless(None, &headers(Some("2025-11-25"), None, None)));
        let r = unsupported_version(json!(1), "2099-01-01");
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["error"]["data"]["supported"][4], json!("2026-07-28"));
        assert_eq!(v["error"]["data"]["requested"], json!("2099-01-01"));
    }
}
