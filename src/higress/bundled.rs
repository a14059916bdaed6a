//! A survey of Higress's bundled `mcp-server` configs (`plugins/wasm-go/mcp-servers/*/mcp-server.yaml`):
//! how many load unchanged, and how many tools render a request from sample arguments. The configs are not
//! part of this repository: `scripts/higress-bundled.sh` fetches them into `e2e/.cache` and runs this with
//! `HIGRESS_BUNDLED_DIR` pointing there.

use crate::gateway::Gateway;
use crate::tool::Prepared;
use serde_json::{json, Map, Value};

/// An argument value of the declared type (its enum's first value, or its default, when it has one).
fn sample(schema: &Value) -> Value {
    if let Some(v) = schema.get("enum").and_then(Value::as_array).and_then(|e| e.first()) {
        return v.clone();
    }
    if let Some(d) = schema.get("default") {
        return d.clone();
    }
    match schema.get("type").and_then(Value::as_str).unwrap_or("string") {
        "integer" => json!(1),
        "number" => json!(1.5),
        "boolean" => json!(true),
        "array" => json!([schema.get("items").map_or(json!("a"), sample)]),
        "object" => {
            let props = schema.get("properties").and_then(Value::as_object);
            Value::Object(props.map(|p| p.iter().map(|(k, v)| (k.clone(), sample(v))).collect()).unwrap_or_default())
        }
        _ => json!("sample"),
    }
}

#[test]
#[ignore = "run by scripts/higress-bundled.sh, which fetches Higress's configs"]
fn bundled_configs_load_and_render() {
    let dir = std::env::var("HIGRESS_BUNDLED_DIR").expect("HIGRESS_BUNDLED_DIR: run scripts/higress-bundled.sh");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no configs in {dir}");
    let (mut loaded, mut tools, mut rendered) = (0, 0, 0);
    let mut failures: Vec<String> = Vec::new();
    for path in &files {
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(path).unwrap();
        let gw = match Gateway::from_config_str(&text) {
            Ok(gw) => gw,
            Err(e) => {
                failures.push(format!("LOAD {name}: {e}"));
                continue;
            }
        };
        loaded += 1;
        for server in &gw.servers {
            for tool in &server.tools {
                tools += 1;
                let listing = tool.listing();
                let schema = &listing["inputSchema"];
                let mut args = Map::new();
                for (k, v) in schema["properties"].as_object().into_iter().flatten() {
                    args.insert(k.clone(), sample(v));
                }
                match tool.prepare(&gw.templates, &server.config, Some(&Value::Object(args))) {
                    Prepared::Upstream(..) => rendered += 1,
                    Prepared::Done(v) if v["isError"] != json!(true) => rendered += 1,
                    Prepared::Done(v) => {
                        failures.push(format!("RENDER {name}/{}: {}", tool.name, v["content"][0]["text"]))
                    }
                }
            }
        }
    }
    println!("configs: {} found, {loaded} load unchanged; tools: {tools} in them, {rendered} render", files.len());
    for f in &failures {
        println!("{f}");
    }
}
