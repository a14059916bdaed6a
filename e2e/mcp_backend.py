#!/usr/bin/env python3
"""A real MCP server (the official Python SDK's `MCPServer`, Streamable HTTP at /mcp) used as the backend of
proxied servers (`type: mcp-proxy`) in the end-to-end tests.

Usage: mcp_backend.py PORT [stateful|stateless|json|stateless-json|sse] (json: JSON answers, not SSE; sse: the
legacy SSE transport, GET /sse and POST /messages/)
`GET /silent-sse` is an SSE stream that never sends its endpoint (keep-alive comments only).
Tools: `echo`, `secret` (for allow lists), `whoami` (what credentials reached the backend), `steps` (logs and
reports progress, with pauses, so the answer streams), `ask` (asks the client for elicitation).
"""

from __future__ import annotations

import sys

import anyio
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse

from mcp.server.mcpserver import Context, MCPServer

mcp = MCPServer("backend")
seen_headers: dict[str, str] = {}


@mcp.custom_route("/healthz", methods=["GET"])
async def healthz(_: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


@mcp.custom_route("/silent-sse", methods=["GET"])
async def silent_sse(_: Request) -> StreamingResponse:
    """An SSE stream that never names its endpoint: keep-alive comments only (a stalled SSE backend)."""

    async def comments():
        while True:
            yield ": keep-alive\n\n"
            await anyio.sleep(0.5)

    return StreamingResponse(comments(), media_type="text/event-stream")


@mcp.tool()
def echo(text: str) -> str:
    """Returns the text."""
    return f"echo: {text}"


@mcp.tool()
def secret() -> str:
    """Not for every client."""
    return "the secret"


@mcp.tool()
async def whoami(ctx: Context) -> str:
    """The credentials the backend received (none should arrive through the gateway)."""
    request = ctx.request_context.request
    headers = request.headers if request is not None else {}
    seen = f"authorization={headers.get('authorization', '')!r} cookie={headers.get('cookie', '')!r}"
    if "x-mcp-gateway-loopback" in headers:
        seen += f" loopback={headers['x-mcp-gateway-loopback']!r}"
    if "x-api-key" in headers or "api_key" in str(getattr(request, "url", "")):
        seen += f" x-api-key={headers.get('x-api-key', '')!r} url={str(request.url)!r}"
    return seen


@mcp.prompt()
def greeting(name: str = "you") -> str:
    """A greeting (for authorization tests of proxied prompts)."""
    return f"Hello {name}"


@mcp.prompt()
def internal() -> str:
    """Not for every client."""
    return "internal notes"


@mcp.resource("info://public")
def public_info() -> str:
    """Anyone may read this."""
    return "public"


@mcp.resource("info://private")
def private_info() -> str:
    """Not for every client."""
    return "private"


@mcp.tool()
async def steps(n: int, ctx: Context, pause_ms: int = 300, by: str = "") -> str:
    """Logs and reports progress n times, pausing between steps; the result names `by` if given."""
    for i in range(n):
        await ctx.info(f"step {i + 1} of {n}")
        await ctx.report_progress(i + 1, n, f"step {i + 1}")
        await anyio.sleep(pause_ms / 1000)
    return f"{n} steps done" + (f" by {by}" if by else "")


class Answer(BaseModel):
    name: str


@mcp.tool()
async def ask(ctx: Context) -> str:
    """Asks the client for a name (elicitation)."""
    result = await ctx.elicit("What is your name?", Answer)
    if result.action == "accept" and result.data is not None:
        return f"hello {result.data.name}"
    return f"no name ({result.action})"


if __name__ == "__main__":
    port = int(sys.argv[1])
    mode = sys.argv[2] if len(sys.argv) > 2 else "stateful"
    if mode == "sse":
        mcp.run("sse", host="127.0.0.1", port=port)
        sys.exit(0)
    mcp.run(
        "streamable-http",
        host="127.0.0.1",
        port=port,
        stateless_http="stateless" in mode,
        json_response="json" in mode,
    )
