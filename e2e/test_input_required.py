"""Multi-round-trip input (MCP 2026-07-28) through real Envoy, on the conformance fixture
(plugin-config/conformance.yaml): the Python SDK's own input-required driver answers the gateway's
InputRequiredResults with its elicitation, sampling and roots callbacks, and the answers reach the templates
and the upstream request. Raw requests for what a well-behaved client never sends (an altered or foreign
requestState), for retries that land on either Envoy worker, and for the 2025-11-25 path (SSE answer, the
client's answer as a POST, GET + Last-Event-ID), which the conformance suite's TypeScript client also drives
(tools-call-sampling, tools-call-elicitation, elicitation-sep1034-defaults, elicitation-sep1330-enums)."""

from __future__ import annotations

import contextlib
import json

import httpx
import pytest

import harness
from harness import ACCEPT, run_async

SERVER = "conformance"
REVISION = "2026-07-28"


@pytest.fixture(scope="module")
def gw():
    g = harness.start_gateway(harness.CONFORMANCE_CONFIG, tag="input-required")
    try:
        yield g
    finally:
        g.stop()


@contextlib.asynccontextmanager
async def _client(url: str, answers: dict, seen: list, decline: bool = False, mode: str = REVISION,
                  kinds: tuple = ("elicitation", "sampling", "roots")):
    """An `mcp.Client` (2026-07-28 unless `mode` says otherwise) whose callbacks answer from `answers` and
    note what they were asked; it declares (has callbacks for) only the `kinds` given."""
    import httpx2  # the SDK's HTTP client
    import mcp_types as types
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    async def elicit(context, params):
        seen.append(("elicitation", params.message))
        if decline:
            return types.ElicitResult(action="decline")
        props = params.requested_schema["properties"]
        return types.ElicitResult(action="accept", content={k: answers[k] for k in props})

    async def sample(context, params):
        seen.append(("sampling", params.messages[0].content.text))
        return types.CreateMessageResult(
            role="assistant", content=types.TextContent(type="text", text=answers["sampled"]), model="e2e-model"
        )

    async def roots(context):
        seen.append(("roots", None))
        return types.ListRootsResult(roots=[types.Root(uri="file:///srv/e2e", name="e2e")])

    http = create_mcp_http_client(timeout=httpx2.Timeout(15.0))
    async with http:
        transport = streamable_http_client(url, http_client=http)
        async with Client(
            transport,
            mode=mode,
            cache=None,
            read_timeout_seconds=15.0,
            **{name: fn for kind, name, fn in (("elicitation", "elicitation_callback", elicit),
                                               ("sampling", "sampling_callback", sample),
                                               ("roots", "list_roots_callback", roots)) if kind in kinds},
        ) as client:
            yield client


ANSWERS = {"name": "Ada", "color": "blue", "context": "e2e context", "sampled": "Paris, said the model"}


def test_the_python_sdk_answers_every_kind_and_the_answers_reach_the_upstream(gw):
    seen: list = []

    async def go():
        async with _client(gw.mcp_url(SERVER), ANSWERS, seen) as client:
            assert client.protocol_version == REVISION
            sampled = await client.call_tool("test_input_required_result_sampling", {})
            rounds = await client.call_tool("test_input_required_result_multi_round", {})
            several = await client.call_tool("test_input_required_result_multiple_inputs", {})
            prompt = await client.get_prompt("test_input_required_result_prompt", {})
            return sampled, rounds, several, prompt

    sampled, rounds, several, prompt = run_async(go)
    # The sampled text went into the upstream request body, and came back in the demo upstream's echo.
    assert not sampled.is_error, sampled
    assert sampled.content[0].text == 'The upstream received: {"answer": "Paris, said the model"}', sampled
    assert rounds.content[0].text == "Ada likes blue", rounds
    assert several.content[0].text == "Paris, said the model Ada (1 roots)", several
    assert prompt.messages[0].content.text == "Use this context: e2e context", prompt
    assert seen[0] == ("sampling", "What is the capital of France?")
    steps = [m for kind, m in seen if kind == "elicitation" and m.startswith("Step")]
    assert steps == ["Step 1: What is your name?", "Step 2: What is your favorite color?"], seen
    assert ("roots", None) in seen


def test_a_declined_question_stops_the_tool(gw):
    seen: list = []

    async def go():
        async with _client(gw.mcp_url(SERVER), ANSWERS, seen, decline=True) as client:
            return await client.call_tool("test_input_required_result_elicitation", {})

    result = run_async(go)
    assert result.is_error, result
    assert "declined the input request `user_name`" in result.content[0].text, result
    assert seen == [("elicitation", "What is your name?")]


def _call(url: str, name: str, extra: dict | None = None, caps: dict | None = None) -> dict:
    """One raw stateless tools/call on a fresh connection (so that retries reach either Envoy worker)."""
    params = {"name": name, "arguments": {}, **(extra or {})}
    params["_meta"] = {
        "io.modelcontextprotocol/protocolVersion": REVISION,
        "io.modelcontextprotocol/clientCapabilities": caps if caps is not None else {"elicitation": {}, "sampling": {}},
    }
    headers = {
        "Accept": ACCEPT,
        "Content-Type": "application/json",
        "MCP-Protocol-Version": REVISION,
        "Mcp-Method": "tools/call",
        "Mcp-Name": name,
        "Connection": "close",
    }
    body = {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": params}
    r = httpx.post(url, json=body, headers=headers, timeout=10)
    assert r.status_code in (200, 400), r.text
    return r.json()


def test_an_altered_or_foreign_request_state_is_refused(gw):
    url = gw.mcp_url(SERVER)
    first = _call(url, "test_input_required_result_tampered_state")["result"]
    assert first["resultType"] == "input_required" and first["requestState"], first
    answer = {"confirm": {"action": "accept", "content": {"ok": True}}}
    for name, state in [
        ("test_input_required_result_tampered_state", first["requestState"] + "-TAMPERED"),
        ("test_input_required_result_tampered_state", first["requestState"][:-2]),
        # Issued for another tool with the same question: not valid here.
        ("test_input_required_result_request_state", first["requestState"]),
    ]:
        r = _call(url, name, {"inputResponses": answer, "requestState": state})
        assert r["error"]["code"] == -32602, (name, r)
        assert "requestState is not valid" in r["error"]["message"]
    ok = _call(url, "test_input_required_result_tampered_state", {"inputResponses": answer, "requestState": first["requestState"]})
    assert ok["result"]["content"][0]["text"] == "state verified", ok


def test_only_declared_capabilities_are_asked_and_a_required_one_is_named(gw):
    url = gw.mcp_url(SERVER)
    r = _call(url, "test_input_required_result_capabilities", caps={"sampling": {}})["result"]
    assert list(r["inputRequests"]) == ["summary"], r
    r = _call(url, "test_input_required_result_capabilities", caps={"elicitation": {}})
    assert r["error"]["code"] == -32021 and r["error"]["data"]["requiredCapabilities"] == {"sampling": {}}, r


def test_every_worker_accepts_the_state_another_issued(gw):
    """Envoy runs two workers here, each its own VM: the state key lives in Envoy's shared data, so a retry
    verifies wherever it lands. Each request opens its own connection, which Envoy gives to either worker."""
    url = gw.mcp_url(SERVER)
    for i in range(16):
        first = _call(url, "test_input_required_result_request_state")["result"]
        answer = {"confirm": {"action": "accept", "content": {"ok": i % 2 == 0}}}
        done = _call(url, "test_input_required_result_request_state", {"inputResponses": answer, "requestState": first["requestState"]})
        assert done["result"]["content"][0]["text"] == f"state-ok: confirmed={'true' if i % 2 == 0 else 'false'}", (i, done)


def _sse_events(text: str) -> list[tuple[str, str]]:
    out = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        out.append((fields.get("id", "").strip(), fields.get("data", "").strip()))
    return out


def test_a_2025_11_25_session_is_asked_over_sse_and_gets_the_result_by_polling(gw):
    """Raw HTTP, step by step, each request on a connection of its own (so on either worker): the POST's SSE
    answer asks, the client's answer is a POST of its own, and GET + Last-Event-ID brings the result, whose
    upstream call carries the answer."""
    url = gw.mcp_url(SERVER)
    base = {"Accept": ACCEPT, "Content-Type": "application/json", "Connection": "close"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {"sampling": {}}, "clientInfo": {"name": "e2e", "version": "1"}}}
    r = httpx.post(url, json=init, headers=base, timeout=10)
    sid = r.headers["mcp-session-id"]
    session = {**base, "Mcp-Session-Id": sid, "MCP-Protocol-Version": "2025-11-25"}
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "test_input_required_result_sampling", "arguments": {}}}
    r = httpx.post(url, json=call, headers=session, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"), r.text
    assert "\nretry: " in r.text
    (event_id, priming), (_, asked) = _sse_events(r.text)
    assert priming == "" and event_id
    asked = json.loads(asked)
    assert asked["method"] == "sampling/createMessage" and asked["id"].startswith("mcpgw."), asked
    poll = {**session, "Accept": "text/event-stream", "Last-Event-ID": event_id}
    r = httpx.get(url, headers=poll, timeout=10)
    assert r.status_code == 200 and _sse_events(r.text) == [(event_id, "")], r.text
    answer = {"jsonrpc": "2.0", "id": asked["id"],
              "result": {"role": "assistant", "content": {"type": "text", "text": "Paris, polled"}, "model": "m"}}
    assert httpx.post(url, json=answer, headers=session, timeout=10).status_code == 202
    r = httpx.get(url, headers=poll, timeout=10)  # whichever worker it reaches reads Envoy's shared data
    events = _sse_events(r.text)
    assert events and events[0][0] == event_id, r.text
    result = json.loads(events[0][1])
    assert result["id"] == 7
    assert result["result"]["content"][0]["text"] == 'The upstream received: {"answer": "Paris, polled"}', result
    # The answer was taken: another poll does not run the call again.
    assert _sse_events(httpx.get(url, headers=poll, timeout=10).text) == [(event_id, "")]
    assert httpx.get(url, headers={**session, "Accept": "text/event-stream"}, timeout=10).status_code == 405


def test_the_python_sdk_in_a_2025_11_25_session_answers_over_sse(gw):
    """The same tools, for a client that opened with `initialize`: the SDK answers the requests on the POST's
    SSE answer and resumes with GET + Last-Event-ID, which brings the result."""
    seen: list = []

    async def go():
        async with _client(gw.mcp_url(SERVER), {**ANSWERS, "username": "ada", "email": "ada@example.com"}, seen, mode="legacy") as client:
            version = client.protocol_version
            sampled = await client.call_tool("test_input_required_result_sampling", {})
            rounds = await client.call_tool("test_input_required_result_multi_round", {})
            asked = await client.call_tool("test_elicitation", {"message": "Who are you?"})
            return version, sampled, rounds, asked

    version, sampled, rounds, asked = run_async(go)
    assert version == "2025-11-25", version
    assert sampled.content[0].text == 'The upstream received: {"answer": "Paris, said the model"}', sampled
    assert rounds.content[0].text == "Ada likes blue", rounds
    assert asked.content[0].text == 'User response: action=accept, content={"email":"ada@example.com","username":"ada"}', asked
    assert ("elicitation", "Who are you?") in seen and ("sampling", "What is the capital of France?") in seen


@pytest.fixture(scope="module")
def signed_gw():
    """The fixture server with signed sessions: the session id itself carries what initialize declared."""
    import base64
    import os

    cfg = harness.load_plugin_config(harness.CONFORMANCE_CONFIG)
    cfg["sessions"] = {"store": "signed", "ttlSeconds": 600, "signingKeys": [base64.b64encode(os.urandom(32)).decode()]}
    g = harness.start_gateway(cfg, tag="input-required-signed")
    try:
        yield g
    finally:
        g.stop()


@pytest.mark.parametrize("store", ["local", "signed"])
@pytest.mark.parametrize("mode", ["legacy", REVISION])
def test_a_client_without_elicitation_is_not_asked_and_is_told_which_capability(gw, signed_gw, store, mode):
    """The Python SDK declares elicitation only with an elicitation callback. Without one, in a 2025-11-25
    session (the capabilities its initialize declared, kept by the store) as in 2026-07-28 (its `_meta`), a
    tool that must elicit is refused naming the capability, and nothing is asked; sampling, declared, still
    is asked and answered."""
    from mcp.shared.exceptions import MCPError

    g = gw if store == "local" else signed_gw
    seen: list = []

    async def go():
        async with _client(g.mcp_url(SERVER), ANSWERS, seen, mode=mode, kinds=("sampling",)) as client:
            version = client.protocol_version
            sampled = await client.call_tool("test_input_required_result_sampling", {})
            try:
                refused = await client.call_tool("test_input_required_result_elicitation", {})
            except MCPError as e:
                refused = e.error
            return version, sampled, refused

    version, sampled, refused = run_async(go)
    assert version == ("2025-11-25" if mode == "legacy" else REVISION), version
    assert sampled.content[0].text == 'The upstream received: {"answer": "Paris, said the model"}', sampled
    expected = -32600 if mode == "legacy" else -32021
    assert getattr(refused, "code", None) == expected, refused
    assert refused.data["requiredCapabilities"] == {"elicitation": {}}, refused
    assert "elicitation" in refused.message, refused
    assert [k for k, _ in seen] == ["sampling"], seen
