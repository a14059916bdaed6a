"""OpenAPI import: documents converted to MCP tools, in the plugin config and with the CLI.

Everything runs against e2e/petstore_upstream.py, a real HTTP server that records every request it
receives (GET /__requests), so each test asserts both the tool result and where every argument
reached the upstream (path, query, header, cookie, body).

  a. in-config import (`servers[].openapi`) of e2e/openapi/petstore_api.yaml: tools/list (names,
     schemas, annotations), every tool called; overrides, toolPrefix, include/exclude.
  b. the CLI (`mcp-gateway openapi ...`, `mcp-gateway check ...`): --check summary, stable output,
     its output loaded unchanged (but for the filled-in credential) into Envoy; the apiKey credential
     is added by the gateway.
  c. every reference document (src/openapi/testdata/, copied from the team reference; another directory
     with E2E_OPENAPI_REFERENCE_DIR, skipped when absent):
     100% of the operations become tools, and every tool reaches a generic recording endpoint with
     each argument in its place.
  d. broken documents: Envoy refuses the config with a located message; the CLI exits 1 likewise.

The Envoy config is envoy/envoy.yaml as rendered by the harness, plus a cluster `petstore` that
points at the petstore upstream (the `demo` cluster points there too, for the readiness check).
Needs the wasm (`make build`) and the CLI (`cargo build --release --bin mcp-gateway`; the path can
be overridden with MCP_GATEWAY_CLI).
"""

from __future__ import annotations

import base64
import copy
import email.parser
import email.policy
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

import httpx
import pytest
import yaml
from mcp.shared.exceptions import MCPError

import harness
from harness import list_all_tools, mcp_client, run_async

OPENAPI_DIR = harness.E2E_DIR / "openapi"
PETSTORE_DOC = OPENAPI_DIR / "petstore_api.yaml"
# The reference documents (a committed copy of the team's reference/openapi, also used by the unit tests).
REFERENCE_DIR = Path(
    os.environ.get("E2E_OPENAPI_REFERENCE_DIR") or harness.ROOT / "src" / "openapi" / "testdata"
).resolve()
CLI = Path(os.environ.get("MCP_GATEWAY_CLI") or harness.ROOT / "target" / "release" / "mcp-gateway")

CLUSTER = "petstore"
API_KEY = "e2e-petstore-key"  # what petstore_upstream.py accepts on /v1/store/inventory

# Headers of the MCP client itself: none of them may reach the upstream.
CLIENT_HEADERS = {
    "Authorization": "Bearer client-secret-token",
    "Cookie": "client_session=leak-me-not",
    "X-API-Key": "client-key-leak-me-not",
    "X-Request-Id": "client-request-id-leak-me-not",
}

# The operations of petstore_api.yaml that have an operationId and become tools.
PET_TOOLS = {"listPets", "createPet", "getPet", "updatePet", "patchPet", "deletePet", "uploadPhoto", "getInventory"}
# Plus GET /store/status, which has no operationId (its tool name is the converter's choice), and
# PUT /pets/{petId}/records (replaceRecordsXml), a required XML body, which must be skipped.
PET_TOOL_COUNT = len(PET_TOOLS) + 1


# --- the petstore upstream ---------------------------------------------------------------------


class PetstoreUpstream(harness.DemoUpstream):
    """e2e/petstore_upstream.py in a subprocess, with its request log."""

    SCRIPT = "petstore_upstream.py"
    NAME = "petstore upstream"

    def __init__(self, log_dir: Path | None = None, port: int | None = None):
        super().__init__(port=port, log_dir=log_dir)
        self.http = httpx.Client(timeout=5.0)

    def arguments(self) -> list[str]:
        return ["--port", str(self.port), "--api-key", API_KEY]

    def stop(self) -> None:
        super().stop()
        self.http.close()

    def reset(self) -> None:
        """Initial pets again, no recorded requests."""
        self.http.post(f"{self.url}/__reset").raise_for_status()

    def clear(self) -> None:
        self.http.delete(f"{self.url}/__requests").raise_for_status()

    def answer(self, body) -> None:
        """What /any/ answers from now on (None: `{}` again)."""
        self.http.post(f"{self.url}/__answer", json=body).raise_for_status()

    def requests(self) -> list[dict]:
        r = self.http.get(f"{self.url}/__requests")
        r.raise_for_status()
        return r.json()["requests"]

    def only_request(self) -> dict:
        recs = self.requests()
        assert len(recs) == 1, f"expected exactly one upstream request, got {len(recs)}: {recs}"
        return recs[0]


# --- Envoy -------------------------------------------------------------------------------------


def add_cluster(envoy_cfg: dict, name: str, port: int) -> None:
    """A copy of the `demo` cluster named `name`, pointing at 127.0.0.1:port."""
    clusters = envoy_cfg["static_resources"]["clusters"]
    demo = next(c for c in clusters if c["name"] == "demo")
    c = copy.deepcopy(demo)
    c["name"] = name
    c["load_assignment"]["cluster_name"] = name
    for group in c["load_assignment"]["endpoints"]:
        for ep in group["lb_endpoints"]:
            ep["endpoint"]["address"]["socket_address"].update({"address": "127.0.0.1", "port_value": port})
    clusters[:] = [x for x in clusters if x["name"] != name] + [c]


def make_envoy(plugin_config: dict | str, tag: str, upstream_port: int, run_dir: Path) -> harness.Envoy:
    """An Envoy (not started) whose clusters `demo` and `petstore` point at upstream_port."""
    envoy = harness.Envoy(
        plugin_config, upstream_port=upstream_port, run_dir=run_dir, name=f"envoy-{tag}", wasm=harness.wasm_path()
    )
    add_cluster(envoy.config, CLUSTER, upstream_port)
    return envoy


@dataclass
class Gw:
    envoy: harness.Envoy
    upstream: PetstoreUpstream
    config: dict | str
    extra: dict = field(default_factory=dict)

    def url(self, server: str) -> str:
        return f"{self.envoy.base_url}/mcp-servers/{server}"


def start_gw(plugin_config: dict | str, tag: str, upstream: PetstoreUpstream, run_dir: Path) -> Gw:
    envoy = make_envoy(plugin_config, tag, upstream.port, run_dir)
    (run_dir / f"plugin-{tag}.yaml").write_text(harness.plugin_config_text(plugin_config))
    envoy.start()
    return Gw(envoy=envoy, upstream=upstream, config=plugin_config)


def refused_log(plugin_config: dict | str, tag: str, run_dir: Path) -> str:
    """Start Envoy with a config the plugin must refuse; returns the Envoy log."""
    envoy = make_envoy(plugin_config, tag, harness.unused_port(), run_dir)
    with pytest.raises(harness.HarnessError, match="exited"):
        envoy.start(timeout=30)
    return envoy.log_path.read_text(errors="replace")


# --- MCP helpers -------------------------------------------------------------------------------


def list_tools(url: str) -> dict:
    async def go():
        async with mcp_client(url, headers=CLIENT_HEADERS) as c:
            tools, _ = await list_all_tools(c)
            return tools

    tools = run_async(go)
    names = [t.name for t in tools]
    assert len(names) == len(set(names)), f"duplicate tool names: {names}"
    return {t.name: t for t in tools}


def call(url: str, tool: str, args: dict | None = None, headers: dict | None = None):
    async def go():
        async with mcp_client(url, headers=CLIENT_HEADERS if headers is None else headers) as c:
            return await c.call_tool(tool, args or {})

    return run_async(go)


def text_of(result) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


def ok(result):
    assert not result.is_error, f"the call failed: {text_of(result)!r}"
    return result


def assert_no_client_leak(rec: dict) -> None:
    """Nothing the MCP client sent in its own headers reached the upstream."""
    dumped = json.dumps(rec)
    assert "leak-me-not" not in dumped and "client-secret-token" not in dumped, rec["headers"]
    assert "authorization" not in rec["headers"], rec["headers"]
    assert "client_session" not in rec["cookies"], rec["headers"]


def wire(v) -> str:
    """A scalar as it appears in a URL, header or form."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def schema_props(schema: dict | None) -> dict:
    return (schema or {}).get("properties") or {}


def required_of(schema: dict | None) -> set:
    return set((schema or {}).get("required") or [])


def run_cli(*args: str | Path, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(CLI), *map(str, args)], capture_output=True, text=True, timeout=timeout, input=input, cwd=harness.ROOT
    )


def require_cli() -> None:
    if not (CLI.is_file() and os.access(CLI, os.X_OK)):
        pytest.fail(
            f"the CLI is not built: {CLI} is missing. Build it with `cargo build --release --bin mcp-gateway` "
            "(or point MCP_GATEWAY_CLI at it)."
        )


# --- module fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir() -> Path:
    d = harness.new_run_dir("openapi")
    yield d
    sys.stderr.write(f"\n[e2e] logs of the OpenAPI tests: {d}\n")


@pytest.fixture(scope="module")
def upstream(run_dir):
    u = PetstoreUpstream(log_dir=run_dir).start()
    yield u
    u.stop()


@pytest.fixture(scope="module")
def pet_doc() -> dict:
    with open(PETSTORE_DOC) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def server_url(upstream) -> str:
    return f"{upstream.url}/v1"


@pytest.fixture(scope="module")
def pet_gw(upstream, pet_doc, server_url, run_dir):
    """Envoy with one server, `petstore`: the in-config import of petstore_api.yaml."""
    cfg = {
        "servers": [
            {
                "name": "petstore",
                "upstream": {"cluster": CLUSTER},
                "openapi": {"document": pet_doc, "serverUrl": server_url},
            }
        ]
    }
    gw = start_gw(cfg, "openapi-inconfig", upstream, run_dir)
    yield gw
    gw.envoy.stop()


@pytest.fixture(scope="module")
def pet_tools(pet_gw) -> dict:
    return list_tools(pet_gw.url("petstore"))


@pytest.fixture(scope="module")
def status_tool(pet_tools) -> str:
    """The name the converter gave GET /store/status (it has no operationId)."""
    others = sorted(set(pet_tools) - PET_TOOLS)
    assert len(others) == 1, f"expected one tool besides {sorted(PET_TOOLS)}, got {others}"
    return others[0]


@pytest.fixture
def pets(pet_gw):
    """The petstore server, with the upstream's pets and recorded requests reset."""
    pet_gw.upstream.reset()
    return pet_gw


# === a. in-config import ========================================================================


def test_inconfig_one_tool_per_supported_operation(pet_tools, status_tool):
    assert PET_TOOLS <= set(pet_tools), sorted(pet_tools)
    assert len(pet_tools) == PET_TOOL_COUNT, sorted(pet_tools)
    assert "replaceRecordsXml" not in pet_tools, "the operation with a required XML body must be skipped"
    assert "status" in status_tool.lower(), status_tool
    assert re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", status_tool), status_tool


def test_inconfig_skipped_operation_is_logged(pet_gw):
    # Envoy logs at warn (the harness default) or more verbose: the plugin's warning is there.
    if pet_gw.envoy.log_level not in ("warn", "warning", "info", "debug", "trace"):
        pytest.skip(f"Envoy's log level {pet_gw.envoy.log_level} hides warnings")
    log = pet_gw.envoy.log_text()
    lines = [line for line in log.splitlines() if "skipped" in line and "/pets/{petId}/records" in line]
    assert lines, "no warning about the skipped XML operation in the Envoy log"
    assert "'petstore'" in lines[0] and "PUT" in lines[0] and "application/xml" in lines[0], lines[0]


def test_inconfig_schemas_have_no_refs(pet_tools):
    for name, t in pet_tools.items():
        assert t.input_schema.get("type") == "object", (name, t.input_schema)
        assert "$ref" not in json.dumps(t.input_schema), (name, t.input_schema)
        assert "$ref" not in json.dumps(t.output_schema or {}), (name, t.output_schema)


def test_inconfig_list_pets_schema(pet_tools):
    s = pet_tools["listPets"].input_schema
    props = schema_props(s)
    assert set(props) == {"limit", "tag", "fields", "X-Request-Id"}, props
    assert props["limit"]["type"] == "integer" and props["limit"].get("maximum") == 100, props["limit"]
    assert props["tag"]["type"] == "array" and props["tag"]["items"]["type"] == "string", props["tag"]
    assert props["X-Request-Id"]["type"] == "string", props["X-Request-Id"]
    assert "How many pets" in props["limit"].get("description", ""), props["limit"]
    assert not required_of(s), s


def test_inconfig_create_pet_schema(pet_tools):
    s = pet_tools["createPet"].input_schema
    props = schema_props(s)
    assert set(props) == {"name", "tag", "age", "weight", "vaccinated", "nicknames", "owner", "X-Request-Id"}, props
    assert required_of(s) == {"name"}, s
    assert props["age"]["type"] == "integer" and props["weight"]["type"] == "number", props
    assert props["vaccinated"]["type"] == "boolean", props
    assert props["nicknames"]["type"] == "array" and props["nicknames"]["items"]["type"] == "string", props
    owner = props["owner"]
    assert owner["type"] == "object" and set(schema_props(owner)) == {"name", "email"}, owner
    assert required_of(owner) == {"name"}, owner


def test_inconfig_path_cookie_and_body_schemas(pet_tools):
    get = pet_tools["getPet"].input_schema
    assert set(schema_props(get)) == {"petId", "locale"}, get
    assert required_of(get) == {"petId"}, get
    assert schema_props(get)["locale"].get("enum") == ["en", "fr", "de"], get

    put = pet_tools["updatePet"].input_schema
    assert set(schema_props(put)) == {"petId", "name", "tag", "age", "weight", "vaccinated", "nicknames", "owner"}, put
    assert required_of(put) == {"petId", "name"}, put

    patch = pet_tools["patchPet"].input_schema
    assert set(schema_props(patch)) == {"petId", "tag", "age", "vaccinated"}, patch
    assert required_of(patch) == {"petId"}, patch

    delete = pet_tools["deletePet"].input_schema
    assert set(schema_props(delete)) == {"petId"} and required_of(delete) == {"petId"}, delete


def test_inconfig_secured_tool_has_no_credential_argument(pet_tools):
    s = pet_tools["getInventory"].input_schema
    assert not schema_props(s), f"the API key is the gateway's business, not an argument: {s}"


def test_inconfig_output_schemas(pet_tools, status_tool):
    pet_out = {"id", "name", "tag", "age", "weight", "vaccinated", "nicknames", "owner"}
    for name in ("createPet", "getPet", "updatePet", "patchPet"):
        o = pet_tools[name].output_schema
        assert o and o.get("type") == "object", (name, o)
        assert set(schema_props(o)) == pet_out and required_of(o) == {"id", "name"}, (name, o)
    o = pet_tools["listPets"].output_schema
    assert o and set(schema_props(o)) == {"items", "total"}, o
    assert schema_props(o)["items"]["items"]["type"] == "object", o
    o = pet_tools["getInventory"].output_schema
    assert o and set(schema_props(o)) == {"counts"}, o
    o = pet_tools[status_tool].output_schema
    assert o and required_of(o) == {"open"}, o
    assert pet_tools["deletePet"].output_schema is None, "a 204 without content has no outputSchema"


def test_inconfig_annotations(pet_tools, status_tool):
    for name in ("listPets", "getPet", "getInventory", status_tool):
        a = pet_tools[name].annotations
        assert a is not None and a.read_only_hint is True, (name, a)
        assert a.destructive_hint is not True, (name, a)
    a = pet_tools["deletePet"].annotations
    assert a is not None and a.destructive_hint is True and a.read_only_hint is not True, a
    for name in ("createPet", "updatePet", "patchPet"):
        a = pet_tools[name].annotations
        assert a is None or a.read_only_hint is not True, (name, a)


def test_inconfig_title_and_description(pet_tools):
    t = pet_tools["listPets"]
    assert t.title == "List pets", t
    assert "Lists pets, optionally filtered by tags." in (t.description or ""), t
    assert pet_tools["getInventory"].title == "Inventory"


# --- calls -------------------------------------------------------------------------------------


def test_call_list_pets_query_integer_array_and_header(pets):
    args = {"limit": 2, "tag": ["cat", "dog"], "X-Request-Id": "req-42"}
    result = ok(call(pets.url("petstore"), "listPets", args))
    rec = pets.upstream.only_request()
    assert rec["method"] == "GET" and rec["path"] == "/v1/pets", rec
    assert rec["args"] == {"limit": ["2"], "tag": ["cat", "dog"]}, rec["query"]
    assert re.search(r"(^|&)tag=cat&tag=dog(&|$)", rec["query"]), f"array not sent as repeated tag=: {rec['query']}"
    assert rec["headers"].get("x-request-id") == "req-42", rec["headers"]
    assert rec["body"] == "", rec
    assert_no_client_leak(rec)
    sc = result.structured_content
    assert sc["total"] == 3 and [p["name"] for p in sc["items"]] == ["Rex", "Tom"], sc
    assert json.loads(text_of(result)) == sc


def test_call_list_pets_array_without_explode_is_one_value(pets):
    ok(call(pets.url("petstore"), "listPets", {"fields": ["name", "tag"], "tag": ["fish"]}))
    rec = pets.upstream.only_request()
    assert rec["args"] == {"fields": ["name,tag"], "tag": ["fish"]}, rec["query"]
    assert re.search(r"(^|&)fields=name(,|%2C)tag(&|$)", rec["query"]), rec["query"]


def test_call_list_pets_coerces_and_leaves_out_absent_args(pets):
    result = ok(call(pets.url("petstore"), "listPets", {"limit": "1"}))
    rec = pets.upstream.only_request()
    assert rec["args"] == {"limit": ["1"]}, rec["query"]
    assert "x-request-id" not in rec["headers"], "an absent header argument is not sent (the client's is not either)"
    assert_no_client_leak(rec)
    assert result.structured_content["total"] == 4 and len(result.structured_content["items"]) == 1


def test_call_list_pets_schema_violation_stays_in_the_gateway(pets):
    result = call(pets.url("petstore"), "listPets", {"limit": 500})
    assert result.is_error is True, result
    assert "limit" in text_of(result), text_of(result)
    assert pets.upstream.requests() == [], "an invalid call must not reach the upstream"


def test_call_get_pet_path_param_percent_encoded_and_cookie(pets):
    result = ok(call(pets.url("petstore"), "getPet", {"petId": "Mr Whiskers/2", "locale": "fr"}))
    rec = pets.upstream.only_request()
    assert rec["method"] == "GET", rec
    assert rec["path"] == "/v1/pets/Mr%20Whiskers%2F2", f"path param not percent-encoded: {rec['path']}"
    assert rec["query"] == "", rec
    assert rec["cookies"] == {"locale": "fr"}, rec["headers"]
    assert rec["headers"].get("cookie") == "locale=fr", rec["headers"]
    assert_no_client_leak(rec)
    assert result.structured_content == {
        "id": "Mr Whiskers/2", "name": "Mr Whiskers", "tag": "cat", "nicknames": ["Whisky"],
    }, result.structured_content


NASTY = "a b/c?d&e=f#g%h+i;j,k ü✓"


def test_call_nasty_values_are_encoded_in_path_query_and_cookie(pets):
    result = call(pets.url("petstore"), "getPet", {"petId": NASTY})
    assert result.is_error is True and "404" in text_of(result), "no such pet"
    rec = pets.upstream.only_request()
    segment = rec["path"][len("/v1/pets/"):]
    assert rec["path"].startswith("/v1/pets/") and unquote(segment) == NASTY, rec["path"]
    assert not set(segment) & set("/?#; ,&=ü✓"), f"not percent-encoded: {segment!r}"
    assert rec["query"] == "", rec["target"]

    pets.upstream.clear()
    ok(call(pets.url("petstore"), "listPets", {"tag": [NASTY, "x"]}))
    rec = pets.upstream.only_request()
    assert rec["args"] == {"tag": [NASTY, "x"]}, rec["query"]
    assert rec["query"].count("&") == 1 and "#" not in rec["query"], rec["query"]


def test_call_cookie_value_cannot_add_cookies(pets):
    """The enum keeps odd values out of `locale`; a schema-valid call still sends exactly one cookie."""
    result = call(pets.url("petstore"), "getPet", {"petId": "1", "locale": "en; admin=1"})
    assert result.is_error is True and "locale" in text_of(result), result
    assert pets.upstream.requests() == []


def test_call_get_pet_unknown_is_tool_error(pets):
    result = call(pets.url("petstore"), "getPet", {"petId": "nope"})
    assert result.is_error is True, result
    assert "404" in text_of(result), text_of(result)
    assert pets.upstream.only_request()["path"] == "/v1/pets/nope"


def test_call_get_pet_missing_path_param(pets):
    result = call(pets.url("petstore"), "getPet", {})
    assert result.is_error is True and "petId" in text_of(result), result
    assert pets.upstream.requests() == []


def test_call_create_pet_json_body(pets):
    body = {
        "name": "Fluffy", "tag": "cat", "age": 2, "weight": 4.5, "vaccinated": True,
        "nicknames": ["Fluff", "F"], "owner": {"name": "Ada", "email": "ada@example.com"},
    }
    result = ok(call(pets.url("petstore"), "createPet", {**body, "X-Request-Id": "r-1"}))
    rec = pets.upstream.only_request()
    assert rec["method"] == "POST" and rec["path"] == "/v1/pets" and rec["query"] == "", rec
    assert rec["headers"].get("content-type", "").startswith("application/json"), rec["headers"]
    assert rec["json"] == body, rec["body"]
    assert type(rec["json"]["age"]) is int and type(rec["json"]["weight"]) is float, rec["body"]
    assert rec["json"]["vaccinated"] is True, rec["body"]
    assert rec["headers"].get("x-request-id") == "r-1", rec["headers"]
    assert_no_client_leak(rec)
    assert result.structured_content == {"id": "101", **body}, result.structured_content


def test_call_create_pet_coerces_body_types(pets):
    args = {"name": "Coerced", "age": "4", "vaccinated": "true", "weight": "2.5"}
    ok(call(pets.url("petstore"), "createPet", args))
    rec = pets.upstream.only_request()
    assert rec["json"] == {"name": "Coerced", "age": 4, "vaccinated": True, "weight": 2.5}, rec["body"]


def test_call_create_pet_requires_name(pets):
    result = call(pets.url("petstore"), "createPet", {"tag": "x"})
    assert result.is_error is True and "name" in text_of(result), result
    assert pets.upstream.requests() == []


def test_call_undeclared_arguments_are_refused_as_for_handwritten_tools(pets, pet_tools):
    """One rule for imported and hand-written tools: an argument the operation does not declare is
    refused and named, and nothing is sent (it used to reach the JSON body)."""
    assert pet_tools["createPet"].input_schema.get("additionalProperties") is False
    result = call(pets.url("petstore"), "createPet", {"name": "Rex", "admin": True})
    assert result.is_error is True, result
    assert "`admin`: is not an accepted argument (it accepts: " in text_of(result), text_of(result)
    assert pets.upstream.requests() == []


def test_call_update_pet_put(pets):
    result = ok(call(pets.url("petstore"), "updatePet", {"petId": "2", "name": "Tommy", "tag": "cat", "age": 6}))
    rec = pets.upstream.only_request()
    assert rec["method"] == "PUT" and rec["path"] == "/v1/pets/2", rec
    assert rec["json"] == {"name": "Tommy", "tag": "cat", "age": 6}, "the path argument stays out of the body"
    assert_no_client_leak(rec)
    assert result.structured_content == {"id": "2", "name": "Tommy", "tag": "cat", "age": 6}


def test_call_patch_pet(pets):
    result = ok(call(pets.url("petstore"), "patchPet", {"petId": "1", "age": 4, "vaccinated": False}))
    rec = pets.upstream.only_request()
    assert rec["method"] == "PATCH" and rec["path"] == "/v1/pets/1", rec
    assert rec["json"] == {"age": 4, "vaccinated": False}, rec["body"]
    assert result.structured_content == {"id": "1", "name": "Rex", "tag": "dog", "age": 4, "vaccinated": False}


def test_call_delete_pet(pets):
    url = pets.url("petstore")
    ok(call(url, "deletePet", {"petId": "3"}))
    rec = pets.upstream.only_request()
    assert rec["method"] == "DELETE" and rec["path"] == "/v1/pets/3" and rec["body"] == "", rec
    assert_no_client_leak(rec)
    assert call(url, "getPet", {"petId": "3"}).is_error is True, "the pet is gone"


def multipart_parts(rec: dict) -> list[tuple[str, str | None, str | None, bytes]]:
    """(name, filename, content type, bytes) of each part of a recorded multipart/form-data body."""
    ctype = rec["headers"].get("content-type", "")
    assert ctype.startswith("multipart/form-data; boundary="), rec["headers"]
    raw = f"Content-Type: {ctype}\r\n\r\n".encode() + base64.b64decode(rec["body_base64"])
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert msg.is_multipart() and not msg.defects, msg.defects
    return [(part.get_param("name", header="content-disposition"), part.get_filename(),
             part.get("Content-Type") and part.get_content_type(), part.get_payload(decode=True))
            for part in msg.iter_parts()]


def test_call_upload_photo_multipart(pets, pet_tools):
    schema = pet_tools["uploadPhoto"].input_schema
    assert schema["properties"]["file"]["properties"]["content"]["contentEncoding"] == "base64", schema
    photo = bytes(range(256)) + b"\r\n--not-a-boundary\r\n"
    args = {"petId": "Mr Whiskers/2", "caption": "Asleep, again",
            "file": {"content": base64.b64encode(photo).decode(), "filename": "nap.jpg", "contentType": "image/jpeg"}}
    ok(call(pets.url("petstore"), "uploadPhoto", args))
    rec = pets.upstream.only_request()
    assert (rec["method"], rec["path"]) == ("POST", "/v1/pets/Mr%20Whiskers%2F2/photo"), rec
    parts = sorted(multipart_parts(rec), key=lambda p: p[0])
    assert parts == [("caption", None, None, b"Asleep, again"), ("file", "nap.jpg", "image/jpeg", photo)], parts
    assert_no_client_leak(rec)


def test_call_operation_without_operation_id(pets, status_tool):
    result = ok(call(pets.url("petstore"), status_tool, {}))
    rec = pets.upstream.only_request()
    assert rec["method"] == "GET" and rec["path"] == "/v1/store/status", rec
    assert result.structured_content == {"open": True, "pets": 4}


def test_call_secured_tool_without_credential_never_forwards_the_client_key(pets):
    """In-config, the scheme's credential is empty: the call fails, and the client's key is never used."""
    result = call(pets.url("petstore"), "getInventory", {})
    assert result.is_error is True, result
    for rec in pets.upstream.requests():
        assert rec["path"] == "/v1/store/inventory", rec
        assert rec["headers"].get("x-api-key", "") == "", rec["headers"]
        assert_no_client_leak(rec)


# --- overrides, prefix, include/exclude --------------------------------------------------------


@pytest.fixture(scope="module")
def variants_gw(upstream, pet_doc, server_url, run_dir):
    """Envoy with one server per variant of the in-config import."""

    def server(name: str, **openapi) -> dict:
        return {
            "name": name,
            "upstream": {"cluster": CLUSTER},
            "openapi": {"document": pet_doc, "serverUrl": server_url, **openapi},
        }

    ovr = server(
        "pet-ovr",
        overrides={
            "listPets": {"name": "list_pets", "title": "All the pets", "description": "Overridden description."},
            "deletePet": {"hide": True},
            "GET /store/status": {"name": "store_status"},
            "getPet": {"responseTemplate": {"body": "{{ response.name }} is a {{ response.tag }}"}},
            "updatePet": {"errorResponseTemplate": "update refused with {{ status }}"},
        },
    )
    ovr["tools"] = [
        {
            "name": "hello",
            "description": "A hand-written tool next to the imported ones",
            "args": [{"name": "who", "type": "string", "required": True}],
            "responseTemplate": {"body": "Hello, {{ args.who }}!"},
        }
    ]
    keyed = server("pet-keyed")
    keyed["securitySchemes"] = [
        {"id": "api_key", "type": "apiKey", "in": "header", "name": "X-API-Key", "defaultCredential": API_KEY}
    ]
    prefixed = server("pet-prefixed", toolPrefix="pet_")
    prefixed["openapi"]["document"] = PETSTORE_DOC.read_text()  # the document as a YAML string
    cfg = {
        "servers": [
            ovr,
            keyed,
            prefixed,
            server("pet-tags", include={"tags": ["store"]}),
            server("pet-paths", include={"paths": ["/store/*"]}),
            server("pet-ops", include={"operations": ["getPet", "listPets"]}),
            server("pet-exclude-ops", exclude={"operations": ["deletePet", "createPet"]}),
            server("pet-mixed", include={"tags": ["pets"]}, exclude={"paths": ["/pets/*"]}),
        ]
    }
    gw = start_gw(cfg, "openapi-variants", upstream, run_dir)
    yield gw
    gw.envoy.stop()


def test_override_rename_title_description(variants_gw, pet_tools):
    tools = list_tools(variants_gw.url("pet-ovr"))
    assert "list_pets" in tools and "listPets" not in tools, sorted(tools)
    t = tools["list_pets"]
    assert t.title == "All the pets" and t.description == "Overridden description.", t
    assert t.input_schema == pet_tools["listPets"].input_schema
    variants_gw.upstream.reset()
    result = ok(call(variants_gw.url("pet-ovr"), "list_pets", {"tag": ["fish"]}))
    rec = variants_gw.upstream.only_request()
    assert rec["path"] == "/v1/pets" and rec["args"] == {"tag": ["fish"]}, rec
    assert result.structured_content["total"] == 1


def test_override_hide(variants_gw):
    url = variants_gw.url("pet-ovr")
    tools = list_tools(url)
    assert "deletePet" not in tools, sorted(tools)
    variants_gw.upstream.reset()
    try:
        result = call(url, "deletePet", {"petId": "1"})
    except MCPError:
        pass  # unknown tool as a JSON-RPC error
    else:
        assert result.is_error is True, result
    assert variants_gw.upstream.requests() == [], "a hidden operation must not be callable"


def test_override_by_method_and_path(variants_gw, status_tool):
    url = variants_gw.url("pet-ovr")
    tools = list_tools(url)
    assert "store_status" in tools and status_tool not in tools, sorted(tools)
    variants_gw.upstream.reset()
    assert ok(call(url, "store_status")).structured_content == {"open": True, "pets": 4}
    assert variants_gw.upstream.only_request()["path"] == "/v1/store/status"


def test_override_response_templates(variants_gw):
    url = variants_gw.url("pet-ovr")
    variants_gw.upstream.reset()
    assert text_of(ok(call(url, "getPet", {"petId": "1"}))) == "Rex is a dog"
    result = call(url, "updatePet", {"petId": "404", "name": "Nobody"})
    assert result.is_error is True and text_of(result) == "update refused with 404", text_of(result)


def test_handwritten_tool_next_to_imported_ones(variants_gw):
    url = variants_gw.url("pet-ovr")
    tools = list_tools(url)
    assert "hello" in tools and len(tools) == PET_TOOL_COUNT, sorted(tools)  # +hello -deletePet
    assert text_of(ok(call(url, "hello", {"who": "pets"}))) == "Hello, pets!"


def test_tool_prefix_and_document_as_string(variants_gw, pet_tools):
    url = variants_gw.url("pet-prefixed")
    tools = list_tools(url)
    assert all(n.startswith("pet_") for n in tools), sorted(tools)
    assert {n[len("pet_"):] for n in tools} == set(pet_tools), sorted(tools)
    for name, t in tools.items():
        assert t.input_schema == pet_tools[name[len("pet_"):]].input_schema, name
    variants_gw.upstream.reset()
    ok(call(url, "pet_getPet", {"petId": "2"}))
    assert variants_gw.upstream.only_request()["path"] == "/v1/pets/2"


def test_inconfig_credential_from_a_server_security_scheme(variants_gw):
    """A scheme the server declares itself (same id) supplies the credential of the imported one."""
    variants_gw.upstream.reset()
    result = ok(call(variants_gw.url("pet-keyed"), "getInventory", {}))
    rec = variants_gw.upstream.only_request()
    assert rec["headers"].get("x-api-key") == API_KEY, rec["headers"]
    assert_no_client_leak(rec)
    assert result.structured_content == {"counts": {"dog": 1, "cat": 2, "fish": 1}}
    variants_gw.upstream.reset()
    ok(call(variants_gw.url("pet-keyed"), "getPet", {"petId": "2"}))
    assert "x-api-key" not in variants_gw.upstream.only_request()["headers"], "only secured operations get the key"


@pytest.mark.parametrize(
    "server, expected",
    [
        ("pet-tags", {"getInventory", "<status>"}),
        ("pet-paths", {"getInventory", "<status>"}),
        ("pet-ops", {"getPet", "listPets"}),
        ("pet-exclude-ops", {"listPets", "getPet", "updatePet", "patchPet", "uploadPhoto", "getInventory", "<status>"}),
        ("pet-mixed", {"listPets", "createPet"}),
    ],
)
def test_include_exclude(variants_gw, status_tool, server, expected):
    expected = {status_tool if n == "<status>" else n for n in expected}
    assert set(list_tools(variants_gw.url(server))) == expected


# --- more shapes: name clashes, non-object and form bodies, every credential placement, 3.1, 2.0 ---

EXTRAS_DOC = {
    "openapi": "3.1.0",
    "info": {"title": "Extras", "version": "1"},
    "paths": {
        "/things/{id}": {
            "put": {
                "operationId": "putThing",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "description": "the path id",
                     "schema": {"type": "string"}},
                    {"name": "id", "in": "query", "description": "the query id", "schema": {"type": "integer"}},
                    {"name": "id", "in": "header", "description": "the header id", "schema": {"type": "string"}},
                    {"name": "id", "in": "cookie", "description": "the cookie id", "schema": {"type": "string"}},
                ],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["id"],
                    "properties": {"id": {"type": "string", "description": "the body id"}, "note": {"type": "string"}},
                }}}},
                "security": [{"qkey": []}],
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/lists": {
            "post": {
                "operationId": "postList",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"type": "array", "items": {"type": "integer"}}}}},
                "security": [{"bearer": []}],
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/forms": {
            "post": {
                "operationId": "postForm",
                "requestBody": {"content": {"application/x-www-form-urlencoded": {"schema": {
                    "type": "object",
                    "properties": {"a": {"type": "string"}, "n": {"type": "integer"},
                                   "tags": {"type": "array", "items": {"type": "string"}}},
                }}}},
                "security": [{"basic": []}],
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/notes": {
            "post": {
                "operationId": "postNote",
                "requestBody": {"required": True, "content": {"text/plain": {"schema": {"type": "string"}}}},
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/vnd": {
            "post": {
                "operationId": "postVnd",
                "parameters": [
                    {"name": "X-Tags", "in": "header", "schema": {"type": "array", "items": {"type": "string"}}},
                ],
                "requestBody": {"required": True, "content": {"application/vnd.api+json": {"schema": {
                    "type": "object",
                    "properties": {"data": {"type": "object", "properties": {"k": {"type": "integer"}}}},
                }}}},
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/cookies": {
            "get": {
                "operationId": "getCookies",
                "parameters": [{"name": "theme", "in": "cookie", "schema": {"type": "string"}}],
                "security": [{"ckey": []}],
                "responses": {"200": {"description": "ok"}},
            }
        },
    },
    "components": {"securitySchemes": {
        "qkey": {"type": "apiKey", "in": "query", "name": "api_key"},
        "ckey": {"type": "apiKey", "in": "cookie", "name": "sid"},
        "bearer": {"type": "http", "scheme": "bearer"},
        "basic": {"type": "http", "scheme": "basic"},
    }},
}

EXTRAS_CREDENTIALS = [
    {"id": "qkey", "type": "apiKey", "in": "query", "name": "api_key", "defaultCredential": "qk-1"},
    {"id": "ckey", "type": "apiKey", "in": "cookie", "name": "sid", "defaultCredential": "ck-1"},
    {"id": "bearer", "type": "http", "scheme": "bearer", "defaultCredential": "tok-1"},
    {"id": "basic", "type": "http", "scheme": "basic", "defaultCredential": "user:pa ss"},
]

SWAGGER_DOC = """
swagger: '2.0'
info: {title: Swag, version: '1'}
host: example.com
basePath: /v1
schemes: [https]
securityDefinitions:
  key: {type: apiKey, in: header, name: X-Key}
paths:
  /pets/{petId}:
    get:
      operationId: getPet2
      produces: [application/json]
      parameters:
        - {name: petId, in: path, required: true, type: string}
        - {name: verbose, in: query, type: boolean}
        - {name: ids, in: query, type: array, items: {type: integer}, collectionFormat: multi}
      responses:
        '200': {description: ok, schema: {$ref: '#/definitions/Pet'}}
  /pets:
    post:
      operationId: addPet2
      consumes: [application/json]
      parameters:
        - {name: pet, in: body, required: true, schema: {$ref: '#/definitions/Pet'}}
      security: [{key: []}]
      responses:
        '200': {description: ok}
  /captions:
    post:
      operationId: caption2
      consumes: [application/x-www-form-urlencoded]
      parameters:
        - {name: caption, in: formData, type: string, required: true}
      responses:
        '200': {description: ok}
definitions:
  Pet:
    type: object
    required: [name]
    properties:
      name: {type: string}
      age: {type: integer}
"""


@pytest.fixture(scope="module")
def extras_gw(upstream, run_dir):
    cfg = {"servers": [
        {"name": "extras", "upstream": {"cluster": CLUSTER}, "securitySchemes": EXTRAS_CREDENTIALS,
         "openapi": {"document": EXTRAS_DOC, "serverUrl": f"{upstream.url}/any/extras"}},
        {"name": "swagger", "upstream": {"cluster": CLUSTER},
         "securitySchemes": [{"id": "key", "type": "apiKey", "in": "header", "name": "X-Key",
                              "defaultCredential": "sw-key"}],
         "openapi": {"document": SWAGGER_DOC, "serverUrl": f"{upstream.url}/any/swagger"}},
    ]}
    gw = start_gw(cfg, "openapi-extras", upstream, run_dir)
    yield gw
    gw.envoy.stop()


def arg_by_description(tool, description: str) -> str:
    props = schema_props(tool.input_schema)
    names = [n for n, p in props.items() if p.get("description") == description]
    assert len(names) == 1, f"no single argument described {description!r}: {props}"
    return names[0]


def test_name_clashes_get_distinct_arguments(extras_gw):
    url = extras_gw.url("extras")
    tool = list_tools(url)["putThing"]
    names = {w: arg_by_description(tool, f"the {w} id") for w in ("path", "query", "header", "cookie", "body")}
    assert len(set(names.values())) == 5, names
    assert set(schema_props(tool.input_schema)) == set(names.values()) | {"note"}, tool.input_schema
    assert {names["path"], names["body"]} <= required_of(tool.input_schema), tool.input_schema
    values = {"path": "p/1", "query": 42, "header": "h-1", "cookie": "c-1", "body": "b-1"}
    extras_gw.upstream.clear()
    ok(call(url, "putThing", {names[w]: v for w, v in values.items()} | {"note": "n"}))
    rec = extras_gw.upstream.only_request()
    assert rec["method"] == "PUT" and rec["path"] == "/any/extras/things/p%2F1", rec["target"]
    assert rec["args"] == {"id": ["42"], "api_key": ["qk-1"]}, rec["query"]
    assert rec["headers"].get("id") == "h-1", rec["headers"]
    assert rec["cookies"] == {"id": "c-1"}, rec["headers"]
    assert rec["json"] == {"id": "b-1", "note": "n"}, rec["body"]
    assert_no_client_leak(rec)


def test_non_object_json_body_is_one_argument_and_bearer_credential(extras_gw):
    url = extras_gw.url("extras")
    tool = list_tools(url)["postList"]
    assert set(schema_props(tool.input_schema)) == {"body"}, tool.input_schema
    assert schema_props(tool.input_schema)["body"]["type"] == "array", tool.input_schema
    extras_gw.upstream.clear()
    ok(call(url, "postList", {"body": [3, 1, 2]}))
    rec = extras_gw.upstream.only_request()
    assert rec["method"] == "POST" and rec["path"] == "/any/extras/lists" and rec["json"] == [3, 1, 2], rec
    assert rec["headers"].get("content-type", "").startswith("application/json"), rec["headers"]
    assert rec["headers"].get("authorization") == "Bearer tok-1", "the configured token, not the client's"
    assert "leak-me-not" not in json.dumps(rec), rec["headers"]


def test_form_body_and_basic_credential(extras_gw):
    url = extras_gw.url("extras")
    extras_gw.upstream.clear()
    ok(call(url, "postForm", {"a": "x y&z=1", "n": 3, "tags": ["p", "q"]}))
    rec = extras_gw.upstream.only_request()
    assert rec["method"] == "POST" and rec["path"] == "/any/extras/forms", rec
    assert rec["headers"].get("content-type", "").startswith("application/x-www-form-urlencoded"), rec["headers"]
    assert rec["form"] == {"a": ["x y&z=1"], "n": ["3"], "tags": ["p", "q"]}, rec["body"]
    assert rec["headers"].get("authorization") == "Basic " + base64.b64encode(b"user:pa ss").decode(), rec["headers"]
    assert rec["query"] == ""


def test_cookie_credential_joins_cookie_params(extras_gw):
    url = extras_gw.url("extras")
    extras_gw.upstream.clear()
    ok(call(url, "getCookies", {"theme": "dark"}))
    rec = extras_gw.upstream.only_request()
    assert rec["cookies"] == {"theme": "dark", "sid": "ck-1"}, rec["headers"]
    assert len([k for k, _ in rec["header_list"] if k.lower() == "cookie"]) == 1, rec["header_list"]
    assert "authorization" not in rec["headers"] and rec["query"] == "", rec


def test_text_body(extras_gw):
    url = extras_gw.url("extras")
    tool = list_tools(url)["postNote"]
    assert set(schema_props(tool.input_schema)) == {"body"}, tool.input_schema
    extras_gw.upstream.clear()
    ok(call(url, "postNote", {"body": "line 1\nlíne \"2\" {{ not a template }}"}))
    rec = extras_gw.upstream.only_request()
    assert rec["body"] == "line 1\nlíne \"2\" {{ not a template }}", rec["body"]
    assert rec["headers"].get("content-type", "").startswith("text/plain"), rec["headers"]


def test_vendor_json_body_and_array_header(extras_gw):
    url = extras_gw.url("extras")
    extras_gw.upstream.clear()
    ok(call(url, "postVnd", {"data": {"k": 5}, "X-Tags": ["a", "b"]}))
    rec = extras_gw.upstream.only_request()
    assert rec["json"] == {"data": {"k": 5}}, rec["body"]
    assert rec["headers"].get("content-type") == "application/vnd.api+json", rec["headers"]
    assert rec["headers"].get("x-tags") == "a,b", rec["headers"]


def test_credentials_never_become_arguments(extras_gw):
    for name, tool in list_tools(extras_gw.url("extras")).items():
        props = set(schema_props(tool.input_schema))
        assert not props & {"api_key", "sid", "Authorization", "authorization"}, (name, props)


def test_swagger_2_document(extras_gw):
    url = extras_gw.url("swagger")
    tools = list_tools(url)
    assert set(tools) == {"getPet2", "addPet2", "caption2"}, sorted(tools)
    assert set(schema_props(tools["getPet2"].input_schema)) == {"petId", "verbose", "ids"}
    assert set(schema_props(tools["addPet2"].input_schema)) == {"name", "age"}, tools["addPet2"].input_schema
    assert required_of(tools["addPet2"].input_schema) == {"name"}

    extras_gw.upstream.clear()
    result = call(url, "getPet2", {"petId": "a b", "verbose": True, "ids": [1, 2]})
    assert not result.is_error or "outputSchema" in text_of(result), text_of(result)
    rec = extras_gw.upstream.only_request()
    assert rec["method"] == "GET" and rec["path"] == "/any/swagger/pets/a%20b", rec["target"]
    assert rec["args"] == {"verbose": ["true"], "ids": ["1", "2"]}, rec["query"]
    assert "x-key" not in rec["headers"], rec["headers"]

    extras_gw.upstream.clear()
    ok(call(url, "addPet2", {"name": "Sw", "age": 2}))
    rec = extras_gw.upstream.only_request()
    assert rec["method"] == "POST" and rec["path"] == "/any/swagger/pets" and rec["json"] == {"name": "Sw", "age": 2}
    assert rec["headers"].get("x-key") == "sw-key", rec["headers"]

    extras_gw.upstream.clear()
    ok(call(url, "caption2", {"caption": "hi there"}))
    rec = extras_gw.upstream.only_request()
    assert rec["form"] == {"caption": ["hi there"]}, (rec["headers"].get("content-type"), rec["body"])


# === b. the CLI =================================================================================


def cli_convert(out: Path, server_url: str, *extra: str) -> subprocess.CompletedProcess:
    return run_cli(
        "openapi", PETSTORE_DOC, "--name", "petstore", "--cluster", CLUSTER, "--server-url", server_url,
        "-o", out, *extra,
    )


@pytest.fixture(scope="module")
def cli_output(server_url, run_dir) -> Path:
    require_cli()
    out = run_dir / "cli-petstore.yaml"
    r = cli_convert(out, server_url)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert out.is_file() and out.stat().st_size > 0
    return out


def fill_credential(text: str, credential: str) -> str:
    new, n = re.subn(r"(defaultCredential:\s*)(''|\"\")", lambda m: m.group(1) + credential, text)
    assert n == 1, f"expected one empty defaultCredential in the CLI output, found {n}:\n{text}"
    return new


@pytest.fixture(scope="module")
def cli_gw(cli_output, upstream, run_dir):
    text = fill_credential(cli_output.read_text(), API_KEY)
    gw = start_gw(text, "openapi-cli", upstream, run_dir)
    yield gw
    gw.envoy.stop()


def test_cli_check_reports_the_skipped_operation():
    require_cli()
    r = run_cli("openapi", PETSTORE_DOC, "--check")
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"exit {r.returncode}: {out}"
    assert re.search(r"operations:\s*10 found,\s*9 converted,\s*1 skipped", out), out
    skipped = [line for line in out.splitlines() if line.strip().startswith("skipped:")]
    assert len(skipped) == 1, out
    line = skipped[0]
    assert "PUT /pets/{petId}/records" in line and "replaceRecordsXml" in line, line
    assert "#/paths/~1pets~1{petId}~1records/put" in line, line
    assert "application/xml" in line, line


def test_cli_output_is_stable(cli_output, server_url, run_dir):
    again = run_dir / "cli-petstore-again.yaml"
    r = cli_convert(again, server_url)
    assert r.returncode == 0, r.stderr
    assert again.read_bytes() == cli_output.read_bytes(), "two runs of the CLI gave different output"


def test_cli_output_to_stdout_is_the_same_config(cli_output, server_url):
    r = run_cli("openapi", PETSTORE_DOC, "--name", "petstore", "--cluster", CLUSTER, "--server-url", server_url)
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout) == yaml.safe_load(cli_output.read_text())


def test_cli_output_json(server_url, run_dir, cli_output):
    out = run_dir / "cli-petstore.json"
    r = cli_convert(out, server_url)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text()) == yaml.safe_load(cli_output.read_text())


def test_cli_output_shape(cli_output, server_url):
    cfg = yaml.safe_load(cli_output.read_text())
    (server,) = cfg["servers"]
    assert server["name"] == "petstore" and server["upstream"]["cluster"] == CLUSTER, server
    schemes = server["securitySchemes"]
    (scheme,) = schemes
    assert scheme["id"] == "api_key" and scheme["defaultCredential"] == "", scheme
    tools = {t["name"]: t for t in server["tools"]}
    assert len(tools) == PET_TOOL_COUNT and PET_TOOLS <= set(tools), sorted(tools)
    for t in tools.values():
        assert t["requestTemplate"]["url"].startswith(server_url + "/"), t["requestTemplate"]
    assert tools["getInventory"]["requestTemplate"].get("security") == {"id": "api_key"}, tools["getInventory"]
    assert "security" not in tools["listPets"]["requestTemplate"], tools["listPets"]

    def args(tool: str) -> dict:
        return {a["name"]: a for a in tools[tool].get("args", [])}

    lp = args("listPets")
    assert {n: a["position"] for n, a in lp.items()} == {
        "limit": "query", "tag": "query", "fields": "query", "X-Request-Id": "header",
    }, lp
    assert lp["limit"]["schema"]["type"] == "integer" and lp["limit"]["schema"]["maximum"] == 100, lp["limit"]
    gp = args("getPet")
    assert {n: a["position"] for n, a in gp.items()} == {"petId": "path", "locale": "cookie"}, gp
    assert gp["petId"]["required"] is True, gp
    cp = args("createPet")
    assert cp["name"]["position"] == "body" and cp["name"]["required"] is True, cp["name"]
    assert cp["X-Request-Id"]["position"] == "header", cp
    assert tools["deletePet"]["requestTemplate"]["method"] == "DELETE"
    assert tools["deletePet"]["requestTemplate"]["url"] == server_url + "/pets/{petId}"
    assert API_KEY not in cli_output.read_text()


def test_cli_selection_flags(server_url):
    require_cli()
    base = ["openapi", PETSTORE_DOC, "--name", "p", "--cluster", CLUSTER, "--server-url", server_url]

    def names(*flags: str) -> set:
        r = run_cli(*base, *flags)
        assert r.returncode == 0, r.stderr
        return {t["name"] for t in yaml.safe_load(r.stdout)["servers"][0]["tools"]}

    assert names("--include-tag", "store") == names("--include-path", "/store/*")
    assert names("--include-tag", "store") >= {"getInventory"} and len(names("--include-tag", "store")) == 2
    assert names("--include-op", "getPet", "--include-op", "listPets") == {"getPet", "listPets"}
    assert names("--exclude-op", "deletePet", "--exclude-tag", "store") == PET_TOOLS - {"deletePet", "getInventory"}
    prefixed = names("--tool-prefix", "x_")
    assert len(prefixed) == PET_TOOL_COUNT and all(n.startswith("x_") for n in prefixed), prefixed


def test_cli_check_command_accepts_its_output(cli_output):
    r = run_cli("check", cli_output)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert str(PET_TOOL_COUNT) in r.stdout + r.stderr, r.stdout + r.stderr


def test_cli_check_command_accepts_in_config_import(pet_doc, server_url, run_dir):
    require_cli()
    path = run_dir / "inconfig-check.yaml"
    cfg = {"servers": [{"name": "petstore", "upstream": {"cluster": CLUSTER},
                        "openapi": {"document": pet_doc, "serverUrl": server_url}}]}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    r = run_cli("check", path)
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"


def test_cli_check_command_rejects_a_bad_config(run_dir):
    require_cli()
    path = run_dir / "bad-config.json"
    tool = {"name": "charge", "description": "d", "requestTemplate": {"url": "ftp://x/y"}}
    path.write_text(json.dumps({"servers": [{"name": "billing", "upstream": {"cluster": "demo"}, "tools": [tool]}]}))
    r = run_cli("check", path)
    assert r.returncode == 1, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert "server 'billing' tool 'charge' field 'requestTemplate.url'" in r.stderr, r.stderr


def test_cli_usage_errors_exit_2():
    require_cli()
    assert run_cli("openapi").returncode == 2
    assert run_cli("openapi", PETSTORE_DOC, "--no-such-flag").returncode == 2
    assert run_cli("no-such-command").returncode == 2


def test_cli_reads_the_document_from_stdin(cli_output, server_url):
    r = run_cli(
        "openapi", "-", "--name", "petstore", "--cluster", CLUSTER, "--server-url", server_url,
        input=PETSTORE_DOC.read_text(),
    )
    assert r.returncode == 0, r.stderr
    assert yaml.safe_load(r.stdout) == yaml.safe_load(cli_output.read_text())


def test_cli_config_lists_the_same_tools_as_in_config(cli_gw, pet_tools):
    tools = list_tools(cli_gw.url("petstore"))
    assert set(tools) == set(pet_tools)
    for name, t in tools.items():
        p = pet_tools[name]
        assert (t.title, t.description) == (p.title, p.description), name
        assert t.input_schema == p.input_schema, name
        assert t.output_schema == p.output_schema, name
        assert t.annotations == p.annotations, name


def test_cli_config_adds_the_api_key(cli_gw):
    """The gateway sends the configured key; the client never sent it (it sent another one)."""
    assert API_KEY not in json.dumps(CLIENT_HEADERS)
    cli_gw.upstream.reset()
    result = ok(call(cli_gw.url("petstore"), "getInventory", {}))
    rec = cli_gw.upstream.only_request()
    assert rec["method"] == "GET" and rec["path"] == "/v1/store/inventory", rec
    assert rec["headers"].get("x-api-key") == API_KEY, rec["headers"]
    assert len([k for k, _ in rec["header_list"] if k.lower() == "x-api-key"]) == 1, rec["header_list"]
    assert rec["query"] == "" and "api_key" not in rec["cookies"], rec
    assert_no_client_leak(rec)
    assert result.structured_content == {"counts": {"dog": 1, "cat": 2, "fish": 1}}


def test_cli_config_key_only_on_secured_operations(cli_gw):
    cli_gw.upstream.reset()
    ok(call(cli_gw.url("petstore"), "getPet", {"petId": "1", "locale": "en"}))
    rec = cli_gw.upstream.only_request()
    assert "x-api-key" not in rec["headers"], rec["headers"]
    assert rec["path"] == "/v1/pets/1" and rec["cookies"] == {"locale": "en"}, rec
    assert_no_client_leak(rec)


def test_cli_config_calls_like_in_config(cli_gw):
    cli_gw.upstream.reset()
    body = {"name": "Cli", "age": 1, "owner": {"name": "Bob"}}
    result = ok(call(cli_gw.url("petstore"), "createPet", {**body, "X-Request-Id": "cli"}))
    rec = cli_gw.upstream.only_request()
    assert rec["method"] == "POST" and rec["json"] == body and rec["headers"].get("x-request-id") == "cli", rec
    assert result.structured_content == {"id": "101", **body}


# === c. the reference documents =================================================================

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def reference_docs() -> list:
    if not REFERENCE_DIR.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{REFERENCE_DIR} is absent"), id="absent")]
    docs = sorted(p for p in REFERENCE_DIR.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
    if not docs:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"no documents in {REFERENCE_DIR}"), id="empty")]
    return [pytest.param(p, id=p.stem) for p in docs]


def server_name(doc: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", doc.stem)


def resolve(doc: dict, obj):
    """Follows local $refs."""
    seen = 0
    while isinstance(obj, dict) and "$ref" in obj:
        ref = obj["$ref"]
        assert ref.startswith("#/"), f"non-local $ref {ref}"
        target = doc
        for part in ref[2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        obj = target
        seen += 1
        assert seen < 50, f"$ref loop at {ref}"
    return obj


def object_properties(doc: dict, schema) -> tuple[bool, set]:
    """(is an object schema, its property names), allOf merged."""
    schema = resolve(doc, schema or {})
    props = set((schema.get("properties") or {}).keys())
    is_obj = schema.get("type") == "object" or bool(props)
    for sub in schema.get("allOf") or []:
        o, p = object_properties(doc, sub)
        is_obj = is_obj or o
        props |= p
    return is_obj, props


@dataclass
class Operation:
    method: str
    path: str
    operation_id: str | None
    params: dict  # argument name -> "path" | "query" | "header" | "cookie" | "body"
    body: str | None  # None | "json" | "form" | "other"
    body_single: bool = False  # a non-object JSON body: one argument `body`

    def __str__(self) -> str:
        return f"{self.method.upper()} {self.path}" + (f" ({self.operation_id})" if self.operation_id else "")


def operations_of(doc: dict) -> list[Operation]:
    ops = []
    for path, item in (doc.get("paths") or {}).items():
        item = resolve(doc, item)
        common = {}
        for p in item.get("parameters") or []:
            p = resolve(doc, p)
            common[(p["name"], p["in"])] = p
        for method in HTTP_METHODS:
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            params = dict(common)
            for p in op.get("parameters") or []:
                p = resolve(doc, p)
                params[(p["name"], p["in"])] = p
            where = {name: loc for (name, loc) in params}
            body = None
            single = False
            if op.get("requestBody"):
                content = resolve(doc, op["requestBody"]).get("content") or {}
                json_type = next((c for c in content if "json" in c.lower()), None)
                form_type = next((c for c in content if c.lower() == "application/x-www-form-urlencoded"), None)
                ctype = json_type or form_type
                body = "json" if json_type else "form" if form_type else "other"
                if ctype:
                    is_obj, props = object_properties(doc, (content[ctype] or {}).get("schema"))
                    if is_obj:
                        for prop in props:
                            where.setdefault(prop, "body")
                    else:
                        single = True
                        where["body"] = "body"
            ops.append(Operation(method, path, op.get("operationId"), where, body, single))
    return ops


def gen_value(name: str, schema: dict | None, depth: int = 0):
    """A value for a JSON Schema: strings v-<name>, integers 7, booleans true, enums their first value."""
    schema = schema or {}
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key) and "type" not in schema:
            return gen_value(name, schema[key][0], depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind is None and "properties" in schema:
        kind = "object"
    if kind in ("integer", "number"):
        v = 7
        if "maximum" in schema and schema["maximum"] < v:
            v = int(schema["maximum"])
        if "minimum" in schema and schema["minimum"] > v:
            v = int(schema["minimum"])
        return v
    if kind == "boolean":
        return True
    if kind == "array":
        return [gen_value(name, schema.get("items"), depth + 1)]
    if kind == "object":
        if depth > 5:
            return {}
        return {k: gen_value(k, s, depth + 1) for k, s in (schema.get("properties") or {}).items()}
    return f"v-{name}"


def gen_args(input_schema: dict) -> dict:
    return {name: gen_value(name, s) for name, s in (input_schema.get("properties") or {}).items()}


def path_regex(server_path: str, op_path: str) -> re.Pattern:
    parts = re.split(r"(\{[^}]+\})", op_path)
    return re.compile(re.escape(server_path) + "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts))


def check_request(op: Operation, server_path: str, args: dict, rec: dict) -> list[str]:
    """What is wrong with `rec` as the request of `op` called with `args` (empty: nothing)."""
    errors = []
    if rec["method"] != op.method.upper():
        errors.append(f"method {rec['method']}, expected {op.method.upper()}")
    unknown = sorted(set(args) - set(op.params))
    if unknown:
        errors.append(f"the tool has arguments the operation does not declare: {unknown}")
    expected_path = server_path + re.sub(
        r"\{([^}]+)\}", lambda m: quote(wire(args.get(m.group(1), "<missing>")), safe=""), op.path
    )
    if rec["path"] != expected_path:
        errors.append(f"path {rec['path']!r}, expected {expected_path!r}")
    query = {n: v for n, v in args.items() if op.params.get(n) == "query"}
    expected_query = {n: [wire(x) for x in v] if isinstance(v, list) else [wire(v)] for n, v in query.items()}
    if rec["args"] != expected_query:
        errors.append(f"query {rec['query']!r} parsed as {rec['args']}, expected {expected_query}")
    for n, v in args.items():
        loc = op.params.get(n)
        if loc == "header" and rec["headers"].get(n.lower()) != wire(v):
            errors.append(f"header {n}: {rec['headers'].get(n.lower())!r}, expected {wire(v)!r}")
        if loc == "cookie" and rec["cookies"].get(n) != quote(wire(v), safe=""):
            errors.append(f"cookie {n}: {rec['cookies'].get(n)!r}, expected {wire(v)!r}")
    body_args = {n: v for n, v in args.items() if op.params.get(n) == "body"}
    if op.body == "json":
        expected = body_args.get("body") if op.body_single else body_args
        if not (expected in (None, {}) and rec["body"] == "") and rec["json"] != expected:
            errors.append(f"JSON body {rec['body']!r}, expected {json.dumps(expected)}")
        if rec["body"] and not rec["headers"].get("content-type", "").startswith("application/json"):
            errors.append(f"content-type {rec['headers'].get('content-type')!r} for a JSON body")
    elif op.body == "form":
        expected = {n: [wire(x) for x in v] if isinstance(v, list) else [wire(v)] for n, v in body_args.items()}
        if (rec["form"] or {}) != expected:
            errors.append(f"form body {rec['body']!r} (content-type {rec['headers'].get('content-type')!r}), "
                          f"expected {expected}")
    elif rec["body"]:
        errors.append(f"a body was sent for an operation without one: {rec['body']!r}")
    dumped = json.dumps(rec)
    if "leak-me-not" in dumped or "client-secret-token" in dumped:
        errors.append(f"a header of the MCP client reached the upstream: {rec['headers']}")
    return errors


@pytest.fixture(scope="module")
def reference_gw(upstream, run_dir):
    """Envoy with one server per reference document, each pointing at /any/<server> upstream."""
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"{REFERENCE_DIR} is absent")
    servers = []
    for p in reference_docs():
        doc = p.values[0]
        if doc is None:
            continue
        with open(doc) as f:
            document = yaml.safe_load(f)
        servers.append({
            "name": server_name(doc),
            "upstream": {"cluster": CLUSTER},
            "openapi": {"document": document, "serverUrl": f"{upstream.url}/any/{server_name(doc)}"},
        })
    gw = start_gw({"servers": servers}, "openapi-reference", upstream, run_dir)
    yield gw
    gw.envoy.stop()


@pytest.mark.parametrize("doc_path", reference_docs())
def test_reference_document_converts_and_every_tool_reaches_the_upstream(reference_gw, doc_path):
    with open(doc_path) as f:
        doc = yaml.safe_load(f)
    ops = operations_of(doc)
    name = server_name(doc_path)
    server_path = f"/any/{name}"
    upstream = reference_gw.upstream

    async def go():
        calls = []
        async with mcp_client(reference_gw.url(name), headers=CLIENT_HEADERS) as c:
            tools, _ = await list_all_tools(c)
            for t in tools:
                args = gen_args(t.input_schema)
                upstream.clear()
                try:
                    result = await c.call_tool(t.name, args)
                except Exception as exc:  # noqa: BLE001
                    result = exc
                calls.append((t, args, result, upstream.requests()))
        return tools, calls

    tools, calls = run_async(go)
    assert len(tools) == len(ops), (
        f"{len(ops)} operations, {len(tools)} tools: {[t.name for t in tools]} for {[str(o) for o in ops]}"
    )
    errors: list[str] = []
    matched: dict[int, str] = {}
    for t, args, result, recs in calls:
        where = f"tool {t.name} {json.dumps(args)}"
        if isinstance(result, BaseException):
            errors.append(f"{where}: the call raised {result.__class__.__name__}: {result}")
        elif result.is_error and "outputSchema" not in text_of(result):
            errors.append(f"{where}: error result not about the outputSchema: {text_of(result)!r}")
        if len(recs) != 1:
            errors.append(f"{where}: {len(recs)} upstream requests: {[(r['method'], r['target']) for r in recs]}")
            continue
        rec = recs[0]
        candidates = [
            i for i, op in enumerate(ops)
            if op.method.upper() == rec["method"] and path_regex(server_path, op.path).fullmatch(rec["path"])
            and i not in matched
        ]
        if not candidates:
            errors.append(f"{where}: {rec['method']} {rec['target']} matches no (unmatched) operation")
            continue
        problems = {i: check_request(ops[i], server_path, args, rec) for i in candidates}
        best = next((i for i in candidates if not problems[i]), candidates[0])
        matched[best] = t.name
        for p in problems[best]:
            errors.append(f"{where} -> {ops[best]}: {p}")
    for i, op in enumerate(ops):
        if i not in matched:
            errors.append(f"operation {op} was not reached by any tool")
    assert not errors, "\n".join(errors)


def test_reference_callbacks_are_not_operations():
    """Sanity check of the counting above: callbacks are not operations of the document."""
    path = REFERENCE_DIR / "callback-example.yaml"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    with open(path) as f:
        assert [str(o) for o in operations_of(yaml.safe_load(f))] == ["POST /streams"]


# === d. broken documents ========================================================================


def broken_docs() -> list:
    def doc(**paths) -> dict:
        return {"openapi": "3.0.0", "info": {"title": "Broken", "version": "1"}, "paths": paths}

    missing_param = doc(**{"/pets": {"get": {
        "operationId": "listPets",
        "parameters": [{"$ref": "#/components/parameters/Missing"}],
        "responses": {"200": {"description": "ok"}},
    }}})
    missing_schema = doc(**{"/pets": {"post": {
        "operationId": "createPet",
        "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Nope"}}}},
        "responses": {"200": {"description": "ok"}},
    }}})
    paths_not_object = {"openapi": "3.0.0", "info": {"title": "Broken", "version": "1"}, "paths": ["/pets", "/users"]}
    return [
        pytest.param(missing_param, "#/paths/~1pets/get/parameters/0", "components/parameters/Missing",
                     id="missing-parameter-ref"),
        pytest.param(missing_schema, "#/paths/~1pets/post/requestBody/content/application~1json/schema",
                     "components/schemas/Nope", id="missing-schema-ref"),
        pytest.param(paths_not_object, "#/paths", None, id="paths-not-an-object"),
    ]


@pytest.mark.parametrize("document, pointer, mentions", broken_docs())
def test_broken_document_is_refused_by_envoy(document, pointer, mentions, run_dir):
    cfg = {"servers": [{"name": "broken", "upstream": {"cluster": CLUSTER},
                        "openapi": {"document": document, "serverUrl": "http://127.0.0.1:9/v1"}}]}
    log = refused_log(cfg, f"openapi-broken-{pointer.count('/')}", run_dir)
    # The pointer may name the `$ref` member itself (…/parameters/0/$ref) or the object holding it.
    located = re.compile(
        re.escape(f"invalid plugin config: server 'broken' field 'openapi.document{pointer}") + r"(/\$ref)?'"
    )
    lines = [line for line in log.splitlines() if located.search(line)]
    assert lines, f"no line matching {located.pattern} in the Envoy log:\n{log[-3000:]}"
    if mentions:
        assert mentions in lines[0], lines[0]


def _import_config(openapi: dict | None = None, **server) -> dict:
    doc = yaml.safe_load(PETSTORE_DOC.read_text())
    imp = {"document": doc, "serverUrl": "http://127.0.0.1:9/v1", **(openapi or {})}
    return {"servers": [{"name": "p", "upstream": {"cluster": CLUSTER}, "openapi": imp, **server}]}


# (config, the located part of the message). `mcp-gateway check` validates exactly as the plugin does.
BAD_IMPORTS = [
    pytest.param(_import_config({"overrides": {"nope": {"name": "x"}}}), "server 'p' field 'openapi.overrides.nope'",
                 id="override-unknown-operation"),
    pytest.param(_import_config({"overrides": {"listPets": {"nmae": "x"}}}),
                 "server 'p' field 'openapi.overrides.listPets.nmae'", id="override-typo"),
    pytest.param(_import_config({"serverURL": "http://x"}), "server 'p' field 'openapi.serverURL'", id="import-typo"),
    pytest.param(_import_config({"overrides": {"getPet": {"name": "listPets"}}}),
                 "server 'p' tool 'listPets' field 'name'", id="override-duplicate-name"),
    pytest.param(_import_config(tools=[{"name": "getPet", "description": "d", "responseTemplate": {"body": "x"}}]),
                 "server 'p' tool 'getPet' field 'name'", id="handwritten-duplicate-name"),
    pytest.param(_import_config({"document": "openapi: [unclosed"}), "server 'p' field 'openapi.document",
                 id="document-not-yaml"),
    pytest.param(_import_config({"document": 5}), "server 'p' field 'openapi.document", id="document-not-object"),
    pytest.param(_import_config({"serverUrl": "ftp://x/y"}), "server 'p' field 'openapi.serverUrl'",
                 id="server-url-not-http"),
    pytest.param(_import_config({"include": {"tags": "store"}}), "server 'p' field 'openapi.include.tags'",
                 id="include-tags-not-a-list"),
    pytest.param(_import_config({"include": {"tagz": ["store"]}}), "server 'p' field 'openapi.include.tagz'",
                 id="include-typo"),
    pytest.param(_import_config({"toolPrefix": 5}), "server 'p' field 'openapi.toolPrefix'",
                 id="tool-prefix-not-a-string"),
]


@pytest.mark.parametrize("config, located", BAD_IMPORTS)
def test_bad_import_options_are_located(config, located, run_dir, request):
    require_cli()
    path = run_dir / f"bad-import-{request.node.callspec.id}.json"
    path.write_text(json.dumps(config))
    r = run_cli("check", path)
    assert r.returncode == 1, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    assert f"invalid plugin config: {located}" in r.stderr, r.stderr


def test_bad_import_options_are_refused_by_envoy(run_dir):
    log = refused_log(_import_config({"overrides": {"nope": {"hide": True}}}), "openapi-bad-override", run_dir)
    assert "invalid plugin config: server 'p' field 'openapi.overrides.nope'" in log, log[-3000:]


@pytest.mark.parametrize("document, pointer, mentions", broken_docs())
def test_broken_document_cli_exits_1(document, pointer, mentions, run_dir):
    require_cli()
    path = run_dir / f"broken-{pointer.count('/')}.json"
    path.write_text(json.dumps(document))
    for extra in ([], ["--check"]):
        r = run_cli("openapi", path, *extra)
        assert r.returncode == 1, f"{extra}: exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
        assert re.search(re.escape(pointer) + r"(/\$ref)?(?![/\w~])", r.stderr), r.stderr
        if mentions:
            assert mentions in r.stderr, r.stderr
