"""Command line: one replica serving until interrupted.

    cd e2e && ../.venv/bin/python -m wasm_host --wasm ../target/wasm32-wasip1/release/mcp_gateway.wasm \\
        --config ../plugin-config/example.yaml --listen 127.0.0.1:10000 --cluster demo=127.0.0.1:8081 \\
        --redis-cluster 'outbound|6379||redis.dns=127.0.0.1:6379' --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from . import LoadError, Plugin, Replica
from .abi import LOG_LEVELS


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _cluster(text: str) -> tuple[str, tuple[str, int]]:
    name, sep, address = text.rpartition("=")  # cluster names such as outbound|6379||redis.dns have no '='
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=HOST:PORT, got {text!r}")
    return name, _address(address)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="wasm_host", description="A test host for Higress's proxy-wasm ABI (not Higress)."
    )
    parser.add_argument("--wasm", type=Path, required=True, help="the plugin module")
    parser.add_argument("--config", type=Path, required=True, help="the plugin configuration (YAML or JSON text)")
    parser.add_argument(
        "--listen", type=_address, default=("127.0.0.1", 10000), help="HOST:PORT (default 127.0.0.1:10000)"
    )
    parser.add_argument(
        "--cluster",
        type=_cluster,
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="an Envoy cluster; the first one is also where other paths are proxied",
    )
    parser.add_argument(
        "--redis-cluster",
        type=_cluster,
        action="append",
        default=[],
        metavar="NAME=HOST:PORT",
        help="a cluster the plugin reaches with proxy_redis_* (Envoy has one cluster list)",
    )
    parser.add_argument("--route-cluster", help="cluster of the pass-through route (default: the first --cluster)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--allow-on-headers-stop-iteration",
        action="store_true",
        help="Envoy >= 1.35's option (Higress has none): a pause on headers still delivers the body",
    )
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    parser.add_argument("--log-file", type=Path, help="also append the log here (it always goes to stderr)")
    args = parser.parse_args(argv)

    clusters = dict(args.cluster + args.redis_cluster)
    route = args.route_cluster or (args.cluster[0][0] if args.cluster else None)
    replica = Replica(
        args.wasm,
        Plugin(args.config.read_bytes(), allow_on_headers_stop_iteration=args.allow_on_headers_stop_iteration),
        clusters=clusters,
        route_cluster=route,
        workers=args.workers,
        listen=args.listen,
        log_path=args.log_file,
        log_level=args.log_level,
    )

    async def serve() -> int:
        shown = 0
        try:
            await replica.start()
        except LoadError as exc:
            sys.stderr.write(f"{replica.log_text()}\nnot loaded: {exc}\n")
            return 1
        sys.stderr.write(f"serving on {replica.url} (a test host for Higress's ABI, not Higress)\n")
        try:
            while True:
                for line in replica.log_lines[shown:]:
                    sys.stderr.write(line + "\n")
                shown = len(replica.log_lines)
                await asyncio.sleep(0.2)
        finally:
            await replica.stop()

    try:
        return asyncio.run(serve())
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
