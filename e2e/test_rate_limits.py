"""Rate limits on tool calls (`rateLimits`, scope: process) in a real Envoy with two workers
(--concurrency 2): one token bucket per limit in the process's shared data, taken with compare-and-swap
by whichever worker serves the call.

- 20 concurrent calls against a limit of 5: exactly 5 go upstream, 15 get HTTP 429 (stateless revision)
  with `Retry-After` and the same figure in the JSON-RPC error's `data.retryAfterSeconds`; both workers
  served some of them.
- The bucket refills at its rate: a call passes again after `Retry-After`, a whole burst after the window.
- In a session (the Python SDK, legacy mode) a refused call is a JSON-RPC error the SDK raises as such.
- A server-level limit counts every tool of the server; tools/list is never counted.
- Vanilla Envoy refuses a limit counted in Redis (scope: cluster, quotas) at load, naming it.

Cross-replica limits and quotas in Redis are in test_higress_redis.py (the Higress build in the test host).
"""

from __future__ import annotations

import concurrent.futures
import copy
import re
import time

import harness
import httpx
import pytest
from harness import ACCEPT, mcp_client, run_async

SERVER = "demo"
OTHER = "limited"  # 3 calls an hour for the whole server
SDK = "sdk"  # 2 calls an hour for the whole server
REVISION = "2026-07-28"
LIMIT = 5  # get_weather: 5 an hour, so no token comes back during the test
REFILL = {"requests": 2, "window": "4s"}  # get_status: a token every 2 s


def _config(e2e_config: dict) -> dict:
    cfg = copy.deepcopy(e2e_config)
    demo = next(s for s in cfg["servers"] if s["name"] == SERVER)
    for tool in demo["tools"]:
        if tool["name"] == "get_weather":
            tool["rateLimits"] = [{"requests": LIMIT, "window": "1h"}]
        if tool["name"] == "get_status":
            tool["rateLimits"] = [REFILL]
    for name, requests in [(OTHER, 3), (SDK, 2)]:
        other = copy.deepcopy(demo)
        other["name"] = name
        other["rateLimits"] = [{"requests": requests, "window": "1h"}]
        for tool in other["tools"]:
            tool.pop("rateLimits", None)
        cfg["servers"].append(other)
    return cfg


@pytest.fixture(scope="module")
def lgw(e2e_config):
    with harness.gateway(_config(e2e_config), tag="rate-limits", concurrency=2) as g:
        yield g


def _call(g, tool: str, args: dict, server: str = SERVER, rid: int = 1) -> httpx.Response:
    """A stateless tools/call on a new connection (so any worker may take it)."""
    return harness.stateless_call(g.mcp_url(server), tool, args, rid, REVISION)


def _weather(g, rid: int = 1) -> httpx.Response:
    return _call(g, "get_weather", {"city": "Oslo"}, rid=rid)


def _assert_ok(r: httpx.Response) -> None:
    assert r.status_code == 200, (r.status_code, r.text)
    result = r.json()["result"]
    assert not result.get("isError") and result["content"][0]["text"].startswith("It is "), result


def _worker_connections(envoy: harness.Envoy) -> dict[str, int]:
    stats = envoy.stats(rf"listener\.127\.0\.0\.1_{envoy.ports.mcp}\.worker_\d+\.downstream_cx_total")
    return {re.search(r"worker_(\d+)", k).group(1): v for k, v in stats.items()}


def test_20_concurrent_calls_against_a_limit_of_5_across_both_workers(lgw):
    before = _worker_connections(lgw.envoy)
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda i: (i, _weather(lgw, rid=i)), range(20)))
    passed = [i for i, r in responses if r.status_code == 200]
    refused = [(i, r) for i, r in responses if r.status_code != 200]
    assert len(passed) == LIMIT, [(i, r.status_code, r.text[:120]) for i, r in responses]
    for i in passed:
        _assert_ok(dict(responses)[i])
    retries = {harness.assert_limited(r, i) for i, r in refused}
    # A token every 12 minutes; the first refusals came less than a few seconds after the burst.
    assert all(700 <= r <= 720 for r in retries), retries
    used = {w: n - before.get(w, 0) for w, n in _worker_connections(lgw.envoy).items()}
    assert len(used) == 2 and all(n > 0 for n in used.values()), f"both workers must have served calls: {used}"


def _status(g, rid: int) -> httpx.Response:
    return _call(g, "get_status", {"code": 200}, rid=rid)


def test_the_bucket_refills_at_its_rate_and_after_the_window(lgw):
    """2 calls per 4 s: a burst of 2, then a token every 2 s; a whole window refills the burst."""
    for i in range(2):
        assert _status(lgw, i).status_code == 200
    retry = harness.assert_limited(_status(lgw, 2), 2)
    assert retry == 2, retry
    time.sleep(retry)
    assert _status(lgw, 3).status_code == 200  # one token came back
    harness.assert_limited(_status(lgw, 4), 4)
    time.sleep(4.2)  # the whole window: the whole burst again
    for i in range(2):
        assert _status(lgw, 10 + i).status_code == 200
    harness.assert_limited(_status(lgw, 12), 12)


def test_tools_list_and_other_tools_are_not_counted(lgw):
    """get_weather is spent for the hour (after the burst above, or spent here)."""
    for i in range(LIMIT + 1):
        _weather(lgw, rid=i)
    harness.assert_limited(_weather(lgw, rid=50), 50)
    # Another tool of the server has no limit; tools/list is never limited.
    for i in range(10):
        r = _call(lgw, "get_user", {"id": 1}, rid=i)
        assert r.status_code == 200 and not r.json()["result"].get("isError"), r.text
    with httpx.Client(timeout=10) as c:
        for i in range(10):
            body = {"jsonrpc": "2.0", "id": i, "method": "tools/list", "params": {"_meta": {
                "io.modelcontextprotocol/protocolVersion": REVISION, "io.modelcontextprotocol/clientCapabilities": {}}}}
            headers = {"Accept": ACCEPT, "Content-Type": "application/json", "MCP-Protocol-Version": REVISION,
                       "Mcp-Method": "tools/list"}
            r = c.post(lgw.mcp_url(SERVER), json=body, headers=headers)
            assert r.status_code == 200 and r.json()["result"]["tools"], r.text


def test_a_server_limit_counts_every_tool_of_the_server(lgw):
    """3 calls an hour for the whole server: three different tools spend them, a fourth tool is refused."""
    calls = [("get_weather", {"city": "Oslo"}), ("get_user", {"id": 1}), ("get_status", {"code": 200})]
    statuses = [_call(lgw, tool, args, server=OTHER, rid=i).status_code for i, (tool, args) in enumerate(calls)]
    assert statuses == [200, 200, 200], statuses
    r = _call(lgw, "get_user", {"id": 1}, server=OTHER, rid=4)
    retry = harness.assert_limited(r, 4)
    assert 1190 <= retry <= 1200, f"a token every 20 min: {retry}"
    message = r.json()["error"]["message"]
    assert f"server '{OTHER}' allows 3 calls per 1h (rateLimits[0])" in message, message


def test_the_python_sdk_in_a_session_gets_the_refusal_as_a_json_rpc_error(lgw):
    """Legacy mode (a session): the refused call is answered in a 200 with the JSON-RPC error, which the
    SDK raises as MCPError with the message and data; the session goes on."""
    from mcp.shared.exceptions import MCPError

    async def go():
        async with mcp_client(lgw.mcp_url(SDK), mode="legacy") as client:
            ok = [await client.call_tool("get_weather", {"city": "Oslo"}) for _ in range(2)]
            try:
                await client.call_tool("get_weather", {"city": "Oslo"})
            except MCPError as exc:
                refused = exc.error
            else:
                refused = None
            listed = await client.list_tools()
            return ok, refused, listed

    ok, refused, listed = run_async(go)
    assert all(not r.is_error for r in ok), ok
    assert refused is not None, "the sixth call was not refused"
    assert refused.code == -32000 and "rate limit exceeded" in refused.message, refused
    assert refused.data is not None and 1790 <= refused.data["retryAfterSeconds"] <= 1800, refused
    assert listed.tools, "the session goes on"


def test_vanilla_envoy_refuses_limits_counted_in_redis_at_load(e2e_config):
    cfg = copy.deepcopy(e2e_config)
    cfg.pop("sessionTtlSeconds", None)
    cfg["sessions"] = {"store": "local", "redis": {"cluster": "redis"}}
    demo = next(s for s in cfg["servers"] if s["name"] == SERVER)
    weather = next(t for t in demo["tools"] if t["name"] == "get_weather")
    weather["quotas"] = [{"requests": 100, "period": "day"}]
    name = "envoy-cluster-limit"
    envoy = harness.Envoy(cfg, upstream_port=harness.unused_port(), run_dir=harness.new_run_dir(name), name=name)
    with pytest.raises(harness.HarnessError, match="exited"):
        envoy.start(timeout=30)
    log = envoy.log_text()
    line = next((ln for ln in log.splitlines() if "invalid plugin config" in ln), None)
    assert line is not None, log[-3000:]
    assert "server 'demo' tool 'get_weather' field 'quotas[0]'" in line, line
    assert "mcp_gateway_higress.wasm" in line and "scope: process" in line, line


def test_no_plugin_failure_in_the_log(lgw):
    crashes = harness.crash_lines(lgw.envoy.log_text())
    assert not crashes, crashes


def test_the_python_sdk_at_the_stateless_revision_sees_the_429(lgw):
    """2026-07-28 (no session): the 429's JSON-RPC error reaches the SDK as an MCPError with its data."""
    from mcp.shared.exceptions import MCPError

    async def go():
        async with mcp_client(lgw.mcp_url(SERVER), mode=REVISION) as client:
            for _ in range(LIMIT + 1):  # get_weather is spent for the hour by now, or is here
                try:
                    await client.call_tool("get_weather", {"city": "Oslo"})
                except MCPError as exc:
                    return exc, client.protocol_version
            return None, client.protocol_version

    refused, version = run_async(go)
    assert version == REVISION
    assert refused is not None, "never refused"
    assert refused.error.code == -32000 and "rate limit exceeded" in refused.error.message, refused.error
    assert refused.error.data and refused.error.data["retryAfterSeconds"] >= 1, refused.error
