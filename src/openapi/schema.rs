//! OpenAPI schemas to self-contained JSON Schema: `$ref`s inlined, recursion cut at a bounded depth,
//! OpenAPI 3.0 dialect (`nullable`, boolean `exclusiveMinimum`, `example`) rewritten to JSON Schema 2020-12.

use super::{lookup, pointer_token, Fail, OpenApiError};
use serde_json::{Map, Value};

/// Schema nesting beyond this is cut; the plugin's validator accepts 64 levels.
const MAX_NESTING: usize = 40;

/// Which side of the call a schema describes: request schemas drop `readOnly` properties, response
/// schemas drop `writeOnly` ones and examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Request,
    Response,
}

/// Converts schemas of one document, one direction at a time.
pub struct SchemaConverter<'a> {
    doc: &'a Value,
    direction: Direction,
    /// `$ref`s being expanded on the current path: a repeat is recursion.
    stack: Vec<&'a str>,
    /// How many `$ref`s may be expanded inside one another before the rest is cut.
    max_refs: usize,
    pub warnings: Vec<String>,
}

impl<'a> SchemaConverter<'a> {
    pub fn new(doc: &'a Value, direction: Direction, max_refs: usize) -> Self {
        SchemaConverter { doc, direction, stack: Vec::new(), max_refs, warnings: Vec::new() }
    }

    /// Converts the schema found at `at` (a JSON pointer, for error messages).
    pub fn convert(&mut self, schema: &'a Value, at: &str) -> Result<Value, Fail> {
        self.walk(schema, at, 0)
    }

    fn walk(&mut self, schema: &'a Value, at: &str, depth: usize) -> Result<Value, Fail> {
        let obj = match schema {
            Value::Bool(_) => return Ok(schema.clone()),
            Value::Object(o) => o,
            _ => return Err(Fail::Invalid(OpenApiError::new(at, "a schema must be an object"))),
        };
        if depth > MAX_NESTING {
            return Ok(cut(schema, "nested too deeply, not expanded further"));
        }
        if let Some(r) = obj.get("$ref") {
            let r =
                r.as_str().ok_or_else(|| Fail::Invalid(OpenApiError::new(format!("{at}/$ref"), "must be a string")))?;
            let resolved = self.follow(r, at, depth)?;
            if obj.len() == 1 {
                return Ok(resolved);
            }
            // Keywords beside a `$ref` (OpenAPI 3.1) refine the referenced schema.
            let extra = self.keywords(obj, at, depth)?;
            let mut out = match resolved {
                Value::Object(m) => m,
                Value::Bool(true) => Map::new(),
                other => {
                    return Ok(crate::json::object(vec![("allOf", Value::Array(vec![other, Value::Object(extra)]))]))
                }
            };
            out.extend(extra);
            return Ok(Value::Object(out));
        }
        self.keywords(obj, at, depth).map(Value::Object)
    }

    /// Expands one `$ref`, or cuts it when it recurses or nests too deep.
    fn follow(&mut self, r: &'a str, at: &str, depth: usize) -> Result<Value, Fail> {
        if !r.starts_with('#') {
            return Err(Fail::Skip(format!(
                "external $ref '{r}' at {at} is not fetched (inline it into the document)"
            )));
        }
        let target = lookup(self.doc, r)
            .ok_or_else(|| Fail::Invalid(OpenApiError::new(format!("{at}/$ref"), format!("'{r}' does not resolve"))))?;
        let name = r.rsplit('/').next().unwrap_or(r);
        if self.stack.contains(&r) {
            return Ok(cut(target, &format!("recursive reference to {name}, not expanded")));
        }
        if self.stack.len() >= self.max_refs {
            return Ok(cut(target, &format!("{name}, not expanded further")));
        }
        self.stack.push(r);
        let out = self.walk(target, r, depth + 1);
        self.stack.pop();
        out
    }

    fn keywords(&mut self, obj: &'a Map<String, Value>, at: &str, depth: usize) -> Result<Map<String, Value>, Fail> {
        let mut out = Map::new();
        let mut nullable = false;
        let mut dropped: Vec<&str> = Vec::new();
        for (key, value) in obj {
            let here = || format!("{at}/{}", pointer_token(key));
            match key.as_str() {
                "$ref" => {}
                "nullable" => nullable = value.as_bool() == Some(true),
                "discriminator" | "xml" | "externalDocs" => {}
                k if k.starts_with("x-") => {}
                "example" => {
                    if self.direction == Direction::Request && !obj.contains_key("examples") {
                        out.insert("examples".into(), Value::Array(vec![value.clone()]));
                    }
                }
                "examples" => {
                    if self.direction == Direction::Request && value.is_array() {
                        out.insert(key.clone(), value.clone());
                    }
                }
                "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" => {
                    let Value::Object(members) = value else {
                        return Err(Fail::Invalid(OpenApiError::new(here(), "must be an object")));
                    };
                    let mut converted = Map::new();
                    for (name, sub) in members {
                        let c = self.walk(sub, &format!("{}/{}", here(), pointer_token(name)), depth + 1)?;
                        let hidden = match self.direction {
                            Direction::Request => c.get("readOnly") == Some(&Value::Bool(true)),
                            Direction::Response => c.get("writeOnly") == Some(&Value::Bool(true)),
                        };
                        if hidden && key == "properties" {
                            dropped.push(name);
                        } else {
                            converted.insert(name.clone(), c);
                        }
                    }
                    out.insert(key.clone(), Value::Object(converted));
                }
                "items"
                | "additionalProperties"
                | "not"
                | "if"
                | "then"
                | "else"
                | "contains"
                | "propertyNames"
                | "unevaluatedProperties"
                | "unevaluatedItems"
                | "additionalItems"
                | "contentSchema" => {
                    let converted = match value {
                        Value::Array(list) => Value::Array(self.list(list, &here(), depth)?),
                        other => self.walk(other, &here(), depth + 1)?,
                    };
                    out.insert(key.clone(), converted);
                }
                "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                    let Value::Array(list) = value else {
                        return Err(Fail::Invalid(OpenApiError::new(here(), "must be a list of schemas")));
                    };
                    out.insert(key.clone(), Value::Array(self.list(list, &here(), depth)?));
                }
                "type" if value == "file" => {
                    return Err(Fail::Skip(format!("file uploads (type: file at {at}) are not supported")));
                }
                "pattern" => match value.as_str() {
                    Some(p) if regex_lite::Regex::new(p).is_ok() => {
                        out.insert(key.clone(), value.clone());
                    }
                    _ => self
                        .warnings
                        .push(format!("{}: pattern dropped (not a regular expression the gateway supports)", here())),
                },
                _ => {
                    out.insert(key.clone(), value.clone());
                }
            }
        }
        if !dropped.is_empty() {
            if let Some(Value::Array(required)) = out.get_mut("required") {
                required.retain(|r| r.as_str().is_none_or(|r| !dropped.contains(&r)));
                if required.is_empty() {
                    out.remove("required");
                }
            }
        }
        // OpenAPI 3.0's boolean exclusive bounds become 2020-12's numeric ones.
        for (exclusive, bound) in [("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")] {
            if let Some(Value::Bool(on)) = out.get(exclusive).cloned() {
                out.remove(exclusive);
                if on {
                    if let Some(limit) = out.remove(bound) {
                        out.insert(exclusive.into(), limit);
                    }
                }
            }
        }
        if nullable {
            if let Some(Value::Array(values)) = out.get_mut("enum") {
                if !values.contains(&Value::Null) {
                    values.push(Value::Null);
                }
            }
            match out.get("type").cloned() {
                Some(Value::String(t)) => {
                    out.insert("type".into(), or_null(t));
                }
                Some(_) => {}
                // `nullable` beside `oneOf`/`allOf`/`$ref` and no `type`: documents mean "or null".
                None if out.contains_key("enum") => {}
                None => {
                    let mut outer = Map::new();
                    for key in ["title", "description", "default", "readOnly", "writeOnly", "deprecated"] {
                        if let Some(v) = out.remove(key) {
                            outer.insert(key.into(), v);
                        }
                    }
                    let null = crate::json::object(vec![("type", Value::from("null"))]);
                    outer.insert("anyOf".into(), Value::Array(vec![Value::Object(out), null]));
                    return Ok(outer);
                }
            }
        }
        Ok(out)
    }

    fn list(&mut self, list: &'a [Value], at: &str, depth: usize) -> Result<Vec<Value>, Fail> {
        let mut out = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            out.push(self.walk(s, &format!("{at}/{i}"), depth + 1)?);
        }
        Ok(out)
    }
}

/// `[t, "null"]`: a type or null.
fn or_null(t: String) -> Value {
    Value::Array(vec![Value::String(t), Value::from("null")])
}

/// What stands in for a schema that is not expanded: its type, so validation still checks the basics.
fn cut(target: &Value, why: &str) -> Value {
    let mut out = Map::new();
    let nullable = target.get("nullable") == Some(&Value::Bool(true));
    match target.get("type") {
        Some(Value::String(t)) if nullable => {
            out.insert("type".into(), or_null(t.clone()));
        }
        Some(t) if t.is_string() || t.is_array() => {
            out.insert("type".into(), t.clone());
        }
        _ => {}
    }
    out.insert("description".into(), Value::String(format!("({why})")));
    Value::Object(out)
}

/// Whether a converted schema describes a JSON object (what MCP requires of `outputSchema` and what can be
/// split into one argument per property).
pub fn is_object(schema: &Value) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(_) => false,
        None => {
            schema.get("properties").is_some()
                || schema.get("additionalProperties").is_some()
                || schema.get("allOf").and_then(Value::as_array).is_some_and(|all| all.iter().any(is_object))
        }
    }
}

/// The properties and required names of an object schema, merging `allOf` members; `None` when the schema
/// is not a plain object (a `oneOf`, an array, a free-form map).
pub fn flatten_object(schema: &Value) -> Option<(Map<String, Value>, Vec<String>)> {
    if !is_object(schema) || schema.get("oneOf").is_some() || schema.get("anyOf").is_some() {
        return None;
    }
    let mut props = Map::new();
    let mut required = Vec::new();
    if let Some(Value::Object(p)) = schema.get("properties") {
        for (k, v) in p {
            props.insert(k.clone(), v.clone());
        }
    }
    if let Some(Value::Array(r)) = schema.get("required") {
        for r in r {
            if let Some(r) = r.as_str() {
                required.push(r.to_string());
            }
        }
    }
    if let Some(Value::Array(all)) = schema.get("allOf") {
        for member in all {
            let (p, r) = flatten_object(member)?;
            props.extend(p);
            required.extend(r);
        }
    }
    if props.is_empty() {
        return None;
    }
    required.retain(|r| props.contains_key(r));
    required.dedup();
    Some((props, required))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn conv(doc: &Value, dir: Direction) -> Result<Value, Fail> {
        SchemaConverter::new(doc, dir, 8).convert(&doc["s"], "#/s")
    }

    #[test]
    fn inlines_refs_and_rewrites_openapi_30_keywords() {
        let doc = json!({
            "s": {"$ref": "#/components/schemas/Pet"},
            "components": {"schemas": {
                "Pet": {"type": "object", "required": ["id", "name"], "properties": {
                    "id": {"type": "integer", "readOnly": true},
                    "name": {"type": "string", "nullable": true, "example": "rex"},
                    "age": {"type": "integer", "minimum": 0, "exclusiveMinimum": true},
                    "kind": {"$ref": "#/components/schemas/Kind"}
                }, "discriminator": {"propertyName": "kind"}, "x-internal": 1},
                "Kind": {"type": "string", "enum": ["cat", "dog"], "nullable": true}
            }}
        });
        let s = conv(&doc, Direction::Request).unwrap();
        assert_eq!(s["required"], json!(["name"]), "readOnly id is not asked for");
        assert!(s["properties"].get("id").is_none());
        assert_eq!(s["properties"]["name"], json!({"type": ["string", "null"], "examples": ["rex"]}));
        assert_eq!(s["properties"]["age"], json!({"type": "integer", "exclusiveMinimum": 0}));
        assert_eq!(s["properties"]["kind"]["enum"], json!(["cat", "dog", null]));
        assert!(s.get("discriminator").is_none() && s.get("x-internal").is_none());
        let r = conv(&doc, Direction::Response).unwrap();
        assert!(r["properties"].get("id").is_some(), "responses keep readOnly fields");
        assert!(r["properties"]["name"].get("examples").is_none());
    }

    #[test]
    fn cuts_recursion_and_reports_bad_refs() {
        let doc = json!({"s": {"$ref": "#/d/Node"}, "d": {"Node": {"type": "object", "properties": {
            "children": {"type": "array", "items": {"$ref": "#/d/Node"}}}}}});
        let s = conv(&doc, Direction::Request).unwrap();
        let inner = &s["properties"]["children"]["items"];
        assert_eq!(inner["type"], "object");
        assert!(inner["description"].as_str().unwrap().contains("recursive reference to Node"));
        let bad = json!({"s": {"properties": {"a": {"$ref": "#/nope"}}}});
        match conv(&bad, Direction::Request) {
            Err(Fail::Invalid(e)) => assert_eq!(e.pointer, "#/s/properties/a/$ref"),
            other => panic!("{other:?}"),
        }
        let external = json!({"s": {"$ref": "other.yaml#/Pet"}});
        assert!(matches!(conv(&external, Direction::Request), Err(Fail::Skip(_))));
    }

    #[test]
    fn bounded_expansion_of_deep_chains() {
        let mut doc = json!({"s": {"$ref": "#/d/n0"}, "d": {}});
        for i in 0..30 {
            doc["d"][format!("n{i}")] =
                json!({"type": "object", "properties": {"next": {"$ref": format!("#/d/n{}", i + 1)}}});
        }
        doc["d"]["n30"] = json!({"type": "string"});
        let s = SchemaConverter::new(&doc, Direction::Response, 4).convert(&doc["s"], "#/s").unwrap();
        let text = s.to_string();
        assert!(text.contains("n4, not expanded further"), "{text}");
    }

    #[test]
    fn nullable_survives_cuts_and_combinators() {
        let doc = json!({"s": {"type": "object", "properties": {
            "milestone": {"nullable": true, "description": "the milestone", "oneOf": [{"type": "string"}, {"type": "integer"}]},
            "parent": {"$ref": "#/d/Team"}}}, "d": {"Team": {"type": "object", "nullable": true, "properties": {"p": {"$ref": "#/d/Team"}}}}});
        let s = SchemaConverter::new(&doc, Direction::Response, 1).convert(&doc["s"], "#/s").unwrap();
        let milestone = &s["properties"]["milestone"];
        assert_eq!(milestone["description"], "the milestone");
        assert_eq!(milestone["anyOf"][1], json!({"type": "null"}));
        assert_eq!(s["properties"]["parent"]["type"], json!(["object", "null"]));
        assert_eq!(s["properties"]["parent"]["properties"]["p"]["type"], json!(["object", "null"]), "kept when cut");
        let v = crate::schema::Validator::new(s).unwrap();
        assert!(v.validate(&json!({"milestone": null, "parent": {"p": null}})).is_empty());
        assert!(!v.validate(&json!({"milestone": true})).is_empty());
    }

    #[test]
    fn flattens_all_of_objects_only() {
        let s = json!({"allOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"properties": {"b": {"type": "integer"}}}
        ]});
        let (props, req) = flatten_object(&s).unwrap();
        assert_eq!(props.keys().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(req, ["a"]);
        assert!(flatten_object(&json!({"oneOf": [{"type": "object"}]})).is_none());
        assert!(flatten_object(&json!({"type": "array"})).is_none());
        assert!(flatten_object(&json!({"type": "object", "additionalProperties": true})).is_none());
    }
}
