"""The TypeScript SDK's newest client (`@modelcontextprotocol/client` 2.x, the split-package v2 line) through
real Envoy, in both eras: its default `legacy` handshake (initialize, session, 2025-11-25) and 2026-07-28
(pinned: `server/discover`, the per-request `_meta` envelope, InputRequiredResult fulfilled by the client's own
driver), and its `auto` negotiation, which must pick 2026-07-28 here. e2e/ts_client.mjs runs one era's scenario with Node 22 and prints what the client saw: every page of
tools/list, a REST tool's upstream answer, a tool error and an unknown tool, prompts/get, resources/read, tools
with `inputRequests` (elicitation and sampling, answered by the client's handlers) and log and progress
notifications."""

from __future__ import annotations

import json
import subprocess

import harness
import pytest
from harness import NODE_DIR, node_binary
from node_tools import node_env

SCRIPT = harness.E2E_DIR / "ts_client.mjs"
CLIENT_PACKAGE = NODE_DIR / "@modelcontextprotocol" / "client" / "package.json"
# The client's `versionNegotiation` mode -> the revision it must end up with against this gateway.
MODES = {"legacy": "2025-11-25", "2026-07-28": "2026-07-28", "auto": "2026-07-28"}
FILLER = [
    {"name": f"filler_{i}", "description": f"filler {i}", "args": [], "responseTemplate": {"body": f"filler {i}"}}
    for i in range(7)
]
CONFIG = {
    "toolsPageSize": 3,
    "servers": [
        {
            "name": "ts",
            "upstream": {"cluster": "demo", "timeoutMs": 5000},
            "config": {"team": "ops"},
            "tools": [
                {
                    "name": "forecast",
                    "description": "The weather of a city, with progress and a debug log of the upstream call",
                    "args": [{"name": "city", "required": True, "position": "query"}],
                    "requestTemplate": {"url": "/weather", "method": "GET"},
                    "responseTemplate": {"body": "{{ city }}: {{ temp }} degrees, {{ conditions }}"},
                    "notifications": [
                        {"progress": 0, "total": 2, "message": "asking about {{ args.city }}"},
                        {"log": "debug", "logger": "weather", "data": "GET {{ args.city }}: {{ status }}"},
                        {"log": "info", "logger": "weather", "data": "{{ city }} is {{ conditions }}"},
                        {"progress": 2, "total": 2, "message": "done"},
                    ],
                },
                {"name": "broken", "description": "An upstream that fails", "args": [],
                 "requestTemplate": {"url": "/error", "method": "GET"}},
                {
                    "name": "greet_asked",
                    "description": "Asks the user's name first",
                    "args": [],
                    "inputRequests": {
                        "who": {
                            "method": "elicitation/create",
                            "params": {
                                "message": "What is your name?",
                                "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}},
                                                    "required": ["name"]},
                            },
                        }
                    },
                    "responseTemplate": {"body": "Hello {{ input.who.content.name }}"},
                },
                {
                    "name": "sampled",
                    "description": "Asks the client's model and sends its answer upstream",
                    "args": [],
                    "inputRequests": {
                        "q": {
                            "method": "sampling/createMessage",
                            "params": {"messages": [{"role": "user", "content": {"type": "text",
                                                                                 "text": "Capital of France?"}}],
                                       "maxTokens": 50},
                        }
                    },
                    "requestTemplate": {"url": "/echo/sampling", "method": "POST",
                                        "body": '{"answer": {{ input.q.content.text | tojson }}}'},
                    "responseTemplate": {"body": "upstream got {{ response.body }}"},
                },
                *FILLER,
            ],
            "prompts": [
                {"name": "review", "description": "Review a change",
                 "arguments": [{"name": "language", "required": True}],
                 "messages": [{"role": "user", "text": "Review this {{ args.language }} change for {{ config.team }}"}]}
            ],
            "resources": [
                {"uri": "guide://style", "name": "style", "mimeType": "text/markdown", "text": "# Style for {{ config.team }}"}
            ],
        }
    ],
}
TOOLS = ["forecast", "broken", "greet_asked", "sampled", *(t["name"] for t in FILLER)]


@pytest.fixture(scope="module")
def gw():
    g = harness.start_gateway(CONFIG, tag="ts-client", plugin_format="json")
    try:
        yield g
    finally:
        g.stop()


def _run(url: str, mode: str) -> dict:
    # A missing package is a failure, not a skip: `make setup` installs it (e2e/package.json).
    assert CLIENT_PACKAGE.is_file(), f"{CLIENT_PACKAGE} missing: run `make setup`"
    proc = subprocess.run(
        [str(node_binary()), str(SCRIPT), url, mode],
        cwd=SCRIPT.parent, env=node_env(), capture_output=True, text=True, timeout=90, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in out, f"{out['error']}\n{out.get('stack')}\n{proc.stderr}"
    return out


def test_the_client_package_is_the_v2_line():
    version = json.loads(CLIENT_PACKAGE.read_text())["version"]
    assert version.split(".")[0] == "2", version


@pytest.mark.parametrize("mode", list(MODES))
def test_the_typescript_v2_client_in_each_era(gw, mode):
    out = _run(gw.mcp_url("ts"), mode)
    assert out["protocolVersion"] == MODES[mode], out
    era = "legacy" if mode == "legacy" else "2026-07-28"

    wire = out["wire"]
    envelope = ["io.modelcontextprotocol/clientCapabilities", "io.modelcontextprotocol/clientInfo",
                "io.modelcontextprotocol/protocolVersion"]
    if era == "legacy":
        # The handshake: initialize, then a session id on everything after it, and no 2026 envelope.
        assert wire[0]["method"] == "initialize" and not wire[0]["session"], wire[0]
        assert all(w["session"] and not set(w["meta"]) & set(envelope) for w in wire[1:]), wire
        # Its answers to the gateway's elicitation and sampling requests are POSTs of their own.
        assert sum(w["method"] == "(response)" for w in wire) == 2, wire
    else:
        # server/discover first, no initialize, no session, and the envelope on every request.
        assert wire[0]["method"] == "server/discover", wire[0]
        assert all(w["method"] != "initialize" and not w["session"] for w in wire), wire
        assert all(set(envelope) <= set(w["meta"]) for w in wire), wire
        # Each InputRequiredResult was retried with the answers and the signed requestState.
        retries = [w for w in wire if w["inputResponses"]]
        assert [(w["inputResponses"], w["requestState"]) for w in retries] == [(["who"], True), (["q"], True)], wire

    # Every page: the client walks nextCursor itself; two pages by hand hold 3 each.
    assert out["tools"] == TOOLS, out["tools"]
    assert out["firstPage"] == TOOLS[:3] and out["secondPage"] == TOOLS[3:6], out

    # A REST tool: the demo upstream's answer, through the response template.
    assert out["weather"] == {"isError": False, "text": "Paris: 16 degrees, sunny"}, out["weather"]
    # An upstream failure is a tool error (isError), not a protocol error.
    assert out["broken"]["isError"] is True, out["broken"]
    assert "500" in out["broken"]["text"] or "failed on purpose" in out["broken"]["text"], out["broken"]
    # An unknown tool is a JSON-RPC error the client raises.
    assert out["unknown"]["threw"] is True and out["unknown"]["code"] in (-32602, -32601), out["unknown"]

    assert out["prompt"] == ["Review this rust change for ops"], out["prompt"]
    assert out["resource"] == ["# Style for ops"], out["resource"]

    # Input requests: answered by the client's own handlers (2025-11-25: server requests over SSE,
    # 2026-07-28: the client's InputRequiredResult driver retrying with inputResponses + requestState).
    assert out["asking"] == {"isError": False, "text": "Hello Ada"}, out["asking"]
    assert out["sampling"]["isError"] is False, out["sampling"]
    assert out["sampling"]["text"] == 'upstream got {"answer": "Paris, said the model"}', out["sampling"]
    assert ["elicitation", "What is your name?"] in out["asked"], out["asked"]
    assert ["sampling", "Capital of France?"] in out["asked"], out["asked"]

    # Notifications in the tool's SSE answer: progress to onprogress, log messages to the handler, filtered
    # by level. Handshake era: every level before logging/setLevel (the Paris call), then `info` and up.
    # 2026-07-28: none without `_meta` io.modelcontextprotocol/logLevel (Paris), `info` and up with it.
    assert out["noisy"]["isError"] is False, out["noisy"]
    assert [p["progress"] for p in out["progress"]] == [0, 2], out["progress"]
    assert out["progress"][0]["message"] == "asking about Oslo", out["progress"]
    if era == "2026-07-28":
        # logging/setLevel is refused by the client itself (an SdkError), never sent; the level rides in
        # `_meta`, which this client does not fill in by itself (the script sets it by hand).
        assert out["setLevel"] == {"threw": True, "code": "METHOD_NOT_SUPPORTED_BY_PROTOCOL_VERSION"}, out
        assert "logging/setLevel" not in [w["method"] for w in wire], wire
    heard = [(m["level"], m.get("logger"), m["data"]) for m in out["logs"]]
    oslo = [("info", "weather", "Oslo is sunny")]
    paris = [("debug", "weather", "GET Paris: 200"), ("info", "weather", "Paris is sunny")]
    assert heard == (paris + oslo if era == "legacy" else oslo), heard
