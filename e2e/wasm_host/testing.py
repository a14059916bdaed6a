"""Test support: the host's event loop in a thread, a real redis-server, and a TCP proxy that delays.

Synchronous tests drive replicas through `HostThread.run`; Redis faults (a server stopped mid-run and
restarted on the same port, a Redis slower than the plugin's timeoutMs) come from `RedisServer` and
`DelayProxy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, Self, TypeVar

T = TypeVar("T")

REDIS_SERVER = "/usr/bin/redis-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HostThread:
    """An asyncio loop in a daemon thread: everything of the host runs there, one callback at a time."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="wasm-host", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """A plain function on the loop's thread (for code that touches a VM)."""

        async def wrapper() -> T:
            return fn(*args)

        return self.run(wrapper())

    def close(self) -> None:
        async def cancel_the_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def running(replica: Any) -> Iterator[Any]:
    """A replica started on a host thread of its own, for one test: stopped, and the thread closed, afterwards."""
    thread = HostThread()
    try:
        thread.run(replica.start())
        try:
            yield replica
        finally:
            thread.run(replica.stop())
    finally:
        thread.close()


class RedisServer:
    """A real redis-server on a loopback port, without persistence; it can stop and come back on the same port."""

    def __init__(self, run_dir: Path, password: str | None = None, port: int | None = None):
        self.run_dir = run_dir
        self.password = password
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port

    def start(self, timeout: float = 10.0) -> Self:
        if shutil.which(REDIS_SERVER) is None:
            raise RuntimeError(f"{REDIS_SERVER} is missing (Debian package redis-server)")
        args = [
            REDIS_SERVER,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.run_dir),
            "--logfile",
            str(self.run_dir / f"redis-{self.port}.log"),
        ]
        if self.password is not None:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.run_dir}")
            with contextlib.suppress(OSError), socket.create_connection(self.address, timeout=0.5) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                if s.recv(64).startswith((b"+PONG", b"-NOAUTH")):
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def command(self, *args: str) -> str:
        """redis-cli, authenticated when the server has a password."""
        auth = ["-a", self.password, "--no-auth-warning"] if self.password else []
        cmd = ["redis-cli", "-p", str(self.port), *auth, *args]
        return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=10).stdout.strip()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class DelayProxy:
    """A TCP proxy on the host's loop in front of a server; replies are held back by `delay` seconds."""

    def __init__(self, target: tuple[str, int], delay: float = 0.0):
        self.target = target
        self.delay = delay
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def delays(self, reply: bytes) -> bool:
        """Whether this piece of a reply is held back; every one here, some in subclasses."""
        return True

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in self._writers:
            writer.transport.abort()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delayed: bool) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    if delayed and self.delay and self.delays(data):
                        await asyncio.sleep(self.delay)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))
        except asyncio.CancelledError:
            pass  # loop shutdown; see Replica._connection
        finally:
            self._writers -= {writer, up_writer}
