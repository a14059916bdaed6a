"""MCP's legacy SSE transport as Higress gives it to a wasm MCP server, with this plugin in place of Higress's.

On Higress, the SSE stream is held by its `mcp-session` Go filter, ahead of the wasm plugins: the client's
messages arrive at the plugin as `POST {path}?sessionId=X` with the client's own headers (no
`Mcp-Session-Id`, often no Streamable HTTP `Accept`), and the filter publishes the plugin's JSON answer on the
client's stream. `e2e/higress_sse.py` is a stand-in for that filter written from its sources (Higress itself
cannot run here); it relays to real Envoy with the plugin and `plugin-config/e2e.yaml`. The client is the
official Python MCP SDK's SSE client.
"""

from __future__ import annotations

import json

import httpx2  # the SDK's HTTP client

import harness
from harness import run_async
from higress_sse import HigressSseFilter

SERVER = "demo"


def with_filter(gw, fn, keepalive: float = 5.0):
    sse = HigressSseFilter(gw.base_url, harness.free_port(), keepalive=keepalive).start()
    try:
        return fn(sse)
    finally:
        sse.stop()


async def sse_session(url: str, body):
    """An initialized SDK client over SSE, running `body(client)`."""
    from mcp import Client
    from mcp.client.sse import sse_client

    async with Client(sse_client(url, timeout=10), mode="legacy", cache=None, read_timeout_seconds=15) as client:
        return await body(client)


def test_the_sdk_sse_client_works_through_higress_sse_filter(gw):
    def scenario(sse: HigressSseFilter):
        async def body(client):
            tools = (await client.list_tools()).tools
            weather = await client.call_tool("get_weather", {"city": "Paris"})
            return client, tools, weather

        client, tools, weather = run_async(sse_session, f"{sse.url}{gw.mcp_path(SERVER)}/sse", body)
        return client, tools, weather, list(sse.relayed), list(sse.published)

    client, tools, weather, relayed, published = with_filter(gw, scenario)
    assert "get_weather" in {t.name for t in tools}
    assert not weather.is_error and "Paris" in weather.content[0].text, weather
    # what reached the plugin: POSTs to {path}?sessionId=..., no Mcp-Session-Id, and every answer published
    assert relayed and all(path.startswith(f"{gw.mcp_path(SERVER)}?sessionId=") for path, _, _ in relayed)
    assert all("mcp-session-id" not in {k.lower() for k in headers} for _, headers, _ in relayed)
    methods = [json.loads(b).get("method") for _, _, b in relayed]
    assert methods[:2] == ["initialize", "notifications/initialized"] and "tools/call" in methods
    for _, event in published:
        assert event.startswith("event: message\ndata: {") and event.endswith("}\n\n") and event.count("\n") == 3


def test_higress_keepalive_pings_are_answered(gw):
    """Higress pings every 5 s with a JSON-RPC request on the stream; the SDK answers it with a POST, which
    the filter relays to the plugin like any message: a JSON-RPC response, accepted with 202."""

    def scenario(sse: HigressSseFilter):
        async def body(client):
            import anyio

            await anyio.sleep(1.2)  # a few keepalives at 0.3 s
            return await client.call_tool("get_user", {"id": 2})

        result = run_async(sse_session, f"{sse.url}{gw.mcp_path(SERVER)}/sse", body)
        return result, list(sse.relayed)

    result, relayed = with_filter(gw, scenario, keepalive=0.3)
    assert not result.is_error and "Alan Turing" in result.content[0].text, result
    answers = [json.loads(b) for _, _, b in relayed if "method" not in json.loads(b)]
    assert answers and all(a.get("result") == {} for a in answers), answers


def test_a_relayed_post_as_higress_sends_it(gw):
    """The exact request the filter relays for a 2024-11-05 client: JSON only in Accept, a query string."""
    url = f"{gw.base_url}{gw.mcp_path(SERVER)}?sessionId=6f1e2d3c-4b5a-4968-8776-655443322110"
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {"protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": {"name": "c", "version": "1"}},
    }
    r = httpx2.post(url, json=init, headers=headers, timeout=10)
    assert r.status_code == 200 and "mcp-session-id" not in r.headers, (r.status_code, r.headers)
    assert r.json()["result"]["protocolVersion"] == "2024-11-05" and "\n" not in r.text
    r = httpx2.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=headers, timeout=10)
    assert r.status_code == 200 and r.json()["result"]["tools"], r.text
    # without the filter's query parameter, the same POST is an ordinary Streamable HTTP one: it needs a session
    bare = f"{gw.base_url}{gw.mcp_path(SERVER)}"
    full = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    r = httpx2.post(bare, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, headers=full, timeout=10)
    assert r.status_code == 400 and "Mcp-Session-Id" in r.json()["error"]["message"]


def test_through_the_higress_build_in_the_test_host(e2e_config):
    """The same relay in front of the Higress build (mcp_gateway_higress.wasm) in the test host for Higress's
    ABI (two workers, Higress's pause semantics), Redis sessions configured: the relayed messages use none."""
    from wasm_host import Plugin, Replica
    from wasm_host.testing import RedisServer, running

    config = dict(e2e_config)
    config.pop("sessionTtlSeconds", None)
    config["sessions"] = {"store": "redis", "redis": {"cluster": "outbound|6379||redis.dns"}}
    run_dir = harness.new_run_dir("higress-sse")
    with RedisServer(run_dir) as redis, harness.DemoUpstream(log_dir=run_dir) as upstream:
        replica = Replica(
            harness.higress_wasm_path(),
            Plugin(json.dumps(config).encode()),
            clusters={"demo": ("127.0.0.1", upstream.port), "outbound|6379||redis.dns": redis.address},
            route_cluster="demo",
            workers=2,
            name="higress-sse",
            log_path=run_dir / "replica.log",
        )
        with running(replica):
            sse = HigressSseFilter(replica.url, harness.free_port()).start()
            try:

                async def body(client):
                    return await client.call_tool("get_user", {"id": 3})

                result = run_async(sse_session, f"{sse.url}/mcp-servers/{SERVER}/sse", body)
            finally:
                sse.stop()
            assert not result.is_error and "Grace Hopper" in result.content[0].text, result
            assert sum(replica.requests_per_worker) >= 3
            assert not redis.command("KEYS", "*").strip(), "no session was stored"
            assert not replica.crashes, replica.crashes
