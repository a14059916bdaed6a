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
    RequestHead { method: "POST".into(), path: "/mcp-servers/demo".into(), headers }
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

#[test]
fn a_body_that_never_comes_is_answered_with_the_fix() {
    let g = gw();
    let mut h = TestHost::new();
    let crate::transport::Route::Accept(ex) = crate::transport::route(&g, &post(None)) else { panic!() };
    let mut d = Driver::new(ex, 1000);
    assert!(d.awaits_body());
    assert_eq!(d.on_tick(&g, &mut h, 1000 + BODY_STALL_MS - 1), Progress::Waiting);
    assert_eq!(d.on_tick(&g, &mut h, 1000 + BODY_STALL_MS), Progress::Done);
    assert_eq!(h.responses[0].status, 500);
    assert!(String::from_utf8_lossy(&h.responses[0].body).contains("allow_on_headers_stop_iteration"));
    // A body that started arriving is not stalled.
    let crate::transport::Route::Accept(ex) = crate::transport::route(&g, &post(None)) else { panic!() };
    let mut d = Driver::new(ex, 1000);
    d.on_body_chunk();
    assert_eq!(d.on_tick(&g, &mut h, 1000 + 10 * BODY_STALL_MS), Progress::Waiting);
    assert!(d.awaits_body());
}
