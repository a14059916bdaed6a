//! Reads config objects field by field from JSON values, for the config types added after tools (prompts,
//! resources, content blocks, icons, arguments).
//!
//! Why not a serde derive: each derived `Deserialize` is compiled once per deserializer it meets, and the
//! wasm module must stay under its size budget; this reader is compiled once. It is as strict as
//! `deny_unknown_fields`, and its errors name the field (`messages[1].content.mimeType`).

use serde_json::{Map, Value};

/// A located config error: `(field, message)`.
pub type FieldError = (String, String);

/// The fields of one config object, consumed one by one; [`Fields::finish`] refuses the rest.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    /// Where the object is, as a field path prefix (`prompts` errors need none: `""`).
    at: String,
    taken: Vec<&'static str>,
}

impl<'a> Fields<'a> {
    /// The fields of `value`, which must be an object; `at` locates it (`""` at an entry's top).
    pub fn of(value: &'a Value, at: &str) -> Result<Fields<'a>, FieldError> {
        match value {
            Value::Object(map) => Ok(Fields { map, at: at.to_string(), taken: Vec::new() }),
            _ => Err((if at.is_empty() { "(entry)".into() } else { at.to_string() }, "must be an object".into())),
        }
    }

    /// The path of one of this object's fields.
    pub fn path(&self, key: &str) -> String {
        if self.at.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.at)
        }
    }

    /// A field's raw value (`null` counts as absent).
    pub fn value(&mut self, key: &'static str) -> Option<&'a Value> {
        self.taken.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn string(&mut self, key: &'static str) -> Result<Option<String>, FieldError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            // YAML reads `version: 1.0` and `text: 42` as numbers and booleans; they are text here.
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(v.to_string())),
            Some(_) => Err((self.path(key), "must be a string".into())),
        }
    }

    pub fn required_string(&mut self, key: &'static str) -> Result<String, FieldError> {
        self.string(key)?.ok_or_else(|| (self.path(key), "is required".into()))
    }

    pub fn boolean(&mut self, key: &'static str) -> Result<bool, FieldError> {
        match self.value(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err((self.path(key), "must be true or false".into())),
        }
    }

    pub fn unsigned(&mut self, key: &'static str) -> Result<Option<u64>, FieldError> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| (self.path(key), "must be a whole number >= 0".into())),
        }
    }

    pub fn object(&mut self, key: &'static str) -> Result<Option<Map<String, Value>>, FieldError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m.clone())),
            Some(_) => Err((self.path(key), "must be an object".into())),
        }
    }

    /// A list whose items `read` parses, each located as `key[i]`.
    pub fn list<T>(
        &mut self,
        key: &'static str,
        read: fn(&Value, &str) -> Result<T, FieldError>,
    ) -> Result<Vec<T>, FieldError> {
        let (items, at) = self.items(key)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, v) in items.iter().enumerate() {
            out.push(read(v, &item_path(&at, i))?);
        }
        Ok(out)
    }

    /// A list field's items and its path (the part of [`Fields::list`] that does not depend on `T`).
    fn items(&mut self, key: &'static str) -> Result<(&'a [Value], String), FieldError> {
        match self.value(key) {
            None => Ok((&[], String::new())),
            Some(Value::Array(items)) => Ok((items.as_slice(), self.path(key))),
            Some(_) => Err((self.path(key), "must be a list".into())),
        }
    }

    /// A list of strings.
    pub fn strings(&mut self, key: &'static str) -> Result<Option<Vec<String>>, FieldError> {
        if self.map.get(key).is_none_or(Value::is_null) {
            self.taken.push(key);
            return Ok(None);
        }
        self.list(key, |v, at| match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(_) | Value::Bool(_) => Ok(v.to_string()),
            _ => Err((at.to_string(), "must be a string".into())),
        })
        .map(Some)
    }

    /// A field read by serde (the request and response templates tools share).
    pub fn typed<T: serde::de::DeserializeOwned>(&mut self, key: &'static str) -> Result<Option<T>, FieldError> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
                let inner = crate::config::field_error(key, e);
                let field =
                    if inner.field == key { self.path(key) } else { self.path(&format!("{key}.{}", inner.field)) };
                (field, inner.message)
            }),
        }
    }

    /// Refuses any field that was not read: a typo is an error, not a silently ignored setting.
    pub fn finish(self) -> Result<(), FieldError> {
        match self.map.keys().find(|k| !self.taken.contains(&k.as_str())) {
            None => Ok(()),
            Some(k) => Err((self.path(k), format!("unknown field `{k}`, expected one of {}", self.taken.join(", ")))),
        }
    }
}

#[inline(never)]
fn item_path(at: &str, i: usize) -> String {
    format!("{at}[{i}]")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_and_locates() {
        let v = json!({"name": "n", "n": 3, "flag": true, "tags": ["a", 1], "extra": 1});
        let mut f = Fields::of(&v, "prompts[0]").unwrap();
        assert_eq!(f.required_string("name").unwrap(), "n");
        assert_eq!(f.unsigned("n").unwrap(), Some(3));
        assert!(f.boolean("flag").unwrap());
        assert_eq!(f.strings("tags").unwrap(), Some(vec!["a".to_string(), "1".to_string()]));
        assert_eq!(f.strings("none").unwrap(), None);
        assert_eq!(f.required_string("title").unwrap_err().0, "prompts[0].title");
        let e = f.finish().unwrap_err();
        assert_eq!(e.0, "prompts[0].extra");
        assert!(e.1.contains("expected one of name, n, flag, tags, none, title"), "{}", e.1);
        let v = json!({"items": [{"a": 1}, "x"], "s": [1]});
        let mut f = Fields::of(&v, "").unwrap();
        let e = f.list("items", |v, at| Fields::of(v, at).map(|_| ())).unwrap_err();
        assert_eq!(e, ("items[1]".to_string(), "must be an object".to_string()));
        assert_eq!(f.string("s").unwrap_err().0, "s");
        assert!(Fields::of(&json!(1), "").is_err());
    }
}
