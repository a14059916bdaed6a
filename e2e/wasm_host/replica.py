"""A replica: what one Envoy process of a Higress gateway is to the plugin.

It owns the process-wide state (shared data, shared queues, clusters, the log), N workers that each run
their own instance of the module, and an HTTP/1.1 listener that gives each accepted connection to the
next worker, round robin (Envoy balances connections, not requests, over its workers). Two replicas
share nothing but what lives outside them, such as a real Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, TextIO

from .abi import LOG_LEVELS, WasmResult
from .filter import STREAMED, Stream, upstream_failure_reply
from .http1 import HOP_BY_HOP, ProtocolError, Response, UpstreamError, exchange, read_head, reason, serialize
from .vm import Context, LoadError, Plugin, PluginVm, check_module, compile_module


class SharedData:
    """proxy-wasm-cpp-host src/shared_data.cc: per VM id, a value and a CAS number per key."""

    def __init__(self) -> None:
        self.data: dict[str, dict[bytes, tuple[bytes, int]]] = {}
        self.cas = 1

    def _next_cas(self) -> int:
        cas = self.cas
        self.cas = (self.cas + 1) & 0xFFFFFFFF or 1  # 0 is not a valid CAS value
        return cas

    def get(self, vm_id: str, key: bytes) -> tuple[bytes, int] | None:
        return self.data.get(vm_id, {}).get(key)

    def set(self, vm_id: str, key: bytes, value: bytes, cas: int) -> WasmResult:
        space = self.data.setdefault(vm_id, {})
        if key in space and cas != 0 and cas != space[key][1]:
            return WasmResult.CasMismatch
        space[key] = (value, self._next_cas())
        return WasmResult.Ok


class SharedQueues:
    """src/shared_queue.cc: a queue per (VM id, name); the last registrant gets proxy_on_queue_ready."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.tokens: dict[tuple[str, bytes], int] = {}
        self.queues: dict[int, tuple[list[bytes], PluginVm, int]] = {}
        self.next_token = 1

    def register(self, vm_id: str, name: bytes, vm: PluginVm, context_id: int) -> int:
        token = self.tokens.get((vm_id, name))
        if token is None:
            token = self.tokens[(vm_id, name)] = self.next_token
            self.next_token += 1
        items = self.queues[token][0] if token in self.queues else []
        self.queues[token] = (items, vm, context_id)
        return token

    def resolve(self, vm_id: str, name: bytes) -> int:
        return self.tokens.get((vm_id, name), 0)

    def dequeue(self, token: int) -> tuple[WasmResult, bytes]:
        if token not in self.queues:
            return WasmResult.NotFound, b""
        items = self.queues[token][0]
        if not items:
            return WasmResult.Empty, b""
        return WasmResult.Ok, items.pop(0)

    def enqueue(self, token: int, value: bytes) -> WasmResult:
        if token not in self.queues:
            return WasmResult.NotFound
        items, vm, context_id = self.queues[token]
        items.append(value)
        self.loop.call_soon(vm.queue_ready, context_id, token)  # posted to the registrant's worker
        return WasmResult.Ok


class RedisInit(NamedTuple):
    """One proxy_redis_init call as the host received it (kept in `Replica.redis_inits`; never the password)."""

    worker: int
    cluster: str  # as passed, `?db=N` included
    username: str
    password_given: bool
    timeout_ms: int
    result: WasmResult


class Replica:
    """One Envoy process: workers with their VMs, shared data, clusters, a listener, a log."""

    def __init__(
        self,
        wasm: Path,
        plugin: Plugin,
        *,
        clusters: Mapping[str, tuple[str, int]],
        route_cluster: str | None = None,
        routes: Sequence[tuple[str, str, str]] = (),
        workers: int = 2,
        listen: tuple[str, int] = ("127.0.0.1", 0),
        name: str = "replica",
        log_path: Path | None = None,
        log_level: str = "info",
        route_timeout: float = 60.0,
        connect_timeout: float = 1.0,
        buffer_limit: int = 8 * 1024 * 1024,
    ):
        self.wasm = wasm
        self.plugin = plugin
        self.clusters = dict(clusters)
        self.route_cluster = route_cluster
        # Named routes, (host+path prefix, route name, cluster), the first that matches; else the unnamed
        # route to route_cluster. What the `route_name` and `cluster_name` properties say.
        self.routes = list(routes)
        self.worker_count = workers
        self.listen = listen
        self.name = name
        self.log_path = log_path
        self.log_level = LOG_LEVELS.index(log_level)
        self.route_timeout = route_timeout  # route timeout of envoy/envoy.yaml
        self.connect_timeout = connect_timeout  # the clusters' connect_timeout
        self.buffer_limit = buffer_limit  # per_connection_buffer_limit_bytes of envoy/envoy.yaml
        self.shared_data = SharedData()
        self.log_lines: list[str] = []
        self.crashes: list[str] = []
        self.redis_inits: list[RedisInit] = []  # every proxy_redis_init, in order (tests count re-inits)
        self.workers: list[PluginVm] = []
        self.requests_per_worker = [0] * workers
        self.port = 0
        self._next_worker = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._log_file: TextIO | None = None

    def route_for(self, authority: bytes, path: bytes) -> tuple[str, str | None]:
        """The route a request takes: its name ("" when unnamed) and its cluster. A named route matches when
        host (without port) + path starts with its prefix, e.g. `users.example/` or `127.0.0.1/mcp-servers/`."""
        host = authority.rsplit(b":", 1)[0] if authority.count(b":") == 1 else authority
        for prefix, name, cluster in self.routes:
            if (host + path).startswith(prefix.encode()):
                return name, cluster
        return "", self.route_cluster

    @property
    def url(self) -> str:
        return f"http://{self.listen[0]}:{self.port}"

    # --- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> Replica:
        """Load the module, start and configure every worker's VM, then listen. A LoadError says why not,
        with the plugin's own warning and error lines (as Envoy's log would show them)."""
        self.loop = asyncio.get_running_loop()
        self.shared_queues = SharedQueues(self.loop)
        try:
            module = compile_module(self.wasm)
            abi = check_module(module)
            for index in range(self.worker_count):
                vm = PluginVm(self, index, module, abi)
                self.workers.append(vm)
                vm.start()
        except LoadError as exc:
            plugin_lines = [
                line
                for line in self.log_lines
                if "][warning][" in line or "][error][" in line or "][critical][" in line
            ]
            self.log(4, None, f"Unable to create Wasm HTTP filter {self.plugin.name}: {exc}")
            await self.stop()
            raise LoadError("\n".join([str(exc), *plugin_lines])) from None
        self._server = await asyncio.start_server(self._connection, *self.listen)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for vm in self.workers:
            vm.stop()
        self.workers = []
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # --- log and crashes ----------------------------------------------------------------------------------

    def log(self, level: int, worker: int | None, message: str) -> None:
        """A line in Envoy's format, kept in memory and appended to the log file; below the level, dropped."""
        if level < self.log_level:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"
        thread = "main" if worker is None else f"worker_{worker}"
        line = f"[{stamp}][{self.name}/{thread}][{LOG_LEVELS[level]}][wasm] {message}"
        self.log_lines.append(line)
        if self.log_path is not None:
            if self._log_file is None:
                self._log_file = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 - closed by stop()
            self._log_file.write(line + "\n")
            self._log_file.flush()

    def log_text(self) -> str:
        return "\n".join(self.log_lines)

    def record_crash(self, vm: PluginVm, message: str) -> None:
        """A VM failure or a host limitation: logged at critical (as Envoy logs a failed VM) and kept."""
        self.crashes.append(f"worker {vm.index}: {message}")
        self.log(5, vm.index, f"Wasm VM failed {message}")

    def record_redis_init(
        self, vm: PluginVm, cluster: bytes, user: bytes, password: bytes, timeout_ms: int, result: WasmResult
    ) -> None:
        """Test bookkeeping only (Envoy keeps no such record): who initialised which Redis client, and how."""
        text, name = cluster.decode("utf-8", "replace"), user.decode("utf-8", "replace")
        self.redis_inits.append(RedisInit(vm.index, text, name, bool(password), timeout_ms, result))

    # --- upstream calls -------------------------------------------------------------------------------------

    def dispatch(
        self,
        vm: PluginVm,
        root: Context,
        token: int,
        address: tuple[str, int],
        pairs: list[tuple[bytes, bytes]],
        body: bytes,
        timeout_ms: int,
    ) -> None:
        """Context::httpCall's request through Envoy's async client; the answer goes back to the VM."""

        async def run() -> None:
            pseudo = {k: v for k, v in pairs if k.startswith(b":")}
            # Upstreams of Envoy's async client see these, in this order (checked against Envoy 1.40).
            headers = [(b"host", pseudo[b":authority"])]
            headers += [
                (k, v)
                for k, v in pairs
                if not k.startswith(b":")
                and k not in HOP_BY_HOP
                and k != b"host"
                and not (body and k == b"content-length")
            ]
            if body:
                headers.append((b"content-length", str(len(body)).encode()))
            headers.append((b"x-envoy-internal", b"true"))
            if timeout_ms:
                headers.append((b"x-envoy-expected-rq-timeout-ms", str(timeout_ms).encode()))
            started = time.monotonic()
            try:
                answer = await exchange(
                    address,
                    pseudo[b":method"] + b" " + pseudo[b":path"] + b" HTTP/1.1",
                    headers,
                    body,
                    connect_timeout=self.connect_timeout,
                    timeout=timeout_ms / 1000 if timeout_ms else None,
                    head_request=pseudo[b":method"] == b"HEAD",
                )
                elapsed = str(int((time.monotonic() - started) * 1000)).encode()
                answer.headers.append((b"x-envoy-upstream-service-time", elapsed))
            except UpstreamError as error:
                # Before response headers the router answers itself (503/504), which the async client
                # delivers as a response; after them the stream is reset: a failure with no headers.
                answer = None if error.after_headers else upstream_failure_reply(error)
            response = None
            if answer is not None:
                response = Response(
                    answer.status, [(b":status", str(answer.status).encode()), *answer.headers], answer.body
                )
            vm.deliver(lambda: vm.http_call_done(root, token, response))

        task = self.loop.create_task(run())
        self._tasks.add(task)

        def done(task: asyncio.Task) -> None:
            self._tasks.discard(task)
            if not task.cancelled() and task.exception() is not None:
                self.record_crash(vm, f"host error: {task.exception()!r}")

        task.add_done_callback(done)

    # --- the listener -----------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        vm = self.workers[self._next_worker]
        self._next_worker = (self._next_worker + 1) % len(self.workers)
        try:
            while await self._one_request(vm, reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): ending normally keeps Python 3.11's start_server callback from logging an error
        except Exception as exc:  # noqa: BLE001 - a bug of the host: recorded, never hidden
            self.record_crash(vm, f"host error: {exc!r}")
        finally:
            writer.close()

    async def _one_request(self, vm: PluginVm, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One request on a connection; False when the connection must close."""
        try:
            head = await read_head(reader)
        except ProtocolError:
            writer.write(self._serialize(Response(400, [(b"content-type", b"text/plain")], b"Bad Request"), close=True))
            await writer.drain()
            return False
        if head is None:
            return False
        self.requests_per_worker[vm.index] += 1
        stream = Stream(self, vm, head)
        try:
            response, read_all = await stream.run(reader, writer)
            if response is None or response is STREAMED:
                return False  # reset, or a streamed answer (written, then the connection closes)
            keep = read_all and (head.get(b"connection") or b"").lower() != b"close"
            writer.write(self._serialize(response, close=not keep, head_request=head.start[0] == b"HEAD"))
            await writer.drain()
            return keep
        finally:
            stream.finish()

    def _serialize(self, response: Response, close: bool, head_request: bool = False) -> bytes:
        """What the HCM and the HTTP/1 codec add: date, `server: envoy`, framing, connection close."""
        length = next((v for k, v in response.headers if k == b"content-length"), None)
        if response.body or length is None:
            length = str(len(response.body)).encode()  # the whole body was buffered
        headers = [
            (k, v) for k, v in response.headers if k not in HOP_BY_HOP and k not in (b"server", b"content-length")
        ]
        if response.status not in (204, 304) and not 100 <= response.status < 200:
            headers.append((b"content-length", length))
        if not any(k == b"date" for k, _ in headers):
            headers.append((b"date", time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()).encode()))
        headers.append((b"server", b"envoy"))
        if close:
            headers.append((b"connection", b"close"))
        start = b"HTTP/1.1 %d %s" % (response.status, reason(response.status))
        return serialize(start, headers, b"" if head_request else response.body)
