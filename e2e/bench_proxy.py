#!/usr/bin/env python3
"""Proxied `tools/call` (type: mcp-proxy) against the same MCP backend reached through the same Envoy without
the plugin (its `baseline` listener), in one run: p50 latency of sequential calls, and throughput with N
concurrent clients. The backend is e2e/mcp_backend.py (the Python SDK's server, stateless, JSON answers),
which is slow next to Envoy, so the ratios say how much the plugin adds on top of a real MCP server.

Usage: .venv/bin/python e2e/bench_proxy.py [--calls 400] [--clients 8]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=400)
    ap.add_argument("--clients", type=int, default=8)
    args = ap.parse_args()
    run_dir = harness.new_run_dir("bench-proxy")
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
            print(f"plugin/plain: throughput {gr / pr:.2f}x, p50 {gp / pp:.2f}x")
    finally:
        backend.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
