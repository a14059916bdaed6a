"""Proxied MCP servers (`type: mcp-proxy`, `transport: http`) in real Envoy, in front of a real MCP server
(e2e/mcp_backend.py: the Python SDK's `MCPServer`, Streamable HTTP), driven by the Python SDK's client and
by raw HTTP. The client's request goes on through Envoy's router (envoy/envoy.yaml's catch-all route to the
cluster `demo`, which here points at the backend), so answers stream back chunk by chunk.

  gateway          local store: `proxied` (/mcp), `absolute` (http://localhost:PORT/mcp), `limited`
                   (allowTools: echo, steps), `renamed` (toolOverrides), `secured` (defaultUpstreamSecurity), `passthrough`
                   (passthroughAuthHeader), `guarded` (guardrails: a deny pattern, e-mail masking, a
                   result size limit on `steps`), `metered` (rateLimits: 3 calls an hour)
  replica a and b  signed store, one key: a session opened on one continues on the other
  stateless        in front of a stateless backend
  down             in front of a backend that has stopped
  sse              transport: sse, in front of the SDK's legacy SSE server, used by the SDK's SSE client
  sse-http         transport: sse, the same backend, used by the SDK's Streamable HTTP client and the Inspector CLI
  sse-http-guardrails  the same, with guardrails (a tool's own entry, a renamed tool)
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

import harness
from harness import ACCEPT, LATEST

KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


class McpBackend(harness.DemoUpstream):
    SCRIPT = "mcp_backend.py"
    NAME = "MCP backend (Python SDK)"

    def __init__(self, mode: str, **kw):
        super().__init__(**kw)
        self.mode = mode

    def arguments(self) -> list[str]:
        return [str(self.port), self.mode]


def proxied(name: str, url: str = "/mcp", **extra) -> dict:
    return {"name": name, "type": "mcp-proxy", "transport": "http", "mcpServerURL": url, "timeout": 10000, **extra}


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    b = McpBackend("stateful", log_dir=tmp_path_factory.mktemp("mcp-backend")).start()
    yield b
    b.stop()


@pytest.fixture(scope="module")
def gateway(backend):
    cfg = {
        "servers": [
            proxied("proxied"),
            proxied("absolute", f"http://localhost:{backend.port}/mcp"),
            proxied("limited", allowTools=["echo", "steps"]),
            proxied("secured", securitySchemes=[{"id": "tok", "type": "http", "scheme": "bearer", "defaultCredential": "operator-token"}],
                    defaultUpstreamSecurity={"id": "tok"}),
            proxied("passthrough", passthroughAuthHeader=True),
            proxied("metered", rateLimits=[{"requests": 3, "window": "1h"}]),
            proxied("guarded", guardrails={"denyPatterns": ["(?i)drop\\s+table"], "mask": ["email"],
                                          "tools": {"steps": {"maxResultBytes": 40}}}),
            proxied("renamed", allowTools=["say", "count", "whoami"], toolOverrides={
                "echo": {"name": "say", "description": "Says the text back.", "title": "Say"},
                "steps": {"name": "count"},
                "whoami": {"description": "Who the backend thinks you are."},
            }),
        ]
    }
    g = harness.start_gateway(cfg, tag="mcp-proxy", upstream=backend, plugin_format="json")
    yield g
    g.stop()


def initialize(url: str, headers: dict | None = None) -> str | None:
    body = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": LATEST, "capabilities": {"elicitation": {}}, "clientInfo": {"name": "t", "version": "0"}}}
    r = httpx.post(url, json=body, headers={"Accept": ACCEPT, **(headers or {})}, timeout=10)
    assert r.status_code == 200, r.text
    assert "backend" in r.text, r.text  # the backend's serverInfo came through
    sid = r.headers.get("mcp-session-id")
    if sid:
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        h = {"Accept": ACCEPT, "Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}
        assert httpx.post(url, json=note, headers=h, timeout=10).status_code == 202
    return sid


def post(url: str, sid: str | None, body: dict, extra: dict | None = None) -> httpx.Response:
    h = {"Accept": ACCEPT, "MCP-Protocol-Version": LATEST, **(extra or {})}
    if sid:
        h["Mcp-Session-Id"] = sid
    return httpx.post(url, json=body, headers=h, timeout=15)


def messages(r: httpx.Response) -> list[dict]:
    """The JSON-RPC messages of a JSON or SSE answer."""
    if r.headers["content-type"].startswith("application/json"):
        return [r.json()]
    return [json.loads(line[5:]) for line in r.text.splitlines() if line.startswith("data:") and line[5:].strip()]


def call(url: str, sid: str | None, name: str, args: dict | None = None, extra: dict | None = None) -> dict:
    r = post(url, sid, {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": name, "arguments": args or {}}}, extra)
    assert r.status_code == 200, r.text
    return messages(r)[-1]


@pytest.mark.parametrize("server", ["proxied", "absolute"])
def test_the_sdk_client_uses_the_backend_through_the_gateway(gateway, server):
    async def main():
        async with harness.mcp_client(gateway.mcp_url(server), headers={"Authorization": "Bearer client-secret"}) as c:
            names = [t.name for t in (await c.list_tools()).tools]
            assert names == ["echo", "secret", "whoami", "steps", "ask"]
            assert (await c.call_tool("echo", {"text": "hi"})).content[0].text == "echo: hi"
            # The client's credentials stay at the gateway.
            assert (await c.call_tool("whoami", {})).content[0].text == "authorization='' cookie=''"

    harness.run_async(main)


@pytest.mark.parametrize("server,seen", [
    ("secured", "authorization='Bearer operator-token' cookie=''"),
    ("passthrough", "authorization='Bearer client-secret' cookie=''"),
])
def test_the_backend_gets_only_the_configured_credential(gateway, server, seen):
    url = gateway.mcp_url(server)
    auth = {"Authorization": "Bearer client-secret", "Cookie": "c=1"}
    sid = initialize(url, auth)
    assert call(url, sid, "whoami", extra=auth)["result"]["content"][0]["text"] == seen


def test_logs_progress_and_elicitation_reach_the_client(gateway):
    heard = []

    async def on_log(p):
        heard.append(("log", p.data))

    async def on_progress(progress, total, message):
        heard.append(("progress", progress, total, message))

    async def on_elicit(ctx, params):
        import mcp_types as types

        heard.append(("elicit", params.message))
        return types.ElicitResult(action="accept", content={"name": "Ada"})

    async def main():
        async with harness.mcp_client(gateway.mcp_url("proxied"), logging_callback=on_log, elicitation_callback=on_elicit) as c:
            r = await c.call_tool("steps", {"n": 2, "pause_ms": 50}, progress_callback=on_progress)
            heard.append(("result", r.content[0].text))
            r = await c.call_tool("ask", {})
            heard.append(("result", r.content[0].text))

    harness.run_async(main)
    assert heard == [
        ("log", "step 1 of 2"), ("progress", 1, 2, "step 1"), ("log", "step 2 of 2"), ("progress", 2, 2, "step 2"),
        ("result", "2 steps done"), ("elicit", "What is your name?"), ("result", "hello Ada"),
    ], heard


def test_sse_answers_stream_as_they_arrive(gateway):
    url = gateway.mcp_url("proxied")
    sid = initialize(url)
    body = {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "steps", "arguments": {"n": 3, "pause_ms": 700}}}
    h = {"Accept": ACCEPT, "MCP-Protocol-Version": LATEST, "Mcp-Session-Id": sid}
    arrivals = []
    start = time.monotonic()
    with httpx.stream("POST", url, json=body, headers=h, timeout=15) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data:"):
                arrivals.append((time.monotonic() - start, json.loads(line[5:])))
    assert arrivals[-1][1]["result"]["content"][0]["text"] == "3 steps done"
    # The first log came long before the answer ended: nothing was buffered whole.
    assert arrivals[0][1]["method"] == "notifications/message"
    assert arrivals[-1][0] - arrivals[0][0] > 1.2, arrivals


def test_guardrails_check_proxied_calls_and_mask_their_results(gateway):
    url = gateway.mcp_url("guarded")

    async def main():
        async with harness.mcp_client(url) as c:
            # Masked in the backend's JSON answer.
            r = await c.call_tool("echo", {"text": "write to ann@example.com"})
            assert "ann@example.com" not in r.content[0].text and r.content[0].text.startswith("echo: write to "), r
            # Refused before the backend sees it; the SDK raises the JSON-RPC error.
            with pytest.raises(Exception) as refused:
                await c.call_tool("echo", {"text": "x; DROP  TABLE users"})
            assert "guardrail" in str(refused.value) and "users" not in str(refused.value), refused.value

    harness.run_async(main)
    sid = initialize(url)
    # An SSE answer: the logs pass as sent, the result over maxResultBytes becomes the guardrail's error.
    r = post(url, sid, {"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                        "params": {"name": "steps", "arguments": {"n": 2, "pause_ms": 50}}})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
    msgs = messages(r)
    assert [m.get("method") for m in msgs[:-1]] == ["notifications/message"] * 2, msgs
    assert msgs[-1]["id"] == 4 and msgs[-1]["error"]["data"]["cause"] == "guardrail", msgs[-1]
    assert "maxResultBytes" in msgs[-1]["error"]["message"], msgs[-1]
    # A small result of the same tool on a server without the limit passes unchanged.
    assert call(gateway.mcp_url("proxied"), initialize(gateway.mcp_url("proxied")), "steps",
                {"n": 1, "pause_ms": 10})["result"]["content"][0]["text"] == "1 steps done"


def test_rate_limits_count_the_calls_that_reach_the_backend(gateway):
    url = gateway.mcp_url("metered")
    sid = initialize(url)
    listing = post(url, sid, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert listing.status_code == 200 and "echo" in listing.text  # lists are not counted
    for _ in range(3):
        assert call(url, sid, "echo", {"text": "hi"})["result"]["content"][0]["text"] == "echo: hi"
    # In a session: the call's JSON-RPC error in a 200, saying when to retry.
    refused = call(url, sid, "echo", {"text": "hi"})
    assert refused["error"]["data"]["cause"] == "rate_limited", refused
    assert refused["error"]["data"]["retryAfterSeconds"] > 0 and "rateLimits[0]" in refused["error"]["message"]

    # The SDK client sees it as the call's own error.
    async def main():
        async with harness.mcp_client(url) as c:
            with pytest.raises(Exception) as e:
                await c.call_tool("echo", {"text": "hi"})
            assert "rate limit exceeded" in str(e.value), e.value

    harness.run_async(main)


def test_our_session_id_stands_for_the_backends(gateway):
    url = gateway.mcp_url("proxied")
    sid = initialize(url)
    assert call(url, sid, "echo", {"text": "x"})["result"]["content"][0]["text"] == "echo: x"
    # An id the gateway did not issue never reaches the backend.
    r = post(url, "0123456789abcdef0123456789abcdef", {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status_code == 404 and r.json()["error"]["code"] == -32001
    # The standalone GET stream passes through.
    with httpx.stream("GET", url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}, timeout=10) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    # DELETE ends both sessions.
    r = httpx.delete(url, headers={"Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST}, timeout=10)
    assert r.status_code in (200, 204), r.text
    r = post(url, sid, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status_code == 404 and r.json()["error"]["code"] == -32001


def test_allow_tools_filters_the_list_and_refuses_other_calls(gateway):
    url = gateway.mcp_url("limited")
    sid = initialize(url)
    r = post(url, sid, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    assert [t["name"] for t in messages(r)[-1]["result"]["tools"]] == ["echo", "steps"]
    refused = call(url, sid, "secret")
    assert refused["error"] == {"code": -32602, "message": "Tool not allowed: secret"} and refused["id"] == 5
    assert call(url, sid, "echo", {"text": "ok"})["result"]["content"][0]["text"] == "echo: ok"
    # The header narrows it further, on a server without allowTools too.
    only = {"x-envoy-allow-mcp-tools": "steps"}
    r = post(url, sid, {"jsonrpc": "2.0", "id": 3, "method": "tools/list"}, only)
    assert [t["name"] for t in messages(r)[-1]["result"]["tools"]] == ["steps"]
    assert call(url, sid, "echo", {"text": "no"}, only)["error"]["message"] == "Tool not allowed: echo"
    open_url = gateway.mcp_url("proxied")
    sid = initialize(open_url)
    assert call(open_url, sid, "secret", extra=only)["error"]["code"] == -32602


def test_renamed_tools_are_listed_and_called_by_their_new_names(gateway):
    from mcp.shared.exceptions import MCPError

    progress = []

    async def on_progress(p, total, message):
        progress.append(p)

    async def main():
        async with harness.mcp_client(gateway.mcp_url("renamed")) as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
            assert list(tools) == ["say", "whoami", "count"]  # the backend's order; secret and ask not allowed
            assert (tools["say"].description, tools["say"].title) == ("Says the text back.", "Say")
            assert tools["say"].input_schema["properties"]["text"]["type"] == "string"  # the rest as it was
            assert tools["whoami"].description == "Who the backend thinks you are."
            assert tools["count"].description.startswith("Logs and reports progress")
            assert (await c.call_tool("say", {"text": "hi"})).content[0].text == "echo: hi"
            r = await c.call_tool("count", {"n": 2, "pause_ms": 50}, progress_callback=on_progress)
            assert r.content[0].text == "2 steps done"
            for old in ("echo", "steps"):
                with pytest.raises(MCPError, match=f"Unknown tool: {old}"):
                    await c.call_tool(old, {"text": "no"})

    harness.run_async(main)
    assert progress == [1, 2]


def test_the_allow_header_speaks_new_names_and_long_renamed_calls_go_through(gateway):
    url = gateway.mcp_url("renamed")
    sid = initialize(url)
    r = post(url, sid, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, {"x-envoy-allow-mcp-tools": "say"})
    assert r.headers["content-type"].startswith("text/event-stream"), r.headers  # rewritten event by event
    assert [t["name"] for t in messages(r)[-1]["result"]["tools"]] == ["say"]
    long = "x" * 5000  # a body of many chunks, one byte longer once renamed
    assert call(url, sid, "say", {"text": long})["result"]["content"][0]["text"] == f"echo: {long}"
    assert call(url, sid, "whoami", extra={"x-envoy-allow-mcp-tools": "say"})["error"]["message"] == "Tool not allowed: whoami"


def test_a_signed_session_continues_on_another_replica(backend):
    cfg = {"sessions": {"store": "signed", "signingKeys": [KEY]}, "servers": [proxied("proxied")]}
    a = harness.start_gateway(cfg, tag="mcp-proxy-a", upstream=backend, plugin_format="json")
    try:
        b = harness.start_gateway(cfg, tag="mcp-proxy-b", upstream=backend, plugin_format="json")
        try:
            sid = initialize(a.mcp_url("proxied"))
            assert len(sid) > 60, sid  # ours, carrying the backend's inside, signed
            for g in (b, a, b):
                assert call(g.mcp_url("proxied"), sid, "echo", {"text": "r"})["result"]["content"][0]["text"] == "echo: r"
            forged = sid[:-2] + ("AA" if not sid.endswith("AA") else "BB")
            r = post(b.mcp_url("proxied"), forged, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
            assert r.status_code == 404
        finally:
            b.stop()
    finally:
        a.stop()


def test_a_stateless_backend_works_without_sessions(tmp_path):
    backend = McpBackend("stateless", log_dir=tmp_path).start()
    try:
        with harness.gateway({"servers": [proxied("proxied")]}, tag="mcp-proxy-stateless", upstream=backend, plugin_format="json") as g:
            url = g.mcp_url("proxied")
            assert initialize(url) is None
            assert call(url, None, "echo", {"text": "s"})["result"]["content"][0]["text"] == "echo: s"

            async def main():
                async with harness.mcp_client(url) as c:
                    assert (await c.call_tool("echo", {"text": "sdk"})).content[0].text == "echo: sdk"

            harness.run_async(main)
    finally:
        backend.stop()


def test_an_unreachable_backend_is_a_json_rpc_error(tmp_path):
    backend = McpBackend("stateless", log_dir=tmp_path).start()
    with harness.gateway({"servers": [proxied("proxied")]}, tag="mcp-proxy-down", upstream=backend, plugin_format="json") as g:
        backend.stop()
        r = post(g.mcp_url("proxied"), None, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}})
        assert r.status_code == 502, r.text
        err = r.json()["error"]
        assert err["code"] == -32603 and "could not be reached (HTTP 503)" in err["message"], err


def test_an_sse_backend_serves_sse_clients(tmp_path):
    backend = McpBackend("sse", log_dir=tmp_path).start()
    cfg = {"servers": [proxied("legacy", "/sse", transport="sse"),
                       proxied("legacy-limited", "/sse", transport="sse", allowTools=["say", "steps"],
                               toolOverrides={"echo": {"name": "say", "description": "Says it back."}})]}
    try:
        with harness.gateway(cfg, tag="mcp-proxy-sse", upstream=backend, plugin_format="json") as g:
            url = g.mcp_url("legacy") + "/sse"
            heard = []

            async def on_progress(progress, total, message):
                heard.append((progress, total, message))

            async def main():
                from mcp import Client
                from mcp.client.sse import sse_client

                async with Client(sse_client(url, headers={"Authorization": "Bearer client-secret"}, timeout=10),
                                  mode="legacy", cache=None, read_timeout_seconds=15) as c:
                    assert [t.name for t in (await c.list_tools()).tools] == ["echo", "secret", "whoami", "steps", "ask"]
                    assert (await c.call_tool("echo", {"text": "old"})).content[0].text == "echo: old"
                    r = await c.call_tool("steps", {"n": 2, "pause_ms": 50}, progress_callback=on_progress)
                    assert r.content[0].text == "2 steps done"
                    assert (await c.call_tool("whoami", {})).content[0].text == "authorization='' cookie=''"

            harness.run_async(main)
            assert heard == [(1, 2, "step 1"), (2, 2, "step 2")], heard

            # allowTools and toolOverrides: the list on the stream filtered and renamed, a refused call's error
            # delivered on the stream (the POST went on as a ping carrying it), a renamed call reaching `echo`.
            async def limited():
                from mcp import Client
                from mcp.client.sse import sse_client

                async with Client(sse_client(g.mcp_url("legacy-limited") + "/sse", timeout=10),
                                  mode="legacy", cache=None, read_timeout_seconds=15) as c:
                    tools = (await c.list_tools()).tools
                    assert [(t.name, t.description) for t in tools][0] == ("say", "Says it back."), tools
                    assert [t.name for t in tools] == ["say", "steps"]
                    assert (await c.call_tool("say", {"text": "hi"})).content[0].text == "echo: hi"
                    with pytest.raises(Exception) as refused:
                        await c.call_tool("secret", {})
                    assert "Tool not allowed: secret" in str(refused.value), refused.value
                    assert (await c.call_tool("steps", {"n": 1, "pause_ms": 10})).content[0].text == "1 steps done"

            harness.run_async(limited)
            # The endpoint the client is given is ours; the backend's session never shows.
            with httpx.stream("GET", url, headers={"Accept": "text/event-stream"}, timeout=10) as r:
                lines = r.iter_lines()
                first = next(lines) + next(lines)
            assert first.startswith("event: endpointdata: /mcp-servers/legacy/message?sessionId="), first
            assert "session_id" not in first
            r = httpx.post(g.mcp_url("legacy") + "/message?sessionId=forged", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=10)
            assert r.status_code == 404 and r.json()["error"]["code"] == -32001
    finally:
        backend.stop()


def test_guardrails_on_an_sse_backend_mask_results_on_the_stream_and_refuse_denied_calls(tmp_path):
    """guardrails on a `transport: sse` server, through Envoy with the SDK's SSE client: a denied argument is
    refused on the POST and the refusal reaches the client on the stream; results on the stream are masked
    under the server's guardrails (known by their shape) or checked under a tool's own (its call's id
    carries the tool, put back to the client's on the stream); progress passes as sent."""
    backend = McpBackend("sse", log_dir=tmp_path).start()
    guardrails = {"mask": ["email"], "denyPatterns": ["(?i)drop\\s+table"],
                  "tools": {"whoami": {"maxResultBytes": 10}, "say": {"mask": []}}}
    cfg = {"servers": [proxied("guarded", "/sse", transport="sse", guardrails=guardrails,
                               toolOverrides={"echo": {"name": "say"}}),
                       proxied("masked", "/sse", transport="sse", guardrails={"mask": ["email"]})]}
    heard = []

    async def on_progress(progress, total, message):
        heard.append((progress, total, message))

    try:
        with harness.gateway(cfg, tag="mcp-proxy-sse-guardrails", upstream=backend, plugin_format="json") as g:
            async def main():
                from mcp import Client
                from mcp.client.sse import sse_client

                async with Client(sse_client(g.mcp_url("masked") + "/sse", timeout=10),
                                  mode="legacy", cache=None, read_timeout_seconds=15) as c:
                    r = await c.call_tool("echo", {"text": "write to ada@example.com"})
                    assert r.content[0].text == "echo: write to [REDACTED:email]", r
                async with Client(sse_client(g.mcp_url("guarded") + "/sse", timeout=10),
                                  mode="legacy", cache=None, read_timeout_seconds=15) as c:
                    # A tool with its own guardrails: its result is not masked (mask: []), under its own name.
                    r = await c.call_tool("say", {"text": "ada@example.com"})
                    assert r.content[0].text == "echo: ada@example.com", r
                    with pytest.raises(Exception) as denied:
                        await c.call_tool("say", {"text": "DROP  TABLE users"})
                    assert "guardrail" in str(denied.value) and "denyPatterns[0]" in str(denied.value), denied.value
                    with pytest.raises(Exception) as large:
                        await c.call_tool("whoami", {})
                    assert "the result of tool 'whoami'" in str(large.value), large.value
                    assert "maxResultBytes" in str(large.value), large.value
                    r = await c.call_tool("steps", {"n": 2, "pause_ms": 20}, progress_callback=on_progress)
                    assert r.content[0].text == "2 steps done", r
                    # The session goes on after the refusals.
                    assert (await c.call_tool("say", {"text": "again"})).content[0].text == "echo: again"

            harness.run_async(main)
            assert heard == [(1, 2, "step 1"), (2, 2, "step 2")], heard
    finally:
        backend.stop()


def test_a_cancellation_reaches_a_call_made_under_an_id_of_ours_on_an_sse_backend(tmp_path):
    """A call of a tool with its own guardrails goes to an SSE backend under an id of ours; the client's
    `notifications/cancelled` names its own id, and the POST that carries it cannot know the tool, so the
    gateway also sends the backend a cancellation under that tool's id: the call stops (no more progress,
    no result), where without it the backend would go on to the end."""
    import queue
    import threading
    from urllib.parse import urljoin

    backend = McpBackend("sse", log_dir=tmp_path).start()
    guardrails = {"mask": ["email"], "tools": {"steps": {"maxResultBytes": 100000}}}
    cfg = {"servers": [proxied("guarded", "/sse", transport="sse", guardrails=guardrails)]}
    try:
        with harness.gateway(cfg, tag="mcp-proxy-sse-cancel", upstream=backend, plugin_format="json") as g:
            url = g.mcp_url("guarded") + "/sse"
            messages: list[dict] = []
            endpoint: queue.Queue[str] = queue.Queue()

            def read() -> None:
                try:
                    with httpx.stream("GET", url, headers={"Accept": "text/event-stream"}, timeout=30) as r:
                        event = None
                        for line in r.iter_lines():
                            if line.startswith("event:"):
                                event = line[6:].strip()
                            elif line.startswith("data:") and event == "endpoint":
                                endpoint.put(line[5:].strip())
                            elif line.startswith("data:"):
                                messages.append(json.loads(line[5:]))
                except httpx.HTTPError:
                    pass  # the gateway stops at the test's end, the stream with it

            threading.Thread(target=read, daemon=True).start()
            post_url = urljoin(url, endpoint.get(timeout=10))

            def send(body: dict) -> None:
                r = httpx.post(post_url, json={"jsonrpc": "2.0", **body}, timeout=10)
                assert r.status_code in (200, 202), (r.status_code, r.text)

            def wait_for(what, timeout: float = 10.0) -> None:
                deadline = time.monotonic() + timeout
                while not any(what(m) for m in list(messages)):
                    assert time.monotonic() < deadline, messages
                    time.sleep(0.02)

            send({"id": 1, "method": "initialize", "params": {"protocolVersion": "2024-11-05", "capabilities": {},
                                                              "clientInfo": {"name": "t", "version": "0"}}})
            wait_for(lambda m: m.get("id") == 1)
            send({"method": "notifications/initialized"})
            progress = lambda: [m for m in list(messages) if m.get("method") == "notifications/progress"]  # noqa: E731
            send({"id": 5, "method": "tools/call", "params": {"name": "steps", "arguments": {"n": 30, "pause_ms": 100},
                                                              "_meta": {"progressToken": "p"}}})
            wait_for(lambda m: m.get("method") == "notifications/progress")
            send({"method": "notifications/cancelled", "params": {"requestId": 5, "reason": "enough"}})
            at_cancel = len(progress())
            time.sleep(1.5)
            assert len(progress()) <= at_cancel + 2, (at_cancel, len(progress()))
            assert not [m for m in messages if m.get("id") == 5 and "result" in m], messages
            # The session goes on: a new call of the same tool, its result under the client's id.
            send({"id": 6, "method": "tools/call", "params": {"name": "steps", "arguments": {"n": 1, "pause_ms": 1}}})
            wait_for(lambda m: m.get("id") == 6)
            assert [m for m in messages if m.get("id") == 6][0]["result"]["content"][0]["text"] == "1 steps done"
    finally:
        backend.stop()


def test_a_restarted_backend_is_reinitialised_transparently(tmp_path):
    """The backend restarts mid-session (the SDK server forgets every session): the next request carrying
    ours gets the backend's 404 no more. The gateway initializes the backend again with the client's own
    `initialize` params (kept with the session), sends notifications/initialized, binds our session to the
    new backend session, and sends the request again once; the client sees its answer (filtered by
    allowTools as usual), and its next requests go to the new backend session directly."""
    backend = McpBackend("stateful", log_dir=tmp_path).start()
    try:
        cfg = {"servers": [proxied("proxied", allowTools=["echo", "whoami"])]}
        with harness.gateway(cfg, tag="mcp-proxy-reinit", upstream=backend, plugin_format="json") as g:
            url = g.mcp_url("proxied")
            sid = initialize(url)
            assert call(url, sid, "echo", {"text": "before"})["result"]["content"][0]["text"] == "echo: before"
            backend.stop()
            backend.start()
            # The restarted backend does not know the session: the gateway re-initialises it.
            assert call(url, sid, "echo", {"text": "after"})["result"]["content"][0]["text"] == "echo: after"
            r = post(url, sid, {"jsonrpc": "2.0", "id": 6, "method": "tools/list"})
            assert r.status_code == 200, r.text
            assert [t["name"] for t in messages(r)[-1]["result"]["tools"]] == ["echo", "whoami"]
            assert r.headers.get("mcp-session-id", sid) == sid  # ours still; the backend's new id stays here
            # Since the restart (the log starts anew): the one 404 that led to the re-initialisation, then
            # initialize, notifications/initialized, the call again, and the list, on the new session.
            posts = [line for line in backend.log_path.read_text().splitlines() if '"POST /mcp' in line]
            assert [p.split('" ')[-1].split()[0] for p in posts] == ["404", "200", "202", "200", "200"], posts

            # Via the SDK client, with a fresh session, the same after another restart.
            async def main():
                async with harness.mcp_client(url) as c:
                    assert (await c.call_tool("echo", {"text": "1"})).content[0].text == "echo: 1"
                    backend.stop()
                    backend.start()
                    assert (await c.call_tool("echo", {"text": "2"})).content[0].text == "echo: 2"

            harness.run_async(main)
    finally:
        backend.stop()


def test_bridged_calls_in_flight_together_in_one_session_get_their_own_answers(tmp_path):
    """Calls of one client session to an SSE backend at once, the slow one first: each bridged request has a
    backend stream and session of its own (the gateway's `initialize` id is fixed, but never shared by two
    requests on one backend session), so each answer goes to its own call, even under one client id."""
    from concurrent.futures import ThreadPoolExecutor

    backend = McpBackend("sse", log_dir=tmp_path).start()
    try:
        cfg = {"servers": [proxied("legacy", "/sse", transport="sse")]}
        with harness.gateway(cfg, tag="mcp-proxy-sse-together", upstream=backend, plugin_format="json") as g:
            url = g.mcp_url("legacy")
            sid = initialize(url)
            calls = [(1, 600, "slow"), (2, 1, "fast"), (3, 200, "middle"), (1, 100, "same id")]

            def one(c):
                rid, pause, by = c
                args = {"n": 2, "pause_ms": pause, "by": by}
                body = {"jsonrpc": "2.0", "id": rid, "method": "tools/call", "params": {"name": "steps", "arguments": args}}
                r = post(url, sid, body)
                assert r.status_code == 200, r.text
                return messages(r)[-1]

            for _ in range(2):
                with ThreadPoolExecutor(len(calls)) as pool:
                    answers = list(pool.map(one, calls))
                assert [a["id"] for a in answers] == [1, 2, 3, 1], answers
                texts = [a["result"]["content"][0]["text"] if "result" in a else a for a in answers]
                assert texts == [f"2 steps done by {by}" for _, _, by in calls], texts
    finally:
        backend.stop()


def test_streamable_http_clients_use_an_sse_backend(tmp_path):
    """The SDK's Streamable HTTP client in front of the SDK's legacy SSE server: each request becomes a
    backend SSE stream of its own (GET /sse, then the gateway POSTs initialize, notifications/initialized
    and the request to the endpoint it names), answered by a local reply that carries the logs and progress
    that came before the answer."""
    backend = McpBackend("sse", log_dir=tmp_path).start()
    cfg = {"servers": [proxied("legacy", "/sse", transport="sse"),
                       proxied("legacy-limited", "/sse", transport="sse", allowTools=["say", "steps"],
                               toolOverrides={"echo": {"name": "say"}}),
                       proxied("legacy-slow", "/sse", transport="sse", timeout=2000),
                       proxied("legacy-silent", "/silent-sse", transport="sse", timeout=2000)]}
    try:
        with harness.gateway(cfg, tag="mcp-proxy-sse-http", upstream=backend, plugin_format="json") as g:
            heard = []

            async def on_log(p):
                heard.append(("log", p.data))

            async def on_progress(progress, total, message):
                heard.append(("progress", progress, total, message))

            async def main():
                async with harness.mcp_client(g.mcp_url("legacy"), logging_callback=on_log) as c:
                    assert [t.name for t in (await c.list_tools()).tools] == ["echo", "secret", "whoami", "steps", "ask"]
                    assert (await c.call_tool("echo", {"text": "bridged"})).content[0].text == "echo: bridged"
                    r = await c.call_tool("steps", {"n": 2, "pause_ms": 50}, progress_callback=on_progress)
                    heard.append(("result", r.content[0].text))
                    # Credentials stay at the gateway; a server-to-client request is an error, not a hang.
                    assert (await c.call_tool("whoami", {})).content[0].text == "authorization='' cookie=''"
                    started = time.monotonic()
                    with pytest.raises(Exception) as asked:
                        await c.call_tool("ask", {})
                    assert "elicitation/create" in str(asked.value) and time.monotonic() - started < 5, asked.value

            harness.run_async(main)
            assert heard == [("log", "step 1 of 2"), ("progress", 1, 2, "step 1"), ("log", "step 2 of 2"),
                             ("progress", 2, 2, "step 2"), ("result", "2 steps done")], heard

            async def limited():
                async with harness.mcp_client(g.mcp_url("legacy-limited")) as c:
                    assert [t.name for t in (await c.list_tools()).tools] == ["say", "steps"]
                    assert (await c.call_tool("say", {"text": "hi"})).content[0].text == "echo: hi"
                    with pytest.raises(Exception) as refused:
                        await c.call_tool("secret", {})
                    assert "Tool not allowed: secret" in str(refused.value), refused.value

            harness.run_async(limited)

            # Raw HTTP: the session is ours; notifications are accepted without a backend stream; the
            # answer is SSE (progress first) for a client that takes it, GET is 405, DELETE ends ours.
            url = g.mcp_url("legacy")
            sid = initialize(url)
            assert sid and len(sid) > 16, sid
            r = post(url, sid, {"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                                "params": {"name": "steps", "arguments": {"n": 1, "pause_ms": 10}, "_meta": {"progressToken": "p"}}})
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
            assert [m.get("method") for m in messages(r)] == ["notifications/message", "notifications/progress", None], r.text
            assert messages(r)[-1]["id"] == 9 and "mcp-session-id" not in r.headers
            assert httpx.get(url, headers={"Accept": "text/event-stream", "Mcp-Session-Id": sid}, timeout=10).status_code == 405
            assert httpx.delete(url, headers={"Mcp-Session-Id": sid}, timeout=10).status_code == 204
            assert post(url, sid, {"jsonrpc": "2.0", "id": 10, "method": "tools/list"}).status_code == 404

            # A backend that does not answer within the server's timeout (2 s here): an error within it.
            slow = g.mcp_url("legacy-slow")
            sid = initialize(slow)
            started = time.monotonic()
            r = post(slow, sid, {"jsonrpc": "2.0", "id": 11, "method": "tools/call",
                                 "params": {"name": "steps", "arguments": {"n": 1, "pause_ms": 8000}}})
            took = time.monotonic() - started
            assert r.status_code == 504 and r.json()["id"] == 11, r.text
            assert "did not answer within its timeout" in r.json()["error"]["message"], r.text
            assert 2 <= took < 4.5, took
            # The session goes on: the next call works.
            assert call(slow, sid, "echo", {"text": "again"})["result"]["content"][0]["text"] == "echo: again"
            # A backend stream that never names its endpoint (keep-alive comments only): the same error in time.
            started = time.monotonic()
            r = post(g.mcp_url("legacy-silent"), None, {"jsonrpc": "2.0", "id": 13, "method": "tools/list"})
            took = time.monotonic() - started
            assert r.status_code == 504 and r.json()["id"] == 13, r.text
            assert 2 <= took < 4.5, took

            # The Inspector CLI lists and calls the tools through it too.
            from node_tools import run_inspector

            listed = run_inspector(url, "--method", "tools/list")
            assert listed.returncode == 0, listed.stderr
            assert [t["name"] for t in json.loads(listed.stdout)["tools"]][:2] == ["echo", "secret"], listed.stdout
            called = run_inspector(url, "--method", "tools/call", "--tool-name", "echo", "--tool-arg", "text=cli")
            assert called.returncode == 0, called.stderr
            assert json.loads(called.stdout)["content"][0]["text"] == "echo: cli", called.stdout

            # The backend down: the usual backend_failure mapping.
            backend.stop()
            r = post(url, None, {"jsonrpc": "2.0", "id": 12, "method": "tools/list"})
            assert r.status_code == 502, r.text
            assert "could not be reached (HTTP 503)" in r.json()["error"]["message"] and r.json()["id"] == 12, r.text
    finally:
        backend.stop()


def test_guardrails_on_a_bridged_sse_backend(tmp_path):
    """guardrails on a `transport: sse` server used by the SDK's Streamable HTTP client (the bridge): a denied
    argument is refused before any backend stream opens; results are masked in the gateway's reply, JSON
    (no notifications came) and SSE-framed (after the logs and progress, which pass as sent); a tool with
    its own entry is checked under it (mask: [] keeps the address, a renamed tool by its new name) and
    reaches the backend under the client's own id."""
    backend = McpBackend("sse", log_dir=tmp_path).start()
    guardrails = {"mask": ["email"], "denyPatterns": ["(?i)drop\\s+table"],
                  "tools": {"whoami": {"maxResultBytes": 10}, "say": {"mask": []}}}
    cfg = {"servers": [proxied("guarded", "/sse", transport="sse", guardrails=guardrails,
                               toolOverrides={"echo": {"name": "say"}}),
                       proxied("masked", "/sse", transport="sse", guardrails={"mask": ["email"]})]}
    heard = []

    async def on_progress(progress, total, message):
        heard.append(("progress", progress, total, message))

    async def on_log(p):
        heard.append(("log", p.data))

    try:
        with harness.gateway(cfg, tag="mcp-proxy-sse-http-guardrails", upstream=backend, plugin_format="json") as g:
            url = g.mcp_url("guarded")

            async def main():
                async with harness.mcp_client(url, logging_callback=on_log) as c:
                    r = await c.call_tool("say", {"text": "ada@example.com"})
                    assert r.content[0].text == "echo: ada@example.com", r
                    with pytest.raises(Exception) as denied:
                        await c.call_tool("say", {"text": "DROP  TABLE users"})
                    assert "guardrail" in str(denied.value) and "denyPatterns[0]" in str(denied.value), denied.value
                    with pytest.raises(Exception) as large:
                        await c.call_tool("whoami", {})
                    assert "the result of tool 'whoami'" in str(large.value), large.value
                    assert "maxResultBytes" in str(large.value), large.value
                    r = await c.call_tool("steps", {"n": 2, "pause_ms": 20, "by": "ada@example.com"},
                                          progress_callback=on_progress)
                    heard.append(("result", r.content[0].text))

            harness.run_async(main)
            assert heard == [("log", "step 1 of 2"), ("progress", 1, 2, "step 1"), ("log", "step 2 of 2"),
                             ("progress", 2, 2, "step 2"), ("result", "2 steps done by [REDACTED:email]")], heard

            # Raw HTTP: the reply's framing, the client's id (one shaped like the gateway's own is the client's
            # here: the bridge's backend stream is this request's alone), and nothing reaches the backend
            # for a denied call.
            sid = initialize(url)
            args = {"n": 1, "pause_ms": 10, "by": "bob@example.com"}
            for id_ in (21, "mcp-gateway-call:e30:say"):
                r = post(url, sid, {"jsonrpc": "2.0", "id": id_, "method": "tools/call",
                                    "params": {"name": "steps", "arguments": args}})
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
                assert [m.get("method") for m in messages(r)] == ["notifications/message", None], r.text
                assert messages(r)[-1]["id"] == id_, r.text
                assert messages(r)[-1]["result"]["content"][0]["text"] == "1 steps done by [REDACTED:email]", r.text
            r = post(url, sid, {"jsonrpc": "2.0", "id": 23, "method": "tools/call",
                                "params": {"name": "say", "arguments": {"text": "to bob@example.com"}}})
            assert r.headers["content-type"].startswith("application/json"), r.text
            assert r.json()["id"] == 23 and r.json()["result"]["content"][0]["text"] == "echo: to bob@example.com", r.text
            masked = g.mcp_url("masked")
            r = post(masked, initialize(masked), {"jsonrpc": "2.0", "id": 25, "method": "tools/call",
                                                  "params": {"name": "echo", "arguments": {"text": "to bob@example.com"}}})
            assert r.headers["content-type"].startswith("application/json"), r.text
            assert r.json()["result"]["content"][0]["text"] == "echo: to [REDACTED:email]", r.text
            streams = backend.log_path.read_text().count("\"GET /sse ")
            r = post(url, sid, {"jsonrpc": "2.0", "id": 24, "method": "tools/call",
                                "params": {"name": "steps", "arguments": {"n": 1, "by": "x; drop table t"}}})
            assert r.status_code == 200 and r.json()["id"] == 24 and r.json()["error"]["data"]["cause"] == "guardrail", r.text
            assert backend.log_path.read_text().count("\"GET /sse ") == streams
    finally:
        backend.stop()
