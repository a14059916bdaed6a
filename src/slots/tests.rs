use super::Slots;
use proptest::prelude::*;
use std::collections::HashMap;

#[test]
fn insert_replaces_and_remove_keeps_the_rest_reachable() {
    let mut s = Slots::new();
    assert_eq!(s.insert(7, "a"), None);
    assert_eq!(s.insert(9, "b"), None);
    assert_eq!(s.insert(11, "c"), None);
    assert_eq!(s.insert(7, "A"), Some("a"));
    assert_eq!(s.len(), 3);
    // The first entry goes: the ones after it shift and are still found.
    assert_eq!(s.remove(&7), Some("A"));
    assert_eq!(s.remove(&7), None);
    assert_eq!(s.get(&11), Some(&"c"));
    assert_eq!(s.get(&9), Some(&"b"));
    assert!(!s.contains_key(&7));
    *s.get_or_insert_with(9, || "unused") = "B";
    s.get_or_insert_with(3, || "d");
    // In key order, whatever the order of insertion.
    let all: Vec<_> = s.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(all, [(3, "d"), (9, "B"), (11, "c")]);
    s.retain(|k, _| *k != 9);
    assert_eq!(s.keys().count(), 2);
    assert!(!s.contains_key(&9) && s.contains_key(&3) && s.contains_key(&11));
}

/// Thousands of streams in flight, registered in the host's increasing order and ended in any order: every
/// one is found until it ends, and the order holds.
#[test]
fn thousands_of_entries_are_found_whatever_order_they_end_in() {
    let mut s = Slots::new();
    for k in (0..5000u32).map(|i| 3 + 2 * i) {
        assert_eq!(s.insert(k, k), None);
    }
    // A key from before the newest, as a late call token could be.
    assert_eq!(s.insert(2, 2), None);
    let mut ends: Vec<u32> = s.keys().copied().collect();
    // A fixed shuffle: the multiplier is coprime with the count.
    let n = ends.len();
    ends = (0..n).map(|i| ends[(i * 2654435761) % n]).collect();
    for (done, k) in ends.iter().enumerate() {
        assert_eq!(s.get(k), Some(k));
        assert_eq!(s.remove(k), Some(*k));
        assert!(!s.contains_key(k));
        assert_eq!(s.len(), n - done - 1);
        if done % 997 == 0 {
            assert!(s.keys().zip(s.keys().skip(1)).all(|(a, b)| a < b));
            assert!(ends[done + 1..].iter().all(|k| s.get(k) == Some(k)));
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(u32, u8),
    Remove(u32),
    Bump(u32),
    Default(u32, u8),
    Retain(u8),
}

fn op() -> impl Strategy<Value = Op> {
    // Few keys, so that operations meet the same entries often.
    let key = 0..8u32;
    prop_oneof![
        3 => (key.clone(), any::<u8>()).prop_map(|(k, v)| Op::Insert(k, v)),
        2 => key.clone().prop_map(Op::Remove),
        2 => key.clone().prop_map(Op::Bump),
        1 => (key, any::<u8>()).prop_map(|(k, v)| Op::Default(k, v)),
        1 => any::<u8>().prop_map(Op::Retain),
    ]
}

proptest! {
    /// Holds the same entries as a `HashMap` through any sequence of operations, and answers the same.
    #[test]
    fn behaves_as_a_hash_map(ops in prop::collection::vec(op(), 0..60)) {
        let mut s = Slots::new();
        let mut m = HashMap::new();
        for op in ops {
            match op {
                Op::Insert(k, v) => prop_assert_eq!(s.insert(k, v), m.insert(k, v)),
                Op::Remove(k) => prop_assert_eq!(s.remove(&k), m.remove(&k)),
                Op::Bump(k) => {
                    if let Some(v) = s.get_mut(&k) {
                        *v = v.wrapping_add(1);
                    }
                    if let Some(v) = m.get_mut(&k) {
                        *v = v.wrapping_add(1);
                    }
                }
                Op::Default(k, v) => {
                    let a = *s.get_or_insert_with(k, || v);
                    prop_assert_eq!(a, *m.entry(k).or_insert(v));
                }
                Op::Retain(t) => {
                    s.retain(|k, v| (*k as u8 ^ *v) < t);
                    m.retain(|k, v| (*k as u8 ^ *v) < t);
                }
            }
            prop_assert_eq!(s.len(), m.len());
            prop_assert_eq!(s.is_empty(), m.is_empty());
            for k in 0..8u32 {
                prop_assert_eq!(s.get(&k), m.get(&k));
                prop_assert_eq!(s.contains_key(&k), m.contains_key(&k));
            }
            let mine: Vec<(u32, u8)> = s.iter_mut().map(|(k, v)| (*k, *v)).collect();
            let mut theirs: Vec<(u32, u8)> = m.iter().map(|(k, v)| (*k, *v)).collect();
            theirs.sort();
            prop_assert_eq!(mine, theirs);
        }
    }
}
