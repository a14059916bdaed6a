"""Admission and tool-level authorization through real Envoy (src/admission/): consumers with API keys in a
header and in the query, identities from Envoy's own `jwt_authn` filter (an inline JWKS, RS256 tokens signed
here), the OAuth 2.1 protected-resource metadata and 401/403 challenges, per-consumer filtering of tools,
prompts and resources and refusal of calls, per-user upstream credentials, for a REST server (the demo
upstream's /echo records what it got) and a proxied MCP server (e2e/mcp_backend.py's `whoami`), with the
Python SDK's client in both MCP eras, and the SDK's own OAuth flow against a minimal authorization server
(dynamic registration, authorization code with PKCE, a token for this resource).
"""

from __future__ import annotations

import copy
import json
import time

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

import harness
from harness import ACCEPT, LATEST
from test_mcp_proxy import McpBackend, proxied

PRIVATE = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWK = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(PRIVATE.public_key()))
JWK.update({"kid": "test", "alg": "RS256", "use": "sig"})
ISSUER = "https://issuer.test"
OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)

CONSUMERS = {
    "consumers": [
        {"name": "alice", "credential": "key-alice", "upstreamCredentials": {"rest": "alice-upstream"}},
        {"name": "bob", "credential": "key-bob"},
    ],
    "keyAuth": {"keys": ["x-api-key"], "inHeader": True, "inQuery": True},
    "jwtAuth": {"payloadKey": "jwt_payload", "consumerClaim": "sub"},
}
POLICY = {"rules": [
    {"consumers": ["alice"], "allow": {"tools": ["*"], "prompts": ["*"], "resources": ["*"]}},
    {"consumers": ["bob"], "allow": {"tools": ["echo"], "prompts": ["greeting"], "resources": ["info://public"]}},
    {"scopes": ["mcp:tools"], "allow": {"tools": ["echo"]}},
]}


def token(claims: dict, key=PRIVATE) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "iat": now, "exp": now + 600, **claims}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "test"})


def with_jwt_authn(base: dict) -> dict:
    """envoy/envoy.yaml with Envoy's jwt_authn filter before the wasm filter: tokens are optional (the plugin
    decides), verified ones leave their payload in the dynamic metadata under `jwt_payload`."""
    cfg = copy.deepcopy(base)
    for listener in cfg["static_resources"]["listeners"]:
        if listener["name"] != "mcp":
            continue
        hcm = harness._hcm(listener)
        jwt_filter = {
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {"test": {
                    "issuer": ISSUER,
                    "local_jwks": {"inline_string": json.dumps({"keys": [JWK]})},
                    "payload_in_metadata": "jwt_payload",
                    "forward": False,
                }},
                "rules": [{"match": {"prefix": "/"}, "requires": {"allow_missing_or_failed": {}}}],
            },
        }
        filters = hcm["http_filters"]
        at = next(i for i, f in enumerate(filters) if f["name"] == harness.WASM_FILTER)
        filters.insert(at, jwt_filter)
    return cfg


REST_TOOLS = [
    {"name": "echo", "description": "Echoes what the upstream got",
     "args": [{"name": "text", "type": "string", "required": True, "position": "query"}],
     "requestTemplate": {"url": "/echo/rest", "method": "GET"}, "responseTemplate": {"body": "{{ body }}"}},
    {"name": "secret", "description": "Not for every client", "requestTemplate": {"url": "/echo/secret"},
     "responseTemplate": {"body": "{{ body }}"}},
]
UPSTREAM_AUTH = {"securitySchemes": [{"id": "up", "type": "http", "scheme": "bearer", "defaultCredential": "shared"}],
                 "defaultUpstreamSecurity": {"id": "up"}}


REST_SERVER = {
    "name": "rest", "auth": {"anonymous": False}, "policy": POLICY, "tools": REST_TOOLS, **UPSTREAM_AUTH,
    "upstream": {"cluster": "demo"},
    "prompts": [{"name": "greeting", "messages": [{"role": "user", "text": "hi"}]},
                {"name": "internal", "messages": [{"role": "user", "text": "notes"}]}],
    "resources": [{"uri": "info://public", "name": "public", "text": "public"},
                  {"uri": "info://private", "name": "private", "text": "private"}],
}


@pytest.fixture(scope="module")
def rest():
    cfg = {**CONSUMERS, "servers": [
        REST_SERVER,
        {"name": "oauth", "auth": {"scopes": ["mcp:tools"], "oauth": {
            "authorizationServers": [ISSUER], "scopesSupported": ["mcp:tools", "mcp:admin"]}},
         "tools": REST_TOOLS[:1], "upstream": {"cluster": "demo"}},
        {"name": "open", "tools": REST_TOOLS[:1], "upstream": {"cluster": "demo"}},
    ]}
    g = harness.start_gateway(cfg, tag="consumers", plugin_format="json", envoy_base=with_jwt_authn(harness.load_envoy_yaml()))
    yield g
    g.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    backend = McpBackend("stateful", log_dir=tmp_path_factory.mktemp("consumers-backend")).start()
    consumers = copy.deepcopy(CONSUMERS)
    consumers["consumers"][0]["upstreamCredentials"] = {"proxied": "alice-proxied"}
    cfg = {**consumers, "servers": [proxied("proxied", auth={"anonymous": False}, policy=POLICY, **UPSTREAM_AUTH)]}
    g = harness.start_gateway(cfg, tag="consumers-proxy", upstream=backend, plugin_format="json",
                              envoy_base=with_jwt_authn(harness.load_envoy_yaml()))
    yield g
    g.stop()
    backend.stop()


def post(url: str, body: dict, headers: dict | None = None) -> httpx.Response:
    return httpx.post(url, json=body, headers={"Accept": ACCEPT, **(headers or {})}, timeout=10)


INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}


def test_api_keys_in_header_and_query(rest):
    url = rest.mcp_url("rest")
    missing = post(url, INIT)
    assert missing.status_code == 401, missing.text
    assert missing.json()["error"]["code"] == -32600
    wrong = post(url, INIT, {"x-api-key": "nope"})
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]["message"]
    assert post(f"{url}?x-api-key=nope", INIT).status_code == 401
    assert post(url, INIT, {"x-api-key": "key-alice"}).status_code == 200
    assert post(f"{url}?x-api-key=key-bob", INIT).status_code == 200
    # A server without `auth` admits anonymous callers, as before.
    assert post(rest.mcp_url("open"), INIT).status_code == 200


async def _session(url, headers, mode):
    async with harness.mcp_client(url, headers=headers, mode=mode) as c:
        tools = sorted(t.name for t in (await c.list_tools()).tools)
        prompts = sorted(p.name for p in (await c.list_prompts()).prompts)
        resources = sorted(str(r.uri) for r in (await c.list_resources()).resources)
        echo = (await c.call_tool("echo", {"text": "hi"})).content[0].text
        try:
            secret = (await c.call_tool("secret", {})).content[0].text
        except Exception as e:  # noqa: BLE001 - the SDK raises the JSON-RPC error
            secret = f"refused: {e}"
        try:
            internal = (await c.get_prompt("internal")).messages[0].content.text
        except Exception as e:  # noqa: BLE001
            internal = f"refused: {e}"
        try:
            private = (await c.read_resource("info://private")).contents[0].text
        except Exception as e:  # noqa: BLE001
            private = f"refused: {e}"
        return tools, prompts, resources, echo, secret, internal, private


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_rest_server_filters_and_refuses_per_consumer(rest, mode):
    url = rest.mcp_url("rest")
    tools, prompts, resources, echo, secret, internal, private = harness.run_async(
        _session, url, {"x-api-key": "key-alice"}, mode)
    assert (tools, prompts, resources) == (["echo", "secret"], ["greeting", "internal"], ["info://private", "info://public"])
    got = json.loads(echo)
    # The API key never reaches the upstream; alice's own upstream credential replaces the shared one.
    assert "x-api-key" not in got["headers"] and "key-alice" not in json.dumps(got)
    assert got["headers"]["authorization"] == "Bearer alice-upstream"
    assert "secret" in secret and internal == "notes" and private == "private"

    tools, prompts, resources, echo, secret, internal, private = harness.run_async(
        _session, f"{url}?x-api-key=key-bob", None, mode)
    assert (tools, prompts, resources) == (["echo"], ["greeting"], ["info://public"])
    got = json.loads(echo)
    assert got["headers"]["authorization"] == "Bearer shared"  # bob has no credential of his own
    assert "key-bob" not in json.dumps(got)
    assert secret.startswith("refused") and "consumer 'bob' may not use tool 'secret'" in secret
    assert internal.startswith("refused") and "prompt 'internal'" in internal
    assert private.startswith("refused") and "resource 'info://private'" in private


def test_jwt_authn_identities_and_the_oauth_challenge(rest):
    url = rest.mcp_url("oauth")
    base = rest.base_url
    prm_url = f"{base}/.well-known/oauth-protected-resource/mcp-servers/oauth"
    doc = httpx.get(prm_url, timeout=10)
    assert doc.status_code == 200, doc.text
    resource = f"{base}/mcp-servers/oauth"
    assert doc.json() == {"resource": resource, "authorization_servers": [ISSUER], "bearer_methods_supported": ["header"],
                          "resource_name": "oauth", "scopes_supported": ["mcp:tools", "mcp:admin"]}
    # No token: 401 with the RFC 9728 challenge.
    r = post(url, INIT)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == f'Bearer resource_metadata="{prm_url}", scope="mcp:tools"'
    # A token Envoy cannot verify is no identity.
    forged = token({"sub": "mallory", "aud": resource, "scope": "mcp:tools"}, key=OTHER)
    assert post(url, INIT, {"authorization": f"Bearer {forged}"}).status_code == 401
    # The wrong audience (RFC 8707): 401 invalid_token.
    r = post(url, INIT, {"authorization": f"Bearer {token({'sub': 'carol', 'aud': 'https://elsewhere', 'scope': 'mcp:tools'})}"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"], r.text
    # A missing scope: 403 insufficient_scope.
    r = post(url, INIT, {"authorization": f"Bearer {token({'sub': 'carol', 'aud': [resource], 'scope': 'other'})}"})
    assert r.status_code == 403 and 'error="insufficient_scope"' in r.headers["www-authenticate"], r.text
    # The right token, through the SDK's client.
    good = token({"sub": "carol", "aud": [resource, "x"], "scope": "mcp:tools openid"})

    async def go():
        async with harness.mcp_client(url, headers={"authorization": f"Bearer {good}"}) as c:
            tools = [t.name for t in (await c.list_tools()).tools]
            return tools, json.loads((await c.call_tool("echo", {"text": "t"})).content[0].text)

    tools, got = harness.run_async(go)
    assert tools == ["echo"]
    assert "authorization" not in got["headers"], "the bearer token never goes upstream"


def test_jwt_consumers_meet_the_policy_of_their_consumer(rest):
    # A token whose sub is a configured consumer gets that consumer's rules; a scope can grant rules too.
    url = rest.mcp_url("rest")

    async def tools_of(claims):
        async with harness.mcp_client(url, headers={"authorization": f"Bearer {token(claims)}"}) as c:
            return sorted(t.name for t in (await c.list_tools()).tools)

    assert harness.run_async(tools_of, {"sub": "alice"}) == ["echo", "secret"]
    assert harness.run_async(tools_of, {"sub": "dave", "scp": ["mcp:tools"]}) == ["echo"]
    assert harness.run_async(tools_of, {"sub": "dave"}) == []


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_proxied_server_filters_and_refuses_per_consumer(proxy, mode):
    url = proxy.mcp_url("proxied")
    assert post(url, INIT).status_code == 401
    assert post(url, INIT, {"x-api-key": "wrong"}).status_code == 401

    async def go(headers):
        async with harness.mcp_client(url, headers=headers, mode=mode) as c:
            tools = sorted(t.name for t in (await c.list_tools()).tools)
            prompts = sorted(p.name for p in (await c.list_prompts()).prompts)
            resources = sorted(str(r.uri) for r in (await c.list_resources()).resources)
            refused = []
            for call in (lambda: c.call_tool("secret", {}), lambda: c.get_prompt("internal"),
                         lambda: c.read_resource("info://private")):
                try:
                    await call()
                    refused.append(None)
                except Exception as e:  # noqa: BLE001
                    refused.append(str(e))
            who = (await c.call_tool("whoami", {})).content[0].text if "whoami" in tools else None
            return tools, prompts, resources, refused, who

    tools, prompts, resources, refused, who = harness.run_async(go, {"x-api-key": "key-alice"})
    assert tools == ["ask", "echo", "secret", "steps", "whoami"]
    assert (prompts, resources) == (["greeting", "internal"], ["info://private", "info://public"])
    assert refused == [None, None, None]
    # Alice's own upstream credential, and nothing of the client's (its API key) goes on.
    assert who == "authorization='Bearer alice-proxied' cookie=''"

    tools, prompts, resources, refused, who = harness.run_async(go, {"x-api-key": "key-bob"})
    assert (tools, prompts, resources) == (["echo"], ["greeting"], ["info://public"])
    assert all(r and "consumer 'bob' may not use" in r for r in refused), refused


def test_proxied_server_takes_query_keys_and_tokens(proxy):
    url = proxy.mcp_url("proxied")

    async def go(u, headers):
        async with harness.mcp_client(u, headers=headers) as c:
            return (await c.call_tool("whoami", {})).content[0].text

    alice = "authorization='Bearer alice-proxied' cookie=''"
    assert harness.run_async(go, f"{url}?x-api-key=key-alice", None) == alice
    bearer = {"authorization": f"Bearer {token({'sub': 'alice'})}"}
    assert harness.run_async(go, url, bearer) == alice, "the client's token stays behind"


def test_a_higress_auth_plugins_consumer_header_names_the_consumer():
    """Higress's auth plugins (key-auth, jwt-auth, ...) put the consumer they admitted in `x-mse-consumer`
    before this plugin runs; with `consumerHeader` the gateway takes it as the caller (here the client sets it,
    standing in for such a plugin). The header never reaches the upstream."""
    server = {k: v for k, v in REST_SERVER.items() if k not in UPSTREAM_AUTH}
    cfg = {"consumerHeader": "x-mse-consumer", "servers": [server]}
    with harness.gateway(cfg, tag="consumer-header", plugin_format="json") as g:
        url = g.mcp_url("rest")
        assert post(url, INIT).status_code == 401  # no consumer: not admitted
        for mode in ("legacy", "2026-07-28"):
            tools, _, _, echo, secret, _, _ = harness.run_async(_session, url, {"x-mse-consumer": "bob"}, mode)
            assert tools == ["echo"] and "consumer 'bob' may not use tool 'secret'" in secret, (tools, secret)
            assert "x-mse-consumer" not in json.loads(echo)["headers"]
            tools, _, _, _, secret, _, _ = harness.run_async(_session, url, {"x-mse-consumer": "alice"}, mode)
            assert tools == ["echo", "secret"] and not secret.startswith("refused"), (tools, secret)


class _AuthorizationServer:
    """A minimal OAuth 2.1 authorization server for the SDK's own flow: RFC 8414 metadata, dynamic client
    registration (RFC 7591), the authorization endpoint (which approves at once and redirects with the code,
    `state` and RFC 9207 `iss`), and the token endpoint (PKCE S256 checked), which issues RS256 tokens
    signed with the key Envoy's `jwt_authn` trusts, for the `resource` the client asked for (RFC 8707)."""

    def __init__(self):
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlencode, urlparse

        self.port = harness.free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        codes: dict[str, dict] = {}
        issuer = self.issuer
        self.tokens: list[dict] = []
        tokens = self.tokens

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # noqa: ARG002 - quiet
                pass

            def _json(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                url = urlparse(self.path)
                if url.path == "/.well-known/oauth-authorization-server":
                    return self._json(200, {
                        "issuer": issuer, "authorization_endpoint": f"{issuer}/authorize",
                        "token_endpoint": f"{issuer}/token", "registration_endpoint": f"{issuer}/register",
                        "response_types_supported": ["code"], "grant_types_supported": ["authorization_code"],
                        "code_challenge_methods_supported": ["S256"], "token_endpoint_auth_methods_supported": ["none"],
                        "authorization_response_iss_parameter_supported": True, "scopes_supported": ["mcp:tools"]})
                if url.path == "/authorize":
                    q = {k: v[0] for k, v in parse_qs(url.query).items()}
                    code = f"code-{len(codes)}"
                    codes[code] = q
                    self.send_response(302)
                    self.send_header("location", f"{q['redirect_uri']}?" + urlencode(
                        {"code": code, "state": q["state"], "iss": issuer}))
                    self.end_headers()
                    return None
                return self._json(404, {"error": "not_found"})

            def do_POST(self):  # noqa: N802
                import base64 as b64
                import hashlib as hl

                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.path == "/register":
                    meta = json.loads(raw)
                    return self._json(201, {**meta, "client_id": "sdk-client", "token_endpoint_auth_method": "none"})
                if self.path == "/token":
                    form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                    asked = codes.pop(form.get("code", ""), None)
                    verifier = form.get("code_verifier", "").encode()
                    challenge = b64.urlsafe_b64encode(hl.sha256(verifier).digest()).rstrip(b"=").decode()
                    if not asked or challenge != asked.get("code_challenge"):
                        return self._json(400, {"error": "invalid_grant"})
                    claims = {"iss": issuer, "sub": "alice", "aud": form.get("resource") or asked.get("resource"),
                              "scope": asked.get("scope", "")}
                    tokens.append(claims)
                    now = int(time.time())
                    access = jwt.encode({**claims, "iat": now, "exp": now + 600}, PRIVATE, algorithm="RS256",
                                        headers={"kid": "test"})
                    return self._json(200, {"access_token": access, "token_type": "Bearer", "expires_in": 600,
                                            "scope": claims["scope"]})
                return self._json(404, {"error": "not_found"})

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


def test_the_sdks_oauth_flow_gets_a_token_and_is_admitted():
    """The Python SDK's own OAuth client: the 401 challenge, the protected-resource metadata, the
    authorization server's metadata, dynamic registration, the authorization code with PKCE, the token for
    this resource, and the request again, which Envoy's jwt_authn verifies and the plugin admits."""
    from urllib.parse import parse_qs, urlparse

    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

    auth_server = _AuthorizationServer()
    base = with_jwt_authn(harness.load_envoy_yaml())
    for listener in base["static_resources"]["listeners"]:
        for f in harness._hcm(listener)["http_filters"] if listener["name"] == "mcp" else []:
            if f["name"] == "envoy.filters.http.jwt_authn":
                f["typed_config"]["providers"]["test"]["issuer"] = auth_server.issuer
    cfg = {"jwtAuth": CONSUMERS["jwtAuth"], "servers": [
        {"name": "oauth", "auth": {"scopes": ["mcp:tools"], "oauth": {
            "authorizationServers": [auth_server.issuer], "scopesSupported": ["mcp:tools"]}},
         "tools": REST_TOOLS[:1], "upstream": {"cluster": "demo"}}]}
    redirect: dict = {}

    class Memory:
        def __init__(self):
            self.tokens = self.client = None

        async def get_tokens(self):
            return self.tokens

        async def set_tokens(self, tokens):
            self.tokens = tokens

        async def get_client_info(self):
            return self.client

        async def set_client_info(self, info):
            self.client = info

    async def on_redirect(url: str):
        r = httpx.get(url, follow_redirects=False, timeout=10)
        assert r.status_code == 302, r.text
        redirect.update({k: v[0] for k, v in parse_qs(urlparse(r.headers["location"]).query).items()})

    async def on_callback():
        return AuthorizationCodeResult(code=redirect["code"], state=redirect["state"], iss=redirect["iss"])

    try:
        with harness.gateway(cfg, tag="oauth-sdk", plugin_format="json", envoy_base=base) as g:
            url = g.mcp_url("oauth")
            provider = OAuthClientProvider(
                url, OAuthClientMetadata(redirect_uris=["http://127.0.0.1:9/callback"], scope="mcp:tools",
                                         client_name="e2e"),
                Memory(), redirect_handler=on_redirect, callback_handler=on_callback)

            async def go():
                import httpx2
                from mcp import Client
                from mcp.client.streamable_http import streamable_http_client
                from mcp.shared._httpx_utils import create_mcp_http_client

                async with create_mcp_http_client(timeout=httpx2.Timeout(15), auth=provider) as http:
                    async with Client(streamable_http_client(url, http_client=http), mode="legacy", cache=None,
                                      read_timeout_seconds=15) as c:
                        tools = [t.name for t in (await c.list_tools()).tools]
                        return tools, json.loads((await c.call_tool("echo", {"text": "t"})).content[0].text)

            tools, got = harness.run_async(go)
            assert tools == ["echo"]
            assert auth_server.tokens and auth_server.tokens[0]["aud"] == url, auth_server.tokens
            assert "authorization" not in got["headers"], "the bearer token never goes upstream"
    finally:
        auth_server.stop()
