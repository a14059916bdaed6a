use super::*;
use crate::proxy::route;
use crate::session::memory::MemoryEnv;
use serde_json::json;

use crate::proxy::tests::{env, redis_answer, sessions};
const NOW: u64 = 1_000_000;

fn gateway(store: &str, extra: &str) -> Gateway {
    let sessions = sessions(store);
    let cfg = format!(
        "{sessions}servers:\n- name: up\n  type: mcp-proxy\n  transport: sse\n  mcpServerURL: /sse\n  timeout: 5000\n{extra}"
    );
    Gateway::from_config_str(&cfg).unwrap()
}

fn head(method: &str, headers: &[(&str, &str)]) -> RequestHead {
    let mut all = vec![
        (":authority".to_string(), "gw.example".to_string()),
        ("authorization".to_string(), "Bearer client-secret".to_string()),
        ("accept".to_string(), "application/json, text/event-stream".to_string()),
        ("content-type".to_string(), "application/json".to_string()),
        ("content-length".to_string(), "99".to_string()),
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

fn bridge(gw: &Gateway, env: &mut MemoryEnv, h: &RequestHead) -> Box<Bridge> {
    match route(gw, h, env) {
        Some(Start::Bridge(b)) => b,
        other => panic!("not bridged: {other:?}"),
    }
}

fn respond(gw: &Gateway, env: &mut MemoryEnv, h: &RequestHead) -> HttpResponse {
    match route(gw, h, env) {
        Some(Start::Respond(r)) => r,
        other => panic!("not answered: {other:?}"),
    }
}

fn value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap()
}

/// A session of ours on `up`, keeping the client's `initialize` params, as the client's initialize opens it.
fn session(gw: &Gateway, env: &mut MemoryEnv) -> String {
    let h = head("POST", &[]);
    let mut b = bridge(gw, env, &h);
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {"sampling": {}}, "clientInfo": {"name": "c", "version": "1"}}});
    let body = init.to_string().into_bytes();
    assert!(matches!(b.on_body(gw, env, &body, NOW), Begin::Stream(_)));
    let steps = b.on_chunk(gw, env, b"event: endpoint\ndata: /messages/?session_id=s1\n\n", false);
    // The client's own initialize goes to the backend as it came.
    match steps.as_slice() {
        [Step::Post(Post::Message, head, posted)] => {
            assert_eq!(posted, &body);
            assert_eq!(value(head, ":path"), Some("/messages/?session_id=s1"));
        }
        other => panic!("{other:?}"),
    }
    let answer = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"protocolVersion\":\"2025-06-18\",\"serverInfo\":{\"name\":\"backend\"}}}\n\n";
    match b.on_chunk(gw, env, answer, false).pop() {
        Some(Step::Reply(r)) => {
            assert_eq!(r.status, 200);
            assert_eq!(json_of(&r.body)["result"]["serverInfo"]["name"], "backend");
            value(&r.headers, SESSION).unwrap().to_string()
        }
        other => panic!("{other:?}"),
    }
}

const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"steps","arguments":{"n":2},"_meta":{"progressToken":1}}}"#;

/// The backend's stream for one call: the endpoint, the answer to the gateway's initialize, a keep-alive,
/// a log and a progress notification, the call's answer (CRLF line ends, as some servers send).
const STREAM: &[u8] = b"event: endpoint\r\ndata: /messages/?session_id=s2\r\n\r\n\
event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"mcp-gateway-init\",\"result\":{\"protocolVersion\":\"2025-06-18\"}}\r\n\r\n\
: ping\r\n\r\n\
event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"step 1\"}}\r\n\r\n\
event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\r\n\r\n\
event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"2 steps done\"}]}}\r\n\r\n";

/// The gateway's POSTs to the backend, and the client's answer.
type Played = (Vec<(Post, Vec<u8>)>, HttpResponse);

/// Plays the backend: the stream's bytes after its endpoint event are sent only once the gateway has
/// POSTed initialize, and those after the answer to it once it has POSTed the client's message; each
/// POST is answered 202 at once. The host's chunks end at `cuts` (and wherever the backend pauses).
/// Returns the POSTs and the reply.
fn run(gw: &Gateway, env: &mut MemoryEnv, b: &mut Bridge, stream: &[u8], cuts: &[usize]) -> Played {
    let ends: Vec<usize> =
        stream.windows(4).enumerate().filter(|(_, w)| *w == b"\r\n\r\n").map(|(i, _)| i + 4).collect();
    let (mut fed, mut available) = (0, ends[0]);
    let mut posts = Vec::new();
    for &target in cuts.iter().chain([&stream.len()]) {
        while fed < target {
            let upto = target.min(available);
            assert!(upto > fed, "the backend waits for a POST that did not come; posts: {posts:?}");
            let mut pending = b.on_chunk(gw, env, &stream[fed..upto], false);
            fed = upto;
            while !pending.is_empty() {
                match pending.remove(0) {
                    Step::Post(post, head, body) => {
                        assert_eq!(value(&head, ":method"), Some("POST"));
                        assert_eq!(value(&head, "authorization"), None);
                        assert_eq!(value(&head, "content-length"), Some(body.len().to_string().as_str()));
                        available = match post {
                            Post::Initialize => ends[1],
                            Post::Message => stream.len(),
                            _ => available,
                        };
                        posts.push((post, body));
                        pending.extend(b.on_posted(post, 202));
                    }
                    Step::Reply(r) => return (posts, r),
                    Step::Redis(p) => panic!("{p:?}"),
                    Step::Wait(p) => panic!("{p:?}"),
                }
            }
        }
    }
    panic!("no reply; posts: {posts:?}");
}

#[test]
fn a_call_initialises_its_own_backend_stream_and_gets_the_notifications_with_its_answer() {
    let gw = gateway("local", "");
    let mut env = env();
    let sid = session(&gw, &mut env);
    let h = head("POST", &[("mcp-session-id", &sid)]);
    let mut whole: Option<Played> = None;
    // Split anywhere (two cuts), and byte by byte: the same POSTs and the same answer.
    let cuts: Vec<(usize, usize)> =
        (0..=STREAM.len()).step_by(7).flat_map(|a| (a..=STREAM.len()).step_by(11).map(move |b| (a, b))).collect();
    for (a, b) in cuts.into_iter().chain([(0, 0)]) {
        let mut br = bridge(&gw, &mut env, &h);
        let Begin::Stream(edits) = br.on_body(&gw, &mut env, CALL.as_bytes(), NOW) else { panic!() };
        let mut sent = h.headers.to_vec();
        crate::header_edits::apply(&mut sent, &edits);
        assert_eq!(value(&sent, ":method"), Some("GET"));
        assert_eq!(value(&sent, ":path"), Some("/sse"));
        assert_eq!(value(&sent, "accept"), Some("text/event-stream"));
        for gone in ["content-length", "content-type", "authorization", "mcp-session-id"] {
            assert_eq!(value(&sent, gone), None, "{gone}");
        }
        assert_eq!(value(&sent, "x-envoy-upstream-rq-timeout-ms"), Some("7000"));
        let stream_head = [("content-type".to_string(), "text/event-stream; charset=utf-8".to_string())];
        assert!(br.on_head(200, &stream_head).is_none());
        let got = if (a, b) == (0, 0) {
            run(&gw, &mut env, &mut br, STREAM, &(1..STREAM.len()).collect::<Vec<_>>())
        } else {
            run(&gw, &mut env, &mut br, STREAM, &[a, b])
        };
        assert!(br.done());
        match &whole {
            None => whole = Some(got),
            Some((posts, r)) => {
                assert_eq!(&got.0, posts, "cut at {a}, {b}");
                assert_eq!((got.1.status, &got.1.body), (r.status, &r.body), "cut at {a}, {b}");
            }
        }
    }
    let (posts, r) = whole.unwrap();
    let kinds: Vec<Post> = posts.iter().map(|(p, _)| *p).collect();
    assert_eq!(kinds, [Post::Initialize, Post::Initialized, Post::Message]);
    // The gateway's initialize carries the client's own params, kept with the session.
    let init = json_of(&posts[0].1);
    assert_eq!((init["id"].as_str(), init["params"]["clientInfo"]["name"].as_str()), (Some(INIT_ID), Some("c")));
    assert_eq!(init["params"]["capabilities"], json!({"sampling": {}}));
    assert_eq!(json_of(&posts[1].1)["method"], "notifications/initialized");
    assert_eq!(posts[2].1, CALL.as_bytes());
    assert_eq!(value(&r.headers, "content-type"), Some("text/event-stream"));
    let text = String::from_utf8(r.body).unwrap();
    let data: Vec<Value> =
        text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect();
    let methods: Vec<&str> = data.iter().map(|m| m["method"].as_str().unwrap_or("answer")).collect();
    assert_eq!(methods, ["notifications/message", "notifications/progress", "answer"]);
    assert_eq!(data[2]["id"], 7);
}

#[test]
fn an_answer_without_notifications_or_for_a_json_only_client_is_json() {
    let gw = gateway("local", "");
    let mut env = env();
    let sid = session(&gw, &mut env);
    let h = head("POST", &[("mcp-session-id", &sid)]);
    let mut only_json = h.clone();
    only_json.headers.retain(|(k, _)| *k != "accept");
    only_json.headers.push("accept", "application/json");
    for h in [h, only_json] {
        let mut br = bridge(&gw, &mut env, &h);
        assert!(matches!(br.on_body(&gw, &mut env, CALL.as_bytes(), NOW), Begin::Stream(_)));
        let (_, r) = run(&gw, &mut env, &mut br, STREAM, &[]);
        assert_eq!(
            value(&r.headers, "content-type"),
            Some(if h.header("accept") == Some("application/json") { "application/json" } else { "text/event-stream" })
        );
    }
}

#[test]
fn the_initialize_answer_opens_a_session_that_keeps_the_clients_params() {
    for store in ["local", "signed"] {
        let gw = gateway(store, "");
        let mut env = env();
        let sid = session(&gw, &mut env);
        let open = SessionOp::Open { id: sid.clone(), server: "up".into() };
        let found = match gw.sessions.start(open, &mut env) {
            crate::session::Started::Done(SessionOutcome::Found(s)) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(found.version, "2025-06-18"); // the backend's choice (the client asked for 2025-11-25)
                                                 // Local keeps the params; a signed id cannot carry them: the gateway's initialize then declares the
                                                 // session's revision and no capabilities.
        let h = head("POST", &[("mcp-session-id", &sid)]);
        let mut br = bridge(&gw, &mut env, &h);
        assert!(matches!(br.on_body(&gw, &mut env, CALL.as_bytes(), NOW), Begin::Stream(_)));
        let (posts, _) = run(&gw, &mut env, &mut br, STREAM, &[]);
        let init = json_of(&posts[0].1);
        match store {
            "local" => assert_eq!(init["params"]["clientInfo"]["name"], "c"),
            _ => assert_eq!(
                (init["params"]["protocolVersion"].as_str(), &init["params"]["capabilities"]),
                (Some("2025-06-18"), &json!({}))
            ),
        }
    }
}

#[test]
fn notifications_get_202_get_405_delete_ends_ours_and_unknown_sessions_404() {
    let gw = gateway("local", "");
    let mut env = env();
    let sid = session(&gw, &mut env);
    let h = head("POST", &[("mcp-session-id", &sid)]);
    let mut br = bridge(&gw, &mut env, &h);
    let note = br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;
    match br.on_body(&gw, &mut env, note, NOW) {
        Begin::Respond(r) => assert_eq!((r.status, r.body.len()), (202, 0)),
        other => panic!("{other:?}"),
    }
    let mut br = bridge(&gw, &mut env, &h);
    match br.on_body(&gw, &mut env, b"[1,2]", NOW) {
        Begin::Respond(r) => assert_eq!(r.status, 400),
        other => panic!("{other:?}"),
    }
    let mut br = bridge(&gw, &mut env, &h);
    match br.on_body(&gw, &mut env, b"{nope", NOW) {
        Begin::Respond(r) => assert_eq!(json_of(&r.body)["error"]["code"], jsonrpc::PARSE_ERROR),
        other => panic!("{other:?}"),
    }
    let r = respond(&gw, &mut env, &head("GET", &[("mcp-session-id", &sid)]));
    assert_eq!((r.status, value(&r.headers, "allow")), (405, Some("POST, DELETE")));
    assert_eq!(respond(&gw, &mut env, &head("DELETE", &[("mcp-session-id", &sid)])).status, 204);
    let r = respond(&gw, &mut env, &h);
    assert_eq!((r.status, json_of(&r.body)["error"]["code"].as_i64()), (404, Some(-32001)));
    let r = respond(&gw, &mut env, &head("POST", &[("mcp-session-id", "forged")]));
    assert_eq!(r.status, 404);
}

#[test]
fn allow_tools_refuse_calls_before_the_backend_and_filter_and_rename_lists() {
    let extra = "  allowTools: [say, steps]\n  toolOverrides: {echo: {name: say}}\n";
    let gw = gateway("local", extra);
    let mut env = env();
    let sid = session(&gw, &mut env);
    let h = head("POST", &[("mcp-session-id", &sid)]);
    let mut br = bridge(&gw, &mut env, &h);
    let secret = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"secret"}}"#;
    match br.on_body(&gw, &mut env, secret, NOW) {
        Begin::Respond(r) => {
            assert_eq!(json_of(&r.body)["error"], json!({"code": -32602, "message": "Tool not allowed: secret"}))
        }
        other => panic!("{other:?}"),
    }
    // A renamed tool's call reaches the backend under its own name.
    let mut br = bridge(&gw, &mut env, &h);
    let say = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"say","arguments":{"text":"x"}}}"#;
    assert!(matches!(br.on_body(&gw, &mut env, say, NOW), Begin::Stream(_)));
    let (posts, _) = run(&gw, &mut env, &mut br, STREAM, &[]);
    assert_eq!(json_of(&posts[2].1)["params"]["name"], "echo");
    // tools/list: filtered and renamed.
    let mut br = bridge(&gw, &mut env, &h);
    let list = br#"{"jsonrpc":"2.0","id":7,"method":"tools/list"}"#;
    assert!(matches!(br.on_body(&gw, &mut env, list, NOW), Begin::Stream(_)));
    let stream = String::from_utf8_lossy(STREAM).replace(
        r#"{"content":[{"type":"text","text":"2 steps done"}]}"#,
        r#"{"tools":[{"name":"echo","inputSchema":{}},{"name":"secret","inputSchema":{}},{"name":"steps","inputSchema":{}}]}"#,
    );
    let (_, r) = run(&gw, &mut env, &mut br, stream.as_bytes(), &[]);
    let text = String::from_utf8(r.body).unwrap();
    let answer: Value =
        serde_json::from_str(text.lines().filter_map(|l| l.strip_prefix("data: ")).next_back().unwrap()).unwrap();
    let names: Vec<&str> =
        answer["result"]["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["say", "steps"]);
}

#[test]
fn failures_become_json_rpc_errors_for_the_clients_request() {
    let gw = gateway("local", "");
    let mut env = env();
    let sid = session(&gw, &mut env);
    let h = head("POST", &[("mcp-session-id", &sid)]);
    let started = |env: &mut MemoryEnv| {
        let mut br = bridge(&gw, env, &h);
        assert!(matches!(br.on_body(&gw, env, CALL.as_bytes(), NOW), Begin::Stream(_)));
        br
    };
    let error = |r: &HttpResponse| json_of(&r.body)["error"].clone();
    // The backend is down (Envoy's 503), or answers the GET with something else than a stream.
    let r = started(&mut env).on_head(503, &[]).unwrap();
    assert_eq!(r.status, 502);
    assert!(error(&r)["message"].as_str().unwrap().contains("could not be reached (HTTP 503)"), "{r:?}");
    assert_eq!(json_of(&r.body)["id"], 7);
    let r = started(&mut env).on_head(404, &[]).unwrap();
    assert_eq!((r.status, error(&r)["code"].as_i64()), (502, Some(jsonrpc::INTERNAL_ERROR)));
    // No endpoint, or no answer, within the timeout; nothing before it.
    let mut br = started(&mut env);
    assert!(br.on_head(200, &[("content-type".into(), "text/event-stream".into())]).is_none());
    assert!(br.expired(NOW + 4_999).is_none());
    let r = br.expired(NOW + 5_000).unwrap();
    assert_eq!(r.status, 504);
    assert!(error(&r)["message"].as_str().unwrap().contains("did not answer within its timeout"));
    assert!(br.expired(NOW + 9_000).is_none() && br.done());
    // The stream ends before the answer.
    let mut br = started(&mut env);
    match br.on_chunk(&gw, &mut env, b"event: endpoint\ndata: /m\n\n", true).pop() {
        Some(Step::Reply(r)) => assert!(error(&r)["message"].as_str().unwrap().contains("ended its SSE stream")),
        other => panic!("{other:?}"),
    }
    // A POST fails.
    let mut br = started(&mut env);
    assert!(matches!(br.on_chunk(&gw, &mut env, b"event: endpoint\ndata: m\n\n", false)[..], [Step::Post(..)]));
    match br.on_posted(Post::Initialize, 0).pop() {
        Some(Step::Reply(r)) => assert_eq!(r.status, 502),
        other => panic!("{other:?}"),
    }
    assert!(br.on_posted(Post::Initialized, 202).is_empty());
    // The backend asks the client something: an error for the client's request; a ping is answered.
    let mut br = started(&mut env);
    let upto_init = STREAM.windows(9).position(|w| w == b": ping\r\n\r").unwrap();
    for step in br.on_chunk(&gw, &mut env, &STREAM[..upto_init], false) {
        if let Step::Post(post, ..) = step {
            assert!(br.on_posted(post, 202).iter().all(|s| matches!(s, Step::Post(..) | Step::Reply(_))));
        }
    }
    let ping = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\"}\n\n";
    match &br.on_chunk(&gw, &mut env, ping, false)[..] {
        [Step::Post(Post::Pong, _, body)] => {
            assert_eq!(json_of(body), json!({"jsonrpc": "2.0", "id": 9, "result": {}}))
        }
        other => panic!("{other:?}"),
    }
    let ask =
        b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"elicitation/create\",\"params\":{}}\n\n";
    match br.on_chunk(&gw, &mut env, ask, false).pop() {
        Some(Step::Reply(r)) => {
            assert_eq!((r.status, json_of(&r.body)["id"].as_i64()), (200, Some(7)));
            assert!(error(&r)["message"].as_str().unwrap().contains("elicitation/create"), "{r:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_message_endpoint_is_a_path_on_the_backend() {
    assert_eq!(endpoint_path("/messages/?session_id=1", "/sse").as_deref(), Some("/messages/?session_id=1"));
    assert_eq!(endpoint_path("http://h:1/m?s=2", "/sse").as_deref(), Some("/m?s=2"));
    assert_eq!(endpoint_path("m?s=3", "/api/sse?x=1").as_deref(), Some("/api/m?s=3"));
    assert_eq!(endpoint_path("/a\nb", "/sse"), None);
}

/// A gateway with `store: redis` serving an SSE backend.
fn redis_gateway() -> Gateway {
    let cfg = "sessions: {store: redis, redis: {cluster: r}}\nservers:\n- name: up\n  type: mcp-proxy\n  transport: sse\n  mcpServerURL: /sse\n  timeout: 5000\n";
    Gateway::from_config_str(cfg).unwrap()
}

#[test]
fn with_redis_the_initialize_answer_waits_for_the_session_and_later_requests_for_its_lookup() {
    let gw = redis_gateway();
    let mut env = env();
    let mut redis = std::collections::HashMap::new();
    let mut b = bridge(&gw, &mut env, &head("POST", &[]));
    let init = br#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"r","version":"1"}}}"#;
    assert!(matches!(b.on_body(&gw, &mut env, init, NOW), Begin::Stream(_)));
    assert!(matches!(b.on_chunk(&gw, &mut env, b"event: endpoint\ndata: /m\n\n", false)[..], [Step::Post(..)]));
    let answer = b"data: {\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{\"protocolVersion\":\"2025-06-18\"}}\n\n";
    let set = match b.on_chunk(&gw, &mut env, answer, false).pop() {
        Some(Step::Redis(p)) => p,
        other => panic!("{other:?}"),
    };
    let r = b.on_session(redis_answer(&gw, &mut redis, &set));
    assert_eq!(r.status, 200);
    let sid = value(&r.headers, SESSION).unwrap().to_string();
    assert_eq!(json_of(&r.body)["result"]["protocolVersion"], "2025-06-18");
    // A store failure is the client's 503, without a session.
    let mut b = bridge(&gw, &mut env, &head("POST", &[]));
    assert!(matches!(b.on_body(&gw, &mut env, init, NOW), Begin::Stream(_)));
    b.on_chunk(&gw, &mut env, b"event: endpoint\ndata: /m\n\n", false);
    assert!(matches!(b.on_chunk(&gw, &mut env, answer, false)[..], [Step::Redis(_)]));
    let r = b.on_session(SessionOutcome::Failed(crate::session::StoreError("down".into())));
    assert_eq!((r.status, value(&r.headers, SESSION)), (503, None));
    // The next request's session is looked up first, then bridged with the kept params.
    let h = head("POST", &[("mcp-session-id", &sid)]);
    let Some(Start::Redis(opening, get)) = route(&gw, &h, &mut env) else { panic!() };
    let outcome = redis_answer(&gw, &mut redis, &get);
    let Start::Bridge(mut b) = crate::proxy::resume(&gw, &mut env, *opening, outcome) else { panic!() };
    assert!(matches!(b.on_body(&gw, &mut env, CALL.as_bytes(), NOW), Begin::Stream(_)));
    let (posts, r) = run(&gw, &mut env, &mut b, STREAM, &[]);
    assert_eq!(json_of(&posts[0].1)["params"]["clientInfo"]["name"], "r");
    assert_eq!(r.status, 200);
}

/// A call of `tool` with `args` under `id`, its stream answering `result` (with a log before it when
/// `noted`): the gateway's POSTs and the client's reply.
fn guarded_call(
    gw: &Gateway,
    env: &mut MemoryEnv,
    h: &RequestHead,
    id: Value,
    tool: &str,
    result: &str,
    noted: bool,
) -> Played {
    let mut br = bridge(gw, env, h);
    let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": {}}});
    assert!(matches!(br.on_body(gw, env, body.to_string().as_bytes(), NOW), Begin::Stream(_)));
    let note = "event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{\"level\":\"info\",\"data\":\"ada@example.com\"}}\r\n\r\n";
    let stream = format!(
        "event: endpoint\r\ndata: /messages/?session_id=s3\r\n\r\n\
         event: message\r\ndata: {{\"jsonrpc\":\"2.0\",\"id\":\"mcp-gateway-init\",\"result\":{{}}}}\r\n\r\n\
         {}event: message\r\ndata: {{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{result}}}\r\n\r\n",
        if noted { note } else { "" }
    );
    run(gw, env, &mut br, stream.as_bytes(), &[])
}

#[test]
fn guardrails_refuse_arguments_before_the_backend_and_check_results_in_the_reply() {
    let extra = "  toolOverrides: {echo: {name: say}}\n  guardrails:\n    mask: [email]\n    denyPatterns: ['(?i)drop\\s+table']\n    tools: {say: {mask: []}, whoami: {maxResultBytes: 10}}\n";
    let gw = gateway("local", extra);
    let mut env = env();
    let sid = session(&gw, &mut env);
    let h = head("POST", &[("mcp-session-id", &sid)]);
    // A denied argument: the client's error at once, no backend stream (a tool with its own entry too).
    for tool in ["steps", "say"] {
        let mut br = bridge(&gw, &mut env, &h);
        let denied = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": tool, "arguments": {"text": "x; DROP  TABLE users"}}});
        match br.on_body(&gw, &mut env, denied.to_string().as_bytes(), NOW) {
            Begin::Respond(r) => {
                let v = json_of(&r.body);
                assert_eq!(
                    (r.status, &v["id"], &v["error"]["data"]["cause"]),
                    (200, &json!(3), &json!("guardrail")),
                    "{v}"
                );
                assert!(!v.to_string().contains("users"), "{v}");
            }
            other => panic!("{other:?}"),
        }
    }
    let text = |r: &HttpResponse| -> Value {
        let answer = match value(&r.headers, "content-type") {
            Some("application/json") => json_of(&r.body),
            _ => {
                let body = String::from_utf8(r.body.clone()).unwrap();
                serde_json::from_str(body.lines().filter_map(|l| l.strip_prefix("data: ")).next_back().unwrap())
                    .unwrap()
            }
        };
        answer
    };
    let mailed = r#"{"content":[{"type":"text","text":"write to ada@example.com"}]}"#;
    // The server's mask, in a JSON reply and in an SSE one (after a log, which passes as sent); the
    // client's id, whatever it is, is the one the backend got and answered (no id of the gateway's).
    for (id, noted) in [(json!(7), false), (json!("mcp-gateway-call:e30:say"), true)] {
        let (posts, r) = guarded_call(&gw, &mut env, &h, id.clone(), "steps", mailed, noted);
        assert_eq!(json_of(&posts[2].1)["id"], id);
        let sse = value(&r.headers, "content-type") == Some("text/event-stream");
        assert_eq!(sse, noted, "{r:?}");
        assert!(!sse || String::from_utf8_lossy(&r.body).contains("\"data\":\"ada@example.com\""), "{r:?}");
        let answer = text(&r);
        assert_eq!(answer["id"], id);
        assert_eq!(answer["result"]["content"][0]["text"], "write to [REDACTED:email]", "{answer}");
    }
    // A tool with its own entry: its guardrails (mask: [] keeps the address), called by the backend's name.
    let (posts, r) = guarded_call(&gw, &mut env, &h, json!(8), "say", mailed, true);
    assert_eq!(
        (json_of(&posts[2].1)["params"]["name"].as_str(), &json_of(&posts[2].1)["id"]),
        (Some("echo"), &json!(8))
    );
    assert_eq!(text(&r)["result"]["content"][0]["text"], "write to ada@example.com");
    let (_, r) = guarded_call(&gw, &mut env, &h, json!(9), "whoami", mailed, false);
    let answer = text(&r);
    assert_eq!((&answer["id"], &answer["error"]["data"]["cause"]), (&json!(9), &json!("guardrail")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("maxResultBytes"), "{answer}");
}
