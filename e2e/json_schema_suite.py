#!/usr/bin/env python3
"""The official JSON Schema Test Suite, fetched for src/schema.rs's suite test (never committed).

npm's `@json-schema-org/tests` (1.0.0, 2.0.0) holds no test files: it depends on the suite's git repository,
which only a git host serves, and the registries are all this project's machines reach. The suite is vendored
whole (as the `json/` folder) in the source distribution of Python's `jsonschema` on PyPI, so that is where it
comes from: `pip download` of the pinned sdist into e2e/.cache/ (gitignored), checked against its pinned sha256;
only the suite's `tests/draft2020-12/` and `tests/draft7/` (optional cases included), its LICENSE and README
are kept, under e2e/.cache/json-schema-test-suite/, with SOURCE naming the sdist. Re-runs find the files.

    .venv/bin/python e2e/json_schema_suite.py     # fetches, prints the suite's folder

Used by e2e/setup.sh; read by `cargo test --test json_schema_suite` (tests/json_schema_suite.rs).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

E2E_DIR = Path(__file__).resolve().parent
SUITE = E2E_DIR / ".cache" / "json-schema-test-suite"
SDIST = "jsonschema==4.26.0"
SDIST_FILE = "jsonschema-4.26.0.tar.gz"
SDIST_SHA256 = "0c26707e2efad8aa1bfc5b7ce170f3fccc2e4918ff85989ba9ffa9facb2be326"
KEEP = ("json/tests/draft2020-12/", "json/tests/draft7/", "json/LICENSE", "json/README.md")


def fetch() -> Path:
    source = SUITE / "SOURCE"
    if source.is_file() and source.read_text().strip() == f"{SDIST_FILE} {SDIST_SHA256}":
        return SUITE
    with tempfile.TemporaryDirectory(dir=E2E_DIR / ".cache" if (E2E_DIR / ".cache").is_dir() else None) as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps",
             "--no-binary", ":all:", SDIST, "-d", tmp],
            check=True,
        )
        sdist = Path(tmp) / SDIST_FILE
        digest = hashlib.sha256(sdist.read_bytes()).hexdigest()
        if digest != SDIST_SHA256:
            raise SystemExit(f"{SDIST_FILE}: sha256 {digest}, expected {SDIST_SHA256}")
        if SUITE.exists():
            shutil.rmtree(SUITE)
        prefix = SDIST_FILE.removesuffix(".tar.gz") + "/"
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                name = member.name.removeprefix(prefix)
                if not member.isfile() or not name.startswith(KEEP) or ".." in name.split("/"):
                    continue
                target = SUITE / name.removeprefix("json/")
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    source.write_text(f"{SDIST_FILE} {SDIST_SHA256}\n")
    return SUITE


if __name__ == "__main__":
    print(fetch())
