#!/usr/bin/env python3
"""The REST API of e2e/openapi/petstore_api.yaml, as the upstream of the OpenAPI import tests.

Standard library only. Every request under /v1/ and /any/ is recorded, so that the tests can check
where each argument of a converted tool ended up (path, query, header, cookie or body).

Usage: petstore_upstream.py [--port N] [--host H] [--api-key KEY]   (default 127.0.0.1:8082)

Endpoints (the API; answers match the schemas of petstore_api.yaml)
  GET    /v1/pets?limit=N&tag=a&tag=b  -> {"items": [Pet...], "total": n}
  POST   /v1/pets                      -> 201 Pet (JSON body: NewPet; `name` required)
  GET    /v1/pets/{petId}              -> Pet, or 404 Error
  PUT    /v1/pets/{petId}              -> Pet (JSON body: NewPet, replaces the pet)
  PATCH  /v1/pets/{petId}              -> Pet (JSON body: some of tag, age, vaccinated)
  DELETE /v1/pets/{petId}              -> 204
  POST   /v1/pets/{petId}/photo        -> 204 (multipart; the import skips this operation)
  GET    /v1/store/inventory           -> {"counts": {tag: n}}; 401 Error unless X-API-Key is the key
  GET    /v1/store/status              -> {"open": true, "pets": n}
  ANY    /any/...                      -> 200 {} (a generic recording endpoint for any document)
Endpoints (for the tests; not recorded)
  GET    /healthz                      -> {"ok": true}
  GET    /__requests?n=N               -> {"requests": [...]}: the last N recorded requests (all by default),
                                          oldest first. Each: method, target, path (raw, percent-encoding
                                          kept), query (raw), args (name -> [values]), headers (lower-cased
                                          names, repeated ones joined with ", "), header_list ([[name, value]]),
                                          cookies (name -> value), body (text), json (parsed body or null),
                                          form (name -> [values] for a form body, else null)
  DELETE /__requests                   -> 204; forgets the recorded requests
  POST   /__reset                      -> 204; restores the initial pets (and forgets the requests)
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_API_KEY = "e2e-petstore-key"
MAX_BODY = 4 * 1024 * 1024
MAX_RECORDS = 1000

INITIAL_PETS = {
    "1": {"id": "1", "name": "Rex", "tag": "dog", "age": 3, "vaccinated": True},
    "2": {"id": "2", "name": "Tom", "tag": "cat", "age": 5},
    "3": {"id": "3", "name": "Nemo", "tag": "fish"},
    "Mr Whiskers/2": {"id": "Mr Whiskers/2", "name": "Mr Whiskers", "tag": "cat", "nicknames": ["Whisky"]},
}

NEWPET_TYPES = {
    "name": str,
    "tag": str,
    "age": int,
    "weight": (int, float),
    "vaccinated": bool,
    "nicknames": list,
    "owner": dict,
}


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pets: dict[str, dict] = {}
        self.seq = 100
        self.records: collections.deque = collections.deque(maxlen=MAX_RECORDS)
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.pets = copy.deepcopy(INITIAL_PETS)
            self.seq = 100
            self.records.clear()

    def record(self, rec: dict) -> None:
        with self.lock:
            self.records.append(rec)

    def next_id(self) -> str:
        with self.lock:
            self.seq += 1
            return str(self.seq)


STATE = State()
API_KEY = [DEFAULT_API_KEY]


def newpet_problem(body, partial: bool = False) -> str | None:
    """Why `body` is not a NewPet (or, partial, a PATCH body); None if it is one."""
    if not isinstance(body, dict):
        return "the body must be a JSON object"
    if not partial and not isinstance(body.get("name"), str):
        return "`name` is required and must be a string"
    allowed = ("tag", "age", "vaccinated") if partial else tuple(NEWPET_TYPES)
    for key, value in body.items():
        if key not in allowed:
            return f"unknown field `{key}`"
        want = NEWPET_TYPES[key]
        if isinstance(value, bool) and want is not bool:
            return f"`{key}` has the wrong type"
        if not isinstance(value, want):
            return f"`{key}` has the wrong type"
    if "nicknames" in body and not all(isinstance(n, str) for n in body["nicknames"]):
        return "`nicknames` must be strings"
    if "owner" in body and not isinstance(body["owner"].get("name"), str):
        return "`owner.name` is required"
    return None


class Handler(BaseHTTPRequestHandler):
    server_version = "petstore-upstream/1.0"
    sys_version = ""
    protocol_version = "HTTP/1.1"

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
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0 or length > MAX_BODY:
            raise ValueError("bad content length")
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"code": status, "message": message})

    def _record(self, path: str, query: str, body: bytes) -> dict:
        headers: dict[str, str] = {}
        header_list = []
        cookies: dict[str, str] = {}
        for k, v in self.headers.items():
            header_list.append([k, v])
            k = k.lower()
            headers[k] = f"{headers[k]}, {v}" if k in headers else v
            if k == "cookie":
                for part in v.split(";"):
                    name, sep, value = part.strip().partition("=")
                    if sep:
                        cookies[name] = value
        text = body.decode("utf-8", errors="replace")
        parsed = None
        if body:
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
        form = None
        if headers.get("content-type", "").lower().startswith("application/x-www-form-urlencoded"):
            form = parse_qs(text, keep_blank_values=True)
        rec = {
            "method": self.command,
            "target": self.path,
            "path": path,
            "query": query,
            "args": parse_qs(query, keep_blank_values=True),
            "headers": headers,
            "header_list": header_list,
            "cookies": cookies,
            "body": text,
            "json": parsed,
            "form": form,
        }
        STATE.record(rec)
        return rec

    # --- dispatch ---------------------------------------------------------------------------
    def _handle(self) -> None:
        try:
            body = self._read_body()
        except Exception:  # noqa: BLE001
            self.close_connection = True
            self._error(400, "unreadable body")
            return
        split = urlsplit(self.path)
        try:
            self._route(self.command, split.path, split.query, body)
        except BrokenPipeError:
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001
            self.close_connection = True
            try:
                self._error(500, f"petstore upstream failure: {exc.__class__.__name__}: {exc}")
            except Exception:  # noqa: BLE001
                pass

    def _route(self, method: str, path: str, query: str, body: bytes) -> None:
        # Test endpoints: not recorded.
        if path == "/healthz":
            self._json(200, {"ok": True})
            return
        if path == "/__requests":
            if method == "DELETE":
                with STATE.lock:
                    STATE.records.clear()
                self._send(204)
                return
            args = parse_qs(query)
            with STATE.lock:
                records = list(STATE.records)
            n = int(args.get("n", ["0"])[0] or 0)
            if n > 0:
                records = records[-n:]
            self._json(200, {"requests": records})
            return
        if path == "/__reset" and method == "POST":
            STATE.reset()
            self._send(204)
            return

        if path == "/any" or path.startswith("/any/"):
            self._record(path, query, body)
            self._json(200, {})
            return

        if not path.startswith("/v1/"):
            self._error(404, f"no route for {method} {path}")
            return
        rec = self._record(path, query, body)
        route = path[len("/v1"):]
        parts = route.split("/")[1:]  # raw segments (still percent-encoded)

        if route == "/pets" and method == "GET":
            self._list_pets(rec["args"])
        elif route == "/pets" and method == "POST":
            self._create_pet(rec["json"])
        elif len(parts) == 2 and parts[0] == "pets":
            self._one_pet(method, unquote(parts[1]), rec["json"])
        elif len(parts) == 3 and parts[0] == "pets" and parts[2] == "photo" and method == "POST":
            self._send(204)
        elif route == "/store/inventory" and method == "GET":
            if self.headers.get("X-API-Key") != API_KEY[0]:
                self._error(401, "a valid X-API-Key header is required")
                return
            counts: dict[str, int] = {}
            with STATE.lock:
                for pet in STATE.pets.values():
                    tag = pet.get("tag", "untagged")
                    counts[tag] = counts.get(tag, 0) + 1
            self._json(200, {"counts": counts})
        elif route == "/store/status" and method == "GET":
            with STATE.lock:
                n = len(STATE.pets)
            self._json(200, {"open": True, "pets": n})
        else:
            self._error(404, f"no route for {method} {path}")

    def _list_pets(self, args: dict) -> None:
        limit = 100
        if "limit" in args:
            try:
                limit = int(args["limit"][0])
            except ValueError:
                self._error(400, "limit must be an integer")
                return
            if not 1 <= limit <= 100:
                self._error(400, "limit must be between 1 and 100")
                return
        tags = args.get("tag")
        with STATE.lock:
            pets = [copy.deepcopy(p) for p in STATE.pets.values() if not tags or p.get("tag") in tags]
        self._json(200, {"items": pets[:limit], "total": len(pets)})

    def _create_pet(self, body) -> None:
        problem = newpet_problem(body)
        if problem:
            self._error(400, problem)
            return
        pet = {"id": STATE.next_id(), **body}
        with STATE.lock:
            STATE.pets[pet["id"]] = pet
        self._json(201, pet)

    def _one_pet(self, method: str, pet_id: str, body) -> None:
        with STATE.lock:
            pet = STATE.pets.get(pet_id)
        if pet is None:
            self._error(404, f"pet {pet_id} not found")
            return
        if method in ("GET", "HEAD"):
            self._json(200, pet)
        elif method == "PUT":
            problem = newpet_problem(body)
            if problem:
                self._error(400, problem)
                return
            new = {"id": pet_id, **body}
            with STATE.lock:
                STATE.pets[pet_id] = new
            self._json(200, new)
        elif method == "PATCH":
            problem = newpet_problem(body, partial=True)
            if problem:
                self._error(400, problem)
                return
            with STATE.lock:
                pet.update(body)
                new = copy.deepcopy(pet)
            self._json(200, new)
        elif method == "DELETE":
            with STATE.lock:
                STATE.pets.pop(pet_id, None)
            self._send(204)
        else:
            self._error(405, f"{method} not allowed")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request, client_address) -> None:  # quiet
        pass


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8082)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--api-key", default=DEFAULT_API_KEY, help="the X-API-Key that /v1/store/inventory accepts")
    opts = ap.parse_args(argv[1:])
    API_KEY[0] = opts.api_key
    srv = Server((opts.host, opts.port), Handler)
    print(f"petstore upstream listening on http://{opts.host}:{srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
