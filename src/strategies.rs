//! Input generators shared by the property tests (`cargo test` only).
//!
//! Each property test next to the code it guards draws its inputs from here, so that all of them see the same
//! hostile material: strings that mean something to URLs, headers, templates and JSON, and JSON values biased
//! towards the shapes the gateway reads.

use proptest::prelude::*;
use serde_json::{Map, Value};

/// Fragments that mean something somewhere in the gateway: URL delimiters and dot segments (plain and
/// encoded), header breakers, template syntax, path placeholders, non-ASCII and invisible characters.
const PIECES: &[&str] = &[
    "..",
    ".",
    "%2e",
    "%2E%2e",
    "/",
    "//",
    "\\",
    "?",
    "#",
    "&",
    "=",
    ";",
    ",",
    "%",
    "%zz",
    "%00",
    "+",
    " ",
    "\t",
    "\r\n",
    "\n",
    "\r",
    "\0",
    "\u{7f}",
    "\u{85}",
    "\u{2028}",
    "é",
    "\u{202e}",
    "\u{feff}",
    "💥",
    "{{ 7*7 }}",
    "{%",
    "{#",
    "{p}",
    "{id}",
    "{{",
    "}}",
    "@",
    ":",
    "http://evil.example/",
    "//evil.example",
    "<",
    ">",
    "\"",
    "'",
    "`",
    "|",
    "^",
    "~",
    "[",
    "]",
    "null",
    "1",
    "-1",
    "1e999",
    "true",
];

/// A string made of hostile fragments and arbitrary characters.
pub fn hostile_string() -> impl Strategy<Value = String> + Clone {
    let piece = prop_oneof![
        3 => prop::sample::select(PIECES).prop_map(String::from),
        1 => ".{0,6}",
        1 => "[a-z0-9]{0,6}",
    ];
    prop::collection::vec(piece, 0..5).prop_map(|p| p.concat())
}

/// Numbers at the edges of what JSON, `i64`, `u64` and `f64` hold, as they arrive from a client.
pub fn json_number() -> impl Strategy<Value = Value> + Clone {
    let text = prop_oneof![
        Just("0"),
        Just("-0"),
        Just("1.0"),
        Just("1e2"),
        Just("-5e0"),
        Just("0.5"),
        Just("9007199254740992"),
        Just("9007199254740993"),
        Just("9007199254740993.0"),
        Just("18446744073709551615"),
        Just("18446744073709551616"),
        Just("-9223372036854775808"),
        Just("-9223372036854775809"),
        Just("1e19"),
        Just("1e300"),
        Just("-1e-300"),
        Just("123456789012345678901234567890"),
    ];
    prop_oneof![
        text.prop_map(|t| serde_json::from_str::<Value>(t).unwrap_or(Value::Null)),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
    ]
}

/// Arbitrary JSON whose object keys come from `keys` (so that the code under test finds the fields it looks
/// for) and whose strings are hostile.
pub fn json_value(keys: &'static [&'static str]) -> impl Strategy<Value = Value> + Clone {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        json_number(),
        hostile_string().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 40, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(keys).prop_map(String::from), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// A property test's configuration: `default` cases, keeping `cargo test` quick on a small machine, or
/// `PROPTEST_CASES` when set, for longer runs (`PROPTEST_CASES=100000 cargo test --lib properties`).
pub fn cases(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default);
    ProptestConfig { cases, ..ProptestConfig::default() }
}
