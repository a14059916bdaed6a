"""One HTTP request through the wasm filter and then the router, as Envoy runs it for HTTP/1.1.

Sources (Higress's Envoy, branch envoy-1.27): `source/extensions/common/wasm/context.cc` (decodeHeaders,
decodeData, encodeHeaders, encodeData, log, onDestroy, sendLocalResponse, failStream),
`source/common/http/filter_manager.cc` (how a stopped filter's body is buffered and resumed),
`source/common/http/http1/codec_impl.cc` (each read is one decodeData with end_stream=false; the end of
the message is an empty decodeData with end_stream=true), `source/common/http/utility.cc`
prepareLocalReply (the headers of a local reply), and proxy-wasm-cpp-host `src/context.cc` (status
conversion, CHECK_FAIL).
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import TYPE_CHECKING

from .abi import CONTINUE, STOP_ALL_ITERATION_AND_WATERMARK, STOP_ITERATION, Pairs
from .http1 import (
    HOP_BY_HOP,
    Head,
    ProtocolError,
    Response,
    StreamedResponse,
    UpstreamError,
    body_chunks,
    exchange,
    reason,
    serialize,
)

if TYPE_CHECKING:
    from .replica import Replica
    from .vm import PluginVm

STOP_ITERATION_NO_BUFFER = 3  # FilterDataStatus, after proxy_send_local_response
STREAMED = object()  # Stream.run's answer when it wrote a streamed answer to the client itself


def local_reply(code: int, headers: Pairs, body: bytes) -> Response:
    """Utility::prepareLocalReply: the plugin's headers, then content-length and a default content-type."""
    out = [(k.lower(), v) for k, v in headers if k.lower() != b"content-length"]
    if body:
        out.append((b"content-length", str(len(body)).encode()))
        if not any(k == b"content-type" for k, _ in out):
            out.append((b"content-type", b"text/plain"))
    else:
        out = [(k, v) for k, v in out if k != b"content-type"]
    return Response(code, out, body)


def upstream_failure_reply(error: UpstreamError) -> Response:
    """The router's answer when the upstream gave no response headers (Router::Filter::onUpstreamAbort)."""
    if error.timeout:
        return local_reply(504, [], b"upstream request timeout")
    return local_reply(
        503, [], b"upstream connect error or disconnect/reset before headers. reset reason: " + error.reason.encode()
    )


def normalize_path(target: bytes) -> bytes:
    """normalize_path and merge_slashes of envoy/envoy.yaml: dot segments removed, slashes merged."""
    path, sep, query = target.partition(b"?")
    if not path.startswith(b"/"):
        return target
    segments: list[bytes] = []
    parts = re.sub(rb"/+", b"/", path).split(b"/")[1:]
    for i, segment in enumerate(parts):
        last = i == len(parts) - 1
        if segment == b".":
            if last:
                segments.append(b"")
        elif segment == b"..":
            if segments:
                segments.pop()
            if last:
                segments.append(b"")
        else:
            segments.append(segment)
    return b"/" + b"/".join(segments) + sep + query


def request_headers(head: Head) -> Pairs:
    """The header map filters see: pseudo-headers, the client's headers, then what the HCM adds."""
    pairs = [
        (b":authority", head.get(b"host") or b""),
        (b":path", normalize_path(head.start[1])),
        (b":method", head.start[0]),
        (b":scheme", b"http"),
    ]
    pairs += [(k, v) for k, v in head.headers if k not in HOP_BY_HOP and k != b"host"]
    names = {k for k, _ in pairs}
    if b"x-forwarded-proto" not in names:
        pairs.append((b"x-forwarded-proto", b"http"))
    if b"x-request-id" not in names:
        pairs.append((b"x-request-id", str(uuid.uuid4()).encode()))
    return pairs


class Stream:
    """A request's state as the wasm filter's Context and the filter manager hold it.

    The request ends in one outcome: ("reply", response) for a local reply, ("continue", None) to go to
    the router, or ("reset", None)."""

    def __init__(self, replica: Replica, vm: PluginVm, head: Head):
        self.replica = replica
        self.vm = vm
        self.head = head
        self.request_headers = request_headers(head)
        # The route Envoy's router chose for this request (it is chosen before the filters run).
        pseudo = dict(self.request_headers)
        self.route_name, self.route_cluster = replica.route_for(pseudo.get(b":authority", b""), pseudo.get(b":path", b"/"))
        self.request_headers_visible = False  # request_headers_ is set
        self.chunk = bytearray()  # the data of the running decodeData (request_body_buffer_)
        self.request_body_visible = False
        self.buffered = bytearray()  # the filter manager's buffered request data
        self.buffering = False  # buffering_request_body_
        self.forward = bytearray()  # body bytes released to the router
        self.paused = False  # this filter stopped the request (iteration state StopSingleIteration)
        self.stop_all = False  # ... and its body is buffered without calling the filter
        self.complete = False  # end_stream seen
        self.response_headers: Pairs = []
        self.response_headers_visible = False
        self.response_body = bytearray()
        self.response_body_visible = False
        self.complete_response = False  # a streamed answer's last chunk has come from the upstream
        self.access_log = False  # access_log_phase_: inside proxy_on_log
        self.properties: dict[bytes, bytes] = {}
        self.encoding = False  # inside this filter's encodeHeaders/encodeData
        self.encode_reply: Response | None = None  # a local reply sent from there
        # Set while the filter holds the response after its callbacks (StopIteration on its headers or its
        # last data): continueEncoding (proxy_continue_stream(1)) resolves it.
        self.response_held: asyncio.Future[None] | None = None
        # A streamed answer (`_encode_stream`): what happens to it outside the filter's callbacks (resume,
        # local reply, reset) is queued here for its loop.
        self.streaming: asyncio.Queue[tuple] | None = None
        self.outcome: asyncio.Future[tuple[str, Response | None]] = replica.loop.create_future()
        self.context = vm.new_context(vm.root, self)

    # --- what hostcalls act on ----------------------------------------------------------------------

    def visible_body(self, request: bool) -> bytearray | None:
        """Context::getBuffer for the bodies: the buffered data while buffering, else the current data."""
        if not request:
            return self.response_body if self.response_body_visible else None
        if self.buffering:
            return self.buffered
        return self.chunk if self.request_body_visible else None

    def local_reply(self, code: int, headers: Pairs, body: bytes) -> None:
        """The deferred part of Context::sendLocalResponse: one reply at most per stream. While the response's
        headers have not left (this filter's encodeHeaders/encodeData), the filter manager sends it directly
        in the response's place (sendDirectLocalReply: no encoder filter sees it)."""
        if not self.context.local_reply_sent:
            self.context.local_reply_sent = True
            if self.streaming is not None and not self.encoding:
                self.streaming.put_nowait(("reply", local_reply(code, headers, body)))
            elif self.encoding:
                self.encode_reply = local_reply(code, headers, body)
            else:
                self._decide("reply", local_reply(code, headers, body))

    def resume(self, request: bool) -> None:
        """continueDecoding, or continueEncoding of a response the filter holds (`_encode` waits for it)."""
        if not request:
            if self.streaming is not None:
                self.streaming.put_nowait(("resume",))
            if self.response_held is not None and not self.response_held.done():
                self.response_held.set_result(None)
            return
        if request and self.paused and not self.outcome.done():
            self.paused = self.stop_all = False
            self.forward += self.buffered
            self.buffered.clear()
            self.buffering = False
            if self.complete:
                self._decide("continue")

    def reset(self) -> None:
        if self.streaming is not None:
            self.streaming.put_nowait(("reset",))
        self._decide("reset")

    def vm_failed(self) -> None:
        """The VM failed while this stream waited. Envoy would leave it until a stream timeout; the test
        host fails it now, as CHECK_FAIL does for the stream whose callback trapped."""
        self._fail_stream()

    # --- internals -------------------------------------------------------------------------------------

    def _decide(self, kind: str, response: Response | None = None) -> None:
        if not self.outcome.done():
            self.outcome.set_result((kind, response))

    def _fail_stream(self) -> None:
        """Context::failStream: 503 with no body, unless a local reply was already sent."""
        if not self.context.local_reply_sent:
            self.context.local_reply_sent = True
            self._decide("reply", local_reply(503, [], b""))

    def _check_fail(self) -> bool:
        """CHECK_FAIL_HTTP with failure_policy FAIL_CLOSED: a failed VM fails the stream."""
        if not self.vm.failed:
            return False
        self._fail_stream()
        return True

    def _status(self, result: int | None, stopped: bool, *, headers: bool) -> int:
        """convertVmCallResultToFilter{Headers,Data}Status, for the values a proxy-wasm SDK returns."""
        if stopped:
            return STOP_ALL_ITERATION_AND_WATERMARK if headers else STOP_ITERATION_NO_BUFFER
        assert result is not None
        honoured = self.vm.abi == "proxy_abi_version_0_2_100" or self.vm.plugin.allow_on_headers_stop_iteration
        if headers and result == STOP_ITERATION and not honoured:
            return STOP_ALL_ITERATION_AND_WATERMARK  # Higress's cpp-host; proxy-wasm-cpp-host issue #143
        if result not in (CONTINUE, STOP_ITERATION):
            self.replica.record_crash(self.vm, f"host error: filter status {result} is not emulated by the test host")
        return result

    def _on_create(self) -> None:
        """ContextBase::onCreate."""
        context = self.context
        if not self.vm.failed and not context.created:
            self.vm.invoke(context, "proxy_on_context_create", context.id, self.vm.root.id)
        context.created = True

    def decode_headers(self, end_stream: bool) -> None:
        self.complete = end_stream
        if self._check_fail():
            return
        self._on_create()
        self.request_headers_visible = True
        context = self.context
        result, stopped = self.vm.invoke(
            context, "proxy_on_request_headers", context.id, len(self.request_headers), int(end_stream)
        )
        if self._check_fail():
            return
        status = self._status(result, stopped, headers=True)
        if status == CONTINUE:
            self.request_headers_visible = False
            if end_stream:
                self._decide("continue")
        else:
            self.paused = True
            self.stop_all = status != STOP_ITERATION

    def decode_data(self, data: bytes, end_stream: bool) -> None:
        """Context::decodeData, then what the filter manager does with the status."""
        self.complete = end_stream
        if self.outcome.done():
            return  # state_.local_complete_: the body is dropped
        if self.stop_all:
            self.buffered += data  # handleDataIfStopAll: buffered, the filter is not called
            self._check_buffer_limit()
            return
        if self._check_fail():
            return
        context = self.context
        chunk = bytearray(data)
        self.chunk, self.request_body_visible = chunk, True
        size = len(self.buffered) if self.buffering else len(chunk)
        result, stopped = self.vm.invoke(context, "proxy_on_request_body", context.id, size, int(end_stream))
        if self._check_fail():
            return
        self.buffering = False
        status = self._status(result, stopped, headers=False)
        if status == CONTINUE:
            self.request_body_visible = False
            if self.paused:  # commonHandleBufferData + commonContinue
                self.buffered += chunk
                self.resume(request=True)
            else:
                self.forward += chunk
                if end_stream:
                    self._decide("continue")
        elif status == STOP_ITERATION:  # StopIterationAndBuffer: the data moves into the buffer
            self.paused = True
            self.buffered += chunk
            chunk.clear()
            self.buffering = True
            self._check_buffer_limit()
        else:
            self.paused = True  # StopIterationNoBuffer: the data is the filter's to keep; it is dropped

    def _check_buffer_limit(self) -> None:
        """A buffering filter over the buffer limit (per_connection_buffer_limit_bytes) gets a 413."""
        if len(self.buffered) > self.replica.buffer_limit:
            self.context.local_reply_sent = True
            self._decide("reply", local_reply(413, [], b"Payload Too Large"))

    async def _route(self) -> Response | None:
        """The router: the request as the filter left it, to the route's cluster; None is a reset. The route
        is chosen again from the headers as they are now: Envoy clears the route cache when a filter (this
        plugin) rewrites the request's headers."""
        pseudo = dict(self.request_headers)
        self.route_name, self.route_cluster = self.replica.route_for(
            pseudo.get(b":authority", b""), pseudo.get(b":path", b"/")
        )
        address = self.replica.clusters.get(self.route_cluster or "")
        if address is None:
            return local_reply(404, [], b"")  # no route
        pseudo = {k: v for k, v in self.request_headers if k.startswith(b":")}
        headers = [(b"host", pseudo.get(b":authority", b""))]
        headers += [(k, v) for k, v in self.request_headers if not k.startswith(b":") and k != b"content-length"]
        body = bytes(self.forward)
        method = pseudo.get(b":method", b"GET")
        if body or self.head.get(b"content-length") is not None:
            headers.append((b"content-length", str(len(body)).encode()))
        timeout = self.replica.route_timeout
        headers.append((b"x-envoy-expected-rq-timeout-ms", str(int(timeout * 1000)).encode()))
        started = time.monotonic()
        try:
            answer = await exchange(
                address,
                method + b" " + pseudo.get(b":path", b"/") + b" HTTP/1.1",
                headers,
                body,
                connect_timeout=self.replica.connect_timeout,
                timeout=timeout,
                head_request=method == b"HEAD",
                stream_events=method == b"GET",
            )
        except UpstreamError as error:
            return None if error.after_headers else upstream_failure_reply(error)
        if isinstance(answer, StreamedResponse):
            return answer
        elapsed = str(int((time.monotonic() - started) * 1000)).encode()
        return Response(answer.status, answer.headers + [(b"x-envoy-upstream-service-time", elapsed)], answer.body)

    async def _encode(self, response: Response) -> Response:
        """encodeHeaders / encodeData of the wasm filter (local replies pass through it as well). The whole
        answer is in: its body comes as one chunk with end_stream. Headers paused with StopIteration (honoured
        for ABI 0.2.100, or with allow_on_headers_stop_iteration) still get the body, and wait for it; a
        local reply sent from either callback replaces the response. A response still held after the last
        callback (the filter waits for Redis) waits for continueEncoding; meanwhile its headers and its
        buffered body (Envoy's encodingBuffer) stay readable and writable by the filter, from any callback."""
        context = self.context
        self.response_headers = [(b":status", str(response.status).encode()), *response.headers]
        self.response_body = bytearray(response.body)
        if context.created and not context.destroyed and not self.vm.failed:
            self.encoding = True
            try:
                self.response_headers_visible = True
                eos = int(not response.body)
                call = self.vm.invoke(context, "proxy_on_response_headers", context.id, len(self.response_headers), eos)
                if self.encode_reply is not None:
                    return self.encode_reply
                paused = self._encoded(call, headers=True, end_stream=bool(eos))
                # response_headers_ stays set while the headers are held, as the request's do (decode_headers)
                self.response_headers_visible = paused
                if response.body and not self.vm.failed:
                    self.response_body_visible = True
                    call = self.vm.invoke(context, "proxy_on_response_body", context.id, len(response.body), 1)
                    self.response_body_visible = False
                    if self.encode_reply is not None:
                        return self.encode_reply
                    paused = self._encoded(call, headers=False, end_stream=True)
            finally:
                self.encoding = False
            if paused and not self.vm.failed:
                self.response_held = self.replica.loop.create_future()
                self.response_body_visible = True  # buffering_response_body_: the encoding buffer
                try:
                    await asyncio.wait_for(self.response_held, self.replica.route_timeout)
                except asyncio.TimeoutError:
                    self.replica.record_crash(self.vm, "host error: the response was left paused at its end")
                self.response_body_visible = False
            self.response_headers_visible = False
            if self.vm.failed:
                return local_reply(503, [], b"")  # the response side's failStream
        status = next((v for k, v in self.response_headers if k == b":status"), b"")
        headers = [(k, v) for k, v in self.response_headers if not k.startswith(b":")]
        return Response(int(status) if status.isdigit() else response.status, headers, bytes(self.response_body))

    async def _encode_stream(self, upstream: StreamedResponse, writer: asyncio.StreamWriter) -> None:
        """encodeHeaders / encodeData of an SSE answer to a GET, chunk by chunk as the upstream sends them,
        written to the client as they leave the filter (chunked; the connection closes at the end). As in
        Envoy: a filter that stops the headers still gets the body; a chunk it stops is buffered, the
        buffer (encodingBuffer, what getBuffer returns while buffering) growing with the next chunks, which
        still come to it; Continue from a data callback, or continueEncoding (proxy_continue_stream(1)) from
        anywhere, sends the held headers and the buffer. A local reply while the headers are held replaces
        the answer (the upstream is closed); after they left, the stream is reset (the connection closed)."""
        context = self.context
        queue: asyncio.Queue[tuple] = asyncio.Queue()
        self.streaming = queue
        self.response_headers = [(b":status", str(upstream.status).encode()), *upstream.headers]
        self.response_body = bytearray()
        head_sent = paused = buffering = False

        def send_head() -> None:
            status = next((v for k, v in self.response_headers if k == b":status"), b"200")
            code = int(status) if status.isdigit() else upstream.status
            drop = HOP_BY_HOP | {b"content-length", b"server"}
            headers = [(k, v) for k, v in self.response_headers if not k.startswith(b":") and k not in drop]
            headers += [(b"transfer-encoding", b"chunked"), (b"server", b"envoy"), (b"connection", b"close")]
            writer.write(serialize(b"HTTP/1.1 %d %s" % (code, reason(code)), headers, b""))

        def send_data(data: bytes) -> None:
            if data:
                writer.write(b"%x\r\n" % len(data) + data + b"\r\n")

        def send_reply(response: Response) -> None:
            headers = [(k, v) for k, v in response.headers if k not in HOP_BY_HOP and k != b"server"]
            headers += [(b"server", b"envoy"), (b"connection", b"close")]
            if not any(k == b"content-length" for k, _ in headers):
                headers.append((b"content-length", str(len(response.body)).encode()))
            start = b"HTTP/1.1 %d %s" % (response.status, reason(response.status))
            writer.write(serialize(start, headers, response.body))

        async def pump() -> None:
            try:
                async for chunk in upstream.chunks:
                    queue.put_nowait(("data", chunk, False))
                queue.put_nowait(("data", b"", True))
            except (OSError, asyncio.IncompleteReadError, ProtocolError):
                queue.put_nowait(("reset",))

        reading = asyncio.ensure_future(pump())
        try:
            usable = context.created and not context.destroyed and not self.vm.failed
            if usable:
                self.encoding = self.response_headers_visible = True
                call = self.vm.invoke(context, "proxy_on_response_headers", context.id, len(self.response_headers), 0)
                self.encoding = False
                if self.encode_reply is not None:
                    send_reply(self.encode_reply)
                    return
                paused = self._encoded(call, headers=True, end_stream=False)
                self.response_headers_visible = paused
            if not paused:
                send_head()
                head_sent = True
            while True:
                await writer.drain()
                event = await queue.get()
                if event[0] == "reset" or self.vm.failed:
                    if not head_sent:
                        send_reply(local_reply(503, [], b""))
                    return
                if event[0] == "reply":
                    if not head_sent:
                        send_reply(event[1])
                    return
                if event[0] == "resume":
                    if not paused:
                        continue
                    chunk, end = b"", self.complete_response
                else:
                    _, chunk, end = event
                    self.complete_response = end
                    if not usable:
                        send_data(chunk)
                        if end:
                            writer.write(b"0\r\n\r\n")
                            return
                        continue
                    if buffering:
                        self.response_body += chunk
                    else:
                        self.response_body = bytearray(chunk)
                    self.response_body_visible = self.encoding = True
                    call = self.vm.invoke(
                        context, "proxy_on_response_body", context.id, len(self.response_body), int(end)
                    )
                    self.encoding = False
                    if self.encode_reply is not None:
                        if not head_sent:
                            send_reply(self.encode_reply)
                        return
                    if self.vm.failed:
                        continue
                    if self._status(*call, headers=False) == STOP_ITERATION:
                        paused = buffering = True  # the buffer stays readable and writable
                        continue
                # Continue, or continueEncoding: the held headers, then the buffered body.
                paused = buffering = False
                self.response_headers_visible = self.response_body_visible = False
                if not head_sent:
                    send_head()
                    head_sent = True
                send_data(bytes(self.response_body))
                self.response_body = bytearray()
                if end:
                    writer.write(b"0\r\n\r\n")
                    return
        except (ConnectionError, OSError):
            return
        finally:
            self.streaming = None
            self.response_headers_visible = self.response_body_visible = False
            reading.cancel()
            upstream.close()

    def _encoded(self, call: tuple[int | None, bool], *, headers: bool, end_stream: bool) -> bool:
        """Whether the filter left the response paused after this callback."""
        if self.vm.failed:
            return False
        status = self._status(*call, headers=headers)
        if status == CONTINUE:
            return False
        if headers and status == STOP_ITERATION:
            return True  # the body (if any) still comes to the filter; continueEncoding releases the headers
        if not headers and status == STOP_ITERATION:
            return True
        self.replica.record_crash(self.vm, f"host error: response filter status {status} is not emulated")
        return False

    def finish(self) -> None:
        """Stream end: the access log (on_log), then onDestroy (on_done, on_delete); the context goes."""
        context = self.context
        if not self.vm.failed:
            self._on_create()  # Context::log creates the context of a request it never saw
            self.access_log = True  # the request and response headers are readable again
            self.vm.invoke(context, "proxy_on_log", context.id)
            self.access_log = False
        if context.created and not context.destroyed:
            context.destroyed = True
            self.vm.invoke(context, "proxy_on_done", context.id)
            self.vm.invoke(context, "proxy_on_delete", context.id)
        self.vm.delete_context(context)

    # --- the whole request ------------------------------------------------------------------------------

    async def run(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None = None
    ) -> tuple[Response | object | None, bool]:
        """Decode, wait for the outcome, route or reply, encode. Returns the response (None: reset;
        STREAMED: an SSE answer to a GET, written to `writer` as it came) and whether the request was read
        to its end (else the connection cannot be reused)."""
        chunked, length = self.head.body_framing()
        self.decode_headers(end_stream=not chunked and not length)
        read_all = True
        if not self.complete:
            read_all = await self._read_body(reader)
        kind, response = await self.outcome
        if kind == "continue":
            response = await self._route()
        if isinstance(response, StreamedResponse):
            assert writer is not None
            await self._encode_stream(response, writer)
            return STREAMED, read_all
        if response is not None:
            response = await self._encode(response)
        return response, read_all

    async def _read_body(self, reader: asyncio.StreamReader) -> bool:
        """Body reads until the end, or until the outcome is decided first (then the rest is unread)."""
        chunks = body_chunks(reader, self.head).__aiter__()
        while not self.outcome.done():
            read = asyncio.ensure_future(chunks.__anext__())
            await asyncio.wait({read, self.outcome}, return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()
                return False
            try:
                data = read.result()
            except StopAsyncIteration:
                self.decode_data(b"", end_stream=True)
                return True
            except (ProtocolError, OSError, asyncio.IncompleteReadError):
                self.reset()
                return False
            self.decode_data(data, end_stream=False)
        return False
