"""The official MCP conformance suite (@modelcontextprotocol/conformance, pinned in e2e/package.json, Node 22)
against the fixture server of plugin-config/conformance.yaml, on a gateway of its own (demo upstream + Envoy).

Every server scenario of both requirement sets runs: `conformance server --requirements 2025-11-25` and
`--requirements 2026-07-28`, each at its own wire (initialize and sessions; stateless `_meta`). The
scenarios are the suite's own lists (requirements/<rev>.yaml in the installed package): the scored ones
and those it runs without scoring (extensions, pending, added after the release).

e2e/conformance-baseline.json records, per requirement set, which scenarios passed when it was last raised:
- a scenario the baseline marks `pass` must pass (a regression fails its test);
- a scenario marked `fail` is an expected failure (xfail); when it passes (XPASS) the test warns that the
  baseline should be raised, and the run writes the measured baseline next to its results;
- a scenario the suite runs and the baseline does not list fails, and so does a baseline entry the suite
  no longer has.
What each scenario expects, and what the plugin still lacks for it, is docs/conformance.md.

Results: target/e2e/<run>/conformance-<rev>.json (one entry per scenario: status, counts of checks, the
failing checks), the suite's log conformance-<rev>.log, its raw output under conformance/<rev>/, and
conformance-baseline.measured.json.
"""

from __future__ import annotations

import json
import re
import sys
import warnings

import pytest

import harness
from node_tools import (
    RequirementsRun,
    conformance_requirements,
    conformance_version,
    run_conformance_requirements,
)

REVISIONS = ("2025-11-25", "2026-07-28")
BASELINE = harness.E2E_DIR / "conformance-baseline.json"
SERVER = "conformance"


def _load_baseline() -> dict:
    try:
        return json.loads(BASELINE.read_text())
    except FileNotFoundError:
        return {}


def _params() -> list:
    """(revision, scenario) for every server scenario of both requirement sets, as the installed suite lists
    them. A requirement set that cannot be read becomes one test that fails with the reason."""
    baseline = _load_baseline()
    params = []
    for rev in REVISIONS:
        try:
            scenarios = conformance_requirements(rev).scenarios
        except Exception as exc:  # noqa: BLE001
            params.append(pytest.param(rev, None, str(exc), id=f"{rev}-unavailable"))
            continue
        expected = baseline.get(rev, {})
        for name in scenarios:
            marks = []
            if expected.get(name) == "fail":
                # Only the scenario's own failure (pytest.fail below) is expected; a broken harness is not.
                marks.append(
                    pytest.mark.xfail(
                        reason=f"{BASELINE.name}: {rev} {name} fails", raises=pytest.fail.Exception, strict=False
                    )
                )
            params.append(pytest.param(rev, name, None, id=f"{rev}-{name}", marks=marks))
    return params


class Runs:
    """The dedicated gateway and the suite's results per requirement set (each run once, on first use)."""

    def __init__(self, gw: harness.Gateway):
        self.gw = gw
        self.url = gw.mcp_url(SERVER)
        self.runs: dict[str, RequirementsRun] = {}

    def get(self, rev: str) -> RequirementsRun:
        if rev not in self.runs:
            run = run_conformance_requirements(self.url, rev, self.gw.run_dir / "conformance" / rev)
            self.runs[rev] = run
            self._record(run)
        return self.runs[rev]

    def _record(self, run: RequirementsRun) -> None:
        outcomes = list(run.outcomes.values())
        scored = [o for o in outcomes if o.scored]
        doc = {
            "suite": f"@modelcontextprotocol/conformance@{conformance_version()}",
            "requirements": run.revision,
            "url": self.url,
            "config": str(harness.CONFORMANCE_CONFIG.relative_to(harness.ROOT)),
            "exitCode": run.returncode,
            "seconds": round(run.seconds, 2),
            "scored": {"passed": sum(o.passed for o in scored), "total": len(scored)},
            "notScored": {
                "passed": sum(o.passed for o in outcomes if not o.scored),
                "total": sum(not o.scored for o in outcomes),
            },
            "scenarios": [o.to_json() for o in outcomes],
        }
        (self.gw.run_dir / f"conformance-{run.revision}.json").write_text(json.dumps(doc, indent=2) + "\n")
        measured = {
            "about": _load_baseline().get("about", ""),
            "suite": doc["suite"],
            **{r: _statuses(x) for r, x in self.runs.items()},
        }
        (self.gw.run_dir / "conformance-baseline.measured.json").write_text(json.dumps(measured, indent=2) + "\n")

    def summary(self) -> list[str]:
        baseline = _load_baseline()
        lines = []
        for rev, run in self.runs.items():
            outcomes = list(run.outcomes.values())
            scored = [o for o in outcomes if o.scored]
            unscored = [o for o in outcomes if not o.scored]
            lines.append(
                f"[e2e] conformance {rev}: {sum(o.passed for o in scored)}/{len(scored)} required scenarios pass, "
                f"{sum(o.passed for o in unscored)}/{len(unscored)} of those not scored ({run.seconds:.1f} s)"
            )
            raised = [n for n, o in run.outcomes.items() if o.passed and baseline.get(rev, {}).get(n) == "fail"]
            if raised:
                lines.append(
                    f"[e2e]   pass now, marked fail in {BASELINE.name}: {', '.join(raised)}: raise the baseline "
                    f"(cp {self.gw.run_dir / 'conformance-baseline.measured.json'} {BASELINE})"
                )
        if self.runs:
            lines.append(f"[e2e] conformance results: {self.gw.run_dir}/conformance-<rev>.json")
        return lines


def _statuses(run: RequirementsRun) -> dict[str, str]:
    return {name: o.status for name, o in run.outcomes.items()}


@pytest.fixture(scope="module")
def runs(request):
    """Demo upstream + Envoy serving plugin-config/conformance.yaml, on ports of their own."""
    # A HarnessError here errors every test, the expected failures included (their xfail expects only
    # pytest.fail from the test itself).
    gw = harness.start_gateway(harness.CONFORMANCE_CONFIG, tag="conformance")
    r = Runs(gw)
    try:
        yield r
    finally:
        gw.stop()
        capman = request.config.pluginmanager.getplugin("capturemanager")
        with capman.global_and_fixture_disabled():
            sys.stderr.write("\n" + "\n".join(r.summary()) + "\n")


@pytest.mark.parametrize(("revision", "scenario", "unavailable"), _params())
def test_conformance(runs, revision, scenario, unavailable):
    if unavailable:
        pytest.fail(f"requirement set {revision}: {unavailable}", pytrace=False)
    expected = _load_baseline().get(revision, {}).get(scenario)
    outcome = runs.get(revision).outcomes[scenario]
    if expected is None:
        pytest.fail(
            f"{revision} {scenario} is not in {BASELINE.name} (measured: {outcome.status}); add it, with the "
            f"reason in docs/conformance.md and the README table\n{outcome.summary()}",
            pytrace=False,
        )
    if not outcome.passed:
        regression = " (the baseline says it passes: a regression)" if expected == "pass" else ""
        pytest.fail(f"{revision} {scenario} fails{regression}\n{outcome.summary()}", pytrace=False)
    if expected == "fail":
        warnings.warn(
            f"conformance {revision} {scenario} passes but {BASELINE.name} marks it fail: raise the baseline",
            stacklevel=1,
        )


def test_baseline_lists_the_suites_scenarios():
    """The baseline has one entry per scenario of each requirement set, no more, and says pass or fail."""
    baseline = _load_baseline()
    assert baseline, f"{BASELINE} is missing or empty"
    for rev in REVISIONS:
        suite = conformance_requirements(rev).scenarios
        have = baseline.get(rev, {})
        extra = [n for n in have if n not in suite]
        assert not extra, f"{BASELINE.name} {rev} lists scenarios the suite no longer runs: {extra}"
        bad = {n: v for n, v in have.items() if v not in ("pass", "fail")}
        assert not bad, f"{BASELINE.name} {rev}: values must be pass or fail: {bad}"
    assert set(baseline) - {"about", "suite"} == set(REVISIONS), sorted(baseline)
    pinned = json.loads((harness.E2E_DIR / "package.json").read_text())["dependencies"][
        "@modelcontextprotocol/conformance"
    ]
    assert baseline.get("suite") == f"@modelcontextprotocol/conformance@{pinned}", (
        f"{BASELINE.name} was measured with {baseline.get('suite')}, e2e/package.json pins {pinned}: re-measure"
    )
    installed = conformance_version()
    assert installed == pinned, f"installed suite {installed}, pinned {pinned}: run e2e/setup.sh"


_ROW = re.compile(r"^\| `(?P<name>[^`]+)` \| (?P<a>[^|]*) \| (?P<b>[^|]*) \|")


def test_readme_table_matches_baseline():
    """README.md's Conformance table says what the baseline says, scenario by scenario."""
    text = (harness.ROOT / "README.md").read_text()
    section = text.split("\n## Conformance\n", 1)
    assert len(section) == 2, "README.md has no '## Conformance' section"
    body = section[1].split("\n## ", 1)[0]
    table = {m["name"]: (m["a"].strip(), m["b"].strip()) for m in map(_ROW.match, body.splitlines()) if m}
    baseline = _load_baseline()
    want = {}
    for name in dict.fromkeys([*baseline.get(REVISIONS[0], {}), *baseline.get(REVISIONS[1], {})]):
        want[name] = tuple(_cell(baseline.get(rev, {}).get(name)) for rev in REVISIONS)
    got = {n: (_norm(a), _norm(b)) for n, (a, b) in table.items()}
    differ = sorted(n for n in set(got) | set(want) if got.get(n) != want.get(n))
    assert not differ, "\n".join(f"{n}: README {got.get(n)}, baseline {want.get(n)}" for n in differ)


def _cell(status: str | None) -> str:
    return "-" if status is None else status


def _norm(cell: str) -> str:
    """A README cell: 'pass', 'fail', or '-' (not in that requirement set); decoration such as '**pass**' or
    'pass (nothing checked)' is allowed after the word."""
    m = re.match(r"^\W*(pass|fail|-|—)", cell)
    return "-" if not m or m.group(1) in ("-", "—") else m.group(1)
