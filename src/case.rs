//! Unicode case mapping, the same as the standard library's, without core's tables.
//!
//! `str::to_lowercase` and friends link core's conversion tables, which list every mapped code point
//! (about 24 KB of wasm). `build.rs` reads the same mappings off the building toolchain's standard library
//! and packs them as runs of code points with a common offset, so these functions give std's results for
//! every `char` from a few KB. Tests compare them with std's for every code point.

include!(concat!(env!("OUT_DIR"), "/case_tables.rs"));

/// The one to three chars a char maps to.
#[derive(Clone, Debug)]
pub struct Mapped {
    chars: [char; 3],
    len: u8,
    at: u8,
}

impl Iterator for Mapped {
    type Item = char;
    fn next(&mut self) -> Option<char> {
        let c = *self.chars.get(usize::from(self.at)).filter(|_| self.at < self.len)?;
        self.at += 1;
        Some(c)
    }
}

/// What `char::to_lowercase` gives.
pub fn lower(c: char) -> Mapped {
    if c.is_ascii() {
        return Mapped::one(c.to_ascii_lowercase());
    }
    map(c, &LOWER_RUNS, &LOWER_MULTI)
}

/// What `char::to_uppercase` gives.
pub fn upper(c: char) -> Mapped {
    if c.is_ascii() {
        return Mapped::one(c.to_ascii_uppercase());
    }
    map(c, &UPPER_RUNS, &UPPER_MULTI)
}

fn map(c: char, runs: &[u64], multi: &[[u16; 4]]) -> Mapped {
    let one = Mapped::one;
    let cp = c as u32;
    if let Ok(i) = multi.binary_search_by_key(&cp, |row| u32::from(row[0])) {
        let row = &multi[i];
        let mut chars = ['\0'; 3];
        let mut len = 0;
        for &unit in &row[1..] {
            if let Some(x) = char::from_u32(u32::from(unit)).filter(|_| unit != 0) {
                chars[len] = x;
                len += 1;
            }
        }
        return Mapped { chars, len: len as u8, at: 0 };
    }
    let i = runs.partition_point(|&run| (run as u32 & 0x1F_FFFF) <= cp);
    let Some(&run) = i.checked_sub(1).and_then(|i| runs.get(i)) else { return one(c) };
    let offset = cp - (run as u32 & 0x1F_FFFF);
    let stride = 1 + (run >> 31 & 1) as u32;
    let count = 1 + (run >> 21 & 0x3FF) as u32;
    if offset % stride != 0 || offset / stride >= count {
        return one(c);
    }
    let delta = (run >> 32) as u32;
    one(char::from_u32(cp.wrapping_add(delta)).unwrap_or(c))
}

impl Mapped {
    fn one(c: char) -> Mapped {
        Mapped { chars: [c, '\0', '\0'], len: 1, at: 0 }
    }
}

/// What `str::to_lowercase` gives, final sigma included.
pub fn to_lowercase(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_lowercase(&mut out, s, 0);
    out
}

/// What `str::to_uppercase` gives.
pub fn to_uppercase(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        out.extend(upper(c));
    }
    out
}

/// Appends `s[start..]` lowercased as `str::to_lowercase` would lowercase it within the whole of `s`:
/// the capital sigma Σ becomes ς at the end of a word (Unicode's Final_Sigma, std's one contextual rule)
/// and σ elsewhere, and the text before `start` counts as context.
pub fn push_lowercase(out: &mut String, s: &str, start: usize) {
    let Some(tail) = s.get(start..) else { return };
    for (i, c) in tail.char_indices() {
        if c == 'Σ' {
            let at = start + i;
            let word_final =
                ignorable_then_cased(s[..at].chars().rev()) && !ignorable_then_cased(s[at + 'Σ'.len_utf8()..].chars());
            out.push(if word_final { 'ς' } else { 'σ' });
        } else {
            out.extend(lower(c));
        }
    }
}

/// Whether the first char that is not Case_Ignorable is Cased.
fn ignorable_then_cased(mut chars: impl Iterator<Item = char>) -> bool {
    chars.find(|&c| !case_ignorable(c)).is_some_and(cased)
}

fn cased(c: char) -> bool {
    c.is_lowercase() || c.is_uppercase() || u16::try_from(c as u32).is_ok_and(|cp| TITLECASE.binary_search(&cp).is_ok())
}

fn case_ignorable(c: char) -> bool {
    let cp = c as u32;
    let k = IGNORABLE_CHECKPOINTS.partition_point(|&w| w & 0x1F_FFFF <= cp);
    let Some(&w) = k.checked_sub(1).and_then(|k| IGNORABLE_CHECKPOINTS.get(k)) else { return false };
    let (mut at, mut i) = (w & 0x1F_FFFF, (w >> 21) as usize);
    while let Some(&d) = IGNORABLE_DELTAS.get(i + 1) {
        if d == 0 || at + u32::from(d) > cp {
            break;
        }
        at += u32::from(d);
        i += 1;
    }
    i % 2 == 0
}

#[cfg(test)]
mod tests;
