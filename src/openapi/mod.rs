//! OpenAPI 3.0/3.1 and Swagger 2.0 documents turned into the gateway's own tool config, so an existing REST
//! service becomes an MCP server without code. Used by the `mcp-gateway openapi` CLI and by a server's
//! `openapi` import in the plugin config; both get the same [`ToolConfig`]s.
//!
//! A document that is not valid is refused with the JSON pointer of the fault. An operation that is valid
//! but cannot be served (a multipart upload, an external `$ref`) is skipped with its reason, never dropped
//! silently.

pub mod bundle;
pub mod import;
mod operation;
mod schema;
pub mod select;
mod share;
mod swagger;

use crate::config::{SecurityScheme, ToolConfig};
pub use select::Selection;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;

/// The HTTP methods an OpenAPI path item may hold, in the order the specification lists them.
const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// A document the gateway refuses, located by JSON pointer.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenApiError {
    /// JSON pointer into the document, as a URI fragment (`#/paths/~1pets/get`).
    pub pointer: String,
    pub reason: String,
}

impl OpenApiError {
    pub fn new(pointer: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::of(pointer.into(), reason.into())
    }

    /// The part of [`OpenApiError::new`] that does not depend on its arguments' types.
    #[inline(never)]
    fn of(pointer: String, reason: String) -> Self {
        OpenApiError { pointer, reason }
    }
}

impl fmt::Display for OpenApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pointer, self.reason)
    }
}

impl std::error::Error for OpenApiError {}

/// Why one operation did not become a tool: the document is wrong, or the operation is out of reach.
#[derive(Debug)]
pub(crate) enum Fail {
    Invalid(OpenApiError),
    Skip(String),
}

/// How to convert.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Put before every tool name.
    pub tool_prefix: String,
    /// Replaces `servers[0]` (Swagger: `schemes`, `host` and `basePath`).
    pub server_url: Option<String>,
    /// When not empty, only operations it names are converted.
    pub include: Selection,
    /// Operations it names are left out.
    pub exclude: Selection,
    /// No `outputSchema`s: they are most of a large API's converted size (Stripe: 97% inlined, 70% with
    /// shared definitions) and of what `tools/list` sends, and clients work without them (answers are then
    /// text only).
    pub no_output_schemas: bool,
    /// How many `$ref`s an `outputSchema` expands inside one another (default 3); deeper models are reduced
    /// to their type. Stripe's expandable fields make its answers' schemas grow fast with it (inlined: 58 MB
    /// at 3, 12 MB at 2, 2 MB at 1).
    pub output_schema_depth: Option<usize>,
    /// Every tool's schemas whole, as before shared definitions: by default the subschemas tools repeat are
    /// kept once, in the server's `schemaDefs` (see [`Conversion::share_schemas`]).
    pub inline_schemas: bool,
}

/// One operation that became a tool.
#[derive(Debug, Clone)]
pub struct Converted {
    /// `operationId`, or `METHOD /path` when there is none: how overrides name the operation.
    pub key: String,
    pub method: String,
    pub path: String,
    pub tool: ToolConfig,
}

/// One operation that did not become a tool, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skipped {
    pub key: String,
    pub method: String,
    pub path: String,
    pub pointer: String,
    pub reason: String,
    /// The document is wrong there (a dangling `$ref`, a server variable without a default...), as opposed
    /// to right but out of the gateway's reach.
    pub invalid: bool,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.method.to_ascii_uppercase(), self.path)?;
        if self.key != format!("{} {}", self.method.to_ascii_uppercase(), self.path) {
            write!(f, " ({})", self.key)?;
        }
        write!(f, " at {}: {}", self.pointer, self.reason)
    }
}

/// The result of converting one document.
#[derive(Debug, Clone, Default)]
pub struct Conversion {
    /// `openapi` or `swagger` version string of the source.
    pub spec_version: String,
    pub title: Option<String>,
    pub version: Option<String>,
    /// The upstream base URL the tools were built against (`servers[0]` or the override).
    pub server_url: Option<String>,
    /// The schemes the document declares that the gateway can apply; credentials left empty.
    pub security_schemes: Vec<SecurityScheme>,
    pub tools: Vec<Converted>,
    pub skipped: Vec<Skipped>,
    /// Keys of operations left out by the include/exclude selection.
    pub excluded: Vec<String>,
    /// Lossy but harmless conversions worth telling the operator about.
    pub warnings: Vec<String>,
}

impl Conversion {
    /// Operations in the document.
    pub fn found(&self) -> usize {
        self.tools.len() + self.skipped.len() + self.excluded.len()
    }

    /// A document none of whose operations converts, because of faults in it, is refused: the first fault.
    pub fn refusal(&self) -> Option<OpenApiError> {
        if !self.tools.is_empty() {
            return None;
        }
        self.skipped.iter().find(|s| s.invalid).map(|s| OpenApiError::new(&s.pointer, &s.reason))
    }

    /// Moves the subschemas the tools repeat into shared definitions, returned for the server's
    /// `schemaDefs` (whose names in use are `taken`), leaving `$ref`s to them: Stripe's conversion goes
    /// from 57 MB to a few, and `tools/list` still shows each tool whole.
    pub fn share_schemas(&mut self, taken: impl IntoIterator<Item = String>) -> Map<String, Value> {
        let mut tools: Vec<&mut ToolConfig> = Vec::with_capacity(self.tools.len());
        for c in &mut self.tools {
            tools.push(&mut c.tool);
        }
        share::share(&mut tools, taken)
    }
}

/// Reads a document from text: JSON, or YAML when built with the `yaml` feature.
pub fn parse_document(text: &str) -> Result<Value, OpenApiError> {
    crate::config::parse_document(text).map_err(|e| OpenApiError::new("#", e.message))
}

/// Converts a parsed document.
pub fn convert(doc: &Value, options: &Options) -> Result<Conversion, OpenApiError> {
    let Value::Object(root) = doc else {
        return Err(OpenApiError::new("#", "an OpenAPI document must be an object"));
    };
    let upgraded;
    let (doc, spec_version) = match (root.get("openapi"), root.get("swagger")) {
        (Some(Value::String(v)), _) if v.starts_with("3.0") || v.starts_with("3.1") => (doc, v.clone()),
        (Some(v), _) => {
            return Err(OpenApiError::new("#/openapi", format!("version {v} is not supported (3.0 and 3.1 are)")))
        }
        (None, Some(v)) if v == "2.0" => {
            upgraded = swagger::upgrade(doc)?;
            (&upgraded, "2.0".to_string())
        }
        (None, Some(v)) => {
            return Err(OpenApiError::new("#/swagger", format!("version {v} is not supported (2.0 is)")))
        }
        (None, None) => {
            return Err(OpenApiError::new("#", "not an OpenAPI document: it has neither `openapi` nor `swagger`"))
        }
    };
    let info = doc.get("info");
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let mut out = Conversion {
        spec_version,
        title: text(info.and_then(|i| i.get("title"))),
        version: text(info.and_then(|i| i.get("version"))),
        ..Conversion::default()
    };
    // With a server URL given, the document's own need not be usable: it only names the servers to replace.
    let doc_server = match &options.server_url {
        Some(_) => server_url(doc).ok().flatten(),
        None => server_url(doc)?,
    };
    out.server_url = options.server_url.clone().or_else(|| doc_server.clone());
    let base = match (&options.server_url, out.server_url.as_deref()) {
        (Some(url), _) => {
            check_server_url(url).map_err(|e| OpenApiError::new("#", format!("server URL option: {e}")))?
        }
        (None, Some(url)) => base_url(url)?,
        (None, None) => String::new(),
    };
    let mut unused: Vec<select::Entry<'_>> = Vec::new();
    for selection in [&options.include, &options.exclude] {
        for e in selection.entries() {
            unused.push(e);
        }
    }
    let schemes = operation::SecuritySchemes::read(doc)?;
    out.security_schemes = schemes.supported.clone();
    for (id, why) in &schemes.unsupported {
        out.warnings.push(format!("security scheme '{id}': {why}"));
    }
    let paths = match doc.get("paths") {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Object(p)) => p,
        Some(_) => return Err(OpenApiError::new("#/paths", "must be an object")),
    };
    let mut names: HashSet<String> = HashSet::new();
    for (path, item) in paths {
        let item_at = format!("#/paths/{}", pointer_token(path));
        if path.starts_with("x-") {
            continue;
        }
        if !path.starts_with('/') {
            return Err(OpenApiError::new(item_at, "a path must start with '/'"));
        }
        // A faulty path item or operation is skipped with its pointer; the rest of the document converts.
        let item_obj = match object_at(resolve(doc, item, &item_at), &item_at, "a path item", "") {
            Ok(o) => o,
            Err((reason, pointer, invalid)) => {
                out.skipped.push(skipped(format!("* {path}"), "*", path, pointer, reason, invalid));
                continue;
            }
        };
        for (method, op) in item_obj {
            if !METHODS.contains(&method.as_str()) {
                continue;
            }
            let at = format!("{item_at}/{method}");
            let fallback_key = format!("{} {path}", method.to_ascii_uppercase());
            // Some documents (DigitalOcean's) make operations `$ref`s to other files.
            let op_obj = match object_at(resolve(doc, op, &at), &at, "an operation", "the operation is ") {
                Ok(o) => o,
                Err((reason, pointer, invalid)) => {
                    out.skipped.push(skipped(fallback_key, method, path, pointer, reason, invalid));
                    continue;
                }
            };
            let operation_id = op_obj.get("operationId").and_then(Value::as_str).filter(|s| !s.is_empty());
            let key = operation_id.map_or(fallback_key, str::to_string);
            let mut tags: Vec<&str> = Vec::new();
            for t in op_obj.get("tags").and_then(Value::as_array).into_iter().flatten() {
                if let Some(t) = t.as_str() {
                    tags.push(t);
                }
            }
            let which = select::OperationRef { tags: &tags, operation_id, method, path };
            unused.retain(|e| !e.matches(&which));
            if (!options.include.is_empty() && !options.include.matches(&which)) || options.exclude.matches(&which) {
                out.excluded.push(key);
                continue;
            }
            let ctx = operation::Context {
                doc,
                schemes: &schemes,
                base: &base,
                doc_server: doc_server.as_deref(),
                prefix: &options.tool_prefix,
                output_schemas: !options.no_output_schemas,
                output_depth: options.output_schema_depth.unwrap_or(operation::RESPONSE_REFS),
            };
            match operation::convert(&ctx, path, method, item_obj, op_obj, &at, &mut names) {
                Ok((tool, warnings)) => {
                    for w in warnings {
                        out.warnings.push(format!("{key}: {w}"));
                    }
                    out.tools.push(Converted { key, method: method.clone(), path: path.clone(), tool });
                }
                Err(Fail::Skip(reason)) => out.skipped.push(skipped(key, method, path, at, reason, false)),
                Err(Fail::Invalid(e)) => out.skipped.push(skipped(key, method, path, e.pointer, e.reason, true)),
            }
        }
    }
    for e in &unused {
        out.warnings.push(format!("the selection's {e} names no operation"));
    }
    Ok(out)
}

/// A resolved path item or operation as an object, or why it is skipped: (reason, pointer, invalid).
fn object_at<'a>(
    resolved: Result<&'a Value, Fail>,
    at: &str,
    what: &str,
    skip_prefix: &str,
) -> Result<&'a Map<String, Value>, (String, String, bool)> {
    match resolved {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err((format!("{what} must be an object"), at.to_string(), true)),
        Err(Fail::Skip(why)) => Err((format!("{skip_prefix}{why}"), at.to_string(), false)),
        Err(Fail::Invalid(e)) => Err((e.reason, e.pointer, true)),
    }
}

/// One operation (or, with method `*`, a whole path item) that did not become a tool.
#[inline(never)]
fn skipped(key: String, method: &str, path: &str, pointer: String, reason: String, invalid: bool) -> Skipped {
    Skipped { key, method: method.to_string(), path: path.to_string(), pointer, reason, invalid }
}

/// `servers[0].url` with its variables replaced by their defaults.
fn server_url(doc: &Value) -> Result<Option<String>, OpenApiError> {
    first_server(doc.get("servers"), "#/servers")
}

/// The first entry of a `servers` list (`at` is its pointer), variables at their defaults.
pub(crate) fn first_server(servers: Option<&Value>, at: &str) -> Result<Option<String>, OpenApiError> {
    let Some(first) = servers.and_then(Value::as_array).and_then(|s| s.first()) else {
        return Ok(None);
    };
    let url = first
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| OpenApiError::new(format!("{at}/0/url"), "must be a string"))?;
    let mut url = url.to_string();
    if let Some(Value::Object(vars)) = first.get("variables") {
        for (name, var) in vars {
            let default = var.get("default").and_then(Value::as_str).ok_or_else(|| {
                OpenApiError::new(format!("{at}/0/variables/{}/default", pointer_token(name)), "must be a string")
            })?;
            url = url.replace(&format!("{{{name}}}"), default);
        }
    }
    Ok(Some(url))
}

/// The `host[:port]` of an absolute URL.
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    rest.split(['/', '?', '#']).next().filter(|h| !h.is_empty())
}

/// Checks a base URL given instead of `servers[0]` and returns it without its trailing slash.
pub fn check_server_url(url: &str) -> Result<String, String> {
    if url.contains(['{', '}']) {
        return Err(format!("'{url}' has a variable without a default"));
    }
    let lower = url.to_ascii_lowercase();
    let ok = lower.starts_with("http://") || lower.starts_with("https://") || url.starts_with('/') || url.is_empty();
    if !ok || url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("'{url}' is not an http(s) URL or an absolute path"));
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// The document's own base URL: its host must be literal, it goes into tool URLs as is.
fn base_url(url: &str) -> Result<String, OpenApiError> {
    check_server_url(url).map_err(|e| OpenApiError::new("#/servers/0/url", e))
}

/// Escapes one JSON pointer reference token.
pub fn pointer_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Finds a local `$ref` target (`#/components/...`), as the plugin's validator does.
pub(crate) use crate::schema::resolve_ref as lookup;

/// Follows `$ref`s of a non-schema object (parameter, request body, response, path item).
/// An external one makes the operation out of reach ([`Fail::Skip`]); a dangling one is an error.
pub(crate) fn resolve<'a>(doc: &'a Value, value: &'a Value, at: &str) -> Result<&'a Value, Fail> {
    let mut current = value;
    let mut here = at.to_string();
    for _ in 0..32 {
        let Some(r) = current.get("$ref") else {
            return Ok(current);
        };
        let invalid = |why: String| Fail::Invalid(OpenApiError::new(format!("{here}/$ref"), why));
        let r = r.as_str().ok_or_else(|| invalid("must be a string".into()))?;
        if !r.starts_with('#') {
            return Err(Fail::Skip(format!(
                "external $ref '{r}' at {here} is not fetched (inline it into the document)"
            )));
        }
        current = lookup(doc, r).ok_or_else(|| invalid(format!("'{r}' does not resolve")))?;
        here = r.to_string();
    }
    Err(Fail::Invalid(OpenApiError::new(at, "$ref chain too long or circular")))
}

#[cfg(test)]
mod tests;
