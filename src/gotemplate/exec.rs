//! Executes a parsed template over JSON data, with Higress's fork's semantics (its `exec.go`): field chains
//! are gjson paths, missing values print nothing, `if` uses gjson truthiness, `range` walks arrays, objects,
//! integers and strings. Every step spends fuel and the output is capped, so no template runs away.

use super::funcs;
use super::parse::{Arg, Cmd, List, Node, Pipe};
use super::value::Value;
use super::GoError;

/// Values printed into the path are escaped as Higress's URL parser leaves them (`/` and sub-delimiters kept).
const PATH_VALUE: &percent_encoding::AsciiSet = crate::higress::PATH_VALUE;

/// Why a walk stopped early.
pub(crate) enum Flow {
    Break,
    Continue,
    Err(GoError),
}

impl From<GoError> for Flow {
    fn from(e: GoError) -> Self {
        Flow::Err(e)
    }
}

/// Per-render state.
pub(crate) struct State<'a> {
    pub out: String,
    pub fuel: u64,
    pub max_output: usize,
    vars: Vec<(String, Value)>,
    line: usize,
    /// Percent-encode printed values (URL templates), except those the operator wrote (`.config...`).
    url_escape: bool,
    pub env: &'a funcs::Env,
}

impl<'a> State<'a> {
    pub fn new(root: Value, fuel: u64, max_output: usize, url_escape: bool, env: &'a funcs::Env) -> Self {
        State { out: String::new(), fuel, max_output, vars: vec![("$".into(), root)], line: 0, url_escape, env }
    }

    pub fn err(&self, message: impl Into<String>) -> GoError {
        GoError::Exec { line: self.line, message: message.into() }
    }

    /// Spends fuel; running out is an error.
    pub fn spend(&mut self, n: u64) -> Result<(), GoError> {
        if self.fuel < n {
            self.fuel = 0;
            return Err(GoError::OutOfFuel);
        }
        self.fuel -= n;
        Ok(())
    }

    fn write(&mut self, s: &str) -> Result<(), GoError> {
        if self.out.len() + s.len() > self.max_output {
            return Err(GoError::OutputTooLarge { limit: self.max_output });
        }
        self.out.push_str(s);
        Ok(())
    }

    /// Spends fuel for copying a value: large answers are copied only as often as the fuel allows.
    fn spend_copy(&mut self, v: &Value) -> Result<(), GoError> {
        let len = match v {
            Value::String(s) | Value::Json(s) => s.len(),
            _ => 0,
        };
        self.spend(len as u64 / 4096)
    }

    fn var(&mut self, name: &str) -> Result<Value, GoError> {
        let v = self
            .vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| self.err(format!("undefined variable: {name}")))?;
        self.spend_copy(&v)?;
        Ok(v)
    }

    fn set_var(&mut self, name: &str, value: Value) -> Result<(), GoError> {
        match self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            Some(slot) => {
                slot.1 = value;
                Ok(())
            }
            None => Err(self.err(format!("undefined variable: {name}"))),
        }
    }

    pub fn walk_list(&mut self, dot: &Value, list: &List) -> Result<(), Flow> {
        for node in list {
            self.walk(dot, node)?;
        }
        Ok(())
    }

    fn walk(&mut self, dot: &Value, node: &Node) -> Result<(), Flow> {
        self.spend(1)?;
        match node {
            Node::Text(t) => self.write(t)?,
            Node::Action { pipe, line } => {
                self.line = *line;
                let v = self.pipeline(dot, pipe)?;
                if pipe.decl.is_empty() {
                    let text = v.printed();
                    if self.url_escape && !operator_value(pipe) {
                        // In the path, `/` is kept: Higress renders `contents/{{.args.path}}` unescaped, and its
                        // authors mean nested paths (dot segments are refused after rendering). In the query
                        // everything but unreserved characters is encoded, so values cannot add parameters.
                        let set = if self.out.contains('?') { crate::template::URL_COMPONENT } else { PATH_VALUE };
                        let enc = percent_encoding::utf8_percent_encode(&text, set);
                        let enc = enc.to_string();
                        self.write(&enc)?;
                    } else {
                        let text = text.into_owned();
                        self.write(&text)?;
                    }
                }
            }
            Node::Break => return Err(Flow::Break),
            Node::Continue => return Err(Flow::Continue),
            Node::If { pipe, list, else_list, line } | Node::With { pipe, list, else_list, line } => {
                self.line = *line;
                let mark = self.vars.len();
                let v = self.pipeline(dot, pipe)?;
                let r = if v.truth() {
                    if matches!(node, Node::With { .. }) {
                        self.walk_list(&v, list)
                    } else {
                        self.walk_list(dot, list)
                    }
                } else if let Some(e) = else_list {
                    self.walk_list(dot, e)
                } else {
                    Ok(())
                };
                self.vars.truncate(mark);
                r?;
            }
            Node::Range { pipe, list, else_list, line } => {
                self.line = *line;
                let mark = self.vars.len();
                let r = self.range(dot, pipe, list, else_list.as_ref());
                self.vars.truncate(mark);
                r?;
            }
        }
        Ok(())
    }

    fn range(&mut self, dot: &Value, pipe: &Pipe, list: &List, else_list: Option<&List>) -> Result<(), Flow> {
        let v = self.pipeline(dot, pipe)?;
        let mark = self.vars.len();
        let mut ran = false;
        let body = |s: &mut State, key: Value, elem: Value| -> Result<bool, Flow> {
            s.spend(1)?;
            match pipe.decl.as_slice() {
                [] => {}
                [one] => s.set_var(one, elem.clone())?,
                [k, e, ..] => {
                    s.set_var(k, key)?;
                    s.set_var(e, elem.clone())?;
                }
            }
            let r = s.walk_list(&elem, list);
            s.vars.truncate(mark);
            match r {
                Ok(()) | Err(Flow::Continue) => Ok(true),
                Err(Flow::Break) => Ok(false),
                Err(e) => Err(e),
            }
        };
        match &v {
            Value::Json(raw) if v.is_array() => {
                let items = gjson::parse(raw);
                let mut failure = None;
                let mut i = 0i64;
                items.each(|_, elem| {
                    ran = true;
                    let r = body(self, Value::int(i), Value::from_gjson(&elem));
                    i += 1;
                    match r {
                        Ok(go_on) => go_on,
                        Err(e) => {
                            failure = Some(e);
                            false
                        }
                    }
                });
                if let Some(e) = failure {
                    return Err(e);
                }
            }
            Value::Json(raw) => {
                let items = gjson::parse(raw);
                let mut failure = None;
                items.each(|key, elem| {
                    ran = true;
                    match body(self, Value::from_gjson(&key), Value::from_gjson(&elem)) {
                        Ok(go_on) => go_on,
                        Err(e) => {
                            failure = Some(e);
                            false
                        }
                    }
                });
                if let Some(e) = failure {
                    return Err(e);
                }
            }
            Value::Number(_) => {
                if pipe.decl.len() > 1 {
                    return Err(self
                        .err(format!("can't use {} to iterate over more than one variable", v.text()))
                        .into());
                }
                let n = v.as_int().unwrap_or(v.num() as i64);
                for i in 0..n.max(0) {
                    ran = true;
                    if !body(self, Value::int(i), Value::int(i))? {
                        break;
                    }
                }
            }
            Value::String(s) => {
                for (i, c) in s.char_indices() {
                    ran = true;
                    if !body(self, Value::int(i as i64), Value::String(c.to_string()))? {
                        break;
                    }
                }
            }
            Value::Missing | Value::Null => {}
            other => return Err(self.err(format!("range can't iterate over {}", other.text())).into()),
        }
        if !ran {
            if let Some(e) = else_list {
                self.walk_list(dot, e)?;
            }
        }
        Ok(())
    }

    pub fn pipeline(&mut self, dot: &Value, pipe: &Pipe) -> Result<Value, GoError> {
        let mut value: Option<Value> = None;
        for cmd in &pipe.cmds {
            value = Some(self.command(dot, cmd, value)?);
        }
        let value = value.unwrap_or(Value::Missing);
        for name in &pipe.decl {
            self.spend_copy(&value)?;
            if pipe.assign {
                self.set_var(name, value.clone())?;
            } else {
                self.vars.push((name.clone(), value.clone()));
            }
        }
        Ok(value)
    }

    fn command(&mut self, dot: &Value, cmd: &Cmd, last: Option<Value>) -> Result<Value, GoError> {
        self.spend(1)?;
        let Some(first) = cmd.args.first() else { return Err(self.err("empty command")) };
        if let Arg::Func(name) = first {
            return self.call(dot, name, &cmd.args[1..], last);
        }
        if cmd.args.len() > 1 || last.is_some() {
            return Err(self.err(format!("can't give argument to non-function {}", describe(first))));
        }
        // A first word that is a string holding a back-quoted path reads that gjson path (Higress's fork).
        if let Arg::Str(s) = first {
            if s.len() >= 2 && s.starts_with('`') && s.ends_with('`') {
                return self.get(dot, &s[1..s.len() - 1]);
            }
        }
        self.arg(dot, first)
    }

    /// Evaluates one argument.
    pub fn arg(&mut self, dot: &Value, arg: &Arg) -> Result<Value, GoError> {
        match arg {
            Arg::Dot => {
                self.spend_copy(dot)?;
                Ok(dot.clone())
            }
            Arg::Nil => Ok(Value::Null),
            Arg::Const(v) => Ok(v.clone()),
            Arg::Char(c) => Ok(Value::int(*c as i64)),
            Arg::Str(s) => Ok(Value::String(s.clone())),
            Arg::Field(fields) => self.get(dot, &fields.join(".")),
            Arg::Var(name, fields) => {
                let v = self.var(name)?;
                if fields.is_empty() {
                    Ok(v)
                } else {
                    self.get(&v, &fields.join("."))
                }
            }
            Arg::Func(name) => self.call(dot, name, &[], None),
            Arg::Pipe(pipe, fields) => {
                let mark = self.vars.len();
                let v = self.pipeline(dot, pipe);
                self.vars.truncate(mark);
                let v = v?;
                if fields.is_empty() {
                    Ok(v)
                } else {
                    self.get(&v, &fields.join("."))
                }
            }
        }
    }

    /// A gjson query on a value; fuel is spent in proportion to the text it may scan.
    pub fn get(&mut self, on: &Value, path: &str) -> Result<Value, GoError> {
        let raw = on.raw_json();
        self.spend(1 + raw.len() as u64 / 4096)?;
        if raw.is_empty() {
            return Ok(Value::Missing);
        }
        Ok(Value::from_gjson(&gjson::get(&raw, path)))
    }

    fn call(&mut self, dot: &Value, name: &str, args: &[Arg], last: Option<Value>) -> Result<Value, GoError> {
        self.spend(1)?;
        // `and` and `or` evaluate their arguments only as far as needed.
        if name == "and" || name == "or" {
            if args.is_empty() && last.is_none() {
                return Err(self.err(format!("wrong number of args for {name}: want at least 1 got 0")));
            }
            let mut v = Value::Missing;
            for a in args {
                v = self.arg(dot, a)?;
                if v.truth() != (name == "and") {
                    return Ok(v);
                }
            }
            if let Some(l) = last {
                v = l;
            }
            return Ok(v);
        }
        let mut values = Vec::with_capacity(args.len() + 1);
        for a in args {
            values.push(match a {
                Arg::Char(c) if funcs::char_as_string(name) => Value::String(c.to_string()),
                a => self.arg(dot, a)?,
            });
        }
        if let Some(l) = last {
            values.push(l);
        }
        if name == "gjson" {
            let [path] = values.as_slice() else {
                return Err(self.err(format!("wrong number of args for gjson: want 1 got {}", values.len())));
            };
            let Value::String(path) = path else { return Err(self.err("gjson requires a string path argument")) };
            super::check_gjson_path(path).map_err(|m| self.err(m))?;
            return self.get(dot, path);
        }
        let result = funcs::call(self, name, values);
        // No value may outgrow what a template may print (the amplifying functions check before building).
        if let Ok(v) = &result {
            let size = match v {
                Value::String(s) | Value::Json(s) | Value::Number(s) => s.len(),
                _ => 0,
            };
            if size > self.max_output {
                return Err(GoError::OutputTooLarge { limit: self.max_output });
            }
        }
        result.map_err(
            |m| {
                if self.fuel == 0 {
                    GoError::OutOfFuel
                } else {
                    self.err(format!("error calling {name}: {m}"))
                }
            },
        )
    }
}

/// Whether an action prints a value the operator wrote rather than one from the request: a plain
/// `.config...` field chain. URL templates leave those unescaped, as the Jinja dialect does.
fn operator_value(pipe: &Pipe) -> bool {
    matches!(pipe.cmds.as_slice(), [Cmd { args }] if matches!(args.as_slice(), [Arg::Field(f)] if f.first().is_some_and(|f| f == "config")))
}

fn describe(arg: &Arg) -> String {
    match arg {
        Arg::Dot => ".".into(),
        Arg::Nil => "nil".into(),
        Arg::Const(v) => v.text().into_owned(),
        Arg::Char(c) => format!("{c:?}"),
        Arg::Str(s) => format!("{s:?}"),
        Arg::Field(f) => format!(".{}", f.join(".")),
        Arg::Var(v, f) if f.is_empty() => v.clone(),
        Arg::Var(v, f) => format!("{v}.{}", f.join(".")),
        Arg::Func(n) => n.clone(),
        Arg::Pipe(..) => "(pipeline)".into(),
    }
}
