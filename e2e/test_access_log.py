"""What a tool call leaves for Envoy's access log: the properties Higress's plugin sets, `mcp_server_name` and
`mcp_tool_name` (Envoy keeps them as filter state `wasm.<name>`), in real Envoy with an access log that
prints them."""

from __future__ import annotations

import copy
import time

import harness
from harness import RawMcp

FORMAT = "%REQ(:PATH)% server=%FILTER_STATE(wasm.mcp_server_name:PLAIN)% tool=%FILTER_STATE(wasm.mcp_tool_name:PLAIN)%\n"


def _access_log_of_a_call(config: dict, tag: str) -> list[str]:
    """Runs `initialize`, a `get_user` call and `tools/list` on `demo`; the access log's lines."""
    run_dir = harness.new_run_dir(tag)
    log_path = run_dir / "access.log"
    base = harness.with_access_log(log_path, FORMAT)
    g = harness.start_gateway(config, tag=tag, envoy_base=base, run_dir=run_dir)
    try:
        with RawMcp(g.base_url, g.prefix) as mcp:
            sid, init = mcp.initialize("demo")
            version = init["protocolVersion"]
            r = mcp.post("demo", {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                  "params": {"name": "get_user", "arguments": {"id": 1}}}, session=sid, version=version)
            assert r.status_code == 200 and "result" in r.json(), r.text
            r = mcp.post("demo", {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, session=sid, version=version)
            assert r.status_code == 200
    finally:
        g.stop()  # flushes the access log
    for _ in range(50):
        lines = log_path.read_text().splitlines() if log_path.exists() else []
        if len(lines) >= 3:
            break
        time.sleep(0.1)
    return lines


def test_tool_calls_name_their_server_and_tool_in_the_access_log(e2e_config):
    lines = _access_log_of_a_call(e2e_config, "access-log")
    assert "/mcp-servers/demo server=demo tool=get_user" in lines, lines
    assert lines.count("/mcp-servers/demo server=- tool=-") >= 2, lines  # initialize and tools/list: none


def test_access_log_properties_are_not_set_when_the_operator_turns_them_off(e2e_config):
    # `observability.accessLog: false` saves the five property hostcalls per call of a gateway whose access
    # log does not print them.
    cfg = copy.deepcopy(e2e_config)
    cfg["observability"] = {"accessLog": False}
    lines = _access_log_of_a_call(cfg, "access-log-off")
    assert lines.count("/mcp-servers/demo server=- tool=-") >= 3, lines  # the call's line included
    assert not [line for line in lines if "server=demo" in line or "tool=get_user" in line], lines
