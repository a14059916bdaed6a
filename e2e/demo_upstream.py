#!/usr/bin/env python3
"""A small REST API used as the upstream of the MCP gateway in the demo and the end-to-end tests.

Standard library only (it also runs in a bare python:3.11-slim container).

Usage: demo_upstream.py [PORT]   (or DEMO_PORT=...; default 8081; DEMO_HOST defaults to 127.0.0.1)

Endpoints
  GET  /healthz                      -> 200 {"ok": true}
  GET  /_count?path=/x               -> {"path", "count"}: how many requests /x received so far
  GET  /weather?city=X&units=Y       -> {"city", "units", "temp", "conditions"}
  GET  /users/{id}                   -> {"id", "name", "email"}; 404 {"error": ...} for unknown ids
  POST /orders                       -> 201 {"id", "status", "order": <the JSON body>}
  POST /form                         -> {"form": {...}} from an x-www-form-urlencoded body
  GET  /error                        -> 500 {"error": "..."}
  GET  /status/{code}                -> that status, JSON {"status": code}
  GET  /image.png[?type=T]           -> a valid 1x1 PNG (Content-Type T, image/png by default)
  GET  /audio.wav                    -> a valid WAV of 10 ms of silence (audio/wav)
  GET  /text                         -> text/plain
  GET  /slow?ms=N                    -> sleeps N ms (max 30000), then {"slept_ms": N}
  GET  /big?bytes=N[&chunked=true]   -> a JSON string of N bytes in all (max 64 MiB); chunked: no Content-Length
  GET  /endless?delay_ms=N           -> a chunked JSON answer that never ends (64 KiB chunks, N ms apart;
                                        it stops after 60 s or when the connection closes)
  GET  /deep?depth=N                 -> JSON arrays nested N deep (max 100000): [[[...]]]
  ANY  /echo/...                     -> {"method", "path", "query", "args", "headers", "body"}
          path is the raw request target path (percent-encoding preserved), query the raw query
          string, args the parsed query (name -> list of values), headers a lower-cased dict
          (repeated headers joined with ", "), body the request body as text.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import sys
import threading
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# A 1x1 red PNG.
PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def _wav_silence(ms: int = 10, rate: int = 8000) -> bytes:
    """A valid mono 16-bit PCM WAV of `ms` milliseconds of silence."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * (rate * ms // 1000))
    return out.getvalue()


WAV_SILENCE = _wav_silence()

USERS = {
    "1": {"id": 1, "name": "Ada Lovelace", "email": "ada@example.com"},
    "2": {"id": 2, "name": "Alan Turing", "email": "alan@example.com"},
    "3": {"id": 3, "name": "Grace Hopper", "email": "grace@example.com"},
}

MAX_BODY = 16 * 1024 * 1024

_order_lock = threading.Lock()
_order_seq = [1000]

# How many requests each path received (GET /_count?path=/x reads it; /_count itself is not counted).
_count_lock = threading.Lock()
_counts: dict[str, int] = {}


def _next_order_id() -> int:
    with _order_lock:
        _order_seq[0] += 1
        return _order_seq[0]


class Handler(BaseHTTPRequestHandler):
    server_version = "demo-upstream/1.0"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    # Quiet: no per-request logging.
    def log_message(self, format: str, *args) -> None:  # noqa: A002
        pass

    # --- helpers ---------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    break
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    # trailers
                    while True:
                        trailer = self.rfile.readline(8192)
                        if trailer in (b"\r\n", b"\n", b""):
                            break
                    break
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)  # CRLF after the chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            raise ValueError("bad content length")
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", content_type: str | None = None, extra: dict | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_chunked(self, status: int, chunks) -> None:
        """A JSON answer in chunked transfer encoding (no Content-Length); the connection closes after it."""
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for chunk in chunks:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _json(self, status: int, obj, extra: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json", extra)

    def _error(self, status: int, message: str) -> None:
        """An error answer; subclasses (other upstreams) shape it their way."""
        self._json(status, {"error": message})

    # --- dispatch ---------------------------------------------------------------------------
    def _handle(self) -> None:
        try:
            body = self._read_body()
        except Exception:  # noqa: BLE001
            self.close_connection = True
            self._error(400, "unreadable body")
            return
        split = urlsplit(self.path)
        path, query = split.path, split.query
        method = self.command
        try:
            self._route(method, path, query, body)
        except BrokenPipeError:
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001
            self.close_connection = True
            try:
                self._error(500, f"{self.server_version} failure: {exc.__class__.__name__}: {exc}")
            except Exception:  # noqa: BLE001
                pass

    def _route(self, method: str, path: str, query: str, body: bytes) -> None:
        args = parse_qs(query, keep_blank_values=True)

        def arg(name: str, default: str | None = None) -> str | None:
            values = args.get(name)
            return values[0] if values else default

        if path == "/_count":
            with _count_lock:
                n = _counts.get(arg("path") or "", 0)
            self._json(200, {"path": arg("path"), "count": n})
            return
        with _count_lock:
            if path in _counts or len(_counts) < 10000:
                _counts[path] = _counts.get(path, 0) + 1

        if path == "/echo" or path.startswith("/echo/"):
            headers: dict[str, str] = {}
            for k, v in self.headers.items():
                k = k.lower()
                headers[k] = f"{headers[k]}, {v}" if k in headers else v
            self._json(
                200,
                {
                    "method": method,
                    "path": path,
                    "query": query,
                    "args": args,
                    "headers": headers,
                    "body": body.decode("utf-8", errors="replace"),
                },
            )
            return

        if path == "/healthz":
            self._json(200, {"ok": True})
            return

        if path == "/weather" and method in ("GET", "HEAD"):
            city = arg("city")
            if not city:
                self._json(400, {"error": "missing city"})
                return
            units = arg("units", "metric")
            if units not in ("metric", "imperial"):
                self._json(400, {"error": f"unknown units {units}"})
                return
            # Deterministic per city so tests can compare.
            base = sum(ord(c) for c in city) % 25 + 5
            temp = base if units == "metric" else round(base * 9 / 5 + 32, 1)
            self._json(200, {"city": city, "units": units, "temp": temp, "conditions": "sunny"})
            return

        if path.startswith("/users/") and method in ("GET", "HEAD"):
            uid = path[len("/users/"):]
            user = USERS.get(uid)
            if user is None:
                self._json(404, {"error": f"user {uid} not found"})
            else:
                self._json(200, user)
            return

        if path == "/orders" and method == "POST":
            try:
                order = json.loads(body or b"null")
            except ValueError:
                self._json(400, {"error": "body is not JSON"})
                return
            if not isinstance(order, dict):
                self._json(400, {"error": "order must be a JSON object"})
                return
            self._json(201, {"id": _next_order_id(), "status": "created", "order": order})
            return

        if path == "/form" and method == "POST":
            ctype = self.headers.get("Content-Type", "")
            if not ctype.startswith("application/x-www-form-urlencoded"):
                self._json(415, {"error": f"expected a form body, got {ctype or 'none'}"})
                return
            form = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
            self._json(200, {"form": {k: v[0] if len(v) == 1 else v for k, v in form.items()}})
            return

        if path == "/error":
            self._json(500, {"error": "the demo upstream failed on purpose"})
            return

        if path.startswith("/status/"):
            try:
                code = int(path[len("/status/"):])
                if not 200 <= code <= 599:
                    raise ValueError
            except ValueError:
                self._json(400, {"error": "bad status"})
                return
            if code in (204, 304):
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._json(code, {"status": code})
            return

        if path == "/image.png" and method in ("GET", "HEAD"):
            self._send(200, PNG_1X1, arg("type", "image/png") or "image/png")
            return

        if path == "/audio.wav" and method in ("GET", "HEAD"):
            self._send(200, WAV_SILENCE, "audio/wav")
            return

        if path == "/text" and method in ("GET", "HEAD"):
            self._send(200, b"plain text from the demo upstream", "text/plain; charset=utf-8")
            return

        if path == "/slow":
            try:
                ms = max(0, min(int(arg("ms", "1000")), 30000))
            except ValueError:
                ms = 1000
            time.sleep(ms / 1000)
            self._json(200, {"slept_ms": ms})
            return

        if path == "/big":
            # A JSON string of N bytes in all (for response size limits).
            try:
                n = max(2, min(int(arg("bytes", "1000")), 64 * 1024 * 1024))
            except ValueError:
                n = 1000
            body = b'"' + b"x" * (n - 2) + b'"'
            if arg("chunked") == "true":
                self._send_chunked(200, [body[i:i + (1 << 20)] for i in range(0, n, 1 << 20)])
            else:
                self._send(200, body, "application/json")
            return

        if path == "/endless":
            # An answer that never ends, in chunks (for Envoy's buffer limit and the tool timeout).
            try:
                delay = max(0, min(int(arg("delay_ms", "0")), 10000)) / 1000
            except ValueError:
                delay = 0.0
            deadline = time.monotonic() + 60

            def chunks():
                yield b'"'
                while time.monotonic() < deadline:
                    yield b"x" * 65536
                    if delay:
                        time.sleep(delay)

            self._send_chunked(200, chunks())
            return

        if path == "/deep":
            try:
                depth = max(0, min(int(arg("depth", "10")), 100000))
            except ValueError:
                depth = 10
            self._send(200, b"[" * depth + b"]" * depth, "application/json")
            return

        if path == "/random":
            self._json(200, {"value": random.random()})
            return

        self._json(404, {"error": f"no route for {method} {path}"})

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request, client_address) -> None:  # quiet
        pass


def make_server(host: str = "127.0.0.1", port: int = 8081) -> Server:
    return Server((host, port), Handler)


def serve(srv: Server, what: str) -> int:
    """Announces the server (tests wait for this line) and serves until interrupted."""
    host, port = srv.server_address[:2]
    print(f"{what} listening on http://{host}:{port}", flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


def main(argv: list[str]) -> int:
    port = int(argv[1]) if len(argv) > 1 else int(os.environ.get("DEMO_PORT", "8081"))
    host = os.environ.get("DEMO_HOST", "127.0.0.1")
    return serve(make_server(host, port), "demo upstream")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
