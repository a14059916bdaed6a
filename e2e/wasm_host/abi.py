"""Numbers and wire formats of the proxy-wasm ABI as Higress's host defines them.

Sources (see README.md for the commits): higress-group/proxy-wasm-cpp-sdk `proxy_wasm_common.h` and
`proxy_wasm_enums.h` (the enums the host uses; Higress adds buffer type 9 and RedisStatus), and
proxy-wasm-cpp-host `src/pairs_util.cc` (the header-pairs encoding).
"""

from __future__ import annotations

import struct
from enum import IntEnum


class WasmResult(IntEnum):
    """`WasmResult` (proxy_wasm_common.h): the status every hostcall returns."""

    Ok = 0
    NotFound = 1
    BadArgument = 2
    SerializationFailure = 3
    ParseFailure = 4
    BadExpression = 5
    InvalidMemoryAccess = 6
    Empty = 7
    CasMismatch = 8
    ResultMismatch = 9
    InternalFailure = 10
    BrokenConnection = 11
    Unimplemented = 12


class BufferType(IntEnum):
    """`WasmBufferType`; RedisCallResponse (9) exists only in Higress, which raises MAX to 9."""

    HttpRequestBody = 0
    HttpResponseBody = 1
    NetworkDownstreamData = 2
    NetworkUpstreamData = 3
    HttpCallResponseBody = 4
    GrpcReceiveBuffer = 5
    VmConfiguration = 6
    PluginConfiguration = 7
    CallData = 8
    RedisCallResponse = 9


class MapType(IntEnum):
    """`WasmHeaderMapType`."""

    RequestHeaders = 0
    RequestTrailers = 1
    ResponseHeaders = 2
    ResponseTrailers = 3
    GrpcReceiveInitialMetadata = 4
    GrpcReceiveTrailingMetadata = 5
    HttpCallResponseHeaders = 6
    HttpCallResponseTrailers = 7


class StreamType(IntEnum):
    """`WasmStreamType` (proxy_continue_stream, proxy_close_stream)."""

    Request = 0
    Response = 1
    Downstream = 2
    Upstream = 3


class RedisStatus(IntEnum):
    """`RedisStatus` (Higress's proxy_wasm_enums.h): the `status` of proxy_on_redis_call_response."""

    Ok = 0
    NetworkError = 1


# `LogLevel` (trace=0 .. critical=5) with the names Envoy prints for them (spdlog's).
LOG_LEVELS = ("trace", "debug", "info", "warning", "error", "critical")

# FilterHeadersStatus / FilterDataStatus values the host acts on (proxy_wasm_enums.h).
CONTINUE = 0
STOP_ITERATION = 1  # headers: StopIteration; data: StopIterationAndBuffer
STOP_ALL_ITERATION_AND_WATERMARK = 4

# pairs_util.h limits (include/proxy-wasm/limits.h).
PAIRS_MAX_BYTES = 1024 * 1024
PAIRS_MAX_COUNT = 1024

Pairs = list[tuple[bytes, bytes]]


def encode_pairs(pairs: Pairs) -> bytes:
    """PairsUtil::marshalPairs: count, (name size, value size)*, then NUL-terminated names and values."""
    sizes = b"".join(struct.pack("<II", len(k), len(v)) for k, v in pairs)
    data = b"".join(k + b"\0" + v + b"\0" for k, v in pairs)
    return struct.pack("<I", len(pairs)) + sizes + data


def decode_pairs(buf: bytes) -> Pairs:
    """PairsUtil::toPairs: any malformation (or a buffer over the limits) gives no pairs at all."""
    if len(buf) < 4 or len(buf) > PAIRS_MAX_BYTES:
        return []
    (count,) = struct.unpack_from("<I", buf, 0)
    if count > PAIRS_MAX_COUNT or 4 + 8 * count > len(buf):
        return []
    sizes = [struct.unpack_from("<II", buf, 4 + 8 * i) for i in range(count)]
    pos = 4 + 8 * count
    pairs: Pairs = []
    for key_size, value_size in sizes:
        if pos + key_size + 1 > len(buf) or buf[pos + key_size] != 0:
            return []
        key = buf[pos : pos + key_size]
        pos += key_size + 1
        if pos + value_size + 1 > len(buf) or buf[pos + value_size] != 0:
            return []
        pairs.append((key, buf[pos : pos + value_size]))
        pos += value_size + 1
    return pairs if pos == len(buf) else []
