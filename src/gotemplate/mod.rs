//! Higress's template dialect: Go's `text/template` over JSON data, as Higress's fork (gjson_template) runs it,
//! with the sprig function library and gjson paths.
//!
//! Sans-IO: a template is parsed once ([`GoTemplate::parse`], which refuses unknown functions by name) and
//! rendered over JSON text ([`GoTemplate::render`]) with a fuel budget and an output cap, so a hostile or
//! mistaken template fails with an error instead of running away. Expected behaviours in the tests come from
//! reading Go's, sprig's, gjson's and gjson_template's sources and docs: no Go toolchain runs here.

mod exec;
mod funcs;
mod parse;
mod time;
mod value;
mod zones;

pub use funcs::Env;
pub use value::{Time, Value};

use parse::{Arg, List, Node};
use std::fmt;

/// Why a Go template could not be parsed or rendered.
#[derive(Debug, Clone, PartialEq)]
pub enum GoError {
    Parse {
        line: usize,
        message: String,
    },
    Exec {
        line: usize,
        message: String,
    },
    OutOfFuel,
    OutputTooLarge {
        limit: usize,
    },
    /// The data is not a JSON object or array (Higress's own requirement).
    BadData,
}

impl fmt::Display for GoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GoError::Parse { line, message } => write!(f, "Go template syntax error (line {line}): {message}"),
            GoError::Exec { line, message } => write!(f, "Go template error (line {line}): {message}"),
            GoError::OutOfFuel => write!(f, "template evaluation exceeded its fuel limit"),
            GoError::OutputTooLarge { limit } => {
                write!(f, "the rendered template is over the gateway's fixed limit of {limit} bytes per template")
            }
            GoError::BadData => write!(f, "data must be a valid JSON object or array"),
        }
    }
}

impl std::error::Error for GoError {}

/// gjson's modifiers that the gjson crate implements. Go's gjson also has `@keys`, `@values`, `@tostr`,
/// `@fromstr`, `@group` and `@dig`; the crate would answer those with nothing, so they are refused instead.
const MODIFIERS: &[&str] = &["this", "reverse", "ugly", "pretty", "valid", "flatten", "join"];

/// Refuses a gjson path using a modifier this gateway lacks, naming it (a path from a template is checked at
/// load, one computed at render time when it is used).
pub(crate) fn check_gjson_path(path: &str) -> Result<(), String> {
    let mut prev = None;
    let mut quoted = false;
    let mut chars = path.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => {
                chars.next();
            }
            '"' => quoted = !quoted,
            '@' if !quoted && matches!(prev, None | Some('.' | '|' | '{' | '[' | ',' | ':')) => {
                let name: String = path[i + 1..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !MODIFIERS.contains(&name.as_str()) {
                    return Err(format!(
                        "gjson modifier @{name} is not implemented by this gateway (it has @{})",
                        MODIFIERS.join(", @")
                    ));
                }
            }
            _ => {}
        }
        prev = Some(c);
    }
    Ok(())
}

/// A parsed Go template.
#[derive(Debug, Clone)]
pub struct GoTemplate {
    root: List,
}

/// Limits of one render.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub fuel: u64,
    pub max_output: usize,
}

impl GoTemplate {
    /// Parses a template; a function this gateway does not implement is refused here, by name.
    pub fn parse(src: &str) -> Result<GoTemplate, GoError> {
        Ok(GoTemplate { root: parse::parse(src, &funcs::known)? })
    }

    /// Renders over JSON data (an object or array). `url_escape` percent-encodes every printed value except
    /// plain `.config...` fields, which the operator wrote.
    pub fn render(&self, data: &str, limits: Limits, url_escape: bool, env: &Env) -> Result<String, GoError> {
        let root = Value::from_gjson(&gjson::parse(data));
        if !(root.is_object() || root.is_array()) {
            return Err(GoError::BadData);
        }
        self.render_value(root, limits, url_escape, env)
    }

    fn render_value(&self, root: Value, limits: Limits, url_escape: bool, env: &Env) -> Result<String, GoError> {
        let mut st = exec::State::new(root.clone(), limits.fuel, limits.max_output, url_escape, env);
        match st.walk_list(&root, &self.root) {
            Ok(()) => Ok(st.out),
            Err(exec::Flow::Err(e)) => Err(e),
            Err(_) => Err(GoError::Exec { line: 0, message: "break or continue outside range".into() }),
        }
    }

    /// The template has no actions: its text is its output.
    pub fn literal(&self) -> Option<String> {
        let mut out = String::new();
        for node in &self.root {
            match node {
                Node::Text(t) => out.push_str(t),
                _ => return None,
            }
        }
        Some(out)
    }

    /// Every action prints a plain `.config...` field (so the output depends on the server's config only).
    pub fn reads_config_only(&self) -> bool {
        self.root.iter().all(|n| match n {
            Node::Text(_) => true,
            Node::Action { pipe, .. } => {
                pipe.decl.is_empty()
                    && matches!(pipe.cmds.as_slice(), [c] if matches!(c.args.as_slice(), [Arg::Field(f)] if f.first().is_some_and(|f| f == "config")))
            }
            _ => false,
        })
    }
}

#[cfg(test)]
mod tests;
