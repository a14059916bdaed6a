#!/usr/bin/env python3
"""Large APIs in Envoy (figures only, nothing asserted): Stripe's and Kubernetes' conversions, as the CLI
writes them, loaded into Envoy with the plugin.

For each document (e2e/openapi_documents.py: Stripe's spec3 and Kubernetes 1.13's Swagger description) and
each setting (the default: shared definitions, output schemas 3 `$ref`s deep; `--inline-schemas`, every tool's
schemas whole as before shared definitions; `--output-schema-depth 2` and `1`; `--no-output-schemas`):
the CLI converts it (server URL http://demo.local, cluster demo), the JSON output (compacted) becomes the
plugin config of an Envoy with `--concurrency 2`, and this script reports the time from spawning Envoy to
the first served MCP initialize (and the CPU time Envoy used until then, which builds running beside it do
not inflate), Envoy's RSS then, and the size of one full tools/list pass (all pages), the CPU time Envoy spent on it and the RSS after it.

    .venv/bin/python e2e/bench_openapi_scale.py [--docs stripe,kubernetes-swagger] [--variants default,inline,2,1,none]

Needs `make build cli`. Results: target/bench/openapi-scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import httpx

import bench
import harness
import openapi_documents

CLI = harness.ROOT / "target" / "release" / "mcp-gateway"
VARIANTS = {"default": [], "inline": ["--inline-schemas"], "2": ["--output-schema-depth", "2"], "1": ["--output-schema-depth", "1"],
            "none": ["--no-output-schemas"]}


def tools_list(base: str, server: str) -> tuple[int, int, float]:
    """(tools, bytes of all pages' results, seconds) of one tools/list pass."""
    total = n = 0
    t0 = time.monotonic()
    with harness.RawMcp(base, timeout=300.0) as mcp:
        sid, _ = mcp.initialize(server)
        cursor = None
        while True:
            msg = mcp.rpc(server, sid, "tools/list", {"cursor": cursor} if cursor else {})
            total += len(json.dumps(msg["result"], separators=(",", ":")))
            n += len(msg["result"]["tools"])
            cursor = msg["result"].get("nextCursor")
            if not cursor:
                return n, total, time.monotonic() - t0


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far: load cost that other builds on the machine
    do not inflate, as they do wall time."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(name: str, variant: str, run_dir: Path, wasm: Path) -> dict:
    out = run_dir / f"{name}-{variant}.json"
    proc = subprocess.run([str(CLI), "openapi", str(openapi_documents.ensure(name)), "--name", name,
                           "--cluster", "demo", "--server-url", "http://demo.local", "-o", str(out),
                           *VARIANTS[variant]], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"mcp-gateway openapi {name}: {proc.stderr[-2000:]}")
    text = json.dumps(json.loads(out.read_text()), separators=(",", ":"))
    ports = harness.Ports.pick(demo=harness.unused_port())
    config = bench.write_envoy_config(harness.render_envoy_config(ports, text, wasm=wasm), run_dir, f"{name}-{variant}")
    base = f"http://127.0.0.1:{ports.mcp}"
    t0 = time.monotonic()
    envoy = bench.launch_envoy(config, run_dir, f"{name}-{variant}", 2)
    try:
        with httpx.Client(timeout=2.0) as http:
            while not bench.serves_initialize(http, f"{base}/mcp-servers/{name}"):
                if envoy.poll() is not None or time.monotonic() - t0 > 600:
                    raise SystemExit(f"Envoy did not serve {name} ({variant}): see {run_dir}")
                time.sleep(0.02)
        load = time.monotonic() - t0
        cpu = cpu_seconds(envoy.pid)
        rss = bench.rss_bytes(envoy.pid)
        cpu_loaded = cpu_seconds(envoy.pid)
        tools, size, list_s = tools_list(base, name)
        rss_listed = bench.rss_bytes(envoy.pid)
        list_cpu = cpu_seconds(envoy.pid) - cpu_loaded
    finally:
        bench.stop_proc(envoy)
    return {"document": name, "variant": variant, "config_bytes": len(text), "load_s": round(load, 2), "load_cpu_s": round(cpu, 2),
            "rss_mib": round((rss or 0) / 2**20),
            "rss_after_list_mib": round((rss_listed or 0) / 2**20), "tools": tools, "tools_list_bytes": size,
            "tools_list_s": round(list_s, 2), "tools_list_cpu_s": round(list_cpu, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", default="stripe,kubernetes-swagger")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    opts = ap.parse_args()
    if not CLI.is_file():
        raise SystemExit(f"{CLI} is missing: make cli")
    wasm = harness.wasm_path()
    run_dir = harness.new_run_dir("openapi-scale")
    rows = []
    for name in opts.docs.split(","):
        for variant in opts.variants.split(","):
            r = measure(name, variant, run_dir, wasm)
            rows.append(r)
            print(f"{name:<20} {variant:<8} config {r['config_bytes'] / 1e6:6.1f} MB  load {r['load_s']:5.1f} s "
                  f"({r['load_cpu_s']:.1f} s CPU)  "
                  f"RSS {r['rss_mib']:5d} MiB  tools/list {r['tools']} tools, {r['tools_list_bytes'] / 1e6:.1f} MB "
                  f"in {r['tools_list_s']} s ({r['tools_list_cpu_s']} s CPU; RSS then {r['rss_after_list_mib']} MiB)", flush=True)
    out = harness.ROOT / "target" / "bench" / "openapi-scale.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
