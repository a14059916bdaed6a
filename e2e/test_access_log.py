"""What a tool call leaves for Envoy's access log: the properties Higress's plugin sets, `mcp_server_name` and
`mcp_tool_name` (Envoy keeps them as filter state `wasm.<name>`), in real Envoy with an access log that
prints them."""

from __future__ import annotations

import time

import harness
from harness import RawMcp

FORMAT = "%REQ(:PATH)% server=%FILTER_STATE(wasm.mcp_server_name:PLAIN)% tool=%FILTER_STATE(wasm.mcp_tool_name:PLAIN)%\n"


def test_tool_calls_name_their_server_and_tool_in_the_access_log(e2e_config):
    run_dir = harness.new_run_dir("access-log")
    log_path = run_dir / "access.log"
    base = harness.with_access_log(log_path, FORMAT)
    g = harness.start_gateway(e2e_config, tag="access-log", envoy_base=base, run_dir=run_dir)
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
    assert "/mcp-servers/demo server=demo tool=get_user" in lines, lines
    assert lines.count("/mcp-servers/demo server=- tool=-") >= 2, lines  # initialize and tools/list: none
