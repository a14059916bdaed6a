"""A stand-in for Higress's `mcp-session` Go filter (plugins/golang-filter/mcp-session/filter.go and
common/sse.go in alibaba/higress), which gives MCP's legacy SSE transport to wasm MCP servers.

It does what that filter does on the paths it handles, read from its sources, and nothing else:
- `GET {prefix}/{server}/sse`: a `text/event-stream` answer whose first event is `endpoint`, data
  `{path without /sse}?sessionId={uuid4}`; every `keepalive` seconds a JSON-RPC `ping` request whose id is the
  time in RFC 3339, as `event: message`; then, forever, the messages published for that session.
- `POST {path}?sessionId=X`: the request goes on unchanged (method, path and query, headers, body) to what
  follows the filter (here: the gateway, i.e. Envoy with the plugin); when the answer has a body, it is
  published for session X as `event: message\\ndata: {body}\\n\\n`; the POST gets the answer itself.

Higress publishes through Redis (channel `mcp-server-sse:{id}`) so that any replica may take the POST; here
one process holds every stream, so the channel is a queue in memory. No session is validated, as in Higress.
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import uuid

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "content-length"}


class HigressSseFilter:
    """The filter in front of `upstream` (the gateway's base URL), listening on 127.0.0.1:`port`."""

    def __init__(self, upstream: str, port: int, keepalive: float = 5.0):
        self.upstream = upstream
        self.port = port
        self.keepalive = keepalive
        self.channels: dict[str, asyncio.Queue[str]] = {}
        self.relayed: list[tuple[str, dict[str, str], bytes]] = []  # what went on to the gateway
        self.published: list[tuple[str, str]] = []  # (session, event) as published
        self.app = Starlette(routes=[Route("/{path:path}", self.handle, methods=["GET", "POST"])])
        self.server: uvicorn.Server | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        if request.method == "GET" and path.endswith("/sse"):
            return self.open_stream(path, request.url.query)
        return await self.relay(request)

    def open_stream(self, path: str, query: str) -> StreamingResponse:
        session = str(uuid.uuid4())
        queue: asyncio.Queue[str] = asyncio.Queue()
        self.channels[session] = queue
        endpoint = path[: -len("/sse")] + ("?" + query + "&" if query else "?") + f"sessionId={session}"

        async def events():
            yield f"event: endpoint\ndata: {endpoint}\n\n"
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), timeout=self.keepalive)
                except asyncio.TimeoutError:
                    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
                    yield f'event: message\ndata: {{"jsonrpc":"2.0","id":"{now}","method":"ping"}}\n\n'

        headers = {"Cache-Control": "no-cache", "Access-Control-Allow-Origin": "*"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def relay(self, request: Request) -> Response:
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        self.relayed.append((target, headers, body))
        async with httpx.AsyncClient(timeout=30) as client:
            answer = await client.request(request.method, self.upstream + target, headers=headers, content=body)
        session = request.query_params.get("sessionId", "")
        if session and answer.content:
            event = f"event: message\ndata: {answer.text}\n\n"
            self.published.append((session, event))
            if session in self.channels:
                self.channels[session].put_nowait(event)
        passed = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        return Response(answer.content, status_code=answer.status_code, headers=passed)

    def start(self) -> HigressSseFilter:
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        for _ in range(100):
            if self.server.started:
                return self
            threading.Event().wait(0.05)
        raise RuntimeError("the SSE filter stand-in did not start")

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
