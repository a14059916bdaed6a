//! The tools of a proxied server as its clients see them: `allowTools` (and the request's
//! `x-envoy-allow-mcp-tools`) filter them, `toolOverrides` rename and re-describe them. Clients only ever
//! see and call the new names; the backend only ever gets its own.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// One entry of `toolOverrides` (keyed by the backend's tool name); each field optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolOverride {
    /// The name clients see and call instead of the backend's.
    #[serde(default)]
    pub name: Option<String>,
    /// Replaces the backend's `description`, so that models pick the right tool.
    #[serde(default)]
    pub description: Option<String>,
    /// Replaces the backend's `title`.
    #[serde(default)]
    pub title: Option<String>,
}

/// `toolOverrides` compiled: both directions of every rename.
#[derive(Debug, Default)]
pub struct Overrides {
    by_backend: BTreeMap<String, ToolOverride>,
    /// Client-visible name -> backend name, for renamed tools.
    by_client: BTreeMap<String, String>,
}

impl Overrides {
    /// Checks names (1-128 of `A-Za-z0-9_.-`), that every entry changes something, and that no two tools
    /// end up with one name; errors name the tool and field.
    pub fn compile(
        map: &BTreeMap<String, ToolOverride>,
        allow: Option<&[String]>,
    ) -> Result<Overrides, (&'static str, String)> {
        let ok = |n: &str| {
            !n.is_empty() && n.len() <= 128 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        };
        let mut by_client = BTreeMap::new();
        for (backend, o) in map {
            if !ok(backend) {
                return Err((
                    "toolOverrides",
                    format!("'{backend}' is not a tool name: use 1-128 characters from A-Z a-z 0-9 _ - ."),
                ));
            }
            if *o == ToolOverride::default() {
                return Err(("toolOverrides", format!("'{backend}' sets none of name, description, title")));
            }
            let Some(new) = o.name.as_deref().filter(|n| *n != backend) else { continue };
            if !ok(new) {
                return Err((
                    "toolOverrides",
                    format!("'{backend}': name '{new}' must be 1-128 characters from A-Z a-z 0-9 _ - ."),
                ));
            }
            if let Some(other) = by_client.insert(new.to_string(), backend.clone()) {
                return Err(("toolOverrides", format!("'{other}' and '{backend}' are both renamed to '{new}'")));
            }
        }
        for (new, backend) in &by_client {
            if map.get(new).is_some_and(|o| o.name.as_deref().is_none_or(|n| n == new)) {
                return Err((
                    "toolOverrides",
                    format!("'{backend}' is renamed to '{new}', which stays the name of another tool"),
                ));
            }
        }
        for old in allow.into_iter().flatten() {
            if !by_client.contains_key(old) && map.get(old).and_then(|o| o.name.as_deref()).is_some_and(|n| n != old) {
                return Err(("allowTools", format!("names '{old}', which toolOverrides renames: list its new name")));
            }
        }
        Ok(Overrides { by_backend: map.clone(), by_client })
    }

    pub fn is_empty(&self) -> bool {
        self.by_backend.is_empty()
    }

    /// The backend's name of the tool a client calls `name`; `None` when clients cannot know it (the old
    /// name of a renamed tool).
    pub fn backend_name<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        if let Some(backend) = self.by_client.get(name) {
            return Some(backend);
        }
        let renamed = self.by_backend.get(name).and_then(|o| o.name.as_deref()).is_some_and(|n| n != name);
        (!renamed).then_some(name)
    }

    /// Rewrites one tool of a `tools/list` answer; `None` when clients must not see it (a backend tool
    /// whose name a rename took is hidden: calls by that name reach the renamed tool).
    fn apply(&self, tool: &mut Value) -> Option<String> {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let Some(o) = self.by_backend.get(&name) else {
            return (!self.by_client.contains_key(&name)).then_some(name);
        };
        let client = o.name.clone().unwrap_or_else(|| name.clone());
        if let Value::Object(t) = tool {
            for (field, new) in [("name", &o.name), ("description", &o.description), ("title", &o.title)] {
                if let Some(new) = new {
                    t.insert(field.into(), Value::String(new.clone()));
                }
            }
        }
        Some(client)
    }
}

/// Rewrites the tools of a `tools/list` result (or of a batch of answers): renamed and re-described by
/// `overrides`, then only those `keep` allows (by their client-visible name). Everything else, `nextCursor`
/// included, is left as it is: a page may hold fewer tools than the backend sent. True when it changed
/// something.
pub fn rewrite_list(v: &mut Value, overrides: &Overrides, keep: &dyn Fn(&str) -> bool) -> bool {
    if let Value::Array(items) = v {
        let mut changed = false;
        for m in items {
            changed |= rewrite_list(m, overrides, keep);
        }
        return changed;
    }
    let Some(tools) = v.pointer_mut("/result/tools").and_then(Value::as_array_mut) else {
        return false;
    };
    let before = tools.clone();
    tools.retain_mut(|t| overrides.apply(t).is_some_and(|name| keep(&name)));
    *tools != before
}
