//! Expected outputs are read from Go's text/template, sprig v3, gjson and Higress's gjson_template sources and
//! docs; no Go toolchain can run here to produce them.

use super::*;

const LIMITS: Limits = Limits { fuel: 200_000, max_output: 1 << 20 };

fn env() -> Env {
    // 2024-03-10 06:30:05.123 UTC, a Sunday.
    Env { now: Some(Time { secs: 1_710_052_205, nanos: 123_000_000, offset: 0, zone: "UTC" }), ..Env::default() }
}

fn render(src: &str, data: &str) -> Result<String, GoError> {
    GoTemplate::parse(src)?.render(data, LIMITS, false, &env())
}

fn ok(src: &str, data: &str) -> String {
    render(src, data).unwrap_or_else(|e| panic!("{src}: {e}"))
}

#[test]
fn smoke() {
    assert_eq!(ok("hi {{.a.b}}!", r#"{"a":{"b":"x"}}"#), "hi x!");
}

const DATA: &str = r#"{"config":{"key":"k1","base":"/v1"},"args":{"city":"Oslo","n":3,"f":1.50,"t":true,"z":0,"e":"","nul":null,
 "tags":["a","b","c"],"obj":{"x":1,"y":"two"},"empty":[],"eobj":{},"html":"<a&b>"},
 "users":[{"name":"ann","age":31,"active":true},{"name":"bob","age":25,"active":false},{"name":"cy","age":40,"active":true}]}"#;

#[test]
fn fields_are_gjson_paths_and_missing_prints_nothing() {
    assert_eq!(
        ok("{{.args.city}}|{{.args.n}}|{{.args.f}}|{{.args.t}}|{{.args.nul}}|{{.args.nope}}|{{.nope.deeper}}", DATA),
        "Oslo|3|1.50|true|null||"
    );
    // Objects and arrays print as their raw JSON.
    assert_eq!(ok("{{.args.tags}} {{.args.obj}}", DATA), r#"["a","b","c"] {"x":1,"y":"two"}"#);
    // Dot, $ and variables with field chains.
    assert_eq!(ok("{{with .args}}{{.city}}{{$.config.key}}{{end}}", DATA), "Oslok1");
    assert_eq!(ok("{{$a := .args}}{{$a.obj.y}}", DATA), "two");
    assert_eq!(ok("{{(.args).obj.x}}", DATA), "1");
}

#[test]
fn if_uses_gjson_truthiness() {
    let t = "{{if .args.X}}T{{else}}F{{end}}";
    for (x, want) in [
        ("city", "T"),
        ("n", "T"),
        ("t", "T"),
        ("z", "F"),
        ("e", "F"),
        ("nul", "F"),
        ("nope", "F"),
        ("tags", "T"),
        ("empty", "F"),
        ("obj", "T"),
        ("eobj", "F"),
    ] {
        assert_eq!(ok(&t.replace('X', x), DATA), want, "{x}");
    }
    assert_eq!(ok("{{if .args.z}}a{{else if .args.n}}b{{else}}c{{end}}", DATA), "b");
    assert_eq!(ok("{{with .args.nope}}a{{else with .args.city}}{{.}}{{end}}", DATA), "Oslo");
}

#[test]
fn range_walks_arrays_objects_integers_and_strings() {
    assert_eq!(ok("{{range .args.tags}}[{{.}}]{{end}}", DATA), "[a][b][c]");
    assert_eq!(ok("{{range $i, $t := .args.tags}}{{$i}}={{$t}} {{end}}", DATA), "0=a 1=b 2=c ");
    assert_eq!(ok("{{range $k, $v := .args.obj}}{{$k}}:{{$v}};{{end}}", DATA), "x:1;y:two;");
    assert_eq!(ok("{{range 3}}{{.}}{{end}}", DATA), "012");
    assert_eq!(ok("{{range $c := \"hé!\"}}<{{$c}}>{{end}}", DATA), "<h><é><!>");
    assert_eq!(ok("{{range .args.empty}}x{{else}}none{{end}}", DATA), "none");
    assert_eq!(ok("{{range .users}}{{if not .active}}{{continue}}{{end}}{{.name}}{{if eq .name \"cy\"}}{{break}}{{end}},{{end}}", DATA), "ann,cy");
    assert!(render("{{range $i, $v := 3}}{{end}}", DATA).unwrap_err().to_string().contains("more than one variable"));
    // Variables declared in a range body do not leak out of it; `=` assigns an outer one.
    assert_eq!(ok("{{$n := 0}}{{range .args.tags}}{{$n = add $n 1}}{{end}}{{$n}}", DATA), "3");
}

#[test]
fn trim_markers_comments_and_literals() {
    assert_eq!(ok("a  {{- .args.city -}}  \n b", DATA), "aOslob");
    assert_eq!(ok("a {{/* note */}} b {{- /* trimmed */ -}} c", DATA), "a  bc");
    assert_eq!(
        ok(r#"{{"q\"\n"}}{{`raw\n`}}{{'a'}} {{1.5}} {{-2}} {{0x1F}} {{true}} {{nil | default "d"}}"#, DATA),
        "q\"\nraw\\n97 1.500000 -2 31 true d"
    );
}

#[test]
fn pipelines_parentheses_and_builtins() {
    assert_eq!(ok("{{.args.city | printf \"%s!\" | upper}}", DATA), "OSLO!");
    assert_eq!(
        ok("{{printf \"%d-%05.1f-%q-%v-%x\" .args.n .args.f .args.city .args.t 255}}", DATA),
        "3-001.5-\"Oslo\"-true-ff"
    );
    assert_eq!(
        ok(
            "{{len .args.tags}} {{len .args.obj}} {{len .args.city}} {{index .args.tags 1}} {{index .args.obj \"y\"}}",
            DATA
        ),
        "3 2 4 b two"
    );
    assert_eq!(ok("{{eq .args.n 3}} {{eq .args.n \"3\"}} {{eq .args.city \"Oslo\" \"x\"}} {{ne .args.city \"Oslo\"}} {{lt 1 2}} {{ge .args.f 2}} {{gt \"b\" \"a\"}}", DATA), "true true true false true false true");
    assert_eq!(
        ok(
            "{{and .args.n .args.city}} {{and .args.z .args.city}} {{or .args.e .args.nope \"x\"}} {{not .args.e}}",
            DATA
        ),
        "Oslo 0 x true"
    );
    assert_eq!(ok("{{print \"a\" 1 2 \"b\"}}|{{println .args.city}}|{{html .args.html}}|{{js \"it's\"}}|{{urlquery \"a b&c\"}}", DATA), "a1 2b|Oslo\n|&lt;a&amp;b&gt;|it\\'s|a+b%26c");
    assert_eq!(ok("{{slice \"hello\" 1 3}} {{slice .args.tags 1}}", DATA), "el [\"b\",\"c\"]");
    // `and` stops at the first false value: the failing call after it never runs.
    assert_eq!(ok("{{and .args.z (div 1 0)}}", DATA), "0");
    assert!(render("{{div 1 0}}", DATA).unwrap_err().to_string().contains("integer divide by zero"));
}

#[test]
fn gjson_paths_queries_modifiers_and_multipaths() {
    assert_eq!(ok(r#"{{gjson "users.#(active==true)#.name"}}"#, DATA), r#"["ann","cy"]"#);
    assert_eq!(ok(r#"{{gjson "users.#(age>30).name"}}"#, DATA), "ann");
    assert_eq!(ok(r#"{{gjson "users.@reverse.#.name"}}"#, DATA), r#"["cy","bob","ann"]"#);
    assert_eq!(ok(r#"{{gjson "{name:users.0.name,count:users.#}"}}"#, DATA), r#"{"name":"ann","count":3}"#);
    assert_eq!(
        ok(r#"{{gjson "users.#"}} {{gjson "users.1.name"}} {{gjson "args.tags|@reverse"}}"#, DATA),
        r#"3 bob ["c","b","a"]"#
    );
    assert_eq!(ok(r#"{{range $u := gjson "users.#(age<35)#"}}{{$u.name}} {{end}}"#, DATA), "ann bob ");
    // A back-quoted path inside a string literal, as the first word, is a gjson path (gjson_template's exec.go).
    assert_eq!(ok("{{\"`users.2.name`\"}}", DATA), "cy");
    assert!(render("{{gjson 1}}", DATA).unwrap_err().to_string().contains("string path"));
}

#[test]
fn unknown_and_unimplemented_functions_are_refused_at_parse() {
    let e = GoTemplate::parse("x {{nosuch .a}}").unwrap_err();
    assert!(e.to_string().contains("function \"nosuch\" not defined"), "{e}");
    let e = GoTemplate::parse("{{.a | env}}").unwrap_err();
    assert!(e.to_string().contains("\"env\"") && e.to_string().contains("not implemented"), "{e}");
    let e = GoTemplate::parse("{{if .a}}{{sha1sum .a}}{{end}}").unwrap_err();
    assert!(e.to_string().contains("sha1sum"), "{e}");
    for bad in [
        "{{.a",
        "{{if .a}}x",
        "{{end}}",
        "{{else}}",
        "{{template \"x\"}}",
        "{{define \"x\"}}{{end}}",
        "{{break}}",
        "{{$x}}",
        "{{$x = 1}}",
        "{{(1}}",
        "{{1)}}",
        "{{.a b}}",
        "{{\"x}}",
        "{{|}}",
        "{{.a |}}",
        "{{}}",
        "{{/* x }}",
    ] {
        assert!(GoTemplate::parse(bad).is_err(), "{bad} should not parse");
    }
    // Literals cannot take arguments.
    assert!(render("{{.args.city 1}}", DATA).is_err());
    assert!(render("{{.args.city | .args.n}}", DATA).is_err());
}

#[test]
fn hostile_templates_run_out_of_fuel_or_space() {
    let small = Limits { fuel: 10_000, max_output: 1 << 20 };
    let env = env();
    for src in [
        "{{range 1000000000}}x{{end}}",
        "{{range 100000}}{{range 100000}}{{end}}{{end}}",
        "{{range until 100000000}}{{end}}",
        "{{range $i := 100000}}{{$x := printf \"%d\" $i}}{{end}}",
    ] {
        let t = GoTemplate::parse(src).unwrap();
        assert_eq!(t.render("{}", small, false, &env), Err(GoError::OutOfFuel), "{src}");
    }
    let tight = Limits { fuel: 1_000_000, max_output: 100 };
    let t = GoTemplate::parse("{{range 1000}}xx{{end}}").unwrap();
    assert_eq!(t.render("{}", tight, false, &env), Err(GoError::OutputTooLarge { limit: 100 }));
    assert!(GoTemplate::parse("{{repeat 1000000000 \"x\"}}").unwrap().render("{}", tight, false, &env).is_err());
    // Nesting is bounded when parsing.
    let deep = format!("{}1{}", "{{(".repeat(0) + &"(".repeat(100).replacen('(', "{{(", 1), ")".repeat(100) + "}}");
    assert!(GoTemplate::parse(&deep).is_err());
    let deep_if = "{{if 1}}".repeat(100) + &"{{end}}".repeat(100);
    assert!(GoTemplate::parse(&deep_if).is_err());
    // Data must be an object or array (Higress's rule).
    assert_eq!(GoTemplate::parse("x").unwrap().render("\"s\"", LIMITS, false, &env), Err(GoError::BadData));
}

#[test]
fn url_templates_escape_request_values_but_not_config() {
    let t = GoTemplate::parse("{{.config.base}}/u/{{.args.p}}?q={{.args.q | upper}}").unwrap();
    let out = t.render(r#"{"config":{"base":"/v1"},"args":{"p":"../a b","q":"x&y"}}"#, LIMITS, true, &env()).unwrap();
    assert_eq!(out, "/v1/u/..%2Fa%20b?q=X%26Y");
    assert!(!t.reads_config_only() && GoTemplate::parse("Bearer {{.config.k}}").unwrap().reads_config_only());
    assert_eq!(GoTemplate::parse("plain").unwrap().literal().as_deref(), Some("plain"));
}
