#!/usr/bin/env python3
"""`make run`: the demo upstream and Envoy with envoy/envoy.yaml and plugin-config/example.yaml.

Uses the fixed ports of envoy/envoy.yaml (MCP listener 10000, baseline 10001, admin 9901, demo
upstream 8081) and runs until Ctrl-C. The plugin must be built first (`make build`).

With the example config, it also serves a proxied MCP server, `everything` (`type: mcp-proxy`), in front of
`@modelcontextprotocol/server-everything` on port 3001: Envoy gets a cluster `everything` and a virtual
host `everything.local` routing to it (the server's `mcpServerURL` is http://everything.local/mcp).

Options:
  --config PATH       another plugin configuration (default plugin-config/example.yaml)
  --concurrency N     Envoy worker threads (default 2)
  --log-level LEVEL   Envoy log level (default info)
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
import time
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from everything import Everything  # noqa: E402

EVERYTHING_PORT = 3001
EVERYTHING_SERVER = {"name": "everything", "type": "mcp-proxy", "transport": "http",
                     "mcpServerURL": "http://everything.local/mcp", "timeout": 600000}


def envoy_with_everything(port: int) -> dict:
    """envoy/envoy.yaml plus the cluster and the route the proxied demo server needs."""
    base = harness.load_envoy_yaml()
    endpoint = {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
    base["static_resources"]["clusters"].append({
        "name": "everything", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "everything", "endpoints": [{"lb_endpoints": [endpoint]}]},
    })
    host = {"name": "everything", "domains": ["everything.local"],
            # timeout 0s: the standalone GET stream lasts as long as the client wants.
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "everything", "timeout": "0s"}}]}
    for listener in base["static_resources"]["listeners"]:
        for chain in listener.get("filter_chains", []):
            for f in chain.get("filters", []):
                vhosts = f.get("typed_config", {}).get("route_config", {}).get("virtual_hosts")
                if vhosts is not None:
                    vhosts.insert(0, host)
    return base


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=harness.EXAMPLE_CONFIG)
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args()

    try:
        wasm = harness.wasm_path()
    except harness.HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    ports = harness.Ports.defaults()
    demo_everything = args.config.resolve() == harness.EXAMPLE_CONFIG.resolve()
    busy = [("demo upstream", ports.demo), ("MCP listener", ports.mcp),
            ("baseline listener", ports.baseline), ("admin", ports.admin)]
    if demo_everything:
        busy.append(("server-everything", EVERYTHING_PORT))
    for name, port in busy:
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", port))
        except OSError:
            print(f"error: port {port} ({name}) is already in use", file=sys.stderr)
            return 2

    run_dir = harness.new_run_dir("run")
    config = harness.load_plugin_config(args.config)
    upstream = harness.DemoUpstream(port=ports.demo, log_dir=run_dir)
    everything = None
    envoy = None
    stop = {"now": False}

    def on_signal(signum, frame):  # noqa: ARG001
        stop["now"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        upstream.start()
        plugin_config, base = args.config.resolve(), None  # the file's text is passed to the plugin verbatim
        if demo_everything:
            everything = Everything(run_dir, port=EVERYTHING_PORT)
            config["servers"].append(EVERYTHING_SERVER)
            plugin_config, base = config, envoy_with_everything(EVERYTHING_PORT)
        envoy = harness.Envoy(
            plugin_config,
            upstream_port=ports.demo, run_dir=run_dir, name="envoy", ports=ports,
            concurrency=args.concurrency, log_level=args.log_level, wasm=wasm, base=base,
        )
        envoy.start()
        prefix = config.get("prefix") or "/mcp-servers"
        print(f"Demo upstream:    {upstream.url}")
        print(f"Plain proxy:      {envoy.baseline_url}  (no plugin)")
        print(f"Envoy admin:      {envoy.admin_url}")
        print(f"Envoy log:        {envoy.log_path}")
        for server in config.get("servers") or [config.get("server") or {}]:
            if server.get("name"):
                print(f"MCP server URL: {envoy.base_url}{prefix}/{server['name']}")
        print("Press Ctrl-C to stop.", flush=True)
        while not stop["now"]:
            if not envoy.alive():
                print(f"error: Envoy exited; log {envoy.log_path}:\n{harness.tail(envoy.log_path)}", file=sys.stderr)
                return 1
            time.sleep(0.5)
        return 0
    except harness.HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        if envoy is not None:
            envoy.stop()
        upstream.stop()
        if everything is not None:
            everything.stop()


if __name__ == "__main__":
    sys.exit(main())
