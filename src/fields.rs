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

/// Names in backticks, separated by commas, for messages (one loop instead of a collect and a join per site).
pub fn backticked<S: AsRef<str>>(names: &[S]) -> String {
    let mut out = String::new();
    for (i, n) in names.iter().enumerate() {
        out.push_str(if i == 0 { "`" } else { ", `" });
        out.push_str(n.as_ref());
        out.push('`');
    }
    out
}

/// The fields of one config object, consumed one by one; [`Fields::finish`] refuses the rest.
///
/// The readers return plain values and keep the first error they meet, which [`Fields::finish`] returns:
/// a reader is a run of `x.a = f.string("a");` with no early return per field (a `?` per field was about
/// 7 KB of wasm over the config types' 300-odd fields).
pub struct Fields<'a> {
    /// The object read, `None` when the value was not one (that error is recorded, and every field reads as
    /// absent).
    map: Option<&'a Map<String, Value>>,
    /// Where the object is, as a field path prefix (`prompts` errors need none: `""`).
    at: String,
    taken: Vec<&'static str>,
    /// The type's declared field list (`FIELDS`, which Higress-shape configs are filtered by), when it has
    /// one: tests check that every field read is declared there.
    known: &'static [&'static str],
    /// The first error met: later reads go on (returning their defaults), but only this one is reported.
    error: Option<FieldError>,
}

impl<'a> Fields<'a> {
    /// The fields of `value`, which must be an object; `at` locates it (`""` at an entry's top).
    pub fn of(value: &'a Value, at: &str) -> Result<Fields<'a>, FieldError> {
        Fields::known(value, at, &[])
    }

    /// [`Fields::of`] for a type that declares its field list.
    pub fn known(value: &'a Value, at: &str, known: &'static [&'static str]) -> Result<Fields<'a>, FieldError> {
        let mut f = Fields::read(value, at, known);
        f.check().map(|()| f)
    }

    /// [`Fields::known`] that cannot fail: a value that is not an object is the first error recorded, which
    /// [`Fields::check`] and [`Fields::finish`] report. Readers use it instead of a `?` on the fields
    /// (each was about 100 bytes of wasm, moving the reader and its error).
    #[inline(never)]
    pub fn read(value: &'a Value, at: &str, known: &'static [&'static str]) -> Fields<'a> {
        let mut f = Fields { map: value.as_object(), at: at.to_string(), taken: Vec::new(), known, error: None };
        if f.map.is_none() {
            let at = if at.is_empty() { "(entry)" } else { at };
            f.error = Some(pair(at, "must be an object"));
        }
        f
    }

    /// The path of one of this object's fields.
    pub fn path(&self, key: &str) -> String {
        if self.at.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.at)
        }
    }

    /// Records `message` about `key`, unless an earlier error was recorded (the first one is reported).
    #[inline(never)]
    pub fn fail(&mut self, key: &str, message: &str) {
        if self.error.is_none() {
            self.error = Some((self.path(key), message.to_string()));
        }
    }

    /// [`Fields::fail`] with a formatted message.
    #[inline(never)]
    pub fn fail_with(&mut self, key: &str, message: String) {
        if self.error.is_none() {
            self.error = Some((self.path(key), message));
        }
    }

    /// Records an error located elsewhere (a nested reader's), unless an earlier one was recorded.
    #[inline(never)]
    pub fn record(&mut self, error: FieldError) {
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    /// The first error recorded so far: for a reader whose own checks use the values read before them.
    pub fn check(&mut self) -> Result<(), FieldError> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// A field's raw value (`null` counts as absent).
    pub fn value(&mut self, key: &'static str) -> Option<&'a Value> {
        debug_assert!(self.known.is_empty() || self.known.contains(&key), "`{key}` is not in its type's FIELDS");
        self.taken.push(key);
        self.map?.get(key).filter(|v| !v.is_null())
    }

    /// Whether a field is given (not `null`), without reading it.
    fn present(&self, key: &str) -> bool {
        self.map.and_then(|m| m.get(key)).is_some_and(|v| !v.is_null())
    }

    pub fn string(&mut self, key: &'static str) -> Option<String> {
        match self.value(key) {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            // YAML reads `version: 1.0` and `text: 42` as numbers and booleans; they are text here.
            Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
            Some(_) => {
                self.fail(key, "must be a string");
                None
            }
        }
    }

    pub fn required_string(&mut self, key: &'static str) -> String {
        match self.string(key) {
            Some(s) => s,
            None => {
                self.fail(key, "is required");
                String::new()
            }
        }
    }

    /// A flag, false when absent.
    pub fn boolean(&mut self, key: &'static str) -> bool {
        self.flag(key).unwrap_or(false)
    }

    /// A flag whose absence means something of its own.
    pub fn flag(&mut self, key: &'static str) -> Option<bool> {
        match self.value(key) {
            None => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                self.fail(key, "must be true or false");
                None
            }
        }
    }

    /// A whole number no larger than `max` (a `u32` or `usize` setting).
    pub fn bounded(&mut self, key: &'static str, max: u64) -> Option<u64> {
        match self.unsigned(key) {
            Some(n) if n > max => {
                self.fail_with(key, format!("must be at most {max}"));
                None
            }
            n => n,
        }
    }

    /// A `usize` setting (32 bits in wasm).
    pub fn size(&mut self, key: &'static str) -> Option<usize> {
        self.bounded(key, usize::MAX as u64).map(|n| n as usize)
    }

    /// Any number.
    pub fn number(&mut self, key: &'static str) -> Option<f64> {
        let n = self.value(key)?.as_f64();
        if n.is_none() {
            self.fail(key, "must be a number");
        }
        n
    }

    /// One of a fixed set of names (an enum), as its value.
    pub fn choice<T: Copy>(&mut self, key: &'static str, options: &[(&str, T)]) -> Option<T> {
        let mut names = Vec::with_capacity(options.len());
        for o in options {
            names.push(o.0);
        }
        self.choice_index(key, &names, false).map(|i| options[i].1)
    }

    /// [`Fields::choice`] read in any case (`Query` for `query`), where Higress lower-cases the value.
    pub fn choice_any_case<T: Copy>(&mut self, key: &'static str, options: &[(&str, T)]) -> Option<T> {
        let mut names = Vec::with_capacity(options.len());
        for o in options {
            names.push(o.0);
        }
        self.choice_index(key, &names, true).map(|i| options[i].1)
    }

    /// The part of [`Fields::choice`] that does not depend on `T`.
    fn choice_index(&mut self, key: &'static str, names: &[&str], any_case: bool) -> Option<usize> {
        let v = self.value(key)?;
        let same = |n: &str, s: &str| if any_case { n.eq_ignore_ascii_case(s) } else { n == s };
        if let Some(i) = v.as_str().and_then(|s| names.iter().position(|n| same(n, s))) {
            return Some(i);
        }
        let expected = backticked(names);
        let what = match v {
            Value::String(s) => format!("unknown variant `{s}`"),
            other => format!("invalid value {other}"),
        };
        self.fail_with(key, format!("{what}, expected one of {expected}"));
        None
    }

    /// An object-valued field read by `read` at its path.
    pub fn nested<T>(&mut self, key: &'static str, read: fn(&Value, &str) -> Result<T, FieldError>) -> Option<T> {
        let v = self.value(key)?;
        match read(v, &self.path(key)) {
            Ok(t) => Some(t),
            Err(e) => {
                self.record(e);
                None
            }
        }
    }

    /// [`Fields::list`] where an absent list differs from an empty one.
    pub fn optional_list<T>(
        &mut self,
        key: &'static str,
        read: fn(&Value, &str) -> Result<T, FieldError>,
    ) -> Option<Vec<T>> {
        if !self.present(key) {
            self.value(key);
            return None;
        }
        Some(self.list(key, read))
    }

    /// A list of any values, as they are.
    pub fn values(&mut self, key: &'static str) -> Option<Vec<Value>> {
        self.optional_list(key, |v, _| Ok(v.clone()))
    }

    pub fn unsigned(&mut self, key: &'static str) -> Option<u64> {
        let n = self.value(key)?.as_u64();
        if n.is_none() {
            self.fail(key, "must be a whole number >= 0");
        }
        n
    }

    pub fn object(&mut self, key: &'static str) -> Option<Map<String, Value>> {
        match self.value(key)? {
            Value::Object(m) => Some(m.clone()),
            _ => {
                self.fail(key, "must be an object");
                None
            }
        }
    }

    /// A list whose items `read` parses, each located as `key[i]` (up to the first that fails).
    pub fn list<T>(&mut self, key: &'static str, read: fn(&Value, &str) -> Result<T, FieldError>) -> Vec<T> {
        let mut out = Vec::new();
        self.each(key, &mut |v, at| read(v, at).map(|item| out.push(item)));
        out
    }

    /// The part of [`Fields::list`] that does not depend on `T`: each item with its path, in order (one
    /// copy of the loop for every item type).
    #[inline(never)]
    fn each(&mut self, key: &'static str, visit: &mut dyn FnMut(&Value, &str) -> Result<(), FieldError>) {
        let items = match self.value(key) {
            None => return,
            Some(Value::Array(items)) => items,
            Some(_) => return self.fail(key, "must be a list"),
        };
        let at = self.path(key);
        for (i, v) in items.iter().enumerate() {
            if let Err(e) = visit(v, &item_path(&at, i)) {
                return self.record(e);
            }
        }
    }

    /// A list of strings.
    pub fn strings(&mut self, key: &'static str) -> Option<Vec<String>> {
        if !self.present(key) {
            self.value(key);
            return None;
        }
        Some(self.list(key, |v, at| match v {
            Value::String(s) => Ok(s.clone()),
            Value::Number(_) | Value::Bool(_) => Ok(v.to_string()),
            _ => Err((at.to_string(), "must be a string".into())),
        }))
    }

    /// The first error recorded, else refuses any field that was not read: a typo is an error, not a
    /// silently ignored setting.
    pub fn finish(mut self) -> Result<(), FieldError> {
        self.check()?;
        match self.map.and_then(|m| m.keys().find(|k| !self.taken.contains(&k.as_str()))) {
            None => Ok(()),
            Some(k) => Err((self.path(k), format!("unknown field `{k}`, expected one of {}", self.taken.join(", ")))),
        }
    }
}

/// A [`FieldError`] (or a header) from two literals: one outlined copy of the two conversions, not both
/// inlined where a configure-time check fails (about 25 bytes each).
#[inline(never)]
pub fn pair(first: &str, second: &str) -> (String, String) {
    (first.to_string(), second.to_string())
}

/// A [`FieldError`] from a field name and a built message: one outlined copy of the name's conversion,
/// for compile functions that refuse many fields (`Tool::compile`).
#[inline(never)]
pub fn located(field: &str, message: String) -> (String, String) {
    (field.to_string(), message)
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
        assert_eq!(f.required_string("name"), "n");
        assert_eq!(f.unsigned("n"), Some(3));
        assert!(f.boolean("flag"));
        assert_eq!(f.strings("tags"), Some(vec!["a".to_string(), "1".to_string()]));
        assert_eq!(f.strings("none"), None);
        assert!(f.check().is_ok());
        let e = f.finish().unwrap_err();
        assert_eq!(e.0, "prompts[0].extra");
        assert!(e.1.contains("expected one of name, n, flag, tags, none"), "{}", e.1);
        let mut f = Fields::of(&v, "prompts[0]").unwrap();
        assert_eq!(f.required_string("title"), "");
        assert_eq!(f.check().unwrap_err().0, "prompts[0].title");
        let v = json!({"items": [{"a": 1}, "x", 3], "s": [1]});
        let mut f = Fields::of(&v, "").unwrap();
        assert_eq!(f.list("items", |v, at| Fields::of(v, at).map(|_| ())).len(), 1);
        // The first error is the one reported; the reads after it return their defaults.
        assert_eq!(f.string("s"), None);
        assert_eq!(f.finish().unwrap_err(), ("items[1]".to_string(), "must be an object".to_string()));
        let v = json!({"s": [1], "n": -1});
        let mut f = Fields::of(&v, "").unwrap();
        assert_eq!(f.string("s"), None);
        assert_eq!(f.unsigned("n"), None);
        assert_eq!(f.finish().unwrap_err(), ("s".to_string(), "must be a string".to_string()));
        assert!(Fields::of(&json!(1), "").is_err());
    }

    #[test]
    fn a_value_that_is_not_an_object_is_the_first_error_of_an_infallible_reader() {
        for (value, at, field) in [(json!(1), "", "(entry)"), (json!(["x"]), "tools[2].upstream", "tools[2].upstream")]
        {
            let mut f = Fields::read(&value, at, &[]);
            // Every field reads as absent, and what they would report comes after the first error.
            assert_eq!(f.required_string("name"), "");
            assert_eq!(f.strings("tags"), None);
            assert_eq!(f.optional_list("items", |v, _| Ok(v.clone())), None);
            let expected = (field.to_string(), "must be an object".to_string());
            assert_eq!(f.finish().unwrap_err(), expected);
            let mut f = Fields::read(&value, at, &[]);
            assert_eq!(f.check().unwrap_err(), expected, "check reports it too");
        }
        // Present lists are read once: the names offered for an unknown field hold each key once.
        let v = json!({"tags": ["a"], "items": [], "x": 1});
        let mut f = Fields::read(&v, "", &[]);
        assert_eq!(f.strings("tags"), Some(vec!["a".to_string()]));
        assert_eq!(f.optional_list("items", |v, _| Ok(v.clone())), Some(vec![]));
        assert_eq!(f.finish().unwrap_err().1, "unknown field `x`, expected one of tags, items");
    }
}
