//! Multi-file descriptions (DigitalOcean's is split over thousands of files, operations included) made into
//! one document: every file a `$ref` names is read once through the caller's reader, kept under
//! `x-mcp-gateway-files`, and every `$ref` rewritten to point there. URLs are never fetched; the converter
//! reports them as external.
//!
//! Sans-IO: the caller reads files (the CLI reads the document's folder; the plugin has no files).

use super::{parse_document, pointer_token};
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};

/// Where the files a document refers to are kept in the bundle.
pub const FILES: &str = "x-mcp-gateway-files";

/// The bundled document, and one line per file that could not be read or parsed (its `$ref`s are left as
/// they were, so the operations using them are skipped as external). `root_name` is the document's own file
/// name, which other files may refer back to; `read` gets paths relative to the document's folder, never
/// outside it.
pub fn bundle(
    root: Value,
    root_name: &str,
    read: &mut dyn FnMut(&str) -> Result<String, String>,
) -> (Value, Vec<String>) {
    let mut problems = Vec::new();
    // Normalised path -> whether it was read.
    let mut known: HashMap<String, bool> = HashMap::new();
    let mut queue: VecDeque<(String, Value)> = VecDeque::new();
    let mut files = Map::new();
    let mut root = root;
    known.insert(root_name.to_string(), true);
    rewrite(&mut root, "", root_name, &mut |file| claim(file, &mut known, &mut queue, &mut problems, read));
    while let Some((path, mut value)) = queue.pop_front() {
        rewrite(&mut value, &path, root_name, &mut |file| claim(file, &mut known, &mut queue, &mut problems, read));
        files.insert(path, value);
    }
    if !files.is_empty() {
        if let Value::Object(m) = &mut root {
            m.insert(FILES.into(), Value::Object(files));
        }
    }
    (root, problems)
}

/// Reads a file the first time it is named; whether its `$ref`s can point into the bundle.
fn claim(
    file: &str,
    known: &mut HashMap<String, bool>,
    queue: &mut VecDeque<(String, Value)>,
    problems: &mut Vec<String>,
    read: &mut dyn FnMut(&str) -> Result<String, String>,
) -> bool {
    if let Some(ok) = known.get(file) {
        return *ok;
    }
    let loaded = read(file).and_then(|text| parse_document(&text).map_err(|e| e.reason));
    let ok = match loaded {
        Ok(v) => {
            queue.push_back((file.to_string(), v));
            true
        }
        Err(e) => {
            problems.push(format!("{file}: {e}"));
            false
        }
    };
    known.insert(file.to_string(), ok);
    ok
}

/// Rewrites every `$ref` in `v`, which was read from `here` (`""`: the root document).
fn rewrite(v: &mut Value, here: &str, root_name: &str, claim: &mut dyn FnMut(&str) -> bool) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                match (k.as_str(), child) {
                    ("$ref", Value::String(r)) => {
                        if let Some(new) = target(r, here, root_name, claim) {
                            *r = new;
                        }
                    }
                    (_, child) => rewrite(child, here, root_name, claim),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite(c, here, root_name, claim)),
        _ => {}
    }
}

/// The bundle-local form of `r`, a `$ref` found in file `here`; `None` leaves it as it is.
fn target(r: &str, here: &str, root_name: &str, claim: &mut dyn FnMut(&str) -> bool) -> Option<String> {
    let (file, fragment) = r.split_once('#').unwrap_or((r, ""));
    let fragment = fragment.trim_end_matches('/');
    let home = |file: &str| {
        if file.is_empty() {
            format!("#{fragment}")
        } else {
            // `%` escaped too: `$ref` fragments are percent-decoded when they are looked up.
            format!("#/{FILES}/{}{fragment}", pointer_token(file).replace('%', "%25"))
        }
    };
    if file.is_empty() {
        // Local to the file it is in.
        return (!here.is_empty()).then(|| home(here));
    }
    if file.contains("://") || file.starts_with('/') {
        return None;
    }
    let dir = here.rsplit_once('/').map_or("", |(d, _)| d);
    let path = normalise(dir, file)?;
    if path == root_name {
        return Some(home(""));
    }
    claim(&path).then(|| home(&path))
}

/// `dir/file` with `.` and `..` resolved; `None` when it leaves the document's folder.
fn normalise(dir: &str, file: &str) -> Option<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for part in file.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openapi::{convert, Options};
    use serde_json::json;

    /// DigitalOcean's layout: operations as `$ref`s to files, which refer to files relative to themselves.
    #[test]
    fn split_descriptions_become_one_document() {
        let files: HashMap<&str, &str> = HashMap::from([
            ("resources/apps/apps_list.yml", "operationId: apps_list\nparameters:\n  - $ref: 'parameters.yml#/page'\n  - $ref: '../../shared/parameters.yml#/per_page'\nresponses:\n  '200':\n    $ref: 'responses/list.yml'\n"),
            ("resources/apps/parameters.yml", "page:\n  name: page\n  in: query\n  required: true\n  schema:\n    $ref: '#/page_schema'\npage_schema:\n  type: integer\n"),
            ("shared/parameters.yml", "per_page:\n  name: per_page\n  in: query\n  schema: {type: integer, maximum: 200}\n"),
            ("resources/apps/responses/list.yml", "description: ok\ncontent:\n  application/json:\n    schema:\n      $ref: '../models/app.yml'\n"),
            ("resources/apps/models/app.yml", "type: object\nproperties:\n  id: {type: string}\n  owner: {$ref: '../../../DigitalOcean.yaml#/components/schemas/owner'}\n"),
        ]);
        let root = json!({"openapi": "3.0.0", "info": {"title": "do", "version": "2"}, "servers": [{"url": "https://api.example.com"}],
            "paths": {"/v2/apps": {"get": {"$ref": "resources/apps/apps_list.yml"}},
                      "/v2/gone": {"get": {"$ref": "resources/gone.yml"}},
                      "/v2/out": {"get": {"$ref": "../../etc/passwd"}},
                      "/v2/web": {"get": {"$ref": "https://example.com/op.yml"}}},
            "components": {"schemas": {"owner": {"type": "string"}}}});
        let mut asked = Vec::new();
        let (doc, problems) = bundle(root, "DigitalOcean.yaml", &mut |p| {
            asked.push(p.to_string());
            files.get(p).map(|t| t.to_string()).ok_or_else(|| "no such file".to_string())
        });
        assert_eq!(problems, ["resources/gone.yml: no such file"]);
        assert!(!asked.iter().any(|p| p.contains("passwd") || p.contains("://")), "{asked:?}");
        assert_eq!(asked.iter().filter(|p| p.as_str() == "resources/apps/parameters.yml").count(), 1, "read once");
        let c = convert(&doc, &Options::default()).unwrap();
        assert_eq!(c.tools.len(), 1);
        let tool = &c.tools[0].tool;
        assert_eq!(tool.name, "apps_list");
        let args: Vec<(&str, bool)> = tool.args.iter().map(|a| (a.name.as_str(), a.required)).collect();
        assert_eq!(args, [("page", true), ("per_page", false)], "every argument, from every file");
        assert_eq!(tool.args[0].schema, Some(json!({"type": "integer"})));
        let out = tool.output_schema.as_ref().unwrap();
        assert_eq!(out["properties"]["owner"], json!({"type": "string"}), "a $ref back into the root document");
        let reasons: Vec<&str> = c.skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons.iter().all(|r| r.contains("external $ref")), "{reasons:?}");
    }
}
