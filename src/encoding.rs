//! How an argument's value is written into a path, query, header, cookie or form body: OpenAPI 3's
//! parameter styles (`form`, `simple`, `label`, `matrix`, `spaceDelimited`, `pipeDelimited`, `deepObject`),
//! so that a tool calls its operation exactly as the operation's document describes.
//!
//! Everything that goes into a URL or a form body comes out percent-encoded here, item by item, so that a
//! delimiter the style adds (`,` `;` `.` `=` `[ ]`) is never confused with the same character inside a value.

use crate::config::{Position, Style};
use crate::template::URL_COMPONENT;
use percent_encoding::utf8_percent_encode;
use serde_json::Value;

/// A style and its explode flag, resolved for one argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub style: Style,
    pub explode: bool,
    /// Objects go as JSON text: a form-body field without a style, as OpenAPI's default `contentType` for
    /// object properties says (and as hand-written configs always did).
    pub json_objects: bool,
}

impl Encoding {
    /// Form style, exploded: a query string's default, and that of arguments placed without a `position`.
    pub const QUERY: Encoding = Encoding { style: Style::Form, explode: true, json_objects: false };
    /// A form-body field without a style.
    pub const FORM_FIELD: Encoding = Encoding { style: Style::Form, explode: true, json_objects: true };

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
            let names: Vec<&str> = allowed.iter().map(|s| s.name()).collect();
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
        })
    }
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
fn flat(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().map(text).collect(),
        Value::Object(m) => m.iter().flat_map(|(k, v)| [k.clone(), text(v)]).collect(),
        other => vec![text(other)],
    }
}

/// `k=v` texts of an object's members.
fn members(v: &Value, join: &str) -> Vec<String> {
    match v {
        Value::Object(m) => m.iter().map(|(k, v)| format!("{}{join}{}", enc(k), enc(&text(v)))).collect(),
        _ => Vec::new(),
    }
}

fn joined(v: &Value, sep: &str) -> String {
    flat(v).iter().map(|s| enc(s)).collect::<Vec<_>>().join(sep)
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
    if is_empty(value) {
        return;
    }
    let scalar = !value.is_array() && !value.is_object();
    if scalar || (value.is_object() && e.json_objects) {
        out.push((enc(name), enc(&text(value))));
        return;
    }
    match (e.style, e.explode) {
        (Style::DeepObject, _) => deep(&enc(name), value, out),
        (_, true) => match value {
            Value::Array(items) => out.extend(items.iter().map(|i| (enc(name), enc(&text(i))))),
            Value::Object(m) => out.extend(m.iter().map(|(k, v)| (enc(k), enc(&text(v))))),
            _ => {}
        },
        (Style::SpaceDelimited, false) => out.push((enc(name), joined(value, "%20"))),
        (Style::PipeDelimited, false) => out.push((enc(name), joined(value, "%7C"))),
        (_, false) => out.push((enc(name), joined(value, ","))),
    }
}

/// deepObject, nested as Stripe and PHP read it: `a[b][c]=v`, array items by index: `a[0]=x`.
fn deep(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(m) => m.iter().for_each(|(k, v)| deep(&format!("{prefix}%5B{}%5D", enc(k)), v, out)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| deep(&format!("{prefix}%5B{i}%5D"), v, out)),
        Value::Null => {}
        other => out.push((prefix.to_string(), enc(&text(other)))),
    }
}

/// What replaces `{name}` in a path (label and matrix bring their own `.` and `;`), percent-encoded.
pub fn path(name: &str, value: &Value, e: Encoding) -> String {
    let scalar = !value.is_array() && !value.is_object();
    match (e.style, e.explode) {
        _ if scalar && e.style == Style::Matrix => format!(";{}={}", enc(name), enc(&text(value))),
        _ if scalar && e.style == Style::Label => format!(".{}", enc(&text(value))),
        _ if scalar => enc(&text(value)),
        _ if is_empty(value) && e.style == Style::Matrix => format!(";{}", enc(name)),
        (Style::Matrix, true) if value.is_object() => members(value, "=").iter().map(|m| format!(";{m}")).collect(),
        (Style::Matrix, true) => flat(value).iter().map(|i| format!(";{}={}", enc(name), enc(i))).collect(),
        (Style::Matrix, false) => format!(";{}={}", enc(name), joined(value, ",")),
        (Style::Label, true) if value.is_object() => members(value, "=").iter().map(|m| format!(".{m}")).collect(),
        (Style::Label, true) => flat(value).iter().map(|i| format!(".{}", enc(i))).collect(),
        (Style::Label, false) => format!(".{}", joined(value, ",")),
        (_, true) if value.is_object() => members(value, "=").join(","),
        _ => joined(value, ","),
    }
}

/// A header value (simple style; headers are not percent-encoded).
pub fn header(value: &Value, e: Encoding) -> String {
    match value {
        Value::Object(m) if e.explode => {
            m.iter().map(|(k, v)| format!("{k}={}", text(v))).collect::<Vec<_>>().join(",")
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
    fn styles_are_checked_against_their_position() {
        assert!(Encoding::resolve(Position::Path, Some(Style::DeepObject), None).is_err());
        assert!(Encoding::resolve(Position::Header, Some(Style::Form), None).is_err());
        assert!(Encoding::resolve(Position::Cookie, Some(Style::Matrix), None).is_err());
        let q = Encoding::resolve(Position::Query, Some(Style::DeepObject), None).unwrap();
        assert!(!q.explode, "only form explodes by default");
        assert!(Encoding::resolve(Position::Cookie, None, None).unwrap().explode);
    }
}
