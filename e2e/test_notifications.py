"""Log and progress notifications through real Envoy, heard by the official Python SDK's callbacks.

A tool's `notifications` travel ahead of its result in one SSE answer (a proxy-wasm filter's answer is one
complete response). Both upstream dispatch modes: `dispatch_http_call` (server `called`) and
`upstream.dispatch: route` (server `routed`: the answer replaces the routed upstream response, content-type
included). Both eras: the handshake (`logging/setLevel`, kept in the session) and 2026-07-28 (the level is
the request's `_meta` `io.modelcontextprotocol/logLevel`; without it no log message)."""

from __future__ import annotations

import json
import re
import warnings

import httpx
import pytest

import harness
from harness import ACCEPT, LATEST, mcp_client, run_async

FORECAST = {
    "name": "forecast",
    "description": "The weather of a city, with progress and a debug log of the upstream call",
    "args": [{"name": "city", "required": True, "position": "query"}],
    "requestTemplate": {"url": "/weather", "method": "GET"},
    "notifications": [
        {"progress": 0, "total": 2, "message": "asking the weather service about {{ args.city }}"},
        {"log": "debug", "logger": "weather",
         "data": "GET /weather?city={{ args.city }} answered {{ status }} in {{ elapsedMs }} ms"},
        {"log": "info", "logger": "weather", "when": "success", "data": "{{ city }}: {{ conditions }}"},
        {"progress": 2, "total": 2, "message": "done"},
    ],
}
BROKEN = {
    "name": "broken",
    "description": "An upstream that fails, and a warning that says so",
    "args": [],
    "requestTemplate": {"url": "/error", "method": "GET"},
    "notifications": [
        {"log": "debug", "data": "calling /error"},
        {"log": "warning", "when": "error", "data": "the upstream answered {{ status }}: {{ error }}"},
    ],
}
PLUGIN_CONFIG = {
    "servers": [
        {"name": "called", "upstream": {"cluster": "demo", "timeoutMs": 5000}, "tools": [FORECAST, BROKEN]},
        # No cluster: the client's request becomes the tool's and goes on through the route.
        {"name": "routed", "upstream": {"timeoutMs": 5000}, "tools": [FORECAST, BROKEN]},
    ]
}
SERVERS = ["called", "routed"]


@pytest.fixture(scope="module")
def gateway():
    g = harness.start_gateway(PLUGIN_CONFIG, tag="notifications", plugin_format="json")
    yield g
    g.stop()


def hear(gateway, server: str, mode: str, calls, log_level: str | None = None, set_level: str | None = None):
    """Calls tools with the SDK; returns what arrived, in order: ("log", level, data), ("progress", n,
    message) and ("result", text) entries."""
    heard: list[tuple] = []

    async def on_log(params) -> None:
        heard.append(("log", params.level, params.data))

    async def on_progress(progress, total, message) -> None:
        heard.append(("progress", progress, total, message))

    async def main():
        options = {"logging_callback": on_log}
        if log_level:
            options["log_level"] = log_level
        async with mcp_client(gateway.mcp_url(server), mode=mode, **options) as client:
            if set_level:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # deprecated at 2026-07-28, current at 2025-11-25
                    await client.set_logging_level(set_level)
            for name, args in calls:
                result = await client.call_tool(name, args, progress_callback=on_progress)
                heard.append(("result", result.content[0].text, bool(result.is_error)))

    run_async(main)
    return heard


@pytest.mark.parametrize("server", SERVERS)
def test_the_sdk_hears_progress_and_logs_before_the_result(gateway, server):
    heard = hear(gateway, server, "legacy", [("forecast", {"city": "Paris"})])
    assert [h[0] for h in heard] == ["progress", "log", "log", "progress", "result"], heard
    assert heard[0] == ("progress", 0, 2, "asking the weather service about Paris")
    assert re.fullmatch(r"GET /weather\?city=Paris answered 200 in \d+ ms", heard[1][2]) and heard[1][1] == "debug", heard
    assert heard[2][:2] == ("log", "info") and heard[2][2].startswith("Paris: "), heard
    assert heard[3] == ("progress", 2, 2, "done")
    assert json.loads(heard[4][1])["city"] == "Paris" and heard[4][2] is False


@pytest.mark.parametrize("server", SERVERS)
def test_set_level_filters_what_the_session_hears(gateway, server):
    heard = hear(gateway, server, "legacy", [("forecast", {"city": "Oslo"}), ("broken", {})], set_level="warning")
    assert [h[0] for h in heard] == ["progress", "progress", "result", "log", "result"], heard
    assert heard[3] == ("log", "warning", "the upstream answered 500: the demo upstream failed on purpose"), heard
    assert heard[4][2] is True


@pytest.mark.parametrize("server", SERVERS)
def test_stateless_requests_hear_logs_only_when_their_meta_asks(gateway, server):
    quiet = hear(gateway, server, "2026-07-28", [("broken", {})])
    assert [h[0] for h in quiet] == ["result"], quiet
    loud = hear(gateway, server, "2026-07-28", [("broken", {}), ("forecast", {"city": "Rome"})], log_level="debug")
    kinds = [h[0] for h in loud]
    assert kinds == ["log", "log", "result", "progress", "log", "log", "progress", "result"], loud
    assert loud[1] == ("log", "warning", "the upstream answered 500: the demo upstream failed on purpose")


@pytest.mark.parametrize("server", SERVERS)
def test_the_wire_is_one_sse_answer_only_when_there_is_something_to_send(gateway, server):
    url = gateway.mcp_url(server)
    headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    r = httpx.post(url, json=init, headers=headers, timeout=10)
    assert r.json()["result"]["capabilities"]["logging"] == {}, r.text
    headers |= {"Mcp-Session-Id": r.headers["mcp-session-id"], "MCP-Protocol-Version": LATEST}
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "forecast", "arguments": {"city": "Lima"}, "_meta": {"progressToken": "tok"}}}
    r = httpx.post(url, json=call, headers=headers, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "text/event-stream", (r.headers, r.text)
    events = [json.loads(line[len("data: "):]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert [e.get("method") for e in events] == [
        "notifications/progress", "notifications/message", "notifications/message", "notifications/progress", None
    ], events
    assert events[0]["params"]["progressToken"] == "tok" and events[-1]["id"] == 7
    # Nothing to hear (level above every message, no token): the JSON answer of old.
    level = {"jsonrpc": "2.0", "id": 8, "method": "logging/setLevel", "params": {"level": "emergency"}}
    assert httpx.post(url, json=level, headers=headers, timeout=10).json()["result"] == {}
    del call["params"]["_meta"]
    r = httpx.post(url, json=call, headers=headers, timeout=10)
    assert r.headers["content-type"] == "application/json", (r.headers, r.text)
    assert r.json()["id"] == 7
    bad = {"jsonrpc": "2.0", "id": 9, "method": "logging/setLevel", "params": {"level": "verbose"}}
    assert httpx.post(url, json=bad, headers=headers, timeout=10).json()["error"]["code"] == -32602
