"""Hostile input must never take the plugin down.

Each test sends a bounded burst of malformed, oversized, deeply nested or mistyped input to its own
fresh Envoy (so that a crash is attributed to the test that caused it); afterwards that Envoy must
still be up, still serve normal MCP requests, and its log must show no plugin panic or wasm VM
failure. The last test of the whole run checks the log of the main Envoy the same way.
"""

from __future__ import annotations

import json
import random
import socket
import string
import time

import httpx
import pytest

import harness
from harness import ACCEPT, RawMcp, crash_lines

pytestmark = pytest.mark.hostile


@pytest.fixture
def fresh_gw(gw, e2e_config, request):
    """A new Envoy (plugin-config/e2e.yaml) for one hostile test, sharing the demo upstream."""
    tag = request.node.name.replace("test_", "hostile-")[:40]
    try:
        g = harness.start_gateway(e2e_config, tag=tag, upstream=gw.upstream, run_dir=gw.run_dir)
    except harness.HarnessError as exc:
        pytest.fail(f"could not start a gateway: {exc}", pytrace=False)
    yield g
    g.stop()

SERVER = "demo"
SEED = 20260728


def _still_serving(gw) -> None:
    harness.assert_still_serving(gw, SERVER)
    with RawMcp(gw.base_url, gw.prefix) as raw:
        sid, _ = raw.initialize(SERVER)
        msg = raw.rpc(SERVER, sid, "tools/call", {"name": "get_user", "arguments": {"id": 3}})
        assert json.loads(msg["result"]["content"][0]["text"])["name"] == "Grace Hopper"


def _assert_no_crash(gw) -> None:
    lines = crash_lines(gw.envoy.log_text())
    assert not lines, "plugin failures in the Envoy log:\n" + "\n".join(lines[:40])


def _hostile_bodies(rng: random.Random) -> list[bytes]:
    bodies: list[bytes] = []
    # random bytes
    for n in (1, 7, 64, 1024, 65536):
        bodies.append(bytes(rng.getrandbits(8) for _ in range(n)))
    # deep nesting (arrays and objects), inside and outside params
    for depth in (100, 1000, 10000, 50000):
        bodies.append(b"[" * depth + b"]" * depth)
        bodies.append(("{\"a\":" * depth + "1" + "}" * depth).encode())
        nested = "{\"a\":" * depth + "1" + "}" * depth
        bodies.append(f'{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"typed_args","arguments":{nested}}}}}'.encode())
    bodies.append(b"[" * 200000)  # unterminated
    # huge and odd ids
    for rid in ("1" * 5000, "-" + "9" * 400, "1e999999", "0.000000000000000000001", "18446744073709551616",
                json.dumps("x" * 100000), "null", "true", "[]", "{}"):
        bodies.append(f'{{"jsonrpc":"2.0","id":{rid},"method":"ping"}}'.encode())
    # wrong types everywhere
    wrong = [None, True, 0, -1, 1.5, "", "x", [], {}, [1, 2], {"a": None}, "\u0000", 10**30]
    for v in wrong:
        bodies.append(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": v}).encode())
        bodies.append(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                  "params": {"name": v, "arguments": {}}}).encode())
        bodies.append(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                  "params": {"name": "typed_args", "arguments": v}}).encode())
        bodies.append(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                  "params": {"name": "typed_args", "arguments": {"count": v, "ratio": v, "enabled": v, "level": v}}}).encode())
        bodies.append(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"cursor": v}}).encode())
        bodies.append(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": v}).encode())
        bodies.append(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                  "params": {"protocolVersion": v, "capabilities": v, "clientInfo": v}}).encode())
        bodies.append(json.dumps({"jsonrpc": v, "id": v, "method": v}).encode())
        bodies.append(json.dumps([v, v]).encode())
    # unicode garbage: lone surrogates, overlong UTF-8, BOM, NULs, RTL overrides, huge strings
    bodies.append(b'{"jsonrpc":"2.0","id":1,"method":"ping\xc0\x80"}')
    bodies.append(b'\xef\xbb\xbf{"jsonrpc":"2.0","id":1,"method":"ping"}')
    bodies.append('{"jsonrpc":"2.0","id":"\ud800","method":"ping"}'.encode("utf-8", "surrogatepass"))
    bodies.append(b'{"jsonrpc":"2.0","id":"\\ud800\\udc00\\udfff","method":"ping"}')
    bodies.append('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo_query","arguments":{"q":"\u202e\u0000\uffff\U0010ffff"}}}'.encode())
    for tool in ("echo_path", "echo_url_template", "echo_headers", "echo_form", "echo_template_body", "echo_header_injection"):
        for s in ("\u0000", "\r\n", "{{ 7*7 }}", "{% for x in range(999999999) %}x{% endfor %}", "%", "%zz", "../../..",
                  "x" * 200000, "\ud800"):
            args = {"segment": s, "part": s, "x-trace": s, "lang": s, "user": s, "name": s, "note": s}
            bodies.append(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                      "params": {"name": tool, "arguments": args}}).encode("utf-8", "surrogatepass"))
    # random printable junk and random JSON-ish junk
    for _ in range(40):
        n = rng.randint(1, 2000)
        bodies.append("".join(rng.choice(string.printable) for _ in range(n)).encode())
        bodies.append("".join(rng.choice('{}[]":,0123456789.eE-+truefalsnul \\u') for _ in range(n)).encode())
    return bodies


def _report(gw, problems: list[str]) -> None:
    """Fails with the plugin failures of the log first (the cause), then the bad answers."""
    lines = crash_lines(gw.envoy.log_text())
    msg = []
    if lines:
        msg.append("plugin failures in the Envoy log:\n" + "\n".join(lines[:20]))
    if problems:
        msg.append(f"{len(problems)} bad answers (first 15):\n" + "\n".join(problems[:15]))
    assert not msg, "\n\n".join(msg)


def test_hostile_bodies_do_not_crash_the_plugin(fresh_gw):
    gw = fresh_gw
    rng = random.Random(SEED)
    bodies = _hostile_bodies(rng)
    problems: list[str] = []
    with RawMcp(gw.base_url, gw.prefix, timeout=30) as raw:
        sid, _ = raw.initialize(SERVER)
        sid_old, _ = raw.initialize(SERVER, "2025-03-26")
        for i, body in enumerate(bodies):
            for session, version in ((None, None), (sid, None), (sid_old, "2025-03-26")):
                try:
                    r = raw.post(SERVER, content=body, session=session, version=version)
                except httpx.HTTPError as exc:
                    problems.append(f"body #{i} ({body[:60]!r}): {exc.__class__.__name__}")
                    continue
                if r.status_code >= 500:
                    problems.append(f"body #{i} ({body[:60]!r}): HTTP {r.status_code} {r.text[:200]!r}")
    _report(gw, problems)
    _still_serving(gw)


def test_hostile_headers_do_not_crash_the_plugin(fresh_gw):
    gw = fresh_gw
    url = gw.mcp_url(SERVER)
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})
    with RawMcp(gw.base_url, gw.prefix) as raw:
        sid, _ = raw.initialize(SERVER)
    cases = [
        {"Mcp-Session-Id": "\x7f" * 10},
        {"Mcp-Session-Id": "a" * 8000},
        {"Mcp-Session-Id": "0" * 32 + ", " + "1" * 32},
        {"Mcp-Session-Id": sid, "MCP-Protocol-Version": "x" * 8000},
        {"Origin": "http://" + "a" * 8000},
        {"Origin": "http://[::1"},
        {"Origin": "://"},
        {"Accept": "," * 5000},
        {"Accept": "application/json;" + "q=1;" * 1000 + ", text/event-stream"},
        {"Content-Type": "application/json; charset=" + "x" * 5000},
        # header values that are not UTF-8 (obs-text bytes are legal in HTTP/1.1)
        {"Mcp-Session-Id": "é".encode("latin-1")},
        {"Mcp-Session-Id": sid, "X-Other": "\xff\xfe".encode("latin-1")},
        {"Origin": "http://\xe9vil.example.com".encode("latin-1")},
        {"Accept": "application/json, text/event-stream, \xe9/\xe9".encode("latin-1")},
        {"Content-Type": "application/json; x=\xe9".encode("latin-1")},
        {"MCP-Protocol-Version": "2025-06-18\xe9".encode("latin-1")},
    ]
    problems: list[str] = []
    with httpx.Client(timeout=15) as c:
        # Outside the prefix, such headers must simply pass through (checked first, before any
        # crash the cases below might cause).
        for _ in range(4):  # reach both workers
            try:
                r = c.get(f"{gw.base_url}/echo/pass", headers={"X-Other": "\xff\xfe".encode("latin-1"), "Connection": "close"})
                if r.status_code != 200:
                    problems.append(f"pass-through with a non-UTF-8 header: HTTP {r.status_code} {r.text[:200]!r}")
            except httpx.HTTPError as exc:
                problems.append(f"pass-through with a non-UTF-8 header: {exc!r}")
        for extra in cases:
            headers = {"Accept": ACCEPT, "Content-Type": "application/json", **extra}
            try:
                r = c.post(url, content=body, headers=headers)
            except httpx.HTTPError:
                continue  # the proxy may reset the connection; what matters is that it stays up
            if r.status_code >= 500:
                problems.append(f"{ {k: (v[:40] if isinstance(v, (str, bytes)) else v) for k, v in extra.items()} }: "
                                f"HTTP {r.status_code} {r.text[:200]!r}")
    # A request line with a raw non-UTF-8 byte in the path.
    with socket.create_connection(("127.0.0.1", gw.envoy.ports.mcp), timeout=5) as sock:
        sock.sendall(b"POST " + gw.prefix.encode() + b"/demo\xe9 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
                     + b"\r\nConnection: close\r\n\r\n" + body.encode())
        answer = sock.recv(65536)
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
        if status >= 500:
            problems.append(f"raw non-UTF-8 path: {answer[:200]!r}")
    _report(gw, problems)
    _still_serving(gw)


def test_abandoned_requests_do_not_crash_the_plugin(fresh_gw):
    """Clients that go away while a tool call is in flight."""
    gw = fresh_gw
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                       "params": {"name": "slow_call", "arguments": {"ms": 300}}})
    with RawMcp(gw.base_url, gw.prefix) as raw:
        sid, _ = raw.initialize(SERVER)
    for _ in range(10):
        try:
            with httpx.Client(timeout=0.05) as c:
                c.post(gw.mcp_url(SERVER), content=body,
                       headers={"Accept": ACCEPT, "Content-Type": "application/json", "Mcp-Session-Id": sid})
        except httpx.TimeoutException:
            pass
    time.sleep(1.0)  # let the upstream answers of the abandoned calls arrive
    _report(gw, [])
    _still_serving(gw)


@pytest.mark.last
def test_envoy_log_has_no_plugin_failures(gw):
    """Runs after every other test: nothing in the whole run crashed the plugin of the main Envoy."""
    assert gw.envoy.alive(), "Envoy exited during the run"
    _still_serving(gw)
    _assert_no_crash(gw)
