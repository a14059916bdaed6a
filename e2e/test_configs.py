"""The configuration files themselves: envoy/envoy.yaml, plugin-config/*.yaml, docker-compose.yml.

Static checks first (no Envoy needed), then two more Envoys: envoy/envoy.yaml exactly as
committed (with its inline copy of plugin-config/example.yaml), and the Higress single-server
configuration shape.
"""

from __future__ import annotations

import base64
import json

import pytest
import yaml

import demo_upstream
import harness
from harness import list_all_tools, mcp_client, run_async


def _servers(cfg: dict) -> list[dict]:
    return cfg.get("servers") or []


# --- static checks ---------------------------------------------------------------------------


def test_envoy_yaml_inlines_example_config():
    cfg = harness.load_envoy_yaml()
    inline = harness.wasm_filter_config(cfg)["configuration"]["value"]
    assert inline == harness.EXAMPLE_CONFIG.read_text(), (
        "the plugin configuration inlined in envoy/envoy.yaml must be a verbatim copy of plugin-config/example.yaml"
    )


def test_envoy_yaml_layout():
    cfg = harness.load_envoy_yaml()
    assert cfg["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9901}
    listeners = {lst["name"]: lst for lst in cfg["static_resources"]["listeners"]}
    assert listeners["mcp"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 10000}
    assert listeners["baseline"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 10001}
    mcp_filters = [f["name"] for f in harness._hcm(listeners["mcp"])["http_filters"]]
    assert mcp_filters == ["envoy.filters.http.wasm", "envoy.filters.http.router"]
    base_filters = [f["name"] for f in harness._hcm(listeners["baseline"])["http_filters"]]
    assert base_filters == ["envoy.filters.http.router"]
    wasm = harness.wasm_filter_config(cfg)
    assert wasm["vm_config"]["runtime"] == "envoy.wasm.runtime.v8"
    assert wasm["vm_config"]["code"]["local"]["filename"] == "target/wasm32-wasip1/release/mcp_gateway.wasm"
    assert wasm["configuration"]["@type"] == "type.googleapis.com/google.protobuf.StringValue"
    clusters = {c["name"]: c for c in cfg["static_resources"]["clusters"]}
    assert set(clusters) >= {"demo", "blackhole"}
    for c in clusters.values():
        for group in c["load_assignment"]["endpoints"]:
            for ep in group["lb_endpoints"]:
                assert ep["endpoint"]["address"]["socket_address"]["address"] == "127.0.0.1"


@pytest.mark.parametrize(
    "path", [harness.EXAMPLE_CONFIG, harness.E2E_CONFIG, harness.CONFORMANCE_CONFIG], ids=lambda p: p.name
)
def test_plugin_configs_are_well_formed(path):
    cfg = harness.load_plugin_config(path)
    assert _servers(cfg)
    names = [s["name"] for s in _servers(cfg)]
    assert len(names) == len(set(names))
    for server in _servers(cfg):
        tools = server.get("tools") or []
        tool_names = [t["name"] for t in tools]
        assert len(tool_names) == len(set(tool_names)), server["name"]
        for tool in tools:
            assert tool.get("description"), f"{server['name']}/{tool['name']} has no description"
            for arg in tool.get("args") or []:
                assert arg.get("name") and arg.get("type"), f"{tool['name']}: {arg}"


def test_docker_compose_is_consistent():
    compose = yaml.safe_load((harness.E2E_DIR / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"envoy", "demo", "redis"}
    for svc in services.values():
        assert svc.get("network_mode") == "host"
    mounts = services["envoy"]["volumes"]
    assert any(m.startswith("../envoy/envoy.yaml:") for m in mounts)
    wasm_mount = next(m for m in mounts if "mcp_gateway.wasm" in m)
    target = wasm_mount.split(":")[1]
    assert target == f"{services['envoy']['working_dir']}/target/wasm32-wasip1/release/mcp_gateway.wasm"
    assert services["demo"]["command"][-1] == "8081"


# --- envoy/envoy.yaml exactly as committed -----------------------------------------------------


@pytest.fixture(scope="module")
def example_gw(gw):
    """Envoy with envoy/envoy.yaml's own inline plugin configuration (only ports and path rewritten)."""
    run_dir = gw.run_dir
    envoy = harness.Envoy(None, upstream_port=gw.upstream.port, run_dir=run_dir, name="envoy-example")
    try:
        envoy.start()
    except harness.HarnessError as exc:
        pytest.fail(f"envoy/envoy.yaml with its inline example configuration does not start: {exc}", pytrace=False)
    yield envoy
    envoy.stop()


def test_example_config_serves_demo_tools(example_gw):
    url = f"{example_gw.base_url}/mcp-servers/demo"
    example = harness.load_plugin_config(harness.EXAMPLE_CONFIG)

    async def go():
        async with mcp_client(url) as c:
            tools, _ = await list_all_tools(c)
            weather = await c.call_tool("get_weather", {"city": "Paris"})
            user = await c.call_tool("get_user", {"id": 2})
            order = await c.call_tool("create_order", {"item": "tea", "quantity": 2, "express": True})
            image = await c.call_tool("get_image", {})
            greet = await c.call_tool("greet", {"name": "Ada"})
            return tools, weather, user, order, image, greet

    tools, weather, user, order, image, greet = run_async(go)
    assert sorted(t.name for t in tools) == sorted(t["name"] for t in example["servers"][0]["tools"])
    assert weather.content[0].text == "It is 16 degrees (metric) and sunny in Paris."
    assert user.structured_content == demo_upstream.USERS["2"]
    assert json.loads(user.content[0].text) == demo_upstream.USERS["2"]
    assert not order.is_error and order.content[0].text.startswith("Order ")
    assert order.content[0].text.endswith("created: 2 x tea (express).")
    assert image.content[0].type == "image" and base64.b64decode(image.content[0].data) == demo_upstream.PNG_1X1
    assert greet.content[0].text == "Hello, Ada!"


def test_example_config_imports_the_demo_openapi_document(example_gw):
    """The second server of the example config is the same demo API, imported in-config from OpenAPI."""
    url = f"{example_gw.base_url}/mcp-servers/demo-openapi"

    async def go():
        async with mcp_client(url) as c:
            tools, _ = await list_all_tools(c)
            weather = await c.call_tool("getWeather", {"city": "Paris"})
            user = await c.call_tool("getUser", {"id": "2"})
            order = await c.call_tool("createOrder", {"item": "tea"})
            bad = await c.call_tool("getUser", {"id": 0})
            return tools, weather, user, order, bad

    tools, weather, user, order, bad = run_async(go)
    by_name = {t.name: t for t in tools}
    assert sorted(by_name) == ["createOrder", "getUser", "getWeather"]
    assert by_name["getWeather"].annotations.read_only_hint is True
    assert by_name["createOrder"].input_schema["required"] == ["item"]
    assert by_name["getUser"].output_schema["properties"]["email"]["format"] == "email"
    assert weather.content[0].text == "It is 16 degrees (metric) and sunny in Paris."
    assert user.structured_content == demo_upstream.USERS["2"]
    assert order.structured_content["status"] == "created"
    assert order.structured_content["order"] == {"item": "tea", "quantity": 1, "express": False}
    assert bad.is_error and "`id`: must be >= 1" in bad.content[0].text


# --- Higress single-server shape ---------------------------------------------------------------

HIGRESS_CONFIG = {
    # Higress's shape reads templates in Higress's Go dialect. Higress names no cluster (its requests follow the
    # MCP request's route); this plugin still needs one.
    "server": {"name": "higress-demo", "config": {"greeting": "Hi"}, "upstream": {"cluster": "demo"}},
    "tools": [
        {
            "name": "hello",
            "description": "Greets, from a template.",
            "args": [{"name": "who", "type": "string", "required": True, "description": "Who"}],
            "responseTemplate": {"body": "{{ .config.greeting }} {{ .args.who }}"},
        },
        {
            "name": "echo",
            "description": "Sends a request built by Go templates to the demo upstream's /echo.",
            "args": [
                {"name": "who", "type": "string", "required": True},
                {"name": "tags", "type": "array", "items": {"type": "string"}},
            ],
            "requestTemplate": {
                "url": "http://demo.local/echo/{{.args.who}}?n={{len .args.tags}}&first={{first .args.tags}}",
                "method": "POST",
                "headers": [
                    {"key": "X-Greeting", "value": "{{.config.greeting}}"},
                    {"key": "X-Id", "value": "{{uuidv4}}"},
                    {"key": "X-Client", "value": "{{getRealIP}}"},
                    {"key": "Content-Type", "value": "application/json"},
                ],
                "body": '{"tags": {{.args.tags | toJson}}, "shout": "{{.args.who | upper}}", "joined": "{{join "+" .args.tags}}"}',
            },
            "responseTemplate": {
                "body": (
                    "{{.method}} {{.path}} n={{index .args.n 0}} first={{index .args.first 0}}"
                    " greeting={{index .headers \"x-greeting\"}} id={{len (index .headers \"x-id\")}}"
                    " client={{index .headers \"x-client\"}}\n"
                    "{{- with fromJson .body}}\n{{.shout}} {{.joined}}{{range $i, $t := .tags}} {{$i}}:{{$t}}{{end}}{{end}}"
                )
            },
        },
        {
            "name": "semantics",
            "description": "Higress's request semantics, seen by the demo upstream's /echo.",
            "args": [
                {"name": "id", "position": "path"},
                {"name": "q", "position": "query"},
                {"name": "tags", "type": "array", "items": {"type": "string"}, "position": "query"},
                {"name": "x-trace", "position": "header"},
                {"name": "n", "type": "integer"},
                {"name": "note"},
                {"name": "flag", "type": "boolean"},
            ],
            "requestTemplate": {"url": "http://demo.local/echo/{id}?z=1&q=tpl", "method": "POST", "argsToJsonBody": True},
        },
        {
            "name": "image",
            "description": "The demo upstream's PNG, with the Content-Type asked for.",
            "args": [{"name": "type", "position": "query"}],
            "requestTemplate": {"url": "http://demo.local/image.png", "method": "GET"},
        },
        {
            "name": "status",
            "description": "Answers with the status asked for.",
            "args": [{"name": "code", "type": "integer", "position": "path"}],
            "requestTemplate": {"url": "http://demo.local/status/{code}", "method": "GET"},
        },
    ],
}


@pytest.fixture(scope="module")
def higress_gw(gw):
    try:
        g = harness.start_gateway(
            HIGRESS_CONFIG, tag="higress", upstream=gw.upstream, run_dir=gw.run_dir, wasm=harness.go_wasm_path()
        )
    except harness.HarnessError as exc:
        pytest.fail(f"the Higress-shaped configuration does not start: {exc}", pytrace=False)
    yield g
    g.stop()


def test_higress_shape(higress_gw):
    async def go():
        async with mcp_client(higress_gw.mcp_url("higress-demo")) as c:
            tools, _ = await list_all_tools(c)
            r = await c.call_tool("hello", {"who": "there"})
            return c.server_info, tools, r

    info, tools, r = run_async(go)
    assert info.name == "higress-demo"
    assert sorted(t.name for t in tools) == ["echo", "hello", "image", "semantics", "status"]
    assert r.content[0].text == "Hi there"


def test_higress_go_templates_through_envoy(higress_gw):
    """A Higress-shape tool whose url, headers, body and response template are Go templates (sprig, gjson-style
    data), sent through Envoy to the demo upstream's /echo and rendered from its answer."""

    async def go():
        async with mcp_client(higress_gw.mcp_url("higress-demo")) as c:
            return await c.call_tool("echo", {"who": "ann b", "tags": ["x", "y"]})

    r = run_async(go)
    assert not r.is_error, r.content[0].text
    # The url's values are percent-encoded (`ann b` -> `ann%20b`), config values are not.
    # getRealIP: the client's address (the test client is local), as Higress reports it.
    assert r.content[0].text == "POST /echo/ann%20b n=2 first=x greeting=Hi id=36 client=127.0.0.1\nANN B x+y 0:x 1:y"


def test_higress_semantics_through_envoy(higress_gw):
    """A Higress-shape server builds requests and reads answers as Higress does (docs/higress-semantics.md): the
    demo upstream sees the path argument in place, the query rebuilt by Go's url.Values (keys sorted, `+` for
    spaces, a query argument replacing the template's value, an array as JSON text), a JSON body as Go
    marshals it (keys sorted, `<>` escaped, an integer truncated, undeclared arguments dropped), `Accept: */*`;
    a 404 reads as Higress's `call failed`, an empty 204 as `success`, an image keeps its whole Content-Type."""

    async def go():
        async with mcp_client(higress_gw.mcp_url("higress-demo")) as c:
            sent = await c.call_tool("semantics", {"id": "a b/c", "q": "x y&z", "tags": ["t1", "t2"], "x-trace": "t-1",
                                                   "n": 2.9, "note": "<ok>", "flag": "true", "undeclared": 1})
            missing = await c.call_tool("status", {"code": 404})
            empty = await c.call_tool("status", {"code": 204})
            image = await c.call_tool("image", {"type": "image/png; x=y"})
            return sent, missing, empty, image

    sent, missing, empty, image = run_async(go)
    assert not sent.is_error, sent.content[0].text
    echo = json.loads(sent.content[0].text)
    assert (echo["method"], echo["path"]) == ("POST", "/echo/a%20b/c")
    assert echo["query"] == "q=x+y%26z&tags=%5B%22t1%22%2C%22t2%22%5D&z=1"
    assert echo["body"] == '{"flag":true,"n":2,"note":"\\u003cok\\u003e"}'
    headers = echo["headers"]
    assert (headers["content-type"], headers["accept"], headers["x-trace"]) == (
        "application/json; charset=utf-8", "*/*", "t-1")
    assert missing.is_error and missing.content[0].text == 'call failed, status: 404, response: {"status": 404}'
    assert not empty.is_error and empty.content[0].text == "success"
    # An image keeps its Content-Type whole, parameters and all (SendMCPToolImageResult).
    assert not image.is_error and image.content[0].type == "image", image
    assert image.content[0].mime_type == "image/png; x=y" and image.content[0].data.startswith("iVBOR")


BAD_CONFIGS = [
    # (tool fragment, the located message Envoy's log must carry)
    ({"requestTemplate": {"url": "ftp://files/x"}},
     "server 'billing' tool 'charge' field 'requestTemplate.url'"),
    ({"requestTemplate": {"url": "/x"}, "responseTemplate": {"body": "{{ unclosed"}},
     "server 'billing' tool 'charge' field 'responseTemplate.body'"),
    ({"requestTemplate": {"urll": "/x"}},
     "server 'billing' tool 'charge' field 'requestTemplate.urll'"),
    ({"args": [{"name": "amount", "type": "money"}], "requestTemplate": {"url": "/x"}},
     "server 'billing' tool 'charge' field 'args'"),
]


@pytest.mark.parametrize("fragment, located", BAD_CONFIGS, ids=["url", "template", "typo", "arg-type"])
def test_invalid_config_is_refused_by_envoy_with_a_located_message(fragment, located):
    tool = {"name": "charge", "description": "Charges a card", **fragment}
    cfg = {"servers": [{"name": "billing", "upstream": {"cluster": "demo"}, "tools": [tool]}]}
    run_dir = harness.new_run_dir("badcfg")
    envoy = harness.Envoy(cfg, upstream_port=harness.unused_port(), run_dir=run_dir, name="envoy-badcfg")
    with pytest.raises(harness.HarnessError, match="exited"):
        envoy.start(timeout=30)
    log = envoy.log_path.read_text(errors="replace")
    assert f"invalid plugin config: {located}" in log, log[-3000:]
