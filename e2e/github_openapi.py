#!/usr/bin/env python3
"""GitHub's REST API description, fetched at test time (never committed).

The document is `generated/api.github.com.json` of the npm package @octokit/openapi (about 13 MB,
OpenAPI 3.0.3, ~1,200 operations, heavy `$ref` use). The package itself is heavy (a 29 MB tarball
that unpacks to ~400 MB: it also ships dereferenced and GHES variants), so it is not installed:
`npm pack` downloads the pinned tarball into e2e/.cache/ (gitignored), its integrity is checked
against the pinned sha512, only that one file is extracted (checked against its pinned sha256),
and the tarball is deleted. Re-runs find the extracted file and do nothing.

    .venv/bin/python e2e/github_openapi.py     # prints the path of the document (fetches it once)

Used by e2e/setup.sh, e2e/test_openapi_github.py and e2e/bench.py. Environment knobs:
  GITHUB_OPENAPI_DOC   use this file instead (no download, no checksum)
  NPM                  the npm to run (default: `npm` on PATH, as e2e/setup.sh uses)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

PACKAGE = "@octokit/openapi"
VERSION = "23.0.2"  # pinned; bump together with the two hashes below
TARBALL_INTEGRITY = "sha512-pV8M7L9GY23AybNvTmo2nyjmpmnt6+2sRE/tqr0ZLQcPS4lnw7u5eZGNmwRNkBC3D7gZXbFx5AHzLUVRBXGDhg=="
MEMBER = "package/generated/api.github.com.json"
DOC_SHA256 = "829b4bebb19a53133289f7b0bc819f4f1118115821db2ca9f25e9ee995a7da2a"

E2E_DIR = Path(__file__).resolve().parent
CACHE_DIR = E2E_DIR / ".cache" / f"octokit-openapi-{VERSION}"
DOC_PATH = CACHE_DIR / "api.github.com.json"


class Unavailable(RuntimeError):
    """The document cannot be obtained here (no npm, no network, registry refused)."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _integrity(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def _npm() -> str:
    npm = os.environ.get("NPM") or shutil.which("npm")
    if not npm:
        raise Unavailable("npm is not installed (e2e/setup.sh installs Debian's npm)")
    return npm


def cached() -> Path | None:
    """The document if it is already here (and intact), else None. Never downloads."""
    override = os.environ.get("GITHUB_OPENAPI_DOC")
    if override:
        return Path(override) if Path(override).is_file() else None
    if DOC_PATH.is_file() and _sha256(DOC_PATH) == DOC_SHA256:
        return DOC_PATH
    return None


def ensure(quiet: bool = False, timeout: float = 600.0) -> Path:
    """The path of api.github.com.json, fetching it once. Raises Unavailable when it cannot."""
    override = os.environ.get("GITHUB_OPENAPI_DOC")
    if override:
        if not Path(override).is_file():
            raise Unavailable(f"GITHUB_OPENAPI_DOC={override} does not exist")
        return Path(override)
    found = cached()
    if found:
        return found
    npm = _npm()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    spec = f"{PACKAGE}@{VERSION}"
    if not quiet:
        print(f"[github-openapi] npm pack {spec} into {CACHE_DIR} (29 MB tarball) ...", file=sys.stderr, flush=True)
    cmd = [npm, "pack", spec, "--json", "--ignore-scripts", "--pack-destination", str(CACHE_DIR),
           "--loglevel=error", "--no-audit", "--no-fund",
           # Offline, fail within a minute or two rather than npm's default retries of up to 5 minutes each.
           "--fetch-retries=1", "--fetch-timeout=120000"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(CACHE_DIR),
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Unavailable(f"`npm pack {spec}` failed: {exc}") from exc
    if proc.returncode != 0:
        raise Unavailable(f"`npm pack {spec}` exited with {proc.returncode} (no network or registry?): "
                          f"{(proc.stderr or proc.stdout).strip()[-600:]}")
    try:
        info = json.loads(proc.stdout)[0]
        tarball = CACHE_DIR / info["filename"]
    except (ValueError, LookupError, TypeError):
        tarball = CACHE_DIR / f"octokit-openapi-{VERSION}.tgz"
    try:
        if not tarball.is_file():
            raise Unavailable(f"`npm pack {spec}` did not leave {tarball}")
        got = _integrity(tarball)
        if got != TARBALL_INTEGRITY:
            raise RuntimeError(f"{tarball}: integrity {got} is not the pinned {TARBALL_INTEGRITY}")
        tmp = DOC_PATH.with_suffix(".json.part")
        with tarfile.open(tarball, "r:gz") as tar:
            member = tar.getmember(MEMBER)
            src = tar.extractfile(member)
            if src is None:
                raise RuntimeError(f"{tarball}: {MEMBER} is not a regular file")
            with src, open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        got = _sha256(tmp)
        if got != DOC_SHA256:
            tmp.unlink(missing_ok=True)
            raise RuntimeError(f"{MEMBER} of {spec}: sha256 {got} is not the pinned {DOC_SHA256}")
        os.replace(tmp, DOC_PATH)
    finally:
        tarball.unlink(missing_ok=True)
    if not quiet:
        print(f"[github-openapi] {DOC_PATH} ({DOC_PATH.stat().st_size:,} bytes)", file=sys.stderr, flush=True)
    return DOC_PATH


HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def operations(doc: dict) -> list[tuple[str, str, dict]]:
    """(METHOD, path, operation) of every operation of a parsed document."""
    out = []
    for path, item in (doc.get("paths") or {}).items():
        for method in HTTP_METHODS:
            op = item.get(method) if isinstance(item, dict) else None
            if isinstance(op, dict):
                out.append((method.upper(), path, op))
    return out


# `mcp-gateway openapi DOC --check` prints `operations: N found, N converted, N skipped`, then one
# `skipped: METHOD /path (operationId) at #/paths/...: reason` line per skipped operation.
CHECK_SUMMARY = re.compile(r"operations:\s*(\d+)\s+found,\s*(\d+)\s+converted,\s*(\d+)\s+skipped")


def parse_check(text: str) -> dict | None:
    """{found, converted, skipped, skipped_lines} from `openapi --check` output (None: no summary)."""
    m = CHECK_SUMMARY.search(text)
    if not m:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("skipped:")]
    return {"found": int(m.group(1)), "converted": int(m.group(2)), "skipped": int(m.group(3)),
            "skipped_lines": lines}


def main() -> int:
    try:
        path = ensure()
    except Unavailable as exc:
        print(f"[github-openapi] unavailable: {exc}", file=sys.stderr)
        return 3
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
