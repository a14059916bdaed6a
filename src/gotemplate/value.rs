//! Template values: what a gjson `Result` is in Higress's fork, plus a time for sprig's date functions.
//!
//! Objects and arrays stay raw JSON text, as gjson keeps them: a field chain is a gjson query on that text,
//! so a template that reads three fields of a large answer never converts the rest.

use serde_json::Value as Json;
use std::borrow::Cow;

/// A value during rendering: data read by gjson paths, constants, and function results.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A path that matched nothing; prints as nothing.
    Missing,
    Null,
    Bool(bool),
    /// A number as its JSON text (`1.50` prints as `1.50`, as gjson's raw value does).
    Number(String),
    String(String),
    /// An object or an array, as raw JSON text.
    Json(String),
    /// A point in time (sprig's `now`): seconds and nanoseconds since the Unix epoch, UTC offset in seconds.
    Time(Time),
}

/// A time as sprig's date functions take it: an instant and the zone it is shown in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Time {
    pub secs: i64,
    pub nanos: u32,
    /// Offset from UTC in seconds.
    pub offset: i32,
    /// The zone's abbreviation (`CST`, `+08`), printed by the `MST` layout element.
    pub zone: &'static str,
}

impl Value {
    /// An integer result (Go's `%d`).
    pub fn int(i: i64) -> Value {
        Value::Number(i.to_string())
    }

    /// A float result, printed as Higress prints function results of type float64 (Go's `%f`).
    pub fn float(f: f64) -> Value {
        if !f.is_finite() {
            // JSON has no NaN or infinity; Go's `%f` prints them as words.
            return Value::String(if f.is_nan() {
                "NaN".into()
            } else if f > 0.0 {
                "+Inf".into()
            } else {
                "-Inf".into()
            });
        }
        Value::Number(format!("{f:.6}"))
    }

    /// Builds a value from JSON.
    pub fn from_json(v: &Json) -> Value {
        match v {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => Value::Number(n.to_string()),
            Json::String(s) => Value::String(s.clone()),
            other => Value::Json(other.to_string()),
        }
    }

    /// A gjson result as a template value.
    pub fn from_gjson(v: &gjson::Value) -> Value {
        if !v.exists() {
            return Value::Missing;
        }
        match v.kind() {
            gjson::Kind::Null => Value::Null,
            gjson::Kind::True => Value::Bool(true),
            gjson::Kind::False => Value::Bool(false),
            gjson::Kind::Number => Value::Number(v.json().trim().to_string()),
            gjson::Kind::String => Value::String(v.str().to_string()),
            gjson::Kind::Array | gjson::Kind::Object => Value::Json(v.json().trim().to_string()),
        }
    }

    /// The value as JSON text, for gjson queries and `toJson`.
    pub fn raw_json(&self) -> Cow<'_, str> {
        match self {
            Value::Missing => Cow::Borrowed(""),
            Value::Null => Cow::Borrowed("null"),
            Value::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Value::Number(n) => Cow::Borrowed(n),
            Value::String(s) => Cow::Owned(Json::String(s.clone()).to_string()),
            Value::Json(raw) => Cow::Borrowed(raw),
            Value::Time(t) => Cow::Owned(Json::String(super::time::rfc3339(t)).to_string()),
        }
    }

    /// The value parsed into JSON (objects and arrays structurally, for list and dict functions).
    pub fn to_json(&self) -> Json {
        match self {
            Value::Missing | Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => serde_json::from_slice(n.as_bytes()).unwrap_or(Json::Null),
            Value::String(s) => Json::String(s.clone()),
            Value::Json(raw) => serde_json::from_slice(raw.as_bytes()).unwrap_or(Json::Null),
            Value::Time(t) => Json::String(super::time::rfc3339(t)),
        }
    }

    /// gjson's `Exists`.
    pub fn exists(&self) -> bool {
        !matches!(self, Value::Missing)
    }

    /// Truth as Higress's `if` sees it: "", 0, false, null, missing, `[]` and `{}` are false.
    pub fn truth(&self) -> bool {
        match self {
            Value::Missing | Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(_) => self.num() != 0.0,
            Value::String(s) => !s.is_empty(),
            Value::Json(raw) => {
                let compact: String = raw.chars().filter(|c| !c.is_whitespace()).take(3).collect();
                compact != "[]" && compact != "{}" && !raw.is_empty()
            }
            Value::Time(_) => true,
        }
    }

    /// gjson's `Num`/`Float`: a number's value, a numeric string's, else 0.
    pub fn num(&self) -> f64 {
        match self {
            Value::Number(n) => n.parse().unwrap_or(0.0),
            Value::String(s) => s.trim().parse().unwrap_or(0.0),
            Value::Bool(true) => 1.0,
            _ => 0.0,
        }
    }

    /// The number as an integer when it is integral (Higress passes those to functions as Go `int`).
    pub fn as_int(&self) -> Option<i64> {
        let Value::Number(n) = self else { return None };
        if let Ok(i) = n.parse::<i64>() {
            return Some(i);
        }
        let f: f64 = n.parse().ok()?;
        (f.fract() == 0.0 && f.abs() < 9.2e18).then_some(f as i64)
    }

    /// gjson's `String()`: strings unquoted, objects and arrays raw, null and missing empty.
    pub fn text(&self) -> Cow<'_, str> {
        match self {
            Value::Missing | Value::Null => Cow::Borrowed(""),
            Value::String(s) => Cow::Borrowed(s),
            Value::Time(t) => Cow::Owned(super::time::go_string(t)),
            other => other.raw_json(),
        }
    }

    /// How an action prints the value: like `text`, except that `null` prints as `null` (its raw text).
    pub fn printed(&self) -> Cow<'_, str> {
        match self {
            Value::Null => Cow::Borrowed("null"),
            other => other.text(),
        }
    }

    /// A Go-ish type name, for errors and `typeOf`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Missing | Value::Null => "<nil>",
            Value::Bool(_) => "bool",
            Value::Number(_) => {
                if self.as_int().is_some() {
                    "int"
                } else {
                    "float64"
                }
            }
            Value::String(_) => "string",
            Value::Json(raw) => {
                if raw.trim_start().starts_with('[') {
                    "[]interface {}"
                } else {
                    "map[string]interface {}"
                }
            }
            Value::Time(_) => "time.Time",
        }
    }

    /// An array (list functions and `range` take its elements).
    pub fn is_array(&self) -> bool {
        matches!(self, Value::Json(raw) if raw.trim_start().starts_with('['))
    }

    /// An object (dict functions and `range` take its entries).
    pub fn is_object(&self) -> bool {
        matches!(self, Value::Json(raw) if raw.trim_start().starts_with('{'))
    }
}
