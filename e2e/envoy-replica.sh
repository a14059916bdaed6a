#!/bin/sh
# Starts one gateway replica of e2e/docker-compose.yml: Envoy with envoy/envoy.yaml as committed
# (its inline plugin configuration is plugin-config/example.yaml), changed in two ways only:
#
#   - the ports of this replica: GATEWAY_PORT (listener `mcp`, 10000), BASELINE_PORT (listener
#     `baseline`, 10001), ADMIN_PORT (9901);
#   - the session store, given to the plugin as its first line:
#       sessions: {store: signed, signingKeys: ["$MCP_GATEWAY_SIGNING_KEY"]}
#     so that a session opened on one replica is valid on every replica with the same key.
#     MCP_GATEWAY_SESSION_STORE=local leaves the plugin's default (sessions of this Envoy only).
#
# The rendered configuration goes to /tmp: the official image runs this script as the unprivileged
# user `envoy`, and /work is mounted read-only. Arguments are passed on to Envoy.
set -eu

src=/work/envoy/envoy.yaml
out=/tmp/envoy-replica.yaml
gateway_port="${GATEWAY_PORT:-10000}"
baseline_port="${BASELINE_PORT:-10001}"
admin_port="${ADMIN_PORT:-9901}"
store="${MCP_GATEWAY_SESSION_STORE:-signed}"
key="${MCP_GATEWAY_SIGNING_KEY:-}"

fail() { echo "envoy-replica: $*" >&2; exit 2; }

for p in "$gateway_port" "$baseline_port" "$admin_port"; do
    case "$p" in '' | *[!0-9]*) fail "ports must be numbers, got '$p'" ;; esac
done

case "$store" in
    signed)
        [ -n "$key" ] || fail "MCP_GATEWAY_SIGNING_KEY is empty; generate one with: openssl rand -base64 32"
        case "$key" in *[!A-Za-z0-9+/=]*) fail "MCP_GATEWAY_SIGNING_KEY is not base64 (generate one with: openssl rand -base64 32)" ;; esac
        case "$key" in
            DEVELOPMENT+ONLY*)
                echo "envoy-replica: WARNING: MCP_GATEWAY_SIGNING_KEY is the development-only key of" \
                    "e2e/docker-compose.yml, which anyone can read. Set your own: openssl rand -base64 32" >&2 ;;
        esac
        sessions="sessions: {store: signed, signingKeys: [\"$key\"]}"
        ;;
    local) sessions="" ;;
    *) fail "MCP_GATEWAY_SESSION_STORE must be signed or local, got '$store'" ;;
esac

# `value: |` is the inline plugin configuration; its first line gets the indentation of `value` + 2.
insert_sessions='s/^//'
[ -z "$sessions" ] || insert_sessions="s#^\( *\)value: |\$#&\n\1  $sessions#"
sed -e "s/\(port_value: \)10000}/\1$gateway_port}/" \
    -e "s/\(port_value: \)10001}/\1$baseline_port}/" \
    -e "s/\(port_value: \)9901}/\1$admin_port}/" \
    -e "$insert_sessions" \
    "$src" > "$out"

# Each change must have found its anchor in envoy.yaml (a changed envoy.yaml must not go unnoticed).
for p in "$gateway_port" "$baseline_port" "$admin_port"; do
    grep -q "port_value: $p}" "$out" || fail "no port $p in $out: envoy/envoy.yaml changed, update $0"
done
if [ -n "$sessions" ]; then
    grep -qF "$sessions" "$out" || fail "no inline plugin configuration (value: |) in $src: update $0"
    fingerprint="$(printf '%s' "$key" | sha256sum | cut -c1-12)"
    echo "envoy-replica: MCP on 127.0.0.1:$gateway_port, admin on 127.0.0.1:$admin_port," \
        "sessions: signed (key fingerprint $fingerprint)" >&2
else
    echo "envoy-replica: MCP on 127.0.0.1:$gateway_port, admin on 127.0.0.1:$admin_port, sessions: local" >&2
fi

exec envoy -c "$out" "$@"
