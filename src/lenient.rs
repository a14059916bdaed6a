//! Higress-shape configurations (top-level `server:` and `tools:`) are read as Higress reads them: Go's
//! `json.Unmarshal` ignores every field its structs do not declare, and real configs carry such fields
//! (mcp-firecrawl's JSON Schema `format` on an argument). So, in that shape only, a field this gateway does
//! not know is dropped with a warning naming server, tool and field, logged once at load; and an argument
//! declared twice keeps its last declaration, as Higress's maps do (mcp-bravesearch). Our own shape stays
//! strict: there an unknown field is refused at load.
//!
//! What Higress does accept but with a meaning this gateway does not implement is refused, not dropped:
//! `toolSet` (composed servers); the fields that only an MCP proxy (`server.type: mcp-proxy`, served by
//! `crate::proxy`) reads (`type`, `transport`, `mcpServerURL`, `timeout`) are tolerated on REST servers.
//!
//! The field lists are the ones each type's reader declares (`FIELDS`; reading a field not in it fails the
//! tests), so a field added to a struct is known here at once.
//!
//! Built with Higress's template dialect only (the `go-templates` feature, which that shape defaults to):
//! without it a Higress-shape server is refused at load anyway unless it sets `templateDialect: jinja`, and
//! the Envoy module stays smaller (about 9 KB).

use crate::config::{
    ArgConfig, HeaderTemplate, RequestTemplate, ResponseTemplate, SecurityRef, SecurityScheme, ServerConfig, ToolConfig,
};
use serde_json::{Map, Value};

/// Drops the top-level fields of a Higress-shape document that `T` (the plugin's top level) does not read.
pub fn tolerate_top(doc: &mut Map<String, Value>, known: &[&str]) -> Vec<String> {
    let unknown = unknown(doc, known);
    for key in &unknown {
        doc.remove(key);
    }
    let mut out = Vec::with_capacity(unknown.len());
    for key in unknown {
        out.push(format!("field '{key}' {IGNORED}"));
    }
    out
}

/// Server fields parsed outside [`ServerConfig`]'s derive (each with its own error context).
const SERVER_EXTRA: [&str; 5] = ["tools", "openapi", "prompts", "resources", "resourceTemplates"];
/// Fields of Higress's MCP proxy servers (`type: mcp-proxy`), which Higress's REST servers ignore.
const PROXY_ONLY: [&str; 3] = ["transport", "mcpServerURL", "timeout"];

/// Drops what Higress would ignore from a Higress-shape document (the top-level `server` with its `tools`
/// already moved in) and returns a warning for each. What Higress would act on stays, for the config's
/// own checks to accept or refuse.
pub fn tolerate_server(server: &mut Value) -> Vec<String> {
    let mut warnings = Vec::new();
    let Some(obj) = server.as_object_mut() else { return warnings };
    let mut warn = |tool: Option<&str>, field: &str, why: &str| {
        // The gateway puts the server's name before each notice.
        let at = tool.map(|t| format!("tool '{t}': ")).unwrap_or_default();
        warnings.push(format!("{at}field '{field}' {why}"));
    };
    // A REST server's `type` (`rest`) and the proxy's own fields mean nothing to Higress's REST servers.
    if obj.get("type").and_then(Value::as_str) != Some("mcp-proxy") {
        for key in ["type"].into_iter().chain(PROXY_ONLY) {
            if obj.remove(key).is_some() {
                warn(None, key, "is read by Higress's mcp-proxy servers only; ignored, as Higress ignores it here");
            }
        }
    }
    let mut known = ServerConfig::FIELDS.to_vec();
    known.extend_from_slice(&SERVER_EXTRA);
    for key in unknown(obj, &known) {
        obj.remove(&key);
        warn(None, &key, "is not one Higress reads; ignored, as Higress ignores it");
    }
    let refs = [("defaultDownstreamSecurity", SecurityRef::FIELDS)];
    let refs = refs.into_iter().chain([("defaultUpstreamSecurity", SecurityRef::FIELDS)]);
    for (field, known) in refs {
        drop_unknown(obj.get_mut(field), known, field, &mut |f| warn(None, &f, IGNORED));
    }
    if let Some(Value::Array(schemes)) = obj.get_mut("securitySchemes") {
        for (i, s) in schemes.iter_mut().enumerate() {
            let at = format!("securitySchemes[{i}]");
            drop_unknown(Some(s), SecurityScheme::FIELDS, &at, &mut |f| warn(None, &f, IGNORED));
        }
    }
    if let Some(Value::Array(tools)) = obj.get_mut("tools") {
        for (i, tool) in tools.iter_mut().enumerate() {
            let name = tool.get("name").and_then(Value::as_str).map_or_else(|| format!("#{i}"), str::to_string);
            tolerate_tool(tool, &mut |field, why| warn(Some(&name), &field, why));
        }
    }
    warnings
}

const IGNORED: &str = "is not one Higress reads; ignored, as Higress ignores it";

fn tolerate_tool(tool: &mut Value, warn: &mut dyn FnMut(String, &str)) {
    const DRAFT3: &str = "is `required: true|false` inside a schema (JSON Schema draft 3), which today's JSON Schema \
                          does not have; dropped (Higress advertises it as it is and checks nothing)";
    const TWICE: &str = "is declared twice; the last declaration is used, as Higress uses it";
    let mut dropped: Vec<String> = Vec::new();
    let mut draft3: Vec<String> = Vec::new();
    let mut twice: Vec<String> = Vec::new();
    let mut ignored = |f: String| dropped.push(f);
    drop_unknown(Some(tool), ToolConfig::FIELDS, "", &mut ignored);
    let Some(obj) = tool.as_object_mut() else { return };
    drop_unknown(obj.get_mut("security"), SecurityRef::FIELDS, "security", &mut ignored);
    drop_unknown(obj.get_mut("responseTemplate"), ResponseTemplate::FIELDS, "responseTemplate", &mut ignored);
    if let Some(rt) = obj.get_mut("requestTemplate") {
        drop_unknown(Some(rt), RequestTemplate::FIELDS, "requestTemplate", &mut ignored);
        drop_unknown(rt.get_mut("security"), SecurityRef::FIELDS, "requestTemplate.security", &mut ignored);
        if let Some(Value::Array(headers)) = rt.get_mut("headers") {
            for (i, h) in headers.iter_mut().enumerate() {
                let at = format!("requestTemplate.headers[{i}]");
                drop_unknown(Some(h), HeaderTemplate::FIELDS, &at, &mut ignored);
            }
        }
    }
    if let Some(Value::Array(args)) = obj.get_mut("args") {
        for (i, arg) in args.iter_mut().enumerate() {
            let name = arg.get("name").and_then(Value::as_str).map_or_else(|| format!("#{i}"), str::to_string);
            drop_unknown(Some(arg), ArgConfig::FIELDS, &format!("args '{name}'"), &mut ignored);
            let at = format!("args '{name}'");
            if let Some(Value::Object(props)) = arg.get_mut("properties") {
                for (p, v) in props.iter_mut() {
                    drop_boolean_required(v, &format!("{at}.properties.{p}"), &mut draft3);
                }
            }
            if let Some(items) = arg.get_mut("items") {
                drop_boolean_required(items, &format!("{at}.items"), &mut draft3);
            }
        }
        // Higress keys its argument maps by name: a later declaration replaces an earlier one, and the
        // argument is required if either says so (its `required` list keeps both).
        let mut i = 0;
        while i < args.len() {
            let name = args[i].get("name").cloned();
            match args[..i].iter().position(|a| name.is_some() && a.get("name") == name.as_ref()) {
                Some(earlier) => {
                    let required = args[earlier].get("required").and_then(Value::as_bool).unwrap_or(false);
                    args.remove(earlier);
                    if let (true, Some(o)) = (required, args[i - 1].as_object_mut()) {
                        o.insert("required".into(), Value::Bool(true));
                    }
                    twice.push(format!("args '{}'", name.as_ref().and_then(Value::as_str).unwrap_or_default()));
                }
                None => i += 1,
            }
        }
    }
    for f in dropped {
        warn(f, IGNORED);
    }
    for f in draft3 {
        warn(f, DRAFT3);
    }
    for f in twice {
        warn(f, TWICE);
    }
}

/// Removes JSON Schema draft 3's boolean `required` from a property schema and the schemas inside it (an
/// arg's `properties` and `items` reach clients as they are), reporting where.
fn drop_boolean_required(schema: &mut Value, at: &str, found: &mut Vec<String>) {
    let Value::Object(obj) = schema else { return };
    if obj.get("required").is_some_and(Value::is_boolean) {
        obj.remove("required");
        found.push(format!("{at}.required"));
    }
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        props.iter_mut().for_each(|(p, v)| drop_boolean_required(v, &format!("{at}.properties.{p}"), found));
    }
    if let Some(items) = obj.get_mut("items") {
        drop_boolean_required(items, &format!("{at}.items"), found);
    }
}

/// Removes the keys of `value` (an object) that are not in `known`, reporting each as `{at}.{key}`.
fn drop_unknown(value: Option<&mut Value>, known: &[&str], at: &str, report: &mut dyn FnMut(String)) {
    let Some(Value::Object(obj)) = value else { return };
    for key in unknown(obj, known) {
        obj.remove(&key);
        report(if at.is_empty() { key } else { format!("{at}.{key}") });
    }
}

fn unknown(obj: &Map<String, Value>, known: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for k in obj.keys() {
        if !known.contains(&k.as_str()) {
            out.push(k.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_lists_are_the_structs_own() {
        let tool = ToolConfig::FIELDS;
        assert!(tool.contains(&"requestTemplate") && tool.contains(&"security") && tool.contains(&"args"));
        assert!(ArgConfig::FIELDS.contains(&"enum"));
        assert!(SecurityScheme::FIELDS.contains(&"in"));
        assert!(ServerConfig::FIELDS.contains(&"passthroughAuthHeader"));
        assert!(!ServerConfig::FIELDS.contains(&"tools"), "parsed apart, hence SERVER_EXTRA");
    }

    #[test]
    fn drops_unknown_fields_with_a_located_warning() {
        let mut server = json!({
            "name": "s", "type": "rest", "transport": "http", "mystery": 1,
            "securitySchemes": [{"id": "k", "type": "apiKey", "in": "header", "name": "X-Key", "note": "n"}],
            "tools": [{"name": "t", "x": 1, "args": [{"name": "u", "format": "uri"}],
                       "requestTemplate": {"url": "/", "timeoutMs": 3, "headers": [{"key": "a", "value": "b", "c": 1}]}}]
        });
        let w = tolerate_server(&mut server);
        assert_eq!(
            w,
            [
                "field 'type' is read by Higress's mcp-proxy servers only; ignored, as Higress ignores it here",
                "field 'transport' is read by Higress's mcp-proxy servers only; ignored, as Higress ignores it here",
                "field 'mystery' is not one Higress reads; ignored, as Higress ignores it",
                "field 'securitySchemes[0].note' is not one Higress reads; ignored, as Higress ignores it",
                "tool 't': field 'x' is not one Higress reads; ignored, as Higress ignores it",
                "tool 't': field 'requestTemplate.timeoutMs' is not one Higress reads; ignored, as Higress ignores it",
                "tool 't': field 'requestTemplate.headers[0].c' is not one Higress reads; ignored, as Higress ignores it",
                "tool 't': field 'args 'u'.format' is not one Higress reads; ignored, as Higress ignores it",
            ]
        );
        assert_eq!(server["tools"][0]["args"][0], json!({"name": "u"}));
        assert!(server.get("mystery").is_none() && server["securitySchemes"][0].get("note").is_none());
    }

    #[test]
    fn a_repeated_argument_keeps_its_last_declaration() {
        let mut server = json!({"name": "s", "tools": [{"name": "t", "args": [
            {"name": "lang", "description": "first", "required": true},
            {"name": "q", "type": "object", "properties": {"p": {"type": "string", "required": true}}},
            {"name": "lang", "description": "second"}]}]});
        let w = tolerate_server(&mut server);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("'args 'q'.properties.p.required'") && w[0].contains("draft 3"), "{w:?}");
        assert!(w[1].contains("args 'lang'") && w[1].contains("declared twice"), "{w:?}");
        assert_eq!(server["tools"][0]["args"][0]["properties"]["p"], json!({"type": "string"}));
        let args = &server["tools"][0]["args"];
        assert_eq!(args.as_array().unwrap().len(), 2);
        assert_eq!(args[1], json!({"name": "lang", "description": "second", "required": true}));
    }

    /// Higress's five reference configs load unchanged; what Higress ignores in them is said once, at load.
    #[cfg(feature = "go-templates")]
    #[test]
    fn the_reference_configs_load_unchanged() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gotemplate/testdata/higress-configs");
        let mut loaded = Vec::new();
        for file in ["mcp-time", "mcp-book-query", "mcp-github", "mcp-bravesearch", "mcp-firecrawl"] {
            let text = std::fs::read_to_string(dir.join(format!("{file}.yaml"))).unwrap();
            let gw = crate::gateway::Gateway::from_config_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
            loaded.push((file, gw.notices.iter().filter(|n| n.contains("Higress")).count()));
        }
        let warned = |f: &str| loaded.iter().find(|(n, _)| *n == f).map(|(_, c)| *c);
        assert_eq!(warned("mcp-time"), Some(0));
        assert!(warned("mcp-firecrawl").unwrap() > 0, "its arguments' `format`");
        assert_eq!(warned("mcp-bravesearch"), Some(2), "search_lang twice in two tools");
    }

    #[test]
    fn refuses_what_higress_would_act_on() {
        // An MCP proxy keeps its fields (served by `crate::proxy`).
        let mut proxy = json!({"name": "p", "type": "mcp-proxy", "transport": "sse", "mcpServerURL": "/sse"});
        assert!(tolerate_server(&mut proxy).is_empty());
        assert_eq!(proxy["transport"], "sse");
        let e = crate::config::PluginConfig::parse("server: {name: s}\ntoolSet: {name: x}").unwrap_err();
        assert_eq!(e.field, "toolSet");
        // Our own shape stays strict.
        let e = crate::config::PluginConfig::parse(
            "servers: [{name: s, tools: [{name: t, args: [{name: a, format: uri}]}]}]",
        )
        .unwrap_err();
        assert_eq!(
            (e.server.as_deref(), e.tool.as_deref(), e.field.as_str()),
            (Some("s"), Some("t"), "args[0].format")
        );
        // Higress's shape: a top-level field it ignores is dropped, its allowTools kept.
        let c = crate::config::PluginConfig::parse("server: {name: s}\nallowTools: [a]\nlabels: 1").unwrap();
        assert_eq!(c.servers[0].allow_tools.as_deref(), Some(&["a".to_string()][..]));
        assert_eq!(c.servers[0].import_notices.len(), 1, "{:?}", c.servers[0].import_notices);
    }
}
