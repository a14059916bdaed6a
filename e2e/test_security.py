"""Security schemes through real Envoy: what credential reaches the upstream for what a client presents.

The demo upstream's `/echo` answers with exactly the request it received (headers, query), so each test
reads what arrived there. Our shape on the Envoy build, for tools sent with `dispatch_http_call` and
through the request's own route; Higress's shape (fields Higress ignores among it) on the build with
Higress's template dialect. Also: `x-higress-mcpserver-config` is refused unless `trustConfigHeader: true`, then
replaces the server's config for that request, and never reaches an upstream.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest

import harness
from harness import ACCEPT, LATEST

SCHEMES = [
    {"id": "client", "type": "http", "scheme": "bearer"},
    {"id": "key", "type": "apiKey", "in": "header", "name": "X-Api-Key", "defaultCredential": "operator-key"},
    {"id": "qkey", "type": "apiKey", "in": "query", "name": "key"},
]


def echo_tool(name: str, path: str, **extra) -> dict:
    return {"name": name, "description": name, "requestTemplate": {"url": f"/echo/{path}", "method": "GET",
                                                                  **extra.pop("request", {})}, **extra}


def tools() -> list[dict]:
    return [
        echo_tool("passes", "passes", security={"id": "client", "passthrough": True}),
        echo_tool("reads", "reads", security={"id": "client"}),
        echo_tool("query", "query", security={"id": "qkey", "passthrough": True}),
    ]


PLUGIN_CONFIG = {
    "servers": [
        {"name": "called", "upstream": {"cluster": "demo", "timeoutMs": 5000}, "securitySchemes": SCHEMES,
         "defaultUpstreamSecurity": {"id": "key"}, "tools": tools()},
        # No cluster: the client's own request is rewritten and goes on through Envoy's route to `demo`.
        {"name": "routed", "upstream": {"timeoutMs": 5000}, "securitySchemes": SCHEMES,
         "defaultUpstreamSecurity": {"id": "key"}, "tools": tools()},
        {"name": "forwarding", "upstream": {"cluster": "demo"}, "passthroughAuthHeader": True,
         "tools": [echo_tool("plain", "plain")]},
    ]
}

# Higress's shape, as a Higress user has it: fields Higress ignores (`format`, `mystery`), its defaults.
HIGRESS_CONFIG = {
    "server": {
        "name": "higress",
        "mystery": "ignored by Higress",
        "securitySchemes": SCHEMES,
        "defaultDownstreamSecurity": {"id": "client", "passthrough": True},
        "defaultUpstreamSecurity": {"id": "key"},
    },
    "tools": [{"name": "echo", "description": "echo", "args": [{"name": "q", "format": "free text", "position": "query"}],
               "requestTemplate": {"url": "http://demo.local/echo/higress", "method": "GET"}}],
}


@pytest.fixture(scope="module")
def gateway():
    g = harness.start_gateway(PLUGIN_CONFIG, tag="security", plugin_format="json")
    yield g
    g.stop()


def call(g, server: str, tool: str, args: dict | None = None, headers: dict | None = None, query: str = "") -> dict:
    """A stateless-era call (no session needed: Higress's relayed form, `?sessionId=`), returning what the
    upstream received."""
    h = {"Accept": ACCEPT, "Content-Type": "application/json", "MCP-Protocol-Version": "2025-06-18", **(headers or {})}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": args or {}}}
    r = httpx.post(f"{g.mcp_url(server)}?sessionId=e2e{query}", content=json.dumps(body), headers=h, timeout=10)
    assert r.status_code == 200, (r.status_code, r.text)
    result = r.json()["result"]
    assert not result.get("isError"), result
    return json.loads(result["content"][0]["text"])


@pytest.mark.parametrize("server", ["called", "routed"])
def test_the_clients_credential_goes_upstream_only_with_passthrough(gateway, server):
    bearer = {"Authorization": "Bearer client-token", "Cookie": "session=c", "X-Api-Key": "client-sent-key"}
    seen = call(gateway, server, "passes", headers=bearer)
    assert seen["headers"]["x-api-key"] == "client-token", seen
    assert "authorization" not in seen["headers"] and "cookie" not in seen["headers"], seen
    # No client credential: the configured one (Higress's order).
    assert call(gateway, server, "passes")["headers"]["x-api-key"] == "operator-key"
    # Read, not passed: the operator's credential; the client's never forwarded.
    seen = call(gateway, server, "reads", headers=bearer)
    assert seen["headers"]["x-api-key"] == "operator-key" and "authorization" not in seen["headers"], seen
    # A query credential, decoded, becomes the upstream header; the client's query stays behind.
    seen = call(gateway, server, "query", query="&key=q%2Dtoken")
    assert seen["headers"]["x-api-key"] == "q-token" and seen["query"] == "", seen


def test_passthrough_auth_header_forwards_authorization(gateway):
    seen = call(gateway, "forwarding", "plain", headers={"Authorization": "Basic dTpw", "X-Other": "no"})
    assert seen["headers"]["authorization"] == "Basic dTpw" and "x-other" not in seen["headers"], seen


def test_the_higress_config_header_is_refused(gateway):
    h = {"Accept": ACCEPT, "Content-Type": "application/json", "x-higress-mcpserver-config": "eyJrIjoidiJ9"}
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "passes", "arguments": {}}}
    count = lambda: httpx.get(f"{gateway.upstream.url}/_count", params={"path": "/echo/passes"}).json()["count"]  # noqa: E731
    before = count()
    r = httpx.post(f"{gateway.mcp_url('routed')}?sessionId=e2e", content=json.dumps(body), headers=h, timeout=10)
    assert r.status_code == 400, r.text
    assert "x-higress-mcpserver-config" in r.json()["error"]["message"]
    assert count() == before, "nothing went upstream"


def test_a_trusted_config_header_replaces_the_servers_config_for_its_request():
    """trustConfigHeader: true. Each request with x-higress-mcpserver-config (base64 JSON, as Higress's mcp-session
    filter sets it) is served with that config, through both dispatch modes; without it, the operator's; a header
    that does not decode is refused, saying so, and nothing goes upstream. The header never reaches the upstream."""
    tool = {"name": "whoami", "description": "d", "requestTemplate": {
        "url": "/echo/whoami?k={{ config.key }}", "method": "GET",
        "headers": [{"key": "X-Key", "value": "{{ config.key }}"}]}}
    cfg = {"trustConfigHeader": True, "servers": [
        {"name": "called", "config": {"key": "operator"}, "upstream": {"cluster": "demo"}, "tools": [tool]},
        {"name": "routed", "config": {"key": "operator"}, "upstream": {"timeoutMs": 5000}, "tools": [tool]},
    ]}
    header = lambda config: base64.b64encode(json.dumps(config).encode()).decode()  # noqa: E731
    g = harness.start_gateway(cfg, tag="security-config-header", plugin_format="json")
    try:
        assert "whoever can set that header chooses the config" in g.envoy.log_text(), "the trust is told at load"
        for server in ("called", "routed"):
            assert call(g, server, "whoami")["query"] == "k=operator"
            for user in ("user-1", "user-2", "user-1"):  # the last one from the worker's cache
                seen = call(g, server, "whoami", headers={"x-higress-mcpserver-config": header({"key": user})})
                assert seen["query"] == f"k={user}" and seen["headers"]["x-key"] == user, seen
                assert "x-higress-mcpserver-config" not in seen["headers"], seen
        count = lambda: httpx.get(f"{g.upstream.url}/_count", params={"path": "/echo/whoami"}).json()["count"]  # noqa: E731
        before = count()
        h = {"Accept": ACCEPT, "Content-Type": "application/json", "x-higress-mcpserver-config": "%%%"}
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}
        r = httpx.post(f"{g.mcp_url('called')}?sessionId=e2e", content=json.dumps(body), headers=h, timeout=10)
        assert r.status_code == 400 and "not base64" in r.json()["error"]["message"], r.text
        assert count() == before, "nothing went upstream"
        assert harness.crash_lines(g.envoy.log_text()) == []
    finally:
        g.stop()


def test_a_higress_shape_config_with_ignored_fields_and_its_security():
    g = harness.start_gateway(HIGRESS_CONFIG, tag="security-higress", plugin_format="yaml", wasm=harness.go_wasm_path())
    try:
        seen = call(g, "higress", "echo", {"q": "x"}, headers={"Authorization": "Bearer from-client"})
        assert seen["headers"]["x-api-key"] == "from-client" and "authorization" not in seen["headers"], seen
        assert seen["path"].startswith("/echo/higress"), seen
        log = g.envoy.log_text()
        for field in ("'mystery'", "'args 'q'.format'"):
            assert f"mcp-gateway: server 'higress': " in log and field in log, (field, harness.tail(g.envoy.log_path, 40))
        assert "operator-key" not in log and "from-client" not in log, "credentials never reach the log"
    finally:
        g.stop()
