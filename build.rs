//! Generates `src/case.rs`'s tables from the building toolchain's own `char::to_lowercase`/`to_uppercase`
//! and `str::to_lowercase`. The build script runs on the host with the same standard library the module is
//! built against, so the tables follow core's Unicode version exactly; nothing is fetched or kept in the repo.
//! Core's own case tables (about 24 KB of wasm) store every mapped code point; these store runs.

use std::fmt::Write as _;

const CHARS: std::ops::RangeInclusive<u32> = 0..=0x10FFFF;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let mut out = String::new();
    let (runs, multi) = table(|c| c.to_lowercase().collect());
    emit(&mut out, "LOWER", &runs, &multi);
    let (runs, multi) = table(|c| c.to_uppercase().collect());
    emit(&mut out, "UPPER", &runs, &multi);
    sigma_context(&mut out);
    let path = std::path::Path::new(&std::env::var("OUT_DIR").unwrap()).join("case_tables.rs");
    std::fs::write(path, out).unwrap();
}

fn chars() -> impl Iterator<Item = char> {
    CHARS.filter_map(char::from_u32)
}

/// Single-char mappings as runs `(start, count, stride, delta)`: `start + k*stride` maps to itself plus
/// `delta` for `k < count`. A run only spans code points it maps or that map to themselves, so a lookup
/// needs only the last run starting at or before the code point. Multi-char mappings are listed apart.
type Runs = Vec<(u32, u32, u32, i64)>;

fn table(map: impl Fn(char) -> Vec<char>) -> (Runs, Vec<[u16; 4]>) {
    let mut runs: Runs = Vec::new();
    let mut multi = Vec::new();
    for c in chars() {
        let m = map(c);
        let cp = c as u32;
        if m.len() > 1 {
            assert!(m.len() <= 3 && cp <= 0xFFFF && m.iter().all(|&x| (x as u32) <= 0xFFFF));
            let mut row = [0u16; 4];
            row[0] = cp as u16;
            for (slot, x) in row[1..].iter_mut().zip(&m) {
                *slot = *x as u16;
            }
            multi.push(row);
            continue;
        }
        if m[0] == c {
            continue;
        }
        let delta = m[0] as i64 - cp as i64;
        if let Some(run) = runs.last_mut() {
            let last = run.0 + (run.1 - 1) * run.2;
            let gap = cp - last;
            let fits = if run.1 == 1 { gap <= 2 } else { gap == run.2 };
            if run.3 == delta && fits && run.1 < 1024 {
                run.2 = gap;
                run.1 += 1;
                continue;
            }
        }
        runs.push((cp, 1, 1, delta));
    }
    (runs, multi)
}

fn emit(out: &mut String, name: &str, runs: &Runs, multi: &[[u16; 4]]) {
    // start (21 bits) | count - 1 (10 bits) << 21 | (stride == 2) << 31 | delta << 32
    writeln!(out, "static {name}_RUNS: [u64; {}] = [", runs.len()).unwrap();
    for &(start, count, stride, delta) in runs {
        assert!(start < 1 << 21 && (1..=1024).contains(&count) && (1..=2).contains(&stride));
        let word = start as u64
            | ((count - 1) as u64) << 21
            | ((stride - 1) as u64) << 31
            | (delta as i32 as u32 as u64) << 32;
        write!(out, "{word:#x},").unwrap();
    }
    writeln!(out, "];").unwrap();
    writeln!(out, "static {name}_MULTI: [[u16; 4]; {}] = {multi:?};", multi.len()).unwrap();
}

/// What `str::to_lowercase` needs to choose between σ and ς: whether a code point is Case_Ignorable and,
/// if not, whether it is Cased. Core keeps both tables private, so they are read off its behaviour:
/// `"cΣ"` ends in ς exactly when c is cased and not case-ignorable, and `"AcΣ"` when c is either.
/// Cased is `is_lowercase() || is_uppercase()` (tables the module keeps anyway) plus the titlecase letters
/// listed here; the build fails if that ever stops holding.
fn sigma_context(out: &mut String) {
    let mut boundaries = Vec::new();
    let mut titlecase = Vec::new();
    let mut previous = false;
    let mut probe = String::new();
    let mut final_sigma = |prefix: &str, c: char| {
        probe.clear();
        probe.push_str(prefix);
        probe.push(c);
        probe.push('Σ');
        probe.to_lowercase().ends_with('ς')
    };
    for c in chars() {
        let cased_alone = final_sigma("", c);
        let ignorable = !cased_alone && final_sigma("A", c);
        if ignorable != previous {
            boundaries.push(c as u32);
            previous = ignorable;
        }
        if !ignorable && cased_alone != (c.is_lowercase() || c.is_uppercase()) {
            assert!(cased_alone && c as u32 <= 0xFFFF, "{c:?}: Cased is not Lowercase | Uppercase | listed");
            titlecase.push(c as u32 as u16);
        }
    }
    // Case_Ignorable as its boundaries (in at even positions, out at odd ones): byte deltas, with a
    // checkpoint `code point | index << 21` wherever a delta exceeds a byte and every 32 boundaries, so a
    // lookup is a binary search and a short scan. A checkpoint's own delta is 0.
    let mut deltas = Vec::new();
    let mut checkpoints = Vec::new();
    let mut since = 0;
    for (i, &b) in boundaries.iter().enumerate() {
        let gap = if i == 0 { u32::MAX } else { b - boundaries[i - 1] };
        if gap > 255 || since == 32 {
            assert!(i < 1 << 11);
            checkpoints.push(b | (i as u32) << 21);
            deltas.push(0u8);
            since = 1;
        } else {
            deltas.push(gap as u8);
            since += 1;
        }
    }
    writeln!(out, "static IGNORABLE_CHECKPOINTS: [u32; {}] = {checkpoints:?};", checkpoints.len()).unwrap();
    writeln!(out, "static IGNORABLE_DELTAS: [u8; {}] = {deltas:?};", deltas.len()).unwrap();
    writeln!(out, "static TITLECASE: [u16; {}] = {titlecase:?};", titlecase.len()).unwrap();
}
