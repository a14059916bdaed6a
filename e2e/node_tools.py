"""Runs the Node tools of e2e/node_modules with Node 22: the MCP conformance suite and the
MCP Inspector CLI."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from harness import NODE_DIR, node_binary

CONFORMANCE_JS = NODE_DIR / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
INSPECTOR_DIR = NODE_DIR / "@modelcontextprotocol" / "inspector-cli" / "build"
INSPECTOR_JS = INSPECTOR_DIR / "index.js"


def node_env() -> dict[str, str]:
    node = node_binary()
    env = dict(os.environ)
    # Node 22 first on PATH, for any `node` a tool spawns itself.
    env["PATH"] = f"{node.parent}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"
    env["FORCE_COLOR"] = "0"
    env.pop("NODE_OPTIONS", None)
    return env


@dataclass
class ScenarioResult:
    scenario: str
    available: bool
    returncode: int
    output: str
    checks: list[dict] = field(default_factory=list)

    @property
    def failures(self) -> list[dict]:
        return [c for c in self.checks if c.get("status") == "FAILURE"]

    @property
    def passed(self) -> bool:
        return self.available and self.returncode == 0 and not self.failures and bool(self.checks)

    def summary(self) -> str:
        lines = [f"scenario {self.scenario}: exit {self.returncode}, {len(self.checks)} checks"]
        for c in self.checks:
            msg = c.get("errorMessage") or ""
            lines.append(f"  [{c.get('status')}] {c.get('id')}: {c.get('description')} {msg}".rstrip())
        lines.append("--- output ---")
        lines.append(self.output[-4000:])
        return "\n".join(lines)


def run_conformance_scenario(url: str, scenario: str, out_dir: Path, timeout: float = 120.0) -> ScenarioResult:
    """`conformance server --url URL --scenario NAME -o OUT`; parses OUT/server-NAME-*/checks.json.

    A scenario this version of the suite does not know is reported with available=False."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [str(node_binary()), str(CONFORMANCE_JS), "server", "--url", url, "--scenario", scenario, "-o", str(out_dir)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=node_env(), stdin=subprocess.DEVNULL
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 and f"Unknown scenario '{scenario}'" in output:
        return ScenarioResult(scenario, False, proc.returncode, output)
    checks: list[dict] = []
    results = sorted(out_dir.glob(f"server-{scenario}-*/checks.json"), key=lambda p: p.stat().st_mtime)
    if results:
        checks = json.loads(results[-1].read_text())
    return ScenarioResult(scenario, True, proc.returncode, output, checks)


def conformance_scenarios() -> list[str]:
    proc = subprocess.run(
        [str(node_binary()), str(CONFORMANCE_JS), "list", "--server"],
        capture_output=True, text=True, timeout=60, env=node_env(), stdin=subprocess.DEVNULL,
    )
    return [line.strip()[2:].split(" ")[0] for line in proc.stdout.splitlines() if line.strip().startswith("- ")]


def run_inspector(url: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """The MCP Inspector CLI (`mcp-inspector-cli --cli` mode) over streamable HTTP.

    build/index.js is run directly with Node 22 (the package's launcher spawns whatever `node` is
    on PATH); it reads ../package.json relative to the working directory, hence cwd."""
    cmd = [str(node_binary()), str(INSPECTOR_JS), url, "--transport", "http", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=node_env(), cwd=str(INSPECTOR_DIR),
        stdin=subprocess.DEVNULL,
    )
