//! The common shape of a tool's schema, precompiled at load: one object of plain properties, each a type, an
//! `enum`/`const` or string and number bounds, and annotations (what `args` builds and most OpenAPI
//! operations convert to). For it, a call's arguments are checked and their integers normalised by one pass
//! over the arguments against a list, instead of the general walk, which looks every keyword up in the schema
//! at every step (a SipHash per lookup in `serde_json`'s ordered map) and counts the instance for its step
//! budget first. The pass only ever says "valid": anything it does not accept goes to the general walk, which
//! then says what is wrong in its own words, so the two can never disagree on a message.

use super::{check_number, exact_integer, json_eq, Validator};
use serde_json::{Map, Value};

/// Keywords a flat schema's root may hold besides `properties`, `required` and `additionalProperties`:
/// annotations that no check reads.
const ROOT_ANNOTATIONS: [&str; 9] =
    ["type", "title", "description", "$schema", "$comment", "examples", "default", "$defs", "definitions"];

/// Keywords a flat property may hold: its type, `enum`/`const`, the string and number bounds (checked as the
/// general walk checks them) and annotations.
const PROPERTY_KEYWORDS: [&str; 21] = [
    "type",
    "enum",
    "const",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "title",
    "description",
    "default",
    "examples",
    "format",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$comment",
    "contentEncoding",
];

const TYPES: [&str; 7] = ["string", "number", "integer", "boolean", "array", "object", "null"];

/// A flat schema's properties in their order, with what the arguments' pass checks.
#[derive(Debug)]
pub(super) struct Flat {
    props: Vec<Prop>,
    /// How many properties `required` names (each is declared, else the schema is not flat).
    required: usize,
    /// `additionalProperties: false`.
    closed: bool,
}

#[derive(Debug)]
struct Prop {
    name: String,
    /// The declared types (empty: any).
    types: Vec<&'static str>,
    required: bool,
    /// Whether the property declares `integer` (its whole numbers are normalised).
    integer: bool,
    /// `enum` (when an array) and `const`.
    options: Option<Vec<Value>>,
    constant: Option<Value>,
    /// The property's schema, when it has string or number bounds (checked by the general walk's code).
    bounds: Option<Map<String, Value>>,
    strings: bool,
    numbers: bool,
}

impl Flat {
    /// The schema as a flat one, when it is.
    pub(super) fn compile(root: &Value) -> Option<Flat> {
        let s = root.as_object()?;
        for (k, v) in s {
            let known = match k.as_str() {
                "type" => v.as_str() == Some("object"),
                "properties" => v.is_object(),
                "required" => v.is_array(),
                "additionalProperties" => v.is_boolean(),
                k => ROOT_ANNOTATIONS.contains(&k),
            };
            if !known {
                return None;
            }
        }
        let mut props = Vec::new();
        for (name, p) in s.get("properties").and_then(Value::as_object).into_iter().flatten() {
            props.push(Prop::compile(name, p.as_object()?)?);
        }
        let mut required = 0;
        for name in s.get("required").and_then(Value::as_array).into_iter().flatten() {
            let prop = props.iter_mut().find(|p| Some(p.name.as_str()) == name.as_str())?;
            if !prop.required {
                prop.required = true;
                required += 1;
            }
        }
        Some(Flat { props, required, closed: s.get("additionalProperties") == Some(&Value::Bool(false)) })
    }

    fn prop(&self, name: &str) -> Option<&Prop> {
        self.props.iter().find(|p| p.name == name)
    }

    /// True when `instance` certainly holds to the schema; false when the general walk must tell.
    pub(super) fn holds(&self, validator: &Validator, instance: &Value) -> bool {
        let Value::Object(obj) = instance else { return false };
        let mut required = 0;
        for (key, value) in obj {
            match self.prop(key) {
                Some(p) => {
                    if !p.holds(validator, value) {
                        return false;
                    }
                    required += usize::from(p.required);
                }
                None if self.closed => return false,
                None => {}
            }
        }
        required == self.required
    }

    /// Rewrites the whole numbers of `integer` properties as integers, as the general walk does.
    pub(super) fn normalize(&self, instance: &mut Value) {
        let Value::Object(obj) = instance else { return };
        for (key, value) in obj.iter_mut() {
            if value.is_f64() && self.prop(key).is_some_and(|p| p.integer) {
                if let Some(i) = exact_integer(value) {
                    *value = i;
                }
            }
        }
    }
}

impl Prop {
    fn compile(name: &str, s: &Map<String, Value>) -> Option<Prop> {
        if !s.keys().all(|k| PROPERTY_KEYWORDS.contains(&k.as_str())) {
            return None;
        }
        let mut types = Vec::new();
        match s.get("type") {
            None => {}
            Some(Value::String(t)) => types.push(*TYPES.iter().find(|k| *k == t)?),
            Some(Value::Array(ts)) => {
                for t in ts {
                    types.push(*TYPES.iter().find(|k| Some(**k) == t.as_str())?);
                }
            }
            Some(_) => return None,
        }
        let has = |keys: &[&str]| keys.iter().any(|k| s.contains_key(*k));
        let strings = has(&["minLength", "maxLength", "pattern"]);
        let numbers = has(&["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"]);
        Some(Prop {
            name: name.to_string(),
            integer: types.contains(&"integer"),
            types,
            required: false,
            options: s.get("enum").and_then(Value::as_array).cloned(),
            constant: s.get("const").cloned(),
            bounds: (strings || numbers).then(|| s.clone()),
            strings,
            numbers,
        })
    }

    /// The general walk's checks of a scalar-level schema, without the messages.
    fn holds(&self, validator: &Validator, v: &Value) -> bool {
        if !self.types.is_empty() && !self.types.iter().any(|t| validator.type_matches(t, v)) {
            return false;
        }
        if self.options.as_ref().is_some_and(|options| !options.iter().any(|o| json_eq(o, v))) {
            return false;
        }
        if self.constant.as_ref().is_some_and(|c| !json_eq(c, v)) {
            return false;
        }
        let Some(s) = &self.bounds else { return true };
        let mut errors = Vec::new();
        match v {
            Value::String(text) if self.strings => validator.check_string(s, text, "", &mut errors),
            Value::Number(n) if self.numbers => check_number(s, n, "", &mut errors),
            _ => {}
        }
        errors.is_empty()
    }
}
