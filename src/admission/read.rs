//! Reads admission's config from the parsed document by hand: serde's derived readers cost the module tens
//! of kilobytes for a handful of small structs. Unknown fields are refused, as everywhere in the config,
//! and every error names the field.

use serde_json::{Map, Value};

pub type FieldError = (String, String);

/// The object at `field`, refusing fields not in `known`.
pub fn object<'a>(v: &'a Value, field: &str, known: &[&str]) -> Result<&'a Map<String, Value>, FieldError> {
    let map = v.as_object().ok_or_else(|| (field.to_string(), "must be an object".to_string()))?;
    if let Some(k) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err((field.to_string(), format!("unknown field `{k}`, expected one of {}", known.join(", "))));
    }
    Ok(map)
}

/// A list of strings (absent: empty).
pub fn strings(map: &Map<String, Value>, key: &str, field: &str) -> Result<Vec<String>, FieldError> {
    Ok(opt_strings(map, key, field)?.unwrap_or_default())
}

/// A list of strings, `None` when absent.
pub fn opt_strings(map: &Map<String, Value>, key: &str, field: &str) -> Result<Option<Vec<String>>, FieldError> {
    let err = || (format!("{field}.{key}"), "must be a list of strings".to_string());
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                out.push(i.as_str().ok_or_else(err)?.to_string());
            }
            Ok(Some(out))
        }
        Some(_) => Err(err()),
    }
}

/// A string, `None` when absent.
pub fn string(map: &Map<String, Value>, key: &str, field: &str) -> Result<Option<String>, FieldError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err((format!("{field}.{key}"), "must be a string".into())),
    }
}

/// A boolean, `None` when absent.
pub fn boolean(map: &Map<String, Value>, key: &str, field: &str) -> Result<Option<bool>, FieldError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err((format!("{field}.{key}"), "must be true or false".into())),
    }
}
