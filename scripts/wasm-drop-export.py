#!/usr/bin/env python3
"""Removes named exports from a wasm module, in place (stdlib only).

Why: the Higress build must announce proxy-wasm ABI 0.2.100, Higress's own version, because Higress turns a
plugin's pause on request headers into "stop everything" (no body delivered) for modules on ABI 0.2.0/0.2.1
(higress-group/proxy-wasm-cpp-host src/context.cc, convertVmCallResultToFilterHeadersStatus), and the host
takes the first `proxy_abi_version_*` export it finds (src/bytecode_util.cc). The proxy-wasm crate always
exports `proxy_abi_version_0_2_1`, so that export is dropped from the Higress artifact after linking.

Also (scripts/wasm-opt.sh, every artifact): callbacks the plugin does nothing in (`proxy_on_log`,
`proxy_on_done`), which the proxy-wasm crate always exports. proxy-wasm-cpp-host skips the VM entry for a
callback the module does not export (src/context.cc, ContextBase::onLog/onDone), so each request costs Envoy
two calls into the VM fewer; the stream's state is freed in `proxy_on_delete` instead (src/host/mod.rs).

Usage: wasm-drop-export.py [--if-present] MODULE.wasm NAME [NAME...]
(fails if a NAME is not exported, unless --if-present: a module already without it is left as it is)
"""

from __future__ import annotations

import sys
from collections.abc import Callable


def leb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def rewrite_exports(module: bytes, rename: Callable[[str], str | None]) -> bytes:
    """The module with each export renamed to `rename(name)`, or dropped where that is None."""
    if module[:4] != b"\0asm":
        raise ValueError("not a wasm module")
    out = bytearray(module[:8])
    pos = 8
    while pos < len(module):
        section_id = module[pos]
        size, body_start = leb(module, pos + 1)
        body_end = body_start + size
        if section_id != 7:  # not the export section: copied as is
            out += module[pos:body_end]
            pos = body_end
            continue
        count, p = leb(module, body_start)
        kept = []
        for _ in range(count):
            name_len, p = leb(module, p)
            name = module[p : p + name_len].decode()
            p += name_len
            rest_start = p
            p += 1  # the export kind byte
            _, p = leb(module, p)  # the index
            new = rename(name)
            if new is not None:
                kept.append(uleb(len(new.encode())) + new.encode() + module[rest_start:p])
        body = uleb(len(kept)) + b"".join(kept)
        out += bytes([7]) + uleb(len(body)) + body
        pos = body_end
    return bytes(out)


def drop_exports(module: bytes, names: set[str]) -> tuple[bytes, set[str]]:
    """The module without those exports, and the names that were found."""
    found: set[str] = set()

    def keep(name: str) -> str | None:
        if name in names:
            found.add(name)
            return None
        return name

    return rewrite_exports(module, keep), found


def main() -> int:
    args = sys.argv[1:]
    if_present = args[:1] == ["--if-present"]
    args = args[1:] if if_present else args
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path, names = args[0], set(args[1:])
    with open(path, "rb") as f:
        module = f.read()
    result, found = drop_exports(module, names)
    if if_present and not found:
        return 0  # nothing to drop: the file is not rewritten
    if found != names and not if_present:
        print(f"{path}: not exported: {', '.join(sorted(names - found))}", file=sys.stderr)
        return 1
    with open(path, "wb") as f:
        f.write(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
