//! How an argument's value is written into a path, query, header, cookie or form body: OpenAPI 3's
//! parameter styles (`form`, `simple`, `label`, `matrix`, `spaceDelimited`, `pipeDelimited`, `deepObject`),
//! so that a tool calls its operation exactly as the operation's document describes.
//!
//! Everything that goes into a URL or a form body comes out percent-encoded here, item by item, so that a
//! delimiter the style adds (`,` `;` `.` `=` `[ ]`) is never confused with the same character inside a value.

use crate::config::{Position, Style};
use crate::template::URL_COMPONENT;
use percent_encoding::{utf8_percent_encode, AsciiSet};
use serde_json::Value;

/// A style and its explode flag, resolved for one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub style: Style,
    pub explode: bool,
    /// Objects go as JSON text: a form-body field without a style, as OpenAPI's default `contentType` for
    /// object properties says (and as hand-written configs always did).
    pub json_objects: bool,
    /// A query value keeps RFC 3986's reserved characters that do not split a query string (OpenAPI's
    /// `allowReserved`): for APIs that read `a/b:c` differently from `a%2Fb%3Ac`.
    pub allow_reserved: bool,
}

impl Encoding {
    /// Form style, exploded: a query string's default, and that of arguments placed without a `position`.
    pub const QUERY: Encoding =
        Encoding { style: Style::Form, explode: true, json_objects: false, allow_reserved: false };
    /// A form-body field without a style.
    pub const FORM_FIELD: Encoding =
        Encoding { style: Style::Form, explode: true, json_objects: true, allow_reserved: false };

    /// The encoding of an argument placed at `position`; OpenAPI's defaults fill in what is not given.
    /// A style the position cannot carry is an error naming the ones it can.
    pub fn resolve(position: Position, style: Option<Style>, explode: Option<bool>) -> Result<Encoding, String> {
        use Style::*;
        let allowed: &[Style] = match position {
            Position::Path => &[Simple, Label, Matrix],
            Position::Query | Position::Body => &[Form, SpaceDelimited, PipeDelimited, DeepObject],
            Position::Header => &[Simple],
            Position::Cookie => &[Form],
        };
        let chosen = style.unwrap_or(allowed[0]);
        if !allowed.contains(&chosen) {
            let mut names = Vec::with_capacity(allowed.len());
            for s in allowed {
                names.push(s.name());
            }
            return Err(format!(
                "style {} cannot be used in the {}; use {}",
                chosen.name(),
                position.name(),
                names.join(", ")
            ));
        }
        Ok(Encoding {
            style: chosen,
            explode: explode.unwrap_or(chosen == Form),
            json_objects: position == Position::Body && style.is_none(),
            allow_reserved: false,
        })
    }
}

/// What `allowReserved` still encodes in a query value: whatever is not unreserved, except the reserved
/// characters that cannot end or split a query pair (`&`, `=`, `+` and `#` would, and `%` starts an escape).
const RESERVED_KEPT: &AsciiSet = &URL_COMPONENT
    .remove(b':')
    .remove(b'/')
    .remove(b'?')
    .remove(b'[')
    .remove(b']')
    .remove(b'@')
    .remove(b'!')
    .remove(b'$')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b',')
    .remove(b';');

fn enc_reserved(s: &str) -> String {
    utf8_percent_encode(s, RESERVED_KEPT).to_string()
}

fn enc(s: &str) -> String {
    utf8_percent_encode(s, URL_COMPONENT).to_string()
}

/// A scalar as text; a nested array or object (which no style but deepObject describes) as JSON text.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The items of an array or the `key, value` runs of an object, as text.
// (The texts here are built by loops, not iterator chains: each chain's adapters were instantiated for
// its closure alone.)
fn flat(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match v {
        Value::Array(items) => {
            for i in items {
                out.push(text(i));
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                out.push(k.clone());
                out.push(text(v));
            }
        }
        other => out.push(text(other)),
    }
    out
}

/// `k=v` texts of an object's members.
fn members(v: &Value, join: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Value::Object(m) = v {
        for (k, v) in m {
            out.push(format!("{}{join}{}", enc(k), enc(&text(v))));
        }
    }
    out
}

/// `items`, each written by `each`, separated by `sep`.
fn join_each(items: &[String], each: fn(&str) -> String, sep: &str) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        out.push_str(&each(item));
    }
    out
}

/// `items`, each after `prefix`.
fn prefixed(items: &[String], prefix: &str) -> String {
    let mut out = String::new();
    for item in items {
        out.push_str(prefix);
        out.push_str(item);
    }
    out
}

fn joined(v: &Value, sep: &str) -> String {
    // (Path and cookie values; query and form pairs join in `pairs_in`.)
    join_each(&flat(v), enc, sep)
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

/// Query-string or form-body pairs for one argument, each `(name, value)` already percent-encoded.
/// `null` and empty arrays or objects add nothing.
pub fn pairs(name: &str, value: &Value, e: Encoding, out: &mut Vec<(String, String)>) {
    pairs_in(name, value, e, if e.allow_reserved { &URL_RESERVED } else { &URL }, out)
}

/// The same pairs, not percent-encoded: the names and values of a multipart body's parts.
pub fn raw_pairs(name: &str, value: &Value, e: Encoding) -> Vec<(String, String)> {
    let mut out = Vec::new();
    pairs_in(name, value, e, &RAW, &mut out);
    out
}

/// How pairs are written: for a URL (percent-encoded, delimiters encoded where OpenAPI says) or as they are.
struct Escaping {
    /// Names (and object keys).
    text: fn(&str) -> String,
    /// Values.
    value: fn(&str) -> String,
    space: &'static str,
    pipe: &'static str,
    open: &'static str,
    close: &'static str,
}

const URL: Escaping = Escaping { text: enc, value: enc, space: "%20", pipe: "%7C", open: "%5B", close: "%5D" };
/// Values under `allowReserved`; names and the delimiters a style adds stay encoded.
const URL_RESERVED: Escaping =
    Escaping { text: enc, value: enc_reserved, space: "%20", pipe: "%7C", open: "%5B", close: "%5D" };
const RAW: Escaping =
    Escaping { text: str::to_string, value: str::to_string, space: " ", pipe: "|", open: "[", close: "]" };

fn pairs_in(name: &str, value: &Value, e: Encoding, x: &Escaping, out: &mut Vec<(String, String)>) {
    if is_empty(value) {
        return;
    }
    let (t, v) = (x.text, x.value);
    let scalar = !value.is_array() && !value.is_object();
    if scalar || (value.is_object() && e.json_objects) {
        out.push((t(name), v(&text(value))));
        return;
    }
    let joined = |sep: &str| join_each(&flat(value), v, sep);
    match (e.style, e.explode) {
        (Style::DeepObject, _) => deep(&t(name), value, x, out),
        (_, true) => match value {
            Value::Array(items) => {
                for i in items {
                    out.push((t(name), v(&text(i))));
                }
            }
            Value::Object(m) => {
                for (k, m) in m {
                    out.push((t(k), v(&text(m))));
                }
            }
            _ => {}
        },
        (Style::SpaceDelimited, false) => out.push((t(name), joined(x.space))),
        (Style::PipeDelimited, false) => out.push((t(name), joined(x.pipe))),
        (_, false) => out.push((t(name), joined(","))),
    }
}

/// deepObject, nested as Stripe and PHP read it: `a[b][c]=v`, array items by index: `a[0]=x`.
fn deep(prefix: &str, value: &Value, x: &Escaping, out: &mut Vec<(String, String)>) {
    let (open, close, t) = (x.open, x.close, x.text);
    match value {
        Value::Object(m) => {
            for (k, v) in m {
                deep(&format!("{prefix}{open}{}{close}", t(k)), v, x, out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                deep(&format!("{prefix}{open}{i}{close}"), v, x, out);
            }
        }
        Value::Null => {}
        other => out.push((prefix.to_string(), (x.value)(&text(other)))),
    }
}

/// One part of a multipart/form-data body.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

/// A file argument's value, `{content: base64, filename?, contentType?}`, or a list of them (several files
/// under one name), as parts; the error names what is wrong with it.
pub fn file_parts(name: &str, value: &Value) -> Result<Vec<Part>, String> {
    let one = |v: &Value| -> Result<Part, String> {
        let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let content = field("content").ok_or_else(|| format!("argument '{name}': a file needs `content`, base64"))?;
        let data = crate::b64::STANDARD
            .decode(content.trim())
            .or_else(|_| crate::b64::URL_SAFE.decode(content.trim()))
            .map_err(|e| format!("argument '{name}': `content` is not base64 ({e})"))?;
        Ok(Part {
            name: name.to_string(),
            filename: Some(field("filename").unwrap_or_else(|| name.to_string())),
            content_type: field("contentType"),
            data,
        })
    };
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for i in items {
                parts.push(one(i)?);
            }
            Ok(parts)
        }
        other => one(other).map(|p| vec![p]),
    }
}

/// A multipart/form-data body (RFC 7578) and its Content-Type. The boundary is one no part contains.
pub fn multipart(parts: &[Part]) -> (String, Vec<u8>) {
    let mut n = 0u32;
    let boundary = loop {
        let b = format!("mcp-gateway-boundary-{n:08x}");
        let needle = b.as_bytes();
        if !parts.iter().any(|p| p.data.windows(needle.len()).any(|w| w == needle)) {
            break b;
        }
        n += 1;
    };
    // Quotes and line breaks in names are percent-encoded, as browsers do.
    let quoted = |s: &str| s.replace('"', "%22").replace('\r', "%0D").replace('\n', "%0A");
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"", quoted(&p.name)).as_bytes(),
        );
        if let Some(f) = &p.filename {
            body.extend_from_slice(format!("; filename=\"{}\"", quoted(f)).as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        if let Some(ct) = &p.content_type {
            body.extend_from_slice(format!("Content-Type: {}\r\n", ct.replace(['\r', '\n'], "")).as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(&p.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// What replaces `{name}` in a path (label and matrix bring their own `.` and `;`), percent-encoded.
pub fn path(name: &str, value: &Value, e: Encoding) -> String {
    let scalar = !value.is_array() && !value.is_object();
    match (e.style, e.explode) {
        _ if scalar && e.style == Style::Matrix => format!(";{}={}", enc(name), enc(&text(value))),
        _ if scalar && e.style == Style::Label => format!(".{}", enc(&text(value))),
        _ if scalar => enc(&text(value)),
        // RFC 6570: an empty list is `;name` in matrix style and nothing in the others.
        _ if is_empty(value) && e.style == Style::Matrix => format!(";{}", enc(name)),
        _ if is_empty(value) => String::new(),
        (Style::Matrix, true) if value.is_object() => prefixed(&members(value, "="), ";"),
        (Style::Matrix, true) => {
            let mut out = String::new();
            let name = enc(name);
            for i in flat(value) {
                out.push(';');
                out.push_str(&name);
                out.push('=');
                out.push_str(&enc(&i));
            }
            out
        }
        (Style::Matrix, false) => format!(";{}={}", enc(name), joined(value, ",")),
        (Style::Label, true) if value.is_object() => prefixed(&members(value, "="), "."),
        (Style::Label, true) => {
            let mut out = String::new();
            for i in flat(value) {
                out.push('.');
                out.push_str(&enc(&i));
            }
            out
        }
        (Style::Label, false) => format!(".{}", joined(value, ",")),
        (_, true) if value.is_object() => members(value, "=").join(","),
        _ => joined(value, ","),
    }
}

/// A header value (simple style; headers are not percent-encoded).
pub fn header(value: &Value, e: Encoding) -> String {
    match value {
        Value::Object(m) if e.explode => {
            let mut out = String::new();
            for (k, v) in m {
                if !out.is_empty() {
                    out.push(',');
                }
                out.push_str(k);
                out.push('=');
                out.push_str(&text(v));
            }
            out
        }
        Value::Array(_) | Value::Object(_) => flat(value).join(","),
        other => text(other),
    }
}

/// `name=value` cookies for one argument (form style). A cookie name cannot repeat usefully, so arrays are
/// always comma-joined; an exploded object is one cookie per member.
pub fn cookies(name: &str, value: &Value, e: Encoding, out: &mut Vec<String>) {
    match value {
        Value::Object(_) if e.explode => out.extend(members(value, "=")),
        Value::Array(_) | Value::Object(_) => out.push(format!("{name}={}", joined(value, ","))),
        other => out.push(format!("{name}={}", enc(&text(other)))),
    }
}

/// `n` in decimal, written into `buf`: for numbers written on every request (a proxied request's timeout, a
/// rate limit's counter), without the formatting machinery and its string.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[at..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn e(position: Position, style: Option<Style>, explode: Option<bool>) -> Encoding {
        Encoding::resolve(position, style, explode).unwrap()
    }

    fn query(name: &str, v: Value, enc: Encoding) -> String {
        let mut out = Vec::new();
        pairs(name, &v, enc, &mut out);
        out.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
    }

    /// The style examples of the OpenAPI specification (3.0.4/3.1.1), `color` as blue, an array, an object.
    #[test]
    fn openapi_style_examples() {
        let prim = json!("blue");
        let arr = json!(["blue", "black", "brown"]);
        let obj = json!({"R": 100, "G": 200, "B": 150});
        let p = |style, explode, v: &Value| path("color", v, e(Position::Path, Some(style), Some(explode)));
        assert_eq!(
            [p(Style::Matrix, false, &prim), p(Style::Matrix, false, &arr), p(Style::Matrix, false, &obj)],
            [";color=blue", ";color=blue,black,brown", ";color=R,100,G,200,B,150"]
        );
        assert_eq!(
            [p(Style::Matrix, true, &prim), p(Style::Matrix, true, &arr), p(Style::Matrix, true, &obj)],
            [";color=blue", ";color=blue;color=black;color=brown", ";R=100;G=200;B=150"]
        );
        assert_eq!(
            [p(Style::Label, false, &prim), p(Style::Label, false, &arr), p(Style::Label, false, &obj)],
            [".blue", ".blue,black,brown", ".R,100,G,200,B,150"]
        );
        assert_eq!(
            [p(Style::Label, true, &prim), p(Style::Label, true, &arr), p(Style::Label, true, &obj)],
            [".blue", ".blue.black.brown", ".R=100.G=200.B=150"]
        );
        assert_eq!(
            [p(Style::Simple, false, &prim), p(Style::Simple, false, &arr), p(Style::Simple, false, &obj)],
            ["blue", "blue,black,brown", "R,100,G,200,B,150"]
        );
        assert_eq!(p(Style::Simple, true, &obj), "R=100,G=200,B=150");
        let q = |style, explode, v: &Value| query("color", v.clone(), e(Position::Query, Some(style), Some(explode)));
        assert_eq!(
            [q(Style::Form, false, &prim), q(Style::Form, false, &arr), q(Style::Form, false, &obj)],
            ["color=blue", "color=blue,black,brown", "color=R,100,G,200,B,150"]
        );
        assert_eq!(
            [q(Style::Form, true, &prim), q(Style::Form, true, &arr), q(Style::Form, true, &obj)],
            ["color=blue", "color=blue&color=black&color=brown", "R=100&G=200&B=150"]
        );
        assert_eq!(q(Style::SpaceDelimited, false, &arr), "color=blue%20black%20brown");
        assert_eq!(q(Style::PipeDelimited, false, &arr), "color=blue%7Cblack%7Cbrown");
        assert_eq!(q(Style::PipeDelimited, false, &obj), "color=R%7C100%7CG%7C200%7CB%7C150");
        assert_eq!(q(Style::DeepObject, true, &obj), "color%5BR%5D=100&color%5BG%5D=200&color%5BB%5D=150");
        let h = |explode, v: &Value| header(v, e(Position::Header, None, Some(explode)));
        assert_eq!(
            [h(false, &arr), h(false, &obj), h(true, &obj)],
            ["blue,black,brown", "R,100,G,200,B,150", "R=100,G=200,B=150"]
        );
    }

    #[test]
    fn delimiters_are_never_confused_with_values() {
        let q = |v: Value, explode| query("ids", v, e(Position::Query, None, Some(explode)));
        assert_eq!(q(json!(["a,b", "c"]), false), "ids=a%2Cb,c");
        assert_eq!(q(json!(["a&b", "c"]), true), "ids=a%26b&ids=c");
        assert_eq!(path("id", &json!(["a/b", "c d"]), e(Position::Path, None, None)), "a%2Fb,c%20d");
        assert_eq!(path("id", &json!("x;y"), e(Position::Path, Some(Style::Matrix), None)), ";id=x%3By");
        assert_eq!(path("id", &json!([]), e(Position::Path, Some(Style::Matrix), None)), ";id");
        assert_eq!(path("id", &json!([]), e(Position::Path, Some(Style::Label), None)), "");
        let mut c = Vec::new();
        cookies("c", &json!(["1;2", 3]), e(Position::Cookie, None, None), &mut c);
        assert_eq!(c, ["c=1%3B2,3"]);
    }

    /// Stripe's form bodies and queries: `address[city]=...`, `expand[0]=...`, nested arrays of objects.
    #[test]
    fn deep_objects_nest_like_stripe() {
        let d = e(Position::Body, Some(Style::DeepObject), Some(true));
        let v = json!({"city": "Paris", "lines": ["a b", "c"], "items": [{"price": "p_1", "qty": 2}], "none": null});
        assert_eq!(
            query("address", v, d),
            "address%5Bcity%5D=Paris&address%5Blines%5D%5B0%5D=a%20b&address%5Blines%5D%5B1%5D=c&\
             address%5Bitems%5D%5B0%5D%5Bprice%5D=p_1&address%5Bitems%5D%5B0%5D%5Bqty%5D=2"
        );
        assert_eq!(
            query("expand", json!(["customer", "invoice.subscription"]), d),
            "expand%5B0%5D=customer&expand%5B1%5D=invoice.subscription"
        );
        assert_eq!(query("address", json!(""), d), "address=", "Stripe's empty string (unset) is a plain field");
        assert_eq!(query("metadata", json!({}), d), "", "nothing to send");
    }

    #[test]
    fn form_fields_without_a_style_send_objects_as_json() {
        assert_eq!(query("owner", json!({"n": 1}), Encoding::FORM_FIELD), "owner=%7B%22n%22%3A1%7D");
        assert_eq!(query("tags", json!(["a", "b"]), Encoding::FORM_FIELD), "tags=a&tags=b");
        assert_eq!(query("n", json!(null), Encoding::QUERY), "");
    }

    #[test]
    fn multipart_bodies_carry_files_and_fields() {
        let deep = e(Position::Body, Some(Style::DeepObject), None);
        assert_eq!(
            raw_pairs("link", &json!({"create": true, "meta": {"a": "x y"}}), deep),
            [("link[create]".to_string(), "true".to_string()), ("link[meta][a]".to_string(), "x y".to_string())]
        );
        let files =
            file_parts("file", &json!({"content": "aGk=", "filename": "a\"b.txt", "contentType": "text/plain"}))
                .unwrap();
        assert_eq!(files[0].data, b"hi");
        assert!(file_parts("file", &json!({"filename": "x"})).unwrap_err().contains("`content`"));
        assert!(file_parts("file", &json!({"content": "***"})).unwrap_err().contains("not base64"));
        let mut parts = files;
        parts.push(Part {
            name: "purpose".into(),
            filename: None,
            content_type: None,
            data: b"mcp-gateway-boundary-00000000".to_vec(),
        });
        let (ct, body) = multipart(&parts);
        assert_eq!(ct, "multipart/form-data; boundary=mcp-gateway-boundary-00000001", "a boundary no part contains");
        let text = String::from_utf8(body).unwrap();
        assert_eq!(
            text,
            "--mcp-gateway-boundary-00000001\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a%22b.txt\"\r\n\
             Content-Type: text/plain\r\n\r\nhi\r\n--mcp-gateway-boundary-00000001\r\nContent-Disposition: form-data; \
             name=\"purpose\"\r\n\r\nmcp-gateway-boundary-00000000\r\n--mcp-gateway-boundary-00000001--\r\n"
        );
    }

    #[test]
    fn styles_are_checked_against_their_position() {
        assert!(Encoding::resolve(Position::Path, Some(Style::DeepObject), None).is_err());
        assert!(Encoding::resolve(Position::Header, Some(Style::Form), None).is_err());
        assert!(Encoding::resolve(Position::Cookie, Some(Style::Matrix), None).is_err());
        let q = Encoding::resolve(Position::Query, Some(Style::DeepObject), None).unwrap();
        assert!(!q.explode, "only form explodes by default");
        assert!(Encoding::resolve(Position::Cookie, None, None).unwrap().explode);
    }

    #[test]
    fn decimal_writes_numbers_as_formatting_writes_them() {
        let mut buf = [0u8; 20];
        for n in [0, 7, 10, 10_000, 123_456_789, u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string());
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::strategies::{hostile_string, json_number};
    use proptest::prelude::*;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            4 => hostile_string().prop_map(Value::from),
            1 => json_number(),
            1 => any::<bool>().prop_map(Value::from),
            1 => Just(Value::Null),
        ]
    }

    /// What an argument holds: a scalar, a list of scalars or an object of scalars (one level deeper too).
    fn value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(2, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((hostile_string(), inner), 0..4)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// An encoding some position accepts, with the position.
    fn encoding() -> impl Strategy<Value = (Position, Encoding)> {
        (
            prop::sample::select(&Position::ALL[..]),
            prop::option::of(prop::sample::select(&Style::ALL[..])),
            any::<Option<bool>>(),
        )
            .prop_filter_map("a style the position takes", |(p, s, x)| Some((p, Encoding::resolve(p, s, x).ok()?)))
    }

    /// Only unreserved characters, `%XX`, and the delimiters given.
    fn url_safe(s: &str, delimiters: &str) -> bool {
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                if !(b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                    return false;
                }
                i += 3;
                continue;
            }
            if !(b[i].is_ascii_alphanumeric() || b"-_.~".contains(&b[i]) || delimiters.as_bytes().contains(&b[i])) {
                return false;
            }
            i += 1;
        }
        true
    }

    fn decoded(s: &str) -> String {
        percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
    }

    proptest! {
        #![proptest_config(crate::strategies::cases(1500))]

        /// Guards what a value can do to a URL: whatever it holds, in every style and position, its query and
        /// form pairs are percent-encoded but for the style's own `,`, its path text adds no `/`, `?` or `#`
        /// (only the style's `;` `.` `,` `=`), and a cookie cannot start another (no `;`, no whitespace).
        /// Where the style's delimiter is not itself a percent-encoded character (form's `,`, exploded
        /// lists), the values come back exactly when decoded.
        #[test]
        fn values_stay_inside_their_delimiters(value in value(), (position, e) in encoding()) {
            let mut pairs_out = Vec::new();
            pairs("p", &value, e, &mut pairs_out);
            for (k, v) in &pairs_out {
                prop_assert!(url_safe(k, "") && url_safe(v, ","), "{:?}={:?}", k, v);
            }
            let segment = path("p", &value, e);
            prop_assert!(url_safe(&segment, ";.,="), "{:?}", segment);
            let mut jar = Vec::new();
            cookies("p", &value, e, &mut jar);
            for c in &jar {
                prop_assert!(!c.contains(';') && !c.chars().any(char::is_whitespace), "{:?}", c);
            }
            let items: Option<Vec<String>> = match &value {
                Value::Array(items) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
                    Some(items.iter().map(text).collect())
                }
                _ => None,
            };
            if let (Some(items), false) = (items, e.style == Style::DeepObject || position == Position::Path) {
                if items.is_empty() {
                    prop_assert!(pairs_out.is_empty());
                } else if e.explode {
                    let back: Vec<String> = pairs_out.iter().map(|(_, v)| decoded(v)).collect();
                    prop_assert_eq!(back, items);
                } else if e.style == Style::Form {
                    prop_assert_eq!(pairs_out.len(), 1);
                    let back: Vec<String> = pairs_out[0].1.split(',').map(decoded).collect();
                    prop_assert_eq!(back, items);
                }
            }
        }

        /// Guards multipart bodies: whatever the parts hold (their bytes may contain boundary-like text, names
        /// quotes and line breaks), the body splits at its boundary into exactly those parts, each with its
        /// bytes unchanged and one header line per field.
        #[test]
        fn multipart_parts_come_back_whole(
            parts in prop::collection::vec(
                (hostile_string(), prop::option::of(hostile_string()), prop::option::of(hostile_string()),
                 prop::collection::vec(prop_oneof![
                     3 => any::<u8>().prop_map(|b| vec![b]),
                     1 => Just(b"\r\n--mcp-gateway-boundary-00000000".to_vec()),
                     1 => Just(b"--mcp-gateway-boundary-00000001--\r\n".to_vec()),
                 ], 0..12).prop_map(|v| v.concat())),
                0..4,
            )
        ) {
            let parts: Vec<Part> = parts
                .into_iter()
                .map(|(name, filename, content_type, data)| Part { name, filename, content_type, data })
                .collect();
            let (content_type, body) = multipart(&parts);
            let boundary = content_type.strip_prefix("multipart/form-data; boundary=").unwrap().as_bytes().to_vec();
            let mut delimiter = b"\r\n--".to_vec();
            delimiter.extend_from_slice(&boundary);
            // The body opens with `--boundary`; every later part starts after CRLF `--boundary`.
            let mut body = [b"\r\n".as_slice(), &body].concat();
            let mut chunks = Vec::new();
            while let Some(at) = body.windows(delimiter.len()).position(|w| w == delimiter.as_slice()) {
                chunks.push(body[..at].to_vec());
                body.drain(..at + delimiter.len());
            }
            prop_assert_eq!(body, b"--\r\n".to_vec(), "the closing delimiter ends the body");
            prop_assert_eq!(chunks.len(), parts.len() + 1);
            prop_assert!(chunks[0].is_empty());
            for (chunk, part) in chunks[1..].iter().zip(&parts) {
                let split = chunk.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
                let head = String::from_utf8_lossy(&chunk[2..split]).into_owned();
                let lines: Vec<&str> = head.split("\r\n").collect();
                prop_assert_eq!(lines.len(), 1 + usize::from(part.content_type.is_some()), "{:?}", head);
                prop_assert!(lines[0].starts_with("Content-Disposition: form-data; name=\""), "{:?}", head);
                prop_assert_eq!(&chunk[split + 4..], part.data.as_slice());
            }
        }
    }
}
