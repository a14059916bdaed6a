"""Just enough HTTP/1.1 for the test host: the listener's side and the upstream client's side.

Both ends keep the header order and duplicates, because the plugin sees headers as an ordered list
(Envoy's header maps are) and tests compare what an upstream received.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

MAX_HEAD_BYTES = 60 * 1024  # Envoy's default max_request_headers_kb
READ_SIZE = 64 * 1024
# Connection-specific headers, which Envoy's HTTP/1 codec does not pass to filters or upstreams.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"})


class ProtocolError(Exception):
    """A peer broke HTTP/1.1 framing."""


@dataclass
class Head:
    """A request line or status line with its headers (names lower-cased, order kept)."""

    start: list[bytes]
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    def get(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    def body_framing(self) -> tuple[bool, int | None]:
        """(chunked, content length); both unset means "until the connection closes" (responses only)."""
        chunked = b"chunked" in (self.get(b"transfer-encoding") or b"").lower()
        length = self.get(b"content-length")
        if chunked or length is None:
            return chunked, None
        try:
            return False, int(length)
        except ValueError:
            raise ProtocolError(f"bad content-length {length!r}") from None


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """The next request/status line and headers; None on a clean end of the connection."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise ProtocolError("connection closed inside a message head") from None
        return None
    except asyncio.LimitOverrunError:
        raise ProtocolError("message head too large") from None
    lines = raw[:-4].split(b"\r\n")
    head = Head(start=lines[0].split(b" ", 2))
    if len(head.start) < 2:
        raise ProtocolError(f"bad start line {lines[0]!r}")
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise ProtocolError(f"bad header line {line!r}")
        head.headers.append((name.lower(), value.strip()))
    return head


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n")
    except asyncio.LimitOverrunError:
        raise ProtocolError("line too long") from None


async def body_chunks(reader: asyncio.StreamReader, head: Head, *, response: bool = False) -> AsyncIterator[bytes]:
    """The message body as it arrives: one chunk per read, like the reads Envoy's codec dispatches."""
    chunked, length = head.body_framing()
    if chunked:
        while True:
            size_line = await _line(reader)
            try:
                size = int(size_line.split(b";", 1)[0].strip() or b"x", 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size line {size_line!r}") from None
            if size == 0:
                while (await _line(reader)) != b"\r\n":
                    pass  # trailers are dropped
                return
            yield await reader.readexactly(size)
            if await reader.readexactly(2) != b"\r\n":
                raise ProtocolError("chunk not followed by CRLF")
    elif length is not None:
        remaining = length
        while remaining > 0:
            data = await reader.read(min(remaining, READ_SIZE))
            if not data:
                raise ProtocolError("connection closed inside the body")
            remaining -= len(data)
            yield data
    elif response:
        while data := await reader.read(READ_SIZE):
            yield data


def reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def serialize(start: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    lines = [start] + [k + b": " + v for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass
class StreamedResponse:
    """An upstream answer whose body is read as it comes (an SSE stream): its head, its body's chunks, and
    the connection's close."""

    status: int
    headers: list[tuple[bytes, bytes]]
    chunks: AsyncIterator[bytes]
    close: Callable[[], None]


class UpstreamError(Exception):
    """An upstream exchange that ended without a whole response.

    `reason` uses the words of Envoy's reset reasons (Envoy puts them in the body of the 503 it answers
    with); `after_headers` says whether response headers had already arrived, in which case Envoy resets
    the stream instead of answering 503/504; `timeout` marks the end of the caller's time budget."""

    def __init__(self, reason: str, *, after_headers: bool = False, timeout: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.after_headers = after_headers
        self.timeout = timeout


async def exchange(
    address: tuple[str, int],
    request_line: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    connect_timeout: float,
    timeout: float | None,
    head_request: bool = False,
    stream_events: bool = False,
) -> Response | StreamedResponse:
    """One request on a fresh connection, all of it (connect to last body byte) within `timeout`; with
    `stream_events`, an SSE answer's head only, its body read by the caller as it comes."""
    got_head = False

    async def run() -> Response | StreamedResponse:
        nonlocal got_head
        streamed = False
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), connect_timeout)
        except TimeoutError:
            raise UpstreamError("connection timeout") from None
        except OSError:
            raise UpstreamError("remote connection failure") from None
        try:
            writer.write(serialize(request_line, headers, body))
            await writer.drain()
            head = await read_head(reader)
            if head is None:
                raise UpstreamError("connection termination")
            got_head = True
            status = int(head.start[1])
            no_body = head_request or status in (204, 304)
            answer = [(k, v) for k, v in head.headers if k not in HOP_BY_HOP]
            if stream_events and not no_body and (head.get(b"content-type") or b"").startswith(b"text/event-stream"):
                streamed = True
                return StreamedResponse(status, answer, body_chunks(reader, head, response=True), writer.close)
            chunks = [] if no_body else [c async for c in body_chunks(reader, head, response=True)]
            return Response(status, answer, b"".join(chunks))
        except (OSError, asyncio.IncompleteReadError, ProtocolError, ValueError, IndexError):
            raise UpstreamError("connection termination", after_headers=got_head) from None
        finally:
            if not streamed:
                writer.close()

    try:
        async with asyncio.timeout(timeout):
            return await run()
    except TimeoutError:
        raise UpstreamError("upstream request timeout", after_headers=got_head, timeout=True) from None
