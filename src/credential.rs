//! Credentials, as Higress's security schemes model them (`auth_utils.go`): a server declares
//! `securitySchemes`; a tool names one for the upstream (`requestTemplate.security`, else the server's
//! `defaultUpstreamSecurity`) and one for its clients (`security`, else `defaultDownstreamSecurity`).
//!
//! - Upstream ([`Credential`]): the gateway adds the credential to the upstream request: the client's, when
//!   the downstream requirement says `passthrough: true` and the client presented one; else the
//!   requirement's `credential`; else the scheme's `defaultCredential`; else none (the request goes without,
//!   and a 401/403 answer says that the operator must set one).
//! - Downstream ([`Downstream`]): the client's credential is read from where its scheme says (an
//!   `Authorization` Bearer or Basic token, an apiKey header or query parameter). It never reaches an
//!   upstream by itself: this gateway never forwards client headers (Higress removes the one it read from
//!   the request it forwards), and only `passthrough` makes it the upstream credential.
//! - `passthroughAuthHeader: true` (server) copies the client's `Authorization` upstream when no downstream
//!   http scheme read it.
//!
//! Arguments never supply a credential; values are kept out of `Debug` output so they cannot reach a log,
//! and a value with CR, LF or another control character never becomes a header.

use crate::config::{SecurityRef, SecurityScheme};
use crate::upstream::{is_forbidden_header, is_safe_header_value, is_token};
use std::fmt;

/// Where the credential goes.
#[derive(Debug, Clone, PartialEq)]
enum Place {
    Header(String),
    Query(String),
    Cookie(String),
}

/// A compiled credential for one tool.
#[derive(Clone)]
pub struct Credential {
    /// The scheme id, for messages.
    pub scheme: String,
    place: Place,
    /// `basic` or `bearer` for an http scheme.
    http: Option<Http>,
    /// The value as sent (`Basic …`, `Bearer …`, the key); `None` when the operator left it empty.
    value: Option<String>,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.value.is_some() { "<redacted>" } else { "<not configured>" };
        write!(f, "Credential({}, {:?}, {shown})", self.scheme, self.place)
    }
}

/// Checks a server's schemes at configure time; the error names the field.
pub fn validate_schemes(schemes: &[SecurityScheme]) -> Result<(), (String, String)> {
    for (i, s) in schemes.iter().enumerate() {
        let field = |f: &str| format!("securitySchemes[{i}].{f}");
        if s.id.is_empty() {
            return Err((field("id"), "is required".into()));
        }
        if schemes[..i].iter().any(|o| o.id == s.id) {
            return Err((field("id"), format!("'{}' is declared twice", s.id)));
        }
        place_of(s).map_err(|(f, m)| (field(&f), m))?;
        if !is_safe_header_value(&s.default_credential) {
            return Err((field("defaultCredential"), "contains CR, LF or another control character".into()));
        }
    }
    Ok(())
}

/// Whether the gateway can apply a scheme; the error says which field stands in the way.
pub fn check_scheme(s: &SecurityScheme) -> Result<(), String> {
    place_of(s).map(|_| ()).map_err(|(field, why)| format!("{field}: {why}"))
}

fn place_of(s: &SecurityScheme) -> Result<Place, (String, String)> {
    match s.kind.as_str() {
        "http" => match s.scheme.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("basic" | "bearer") => Ok(Place::Header("authorization".into())),
            _ => Err(crate::fields::pair("scheme", "must be basic or bearer for type http")),
        },
        "apiKey" => {
            let name = s
                .name
                .clone()
                .filter(|n| !n.is_empty())
                .ok_or(crate::fields::pair("name", "is required for apiKey"))?;
            match s.location.as_deref() {
                Some("header") if is_token(&name) && !is_forbidden_header(&name) => {
                    Ok(Place::Header(name.to_ascii_lowercase()))
                }
                Some("header") => Err(("name".into(), format!("'{name}' cannot be set as a header"))),
                Some("query") => Ok(Place::Query(name)),
                Some("cookie") if is_token(&name) => Ok(Place::Cookie(name)),
                _ => Err(crate::fields::pair("in", "must be header, query or cookie for apiKey")),
            }
        }
        other => Err(("type".into(), format!("'{other}' is not supported (http and apiKey are)"))),
    }
}

impl Credential {
    /// Resolves an upstream requirement against the server's schemes.
    pub fn compile(schemes: &[SecurityScheme], wanted: &SecurityRef) -> Result<Credential, String> {
        if wanted.passthrough {
            return Err("passthrough belongs to the downstream requirement (the tool's `security` or the server's \
                        defaultDownstreamSecurity), which says whose credential goes upstream"
                .into());
        }
        let scheme = find(schemes, &wanted.id)?;
        let place = place_of(scheme).map_err(|(f, m)| format!("securitySchemes '{}' {f}: {m}", scheme.id))?;
        let raw = wanted.credential.as_deref().filter(|c| !c.is_empty()).unwrap_or(&scheme.default_credential);
        if !is_safe_header_value(raw) {
            return Err("the credential contains CR, LF or another control character".into());
        }
        let http = http_scheme(scheme);
        let value = (!raw.is_empty()).then(|| format_configured(http, raw));
        Ok(Credential { scheme: scheme.id.clone(), place, http, value })
    }

    /// Whether the operator left the credential empty (requests then go out without one).
    pub fn is_missing(&self) -> bool {
        self.value.is_none()
    }

    /// Adds the credential to a request being built, replacing any header of the same name: `passed`, the
    /// client's credential when a downstream requirement passes it through, else the configured one.
    pub fn apply(
        &self,
        passed: Option<&str>,
        headers: &mut Vec<(String, String)>,
        query: &mut Vec<(String, String)>,
        cookies: &mut Vec<String>,
    ) {
        let passed = passed.map(|p| match self.http {
            // Higress: the token part of the client's header, given the upstream scheme's prefix.
            Some(Http::Basic) if !p.starts_with("Basic ") => format!("Basic {p}"),
            Some(Http::Bearer) if !p.starts_with("Bearer ") => format!("Bearer {p}"),
            _ => p.to_string(),
        });
        let Some(value) = passed.as_ref().or(self.value.as_ref()) else { return };
        match &self.place {
            Place::Header(name) => {
                headers.retain(|(k, _)| k != name);
                headers.push((name.clone(), value.clone()));
            }
            Place::Query(name) => {
                // The query holds percent-encoded pairs.
                let (name, value) = (encode(name), encode(value));
                query.retain(|(k, _)| *k != name);
                query.push((name, value));
            }
            Place::Cookie(name) => cookies.push(format!("{name}={}", encode(value))),
        }
    }
}

/// The two http schemes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Http {
    Basic,
    Bearer,
}

fn http_scheme(s: &SecurityScheme) -> Option<Http> {
    match (s.kind.as_str(), s.scheme.as_deref().map(str::to_ascii_lowercase).as_deref()) {
        ("http", Some("basic")) => Some(Http::Basic),
        ("http", Some("bearer")) => Some(Http::Bearer),
        _ => None,
    }
}

/// A configured credential as sent, by Higress's rules: basic `user:password` is base64-encoded, and a basic
/// value without `:` is taken as already encoded; bearer gets its prefix; a value that has its prefix
/// already is sent as it is.
fn format_configured(http: Option<Http>, raw: &str) -> String {
    match http {
        Some(Http::Basic) if raw.starts_with("Basic ") => raw.to_string(),
        Some(Http::Basic) if raw.contains(':') => {
            format!("Basic {}", crate::b64::STANDARD.encode(raw))
        }
        Some(Http::Basic) => format!("Basic {raw}"),
        Some(Http::Bearer) if raw.starts_with("Bearer ") => raw.to_string(),
        Some(Http::Bearer) => format!("Bearer {raw}"),
        None => raw.to_string(),
    }
}

fn find<'a>(schemes: &'a [SecurityScheme], id: &str) -> Result<&'a SecurityScheme, String> {
    schemes.iter().find(|s| s.id == id).ok_or_else(|| format!("no securitySchemes entry has id '{id}'"))
}

/// Where a client presents its credential.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// `Authorization: Basic …` or `Bearer …`: the token after this prefix (lower-case, matched in any case).
    Authorization(&'static str),
    /// The whole `Authorization` header, for `passthroughAuthHeader`.
    WholeAuthorization,
    /// A header, by its lower-case name.
    Header(String),
    /// A query parameter of the request's URL.
    Query(String),
    /// Not read from the request: the caller's own upstream credential that admission found (its
    /// consumer's `upstreamCredentials`, or a claim of its token), used instead of the configured one.
    Own,
}

/// A tool's downstream requirement: where its clients present their credential, and whether it goes
/// upstream.
#[derive(Debug, Clone)]
pub struct Downstream {
    pub scheme: String,
    pub source: Source,
    pub passthrough: bool,
}

impl Downstream {
    /// Resolves a downstream requirement; the schemes a client can present are Higress's: http basic or
    /// bearer, an apiKey in a header or the query.
    pub fn compile(schemes: &[SecurityScheme], wanted: &SecurityRef) -> Result<Downstream, String> {
        let scheme = find(schemes, &wanted.id)?;
        if wanted.credential.is_some() {
            return Err("credential belongs to an upstream requirement; a downstream one reads the client's".into());
        }
        let source = match (http_scheme(scheme), place_of(scheme)) {
            (Some(Http::Basic), _) => Source::Authorization("basic "),
            (Some(Http::Bearer), _) => Source::Authorization("bearer "),
            (None, Ok(Place::Header(name))) => Source::Header(name),
            (None, Ok(Place::Query(name))) => Source::Query(name),
            (None, Ok(Place::Cookie(_))) => {
                return Err(format!(
                    "securitySchemes '{}': a client's apiKey is read from a header or the query, not a cookie",
                    scheme.id
                ))
            }
            (None, Err((f, m))) => return Err(format!("securitySchemes '{}' {f}: {m}", scheme.id)),
        };
        Ok(Downstream { scheme: scheme.id.clone(), source, passthrough: wanted.passthrough })
    }

    /// The credential the client presented for this requirement, if any (a Basic header for a bearer
    /// scheme is none).
    pub fn read<'a>(&self, presented: &'a Presented) -> Option<&'a str> {
        presented.0.iter().find(|(s, _)| *s == self.source).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }
}

/// The credentials a request presented, read from its head where the server's schemes look; values are
/// secrets, never printed.
#[derive(Clone, Default, PartialEq)]
pub struct Presented(Vec<(Source, String)>);

impl fmt::Debug for Presented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources: Vec<&Source> = self.0.iter().map(|(s, _)| s).collect();
        write!(f, "Presented({sources:?}, <redacted>)")
    }
}

impl Presented {
    /// Nothing presented (a resource read, the CLI's dry run).
    pub const NONE: Presented = Presented(Vec::new());

    /// Reads `sources` from a request: `header` looks a header up by lower-case name, `path` is the request
    /// target. Values with control characters are not read.
    pub fn read<'a>(sources: &[Source], header: impl Fn(&str) -> Option<&'a str>, path: &str) -> Presented {
        let mut out = Vec::new();
        let query = path.split_once('?').map_or("", |(_, q)| q).split('#').next().unwrap_or("");
        for source in sources {
            let value = match source {
                Source::WholeAuthorization => header("authorization").map(str::to_string),
                Source::Authorization(prefix) => header("authorization").and_then(|v| {
                    let head = v.get(..prefix.len())?;
                    head.eq_ignore_ascii_case(prefix).then(|| v[prefix.len()..].trim().to_string())
                }),
                Source::Header(name) => header(name).map(str::to_string),
                Source::Query(name) => query.split('&').find_map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    (decode(k) == *name).then(|| decode(v))
                }),
                Source::Own => None,
            };
            if let Some(v) = value.filter(|v| is_safe_header_value(v)) {
                out.push((source.clone(), v));
            }
        }
        Presented(out)
    }

    /// Adds the caller's own upstream credential ([`Source::Own`]), if it has one.
    pub fn with_own(mut self, own: Option<String>) -> Presented {
        if let Some(v) = own.filter(|v| is_safe_header_value(v)) {
            self.0.push((Source::Own, v));
        }
        self
    }

    /// The caller's own upstream credential, if admission found one.
    pub fn own(&self) -> Option<&str> {
        self.0.iter().find(|(s, _)| *s == Source::Own).map(|(_, v)| v.as_str())
    }

    /// The client's whole `Authorization` header, when [`Source::WholeAuthorization`] was read.
    pub fn authorization(&self) -> Option<&str> {
        self.0.iter().find(|(s, _)| *s == Source::WholeAuthorization).map(|(_, v)| v.as_str())
    }
}

/// A query component as Go's `url.Query` reads it: `+` is a space, then percent-decoding.
fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned()
}

fn encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, crate::template::URL_COMPONENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheme(
        kind: &str,
        scheme: Option<&str>,
        location: Option<&str>,
        name: Option<&str>,
        cred: &str,
    ) -> SecurityScheme {
        SecurityScheme {
            id: "s".into(),
            kind: kind.into(),
            scheme: scheme.map(Into::into),
            location: location.map(Into::into),
            name: name.map(Into::into),
            default_credential: cred.into(),
            description: None,
        }
    }

    type Pairs = Vec<(String, String)>;

    fn reference(own: Option<&str>) -> SecurityRef {
        SecurityRef { id: "s".into(), credential: own.map(Into::into), passthrough: false }
    }

    fn applied(s: SecurityScheme, own: Option<&str>) -> (Pairs, Pairs, Vec<String>) {
        passed(s, own, None)
    }

    fn passed(s: SecurityScheme, own: Option<&str>, client: Option<&str>) -> (Pairs, Pairs, Vec<String>) {
        let c = Credential::compile(&[s], &reference(own)).unwrap();
        let (mut h, mut q, mut k) = (vec![("authorization".to_string(), "from-template".to_string())], vec![], vec![]);
        c.apply(client, &mut h, &mut q, &mut k);
        (h, q, k)
    }

    #[test]
    fn places_each_kind_of_credential() {
        let (h, _, _) = applied(scheme("http", Some("basic"), None, None, "u:p"), None);
        assert_eq!(h, [("authorization".to_string(), "Basic dTpw".to_string())]);
        let (h, _, _) = applied(scheme("http", Some("bearer"), None, None, "t"), Some("own"));
        assert_eq!(h[0].1, "Bearer own");
        let (h, _, _) = applied(scheme("apiKey", None, Some("header"), Some("X-Key"), "k"), None);
        assert!(h.contains(&("x-key".into(), "k".into())));
        let (_, q, _) = applied(scheme("apiKey", None, Some("query"), Some("api_key"), "k&1"), None);
        assert_eq!(q, [("api_key".to_string(), "k%261".to_string())], "the query holds encoded pairs");
        let (_, _, k) = applied(scheme("apiKey", None, Some("cookie"), Some("sid"), "a b"), None);
        assert_eq!(k, ["sid=a%20b"]);
        let (h, _, _) = applied(scheme("http", Some("bearer"), None, None, ""), None);
        assert_eq!(h[0].1, "from-template", "an empty credential adds nothing");
    }

    #[test]
    fn formats_credentials_as_higress_does() {
        // Basic without `:` is taken as encoded already; a value with its prefix is sent as it is.
        let (h, _, _) = applied(scheme("http", Some("basic"), None, None, "dTpw"), None);
        assert_eq!(h[0].1, "Basic dTpw");
        let (h, _, _) = applied(scheme("http", Some("basic"), None, None, "Basic dTpw"), None);
        assert_eq!(h[0].1, "Basic dTpw");
        let (h, _, _) = applied(scheme("http", Some("bearer"), None, None, "Bearer t"), None);
        assert_eq!(h[0].1, "Bearer t");
        // A passed-through credential wins over the configured one, and takes the upstream scheme's form.
        let (h, _, _) = passed(scheme("http", Some("bearer"), None, None, "mine"), None, Some("theirs"));
        assert_eq!(h[0].1, "Bearer theirs");
        let (h, _, _) = passed(scheme("http", Some("basic"), None, None, ""), None, Some("dTpw"));
        assert_eq!(h[0].1, "Basic dTpw");
        let (_, q, _) = passed(scheme("apiKey", None, Some("query"), Some("key"), "mine"), None, Some("a b"));
        assert_eq!(q, [("key".to_string(), "a%20b".to_string())]);
        let upstream_passthrough = SecurityRef { passthrough: true, ..reference(None) };
        let e = Credential::compile(&[scheme("http", Some("bearer"), None, None, "")], &upstream_passthrough);
        assert!(e.unwrap_err().contains("downstream"));
    }

    #[test]
    fn reads_what_clients_present() {
        let headers = [("authorization", "bearer  tok "), ("x-key", "k1"), ("x-bad", "a\u{7}b")];
        let header = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        let sources = [
            Source::Authorization("bearer "),
            Source::Authorization("basic "),
            Source::Header("x-key".into()),
            Source::Header("x-bad".into()),
            Source::Query("api_key".into()),
            Source::WholeAuthorization,
        ];
        let p = Presented::read(&sources, header, "/mcp-servers/s?x=1&api_key=a%2Bb+c");
        let down = |kind, place: Option<&str>, name: Option<&str>, sch: Option<&str>| {
            let s = scheme(kind, sch, place, name, "");
            Downstream::compile(&[s], &SecurityRef { passthrough: true, ..reference(None) }).unwrap()
        };
        assert_eq!(down("http", None, None, Some("bearer")).read(&p), Some("tok"));
        assert_eq!(down("http", None, None, Some("basic")).read(&p), None, "a Bearer header is no Basic credential");
        assert_eq!(down("apiKey", Some("header"), Some("X-Key"), None).read(&p), Some("k1"));
        assert_eq!(down("apiKey", Some("header"), Some("X-Bad"), None).read(&p), None, "control characters");
        assert_eq!(down("apiKey", Some("query"), Some("api_key"), None).read(&p), Some("a+b c"));
        assert_eq!(p.authorization(), Some("bearer  tok "));
        assert!(!format!("{p:?}").contains("tok") && !format!("{p:?}").contains("k1"), "{p:?}");
        let cookie = scheme("apiKey", None, Some("cookie"), Some("sid"), "");
        assert!(Downstream::compile(&[cookie], &reference(None)).is_err());
        let with_credential = reference(Some("x"));
        assert!(Downstream::compile(&[scheme("http", Some("bearer"), None, None, "")], &with_credential).is_err());
    }

    #[test]
    fn refuses_bad_schemes_and_hides_secrets() {
        assert!(validate_schemes(&[scheme("oauth2", None, None, None, "")]).is_err());
        assert!(validate_schemes(&[scheme("apiKey", None, Some("header"), Some("Host"), "")]).is_err());
        assert!(validate_schemes(&[scheme("http", Some("bearer"), None, None, "a\r\nb")]).is_err());
        let two = [scheme("http", Some("basic"), None, None, ""), scheme("http", Some("basic"), None, None, "")];
        assert_eq!(validate_schemes(&two).unwrap_err().0, "securitySchemes[1].id");
        let s = scheme("http", Some("bearer"), None, None, "s3cret");
        assert!(!format!("{s:?}").contains("s3cret"));
        let own = reference(Some("m1ne"));
        assert!(!format!("{own:?}").contains("m1ne"));
        let c = Credential::compile(&[s], &reference(None)).unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(Credential::compile(&[], &reference(None)).is_err());
    }
}
