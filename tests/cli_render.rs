//! `mcp-gateway render`, the dry run, called as operators call it: the built binary on config files.

use std::path::PathBuf;
use std::process::{Command, Output};

const OURS: &str = r#"
servers:
  - name: weather
    upstream: {cluster: api, timeoutMs: 2000}
    config: {base: /v1, apiToken: tok-9}
    securitySchemes: [{id: key, type: apiKey, in: header, name: X-Key, defaultCredential: key-123}]
    defaultUpstreamSecurity: {id: key}
    tools:
      - name: forecast
        description: d
        args:
          - {name: city, type: string, required: true, position: path}
          - {name: days, type: integer, default: 3, position: query}
          - {name: note, type: string}
        requestTemplate:
          url: "{{ config.base }}/forecast/{city}"
          method: POST
          headers: [{key: X-Token, value: "t={{ config.apiToken }}"}]
          argsToJsonBody: true
        responseTemplate: {body: "{{ response.city }}: {{ response.temp }} C"}
        errorResponseTemplate: "failed with {{ status }}: {{ response.error }}"
  - name: other
    tools: [{name: echo, description: d, responseTemplate: {body: "{{ args.x }}"}, args: [{name: x}]}]
"#;

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("mcp-gateway-render-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn file(name: &str, text: &str) -> String {
    let path = dir().join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn render(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mcp-gateway")).arg("render").args(args).output().expect("the CLI runs")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn prints_the_upstream_request_of_our_dialect() {
    let config = file("ours.yaml", OURS);
    let o = render(&[&config, "--tool", "forecast", "--args", r#"{"city":"São Paulo","note":"hi"}"#]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert_eq!(
        out,
        "# sent to Envoy cluster 'api' (upstream.dispatch: call), timeout 2000 ms\n\
         POST /v1/forecast/S%C3%A3o%20Paulo?days=3 HTTP/1.1\n\
         host: api\n\
         x-token: t=<redacted>\n\
         x-key: <redacted>\n\
         content-type: application/json\n\
         \n\
         {\"note\":\"hi\"}\n"
    );
}

#[test]
fn credentials_print_only_when_asked() {
    let config = file("ours4.yaml", OURS);
    let o = render(&[&config, "--tool", "forecast", "--args", r#"{"city":"Oslo"}"#, "--show-credentials"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("\nx-key: key-123\n") && out.contains("\nx-token: t=tok-9\n"), "{out}");
    // A secret the arguments happen to carry is hidden too, wherever it lands (here the JSON body).
    let o = render(&[&config, "--tool", "forecast", "--args", r#"{"city":"Oslo","note":"key-123"}"#]);
    let (out, _) = text(&o);
    assert!(!out.contains("key-123") && out.contains(r#"{"note":"<redacted>"}"#), "{out}");
}

#[test]
fn renders_the_result_of_an_answer() {
    let config = file("ours2.yaml", OURS);
    let ok = file("ok.json", r#"{"city":"Oslo","temp":-3}"#);
    let o = render(&[&config, "--tool", "forecast", "--args", r#"{"city":"Oslo"}"#, "--response", &ok]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("--- result (answer: HTTP 200"), "{out}");
    assert!(out.contains(r#""text": "Oslo: -3 C""#), "{out}");
    // An error answer through errorResponseTemplate: the result is an error, and so is the exit status.
    let bad = file("bad.json", r#"{"error":"no such city"}"#);
    let o =
        render(&[&config, "--tool", "forecast", "--args", r#"{"city":"X"}"#, "--response", &bad, "--status", "404"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(out.contains("failed with 404: no such city") && out.contains(r#""isError": true"#), "{out}");
    // A tool without an upstream: its result at once.
    let o = render(&[&config, "--tool", "echo", "--args", r#"{"x":"hey"}"#]);
    assert!(o.status.success() && text(&o).0.contains(r#""text": "hey""#), "{:?}", text(&o));
}

#[test]
fn errors_are_the_gateways_own() {
    let config = file("ours3.yaml", OURS);
    // Arguments that fail validation: the result a client would get.
    let o = render(&[&config, "--tool", "forecast", "--args", r#"{"days":"many"}"#]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(out.contains("Invalid arguments for tool forecast:") && out.contains("`city`: is required"), "{out}");
    // An unknown tool in a named server: the JSON-RPC error a client would get.
    let o = render(&[&config, "--server", "weather", "--tool", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("-32602: Unknown tool: nope"), "{:?}", text(&o));
    let o = render(&[&config, "--tool", "nope"]);
    assert!(text(&o).1.contains("Unknown tool: nope (in every server: weather, other)"), "{:?}", text(&o));
    // Usage errors exit 2; an invalid config 1, located as the plugin locates it.
    assert_eq!(render(&[&config]).status.code(), Some(2));
    assert_eq!(render(&[&config, "--tool", "forecast", "--status", "500"]).status.code(), Some(2));
    assert_eq!(render(&[&config, "--tool", "forecast", "--args", "{"]).status.code(), Some(2));
    let broken = file("broken.yaml", "servers: [{name: s, tools: [{name: t, urll: x}]}]");
    let o = render(&[&broken, "--tool", "t"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("server 's' tool 't' field 'urll'"), "{:?}", text(&o));
}

#[test]
fn per_route_rules_are_searched_too() {
    let config = file(
        "rules.yaml",
        "_rules_:\n  - _match_route_: [r1]\n    server: {name: ruled, templateDialect: jinja}\n    tools: [{name: t, description: d, requestTemplate: {url: /r}, upstream: {cluster: c}}]\n",
    );
    let o = render(&[&config, "--tool", "t"]);
    let (out, err) = text(&o);
    assert!(o.status.success() && out.contains("GET /r HTTP/1.1"), "{out}{err}");
}

/// Higress's dialect: one of its own reference configs, unchanged.
#[cfg(feature = "go-templates")]
#[test]
fn prints_the_upstream_request_of_higress_dialect() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/src/gotemplate/testdata/higress-configs/mcp-bravesearch.yaml");
    let o = render(&[config, "--tool", "brave_web_search", "--args", r#"{"q":"wasm","count":2}"#]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.starts_with("# sent through the MCP request's own route (upstream.dispatch: route)"), "{out}");
    // (How Higress orders and encodes the query is the request semantics' business, not this test's.)
    let line = out.lines().nth(1).unwrap_or_default();
    assert!(line.starts_with("GET /res/v1/web/search?") && line.ends_with(" HTTP/1.1"), "{out}");
    assert!(["q=wasm", "count=2", "offset=0"].iter().all(|p| line.contains(p)), "{out}");
    assert!(out.contains("\nhost: api.search.brave.com\n"), "{out}");
    let answer = file("brave.json", r#"{"web":{"results":[{"title":"T","url":"https://u","description":"D"}]}}"#);
    let o = render(&[config, "--tool", "brave_web_search", "--args", r#"{"q":"wasm"}"#, "--response", &answer]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains(r#"## 结果 1\n- **标题**: T\n- **描述**: D\n- **URL**: https://u\n"#), "{out}");
    // Higress's own words for a failed call.
    let o = render(&[
        config,
        "--tool",
        "brave_web_search",
        "--args",
        r#"{"q":"wasm"}"#,
        "--response",
        &answer,
        "--status",
        "429",
    ]);
    assert!(text(&o).0.contains("429"), "{:?}", text(&o));
}
