#!/usr/bin/env python3
"""Proxied `tools/call` (type: mcp-proxy) against the same MCP backend reached through the same Envoy without
the plugin (its `baseline` listener), in one run: p50 latency of sequential calls, and throughput with N
concurrent clients. The backend is e2e/mcp_backend.py (the Python SDK's server, stateless, JSON answers),
which is slow next to Envoy, so the ratios say how much the plugin adds on top of a real MCP server.

With --sse: one call's latency to an SSE backend (the SDK's legacy SSE server, `transport: sse`) from a
Streamable HTTP client (each call its own backend stream: GET, initialize, notifications/initialized, the
call, answered by a local reply) against an SSE client of the same server through the same gateway (one
stream kept open, each call a POST whose answer comes on it), sequential calls, rounds alternated.

Usage: .venv/bin/python e2e/bench_proxy.py [--calls 400] [--clients 8] [--sse]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import queue
import threading

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from test_mcp_proxy import McpBackend, proxied  # noqa: E402

BODY = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}}
HEADERS = {"Accept": harness.ACCEPT, "MCP-Protocol-Version": harness.LATEST, "Content-Type": "application/json"}


def one(client: httpx.Client, url: str) -> float:
    t = time.perf_counter()
    r = client.post(url, json=BODY, headers=HEADERS)
    assert r.status_code == 200 and "echo: x" in r.text, r.text
    return time.perf_counter() - t


def run(url: str, calls: int, clients: int) -> tuple[float, float]:
    with httpx.Client(timeout=10) as c:
        for _ in range(20):
            one(c, url)
        p50 = statistics.median(one(c, url) for _ in range(calls))
    per = calls // clients

    def worker(_: int) -> None:
        with httpx.Client(timeout=10) as c:
            for _ in range(per):
                one(c, url)

    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    return p50, per * clients / (time.perf_counter() - t)


def sse_client_calls(base: str, calls: int) -> list[float]:
    """`calls` sequential tools/call over the legacy SSE transport (raw HTTP): seconds each."""
    answers: queue.Queue = queue.Queue()
    endpoint: queue.Queue = queue.Queue()
    stop = threading.Event()

    def read() -> None:
        try:
            with httpx.stream("GET", f"{base}/sse", headers={"Accept": "text/event-stream"}, timeout=None) as r:
                event = None
                for line in r.iter_lines():
                    if stop.is_set():
                        return
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        (endpoint if event == "endpoint" else answers).put(line[5:].strip())
        except httpx.HTTPError:
            if not stop.is_set():
                raise

    threading.Thread(target=read, daemon=True).start()
    url = base.rsplit("/mcp-servers/", 1)[0] + endpoint.get(timeout=10)
    times = []
    with httpx.Client(timeout=10) as c:
        def send(body: dict) -> None:
            assert c.post(url, json=body).status_code == 202

        send({"jsonrpc": "2.0", "id": 0, "method": "initialize",
              "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "b", "version": "0"}}})
        answers.get(timeout=10)
        send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        for i in range(calls + 20):
            t = time.perf_counter()
            send({**BODY, "id": i + 1})
            while '"id":%d,' % (i + 1) not in answers.get(timeout=10):
                pass
            if i >= 20:
                times.append(time.perf_counter() - t)
    stop.set()
    return times


def bridge_calls(url: str, calls: int) -> list[float]:
    """`calls` sequential tools/call from a Streamable HTTP client (raw HTTP) of an SSE backend: seconds each."""
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "b", "version": "0"}}}
    times = []
    with httpx.Client(timeout=10) as c:
        sid = c.post(url, json=init, headers=HEADERS).headers["mcp-session-id"]
        for i in range(calls + 20):
            t = time.perf_counter()
            r = c.post(url, json=BODY, headers={**HEADERS, "Mcp-Session-Id": sid})
            assert r.status_code == 200 and "echo: x" in r.text, r.text
            if i >= 20:
                times.append(time.perf_counter() - t)
    return times


def dance_calls(base: str, calls: int) -> list[float]:
    """What the gateway does for each call of a Streamable HTTP client, done by the client itself through
    Envoy without the plugin: open a stream, initialize, notifications/initialized, the call, close."""
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "b", "version": "0"}}}
    times = []
    with httpx.Client(timeout=10) as c:
        for i in range(calls + 20):
            t = time.perf_counter()
            with c.stream("GET", f"{base}/sse", headers={"Accept": "text/event-stream"}) as r:
                lines = r.iter_lines()
                data = lambda: next(line for line in lines if line.startswith("data:"))[5:].strip()  # noqa: E731
                url = base + data()
                assert c.post(url, json=init).status_code == 202
                data()
                assert c.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202
                assert c.post(url, json=BODY).status_code == 202
                assert "echo: x" in data()
            if i >= 20:
                times.append(time.perf_counter() - t)
    return times


def sse_main(args, run_dir) -> int:
    backend = McpBackend("sse", log_dir=run_dir).start()
    try:
        cfg = {"servers": [proxied("legacy", "/sse", transport="sse")]}
        with harness.gateway(cfg, tag="bench-proxy-sse", upstream=backend, run_dir=run_dir) as g:
            url = g.mcp_url("legacy")
            rows: dict[str, list[float]] = {"sse client": [], "streamable http client": [], "the same, by hand": []}
            for _ in range(2):
                rows["sse client"] += sse_client_calls(url, args.calls)
                rows["streamable http client"] += bridge_calls(url, args.calls)
                rows["the same, by hand"] += dance_calls(g.envoy.baseline_url, args.calls)
            p50 = {name: statistics.median(t) * 1000 for name, t in rows.items()}
            p90 = {name: statistics.quantiles(t, n=10)[-1] * 1000 for name, t in rows.items()}
            for name in rows:
                print(f"{name:24} p50 {p50[name]:.2f} ms   p90 {p90[name]:.2f} ms   ({len(rows[name])} calls)")
            print(f"streamable http / sse: p50 {p50['streamable http client'] / p50['sse client']:.2f}x; "
                  f"/ the same by hand without the plugin: {p50['streamable http client'] / p50['the same, by hand']:.2f}x")
    finally:
        backend.stop()
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--sse", action="store_true", help="a Streamable HTTP client of an SSE backend against an SSE client")
    args = ap.parse_args()
    run_dir = harness.new_run_dir("bench-proxy")
    if args.sse:
        return sse_main(args, run_dir)
    backend = McpBackend("stateless-json", log_dir=run_dir).start()
    try:
        with harness.gateway({"servers": [proxied("proxied")]}, tag="bench-proxy", upstream=backend, run_dir=run_dir) as g:
            plain = f"{g.envoy.baseline_url}/mcp"
            rows = {}
            for rnd in range(2):
                for name, url in (("plain", plain), ("plugin", g.mcp_url("proxied"))):
                    rows.setdefault(name, []).append(run(url, args.calls, args.clients))
            for name, r in rows.items():
                p50 = statistics.median(x[0] for x in r) * 1000
                rps = statistics.median(x[1] for x in r)
                print(f"{name:7} p50 {p50:.2f} ms   {rps:.0f} calls/s with {args.clients} clients")
            (pp, pr), (gp, gr) = [(statistics.median(x[0] for x in r), statistics.median(x[1] for x in r)) for r in rows.values()]
            thr, p50 = gr / pr, gp / pp
            verdict = "met" if thr >= 0.8 and p50 <= 1.25 else "NOT met"
            print(f"plugin/plain: throughput {thr:.2f}x, p50 {p50:.2f}x (issue 12's goal: >= 0.8x, <= 1.25x: {verdict})")
    finally:
        backend.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
