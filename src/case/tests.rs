use super::*;
use proptest::prelude::*;

fn every_char() -> impl Iterator<Item = char> {
    (0..=0x10FFFFu32).filter_map(char::from_u32)
}

#[test]
fn every_char_lowercases_as_std_does() {
    for c in every_char() {
        assert!(lower(c).eq(c.to_lowercase()), "{c:?} ({:#x})", c as u32);
    }
}

#[test]
fn every_char_uppercases_as_std_does() {
    for c in every_char() {
        assert!(upper(c).eq(c.to_uppercase()), "{c:?} ({:#x})", c as u32);
    }
}

#[test]
fn multi_char_mappings_are_whole() {
    assert_eq!(to_uppercase("ß"), "SS");
    assert_eq!(to_uppercase("ŉ"), "ʼN");
    assert_eq!(to_uppercase("ﬃ"), "FFI");
    assert_eq!(to_uppercase("ΐ"), "\u{399}\u{308}\u{301}");
    assert_eq!(to_lowercase("İ"), "i\u{307}");
    assert_eq!(lower('İ').count(), 2);
    assert_eq!(upper('ﬃ').count(), 3);
}

/// Every char before and after Σ, with and without a cased letter beyond it: this reads Case_Ignorable
/// and Cased for every code point.
#[test]
fn every_char_is_sigma_context_as_std_reads_it() {
    for c in every_char() {
        for s in [format!("{c}Σ"), format!("A{c}Σ"), format!("AΣ{c}"), format!("AΣ{c}A"), format!("Σ{c}Σ")] {
            assert_eq!(to_lowercase(&s), s.to_lowercase(), "{s:?} ({:#x})", c as u32);
        }
    }
}

#[test]
fn final_sigma_in_every_position() {
    let words = ["ΟΔΟΣ", "Σ", "ΣΑ", "ΑΣ", "Α'Σ", "Α\u{301}Σ", "ΑΣ\u{301}", "ΑΣ.", "ΑΣ'Β", "1Σ", "ǅΣ", "ΑΣΣ"];
    for w in words {
        for pad in ["", " ", "x", "-", "\u{301}", "ᾈ"] {
            for s in [format!("{pad}{w}"), format!("{w}{pad}"), format!("{pad}{w}{pad}{w}")] {
                assert_eq!(to_lowercase(&s), s.to_lowercase(), "{s:?}");
            }
        }
    }
    // a Σ at each position of a string of mixed context
    let base: Vec<char> = "aΑ 'ß\u{345}ǅ1.ΣĐ\u{e0100}x".chars().collect();
    for at in 0..=base.len() {
        let mut chars = base.clone();
        chars.insert(at, 'Σ');
        let s: String = chars.into_iter().collect();
        assert_eq!(to_lowercase(&s), s.to_lowercase(), "{s:?}");
    }
}

#[test]
fn push_lowercase_reads_the_text_before_start_as_context() {
    let mut out = String::new();
    push_lowercase(&mut out, "ΑΣ", 'Α'.len_utf8());
    assert_eq!(out, "ς");
    out.clear();
    push_lowercase(&mut out, "ΣΑ", 0);
    assert_eq!(out, "σα");
    out.clear();
    push_lowercase(&mut out, "ΑΣ", 1); // not a char boundary: nothing, no panic
    assert_eq!(out, "");
}

/// Strings drawn mostly from the cased, case-ignorable and sigma-bearing parts of Unicode.
fn text() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        Just('Σ'),
        Just('σ'),
        Just('ς'),
        Just(' '),
        Just('\''),
        Just('.'),
        Just('\u{301}'),
        Just('\u{345}'),
        Just('ǅ'),
        Just('İ'),
        Just('ß'),
        proptest::char::range('\u{0}', '\u{7f}'),
        proptest::char::range('\u{80}', '\u{24f}'),
        proptest::char::range('\u{370}', '\u{52f}'),
        proptest::char::range('\u{1e00}', '\u{1fff}'),
        proptest::char::range('\u{2c00}', '\u{2dff}'),
        proptest::char::range('\u{a640}', '\u{a7ff}'),
        proptest::char::range('\u{fb00}', '\u{fb4f}'),
        proptest::char::range('\u{10400}', '\u{1e95f}'),
        proptest::char::any(),
    ];
    proptest::collection::vec(c, 0..24).prop_map(|v| v.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn strings_case_as_std_does(s in text()) {
        prop_assert_eq!(to_lowercase(&s), s.to_lowercase());
        prop_assert_eq!(to_uppercase(&s), s.to_uppercase());
    }

    #[test]
    fn a_tail_lowercases_as_its_part_of_the_whole(s in text(), cut in 0usize..24) {
        let start = s.char_indices().nth(cut).map_or(s.len(), |(i, _)| i);
        let whole = s.to_lowercase();
        let head = s[..start].to_lowercase();
        let mut out = String::new();
        push_lowercase(&mut out, &s, start);
        // Σ is the only contextual mapping and σ/ς are the same length, so the head's lowercase is a prefix
        prop_assert_eq!(out.as_str(), &whole[head.len()..]);
    }
}
