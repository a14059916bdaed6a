//! Changes to a header map that Envoy already holds, as the core decides them and the host applies them
//! one hostcall each: only the headers that change are written. Replacing the whole map instead costs a
//! serialisation in the VM, a copy into Envoy, and in Envoy the removal of every header and the copy of
//! every new one, for a request or answer of which two or three headers change.

use crate::headers::Headers;
use std::borrow::Cow;

/// A header's name in an [`Edit`]: most are the gateway's own (`:path`, the router's timeout), borrowed
/// for good instead of copied for every request.
pub type Name = Cow<'static, str>;

/// One change to a header map (names lowercase, as Envoy keeps them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// The header gets this one value (added if missing, replaced if it has one).
    Set(Name, String),
    /// One more value of a header that has several.
    Add(Name, String),
    /// The header goes, with all its values.
    Remove(Name),
}

/// The edits that turn the map `current` into `wanted` (pairs in order, a name possibly repeated): a
/// header whose values are the same in both is left alone; one wanted once is set; one wanted several
/// times, or over several values, is removed and added again value by value; one not wanted is removed.
/// `current` is walked where it is (a request head), not collected into pairs first.
pub fn diff(current: &Headers, wanted: &[(&str, &str)]) -> Vec<Edit> {
    let mut edits = Vec::new();
    for (i, (name, _)) in wanted.iter().enumerate() {
        if wanted[..i].iter().any(|(n, _)| n == name) {
            continue; // handled with its first value
        }
        let values = || wanted.iter().filter(|(n, _)| n == name).map(|(_, v)| *v);
        if values().eq(values_of(current, name)) {
            continue;
        }
        let mut values = values();
        // Set only over a single value: hosts differ on whether a set replaces every value of a name.
        let several_now = values_of(current, name).nth(1).is_some();
        match (values.next(), values.next()) {
            (Some(only), None) if !several_now => edits.push(Edit::Set(name.to_string().into(), only.to_string())),
            _ => {
                edits.push(Edit::Remove(name.to_string().into()));
                edits.extend(
                    wanted
                        .iter()
                        .filter(|(n, _)| n == name)
                        .map(|(n, v)| Edit::Add(n.to_string().into(), v.to_string())),
                );
            }
        }
    }
    for (i, (name, _)) in current.iter().enumerate() {
        let seen = current.iter().take(i).any(|(n, _)| n == name);
        if !seen && !wanted.iter().any(|(n, _)| *n == name) {
            edits.push(Edit::Remove(name.to_string().into()));
        }
    }
    edits
}

/// The values of header `name` in `map`, in order.
fn values_of<'a>(map: &'a Headers, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    map.iter().filter(move |(n, _)| *n == name).map(|(_, v)| v)
}

/// Applies `edits` to a map held as pairs, as Envoy applies them: what the host's map becomes (the tests'
/// check, and the answer a re-initialisation sends again, which the client gets as a whole).
pub fn apply(map: &mut Vec<(String, String)>, edits: &[Edit]) {
    for e in edits {
        match e {
            Edit::Set(n, v) => {
                map.retain(|(k, _)| k != n);
                map.push((n.to_string(), v.clone()));
            }
            Edit::Add(n, v) => map.push((n.to_string(), v.clone())),
            Edit::Remove(n) => map.retain(|(k, _)| k != n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sorted(mut m: Vec<(String, String)>) -> Vec<(String, String)> {
        m.sort();
        m
    }

    #[test]
    fn only_what_changes_is_written() {
        let current = [
            (":method", "POST"),
            (":path", "/mcp"),
            ("content-type", "application/json"),
            ("authorization", "Bearer secret"),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
        ];
        let wanted = [(":method", "POST"), (":path", "/backend"), ("content-type", "application/json"), ("x-t", "5")];
        let edits = diff(&current.into_iter().collect(), &wanted);
        assert_eq!(
            edits,
            vec![
                Edit::Set(":path".into(), "/backend".into()),
                Edit::Set("x-t".into(), "5".into()),
                Edit::Remove("authorization".into()),
                Edit::Remove("cookie".into()),
            ]
        );
        let mut map = pairs(&current);
        apply(&mut map, &edits);
        assert_eq!(sorted(map), sorted(pairs(&wanted)));
    }

    #[test]
    fn repeated_headers_are_written_value_by_value() {
        let current = [("a", "1"), ("b", "x")];
        let wanted = [("a", "1"), ("a", "2"), ("b", "x")];
        let edits = diff(&current.into_iter().collect(), &wanted);
        assert_eq!(
            edits,
            vec![Edit::Remove("a".into()), Edit::Add("a".into(), "1".into()), Edit::Add("a".into(), "2".into())]
        );
        let mut map = pairs(&current);
        apply(&mut map, &edits);
        assert_eq!(sorted(map), sorted(pairs(&wanted)));
        // The same map wanted again: nothing to write.
        assert!(diff(&wanted.into_iter().collect(), &wanted).is_empty());
        // Several values down to one: removed, then added once.
        let edits = diff(&wanted.into_iter().collect(), &[("a", "2"), ("b", "x")]);
        assert_eq!(edits, vec![Edit::Remove("a".into()), Edit::Add("a".into(), "2".into())]);
    }
}
