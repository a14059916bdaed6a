//! The CLI's YAML output: block style, as readable as serde_yaml's, but every scalar that a YAML 1.1
//! reader (PyYAML, Go's yaml.v2, Envoy's older tooling) would read as something else is quoted: `on`, `off`,
//! `yes`, `no`, `y`, `n`, `~`, `1:20`, `0777`, `1_000`, `2001-12-14`, `=`... A string is written plain only
//! when it cannot be misread by either YAML version.

use serde_json::{Number, Value};
use std::fmt::Write;

/// The document as YAML, ending with a newline.
pub fn to_string(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => mapping(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => sequence(&mut out, a, 0),
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    out
}

fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn mapping(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    for (k, v) in m {
        pad(out, indent);
        out.push_str(&scalar_string(k, true));
        out.push(':');
        value(out, v, indent, false);
    }
}

fn sequence(out: &mut String, a: &[Value], indent: usize) {
    for v in a {
        pad(out, indent);
        out.push('-');
        value(out, v, indent, true);
    }
}

/// What follows `key:` or `-`: a nested block on the next lines, or a scalar on this one.
fn value(out: &mut String, v: &Value, indent: usize, in_sequence: bool) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            if in_sequence {
                // `- key: value` with the mapping's other keys aligned under the first.
                out.push(' ');
                let mut first = String::new();
                mapping(&mut first, m, indent + 2);
                out.push_str(first.trim_start_matches(' '));
            } else {
                out.push('\n');
                mapping(out, m, indent + 2);
            }
        }
        // A sequence in a mapping sits at the key's indentation, as serde_yaml writes it.
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            sequence(out, a, if in_sequence { indent + 2 } else { indent });
        }
        Value::String(s) if block_literal(s) => {
            let chomp = if s.ends_with("\n\n") {
                "+"
            } else if s.ends_with('\n') {
                ""
            } else {
                "-"
            };
            let _ = writeln!(out, " |{chomp}");
            let body = s.strip_suffix('\n').unwrap_or(s);
            for line in body.split('\n') {
                if !line.is_empty() {
                    pad(out, indent + 2);
                    out.push_str(line);
                }
                out.push('\n');
            }
        }
        other => {
            out.push(' ');
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
}

fn inline(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => scalar_string(s, false),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// Floats always carry a dot and a signed exponent: YAML 1.1 reads `1e29` as a string.
fn number(n: &Number) -> String {
    let text = n.to_string();
    if n.is_f64() {
        if let Some((mantissa, exp)) = text.split_once(['e', 'E']) {
            let mantissa = if mantissa.contains('.') { mantissa.to_string() } else { format!("{mantissa}.0") };
            let exp = if exp.starts_with(['-', '+']) { exp.to_string() } else { format!("+{exp}") };
            return format!("{mantissa}e{exp}");
        }
        if !text.contains('.') {
            return format!("{text}.0");
        }
    }
    text
}

/// Multi-line text as a `|` block: readable descriptions. Only text a block keeps exactly.
fn block_literal(s: &str) -> bool {
    s.contains('\n')
        && !s.starts_with([' ', '\n', '\t'])
        && !s.trim_end_matches('\n').is_empty()
        && s.chars().all(|c| c == '\n' || c == '\t' || printable(c))
        && !s.split('\n').any(|l| l.trim().is_empty() && !l.is_empty())
}

/// Characters YAML lets a document hold as they are.
fn printable(c: char) -> bool {
    matches!(c, '\u{20}'..='\u{7E}' | '\u{85}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
        && c != '\u{FEFF}'
}

/// Words YAML 1.1 (and 1.2) give another type, whatever their case.
const RESERVED: [&str; 12] = ["y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "=", "<<"];

/// Whether `s` may be written without quotes: letters, digits and a few marks, not starting like a number,
/// a date, an indicator or a reserved word.
fn plain_ok(s: &str) -> bool {
    let Some(first) = s.chars().next() else { return false };
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s)) {
        return false;
    }
    // Anything starting with a digit, a sign or a dot may be a number, a date, a time or base 60 in 1.1.
    if first.is_ascii_digit() || "+-.".contains(first) {
        return false;
    }
    // `.inf`, `.nan` and the like start with a dot (above); `NaN`/`Infinity` are strings in both versions.
    s.chars().all(|c| c.is_alphanumeric() || "_-./()@$%^&*+=?,;<>[]{}!'\"`|\\#: ".contains(c))
        && !s.contains(": ")
        && !s.contains(" #")
        && !s.starts_with(' ')
        && !s.ends_with([' ', ':'])
        && !"[]{}!'\"`|&*@%#,?<>=\\:".contains(first)
}

/// A string or key: plain when safe, else double-quoted (JSON's escapes are YAML's).
fn scalar_string(s: &str, _key: bool) -> String {
    if plain_ok(s) {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if printable(c) => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04X}");
                }
            }
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What YAML 1.1 readers turn into booleans, numbers, dates or nulls stays a string.
    #[test]
    fn yaml_11_lookalikes_are_quoted() {
        for s in [
            "on",
            "off",
            "yes",
            "no",
            "y",
            "n",
            "Y",
            "N",
            "ON",
            "Off",
            "YES",
            "No",
            "~",
            "null",
            "Null",
            "true",
            "False",
            "1:20",
            "12:30:00",
            "0777",
            "1_000",
            ".inf",
            ".NaN",
            "0x1F",
            "0b101",
            "0o17",
            "2001-12-14",
            "=",
            "<<",
            "1e3",
            "+1",
            ".5",
            "-",
            "-1.5e+3",
            "010",
            "",
            " lead",
            "trail ",
            "#x",
            "a: b",
            "a #b",
            "!tag",
            "&anchor",
            "*alias",
            "@at",
            "%dir",
            "|",
            ">",
            "[x]",
            "{x}",
            "'q'",
            "\"q\"",
            "key:",
        ] {
            let out = to_string(&json!({ "k": s }));
            assert!(out.starts_with("k: \""), "{s:?} written as {out:?}");
            let back: Value = serde_yaml_ng::from_str(&out).unwrap();
            assert_eq!(back["k"], json!(s), "{out}");
        }
        for s in ["listPets", "GET /pets", "application/json", "Deprecated. Use x", "NaN", "a-b_c.d", "on_hold"] {
            assert_eq!(to_string(&json!({ "k": s })), format!("k: {s}\n"), "{s:?} may stay plain");
        }
        assert_eq!(to_string(&json!({"y": 1, "on": 2})), "\"y\": 1\n\"on\": 2\n", "keys too");
    }

    #[test]
    fn numbers_read_back_as_numbers() {
        let out = to_string(&json!({"a": 1e29, "b": 2.5, "c": 7, "d": -3, "e": 1.5e-7}));
        assert_eq!(out, "a: 1.0e+29\nb: 2.5\nc: 7\nd: -3\ne: 1.5e-7\n");
    }

    #[test]
    fn layout_round_trips() {
        let v = json!({
            "servers": [{"name": "s", "tools": [{"name": "t", "args": [{"name": "a", "enum": ["on", "off"]}],
                         "description": "Line one.\n\nLine three.\n", "other": "no newline\nat end", "empty": {}, "none": []}]}],
            "nested": [[1, 2], [], [{"a": null}]], "tab": "a\tb", "ctl": "a\u{7}b", "multi": "x\n  indented\n"
        });
        let out = to_string(&v);
        let back: Value = serde_yaml_ng::from_str(&out).unwrap();
        assert_eq!(back, v, "{out}");
        assert!(out.contains("description: |\n"), "{out}");
        assert!(out.contains("- name: s\n  tools:\n  - name: t\n"), "{out}");
    }
}
