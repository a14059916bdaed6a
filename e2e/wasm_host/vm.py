"""One instance of the plugin module with its contexts and every hostcall Higress's Envoy provides.

An instance is what Envoy calls a thread-local Wasm: each worker has its own. Hostcalls are methods
named like the import (`proxy_log`, `fd_write`, ...) and follow proxy-wasm-cpp-host `src/exports.cc`
(argument checks, memory handling, status codes) and Envoy's `source/extensions/common/wasm/context.cc`
(what each call does), both as Higress builds them; README.md lists the commits. A comment names the
source of each behaviour that is not obvious.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import wasmtime

from . import redis
from .abi import BufferType, MapType, Pairs, RedisStatus, StreamType, WasmResult, decode_pairs, encode_pairs
from .http1 import Response

if TYPE_CHECKING:
    from .filter import Stream
    from .replica import Replica

I32 = wasmtime.ValType.i32()
I64 = wasmtime.ValType.i64()

# Callouts carry their type in the low two bits of the token (Higress's include/proxy-wasm/wasm.h).
HTTP_CALL, GRPC_CALL, GRPC_STREAM, REDIS_CALL = 0, 1, 2, 3

RANDOM_GET_MAX = 64 * 1024  # PROXY_WASM_HOST_WASI_RANDOM_GET_MAX_SIZE_BYTES


def _sig(params: str, results: str = "i") -> tuple[list[wasmtime.ValType], list[wasmtime.ValType]]:
    kinds = {"i": I32, "I": I64}
    return [kinds[c] for c in params], [kinds[c] for c in results]


# Every function Higress's Envoy registers for a proxy_abi_version_0_2_1 module (Higress's
# proxy-wasm-cpp-host src/wasm.cc registerCallbacks, include/proxy-wasm/exports.h), with its wasm32
# signature: "i" i32, "I" i64. Word arguments are i32 on wasm32; int64_t/uint64_t ones stay i64.
ENV_FUNCTIONS = {
    "pthread_equal": _sig("ii"),
    "emscripten_notify_memory_growth": _sig("i", ""),
    "proxy_log": _sig("iii"),
    "proxy_get_log_level": _sig("i"),
    "proxy_get_status": _sig("iii"),
    "proxy_set_property": _sig("iiii"),
    "proxy_get_property": _sig("iiii"),
    "proxy_send_local_response": _sig("iiiiiiii"),
    "proxy_get_shared_data": _sig("iiiii"),
    "proxy_set_shared_data": _sig("iiiii"),
    "proxy_register_shared_queue": _sig("iii"),
    "proxy_resolve_shared_queue": _sig("iiiii"),
    "proxy_dequeue_shared_queue": _sig("iii"),
    "proxy_enqueue_shared_queue": _sig("iii"),
    "proxy_get_header_map_value": _sig("iiiii"),
    "proxy_add_header_map_value": _sig("iiiii"),
    "proxy_replace_header_map_value": _sig("iiiii"),
    "proxy_remove_header_map_value": _sig("iii"),
    "proxy_get_header_map_pairs": _sig("iii"),
    "proxy_set_header_map_pairs": _sig("iii"),
    "proxy_get_header_map_size": _sig("ii"),
    "proxy_get_buffer_status": _sig("iii"),
    "proxy_get_buffer_bytes": _sig("iiiii"),
    "proxy_set_buffer_bytes": _sig("iiiii"),
    "proxy_http_call": _sig("iiiiiiiiii"),
    "proxy_grpc_call": _sig("iiiiiiiiiiii"),
    "proxy_grpc_stream": _sig("iiiiiiiii"),
    "proxy_grpc_close": _sig("i"),
    "proxy_grpc_cancel": _sig("i"),
    "proxy_grpc_send": _sig("iiii"),
    "proxy_set_tick_period_milliseconds": _sig("i"),
    "proxy_get_current_time_nanoseconds": _sig("i"),
    "proxy_define_metric": _sig("iiii"),
    "proxy_increment_metric": _sig("iI"),
    "proxy_record_metric": _sig("iI"),
    "proxy_get_metric": _sig("ii"),
    "proxy_set_effective_context": _sig("i"),
    "proxy_done": _sig(""),
    "proxy_call_foreign_function": _sig("iiiiii"),
    "proxy_continue_stream": _sig("i"),
    "proxy_close_stream": _sig("i"),
    # Higress only.
    "proxy_redis_init": _sig("iiiiiii"),
    "proxy_redis_call": _sig("iiiii"),
    "proxy_get_upstream_hosts": _sig("ii"),
    "proxy_inject_encoded_data_to_filter_chain": _sig("iii"),
    "proxy_set_upstream_override_host": _sig("ii"),
}
# Registered for both "wasi_unstable" and "wasi_snapshot_preview1" (FOR_ALL_WASI_FUNCTIONS). The
# signatures are Higress's cpp-host's, which differ from WASI's for path_link, path_rename, path_symlink.
WASI_FUNCTIONS = {
    "fd_write": _sig("iiii"),
    "fd_read": _sig("iiii"),
    "fd_seek": _sig("iIii"),
    "fd_close": _sig("i"),
    "fd_fdstat_get": _sig("ii"),
    "fd_fdstat_set_flags": _sig("ii"),
    "fd_fdstat_set_rights": _sig("iII"),
    "environ_get": _sig("ii"),
    "environ_sizes_get": _sig("ii"),
    "args_get": _sig("ii"),
    "args_sizes_get": _sig("ii"),
    "clock_time_get": _sig("iIi"),
    "clock_res_get": _sig("ii"),
    "fd_advise": _sig("iIIi"),
    "fd_allocate": _sig("iII"),
    "fd_datasync": _sig("i"),
    "fd_filestat_set_size": _sig("iI"),
    "fd_filestat_set_times": _sig("iIIi"),
    "fd_pread": _sig("iiiIi"),
    "fd_pwrite": _sig("iiiIi"),
    "fd_readdir": _sig("iiiIi"),
    "fd_renumber": _sig("ii"),
    "fd_sync": _sig("i"),
    "fd_tell": _sig("ii"),
    "path_create_directory": _sig("iii"),
    "path_filestat_set_times": _sig("iiiiIIi"),
    "path_link": _sig("iiiiii"),
    "path_readlink": _sig("iiiiii"),
    "path_remove_directory": _sig("iii"),
    "path_rename": _sig("iiiii"),
    "path_symlink": _sig("iiii"),
    "path_unlink_file": _sig("iii"),
    "sock_accept": _sig("iii"),
    "sock_recv": _sig("iiiiii"),
    "sock_send": _sig("iiiii"),
    "sock_shutdown": _sig("ii"),
    "random_get": _sig("ii"),
    "sched_yield": _sig(""),
    "poll_oneoff": _sig("iiii"),
    "proc_exit": _sig("i", ""),
    "path_open": _sig("iiiiiIIii"),
    "fd_prestat_get": _sig("ii"),
    "fd_prestat_dir_name": _sig("iii"),
    "path_filestat_get": _sig("iiiii"),
    "fd_filestat_get": _sig("ii"),
}
WASI_MODULES = ("wasi_unstable", "wasi_snapshot_preview1")

# Envoy provides these; this test host does not emulate them, so a call traps (loudly) instead of
# pretending. A module that merely imports them loads, as it would in Higress.
NOT_EMULATED = frozenset(
    {
        "proxy_grpc_call",
        "proxy_grpc_stream",
        "proxy_call_foreign_function",
        "proxy_get_upstream_hosts",
        "proxy_inject_encoded_data_to_filter_chain",
        "proxy_set_upstream_override_host",
    }
)

# Hostcalls allowed while `_initialize` (and `main`) run; any other one traps with "restricted_callback"
# (Higress's src/wasm.cc startVm, src/v8/v8.cc). Higress no longer restricts calls made inside `malloc`.
START_ALLOWED = frozenset({"proxy_log", *WASI_FUNCTIONS}) - {
    "fd_read",
    "fd_seek",
    "fd_close",
    "sched_yield",
    "proc_exit",
    "path_open",
}

# proxy_abi_version_0_2_100 is Higress's: 0.2.1 whose StopIteration from on_request_headers is honoured.
ABI_VERSIONS = ("proxy_abi_version_0_2_0", "proxy_abi_version_0_2_1", "proxy_abi_version_0_2_100")
# Exports the host calls, with the signature it calls them with (src/wasm.cc getFunctions; a mismatch
# fails the load with "Bad function signature for: ...").
CALLBACKS = {
    "_initialize": _sig("", ""),
    "_start": _sig("", ""),
    "main": _sig("ii"),
    "malloc": _sig("i"),
    "proxy_on_memory_allocate": _sig("i"),
    "proxy_on_context_create": _sig("ii", ""),
    "proxy_on_vm_start": _sig("ii"),
    "proxy_on_configure": _sig("ii"),
    "proxy_on_tick": _sig("i", ""),
    "proxy_on_queue_ready": _sig("ii", ""),
    "proxy_on_done": _sig("i"),
    "proxy_on_log": _sig("i", ""),
    "proxy_on_delete": _sig("i", ""),
    "proxy_on_request_headers": _sig("iii"),
    "proxy_on_request_body": _sig("iii"),
    "proxy_on_response_headers": _sig("iii"),
    "proxy_on_response_body": _sig("iii"),
    "proxy_on_http_call_response": _sig("iiiii", ""),
    "proxy_on_redis_call_response": _sig("iiii", ""),
}


class LoadError(Exception):
    """The module cannot be loaded; the message is Envoy's for the same case where there is one."""


class HostTrap(Exception):
    """Ends the running wasm call the way a trap does (a restricted or not-emulated hostcall)."""


def _engine() -> wasmtime.Engine:
    """wasmtime's own on-disk cache of compiled code (~/.cache/wasmtime, as its CLI uses): compiling the
    plugin takes 1-4 s, loading it again from the cache about 10 ms."""
    config = wasmtime.Config()
    config.cache = True
    return wasmtime.Engine(config)


ENGINE = _engine()
_MODULES: dict[tuple[str, int, int], wasmtime.Module] = {}


def compile_module(path: Path) -> wasmtime.Module:
    """Compiled (or loaded from the cache) once per file version and process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _MODULES:
        try:
            _MODULES[key] = wasmtime.Module(ENGINE, path.read_bytes())
        except wasmtime.WasmtimeError as exc:
            raise LoadError(f"Failed to load Wasm bytecode: {exc}") from None
    return _MODULES[key]


def check_module(module: wasmtime.Module) -> str:
    """Envoy's load-time checks (cpp-host src/bytecode_util.cc, src/v8/v8.cc link, src/wasm.cc); returns the ABI."""
    exports = {e.name: e.type for e in module.exports}
    abi = next((name for name in ABI_VERSIONS if name in exports), None)
    if abi is None:
        if "proxy_abi_version_0_1_0" in exports:
            raise LoadError("the test host does not implement ABI 0.1.0 (Higress accepts it)")
        raise LoadError("Missing or unknown Proxy-Wasm ABI version")
    for imp in module.imports:
        if not isinstance(imp.type, wasmtime.FuncType):
            raise LoadError(f"the test host does not provide non-function imports: {imp.module}.{imp.name}")
        known = provided_imports(abi).get((imp.module, imp.name))
        if known is None:
            raise LoadError(f"Failed to load Wasm module due to a missing import: {imp.module}.{imp.name}")
        if (_types(imp.type.params), _types(imp.type.results)) != (_types(known[0]), _types(known[1])):
            raise LoadError(f"Failed to load Wasm module due to an import type mismatch: {imp.module}.{imp.name}")
    for name, (params, results) in CALLBACKS.items():
        t = exports.get(name)
        if isinstance(t, wasmtime.FuncType) and (_types(t.params), _types(t.results)) != (
            _types(params),
            _types(results),
        ):
            raise LoadError(f"Bad function signature for: {name}")
    if "malloc" not in exports and "proxy_on_memory_allocate" not in exports:
        raise LoadError("Wasm module is missing malloc function.")
    if not isinstance(exports.get("memory"), wasmtime.MemoryType):
        raise LoadError("the test host needs the module to export its memory as `memory`")
    return abi


def _types(types: list[wasmtime.ValType]) -> list[str]:
    return [str(t) for t in types]


def provided_imports(abi: str) -> dict[tuple[str, str], tuple[list[wasmtime.ValType], list[wasmtime.ValType]]]:
    """(module, name) -> signature of everything Higress's Envoy links for this ABI version."""
    env = dict(ENV_FUNCTIONS)
    if abi == "proxy_abi_version_0_2_0":
        del env["proxy_get_log_level"]  # registered for 0.2.1 (and Higress's 0.2.100) only
    table = {("env", name): sig for name, sig in env.items()}
    for module in WASI_MODULES:
        table.update({(module, name): sig for name, sig in WASI_FUNCTIONS.items()})
    return table


@dataclass
class Plugin:
    """The wasm filter's PluginConfig. The failure policy is always FAIL_CLOSED (envoy/envoy.yaml's)."""

    configuration: bytes
    name: str = "mcp_gateway"
    root_id: str = "mcp_gateway"
    vm_id: str = "mcp_gateway"
    # Envoy >= 1.35's option (envoy/envoy.yaml sets it): StopIteration from on_request_headers still
    # lets the body reach the plugin. Higress has no such option: for ABI 0.2.0/0.2.1 modules its
    # cpp-host always turns StopIteration into StopAllIterationAndWatermark (src/context.cc).
    allow_on_headers_stop_iteration: bool = False


@dataclass
class Context:
    """A root context (one per VM here) or a stream context, with the fields Envoy's Context keeps."""

    id: int
    root: Context | None = None  # None for the root context itself
    stream: Stream | None = None
    created: bool = False  # in_vm_context_created_
    destroyed: bool = False
    local_reply_hold: bool = False
    local_reply_sent: bool = False
    # Root context only.
    configuring: bool = False  # temp_plugin_ is set: PluginConfiguration is readable
    status: tuple[int, bytes] = (0, b"")  # proxy_get_status
    http_calls: set[int] = field(default_factory=set)
    http_response: Response | None = None  # http_call_response_, during proxy_on_http_call_response
    redis_calls: set[int] = field(default_factory=set)
    redis_response: bytes = b""  # redis_call_response_, during proxy_on_redis_call_response
    tick_period: float = 0.0
    tick: asyncio.TimerHandle | None = None

    @property
    def root_context(self) -> Context:
        return self.root or self


class PluginVm:
    """One instance of the module, its contexts, and the hostcalls bound to it."""

    def __init__(self, replica: Replica, index: int, module: wasmtime.Module, abi: str):
        self.replica = replica
        self.index = index
        self.plugin = replica.plugin
        self.abi = abi
        self.store = wasmtime.Store(ENGINE)
        self.contexts: dict[int, Context] = {}
        self.next_context_id = 1  # 0 is the VM context (src/wasm.h next_context_id_)
        self.current: Context | None = None  # current_context_
        self.effective = 0  # effective_context_id_
        self.stop_iteration = False
        self.after_call: deque[Callable[[], None]] = deque()
        self.restricted: frozenset[str] | None = None
        # Metrics this VM defined: id -> [type, name, value] (Envoy keeps them in its stats store).
        self.metrics: dict[int, list] = {}
        self.failed: str | None = None
        self.next_token = {HTTP_CALL: HTTP_CALL, REDIS_CALL: REDIS_CALL}
        self.redis_clients: dict[str, redis.RedisClient] = {}
        self.vm_context = Context(0)  # registered as context 0 (ContextBase(WasmBase*))
        self.contexts[0] = self.vm_context
        linker = wasmtime.Linker(ENGINE)
        for (mod, name), (params, results) in provided_imports(abi).items():
            linker.define_func(mod, name, wasmtime.FuncType(params, results), self._hostcall(name, params))
        try:
            instance = linker.instantiate(self.store, module)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise LoadError(f"Failed to instantiate the Wasm module: {exc}") from None
        self.exports = {e.name: instance.exports(self.store)[e.name] for e in module.exports}
        self.memory: wasmtime.Memory = self.exports["memory"]
        self.malloc = self.exports.get("malloc") or self.exports["proxy_on_memory_allocate"]
        self.root: Context = self.new_context(None)

    # --- calling into the module ----------------------------------------------------------------------

    def _hostcall(self, name: str, params: list[wasmtime.ValType]) -> Callable[..., int | None]:
        impl = None if name in NOT_EMULATED else getattr(self, name)
        # wasmtime hands i32/i64 over as signed integers; the ABI's Words are unsigned.
        masks = [0xFFFFFFFF if str(p) == "i32" else 0xFFFFFFFFFFFFFFFF for p in params]

        def call(*args: int) -> int | None:
            if self.restricted is not None and name not in self.restricted:
                raise HostTrap(f"restricted_callback: {name}")
            if impl is None:
                raise HostTrap(f"{name} is provided by Envoy but not emulated by the test host")
            return impl(*(a & m for a, m in zip(args, masks)))

        return call

    def call(self, context: Context, name: str, *args: int) -> int | None:
        """A call into the module (cpp-host SaveRestoreContext); a trap fails the VM and gives None."""
        fn = self.exports.get(name)
        if fn is None or self.failed:
            return None
        saved = self.current, self.effective
        self.current, self.effective = context, 0
        try:
            result = fn(self.store, *args)
        except Exception as exc:  # noqa: BLE001 - a trap, or a host bug: either fails the VM, loudly
            self.fail(name, exc)
            return None
        finally:
            self.current, self.effective = saved
        return None if result is None else result & 0xFFFFFFFF

    def invoke(self, context: Context, name: str, *args: int) -> tuple[int | None, bool]:
        """A ContextBase::onX callback: the call, then the after-call actions (DeferAfterCallActions).

        Returns the result and whether proxy_send_local_response asked to stop iteration."""
        try:
            return self.call(context, name, *args), self.stop_iteration
        finally:
            self.stop_iteration = False
            while self.after_call:
                self.after_call.popleft()()

    def deliver(self, action: Callable[[], None]) -> None:
        """A callout's completion: now, or after the running wasm call (Envoy defers reentrant events).

        Traps are handled by `call`; anything else escaping is a bug of the host, recorded as a crash."""

        def run() -> None:
            try:
                action()
            except Exception as exc:  # noqa: BLE001
                self.replica.record_crash(self, f"host error: {exc!r}")

        if self.current is not None:
            self.after_call.append(run)
        else:
            run()

    def fail(self, function: str, exc: Exception) -> None:
        """The VM is dead (FailState::RuntimeError): logged like Envoy, recorded as a crash."""
        kind = "" if isinstance(exc, (wasmtime.Trap, wasmtime.WasmtimeError, HostTrap)) else "host error: "
        self.failed = f"Function: {function} failed: {kind}{exc}"
        self.replica.record_crash(self, self.failed)
        for context in list(self.contexts.values()):
            if context.stream is not None:
                context.stream.vm_failed()

    def start(self) -> None:
        """startVm, then the root context's onStart and onConfigure, as Envoy starts a worker's VM."""
        self.restricted = START_ALLOWED
        try:
            if "_initialize" in self.exports:
                self.call(self.vm_context, "_initialize")
                if "main" in self.exports:
                    self.call(self.vm_context, "main", 0, 0)
            elif "_start" in self.exports:
                self.call(self.vm_context, "_start")
        finally:
            self.restricted = None
        if self.failed:
            raise LoadError(f"Failed to start base Wasm: {self.failed}")
        # ContextBase::onStart: on_context_create first, then on_vm_start (src/context.cc).
        # The plugin configuration is readable in both on_context_create and on_configure (temp_plugin_).
        self.root.configuring = True
        self.invoke(self.root, "proxy_on_context_create", self.root.id, 0)
        self.root.created = True
        self.root.configuring = False
        started, _ = self.invoke(self.root, "proxy_on_vm_start", self.root.id, 0)
        if self.failed or started == 0:
            raise LoadError("Failed to start thread-local Wasm")
        self.root.configuring = True
        try:
            configured, _ = self.invoke(self.root, "proxy_on_configure", self.root.id, len(self.plugin.configuration))
        finally:
            self.root.configuring = False
        if self.failed or configured == 0:
            raise LoadError("Failed to configure Wasm plugin")

    def stop(self) -> None:
        """Shutdown (WasmBase::startShutdown): on_done on the root, then on_delete if it agreed."""
        self.set_tick(self.root, 0)
        for client in self.redis_clients.values():
            client.close()
        if self.failed:
            return
        done, _ = self.invoke(self.root, "proxy_on_done", self.root.id)
        if done != 0:
            self.invoke(self.root, "proxy_on_delete", self.root.id)

    def new_context(self, root: Context | None, stream: Stream | None = None) -> Context:
        """allocContextId: ids grow from 1 and are never reused."""
        context = Context(self.next_context_id, root=root, stream=stream)
        self.next_context_id += 1
        self.contexts[context.id] = context
        return context

    def delete_context(self, context: Context) -> None:
        self.contexts.pop(context.id, None)

    def context(self) -> Context:
        """contextOrEffectiveContext (src/exports.cc)."""
        if self.effective:
            effective = self.contexts.get(self.effective)
            if effective is not None:
                return effective
        assert self.current is not None, "hostcall outside a wasm call"
        return self.current

    # --- memory ---------------------------------------------------------------------------------------

    def read(self, ptr: int, size: int) -> bytes | None:
        """getMemory: None when the range is outside the module's memory."""
        if ptr + size > self.memory.data_len(self.store):
            return None
        return bytes(self.memory.read(self.store, ptr, ptr + size)) if size else b""

    def write(self, ptr: int, data: bytes) -> bool:
        if ptr + len(data) > self.memory.data_len(self.store):
            return False
        if data:
            self.memory.write(self.store, data, ptr)
        return True

    def set_u32(self, ptr: int, value: int) -> bool:
        return self.write(ptr, struct.pack("<I", value & 0xFFFFFFFF))

    def set_u64(self, ptr: int, value: int) -> bool:
        return self.write(ptr, struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF))

    def alloc(self, size: int) -> int | None:
        """WasmBase::allocMemory: the module's malloc; None if it fails or points outside the memory."""
        ptr = self.malloc(self.store, size) & 0xFFFFFFFF
        if ptr == 0 or ptr + size > self.memory.data_len(self.store):
            return None
        return ptr

    def copy_out(self, data: bytes, ptr_ptr: int, size_ptr: int) -> bool:
        """copyToPointerSize: the bytes in fresh module memory, their address and size written out."""
        ptr = 0
        if data:
            allocated = self.alloc(len(data))
            if allocated is None or not self.write(allocated, data):
                return False
            ptr = allocated
        return self.set_u32(ptr_ptr, ptr) and self.set_u32(size_ptr, len(data))

    def log(self, level: int, message: str) -> None:
        """Context::log: Envoy's "wasm log <name> <root_id> <vm_id>: message" line."""
        p = self.plugin
        self.replica.log(level, self.index, f"wasm log {p.name} {p.root_id} {p.vm_id}: {message}")

    # --- general hostcalls ----------------------------------------------------------------------------

    def proxy_log(self, level: int, ptr: int, size: int) -> int:
        if level > 5:
            return WasmResult.BadArgument
        message = self.read(ptr, size)
        if message is None:
            return WasmResult.InvalidMemoryAccess
        self.log(level, message.decode("utf-8", "replace"))
        return WasmResult.Ok

    def proxy_get_log_level(self, ptr: int) -> int:
        return WasmResult.Ok if self.set_u32(ptr, self.replica.log_level) else WasmResult.InvalidMemoryAccess

    def proxy_get_current_time_nanoseconds(self, ptr: int) -> int:
        return WasmResult.Ok if self.set_u64(ptr, time.time_ns()) else WasmResult.InvalidMemoryAccess

    def proxy_get_status(self, code_ptr: int, ptr_ptr: int, size_ptr: int) -> int:
        code, message = self.context().root_context.status
        if not self.set_u32(code_ptr, code) or not self.copy_out(message, ptr_ptr, size_ptr):
            return WasmResult.InvalidMemoryAccess
        return WasmResult.Ok

    # --- metrics (cpp-host src/exports.cc define/increment/record/get_metric; Envoy's Context) -----------

    METRIC_COUNTER, METRIC_GAUGE, METRIC_HISTOGRAM = 0, 1, 2

    def proxy_define_metric(self, metric_type: int, name_ptr: int, name_size: int, id_ptr: int) -> int:
        name = self.read(name_ptr, name_size)
        if name is None:
            return WasmResult.InvalidMemoryAccess
        if metric_type > self.METRIC_HISTOGRAM:
            return WasmResult.BadArgument
        # Envoy numbers each definition anew (the type in the id's low bits); the stat is shared by name.
        metric_id = (len(self.metrics) + 1) << 2 | metric_type
        self.metrics[metric_id] = [metric_type, name, 0 if metric_type != self.METRIC_HISTOGRAM else []]
        return WasmResult.Ok if self.set_u32(id_ptr, metric_id) else WasmResult.InvalidMemoryAccess

    def proxy_increment_metric(self, metric_id: int, offset: int) -> int:
        m = self.metrics.get(metric_id)
        if m is None or m[0] == self.METRIC_HISTOGRAM:
            return WasmResult.NotFound if m is None else WasmResult.BadArgument
        offset = offset - (1 << 64) if offset >= 1 << 63 else offset  # an int64_t
        if m[0] == self.METRIC_COUNTER and offset < 0:
            return WasmResult.BadArgument
        m[2] += offset
        return WasmResult.Ok

    def proxy_record_metric(self, metric_id: int, value: int) -> int:
        m = self.metrics.get(metric_id)
        if m is None:
            return WasmResult.NotFound
        if m[0] == self.METRIC_COUNTER:
            m[2] += value
        elif m[0] == self.METRIC_GAUGE:
            m[2] = value
        else:
            m[2].append(value)
        return WasmResult.Ok

    def proxy_get_metric(self, metric_id: int, result_ptr: int) -> int:
        m = self.metrics.get(metric_id)
        if m is None:
            return WasmResult.NotFound
        if m[0] == self.METRIC_HISTOGRAM:
            return WasmResult.BadArgument
        return WasmResult.Ok if self.set_u64(result_ptr, m[2]) else WasmResult.InvalidMemoryAccess

    def proxy_set_tick_period_milliseconds(self, period: int) -> int:
        self.set_tick(self.context().root_context, period)
        return WasmResult.Ok

    def set_tick(self, root: Context, period_ms: int) -> None:
        """Wasm::setTimerPeriod / tickHandler: on_tick, then the timer is armed again."""
        if root.tick is not None:
            root.tick.cancel()
            root.tick = None
        root.tick_period = period_ms / 1000

        def tick() -> None:
            root.tick = None
            if root.id in self.contexts and not self.failed:
                self.invoke(root, "proxy_on_tick", root.id)
            if root.tick_period and root.tick is None:
                root.tick = self.replica.loop.call_later(root.tick_period, tick)

        if period_ms:
            root.tick = self.replica.loop.call_later(root.tick_period, tick)

    def proxy_set_effective_context(self, context_id: int) -> int:
        if context_id not in self.contexts:
            return WasmResult.BadArgument
        self.effective = context_id
        return WasmResult.Ok

    def proxy_done(self) -> int:
        # WasmBase::done finishes a root context whose on_done returned false at shutdown. This host does
        # not wait for such a context when it stops, so there is never one to finish.
        return WasmResult.NotFound

    def pthread_equal(self, left: int, right: int) -> int:
        return int(left == right)

    def emscripten_notify_memory_growth(self, _index: int) -> None:
        return None

    # --- properties: of Envoy's attributes, the plugin's own names, route_name, cluster_name, set values -

    def proxy_get_property(self, path_ptr: int, path_size: int, ptr_ptr: int, size_ptr: int) -> int:
        path = self.read(path_ptr, path_size)
        if path is None:
            return WasmResult.InvalidMemoryAccess
        context = self.context()
        parts = path.split(b"\0")
        plugin_values = {
            b"plugin_name": self.plugin.name,
            b"plugin_root_id": self.plugin.root_id,
            b"plugin_vm_id": self.plugin.vm_id,
        }
        value = plugin_values[parts[0]].encode() if parts[0] in plugin_values else None
        stream = context.stream
        if value is None and stream is not None and parts[0] in (b"route_name", b"cluster_name"):
            # Envoy's attributes of the route the router chose; a request without a route has neither.
            found = stream.route_name if parts[0] == b"route_name" else stream.route_cluster
            value = found.encode() if found else None
        if value is None and context.stream is not None:
            value = context.stream.properties.get(parts[0])  # filter state set by proxy_set_property
        if value is None or len(parts) > 1:
            return WasmResult.NotFound
        return WasmResult.Ok if self.copy_out(value, ptr_ptr, size_ptr) else WasmResult.InvalidMemoryAccess

    def proxy_set_property(self, key_ptr: int, key_size: int, value_ptr: int, value_size: int) -> int:
        key, value = self.read(key_ptr, key_size), self.read(value_ptr, value_size)
        if key is None or value is None:
            return WasmResult.InvalidMemoryAccess
        stream = self.context().stream
        if stream is None:
            return WasmResult.NotFound  # Context::setProperty: no stream info on a root context
        stream.properties[key] = value
        return WasmResult.Ok

    # --- shared data and queues (cpp-host src/shared_data.cc, src/shared_queue.cc) ---------------------

    def proxy_get_shared_data(self, key_ptr: int, key_size: int, ptr_ptr: int, size_ptr: int, cas_ptr: int) -> int:
        key = self.read(key_ptr, key_size)
        if key is None:
            return WasmResult.InvalidMemoryAccess
        found = self.replica.shared_data.get(self.plugin.vm_id, key)
        if found is None:
            return WasmResult.NotFound
        value, cas = found
        if not self.copy_out(value, ptr_ptr, size_ptr) or not self.set_u32(cas_ptr, cas):
            return WasmResult.InvalidMemoryAccess
        return WasmResult.Ok

    def proxy_set_shared_data(self, key_ptr: int, key_size: int, value_ptr: int, value_size: int, cas: int) -> int:
        key, value = self.read(key_ptr, key_size), self.read(value_ptr, value_size)
        if key is None or value is None:
            return WasmResult.InvalidMemoryAccess
        return self.replica.shared_data.set(self.plugin.vm_id, key, value, cas)

    def proxy_register_shared_queue(self, name_ptr: int, name_size: int, token_ptr: int) -> int:
        name = self.read(name_ptr, name_size)
        if name is None:
            return WasmResult.InvalidMemoryAccess
        # The queue's callback goes to the root context (ContextBase::registerSharedQueue).
        token = self.replica.shared_queues.register(self.plugin.vm_id, name, self, self.context().root_context.id)
        return WasmResult.Ok if self.set_u32(token_ptr, token) else WasmResult.InvalidMemoryAccess

    def proxy_resolve_shared_queue(
        self, vm_ptr: int, vm_size: int, name_ptr: int, name_size: int, token_ptr: int
    ) -> int:
        vm_id, name = self.read(vm_ptr, vm_size), self.read(name_ptr, name_size)
        if vm_id is None or name is None:
            return WasmResult.InvalidMemoryAccess
        token = self.replica.shared_queues.resolve(vm_id.decode() or self.plugin.vm_id, name)
        if token == 0:
            return WasmResult.NotFound
        return WasmResult.Ok if self.set_u32(token_ptr, token) else WasmResult.InvalidMemoryAccess

    def proxy_dequeue_shared_queue(self, token: int, ptr_ptr: int, size_ptr: int) -> int:
        status, data = self.replica.shared_queues.dequeue(token)
        if status != WasmResult.Ok:
            return status
        return WasmResult.Ok if self.copy_out(data, ptr_ptr, size_ptr) else WasmResult.InvalidMemoryAccess

    def proxy_enqueue_shared_queue(self, token: int, ptr: int, size: int) -> int:
        data = self.read(ptr, size)
        if data is None:
            return WasmResult.InvalidMemoryAccess
        return self.replica.shared_queues.enqueue(token, data)

    def queue_ready(self, context_id: int, token: int) -> None:
        context = self.contexts.get(context_id)
        if context is not None and not self.failed:
            self.invoke(context, "proxy_on_queue_ready", context_id, token)

    # --- header maps ----------------------------------------------------------------------------------

    def _map(self, map_type: int, mutable: bool) -> Pairs | None:
        """Context::getMap (mutable) / getConstMap: None where Envoy has no map at this point."""
        context = self.context()
        stream = context.stream
        if map_type == MapType.RequestHeaders and stream is not None:
            visible = stream.request_headers_visible or (stream.access_log and not mutable)
            return stream.request_headers if visible else None
        if map_type == MapType.ResponseHeaders and stream is not None:
            visible = stream.response_headers_visible or (stream.access_log and not mutable)
            return stream.response_headers if visible else None
        if map_type == MapType.HttpCallResponseHeaders and not mutable:
            response = context.root_context.http_response
            return None if response is None else response.headers
        return None

    def proxy_get_header_map_value(
        self, map_type: int, key_ptr: int, key_size: int, ptr_ptr: int, size_ptr: int
    ) -> int:
        if map_type > MapType.HttpCallResponseTrailers:
            return WasmResult.BadArgument
        key = self.read(key_ptr, key_size)
        if key is None:
            return WasmResult.InvalidMemoryAccess
        headers = self._map(map_type, mutable=False)
        if headers is None:
            # "Requested map type is not currently available"; in the access log phase, just not found.
            stream = self.context().stream
            return WasmResult.NotFound if stream is not None and stream.access_log else WasmResult.BadArgument
        value = next((v for k, v in headers if k == key.lower()), None)
        if value is None:
            return WasmResult.NotFound
        return WasmResult.Ok if self.copy_out(value, ptr_ptr, size_ptr) else WasmResult.InvalidMemoryAccess

    def proxy_get_header_map_pairs(self, map_type: int, ptr_ptr: int, size_ptr: int) -> int:
        if map_type > MapType.HttpCallResponseTrailers:
            return WasmResult.BadArgument
        headers = self._map(map_type, mutable=False) or []  # headerMapToPairs(nullptr) is no pairs
        data = encode_pairs(headers) if headers else b""
        return WasmResult.Ok if self.copy_out(data, ptr_ptr, size_ptr) else WasmResult.InvalidMemoryAccess

    def _mutate(self, map_type: int, change: Callable[[Pairs], None]) -> int:
        if map_type > MapType.HttpCallResponseTrailers:
            return WasmResult.BadArgument
        headers = self._map(map_type, mutable=True)
        if headers is None:
            return WasmResult.BadArgument
        change(headers)
        return WasmResult.Ok

    def proxy_add_header_map_value(
        self, map_type: int, key_ptr: int, key_size: int, value_ptr: int, value_size: int
    ) -> int:
        if map_type > MapType.HttpCallResponseTrailers:
            return WasmResult.BadArgument
        key, value = self.read(key_ptr, key_size), self.read(value_ptr, value_size)
        if key is None or value is None:
            return WasmResult.InvalidMemoryAccess
        return self._mutate(map_type, lambda h: h.append((key.lower(), value)))

    def proxy_replace_header_map_value(
        self, map_type: int, key_ptr: int, key_size: int, value_ptr: int, value_size: int
    ) -> int:
        if map_type > MapType.HttpCallResponseTrailers:
            return WasmResult.BadArgument
        key, value = self.read(key_ptr, key_size), self.read(value_ptr, value_size)
        if key is None or value is None:
            return WasmResult.InvalidMemoryAccess

        def replace(headers: Pairs) -> None:  # HeaderMapImpl::setCopy: remove every entry, add one
            headers[:] = [(k, v) for k, v in headers if k != key.lower()] + [(key.lower(), value)]

        return self._mutate(map_type, replace)

    def proxy_remove_header_map_value(self, map_type: int, key_ptr: int, key_size: int) -> int:
        if map_type > MapType.HttpCallResponseTrailers:
            return WasmResult.BadArgument
        key = self.read(key_ptr, key_size)
        if key is None:
            return WasmResult.InvalidMemoryAccess

        def remove(headers: Pairs) -> None:
            headers[:] = [(k, v) for k, v in headers if k != key.lower()]

        return self._mutate(map_type, remove)

    def proxy_set_header_map_pairs(self, map_type: int, ptr: int, size: int) -> int:
        if map_type > MapType.HttpCallResponseTrailers:
            return WasmResult.BadArgument
        data = self.read(ptr, size)
        if data is None:
            return WasmResult.InvalidMemoryAccess
        pairs = [(k.lower(), v) for k, v in decode_pairs(data)]

        def replace_all(headers: Pairs) -> None:
            headers[:] = pairs

        return self._mutate(map_type, replace_all)

    def proxy_get_header_map_size(self, map_type: int, result_ptr: int) -> int:
        if map_type > MapType.HttpCallResponseTrailers:
            return WasmResult.BadArgument
        headers = self._map(map_type, mutable=True)
        if headers is None:
            return WasmResult.BadArgument
        size = sum(len(k) + len(v) for k, v in headers)  # HeaderMap::byteSize
        return WasmResult.Ok if self.set_u32(result_ptr, size) else WasmResult.InvalidMemoryAccess

    # --- buffers ----------------------------------------------------------------------------------------

    def _buffer(self, buffer_type: int) -> bytes | bytearray | None:
        """Context::getBuffer: None where Envoy returns no buffer (NotFound)."""
        context = self.context()
        root = context.root_context
        stream = context.stream
        if buffer_type == BufferType.PluginConfiguration:
            return self.plugin.configuration if root.configuring else None
        if buffer_type == BufferType.HttpCallResponseBody:
            return None if root.http_response is None else root.http_response.body
        if buffer_type == BufferType.RedisCallResponse:
            return root.redis_response  # always there; empty outside the callback
        if buffer_type in (BufferType.HttpRequestBody, BufferType.HttpResponseBody):
            body = None if stream is None else stream.visible_body(buffer_type == BufferType.HttpRequestBody)
            return b"" if body is None else body  # a Buffer wrapping nothing: empty, not NotFound
        return b""  # VmConfiguration (none), CallData, network and gRPC buffers: empty here

    def proxy_get_buffer_bytes(self, buffer_type: int, start: int, length: int, ptr_ptr: int, size_ptr: int) -> int:
        if buffer_type > BufferType.RedisCallResponse:
            return WasmResult.BadArgument
        buffer = self._buffer(buffer_type)
        if buffer is None:
            return WasmResult.NotFound
        length = 0 if start > len(buffer) else min(length, len(buffer) - start)
        if length == 0:
            ok = self.set_u32(ptr_ptr, 0) and self.set_u32(size_ptr, 0)
            return WasmResult.Ok if ok else WasmResult.InvalidMemoryAccess
        data = bytes(buffer[start : start + length])
        return WasmResult.Ok if self.copy_out(data, ptr_ptr, size_ptr) else WasmResult.InvalidMemoryAccess

    def proxy_get_buffer_status(self, buffer_type: int, length_ptr: int, flags_ptr: int) -> int:
        if buffer_type > BufferType.RedisCallResponse:
            return WasmResult.BadArgument
        buffer = self._buffer(buffer_type)
        if buffer is None:
            return WasmResult.NotFound
        ok = self.set_u32(length_ptr, len(buffer)) and self.set_u32(flags_ptr, 0)
        return WasmResult.Ok if ok else WasmResult.InvalidMemoryAccess

    def proxy_set_buffer_bytes(self, buffer_type: int, start: int, length: int, ptr: int, size: int) -> int:
        if buffer_type > BufferType.RedisCallResponse:
            return WasmResult.BadArgument
        if self._buffer(buffer_type) is None:
            return WasmResult.NotFound
        data = self.read(ptr, size)
        if data is None:
            return WasmResult.InvalidMemoryAccess
        stream = self.context().stream
        body = None
        if stream is not None and buffer_type in (BufferType.HttpRequestBody, BufferType.HttpResponseBody):
            body = stream.visible_body(buffer_type == BufferType.HttpRequestBody)
        if not isinstance(body, bytearray):
            return WasmResult.BadArgument  # string and immutable buffers (BufferBase::copyFrom)
        # Buffer::copyFrom: replace a prefix, or append; nothing in between.
        if start == 0:
            body[:length] = data
        elif start >= len(body):
            body += data
        else:
            return WasmResult.BadArgument
        return WasmResult.Ok

    # --- streams ----------------------------------------------------------------------------------------

    def proxy_send_local_response(
        self,
        code: int,
        details_ptr: int,
        details_size: int,
        body_ptr: int,
        body_size: int,
        headers_ptr: int,
        headers_size: int,
        _grpc_status: int,
    ) -> int:
        details, body = self.read(details_ptr, details_size), self.read(body_ptr, body_size)
        pairs = self.read(headers_ptr, headers_size)
        if details is None or body is None or pairs is None:
            return WasmResult.InvalidMemoryAccess
        context = self.context()
        # Context::sendLocalResponse refuses a second reply (BadArgument), but exports.cc ignores its
        # result: the plugin is told Ok either way, and iteration stops either way.
        if not context.local_reply_hold:
            if context.stream is not None:
                stream = context.stream
                reply = (code, decode_pairs(pairs), body)
                self.after_call.append(lambda: stream.local_reply(*reply))
            context.local_reply_hold = True
        self.stop_iteration = True
        return WasmResult.Ok

    def proxy_continue_stream(self, stream_type: int) -> int:
        if stream_type > StreamType.Upstream:
            return WasmResult.BadArgument
        if stream_type == StreamType.Upstream:
            return WasmResult.Unimplemented
        if stream_type == StreamType.Downstream:
            return WasmResult.Ok  # no network filter here
        stream = self.context().stream
        if stream is not None:
            request = stream_type == StreamType.Request
            self.after_call.append(lambda: stream.resume(request))
            # Context::continueStream forgets the request's headers and body (for either direction).
            stream.request_headers_visible = False
            stream.request_body_visible = False
        return WasmResult.Ok

    def proxy_close_stream(self, stream_type: int) -> int:
        if stream_type > StreamType.Upstream:
            return WasmResult.BadArgument
        stream = self.context().stream
        if stream is not None and stream_type in (StreamType.Request, StreamType.Response):
            self.after_call.append(stream.reset)
        return WasmResult.Ok

    # --- HTTP callouts ----------------------------------------------------------------------------------

    def proxy_http_call(
        self,
        uri_ptr: int,
        uri_size: int,
        headers_ptr: int,
        headers_size: int,
        body_ptr: int,
        body_size: int,
        trailers_ptr: int,
        trailers_size: int,
        timeout_ms: int,
        token_ptr: int,
    ) -> int:
        root = self.context().root_context  # http_call runs on the root context (exports.cc)
        cluster, body = self.read(uri_ptr, uri_size), self.read(body_ptr, body_size)
        headers, trailers = self.read(headers_ptr, headers_size), self.read(trailers_ptr, trailers_size)
        if cluster is None or body is None or headers is None or trailers is None:
            return WasmResult.InvalidMemoryAccess
        if not self.set_u32(token_ptr, 0):
            return WasmResult.InvalidMemoryAccess
        pairs = [(k.lower(), v) for k, v in decode_pairs(headers)]
        # Context::httpCall: a negative timeout, an unknown cluster, or no :path/:method/:authority is
        # BadArgument; a timeout of 0 means none. Request trailers are not sent by this host.
        timeout = timeout_ms if timeout_ms < 0x80000000 else timeout_ms - 0x100000000
        address = self.replica.clusters.get(cluster.decode("utf-8", "replace"))
        names = {k for k, _ in pairs}
        if timeout < 0 or address is None or not {b":path", b":method", b":authority"} <= names:
            return WasmResult.BadArgument
        token = self._token(HTTP_CALL)
        root.http_calls.add(token)
        self.replica.dispatch(self, root, token, address, pairs, body, timeout)
        self.set_u32(token_ptr, token)
        return WasmResult.Ok

    def _token(self, kind: int) -> int:
        """nextHttpCallId / nextRedisCallId: the callout type in the low bits, +4 each time."""
        self.next_token[kind] += 4
        return self.next_token[kind]

    def http_call_done(self, root: Context, token: int, response: Response | None) -> None:
        """onHttpCallSuccess / onHttpCallFailure (Context, Envoy's context.cc)."""
        if self.failed or token not in root.http_calls:
            root.http_calls.discard(token)
            return

        def clear() -> None:
            root.http_response = None
            root.http_calls.discard(token)
            if response is None:
                root.status = (root.status[0], b"")  # Envoy clears the message only

        self.after_call.append(clear)
        if response is None:  # a reset: no headers at all, and get_status says why
            root.status = (WasmResult.BrokenConnection, b"reset")
            self.invoke(root, "proxy_on_http_call_response", root.id, token, 0, 0, 0)
        else:
            root.http_response = response
            self.invoke(
                root, "proxy_on_http_call_response", root.id, token, len(response.headers), len(response.body), 0
            )

    def proxy_grpc_close(self, token: int) -> int:
        return self._no_grpc(token, streams_too=True)

    def proxy_grpc_cancel(self, token: int) -> int:
        return self._no_grpc(token, streams_too=True)

    def proxy_grpc_send(self, token: int, ptr: int, size: int, _end_stream: int) -> int:
        if self.read(ptr, size) is None:
            return WasmResult.InvalidMemoryAccess
        return self._no_grpc(token, streams_too=False)

    def _no_grpc(self, token: int, streams_too: bool) -> int:
        """Context::grpcClose/grpcCancel/grpcSend for a token of no call (this host never starts one)."""
        kind = token & 3
        if kind == GRPC_STREAM or (kind == GRPC_CALL and streams_too):
            return WasmResult.NotFound
        return WasmResult.BadArgument

    # --- Redis (Higress) ----------------------------------------------------------------------------------

    def _redis_client(self, cluster: bytes) -> redis.RedisClient | None:
        """The cluster is the text before '?' (Higress's Context::redisInit / redisCall)."""
        name = cluster.decode("utf-8", "replace").split("?", 1)[0]
        address = self.replica.clusters.get(name)
        if address is None:
            return None
        if name not in self.redis_clients:
            self.redis_clients[name] = redis.RedisClient(address, self.replica.connect_timeout)
        return self.redis_clients[name]

    def proxy_redis_init(
        self,
        cluster_ptr: int,
        cluster_size: int,
        user_ptr: int,
        user_size: int,
        pass_ptr: int,
        pass_size: int,
        timeout_ms: int,
    ) -> int:
        cluster, user = self.read(cluster_ptr, cluster_size), self.read(user_ptr, user_size)
        password = self.read(pass_ptr, pass_size)
        if cluster is None or user is None or password is None:
            return WasmResult.InvalidMemoryAccess
        client = self._redis_client(cluster)
        self.replica.record_redis_init(
            self, cluster, user, password, timeout_ms, WasmResult.BadArgument if client is None else WasmResult.Ok
        )
        if client is None:
            return WasmResult.BadArgument
        # The timeout is an `int` in Envoy: a value over 2^31 is negative, and its timer fires at once.
        timeout = timeout_ms if timeout_ms < 0x80000000 else 0
        params = redis.parse_query_string(cluster.decode("utf-8", "replace"))
        client.initialize(redis.ClientConfig(timeout / 1000, user, password, params))
        return WasmResult.Ok

    def proxy_redis_call(
        self, cluster_ptr: int, cluster_size: int, query_ptr: int, query_size: int, token_ptr: int
    ) -> int:
        root = self.context().root_context  # the callback goes to the root context, like http_call's
        cluster, query = self.read(cluster_ptr, cluster_size), self.read(query_ptr, query_size)
        if not self.set_u32(token_ptr, 0):
            return WasmResult.InvalidMemoryAccess
        if cluster is None or query is None:
            # Higress's exports.cc does not check these ranges (Envoy would abort); refuse instead.
            return WasmResult.InvalidMemoryAccess
        client = self._redis_client(cluster)
        if client is None:
            return WasmResult.BadArgument
        token = self._token(REDIS_CALL)
        root.redis_calls.add(token)
        client.send(
            query,
            lambda reply: self.deliver(lambda: self.redis_call_done(root, token, reply)),
            lambda: self.deliver(lambda: self.redis_call_done(root, token, None)),
        )
        self.set_u32(token_ptr, token)
        return WasmResult.Ok

    def redis_call_done(self, root: Context, token: int, reply: bytes | None) -> None:
        """onRedisCallSuccess / onRedisCallFailure (Higress's context.cc)."""
        if self.failed or token not in root.redis_calls:
            root.redis_calls.discard(token)
            return

        def clear() -> None:
            root.redis_response = b""
            root.redis_calls.discard(token)
            if reply is None:
                root.status = (root.status[0], b"")  # Envoy clears the message only

        self.after_call.append(clear)
        if reply is None:
            root.status = (WasmResult.BrokenConnection, b"reset")
            self.invoke(root, "proxy_on_redis_call_response", root.id, token, RedisStatus.NetworkError, 0)
        else:
            root.redis_response = reply
            self.invoke(root, "proxy_on_redis_call_response", root.id, token, RedisStatus.Ok, len(reply))

    # --- WASI (cpp-host src/exports.cc, wasi_unstable_*) ----------------------------------------------------

    def fd_write(self, fd: int, iovs: int, iovs_len: int, nwritten_ptr: int) -> int:
        if fd not in (1, 2):
            return 8  # EBADF
        parts = []
        for i in range(iovs_len):
            iov = self.read(iovs + 8 * i, 8)
            if iov is None:
                return 21  # EFAULT
            buf, buf_len = struct.unpack("<II", iov)
            data = self.read(buf, buf_len) if buf_len else b""
            if data is None:
                return 21
            parts.append(data)
        text = b"".join(parts)
        if text:
            # stdout at info, stderr at error, one trailing newline dropped (writevImpl).
            self.log(2 if fd == 1 else 4, text.removesuffix(b"\n").decode("utf-8", "replace"))
        return 0 if self.set_u32(nwritten_ptr, len(text)) else 21

    def fd_pwrite(self, fd: int, iovs: int, iovs_len: int, _offset: int, nwritten_ptr: int) -> int:
        return self.fd_write(fd, iovs, iovs_len, nwritten_ptr) if fd in (1, 2) else 8

    def fd_read(self, *_: int) -> int:
        return 52  # ENOSYS

    def fd_pread(self, *_: int) -> int:
        return 52

    def fd_fdstat_set_flags(self, *_: int) -> int:
        return 52

    def fd_prestat_dir_name(self, *_: int) -> int:
        return 52

    def fd_seek(self, *_: int) -> int:
        return 0  # logged at trace by Envoy ("wasi_unstable fd_seek"), then success

    def fd_close(self, *_: int) -> int:
        return 0

    def fd_fdstat_get(self, fd: int, stat_ptr: int) -> int:
        if fd not in (1, 2):
            return 8
        self.write(stat_ptr, struct.pack("<QQQ", 0, 64, 0))  # fs_rights_base = FD_WRITE
        return 0

    def _stdio_only(self, fd: int, *_: int) -> int:
        return 0 if fd in (1, 2) else 8

    fd_fdstat_set_rights = fd_allocate = fd_datasync = fd_filestat_set_size = _stdio_only
    fd_filestat_set_times = fd_sync = _stdio_only

    def fd_advise(self, *_: int) -> int:
        return 0

    def fd_tell(self, fd: int, ptr: int) -> int:
        if fd not in (1, 2):
            return 8
        return 0 if self.set_u64(ptr, 0) else 21

    def fd_readdir(self, _fd: int, _buf: int, _len: int, _cookie: int, nread_ptr: int) -> int:
        return 20 if self.set_u32(nread_ptr, 0) else 21  # ENOTDIR

    def fd_renumber(self, fd: int, to: int) -> int:
        return 58 if fd in (1, 2) and to in (1, 2) else 8  # ENOTSUP / EBADF

    def fd_prestat_get(self, *_: int) -> int:
        return 8

    def fd_filestat_get(self, *_: int) -> int:
        return 8

    def path_open(self, *_: int) -> int:
        return 44  # ENOENT

    def _not_supported(self, *_: int) -> int:
        return 58  # ENOTSUP

    path_create_directory = path_filestat_set_times = path_link = path_remove_directory = _not_supported
    path_rename = path_symlink = path_unlink_file = path_filestat_get = sock_shutdown = _not_supported

    def path_readlink(self, _fd: int, _p: int, _pl: int, _buf: int, _bl: int, ret_ptr: int) -> int:
        return 58 if self.set_u32(ret_ptr, 0) else 21

    def sock_accept(self, _fd: int, _flags: int, ret_ptr: int) -> int:
        return 58 if self.set_u32(ret_ptr, 0) else 21

    def sock_recv(self, _fd: int, _data: int, _len: int, _flags: int, size_ptr: int, flags_ptr: int) -> int:
        ok = self.set_u32(size_ptr, 0) and self.write(flags_ptr, b"\0\0")
        return 58 if ok else 21

    def sock_send(self, _fd: int, _data: int, _len: int, _flags: int, size_ptr: int) -> int:
        return 58 if self.set_u32(size_ptr, 0) else 21

    def environ_sizes_get(self, count_ptr: int, size_ptr: int) -> int:
        # No vm_config.environment_variables: an empty environment.
        return 0 if self.set_u32(count_ptr, 0) and self.set_u32(size_ptr, 0) else 21

    def environ_get(self, *_: int) -> int:
        return 0

    def args_sizes_get(self, argc_ptr: int, size_ptr: int) -> int:
        return 0 if self.set_u32(argc_ptr, 0) and self.set_u32(size_ptr, 0) else 21

    def args_get(self, *_: int) -> int:
        return 0

    def clock_time_get(self, clock_id: int, _precision: int, ptr: int) -> int:
        if clock_id not in (0, 1):
            return 58
        now = time.time_ns() if clock_id == 0 else time.monotonic_ns()
        return 0 if self.set_u64(ptr, now) else 21

    def clock_res_get(self, clock_id: int, ptr: int) -> int:
        if clock_id not in (0, 1):
            return 58
        return 0 if self.set_u64(ptr, 1) else 21

    def random_get(self, ptr: int, size: int) -> int:
        if size > RANDOM_GET_MAX:
            return 28  # EINVAL
        if size == 0:
            return 0
        return 0 if self.write(ptr, os.urandom(size)) else 21

    def sched_yield(self) -> int:
        return 0

    def poll_oneoff(self, _in: int, _out: int, _n: int, nevents_ptr: int) -> int:
        return 0 if self.set_u32(nevents_ptr, 0) else 21

    def proc_exit(self, _code: int) -> None:
        # Logged at trace by Envoy and otherwise ignored; the module's own code then traps.
        return None
