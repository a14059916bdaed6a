"""Sessions: shared by all Envoy workers, ended by DELETE, expired after the idle TTL.

The expiry tests run a second Envoy (`alt_gw`) whose plugin configuration is plugin-config/e2e.yaml
with sessionTtlSeconds 2, passed as JSON rather than YAML, with prefix /mcp and
allowedOrigins ["*"] (so it also covers those options).
"""

from __future__ import annotations

import copy
import json
import re
import time

import httpx
import pytest

import harness
from harness import ACCEPT, RawMcp, fresh_connection_post

SERVER = "demo"
TTL = 2


def _headers(sid: str | None = None) -> dict[str, str]:
    h = {"Accept": ACCEPT, "Content-Type": "application/json"}
    if sid:
        h["Mcp-Session-Id"] = sid
    return h


def _worker_connections(gw) -> dict[str, int]:
    """Connections accepted per worker on the MCP listener (admin /stats)."""
    port = gw.envoy.ports.mcp
    stats = gw.envoy.stats(rf"listener\.127\.0\.0\.1_{port}\.worker_\d+\.downstream_cx_total")
    return {re.search(r"worker_(\d+)", k).group(1): v for k, v in stats.items()}


def test_session_shared_across_workers(gw, raw: RawMcp):
    """A session made on one worker is valid on every worker (fresh connection per request)."""
    sid, _ = raw.initialize(SERVER)
    url = gw.mcp_url(SERVER)
    before = _worker_connections(gw)
    assert len(before) == 2, f"expected 2 workers (--concurrency 2): {before}"
    statuses = []
    for i in range(200):
        body = {"jsonrpc": "2.0", "id": i, "method": "tools/call",
                "params": {"name": "template_only", "arguments": {"name": f"w{i}"}}}
        r = fresh_connection_post(url, body, _headers(sid))
        statuses.append(r.status_code)
        assert r.status_code == 200, f"request {i}: HTTP {r.status_code} {r.text!r}"
        assert r.json()["result"]["content"][0]["text"] == f"Hello, w{i}!"
        if i >= 20:
            after = _worker_connections(gw)
            if all(after[w] - before.get(w, 0) >= 3 for w in after):
                break
    after = _worker_connections(gw)
    used = {w: after[w] - before.get(w, 0) for w in after}
    assert all(n >= 3 for n in used.values()), f"not every worker got requests: {used}"


def test_sessions_created_on_every_worker_are_valid_everywhere(gw):
    url = gw.mcp_url(SERVER)
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "w", "version": "1"}}}
    sids = []
    for _ in range(30):
        r = fresh_connection_post(url, init, _headers())
        assert r.status_code == 200, r.text
        sids.append(r.headers["mcp-session-id"])
    assert len(set(sids)) == len(sids)
    for i, sid in enumerate(sids):
        for _ in range(3):
            r = fresh_connection_post(url, {"jsonrpc": "2.0", "id": i, "method": "ping"}, _headers(sid))
            assert r.status_code == 200, f"session {i}: HTTP {r.status_code} {r.text!r}"


def test_delete_is_seen_by_every_worker(gw, raw: RawMcp):
    sid, _ = raw.initialize(SERVER)
    r = raw.delete(SERVER, sid)
    assert r.status_code == 204, r.text
    url = gw.mcp_url(SERVER)
    for i in range(20):
        r = fresh_connection_post(url, {"jsonrpc": "2.0", "id": i, "method": "ping"}, _headers(sid))
        assert r.status_code == 404, f"request {i} after DELETE: HTTP {r.status_code} {r.text!r}"


def test_many_sessions(gw, raw: RawMcp):
    sids = [raw.initialize(SERVER, notify=False)[0] for _ in range(150)]
    for sid in sids[::10]:
        assert raw.post(SERVER, {"jsonrpc": "2.0", "id": 1, "method": "ping"}, session=sid).status_code == 200


# --- expiry (second Envoy with a short TTL) ----------------------------------------------------


@pytest.fixture(scope="module")
def alt_gw(gw, e2e_config):
    cfg = copy.deepcopy(e2e_config)
    cfg["sessionTtlSeconds"] = TTL
    cfg["prefix"] = "/mcp"
    cfg["allowedOrigins"] = ["*"]
    cfg["maxResponseBytes"] = 2000
    try:
        g = harness.start_gateway(cfg, tag="ttl", upstream=gw.upstream, plugin_format="json", run_dir=gw.run_dir)
    except harness.HarnessError as exc:
        pytest.fail(f"could not start the short-TTL gateway: {exc}", pytrace=False)
    yield g
    g.stop()


@pytest.fixture
def alt_raw(alt_gw):
    with RawMcp(alt_gw.base_url, alt_gw.prefix) as r:
        yield r


def test_session_expires_after_idle_ttl(alt_raw: RawMcp):
    sid, _ = alt_raw.initialize(SERVER)
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    # Activity keeps it alive well past the TTL ...
    for _ in range(4):
        time.sleep(TTL * 0.5)
        r = alt_raw.post(SERVER, ping, session=sid)
        assert r.status_code == 200, f"session expired although in use: HTTP {r.status_code} {r.text!r}"
    # ... and idleness ends it.
    time.sleep(TTL + 1.5)
    r = alt_raw.post(SERVER, ping, session=sid)
    assert r.status_code == 404, f"idle session still valid after {TTL + 1.5}s: HTTP {r.status_code} {r.text!r}"
    assert r.json()["error"]["code"], r.text


def test_expired_session_is_gone_on_every_worker(alt_gw, alt_raw: RawMcp):
    sid, _ = alt_raw.initialize(SERVER)
    time.sleep(TTL + 1.5)
    url = alt_gw.mcp_url(SERVER)
    for i in range(10):
        r = fresh_connection_post(url, {"jsonrpc": "2.0", "id": i, "method": "ping"}, _headers(sid))
        assert r.status_code == 404, f"request {i}: HTTP {r.status_code} {r.text!r}"


def test_custom_prefix(alt_gw, alt_raw: RawMcp):
    sid, result = alt_raw.initialize(SERVER)
    assert result["serverInfo"]["name"] == "demo"
    # The default prefix is now an ordinary path, proxied to the upstream.
    r = httpx.post(f"{alt_gw.base_url}/mcp-servers/{SERVER}", content=b"{}",
                   headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 404 and "no route" in r.json()["error"], r.text


def test_wildcard_origin(alt_raw: RawMcp):
    r = alt_raw.initialize_raw(SERVER, headers={"Origin": "http://evil.example.com"})
    assert r.status_code == 200, r.text


def test_oversized_upstream_answers_are_refused(gw, alt_raw: RawMcp):
    """maxResponseBytes (2000 on this gateway, 8 MiB by default) bounds what is read into the VM."""
    sid, _ = alt_raw.initialize(SERVER)
    small = alt_raw.rpc(SERVER, sid, "tools/call", {"name": "big_answer", "arguments": {"bytes": 2000}})
    assert small["result"]["isError"] is False and len(small["result"]["content"][0]["text"]) == 2000
    big = alt_raw.rpc(SERVER, sid, "tools/call", {"name": "big_answer", "arguments": {"bytes": 2001}})
    assert big["result"]["isError"] is True
    assert "maxResponseBytes" in big["result"]["content"][0]["text"]
    # The default limit lets a 1 MB answer through, and the gateway stays healthy.
    with RawMcp(gw.base_url) as raw:
        sid2, _ = raw.initialize(SERVER)
        ok = raw.rpc(SERVER, sid2, "tools/call", {"name": "big_answer", "arguments": {"bytes": 1_000_000}})
    assert ok["result"]["isError"] is False and len(ok["result"]["content"][0]["text"]) == 1_000_000


def test_json_plugin_config_tools(alt_raw: RawMcp):
    sid, _ = alt_raw.initialize(SERVER)
    msg = alt_raw.rpc(SERVER, sid, "tools/call", {"name": "template_only", "arguments": {"name": "json"}})
    assert msg["result"]["content"][0]["text"] == "Hello, json!"
    assert json.loads(json.dumps(msg))  # well-formed
