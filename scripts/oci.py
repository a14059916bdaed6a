#!/usr/bin/env python3
"""Packs the Higress build as the OCI image Higress pulls (`make oci`), without Docker, as an OCI image layout.

Higress fetches `oci://` plugins with its fork of Istio's image fetcher (higress-group/istio,
pkg/wasm/imagefetcher.go): for an OCI manifest it takes the LAST layer, which must have the media type
`application/vnd.oci.image.layer.v1.tar+gzip`, and reads the file whose base name is `plugin.wasm` from that
tar.gz. Higress's own plugins carry `spec.yaml` (what the Higress console shows and validates) and README
layers before it, pushed by `oras push` with these media types:

    spec.yaml       application/vnd.module.wasm.spec.v1+yaml
    README.md       application/vnd.module.wasm.doc.v1+markdown
    plugin.tar.gz   application/vnd.oci.image.layer.v1.tar+gzip   (last; holds plugin.wasm)

The config blob is oras's default (`application/vnd.unknown.config.v1+json`, `{}`), and each layer carries the
`org.opencontainers.image.title` annotation oras gives it. The output is an OCI image layout
(https://github.com/opencontainers/image-spec/blob/main/image-layout.md) under `--out`, the tag recorded as
`org.opencontainers.image.ref.name`, byte-for-byte reproducible (fixed tar and gzip times, sorted JSON), so it
can be pushed by any OCI tool:

    skopeo copy oci:target/oci:0.1.0 docker://registry.example.com/mcp-gateway:0.1.0
    oras cp --from-oci-layout target/oci:0.1.0 registry.example.com/mcp-gateway:0.1.0

Usage: scripts/oci.py --wasm FILE --spec FILE --readme FILE --tag TAG --out DIR
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.unknown.config.v1+json"
SPEC_LAYER = "application/vnd.module.wasm.spec.v1+yaml"
DOC_LAYER = "application/vnd.module.wasm.doc.v1+markdown"
WASM_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
TITLE = "org.opencontainers.image.title"
REF_NAME = "org.opencontainers.image.ref.name"
# A fixed time for tar entries and the gzip header, so that the same module gives the same digests.
EPOCH = 0


def plugin_tar_gz(wasm: bytes) -> bytes:
    """plugin.tar.gz: one regular file `plugin.wasm`, owned by root, mode 0644, at a fixed time."""
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size = len(wasm)
        info.mode = 0o644
        info.mtime = EPOCH
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=EPOCH, compresslevel=9) as gz:
        gz.write(tar_bytes.getvalue())
    return out.getvalue()


def canonical_json(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


class Layout:
    """An OCI image layout being written: blobs by digest, then index.json."""

    def __init__(self, root: Path):
        self.root = root
        if root.exists():
            shutil.rmtree(root)
        (root / "blobs" / "sha256").mkdir(parents=True)
        (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def blob(self, data: bytes, media_type: str, title: str | None = None) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        (self.root / "blobs" / "sha256" / digest).write_bytes(data)
        descriptor = {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}
        if title is not None:
            descriptor["annotations"] = {TITLE: title}
        return descriptor

    def index(self, manifest: dict, tag: str) -> None:
        (self.root / "index.json").write_bytes(
            canonical_json(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_INDEX,
                    "manifests": [{**manifest, "annotations": {REF_NAME: tag}}],
                }
            )
        )


def build(wasm: Path, spec: Path, readme: Path, tag: str, out: Path) -> dict:
    """Writes the layout; returns a summary (digests and sizes) for the caller to print or check."""
    module = wasm.read_bytes()
    if module[:4] != b"\0asm":
        raise SystemExit(f"{wasm}: not a wasm module")
    layout = Layout(out)
    layers = [
        layout.blob(spec.read_bytes(), SPEC_LAYER, "spec.yaml"),
        layout.blob(readme.read_bytes(), DOC_LAYER, "README.md"),
        layout.blob(plugin_tar_gz(module), WASM_LAYER, "plugin.tar.gz"),  # last: the one Higress reads
    ]
    config = layout.blob(b"{}", CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers}
    manifest_desc = layout.blob(canonical_json(manifest), OCI_MANIFEST)
    layout.index(manifest_desc, tag)
    return {
        "layout": str(out),
        "tag": tag,
        "manifest": manifest_desc["digest"],
        "wasm_sha256": hashlib.sha256(module).hexdigest(),
        "wasm_bytes": len(module),
        "layers": [(d["annotations"][TITLE], d["mediaType"], d["size"]) for d in layers],
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wasm", type=Path, required=True, help="the Higress build (mcp_gateway_higress.wasm)")
    parser.add_argument("--spec", type=Path, required=True, help="the plugin's spec.yaml for the Higress console")
    parser.add_argument("--readme", type=Path, required=True)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    summary = build(args.wasm, args.spec, args.readme, args.tag, args.out)
    print(f"oci: {summary['layout']} tag {summary['tag']}, manifest {summary['manifest']}")
    for title, media_type, size in summary["layers"]:
        print(f"  layer {title:<14} {media_type} ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
