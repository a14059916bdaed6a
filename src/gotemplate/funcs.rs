//! Functions of the Go dialect: Go's template builtins and the sprig library (v3) as Higress registers it.
//!
//! Arguments arrive as template values. Where Higress hands sprig's list and dict functions an array's raw
//! JSON text (so `join` and `toJson` misbehave on arrays there), these get the array or object itself: the
//! template's author meant that. Results follow Higress's printing: integers as `%d`, floats as `%f`.

use super::exec::State;
use super::time;
use super::value::{Time, Value};
use serde_json::{Map, Value as Json};

/// What functions may read besides their arguments: the client's address and the clock.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// The client's address as `getRealIP` reports it (first `X-Forwarded-For` hop, else the socket's).
    pub real_ip: Option<String>,
    /// The socket peer address (`getSocketIP`).
    pub socket_ip: Option<String>,
    /// A fixed clock for tests; the system clock otherwise.
    pub now: Option<Time>,
}

/// Every function this dialect implements.
pub(crate) const IMPLEMENTED: &[&str] = &[
    // Go builtins
    "and",
    "or",
    "not",
    "len",
    "index",
    "slice",
    "print",
    "printf",
    "println",
    "sprintf",
    "html",
    "js",
    "urlquery",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "gjson",
    "getRealIP",
    "getSocketIP",
    // strings
    "trim",
    "trimAll",
    "trimPrefix",
    "trimSuffix",
    "upper",
    "lower",
    "title",
    "untitle",
    "repeat",
    "substr",
    "nospace",
    "trunc",
    "abbrev",
    "initials",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "quote",
    "squote",
    "cat",
    "indent",
    "nindent",
    "replace",
    "plural",
    "split",
    "splitList",
    "splitn",
    "toString",
    "toStrings",
    "join",
    "sortAlpha",
    "regexMatch",
    "regexFind",
    "regexFindAll",
    "regexReplaceAll",
    "regexReplaceAllLiteral",
    "regexSplit",
    "regexQuoteMeta",
    "randAlphaNum",
    "randAlpha",
    "randNumeric",
    "randAscii",
    "swapcase",
    // math
    "add",
    "add1",
    "sub",
    "mul",
    "div",
    "mod",
    "max",
    "min",
    "floor",
    "ceil",
    "round",
    "addf",
    "add1f",
    "subf",
    "mulf",
    "divf",
    "maxf",
    "minf",
    "int",
    "int64",
    "float64",
    "atoi",
    "seq",
    "until",
    "untilStep",
    "randInt",
    // lists and dicts
    "list",
    "tuple",
    "first",
    "rest",
    "last",
    "initial",
    "append",
    "push",
    "prepend",
    "concat",
    "reverse",
    "uniq",
    "without",
    "has",
    "compact",
    "dict",
    "get",
    "set",
    "unset",
    "hasKey",
    "pluck",
    "keys",
    "values",
    "pick",
    "omit",
    "dig",
    "merge",
    // defaults, types, encoding
    "default",
    "empty",
    "coalesce",
    "all",
    "any",
    "ternary",
    "toJson",
    "toPrettyJson",
    "toRawJson",
    "fromJson",
    "typeOf",
    "kindOf",
    "typeIs",
    "deepEqual",
    "b64enc",
    "b64dec",
    "b32enc",
    "b32dec",
    "uuidv4",
    "sha256sum",
    "adler32sum",
    // dates
    "now",
    "date",
    "dateInZone",
    "date_in_zone",
    "htmlDate",
    "htmlDateInZone",
    "unixEpoch",
    "duration",
    "dateModify",
    "date_modify",
];

/// sprig functions (v3) that this gateway does not implement: named in the refusal, unlike unknown names.
const NOT_IMPLEMENTED: &[&str] = &[
    "env",
    "expandenv",
    "getHostByName",
    "wrap",
    "wrapWith",
    "shuffle",
    "snakecase",
    "camelcase",
    "kebabcase",
    "toDate",
    "mustToDate",
    "ago",
    "durationRound",
    "sha1sum",
    "encryptAES",
    "decryptAES",
    "genPrivateKey",
    "derivePassword",
    "buildCustomCert",
    "genCA",
    "genSelfSignedCert",
    "genSignedCert",
    "bcrypt",
    "htpasswd",
    "randBytes",
    "semver",
    "semverCompare",
    "osBase",
    "osClean",
    "osDir",
    "osExt",
    "osIsAbs",
    "base",
    "dir",
    "clean",
    "ext",
    "isAbs",
    "chunk",
    "mustChunk",
    "deepCopy",
    "mustDeepCopy",
    "mergeOverwrite",
    "urlParse",
    "urlJoin",
    "call",
    "fail",
    "regexFindAllSubmatch",
    "sortDict",
    "mustRegexMatch",
    "mustRegexFind",
    "mustRegexFindAll",
    "mustRegexReplaceAll",
    "mustRegexReplaceAllLiteral",
    "mustRegexSplit",
    "mustToJson",
    "mustToPrettyJson",
    "mustToRawJson",
    "mustFromJson",
    "mustDateModify",
    "mustFirst",
    "mustRest",
    "mustLast",
    "mustInitial",
    "mustAppend",
    "mustPush",
    "mustPrepend",
    "mustReverse",
    "mustUniq",
    "mustWithout",
    "mustHas",
    "mustCompact",
    "mustSlice",
    "mustMerge",
    "mustMergeOverwrite",
    "uuid",
    "toDecimal",
    "hello",
];

/// Accepts an implemented function name, or says why a template naming it is refused.
pub fn known(name: &str) -> Result<(), String> {
    if IMPLEMENTED.contains(&name) {
        Ok(())
    } else if NOT_IMPLEMENTED.contains(&name) {
        Err(format!("function \"{name}\" (from Higress's function set) is not implemented by this gateway"))
    } else {
        Err(format!("function \"{name}\" not defined"))
    }
}

/// Whether a character constant (`','`) reaches this function as a one-character string rather than as the
/// integer Go makes it. Higress passes the integer, and sprig's string parameters then refuse it, failing the
/// call (`join ','` in a reference config): the author meant the character. Math and Go's builtins keep Go's
/// integer.
pub fn char_as_string(name: &str) -> bool {
    const NUMERIC: &[&str] = &[
        "add",
        "add1",
        "sub",
        "mul",
        "div",
        "mod",
        "max",
        "min",
        "floor",
        "ceil",
        "round",
        "addf",
        "add1f",
        "subf",
        "mulf",
        "divf",
        "maxf",
        "minf",
        "int",
        "int64",
        "float64",
        "until",
        "untilStep",
        "seq",
        "randInt",
        "print",
        "printf",
        "sprintf",
        "println",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "index",
        "slice",
        "list",
        "tuple",
        "duration",
        "repeat",
        "substr",
        "trunc",
        "abbrev",
        "indent",
        "nindent",
        "plural",
        "splitn",
        "regexFindAll",
        "regexSplit",
        "randAlphaNum",
        "randAlpha",
        "randNumeric",
        "randAscii",
        "toJson",
        "toRawJson",
        "toPrettyJson",
        "typeOf",
        "kindOf",
        "default",
        "empty",
        "coalesce",
        "ternary",
    ];
    !NUMERIC.contains(&name)
}

type R = Result<Value, String>;

/// Refuses a result that would exceed the output limit, before it is built: a few functions multiply their
/// input (`replace`, `join`, `indent`, `regexReplaceAll`), and memory runs out before any later check.
fn fits(size: usize, limit: usize, name: &str) -> Result<(), String> {
    if size > limit {
        return Err(format!("{name}: the result would exceed the output limit of {limit} bytes"));
    }
    Ok(())
}

/// A writer that refuses to grow beyond a limit (pretty JSON of deeply nested data multiplies its size).
struct Capped(Vec<u8>, usize);

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > self.1 {
            return Err(std::io::Error::other("over the output limit"));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn want(args: &[Value], n: usize, name: &str) -> Result<(), String> {
    if args.len() != n {
        return Err(format!("wrong number of args for {name}: want {n} got {}", args.len()));
    }
    Ok(())
}

fn at_least(args: &[Value], n: usize, name: &str) -> Result<(), String> {
    if args.len() < n {
        return Err(format!("wrong number of args for {name}: want at least {n} got {}", args.len()));
    }
    Ok(())
}

/// sprig's `strval`: a value as a string (arrays and objects as their JSON text).
fn s(v: &Value) -> String {
    match v {
        Value::Missing | Value::Null => String::new(),
        Value::Number(_) => go_number(v),
        other => other.text().into_owned(),
    }
}

/// A number as Go's `%v` prints the int or float64 Higress converts it to.
fn go_number(v: &Value) -> String {
    match v.as_int() {
        Some(i) => i.to_string(),
        None => go_float(v.num()),
    }
}

/// Go's `%v` for a float64: the shortest representation, with an exponent when large or small.
fn go_float(f: f64) -> String {
    if f == 0.0 {
        return "0".into();
    }
    let exp = f.abs().log10().floor() as i32;
    if (-4..21).contains(&exp) {
        format!("{f}")
    } else {
        let t = format!("{f:e}");
        // Rust writes 1e21, Go 1e+21.
        match t.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e:0>2}"),
            Some((m, e)) => format!("{m}e-{:0>2}", &e[1..]),
            None => t,
        }
    }
}

/// `cast.ToInt64`: numbers (truncated), numeric strings, booleans; anything else is 0.
fn i(v: &Value) -> i64 {
    match v {
        Value::Number(_) => v.as_int().unwrap_or(v.num() as i64),
        Value::String(s) => s.trim().parse::<i64>().unwrap_or(0),
        Value::Bool(true) => 1,
        _ => 0,
    }
}

/// `cast.ToFloat64`.
fn f(v: &Value) -> f64 {
    match v {
        Value::Number(_) | Value::String(_) | Value::Bool(_) => v.num(),
        _ => 0.0,
    }
}

/// A list argument: an array's elements; sprig's list functions refuse anything else.
fn list(v: &Value, name: &str) -> Result<Vec<Json>, String> {
    match v.to_json() {
        Json::Array(a) => Ok(a),
        Json::Null => Ok(Vec::new()),
        _ => Err(format!("Cannot find {name} on type {}", v.type_name())),
    }
}

fn dict(v: &Value) -> Result<Map<String, Json>, String> {
    match v.to_json() {
        Json::Object(m) => Ok(m),
        Json::Null => Ok(Map::new()),
        _ => Err(format!("expected a dict, got {}", v.type_name())),
    }
}

fn from(j: Json) -> Value {
    Value::from_json(&j)
}

fn arr(items: Vec<Json>) -> Value {
    Value::Json(Json::Array(items).to_string())
}

fn strs(items: impl IntoIterator<Item = String>) -> Value {
    arr(items.into_iter().map(Json::String).collect())
}

/// sprig's `empty`: the zero value of its type is empty, and so are empty arrays and objects.
pub fn empty(v: &Value) -> bool {
    !v.truth()
}

fn json_text(v: &Value, pretty: bool, html_escape: bool, limit: usize) -> Result<String, String> {
    let j = v.to_json();
    let mut w = Capped(Vec::new(), limit);
    let written = if pretty { serde_json::to_writer_pretty(&mut w, &j) } else { serde_json::to_writer(&mut w, &j) };
    written.map_err(|_| format!("toJson: the result would exceed the output limit of {limit} bytes"))?;
    let text = String::from_utf8(w.0).unwrap_or_default();
    if !html_escape {
        return Ok(text);
    }
    // Go's json.Marshal escapes <, > and & (and U+2028/9) for HTML safety.
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    // Without entropy the values are still well-formed; uniqueness is then the host's problem.
    let _ = getrandom::getrandom(&mut buf);
    buf
}

fn random_string(n: i64, alphabet: &[u8]) -> Value {
    let n = n.clamp(0, 4096) as usize;
    let bytes = random_bytes(n);
    Value::String(bytes.iter().map(|b| alphabet[*b as usize % alphabet.len()] as char).collect())
}

fn regex(pattern: &str) -> Result<regex_lite::Regex, String> {
    if pattern.len() > 4096 {
        return Err("regular expression longer than 4096 bytes".into());
    }
    regex_lite::Regex::new(pattern).map_err(|e| e.to_string())
}

fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => a.num().partial_cmp(&b.num()).unwrap_or(std::cmp::Ordering::Equal),
        _ => a.text().cmp(&b.text()),
    }
}

/// Go's `eq` as Higress's fork does it: numbers numerically (a numeric string too), else raw JSON equality.
fn eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => a.num() == b.num(),
        (Value::Number(_), Value::String(s)) | (Value::String(s), Value::Number(_)) => {
            let n = if let Value::Number(_) = a { a.num() } else { b.num() };
            s.parse::<f64>().is_ok_and(|x| x == n)
        }
        (Value::Missing, Value::Missing) => true,
        _ => a.raw_json() == b.raw_json(),
    }
}

/// Calls a function (never `and`/`or`/`gjson`, which the executor handles).
pub(crate) fn call(st: &mut State, name: &str, a: Vec<Value>) -> R {
    let n = a.len();
    let arg = |k: usize| a.get(k).cloned().unwrap_or(Value::Missing);
    Ok(match name {
        "not" => {
            want(&a, 1, name)?;
            Value::Bool(!a[0].truth())
        }
        "len" => {
            want(&a, 1, name)?;
            match &a[0] {
                Value::Json(raw) => {
                    let mut count = 0;
                    gjson::parse(raw).each(|_, _| {
                        count += 1;
                        true
                    });
                    Value::int(count)
                }
                Value::String(s) => Value::int(s.len() as i64),
                // Higress's `len` is 0 for anything else (Go's would fail).
                _ => Value::int(0),
            }
        }
        "index" => {
            at_least(&a, 1, name)?;
            let mut v = a[0].clone();
            for key in &a[1..] {
                st.spend(1).map_err(|e| e.to_string())?;
                v = if v.is_array() {
                    let Some(k) = key.as_int() else { return Err("index of array must be integer".into()) };
                    let items = list(&v, name)?;
                    let item = usize::try_from(k).ok().and_then(|k| items.get(k));
                    match item {
                        Some(item) => from(item.clone()),
                        None => return Err(format!("array index out of range: {k}")),
                    }
                } else if v.is_object() {
                    dict(&v)?.get(s(key).as_str()).map(|j| from(j.clone())).unwrap_or(Value::Missing)
                } else if matches!(v, Value::Missing | Value::Null) {
                    Value::Missing
                } else {
                    return Err(format!("can't index item of type {}", v.type_name()));
                };
            }
            v
        }
        "slice" => {
            at_least(&a, 1, name)?;
            let idx: Vec<i64> = a[1..].iter().map(i).collect();
            match &a[0] {
                Value::String(text) => {
                    let b = text.as_bytes();
                    let lo = idx.first().copied().unwrap_or(0).max(0) as usize;
                    let hi = idx.get(1).copied().map(|h| h.max(0) as usize).unwrap_or(b.len());
                    if lo > hi || hi > b.len() {
                        return Err(format!("slice index out of range: [{lo}:{hi}]"));
                    }
                    Value::String(String::from_utf8_lossy(&b[lo..hi]).into_owned())
                }
                v => {
                    let items = list(v, name)?;
                    let lo = idx.first().copied().unwrap_or(0).max(0) as usize;
                    let hi = idx.get(1).copied().map(|h| h.max(0) as usize).unwrap_or(items.len());
                    if lo > hi || hi > items.len() {
                        return Err(format!("slice index out of range: [{lo}:{hi}]"));
                    }
                    arr(items[lo..hi].to_vec())
                }
            }
        }
        "print" | "println" => {
            let mut out = String::new();
            for (k, v) in a.iter().enumerate() {
                // Higress's `print` puts a space between every two operands (Go's only between non-strings).
                if k > 0 {
                    out.push(' ');
                }
                out.push_str(&v.text());
            }
            if name == "println" {
                out.push('\n');
            }
            Value::String(out)
        }
        "printf" | "sprintf" => {
            at_least(&a, 1, name)?;
            // Higress returns the format unchanged when there is nothing to format (`printf "100%"`).
            if a.len() == 1 {
                Value::String(s(&a[0]))
            } else {
                Value::String(printf(&s(&a[0]), &a[1..]))
            }
        }
        "html" => Value::String(html_escape(&a.iter().map(s).collect::<String>())),
        "js" => Value::String(js_escape(&a.iter().map(s).collect::<String>())),
        "urlquery" => Value::String(query_escape(&a.iter().map(s).collect::<String>())),
        "eq" => {
            at_least(&a, 2, name)?;
            Value::Bool(a[1..].iter().any(|b| eq(&a[0], b)))
        }
        "ne" => {
            want(&a, 2, name)?;
            Value::Bool(a[0].raw_json() != a[1].raw_json())
        }
        "lt" | "le" | "gt" | "ge" => {
            want(&a, 2, name)?;
            let o = compare(&a[0], &a[1]);
            Value::Bool(match name {
                "lt" => o.is_lt(),
                "le" => o.is_le(),
                "gt" => o.is_gt(),
                _ => o.is_ge(),
            })
        }
        "getRealIP" => Value::String(st.env.real_ip.clone().or_else(|| st.env.socket_ip.clone()).unwrap_or_default()),
        "getSocketIP" => Value::String(st.env.socket_ip.clone().unwrap_or_default()),

        // strings
        "trim" => Value::String(s(&arg(0)).trim().to_string()),
        "trimAll" => {
            want(&a, 2, name)?;
            let cut: Vec<char> = s(&a[0]).chars().collect();
            Value::String(s(&a[1]).trim_matches(|c| cut.contains(&c)).to_string())
        }
        "trimPrefix" => {
            want(&a, 2, name)?;
            let t = s(&a[1]);
            Value::String(t.strip_prefix(s(&a[0]).as_str()).unwrap_or(&t).to_string())
        }
        "trimSuffix" => {
            want(&a, 2, name)?;
            let t = s(&a[1]);
            Value::String(t.strip_suffix(s(&a[0]).as_str()).unwrap_or(&t).to_string())
        }
        "upper" => Value::String(crate::case::to_uppercase(&s(&arg(0)))),
        "lower" => Value::String(crate::case::to_lowercase(&s(&arg(0)))),
        "title" => Value::String(map_words(&s(&arg(0)), true)),
        "untitle" => Value::String(map_words(&s(&arg(0)), false)),
        "swapcase" => Value::String(
            s(&arg(0))
                .chars()
                .map(|c| {
                    if c.is_uppercase() {
                        crate::case::lower(c).collect::<String>()
                    } else {
                        crate::case::upper(c).collect()
                    }
                })
                .collect(),
        ),
        "repeat" => {
            want(&a, 2, name)?;
            let count = i(&a[0]).max(0) as usize;
            let t = s(&a[1]);
            if t.len().saturating_mul(count) > st.max_output {
                return Err("repeat: result over the output limit".into());
            }
            st.spend(count as u64 / 64).map_err(|e| e.to_string())?;
            Value::String(t.repeat(count))
        }
        "substr" => {
            want(&a, 3, name)?;
            let t = s(&a[2]);
            let (start, end) = (i(&a[0]), i(&a[1]));
            let b = t.as_bytes();
            let len = b.len() as i64;
            let (lo, hi) = if start < 0 {
                (0, end.clamp(0, len))
            } else if end < 0 || end > len {
                (start.min(len), len)
            } else {
                (start.min(end), end)
            };
            Value::String(String::from_utf8_lossy(&b[lo as usize..hi as usize]).into_owned())
        }
        "nospace" => Value::String(s(&arg(0)).chars().filter(|c| !c.is_whitespace()).collect()),
        "trunc" => {
            want(&a, 2, name)?;
            let c = i(&a[0]);
            let t = s(&a[1]);
            let b = t.as_bytes();
            let len = b.len() as i64;
            let out = if c >= 0 && len > c {
                &b[..c as usize]
            } else if c < 0 && len + c > 0 {
                &b[(len + c) as usize..]
            } else {
                b
            };
            Value::String(String::from_utf8_lossy(out).into_owned())
        }
        "abbrev" => {
            want(&a, 2, name)?;
            let w = i(&a[0]);
            let t = s(&a[1]);
            if w < 4 || (t.len() as i64) <= w {
                Value::String(t)
            } else {
                let cut = String::from_utf8_lossy(&t.as_bytes()[..(w - 3) as usize]).into_owned();
                Value::String(cut + "...")
            }
        }
        "initials" => Value::String(s(&arg(0)).split_whitespace().filter_map(|w| w.chars().next()).collect()),
        "contains" => {
            want(&a, 2, name)?;
            Value::Bool(s(&a[1]).contains(s(&a[0]).as_str()))
        }
        "hasPrefix" => {
            want(&a, 2, name)?;
            Value::Bool(s(&a[1]).starts_with(s(&a[0]).as_str()))
        }
        "hasSuffix" => {
            want(&a, 2, name)?;
            Value::Bool(s(&a[1]).ends_with(s(&a[0]).as_str()))
        }
        "quote" | "squote" => {
            let parts: Vec<String> = a
                .iter()
                .filter(|v| !matches!(v, Value::Missing | Value::Null))
                .map(|v| if name == "quote" { go_quote(&s(v)) } else { format!("'{}'", s(v)) })
                .collect();
            Value::String(parts.join(" "))
        }
        "cat" => Value::String(
            a.iter().filter(|v| !matches!(v, Value::Missing | Value::Null)).map(s).collect::<Vec<_>>().join(" "),
        ),
        "indent" | "nindent" => {
            want(&a, 2, name)?;
            let pad = " ".repeat(i(&a[0]).clamp(0, 1024) as usize);
            let text = s(&a[1]);
            fits(text.len() + (text.matches('\n').count() + 2) * pad.len(), st.max_output, name)?;
            let t = format!("{pad}{}", s(&a[1]).replace('\n', &format!("\n{pad}")));
            Value::String(if name == "nindent" { format!("\n{t}") } else { t })
        }
        "replace" => {
            want(&a, 3, name)?;
            let (old, new, src) = (s(&a[0]), s(&a[1]), s(&a[2]));
            if old.is_empty() {
                // Go inserts `new` around every rune; bounded by the output limit like any result.
                let mut out = new.clone();
                for c in src.chars() {
                    out.push(c);
                    out.push_str(&new);
                    if out.len() > st.max_output {
                        return Err("replace: result over the output limit".into());
                    }
                }
                Value::String(out)
            } else {
                fits(src.len() + src.matches(old.as_str()).count().saturating_mul(new.len()), st.max_output, name)?;
                Value::String(src.replace(&old, &new))
            }
        }
        "plural" => {
            want(&a, 3, name)?;
            Value::String(if i(&a[2]) == 1 { s(&a[0]) } else { s(&a[1]) })
        }
        "split" | "splitn" => {
            let (sep, count, text) = if name == "split" {
                want(&a, 2, name)?;
                (s(&a[0]), -1, s(&a[1]))
            } else {
                want(&a, 3, name)?;
                (s(&a[0]), i(&a[1]), s(&a[2]))
            };
            let parts = go_split(&text, &sep, count);
            let map: Map<String, Json> =
                parts.into_iter().enumerate().map(|(k, p)| (format!("_{k}"), Json::String(p))).collect();
            Value::Json(Json::Object(map).to_string())
        }
        "splitList" => {
            want(&a, 2, name)?;
            strs(go_split(&s(&a[1]), &s(&a[0]), -1))
        }
        "toString" => Value::String(s(&arg(0))),
        "toStrings" => strs(list(&arg(0), name)?.iter().map(|j| s(&from(j.clone())))),
        "join" => {
            want(&a, 2, name)?;
            // `join LIST SEP` (arguments swapped, as a Higress reference config writes them) means `join SEP LIST`.
            let a = if a[0].is_array() && !a[1].is_array() { vec![a[1].clone(), a[0].clone()] } else { a };
            let parts: Vec<String> = match &a[1] {
                v if v.is_array() => list(v, name)?.into_iter().filter(|j| !j.is_null()).map(|j| s(&from(j))).collect(),
                Value::Missing | Value::Null => Vec::new(),
                v => vec![s(v)],
            };
            let sep = s(&a[0]);
            let size = parts.iter().map(String::len).sum::<usize>() + parts.len().saturating_mul(sep.len());
            fits(size, st.max_output, name)?;
            Value::String(parts.join(&sep))
        }
        "sortAlpha" => {
            let mut items: Vec<String> = match &arg(0) {
                v if v.is_array() => list(v, name)?.into_iter().map(|j| s(&from(j))).collect(),
                v => vec![s(v)],
            };
            crate::sort::sort(&mut items);
            strs(items)
        }
        "regexMatch" => {
            want(&a, 2, name)?;
            Value::Bool(regex(&s(&a[0]))?.is_match(&s(&a[1])))
        }
        "regexFind" => {
            want(&a, 2, name)?;
            let text = s(&a[1]);
            Value::String(regex(&s(&a[0]))?.find(&text).map(|m| m.as_str().to_string()).unwrap_or_default())
        }
        "regexFindAll" => {
            want(&a, 3, name)?;
            let text = s(&a[1]);
            let limit = i(&a[2]);
            let limit = if limit < 0 { usize::MAX } else { limit as usize };
            strs(regex(&s(&a[0]))?.find_iter(&text).take(limit).map(|m| m.as_str().to_string()))
        }
        "regexReplaceAll" | "regexReplaceAllLiteral" => {
            want(&a, 3, name)?;
            let re = regex(&s(&a[0]))?;
            let (text, repl) = (s(&a[1]), s(&a[2]));
            let matches = re.find_iter(&text).count();
            st.spend(matches as u64 / 16).map_err(|e| e.to_string())?;
            // Each match adds the replacement, whose `$n` references add at most the text each.
            let refs = if name == "regexReplaceAll" { repl.matches('$').count() } else { 0 };
            let size = matches.saturating_mul(repl.len()).saturating_add(refs.saturating_mul(text.len()));
            fits(text.len().saturating_add(size), st.max_output, name)?;
            let out = if name == "regexReplaceAll" {
                re.replace_all(&text, repl.as_str()).into_owned()
            } else {
                re.replace_all(&text, regex_lite::NoExpand(&repl)).into_owned()
            };
            Value::String(out)
        }
        "regexSplit" => {
            want(&a, 3, name)?;
            let text = s(&a[1]);
            let limit = i(&a[2]);
            let re = regex(&s(&a[0]))?;
            if limit == 0 {
                strs(Vec::new())
            } else if limit < 0 {
                strs(re.split(&text).map(str::to_string))
            } else {
                strs(re.splitn(&text, limit as usize).map(str::to_string))
            }
        }
        "regexQuoteMeta" => Value::String(regex_lite::escape(&s(&arg(0)))),
        "randAlphaNum" => random_string(i(&arg(0)), b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"),
        "randAlpha" => random_string(i(&arg(0)), b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"),
        "randNumeric" => random_string(i(&arg(0)), b"0123456789"),
        "randAscii" => {
            let alphabet: Vec<u8> = (32u8..127).collect();
            random_string(i(&arg(0)), &alphabet)
        }

        // math
        "add" => Value::int(a.iter().map(i).fold(0i64, i64::wrapping_add)),
        "add1" => Value::int(i(&arg(0)).wrapping_add(1)),
        "sub" => {
            want(&a, 2, name)?;
            Value::int(i(&a[0]).wrapping_sub(i(&a[1])))
        }
        "mul" => {
            at_least(&a, 1, name)?;
            Value::int(a.iter().map(i).fold(1i64, i64::wrapping_mul))
        }
        "div" | "mod" => {
            want(&a, 2, name)?;
            let (x, y) = (i(&a[0]), i(&a[1]));
            if y == 0 {
                return Err("integer divide by zero".into());
            }
            Value::int(if name == "div" { x.wrapping_div(y) } else { x.wrapping_rem(y) })
        }
        "max" | "min" => {
            at_least(&a, 1, name)?;
            let it = a.iter().map(i);
            Value::int(if name == "max" { it.max().unwrap_or(0) } else { it.min().unwrap_or(0) })
        }
        "floor" => Value::float(f(&arg(0)).floor()),
        "ceil" => Value::float(f(&arg(0)).ceil()),
        "round" => {
            at_least(&a, 2, name)?;
            let p = 10f64.powi(i(&a[1]).clamp(-300, 300) as i32);
            let half = if n > 2 { f(&a[2]) } else { 0.5 };
            let v = f(&a[0]) * p;
            let (int, frac) = (v.trunc(), v.fract());
            let r = if frac >= half { int + 1.0 } else { int };
            Value::float(r / p)
        }
        "addf" | "subf" | "mulf" | "divf" | "maxf" | "minf" | "add1f" => {
            let nums: Vec<f64> = a.iter().map(f).collect();
            let first = nums.first().copied().unwrap_or(0.0);
            let rest = nums.iter().skip(1).copied();
            Value::float(match name {
                "addf" => nums.iter().sum(),
                "add1f" => first + 1.0,
                "subf" => rest.fold(first, |x, y| x - y),
                "mulf" => rest.fold(first, |x, y| x * y),
                "divf" => rest.fold(first, |x, y| x / y),
                "maxf" => rest.fold(first, f64::max),
                _ => rest.fold(first, f64::min),
            })
        }
        "int" | "int64" | "atoi" => Value::int(i(&arg(0))),
        "float64" => Value::float(f(&arg(0))),
        "until" | "untilStep" | "seq" => {
            let (start, stop, step) = match (name, n) {
                ("until", 1) => (0, i(&a[0]), if i(&a[0]) < 0 { -1 } else { 1 }),
                ("untilStep", 3) => (i(&a[0]), i(&a[1]), i(&a[2])),
                ("seq", 1) => (1, i(&a[0]) + 1, 1),
                ("seq", 2) => (
                    i(&a[0]),
                    i(&a[1]) + if i(&a[1]) >= i(&a[0]) { 1 } else { -1 },
                    if i(&a[1]) >= i(&a[0]) { 1 } else { -1 },
                ),
                ("seq", 3) => (i(&a[0]), i(&a[2]) + i(&a[1]).signum(), i(&a[1])),
                _ => return Err(format!("wrong number of args for {name}")),
            };
            let mut items = Vec::new();
            if step != 0 {
                let mut x = start;
                while (step > 0 && x < stop) || (step < 0 && x > stop) {
                    st.spend(1).map_err(|e| e.to_string())?;
                    items.push(Json::from(x));
                    x = x.saturating_add(step);
                }
            }
            if name == "seq" {
                Value::String(items.iter().map(|j| j.to_string()).collect::<Vec<_>>().join(" "))
            } else {
                arr(items)
            }
        }
        "randInt" => {
            want(&a, 2, name)?;
            let (lo, hi) = (i(&a[0]), i(&a[1]));
            if hi <= lo {
                return Err("invalid argument to randInt".into());
            }
            let b = random_bytes(8);
            let r = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
            Value::int(lo.wrapping_add((r % (hi.wrapping_sub(lo) as u64)) as i64))
        }

        // lists
        "list" | "tuple" => arr(a.iter().map(Value::to_json).collect()),
        "first" | "last" => {
            let items = list(&arg(0), name)?;
            let item = if name == "first" { items.first() } else { items.last() };
            item.map(|j| from(j.clone())).unwrap_or(Value::Null)
        }
        "rest" | "initial" => {
            let items = list(&arg(0), name)?;
            if items.is_empty() {
                Value::Null
            } else if name == "rest" {
                arr(items[1..].to_vec())
            } else {
                arr(items[..items.len() - 1].to_vec())
            }
        }
        "append" | "push" => {
            want(&a, 2, name)?;
            let mut items = list(&a[0], name)?;
            items.push(a[1].to_json());
            arr(items)
        }
        "prepend" => {
            want(&a, 2, name)?;
            let mut items = list(&a[0], name)?;
            items.insert(0, a[1].to_json());
            arr(items)
        }
        "concat" => {
            let mut items = Vec::new();
            for v in &a {
                items.extend(list(v, name)?);
            }
            arr(items)
        }
        "reverse" => {
            let mut items = list(&arg(0), name)?;
            items.reverse();
            arr(items)
        }
        "uniq" => {
            let mut out: Vec<Json> = Vec::new();
            for item in list(&arg(0), name)? {
                st.spend(1 + out.len() as u64 / 64).map_err(|e| e.to_string())?;
                if !out.contains(&item) {
                    out.push(item);
                }
            }
            arr(out)
        }
        "without" => {
            at_least(&a, 1, name)?;
            let drop: Vec<Json> = a[1..].iter().map(Value::to_json).collect();
            arr(list(&a[0], name)?.into_iter().filter(|j| !drop.contains(j)).collect())
        }
        "has" => {
            want(&a, 2, name)?;
            let needle = a[0].to_json();
            Value::Bool(list(&a[1], name)?.contains(&needle))
        }
        "compact" => arr(list(&arg(0), name)?.into_iter().filter(|j| from(j.clone()).truth()).collect()),

        // dicts
        "dict" => {
            let mut m = Map::new();
            for pair in a.chunks(2) {
                m.insert(s(&pair[0]), pair.get(1).map(Value::to_json).unwrap_or(Json::String(String::new())));
            }
            Value::Json(Json::Object(m).to_string())
        }
        "get" => {
            want(&a, 2, name)?;
            dict(&a[0])?.get(s(&a[1]).as_str()).map(|j| from(j.clone())).unwrap_or(Value::String(String::new()))
        }
        "set" => {
            want(&a, 3, name)?;
            let mut m = dict(&a[0])?;
            m.insert(s(&a[1]), a[2].to_json());
            Value::Json(Json::Object(m).to_string())
        }
        "unset" => {
            want(&a, 2, name)?;
            let mut m = dict(&a[0])?;
            m.shift_remove(s(&a[1]).as_str());
            Value::Json(Json::Object(m).to_string())
        }
        "hasKey" => {
            want(&a, 2, name)?;
            Value::Bool(dict(&a[0])?.contains_key(s(&a[1]).as_str()))
        }
        "pluck" => {
            at_least(&a, 1, name)?;
            let key = s(&a[0]);
            let mut out = Vec::new();
            for d in &a[1..] {
                if let Some(v) = dict(d)?.get(key.as_str()) {
                    out.push(v.clone());
                }
            }
            arr(out)
        }
        "keys" => {
            let mut out = Vec::new();
            for d in &a {
                out.extend(dict(d)?.keys().cloned());
            }
            strs(out)
        }
        "values" => arr(dict(&arg(0))?.values().cloned().collect()),
        "pick" | "omit" => {
            at_least(&a, 1, name)?;
            let names: Vec<String> = a[1..].iter().map(s).collect();
            let keep = name == "pick";
            let m: Map<String, Json> = dict(&a[0])?.into_iter().filter(|(k, _)| names.contains(k) == keep).collect();
            Value::Json(Json::Object(m).to_string())
        }
        "dig" => {
            at_least(&a, 3, name)?;
            let d = dict(&a[n - 1])?;
            let default = a[n - 2].clone();
            let mut cur = Json::Object(d);
            for k in &a[..n - 2] {
                match cur.get(s(k).as_str()) {
                    Some(v) => cur = v.clone(),
                    None => return Ok(default),
                }
            }
            from(cur)
        }
        "merge" => {
            at_least(&a, 1, name)?;
            let mut dst = dict(&a[0])?;
            for src in &a[1..] {
                for (k, v) in dict(src)? {
                    dst.entry(k).or_insert(v);
                }
            }
            Value::Json(Json::Object(dst).to_string())
        }

        // defaults and types
        "default" => {
            at_least(&a, 1, name)?;
            match a.get(1) {
                Some(v) if !empty(v) => v.clone(),
                _ => a[0].clone(),
            }
        }
        "empty" => Value::Bool(empty(&arg(0))),
        "coalesce" => a.iter().find(|v| !empty(v)).cloned().unwrap_or(Value::Null),
        "all" => Value::Bool(a.iter().all(|v| !empty(v))),
        "any" => Value::Bool(a.iter().any(|v| !empty(v))),
        "ternary" => {
            want(&a, 3, name)?;
            if a[2].truth() {
                a[0].clone()
            } else {
                a[1].clone()
            }
        }
        "toJson" | "toRawJson" | "toPrettyJson" => {
            Value::String(json_text(&arg(0), name == "toPrettyJson", name != "toRawJson", st.max_output)?)
        }
        "fromJson" => match serde_json::from_slice::<Json>(s(&arg(0)).as_bytes()) {
            Ok(j) => from(j),
            Err(_) => Value::Null,
        },
        "typeOf" => Value::String(arg(0).type_name().into()),
        "kindOf" => Value::String(
            match arg(0) {
                v if v.is_array() => "slice",
                v if v.is_object() => "map",
                Value::Time(_) => "struct",
                v => v.type_name(),
            }
            .into(),
        ),
        "typeIs" => {
            want(&a, 2, name)?;
            Value::Bool(s(&a[0]) == a[1].type_name())
        }
        "deepEqual" => {
            want(&a, 2, name)?;
            Value::Bool(a[0].to_json() == a[1].to_json())
        }

        // encoding
        "b64enc" => Value::String(crate::b64::STANDARD.encode(s(&arg(0)))),
        "b64dec" => Value::String(match crate::b64::STANDARD.decode(s(&arg(0))) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => e.to_string(),
        }),
        "b32enc" => Value::String(base32_encode(s(&arg(0)).as_bytes())),
        "b32dec" => Value::String(match base32_decode(&s(&arg(0))) {
            Some(b) => String::from_utf8_lossy(&b).into_owned(),
            None => "illegal base32 data".into(),
        }),
        "uuidv4" => {
            let mut b = random_bytes(16);
            b[6] = (b[6] & 0x0f) | 0x40;
            b[8] = (b[8] & 0x3f) | 0x80;
            let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
            Value::String(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
        }
        "sha256sum" => {
            use sha2::Digest;
            let d = sha2::Sha256::digest(s(&arg(0)).as_bytes());
            Value::String(d.iter().map(|x| format!("{x:02x}")).collect())
        }
        "adler32sum" => {
            let (mut x, mut y) = (1u32, 0u32);
            for b in s(&arg(0)).bytes() {
                x = (x + b as u32) % 65521;
                y = (y + x) % 65521;
            }
            Value::String(((y << 16) | x).to_string())
        }

        // dates
        "now" => Value::Time(st.env.now.unwrap_or_else(time::now)),
        "date" | "htmlDate" | "dateInZone" | "date_in_zone" | "htmlDateInZone" => {
            let (layout, date, zone) = match name {
                "date" => (s(&arg(0)), arg(1), "Local".to_string()),
                "htmlDate" => ("2006-01-02".to_string(), arg(0), "Local".to_string()),
                "htmlDateInZone" => ("2006-01-02".to_string(), arg(0), s(&arg(1))),
                _ => (s(&arg(0)), arg(1), s(&arg(2))),
            };
            let t = as_time(st, &date);
            Value::String(time::format(&time::in_zone(t, &zone), &layout))
        }
        "unixEpoch" => Value::String(as_time(st, &arg(0)).secs.to_string()),
        "duration" => Value::String(time::duration_string(i128::from(i(&arg(0))) * 1_000_000_000)),
        "dateModify" | "date_modify" => {
            want(&a, 2, name)?;
            let t = as_time(st, &a[1]);
            match time::parse_duration(&s(&a[0])) {
                Some(d) => Value::Time(time::add(t, d)),
                None => Value::Time(t),
            }
        }
        other => return Err(format!("function {other:?} not implemented")),
    })
}

/// sprig's date argument: a time, or Unix seconds; anything else is now.
fn as_time(st: &State, v: &Value) -> Time {
    match v {
        Value::Time(t) => *t,
        // Clamped to about ±30,000 years, so date arithmetic never overflows.
        Value::Number(_) => {
            Time { secs: i(v).clamp(-1_000_000_000_000, 1_000_000_000_000), nanos: 0, offset: 0, zone: "UTC" }
        }
        _ => st.env.now.unwrap_or_else(time::now),
    }
}

/// Go's `strings.Title` (and sprig's `untitle`): the first letter of each word changed.
fn map_words(t: &str, upper: bool) -> String {
    let mut out = String::with_capacity(t.len());
    let mut start = true;
    for c in t.chars() {
        if start && c.is_alphanumeric() {
            if upper {
                out.extend(crate::case::upper(c));
            } else {
                out.extend(crate::case::lower(c));
            }
        } else {
            out.push(c);
        }
        start = !(c.is_alphanumeric() || c == '_' || c == '\'');
    }
    out
}

/// Go's `strings.SplitN` (n < 0: all).
fn go_split(text: &str, sep: &str, n: i64) -> Vec<String> {
    if n == 0 {
        return Vec::new();
    }
    if sep.is_empty() {
        let chars: Vec<String> = text.chars().map(|c| c.to_string()).collect();
        if n > 0 && chars.len() > n as usize {
            let head: Vec<String> = chars[..n as usize - 1].to_vec();
            let tail: String = chars[n as usize - 1..].concat();
            return head.into_iter().chain(std::iter::once(tail)).collect();
        }
        return chars;
    }
    if n < 0 {
        text.split(sep).map(str::to_string).collect()
    } else {
        text.splitn(n as usize, sep).map(str::to_string).collect()
    }
}

/// Go's `%q` of a string (`strconv.Quote`).
pub fn go_quote(t: &str) -> String {
    let mut out = String::from("\"");
    for c in t.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn html_escape(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&#34;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn js_escape(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for c in t.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Go's `url.QueryEscape`: spaces as `+`.
pub fn query_escape(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    for b in t.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

const B32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn base32_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let bits = u64::from_be_bytes([0, 0, 0, buf[0], buf[1], buf[2], buf[3], buf[4]]);
        let chars = match chunk.len() {
            1 => 2,
            2 => 4,
            3 => 5,
            4 => 7,
            _ => 8,
        };
        for k in 0..8 {
            if k < chars {
                out.push(B32[((bits >> (35 - 5 * k)) & 31) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let t = text.trim_end_matches('=');
    let mut bits = 0u64;
    let mut n = 0;
    let mut out = Vec::new();
    for c in t.bytes() {
        let v = B32.iter().position(|x| *x == c)? as u64;
        bits = (bits << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%s %v %d %f %e %g %q %t %x %X %o %b %c %%`, with flags,
/// width and precision. Arguments are converted as Higress converts them.
pub fn printf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut it = format.chars().peekable();
    let mut k = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut flags = String::new();
        while let Some(&f) = it.peek() {
            if "-+# 0".contains(f) {
                flags.push(f);
                it.next();
            } else {
                break;
            }
        }
        let mut width = String::new();
        while let Some(&d) = it.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            it.next();
        }
        let mut prec: Option<usize> = None;
        if it.peek() == Some(&'.') {
            it.next();
            let mut p = String::new();
            while let Some(&d) = it.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                it.next();
            }
            prec = Some(p.parse().unwrap_or(0));
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(v) = args.get(k) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        k += 1;
        let int = v.as_int();
        let body = match verb {
            'v' | 's' => match v {
                Value::Missing | Value::Null if verb == 's' => "%!s(<nil>)".to_string(),
                Value::Missing | Value::Null => "<nil>".to_string(),
                Value::Number(_) if verb == 's' => match int {
                    Some(x) => format!("%!s(int={x})"),
                    None => format!("%!s(float64={})", go_float(v.num())),
                },
                Value::Bool(b) if verb == 's' => format!("%!s(bool={b})"),
                _ => {
                    let t = s(v);
                    match prec {
                        Some(p) => t.chars().take(p).collect(),
                        None => t,
                    }
                }
            },
            'd' => match (v, int) {
                (Value::Number(_), Some(x)) => {
                    if flags.contains('+') && x >= 0 {
                        format!("+{x}")
                    } else {
                        x.to_string()
                    }
                }
                _ => format!("%!d({}={})", v.type_name(), s(v)),
            },
            'f' | 'F' | 'e' | 'g' => match v {
                // Higress passes an integral number as a Go int, which `%f` refuses (`%!f(int=3)`); the
                // author of `printf "%.2f" .price` meant the number.
                Value::Number(_) => {
                    let x = v.num();
                    let p = prec.unwrap_or(6);
                    let t = match verb {
                        'e' => {
                            let t = format!("{x:.p$e}");
                            match t.split_once('e') {
                                Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e:0>2}"),
                                Some((m, e)) => format!("{m}e-{:0>2}", &e[1..]),
                                None => t,
                            }
                        }
                        'g' => match prec {
                            Some(_) => format!("{x:.p$}"),
                            None => go_float(x),
                        },
                        _ => format!("{x:.p$}"),
                    };
                    if flags.contains('+') && x >= 0.0 {
                        format!("+{t}")
                    } else {
                        t
                    }
                }
                _ => format!("%!{verb}({}={})", v.type_name(), s(v)),
            },
            'q' => match (v, int) {
                (Value::Number(_), Some(x)) => format!("'{}'", char::from_u32(x as u32).unwrap_or('\u{FFFD}')),
                _ => go_quote(&s(v)),
            },
            't' => match v {
                Value::Bool(b) => b.to_string(),
                _ => format!("%!t({}={})", v.type_name(), s(v)),
            },
            'x' | 'X' | 'o' | 'b' => match (v, int) {
                (Value::Number(_), Some(x)) => {
                    let t = match verb {
                        'x' => format!("{x:x}"),
                        'X' => format!("{x:X}"),
                        'o' => format!("{x:o}"),
                        _ => format!("{x:b}"),
                    };
                    t
                }
                (Value::String(t), _) if verb == 'x' || verb == 'X' => {
                    let h: String = t.bytes().map(|b| format!("{b:02x}")).collect();
                    if verb == 'X' {
                        h.to_ascii_uppercase()
                    } else {
                        h
                    }
                }
                _ => format!("%!{verb}({}={})", v.type_name(), s(v)),
            },
            'c' => match int {
                Some(x) => char::from_u32(x as u32).unwrap_or('\u{FFFD}').to_string(),
                None => format!("%!c({}={})", v.type_name(), s(v)),
            },
            other => format!("%!{other}({}={})", v.type_name(), s(v)),
        };
        let w: usize = width.parse().unwrap_or(0).min(4096);
        let len = body.chars().count();
        if len < w {
            let pad = w - len;
            if flags.contains('-') {
                out.push_str(&body);
                out.push_str(&" ".repeat(pad));
            } else if flags.contains('0') && !matches!(verb, 's' | 'q' | 'v' | 'c' | 't') {
                let (sign, digits) = match body.strip_prefix(['-', '+']) {
                    Some(d) => (&body[..1], d),
                    None => ("", body.as_str()),
                };
                out.push_str(sign);
                out.push_str(&"0".repeat(pad));
                out.push_str(digits);
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(&body);
            }
        } else {
            out.push_str(&body);
        }
    }
    if k < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[k..].iter().map(|v| format!("{}={}", v.type_name(), s(v))).collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}
