"""Shared fixtures of the end-to-end tests.

The session fixture `gw` runs the demo upstream and Envoy (envoy/envoy.yaml with
plugin-config/e2e.yaml, --concurrency 2). The plugin must be built beforehand; if it is not, the
run stops at once with a message saying how to build it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked `hostile` run after the others (a plugin crash they provoke must not show up as
    failures elsewhere), and tests marked `last` after those (stable sort: order kept otherwise)."""

    def rank(item) -> int:
        if item.get_closest_marker("last"):
            return 2
        if item.get_closest_marker("hostile"):
            return 1
        return 0

    items.sort(key=rank)


@pytest.fixture(scope="session")
def e2e_config() -> dict:
    return harness.load_plugin_config(harness.E2E_CONFIG)


@pytest.fixture(scope="session")
def gw(e2e_config):
    """The main gateway: demo upstream + Envoy with plugin-config/e2e.yaml."""
    try:
        harness.wasm_path()
    except harness.HarnessError as exc:
        pytest.exit(str(exc), returncode=3)
    try:
        g = harness.start_gateway(e2e_config, tag="main")
    except harness.HarnessError as exc:
        pytest.exit(f"could not start the gateway: {exc}", returncode=3)
    # Canary: without an answer to initialize every test would just wait for its timeout.
    try:
        with harness.RawMcp(g.base_url, g.prefix, timeout=10) as raw:
            raw.initialize_raw("demo")
    except Exception as exc:  # noqa: BLE001
        g.stop()
        pytest.exit(
            f"the plugin does not answer POST initialize within 10 s ({exc.__class__.__name__}); "
            f"Envoy log: {g.envoy.log_path}\n{harness.tail(g.envoy.log_path, 30)}",
            returncode=3,
        )
    try:
        yield g
    finally:
        g.stop()
        sys.stderr.write(f"\n[e2e] logs of this run: {g.run_dir}\n")


@pytest.fixture
def raw(gw):
    """A RawMcp client on the main gateway."""
    with harness.RawMcp(gw.base_url, gw.prefix) as r:
        yield r


@pytest.fixture(scope="session")
def demo_tools(e2e_config) -> dict:
    """The tools of the `demo` server in plugin-config/e2e.yaml, by name."""
    server = next(s for s in e2e_config["servers"] if s["name"] == "demo")
    return {t["name"]: t for t in server["tools"]}
