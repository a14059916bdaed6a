//! mcp-gateway: a proxy-wasm plugin that serves Model Context Protocol servers from Envoy and Higress.
//!
//! Everything but [`host`] is a sans-IO core: plain Rust that takes inputs and returns decisions, tested
//! natively with `cargo test`. Only `host` touches proxy-wasm hostcalls.

// Config readers fill a `Default` value field by field (`x.a = f.string("a")?;`) rather than building a
// struct literal: a `?` inside a literal drops every field read so far on its own exit path, and those
// cleanups made up much of the configure-time code (-7.3 KB of wasm over 19 readers).
#![allow(clippy::field_reassign_with_default)]

pub mod admission;
pub mod b64;
pub mod caller;
pub mod case;
pub mod completion;
pub mod composed;
pub mod config;
pub mod config_header;
pub mod content;
pub mod credential;
pub mod driver;
pub mod encoding;
pub mod error;
pub mod fields;
pub mod gateway;
#[cfg(feature = "go-templates")]
pub mod gotemplate;
/// Without the `go-templates` feature, Go templates are refused at load.
#[cfg(not(feature = "go-templates"))]
#[path = "gotemplate/stub.rs"]
pub mod gotemplate;
pub mod guard;
pub mod header_edits;
pub mod headers;
pub mod higress;
pub mod icon;
pub mod input;
pub mod json;
pub mod jsonrpc;
#[cfg(feature = "go-templates")]
pub mod lenient;
pub mod limits;
pub mod loopback;
pub mod mcp;
pub mod metrics;
pub mod notify;
#[cfg(feature = "openapi")]
pub mod openapi;
pub mod prompt;
pub mod proxy;
pub mod resource;
pub mod resp;
pub mod routed;
pub mod rules;
pub mod schema;
pub mod session;
pub mod slots;
pub mod sort;
#[cfg(test)]
mod strategies;
pub mod template;
pub mod tool;
pub mod transport;
pub mod upstream;
pub mod uri_template;

#[cfg(target_arch = "wasm32")]
pub mod host;
