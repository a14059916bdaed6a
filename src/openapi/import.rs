//! A server's in-config `openapi` import: the document converted in `on_configure` with the same library
//! as the CLI, selection and overrides applied, every option error located by field.

use crate::config::{ConfigError, ResponseTemplate, ServerConfig};
use crate::openapi::{self, Options, Selection};
use serde_json::{Map, Value};

/// The value types of the import's options, read from JSON by hand: serde's `from_value` instantiated a
/// deserializer per type (about 4 KB of wasm for these five).
trait Typed: Sized {
    fn read(value: Value) -> Result<Self, &'static str>;
}

impl Typed for String {
    fn read(value: Value) -> Result<Self, &'static str> {
        match value {
            Value::String(s) => Ok(s),
            _ => Err("must be a string"),
        }
    }
}

impl Typed for bool {
    fn read(value: Value) -> Result<Self, &'static str> {
        value.as_bool().ok_or("must be true or false")
    }
}

impl Typed for usize {
    fn read(value: Value) -> Result<Self, &'static str> {
        value.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or("must be a whole number >= 0")
    }
}

impl Typed for Vec<String> {
    fn read(value: Value) -> Result<Self, &'static str> {
        let Value::Array(items) = value else { return Err("must be a list of strings") };
        let mut out = Vec::with_capacity(items.len());
        for i in items {
            let Value::String(s) = i else { return Err("must be a list of strings") };
            out.push(s);
        }
        Ok(out)
    }
}

impl Typed for Map<String, Value> {
    fn read(value: Value) -> Result<Self, &'static str> {
        match value {
            Value::Object(m) => Ok(m),
            _ => Err("must be an object"),
        }
    }
}

/// One value of the import, typed; a type error names the field it sits in.
fn typed<T: Typed>(value: Value, field: &str) -> Result<T, ConfigError> {
    T::read(value).map_err(|message| ConfigError::new(field, message))
}

/// The entries of an object-valued field, or an error naming it.
fn entries(value: Value, field: &str) -> Result<Map<String, Value>, ConfigError> {
    match value {
        Value::Object(m) => Ok(m),
        _ => Err(ConfigError::new(field, "must be a map")),
    }
}

fn selection(value: Value, field: &str) -> Result<Selection, ConfigError> {
    let mut out = Selection::default();
    for (key, v) in entries(value, field)? {
        let here = format!("{field}.{key}");
        match key.as_str() {
            "tags" => out.tags = typed(v, &here)?,
            "operations" => out.operations = typed(v, &here)?,
            "paths" => out.paths = typed(v, &here)?,
            _ => return Err(ConfigError::new(here, "unknown field (expected tags, operations or paths)")),
        }
    }
    Ok(out)
}

/// What an operator may change about one imported operation.
#[derive(Default)]
struct Override {
    name: Option<String>,
    title: Option<String>,
    description: Option<String>,
    hide: bool,
    annotations: Option<Map<String, Value>>,
    response_template: Option<ResponseTemplate>,
    error_response_template: Option<String>,
}

fn override_of(value: Value, field: &str) -> Result<Override, ConfigError> {
    let mut o = Override::default();
    for (key, v) in entries(value, field)? {
        let here = format!("{field}.{key}");
        match key.as_str() {
            "name" => o.name = Some(typed(v, &here)?),
            "title" => o.title = Some(typed(v, &here)?),
            "description" => o.description = Some(typed(v, &here)?),
            "hide" => o.hide = typed(v, &here)?,
            "annotations" => o.annotations = Some(typed(v, &here)?),
            "responseTemplate" => {
                let read = ResponseTemplate::read(&v, &here).map_err(|(f, m)| ConfigError::new(f, m))?;
                o.response_template = Some(read)
            }
            "errorResponseTemplate" => o.error_response_template = Some(typed(v, &here)?),
            _ => {
                return Err(ConfigError::new(
                    here,
                    "unknown field (expected name, title, description, hide, annotations, responseTemplate \
                     or errorResponseTemplate)",
                ))
            }
        }
    }
    Ok(o)
}

/// Converts the document and adds its tools and security schemes to the server. Schemes the server
/// declares itself win, which is how the operator supplies credentials.
pub fn apply(server: &mut ServerConfig, raw: Value) -> Result<(), ConfigError> {
    let mut document = None;
    let mut options = Options::default();
    let mut raw_overrides = Map::new();
    for (key, v) in entries(raw, "openapi")? {
        let here = format!("openapi.{key}");
        match key.as_str() {
            "document" => document = Some(v),
            "serverUrl" => {
                let url: String = typed(v, &here)?;
                openapi::check_server_url(&url).map_err(|e| ConfigError::new(&here, e))?;
                options.server_url = Some(url);
            }
            "toolPrefix" => options.tool_prefix = typed(v, &here)?,
            "include" => options.include = selection(v, &here)?,
            "exclude" => options.exclude = selection(v, &here)?,
            "overrides" => raw_overrides = entries(v, &here)?,
            "outputSchemas" => options.no_output_schemas = !typed::<bool>(v, &here)?,
            "outputSchemaDepth" => options.output_schema_depth = Some(typed(v, &here)?),
            _ => {
                return Err(ConfigError::new(
                    here,
                    "unknown field (expected document, serverUrl, toolPrefix, include, exclude, overrides, \
                     outputSchemas or outputSchemaDepth)",
                ))
            }
        }
    }
    let document = match document {
        None => return Err(ConfigError::new("openapi.document", "is required: the OpenAPI document")),
        Some(Value::String(text)) => openapi::parse_document(&text)
            .map_err(|e| ConfigError::new(format!("openapi.document{}", e.pointer), e.reason))?,
        Some(other) => other,
    };
    let conversion = openapi::convert(&document, &options)
        .and_then(|c| c.refusal().map_or(Ok(c), Err))
        .map_err(|e| ConfigError::new(format!("openapi.document{}", e.pointer), e.reason))?;
    let mut overrides = Vec::new();
    for (key, value) in raw_overrides {
        let field = format!("openapi.overrides.{key}");
        let o = override_of(value, &field)?;
        let known = conversion.tools.iter().any(|t| t.key == key)
            || conversion.skipped.iter().any(|s| s.key == key)
            || conversion.excluded.contains(&key);
        if !known {
            return Err(ConfigError::new(field, "no operation has this operationId (or METHOD /path)"));
        }
        overrides.push((key, o));
    }
    for scheme in conversion.security_schemes {
        if !server.security_schemes.iter().any(|s| s.id == scheme.id) {
            server.security_schemes.push(scheme);
        }
    }
    for converted in conversion.tools {
        let mut tool = converted.tool;
        if let Some((_, o)) = overrides.iter_mut().find(|(k, _)| *k == converted.key) {
            if o.hide {
                continue;
            }
            if let Some(n) = o.name.take() {
                tool.name = n;
            }
            tool.title = o.title.take().or(tool.title);
            tool.description = o.description.take().unwrap_or(tool.description);
            tool.annotations = o.annotations.take().or(tool.annotations);
            tool.response_template = o.response_template.take();
            tool.error_response_template = o.error_response_template.take();
        }
        if server.tools.iter().any(|t| t.name == tool.name) {
            return Err(
                ConfigError::new("name", "duplicate tool name (use openapi.overrides to rename)").in_tool(&tool.name)
            );
        }
        server.tools.push(tool);
    }
    for s in &conversion.skipped {
        server.import_notices.push(format!("skipped {s}"));
    }
    server.import_notices.extend(conversion.warnings);
    Ok(())
}
