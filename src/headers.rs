//! A request's headers as the host reads them: the host's serialized map kept as it came, each pair a span
//! of it.
//!
//! The host builds one per request under the prefix. As owned pairs, `Vec<(String, String)>`, that was two
//! allocations per header (26 for a dozen headers) and as many frees when the request ended: about a third
//! of what the module ran for a proxied call. Copied into one buffer, it was still a `str::from_utf8` per
//! name and value, a `push_str` each, and two checked slices per pair each time the head was walked. Now the
//! map's text is checked once, its pairs' bounds once, and the head is walked without checks.

use std::fmt;

/// A request's headers, in the order they came; names as the host gives them (lower-case).
///
/// Invariant, which [`Iter`] relies on: every span `[a, b, c, d]` has `a <= b <= bytes.len()` and
/// `c <= d <= bytes.len()`, and `bytes[a..b]` and `bytes[c..d]` are UTF-8. [`Headers::push`] spans the
/// bytes of the two `&str`s it appends; [`Headers::from_map`] spans only pairs inside a stretch of the map
/// it checked as UTF-8 whole, each end on a char boundary of it (a slice of UTF-8 between boundaries is
/// UTF-8). Nothing else writes either field, and both only grow.
#[derive(Clone, Default)]
pub struct Headers {
    /// The text of every name and value: a serialized map (with its sizes and NULs between) or pushed text.
    bytes: Vec<u8>,
    /// Per pair: where its name starts and ends, where its value starts and ends.
    spans: Vec<[usize; 4]>,
}

/// No headers (a borrowed default for callers that have none).
pub const NONE: &Headers = &Headers::new();

impl Headers {
    pub const fn new() -> Headers {
        Headers { bytes: Vec::new(), spans: Vec::new() }
    }

    /// Room for `pairs` headers of `bytes` bytes of text together, allocated once.
    pub fn with_capacity(pairs: usize, bytes: usize) -> Headers {
        Headers { bytes: Vec::with_capacity(bytes), spans: Vec::with_capacity(pairs) }
    }

    /// The headers of a map in the proxy-wasm encoding ([`MapSpans`]), as the host gave it: its bytes are
    /// the text, not copied. Text that is not UTF-8 is decoded lossily (into a buffer of its own); a
    /// malformed map ends at its last whole pair.
    pub fn from_map(map: Vec<u8>) -> Headers {
        let found = MapSpans::of(&map);
        let data = found.data;
        let mut spans = Vec::with_capacity(found.declared());
        let mut end = data;
        for span in found {
            end = span[3];
            spans.push(span);
        }
        // The text of every pair at once (a NUL after each name and value is UTF-8 too), then each end.
        let text = map.get(data..end).and_then(|t| std::str::from_utf8(t).ok());
        let whole = text.is_some_and(|t| {
            let boundary = |at: usize| at.checked_sub(data).is_some_and(|i| t.is_char_boundary(i));
            spans.iter().all(|&[a, b, c, d]| a <= b && c <= d && [a, b, c, d].into_iter().all(boundary))
        });
        if whole {
            return Headers { bytes: map, spans };
        }
        let mut headers = Headers::with_capacity(spans.len(), map.len());
        for &[a, b, c, d] in &spans {
            let bytes = |from, to| map.get(from..to).unwrap_or_default();
            headers.push(&String::from_utf8_lossy(bytes(a, b)), &String::from_utf8_lossy(bytes(c, d)));
        }
        headers
    }

    /// Adds a header after the others (a name already there keeps its earlier values).
    pub fn push(&mut self, name: &str, value: &str) {
        let a = self.bytes.len();
        self.bytes.extend_from_slice(name.as_bytes());
        let b = self.bytes.len();
        self.bytes.extend_from_slice(value.as_bytes());
        self.spans.push([a, b, b, self.bytes.len()]);
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The name and value of each header, in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { bytes: &self.bytes, spans: self.spans.iter() }
    }

    /// The value of the first header named `name` (exactly, as the host lower-cases names).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// The headers as borrowed pairs, for code that takes a slice of them.
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.iter().collect()
    }

    /// The headers as owned pairs (for tests that apply edits to a copy).
    pub fn to_vec(&self) -> Vec<(String, String)> {
        self.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// Keeps only the headers `keep` says yes to, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&(&str, &str)) -> bool) {
        let kept: Headers = self.iter().filter(|pair| keep(pair)).collect();
        *self = kept;
    }
}

/// Equal when they hold the same pairs in the same order, however their text is laid out.
impl PartialEq for Headers {
    fn eq(&self, other: &Headers) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The iterator of [`Headers::iter`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    bytes: &'a [u8],
    spans: std::slice::Iter<'a, [usize; 4]>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let &[a, b, c, d] = self.spans.next()?;
        debug_assert!(a <= b && c <= d && b <= self.bytes.len() && d <= self.bytes.len());
        // SAFETY: `Headers`' invariant: both ranges are in bounds and UTF-8, checked when the span was made
        // (walked twice or more per request, these were two checked `str::get`s per pair, not inlined).
        unsafe {
            let name = std::str::from_utf8_unchecked(self.bytes.get_unchecked(a..b));
            let value = std::str::from_utf8_unchecked(self.bytes.get_unchecked(c..d));
            Some((name, value))
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Headers {
    type Item = (&'a str, &'a str);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl<K: AsRef<str>, V: AsRef<str>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Headers {
        let mut headers = Headers::new();
        for (k, v) in pairs {
            headers.push(k.as_ref(), v.as_ref());
        }
        headers
    }
}

impl<K: AsRef<str>, V: AsRef<str>> From<Vec<(K, V)>> for Headers {
    fn from(pairs: Vec<(K, V)>) -> Headers {
        pairs.into_iter().collect()
    }
}

/// Whether header name `name` is one of `names`, lengths compared first, inline: a slice's `contains`
/// calls `str`'s `eq` for each name (18 per client header on the proxied path, most of another length).
pub fn one_of(name: &str, names: &[&str]) -> bool {
    names.iter().any(|n| n.len() == name.len() && *n == name)
}

/// Where the names and values of a map in the proxy-wasm encoding are: its pair count (4 bytes), each name
/// and value size (4 bytes each), then each name and value followed by a NUL. Yields, per pair, where its
/// name starts and ends and where its value starts and ends, all within the map; a malformed map ends
/// early instead of failing.
pub struct MapSpans<'a> {
    map: &'a [u8],
    left: usize,
    /// Where the next pair's sizes are.
    sizes: usize,
    /// Where the next pair's name is (after all the sizes).
    data: usize,
}

impl MapSpans<'_> {
    pub fn of(map: &[u8]) -> MapSpans<'_> {
        let count = map.get(..4).and_then(|b| b.try_into().ok()).map_or(0, u32::from_le_bytes) as usize;
        let data = count.checked_mul(8).and_then(|n| n.checked_add(4)).unwrap_or(usize::MAX);
        MapSpans { map, left: count, sizes: 4, data }
    }

    /// The pairs left, as the map declares them (bounded by what its bytes can hold, 10 bytes a pair): the
    /// capacity a head collected from it is allocated with once, instead of grown.
    pub fn declared(&self) -> usize {
        self.left.min(self.map.len() / 10)
    }

    /// The next pair's spans and where the pair after it starts; `None` when the map is malformed. Both
    /// sizes are read from one 8-byte slice.
    fn span(&self) -> Option<([usize; 4], usize)> {
        let sizes: &[u8; 8] = self.map.get(self.sizes..)?.first_chunk()?;
        let [k0, k1, k2, k3, v0, v1, v2, v3] = *sizes;
        let (k, v) = (u32::from_le_bytes([k0, k1, k2, k3]) as usize, u32::from_le_bytes([v0, v1, v2, v3]) as usize);
        let name_end = self.data.checked_add(k)?;
        let value = name_end.checked_add(1)?;
        let value_end = value.checked_add(v)?;
        (value_end <= self.map.len()).then_some(([self.data, name_end, value, value_end], value_end + 1))
    }
}

impl Iterator for MapSpans<'_> {
    type Item = [usize; 4];

    fn next(&mut self) -> Option<[usize; 4]> {
        if self.left == 0 {
            return None;
        }
        match self.span() {
            Some((span, next)) => {
                self.left -= 1;
                self.sizes += 8;
                self.data = next;
                Some(span)
            }
            None => {
                self.left = 0;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A map in the proxy-wasm encoding, as a host serializes it.
    fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut map = (pairs.len() as u32).to_le_bytes().to_vec();
        for (k, v) in pairs {
            map.extend_from_slice(&(k.len() as u32).to_le_bytes());
            map.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (k, v) in pairs {
            map.extend_from_slice(k);
            map.push(0);
            map.extend_from_slice(v);
            map.push(0);
        }
        map
    }

    /// What a map's pairs are, decoded lossily one by one (the head as the host built it before).
    fn lossy_pairs(map: &[u8]) -> Vec<(String, String)> {
        let text = |from: usize, to: usize| String::from_utf8_lossy(&map[from..to]).into_owned();
        MapSpans::of(map).map(|[a, b, c, d]| (text(a, b), text(c, d))).collect()
    }

    #[test]
    fn pairs_come_back_in_order_with_their_own_text() {
        let mut h = Headers::with_capacity(1, 4);
        h.push(":path", "/mcp");
        h.push("", "");
        h.push("x-dup", "1");
        h.push("x-dup", "ü, 2");
        h.push("empty", "");
        assert_eq!(h.len(), 5);
        assert_eq!(h.pairs(), [(":path", "/mcp"), ("", ""), ("x-dup", "1"), ("x-dup", "ü, 2"), ("empty", "")]);
        assert_eq!(h.iter().len(), 5);
        assert_eq!(h.iter().nth(3), Some(("x-dup", "ü, 2")));
        assert_eq!((h.get("x-dup"), h.get("empty"), h.get("x-none")), (Some("1"), Some(""), None));
    }

    #[test]
    fn built_from_pairs_as_from_pushes() {
        let owned: Headers = vec![("a".to_string(), "1".to_string()), ("b".to_string(), "2".to_string())].into();
        let borrowed: Headers = [("a", "1"), ("b", "2")].into_iter().collect();
        assert_eq!(owned, borrowed);
        assert_eq!(owned.pairs(), [("a", "1"), ("b", "2")]);
        assert!(NONE.is_empty() && NONE.iter().next().is_none());
        assert!(!owned.is_empty());
        assert_eq!(format!("{owned:?}"), r#"[("a", "1"), ("b", "2")]"#);
    }

    #[test]
    fn two_allocations_hold_any_number_of_headers() {
        let mut h = Headers::with_capacity(12, 400);
        let (text, spans) = (h.bytes.as_ptr(), h.spans.as_ptr());
        for i in 0..12 {
            h.push("x-header-name", if i % 2 == 0 { "a value of some length" } else { "" });
        }
        // Nothing grew: the two buffers are the ones allocated at first.
        assert_eq!((h.bytes.as_ptr(), h.spans.as_ptr()), (text, spans));
        assert_eq!(h.iter().filter(|(_, v)| v.is_empty()).count(), 6);
    }

    #[test]
    fn a_map_is_read_in_place() {
        let map = serialize(&[(b":method", b"POST"), (b"x-dup", b""), (b"x-dup", "ü, 2".as_bytes()), (b"", b"")]);
        let at = map.as_ptr();
        let h = Headers::from_map(map);
        assert_eq!(h.pairs(), [(":method", "POST"), ("x-dup", ""), ("x-dup", "ü, 2"), ("", "")]);
        // The host's buffer is the text: not copied.
        assert_eq!(h.bytes.as_ptr(), at);
        // Equal to the same pairs pushed, however laid out.
        assert_eq!(h, h.pairs().into_iter().collect::<Headers>());
        assert_eq!(Headers::from_map(Vec::new()), Headers::new());
    }

    #[test]
    fn text_that_is_not_utf8_is_decoded_lossily() {
        let map = serialize(&[(b"a", b"ok"), (b"x-bad", b"\xff\xfeok")]);
        let h = Headers::from_map(map);
        assert_eq!(h.pairs(), [("a", "ok"), ("x-bad", "\u{fffd}\u{fffd}ok")]);
        // Sizes that cut a character: each side decoded lossily, nothing read across the cut unchecked.
        let mut map = serialize(&[("é".as_bytes(), b"")]);
        map[4..8].copy_from_slice(&1u32.to_le_bytes()); // the name: the first byte of "é"
        map[8..12].copy_from_slice(&1u32.to_le_bytes()); // the value: from the byte after the supposed NUL
        let h = Headers::from_map(map.clone());
        assert_eq!(h.to_vec(), lossy_pairs(&map));
        assert_eq!(h.pairs(), [("\u{fffd}", "\0")]);
    }

    #[test]
    fn a_malformed_map_ends_at_its_last_whole_pair() {
        let map = serialize(&[(b"a", b"1"), (b"b", b"22")]);
        // Cut inside the second pair's value.
        let h = Headers::from_map(map[..map.len() - 2].to_vec());
        assert_eq!(h.pairs(), [("a", "1")]);
        // A count larger than the map can hold.
        let mut huge = map.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Headers::from_map(huge).len() <= 1);
        assert!(Headers::from_map(vec![1, 0]).is_empty());
    }

    proptest! {
        #[test]
        fn a_map_reads_as_its_pairs_decoded_lossily(
            pairs in prop::collection::vec((prop::collection::vec(any::<u8>(), 0..12), prop::collection::vec(any::<u8>(), 0..12)), 0..8),
            ascii in any::<bool>(),
        ) {
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = if ascii {
                pairs.into_iter().map(|(k, v)| (k.into_iter().map(|b| b & 0x7f).collect(), v.into_iter().map(|b| b & 0x7f).collect())).collect()
            } else {
                pairs
            };
            let borrowed: Vec<(&[u8], &[u8])> = pairs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
            let map = serialize(&borrowed);
            let want: Vec<(String, String)> =
                pairs.iter().map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into_owned())).collect();
            prop_assert_eq!(Headers::from_map(map).to_vec(), want);
        }

        #[test]
        fn any_bytes_read_as_their_spans_decoded_lossily(map in prop::collection::vec(any::<u8>(), 0..64), count in 0u32..6) {
            // A plausible count, so that pairs are found in random bytes.
            let mut map = map;
            if map.len() >= 4 {
                map[..4].copy_from_slice(&count.to_le_bytes());
            }
            let len = map.len();
            for i in (4..len).step_by(4).take(2 * count as usize) {
                map[i..(i + 4).min(len)].iter_mut().for_each(|b| *b %= 4);
            }
            prop_assert_eq!(Headers::from_map(map.clone()).to_vec(), lossy_pairs(&map));
        }
    }
}
