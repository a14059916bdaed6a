//! Swagger 2.0 upgraded to the OpenAPI 3.0 shape, so one converter serves both.
//!
//! `host`/`basePath`/`schemes` become `servers`, `definitions` become `components.schemas`, body and
//! formData parameters become a `requestBody`, response schemas gain a media type, `securityDefinitions`
//! become `components.securitySchemes`. Pointers in errors then refer to the upgraded shape, which keeps
//! `paths` as they were.

use super::{pointer_token, resolve, Fail, OpenApiError};
use crate::json::object;
use serde_json::{Map, Value};

/// Keywords a Swagger non-body parameter shares with a schema.
const SCHEMA_KEYS: [&str; 16] = [
    "type",
    "format",
    "items",
    "enum",
    "default",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "multipleOf",
];

/// Upgrades a Swagger 2.0 document.
pub fn upgrade(doc: &Value) -> Result<Value, OpenApiError> {
    let mut out = Map::new();
    out.insert("openapi".into(), Value::from("3.0.3"));
    for key in ["info", "tags", "security", "externalDocs"] {
        if let Some(v) = doc.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(host) = doc.get("host").and_then(Value::as_str) {
        let scheme = doc
            .get("schemes")
            .and_then(Value::as_array)
            .and_then(|s| s.iter().filter_map(Value::as_str).find(|x| *x == "https").or_else(|| s.first()?.as_str()))
            .unwrap_or("https");
        let base = doc.get("basePath").and_then(Value::as_str).unwrap_or("");
        out.insert("servers".into(), servers(format!("{scheme}://{host}{base}")));
    } else if let Some(base) = doc.get("basePath").and_then(Value::as_str) {
        out.insert("servers".into(), servers(base.to_string()));
    }
    let mut components = Map::new();
    if let Some(defs) = doc.get("definitions") {
        components.insert("schemas".into(), defs.clone());
    }
    if let Some(Value::Object(defs)) = doc.get("securityDefinitions") {
        let mut schemes = Map::new();
        for (id, d) in defs {
            let mut s = d.clone();
            if d.get("type").and_then(Value::as_str) == Some("basic") {
                s = object(vec![("type", Value::from("http")), ("scheme", Value::from("basic"))]);
                if let Some(desc) = d.get("description") {
                    set(&mut s, "description", desc.clone());
                }
            }
            schemes.insert(id.clone(), s);
        }
        components.insert("securitySchemes".into(), Value::Object(schemes));
    }
    let consumes = media_list(doc.get("consumes"));
    let produces = media_list(doc.get("produces"));
    let mut paths = Map::new();
    match doc.get("paths") {
        None => {}
        Some(Value::Object(items)) => {
            for (path, item) in items {
                let at = format!("#/paths/{}", pointer_token(path));
                let Value::Object(item) = item else {
                    paths.insert(path.clone(), item.clone());
                    continue;
                };
                let mut new_item = Map::new();
                for (key, op) in item {
                    if key == "parameters" {
                        continue;
                    }
                    let Value::Object(op) = op else {
                        new_item.insert(key.clone(), op.clone());
                        continue;
                    };
                    let op_at = format!("{at}/{key}");
                    new_item.insert(key.clone(), operation(doc, item, op, &op_at, &consumes, &produces)?);
                }
                paths.insert(path.clone(), Value::Object(new_item));
            }
        }
        Some(_) => return Err(OpenApiError::new("#/paths", "must be an object")),
    }
    out.insert("paths".into(), Value::Object(paths));
    out.insert("components".into(), Value::Object(components));
    let mut upgraded = Value::Object(out);
    rewrite_refs(&mut upgraded);
    Ok(upgraded)
}

/// `{key: value}`: one member, without the list of [`object`].
#[inline(never)]
fn one(key: &str, value: Value) -> Value {
    let mut m = Map::new();
    m.insert(key.to_string(), value);
    Value::Object(m)
}

/// Sets a member of an object built here (`v[key] = value` without `IndexMut`'s conversion of `null`
/// and its panic path).
#[inline(never)]
fn set(v: &mut Value, key: &str, value: Value) {
    if let Value::Object(m) = v {
        m.insert(key.to_string(), value);
    }
}

/// `servers: [{url}]`.
fn servers(url: String) -> Value {
    Value::Array(vec![one("url", Value::String(url))])
}

fn media_list(v: Option<&Value>) -> Vec<String> {
    let mut out = Vec::new();
    for m in v.and_then(Value::as_array).into_iter().flatten() {
        if let Some(m) = m.as_str() {
            out.push(m.to_string());
        }
    }
    out
}

fn operation(
    doc: &Value,
    item: &Map<String, Value>,
    op: &Map<String, Value>,
    at: &str,
    consumes: &[String],
    produces: &[String],
) -> Result<Value, OpenApiError> {
    let fail = |f: Fail| match f {
        Fail::Invalid(e) => e,
        Fail::Skip(why) => OpenApiError::new(at, why),
    };
    let consumes = match op.get("consumes") {
        Some(c) => media_list(Some(c)),
        None => consumes.to_vec(),
    };
    let produces = match op.get("produces") {
        Some(p) => media_list(Some(p)),
        None => produces.to_vec(),
    };
    // Parameters are resolved here (body and formData ones must be seen to build the request body).
    let mut params: Vec<Value> = Vec::new();
    let item_at = &at[..at.rfind('/').unwrap_or(0)];
    for (list, base) in [(item.get("parameters"), item_at), (op.get("parameters"), at)] {
        let Some(Value::Array(list)) = list else { continue };
        for (i, p) in list.iter().enumerate() {
            let p = resolve(doc, p, &format!("{base}/parameters/{i}")).map_err(fail)?;
            params.retain(|q| q.get("name") != p.get("name") || q.get("in") != p.get("in"));
            params.push(p.clone());
        }
    }
    let mut out = op.clone();
    out.remove("consumes");
    out.remove("produces");
    let mut new_params = Vec::new();
    let mut form = Map::new();
    let mut form_required = Vec::new();
    let mut encoding = Map::new();
    let mut file = false;
    for p in params {
        match p.get("in").and_then(Value::as_str) {
            Some("body") => {
                // Every type the operation consumes, in its order: the converter picks one the schema fits.
                let schema = p.get("schema").cloned().unwrap_or_else(|| Value::Object(Map::new()));
                let mut content = Map::new();
                for media in consumes.iter().filter(|m| !m.starts_with("multipart/") && !m.contains("form-urlencoded"))
                {
                    content.insert(media.clone(), one("schema", schema.clone()));
                }
                if content.is_empty() {
                    content.insert("application/json".into(), one("schema", schema));
                }
                let mut body = one("content", Value::Object(content));
                if let Some(r) = p.get("required") {
                    set(&mut body, "required", r.clone());
                }
                if let Some(d) = p.get("description") {
                    set(&mut body, "description", d.clone());
                }
                out.insert("requestBody".into(), body);
            }
            Some("formData") => {
                let name = p.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
                file |= p.get("type").and_then(Value::as_str) == Some("file");
                if p.get("required").and_then(Value::as_bool) == Some(true) {
                    form_required.push(Value::from(name.as_str()));
                }
                let style = collection_style(&p);
                if !style.is_empty() {
                    encoding.insert(name.clone(), Value::Object(style));
                }
                form.insert(name, schema_of(&p));
            }
            _ => new_params.push(parameter(&p)),
        }
    }
    if !form.is_empty() {
        let multipart = file
            || (consumes.iter().any(|m| m.starts_with("multipart/"))
                && !consumes.iter().any(|m| m.starts_with("application/x-www-form-urlencoded")));
        let media = if multipart { "multipart/form-data" } else { "application/x-www-form-urlencoded" };
        let mut schema = object(vec![("type", Value::from("object")), ("properties", Value::Object(form))]);
        if !form_required.is_empty() {
            set(&mut schema, "required", Value::Array(form_required.clone()));
        }
        let mut media_type = one("schema", schema);
        if !encoding.is_empty() && !multipart {
            set(&mut media_type, "encoding", Value::Object(encoding));
        }
        out.insert(
            "requestBody".into(),
            object(vec![("required", Value::Bool(!form_required.is_empty())), ("content", one(media, media_type))]),
        );
    }
    if new_params.is_empty() {
        out.remove("parameters");
    } else {
        out.insert("parameters".into(), Value::Array(new_params));
    }
    if let Some(Value::Object(responses)) = op.get("responses") {
        let media = produces.iter().find(|m| m.contains("json")).cloned().unwrap_or("application/json".into());
        let mut new_responses = Map::new();
        for (code, r) in responses {
            let r = resolve(doc, r, &format!("{at}/responses/{}", pointer_token(code))).map_err(fail)?;
            let mut nr = one("description", r.get("description").cloned().unwrap_or_else(|| Value::from("")));
            if let Some(s) = r.get("schema") {
                set(&mut nr, "content", one(&media, one("schema", s.clone())));
            }
            new_responses.insert(code.clone(), nr);
        }
        out.insert("responses".into(), Value::Object(new_responses));
    }
    Ok(Value::Object(out))
}

/// A Swagger non-body parameter in OpenAPI 3 form: its type keywords move into `schema`.
fn parameter(p: &Value) -> Value {
    let mut out = Map::new();
    for key in ["name", "in", "description", "required", "deprecated"] {
        if let Some(v) = p.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    out.insert("schema".into(), schema_of(p));
    out.extend(collection_style(p));
    Value::Object(out)
}

/// `collectionFormat` as OpenAPI 3's style and explode (an array parameter's default is csv). `tsv` has no
/// OpenAPI 3 style: it is named as one, so that the converter reports it.
fn collection_style(p: &Value) -> Map<String, Value> {
    if p.get("type").and_then(Value::as_str) != Some("array") {
        return Map::new();
    }
    let simple = matches!(p.get("in").and_then(Value::as_str), Some("path" | "header"));
    let (style, explode) = match p.get("collectionFormat").and_then(Value::as_str).unwrap_or("csv") {
        "multi" => ("form", true),
        "ssv" => ("spaceDelimited", false),
        "pipes" => ("pipeDelimited", false),
        "tsv" => ("tabDelimited (collectionFormat tsv)", false),
        _ if simple => ("simple", false),
        _ => ("form", false),
    };
    let mut m = Map::new();
    m.insert("style".into(), Value::from(style));
    m.insert("explode".into(), Value::Bool(explode));
    m
}

fn schema_of(p: &Value) -> Value {
    let mut s = Map::new();
    for key in SCHEMA_KEYS {
        if let Some(v) = p.get(key) {
            s.insert(key.into(), v.clone());
        }
    }
    // A file upload is bytes in OpenAPI 3.
    if p.get("type").and_then(Value::as_str) == Some("file") {
        s.insert("type".into(), Value::from("string"));
        s.insert("format".into(), Value::from("binary"));
    }
    if let Some(d) = p.get("description") {
        s.insert("description".into(), d.clone());
    }
    Value::Object(s)
}

/// Points Swagger `$ref`s at their OpenAPI 3 homes.
fn rewrite_refs(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if k == "$ref" {
                    if let Value::String(r) = child {
                        for (old, new) in [
                            ("#/definitions/", "#/components/schemas/"),
                            ("#/parameters/", "#/components/parameters/"),
                            ("#/responses/", "#/components/responses/"),
                        ] {
                            if let Some(rest) = r.strip_prefix(old) {
                                *r = format!("{new}{rest}");
                            }
                        }
                    }
                } else {
                    rewrite_refs(child);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_refs),
        _ => {}
    }
}
