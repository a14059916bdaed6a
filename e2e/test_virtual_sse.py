"""Virtual servers taking tools of a `transport: sse` proxied server (the Python SDK's legacy SSE server,
e2e/mcp_backend.py in `sse` mode) beside a Streamable HTTP one, in real Envoy. The gateway's own calls to
the SSE server loop back through this Envoy (the cluster `gateway_self`, pointing at the `mcp` listener):
each becomes a request of its own to `/mcp-servers/legacy`, which the Streamable HTTP bridge turns into an
SSE exchange with the backend and answers whole. A pass in `x-mcp-gateway-loopback` makes it the gateway's
own call, past the SSE server's `auth`, `allowTools` and `toolOverrides`, which clients still meet.

Envoy runs two workers: a loopback request may be served by the other worker, which must accept the pass
signed with the secret they share.
"""

from __future__ import annotations

import copy
import json
import re
import time

import httpx
import pytest

import harness
from harness import ACCEPT, LATEST
from test_mcp_proxy import McpBackend
from test_virtual_server import proxied, raw_list


# What the access log shows of each request: a loopback request is marked with its virtual server.
ACCESS_LOG = "%REQ(:PATH)% %RESPONSE_CODE% server=%FILTER_STATE(wasm.mcp_server_name:PLAIN)% virtual=%FILTER_STATE(wasm.mcp_virtual_server:PLAIN)%\n"


def _envoy_base(port_a: int, ports: harness.Ports, access_log) -> dict:
    base = harness.with_access_log(access_log, ACCESS_LOG)
    clusters = base["static_resources"]["clusters"]
    template = next(c for c in clusters if c["name"] == "blackhole")
    for name, port in (("mcp_a", port_a), ("gateway_self", ports.mcp)):
        c = copy.deepcopy(template)
        c["name"] = name
        c["load_assignment"]["cluster_name"] = name
        sa = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
        sa["port_value"] = port
        clusters.append(c)
    # The other way back (README, Virtual servers): an internal listener, no socket, serving the `mcp`
    # listener's filter chains, this plugin's configuration included. The very same list: the harness's
    # deep copy keeps it shared, so the plugin configuration it writes into `mcp` is this listener's too.
    listeners = base["static_resources"]["listeners"]
    mcp = next(x for x in listeners if x["name"] == "mcp")
    listeners.append({"name": "gateway_internal", "internal_listener": {},
                      "per_connection_buffer_limit_bytes": mcp["per_connection_buffer_limit_bytes"],
                      "filter_chains": mcp["filter_chains"]})
    base.setdefault("bootstrap_extensions", []).append({
        "name": "envoy.bootstrap.internal_listener",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener"},
    })
    clusters.append({"name": "gateway_internal", "connect_timeout": "1s", "load_assignment": {
        "cluster_name": "gateway_internal",
        "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
            "envoy_internal_address": {"server_listener_name": "gateway_internal"}}}}]}]}})
    return base


@pytest.fixture(scope="module")
def backends(tmp_path_factory):
    a = McpBackend("stateful", log_dir=tmp_path_factory.mktemp("backend-a")).start(timeout=60)
    sse = McpBackend("sse", log_dir=tmp_path_factory.mktemp("backend-sse")).start(timeout=60)
    yield a, sse
    a.stop()
    sse.stop()


@pytest.fixture(scope="module")
def gateway(backends):
    a, sse = backends
    ports = harness.Ports.pick(demo=sse.port)
    run_dir = harness.new_run_dir("virtual-sse")
    cfg = {
        "consumers": [{"name": "alice", "credential": "alice-key"}],
        "keyAuth": {"keys": ["x-api-key"]},
        "observability": {"audit": "warn"},  # the harness runs Envoy at --log-level warn
        "servers": [
            proxied("alpha", "mcp_a", a.port),
            # What its clients meet: a key, one tool under another name. The SDK's server checks Host: the
            # loopback names it, and the bridge passes it on.
            {"name": "legacy", "type": "mcp-proxy", "transport": "sse", "mcpServerURL": "/sse", "timeout": 10000,
             "auth": {"anonymous": False}, "allowTools": ["shout"], "toolOverrides": {"echo": {"name": "shout"}},
             "upstream": {"authority": f"127.0.0.1:{sse.port}"}},
            {"name": "mixed", "type": "virtual", "timeout": 8000, "toolsCacheMs": 1500, "gatewayCluster": "gateway_self",
             "tools": [
                 {"server": "alpha", "tool": "echo", "name": "say"},
                 {"server": "legacy", "tool": "echo", "name": "old_echo", "description": "Echo, from the SSE server."},
                 {"server": "legacy", "tool": "whoami"},
             ]},
            # The same tools through the internal listener.
            {"name": "inner", "type": "virtual", "timeout": 8000, "gatewayCluster": "gateway_internal",
             "tools": [{"server": "legacy", "tool": "echo"}, {"server": "alpha", "tool": "echo", "name": "say"}]},
        ],
        # Higress's shape: a top-level toolSet, its gatewayCluster beside serverTools.
        "toolSet": {"name": "set", "gatewayCluster": "gateway_self",
                    "serverTools": [{"serverName": "legacy", "tools": ["echo"]}, {"serverName": "alpha", "tools": ["echo"]}]},
    }
    g = harness.start_gateway(cfg, tag="virtual-sse", upstream=sse, plugin_format="json", ports=ports,
                              envoy_base=_envoy_base(a.port, ports, run_dir / "access.log"), run_dir=run_dir)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def default_gateway(backends):
    """A second gateway whose virtual server and top-level toolSet name no cluster: the plugin's
    top-level `gatewayCluster` serves both."""
    a, sse = backends
    ports = harness.Ports.pick(demo=sse.port)
    run_dir = harness.new_run_dir("virtual-sse-default")
    cfg = {
        "gatewayCluster": "gateway_self",
        "servers": [
            proxied("alpha", "mcp_a", a.port),
            {"name": "legacy", "type": "mcp-proxy", "transport": "sse", "mcpServerURL": "/sse", "timeout": 10000,
             "upstream": {"authority": f"127.0.0.1:{sse.port}"}},
            {"name": "plain", "type": "virtual", "timeout": 8000,
             "tools": [{"server": "legacy", "tool": "echo"}, {"server": "alpha", "tool": "echo", "name": "say"}]},
        ],
        "toolSet": {"name": "set", "serverTools": [{"serverName": "legacy", "tools": ["echo"]}]},
    }
    g = harness.start_gateway(cfg, tag="virtual-sse-default", upstream=sse, plugin_format="json", ports=ports,
                              envoy_base=_envoy_base(a.port, ports, run_dir / "access.log"), run_dir=run_dir)
    yield g
    g.stop()


def test_a_virtual_server_lists_and_calls_an_sse_servers_tools_through_the_bridge(gateway):
    out: dict = {}

    async def main():
        async with harness.mcp_client(gateway.mcp_url("mixed")) as c:
            out["tools"] = (await c.list_tools()).tools
            out["results"] = [
                await c.call_tool("say", {"text": "new"}),
                await c.call_tool("old_echo", {"text": "old"}),
                await c.call_tool("whoami", {}),
            ]

    harness.run_async(main)
    tools = {t.name: t for t in out["tools"]}
    # The backend's own names, not the SSE server's allowTools and toolOverrides: the gateway's own calls.
    assert [t.name for t in out["tools"]] == ["say", "old_echo", "whoami"]
    assert tools["old_echo"].description == "Echo, from the SSE server."
    assert tools["old_echo"].input_schema["properties"]["text"]["type"] == "string"  # the backend's schema
    texts = [r.content[0].text for r in out["results"]]
    assert texts[:2] == ["echo: new", "echo: old"]
    # Neither the client's credentials nor the pass reach the backend.
    assert texts[2] == "authorization='' cookie=''", texts[2]


def _list_and_call(gateway, server: str, tool: str) -> tuple[list[str], str]:
    out: dict = {}

    async def main():
        async with harness.mcp_client(gateway.mcp_url(server)) as c:
            out["tools"] = [t.name for t in (await c.list_tools()).tools]
            out["text"] = (await c.call_tool(tool, {"text": server})).content[0].text

    harness.run_async(main)
    return out["tools"], out["text"]


def test_a_top_level_tool_set_reaches_the_sse_server_through_its_gateway_cluster(gateway):
    tools, text = _list_and_call(gateway, "set", "legacy___echo")
    # Higress's names, the backend's tool (not the SSE server's `shout`), called as the gateway's own.
    assert tools == ["legacy___echo", "alpha___echo"]
    assert text == "echo: set"


def test_the_plugins_gateway_cluster_serves_virtual_servers_that_name_none(default_gateway):
    tools, text = _list_and_call(default_gateway, "plain", "echo")
    assert tools == ["echo", "say"]
    assert text == "echo: plain"
    tools, text = _list_and_call(default_gateway, "set", "legacy___echo")
    assert tools == ["legacy___echo"]
    assert text == "echo: set"
    # Through the loopback: the plugin's cluster carried the calls.
    stats = httpx.get(f"{default_gateway.envoy.admin_url}/stats?filter=^cluster\\.gateway_self\\.upstream_rq_total$",
                      timeout=10).text
    assert int(stats.strip().split(": ")[1]) >= 4, stats


def test_an_internal_listener_serves_as_the_gateway_cluster(gateway):
    tools, text = _list_and_call(gateway, "inner", "echo")
    assert tools == ["echo", "say"]
    assert text == "echo: inner"
    # The loopback went through the internal listener: its cluster's requests, not the socket's.
    stats = httpx.get(f"{gateway.envoy.admin_url}/stats?filter=^cluster\\.gateway_(internal|self)\\.upstream_rq_total$",
                      timeout=10).text
    counts = dict(line.split(": ") for line in stats.strip().splitlines())
    assert int(counts["cluster.gateway_internal.upstream_rq_total"]) >= 2, stats


def _access_log(gateway, want) -> list[str]:
    """The access log's lines once `want` holds of them (Envoy writes the file about once a second)."""
    path = gateway.run_dir / "access.log"
    for _ in range(100):
        lines = path.read_text().splitlines() if path.exists() else []
        if want(lines):
            return lines
        time.sleep(0.2)
    raise AssertionError("\n".join(lines[-30:]))


def test_loopback_requests_are_logged_and_counted_as_their_virtual_servers(gateway):
    _list_and_call(gateway, "mixed", "old_echo")
    _list_and_call(gateway, "inner", "echo")
    # A client's own request to the SSE server (no pass): the SSE server's alone.
    r = httpx.post(gateway.mcp_url("legacy"), json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                   headers={"Accept": ACCEPT, "x-api-key": "alice-key"}, timeout=15)
    assert r.status_code == 200, r.text
    # The bridge's requests, under the path it sent on: the SSE backend's `mcpServerURL`.
    lines = _access_log(gateway, lambda ls: any(x.startswith("/sse ") and x.endswith("virtual=-") for x in ls))
    bridged = [x for x in lines if x.startswith("/sse ")]
    assert any(x.endswith("server=legacy virtual=mixed") for x in bridged), bridged
    assert any(x.endswith("server=legacy virtual=inner") for x in bridged), bridged
    assert any(x.endswith("server=- virtual=-") and " 200 " in x for x in bridged), bridged
    # Requests of the virtual servers themselves are not marked.
    own = [x for x in lines if x.startswith(f"{gateway.prefix}/mixed ")]
    assert own and all(x.endswith("virtual=-") for x in own), own
    text = httpx.get(f"{gateway.envoy.admin_url}/stats/prometheus", timeout=10).text
    counted = {}
    for line in text.splitlines():
        m = re.match(r"^mcp_loopback_requests_total\{(.*)\} (\S+)$", line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            counted[(labels.get("mcp_server"), labels.get("mcp_virtual_server"))] = float(m.group(2))
    # At least this test's call of each (earlier tests' requests count too); only loopback requests counted.
    assert counted.get(("legacy", "mixed"), 0) >= 1 and counted.get(("legacy", "inner"), 0) >= 1, text
    assert set(counted) <= {("legacy", "mixed"), ("legacy", "inner"), ("legacy", "set")}, counted
    # The bridge's audit line for the gateway's own call names the virtual server (written when its stream
    # ends, so looked for until it is there).
    for _ in range(50):
        audits = [json.loads(x.split("mcp-audit ", 1)[1]) for x in gateway.envoy.log_text().splitlines()
                  if "mcp-audit {" in x]
        own = [a for a in audits if a["server"] == "legacy" and a.get("gatewayCallFor") == "mixed"]
        if own:
            break
        time.sleep(0.2)
    assert own and own[-1]["tool"] == "echo" and own[-1]["outcome"] == "ok" and own[-1]["arguments"] == ["text"], audits
    # The bridge audits only the gateway's own calls (a client's through it writes none), each naming its caller.
    assert all(a.get("gatewayCallFor") in ("mixed", "inner", "set") for a in audits if a["server"] == "legacy"), audits


def test_a_forged_pass_gains_a_client_nothing(gateway):
    url = gateway.mcp_url("legacy")
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    listing = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    forged = f"{int(time.time() * 1000) + 60_000}.{'A' * 43}"
    for pass_ in (forged, "", "garbage"):
        for body in (init, listing):
            r = httpx.post(url, json=body, headers={"Accept": ACCEPT, "x-mcp-gateway-loopback": pass_}, timeout=15)
            assert r.status_code == 401, (pass_, r.status_code, r.text)
    # With its key a client gets what the server offers it: one tool, under its new name.
    r = httpx.post(url, json=listing, headers={"Accept": ACCEPT, "x-api-key": "alice-key",
                                               "x-mcp-gateway-loopback": forged}, timeout=15)
    assert r.status_code == 200, r.text
    body = r.json() if r.headers["content-type"].startswith("application/json") else None
    assert body is not None and [t["name"] for t in body["result"]["tools"]] == ["shout"], r.text


def test_the_sse_backend_down_removes_only_its_tools(gateway, backends):
    _, sse = backends
    assert raw_list(gateway, "mixed") == ["say", "old_echo", "whoami"]
    sse.stop()
    try:
        time.sleep(1.6)  # past toolsCacheMs
        assert raw_list(gateway, "mixed") == ["say"]
        assert raw_list(gateway, "mixed") == ["say"]
        log = gateway.envoy.log_text()
        # Once per worker that fetched, at most two.
        assert 1 <= log.count("proxied server 'legacy' could not list its tools") <= 2, log[-3000:]
    finally:
        sse.start(timeout=60)
    time.sleep(1.6)
    # The worker that found it down says so when it lists again; another worker may serve the first lists
    # (each request is a new connection), so list until it does.
    for _ in range(20):
        assert raw_list(gateway, "mixed") == ["say", "old_echo", "whoami"]
        if "proxied server 'legacy' lists its tools again" in gateway.envoy.log_text():
            break
    assert "proxied server 'legacy' lists its tools again" in gateway.envoy.log_text()
