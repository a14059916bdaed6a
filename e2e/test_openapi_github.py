"""OpenAPI import on a large real-world document: GitHub's REST API description.

The document (api.github.com.json of @octokit/openapi, pinned in e2e/github_openapi.py; ~13 MB,
~1,200 operations, heavy `$ref` use) is fetched at test time into e2e/.cache/, never committed.
Without npm or network the tests here are skipped, saying so.

  - `mcp-gateway openapi DOC --check`: every operation is converted or skipped with a reason,
    and at least 95% are converted.
  - `mcp-gateway openapi DOC -o FILE` (YAML and JSON), then `mcp-gateway check FILE`: the plugin
    accepts the CLI's own output.
  - One Envoy (V8) with the plugin, two servers: `github` imports the whole document in-config,
    restricted to the tag `repos` (~200 operations); `github-cli` carries the CLI's conversion of
    the same subset as ordinary tools. The Python MCP SDK lists both: same tools, same count as the
    CLI reported. Two of the tools are called against the demo upstream's /echo, which shows what
    reached the upstream.

The native CLI is built here with `cargo build --release --bin mcp-gateway` (a no-op when it is up
to date); MCP_GATEWAY_CLI points at another binary instead. Timings are printed, never asserted
(e2e/bench.py reports them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

import github_openapi
import harness
from harness import list_all_tools, mcp_client, run_async

pytestmark = pytest.mark.timeout(900)

CLI_DEFAULT = harness.ROOT / "target" / "release" / "mcp-gateway"
TAG = "repos"
SERVER = "github"  # in-config import
SERVER_CLI = "github-cli"  # the CLI's conversion as ordinary tools
# The demo upstream's /echo answers with what it received; every tool URL lands below it.
SERVER_URL = "http://demo.local/echo"
TOOL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# --- fixtures ----------------------------------------------------------------------------------


def report(capsys, *lines: str) -> None:
    """Figures shown in the pytest output even when the test passes."""
    with capsys.disabled():
        for line in lines:
            print(f"\n[openapi-github] {line}", end="")
        print()


@pytest.fixture(scope="module")
def doc_path() -> Path:
    try:
        return github_openapi.ensure()
    except github_openapi.Unavailable as exc:
        pytest.skip(f"GitHub's OpenAPI document is not available here: {exc}")


@pytest.fixture(scope="module")
def doc(doc_path) -> dict:
    with open(doc_path, "rb") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def cli() -> Path:
    """The native CLI, built (or brought up to date) by cargo when cargo is here."""
    env_cli = os.environ.get("MCP_GATEWAY_CLI")
    if env_cli:
        path = Path(env_cli)
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.fail(f"MCP_GATEWAY_CLI={env_cli} is not an executable file", pytrace=False)
        return path
    if shutil.which("cargo"):
        proc = subprocess.run(
            ["cargo", "build", "--release", "--quiet", "--bin", "mcp-gateway"],
            cwd=str(harness.ROOT), capture_output=True, text=True, timeout=840, stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            pytest.fail(f"`cargo build --release --bin mcp-gateway` failed:\n{proc.stderr[-4000:]}", pytrace=False)
    if not CLI_DEFAULT.is_file():
        pytest.fail(f"{CLI_DEFAULT} is missing: build it with `cargo build --release --bin mcp-gateway`",
                    pytrace=False)
    return CLI_DEFAULT


@pytest.fixture(scope="module")
def out_dir() -> Path:
    return harness.new_run_dir("openapi-github")


def run_cli(cli: Path, *args: str, timeout: float = 300.0) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run([str(cli), *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return proc, time.monotonic() - t0


def outcome(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"


def parse_check(text: str) -> tuple[int, int, int, list[str]]:
    """(found, converted, skipped, skipped lines) from `openapi --check` output."""
    got = github_openapi.parse_check(text)
    assert got, f"no 'operations: N found, N converted, N skipped' line in:\n{text[-3000:]}"
    return got["found"], got["converted"], got["skipped"], got["skipped_lines"]


def load_config(path: Path) -> dict:
    with open(path, "rb") as f:
        return json.load(f) if path.suffix == ".json" else yaml.load(f, Loader=YAML_LOADER)


def tools_of(cfg: dict) -> list[dict]:
    servers = cfg.get("servers") or []
    assert len(servers) == 1, f"expected one server in the CLI's output, got {len(servers)}"
    return servers[0].get("tools") or []


@pytest.fixture(scope="module")
def check_all(cli, doc_path) -> dict:
    proc, seconds = run_cli(cli, "openapi", str(doc_path), "--check")
    assert proc.returncode == 0, f"`mcp-gateway openapi {doc_path.name} --check`: {outcome(proc)}"
    found, converted, skipped, lines = parse_check(proc.stdout + proc.stderr)
    return {"found": found, "converted": converted, "skipped": skipped, "skipped_lines": lines,
            "seconds": seconds, "output": proc.stdout + proc.stderr}


@pytest.fixture(scope="module")
def subset(cli, doc_path, out_dir) -> dict:
    """The CLI's conversion of the operations tagged `repos`, pointed at the demo upstream's /echo."""
    path = out_dir / f"github-{TAG}.yaml"
    proc, _ = run_cli(cli, "openapi", str(doc_path), "--include-tag", TAG, "--name", SERVER_CLI,
                      "--cluster", "demo", "--server-url", SERVER_URL, "-o", str(path))
    assert proc.returncode == 0, f"openapi --include-tag {TAG}: {outcome(proc)}"
    cfg = load_config(path)
    return {"path": path, "config": cfg, "tools": tools_of(cfg)}


# --- the CLI -----------------------------------------------------------------------------------


def test_check_converts_nearly_every_operation(check_all, doc, doc_path, capsys):
    ops = github_openapi.operations(doc)
    found, converted, skipped = check_all["found"], check_all["converted"], check_all["skipped"]
    lines = check_all["skipped_lines"]
    size_mb = doc_path.stat().st_size / 1e6
    report(
        capsys,
        f"@octokit/openapi {github_openapi.VERSION} api.github.com.json ({size_mb:.1f} MB, OpenAPI "
        f"{doc.get('openapi')}): {found} operations found, {converted} converted "
        f"({100.0 * converted / max(found, 1):.1f}%), {skipped} skipped; --check took {check_all['seconds']:.2f} s",
        *lines,
    )
    assert found >= 1000, f"only {found} operations found"
    assert found == len(ops), f"--check found {found} operations; the document has {len(ops)}"
    assert converted + skipped == found, f"{converted} converted + {skipped} skipped != {found} found"
    # Every skipped operation is named, with its location and a reason.
    assert len(lines) == skipped, f"{skipped} skipped but {len(lines)} 'skipped:' lines:\n{check_all['output'][-4000:]}"
    for line in lines:
        m = re.search(r"#/paths/\S+", line)
        assert m, f"skipped line without a JSON pointer: {line}"
        reason = line[m.end():].lstrip(" :").strip()
        assert reason, f"skipped line without a reason: {line}"
    assert converted >= 0.95 * found, f"only {converted}/{found} ({100.0 * converted / found:.1f}%) converted"


@pytest.mark.parametrize("fmt", ["yaml", "json"])
def test_converted_config_passes_check(cli, doc_path, check_all, out_dir, fmt, capsys):
    path = out_dir / f"github.{fmt}"
    proc, seconds = run_cli(cli, "openapi", str(doc_path), "-o", str(path))
    assert proc.returncode == 0, f"openapi -o {path.name}: {outcome(proc)}"
    cfg = load_config(path)
    tools = tools_of(cfg)
    names = [t.get("name") for t in tools]
    assert len(tools) == check_all["converted"], (
        f"{path.name} has {len(tools)} tools; --check said {check_all['converted']} converted")
    bad = [n for n in names if not (isinstance(n, str) and TOOL_NAME.match(n))]
    assert not bad, f"invalid tool names: {bad[:10]}"
    dupes = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) != len(names) else []
    assert not dupes, f"duplicate tool names: {dupes[:10]}"
    checked, check_seconds = run_cli(cli, "check", str(path))
    report(capsys, f"openapi -o {path.name}: {len(tools)} tools, {path.stat().st_size / 1e6:.1f} MB, "
                   f"{seconds:.2f} s; `check` {check_seconds:.2f} s: {(checked.stdout + checked.stderr).strip()[:200]}")
    assert checked.returncode == 0, f"`mcp-gateway check {path.name}` refuses the CLI's own output: {outcome(checked)}"


def test_subset_selects_the_tag(subset, doc):
    tagged = [op for _, _, op in github_openapi.operations(doc) if TAG in (op.get("tags") or [])]
    n = len(subset["tools"])
    assert 100 <= len(tagged) <= 400, f"the document has {len(tagged)} operations tagged {TAG!r}"
    assert 0.95 * len(tagged) <= n <= len(tagged), f"{n} tools for {len(tagged)} operations tagged {TAG!r}"


# --- in Envoy ----------------------------------------------------------------------------------


def _tool_by_route(tools: list[dict], method: str, route: str) -> dict:
    """The converted tool whose request is METHOD .../route."""
    for t in tools:
        rt = t.get("requestTemplate") or {}
        if (rt.get("method") or "GET").upper() == method and str(rt.get("url", "")).endswith(route):
            return t
    raise AssertionError(f"no tool for {method} {route} in the CLI's conversion")


def _arguments(tool: dict, wanted: dict) -> dict:
    """`wanted` keyed by wire names, rekeyed by the tool's argument names (they differ on collisions)."""
    out = {}
    for a in tool.get("args") or []:
        wire = a.get("paramName") or a["name"]
        if wire in wanted:
            out[a["name"]] = wanted[wire]
    missing = set(wanted) - {a.get("paramName") or a["name"] for a in tool.get("args") or []}
    assert not missing, f"tool {tool['name']} has no arguments {sorted(missing)}: {tool.get('args')}"
    return out


@pytest.fixture(scope="module")
def github_gw(doc, subset, out_dir):
    """Envoy with the in-config import of the `repos` subset, and the CLI's conversion beside it."""
    cli_server = dict(subset["config"]["servers"][0], name=SERVER_CLI)
    cfg = {
        "servers": [
            {
                "name": SERVER,
                "upstream": {"cluster": "demo", "timeoutMs": 5000},
                "openapi": {"document": doc, "serverUrl": SERVER_URL, "include": {"tags": [TAG]}},
            },
            cli_server,
        ],
    }
    upstream = harness.DemoUpstream(log_dir=out_dir).start()
    envoy = harness.Envoy(cfg, upstream_port=upstream.port, run_dir=out_dir, name="envoy-openapi-github",
                          plugin_format="json", concurrency=2, wasm=harness.wasm_path())
    t0 = time.monotonic()
    try:
        envoy.start(timeout=300)
    except harness.HarnessError as exc:
        upstream.stop()
        pytest.fail(f"Envoy refused or did not load the in-config import of {TAG!r}: {exc}", pytrace=False)
    gw = harness.Gateway(upstream=upstream, envoy=envoy, plugin_config={}, run_dir=out_dir)
    gw.extra["load_seconds"] = time.monotonic() - t0
    try:
        yield gw
    finally:
        gw.stop()


def _list(gw, server: str) -> tuple[list, int]:
    async def go():
        async with mcp_client(gw.mcp_url(server), timeout=60) as c:
            return await list_all_tools(c)

    return run_async(go)


def _call(gw, server: str, tool: str, args: dict):
    async def go():
        async with mcp_client(gw.mcp_url(server), timeout=30) as c:
            return await c.call_tool(tool, args)

    return run_async(go)


def test_in_config_import_lists_the_same_tools(github_gw, subset, capsys):
    expected = sorted(t["name"] for t in subset["tools"])
    tools, pages = _list(github_gw, SERVER)
    cli_tools, _ = _list(github_gw, SERVER_CLI)
    report(capsys, f"Envoy with the whole document in-config (include tag {TAG!r}) plus the CLI's conversion: "
                   f"ready in {github_gw.extra['load_seconds']:.1f} s (includes writing the Envoy config); "
                   f"tools/list: {len(tools)} tools in {pages} pages (CLI: {len(cli_tools)})")
    assert len(tools) == len(expected), f"Envoy lists {len(tools)} tools; the CLI converted {len(expected)}"
    assert sorted(t.name for t in tools) == expected
    assert sorted(t.name for t in cli_tools) == expected
    for t in tools:
        assert t.input_schema.get("type") == "object", f"{t.name}: inputSchema {t.input_schema}"
    crashes = harness.crash_lines(github_gw.envoy.log_text())
    assert not crashes, f"plugin VM failures in {github_gw.envoy.log_path}:\n" + "\n".join(crashes[:20])


@pytest.mark.parametrize("server", [SERVER, SERVER_CLI])
def test_get_with_path_and_query_reaches_the_upstream(github_gw, subset, server):
    tool = _tool_by_route(subset["tools"], "GET", "/orgs/{org}/repos")  # repos/list-for-org
    args = _arguments(tool, {"org": "octo-org", "type": "public", "per_page": 5})
    result = _call(github_gw, server, tool["name"], args)
    text = next((c.text for c in result.content if c.type == "text"), "")
    assert not result.is_error, f"{tool['name']} {args}: {result}"
    got = json.loads(text)
    assert got["method"] == "GET"
    assert got["path"] == "/echo/orgs/octo-org/repos", got
    assert got["args"].get("type") == ["public"] and got["args"].get("per_page") == ["5"], got


@pytest.mark.parametrize("server", [SERVER, SERVER_CLI])
def test_post_with_json_body_reaches_the_upstream(github_gw, subset, server):
    tool = _tool_by_route(subset["tools"], "POST", "/repos/{owner}/{repo}/dispatches")  # repos/create-dispatch-event
    body = {"event_type": "deploy", "client_payload": {"env": "prod", "n": 2}}
    args = _arguments(tool, {"owner": "octocat", "repo": "hello-world", **body})
    result = _call(github_gw, server, tool["name"], args)
    text = next((c.text for c in result.content if c.type == "text"), "")
    assert not result.is_error, f"{tool['name']} {args}: {result}"
    got = json.loads(text)
    assert got["method"] == "POST"
    assert got["path"] == "/echo/repos/octocat/hello-world/dispatches", got
    assert json.loads(got["body"]) == body, got
    assert got["headers"].get("content-type", "").startswith("application/json"), got["headers"]
