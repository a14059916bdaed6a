//! Hand-written scanners for the masking patterns of e-mail addresses, phone numbers and card numbers.
//!
//! regex-lite costs about 0.7 µs per byte it searches, which made masking most of the policy chain's
//! cost; these scanners find exactly the matches the patterns below find (leftmost first, the same
//! greedy choices, `\b` as an ASCII word boundary that looks behind the search's start), in one pass
//! over the bytes. The patterns stay as the oracle of the property tests (`mask::tests`).

use std::ops::Range;

/// What [`email`] matches.
#[cfg(test)]
pub const EMAIL: &str = r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b";
/// What [`phone`] matches: group 1 is the character before an international number's `+`.
#[cfg(test)]
pub const PHONE: &str = concat!(
    r"(^|[^\w+])\+[1-9]\d{0,2}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}\b",
    r"|\(\d{3}\) ?\d{3}[ .-]\d{4}\b|\b\d{3}[.-]\d{3}[.-]\d{4}\b",
);
/// What [`card`] matches (the Luhn and issuer checks come after).
#[cfg(test)]
pub const CARD: &str = r"\b\d(?:[ -]?\d){12,18}\b";

/// Byte classes, one bit each in [`CLASS`]: an ASCII word byte (`\w`).
pub const WORD: u8 = 1;
/// An ASCII digit.
pub const DIGIT: u8 = 2;
/// A byte a card-number run is made of: a digit, a space or a dash.
pub const CARD_RUN: u8 = 4;
/// A byte a phone number can start at: `+`, `(` or a digit.
pub const PHONE_START: u8 = 8;
/// A byte a secret (or the token after `Bearer`) is made of.
pub const TOKEN: u8 = 16;
/// A byte of an e-mail address's local part.
pub const LOCAL: u8 = 32;
/// A byte of a domain label.
pub const LABEL: u8 = 64;

const fn classes() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let (alnum, digit) = (b.is_ascii_alphanumeric(), b.is_ascii_digit());
        let mut k = 0;
        if alnum || b == b'_' {
            k |= WORD;
        }
        if digit {
            k |= DIGIT;
        }
        if digit || b == b' ' || b == b'-' {
            k |= CARD_RUN;
        }
        if digit || b == b'+' || b == b'(' {
            k |= PHONE_START;
        }
        if alnum || matches!(b, b'_' | b'.' | b'~' | b'+' | b'/' | b'=' | b'-') {
            k |= TOKEN;
        }
        if alnum || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-') {
            k |= LOCAL;
        }
        if alnum || b == b'-' {
            k |= LABEL;
        }
        t[i] = k;
        i += 1;
    }
    t
}

/// The classes of every byte: the scans test a byte with one load instead of a chain of comparisons.
static CLASS: [u8; 256] = classes();

/// Whether `b` is of `class` (one of the bits above).
#[inline(always)]
pub fn is(b: u8, class: u8) -> bool {
    CLASS[usize::from(b)] & class != 0
}

#[inline(always)]
fn is_word(b: u8) -> bool {
    is(b, WORD)
}

/// The first `needle` at or after `from`, eight bytes at a time (a zero byte of `word ^ needles` is a
/// match; the lowest flagged byte is always a true one).
pub fn find_byte(t: &[u8], from: usize, needle: u8) -> Option<usize> {
    let rest = t.get(from..)?;
    let (ones, highs, needles) =
        (u64::from_le_bytes([1; 8]), u64::from_le_bytes([0x80; 8]), u64::from_le_bytes([needle; 8]));
    let mut chunks = rest.chunks_exact(8);
    let mut at = from;
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().ok()?) ^ needles;
        let zero = w.wrapping_sub(ones) & !w & highs;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks.remainder().iter().position(|b| *b == needle).map(|i| at + i)
}

/// `\b` at `i`: a word byte on one side only (outside the text counts as not a word).
fn boundary(t: &[u8], i: usize) -> bool {
    let before = i > 0 && is_word(t[i - 1]);
    let after = t.get(i).is_some_and(|b| is_word(*b));
    before != after
}

/// `\b` after a word byte: the text ends at `i` or a non-word byte follows.
fn ends_word(t: &[u8], i: usize) -> bool {
    t.get(i).is_none_or(|b| !is_word(*b))
}

/// How many ASCII digits (at most `max`) start at `i`.
fn digits(t: &[u8], i: usize, max: usize) -> usize {
    t.get(i..).map_or(0, |r| r.iter().take(max).take_while(|b| b.is_ascii_digit()).count())
}

fn is_at(t: &[u8], i: usize, set: &[u8]) -> bool {
    t.get(i).is_some_and(|b| set.contains(b))
}

/// The first e-mail address at or after `from`.
///
/// The local part is the run of `[A-Za-z0-9._%+-]` before an `@` (`@` is not in it, so the greedy run
/// must end there), starting at its first `\b`; the domain is labels of `[A-Za-z0-9-]` joined by dots,
/// ending at the last label whose leading letters (two or more) end a word: the greedy `(?:\.label)*`
/// gives back labels until `\.[A-Za-z]{2,}\b` holds.
pub fn email(t: &[u8], from: usize) -> Option<Range<usize>> {
    let mut at = from;
    while let Some(a) = find_byte(t, at, b'@') {
        let run = t[from..a].iter().rposition(|b| !is(*b, LOCAL)).map_or(from, |i| from + i + 1);
        if let Some(start) = (run..a).find(|&s| boundary(t, s)) {
            if let Some(end) = domain(t, a + 1) {
                return Some(start..end);
            }
        }
        at = a + 1;
    }
    None
}

/// The end of the domain part starting at `i`, if it matches.
fn domain(t: &[u8], i: usize) -> Option<usize> {
    let label_end = |i: usize| t.get(i..).map_or(i, |r| i + r.iter().take_while(|b| is(**b, LABEL)).count());
    let mut end = label_end(i);
    if end == i {
        return None;
    }
    let mut found = None;
    while t.get(end) == Some(&b'.') {
        let (start, next) = (end + 1, label_end(end + 1));
        if next == start {
            break;
        }
        let letters = start + t[start..next].iter().take_while(|b| b.is_ascii_alphabetic()).count();
        if letters - start >= 2 && ends_word(t, letters) {
            found = Some(letters);
        }
        end = next;
    }
    found
}

/// A phone number's match: its range, and how many bytes at its start (the character before an
/// international number's `+`) are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneMatch {
    pub range: Range<usize>,
    pub keep: usize,
}

/// The first phone number at or after `from`.
///
/// A match can start only at a `(`, a digit after a non-word byte, or the character before a `+` (or a
/// `+` that starts the text): the scan jumps between those bytes, and each alternative is tried in the
/// pattern's order, with its quantifiers' greedy choices tried in the order a backtracking engine tries
/// them (the bounded repetitions keep that to a handful of steps).
pub fn phone(t: &[u8], from: usize) -> Option<PhoneMatch> {
    let mut i = from;
    while let Some(off) = t.get(i..)?.iter().position(|b| is(*b, PHONE_START)) {
        let j = i + off;
        let found = match t[j] {
            b'+' if j == 0 => international(t, 0).map(|end| PhoneMatch { range: 0..end, keep: 0 }),
            b'+' => {
                // The character before the `+`: `[^\w+]`, any character but an ASCII word byte or `+`.
                let p = (0..j).rev().find(|&p| t[p] & 0xC0 != 0x80).unwrap_or(0);
                if p >= i && !is_word(t[p]) && t[p] != b'+' {
                    international(t, j).map(|end| PhoneMatch { range: p..end, keep: j - p })
                } else {
                    None
                }
            }
            b'(' => match t.get(j + 1) {
                Some(b'+') => international(t, j + 1).map(|end| PhoneMatch { range: j..end, keep: 1 }),
                _ => north_american_area(t, j).map(|end| PhoneMatch { range: j..end, keep: 0 }),
            },
            _ if j == 0 || !is_word(t[j - 1]) => north_american(t, j).map(|end| PhoneMatch { range: j..end, keep: 0 }),
            _ => None,
        };
        if found.is_some() {
            return found;
        }
        i = j + 1;
    }
    None
}

/// The greedy `[ .-]?` at `i`: with the separator first, then without.
fn separator(t: &[u8], i: usize, set: &[u8]) -> impl Iterator<Item = usize> {
    let with = is_at(t, i, set).then_some(i + 1);
    with.into_iter().chain(std::iter::once(i))
}

/// `\+[1-9]\d{0,2}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}\b` from the `+` at `q`.
fn international(t: &[u8], q: usize) -> Option<usize> {
    let i = q + 1;
    if !t.get(i).is_some_and(|b| (b'1'..=b'9').contains(b)) {
        return None;
    }
    let i = i + 1;
    for code in (0..=digits(t, i, 2)).rev() {
        for i in separator(t, i + code, b" .-") {
            // The optional `(area)`: tried first, the greedy separator after it first too.
            let area = match t.get(i) {
                Some(b'(') => {
                    let n = digits(t, i + 1, 4);
                    (n >= 1 && t.get(i + 1 + n) == Some(&b')')).then_some(i + 2 + n)
                }
                _ => None,
            };
            let starts = area.into_iter().flat_map(|a| separator(t, a, b" .-")).chain(std::iter::once(i));
            for i in starts {
                for n in (1..=digits(t, i, 4)).rev() {
                    if let Some(end) = groups(t, i + n, 0) {
                        return Some(end);
                    }
                }
            }
        }
    }
    None
}

/// `(?:[ .-]?\d{2,4}){1,4}\b` from `i`, `done` groups already matched.
fn groups(t: &[u8], i: usize, done: usize) -> Option<usize> {
    if done < 4 {
        for j in separator(t, i, b" .-") {
            for n in (2..=digits(t, j, 4)).rev() {
                if let Some(end) = groups(t, j + n, done + 1) {
                    return Some(end);
                }
            }
        }
    }
    (done >= 1 && ends_word(t, i)).then_some(i)
}

/// `\(\d{3}\) ?\d{3}[ .-]\d{4}\b` from the `(` at `p`.
fn north_american_area(t: &[u8], p: usize) -> Option<usize> {
    if digits(t, p + 1, 3) != 3 || t.get(p + 4) != Some(&b')') {
        return None;
    }
    separator(t, p + 5, b" ").find_map(|i| {
        let ok = digits(t, i, 3) == 3 && is_at(t, i + 3, b" .-") && digits(t, i + 4, 4) == 4 && ends_word(t, i + 8);
        ok.then_some(i + 8)
    })
}

/// `\d{3}[.-]\d{3}[.-]\d{4}\b` from the digit at `p` (the `\b` before it is the caller's).
fn north_american(t: &[u8], p: usize) -> Option<usize> {
    let ok = digits(t, p, 3) == 3
        && is_at(t, p + 3, b".-")
        && digits(t, p + 4, 3) == 3
        && is_at(t, p + 7, b".-")
        && digits(t, p + 8, 4) == 4
        && ends_word(t, p + 12);
    ok.then_some(p + 12)
}

/// The first run of 13 to 19 digits (single spaces or dashes between them) at or after `from`, starting
/// and ending at a word boundary: the greedy repetition gives back digits until `\b` holds.
pub fn card(t: &[u8], from: usize) -> Option<Range<usize>> {
    let mut i = from;
    while let Some(off) = t.get(i..)?.iter().position(u8::is_ascii_digit) {
        let p = i + off;
        if boundary(t, p) {
            // The end after each digit, up to 19.
            let mut ends = [0usize; 19];
            let (mut n, mut at) = (1, p + 1);
            ends[0] = at;
            while n < 19 {
                at = match t.get(at) {
                    Some(b' ' | b'-') if t.get(at + 1).is_some_and(u8::is_ascii_digit) => at + 2,
                    Some(b) if b.is_ascii_digit() => at + 1,
                    _ => break,
                };
                ends[n] = at;
                n += 1;
            }
            if let Some(end) = ends[12.min(n)..n].iter().rev().find(|&&e| ends_word(t, e)) {
                return Some(p..*end);
            }
            if n < 19 {
                // The run ended by itself: a start further in it has fewer digits and only ends this one
                // already tried, so none matches either; go on after it.
                i = at;
                continue;
            }
        }
        i = p + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex_lite::Regex;

    /// Characters and short runs that make addresses, numbers and near misses when put side by side.
    const PIECES: [&str; 48] = [
        "0",
        "1",
        "2",
        "3",
        "5",
        "9",
        "12",
        "555",
        "0143",
        "4111",
        "+44",
        "202",
        " ",
        "  ",
        ".",
        "-",
        "+",
        "(",
        ")",
        "@",
        "a",
        "Z",
        "io",
        "com",
        "x9",
        "_",
        "%",
        "é",
        "\n",
        "\t",
        "b.c",
        "ab",
        "-x",
        "@a",
        "(1)",
        "(202)",
        "+1",
        "1 2",
        "..",
        "日",
        "20",
        "7946",
        "0958",
        "(0)",
        "+33",
        "612345678",
        "1234",
        "98765",
    ];

    fn text(picks: &[usize]) -> String {
        picks.iter().map(|i| PIECES[*i]).collect()
    }

    /// Every match a scanner gives over `t`, each search starting where the one before ended.
    fn all_of(t: &str, find: impl Fn(&[u8], usize) -> Option<(usize, usize, usize)>) -> Vec<(usize, usize, usize)> {
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(m) = find(t.as_bytes(), from) {
            from = m.1;
            out.push(m);
        }
        out
    }

    /// The matches of a pattern: start, end, and the length of group 1 (0 when it did not take part).
    fn oracle(re: &Regex, t: &str) -> Vec<(usize, usize, usize)> {
        re.captures_iter(t)
            .filter_map(|c| {
                let m = c.get(0)?;
                Some((m.start(), m.end(), c.get(1).map_or(0, |g| g.len())))
            })
            .collect()
    }

    fn check(t: &str) -> Result<(), proptest::test_runner::TestCaseError> {
        let (email_re, phone_re, card_re) =
            (Regex::new(EMAIL).unwrap(), Regex::new(PHONE).unwrap(), Regex::new(CARD).unwrap());
        let email_found = all_of(t, |b, from| email(b, from).map(|r| (r.start, r.end, 0)));
        proptest::prop_assert_eq!(email_found, oracle(&email_re, t), "email in {:?}", t);
        let phone_found = all_of(t, |b, from| phone(b, from).map(|m| (m.range.start, m.range.end, m.keep)));
        proptest::prop_assert_eq!(phone_found, oracle(&phone_re, t), "phone in {:?}", t);
        let card_found = all_of(t, |b, from| card(b, from).map(|r| (r.start, r.end, 0)));
        proptest::prop_assert_eq!(card_found, oracle(&card_re, t), "card in {:?}", t);
        Ok(())
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(3000))]
        #[test]
        fn scanners_find_what_the_patterns_find(picks in proptest::collection::vec(0..PIECES.len(), 0..60)) {
            check(&text(&picks))?;
        }
    }

    #[test]
    fn scanners_find_what_the_patterns_find_on_known_cases() {
        for t in [
            "a@b.io.x@c.io",
            "x@y@b.io",
            "ab.c@x.io-y.com9 .a@b.cd_ e@f.gh-",
            "+44 20 7946 0958 now, (+1) 202 555 0143, +1 (202) 555-0143, +33612345678",
            "+123 4567 89 12 34 56 78 90 12",
            "call+44 20 7946 0958 é+44 (0) 20 7946 0958",
            "(202) 555-0143 (202)555-0143 202-555-0143 202.555.0143 2025550143 1202-555-0143",
            "+1 2 3 +12 34 56 +1234567890123456789012 ++44 20 7946 0958",
            "4111 1111 1111 1111 4111-1111-1111-1111 4111 1111 1111 1111 1111 1111 41111111111111111111",
            "order 0000000000000 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 x1234567890123",
        ] {
            check(t).unwrap();
        }
        // What the cases above must find, so that a scanner and an oracle wrong alike cannot pass.
        assert_eq!(email(b"a@b.io.x@c.io", 6), Some(6..13));
        assert_eq!(phone(b"call +44 20 7946 0958 now", 0), Some(PhoneMatch { range: 4..21, keep: 1 }));
        assert_eq!(card(b"4111 1111 1111 1111 1111 1111", 0), Some(0..19));
    }

    proptest::proptest! {
        #[test]
        fn find_byte_finds_what_position_finds(bytes in proptest::collection::vec(proptest::sample::select(vec![b'@', b'a', 0u8, 0x80, 0xff, 0x3f, 0x41]), 0..40), from in 0..45usize) {
            let by_position = bytes.get(from..).and_then(|r| r.iter().position(|b| *b == b'@')).map(|i| from + i);
            proptest::prop_assert_eq!(find_byte(&bytes, from, b'@'), by_position);
        }
    }

    #[test]
    fn the_class_table_holds_what_the_scanners_test() {
        for b in 0..=255u8 {
            let alnum = b.is_ascii_alphanumeric();
            assert_eq!(is(b, WORD), alnum || b == b'_', "{b}");
            assert_eq!(is(b, DIGIT), b.is_ascii_digit(), "{b}");
            assert_eq!(is(b, CARD_RUN), b.is_ascii_digit() || b == b' ' || b == b'-', "{b}");
            assert_eq!(is(b, PHONE_START), b.is_ascii_digit() || b == b'+' || b == b'(', "{b}");
            assert_eq!(is(b, TOKEN), alnum || b"_.~+/=-".contains(&b), "{b}");
            assert_eq!(is(b, LOCAL), alnum || b"._%+-".contains(&b), "{b}");
            assert_eq!(is(b, LABEL), alnum || b == b'-', "{b}");
        }
    }

    /// A long text of near misses costs a bounded number of steps per byte (no backtracking blow-up), and
    /// the scanners still find what the patterns find in it. Linear is read as a ratio, not a deadline: four
    /// times the text takes well under the sixteen times a quadratic scan would (best of three runs of each,
    /// so that a loaded machine slows both alike).
    #[test]
    fn scanners_stay_linear_on_near_misses() {
        let text = |n: usize| {
            "+123456789012345678901234 ".repeat(400 * n)
                + &"+1234567890123456789012 ".repeat(100 * n)
                + &"a.".repeat(2000 * n)
                + &"1 ".repeat(2000 * n)
        };
        let scan = |t: &str| {
            let phones = all_of(t, |b, from| phone(b, from).map(|m| (m.range.start, m.range.end, m.keep)));
            let emails = all_of(t, |b, from| email(b, from).map(|r| (r.start, r.end, 0)));
            let cards = all_of(t, |b, from| card(b, from).map(|r| (r.start, r.end, 0)));
            (phones, emails, cards)
        };
        let best = |t: &str| {
            (0..3)
                .map(|_| {
                    let start = std::time::Instant::now();
                    std::hint::black_box(scan(t));
                    start.elapsed()
                })
                .min()
                .unwrap()
        };
        let (small, large) = (best(&text(3)), best(&text(12)));
        assert!(large < small * 10, "4x the text took {large:?} against {small:?}");
        let t = text(10);
        let (phones, emails, cards) = scan(&t);
        // 24 digits after a `+` are one too many for the pattern; 22 are not.
        assert_eq!((phones.len(), emails.len(), cards.len()), (1000, 0, 20000 / 19));
        assert_eq!(phones, oracle(&Regex::new(PHONE).unwrap(), &t));
        assert_eq!(cards, oracle(&Regex::new(CARD).unwrap(), &t));
    }
}
