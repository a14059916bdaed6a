//! Higress's request and response semantics: how its REST-to-MCP plugin (`mcp-server`) turns arguments into
//! an upstream request and the answer into a result, for servers that ask for them (`semantics: higress`,
//! the default in Higress's single-server shape), so that its configs call their APIs exactly as they did.
//!
//! Each rule, with a link to the line of Higress's sources it follows, is in `docs/higress-semantics.md`.
//! Where Higress's behaviour breaks the call in Higress too (a value that would cut the URL in two, a `%`
//! that fails its URL parser), this module does what the config's author meant; the README lists each case.

// Builds without the Go dialect refuse Higress's semantics at load: their request building is left out.
#![cfg_attr(not(feature = "go-templates"), allow(dead_code))]

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{Map, Value};

/// Whose request and response semantics a server follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Semantics {
    /// This gateway's: OpenAPI styles, undeclared arguments refused, results as the README describes.
    #[default]
    Native,
    /// Higress's `mcp-server` plugin's (see the module doc).
    Higress,
}

impl Semantics {
    /// Higress's semantics, in a build that has them (the ones with its dialect; others refuse them at load,
    /// so their code is left out).
    pub fn is_higress(self) -> bool {
        cfg!(feature = "go-templates") && self == Semantics::Higress
    }
}

/// Go's `url.QueryEscape`: all but `A-Z a-z 0-9 - _ . ~` is encoded (a space becomes `+` separately).
const QUERY_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b' ');
/// What Go's `url.URL.EscapedPath` encodes when it re-escapes a path: all but unreserved and `$&+,/:;=@`.
const GO_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b',')
    .remove(b'/')
    .remove(b':')
    .remove(b';')
    .remove(b'=')
    .remove(b'@');
/// A value placed into the path: Higress inserts it as it is and lets Go's URL parser escape it. Kept here:
/// what Go keeps (unreserved, `/`, sub-delimiters, `:`, `@`); encoded: what it would escape, and `%`, `?`,
/// `#`, which in Higress make the URL fail to parse or cut it into a query or fragment.
pub const PATH_VALUE: &AsciiSet = &GO_PATH.remove(b'!').remove(b'\'').remove(b'(').remove(b')').remove(b'*');

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    utf8_percent_encode(s, QUERY_COMPONENT).to_string().replace(' ', "+")
}

/// Go's `url.QueryUnescape`; `None` where Go fails (a `%` not followed by two hex digits).
fn query_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    for (i, c) in b.iter().enumerate() {
        if *c == b'%' && !(i + 2 < b.len() && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
            return None;
        }
    }
    let plus = s.replace('+', " ");
    Some(percent_decode_str(&plus).decode_utf8_lossy().into_owned())
}

/// An argument as Higress writes it into a path, query, header, cookie or form (`convertArgToString`):
/// strings as they are, booleans `true`/`false`, integers (arguments declared `integer`, which Higress
/// converts to Go ints) in decimal, other numbers as Go prints a float64 (`%v`: `1.5`, `1e+06`), anything
/// else as Go's `json.Marshal` writes it (`null`, `["a","b"]`).
pub fn arg_text(v: &Value, integer: bool) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if integer && (n.is_i64() || n.is_u64()) => n.to_string(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), go_float),
        other => go_json(other),
    }
}

/// Go's `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`): the shortest digits that round-trip, in
/// exponent form when the exponent is below -4 or at least 6 (`1e+06`, `1.5e-05`).
fn go_float(f: f64) -> String {
    let (neg, digits, point) = shortest_digits(f);
    let exp = point - 1;
    let body = if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        format!("{first}{dot}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        plain(&digits, point)
    };
    if neg {
        format!("-{body}")
    } else {
        body
    }
}

/// Go's `json.Marshal` of a float64: plain notation from 1e-6 up to 1e21, else `1e+21`, `1e-7`.
fn go_json_float(f: f64) -> String {
    let (neg, digits, point) = shortest_digits(f);
    let exp = point - 1;
    let body = if f != 0.0 && (f.abs() < 1e-6 || f.abs() >= 1e21) {
        let (first, rest) = digits.split_at(1);
        let dot = if rest.is_empty() { String::new() } else { format!(".{rest}") };
        format!("{first}{dot}e{}{}", if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        plain(&digits, point)
    };
    if neg {
        format!("-{body}")
    } else {
        body
    }
}

/// `digits` with the decimal point after `point` of them (before them when `point` <= 0).
fn plain(digits: &str, point: i32) -> String {
    let n = digits.len() as i32;
    if point <= 0 {
        format!("0.{}{digits}", "0".repeat((-point) as usize))
    } else if point >= n {
        format!("{digits}{}", "0".repeat((point - n) as usize))
    } else {
        format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
    }
}

/// The shortest round-trip decimal digits of `f` (no leading or trailing zeros) and where the point goes:
/// `f` = 0.`digits` × 10^`point`. serde_json's number text (ryu, already in the module) is the source, so no
/// float formatting code of Rust's own is linked in.
fn shortest_digits(f: f64) -> (bool, String, i32) {
    if f == 0.0 || !f.is_finite() {
        return (false, "0".into(), 1);
    }
    let text = serde_json::Number::from_f64(f).map(|n| n.to_string()).unwrap_or_default();
    let neg = text.starts_with('-');
    let text = text.trim_start_matches('-');
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all = format!("{int}{frac}");
    let lead = all.len() - all.trim_start_matches('0').len();
    let digits = all.trim_matches('0').to_string();
    (neg, digits, int.len() as i32 - lead as i32 + exp)
}

/// Go's `json.Marshal` of a value decoded into `interface{}`: object keys sorted, `<`, `>`, `&`, U+2028 and
/// U+2029 escaped, integral floats without a fraction.
pub fn go_json(v: &Value) -> String {
    let mut out = String::new();
    write_json(v, &mut out);
    out
}

fn write_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            crate::sort::sort(&mut keys);
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_json(&m[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::String(s) => write_string(s, out),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => out.push_str(&go_json_float(f)),
            _ => out.push_str(&n.to_string()),
        },
        other => out.push_str(&other.to_string()),
    }
}

fn write_string(s: &str, out: &mut String) {
    let quoted = serde_json::to_string(s).unwrap_or_default();
    for c in quoted.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
}

/// Higress's coercion of declared arguments (`RestMCPTool.Create`) where it goes further than this
/// gateway's: an `integer` given a fraction is truncated (`2.7` to `2`). The rest (numeric strings,
/// `"true"`/`"false"`) the gateway's own coercion does alike.
pub fn coerce(args: &mut Map<String, Value>, integers: &[String]) {
    for name in integers {
        if let Some(Value::Number(n)) = args.get(name) {
            if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.is_finite() && f.fract() != 0.0) {
                if f.abs() < 9.2e18 {
                    args.insert(name.clone(), Value::from(f.trunc() as i64));
                }
            }
        }
    }
}

/// The query string of a URL as Go's `url.Values` holds it: keys in first-seen order, each with its values.
#[derive(Debug, Default)]
pub struct Query(Vec<(String, Vec<String>)>);

impl Query {
    /// Go's `url.ParseQuery` as `URL.Query()` uses it: `&`-separated pairs, split at the first `=`, unescaped
    /// (`+` is a space); pairs with `;`, empty ones and ones that do not unescape are dropped.
    pub fn parse(raw: &str) -> Query {
        let mut q = Query::default();
        for pair in raw.split('&') {
            if pair.is_empty() || pair.contains(';') {
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if let (Some(k), Some(v)) = (query_unescape(k), query_unescape(v)) {
                match q.0.iter_mut().find(|(key, _)| *key == k) {
                    Some((_, values)) => values.push(v),
                    None => q.0.push((k, vec![v])),
                }
            }
        }
        q
    }

    /// `url.Values.Set`: the value replaces every value the key had.
    pub fn set(&mut self, key: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, values)) => *values = vec![value],
            None => self.0.push((key.to_string(), vec![value])),
        }
    }

    /// `Set` of a pair written percent-encoded (a query credential).
    pub fn set_encoded(&mut self, key: &str, value: &str) {
        if let (Some(k), Some(v)) = (query_unescape(key), query_unescape(value)) {
            self.set(&k, v);
        }
    }

    /// `url.Values.Add`.
    pub fn add(&mut self, key: &str, value: String) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some((_, values)) => values.push(value),
            None => self.0.push((key.to_string(), vec![value])),
        }
    }

    /// `url.Values.Encode`: keys sorted, each value `QueryEscape`d.
    pub fn encode(&self) -> String {
        let mut keys: Vec<&(String, Vec<String>)> = self.0.iter().collect();
        crate::sort::sort_by(&mut keys, |a, b| a.0.cmp(&b.0));
        let mut out = String::new();
        for (k, values) in keys {
            for v in values {
                if !out.is_empty() {
                    out.push('&');
                }
                out.push_str(&query_escape(k));
                out.push('=');
                out.push_str(&query_escape(v));
            }
        }
        out
    }
}

/// The path as Go's `url.Parse` and `EscapedPath` leave it. The gateway's rendering already encoded every
/// value character Go would escape, so a path without `%` whose characters are all valid in a path is Go's
/// as it stands; any other is, in Higress, a path Go re-escapes whole (`unescape` then `escape`), which also
/// encodes `!'()*[]`.
pub fn go_path(path: &str) -> String {
    let valid = |b: u8| b.is_ascii_alphanumeric() || b"-_.~/!$&'()*+,;=:@[]".contains(&b);
    if path.bytes().all(valid) {
        return path.to_string();
    }
    let raw: Vec<u8> = percent_decode_str(path).collect();
    percent_encoding::percent_encode(&raw, GO_PATH).to_string()
}

/// Substitutes a `position: path` argument for `{name}` in a URL, as Higress does (everywhere in the URL,
/// the value as it is): in the path with only what Go would escape encoded, `/` kept; in the query fully.
pub fn substitute(url: &str, name: &str, text: &str) -> String {
    let placeholder = format!("{{{name}}}");
    let (path, query) = match url.find('?') {
        Some(i) => (&url[..i], Some(&url[i..])),
        None => (url, None),
    };
    let mut out = path.replace(&placeholder, &utf8_percent_encode(text, PATH_VALUE).to_string());
    if let Some(q) = query {
        out.push_str(&q.replace(&placeholder, &query_escape(text)));
    }
    out
}

/// Argument schemas as their authors meant them. Higress publishes `type`, `items` and `properties` as
/// written and validates nothing, so its configs carry what a JSON Schema validator refuses: `type: int`
/// (mcp-e2bdev) is an integer here, and a `required: true` inside a property (mcp-firecrawl's `extract`,
/// OpenAPI 2's spelling) is dropped, as Higress never enforces it.
pub fn arg_types(args: &[crate::config::ArgConfig]) -> Vec<crate::config::ArgConfig> {
    let mut args = args.to_vec();
    for a in &mut args {
        if a.kind.as_deref() == Some("int") {
            a.kind = Some("integer".into());
        }
        a.items.iter_mut().for_each(drop_boolean_required);
        if let Some(Value::Object(props)) = &mut a.properties {
            props.values_mut().for_each(drop_boolean_required);
        }
    }
    args
}

fn drop_boolean_required(schema: &mut Value) {
    let Value::Object(m) = schema else { return };
    if m.get("required").is_some_and(Value::is_boolean) {
        m.remove("required");
    }
    if let Some(items) = m.get_mut("items") {
        drop_boolean_required(items);
    }
    for key in ["properties", "$defs", "definitions"] {
        if let Some(Value::Object(props)) = m.get_mut(key) {
            props.values_mut().for_each(drop_boolean_required);
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(Value::Array(list)) = m.get_mut(key) {
            list.iter_mut().for_each(drop_boolean_required);
        }
    }
}

/// A URL template that starts with a `config` value (`{{.config.baseUrl}}/get_block`, as Higress's bundled
/// configs write it), with that value put in: the operator's base URL, host included, is then fixed at load.
/// Any other URL is returned as it is.
pub fn config_base(url: &str, config: &Map<String, Value>) -> Result<String, String> {
    let Some(rest) = url.trim_start().strip_prefix("{{") else { return Ok(url.to_string()) };
    let Some((action, tail)) = rest.split_once("}}") else { return Ok(url.to_string()) };
    let action = action.trim_start_matches('-').trim_end_matches('-').trim();
    let Some(path) = action.strip_prefix(".config.") else { return Ok(url.to_string()) };
    if path.is_empty()
        || !path.split('.').all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
    {
        return Ok(url.to_string());
    }
    let value = path.split('.').try_fold(None::<&Value>, |at, key| {
        Some(match at {
            None => config.get(key),
            Some(v) => v.get(key),
        })
    });
    match value.flatten() {
        Some(Value::String(base)) if !base.contains("{{") => Ok(format!("{base}{tail}")),
        Some(Value::String(_)) => Err(format!("config.{path} may not contain a template")),
        _ => Err(format!("starts with config.{path}, which the server's config does not give as a string")),
    }
}

/// Escapes what would end a cookie's value (`;`, `,`) and `%`: Higress appends `name=value` as it is, so a
/// value holding `; admin=1` would add a cookie.
pub fn cookie_value(text: &str) -> String {
    const COOKIE: &AsciiSet = &percent_encoding::CONTROLS.add(b';').add(b',').add(b'%');
    utf8_percent_encode(text, COOKIE).to_string()
}

/// A header value the request already has, case-insensitively.
pub fn has_header(headers: &[(String, String)], name: &str) -> bool {
    headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
}

/// Whether a `Content-Type` header contains `what` (Higress's `hasContentType`).
pub fn has_content_type(headers: &[(String, String)], what: &str) -> bool {
    headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("content-type") && v.to_ascii_lowercase().contains(what))
}

/// Whether a rendered body template is JSON as Higress decides before adding a JSON `Content-Type`:
/// trimmed, it starts and ends with `{}` or `[]`, and parses.
pub fn body_is_json(body: &str) -> bool {
    let t = body.trim();
    let framed = (t.starts_with('{') && t.ends_with('}')) || (t.starts_with('[') && t.ends_with(']'));
    framed && serde_json::from_slice::<Value>(t.as_bytes()).is_ok()
}

/// The `Content-Type` Higress adds to the JSON bodies it makes.
pub const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// Higress's text for a non-2xx answer without an error template (or whose template rendered empty).
pub fn call_failed(status: u16, body: &str) -> String {
    format!("call failed, status: {status}, response: {body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_print_as_go_prints_them() {
        assert_eq!(arg_text(&json!("a b"), false), "a b");
        assert_eq!(arg_text(&json!(true), false), "true");
        assert_eq!(arg_text(&json!(10), true), "10");
        assert_eq!(arg_text(&json!(10), false), "10");
        assert_eq!(arg_text(&json!(1.5), false), "1.5");
        assert_eq!(arg_text(&json!(2.0), false), "2");
        assert_eq!(arg_text(&json!(null), false), "null");
        assert_eq!(arg_text(&json!(["a", "b"]), false), r#"["a","b"]"#);
        assert_eq!(arg_text(&json!({"b": 1, "a": "<&>"}), false), r#"{"a":"\u003c\u0026\u003e","b":1}"#);
    }

    #[test]
    fn go_floats() {
        // fmt's %v is %g with the shortest precision, which switches to an exponent at 1e6 and below 1e-4.
        assert_eq!(go_float(123456.0), "123456");
        assert_eq!(go_float(1234567.0), "1.234567e+06");
        assert_eq!(go_float(0.0001), "0.0001");
        assert_eq!(go_float(0.00001), "1e-05");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(arg_text(&json!(1000000), false), "1e+06");
        assert_eq!(go_float(-2.5), "-2.5");
        assert_eq!(go_float(0.000123), "0.000123");
        assert_eq!(go_float(100.0), "100");
        assert_eq!(go_float(1.5e-7), "1.5e-07");
        // encoding/json: plain from 1e-6 to 1e21.
        assert_eq!(
            go_json(&json!([2.0, 1e21, 1e-7, 0.5, 123456789.0, -0.000001])),
            "[2,1e+21,1e-7,0.5,123456789,-0.000001]"
        );
    }

    #[test]
    fn queries_are_rebuilt_as_go_rebuilds_them() {
        let mut q = Query::parse("q=rust+lang&page=&per_page=30&bad=%zz&x;y=1&&a=1&a=2");
        assert_eq!(q.encode(), "a=1&a=2&page=&per_page=30&q=rust+lang");
        q.set("a", "x y/z".into());
        q.add("b", "é".into());
        assert_eq!(q.encode(), "a=x+y%2Fz&b=%C3%A9&page=&per_page=30&q=rust+lang");
        assert_eq!(Query::parse("").encode(), "");
    }

    #[test]
    fn paths_are_escaped_as_go_escapes_them() {
        assert_eq!(go_path("/a/b(c),d:e@f"), "/a/b(c),d:e@f");
        // One escaped character makes Go re-escape the whole path, parentheses included.
        assert_eq!(go_path("/a%20b/(c)"), "/a%20b/%28c%29");
        assert_eq!(go_path("/caf%C3%A9"), "/caf%C3%A9");
        // A space or a character beyond ASCII written in the url (or in config) is escaped as Go escapes it.
        assert_eq!(go_path("/a b/(c)/é"), "/a%20b/%28c%29/%C3%A9");
        assert_eq!(cookie_value("s1; admin=1, x%"), "s1%3B admin=1%2C x%25");
        assert_eq!(substitute("/r/{p}/x?k={p}", "p", "a/b c?"), "/r/a/b%20c%3F/x?k=a%2Fb+c%3F");
    }

    #[test]
    fn a_base_url_can_come_from_config() {
        let config = json!({"baseUrl": "https://mcp.example.com/v1", "n": {"host": "h.example"}, "k": 1});
        let config = config.as_object().unwrap();
        assert_eq!(
            config_base("{{.config.baseUrl}}/get?a={{.args.a}}", config).unwrap(),
            "https://mcp.example.com/v1/get?a={{.args.a}}"
        );
        assert_eq!(config_base("{{- .config.n.host -}}/x", config).unwrap(), "h.example/x");
        assert_eq!(config_base("/x/{{.config.k}}", config).unwrap(), "/x/{{.config.k}}");
        assert!(config_base("{{.config.k}}/x", config).unwrap_err().contains("config.k"));
        assert!(config_base("{{.config.missing}}/x", config).is_err());
    }

    #[test]
    fn argument_schemas_are_read_as_meant() {
        let arg = crate::config::ArgConfig::read(&json!({"name": "schema", "type": "object",
            "properties": {"p": {"type": "string", "required": true, "items": {"required": false}}, "q": {"required": ["x"]}}}), "")
        .unwrap();
        let int = crate::config::ArgConfig::read(&json!({"name": "n", "type": "int"}), "").unwrap();
        let out = arg_types(&[arg, int]);
        assert_eq!(out[0].properties, Some(json!({"p": {"type": "string", "items": {}}, "q": {"required": ["x"]}})));
        assert_eq!(out[1].kind.as_deref(), Some("integer"));
    }

    #[test]
    fn integers_are_truncated() {
        let mut args = json!({"n": 2.7, "m": 3, "s": "x"}).as_object().unwrap().clone();
        coerce(&mut args, &["n".into(), "m".into(), "s".into()]);
        assert_eq!(Value::Object(args), json!({"n": 2, "m": 3, "s": "x"}));
    }

    #[test]
    fn json_bodies_are_recognised_as_higress_does() {
        assert!(body_is_json(" {\"a\": 1}\n"));
        assert!(!body_is_json("\"a\""));
        assert!(!body_is_json("{broken}"));
    }
}

/// Every tool of the five reference configs, asserted against what Higress's sources say it sends.
#[cfg(all(test, feature = "go-templates"))]
mod reference_tests;

/// Higress's bundled configs, fetched by `scripts/higress-bundled.sh`: how many load and render.
#[cfg(all(test, feature = "go-templates"))]
mod bundled;
