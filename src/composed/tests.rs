//! Virtual servers through the driver and an in-memory host: config checks, the fan-out and its merge,
//! the cache, a backend down, a backend that forgot its session, routing of calls, pagination, both eras.

use crate::driver::test_host::TestHost;
use crate::gateway::Gateway;
use crate::transport::{HttpResponse, RequestHead};
use crate::upstream::{UpstreamRequest, UpstreamResult};
use serde_json::{json, Value};
use std::cell::RefCell;

const CONFIG: &str = r#"
toolsPageSize: 100
servers:
  - name: rest
    upstream: {cluster: api}
    tools:
      - name: weather
        description: Weather of a city
        args: [{name: city, required: true, position: query}]
        requestTemplate: {url: /weather}
  - {name: a, type: mcp-proxy, mcpServerURL: /mcp, upstream: {cluster: ca}, timeout: 9000}
  - {name: b, type: mcp-proxy, mcpServerURL: "http://b.example:8080/mcp", upstream: {cluster: cb}}
  - name: v
    type: virtual
    timeout: 700
    toolsCacheMs: 1000
    tools:
      - {server: rest, tool: weather, name: forecast, description: Forecast for a city}
      - {server: a, tool: echo, name: say, title: Say}
      - {server: b, tool: add}
      - {server: a, tool: gone}
"#;

/// A Streamable HTTP backend per cluster: a session it remembers (`epoch` bumps forget it), the tools
/// `echo` on `ca` and `add`, `mul` on `cb`; `down` clusters fail. The cluster `guard` is a guard service
/// ([`Backends::guard`]); `guard_down` is one that is down.
struct Backends {
    epoch: RefCell<u32>,
    down: RefCell<Vec<&'static str>>,
    seen: RefCell<Vec<(String, String)>>,
    /// What the guard service was asked: (phase, server, tool).
    asked: RefCell<Vec<(String, String, String)>>,
}

impl Backends {
    fn new() -> Backends {
        Backends {
            epoch: RefCell::new(0),
            down: RefCell::new(vec![]),
            seen: RefCell::new(vec![]),
            asked: RefCell::new(vec![]),
        }
    }

    /// The guard service: refuses arguments that hold `deny:{server asked}`, results that hold `classified`.
    fn guard(&self, r: &UpstreamRequest) -> UpstreamResult {
        if r.cluster == "guard_down" {
            return UpstreamResult::Failed("connection refused".into());
        }
        let body: Value = serde_json::from_slice(r.body.as_deref().unwrap_or_default()).unwrap();
        let field = |k: &str| body[k].as_str().unwrap().to_string();
        self.asked.borrow_mut().push((field("phase"), field("server"), field("tool")));
        assert_eq!(body["consumer"], "-");
        let refused = match field("phase").as_str() {
            "input" => body["arguments"].to_string().contains(&format!("deny:{}", field("server"))),
            _ => body["result"].to_string().contains("classified"),
        };
        let verdict = if refused { json!({"allow": false, "reason": "no"}) } else { json!({"allow": true}) };
        UpstreamResult::Response { status: 200, headers: vec![], body: verdict.to_string().into_bytes() }
    }

    fn answer(&self, r: &UpstreamRequest) -> UpstreamResult {
        if r.cluster.starts_with("guard") {
            return self.guard(r);
        }
        let body: Value = serde_json::from_slice(r.body.as_deref().unwrap_or_default()).unwrap();
        let method = body["method"].as_str().unwrap_or("").to_string();
        // The link's messages, member for member in the order they always had.
        let text = std::str::from_utf8(r.body.as_deref().unwrap_or_default()).unwrap();
        match method.as_str() {
            "initialize" => assert_eq!(
                text,
                format!(
                    r#"{{"jsonrpc":"2.0","id":"mcp-gateway-initialize","method":"initialize","params":{{"protocolVersion":"{}","capabilities":{{}},"clientInfo":{{"name":"mcp-gateway","version":"{}"}}}}}}"#,
                    crate::mcp::Revision::LATEST_LEGACY.as_str(),
                    env!("CARGO_PKG_VERSION")
                )
            ),
            "notifications/initialized" => {
                assert_eq!(text, r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
            }
            m => assert!(
                text.starts_with(&format!(
                    r#"{{"jsonrpc":"2.0","id":"mcp-gateway-request-{}","method":"{m}","params":{{"#,
                    body["id"].as_str().and_then(|i| i.strip_prefix("mcp-gateway-request-")).unwrap_or("?")
                )),
                "{text}"
            ),
        }
        self.seen.borrow_mut().push((r.cluster.clone(), method.clone()));
        if self.down.borrow().contains(&r.cluster.as_str()) {
            return UpstreamResult::Failed("connection refused".into());
        }
        let sid = format!("{}-{}", r.cluster, self.epoch.borrow());
        let header = |n: &str| r.headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let json = |status: u16, v: Value, extra: Vec<(String, String)>| {
            let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
            headers.extend(extra);
            UpstreamResult::Response { status, headers, body: v.to_string().into_bytes() }
        };
        if method == "initialize" {
            let result = json!({"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "x", "version": "1"}});
            return json(
                200,
                json!({"jsonrpc": "2.0", "id": body["id"], "result": result}),
                vec![("mcp-session-id".into(), sid)],
            );
        }
        if header("mcp-session-id") != Some(sid) {
            return json(
                404,
                json!({"jsonrpc": "2.0", "id": body["id"], "error": {"code": -32001, "message": "Session not found"}}),
                vec![],
            );
        }
        assert_eq!(header("mcp-protocol-version").as_deref(), Some("2025-06-18"));
        match method.as_str() {
            "notifications/initialized" => UpstreamResult::Response { status: 202, headers: vec![], body: vec![] },
            "tools/list" => {
                let names: &[&str] = if r.cluster == "ca" { &["echo", "hidden"] } else { &["add", "mul"] };
                let tools: Vec<Value> = names.iter().map(|n| json!({"name": n, "description": format!("{n} of {}", r.cluster), "inputSchema": {"type": "object"}})).collect();
                // An SSE answer, as the Python SDK gives by default, with a notification first.
                let events = format!(
                    "event: message\ndata: {}\n\nevent: message\ndata: {}\n\n",
                    json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "info", "data": "x"}}),
                    json!({"jsonrpc": "2.0", "id": body["id"], "result": {"tools": tools}})
                );
                let headers = vec![("content-type".to_string(), "text/event-stream".to_string())];
                UpstreamResult::Response { status: 200, headers, body: events.into_bytes() }
            }
            "tools/call" if body["params"]["arguments"]["chatty"] == json!(true) => {
                // Notifications ahead of the answer, in an SSE answer: two the client may hear, one it never does.
                let token = body["params"]["_meta"]["progressToken"].clone();
                let events: String = [
                    json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "debug", "data": "low"}}),
                    json!({"jsonrpc": "2.0", "method": "notifications/message", "params": {"level": "warning", "data": "high"}}),
                    json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 1}}),
                    json!({"jsonrpc": "2.0", "method": "notifications/resources/updated", "params": {"uri": "x://y"}}),
                    json!({"jsonrpc": "2.0", "id": body["id"], "result": {"content": [{"type": "text", "text": "done"}]}}),
                ]
                .iter()
                .map(|m| format!("event: message\ndata: {m}\n\n"))
                .collect();
                let headers = vec![("content-type".to_string(), "text/event-stream".to_string())];
                UpstreamResult::Response { status: 200, headers, body: events.into_bytes() }
            }
            "tools/call" => {
                let text = format!(
                    "{} on {} with {}",
                    body["params"]["name"].as_str().unwrap(),
                    r.cluster,
                    body["params"]["arguments"]
                );
                json(
                    200,
                    json!({"jsonrpc": "2.0", "id": body["id"], "result": {"content": [{"type": "text", "text": text}]}}),
                    vec![],
                )
            }
            _ => json(
                200,
                json!({"jsonrpc": "2.0", "id": body["id"], "error": {"code": -32601, "message": "no"}}),
                vec![],
            ),
        }
    }

    fn methods(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.seen.borrow_mut())
    }
}

fn rest_answer(r: &UpstreamRequest) -> UpstreamResult {
    UpstreamResult::Response {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: format!(r#"{{"path":"{}"}}"#, r.path).into_bytes(),
    }
}

fn head(sid: Option<&str>, extra: &[(&str, &str)]) -> RequestHead {
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("accept".to_string(), "application/json, text/event-stream".to_string()),
    ];
    if let Some(s) = sid {
        headers.push(("mcp-session-id".into(), s.into()));
    }
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    RequestHead {
        method: "POST".into(),
        path: "/mcp-servers/v".into(),
        headers: headers.into(),
        client_address: None,
        jwt: None,
    }
}

struct Client<'a> {
    g: &'a Gateway,
    h: TestHost,
    sid: String,
    backends: &'a Backends,
}

impl<'a> Client<'a> {
    fn new(g: &'a Gateway, backends: &'a Backends) -> Client<'a> {
        let mut h = TestHost::new();
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}"#;
        let r = h.send(g, head(None, &[]), init, &|_| UpstreamResult::Failed("none".into()));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["result"]["capabilities"]["tools"], json!({"listChanged": false}));
        let sid = r.headers.iter().find(|(k, _)| k == "mcp-session-id").unwrap().1.clone();
        Client { g, h, sid, backends }
    }

    fn raw(&mut self, method: &str, params: Value, extra: &[(&str, &str)]) -> HttpResponse {
        let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params}).to_string();
        let backends = self.backends;
        let answer = move |r: &UpstreamRequest| if r.cluster == "api" { rest_answer(r) } else { backends.answer(r) };
        self.h.send(self.g, head(Some(&self.sid.clone()), extra), &body, &answer)
    }

    fn rpc(&mut self, method: &str, params: Value) -> Value {
        let r = self.raw(method, params, &[]);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        serde_json::from_slice(&r.body).unwrap()
    }

    fn names(&mut self) -> Vec<String> {
        let v = self.rpc("tools/list", json!({}));
        v["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect()
    }
}

#[test]
fn lists_merge_rest_and_proxied_tools_in_config_order_renamed_after_one_handshake_each() {
    let g = Gateway::from_config_str(CONFIG).unwrap();
    let b = Backends::new();
    let mut c = Client::new(&g, &b);
    let v = c.rpc("tools/list", json!({}));
    let tools = v["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    // `gone` is not offered by `a`: left out; `hidden` and `mul` are not referenced.
    assert_eq!(names, ["forecast", "say", "add"]);
    assert_eq!(tools[0]["description"], "Forecast for a city");
    assert_eq!(tools[1]["title"], "Say");
    assert_eq!(tools[1]["description"], "echo of ca");
    let mut seen = b.methods();
    seen.sort();
    let want = |c: &str| {
        vec![
            (c.to_string(), "initialize".to_string()),
            (c.into(), "notifications/initialized".into()),
            (c.into(), "tools/list".into()),
        ]
    };
    let mut all = want("ca");
    all.extend(want("cb"));
    assert_eq!(seen, all);
    // Fan-out deadline and where the requests go.
    let requests = &c.h.dispatched;
    assert!(requests
        .iter()
        .filter(|r| r.cluster == "ca")
        .all(|r| r.path == "/mcp" && r.authority == "ca" && r.timeout_ms == 700));
    assert!(requests.iter().filter(|r| r.cluster == "cb").all(|r| r.authority == "b.example:8080"));
}

#[test]
fn the_merged_list_is_cached_per_worker_until_it_expires() {
    let g = Gateway::from_config_str(CONFIG).unwrap();
    let b = Backends::new();
    let mut c = Client::new(&g, &b);
    c.names();
    b.methods();
    c.h.env.now_ms += 999;
    assert_eq!(c.names(), ["forecast", "say", "add"]);
    assert!(b.methods().is_empty(), "answered from the cache");
    c.h.env.now_ms += 1;
    assert_eq!(c.names(), ["forecast", "say", "add"]);
    // Expired: fetched again, on the sessions held (no new handshake).
    let mut seen = b.methods();
    seen.sort();
    assert_eq!(seen, [("ca".to_string(), "tools/list".to_string()), ("cb".into(), "tools/list".into())]);
}

#[test]
fn a_backend_down_removes_only_its_tools_and_is_logged_once() {
    let g = Gateway::from_config_str(CONFIG).unwrap();
    let b = Backends::new();
    b.down.borrow_mut().push("cb");
    let mut c = Client::new(&g, &b);
    assert_eq!(c.names(), ["forecast", "say"]);
    assert_eq!(c.h.warnings.len(), 1, "{:?}", c.h.warnings);
    assert!(c.h.warnings[0].contains("proxied server 'b' could not list its tools (connection refused)"));
    // Not cached: asked again, not logged again.
    assert_eq!(c.names(), ["forecast", "say"]);
    assert_eq!(c.h.warnings.len(), 1);
    assert!(b.methods().iter().any(|(c, _)| c == "cb"));
    // Its calls fail clearly; the others work.
    let r = c.rpc("tools/call", json!({"name": "add", "arguments": {}}));
    assert_eq!(r["error"]["code"], -32603);
    assert!(r["error"]["message"].as_str().unwrap().contains("proxied server 'b' failed"));
    let r = c.rpc("tools/call", json!({"name": "say", "arguments": {"text": "hi"}}));
    assert_eq!(r["result"]["content"][0]["text"], r#"echo on ca with {"text":"hi"}"#);
    b.down.borrow_mut().clear();
    c.h.env.now_ms += 5_000;
    assert_eq!(c.names(), ["forecast", "say", "add"]);
    assert!(c.h.warnings[1].contains("'b' lists its tools again"));
}

#[test]
fn the_virtual_servers_policy_hides_and_refuses_tools() {
    let config = CONFIG.replace(
        "    toolsCacheMs: 1000\n",
        "    toolsCacheMs: 1000\n    policy: {default: allow, rules: [{deny: {tools: [say]}}]}\n",
    );
    let g = Gateway::from_config_str(&config).unwrap();
    let b = Backends::new();
    let mut c = Client::new(&g, &b);
    let listed = c.rpc("tools/list", json!({}));
    let names: Vec<&str> =
        listed["result"]["tools"].as_array().unwrap().iter().filter_map(|t| t["name"].as_str()).collect();
    assert!(names.contains(&"forecast") && !names.contains(&"say"), "{listed}");
    let refused = c.rpc("tools/call", json!({"name": "say", "arguments": {"text": "hi"}}));
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    assert_eq!(refused["error"]["message"], "Forbidden: an anonymous caller may not use tool 'say'");
}

#[test]
fn a_virtual_servers_quota_counts_in_redis() {
    let config = CONFIG
        .replace("    toolsCacheMs: 1000\n", "    toolsCacheMs: 1000\n    quotas: [{requests: 1, period: day}]\n");
    let e = Gateway::from_config_str(&config).unwrap_err().to_string();
    assert!(e.contains("server 'v'") && e.contains("quotas"), "{e}");
    let g =
        Gateway::from_config_str(&format!("sessions: {{store: local, redis: {{cluster: redis}}}}\n{config}")).unwrap();
    let b = Backends::new();
    let mut c = Client::new(&g, &b);
    assert!(c.rpc("tools/call", json!({"name": "say", "arguments": {}}))["result"].is_object());
    let v = c.rpc("tools/call", json!({"name": "add", "arguments": {}}));
    assert!(
        v["error"]["message"].as_str().unwrap().contains("quota exceeded: server 'v' allows 1 calls per day"),
        "{v}"
    );
    let keys: Vec<String> = c.h.redis.keys.keys().map(|k| String::from_utf8_lossy(k).to_string()).collect();
    assert!(keys.iter().any(|k| k.contains("v/*/q")), "counted in Redis under the virtual server: {keys:?}");
}

#[test]
fn calls_go_to_the_owning_server_under_the_original_name() {
    let g = Gateway::from_config_str(CONFIG).unwrap();
    let b = Backends::new();
    let mut c = Client::new(&g, &b);
    let r = c.rpc("tools/call", json!({"name": "say", "arguments": {"text": "hi"}}));
    assert_eq!(r["id"], 7);
    assert_eq!(r["result"]["content"][0]["text"], r#"echo on ca with {"text":"hi"}"#);
    let sent = c.h.dispatched.last().unwrap();
    assert_eq!(sent.timeout_ms, 9000, "the proxied server's own timeout");
    // A REST tool runs as on its own server.
    let r = c.rpc("tools/call", json!({"name": "forecast", "arguments": {"city": "Oslo"}}));
    assert_eq!(r["result"]["content"][0]["text"], r#"{"path":"/weather?city=Oslo"}"#, "{r}");
    assert_eq!(c.h.dispatched.last().unwrap().cluster, "api");
    // Names clients cannot call.
    for name in ["echo", "weather", "hidden", "nope"] {
        let r = c.rpc("tools/call", json!({"name": name, "arguments": {}}));
        assert_eq!(r["error"]["message"], format!("Unknown tool: {name}"));
    }
    // The request's allowed tools apply to the exposed names.
    let r = c.raw("tools/call", json!({"name": "say", "arguments": {}}), &[("x-envoy-allow-mcp-tools", "forecast")]);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["message"], "Tool not allowed: say");
    let r = c.raw("tools/list", json!({}), &[("x-envoy-allow-mcp-tools", "forecast, add")]);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["result"]["tools"].as_array().unwrap().len(), 2);
}

#[test]
fn a_proxied_calls_notifications_go_ahead_of_its_answer_to_those_who_listen() {
    let g = Gateway::from_config_str(CONFIG).unwrap();
    let b = Backends::new();
    let mut c = Client::new(&g, &b);
    let events = |r: &HttpResponse| -> Vec<Value> {
        let text = String::from_utf8_lossy(&r.body).to_string();
        text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect()
    };
    // A session that set no level hears every level; the progress of its own token; never the rest.
    let params = json!({"name": "say", "arguments": {"chatty": true}, "_meta": {"progressToken": "p1"}});
    let r = c.raw("tools/call", params, &[]);
    assert_eq!(r.headers.iter().find(|(k, _)| k == "content-type").unwrap().1, "text/event-stream");
    let got = events(&r);
    let methods: Vec<&str> = got.iter().map(|m| m["method"].as_str().unwrap_or("answer")).collect();
    assert_eq!(methods, ["notifications/message", "notifications/message", "notifications/progress", "answer"]);
    assert_eq!((got[2]["params"]["progressToken"].clone(), got[3]["id"].clone()), (json!("p1"), json!(7)));
    assert_eq!(got[3]["result"]["content"][0]["text"], "done");
    // After logging/setLevel warning: only the warning; without a token, no progress.
    assert!(c.rpc("logging/setLevel", json!({"level": "warning"})).get("result").is_some());
    let got = events(&c.raw("tools/call", json!({"name": "say", "arguments": {"chatty": true}}), &[]));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!((got[0]["params"]["data"].clone(), got[1]["id"].clone()), (json!("high"), json!(7)));
}

#[test]
fn a_backend_that_forgot_the_session_gets_a_new_one_and_the_request_once_more() {
    let g = Gateway::from_config_str(CONFIG).unwrap();
    let b = Backends::new();
    let mut c = Client::new(&g, &b);
    c.rpc("tools/call", json!({"name": "say", "arguments": {}}));
    b.methods();
    *b.epoch.borrow_mut() += 1; // the backend restarted
    let r = c.rpc("tools/call", json!({"name": "say", "arguments": {}}));
    assert!(r["result"].is_object(), "{r}");
    let m: Vec<String> = b.methods().into_iter().map(|(_, m)| m).collect();
    assert_eq!(m, ["tools/call", "initialize", "notifications/initialized", "tools/call"]);
}

#[test]
fn a_call_that_fails_on_the_forgotten_session_does_not_bring_it_back() {
    // Calls in flight on the held session when the backend restarts: one is cut off, the next gets 404 and
    // re-initialises. The one cut off ends last and must not hold the forgotten session again, or every
    // later call pays a 404 and a handshake.
    let g = Gateway::from_config_str(CONFIG).unwrap();
    let b = Backends::new();
    let mut c = Client::new(&g, &b);
    c.rpc("tools/call", json!({"name": "say", "arguments": {}})); // a session held on `ca`
    let mut h = TestHost::new();
    let mut cut = start_batch(&g, &mut h, call(json!(1), "say", json!({})));
    assert_eq!(h.upstream_queue.len(), 1, "in flight on the held session");
    *b.epoch.borrow_mut() += 1; // the backend restarted
    assert!(c.rpc("tools/call", json!({"name": "say", "arguments": {}}))["result"].is_object());
    let failed = |_: &UpstreamRequest| UpstreamResult::Failed("connection reset".into());
    assert_eq!(h.settle(&g, &mut cut, &failed), crate::driver::Progress::Done);
    b.methods();
    assert!(c.rpc("tools/call", json!({"name": "say", "arguments": {}}))["result"].is_object());
    let m: Vec<String> = b.methods().into_iter().map(|(_, m)| m).collect();
    assert_eq!(m, ["tools/call"], "on the new session");
}

#[test]
fn requests_in_flight_together_on_the_held_session_carry_ids_of_their_own() {
    // The SDK's servers key a session's answer streams by request id: two calls sent at once under one id
    // get one answer between them (seen in e2e), so each request the worker sends has its own.
    let g = Gateway::from_config_str(CONFIG).unwrap();
    let b = Backends::new();
    Client::new(&g, &b).rpc("tools/call", json!({"name": "say", "arguments": {}})); // a session held on `ca`
    let mut h = TestHost::new();
    let items = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        call(json!(2), "say", json!({"n": 1})),
        call(json!(3), "say", json!({"n": 2})),
    ]);
    start_batch(&g, &mut h, items);
    let mut ids = Vec::new();
    for (_, r) in h.upstream_queue.iter().filter(|(_, r)| r.cluster == "ca") {
        let body: Value = serde_json::from_slice(r.body.as_deref().unwrap_or_default()).unwrap();
        assert_ne!(body["method"], "initialize", "the held session is used");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 3, "{ids:?}");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
    // And each answer goes to its own call.
    let answers =
        batch(&g, &b, json!([call(json!(2), "say", json!({"n": 1})), call(json!(3), "say", json!({"n": 2}))]));
    assert_eq!((text(&answers[0]), text(&answers[1])), (r#"echo on ca with {"n":1}"#, r#"echo on ca with {"n":2}"#));
}

#[test]
fn the_merged_list_pages_and_serves_the_stateless_revision() {
    let g = Gateway::from_config_str(&CONFIG.replace("toolsPageSize: 100", "toolsPageSize: 2")).unwrap();
    let b = Backends::new();
    let mut c = Client::new(&g, &b);
    let first = c.rpc("tools/list", json!({}));
    assert_eq!(first["result"]["tools"].as_array().unwrap().len(), 2);
    let cursor = first["result"]["nextCursor"].clone();
    let second = c.rpc("tools/list", json!({"cursor": cursor}));
    assert_eq!(second["result"]["tools"][0]["name"], "add");
    assert!(second["result"].get("nextCursor").is_none());
    // 2026-07-28: no session; the same list, with its cache hints.
    let params = json!({"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}});
    let body = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": params}).to_string();
    let mut h = TestHost::new();
    let headers = [("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/list")];
    let r = h.send(&g, head(None, &headers), &body, &|r| b.answer(r));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["result"]["resultType"], "complete", "{v}");
    assert_eq!(v["result"]["tools"][1]["name"], "say");
}

/// A session at 2025-03-26, the revision with batches, and the batch `items` sent in it: the driver, before
/// anything was answered (what went out is in `h.upstream_queue`).
fn start_batch(g: &Gateway, h: &mut TestHost, items: Value) -> crate::driver::Driver {
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26"}}"#;
    let r = h.send(g, head(None, &[]), init, &|_| UpstreamResult::Failed("none".into()));
    let sid = r.headers.iter().find(|(k, _)| k == "mcp-session-id").unwrap().1.clone();
    h.responses.clear();
    h.start(g, &head(Some(&sid), &[]), items.to_string().as_bytes()).unwrap()
}

/// A batch's answers, every upstream request answered by the backends (REST on `api`).
fn batch(g: &Gateway, b: &Backends, items: Value) -> Vec<Value> {
    let mut h = TestHost::new();
    let mut d = start_batch(g, &mut h, items);
    let answer = |r: &UpstreamRequest| if r.cluster == "api" { rest_answer(r) } else { b.answer(r) };
    assert_eq!(h.settle(g, &mut d, &answer), crate::driver::Progress::Done);
    let r = h.responses.pop().unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    match serde_json::from_slice(&r.body).unwrap() {
        Value::Array(answers) => answers,
        v => panic!("not an array: {v}"),
    }
}

fn call(id: Value, name: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": arguments}})
}

fn text(answer: &Value) -> &str {
    answer["result"]["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text: {answer}"))
}

#[test]
fn a_batch_serves_a_virtual_servers_tools_at_once_and_answers_in_one_array() {
    let g = Gateway::from_config_str(CONFIG).unwrap();
    let b = Backends::new();
    let items = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        call(json!("two"), "forecast", json!({"city": "Oslo"})),
        call(json!(3), "say", json!({"x": 1})),
        call(json!(4), "add", json!({"a": 2})),
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}},
        {"jsonrpc": "2.0", "id": 5, "method": "ping"},
        call(json!(6), "nope", json!({})),
    ]);
    // Everything goes out at once: the REST call, and each proxied server's handshake for the list's
    // fan-out and for each call.
    let mut h = TestHost::new();
    start_batch(&g, &mut h, items.clone());
    let mut first: Vec<(String, String)> = h
        .upstream_queue
        .iter()
        .map(|(_, r)| {
            let body: Value = serde_json::from_slice(r.body.as_deref().unwrap_or_default()).unwrap_or_default();
            (r.cluster.clone(), body["method"].as_str().unwrap_or("").to_string())
        })
        .collect();
    first.sort();
    let init = |c: &str| (c.to_string(), "initialize".to_string());
    assert_eq!(first, [("api".to_string(), String::new()), init("ca"), init("ca"), init("cb"), init("cb")]);
    let answers = batch(&g, &b, items);
    let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
    assert_eq!(ids, [&json!(1), &json!("two"), &json!(3), &json!(4), &json!(5), &json!(6)], "{answers:?}");
    let names: Vec<&str> =
        answers[0]["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["forecast", "say", "add"]);
    assert!(text(&answers[1]).contains("/weather?city=Oslo"), "{}", answers[1]);
    assert_eq!(text(&answers[2]), r#"echo on ca with {"x":1}"#);
    assert_eq!(text(&answers[3]), r#"add on cb with {"a":2}"#);
    assert_eq!(answers[4], json!({"jsonrpc": "2.0", "id": 5, "result": {}}));
    assert_eq!(answers[5]["error"]["code"], -32602);
    assert_eq!(answers[5]["error"]["message"], "Unknown tool: nope");
}

#[test]
fn a_batch_of_a_virtual_server_keeps_to_max_calls_per_request_and_hears_its_calls_notes_first() {
    let g = Gateway::from_config_str(&format!("maxCallsPerRequest: 2\n{CONFIG}")).unwrap();
    let b = Backends::new();
    let items = json!([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        call(json!(2), "say", json!({"chatty": true})),
        call(json!(3), "forecast", json!({"city": "Oslo"})),
        call(json!(4), "add", json!({})),
    ]);
    let mut h = TestHost::new();
    let mut d = start_batch(&g, &mut h, items);
    let answer = |r: &UpstreamRequest| if r.cluster == "api" { rest_answer(r) } else { b.answer(r) };
    h.settle(&g, &mut d, &answer);
    let r = h.responses.pop().unwrap();
    let body = String::from_utf8_lossy(&r.body).to_string();
    // An SSE answer: the call's notifications the session hears (every level), then the one array.
    let events: Vec<Value> = body
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert!(events.len() >= 2, "{body}");
    let (answers, notes) = events.split_last().unwrap();
    assert!(notes.iter().all(|n| n["method"] == "notifications/message"), "{notes:?}");
    assert_eq!(notes.len(), 2, "{notes:?}");
    let Value::Array(answers) = answers else { panic!("{body}") };
    assert_eq!(text(&answers[1]), "done");
    assert!(text(&answers[2]).contains("city=Oslo"));
    assert_eq!(answers[3]["id"], 4);
    assert!(
        answers[3]["error"]["message"].as_str().unwrap().contains("at most 2 (maxCallsPerRequest)"),
        "{}",
        answers[3]
    );
    assert!(!b.methods().iter().any(|(c, m)| c == "cb" && m == "tools/call"), "the refused call never went out");
}

#[test]
fn a_virtual_servers_limits_count_its_calls_beside_its_tools_own_servers() {
    let b = Backends::new();
    let with = |v: &str, rest: &str, a: &str| {
        let text = CONFIG
            .replace("    timeout: 700\n", &format!("    timeout: 700\n{v}"))
            .replace("requestTemplate: {url: /weather}\n", &format!("requestTemplate: {{url: /weather}}\n{rest}"))
            .replace("timeout: 9000}", &format!("timeout: 9000{a}}}"));
        Gateway::from_config_str(&text).unwrap()
    };
    // The virtual server's own: two calls a minute, per consumer (anonymous callers share one counter).
    let g = with("    rateLimits: [{requests: 2, window: 1m, per: consumer}]\n", "", "");
    let mut c = Client::new(&g, &b);
    assert_eq!(text(&c.rpc("tools/call", json!({"name": "say", "arguments": {}}))), "echo on ca with {}");
    assert!(text(&c.rpc("tools/call", json!({"name": "add", "arguments": {}}))).starts_with("add on cb"));
    let v = c.rpc("tools/call", json!({"name": "forecast", "arguments": {"city": "x"}}));
    assert_eq!(v["error"]["code"], -32000, "{v}");
    let why = v["error"]["message"].as_str().unwrap();
    assert!(why.contains("server 'v' allows 2 calls per 1m for anonymous callers (rateLimits[0])"), "{why}");
    // In a batch: the calls past the limit refused, each with its id; the others served.
    let g = with("    rateLimits: [{requests: 1, window: 1m}]\n", "", "");
    let answers =
        batch(&g, &b, json!([call(json!(1), "say", json!({})), call(json!(2), "forecast", json!({"city": "x"}))]));
    assert_eq!(text(&answers[0]), "echo on ca with {}");
    assert_eq!((answers[1]["id"].clone(), answers[1]["error"]["code"].clone()), (json!(2), json!(-32000)));
    // A REST tool's own limit, on its own server's counter.
    let g = with("", "        rateLimits: [{requests: 1, window: 1m}]\n", "");
    let mut c = Client::new(&g, &b);
    assert!(c.rpc("tools/call", json!({"name": "forecast", "arguments": {"city": "x"}}))["result"].is_object());
    let v = c.rpc("tools/call", json!({"name": "forecast", "arguments": {"city": "x"}}));
    assert!(v["error"]["message"].as_str().unwrap().contains("tool 'weather' of server 'rest' allows 1 calls"), "{v}");
    // A proxied server's own limit, which its relay applies to its direct clients.
    let g = with("", "", ", rateLimits: [{requests: 1, window: 1m}]");
    let mut c = Client::new(&g, &b);
    assert!(c.rpc("tools/call", json!({"name": "say", "arguments": {}}))["result"].is_object());
    let v = c.rpc("tools/call", json!({"name": "say", "arguments": {}}));
    assert!(v["error"]["message"].as_str().unwrap().contains("server 'a' allows 1 calls per 1m"), "{v}");
    assert!(c.rpc("tools/call", json!({"name": "add", "arguments": {}}))["result"].is_object(), "b is not limited");
}

#[test]
fn a_virtual_servers_guardrails_check_arguments_and_filter_results_after_the_owners() {
    let b = Backends::new();
    let guard =
        "    guardrails: {mask: [email, card], denyPatterns: [forbidden], tools: {add: {maxResultBytes: 10}}}\n";
    let text_cfg = CONFIG
        .replace("    timeout: 700\n", &format!("    timeout: 700\n{guard}"))
        .replace("timeout: 9000}", "timeout: 9000, guardrails: {denyPatterns: [secret]}}");
    let g = Gateway::from_config_str(&text_cfg).unwrap();
    let mut c = Client::new(&g, &b);
    // Results masked, of a proxied tool and of a REST tool.
    let v = c.rpc("tools/call", json!({"name": "say", "arguments": {"to": "bob@example.com"}}));
    assert!(text(&v).starts_with("echo on ca") && !text(&v).contains("bob@example.com"), "{v}");
    let v = c.rpc("tools/call", json!({"name": "forecast", "arguments": {"city": "4111111111111111"}}));
    assert!(text(&v).contains("/weather?city=") && !text(&v).contains("4111111111111111"), "{v}");
    b.methods();
    // Arguments refused before anything goes out: by the virtual server's patterns, by the proxied server's.
    let v = c.rpc("tools/call", json!({"name": "say", "arguments": {"x": "forbidden"}}));
    assert!(v["error"]["message"].as_str().unwrap().contains("matches a denied pattern"), "{v}");
    let v = c.rpc("tools/call", json!({"name": "say", "arguments": {"x": "a secret"}}));
    assert!(v["error"]["message"].as_str().unwrap().contains("tool 'echo' matches a denied pattern"), "{v}");
    let v = c.rpc("tools/call", json!({"name": "forecast", "arguments": {"city": "forbidden"}}));
    assert!(v["error"]["message"].as_str().unwrap().contains("tool 'forecast' matches a denied pattern"), "{v}");
    assert!(b.methods().is_empty());
    assert!(c.h.dispatched.iter().all(|r| !r.path.contains("forbidden")));
    // A tool's own size limit, on its result.
    let v = c.rpc("tools/call", json!({"name": "add", "arguments": {}}));
    assert!(v["error"]["message"].as_str().unwrap().contains("maxResultBytes"), "{v}");
    // The same in a batch.
    let answers = batch(
        &g,
        &b,
        json!([call(json!(1), "say", json!({"x": "forbidden"})), call(json!(2), "say", json!({"to": "a@b.org"}))]),
    );
    assert!(answers[0]["error"]["message"].as_str().unwrap().contains("denied pattern"));
    assert!(!text(&answers[1]).contains("a@b.org"), "{}", answers[1]);
}

#[test]
fn a_virtual_servers_guardrails_name_its_tools() {
    let e = refused("  - {name: v, type: virtual, tools: [{server: rest, tool: weather}], guardrails: {tools: {forecast: {mask: [email]}}}}\n");
    assert_eq!(
        (e.server.as_deref(), e.tool.as_deref(), e.field.as_str()),
        (Some("v"), Some("forecast"), "guardrails.tools.forecast")
    );
    let e = refused("  - {name: v, type: virtual, tools: [{server: rest, tool: weather}], guardrails: {tools: {forecast: {external: {cluster: g}}}}}\n");
    assert_eq!(e.field, "guardrails.tools.forecast");
    let e = refused("  - {name: v, type: virtual, tools: [{server: rest, tool: weather}], guardrails: {external: {cluster: g, input: false}}}\n");
    assert_eq!(e.field, "guardrails.external.input");
}

/// A virtual server with its own guard service (for every tool, checking results too; `add` by one that is
/// down, failing closed; `forecast` by one that is down, failing open), in front of REST server `rest` and
/// proxied server `a`, each with a guard service of its own.
fn guarded_by_services() -> Gateway {
    let service = "external: {cluster: guard, output: true}";
    let down = "{external: {cluster: guard_down, timeoutMs: 300";
    let own =
        format!("    guardrails: {{{service}, tools: {{add: {down}}}}}, forecast: {down}, failOpen: true, output: true}}}}}}}}\n");
    let config = CONFIG
        .replace("    timeout: 700\n", &format!("    timeout: 700\n{own}"))
        .replace("timeout: 9000}", &format!("timeout: 9000, guardrails: {{{service}}}}}"))
        .replace(
            "    upstream: {cluster: api}\n",
            &format!("    upstream: {{cluster: api}}\n    guardrails: {{{service}}}\n"),
        );
    Gateway::from_config_str(&config).unwrap()
}

fn asked(b: &Backends) -> Vec<String> {
    std::mem::take(&mut *b.asked.borrow_mut()).into_iter().map(|(p, s, t)| format!("{p} {s}/{t}")).collect()
}

#[test]
fn the_virtual_servers_guard_service_is_asked_before_the_owners_about_arguments_and_results() {
    let g = guarded_by_services();
    let b = Backends::new();
    let mut c = Client::new(&g, &b);
    c.names();
    b.methods();
    let start = c.h.dispatched.len();
    let v = c.rpc("tools/call", json!({"name": "say", "arguments": {"text": "hi"}}));
    assert_eq!(text(&v), r#"echo on ca with {"text":"hi"}"#);
    assert_eq!(asked(&b), ["input v/say", "input a/echo", "output v/say", "output a/echo"]);
    // The backend is called once both allowed the arguments, and answers before the results are checked.
    let clusters: Vec<&str> = c.h.dispatched[start..].iter().map(|r| r.cluster.as_str()).collect();
    assert_eq!(clusters, ["guard", "guard", "ca", "guard", "guard"]);
    assert!(c.h.dispatched[start..].iter().filter(|r| r.cluster == "guard").all(|r| r.timeout_ms == 500));
    // A REST tool: the same order, each server told its own name of the tool.
    let v = c.rpc("tools/call", json!({"name": "say", "arguments": {"text": "hi"}}));
    assert!(v["result"].is_object(), "{v}");
    asked(&b);
    let start = c.h.dispatched.len();
    let v = c.rpc("tools/call", json!({"name": "forecast", "arguments": {"city": "Oslo"}}));
    assert!(text(&v).contains("/weather?city=Oslo"), "{v}");
    // forecast: the virtual server's service for it is down and fails open; the REST server's is asked.
    assert_eq!(asked(&b), ["input rest/weather", "output rest/weather"]);
    let clusters: Vec<&str> = c.h.dispatched[start..].iter().map(|r| r.cluster.as_str()).collect();
    assert_eq!(clusters, ["guard_down", "guard", "api", "guard_down", "guard"]);
}

#[test]
fn a_guard_service_refuses_a_virtual_servers_call_as_on_a_rest_server() {
    let g = guarded_by_services();
    let b = Backends::new();
    let mut c = Client::new(&g, &b);
    c.names();
    b.methods();
    let refused = |v: &Value, what: &str| {
        assert_eq!(v["error"]["data"], json!({"cause": "guardrail"}), "{v}");
        assert_eq!(v["error"]["message"], format!("guardrail: the guard service refused the {what}: no"), "{v}");
    };
    // Arguments, by the virtual server's service (the owner's is not asked) or by the owner's.
    refused(&c.rpc("tools/call", json!({"name": "say", "arguments": {"x": "deny:v"}})), "input of tool 'say'");
    assert_eq!(asked(&b), ["input v/say"]);
    refused(&c.rpc("tools/call", json!({"name": "say", "arguments": {"x": "deny:a"}})), "input of tool 'echo'");
    refused(
        &c.rpc("tools/call", json!({"name": "forecast", "arguments": {"city": "deny:rest"}})),
        "input of tool 'weather'",
    );
    assert!(b.methods().is_empty(), "no backend was called");
    assert!(c.h.dispatched.iter().all(|r| r.cluster != "api"));
    // A result, by the first service that sees it: the backend was called, the client never sees the result.
    asked(&b);
    let v = c.rpc("tools/call", json!({"name": "say", "arguments": {"x": "classified"}}));
    refused(&v, "output of tool 'say'");
    assert!(!v.to_string().contains("echo on"), "{v}");
    assert_eq!(asked(&b), ["input v/say", "input a/echo", "output v/say"]);
    let v = c.rpc("tools/call", json!({"name": "forecast", "arguments": {"city": "classified"}}));
    refused(&v, "output of tool 'weather'");
    // A service that is down: refused when failing closed (the backend not called), as on a REST server.
    b.methods();
    let v = c.rpc("tools/call", json!({"name": "add", "arguments": {}}));
    assert_eq!(v["error"]["data"], json!({"cause": "guardrail"}), "{v}");
    assert_eq!(
        v["error"]["message"],
        "guardrail: the guard service could not check the input of tool 'add' (no answer (connection refused)), and \
         guardrails.external.failOpen is false"
    );
    assert!(b.methods().is_empty());
}

#[test]
fn a_batch_checks_each_call_through_the_guard_services_and_answers_in_one_array() {
    let g = guarded_by_services();
    let b = Backends::new();
    let answers = batch(
        &g,
        &b,
        json!([
            call(json!(1), "say", json!({"x": "deny:v"})),
            call(json!(2), "say", json!({"x": "ok"})),
            call(json!(3), "forecast", json!({"city": "classified"})),
            call(json!(4), "add", json!({})),
            call(json!(5), "forecast", json!({"city": "Oslo"})),
        ]),
    );
    let ids: Vec<&Value> = answers.iter().map(|a| &a["id"]).collect();
    assert_eq!(ids, [&json!(1), &json!(2), &json!(3), &json!(4), &json!(5)]);
    assert!(answers[0]["error"]["message"].as_str().unwrap().contains("refused the input of tool 'say'"));
    assert_eq!(text(&answers[1]), r#"echo on ca with {"x":"ok"}"#);
    assert!(answers[2]["error"]["message"].as_str().unwrap().contains("refused the output of tool 'weather'"));
    assert!(answers[3]["error"]["message"].as_str().unwrap().contains("could not check the input of tool 'add'"));
    assert!(text(&answers[4]).contains("/weather?city=Oslo"));
    let mut asked = asked(&b);
    asked.sort();
    let mut want = vec!["input v/say", "input v/say", "input a/echo", "output v/say", "output a/echo"];
    want.extend(["input rest/weather", "output rest/weather", "input rest/weather", "output rest/weather"]);
    want.sort();
    assert_eq!(asked, want);
}

fn refused(extra: &str) -> crate::config::ConfigError {
    let base = CONFIG.split("  - name: v").next().unwrap();
    Gateway::from_config_str(&format!("{base}{extra}")).unwrap_err()
}

#[test]
fn config_errors_name_server_tool_and_field() {
    let e = refused("  - {name: v, type: virtual, tools: [{server: nope, tool: x}]}\n");
    assert_eq!((e.server.as_deref(), e.tool.as_deref(), e.field.as_str()), (Some("v"), Some("x"), "tools[0].server"));
    assert!(e.message.contains("no server is named 'nope'"));
    let e = refused("  - {name: v, type: virtual, tools: [{server: rest, tool: rain}]}\n");
    assert_eq!(e.field, "tools[0].tool");
    assert!(e.message.contains("server 'rest' has no tool 'rain'"));
    let e =
        refused("  - {name: v, type: virtual, tools: [{server: rest, tool: weather}, {server: a, tool: weather}]}\n");
    assert_eq!((e.field.as_str(), e.tool.as_deref()), ("tools[1].name", Some("weather")));
    let e = refused("  - {name: v, type: virtual, tools: [{server: w, tool: x}]}\n  - {name: w, type: virtual, tools: [{server: rest, tool: weather}]}\n");
    assert!(e.message.contains("'w' is a virtual server"), "{e}");
    let e = refused("  - {name: p, type: mcp-proxy, mcpServerURL: /mcp}\n  - {name: v, type: virtual, tools: [{server: p, tool: x}]}\n");
    assert!(e.message.contains("needs upstream.cluster"), "{e}");
    let e = refused("  - {name: v, type: virtual, tools: [{server: rest, tool: weather, nam: x}]}\n");
    assert_eq!(e.field, "tools[0]");
    let e = refused("  - {name: v, type: virtual}\n");
    assert_eq!(e.field, "tools");
    let e = refused("  - {name: v, toolsCacheMs: 5, tools: []}\n");
    assert_eq!(e.field, "toolsCacheMs");
}

#[test]
fn a_tool_set_takes_tools_under_higress_names() {
    let base = CONFIG.split("  - name: v").next().unwrap();
    let text = format!("{base}toolSet:\n  name: set\n  serverTools:\n    - {{serverName: rest, tools: [weather]}}\n    - {{serverName: b, tools: [add]}}\n");
    let g = Gateway::from_config_str(&text).unwrap();
    let v = g.server("set").unwrap().composed.as_deref().unwrap();
    let names: Vec<&str> = v.refs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["rest___weather", "b___add"]);
    let e = Gateway::from_config_str(&format!(
        "{base}toolSet: {{name: set, serverTools: [{{serverName: rest, tools: [rain]}}]}}\n"
    ))
    .unwrap_err();
    assert_eq!(e.field, "toolSet.serverTools[0].tools[0].tool");
}

#[test]
fn a_top_level_tool_set_takes_its_gateway_cluster_beside_server_tools() {
    let base = LOOPBACK.split("  - name: v\n").next().unwrap();
    let set = "toolSet:\n  name: set\n  serverTools:\n    - {serverName: a, tools: [echo]}\n    - {serverName: legacy, tools: [echo]}\n";
    let e = Gateway::from_config_str(&format!("{base}{set}")).unwrap_err();
    assert_eq!(
        (e.server.as_deref(), e.tool.as_deref(), e.field.as_str()),
        (Some("set"), Some("legacy___echo"), "toolSet.serverTools[1].tools[0].server")
    );
    assert!(
        e.message.contains("add gatewayCluster") && e.message.contains("to the toolSet, beside serverTools"),
        "{e}"
    );
    let g = Gateway::from_config_str(&format!("{base}{set}  gatewayCluster: self\n")).unwrap();
    let v = g.server("set").unwrap().composed.as_deref().unwrap();
    assert_eq!(v.gateway_cluster.as_deref(), Some("self"));
    assert_eq!(v.refs.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a___echo", "legacy___echo"]);
    assert!(g.loopback.is_some(), "its passes are signed and checked");
    let e = Gateway::from_config_str(&format!("{base}{set}  gatewayCluster: 7\n")).unwrap_err();
    assert_eq!((e.server.as_deref(), e.field.as_str()), (Some("set"), "toolSet.gatewayCluster"));
    // On a server of type: virtual, either place names it; two different clusters are refused.
    let server = format!(
        "{base}  - name: set\n    type: virtual\n    gatewayCluster: self\n    {}",
        set.replace('\n', "\n    ")
    );
    let g = Gateway::from_config_str(&server).unwrap();
    assert_eq!(g.server("set").unwrap().composed.as_deref().unwrap().gateway_cluster.as_deref(), Some("self"));
    let both =
        server.replace("name: set\n      serverTools", "name: set\n      gatewayCluster: other\n      serverTools");
    let e = Gateway::from_config_str(&both).unwrap_err();
    assert_eq!((e.server.as_deref(), e.field.as_str()), (Some("set"), "toolSet.gatewayCluster"), "{e}");
    assert!(e.message.contains("'other' differs from the server's gatewayCluster 'self'"), "{e}");
}

#[test]
fn the_plugins_gateway_cluster_is_every_virtual_servers_unless_it_names_its_own() {
    let bare = LOOPBACK.replace("    gatewayCluster: self\n", "");
    let set = "toolSet:\n  name: set\n  serverTools:\n    - {serverName: legacy, tools: [echo]}\n";
    let cluster =
        |g: &Gateway, name: &str| g.server(name).unwrap().composed.as_deref().unwrap().gateway_cluster.clone();
    // Inherited: by a virtual server and by the top-level toolSet, neither of which names one.
    let g = Gateway::from_config_str(&format!("gatewayCluster: back\n{bare}{set}")).unwrap();
    assert_eq!((cluster(&g, "v").as_deref(), cluster(&g, "set").as_deref()), (Some("back"), Some("back")));
    assert!(g.loopback.is_some() && g.server("v").unwrap().composed.as_deref().unwrap().loops_back);
    // Overridden: the server's own, and the toolSet's own, win over the plugin's.
    let own = format!("gatewayCluster: back\n{LOOPBACK}{set}  gatewayCluster: mine\n");
    let g = Gateway::from_config_str(&own).unwrap();
    assert_eq!((cluster(&g, "v").as_deref(), cluster(&g, "set").as_deref()), (Some("self"), Some("mine")));
    // Two different clusters on one server are still refused, whatever the plugin's.
    let both = format!(
        "gatewayCluster: back\n{bare}  - name: w\n    type: virtual\n    gatewayCluster: self\n    {}  gatewayCluster: other\n",
        set.replace("name: set", "name: w").replace('\n', "\n    ")
    );
    let e = Gateway::from_config_str(&both).unwrap_err();
    assert_eq!((e.server.as_deref(), e.field.as_str()), (Some("w"), "toolSet.gatewayCluster"), "{e}");
    // None anywhere: refused at load, naming server, tool and field, and both places that would do.
    let e = Gateway::from_config_str(&bare).unwrap_err();
    assert_eq!(
        (e.server.as_deref(), e.tool.as_deref(), e.field.as_str()),
        (Some("v"), Some("old_echo"), "tools[1].server")
    );
    assert!(e.message.contains("add gatewayCluster") && e.message.contains("to the virtual server"), "{e}");
    assert!(e.message.contains("or to the plugin's top level"), "{e}");
    // Only a string names a cluster.
    let e = Gateway::from_config_str(&format!("gatewayCluster: [a]\n{bare}")).unwrap_err();
    assert_eq!((e.server.as_deref(), e.field.as_str()), (None, "gatewayCluster"), "{e}");
    // Without an SSE reference, the default is harmless: no loopback.
    let g = Gateway::from_config_str(&format!("gatewayCluster: back\n{CONFIG}")).unwrap();
    assert!(g.loopback.is_none());
}

#[test]
fn a_backends_answer_reaches_the_client_under_its_id_member_for_member() {
    let reply = |answer| super::link::reply(json!(7), answer, "b").to_string();
    assert_eq!(
        reply(Ok(json!({"jsonrpc": "2.0", "id": "x", "error": {"code": -1, "message": "m", "data": 2}}))),
        r#"{"jsonrpc":"2.0","id":7,"error":{"code":-1,"message":"m","data":2}}"#
    );
    let invalid =
        r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32603,"message":"proxied server 'b' sent an invalid answer"}}"#;
    assert_eq!(reply(Ok(json!({"jsonrpc": "2.0", "id": "x"}))), invalid);
    assert_eq!(reply(Ok(json!({"error": {"code": "1", "message": "m"}}))), invalid);
    assert_eq!(reply(Ok(json!({"result": {"a": 1}}))), r#"{"jsonrpc":"2.0","id":7,"result":{"a":1}}"#);
}

/// A virtual server beside a `transport: sse` server whose relay would refuse, rename and limit what a
/// client asks (`auth`, `allowTools`, `toolOverrides`, guardrails): none of it applies to the virtual
/// server's own calls, which the virtual server checks itself.
const LOOPBACK: &str = r#"
consumers: [{name: alice, credential: alice-key}]
keyAuth: {keys: [x-api-key]}
servers:
  - {name: a, type: mcp-proxy, mcpServerURL: /mcp, upstream: {cluster: ca}}
  - name: legacy
    type: mcp-proxy
    transport: sse
    mcpServerURL: /sse
    timeout: 4000
    auth: {anonymous: false}
    allowTools: [shout]
    toolOverrides: {echo: {name: shout}}
    guardrails: {mask: [email]}
    upstream: {authority: "legacy.example:9"}
  - name: v
    type: virtual
    timeout: 700
    gatewayCluster: self
    tools:
      - {server: a, tool: echo, name: say}
      - {server: legacy, tool: echo, name: old_echo}
      - {server: legacy, tool: secret}
"#;

/// The gateway's bridge serving one of its own loopback requests `r` in `env`, in front of an SSE backend
/// that lists `echo` and `secret` and answers calls with their name and arguments; the messages it got go
/// to `seen`.
fn bridged(g: &Gateway, env: &mut MemoryEnv, r: &UpstreamRequest, seen: &RefCell<Vec<Value>>) -> UpstreamResult {
    use crate::proxy::bridge::{Begin, Post, Step};
    let mut headers = r.headers.clone();
    headers.push((":authority".into(), r.authority.clone()));
    let head = RequestHead {
        method: r.method.clone().into(),
        path: r.path.clone(),
        headers: headers.into(),
        client_address: None,
        jwt: None,
    };
    let respond =
        |resp: HttpResponse| UpstreamResult::Response { status: resp.status, headers: resp.headers, body: resp.body };
    let mut b = match crate::proxy::route(g, &head, env) {
        Some(crate::proxy::Start::Bridge(b)) => {
            let pass = head.header(crate::loopback::HEADER).unwrap_or_default();
            assert_eq!(b.for_virtual().is_some(), g.loopback.as_ref().unwrap().admits(env, pass, "legacy").is_some());
            b
        }
        Some(crate::proxy::Start::Respond(resp)) => return respond(resp),
        other => panic!("{other:?}"),
    };
    let body = r.body.clone().unwrap_or_default();
    let now = env.now_ms;
    match b.on_body(g, env, &body, now) {
        Begin::Stream(edits) => {
            let mut sent = head.headers.to_vec();
            crate::header_edits::apply(&mut sent, &edits);
            assert!(sent.iter().all(|(k, _)| k != crate::loopback::HEADER), "the pass stays at the gateway: {sent:?}");
            assert!(sent.contains(&(":authority".into(), "legacy.example:9".into())), "{sent:?}");
        }
        Begin::Respond(resp) => return respond(resp),
        Begin::Wait(w) => panic!("{w:?}"),
    }
    let mut steps = b.on_chunk(g, env, b"event: endpoint\ndata: /messages/?session_id=s\n\n", false);
    loop {
        let step = steps.pop().expect("a step");
        assert!(steps.is_empty());
        steps = match step {
            Step::Post(post, head, body) => {
                assert!(head.iter().all(|(k, _)| k != crate::loopback::HEADER));
                let m: Value = serde_json::from_slice(&body).unwrap();
                let answer = match post {
                    Post::Initialized => {
                        steps = b.on_posted(post, 202);
                        continue;
                    }
                    Post::Initialize => json!({"protocolVersion": "2025-06-18", "capabilities": {}}),
                    Post::Message if m["method"] == "tools/list" => json!({"tools": [
                        {"name": "echo", "inputSchema": {"type": "object"}, "description": "echo, legacy"},
                        {"name": "secret", "inputSchema": {"type": "object"}},
                    ]}),
                    Post::Message => {
                        let text = format!(
                            "{} on legacy with {}: ann@example.com",
                            m["params"]["name"], m["params"]["arguments"]
                        );
                        json!({"content": [{"type": "text", "text": text}]})
                    }
                    Post::Pong => panic!("no ping"),
                };
                seen.borrow_mut().push(m.clone());
                assert!(b.on_posted(post, 202).is_empty());
                let event = json!({"jsonrpc": "2.0", "id": m["id"], "result": answer});
                b.on_chunk(g, env, format!("event: message\ndata: {event}\n\n").as_bytes(), false)
            }
            Step::Reply(resp) => {
                // A virtual server's own call has an audit record of its own, naming it; nothing else has.
                let m: Value = serde_json::from_slice(&body).unwrap();
                match b.own_call() {
                    Some(own) => {
                        assert_eq!(m["method"], "tools/call");
                        assert_eq!(
                            (own.server.as_str(), own.tool.as_str()),
                            ("legacy", m["params"]["name"].as_str().unwrap())
                        );
                        assert_eq!((own.for_virtual.as_deref(), own.outcome), (b.for_virtual(), "ok"));
                        assert!(own.audit_line(0).contains(r#""gatewayCallFor":"v""#), "{own:?}");
                    }
                    None => assert!(m["method"] != "tools/call" || b.for_virtual().is_none()),
                }
                return respond(resp);
            }
            other => panic!("{other:?}"),
        };
    }
}

use crate::session::memory::MemoryEnv;

#[test]
fn a_virtual_server_reaches_an_sse_servers_tools_through_its_own_bridge_as_the_gateway() {
    let g = Gateway::from_config_str(LOOPBACK).unwrap();
    let backends = Backends::new();
    let mut c = Client::new(&g, &backends);
    // The bridge's worker reads the same shared secret (another worker of the same Envoy).
    let secret = crate::session::shared_secret(&mut c.h, crate::loopback::SHARED_KEY).unwrap();
    let mut other = MemoryEnv { now_ms: c.h.env.now_ms, ..Default::default() };
    crate::session::KeyValue::set(&mut other.kv, crate::loopback::SHARED_KEY, &secret, None).unwrap();
    let (other, seen) = (RefCell::new(other), RefCell::new(Vec::new()));
    let answer = |r: &UpstreamRequest| match r.cluster.as_str() {
        "self" => bridged(&g, &mut other.borrow_mut(), r, &seen),
        _ => backends.answer(r),
    };
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {}}).to_string();
    let r = c.h.send(&g, head(Some(&c.sid.clone()), &[]), &body, &answer);
    let listed: Value = serde_json::from_slice(&r.body).unwrap();
    let names: Vec<&str> =
        listed["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    // The backend's own names and descriptions: not the SSE server's allowTools or toolOverrides.
    assert_eq!(names, ["say", "old_echo", "secret"], "{listed}");
    assert_eq!(listed["result"]["tools"][1]["description"], "echo, legacy");
    // One loopback request, no handshake of the gateway's: the bridge initialised the backend itself.
    let sent: Vec<&UpstreamRequest> = c.h.dispatched.iter().filter(|r| r.cluster == "self").collect();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].path.as_str(), sent[0].authority.as_str()), ("/mcp-servers/legacy", "legacy.example:9"));
    assert!(!sent[0].headers.iter().any(|(k, _)| k == "mcp-session-id"));
    // The pass names the calling virtual server, under its MAC (the bridge reports the request as its).
    assert!(sent[0].headers.iter().any(|(k, v)| k == crate::loopback::HEADER && v.ends_with(".v")), "{sent:?}");
    let methods: Vec<Value> = seen.borrow().iter().map(|m| m["method"].clone()).collect();
    assert_eq!(methods, [json!("initialize"), json!("tools/list")]);

    let body = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "old_echo", "arguments": {"text": "hi"}}});
    let r = c.h.send(&g, head(Some(&c.sid.clone()), &[]), &body.to_string(), &answer);
    let called: Value = serde_json::from_slice(&r.body).unwrap();
    // Called under its backend name; the SSE server's guardrails applied once, by the virtual server.
    assert_eq!(called["id"], 8);
    let text = called["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.starts_with(r#""echo" on legacy with {"text":"hi"}"#) && !text.contains("ann@example.com"),
        "{called}"
    );
    let last = c.h.dispatched.last().unwrap();
    assert_eq!(last.timeout_ms, 4000 + crate::routed::ROUTER_GRACE_MS, "the bridge's own deadline answers first");

    // Another Envoy (its own config, another secret) or no pass at all: a client's request, refused by the
    // server's `auth`.
    let mut stranger = MemoryEnv { now_ms: c.h.env.now_ms, counter: 99, ..Default::default() };
    let refused = bridged(&Gateway::from_config_str(LOOPBACK).unwrap(), &mut stranger, last, &seen);
    assert!(matches!(refused, UpstreamResult::Response { status: 401, .. }), "{refused:?}");
    // A valid pass on a request in a session is a client's too (the gateway's own calls have none).
    let mut in_session = last.clone();
    in_session.headers.push(("mcp-session-id".into(), "s1".into()));
    let refused = bridged(&g, &mut other.borrow_mut(), &in_session, &seen);
    assert!(matches!(refused, UpstreamResult::Response { status: 401, .. }), "{refused:?}");
    let mut bare = last.clone();
    bare.headers.retain(|(k, _)| k != crate::loopback::HEADER);
    let refused = bridged(&g, &mut other.borrow_mut(), &bare, &seen);
    assert!(matches!(refused, UpstreamResult::Response { status: 401, .. }), "{refused:?}");
}

#[test]
fn an_sse_server_needs_the_virtual_servers_gateway_cluster() {
    let base = LOOPBACK.split("    gatewayCluster: self\n").collect::<Vec<_>>().join("");
    let e = Gateway::from_config_str(&base).unwrap_err();
    assert_eq!((e.server.as_deref(), e.field.as_str()), (Some("v"), "tools[1].server"));
    assert!(
        e.message.contains("'legacy' is a transport: sse proxied server") && e.message.contains("add gatewayCluster"),
        "{e}"
    );
    let g = Gateway::from_config_str(LOOPBACK).unwrap();
    assert!(g.loopback.as_ref().is_some_and(crate::loopback::Keys::shared), "no signingKeys: this Envoy's secret");
    assert_eq!(g.server("v").unwrap().composed.as_ref().unwrap().backends.len(), 2);
    // Without an SSE server to reach, no loopback: passes are never honoured.
    assert!(Gateway::from_config_str(CONFIG).unwrap().loopback.is_none());
    // Only a virtual server calls through it.
    let e = Gateway::from_config_str(
        &LOOPBACK.replace("    timeout: 4000\n", "    timeout: 4000\n    gatewayCluster: self\n"),
    )
    .unwrap_err();
    assert_eq!((e.server.as_deref(), e.field.as_str()), (Some("legacy"), "gatewayCluster"));
    // With signed sessions, their keys sign passes (every replica accepts them).
    let key = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    let signed = format!("sessions: {{store: signed, signingKeys: [\"{key}\"]}}\n{LOOPBACK}");
    assert!(Gateway::from_config_str(&signed).unwrap().loopback.as_ref().is_some_and(|k| !k.shared()));
}
