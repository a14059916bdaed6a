"""`@modelcontextprotocol/server-everything` (pinned in e2e/package.json, installed by `make setup`) in a Node
subprocess, Streamable HTTP at `/mcp`: the backend of the proxied demo server (`make run`) and of
e2e/test_everything_proxy.py. `MCP_SERVER_EVERYTHING` may name another copy of its `dist/index.js`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import harness
from node_tools import node_env

EVERYTHING_JS = Path(
    os.environ.get("MCP_SERVER_EVERYTHING")
    or harness.NODE_DIR / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"
)


class Everything:
    """server-everything's Streamable HTTP transport (`/mcp`) in a Node subprocess."""

    def __init__(self, log_dir: Path, port: int | None = None):
        if not EVERYTHING_JS.is_file():
            raise FileNotFoundError(f"{EVERYTHING_JS} is missing: run `make setup` (e2e/package.json pins it)")
        self.port = port or harness.free_port()
        self.log = open(log_dir / "server-everything.log", "wb")  # noqa: SIM115
        env = dict(node_env(), PORT=str(self.port))
        self.proc = subprocess.Popen(
            [str(harness.node_binary()), str(EVERYTHING_JS), "streamableHttp"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server-everything exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("server-everything did not listen within 20 s") from None
                time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
