"""Higress's per-route configurations (`_rules_`, what a WasmPlugin's `matchRules` become) in real Envoy.

Envoy gives the plugin the same facts Higress does: the `:authority`, and the `route_name` and `cluster_name`
attributes of the route its router chose. The Envoy config here adds named routes on their own virtual hosts
beside envoy.yaml's unnamed catch-all, and a cluster named as Higress names service clusters
(`outbound|80||svc.test`), all to the demo upstream. Each configuration serves a server of its own name, so
which one answered is plain from which server exists. (The test host for Higress's ABI runs the same
selection in e2e/test_oci.py, from deploy/higress/wasmplugin.yaml.)
"""

from __future__ import annotations

import copy
import json

import httpx
import pytest

import harness
from harness import ACCEPT, LATEST

SERVICE_CLUSTER = "outbound|80||svc.test"


def server(name: str) -> dict:
    """A server with one tool that answers from its template (no upstream call needed)."""
    return {
        "name": name,
        "upstream": {"cluster": "demo"},
        "tools": [
            {
                "name": "whoami",
                "description": "Which configuration serves this request.",
                "requestTemplate": {"url": "/echo/whoami", "method": "GET"},
                "responseTemplate": {"body": f"served by {name}"},
            }
        ],
    }


PLUGIN_CONFIG = {
    "servers": [server("global")],
    "_rules_": [
        {"_match_route_": ["default/users-mcp"], "servers": [server("by-route")]},
        {"_match_domain_": ["*.domain.test"], "servers": [server("by-domain")]},
        {"_match_service_": ["svc.test:80"], "servers": [server("by-service")]},
        {"_match_route_prefix_": ["team-"], "servers": [server("by-route-prefix")]},
    ],
}


def envoy_base() -> dict:
    """envoy/envoy.yaml with named routes on virtual hosts of their own, and a Higress-named cluster."""
    cfg = copy.deepcopy(harness.load_envoy_yaml())
    listener = next(x for x in cfg["static_resources"]["listeners"] if x["name"] == "mcp")
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    vhosts = hcm["route_config"]["virtual_hosts"]

    def vhost(domain: str, route_name: str | None, cluster: str) -> dict:
        route = {"match": {"prefix": "/"}, "route": {"cluster": cluster, "timeout": "60s"}}
        if route_name:
            route["name"] = route_name
        return {"name": domain, "domains": [domain, f"{domain}:*"], "routes": [route]}

    vhosts[:0] = [
        vhost("users.example", "default/users-mcp", "demo"),
        vhost("svc.test", None, SERVICE_CLUSTER),
        vhost("team.example", "team-a", "demo"),
    ]
    demo = next(c for c in cfg["static_resources"]["clusters"] if c["name"] == "demo")
    service = copy.deepcopy(demo)
    service["name"] = SERVICE_CLUSTER
    service["load_assignment"]["cluster_name"] = SERVICE_CLUSTER
    cfg["static_resources"]["clusters"].append(service)
    return cfg


@pytest.fixture(scope="module")
def gateway():
    base = envoy_base()
    # (the service cluster only names the route's cluster; tool calls go to each server's `demo`)
    g = harness.start_gateway(PLUGIN_CONFIG, tag="rules", envoy_base=base, plugin_format="json")
    yield g
    g.stop()


def served(g: harness.Gateway, host: str, name: str) -> tuple[int, str | None]:
    """initialize then tools/call `whoami` on server `name` with this Host; (initialize status, answer)."""
    headers = {"Accept": ACCEPT, "Content-Type": "application/json", "Host": host}
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    with httpx.Client(timeout=10) as c:
        r = c.post(g.mcp_url(name), content=json.dumps(init), headers=headers)
        if r.status_code != 200:
            return r.status_code, None
        headers |= {"Mcp-Session-Id": r.headers["mcp-session-id"], "MCP-Protocol-Version": LATEST}
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}
        r = c.post(g.mcp_url(name), content=json.dumps(call), headers=headers)
        assert r.status_code == 200, r.text
        return 200, r.json()["result"]["content"][0]["text"]


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("127.0.0.1", "global"),  # no rule matches: the global configuration
        ("users.example", "by-route"),  # route_name default/users-mcp
        ("api.domain.test", "by-domain"),  # :authority, suffix pattern, port ignored
        ("svc.test", "by-service"),  # cluster_name outbound|80||svc.test
        ("team.example", "by-route-prefix"),  # route_name team-a
    ],
)
def test_each_request_gets_the_configuration_its_route_selects(gateway, host, name):
    assert served(gateway, host, name) == (200, f"served by {name}")
    # and no other configuration's server is served there
    others = {"global", "by-route", "by-domain", "by-service", "by-route-prefix"} - {name}
    for other in sorted(others)[:2]:
        assert served(gateway, host, other)[0] == 404, (host, other)


def test_an_invalid_rule_is_refused_at_load_naming_it():
    """Envoy refuses the whole config, and the log names the rule, the server, the tool and the field."""
    bad = copy.deepcopy(PLUGIN_CONFIG)
    bad["_rules_"][1]["servers"][0]["tools"][0]["name"] = "who ami"
    run_dir = harness.new_run_dir("rules-bad")
    envoy = harness.Envoy(
        bad, upstream_port=harness.unused_port(), run_dir=run_dir, name="envoy-rules-bad",
        plugin_format="json", base=envoy_base(),
    )
    with pytest.raises(harness.HarnessError, match="exited"):
        envoy.start(timeout=30)
    log = envoy.log_path.read_text(errors="replace")
    assert "invalid plugin config: server 'by-domain' tool 'who ami' field '_rules_[1].name'" in log, log[-2000:]
