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
  POST   /v1/pets/{petId}/photo        -> 204 (multipart: a file and a caption)
  GET    /v1/store/inventory           -> {"counts": {tag: n}}; 401 Error unless X-API-Key is the key
  GET    /v1/store/status              -> {"open": true, "pets": n}
  ANY    /any/...                      -> 200 {}, or what POST /__answer set (a generic recording endpoint
                                          for any document)
Endpoints (for the tests; not recorded)
  GET    /healthz                      -> {"ok": true}
  GET    /__requests?n=N               -> {"requests": [...]}: the last N recorded requests (all by default),
                                          oldest first. Each: method, target, path (raw, percent-encoding
                                          kept), query (raw), args (name -> [values]), headers (lower-cased
                                          names, repeated ones joined with ", "), header_list ([[name, value]]),
                                          cookies (name -> value), body (text), body_base64 (the bytes),
                                          json (parsed body or null),
                                          form (name -> [values] for a form body, else null)
  DELETE /__requests                   -> 204; forgets the recorded requests
  POST   /__reset                      -> 204; restores the initial pets (and forgets the requests and answer)
  POST   /__answer                     -> 204; /any/ answers the JSON body from now on (null: {} again)
"""

from __future__ import annotations

import argparse
import base64
import collections
import copy
import json
import sys
import threading
from urllib.parse import parse_qs, unquote

import demo_upstream

DEFAULT_API_KEY = "e2e-petstore-key"
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
        self.answer = None
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.pets = copy.deepcopy(INITIAL_PETS)
            self.seq = 100
            self.records.clear()
            self.answer = None

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


class Handler(demo_upstream.Handler):
    """Reuses the demo upstream's HTTP plumbing (body reading, replies, dispatch); only the routes differ."""

    server_version = "petstore-upstream/1.0"

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
            "body_base64": base64.b64encode(body).decode(),
            "json": parsed,
            "form": form,
        }
        STATE.record(rec)
        return rec

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

        if path == "/__answer" and method == "POST":
            with STATE.lock:
                STATE.answer = json.loads(body or b"null")
            self._send(204)
            return

        if path == "/any" or path.startswith("/any/"):
            self._record(path, query, body)
            with STATE.lock:
                answer = STATE.answer
            self._json(200, {} if answer is None else answer)
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


Server = demo_upstream.Server


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8082)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--api-key", default=DEFAULT_API_KEY, help="the X-API-Key that /v1/store/inventory accepts")
    opts = ap.parse_args(argv[1:])
    API_KEY[0] = opts.api_key
    return demo_upstream.serve(Server((opts.host, opts.port), Handler), "petstore upstream")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
