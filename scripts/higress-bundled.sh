#!/bin/sh
# How many of Higress's bundled mcp-server configs load unchanged, and how many of their tools render a request
# from sample arguments (src/higress/bundled.rs). The configs are fetched into e2e/.cache (never committed).
#
#   scripts/higress-bundled.sh                 # clones alibaba/higress (sparse, shallow) into e2e/.cache/higress
#   scripts/higress-bundled.sh /path/higress   # or reads an existing clone (a work tree or a bare git directory)
#   HIGRESS_REF=v2.2.1 scripts/higress-bundled.sh
set -eu
cd "$(dirname "$0")/.."
ref="${HIGRESS_REF:-HEAD}"
out=e2e/.cache/higress-bundled
src="${1:-}"
if [ -z "$src" ]; then
  src=e2e/.cache/higress
  if [ ! -d "$src" ]; then
    git clone --quiet --depth 1 --filter=blob:none --sparse https://github.com/alibaba/higress "$src"
    git -C "$src" sparse-checkout set plugins/wasm-go/mcp-servers
  fi
fi
rm -rf "$out" && mkdir -p "$out"
git -C "$src" ls-tree -r --name-only "$ref" plugins/wasm-go/mcp-servers/ | grep '/mcp-server\.yaml$' | while read -r f; do
  name=$(echo "$f" | cut -d/ -f4)
  git -C "$src" show "$ref:$f" > "$out/$name.yaml"
done
echo "higress $(git -C "$src" rev-parse "$ref"): $(ls "$out" | wc -l) configs in $out"
HIGRESS_BUNDLED_DIR="$PWD/$out" cargo test --quiet --features go-templates --lib higress::bundled -- --ignored --nocapture \
  | grep -E '^(configs|LOAD|RENDER)'
