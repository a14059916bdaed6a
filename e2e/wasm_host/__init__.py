"""A TEST HOST for Higress's proxy-wasm ABI. It is NOT Higress and NOT Envoy.

Higress cannot run on the build machines, so the plugin's Higress build is tested here: this package
loads the wasm module with wasmtime and implements, in Python, the hostcalls the plugin can import as
Higress's Envoy defines them (proxy-wasm-cpp-host plus Envoy's wasm Context, both from Higress's forks),
including Higress's Redis calls, backed by a real redis-server. Each `Replica` stands for one Envoy
process (shared data, N worker VMs, an HTTP/1.1 listener); two replicas share only the real Redis.

What was read in which source, and where this host knowingly differs from Envoy, is in README.md next
to this file. Anything the host does not emulate fails loudly (load refused, or a recorded crash), so
a green test here never hides a call the host merely ignored.

Use it in-process (`testing.HostThread` + `Replica`) or as a CLI: `python -m wasm_host --help` from e2e/.
"""

from .replica import Replica
from .vm import LoadError, Plugin

__all__ = ["LoadError", "Plugin", "Replica"]
