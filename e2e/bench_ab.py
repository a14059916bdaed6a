#!/usr/bin/env python3
"""Two plugin builds compared on `make bench`'s section 6 call (a proxied stateless `tools/call`), on a loaded
machine: one gateway Envoy per build (`--concurrency 1`) in front of one upstream Envoy, and short wrk runs
that alternate build and side (proxied, and plain proxying on the same Envoy's baseline listener) round by
round, so that both builds see the same load. Prints, per build, the medians of gateway CPU per request,
req/s and p50 of each side, and of the per-round differences and ratios (proxied against plain).

Either build may be section 6's floor filter (`floor.wasm`, which `e2e/bench.py --proxy-only` builds from
e2e/floor into its run directory, target/bench/runs/<run>/): it ignores the plugin's configuration and sends
the same call on to the backend's path as the plugin does, so the plugin and the floor under it are compared
side by side the same way (`empty.wasm` rewrites nothing, so it cannot stand in for the plugin here).

Usage: .venv/bin/python e2e/bench_ab.py A.wasm B.wasm [--levels 8,32] [--rounds 16] [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics as st
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench
import harness

SIDES = ("proxy", "baseline")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--levels", default="8,32")
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--seconds", type=int, default=2)
    args = ap.parse_args()
    builds = {"A": args.a.resolve(), "B": args.b.resolve()}
    for name, path in builds.items():
        if not path.is_file():
            ap.error(f"{name}: no such file {path}")
    wrk = bench.ensure_wrk()
    run_dir = bench.new_bench_run_dir()
    upstream = bench.UpstreamEnvoy(run_dir).start()
    envoys: dict[str, harness.Envoy] = {}
    try:
        for name, wasm in builds.items():
            envoys[name] = harness.Envoy(bench.proxy_plugin_config(), upstream_port=upstream.port, run_dir=run_dir,
                                         name=f"ab-{name}", concurrency=1, wasm=wasm)
            envoys[name].start()
        headers = {"content-type": "application/json", "accept": harness.ACCEPT,
                   "mcp-protocol-version": harness.LATEST}
        script = bench.write_wrk_script(run_dir / "ab.lua", "POST", headers,
                                        json.dumps(bench.PROXY_CALL, separators=(",", ":")))
        urls = {(n, "proxy"): f"{e.base_url}/mcp-servers/proxied" for n, e in envoys.items()}
        urls |= {(n, "baseline"): f"{e.baseline_url}/mcp" for n, e in envoys.items()}
        for url in urls.values():
            bench.verify_proxy_call(url)
        print(f"A = {builds['A']}\nB = {builds['B']}\nlogs in {run_dir}")
        for c in [int(x) for x in args.levels.split(",")]:
            samples: dict[tuple[str, str], list[dict]] = {key: [] for key in urls}
            for r in range(args.rounds):
                for name in (builds if r % 2 == 0 else list(builds)[::-1]):
                    for side in (SIDES if r % 2 == 0 else SIDES[::-1]):
                        prefix = "mcp" if side == "proxy" else "baseline"
                        samples[(name, side)].append(bench.measure(
                            wrk, envoys[name], upstream, side, urls[(name, side)], script, c, args.seconds, 0,
                            prefix=prefix))
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            print(f"{c} connections, {args.rounds} rounds of {args.seconds} s per build and side (load {load})")
            for name in builds:
                for side in SIDES:
                    xs = samples[(name, side)]
                    print(f"  {name} {side:<8} CPU {st.median(x['gateway_cpu_us_per_req'] for x in xs):6.1f} us/req"
                          f"  {st.median(x['rps'] for x in xs):7.0f} req/s  p50 "
                          f"{st.median(x['p50_us'] for x in xs) / 1000:6.3f} ms")
                pairs = list(zip(samples[(name, "proxy")], samples[(name, "baseline")]))
                extra = [p["gateway_cpu_us_per_req"] - b["gateway_cpu_us_per_req"] for p, b in pairs]
                thr = st.median(p["rps"] / b["rps"] for p, b in pairs)
                p50 = st.median(p["p50_us"] / b["p50_us"] for p, b in pairs)
                print(f"  {name} extra CPU {st.median(extra):6.1f} us/req (rounds: {[round(x) for x in extra]}); "
                      f"throughput {thr:.2f}x, p50 {p50:.2f}x")
    finally:
        for e in envoys.values():
            e.stop()
        upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
