//! Guardrails on tool input and output (a server's `guardrails:`): size limits on arguments and results,
//! deny patterns on arguments, masking of secrets and personal data in results, and flagging of
//! prompt-injection phrases. Everything is compiled at load; a call pays only for the rules its tool has.
//!
//! Where they run: arguments are checked in `tools/call` before anything is rendered or sent; results are
//! filtered when the tool's result is built ([`crate::mcp::finish_call`] and results answered without an
//! upstream). On proxied servers (`type: mcp-proxy`, [`crate::proxy`]) the relay checks `tools/call`
//! bodies and filters the answers to them, JSON whole or SSE event by event; the external guard service is
//! asked there too ([`crate::proxy::gate`]). An SSE backend (`transport: sse`) has no guardrails. A call
//! through a virtual server passes the virtual server's guardrails and the tool's own server's
//! ([`crate::composed`]; guard services in the order of [`external::Checks`]).

pub mod external;
pub mod mask;
mod scan;

use crate::error::GatewayError;
use crate::fields::{FieldError, Fields};
use external::{External, ExternalConfig};
use mask::{Injection, Masker, Rule, RuleSet};
use regex_lite::Regex;
use serde_json::Value;
use std::sync::Arc;

/// `guardrails:` of a server, as written. The same fields under `tools.<name>` apply to one tool:
/// limits, `mask` and `injection` replace the server's, `denyPatterns` add to them.
#[derive(Debug, Clone, Default)]
pub struct GuardrailsConfig {
    /// Largest `arguments` object (as JSON, bytes) a call may send.
    pub max_argument_bytes: Option<usize>,
    /// Largest tool result (as JSON, bytes, after masking) a call may return.
    pub max_result_bytes: Option<usize>,
    /// Regular expressions (regex-lite syntax); a call whose argument strings match one is refused.
    pub deny_patterns: Option<Vec<String>>,
    /// What to mask in results: `secrets`, `email`, `phone`, `card`, or `all`.
    pub mask: Option<Vec<String>>,
    /// Prompt-injection phrases in results: `off` (default), `mark` or `strip`.
    pub injection: Option<String>,
    /// A call to the team's own guard service per tool call (replaces the server's for a tool).
    pub external: Option<ExternalConfig>,
    /// Per-tool settings, sorted by tool name (so a compile error names the first tool in that order). A
    /// sorted `Vec`, not a `BTreeMap`: that was a B-tree copy of its own in the module, for a list read once.
    pub tools: Vec<(String, GuardrailsConfig)>,
}

impl GuardrailsConfig {
    pub const FIELDS: &'static [&'static str] =
        &["maxArgumentBytes", "maxResultBytes", "denyPatterns", "mask", "injection", "external", "tools"];

    /// Reads `guardrails` (or one tool's entry) at `at`, field by field ([`crate::fields`]).
    pub fn read(v: &Value, at: &str) -> Result<GuardrailsConfig, FieldError> {
        let mut f = Fields::read(v, at, Self::FIELDS);
        let mut cfg = GuardrailsConfig::default();
        cfg.max_argument_bytes = f.size("maxArgumentBytes");
        cfg.max_result_bytes = f.size("maxResultBytes");
        cfg.deny_patterns = f.strings("denyPatterns");
        cfg.mask = f.strings("mask");
        cfg.injection = f.string("injection");
        cfg.external = f.nested("external", ExternalConfig::read);
        f.check()?;
        let at_tools = f.path("tools");
        match f.value("tools") {
            None => {}
            Some(Value::Object(tools)) => {
                for (name, t) in tools {
                    let t = GuardrailsConfig::read(t, &format!("{at_tools}.{name}"))?;
                    let at = cfg.tools.partition_point(|(n, _)| n < name);
                    cfg.tools.insert(at, (name.clone(), t));
                }
            }
            Some(_) => return Err((at_tools, "must be an object of tool names".into())),
        }
        f.finish()?;
        Ok(cfg)
    }
}

/// A config error of `guardrails`: the tool it belongs to (if any), the field and what is wrong.
#[derive(Debug, Clone, PartialEq)]
pub struct GuardConfigError {
    pub tool: Option<String>,
    pub field: String,
    pub message: String,
}

/// One tool's (or the server's default) compiled guardrails.
#[derive(Debug, Clone, Default)]
struct Policy {
    max_argument_bytes: Option<usize>,
    max_result_bytes: Option<usize>,
    /// Each pattern with the field it came from, for the refusal's message.
    deny: Vec<(Arc<Regex>, Arc<str>)>,
    mask: RuleSet,
    injection: Injection,
    external: Option<Arc<External>>,
}

impl Policy {
    fn filters_results(&self) -> bool {
        !self.mask.is_empty() || self.injection != Injection::Off || self.max_result_bytes.is_some()
    }
}

/// A server's compiled guardrails.
#[derive(Debug)]
pub struct Guard {
    default: Policy,
    /// The tools' own policies, sorted by name (as `GuardrailsConfig::tools`), found by binary search: a
    /// `HashMap` was a hashbrown copy of its own, for a few entries.
    tools: Vec<(String, Policy)>,
    /// The masking patterns, when some policy masks or flags anything.
    masker: Option<Masker>,
}

impl Guard {
    /// Compiles a server's `guardrails`; `is_tool` says whether a name is one of its tools (`None`: any
    /// name is accepted, as for a proxied server whose tools are known only at run time).
    pub fn compile(cfg: &GuardrailsConfig, is_tool: Option<&dyn Fn(&str) -> bool>) -> Result<Guard, GuardConfigError> {
        let default = policy(cfg, &Policy::default(), "guardrails").map_err(|(field, message)| GuardConfigError {
            tool: None,
            field,
            message,
        })?;
        let mut tools = Vec::with_capacity(cfg.tools.len());
        for (name, t) in &cfg.tools {
            let base = format!("guardrails.tools.{name}");
            let err = |field: String, message: String| GuardConfigError { tool: Some(name.clone()), field, message };
            if is_tool.is_some_and(|known| !known(name)) {
                return Err(err(base, "names no tool of this server".into()));
            }
            if !t.tools.is_empty() {
                return Err(err(format!("{base}.tools"), "per-tool settings cannot have tools of their own".into()));
            }
            let p = policy(t, &default, &base).map_err(|(f, m)| err(f, m))?;
            // In order whatever order `cfg.tools` is in (it is sorted when read): [`Guard::own`] searches.
            let at = tools.partition_point(|(n, _): &(String, Policy)| n < name);
            tools.insert(at, (name.clone(), p));
        }
        let masks = std::iter::once(&default)
            .chain(tools.iter().map(|(_, p)| p))
            .any(|p| !p.mask.is_empty() || p.injection != Injection::Off);
        let masker = if masks {
            Some(Masker::new().map_err(|m| GuardConfigError { tool: None, field: "guardrails".into(), message: m })?)
        } else {
            None
        };
        Ok(Guard { default, tools, masker })
    }

    fn policy(&self, tool: &str) -> &Policy {
        self.own(tool).unwrap_or(&self.default)
    }

    fn own(&self, tool: &str) -> Option<&Policy> {
        let i = self.tools.binary_search_by(|(n, _)| n.as_str().cmp(tool)).ok()?;
        self.tools.get(i).map(|(_, p)| p)
    }

    /// The guard service that checks `tool`'s calls, if any.
    pub fn external(&self, tool: &str) -> Option<&External> {
        self.policy(tool).external.as_deref()
    }

    /// Whether `tool`'s results are masked, flagged or size-checked: a proxied server's answer is read
    /// (and held) only then.
    pub fn filters_results(&self, tool: &str) -> bool {
        self.policy(tool).filters_results()
    }

    /// Whether `tool` has its own entry (`guardrails.tools`), rather than the server's policy.
    pub fn has_own(&self, tool: &str) -> bool {
        self.own(tool).is_some()
    }

    /// The tools with their own entry (`guardrails.tools`).
    pub fn own_tools(&self) -> impl Iterator<Item = &str> {
        self.tools.iter().map(|(n, _)| n.as_str())
    }

    /// Whether any tool's calls go to a guard service.
    pub fn has_external(&self) -> bool {
        std::iter::once(&self.default).chain(self.tools.iter().map(|(_, p)| p)).any(|p| p.external.is_some())
    }

    /// Checks a call's arguments before anything is rendered or sent.
    pub fn check_input(&self, tool: &str, args: Option<&Value>) -> Result<(), GatewayError> {
        let p = self.policy(tool);
        let Some(args) = args else { return Ok(()) };
        within_size(args, p.max_argument_bytes, || format!("the arguments of tool '{tool}' are"), "maxArgumentBytes")?;
        if p.deny.is_empty() {
            return Ok(());
        }
        let mut path = String::new();
        match denied(args, &p.deny, &mut path) {
            Some(field) => {
                let at = if path.is_empty() { "the arguments".to_string() } else { format!("argument '{path}'") };
                Err(GatewayError::Guardrail {
                    message: format!("guardrail: {at} of tool '{tool}' matches a denied pattern ({field})"),
                })
            }
            None => Ok(()),
        }
    }

    /// Masks and flags what the tool's policy says in a result's text (`content` and `structuredContent`
    /// strings; base64 data, URIs and MIME types are left alone), then checks its size.
    pub fn filter_result(&self, tool: &str, result: &mut Value) -> Result<(), GatewayError> {
        let p = self.policy(tool);
        if !p.filters_results() {
            return Ok(());
        }
        let masks = !p.mask.is_empty() || p.injection != Injection::Off;
        let mask = self.masker.as_ref().filter(|_| masks).map(|m| (m, p.mask, p.injection));
        // One walk masks and measures (the size is the masked result's).
        let size = mask_and_size(result, mask, p.max_result_bytes.is_some());
        match p.max_result_bytes {
            Some(max) if size > max => {
                // An empty name: a result known only by its shape (an SSE backend's stream), under the server's.
                let what = match tool {
                    "" => "a tool's result is".to_string(),
                    _ => format!("the result of tool '{tool}' is"),
                };
                Err(GatewayError::Guardrail {
                    message: format!(
                        "guardrail: {what} {size} bytes, more than the {max} allowed (guardrails maxResultBytes)"
                    ),
                })
            }
            _ => Ok(()),
        }
    }
}

/// Refuses `v` when its JSON is larger than `max`; `what` says whose size it is, `field` which limit.
fn within_size(v: &Value, max: Option<usize>, what: impl FnOnce() -> String, field: &str) -> Result<(), GatewayError> {
    let Some(max) = max else { return Ok(()) };
    let size = json_size(v);
    if size <= max {
        return Ok(());
    }
    Err(GatewayError::Guardrail {
        message: format!("guardrail: {} {size} bytes, more than the {max} allowed (guardrails {field})", what()),
    })
}

/// Compiles one level of `guardrails` over `base` (the server's, for a tool).
fn policy(cfg: &GuardrailsConfig, base: &Policy, at: &str) -> Result<Policy, (String, String)> {
    let mut p = base.clone();
    if let Some(n) = cfg.max_argument_bytes {
        p.max_argument_bytes = Some(n);
    }
    if let Some(n) = cfg.max_result_bytes {
        p.max_result_bytes = Some(n);
    }
    for (i, pattern) in cfg.deny_patterns.iter().flatten().enumerate() {
        let field = format!("{at}.denyPatterns[{i}]");
        let re = Regex::new(pattern).map_err(|e| (field.clone(), format!("is not a valid regular expression: {e}")))?;
        p.deny.push((Arc::new(re), field.into()));
    }
    if let Some(names) = &cfg.mask {
        let mut set = RuleSet::default();
        for (i, name) in names.iter().enumerate() {
            if name == "all" {
                set = Rule::ALL.into_iter().fold(set, RuleSet::with);
                continue;
            }
            let rule = Rule::parse(name).ok_or_else(|| {
                (format!("{at}.mask[{i}]"), format!("'{name}' is not one of secrets, email, phone, card, all"))
            })?;
            set = set.with(rule);
        }
        p.mask = set;
    }
    if let Some(mode) = &cfg.injection {
        p.injection = match mode.as_str() {
            "off" => Injection::Off,
            "mark" => Injection::Mark,
            "strip" => Injection::Strip,
            other => return Err((format!("{at}.injection"), format!("'{other}' is not one of off, mark, strip"))),
        };
    }
    if let Some(e) = &cfg.external {
        let compiled = External::compile(e).map_err(|(f, m)| (format!("{at}.external.{f}"), m))?;
        p.external = Some(Arc::new(compiled));
    }
    for (field, n) in [("maxArgumentBytes", p.max_argument_bytes), ("maxResultBytes", p.max_result_bytes)] {
        if n == Some(0) {
            return Err((format!("{at}.{field}"), "must be at least 1".into()));
        }
    }
    Ok(p)
}

/// The first deny pattern a string of `v` matches (its field); `path` is left at the string's location.
fn denied<'p>(v: &Value, deny: &'p [(Arc<Regex>, Arc<str>)], path: &mut String) -> Option<&'p str> {
    match v {
        Value::String(s) => deny.iter().find(|(re, _)| re.is_match(s)).map(|(_, f)| &**f),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, x)| within(path, &i.to_string(), |p| denied(x, deny, p)))
        }
        Value::Object(map) => map.iter().find_map(|(k, x)| within(path, k, |p| denied(x, deny, p))),
        _ => None,
    }
}

/// Runs `f` with `key` appended to `path`; the path stays extended when `f` found something.
fn within<'p>(path: &mut String, key: &str, f: impl FnOnce(&mut String) -> Option<&'p str>) -> Option<&'p str> {
    let len = path.len();
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
    let found = f(path);
    if found.is_none() {
        path.truncate(len);
    }
    found
}

/// Keys whose strings are not text for a reader: content types, base64 payloads, locations, metadata.
const NOT_TEXT: [&str; 6] = ["type", "mimeType", "data", "blob", "uri", "_meta"];

/// Masks the text of `v` when `mask` is given (the masker and what it masks and flags) and, when `count`,
/// returns the size of the masked `v` as compact JSON ([`json_size`]'s), in one walk; else 0.
fn mask_and_size(v: &mut Value, mask: Option<(&Masker, RuleSet, Injection)>, count: bool) -> usize {
    if mask.is_none() && !count {
        return 0;
    }
    match v {
        Value::String(s) => {
            if let Some((m, rules, injection)) = mask {
                if let std::borrow::Cow::Owned(masked) = m.apply(s, rules, injection) {
                    *s = masked;
                }
            }
            if count {
                string_size(s)
            } else {
                0
            }
        }
        Value::Array(items) => {
            let inner: usize = items.iter_mut().map(|x| mask_and_size(x, mask, count)).sum();
            if count {
                inner + 1 + items.len().max(1)
            } else {
                0
            }
        }
        Value::Object(map) => {
            let mut size = 1 + map.len().max(1);
            for (k, x) in map.iter_mut() {
                let text = mask.filter(|_| !NOT_TEXT.contains(&k.as_str()));
                size += mask_and_size(x, text, count);
                if count {
                    size += string_size(k) + 1;
                }
            }
            if count {
                size
            } else {
                0
            }
        }
        other => {
            if count {
                json_size(other)
            } else {
                0
            }
        }
    }
}

/// The size of a string as a JSON string: quotes, and the escapes `serde_json` writes (`\"`, `\\`, `\n`
/// and the other short ones, `\u00XX` for the rest of the control characters).
fn string_size(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// The size of `v` as compact JSON, without building the text. Counted through `Display` (compact JSON),
/// whose serializer the module holds anyway: an `io::Write` counter would instantiate another one.
pub fn json_size(v: &Value) -> usize {
    struct Count(usize);
    impl std::fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = std::fmt::Write::write_fmt(&mut c, format_args!("{v}"));
    c.0
}

#[cfg(test)]
mod tests;
