//! RFC 6570 URI templates of resource templates (`resourceTemplates[].uriTemplate`), matched against the
//! URIs clients read: a client expands the template (the SDKs do, e.g. the TypeScript SDK's `UriTemplate`),
//! the gateway finds which template a URI came from and what the variables were.
//!
//! | expression | expands to      | a variable matches (percent-decoded)                                 |
//! |------------|-----------------|----------------------------------------------------------------------|
//! | `{x}`      | `v`             | one or more characters but `/ ? #` (and `,` between several names)   |
//! | `{+x}`     | `v`, reserved   | anything (`,` between several names)                                 |
//! | `{#x}`     | `#v`            | anything after the `#`                                               |
//! | `{.x}`     | `.v`            | a label: anything but `/ ? # .`                                      |
//! | `{/x}`     | `/v`            | a path segment: anything but `/ ? #`                                 |
//! | `{?x,y}`   | `?x=v&y=w`      | query parameters, in any order, each optional (absent: empty string) |
//! | `{&x}`     | `&x=v`          | more query parameters (after a literal or `{?...}` query)            |
//!
//! Explode `x*` on `{x*}`, `{+x*}`, `{#x*}`, `{.x*}` and `{/x*}` matches the whole list as one string
//! (`{/path*}` of `/a/b/c` is `a/b/c`), which is what a request template wants to paste into a URL.
//! Refused at load, naming the expression: what the TypeScript SDK's `UriTemplate` (and so the clients
//! built on it) cannot expand, path parameters `{;x}` and prefixes `{x:n}`; explode on `?` and `&` (lists
//! of named pairs); the operators RFC 6570 reserves (`= , ! @ |`); a name used twice; query expressions
//! anywhere but at the end; a template without variables.
//!
//! Query parameters are matched by name, not position (a client may leave any out, as RFC 6570 expansion
//! does for undefined values); a URI with a parameter the template does not name, or with one twice, is not
//! the template's.

use percent_encoding::percent_decode_str;
use regex_lite::Regex;
use serde_json::{Map, Value};

/// What an expression's operator makes of its variables.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Simple,
    Reserved,
    Fragment,
    Label,
    Path,
    Query,
    Continuation,
}

impl Op {
    fn of(expr: &str) -> (Op, &str) {
        let op = match expr.as_bytes().first() {
            Some(b'+') => Op::Reserved,
            Some(b'#') => Op::Fragment,
            Some(b'.') => Op::Label,
            Some(b'/') => Op::Path,
            Some(b'?') => Op::Query,
            Some(b'&') => Op::Continuation,
            _ => return (Op::Simple, expr),
        };
        (op, &expr[1..])
    }

    /// What comes before the first variable, and between variables.
    #[cfg(test)]
    fn punctuation(self) -> (&'static str, &'static str) {
        match self {
            Op::Simple | Op::Reserved => ("", ","),
            Op::Fragment => ("#", ","),
            Op::Label => (".", "."),
            Op::Path => ("/", "/"),
            Op::Query => ("?", "&"),
            Op::Continuation => ("&", "&"),
        }
    }

    fn is_query(self) -> bool {
        matches!(self, Op::Query | Op::Continuation)
    }
}

/// One variable of an expression.
#[derive(Debug, Clone)]
struct Var {
    name: String,
    explode: bool,
}

/// A parsed, checked URI template.
#[derive(Debug)]
pub struct UriTemplate {
    /// Matches the URI up to its query (all of it, without query expressions).
    regex: Regex,
    /// The variables the regex captures, in order.
    captured: Vec<String>,
    /// The query parameters the template names (empty: the URI's query, if any, is matched by `regex`).
    query: Vec<String>,
    /// Every variable, in template order.
    pub vars: Vec<String>,
    #[cfg(test)]
    parts: Vec<Part>,
}

#[cfg(test)]
#[derive(Debug)]
enum Part {
    Literal(String),
    Expr(Op, Vec<Var>),
}

fn name_ok(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

fn parse_var(spec: &str, op: Op, expr: &str) -> Result<Var, String> {
    let bad = |why: &str| Err(format!("'{{{expr}}}': {why}"));
    if spec.contains(':') {
        return bad("prefixes (`name:n`) are not supported: the TypeScript SDK's clients cannot expand them");
    }
    let (name, explode) = match spec.strip_suffix('*') {
        Some(n) => (n, true),
        None => (spec, false),
    };
    if !name_ok(name) {
        return bad("variable names are letters, digits, `_` and `.`");
    }
    if explode && op.is_query() {
        return bad("explode (`*`) on `?` and `&` makes lists of named pairs, which this gateway does not match");
    }
    Ok(Var { name: name.to_string(), explode })
}

/// The regex of one variable's value (a capture group).
fn value_regex(op: Op, var: &Var, several: bool) -> &'static str {
    match (op, var.explode, several) {
        (Op::Simple, false, true) => "([^/?#,]+?)",
        (Op::Simple, _, _) => "([^/?#]+?)",
        (Op::Reserved | Op::Fragment, false, true) => "([^,]+?)",
        (Op::Reserved | Op::Fragment, _, _) => "(.+?)",
        (Op::Label, false, _) => "([^/?#.]+?)",
        (Op::Label, true, _) => "([^/?#]+?)",
        (Op::Path, false, _) => "([^/?#]+?)",
        (Op::Path, true, _) => "([^?#]+?)",
        (Op::Query | Op::Continuation, _, _) => "",
    }
}

impl UriTemplate {
    /// Parses and checks a template; the error names the expression at fault.
    pub fn parse(template: &str) -> Result<UriTemplate, String> {
        let mut pattern = String::from("^");
        let mut captured = Vec::new();
        let mut query: Vec<String> = Vec::new();
        let mut vars: Vec<String> = Vec::new();
        #[cfg(test)]
        let mut parts = Vec::new();
        let mut literal_before_query = String::new();
        let mut rest = template;
        loop {
            let open = rest.find('{').unwrap_or(rest.len());
            let literal = &rest[..open];
            if literal.contains('}') {
                return Err("has a '}' without its '{'".into());
            }
            if !literal.is_empty() {
                if !query.is_empty() {
                    return Err("query expressions ({?...}, {&...}) must come last".into());
                }
                pattern.push_str(&regex_lite::escape(literal));
                literal_before_query.push_str(literal);
                #[cfg(test)]
                parts.push(Part::Literal(literal.to_string()));
            }
            if open == rest.len() {
                break;
            }
            let close = rest[open..].find('}').ok_or("has a '{' without its '}'")? + open;
            let expr = &rest[open + 1..close];
            if expr.starts_with(['=', ',', '!', '@', '|']) {
                return Err(format!("'{{{expr}}}': the operator is reserved by RFC 6570 for future extensions"));
            }
            if expr.starts_with(';') {
                return Err(format!(
                    "'{{{expr}}}': path parameters (`{{;x}}`) are not supported: the TypeScript SDK's clients \
                     cannot expand them"
                ));
            }
            let (op, list) = Op::of(expr);
            let specs: Vec<&str> = list.split(',').collect();
            let mut expr_vars = Vec::with_capacity(specs.len());
            for spec in &specs {
                let var = parse_var(spec, op, expr)?;
                if vars.contains(&var.name) {
                    return Err(format!("variable '{}' appears twice", var.name));
                }
                vars.push(var.name.clone());
                expr_vars.push(var);
            }
            if op.is_query() {
                if literal_before_query.contains('?') {
                    return Err(format!(
                        "'{{{expr}}}': a template with query expressions writes its whole query with them \
                         (`{{?a,b}}`), not after a literal `?`"
                    ));
                }
                if op == Op::Continuation && query.is_empty() {
                    return Err(format!("'{{{expr}}}': {{&...}} continues a query, which has not begun"));
                }
                query.extend(expr_vars.iter().map(|v| v.name.clone()));
            } else {
                if !query.is_empty() {
                    return Err("query expressions ({?...}, {&...}) must come last".into());
                }
                let several = expr_vars.len() > 1;
                for (i, var) in expr_vars.iter().enumerate() {
                    let (first, between) = match op {
                        Op::Simple | Op::Reserved => ("", ","),
                        Op::Fragment => ("#", ","),
                        Op::Label => (".", "."),
                        Op::Path | Op::Query | Op::Continuation => ("/", "/"),
                    };
                    pattern.push_str(&regex_lite::escape(if i == 0 { first } else { between }));
                    pattern.push_str(value_regex(op, var, several));
                    captured.push(var.name.clone());
                }
            }
            #[cfg(test)]
            parts.push(Part::Expr(op, expr_vars));
            rest = &rest[close + 1..];
        }
        pattern.push('$');
        if vars.is_empty() {
            return Err("has no {variable}: list it under resources instead".into());
        }
        let scheme_part = template.split('{').next().unwrap_or_default();
        if !crate::resource::is_uri(&format!("{scheme_part}x")) {
            return Err("must be an absolute URI template (scheme:...) with the scheme before any {variable}".into());
        }
        let regex = Regex::new(&pattern).map_err(|e| e.to_string())?;
        Ok(UriTemplate {
            regex,
            captured,
            query,
            vars,
            #[cfg(test)]
            parts,
        })
    }

    /// The variables of `uri`, percent-decoded, when the template matches it.
    pub fn matches(&self, uri: &str) -> Option<Map<String, Value>> {
        // With query expressions, the regex matches what precedes the query, and the query goes by name.
        let (head, query) = match uri.split_once('?') {
            Some((h, q)) if !self.query.is_empty() => (h, q),
            _ => (uri, ""),
        };
        let caps = self.regex.captures(head)?;
        let mut out = Map::new();
        for (i, name) in self.captured.iter().enumerate() {
            let raw = caps.get(i + 1).map_or("", |m| m.as_str());
            out.insert(name.clone(), Value::from(decode(raw)?));
        }
        if !self.query.is_empty() {
            for name in &self.query {
                out.insert(name.clone(), Value::from(""));
            }
            let mut seen: Vec<&str> = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
                let name = self.query.iter().find(|n| *n == key)?;
                if seen.contains(&key) {
                    return None;
                }
                seen.push(key);
                out.insert(name.clone(), Value::from(decode(raw)?));
            }
        }
        Some(out)
    }

    /// Expands the template with these values (RFC 6570; absent variables are left out): what a client
    /// sends, to check the matcher against.
    #[cfg(test)]
    pub fn expand(&self, values: &Map<String, Value>) -> String {
        use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
        const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');
        const RESERVED: &AsciiSet = &UNRESERVED
            .remove(b':')
            .remove(b'/')
            .remove(b'?')
            .remove(b'#')
            .remove(b'[')
            .remove(b']')
            .remove(b'@')
            .remove(b'!')
            .remove(b'$')
            .remove(b'&')
            .remove(b'\'')
            .remove(b'(')
            .remove(b')')
            .remove(b'*')
            .remove(b'+')
            .remove(b',')
            .remove(b';')
            .remove(b'=')
            .remove(b'%');
        let mut out = String::new();
        let mut in_query = false;
        for part in &self.parts {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Expr(op, vars) => {
                    let (first, between) = op.punctuation();
                    let set = if matches!(op, Op::Reserved | Op::Fragment) { RESERVED } else { UNRESERVED };
                    let mut items = Vec::new();
                    for v in vars {
                        let Some(value) = values.get(&v.name).and_then(Value::as_str) else { continue };
                        // An exploded value is a list already joined with its operator's separator.
                        let encoded = if v.explode {
                            value
                                .split(between.chars().next().unwrap_or(','))
                                .map(|s| utf8_percent_encode(s, set).to_string())
                                .collect::<Vec<_>>()
                                .join(between)
                        } else {
                            utf8_percent_encode(value, set).to_string()
                        };
                        items.push(match op {
                            Op::Query | Op::Continuation => format!("{}={encoded}", v.name),
                            _ => encoded,
                        });
                    }
                    if items.is_empty() {
                        continue;
                    }
                    // `{?a}{?b}` after a first parameter goes on with `&`, as clients expand it.
                    let first = if op.is_query() && in_query { "&" } else { first };
                    in_query |= op.is_query();
                    out.push_str(first);
                    out.push_str(&items.join(between));
                }
            }
        }
        out
    }
}

/// A matched value, percent-decoded; `None` when it is not UTF-8.
fn decode(raw: &str) -> Option<String> {
    Some(percent_decode_str(raw).decode_utf8().ok()?.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn vars(t: &str, uri: &str) -> Option<Value> {
        UriTemplate::parse(t).unwrap().matches(uri).map(Value::Object)
    }

    #[test]
    fn every_operator_matches_what_it_expands_to() {
        assert_eq!(vars("u://{id}", "u://a%20b"), Some(json!({"id": "a b"})));
        assert_eq!(vars("u://{id}", "u://a/b"), None);
        assert_eq!(vars("u://{a,b}", "u://1,2"), Some(json!({"a": "1", "b": "2"})));
        assert_eq!(vars("u://x{+rest}", "u://x/c/d?e"), Some(json!({"rest": "/c/d?e"})));
        assert_eq!(vars("u://doc{#section}", "u://doc#intro"), Some(json!({"section": "intro"})));
        assert_eq!(vars("u://doc{#section}", "u://doc"), None);
        assert_eq!(vars("u://file{.ext}", "u://file.json"), Some(json!({"ext": "json"})));
        assert_eq!(vars("u://file{.ext}", "u://file.tar.gz"), None);
        assert_eq!(vars("u://file{.ext*}", "u://file.tar.gz"), Some(json!({"ext": "tar.gz"})));
        assert_eq!(vars("u://r{/a,b}", "u://r/x/y"), Some(json!({"a": "x", "b": "y"})));
        assert_eq!(vars("u://r{/path*}", "u://r/x/y/z"), Some(json!({"path": "x/y/z"})));
        assert_eq!(
            vars("u://s{/id}{?q,lang}", "u://s/7?lang=en&q=a%26b"),
            Some(json!({"id": "7", "q": "a&b", "lang": "en"}))
        );
        assert_eq!(vars("u://s{?q,lang}", "u://s"), Some(json!({"q": "", "lang": ""})), "all optional");
        assert_eq!(vars("u://s{?q}{&page}", "u://s?page=2"), Some(json!({"q": "", "page": "2"})));
        assert_eq!(vars("u://s{?q}", "u://s?q=1&other=2"), None, "a parameter the template does not name");
        assert_eq!(vars("u://s{?q}", "u://s?q=1&q=2"), None, "twice");
        assert_eq!(vars("u://s/{id}", "u://s/7?q=1"), None, "no query in the template");
        assert_eq!(vars("u://{id}", "u://%FF"), None, "not UTF-8");
    }

    #[test]
    fn what_is_not_supported_is_refused_naming_the_expression() {
        let err = |t: &str| UriTemplate::parse(t).unwrap_err();
        assert!(err("u://{?list*}").contains("'{?list*}': explode"), "{}", err("u://{?list*}"));
        assert!(err("u://{;p}").contains("'{;p}': path parameters"));
        assert!(err("u://{x:3}").contains("'{x:3}': prefixes"));
        assert!(err("u://{=x}").contains("reserved"));
        assert!(err("u://{|x}").contains("reserved"));
        assert!(err("u://{a-b}").contains("variable names"));
        assert!(err("u://{}").contains("variable names"));
        assert!(err("u://{a}/{a}").contains("appears twice"));
        assert!(err("u://s{?q}/x").contains("must come last"));
        assert!(err("u://s{?q}{id}").contains("must come last"));
        assert!(err("u://s{&q}").contains("has not begun"));
        assert!(err("u://s?a=1{?q}").contains("not after a literal `?`"));
        assert!(err("u://s?a=1{&q}").contains("not after a literal `?`"));
        assert!(err("u://x").contains("no {variable}"));
        assert!(err("{s}://x").contains("absolute URI"));
        assert!(err("u://{a").contains("without its '}'"));
        assert!(err("u://a}").contains("without its '{'"));
    }

    proptest! {
        /// What RFC 6570 expansion makes of any values, the matcher reads back.
        #[test]
        fn expansion_and_matching_agree(
            a in "[a-zA-Z0-9 é%&=;,./?#_~-]{1,12}",
            b in "[a-zA-Z0-9 é_~-]{1,8}",
            q in proptest::option::of("[a-zA-Z0-9 é&=?#_-]{0,8}"),
        ) {
            for t in ["u://x/{a}/{b}{?q}", "u://x{/a,b}{?q}", "u://x{.b}{/a}{?q}", "u://x/{b}{#a}", "u://x/{+a}/{b}"] {
                let tpl = UriTemplate::parse(t).unwrap();
                let mut values = Map::new();
                values.insert("a".into(), json!(a));
                values.insert("b".into(), json!(b));
                if let Some(q) = &q {
                    values.insert("q".into(), json!(q));
                }
                let uri = tpl.expand(&values);
                let Some(got) = tpl.matches(&uri) else {
                    // Reserved expansion keeps `/ ? #` of the value: only it may be ambiguous.
                    prop_assert!(t.contains("{+a}") || t.contains("{#a}"), "{t}: {uri} does not match");
                    continue;
                };
                if !(t.contains("{+a}") || t.contains("{#a}")) {
                    prop_assert_eq!(&got["a"], &json!(a), "{}: {}", t, uri);
                }
                prop_assert_eq!(&got["b"], &json!(b), "{}: {}", t, uri);
                if t.contains("{?q}") {
                    prop_assert_eq!(&got["q"], &json!(q.clone().unwrap_or_default()), "{}: {}", t, uri);
                }
            }
        }
    }
}
