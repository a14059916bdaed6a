"""Which tools a caller sees and may call, through real Envoy: a server's `allowTools` intersected with the
request's `x-envoy-allow-mcp-tools` header (set by an earlier filter, as Higress's plugins do)."""

from __future__ import annotations

import copy

import harness
from harness import RawMcp

HEADER = "x-envoy-allow-mcp-tools"


def tool_names(mcp: RawMcp, server: str, sid: str, version: str, header: str | None) -> list[str]:
    names, cursor = [], None
    while True:
        params = {"cursor": cursor} if cursor else {}
        r = mcp.post(server, {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params},
                     session=sid, version=version, headers={HEADER: header} if header else None)
        result = r.json()["result"]
        names += [t["name"] for t in result["tools"]]
        cursor = result.get("nextCursor")
        if not cursor:
            return names


def call(mcp: RawMcp, server: str, sid: str, version: str, tool: str, args: dict, header: str | None) -> dict:
    r = mcp.post(server, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": args}},
                 session=sid, version=version, headers={HEADER: header} if header else None)
    assert r.status_code == 200, r.text
    return r.json()


def test_allow_tools_and_the_header_intersect(e2e_config):
    config = copy.deepcopy(e2e_config)
    demo = next(s for s in config["servers"] if s["name"] == "demo")
    demo["allowTools"] = ["get_user", "get_weather"]
    g = harness.start_gateway(config, tag="tool-access")
    try:
        with RawMcp(g.base_url, g.prefix) as mcp:
            sid, init = mcp.initialize("demo")
            v = init["protocolVersion"]
            assert sorted(tool_names(mcp, "demo", sid, v, None)) == ["get_user", "get_weather"]
            assert tool_names(mcp, "demo", sid, v, "get_user, create_order") == ["get_user"]
            assert tool_names(mcp, "demo", sid, v, "create_order") == []
            refused = call(mcp, "demo", sid, v, "create_order", {"item": "x"}, None)
            assert refused["error"] == {"code": -32602, "message": "Tool not allowed: create_order"}, refused
            refused = call(mcp, "demo", sid, v, "get_weather", {"city": "Paris"}, "get_user")
            assert refused["error"]["message"] == "Tool not allowed: get_weather"
            ok = call(mcp, "demo", sid, v, "get_user", {"id": 1}, "get_user")
            assert "Ada Lovelace" in ok["result"]["content"][0]["text"], ok
    finally:
        g.stop()
