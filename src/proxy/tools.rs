//! The tools of a proxied server as its clients see them: `allowTools` (and the request's
//! `x-envoy-allow-mcp-tools`) filter them, `toolOverrides` rename and re-describe them. Clients only ever
//! see and call the new names; the backend only ever gets its own.

use serde_json::{Map, Value};

/// One entry of `toolOverrides`: the backend's tool and what its clients see instead.
#[derive(Debug, Default)]
struct Entry {
    backend: String,
    /// `[name, description, title]`, each optional; a name equal to the backend's is no rename.
    fields: [Option<String>; 3],
}

const FIELDS: [&str; 3] = ["name", "description", "title"];

impl Entry {
    fn renamed(&self) -> Option<&str> {
        self.fields[0].as_deref().filter(|n| *n != self.backend)
    }
}

/// `toolOverrides` compiled (a short list: looked up by scanning).
#[derive(Debug, Default)]
pub struct Overrides {
    entries: Vec<Entry>,
}

fn name_ok(n: &str) -> bool {
    !n.is_empty() && n.len() <= 128 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

impl Overrides {
    /// Reads `toolOverrides` (`{backend name: {name?, description?, title?}}`) and checks names (1-128 of
    /// `A-Za-z0-9_.-`), that every entry changes something, that no two tools end up with one name, and
    /// that `allow` uses new names; errors give the field and name the tool.
    pub fn compile(map: &Map<String, Value>, allow: Option<&[String]>) -> Result<Overrides, (String, String)> {
        let mut entries: Vec<Entry> = Vec::with_capacity(map.len());
        for (backend, o) in map {
            let err = |field: &str, msg: String| Err((format!("toolOverrides.{backend}{field}"), msg));
            if !name_ok(backend) {
                return err("", "is not a tool name: use 1-128 characters from A-Z a-z 0-9 _ - .".into());
            }
            let Some(o) = o.as_object().filter(|o| !o.is_empty()) else {
                return err("", "needs one or more of name, description, title".into());
            };
            let mut entry = Entry { backend: backend.clone(), ..Entry::default() };
            for (k, v) in o {
                let Some(i) = FIELDS.iter().position(|f| f == k) else {
                    return err(&format!(".{k}"), "is not a field: use name, description, title".into());
                };
                let Some(v) = v.as_str() else { return err(&format!(".{k}"), "must be a string".into()) };
                entry.fields[i] = Some(v.to_string());
            }
            if let Some(new) = entry.renamed() {
                if !name_ok(new) {
                    return err(".name", format!("'{new}' must be 1-128 characters from A-Z a-z 0-9 _ - ."));
                }
                if let Some(other) = entries.iter().find(|e| e.renamed() == Some(new)) {
                    return err(".name", format!("'{}' is renamed to '{new}' too", other.backend));
                }
            }
            entries.push(entry);
        }
        let overrides = Overrides { entries };
        for e in &overrides.entries {
            let Some(new) = e.renamed() else { continue };
            if overrides.entries.iter().any(|o| o.backend == new && o.renamed().is_none()) {
                let msg = format!("'{new}' stays the name of another tool (rename that one too)");
                return Err((format!("toolOverrides.{}.name", e.backend), msg));
            }
        }
        for old in allow.into_iter().flatten() {
            if overrides.backend_name(old).is_none() {
                return Err(("allowTools".into(), format!("'{old}' is renamed by toolOverrides: list its new name")));
            }
        }
        Ok(overrides)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The backend's name of the tool a client calls `name`; `None` when clients cannot know it (the old
    /// name of a renamed tool).
    pub fn backend_name<'a>(&'a self, name: &'a str) -> Option<&'a str> {
        if let Some(e) = self.entries.iter().find(|e| e.renamed() == Some(name)) {
            return Some(&e.backend);
        }
        let renamed = self.entries.iter().any(|e| e.backend == name && e.renamed().is_some());
        (!renamed).then_some(name)
    }

    /// Rewrites one tool of a `tools/list` answer and gives its client-visible name; `None` when clients
    /// must not see it (a backend tool whose name a rename took: calls by that name reach the renamed one).
    fn apply(&self, tool: &mut Value) -> Option<String> {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("").to_string();
        let Some(e) = self.entries.iter().find(|e| e.backend == name) else {
            return (self.backend_name(&name) == Some(&name)).then_some(name);
        };
        if let Value::Object(t) = tool {
            for (field, new) in FIELDS.iter().zip(&e.fields) {
                if let Some(new) = new {
                    t.insert(field.to_string(), Value::String(new.clone()));
                }
            }
        }
        Some(e.renamed().unwrap_or(&name).to_string())
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
    let before = tools.len();
    tools.retain_mut(|t| overrides.apply(t).is_some_and(|name| keep(&name)));
    tools.len() != before || !overrides.is_empty()
}

/// Filters the `prompts`, `resources` or `resourceTemplates` of a list result (or a batch of answers) to
/// those `keep` allows, by name (prompts), `uri` or `uriTemplate`. True when it removed something.
pub fn filter_list(v: &mut Value, key: &str, keep: &dyn Fn(&str) -> bool) -> bool {
    if let Value::Array(items) = v {
        let mut changed = false;
        for m in items {
            changed |= filter_list(m, key, keep);
        }
        return changed;
    }
    let field = match key {
        "prompts" => "name",
        "resources" => "uri",
        _ => "uriTemplate",
    };
    let Some(items) = v.get_mut("result").and_then(|r| r.get_mut(key)).and_then(Value::as_array_mut) else {
        return false;
    };
    let before = items.len();
    items.retain(|i| keep(i.get(field).and_then(Value::as_str).unwrap_or("")));
    items.len() != before
}
