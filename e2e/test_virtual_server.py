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
            {"name": "assistant", "type": "virtual", "timeout": 2000, "toolsCacheMs": 1500, "tools": [
                {"server": "weather", "tool": "get_weather", "name": "forecast", "description": "Forecast for a city."},
                {"server": "alpha", "tool": "echo", "name": "say", "description": "Says the text back.", "title": "Say"},
                {"server": "beta", "tool": "echo", "name": "beta_echo"},
                {"server": "beta", "tool": "whoami"},
            ]},
            {"name": "chatty", "type": "virtual", "tools": [{"server": "alpha", "tool": "steps", "name": "count"}]},
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


def test_a_batch_answers_each_member_its_virtual_tool_requests_with_their_own_errors(gateway):
    """2025-03-26 batches: a virtual server's tools/list and tools/call in one are each answered with an
    error carrying their own id; the batch's other members (ping) are served."""
    url = gateway.mcp_url("assistant")
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    r = httpx.post(url, json=init, headers={"Accept": ACCEPT}, timeout=15)
    sid = r.headers["mcp-session-id"]
    h = {"Accept": ACCEPT, "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-03-26"}
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 2, "method": "ping"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "say", "arguments": {"text": "x"}}},
    ]
    r = httpx.post(url, json=batch, headers=h, timeout=15)
    assert r.status_code == 200, r.text
    answers = r.json() if r.headers["content-type"].startswith("application/json") else harness_sse(r.text)
    by_id = {a["id"]: a for a in answers}
    assert sorted(by_id) == [1, 2, 3], answers
    assert by_id[2] == {"jsonrpc": "2.0", "id": 2, "result": {}}
    for i in (1, 3):
        assert by_id[i]["error"]["code"] == -32600, by_id[i]
        assert "must each be sent as a request of its own" in by_id[i]["error"]["message"], by_id[i]
