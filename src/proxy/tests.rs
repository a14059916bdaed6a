use super::*;
use crate::session::memory::MemoryEnv;
use serde_json::json;

/// An answer head without headers (the answer head is generic over how its strings are held).
const NO_HEADERS: &[(String, String)] = &[];

pub(super) const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

/// The `sessions:` line of a test config for `store` (`signed`, else the default local store).
pub(super) fn sessions(store: &str) -> String {
    match store {
        "signed" => format!("sessions: {{store: signed, signingKeys: ['{KEY}']}}\n"),
        _ => String::new(),
    }
}

fn gateway(store: &str, extra: &str) -> Gateway {
    let sessions = sessions(store);
    let cfg = format!(
        "{sessions}servers:\n- name: up\n  type: mcp-proxy\n  transport: http\n  mcpServerURL: http://backend:8000/mcp\n  timeout: 5000\n{extra}"
    );
    Gateway::from_config_str(&cfg).unwrap()
}

/// A host whose local session store is ready, at a fixed time.
pub(super) fn env() -> MemoryEnv {
    let mut env = MemoryEnv { now_ms: 1_000_000, ..Default::default() };
    crate::session::local::SESSIONS.prepare(&mut env.kv);
    crate::session::local::REVOKED.prepare(&mut env.kv);
    env
}

fn head(method: &str, headers: &[(&str, &str)]) -> RequestHead {
    let mut all = vec![
        (":authority".to_string(), "gw.example".to_string()),
        ("authorization".to_string(), "Bearer client-secret".to_string()),
        ("cookie".to_string(), "c=1".to_string()),
        ("accept".to_string(), "application/json, text/event-stream".to_string()),
    ];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    RequestHead {
        method: crate::transport::method(method),
        path: "/mcp-servers/up".into(),
        headers: all.into(),
        client_address: None,
        jwt: None,
    }
}

/// The relay and the request head the backend gets (the client's, with the edits applied).
fn forward(gw: &Gateway, env: &mut MemoryEnv, h: &RequestHead) -> (Relay, Vec<(String, String)>) {
    match route(gw, h, env) {
        Some(Start::Forward(relay, edits)) => (relay, sent(h, &edits)),
        other => panic!("not forwarded: {other:?}"),
    }
}

/// The request head the backend gets: the client's, with the edits applied.
fn sent(h: &RequestHead, edits: &[Edit]) -> Vec<(String, String)> {
    let mut headers = h.headers.to_vec();
    crate::header_edits::apply(&mut headers, edits);
    headers
}

/// The answer head the client gets: the backend's, with the edits applied.
fn answered(status: u16, headers: &[(String, String)], edits: &[Edit]) -> Vec<(String, String)> {
    let mut out = vec![(":status".to_string(), status.to_string())];
    out.extend(headers.iter().cloned());
    crate::header_edits::apply(&mut out, edits);
    out
}

fn value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

#[test]
fn config_is_checked_with_the_field_named() {
    let bad = |extra: &str| {
        let cfg = format!("servers:\n- name: up\n{extra}");
        Gateway::from_config_str(&cfg).unwrap_err().to_string()
    };
    assert!(bad("  type: mcp-proxy\n").contains("mcpServerURL"));
    assert!(bad("  type: mcp-proxy\n  mcpServerURL: ftp://x/mcp\n").contains("mcpServerURL"));
    assert!(bad("  type: mcp-proxy\n  mcpServerURL: 'http://{{h}}/mcp'\n").contains("literal"));
    let external =
        "  type: mcp-proxy\n  transport: sse\n  mcpServerURL: /sse\n  guardrails: {external: {cluster: g}}\n";
    assert!(Gateway::from_config_str(&format!("servers:\n- name: up\n{external}")).is_ok(), "a guard on sse");
    assert!(bad("  type: rest\n").contains("'rest'"));
    assert!(bad("  mcpServerURL: /mcp\n").contains("type: mcp-proxy"));
    let gw = gateway("local", "");
    let b = gw.server("up").unwrap().proxy.clone().unwrap();
    assert_eq!(
        (b.path.as_str(), b.authority.as_deref(), b.timeout_ms, b.sse),
        ("/mcp", Some("backend:8000"), 5000, false)
    );
    assert!(b.credential.is_none() && !b.passthrough_auth);
    let nope = "  type: mcp-proxy\n  mcpServerURL: /mcp\n  defaultUpstreamSecurity: {id: nope}\n";
    assert!(bad(nope).contains("defaultUpstreamSecurity"));
}

#[test]
fn the_request_goes_to_the_backend_without_the_clients_credentials() {
    let gw = gateway("local", "");
    let (relay, headers) = forward(&gw, &mut env(), &head("POST", &[("content-type", "application/json")]));
    assert_eq!(value(&headers, ":path"), Some("/mcp"));
    assert_eq!(value(&headers, ":authority"), Some("backend:8000"));
    assert_eq!(value(&headers, "x-envoy-upstream-rq-timeout-ms"), Some("5000"));
    assert_eq!(value(&headers, "content-type"), Some("application/json"));
    assert_eq!(value(&headers, "authorization"), None);
    assert_eq!(value(&headers, "cookie"), None);
    assert!(!relay.needs_body());
    // The standalone GET stream keeps the route's timeout.
    let (_, headers) = forward(&gw, &mut env(), &head("GET", &[]));
    assert_eq!(value(&headers, "x-envoy-upstream-rq-timeout-ms"), None);
}

#[test]
fn only_an_initialize_without_a_session_is_kept_for_re_initialisation() {
    let gw = gateway("local", "");
    // No MCP-Protocol-Version: possibly an `initialize`, whose params a re-initialisation needs.
    let (relay, _) = forward(&gw, &mut env(), &head("POST", &[]));
    assert!(relay.keeps_body());
    // A stateless call (or one after the handshake) carries it: nothing to keep, the body passes unread.
    let (relay, _) = forward(&gw, &mut env(), &head("POST", &[("mcp-protocol-version", "2025-11-25")]));
    assert!(!relay.keeps_body());
}

fn session_binding(store: &str) {
    let gw = gateway(store, "");
    let mut env = env();
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[]));
    let answer = vec![("content-type".to_string(), "text/event-stream".to_string()), (SESSION.into(), "b-123".into())];
    let Answer::Pass(edits) = relay.on_response_head(&gw, &mut env, 200, &answer) else { panic!() };
    let out = answered(200, &answer, &edits);
    let ours = value(&out, SESSION).unwrap().to_string();
    assert_ne!(ours, "b-123");
    assert_eq!(value(&out, ":status"), Some("200"));
    // The next request carries ours; the backend gets its own.
    let h = head("POST", &[(SESSION, &ours)]);
    let (mut relay, headers) = forward(&gw, &mut env, &h);
    assert_eq!(value(&headers, SESSION), Some("b-123"));
    let answer = vec![(SESSION.to_string(), "b-123".to_string())];
    let Answer::Pass(edits) = relay.on_response_head(&gw, &mut env, 200, &answer) else { panic!() };
    let out = answered(200, &answer, &edits);
    assert_eq!(value(&out, SESSION), Some(ours.as_str()));
    // A made-up id is refused before the backend sees it.
    match route(&gw, &head("POST", &[(SESSION, "b-123")]), &mut env) {
        Some(Start::Respond(r)) => assert_eq!(r.status, 404),
        other => panic!("{other:?}"),
    }
    // DELETE goes on with the backend's id and ends ours.
    let (_, headers) = forward(&gw, &mut env, &head("DELETE", &[(SESSION, &ours)]));
    assert_eq!(value(&headers, SESSION), Some("b-123"));
    assert!(matches!(route(&gw, &h, &mut env), Some(Start::Respond(r)) if r.status == 404));
}

#[test]
fn sessions_are_bound_in_the_local_store() {
    session_binding("local");
}

#[test]
fn sessions_are_bound_in_the_signed_store() {
    session_binding("signed");
}

#[test]
fn a_backend_that_forgot_the_session_or_failed_gives_a_json_rpc_error() {
    let gw = gateway("local", "");
    let mut env = env();
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[]));
    let answer = vec![(SESSION.to_string(), "b-1".to_string())];
    let Answer::Pass(edits) = relay.on_response_head(&gw, &mut env, 200, &answer) else { panic!() };
    let out = answered(200, &answer, &edits);
    let ours = value(&out, SESSION).unwrap().to_string();
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[(SESSION, &ours)]));
    let Answer::Replace(r) = relay.on_response_head(&gw, &mut env, 404, NO_HEADERS) else { panic!() };
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("-32001"));
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[]));
    let Answer::Replace(r) = relay.on_response_head(&gw, &mut env, 503, NO_HEADERS) else { panic!() };
    assert_eq!(r.status, 502);
    assert!(String::from_utf8_lossy(&r.body).contains("could not be reached (HTTP 503)"));
}

#[test]
fn allow_tools_refuses_calls_and_filters_lists_in_json_and_sse() {
    let gw = gateway("local", "  allowTools: [echo]\n");
    let mut env = env();
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[]));
    assert!(relay.needs_body());
    let call = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"secret","arguments":{}}}"#;
    let refused = relay.on_body(&gw, &mut env, call).unwrap_err();
    let body: Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(body["error"]["code"], -32602);
    assert_eq!(body["error"]["message"], "Tool not allowed: secret");
    assert_eq!(body["id"], 7);
    // The header narrows further.
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[("x-envoy-allow-mcp-tools", "other")]));
    let echo = String::from_utf8_lossy(call).replace("secret", "echo");
    assert!(relay.on_body(&gw, &mut env, echo.as_bytes()).is_err());

    let list = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let tools = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"},{"name":"secret"}]}}"#;
    let json =
        vec![("content-type".to_string(), "application/json".to_string()), ("content-length".into(), "9".into())];
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[]));
    assert!(matches!(relay.on_body(&gw, &mut env, list), Ok(None)));
    let Answer::Rewrite(edits) = relay.on_response_head(&gw, &mut env, 200, &json) else { panic!() };
    let out = answered(200, &json, &edits);
    assert_eq!(value(&out, "content-length"), None);
    assert!(relay.buffers());
    let v: Value = serde_json::from_slice(&relay.on_chunk(&gw, &mut env, tools.as_bytes(), true)).unwrap();
    assert_eq!(v["result"]["tools"], serde_json::json!([{"name": "echo"}]));

    let sse = vec![("content-type".to_string(), "text/event-stream".to_string())];
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[]));
    let _ = relay.on_body(&gw, &mut env, list);
    assert!(matches!(relay.on_response_head(&gw, &mut env, 200, &sse), Answer::Rewrite(_)));
    let stream =
        format!("event: message\ndata: {{\"method\":\"notifications/message\"}}\n\nevent: message\ndata: {tools}\n\n");
    let bytes = stream.as_bytes();
    let mut out = Vec::new();
    for chunk in bytes.chunks(7) {
        out.extend(relay.on_chunk(&gw, &mut env, chunk, false));
    }
    out.extend(relay.on_chunk(&gw, &mut env, b"", true));
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with("event: message\ndata: {\"method\":\"notifications/message\"}\n\n"), "{text}");
    assert!(text.contains("\"echo\"") && !text.contains("secret"), "{text}");
}

#[test]
fn an_sse_backends_endpoint_is_bound_to_a_session_of_ours() {
    for store in ["local", "signed"] {
        let sessions = if store == "signed" {
            format!("sessions: {{store: signed, signingKeys: ['{KEY}']}}\n")
        } else {
            String::new()
        };
        let cfg =
            format!("{sessions}servers:\n- name: up\n  type: mcp-proxy\n  transport: sse\n  mcpServerURL: /sse\n");
        let gw = Gateway::from_config_str(&cfg).unwrap();
        let mut env = env();
        let mut h = head("GET", &[]);
        h.path = "/mcp-servers/up/sse".into();
        let (mut relay, headers) = forward(&gw, &mut env, &h);
        assert_eq!(value(&headers, ":path"), Some("/sse"));
        assert_eq!(value(&headers, "x-envoy-upstream-rq-timeout-ms"), None);
        let sse = vec![("content-type".to_string(), "text/event-stream".to_string())];
        // The head is held until the endpoint is bound.
        assert!(matches!(relay.on_response_head(&gw, &mut env, 200, &sse), Answer::Hold(_)));
        let stream =
            b"event: endpoint\r\ndata: /messages/?session_id=0123456789abcdef0123456789abcdef\r\n\r\n: ping\n\n";
        let mut out = Vec::new();
        for (i, chunk) in stream.chunks(5).enumerate() {
            out.extend(relay.on_chunk(&gw, &mut env, chunk, false));
            // Bound exactly when the endpoint event's blank line has come (byte 81).
            match relay.bind() {
                Bind::Seeking => assert!((i + 1) * 5 < 81, "{i}"),
                Bind::Bound => assert!((i + 1) * 5 >= 81, "{i}"),
                other => panic!("{other:?}"),
            }
        }
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("event: endpoint\ndata: /mcp-servers/up/message?sessionId="), "{text}");
        assert!(text.ends_with("\n\n: ping\n\n") && !text.contains("session_id"), "{text}");
        let ours = text.lines().nth(1).unwrap().strip_prefix("data: ").unwrap().to_string();
        // The client's POST goes on to the backend's message endpoint.
        let mut post = head("POST", &[]);
        post.path = ours;
        let (_, headers) = forward(&gw, &mut env, &post);
        assert_eq!(value(&headers, ":path"), Some("/messages/?session_id=0123456789abcdef0123456789abcdef"));
        post.path = "/mcp-servers/up/message?sessionId=forged".into();
        assert!(matches!(route(&gw, &post, &mut env), Some(Start::Respond(r)) if r.status == 404));
        post.path = "/mcp-servers/up".into(); // a Streamable HTTP client's POST: bridged (bridge.rs)
        assert!(matches!(route(&gw, &post, &mut env), Some(Start::Bridge(_))));
    }
}

#[test]
fn an_sse_backends_endpoint_waits_for_redis_and_a_failure_answers_instead_of_the_stream() {
    let cfg = "sessions: {store: redis, redis: {cluster: r}}\nservers:\n- name: up\n  type: mcp-proxy\n  \
               transport: sse\n  mcpServerURL: http://backend:9000/sse\n";
    let gw = Gateway::from_config_str(cfg).unwrap();
    let mut env = env();
    let mut redis = std::collections::HashMap::new();
    let sse = vec![("content-type".to_string(), "text/event-stream".to_string())];
    let stream = b": hello\n\nevent: endpoint\ndata: http://backend:9000/messages/?session_id=abc\n\ndata: {}\n\n";
    let open = |env: &mut MemoryEnv| {
        let mut h = head("GET", &[]);
        h.path = "/mcp-servers/up/sse".into();
        let (mut relay, _) = forward(&gw, env, &h);
        assert!(matches!(relay.on_response_head(&gw, env, 200, &sse), Answer::Hold(_)));
        relay
    };
    // The endpoint stops the stream until Redis has stored our session; what came before it is kept.
    let mut relay = open(&mut env);
    let before = relay.on_chunk(&gw, &mut env, stream, false);
    assert_eq!(before, b": hello\n\n");
    let Bind::Redis(set) = relay.bind() else { panic!() };
    assert!(matches!(relay.bind(), Bind::Seeking)); // the command is handed out once
    let outcome = redis_answer(&gw, &mut redis, &set);
    let after = String::from_utf8(relay.on_bound(&gw, &mut env, outcome).unwrap()).unwrap();
    assert!(after.starts_with("event: endpoint\ndata: /mcp-servers/up/message?sessionId="), "{after}");
    assert!(after.ends_with("\n\ndata: {}\n\n") && !after.contains("backend"), "{after}");
    assert!(matches!(relay.bind(), Bind::Bound));
    let stored = String::from_utf8(redis.values().next().unwrap().clone()).unwrap();
    assert!(stored.contains("\"b\":\"/messages/?session_id=abc\""), "{stored}");
    // A second endpoint event never reaches the client.
    let again = relay.on_chunk(&gw, &mut env, b"event: endpoint\ndata: /messages/?session_id=x\n\n", false);
    assert!(!String::from_utf8_lossy(&again).contains("session_id"));
    // Any replica: a POST to ours waits for the GETEX, then goes to the backend's message endpoint.
    let ours = after.lines().nth(1).unwrap().strip_prefix("data: ").unwrap().to_string();
    let mut post = head("POST", &[]);
    post.path = ours;
    let Some(Start::Redis(opening, get)) = route(&gw, &post, &mut env) else { panic!() };
    let outcome = redis_answer(&gw, &mut redis, &get);
    let Start::Forward(_, edits) = resume(&gw, &mut env, *opening, outcome) else { panic!() };
    assert_eq!(value(&sent(&post, &edits), ":path"), Some("/messages/?session_id=abc"));
    assert_eq!(value(&sent(&post, &edits), ":authority"), Some("backend:9000"));
    // A forged or altered sessionId: Redis knows none, so 404 without reaching the backend.
    post.path = "/mcp-servers/up/message?sessionId=0123456789abcdef0123456789abcdef".into();
    let Some(Start::Redis(opening, get)) = route(&gw, &post, &mut env) else { panic!() };
    let outcome = redis_answer(&gw, &mut redis, &get);
    assert!(matches!(resume(&gw, &mut env, *opening, outcome), Start::Respond(r) if r.status == 404));
    post.path = "/mcp-servers/up/message?sessionId=../../x".into();
    assert!(matches!(route(&gw, &post, &mut env), Some(Start::Respond(r)) if r.status == 404));
    // Redis failing or slow: the stream is answered by 503 (-32603), never the backend's endpoint.
    let mut relay = open(&mut env);
    relay.on_chunk(&gw, &mut env, stream, false);
    let Bind::Redis(_) = relay.bind() else { panic!() };
    let failed = SessionOutcome::Failed(crate::session::StoreError("Redis did not answer (timeout)".into()));
    let r = relay.on_bound(&gw, &mut env, failed).unwrap_err();
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((r.status, body["error"]["code"].clone()), (503, (-32603).into()));
    assert_eq!(body["error"]["message"], "session store: Redis did not answer (timeout)");
}

#[test]
fn an_sse_backends_stream_is_answered_by_an_error_when_the_store_refuses_a_session() {
    let cfg = "sessions: {maxNewPerSecond: 1}\nservers:\n- name: up\n  type: mcp-proxy\n  transport: sse\n  \
               mcpServerURL: /sse\n";
    let gw = Gateway::from_config_str(cfg).unwrap();
    let mut env = env();
    let sse = vec![("content-type".to_string(), "text/event-stream".to_string())];
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let mut h = head("GET", &[]);
        h.path = "/mcp-servers/up/sse".into();
        let (mut relay, _) = forward(&gw, &mut env, &h);
        assert!(matches!(relay.on_response_head(&gw, &mut env, 200, &sse), Answer::Hold(_)));
        let out = relay.on_chunk(&gw, &mut env, b"event: endpoint\ndata: /m?s=1\n\n", false);
        statuses.push(match relay.bind() {
            Bind::Bound => (200, String::from_utf8(out).unwrap()),
            Bind::Failed(r) => (r.status, String::from_utf8(r.body).unwrap()),
            other => panic!("{other:?}"),
        });
    }
    assert_eq!(statuses[0].0, 200);
    assert_eq!(statuses[1].0, 429, "{statuses:?}");
    assert!(statuses[1].1.contains("-32000") && statuses[1].1.contains("too many new sessions"), "{statuses:?}");
}

#[test]
fn the_backend_gets_the_operators_credential_or_the_clients_when_configured() {
    let schemes = "  securitySchemes:\n  - {id: key, type: apiKey, in: query, name: api_key, defaultCredential: k1}\n  - {id: tok, type: http, scheme: bearer, defaultCredential: t1}\n";
    let gw = gateway("local", &format!("{schemes}  defaultUpstreamSecurity: {{id: tok}}\n"));
    let (_, headers) = forward(&gw, &mut env(), &head("POST", &[]));
    assert_eq!(value(&headers, "authorization"), Some("Bearer t1"));
    let gw = gateway("local", &format!("{schemes}  defaultUpstreamSecurity: {{id: key}}\n"));
    let (_, headers) = forward(&gw, &mut env(), &head("POST", &[]));
    assert_eq!(value(&headers, ":path"), Some("/mcp?api_key=k1"));
    assert_eq!(value(&headers, "authorization"), None);
    let gw = gateway("local", "  passthroughAuthHeader: true\n");
    let (_, headers) = forward(&gw, &mut env(), &head("POST", &[]));
    assert_eq!(value(&headers, "authorization"), Some("Bearer client-secret"));
    assert_eq!(value(&headers, "cookie"), None);
}

#[test]
fn tool_overrides_are_checked_at_load() {
    let bad = |extra: &str| {
        let cfg = format!("servers:\n- name: up\n  type: mcp-proxy\n  mcpServerURL: /mcp\n{extra}");
        Gateway::from_config_str(&cfg).unwrap_err().to_string()
    };
    let e = bad("  toolOverrides: {a: {name: x}, b: {name: x}}\n");
    assert!(e.contains("'up'") && e.contains("toolOverrides.b.name") && e.contains("'a' is renamed to 'x' too"), "{e}");
    let e = bad("  toolOverrides: {a: {name: b}, b: {description: B}}\n");
    assert!(e.contains("stays the name of another tool"), "{e}");
    assert!(bad("  toolOverrides: {a: {name: 'has space'}}\n").contains("1-128"));
    assert!(bad("  toolOverrides: {'': {name: x}}\n").contains("not a tool name"));
    assert!(bad("  toolOverrides: {a: {}}\n").contains("needs one or more"));
    assert!(bad("  toolOverrides: {a: {name: 3}}\n").contains("toolOverrides.a.name"));
    assert!(bad("  toolOverrides: {a: {nmae: x}}\n").contains("toolOverrides.a.nmae"));
    let e = bad("  allowTools: [a]\n  toolOverrides: {a: {name: x}}\n");
    assert!(e.contains("allowTools") && e.contains("list its new name"), "{e}");
    let rest = "servers:\n- name: up\n  toolOverrides: {a: {name: x}}\n";
    assert!(Gateway::from_config_str(rest).unwrap_err().to_string().contains("type: mcp-proxy"));
    // A swap is fine, and ToolHive's spelling is accepted.
    Gateway::from_config_str(
        "servers:\n- name: up\n  type: mcp-proxy\n  mcpServerURL: /mcp\n  allowTools: [b]\n  toolsOverride: {a: {name: b}, b: {name: a}}\n",
    )
    .unwrap();
}

const RENAMES: &str =
    "  toolOverrides:\n    echo: {name: say, description: Says it back., title: Say}\n    add: {description: Adds.}\n";

#[test]
fn renamed_tools_are_called_by_their_new_name_only() {
    let gw = gateway("local", RENAMES);
    let mut env = env();
    let (mut relay, headers) = forward(&gw, &mut env, &head("POST", &[("content-length", "99")]));
    assert!(relay.needs_body());
    assert_eq!(value(&headers, "content-length"), None, "the body may change length");
    let call = |name: &str| {
        format!(
            r#"[{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"{name}","arguments":{{"text":"say"}}}}}}]"#
        )
    };
    let out = relay.on_body(&gw, &mut env, call("say").as_bytes()).unwrap().unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v[0]["params"], serde_json::json!({"name": "echo", "arguments": {"text": "say"}}));
    // Tools that are not renamed go on untouched; the backend's own name of a renamed tool is unknown.
    assert!(matches!(relay.on_body(&gw, &mut env, call("add").as_bytes()), Ok(None)));
    let refused = relay.on_body(&gw, &mut env, call("echo").as_bytes()).unwrap_err();
    let body: Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!((body["error"]["code"].as_i64(), body["id"].as_i64()), (Some(-32602), Some(3)));
    assert_eq!(body["error"]["message"], "Unknown tool: echo");
    // The allow header speaks in the client's names.
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[("x-envoy-allow-mcp-tools", "say")]));
    assert!(relay.on_body(&gw, &mut env, call("say").as_bytes()).unwrap().is_some());
    assert!(relay.on_body(&gw, &mut env, call("add").as_bytes()).is_err());
}

#[test]
fn tools_lists_are_renamed_in_json_and_in_sse_split_anywhere_with_the_cursor_kept() {
    let gw = gateway("local", &format!("{RENAMES}  allowTools: [say, add, echo2]\n"));
    let list = br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"cursor":"p1"}}"#;
    let tools = r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo","description":"Echo.","inputSchema":{"type":"object"}},{"name":"add","title":"Add"},{"name":"secret"}],"nextCursor":"p2"}}"#;
    let want = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": [
        {"name": "say", "description": "Says it back.", "inputSchema": {"type": "object"}, "title": "Say"},
        {"name": "add", "title": "Add", "description": "Adds."}], "nextCursor": "p2"}});
    let mut env = env();
    let json = vec![("content-type".to_string(), "application/json".to_string())];
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[]));
    assert!(matches!(relay.on_body(&gw, &mut env, list), Ok(None)));
    assert!(matches!(relay.on_response_head(&gw, &mut env, 200, &json), Answer::Rewrite(_)));
    let (a, b) = tools.as_bytes().split_at(40);
    assert!(relay.on_chunk(&gw, &mut env, a, false).is_empty());
    let v: Value = serde_json::from_slice(&relay.on_chunk(&gw, &mut env, b, true)).unwrap();
    assert_eq!(v, want);

    let sse = vec![("content-type".to_string(), "text/event-stream".to_string())];
    let stream = format!("id: 1\r\nevent: message\r\ndata: {tools}\r\n\r\n");
    for size in [1, 5, 64] {
        let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[]));
        let _ = relay.on_body(&gw, &mut env, list);
        assert!(matches!(relay.on_response_head(&gw, &mut env, 200, &sse), Answer::Rewrite(_)));
        let mut out = Vec::new();
        for chunk in stream.as_bytes().chunks(size) {
            out.extend(relay.on_chunk(&gw, &mut env, chunk, false));
        }
        out.extend(relay.on_chunk(&gw, &mut env, b"", true));
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("id: 1\nevent: message\ndata: {") && text.ends_with("}\n\n"), "{text}");
        assert_eq!(sse::data(text.as_bytes()).and_then(|d| serde_json::from_str::<Value>(&d).ok()), Some(want.clone()));
    }
}

#[test]
fn a_backend_tool_named_like_a_rename_is_hidden() {
    let gw = gateway("local", "  toolOverrides: {echo: {name: say}}\n");
    let mut env = env();
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[]));
    let _ = relay.on_body(&gw, &mut env, br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    let json = vec![("content-type".to_string(), "application/json".to_string())];
    let _ = relay.on_response_head(&gw, &mut env, 200, &json);
    let tools = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"say"},{"name":"echo"}]}}"#;
    let v: Value = serde_json::from_slice(&relay.on_chunk(&gw, &mut env, tools, true)).unwrap();
    assert_eq!(v["result"]["tools"], serde_json::json!([{"name": "say"}]));
}

#[test]
fn guardrails_check_calls_and_filter_their_results_in_json_and_sse() {
    let guard = "  guardrails:\n    denyPatterns: ['(?i)drop table']\n    mask: [email]\n    tools:\n      \
                 big: {maxResultBytes: 60}\n";
    let gw = gateway("local", guard);
    let mut env = env();
    let call = |name: &str, text: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"{name}","arguments":{{"q":"{text}"}}}}}}"#
        )
    };
    // Arguments are checked before anything goes on; the value is never echoed.
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[]));
    assert!(relay.needs_body());
    let refused = relay.on_body(&gw, &mut env, call("echo", "x; DROP TABLE users").as_bytes()).unwrap_err();
    let body: Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!(body["id"], 3);
    assert_eq!(body["error"]["data"]["cause"], "guardrail", "{body}");
    assert!(!body.to_string().contains("users"), "{body}");
    // A body the guardrails cannot read (NaN: not JSON here, a number to some backends) does not go on.
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[]));
    let nan = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"q":NaN}}}"#;
    let refused = relay.on_body(&gw, &mut env, nan).unwrap_err();
    assert_eq!(refused.status, 400);
    assert_eq!(serde_json::from_slice::<Value>(&refused.body).unwrap()["error"]["code"], -32700);

    // A JSON answer is read whole and masked.
    let json = vec![("content-type".to_string(), "application/json".to_string())];
    let answer = r#"{"jsonrpc":"2.0","id":3,"result":{"content":[{"type":"text","text":"mail ann@example.com"}]}}"#;
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[]));
    assert!(matches!(relay.on_body(&gw, &mut env, call("echo", "hi").as_bytes()), Ok(None)));
    assert!(matches!(relay.on_response_head(&gw, &mut env, 200, &json), Answer::Rewrite(_)));
    assert!(relay.buffers());
    let out = String::from_utf8(relay.on_chunk(&gw, &mut env, answer.as_bytes(), true)).unwrap();
    assert!(out.starts_with(r#"{"jsonrpc":"2.0","id":3,"result""#) && out.contains("mail "), "{out}");
    assert!(!out.contains("ann@example.com"), "{out}");

    // An SSE answer: the notification and the server's own request pass as sent, the result is masked, and a
    // result over the tool's maxResultBytes becomes the guardrail's error, whichever chunks carry it.
    let sse = vec![("content-type".to_string(), "text/event-stream".to_string())];
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[]));
    let _ = relay.on_body(&gw, &mut env, call("big", "hi").as_bytes());
    assert!(matches!(relay.on_response_head(&gw, &mut env, 200, &sse), Answer::Rewrite(_)));
    assert!(!relay.buffers());
    let long = "ann@example.com ".repeat(8);
    let stream = format!(
        "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{{\"data\":\"bob@example.com\"}}}}\n\n\
         event: message\ndata: {{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"elicitation/create\"}}\n\n\
         event: message\ndata: {{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":\"{long}\"}}]}}}}\n\n"
    );
    let mut out = Vec::new();
    for chunk in stream.as_bytes().chunks(5) {
        out.extend(relay.on_chunk(&gw, &mut env, chunk, false));
    }
    out.extend(relay.on_chunk(&gw, &mut env, b"", true));
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("bob@example.com") && text.contains("elicitation/create"), "{text}");
    assert!(!text.contains("ann@example.com") && text.contains("maxResultBytes"), "{text}");

    // Without a result filter the answer is not read at all; the arguments are still checked.
    let plain = gateway("local", "  guardrails:\n    maxArgumentBytes: 100\n");
    let (mut relay, _) = forward(&plain, &mut env, &head("POST", &[]));
    let _ = relay.on_body(&gw, &mut env, call("echo", "hi").as_bytes());
    assert!(matches!(relay.on_response_head(&plain, &mut env, 200, &json), Answer::Pass(_)));
    assert!(relay.on_body(&gw, &mut env, call("echo", &"x".repeat(200)).as_bytes()).is_err());
}

#[test]
fn rate_limits_count_proxied_calls_on_this_process() {
    let gw = gateway("local", "  rateLimits:\n  - {requests: 2, window: 1m}\n");
    let mut env = env();
    crate::limits::local::prepare(&mut env.kv, &gw.servers[0].limits.known_process_buckets("up"));
    let call = br#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
    let list = br#"{"jsonrpc":"2.0","id":9,"method":"tools/list"}"#;
    for _ in 0..2 {
        let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[]));
        assert!(relay.needs_body());
        assert!(matches!(relay.on_body(&gw, &mut env, call), Ok(None)));
        assert!(matches!(relay.on_body(&gw, &mut env, list), Ok(None)), "lists are not counted");
    }
    // In a session (2025-11-25): the JSON-RPC error in a 200, saying when to retry.
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[("mcp-protocol-version", "2025-11-25")]));
    let refused = relay.on_body(&gw, &mut env, call).unwrap_err();
    assert_eq!(refused.status, 200);
    let body: Value = serde_json::from_slice(&refused.body).unwrap();
    assert_eq!((body["id"].clone(), body["error"]["data"]["cause"].clone()), (8.into(), "rate_limited".into()));
    assert!(body["error"]["data"]["retryAfterSeconds"].as_u64().unwrap() >= 1, "{body}");
    // Stateless (2026-07-28): HTTP 429 with Retry-After.
    let stateless = br#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo","arguments":{},
        "_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[("mcp-protocol-version", "2026-07-28")]));
    let refused = relay.on_body(&gw, &mut env, stateless).unwrap_err();
    assert_eq!(refused.status, 429);
    assert!(value(&refused.headers, "retry-after").is_some(), "{:?}", refused.headers);
}

#[test]
fn policy_and_rate_limits_on_an_sse_backend_filter_its_stream_and_refuse_there() {
    let extra = "  rateLimits: [{requests: 1, window: 1h}]\n  policy: {rules: [{allow: {tools: [echo], \
                 prompts: [open]}}]}\n";
    let cfg = format!("servers:\n- name: up\n  type: mcp-proxy\n  transport: sse\n  mcpServerURL: /sse\n{extra}");
    let gw = Gateway::from_config_str(&cfg).unwrap();
    let mut env = env();
    crate::limits::local::prepare(&mut env.kv, &gw.servers[0].limits.known_process_buckets("up"));
    let mut get = head("GET", &[]);
    get.path = "/mcp-servers/up/sse".into();
    let (mut stream, _) = forward(&gw, &mut env, &get);
    let sse = vec![("content-type".to_string(), "text/event-stream".to_string())];
    assert!(matches!(stream.on_response_head(&gw, &mut env, 200, &sse), Answer::Hold(_)));
    let endpoint = String::from_utf8(stream.on_chunk(&gw, &mut env, b"event: endpoint\ndata: /m?s=1\n\n", false));
    let mut post = head("POST", &[]);
    post.path = endpoint.unwrap().lines().nth(1).unwrap().strip_prefix("data: ").unwrap().to_string();
    let call = |tool: &str, id: u32| {
        format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#)
    };
    let mut sent = Vec::new();
    for (tool, id) in [("echo", 1), ("secret", 2), ("echo", 3)] {
        let (mut relay, _) = forward(&gw, &mut env, &post);
        sent.push(relay.on_body(&gw, &mut env, call(tool, id).as_bytes()).unwrap());
    }
    assert!(sent[0].is_none(), "the first call goes on as sent");
    let pings: Vec<Value> = sent[1..].iter().map(|b| serde_json::from_slice(b.as_ref().unwrap()).unwrap()).collect();
    let pongs: String = pings
        .iter()
        .map(|p| format!("event: message\ndata: {}\n\n", json!({"jsonrpc": "2.0", "id": p["id"], "result": {}})))
        .collect();
    let prompts = json!({"jsonrpc": "2.0", "id": 9, "result": {"prompts": [{"name": "open"}, {"name": "closed"}]}});
    let events = format!("{pongs}event: message\ndata: {prompts}\n\n");
    let out = String::from_utf8(stream.on_chunk(&gw, &mut env, events.as_bytes(), false)).unwrap();
    let got: Vec<Value> =
        out.lines().filter_map(|l| l.strip_prefix("data: ").map(|d| serde_json::from_str(d).unwrap())).collect();
    assert_eq!(got[0]["id"], 2);
    assert!(got[0]["error"]["message"].as_str().unwrap().contains("may not use tool 'secret'"), "{}", got[0]);
    assert_eq!((got[1]["id"].clone(), got[1]["error"]["data"]["cause"].clone()), (json!(3), json!("rate_limited")));
    assert_eq!(got[2]["result"]["prompts"], json!([{"name": "open"}]));
}

#[test]
fn an_sse_backends_tools_are_filtered_and_renamed_on_its_stream_and_refusals_travel_there() {
    let extra = "  allowTools: [say]\n  toolOverrides: {echo: {name: say}}\n";
    let cfg = format!("servers:\n- name: up\n  type: mcp-proxy\n  transport: sse\n  mcpServerURL: /sse\n{extra}");
    let gw = Gateway::from_config_str(&cfg).unwrap();
    let mut env = env();
    let mut get = head("GET", &[]);
    get.path = "/mcp-servers/up/sse".into();
    let (mut stream, _) = forward(&gw, &mut env, &get);
    let sse = vec![("content-type".to_string(), "text/event-stream".to_string())];
    assert!(matches!(stream.on_response_head(&gw, &mut env, 200, &sse), Answer::Hold(_)));
    let endpoint =
        String::from_utf8(stream.on_chunk(&gw, &mut env, b"event: endpoint\ndata: /messages/?s=1\n\n", false));
    let ours = endpoint.unwrap().lines().nth(1).unwrap().strip_prefix("data: ").unwrap().to_string();

    // A call of a tool the client may not call goes on as a ping carrying the refusal...
    let mut post = head("POST", &[("content-length", "99")]);
    post.path = ours;
    let (mut relay, headers) = forward(&gw, &mut env, &post);
    assert_eq!(value(&headers, "content-length"), None);
    let call = br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"secret","arguments":{}}}"#;
    let sent: Value = serde_json::from_slice(&relay.on_body(&gw, &mut env, call).unwrap().unwrap()).unwrap();
    assert_eq!(sent["method"], "ping");
    // ... a renamed one under the backend's name.
    let say = br#"{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"say","arguments":{}}}"#;
    let (mut relay, _) = forward(&gw, &mut env, &post);
    let renamed: Value = serde_json::from_slice(&relay.on_body(&gw, &mut env, say).unwrap().unwrap()).unwrap();
    assert_eq!(renamed["params"]["name"], "echo");

    // On the stream: the ping's answer becomes the refusal, the list is filtered and renamed, the rest passes.
    let pong = json!({"jsonrpc": "2.0", "id": sent["id"], "result": {}});
    let list = json!({"jsonrpc": "2.0", "id": 6, "result": {"tools": [{"name": "echo"}, {"name": "secret"}]}});
    let other = json!({"jsonrpc": "2.0", "id": 5, "result": {"content": []}});
    let events =
        format!("event: message\ndata: {pong}\n\nevent: message\ndata: {list}\n\nevent: message\ndata: {other}\n\n");
    let mut out = Vec::new();
    for chunk in events.as_bytes().chunks(9) {
        out.extend(stream.on_chunk(&gw, &mut env, chunk, false));
    }
    let got: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").map(|d| serde_json::from_str(d).unwrap()))
        .collect();
    assert_eq!(got[0]["id"], 4);
    assert_eq!(
        (got[0]["error"]["code"].clone(), got[0]["error"]["message"].clone()),
        (json!(-32602), json!("Tool not allowed: secret"))
    );
    assert_eq!(got[1]["result"]["tools"], json!([{"name": "say"}]));
    assert_eq!(got[2], other);
}

#[test]
fn guardrails_on_an_sse_backend_check_calls_on_the_post_and_filter_results_on_the_stream() {
    let extra = "  toolOverrides: {echo: {name: say}}\n  guardrails:\n    mask: [email]\n    denyPatterns: ['(?i)drop table']\n    \
                 tools:\n      say: {mask: [], maxResultBytes: 60}\n";
    let cfg = format!("servers:\n- name: up\n  type: mcp-proxy\n  transport: sse\n  mcpServerURL: /sse\n{extra}");
    let gw = Gateway::from_config_str(&cfg).unwrap();
    let mut env = env();
    let mut get = head("GET", &[]);
    get.path = "/mcp-servers/up/sse".into();
    let (mut stream, _) = forward(&gw, &mut env, &get);
    let sse = vec![("content-type".to_string(), "text/event-stream".to_string())];
    assert!(matches!(stream.on_response_head(&gw, &mut env, 200, &sse), Answer::Hold(_)));
    let endpoint = stream.on_chunk(&gw, &mut env, b"event: endpoint\ndata: /messages/?s=1\n\n", false);
    let ours = String::from_utf8(endpoint).unwrap().lines().nth(1).unwrap().strip_prefix("data: ").unwrap().to_string();
    let mut post = head("POST", &[]);
    post.path = ours;
    let mut send = |body: Value| -> Value {
        let (mut relay, _) = forward(&gw, &mut env, &post);
        assert!(relay.needs_body());
        match relay.on_body(&gw, &mut env, body.to_string().as_bytes()).unwrap() {
            Some(sent) => serde_json::from_slice(&sent).unwrap(),
            None => body,
        }
    };
    // A denied argument: refused on the POST, the refusal delivered on the stream as a ping's answer.
    let denied = send(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "lookup", "arguments": {"q": "DROP TABLE users"}}}));
    assert_eq!(denied["method"], "ping");
    // A tool under the server's guardrails goes as it came; one with its own carries its name in the id.
    let lookup = send(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "lookup", "arguments": {"q": "x"}}}));
    assert_eq!(lookup["id"], 2);
    let say = send(json!({"jsonrpc": "2.0", "id": "s-3", "method": "tools/call",
        "params": {"name": "say", "arguments": {"text": "a@b.example"}}}));
    let called = say["id"].as_str().unwrap().to_string();
    assert!(called.starts_with(CALLED) && called.ends_with(":say") && say["params"]["name"] == "echo", "{say}");
    // Ids of ours are not the client's to send.
    let forged = send(json!({"jsonrpc": "2.0", "id": format!("{CALLED}MQ:say"), "method": "tools/call",
        "params": {"name": "lookup", "arguments": {}}}));
    assert_eq!(forged["method"], "ping");
    let (mut relay, _) = forward(&gw, &mut env, &post);
    let unreadable = relay.on_body(&gw, &mut env, b"{\"jsonrpc\":\"2.0\",\"id\":9,NaN}").unwrap().unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&unreadable).unwrap()["method"], "ping");
    // Cancelling: as sent, and once more under the id each tool with its own guardrails would have had.
    let (mut relay, _) = forward(&gw, &mut env, &post);
    let cancel = json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "s-3"}});
    assert!(matches!(relay.on_body(&gw, &mut env, cancel.to_string().as_bytes()), Ok(None)));
    let (also_head, also) = relay.take_also();
    assert_eq!(value(&also_head, ":path"), Some("/messages/?s=1"));
    assert_eq!(value(&also_head, ":method"), Some("POST"));
    let also: Vec<Value> = also.iter().map(|b| serde_json::from_slice(b).unwrap()).collect();
    assert_eq!(also.len(), 1);
    assert_eq!(also[0]["params"]["requestId"], json!(called));
    assert!(relay.take_also().1.is_empty());

    // On the stream: the refusals, the server's masking by shape, the tool's own policy by id.
    let answer = |id: &Value, text: &str| json!({"jsonrpc": "2.0", "id": id, "result": {"content": [{"type": "text", "text": text}]}});
    let pong = |v: &Value| json!({"jsonrpc": "2.0", "id": v["id"], "result": {}});
    let messages = [
        pong(&denied),
        answer(&json!(2), "mail a@b.example"),
        answer(&json!(called), "a@b.example"),
        answer(&json!(called), &"long ".repeat(20)),
        json!({"jsonrpc": "2.0", "id": 7, "result": {"resources": []}}),
        pong(&forged),
        pong(&serde_json::from_slice::<Value>(&unreadable).unwrap()),
    ];
    let events: String = messages.iter().map(|m| format!("event: message\ndata: {m}\n\n")).collect();
    let mut out = Vec::new();
    for chunk in events.as_bytes().chunks(11) {
        out.extend(stream.on_chunk(&gw, &mut env, chunk, false));
    }
    let got: Vec<Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("data: ").map(|d| serde_json::from_str(d).unwrap()))
        .collect();
    assert_eq!(got[0]["id"], 1);
    let message = got[0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("tool 'lookup'") && message.contains("denyPatterns[0]"), "{message}");
    assert_eq!(got[1]["result"]["content"][0]["text"], "mail [REDACTED:email]");
    assert_eq!(got[2], answer(&json!("s-3"), "a@b.example")); // say: its own policy masks nothing
    assert_eq!(got[3]["id"], "s-3");
    assert!(got[3]["error"]["message"].as_str().unwrap().contains("the result of tool 'say'"), "{}", got[3]);
    assert_eq!(got[4], messages[4]);
    assert_eq!(got[5]["error"]["code"], -32600);
    assert_eq!((got[6]["id"].clone(), got[6]["error"]["code"].clone()), (Value::Null, json!(-32700)));
}

#[test]
fn only_the_headers_that_change_are_written() {
    let gw = gateway("local", "");
    let mut env = env();
    let h = head(
        "POST",
        &[(":method", "POST"), (":path", "/mcp-servers/up"), (":scheme", "http"), ("content-type", "application/json")],
    );
    let Some(Start::Forward(mut relay, edits)) = route(&gw, &h, &mut env) else { panic!() };
    // The kept headers stay as they are; the path and authority (an absolute mcpServerURL) change, the
    // client's credentials go, the timeout comes.
    let names: Vec<String> = edits
        .iter()
        .map(|e| match e {
            Edit::Set(k, _) => format!("set {k}"),
            Edit::Add(k, _) => format!("add {k}"),
            Edit::Remove(k) => format!("remove {k}"),
        })
        .collect();
    let expected =
        ["set :path", "set :authority", "set x-envoy-upstream-rq-timeout-ms", "remove authorization", "remove cookie"];
    assert_eq!(names, expected);
    // An answer whose session id is swapped for ours: that one header.
    let answer = vec![("content-type".to_string(), "application/json".to_string()), (SESSION.into(), "b-9".into())];
    let Answer::Pass(edits) = relay.on_response_head(&gw, &mut env, 200, &answer) else { panic!() };
    assert!(matches!(edits.as_slice(), [Edit::Set(k, v)] if k == SESSION && v != "b-9"), "{edits:?}");
    // Nothing to change: nothing written.
    let (mut relay, _) = forward(&gw, &mut env, &h);
    let plain = vec![("content-type".to_string(), "application/json".to_string())];
    assert_eq!(relay.on_response_head(&gw, &mut env, 200, &plain), Answer::Pass(Vec::new()));
}

/// A stand-in for Redis: the store's commands answered from a map, as the host would relay them.
pub(super) fn redis_answer(
    gw: &Gateway,
    redis: &mut std::collections::HashMap<String, Vec<u8>>,
    p: &redis::Pending,
) -> SessionOutcome {
    let args = crate::resp::decode_command(&p.command).unwrap();
    let text = |i: usize| String::from_utf8(args[i].clone()).unwrap();
    let reply: Vec<u8> = match text(0).as_str() {
        "SET" => {
            redis.insert(text(1), args[2].clone());
            b"+OK\r\n".to_vec()
        }
        "GETEX" => match redis.get(&text(1)) {
            Some(v) => crate::resp::encode_reply(&crate::resp::Reply::Bulk(Some(v.clone()))),
            None => b"$-1\r\n".to_vec(),
        },
        "DEL" => format!(":{}\r\n", i64::from(redis.remove(&text(1)).is_some())).into_bytes(),
        other => panic!("unexpected command {other}"),
    };
    match gw.sessions.on_redis_reply(p, redis::Answer::Reply(&reply)) {
        redis::Next::Done(outcome) => outcome,
        other => panic!("{other:?}"),
    }
}

#[test]
fn sessions_are_bound_in_redis_through_the_hosts_asynchronous_calls() {
    let cfg = "sessions: {store: redis, redis: {cluster: r}}\nservers:\n- name: up\n  type: mcp-proxy\n  \
               mcpServerURL: /mcp\n";
    let gw = Gateway::from_config_str(cfg).unwrap();
    let mut env = env();
    let mut redis = std::collections::HashMap::new();
    // initialize: no session yet, so the request goes on at once; the answer waits for the SET.
    let (mut relay, headers) = forward(&gw, &mut env, &head("POST", &[]));
    assert_eq!(value(&headers, SESSION), None);
    let theirs = vec![(SESSION.to_string(), "backend-1".to_string())];
    let Answer::Redis(set) = relay.on_response_head(&gw, &mut env, 200, &theirs) else { panic!() };
    let outcome = redis_answer(&gw, &mut redis, &set);
    let Answer::Pass(edits) = relay.on_session(outcome) else { panic!() };
    // Written as edits against the answer head as it came, held meanwhile: the session id swapped.
    assert!(matches!(edits.as_slice(), [Edit::Set(k, v)] if k == SESSION && v != "backend-1"), "{edits:?}");
    let out = answered(200, &theirs, &edits);
    let ours = value(&out, SESSION).unwrap().to_string();
    assert_ne!(ours, "backend-1");
    assert!(redis.values().any(|v| String::from_utf8_lossy(v).contains("\"b\":\"backend-1\"")), "{redis:?}");
    // Any replica: the next request waits for the GETEX, then carries the backend's id.
    let h = head("POST", &[(SESSION, &ours)]);
    let Some(Start::Redis(opening, get)) = route(&gw, &h, &mut env) else { panic!() };
    let outcome = redis_answer(&gw, &mut redis, &get);
    let Start::Forward(mut relay, edits) = resume(&gw, &mut env, *opening, outcome) else { panic!() };
    // Edits against the request head as it came (paused meanwhile): ours replaced by the backend's id.
    assert!(edits.contains(&Edit::Set(SESSION.into(), "backend-1".into())), "{edits:?}");
    assert_eq!(value(&sent(&h, &edits), SESSION), Some("backend-1"));
    assert_eq!(relay.on_response_head(&gw, &mut env, 202, NO_HEADERS), Answer::Pass(Vec::new()));
    // An id Redis does not know: 404 (-32001) after the lookup.
    let unknown = "0123456789abcdef0123456789abcdef";
    let Some(Start::Redis(opening, get)) = route(&gw, &head("POST", &[(SESSION, unknown)]), &mut env) else { panic!() };
    let outcome = redis_answer(&gw, &mut redis, &get);
    let Start::Respond(r) = resume(&gw, &mut env, *opening, outcome) else { panic!() };
    assert_eq!(r.status, 404);
    // Redis failing: 503, the session untouched.
    let Some(Start::Redis(opening, _)) = route(&gw, &head("POST", &[(SESSION, &ours)]), &mut env) else { panic!() };
    let failed = SessionOutcome::Failed(crate::session::StoreError("Redis did not answer".into()));
    let Start::Respond(r) = resume(&gw, &mut env, *opening, failed) else { panic!() };
    assert_eq!(r.status, 503);
    // A backend that forgot the session: ours is deleted too (DEL), and the client told to initialize.
    let Some(Start::Redis(opening, get)) = route(&gw, &head("POST", &[(SESSION, &ours)]), &mut env) else { panic!() };
    let outcome = redis_answer(&gw, &mut redis, &get);
    let Start::Forward(mut relay, _) = resume(&gw, &mut env, *opening, outcome) else { panic!() };
    let Answer::Redis(del) = relay.on_response_head(&gw, &mut env, 404, NO_HEADERS) else { panic!() };
    assert_eq!(crate::resp::decode_command(&del.command).unwrap()[0], b"DEL");
    let outcome = redis_answer(&gw, &mut redis, &del);
    let Answer::Replace(r) = relay.on_session(outcome) else { panic!() };
    assert_eq!(r.status, 404);
    assert!(redis.is_empty(), "{redis:?}");
}

#[test]
fn delete_in_redis_opens_then_ends_ours_then_the_backends() {
    let cfg = "sessions: {store: redis, redis: {cluster: r}}\nservers:\n- name: up\n  type: mcp-proxy\n  \
               mcpServerURL: /mcp\n";
    let gw = Gateway::from_config_str(cfg).unwrap();
    let mut env = env();
    let mut redis = std::collections::HashMap::new();
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[]));
    let theirs = vec![(SESSION.to_string(), "backend-1".to_string())];
    let Answer::Redis(set) = relay.on_response_head(&gw, &mut env, 200, &theirs) else { panic!() };
    let outcome = redis_answer(&gw, &mut redis, &set);
    let Answer::Pass(edits) = relay.on_session(outcome) else { panic!() };
    let out = answered(200, &theirs, &edits);
    let ours = value(&out, SESSION).unwrap().to_string();
    let h = head("DELETE", &[(SESSION, &ours)]);
    let Some(Start::Redis(opening, get)) = route(&gw, &h, &mut env) else { panic!() };
    let outcome = redis_answer(&gw, &mut redis, &get);
    let Start::Redis(opening, del) = resume(&gw, &mut env, *opening, outcome) else { panic!() };
    // Whatever DEL answers (here: a failure), the backend's session is ended too.
    let failed = SessionOutcome::Failed(crate::session::StoreError("timeout".into()));
    let Start::Forward(_, edits) = resume(&gw, &mut env, *opening, failed) else { panic!() };
    let headers = sent(&h, &edits);
    assert_eq!(value(&headers, ":method"), Some("DELETE"));
    assert_eq!(value(&headers, SESSION), Some("backend-1"));
    redis_answer(&gw, &mut redis, &del);
    assert!(redis.is_empty());
}

fn run_session(gw: &Gateway, env: &mut MemoryEnv, op: SessionOp) -> SessionOutcome {
    match gw.sessions.start(op, env) {
        Started::Done(outcome) => outcome,
        Started::Redis(p) => panic!("{p:?}"),
    }
}

/// A client session initialized through the relay (its `initialize` kept for re-initialisation), which the
/// backend answered with session `b-1`: our id for it.
fn session_on_b1(gw: &Gateway, env: &mut MemoryEnv) -> String {
    let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"c","version":"1"}}}"#;
    let (mut relay, _) = forward(gw, env, &head("POST", &[]));
    relay.keep(init.to_vec());
    let theirs = vec![(SESSION.to_string(), "b-1".to_string())];
    let Answer::Pass(edits) = relay.on_response_head(gw, env, 200, &theirs) else { panic!() };
    value(&answered(200, &theirs, &edits), SESSION).unwrap().to_string()
}

#[test]
fn a_backend_that_forgot_the_session_is_reinitialised_with_the_clients_params_and_the_request_sent_again() {
    let gw = gateway("local", "  allowTools: [echo]\n");
    let mut env = env();
    // initialize: its params are kept with the session.
    let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"elicitation":{}},"clientInfo":{"name":"c","version":"1"}}}"#;
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[]));
    relay.on_body(&gw, &mut env, init).unwrap();
    let theirs = vec![(SESSION.to_string(), "b-1".to_string())];
    let Answer::Pass(edits) = relay.on_response_head(&gw, &mut env, 200, &theirs) else { panic!() };
    let out = answered(200, &theirs, &edits);
    let ours = value(&out, SESSION).unwrap().to_string();
    // A tools/list the backend no longer knows the session of.
    let list = br#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#;
    let h = head("POST", &[(SESSION, &ours), ("mcp-method", "tools/list")]);
    let (mut relay, sent) = forward(&gw, &mut env, &h);
    assert_eq!(value(&sent, SESSION), Some("b-1"));
    relay.on_body(&gw, &mut env, list).unwrap();
    let Answer::Reinit(mut reinit) = relay.on_response_head(&gw, &mut env, 404, NO_HEADERS) else { panic!() };
    let reinit::Step::Call(h1, b1) = reinit.start() else { panic!() };
    let b1: Value = serde_json::from_slice(&b1).unwrap();
    assert_eq!(b1["method"], "initialize");
    assert_eq!(b1["params"]["capabilities"], json!({"elicitation": {}}));
    assert_eq!(b1["params"]["clientInfo"]["name"], "c");
    assert_eq!((value(&h1, SESSION), value(&h1, "mcp-method")), (None, Some("initialize")));
    assert_eq!(value(&h1, ":path"), Some("/mcp"));
    assert!(value(&h1, "authorization").is_none() && value(&h1, "cookie").is_none(), "{h1:?}");
    let new = vec![(SESSION.to_string(), "b-2".to_string())];
    let reinit::Step::Call(h2, b2) = reinit.on_answer(200, &new, Vec::new()) else { panic!() };
    assert_eq!(serde_json::from_slice::<Value>(&b2).unwrap()["method"], "notifications/initialized");
    assert_eq!(value(&h2, SESSION), Some("b-2"));
    let reinit::Step::Session(op) = reinit.on_answer(202, &[], Vec::new()) else { panic!() };
    let stored = run_session(&gw, &mut env, op);
    let reinit::Step::Call(h3, b3) = reinit.on_session(stored) else { panic!() };
    assert_eq!((value(&h3, SESSION), value(&h3, "mcp-method")), (Some("b-2"), Some("tools/list")));
    assert_eq!(b3, list.to_vec());
    assert_eq!(value(&h3, "content-length"), Some(list.len().to_string().as_str()));
    let tools = br#"{"jsonrpc":"2.0","id":5,"result":{"tools":[{"name":"echo"},{"name":"secret"}]}}"#.to_vec();
    let json_ct = vec![("content-type".to_string(), "application/json".to_string()), (SESSION.into(), "b-2".into())];
    let reinit::Step::Retried(status, headers, body) = reinit.on_answer(200, &json_ct, tools) else { panic!() };
    let r = relay.retried(&gw, &mut env, status, headers, body);
    assert_eq!(r.status, 200);
    assert!(value(&r.headers, SESSION).is_none(), "{:?}", r.headers);
    assert_eq!(value(&r.headers, "content-type"), Some("application/json"), "the answer head's edits applied");
    let listed: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(listed["result"]["tools"], json!([{"name": "echo"}]), "filtered as the first answer would be");
    // Our session now stands for the new backend session.
    let (_, sent) = forward(&gw, &mut env, &head("POST", &[(SESSION, &ours)]));
    assert_eq!(value(&sent, SESSION), Some("b-2"));
}

#[test]
fn requests_that_found_the_backend_session_forgotten_together_go_on_one_new_session() {
    // Two requests of one client session in flight when the backend restarts: both get 404 and both
    // re-initialise. The one that stores last must not put its backend session in place of the first's,
    // where requests of the client's already went (a call waiting on its elicitation's answer, a
    // cancellation): it sends its request again on that one instead.
    let gw = gateway("local", "");
    let mut env = env();
    let ours = session_on_b1(&gw, &mut env);
    let forgotten = |env: &mut MemoryEnv, body: &[u8]| {
        let (mut relay, _) = forward(&gw, env, &head("POST", &[(SESSION, &ours)]));
        relay.keep(body.to_vec());
        let Answer::Reinit(reinit) = relay.on_response_head(&gw, env, 404, NO_HEADERS) else { panic!() };
        reinit
    };
    let (mut a, mut b) = (forgotten(&mut env, b"{\"id\":1}"), forgotten(&mut env, b"{\"id\":2}"));
    a.start();
    b.start();
    let new = |id: &str| vec![(SESSION.to_string(), id.to_string())];
    assert!(matches!(a.on_answer(200, &new("b-2"), Vec::new()), reinit::Step::Call(..)));
    assert!(matches!(b.on_answer(200, &new("b-3"), Vec::new()), reinit::Step::Call(..)));
    let reinit::Step::Session(stored_a) = a.on_answer(202, &[], Vec::new()) else { panic!() };
    let reinit::Step::Session(stored_b) = b.on_answer(202, &[], Vec::new()) else { panic!() };
    let stored_a = run_session(&gw, &mut env, stored_a);
    let reinit::Step::Call(ha, ba) = a.on_session(stored_a) else { panic!() };
    assert_eq!((value(&ha, SESSION), ba.as_slice()), (Some("b-2"), &b"{\"id\":1}"[..]));
    let stored_b = run_session(&gw, &mut env, stored_b);
    let reinit::Step::Call(hb, bb) = b.on_session(stored_b) else { panic!() };
    assert_eq!((value(&hb, SESSION), bb.as_slice()), (Some("b-2"), &b"{\"id\":2}"[..]), "on the first's session");
    let (_, sent) = forward(&gw, &mut env, &head("POST", &[(SESSION, &ours)]));
    assert_eq!(value(&sent, SESSION), Some("b-2"), "ours stands for the first's");
}

#[test]
fn a_failed_reinitialisation_ends_our_session_as_before() {
    let gw = gateway("local", "");
    let mut env = env();
    let ours = session_on_b1(&gw, &mut env);
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[(SESSION, &ours)]));
    relay.keep(b"{}".to_vec());
    let Answer::Reinit(mut reinit) = relay.on_response_head(&gw, &mut env, 404, NO_HEADERS) else { panic!() };
    reinit.start();
    let reinit::Step::Session(op) = reinit.on_answer(503, &[], Vec::new()) else { panic!() };
    assert!(matches!(op, SessionOp::Delete { .. }));
    let outcome = run_session(&gw, &mut env, op);
    let reinit::Step::Gone(r) = reinit.on_session(outcome) else { panic!() };
    assert_eq!(r.status, 404);
    assert!(String::from_utf8_lossy(&r.body).contains("-32001"));
    assert!(matches!(route(&gw, &head("POST", &[(SESSION, &ours)]), &mut env), Some(Start::Respond(_))));
    // A GET stream (it cannot be sent again) gets the 404.
    let ours = session_on_b1(&gw, &mut env);
    let (mut relay, _) = forward(&gw, &mut env, &head("GET", &[(SESSION, &ours)]));
    assert!(matches!(relay.on_response_head(&gw, &mut env, 404, NO_HEADERS), Answer::Replace(_)));
    // ... and ours stays, for the next POST to re-initialise the backend.
    let (mut relay, _) = forward(&gw, &mut env, &head("POST", &[(SESSION, &ours)]));
    relay.keep(b"{}".to_vec());
    assert!(matches!(relay.on_response_head(&gw, &mut env, 404, NO_HEADERS), Answer::Reinit(_)));
}

#[test]
fn a_local_answer_replaces_a_held_one_through_edits() {
    // The held backend answer (a 404 while re-initialising), as it came; the local answer in its place.
    let held = vec![
        ("content-type".to_string(), "text/plain".to_string()),
        ("date".into(), "Thu, 26 Nov 2026 09:00:00 GMT".into()),
        (SESSION.into(), "b-1".into()),
        ("content-length".into(), "9".into()),
    ];
    let r = HttpResponse::error(404, Value::Null, SESSION_NOT_FOUND, "Session not found");
    let edits = replacing(&held, &r);
    let mut map = vec![(":status".to_string(), "404".to_string())];
    map.extend(held.iter().cloned());
    crate::header_edits::apply(&mut map, &edits);
    let mut want = vec![(":status".to_string(), "404".to_string())];
    want.extend(r.headers.iter().cloned());
    want.push(("content-length".into(), r.body.len().to_string()));
    map.sort();
    want.sort();
    assert_eq!(map, want, "{edits:?}");
    assert!(edits.contains(&Edit::Remove(SESSION.into())) && edits.contains(&Edit::Remove("date".into())));
}

/// Instructions per proxied `tools/call` body check (route, on_body[, gate]), for callgrind:
/// `MCP_COST_N=N valgrind --tool=callgrind <test binary> proxy::tests::cost_of_a_body_check --ignored --exact`,
/// once with N and once with 0; the difference over N is one call's.
#[test]
#[ignore]
fn cost_of_a_body_check() {
    let n: u64 = std::env::var("MCP_COST_N").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let limits = std::env::var("MCP_COST_LIMITS").is_ok();
    let extra = if limits {
        "  allowTools: [echo]\n  rateLimits: [{requests: 1000000000, window: 1s}]\n"
    } else {
        "  allowTools: [echo]\n"
    };
    let gw = gateway("local", extra);
    let mut env = env();
    crate::limits::local::prepare(&mut env.kv, &gw.servers[0].limits.known_process_buckets("up"));
    let body = br#"{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello there"}}}"#;
    let h = head("POST", &[("content-type", "application/json")]);
    for i in 0..n {
        env.now_ms = 1_000_000 + i;
        let (mut relay, _) = forward(&gw, &mut env, &h);
        assert!(matches!(relay.on_body(&gw, &mut env, body), Ok(None)));
        assert!(matches!(relay.gate(), gate::Gate::Go(None)));
    }
}

#[test]
fn the_request_edits_computed_in_place_are_those_of_the_diff() {
    let gw = gateway("local", "");
    let mut backends = Vec::new();
    for (authority, passthrough) in [(Some("backend:8000"), false), (None, true), (None, false)] {
        let mut b = gw.server("up").unwrap().proxy.clone().unwrap();
        b.authority = authority.map(str::to_string);
        b.passthrough_auth = passthrough;
        backends.push(b);
    }
    let heads: [&[(&str, &str)]; 6] = [
        &[(":authority", "gw"), (":path", "/mcp-servers/up"), (":method", "POST"), (":scheme", "https")],
        // The bench's head: only the path and the timeout change.
        &[
            (":authority", "gw"),
            (":path", "/mcp-servers/up"),
            (":method", "POST"),
            (":scheme", "http"),
            ("user-agent", "wrk"),
            ("content-type", "application/json"),
            ("content-length", "120"),
            ("x-request-id", "r"),
        ],
        // No pseudo-headers at all (as some tests build heads), credentials and cookies to drop.
        &[("authorization", "Bearer a"), ("cookie", "a=1"), ("cookie", "b=2"), ("accept", "x")],
        // The client's own timeout and session id, repeated names, upper case.
        &[
            (":method", "POST"),
            ("x-envoy-upstream-rq-timeout-ms", "1"),
            ("mcp-session-id", "theirs"),
            ("mcp-session-id", "again"),
            ("Authorization", "Bearer up"),
            ("traceparent", "t1"),
            ("traceparent", "t2"),
            ("content-length", "5"),
            ("x-other", "1"),
            ("x-other", "2"),
        ],
        // Values already as the backend wants them, and several values of a pseudo-header.
        &[
            (":authority", "backend:8000"),
            (":authority", "gw"),
            (":path", "/mcp"),
            (":method", "GET"),
            ("x-envoy-upstream-rq-timeout-ms", "5000"),
            ("authorization", "Bearer a"),
            ("authorization", "Bearer b"),
            ("mcp-session-id", "backend-id"),
        ],
        &[],
    ];
    let mut checked = 0;
    for b in &backends {
        for pairs in heads {
            for method in ["POST", "GET"] {
                for (session, timeout, drop_length) in
                    [(None, Some(5000), false), (Some("backend-id"), None, true), (Some("x"), Some(7), false)]
                {
                    let headers = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                    let h = RequestHead {
                        method: method.into(),
                        path: "/mcp-servers/up".into(),
                        headers,
                        ..Default::default()
                    };
                    let id = session.map(str::to_string);
                    let mut wanted = forward_headers(&h, b, b.path.clone(), id, timeout, None);
                    if drop_length {
                        wanted.retain(|(k, _)| k != "content-length");
                    }
                    let direct = forward_edits(&h, &Picked::of(&h), b, &b.path, session, timeout, drop_length).unwrap();
                    assert_eq!(direct, edits(&h.headers, &wanted), "{pairs:?} {session:?} {timeout:?}");
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 108);
    // A backend with a credential of its own: the diff decides.
    let cred = gateway(
        "local",
        "  securitySchemes: [{id: k, type: apiKey, in: header, name: x-key}]\n  defaultUpstreamSecurity: {id: k, credential: s}\n",
    );
    let b = cred.server("up").unwrap().proxy.clone().unwrap();
    assert!(b.credential.is_some());
    let h = head("POST", &[]);
    assert!(forward_edits(&h, &Picked::of(&h), &b, &b.path, None, None, false).is_none());
    let (_, sent) = forward(&cred, &mut env(), &head("POST", &[]));
    assert_eq!(value(&sent, "x-key"), Some("s"));
}

#[test]
fn the_answer_edits_computed_in_place_are_those_of_the_diff() {
    let gw = gateway("local", "");
    let server = gw.server("up").unwrap();
    let heads: [&[(&str, &str)]; 4] = [
        &[("content-type", "application/json"), ("mcp-session-id", "theirs"), ("content-length", "9")],
        &[
            ("content-length", "9"),
            ("mcp-session-id", "a"),
            ("mcp-session-id", "b"),
            ("content-type", "text/event-stream"),
        ],
        &[("mcp-session-id", "ours"), ("content-type", "application/json")],
        &[("content-type", "application/json"), ("content-length", "9"), ("content-length", "9")],
    ];
    let mut checked = 0;
    for pairs in heads {
        let headers: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        for ours in [None, Some("ours")] {
            for rewrite in [false, true] {
                let h = head("POST", &[]);
                let mut relay = new_relay(server, &h, &Picked::of(&h), ours.map(str::to_string));
                if rewrite {
                    relay.guarded.push((Value::Null, String::new()));
                }
                let (edits, rewrote) = match relay.head(200, &headers, ours.map(str::to_string)) {
                    Answer::Pass(e) => (e, false),
                    Answer::Rewrite(e) => (e, true),
                    _ => panic!("neither passed nor rewritten"),
                };
                assert_eq!(rewrote, rewrite);
                let theirs = headers.iter().any(|(k, _)| k == SESSION);
                let mut out: Vec<(String, String)> = headers
                    .iter()
                    .filter(|(k, _)| k != SESSION && !(rewrite && k == "content-length"))
                    .cloned()
                    .collect();
                if let Some(id) = ours.filter(|_| theirs) {
                    out.push((SESSION.into(), id.into()));
                }
                let expected =
                    if !theirs && !rewrite { Vec::new() } else { super::edits(&headers.clone().into(), &out) };
                assert_eq!(edits, expected, "{pairs:?} {ours:?} {rewrite}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 16);
}

#[test]
fn one_pass_picks_what_the_head_asked_for_one_by_one() {
    // Names of the same length as a picked one (`accept` and `origin`, `content-length` and the session
    // id, `user-agent` and `:authority`), upper case, repeated names: the first value of each, as
    // `RequestHead::header` finds it.
    let h = head(
        "POST",
        &[
            ("accept", "a"),
            ("Origin", "http://o"),
            ("origin", "http://second"),
            ("content-length", "3"),
            ("MCP-Session-Id", "s"),
            ("user-agent", "u"),
            (":authority", "gw"),
            (":method", "POST"),
            (":scheme", "https"),
            ("Authorization", "Bearer a"),
            ("X-Envoy-Allow-MCP-Tools", "a, b"),
            ("mcp-protocol-version", "2025-11-25"),
        ],
    );
    let p = Picked::of(&h);
    for (got, name) in [
        (p.origin, "origin"),
        (p.session, SESSION),
        (p.allow, "x-envoy-allow-mcp-tools"),
        (p.version, "mcp-protocol-version"),
        (p.authority, ":authority"),
        (p.scheme, ":scheme"),
        (p.authorization, "authorization"),
    ] {
        assert!(got.is_some(), "{name}");
        assert_eq!(got, h.header(name), "{name}");
    }
    assert_eq!(p.origin, Some("http://o"));
    let pairs = [("accept", "x"), ("content-length", "0"), ("user-agent", "u"), (":method", "GET")];
    let headers = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let other = RequestHead { method: "GET".into(), headers, ..Default::default() };
    let none = Picked::of(&other);
    assert!(none.origin.is_none() && none.session.is_none() && none.authority.is_none() && none.scheme.is_none());
}
