"""Prompts, resources, resource templates, completion and content blocks through real Envoy, with the
official Python SDK in both eras: the handshake (`legacy`, sessions) and the stateless 2026-07-28. Raw
requests check what the SDK hides: capabilities, caching hints, error codes and refused configs."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

import harness
from harness import ACCEPT, mcp_client, run_async

SERVER = "library"
MODES = ["legacy", "2026-07-28"]

CONFIG = {
    "servers": [
        {
            "name": SERVER,
            "version": "2.0.0",
            "description": "Books, users and the prompts that go with them",
            "icons": [{"src": "https://example.com/library.png", "mimeType": "image/png", "sizes": ["48x48"]}],
            "upstream": {"cluster": "demo", "timeoutMs": 5000},
            "config": {"team": "ops"},
            "tools": [
                {
                    "name": "user_card",
                    "description": "A user as several content blocks",
                    "icons": [{"src": "https://example.com/user.svg", "theme": "dark"}],
                    "args": [{"name": "id", "type": "integer", "required": True, "position": "path"}],
                    "requestTemplate": {"url": "/users/{id}"},
                    "responseTemplate": {
                        "content": [
                            {"type": "text", "text": "{{ name }} <{{ email }}>"},
                            {"type": "resource_link", "uri": "users://{{ id }}", "name": "user {{ id }}",
                             "mimeType": "application/json"},
                            {"type": "resource", "uri": "users://{{ id }}", "mimeType": "application/json",
                             "text": "{{ response | tojson }}"},
                        ]
                    },
                },
                {
                    "name": "picture",
                    "description": "An image with a caption, from one upstream answer",
                    "args": [],
                    "requestTemplate": {"url": "/image.png"},
                    "responseTemplate": {
                        "content": [
                            {"type": "text", "text": "a {{ headers['content-type'] }} of {{ body | length }} bytes"},
                            {"type": "image", "data": "{{ bodyBase64 }}", "mimeType": "{{ headers['content-type'] }}"},
                        ]
                    },
                },
                {"name": "sound", "description": "audio/* answers are audio content", "args": [],
                 "requestTemplate": {"url": "/audio.wav"}},
            ],
            "prompts": [
                {
                    "name": "review",
                    "title": "Code review",
                    "description": "Review a change",
                    "icons": [{"src": "data:image/png;base64,iVBORw0KGgo="}],
                    "arguments": [
                        {"name": "language", "description": "The language", "required": True,
                         "enum": ["rust", "python", "go"]},
                        {"name": "focus", "completions": ["security", "speed", "style"]},
                    ],
                    "messages": [
                        {"role": "user",
                         "text": "Review this {{ args.language }} change for {{ config.team }}"
                                 "{% if args.focus %}, focusing on {{ args.focus }}{% endif %}."},
                        {"role": "assistant", "content": {"type": "resource", "uri": "guide://{{ args.language }}",
                                                          "mimeType": "text/markdown", "text": "# Guide"}},
                    ],
                },
                {
                    "name": "scaffold",
                    "description": "Start a project; the frameworks offered follow the language",
                    "arguments": [
                        {"name": "language", "required": True, "enum": ["rust", "python", "go"]},
                        {"name": "framework", "completions": ["axum", "actix", "django", "flask", "gin"],
                         "valuesWhen": {"language": {"rust": ["axum", "actix"], "python": ["django", "flask"],
                                                     "go": ["gin"]}}},
                        {"name": "edition", "enum": ["2015", "2018", "2021", "2024"],
                         "valuesWhen": {"language": {"rust": ["2021", "2024"], "python": [], "go": []}}},
                    ],
                    "messages": [{"role": "user", "text": "A {{ args.language }} project"
                                  "{% if args.framework %} on {{ args.framework }}{% endif %}"
                                  "{% if args.edition %}, edition {{ args.edition }}{% endif %}"}],
                },
            ],
            "resources": [
                {"uri": "guide://style", "name": "style", "title": "Style guide", "mimeType": "text/markdown",
                 "text": "# Style for {{ config.team }}", "size": 15},
                {"uri": "img://logo", "name": "logo", "mimeType": "image/png", "requestTemplate": {"url": "/image.png"}},
                {"uri": "bin://tiny", "name": "tiny", "blob": "AAEC"},
            ],
            "resourceTemplates": [
                {
                    "uriTemplate": "users://{id}",
                    "name": "user",
                    "description": "A user, fetched from the API",
                    "mimeType": "application/json",
                    "arguments": [{"name": "id", "completions": ["1", "2", "3"]}],
                    "requestTemplate": {"url": "/users/{{ args.id }}"},
                    "errorResponseTemplate": "no user {{ args.id }} ({{ status }})",
                },
                {"uriTemplate": "echo://{word}", "name": "echo", "mimeType": "text/plain",
                 "text": "you said {{ args.word }}"},
                {"uriTemplate": "search://books{/genre}{?q,lang}", "name": "search", "mimeType": "text/plain",
                 "text": "genre={{ args.genre }} q={{ args.q }} lang={{ args.lang }}"},
                {"uriTemplate": "files://root{/path*}", "name": "files", "mimeType": "text/plain",
                 "text": "path={{ args.path }}"},
                {"uriTemplate": "export://report{.format}", "name": "export", "mimeType": "text/plain",
                 "text": "format={{ args.format }}"},
                {"uriTemplate": "vault://{name}", "name": "vault", "mimeType": "text/plain",
                 "inputRequests": {"unlock": {"method": "elicitation/create", "params": {
                     "message": "PIN for {{ args.name }}?",
                     "requestedSchema": {"type": "object", "properties": {"pin": {"type": "string"}},
                                         "required": ["pin"]}}}},
                 "requestTemplate": {"url": "/echo?vault={{ args.name }}&pin={{ input.unlock.content.pin }}"},
                 "responseTemplate": {"body": "{{ args.name }} unlocked: {{ body }}"}},
                {"uriTemplate": "shelf://{genre}/{title}", "name": "shelf", "mimeType": "text/plain",
                 "text": "{{ args.title }} ({{ args.genre }})",
                 "arguments": [{"name": "genre", "completions": ["scifi", "poetry"]},
                               {"name": "title", "valuesWhen": {"genre": {"scifi": ["Dune", "Solaris"],
                                                                          "poetry": ["Odes"]}}}]},
            ],
        },
        {"name": "tools-only", "upstream": {"cluster": "demo"},
         "tools": [{"name": "hi", "description": "d", "responseTemplate": {"body": "hi"}}]},
    ]
}


@pytest.fixture(scope="module")
def lib(gw):
    g = harness.start_gateway(CONFIG, tag="prompts", upstream=gw.upstream, run_dir=gw.run_dir)
    yield g
    g.stop()


def _client(lib, mode):
    return mcp_client(lib.mcp_url(SERVER), mode=mode)


@pytest.mark.parametrize("mode", MODES)
def test_prompts_through_the_sdk(lib, mode):
    from mcp.types import PromptReference

    async def go():
        async with _client(lib, mode) as c:
            listed = await c.list_prompts()
            got = await c.get_prompt("review", {"language": "rust", "focus": "speed"})
            completion = await c.complete(PromptReference(type="ref/prompt", name="review"),
                                          {"name": "focus", "value": "s"})
            enum = await c.complete(PromptReference(type="ref/prompt", name="review"),
                                    {"name": "language", "value": "P"})
            return listed, got, completion, enum, c.protocol_version

    listed, got, completion, enum, version = run_async(go)
    assert (version == "2026-07-28") == (mode == "2026-07-28"), version
    p = listed.prompts[0]
    assert (p.name, p.title, p.description) == ("review", "Code review", "Review a change")
    assert [(a.name, a.required) for a in p.arguments] == [("language", True), ("focus", False)]
    assert p.icons[0].src.startswith("data:image/png")
    assert got.description == "Review a change"
    assert got.messages[0].role == "user"
    assert got.messages[0].content.text == "Review this rust change for ops, focusing on speed."
    embedded = got.messages[1].content
    assert (got.messages[1].role, embedded.type, str(embedded.resource.uri)) == ("assistant", "resource", "guide://rust")
    assert completion.completion.values == ["security", "speed", "style"]
    assert (enum.completion.values, enum.completion.total) == (["python"], 1)


@pytest.mark.parametrize("mode", MODES)
def test_completion_follows_the_arguments_already_given(lib, mode):
    """`context.arguments` narrows what completion offers (`valuesWhen`), for prompts and resource
    templates; an enum narrowed by another argument also refuses, in prompts/get, what it rules out."""
    from mcp.shared.exceptions import MCPError
    from mcp.types import PromptReference, ResourceTemplateReference

    scaffold = PromptReference(type="ref/prompt", name="scaffold")
    shelf = ResourceTemplateReference(type="ref/resource", uri="shelf://{genre}/{title}")

    async def go():
        async with _client(lib, mode) as c:
            out = {
                "rust": await c.complete(scaffold, {"name": "framework", "value": ""}, {"language": "rust"}),
                "python-d": await c.complete(scaffold, {"name": "framework", "value": "d"}, {"language": "python"}),
                "none": await c.complete(scaffold, {"name": "framework", "value": "a"}),
                "edition": await c.complete(scaffold, {"name": "edition", "value": "20"}, {"language": "rust"}),
                "no-edition": await c.complete(scaffold, {"name": "edition", "value": ""}, {"language": "go"}),
                "scifi": await c.complete(shelf, {"name": "title", "value": ""}, {"genre": "scifi"}),
                "got": await c.get_prompt("scaffold", {"language": "rust", "framework": "axum", "edition": "2024"}),
            }
            try:
                await c.get_prompt("scaffold", {"language": "go", "edition": "2021"})
                out["refused"] = None
            except MCPError as e:
                out["refused"] = e.error
            return out

    out = run_async(go)
    assert out["rust"].completion.values == ["axum", "actix"], out["rust"]
    assert out["python-d"].completion.values == ["django"]
    assert out["none"].completion.values == ["axum", "actix"], "no context: the whole list"
    assert (out["edition"].completion.values, out["edition"].completion.total) == (["2021", "2024"], 2)
    assert out["no-edition"].completion.values == []
    assert out["scifi"].completion.values == ["Dune", "Solaris"]
    assert out["got"].messages[0].content.text == "A rust project on axum, edition 2024"
    assert out["refused"].code == -32602, out["refused"]
    assert "`edition`: takes no value when `language` is go" in out["refused"].message, out["refused"]


# What the TypeScript SDK's own RFC 6570 expansion (`UriTemplate.expand`) makes of each template: the URIs a
# TypeScript client sends, which the gateway must read back.
EXPANSIONS = [
    ("search://books{/genre}{?q,lang}", {"genre": "sci fi", "q": "dune & co", "lang": "en"},
     "genre=sci fi q=dune & co lang=en"),
    ("search://books{/genre}{?q,lang}", {"genre": "poetry", "lang": "fr"}, "genre=poetry q= lang=fr"),
    ("files://root{/path*}", {"path": ["a", "b c", "d.txt"]}, "path=a/b c/d.txt"),
    ("export://report{.format}", {"format": "pdf"}, "format=pdf"),
]


def _ts_expand(cases: list) -> list[str]:
    import subprocess

    from node_tools import node_env

    sdk = harness.NODE_DIR / "@modelcontextprotocol" / "sdk" / "dist" / "esm" / "shared" / "uriTemplate.js"
    assert sdk.exists(), sdk
    script = (f"import {{ UriTemplate }} from {json.dumps(sdk.as_uri())};"
              "const cases = JSON.parse(process.argv[1]);"
              "console.log(JSON.stringify(cases.map(([t, v]) => new UriTemplate(t).expand(v))));")
    out = subprocess.run([str(harness.node_binary()), "--input-type=module", "-e", script,
                          json.dumps([[t, v] for t, v, _ in cases])],
                         capture_output=True, text=True, timeout=60, env=node_env(), check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("mode", MODES)
def test_uri_template_operators_read_what_the_typescript_sdk_expands(lib, mode):
    """Level 2-4 operators (`{/x}`, `{/x*}`, `{.x}`, `{?x,y}`): every URI the TypeScript SDK expands
    is read back by the gateway with the variables it was expanded from; a URI with a query parameter the
    template does not name is no template's."""
    from mcp.shared.exceptions import MCPError

    uris = _ts_expand(EXPANSIONS)
    assert uris[0] == "search://books/sci%20fi?q=dune%20%26%20co&lang=en", uris
    assert uris[2] == "files://root/a/b%20c/d.txt", uris

    async def go():
        async with _client(lib, mode) as c:
            texts = [(await c.read_resource(u)).contents[0].text for u in uris]
            try:
                await c.read_resource("search://books/poetry?q=x&page=2")
                refused = None
            except MCPError as e:
                refused = e.error
            return texts, refused

    texts, refused = run_async(go)
    assert texts == [expected for _, _, expected in EXPANSIONS]
    assert refused is not None and refused.code == (-32002 if mode == "legacy" else -32602), refused


@pytest.mark.parametrize("mode", MODES)
def test_a_resource_asks_the_client_before_it_is_read(lib, mode):
    """`inputRequests` on a resource template: the SDK's elicitation callback is asked (an InputRequiredResult
    at 2026-07-28; an SSE request and a poll in a 2025-11-25 session), and its answer reaches the upstream
    request and the response template. Without an elicitation callback, the read is refused naming it."""
    import mcp_types as types
    from mcp.shared.exceptions import MCPError

    asked: list = []

    async def elicit(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content={"pin": "4 2"})

    async def go():
        async with mcp_client(lib.mcp_url(SERVER), mode=mode, elicitation_callback=elicit) as c:
            read = await c.read_resource("vault://diary")
        async with mcp_client(lib.mcp_url(SERVER), mode=mode) as c:
            try:
                await c.read_resource("vault://diary")
                refused = None
            except MCPError as e:
                refused = e.error
        return read, refused

    read, refused = run_async(go)
    assert asked == ["PIN for diary?"], asked
    text = read.contents[0].text
    assert text.startswith("diary unlocked: ") and "vault=diary" in text and "pin=4" in text, text
    assert refused is not None and refused.data["requiredCapabilities"] == {"elicitation": {}}, refused


@pytest.mark.parametrize("mode", MODES)
def test_resources_through_the_sdk(lib, mode):
    from mcp.types import ResourceTemplateReference

    async def go():
        async with _client(lib, mode) as c:
            listed = await c.list_resources()
            templates = await c.list_resource_templates()
            style = await c.read_resource("guide://style")
            logo = await c.read_resource("img://logo")
            tiny = await c.read_resource("bin://tiny")
            user = await c.read_resource("users://2")
            echo = await c.read_resource("echo://hello%20world")
            ids = await c.complete(ResourceTemplateReference(type="ref/resource", uri="users://{id}"),
                                   {"name": "id", "value": ""})
            return listed, templates, style, logo, tiny, user, echo, ids

    listed, templates, style, logo, tiny, user, echo, ids = run_async(go)
    assert [(str(r.uri), r.name) for r in listed.resources] == [("guide://style", "style"), ("img://logo", "logo"),
                                                                 ("bin://tiny", "tiny")]
    assert (listed.resources[0].title, listed.resources[0].size) == ("Style guide", 15)
    assert [t.uri_template for t in templates.resource_templates] == [
        "users://{id}", "echo://{word}", "search://books{/genre}{?q,lang}", "files://root{/path*}",
        "export://report{.format}", "vault://{name}", "shelf://{genre}/{title}"]
    assert (style.contents[0].text, style.contents[0].mime_type) == ("# Style for ops", "text/markdown")
    assert base64.b64decode(logo.contents[0].blob).startswith(b"\x89PNG")
    assert logo.contents[0].mime_type == "image/png"
    assert tiny.contents[0].blob == "AAEC"
    assert '"name": "Alan Turing"' in user.contents[0].text and user.contents[0].mime_type == "application/json"
    assert echo.contents[0].text == "you said hello world"
    assert ids.completion.values == ["1", "2", "3"]


@pytest.mark.parametrize("mode", MODES)
def test_content_blocks_and_icons_through_the_sdk(lib, mode):
    async def go():
        async with _client(lib, mode) as c:
            tools = await c.list_tools()
            card = await c.call_tool("user_card", {"id": 3})
            picture = await c.call_tool("picture", {})
            sound = await c.call_tool("sound", {})
            return tools, card, picture, sound, c.server_info

    tools, card, picture, sound, info = run_async(go)
    assert tools.tools[0].icons[0].theme == "dark"
    assert not card.is_error, card
    assert [b.type for b in card.content] == ["text", "resource_link", "resource"]
    assert card.content[0].text == "Grace Hopper <grace@example.com>"
    assert (str(card.content[1].uri), card.content[1].name) == ("users://3", "user 3")
    assert '"email":"grace@example.com"' in card.content[2].resource.text
    assert [b.type for b in picture.content] == ["text", "image"]
    assert picture.content[1].mime_type == "image/png"
    assert base64.b64decode(picture.content[1].data).startswith(b"\x89PNG")
    assert picture.content[0].text.startswith("a image/png of ")
    assert (sound.content[0].type, sound.content[0].mime_type) == ("audio", "audio/wav")
    if info is not None:
        assert info.description == "Books, users and the prompts that go with them"


def _legacy_session(raw: harness.RawMcp, server: str) -> tuple[str, dict]:
    r = raw.initialize_raw(server)
    sid = r.headers["mcp-session-id"]
    raw.notify(server, sid, "notifications/initialized")
    return sid, r.json()["result"]


def test_legacy_wire(lib):
    with harness.RawMcp(lib.base_url, lib.prefix) as raw:
        sid, init = _legacy_session(raw, SERVER)
        assert init["capabilities"] == {
            "tools": {"listChanged": False},
            "prompts": {"listChanged": False},
            "resources": {"listChanged": False},
            "completions": {},
        }
        assert init["serverInfo"]["description"].startswith("Books") and init["serverInfo"]["icons"][0]["sizes"] == ["48x48"]
        assert raw.rpc(SERVER, sid, "resources/subscribe", {"uri": "guide://style"})["result"] == {}
        assert raw.rpc(SERVER, sid, "resources/unsubscribe", {"uri": "users://7"})["result"] == {}
        missing = raw.rpc(SERVER, sid, "resources/read", {"uri": "guide://nope"})["error"]
        assert (missing["code"], missing["data"]) == (-32002, {"uri": "guide://nope"})
        failed = raw.rpc(SERVER, sid, "resources/read", {"uri": "users://99"})["error"]
        assert failed["code"] == -32603 and "no user 99 (404)" in failed["message"], failed
        bad = raw.rpc(SERVER, sid, "prompts/get", {"name": "review", "arguments": {"language": "cobol"}})["error"]
        assert bad["code"] == -32602 and "must be one of rust, python, go" in bad["message"], bad
        unknown = raw.rpc(SERVER, sid, "completion/complete",
                          {"ref": {"type": "ref/prompt", "name": "review"}, "argument": {"name": "x", "value": ""}})
        assert unknown["error"]["code"] == -32602 and "it has: language, focus" in unknown["error"]["message"]
        sid2, init2 = _legacy_session(raw, "tools-only")
        assert init2["capabilities"] == {"tools": {"listChanged": False}}
        assert raw.rpc("tools-only", sid2, "prompts/list")["error"]["code"] == -32601
        assert raw.rpc("tools-only", sid2, "resources/read", {"uri": "guide://style"})["error"]["code"] == -32601


def _stateless(lib, method: str, params: dict, name: str | None = None) -> httpx.Response:
    params = dict(params)
    params["_meta"] = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                       "io.modelcontextprotocol/clientCapabilities": {}}
    headers = {"Accept": ACCEPT, "Content-Type": "application/json", "MCP-Protocol-Version": "2026-07-28",
               "Mcp-Method": method}
    if name is not None:
        headers["Mcp-Name"] = name
    body = {"jsonrpc": "2.0", "id": 5, "method": method, "params": params}
    return httpx.post(lib.mcp_url(SERVER), json=body, headers=headers, timeout=10)


def test_stateless_wire(lib):
    for method in ["prompts/list", "resources/list", "resources/templates/list"]:
        result = _stateless(lib, method, {}).json()["result"]
        assert (result["resultType"], result["ttlMs"], result["cacheScope"]) == ("complete", 60000, "private"), method
    read = _stateless(lib, "resources/read", {"uri": "users://1"}, name="users://1").json()["result"]
    assert (read["resultType"], read["ttlMs"], read["cacheScope"]) == ("complete", 60000, "private")
    assert "Ada Lovelace" in read["contents"][0]["text"]
    got = _stateless(lib, "prompts/get", {"name": "review", "arguments": {"language": "go"}}, name="review").json()
    assert got["result"]["resultType"] == "complete" and "ttlMs" not in got["result"]
    missing = _stateless(lib, "resources/read", {"uri": "guide://nope"}, name="guide://nope")
    assert (missing.status_code, missing.json()["error"]["code"], missing.json()["error"]["data"]) == (
        200, -32602, {"uri": "guide://nope"})
    wrong_name = _stateless(lib, "resources/read", {"uri": "guide://style"}, name="guide://other")
    assert (wrong_name.status_code, wrong_name.json()["error"]["code"]) == (400, -32020)
    subscribe = _stateless(lib, "resources/subscribe", {"uri": "guide://style"})
    assert (subscribe.status_code, subscribe.json()["error"]["code"]) == (404, -32601)
    discover = _stateless(lib, "server/discover", {}).json()["result"]
    assert discover["capabilities"]["completions"] == {} and "subscribe" not in discover["capabilities"]["resources"]


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ({"prompts": [{"name": "p", "arguments": [{"name": "a"}], "messages": [{"role": "user", "text": "{{ args.b }}"}]}]},
         "server 'bad' prompt 'p' field 'messages[0].text': reads `args.b`"),
        ({"resources": [{"uri": "x://1", "name": "one", "text": "a", "mimeTyp": "text/plain"}]},
         "server 'bad' resource 'x://1' field 'mimeTyp': unknown field"),
        ({"resourceTemplates": [{"uriTemplate": "x://{id}", "name": "t", "text": "{{ args.di }}"}]},
         "server 'bad' resource template 'x://{id}' field 'text': reads `args.di`"),
        ({"prompts": [{"name": "p", "arguments": [{"name": "a", "valuesWhen": {"b": {"x": ["y"]}}}],
                       "messages": [{"role": "user", "text": "hi"}]}]},
         "server 'bad' prompt 'p' field 'arguments[0].valuesWhen.b': names no argument here (the arguments: a)"),
        ({"resourceTemplates": [{"uriTemplate": "x://s{?tags*}", "name": "t", "text": "a"}]},
         "server 'bad' resource template 'x://s{?tags*}' field 'uriTemplate': '{?tags*}': explode (`*`) on `?`"),
        ({"resourceTemplates": [{"uriTemplate": "x://s{;v}", "name": "t", "text": "a"}]},
         "server 'bad' resource template 'x://s{;v}' field 'uriTemplate': '{;v}': path parameters"),
    ],
)
def test_invalid_config_is_refused_by_envoy_naming_server_entry_and_field(gw, server, expected):
    cfg = {"servers": [{"name": "bad", **server}]}
    tag = "refused-" + next(iter(server))
    envoy = harness.Envoy(cfg, upstream_port=gw.upstream.port, run_dir=gw.run_dir, name=f"envoy-{tag}",
                          wasm=harness.wasm_path())
    with pytest.raises(harness.HarnessError, match="exited"):
        envoy.start(timeout=30)
    log = envoy.log_path.read_text(errors="replace")
    assert f"invalid plugin config: {expected}" in log, log[-3000:]
