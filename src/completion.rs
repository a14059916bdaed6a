//! Arguments of prompts and resource templates, and `completion/complete` for them.
//!
//! An argument's values come from its `enum` (the only values it accepts) or from `completions` (values
//! suggested, others accepted). The answer to a completion request is computed from those lists, already in
//! memory; nothing is fetched.

use crate::fields::{FieldError, Fields};
use serde_json::{json, Value};

/// At most this many values go into one completion result (MCP's limit).
pub const MAX_VALUES: usize = 100;

/// One argument as the config writes it.
#[derive(Debug, Clone, Default)]
pub struct ArgumentConfig {
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub required: bool,
    /// The only values accepted (`enum`); also what completion offers.
    pub enum_values: Option<Vec<String>>,
    /// Values completion offers; others are accepted.
    pub completions: Option<Vec<String>>,
}

impl ArgumentConfig {
    pub fn read(v: &Value, at: &str) -> Result<ArgumentConfig, FieldError> {
        let mut f = Fields::of(v, at)?;
        let a = ArgumentConfig {
            name: f.required_string("name")?,
            title: f.string("title")?,
            description: f.string("description")?,
            required: f.boolean("required")?,
            enum_values: f.strings("enum")?,
            completions: f.strings("completions")?,
        };
        f.finish()?;
        Ok(a)
    }
}

/// A compiled argument.
#[derive(Debug, Clone)]
pub struct Argument {
    pub name: String,
    pub required: bool,
    /// Values the argument must take, when it is an enum.
    pub allowed: Option<Vec<String>>,
    /// What completion offers.
    pub values: Vec<String>,
}

impl Argument {
    /// Checks one argument's config; errors are `(field, message)` within `field` (`arguments[1]`).
    pub fn compile(cfg: &ArgumentConfig, field: &str) -> Result<Argument, (String, String)> {
        if cfg.name.trim().is_empty() {
            return Err((format!("{field}.name"), "must not be empty".into()));
        }
        if cfg.enum_values.is_some() && cfg.completions.is_some() {
            return Err((
                field.to_string(),
                "give enum (accepted values) or completions (suggestions), not both".into(),
            ));
        }
        if cfg.enum_values.as_ref().is_some_and(Vec::is_empty) {
            return Err((format!("{field}.enum"), "must list at least one value".into()));
        }
        let values = cfg.enum_values.clone().or_else(|| cfg.completions.clone()).unwrap_or_default();
        Ok(Argument { name: cfg.name.clone(), required: cfg.required, allowed: cfg.enum_values.clone(), values })
    }

    /// Whether completion has anything to offer for it.
    pub fn completable(&self) -> bool {
        !self.values.is_empty()
    }

    /// The `completion` of a `CompleteResult`: the values starting with `prefix` (case-insensitively), in
    /// config order, at most [`MAX_VALUES`].
    pub fn complete(&self, prefix: &str) -> Value {
        let prefix = prefix.to_lowercase();
        let matching: Vec<&String> = self.values.iter().filter(|v| v.to_lowercase().starts_with(&prefix)).collect();
        let total = matching.len();
        let values: Vec<&String> = matching.into_iter().take(MAX_VALUES).collect();
        json!({"values": values, "total": total, "hasMore": total > MAX_VALUES})
    }
}

/// Checks a list of arguments: each valid, names unique.
pub fn compile_all(cfgs: &[ArgumentConfig]) -> Result<Vec<Argument>, (String, String)> {
    let mut out: Vec<Argument> = Vec::with_capacity(cfgs.len());
    for (i, a) in cfgs.iter().enumerate() {
        let arg = Argument::compile(a, &format!("arguments[{i}]"))?;
        if out.iter().any(|o| o.name == arg.name) {
            return Err((format!("arguments[{i}].name"), format!("duplicate argument '{}'", arg.name)));
        }
        out.push(arg);
    }
    Ok(out)
}

/// The argument a `completion/complete` request names, from `params.argument`.
pub fn requested(params: &serde_json::Map<String, Value>) -> Result<(&str, &str), String> {
    let arg = params.get("argument").ok_or("completion/complete needs `argument`")?;
    let name = arg.get("name").and_then(Value::as_str).ok_or("`argument.name` must be a string")?;
    let value = arg.get("value").and_then(Value::as_str).ok_or("`argument.value` must be a string")?;
    Ok((name, value))
}

/// Finds the named argument, or says which ones exist.
pub fn find<'a>(args: &'a [Argument], name: &str, owner: &str) -> Result<&'a Argument, String> {
    args.iter().find(|a| a.name == name).ok_or_else(|| {
        let names: Vec<&str> = args.iter().map(|a| a.name.as_str()).collect();
        format!(
            "{owner} has no argument '{name}' (it has: {})",
            if names.is_empty() { "none".into() } else { names.join(", ") }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(json: Value) -> Result<Argument, (String, String)> {
        Argument::compile(&ArgumentConfig::read(&json, "arguments[0]").unwrap(), "arguments[0]")
    }

    #[test]
    fn completes_by_prefix_from_enum_or_list() {
        let a = arg(json!({"name": "city", "completions": ["Paris", "park", "Oslo"]})).unwrap();
        assert_eq!(a.complete("pa"), json!({"values": ["Paris", "park"], "total": 2, "hasMore": false}));
        assert_eq!(a.complete("")["total"], json!(3));
        assert!(a.allowed.is_none() && a.completable());
        let e = arg(json!({"name": "u", "enum": ["a", "b"]})).unwrap();
        assert_eq!(e.allowed.as_deref(), Some(&["a".to_string(), "b".to_string()][..]));
        let many = Argument {
            name: "n".into(),
            required: false,
            allowed: None,
            values: (0..150).map(|i| format!("v{i}")).collect(),
        };
        let c = many.complete("v");
        assert_eq!(
            (c["values"].as_array().unwrap().len(), c["total"].clone(), c["hasMore"].clone()),
            (100, json!(150), json!(true))
        );
        assert!(!arg(json!({"name": "x"})).unwrap().completable());
    }

    #[test]
    fn bad_arguments_are_located() {
        assert_eq!(arg(json!({"name": " "})).unwrap_err().0, "arguments[0].name");
        let e = ArgumentConfig::read(&json!({"name": "a", "enums": ["x"]}), "arguments[2]").unwrap_err();
        assert_eq!(e.0, "arguments[2].enums");
        assert_eq!(arg(json!({"name": "a", "enum": []})).unwrap_err().0, "arguments[0].enum");
        assert_eq!(arg(json!({"name": "a", "enum": ["x"], "completions": ["y"]})).unwrap_err().0, "arguments[0]");
        let dup = [json!({"name": "a"}), json!({"name": "a"})].map(|v| ArgumentConfig::read(&v, "").unwrap());
        assert_eq!(compile_all(&dup).unwrap_err().0, "arguments[1].name");
        let e = find(&[], "x", "prompt 'p'").unwrap_err();
        assert!(e.contains("has no argument 'x' (it has: none)"), "{e}");
    }
}
