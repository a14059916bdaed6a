//! Which operations of a document become tools: include and exclude lists by tag, operation and path.

/// A set of operations, named by tag, by operationId (or `METHOD /path`), or by path pattern (`*` matches
/// any run of characters, so `/repos/*` covers everything below `/repos/`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    pub tags: Vec<String>,
    pub operations: Vec<String>,
    pub paths: Vec<String>,
}

/// What a selection looks at in one operation.
pub struct OperationRef<'a> {
    pub tags: &'a [&'a str],
    pub operation_id: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
}

impl Selection {
    /// An empty selection names nothing (and, as an include list, means "everything").
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.operations.is_empty() && self.paths.is_empty()
    }

    /// Whether the operation is named by any entry of the selection.
    pub fn matches(&self, op: &OperationRef<'_>) -> bool {
        self.entries().any(|e| e.matches(op))
    }

    /// Each entry on its own, so entries that name nothing can be reported.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'_>> {
        let tags = self.tags.iter().map(|t| Entry::Tag(t));
        let ops = self.operations.iter().map(|o| Entry::Operation(o));
        tags.chain(ops).chain(self.paths.iter().map(|p| Entry::Path(p)))
    }
}

/// One entry of a selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entry<'a> {
    Tag(&'a str),
    Operation(&'a str),
    Path(&'a str),
}

impl Entry<'_> {
    pub fn matches(&self, op: &OperationRef<'_>) -> bool {
        match *self {
            Entry::Tag(t) => op.tags.contains(&t),
            Entry::Operation(o) => {
                Some(o) == op.operation_id
                    || o.eq_ignore_ascii_case(&format!("{} {}", op.method.to_ascii_uppercase(), op.path))
            }
            Entry::Path(p) => glob(p, op.path),
        }
    }
}

impl std::fmt::Display for Entry<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Tag(t) => write!(f, "tag '{t}'"),
            Entry::Operation(o) => write!(f, "operation '{o}'"),
            Entry::Path(p) => write!(f, "path '{p}'"),
        }
    }
}

/// `*` matches any run of characters (slashes included), as policy rules match names.
pub use crate::admission::policy::glob;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("/repos/*", "/repos/{owner}/{repo}"));
        assert!(glob("*", ""));
        assert!(glob("/pets", "/pets"));
        assert!(!glob("/pets", "/pets/{id}"));
        assert!(glob("/pets*", "/pets/{id}"));
        assert!(glob("*/issues", "/repos/{o}/{r}/issues"));
        assert!(!glob("*/issues", "/repos/{o}/{r}/issues/{n}"));
    }

    #[test]
    fn matches_by_tag_id_key_and_path() {
        let op = OperationRef { tags: &["pets"], operation_id: Some("listPets"), method: "get", path: "/pets" };
        let by = |tags: &[&str], ops: &[&str], paths: &[&str]| Selection {
            tags: tags.iter().map(|s| s.to_string()).collect(),
            operations: ops.iter().map(|s| s.to_string()).collect(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
        };
        assert!(by(&["pets"], &[], &[]).matches(&op));
        assert!(by(&[], &["listPets"], &[]).matches(&op));
        assert!(by(&[], &["GET /pets"], &[]).matches(&op));
        assert!(by(&[], &[], &["/p*"]).matches(&op));
        assert!(!by(&["users"], &["other"], &["/users*"]).matches(&op));
        assert!(Selection::default().is_empty());
    }
}
