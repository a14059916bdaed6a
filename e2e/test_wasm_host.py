"""The test host for Higress's ABI (e2e/wasm_host/, a test host, not Higress) and the plugin inside it.

Loading (the vanilla build, refused modules and configs), MCP through a two-worker replica with the
demo upstream, Higress's Redis calls against a real redis-server with small hand-written modules, and
crash reporting. Every test fails if a replica it started recorded a crash it did not expect. The Higress
build's Redis session store is tested in test_higress_redis.py.
"""

from __future__ import annotations

import json
import re
import struct
import time
from pathlib import Path

import httpx
import pytest
import wasmtime
import yaml

import harness
from harness import ACCEPT, RawMcp, fresh_connection_post, list_all_tools, mcp_client, run_async
from wasm_host import LoadError, Plugin, Replica
from wasm_host.abi import WasmResult
from wasm_host.redis import resp_command
from wasm_host.replica import SharedData
from wasm_host.testing import DelayProxy, HostThread, RedisServer
from wasm_host.vm import compile_module

REDIS_CLUSTER = "outbound|6379||redis.dns"
SERVER = "demo"

_started: list[Replica] = []


@pytest.fixture(scope="module")
def host():
    thread = HostThread()
    yield thread
    for replica in _started:
        thread.run(replica.stop())
    thread.close()


@pytest.fixture(scope="module")
def run_dir() -> Path:
    return harness.new_run_dir("wasm-host")


@pytest.fixture(autouse=True)
def no_crashes():
    """A trap or a host error in any replica fails the test that was running (none is hidden)."""
    before = {id(r): len(r.crashes) for r in _started}
    yield
    new = [c for r in _started for c in r.crashes[before.get(id(r), 0) :]]
    assert not new, "the plugin crashed in the test host:\n" + "\n".join(new)


def start(host: HostThread, wasm: Path, plugin: Plugin, **kw) -> Replica:
    replica = Replica(wasm, plugin, **kw)
    host.run(replica.start())
    _started.append(replica)
    return replica


def stop(host: HostThread, replica: Replica) -> None:
    host.run(replica.stop())
    _started.remove(replica)


@pytest.fixture(scope="module")
def upstream(run_dir):
    with harness.DemoUpstream(log_dir=run_dir) as up:
        yield up


@pytest.fixture(scope="module")
def replica(host, upstream, run_dir, e2e_config) -> Replica:
    """The vanilla plugin with plugin-config/e2e.yaml in a two-worker replica, like the `gw` fixture's Envoy
    (whose envoy.yaml sets allow_on_headers_stop_iteration)."""
    return start(
        host,
        harness.wasm_path(),
        Plugin(harness.plugin_config_text(e2e_config).encode(), allow_on_headers_stop_iteration=True),
        clusters={"demo": ("127.0.0.1", upstream.port), "blackhole": ("127.0.0.1", harness.unused_port())},
        route_cluster="demo",
        workers=2,
        log_path=run_dir / "replica.log",
    )


def wat_module(body: str, imports: str = "", abi: str = "0_2_1") -> bytes:
    """A minimal proxy-wasm module: a bump allocator, a root context that starts and configures."""
    return wasmtime.wat2wasm(f"""(module
      {imports}
      (memory (export "memory") 4)
      (global $heap (mut i32) (i32.const 65536))
      (func (export "malloc") (param $n i32) (result i32)
        (local $p i32)
        (local.set $p (global.get $heap))
        (global.set $heap (i32.add (global.get $heap) (local.get $n)))
        (local.get $p))
      (func (export "proxy_abi_version_{abi}"))
      (func (export "proxy_on_context_create") (param i32 i32))
      (func (export "proxy_on_vm_start") (param i32 i32) (result i32) (i32.const 1))
      (func (export "proxy_on_configure") (param i32 i32) (result i32) (i32.const 1))
      {body})""")


def write_module(run_dir: Path, name: str, wasm: bytes) -> Path:
    path = run_dir / f"{name}.wasm"
    path.write_bytes(wasm)
    return path


# --- loading ------------------------------------------------------------------------------------------


def test_vanilla_module_loads_without_higress_imports(replica: Replica):
    module = compile_module(harness.wasm_path())
    names = {f"{i.module}.{i.name}" for i in module.imports}
    assert "env.proxy_log" in names and not any("redis" in n for n in names), names
    assert "proxy_abi_version_0_2_1" in {e.name for e in module.exports}
    served = [line for line in replica.log_lines if "serving 2 server(s)" in line]
    assert len(served) == 2, replica.log_text()  # one configured VM per worker


def test_module_with_an_unknown_import_is_refused(host, run_dir):
    wasm = write_module(
        run_dir, "unknown-import", wat_module("", '(import "env" "proxy_not_in_envoy" (func (param i32) (result i32)))')
    )
    with pytest.raises(LoadError, match=r"missing import: env\.proxy_not_in_envoy"):
        start(host, wasm, Plugin(b""), clusters={})


def test_module_with_a_mistyped_import_is_refused(host, run_dir):
    wasm = write_module(run_dir, "mistyped-import", wat_module("", '(import "env" "proxy_log" (func (param i32)))'))
    with pytest.raises(LoadError, match=r"import type mismatch: env\.proxy_log"):
        start(host, wasm, Plugin(b""), clusters={})


def test_invalid_plugin_config_is_refused_with_the_plugins_message(host, upstream):
    config = {
        "servers": [
            {
                "name": "bad",
                "upstream": {"cluster": "demo"},
                "tools": [{"name": "t", "description": "d", "requestTemplate": {"url": "ftp://example.com/x"}}],
            }
        ]
    }
    with pytest.raises(LoadError) as info:
        start(
            host,
            harness.wasm_path(),
            Plugin(json.dumps(config).encode()),
            clusters={"demo": ("127.0.0.1", upstream.port)},
        )
    message = str(info.value)
    assert "Failed to configure Wasm plugin" in message, message
    assert "invalid plugin config" in message and "must be an absolute http(s) URL" in message, message


def test_shared_data_follows_cpp_host():
    data = SharedData()
    assert data.get("vm", b"k") is None  # proxy_get_shared_data: NotFound
    assert data.set("vm", b"k", b"v1", 0) == WasmResult.Ok
    value, cas = data.get("vm", b"k")
    assert value == b"v1" and cas != 0
    assert data.set("vm", b"k", b"v2", cas + 1) == WasmResult.CasMismatch
    assert data.set("vm", b"k", b"v2", cas) == WasmResult.Ok
    assert data.get("vm", b"k")[1] != cas
    assert data.get("other-vm", b"k") is None


# --- MCP through the host -------------------------------------------------------------------------------


def test_initialize_notification_and_every_tools_list_page(replica: Replica, e2e_config):
    with RawMcp(replica.url) as raw:
        sid, result = raw.initialize(SERVER)  # also sends notifications/initialized (202)
        assert result["serverInfo"]["version"] == "1.2.3"
        names, cursor, pages = [], None, 0
        while True:
            page = raw.rpc(
                SERVER, sid, "tools/list", {"cursor": cursor} if cursor else {}, version=result["protocolVersion"]
            )["result"]
            names += [t["name"] for t in page["tools"]]
            pages += 1
            cursor = page.get("nextCursor")
            if not cursor:
                break
    expected = [t["name"] for t in next(s for s in e2e_config["servers"] if s["name"] == SERVER)["tools"]]
    assert names == expected and pages > 1


def _call(raw: RawMcp, sid: str, version: str, tool: str, args: dict) -> dict:
    return raw.rpc(SERVER, sid, "tools/call", {"name": tool, "arguments": args}, version=version)["result"]


def test_tools_call_through_dispatch_and_template(replica: Replica):
    with RawMcp(replica.url) as raw:
        sid, result = raw.initialize(SERVER)
        version = result["protocolVersion"]
        weather = _call(raw, sid, version, "get_weather", {"city": "Paris"})
        assert re.fullmatch(r"It is -?\d+ degrees \(metric\) in Paris\.", weather["content"][0]["text"]), weather
        assert _call(raw, sid, version, "template_only", {"name": "Ada"})["content"][0]["text"] == "Hello, Ada!"
        echo = json.loads(_call(raw, sid, version, "echo_body_args", {"title": "x"})["content"][0]["text"])
    # What the upstream received is what it receives from Envoy 1.40 with the same plugin.
    assert list(echo["headers"]) == [
        "host",
        "content-type",
        "content-length",
        "x-envoy-internal",
        "x-envoy-expected-rq-timeout-ms",
    ], echo
    assert echo["headers"]["x-envoy-expected-rq-timeout-ms"] == "5000" and echo["body"] == '{"title":"x"}'


def test_session_made_on_one_worker_is_valid_on_the_other(replica: Replica):
    url = f"{replica.url}/mcp-servers/{SERVER}"
    headers = {"Accept": ACCEPT, "Content-Type": "application/json"}

    def post(body: dict, sid: str | None = None) -> tuple[httpx.Response, int]:
        before = list(replica.requests_per_worker)
        r = fresh_connection_post(url, body, {**headers, **({"Mcp-Session-Id": sid} if sid else {})})
        worker = next(i for i, (a, b) in enumerate(zip(before, replica.requests_per_worker)) if b > a)
        return r, worker

    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": harness.LATEST, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    r, made_on = post(init)
    sid = r.headers["mcp-session-id"]
    r2, notified_on = post({"jsonrpc": "2.0", "method": "notifications/initialized"}, sid)
    assert r2.status_code == 202 and notified_on != made_on  # round robin over connections
    call = {
        "jsonrpc": "2.0",
        "id": 2,
        "method": "tools/call",
        "params": {"name": "template_only", "arguments": {"name": "w"}},
    }
    used = set()
    for _ in range(2):
        r3, worker = post(call, sid)
        assert r3.status_code == 200 and r3.json()["result"]["content"][0]["text"] == "Hello, w!", r3.text
        used.add(worker)
    assert used == {0, 1}


def test_delete_ends_the_session(replica: Replica):
    with RawMcp(replica.url) as raw:
        sid, _ = raw.initialize(SERVER)
        assert raw.delete(SERVER, sid).status_code == 204
        r = raw.request(SERVER, sid, "ping")
        assert r.status_code == 404 and r.json()["error"], r.text


def test_other_paths_pass_through_to_the_route_cluster(replica: Replica):
    r = httpx.get(f"{replica.url}/healthz", timeout=5)
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert r.headers["server"] == "envoy" and "x-envoy-upstream-service-time" in r.headers
    r = httpx.post(f"{replica.url}/echo/pass?x=1", content=b"payload", headers={"X-A": "b"}, timeout=5)
    echo = r.json()
    assert echo["body"] == "payload" and echo["query"] == "x=1" and echo["headers"]["x-a"] == "b", echo
    assert echo["headers"]["x-forwarded-proto"] == "http" and echo["headers"]["x-request-id"], echo


def test_upstream_timeout_and_connection_failure_are_tool_errors(replica: Replica):
    with RawMcp(replica.url) as raw:
        sid, result = raw.initialize(SERVER)
        started = time.monotonic()
        slow = _call(raw, sid, result["protocolVersion"], "slow_call", {})  # 3 s upstream, 500 ms timeout
        elapsed = time.monotonic() - started
        failed = _call(raw, sid, result["protocolVersion"], "blackhole_call", {})
    # The texts Envoy 1.40 gives with the same plugin (its router answers 504 / 503 itself).
    assert slow["isError"] and slow["content"][0]["text"] == "HTTP 504: upstream request timeout", slow
    assert elapsed < 2.0, elapsed
    assert failed["isError"] and failed["content"][0]["text"] == (
        "HTTP 503: upstream connect error or disconnect/reset before headers. reset reason: remote connection failure"
    ), failed


def test_python_mcp_sdk_client(replica: Replica, e2e_config):
    async def go():
        async with mcp_client(f"{replica.url}/mcp-servers/{SERVER}") as client:
            tools, pages = await list_all_tools(client)
            result = await client.call_tool("template_only", {"name": "SDK"})
            return [t.name for t in tools], pages, result

    names, pages, result = run_async(go)
    assert len(names) == len(next(s for s in e2e_config["servers"] if s["name"] == SERVER)["tools"]) and pages > 1
    assert result.content[0].text == "Hello, SDK!"


def test_a_trap_is_recorded_and_fails_closed(host, run_dir):
    wasm = write_module(
        run_dir,
        "trap",
        wat_module('(func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) unreachable)'),
    )
    replica = start(host, wasm, Plugin(b""), clusters={}, workers=1)
    try:
        for _ in range(2):  # the request that traps, then one on the failed VM
            r = httpx.get(f"{replica.url}/anything", timeout=5)
            assert r.status_code == 503 and r.content == b""
        assert replica.crashes and "Function: proxy_on_request_headers failed" in replica.crashes[0]
        assert harness.crash_lines(replica.log_text()), replica.log_text()
    finally:
        stop(host, replica)


def _lifecycle_module(abi: str) -> bytes:
    """Logs every stream callback; pauses on headers, answers 200 "done" from the last body callback."""
    words = [
        "create",
        "request_headers",
        "request_body",
        "request_body end",
        "size ok",
        "size bad",
        "response_headers",
        "response_body",
        "log",
        "done",
        "delete",
        "done!",
    ]
    offsets, data, at = {}, [], 256
    for word in words:
        offsets[word] = at
        data.append(f'(data (i32.const {at}) "{word}")')
        at += len(word) + 1

    def log(word: str) -> str:
        return f"(drop (call $log (i32.const 2) (i32.const {offsets[word]}) (i32.const {len(word)})))"

    body = f"""
      {" ".join(data)}
      (func (export "proxy_on_request_headers") (param i32 i32 i32) (result i32) {log("request_headers")} (i32.const 1))
      (func (export "proxy_on_request_body") (param $ctx i32) (param $size i32) (param $eos i32) (result i32)
        (if (i32.eqz (local.get $eos)) (then {log("request_body")} (return (i32.const 1))))
        {log("request_body end")}
        (if (i32.eq (local.get $size) (i32.const 7)) (then {log("size ok")}) (else {log("size bad")}))
        (drop (call $reply (i32.const 200) (i32.const 0) (i32.const 0) (i32.const {offsets["done!"]}) (i32.const 5)
                           (i32.const 0) (i32.const 0) (i32.const 0)))
        (i32.const 1))
      (func (export "proxy_on_response_headers") (param i32 i32 i32) (result i32) {log("response_headers")} (i32.const 0))
      (func (export "proxy_on_response_body") (param i32 i32 i32) (result i32) {log("response_body")} (i32.const 0))
      (func (export "proxy_on_log") (param i32) {log("log")})
      (func (export "proxy_on_done") (param i32) (result i32) {log("done")} (i32.const 1))
      (func (export "proxy_on_delete") (param i32) {log("delete")})
    """
    imports = """
      (import "env" "proxy_log" (func $log (param i32 i32 i32) (result i32)))
      (import "env" "proxy_send_local_response"
        (func $reply (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
    """
    return wat_module(body, imports, abi)


@pytest.mark.parametrize(
    ("abi", "envoy_option"), [("0_2_100", False), ("0_2_1", True)], ids=["higress-abi-0.2.100", "envoy-option"]
)
def test_stream_callbacks_in_envoys_order(host, run_dir, abi, envoy_option):
    """A request paused on its headers still gets its body (Higress: ABI 0.2.100; Envoy: the option); a local
    reply goes through the response callbacks; the end is on_log, on_done, on_delete (Envoy logs a stream
    before it destroys its filters)."""
    wasm = write_module(run_dir, f"lifecycle-{abi}", _lifecycle_module(abi))
    replica = start(host, wasm, Plugin(b"", allow_on_headers_stop_iteration=envoy_option), clusters={}, workers=1)
    try:
        r = httpx.post(f"{replica.url}/x", content=b"payload", timeout=5)
        assert (r.status_code, r.text, r.headers["content-type"]) == (200, "done!", "text/plain")
        harness.wait_until(lambda: replica.log_lines[-1].endswith("delete"), 5, what="the end of the stream")
        logged = [line.rsplit(": ", 1)[1] for line in replica.log_lines if "wasm log" in line]
        assert logged == [
            "request_headers",
            "request_body",
            "request_body end",
            "size ok",
            "response_headers",
            "response_body",
            "log",
            "done",
            "delete",
        ], logged
    finally:
        stop(host, replica)


def test_higress_withholds_the_body_from_an_abi_0_2_1_module_paused_on_headers(host, run_dir):
    """Higress's cpp-host turns StopIteration from an ABI 0.2.0/0.2.1 module into StopAllIterationAndWatermark
    (src/context.cc convertVmCallResultToFilterHeadersStatus): Envoy buffers the body and never calls
    proxy_on_request_body, so the request waits until the plugin answers it some other way."""
    replica = start(
        host, write_module(run_dir, "lifecycle-0_2_1", _lifecycle_module("0_2_1")), Plugin(b""), clusters={}, workers=1
    )
    try:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{replica.url}/x", content=b"payload", timeout=1)
        logged = [line.rsplit(": ", 1)[1] for line in replica.log_lines if "wasm log" in line]
        assert logged == ["request_headers"], logged
    finally:
        stop(host, replica)


# --- Higress's Redis calls, driven by a hand-written module ----------------------------------------------

REDIS_PROBE = wat_module(
    """
    (func (export "probe_init") (param i32 i32 i32 i32 i32 i32 i32) (result i32)
      (call $redis_init (local.get 0) (local.get 1) (local.get 2) (local.get 3) (local.get 4) (local.get 5)
                        (local.get 6)))
    (func (export "probe_call") (param i32 i32 i32 i32) (result i32)
      (call $redis_call (local.get 0) (local.get 1) (local.get 2) (local.get 3) (i32.const 16)))
    ;; One 32-byte record per callback at 1024: context, token, status, size, buffer status, reply ptr, len.
    (func (export "proxy_on_redis_call_response") (param $ctx i32) (param $token i32) (param $status i32)
                                                   (param $size i32)
      (local $rec i32)
      (local.set $rec (i32.add (i32.const 1024) (i32.mul (i32.load (i32.const 8)) (i32.const 32))))
      (i32.store (local.get $rec) (local.get $ctx))
      (i32.store offset=4 (local.get $rec) (local.get $token))
      (i32.store offset=8 (local.get $rec) (local.get $status))
      (i32.store offset=12 (local.get $rec) (local.get $size))
      (i32.store offset=16 (local.get $rec)
        (call $get_buffer (i32.const 9) (i32.const 0) (local.get $size)
                          (i32.add (local.get $rec) (i32.const 20)) (i32.add (local.get $rec) (i32.const 24))))
      (i32.store (i32.const 8) (i32.add (i32.load (i32.const 8)) (i32.const 1))))
    """,
    """
    (import "env" "proxy_redis_init" (func $redis_init (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
    (import "env" "proxy_redis_call" (func $redis_call (param i32 i32 i32 i32 i32) (result i32)))
    (import "env" "proxy_get_buffer_bytes" (func $get_buffer (param i32 i32 i32 i32 i32) (result i32)))
    """,
)


class RedisProbe:
    """Drives the probe module's root context on the host's thread and reads what its callback recorded."""

    def __init__(self, host: HostThread, replica: Replica):
        self.host = host
        self.vm = replica.workers[0]

    def _put(self, data: bytes) -> tuple[int, int]:
        ptr = self.vm.alloc(len(data)) if data else 0
        if data:
            self.vm.write(ptr, data)
        return ptr, len(data)

    def init(self, cluster: str, user: str = "", password: str = "", timeout_ms: int = 1000) -> int:
        def run() -> int:
            args = [*self._put(cluster.encode()), *self._put(user.encode()), *self._put(password.encode()), timeout_ms]
            return self.vm.invoke(self.vm.root, "probe_init", *args)[0]

        return self.host.call(run)

    def call(self, cluster: str, *command: str) -> tuple[int, int]:
        """(status, token) of proxy_redis_call."""

        def run() -> tuple[int, int]:
            args = [*self._put(cluster.encode()), *self._put(resp_command(*command))]
            status = self.vm.invoke(self.vm.root, "probe_call", *args)[0]
            return status, struct.unpack("<I", self.vm.read(16, 4))[0]

        return self.host.call(run)

    def replies(self) -> list[dict]:
        def run() -> list[dict]:
            (count,) = struct.unpack("<I", self.vm.read(8, 4))
            out = []
            for i in range(count):
                ctx, token, status, size, buf_status, ptr, length = struct.unpack(
                    "<7I", self.vm.read(1024 + 32 * i, 28)
                )
                out.append(
                    {
                        "context": ctx,
                        "token": token,
                        "status": status,
                        "size": size,
                        "buffer_status": buf_status,
                        "reply": self.vm.read(ptr, length) if length else b"",
                    }
                )
            return out

        return self.host.call(run)

    def wait(self, count: int, timeout: float = 5.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = self.replies()
            if len(replies) >= count:
                return replies
            time.sleep(0.01)
        raise AssertionError(f"{count} redis callbacks expected, got {self.replies()}")


@pytest.fixture(scope="module")
def redis_server(run_dir):
    with RedisServer(run_dir) as server:
        yield server


def probe_replica(host: HostThread, run_dir: Path, address: tuple[str, int]) -> tuple[Replica, RedisProbe]:
    replica = start(
        host,
        write_module(run_dir, "redis-probe", REDIS_PROBE),
        Plugin(b""),
        clusters={REDIS_CLUSTER: address},
        workers=1,
    )
    return replica, RedisProbe(host, replica)


def test_redis_call_round_trip_raw_resp(host, run_dir, redis_server):
    replica, probe = probe_replica(host, run_dir, redis_server.address)
    try:
        # Before any init: Envoy's defaults (1 s timeout, no credentials) apply.
        assert probe.call(REDIS_CLUSTER, "SET", "k1", "before-init") == (WasmResult.Ok, 7)  # tokens: 3 + 4n
        probe.wait(1)  # (an init now would close the connection and fail the call)
        assert probe.init(REDIS_CLUSTER, timeout_ms=500) == WasmResult.Ok
        assert probe.call(REDIS_CLUSTER, "GET", "k1")[0] == WasmResult.Ok
        assert probe.call(REDIS_CLUSTER, "HGETALL", "missing")[0] == WasmResult.Ok
        replies = probe.wait(3)
        root = replica.workers[0].root.id
        assert [(r["context"], r["status"], r["buffer_status"]) for r in replies] == [(root, 0, 0)] * 3
        assert [r["token"] for r in replies] == [7, 11, 15]
        assert [r["reply"] for r in replies] == [b"+OK\r\n", b"$11\r\nbefore-init\r\n", b"*0\r\n"]
        assert all(r["size"] == len(r["reply"]) for r in replies)
        assert redis_server.command("GET", "k1") == "before-init"
    finally:
        stop(host, replica)


def test_redis_database_from_the_cluster_suffix_and_unknown_clusters(host, run_dir, redis_server):
    replica, probe = probe_replica(host, run_dir, redis_server.address)
    try:
        assert probe.init(f"{REDIS_CLUSTER}?db=3&buffer_flush_timeout=3") == WasmResult.Ok
        assert probe.call(f"{REDIS_CLUSTER}?db=3", "SET", "in-db-3", "yes")[0] == WasmResult.Ok
        assert probe.wait(1)[0]["reply"] == b"+OK\r\n"
        assert redis_server.command("-n", "3", "GET", "in-db-3") == "yes"
        assert redis_server.command("-n", "0", "EXISTS", "in-db-3") == "0"
        assert probe.init("no-such-cluster") == WasmResult.BadArgument
        assert probe.call("no-such-cluster", "PING") == (WasmResult.BadArgument, 0)
        time.sleep(0.2)
        assert len(probe.replies()) == 1  # no callback for a refused call
    finally:
        stop(host, replica)


def test_redis_slower_than_the_timeout_fails_the_call(host, run_dir, redis_server):
    proxy = host.run(DelayProxy(redis_server.address, delay=1.0).start())
    replica, probe = probe_replica(host, run_dir, ("127.0.0.1", proxy.port))
    try:
        assert probe.init(REDIS_CLUSTER, timeout_ms=200) == WasmResult.Ok
        started = time.monotonic()
        probe.call(REDIS_CLUSTER, "PING")
        failed = probe.wait(1)[0]
        assert (failed["status"], failed["size"], failed["reply"]) == (1, 0, b"")  # RedisStatus::NetworkError
        assert time.monotonic() - started < 0.9
        proxy.delay = 0
        probe.call(REDIS_CLUSTER, "PING")  # on a new connection
        assert probe.wait(2)[1]["reply"] == b"+PONG\r\n"
    finally:
        stop(host, replica)
        host.run(proxy.stop())


def test_redis_init_fails_the_calls_in_flight(host, run_dir, redis_server):
    proxy = host.run(DelayProxy(redis_server.address, delay=0.5).start())
    replica, probe = probe_replica(host, run_dir, ("127.0.0.1", proxy.port))
    try:
        probe.call(REDIS_CLUSTER, "PING")
        time.sleep(0.1)
        assert probe.init(REDIS_CLUSTER) == WasmResult.Ok  # AsyncClientImpl::initialize closes the connection
        assert probe.wait(1)[0]["status"] == 1
    finally:
        stop(host, replica)
        host.run(proxy.stop())


def test_redis_refused_stopped_and_restarted(host, run_dir):
    server = RedisServer(run_dir)
    replica, probe = probe_replica(host, run_dir, server.address)
    try:
        probe.call(REDIS_CLUSTER, "PING")  # nothing listens yet: connection refused
        assert probe.wait(1)[0]["status"] == 1
        server.start()
        probe.call(REDIS_CLUSTER, "PING")
        assert probe.wait(2)[1]["reply"] == b"+PONG\r\n"
        server.stop()
        probe.call(REDIS_CLUSTER, "PING")
        assert probe.wait(3)[2]["status"] == 1
        server.start()  # same port
        probe.call(REDIS_CLUSTER, "PING")
        assert probe.wait(4)[3]["reply"] == b"+PONG\r\n"
    finally:
        stop(host, replica)
        server.stop()


def test_redis_password_right_wrong_and_missing(host, run_dir):
    with RedisServer(run_dir, password="s3cret") as server:
        replica, probe = probe_replica(host, run_dir, server.address)
        try:
            probe.call(REDIS_CLUSTER, "GET", "k")  # no init yet: no AUTH
            probe.wait(1)
            assert probe.init(REDIS_CLUSTER, password="wrong") == WasmResult.Ok  # AUTH's error reply is dropped
            probe.call(REDIS_CLUSTER, "GET", "k")
            probe.wait(2)
            assert probe.init(REDIS_CLUSTER, password="s3cret") == WasmResult.Ok
            probe.call(REDIS_CLUSTER, "SET", "k", "v")
            probe.wait(3)
            assert probe.init(REDIS_CLUSTER, user="default", password="s3cret") == WasmResult.Ok  # AUTH user pass
            probe.call(REDIS_CLUSTER, "GET", "k")
            replies = probe.wait(4)
        finally:
            stop(host, replica)
    noauth = b"-NOAUTH Authentication required.\r\n"
    # A NOAUTH reply is a successful call (status 0) whose RESP is an error, as Higress delivers it.
    assert [(r["status"], r["reply"]) for r in replies] == [
        (0, noauth),
        (0, noauth),
        (0, b"+OK\r\n"),
        (0, b"$1\r\nv\r\n"),
    ]


# --- Higress's own configs -----------------------------------------------------------------------------------

REFERENCE_CONFIGS = Path(__file__).resolve().parents[1] / "src" / "gotemplate" / "testdata" / "higress-configs"


def test_higress_time_config_runs_unchanged_in_the_higress_build(host, run_dir):
    """Higress's bundled `mcp-time` config, as Higress passes it (JSON), in the Higress build: its Go template
    `{{ dateInZone "Monday, 2006-01-02 15:04:05" now .args.timeZone }}` renders the time in the asked zone."""
    path = REFERENCE_CONFIGS / "mcp-time.yaml"
    try:
        wasm = harness.higress_wasm_path()
    except Exception as exc:  # noqa: BLE001 - the build is made by `make build`
        pytest.fail(f"the Higress build is missing: {exc}", pytrace=False)
    config = yaml.safe_load(path.read_text())
    replica = start(host, wasm, Plugin(json.dumps(config).encode()), clusters={}, workers=1,
                    log_path=run_dir / "higress-time.log")
    try:
        with RawMcp(replica.url) as raw:
            sid, result = raw.initialize("time")
            version = result["protocolVersion"]
            call = lambda args: raw.rpc("time", sid, "tools/call", {"name": "get-current-time", "arguments": args},
                                        version=version)["result"]
            shanghai, utc = call({}), call({"timeZone": "UTC"})
    finally:
        stop(host, replica)
    shape = re.compile(r"^(Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day, \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\n?$")
    for r in (shanghai, utc):
        assert not r.get("isError") and shape.match(r["content"][0]["text"]), r
    # The default zone (Asia/Shanghai, UTC+8, no summer time) is 8 hours ahead of UTC.
    hour = lambda r: int(r["content"][0]["text"].split(" ")[2][:2])
    assert (hour(utc) + 8) % 24 == hour(shanghai), (utc, shanghai)


def test_higress_github_config_sends_higress_requests_through_its_route(host, run_dir, upstream):
    """Higress's bundled `mcp-github` config, unchanged, in the Higress build: with no cluster named, each call
    rewrites the client's request for its route (to the demo upstream here), built as Higress builds it
    (docs/higress-semantics.md). The upstream has no GitHub API, so it answers 404 naming what it received,
    which reaches the client as Higress's `call failed` text."""
    try:
        wasm = harness.higress_wasm_path()
    except Exception as exc:  # noqa: BLE001 - the build is made by `make build`
        pytest.fail(f"the Higress build is missing: {exc}", pytrace=False)
    config = yaml.safe_load((REFERENCE_CONFIGS / "mcp-github.yaml").read_text())
    replica = start(host, wasm, Plugin(json.dumps(config).encode()), clusters={"demo": ("127.0.0.1", upstream.port)},
                    route_cluster="demo", workers=1, log_path=run_dir / "higress-github.log")
    try:
        with RawMcp(replica.url) as raw:
            sid, result = raw.initialize("github-mcp-server")
            call = lambda name, args: raw.rpc("github-mcp-server", sid, "tools/call", {"name": name, "arguments": args},
                                              version=result["protocolVersion"])["result"]
            read = call("get_file_contents", {"owner": "octocat", "repo": "hello", "path": "docs/read me.md",
                                              "branch": "feature/x"})
            issue = call("create_issue", {"owner": "octocat", "repo": "hello", "title": "Bug", "labels": ["bug"]})
        counted = httpx.get(f"http://127.0.0.1:{upstream.port}/_count",
                            params={"path": "/repos/octocat/hello/contents/docs/read%20me.md"}).json()
    finally:
        stop(host, replica)
    missing = lambda method, path: f'call failed, status: 404, response: {{"error": "no route for {method} {path}"}}'
    assert read["isError"] and read["content"][0]["text"] == missing("GET", "/repos/octocat/hello/contents/docs/read%20me.md")
    assert issue["isError"] and issue["content"][0]["text"] == missing("POST", "/repos/octocat/hello/issues")
    assert counted["count"] == 1, counted


def test_a_users_config_from_higress_session_filter_in_the_higress_build(host, run_dir, upstream):
    """trustConfigHeader: true in the Higress build: each request carries what Higress's mcp-session filter (with
    enableUserLevelServer) sets, `x-higress-mcpserver-config: base64(json.Marshal(map[string]string))`, and its
    Higress-shape server's tools render with that user's config (through the route); without the header, the
    operator's; a header that does not decode is refused; the header never reaches the upstream."""
    import base64

    try:
        wasm = harness.higress_wasm_path()
    except Exception as exc:  # noqa: BLE001 - the build is made by `make build`
        pytest.fail(f"the Higress build is missing: {exc}", pytrace=False)
    config = {
        "trustConfigHeader": True,
        "server": {"name": "per-user", "config": {"appCode": "operator"}},
        "tools": [{"name": "whoami", "description": "d", "args": [],
                   "requestTemplate": {"url": "/echo/whoami", "method": "GET",
                                       "headers": [{"key": "X-App-Code", "value": "{{.config.appCode}}"}]}}],
    }
    replica = start(host, wasm, Plugin(json.dumps(config).encode()), clusters={"demo": ("127.0.0.1", upstream.port)},
                    route_cluster="demo", workers=2, log_path=run_dir / "higress-user-config.log")
    # Go's json.Marshal of the stored map[string]string, base64.StdEncoding (handler/config_store.go).
    user = lambda code: base64.b64encode(json.dumps({"appCode": code}, separators=(",", ":")).encode()).decode()  # noqa: E731
    try:
        with RawMcp(replica.url) as raw:
            sid, result = raw.initialize("per-user")
            version = result["protocolVersion"]

            def whoami(header: str | None) -> httpx.Response:
                body = {"jsonrpc": "2.0", "id": raw.next_id(), "method": "tools/call",
                        "params": {"name": "whoami", "arguments": {}}}
                extra = {} if header is None else {"x-higress-mcpserver-config": header}
                return raw.post("per-user", body, headers=extra, session=sid, version=version)

            seen = {}
            for label, header in (("none", None), ("u1", user("u-1")), ("u2", user("u-2")), ("u1 again", user("u-1"))):
                r = whoami(header)
                assert r.status_code == 200, r.text
                echo = json.loads(r.json()["result"]["content"][0]["text"])
                assert "x-higress-mcpserver-config" not in echo["headers"], echo
                seen[label] = echo["headers"]["x-app-code"]
            bad = whoami("not base64!")
    finally:
        stop(host, replica)
    assert seen == {"none": "operator", "u1": "u-1", "u2": "u-2", "u1 again": "u-1"}, seen
    assert bad.status_code == 400 and "not base64" in bad.json()["error"]["message"], bad.text
