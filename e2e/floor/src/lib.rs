//! The floor of a proxied call: the same SDK, the same six stream callbacks and the same four hostcalls as
//! the plugin's proxied `tools/call` (e2e/test_proxy_cost.py), and nothing else: the request head read
//! once, the backend's path and timeout set, the answer head read. The bench's `empty` side is this module
//! with every stream callback but the context's creation and deletion dropped (scripts/wasm-drop-export.py),
//! so Envoy enters it twice per stream and it makes no hostcall.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

/// The backend's path, as section 6's proxied server has it (`mcpServerURL: /mcp`).
const PATH: &str = "/mcp";
/// Section 6's proxied server's `timeout` (10000 ms), set the way the plugin sets it.
const TIMEOUT: (&str, &str) = ("x-envoy-upstream-rq-timeout-ms", "10000");

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream;

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let head = self.get_http_request_headers();
        // Used, so that the read is not optimised away (it is a hostcall, it would not be).
        if !head.is_empty() {
            self.set_http_request_header(":path", Some(PATH));
            self.set_http_request_header(TIMEOUT.0, Some(TIMEOUT.1));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let _ = self.get_http_response_headers();
        Action::Continue
    }
}
