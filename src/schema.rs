//! Tool input schemas: built from `args`, used to coerce and validate `tools/call` arguments.
//!
//! The validator enforces every keyword it accepts of draft 2020-12 (and draft-07's spellings), and refuses
//! at load what it cannot (references outside the schema, `$recursiveRef`): see the README's "JSON Schema" and
//! `tests/json_schema_suite.rs`, which runs the official test suite. The `jsonschema` crate (0.61.2) measured
//! 2.37 MB of wasm on its own, more than the whole plugin's budget, so this module implements it with
//! `regex-lite` for `pattern`.

use crate::config::ArgConfig;
use crate::json::object;
use regex_lite::Regex;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

mod flat;

const MAX_DEPTH: usize = 64;
/// Schema nodes one check may visit, beyond [`STEPS_PER_VALUE`]. `$ref`s inside `anyOf`/`allOf`/`oneOf` can
/// make a small schema exponentially large to walk (`{"anyOf": [{"$ref": "#"}, {"$ref": "#"}]}` is 2^64 steps
/// under the depth limit), which would hold the worker for good; 2^20 steps take well under a second.
const MAX_STEPS: usize = 1 << 20;

/// Further steps for each value in the checked instance, so that the largest plain bodies (1 MiB of `0,` is
/// 2^19 values, an 8 MiB answer 2^22) are checked in full against ordinary schemas.
const STEPS_PER_VALUE: usize = 4;

/// The values in a JSON document, containers included.
fn values(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(values).sum(),
        Value::Object(members) => members.values().map(values).sum(),
        _ => 0,
    }
}

/// The steps left to one validation, normalisation or scan of declared names.
struct Budget {
    steps: usize,
    left: std::cell::Cell<usize>,
    overrun: std::cell::Cell<bool>,
    /// The dynamic scope of a check (`$dynamicRef`): the base URIs of the schema resources entered,
    /// outermost first. Kept here because the budget already goes wherever a check goes.
    scope: std::cell::RefCell<Vec<String>>,
}

impl Budget {
    fn new(steps: usize) -> Budget {
        Budget { steps, left: steps.into(), overrun: false.into(), scope: Vec::new().into() }
    }

    /// Takes one step; false once the steps are spent.
    fn spend(&self) -> bool {
        match self.left.get() {
            0 => {
                self.overrun.set(true);
                false
            }
            left => {
                self.left.set(left - 1);
                true
            }
        }
    }

    fn exhausted(&self) -> bool {
        self.overrun.get()
    }
}

/// Builds the tool's `inputSchema` from its declared args.
pub fn from_args(args: &[ArgConfig]) -> Result<Value, String> {
    let mut props = Map::new();
    let mut required = Vec::new();
    for arg in args {
        if arg.name.is_empty() {
            return Err("an arg has an empty name".into());
        }
        let mut p = match &arg.schema {
            Some(Value::Object(schema)) => {
                if arg.kind.is_some() || arg.enum_values.is_some() || arg.items.is_some() || arg.properties.is_some() {
                    return Err(format!("arg '{}': give either schema or type/enum/items/properties", arg.name));
                }
                schema.clone()
            }
            Some(_) => return Err(format!("arg '{}': schema must be an object", arg.name)),
            None if arg.file && arg.kind.is_none() => match file_schema() {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            None => {
                let kind = arg.kind.as_deref().unwrap_or("string");
                if !["string", "number", "integer", "boolean", "array", "object"].contains(&kind) {
                    return Err(format!("arg '{}': unknown type '{kind}'", arg.name));
                }
                let mut p = Map::new();
                p.insert("type".into(), Value::from(kind));
                p
            }
        };
        if let Some(d) = &arg.description {
            p.insert("description".into(), Value::from(d.as_str()));
        }
        if let Some(e) = &arg.enum_values {
            p.insert("enum".into(), Value::Array(e.clone()));
        }
        if let Some(d) = &arg.default {
            p.insert("default".into(), d.clone());
        }
        if let Some(items) = &arg.items {
            p.insert("items".into(), items.clone());
        }
        if let Some(properties) = &arg.properties {
            p.insert("properties".into(), properties.clone());
        }
        if props.insert(arg.name.clone(), Value::Object(p)).is_some() {
            return Err(format!("arg '{}' is declared twice", arg.name));
        }
        if arg.required {
            required.push(Value::from(arg.name.as_str()));
        }
    }
    // Published so that clients and models see the rule the gateway applies anyway (see
    // `Validator::undeclared`): arguments that are not declared are refused.
    let mut schema = vec![
        ("type", Value::from("object")),
        ("properties", Value::Object(props)),
        ("additionalProperties", Value::Bool(false)),
    ];
    if !required.is_empty() {
        schema.push(("required", Value::Array(required)));
    }
    Ok(object(schema))
}

/// What a file argument takes: the bytes as base64, and optionally the file's name and media type.
pub fn file_schema() -> Value {
    // Parsed from text: `json!` would serialise each of its strings through serde, a panic site each.
    serde_json::from_slice(
        br#"{"type": "object", "required": ["content"], "properties": {
        "content": {"type": "string", "contentEncoding": "base64", "description": "The file's bytes, base64"},
        "filename": {"type": "string"},
        "contentType": {"type": "string", "description": "The file's media type"}}}"#,
    )
    .unwrap_or_default()
}

/// Coerces top-level argument values towards their declared types and fills in defaults.
///
/// Clients (and the models behind them) often send `"5"` for an integer or `5` for a string; REST
/// backends care, so arguments are nudged to the declared type before validation.
pub fn coerce_and_default(schema: &Value, args: &mut Map<String, Value>) {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    for (name, prop) in props {
        match args.get_mut(name) {
            Some(v) => coerce(prop, v),
            None => {
                if let Some(d) = prop.get("default") {
                    args.insert(name.clone(), d.clone());
                }
            }
        }
    }
}

fn declared_types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => {
            let mut out = Vec::new();
            for t in a {
                if let Some(t) = t.as_str() {
                    out.push(t);
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

// The keyword lookups below are written as loops over these, not as `into_iter().flatten()` or
// `flat_map` chains, whose adapters were instantiated once per closure.

/// The array at `key` of a schema object, or none.
fn array_at<'a>(s: &'a Map<String, Value>, key: &str) -> &'a [Value] {
    match s.get(key) {
        Some(Value::Array(a)) => a,
        _ => &[],
    }
}

/// The object at `key` of a schema object, or an empty one.
fn object_at<'a>(s: &'a Map<String, Value>, key: &str) -> &'a Map<String, Value> {
    match s.get(key) {
        Some(Value::Object(m)) => m,
        _ => empty_object(),
    }
}

fn empty_object() -> &'static Map<String, Value> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(Map::new)
}

fn coerce(schema: &Value, v: &mut Value) {
    let types = declared_types(schema);
    if types.is_empty() || types.iter().any(|t| type_matches(t, v)) {
        if let (Value::Array(items), Some(item_schema)) = (&mut *v, schema.get("items")) {
            items.iter_mut().for_each(|i| coerce(item_schema, i));
        }
        return;
    }
    let coerced = match (types[0], &*v) {
        ("integer", Value::String(s)) => {
            let s = s.trim();
            s.parse::<i64>()
                .map(Value::from)
                .or_else(|_| s.parse::<u64>().map(Value::from))
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(|f| exact_integer(&Value::from(f))))
        }
        ("integer", Value::Number(_)) => exact_integer(v),
        ("number", Value::String(s)) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()).map(Value::from),
        ("boolean", Value::String(s)) => match s.trim() {
            "true" | "True" | "TRUE" | "1" => Some(Value::Bool(true)),
            "false" | "False" | "FALSE" | "0" => Some(Value::Bool(false)),
            _ => None,
        },
        ("string", Value::Number(n)) => Some(Value::from(n.to_string())),
        ("string", Value::Bool(b)) => Some(Value::from(b.to_string())),
        ("array" | "object", Value::String(s)) => {
            serde_json::from_slice::<Value>(s.as_bytes()).ok().filter(|p| type_matches(types[0], p))
        }
        _ => None,
    };
    if let Some(c) = coerced {
        *v = c;
    }
}

/// The largest magnitude up to which every whole number is exact as an `f64` (2^53).
const EXACT_F64: f64 = 9_007_199_254_740_992.0;

/// What an `integer` argument may be, said when one is out of range.
const INTEGER_RANGE: &str = "integer out of range: give a whole number from -9223372036854775808 to \
                             18446744073709551615 (written with a fraction or an exponent, at most 9007199254740992 \
                             in magnitude)";

/// An integer-valued number as the integer it is: JSON integers within 64 bits are kept, and a number written
/// with a fraction or an exponent (`1.0`, `1e2`, held as `f64`) becomes an integer when it is whole and exact.
/// Beyond 2^53 an `f64` may already have been rounded (serde_json parses integer literals beyond 64 bits to
/// `f64` too), so such values are refused rather than sent as a different number.
fn exact_integer(v: &Value) -> Option<Value> {
    let Value::Number(n) = v else { return None };
    if n.is_i64() || n.is_u64() {
        return Some(v.clone());
    }
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() <= EXACT_F64).then(|| Value::from(f as i64))
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => exact_integer(v).is_some(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "null" => v.is_null(),
        _ => false,
    }
}

/// A schema checked once at configure time, with its regular expressions compiled and its `$ref`s resolved.
#[derive(Debug)]
pub struct Validator {
    root: Value,
    patterns: HashMap<String, Regex>,
    /// Each `$ref` (and `$dynamicRef`), by the address of its value in `root` (which is never changed), to
    /// `base#pointer`: the resource it points into and the JSON pointer of its target. Resolved once against
    /// the `$id`s in scope, as the same text means different schemas under different `$id`s.
    refs: HashMap<usize, String>,
    /// For `$dynamicRef` only (else empty): `$id`s and anchors as `uri#name` to JSON pointers, the base URI
    /// of each schema object with an `$id` (by address), and the root's.
    anchors: Names,
    bases: HashMap<usize, String>,
    root_base: String,
    /// Whether the schema uses `unevaluatedProperties`/`unevaluatedItems`: only then are the members each
    /// subschema evaluated collected.
    track: bool,
    /// Whether it uses `dependentRequired`, `dependentSchemas` or `dependencies` (skipped otherwise: every
    /// lookup is paid at every step).
    dependencies: bool,
    /// What the validated value is called in messages: the arguments, or the upstream's answer.
    whole: &'static str,
    /// [`MAX_STEPS`], lowered by tests.
    max_steps: usize,
    /// The server's shared definitions, when the schema refers to them (see [`SchemaDefs`]).
    defs: Option<Arc<SchemaDefs>>,
    /// The schema precompiled when it is one object of plain properties (see [`flat`]).
    flat: Option<flat::Flat>,
    /// What [`Validator::undeclared`] needs of the schema, scanned once at load (it depends on nothing else).
    declared: Declared,
}

/// The argument names and `patternProperties` a schema declares at its object level, and whether it takes
/// no others (or why it could not be scanned: too complex).
#[derive(Debug)]
struct Declared {
    names: Vec<String>,
    patterns: Vec<String>,
    closed: Result<bool, String>,
}

/// A server's `schemaDefs`: schemas its tools share through `$ref: "#/$defs/NAME"`, held and compiled once
/// per server instead of copied into every tool (a converted API repeats the same models in hundreds of
/// tools: Stripe's conversion was 57 MB inlined, most of it the same few models). A tool's schema reads them
/// as if they were its own `$defs`; `tools/list` shows each tool self-contained (see [`Validator::listing`]).
#[derive(Debug)]
pub struct SchemaDefs {
    /// `{"$defs": {...}}`, so that the definitions' `$ref`s to one another are pointers into it.
    root: Value,
    patterns: HashMap<String, Regex>,
    /// As [`Validator`]'s, every one `SHARED#pointer`.
    refs: HashMap<usize, String>,
    track: bool,
    dependencies: bool,
}

/// The base of a `$ref` into a server's [`SchemaDefs`].
const SHARED: &str = "mcp-gateway:schemaDefs";

/// The definition a `/$defs/NAME/...` pointer names.
fn def_name(pointer: &str) -> Option<String> {
    let name = pointer.strip_prefix("/$defs/")?.split('/').next()?;
    Some(name.replace("~1", "/").replace("~0", "~"))
}

impl SchemaDefs {
    /// Checks and compiles the definitions; their `$ref`s may point to one another (`#/$defs/NAME`), not
    /// elsewhere, and they may not declare `$id`s, anchors or `$dynamicRef`s (a shared definition has no
    /// single place in a document for them to be relative to).
    pub fn compile(defs: Map<String, Value>) -> Result<SchemaDefs, String> {
        let root = object(vec![("$defs", Value::Object(defs))]);
        let l = Loader::load(&root, None)?;
        if l.dynamic || l.ids.len() > 1 {
            return Err("`$id`, `$anchor`, `$dynamicAnchor` and `$dynamicRef` are not supported in schemaDefs".into());
        }
        let mut refs = HashMap::with_capacity(l.refs.len());
        for (addr, target) in l.refs {
            let pointer = target.split_once('#').map_or("", |(_, p)| p);
            if def_name(pointer).is_none() {
                return Err(format!("a $ref leads to #{pointer}: outside the definitions"));
            }
            refs.insert(addr, format!("{SHARED}#{pointer}"));
        }
        Ok(SchemaDefs { root, patterns: l.patterns, refs, track: l.track, dependencies: l.dependencies })
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.root["$defs"].get(name)
    }
}

/// The shared definitions a schema reaches, directly or through one another (by name, first use first).
fn closure(root: &Value, refs: &HashMap<usize, String>, defs: &SchemaDefs) -> Vec<String> {
    let mut names = Vec::new();
    collect_refs(root, refs, &mut names);
    let mut i = 0;
    while let Some(name) = names.get(i).cloned() {
        if let Some(def) = defs.get(&name) {
            collect_refs(def, &defs.refs, &mut names);
        }
        i += 1;
    }
    names
}

/// The shared definitions (by name, first use first, each once) that `$ref`s in `v` lead to.
fn collect_refs(v: &Value, refs: &HashMap<usize, String>, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref") {
                let target = refs.get(&(r as *const Value as usize)).and_then(|t| t.strip_prefix(SHARED));
                if let Some(name) = target.and_then(|t| def_name(t.trim_start_matches('#'))) {
                    if !out.contains(&name) {
                        out.push(name);
                    }
                }
            }
            m.values().for_each(|x| collect_refs(x, refs, out));
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, refs, out)),
        _ => {}
    }
}

impl Validator {
    /// Compiles a schema; fails on malformed keywords, bad patterns, unresolvable `$ref`s and the keywords
    /// it does not support (see [`Loader::check`]).
    pub fn new(root: Value) -> Result<Validator, String> {
        Validator::with_defs(root, None)
    }

    /// The same for a schema that may refer to its server's shared definitions.
    pub fn with_defs(root: Value, defs: Option<Arc<SchemaDefs>>) -> Result<Validator, String> {
        if !root.is_object() && !root.is_boolean() {
            return Err("a schema must be an object or a boolean".into());
        }
        let mut l = Loader::load(&root, defs.as_deref())?;
        let defs = match defs {
            Some(d) if l.refs.values().any(|r| r.starts_with(SHARED)) => {
                // Listed with the definitions it reaches as its `$defs` when they recurse: they may not
                // shadow its own.
                if let Some(own) = root.get("$defs").and_then(Value::as_object) {
                    if let Some(n) = closure(&root, &l.refs, &d).into_iter().find(|n| own.contains_key(n)) {
                        return Err(format!(
                            "$defs/{n}: the server's schemaDefs has one of this name too, which it uses"
                        ));
                    }
                }
                l.track |= d.track;
                l.dependencies |= d.dependencies;
                Some(d)
            }
            _ => None,
        };
        // The root's own address changes as it moves into the validator: its base is kept apart.
        let root_base = l.visited.remove(&(&root as *const Value as usize)).filter(|b| !b.is_empty());
        let root_base = root_base.unwrap_or_else(|| NO_BASE.into());
        l.visited.retain(|_, base| !base.is_empty());
        let (anchors, bases) = if l.dynamic { (l.ids, l.visited) } else { Default::default() };
        let flat = flat::Flat::compile(&root);
        let v = Validator {
            root,
            patterns: l.patterns,
            refs: l.refs,
            anchors,
            bases,
            root_base,
            track: l.track,
            dependencies: l.dependencies,
            whole: "arguments",
            max_steps: MAX_STEPS,
            defs,
            flat,
            declared: Declared { names: Vec::new(), patterns: Vec::new(), closed: Ok(false) },
        };
        Ok(v.scan_declared())
    }

    /// The validator with its declared names scanned (see [`Declared`]).
    fn scan_declared(mut self) -> Validator {
        let mut names = Vec::new();
        let mut patterns = Vec::new();
        let budget = self.budget(&Value::Null);
        let closed = self.declared(&self.root, &mut names, &mut patterns, 0, &budget);
        let closed = if budget.exhausted() { Err(self.too_complex(&budget)) } else { Ok(closed) };
        let names = names.into_iter().map(str::to_string).collect();
        let patterns = patterns.into_iter().map(str::to_string).collect();
        self.declared = Declared { names, patterns, closed };
        self
    }

    /// The same for an upstream answer, with shared definitions.
    pub fn for_answer_with_defs(root: Value, defs: Option<Arc<SchemaDefs>>) -> Result<Validator, String> {
        Validator::with_defs(root, defs).map(|v| Validator { whole: "the answer", ..v })
    }

    /// The schema as `tools/list` shows it: self-contained. `$ref`s to shared definitions are replaced by
    /// the definitions (a converted API's schemas then read exactly as if converted inlined); definitions
    /// that refer to themselves cannot be, and are given as the schema's `$defs` instead. Built for each
    /// listing rather than held per tool, which is what keeps a large API's memory down.
    pub fn listing(&self) -> Value {
        let Some(defs) = &self.defs else {
            return self.root.clone();
        };
        let mut budget = MAX_STEPS;
        self.inline(&self.root, defs, &mut Vec::new(), &mut budget).unwrap_or_else(|| self.listing_with_defs())
    }

    /// The schema with the shared definitions it reaches as its `$defs` (each once), `$ref`s kept.
    pub fn listing_with_defs(&self) -> Value {
        let mut out = self.root.clone();
        let Some(defs) = &self.defs else {
            return out;
        };
        if let Value::Object(o) = &mut out {
            let own = o.entry("$defs").or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(own) = own {
                for n in closure(&self.root, &self.refs, defs) {
                    let def = defs.get(&n).cloned().unwrap_or(Value::Bool(true));
                    own.insert(n, def);
                }
            }
        }
        out
    }

    /// A copy of `v` with every `$ref` to a shared definition replaced by the definition (itself inlined);
    /// `None` when definitions recurse (`within`: the `$ref`s being expanded) or nest deeper than
    /// [`MAX_DEPTH`], or the copy would take more than `budget` values (definitions that use one another
    /// twice at each level double at each: a small config must not list as gigabytes).
    fn inline<'s>(
        &'s self,
        v: &'s Value,
        defs: &'s SchemaDefs,
        within: &mut Vec<&'s str>,
        budget: &mut usize,
    ) -> Option<Value> {
        *budget = budget.checked_sub(1)?;
        let m = match v {
            Value::Object(m) => m,
            Value::Array(a) => {
                let mut items = Vec::with_capacity(a.len());
                for x in a {
                    items.push(self.inline(x, defs, within, budget)?);
                }
                return Some(Value::Array(items));
            }
            other => return Some(other.clone()),
        };
        let mut out = Map::new();
        let mut expanded = None;
        for (k, x) in m {
            let addr = x as *const Value as usize;
            let target = self.refs.get(&addr).or_else(|| defs.refs.get(&addr)).and_then(|t| t.strip_prefix(SHARED));
            match target.and_then(|t| t.strip_prefix('#')).filter(|_| k == "$ref") {
                Some(pointer) => {
                    if within.contains(&pointer) || within.len() > MAX_DEPTH {
                        return None;
                    }
                    within.push(pointer);
                    expanded = Some(self.inline(defs.root.pointer(pointer)?, defs, within, budget)?);
                    within.pop();
                }
                None => {
                    out.insert(k.clone(), self.inline(x, defs, within, budget)?);
                }
            }
        }
        let Some(expanded) = expanded else { return Some(Value::Object(out)) };
        if out.is_empty() {
            return Some(expanded);
        }
        // Keywords beside the `$ref` apply together with it, as `allOf` does.
        match out.get_mut("allOf") {
            Some(Value::Array(all)) => all.insert(0, expanded),
            _ => {
                out.insert("allOf".into(), Value::Array(vec![expanded]));
            }
        }
        Some(Value::Object(out))
    }

    /// A compiled `pattern` or `patternProperties` key, the tool's or the shared definitions'.
    fn pattern(&self, p: &str) -> Option<&Regex> {
        self.patterns.get(p).or_else(|| self.defs.as_ref()?.patterns.get(p))
    }

    /// The same, for an upstream answer checked against a tool's `outputSchema`.
    pub fn for_answer(root: Value) -> Result<Validator, String> {
        Validator::new(root).map(|v| Validator { whole: "the answer", ..v })
    }

    /// The same with a smaller step budget, so that property tests reach it quickly.
    #[cfg(test)]
    pub(crate) fn with_max_steps(self, max_steps: usize) -> Validator {
        Validator { max_steps, flat: None, ..self }.scan_declared()
    }

    /// The steps for one check of `instance` (`Value::Null` for scans of the schema alone).
    fn budget(&self, instance: &Value) -> Budget {
        Budget::new(self.max_steps.saturating_add(values(instance).saturating_mul(STEPS_PER_VALUE)))
    }

    /// The schema as given.
    pub fn schema(&self) -> &Value {
        &self.root
    }

    /// Validates an instance; each error names the JSON path at fault ("`city`", "`tags/0`").
    pub fn validate(&self, instance: &Value) -> Vec<String> {
        if self.flat.as_ref().is_some_and(|f| f.holds(self, instance)) {
            return Vec::new();
        }
        let mut errors = Vec::new();
        let budget = self.budget(instance);
        budget.scope.borrow_mut().push(self.root_base.clone());
        let _ = self.walk(&self.root, instance, "", &mut errors, 0, &budget);
        if budget.exhausted() {
            return vec![self.too_complex(&budget)];
        }
        errors
    }

    /// Said instead of a check's findings when the check ran out of steps.
    fn too_complex(&self, budget: &Budget) -> String {
        format!(
            "{}: the schema is too complex to check (it takes more than {} steps); the operator must simplify it",
            self.whole, budget.steps
        )
    }

    fn member(&self) -> &'static str {
        if self.arguments() {
            "argument"
        } else {
            "property"
        }
    }

    fn arguments(&self) -> bool {
        self.whole == "arguments"
    }

    /// Arguments are sent on as integers, so an `integer` argument must be one exactly (see
    /// [`exact_integer`]); an answer only needs to be whole-valued, as JSON Schema says.
    fn type_matches(&self, t: &str, v: &Value) -> bool {
        if t == "integer" && !self.arguments() {
            return v.as_f64().is_some_and(|f| f.fract() == 0.0);
        }
        type_matches(t, v)
    }

    /// Rewrites every number the schema declares `integer` (`1.0`, `1e2`) as the integer it is, at any depth
    /// (properties, items, `$ref`s, combinators), so that it goes upstream as `1`, not `1.0`. Values that are
    /// not exact integers are left for [`Validator::validate`] to report. Fails, having rewritten only some,
    /// when the schema is too complex to walk (see [`MAX_STEPS`]).
    pub fn normalize_integers(&self, v: &mut Value) -> Result<(), String> {
        if let Some(f) = &self.flat {
            f.normalize(v);
            return Ok(());
        }
        let budget = self.budget(v);
        self.normalize(&self.root, v, 0, &budget);
        if budget.exhausted() {
            return Err(self.too_complex(&budget));
        }
        Ok(())
    }

    fn normalize(&self, schema: &Value, v: &mut Value, depth: usize, budget: &Budget) {
        let Value::Object(s) = schema else { return };
        if depth > MAX_DEPTH || !budget.spend() {
            return;
        }
        if let Some(target) = self.target(s) {
            self.normalize(target, v, depth + 1, budget);
        }
        // Rewriting a whole number as an integer never changes its JSON value, so every schema that may
        // apply here can do it (each branch of anyOf/oneOf included).
        if v.is_f64() && declared_types(schema).contains(&"integer") {
            if let Some(i) = exact_integer(v) {
                *v = i;
            }
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            for sub in array_at(s, key) {
                self.normalize(sub, v, depth + 1, budget);
            }
        }
        for key in ["if", "then", "else"] {
            if let Some(sub) = s.get(key) {
                self.normalize(sub, v, depth + 1, budget);
            }
        }
        for key in ["dependentSchemas", "dependencies"] {
            for sub in object_at(s, key).values() {
                self.normalize(sub, v, depth + 1, budget);
            }
        }
        match v {
            Value::Object(obj) => {
                let props = s.get("properties").and_then(Value::as_object);
                let pattern_props = s.get("patternProperties").and_then(Value::as_object);
                for (key, value) in obj.iter_mut() {
                    let mut known = false;
                    if let Some(sub) = props.and_then(|p| p.get(key)) {
                        known = true;
                        self.normalize(sub, value, depth + 1, budget);
                    }
                    for (pat, sub) in pattern_props.unwrap_or(empty_object()) {
                        if self.pattern(pat).is_some_and(|re| re.is_match(key)) {
                            known = true;
                            self.normalize(sub, value, depth + 1, budget);
                        }
                    }
                    // Unevaluated members are a subset of these: rewriting more is harmless.
                    let rest = s.get("additionalProperties").or_else(|| s.get("unevaluatedProperties"));
                    if let (false, Some(sub)) = (known, rest) {
                        self.normalize(sub, value, depth + 1, budget);
                    }
                }
            }
            Value::Array(items) => {
                let prefix = s.get("prefixItems").or_else(|| s.get("items").filter(|i| i.is_array()));
                let prefix = prefix.and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
                for (sub, item) in prefix.iter().zip(items.iter_mut()) {
                    self.normalize(sub, item, depth + 1, budget);
                }
                let rest = s.get("items").filter(|i| !i.is_array()).or_else(|| s.get("additionalItems"));
                if let Some(sub) = rest.or_else(|| s.get("unevaluatedItems")) {
                    for item in items.iter_mut().skip(prefix.len()) {
                        self.normalize(sub, item, depth + 1, budget);
                    }
                }
                if let Some(sub) = s.get("contains") {
                    for item in items.iter_mut() {
                        self.normalize(sub, item, depth + 1, budget);
                    }
                }
            }
            _ => {}
        }
    }

    /// The arguments a tool does not declare, which the gateway refuses: one rule for tools built from `args`,
    /// imported from OpenAPI or given an `inputSchema`. An argument is declared when the schema's
    /// `properties` name it or its `patternProperties` match it, at the top or in a top-level `$ref`,
    /// `allOf`/`anyOf`/`oneOf` or `if`/`then`/`else` branch. Extra arguments are accepted only where the
    /// operator says so: `additionalProperties` (or `unevaluatedProperties`) other than `false` at the top or
    /// in such a branch. Without that, an extra argument is almost always a mistake (a misspelt optional
    /// argument would silently take its default) or an attempt to reach the upstream with fields the tool
    /// does not expose (`argsToJsonBody` forwarded them), so it is refused with its name rather than dropped.
    /// Fails when the schema is too complex to scan (see [`MAX_STEPS`]).
    pub fn undeclared(&self, args: &Map<String, Value>) -> Result<Vec<String>, String> {
        let d = &self.declared;
        if !d.closed.clone()? {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for k in args.keys() {
            if !d.names.contains(k) && !d.patterns.iter().any(|p| self.pattern(p).is_some_and(|re| re.is_match(k))) {
                out.push(k.clone());
            }
        }
        Ok(out)
    }

    /// The argument names the schema declares, in its order (for messages).
    pub fn declared_names(&self) -> Vec<&str> {
        let mut out = Vec::with_capacity(self.declared.names.len());
        for n in &self.declared.names {
            out.push(n.as_str());
        }
        out
    }

    /// Collects the declared names and patterns of `schema`'s object level; false when extras are allowed.
    fn declared<'a>(
        &'a self,
        schema: &'a Value,
        names: &mut Vec<&'a str>,
        patterns: &mut Vec<&'a str>,
        depth: usize,
        budget: &Budget,
    ) -> bool {
        let Value::Object(s) = schema else { return schema != &Value::Bool(true) };
        if depth > MAX_DEPTH || !budget.spend() {
            return true;
        }
        for key in ["additionalProperties", "unevaluatedProperties"] {
            if s.get(key).is_some_and(|a| a != &Value::Bool(false)) {
                return false;
            }
        }
        for name in object_at(s, "properties").keys() {
            if !names.contains(&name.as_str()) {
                names.push(name);
            }
        }
        for pattern in object_at(s, "patternProperties").keys() {
            if !patterns.contains(&pattern.as_str()) {
                patterns.push(pattern);
            }
        }
        let mut closed = true;
        if let Some(target) = self.target(s) {
            closed &= self.declared(target, names, patterns, depth + 1, budget);
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            for sub in array_at(s, key) {
                closed &= self.declared(sub, names, patterns, depth + 1, budget);
            }
        }
        for key in ["if", "then", "else"] {
            if let Some(sub) = s.get(key) {
                closed &= self.declared(sub, names, patterns, depth + 1, budget);
            }
        }
        for key in ["dependentSchemas", "dependencies"] {
            for sub in object_at(s, key).values() {
                if !sub.is_array() {
                    closed &= self.declared(sub, names, patterns, depth + 1, budget);
                }
            }
        }
        closed
    }

    /// The schema a schema object's `$ref` points to (resolved at load).
    fn target(&self, s: &Map<String, Value>) -> Option<&Value> {
        self.follow(s, "$ref", &Budget::new(0)).map(|(_, target)| target)
    }

    /// Where a `$ref` or `$dynamicRef` leads, and the resource it enters. A `$dynamicRef` to a
    /// `$dynamicAnchor` goes to the outermost resource in the dynamic scope with an anchor of that name.
    fn follow<'s>(&'s self, s: &Map<String, Value>, key: &str, budget: &Budget) -> Option<(&'s str, &'s Value)> {
        let r = s.get(key)?;
        let addr = r as *const Value as usize;
        let entry = match self.refs.get(&addr) {
            Some(e) => e,
            None => self.defs.as_ref()?.refs.get(&addr)?,
        };
        let (base, pointer) = entry.split_once('#')?;
        if base == SHARED {
            return Some((base, self.defs.as_ref()?.root.pointer(pointer)?));
        }
        let mut target = self.root.pointer(pointer)?;
        let name = r.as_str().and_then(|r| r.split_once('#')).map_or("", |(_, name)| name);
        let dynamic = |t: &Value| t.get("$dynamicAnchor").and_then(Value::as_str) == Some(name);
        if key == "$dynamicRef" && dynamic(target) {
            // A step per resource tried: the scope is as deep as the check.
            for outer in budget.scope.borrow().iter().take_while(|_| budget.spend()) {
                let found = self.anchors.get(&format!("{outer}#{name}")).and_then(|p| self.root.pointer(p));
                if let Some(t) = found.filter(|t| dynamic(t)) {
                    target = t;
                    break;
                }
            }
        }
        Some((base, target))
    }

    /// Checks `v` against `schema`, pushing what is wrong; returns what the schema evaluated of `v` (for
    /// `unevaluated*`), which counts only when the schema holds.
    fn walk<'v>(
        &self,
        schema: &Value,
        v: &'v Value,
        path: &str,
        errors: &mut Vec<String>,
        depth: usize,
        budget: &Budget,
    ) -> Seen<'v> {
        // A schema with an `$id` is a resource: it is in the dynamic scope while it is checked.
        let base = self.bases.get(&(schema as *const Value as usize));
        if let Some(b) = base {
            budget.scope.borrow_mut().push(b.clone());
        }
        let seen = self.walk_schema(schema, v, path, errors, depth, budget);
        if base.is_some() {
            budget.scope.borrow_mut().pop();
        }
        seen
    }

    fn walk_schema<'v>(
        &self,
        schema: &Value,
        v: &'v Value,
        path: &str,
        errors: &mut Vec<String>,
        depth: usize,
        budget: &Budget,
    ) -> Seen<'v> {
        let at = |p: &str| {
            if p.is_empty() {
                self.whole.to_string()
            } else {
                format!("`{p}`")
            }
        };
        let mut seen = Seen::default();
        if !budget.spend() {
            return seen;
        }
        if depth > MAX_DEPTH {
            errors.push(format!("{}: schema nesting too deep", at(path)));
            return seen;
        }
        let s = match schema {
            Value::Bool(true) => return seen,
            Value::Bool(false) => {
                errors.push(format!("{}: no value is allowed here", at(path)));
                return seen;
            }
            Value::Object(s) => s,
            _ => return seen,
        };
        let before = errors.len();
        for key in ["$ref", "$dynamicRef"] {
            if let Some((base, target)) = self.follow(s, key, budget) {
                budget.scope.borrow_mut().push(base.to_string());
                let found = self.walk(target, v, path, errors, depth + 1, budget);
                budget.scope.borrow_mut().pop();
                seen.merge(found, budget);
            }
        }
        let types = declared_types(schema);
        if !types.is_empty() && !types.iter().any(|t| self.type_matches(t, v)) {
            if types.contains(&"integer") && self.arguments() && v.as_f64().is_some_and(|f| f.fract() == 0.0) {
                errors.push(format!("{}: {INTEGER_RANGE}", at(path)));
            } else {
                errors.push(format!("{}: expected {}, got {}", at(path), types.join(" or "), kind_of(v)));
            }
            return Seen::default();
        }
        if let Some(Value::Array(options)) = s.get("enum") {
            if !options.iter().any(|o| json_eq(o, v)) {
                errors.push(format!("{}: must be one of {}", at(path), Value::Array(options.clone())));
            }
        }
        if let Some(c) = s.get("const") {
            if !json_eq(c, v) {
                errors.push(format!("{}: must be {c}", at(path)));
            }
        }
        match v {
            Value::String(text) => self.check_string(s, text, &at(path), errors),
            Value::Number(n) => check_number(s, n, &at(path), errors),
            Value::Array(items) => self.check_array(s, items, path, errors, depth, budget, &mut seen),
            Value::Object(obj) => self.check_object(s, obj, path, errors, depth, budget, &mut seen),
            _ => {}
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            let Some(Value::Array(subs)) = s.get(key) else {
                continue;
            };
            let mut results: Vec<(Vec<String>, Seen)> = Vec::with_capacity(subs.len());
            let mut passing = 0;
            for sub in subs {
                let mut e = Vec::new();
                let found = self.walk(sub, v, path, &mut e, depth + 1, budget);
                passing += usize::from(e.is_empty());
                results.push((e, found));
            }
            match key {
                "anyOf" if passing == 0 => errors.push(format!("{}: matches none of the allowed shapes", at(path))),
                "oneOf" if passing != 1 => {
                    errors.push(format!("{}: must match exactly one allowed shape (matches {passing})", at(path)))
                }
                _ => {}
            }
            for (e, found) in results {
                // Annotations come from the branches that hold; allOf's failures are this schema's.
                if e.is_empty() {
                    seen.merge(found, budget);
                } else if key == "allOf" {
                    errors.extend(e);
                }
            }
        }
        if let Some(not) = s.get("not") {
            let mut e = Vec::new();
            let _ = self.walk(not, v, path, &mut e, depth + 1, budget);
            if e.is_empty() {
                errors.push(format!("{}: matches a forbidden shape", at(path)));
            }
        }
        if let Some(cond) = s.get("if") {
            let mut e = Vec::new();
            let found = self.walk(cond, v, path, &mut e, depth + 1, budget);
            let branch = if e.is_empty() {
                seen.merge(found, budget);
                s.get("then")
            } else {
                s.get("else")
            };
            if let Some(b) = branch {
                let found = self.walk(b, v, path, errors, depth + 1, budget);
                seen.merge(found, budget);
            }
        }
        if let (Value::Object(obj), true) = (v, self.dependencies) {
            self.check_dependencies(s, obj, v, path, errors, depth, budget, &mut seen);
        }
        // Last: these see what every other keyword here evaluated.
        match v {
            _ if !self.track => {}
            Value::Array(items) => {
                if let Some(sub) = s.get("unevaluatedItems") {
                    let mut evaluated = vec![false; items.len()];
                    for i in seen.indexes.drain(..) {
                        evaluated[i] = true;
                    }
                    for (i, item) in items.iter().enumerate() {
                        if i >= seen.items && !evaluated[i] {
                            self.rest(sub, item, &join(path, &i.to_string()), "item", errors, depth, budget);
                        }
                    }
                    seen.items = items.len();
                }
            }
            Value::Object(obj) => {
                if let Some(sub) = s.get("unevaluatedProperties") {
                    let props: Names = seen.props.drain(..).map(|p| (p.to_string(), String::new())).collect();
                    for (key, value) in obj {
                        if !props.contains_key(key) {
                            self.rest(sub, value, &join(path, key), self.member(), errors, depth, budget);
                        }
                    }
                    seen.props.extend(obj.keys().map(String::as_str));
                }
            }
            _ => {}
        }
        if errors.len() > before {
            return Seen::default();
        }
        seen
    }

    /// Checks a member that no other keyword took against `additionalProperties` or `unevaluated*`.
    #[allow(clippy::too_many_arguments)]
    fn rest(
        &self,
        sub: &Value,
        value: &Value,
        path: &str,
        what: &str,
        errors: &mut Vec<String>,
        depth: usize,
        budget: &Budget,
    ) {
        if sub == &Value::Bool(false) {
            if budget.spend() {
                errors.push(format!("`{path}`: is not an accepted {what}"));
            }
        } else {
            let _ = self.walk(sub, value, path, errors, depth + 1, budget);
        }
    }

    /// `dependentRequired`, `dependentSchemas` and draft-07's `dependencies` (either, by the value's type).
    #[allow(clippy::too_many_arguments)]
    fn check_dependencies<'v>(
        &self,
        s: &Map<String, Value>,
        obj: &Map<String, Value>,
        v: &'v Value,
        path: &str,
        errors: &mut Vec<String>,
        depth: usize,
        budget: &Budget,
        seen: &mut Seen<'v>,
    ) {
        for key in ["dependentRequired", "dependentSchemas", "dependencies"] {
            for (name, dependency) in object_at(s, key) {
                if !obj.contains_key(name) {
                    continue;
                }
                if let Value::Array(required) = dependency {
                    for other in required {
                        let Some(other) = other.as_str().filter(|o| !obj.contains_key(*o)) else { continue };
                        errors.push(format!(
                            "`{}`: is required when `{}` is given",
                            join(path, other),
                            join(path, name)
                        ));
                    }
                } else {
                    let found = self.walk(dependency, v, path, errors, depth + 1, budget);
                    seen.merge(found, budget);
                }
            }
        }
    }

    fn check_string(&self, s: &Map<String, Value>, text: &str, at: &str, errors: &mut Vec<String>) {
        let len = text.chars().count() as u64;
        if let Some(min) = count(s, "minLength") {
            if len < min {
                errors.push(format!("{at}: must be at least {min} characters"));
            }
        }
        if let Some(max) = count(s, "maxLength") {
            if len > max {
                errors.push(format!("{at}: must be at most {max} characters"));
            }
        }
        if let Some(p) = s.get("pattern").and_then(Value::as_str) {
            if let Some(re) = self.pattern(p) {
                if !re.is_match(text) {
                    errors.push(format!("{at}: must match the pattern {p}"));
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_array<'v>(
        &self,
        s: &Map<String, Value>,
        items: &'v [Value],
        path: &str,
        errors: &mut Vec<String>,
        depth: usize,
        budget: &Budget,
        seen: &mut Seen<'v>,
    ) {
        let at = if path.is_empty() { self.whole.to_string() } else { format!("`{path}`") };
        let n = items.len() as u64;
        if let Some(m) = count(s, "minItems").filter(|m| n < *m) {
            errors.push(format!("{at}: needs at least {m} items"));
        }
        if let Some(m) = count(s, "maxItems").filter(|m| n > *m) {
            errors.push(format!("{at}: allows at most {m} items"));
        }
        if s.get("uniqueItems") == Some(&Value::Bool(true)) {
            // Hashing a canonical text is linear (comparing each pair was quadratic); a step per value.
            let mut texts = Names::new();
            for item in items {
                let mut text = String::new();
                canonical(item, &mut text, budget);
                if texts.insert(text, String::new()).is_some() {
                    errors.push(format!("{at}: items must be unique"));
                    break;
                }
            }
        }
        let prefix = s.get("prefixItems").or_else(|| s.get("items").filter(|i| i.is_array()));
        let prefix_len = prefix.and_then(Value::as_array).map_or(0, |p| p.len());
        if let Some(Value::Array(p)) = prefix {
            for (i, (sub, item)) in p.iter().zip(items).enumerate() {
                let _ = self.walk(sub, item, &join(path, &i.to_string()), errors, depth + 1, budget);
            }
            seen.items = seen.items.max(prefix_len.min(items.len()));
        }
        let rest =
            s.get("items").filter(|i| !i.is_array()).or_else(|| s.get("additionalItems").filter(|_| prefix.is_some()));
        if let Some(sub) = rest {
            for (i, item) in items.iter().enumerate().skip(prefix_len) {
                self.rest(sub, item, &join(path, &i.to_string()), "item", errors, depth, budget);
            }
            seen.items = items.len();
        }
        if let Some(sub) = s.get("contains") {
            let mut matching = 0;
            for (i, item) in items.iter().enumerate() {
                let mut e = Vec::new();
                let _ = self.walk(sub, item, &join(path, &i.to_string()), &mut e, depth + 1, budget);
                if e.is_empty() {
                    matching += 1;
                    if self.track {
                        seen.indexes.push(i);
                    }
                }
            }
            let min = count(s, "minContains").unwrap_or(1);
            if matching < min {
                errors.push(format!("{at}: needs at least {min} items matching `contains` (has {matching})"));
            }
            if let Some(max) = count(s, "maxContains").filter(|m| matching > *m) {
                errors.push(format!("{at}: allows at most {max} items matching `contains` (has {matching})"));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_object<'v>(
        &self,
        s: &Map<String, Value>,
        obj: &'v Map<String, Value>,
        path: &str,
        errors: &mut Vec<String>,
        depth: usize,
        budget: &Budget,
        seen: &mut Seen<'v>,
    ) {
        if let Some(Value::Array(required)) = s.get("required") {
            for name in required {
                let Some(name) = name.as_str() else { continue };
                if !obj.contains_key(name) {
                    errors.push(format!("`{}`: is required", join(path, name)));
                }
            }
        }
        let n = obj.len() as u64;
        if let Some(m) = count(s, "minProperties").filter(|m| n < *m) {
            errors.push(format!("`{path}`: needs at least {m} properties"));
        }
        if let Some(m) = count(s, "maxProperties").filter(|m| n > *m) {
            errors.push(format!("`{path}`: allows at most {m} properties"));
        }
        let props = s.get("properties").and_then(Value::as_object);
        let pattern_props = s.get("patternProperties").and_then(Value::as_object);
        let names = s.get("propertyNames");
        for (key, value) in obj {
            let mut known = false;
            if let Some(sub) = props.and_then(|p| p.get(key)) {
                known = true;
                let _ = self.walk(sub, value, &join(path, key), errors, depth + 1, budget);
            }
            for (pat, sub) in pattern_props.unwrap_or(empty_object()) {
                if self.pattern(pat).is_some_and(|re| re.is_match(key)) {
                    known = true;
                    let _ = self.walk(sub, value, &join(path, key), errors, depth + 1, budget);
                }
            }
            if !known {
                if let Some(sub) = s.get("additionalProperties") {
                    known = true;
                    self.rest(sub, value, &join(path, key), self.member(), errors, depth, budget);
                }
            }
            if known && self.track {
                seen.props.push(key);
            }
            if let Some(sub) = names {
                let mut e = Vec::new();
                let _ = self.walk(sub, &Value::String(key.clone()), &join(path, key), &mut e, depth + 1, budget);
                if let Some(first) = e.first() {
                    errors.push(format!("`{}`: the name is not allowed ({first})", join(path, key)));
                }
            }
        }
    }
}

/// What a schema evaluated of an object or an array (its annotations, for `unevaluatedProperties` and
/// `unevaluatedItems`): collected only when the schema uses those ([`Validator::track`]).
/// Lists, not sets: this is built at every step, and an empty `Vec` costs nothing.
#[derive(Default)]
struct Seen<'v> {
    props: Vec<&'v str>,
    /// Items `0..items` were evaluated (by `prefixItems`, `items`, `unevaluatedItems`)...
    items: usize,
    /// ...and these, by `contains`.
    indexes: Vec<usize>,
}

impl<'v> Seen<'v> {
    /// Adds what a subschema evaluated, a step per member: merging is work that `$ref`s can multiply too.
    fn merge(&mut self, other: Seen<'v>, budget: &Budget) {
        for _ in 0..other.props.len() + other.indexes.len() {
            if !budget.spend() {
                return;
            }
        }
        self.props.extend(other.props);
        self.indexes.extend(other.indexes);
        self.items = self.items.max(other.items);
    }
}

/// A count keyword's value (`minLength`, `maxItems`...): a non-negative integer, `2.0` included.
fn count(s: &Map<String, Value>, key: &str) -> Option<u64> {
    let v = s.get(key)?;
    v.as_u64().or_else(|| v.as_f64().filter(|f| *f >= 0.0 && f.fract() == 0.0).map(|f| f as u64))
}

/// A JSON number as an integer, when it is one exactly (`1.0` included).
fn whole(n: &serde_json::Number) -> Option<i128> {
    n.as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from))
        .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 1e38).map(|f| f as i128))
}

/// JSON equality as JSON Schema has it (`enum`, `const`, `uniqueItems`): `1` equals `1.0`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (whole(x), whole(y)) {
            (Some(x), Some(y)) => x == y,
            (None, None) => x.as_f64() == y.as_f64(),
            _ => false,
        },
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// A text that two values share exactly when they are [`json_eq`]: keys sorted, whole numbers as integers.
fn canonical(v: &Value, out: &mut String, budget: &Budget) {
    if !budget.spend() {
        return;
    }
    match v {
        Value::Number(n) => match whole(n) {
            Some(i) => out.push_str(&i.to_string()),
            None => out.push_str(&n.to_string()),
        },
        Value::Array(items) => {
            out.push('[');
            for item in items {
                canonical(item, out, budget);
                out.push(',');
            }
            out.push(']');
        }
        Value::Object(members) => {
            let mut keys: Vec<&String> = members.keys().collect();
            crate::sort::sort(&mut keys);
            out.push('{');
            for k in keys {
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&members[k], out, budget);
                out.push(',');
            }
            out.push('}');
        }
        _ => out.push_str(&v.to_string()),
    }
}

fn check_number(s: &Map<String, Value>, n: &serde_json::Number, at: &str, errors: &mut Vec<String>) {
    let f = n.as_f64().unwrap_or(0.0);
    let num = |k: &str| s.get(k).and_then(Value::as_f64);
    if let Some(m) = num("minimum") {
        let exclusive = s.get("exclusiveMinimum") == Some(&Value::Bool(true));
        if f < m || (exclusive && f == m) {
            errors.push(format!("{at}: must be {} {m}", if exclusive { ">" } else { ">=" }));
        }
    }
    if let Some(m) = num("maximum") {
        let exclusive = s.get("exclusiveMaximum") == Some(&Value::Bool(true));
        if f > m || (exclusive && f == m) {
            errors.push(format!("{at}: must be {} {m}", if exclusive { "<" } else { "<=" }));
        }
    }
    // Draft 2020-12 spelling: the exclusive bound is a number (draft-4 booleans were handled above).
    if let Some(m) = num("exclusiveMinimum").filter(|m| f <= *m) {
        errors.push(format!("{at}: must be > {m}"));
    }
    if let Some(m) = num("exclusiveMaximum").filter(|m| f >= *m) {
        errors.push(format!("{at}: must be < {m}"));
    }
    if let Some(m) = s.get("multipleOf").and_then(Value::as_number) {
        let multiple = match (whole(n), whole(m)) {
            (Some(i), Some(d)) if d != 0 => i % d == 0,
            _ => {
                let m = m.as_f64().unwrap_or(1.0);
                let q = f / m;
                if q.is_finite() {
                    (q - q.round()).abs() <= 1e-9
                } else {
                    // The quotient overflowed (1e308 / 0.5): a whole number is a multiple of 1/k.
                    f.fract() == 0.0 && (1.0 / m).fract() == 0.0
                }
            }
        };
        if !multiple {
            errors.push(format!("{at}: must be a multiple of {m}"));
        }
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}/{key}")
    }
}

/// Resolves a local `$ref` (`#`, `#/$defs/x`, `#/definitions/x`, any JSON pointer into the root).
pub(crate) fn resolve_ref<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    if pointer.is_empty() {
        return Some(root);
    }
    let decoded = percent_encoding::percent_decode_str(pointer).decode_utf8().ok()?;
    root.pointer(&decoded)
}

/// Maps of names (`$id`s, texts seen): one map type for all, as each type instantiated costs module size.
type Names = HashMap<String, String>;

/// The base URI of a schema without an `$id`: relative `$ref`s resolve against it to nothing in the schema.
const NO_BASE: &str = "https://mcp-gateway.invalid/schema";

/// What the validator refuses at load, said with "is not supported" (the README documents each).
const UNSUPPORTED: &[&str] = &["$recursiveRef"];

/// The configure-time pass over a schema: checks keyword types, compiles patterns, collects `$id`s and
/// anchors, then resolves every `$ref` against the `$id`s in scope.
struct Loader {
    patterns: HashMap<String, Regex>,
    /// Schema resources (`$id`s, resolved) and anchors (`uri#name`) to the JSON pointer of their schema.
    ids: Names,
    /// `$ref`s and `$dynamicRef`s met: (address of the value, base URI, where, the reference).
    pending: Vec<(usize, String, String, String)>,
    /// Schema objects checked, by address, so that a `$ref` into a place the walk did not reach (a
    /// pointer into an unknown keyword) still gets its target checked, once; to the base URI of those
    /// with an `$id` (else empty).
    visited: HashMap<usize, String>,
    refs: HashMap<usize, String>,
    track: bool,
    dependencies: bool,
    /// Whether a `$dynamicRef` is used.
    dynamic: bool,
}

impl Loader {
    /// `defs`: the server's shared definitions, where a `#/$defs/NAME` the schema does not hold leads.
    fn load(root: &Value, defs: Option<&SchemaDefs>) -> Result<Loader, String> {
        let mut l = Loader {
            patterns: HashMap::new(),
            ids: HashMap::new(),
            pending: Vec::new(),
            visited: Default::default(),
            refs: HashMap::new(),
            track: false,
            dependencies: false,
            dynamic: false,
        };
        l.ids.insert(NO_BASE.into(), String::new());
        l.check(root, NO_BASE, String::new(), 0)?;
        while let Some((addr, base, at, r)) = l.pending.pop() {
            let (uri, fragment) = r.split_once('#').unwrap_or((&r, ""));
            let absolute = if uri.is_empty() { base.clone() } else { join_uri(&base, uri) };
            let Some(resource) = l.ids.get(&absolute).cloned() else {
                return Err(format!(
                    "{at}: '{r}' is not supported: it is outside the schema (only references within it, to `#` \
                     pointers, `$id`s and `$anchor`s, are followed)"
                ));
            };
            let fragment = percent_encoding::percent_decode_str(fragment).decode_utf8().map_err(|e| e.to_string())?;
            let target = if fragment.is_empty() || fragment.starts_with('/') {
                Some(format!("{resource}{fragment}")).filter(|p| root.pointer(p).is_some())
            } else {
                l.ids.get(&format!("{absolute}#{fragment}")).cloned()
            };
            let shared =
                defs.filter(|d| target.is_none() && absolute == NO_BASE && d.root.pointer(&fragment).is_some());
            if shared.is_some() && def_name(&fragment).is_some() {
                l.refs.insert(addr, format!("{SHARED}#{fragment}"));
                continue;
            }
            let target = target.ok_or(format!("{at}: cannot resolve '{r}'"))?;
            let schema = root.pointer(&target).unwrap_or(&Value::Null);
            if !l.visited.contains_key(&(schema as *const Value as usize)) {
                l.check(schema, &absolute, target.clone(), 0)?;
            }
            // The resource entered is the innermost one holding the target, whatever the reference said.
            let (mut resource, mut up) = (absolute, target.as_str());
            loop {
                let schema = root.pointer(up).and_then(|t| l.visited.get(&(t as *const Value as usize)));
                if let Some(base) = schema.filter(|b| !b.is_empty()) {
                    resource = base.clone();
                    break;
                }
                let Some(i) = up.rfind('/') else { break };
                up = &up[..i];
            }
            l.refs.insert(addr, format!("{resource}#{target}"));
        }
        Ok(l)
    }

    /// Checks one schema object and, through every keyword that holds subschemas, those below it.
    fn check(&mut self, s: &Value, base: &str, pointer: String, depth: usize) -> Result<(), String> {
        let at = format!("#{pointer}");
        if depth > MAX_DEPTH {
            return Err(format!("{at}: schema nesting too deep"));
        }
        let obj = match s {
            Value::Bool(_) => return Ok(()),
            Value::Object(o) => o,
            _ => return Err(format!("{at}: a schema must be an object or a boolean")),
        };
        let address = s as *const Value as usize;
        self.visited.insert(address, String::new());
        let mut base = base.to_string();
        if let Some(id) = obj.get("$id") {
            let id = id.as_str().ok_or(format!("{at}/$id: must be a string"))?;
            match id.strip_prefix('#') {
                // Draft-07's anchors were written as `$id`s.
                Some(anchor) if !anchor.is_empty() => {
                    self.ids.insert(format!("{base}#{anchor}"), pointer.clone());
                }
                _ => {
                    base = join_uri(&base, id.trim_end_matches('#'));
                    self.ids.insert(base.clone(), pointer.clone());
                    self.visited.insert(address, base.clone());
                }
            }
        }
        for key in ["$anchor", "$dynamicAnchor"] {
            if let Some(anchor) = obj.get(key) {
                let anchor = anchor.as_str().ok_or(format!("{at}/{key}: must be a string"))?;
                self.ids.insert(format!("{base}#{anchor}"), pointer.clone());
            }
        }
        for key in UNSUPPORTED {
            if obj.contains_key(*key) {
                return Err(format!("{at}/{key}: `{key}` is not supported"));
            }
        }
        for key in ["$ref", "$dynamicRef"] {
            if let Some(r) = obj.get(key) {
                let text = r.as_str().ok_or(format!("{at}/{key}: must be a string"))?;
                self.pending.push((r as *const Value as usize, base.clone(), format!("{at}/{key}"), text.into()));
                self.dynamic |= key == "$dynamicRef";
            }
        }
        self.track |= obj.contains_key("unevaluatedProperties") || obj.contains_key("unevaluatedItems");
        self.dependencies |=
            ["dependentRequired", "dependentSchemas", "dependencies"].iter().any(|k| obj.contains_key(*k));
        if let Some(t) = obj.get("type") {
            let ok = match t {
                Value::String(s) => is_type_name(s),
                Value::Array(a) => a.iter().all(|x| x.as_str().is_some_and(is_type_name)),
                _ => false,
            };
            if !ok {
                return Err(format!("{at}/type: unknown type {t}"));
            }
        }
        if obj.get("enum").is_some_and(|e| !e.is_array()) {
            return Err(format!("{at}/enum: must be a list"));
        }
        let names = |v: &Value| v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
        if obj.get("required").is_some_and(|r| !names(r)) {
            return Err(format!("{at}/required: must be a list of names"));
        }
        if let Some(d) = obj.get("dependentRequired") {
            if !d.as_object().is_some_and(|m| m.values().all(names)) {
                return Err(format!("{at}/dependentRequired: must map names to lists of names"));
            }
        }
        // A keyword whose value is of the wrong type would otherwise be skipped silently.
        for key in [
            "minLength",
            "maxLength",
            "minItems",
            "maxItems",
            "minProperties",
            "maxProperties",
            "minContains",
            "maxContains",
        ] {
            if obj.contains_key(key) && count(obj, key).is_none() {
                return Err(format!("{at}/{key}: must be a non-negative integer"));
            }
        }
        for key in ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"] {
            match obj.get(key) {
                None | Some(Value::Number(_)) => {}
                Some(Value::Bool(_)) if key.starts_with("exclusive") => {}
                Some(_) => return Err(format!("{at}/{key}: must be a number")),
            }
        }
        if obj.get("multipleOf").and_then(Value::as_f64).is_some_and(|m| m <= 0.0) {
            return Err(format!("{at}/multipleOf: must be greater than 0"));
        }
        if let Some(p) = obj.get("pattern") {
            self.compile(p.as_str().ok_or(format!("{at}/pattern: must be a string"))?, &at)?;
        }
        if let Some(Value::Object(pp)) = obj.get("patternProperties") {
            for k in pp.keys() {
                self.compile(k, &at)?;
            }
        }
        let escape = |k: &str| k.replace('~', "~0").replace('/', "~1");
        for key in ["properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "dependencies"] {
            match obj.get(key) {
                None => {}
                Some(Value::Object(m)) => {
                    for (k, sub) in m {
                        if key == "dependencies" && sub.is_array() {
                            if !names(sub) {
                                return Err(format!("{at}/dependencies/{k}: must be a list of names or a schema"));
                            }
                            continue;
                        }
                        self.check(sub, &base, format!("{pointer}/{key}/{}", escape(k)), depth + 1)?;
                    }
                }
                Some(_) => return Err(format!("{at}/{key}: must be an object")),
            }
        }
        for key in [
            "items",
            "additionalProperties",
            "additionalItems",
            "not",
            "if",
            "then",
            "else",
            "contains",
            "propertyNames",
            "unevaluatedProperties",
            "unevaluatedItems",
        ] {
            match obj.get(key) {
                Some(Value::Array(a)) if key == "items" => {
                    for (i, sub) in a.iter().enumerate() {
                        self.check(sub, &base, format!("{pointer}/items/{i}"), depth + 1)?;
                    }
                }
                Some(sub) => self.check(sub, &base, format!("{pointer}/{key}"), depth + 1)?,
                None => {}
            }
        }
        for key in ["allOf", "anyOf", "oneOf", "prefixItems"] {
            match obj.get(key) {
                None => {}
                Some(Value::Array(a)) => {
                    for (i, sub) in a.iter().enumerate() {
                        self.check(sub, &base, format!("{pointer}/{key}/{i}"), depth + 1)?;
                    }
                }
                Some(_) => return Err(format!("{at}/{key}: must be a list")),
            }
        }
        Ok(())
    }

    /// Compiles a pattern with `regex-lite`, whose `\s` is ASCII only: ECMA-262's (JSON Schema's) is
    /// written out, and `\cX` is the control character. What `regex-lite` lacks (`\p{..}` classes) is refused,
    /// said as not supported.
    fn compile(&mut self, p: &str, at: &str) -> Result<(), String> {
        if !self.patterns.contains_key(p) {
            const SPACE: &str = "\\t\\n\\x0B\\x0C\\r \\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}]";
            let mut ecma = String::with_capacity(p.len());
            let mut chars = p.chars();
            while let Some(c) = chars.next() {
                match (c == '\\').then(|| chars.next()).flatten() {
                    Some('s') => ecma.extend(["[", SPACE]),
                    Some('S') => ecma.extend(["[^", SPACE]),
                    // A control character: `\cJ` is `\n`.
                    Some('c') => match chars.next() {
                        Some(l) if l.is_ascii_alphabetic() => ecma.push(char::from(l as u8 % 32)),
                        _ => ecma.push_str("\\c"),
                    },
                    Some(next) => ecma.extend([c, next]),
                    None => ecma.push(c),
                }
            }
            let re = Regex::new(&ecma).map_err(|e| match e.to_string() {
                e if e.contains("not supported") => format!("{at}: pattern '{p}' is not supported ({e})"),
                e => format!("{at}: invalid pattern: {e}"),
            })?;
            self.patterns.insert(p.to_string(), re);
        }
        Ok(())
    }
}

/// Resolves a URI reference against a base URI (RFC 3986, section 5.2; enough for `$id` and `$ref`).
fn join_uri(base: &str, reference: &str) -> String {
    let scheme = |s: &str| s.find(':').filter(|&i| i > 0 && !s[..i].contains(['/', '?', '#']));
    let base = base.split('#').next().unwrap_or_default();
    if scheme(reference).is_some() {
        return reference.to_string();
    }
    let Some(colon) = scheme(base) else { return reference.to_string() };
    if reference.is_empty() {
        return base.to_string();
    }
    if let Some(rest) = reference.strip_prefix("//") {
        return format!("{}//{rest}", &base[..=colon]);
    }
    let after = &base[colon + 1..];
    let (authority, path) = match after.strip_prefix("//") {
        Some(a) => {
            let end = a.find('/').unwrap_or(a.len());
            (&base[..colon + 3 + end], &a[end..])
        }
        None => (&base[..=colon], after),
    };
    let merged = match (reference.starts_with('/'), path.rfind('/')) {
        (true, _) | (false, None) => reference.to_string(),
        (false, Some(i)) => format!("{}{reference}", &path[..=i]),
    };
    let segments: Vec<&str> = merged.split('/').collect();
    let mut out: Vec<&str> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | ".." => {
                if *segment == ".." && out.len() > 1 {
                    out.pop();
                }
                if i == segments.len() - 1 {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("{authority}{}", out.join("/"))
}

fn is_type_name(s: &str) -> bool {
    matches!(s, "string" | "number" | "integer" | "boolean" | "array" | "object" | "null")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_file_schema_is_the_object_it_always_was() {
        let expected = json!({"type": "object", "required": ["content"], "properties": {
            "content": {"type": "string", "contentEncoding": "base64", "description": "The file's bytes, base64"},
            "filename": {"type": "string"},
            "contentType": {"type": "string", "description": "The file's media type"}}});
        assert_eq!(file_schema().to_string(), expected.to_string());
    }

    fn v(schema: Value) -> Validator {
        Validator::new(schema).unwrap()
    }

    #[test]
    fn exponential_schemas_are_cut_off() {
        // `$ref`s in combinators made one check walk 2^64 nodes under the depth limit: a tools/call (or the
        // check of an answer against an outputSchema) held its worker for good.
        // The step counts in the messages are the bound (not the time taken, which a loaded machine stretches).
        let cyclic = json!({"type": "object", "anyOf": [{"$ref": "#"}, {"$ref": "#"}], "properties": {"a": {"type": "integer"}}});
        let errors = v(cyclic.clone()).validate(&json!({"a": 1}));
        assert_eq!(
            errors,
            ["arguments: the schema is too complex to check (it takes more than 1048584 steps); the operator must \
              simplify it"]
        );
        let answer = Validator::for_answer(cyclic.clone()).unwrap().validate(&json!({}));
        assert!(answer[0].starts_with("the answer: the schema is too complex"), "{answer:?}");
        let small = v(cyclic).with_max_steps(1000);
        let mut args = json!({"a": 1.0});
        assert!(small.normalize_integers(&mut args).unwrap_err().contains("more than 1008 steps"));
        assert!(small.undeclared(args.as_object().unwrap()).unwrap_err().contains("too complex"));
        // A chain of definitions, each using the next twice: no cycle, and still 2^40 nodes to walk.
        let defs: Map<String, Value> = (0..40)
            .map(|i| {
                let next = json!({"$ref": format!("#/$defs/d{}", i + 1)});
                (format!("d{i}"), json!({"anyOf": [next, next]}))
            })
            .chain([("d40".to_string(), json!({"type": "integer"}))])
            .collect();
        let chain = v(json!({"$defs": defs, "$ref": "#/$defs/d0"})).with_max_steps(1000);
        assert!(chain.validate(&json!(1))[0].contains("too complex to check (it takes more than 1004 steps)"));
        // Ordinary recursion follows the instance and is unaffected.
        let tree = v(json!({"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#"}}}}));
        assert!(tree.validate(&json!({"kids": [{"kids": []}, {"kids": [{}]}]})).is_empty());
        // So is the largest plain request: 1 MiB of `0,` is 2^19 values.
        let list = v(json!({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"}}}}));
        let mut big = json!({"a": vec![0; 1 << 19]});
        assert!(list.normalize_integers(&mut big).is_ok());
        assert!(list.undeclared(big.as_object().unwrap()).unwrap().is_empty());
        assert!(list.validate(&big).is_empty());
    }

    fn arg_configs(v: Value) -> Vec<ArgConfig> {
        v.as_array().unwrap().iter().map(|a| ArgConfig::read(a, "").unwrap()).collect()
    }

    #[test]
    fn builds_schema_from_args() {
        let args = arg_configs(json!([
            {"name": "city", "type": "string", "required": true, "description": "City"},
            {"name": "days", "type": "integer", "default": 1},
            {"name": "units", "enum": ["metric", "imperial"]}
        ]));
        let s = from_args(&args).unwrap();
        assert_eq!(s["required"], json!(["city"]));
        assert_eq!(s["properties"]["days"]["default"], json!(1));
        assert_eq!(s["properties"]["units"]["type"], json!("string"));
        let bad = arg_configs(json!([{"name": "x", "type": "date"}]));
        assert!(from_args(&bad).is_err());
    }

    #[test]
    fn coerces_and_applies_defaults() {
        let s = json!({"type":"object","properties":{
            "n":{"type":"integer"},"f":{"type":"number"},"b":{"type":"boolean"},"s":{"type":"string"},
            "a":{"type":"array","items":{"type":"integer"}},"d":{"type":"string","default":"x"}}});
        let mut args = json!({"n":"5","f":"2.5","b":"true","s":12,"a":["1",2]}).as_object().unwrap().clone();
        coerce_and_default(&s, &mut args);
        assert_eq!(Value::Object(args), json!({"n":5,"f":2.5,"b":true,"s":"12","a":[1,2],"d":"x"}));
        let mut bad = json!({"n":"five"}).as_object().unwrap().clone();
        coerce_and_default(&s, &mut bad);
        assert_eq!(bad["n"], json!("five"), "uncoercible values stay for validation to report");
    }

    #[test]
    fn integers_are_exact_and_normalised() {
        let s = v(json!({"type":"object","properties":{
            "i":{"type":"integer"},"a":{"type":"array","items":{"$ref":"#/$defs/int"}},
            "o":{"type":"object","properties":{"w":{"type":["integer","null"]}},"additionalProperties":{"type":"integer"}},
            "u":{"anyOf":[{"type":"string"},{"type":"integer"}]},"f":{"type":"number"}},
            "$defs":{"int":{"type":"integer"}}}));
        let mut args: Value =
            serde_json::from_str(r#"{"i":1.0,"a":[2.0,3],"o":{"w":4.0,"x":5e0},"u":6.0,"f":7.0}"#).unwrap();
        s.normalize_integers(&mut args).unwrap();
        assert_eq!(args.to_string(), r#"{"i":1,"a":[2,3],"o":{"w":4,"x":5},"u":6,"f":7.0}"#);
        assert!(s.validate(&args).is_empty());
        let mut big: Value = serde_json::from_str(r#"{"i":18446744073709551616,"a":[9007199254740993.0]}"#).unwrap();
        s.normalize_integers(&mut big).unwrap();
        let errors = s.validate(&big).join("\n");
        assert!(
            errors.contains("`i`: integer out of range") && errors.contains("`a/0`: integer out of range"),
            "{errors}"
        );
        assert!(s.validate(&json!({"i": u64::MAX, "a": [i64::MIN]})).is_empty());
        // Answers are only checked, as JSON Schema says: a whole number is an integer.
        let answer = Validator::for_answer(json!({"type":"object","properties":{"n":{"type":"integer"}}})).unwrap();
        assert!(answer.validate(&serde_json::from_str(r#"{"n": 1e300}"#).unwrap()).is_empty());
        let mut m = json!({"n":"1e2","m":"18446744073709551615","k":"1e300"}).as_object().unwrap().clone();
        let ints = json!({"properties":{"n":{"type":"integer"},"m":{"type":"integer"},"k":{"type":"integer"}}});
        coerce_and_default(&ints, &mut m);
        assert_eq!(Value::Object(m), json!({"n":100,"m":u64::MAX,"k":"1e300"}));
    }

    #[test]
    fn schemas_built_from_args_are_precompiled_as_flat() {
        let args = arg_configs(json!([
            {"name": "city", "type": "string", "required": true},
            {"name": "units", "type": "string", "enum": ["metric", "imperial"], "default": "metric"},
            {"name": "n", "type": "integer"}
        ]));
        let val = v(from_args(&args).unwrap());
        assert!(val.flat.is_some());
        assert!(val.validate(&json!({"city": "Paris", "units": "metric", "n": 2.0})).is_empty());
        assert_eq!(val.validate(&json!({"units": "kelvin"})).len(), 2, "the general walk says what is wrong");
        let mut args = json!({"city": "Paris", "n": 2.0});
        val.normalize_integers(&mut args).unwrap();
        assert_eq!(args.to_string(), r#"{"city":"Paris","n":2}"#);
        // An array argument's `items` is not flat: the general walk checks it.
        let nested = arg_configs(json!([{"name": "tags", "type": "array", "items": {"type": "string"}}]));
        assert!(v(from_args(&nested).unwrap()).flat.is_none());
    }

    #[test]
    fn undeclared_arguments() {
        let args = |v: Value| v.as_object().unwrap().clone();
        let s = v(json!({"type":"object","properties":{"a":{}},"patternProperties":{"^x":{}},
            "$ref":"#/$defs/more","oneOf":[{"properties":{"b":{}}},{"properties":{"c":{}}}],"$defs":{"more":{"properties":{"d":{}}}}}));
        assert_eq!(s.undeclared(&args(json!({"a":1,"b":1,"c":1,"d":1,"xy":1,"e":1,"f":1}))).unwrap(), ["e", "f"]);
        assert_eq!(s.declared_names(), ["a", "d", "b", "c"]);
        for open in [
            json!({"additionalProperties": true}),
            json!({"additionalProperties": {}}),
            json!({"unevaluatedProperties": true}),
            json!({"allOf": [{"additionalProperties": true}]}),
        ] {
            let mut schema = json!({"type":"object","properties":{"a":{}}});
            schema.as_object_mut().unwrap().extend(open.as_object().unwrap().clone());
            assert!(v(schema.clone()).undeclared(&args(json!({"e":1}))).unwrap().is_empty(), "{schema}");
        }
        let closed = v(json!({"type":"object","properties":{"a":{}},"additionalProperties":false}));
        assert_eq!(closed.undeclared(&args(json!({"e":1}))).unwrap(), ["e"]);
        let built = arg_configs(json!([{"name": "a"}]));
        assert_eq!(from_args(&built).unwrap()["additionalProperties"], json!(false));
    }

    #[test]
    fn validates_common_keywords() {
        let s = v(json!({"type":"object","required":["city"],"additionalProperties":false,"properties":{
            "city":{"type":"string","minLength":2,"pattern":"^[A-Za-z ]+$"},
            "days":{"type":"integer","minimum":1,"maximum":7},
            "units":{"enum":["metric","imperial"]},
            "tags":{"type":"array","items":{"type":"string"},"maxItems":2,"uniqueItems":true}}}));
        assert!(s.validate(&json!({"city":"Paris","days":3,"tags":["a"]})).is_empty());
        let errs = s.validate(&json!({"days":9,"units":"kelvin","tags":["a","a",1],"extra":1}));
        let text = errs.join("\n");
        for needle in [
            "`city`: is required",
            "`days`: must be <= 7",
            "`units`: must be one of",
            "`tags`: allows at most 2",
            "`tags`: items must be unique",
            "`tags/2`: expected string",
            "`extra`: is not an accepted argument",
        ] {
            assert!(text.contains(needle), "missing {needle} in {text}");
        }
        assert!(!s.validate(&json!({"city":"P4ris"})).is_empty());
    }

    #[test]
    fn follows_refs_and_combinators() {
        let s = v(json!({"$defs":{"pos":{"type":"integer","exclusiveMinimum":0}},
            "type":"object","properties":{"n":{"$ref":"#/$defs/pos"},
            "x":{"oneOf":[{"type":"string"},{"type":"integer"}]},"y":{"anyOf":[{"type":"null"},{"type":"boolean"}]},
            "z":{"allOf":[{"minimum":1},{"maximum":3}]},"w":{"not":{"type":"string"}}}}));
        assert!(s.validate(&json!({"n":1,"x":"a","y":null,"z":2,"w":1})).is_empty());
        assert_eq!(s.validate(&json!({"n":0,"x":[],"y":1,"z":5,"w":"s"})).len(), 5);
    }

    #[test]
    fn recursive_refs_terminate() {
        let s = v(
            json!({"$defs":{"node":{"type":"object","properties":{"next":{"$ref":"#/$defs/node"}}}},"$ref":"#/$defs/node"}),
        );
        let mut deep = json!({});
        for _ in 0..200 {
            deep = json!({"next": deep});
        }
        assert!(!s.validate(&deep).is_empty(), "depth limit reports instead of recursing forever");
        assert!(s.validate(&json!({"next":{"next":{}}})).is_empty());
    }

    #[test]
    fn enforces_array_object_and_dependency_keywords() {
        let s = v(json!({"type":"object","properties":{
            "a":{"contains":{"type":"integer"},"minContains":2,"maxContains":3},
            "o":{"propertyNames":{"pattern":"^[a-z]+$"},"dependentRequired":{"card":["cvv"]},
                 "dependentSchemas":{"x":{"required":["y"]}},"dependencies":{"p":["q"],"r":{"maxProperties":1}}},
            "e":{"enum":[1,[2]]},"c":{"const":{"n":0}},"u":{"uniqueItems":true}}}));
        assert!(s
            .validate(&json!({"a":[1,"s",2],"o":{"card":1,"cvv":2},"e":1.0,"c":{"n":0.0},"u":[1,"1"]}))
            .is_empty());
        let text = s
            .validate(&json!({"a":["s",1],"o":{"Bad":1,"card":1,"x":1,"p":1,"r":1},"e":[2.5],"c":{"n":1},"u":[1,1.0]}))
            .join("\n");
        for needle in [
            "`a`: needs at least 2 items matching `contains` (has 1)",
            "`o/Bad`: the name is not allowed",
            "`o/cvv`: is required when `o/card` is given",
            "`o/y`: is required",
            "`o/q`: is required when `o/p` is given",
            "`o`: allows at most 1 properties",
            "`e`: must be one of",
            "`c`: must be",
            "`u`: items must be unique",
        ] {
            assert!(text.contains(needle), "missing {needle} in {text}");
        }
        assert!(s.validate(&json!({"a":[1,2,3,4]}))[0].contains("allows at most 3 items matching"));
        // Counts written as decimals still count.
        assert!(!v(json!({"maxLength": 2.0})).validate(&json!("abc")).is_empty());
    }

    #[test]
    fn unevaluated_members_see_what_every_applicator_evaluated() {
        let s = v(json!({"type":"object","properties":{"a":{}},"allOf":[{"properties":{"b":{}}}],
            "anyOf":[{"properties":{"c":{"type":"string"}}},{"required":["d"],"properties":{"d":{}}}],
            "if":{"required":["t"],"properties":{"t":{}}},"then":{"properties":{"then":{}}},
            "$ref":"#/$defs/r","$defs":{"r":{"patternProperties":{"^x-":{}}}},"unevaluatedProperties":false}));
        assert!(s.validate(&json!({"a":1,"b":1,"c":"s","d":1,"t":1,"then":1,"x-y":1})).is_empty());
        // `c` fails its branch, whose annotations then do not count; `then` only counts when `if` holds.
        let errors = s.validate(&json!({"c":1,"d":1,"then":1,"e":1})).join("\n");
        for needle in ["`c`: is not an accepted argument", "`then`: is not an accepted argument", "`e`: is not"] {
            assert!(errors.contains(needle), "missing {needle} in {errors}");
        }
        // A $ref'd schema does not see what its neighbours evaluated.
        let scoped = v(
            json!({"properties":{"a":{}},"$ref":"#/$defs/closed","$defs":{"closed":{"unevaluatedProperties":false}}}),
        );
        assert!(!scoped.validate(&json!({"a":1})).is_empty());
        let items = v(
            json!({"prefixItems":[{"type":"integer"}],"contains":{"type":"string"},"unevaluatedItems":{"type":"boolean"}}),
        );
        assert!(items.validate(&json!([1, "s", true, "t"])).is_empty());
        assert_eq!(items.validate(&json!([1, "s", null])), ["`2`: expected boolean, got null"]);
        // Nested: the inner schema's annotations reach the outer one only through applicators.
        let nested = v(json!({"properties":{"o":{"properties":{"a":{}},"unevaluatedProperties":false}}}));
        assert_eq!(nested.validate(&json!({"o":{"a":1,"b":2}})), ["`o/b`: is not an accepted argument"]);
    }

    #[test]
    fn dynamic_refs_follow_the_dynamic_scope() {
        // A generic list whose items an extending schema chooses, as the spec's example has it.
        let s = v(json!({"$id":"https://example.com/strings","$ref":"list","$defs":{
            "item":{"$dynamicAnchor":"item","type":"string"},
            "list":{"$id":"list","type":"array","items":{"$dynamicRef":"#item"},
                "$defs":{"item":{"$dynamicAnchor":"item"}}}}}));
        assert!(s.validate(&json!(["a", "b"])).is_empty());
        assert_eq!(s.validate(&json!(["a", 1])), ["`1`: expected string, got integer"]);
        // Alone, the list takes anything.
        let list = v(json!({"$id":"https://example.com/list","type":"array","items":{"$dynamicRef":"#item"},
            "$defs":{"item":{"$dynamicAnchor":"item"}}}));
        assert!(list.validate(&json!(["a", 1])).is_empty());
    }

    #[test]
    fn resolves_ids_and_anchors() {
        let s = v(json!({"$id":"https://example.com/root.json","$defs":{
            "a":{"$anchor":"name","type":"string"},
            "b":{"$id":"nested/b.json","$defs":{"c":{"type":"integer"}},"$ref":"#/$defs/c"}},
            "properties":{"n":{"$ref":"#name"},"i":{"$ref":"nested/b.json"},"j":{"$ref":"https://example.com/nested/b.json#/$defs/c"},
            "r":{"$ref":"root.json#/$defs/a"}}}));
        assert!(s.validate(&json!({"n":"x","i":1,"j":2,"r":"y"})).is_empty());
        assert_eq!(s.validate(&json!({"n":1,"i":"x","j":"y","r":2})).len(), 4);
        // The same text under another `$id` is another schema.
        let scoped = v(json!({"$id":"http://x.test/a/","$defs":{"int":{"$id":"int","type":"integer"},
            "sub":{"$id":"sub/","$defs":{"int":{"$id":"int","type":"string"}},"$ref":"int"}},"$ref":"sub/"}));
        assert!(scoped.validate(&json!("s")).is_empty());
        assert!(!scoped.validate(&json!(1)).is_empty());
    }

    #[test]
    fn refuses_what_it_does_not_support() {
        for (schema, says) in [
            (json!({"$recursiveRef": "#"}), "`$recursiveRef` is not supported"),
            (json!({"$ref": "other.json"}), "is not supported: it is outside the schema"),
            (json!({"pattern": "\\p{L}"}), "is not supported"),
            (json!({"minLength": -1}), "minLength: must be a non-negative integer"),
            (json!({"minimum": "1"}), "minimum: must be a number"),
            (json!({"multipleOf": 0}), "multipleOf: must be greater than 0"),
            (json!({"dependentRequired": {"a": "b"}}), "dependentRequired: must map names"),
            (json!({"contains": 1}), "#/contains: a schema must be"),
            (json!({"$ref": "#nowhere"}), "cannot resolve '#nowhere'"),
        ] {
            let err = Validator::new(schema.clone()).unwrap_err();
            assert!(err.contains(says), "{schema}: {err}");
        }
        // ECMA-262's `\s` and `\cX` in patterns.
        assert!(v(json!({"pattern": "^\\s$"})).validate(&json!("\u{a0}")).is_empty());
        assert!(v(json!({"pattern": "^\\cJ$"})).validate(&json!("\n")).is_empty());
    }

    #[test]
    fn rejects_malformed_schemas() {
        assert!(Validator::new(json!({"type":"strang"})).is_err());
        assert!(Validator::new(json!({"pattern":"("})).is_err());
        assert!(Validator::new(json!({"$ref":"#/$defs/missing"})).is_err());
        assert!(Validator::new(json!({"$ref":"https://example.com/s.json"})).is_err());
        assert!(Validator::new(json!({"properties":[]})).is_err());
        assert!(Validator::new(json!(3)).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::strategies::{json_number, json_value};
    use proptest::prelude::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    const KEYS: &[&str] = &["a", "b", "x-y", "kids"];

    /// Keywords of tool schemas with values of the right type and of wrong ones.
    fn keyword() -> impl Strategy<Value = (String, Value)> {
        let any = json_value(KEYS);
        prop_oneof![
            prop::sample::select(vec!["string", "number", "integer", "boolean", "array", "object", "null", "float"])
                .prop_map(|t| ("type".to_string(), json!(t))),
            Just(("type".to_string(), json!(["integer", "string"]))),
            prop::sample::select(vec![
                "minimum",
                "maximum",
                "exclusiveMinimum",
                "exclusiveMaximum",
                "multipleOf",
                "minLength",
                "maxLength",
                "minItems",
                "maxItems",
                "minProperties",
                "maxProperties"
            ])
            .prop_flat_map(|k| prop_oneof![
                json_number(),
                Just(json!(true)),
                Just(json!(0)),
                Just(json!(-1))
            ]
            .prop_map(move |n| (k.to_string(), n))),
            prop::sample::select(vec!["^[a-z]+$", "(", "a{2,}", "\\d", "^$", "[", "é+"])
                .prop_map(|p| ("pattern".to_string(), json!(p))),
            prop::collection::vec(any.clone(), 0..3).prop_map(|e| ("enum".to_string(), Value::Array(e))),
            any.clone().prop_map(|c| ("const".to_string(), c)),
            any.clone().prop_map(|d| ("default".to_string(), d)),
            Just(("required".to_string(), json!(["a"]))),
            Just(("required".to_string(), json!([1]))),
            Just(("uniqueItems".to_string(), json!(true))),
            Just(("dependentRequired".to_string(), json!({"a": ["b"]}))),
            prop::sample::select(vec!["minContains", "maxContains"]).prop_map(|k| (k.to_string(), json!(1))),
            prop::sample::select(vec!["#d", "#/$defs/d", "x.json#d"])
                .prop_map(|r| ("$dynamicRef".to_string(), json!(r))),
            prop::sample::select(vec!["$dynamicAnchor", "$anchor"]).prop_map(|k| (k.to_string(), json!("d"))),
            prop::sample::select(vec!["https://x.test/s", "sub/", "#d", "x.json"])
                .prop_map(|i| ("$id".to_string(), json!(i))),
            prop::sample::select(vec![
                "#",
                "#d",
                "#/$defs/d",
                "#/properties/a",
                "#/nope",
                "http://x/s.json",
                "#/$defs/d%20x"
            ])
            .prop_map(|r| ("$ref".to_string(), json!(r))),
            any.prop_map(|x| ("additionalProperties".to_string(), x)),
        ]
    }

    /// Small schemas: keywords, nested through properties, items, combinators and conditionals.
    fn schema() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            1 => any::<bool>().prop_map(Value::from),
            4 => prop::collection::vec(keyword(), 0..4).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            (
                prop::collection::vec(keyword(), 0..3),
                prop::sample::select(vec![
                    "properties",
                    "patternProperties",
                    "$defs",
                    "items",
                    "prefixItems",
                    "allOf",
                    "anyOf",
                    "oneOf",
                    "not",
                    "if",
                    "then",
                    "additionalProperties",
                    "contains",
                    "propertyNames",
                    "dependentSchemas",
                    "unevaluatedProperties",
                    "unevaluatedItems",
                ]),
                prop::collection::vec(inner, 1..3),
            )
                .prop_map(|(kv, key, subs)| {
                    let mut s: Map<String, Value> = kv.into_iter().collect();
                    let nested = match key {
                        "properties" | "patternProperties" => {
                            let names = if key == "properties" { ["a", "kids"] } else { ["^x-", "b+"] };
                            Value::Object(names.iter().map(|n| n.to_string()).zip(subs).collect())
                        }
                        "$defs" => json!({"d": subs[0]}),
                        "dependentSchemas" => json!({"a": subs[0]}),
                        "prefixItems" | "allOf" | "anyOf" | "oneOf" => Value::Array(subs),
                        _ => subs[0].clone(),
                    };
                    s.insert(key.to_string(), nested);
                    Value::Object(s)
                })
        })
    }

    /// Two JSON values that are the same numbers and strings in the same shapes (`1.0` and `1` alike).
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
            (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            _ => a == b,
        }
    }

    proptest! {
        #![proptest_config(crate::strategies::cases(1000))]

        /// Guards argument coercion and validation (and the checks of upstream answers against an outputSchema)
        /// against any schema an operator writes and any value a client sends: a schema compiles or is refused;
        /// a compiled one coerces, normalises, finds undeclared names and validates any value within its step
        /// budget, never panicking; normalising never changes a number's value, and doing it twice changes
        /// nothing more.
        #[test]
        fn schemas_check_any_value_in_bounded_time(schema in schema(), value in json_value(KEYS)) {
            let Ok(validator) = Validator::new(schema.clone()) else { return Ok(()) };
            // A small budget: exponential schemas are common here, and the bound is what is tested.
            let validator = validator.with_max_steps(5_000);
            let started = Instant::now();
            let mut args = value.as_object().cloned().unwrap_or_default();
            coerce_and_default(validator.schema(), &mut args);
            let _ = validator.undeclared(&args);
            let _ = validator.declared_names();
            let mut normalized = value.clone();
            if validator.normalize_integers(&mut normalized).is_ok() {
                prop_assert!(same(&normalized, &value), "normalising changed {} to {}", value, normalized);
                let mut twice = normalized.clone();
                prop_assert!(validator.normalize_integers(&mut twice).is_ok());
                prop_assert_eq!(&twice, &normalized);
            }
            let _ = validator.validate(&normalized);
            let _ = validator.validate(&Value::Object(args));
            prop_assert!(started.elapsed() < Duration::from_secs(2), "{:?} for {}", started.elapsed(), schema);
        }

        /// The precompiled pass for flat schemas (`flat`) only shortens the general walk: for any flat schema
        /// (properties whose keywords are types, `enum`, `const`, bounds and annotations) and any value, the
        /// findings and the normalised value are the general walk's, for arguments and for answers alike.
        #[test]
        fn flat_schemas_check_as_the_general_walk_does(
            props in prop::collection::vec(prop::collection::vec(keyword(), 0..4), 1..4),
            required in prop::collection::vec(prop::sample::select(vec!["a", "b", "kids", "x-y"]), 0..3),
            closed in prop::option::of(any::<bool>()),
            value in json_value(KEYS),
        ) {
            let mut schema = json!({"type": "object"});
            schema["properties"] = KEYS.iter().zip(props)
                .map(|(k, kv)| (k.to_string(), Value::Object(kv.into_iter().collect()))).collect();
            if !required.is_empty() {
                schema["required"] = json!(required);
            }
            if let Some(c) = closed {
                schema["additionalProperties"] = json!(c);
            }
            for answer in [false, true] {
                let built = if answer { Validator::for_answer(schema.clone()) } else { Validator::new(schema.clone()) };
                let Ok(validator) = built else { return Ok(()) };
                if validator.flat.is_none() {
                    continue;
                }
                let general = Validator { flat: None, ..Validator::new(schema.clone()).unwrap() };
                let general = Validator { whole: validator.whole, ..general };
                prop_assert_eq!(validator.validate(&value), general.validate(&value), "{}", schema);
                let (mut fast, mut slow) = (value.clone(), value.clone());
                prop_assert_eq!(validator.normalize_integers(&mut fast), general.normalize_integers(&mut slow));
                prop_assert_eq!(&fast, &slow);
                prop_assert_eq!(validator.validate(&fast), general.validate(&slow), "{}", schema);
            }
        }
    }
}

/// Shared definitions (`schemaDefs`): resolved without copies, checked as the inlined form is, listed inlined.
#[cfg(test)]
mod defs_tests {
    use super::*;
    use serde_json::json;

    fn defs(d: Value) -> Arc<SchemaDefs> {
        Arc::new(SchemaDefs::compile(d.as_object().cloned().unwrap()).unwrap())
    }

    fn address() -> Value {
        json!({"type": "object", "required": ["city"], "additionalProperties": false,
               "properties": {"city": {"type": "string", "pattern": "^[A-Z]"}, "zip": {"type": "integer"},
                              "tags": {"type": "array", "items": {"type": "string"}}}})
    }

    fn person(address: Value) -> Value {
        json!({"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string", "minLength": 2}, "home": address.clone(), "others": {"type": "array", "items": address},
            "labels": {"type": "object", "patternProperties": {"^x-": {"type": "integer"}}}}})
    }

    #[test]
    fn refs_to_shared_definitions_check_as_the_inlined_schema_does() {
        let d = defs(json!({"Address": address()}));
        let shared = Validator::with_defs(person(json!({"$ref": "#/$defs/Address"})), Some(d)).unwrap();
        let inlined = Validator::new(person(address())).unwrap();
        for instance in [
            json!({"name": "Ann", "home": {"city": "Paris", "zip": 75001}}),
            json!({"name": "A", "home": {"city": "paris", "zip": "75001", "extra": 1}}),
            json!({"name": "Bob", "others": [{"city": "Oslo"}, {"zip": 1}, {"city": "Rome", "tags": [1]}]}),
            json!({"home": 3, "labels": {"x-a": 1, "x-b": "no"}}),
            json!({"name": "Ann", "home": {"city": "Paris", "zip": 1.0}}),
        ] {
            assert_eq!(shared.validate(&instance), inlined.validate(&instance), "{instance}");
            let (mut a, mut b) = (instance.clone(), instance.clone());
            shared.normalize_integers(&mut a).unwrap();
            inlined.normalize_integers(&mut b).unwrap();
            assert_eq!(a, b);
        }
        assert!(!shared.validate(&json!({"name": "A", "home": {"city": "paris"}})).is_empty());
        // Listed as if it had been inlined.
        assert_eq!(shared.listing(), person(address()));
    }

    #[test]
    fn definitions_refer_to_one_another_and_recursion_is_listed_as_defs() {
        let d = defs(json!({
            "Address": address(),
            "Person": person(json!({"$ref": "#/$defs/Address"})),
            "Node": {"type": "object", "properties": {"value": {"type": "integer"},
                     "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}}));
        let tool = json!({"type": "object", "properties": {"who": {"$ref": "#/$defs/Person"}}});
        let v = Validator::with_defs(tool.clone(), Some(d.clone())).unwrap();
        assert_eq!(v.listing(), json!({"type": "object", "properties": {"who": person(address())}}));
        let mut with_defs = tool.clone();
        with_defs["$defs"] = json!({"Person": person(json!({"$ref": "#/$defs/Address"})), "Address": address()});
        assert_eq!(v.listing_with_defs(), with_defs);
        // The `$defs` form is the same schema to this validator: the same verdicts.
        let alone = Validator::new(v.listing_with_defs()).unwrap();
        let bad = json!({"who": {"name": "Ann", "home": {"zip": 1}}});
        assert_eq!(v.validate(&bad), alone.validate(&bad));
        assert_eq!(v.validate(&bad), vec!["`who/home/city`: is required".to_string()]);

        let tree = json!({"type": "object", "properties": {"root": {"$ref": "#/$defs/Node"}}});
        let v = Validator::with_defs(tree.clone(), Some(d)).unwrap();
        let listed = v.listing();
        assert_eq!(listed["$defs"]["Node"]["properties"]["children"]["items"], json!({"$ref": "#/$defs/Node"}));
        assert_eq!(listed["properties"], tree["properties"]);
        let deep = json!({"root": {"value": 1, "children": [{"value": 2, "children": [{"value": "x"}]}]}});
        assert_eq!(v.validate(&deep), Validator::new(listed).unwrap().validate(&deep));
        assert_eq!(v.validate(&deep).len(), 1);
    }

    #[test]
    fn definitions_that_would_list_as_too_much_are_listed_as_defs() {
        // Each level uses the next twice: inlined, 2^40 copies of the last.
        let mut d = Map::new();
        for i in 0..40 {
            let next = json!({"$ref": format!("#/$defs/d{}", i + 1)});
            d.insert(format!("d{i}"), json!({"type": "object", "properties": {"a": next, "b": next}}));
        }
        d.insert("d40".into(), json!({"type": "integer"}));
        let defs = Arc::new(SchemaDefs::compile(d).unwrap());
        let v =
            Validator::with_defs(json!({"type": "object", "properties": {"x": {"$ref": "#/$defs/d0"}}}), Some(defs))
                .unwrap();
        let listed = v.listing();
        assert_eq!(listed["$defs"].as_object().unwrap().len(), 41);
        assert_eq!(listed["properties"]["x"], json!({"$ref": "#/$defs/d0"}));
    }

    #[test]
    fn a_server_config_with_schema_defs_loads_and_its_faults_are_named() {
        let config = |defs: Value, schema: Value| {
            json!({"servers": [{"name": "s", "schemaDefs": defs, "tools": [{"name": "t",
                "requestTemplate": {"url": "http://h/x"}, "args": [{"name": "a", "schema": schema}]}]}]})
            .to_string()
        };
        let gw = crate::gateway::Gateway::from_config_str(&config(
            json!({"Address": address()}),
            json!({"type": "object", "properties": {"home": {"$ref": "#/$defs/Address"}}}),
        ))
        .unwrap();
        let listed = gw.servers[0].tools[0].listing();
        assert_eq!(listed["inputSchema"]["properties"]["a"]["properties"]["home"], address());
        let err = crate::gateway::Gateway::from_config_str(&config(json!({"A": {"pattern": "("}}), json!({})))
            .unwrap_err()
            .to_string();
        assert!(err.contains("server 's'") && err.contains("schemaDefs") && err.contains("pattern"), "{err}");
        let err = crate::gateway::Gateway::from_config_str(&config(
            json!({"Address": address()}),
            json!({"properties": {"home": {"$ref": "#/$defs/Adress"}}}),
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("tool 't'") && err.contains("cannot resolve '#/$defs/Adress'"), "{err}");
    }

    #[test]
    fn keywords_beside_a_shared_ref_apply_with_it() {
        let d = defs(json!({"Address": address()}));
        let v = Validator::with_defs(
            json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/Address", "maxProperties": 1}}}),
            Some(d),
        )
        .unwrap();
        let listed = v.listing();
        assert_eq!(listed["properties"]["a"], json!({"maxProperties": 1, "allOf": [address()]}));
        let two = json!({"a": {"city": "Paris", "zip": 1}});
        assert_eq!(v.validate(&two), Validator::new(listed).unwrap().validate(&two));
        assert_eq!(v.validate(&two).len(), 1);
    }

    #[test]
    fn what_cannot_be_shared_is_refused_at_load() {
        let d = defs(json!({"Address": address()}));
        let missing = Validator::with_defs(json!({"properties": {"a": {"$ref": "#/$defs/Nope"}}}), Some(d.clone()));
        assert!(missing.unwrap_err().contains("cannot resolve '#/$defs/Nope'"));
        // Without a server's definitions the reference does not resolve either.
        assert!(Validator::new(json!({"properties": {"a": {"$ref": "#/$defs/Address"}}})).is_err());
        // A tool's own `$defs` win, but may not shadow a shared one it also reaches.
        let own = json!({"$defs": {"Mine": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/Mine"},
                         "b": {"$ref": "#/$defs/Address"}}});
        let v = Validator::with_defs(own.clone(), Some(d.clone())).unwrap();
        assert_eq!(v.validate(&json!({"a": 1})).len(), 1);
        assert_eq!(v.listing()["$defs"], own["$defs"]);
        assert_eq!(v.listing()["properties"]["b"], address());
        let clash = json!({"$defs": {"Address": {"type": "string"}}, "properties": {"a": {"$ref": "#/$defs/Other"}}});
        let d2 = defs(json!({"Other": {"$ref": "#/$defs/Address"}, "Address": address()}));
        assert!(Validator::with_defs(clash, Some(d2)).unwrap_err().contains("schemaDefs has one of this name"));
        for bad in [
            json!({"A": {"$id": "https://x.example/a"}}),
            json!({"A": {"$anchor": "here"}}),
            json!({"A": {"$ref": "#"}}),
            json!({"A": {"$ref": "#/$defs/B"}}),
            json!({"A": {"pattern": "("}}),
        ] {
            assert!(SchemaDefs::compile(bad.as_object().cloned().unwrap()).is_err(), "{bad}");
        }
    }
}
