//! Reads config objects field by field from JSON values: every config type (the plugin's top level, sessions,
//! servers, tools and their templates, prompts, resources, content blocks, icons, arguments).
//!
//! Why not a serde derive: each derived `Deserialize` is a visitor per struct and per field type, inlined
//! into one configure-time function of about 110 KB of wasm (measured with twiggy); this reader is compiled
//! once, and each field costs a call. It is as strict as `deny_unknown_fields`, and its errors name the
//! field by its whole path (`requestTemplate.headers[1].value`, `messages[1].content.mimeType`).

use serde_json::{Map, Value};

/// A located config error: `(field, message)`.
pub type FieldError = (String, String);

/// The fields of one config object, consumed one by one; [`Fields::finish`] refuses the rest.
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
    /// Where the object is, as a field path prefix (`prompts` errors need none: `""`).
    at: String,
    taken: Vec<&'static str>,
    /// The type's declared field list (`FIELDS`, which Higress-shape configs are filtered by), when it has
    /// one: tests check that every field read is declared there.
    known: &'static [&'static str],
}

impl<'a> Fields<'a> {
    /// The fields of `value`, which must be an object; `at` locates it (`""` at an entry's top).
    pub fn of(value: &'a Value, at: &str) -> Result<Fields<'a>, FieldError> {
        match value {
            Value::Object(map) => Ok(Fields { map, at: at.to_string(), taken: Vec::new(), known: &[] }),
            _ => Err((if at.is_empty() { "(entry)".into() } else { at.to_string() }, "must be an object".into())),
        }
    }

    /// [`Fields::of`] for a type that declares its field list.
    pub fn known(value: &'a Value, at: &str, known: &'static [&'static str]) -> Result<Fields<'a>, FieldError> {
        let mut f = Fields::of(value, at)?;
        f.known = known;
        Ok(f)
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
        debug_assert!(self.known.is_empty() || self.known.contains(&key), "`{key}` is not in its type's FIELDS");
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

    /// A flag, false when absent.
    pub fn boolean(&mut self, key: &'static str) -> Result<bool, FieldError> {
        Ok(self.flag(key)?.unwrap_or(false))
    }

    /// A flag whose absence means something of its own.
    pub fn flag(&mut self, key: &'static str) -> Result<Option<bool>, FieldError> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err((self.path(key), "must be true or false".into())),
        }
    }

    /// A whole number no larger than `max` (a `u32` or `usize` setting).
    pub fn bounded(&mut self, key: &'static str, max: u64) -> Result<Option<u64>, FieldError> {
        match self.unsigned(key)? {
            Some(n) if n > max => Err((self.path(key), format!("must be at most {max}"))),
            n => Ok(n),
        }
    }

    /// A `usize` setting (32 bits in wasm).
    pub fn size(&mut self, key: &'static str) -> Result<Option<usize>, FieldError> {
        Ok(self.bounded(key, usize::MAX as u64)?.map(|n| n as usize))
    }

    /// Any number.
    pub fn number(&mut self, key: &'static str) -> Result<Option<f64>, FieldError> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| (self.path(key), "must be a number".into())),
        }
    }

    /// One of a fixed set of names (an enum), as its value.
    pub fn choice<T: Copy>(&mut self, key: &'static str, options: &[(&str, T)]) -> Result<Option<T>, FieldError> {
        let names: Vec<&str> = options.iter().map(|o| o.0).collect();
        Ok(self.choice_index(key, &names)?.map(|i| options[i].1))
    }

    /// [`Fields::choice`] read in any case (`Query` for `query`), where Higress lower-cases the value.
    pub fn choice_any_case<T: Copy>(
        &mut self,
        key: &'static str,
        options: &[(&str, T)],
    ) -> Result<Option<T>, FieldError> {
        let names: Vec<&str> = options.iter().map(|o| o.0).collect();
        Ok(self.choice_index_in(key, &names, true)?.map(|i| options[i].1))
    }

    /// The part of [`Fields::choice`] that does not depend on `T`.
    fn choice_index(&mut self, key: &'static str, names: &[&str]) -> Result<Option<usize>, FieldError> {
        self.choice_index_in(key, names, false)
    }

    fn choice_index_in(
        &mut self,
        key: &'static str,
        names: &[&str],
        any_case: bool,
    ) -> Result<Option<usize>, FieldError> {
        let v = match self.value(key) {
            None => return Ok(None),
            Some(v) => v,
        };
        let same = |n: &str, s: &str| if any_case { n.eq_ignore_ascii_case(s) } else { n == s };
        if let Some(i) = v.as_str().and_then(|s| names.iter().position(|n| same(n, s))) {
            return Ok(Some(i));
        }
        let expected = names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
        let what = match v {
            Value::String(s) => format!("unknown variant `{s}`"),
            other => format!("invalid value {other}"),
        };
        Err((self.path(key), format!("{what}, expected one of {expected}")))
    }

    /// An object-valued field read by `read` at its path.
    pub fn nested<T>(
        &mut self,
        key: &'static str,
        read: fn(&Value, &str) -> Result<T, FieldError>,
    ) -> Result<Option<T>, FieldError> {
        match self.value(key) {
            None => Ok(None),
            Some(v) => read(v, &self.path(key)).map(Some),
        }
    }

    /// [`Fields::list`] where an absent list differs from an empty one.
    pub fn optional_list<T>(
        &mut self,
        key: &'static str,
        read: fn(&Value, &str) -> Result<T, FieldError>,
    ) -> Result<Option<Vec<T>>, FieldError> {
        if self.map.get(key).is_none_or(Value::is_null) {
            self.value(key);
            return Ok(None);
        }
        self.list(key, read).map(Some)
    }

    /// A list of any values, as they are.
    pub fn values(&mut self, key: &'static str) -> Result<Option<Vec<Value>>, FieldError> {
        self.optional_list(key, |v, _| Ok(v.clone()))
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
        let mut out = Vec::new();
        self.each(key, &mut |v, at| read(v, at).map(|item| out.push(item)))?;
        Ok(out)
    }

    /// The part of [`Fields::list`] that does not depend on `T`: each item with its path, in order (one
    /// copy of the loop for every item type).
    #[inline(never)]
    fn each(
        &mut self,
        key: &'static str,
        visit: &mut dyn FnMut(&Value, &str) -> Result<(), FieldError>,
    ) -> Result<(), FieldError> {
        let (items, at) = self.items(key)?;
        for (i, v) in items.iter().enumerate() {
            visit(v, &item_path(&at, i))?;
        }
        Ok(())
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
            self.value(key);
            return Ok(None);
        }
        self.list(key, |v, at| match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(_) | Value::Bool(_) => Ok(v.to_string()),
            _ => Err((at.to_string(), "must be a string".into())),
        })
        .map(Some)
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
