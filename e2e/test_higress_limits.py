"""Rate limits and quotas in Redis (`scope: cluster`, `quotas`), in the test host for Higress's ABI.

e2e/wasm_host/ is a TEST HOST, not Higress (see its README): two `Replica`s stand for two Envoy processes
of two worker VMs each, sharing nothing but a real redis-server. Every check of a request's calls is one
`EVAL` of the plugin's Lua script, so what is asserted here is that script, on a real Redis:

- one limit across replicas: 20 concurrent calls over both replicas against a limit of 5, exactly 5 pass;
  429 with Retry-After; the bucket's key and its expiry in Redis;
- the bucket refills at its rate (Redis's clock);
- a daily quota across replicas: its key per UTC day, expiring at midnight; Retry-After until midnight;
- Redis down, or slower than timeoutMs: `onStoreError: allow` lets the call through, `deny` answers 503
  within the timeout; Redis back, counting resumes without restarting anything.
- proxied servers (`type: mcp-proxy`, in front of the Python SDK's stateless MCP server): their `tools/call`s
  counted by the same script before they go on to the backend, across replicas; Redis down, each limit's
  onStoreError.
- SSE backends (`transport: sse`, the SDK's legacy SSE server): a Streamable HTTP client's bridged call is
  counted before the gateway opens the backend's stream for it, an SSE client's POST before it goes on (a
  refusal reaching the client on its stream); one counter for both, across replicas; Redis down, likewise.

Requests are stateless (2026-07-28): no session store is involved, only the limits' Redis.
`make test` always builds the Higress artifact, so a missing one fails every test here (never a skip).
"""

from __future__ import annotations

import concurrent.futures
import copy
import datetime
import time

import harness
import httpx
import pytest
from test_higress_redis import (  # noqa: F401  (fixtures)
    HEADERS,
    TIMEOUT_MS,
    Higress,
    host,
    redis_server,
    run_dir,
    sse_messages,
    timed,
    upstream,
)
from wasm_host.testing import DelayProxy, RedisServer

SERVER = "demo"
REVISION = "2026-07-28"
LIMIT = 5


def _config(e2e_config: dict) -> dict:
    cfg = copy.deepcopy(e2e_config)
    demo = next(s for s in cfg["servers"] if s["name"] == SERVER)
    limits = {
        "get_weather": {"rateLimits": [{"requests": LIMIT, "window": "1h", "scope": "cluster"}]},
        "get_status": {"rateLimits": [{"requests": 2, "window": "4s", "scope": "cluster"}]},
        "get_user": {"quotas": [{"requests": 3, "period": "day"}]},
        "template_only": {"rateLimits": [{"requests": 1000, "window": "1s", "scope": "cluster"}]},  # allow
        "get_text_wrapped": {
            "rateLimits": [{"requests": 1000, "window": "1s", "scope": "cluster", "onStoreError": "deny"}]
        },
    }
    for tool in demo["tools"]:
        tool.update(limits.get(tool["name"], {}))
    return cfg


@pytest.fixture
def limited(request, host, run_dir, upstream, e2e_config):  # noqa: F811
    h = Higress(host, run_dir, upstream, _config(e2e_config), request.node.name)
    try:
        yield h
    finally:
        h.stop()
    assert not h.crashes(), "the plugin crashed in the test host:\n" + "\n".join(h.crashes())


def _call(replica, tool: str, args: dict, rid: int = 1) -> httpx.Response:
    return harness.stateless_call(f"{replica.url}/mcp-servers/{SERVER}", tool, args, rid, REVISION)


def _ok(r: httpx.Response) -> bool:
    return r.status_code == 200 and not r.json()["result"].get("isError")


def test_one_limit_across_replicas_under_concurrent_load(limited, redis_server):  # noqa: F811
    a, b = limited.pair(redis_server.address)
    with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda i: (i, _call((a, b)[i % 2], "get_weather", {"city": "Oslo"}, i)), range(20)))
    passed = [i for i, r in responses if r.status_code == 200]
    assert len(passed) == LIMIT, [(i, r.status_code, r.text[:100]) for i, r in responses]
    assert all(_ok(r) for _, r in responses if r.status_code == 200)
    retries = {harness.assert_limited(r, i) for i, r in responses if r.status_code != 200}
    assert all(700 <= s <= 720 for s in retries), retries  # a token every 12 min
    assert min(a.requests_per_worker + b.requests_per_worker) > 0, "every worker of both replicas served calls"
    key = f"{limited.key_prefix}limit:{SERVER}/get_weather/r5w3600000b5/*"
    level, at = redis_server.command("GET", key).split()
    assert int(level) < 1000 and abs(int(at) / 1000 - time.time()) < 30, (level, at)
    pttl = int(redis_server.command("PTTL", key))
    assert 3_590_000 <= pttl <= 3_601_000, pttl  # forgotten once it would be full again


def test_the_bucket_in_redis_refills_at_its_rate(limited, redis_server):  # noqa: F811
    a, b = limited.pair(redis_server.address)
    assert _ok(_call(a, "get_status", {"code": 200}, 1)) and _ok(_call(b, "get_status", {"code": 200}, 2))
    retry = harness.assert_limited(_call(a, "get_status", {"code": 200}, 3), 3)
    assert retry == 2, retry
    time.sleep(retry)
    assert _ok(_call(b, "get_status", {"code": 200}, 4))
    harness.assert_limited(_call(a, "get_status", {"code": 200}, 5), 5)


def test_a_daily_quota_across_replicas(limited, redis_server):  # noqa: F811
    a, b = limited.pair(redis_server.address)
    for i, replica in enumerate((a, b, a)):
        assert _ok(_call(replica, "get_user", {"id": 1}, i)), i
    r = _call(b, "get_user", {"id": 1}, 9)
    retry = harness.assert_limited(r, 9, "quota")
    now = datetime.datetime.now(datetime.UTC)
    midnight = datetime.datetime.combine(now.date() + datetime.timedelta(days=1), datetime.time(), datetime.UTC)
    assert abs(retry - (midnight - now).total_seconds()) <= 3, retry
    assert "allows 3 calls per day (UTC)" in r.json()["error"]["message"], r.text
    key = f"{limited.key_prefix}limit:{SERVER}/get_user/q3d/*/{now:%Y-%m-%d}"
    assert redis_server.command("GET", key) == "3", "the refused call is not counted"
    pttl = int(redis_server.command("PTTL", key))
    assert abs(pttl / 1000 - (midnight - now).total_seconds()) <= 3, pttl


def test_redis_down_fails_open_or_closed_per_limit_then_recovers(limited, run_dir):  # noqa: F811
    server = RedisServer(run_dir).start()
    try:
        a, b = limited.pair(server.address)
        assert _ok(_call(a, "template_only", {"name": "x"}, 1))
        server.stop()
        for replica in (a, b):
            for i in range(2):  # both workers
                r, elapsed = timed(_call, replica, "template_only", {"name": "x"}, i)
                assert _ok(r), r.text  # onStoreError: allow (the default)
                assert elapsed < TIMEOUT_MS / 1000 + 0.5, elapsed
                r, elapsed = timed(_call, replica, "get_text_wrapped", {}, i)
                assert r.status_code == 503, r.text
                error = r.json()["error"]
                assert error["code"] == -32603 and "onStoreError: deny" in error["message"], error
                assert "rate-limit store is unavailable" in error["message"], error
                assert elapsed < TIMEOUT_MS / 1000 + 0.5, elapsed
        assert any("rate-limit store" in line for line in a.log_lines), a.log_lines[-5:]
        server.start()  # same port, empty
        for replica in (a, b):
            for i in range(2):
                assert _ok(_call(replica, "get_text_wrapped", {}, i))
    finally:
        server.stop()


def test_redis_slower_than_the_timeout(limited, host, redis_server):  # noqa: F811
    proxy = host.run(DelayProxy(redis_server.address, delay=0).start())
    try:
        a = limited.start("a", ("127.0.0.1", proxy.port))
        assert _ok(_call(a, "get_text_wrapped", {}, 1))
        proxy.delay = TIMEOUT_MS / 1000 + 1.0
        r, elapsed = timed(_call, a, "get_text_wrapped", {}, 2)
        assert r.status_code == 503 and "onStoreError: deny" in r.json()["error"]["message"], r.text
        assert TIMEOUT_MS / 1000 * 0.9 <= elapsed < TIMEOUT_MS / 1000 + 1.5, elapsed
        r, elapsed = timed(_call, a, "template_only", {"name": "x"}, 3)
        assert _ok(r) and elapsed < TIMEOUT_MS / 1000 + 1.5, (r.text, elapsed)
        proxy.delay = 0
        time.sleep(1.2)  # the late replies drain
        assert _ok(_call(a, "get_text_wrapped", {}, 4))
    finally:
        host.run(proxy.stop())


# --- proxied servers (type: mcp-proxy) ----------------------------------------------------------------------


class StatelessBackend(harness.DemoUpstream):
    """The Python SDK's MCP server (e2e/mcp_backend.py), stateless: any replica's request stands alone."""

    SCRIPT = "mcp_backend.py"
    NAME = "MCP backend (Python SDK, stateless)"

    def arguments(self) -> list[str]:
        return [str(self.port), "stateless"]


def _limited_proxies(request, host, run_dir, e2e_config, backend, **transport):  # noqa: F811
    """Three proxied servers in front of `backend` (`transport` adds their transport and URL), counted in Redis:
    `counted` (3 an hour, and a daily quota), `lenient` and `strict` (Redis down: allowed, refused)."""
    config = {k: v for k, v in e2e_config.items() if k != "servers"}
    server = lambda name, **limits: {"name": name, "type": "mcp-proxy", "mcpServerURL": "/mcp",  # noqa: E731
                                     "timeout": 10000, **transport, **limits}
    config["servers"] = [
        server("counted", rateLimits=[{"requests": 3, "window": "1h", "scope": "cluster"}],
               quotas=[{"requests": 100, "period": "day"}]),
        server("lenient", rateLimits=[{"requests": 1000, "window": "1s", "scope": "cluster"}]),
        server("strict", rateLimits=[{"requests": 1000, "window": "1s", "scope": "cluster", "onStoreError": "deny"}]),
    ]
    h = Higress(host, run_dir, backend, config, request.node.name)
    try:
        yield h
    finally:
        h.stop()
        backend.stop()
    assert not h.crashes(), "the plugin crashed in the test host:\n" + "\n".join(h.crashes())


@pytest.fixture
def proxied(request, host, run_dir, e2e_config):  # noqa: F811
    yield from _limited_proxies(request, host, run_dir, e2e_config, StatelessBackend(log_dir=run_dir).start())


def _proxied_call(replica, server: str, rid: int) -> dict:
    body = {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}}
    r = harness.fresh_connection_post(f"{replica.url}/mcp-servers/{server}", body, HEADERS)
    assert r.status_code == 200, (r.status_code, r.text)
    return sse_messages(r)[-1]


def test_a_proxied_servers_calls_are_counted_in_redis_across_replicas(proxied, redis_server):  # noqa: F811
    a, b = proxied.pair(redis_server.address)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda i: _proxied_call((a, b)[i % 2], "counted", i), range(8)))
    passed = [m for m in answers if "result" in m]
    assert len(passed) == 3, answers
    assert all(m["result"]["content"][0]["text"] == "echo: hi" for m in passed), passed
    for m in answers:
        if "error" in m:
            assert m["error"]["data"]["cause"] == "rate_limited", m
            assert 1190 <= m["error"]["data"]["retryAfterSeconds"] <= 1200, m  # a token every 20 min
            assert "server 'counted' allows 3 calls per 1h (rateLimits[0])" in m["error"]["message"], m
    # Lists are not counted; the stateless revision's refusal is HTTP 429 with Retry-After.
    listing = harness.fresh_connection_post(f"{b.url}/mcp-servers/counted",
                                            {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, HEADERS)
    assert listing.status_code == 200 and "echo" in listing.text, listing.text
    harness.assert_limited(harness.stateless_call(f"{a.url}/mcp-servers/counted", "echo", {"text": "x"}, 9), 9)
    key = f"{proxied.key_prefix}limit:counted/*/r3w3600000b3/*"
    level, _ = redis_server.command("GET", key).split()
    assert int(level) < 1000, level
    day = datetime.datetime.now(datetime.UTC)
    quota = f"{proxied.key_prefix}limit:counted/*/q100d/*/{day:%Y-%m-%d}"
    assert redis_server.command("GET", quota) == "3", "the quota counts the calls that went on, not the refused"


def _echoes(m: dict) -> bool:
    return m.get("result", {}).get("content", [{}])[0].get("text") == "echo: hi"


def _check_redis_down(replica, call, server: RedisServer, lenient_slack: float) -> None:
    """Redis stops under a replica whose calls `call` makes: `lenient` (onStoreError: allow, the default)
    still answers and `strict` (deny) is refused, on both workers, each within the Redis timeout; then
    Redis comes back on the same port, empty, and `strict` answers again."""
    assert _echoes(call(replica, "strict", 1))
    server.stop()
    for i in range(2):  # both workers
        m, elapsed = timed(call, replica, "lenient", i)
        assert _echoes(m), m
        assert elapsed < TIMEOUT_MS / 1000 + lenient_slack, elapsed
        m, elapsed = timed(call, replica, "strict", i)
        assert m["error"]["data"]["cause"] == "store_unavailable", m
        assert "onStoreError: deny" in m["error"]["message"], m
        assert "rate-limit store is unavailable" in m["error"]["message"], m
        assert elapsed < TIMEOUT_MS / 1000 + 1.0, elapsed
    server.start()  # same port, empty
    for i in range(2):
        assert _echoes(call(replica, "strict", 7 + i))


def _check_redis_timeout(replica, call, delay: DelayProxy, lenient_slack: float) -> None:
    """Redis (behind `delay`) answers later than the timeout: `strict` is refused and `lenient` answers,
    neither waiting much longer than the timeout; once Redis is prompt again, `strict` answers."""
    assert _echoes(call(replica, "strict", 1))
    delay.delay = TIMEOUT_MS / 1000 + 1.0
    m, elapsed = timed(call, replica, "strict", 2)
    assert m["error"]["data"]["cause"] == "store_unavailable", m
    assert TIMEOUT_MS / 1000 * 0.9 <= elapsed < TIMEOUT_MS / 1000 + 1.5, elapsed
    m, elapsed = timed(call, replica, "lenient", 3)
    assert _echoes(m) and elapsed < TIMEOUT_MS / 1000 + lenient_slack, (m, elapsed)
    delay.delay = 0
    time.sleep(1.2)  # the late replies drain
    assert _echoes(call(replica, "strict", 4))


def test_a_proxied_server_with_redis_down_fails_open_or_closed_per_limit(proxied, run_dir):  # noqa: F811
    server = RedisServer(run_dir).start()
    try:
        a = proxied.start("a", server.address)
        _check_redis_down(a, _proxied_call, server, lenient_slack=1.0)
        assert any("rate-limit store (redis)" in line for line in a.log_lines), a.log_lines[-5:]
    finally:
        server.stop()


def test_a_proxied_call_waits_no_longer_than_the_redis_timeout(proxied, host, redis_server):  # noqa: F811
    delay = host.run(DelayProxy(redis_server.address, delay=0).start())
    try:
        _check_redis_timeout(proxied.start("a", ("127.0.0.1", delay.port)), _proxied_call, delay, lenient_slack=1.5)
    finally:
        host.run(delay.stop())


# --- SSE backends (type: mcp-proxy, transport: sse) ---------------------------------------------------------


class SseBackend(harness.DemoUpstream):
    """The Python SDK's legacy SSE MCP server (e2e/mcp_backend.py)."""

    SCRIPT = "mcp_backend.py"
    NAME = "MCP backend (Python SDK, legacy SSE)"

    def arguments(self) -> list[str]:
        return [str(self.port), "sse"]


@pytest.fixture
def sse_proxied(request, host, run_dir, e2e_config):  # noqa: F811
    backend = SseBackend(log_dir=run_dir).start()
    yield from _limited_proxies(request, host, run_dir, e2e_config, backend, transport="sse", mcpServerURL="/sse")


def _bridged_call(replica, server: str, rid: int) -> dict:
    """A Streamable HTTP client's call (no session) to an SSE backend: bridged."""
    body = {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}}
    r = harness.fresh_connection_post(f"{replica.url}/mcp-servers/{server}", body, HEADERS)
    assert r.status_code == 200, (r.status_code, r.text)
    return sse_messages(r)[-1]


class SseClient:
    """A legacy SSE client, raw: its stream read in a thread, its messages POSTed to the endpoint it names."""

    def __init__(self, url: str):
        import queue
        import threading

        self.url = url
        self.messages: list[dict] = []
        self.endpoint: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        from urllib.parse import urljoin

        self.post_url = urljoin(url, self.endpoint.get(timeout=10))
        self.send({"id": 0, "method": "initialize", "params": {"protocolVersion": "2024-11-05", "capabilities": {},
                                                               "clientInfo": {"name": "t", "version": "0"}}})
        self.answer(0)
        self.send({"method": "notifications/initialized"})

    def _read(self) -> None:
        import json

        try:
            with httpx.stream("GET", self.url, headers={"Accept": "text/event-stream"}, timeout=30) as r:
                event = None
                for line in r.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:") and event == "endpoint":
                        self.endpoint.put(line[5:].strip())
                    elif line.startswith("data:"):
                        self.messages.append(json.loads(line[5:]))
        except httpx.HTTPError:
            pass  # the replica stops at the test's end, the stream with it

    def send(self, body: dict) -> None:
        r = httpx.post(self.post_url, json={"jsonrpc": "2.0", **body}, timeout=10)
        assert r.status_code in (200, 202), (r.status_code, r.text)

    def answer(self, rid: int, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = [m for m in list(self.messages) if m.get("id") == rid and "method" not in m]
            if found:
                return found[0]
            assert time.monotonic() < deadline, self.messages
            time.sleep(0.02)

    def call(self, rid: int) -> dict:
        self.send({"id": rid, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "hi"}}})
        return self.answer(rid)


def test_an_sse_servers_calls_are_counted_in_redis_across_replicas_from_both_kinds_of_client(
    sse_proxied, redis_server  # noqa: F811
):
    a, b = sse_proxied.pair(redis_server.address)
    # Streamable HTTP clients, bridged, on both replicas at once: 2 of the 3 calls an hour.
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda i: _bridged_call((a, b)[i % 2], "counted", i), range(2)))
    assert all(m["result"]["content"][0]["text"] == "echo: hi" for m in answers), answers
    # An SSE client on the other replica: the third call goes on, the fourth is refused on its stream.
    client = SseClient(f"{b.url}/mcp-servers/counted/sse")
    assert client.call(7)["result"]["content"][0]["text"] == "echo: hi"
    refused = client.call(8)
    assert refused["error"]["data"]["cause"] == "rate_limited", refused
    assert "server 'counted' allows 3 calls per 1h (rateLimits[0])" in refused["error"]["message"], refused
    # A bridged call is refused before any backend stream: the REST tools' error, with when to retry.
    m = _bridged_call(a, "counted", 9)
    assert m["error"]["data"]["cause"] == "rate_limited" and 1190 <= m["error"]["data"]["retryAfterSeconds"] <= 1200, m
    day = datetime.datetime.now(datetime.UTC)
    quota = f"{sse_proxied.key_prefix}limit:counted/*/q100d/*/{day:%Y-%m-%d}"
    assert redis_server.command("GET", quota) == "3", "the quota counts the calls that went on, not the refused"


def test_an_sse_server_with_redis_down_fails_open_or_closed_per_limit(sse_proxied, run_dir):  # noqa: F811
    server = RedisServer(run_dir).start()
    try:
        _check_redis_down(sse_proxied.start("a", server.address), _bridged_call, server, lenient_slack=1.5)
    finally:
        server.stop()


def test_a_bridged_call_waits_no_longer_than_the_redis_timeout(sse_proxied, host, redis_server):  # noqa: F811
    delay = host.run(DelayProxy(redis_server.address, delay=0).start())
    try:
        _check_redis_timeout(sse_proxied.start("a", ("127.0.0.1", delay.port)), _bridged_call, delay, lenient_slack=2.5)
    finally:
        host.run(delay.stop())
