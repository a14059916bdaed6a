#!/bin/sh
# Instructions per call of the core's hot paths (src/driver/cost.rs `instructions`), counted by callgrind:
# repeatable on a shared, loaded machine where timings are not. Usage: scripts/callgrind-cost.sh [side...]
# (sides: call route greet list nopolicy policy nomask proxy virtual virtualrest loopback; all by default). COST_CALLS sets the calls per side.
set -eu
n=${COST_CALLS:-1000}
# The release profile with symbols (callgrind finds `calls` by name), in a target directory of its own.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cg} CARGO_PROFILE_RELEASE_STRIP=false
export CARGO_PROFILE_RELEASE_DEBUG=${CARGO_PROFILE_RELEASE_DEBUG:-line-tables-only}
bin=$(cargo test --release --lib --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
out=${TMPDIR:-/tmp}/callgrind-cost.$$
for side in ${@:-call route greet list nopolicy policy nomask proxy virtual virtualrest loopback}; do
    COST_SIDE=$side COST_CALLS=$n valgrind --tool=callgrind --callgrind-out-file="$out" --collect-atstart=no \
        --toggle-collect='*driver::cost::calls*' --toggle-collect='*driver::cost::proxied_calls*' --toggle-collect='*driver::cost::loopback_calls*' "$bin" driver::cost::instructions --ignored --exact \
        --test-threads 1 >/dev/null 2>&1
    if [ -n "${COST_KEEP:-}" ]; then cp "$out" "$COST_KEEP.$side"; fi
    total=$(sed -n 's/^totals: *\([0-9]*\).*/\1/p' "$out")
    echo "$side: $((total / n)) instructions per call"
done
[ -n "${COST_KEEP:-}" ] || rm -f "$out"
