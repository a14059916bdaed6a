//! A request's headers as the host reads them: the text of every name and value in one buffer, each pair a
//! span of it.
//!
//! The host builds one per request under the prefix. As owned pairs, `Vec<(String, String)>`, that was two
//! allocations per header (26 for a dozen headers) and as many frees when the request ended: about a third
//! of what the module ran for a proxied call. This holds any number of headers in two.

/// A request's headers, in the order they came; names as the host gives them (lower-case).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    text: String,
    /// Per pair: where its name starts, where its name ends and its value starts, where its value ends.
    spans: Vec<[usize; 3]>,
}

/// No headers (a borrowed default for callers that have none).
pub const NONE: &Headers = &Headers::new();

impl Headers {
    pub const fn new() -> Headers {
        Headers { text: String::new(), spans: Vec::new() }
    }

    /// Room for `pairs` headers of `bytes` bytes of text together, allocated once.
    pub fn with_capacity(pairs: usize, bytes: usize) -> Headers {
        Headers { text: String::with_capacity(bytes), spans: Vec::with_capacity(pairs) }
    }

    /// Adds a header after the others (a name already there keeps its earlier values).
    pub fn push(&mut self, name: &str, value: &str) {
        let start = self.text.len();
        self.text.push_str(name);
        let mid = self.text.len();
        self.text.push_str(value);
        self.spans.push([start, mid, self.text.len()]);
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The name and value of each header, in order.
    pub fn iter(&self) -> Iter<'_> {
        Iter { text: &self.text, spans: self.spans.iter() }
    }

    /// The headers as borrowed pairs, for code that takes a slice of them (computing edits).
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

/// The iterator of [`Headers::iter`].
#[derive(Debug, Clone)]
pub struct Iter<'a> {
    text: &'a str,
    spans: std::slice::Iter<'a, [usize; 3]>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let [start, mid, end] = *self.spans.next()?;
        // The spans are this buffer's own, on the boundaries `push` wrote: never empty by mistake.
        Some((self.text.get(start..mid).unwrap_or(""), self.text.get(mid..end).unwrap_or("")))
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn built_from_pairs_as_from_pushes() {
        let owned: Headers = vec![("a".to_string(), "1".to_string()), ("b".to_string(), "2".to_string())].into();
        let borrowed: Headers = [("a", "1"), ("b", "2")].into_iter().collect();
        assert_eq!(owned, borrowed);
        assert_eq!(owned.pairs(), [("a", "1"), ("b", "2")]);
        assert!(NONE.is_empty() && NONE.iter().next().is_none());
        assert!(!owned.is_empty());
    }

    #[test]
    fn two_allocations_hold_any_number_of_headers() {
        let mut h = Headers::with_capacity(12, 400);
        let (text, spans) = (h.text.as_ptr(), h.spans.as_ptr());
        for i in 0..12 {
            h.push("x-header-name", if i % 2 == 0 { "a value of some length" } else { "" });
        }
        // Nothing grew: the two buffers are the ones allocated at first.
        assert_eq!((h.text.as_ptr(), h.spans.as_ptr()), (text, spans));
        assert_eq!(h.iter().filter(|(_, v)| v.is_empty()).count(), 6);
    }
}
