//! The transport driven natively: a memory session store and a scripted upstream stand in for the host.

use super::*;
use crate::driver::test_host::{RedisMode, TestHost};
use crate::driver::Progress;
use crate::session::redis::Answer;
use serde_json::json;

const CONFIG: &str = r#"
sessionTtlSeconds: 60
maxRequestBytes: 4096
allowedOrigins: [https://app.example.com]
servers:
  - name: demo
    upstream: {cluster: api}
    tools:
      - name: hello
        description: Says hello
        args: [{name: who, default: world}]
        responseTemplate: {body: "hello {{ args.who }}"}
      - name: weather
        description: Weather
        args: [{name: city, required: true, position: query}]
        requestTemplate: {url: /weather}
  - name: other
"#;

fn gw() -> Gateway {
    Gateway::from_config_str(CONFIG).unwrap()
}

fn head(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHead {
    let mut h: Vec<(String, String)> = vec![
        ("content-type".into(), "application/json".into()),
        ("accept".into(), "application/json, text/event-stream".into()),
    ];
    for (k, v) in headers {
        h.retain(|(name, _)| name != k);
        h.push((k.to_string(), v.to_string()));
    }
    RequestHead {
        method: crate::transport::method(method),
        path: path.into(),
        headers: h.into(),
        client_address: None,
        jwt: None,
    }
}

/// The native host of the driver tests, with the helpers these tests share.
struct Host {
    inner: TestHost,
}

impl std::ops::Deref for Host {
    type Target = TestHost;
    fn deref(&self) -> &TestHost {
        &self.inner
    }
}

impl std::ops::DerefMut for Host {
    fn deref_mut(&mut self) -> &mut TestHost {
        &mut self.inner
    }
}

impl Host {
    fn new() -> Host {
        Host { inner: TestHost::new() }
    }

    /// POSTs a body on an established session of server `demo`.
    fn post(
        &mut self,
        gw: &Gateway,
        sid: &str,
        body: &str,
        upstream: &dyn Fn(&UpstreamRequest) -> UpstreamResult,
    ) -> HttpResponse {
        self.send(gw, head("POST", "/mcp-servers/demo", &[("mcp-session-id", sid)]), body, upstream)
    }

    fn initialize(&mut self, gw: &Gateway, version: &str) -> String {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"{version}","capabilities":{{}},"clientInfo":{{"name":"t","version":"1"}}}}}}"#
        );
        let r = self.send(gw, head("POST", "/mcp-servers/demo", &[]), &body, &no_upstream);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.headers.iter().find(|(k, _)| k == "mcp-session-id").map(|(_, v)| v.clone()).expect("session id header")
    }
}

/// The sessions block of each store, for tests that must hold whatever the store.
const STORES: [&str; 3] = [
    "sessions: {store: local, ttlSeconds: 60}",
    "sessions: {store: signed, ttlSeconds: 60, signingKeys: [MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=]}",
    "sessions: {store: redis, ttlSeconds: 60, redis: {cluster: redis}}",
];

/// The test config with another sessions block.
fn gw_with(sessions: &str) -> Gateway {
    Gateway::from_config_str(&CONFIG.replace("sessionTtlSeconds: 60", sessions)).unwrap()
}

fn no_upstream(_: &UpstreamRequest) -> UpstreamResult {
    panic!("no upstream call expected")
}

fn json_body(r: &HttpResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&r.body)))
}

#[test]
fn routing_and_early_rejections() {
    let g = gw();
    let mut h = Host::new();
    let cases: Vec<(RequestHead, u16)> = vec![
        (head("POST", "/elsewhere", &[]), 0),
        (head("POST", "/mcp-serversX/demo", &[]), 0),
        (head("POST", "/mcp-servers", &[]), 404),
        (head("POST", "/mcp-servers/nope", &[]), 404),
        (head("POST", "/mcp-servers/demo/extra", &[]), 404),
        (head("GET", "/mcp-servers/demo", &[]), 405),
        (head("PUT", "/mcp-servers/demo", &[]), 405),
        (head("POST", "/mcp-servers/demo", &[("accept", "text/html")]), 406),
        (head("POST", "/mcp-servers/demo", &[("accept", "application/json")]), 406),
        (head("POST", "/mcp-servers/demo", &[("content-type", "text/plain")]), 415),
        (head("POST", "/mcp-servers/demo", &[("origin", "http://evil.example.com")]), 403),
        (head("POST", "/mcp-servers/demo", &[("mcp-protocol-version", "2099-01-01")]), 400),
        (head("DELETE", "/mcp-servers/demo", &[]), 400),
    ];
    for (hd, status) in cases {
        let label = format!("{} {} {:?}", hd.method, hd.path, hd.headers);
        let r = h.send(&g, hd, "{}", &no_upstream);
        assert_eq!(r.status, status, "{label}");
        if status >= 400 {
            assert!(json_body(&r)["error"]["code"].is_i64(), "{label}: error bodies are JSON-RPC errors");
        }
    }
    let r = h.send(&g, head("GET", "/mcp-servers/demo", &[]), "", &no_upstream);
    assert!(r.headers.contains(&("allow".into(), "POST, DELETE".into())));
}

#[test]
fn initialize_negotiates_and_issues_sessions() {
    for store in STORES {
        let g = gw_with(store);
        let mut h = Host::new();
        let mut ids = Vec::new();
        for (asked, answered) in [
            ("2024-11-05", "2024-11-05"),
            ("2025-03-26", "2025-03-26"),
            ("2025-06-18", "2025-06-18"),
            ("2025-11-25", "2025-11-25"),
            ("1.0", "2025-11-25"),
        ] {
            let body = format!(
                r#"{{"jsonrpc":"2.0","id":"i","method":"initialize","params":{{"protocolVersion":"{asked}","capabilities":{{}}}}}}"#
            );
            let r = h.send(&g, head("POST", "/mcp-servers/demo", &[]), &body, &no_upstream);
            let v = json_body(&r);
            assert_eq!(v["result"]["protocolVersion"], json!(answered), "{store}");
            assert_eq!(v["result"]["serverInfo"]["name"], json!("demo"));
            assert_eq!(v["id"], json!("i"));
            let sid = r.headers.iter().find(|(k, _)| k == "mcp-session-id").unwrap().1.clone();
            assert!(sid.bytes().all(|b| b.is_ascii_graphic()), "{store}: MCP wants visible ASCII ids");
            // The session remembers its revision: batches are allowed only at the old ones.
            let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#;
            let expect = if ["2024-11-05", "2025-03-26"].contains(&answered) { 200 } else { 400 };
            assert_eq!(h.post(&g, &sid, batch, &no_upstream).status, expect, "{store} {answered}");
            ids.push(sid);
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 5, "{store}: every session has its own id");
    }
}

#[test]
fn sessions_are_required_checked_and_deleted() {
    for store in STORES {
        let g = gw_with(store);
        let mut h = Host::new();
        let sid = h.initialize(&g, "2025-06-18");
        let ping = r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#;
        let with = |id: &str| head("POST", "/mcp-servers/demo", &[("mcp-session-id", id)]);
        assert_eq!(h.send(&g, head("POST", "/mcp-servers/demo", &[]), ping, &no_upstream).status, 400);
        assert_eq!(h.send(&g, with("0123456789abcdef0123456789abcdef"), ping, &no_upstream).status, 404, "{store}");
        assert_eq!(h.send(&g, with("not-an-id"), ping, &no_upstream).status, 404);
        assert_eq!(h.send(&g, with(&"x".repeat(200)), ping, &no_upstream).status, 404);
        let r = h.post(&g, &sid, ping, &no_upstream);
        assert_eq!((r.status, json_body(&r)["result"].clone()), (200, json!({})), "{store}");
        assert_eq!(json_body(&h.post(&g, &sid, ping, &no_upstream))["id"], json!(7));
        // A session is bound to its server.
        let other = head("POST", "/mcp-servers/other", &[("mcp-session-id", &sid)]);
        let r = h.send(&g, other, ping, &no_upstream);
        assert_eq!((r.status, json_body(&r)["error"]["code"].clone()), (404, json!(SESSION_NOT_FOUND)), "{store}");
        assert_eq!(json_body(&r)["id"], json!(7), "the error answers the request");
        let del_other = head("DELETE", "/mcp-servers/other", &[("mcp-session-id", &sid)]);
        assert_eq!(h.send(&g, del_other, "", &no_upstream).status, 404, "{store}");
        // Notifications and responses are accepted without a body.
        let r = h.send(&g, with(&sid), r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, &no_upstream);
        assert_eq!((r.status, r.body.len()), (202, 0));
        let r = h.send(&g, with(&sid), r#"{"jsonrpc":"2.0","id":9,"result":{}}"#, &no_upstream);
        assert_eq!(r.status, 202);
        // DELETE ends it.
        let del = || head("DELETE", "/mcp-servers/demo", &[("mcp-session-id", &sid)]);
        assert_eq!(h.send(&g, del(), "", &no_upstream).status, 204, "{store}");
        assert_eq!(h.post(&g, &sid, ping, &no_upstream).status, 404, "{store}");
        assert_eq!(h.send(&g, del(), "", &no_upstream).status, 404, "{store}");
        assert!(h.warnings.is_empty(), "{store}: {:?}", h.warnings);
    }
}

#[test]
fn sessions_expire_idle_or_at_their_fixed_end() {
    for store in STORES {
        let g = gw_with(store);
        let mut h = Host::new();
        let sid = h.initialize(&g, "2025-06-18");
        let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        h.env.now_ms += 50_000;
        assert_eq!(h.post(&g, &sid, ping, &no_upstream).status, 200, "{store}");
        h.env.now_ms += 50_000;
        // Activity slides the expiry of stored sessions; a signed id ends ttlSeconds after initialize.
        let expect = if store.contains("signed") { 404 } else { 200 };
        assert_eq!(h.post(&g, &sid, ping, &no_upstream).status, expect, "{store}");
        h.env.now_ms += 60_000;
        assert_eq!(h.post(&g, &sid, ping, &no_upstream).status, 404, "{store}: idle sessions end");
    }
}

#[test]
fn a_store_that_fails_gives_a_clear_error_and_nothing_else_breaks() {
    let g = gw_with(STORES[2]);
    let mut h = Host::new();
    let sid = h.initialize(&g, "2025-06-18");
    let ping = r#"{"jsonrpc":"2.0","id":"p","method":"ping"}"#;
    h.redis.mode = RedisMode::Down;
    for r in
        [h.post(&g, &sid, ping, &no_upstream), h.send(&g, head("POST", "/mcp-servers/demo", &[]), INIT, &no_upstream)]
    {
        let v = json_body(&r);
        assert_eq!((r.status, v["error"]["code"].clone()), (503, json!(jsonrpc::INTERNAL_ERROR)));
        assert!(v["error"]["message"].as_str().unwrap().contains("Redis did not answer"), "{v}");
    }
    assert_eq!(json_body(&h.post(&g, &sid, ping, &no_upstream))["id"], json!("p"), "errors keep the request id");
    assert!(h.warnings.iter().any(|w| w.contains("session store (redis)")), "{:?}", h.warnings);
    // Redis comes back: the session is still there.
    h.redis.mode = RedisMode::Up;
    assert_eq!(h.post(&g, &sid, ping, &no_upstream).status, 200);
    // NOAUTH: the host re-initialises once and the command is sent again.
    h.redis.mode = RedisMode::LostAuth;
    assert_eq!(h.post(&g, &sid, ping, &no_upstream).status, 200);
    assert_eq!(h.redis_inits, 1);
}

#[test]
fn a_redis_that_never_answers_is_given_up_after_its_timeout() {
    let g = gw_with("sessions: {store: redis, redis: {cluster: redis, timeoutMs: 300}}");
    let mut h = Host::new();
    h.redis.mode = RedisMode::Silent;
    let mut d = h.start(&g, &head("POST", "/mcp-servers/demo", &[]), INIT.as_bytes()).unwrap();
    assert_eq!(h.settle(&g, &mut d, &no_upstream), Progress::Waiting);
    let now = h.env.now_ms;
    assert_eq!(d.on_tick(&g, &mut h.inner, now + 300 + crate::driver::REDIS_GRACE_MS - 1), Progress::Waiting);
    assert_eq!(d.on_tick(&g, &mut h.inner, now + 300 + crate::driver::REDIS_GRACE_MS), Progress::Done);
    assert_eq!(h.responses.pop().unwrap().status, 503);
    // A late reply changes nothing.
    let token = 1;
    assert_eq!(d.on_redis_reply(&g, &mut h.inner, token, Answer::Reply(b"+OK\r\n")), Progress::Done);
    assert!(h.responses.is_empty());
}

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#;

#[test]
fn malformed_input_gets_json_rpc_errors() {
    let g = gw();
    let mut h = Host::new();
    let sid = h.initialize(&g, "2025-06-18");
    let with = || head("POST", "/mcp-servers/demo", &[("mcp-session-id", &sid)]);
    let r = h.post(&g, &sid, "{not json", &no_upstream);
    assert_eq!((r.status, json_body(&r)["error"]["code"].clone()), (400, json!(-32700)));
    let r = h.send(&g, with(), r#"{"jsonrpc":"1.0","id":5,"method":"ping"}"#, &no_upstream);
    assert_eq!(
        (r.status, json_body(&r)["error"]["code"].clone(), json_body(&r)["id"].clone()),
        (400, json!(-32600), json!(5))
    );
    let r = h.send(&g, with(), r#"{"jsonrpc":"2.0","id":5,"method":"no/such"}"#, &no_upstream);
    assert_eq!(json_body(&r)["error"]["code"], json!(-32601));
    let big = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"ping","params":{{"x":"{}"}}}}"#, "a".repeat(5000));
    assert_eq!(h.post(&g, &sid, &big, &no_upstream).status, 413);
    let r = h.send(
        &g,
        head("POST", "/mcp-servers/demo", &[]),
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
        &no_upstream,
    );
    assert_eq!(json_body(&r)["error"]["code"], json!(-32602));
    let deep = format!("{}{}", "[".repeat(2000), "]".repeat(2000));
    assert_eq!(
        h.post(&g, &sid, &deep, &no_upstream).status,
        400,
        "serde_json's recursion limit answers, no stack overflow"
    );
}

#[test]
fn batches_only_where_the_revision_allows() {
    let g = gw();
    let mut h = Host::new();
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/x"},{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"hello"}},{"bad":1}]"#;
    let old = h.initialize(&g, "2025-03-26");
    let r = h.post(&g, &old, batch, &no_upstream);
    let v = json_body(&r);
    assert_eq!(r.status, 200);
    assert_eq!(v.as_array().unwrap().len(), 3, "notifications get no entry: {v}");
    assert_eq!(v[0]["result"], json!({}));
    assert_eq!(v[1]["result"]["content"][0]["text"], json!("hello world"));
    assert_eq!(v[2]["error"]["code"], json!(-32600));
    let only_notes = r#"[{"jsonrpc":"2.0","method":"notifications/x"}]"#;
    assert_eq!(h.post(&g, &old, only_notes, &no_upstream).status, 202);
    let new = h.initialize(&g, "2025-06-18");
    assert_eq!(h.post(&g, &new, batch, &no_upstream).status, 400);
    let init_in_batch = r#"[{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26"}}]"#;
    assert_eq!(h.post(&g, &old, init_in_batch, &no_upstream).status, 400);
    assert_eq!(h.post(&g, &old, "[]", &no_upstream).status, 400);
}

#[test]
fn tool_calls_dispatch_and_collect_in_order() {
    let g = gw();
    let mut h = Host::new();
    let sid = h.initialize(&g, "2025-03-26");
    let upstream = |r: &UpstreamRequest| {
        let body = format!("{{\"path\": \"{}\"}}", r.path);
        UpstreamResult::Response {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into_bytes(),
        }
    };
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"weather","arguments":{"city":"São Paulo"}}}"#;
    let r = h.post(&g, &sid, call, &upstream);
    assert_eq!(json_body(&r)["result"]["content"][0]["text"], json!("{\"path\": \"/weather?city=S%C3%A3o%20Paulo\"}"));
    assert_eq!((h.dispatched[0].cluster.as_str(), h.dispatched[0].method.as_str()), ("api", "GET"));
    let batch = r#"[{"jsonrpc":"2.0","id":"a","method":"tools/call","params":{"name":"weather","arguments":{"city":"A"}}},
                    {"jsonrpc":"2.0","id":"b","method":"tools/call","params":{"name":"weather","arguments":{"city":"B"}}}]"#;
    let v = json_body(&h.post(&g, &sid, batch, &upstream));
    assert_eq!((v[0]["id"].clone(), v[1]["id"].clone()), (json!("a"), json!("b")));
    assert!(v[1]["result"]["content"][0]["text"].as_str().unwrap().contains("city=B"));
    let fail = |_: &UpstreamRequest| UpstreamResult::Failed("timeout".into());
    let v = json_body(&h.post(&g, &sid, call, &fail));
    assert_eq!(v["result"]["isError"], json!(true));
}

#[test]
fn cors_for_allowed_origins() {
    let g = gw();
    let mut h = Host::new();
    let r =
        h.send(&g, head("OPTIONS", "/mcp-servers/demo", &[("origin", "https://app.example.com")]), "", &no_upstream);
    assert_eq!(r.status, 204);
    assert!(r.headers.iter().any(|(k, v)| k == "access-control-allow-origin" && v == "https://app.example.com"));
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#;
    let r = h.send(&g, head("POST", "/mcp-servers/demo", &[("origin", "http://localhost:6274")]), body, &no_upstream);
    assert!(r.headers.iter().any(|(k, v)| k == "access-control-expose-headers" && v.contains("mcp-session-id")));
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Arbitrary JSON values, biased towards JSON-RPC-looking shapes.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
            prop_oneof![
                Just("2.0"),
                Just("ping"),
                Just("tools/call"),
                Just("tools/list"),
                Just("initialize"),
                Just("weather"),
                Just("hello")
            ]
            .prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("jsonrpc"),
                            Just("id"),
                            Just("method"),
                            Just("params"),
                            Just("name"),
                            Just("arguments"),
                            Just("city"),
                            Just("cursor"),
                            Just("protocolVersion")
                        ]
                        .prop_map(String::from),
                        inner
                    ),
                    0..6
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(crate::strategies::cases(400))]

        /// Any body on an established session gets an HTTP answer, never a panic.
        #[test]
        fn any_message_gets_an_answer(msg in json_value(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
            let g = gw();
            let mut h = Host::new();
            let sid = h.initialize(&g, "2025-03-26");
            let upstream = |_: &UpstreamRequest| UpstreamResult::Response { status: 200, headers: vec![], body: b"{}".to_vec() };
            for body in [serde_json::to_string(&msg).unwrap(), String::from_utf8_lossy(&raw).into_owned()] {
                let r = h.post(&g, &sid, &body, &upstream);
                prop_assert!([200, 202, 400, 404, 413].contains(&r.status), "status {}", r.status);
                if !r.body.is_empty() {
                    prop_assert!(serde_json::from_slice::<Value>(&r.body).is_ok());
                }
            }
        }

        /// Any header values on any path are routed without panicking.
        #[test]
        fn any_head_is_routed(method in "[A-Z]{0,7}", path in ".{0,40}", values in prop::collection::vec(".{0,40}", 5)) {
            let g = gw();
            let names = ["accept", "content-type", "origin", "mcp-protocol-version", "mcp-session-id"];
            let headers: Vec<(&str, &str)> = names.iter().copied().zip(values.iter().map(String::as_str)).collect();
            let mut h = Host::new();
            let _ = h.send(&g, head(&method, &format!("/mcp-servers/{path}"), &headers), "{}", &|_| UpstreamResult::Failed("x".into()));
        }

        /// Hostile argument values never panic, and never change the cluster or authority of the request.
        #[test]
        fn arguments_cannot_redirect_requests(city in any::<String>()) {
            let g = gw();
            let mut h = Host::new();
            let sid = h.initialize(&g, "2025-06-18");
            let call = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "weather", "arguments": {"city": city}}});
            let upstream = |_: &UpstreamRequest| UpstreamResult::Response { status: 200, headers: vec![], body: vec![] };
            let r = h.post(&g, &sid, &call.to_string(), &upstream);
            prop_assert_eq!(r.status, 200);
            for req in &h.dispatched {
                prop_assert_eq!(req.cluster.as_str(), "api");
                prop_assert_eq!(req.authority.as_str(), "api");
                prop_assert!(req.path.starts_with("/weather?city="));
                prop_assert!(req.path.bytes().all(|b| b.is_ascii_graphic()), "path {}", req.path);
            }
        }
    }

    proptest! {
        #![proptest_config(crate::strategies::cases(200))]

        /// Guards the stateless revision's rules against any mix of `_meta`, headers and body a client sends:
        /// every answer is a documented status with a JSON-RPC body; a stateless request never touches the
        /// session store; and one that is served had headers that agree with its body (`Mcp-Method`,
        /// `MCP-Protocol-Version`, `Mcp-Name`), so that what an intermediary routed on is what ran.
        #[test]
        fn stateless_requests_run_only_what_their_headers_say(
            store in 0..STORES.len(),
            method in prop_oneof![
                8 => prop::sample::select(vec!["tools/call", "tools/list", "server/discover"]).prop_map(String::from),
                2 => prop::sample::select(vec!["ping", "initialize", "resources/read", "prompts/get",
                                               "notifications/cancelled"])
                    .prop_map(String::from),
                1 => crate::strategies::hostile_string(),
            ],
            name in prop::option::of(prop_oneof![Just("hello".to_string()), Just("weather".to_string()),
                                                 crate::strategies::hostile_string()]),
            arguments in prop::option::of(prop_oneof![
                4 => Just(json!({"city": "Oslo"})), 1 => Just(json!({})), 1 => json_value(),
            ]),
            meta_version in prop::option::weighted(0.9, prop_oneof![
                8 => Just(json!("2026-07-28")), 1 => Just(json!("2025-06-18")), 1 => Just(json!("2099-01-01")),
                1 => json_value(),
            ]),
            capabilities in prop::option::weighted(0.9, prop_oneof![
                4 => Just(json!({})), 1 => Just(json!({"sampling": {}})), 1 => json_value(),
            ]),
            header_version in prop::option::weighted(0.9, prop_oneof![
                6 => Just("2026-07-28".to_string()), 1 => Just("2025-06-18".to_string()), 1 => ".{0,12}",
            ]),
            header_method in prop::option::weighted(0.9, prop_oneof![6 => Just(None), 1 => ".{0,12}".prop_map(Some)]),
            header_name in prop::option::weighted(0.9, prop_oneof![6 => Just(None), 1 => ".{0,12}".prop_map(Some)]),
            id in prop_oneof![4 => Just(json!(7)), 2 => Just(json!("x")), 1 => Just(Value::Null), 1 => json_value()],
        ) {
            thread_local! {
                static GATEWAYS: Vec<Gateway> = STORES.iter().map(|s| gw_with(s)).collect();
            }
            let mut h = Host::new();
            let kv_before = h.env.kv.map.clone();
            let mut params = json!({});
            if let Some(n) = &name {
                params["name"] = json!(n);
            }
            if let Some(a) = arguments {
                params["arguments"] = a;
            }
            let mut meta = serde_json::Map::new();
            if let Some(v) = &meta_version {
                meta.insert("io.modelcontextprotocol/protocolVersion".into(), v.clone());
            }
            if let Some(c) = capabilities {
                meta.insert("io.modelcontextprotocol/clientCapabilities".into(), c);
            }
            params["_meta"] = Value::Object(meta);
            // Each header: absent, the body's own value (`Some(None)`), or another.
            let mut headers: Vec<(&str, String)> = Vec::new();
            if let Some(v) = &header_version {
                headers.push(("mcp-protocol-version", v.clone()));
            }
            match &header_method {
                Some(None) => headers.push(("mcp-method", method.clone())),
                Some(Some(other)) => headers.push(("mcp-method", other.clone())),
                None => {}
            }
            match (&header_name, &name) {
                (Some(None), Some(n)) => headers.push(("mcp-name", n.clone())),
                (Some(Some(other)), _) => headers.push(("mcp-name", other.clone())),
                _ => {}
            }
            let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
            let answer = |_: &UpstreamRequest| UpstreamResult::Response { status: 200, headers: vec![], body: b"sunny".to_vec() };
            let r = GATEWAYS.with(|g| h.send(&g[store], head("POST", "/mcp-servers/demo", &headers), &body, &answer));
            prop_assert!([200, 202, 400, 404].contains(&r.status), "status {}", r.status);
            if !r.body.is_empty() {
                let v: Value = serde_json::from_slice(&r.body).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&v["jsonrpc"], &json!("2.0"));
            }
            let stateless = meta_version.as_ref().is_some_and(Value::is_string) || header_version.as_deref() == Some("2026-07-28");
            if stateless {
                prop_assert_eq!(&h.env.kv.map, &kv_before, "a stateless request touched the session store");
                prop_assert!(h.redis.commands.is_empty());
            }
            if stateless && r.status == 200 {
                let v: Value = serde_json::from_slice(&r.body).unwrap();
                if v.get("result").is_some() {
                    prop_assert_eq!(meta_version.as_ref(), Some(&json!("2026-07-28")));
                    prop_assert_eq!(header_version.as_deref(), Some("2026-07-28"));
                    prop_assert_eq!(header_method, Some(None), "served under another Mcp-Method");
                    prop_assert_eq!(&v["result"]["resultType"], &json!("complete"));
                    if method == "tools/call" {
                        prop_assert!(header_name == Some(None) && name.is_some(), "served under another Mcp-Name");
                    }
                }
            }
            for req in &h.dispatched {
                prop_assert_eq!(name.as_deref(), Some("weather"));
                prop_assert_eq!(req.cluster.as_str(), "api");
            }
        }
    }
}

#[test]
fn one_request_starts_at_most_max_calls_per_request() {
    let g = Gateway::from_config_str(
        &CONFIG.replace("maxRequestBytes: 4096", "maxRequestBytes: 4096\nmaxCallsPerRequest: 2"),
    )
    .unwrap();
    let mut h = Host::new();
    let sid = h.initialize(&g, "2025-03-26");
    let call = |id: u32| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"weather","arguments":{{"city":"c{id}"}}}}}}"#
        )
    };
    let batch = format!("[{},{},{{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\"}},{}]", call(1), call(2), call(3));
    let upstream =
        |_: &UpstreamRequest| UpstreamResult::Response { status: 200, headers: vec![], body: b"ok".to_vec() };
    let r = h.post(&g, &sid, &batch, &upstream);
    let v = json_body(&r);
    assert_eq!(r.status, 200);
    assert_eq!(h.dispatched.len(), 2, "the third call never left the gateway");
    assert_eq!((v[0]["result"]["content"][0]["text"].clone(), v[1]["id"].clone()), (json!("ok"), json!(2)));
    assert_eq!(v[2]["result"], json!({}), "other messages are served");
    assert_eq!((v[3]["id"].clone(), v[3]["error"]["code"].clone()), (json!(3), json!(jsonrpc::LIMIT_EXCEEDED)));
    assert!(v[3]["error"]["message"].as_str().unwrap().contains("maxCallsPerRequest"));
}

#[test]
fn new_sessions_are_limited_per_second_and_live_ones_per_server() {
    let init = |h: &mut Host, g: &Gateway| h.send(g, head("POST", "/mcp-servers/demo", &[]), INIT, &no_upstream);
    for store in STORES {
        let g = gw_with(&format!("{}, maxNewPerSecond: 3}}", &store[..store.len() - 1]));
        let mut h = Host::new();
        for _ in 0..3 {
            assert_eq!(init(&mut h, &g).status, 200, "{store}");
        }
        let r = init(&mut h, &g);
        let v = json_body(&r);
        assert_eq!(
            (r.status, v["error"]["code"].clone(), v["id"].clone()),
            (429, json!(jsonrpc::LIMIT_EXCEEDED), json!(1))
        );
        assert!(v["error"]["message"].as_str().unwrap().contains("sessions.maxNewPerSecond"), "{v}");
        assert!(r.headers.contains(&("retry-after".into(), "1".into())));
        h.env.now_ms += 1000;
        assert_eq!(init(&mut h, &g).status, 200, "{store}: the next second");
    }
    // Live sessions cost the local store memory: capped per server, and freed by DELETE and by expiry.
    let g = gw_with("sessions: {store: local, ttlSeconds: 60, maxSessions: 2}");
    let mut h = Host::new();
    let a = h.initialize(&g, "2025-06-18");
    h.initialize(&g, "2025-06-18");
    let r = init(&mut h, &g);
    assert_eq!((r.status, json_body(&r)["error"]["code"].clone()), (503, json!(jsonrpc::LIMIT_EXCEEDED)));
    assert!(String::from_utf8_lossy(&r.body).contains("sessions.maxSessions"));
    let del = head("DELETE", "/mcp-servers/demo", &[("mcp-session-id", &a)]);
    assert_eq!(h.send(&g, del, "", &no_upstream).status, 204);
    h.initialize(&g, "2025-06-18");
    assert_eq!(init(&mut h, &g).status, 503);
    h.env.now_ms += 60_000;
    for _ in 0..crate::session::local::BUCKETS / 128 {
        let now = h.env.now_ms;
        g.sessions.sweep(&mut h.env.kv, now);
    }
    h.initialize(&g, "2025-06-18");
}

/// A request of the stateless revision: `_meta` and the mirroring headers, as a 2026-07-28 client sends it.
fn stateless(method: &str, mut params: Value) -> (RequestHead, String) {
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    });
    let mut headers = vec![("mcp-protocol-version", "2026-07-28".to_string()), ("mcp-method", method.to_string())];
    if let Some(name) = params.get("name").and_then(Value::as_str) {
        headers.push(("mcp-name", name.to_string()));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body = json!({"jsonrpc": "2.0", "id": 42, "method": method, "params": params}).to_string();
    (head("POST", "/mcp-servers/demo", &headers), body)
}

#[test]
fn stateless_requests_need_no_session_and_say_their_result_type() {
    for store in STORES {
        let g = gw_with(store);
        let mut h = Host::new();
        let kv_before = h.env.kv.map.clone();
        let (hd, body) = stateless("server/discover", json!({}));
        let v = json_body(&h.send(&g, hd, &body, &no_upstream));
        assert_eq!(v["id"], json!(42));
        assert_eq!(
            v["result"]["supportedVersions"],
            json!(["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25", "2026-07-28"])
        );
        assert_eq!(
            (v["result"]["resultType"].clone(), v["result"]["cacheScope"].clone()),
            (json!("complete"), json!("private"))
        );
        let (hd, body) = stateless("tools/list", json!({}));
        let v = json_body(&h.send(&g, hd, &body, &no_upstream));
        assert_eq!(v["result"]["tools"][0]["name"], json!("hello"));
        assert!(v["result"]["ttlMs"].is_u64(), "{v}");
        let (hd, body) = stateless("tools/call", json!({"name": "weather", "arguments": {"city": "Oslo"}}));
        let answer =
            |_: &UpstreamRequest| UpstreamResult::Response { status: 200, headers: vec![], body: b"sunny".to_vec() };
        let v = json_body(&h.send(&g, hd, &body, &answer));
        assert_eq!(
            (v["result"]["content"][0]["text"].clone(), v["result"]["resultType"].clone()),
            (json!("sunny"), json!("complete"))
        );
        assert!(v["result"].get("ttlMs").is_none());
        assert_eq!(h.env.kv.map, kv_before, "{store}: no session store touched");
        assert!(h.redis.commands.is_empty(), "{store}");
        // The removed methods, and unknown ones: 404, -32601.
        for method in
            ["ping", "initialize", "logging/setLevel", "resources/subscribe", "subscriptions/listen", "no/such"]
        {
            let (hd, body) = stateless(method, json!({}));
            let r = h.send(&g, hd, &body, &no_upstream);
            assert_eq!(
                (r.status, json_body(&r)["error"]["code"].clone(), json_body(&r)["id"].clone()),
                (404, json!(-32601), json!(42)),
                "{method}"
            );
        }
        // A legacy client on the same server is served as before.
        let sid = h.initialize(&g, "2025-11-25");
        let ping = h.post(&g, &sid, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#, &no_upstream);
        assert_eq!(json_body(&ping)["result"], json!({}));
    }
}

#[test]
fn stateless_headers_must_match_the_body() {
    let g = gw();
    let mut h = Host::new();
    let (mut hd, body) = stateless("tools/call", json!({"name": "hello", "arguments": {}}));
    hd.headers.retain(|(k, _)| *k != "mcp-name");
    hd.headers.push("mcp-name", "weather");
    let r = h.send(&g, hd, &body, &no_upstream);
    assert_eq!(
        (r.status, json_body(&r)["error"]["code"].clone(), json_body(&r)["id"].clone()),
        (400, json!(-32020), json!(42))
    );
    // A stateless version in the header and no _meta: the request's own error.
    let hd = head("POST", "/mcp-servers/demo", &[("mcp-protocol-version", "2026-07-28"), ("mcp-method", "tools/list")]);
    let r = h.send(&g, hd, r#"{"jsonrpc":"2.0","id":5,"method":"tools/list"}"#, &no_upstream);
    assert_eq!((r.status, json_body(&r)["error"]["code"].clone()), (400, json!(jsonrpc::INVALID_PARAMS)));
    // Batches are gone at 2026-07-28; notifications need no session.
    let hd = head("POST", "/mcp-servers/demo", &[("mcp-protocol-version", "2026-07-28")]);
    assert_eq!(h.send(&g, hd.clone(), r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#, &no_upstream).status, 400);
    assert_eq!(
        h.send(
            &g,
            hd,
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":1}}"#,
            &no_upstream
        )
        .status,
        202
    );
}

#[test]
fn an_unknown_version_is_refused_with_the_requests_id_and_the_supported_list() {
    let g = gw();
    let mut h = Host::new();
    let sid = h.initialize(&g, "2025-06-18");
    let hd = head("POST", "/mcp-servers/demo", &[("mcp-session-id", &sid), ("mcp-protocol-version", "2099-01-01")]);
    let r = h.send(&g, hd, r#"{"jsonrpc":"2.0","id":"x","method":"ping"}"#, &no_upstream);
    let v = json_body(&r);
    assert_eq!((r.status, v["id"].clone(), v["error"]["code"].clone()), (400, json!("x"), json!(-32022)));
    assert_eq!(v["error"]["data"]["requested"], json!("2099-01-01"));
    assert_eq!(v["error"]["data"]["supported"].as_array().unwrap().len(), 5);
}

#[test]
fn a_tool_needing_a_client_capability_refuses_clients_without_it() {
    let g = Gateway::from_config_str(&CONFIG.replace(
        "        responseTemplate: {body: \"hello {{ args.who }}\"}",
        "        responseTemplate: {body: \"hello {{ args.who }}\"}\n        requiredClientCapabilities: {sampling: {}}",
    ))
    .unwrap();
    let mut h = Host::new();
    let (hd, body) = stateless("tools/call", json!({"name": "hello", "arguments": {}}));
    let r = h.send(&g, hd, &body, &no_upstream);
    let v = json_body(&r);
    assert_eq!((r.status, v["error"]["code"].clone()), (400, json!(-32021)));
    assert_eq!(v["error"]["data"]["requiredCapabilities"], json!({"sampling": {}}));
    let (hd, mut body) = stateless("tools/call", json!({"name": "hello", "arguments": {}}));
    body = body.replace(
        "\"io.modelcontextprotocol/clientCapabilities\":{}",
        "\"io.modelcontextprotocol/clientCapabilities\":{\"sampling\":{}}",
    );
    assert_eq!(json_body(&h.send(&g, hd, &body, &no_upstream))["result"]["content"][0]["text"], json!("hello world"));
}

#[test]
fn a_session_keeps_the_capabilities_its_initialize_declared_in_every_store() {
    for store in STORES {
        let g = Gateway::from_config_str(
            &CONFIG.replace("sessionTtlSeconds: 60", store).replace(
                "        responseTemplate: {body: \"hello {{ args.who }}\"}",
                "        responseTemplate: {body: \"hello {{ args.who }}\"}\n        requiredClientCapabilities: {sampling: {}}",
            ),
        )
        .unwrap();
        let mut h = Host::new();
        let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"hello","arguments":{}}}"#;
        // Declared nothing: the tool is refused, in a 200 as errors in a session are, naming the capability.
        let sid = h.initialize(&g, "2025-11-25");
        let r = h.post(&g, &sid, call, &no_upstream);
        let v = json_body(&r);
        assert_eq!((r.status, v["error"]["code"].clone()), (200, json!(-32600)), "{store}: {v}");
        assert_eq!(v["error"]["data"]["requiredCapabilities"], json!({"sampling": {}}), "{store}");
        // Declared sampling: the same call runs, on a later request (the session remembered it).
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{"sampling":{}},"clientInfo":{"name":"t","version":"1"}}}"#;
        let r = h.send(&g, head("POST", "/mcp-servers/demo", &[]), init, &no_upstream);
        let sid = r.headers.iter().find(|(k, _)| k == "mcp-session-id").unwrap().1.clone();
        let v = json_body(&h.post(&g, &sid, call, &no_upstream));
        assert_eq!(v["result"]["content"][0]["text"], json!("hello world"), "{store}: {v}");
    }
}

#[test]
fn messages_relayed_by_higress_sse_filter_need_no_session() {
    // What Higress's mcp-session filter passes on: the client's POST to `{path}?sessionId=<its SSE session>`,
    // headers as the client sent them (a legacy SSE client sends no Streamable HTTP Accept header).
    let relayed = || {
        let mut h = head("POST", "/mcp-servers/demo?sessionId=3f1c2a9e-8b7d-4c6e-9f0a-1b2c3d4e5f60", &[]);
        h.headers.retain(|(k, _)| *k != "accept");
        h
    };
    for store in STORES {
        let g = gw_with(store);
        let mut h = Host::new();
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
        let r = h.send(&g, relayed(), init, &no_upstream);
        assert_eq!(r.status, 200, "{store}");
        assert!(r.headers.iter().all(|(k, _)| k != "mcp-session-id"), "{store}: no session is created");
        let body = json_body(&r);
        assert_eq!(body["result"]["protocolVersion"], json!("2024-11-05"));
        assert!(!String::from_utf8_lossy(&r.body).contains('\n'), "one line: it becomes one SSE data line");
        let r = h.send(&g, relayed(), r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#, &no_upstream);
        assert_eq!((r.status, r.body.len()), (202, 0));
        let list = h.send(&g, relayed(), r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#, &no_upstream);
        let tools = json_body(&list)["result"]["tools"].as_array().map(Vec::len);
        assert_eq!((list.status, tools), (200, Some(2)), "{store}");
        let call =
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"hello","arguments":{"who":"sse"}}}"#;
        let r = h.send(&g, relayed(), call, &no_upstream);
        assert_eq!(json_body(&r)["result"]["content"][0]["text"], json!("hello sse"), "{store}");
        // 2024-11-05 (the SSE transport's revision) allows batches
        let batch = r#"[{"jsonrpc":"2.0","id":4,"method":"ping"},{"jsonrpc":"2.0","id":5,"method":"ping"}]"#;
        assert_eq!(json_body(&h.send(&g, relayed(), batch, &no_upstream)).as_array().map(Vec::len), Some(2));
        assert!(h.redis.commands.is_empty(), "{store}: nothing stored");
    }
    // Only the query parameter Higress's filter adds makes a POST relayed; an empty one does not.
    let g = gw();
    let mut h = Host::new();
    let ping = r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#;
    assert_eq!(h.send(&g, head("POST", "/mcp-servers/demo?sessionId=", &[]), ping, &no_upstream).status, 400);
    assert_eq!(h.send(&g, head("POST", "/mcp-servers/demo?x=1", &[]), ping, &no_upstream).status, 400);
    assert_eq!(h.send(&g, head("POST", "/mcp-servers/demo?a=1&sessionId=x", &[]), ping, &no_upstream).status, 200);
    // A Streamable HTTP session id wins: such a request is an ordinary one (and its session is checked).
    let with_both =
        head("POST", "/mcp-servers/demo?sessionId=x", &[("mcp-session-id", "0123456789abcdef0123456789abcdef")]);
    assert_eq!(h.send(&g, with_both, ping, &no_upstream).status, 404);
}

#[test]
fn allow_tools_and_the_allow_header_intersect() {
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let call = |tool: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"{tool}","arguments":{{"city":"x"}}}}}}"#
        )
    };
    let names = |r: &HttpResponse| -> Vec<String> {
        json_body(r)["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    let send = |h: &mut Host, g: &Gateway, sid: &str, header: Option<&str>, body: &str| {
        let mut headers = vec![("mcp-session-id", sid)];
        if let Some(v) = header {
            headers.push(("x-envoy-allow-mcp-tools", v));
        }
        h.send(g, head("POST", "/mcp-servers/demo", &headers), body, &|_| UpstreamResult::Failed("no".into()))
    };
    // The header alone restricts (an empty one does not).
    let g = gw();
    let mut h = Host::new();
    let sid = h.initialize(&g, "2025-06-18");
    assert_eq!(names(&send(&mut h, &g, &sid, None, list)), ["hello", "weather"]);
    assert_eq!(names(&send(&mut h, &g, &sid, Some(" weather , nope"), list)), ["weather"]);
    assert_eq!(names(&send(&mut h, &g, &sid, Some(" , "), list)), ["hello", "weather"]);
    let refused = json_body(&send(&mut h, &g, &sid, Some("weather"), &call("hello")));
    assert_eq!(
        (refused["error"]["code"].clone(), refused["error"]["message"].clone()),
        (json!(-32602), json!("Tool not allowed: hello"))
    );
    // allowTools in the config, intersected with the header.
    let g = Gateway::from_config_str(
        &CONFIG.replace("  - name: demo\n", "  - name: demo\n    allowTools: [hello, ghost]\n"),
    )
    .unwrap();
    assert!(g.notices.iter().any(|n| n.contains("'ghost'")), "{:?}", g.notices);
    let mut h = Host::new();
    let sid = h.initialize(&g, "2025-06-18");
    assert_eq!(names(&send(&mut h, &g, &sid, None, list)), ["hello"]);
    assert_eq!(names(&send(&mut h, &g, &sid, Some("weather"), list)), Vec::<String>::new());
    let refused = json_body(&send(&mut h, &g, &sid, None, &call("weather")));
    assert_eq!(refused["error"]["message"], json!("Tool not allowed: weather"));
    let hello = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"hello","arguments":{}}}"#;
    let ok = json_body(&send(&mut h, &g, &sid, Some("hello,weather"), hello));
    assert_eq!(ok["result"]["content"][0]["text"], json!("hello world"));
}

/// A server whose tools send notifications: one answered by a template, one by its upstream.
const NOTIFYING: &str = r#"
servers:
  - name: demo
    upstream: {cluster: api}
    tools:
      - name: steps
        description: Reports progress and logs
        args: [{name: n, type: integer}]
        notifications:
          - {progress: 0, total: 2, message: "start {{ args.n }}"}
          - {log: debug, logger: steps, data: "debug {{ args.n }}"}
          - {log: warning, data: "warn {{ args.n }}"}
          - {progress: 2, total: 2}
        responseTemplate: {body: "done {{ args.n }}"}
      - name: fetch
        description: Calls the upstream
        args: [{name: id, position: query}]
        notifications:
          - {log: info, data: "upstream answered {{ status }} in {{ elapsedMs }} ms"}
          - {log: warning, when: error, data: "upstream failed: {{ status }} {{ body }}"}
          - {log: info, when: success, data: "got {{ response.name }}"}
        requestTemplate: {url: /items}
      - name: quiet
        description: No notifications
        responseTemplate: {body: "quiet"}
"#;

/// The events of an SSE answer, each event's data parsed.
fn sse_events(r: &HttpResponse) -> Vec<Value> {
    let ct = r.headers.iter().find(|(k, _)| k == "content-type").map(|(_, v)| v.as_str());
    assert_eq!(ct, Some("text/event-stream"), "{}", String::from_utf8_lossy(&r.body));
    let text = String::from_utf8(r.body.clone()).unwrap();
    assert!(text.ends_with("\n\n"));
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).expect("a data line");
            serde_json::from_str(data).unwrap()
        })
        .collect()
}

fn methods(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["method"].as_str().unwrap_or("(response)").to_string()).collect()
}

fn call(id: u32, tool: &str, args: Value, meta: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": args, "_meta": meta}})
        .to_string()
}

fn item(status: u16) -> impl Fn(&UpstreamRequest) -> UpstreamResult {
    move |_: &UpstreamRequest| UpstreamResult::Response {
        status,
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"name": "widget"}"#.to_vec(),
    }
}

#[test]
fn notifications_precede_the_result_in_one_sse_answer() {
    let g = Gateway::from_config_str(NOTIFYING).unwrap();
    assert_eq!(g.servers[0].capabilities["logging"], json!({}), "a tool logs, so logging is declared");
    let mut h = Host::new();
    let sid = h.initialize(&g, "2025-11-25");
    // No level set: every level is sent; progress only with a token, and with that token.
    let r = h.post(&g, &sid, &call(5, "steps", json!({"n": 7}), json!({"progressToken": "t1"})), &no_upstream);
    let events = sse_events(&r);
    assert_eq!(
        methods(&events),
        [
            "notifications/progress",
            "notifications/message",
            "notifications/message",
            "notifications/progress",
            "(response)"
        ]
    );
    assert_eq!(events[0]["params"], json!({"progressToken": "t1", "progress": 0, "total": 2, "message": "start 7"}));
    assert_eq!(events[1]["params"], json!({"level": "debug", "logger": "steps", "data": "debug 7"}));
    assert_eq!(events[3]["params"], json!({"progressToken": "t1", "progress": 2, "total": 2}));
    assert_eq!(
        (events[4]["id"].clone(), events[4]["result"]["content"][0]["text"].clone()),
        (json!(5), json!("done 7"))
    );
    // Without a token: logs only. An integer token is kept as it is.
    let events = sse_events(&h.post(&g, &sid, &call(6, "steps", json!({"n": 1}), json!({})), &no_upstream));
    assert_eq!(methods(&events), ["notifications/message", "notifications/message", "(response)"]);
    let events = sse_events(&h.post(&g, &sid, &call(6, "steps", json!({}), json!({"progressToken": 9})), &no_upstream));
    assert_eq!(events[0]["params"]["progressToken"], json!(9));
    // A tool without notifications, and a client that takes no SSE: JSON as always.
    let r = h.post(&g, &sid, &call(7, "quiet", json!({}), json!({"progressToken": "t"})), &no_upstream);
    assert_eq!(json_body(&r)["result"]["content"][0]["text"], json!("quiet"));
    let mut hd = head("POST", "/mcp-servers/demo", &[("mcp-session-id", &sid)]);
    hd.headers.retain(|(k, _)| *k != "accept");
    let r = h.send(&g, hd, &call(8, "steps", json!({}), json!({"progressToken": "t"})), &no_upstream);
    assert_eq!(json_body(&r)["result"]["content"][0]["text"], json!("done "));
}

#[test]
fn notifications_of_an_upstream_call_see_its_answer_and_follow_its_outcome() {
    let g = Gateway::from_config_str(NOTIFYING).unwrap();
    let mut h = Host::new();
    let sid = h.initialize(&g, "2025-06-18");
    let events = sse_events(&h.post(&g, &sid, &call(1, "fetch", json!({"id": "1"}), json!({})), &item(200)));
    let data: Vec<Value> = events.iter().map(|e| e["params"]["data"].clone()).collect();
    assert_eq!(data, [json!("upstream answered 200 in 0 ms"), json!("got widget"), Value::Null]);
    let events = sse_events(&h.post(&g, &sid, &call(2, "fetch", json!({}), json!({})), &item(503)));
    assert_eq!(events[1]["params"], json!({"level": "warning", "data": "upstream failed: 503 {\"name\": \"widget\"}"}));
    assert_eq!(events[2]["result"]["isError"], json!(true));
    let failed = |_: &UpstreamRequest| UpstreamResult::Failed("connection refused".into());
    let events = sse_events(&h.post(&g, &sid, &call(3, "fetch", json!({}), json!({})), &failed));
    assert_eq!(events[1]["params"]["data"], json!("upstream failed: 0 connection refused"));
    // A batch (2025-03-26): each call's notifications, in the order of the calls, then the batch's answers.
    let sid = h.initialize(&g, "2025-03-26");
    let batch = format!(
        "[{},{}]",
        call(10, "fetch", json!({}), json!({})),
        call(11, "steps", json!({"n": 2}), json!({"progressToken": "b"}))
    );
    let events = sse_events(&h.post(&g, &sid, &batch, &item(200)));
    assert_eq!(events.len(), 2 + 4 + 1);
    assert_eq!(events[0]["params"]["data"], json!("upstream answered 200 in 0 ms"));
    assert_eq!(events[2]["params"]["progressToken"], json!("b"));
    let answers = events[6].as_array().expect("the batch's answers last");
    assert_eq!((answers[0]["id"].clone(), answers[1]["id"].clone()), (json!(10), json!(11)));
}

#[test]
fn set_level_filters_and_is_kept_where_the_store_can_keep_it() {
    for store in STORES {
        let g = Gateway::from_config_str(&format!("{store}\n{NOTIFYING}")).unwrap();
        let mut h = Host::new();
        let sid = h.initialize(&g, "2025-11-25");
        let set = |level: &str| {
            format!(r#"{{"jsonrpc":"2.0","id":2,"method":"logging/setLevel","params":{{"level":"{level}"}}}}"#)
        };
        let r = json_body(&h.post(&g, &sid, &set("warning"), &no_upstream));
        if store.contains("signed") {
            // The id is the session: nothing can be kept, and the client is told so.
            assert_eq!(r["error"]["code"], json!(jsonrpc::INTERNAL_ERROR), "{r}");
            assert!(r["error"]["message"].as_str().unwrap().contains("signed"), "{r}");
            continue;
        }
        assert_eq!(r["result"], json!({}), "{store}");
        let events = sse_events(&h.post(&g, &sid, &call(3, "steps", json!({"n": 1}), json!({})), &no_upstream));
        assert_eq!(methods(&events), ["notifications/message", "(response)"], "{store}");
        assert_eq!(events[0]["params"]["level"], json!("warning"));
        // Above every message: the answer is plain JSON again.
        json_body(&h.post(&g, &sid, &set("emergency"), &no_upstream));
        let r = h.post(&g, &sid, &call(4, "steps", json!({}), json!({})), &no_upstream);
        assert_eq!(json_body(&r)["result"]["isError"], json!(false), "{store}");
        let bad = json_body(&h.post(&g, &sid, &set("verbose"), &no_upstream));
        assert_eq!(bad["error"]["code"], json!(jsonrpc::INVALID_PARAMS), "{store}");
        let r = h.post(&g, &sid, &call(4, "steps", json!({}), json!({})), &no_upstream);
        assert!(
            r.headers.iter().any(|(k, v)| k == "content-type" && v == "application/json"),
            "a bad level changes nothing"
        );
    }
    // A server whose tools do not log declares no logging, and has no logging/setLevel.
    let g = gw();
    assert!(g.servers[0].capabilities.get("logging").is_none());
    let mut h = Host::new();
    let sid = h.initialize(&g, "2025-11-25");
    let r = h.post(
        &g,
        &sid,
        r#"{"jsonrpc":"2.0","id":2,"method":"logging/setLevel","params":{"level":"info"}}"#,
        &no_upstream,
    );
    assert_eq!(json_body(&r)["error"]["code"], json!(-32601));
}

#[test]
fn stateless_requests_hear_logs_only_at_the_level_their_meta_sets() {
    let g = Gateway::from_config_str(NOTIFYING).unwrap();
    let mut h = Host::new();
    let meta = |extra: Value| {
        let (hd, body) = stateless("tools/call", json!({"name": "steps", "arguments": {"n": 3}}));
        let mut v: Value = serde_json::from_str(&body).unwrap();
        for (k, x) in extra.as_object().unwrap() {
            v["params"]["_meta"][k] = x.clone();
        }
        (hd, v.to_string())
    };
    // No level: no log message (the revision forbids them); no token: no progress; so plain JSON.
    let (hd, body) = meta(json!({}));
    let r = h.send(&g, hd, &body, &no_upstream);
    assert_eq!(json_body(&r)["result"]["resultType"], json!("complete"));
    let (hd, body) = meta(json!({"progressToken": "p"}));
    let events = sse_events(&h.send(&g, hd, &body, &no_upstream));
    assert_eq!(methods(&events), ["notifications/progress", "notifications/progress", "(response)"]);
    assert_eq!(events[2]["result"]["resultType"], json!("complete"));
    let (hd, body) = meta(json!({"io.modelcontextprotocol/logLevel": "info"}));
    let events = sse_events(&h.send(&g, hd, &body, &no_upstream));
    assert_eq!(methods(&events), ["notifications/message", "(response)"]);
    assert_eq!(events[0]["params"]["level"], json!("warning"));
    let (hd, body) = meta(json!({"io.modelcontextprotocol/logLevel": "loud"}));
    let r = h.send(&g, hd, &body, &no_upstream);
    assert_eq!((json_body(&r)["error"]["code"].clone(), json_body(&r)["id"].clone()), (json!(-32602), json!(42)));
}

#[test]
fn routed_calls_answer_with_notifications_too() {
    let config = NOTIFYING.replace("upstream: {cluster: api}", "upstream: {dispatch: route}");
    let g = Gateway::from_config_str(&config).unwrap();
    let mut h = Host::new();
    let sid = h.initialize(&g, "2025-11-25");
    let events = sse_events(&h.post(&g, &sid, &call(1, "fetch", json!({}), json!({})), &item(200)));
    assert_eq!(h.forwarded, 1);
    assert_eq!(methods(&events), ["notifications/message", "notifications/message", "(response)"]);
}

#[test]
fn notifications_report_how_long_the_upstream_took() {
    let g = Gateway::from_config_str(NOTIFYING).unwrap();
    let mut h = Host::new();
    let sid = h.initialize(&g, "2025-11-25");
    let hd = head("POST", "/mcp-servers/demo", &[("mcp-session-id", &sid)]);
    let mut driver = h.start(&g, &hd, call(1, "fetch", json!({}), json!({})).as_bytes()).expect("accepted");
    h.env.now_ms += 250;
    assert_eq!(h.settle(&g, &mut driver, &item(200)), Progress::Done);
    let events = sse_events(&h.responses.pop().unwrap());
    assert_eq!(events[0]["params"]["data"], json!("upstream answered 200 in 250 ms"));
}

#[test]
fn admission_refuses_before_the_exchange_and_policy_pages_over_what_the_caller_may_see() {
    let tools: String = (0..5)
        .map(|i| format!("      - {{name: t{i}, description: d, responseTemplate: {{body: \"t{i}\"}}}}\n"))
        .collect();
    let config = format!(
        "toolsPageSize: 2\nconsumers: [{{name: bob, credential: kb}}, {{name: amy, credential: ka}}]\n\
         keyAuth: {{keys: [x-api-key]}}\nservers:\n  - name: demo\n    auth: {{anonymous: false}}\n    \
         policy: {{rules: [{{consumers: [bob], allow: {{tools: [t1, t3, t4]}}}}, {{consumers: ['*'], deny: {{tools: [t4]}}, allow: {{tools: [t0]}}}}]}}\n    tools:\n{tools}"
    );
    let g = Gateway::from_config_str(&config).unwrap();
    // No key, and a wrong one: 401 before anything else (no session is created).
    for headers in [vec![], vec![("x-api-key", "nope")]] {
        match route(&g, &head("POST", "/mcp-servers/demo", &headers)) {
            Route::Respond(r) => assert_eq!((r.status, json_body(&r)["error"]["code"].clone()), (401, json!(-32600))),
            other => panic!("{other:?}"),
        }
    }
    // No metadata document for a server that is no OAuth resource server.
    assert!(matches!(
        route(&g, &head("GET", "/.well-known/oauth-protected-resource/mcp-servers/demo", &[])),
        Route::PassThrough
    ));
    let mut h = Host::new();
    let send = |h: &mut Host, key: &str, sid: Option<&str>, body: &str| {
        let mut headers = vec![("x-api-key", key)];
        headers.extend(sid.map(|s| ("mcp-session-id", s)));
        h.send(&g, head("POST", "/mcp-servers/demo", &headers), body, &no_upstream)
    };
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let r = send(&mut h, "kb", None, init);
    let sid = r.headers.iter().find(|(k, _)| k == "mcp-session-id").map(|(_, v)| v.clone()).unwrap();
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let body = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {"cursor": cursor}});
        let page = json_body(&send(&mut h, "kb", Some(&sid), &body.to_string()));
        seen.push(page["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].clone()).collect::<Vec<_>>());
        cursor = page["result"]["nextCursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(seen, [vec![json!("t0"), json!("t1")], vec![json!("t3")]], "pages of bob's view; t4 denied to all");
    let call = |tool: &str| format!(r#"{{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{{"name":"{tool}"}}}}"#);
    let refused = json_body(&send(&mut h, "kb", Some(&sid), &call("t2")));
    assert_eq!(
        refused["error"],
        json!({"code": -32600, "message": "Forbidden: consumer 'bob' may not use tool 't2'", "data": {"cause": "forbidden"}})
    );
    assert_eq!(json_body(&send(&mut h, "kb", Some(&sid), &call("t3")))["result"]["content"][0]["text"], "t3");
    // Amy, on the same session, sees only what rules give her.
    let page = json_body(&send(&mut h, "ka", Some(&sid), r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#));
    assert_eq!(page["result"]["tools"].as_array().unwrap().len(), 1);
}

#[test]
fn accept_headers_admit_media_types_case_aside_exactly_by_type_or_by_any() {
    for (accept, json, sse) in [
        ("application/json, text/event-stream", true, true),
        ("Application/JSON;q=0.9 , TEXT/*", true, true),
        ("*/*", true, true),
        ("application/*", true, false),
        ("application/jsonx, text/event", false, false),
        ("", false, false),
        ("é/*, application/é", false, false),
    ] {
        assert_eq!(accepted(accept), (json, sse), "{accept}");
    }
}

#[test]
fn a_common_method_is_kept_without_a_copy() {
    use std::borrow::Cow;
    for m in ["POST", "GET", "DELETE", "OPTIONS", "HEAD", "PUT", "PATCH"] {
        assert!(matches!(crate::transport::method(m), Cow::Borrowed(b) if b == m), "{m}");
    }
    // Any other text is kept as it came (methods are case-sensitive: `post` is not `POST`).
    for m in ["post", "PROPFIND", "", "GET "] {
        assert!(matches!(crate::transport::method(m), Cow::Owned(o) if o == m), "{m:?}");
    }
}
