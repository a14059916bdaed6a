"""e2e/docker-compose.yml run for real, with Docker Compose v1 (`docker-compose` 1.29) and v2 (`docker compose`).

The compose file is used unchanged (only `-p <project>` and environment variables are given): two
gateway replicas (Envoy with the plugin, MCP on 10000 and 10010), the demo upstream and Redis, all
with host networking on the fixed ports the file names. The images are local stand-ins built by
e2e/compose_images.py (no registry is reachable here; a real image already present is used as it is).
A Docker engine is started when none runs, and stopped again at the end.

For each Compose version:
  - signed: sessions signed with one key (a fresh random one): a session opened on replica 1 serves
    tools/list and tools/call on replica 2, and the other way round;
  - local (MCP_GATEWAY_SESSION_STORE=local, the control): each replica serves its own sessions, and
    replica 2 answers 404 to a session id of replica 1.

Installed by e2e/setup.sh (Docker engine, Compose v1 and v2, debootstrap); when that failed, these
tests fail with its message. Logs of each run (compose logs, dockerd) are kept in target/e2e/<run>/.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time

import httpx
import pytest
import yaml

import compose_images
import harness

COMPOSE_FILE = harness.E2E_DIR / "docker-compose.yml"
SETUP_ERROR = harness.E2E_DIR / ".cache" / "docker-setup.error"

# (MCP port, admin port) of the two replicas, as e2e/docker-compose.yml sets them.
REPLICAS = [(10000, 9901), (10010, 9911)]
FIXED_PORTS = {
    8081: "demo upstream", 6379: "redis",
    10000: "replica 1 MCP", 10001: "replica 1 baseline", 9901: "replica 1 admin",
    10010: "replica 2 MCP", 10011: "replica 2 baseline", 9911: "replica 2 admin",
}
WEATHER = "It is 16 degrees (metric) and sunny in Paris."

pytestmark = pytest.mark.timeout(1500)  # the first run builds the stand-in images (debootstrap)


def _fail(msg: str) -> None:
    pytest.fail(msg, pytrace=False)


def _run(cmd: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def _docker_ok() -> bool:
    with contextlib.suppress(Exception):
        return _run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=30).returncode == 0
    return False


def compose_commands() -> dict[str, tuple[list[str], str]]:
    """{"v1": (command, version), "v2": (...)} for the Compose versions on this machine."""
    found: dict[str, tuple[list[str], str]] = {}
    for cmd in (["docker", "compose"], ["docker-compose"]):
        with contextlib.suppress(Exception):
            p = _run([*cmd, "version", "--short"], timeout=60)
            version = p.stdout.strip().lstrip("v")
            if p.returncode == 0 and version[:1].isdigit():
                found.setdefault(f"v{version.split('.')[0]}", (cmd, version))
    return found


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir():
    return harness.new_run_dir("compose")


@pytest.fixture(scope="module")
def docker_engine(run_dir):
    """A running Docker engine: the one already running, or a dockerd started here (and stopped after)."""
    if SETUP_ERROR.is_file():
        _fail(SETUP_ERROR.read_text().strip() + "\n(fix it, then run e2e/setup.sh again)")
    if shutil.which("docker") is None:
        _fail("the docker CLI is not installed: run e2e/setup.sh (it installs Docker and Compose)")
    if _docker_ok():
        yield None
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        _fail("no Docker engine runs and dockerd is not installed: run e2e/setup.sh")
    if os.geteuid() != 0:
        _fail("no Docker engine runs, and starting dockerd needs root")
    log_path = run_dir / "dockerd.log"
    with open(log_path, "wb") as log:
        # No docker0 bridge, no iptables rules, ip_forward left as it is: every service of the compose
        # file uses host networking.
        proc = subprocess.Popen(
            [dockerd, "--bridge=none", "--iptables=false", "--ip-forward=false"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while not _docker_ok():
            if proc.poll() is not None:
                _fail(f"dockerd exited with {proc.returncode}; {log_path}:\n{harness.tail(log_path, 30)}")
            if time.monotonic() > deadline:
                _fail(f"dockerd did not answer within 90 s; {log_path}:\n{harness.tail(log_path, 30)}")
            time.sleep(0.5)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def images(docker_engine, run_dir):
    """The stand-in images, built once and then reused (see e2e/compose_images.py)."""
    lines: list[str] = []
    t0 = time.monotonic()
    try:
        ids = compose_images.ensure_images(lines.append)
    except compose_images.ImageError as exc:
        _fail(f"could not build the stand-in images: {exc}")
    lines.append(f"ready in {time.monotonic() - t0:.1f} s")
    (run_dir / "images.log").write_text("\n".join(lines) + "\n")
    return ids


@pytest.fixture(scope="module")
def wasm():
    try:
        return harness.wasm_path()
    except harness.HarnessError as exc:
        _fail(str(exc))


# --- one compose project ---------------------------------------------------------------------------


class Project:
    """`compose -p <name> -f e2e/docker-compose.yml ...` with one Compose version and one environment."""

    def __init__(self, command: list[str], name: str, env: dict[str, str], run_dir):
        self.command = command
        self.name = name
        self.env = env
        self.run_dir = run_dir
        self._containers: dict[str, str] = {}

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return _run([*self.command, "-p", self.name, "-f", str(COMPOSE_FILE), *args],
                    timeout=timeout, env=self.env, cwd=str(harness.ROOT))

    def must(self, *args: str, timeout: float = 300) -> str:
        p = self.compose(*args, timeout=timeout)
        if p.returncode != 0:
            _fail(f"`compose {' '.join(args)}` failed (exit {p.returncode}):\n{(p.stderr + p.stdout)[-4000:]}"
                  f"{self.logs_hint()}")
        return p.stdout

    def container(self, service: str) -> str:
        if service not in self._containers:  # a restart keeps the container (and its id)
            cid = self.must("ps", "-q", service).strip()
            if not cid:
                _fail(f"service {service} has no container{self.logs_hint()}")
            self._containers[service] = cid
        return self._containers[service]

    def inspect(self, service: str, fmt: str) -> str:
        p = _run(["docker", "inspect", "--format", fmt, self.container(service)], timeout=30)
        return p.stdout.strip()

    def save_logs(self) -> str:
        p = self.compose("logs", "--no-color", timeout=120)
        path = self.run_dir / f"{self.name}.log"
        path.write_text(p.stdout + p.stderr)
        return p.stdout

    def logs_hint(self) -> str:
        return f"\n(compose logs: {self.run_dir / (self.name + '.log')})"

    def envoy_failure(self, service: str) -> str | None:
        """Why an Envoy replica is not running (its own log lines), or None while it runs."""
        status, restarts = (self.inspect(service, "{{.State.Status}} {{.RestartCount}}").split() + ["", ""])[:2]
        if status == "running" and restarts in ("0", ""):
            return None
        p = _run(["docker", "logs", "--tail", "200", self.container(service)], timeout=60)
        lines = (p.stdout + p.stderr).splitlines()
        why = [line for line in lines if "envoy-replica:" in line or "invalid plugin config" in line
               or "[critical]" in line] or lines[-15:]
        return f"{service} is {status} after {restarts} restart(s):\n" + "\n".join(why[-12:])


def _ports_in_use() -> list[str]:
    busy = []
    for port, what in FIXED_PORTS.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                busy.append(f"{port} ({what})")
    return busy


def _wait_ready(project: Project, timeout: float = 120) -> None:
    """Demo and Redis healthy, both replicas ready and proxying; fails at once if a replica stops."""
    deadline = time.monotonic() + timeout
    pending = ["demo", "redis", "envoy", "envoy-2"]
    while pending:
        for service in list(pending):
            if service in ("demo", "redis"):
                health = project.inspect(service, "{{if .State.Health}}{{.State.Health.Status}}{{end}}")
                if health == "healthy":
                    pending.remove(service)
                continue
            why = project.envoy_failure(service)
            if why:
                project.save_logs()
                _fail(why + project.logs_hint())
            mcp_port, admin_port = REPLICAS[0 if service == "envoy" else 1]
            with contextlib.suppress(httpx.HTTPError):
                if (httpx.get(f"http://127.0.0.1:{admin_port}/ready", timeout=2).text.strip() == "LIVE"
                        and httpx.get(f"http://127.0.0.1:{mcp_port}/healthz", timeout=2).status_code == 200):
                    pending.remove(service)
        if pending and time.monotonic() > deadline:
            project.save_logs()
            _fail(f"not ready after {timeout:.0f} s: {', '.join(pending)}{project.logs_hint()}")
        if pending:
            time.sleep(0.5)


@contextlib.contextmanager
def compose_up(version: str, store: str, run_dir, wasm):
    """`up -d` of the compose file with this Compose version and session store; `down` always."""
    available = compose_commands()
    if version not in available:
        if not available:
            _fail("neither Compose v1 (docker-compose) nor v2 (docker compose) is installed: run e2e/setup.sh")
        pytest.skip(f"Compose {version} is not installed here (found: {', '.join(sorted(available))})")
    command, full_version = available[version]
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    env.update(
        MCP_GATEWAY_WASM=str(wasm),
        MCP_GATEWAY_SESSION_STORE=store,
        MCP_GATEWAY_SIGNING_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
    )
    project = Project(command, f"mcpgw-e2e-{version}-{store}", env, run_dir)
    project.compose("down", "--remove-orphans", timeout=120)  # leftovers of an interrupted run
    busy = _ports_in_use()
    if busy:
        _fail(f"ports that e2e/docker-compose.yml needs are in use: {', '.join(busy)} "
              "(is `make run` or another compose project up?)")
    times = {"start": time.monotonic()}
    failed = True
    try:
        up = project.compose("up", "-d", timeout=300)
        times["up"] = time.monotonic()
        if up.returncode != 0:
            _fail(f"compose {full_version} up failed (exit {up.returncode}):\n{(up.stderr + up.stdout)[-4000:]}"
                  f"{project.logs_hint()}")
        _wait_ready(project)
        # Redis answers from inside its container, with the image's own client.
        pong = project.must("exec", "-T", "redis", "redis-cli", "-h", "127.0.0.1", "ping").strip()
        assert pong == "PONG", pong
        times["ready"] = time.monotonic()
        yield project
        failed = False
    finally:
        times["checks"] = time.monotonic()
        with contextlib.suppress(Exception):
            project.save_logs()
        down = project.compose("down", "--remove-orphans", timeout=180)
        times["down"] = time.monotonic()
        steps, last = [], times["start"]
        for step, t in times.items():
            if step != "start":
                steps.append(f"{step} {t - last:.1f} s")
                last = t
        with open(run_dir / "timings.log", "a") as f:
            f.write(f"{project.name} (compose {full_version}): {', '.join(steps)}\n")
        if down.returncode != 0 and not failed:  # else the first failure is the one to see
            _fail(f"compose {full_version} down failed (exit {down.returncode}):\n{down.stderr[-3000:]}")


def _demo_tool_names() -> list[str]:
    example = harness.load_plugin_config(harness.EXAMPLE_CONFIG)
    return sorted(t["name"] for t in example["servers"][0]["tools"])


def _mcp(port: int) -> harness.RawMcp:
    return harness.RawMcp(f"http://127.0.0.1:{port}")


def _tools_on(port: int, sid: str, version: str) -> tuple[list[str], dict]:
    with _mcp(port) as raw:
        listed = raw.rpc("demo", sid, "tools/list", version=version)
        called = raw.rpc("demo", sid, "tools/call", {"name": "get_weather", "arguments": {"city": "Paris"}},
                         version=version)
    assert "error" not in listed, listed
    assert "error" not in called, called
    return sorted(t["name"] for t in listed["result"]["tools"]), called["result"]


# --- the tests ---------------------------------------------------------------------------------------

VERSIONS = ["v1", "v2"]


def test_compose_file_replicas():
    """Static (no Docker): two replicas, one session setup, the committed key visibly a development one."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    replicas = [services["envoy"], services["envoy-2"]]
    ports = [(int(r["environment"]["GATEWAY_PORT"]), int(r["environment"]["ADMIN_PORT"])) for r in replicas]
    assert ports == REPLICAS
    keys = {r["environment"]["MCP_GATEWAY_SIGNING_KEY"] for r in replicas}
    stores = {r["environment"]["MCP_GATEWAY_SESSION_STORE"] for r in replicas}
    assert stores == {"${MCP_GATEWAY_SESSION_STORE:-signed}"}
    assert len(keys) == 1, "both replicas must verify with the same key"
    m = re.fullmatch(r"\$\{MCP_GATEWAY_SIGNING_KEY:-([A-Za-z0-9+/=]+)\}", keys.pop())
    assert m, "the key comes from MCP_GATEWAY_SIGNING_KEY"
    dev_key = m.group(1)
    assert dev_key.startswith("DEVELOPMENT+ONLY") and "NOT+A+SECRET" in dev_key
    assert len(base64.b64decode(dev_key, validate=True)) >= 32
    for r in replicas:
        assert r["command"][:2] == ["sh", "/work/e2e/envoy-replica.sh"]
        assert "--disable-hot-restart" in r["command"]


@pytest.mark.parametrize("version", VERSIONS)
def test_local_sessions_stay_on_their_replica(version, wasm, images, run_dir):
    """The control: with MCP_GATEWAY_SESSION_STORE=local each replica knows only its own sessions."""
    (one, _), (two, _) = REPLICAS
    with compose_up(version, "local", run_dir, wasm):
        with _mcp(one) as raw:
            sid, init = raw.initialize("demo")
        names, result = _tools_on(one, sid, init["protocolVersion"])
        assert names == _demo_tool_names()
        assert result["content"][0]["text"] == WEATHER
        with _mcp(two) as raw:
            r = raw.request("demo", sid, "tools/list", version=init["protocolVersion"])
            assert r.status_code == 404, (r.status_code, r.text)
            sid2, init2 = raw.initialize("demo")
        assert _tools_on(two, sid2, init2["protocolVersion"])[0] == _demo_tool_names()


@pytest.mark.parametrize("version", VERSIONS)
def test_replicas_share_signed_sessions(version, wasm, images, run_dir):
    (one, _), (two, _) = REPLICAS
    with compose_up(version, "signed", run_dir, wasm) as project:
        # Both replicas got the key of the environment (e2e/envoy-replica.sh logs its fingerprint).
        key = project.env["MCP_GATEWAY_SIGNING_KEY"]
        fingerprint = hashlib.sha256(key.encode()).hexdigest()[:12]
        logs = project.save_logs()
        for service in ("envoy", "envoy-2"):
            p = _run(["docker", "logs", project.container(service)], timeout=60)
            assert f"sessions: signed (key fingerprint {fingerprint})" in p.stdout + p.stderr, service
        assert "development-only key" not in logs
        for opened_on, used_on in ((one, two), (two, one)):
            with _mcp(opened_on) as raw:
                sid, init = raw.initialize("demo")
            names, result = _tools_on(used_on, sid, init["protocolVersion"])
            assert names == _demo_tool_names(), f"session of :{opened_on} on :{used_on}"
            assert not result.get("isError"), result
            assert result["content"][0]["text"] == WEATHER
