"""HTTP rules of the MCP endpoint ({prefix}/{server}), asserted with raw httpx requests.

See docs/CONTRACT.md, "HTTP rules at {prefix}/{server}".
"""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest

from harness import ACCEPT, LATEST, SUPPORTED_VERSIONS, RawMcp

SERVER = "demo"


# --- helpers ---------------------------------------------------------------------------------


def describe(r: httpx.Response) -> str:
    return f"HTTP {r.status_code} {dict(r.headers)} {r.text[:500]!r}"


def assert_json_error(r: httpx.Response, status: int, code: int | None = None) -> dict:
    """`r` has the status and a JSON-RPC error body (application/json)."""
    assert r.status_code == status, describe(r)
    ctype = r.headers.get("content-type", "")
    assert ctype.startswith("application/json"), f"error body is not application/json: {describe(r)}"
    try:
        body = r.json()
    except ValueError:
        pytest.fail(f"error body is not JSON: {describe(r)}")
    assert isinstance(body, dict), describe(r)
    assert body.get("jsonrpc") == "2.0", describe(r)
    err = body.get("error")
    assert isinstance(err, dict), describe(r)
    assert isinstance(err.get("code"), int) and isinstance(err.get("message"), str), describe(r)
    if code is not None:
        assert err["code"] == code, describe(r)
    return body


def assert_result(r: httpx.Response, req_id=None) -> dict:
    assert r.status_code == 200, describe(r)
    assert r.headers.get("content-type", "").startswith("application/json"), describe(r)
    body = r.json()
    assert body.get("jsonrpc") == "2.0", describe(r)
    if req_id is not None:
        assert body.get("id") == req_id, describe(r)
    assert "result" in body, describe(r)
    return body["result"]


def ping_body(i: int = 1) -> dict:
    return {"jsonrpc": "2.0", "id": i, "method": "ping"}


# --- initialize --------------------------------------------------------------------------------


def test_initialize_answers_200_with_session_and_result(raw: RawMcp):
    r = raw.initialize_raw(SERVER, LATEST)
    body = r.json()
    result = assert_result(r, req_id=body.get("id"))
    sid = r.headers.get("mcp-session-id")
    assert sid, describe(r)
    assert re.fullmatch(r"[0-9a-fA-F]{32}", sid), f"session id is not 32 hex chars: {sid!r}"
    assert all(0x21 <= ord(c) <= 0x7E for c in sid), "session id must be visible ASCII"
    assert result["protocolVersion"] == LATEST
    assert result["capabilities"].get("tools") == {"listChanged": False}, result
    assert result["serverInfo"] == {"name": "demo", "version": "1.2.3"} or (
        result["serverInfo"].get("name") == "demo" and result["serverInfo"].get("version") == "1.2.3"
    ), result
    assert result.get("instructions") == "Tools over the demo REST API, used by the end-to-end tests."


def test_initialize_id_is_echoed(raw: RawMcp):
    body = {
        "jsonrpc": "2.0",
        "id": "init-abc",
        "method": "initialize",
        "params": {"protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    r = raw.post(SERVER, body)
    assert_result(r, req_id="init-abc")


def test_session_ids_are_unique(raw: RawMcp):
    ids = {raw.initialize(SERVER, notify=False)[0] for _ in range(20)}
    assert len(ids) == 20


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_initialize_echoes_supported_version(raw: RawMcp, version: str):
    r = raw.initialize_raw(SERVER, version)
    assert assert_result(r)["protocolVersion"] == version


@pytest.mark.parametrize("version", ["2099-01-01", "2024-10-07", "latest", ""])
def test_initialize_unknown_version_answers_latest(raw: RawMcp, version: str):
    r = raw.initialize_raw(SERVER, version)
    assert assert_result(r)["protocolVersion"] == LATEST


def test_initialize_without_server_instructions_or_version(raw: RawMcp):
    """The `conformance` server has no instructions: none is returned."""
    r = raw.initialize_raw("conformance")
    result = assert_result(r)
    assert result["serverInfo"]["name"] == "conformance"
    assert "instructions" not in result or result["instructions"] in (None, ""), result


# --- message kinds -----------------------------------------------------------------------------


def test_notification_answers_202_empty(raw: RawMcp):
    sid, _ = raw.initialize(SERVER, notify=False)
    r = raw.notify(SERVER, sid, "notifications/initialized")
    assert r.status_code == 202, describe(r)
    assert r.content == b"", describe(r)
    r = raw.notify(SERVER, sid, "notifications/cancelled", {"requestId": 12345, "reason": "test"})
    assert r.status_code == 202, describe(r)
    assert r.content == b""


def test_response_message_answers_202_empty(raw: RawMcp):
    sid, _ = raw.initialize(SERVER)
    for msg in (
        {"jsonrpc": "2.0", "id": 777, "result": {}},
        {"jsonrpc": "2.0", "id": 778, "error": {"code": -32601, "message": "no"}},
    ):
        r = raw.post(SERVER, msg, session=sid)
        assert r.status_code == 202, describe(r)
        assert r.content == b""


def test_request_answers_200_json(raw: RawMcp):
    sid, _ = raw.initialize(SERVER)
    r = raw.post(SERVER, ping_body(41), session=sid)
    assert assert_result(r, req_id=41) == {}


def test_string_request_id_is_echoed(raw: RawMcp):
    sid, _ = raw.initialize(SERVER)
    r = raw.post(SERVER, {"jsonrpc": "2.0", "id": "abc-ü", "method": "ping"}, session=sid)
    assert assert_result(r, req_id="abc-ü") == {}


def test_unknown_method_is_32601(raw: RawMcp):
    sid, _ = raw.initialize(SERVER)
    r = raw.post(SERVER, {"jsonrpc": "2.0", "id": 5, "method": "no/such/method"}, session=sid)
    assert r.status_code == 200, describe(r)
    body = r.json()
    assert body.get("id") == 5 and body["error"]["code"] == -32601, body


def test_tools_list_invalid_cursor_is_32602(raw: RawMcp):
    sid, _ = raw.initialize(SERVER)
    r = raw.request(SERVER, sid, "tools/list", {"cursor": "definitely-not-a-cursor"})
    assert r.status_code == 200, describe(r)
    assert r.json()["error"]["code"] == -32602, r.text


def test_tools_call_unknown_tool_is_32602(raw: RawMcp):
    sid, _ = raw.initialize(SERVER)
    r = raw.request(SERVER, sid, "tools/call", {"name": "no_such_tool", "arguments": {}})
    assert r.status_code == 200, describe(r)
    assert r.json()["error"]["code"] == -32602, r.text


def test_tools_list_is_paginated(raw: RawMcp, demo_tools):
    sid, _ = raw.initialize(SERVER)
    names, cursor, pages = [], None, 0
    while True:
        params = {"cursor": cursor} if cursor else {}
        result = assert_result(raw.request(SERVER, sid, "tools/list", params))
        pages += 1
        assert len(result["tools"]) <= 5, "toolsPageSize is 5"
        for tool in result["tools"]:
            assert tool["name"] and tool["description"] and tool["inputSchema"]["type"] == "object", tool
        names += [t["name"] for t in result["tools"]]
        cursor = result.get("nextCursor")
        if not cursor:
            break
        assert pages < 50
    assert sorted(names) == sorted(demo_tools), "every tool listed exactly once"
    assert pages == -(-len(demo_tools) // 5)


# --- sessions ----------------------------------------------------------------------------------


def test_request_without_session_is_400(raw: RawMcp):
    r = raw.post(SERVER, ping_body())
    assert_json_error(r, 400, -32600)


def test_notification_without_session_is_400(raw: RawMcp):
    r = raw.notify(SERVER, None, "notifications/initialized")
    assert r.status_code == 400, describe(r)


@pytest.mark.parametrize("sid", ["0" * 32, uuid.uuid4().hex, "not-a-session", "x" * 200])
def test_unknown_session_is_404(raw: RawMcp, sid: str):
    r = raw.post(SERVER, ping_body(), session=sid)
    assert_json_error(r, 404)


def test_session_of_another_server_is_404(raw: RawMcp):
    sid, _ = raw.initialize("conformance")
    r = raw.post(SERVER, ping_body(), session=sid)
    assert_json_error(r, 404)


def test_delete_ends_session(raw: RawMcp):
    sid, _ = raw.initialize(SERVER)
    assert_result(raw.post(SERVER, ping_body(), session=sid))
    r = raw.delete(SERVER, sid)
    assert r.status_code == 204, describe(r)
    assert_json_error(raw.post(SERVER, ping_body(), session=sid), 404)
    assert_json_error(raw.delete(SERVER, sid), 404)


def test_delete_unknown_session_is_404(raw: RawMcp):
    assert_json_error(raw.delete(SERVER, uuid.uuid4().hex), 404)


def test_delete_without_session_is_400(raw: RawMcp):
    assert_json_error(raw.delete(SERVER, None), 400)


# --- methods, Accept, Content-Type -------------------------------------------------------------


def test_get_is_405_with_allow(raw: RawMcp):
    sid, _ = raw.initialize(SERVER)
    for headers in ({"Accept": "text/event-stream"}, {"Accept": "text/event-stream", "Mcp-Session-Id": sid}):
        r = raw.http.get(raw.path(SERVER), headers=headers)
        assert_json_error(r, 405)
        allow = {m.strip().upper() for m in r.headers.get("allow", "").split(",")}
        assert {"POST", "DELETE"} <= allow, describe(r)


@pytest.mark.parametrize("method", ["PUT", "PATCH", "OPTIONS", "HEAD"])
def test_other_methods_are_405(raw: RawMcp, method: str):
    r = raw.http.request(method, raw.path(SERVER), headers={"Content-Type": "application/json"},
                         content=json.dumps(ping_body()) if method in ("PUT", "PATCH") else None)
    assert r.status_code == 405, describe(r)


@pytest.mark.parametrize(
    "accept", ["application/json", "text/event-stream", "text/html", "application/xml, text/plain"]
)
def test_bad_accept_is_406(raw: RawMcp, accept: str):
    r = raw.initialize_raw(SERVER, headers={"Accept": accept})
    assert_json_error(r, 406)


@pytest.mark.parametrize(
    "accept",
    [
        None,
        "*/*",
        ACCEPT,
        "text/event-stream, application/json",
        "application/json;q=0.9, text/event-stream;q=0.8",
        "application/json,text/event-stream",
    ],
)
def test_good_accept_is_accepted(raw: RawMcp, accept):
    r = raw.initialize_raw(SERVER, headers={"Accept": accept})
    assert_result(r)


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_bad_content_type_is_415(raw: RawMcp, ctype):
    r = raw.initialize_raw(SERVER, headers={"Content-Type": ctype})
    assert_json_error(r, 415)


@pytest.mark.parametrize("ctype", ["application/json; charset=utf-8", "Application/JSON"])
def test_content_type_with_parameters_is_accepted(raw: RawMcp, ctype):
    r = raw.initialize_raw(SERVER, headers={"Content-Type": ctype})
    assert_result(r)


# --- Origin / DNS rebinding --------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example.com",
        "https://evil.example.com:8443",
        "http://localhost.evil.example.com",
        "http://127.0.0.1.evil.example.com",
        "https://app.example.com.evil.example.com",
        "http://app.example.com",  # listed with https only
        "null",
    ],
)
def test_bad_origin_is_403(raw: RawMcp, origin: str):
    r = raw.initialize_raw(SERVER, headers={"Origin": origin})
    assert_json_error(r, 403)


def test_dns_rebinding_host_and_origin_is_403(raw: RawMcp):
    r = raw.initialize_raw(SERVER, headers={"Host": "evil.example.com", "Origin": "http://evil.example.com"})
    assert_json_error(r, 403)


@pytest.mark.parametrize(
    "origin",
    [
        "http://localhost",
        "http://localhost:6274",
        "https://localhost:8443",
        "http://127.0.0.1",
        "http://127.0.0.1:10000",
        "http://[::1]",
        "http://[::1]:3000",
        "https://app.example.com",  # listed in allowedOrigins
    ],
)
def test_allowed_origin_is_accepted(raw: RawMcp, origin: str):
    r = raw.initialize_raw(SERVER, headers={"Origin": origin})
    assert_result(r)


def test_bad_origin_is_403_on_later_requests_too(raw: RawMcp):
    sid, _ = raw.initialize(SERVER)
    r = raw.post(SERVER, ping_body(), session=sid, headers={"Origin": "http://evil.example.com"})
    assert_json_error(r, 403)


# --- MCP-Protocol-Version header ---------------------------------------------------------------


@pytest.mark.parametrize("version", ["2099-01-01", "banana", "2025-06-18x"])
def test_bad_protocol_version_header_is_400(raw: RawMcp, version: str):
    sid, _ = raw.initialize(SERVER)
    r = raw.post(SERVER, ping_body(), session=sid, version=version)
    assert_json_error(r, 400)
    r = raw.initialize_raw(SERVER, headers={"MCP-Protocol-Version": version})
    assert_json_error(r, 400)


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_supported_protocol_version_header_is_accepted(raw: RawMcp, version: str):
    sid, _ = raw.initialize(SERVER, version)
    assert_result(raw.post(SERVER, ping_body(), session=sid, version=version))


# --- body size and malformed bodies ------------------------------------------------------------


def _big_initialize(size: int) -> bytes:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": LATEST,
            "capabilities": {},
            "clientInfo": {"name": "big", "version": "1"},
            "padding": "x" * size,
        },
    }
    return json.dumps(body).encode()


def test_oversized_body_is_413(raw: RawMcp):
    r = raw.post(SERVER, content=_big_initialize(300 * 1024))  # maxRequestBytes is 262144
    assert_json_error(r, 413)
    assert "262144 bytes (maxRequestBytes)" in r.json()["error"]["message"], "a size refusal names its limit"


def test_much_larger_body_is_413(raw: RawMcp):
    r = raw.post(SERVER, content=_big_initialize(3 * 1024 * 1024))
    assert r.status_code == 413, describe(r)


def test_body_just_below_limit_is_accepted(raw: RawMcp):
    content = _big_initialize(200 * 1024)
    assert len(content) < 262144
    assert_result(raw.post(SERVER, content=content))


@pytest.mark.parametrize("content", [b"{not json", b"", b"\xff\xfe\x00", b'{"jsonrpc": "2.0", "id": 1,', b"nul"])
def test_malformed_json_is_32700(raw: RawMcp, content: bytes):
    r = raw.post(SERVER, content=content)
    body = assert_json_error(r, 400, -32700)
    assert body.get("id", "missing") is None, body


def test_malformed_json_with_session_is_32700(raw: RawMcp):
    sid, _ = raw.initialize(SERVER)
    body = assert_json_error(raw.post(SERVER, content=b"[{]", session=sid), 400, -32700)
    assert body.get("id", "missing") is None


NOT_JSONRPC = [
    {"foo": 1},
    {"jsonrpc": "1.0", "id": 1, "method": "ping"},
    {"id": 1, "method": "ping"},
    {"jsonrpc": "2.0", "id": 1},
    {"jsonrpc": "2.0", "id": 1, "method": 5},
    {"jsonrpc": "2.0", "id": {"nested": 1}, "method": "ping"},
    42,
    "ping",
    None,
    True,
]


@pytest.mark.parametrize("body", NOT_JSONRPC, ids=[json.dumps(b)[:40] for b in NOT_JSONRPC])
def test_not_jsonrpc_is_32600(raw: RawMcp, body):
    assert_json_error(raw.post(SERVER, body), 400, -32600)


@pytest.mark.parametrize("body", NOT_JSONRPC[:6], ids=[json.dumps(b)[:40] for b in NOT_JSONRPC[:6]])
def test_not_jsonrpc_with_session_is_32600(raw: RawMcp, body):
    sid, _ = raw.initialize(SERVER)
    assert_json_error(raw.post(SERVER, body, session=sid), 400, -32600)


# --- batches -----------------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["2024-11-05", "2025-03-26"])
def test_batch_allowed_for_old_versions(raw: RawMcp, version: str):
    sid, _ = raw.initialize(SERVER, version)
    batch = [ping_body(1), {"jsonrpc": "2.0", "method": "notifications/initialized"}, ping_body(2),
             {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "template_only", "arguments": {"name": "B"}}}]
    r = raw.post(SERVER, batch, session=sid, version=version)
    assert r.status_code == 200, describe(r)
    assert r.headers.get("content-type", "").startswith("application/json")
    answers = r.json()
    assert isinstance(answers, list), answers
    by_id = {a["id"]: a for a in answers}
    assert set(by_id) == {1, 2, 3}, answers
    assert by_id[1]["result"] == {} and by_id[2]["result"] == {}
    assert by_id[3]["result"]["content"][0]["text"] == "Hello, B!"


@pytest.mark.parametrize("version", ["2024-11-05", "2025-03-26"])
def test_batch_of_notifications_is_202(raw: RawMcp, version: str):
    sid, _ = raw.initialize(SERVER, version, notify=False)
    batch = [{"jsonrpc": "2.0", "method": "notifications/initialized"},
             {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}}]
    r = raw.post(SERVER, batch, session=sid, version=version)
    assert r.status_code == 202, describe(r)
    assert r.content == b""


@pytest.mark.parametrize("version", ["2025-06-18", "2025-11-25"])
def test_batch_rejected_for_new_versions(raw: RawMcp, version: str):
    sid, _ = raw.initialize(SERVER, version)
    r = raw.post(SERVER, [ping_body(1), ping_body(2)], session=sid, version=version)
    assert_json_error(r, 400, -32600)


def test_initialize_inside_batch_is_an_error(raw: RawMcp):
    init = json.loads(_big_initialize(0))
    r = raw.post(SERVER, [init])
    assert r.status_code in (200, 400), describe(r)
    body = r.json()
    if isinstance(body, list):
        assert all("error" in m for m in body), body
    else:
        assert "error" in body, body
    # and with a 2025-03-26 session, initialize inside a batch is refused as well
    sid, _ = raw.initialize(SERVER, "2025-03-26")
    r = raw.post(SERVER, [init, ping_body(2)], session=sid, version="2025-03-26")
    body = r.json()
    if isinstance(body, list):
        init_answers = [m for m in body if m.get("id") == 1]
        assert init_answers and "error" in init_answers[0], body
    else:
        assert r.status_code == 400 and "error" in body, describe(r)


# --- routing -----------------------------------------------------------------------------------


def test_unknown_server_is_404(raw: RawMcp):
    assert_json_error(raw.initialize_raw("no-such-server"), 404)


@pytest.mark.parametrize("suffix", ["/extra", "/tools/list", "/a/b/c"])
def test_path_below_server_is_404(raw: RawMcp, suffix: str):
    r = raw.initialize_raw(SERVER, path=raw.path(SERVER) + suffix)
    assert_json_error(r, 404)


def test_paths_outside_prefix_pass_through(gw):
    with httpx.Client(base_url=gw.base_url, timeout=10) as c:
        r = c.get("/weather", params={"city": "Oslo"})
        assert r.status_code == 200 and r.json()["city"] == "Oslo", describe(r)
        # Untouched: the client's headers and body reach the upstream as sent.
        r = c.post("/echo/pass?a=%20b", content=b'{"raw": true}',
                   headers={"Authorization": "Bearer pass", "Content-Type": "application/json", "X-Custom": "1"})
        echo = r.json()
        assert echo["method"] == "POST" and echo["path"] == "/echo/pass" and echo["query"] == "a=%20b", echo
        assert echo["headers"]["authorization"] == "Bearer pass" and echo["headers"]["x-custom"] == "1", echo
        assert echo["body"] == '{"raw": true}'
        # Only whole path segments match the prefix.
        r = c.post("/mcp-serversX/demo", content=b"{}", headers={"Content-Type": "application/json"})
        assert r.status_code == 404 and "no route" in r.json()["error"], describe(r)
        r = c.get("/image.png")
        assert r.status_code == 200 and r.content.startswith(b"\x89PNG")


def test_mcp_requests_never_reach_the_routed_upstream(gw, raw: RawMcp):
    """MCP traffic is answered by the plugin; not even its headers go to the route's cluster."""

    def count() -> int:
        return httpx.get(f"{gw.upstream.url}/_count", params={"path": raw.path(SERVER)}, timeout=5).json()["count"]

    before = count()
    sid, _ = raw.initialize(SERVER)
    raw.post(SERVER, ping_body(), session=sid, headers={"Authorization": "Bearer must-not-leak"})
    raw.request(SERVER, sid, "tools/call", {"name": "get_user", "arguments": {"id": 1}})
    raw.post(SERVER, content=_big_initialize(300 * 1024))
    raw.post(SERVER, content=b"{not json")
    raw.http.get(raw.path(SERVER))
    raw.delete(SERVER, sid)
    assert count() == before


def test_baseline_listener_has_no_plugin(gw):
    with httpx.Client(base_url=gw.envoy.baseline_url, timeout=10) as c:
        r = c.get("/weather", params={"city": "Oslo"})
        assert r.status_code == 200 and r.json()["city"] == "Oslo"
        r = c.post(gw.mcp_path("conformance"), content=json.dumps(ping_body()), headers={"Content-Type": "application/json"})
        # The upstream itself answers: it knows no MCP.
        assert r.status_code == 404 and "no route" in r.json()["error"], describe(r)
