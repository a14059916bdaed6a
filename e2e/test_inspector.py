"""The MCP Inspector CLI (@modelcontextprotocol/inspector-cli, Node 22) against the gateway."""

from __future__ import annotations

import json

from node_tools import run_inspector


def _json_out(proc) -> dict:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"not JSON: {proc.stdout!r}\nstderr: {proc.stderr}") from None


def test_inspector_lists_tools(gw):
    out = _json_out(run_inspector(gw.mcp_url("conformance"), "--method", "tools/list"))
    assert sorted(t["name"] for t in out["tools"]) == ["test_error_handling", "test_simple_text"]
    for t in out["tools"]:
        assert t["description"] and t["inputSchema"]["type"] == "object"


def test_inspector_lists_first_page(gw, demo_tools):
    out = _json_out(run_inspector(gw.mcp_url("demo"), "--method", "tools/list"))
    names = [t["name"] for t in out["tools"]]
    assert len(names) == 5 and set(names) <= set(demo_tools)
    assert out.get("nextCursor")


def test_inspector_calls_tool(gw):
    out = _json_out(
        run_inspector(
            gw.mcp_url("demo"), "--method", "tools/call", "--tool-name", "get_weather",
            "--tool-arg", "city=Paris", "units=metric",
            "--header", "Authorization: Bearer inspector-token",
        )
    )
    assert out.get("isError") in (None, False), out
    assert out["content"][0] == {"type": "text", "text": "It is 16 degrees (metric) in Paris."}


def test_inspector_calls_tool_with_typed_args(gw):
    out = _json_out(
        run_inspector(
            gw.mcp_url("demo"), "--method", "tools/call", "--tool-name", "typed_args",
            "--tool-arg", "count=5", "enabled=false", "level=high",
        )
    )
    assert json.loads(out["content"][0]["text"]) == {"count": 5, "enabled": False, "level": "high"}


def test_inspector_tool_error(gw):
    out = _json_out(
        run_inspector(gw.mcp_url("conformance"), "--method", "tools/call", "--tool-name", "test_error_handling")
    )
    assert out.get("isError") is True, out
    assert out["content"][0]["text"] == "This tool intentionally returns an error for testing"
