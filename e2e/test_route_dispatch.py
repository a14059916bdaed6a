"""`upstream.dispatch: route` in real Envoy: the client's own request, rewritten into the tool's request, goes
on through Envoy's router (as Higress sends its tools' requests), and the answer comes back rewritten into the
JSON-RPC response. envoy/envoy.yaml's catch-all route (`/` -> cluster demo) carries the rewritten requests to
the demo upstream, whose `/echo` answers with exactly what it received.
"""

from __future__ import annotations

import json

import httpx
import pytest

import harness
from harness import ACCEPT, LATEST

SERVER = "routed"


def tool(name: str, url: str, **extra) -> dict:
    return {"name": name, "description": name, "requestTemplate": {"url": url, "method": "GET", **extra.pop("request", {})}, **extra}


PLUGIN_CONFIG = {
    "servers": [
        {
            "name": SERVER,  # no upstream.cluster: every tool goes through the request's route
            "upstream": {"timeoutMs": 3000},
            "tools": [
                tool("weather", "/weather", args=[{"name": "city", "required": True, "position": "query"}]),
                tool(
                    "echo",
                    "/echo/items/{id}",
                    args=[
                        {"name": "id", "required": True, "position": "path"},
                        {"name": "note", "position": "body"},
                    ],
                    request={"method": "POST", "headers": [{"key": "X-Tool", "value": "echo"}]},
                ),
                tool("fail", "/error"),
                tool("nothing", "/status/204"),
                tool("slow", "/slow?ms=2000", upstream={"timeoutMs": 300}),
            ],
        },
        {"name": "called", "upstream": {"cluster": "demo"}, "tools": [tool("weather", "/weather", args=[{"name": "city", "required": True, "position": "query"}])]},
    ]
}


@pytest.fixture(scope="module")
def gateway():
    g = harness.start_gateway(PLUGIN_CONFIG, tag="route-dispatch", plugin_format="json")
    yield g
    g.stop()


class Client:
    def __init__(self, g, server: str = SERVER, version: str = LATEST, extra: dict | None = None):
        self.url = g.mcp_url(server)
        self.headers = {"Accept": ACCEPT, "Content-Type": "application/json", **(extra or {})}
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
        r = httpx.post(self.url, json=init, headers=self.headers, timeout=10)
        assert r.status_code == 200, r.text
        self.headers |= {"Mcp-Session-Id": r.headers["mcp-session-id"], "MCP-Protocol-Version": version}

    def post(self, body) -> httpx.Response:
        return httpx.post(self.url, content=json.dumps(body), headers=self.headers, timeout=10)

    def call(self, name: str, args: dict | None = None, id_: int = 1) -> dict:
        r = self.post({"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": name, "arguments": args or {}}})
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), (r.status_code, r.text)
        body = r.json()
        assert body["id"] == id_, body
        return body["result"]


def test_a_tool_call_goes_through_the_route(gateway):
    c = Client(gateway)
    result = c.call("weather", {"city": "Paris"})
    assert not result.get("isError") and json.loads(result["content"][0]["text"])["city"] == "Paris", result
    # the same as dispatch_http_call gives
    assert Client(gateway, "called").call("weather", {"city": "Paris"}) == result


def test_the_upstream_gets_the_tools_request_and_nothing_of_the_clients(gateway):
    c = Client(gateway, extra={"Authorization": "Bearer client-secret", "Cookie": "sid=client", "X-Request-Id": "rid-1"})
    seen = json.loads(c.call("echo", {"id": "a b/c", "note": "hi"})["content"][0]["text"])
    assert (seen["method"], seen["path"]) == ("POST", "/echo/items/a%20b%2Fc")
    assert json.loads(seen["body"]) == {"note": "hi"}
    headers = seen["headers"]
    assert headers["x-tool"] == "echo" and headers["content-type"].startswith("application/json")
    assert headers["x-request-id"] == "rid-1", "tracing headers go on"
    for leaked in ("authorization", "cookie", "mcp-session-id", "mcp-protocol-version", "accept", "x-envoy-upstream-rq-timeout-ms"):
        assert leaked not in headers, (leaked, headers)


def test_upstream_failures_are_tool_errors(gateway):
    c = Client(gateway)
    failed = c.call("fail")
    assert failed["isError"] and "500" in failed["content"][0]["text"], failed
    nothing = c.call("nothing")
    assert not nothing.get("isError"), nothing
    slow = c.call("slow")
    assert slow["isError"] and "504" in slow["content"][0]["text"], slow  # the tool's timeout, through the router


def test_one_request_makes_at_most_one_routed_call(gateway):
    c = Client(gateway, version="2025-03-26")  # batches exist at 2025-03-26
    batch = [
        {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": "weather", "arguments": {"city": city}}}
        for i, city in ((1, "Paris"), (2, "Oslo"))
    ]
    r = c.post(batch)
    assert r.status_code == 200, r.text
    by_id = {m["id"]: m["result"] for m in r.json()}
    assert not by_id[1].get("isError") and "Paris" in by_id[1]["content"][0]["text"]
    assert by_id[2]["isError"] and "one such call" in by_id[2]["content"][0]["text"], by_id[2]



def test_route_dispatch_in_the_higress_test_host():
    """The Higress build in the test host for Higress's ABI (two workers; Higress's pause semantics): the same
    rewrite, the route chosen again from the rewritten request, the answer held and rewritten, a body-less
    answer replaced by a local reply."""
    from wasm_host import Plugin, Replica
    from wasm_host.testing import running

    run_dir = harness.new_run_dir("route-dispatch-higress")
    with harness.DemoUpstream(log_dir=run_dir) as upstream:
        replica = Replica(
            harness.higress_wasm_path(),
            Plugin(json.dumps(PLUGIN_CONFIG).encode()),
            clusters={"demo": ("127.0.0.1", upstream.port)},
            route_cluster="demo",
            workers=2,
            name="route",
            log_path=run_dir / "replica.log",
        )
        with running(replica):
            url = f"{replica.url}/mcp-servers/{SERVER}"
            headers = {"Accept": ACCEPT, "Content-Type": "application/json", "Authorization": "Bearer client"}
            init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                    "params": {"protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
            r = harness.fresh_connection_post(url, init, headers)
            assert r.status_code == 200, r.text
            headers |= {"Mcp-Session-Id": r.headers["mcp-session-id"], "MCP-Protocol-Version": LATEST}

            def call(name: str, args: dict) -> dict:
                body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": args}}
                r = harness.fresh_connection_post(url, body, headers)
                assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text
                assert "result" in r.json(), r.text
                return r.json()["result"]

            weather = call("weather", {"city": "Oslo"})
            assert json.loads(weather["content"][0]["text"])["city"] == "Oslo", weather
            seen = json.loads(call("echo", {"id": "7", "note": "n"})["content"][0]["text"])
            assert (seen["method"], seen["path"], json.loads(seen["body"])) == ("POST", "/echo/items/7", {"note": "n"})
            assert "authorization" not in seen["headers"] and "mcp-session-id" not in seen["headers"]
            assert not call("nothing", {}).get("isError")
            assert call("fail", {})["isError"]
            assert not replica.crashes, replica.crashes
