"""The stateless revision 2026-07-28 through real Envoy, beside the handshake era: the Python SDK in its
modern modes (`auto` discovers, then speaks 2026-07-28; `2026-07-28` adopts it directly) and raw requests
for the header rules. The conformance suite's 2026-07-28 set (test_conformance.py) checks the same wire
scenario by scenario."""

from __future__ import annotations

import httpx
import pytest

from harness import ACCEPT, list_all_tools, mcp_client, run_async

SERVER = "demo"
REVISION = "2026-07-28"


def _stateless(method: str, params: dict | None = None, **headers: str) -> tuple[dict, dict]:
    params = dict(params or {})
    params["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": REVISION,
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    h = {"Accept": ACCEPT, "Content-Type": "application/json", "MCP-Protocol-Version": REVISION, "Mcp-Method": method}
    if "name" in params:
        h["Mcp-Name"] = params["name"]
    h.update({k.replace("_", "-"): v for k, v in headers.items()})
    return {"jsonrpc": "2.0", "id": 9, "method": method, "params": params}, h


@pytest.mark.parametrize("mode", ["auto", REVISION])
def test_python_sdk_speaks_2026_07_28(gw, demo_tools, mode):
    async def go():
        async with mcp_client(gw.mcp_url(SERVER), mode=mode) as client:
            tools, _ = await list_all_tools(client)
            weather = await client.call_tool("get_weather", {"city": "Oslo"})
            return [t.name for t in tools], weather, client.protocol_version

    names, weather, negotiated = run_async(go)
    assert negotiated == REVISION, f"the SDK fell back to {negotiated}"
    assert sorted(names) == sorted(demo_tools)
    assert not weather.is_error and weather.content[0].text.startswith("It is "), weather


def test_no_session_and_the_result_says_its_type(gw):
    body, headers = _stateless("tools/call", {"name": "template_only", "arguments": {"name": "S"}})
    r = httpx.post(gw.mcp_url(SERVER), json=body, headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert "mcp-session-id" not in r.headers
    assert r.json()["result"] == {"content": [{"type": "text", "text": "Hello, S!"}], "isError": False, "resultType": "complete"}
    body, headers = _stateless("server/discover")
    result = httpx.post(gw.mcp_url(SERVER), json=body, headers=headers, timeout=10).json()["result"]
    assert REVISION in result["supportedVersions"] and result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == SERVER
    assert (result["ttlMs"], result["cacheScope"]) == (60000, "private")


@pytest.mark.parametrize(
    ("method", "params", "headers", "status", "code"),
    [
        ("tools/call", {"name": "template_only"}, {"Mcp-Name": "get_weather"}, 400, -32020),
        ("tools/list", {}, {"Mcp-Method": "tools/call"}, 400, -32020),
        ("tools/list", {}, {"MCP-Protocol-Version": "2025-11-25"}, 400, -32020),
        ("ping", {}, {}, 404, -32601),
        ("initialize", {}, {}, 404, -32601),
        ("subscriptions/listen", {}, {}, 404, -32601),
    ],
)
def test_header_rules_and_removed_methods(gw, method, params, headers, status, code):
    body, h = _stateless(method, params)
    h.update(headers)
    r = httpx.post(gw.mcp_url(SERVER), json=body, headers=h, timeout=10)
    assert (r.status_code, r.json()["error"]["code"], r.json()["id"]) == (status, code, 9), r.text
