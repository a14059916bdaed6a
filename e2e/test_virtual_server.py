"""Virtual servers (`type: virtual`, and Higress's `toolSet`) in real Envoy: tools taken from a REST server
(the demo upstream) and from two proxied servers (real Python SDK MCP servers, e2e/mcp_backend.py, one
answering SSE and one JSON), renamed and re-described, listed and called by the real Python SDK client.
The gateway's own calls to the proxied servers go through the clusters `mcp_a` and `mcp_b` (added to
envoy/envoy.yaml here); the per-worker cache is short (`toolsCacheMs: 1500`) so that expiry is seen.

Envoy runs with one worker (concurrency 1) so that the per-worker cache and backend sessions are the ones
every request meets.
"""

from __future__ import annotations

import copy
import json
import time

import httpx
import pytest

import harness
from harness import ACCEPT, LATEST
from test_mcp_proxy import McpBackend


def _envoy_base(port_a: int, port_b: int) -> dict:
    base = harness.load_envoy_yaml()
    clusters = base["static_resources"]["clusters"]
    template = next(c for c in clusters if c["name"] == "blackhole")
    for name, port in (("mcp_a", port_a), ("mcp_b", port_b)):
        c = copy.deepcopy(template)
        c["name"] = name
        c["load_assignment"]["cluster_name"] = name
        sa = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        sa["port_value"] = port
        clusters.append(c)
    return base


def rest_server() -> dict:
    return {
        "name": "weather",
        "upstream": {"cluster": "demo", "authority": "demo.local", "timeoutMs": 5000},
        "config": {"apiKey": "demo-key"},
        "tools": [{
            "name": "get_weather",
            "description": "Current weather for a city.",
            "args": [{"name": "city", "type": "string", "required": True, "position": "query"}],
            "requestTemplate": {"url": "/weather", "method": "GET", "headers": [{"key": "X-Api-Key", "value": "{{ config.apiKey }}"}]},
            "responseTemplate": {"body": "It is {{ response.temp }} degrees in {{ response.city }}."},
        }],
    }


def proxied(name: str, cluster: str, port: int) -> dict:
    # The SDK's servers check Host (DNS-rebinding protection): the gateway's calls name theirs.
    return {"name": name, "type": "mcp-proxy", "transport": "http", "mcpServerURL": "/mcp",
            "upstream": {"cluster": cluster, "authority": f"127.0.0.1:{port}"}, "timeout": 10000}


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    a = McpBackend("stateful", log_dir=tmp_path_factory.mktemp("backend-a")).start(timeout=60)
    b = McpBackend("json", log_dir=tmp_path_factory.mktemp("backend-b")).start(timeout=60)
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture(scope="module")
def gateway(backends):
    a, b = backends
    cfg = {
        "servers": [
            rest_server(),
            proxied("alpha", "mcp_a", a.port),
            proxied("beta", "mcp_b", b.port),
            # 5 s per backend: the SDK's servers answer a first list slowly on a loaded machine, and a backend
            # past its deadline drops its tools from the list.
            {"name": "assistant", "type": "virtual", "timeout": 5000, "toolsCacheMs": 1500, "tools": [
                {"server": "weather", "tool": "get_weather", "name": "forecast", "description": "Forecast for a city."},
                {"server": "alpha", "tool": "echo", "name": "say", "description": "Says the text back.", "title": "Say"},
                {"server": "beta", "tool": "echo", "name": "beta_echo"},
                {"server": "beta", "tool": "whoami"},
            ]},
            {"name": "chatty", "type": "virtual", "tools": [{"server": "alpha", "tool": "steps", "name": "count"}]},
            # Its own limit (two calls a minute per consumer) and guardrails, beside its tools' servers'.
            {"name": "guarded", "type": "virtual", "rateLimits": [{"requests": 2, "window": "1m", "per": "consumer"}],
             "tools": [{"server": "alpha", "tool": "echo", "name": "say"}, {"server": "weather", "tool": "get_weather"}]},
            {"name": "masked", "type": "virtual", "guardrails": {"mask": ["email"], "denyPatterns": ["forbidden"]},
             "tools": [{"server": "alpha", "tool": "echo", "name": "say"}, {"server": "weather", "tool": "get_weather"}]},
        ],
        "toolSet": {"name": "set", "serverTools": [{"serverName": "alpha", "tools": ["echo"]}, {"serverName": "weather", "tools": ["get_weather"]}]},
    }
    g = harness.start_gateway(cfg, tag="virtual", plugin_format="json", concurrency=1,
                              envoy_base=_envoy_base(a.port, b.port))
    yield g
    g.stop()


def names_and_calls(url: str, calls: list[tuple[str, dict]]) -> tuple[list, dict, list]:
    out: dict = {}

    async def main():
        async with harness.mcp_client(url, headers={"Authorization": "Bearer client-secret"}) as c:
            tools = (await c.list_tools()).tools
            out["tools"] = tools
            out["results"] = [await c.call_tool(name, args) for name, args in calls]

    harness.run_async(main)
    return [t.name for t in out["tools"]], {t.name: t for t in out["tools"]}, out["results"]


def test_the_sdk_client_lists_and_calls_tools_of_three_servers(gateway):
    names, tools, results = names_and_calls(gateway.mcp_url("assistant"), [
        ("forecast", {"city": "Paris"}), ("say", {"text": "hi"}), ("beta_echo", {"text": "yo"}), ("whoami", {}),
    ])
    assert names == ["forecast", "say", "beta_echo", "whoami"]
    assert tools["say"].description == "Says the text back." and tools["say"].title == "Say"
    assert tools["forecast"].description == "Forecast for a city."
    assert tools["say"].input_schema["properties"]["text"]["type"] == "string"  # the backend's schema
    texts = [r.content[0].text for r in results]
    assert texts[0].startswith("It is ") and "Paris" in texts[0], texts[0]
    assert texts[1:3] == ["echo: hi", "echo: yo"]
    # The gateway's own backend calls carry nothing of the client's.
    assert texts[3] == "authorization='' cookie=''"


def test_a_tool_set_names_tools_as_higress_does(gateway):
    names, _, results = names_and_calls(gateway.mcp_url("set"), [("alpha___echo", {"text": "x"})])
    assert names == ["alpha___echo", "weather___get_weather"]
    assert results[0].content[0].text == "echo: x"


def raw_list(gateway, server: str, version: str = LATEST) -> list[str]:
    if version == "2026-07-28":
        params = {"_meta": {"io.modelcontextprotocol/protocolVersion": version, "io.modelcontextprotocol/clientCapabilities": {}}}
        h = {"Accept": ACCEPT, "MCP-Protocol-Version": version, "Mcp-Method": "tools/list"}
        r = httpx.post(gateway.mcp_url(server), json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params}, headers=h, timeout=15)
    else:
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
        r = httpx.post(gateway.mcp_url(server), json=init, headers={"Accept": ACCEPT}, timeout=15)
        sid = r.headers["mcp-session-id"]
        h = {"Accept": ACCEPT, "Mcp-Session-Id": sid, "MCP-Protocol-Version": version}
        r = httpx.post(gateway.mcp_url(server), json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=h, timeout=15)
    assert r.status_code == 200, r.text
    body = r.json() if r.headers["content-type"].startswith("application/json") else harness_sse(r.text)
    return [t["name"] for t in body["result"]["tools"]]


def harness_sse(text: str) -> dict:
    import json
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:")][-1]


def test_the_stateless_revision_gets_the_same_list(gateway):
    assert raw_list(gateway, "assistant", "2026-07-28") == ["forecast", "say", "beta_echo", "whoami"]


def test_a_backend_down_removes_only_its_tools_a_restarted_one_is_reinitialised(gateway, backends):
    a, b = backends
    assert raw_list(gateway, "assistant") == ["forecast", "say", "beta_echo", "whoami"]
    b.stop()
    time.sleep(1.6)  # past toolsCacheMs
    assert raw_list(gateway, "assistant") == ["forecast", "say"]
    assert raw_list(gateway, "assistant") == ["forecast", "say"]
    log = gateway.envoy.log_text()
    assert log.count("proxied server 'beta' could not list its tools") == 1, log[-3000:]
    # Back on the same port, with no memory of the gateway's session: a new one, transparently.
    b.start(timeout=60)  # a loaded machine starts Python slowly
    time.sleep(1.6)
    assert raw_list(gateway, "assistant") == ["forecast", "say", "beta_echo", "whoami"]
    assert "proxied server 'beta' lists its tools again" in gateway.envoy.log_text()
    # Backend a restarts too: its cached session is stale, and the next call re-initialises it.
    a.stop()
    a.start(timeout=60)
    _, _, results = names_and_calls(gateway.mcp_url("assistant"), [("say", {"text": "again"})])
    assert results[0].content[0].text == "echo: again"


def test_a_proxied_calls_logs_and_progress_reach_the_client_before_its_result(gateway):
    """The backend's notifications during the call arrive ahead of the result (relayed once the backend's answer
    is complete: the gateway's own call reads it whole), filtered by the session's log level."""
    heard = []

    async def on_log(p):
        heard.append(("log", p.data))

    async def on_progress(progress, total, message):
        heard.append(("progress", progress, total, message))

    async def main():
        async with harness.mcp_client(gateway.mcp_url("chatty"), logging_callback=on_log) as c:
            r = await c.call_tool("count", {"n": 2, "pause_ms": 10}, progress_callback=on_progress)
            heard.append(("result", r.content[0].text))
            await c.set_logging_level("warning")
            r = await c.call_tool("count", {"n": 1, "pause_ms": 10})
            heard.append(("result", r.content[0].text))

    harness.run_async(main)
    assert heard == [
        ("log", "step 1 of 2"), ("progress", 1, 2, "step 1"), ("log", "step 2 of 2"), ("progress", 2, 2, "step 2"),
        ("result", "2 steps done"), ("result", "1 steps done"),
    ], heard


def session(url: str, version: str = "2025-03-26"):
    """A raw session at `version` (2025-03-26: the revision with batches): a function that POSTs a message or
    a batch in it and gives the notifications ahead of the answer, and the answer."""
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    r = httpx.post(url, json=init, headers={"Accept": ACCEPT}, timeout=15)
    h = {"Accept": ACCEPT, "Mcp-Session-Id": r.headers["mcp-session-id"], "MCP-Protocol-Version": version}

    def post(body) -> tuple[list, object]:
        import json
        r = httpx.post(url, json=body, headers=h, timeout=30)
        assert r.status_code == 200, r.text
        if r.headers["content-type"].startswith("application/json"):
            return [], r.json()
        events = [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]
        return events[:-1], events[-1]

    return post


def call(id_, name: str, arguments: dict) -> dict:
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


def test_a_batch_serves_a_virtual_servers_tools_and_answers_in_one_array(gateway):
    """2025-03-26 batches: a virtual server's tools/list and tools/call of REST and proxied tools in one
    batch, answered in one array in the batch's order with their ids; the notification gets no answer."""
    post = session(gateway.mcp_url("assistant"))
    notes, answers = post([
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        call("two", "forecast", {"city": "Paris"}),
        call(3, "say", {"text": "x"}),
        {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 99}},
        call(4, "beta_echo", {"text": "y"}),
        {"jsonrpc": "2.0", "id": 5, "method": "ping"},
        call(6, "nope", {}),
    ])
    assert [a["id"] for a in answers] == [1, "two", 3, 4, 5, 6], answers
    assert [t["name"] for t in answers[0]["result"]["tools"]] == ["forecast", "say", "beta_echo", "whoami"]
    texts = [a["result"]["content"][0]["text"] for a in answers[1:4]]
    assert texts[0].startswith("It is ") and "Paris" in texts[0], texts
    assert texts[1:] == ["echo: x", "echo: y"]
    assert answers[4] == {"jsonrpc": "2.0", "id": 5, "result": {}}
    assert answers[5]["error"] == {"code": -32602, "message": "Unknown tool: nope"}


def test_a_batchs_proxied_call_logs_reach_the_client_ahead_of_the_array(gateway):
    post = session(gateway.mcp_url("chatty"))
    notes, answers = post([call(1, "count", {"n": 2, "pause_ms": 10}), {"jsonrpc": "2.0", "id": 2, "method": "ping"}])
    assert [n["params"]["data"] for n in notes if n["method"] == "notifications/message"] == ["step 1 of 2", "step 2 of 2"], notes
    assert answers[0]["result"]["content"][0]["text"] == "2 steps done"
    assert answers[1] == {"jsonrpc": "2.0", "id": 2, "result": {}}


def test_calls_in_flight_together_on_one_backend_session_get_their_own_answers(gateway):
    """The gateway holds one backend session per proxied server (per worker) and a batch sends its calls on it
    at once: each must carry its own JSON-RPC id, or the backend answers one call's stream with another's
    result (the SDK's server keys its answer streams by request id). The slow call is sent first."""
    post = session(gateway.mcp_url("chatty"))
    post(call(0, "count", {"n": 1, "pause_ms": 1}))  # the backend session, held for the batch
    for _ in range(3):
        notes, answers = post([
            call(1, "count", {"n": 2, "pause_ms": 400, "by": "slow"}),
            call(2, "count", {"n": 1, "pause_ms": 1, "by": "fast"}),
            call(3, "count", {"n": 1, "pause_ms": 100, "by": "middle"}),
        ])
        assert [a["id"] for a in answers] == [1, 2, 3], answers
        texts = [a["result"]["content"][0]["text"] if "result" in a else a for a in answers]
        assert texts == ["2 steps done by slow", "1 steps done by fast", "1 steps done by middle"], texts


def test_a_virtual_servers_rate_limit_counts_its_calls(gateway):
    """Two calls a minute on `guarded`: a batch of three gets two results and, for the third, the limit's
    error under its id; a REST and a proxied tool count alike."""
    post = session(gateway.mcp_url("guarded"))
    _, answers = post([call(1, "say", {"text": "a"}), call(2, "get_weather", {"city": "Oslo"}), call(3, "say", {"text": "b"})])
    assert [a["id"] for a in answers] == [1, 2, 3]
    assert answers[0]["result"]["content"][0]["text"] == "echo: a"
    assert "Oslo" in answers[1]["result"]["content"][0]["text"]
    err = answers[2]["error"]
    assert err["code"] == -32000, answers
    assert "rate limit exceeded: server 'guarded' allows 2 calls per 1m for anonymous callers" in err["message"], err
    # The next request, on its own, is refused too; other virtual servers are not limited by it.
    _, one = session(gateway.mcp_url("guarded"), LATEST)(call(4, "say", {"text": "c"}))
    assert one["error"]["code"] == -32000, one
    _, other = session(gateway.mcp_url("masked"), LATEST)(call(5, "say", {"text": "d"}))
    assert other["result"]["content"][0]["text"] == "echo: d"


def test_a_virtual_servers_guardrails_mask_results_and_refuse_arguments(gateway):
    post = session(gateway.mcp_url("masked"), LATEST)
    _, a = post(call(1, "say", {"text": "write to bob@example.com"}))
    assert a["result"]["content"][0]["text"] == "echo: write to [REDACTED:email]", a
    _, a = post(call(2, "say", {"text": "a forbidden word"}))
    assert "guardrail" in a["error"]["message"] and "matches a denied pattern" in a["error"]["message"], a
    # In a batch too: each member checked on its own.
    _, answers = session(gateway.mcp_url("masked"))([
        call(1, "say", {"text": "forbidden"}), call(2, "say", {"text": "x@y.org"}),
    ])
    assert "denied pattern" in answers[0]["error"]["message"], answers
    assert answers[1]["result"]["content"][0]["text"] == "echo: [REDACTED:email]", answers


# --- guard services (guardrails.external) on a virtual server ---------------------------------------------


@pytest.fixture(scope="module")
def checked(backends):
    """A virtual server `checked` with its own guard service (arguments and results; `closed` and `open` by
    one that is down, failing closed and open), in front of REST server `weather` and proxied server `alpha`,
    each with its own guard service (the same service, told which server asks), and of `beta`, without one.
    The service also refuses arguments holding `deny:<server asked>` and results holding `leak:<server asked>`:
    what one server's check lets through, the other's may refuse."""
    a, b = backends

    def refuses(body: dict) -> bool:
        seen = json.dumps(body["arguments"] if body["phase"] == "input" else body["result"])
        return f"{'deny' if body['phase'] == 'input' else 'leak'}:{body['server']}" in seen

    service = harness.GuardService(refuses=refuses)
    own = {"external": {"cluster": "guard", "timeoutMs": 2000, "output": True}}
    down = {"cluster": "guard_down", "timeoutMs": 300}
    weather = {**rest_server(), "guardrails": own}
    cfg = {"servers": [
        weather,
        {**proxied("alpha", "mcp_a", a.port), "guardrails": own},
        proxied("beta", "mcp_b", b.port),
        {"name": "checked", "type": "virtual",
         "guardrails": {**own, "tools": {"closed": {"external": down}, "open": {"external": {**down, "failOpen": True}}}},
         "tools": [
             {"server": "weather", "tool": "get_weather", "name": "forecast"},
             {"server": "alpha", "tool": "echo", "name": "say"},
             {"server": "beta", "tool": "echo", "name": "open"},
             {"server": "beta", "tool": "whoami", "name": "closed"},
         ]},
    ]}
    base = _envoy_base(a.port, b.port)
    base["static_resources"]["clusters"] += [harness.static_cluster("guard", service.port),
                                             harness.static_cluster("guard_down", harness.unused_port())]
    g = harness.start_gateway(cfg, tag="virtual-guard", plugin_format="json", concurrency=1, envoy_base=base)
    g.extra["service"] = service
    yield g
    g.stop()
    service.stop()


def asked(service) -> list[tuple]:
    out = [(a["phase"], a["server"], a["tool"]) for a in service.asked]
    service.asked.clear()
    return out


def guardrail_error(answer: dict) -> str:
    assert answer["error"]["data"] == {"cause": "guardrail"} and answer["error"]["code"] == -32602, answer
    return answer["error"]["message"]


def test_the_virtual_servers_guard_service_is_asked_before_the_tools_own(checked):
    """The SDK's client calls a proxied and a REST tool: the virtual server's service, then the owner's, about
    the arguments, then (after the call) about the result, each told its own names."""
    service = checked.extra["service"]
    asked(service)
    _, _, results = names_and_calls(checked.mcp_url("checked"), [("say", {"text": "hi"}), ("forecast", {"city": "Oslo"})])
    assert results[0].content[0].text == "echo: hi"
    assert "Oslo" in results[1].content[0].text
    assert asked(service) == [
        ("input", "checked", "say"), ("input", "alpha", "echo"), ("output", "checked", "say"), ("output", "alpha", "echo"),
        ("input", "checked", "forecast"), ("input", "weather", "get_weather"),
        ("output", "checked", "forecast"), ("output", "weather", "get_weather"),
    ]
    assert service.asked == []


def test_a_guard_service_refuses_arguments_and_results_of_a_virtual_servers_calls(checked):
    service = checked.extra["service"]
    post = session(checked.mcp_url("checked"), LATEST)
    asked(service)
    # An argument the virtual server's service refuses: nobody else is asked, nothing is called.
    _, a = post(call(1, "say", {"text": "a forbidden plan"}))
    assert "guardrail: the guard service refused the input of tool 'say': forbidden word in the arguments" in guardrail_error(a)
    assert asked(service) == [("input", "checked", "say")]
    # One only the proxied server's own service refuses (alpha: `deny:alpha`), under its name of the tool.
    _, a = post(call(2, "say", {"text": "deny:alpha"}))
    assert "refused the input of tool 'echo': refused by the rule of the alpha test" in guardrail_error(a)
    assert asked(service) == [("input", "checked", "say"), ("input", "alpha", "echo")]
    # A result: the backend answered, the client never sees it; refused by the virtual server's, or by alpha's.
    _, a = post(call(3, "say", {"text": "classified"}))
    assert "refused the output of tool 'say': classified result" in guardrail_error(a)
    assert "echo: classified" not in json.dumps(a)
    _, a = post(call(4, "say", {"text": "leak:alpha"}))
    assert "refused the output of tool 'echo': refused by the rule of the alpha test" in guardrail_error(a)
    assert asked(service)[-2:] == [("output", "checked", "say"), ("output", "alpha", "echo")]
    # A REST tool's result, by the REST server's own service.
    _, a = post(call(5, "forecast", {"city": "leak:weather"}))
    assert "refused the output of tool 'get_weather'" in guardrail_error(a)


def test_a_guard_service_that_is_down_fails_a_virtual_servers_call_closed_or_open(checked):
    post = session(checked.mcp_url("checked"), LATEST)
    started = time.monotonic()
    _, a = post(call(1, "closed", {}))
    message = guardrail_error(a)
    assert "could not check the input of tool 'closed'" in message and "failOpen is false" in message, message
    _, a = post(call(2, "open", {"text": "through"}))
    assert a["result"]["content"][0]["text"] == "echo: through", a
    assert time.monotonic() - started < 8, "each check gives up within its timeout"


def test_a_batch_checks_each_call_and_answers_in_one_array(checked):
    service = checked.extra["service"]
    asked(service)
    _, answers = session(checked.mcp_url("checked"))([
        call(1, "say", {"text": "forbidden"}),
        call(2, "say", {"text": "classified"}),
        call(3, "forecast", {"city": "Paris"}),
        call(4, "closed", {}),
        call(5, "open", {"text": "b"}),
        {"jsonrpc": "2.0", "id": 6, "method": "ping"},
    ])
    assert [a["id"] for a in answers] == [1, 2, 3, 4, 5, 6], answers
    assert "refused the input of tool 'say'" in guardrail_error(answers[0])
    assert "refused the output of tool 'say'" in guardrail_error(answers[1])
    assert "Paris" in answers[2]["result"]["content"][0]["text"], answers[2]
    assert "could not check the input of tool 'closed'" in guardrail_error(answers[3])
    assert answers[4]["result"]["content"][0]["text"] == "echo: b", answers[4]
    assert answers[5] == {"jsonrpc": "2.0", "id": 6, "result": {}}
    seen = sorted(asked(service))
    assert seen == sorted([
        ("input", "checked", "say"),
        ("input", "checked", "say"), ("input", "alpha", "echo"), ("output", "checked", "say"),
        ("input", "checked", "forecast"), ("input", "weather", "get_weather"),
        ("output", "checked", "forecast"), ("output", "weather", "get_weather"),
    ]), seen
