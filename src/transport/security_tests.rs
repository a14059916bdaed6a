//! Security schemes through the transport and the driver: what credential reaches the upstream for what a
//! client presents, in our shape and Higress's, and the config header Higress trusts.

use super::*;
use crate::driver::test_host::TestHost;
use serde_json::json;
use std::cell::RefCell;

const OURS: &str = r#"
servers:
  - name: s
    upstream: {cluster: api}
    securitySchemes:
      - {id: client, type: http, scheme: bearer}
      - {id: key, type: apiKey, in: header, name: X-Api-Key, defaultCredential: operator-key}
      - {id: basic, type: http, scheme: basic, defaultCredential: "op:pw"}
      - {id: qkey, type: apiKey, in: query, name: key}
    defaultUpstreamSecurity: {id: key}
    tools:
      - name: passes
        description: the client's bearer token becomes the upstream key
        security: {id: client, passthrough: true}
        requestTemplate: {url: /a}
      - name: reads
        description: the client's token is read, not passed
        security: {id: client}
        requestTemplate: {url: /b}
      - name: own
        description: the tool's own upstream scheme
        requestTemplate: {url: /c, security: {id: basic}}
      - name: query
        description: a query key passed on as a basic token
        security: {id: qkey, passthrough: true}
        requestTemplate: {url: /d, security: {id: basic}}
"#;

fn head(path: &str, headers: &[(&str, &str)]) -> RequestHead {
    let mut h: Vec<(String, String)> = vec![
        ("content-type".into(), "application/json".into()),
        ("accept".into(), "application/json, text/event-stream".into()),
        ("mcp-protocol-version".into(), "2025-06-18".into()),
    ];
    h.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    RequestHead { method: "POST".into(), path: path.into(), headers: h.into(), client_address: None, jwt: None }
}

/// Calls `tool` over a relayed (sessionless) request and returns the upstream request's headers and path.
fn upstream_of(gw: &Gateway, tool: &str, path: &str, headers: &[(&str, &str)]) -> (Vec<(String, String)>, String) {
    let seen = RefCell::new(None);
    let body =
        format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#);
    let path = format!("/mcp-servers/s?sessionId=x{path}");
    let r = TestHost::new().send(gw, head(&path, headers), &body, &|req| {
        *seen.borrow_mut() = Some((req.headers.clone(), req.path.clone()));
        UpstreamResult::Response { status: 200, headers: vec![], body: b"ok".to_vec() }
    });
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    seen.into_inner().expect("an upstream request")
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
}

#[test]
fn downstream_credentials_pass_through_only_when_told() {
    let gw = Gateway::from_config_str(OURS).unwrap();
    let bearer = [("authorization", "Bearer client-token"), ("cookie", "c=1")];
    // passthrough: the client's token is the upstream apiKey (defaultUpstreamSecurity); nothing else of it.
    let (h, _) = upstream_of(&gw, "passes", "", &bearer);
    assert_eq!(header(&h, "x-api-key"), ["client-token"]);
    assert!(header(&h, "authorization").is_empty() && header(&h, "cookie").is_empty(), "{h:?}");
    // Without a credential from the client, the configured one (Higress's order).
    let (h, _) = upstream_of(&gw, "passes", "", &[]);
    assert_eq!(header(&h, "x-api-key"), ["operator-key"]);
    // A Basic header is no bearer credential.
    let (h, _) = upstream_of(&gw, "passes", "", &[("authorization", "Basic dTpw")]);
    assert_eq!(header(&h, "x-api-key"), ["operator-key"]);
    // Read but not passed: the operator's credential, and the client's never forwarded.
    let (h, _) = upstream_of(&gw, "reads", "", &bearer);
    assert_eq!((header(&h, "x-api-key"), header(&h, "authorization")), (vec!["operator-key"], vec![]));
    // The tool's own upstream scheme wins over the server's default.
    let (h, _) = upstream_of(&gw, "own", "", &bearer);
    assert_eq!((header(&h, "authorization"), header(&h, "x-api-key")), (vec!["Basic b3A6cHc="], vec![]));
    // A query credential, decoded, then sent as the upstream basic token; the client's query stays behind.
    let (h, path) = upstream_of(&gw, "query", "&key=abc%3D", &[]);
    assert_eq!((header(&h, "authorization"), path.as_str()), (vec!["Basic abc="], "/d"));
}

#[test]
fn the_clients_authorization_goes_upstream_only_with_passthrough_auth_header() {
    let config = |flag: bool| {
        format!(
            "server:\n  name: s\n  templateDialect: jinja\n  passthroughAuthHeader: {flag}\n  securitySchemes: [{{id: k, type: apiKey, in: header, name: X-Key}}]\n\
             tools:\n  - name: plain\n    description: d\n    requestTemplate: {{url: /a}}\n    upstream: {{cluster: api}}\n\
             \x20 - name: keyed\n    description: d\n    security: {{id: k}}\n    requestTemplate: {{url: /b}}\n    upstream: {{cluster: api}}\n"
        )
    };
    let auth = [("authorization", "Bearer t"), ("x-key", "k")];
    let gw = Gateway::from_config_str(&config(false)).unwrap();
    for tool in ["plain", "keyed"] {
        let (h, _) = upstream_of(&gw, tool, "", &auth);
        assert!(header(&h, "authorization").is_empty() && header(&h, "x-key").is_empty(), "{tool}: {h:?}");
    }
    let gw = Gateway::from_config_str(&config(true)).unwrap();
    for tool in ["plain", "keyed"] {
        let (h, _) = upstream_of(&gw, tool, "", &auth);
        assert_eq!(header(&h, "authorization"), ["Bearer t"], "{tool}");
        assert!(header(&h, "x-key").is_empty(), "{tool}: the apiKey read downstream is never forwarded");
    }
}

#[test]
fn security_errors_are_located_at_load() {
    for (tool, field, why) in [
        ("security: {id: nope}", "security", "no securitySchemes entry"),
        ("security: {id: client, passthrough: true}", "security", "passthrough needs an upstream"),
        (
            "requestTemplate: {url: /x, security: {id: client, passthrough: true}}",
            "requestTemplate.security",
            "downstream",
        ),
        ("security: {id: client, credential: x}", "security", "credential belongs"),
    ] {
        let text = format!(
            "servers:\n  - name: s\n    upstream: {{cluster: c}}\n    securitySchemes: [{{id: client, type: http, scheme: bearer}}]\n    tools:\n      - name: t\n        requestTemplate: {{url: /x}}\n        {tool}\n"
        )
        .replace("requestTemplate: {url: /x}\n        requestTemplate", "requestTemplate");
        let e = Gateway::from_config_str(&text).unwrap_err();
        assert_eq!(
            (e.server.as_deref(), e.tool.as_deref(), e.field.as_str()),
            (Some("s"), Some("t"), field),
            "{tool}: {e}"
        );
        assert!(e.message.contains(why), "{tool}: {e}");
    }
    let e = Gateway::from_config_str(
        "servers: [{name: s, upstream: {cluster: c}, defaultUpstreamSecurity: {id: x}, tools: [{name: t, requestTemplate: {url: /}}]}]",
    )
    .unwrap_err();
    assert!(e.field.starts_with("defaultUpstreamSecurity"), "{e}");
}

#[test]
fn the_higress_config_header_is_refused() {
    let gw = Gateway::from_config_str(OURS).unwrap();
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let config = crate::b64::STANDARD.encode(r#"{"key":"other"}"#);
    let r = TestHost::new().send(&gw, head("/mcp-servers/s?sessionId=x", &[(CONFIG_HEADER, &config)]), ping, &|_| {
        panic!("no upstream call")
    });
    assert_eq!(r.status, 400);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("x-higress-mcpserver-config"), "{body}");
    assert_eq!(body["error"]["code"], json!(jsonrpc::INVALID_REQUEST));
    assert!(body["error"]["message"].as_str().unwrap().contains("trustConfigHeader"), "{body}");
    assert!(Gateway::from_config_str(&format!("trustConfigHeader: false\n{OURS}")).is_ok());
    // Trusting it is a choice the operator is told the weight of at load (crate::config_header serves it).
    let trusting = Gateway::from_config_str(&format!("trustConfigHeader: true\n{OURS}")).unwrap();
    assert!(trusting.notices.iter().any(|n| n.contains("whoever can set that header")), "{:?}", trusting.notices);
}
