//! The official JSON Schema Test Suite (draft 2020-12, optional cases included) against the gateway's
//! validator (`schema::Validator::for_answer`, the spec's reading of `integer`). With the
//! `jsonschema-opinion` feature (`make unit` runs both), the `jsonschema` crate runs natively on the same
//! cases as a second opinion, and the cases where its verdict and ours differ are listed.
//!
//! The suite is fetched by `e2e/setup.sh` (`e2e/json_schema_suite.py`) into
//! `e2e/.cache/json-schema-test-suite/`, or read from `JSON_SCHEMA_SUITE`; without it this test fails. Each
//! file's passing cases are compared with `tests/json_schema_suite.baseline.json`: fewer than there fails
//! (a regression), more asks for the baseline to be raised (`JSON_SCHEMA_SUITE_WRITE_BASELINE=1` rewrites it).
//! A schema the validator refuses at load counts as `refused`, not failed, only when the refusal is one the
//! README documents (its message says "is not supported"); any other refusal fails its cases.
//! `optional/format/` is left out: formats are annotations in 2020-12 unless a validator opts into asserting
//! them, and the gateway does not. The table is printed (`cargo test --test json_schema_suite -- --nocapture`)
//! and written to `target/json-schema-suite.txt`.

use mcp_gateway::schema::Validator;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What the README documents as refused says this.
const DOCUMENTED_REFUSAL: &str = "is not supported";

#[derive(Default)]
struct Tally {
    cases: usize,
    pass: usize,
    fail: usize,
    refused: usize,
    /// The `jsonschema` crate's passes, and the cases where its verdict and ours differ.
    crate_pass: usize,
    disagree: usize,
}

fn suite_dir() -> PathBuf {
    match std::env::var_os("JSON_SCHEMA_SUITE") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/.cache/json-schema-test-suite"),
    }
}

/// The draft 2020-12 files, as `name` (top level) or `optional/name`, in order.
fn files(draft: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for (prefix, dir) in [("", draft.to_path_buf()), ("optional/", draft.join("optional"))] {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        entries.sort();
        for p in entries {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            out.push((format!("{prefix}{stem}"), p));
        }
    }
    out
}

/// The crate's verdict: `None` when it cannot compile the schema (remote references: no resolver here).
#[cfg(feature = "jsonschema-opinion")]
fn crate_verdict(schema: &Value, instance: &Value) -> Option<bool> {
    std::panic::catch_unwind(|| jsonschema::draft202012::new(schema).ok().map(|v| v.is_valid(instance))).ok().flatten()
}

#[cfg(not(feature = "jsonschema-opinion"))]
fn crate_verdict(_: &Value, _: &Value) -> Option<bool> {
    None
}

#[test]
fn json_schema_test_suite() {
    let root = suite_dir();
    let draft = root.join("tests/draft2020-12");
    assert!(
        draft.is_dir(),
        "the JSON Schema Test Suite is missing at {}: run e2e/setup.sh (it fetches it with e2e/json_schema_suite.py)",
        draft.display()
    );
    let mut tallies: BTreeMap<String, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut disagreements = Vec::new();
    let mut refusals = BTreeMap::<String, usize>::new();
    for (name, path) in files(&draft) {
        let groups: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let tally = tallies.entry(name.clone()).or_default();
        for group in &groups {
            let schema = &group["schema"];
            let ours = Validator::for_answer(schema.clone());
            if let Err(e) = &ours {
                let key = if e.contains(DOCUMENTED_REFUSAL) { e.clone() } else { format!("UNDOCUMENTED: {e}") };
                *refusals.entry(key).or_default() += 1;
            }
            for case in group["tests"].as_array().unwrap() {
                let (data, expected) = (&case["data"], case["valid"].as_bool().unwrap());
                let what = format!("{name}: {} / {}", group["description"], case["description"]);
                tally.cases += 1;
                let verdict = match &ours {
                    Ok(v) => Some(v.validate(data).is_empty()),
                    Err(e) if e.contains(DOCUMENTED_REFUSAL) => {
                        tally.refused += 1;
                        None
                    }
                    Err(e) => {
                        tally.fail += 1;
                        failures.push(format!("{what}: refused: {e}"));
                        None
                    }
                };
                match verdict {
                    Some(got) if got == expected => tally.pass += 1,
                    Some(got) => {
                        tally.fail += 1;
                        failures.push(format!("{what}: valid={got}, expected {expected}"));
                    }
                    None => {}
                }
                let theirs = crate_verdict(schema, data);
                if theirs == Some(expected) {
                    tally.crate_pass += 1;
                }
                if let (Some(ours), Some(theirs)) = (verdict, theirs) {
                    if ours != theirs {
                        tally.disagree += 1;
                        disagreements
                            .push(format!("{what}: ours valid={ours}, jsonschema valid={theirs}, suite {expected}"));
                    }
                }
            }
        }
    }

    let mut table =
        String::from("| file | cases | pass | fail | refused | pass rate | jsonschema crate | disagree |\n");
    table += "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
    let (mut cases, mut pass, mut refused, mut crate_pass) = (0, 0, 0, 0);
    for (name, t) in &tallies {
        table += &format!(
            "| {name} | {} | {} | {} | {} | {:.0}% | {} | {} |\n",
            t.cases,
            t.pass,
            t.fail,
            t.refused,
            100.0 * t.pass as f64 / t.cases.max(1) as f64,
            t.crate_pass,
            t.disagree
        );
        (cases, pass, refused, crate_pass) =
            (cases + t.cases, pass + t.pass, refused + t.refused, crate_pass + t.crate_pass);
    }
    table += &format!(
        "| all | {cases} | {pass} | {} | {refused} | {:.1}% | {crate_pass} | {} |\n",
        cases - pass - refused,
        100.0 * pass as f64 / cases.max(1) as f64,
        disagreements.len()
    );
    if !cfg!(feature = "jsonschema-opinion") {
        table += "\n(jsonschema crate not run: `cargo test --features jsonschema-opinion --test json_schema_suite`)\n";
    }
    let mut report = format!(
        "JSON Schema Test Suite ({}), draft 2020-12\n\n{table}\n",
        std::fs::read_to_string(root.join("SOURCE")).unwrap_or_default().trim()
    );
    report += "Refused at load (schemas):\n";
    for (e, n) in &refusals {
        report += &format!("  {n} x {e}\n");
    }
    report += "\nFailures:\n";
    for f in &failures {
        report += &format!("  {f}\n");
    }
    report += "\nDisagreements with the jsonschema crate:\n";
    for d in &disagreements {
        report += &format!("  {d}\n");
    }
    println!("{report}");
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::create_dir_all(&target);
    let _ = std::fs::write(target.join("json-schema-suite.txt"), &report);

    let baseline_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/json_schema_suite.baseline.json");
    if std::env::var_os("JSON_SCHEMA_SUITE_WRITE_BASELINE").is_some() {
        let measured: Map<String, Value> = tallies.iter().map(|(k, t)| (k.clone(), json!(t.pass))).collect();
        std::fs::write(&baseline_path, serde_json::to_string_pretty(&Value::Object(measured)).unwrap() + "\n").unwrap();
        return;
    }
    let baseline: Map<String, Value> = serde_json::from_str(
        &std::fs::read_to_string(&baseline_path).unwrap_or_else(|e| panic!("{}: {e}", baseline_path.display())),
    )
    .unwrap();
    let mut regressions = Vec::new();
    for (name, t) in &tallies {
        match baseline.get(name).and_then(Value::as_u64) {
            None => regressions.push(format!("{name}: not in the baseline ({} passing)", t.pass)),
            Some(b) if (t.pass as u64) < b => regressions.push(format!("{name}: {} passing, baseline {b}", t.pass)),
            Some(b) if (t.pass as u64) > b => println!("{name}: {} passing, above the baseline {b}: raise it", t.pass),
            Some(_) => {}
        }
    }
    for name in baseline.keys().filter(|k| !tallies.contains_key(*k)) {
        regressions.push(format!("{name}: in the baseline but not in the suite"));
    }
    assert!(
        regressions.is_empty(),
        "below the baseline (tests/json_schema_suite.baseline.json):\n{}",
        regressions.join("\n")
    );
}
