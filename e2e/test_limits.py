"""Limits that keep one client from hurting the others (issue: "hold up under abuse"), in a real Envoy.

- maxCallsPerRequest: a batch of 2,000 tools/call starts 64 upstream calls; the rest get a JSON-RPC error
  naming the limit, and other clients' calls go on meanwhile (before: Envoy's circuit breakers failed
  about 2,000 of them, and other clients' calls, with a misleading "is the cluster defined?").
- maxCallsInFlight: past the worker's limit a call is an error result naming it; calls of clients that went
  away no longer count.
- requestBodyTimeoutMs: a client that sends headers and no (or part of a) body gets 408; the hint about
  `allow_on_headers_stop_iteration` only when Envoy did receive the body and held it back.
- sessions.maxNewPerSecond / sessions.maxSessions: 429 with Retry-After / 503, each naming its limit.
"""

from __future__ import annotations

import concurrent.futures
import copy
import json
import socket
import time

import httpx
import pytest

import harness
from harness import ACCEPT, RawMcp, fresh_connection_post

SERVER = "demo"
LIMIT_EXCEEDED = -32000
HEADERS = {"Accept": ACCEPT, "Content-Type": "application/json"}
BODY_TIMEOUT_MS = 2000


def _call(i: int, tool: str, args: dict) -> dict:
    return {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": tool, "arguments": args}}


def _weather_ok(result: dict) -> bool:
    return not result.get("isError") and result["content"][0]["text"].startswith("It is ")


def test_a_batch_starts_at_most_max_calls_per_request(gw):
    """2,000 tools/call in one batch (within the e2e config's 256 KiB body limit): 64 go upstream, 1,936 are
    refused by name; a second client is served throughout."""
    with RawMcp(gw.base_url, timeout=60) as raw, RawMcp(gw.base_url, timeout=30) as other:
        sid, _ = raw.initialize(SERVER, version="2025-03-26")
        other_sid, _ = other.initialize(SERVER)
        batch = json.dumps([_call(i, "get_weather", {"city": "c"}) for i in range(2000)], separators=(",", ":"))

        def meanwhile() -> list[bool]:
            return [
                _weather_ok(other.rpc(SERVER, other_sid, "tools/call", _call(0, "get_weather", {"city": "Oslo"})["params"])["result"])
                for _ in range(20)
            ]

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            side = pool.submit(meanwhile)
            r = raw.post(SERVER, content=batch, session=sid)
            others = side.result(timeout=60)
    assert r.status_code == 200, r.text[:300]
    replies = r.json()
    assert [m["id"] for m in replies] == list(range(2000)), "every call answered, in order"
    served = [m for m in replies if "result" in m]
    refused = [m for m in replies if "error" in m]
    assert len(served) == 64 and all(_weather_ok(m["result"]) for m in served), served[:2]
    assert [m["id"] for m in served] == list(range(64)), "the first 64 are the ones served"
    assert len(refused) == 1936
    assert all(m["error"]["code"] == LIMIT_EXCEEDED and "maxCallsPerRequest" in m["error"]["message"] for m in refused)
    assert all(others), f"another client's calls failed during the batch: {others}"


@pytest.fixture(scope="module")
def tight_gw(gw, e2e_config):
    """One worker with small limits: 3 calls in flight, a 2 s body timeout, 5 new sessions per second and
    8 live sessions per server."""
    cfg = copy.deepcopy(e2e_config)
    cfg.pop("sessionTtlSeconds", None)
    cfg.update({"maxCallsInFlight": 3, "requestBodyTimeoutMs": BODY_TIMEOUT_MS})
    cfg["sessions"] = {"ttlSeconds": 1800, "maxNewPerSecond": 5, "maxSessions": 8}
    try:
        g = harness.start_gateway(cfg, tag="limits", upstream=gw.upstream, concurrency=1, run_dir=gw.run_dir)
    except harness.HarnessError as exc:
        pytest.fail(f"could not start the gateway with small limits: {exc}", pytrace=False)
    yield g
    g.stop()


def _slow_call(url: str, sid: str, ms: int, timeout: float = 10) -> httpx.Response:
    body = _call(1, "slow_call", {"ms": ms})
    return fresh_connection_post(url, body, {**HEADERS, "Mcp-Session-Id": sid}, timeout=timeout)


def test_calls_past_the_workers_limit_are_refused_by_name(tight_gw):
    url = tight_gw.mcp_url(SERVER)
    with RawMcp(tight_gw.base_url) as raw:
        sid, _ = raw.initialize(SERVER)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: _slow_call(url, sid, 400).json()["result"], range(6)))
    served = [a for a in answers if not a["isError"]]
    refused = [a for a in answers if a["isError"]]
    assert len(served) <= 3, answers
    assert refused and all("maxCallsInFlight" in a["content"][0]["text"] for a in refused), answers
    # Clients that give up: their calls stop counting when Envoy ends their streams.
    for _ in range(3):
        with pytest.raises(httpx.TimeoutException):
            _slow_call(url, sid, 400, timeout=0.1)
    time.sleep(0.6)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        again = list(pool.map(lambda _: _slow_call(url, sid, 200).json()["result"], range(3)))
    assert not any(a["isError"] for a in again), again


def _raw_post(port: int, body_part: bytes, content_length: int, wait: float) -> tuple[int, bytes, float]:
    """Sends a POST head declaring `content_length`, then `body_part`, then waits; (status, body, seconds)."""
    head = (
        f"POST /mcp-servers/{SERVER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Accept: {ACCEPT}\r\nContent-Length: {content_length}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(head + body_part)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    elapsed = time.monotonic() - started
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0
    return status, data.split(b"\r\n\r\n", 1)[-1], elapsed


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


@pytest.mark.parametrize("sent", [b"", b'{"jsonrpc": "2.0", '], ids=["no-body", "part-of-the-body"])
def test_a_slow_client_gets_408(tight_gw, sent):
    status, body, elapsed = _raw_post(tight_gw.envoy.ports.mcp, sent, 1000, wait=15)
    assert status == 408, (status, body)
    error = json.loads(body)["error"]
    assert "requestBodyTimeoutMs" in error["message"] and "allow_on_headers" not in error["message"], error
    # The tick that notices runs once a second.
    assert BODY_TIMEOUT_MS / 1000 <= elapsed < BODY_TIMEOUT_MS / 1000 + 3, elapsed
    assert "allow_on_headers_stop_iteration" not in tight_gw.envoy.log_text()


def test_the_misconfiguration_hint_needs_evidence(gw, e2e_config):
    """Without allow_on_headers_stop_iteration Envoy receives the body and never hands it to the plugin:
    that (Envoy's request.total_size beyond its headers) is what earns the 500 naming the setting."""
    cfg = copy.deepcopy(e2e_config)
    cfg["requestBodyTimeoutMs"] = BODY_TIMEOUT_MS
    envoy = harness.Envoy(cfg, upstream_port=gw.upstream.port, run_dir=gw.run_dir, name="envoy-no-stop-iteration",
                          concurrency=1, log_level="warning")
    harness.wasm_filter_config(envoy.config)["allow_on_headers_stop_iteration"] = False
    with envoy:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
        status, answer, elapsed = _raw_post(envoy.ports.mcp, body, len(body), wait=15)
        assert status == 500, (status, answer)
        assert "allow_on_headers_stop_iteration" in json.loads(answer)["error"]["message"]
        assert elapsed < BODY_TIMEOUT_MS / 1000 + 3, elapsed
        assert "allow_on_headers_stop_iteration" in envoy.log_text(), "the operator is told in the log"


def test_new_and_live_sessions_are_limited(tight_gw):
    """Per server: `conformance` has no sessions from the other tests here."""
    url = tight_gw.mcp_url("conformance")
    init = {"jsonrpc": "2.0", "id": 5, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    # Sent at once, so that the burst lands within a second or two however loaded the machine is: sent one
    # after another, 12 requests taking 200 ms each never exceed 5 a second.
    with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
        burst = list(pool.map(lambda _: fresh_connection_post(url, init, HEADERS), range(16)))
    limited = [r for r in burst if r.status_code == 429]
    assert limited, [r.status_code for r in burst]
    for r in limited:
        error = r.json()["error"]
        assert (error["code"], r.json()["id"], r.headers.get("retry-after")) == (LIMIT_EXCEEDED, 5, "1"), r.text
        assert "sessions.maxNewPerSecond" in error["message"], error
    opened = [r.headers["mcp-session-id"] for r in burst if r.status_code == 200]
    # Live sessions: at most 8 on this server, a DELETE frees room.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        r = fresh_connection_post(url, init, HEADERS)
        if r.status_code == 200:
            opened.append(r.headers["mcp-session-id"])
        elif r.status_code == 503:
            break
        else:
            assert r.status_code == 429, r.text
            time.sleep(0.3)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == LIMIT_EXCEEDED and "sessions.maxSessions" in r.json()["error"]["message"]
    assert len(opened) == 8, opened
    with RawMcp(tight_gw.base_url) as raw:
        assert raw.delete("conformance", opened[0]).status_code == 204
    time.sleep(1.1)  # a new second for the rate
    assert fresh_connection_post(url, init, HEADERS).status_code == 200
