"""The Higress release: `make oci`'s image, its layout, a round trip through a real registry, and the shipped
`deploy/higress/wasmplugin.yaml` running from the pulled module in the test host for Higress's ABI.

What Higress does with an `oci://` plugin URL is read from its fork of Istio's image fetcher
(higress-group/istio, pkg/wasm/imagefetcher.go): it fetches the manifest, takes the LAST layer, which must be
`application/vnd.oci.image.layer.v1.tar+gzip`, and reads the file whose base name is `plugin.wasm` out of that
tar.gz (at most 256 MiB). `higress_fetch` below does exactly that over the registry's HTTP API; it is our
reading of that Go code, not Higress. The registry is a real one (Debian's `docker-registry`, CNCF
distribution 2.8) and the image is pushed into it by a real OCI tool (`skopeo copy`), both installed by
e2e/setup.sh; missing, the test fails.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import pytest
import yaml

import harness
from harness import ACCEPT, LATEST
from wasm_host import Plugin, Replica
from wasm_host.testing import RedisServer, running

ROOT = harness.ROOT
sys.path.insert(0, str(ROOT / "scripts"))
import oci  # noqa: E402  (scripts/oci.py, what `make oci` runs)

TAG = "0.1.0"
WASMPLUGIN = ROOT / "deploy" / "higress" / "wasmplugin.yaml"
SPEC = ROOT / "deploy" / "higress" / "spec.yaml"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def higress_wasm() -> Path:
    try:
        return harness.higress_wasm_path()
    except harness.HarnessError as exc:
        pytest.fail(f"{exc} Run `make build` first (`make test` does).", pytrace=False)


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: e2e/setup.sh installs it (Debian package)", pytrace=False)
    return path


@pytest.fixture(scope="module")
def run_dir() -> Path:
    return harness.new_run_dir("oci")


@pytest.fixture(scope="module")
def image(run_dir) -> dict:
    """The image as `make oci` builds it, into this run's directory."""
    return oci.build(higress_wasm(), SPEC, ROOT / "README.md", TAG, run_dir / "oci")


class Registry:
    """CNCF distribution (Debian's docker-registry) on a loopback port, storing under the run directory."""

    def __init__(self, run_dir: Path):
        self.port = harness.free_port()
        self.dir = run_dir / "registry"
        self.dir.mkdir(exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(self.dir / "data")}},
            "http": {"addr": f"127.0.0.1:{self.port}"},
        }
        (self.dir / "config.yml").write_text(yaml.safe_dump(config))
        self.log = open(self.dir / "registry.log", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [tool("docker-registry"), "serve", str(self.dir / "config.yml")], stdout=self.log, stderr=self.log
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"{self.url}/v2/", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the registry did not start: {(self.dir / 'registry.log').read_text()}", pytrace=False)
            time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def registry(run_dir):
    r = Registry(run_dir)
    yield r
    r.stop()


def read_layout(root: Path) -> tuple[dict, dict, dict[str, bytes]]:
    """index.json, the manifest, and every blob by digest, checking each blob's digest and size."""
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((root / "index.json").read_text())
    blobs = {}
    for path in (root / "blobs" / "sha256").iterdir():
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == path.name, path
        blobs[f"sha256:{path.name}"] = data
    [entry] = index["manifests"]
    manifest = json.loads(blobs[entry["digest"]])
    assert entry["size"] == len(blobs[entry["digest"]])
    for desc in [manifest["config"], *manifest["layers"]]:
        assert len(blobs[desc["digest"]]) == desc["size"], desc
    return index, manifest, blobs


def plugin_wasm_from(layer: bytes) -> bytes:
    """What Higress's extractWasmPluginBinary does: gunzip, walk the tar, the first `*/plugin.wasm`."""
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer)), mode="r:") as tar:
        for member in tar:
            if Path(member.name).name == "plugin.wasm":
                data = tar.extractfile(member)
                assert data is not None
                return data.read()
    raise AssertionError("plugin.wasm not found in the archive")


def higress_fetch(registry: Registry, repository: str, tag: str) -> tuple[bytes, str]:
    """Higress's image fetch over the registry API: the manifest, its last layer, plugin.wasm in it."""
    accept = ", ".join([OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"])
    r = httpx.get(f"{registry.url}/v2/{repository}/manifests/{tag}", headers={"Accept": accept}, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == OCI_MANIFEST, r.headers
    digest = "sha256:" + hashlib.sha256(r.content).hexdigest()
    assert r.headers["docker-content-digest"] == digest
    manifest = r.json()
    assert manifest.get("mediaType") in (None, OCI_MANIFEST)
    last = manifest["layers"][-1]
    assert last["mediaType"] == OCI_LAYER, manifest  # else Higress refuses: "invalid media type"
    blob = httpx.get(f"{registry.url}/v2/{repository}/blobs/{last['digest']}", timeout=30, follow_redirects=True)
    assert blob.status_code == 200 and "sha256:" + hashlib.sha256(blob.content).hexdigest() == last["digest"]
    assert len(blob.content) < 256 * 1024 * 1024
    return plugin_wasm_from(blob.content), digest


# --- the image --------------------------------------------------------------------------------------------


def test_the_layout_is_what_higress_pulls(image, run_dir):
    module = higress_wasm().read_bytes()
    index, manifest, blobs = read_layout(run_dir / "oci")
    assert index["manifests"][0]["annotations"] == {"org.opencontainers.image.ref.name": TAG}
    assert index["manifests"][0]["mediaType"] == OCI_MANIFEST
    assert manifest["mediaType"] == OCI_MANIFEST and manifest["schemaVersion"] == 2
    assert manifest["config"]["mediaType"] == "application/vnd.unknown.config.v1+json"
    layers = [(d["mediaType"], d["annotations"]["org.opencontainers.image.title"]) for d in manifest["layers"]]
    assert layers == [
        ("application/vnd.module.wasm.spec.v1+yaml", "spec.yaml"),
        ("application/vnd.module.wasm.doc.v1+markdown", "README.md"),
        (OCI_LAYER, "plugin.tar.gz"),  # last: the layer Higress reads
    ]
    layer = blobs[manifest["layers"][-1]["digest"]]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer)), mode="r:") as tar:
        [member] = tar.getmembers()
        assert (member.name, member.isfile(), member.mode, member.uid) == ("plugin.wasm", True, 0o644, 0)
    assert plugin_wasm_from(layer) == module
    assert image["wasm_sha256"] == hashlib.sha256(module).hexdigest()
    spec = yaml.safe_load(blobs[manifest["layers"][0]["digest"]])
    assert spec["info"]["name"] == "mcp-gateway" and spec["spec"]["phase"] == "UNSPECIFIED_PHASE"
    assert blobs[manifest["layers"][1]["digest"]] == (ROOT / "README.md").read_bytes()


def test_the_image_is_reproducible(image, run_dir):
    again = oci.build(higress_wasm(), SPEC, ROOT / "README.md", TAG, run_dir / "oci-again")
    assert again["manifest"] == image["manifest"]


def test_make_oci_writes_target_oci():
    """The Makefile target is the script with the Higress build (checked without running make, which
    would rebuild both modules)."""
    makefile = (ROOT / "Makefile").read_text()
    assert "\noci: build\n" in makefile
    assert "scripts/oci.py --wasm $(WASM_HIGRESS)" in makefile and "--out target/oci" in makefile


# --- through a registry -------------------------------------------------------------------------------------


def test_round_trip_through_a_registry(image, run_dir, registry):
    """skopeo pushes the layout; what Higress's fetcher would take out of the registry is our module."""
    ref = f"{registry.host}/mcp-gateway:{TAG}"
    push = subprocess.run(
        [tool("skopeo"), "copy", "--dest-tls-verify=false", f"oci:{run_dir / 'oci'}:{TAG}", f"docker://{ref}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert push.returncode == 0, push.stderr
    wasm, digest = higress_fetch(registry, "mcp-gateway", TAG)
    assert wasm == higress_wasm().read_bytes()
    assert digest == image["manifest"], "the registry holds the manifest byte for byte"
    inspect = subprocess.run(
        [tool("skopeo"), "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
        capture_output=True,
        timeout=60,
    )
    assert inspect.returncode == 0 and "sha256:" + hashlib.sha256(inspect.stdout).hexdigest() == digest
    (run_dir / "pulled.wasm").write_bytes(wasm)


def higress_plugin_config(spec: dict) -> dict:
    """What Higress passes the plugin for a WasmPlugin: `defaultConfig`, plus each of `matchRules` as a rule
    of `_rules_` (its `config` with `_match_route_` from `ingress`, `_match_domain_` from `domain`,
    `_match_service_` from `service`), as Higress's controller builds it."""
    config = dict(spec.get("defaultConfig") or {})
    rules = []
    for rule in spec.get("matchRules") or []:
        entry = dict(rule.get("config") or {})
        for field, key in (("ingress", "_match_route_"), ("domain", "_match_domain_"), ("service", "_match_service_")):
            if rule.get(field):
                entry[key] = rule[field]
        rules.append(entry)
    if rules:
        config["_rules_"] = rules
    return config


def test_the_shipped_wasmplugin_runs_from_the_pulled_module(run_dir, registry):
    """deploy/higress/wasmplugin.yaml, as Higress passes it (JSON, `matchRules` as `_rules_`), loaded into the
    module pulled from the registry, in the test host for Higress's ABI (two workers): the global config on
    every route but the Ingress's, the rule's config on that one (Envoy's `route_name`), Redis sessions on a
    real redis-server, the upstream clusters on the demo REST API."""
    pulled = run_dir / "pulled.wasm"
    if not pulled.exists():
        pytest.fail("test_round_trip_through_a_registry did not pull the module", pytrace=False)
    resource = yaml.safe_load(WASMPLUGIN.read_text())
    assert resource["apiVersion"] == "extensions.higress.io/v1alpha1" and resource["kind"] == "WasmPlugin"
    spec = resource["spec"]
    assert spec["url"].startswith("oci://") and spec["url"].endswith(f":{TAG}")
    config = higress_plugin_config(spec)
    redis_cluster = config["sessions"]["redis"]["cluster"]
    [weather] = config["servers"]
    [rule] = config["_rules_"]
    [users] = rule["servers"]
    [route_name] = rule["_match_route_"]
    assert rule["sessions"] == config["sessions"], "the rule needs its own sessions: nothing is merged into it"
    with RedisServer(run_dir) as redis, harness.DemoUpstream(log_dir=run_dir) as upstream:
        demo = ("127.0.0.1", upstream.port)
        replica = Replica(
            pulled,
            Plugin(json.dumps(config).encode()),
            clusters={weather["upstream"]["cluster"]: demo, users["upstream"]["cluster"]: demo, redis_cluster: redis.address},
            # the Ingress's route: its own host here; every other request takes an unnamed route
            routes=[("users.example/", route_name, users["upstream"]["cluster"])],
            route_cluster=weather["upstream"]["cluster"],
            workers=2,
            name="wasmplugin",
            log_path=run_dir / "wasmplugin.log",
        )
        with running(replica):
            assert "per route (_rules_)" in replica.log_text()
            assert json.loads(call(replica, "/mcp-servers/weather", "get_weather", {"city": "Paris"}))["city"] == "Paris"
            # the rule's server is served on its route only, and the global one is not served there
            user = json.loads(call(replica, "/mcp-servers/users", "get_user", {"id": 1}, host="users.example"))
            assert user["name"] == "Ada Lovelace"
            assert initialize(replica, "/mcp-servers/users").status_code == 404
            assert initialize(replica, "/mcp-servers/weather", host="users.example").status_code == 404
            assert len(redis.command("KEYS", "*").split()) == 2, "both configurations keep sessions in Redis"
            assert not replica.crashes, replica.crashes


HEADERS = {"Accept": ACCEPT, "Content-Type": "application/json"}


def initialize(replica: Replica, path: str, host: str | None = None) -> httpx.Response:
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": LATEST, "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    return harness.fresh_connection_post(f"{replica.url}{path}", init, {**HEADERS, **({"Host": host} if host else {})})


def call(replica: Replica, path: str, tool: str, args: dict, host: str | None = None) -> str:
    """initialize on one worker, tools/call on the other (connections go round robin): the session must be
    found in Redis. The result's text."""
    r = initialize(replica, path, host)
    assert r.status_code == 200, r.text
    sid = r.headers["mcp-session-id"]
    body = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": args}}
    headers = {**HEADERS, "Mcp-Session-Id": sid, "MCP-Protocol-Version": LATEST, **({"Host": host} if host else {})}
    r = harness.fresh_connection_post(f"{replica.url}{path}", body, headers)
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert not result.get("isError"), result
    return result["content"][0]["text"]
