//! Tool-level authorization: per consumer, scope or claim, which tools, prompts and resources of a server
//! a caller may see and use. Compiled at load; asked for every listed item and every call.
//!
//! A rule applies to a caller when each matcher it has holds (`consumers`: one of the globs matches the
//! caller's consumer; `scopes`: the caller has one of them; `claims`: every claim has the value). Among the
//! rules that apply, a `deny` match wins over an `allow` match; what no rule allows is refused unless the
//! policy says `default: allow`.

use super::read::{self, FieldError};
use crate::caller::Caller;
use serde_json::{Map, Value};

/// What an item is, for the rule lists it is matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Tool,
    Prompt,
    /// Matched by URI (a resource) or URI template (a resource template).
    Resource,
}

impl Kind {
    /// How messages name the kind.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Tool => "tool",
            Kind::Prompt => "prompt",
            Kind::Resource => "resource",
        }
    }
}

/// Glob lists (`*` matches any run of characters) of the items a rule allows or denies.
#[derive(Debug, Default)]
struct Lists {
    tools: Vec<String>,
    prompts: Vec<String>,
    resources: Vec<String>,
}

impl Lists {
    fn read(v: Option<&Value>, field: &str) -> Result<Option<Lists>, FieldError> {
        let Some(v) = v else { return Ok(None) };
        let m = read::object(v, field, &["tools", "prompts", "resources"])?;
        Ok(Some(Lists {
            tools: read::strings(m, "tools", field)?,
            prompts: read::strings(m, "prompts", field)?,
            resources: read::strings(m, "resources", field)?,
        }))
    }

    fn matches(&self, kind: Kind, name: &str) -> bool {
        let list = match kind {
            Kind::Tool => &self.tools,
            Kind::Prompt => &self.prompts,
            Kind::Resource => &self.resources,
        };
        list.iter().any(|p| glob(p, name))
    }
}

#[derive(Debug)]
struct Rule {
    consumers: Option<Vec<String>>,
    scopes: Option<Vec<String>>,
    claims: Vec<(String, String)>,
    allow: Lists,
    deny: Lists,
}

impl Rule {
    fn applies(&self, caller: &Caller) -> bool {
        let consumer_ok = self
            .consumers
            .as_ref()
            .is_none_or(|globs| caller.consumer.as_deref().is_some_and(|c| globs.iter().any(|g| glob(g, c))));
        let scope_ok = self.scopes.as_ref().is_none_or(|wanted| wanted.iter().any(|s| caller.scopes.contains(s)));
        let claims_ok = self.claims.iter().all(|(k, v)| claim_has(caller.claims.get(k), v));
        consumer_ok && scope_ok && claims_ok
    }
}

/// Whether a claim is `want`, or (a list or a space-separated string) holds it.
fn claim_has(claim: Option<&Value>, want: &str) -> bool {
    match claim {
        Some(Value::String(s)) => s == want || s.split(' ').any(|p| p == want),
        Some(Value::Array(items)) => items.iter().any(|i| claim_has(Some(i), want)),
        Some(Value::Bool(b)) => b.to_string() == want,
        Some(Value::Number(n)) => n.to_string() == want,
        _ => false,
    }
}

/// A server's compiled `policy`.
#[derive(Debug)]
pub struct Policy {
    rules: Vec<Rule>,
    default_allow: bool,
}

impl Policy {
    /// Compiles `policy:`; errors give the field (`policy.rules[1].claims.team`) and say what is wrong.
    pub fn compile(value: Value) -> Result<Policy, FieldError> {
        let m = read::object(&value, "policy", &["rules", "default"])?;
        let default_allow = match read::string(m, "default", "policy")?.as_deref() {
            None | Some("deny") => false,
            Some("allow") => true,
            Some(other) => return Err(("policy.default".into(), format!("'{other}' must be allow or deny"))),
        };
        let items = match m.get("rules") {
            None => &[][..],
            Some(Value::Array(items)) => &items[..],
            Some(_) => return Err(crate::fields::pair("policy.rules", "must be a list")),
        };
        let mut rules = Vec::with_capacity(items.len());
        for (i, r) in items.iter().enumerate() {
            let at = format!("policy.rules[{i}]");
            let field = |f: &str| format!("{at}.{f}");
            let r = read::object(r, &at, &["consumers", "scopes", "claims", "allow", "deny"])?;
            let (allow, deny) =
                (Lists::read(r.get("allow"), &field("allow"))?, Lists::read(r.get("deny"), &field("deny"))?);
            if allow.is_none() && deny.is_none() {
                return Err((field("allow"), "a rule needs allow or deny (or both)".into()));
            }
            let consumers = read::opt_strings(r, "consumers", &at)?;
            let scopes = read::opt_strings(r, "scopes", &at)?;
            for (name, list) in [("consumers", &consumers), ("scopes", &scopes)] {
                if list.as_ref().is_some_and(|l| l.is_empty() || l.iter().any(String::is_empty)) {
                    return Err((
                        field(name),
                        "must list one or more non-empty names (leave it out to match anyone)".into(),
                    ));
                }
            }
            let mut claims = Vec::new();
            let empty = Map::new();
            let claim_map = match r.get("claims") {
                None => &empty,
                Some(Value::Object(c)) => c,
                Some(_) => return Err((field("claims"), "must map claim names to values".into())),
            };
            for (k, v) in claim_map {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    Value::Number(n) => n.to_string(),
                    _ => return Err((field(&format!("claims.{k}")), "must be a string, number or boolean".into())),
                };
                claims.push((k.clone(), v));
            }
            rules.push(Rule {
                consumers,
                scopes,
                claims,
                allow: allow.unwrap_or_default(),
                deny: deny.unwrap_or_default(),
            });
        }
        Ok(Policy { rules, default_allow })
    }

    /// Whether `caller` may see and use the item `name` of `kind`.
    pub fn allows(&self, caller: &Caller, kind: Kind, name: &str) -> bool {
        let mut allowed = self.default_allow;
        for rule in self.rules.iter().filter(|r| r.applies(caller)) {
            if rule.deny.matches(kind, name) {
                return false;
            }
            allowed |= rule.allow.matches(kind, name);
        }
        allowed
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|b| *b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn caller(consumer: Option<&str>, scopes: &[&str], claims: Value) -> Caller {
        Caller {
            consumer: consumer.map(Into::into),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            claims: claims.as_object().cloned().unwrap_or_default(),
        }
    }

    fn policy() -> Policy {
        Policy::compile(json!({"rules": [
            {"allow": {"tools": ["public_*"], "resources": ["file:///pub/*"]}},
            {"consumers": ["alice"], "allow": {"tools": ["*"], "prompts": ["*"]}, "deny": {"tools": ["*_admin"]}},
            {"scopes": ["admin"], "allow": {"tools": ["*_admin"]}},
            {"claims": {"team": "ops"}, "allow": {"prompts": ["runbook"]}},
            {"consumers": ["bob"], "deny": {"tools": ["public_secret"]}}
        ]}))
        .unwrap()
    }

    #[test]
    fn rules_apply_by_consumer_scope_and_claim_and_deny_wins() {
        let p = policy();
        let anon = Caller::anonymous();
        assert!(p.allows(&anon, Kind::Tool, "public_echo"));
        assert!(!p.allows(&anon, Kind::Tool, "echo"), "nothing allows it: the default is deny");
        assert!(!p.allows(&anon, Kind::Prompt, "runbook"));
        assert!(p.allows(&anon, Kind::Resource, "file:///pub/a.txt"));
        let alice = caller(Some("alice"), &[], json!({}));
        assert!(p.allows(&alice, Kind::Tool, "echo") && p.allows(&alice, Kind::Prompt, "anything"));
        assert!(!p.allows(&alice, Kind::Tool, "drop_admin"), "alice's own deny wins over her allow");
        let admin = caller(Some("alice"), &["admin"], json!({}));
        assert!(!p.allows(&admin, Kind::Tool, "drop_admin"), "a deny of an applying rule wins over any allow");
        let carol = caller(Some("carol"), &["read", "admin"], json!({}));
        assert!(p.allows(&carol, Kind::Tool, "drop_admin"));
        let ops = caller(None, &[], json!({"team": ["dev", "ops"]}));
        assert!(p.allows(&ops, Kind::Prompt, "runbook"));
        let bob = caller(Some("bob"), &[], json!({}));
        assert!(!p.allows(&bob, Kind::Tool, "public_secret") && p.allows(&bob, Kind::Tool, "public_echo"));
        let open = Policy::compile(json!({"default": "allow", "rules": [{"deny": {"tools": ["x"]}}]})).unwrap();
        assert!(open.allows(&anon, Kind::Tool, "y") && !open.allows(&anon, Kind::Tool, "x"));
    }

    #[test]
    fn bad_rules_are_refused_naming_the_field() {
        let err = |v: Value| Policy::compile(v).unwrap_err();
        assert_eq!(err(json!({"rules": [{"consumers": ["a"]}]})).0, "policy.rules[0].allow");
        assert_eq!(err(json!({"rules": [{"consumers": [], "allow": {}}]})).0, "policy.rules[0].consumers");
        assert_eq!(err(json!({"rules": [{"claims": {"t": [1]}, "allow": {}}]})).0, "policy.rules[0].claims.t");
        assert_eq!(err(json!({"default": "maybe"})).0, "policy.default");
        assert!(err(json!({"rules": [{"allow": {"tool": ["a"]}}]})).1.contains("tool"));
    }

    #[test]
    fn globs_match_runs_of_characters() {
        assert!(glob("*", "") && glob("a*c", "abbc") && glob("file:///*", "file:///x/y"));
        assert!(!glob("a*c", "abd") && !glob("abc", "ab"));
    }
}
