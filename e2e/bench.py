#!/usr/bin/env python3
"""`make bench`: the cost of the plugin, measured (figures only: nothing here asserts on timings).

1. Throughput and latency, with wrk (one thread), at a few numbers of connections:
     plugin    MCP tools/call of get_weather (plugin-config/example.yaml) POSTed to the `mcp`
               listener with a valid Mcp-Session-Id; the plugin makes the REST call
               GET /weather?city=Paris&units=metric to the cluster `demo`.
     baseline  that same REST request sent to the `baseline` listener of the same Envoy (no plugin),
               proxied to the same upstream.
   The upstream is a second Envoy answering /weather with a fixed JSON body (e2e/bench_upstream.yaml),
   so that it is never the bottleneck. Gateway Envoy --concurrency 1, upstream Envoy
   --concurrency 1, wrk -t 1. Reported: req/s, p50, p99, non-2xx responses, CPU time of the
   gateway Envoy per request, and the ratios plugin/baseline (goals: throughput >= 0.8x,
   p50 <= 1.25x).
2. Module size of the wasm (goal <= 1.5 MB = 1,500,000 bytes).
3. Start-up: time from spawning Envoy (with the plugin and plugin-config/example.yaml) to the first
   served MCP initialize, median of N runs; and the same Envoy without the wasm filter (to the first
   proxied request), so that the plugin's share is visible (goal <= 1.5 s).

Output: a table on stdout and target/bench/results.json (all figures + machine information).
Logs and rendered configurations: target/bench/runs/<run>/.

Options (each also settable by an environment variable):
  --levels 1,8,32        numbers of connections               BENCH_LEVELS
  --duration 8           seconds measured per level and side  BENCH_DURATION
  --warmup 1             seconds of warm-up before each one   BENCH_WARMUP (0: none)
  --repeat 1             rounds of the sweep, medians shown   BENCH_REPEAT (2-3 to compare builds)
  --startup-runs 3       start-up measurements of each kind   BENCH_STARTUP_RUNS (0: skip)
  --startup-concurrency 2  Envoy workers for the start-up runs (2, as `make run`)  BENCH_STARTUP_CONCURRENCY
  --output PATH          results JSON                         BENCH_OUTPUT
  --quick                levels 1,8, 2 s each, no warm-up, 1 start-up run
MCP_GATEWAY_WASM selects the plugin build (default target/wasm32-wasip1/release/mcp_gateway.wasm).

wrk comes from Debian: when it is missing, this script runs `apt-get install -y wrk` (as root).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import yaml  # noqa: E402

import harness  # noqa: E402

UPSTREAM_YAML = harness.E2E_DIR / "bench_upstream.yaml"
BENCH_DIR = harness.ROOT / "target" / "bench"
DEFAULT_OUTPUT = BENCH_DIR / "results.json"
SERVER = "demo"
TOOL = "get_weather"
TOOL_ARGS = {"city": "Paris", "units": "metric"}
REST_PATH = "/weather?city=Paris&units=metric"
EXPECTED_TEXT = "It is 21 degrees (metric) and sunny in Paris."
# The call under load; --tool/--args/--expect replace it.
CALL = {"tool": TOOL, "args": TOOL_ARGS, "expect": EXPECTED_TEXT}

GOAL_THROUGHPUT_RATIO = 0.80  # plugin req/s >= 0.8 x baseline
GOAL_P50_RATIO = 1.25  # plugin p50 <= 1.25 x baseline
GOAL_WASM_BYTES = 1_500_000  # 1.5 MB
GOAL_STARTUP_S = 1.5

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    pass


# --- processes: everything started here is registered and stopped on exit, error or Ctrl-C ------

_PROCS: list[subprocess.Popen] = []


def stop_proc(proc: subprocess.Popen | None) -> None:
    if proc is None:
        return
    harness._stop_process(proc, timeout=10.0)
    with contextlib.suppress(ValueError):
        _PROCS.remove(proc)


def stop_all() -> None:
    for proc in list(_PROCS):
        with contextlib.suppress(Exception):
            stop_proc(proc)


def _on_signal(signum, frame):  # noqa: ARG001
    raise KeyboardInterrupt(f"signal {signum}")


def next_base_id() -> int:
    # The harness's scheme (unique per process and instance), sharing its counter.
    harness._BASE_ID_COUNTER[0] += 1
    return (os.getpid() % 100000) * 10 + harness._BASE_ID_COUNTER[0] % 10 + 1000


def spawn_envoy(config: dict, run_dir: Path, name: str, concurrency: int) -> subprocess.Popen:
    """Envoy on a rendered configuration; returns at once (the caller polls for readiness)."""
    config_path = run_dir / f"{name}.yaml"
    with open(config_path, "w") as f:
        yaml.safe_dump(config, f, sort_keys=False)
    cmd = [
        str(harness.envoy_binary()), "-c", str(config_path), "--concurrency", str(concurrency),
        "--log-level", os.environ.get("E2E_ENVOY_LOG_LEVEL", "warn"),
        "--base-id", str(next_base_id()), "--disable-hot-restart",
    ]
    with open(run_dir / f"{name}.log", "wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=str(harness.ROOT), start_new_session=True,
        )
    _PROCS.append(proc)
    return proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def rss_bytes(pid: int) -> int | None:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


# --- the upstream Envoy -------------------------------------------------------------------------


class UpstreamEnvoy:
    def __init__(self, run_dir: Path):
        self.admin = harness.free_port()
        self.port = harness.free_port()
        while self.port == self.admin:
            self.port = harness.free_port()
        self.run_dir = run_dir
        self.proc: subprocess.Popen | None = None

    def start(self) -> UpstreamEnvoy:
        cfg = yaml.safe_load(UPSTREAM_YAML.read_text())
        cfg["admin"]["address"]["socket_address"].update({"address": "127.0.0.1", "port_value": self.admin})
        lst = harness._find_named(cfg["static_resources"]["listeners"], "upstream", "listener")
        lst["address"]["socket_address"].update({"address": "127.0.0.1", "port_value": self.port})
        self.proc = spawn_envoy(cfg, self.run_dir, "upstream", concurrency=1)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise BenchError(f"upstream Envoy exited with {self.proc.returncode}:\n"
                                 f"{harness.tail(self.run_dir / 'upstream.log')}")
            r = httpx.get(f"http://127.0.0.1:{self.port}{REST_PATH}", timeout=1.0)
            return r.status_code == 200

        harness.wait_until(ready, 30, interval=0.05, what="the upstream Envoy")
        return self

    def stop(self) -> None:
        stop_proc(self.proc)


# --- wrk ----------------------------------------------------------------------------------------

WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"err_connect":%.0f,"err_read":%.0f,' ..
    '"err_write":%.0f,"err_status":%.0f,"err_timeout":%.0f,"lat_mean_us":%.1f,"lat_stdev_us":%.1f,' ..
    '"lat_max_us":%.0f,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


def lua_str(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a valid Lua string literal for ASCII text


def write_wrk_script(path: Path, method: str = "GET", headers: dict[str, str] | None = None,
                     body: str | None = None) -> Path:
    lines = [f"wrk.method = {lua_str(method)}"]
    for k, v in (headers or {}).items():
        lines.append(f"wrk.headers[{lua_str(k)}] = {lua_str(v)}")
    if body is not None:
        lines.append(f"wrk.body = {lua_str(body)}")
    path.write_text("\n".join(lines) + "\n" + WRK_DONE)
    return path


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is missing: installing it with apt-get (Debian package wrk) ...", flush=True)
    sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else [])
    if os.geteuid() != 0 and not sudo:
        raise BenchError("wrk is missing and this is not root: install it with `apt-get install -y wrk`")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = [*sudo, "apt-get", "install", "-y", "wrk"]
    if subprocess.run(install, env=env).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update"], env=env, check=False)
        if subprocess.run(install, env=env).returncode != 0:
            raise BenchError("could not install wrk (apt-get install -y wrk failed)")
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk still not found after apt-get install")
    return found


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split("[")[0].strip() if first else "?"


def run_wrk(wrk: str, url: str, script: Path, connections: int, seconds: int) -> dict:
    cmd = [wrk, "-t", "1", "-c", str(connections), "-d", f"{seconds}s", "--timeout", "5s", "-s", str(script), url]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"^BENCH_JSON (\{.*\})$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not m:
        raise BenchError(f"wrk failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(m.group(1))
    non = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", proc.stdout)
    data["non_2xx_3xx"] = int(non.group(1)) if non else 0
    data["rps"] = data["requests"] / (data["duration_us"] / 1e6) if data["duration_us"] else 0.0
    data["socket_errors"] = sum(data[k] for k in ("err_connect", "err_read", "err_write", "err_timeout"))
    data["stdout"] = proc.stdout
    return data


# --- the gateway --------------------------------------------------------------------------------


def status_counts(envoy: harness.Envoy, prefix: str) -> dict[str, int]:
    stats = envoy.stats(rf"^http\.{prefix}\.downstream_rq_[1-5]xx$|^cluster\.demo\.upstream_rq_[1-5]xx$")
    return stats


def delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after}


def measure(wrk: str, envoy: harness.Envoy, upstream: UpstreamEnvoy, side: str, url: str, script: Path,
            connections: int, seconds: int, warmup: int) -> dict:
    if warmup > 0:
        run_wrk(wrk, url, script, connections, warmup)
    prefix = "mcp" if side == "plugin" else "baseline"
    s0 = status_counts(envoy, prefix)
    up0 = upstream_requests(upstream)
    gw_cpu0, up_cpu0 = cpu_seconds(envoy.proc.pid), cpu_seconds(upstream.proc.pid)
    ru0, self0 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    busy0 = system_busy_seconds()
    t0 = time.monotonic()
    res = run_wrk(wrk, url, script, connections, seconds)
    wall = time.monotonic() - t0
    busy = system_busy_seconds() - busy0
    ru1, self1 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    gw_cpu = cpu_seconds(envoy.proc.pid) - gw_cpu0
    up_cpu = cpu_seconds(upstream.proc.pid) - up_cpu0
    wrk_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    own_cpu = (self1.ru_utime - self0.ru_utime) + (self1.ru_stime - self0.ru_stime)
    d = delta(status_counts(envoy, prefix), s0)
    up_reqs = upstream_requests(upstream) - up0
    ok = d.get(f"http.{prefix}.downstream_rq_2xx", 0)
    non2xx = sum(v for k, v in d.items() if k.startswith(f"http.{prefix}.") and not k.endswith("_2xx"))
    res.pop("stdout", None)
    res.update({
        "connections": connections,
        "envoy_2xx": ok,
        "envoy_non_2xx": non2xx,
        "upstream_requests": up_reqs,
        "gateway_cpu_us_per_req": gw_cpu / res["requests"] * 1e6 if res["requests"] else None,
        "gateway_cpu_pct": 100.0 * gw_cpu / wall,
        "upstream_cpu_pct": 100.0 * up_cpu / wall,
        "wrk_cpu_pct": 100.0 * wrk_cpu / wall,
        # Everything else on the machine (other processes, interrupts, steal): contention that skews figures.
        "other_cpu_pct": max(0.0, 100.0 * (busy - gw_cpu - up_cpu - wrk_cpu - own_cpu) / wall),
    })
    if side == "plugin":
        # One REST call per tools/call; fewer would mean tool calls that failed inside a 200 (isError).
        res["upstream_calls_per_2xx"] = up_reqs / ok if ok else None
    return res


def upstream_requests(upstream: UpstreamEnvoy) -> int:
    r = httpx.get(f"http://127.0.0.1:{upstream.admin}/stats", params={"filter": r"^http\.upstream\.downstream_rq_2xx$"},
                  timeout=5.0)
    r.raise_for_status()
    m = re.search(r"downstream_rq_2xx: (\d+)", r.text)
    return int(m.group(1)) if m else 0


def verify_plugin_call(envoy: harness.Envoy) -> tuple[str, str, dict]:
    """initialize + notifications/initialized, then one tools/call; returns (session, protocol, body)."""
    with harness.RawMcp(envoy.base_url) as mcp:
        sid, init = mcp.initialize(SERVER)
        version = init["protocolVersion"]
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": CALL["tool"], "arguments": CALL["args"]}}
        r = mcp.post(SERVER, body, session=sid, version=version)
        if r.status_code != 200:
            raise BenchError(f"tools/call answered HTTP {r.status_code}: {r.text!r}")
        msg = r.json()
        result = msg.get("result") or {}
        if "error" in msg or result.get("isError"):
            raise BenchError(f"tools/call did not succeed: {msg}")
        texts = [c.get("text") for c in result.get("content", []) if c.get("type") == "text"]
        if CALL["expect"] not in texts:
            raise BenchError(f"tools/call answered {texts!r}, expected {CALL['expect']!r}")
    return sid, version, body


def verify_baseline(envoy: harness.Envoy) -> None:
    r = httpx.get(f"{envoy.baseline_url}{REST_PATH}", timeout=5.0)
    if r.status_code != 200 or r.json().get("temp") != 21:
        raise BenchError(f"baseline GET {REST_PATH}: HTTP {r.status_code} {r.text!r}")


SUMMED = ("err_connect", "err_read", "err_write", "err_status", "err_timeout", "non_2xx_3xx", "socket_errors",
          "envoy_2xx", "envoy_non_2xx", "upstream_requests", "requests")


def aggregate(samples: list[dict]) -> dict:
    """Several runs of one cell: counts summed, every other figure the median; samples kept."""
    if len(samples) == 1:
        return dict(samples[0])
    out: dict[str, Any] = {}
    for k, v in samples[0].items():
        vals = [s[k] for s in samples if s.get(k) is not None]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not vals:
            out[k] = v
        elif all(x == vals[0] for x in vals):
            out[k] = vals[0]
        elif k in SUMMED:
            out[k] = sum(vals)
        else:
            out[k] = statistics.median(vals)
    out["samples"] = [{k: s[k] for k in ("rps", "p50_us", "p99_us", "gateway_cpu_us_per_req")} for s in samples]
    return out


def system_busy_seconds() -> float:
    """CPU time spent, all CPUs together, on anything but idle and iowait (from /proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (v + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def cpu_steal_ticks() -> int:
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) if len(fields) > 8 else 0


def throughput(wrk: str, wasm: Path, upstream: UpstreamEnvoy, run_dir: Path, levels: list[int],
               seconds: int, warmup: int, repeat: int = 1) -> dict:
    envoy = harness.Envoy(
        harness.EXAMPLE_CONFIG, upstream_port=upstream.port, run_dir=run_dir, name="gateway",
        concurrency=1, wasm=wasm,
    )
    try:
        envoy.start()  # stops itself on failure; the finally below covers Ctrl-C meanwhile
        sid, version, body = verify_plugin_call(envoy)
        verify_baseline(envoy)
        plugin_script = write_wrk_script(
            run_dir / "plugin.lua", "POST",
            {
                "content-type": "application/json",
                "accept": harness.ACCEPT,
                "mcp-session-id": sid,
                "mcp-protocol-version": version,
            },
            json.dumps(body, separators=(",", ":")),
        )
        baseline_script = write_wrk_script(run_dir / "baseline.lua", "GET")
        plugin_url = f"{envoy.base_url}/mcp-servers/{SERVER}"
        baseline_url = f"{envoy.baseline_url}{REST_PATH}"
        sides = {"baseline": (baseline_url, baseline_script), "plugin": (plugin_url, plugin_script)}
        samples: dict[int, dict[str, list[dict]]] = {c: {"baseline": [], "plugin": []} for c in levels}
        steal0, wall0 = cpu_steal_ticks(), time.monotonic()
        for rep in range(repeat):
            # Alternate which side goes first, so that a drift of the machine does not favour one.
            order = ("baseline", "plugin") if rep % 2 == 0 else ("plugin", "baseline")
            for c in levels:
                for side in order:
                    tag = f" (round {rep + 1}/{repeat})" if repeat > 1 else ""
                    print(f"  {c:>3} connection(s), {side:<8}{tag} ... ", end="", flush=True)
                    url, script = sides[side]
                    r = measure(wrk, envoy, upstream, side, url, script, c, seconds, warmup)
                    samples[c][side].append(r)
                    print(f"{r['rps']:9.0f} req/s  p50 {r['p50_us'] / 1000:6.3f} ms", flush=True)
        steal = cpu_steal_ticks() - steal0
        steal_pct = 100.0 * steal / CLK_TCK / ((time.monotonic() - wall0) * len(os.sched_getaffinity(0)))
        rows = []
        for c in levels:
            row: dict[str, Any] = {"connections": c}
            for side in ("baseline", "plugin"):
                row[side] = aggregate(samples[c][side])
            b, p = row["baseline"], row["plugin"]
            row["throughput_ratio"] = p["rps"] / b["rps"] if b["rps"] else None
            row["p50_ratio"] = p["p50_us"] / b["p50_us"] if b["p50_us"] else None
            row["p99_ratio"] = p["p99_us"] / b["p99_us"] if b["p99_us"] else None
            row["cpu_per_req_ratio"] = (p["gateway_cpu_us_per_req"] / b["gateway_cpu_us_per_req"]
                                        if b["gateway_cpu_us_per_req"] else None)
            # What the plugin adds to the gateway's CPU time per request (the cleanest figure of its cost).
            row["plugin_extra_cpu_us_per_req"] = p["gateway_cpu_us_per_req"] - b["gateway_cpu_us_per_req"]
            rows.append(row)
        # The session still works after the load, and the plugin VM did not fail meanwhile.
        verify_plugin_call(envoy)
        crashes = harness.crash_lines(envoy.log_text())
        return {
            "gateway_rss_bytes_after": rss_bytes(envoy.proc.pid),
            "levels": rows,
            "cpu_steal_pct": steal_pct,  # of all CPUs, taken by the hypervisor during the runs
            "envoy_log": str(envoy.log_path),
            "plugin_vm_failures": crashes[:20],
            "plugin_request": {"url": plugin_url, "body": body, "protocol_version": version},
            "baseline_request": {"url": baseline_url},
        }
    finally:
        envoy.stop()


# --- start-up -----------------------------------------------------------------------------------


def without_wasm_filter(cfg: dict) -> dict:
    lst = harness._find_named(cfg["static_resources"]["listeners"], "mcp", "listener")
    hcm = harness._hcm(lst)
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f.get("name") != harness.WASM_FILTER]
    return cfg


def startup_once(kind: str, wasm: Path, upstream: UpstreamEnvoy, run_dir: Path, concurrency: int,
                 index: int) -> dict:
    ports = harness.Ports.pick(demo=upstream.port)
    cfg = harness.render_envoy_config(ports, harness.EXAMPLE_CONFIG, wasm=wasm)
    if kind == "baseline":
        cfg = without_wasm_filter(cfg)
    base = f"http://127.0.0.1:{ports.mcp}"
    init_body = json.dumps({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": harness.LATEST, "capabilities": {},
                   "clientInfo": {"name": "mcp-gateway-bench", "version": "0.0.1"}},
    })
    headers = {"content-type": "application/json", "accept": harness.ACCEPT}
    attempts = 0
    with httpx.Client(timeout=2.0) as http:
        t0 = time.monotonic()
        proc = spawn_envoy(cfg, run_dir, f"startup-{kind}-{index}", concurrency)
        try:
            while True:
                if proc.poll() is not None:
                    raise BenchError(f"Envoy ({kind} start-up) exited with {proc.returncode}:\n"
                                     f"{harness.tail(run_dir / f'startup-{kind}-{index}.log')}")
                if time.monotonic() - t0 > 60:
                    raise BenchError(f"Envoy ({kind} start-up) did not serve within 60 s")
                attempts += 1
                try:
                    if kind == "plugin":
                        r = http.post(f"{base}/mcp-servers/{SERVER}", content=init_body, headers=headers)
                        ok = r.status_code == 200 and bool(r.headers.get("mcp-session-id"))
                    else:
                        r = http.get(f"{base}{REST_PATH}")
                        ok = r.status_code == 200
                except httpx.TransportError:
                    ok = False
                if ok:
                    elapsed = time.monotonic() - t0
                    break
                time.sleep(0.01)
            rss = rss_bytes(proc.pid)
        finally:
            stop_proc(proc)
    return {"seconds": elapsed, "rss_bytes": rss, "polls": attempts}


def startup(wasm: Path, upstream: UpstreamEnvoy, run_dir: Path, runs: int, concurrency: int) -> dict:
    out: dict[str, Any] = {"runs": runs, "envoy_concurrency": concurrency, "poll_interval_s": 0.01}
    samples: dict[str, list[dict]] = {"plugin": [], "baseline": []}
    for i in range(runs):  # interleaved, so that drift of the machine affects both alike
        for kind in ("plugin", "baseline"):
            samples[kind].append(startup_once(kind, wasm, upstream, run_dir, concurrency, i))
    for kind, s in samples.items():
        out[kind] = {
            "median_s": statistics.median(x["seconds"] for x in s),
            "samples_s": [round(x["seconds"], 4) for x in s],
            "median_rss_bytes": statistics.median(x["rss_bytes"] or 0 for x in s),
        }
    out["plugin_share_s"] = out["plugin"]["median_s"] - out["baseline"]["median_s"]
    out["goal_s"] = GOAL_STARTUP_S
    out["goal_met"] = out["plugin"]["median_s"] <= GOAL_STARTUP_S
    return out


# --- machine information --------------------------------------------------------------------------


def machine_info(wrk: str) -> dict:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    envoy_v = subprocess.run([str(harness.envoy_binary()), "--version"], capture_output=True, text=True).stdout.strip()
    m = re.search(r"version: \S+?/(\d+\.\d+\.\d+)", envoy_v)
    git = subprocess.run(["git", "-C", str(harness.ROOT), "describe", "--always", "--dirty"],
                         capture_output=True, text=True).stdout.strip() or None
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "mem_total_bytes": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "envoy_version": m.group(1) if m else envoy_v,
        "envoy_version_full": envoy_v.split("version:", 1)[-1].strip(),
        "wrk_version": wrk_version(wrk),
        "git": git,
        "loadavg_start": os.getloadavg(),
    }


# --- output -------------------------------------------------------------------------------------


def fmt_ms(us: float) -> str:
    return f"{us / 1000:.3f}"


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def print_report(res: dict) -> None:
    m, w = res["machine"], res["wasm"]
    print()
    print("=" * 100)
    print(f"mcp-gateway benchmark  {res['date']}  git {m['git']}")
    print(f"machine: {m['nproc']} CPU(s), {m['cpu_model']}; Envoy {m['envoy_version']}; {m['wrk_version']}")
    print(f"plugin:  {w['path']}")
    print(f"load average at start {m['loadavg_start'][0]:.2f}, at end {m.get('loadavg_end', [0])[0]:.2f} "
          "(other work on the machine skews every figure)")
    print()
    mb = w["bytes"] / 1e6
    print(f"Module size: {w['bytes']:,} bytes ({mb:.2f} MB, {w['bytes'] / 2**20:.2f} MiB)   "
          f"goal <= 1.5 MB ({GOAL_WASM_BYTES:,} bytes): {verdict(w['goal_met'])}")
    print()
    t = res.get("throughput")
    if t:
        cfg = t["setup"]
        rounds = f", median of {cfg['repeat']} rounds" if cfg["repeat"] > 1 else ""
        print(f"Throughput and latency (wrk -t1, {cfg['duration_s']} s per run after {cfg['warmup_s']} s warm-up{rounds}; "
              f"gateway Envoy --concurrency 1, upstream Envoy --concurrency 1,")
        print(f"  all on this {m['nproc']}-CPU machine: wrk, gateway and upstream compete for the same cores)")
        print("  baseline = GET /weather?city=Paris&units=metric on the listener without the plugin;")
        print(f"  plugin   = MCP tools/call {CALL['tool']} (get_weather makes that same GET) on the plugin listener")
        hdr = (f"  {'conns':>5} | {'side':<8} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'non-2xx':>7} | "
               f"{'gw CPU us/req':>13} | {'gw CPU%':>7} | {'up CPU%':>7} | {'wrk CPU%':>8} | {'other CPU%':>10}")
        print(hdr)
        print("  " + "-" * (len(hdr) - 2))
        for row in t["levels"]:
            for side in ("baseline", "plugin"):
                r = row[side]
                non = max(r["envoy_non_2xx"], r["non_2xx_3xx"]) + r["socket_errors"]
                print(f"  {row['connections']:>5} | {side:<8} | {r['rps']:>8.0f} | {fmt_ms(r['p50_us']):>7} | "
                      f"{fmt_ms(r['p99_us']):>7} | {non:>7} | {r['gateway_cpu_us_per_req']:>13.1f} | "
                      f"{r['gateway_cpu_pct']:>7.0f} | {r['upstream_cpu_pct']:>7.0f} | {r['wrk_cpu_pct']:>8.0f} | "
                      f"{r['other_cpu_pct']:>10.0f}")
        print()
        print(f"  plugin/baseline ratios (goals: throughput >= {GOAL_THROUGHPUT_RATIO:.2f}x, "
              f"p50 <= {GOAL_P50_RATIO:.2f}x; reported, not enforced)")
        print(f"  {'conns':>5} | {'throughput':>20} | {'p50':>20} | {'p99':>6} | {'gw CPU/req':>10} | "
              "plugin's extra gw CPU/req")
        for row in t["levels"]:
            tr, pr = row["throughput_ratio"], row["p50_ratio"]
            print(f"  {row['connections']:>5} | {tr:>5.2f}x {'(' + verdict(tr >= GOAL_THROUGHPUT_RATIO) + ')':>13} | "
                  f"{pr:>5.2f}x {'(' + verdict(pr <= GOAL_P50_RATIO) + ')':>13} | {row['p99_ratio']:>5.2f}x | "
                  f"{row['cpu_per_req_ratio']:>9.2f}x | {row['plugin_extra_cpu_us_per_req']:>6.0f} us")
        bad = [r for row in t["levels"] for r in (row["baseline"], row["plugin"])
               if r["envoy_non_2xx"] or r["non_2xx_3xx"] or r["socket_errors"]]
        odd = [row["connections"] for row in t["levels"]
               if row["plugin"].get("upstream_calls_per_2xx") is not None
               and min(abs(row["plugin"]["upstream_calls_per_2xx"] - n) for n in (0, 1)) > 0.01]
        if bad:
            print("  note: some runs had non-2xx responses or socket errors (see results.json)")
        if odd:
            print(f"  note: at {odd} connection(s) the upstream did not see one REST call per 2xx tools/call")
        if t["plugin_vm_failures"]:
            print(f"  WARNING: the gateway Envoy log shows plugin VM failures: {t['envoy_log']}")
        print("  (CPU% during the run, 100% = one core: gw/up = gateway/upstream Envoy process, other = the rest of")
        print(f"   the machine (other processes, kernel, steal); CPU steal {t['cpu_steal_pct']:.1f}% of all CPUs)")
        busy = max(r["other_cpu_pct"] for row in t["levels"] for r in (row["baseline"], row["plugin"]))
        if busy > 15:
            print(f"  WARNING: other work used up to {busy:.0f}% of a core during the runs: the figures are skewed;")
            print("  run again on a quiet machine (or with --repeat 3) before comparing builds.")
        print()
    s = res.get("startup")
    if s:
        print(f"Start-up: spawn -> first served request, median of {s['runs']} "
              f"(Envoy --concurrency {s['envoy_concurrency']}, polled every 10 ms)")
        p, b = s["plugin"], s["baseline"]
        print(f"  with the plugin (first MCP initialize): {p['median_s']:.3f} s  {p['samples_s']}  "
              f"RSS {p['median_rss_bytes'] / 2**20:.0f} MiB   goal <= {GOAL_STARTUP_S} s: {verdict(s['goal_met'])}")
        print(f"  no wasm filter (first proxied GET):     {b['median_s']:.3f} s  {b['samples_s']}  "
              f"RSS {b['median_rss_bytes'] / 2**20:.0f} MiB")
        print(f"  plugin's share:                          {s['plugin_share_s']:.3f} s")
        print()
    print(f"results: {res['output']}   logs: {res['run_dir']}   took {res['elapsed_s']:.0f} s")
    print("=" * 100)


# --- main ---------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default=env("BENCH_LEVELS", "1,8,32"))
    ap.add_argument("--duration", type=int, default=int(env("BENCH_DURATION", "8")))
    ap.add_argument("--warmup", type=int, default=int(env("BENCH_WARMUP", "1")))
    ap.add_argument("--repeat", type=int, default=int(env("BENCH_REPEAT", "1")),
                    help="rounds of the whole sweep (medians reported; sides alternate who goes first)")
    ap.add_argument("--startup-runs", type=int, default=int(env("BENCH_STARTUP_RUNS", "3")))
    ap.add_argument("--startup-concurrency", type=int, default=int(env("BENCH_STARTUP_CONCURRENCY", "2")))
    ap.add_argument("--output", type=Path, default=Path(env("BENCH_OUTPUT", str(DEFAULT_OUTPUT))))
    ap.add_argument("--quick", action="store_true", help="levels 1,8, 2 s each, no warm-up, 1 start-up run")
    ap.add_argument("--tool", default=TOOL, help="tool of plugin-config/example.yaml to call (default: get_weather, "
                    "which makes the REST call; `--tool greet --args '{\"name\": \"Paris\"}' --expect 'Hello, Paris!'` "
                    "measures the MCP layer alone, with no upstream call)")
    ap.add_argument("--args", default=None, help="tool arguments as JSON")
    ap.add_argument("--expect", default=None, help="text the tool result must contain")
    a = ap.parse_args()
    if a.tool != TOOL and (a.args is None or a.expect is None):
        ap.error("--tool needs --args and --expect")
    a.tool_args = json.loads(a.args) if a.args is not None else TOOL_ARGS
    a.expected_text = a.expect if a.expect is not None else EXPECTED_TEXT
    if a.quick:
        a.levels, a.duration, a.warmup, a.startup_runs = "1,8", 2, 0, 1
    a.level_list = [int(x) for x in re.split(r"[,\s]+", a.levels.strip()) if x]
    if any(c < 1 for c in a.level_list) or a.duration < 1 or a.repeat < 1:
        ap.error("levels, duration and repeat must be >= 1")
    return a


def new_bench_run_dir() -> Path:
    runs = BENCH_DIR / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    old = sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    for p in old[: max(0, len(old) - 5)]:
        shutil.rmtree(p, ignore_errors=True)
    d = runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    d.mkdir(parents=True)
    return d


def main() -> int:
    args = parse_args()
    CALL.update(tool=args.tool, args=args.tool_args, expect=args.expected_text)
    started = time.monotonic()
    try:
        wasm = harness.wasm_path()
        harness.envoy_binary()
        wrk = ensure_wrk()
    except (harness.HarnessError, BenchError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    run_dir = new_bench_run_dir()
    data = wasm.read_bytes()
    res: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "call": dict(CALL),
        "machine": machine_info(wrk),
        "wasm": {
            "path": str(wasm),
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "mtime": dt.datetime.fromtimestamp(wasm.stat().st_mtime, dt.timezone.utc).isoformat(timespec="seconds"),
            "goal_bytes": GOAL_WASM_BYTES,
            "goal_met": len(data) <= GOAL_WASM_BYTES,
        },
        "goals": {
            "throughput_ratio_min": GOAL_THROUGHPUT_RATIO, "p50_ratio_max": GOAL_P50_RATIO,
            "wasm_bytes_max": GOAL_WASM_BYTES, "startup_s_max": GOAL_STARTUP_S,
        },
        "run_dir": str(run_dir),
        "output": str(args.output),
    }
    print(f"mcp-gateway benchmark: plugin {wasm} ({len(data):,} bytes); logs in {run_dir}")
    print(f"{res['machine']['nproc']} CPU(s): gateway Envoy, upstream Envoy and wrk share them "
          "(Envoys --concurrency 1, wrk -t1)", flush=True)
    upstream = UpstreamEnvoy(run_dir)
    try:
        upstream.start()
        print(f"throughput: levels {args.level_list}, {args.duration} s each (+{args.warmup} s warm-up)"
              + (f", {args.repeat} rounds" if args.repeat > 1 else ""), flush=True)
        t = throughput(wrk, wasm, upstream, run_dir, args.level_list, args.duration, args.warmup, args.repeat)
        t["setup"] = {
            "levels": args.level_list, "duration_s": args.duration, "warmup_s": args.warmup, "wrk_threads": 1,
            "repeat": args.repeat,
            "gateway_envoy_concurrency": 1, "upstream_envoy_concurrency": 1,
            "upstream": "Envoy direct_response (e2e/bench_upstream.yaml)",
        }
        res["throughput"] = t
        if args.startup_runs > 0:
            print(f"start-up: {args.startup_runs} run(s) with the plugin and without", flush=True)
            res["startup"] = startup(wasm, upstream, run_dir, args.startup_runs, args.startup_concurrency)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        return 130
    except (harness.HarnessError, BenchError, httpx.HTTPError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        upstream.stop()
        stop_all()
    res["machine"]["loadavg_end"] = os.getloadavg()
    res["elapsed_s"] = time.monotonic() - started
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(res, indent=2) + "\n")
    print_report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
