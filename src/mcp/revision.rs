//! MCP protocol revisions, as an ordered type: features are gated by comparing revisions, never strings.
//!
//! Two eras: the legacy revisions (2024-11-05 .. 2025-11-25) are reached through the `initialize` handshake
//! and live in a session; 2026-07-28 is stateless, each request naming its revision in `_meta`.

use std::fmt;

/// A revision this gateway speaks, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Revision {
    V2024_11_05,
    V2025_03_26,
    V2025_06_18,
    V2025_11_25,
    V2026_07_28,
}

impl Revision {
    /// Every revision served, oldest first (what `server/discover` lists as `supportedVersions`).
    pub const ALL: [Revision; 5] = [
        Revision::V2024_11_05,
        Revision::V2025_03_26,
        Revision::V2025_06_18,
        Revision::V2025_11_25,
        Revision::V2026_07_28,
    ];
    /// The newest revision of the handshake era: what `initialize` answers a client asking for one it
    /// does not know.
    pub const LATEST_LEGACY: Revision = Revision::V2025_11_25;

    pub fn parse(text: &str) -> Option<Revision> {
        Revision::ALL.into_iter().find(|r| r.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Revision::V2024_11_05 => "2024-11-05",
            Revision::V2025_03_26 => "2025-03-26",
            Revision::V2025_06_18 => "2025-06-18",
            Revision::V2025_11_25 => "2025-11-25",
            Revision::V2026_07_28 => "2026-07-28",
        }
    }

    /// Served without `initialize` and sessions: the request carries its revision and the client's
    /// capabilities in `_meta`.
    pub fn is_stateless(self) -> bool {
        self >= Revision::V2026_07_28
    }

    /// JSON-RPC batches exist in 2024-11-05 and 2025-03-26 and were removed in 2025-06-18.
    pub fn allows_batch(self) -> bool {
        self <= Revision::V2025_03_26
    }

    /// The revision `initialize` settles on: the client's, if it is one of the handshake era, else the
    /// newest of that era.
    pub fn negotiate(requested: Option<&str>) -> Revision {
        requested.and_then(Revision::parse).filter(|r| !r.is_stateless()).unwrap_or(Revision::LATEST_LEGACY)
    }

    /// The `supportedVersions` of `server/discover`, and of an unsupported-version error.
    pub fn all_names() -> Vec<&'static str> {
        let mut out = Vec::with_capacity(Revision::ALL.len());
        for r in Revision::ALL {
            out.push(r.as_str());
        }
        out
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordered_parsed_and_negotiated() {
        for r in Revision::ALL {
            assert_eq!(Revision::parse(r.as_str()), Some(r));
        }
        assert!(Revision::V2024_11_05 < Revision::V2026_07_28);
        assert!(Revision::V2025_03_26.allows_batch() && !Revision::V2025_06_18.allows_batch());
        assert!(Revision::V2026_07_28.is_stateless() && !Revision::V2025_11_25.is_stateless());
        assert_eq!(Revision::negotiate(Some("2025-03-26")), Revision::V2025_03_26);
        assert_eq!(Revision::negotiate(Some("1999-01-01")), Revision::V2025_11_25);
        assert_eq!(Revision::negotiate(Some("2026-07-28")), Revision::V2025_11_25, "not through initialize");
        assert_eq!(Revision::negotiate(None), Revision::V2025_11_25);
    }
}
