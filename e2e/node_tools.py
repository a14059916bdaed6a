"""Runs the Node tools of e2e/node_modules with Node 22: the MCP conformance suite and the
MCP Inspector CLI."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from harness import NODE_DIR, node_binary

CONFORMANCE_DIR = NODE_DIR / "@modelcontextprotocol" / "conformance"
CONFORMANCE_JS = CONFORMANCE_DIR / "dist" / "index.js"
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
class ScenarioOutcome:
    """One scenario of a `conformance server --requirements REV` run.

    `checks` is the scenario's checks.json; `error` says why there is none (the scenario threw, or the
    run ended before it). The suite's own rule decides: a scenario passes when it ran and none of its
    checks is a FAILURE (WARNING, INFO and SKIPPED checks do not fail it)."""

    scenario: str
    scored: bool
    not_scored_reason: str | None = None
    checks: list[dict] = field(default_factory=list)
    error: str | None = None
    result_dir: str | None = None

    @property
    def failures(self) -> list[dict]:
        return [c for c in self.checks if c.get("status") == "FAILURE"]

    @property
    def passed(self) -> bool:
        return self.error is None and not self.failures

    @property
    def status(self) -> str:
        return "pass" if self.passed else "fail"

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.checks:
            out[c.get("status", "?")] = out.get(c.get("status", "?"), 0) + 1
        return out

    def to_json(self) -> dict:
        return {
            "scenario": self.scenario,
            "status": self.status,
            "scored": self.scored,
            **({"notScored": self.not_scored_reason} if not self.scored else {}),
            "checks": self.counts(),
            **({"error": self.error} if self.error else {}),
            "failures": [
                {"id": c.get("id"), "errorMessage": c.get("errorMessage")} for c in self.failures
            ],
            "warnings": [
                {"id": c.get("id"), "errorMessage": c.get("errorMessage")}
                for c in self.checks
                if c.get("status") == "WARNING"
            ],
            "resultDir": self.result_dir,
        }

    def summary(self) -> str:
        lines = [f"scenario {self.scenario}: {self.status}, checks {self.counts()}"]
        if self.error:
            lines.append(f"  error: {self.error}")
        for c in self.checks:
            if c.get("status") in ("FAILURE", "WARNING"):
                lines.append(f"  [{c.get('status')}] {c.get('id')}: {c.get('errorMessage') or c.get('description')}")
        if self.result_dir:
            lines.append(f"  checks: {self.result_dir}/checks.json")
        return "\n".join(lines)


@dataclass
class Requirements:
    """A requirement set as the installed suite ships it (requirements/<revision>.yaml)."""

    revision: str
    scored: list[str]
    not_scored: dict[str, str]  # scenario -> reason (extension, added-after-release, pending)

    @property
    def scenarios(self) -> list[str]:
        """Every server scenario `conformance server --requirements REV` runs, scored ones first."""
        return [*self.scored, *self.not_scored]


@dataclass
class RequirementsRun:
    revision: str
    returncode: int
    seconds: float
    output: str
    outcomes: dict[str, ScenarioOutcome]


def conformance_version() -> str:
    return json.loads((CONFORMANCE_DIR / "package.json").read_text())["version"]


def conformance_requirements(revision: str) -> Requirements:
    """The server scenarios of one requirement set, from the suite's own requirements/<revision>.yaml."""
    path = CONFORMANCE_DIR / "requirements" / f"{revision}.yaml"
    if not path.is_file():
        have = sorted(p.stem for p in (CONFORMANCE_DIR / "requirements").glob("*.yaml"))
        raise FileNotFoundError(
            f"the conformance suite at {CONFORMANCE_DIR} has no requirement set {revision} "
            f"(it has: {', '.join(have) or 'none'}); run e2e/setup.sh, or pin a suite that has it"
        )
    data = yaml.safe_load(path.read_text()) or {}
    scored = [str(s) for s in data.get("server") or []]
    not_scored = {
        str(e["scenario"]): str(e.get("reason", "not scored"))
        for e in data.get("not_scored") or []
        if e.get("leg") == "server"
    }
    return Requirements(revision, scored, not_scored)


_RESULT_DIR = re.compile(r"^server-(?P<name>.+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z$")


def run_conformance_requirements(url: str, revision: str, out_dir: Path, timeout: float = 900.0) -> RequirementsRun:
    """`conformance server --url URL --requirements REV -o OUT`: every server scenario the revision requires,
    and those it runs without scoring, one after the other at that revision's wire; parses each
    OUT/server-NAME-<time>/checks.json. Its output is kept in OUT/../conformance-REV.log."""
    req = conformance_requirements(revision)
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(node_binary()), str(CONFORMANCE_JS), "server", "--url", url, "--requirements", revision,
        "-o", str(out_dir),
    ]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=node_env(), stdin=subprocess.DEVNULL
        )
        returncode, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        returncode = -1
        output = _text(exc.stdout) + _text(exc.stderr) + f"\n[e2e] the suite did not finish within {timeout:.0f} s"
    seconds = time.monotonic() - started
    (out_dir.parent / f"conformance-{revision}.log").write_text(output)

    crashed = dict(re.findall(r"^Failed to run scenario (\S+): (.*)$", output, re.MULTILINE))
    dirs: dict[str, Path] = {}
    for d in sorted(out_dir.iterdir(), key=lambda p: p.name):
        m = _RESULT_DIR.match(d.name)
        if d.is_dir() and m:
            dirs[m.group("name")] = d  # the newest wins (names sort by time)
    outcomes: dict[str, ScenarioOutcome] = {}
    for name in req.scenarios:
        o = ScenarioOutcome(name, scored=name in req.scored, not_scored_reason=req.not_scored.get(name))
        d = dirs.get(name)
        checks = d / "checks.json" if d else None
        if d is not None:
            o.result_dir = str(d)
        if checks is not None and checks.is_file():
            o.checks = json.loads(checks.read_text())
        elif name in crashed:
            o.error = f"the scenario threw: {crashed[name]}"
        elif d is not None:
            o.error = "the scenario wrote no checks.json (see the suite's log)"
        else:
            o.error = f"the suite did not run it (exit {returncode}; see the suite's log)"
        outcomes[name] = o
    return RequirementsRun(revision, returncode, seconds, output, outcomes)


def _text(b: bytes | str | None) -> str:
    if b is None:
        return ""
    return b if isinstance(b, str) else b.decode(errors="replace")


def run_inspector(url: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """The MCP Inspector CLI (`mcp-inspector-cli --cli` mode) over streamable HTTP.

    build/index.js is run directly with Node 22 (the package's launcher spawns whatever `node` is
    on PATH); it reads ../package.json relative to the working directory, hence cwd."""
    cmd = [str(node_binary()), str(INSPECTOR_JS), url, "--transport", "http", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=node_env(), cwd=str(INSPECTOR_DIR),
        stdin=subprocess.DEVNULL,
    )
