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
    // Numeric segments in a chain (gjson_template's README writes `{{.users.0.name}}`); `.5` alone is a number.
    assert_eq!(
        ok("{{.users.0.name}} {{.args.tags.2}} {{$.users.1.age}} {{(gjson \"users\").2.name}} {{add .5 1}}", DATA),
        "ann c 25 cy 1"
    );
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
    assert_eq!(ok("{{print \"a\" 1 2 \"b\"}}|{{println .args.city}}|{{html .args.html}}|{{js \"it's\"}}|{{urlquery \"a b&c\"}}", DATA), "a 1 2 b|Oslo\n|&lt;a&amp;b&gt;|it\\'s|a+b%26c");
    assert_eq!(ok("{{len 5}} {{len .args.nope}} {{printf \"100%\"}} {{printf \"%d%%\" 5}}", DATA), "0 0 100% 5%");
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
    // Modifiers the gjson crate lacks are refused, at load when written, at render when computed; an `@` in a
    // key or a query value is not a modifier.
    for path in ["args.obj|@keys", "@values", "{a:args.obj.@tostr}", "args.tags.@dig:x"] {
        let e = GoTemplate::parse(&format!("{{{{gjson {path:?}}}}}")).unwrap_err().to_string();
        assert!(e.contains("is not implemented") && e.contains(&path[path.find('@').unwrap()..][..4]), "{path}: {e}");
    }
    assert!(render("{{gjson .p}}", r#"{"p":"x|@group"}"#).unwrap_err().to_string().contains("@group"));
    assert_eq!(
        ok(r#"{{gjson `users.#(name=="a@b").age`}}{{gjson "args.tags|@this|@flatten|@ugly"}}"#, DATA),
        r#"["a","b","c"]"#
    );
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
    assert_eq!(out, "/v1/u/../a%20b?q=X%26Y", "`/` is kept in the path (the caller refuses dot segments)");
    let out = t.render(r#"{"config":{"base":"/v1"},"args":{"p":"a?b#c","q":"/x?y"}}"#, LIMITS, true, &env()).unwrap();
    assert_eq!(out, "/v1/u/a%3Fb%23c?q=%2FX%3FY");
    assert!(!t.reads_config_only() && GoTemplate::parse("Bearer {{.config.k}}").unwrap().reads_config_only());
    assert_eq!(GoTemplate::parse("plain").unwrap().literal().as_deref(), Some("plain"));
}

#[test]
fn sprig_strings_lists_math_and_encoding() {
    let d = DATA;
    for (src, want) in [
        ("{{trim \"  a b \"}}|{{trimAll \"$\" \"$5$\"}}|{{trimPrefix \"-\" \"-x\"}}|{{trimSuffix \"!\" \"x!\"}}", "a b|5|x|x"),
        ("{{upper .args.city}} {{lower \"ÀB\"}} {{title \"hello wide world\"}} {{untitle \"Hello World\"}}", "OSLO àb Hello Wide World hello world"),
        ("{{repeat 3 \"ab\"}} {{substr 1 3 \"hello\"}} {{substr -1 2 \"hello\"}} {{trunc 2 \"hello\"}} {{trunc -2 \"hello\"}}", "ababab el he he lo"),
        ("{{nospace \"a b  c\"}} {{abbrev 5 \"hello world\"}} {{initials \"John Doe\"}} {{swapcase \"aB\"}}", "abc he... JD Ab"),
        ("{{contains \"sl\" .args.city}} {{hasPrefix \"Os\" .args.city}} {{hasSuffix \"x\" .args.city}}", "true true false"),
        ("{{quote \"a\" \"b\\\"\"}} {{squote .args.city}} {{cat \"a\" .args.n nil \"b\"}}", "\"a\" \"b\\\"\" 'Oslo' a 3 b"),
        ("{{indent 2 \"a\\nb\"}}|{{nindent 1 \"x\"}}", "  a\n  b|\n x"),
        ("{{replace \"a\" \"o\" \"banana\"}} {{plural \"one\" \"many\" 1}} {{plural \"one\" \"many\" .args.n}}", "bonono one many"),
        ("{{splitList \",\" \"a,b\"}} {{(split \"$\" \"a$b\")._1}} {{(splitn \"-\" 2 \"a-b-c\")._1}}", "[\"a\",\"b\"] b b-c"),
        ("{{join \",\" .args.tags}} {{.args.tags | join \"+\"}} {{join \"-\" (list 1 \"x\" nil 2.5)}}", "a,b,c a+b+c 1-x-2.5"),
        ("{{sortAlpha (list \"b\" \"a\" \"C\")}} {{toString 5}} {{toStrings (list 1 2)}}", "[\"C\",\"a\",\"b\"] 5 [\"1\",\"2\"]"),
        ("{{regexMatch \"^O.*o$\" .args.city}} {{regexFind \"[0-9]+\" \"ab123c45\"}} {{regexFindAll \"[0-9]\" \"a1b2c3\" 2}}", "true 123 [\"1\",\"2\"]"),
        ("{{regexReplaceAll \"a(x*)b\" \"-ab-axxb-\" \"${1}W\"}} {{regexReplaceAllLiteral \"a\" \"banana\" \"$1\"}} {{regexSplit \"z+\" \"pizza\" -1}}", "-W-xxW- b$1n$1n$1 [\"pi\",\"a\"]"),
        ("{{len (randAlphaNum 12)}} {{len (randNumeric 3)}} {{regexMatch \"^[a-zA-Z]{5}$\" (randAlpha 5)}}", "12 3 true"),
        ("{{add 1 2 \"3\"}} {{add1 .args.n}} {{sub 5 7}} {{mul 2 3 4}} {{div 7 2}} {{mod 7 2}} {{max 1 9 3}} {{min 4 -2}}", "6 4 -2 24 3 1 9 -2"),
        ("{{add $.args.f 1}} {{addf 1.5 2}} {{subf 5 1.5}} {{mulf 1.5 2}} {{divf 1 4}} {{floor 1.7}} {{ceil 1.2}} {{round 3.14159 2}}", "2 3.500000 3.500000 3.000000 0.250000 1.000000 2.000000 3.140000"),
        ("{{int \"42\"}} {{int64 3.9}} {{atoi \"x\"}} {{float64 \"2.5\"}} {{until 3}} {{untilStep 0 10 4}} {{seq 3}} {{seq 5 3}}", "42 3 0 2.500000 [0,1,2] [0,4,8] 1 2 3 5 4 3"),
        ("{{first .args.tags}} {{last .args.tags}} {{rest .args.tags}} {{initial .args.tags}} {{append .args.tags \"d\"}} {{prepend .args.tags 0}}", "a c [\"b\",\"c\"] [\"a\",\"b\"] [\"a\",\"b\",\"c\",\"d\"] [0,\"a\",\"b\",\"c\"]"),
        ("{{concat .args.tags (list 1)}} {{reverse .args.tags}} {{uniq (list 1 1 2)}} {{without .args.tags \"b\"}} {{has \"b\" .args.tags}} {{compact (list 0 \"\" 1 nil \"x\")}}", "[\"a\",\"b\",\"c\",1] [\"c\",\"b\",\"a\"] [1,2] [\"a\",\"c\"] true [1,\"x\"]"),
        ("{{$d := dict \"a\" 1 \"b\" \"two\"}}{{get $d \"b\"}} {{hasKey $d \"a\"}} {{keys $d}} {{values $d}} {{set $d \"c\" 3}} {{unset $d \"a\"}}", "two true [\"a\",\"b\"] [1,\"two\"] {\"a\":1,\"b\":\"two\",\"c\":3} {\"b\":\"two\"}"),
        ("{{pick .args.obj \"x\"}} {{omit .args.obj \"x\"}} {{pluck \"name\" (index .users 0) (index .users 1)}} {{dig \"obj\" \"y\" \"dflt\" .args}} {{dig \"no\" \"dflt\" .args}}", "{\"x\":1} {\"y\":\"two\"} [\"ann\",\"bob\"] two dflt"),
        ("{{merge (dict \"a\" 1) (dict \"a\" 2 \"b\" 3)}} {{deepEqual (list 1) (list 1)}} {{typeOf 1}} {{typeOf 1.5}} {{typeOf \"s\"}} {{kindOf .args.tags}} {{typeIs \"bool\" true}}", "{\"a\":1,\"b\":3} true int float64 string slice true"),
        ("{{default \"d\" .args.nope}} {{default \"d\" .args.e}} {{default \"d\" .args.city}} {{.args.z | default 7}} {{default \"d\" .args.empty}}", "d d Oslo 7 d"),
        ("{{empty .args.e}} {{empty .args.eobj}} {{empty .args.tags}} {{empty 0}} {{coalesce .args.e .args.z .args.city}} {{all 1 \"x\"}} {{any 0 \"\"}} {{ternary \"y\" \"n\" .args.t}}", "true true false true Oslo true false y"),
        ("{{toJson .args.tags}} {{.args.obj | toJson}} {{toJson .args.html}} {{toRawJson .args.html}} {{toJson .args.city}} {{toJson .args.n}} {{toJson .args.nope}}", "[\"a\",\"b\",\"c\"] {\"x\":1,\"y\":\"two\"} \"\\u003ca\\u0026b\\u003e\" \"<a&b>\" \"Oslo\" 3 null"),
        ("{{toPrettyJson .args.obj}} {{(fromJson \"{\\\"a\\\":[1]}\").a}}", "{\n  \"x\": 1,\n  \"y\": \"two\"\n} [1]"),
        ("{{b64enc .args.city}} {{b64dec \"T3Nsbw==\"}} {{b32enc \"hi\"}} {{b32dec \"NBUQ====\"}} {{sha256sum \"abc\" | trunc 8}} {{adler32sum \"Wikipedia\"}}", "T3Nsbw== Oslo NBUQ==== hi ba7816bf 300286872"),
    ] {
        assert_eq!(ok(src, d), want, "{src}");
    }
    let id = ok("{{uuidv4}}", d);
    let re = regex_lite::Regex::new("^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$").unwrap();
    assert!(re.is_match(&id), "{id}");
    assert_ne!(id, ok("{{uuidv4}}", d));
    // Errors of sprig functions are template errors, not panics.
    for bad in [
        "{{first 5}}",
        "{{get .args.tags \"x\"}}",
        "{{regexMatch \"(\" \"x\"}}",
        "{{index .args.tags 9}}",
        "{{index .args.tags \"x\"}}",
        "{{mod 1 0}}",
        "{{randInt 5 1}}",
    ] {
        assert!(render(bad, d).is_err(), "{bad}");
    }
}

#[test]
fn dates_zones_and_durations() {
    // 2024-03-10 06:30:05.123 UTC (env's clock): New York switched to EDT at 07:00 UTC that day.
    for (src, want) in [
        ("{{now | date \"2006-01-02 15:04:05\"}}", "2024-03-10 06:30:05"),
        ("{{date \"Mon Jan _2 3:04PM .000 MST -07:00 Z07:00\" now}}", "Sun Mar 10 6:30AM .123 UTC +00:00 Z"),
        ("{{dateInZone \"Monday, 2006-01-02 15:04:05 MST\" now \"Asia/Shanghai\"}}", "Sunday, 2024-03-10 14:30:05 CST"),
        ("{{dateInZone \"15:04 MST -0700\" now \"America/New_York\"}}", "01:30 EST -0500"),
        ("{{dateInZone \"15:04 MST\" (dateModify \"1h\" now) \"America/New_York\"}}", "03:30 EDT"),
        (
            "{{dateInZone \"15:04 MST\" now \"Asia/Kolkata\"}} {{dateInZone \"15:04 MST\" now \"America/Sao_Paulo\"}}",
            "12:00 IST 03:30 -03",
        ),
        ("{{dateInZone \"2006-01-02 15:04 MST\" now \"Australia/Sydney\"}}", "2024-03-10 17:30 AEDT"),
        ("{{dateInZone \"15:04 MST\" now \"Not/AZone\"}} {{dateInZone \"15:04\" now \"\"}}", "06:30 UTC 06:30"),
        (
            "{{htmlDate now}} {{htmlDateInZone now \"Pacific/Kiritimati\"}} {{unixEpoch now}} {{date \"2006\" 0}}",
            "2024-03-10 2024-03-10 1710052205 1970",
        ),
        (
            "{{date \"January 2, 2006 03:04:05.999 pm 002\" (dateModify \"-36h\" now)}}",
            "March 8, 2024 06:30:05.123 pm 068",
        ),
        ("{{duration 3725}} {{duration 0}} {{duration 59}}", "1h2m5s 0s 59s"),
        ("{{now}}", "2024-03-10 06:30:05.123 +0000 UTC"),
    ] {
        assert_eq!(ok(src, DATA), want, "{src}");
    }
}

/// Higress's five reference configs (copied from the shared reference folder, so that every clone has them).
const REFERENCE_CONFIGS: &str = "src/gotemplate/testdata/higress-configs";

/// The five real Higress configs: every template compiles in the Go dialect,
/// and the ones that need only their arguments render as Higress's sources say they would.
#[test]
fn reference_higress_configs_compile() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(REFERENCE_CONFIGS);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    files.sort();
    let mut count = 0;
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        // Read as a document: loading these configs whole needs other parts of Higress compatibility (fields
        // Higress ignores, route-call upstreams), which are not the template dialect's.
        let doc = crate::config::parse_document(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let tools = doc.get("tools").and_then(serde_json::Value::as_array).cloned().unwrap_or_default();
        for tool in tools {
            let name = tool["name"].as_str().unwrap_or("?").to_string();
            let rt = &tool["requestTemplate"];
            let mut sources: Vec<&serde_json::Value> =
                vec![&rt["url"], &rt["body"], &tool["responseTemplate"]["body"], &tool["errorResponseTemplate"]];
            if let Some(headers) = rt["headers"].as_array() {
                sources.extend(headers.iter().map(|h| &h["value"]));
            }
            for src in sources.into_iter().filter_map(serde_json::Value::as_str) {
                if let Err(e) = GoTemplate::parse(src) {
                    panic!("{} tool {name}: {e}\n{src}", path.display());
                }
                count += 1;
            }
        }
    }
    assert!(count > 100, "only {count} templates in {} files", files.len());
}

#[test]
fn reference_templates_render_as_higress_would() {
    let e = env();
    let go = |src: &str, data: &str| GoTemplate::parse(src).unwrap().render(data, LIMITS, false, &e).unwrap();
    // mcp-time: `{{ dateInZone "Monday, 2006-01-02 15:04:05" now .args.timeZone }}` with its default zone.
    assert_eq!(
        go(
            "{{ dateInZone \"Monday, 2006-01-02 15:04:05\" now .args.timeZone }}\n",
            r#"{"args":{"timeZone":"Asia/Shanghai"}}"#
        ),
        "Sunday, 2024-03-10 14:30:05\n"
    );
    // mcp-bravesearch's web search result.
    let brave = "{{- range $index, $item := .web.results }}\n## 结果 {{add $index 1}}\n- **标题**: {{ $item.title }}\n{{- end }}\n{{- if .locations.results }}\n  {{- range $index, $item := .locations.results }}\n  - **locationID**: {{ $item.id }}\n  {{- end }}\n{{- end }}\n";
    let answer = r#"{"web":{"results":[{"title":"A"},{"title":"B"}]},"locations":{"results":[{"id":"L1"}]}}"#;
    assert_eq!(go(brave, answer), "\n## 结果 1\n- **标题**: A\n## 结果 2\n- **标题**: B\n  - **locationID**: L1\n");
    assert_eq!(go(brave, r#"{"web":{"results":[]}}"#), "\n");
    // mcp-bravesearch's POI list writes `join $item.openingHours ", "`, the list before the separator: Higress
    // (sprig's `join sep list`) prints ", ". The author meant the joined hours, which is what this dialect does
    // when the separator is a list and the list a string.
    assert_eq!(go("{{ join $.hours \", \" }}", r#"{"hours":["9-12","14-18"]}"#), "9-12, 14-18");
    // mcp-github's list_issues writes `{{.args.labels | join ','}}`: a Go character constant, an int, which
    // Higress's reflective call refuses as sprig's string separator, failing every call. Meant: a comma.
    assert_eq!(go("{{.args.labels | join ','}}", r#"{"args":{"labels":["bug","ui"]}}"#), "bug,ui");
    assert_eq!(go("{{'a'}} {{add 'a' 1}}", "{}"), "97 98");
    // mcp-github: `{{.args.content | b64enc}}` and `{{.args.labels | toJson}}`.
    assert_eq!(
        go(
            "\"content\": \"{{.args.content | b64enc}}\", \"labels\": {{.args.labels | toJson}}",
            r#"{"args":{"content":"hi","labels":["bug"]}}"#
        ),
        "\"content\": \"aGk=\", \"labels\": [\"bug\"]"
    );
}

/// The reference configs load whole and unchanged (what Higress ignores in them: `lenient`).
#[test]
fn reference_configs_load_whole() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(REFERENCE_CONFIGS);
    for (file, outcome) in [
        ("mcp-time.yaml", None::<&str>),
        ("mcp-book-query.yaml", None),
        ("mcp-github.yaml", None),
        ("mcp-bravesearch.yaml", None),
        ("mcp-firecrawl.yaml", None),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        match (crate::gateway::Gateway::from_config_str(&text), outcome) {
            (Ok(_), None) => {}
            (Err(e), Some(why)) if e.to_string().contains(why) => {}
            (r, _) => panic!("{file}: {:?}", r.err().map(|e| e.to_string())),
        }
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    const DOCS: &[&str] = &[
        DATA,
        r#"[1,"a",{"b":[true,null,{"c":"d"}]},[],{},-0.5e3,"\u00e9\"\\"]"#,
        r##"{"":{"":""},"a.b":{"c*":1},"#":[{"#":"x"}],"@this":{"k":[1,2,3]}}"##,
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// gjson paths come from templates and, through `gjson .args.p`, from arguments: any path over any
        /// document is a value or nothing, never a panic.
        #[test]
        fn any_gjson_path_is_safe(path in "[a-z0-9#@.|*?!=<>%(),:{}\\[\\]\"\\\\ _~-]{0,24}", doc in 0..DOCS.len()) {
            let data = serde_json::json!({"p": path, "d": serde_json::from_str::<serde_json::Value>(DOCS[doc]).unwrap()}).to_string();
            let _ = render("{{gjson .p}}|{{with .d}}{{gjson $.p}}{{end}}", &data);
            let _ = Value::from_gjson(&gjson::get(DOCS[doc], &path));
        }

        /// Arbitrary template text parses or fails; what parses renders or fails, within its limits.
        #[test]
        fn any_template_is_safe(src in "([a-z .$|()\"'`:=,-]|\\{\\{-? ?|-? ?\\}\\}|if |range |end|else |with |len |index |printf |add |join |toJson |gjson |default |\\.args|\\.users|1|0|\\{\\{/\\*|\\*/\\}\\}){0,40}") {
            if let Ok(t) = GoTemplate::parse(&src) {
                let limits = Limits { fuel: 5_000, max_output: 10_000 };
                let _ = t.render(DATA, limits, false, &env());
                let _ = t.render(DATA, limits, true, &env());
            }
        }

        /// Every function on every kind of value: a result or an error, never a panic.
        #[test]
        fn any_function_call_is_safe(f in 0..super::super::funcs::IMPLEMENTED.len(), a in 0..8usize, b in 0..8usize, c in 0..8usize) {
            const ARGS: &[&str] = &[".args.city", ".args.n", ".args.f", ".args.tags", ".args.obj", ".args.nul", ".args.nope", "-3"];
            let name = super::super::funcs::IMPLEMENTED[f];
            for n in 0..4 {
                let args = [ARGS[a], ARGS[b], ARGS[c]];
                let src = format!("{{{{{name} {}}}}}", args[..n.min(3)].join(" "));
                let _ = render(&src, DATA);
            }
        }
    }
}

#[test]
fn amplifying_functions_are_refused_before_they_allocate() {
    let tight = Limits { fuel: 1_000_000, max_output: 10_000 };
    let e = env();
    let data = serde_json::json!({"big": "a\n".repeat(2_000), "list": vec!["x"; 2_000], "deep": serde_json::from_str::<serde_json::Value>(&format!("{}1{}", "[".repeat(100), "]".repeat(100))).unwrap()}).to_string();
    for src in [
        "{{replace \"a\" (repeat 1000 \"b\") .big}}",
        "{{join (repeat 1000 \"-\") .list}}",
        "{{indent 1000 .big}}",
        "{{regexReplaceAll \"a\" .big \"$0$0$0$0$0$0\"}}",
        "{{toPrettyJson .deep}}",
        "{{$x := repeat 100 .big}}",
    ] {
        let r = GoTemplate::parse(src).unwrap().render(&data, tight, false, &e);
        assert!(r.as_ref().is_err_and(|e| e.to_string().contains("limit")), "{src}: {r:?}");
    }
    // Dates far outside any calendar still format (clamped), never overflow.
    assert!(ok("{{date \"2006\" 9223372036854775807}}", DATA).len() >= 5);
    assert!(ok("{{date \"2006\" (dateModify \"-2562047h\" (dateModify \"-2562047h\" 0))}}", DATA).len() >= 4);
}

#[test]
fn copying_large_values_spends_fuel() {
    // 8 MB of data read through `$` and `.` in a long loop would copy gigabytes: copies are charged by their
    // size (one unit per 4 KiB), so 200 of them spend twice the whole budget, while the same loops over
    // small data stay well within it (a bound on steps, not on time, which a loaded machine would break).
    let big = serde_json::json!({"big": "x".repeat(8 << 20)}).to_string();
    let small = serde_json::json!({"big": "x"}).to_string();
    for src in [
        "{{range 200}}{{$x := $}}{{end}}",
        "{{range 200}}{{with $}}{{$y := .}}{{end}}{{end}}",
        "{{$b := .big}}{{range 200}}{{$c := $b}}{{end}}",
    ] {
        let t = GoTemplate::parse(src).unwrap();
        assert_eq!(t.render(&big, LIMITS, false, &env()), Err(GoError::OutOfFuel), "{src}");
        assert_eq!(t.render(&small, LIMITS, false, &env()), Ok(String::new()), "{src}");
    }
}

#[test]
fn gjson_template_readme_examples() {
    // The examples of gjson_template's README, over its sample data.
    let data = r#"{"users":[{"name":"Alice","age":28,"active":true,"roles":["admin","developer"]},
        {"name":"Bob","age":35,"active":false,"roles":["developer"]},
        {"name":"Charlie","age":42,"active":true,"roles":["manager","developer"]}],
        "settings":{"theme":"dark","notifications":{"email":true,"sms":false}}}"#;
    assert_eq!(ok("{{.users.0.name}}", data), "Alice");
    assert_eq!(ok(r#"{{gjson "users.#(active==true)#.name"}}"#, data), r#"["Alice","Charlie"]"#);
    // Neither gjson (Go's, which Higress runs, nor the Rust port) has `&&` in queries: the README's example
    // matches nothing there too.
    assert_eq!(ok(r#"{{gjson "users.#(active==true && age>30)#.name"}}"#, data), "[]");
    assert_eq!(ok(r#"{{gjson "users.@reverse.#.name"}}"#, data), r#"["Charlie","Bob","Alice"]"#);
    assert_eq!(ok("{{if .settings.notifications.email}}Enabled{{else}}Disabled{{end}}", data), "Enabled");
    assert_eq!(
        ok(r#"{{range $user := gjson "users.#(roles.#(==admin)>0)#"}}- {{$user.name}} ({{$user.age}}){{end}}"#, data),
        "- Alice (28)"
    );
    assert_eq!(
        ok(r#"{{gjson "settings.notifications.e*"}} {{gjson "users.#.roles.0"}}"#, data),
        r#"true ["admin","developer","manager"]"#
    );
}
