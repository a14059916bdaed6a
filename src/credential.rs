//! Upstream credentials: a tool's `requestTemplate.security` names one of the server's `securitySchemes`,
//! and the gateway adds that credential to the upstream request. Arguments never supply it, and its value
//! is kept out of `Debug` output so it cannot reach a log.

use crate::config::{SecurityRef, SecurityScheme};
use crate::upstream::{is_forbidden_header, is_safe_header_value, is_token};
use base64::Engine;
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
            _ => Err(("scheme".into(), "must be basic or bearer for type http".into())),
        },
        "apiKey" => {
            let name =
                s.name.clone().filter(|n| !n.is_empty()).ok_or(("name".into(), "is required for apiKey".into()))?;
            match s.location.as_deref() {
                Some("header") if is_token(&name) && !is_forbidden_header(&name) => {
                    Ok(Place::Header(name.to_ascii_lowercase()))
                }
                Some("header") => Err(("name".into(), format!("'{name}' cannot be set as a header"))),
                Some("query") => Ok(Place::Query(name)),
                Some("cookie") if is_token(&name) => Ok(Place::Cookie(name)),
                _ => Err(("in".into(), "must be header, query or cookie for apiKey".into())),
            }
        }
        other => Err(("type".into(), format!("'{other}' is not supported (http and apiKey are)"))),
    }
}

impl Credential {
    /// Resolves a tool's reference against the server's schemes.
    pub fn compile(schemes: &[SecurityScheme], wanted: &SecurityRef) -> Result<Credential, String> {
        let scheme = schemes
            .iter()
            .find(|s| s.id == wanted.id)
            .ok_or_else(|| format!("no securitySchemes entry has id '{}'", wanted.id))?;
        let place = place_of(scheme).map_err(|(f, m)| format!("securitySchemes '{}' {f}: {m}", scheme.id))?;
        let raw = wanted.credential.as_deref().unwrap_or(&scheme.default_credential);
        if !is_safe_header_value(raw) {
            return Err("the credential contains CR, LF or another control character".into());
        }
        let value = (!raw.is_empty()).then(|| match scheme.scheme.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("basic") if scheme.kind == "http" => {
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
            }
            Some("bearer") if scheme.kind == "http" => format!("Bearer {raw}"),
            _ => raw.to_string(),
        });
        Ok(Credential { scheme: scheme.id.clone(), place, value })
    }

    /// Whether the operator left the credential empty (requests then go out without one).
    pub fn is_missing(&self) -> bool {
        self.value.is_none()
    }

    /// Adds the credential to a request being built, replacing any header of the same name.
    pub fn apply(
        &self,
        headers: &mut Vec<(String, String)>,
        query: &mut Vec<(String, String)>,
        cookies: &mut Vec<String>,
    ) {
        let Some(value) = &self.value else { return };
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

    fn applied(s: SecurityScheme, own: Option<&str>) -> (Pairs, Pairs, Vec<String>) {
        let c = Credential::compile(&[s], &SecurityRef { id: "s".into(), credential: own.map(Into::into) }).unwrap();
        let (mut h, mut q, mut k) = (vec![("authorization".to_string(), "from-template".to_string())], vec![], vec![]);
        c.apply(&mut h, &mut q, &mut k);
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
    fn refuses_bad_schemes_and_hides_secrets() {
        assert!(validate_schemes(&[scheme("oauth2", None, None, None, "")]).is_err());
        assert!(validate_schemes(&[scheme("apiKey", None, Some("header"), Some("Host"), "")]).is_err());
        assert!(validate_schemes(&[scheme("http", Some("bearer"), None, None, "a\r\nb")]).is_err());
        let two = [scheme("http", Some("basic"), None, None, ""), scheme("http", Some("basic"), None, None, "")];
        assert_eq!(validate_schemes(&two).unwrap_err().0, "securitySchemes[1].id");
        let c = Credential::compile(
            &[scheme("http", Some("bearer"), None, None, "s3cret")],
            &SecurityRef { id: "s".into(), credential: None },
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("s3cret"));
        assert!(Credential::compile(&[], &SecurityRef { id: "x".into(), credential: None }).is_err());
    }
}
