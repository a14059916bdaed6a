//! One stable sort for the whole crate.
//!
//! Why: each `sort`/`sort_by_key` on another element type instantiates the standard library's stable sort
//! again (driftsort, about 3 KB of wasm each; twiggy counted 13 copies in the module, 4 of them ours).
//! These helpers sort a permutation of indices through one comparator type instead, so the crate holds a
//! single instance whatever it sorts. Equal elements keep their order, as with `slice::sort`.

use std::cmp::Ordering;

/// Sorts `items` stably by `cmp`.
pub fn sort_by<T>(items: &mut Vec<T>, cmp: impl Fn(&T, &T) -> Ordering) {
    let order = permutation(items.len(), &|a, b| cmp(&items[a], &items[b]));
    let mut slots: Vec<Option<T>> = items.drain(..).map(Some).collect();
    items.extend(order.into_iter().filter_map(|i| slots.get_mut(i).and_then(Option::take)));
}

/// Sorts `items` stably in their natural order.
pub fn sort<T: Ord>(items: &mut Vec<T>) {
    sort_by(items, T::cmp)
}

/// Sorts `items` stably by the key `key` gives each.
pub fn sort_by_key<T, K: Ord>(items: &mut Vec<T>, key: impl Fn(&T) -> K) {
    sort_by(items, |a, b| key(a).cmp(&key(b)))
}

/// The order of `0..n` that `cmp` sorts: the one place the standard sort is instantiated.
#[inline(never)]
fn permutation(n: usize, cmp: &dyn Fn(usize, usize) -> Ordering) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| cmp(a, b));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_like_the_standard_sort_and_keeps_equal_elements_in_order() {
        let mut words = vec!["pear", "apple", "fig", "apple", "kiwi", ""];
        let mut expected = words.clone();
        expected.sort();
        sort(&mut words);
        assert_eq!(words, expected);

        let mut pairs = vec![(2, "a"), (1, "b"), (2, "c"), (0, "d"), (1, "e")];
        sort_by_key(&mut pairs, |p| p.0);
        assert_eq!(pairs, [(0, "d"), (1, "b"), (1, "e"), (2, "a"), (2, "c")]);

        let mut owned: Vec<String> = ["b", "a", "c"].iter().map(|s| s.to_string()).collect();
        sort_by(&mut owned, |a, b| b.cmp(a));
        assert_eq!(owned, ["c", "b", "a"]);

        let mut empty: Vec<u8> = Vec::new();
        sort(&mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn agrees_with_the_standard_stable_sort_on_many_inputs() {
        // A fixed pseudo-random sequence with many equal keys, so stability is exercised.
        let mut x: u32 = 12345;
        for len in [1usize, 2, 7, 20, 33, 200, 1000] {
            let items: Vec<(u32, usize)> = (0..len)
                .map(|i| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    ((x >> 16) % 10, i)
                })
                .collect();
            let mut ours = items.clone();
            sort_by_key(&mut ours, |p| p.0);
            let mut std_sorted = items;
            std_sorted.sort_by_key(|p| p.0);
            assert_eq!(ours, std_sorted, "length {len}");
        }
    }
}
