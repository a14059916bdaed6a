//! Shared definitions: the subschemas a conversion repeats across its tools, moved into the server's
//! `schemaDefs` once and referred to by `$ref: "#/$defs/NAME"`.
//!
//! The converter inlines every `$ref` of the document (to a bounded depth), so that each tool's schemas
//! are self-contained; a large API then repeats the same models in hundreds of tools (Stripe: 57 MB of
//! config, 426 output schemas of which 217 distinct; Kubernetes: 7,765 argument schemas, 253 distinct), and
//! every Envoy worker parses and holds all of it. This pass finds identical subschemas by content (each
//! subtree is interned bottom-up, so the pass is linear in the config's size) and keeps each repeated one
//! once. The gateway lists each tool inlined again (`schema::Validator::listing`), so clients see what the
//! inlined conversion showed, byte for byte.

use crate::config::ToolConfig;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// Subschemas smaller than this (as JSON text, roughly) stay where they are: a `$ref` saves little.
const MIN_BYTES: usize = 160;

/// A subtree by content: a scalar's JSON text, or its members' ids.
#[derive(Hash, PartialEq, Eq)]
enum Key {
    Leaf(String),
    List(Vec<u32>),
    Object(Vec<(String, u32)>),
}

/// What a value is, where it is met.
#[derive(Clone, Copy, PartialEq)]
enum Pos {
    /// Not a schema (an `enum` list, a `default`, an `example`).
    Data,
    /// A subschema, which may become a `$ref`.
    Schema,
    /// A schema that stays in place: a tool's `outputSchema`.
    Pinned,
    /// An argument's own schema, and its `items`, which stay in place: the gateway coerces arguments
    /// towards their declared type and fills in their defaults from there (`schema::coerce_and_default`).
    Arg,
    /// A tool's `inputSchema`: its `properties` are arguments.
    Input,
    /// A map of subschemas (`properties`), of arguments, or a list of subschemas (`allOf`).
    Map,
    ArgMap,
    List,
}

impl Pos {
    /// The position of a schema's member `key`.
    fn member(self, key: &str, value: &Value) -> Pos {
        match self {
            Pos::Map | Pos::List => Pos::Schema,
            Pos::ArgMap => Pos::Arg,
            Pos::Data => Pos::Data,
            _ => match key {
                "properties" if self == Pos::Input => Pos::ArgMap,
                "properties" | "patternProperties" | "$defs" | "definitions" | "dependentSchemas" | "dependencies" => {
                    Pos::Map
                }
                "items" if value.is_array() => Pos::List,
                "items" if self == Pos::Arg => Pos::Arg,
                "allOf" | "anyOf" | "oneOf" | "prefixItems" => Pos::List,
                "items"
                | "additionalProperties"
                | "not"
                | "if"
                | "then"
                | "else"
                | "contains"
                | "propertyNames"
                | "unevaluatedProperties"
                | "unevaluatedItems"
                | "additionalItems"
                | "contentSchema" => Pos::Schema,
                _ => Pos::Data,
            },
        }
    }
}

struct Node {
    bytes: usize,
    /// Times met in a schema position.
    uses: u32,
    /// Holds no keyword that is relative to its place in a document (`$ref`, `$id`, anchors): only such
    /// subtrees can move.
    movable: bool,
    name: Option<String>,
}

#[derive(Default)]
struct Sharer {
    ids: HashMap<Key, u32>,
    nodes: Vec<Node>,
    defs: Map<String, Value>,
    names: HashSet<String>,
    /// Second pass: replace repeated subschemas with `$ref`s.
    rewrite: bool,
}

impl Sharer {
    /// Interns `v` (as it was before this pass changed it) and returns its id; counts its uses in the first
    /// pass, moves it to the definitions in the second when it is shared.
    fn visit(&mut self, v: &mut Value, pos: Pos) -> u32 {
        let (key, bytes, movable) = match &mut *v {
            Value::Object(m) => {
                let mut entries = Vec::with_capacity(m.len());
                let (mut bytes, mut movable) = (2, true);
                for (k, x) in m.iter_mut() {
                    let id = self.visit(x, pos.member(k, x));
                    let n = &self.nodes[id as usize];
                    bytes += k.len() + 4 + n.bytes;
                    movable &= n.movable && !k.starts_with('$');
                    entries.push((k.clone(), id));
                }
                (Key::Object(entries), bytes, movable)
            }
            Value::Array(a) => {
                let child = if pos == Pos::List { Pos::Schema } else { Pos::Data };
                let mut ids = Vec::with_capacity(a.len());
                let (mut bytes, mut movable) = (2, true);
                for x in a.iter_mut() {
                    let id = self.visit(x, child);
                    bytes += 1 + self.nodes[id as usize].bytes;
                    movable &= self.nodes[id as usize].movable;
                    ids.push(id);
                }
                (Key::List(ids), bytes, movable)
            }
            other => {
                let text = other.to_string();
                let bytes = text.len();
                (Key::Leaf(text), bytes, true)
            }
        };
        let next = self.nodes.len() as u32;
        let id = *self.ids.entry(key).or_insert(next);
        if id == next {
            self.nodes.push(Node { bytes, uses: 0, movable, name: None });
        }
        if pos == Pos::Schema && v.is_object() {
            if !self.rewrite {
                self.nodes[id as usize].uses += 1;
            } else if self.shared(id) {
                let name = self.name_of(id, v);
                let def = std::mem::replace(
                    v,
                    crate::json::object(vec![("$ref", Value::String(format!("#/$defs/{}", pointer_token(&name))))]),
                );
                self.defs.entry(name).or_insert(def);
            }
        }
        id
    }

    fn shared(&self, id: u32) -> bool {
        let n = &self.nodes[id as usize];
        n.uses >= 2 && n.bytes >= MIN_BYTES && n.movable
    }

    /// The definition's name: from the schema's `title` where it has one (`Customer`, `Customer_2` for
    /// a shallower copy), else `s1`, `s2`...
    fn name_of(&mut self, id: u32, v: &Value) -> String {
        if let Some(name) = &self.nodes[id as usize].name {
            return name.clone();
        }
        let title: String = v
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or("")
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "_.-".contains(*c))
            .take(64)
            .collect();
        let base = if title.is_empty() { "s".to_string() } else { title };
        let mut name = if base == "s" { format!("s{}", self.defs.len() + 1) } else { base.clone() };
        let mut n = 1;
        while !self.names.insert(name.clone()) {
            n += 1;
            name = format!("{base}_{n}");
        }
        self.nodes[id as usize].name = Some(name.clone());
        name
    }

    fn tools(&mut self, tools: &mut [&mut ToolConfig]) {
        for tool in tools.iter_mut() {
            if let Some(s) = tool.input_schema.as_mut() {
                self.visit(s, Pos::Input);
            }
            if let Some(s) = tool.output_schema.as_mut() {
                self.visit(s, Pos::Pinned);
            }
            for arg in tool.args.iter_mut() {
                for s in [arg.schema.as_mut(), arg.items.as_mut()].into_iter().flatten() {
                    self.visit(s, Pos::Arg);
                }
                if let Some(props) = arg.properties.as_mut() {
                    self.visit(props, Pos::Map);
                }
            }
        }
    }
}

fn pointer_token(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// Moves the subschemas that `tools` repeat into definitions (returned, for the server's `schemaDefs`),
/// leaving `$ref`s to them. `taken`: names already in use there.
pub fn share(tools: &mut [&mut ToolConfig], taken: impl IntoIterator<Item = String>) -> Map<String, Value> {
    let mut s = Sharer { names: taken.into_iter().collect(), ..Sharer::default() };
    s.tools(tools);
    s.rewrite = true;
    s.tools(tools);
    s.defs
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tool(v: Value) -> ToolConfig {
        ToolConfig::read(&v).unwrap()
    }

    /// A schema large enough to be shared.
    fn model(title: &str) -> Value {
        json!({"type": "object", "title": title, "properties": {
            "city": {"type": "string", "description": "City, district, suburb, town, or village."},
            "line1": {"type": "string", "description": "Address line 1 (e.g., street, PO Box, or company name)."}}})
    }

    #[test]
    fn only_repeated_movable_subschemas_move_and_places_that_are_read_stay() {
        let small = json!({"type": "string", "maxLength": 10});
        let anchored = json!({"$id": "https://x.example/a", "type": "object", "description": "x".repeat(200)});
        let data = json!({"default": model("Address"), "enum": [model("Address")], "examples": [model("Item")]});
        let mut t = tool(json!({"name": "t", "outputSchema": {"type": "object", "properties": {
                "home": model("Address"), "work": model("Address"), "tiny": small, "tiny2": small,
                "anchored": anchored, "anchored2": anchored, "data": data, "once": model("Once"),
                "list": {"type": "array", "items": model("Item")},
                "list2": {"type": "array", "items": model("Item"), "minItems": 1}}},
            "args": [{"name": "where", "schema": model("Address")}, {"name": "again", "schema": model("Address")},
                     {"name": "many", "schema": {"type": "array", "items": model("Item")}}]}));
        let before = serde_json::to_value(&t).unwrap();
        let defs = share(&mut [&mut t], []);
        assert_eq!(defs.keys().collect::<Vec<_>>(), ["Address", "Item"]);
        assert_eq!(defs["Address"], model("Address"));
        let out = &t.output_schema.as_ref().unwrap()["properties"];
        assert_eq!(out["home"], json!({"$ref": "#/$defs/Address"}));
        assert_eq!(out["list"]["items"], json!({"$ref": "#/$defs/Item"}));
        // Small, once, anchored, and values that are not schemas (`default`, `enum`, `examples`) stay.
        for kept in ["tiny", "anchored", "data", "once"] {
            assert_eq!(out[kept], before["outputSchema"]["properties"][kept], "{kept}");
        }
        // Arguments' own schemas and their items are read for coercion and defaults: they stay.
        assert_eq!(t.args[0].schema, Some(model("Address")));
        assert_eq!(t.args[2].schema.as_ref().unwrap()["items"], model("Item"));
    }

    #[test]
    fn names_come_from_titles_around_taken_ones() {
        let mut deep = model("Address");
        deep["properties"]["inner"] = model("Address");
        let mut t = tool(json!({"name": "t", "outputSchema": {"type": "object", "properties": {
            "a": deep.clone(), "b": deep, "c": {"type": "object", "description": "z".repeat(200)},
            "d": {"type": "object", "description": "z".repeat(200)}}}}));
        let defs = share(&mut [&mut t], ["Address".to_string()]);
        assert_eq!(defs.keys().collect::<Vec<_>>(), ["Address_2", "Address_3", "s3"]);
        assert_eq!(defs["Address_3"]["properties"]["inner"], json!({"$ref": "#/$defs/Address_2"}));
    }
}
