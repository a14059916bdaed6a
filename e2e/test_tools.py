"""Tools, through the official Python MCP SDK (streamable HTTP client).

The /echo tools let the tests assert exactly what reached the upstream. See docs/CONTRACT.md, "MCP".
"""

from __future__ import annotations

import base64
import json
import re
import time
from urllib.parse import parse_qs, unquote

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

import demo_upstream
import harness
from harness import RawMcp, list_all_tools, mcp_client, run_async

SERVER = "demo"

# Credentials and headers of the MCP client itself: they must never reach the upstream.
CLIENT_HEADERS = {
    "Authorization": "Bearer client-secret-token",
    "Cookie": "client_session=leak-me-not",
    "X-Client-Only": "leak-me-not",
}


def weather_temp(city: str, units: str = "metric"):
    base = sum(ord(c) for c in city) % 25 + 5
    return base if units == "metric" else round(base * 9 / 5 + 32, 1)


# --- helpers ---------------------------------------------------------------------------------


def call(gw, tool: str, args: dict | None = None, server: str = SERVER, headers=None):
    async def go():
        async with mcp_client(gw.mcp_url(server), headers=headers if headers is not None else CLIENT_HEADERS) as c:
            return await c.call_tool(tool, args or {})

    return run_async(go)


def text_of(result) -> str:
    texts = [c.text for c in result.content if c.type == "text"]
    assert texts, f"no text content in {result}"
    return texts[0]


def ok_text(gw, tool: str, args: dict | None = None, **kw) -> str:
    result = call(gw, tool, args, **kw)
    assert not result.is_error, f"{tool} failed: {result}"
    return text_of(result)


def error_text(gw, tool: str, args: dict | None = None, **kw) -> str:
    result = call(gw, tool, args, **kw)
    assert result.is_error is True, f"{tool} should have failed: {result}"
    return text_of(result)


def echo(gw, tool: str, args: dict) -> dict:
    """Call an /echo tool; returns what the upstream received."""
    return json.loads(ok_text(gw, tool, args))


def assert_no_client_credentials(received: dict) -> None:
    headers = received["headers"]
    assert "authorization" not in headers, headers
    assert "x-client-only" not in headers, headers
    assert "leak-me-not" not in json.dumps(headers), headers
    assert "client-secret-token" not in json.dumps(received), received


def upstream_count(gw, path: str) -> int:
    return httpx.get(f"{gw.upstream.url}/_count", params={"path": path}, timeout=5).json()["count"]


# --- initialize and listing --------------------------------------------------------------------


def test_sdk_initialize_and_server_info(gw):
    async def go():
        async with mcp_client(gw.mcp_url(SERVER)) as c:
            return c.protocol_version, c.server_info, c.instructions, c.server_capabilities

    version, info, instructions, caps = run_async(go)
    assert version == "2025-11-25"
    assert info.name == "demo" and info.version == "1.2.3"
    assert instructions == "Tools over the demo REST API, used by the end-to-end tests."
    assert caps.tools is not None and caps.tools.list_changed is False


def test_list_tools_follows_pagination(gw, demo_tools):
    async def go():
        async with mcp_client(gw.mcp_url(SERVER)) as c:
            return await list_all_tools(c)

    tools, pages = run_async(go)
    names = [t.name for t in tools]
    assert sorted(names) == sorted(demo_tools)
    assert len(names) == len(set(names))
    assert pages == -(-len(demo_tools) // 5), "toolsPageSize is 5"
    for t in tools:
        assert t.description == demo_tools[t.name]["description"]
        assert t.input_schema.get("type") == "object", t


def test_tool_metadata(gw, demo_tools):
    async def go():
        async with mcp_client(gw.mcp_url(SERVER)) as c:
            return {t.name: t for t in (await list_all_tools(c))[0]}

    tools = run_async(go)
    weather = tools["get_weather"]
    assert weather.title == "Weather"
    assert weather.annotations is not None and weather.annotations.read_only_hint is True
    schema = weather.input_schema
    assert schema["properties"]["city"]["type"] == "string"
    assert schema["properties"]["city"].get("description") == "City name"
    assert schema["properties"]["units"]["enum"] == ["metric", "imperial"]
    assert schema["properties"]["units"].get("default") == "metric"
    assert schema.get("required") == ["city"]

    typed = tools["typed_args"].input_schema
    assert {k: v["type"] for k, v in typed["properties"].items()} == {
        "count": "integer", "ratio": "number", "enabled": "boolean", "label": "string", "level": "string"}
    assert typed["properties"]["enabled"].get("default") is True
    assert typed.get("required") == ["count"]

    # A raw inputSchema is published as configured.
    assert tools["schema_sum"].input_schema["properties"] == demo_tools["schema_sum"]["inputSchema"]["properties"]
    assert sorted(tools["schema_sum"].input_schema["required"]) == ["a", "b"]

    # outputSchema is published; tools without one have none.
    assert tools["create_order"].output_schema == demo_tools["create_order"]["outputSchema"]
    assert tools["get_weather"].output_schema is None


# --- realistic tools ---------------------------------------------------------------------------


@pytest.mark.parametrize("city,units", [("Paris", "metric"), ("Zürich", "imperial"), ("São Paulo", None)])
def test_weather_response_template(gw, city, units):
    args = {"city": city} if units is None else {"city": city, "units": units}
    units = units or "metric"
    assert ok_text(gw, "get_weather", args) == f"It is {weather_temp(city, units)} degrees ({units}) in {city}."


def test_weather_calls_upstream_once(gw):
    before = upstream_count(gw, "/weather")
    ok_text(gw, "get_weather", {"city": "Rome"})
    assert upstream_count(gw, "/weather") == before + 1


def test_missing_required_arg_is_tool_error(gw):
    text = error_text(gw, "get_weather", {})
    assert "city" in text


def test_enum_violation_is_tool_error(gw):
    text = error_text(gw, "get_weather", {"city": "Paris", "units": "kelvin"})
    assert "units" in text


def test_path_arg_and_raw_json_body(gw):
    assert json.loads(ok_text(gw, "get_user", {"id": 1})) == demo_upstream.USERS["1"]


def test_integer_coercion_from_string(gw):
    assert json.loads(ok_text(gw, "get_user", {"id": "2"})) == demo_upstream.USERS["2"]


def test_upstream_404_without_template(gw):
    text = error_text(gw, "get_user", {"id": 99})
    assert text == 'HTTP 404: {"error": "user 99 not found"}'


def test_structured_content_and_defaults(gw):
    result = call(gw, "create_order", {"item": "book", "quantity": "3"})
    assert not result.is_error, result
    sc = result.structured_content
    assert isinstance(sc, dict), result
    assert sc["status"] == "created" and isinstance(sc["id"], int)
    assert sc["order"] == {"item": "book", "quantity": 3, "express": False}, "coerced and defaulted args as JSON body"
    assert json.loads(text_of(result)) == sc, "the JSON text is returned as text content too"

    result = call(gw, "create_order", {"item": "pen"})
    assert result.structured_content["order"] == {"item": "pen", "quantity": 1, "express": False}


def test_image_content(gw):
    result = call(gw, "get_image")
    assert not result.is_error, result
    images = [c for c in result.content if c.type == "image"]
    assert len(images) == 1, result
    assert images[0].mime_type == "image/png"
    assert base64.b64decode(images[0].data) == demo_upstream.PNG_1X1


def test_prepend_and_append_body(gw):
    assert ok_text(gw, "get_text_wrapped") == "BEGIN>plain text from the demo upstream<END"


def test_non_2xx_default_error_text(gw):
    assert error_text(gw, "get_status", {"code": 418}) == 'HTTP 418: {"status": 418}'
    assert error_text(gw, "get_status", {"code": 503}) == 'HTTP 503: {"status": 503}'


def test_2xx_other_than_200_is_success(gw):
    assert json.loads(ok_text(gw, "get_status", {"code": 201})) == {"status": 201}


def test_error_response_template(gw):
    assert error_text(gw, "failing_call") == "Upstream said 500: the demo upstream failed on purpose"


def test_template_only_tool(gw):
    assert ok_text(gw, "template_only", {"name": "World"}) == "Hello, World!"
    assert "name" in error_text(gw, "template_only", {})


def test_raw_input_schema_tool(gw):
    assert ok_text(gw, "schema_sum", {"a": 2, "b": 40}) == "42"
    assert "b" in error_text(gw, "schema_sum", {"a": 2})


# --- argument coercion, defaults and validation ------------------------------------------------


def typed(gw, args: dict) -> dict:
    return json.loads(ok_text(gw, "typed_args", args))


def test_coercion_and_defaults(gw):
    assert typed(gw, {"count": "5"}) == {"count": 5, "enabled": True, "level": "low"}
    got = typed(gw, {"count": 7, "ratio": "2.5", "enabled": "false", "label": 42, "level": "high"})
    assert got == {"count": 7, "ratio": 2.5, "enabled": False, "label": "42", "level": "high"}
    assert typed(gw, {"count": "-3", "ratio": 1, "enabled": "true"})["enabled"] is True
    got = typed(gw, {"count": 1, "ratio": "1e3"})
    assert got["ratio"] == 1000


def test_coerced_values_have_json_types(gw):
    got = typed(gw, {"count": "12", "ratio": "0.25", "enabled": "true", "label": 3.5})
    assert type(got["count"]) is int and type(got["ratio"]) is float and got["enabled"] is True
    assert isinstance(got["label"], str) and float(got["label"]) == 3.5


@pytest.mark.parametrize(
    "args,names",
    [
        ({"count": "abc"}, ["count"]),
        ({"count": 1.5}, ["count"]),
        ({"count": 1, "level": "medium"}, ["level"]),
        ({"count": 1, "enabled": "maybe"}, ["enabled"]),
        ({"count": 1, "ratio": "fast"}, ["ratio"]),
        ({}, ["count"]),
        ({"level": "medium"}, ["count", "level"]),
    ],
)
def test_validation_errors_name_each_arg(gw, args, names):
    text = error_text(gw, "typed_args", args)
    for name in names:
        assert name in text, f"{name!r} not named in {text!r}"


# --- what reaches the upstream -----------------------------------------------------------------

NASTY = "a b/c?d&e=f#g%h+i ü✓"


def test_query_args_are_percent_encoded(gw):
    got = echo(gw, "echo_query", {"q": NASTY, "n": 7, "flag": True})
    assert got["method"] == "GET" and got["path"] == "/echo/query"
    assert got["args"] == {"q": [NASTY], "n": ["7"], "flag": ["true"]}, got
    raw_query = got["query"]
    assert " " not in raw_query and "#" not in raw_query and "?" not in raw_query, raw_query
    assert raw_query.count("&") == 2 and raw_query.count("=") == 3, raw_query
    assert got["headers"].get("host") == "demo.local", "upstream.authority is the Host"
    assert got["body"] == ""
    assert_no_client_credentials(got)


def test_optional_query_args_left_out(gw):
    got = echo(gw, "echo_query", {"q": "x"})
    assert got["args"] == {"q": ["x"]}, got


def test_path_arg_is_percent_encoded(gw):
    got = echo(gw, "echo_path", {"segment": NASTY})
    path = got["path"]
    assert path.startswith("/echo/path/") and path.endswith("/end"), path
    middle = path[len("/echo/path/"):-len("/end")]
    assert "/" not in middle and " " not in middle, path
    assert unquote(middle) == NASTY, path
    assert got["query"] == "", "the ? of the value must not start a query"
    assert_no_client_credentials(got)


def test_templated_url_values_are_percent_encoded(gw):
    got = echo(gw, "echo_url_template", {"part": NASTY})
    path = got["path"]
    assert path.startswith("/echo/tpl/") and "/" not in path[len("/echo/tpl/"):], path
    assert unquote(path[len("/echo/tpl/"):]) == NASTY
    assert got["args"] == {"x": [NASTY], "k": ["e2e-secret-key"]}, got


def test_header_and_cookie_args_and_template_headers(gw):
    got = echo(gw, "echo_headers", {"x-trace": "trace-123", "lang": "en", "theme": "dark"})
    h = got["headers"]
    assert h.get("x-trace") == "trace-123", h
    assert h.get("x-api-key") == "e2e-secret-key", h
    assert h.get("x-static") == "static-value", h
    cookies = dict(p.strip().split("=", 1) for p in h.get("cookie", "").split(";") if p.strip())
    assert cookies == {"lang": "en", "theme": "dark"}, h
    assert_no_client_credentials(got)


def test_no_cookie_header_without_cookie_args(gw):
    got = echo(gw, "echo_headers", {"x-trace": "t"})
    assert "cookie" not in got["headers"] or "leak" not in got["headers"]["cookie"], got
    assert_no_client_credentials(got)


def test_body_position_args(gw):
    got = echo(gw, "echo_body_args", {"title": "Title ü", "count": "4", "done": True, "mode": "fast mode"})
    assert got["method"] == "POST"
    assert got["args"] == {"mode": ["fast mode"]}, got
    assert got["headers"].get("content-type", "").startswith("application/json"), got
    assert json.loads(got["body"]) == {"title": "Title ü", "count": 4, "done": True}
    assert_no_client_credentials(got)


def test_args_to_json_body(gw):
    got = echo(gw, "echo_json_body", {"name": "n \"quoted\"", "size": "3"})
    assert got["method"] == "PUT"
    assert got["headers"].get("content-type", "").startswith("application/json"), got
    assert json.loads(got["body"]) == {"name": 'n "quoted"', "size": 3}
    assert got["query"] == ""


def test_args_to_url_params(gw):
    got = echo(gw, "echo_url_params", {"a": "x y&z=1", "b": 2})
    assert got["args"] == {"a": ["x y&z=1"], "b": ["2"]}, got
    assert got["body"] == ""


def test_args_to_form_body(gw):
    got = echo(gw, "echo_form", {"user": "u s&er=1", "note": "é+ü"})
    assert got["method"] == "POST"
    assert got["headers"].get("content-type", "").startswith("application/x-www-form-urlencoded"), got
    assert parse_qs(got["body"]) == {"user": ["u s&er=1"], "note": ["é+ü"]}, got


def test_request_body_template(gw):
    got = echo(gw, "echo_template_body", {"name": "Bob \"B\""})
    assert got["headers"].get("content-type") == "application/json"
    assert json.loads(got["body"]) == {
        "greeting": 'Hello Bob "B"',
        "key": "e2e-secret-key",
        "b64": base64.b64encode(b'Bob "B"').decode(),
    }


def test_args_are_data_not_templates(gw):
    got = echo(gw, "echo_template_body", {"name": "{{ 7*7 }}{% if true %}x{% endif %}"})
    assert json.loads(got["body"])["greeting"] == "Hello {{ 7*7 }}{% if true %}x{% endif %}"
    assert ok_text(gw, "template_only", {"name": "{{ config.apiKey }}"}) == "Hello, {{ config.apiKey }}!"


def test_header_template_renders_arg(gw):
    got = echo(gw, "echo_header_injection", {"note": "fine value"})
    assert got["headers"].get("x-note") == "fine value"


@pytest.mark.parametrize("note", ["a\r\nX-Injected: 1", "a\nX-Injected: 1", "a\rb", "\r\n\r\nGET / HTTP/1.1"])
def test_header_crlf_injection_refused(gw, note):
    before = upstream_count(gw, "/echo/inject")
    result = call(gw, "echo_header_injection", {"note": note})
    assert result.is_error is True, result
    assert upstream_count(gw, "/echo/inject") == before, "nothing may be sent upstream"


# --- timeouts and failures ---------------------------------------------------------------------


def test_slow_tool_times_out_within_its_timeout(gw):
    start = time.monotonic()
    result = call(gw, "slow_call", {})  # upstream sleeps 3 s, the tool's timeoutMs is 500
    elapsed = time.monotonic() - start
    assert result.is_error is True, result
    assert elapsed < 2.0, f"answered after {elapsed:.2f}s; timeoutMs is 500"
    assert re.search(r"time|504", text_of(result), re.IGNORECASE), text_of(result)


def test_slow_tool_within_timeout_succeeds(gw):
    assert json.loads(ok_text(gw, "slow_call", {"ms": 10})) == {"slept_ms": 10}


def test_connection_failure_is_tool_error(gw):
    start = time.monotonic()
    result = call(gw, "blackhole_call")
    elapsed = time.monotonic() - start
    assert result.is_error is True, result
    assert text_of(result).strip(), result
    assert elapsed < 2.0, f"answered after {elapsed:.2f}s"


def test_unknown_tool_is_jsonrpc_error(gw):
    with pytest.raises(MCPError) as info:
        call(gw, "no_such_tool")
    assert info.value.code == -32602


def test_concurrent_calls_in_one_session(gw):
    cities = [f"City{i}" for i in range(16)]

    async def go():
        results: dict[str, str] = {}
        async with mcp_client(gw.mcp_url(SERVER)) as c:
            async def one(city: str, slow: bool):
                if slow:
                    r = await c.call_tool("slow_call", {"ms": 100})
                    assert not r.is_error, r
                r = await c.call_tool("get_weather", {"city": city})
                results[city] = text_of(r)

            async with anyio.create_task_group() as tg:
                for i, city in enumerate(cities):
                    tg.start_soon(one, city, i % 4 == 0)
        return results

    results = run_async(go)
    for city in cities:
        assert results[city] == f"It is {weather_temp(city)} degrees (metric) in {city}."


# --- hostile arguments and answers --------------------------------------------------------------


def call_raw(gw, tool: str, arguments_json: str) -> dict:
    """tools/call with the arguments as literal JSON text (1.0, 1e2 and 2^64 as written); returns the result."""
    with RawMcp(gw.base_url) as raw:
        sid, _ = raw.initialize(SERVER)
        body = '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "%s", "arguments": %s}}' % (
            tool, arguments_json)
        r = raw.post(SERVER, content=body, session=sid)
        assert r.status_code == 200, r.text
        return r.json()["result"]


@pytest.mark.parametrize("segment", ["..", "."])
def test_dot_segments_are_refused(gw, segment):
    """`..` would reach the upstream as a path segment, and a normalising upstream (Envoy's own
    normalize_path, which also resolves %2E%2E) would go one level up: refused, nothing sent."""
    raw_path = f"/echo/path/{segment}/end"
    before = upstream_count(gw, raw_path), upstream_count(gw, "/echo/end")
    text = error_text(gw, "echo_path", {"segment": segment})
    assert f"dot segment '{segment}'" in text and "`segment`" in text, text
    text = error_text(gw, "echo_url_template", {"part": segment})
    assert f"dot segment '{segment}'" in text and "`part`" in text, text
    assert (upstream_count(gw, raw_path), upstream_count(gw, "/echo/end")) == before, "nothing may be sent upstream"


def test_dots_that_are_not_dot_segments_pass(gw):
    assert echo(gw, "echo_path", {"segment": "..."})["path"] == "/echo/path/.../end"
    assert echo(gw, "echo_path", {"segment": "%2e%2e"})["path"] == "/echo/path/%252e%252e/end"
    assert echo(gw, "echo_url_template", {"part": "a..b"})["args"]["x"] == ["a..b"]


def test_encoded_dot_segments_are_resolved_by_envoy(gw):
    """Why dot segments are refused rather than encoded: Envoy's normalize_path (the baseline listener
    of envoy/envoy.yaml proxies to the same upstream) resolves %2E%2E like `..`."""
    for raw_path in ["/echo/path/%2E%2E/end", "/echo/path/.%2e/end"]:
        with httpx.Client(base_url=gw.envoy.baseline_url, timeout=10) as c:
            got = c.get(raw_path).json()
        assert got["path"] == "/echo/end", got


def test_integers_are_sent_as_integers(gw):
    result = call_raw(gw, "echo_integers", '{"id": 1.0, "ids": [1e2, 2.0, "3.0"], "n": -5e0, "box": {"w": 7.0}}')
    assert result["isError"] is False, result
    got = json.loads(result["content"][0]["text"])
    assert got["path"] == "/echo/int/1" and got["query"] == "ids=100&ids=2&ids=3", got
    assert got["body"] == '{"n":-5,"box":{"w":7}}', got
    big = 2**64 - 1
    got = json.loads(call_raw(gw, "echo_integers", '{"id": %d, "n": %d}' % (big, -2**63))["content"][0]["text"])
    assert got["path"] == f"/echo/int/{big}" and got["body"] == '{"n":%d}' % -2**63, got
    user = call_raw(gw, "get_user", '{"id": 1.0}')
    assert json.loads(user["content"][0]["text"]) == demo_upstream.USERS["1"], user
    assert json.loads(call_raw(gw, "typed_args", '{"count": 1e2}')["content"][0]["text"])["count"] == 100


@pytest.mark.parametrize("arguments,name", [
    ('{"id": 18446744073709551616}', "id"),
    ('{"id": -9223372036854775809}', "id"),
    ('{"id": 1e19}', "id"),
    ('{"id": 1, "ids": [1, 1e300]}', "ids/1"),
    ('{"id": 1, "box": {"w": 9007199254740993.0}}', "box/w"),
])
def test_integers_out_of_range_are_refused(gw, arguments, name):
    before = upstream_count(gw, "/echo/int/1")
    result = call_raw(gw, "echo_integers", arguments)
    text = result["content"][0]["text"]
    assert result["isError"] is True and f"`{name}`: integer out of range" in text, result
    assert "18446744073709551615" in text, text
    assert upstream_count(gw, "/echo/int/1") == before


def test_oversized_answers_name_maxresponsebytes(gw):
    for chunked in (False, True):
        text = error_text(gw, "big_answer", {"bytes": 20_000_000, "chunked": chunked})
        assert "20000000 bytes" in text and "maxResponseBytes" in text and "8388608" in text, text


@pytest.mark.parametrize("args", [{"bytes": 64 * 1024 * 1024}, {"bytes": 64 * 1024 * 1024, "chunked": True}])
def test_answers_beyond_envoys_buffer_name_both_limits(gw, args):
    """Envoy's async client drops an answer over 32 MiB and resets the call: the plugin never sees its
    size, so the result names Envoy's limit (and how to raise it) beside maxResponseBytes."""
    text = error_text(gw, "big_answer", args)
    assert "http.async_response_buffer_limit" in text and "33554432" in text, text
    assert "maxResponseBytes: 8388608" in text, text
    # Envoy's reset, not the tool's timeout (a wall-clock bound here would break on a loaded machine).
    assert "no answer from the upstream" not in text and "timed out" not in text and "timeout" not in text, text


def test_raising_envoys_buffer_lets_maxresponsebytes_decide(gw, e2e_config):
    """The remedy the message names works: with Envoy's runtime key raised as the README shows, a 40 MB
    answer reaches the plugin, which refuses it by its size and maxResponseBytes."""
    base = harness.load_envoy_yaml()
    base["layered_runtime"] = {
        "layers": [{"name": "static", "static_layer": {"http.async_response_buffer_limit": 64 * 1024 * 1024}}]}
    other = harness.start_gateway(e2e_config, tag="buffer", upstream=gw.upstream, run_dir=gw.run_dir,
                                  envoy_base=base)
    try:
        text = error_text(other, "big_answer", {"bytes": 40_000_000})
    finally:
        other.stop()
    assert "has 40000000 bytes" in text and "maxResponseBytes" in text, text


def test_rendered_templates_beyond_the_limit_name_it(gw):
    assert len(ok_text(gw, "big_answer_quoted", {"bytes": 1_000_000})) == 1_000_000
    text = error_text(gw, "big_answer_quoted", {"bytes": 5_000_000})
    assert "has 5000000 bytes, over the gateway's fixed limit of 4194304 bytes per template" in text, text


def test_endless_answers_are_cut_off_and_named(gw):
    text = error_text(gw, "endless_answer", {})
    assert "http.async_response_buffer_limit" in text, text
    start = time.monotonic()
    text = error_text(gw, "endless_answer", {"delay_ms": 100})  # about 0.6 MiB/s: the 2 s timeout comes first
    assert "timeout of 2000 ms" in text and "buffer" not in text, text
    assert time.monotonic() - start < 4.0


def test_answers_too_deep_to_parse_are_errors(gw):
    assert json.loads(ok_text(gw, "deep_answer", {"depth": 100})) == json.loads("[" * 100 + "]" * 100)
    text = error_text(gw, "deep_answer", {"depth": 200})
    assert "not valid JSON" in text and "recursion limit" in text and "128 levels" in text, text


def test_tool_requests_are_not_marked_internal(gw):
    """Envoy's async client adds x-envoy-internal: true to every dispatch_http_call; the upstream
    filter on the tool clusters of envoy/envoy.yaml removes it."""
    for tool, args in [("echo_query", {"q": "x"}), ("echo_json_body", {"name": "n"})]:
        headers = echo(gw, tool, args)["headers"]
        assert "x-envoy-internal" not in headers, headers


def test_without_the_cluster_filter_tool_requests_are_internal(gw, e2e_config):
    """The switch is the cluster's upstream filter: an operator who leaves it out (wants tool calls
    marked internal) gets Envoy's behaviour."""
    base = harness.load_envoy_yaml()
    for cluster in base["static_resources"]["clusters"]:
        cluster.pop("typed_extension_protocol_options", None)
    other = harness.start_gateway(e2e_config, tag="internal", upstream=gw.upstream, run_dir=gw.run_dir,
                                  envoy_base=base)
    try:
        assert echo(other, "echo_query", {"q": "x"})["headers"].get("x-envoy-internal") == "true"
    finally:
        other.stop()


def test_undeclared_arguments_are_refused(gw):
    """With argsToJsonBody they used to reach the upstream (`admin: true` in the body); with a path or
    query position they were dropped silently. Now: refused, naming them and what the tool accepts."""
    before = upstream_count(gw, "/echo/json")
    text = error_text(gw, "echo_json_body", {"name": "n", "admin": True})
    assert text == ("Invalid arguments for tool echo_json_body:\n"
                    "- `admin`: is not an accepted argument (it accepts: name, size)"), text
    assert upstream_count(gw, "/echo/json") == before
    assert "`bogus`: is not an accepted argument" in error_text(gw, "echo_query", {"q": "x", "bogus": 1})
    # A raw inputSchema without additionalProperties gets the same rule ...
    assert "`c`: is not an accepted argument (it accepts: a, b)" in error_text(gw, "schema_sum", {"a": 1, "b": 2, "c": 3})
    # ... and one with additionalProperties: true accepts them, as the operator said.
    got = echo(gw, "echo_open_schema", {"name": "n", "extra": {"k": 1}})
    assert json.loads(got["body"]) == {"name": "n", "extra": {"k": 1}}, got


def test_listed_schemas_say_extra_arguments_are_refused(gw):
    async def go():
        async with mcp_client(gw.mcp_url(SERVER)) as c:
            return {t.name: t.input_schema for t in (await list_all_tools(c))[0]}

    schemas = run_async(go)
    assert schemas["echo_json_body"].get("additionalProperties") is False
    assert "additionalProperties" not in schemas["schema_sum"], "a raw inputSchema is published as written"
    assert schemas["echo_open_schema"]["additionalProperties"] is True


# --- the conformance fixture server ------------------------------------------------------------


def test_conformance_fixture_tools(gw):
    assert ok_text(gw, "test_simple_text", server="conformance") == "This is a simple text response for testing."
    assert error_text(gw, "test_error_handling", server="conformance") == (
        "This tool intentionally returns an error for testing"
    )
