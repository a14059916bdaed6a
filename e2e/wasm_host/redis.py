"""Higress's Redis client behind proxy_redis_init / proxy_redis_call, re-created for the test host.

What it copies (higress-group/envoy, branch envoy-1.27; paths in README.md):
- `source/common/redis/async_client_impl.cc` (AsyncClientImpl): one client per cluster per worker; a
  connection is opened on the first call; `initialize()` (proxy_redis_init) closes the open connections,
  which fails their pending calls, and keeps the new timeout, credentials and `?db=` parameter for the
  connections opened after it. Before any init the defaults are a 1000 ms timeout and no credentials.
- `source/extensions/filters/network/common/redis/raw_client_impl.cc` (RawClientImpl): a new connection
  pipelines `AUTH [user] password` (when a password or user is set) and `SELECT db` (when `db` is given)
  ahead of everything, and ignores their replies; queries are written as given (no validation), in
  batches flushed after 3 ms or at 1024 bytes; one timer covers the connect (the cluster's connect
  timeout) and then each reply (the init timeout, restarted by every reply); when it fires, or the peer
  closes, or a reply is not RESP2, the connection is closed and every pending call fails.
- `codec_impl.cc` (RawDecoderImpl): replies are split into whole RESP2 values and passed on raw.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

FLUSH_BYTES = 1024  # AsyncClientConfig::max_buffer_size_before_flush_
FLUSH_SECONDS = 0.003  # AsyncClientConfig::buffer_flush_timeout_ (3 ms)


class RespError(Exception):
    """Bytes from Redis that are not RESP2 (RawDecoderImpl throws ProtocolError)."""


def _line_end(buf: bytes, pos: int) -> int | None:
    end = buf.find(b"\r\n", pos)
    return None if end < 0 else end


def _value_end(buf: bytes, pos: int) -> int | None:
    """Where the RESP2 value starting at `pos` ends, or None while it is incomplete."""
    if pos >= len(buf):
        return None
    kind = buf[pos : pos + 1]
    if kind not in (b"+", b"-", b":", b"$", b"*"):
        raise RespError(f"invalid value type {kind!r}")
    end = _line_end(buf, pos)
    if end is None:
        return None
    if kind in (b"+", b"-"):
        return end + 2
    try:
        n = int(buf[pos + 1 : end])
    except ValueError:
        raise RespError("invalid integer") from None
    if kind == b":" or n < 0:
        return end + 2
    if kind == b"$":
        stop = end + 2 + n + 2
        if len(buf) < stop:
            return None
        if buf[stop - 2 : stop] != b"\r\n":
            raise RespError("bulk string not followed by CRLF")
        return stop
    at: int | None = end + 2
    for _ in range(n):
        at = _value_end(buf, at)
        if at is None:
            return None
    return at


class RespSplitter:
    """Cuts a byte stream into whole top-level RESP2 values, kept raw."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        values = []
        while (end := _value_end(self._buf, 0)) is not None:
            values.append(self._buf[:end])
            self._buf = self._buf[end:]
        return values


def resp_command(*parts: bytes | str) -> bytes:
    """A command as Envoy's makeRawRequest writes it: an array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        raw = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


@dataclass
class ClientConfig:
    """AsyncClientConfig; the defaults are ConfigImpl's, used until proxy_redis_init is called."""

    op_timeout: float = 1.0
    username: bytes = b""
    password: bytes = b""
    params: dict[str, str] = field(default_factory=dict)


@dataclass
class Pending:
    on_reply: Callable[[bytes], None] | None  # None for the AUTH and SELECT the client sends itself
    on_failure: Callable[[], None] | None


class Connection:
    """RawClientImpl: one connection to the cluster's host, pipelining calls in order."""

    def __init__(self, owner: RedisClient, address: tuple[str, int], config: ClientConfig, connect_timeout: float):
        self.owner = owner
        self.config = config
        self.loop = asyncio.get_running_loop()
        self.pending: deque[Pending] = deque()
        self.out = bytearray()  # the encoder buffer, flushed by size or by the 3 ms timer
        self.unsent = bytearray()  # flushed before the connection is up (Envoy's connection buffers it)
        self.writer: asyncio.StreamWriter | None = None
        self.closed = False
        self.flush_timer: asyncio.TimerHandle | None = None
        self.timer: asyncio.TimerHandle | None = self.loop.call_later(connect_timeout, self.close)
        self.task = self.loop.create_task(self._run(address))
        # RawClientImpl::initialize: credentials and database before anything else; replies ignored.
        if config.username:
            self.send(resp_command("AUTH", config.username, config.password), None, None)
        elif config.password:
            self.send(resp_command("AUTH", config.password), None, None)
        if "db" in config.params:
            self.send(resp_command("SELECT", config.params["db"]), None, None)

    def send(
        self, query: bytes, on_reply: Callable[[bytes], None] | None, on_failure: Callable[[], None] | None
    ) -> None:
        """makeRawRequest: queue the callbacks, buffer the bytes, arm the flush and reply timers."""
        was_empty = not self.out
        self.pending.append(Pending(on_reply, on_failure))
        self.out += query
        if len(self.out) >= FLUSH_BYTES:
            self._flush()
        elif was_empty:
            self.flush_timer = self.loop.call_later(FLUSH_SECONDS, self._flush)
        if self.writer is not None and len(self.pending) == 1:
            self._arm(self.config.op_timeout)

    def _arm(self, seconds: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.loop.call_later(seconds, self.close)

    def _flush(self) -> None:
        if self.flush_timer is not None:
            self.flush_timer.cancel()
            self.flush_timer = None
        if self.closed:
            return
        if self.writer is None:
            self.unsent += self.out
        else:
            self.writer.write(bytes(self.out))
        self.out.clear()

    async def _run(self, address: tuple[str, int]) -> None:
        try:
            reader, self.writer = await asyncio.open_connection(*address)
        except OSError:
            self.close()
            return
        if self.closed:
            self.writer.close()
            return
        self.writer.write(bytes(self.unsent))
        self.unsent.clear()
        self._arm(self.config.op_timeout)  # onEvent(Connected): the reply timer starts
        splitter = RespSplitter()
        try:
            while data := await reader.read(65536):
                for raw in splitter.feed(data):
                    self._on_reply(raw)
        except (OSError, RespError):
            pass
        self.close()

    def _on_reply(self, raw: bytes) -> None:
        """onRawResponse: the oldest pending call gets the reply; the timer restarts or stops."""
        if not self.pending:
            raise RespError("a reply to no request")
        request = self.pending.popleft()
        if request.on_reply is not None:
            request.on_reply(raw)
        if self.pending:
            self._arm(self.config.op_timeout)
        elif self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def close(self) -> None:
        """Close without flushing (timeout, peer close, protocol error, re-init): pending calls fail."""
        if self.closed:
            return
        self.closed = True
        for handle in (self.timer, self.flush_timer):
            if handle is not None:
                handle.cancel()
        if self.writer is not None:
            self.writer.close()
        else:
            self.task.cancel()
        self.owner.forget(self)
        while self.pending:
            request = self.pending.popleft()
            if request.on_failure is not None:
                request.on_failure()


class RedisClient:
    """AsyncClientImpl: the Redis client of one cluster on one worker."""

    def __init__(self, address: tuple[str, int], connect_timeout: float):
        self.address = address
        self.connect_timeout = connect_timeout
        self.config = ClientConfig()
        self.connection: Connection | None = None

    def initialize(self, config: ClientConfig) -> None:
        if self.connection is not None:
            self.connection.close()
        self.config = config

    def send(self, query: bytes, on_reply: Callable[[bytes], None], on_failure: Callable[[], None]) -> None:
        if self.connection is None:
            self.connection = Connection(self, self.address, self.config, self.connect_timeout)
        self.connection.send(query, on_reply, on_failure)

    def forget(self, connection: Connection) -> None:
        """ThreadLocalActiveClient::onEvent: a closed connection is dropped; the next call opens one."""
        if self.connection is connection:
            self.connection = None

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


def parse_query_string(cluster: str) -> dict[str, str]:
    """Http::Utility::parseQueryString on the cluster string: `name?db=1&x=y`, values not decoded."""
    _, sep, query = cluster.partition("?")
    params: dict[str, str] = {}
    if sep:
        for item in query.split("&"):
            if item:
                key, _, value = item.partition("=")
                params.setdefault(key, value)
    return params
