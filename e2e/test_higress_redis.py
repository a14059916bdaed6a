"""The Higress build's Redis session store (`sessions.store: redis`), in the test host for Higress's ABI.

e2e/wasm_host/ is a TEST HOST, not Higress (see its README): mcp_gateway_higress.wasm runs in wasmtime with
Higress's hostcalls written in Python, its Redis calls backed by a real redis-server. Every test here runs
the build as Higress runs it (ABI 0.2.100, Higress's own header-pause semantics: no emulation of Envoy's
`allow_on_headers_stop_iteration`) in two replicas, two `Replica`s standing for two Envoy processes of
two worker VMs each, sharing nothing but Redis. What is asserted is docs/CONTRACT.md's Redis rules:
sessions across replicas, `DELETE` seen everywhere, sliding expiry by Redis's TTL, 503 / -32603 "session
store unavailable" within timeoutMs when Redis is down, slow or refuses the credentials (NOAUTH: one
re-initialisation and one retry), recovery without restarting anything, `?db=N`, and no password in logs.

`make test` always builds the Higress artifact, so a missing one fails every test here (never a skip).
"""

from __future__ import annotations

import concurrent.futures
import http.server
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

import harness
from harness import ACCEPT, LATEST, RawMcp
from wasm_host import Plugin, Replica
from wasm_host.testing import DelayProxy, HostThread, RedisServer
from wasm_host.vm import compile_module

REDIS_CLUSTER = "outbound|6379||redis.dns"
SERVER = "demo"
TIMEOUT_MS = 500  # sessions.redis.timeoutMs of every replica here
HEADERS = {"Accept": ACCEPT, "Content-Type": "application/json"}


def higress_wasm() -> Path:
    """The Higress build; missing, the test fails (inside its body, so it is reported as a failure)."""
    try:
        return harness.higress_wasm_path()
    except harness.HarnessError as exc:
        missing = str(exc)
    pytest.fail(f"{missing} Run `make build` first (`make test` does).", pytrace=False)


@pytest.fixture(scope="module")
def host():
    thread = HostThread()
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def run_dir() -> Path:
    return harness.new_run_dir("higress-redis")


@pytest.fixture(scope="module")
def upstream(run_dir):
    with harness.DemoUpstream(log_dir=run_dir) as up:
        yield up


@pytest.fixture(scope="module")
def redis_server(run_dir):
    with RedisServer(run_dir) as server:
        yield server


class Higress:
    """Starts replicas of the Higress build for one test, all with the same key prefix (unique to the test)."""

    def __init__(self, host: HostThread, run_dir: Path, upstream: harness.DemoUpstream, e2e_config: dict, test: str):
        self.host = host
        self.run_dir = run_dir
        self.upstream = upstream
        self.e2e_config = e2e_config
        self.test = test
        self.key_prefix = f"t-{secrets.token_hex(4)}:"
        self.replicas: list[Replica] = []

    def start(
        self, name: str, redis_address: tuple[str, int], *, ttl_seconds: int = 1800, log_level: str = "info", **redis
    ) -> Replica:
        wasm = higress_wasm()
        config = dict(self.e2e_config)
        config.pop("sessionTtlSeconds", None)
        settings = {"cluster": REDIS_CLUSTER, "username": "", "password": "", "database": 0, "timeoutMs": TIMEOUT_MS}
        settings |= {"keyPrefix": self.key_prefix, **redis}
        config["sessions"] = {"store": "redis", "ttlSeconds": ttl_seconds, "redis": settings}
        replica = Replica(
            wasm,
            Plugin(json.dumps(config).encode()),  # Higress's semantics: allow_on_headers_stop_iteration off
            clusters={"demo": ("127.0.0.1", self.upstream.port), REDIS_CLUSTER: redis_address},
            route_cluster="demo",
            workers=2,
            name=name,
            log_path=self.run_dir / f"{self.test}-{name}.log",
            log_level=log_level,
        )
        self.host.run(replica.start())
        self.replicas.append(replica)
        return replica

    def pair(self, redis_address: tuple[str, int], **kw) -> tuple[Replica, Replica]:
        return self.start("a", redis_address, **kw), self.start("b", redis_address, **kw)

    def key(self, sid: str, server: str = SERVER) -> str:
        return f"{self.key_prefix}session:{server}:{sid}"

    def crashes(self) -> list[str]:
        return [f"{r.name}: {c}" for r in self.replicas for c in r.crashes]

    def stop(self) -> None:
        for replica in self.replicas:
            self.host.run(replica.stop())  # idempotent


@pytest.fixture
def higress(request, host, run_dir, upstream, e2e_config):
    """Replicas for this test; stopped afterwards. Any trap or host error recorded in one fails the test."""
    h = Higress(host, run_dir, upstream, e2e_config, request.node.name)
    try:
        yield h
    finally:
        h.stop()
    assert not h.crashes(), "the plugin crashed in the test host:\n" + "\n".join(h.crashes())


# --- helpers ----------------------------------------------------------------------------------------------


def timed(fn: Callable[..., Any], *args: Any, **kw: Any) -> tuple[Any, float]:
    """fn(*args, **kw) and how long it took, in seconds."""
    started = time.monotonic()
    result = fn(*args, **kw)
    return result, time.monotonic() - started


def rpc_body(method: str, params: dict | None = None, id_: int | None = 1) -> dict:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if id_ is not None:
        body["id"] = id_
    if params is not None:
        body["params"] = params
    return body


INITIALIZE = rpc_body(
    "initialize", {"protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}, 7
)


def post_fresh(
    replica: Replica, body: dict, sid: str | None = None, server: str = SERVER
) -> tuple[httpx.Response, int]:
    """One POST on a new connection (replicas give connections to their workers in turn); which worker took it."""
    before = list(replica.requests_per_worker)
    headers = {**HEADERS, **({"Mcp-Session-Id": sid} if sid else {})}
    r = harness.fresh_connection_post(f"{replica.url}/mcp-servers/{server}", body, headers)
    worker = next(i for i, (x, y) in enumerate(zip(before, replica.requests_per_worker, strict=True)) if y > x)
    return r, worker


def assert_unavailable(r: httpx.Response, request_id: Any) -> str:
    """503 with JSON-RPC -32603 "session store unavailable: ..." (the request's id echoed); the message."""
    assert r.status_code == 503, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert body["id"] == request_id and body["error"]["code"] == -32603, body
    message = body["error"]["message"]
    assert message.startswith("session store unavailable: "), message
    return message


def assert_not_found(r: httpx.Response, request_id: Any) -> None:
    assert r.status_code == 404, (r.status_code, r.text)
    body = r.json()
    assert body["id"] == request_id and body["error"]["code"] == -32001, body


def all_tool_pages(raw: RawMcp, sid: str, version: str) -> tuple[list[str], int]:
    names, cursor, pages = [], None, 0
    while True:
        page = raw.rpc(SERVER, sid, "tools/list", {"cursor": cursor} if cursor else {}, version=version)["result"]
        names += [t["name"] for t in page["tools"]]
        pages += 1
        cursor = page.get("nextCursor")
        if not cursor or pages > 50:
            return names, pages


def call_tool(raw: RawMcp, sid: str, version: str, tool: str, args: dict) -> str:
    result = raw.rpc(SERVER, sid, "tools/call", {"name": tool, "arguments": args}, version=version)["result"]
    assert not result.get("isError"), result
    return result["content"][0]["text"]


def pttl(redis: RedisServer, key: str, db: int = 0) -> int:
    return int(redis.command("-n", str(db), "PTTL", key))


def errorstat(redis: RedisServer, error: str) -> int:
    """How many replies Redis has answered with this error (INFO errorstats, Redis >= 6.2)."""
    match = re.search(rf"^errorstat_{error}:count=(\d+)", redis.command("INFO", "errorstats"), re.MULTILINE)
    return int(match.group(1)) if match else 0


def demo_tool_names(e2e_config: dict) -> list[str]:
    return [t["name"] for t in next(s for s in e2e_config["servers"] if s["name"] == SERVER)["tools"]]


# --- the build, as Higress runs it ------------------------------------------------------------------------


def test_higress_build_as_higress_runs_it(higress, redis_server):
    """ABI 0.2.100 only (Higress withholds the body from a 0.2.0/0.2.1 module paused on its headers; see
    test_wasm_host.py::test_higress_withholds_the_body_...): a POST is answered at once, not after the
    plugin's 10 s "never received the request body" watchdog."""
    exports = {e.name for e in compile_module(higress_wasm()).exports}
    assert "proxy_abi_version_0_2_100" in exports and "proxy_abi_version_0_2_1" not in exports, sorted(exports)
    assert "proxy_on_redis_call_response" in exports
    a = higress.start("a", redis_server.address)
    assert not a.plugin.allow_on_headers_stop_iteration
    assert [vm.abi for vm in a.workers] == ["proxy_abi_version_0_2_100"] * 2
    for _ in range(2):  # both workers
        r, elapsed = timed(lambda: post_fresh(a, INITIALIZE)[0])
        assert r.status_code == 200 and re.fullmatch(r"[0-9a-f]{32}", r.headers["mcp-session-id"]), r.text
        assert elapsed < 3.0, elapsed
    assert set(a.requests_per_worker) == {1}
    assert not [line for line in a.log_lines if "never received the request body" in line]


# --- 1. one session, two replicas ---------------------------------------------------------------------------


def test_higress_build_redis_sessions_across_replicas(higress, redis_server, e2e_config):
    """initialize on A; every tools/list page and tools/call (upstream and template) on B; DELETE on A ends
    it on both; the key, its TTL and its removal, seen in Redis itself."""
    a, b = higress.pair(redis_server.address)
    for replica in (a, b):  # one proxy_redis_init per worker at configure, with the config's settings
        assert [(i.cluster, i.username, i.password_given, i.timeout_ms) for i in replica.redis_inits] == [
            (REDIS_CLUSTER, "", False, TIMEOUT_MS)
        ] * 2
    expected = demo_tool_names(e2e_config)
    with RawMcp(a.url) as raw_a, RawMcp(b.url) as raw_b:
        sid, result = raw_a.initialize(SERVER)  # + notifications/initialized (202), both on A
        version = result["protocolVersion"]
        assert re.fullmatch(r"[0-9a-f]{32}", sid), sid
        key = higress.key(sid)
        assert redis_server.command("EXISTS", key) == "1"
        assert 1_790_000 <= pttl(redis_server, key) <= 1_800_000  # ttlSeconds, as Redis's own TTL
        # Server, revision, and the capabilities the client declared (`c`, bits: none here).
        assert json.loads(redis_server.command("GET", key)) == {"s": SERVER, "v": version, "c": 0}

        names, pages = all_tool_pages(raw_b, sid, version)
        assert names == expected and pages == math.ceil(len(expected) / 5) > 1, (names, pages)
        weather = call_tool(raw_b, sid, version, "get_weather", {"city": "Oslo"})  # through the demo upstream
        assert re.fullmatch(r"It is -?\d+ degrees \(metric\) in Oslo\.", weather), weather
        assert call_tool(raw_b, sid, version, "template_only", {"name": "B"}) == "Hello, B!"

        assert raw_a.delete(SERVER, sid).status_code == 204
        assert redis_server.command("EXISTS", key) == "0"
        for raw in (raw_b, raw_a):
            r = raw.request(SERVER, sid, "tools/list", version=version)
            assert_not_found(r, raw._id)
        assert raw_b.delete(SERVER, sid).status_code == 404  # already gone, for B too
    assert [len(r.redis_inits) for r in (a, b)] == [2, 2]  # no re-initialisation on the way


def test_log_level_is_kept_in_redis_for_every_replica(host, run_dir, upstream, e2e_config, redis_server, request):
    """logging/setLevel on A is written into the session's key (SET ... XX KEEPTTL: it keeps its expiry);
    a call on B then sends only the log messages at or above that level, ahead of its result (SSE)."""
    config = json.loads(json.dumps(e2e_config))
    demo = next(s for s in config["servers"] if s["name"] == SERVER)
    demo["tools"].append({
        "name": "noisy", "description": "Logs at two levels", "args": [], "responseTemplate": {"body": "ok"},
        "notifications": [{"log": "debug", "data": "a debug line"}, {"log": "error", "data": "an error line"}],
    })
    h = Higress(host, run_dir, upstream, config, request.node.name)
    try:
        a, b = h.pair(redis_server.address)
        r, _ = post_fresh(a, INITIALIZE)
        sid = r.headers["mcp-session-id"]
        key = h.key(sid)
        r, _ = post_fresh(a, rpc_body("logging/setLevel", {"level": "error"}, 2), sid)
        assert r.json() == {"jsonrpc": "2.0", "id": 2, "result": {}}, r.text
        assert json.loads(redis_server.command("GET", key))["l"] == "error"
        # A SET without KEEPTTL would have dropped the key's expiry (PTTL -1): the session would never end.
        assert 1_790_000 <= pttl(redis_server, key) <= 1_800_000
        r, _ = post_fresh(b, rpc_body("tools/call", {"name": "noisy", "arguments": {}}, 3), sid)
        assert r.headers["content-type"] == "text/event-stream", (r.headers, r.text)
        events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
        assert [e.get("params", {}).get("data") for e in events] == ["an error line", None], events
        assert events[1]["result"]["content"][0]["text"] == "ok"
    finally:
        h.stop()
    assert not h.crashes(), "the plugin crashed in the test host:\n" + "\n".join(h.crashes())


# --- 2. expiry by Redis's TTL ---------------------------------------------------------------------------------


def test_redis_ttl_slides_with_activity_and_ends_after_idleness(higress, redis_server):
    """ttlSeconds 2: a request every 0.9 s keeps the session alive for 4.5 s, each one resetting Redis's PTTL
    (GETEX ... PX), on either replica; idle for the TTL plus a margin, it is gone (404) on both."""
    ttl_ms = 2000
    a, b = higress.pair(redis_server.address, ttl_seconds=ttl_ms // 1000)
    with RawMcp(a.url) as raw_a, RawMcp(b.url) as raw_b:
        sid, result = raw_a.initialize(SERVER)
        version = result["protocolVersion"]
        key = higress.key(sid)
        started = last = time.monotonic()
        seen = []
        for i in range(5):
            time.sleep(max(0.0, started + 0.9 * (i + 1) - time.monotonic()))
            before = pttl(redis_server, key)
            raw = (raw_b, raw_a)[i % 2]
            assert raw.rpc(SERVER, sid, "ping", version=version)["result"] == {}
            last = time.monotonic()
            after = pttl(redis_server, key)
            seen.append((before, after))
            assert 0 < before < after and after >= ttl_ms - 500, seen  # reset by the request, not just decaying
        alive_for = last - started
        assert alive_for > ttl_ms / 1000 + 2, alive_for  # well past one TTL
        # Idle: Redis expires the key after the TTL (checked on access, so never early and never late).
        time.sleep(max(0.0, last + ttl_ms / 1000 + 0.5 - time.monotonic()))
        assert pttl(redis_server, key) == -2  # no such key
        for raw in (raw_a, raw_b):
            assert_not_found(raw.request(SERVER, sid, "ping", version=version), raw._id)
    print(f"PTTL (ms) before/after each request: {seen}; alive {alive_for:.1f} s with a 2 s TTL")


# --- 3. Redis stopped and restarted ---------------------------------------------------------------------------


def test_redis_stopped_mid_run_and_restarted(higress, run_dir):
    """Redis stops: every MCP request (an existing session, a new initialize, another server, DELETE) gets
    503 / -32603 at once on both workers of both replicas, which keep serving what needs no store. Redis
    comes back on the same port (empty: not persisted): new sessions work at the first attempt, on every
    worker, without restarting anything; the old session is unknown (404)."""
    server = RedisServer(run_dir).start()
    try:
        a, b = higress.pair(server.address)
        r, _ = post_fresh(a, INITIALIZE)
        sid = r.headers["mcp-session-id"]
        assert post_fresh(b, rpc_body("ping", id_=2), sid)[0].status_code == 200
        server.stop()

        times, workers = [], set()
        for replica in (a, b):
            for _ in range(2):  # consecutive connections go to alternate workers (each has its own Redis client)
                for body, session, server_name in (
                    (rpc_body("tools/list", id_=3), sid, SERVER),  # the existing session
                    (INITIALIZE, None, SERVER),  # a new one
                    (INITIALIZE, None, "conformance"),  # another server
                ):
                    (r, worker), elapsed = timed(post_fresh, replica, body, session, server_name)
                    message = assert_unavailable(r, body["id"])
                    assert "Redis did not answer" in message, message
                    times.append(elapsed)
                    workers.add((replica.name, worker))
            with httpx.Client(headers={"Connection": "close"}, timeout=10) as http:
                url = f"{replica.url}/mcp-servers/{SERVER}"
                r, elapsed = timed(http.delete, url, headers={"Mcp-Session-Id": sid})
                assert r.status_code == 503 and r.json()["error"]["code"] == -32603, r.text
                times.append(elapsed)
                # What needs no session store goes on: pass-through, and the plugin's own refusals.
                assert http.get(f"{replica.url}/healthz").json() == {"ok": True}
                assert http.get(f"{replica.url}/mcp-servers/{SERVER}").status_code == 405
                r = http.post(f"{replica.url}/mcp-servers/{SERVER}", json=rpc_body("ping"), headers=HEADERS)
                assert r.status_code == 400  # no session id: refused before any store lookup
                assert http.post(f"{replica.url}/mcp-servers/nope", json=INITIALIZE, headers=HEADERS).status_code == 404
        assert workers == {("a", 0), ("a", 1), ("b", 0), ("b", 1)}
        # Connection refused on loopback: far below timeoutMs (the contract's bound).
        assert max(times) < TIMEOUT_MS / 1000, times
        print(f"Redis down: 503 after {min(times) * 1000:.0f}-{max(times) * 1000:.0f} ms ({len(times)} requests)")

        server.start()  # same port, empty
        recovered = []
        for replica in (a, b):
            for _ in range(2):  # both workers, first attempt each
                (r, worker), elapsed = timed(post_fresh, replica, INITIALIZE)
                assert r.status_code == 200, r.text
                recovered.append((replica.name, worker, elapsed))
                new_sid = r.headers["mcp-session-id"]
                assert server.command("EXISTS", higress.key(new_sid)) == "1"
                other = b if replica is a else a
                assert post_fresh(other, rpc_body("ping", id_=4), new_sid)[0].json()["result"] == {}
        assert {(name, worker) for name, worker, _ in recovered} == {("a", 0), ("a", 1), ("b", 0), ("b", 1)}
        for replica in (a, b):
            assert_not_found(post_fresh(replica, rpc_body("tools/list", id_=5), sid)[0], 5)  # Redis lost it
            assert len(replica.redis_inits) == 2  # recovered without a re-initialisation
        first = ", ".join(f"{t * 1000:.0f} ms" for *_, t in recovered)
        print(f"after the restart, the first initialize on each worker: {first}")
    finally:
        server.stop()


# --- 4. Redis slower than timeoutMs ---------------------------------------------------------------------------


def test_redis_slower_than_timeout(higress, host, redis_server):
    """A reaches Redis through a proxy that holds replies back 1.5 s (timeoutMs 500): its requests get 503 /
    -32603 after about timeoutMs, while B (straight to Redis) serves the same session meanwhile; once the
    delay is gone, A serves again by itself."""
    proxy = host.run(DelayProxy(redis_server.address, delay=0).start())
    try:
        a = higress.start("a", ("127.0.0.1", proxy.port))
        b = higress.start("b", redis_server.address)
        with RawMcp(a.url) as raw_a, RawMcp(b.url) as raw_b:
            sid, result = raw_b.initialize(SERVER)
            version = result["protocolVersion"]
            assert raw_a.rpc(SERVER, sid, "ping", version=version)["result"] == {}  # no delay yet
            proxy.delay = TIMEOUT_MS / 1000 + 1.0

            b_times = []
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                slow = pool.submit(timed, lambda: raw_a.request(SERVER, sid, "tools/list", version=version))
                while not slow.done():  # B, meanwhile
                    text, elapsed = timed(lambda: call_tool(raw_b, sid, version, "template_only", {"name": "B"}))
                    assert text == "Hello, B!"
                    b_times.append(elapsed)
                r, elapsed = slow.result()
            message = assert_unavailable(r, raw_a._id)
            assert "Redis did not answer" in message, message
            assert TIMEOUT_MS / 1000 * 0.9 <= elapsed < TIMEOUT_MS / 1000 + 1.5, elapsed
            assert b_times, "B answered nothing while A waited"
            timings = [elapsed]
            for _ in range(2):  # a new initialize, then the session again: the same clean failure
                r, elapsed = timed(lambda: raw_a.initialize_raw(SERVER))
                assert_unavailable(r, raw_a._id)
                timings.append(elapsed)
            assert max(timings) < TIMEOUT_MS / 1000 + 1.5, timings

            proxy.delay = 0
            (names, _), recovered_in = timed(lambda: all_tool_pages(raw_a, sid, version))
            assert names and recovered_in < 3.0, recovered_in
            assert raw_a.delete(SERVER, sid).status_code == 204
            assert_not_found(raw_b.request(SERVER, sid, "ping", version=version), raw_b._id)
        print(
            f"Redis 1.5 s slow, timeoutMs {TIMEOUT_MS}: 503 after "
            + ", ".join(f"{t * 1000:.0f} ms" for t in timings)
            + f"; B answered {len(b_times)} tools/call meanwhile (max {max(b_times) * 1000:.0f} ms)"
        )
    finally:
        host.run(proxy.stop())


# --- 5. a password-protected Redis ------------------------------------------------------------------------------


def test_password_protected_redis(higress, run_dir):
    """requirepass: the right password works across replicas. A wrong or missing one: 503 naming NOAUTH,
    exactly one proxy_redis_init and one retry per failing command, no crash. When Redis starts accepting
    the configured password, that retry is what lets the next request through. The password appears in
    no log."""
    password, wrong = f"pw-{secrets.token_hex(12)}", f"wrong-{secrets.token_hex(12)}"
    server = RedisServer(run_dir, password=password).start()
    try:
        a = higress.start("a", server.address, log_level="trace", password=password)
        b = higress.start("b", server.address, log_level="trace", password=password)
        bad = higress.start("wrong", server.address, log_level="trace", password=wrong)
        none = higress.start("none", server.address, log_level="trace")
        assert [i.password_given for r in (a, b, bad, none) for i in r.redis_inits] == [True] * 6 + [False] * 2

        with RawMcp(a.url) as raw_a, RawMcp(b.url) as raw_b:
            sid, result = raw_a.initialize(SERVER)
            version = result["protocolVersion"]
            assert call_tool(raw_b, sid, version, "template_only", {"name": "pw"}) == "Hello, pw!"
            assert server.command("EXISTS", higress.key(sid)) == "1"
            assert raw_b.delete(SERVER, sid).status_code == 204
            assert_not_found(raw_a.request(SERVER, sid, "ping", version=version), raw_a._id)

        noauth_before = errorstat(server, "NOAUTH")
        failing, times, workers = 0, [], set()
        for replica in (bad, none):
            for body, session in (
                (INITIALIZE, None),
                (INITIALIZE, None),
                (rpc_body("tools/list", id_=9), "0123456789abcdef0123456789abcdef"),
            ):
                inits = len(replica.redis_inits)
                (r, worker), elapsed = timed(post_fresh, replica, body, session)
                workers.add((replica.name, worker))
                message = assert_unavailable(r, body["id"])
                assert "NOAUTH" in message, message
                times.append(elapsed)
                failing += 1
                new = replica.redis_inits[inits:]
                assert [(i.worker, i.cluster, i.password_given) for i in new] == [
                    (worker, REDIS_CLUSTER, replica is bad)
                ], new  # one re-initialisation, by the worker that got NOAUTH, with the configured settings
        # Each failing command reached Redis twice (the command, its one retry), both refused with NOAUTH.
        assert errorstat(server, "NOAUTH") - noauth_before == 2 * failing
        assert workers == {("wrong", 0), ("wrong", 1), ("none", 0), ("none", 1)}
        assert max(times) < TIMEOUT_MS / 1000 + 1.0, times

        # Redis now takes the wrong replica's password: its workers' connections are still unauthenticated,
        # so the command gets NOAUTH, the client is re-initialised (AUTH on a new connection) and the retry passes.
        server.command("CONFIG", "SET", "requirepass", wrong)
        server.password = wrong
        for _ in range(2):
            inits = len(bad.redis_inits)
            r, worker = post_fresh(bad, INITIALIZE)
            assert r.status_code == 200, r.text
            assert [i.worker for i in bad.redis_inits[inits:]] == [worker]
        assert server.command("EXISTS", higress.key(r.headers["mcp-session-id"])) == "1"
        print(f"NOAUTH: 503 after {min(times) * 1000:.0f}-{max(times) * 1000:.0f} ms ({failing} requests)")
    finally:
        server.stop()
    # The password never reaches a log, at any level (the replicas log at trace here).
    higress.stop()
    for replica in (a, b, bad, none):
        text = replica.log_path.read_text()
        assert replica.log_lines and text.strip(), replica.name
        for secret in (password, wrong):
            assert secret not in text and secret not in replica.log_text(), f"{secret} in {replica.log_path}"


def test_a_reinitialisation_does_not_fail_the_other_commands_in_flight(higress, host, run_dir):
    """Re-initialising the host's Redis client (after a NOAUTH) closes its connection and fails every command
    pending on it. Those commands belong to other requests that did nothing wrong: they are sent again on
    the new connection, not answered 503. Redis here starts accepting the configured password while the
    replica's connections are still unauthenticated; a proxy holds replies back 150 ms so that commands
    overlap."""
    server = RedisServer(run_dir, password="before").start()
    proxy = host.run(DelayProxy(server.address, delay=0.15).start())
    try:
        replica = higress.start("a", ("127.0.0.1", proxy.port), password="after")
        # Each worker connects with the wrong password (the host sends AUTH on connect and ignores the reply).
        assert {post_fresh(replica, INITIALIZE)[1] for _ in range(2)} == {0, 1}
        server.command("CONFIG", "SET", "requirepass", "after")
        server.password = "after"
        before = len(replica.redis_inits)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: post_fresh(replica, INITIALIZE)[0], range(8)))
        statuses = [(r.status_code, r.text[:120]) for r in answers]
        assert all(status == 200 for status, _ in statuses), statuses
        inits = len(replica.redis_inits) - before
        assert 1 <= inits <= 8, replica.redis_inits
        print(f"8 concurrent initializes across a NOAUTH re-initialisation: all 200 ({inits} re-init(s))")
    finally:
        host.run(proxy.stop())
        server.stop()


# --- 6. database selection ------------------------------------------------------------------------------------------


def test_database_selects_the_redis_db(higress, redis_server):
    """database: 3 reaches the host as `cluster?db=3` (Higress's syntax): the session keys live in db 3."""
    a, b = higress.pair(redis_server.address, database=3)
    assert {i.cluster for r in (a, b) for i in r.redis_inits} == {f"{REDIS_CLUSTER}?db=3"}
    with RawMcp(a.url) as raw_a, RawMcp(b.url) as raw_b:
        sid, result = raw_a.initialize(SERVER)
        version = result["protocolVersion"]
        key = higress.key(sid)
        assert redis_server.command("-n", "3", "EXISTS", key) == "1"
        assert redis_server.command("-n", "0", "EXISTS", key) == "0"
        assert 1_790_000 <= pttl(redis_server, key, db=3) <= 1_800_000
        assert call_tool(raw_b, sid, version, "template_only", {"name": "db3"}) == "Hello, db3!"
        assert raw_b.delete(SERVER, sid).status_code == 204
        assert redis_server.command("-n", "3", "EXISTS", key) == "0"
        assert_not_found(raw_a.request(SERVER, sid, "ping", version=version), raw_a._id)


# --- 8. input requests of 2025-11-25 sessions, answered and polled on any replica ----------------------------


class EchoUpstream:
    """The conformance fixture's upstream for /echo/sampling, counting the calls it gets: the tool's call
    must reach it at most once, whichever replicas the answer and the polls go to."""

    def __init__(self):
        self.calls: list[str] = []
        calls = self.calls

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
                calls.append(body)
                out = json.dumps({"body": body}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ArrayDelayProxy(DelayProxy):
    """A DelayProxy that holds back only array replies (the answers' take; a session's GETEX is a bulk
    string), so that the session opens and the take is what times out. Redis still runs the take."""

    def delays(self, reply: bytes) -> bool:
        return reply.startswith(b"*")


@pytest.fixture
def polled(request, host, run_dir):
    """Replicas serving the conformance fixture (its input-request tools) with Redis sessions and shared
    input signing keys, in front of a counting upstream."""
    echo = EchoUpstream()
    config = harness.load_plugin_config(harness.CONFORMANCE_CONFIG)
    config["inputSigningKeys"] = ["MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="]
    h = Higress(host, run_dir, echo, config, request.node.name)  # type: ignore[arg-type]
    h.echo = echo  # type: ignore[attr-defined]
    try:
        yield h
    finally:
        h.stop()
        echo.close()
    assert not h.crashes(), "the plugin crashed in the test host:\n" + "\n".join(h.crashes())


POLLED_SERVER = "conformance"
POLLED_TOOL = "test_input_required_result_sampling"


def _sse(text: str) -> list[tuple[str, str]]:
    out = []
    for block in text.split("\n\n"):
        if block.strip():
            fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
            out.append((fields.get("id", "").strip(), fields.get("data", "").strip()))
    return out


class PolledCall:
    """A 2025-11-25 client in raw HTTP, each request on a connection of its own, to the replica it names."""

    def __init__(self, replica: Replica):
        self.base = {"Accept": ACCEPT, "Content-Type": "application/json", "Connection": "close"}
        init = rpc_body("initialize", {"protocolVersion": "2025-11-25", "capabilities": {"sampling": {}},
                                       "clientInfo": {"name": "e2e", "version": "1"}})
        r = httpx.post(self.url(replica), json=init, headers=self.base, timeout=10)
        assert r.status_code == 200, r.text
        self.sid = r.headers["mcp-session-id"]
        self.session = {**self.base, "Mcp-Session-Id": self.sid, "MCP-Protocol-Version": "2025-11-25"}

    @staticmethod
    def url(replica: Replica) -> str:
        return f"{replica.url}/mcp-servers/{POLLED_SERVER}"

    def call(self, replica: Replica, id_: int = 7) -> tuple[str, dict]:
        """The call's SSE answer: its event id and the request it asks."""
        body = rpc_body("tools/call", {"name": POLLED_TOOL, "arguments": {}}, id_)
        r = httpx.post(self.url(replica), json=body, headers=self.session, timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
        (event_id, priming), (_, asked) = _sse(r.text)
        assert priming == "" and event_id, r.text
        return event_id, json.loads(asked)

    def answer(self, replica: Replica, asked: dict, text: str) -> httpx.Response:
        body = {"jsonrpc": "2.0", "id": asked["id"],
                "result": {"role": "assistant", "content": {"type": "text", "text": text}, "model": "m"}}
        return httpx.post(self.url(replica), json=body, headers=self.session, timeout=10)

    def poll(self, replica: Replica, event_id: str) -> httpx.Response:
        headers = {**self.session, "Accept": "text/event-stream", "Last-Event-ID": event_id}
        return httpx.get(self.url(replica), headers=headers, timeout=10)


def test_polled_answers_are_kept_in_redis_and_any_replica_serves_the_poll(polled, redis_server):
    """The call on A, its answer on B (kept in Redis under the session, for the state's 10 minutes), then two
    polls at once on A and C: exactly one gets the result and the upstream is called once; the other, and
    every poll after, gets the priming event again."""
    a, b, c = (polled.start(n, redis_server.address) for n in "abc")
    client = PolledCall(a)
    event_id, asked = client.call(a)
    assert asked["method"] == "sampling/createMessage" and asked["id"].startswith("mcpgw."), asked
    r = client.poll(c, event_id)  # before the answer: the priming event again
    assert r.status_code == 200 and _sse(r.text) == [(event_id, "")], r.text

    assert client.answer(b, asked, "Paris, across replicas").status_code == 202
    key = f"{polled.key_prefix}answer:{{{client.sid}}}:{asked['id']}"
    assert json.loads(redis_server.command("GET", key))["result"]["content"]["text"] == "Paris, across replicas"
    assert 590_000 <= pttl(redis_server, key) <= 600_000

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        polls = list(pool.map(lambda rep: client.poll(rep, event_id), (a, c)))
    assert [p.status_code for p in polls] == [200, 200], [p.text for p in polls]
    events = sorted((_sse(p.text) for p in polls), key=lambda e: bool(e and e[0][1]))
    assert events[0] == [(event_id, "")], events  # the poll that lost the race: the priming event
    ((got_id, data),) = events[1]
    result = json.loads(data)
    assert got_id == event_id and result["id"] == 7, result
    text = result["result"]["content"][0]["text"]
    assert text == 'The upstream received: {"answer": "Paris, across replicas"}', result
    assert polled.echo.calls == ['{"answer": "Paris, across replicas"}']
    assert redis_server.command("EXISTS", key) == "0"  # taken
    for replica in (a, b, c):
        assert _sse(client.poll(replica, event_id).text) == [(event_id, "")]
    assert len(polled.echo.calls) == 1
    # Bound to the session: another session's poll with this event id does not see its answers.
    assert client.answer(b, asked, "again").status_code == 202
    other = PolledCall(c)
    assert _sse(other.poll(c, event_id).text) == [(event_id, "")]
    assert len(polled.echo.calls) == 1


def test_polled_answers_with_redis_refusing_or_slow_are_a_clear_error_in_time(polled, host, redis_server):
    """A Redis user that may not EVAL: the poll is 503 / -32603 "input answers unavailable" naming NOPERM, the
    answer stays. A take whose reply comes later than timeoutMs: the same error after about timeoutMs."""
    user = f"noeval{secrets.token_hex(3)}"
    redis_server.command("ACL", "SETUSER", user, "on", ">pw", "~*", "+@all", "-eval")
    a = polled.start("a", redis_server.address, username=user, password="pw")
    client = PolledCall(a)
    event_id, asked = client.call(a)
    assert client.answer(a, asked, "Oslo").status_code == 202
    r, elapsed = timed(client.poll, a, event_id)
    assert r.status_code == 503 and r.headers["content-type"].startswith("application/json"), r.text
    body = r.json()
    assert body["id"] == 7 and body["error"]["code"] == -32603, body
    assert body["error"]["message"].startswith("input answers unavailable: the answers could not be read: "), body
    assert "NOPERM" in body["error"]["message"], body
    assert elapsed < 3.0, elapsed
    assert redis_server.command("EXISTS", f"{polled.key_prefix}answer:{{{client.sid}}}:{asked['id']}") == "1"
    assert any("input answers (redis)" in line for line in a.log_lines), a.log_lines[-5:]
    # Another replica, allowed to EVAL, serves the same poll.
    b = polled.start("b", redis_server.address)
    result = json.loads(_sse(client.poll(b, event_id).text)[0][1])
    assert result["result"]["content"][0]["text"] == 'The upstream received: {"answer": "Oslo"}', result

    proxy = host.run(ArrayDelayProxy(redis_server.address, delay=TIMEOUT_MS / 1000 + 1.0).start())
    try:
        slow = polled.start("slow", ("127.0.0.1", proxy.port))
        client = PolledCall(slow)
        event_id, asked = client.call(slow, 8)
        assert client.answer(slow, asked, "Rome").status_code == 202
        r, elapsed = timed(client.poll, slow, event_id)
        assert r.status_code == 503 and r.json()["id"] == 8, r.text
        message = r.json()["error"]["message"]
        assert message.startswith("input answers unavailable: ") and "Redis did not answer" in message, message
        assert TIMEOUT_MS / 1000 * 0.9 <= elapsed < TIMEOUT_MS / 1000 + 1.5, elapsed
        print(f"a take slower than timeoutMs {TIMEOUT_MS}: 503 after {elapsed * 1000:.0f} ms")
    finally:
        host.run(proxy.stop())
    assert len(polled.echo.calls) == 1


def test_the_python_sdk_in_a_2025_11_25_session_across_replicas(polled, redis_server):
    """The official Python SDK in its legacy mode (initialize, 2025-11-25), its requests dealt to three
    replicas in turn by its HTTP transport (a load balancer without sticky sessions): every call's answers
    reach one replica and its polls others, and each call gets its result, the upstream called once."""
    import httpx2  # the SDK's HTTP client
    import mcp_types as types
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    replicas = [polled.start(n, redis_server.address) for n in "abc"]
    ports = [int(r.url.rsplit(":", 1)[1]) for r in replicas]
    sent: list[tuple[str, int, str]] = []  # (what, replica, method)

    class RoundRobin(httpx2.AsyncBaseTransport):
        def __init__(self):
            self.inner = httpx2.AsyncHTTPTransport()
            self.next = 0

        async def handle_async_request(self, request):
            i, self.next = self.next, (self.next + 1) % len(ports)
            request.url = request.url.copy_with(port=ports[i])
            body = request.content if request.method == "POST" else b""
            what = ("poll" if "last-event-id" in request.headers else
                    "answer" if b'"mcpgw.' in body and b'"method"' not in body else "request")
            sent.append((what, i, request.method))
            return await self.inner.handle_async_request(request)

        async def aclose(self):
            await self.inner.aclose()

    async def sample(context, params):
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text="Paris, said the SDK"), model="m")

    async def elicit(context, params):
        props = params.requested_schema["properties"]
        return types.ElicitResult(action="accept", content={k: {"name": "Ada", "color": "blue"}[k] for k in props})

    async def go():
        http = httpx2.AsyncClient(transport=RoundRobin(), timeout=httpx2.Timeout(15.0))
        async with http:
            transport = streamable_http_client(PolledCall.url(replicas[0]), http_client=http)
            async with Client(transport, mode="legacy", cache=None, read_timeout_seconds=15.0,
                              sampling_callback=sample, elicitation_callback=elicit) as client:
                sampled = await client.call_tool(POLLED_TOOL, {})
                rounds = await client.call_tool("test_input_required_result_multi_round", {})
                return client.protocol_version, sampled, rounds

    version, sampled, rounds = harness.run_async(go)
    assert version == "2025-11-25", version
    assert sampled.content[0].text == 'The upstream received: {"answer": "Paris, said the SDK"}', sampled
    assert rounds.content[0].text == "Ada likes blue", rounds
    assert polled.echo.calls == ['{"answer": "Paris, said the SDK"}']
    # Three rounds (one for the sampling tool, two for the other): each answer reached one replica and the
    # one poll after it (the SDK waits `retry`, 300 ms) another, which had the answer at once from Redis.
    rounds_seen = [(what, i) for what, i, _ in sent if what in ("answer", "poll")]
    assert [what for what, _ in rounds_seen] == ["answer", "poll"] * 3, sent
    pairs = list(zip(rounds_seen[::2], rounds_seen[1::2], strict=True))
    assert all(answer[1] != poll[1] for answer, poll in pairs), sent
    print(f"requests to replicas a/b/c in turn: {sent}")


# --- proxied servers (type: mcp-proxy) with their sessions in Redis ----------------------------------------


class McpBackend(harness.DemoUpstream):
    """The Python SDK's MCP server (e2e/mcp_backend.py), stateful: a request without its session is refused."""

    SCRIPT = "mcp_backend.py"
    NAME = "MCP backend (Python SDK)"

    def arguments(self) -> list[str]:
        return [str(self.port), "stateful"]


def sse_messages(r: httpx.Response) -> list[dict]:
    """The JSON-RPC messages of an answer, JSON or SSE."""
    if r.headers.get("content-type", "").startswith("application/json"):
        return [r.json()]
    return [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:")]


def test_a_proxied_session_opened_on_one_replica_continues_on_the_other(host, run_dir, e2e_config, redis_server, request):
    """A proxied server's client session (ours) is bound to the backend's `Mcp-Session-Id` in Redis: the
    answer to `initialize` on A is held until Redis has stored the pair; a call on B is held until Redis
    has given the backend's id back, and reaches the same backend session (the stateful SDK server refuses
    a request without it). allowTools filters on the way; DELETE on B ends both sessions."""
    backend = McpBackend(log_dir=run_dir).start()
    config = {k: v for k, v in e2e_config.items() if k != "servers"}
    config["servers"] = [{"name": "proxied", "type": "mcp-proxy", "transport": "http", "mcpServerURL": "/mcp",
                          "timeout": 10000, "allowTools": ["echo", "steps"]}]
    h = Higress(host, run_dir, backend, config, request.node.name)
    try:
        a, b = h.pair(redis_server.address)
        r, _ = post_fresh(a, INITIALIZE, server="proxied")
        assert r.status_code == 200, r.text
        sid = r.headers["mcp-session-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", sid), sid
        assert sse_messages(r)[0]["result"]["serverInfo"]["name"] == "backend", r.text
        stored = json.loads(redis_server.command("GET", h.key(sid, "proxied")))
        theirs = stored["b"]
        assert stored["s"] == "proxied" and theirs and theirs != sid, stored
        assert 1_790_000 <= pttl(redis_server, h.key(sid, "proxied")) <= 1_800_000

        r, _ = post_fresh(b, rpc_body("notifications/initialized", id_=None), sid, server="proxied")
        assert r.status_code == 202, (r.status_code, r.text)
        for replica in (b, a, b):
            r, _ = post_fresh(replica, rpc_body("tools/list", {}, 2), sid, server="proxied")
            assert r.status_code == 200, r.text
            assert [t["name"] for t in sse_messages(r)[0]["result"]["tools"]] == ["echo", "steps"], r.text
        r, _ = post_fresh(b, rpc_body("tools/call", {"name": "echo", "arguments": {"text": "from B"}}, 3), sid,
                          server="proxied")
        assert r.status_code == 200, r.text
        assert sse_messages(r)[-1]["result"]["content"][0]["text"] == "echo: from B", r.text
        r, _ = post_fresh(b, rpc_body("tools/call", {"name": "secret", "arguments": {}}, 4), sid, server="proxied")
        assert sse_messages(r)[0]["error"]["message"] == "Tool not allowed: secret", r.text

        # The backend restarts (it forgets every session): the next call, on A, re-initialises it with the
        # client's initialize params kept in Redis, rebinds our session there, and is sent again; B then
        # continues on the new backend session.
        backend.stop()
        backend.start()
        r, _ = post_fresh(a, rpc_body("tools/call", {"name": "echo", "arguments": {"text": "again"}}, 7), sid,
                          server="proxied")
        assert r.status_code == 200 and sse_messages(r)[-1]["result"]["content"][0]["text"] == "echo: again", r.text
        rebound = json.loads(redis_server.command("GET", h.key(sid, "proxied")))
        assert rebound["b"] != theirs and rebound["i"] == stored["i"], (rebound, stored)
        assert json.loads(stored["i"])["clientInfo"] == {"name": "t", "version": "0"}, stored
        r, _ = post_fresh(b, rpc_body("tools/list", {}, 8), sid, server="proxied")
        assert [t["name"] for t in sse_messages(r)[0]["result"]["tools"]] == ["echo", "steps"], r.text

        # The backend's own id, sent by a client, is nobody's session here.
        r, _ = post_fresh(b, rpc_body("tools/list", {}, 5), theirs, server="proxied")
        assert_not_found(r, None)

        with httpx.Client(timeout=10) as c:
            r = c.delete(f"{b.url}/mcp-servers/proxied", headers={**HEADERS, "Mcp-Session-Id": sid})
        assert r.status_code in (200, 204), (r.status_code, r.text)
        assert redis_server.command("EXISTS", h.key(sid, "proxied")) == "0"
        r, _ = post_fresh(a, rpc_body("tools/list", {}, 6), sid, server="proxied")
        assert_not_found(r, None)
    finally:
        h.stop()
        backend.stop()
    assert not h.crashes(), "the plugin crashed in the test host:\n" + "\n".join(h.crashes())


def test_a_proxied_server_answers_503_when_redis_is_down(host, run_dir, e2e_config, request):
    """Redis stopped: an initialize's answer and a session's request are answered 503 / -32603 within
    timeoutMs (the backend's session is not handed out unbound), and nothing is left paused."""
    backend = McpBackend(log_dir=run_dir).start()
    config = {k: v for k, v in e2e_config.items() if k != "servers"}
    config["servers"] = [{"name": "proxied", "type": "mcp-proxy", "mcpServerURL": "/mcp", "timeout": 10000}]
    h = Higress(host, run_dir, backend, config, request.node.name)
    try:
        with RedisServer(run_dir) as redis:
            a = h.start("a", redis.address)
            r, _ = post_fresh(a, INITIALIZE, server="proxied")
            sid = r.headers["mcp-session-id"]
            redis.stop()
            (r, _), elapsed = timed(post_fresh, a, INITIALIZE, server="proxied")
            assert r.status_code == 503 and "mcp-session-id" not in r.headers, (r.status_code, r.headers, r.text)
            assert r.json()["error"]["code"] == -32603 and "session store" in r.json()["error"]["message"], r.text
            assert elapsed < 3.0, elapsed
            (r, _), elapsed = timed(post_fresh, a, rpc_body("tools/list", {}, 2), sid, server="proxied")
            assert r.status_code == 503 and r.json()["error"]["code"] == -32603, r.text
            assert elapsed < 3.0, elapsed
    finally:
        h.stop()
        backend.stop()
    assert not h.crashes(), "the plugin crashed in the test host:\n" + "\n".join(h.crashes())


class McpSseBackend(McpBackend):
    """The Python SDK's MCP server on the legacy SSE transport (GET /sse, POST /messages/)."""

    def arguments(self) -> list[str]:
        return [str(self.port), "sse"]


def test_an_sse_backends_stream_on_one_replica_takes_posts_on_the_other(host, run_dir, e2e_config, redis_server,
                                                                        request):
    """`transport: sse` with Redis sessions: the SDK's SSE client opens its stream on replica A, whose
    endpoint event is held until Redis has stored our session (the backend's message URL in `"b"`), and
    every POST lands on replica B, which finds the backend's URL in Redis (GETEX) and sends it there; the
    answers come on A's stream. A forged or altered sessionId gets 404; with Redis down, opening a stream
    is answered 503 (-32603 session store: ...) within timeoutMs, never with the backend's endpoint, and
    with Redis slower than timeoutMs after about timeoutMs."""
    import httpx2  # the SDK's HTTP client
    from mcp import Client
    from mcp.client.sse import sse_client

    backend = McpSseBackend(log_dir=run_dir).start()
    config = {k: v for k, v in e2e_config.items() if k != "servers"}
    config["servers"] = [{"name": "legacy", "type": "mcp-proxy", "transport": "sse", "mcpServerURL": "/sse",
                          "timeout": 10000, "allowTools": ["echo", "steps"]}]
    h = Higress(host, run_dir, backend, config, request.node.name)
    try:
        a, b = h.pair(redis_server.address)
        port_b = int(b.url.rsplit(":", 1)[1])
        posts: list[int] = []

        class PostsToB(httpx2.AsyncBaseTransport):
            def __init__(self):
                self.inner = httpx2.AsyncHTTPTransport()

            async def handle_async_request(self, request):
                if request.method == "POST":
                    request.url = request.url.copy_with(port=port_b)
                    posts.append(port_b)
                return await self.inner.handle_async_request(request)

            async def aclose(self):
                await self.inner.aclose()

        def factory(headers=None, timeout=None, auth=None):
            return httpx2.AsyncClient(transport=PostsToB(), headers=headers, timeout=timeout, auth=auth)

        sessions: list[str] = []

        async def go():
            transport = sse_client(f"{a.url}/mcp-servers/legacy/sse", timeout=10, httpx_client_factory=factory,
                                   on_session_created=sessions.append)
            async with Client(transport, mode="legacy", cache=None, read_timeout_seconds=15) as c:
                tools = [t.name for t in (await c.list_tools()).tools]
                echoed = (await c.call_tool("echo", {"text": "via B"})).content[0].text
                stepped = (await c.call_tool("steps", {"n": 2, "pause_ms": 20})).content[0].text
                with pytest.raises(Exception) as refused:
                    await c.call_tool("secret", {})
                return tools, echoed, stepped, str(refused.value)

        tools, echoed, stepped, refused = harness.run_async(go)
        assert tools == ["echo", "steps"], tools
        assert (echoed, stepped) == ("echo: via B", "2 steps done")
        assert "Tool not allowed: secret" in refused, refused
        assert len(posts) >= 5, posts  # initialize, initialized, list, three calls: all to B
        assert sum(b.requests_per_worker) == len(posts), (b.requests_per_worker, posts)
        (sid,) = sessions
        assert re.fullmatch(r"[0-9a-f]{32}", sid), sid
        stored = json.loads(redis_server.command("GET", h.key(sid, "legacy")))
        assert stored["s"] == "legacy" and stored["b"].startswith("/messages/?session_id="), stored
        assert 1_790_000 <= pttl(redis_server, h.key(sid, "legacy")) <= 1_800_000

        # Forged or altered: no such session in Redis, 404 without reaching the backend.
        ping = rpc_body("ping", id_=3)
        for forged in ("0123456789abcdef0123456789abcdef", sid[:-1] + ("0" if sid[-1] != "0" else "1"), "x"):
            r = harness.fresh_connection_post(f"{b.url}/mcp-servers/legacy/message?sessionId={forged}", ping, HEADERS)
            assert r.status_code == 404 and r.json()["error"]["code"] == -32001, (forged, r.status_code, r.text)

        # Redis down: a new stream is answered 503 within timeoutMs; the backend's endpoint never shows.
        with RedisServer(run_dir) as down:
            c = h.start("c", down.address)
            down.stop()
            started = time.monotonic()
            with httpx.Client(timeout=10) as http:
                r = http.get(f"{c.url}/mcp-servers/legacy/sse", headers={"Accept": "text/event-stream"})
            elapsed = time.monotonic() - started
            assert r.status_code == 503, (r.status_code, r.text)
            assert r.json()["error"]["code"] == -32603 and "session store" in r.json()["error"]["message"], r.text
            assert "session_id" not in r.text and elapsed < TIMEOUT_MS / 1000 + 1.5, (elapsed, r.text)
            # A POST to a live session's endpoint: 503 too (an SSE client reads it from the POST's answer).
            (r, _), elapsed = timed(post_fresh, c, ping, server=f"legacy/message?sessionId={sid}")
            assert r.status_code == 503 and r.json()["error"]["code"] == -32603, (r.status_code, r.text)
            assert elapsed < TIMEOUT_MS / 1000 + 1.5, elapsed

        # Redis slower than timeoutMs: the same, after about timeoutMs.
        proxy = host.run(DelayProxy(redis_server.address, delay=TIMEOUT_MS / 1000 + 1.0).start())
        try:
            slow = h.start("slow", ("127.0.0.1", proxy.port))
            started = time.monotonic()
            with httpx.Client(timeout=10) as http:
                r = http.get(f"{slow.url}/mcp-servers/legacy/sse", headers={"Accept": "text/event-stream"})
            elapsed = time.monotonic() - started
        finally:
            host.run(proxy.stop())
        assert r.status_code == 503 and "Redis did not answer" in r.json()["error"]["message"], r.text
        assert TIMEOUT_MS / 1000 * 0.9 <= elapsed < TIMEOUT_MS / 1000 + 1.5, elapsed
    finally:
        h.stop()
        backend.stop()
    assert not h.crashes(), "the plugin crashed in the test host:\n" + "\n".join(h.crashes())


def test_a_streamable_http_client_of_an_sse_backend_initialises_on_one_replica_and_calls_on_the_other(
        host, run_dir, e2e_config, redis_server, request):
    """`transport: sse` with Redis sessions, used by the SDK's Streamable HTTP client (the bridge: each
    request a backend SSE stream of its own, the gateway POSTing to the endpoint it names): its initialize
    on replica A is answered once Redis has stored our session (with the client's initialize params, which
    B's bridge declares in its own initialize to the backend); every later request lands on B, which looks
    the session up in Redis first. Redis down: an initialize and a session's call are answered 503
    (-32603 session store: ...) within timeoutMs, without a session id."""
    import httpx2  # the SDK's HTTP client
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    backend = McpSseBackend(log_dir=run_dir).start()
    config = {k: v for k, v in e2e_config.items() if k != "servers"}
    config["servers"] = [{"name": "legacy", "type": "mcp-proxy", "transport": "sse", "mcpServerURL": "/sse",
                          "timeout": 10000, "allowTools": ["echo", "steps"]}]
    h = Higress(host, run_dir, backend, config, request.node.name)
    try:
        a, b = h.pair(redis_server.address)
        port_b = int(b.url.rsplit(":", 1)[1])
        sent: list[tuple[str, str, str]] = []  # (replica, method, answer status)
        sessions: list[str] = []

        class InitialiseOnAThenB(httpx2.AsyncBaseTransport):
            def __init__(self):
                self.inner = httpx2.AsyncHTTPTransport()

            async def handle_async_request(self, request):
                replica = "a" if not sent else "b"
                if replica == "b":
                    request.url = request.url.copy_with(port=port_b)
                response = await self.inner.handle_async_request(request)
                sent.append((replica, request.method, str(response.status_code)))
                if "mcp-session-id" in response.headers:
                    sessions.append(response.headers["mcp-session-id"])
                return response

            async def aclose(self):
                await self.inner.aclose()

        progress: list[tuple] = []

        async def on_progress(done, total, message):
            progress.append((done, total, message))

        async def go():
            http = httpx2.AsyncClient(transport=InitialiseOnAThenB(), timeout=httpx2.Timeout(15.0))
            async with http:
                transport = streamable_http_client(f"{a.url}/mcp-servers/legacy", http_client=http)
                async with Client(transport, mode="legacy", cache=None, read_timeout_seconds=15.0) as c:
                    tools = [t.name for t in (await c.list_tools()).tools]
                    echoed = (await c.call_tool("echo", {"text": "via B"})).content[0].text
                    stepped = (await c.call_tool("steps", {"n": 2, "pause_ms": 20},
                                                 progress_callback=on_progress)).content[0].text
                    with pytest.raises(Exception) as refused:
                        await c.call_tool("secret", {})
                    # Before the SDK's DELETE at its end: our session, as Redis holds it.
                    stored = redis_server.command("GET", h.key(sessions[0], "legacy"))
                    return tools, echoed, stepped, str(refused.value), json.loads(stored)

        tools, echoed, stepped, refused, stored = harness.run_async(go)
        assert tools == ["echo", "steps"], tools
        assert (echoed, stepped) == ("echo: via B", "2 steps done")
        assert progress == [(1, 2, "step 1"), (2, 2, "step 2")], progress
        assert "Tool not allowed: secret" in refused, refused
        assert sent[0] == ("a", "POST", "200"), sent
        on_b = [s for s in sent[1:] if s[0] == "b"]
        assert len(on_b) == len(sent) - 1 and sum(1 for s in on_b if s[1] == "POST") >= 5, sent
        assert sum(a.requests_per_worker) == 1 and sum(b.requests_per_worker) == len(on_b), (a.requests_per_worker,
                                                                                             b.requests_per_worker)
        sid = sessions[0]
        assert re.fullmatch(r"[0-9a-f]{32}", sid) and set(sessions) == {sid}, sessions
        assert stored["s"] == "legacy" and "clientInfo" in json.loads(stored["i"]), stored
        # The SDK's DELETE at its end, on B, ended our session in Redis.
        assert ("b", "DELETE", "204") in sent, sent
        assert redis_server.command("EXISTS", h.key(sid, "legacy")) == "0"

        # A session that is alive, then Redis down: 503 within timeoutMs, never an unbound session.
        r, _ = post_fresh(b, INITIALIZE, server="legacy")
        assert r.status_code == 200, r.text
        live = r.headers["mcp-session-id"]
        with RedisServer(run_dir) as down:
            c = h.start("c", down.address)
            down.stop()
            (r, _), elapsed = timed(post_fresh, c, INITIALIZE, server="legacy")
            assert r.status_code == 503 and "mcp-session-id" not in r.headers, (r.status_code, r.headers, r.text)
            assert r.json()["error"]["code"] == -32603 and "session store" in r.json()["error"]["message"], r.text
            assert elapsed < TIMEOUT_MS / 1000 + 1.5, elapsed
            (r, _), elapsed = timed(post_fresh, c, rpc_body("tools/list", {}, 2), live, server="legacy")
            assert r.status_code == 503 and r.json()["error"]["code"] == -32603, (r.status_code, r.text)
            assert elapsed < TIMEOUT_MS / 1000 + 1.5, elapsed
    finally:
        h.stop()
        backend.stop()
    assert not h.crashes(), "the plugin crashed in the test host:\n" + "\n".join(h.crashes())
