"""mcp-fuzzer (PyPI, pinned in e2e/requirements.txt) against the gateway, for a bounded time.

Its own Envoy (plugin-config/e2e.yaml with every tool of `demo` on one tools/list page, since mcp-fuzzer
reads only the first, and `routed`, the same tools without clusters: route dispatch, the client's request
rewritten for Envoy's router) with an access log. mcp-fuzzer runs in tools mode on both servers (every
tool, realistic and aggressive arguments) and in protocol mode on `demo` (every MCP request type,
realistic and aggressive messages), with fixed seeds. mcp-fuzzer's `accepted_malformed` (it calls a coerced or ignored argument
a finding) and `injection_reflection` (the echo tools echo) are not faults here; the test fails on what
is a gateway fault whatever the input:

  - an HTTP 5xx. The documented ones cannot arise here: 503 when the session store cannot answer or
    `sessions.maxSessions` is reached (a local store with 100,000), 500 when Envoy lacks
    `allow_on_headers_stop_iteration` (envoy/envoy.yaml sets it); upstream faults are tool results
    with `isError`, not HTTP errors. So every 5xx in the access log is a fault (a failed VM answers
    503 too);
  - a hang: a request answered after HANG_MS (the slowest tool times out after 5 s), or never (the
    access log's status 0: the client gave up first), or mcp-fuzzer still running at its deadline;
  - a VM failure or panic in Envoy's log, or an Envoy that no longer serves afterwards;
  - a tool call mcp-fuzzer counts as crashed, anomalous (an answer that is not MCP) or an exception.

E2E_FUZZ_SCALE multiplies the runs (default 1: about a minute) for longer runs.

Route dispatch once let Envoy's own 500 (`response_payload_too_large`, an answer beyond its buffer) and 504
(`response_timeout`, a timeout in the middle of an answer) reach the client; the plugin now takes each chunk
out of Envoy's buffer and enforces the tool's timeout itself, so `routed` has every tool of `demo`, and
test_routed_answers_beyond_the_buffer_are_tool_errors pins those answers down as error results.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

import harness
from harness import RawMcp, crash_lines

pytestmark = pytest.mark.hostile

SERVER = "demo"
ROUTED = "routed"
SCALE = max(1, int(os.environ.get("E2E_FUZZ_SCALE", "1")))
# Runs per tool and phase, and per protocol request type and phase.
TOOL_RUNS = 6 * SCALE
# Tools of `routed` whose answers outgrow Envoy's buffer or the tool's timeout mid-answer.
ROUTED_BIG = ("big_answer", "big_answer_quoted", "endless_answer")
PROTOCOL_RUNS = 12 * SCALE
# mcp-fuzzer's timeout for one request (it gives up, and the access log shows status 0).
REQUEST_TIMEOUT_S = 15
# A request that takes longer is a hang: the slowest tool times out after 5 s.
HANG_MS = 10_000
SEED = 20260728
FUZZER = harness.VENV_BIN / "mcp-fuzzer"
FUZZER_VERSION = "0.7.0"

ACCESS_LOG_FORMAT = {
    "status": "%RESPONSE_CODE%",
    "ms": "%DURATION%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(:PATH)%",
    "flags": "%RESPONSE_FLAGS%",
    "details": "%RESPONSE_CODE_DETAILS%",
    "bytes_in": "%BYTES_RECEIVED%",
}


def _envoy_with_access_log(path: Path) -> dict:
    """envoy/envoy.yaml with a JSON access log on the listener `mcp`."""
    cfg = harness.load_envoy_yaml()
    listener = harness._find_named(cfg["static_resources"]["listeners"], "mcp", "listener")
    harness._hcm(listener)["access_log"] = [{
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": str(path),
            "log_format": {"json_format": ACCESS_LOG_FORMAT},
        },
    }]
    return cfg


@pytest.fixture(scope="module")
def fuzz_gw(e2e_config):
    """A gateway of its own (demo upstream included), every tool on one tools/list page, with an access log."""
    run_dir = harness.new_run_dir("fuzz")
    access_log = run_dir / "access-fuzz.log"
    cfg = copy.deepcopy(e2e_config)
    cfg["toolsPageSize"] = 100
    demo = next(s for s in cfg["servers"] if s["name"] == SERVER)
    routed = copy.deepcopy(demo)
    routed["name"] = ROUTED
    for block in [routed, *routed["tools"]]:
        if "upstream" in block:
            block["upstream"] = {k: v for k, v in block["upstream"].items() if k not in ("cluster", "authority")}
    cfg["servers"].append(routed)
    try:
        g = harness.start_gateway(cfg, tag="fuzz", run_dir=run_dir, envoy_base=_envoy_with_access_log(access_log))
    except harness.HarnessError as exc:
        pytest.fail(f"could not start a gateway: {exc}", pytrace=False)
    g.extra["access_log"] = access_log
    yield g
    g.stop()


def _fuzzer_version() -> str:
    """mcp-fuzzer's version; the test fails (not skips) without it: it is part of `make test`."""
    if not FUZZER.exists():
        pytest.fail(f"{FUZZER} is missing: run e2e/setup.sh (e2e/requirements.txt pins mcp-fuzzer=={FUZZER_VERSION})",
                    pytrace=False)
    out = subprocess.run([str(FUZZER), "--version"], capture_output=True, text=True, timeout=60)
    return (out.stdout + out.stderr).strip()


def _run_fuzzer(gw, name: str, args: list[str], deadline_s: float, server: str = SERVER) -> dict:
    """One mcp-fuzzer run against `server`; returns its run_summary.json. Fails if it outlives its deadline."""
    out_dir = gw.run_dir / f"mcp-fuzzer-{name}"
    cmd = [
        str(FUZZER), *args,
        "--protocol", "streamablehttp", "--endpoint", gw.mcp_url(server),
        "--timeout", str(REQUEST_TIMEOUT_S), "--tool-timeout", str(REQUEST_TIMEOUT_S),
        "--seed", str(SEED), "--no-network", "--allow-host", "127.0.0.1",
        "--output-dir", str(out_dir), "--fs-root", str(out_dir / "fs"), "--log-level", "WARNING",
    ]
    log = gw.run_dir / f"mcp-fuzzer-{name}.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(gw.run_dir), start_new_session=True)
        try:
            proc.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            harness._stop_process(proc)
            pytest.fail(f"mcp-fuzzer ({name}) still ran after {deadline_s} s (a hang?); its log: {log}\n"
                        f"{harness.tail(log, 30)}", pytrace=False)
    summary = out_dir / "run_summary.json"
    if not summary.exists():
        pytest.fail(f"mcp-fuzzer ({name}) exited {proc.returncode} without a summary; its log: {log}\n"
                    f"{harness.tail(log, 30)}", pytrace=False)
    return json.loads(summary.read_text())


def _access_entries(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _faults(entries: list[dict]) -> list[str]:
    """The access log entries that are gateway faults: 5xx, no answer, or an answer after HANG_MS."""
    bad = []
    for e in entries:
        status, ms = int(e["status"] or 0), int(e["ms"] or 0)
        if status >= 500 or status == 0 or ms > HANG_MS:
            bad.append(json.dumps(e))
    return bad


@pytest.mark.timeout(300)
def test_mcp_fuzzer_finds_no_5xx_hang_or_vm_failure(fuzz_gw):
    version = _fuzzer_version()
    assert FUZZER_VERSION in version, f"mcp-fuzzer {version!r}, expected {FUZZER_VERSION} (e2e/requirements.txt)"
    gw = fuzz_gw
    started = time.monotonic()
    summaries = {
        "tools": _run_fuzzer(gw, "tools", ["--mode", "tools", "--phase", "both", "--runs", str(TOOL_RUNS)],
                             deadline_s=120 * SCALE),
        "tools-routed": _run_fuzzer(gw, "tools-routed",
                                    ["--mode", "tools", "--phase", "both", "--runs", str(TOOL_RUNS)],
                                    deadline_s=120 * SCALE, server=ROUTED),
        "protocol-realistic": _run_fuzzer(
            gw, "protocol-realistic",
            ["--mode", "protocol", "--protocol-phase", "realistic", "--runs-per-type", str(PROTOCOL_RUNS)],
            deadline_s=60 * SCALE),
        "protocol-aggressive": _run_fuzzer(
            gw, "protocol-aggressive",
            ["--mode", "protocol", "--protocol-phase", "aggressive", "--runs-per-type", str(PROTOCOL_RUNS)],
            deadline_s=60 * SCALE),
    }
    elapsed = time.monotonic() - started
    # Envoy writes its access log once a second.
    time.sleep(2)
    entries = _access_entries(gw.extra["access_log"])
    tools = [summaries[k]["tool_discovery"]["tool_count"] for k in ("tools", "tools-routed")]
    expected = [len(next(s for s in gw.plugin_config["servers"] if s["name"] == n)["tools"]) for n in (SERVER, ROUTED)]
    print(f"\n[fuzz] {version}: {len(entries)} requests in {elapsed:.0f} s, {tools} tools, "
          f"statuses {sorted({e['status'] for e in entries})}")
    assert tools == expected, f"mcp-fuzzer found {tools} tools of {expected}"
    assert len(entries) > 500, f"only {len(entries)} requests reached Envoy"
    lines = crash_lines(gw.envoy.log_text())
    assert not lines, "plugin failures in the Envoy log:\n" + "\n".join(lines[:40])
    # mcp-fuzzer's own signs of a broken server (a failed call, an answer that is not MCP); its
    # `accepted_malformed` and `injection_reflection` (the echo tools echo) are not faults here.
    broken = {
        f"{run} {tool}: {kind}": n
        for run in ("tools", "tools-routed")
        for tool, result in summaries[run]["tools"]["by_name"].items()
        for kind, n in result["outcomes"].items()
        if kind in ("crashed", "anomaly", "exceptions") and n
    }
    assert not broken, f"mcp-fuzzer saw a broken server: {broken}; its logs: {gw.run_dir}/mcp-fuzzer-tools*"
    faults = _faults(entries)
    assert not faults, f"{len(faults)} requests with a 5xx, no answer or over {HANG_MS} ms " \
                       f"(access log {gw.extra['access_log']}):\n" + "\n".join(faults[:40])
    harness.assert_still_serving(gw, SERVER)


def test_routed_answers_beyond_the_buffer_are_tool_errors(e2e_config):
    """Answers of 64 MiB (with and without a Content-Length), an endless one and ones that outlive the tool's
    timeout mid-answer (still streaming, or stalled after a chunk), through the route: error results naming the limit or the timeout, as with
    dispatch: call, and soon (the gateway stops reading at maxResponseBytes)."""
    cfg = copy.deepcopy(e2e_config)
    demo = next(s for s in cfg["servers"] if s["name"] == SERVER)
    routed = {"name": ROUTED, "upstream": {"timeoutMs": 2000},
              "tools": [t for t in demo["tools"] if t["name"] in ROUTED_BIG]}
    for t in routed["tools"]:
        t.pop("upstream", None)
    cfg["servers"] = [routed]
    limit = cfg.get("maxResponseBytes", 8 << 20)
    with harness.gateway(cfg, tag="fuzz-routed-big") as g, RawMcp(g.base_url, g.prefix, timeout=15) as raw:
        sid, _ = raw.initialize(ROUTED)
        outcomes = {}
        for name, args in (("big_answer", {"bytes": 64 << 20}), ("big_answer", {"bytes": 64 << 20, "chunked": True}),
                           ("big_answer_quoted", {"bytes": 64 << 20}), ("endless_answer", {"delay_ms": 0}),
                           ("endless_answer", {"delay_ms": 100}), ("endless_answer", {"delay_ms": 5000}),
                           ("big_answer", {"bytes": 5 << 20}),
                           ("big_answer", {"bytes": 5 << 20, "chunked": True})):
            started = time.monotonic()
            r = raw.post(ROUTED, {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                  "params": {"name": name, "arguments": args}}, session=sid)
            key = f"{name} {json.dumps(args)}"
            assert r.status_code == 200, (key, r.status_code, r.text[:300])
            result = r.json()["result"]
            text = result["content"][0]["text"]
            outcomes[key] = (result.get("isError", False), text if len(text) < 1000 else f"{len(text)} bytes",
                             time.monotonic() - started)
        print("\n[routed big]", json.dumps(outcomes, indent=1))
        for key, (is_error, text, took) in outcomes.items():
            if str(5 << 20) in key:
                # an answer of many chunks under the limit arrives whole
                assert not is_error and text == f"{5 << 20} bytes", (key, text)
            elif "endless" in key and "delay_ms\": 0" not in key:
                # chunks every 100 ms (the timeout seen on a chunk), or one chunk then silence (on the tick)
                assert is_error and "timeout of 2000 ms" in text, (key, text)
                assert 1.9 < took < 4, (key, took)  # at the tool's timeout, before the router's
            else:
                assert is_error and "maxResponseBytes" in text and str(limit) in text, (key, text)
        assert "has 67108864 bytes" in outcomes['big_answer {"bytes": 67108864}'][1]
        assert "more than" in outcomes['big_answer {"bytes": 67108864, "chunked": true}'][1]
        assert g.envoy.alive(), "Envoy exited"
        assert not crash_lines(g.envoy.log_text()), crash_lines(g.envoy.log_text())[:20]
