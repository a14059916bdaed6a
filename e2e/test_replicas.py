"""Sessions across Envoy replicas (`sessions.store: signed`), key rotation, what DELETE means for a signed
id, hot restart, and the two plugin artifacts (vanilla Envoy and Higress).

Every Envoy here is its own process on its own ports, in front of one demo upstream of this module:

  replica-a, replica-b   signed, key OLD, ttl 1800: one session served alternately by both
  rotated                signed, keys [NEW, OLD]: NEW signs, both verify
  new-only               signed, key NEW
  short-a, short-b       signed, key SHORT, ttl 3 s: DELETE and expiry
  hot-signed, hot-local  started with hot restart enabled, then hot-restarted to epoch 1

Keys are random per run (os.urandom). A signed id is base64url of
`format(1) | key id(4) | nonce(12) | expires_ms(8, big-endian) | revision(4) | tag(16)`, the revision word
holding yyyymmdd in its low 25 bits and, with bit 31 set, the client's capabilities in bits 25..30
(src/session/signed.rs); the tests read the key id and the expiry from it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import importlib.util
import os
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

import harness
from harness import ACCEPT, RawMcp, fresh_connection_post, list_all_tools, run_async

SERVER = "demo"
OTHER_SERVER = "conformance"  # the other server of plugin-config/e2e.yaml
SESSION_NOT_FOUND = -32001
SHORT_TTL = 3


def _new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


KEY_OLD, KEY_NEW, KEY_SHORT = _new_key(), _new_key(), _new_key()


def _key_id(key: str) -> bytes:
    """The key id a signed session id carries (first 4 bytes of HMAC(key, label), signed.rs)."""
    return hmac.new(base64.b64decode(key), b"mcp-gateway/key-id/v1", hashlib.sha256).digest()[:4]


def _decode(sid: str) -> dict:
    raw = base64.urlsafe_b64decode(sid + "=" * (-len(sid) % 4))
    assert len(sid) == 60 and len(raw) == 45, f"not a signed session id: {sid!r}"
    return {
        "format": raw[0],
        "key_id": raw[1:5],
        "expires_ms": int.from_bytes(raw[17:25], "big"),
        "revision": int.from_bytes(raw[25:29], "big") & ((1 << 25) - 1),
        "caps_kept": int.from_bytes(raw[25:29], "big") >> 31,
        "caps": (int.from_bytes(raw[25:29], "big") >> 25) & 0x3F,
    }


def _signed_config(keys: list[str], ttl: int = 1800) -> dict:
    cfg = copy.deepcopy(harness.load_plugin_config(harness.E2E_CONFIG))
    cfg.pop("sessionTtlSeconds", None)
    cfg["sessions"] = {"store": "signed", "ttlSeconds": ttl, "signingKeys": keys}
    return cfg


def _headers(sid: str | None = None) -> dict[str, str]:
    h = {"Accept": ACCEPT, "Content-Type": "application/json"}
    if sid:
        h["Mcp-Session-Id"] = sid
    return h


def _call(name: str, args: dict, rid) -> dict:
    return {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": name, "arguments": args}}


def _greet(envoy: harness.Envoy, sid: str, who: str, rid="g"):
    """tools/call template_only on `envoy` with session `sid`, on a new connection."""
    return fresh_connection_post(f"{envoy.base_url}/mcp-servers/{SERVER}", _call("template_only", {"name": who}, rid),
                                 _headers(sid))


def _assert_ok(r, who: str) -> None:
    assert r.status_code == 200, f"HTTP {r.status_code} {r.text!r}"
    assert r.json()["result"]["content"][0]["text"] == f"Hello, {who}!", r.text


def _assert_not_found(r, rid) -> None:
    """404 with JSON-RPC error -32001 and the request id echoed."""
    assert r.status_code == 404, f"expected 404, got HTTP {r.status_code} {r.text!r}"
    msg = r.json()
    assert msg["error"]["code"] == SESSION_NOT_FOUND, msg
    assert msg["id"] == rid, f"request id {rid!r} not echoed: {msg}"


def _worker_connections(envoy: harness.Envoy) -> dict[str, int]:
    stats = envoy.stats(rf"listener\.127\.0\.0\.1_{envoy.ports.mcp}\.worker_\d+\.downstream_cx_total")
    return {re.search(r"worker_(\d+)", k).group(1): v for k, v in stats.items()}


def _requests_served(envoy: harness.Envoy) -> int:
    return envoy.stats(r"^http\.mcp\.downstream_rq_total$")["http.mcp.downstream_rq_total"]


# --- fixtures ----------------------------------------------------------------------------------

STARTED: list[harness.Envoy] = []  # every Envoy of this module that served, for the final log check


@pytest.fixture(scope="module")
def run_dir():
    return harness.new_run_dir("replicas")


@pytest.fixture(scope="module")
def upstream(run_dir):
    try:
        harness.wasm_path()
        up = harness.DemoUpstream(log_dir=run_dir).start()
    except harness.HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield up
    up.stop()


def _start(cfg, name: str, upstream, run_dir, **kw) -> harness.Envoy:
    """Starts one Envoy from this thread (required with hot restart: see harness.Envoy.hot_restart)."""
    envoy = harness.Envoy(cfg, upstream_port=upstream.port, run_dir=run_dir, name=name, wasm=harness.wasm_path(), **kw)
    try:
        envoy.start()
    except harness.HarnessError as exc:
        pytest.fail(f"Envoy {name} did not start: {exc}", pytrace=False)
    STARTED.append(envoy)
    return envoy


def _start_all(upstream, run_dir, *specs: tuple[dict, str]) -> list[harness.Envoy]:
    """Starts one Envoy per (plugin config, name), concurrently; fails the test if any does not come up."""
    envoys = [
        harness.Envoy(cfg, upstream_port=upstream.port, run_dir=run_dir, name=name, wasm=harness.wasm_path())
        for cfg, name in specs
    ]
    with ThreadPoolExecutor(len(envoys)) as pool:
        errors = [f.exception() for f in [pool.submit(e.start) for e in envoys]]
    if any(errors):
        for e in envoys:
            e.stop()
        pytest.fail("\n".join(f"Envoy {e.name} did not start: {err}" for e, err in zip(envoys, errors) if err),
                    pytrace=False)
    STARTED.extend(envoys)
    return envoys


@pytest.fixture(scope="module")
def replicas(upstream, run_dir):
    """Two replicas with the same key."""
    cfg = _signed_config([KEY_OLD])
    a, b = _start_all(upstream, run_dir, (cfg, "replica-a"), (cfg, "replica-b"))
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture(scope="module")
def rotation(upstream, run_dir):
    """Mid-rotation, keys [NEW, OLD] (the new key signs, both verify), and after it, only NEW."""
    rotated, new_only = _start_all(
        upstream, run_dir, (_signed_config([KEY_NEW, KEY_OLD]), "rotated"), (_signed_config([KEY_NEW]), "new-only")
    )
    yield rotated, new_only
    rotated.stop()
    new_only.stop()


@pytest.fixture(scope="module")
def short_pair(upstream, run_dir):
    """Two replicas with a 3-second session lifetime."""
    cfg = _signed_config([KEY_SHORT], ttl=SHORT_TTL)
    a, b = _start_all(upstream, run_dir, (cfg, "short-a"), (cfg, "short-b"))
    yield a, b
    a.stop()
    b.stop()


# --- 1. one MCP client, two replicas -------------------------------------------------------------


def _alternating_transport(ports: list[int]):
    """An httpx2 transport that sends successive requests alternately to each port (same host, path)."""
    import httpx2

    class AlternatingTransport(httpx2.AsyncBaseTransport):
        def __init__(self):
            self.ports = ports
            self.inner = httpx2.AsyncHTTPTransport()
            # One entry per request, in the order they were sent: method, port, the Mcp-Session-Id
            # sent, and when answered, the status and the Mcp-Session-Id of the answer.
            self.sent: list[dict] = []

        async def handle_async_request(self, request):
            port = self.ports[len(self.sent) % len(self.ports)]
            request.url = request.url.copy_with(port=port)
            request.headers["Host"] = f"127.0.0.1:{port}"
            entry = {"method": request.method, "port": port, "sid": request.headers.get("mcp-session-id")}
            self.sent.append(entry)
            response = await self.inner.handle_async_request(request)
            entry["status"] = response.status_code
            entry["issued"] = response.headers.get("mcp-session-id")
            return response

        async def aclose(self):
            await self.inner.aclose()

    return AlternatingTransport()


def test_one_sdk_session_alternating_between_replicas(replicas, e2e_config):
    """The Python MCP SDK talks to A and B in turn (every HTTP request goes to the other replica):
    initialize, every tools/list page, tools/call: all succeed with the one session id A issued."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    a, b = replicas
    before = {a.name: _requests_served(a), b.name: _requests_served(b)}
    transport = _alternating_transport([a.ports.mcp, b.ports.mcp])
    cities = ["Paris", "Lima", "Oslo", "Kyoto"]

    async def go():
        http = httpx2.AsyncClient(transport=transport, timeout=httpx2.Timeout(15.0))
        async with http:
            stream = streamable_http_client(f"{a.base_url}/mcp-servers/{SERVER}", http_client=http)
            async with Client(stream, mode="legacy", cache=None, read_timeout_seconds=15) as c:
                tools, pages = await list_all_tools(c)
                results = []
                for i, city in enumerate(cities):
                    results.append(("weather", city, await c.call_tool("get_weather", {"city": city})))
                    results.append(("greet", f"r{i}", await c.call_tool("template_only", {"name": f"r{i}"})))
                # Pages fetched again after the calls: still the same session on both replicas.
                again, _ = await list_all_tools(c)
                return c.server_info, tools, pages, results, again

    info, tools, pages, results, again = run_async(go)

    demo = next(s for s in e2e_config["servers"] if s["name"] == SERVER)
    assert info.name == SERVER
    assert [t.name for t in tools] == [t["name"] for t in demo["tools"]] == [t.name for t in again]
    assert pages == -(-len(demo["tools"]) // e2e_config["toolsPageSize"]) and pages > 1
    for kind, arg, r in results:
        assert not r.is_error, (kind, arg, r)
        if kind == "weather":
            temp = sum(ord(ch) for ch in arg) % 25 + 5  # demo_upstream's deterministic weather
            assert r.content[0].text == f"It is {temp} degrees (metric) in {arg}.", r
        else:
            assert r.content[0].text == f"Hello, {arg}!", r

    # One session: A issued it (initialize was the first request), and every later request carried it.
    sent = transport.sent
    assert (sent[0]["method"], sent[0]["port"], sent[0]["sid"]) == ("POST", a.ports.mcp, None), sent[0]
    sid = sent[0]["issued"]
    assert sid and _decode(sid)["key_id"] == _key_id(KEY_OLD), sent[0]
    assert all(e["sid"] == sid for e in sent[1:]), sent
    # Every request answered with success; the SDK's optional GET stream gets 405 (no server push).
    assert all(e["status"] < 400 or (e["method"], e["status"]) == ("GET", 405) for e in sent), sent
    per_port = Counter(e["port"] for e in sent)
    assert per_port[a.ports.mcp] >= 6 and per_port[b.ports.mcp] >= 6, per_port
    # Envoy's own count agrees: both replicas served the requests sent to them.
    served = {a.name: _requests_served(a) - before[a.name], b.name: _requests_served(b) - before[b.name]}
    assert served[a.name] >= per_port[a.ports.mcp] and served[b.name] >= per_port[b.ports.mcp], (served, per_port)
    # The SDK ended the session with DELETE when it closed.
    assert [(e["method"], e["status"]) for e in sent if e["method"] == "DELETE"] == [("DELETE", 204)], sent


def test_session_ids_carry_the_revision_and_a_fixed_expiry(replicas):
    a, b = replicas
    with RawMcp(a.base_url) as raw:
        t0 = time.time()
        sid, result = raw.initialize(SERVER, version="2025-06-18")
    fields = _decode(sid)
    assert result["protocolVersion"] == "2025-06-18"
    assert fields["format"] == 1 and fields["revision"] == 20250618, fields
    assert (fields["caps_kept"], fields["caps"]) == (1, 0), "initialize declared no capabilities: kept as none"
    assert abs(fields["expires_ms"] / 1000 - (t0 + 1800)) < 5, fields
    for i, envoy in enumerate((b, a, b)):
        _assert_ok(_greet(envoy, sid, f"x{i}"), f"x{i}")
    assert _decode(sid)["expires_ms"] == fields["expires_ms"]  # the id never changes: nothing to extend


# --- 2. key rotation ---------------------------------------------------------------------------


def test_key_rotation(replicas, rotation):
    """[NEW, OLD] accepts ids signed with OLD and signs with NEW; OLD-only replicas refuse NEW ids, and
    a NEW-only replica refuses OLD ids."""
    a, b = replicas
    rotated, new_only = rotation
    with RawMcp(a.base_url) as raw:
        old_sid, _ = raw.initialize(SERVER)
    with RawMcp(rotated.base_url) as raw:
        new_sid, _ = raw.initialize(SERVER)
    assert _decode(old_sid)["key_id"] == _key_id(KEY_OLD)
    assert _decode(new_sid)["key_id"] == _key_id(KEY_NEW), "the first key of signingKeys must sign"

    _assert_ok(_greet(rotated, old_sid, "old-on-rotated"), "old-on-rotated")
    _assert_ok(_greet(rotated, new_sid, "new-on-rotated"), "new-on-rotated")
    _assert_ok(_greet(new_only, new_sid, "new-on-new"), "new-on-new")
    for i, envoy in enumerate((a, b)):
        _assert_not_found(_greet(envoy, new_sid, "x", rid=f"new-on-old-{i}"), f"new-on-old-{i}")
    _assert_not_found(_greet(new_only, old_sid, "x", rid=17), 17)
    # ... and the old id is still good where OLD is known.
    _assert_ok(_greet(b, old_sid, "old-on-b"), "old-on-b")


# --- 3. tampered and foreign ids ---------------------------------------------------------------


def _other_char(c: str) -> str:
    return "B" if c == "A" else "A"


def test_tampered_and_foreign_ids_are_refused_on_both_replicas(replicas):
    a, b = replicas
    with RawMcp(a.base_url) as raw:
        sid, _ = raw.initialize(SERVER)
        other_sid, _ = raw.initialize(OTHER_SERVER)
    # Positions in the format byte, key id, nonce, expiry, revision and tag.
    bad = {f"flip@{i}": sid[:i] + _other_char(sid[i]) + sid[i + 1:] for i in (0, 3, 12, 25, 36, 45, 59)}
    bad.update({
        "truncated-1": sid[:-1],
        "truncated-4": sid[:-4],
        "appended-1": sid + "A",
        "appended-4": sid + "AAAA",
        "case-swapped": sid.swapcase(),
        f"id-of-{OTHER_SERVER}": other_sid,
    })
    n = 0
    for envoy in (a, b):
        for what, forged in bad.items():
            assert forged != sid
            n += 1
            rid = f"{what}-{envoy.name}"
            _assert_not_found(_greet(envoy, forged, "x", rid=rid), rid)
            # An integer id is echoed as an integer.
            _assert_not_found(_greet(envoy, forged, "x", rid=n), n)
    # The genuine ids are fine on both, the other server's on its own server.
    for envoy in (a, b):
        _assert_ok(_greet(envoy, sid, "genuine"), "genuine")
        r = fresh_connection_post(f"{envoy.base_url}/mcp-servers/{OTHER_SERVER}",
                                  _call("test_simple_text", {}, 5), _headers(other_sid))
        assert r.status_code == 200 and not r.json()["result"]["isError"], r.text


# --- 4. DELETE of a signed session -------------------------------------------------------------


def test_delete_revokes_on_this_envoy_only_until_expiry(short_pair):
    """DELETE on A: 404 on A (every worker) at once; B keeps accepting the id until its fixed expiry,
    however busy, then 404 on both."""
    a, b = short_pair
    with RawMcp(a.base_url) as raw:
        t0 = time.time()
        sid, _ = raw.initialize(SERVER)
        expires = _decode(sid)["expires_ms"] / 1000
        assert abs(expires - (t0 + SHORT_TTL)) < 1.0, (expires, t0)
        _assert_ok(_greet(b, sid, "before"), "before")

        r = raw.delete(SERVER, sid)
        assert r.status_code == 204, f"DELETE: HTTP {r.status_code} {r.text!r}"

        # 404 on A, on new connections, until both of A's workers have refused it.
        before = _worker_connections(a)
        assert len(before) == 2, f"expected 2 workers: {before}"
        for i in range(200):
            _assert_not_found(_greet(a, sid, "x", rid=i), i)
            used = {w: n - before.get(w, 0) for w, n in _worker_connections(a).items()}
            if i >= 5 and all(n >= 3 for n in used.values()):
                break
        assert all(n >= 3 for n in used.values()), f"not every worker of A was asked: {used}"
        r = raw.delete(SERVER, sid)
        assert r.status_code == 404, f"second DELETE: HTTP {r.status_code} {r.text!r}"
        assert time.time() < expires - 0.3, "too slow: the id expired before the revocation was checked"

    # B still accepts it, used continuously, until it expires.
    i = 0
    while time.time() < expires - 0.4:
        _assert_ok(_greet(b, sid, f"b{i}"), f"b{i}")
        i += 1
        time.sleep(0.2)
    assert i >= 3, f"only {i} requests on B before expiry"
    time.sleep(max(0.0, expires + 0.3 - time.time()))
    for envoy in (b, a):
        _assert_not_found(_greet(envoy, sid, "x", rid=f"expired-{envoy.name}"), f"expired-{envoy.name}")
    with RawMcp(b.base_url) as raw:
        assert raw.delete(SERVER, sid).status_code == 404


# --- 5. hot restart ----------------------------------------------------------------------------


def _hot_restart_envoy(cfg: dict, name: str, upstream, run_dir) -> harness.Envoy:
    return _start(cfg, name, upstream, run_dir, hot_restart=True)


def _hot_restart(envoy: harness.Envoy) -> None:
    parent = envoy.proc
    assert envoy.server_info()["command_line_options"]["restart_epoch"] == 0
    try:
        returned = envoy.hot_restart()
    except harness.HarnessError as exc:
        pytest.fail(f"hot restart of {envoy.name} failed: {exc}", pytrace=False)
    assert returned is parent and parent.returncode == 0, f"epoch 0 exited with {parent.returncode}"
    info = envoy.server_info()
    assert info["command_line_options"]["restart_epoch"] == 1 and info["state"] == "LIVE", info
    assert envoy.proc.pid != parent.pid and envoy.alive()


def test_signed_sessions_survive_a_hot_restart(upstream, run_dir):
    envoy = _hot_restart_envoy(_signed_config([KEY_OLD]), "hot-signed", upstream, run_dir)
    try:
        with RawMcp(envoy.base_url) as raw:
            sid, _ = raw.initialize(SERVER)
        _assert_ok(_greet(envoy, sid, "epoch0"), "epoch0")
        _hot_restart(envoy)
        # Epoch 1, every worker: the same id.
        before = _worker_connections(envoy)
        for i in range(40):
            _assert_ok(_greet(envoy, sid, f"e1-{i}"), f"e1-{i}")
            used = {w: n - before.get(w, 0) for w, n in _worker_connections(envoy).items()}
            if i >= 5 and len(used) == 2 and all(n >= 2 for n in used.values()):
                break
        assert len(used) == 2 and all(n >= 2 for n in used.values()), used
        with RawMcp(envoy.base_url) as raw:
            weather = raw.rpc(SERVER, sid, "tools/call", {"name": "get_weather", "arguments": {"city": "Paris"}})
            assert weather["result"]["content"][0]["text"] == "It is 16 degrees (metric) in Paris.", weather
            assert raw.delete(SERVER, sid).status_code == 204
    finally:
        envoy.stop()


def test_local_sessions_are_lost_on_a_hot_restart(upstream, run_dir):
    """The documented contrast: `store: local` keeps sessions in the process's shared data."""
    envoy = _hot_restart_envoy(harness.load_plugin_config(harness.E2E_CONFIG), "hot-local", upstream, run_dir)
    try:
        with RawMcp(envoy.base_url) as raw:
            sid, _ = raw.initialize(SERVER)
        assert len(sid) == 32, sid  # a local session id, not a signed one
        _assert_ok(_greet(envoy, sid, "epoch0"), "epoch0")
        _hot_restart(envoy)
        for i in range(6):
            _assert_not_found(_greet(envoy, sid, "x", rid=i), i)
        with RawMcp(envoy.base_url) as raw:  # epoch 1 itself is fine
            fresh, _ = raw.initialize(SERVER)
        _assert_ok(_greet(envoy, fresh, "epoch1"), "epoch1")
    finally:
        envoy.stop()


# --- 6. the two artifacts ----------------------------------------------------------------------

# proxy-wasm ABI 0.2.1 host functions (module "env"): the spec's list, as proxy-wasm-cpp-host exports it.
PROXY_WASM_0_2_1 = {
    f"proxy_{name}"
    for name in (
        "log get_log_level get_status set_property get_property send_local_response continue_stream close_stream "
        "get_shared_data set_shared_data register_shared_queue resolve_shared_queue dequeue_shared_queue "
        "enqueue_shared_queue get_header_map_value add_header_map_value replace_header_map_value "
        "remove_header_map_value get_header_map_pairs set_header_map_pairs get_header_map_size "
        "get_buffer_status get_buffer_bytes set_buffer_bytes http_call grpc_call grpc_stream grpc_close "
        "grpc_cancel grpc_send set_tick_period_milliseconds get_current_time_nanoseconds define_metric "
        "increment_metric record_metric get_metric set_effective_context done call_foreign_function"
    ).split()
}
# The WASI functions proxy-wasm hosts provide.
WASI = set(
    "fd_write fd_read fd_seek fd_close fd_fdstat_get environ_get environ_sizes_get args_get args_sizes_get "
    "clock_time_get random_get proc_exit path_open fd_prestat_get fd_prestat_dir_name".split()
)


def _leb(b: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = b[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, i


def _name(b: bytes, i: int) -> tuple[str, int]:
    n, i = _leb(b, i)
    return b[i:i + n].decode(), i + n


def wasm_interface(path) -> tuple[set[tuple[str, str]], set[str]]:
    """(function imports as (module, name), exported names) of a wasm module (import section 2,
    export section 7)."""
    b = path.read_bytes()
    assert b[:8] == b"\0asm\x01\0\0\0", f"{path} is not a wasm module"
    imports: set[tuple[str, str]] = set()
    exports: set[str] = set()
    i = 8
    while i < len(b):
        section = b[i]
        size, start = _leb(b, i + 1)
        i = start + size
        p = b[start:i]
        if section == 2:
            count, j = _leb(p, 0)
            for _ in range(count):
                module, j = _name(p, j)
                name, j = _name(p, j)
                kind = p[j]
                j += 1
                if kind == 0:  # function: type index
                    _, j = _leb(p, j)
                    imports.add((module, name))
                elif kind == 1:  # table: reftype, limits
                    flags, j = _leb(p, j + 1)
                    _, j = _leb(p, j)
                    if flags & 1:
                        _, j = _leb(p, j)
                elif kind == 2:  # memory: limits
                    flags, j = _leb(p, j)
                    _, j = _leb(p, j)
                    if flags & 1:
                        _, j = _leb(p, j)
                elif kind == 3:  # global: valtype, mutability
                    j += 2
                else:
                    raise AssertionError(f"{path}: unknown import kind {kind}")
        elif section == 7:
            count, j = _leb(p, 0)
            for _ in range(count):
                name, j = _name(p, j)
                _, j = _leb(p, j + 1)
                exports.add(name)
    return imports, exports


def _artifact(getter):
    try:
        return getter()
    except harness.HarnessError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_vanilla_module_imports_only_the_standard_abi():
    imports, exports = wasm_interface(_artifact(harness.wasm_path))
    assert imports, "no imports parsed"
    assert not [n for _, n in imports if n.startswith("proxy_redis_")], sorted(imports)
    foreign = sorted(
        (m, n) for m, n in imports
        if not (m == "env" and n in PROXY_WASM_0_2_1) and not (m == "wasi_snapshot_preview1" and n in WASI)
    )
    assert not foreign, f"imports outside proxy-wasm 0.2.1 + WASI: {foreign}"
    assert "proxy_abi_version_0_2_1" in exports
    assert "proxy_on_redis_call_response" not in exports


def test_higress_module_imports_higress_redis_calls():
    imports, exports = wasm_interface(_artifact(harness.higress_wasm_path))
    assert {("env", "proxy_redis_init"), ("env", "proxy_redis_call")} <= imports, sorted(imports)
    assert "proxy_on_redis_call_response" in exports
    # Higress's own ABI version, and only that one: Higress takes the first proxy_abi_version_* export and
    # withholds the request body from 0.2.0/0.2.1 modules that pause on headers.
    assert {e for e in exports if e.startswith("proxy_abi_version_")} == {"proxy_abi_version_0_2_100"}
    extra = sorted(
        (m, n) for m, n in imports
        if not (m == "env" and n in PROXY_WASM_0_2_1) and not (m == "wasi_snapshot_preview1" and n in WASI)
    )
    assert extra == [("env", "proxy_redis_call"), ("env", "proxy_redis_init")], extra


def _refused(cfg, name: str, wasm) -> str:
    """Starts an Envoy that must refuse to come up; returns its log."""
    envoy = harness.Envoy(cfg, upstream_port=harness.unused_port(), run_dir=harness.new_run_dir(name), name=name,
                          wasm=wasm)
    with pytest.raises(harness.HarnessError, match="exited"):
        envoy.start(timeout=30)
    return envoy.log_text()


def _drop_export_script():
    """scripts/wasm-drop-export.py as a module (its name has dashes)."""
    path = harness.ROOT / "scripts" / "wasm-drop-export.py"
    spec = importlib.util.spec_from_file_location("wasm_drop_export", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vanilla_envoy_refuses_the_higress_module(tmp_path):
    """Why there are two artifacts. Vanilla Envoy refuses the Higress build for its ABI version (0.2.100,
    Higress's own); and even announcing 0.2.1, as the crate would, it is refused because vanilla Envoy has
    no proxy_redis_* and will not load a module that imports a function it lacks."""
    cfg = harness.load_plugin_config(harness.E2E_CONFIG)
    higress = _artifact(harness.higress_wasm_path)
    log = _refused(cfg, "envoy-higress-wasm", higress)
    assert "Missing or unknown Proxy-Wasm ABI version" in log, log[-3000:]
    as_0_2_1 = tmp_path / "higress-abi-0.2.1.wasm"
    rename = {"proxy_abi_version_0_2_100": "proxy_abi_version_0_2_1"}
    as_0_2_1.write_bytes(_drop_export_script().rewrite_exports(higress.read_bytes(), lambda n: rename.get(n, n)))
    assert wasm_interface(as_0_2_1)[1] >= {"proxy_abi_version_0_2_1", "proxy_on_redis_call_response"}
    log = _refused(cfg, "envoy-higress-wasm-0-2-1", as_0_2_1)
    assert re.search(r"missing import: env\.proxy_redis_(init|call)", log), log[-3000:]


def test_vanilla_module_refuses_store_redis_at_load():
    cfg = harness.load_plugin_config(harness.E2E_CONFIG)
    cfg.pop("sessionTtlSeconds", None)
    cfg["sessions"] = {"store": "redis", "redis": {"cluster": "x"}}
    log = _refused(cfg, "envoy-store-redis", _artifact(harness.wasm_path))
    line = next((ln for ln in log.splitlines() if "field 'sessions.store'" in ln), None)
    assert line is not None, log[-3000:]
    assert "invalid plugin config" in line and "store: redis needs Higress" in line, line
    assert "mcp_gateway_higress.wasm" in line and "store: signed" in line, line


# --- the logs of every Envoy that served ---------------------------------------------------------


def test_no_plugin_failure_in_any_log():
    """Last in this file: no panic, trap or VM failure in the log of any Envoy above (every epoch)."""
    assert STARTED, "no Envoy ran in this module (this check belongs to a run of the whole file)"
    failures = {e.name: harness.crash_lines(e.log_text()) for e in STARTED}
    assert not any(failures.values()), {k: v for k, v in failures.items() if v}
