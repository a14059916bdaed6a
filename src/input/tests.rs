use super::*;
use crate::driver::test_host::TestHost;
use crate::gateway::Gateway;
use crate::jsonrpc::Message;
use crate::mcp::{self, Handled, Pending};
use crate::transport::RequestHead;
use crate::upstream::UpstreamResult;
use serde_json::json;

const CONFIG: &str = r#"
servers:
- name: s
  upstream: {cluster: api}
  tools:
  - name: delete_user
    description: Deletes a user, once the client confirms
    args: [{name: id, type: string, required: true}]
    inputRequests:
      confirm:
        method: elicitation/create
        params:
          message: "Delete user {{ args.id }}?"
          requestedSchema: {type: object, properties: {sure: {type: boolean}}, required: [sure]}
    requestTemplate:
      method: DELETE
      url: "/users/{{ args.id }}"
      headers: [{key: x-confirmed, value: "{{ input.confirm.content.sure | tojson }}"}]
  - name: weather
    description: Weather of a city, asked for when missing
    args: [{name: city, type: string, required: true, position: query}]
    inputRequests:
      ask_city:
        method: elicitation/create
        ifMissing: [city]
        params: {message: Which city?, requestedSchema: {type: object, properties: {city: {type: string}}, required: [city]}}
    requestTemplate: {url: /weather}
    responseTemplate: {body: "{{ body }} in {{ args.city }}"}
  - name: survey
    description: Two rounds, a sampling and an optional roots request
    inputRequests:
      step1: {method: elicitation/create, params: {message: Name?, requestedSchema: {type: object, properties: {name: {type: string}}, required: [name]}}}
      step2:
        round: 2
        method: elicitation/create
        params: {message: "Hi {{ input.step1.content.name }}, your color?", requestedSchema: {type: object, properties: {color: {type: string}}, required: [color]}}
      haiku: {round: 2, method: sampling/createMessage, params: {messages: [{role: user, content: {type: text, text: Write a haiku}}], maxTokens: 50}}
      where: {round: 2, method: roots/list, optional: true}
    responseTemplate:
      body: "{{ input.step1.content.name }} likes {{ input.step2.content.color }}; {{ input.haiku.content.text }}; roots: {{ input.where.roots | length if input.where else 'none' }}"
  prompts:
  - name: with_context
    inputRequests:
      user_context: {method: elicitation/create, params: {message: Which context?, requestedSchema: {type: object, properties: {context: {type: string}}, required: [context]}}}
    messages: [{role: user, text: "Context: {{ input.user_context.content.context }}"}]
  resourceTemplates:
  - uriTemplate: "vault://{name}"
    name: vault
    inputRequests:
      unlock: {method: elicitation/create, params: {message: "Open {{ args.name }}?", requestedSchema: {type: object, properties: {pin: {type: string}}, required: [pin]}}}
    text: "{{ args.name }} opened with {{ input.unlock.content.pin }}"
  - uriTemplate: "remote://{name}"
    name: remote
    inputRequests:
      ok: {method: elicitation/create, params: {message: Fetch?, requestedSchema: {type: object, properties: {sure: {type: boolean}}}}}
    requestTemplate:
      url: "/files/{{ args.name }}"
      headers: [{key: x-sure, value: "{{ input.ok.content.sure | tojson }}"}]
    responseTemplate: {body: "{{ body }} (sure: {{ input.ok.content.sure | tojson }})"}
"#;

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_000_000;

fn gw() -> Gateway {
    Gateway::from_config_str(CONFIG).unwrap()
}

fn caps_all() -> Value {
    json!({"sampling": {}, "elicitation": {}, "roots": {"listChanged": true}})
}

/// A stateless request's params with these client capabilities.
fn params(mut p: Value, caps: Value) -> Value {
    p["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": caps,
    });
    p
}

fn handle_at(g: &Gateway, ctx: &Ctx, method: &str, p: Value, revision: Revision) -> Handled {
    let msg = Message::Request { id: json!(7), method: method.into(), params: Some(p) };
    mcp::handle_allowed(
        g,
        &g.servers[0],
        msg,
        revision,
        &crate::gateway::Access { caller: &crate::caller::Caller::anonymous(), header: None },
        &crate::credential::Presented::NONE,
        ctx,
    )
}

fn reply(h: Handled) -> Value {
    match h {
        Handled::Reply(v) => v,
        Handled::Result { id, result } => crate::jsonrpc::result(id, result),
        Handled::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn call(g: &Gateway, ctx: &Ctx, p: Value) -> Handled {
    handle_at(g, ctx, "tools/call", params(p, caps_all()), Revision::V2026_07_28)
}

fn accept(content: Value) -> Value {
    json!({"action": "accept", "content": content})
}

#[test]
fn asks_then_runs_with_the_answer_in_the_upstream_request() {
    let g = gw();
    let ctx = Ctx::with_keys(NOW, &[KEY]);
    let r = reply(call(&g, &ctx, json!({"name": "delete_user", "arguments": {"id": "42"}})));
    let result = &r["result"];
    assert_eq!(result["resultType"], json!("input_required"));
    let keys: Vec<&str> = result.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["resultType", "inputRequests", "requestState"]);
    let asked: Vec<&str> = result["inputRequests"]["confirm"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(asked, ["method", "params"]);
    assert_eq!(
        result["inputRequests"]["confirm"],
        json!({"method": "elicitation/create", "params": {
            "message": "Delete user 42?",
            "requestedSchema": {"type": "object", "properties": {"sure": {"type": "boolean"}}, "required": ["sure"]}
        }})
    );
    let state = result["requestState"].as_str().unwrap().to_string();
    let retry = json!({"name": "delete_user", "arguments": {"id": "42"},
        "inputResponses": {"confirm": accept(json!({"sure": true})), "unknown": 1}, "requestState": state});
    match call(&g, &ctx, retry) {
        Handled::Call { call: Pending::Tool(name, input), request, .. } => {
            assert_eq!(
                (name.as_str(), request.method.as_str(), request.path.as_str()),
                ("delete_user", "DELETE", "/users/42")
            );
            assert!(request.headers.contains(&("x-confirmed".into(), "true".into())), "{:?}", request.headers);
            assert_eq!(input.unwrap()["confirm"]["content"]["sure"], json!(true));
        }
        other => panic!("expected the upstream call, got {other:?}"),
    }
    // The confirmation of user 42 does not delete user 43.
    let replay = json!({"name": "delete_user", "arguments": {"id": "43"},
        "inputResponses": {"confirm": accept(json!({"sure": true}))}, "requestState": state});
    assert_eq!(reply(call(&g, &ctx, replay))["error"]["code"], json!(-32602));
    // Declined: the tool does not run, and says so.
    let declined = json!({"name": "delete_user", "arguments": {"id": "42"},
        "inputResponses": {"confirm": {"action": "decline"}}, "requestState": state});
    let r = reply(call(&g, &ctx, declined));
    assert_eq!(r["result"]["isError"], json!(true));
    assert!(r["result"]["content"][0]["text"].as_str().unwrap().contains("declined the input request `confirm`"));
}

#[test]
fn states_are_bound_to_key_call_server_and_time() {
    let g = gw();
    let ctx = Ctx::with_keys(NOW, &[KEY]);
    let args = json!({"id": "1"});
    let c = Call { server: "s", kind: "tools", name: "delete_user", arguments: &args };
    let mut answers = Map::new();
    answers.insert("a".into(), json!({"action": "accept", "content": {"x": 1}}));
    let state = ctx.sign(3, &answers, &c).unwrap();
    assert_eq!(ctx.verify(&state, &c), Some((3, answers.clone())));
    // The signed payload after the format byte, the key id and the tag: round, expiry, answers.
    let payload = URL_SAFE_NO_PAD.decode(&state).unwrap()[1 + 4 + 16..].to_vec();
    assert_eq!(
        String::from_utf8(payload).unwrap(),
        format!(r#"{{"r":3,"e":{},"a":{{"a":{{"action":"accept","content":{{"x":1}}}}}}}}"#, NOW + STATE_TTL_MS)
    );
    // Arguments in another key order are the same call.
    let mut reordered = Map::new();
    reordered.insert("id".into(), json!("1"));
    let same = Value::Object(reordered);
    assert!(ctx.verify(&state, &Call { arguments: &same, ..c }).is_some());
    assert_eq!(ctx.verify(&format!("{state}-TAMPERED"), &c), None);
    let mut flipped = URL_SAFE_NO_PAD.decode(&state).unwrap();
    let last = flipped.len() - 2;
    flipped[last] ^= 1;
    assert_eq!(ctx.verify(&URL_SAFE_NO_PAD.encode(&flipped), &c), None, "a payload byte changed");
    for other in [
        Call { server: "t", ..c },
        Call { kind: "prompts", ..c },
        Call { name: "weather", ..c },
        Call { arguments: &json!({"id": "2"}), ..c },
    ] {
        assert_eq!(ctx.verify(&state, &other), None);
    }
    let later = Ctx::with_keys(NOW + STATE_TTL_MS, &[KEY]);
    assert_eq!(later.verify(&state, &c), None, "expired");
    let other_key = Ctx::with_keys(NOW, &[b"another key, 32 bytes long......"]);
    assert_eq!(other_key.verify(&state, &c), None);
    let rotated = Ctx::with_keys(NOW, &[b"another key, 32 bytes long......", KEY]);
    assert!(rotated.verify(&state, &c).is_some(), "every key verifies, the first signs");
    assert_eq!(ctx.verify("", &c), None);
    assert_eq!(ctx.verify("!!", &c), None);
    assert_eq!(Ctx::default().sign(0, &answers, &c), None, "no key, no state");
    // Through a call: a tampered state is -32602.
    let r =
        reply(call(&g, &ctx, json!({"name": "delete_user", "arguments": {"id": "1"}, "requestState": "x-TAMPERED"})));
    assert_eq!(r["error"]["code"], json!(-32602));
    let r = reply(call(&g, &ctx, json!({"name": "delete_user", "arguments": {"id": "1"}, "requestState": 5})));
    assert_eq!(r["error"]["code"], json!(-32602));
}

#[test]
fn bad_or_missing_answers_are_refused_or_asked_again() {
    let g = gw();
    let ctx = Ctx::with_keys(NOW, &[KEY]);
    let ask = |responses: Value| {
        reply(call(&g, &ctx, json!({"name": "delete_user", "arguments": {"id": "1"}, "inputResponses": responses})))
    };
    // Answers for other keys: asked again.
    let r = ask(json!({"wrong": accept(json!({"sure": true}))}));
    assert_eq!(r["result"]["resultType"], json!("input_required"));
    assert!(r["result"]["inputRequests"]["confirm"].is_object());
    for (bad, why) in [
        (json!({"confirm": 12345}), "must be the result of elicitation/create"),
        (json!({"confirm": {"action": "maybe"}}), "`action` must be accept, decline or cancel"),
        (json!({"confirm": {"action": "accept"}}), "needs `content`"),
        (json!({"confirm": accept(json!({"sure": "yes"}))}), "does not match the requested schema"),
        (json!(null), "inputResponses must be an object"),
    ] {
        let r = ask(bad.clone());
        assert_eq!(r["error"]["code"], json!(-32602), "{bad}");
        assert!(r["error"]["message"].as_str().unwrap().contains(why), "{bad}: {r}");
    }
}

#[test]
fn a_missing_argument_is_asked_for_and_filled() {
    let g = gw();
    let ctx = Ctx::with_keys(NOW, &[KEY]);
    match call(&g, &ctx, json!({"name": "weather", "arguments": {"city": "Oslo"}})) {
        Handled::Call { request, .. } => assert_eq!(request.path, "/weather?city=Oslo"),
        other => panic!("given, not asked: {other:?}"),
    }
    let r = reply(call(&g, &ctx, json!({"name": "weather", "arguments": {}})));
    assert_eq!(r["result"]["inputRequests"]["ask_city"]["params"]["message"], json!("Which city?"));
    let retry = json!({"name": "weather", "arguments": {}, "requestState": r["result"]["requestState"],
        "inputResponses": {"ask_city": accept(json!({"city": "Bergen"}))}});
    match call(&g, &ctx, retry) {
        Handled::Call { request, args, .. } => {
            assert_eq!(request.path, "/weather?city=Bergen");
            assert_eq!(args["city"], json!("Bergen"), "the response template sees the filled argument");
        }
        other => panic!("expected the upstream call, got {other:?}"),
    }
}

#[test]
fn rounds_follow_each_other_with_a_new_state_each() {
    let g = gw();
    let ctx = Ctx::with_keys(NOW, &[KEY]);
    let r1 = reply(call(&g, &ctx, json!({"name": "survey"})));
    let keys: Vec<&String> = r1["result"]["inputRequests"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["step1"]);
    let s1 = r1["result"]["requestState"].clone();
    let r2 = reply(call(
        &g,
        &ctx,
        json!({"name": "survey", "requestState": s1, "inputResponses": {"step1": accept(json!({"name": "Ada"}))}}),
    ));
    let asked = &r2["result"]["inputRequests"];
    assert_eq!(asked["step2"]["params"]["message"], json!("Hi Ada, your color?"), "round 2 reads round 1");
    assert_eq!(asked["haiku"]["method"], json!("sampling/createMessage"));
    assert_eq!(asked["where"], json!({"method": "roots/list", "params": {}}));
    let s2 = r2["result"]["requestState"].clone();
    assert_ne!(s1, s2);
    let answers = json!({
        "step2": accept(json!({"color": "blue"})),
        "haiku": {"role": "assistant", "content": {"type": "text", "text": "old pond"}, "model": "m"},
        "where": {"roots": [{"uri": "file:///a"}]},
    });
    let r3 = reply(call(&g, &ctx, json!({"name": "survey", "requestState": s2, "inputResponses": answers})));
    assert_eq!(r3["result"]["resultType"], json!("complete"));
    assert_eq!(r3["result"]["content"][0]["text"], json!("Ada likes blue; old pond; roots: 1"));
    // The round-1 state again, with round-2 answers: round 1 is asked again, nothing skipped.
    let r = reply(call(&g, &ctx, json!({"name": "survey", "requestState": s1, "inputResponses": answers})));
    assert_eq!(r["result"]["inputRequests"].as_object().unwrap().keys().collect::<Vec<_>>(), ["step1"]);
}

#[test]
fn only_what_the_client_declares_is_asked() {
    let g = gw();
    let ctx = Ctx::with_keys(NOW, &[KEY]);
    // Round 2 without roots: the optional request is left out.
    let r1 = reply(call(&g, &ctx, json!({"name": "survey"})));
    let p = json!({"name": "survey", "requestState": r1["result"]["requestState"],
        "inputResponses": {"step1": accept(json!({"name": "Ada"}))}});
    let r2 = reply(handle_at(
        &g,
        &ctx,
        "tools/call",
        params(p.clone(), json!({"elicitation": {}, "sampling": {}})),
        Revision::V2026_07_28,
    ));
    let keys: Vec<&String> = r2["result"]["inputRequests"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["step2", "haiku"]);
    // Without sampling, the required haiku cannot be asked: -32021, naming the capability.
    let r = reply(handle_at(&g, &ctx, "tools/call", params(p, json!({"elicitation": {}})), Revision::V2026_07_28));
    assert_eq!(r["error"]["code"], json!(-32021));
    assert_eq!(r["error"]["data"]["requiredCapabilities"], json!({"sampling": {}}));
    assert_eq!(r["error"]["data"].to_string(), r#"{"requiredCapabilities":{"sampling":{}}}"#);
    // Sessions before 2025-11-25 cannot be asked at all: the tool says which revision it needs.
    let legacy = Revision::V2025_06_18;
    let r = reply(handle_at(&g, &ctx, "tools/call", json!({"name": "delete_user", "arguments": {"id": "1"}}), legacy));
    assert!(r["error"]["message"].as_str().unwrap().contains("needs protocol revision 2025-11-25 or later"), "{r}");
    // A 2025-11-25 session is asked (the transport turns the result into SSE requests, see `poll`).
    let r = reply(handle_at(
        &g,
        &ctx,
        "tools/call",
        json!({"name": "delete_user", "arguments": {"id": "1"}}),
        Revision::V2025_11_25,
    ));
    assert_eq!(r["result"]["resultType"], json!("input_required"));
    // A 2025-11-25 session whose initialize did not declare elicitation in form mode is not asked: -32600
    // naming the capability; an optional request it cannot answer is left out.
    for declared in [json!({}), json!({"elicitation": {"url": {}}, "sampling": {}})] {
        let session = Ctx { client: Some(ClientCaps::from_json(Some(&declared))), ..Ctx::with_keys(NOW, &[KEY]) };
        let call = json!({"name": "delete_user", "arguments": {"id": "1"}});
        let r = reply(handle_at(&g, &session, "tools/call", call, Revision::V2025_11_25));
        assert_eq!(r["error"]["code"], json!(-32600), "{declared}: {r}");
        assert_eq!(r["error"]["data"]["requiredCapabilities"], json!({"elicitation": {}}));
        assert!(r["error"]["message"].as_str().unwrap().contains("(form mode)"), "{r}");
    }
    let session = Ctx {
        client: Some(ClientCaps::from_json(Some(&json!({"elicitation": {}, "sampling": {}})))),
        ..Ctx::with_keys(NOW, &[KEY])
    };
    let r2 = reply(handle_at(&g, &session, "tools/call", p_without_meta(&r1), Revision::V2025_11_25));
    let keys: Vec<&String> = r2["result"]["inputRequests"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["step2", "haiku"], "roots is optional and not declared");
    // ... but a tool whose question does not apply runs as before.
    assert!(matches!(
        handle_at(&g, &ctx, "tools/call", json!({"name": "weather", "arguments": {"city": "Oslo"}}), legacy),
        Handled::Call { .. }
    ));
}

/// The round-2 retry of `survey` (its round-1 answer), as a session sends it: no `_meta`.
fn p_without_meta(r1: &Value) -> Value {
    json!({"name": "survey", "requestState": r1["result"]["requestState"],
        "inputResponses": {"step1": accept(json!({"name": "Ada"}))}})
}

#[test]
fn prompts_ask_too() {
    let g = gw();
    let ctx = Ctx::with_keys(NOW, &[KEY]);
    let get = |p: Value| reply(handle_at(&g, &ctx, "prompts/get", params(p, caps_all()), Revision::V2026_07_28));
    let r = get(json!({"name": "with_context"}));
    assert_eq!(r["result"]["inputRequests"]["user_context"]["method"], json!("elicitation/create"));
    let r = get(json!({"name": "with_context", "requestState": r["result"]["requestState"],
        "inputResponses": {"user_context": accept(json!({"context": "tests"}))}}));
    assert_eq!(r["result"]["messages"][0]["content"]["text"], json!("Context: tests"));
    assert_eq!(r["result"]["resultType"], json!("complete"));
    let r = get(json!({"name": "with_context", "inputResponses": {"user_context": {"action": "cancel"}}}));
    assert_eq!(r["error"]["code"], json!(-32602));
    // Lists never ask.
    let l = reply(handle_at(&g, &ctx, "prompts/list", params(json!({}), caps_all()), Revision::V2026_07_28));
    assert_eq!(l["result"]["resultType"], json!("complete"));
}

fn load_error(tool: &str) -> (String, String) {
    let text = format!("servers:\n- name: s\n  upstream: {{cluster: api}}\n  tools:\n  - {tool}\n");
    let e = Gateway::from_config_str(&text).unwrap_err();
    let shown = e.to_string();
    assert!(shown.contains("'s'") && shown.contains("'t'"), "names server and tool: {shown}");
    (e.field.clone(), shown)
}

#[test]
fn bad_requests_are_refused_at_load_naming_the_field() {
    let schema = "{type: object, properties: {x: {type: string}}}";
    for (tool, field, words) in [
        ("{name: t, inputRequests: {k: {method: tools/call}}, responseTemplate: {body: x}}", "inputRequests.k.method", "is not one of"),
        ("{name: t, inputRequests: {k: {method: elicitation/create, params: {requestedSchema: {type: object, properties: {}}}}}, responseTemplate: {body: x}}", "inputRequests.k.params.message", "needs a message"),
        ("{name: t, inputRequests: {k: {method: elicitation/create, params: {message: m, requestedSchema: {type: string}}}}, responseTemplate: {body: x}}", "inputRequests.k.params.requestedSchema", "object schema"),
        ("{name: t, inputRequests: {k: {method: elicitation/create, params: {message: m, requestedSchema: {type: object, properties: {x: {type: nope}}}}}}, responseTemplate: {body: x}}", "inputRequests.k.params.requestedSchema", "nope"),
        ("{name: t, inputRequests: {k: {method: sampling/createMessage, params: {messages: []}}}, responseTemplate: {body: x}}", "inputRequests.k.params.messages", "at least one message"),
        ("{name: t, inputRequests: {k: {method: roots/list, params: {x: 1}}}, responseTemplate: {body: x}}", "inputRequests.k.params", "takes no params"),
        (&format!("{{name: t, inputRequests: {{k: {{method: elicitation/create, ifMissing: [city], params: {{message: m, requestedSchema: {schema}}}}}}}, responseTemplate: {{body: x}}}}"), "inputRequests.k.ifMissing", "'city' is not an argument"),
        (&format!("{{name: t, args: [{{name: city}}], inputRequests: {{k: {{method: elicitation/create, ifMissing: [city], params: {{message: m, requestedSchema: {schema}}}}}}}, responseTemplate: {{body: x}}}}"), "inputRequests.k.params.requestedSchema", "no property 'city'"),
        (&format!("{{name: t, inputRequests: {{k: {{method: elicitation/create, params: {{message: '{{{{ args.nope }}}}', requestedSchema: {schema}}}}}}}, responseTemplate: {{body: x}}}}"), "inputRequests.k.params.message", "`args.nope`"),
        (&format!("{{name: t, inputRequests: {{k: {{method: elicitation/create, round: 0, params: {{message: m, requestedSchema: {schema}}}}}}}, responseTemplate: {{body: x}}}}"), "inputRequests.k.round", "from 1"),
        (&format!("{{name: t, inputRequests: {{'a b': {{method: elicitation/create, params: {{message: m, requestedSchema: {schema}}}}}}}, responseTemplate: {{body: x}}}}"), "inputRequests.a b", "keys use"),
        ("{name: t, inputRequests: {k: {method: roots/list, typo: 1}}, responseTemplate: {body: x}}", "inputRequests.k.typo", ""),
        ("{name: t, inputRequests: {}, responseTemplate: {body: x}}", "inputRequests", "names no request"),
        // Without input requests, a request template cannot read `input`: it would render empty.
        ("{name: t, requestTemplate: {url: '/x/{{ input.k }}'}}", "requestTemplate.url", "`input`"),
    ] {
        let (got, shown) = load_error(tool);
        assert_eq!(got, field, "{tool}: {shown}");
        assert!(shown.contains(words), "{tool}: {shown}");
    }
}

#[test]
fn the_envoy_key_is_created_once_and_shared_by_workers() {
    let g = gw();
    assert!(matches!(g.input_keys, Some(None)), "no signingKeys: the shared key");
    let mut h = TestHost::new();
    assert_eq!(h.env.kv.get(SHARED_KEY).0, b"".to_vec(), "prepared empty");
    let a = Ctx::new(None, &mut h);
    let b = Ctx::new(None, &mut h);
    let args = json!({});
    let c = Call { server: "s", kind: "tools", name: "survey", arguments: &args };
    let state = a.sign(0, &Map::new(), &c).unwrap();
    assert!(b.verify(&state, &c).is_some(), "another worker verifies");
    assert_eq!(h.env.kv.get(SHARED_KEY).0.len(), 32);
    // Without prepare (a host that never configured it), the unconditional write is read back.
    let mut fresh = TestHost::new();
    fresh.env.kv.map.remove(SHARED_KEY);
    assert_eq!(Ctx::new(None, &mut fresh).keys.len(), 1);
    // With signingKeys, the configured keys sign, and shared data is not touched.
    let signed = format!(
        "sessions: {{store: signed, signingKeys: ['{}']}}\n{}",
        URL_SAFE_NO_PAD.encode(KEY),
        CONFIG.trim_start()
    );
    let g2 = Gateway::from_config_str(&signed).unwrap();
    let keys = g2.input_keys.as_ref().unwrap().as_deref();
    assert!(keys.is_some());
    let mut h2 = TestHost::new();
    h2.env.kv.map.remove(SHARED_KEY);
    let ctx = Ctx::new(keys, &mut h2);
    assert!(h2.env.kv.get(SHARED_KEY).1.is_none());
    assert!(Ctx::with_keys(0, &[KEY]).verify(&ctx.sign(0, &Map::new(), &c).unwrap(), &c).is_some());
    // inputSigningKeys come first (replicas with Redis sessions share them).
    let own = format!(
        "inputSigningKeys: ['{}']\nsessions: {{store: signed, signingKeys: ['{}']}}\n{}",
        URL_SAFE_NO_PAD.encode(b"the input key, 32 bytes long...."),
        URL_SAFE_NO_PAD.encode(KEY),
        CONFIG.trim_start()
    );
    let g3 = Gateway::from_config_str(&own).unwrap();
    let ctx3 = Ctx::new(g3.input_keys.as_ref().unwrap().as_deref(), &mut h2);
    let state = ctx3.sign(0, &Map::new(), &c).unwrap();
    assert!(Ctx::with_keys(0, &[b"the input key, 32 bytes long...."]).verify(&state, &c).is_some());
    assert!(Ctx::with_keys(0, &[KEY]).verify(&state, &c).is_none());
    for (keys, why) in [("['%%%']", "is not base64"), ("['c2hvcnQ=']", "decodes to 5 bytes")] {
        let e = Gateway::from_config_str(&format!("inputSigningKeys: {keys}\n{}", CONFIG.trim_start())).unwrap_err();
        assert_eq!(e.field, "inputSigningKeys[0]");
        assert!(e.message.contains(why), "{}", e.message);
    }
    assert!(Gateway::from_config_str("servers: [{name: s, tools: [{name: t, responseTemplate: {body: x}}]}]")
        .unwrap()
        .input_keys
        .is_none());
}

#[test]
fn through_the_driver_the_round_trip_reaches_the_upstream() {
    let g = gw();
    let mut h = TestHost::new();
    let send = |h: &mut TestHost, p: Value| {
        let p = params(p, caps_all());
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": p}).to_string();
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("accept".to_string(), "application/json, text/event-stream".to_string()),
            ("mcp-protocol-version".to_string(), "2026-07-28".to_string()),
            ("mcp-method".to_string(), "tools/call".to_string()),
            ("mcp-name".to_string(), "delete_user".to_string()),
        ];
        let head = RequestHead {
            method: "POST".into(),
            path: "/mcp-servers/s".into(),
            headers: headers.into(),
            client_address: None,
            jwt: None,
        };
        let r = h.send(&g, head, &body, &|req| UpstreamResult::Response {
            status: 200,
            headers: vec![],
            body: format!("deleted, confirmed={:?}", req.headers).into_bytes(),
        });
        serde_json::from_slice::<Value>(&r.body).unwrap()
    };
    let r1 = send(&mut h, json!({"name": "delete_user", "arguments": {"id": "9"}}));
    assert!(h.dispatched.is_empty());
    let state = r1["result"]["requestState"].clone();
    h.env.now_ms += 1_000;
    let r2 = send(
        &mut h,
        json!({"name": "delete_user", "arguments": {"id": "9"}, "requestState": state,
            "inputResponses": {"confirm": accept(json!({"sure": true}))}}),
    );
    assert_eq!(r2["result"]["resultType"], json!("complete"), "{r2}");
    assert_eq!(h.dispatched.len(), 1);
    assert_eq!(h.dispatched[0].path, "/users/9");
    h.env.now_ms += STATE_TTL_MS;
    let late = send(
        &mut h,
        json!({"name": "delete_user", "arguments": {"id": "9"}, "requestState": state,
            "inputResponses": {"confirm": accept(json!({"sure": true}))}}),
    );
    assert_eq!(late["error"]["code"], json!(-32602), "expired");
}

#[test]
fn resources_ask_before_they_are_read() {
    let g = gw();
    let ctx = Ctx::with_keys(NOW, &[KEY]);
    let read = |p: Value| handle_at(&g, &ctx, "resources/read", params(p, caps_all()), Revision::V2026_07_28);
    let r1 = reply(read(json!({"uri": "vault://diary"})));
    assert_eq!(r1["result"]["inputRequests"]["unlock"]["params"]["message"], json!("Open diary?"));
    let answered = |uri: &str, state: &Value, content: Value| json!({"uri": uri, "requestState": state, "inputResponses": {"unlock": accept(content)}});
    let state = &r1["result"]["requestState"];
    let r2 = reply(read(answered("vault://diary", state, json!({"pin": "1234"}))));
    assert_eq!(r2["result"]["contents"][0]["text"], json!("diary opened with 1234"), "{r2}");
    // The state is bound to the URI read: another one is refused.
    let r = reply(read(answered("vault://other", state, json!({"pin": "1234"}))));
    assert_eq!(r["error"]["code"], json!(-32602));
    // A decline ends the read with -32602.
    let declined = json!({"uri": "vault://diary", "requestState": state,
        "inputResponses": {"unlock": {"action": "decline"}}});
    let r = reply(read(declined));
    assert_eq!(r["error"]["code"], json!(-32602));
    assert!(r["error"]["message"].as_str().unwrap().contains("declined the input request `unlock`"), "{r}");
    // A fetched resource: the answer reaches the upstream request and the response template.
    let r1 = reply(read(json!({"uri": "remote://a.txt"})));
    let p = json!({"uri": "remote://a.txt", "requestState": r1["result"]["requestState"],
        "inputResponses": {"ok": accept(json!({"sure": true}))}});
    let Handled::Call { call, request, args, id } = read(p) else { panic!("expected an upstream read") };
    assert_eq!(request.path, "/files/a.txt");
    assert!(request.headers.contains(&("x-sure".into(), "true".into())), "{:?}", request.headers);
    let answer = UpstreamResult::Response { status: 200, headers: vec![], body: b"contents".to_vec() };
    let done = mcp::finish_call(&g, &g.servers[0], id, &call, &args, answer, Revision::V2026_07_28).into_value();
    assert_eq!(done["result"]["contents"][0]["text"], json!("contents (sure: true)"), "{done}");
    // Older sessions cannot be asked: the read is refused naming the revision.
    let r = reply(handle_at(&g, &ctx, "resources/read", json!({"uri": "vault://x"}), Revision::V2025_06_18));
    assert!(r["error"]["message"].as_str().unwrap().contains("resource vault://x asks the client"), "{r}");
}

/// Splits an SSE body into its events' (id, data) pairs.
fn events(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let field = |name: &str| {
                e.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim_start().to_string()).unwrap_or_default()
            };
            (field("id:"), field("data:"))
        })
        .collect()
}

/// A request of a 2025-11-25 client that takes SSE answers, to server `s`.
fn head(method: &str, extra: &[(&str, &str)]) -> RequestHead {
    let mut headers = vec![
        ("content-type".to_string(), "application/json".to_string()),
        ("accept".to_string(), "application/json, text/event-stream".to_string()),
    ];
    headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    RequestHead {
        method: crate::transport::method(method),
        path: "/mcp-servers/s".into(),
        headers: headers.into(),
        client_address: None,
        jwt: None,
    }
}

#[test]
fn a_2025_11_25_session_is_asked_over_sse_and_polls_for_the_result() {
    let g = gw();
    let mut h = TestHost::new();
    let upstream = |req: &crate::upstream::UpstreamRequest| UpstreamResult::Response {
        status: 200,
        headers: vec![],
        body: format!("{} {}", req.method, req.path).into_bytes(),
    };
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{}}}}"#;
    let r = h.send(&g, head("POST", &[]), init, &upstream);
    let sid = r.headers.iter().find(|(k, _)| k == "mcp-session-id").unwrap().1.clone();
    let call =
        r#"{"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"delete_user","arguments":{"id":"5"}}}"#;
    let r = h.send(&g, head("POST", &[("mcp-session-id", &sid)]), call, &upstream);
    assert!(r.headers.contains(&("content-type".into(), "text/event-stream".into())));
    let ev = events(&r.body);
    assert_eq!(ev.len(), 2, "priming event, then the request");
    let e = ev[0].0.clone();
    assert!(String::from_utf8_lossy(&r.body).starts_with(&format!("id: {e}\nretry: ")));
    let asked: Value = serde_json::from_str(&ev[1].1).unwrap();
    assert_eq!(asked["method"], json!("elicitation/create"));
    assert_eq!(asked["params"]["message"], json!("Delete user 5?"));
    assert!(h.dispatched.is_empty());
    // Polled before the answer: the priming event again, same id.
    let poll = |h: &mut TestHost, sid: &str| {
        h.send(&g, head("GET", &[("mcp-session-id", sid), ("last-event-id", &e)]), "", &upstream)
    };
    let r = poll(&mut h, &sid);
    assert_eq!((r.status, events(&r.body)), (200, vec![(e.clone(), String::new())]));
    // The client's answer: its own POST.
    let answer =
        json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept", "content": {"sure": true}}});
    let r = h.send(&g, head("POST", &[("mcp-session-id", &sid)]), &answer.to_string(), &upstream);
    assert_eq!(r.status, 202);
    // Another session does not see it.
    let r = h.send(&g, head("POST", &[]), init, &upstream);
    let other = r.headers.iter().find(|(k, _)| k == "mcp-session-id").unwrap().1.clone();
    assert_eq!(events(&poll(&mut h, &other).body), vec![(e.clone(), String::new())]);
    // The poll runs the tool (its upstream call made from the GET) and carries the result.
    let r = poll(&mut h, &sid);
    let ev = events(&r.body);
    let result: Value = serde_json::from_str(&ev[0].1).unwrap();
    assert_eq!(result["id"], json!("c1"));
    assert_eq!(result["result"]["content"][0]["text"], json!("DELETE /users/5"), "{result}");
    assert_eq!(h.dispatched.len(), 1);
    assert!(h.dispatched[0].headers.contains(&("x-confirmed".into(), "true".into())));
    // The answer was taken: polling again does not run the call twice.
    assert_eq!(events(&poll(&mut h, &sid).body), vec![(e.clone(), String::new())]);
    assert_eq!(h.dispatched.len(), 1);
    // A GET without Last-Event-ID stays 405; an unknown one is 400.
    assert_eq!(h.send(&g, head("GET", &[("mcp-session-id", &sid)]), "", &upstream).status, 405);
    let r = h.send(&g, head("GET", &[("mcp-session-id", &sid), ("last-event-id", "nope")]), "", &upstream);
    assert_eq!(r.status, 400);
    // Altered arguments in the event id fail the state's check.
    let r = h.send(&g, head("POST", &[("mcp-session-id", &sid)]), &answer.to_string(), &upstream);
    assert_eq!(r.status, 202);
    let mut forged = poll::Resume::decode(&e).unwrap();
    forged.arguments = json!({"id": "6"});
    let forged = forged.encode();
    let r = h.send(&g, head("GET", &[("mcp-session-id", &sid), ("last-event-id", &forged)]), "", &upstream);
    let ev = events(&r.body);
    let refused: Value = serde_json::from_str(&ev.last().unwrap().1).unwrap_or(Value::Null);
    assert_eq!(refused["error"]["code"], json!(-32602), "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(h.dispatched.len(), 1);
}

#[test]
fn a_2025_11_25_session_is_asked_before_a_resource_is_read() {
    let g = gw();
    let mut h = TestHost::new();
    let no_upstream = |_: &crate::upstream::UpstreamRequest| -> UpstreamResult { panic!("no upstream call") };
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{}}}}"#;
    let r = h.send(&g, head("POST", &[]), init, &no_upstream);
    let sid = r.headers.iter().find(|(k, _)| k == "mcp-session-id").unwrap().1.clone();
    let read = r#"{"jsonrpc":"2.0","id":"r1","method":"resources/read","params":{"uri":"vault://diary"}}"#;
    let r = h.send(&g, head("POST", &[("mcp-session-id", &sid)]), read, &no_upstream);
    let ev = events(&r.body);
    assert_eq!(ev.len(), 2, "{}", String::from_utf8_lossy(&r.body));
    let asked: Value = serde_json::from_str(&ev[1].1).unwrap();
    assert_eq!(asked["params"]["message"], json!("Open diary?"));
    let answer = json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept", "content": {"pin": "42"}}});
    assert_eq!(h.send(&g, head("POST", &[("mcp-session-id", &sid)]), &answer.to_string(), &no_upstream).status, 202);
    let poll = head("GET", &[("mcp-session-id", &sid), ("last-event-id", &ev[0].0)]);
    let r = h.send(&g, poll, "", &no_upstream);
    let result: Value = serde_json::from_str(&events(&r.body)[0].1).unwrap();
    assert_eq!(result["id"], json!("r1"));
    assert_eq!(result["result"]["contents"][0]["text"], json!("diary opened with 42"), "{result}");
}

/// Replicas of one gateway: each its own shared data, all on one Redis (moved into the host that serves).
struct Replicas {
    hosts: Vec<TestHost>,
    redis: crate::driver::test_host::FakeRedis,
}

impl Replicas {
    fn new(n: usize) -> Replicas {
        Replicas { hosts: (0..n).map(|_| TestHost::new()).collect(), redis: Default::default() }
    }

    fn send(&mut self, g: &Gateway, on: usize, head: RequestHead, body: &str) -> crate::transport::HttpResponse {
        let upstream = |req: &crate::upstream::UpstreamRequest| UpstreamResult::Response {
            status: 200,
            headers: vec![],
            body: format!("{} {}", req.method, req.path).into_bytes(),
        };
        let h = &mut self.hosts[on];
        std::mem::swap(&mut h.redis, &mut self.redis);
        let r = h.send(g, head, body, &upstream);
        std::mem::swap(&mut h.redis, &mut self.redis);
        r
    }

    fn dispatched(&self) -> usize {
        self.hosts.iter().map(|h| h.dispatched.len()).sum()
    }
}

fn redis_gw() -> Gateway {
    let text = format!(
        "sessions: {{store: redis, redis: {{cluster: r, keyPrefix: 'p:', timeoutMs: 300}}}}\n\
         inputSigningKeys: [MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=]\n{CONFIG}"
    );
    Gateway::from_config_str(&text).unwrap()
}

#[test]
fn with_redis_sessions_the_answer_and_the_poll_reach_any_replica() {
    let g = redis_gw();
    let mut r = Replicas::new(3);
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{}}}}"#;
    let resp = r.send(&g, 0, head("POST", &[]), init);
    let sid = resp.headers.iter().find(|(k, _)| k == "mcp-session-id").unwrap().1.clone();
    let call =
        r#"{"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"delete_user","arguments":{"id":"5"}}}"#;
    let ev = events(&r.send(&g, 0, head("POST", &[("mcp-session-id", &sid)]), call).body);
    let (e, asked) = (ev[0].0.clone(), serde_json::from_str::<Value>(&ev[1].1).unwrap());
    let poll = |e: &str| head("GET", &[("mcp-session-id", &sid), ("last-event-id", e)]);
    // The answer reaches replica B, and is kept in Redis, under the session, for the state's lifetime.
    let answer =
        json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept", "content": {"sure": true}}});
    assert_eq!(r.send(&g, 1, head("POST", &[("mcp-session-id", &sid)]), &answer.to_string()).status, 202);
    let key = format!("p:answer:{{{sid}}}:{}", asked["id"].as_str().unwrap());
    let now = r.hosts[1].env.now_ms;
    assert_eq!(r.redis.keys.get(key.as_bytes()).map(|(_, exp)| *exp), Some(now + STATE_TTL_MS));
    // Nothing went to shared data: replica B's own answers are empty.
    let entry = format!("{sid}|{}", asked["id"].as_str().unwrap());
    assert!(crate::session::local::ANSWERS.get(&r.hosts[1].env.kv, &entry, now).is_none());
    // The poll reaches replica C: it takes the answer from Redis and runs the call there, once.
    let resp = r.send(&g, 2, poll(&e), "");
    let result: Value = serde_json::from_str(&events(&resp.body)[0].1).unwrap();
    assert_eq!(result["result"]["content"][0]["text"], json!("DELETE /users/5"), "{result}");
    assert_eq!((r.hosts[2].dispatched.len(), r.dispatched()), (1, 1));
    assert!(r.hosts[2].dispatched[0].headers.contains(&("x-confirmed".into(), "true".into())));
    assert!(!r.redis.keys.contains_key(key.as_bytes()), "taken");
    // Taken: a later poll on any replica gets the priming event again and calls nothing.
    for on in [0, 2] {
        assert_eq!(events(&r.send(&g, on, poll(&e), "").body), vec![(e.clone(), String::new())]);
    }
    assert_eq!(r.dispatched(), 1);
    // Answers are per session: another session's poll with the same event id does not see this one's.
    assert_eq!(r.send(&g, 1, head("POST", &[("mcp-session-id", &sid)]), &answer.to_string()).status, 202);
    let other = r.send(&g, 0, head("POST", &[]), init);
    let other = other.headers.iter().find(|(k, _)| k == "mcp-session-id").unwrap().1.clone();
    let stolen = r.send(&g, 0, head("GET", &[("mcp-session-id", &other), ("last-event-id", &e)]), "");
    assert_eq!(events(&stolen.body), vec![(e.clone(), String::new())]);
    assert_eq!(r.dispatched(), 1);
    // Expired with the state: 10 minutes later the answer is gone.
    r.hosts[0].env.now_ms += STATE_TTL_MS;
    assert_eq!(events(&r.send(&g, 0, poll(&e), "").body), vec![(e.clone(), String::new())]);
    assert_eq!(r.dispatched(), 1);
}

/// Starts a request on `h` and lets its first Redis command (the session's open) run; the driver then waits
/// on its second command (the answers'), which the caller answers.
fn past_the_session(h: &mut TestHost, g: &Gateway, head: &RequestHead, body: &str) -> (crate::driver::Driver, u32) {
    use crate::driver::Progress;
    let mut d = h.start(g, head, body.as_bytes()).unwrap();
    let (token, command) = h.redis_queue.pop().unwrap();
    let reply = h.redis.execute(&command, h.env.now_ms).unwrap();
    assert_eq!(d.on_redis_reply(g, h, token, crate::session::redis::Answer::Reply(&reply)), Progress::Waiting);
    let (token, command) = h.redis_queue.pop().unwrap();
    assert!(String::from_utf8_lossy(&command).contains("p:answer:"), "the answers' command");
    (d, token)
}

#[test]
fn with_redis_sessions_a_failing_redis_gives_a_clear_error_in_time() {
    use crate::driver::{Progress, REDIS_GRACE_MS};
    use crate::session::redis::Answer;
    let g = redis_gw();
    let mut h = TestHost::new();
    let no_upstream = |_: &crate::upstream::UpstreamRequest| -> UpstreamResult { panic!("no upstream call") };
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{"elicitation":{}}}}"#;
    let resp = h.send(&g, head("POST", &[]), init, &no_upstream);
    let sid = resp.headers.iter().find(|(k, _)| k == "mcp-session-id").unwrap().1.clone();
    let call =
        r#"{"jsonrpc":"2.0","id":"c1","method":"tools/call","params":{"name":"delete_user","arguments":{"id":"5"}}}"#;
    let ev = events(&h.send(&g, head("POST", &[("mcp-session-id", &sid)]), call, &no_upstream).body);
    let (e, asked) = (ev[0].0.clone(), serde_json::from_str::<Value>(&ev[1].1).unwrap());
    let answer =
        json!({"jsonrpc": "2.0", "id": asked["id"], "result": {"action": "accept", "content": {"sure": true}}})
            .to_string();
    let post = head("POST", &[("mcp-session-id", &sid)]);
    let poll = head("GET", &[("mcp-session-id", &sid), ("last-event-id", &e)]);
    let error = |h: &mut TestHost| {
        let r = h.responses.pop().unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!((r.status, v["error"]["code"].clone()), (503, json!(-32603)), "{v}");
        assert!(v["error"]["message"].as_str().unwrap().starts_with("input answers unavailable: "), "{v}");
        v
    };
    // Redis fails the answer's SET: 503, nothing kept.
    let (mut d, token) = past_the_session(&mut h, &g, &post, &answer);
    assert_eq!(d.on_redis_reply(&g, &mut h, token, Answer::Failed("connection refused".into())), Progress::Done);
    let v = error(&mut h);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be kept: Redis did not answer (connection refused)"),
        "{v}"
    );
    assert!(h.warnings.iter().any(|w| w.starts_with("input answers (redis)")), "{:?}", h.warnings);
    assert!(!h.redis.keys.keys().any(|k| k.starts_with(b"p:answer:")));
    assert_eq!(h.send(&g, post.clone(), &answer, &no_upstream).status, 202);
    // Redis fails the take: 503 with the call's id, and the answer stays for the next poll.
    let (mut d, token) = past_the_session(&mut h, &g, &poll, "");
    assert_eq!(d.on_redis_reply(&g, &mut h, token, Answer::Failed("connection refused".into())), Progress::Done);
    assert_eq!(error(&mut h)["id"], json!("c1"));
    // A Redis that never answers: the same error once its timeout (and the host's grace) has passed.
    let (mut d, _) = past_the_session(&mut h, &g, &poll, "");
    let sent = h.env.now_ms;
    assert_eq!(d.on_tick(&g, &mut h, sent + 300 + REDIS_GRACE_MS - 1), Progress::Waiting);
    assert_eq!(d.on_tick(&g, &mut h, sent + 300 + REDIS_GRACE_MS), Progress::Done);
    assert!(error(&mut h)["error"]["message"].as_str().unwrap().contains("Redis did not answer"));
    // Redis back: the answer kept before is still there, and the poll gets the result.
    let upstream = |_: &crate::upstream::UpstreamRequest| UpstreamResult::Response {
        status: 200,
        headers: vec![],
        body: b"deleted".to_vec(),
    };
    let result: Value = serde_json::from_str(&events(&h.send(&g, poll, "", &upstream).body)[0].1).unwrap();
    assert_eq!(result["result"]["content"][0]["text"], json!("deleted"), "{result}");
    assert_eq!(h.dispatched.len(), 1);
}

#[test]
fn the_polling_messages_keep_their_member_order() {
    let resume = poll::Resume {
        id: json!("c1"),
        method: "tools/call".into(),
        name: "t".into(),
        arguments: json!({"a": 1}),
        keys: vec!["k".into()],
        state: "S".into(),
    };
    let text = String::from_utf8(URL_SAFE_NO_PAD.decode(resume.encode()).unwrap()).unwrap();
    assert_eq!(text, r#"{"i":"c1","m":"tools/call","n":"t","g":{"a":1},"k":["k"],"s":"S"}"#);
    let retry = resume.retry(&[Some(r#"{"result":{"action":"accept"}}"#.into())]).unwrap();
    let crate::jsonrpc::Message::Request { params: Some(params), .. } = retry else { panic!("{retry:?}") };
    assert_eq!(
        params.to_string(),
        r#"{"name":"t","arguments":{"a":1},"inputResponses":{"k":{"action":"accept"}},"requestState":"S"}"#
    );
    let read = poll::Resume { method: "resources/read".into(), ..resume.clone() };
    let crate::jsonrpc::Message::Request { params: Some(params), .. } = read.retry(&[Some("{}".into())]).unwrap()
    else {
        panic!()
    };
    assert_eq!(params.to_string(), r#"{"uri":"t","inputResponses":{"k":{}},"requestState":"S"}"#);
    let kept = |body: Value| poll::response_to_us(&body).map(|(_, kept)| kept);
    assert_eq!(kept(json!({"id": "mcpgw.x.k", "result": {"a": 1}})).as_deref(), Some(r#"{"result":{"a":1}}"#));
    assert_eq!(kept(json!({"id": "mcpgw.x.k", "error": {"code": 1}})).as_deref(), Some(r#"{"error":{"code":1}}"#));
    let result = json!({"resultType": "input_required", "requestState": "S",
        "inputRequests": {"k": {"method": "roots/list", "params": {"p": 1}}}});
    let (_, body) = poll::ask(&result, &json!("c1"), "tools/call", "t", &json!({"a": 1})).unwrap();
    let id = resume.request_id("k");
    assert!(
        body.ends_with(&format!(
            "data: {{\"jsonrpc\":\"2.0\",\"id\":\"{id}\",\"method\":\"roots/list\",\"params\":{{\"p\":1}}}}\n\n"
        )),
        "{body}"
    );
}
