"""The MCP conformance suite against `@modelcontextprotocol/server-everything` (pinned in e2e/package.json,
installed by `make setup`), directly and through the gateway as a proxied server (`type: mcp-proxy`):
every scenario that passes directly must pass through the gateway.

server-everything does not implement most of the suite's test tools, so many scenarios fail directly; those
say nothing about the gateway.
"""

from __future__ import annotations

import pytest

import harness
from everything import Everything
from node_tools import conformance_requirements, run_conformance_requirements

REVISIONS = ["2025-11-25", "2026-07-28"]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Per revision: (direct, through the gateway) outcomes by scenario."""
    run_dir = tmp_path_factory.mktemp("everything")
    backend = Everything(run_dir)
    try:
        cfg = {"servers": [{"name": "everything", "type": "mcp-proxy", "transport": "http", "mcpServerURL": "/mcp"}]}
        with harness.gateway(cfg, tag="everything-proxy", upstream=backend, plugin_format="json",
                             envoy_base=_envoy_base()) as g:
            result = {}
            for rev in REVISIONS:
                direct = run_conformance_requirements(backend.url, rev, run_dir / f"direct-{rev}" / "out")
                through = run_conformance_requirements(g.mcp_url("everything"), rev, run_dir / f"gateway-{rev}" / "out")
                result[rev] = (direct.outcomes, through.outcomes)
            yield result
    finally:
        backend.stop()


def _envoy_base() -> dict:
    """envoy/envoy.yaml with Envoy answering /healthz itself (the harness's readiness probe), since
    server-everything has no such path."""
    base = harness.load_envoy_yaml()
    health = {"match": {"path": "/healthz"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}
    for listener in base["static_resources"]["listeners"]:
        for chain in listener.get("filter_chains", []):
            for f in chain.get("filters", []):
                for vh in f.get("typed_config", {}).get("route_config", {}).get("virtual_hosts", []):
                    vh["routes"].insert(0, health)
    return base


def _cases() -> list:
    return [(rev, s) for rev in REVISIONS for s in conformance_requirements(rev).scenarios]


@pytest.mark.parametrize("revision,scenario", _cases())
def test_what_passes_directly_passes_through_the_gateway(outcomes, revision, scenario):
    direct, through = outcomes[revision]
    if direct[scenario].passed:
        assert through[scenario].passed, through[scenario].summary()


def test_the_backend_passes_enough_to_say_something(outcomes):
    direct, _ = outcomes["2025-11-25"]
    passing = [s for s, o in direct.items() if o.passed]
    assert len(passing) >= 10, passing
