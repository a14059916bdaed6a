use super::super::bridge::{Begin, Bridge, Post, Step as BridgeStep};
use super::super::wait::{Done, Next, Pending};
use super::super::{route, Answer, Relay, Start};
use super::Gate;
use crate::gateway::Gateway;
use crate::proxy::tests::env;
use crate::session::memory::MemoryEnv;
use crate::session::redis::Answer as RedisAnswer;
use crate::transport::RequestHead;
use crate::upstream::UpstreamResult;
use serde_json::{json, Value};

fn gateway(transport: &str, extra: &str) -> Gateway {
    // The limits' Redis, when they count there.
    let redis = if extra.contains("scope: cluster") { "sessions: {redis: {cluster: r, timeoutMs: 300}}\n" } else { "" };
    let cfg = format!(
        "{redis}servers:\n- name: up\n  type: mcp-proxy\n  transport: {transport}\n  mcpServerURL: /mcp\n{extra}"
    );
    Gateway::from_config_str(&cfg).unwrap()
}

fn post(path: &str) -> RequestHead {
    let headers = vec![(":authority".to_string(), "gw".to_string())];
    RequestHead { method: "POST".into(), path: path.into(), headers: headers.into(), client_address: None, jwt: None }
}

fn relay(gw: &Gateway, env: &mut MemoryEnv) -> Relay {
    match route(gw, &post("/mcp-servers/up"), env) {
        Some(Start::Forward(relay, _)) => relay,
        other => panic!("not forwarded: {other:?}"),
    }
}

fn call(id: u32, tool: &str, meta: &str) -> Vec<u8> {
    format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{"q":"hi"}}{meta}}}}}"#)
        .into_bytes()
}

/// The host's answer to the command a gate waits for, read as the host does.
fn redis(gw: &Gateway, env: &mut MemoryEnv, pending: Pending, reply: &[u8]) -> Next {
    assert!(pending.command().is_some(), "{pending:?}");
    pending.on_redis(gw, RedisAnswer::Reply(reply), env)
}

fn done(next: Next) -> Done {
    match next {
        Next::Done(done) => done,
        other => panic!("{other:?}"),
    }
}

fn body(r: &crate::transport::HttpResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

const LIMITS: &str =
    "  rateLimits: [{requests: 1, window: 1m, scope: cluster}]\n  quotas: [{requests: 100, period: day, \
                      onStoreError: deny}]\n";

#[test]
fn redis_counters_hold_a_proxied_call_until_the_eval_answers() {
    let gw = gateway("http", LIMITS);
    let mut env = env();
    let mut r = relay(&gw, &mut env);
    assert!(r.needs_body());
    // The body is checked, then the request waits for one EVAL of the REST tools' script.
    assert!(matches!(r.on_body(&gw, &mut env, &call(4, "echo", "")), Ok(None)));
    let Gate::Wait(pending) = r.gate() else { panic!() };
    let args = crate::resp::decode_command(pending.command().unwrap()).unwrap();
    assert_eq!((args[0].as_slice(), args[1].as_slice()), (&b"EVAL"[..], crate::limits::redis::SCRIPT.as_bytes()));
    assert_eq!(pending.deadline_ms(&gw, 1000), 1000 + 300 + crate::driver::REDIS_GRACE_MS);
    // Room: it goes on as sent.
    let outcome = done(redis(&gw, &mut env, pending, b"*2\r\n:0\r\n:0\r\n"));
    assert!(matches!(r.on_gate(outcome), Gate::Go(None)));

    // No room (the first counter, 1.5 s to wait): the REST tools' error, in a 200 in a session...
    let mut r = relay(&gw, &mut env);
    r.on_body(&gw, &mut env, &call(5, "echo", "")).unwrap();
    let Gate::Wait(pending) = r.gate() else { panic!() };
    let outcome = done(redis(&gw, &mut env, pending, b"*2\r\n:1\r\n:1500\r\n"));
    let Gate::Refuse(refused) = r.on_gate(outcome) else { panic!() };
    let b = body(&refused);
    assert_eq!(
        (refused.status, b["id"].clone(), b["error"]["data"]["cause"].clone()),
        (200, json!(5), json!("rate_limited"))
    );
    assert_eq!(b["error"]["data"]["retryAfterSeconds"], 2, "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("rateLimits[0]"), "{b}");
    // ... and HTTP 429 with Retry-After at the stateless revision.
    let meta = r#","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#;
    let mut r = relay(&gw, &mut env);
    r.on_body(&gw, &mut env, &call(6, "echo", meta)).unwrap();
    let Gate::Wait(pending) = r.gate() else { panic!() };
    let Gate::Refuse(refused) = r.on_gate(done(redis(&gw, &mut env, pending, b"*2\r\n:2\r\n:5000\r\n"))) else {
        panic!()
    };
    assert_eq!(refused.status, 429);
    assert!(refused.headers.iter().any(|(k, v)| k == "retry-after" && v == "5"), "{:?}", refused.headers);
    assert!(body(&refused)["error"]["message"].as_str().unwrap().contains("quota exceeded"));
}

#[test]
fn redis_down_is_each_limits_choice_and_noauth_or_a_reset_are_tried_once_more() {
    // quotas[0] says deny: a call it counts is refused with 503 when Redis does not answer.
    let gw = gateway("http", LIMITS);
    let mut env = env();
    let mut r = relay(&gw, &mut env);
    r.on_body(&gw, &mut env, &call(1, "echo", "")).unwrap();
    let Gate::Wait(pending) = r.gate() else { panic!() };
    let Gate::Refuse(refused) = r.on_gate(pending.failed(&mut env, "Redis did not answer in time".into())) else {
        panic!()
    };
    assert_eq!(refused.status, 200);
    let b = body(&refused);
    assert_eq!(b["error"]["data"]["cause"], "store_unavailable", "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("onStoreError: deny"), "{b}");
    // Only allow: the call goes on.
    let open = gateway("http", "  rateLimits: [{requests: 1, window: 1m, scope: cluster}]\n");
    let mut r = relay(&open, &mut env);
    r.on_body(&open, &mut env, &call(1, "echo", "")).unwrap();
    let Gate::Wait(pending) = r.gate() else { panic!() };
    let outcome = pending.failed(&mut env, "down".into());
    assert!(matches!(&outcome, Done::Limit(o) if o.store_error.as_deref() == Some("down")), "{outcome:?}");
    assert!(matches!(r.on_gate(outcome), Gate::Go(None)));
    // NOAUTH: re-authenticate and send again, once; an interrupted command is sent again, once.
    let mut r = relay(&open, &mut env);
    r.on_body(&open, &mut env, &call(1, "echo", "")).unwrap();
    let Gate::Wait(pending) = r.gate() else { panic!() };
    let Next::Reauthenticate(again) = redis(&open, &mut env, pending, b"-NOAUTH Authentication required.\r\n") else {
        panic!()
    };
    let Done::Limit(o) = done(redis(&open, &mut env, again, b"-NOAUTH Authentication required.\r\n")) else { panic!() };
    assert!(o.refused.is_empty() && o.store_error.is_some(), "{o:?}");
    let mut r = relay(&open, &mut env);
    r.on_body(&open, &mut env, &call(1, "echo", "")).unwrap();
    let Gate::Wait(pending) = r.gate() else { panic!() };
    let Next::Resend(again) = pending.on_redis(&open, RedisAnswer::Interrupted, &mut env) else { panic!() };
    assert!(matches!(again.on_redis(&open, RedisAnswer::Interrupted, &mut env), Next::Done(Done::Limit(_))));
}

/// An SSE client's stream (`GET .../sse`) with its endpoint bound: the relay, and the path it POSTs to.
fn stream(gw: &Gateway, env: &mut MemoryEnv) -> (Relay, String) {
    let mut get = post("/mcp-servers/up/sse");
    get.method = "GET".into();
    let Some(Start::Forward(mut stream, _)) = route(gw, &get, env) else { panic!() };
    let sse = vec![("content-type".to_string(), "text/event-stream".to_string())];
    assert!(matches!(stream.on_response_head(gw, env, 200, &sse), Answer::Hold(_)));
    let endpoint = String::from_utf8(stream.on_chunk(gw, env, b"event: endpoint\ndata: /m?s=1\n\n", false));
    let path = endpoint.unwrap().lines().nth(1).unwrap().strip_prefix("data: ").unwrap().to_string();
    (stream, path)
}

/// The messages of SSE events, in order.
fn messages(out: &[u8]) -> Vec<Value> {
    let out = String::from_utf8(out.to_vec()).unwrap();
    out.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect()
}

#[test]
fn on_an_sse_backend_a_refusal_goes_on_as_a_ping_for_the_clients_stream() {
    let gw = gateway("sse", "  rateLimits: [{requests: 1, window: 1m}]\n");
    let mut env = env();
    let (mut stream, path) = stream(&gw, &mut env);
    let Some(Start::Forward(mut first, _)) = route(&gw, &post(&path), &mut env) else { panic!() };
    assert!(first.on_body(&gw, &mut env, &call(2, "echo", "")).unwrap().is_none(), "the first call goes on as sent");
    let Some(Start::Forward(mut r, _)) = route(&gw, &post(&path), &mut env) else { panic!() };
    let ping = r.on_body(&gw, &mut env, &call(3, "echo", "")).unwrap().expect("the refusal, as a ping");
    let ping: Value = serde_json::from_slice(&ping).unwrap();
    assert_eq!(ping["method"], "ping");
    // The stream puts the refusal back in place of the ping's answer.
    let pong = format!("event: message\ndata: {}\n\n", json!({"jsonrpc": "2.0", "id": ping["id"], "result": {}}));
    let out = String::from_utf8(stream.on_chunk(&gw, &mut env, pong.as_bytes(), false)).unwrap();
    let got: Value =
        serde_json::from_slice(out.lines().find_map(|l| l.strip_prefix("data: ")).unwrap().as_bytes()).unwrap();
    assert_eq!((got["id"].clone(), got["error"]["data"]["cause"].clone()), (json!(3), json!("rate_limited")));
}

const GUARD: &str =
    "  guardrails:\n    mask: [email]\n    external: {cluster: guard, timeoutMs: 200, output: true}\n    \
                     tools:\n      open: {external: {cluster: guard, failOpen: true}}\n";

fn verdict(text: &str) -> Done {
    Done::Call(UpstreamResult::Response { status: 200, headers: vec![], body: text.as_bytes().to_vec() })
}

fn asked(gate: Gate) -> Value {
    let Gate::Wait(Pending::Call(request)) = gate else { panic!("{gate:?}") };
    assert_eq!((request.cluster.as_str(), request.path.as_str(), request.timeout_ms), ("guard", "/check", 200));
    serde_json::from_slice(request.body.as_deref().unwrap()).unwrap()
}

#[test]
fn the_guard_service_checks_a_proxied_calls_input_before_it_goes_on() {
    let gw = gateway("http", GUARD);
    let mut env = env();
    let mut r = relay(&gw, &mut env);
    r.on_body(&gw, &mut env, &call(2, "echo", "")).unwrap();
    let sent = asked(r.gate());
    assert_eq!(
        sent,
        json!({"phase": "input", "server": "up", "tool": "echo", "consumer": "-", "arguments": {"q": "hi"}})
    );
    assert!(matches!(r.on_gate(verdict(r#"{"allow": true}"#)), Gate::Go(None)));
    // Refused: the guardrail's error, with its reason; the call never goes on.
    let mut r = relay(&gw, &mut env);
    r.on_body(&gw, &mut env, &call(2, "echo", "")).unwrap();
    let _ = asked(r.gate());
    let Gate::Refuse(refused) = r.on_gate(verdict(r#"{"allow": false, "reason": "PII"}"#)) else { panic!() };
    let b = body(&refused);
    assert_eq!((b["id"].clone(), b["error"]["data"]["cause"].clone()), (json!(2), json!("guardrail")));
    assert!(b["error"]["message"].as_str().unwrap().contains("refused the input of tool 'echo': PII"), "{b}");
    // The service down: refused (failOpen false, the default)...
    let mut r = relay(&gw, &mut env);
    r.on_body(&gw, &mut env, &call(2, "echo", "")).unwrap();
    let Gate::Wait(pending) = r.gate() else { panic!() };
    assert_eq!(pending.deadline_ms(&gw, 0), 200 + crate::driver::REDIS_GRACE_MS);
    let Gate::Refuse(refused) = r.on_gate(pending.failed(&mut env, "no answer in time".into())) else { panic!() };
    assert!(body(&refused)["error"]["message"].as_str().unwrap().contains("failOpen is false"));
    // ... or on (failOpen: true for this tool).
    let mut r = relay(&gw, &mut env);
    r.on_body(&gw, &mut env, &call(2, "open", "")).unwrap();
    let Gate::Wait(pending) = r.gate() else { panic!() };
    assert!(matches!(r.on_gate(pending.failed(&mut env, "down".into())), Gate::Go(None)));
}

#[test]
fn limits_are_counted_before_the_guard_service_is_asked() {
    let gw = gateway("http", &format!("{LIMITS}{GUARD}"));
    let mut env = env();
    let mut r = relay(&gw, &mut env);
    r.on_body(&gw, &mut env, &call(2, "echo", "")).unwrap();
    let Gate::Wait(pending @ Pending::Limit(_)) = r.gate() else { panic!() };
    let _ = asked(r.on_gate(done(redis(&gw, &mut env, pending, b"*2\r\n:0\r\n:0\r\n"))));
    // A call a limit refuses is never shown to the guard service.
    let mut r = relay(&gw, &mut env);
    r.on_body(&gw, &mut env, &call(2, "echo", "")).unwrap();
    let Gate::Wait(pending) = r.gate() else { panic!() };
    assert!(matches!(r.on_gate(done(redis(&gw, &mut env, pending, b"*2\r\n:1\r\n:10\r\n"))), Gate::Refuse(_)));
}

#[test]
fn the_guard_service_checks_results_after_masking_in_json_and_in_sse() {
    let gw = gateway("http", GUARD);
    let mut env = env();
    let result = json!({"content": [{"type": "text", "text": "mail ann@example.com"}]});
    for (content_type, answer) in [
        ("application/json", json!({"jsonrpc": "2.0", "id": 2, "result": result}).to_string()),
        (
            "text/event-stream",
            format!(
                "event: message\ndata: {}\n\nevent: message\ndata: {}\n\n",
                json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progress": 1}}),
                json!({"jsonrpc": "2.0", "id": 2, "result": result})
            ),
        ),
    ] {
        for (says, refused) in [(r#"{"allow": true}"#, false), (r#"{"allow": false, "reason": "leak"}"#, true)] {
            let mut r = relay(&gw, &mut env);
            r.on_body(&gw, &mut env, &call(2, "echo", "")).unwrap();
            let _ = asked(r.gate());
            assert!(matches!(r.on_gate(verdict(r#"{"allow": true}"#)), Gate::Go(None)));
            let head = vec![("content-type".to_string(), content_type.to_string())];
            assert!(matches!(r.on_response_head(&gw, &mut env, 200, &head), Answer::Rewrite(_)));
            assert!(r.buffers(), "{content_type}: read whole");
            assert!(r.on_chunk(&gw, &mut env, answer.as_bytes(), true).is_empty(), "held for the check");
            let sent = asked(r.answer_gate());
            assert_eq!(sent["phase"], "output");
            assert_eq!(sent["result"]["content"][0]["text"], "mail [REDACTED:email]", "masked first: {sent}");
            let Gate::Go(Some(out)) = r.on_answer_gate(verdict(says)) else { panic!() };
            let out = String::from_utf8(out).unwrap();
            let message: Value = match content_type {
                "application/json" => serde_json::from_str(&out).unwrap(),
                _ => {
                    assert!(out.contains("notifications/progress"), "{out}");
                    serde_json::from_str(out.lines().filter_map(|l| l.strip_prefix("data: ")).nth(1).unwrap()).unwrap()
                }
            };
            assert_eq!(message["id"], 2);
            if refused {
                assert_eq!(message["error"]["data"]["cause"], "guardrail", "{out}");
                assert!(message["error"]["message"].as_str().unwrap().contains("output of tool 'echo': leak"));
                assert!(!out.contains("REDACTED"), "{out}");
            } else {
                assert_eq!(message["result"]["content"][0]["text"], "mail [REDACTED:email]", "{out}");
            }
        }
    }
    // An error answer is not shown to the service; the answer goes on.
    let mut r = relay(&gw, &mut env);
    r.on_body(&gw, &mut env, &call(2, "echo", "")).unwrap();
    let _ = asked(r.gate());
    let _ = r.on_gate(verdict(r#"{"allow": true}"#));
    let head = vec![("content-type".to_string(), "application/json".to_string())];
    let _ = r.on_response_head(&gw, &mut env, 200, &head);
    let error = json!({"jsonrpc": "2.0", "id": 2, "error": {"code": -32000, "message": "boom"}}).to_string();
    assert!(r.on_chunk(&gw, &mut env, error.as_bytes(), true).is_empty());
    let Gate::Go(Some(out)) = r.answer_gate() else { panic!() };
    assert_eq!(serde_json::from_slice::<Value>(&out).unwrap()["error"]["message"], "boom");
}

#[test]
fn an_sse_clients_post_waits_for_redis_counters_and_a_refusal_goes_on_its_stream() {
    let gw = gateway("sse", LIMITS);
    let mut env = env();
    let (mut stream, path) = stream(&gw, &mut env);
    // Room: the POST goes on as sent, once the EVAL answered.
    let Some(Start::Forward(mut r, _)) = route(&gw, &post(&path), &mut env) else { panic!() };
    assert!(r.on_body(&gw, &mut env, &call(2, "echo", "")).unwrap().is_none());
    let Gate::Wait(pending @ Pending::Limit(_)) = r.gate() else { panic!() };
    assert!(matches!(r.on_gate(done(redis(&gw, &mut env, pending, b"*2\r\n:0\r\n:0\r\n"))), Gate::Go(None)));
    // No room, or Redis down under quotas[0]'s onStoreError: deny: a ping carries the refusal to the stream.
    for (reply, cause) in [(Some(&b"*2\r\n:1\r\n:1500\r\n"[..]), "rate_limited"), (None, "store_unavailable")] {
        let Some(Start::Forward(mut r, _)) = route(&gw, &post(&path), &mut env) else { panic!() };
        r.on_body(&gw, &mut env, &call(3, "echo", "")).unwrap();
        let Gate::Wait(pending) = r.gate() else { panic!() };
        let outcome = match reply {
            Some(reply) => done(redis(&gw, &mut env, pending, reply)),
            None => pending.failed(&mut env, "Redis did not answer in time".into()),
        };
        let Gate::Go(Some(ping)) = r.on_gate(outcome) else { panic!() };
        let ping: Value = serde_json::from_slice(&ping).unwrap();
        assert_eq!(ping["method"], "ping");
        let pong = format!("event: message\ndata: {}\n\n", json!({"jsonrpc": "2.0", "id": ping["id"], "result": {}}));
        let got = messages(&stream.on_chunk(&gw, &mut env, pong.as_bytes(), false));
        assert_eq!((got[0]["id"].clone(), got[0]["error"]["data"]["cause"].clone()), (json!(3), json!(cause)));
    }
}

/// The backend's answer on an SSE client's stream to a call it got under `id`.
fn result_event(id: &Value, text: &str) -> String {
    let result = json!({"content": [{"type": "text", "text": text}]});
    format!("event: message\ndata: {}\n\n", json!({"jsonrpc": "2.0", "id": id, "result": result}))
}

#[test]
fn on_an_sse_clients_stream_a_checked_result_is_held_and_later_events_queue_behind_it() {
    let gw = gateway("sse", GUARD);
    let mut env = env();
    let (mut stream, path) = stream(&gw, &mut env);
    // The POST: the input check first; the call goes on under an id that names its tool.
    let mut sent = Vec::new();
    for (id, tool) in [(2, "echo"), (3, "open"), (4, "echo")] {
        let Some(Start::Forward(mut r, _)) = route(&gw, &post(&path), &mut env) else { panic!() };
        let renamed = r.on_body(&gw, &mut env, &call(id, tool, "")).unwrap().expect("the id names the tool");
        let Gate::Wait(Pending::Call(input)) = r.gate() else { panic!("the input check") };
        assert_eq!(serde_json::from_slice::<Value>(input.body.as_deref().unwrap()).unwrap()["phase"], "input");
        assert!(matches!(r.on_gate(verdict(r#"{"allow": true}"#)), Gate::Go(None)));
        let renamed: Value = serde_json::from_slice(&renamed).unwrap();
        assert!(renamed["id"].as_str().unwrap().ends_with(&format!(":{tool}")), "{renamed}");
        sent.push(renamed["id"].clone());
    }
    // The first result is held (the log before it goes on); the events after it wait, in order.
    let log = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n";
    let first = format!("{log}{}{log}", result_event(&sent[0], "mail ann@example.com"));
    let out = stream.on_chunk(&gw, &mut env, first.as_bytes(), false);
    assert_eq!(messages(&out).len(), 1, "only the log before the result");
    let Some(Pending::Call(check)) = stream.stream_gate() else { panic!() };
    assert!(stream.stream_gate().is_none(), "handed out once");
    let body: Value = serde_json::from_slice(check.body.as_deref().unwrap()).unwrap();
    assert_eq!(
        (&body["phase"], &body["tool"], &body["arguments"], &body["result"]["content"][0]["text"]),
        (&json!("output"), &json!("echo"), &Value::Null, &json!("mail [REDACTED:email]")),
        "masked first, the arguments unknown to the stream: {body}"
    );
    // Later events come while the first is checked: queued (a tool without an output check among them).
    let later = format!("{}{log}{}{log}", result_event(&sent[1], "second"), result_event(&sent[2], "third"));
    assert!(stream.on_chunk(&gw, &mut env, later.as_bytes(), false).is_empty());
    // Refused: the guardrail's error in its place, under the client's id; then the queue, in order, up
    // to the next checked result, which waits in turn.
    let out = stream.on_stream_gate(&gw, &mut env, verdict(r#"{"allow": false, "reason": "leak"}"#));
    let got = messages(&out);
    assert_eq!(got.len(), 4, "{got:?}");
    assert_eq!((got[0]["id"].clone(), got[0]["error"]["data"]["cause"].clone()), (json!(2), json!("guardrail")));
    assert!(got[0]["error"]["message"].as_str().unwrap().contains("output of tool 'echo': leak"), "{got:?}");
    assert_eq!(
        (got[1]["method"].clone(), got[2]["id"].clone(), got[3]["method"].clone()),
        (json!("notifications/message"), json!(3), json!("notifications/message"))
    );
    assert_eq!(got[2]["result"]["content"][0]["text"], "second");
    let Some(pending) = stream.stream_gate() else { panic!("the third result is checked") };
    // The service down: the server's check fails closed; the log queued behind it follows.
    let failed = pending.failed(&mut env, "no answer in time".into());
    let got = messages(&stream.on_stream_gate(&gw, &mut env, failed));
    assert_eq!((got.len(), got[0]["id"].clone()), (2, json!(4)));
    assert!(got[0]["error"]["message"].as_str().unwrap().contains("failOpen is false"), "{got:?}");
    assert!(stream.stream_gate().is_none());
    // Allowed: the masked result.
    let out = stream.on_chunk(&gw, &mut env, result_event(&sent[2], "ok ann@example.com").as_bytes(), false);
    assert!(out.is_empty());
    let Some(_) = stream.stream_gate() else { panic!() };
    let got = messages(&stream.on_stream_gate(&gw, &mut env, verdict(r#"{"allow": true}"#)));
    assert_eq!(
        (got[0]["id"].clone(), got[0]["result"]["content"][0]["text"].clone()),
        (json!(4), json!("ok [REDACTED:email]"))
    );
    // An error answer is not shown to the service.
    let error = json!({"jsonrpc": "2.0", "id": sent[0], "error": {"code": -32000, "message": "boom"}});
    let got = messages(&stream.on_chunk(&gw, &mut env, format!("event: message\ndata: {error}\n\n").as_bytes(), false));
    assert_eq!((got[0]["id"].clone(), got[0]["error"]["message"].clone()), (json!(2), json!("boom")));
    assert!(stream.stream_gate().is_none());
}

/// A Streamable HTTP client's call to an SSE backend (no session), bridged.
fn bridged(gw: &Gateway, env: &mut MemoryEnv) -> Box<Bridge> {
    let mut h = post("/mcp-servers/up");
    h.headers.push("accept", "application/json, text/event-stream");
    match route(gw, &h, env) {
        Some(Start::Bridge(b)) => b,
        other => panic!("not bridged: {other:?}"),
    }
}

/// Plays an SSE backend's stream for a bridged call of id 2 up to its answer (`result`): the bridge's
/// last step.
fn answered(gw: &Gateway, env: &mut MemoryEnv, b: &mut Bridge, result: Value) -> BridgeStep {
    let steps = b.on_chunk(gw, env, b"event: endpoint\ndata: /m?s=1\n\n", false);
    assert!(matches!(steps[..], [BridgeStep::Post(Post::Initialize, ..)]), "{steps:?}");
    let init = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"mcp-gateway-init\",\"result\":{}}\n\n";
    assert!(matches!(b.on_chunk(gw, env, init.as_bytes(), false)[..], [BridgeStep::Post(Post::Initialized, ..)]));
    assert!(matches!(b.on_posted(Post::Initialized, 202)[..], [BridgeStep::Post(Post::Message, ..)]));
    let answer = json!({"jsonrpc": "2.0", "id": 2, "result": result});
    let mut steps = b.on_chunk(gw, env, format!("event: message\ndata: {answer}\n\n").as_bytes(), false);
    assert_eq!(steps.len(), 1, "{steps:?}");
    steps.remove(0)
}

#[test]
fn a_bridged_call_waits_for_redis_counters_before_the_backends_stream_opens() {
    let gw = gateway("sse", LIMITS);
    let mut env = env();
    let mut b = bridged(&gw, &mut env);
    let Begin::Wait(pending @ Pending::Limit(_)) = b.on_body(&gw, &mut env, &call(2, "echo", ""), 0) else { panic!() };
    let args = crate::resp::decode_command(pending.command().unwrap()).unwrap();
    assert_eq!(args[0].as_slice(), b"EVAL");
    let outcome = done(redis(&gw, &mut env, pending, b"*2\r\n:0\r\n:0\r\n"));
    assert!(matches!(b.on_gate(outcome, 0), Begin::Stream(_)), "room: the stream opens");
    // No room: the REST tools' refusal, and no stream; at the stateless revision, HTTP 429.
    let meta = r#","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}"#;
    for (meta, status) in [("", 200), (meta, 429)] {
        let mut b = bridged(&gw, &mut env);
        let Begin::Wait(pending) = b.on_body(&gw, &mut env, &call(5, "echo", meta), 0) else { panic!() };
        let Begin::Respond(r) = b.on_gate(done(redis(&gw, &mut env, pending, b"*2\r\n:1\r\n:1500\r\n")), 0) else {
            panic!()
        };
        let v = body(&r);
        assert_eq!(
            (r.status, v["id"].clone(), v["error"]["data"]["cause"].clone()),
            (status, json!(5), json!("rate_limited"))
        );
        assert!(status == 200 || r.headers.iter().any(|(k, v)| k == "retry-after" && v == "2"), "{r:?}");
    }
    // Redis down: quotas[0] denies (503 at the stateless revision, the call's error here)...
    let mut b = bridged(&gw, &mut env);
    let Begin::Wait(pending) = b.on_body(&gw, &mut env, &call(6, "echo", ""), 0) else { panic!() };
    let Begin::Respond(r) = b.on_gate(pending.failed(&mut env, "down".into()), 0) else { panic!() };
    assert_eq!(body(&r)["error"]["data"]["cause"], "store_unavailable");
    // ... a limit that allows lets it go on.
    let open = gateway("sse", "  rateLimits: [{requests: 1, window: 1m, scope: cluster}]\n");
    let mut b = bridged(&open, &mut env);
    let Begin::Wait(pending) = b.on_body(&open, &mut env, &call(6, "echo", ""), 0) else { panic!() };
    assert!(matches!(b.on_gate(pending.failed(&mut env, "down".into()), 0), Begin::Stream(_)));
}

#[test]
fn a_bridged_call_is_checked_by_the_guard_service_before_its_stream_and_before_its_answer() {
    let gw = gateway("sse", &format!("{LIMITS}{GUARD}"));
    let mut env = env();
    let result = json!({"content": [{"type": "text", "text": "mail ann@example.com"}]});
    // Counted first, then the input check; refused there: no stream.
    let mut b = bridged(&gw, &mut env);
    let Begin::Wait(pending @ Pending::Limit(_)) = b.on_body(&gw, &mut env, &call(2, "echo", ""), 0) else { panic!() };
    let Begin::Wait(Pending::Call(input)) = b.on_gate(done(redis(&gw, &mut env, pending, b"*2\r\n:0\r\n:0\r\n")), 0)
    else {
        panic!()
    };
    let sent: Value = serde_json::from_slice(input.body.as_deref().unwrap()).unwrap();
    assert_eq!((&sent["phase"], &sent["arguments"]), (&json!("input"), &json!({"q": "hi"})));
    let Begin::Respond(r) = b.on_gate(verdict(r#"{"allow": false, "reason": "PII"}"#), 0) else { panic!() };
    assert!(body(&r)["error"]["message"].as_str().unwrap().contains("input of tool 'echo': PII"));
    // Allowed: the stream opens; the answer is held for the output check, with the arguments.
    for (says, refused) in
        [(Some(r#"{"allow": true}"#), false), (Some(r#"{"allow": false, "reason": "leak"}"#), true), (None, true)]
    {
        let mut b = bridged(&gw, &mut env);
        let Begin::Wait(pending) = b.on_body(&gw, &mut env, &call(2, "echo", ""), 0) else { panic!() };
        let counted = done(redis(&gw, &mut env, pending, b"*2\r\n:0\r\n:0\r\n"));
        let Begin::Wait(Pending::Call(_)) = b.on_gate(counted, 0) else { panic!("the input check") };
        assert!(matches!(b.on_gate(verdict(r#"{"allow": true}"#), 0), Begin::Stream(_)));
        let BridgeStep::Wait(Pending::Call(output)) = answered(&gw, &mut env, &mut b, result.clone()) else { panic!() };
        let sent: Value = serde_json::from_slice(output.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            (&sent["phase"], &sent["arguments"], &sent["result"]["content"][0]["text"]),
            (&json!("output"), &json!({"q": "hi"}), &json!("mail [REDACTED:email]"))
        );
        let done = match says {
            Some(says) => verdict(says),
            None => Done::Call(UpstreamResult::Failed("no answer".into())), // fails closed
        };
        let BridgeStep::Reply(r) = b.on_answer_gate(&gw, &mut env, done) else { panic!() };
        let v = body(&r);
        assert_eq!((r.status, v["id"].clone()), (200, json!(2)));
        match refused {
            true => assert_eq!(v["error"]["data"]["cause"], "guardrail", "{v}"),
            false => assert_eq!(v["result"]["content"][0]["text"], "mail [REDACTED:email]", "{v}"),
        }
    }
}
