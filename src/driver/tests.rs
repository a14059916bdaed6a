//! The driver on its own: completions now and later, in any order, late and unknown ones, watchdogs.

use super::test_host::TestHost;
use super::*;
use crate::transport::RequestHead;

const CONFIG: &str = r#"
servers:
  - name: demo
    upstream: {cluster: api}
    tools:
      - name: weather
        description: Weather
        args: [{name: city, required: true, position: query}]
        requestTemplate: {url: /weather}
"#;

fn gw() -> Gateway {
    Gateway::from_config_str(CONFIG).unwrap()
}

fn post(sid: Option<&str>) -> RequestHead {
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("accept".to_string(), "application/json, text/event-stream".to_string()),
    ];
    if let Some(s) = sid {
        headers.push(("mcp-session-id".into(), s.into()));
    }
    RequestHead {
        method: "POST".into(),
        path: "/mcp-servers/demo".into(),
        headers: headers.into(),
        client_address: None,
        jwt: None,
    }
}

fn session(h: &mut TestHost, g: &Gateway) -> String {
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26"}}"#;
    let r = h.send(g, post(None), init, &|_| UpstreamResult::Failed("none".into()));
    r.headers.iter().find(|(k, _)| k == "mcp-session-id").unwrap().1.clone()
}

fn ok(body: &str) -> UpstreamResult {
    UpstreamResult::Response { status: 200, headers: vec![], body: body.as_bytes().to_vec() }
}

fn batch(cities: &[&str]) -> String {
    let calls: Vec<String> = cities
        .iter()
        .enumerate()
        .map(|(i, c)| {
            format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"weather","arguments":{{"city":"{c}"}}}}}}"#)
        })
        .collect();
    format!("[{}]", calls.join(","))
}

#[test]
fn upstream_answers_complete_later_in_any_order() {
    let g = gw();
    let mut h = TestHost::new();
    let sid = session(&mut h, &g);
    h.responses.clear();
    let mut d = h.start(&g, &post(Some(&sid)), batch(&["a", "b", "c"]).as_bytes()).unwrap();
    assert_eq!(h.upstream_queue.len(), 3, "all three sent before any answer");
    let tokens: Vec<u32> = h.upstream_queue.drain(..).map(|(t, _)| t).collect();
    assert_eq!(d.on_upstream(&g, &mut h, tokens[1], ok("B")), Progress::Waiting);
    assert_eq!(d.on_upstream(&g, &mut h, 999, ok("?")), Progress::Waiting, "unknown tokens are ignored");
    assert_eq!(d.on_upstream(&g, &mut h, tokens[1], ok("again")), Progress::Waiting, "and repeated ones");
    assert_eq!(d.on_upstream(&g, &mut h, tokens[2], ok("C")), Progress::Waiting);
    assert_eq!(d.on_upstream(&g, &mut h, tokens[0], ok("A")), Progress::Done);
    let v: serde_json::Value = serde_json::from_slice(&h.responses.pop().unwrap().body).unwrap();
    let texts: Vec<&str> = (0..3).map(|i| v[i]["result"]["content"][0]["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["A", "B", "C"], "replies keep the order of the batch");
    assert_eq!(d.on_upstream(&g, &mut h, tokens[0], ok("late")), Progress::Done);
    assert!(h.responses.is_empty(), "nothing after the response");
}

#[test]
fn a_refused_dispatch_completes_at_once() {
    let g = gw();
    let mut h = TestHost::new();
    let sid = session(&mut h, &g);
    h.responses.clear();
    h.refuse_dispatch = true;
    let d = h.start(&g, &post(Some(&sid)), batch(&["a", "b"]).as_bytes()).unwrap();
    assert_eq!(d.progress(), Progress::Done);
    let v: serde_json::Value = serde_json::from_slice(&h.responses[0].body).unwrap();
    assert_eq!(v[0]["result"]["isError"], serde_json::json!(true));
    assert!(v[1]["result"]["content"][0]["text"].as_str().unwrap().contains("cluster 'api'"));
    assert_eq!(h.warnings.len(), 2);
}

fn accepted(g: &Gateway) -> Driver {
    let crate::transport::Route::Accept(ex) = crate::transport::route(g, &post(None)) else { panic!() };
    Driver::new(ex, 1000)
}

#[test]
fn a_slow_body_is_the_clients_408_unless_envoy_holds_it_back() {
    let g = Gateway::from_config_str(&format!("requestBodyTimeoutMs: 3000\n{CONFIG}")).unwrap();
    let body = |h: &TestHost| String::from_utf8_lossy(&h.responses[0].body).into_owned();
    // Nothing arrived at all: the client is slow.
    for received in [None, Some(0)] {
        let mut h = TestHost::new();
        h.body_received = received;
        let mut d = accepted(&g);
        assert!(d.awaits_body());
        assert_eq!(d.on_tick(&g, &mut h, 1000 + 2999), Progress::Waiting);
        assert_eq!(d.on_tick(&g, &mut h, 1000 + 3000), Progress::Done);
        assert_eq!(h.responses[0].status, 408, "{received:?}");
        assert!(body(&h).contains("requestBodyTimeoutMs"), "{}", body(&h));
        assert!(h.warnings.is_empty());
    }
    // Part of the body came, the rest did not: the client's again.
    let mut h = TestHost::new();
    h.body_received = Some(10);
    let mut d = accepted(&g);
    d.on_body_chunk();
    assert_eq!(d.on_tick(&g, &mut h, 1000 + 3000), Progress::Done);
    assert_eq!(h.responses[0].status, 408);
    // Envoy received body bytes and never called the plugin: its configuration, said once in the log.
    let mut h = TestHost::new();
    h.body_received = Some(120);
    let mut d = accepted(&g);
    assert_eq!(d.on_tick(&g, &mut h, 1000 + 3000), Progress::Done);
    assert_eq!(h.responses[0].status, 500);
    assert!(body(&h).contains("allow_on_headers_stop_iteration"));
    assert_eq!(h.warnings.len(), 1);
}

#[test]
fn calls_past_the_workers_limit_are_refused_with_the_limit_named() {
    let g = Gateway::from_config_str(&format!("maxCallsInFlight: 3\n{CONFIG}")).unwrap();
    let mut h = TestHost::new();
    let sid = session(&mut h, &g);
    h.responses.clear();
    let mut first = h.start(&g, &post(Some(&sid)), batch(&["a", "b"]).as_bytes()).unwrap();
    assert_eq!(first.calls_in_flight(), 2);
    // Another client's batch gets one more call through, then the limit.
    let mut second = h.start(&g, &post(Some(&sid)), batch(&["c", "d", "e"]).as_bytes()).unwrap();
    assert_eq!(second.calls_in_flight(), 1);
    assert_eq!(h.upstream_queue.len(), 3);
    let answer = |_: &UpstreamRequest| ok("fine");
    assert_eq!(h.settle(&g, &mut second, &answer), Progress::Done);
    let v: serde_json::Value = serde_json::from_slice(&h.responses.pop().unwrap().body).unwrap();
    assert_eq!(v[0]["result"]["content"][0]["text"], serde_json::json!("fine"));
    for refused in [&v[1], &v[2]] {
        assert_eq!(refused["result"]["isError"], serde_json::json!(true));
        assert!(refused["result"]["content"][0]["text"].as_str().unwrap().contains("maxCallsInFlight"), "{refused}");
    }
    assert_eq!(h.settle(&g, &mut first, &answer), Progress::Done);
    assert!(h.warnings.is_empty(), "a limit is not an operator problem: {:?}", h.warnings);
}

#[test]
fn a_request_without_a_cluster_is_forwarded_once_and_answered_in_its_place() {
    let g = Gateway::from_config_str(&CONFIG.replace("    upstream: {cluster: api}\n", "")).unwrap();
    let mut h = TestHost::new();
    let sid = session(&mut h, &g);
    h.responses.clear();
    let mut d = h.start(&g, &post(Some(&sid)), batch(&["a", "b"]).as_bytes()).unwrap();
    // The client's request becomes one upstream request; the second call is refused, saying why.
    assert_eq!((h.forwarded, d.calls_in_flight()), (1, 1));
    let sent = &h.dispatched[0];
    assert_eq!((sent.dispatch, sent.cluster.as_str(), sent.path.as_str()), (Dispatch::Route, "", "/weather?city=a"));
    assert_eq!(h.settle(&g, &mut d, &|_| ok("sunny")), Progress::Done);
    let v: serde_json::Value = serde_json::from_slice(&h.responses.pop().unwrap().body).unwrap();
    assert_eq!(v[0]["result"]["content"][0]["text"], serde_json::json!("sunny"));
    assert_eq!(v[1]["result"]["isError"], serde_json::json!(true));
    assert!(v[1]["result"]["content"][0]["text"].as_str().unwrap().contains("one such call"), "{v}");
}

const GUARDED: &str = r#"
servers:
  - name: demo
    upstream: {cluster: api}
    guardrails:
      external: {cluster: guard, timeoutMs: 200, output: true}
      tools:
        open:
          external: {cluster: guard, failOpen: true}
    tools:
      - name: weather
        description: Weather
        args: [{name: city, required: true, position: query}]
        requestTemplate: {url: /weather}
      - name: open
        description: Checked, failing open
        args: [{name: city, required: true, position: query}]
        requestTemplate: {url: /weather}
"#;

/// The guard service: refuses the input of city `bad`, the output that mentions `secret`, and is down
/// for city `down`; the API answers each city's weather (`secret` for city `s`).
fn guard_and_api(r: &UpstreamRequest) -> UpstreamResult {
    let body = String::from_utf8_lossy(r.body.as_deref().unwrap_or_default()).to_string();
    match r.cluster.as_str() {
        "guard" if body.contains("\"city\":\"down\"") => UpstreamResult::Failed("connection refused".into()),
        "guard" if body.contains("\"phase\":\"input\"") && body.contains("\"city\":\"bad\"") => {
            ok(r#"{"allow": false, "reason": "bad city"}"#)
        }
        "guard" if body.contains("\"phase\":\"output\"") && body.contains("secret") => {
            ok(r#"{"allow": false, "reason": "leaks a secret"}"#)
        }
        "guard" => ok(r#"{"allow": true}"#),
        _ => {
            let city = r.path.rsplit('=').next().unwrap_or_default();
            ok(if city == "s" { "secret" } else { "sunny" })
        }
    }
}

fn guarded_batch(calls: &[(&str, &str)]) -> String {
    let calls: Vec<String> = calls
        .iter()
        .enumerate()
        .map(|(i, (tool, c))| {
            format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"city":"{c}"}}}}}}"#)
        })
        .collect();
    format!("[{}]", calls.join(","))
}

#[test]
fn the_guard_service_checks_input_and_output_while_other_calls_are_in_flight() {
    let g = Gateway::from_config_str(GUARDED).unwrap();
    let mut h = TestHost::new();
    let sid = session(&mut h, &g);
    let body =
        guarded_batch(&[("weather", "a"), ("weather", "bad"), ("weather", "s"), ("weather", "down"), ("open", "down")]);
    let r = h.send(&g, post(Some(&sid)), &body, &guard_and_api);
    let replies: Vec<Value> = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(replies.len(), 5, "{replies:?}");
    assert_eq!(replies[0]["result"]["content"][0]["text"], "sunny");
    let message = |i: usize| replies[i]["error"]["message"].as_str().unwrap_or_default().to_string();
    assert!(message(1).contains("refused the input of tool 'weather': bad city"), "{}", message(1));
    assert!(message(2).contains("refused the output of tool 'weather': leaks a secret"), "{}", message(2));
    assert!(
        message(3).contains("could not check the input") && message(3).contains("connection refused"),
        "{}",
        message(3)
    );
    for r in &replies[1..4] {
        assert_eq!(r["error"]["data"]["cause"], "guardrail", "{r}");
    }
    // Failing open: the call went on (and its tool has no output check).
    assert_eq!(replies[4]["result"]["content"][0]["text"], "sunny");
    // Guard calls for a (in, out), bad (in), s (in, out), down (in), open/down (in); API calls for a, s, open.
    let to = |c: &str| h.dispatched.iter().filter(|r| r.cluster == c).count();
    assert_eq!((to("guard"), to("api")), (7, 3));
    // A refused call is recorded as a guardrail refusal, once.
    h.responses.clear();
    let mut d = h.start(&g, &post(Some(&sid)), guarded_batch(&[("weather", "bad")]).as_bytes()).unwrap();
    assert_eq!(h.settle(&g, &mut d, &guard_and_api), Progress::Done);
    let records = d.take_records();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].tool.as_str(), records[0].outcome), ("weather", "guardrail"));
    assert!(d.take_records().is_empty());
}

#[test]
fn only_a_virtual_server_that_reaches_an_sse_server_takes_the_loopback_key() {
    // Signed sessions' keys: the key is there to take (no shared secret to prepare).
    let g = Gateway::from_config_str(
        r#"
sessions: {store: signed, signingKeys: ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]}
servers:
  - {name: demo, upstream: {cluster: api}, tools: [{name: weather, requestTemplate: {url: /weather}}]}
  - {name: legacy, type: mcp-proxy, transport: sse, mcpServerURL: /sse, upstream: {authority: "legacy:9"}}
  - {name: v, type: virtual, gatewayCluster: self, tools: [{server: legacy, tool: echo}, {server: demo, tool: weather}]}
  - {name: w, type: virtual, gatewayCluster: self, tools: [{server: demo, tool: weather}]}
"#,
    )
    .unwrap();
    assert!(g.loopback.is_some());
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26"}}"#;
    for (server, keyed) in [("v", true), ("w", false), ("demo", false)] {
        let mut head = post(None);
        head.path = format!("/mcp-servers/{server}");
        let crate::transport::Route::Accept(ex) = crate::transport::route(&g, &head) else { panic!("{server}") };
        let mut d = Driver::new(ex, 1000);
        let mut h = TestHost::default();
        let _ = d.on_body(&g, &mut h, init.as_bytes());
        assert_eq!(d.exchange.has_loopback(), keyed, "{server}");
    }
    let loops = |name: &str| g.server(name).unwrap().composed.as_ref().unwrap().loops_back;
    assert!(loops("v") && !loops("w"));
}
