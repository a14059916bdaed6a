//! Arguments of prompts and resource templates, and `completion/complete` for them.
//!
//! An argument's values come from its `enum` (the only values it accepts) or from `completions` (values
//! suggested, others accepted). They may depend on the values of the other arguments (`valuesWhen`: for
//! each value of another argument, the list that applies), which a completion request gives in
//! `context.arguments` and a `prompts/get` in its arguments: what another argument's value rules out is
//! neither offered nor, for an `enum`, accepted. The answer to a completion request is computed from those
//! lists, already in memory; nothing is fetched.

use crate::fields::{FieldError, Fields};
use serde_json::{Map, Value};

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
    /// The values that apply for each value of another argument (`valuesWhen: {other: {value: [...]}}`).
    pub values_when: Vec<When>,
}

/// The lists of one argument that depend on another argument's value.
#[derive(Debug, Clone, Default)]
pub struct When {
    /// The other argument.
    pub argument: String,
    /// Its value, and the values that apply then.
    pub lists: Vec<(String, Vec<String>)>,
}

/// Reads `valuesWhen`: `{argument: {value: [strings]}}`.
fn read_when(v: &Map<String, Value>, at: &str) -> Result<Vec<When>, FieldError> {
    let mut out = Vec::with_capacity(v.len());
    for (argument, table) in v {
        let Some(table) = table.as_object() else {
            return Err((format!("{at}.{argument}"), "must map values of that argument to lists of values".into()));
        };
        let mut lists = Vec::with_capacity(table.len());
        for (value, list) in table {
            let field = format!("{at}.{argument}.{value}");
            let Some(items) = list.as_array() else {
                return Err((field, "must be a list of strings".into()));
            };
            let mut strings = Vec::with_capacity(items.len());
            for i in items {
                let Some(s) = i.as_str() else { return Err((field, "must be a list of strings".into())) };
                strings.push(s.to_string());
            }
            lists.push((value.clone(), strings));
        }
        out.push(When { argument: argument.clone(), lists });
    }
    Ok(out)
}

impl ArgumentConfig {
    pub fn read(v: &Value, at: &str) -> Result<ArgumentConfig, FieldError> {
        let mut f = Fields::read(v, at, &[]);
        let mut a = ArgumentConfig::default();
        a.name = f.required_string("name");
        a.title = f.string("title");
        a.description = f.string("description");
        a.required = f.boolean("required");
        a.enum_values = f.strings("enum");
        a.completions = f.strings("completions");
        let when = f.object("valuesWhen");
        f.check()?;
        a.values_when = match when {
            Some(m) => read_when(&m, &format!("{at}.valuesWhen"))?,
            None => Vec::new(),
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
    /// The lists that apply instead for given values of other arguments.
    pub when: Vec<When>,
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
        for w in &cfg.values_when {
            if w.argument == cfg.name {
                return Err((
                    format!("{field}.valuesWhen.{}", w.argument),
                    "an argument cannot depend on itself".into(),
                ));
            }
            if let Some(allowed) = &cfg.enum_values {
                for (value, list) in &w.lists {
                    if let Some(bad) = list.iter().find(|v| !allowed.contains(v)) {
                        return Err((
                            format!("{field}.valuesWhen.{}.{value}", w.argument),
                            format!("'{bad}' is not in this argument's enum"),
                        ));
                    }
                }
            }
        }
        let values = cfg.enum_values.clone().or_else(|| cfg.completions.clone()).unwrap_or_default();
        Ok(Argument {
            name: cfg.name.clone(),
            required: cfg.required,
            allowed: cfg.enum_values.clone(),
            values,
            when: cfg.values_when.clone(),
        })
    }

    /// Whether completion has anything to offer for it.
    pub fn completable(&self) -> bool {
        !self.values.is_empty() || self.when.iter().any(|w| w.lists.iter().any(|(_, l)| !l.is_empty()))
    }

    /// The values that apply given the other arguments' values: those of every `valuesWhen` list that
    /// applies (all of them, when several do), else the argument's own list.
    pub fn candidates(&self, given: &Map<String, Value>) -> Vec<&String> {
        let mut chosen: Option<Vec<&String>> = None;
        for w in &self.when {
            let Some(value) = given.get(&w.argument).and_then(Value::as_str) else { continue };
            let Some((_, list)) = w.lists.iter().find(|(v, _)| v == value) else { continue };
            // The values every matching condition lists, in the first one's order.
            let mut next = Vec::new();
            match chosen {
                None => next.extend(list),
                Some(c) => {
                    for v in c {
                        if list.contains(v) {
                            next.push(v);
                        }
                    }
                }
            }
            chosen = Some(next);
        }
        chosen.unwrap_or_else(|| {
            let mut all = Vec::with_capacity(self.values.len());
            all.extend(&self.values);
            all
        })
    }

    /// For an `enum` argument, the values it accepts given the other arguments' values (`None`: any).
    pub fn accepted(&self, given: &Map<String, Value>) -> Option<Vec<&String>> {
        self.allowed.as_ref().map(|_| self.candidates(given))
    }

    /// The `completion` of a `CompleteResult`: the values that apply given the other arguments
    /// (`context.arguments`) and start with `prefix` (case-insensitively), in config order, at most
    /// [`MAX_VALUES`].
    pub fn complete(&self, prefix: &str, given: &Map<String, Value>) -> Value {
        let prefix = crate::case::to_lowercase(prefix);
        let mut values = Vec::new();
        let mut total = 0usize;
        for v in self.candidates(given) {
            if crate::case::to_lowercase(v).starts_with(&prefix) {
                total += 1;
                if values.len() < MAX_VALUES {
                    values.push(Value::from(v.as_str()));
                }
            }
        }
        crate::json::object(vec![
            ("values", Value::Array(values)),
            ("total", Value::from(total)),
            ("hasMore", Value::Bool(total > MAX_VALUES)),
        ])
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
    // What a list depends on must be another argument here, and a value it can take.
    for (i, arg) in out.iter().enumerate() {
        for w in &arg.when {
            let at = format!("arguments[{i}].valuesWhen.{}", w.argument);
            let Some(other) = out.iter().find(|o| o.name == w.argument) else {
                let names = names(&out);
                return Err((at, format!("names no argument here (the arguments: {})", names.join(", "))));
            };
            if let Some(allowed) = &other.allowed {
                if let Some((value, _)) = w.lists.iter().find(|(v, _)| !allowed.contains(v)) {
                    return Err((format!("{at}.{value}"), format!("'{value}' is not in the enum of '{}'", other.name)));
                }
            }
        }
    }
    Ok(out)
}

/// `context.arguments` of a completion request: the values already given (absent: none).
pub fn context_arguments(params: &Map<String, Value>) -> Result<Map<String, Value>, String> {
    match params.get("context").and_then(|c| c.get("arguments")) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err("`context.arguments` must be an object of argument values".into()),
    }
}

/// The argument a `completion/complete` request names, from `params.argument`.
pub fn requested(params: &serde_json::Map<String, Value>) -> Result<(&str, &str), String> {
    let arg = params.get("argument").ok_or("completion/complete needs `argument`")?;
    let name = arg.get("name").and_then(Value::as_str).ok_or("`argument.name` must be a string")?;
    let value = arg.get("value").and_then(Value::as_str).ok_or("`argument.value` must be a string")?;
    Ok((name, value))
}

/// The arguments' names, for messages and templates' checks (one loop for every list of arguments, instead
/// of a collect per call site: smaller).
pub fn names(args: &[Argument]) -> Vec<&str> {
    let mut out = Vec::with_capacity(args.len());
    for a in args {
        out.push(a.name.as_str());
    }
    out
}

/// Finds the named argument, or says which ones exist.
pub fn find<'a>(args: &'a [Argument], name: &str, owner: &str) -> Result<&'a Argument, String> {
    args.iter().find(|a| a.name == name).ok_or_else(|| {
        let names = names(args);
        format!(
            "{owner} has no argument '{name}' (it has: {})",
            if names.is_empty() { "none".into() } else { names.join(", ") }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn arg(json: Value) -> Result<Argument, (String, String)> {
        Argument::compile(&ArgumentConfig::read(&json, "arguments[0]").unwrap(), "arguments[0]")
    }

    #[test]
    fn completes_by_prefix_from_enum_or_list() {
        let a = arg(json!({"name": "city", "completions": ["Paris", "park", "Oslo"]})).unwrap();
        let none = Map::new();
        assert_eq!(a.complete("pa", &none), json!({"values": ["Paris", "park"], "total": 2, "hasMore": false}));
        assert_eq!(a.complete("", &none)["total"], json!(3));
        assert_eq!(a.complete("pa", &none).to_string(), r#"{"values":["Paris","park"],"total":2,"hasMore":false}"#);
        assert!(a.allowed.is_none() && a.completable());
        let e = arg(json!({"name": "u", "enum": ["a", "b"]})).unwrap();
        assert_eq!(e.allowed.as_deref(), Some(&["a".to_string(), "b".to_string()][..]));
        let many = Argument {
            name: "n".into(),
            required: false,
            allowed: None,
            values: (0..150).map(|i| format!("v{i}")).collect(),
            when: Vec::new(),
        };
        let c = many.complete("v", &none);
        assert_eq!(
            (c["values"].as_array().unwrap().len(), c["total"].clone(), c["hasMore"].clone()),
            (100, json!(150), json!(true))
        );
        assert!(!arg(json!({"name": "x"})).unwrap().completable());
    }

    fn args(list: Value) -> Result<Vec<Argument>, (String, String)> {
        let cfgs: Vec<ArgumentConfig> = list
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, v)| ArgumentConfig::read(v, &format!("arguments[{i}]")).unwrap())
            .collect();
        compile_all(&cfgs)
    }

    fn given(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn lists_follow_the_other_arguments_values() {
        let a = args(json!([
            {"name": "language", "enum": ["rust", "python", "go"]},
            {"name": "framework", "completions": ["axum", "actix", "django", "flask", "gin"],
             "valuesWhen": {"language": {"rust": ["axum", "actix"], "python": ["django", "flask"], "go": []}}},
            {"name": "level", "enum": ["1", "2", "3"],
             "valuesWhen": {"language": {"go": ["1"]}, "framework": {"axum": ["1", "2"], "gin": ["2"]}}},
        ]))
        .unwrap();
        let values = |arg: &Argument, prefix: &str, g: Value| arg.complete(prefix, &given(g))["values"].clone();
        assert_eq!(values(&a[1], "a", json!({"language": "rust"})), json!(["axum", "actix"]));
        assert_eq!(values(&a[1], "", json!({"language": "go"})), json!([]), "an empty list offers nothing");
        assert_eq!(values(&a[1], "a", json!({})), json!(["axum", "actix"]), "no context: the whole list");
        assert_eq!(values(&a[1], "d", json!({"language": "cobol"})), json!(["django"]), "no entry: the whole list");
        // Several lists apply: only what all of them allow.
        assert_eq!(values(&a[2], "", json!({"framework": "axum"})), json!(["1", "2"]));
        assert_eq!(values(&a[2], "", json!({"framework": "axum", "language": "go"})), json!(["1"]));
        assert_eq!(values(&a[2], "", json!({"framework": "gin", "language": "go"})), json!([]));
        assert!(a[1].completable() && a[1].accepted(&given(json!({}))).is_none());
        let accepted = a[2].accepted(&given(json!({"language": "go"}))).unwrap();
        assert_eq!(accepted, [&"1".to_string()]);
        let only_when = args(json!([{"name": "a", "enum": ["x"]}, {"name": "b", "valuesWhen": {"a": {"x": ["y"]}}}]));
        assert!(only_when.unwrap()[1].completable());
    }

    #[test]
    fn a_list_on_an_unknown_argument_or_value_is_refused_at_load() {
        let e = args(json!([{"name": "a", "valuesWhen": {"b": {"x": ["y"]}}}])).unwrap_err();
        assert_eq!(e.0, "arguments[0].valuesWhen.b");
        assert!(e.1.contains("names no argument here"), "{}", e.1);
        let e = args(json!([{"name": "a", "valuesWhen": {"a": {"x": ["y"]}}}])).unwrap_err();
        assert_eq!(e.0, "arguments[0].valuesWhen.a");
        let e = args(json!([{"name": "a", "enum": ["x"]}, {"name": "b", "valuesWhen": {"a": {"z": ["y"]}}}]));
        assert_eq!(e.unwrap_err(), ("arguments[1].valuesWhen.a.z".into(), "'z' is not in the enum of 'a'".into()));
        let e = args(json!([{"name": "a"}, {"name": "b", "enum": ["p"], "valuesWhen": {"a": {"z": ["q"]}}}]));
        assert_eq!(e.unwrap_err().0, "arguments[1].valuesWhen.a.z");
        let e = ArgumentConfig::read(&json!({"name": "b", "valuesWhen": {"a": {"z": "q"}}}), "arguments[3]");
        assert_eq!(e.unwrap_err().0, "arguments[3].valuesWhen.a.z");
        let e = ArgumentConfig::read(&json!({"name": "b", "valuesWhen": {"a": ["q"]}}), "arguments[3]");
        assert_eq!(e.unwrap_err().0, "arguments[3].valuesWhen.a");
    }

    #[test]
    fn context_arguments_are_an_object_or_nothing() {
        assert_eq!(context_arguments(&given(json!({}))), Ok(Map::new()));
        assert_eq!(context_arguments(&given(json!({"context": {}}))), Ok(Map::new()));
        let c = context_arguments(&given(json!({"context": {"arguments": {"a": "x"}}}))).unwrap();
        assert_eq!(c["a"], json!("x"));
        assert!(context_arguments(&given(json!({"context": {"arguments": ["x"]}}))).is_err());
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
