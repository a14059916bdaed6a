#!/usr/bin/env bash
# Post-optimises the plugin with binaryen's wasm-opt (about 16% smaller, and V8's compile time grows with size).
# -Oz, not -Os: 13 KB smaller (1,677,000 against 1,690,146 bytes); --converge would take 1.6 KB more for
# twice the time. --merge-similar-functions first: -Oz runs it too, but last, after inlining; run before,
# it merges functions that differ in constants before they are inlined (-10,487 bytes, 1,618,504 ->
# 1,608,017, same time), and more once --duplicate-function-elimination has run first (-1,633, 1,586,096 ->
# 1,584,463). Cargo restores its own output on every build, so the optimised module is cached by the raw
# module's hash and the flags, and copied back instead of optimising again.
# First, on every artifact: the exports of callbacks the plugin does nothing in are dropped, so that Envoy
# skips those two VM entries per request (scripts/wasm-drop-export.py says why).
set -euo pipefail
wasm="$1"
python3 "$(dirname "$0")/wasm-drop-export.py" --if-present "$wasm" proxy_on_log proxy_on_done
wasm_opt="${WASM_OPT:-e2e/node_modules/.bin/wasm-opt}"
cache="$(dirname "$wasm")/wasm-opt/$(basename "$wasm" .wasm)"
# --low-memory-unused lets -Oz fold `x + C` (C < 1024) into a load's or store's offset (-9,245 bytes,
# 1,584,463 -> 1,575,218). That is the same access unless x + C wraps past 2^32, which the add would take
# to the first 1 KB of memory and the offset takes out of bounds, a trap: a wrapping address is already
# undefined behaviour in Rust (LLVM's inbounds pointer arithmetic), and the first 1 KB is the far end of the
# shadow stack (.cargo/config.toml), so nothing that worked before can fail; a stack overflow by less than
# 1 KB now traps instead of writing to the start of memory.
# --dae-optimizing first (dead and constant arguments removed before anything is inlined), then after -Oz
# merging and folding once more and -Oz again over what they left: -2,205 bytes (1,528,583 -> 1,526,378;
# --dae-optimizing alone -1,011, the second round alone -1,248), for about a third more time.
flags=(--duplicate-function-elimination --merge-similar-functions --dae-optimizing -Oz
       --merge-similar-functions --duplicate-function-elimination --low-memory-unused -Oz
       --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext
       --enable-mutable-globals --enable-multivalue --enable-reference-types)
if [ ! -x "$wasm_opt" ]; then
    echo "note: $wasm_opt not installed (make setup installs it): the module is not post-optimised"
    exit 0
fi
mkdir -p "$cache"
current="$(sha256sum < "$wasm" | cut -d' ' -f1)"
key="$current ${flags[*]}"
if [ -f "$cache/optimised.wasm" ] && [ "$current" = "$(sha256sum < "$cache/optimised.wasm" | cut -d' ' -f1)" ]; then
    exit 0
fi
if [ "$key" != "$(cat "$cache/raw.sha256" 2>/dev/null || true)" ]; then
    echo "wasm-opt ${flags[0]} ${flags[1]} ${flags[2]} $wasm"
    "$wasm_opt" "${flags[@]}" "$wasm" -o "$cache/optimised.tmp"
    mv "$cache/optimised.tmp" "$cache/optimised.wasm"
    echo "$key" > "$cache/raw.sha256"
fi
rm -f "$wasm"
cp "$cache/optimised.wasm" "$wasm"
