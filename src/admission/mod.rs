//! Admission: who calls ([`Caller`]) and whether it may call this server at all, decided from the request
//! head before the exchange starts and before anything goes upstream.
//!
//! Identities come from (first that applies): an API key of a configured consumer (`keyAuth`, Higress's
//! key-auth shape), the claims Envoy's `jwt_authn` filter verified (`jwtAuth`; signatures are Envoy's
//! business, never ours), or a Higress auth plugin's consumer header (`consumerHeader`, trusted only when
//! configured). Per server, `auth` says whether anonymous callers are admitted, which scopes a caller needs,
//! and makes the server an OAuth 2.1 resource server (RFC 9728 metadata, RFC 8707 audience, RFC 6750
//! challenges). [`policy`] then decides per tool, prompt and resource.
//!
//! Credentials read here never go upstream: the gateway builds upstream requests from scratch (REST tools,
//! `dispatch: route`, proxied servers keep only the MCP headers), unless the server passes them explicitly.

pub mod claims;
pub mod policy;
mod read;

use crate::caller::Caller;
use crate::error::GatewayError;
use crate::transport::RequestHead;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fmt;

/// Where RFC 9728 serves protected-resource metadata: this, then the resource's path.
pub const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// Plugin-level identity settings, as written.
#[derive(Debug, Clone, Default)]
pub struct AdmissionConfig {
    pub consumers: Option<Value>,
    pub key_auth: Option<Value>,
    pub jwt_auth: Option<Value>,
    pub consumer_header: Option<String>,
}

/// One `consumers` entry, as written.
struct ConsumerConfig {
    name: String,
    /// The consumer's API key (`keyAuth`).
    credential: Option<String>,
    /// Scopes the consumer has whatever its credential (rules and `auth.scopes` read them).
    scopes: Vec<String>,
    /// `{server: credential}`: this consumer's own upstream credential, instead of the server's shared one.
    upstream_credentials: HashMap<String, String>,
}

impl ConsumerConfig {
    fn read(v: &Value, field: &str) -> Result<ConsumerConfig, FieldError> {
        let m = read::object(v, field, &["name", "credential", "scopes", "upstreamCredentials"])?;
        let name = read::string(m, "name", field)?.ok_or_else(|| (format!("{field}.name"), "is required".into()))?;
        let mut upstream_credentials = HashMap::new();
        if let Some(u) = m.get("upstreamCredentials") {
            let f = format!("{field}.upstreamCredentials");
            let u = u.as_object().ok_or_else(|| (f.clone(), "must map server names to credentials".to_string()))?;
            for (server, c) in u {
                let c = c.as_str().ok_or_else(|| (format!("{f}.{server}"), "must be a string".to_string()))?;
                upstream_credentials.insert(server.clone(), c.to_string());
            }
        }
        Ok(ConsumerConfig {
            name,
            credential: read::string(m, "credential", field)?,
            scopes: read::strings(m, "scopes", field)?,
            upstream_credentials,
        })
    }
}

/// A configured consumer (its API key is the key of [`Admission`]'s index, never kept here).
struct Consumer {
    name: String,
    scopes: Vec<String>,
    upstream: HashMap<String, String>,
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Consumer({}, {:?}, <{} upstream credentials>)", self.name, self.scopes, self.upstream.len())
    }
}

/// Where `jwt_authn`'s verified payload is.
#[derive(Debug, Clone)]
pub struct JwtAuth {
    pub namespace: String,
    pub payload_key: String,
    consumer_claim: String,
}

/// Plugin-level identities, compiled: API keys indexed, consumers by name.
#[derive(Default)]
pub struct Admission {
    consumers: Vec<Consumer>,
    by_key: HashMap<String, usize>,
    by_name: HashMap<String, usize>,
    /// Some consumer has an upstream credential of its own: else no call looks its consumer up by name.
    own_upstream: bool,
    keys: Vec<String>,
    in_header: bool,
    in_query: bool,
    pub jwt: Option<JwtAuth>,
    consumer_header: Option<String>,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Admission({:?}, keys {:?}, jwt {:?}, header {:?})",
            self.consumers, self.keys, self.jwt, self.consumer_header
        )
    }
}

use read::FieldError;

impl Admission {
    /// Compiles the plugin-level settings; `servers` are the server names upstream credentials may name.
    pub fn compile(cfg: &AdmissionConfig, servers: &[&str]) -> Result<Admission, FieldError> {
        let mut a = Admission::default();
        let consumers: Vec<ConsumerConfig> = match &cfg.consumers {
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, c) in items.iter().enumerate() {
                    out.push(ConsumerConfig::read(c, &format!("consumers[{i}]"))?);
                }
                out
            }
            Some(_) => return Err(crate::fields::pair("consumers", "must be a list")),
            None => Vec::new(),
        };
        for (i, c) in consumers.into_iter().enumerate() {
            let field = |f: &str| format!("consumers[{i}].{f}");
            if c.name.is_empty() || !crate::upstream::is_safe_header_value(&c.name) {
                return Err((field("name"), "must be a non-empty name without control characters".into()));
            }
            if a.by_name.contains_key(&c.name) {
                return Err((field("name"), format!("'{}' is declared twice", c.name)));
            }
            if let Some(key) = &c.credential {
                if key.is_empty() || !crate::upstream::is_safe_header_value(key) {
                    return Err((field("credential"), "must be a non-empty key without control characters".into()));
                }
                if a.by_key.insert(key.clone(), a.consumers.len()).is_some() {
                    return Err((field("credential"), "is the credential of another consumer too".into()));
                }
            }
            for (server, value) in &c.upstream_credentials {
                if !servers.contains(&server.as_str()) {
                    return Err((field(&format!("upstreamCredentials.{server}")), "names no configured server".into()));
                }
                if value.is_empty() || !crate::upstream::is_safe_header_value(value) {
                    return Err((
                        field(&format!("upstreamCredentials.{server}")),
                        "must be a non-empty credential without control characters".into(),
                    ));
                }
            }
            a.by_name.insert(c.name.clone(), a.consumers.len());
            a.own_upstream |= !c.upstream_credentials.is_empty();
            a.consumers.push(Consumer { name: c.name, scopes: c.scopes, upstream: c.upstream_credentials });
        }
        if let Some(v) = &cfg.key_auth {
            let m = read::object(v, "keyAuth", &["keys", "inHeader", "inQuery"])?;
            let keys = read::strings(m, "keys", "keyAuth")?;
            let in_header = read::boolean(m, "inHeader", "keyAuth")?.unwrap_or(true);
            let in_query = read::boolean(m, "inQuery", "keyAuth")?.unwrap_or(false);
            if keys.is_empty() || keys.iter().any(|n| !crate::upstream::is_token(n)) {
                return Err(crate::fields::pair(
                    "keyAuth.keys",
                    "must list one or more header or query parameter names",
                ));
            }
            if !in_header && !in_query {
                return Err(crate::fields::pair("keyAuth.inHeader", "inHeader or inQuery must be true"));
            }
            if a.by_key.is_empty() {
                return Err(crate::fields::pair("keyAuth", "no consumer has a credential (consumers[].credential)"));
            }
            for n in keys {
                a.keys.push(n.to_ascii_lowercase());
            }
            (a.in_header, a.in_query) = (in_header, in_query);
        } else if !a.by_key.is_empty() {
            return Err(crate::fields::pair("keyAuth", "consumers have credentials: say where clients present them"));
        }
        if let Some(v) = &cfg.jwt_auth {
            let m = read::object(v, "jwtAuth", &["payloadKey", "consumerClaim", "namespace"])?;
            let payload_key = read::string(m, "payloadKey", "jwtAuth")?.unwrap_or_default();
            if payload_key.is_empty() {
                return Err(crate::fields::pair("jwtAuth.payloadKey", "must name jwt_authn's payload_in_metadata"));
            }
            a.jwt = Some(JwtAuth {
                namespace: read::string(m, "namespace", "jwtAuth")?.unwrap_or_else(|| claims::NAMESPACE.into()),
                payload_key,
                consumer_claim: read::string(m, "consumerClaim", "jwtAuth")?.unwrap_or_else(|| "sub".into()),
            });
        }
        if let Some(h) = &cfg.consumer_header {
            if !crate::upstream::is_token(h) {
                return Err(("consumerHeader".into(), format!("'{h}' is not a header name")));
            }
            a.consumer_header = Some(h.to_ascii_lowercase());
        }
        Ok(a)
    }

    /// Whether any way of identifying callers is configured.
    pub fn identifies(&self) -> bool {
        !self.keys.is_empty() || self.jwt.is_some() || self.consumer_header.is_some()
    }

    /// The caller of a request. A presented API key that no consumer has is refused (not taken as
    /// anonymous); a request with no identity at all is the anonymous caller, which [`ServerAuth::admit`]
    /// may refuse.
    pub fn identify(&self, head: &RequestHead) -> Result<Caller, GatewayError> {
        for key in &self.keys {
            // The header is read in place (no copy); only a key in the query is decoded into a string.
            let presented: Option<std::borrow::Cow<'_, str>> =
                if self.in_header { head.header(key).map(std::borrow::Cow::Borrowed) } else { None }.or_else(|| {
                    if self.in_query {
                        query_param(&head.path, key).map(std::borrow::Cow::Owned)
                    } else {
                        None
                    }
                });
            if let Some(value) = presented {
                return match self.by_key.get(value.trim()) {
                    // The key's consumer by index: no second lookup by name.
                    Some(i) => Ok(self.consumers.get(*i).map_or_else(Caller::anonymous, |c| Caller {
                        consumer: Some(c.name.clone()),
                        scopes: c.scopes.clone(),
                        claims: Map::new(),
                    })),
                    None => Err(GatewayError::Unauthenticated {
                        message: format!("Unauthorized: the API key in '{key}' is not valid"),
                        challenge: None,
                    }),
                };
            }
        }
        if let (Some(jwt), Some(claims)) = (&self.jwt, &head.jwt) {
            let consumer = match claims.get(&jwt.consumer_claim) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            let scopes = token_scopes(claims);
            let mut caller = match &consumer {
                Some(name) => self.caller_of(name, scopes, claims.clone()),
                None => Caller { consumer: None, scopes, claims: claims.clone() },
            };
            caller.consumer = consumer;
            return Ok(caller);
        }
        if let Some(name) = self.consumer_header.as_deref().and_then(|h| head.header(h)).filter(|v| !v.is_empty()) {
            return Ok(self.caller_of(name, Vec::new(), Map::new()));
        }
        Ok(Caller::anonymous())
    }

    fn caller_of(&self, name: &str, mut scopes: Vec<String>, claims: Map<String, Value>) -> Caller {
        if let Some(c) = self.by_name.get(name).map(|i| &self.consumers[*i]) {
            for s in &c.scopes {
                if !scopes.contains(s) {
                    scopes.push(s.clone());
                }
            }
        }
        Caller { consumer: Some(name.to_string()), scopes, claims }
    }

    /// The caller's own upstream credential for `server`: its consumer's (`upstreamCredentials`), else the
    /// claim the server names (`auth.upstreamCredentialClaim`).
    pub fn upstream_credential(&self, server: &ServerAuth, server_name: &str, caller: &Caller) -> Option<String> {
        let consumer = caller.consumer.as_deref().filter(|_| self.own_upstream);
        let configured = consumer
            .and_then(|c| self.by_name.get(c))
            .and_then(|i| self.consumers[*i].upstream.get(server_name).cloned());
        configured.or_else(|| {
            let claim = caller.claims.get(server.credential_claim.as_deref()?)?.as_str()?;
            crate::upstream::is_safe_header_value(claim).then(|| claim.to_string())
        })
    }
}

/// The scopes of a token: `scope` (space-separated, RFC 8693/9068) or `scp` (a list or a string).
fn token_scopes(claims: &Map<String, Value>) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["scope", "scp"] {
        match claims.get(key) {
            Some(Value::String(s)) => out.extend(s.split(' ').filter(|p| !p.is_empty()).map(str::to_string)),
            Some(Value::Array(items)) => out.extend(items.iter().filter_map(Value::as_str).map(str::to_string)),
            _ => {}
        }
    }
    out
}

fn query_param(path: &str, name: &str) -> Option<String> {
    let query = path.split_once('?')?.1.split('#').next().unwrap_or("");
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode =
            |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        decode(k).eq_ignore_ascii_case(name).then(|| decode(v))
    })
}

/// A server's OAuth 2.1 resource-server settings.
#[derive(Debug, Clone)]
pub struct OAuth {
    /// The resource identifier; `None`: the server's URL as the request reaches it.
    resource: Option<String>,
    authorization_servers: Vec<String>,
    scopes_supported: Vec<String>,
    check_audience: bool,
}

/// A server's compiled `auth`: who it admits.
#[derive(Debug, Clone)]
pub struct ServerAuth {
    pub anonymous: bool,
    scopes: Vec<String>,
    pub oauth: Option<OAuth>,
    credential_claim: Option<String>,
}

impl Default for ServerAuth {
    /// No `auth`: everyone is admitted, as before admission existed.
    fn default() -> Self {
        ServerAuth { anonymous: true, scopes: Vec::new(), oauth: None, credential_claim: None }
    }
}

/// Where the server is, as a client reached it: for the resource identifier and the metadata URL.
pub struct Place<'a> {
    pub scheme: &'a str,
    pub authority: &'a str,
    /// `{prefix}/{name}`.
    pub path: String,
}

impl Place<'_> {
    /// From a request head; an authority with characters a URL or a quoted header value cannot hold is
    /// replaced, so that nothing a client sends reaches a header unchecked.
    pub fn of<'h>(head: &'h RequestHead, path: String) -> Place<'h> {
        let authority = head.header(":authority").or(head.header("host")).unwrap_or("localhost");
        let ok = |a: &str| !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b));
        let scheme = match head.header("x-forwarded-proto").or(head.header(":scheme")) {
            Some("https") => "https",
            _ => "http",
        };
        Place { scheme, authority: if ok(authority) { authority } else { "localhost" }, path }
    }
}

impl ServerAuth {
    /// Compiles a server's `auth`; `admission` says whether callers can be identified at all.
    pub fn compile(value: Option<Value>, admission: &Admission) -> Result<ServerAuth, FieldError> {
        let Some(value) = value else { return Ok(ServerAuth::default()) };
        let m = read::object(&value, "auth", &["anonymous", "scopes", "oauth", "upstreamCredentialClaim"])?;
        let anonymous = read::boolean(m, "anonymous", "auth")?.unwrap_or(false);
        let scopes = read::strings(m, "scopes", "auth")?;
        let credential_claim = read::string(m, "upstreamCredentialClaim", "auth")?;
        if !anonymous && !admission.identifies() {
            return Err((
                "auth.anonymous".into(),
                "is false, but no caller can be identified: configure keyAuth (with consumers), jwtAuth or \
                 consumerHeader at the plugin level"
                    .into(),
            ));
        }
        if !scopes.is_empty() && !admission.identifies() {
            return Err(crate::fields::pair(
                "auth.scopes",
                "needs identified callers (keyAuth, jwtAuth or consumerHeader)",
            ));
        }
        let oauth = match m.get("oauth") {
            None => None,
            Some(o) => {
                let f = "auth.oauth";
                let o = read::object(o, f, &["resource", "authorizationServers", "scopesSupported", "checkAudience"])?;
                let authorization_servers = read::strings(o, "authorizationServers", f)?;
                let resource = read::string(o, "resource", f)?;
                if authorization_servers.is_empty() {
                    return Err(crate::fields::pair(
                        "auth.oauth.authorizationServers",
                        "must list one or more issuers",
                    ));
                }
                let url_ok = |u: &str| {
                    (u.starts_with("https://") || u.starts_with("http://"))
                        && crate::upstream::is_safe_header_value(u)
                        && !u.contains(['"', ' ', '\\'])
                };
                if let Some(bad) = authorization_servers.iter().find(|u| !url_ok(u)) {
                    return Err(("auth.oauth.authorizationServers".into(), format!("'{bad}' is not an http(s) URL")));
                }
                if let Some(r) = resource.as_deref().filter(|r| !url_ok(r)) {
                    return Err(("auth.oauth.resource".into(), format!("'{r}' is not an http(s) URL")));
                }
                if admission.jwt.is_none() {
                    return Err((
                        "auth.oauth".into(),
                        "needs jwtAuth at the plugin level: Envoy's jwt_authn verifies the tokens".into(),
                    ));
                }
                Some(OAuth {
                    resource,
                    authorization_servers,
                    scopes_supported: read::strings(o, "scopesSupported", f)?,
                    check_audience: read::boolean(o, "checkAudience", f)?.unwrap_or(true),
                })
            }
        };
        if scopes
            .iter()
            .chain(oauth.iter().flat_map(|o| &o.scopes_supported))
            .any(|s| s.is_empty() || s.contains(['"', ' ', '\\']) || !crate::upstream::is_safe_header_value(s))
        {
            return Err((
                "auth.scopes".into(),
                "scopes are non-empty and hold no spaces, quotes or backslashes".into(),
            ));
        }
        Ok(ServerAuth { anonymous, scopes, oauth, credential_claim })
    }

    /// The resource identifier of the server (RFC 8707 / RFC 9728 `resource`).
    pub fn resource(&self, place: &Place) -> String {
        match self.oauth.as_ref().and_then(|o| o.resource.clone()) {
            Some(r) => r,
            None => format!("{}://{}{}", place.scheme, place.authority, place.path),
        }
    }

    /// The URL of the server's protected-resource metadata.
    fn metadata_url(&self, place: &Place) -> String {
        match self.oauth.as_ref().and_then(|o| o.resource.as_deref()) {
            Some(r) => {
                let rest = r.split_once("://").map_or("", |(_, rest)| rest);
                let (host, path) = rest.find('/').map_or((rest, ""), |i| (&rest[..i], &rest[i..]));
                let scheme = r.split("://").next().unwrap_or("https");
                format!("{scheme}://{host}{WELL_KNOWN}{}", path.trim_end_matches('/'))
            }
            None => format!("{}://{}{WELL_KNOWN}{}", place.scheme, place.authority, place.path),
        }
    }

    /// The RFC 9728 metadata document, when the server is an OAuth resource server.
    pub fn metadata(&self, place: &Place, server: &str) -> Option<Value> {
        let o = self.oauth.as_ref()?;
        let mut doc = vec![
            ("resource", Value::from(self.resource(place))),
            ("authorization_servers", Value::from(o.authorization_servers.as_slice())),
            ("bearer_methods_supported", Value::Array(vec![Value::from("header")])),
            ("resource_name", Value::from(server)),
        ];
        if !o.scopes_supported.is_empty() {
            doc.push(("scopes_supported", Value::from(o.scopes_supported.as_slice())));
        }
        Some(crate::json::object(doc))
    }

    /// The `WWW-Authenticate` challenge of a 401 (`error`: RFC 6750's error code, if any).
    fn challenge(&self, place: &Place, error: Option<&str>) -> Option<String> {
        self.oauth.as_ref()?;
        let mut c = format!("Bearer resource_metadata=\"{}\"", self.metadata_url(place));
        if !self.scopes.is_empty() {
            c.push_str(&format!(", scope=\"{}\"", self.scopes.join(" ")));
        }
        if let Some(e) = error {
            c.push_str(&format!(", error=\"{e}\""));
        }
        Some(c)
    }

    /// Whether `caller` may use the server at all: identified (unless anonymous callers are admitted), a
    /// token meant for this resource (RFC 8707 audience), with every required scope. `place` is worked out
    /// only for a refusal's challenge or an audience check: an admitted API-key consumer never needs it (its
    /// four header lookups and its path were most of what admission cost such a call).
    pub fn admit<'p>(&self, caller: &Caller, place: impl Fn() -> Place<'p>) -> Result<(), GatewayError> {
        if caller.consumer.is_none() && caller.claims.is_empty() {
            if self.anonymous {
                return Ok(());
            }
            return Err(GatewayError::Unauthenticated {
                message: "Unauthorized: this server needs a credential (an API key or a bearer token)".into(),
                challenge: self.challenge(&place(), None),
            });
        }
        if self.oauth.as_ref().is_some_and(|o| o.check_audience) && !caller.claims.is_empty() {
            let place = place();
            let place = &place;
            let resource = self.resource(place);
            let meant = match caller.claims.get("aud") {
                Some(Value::String(a)) => *a == resource,
                Some(Value::Array(items)) => items.iter().any(|a| a.as_str() == Some(&resource)),
                _ => false,
            };
            if !meant {
                return Err(GatewayError::Unauthenticated {
                    message: format!("Unauthorized: the token's audience (aud) does not include {resource}"),
                    challenge: self.challenge(place, Some("invalid_token")),
                });
            }
        }
        let mut missing: Vec<&str> = Vec::new();
        for s in &self.scopes {
            if !caller.scopes.contains(s) {
                missing.push(s);
            }
        }
        if !missing.is_empty() {
            return Err(GatewayError::InsufficientScope {
                message: format!("Forbidden: this server needs the scope(s) {}", missing.join(" ")),
                challenge: self.challenge(&place(), Some("insufficient_scope")),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
