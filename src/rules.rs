//! Per-route configurations, as Higress passes them: a `WasmPlugin`'s `matchRules` reach the plugin as a
//! `_rules_` list beside the global (`defaultConfig`) keys, each rule a whole configuration plus what it
//! matches. The selection follows wasm-go's `pkg/matcher/rule_matcher.go` (Higress's own plugins use it):
//!
//! - a rule matches by `_match_route_` (route names), `_match_domain_` (hosts; `*.example.com` is a suffix,
//!   `www.*` a prefix, anything else exact; the port is ignored), `_match_service_` (`name` or `name:port`
//!   against the route's cluster `outbound|port||name`) or `_match_route_prefix_`; a rule with routes and
//!   services needs both, otherwise one kind decides, in the order route, domain, service, route prefix;
//! - the first rule that matches wins; a request no rule matches gets the global configuration, and when
//!   there is none the plugin lets it pass untouched;
//! - a rule's configuration stands alone (the global keys are not merged into it).
//!
//! Unlike Higress (which skips what it cannot parse), every rule must be valid: an error names the rule
//! (`_rules_[1].servers...`). The host supplies the facts ([`RequestFacts`]); nothing here reads them.

use crate::config::ConfigError;
use serde_json::{Map, Value};

const RULES: &str = "_rules_";
const MATCH_ROUTE: &str = "_match_route_";
const MATCH_DOMAIN: &str = "_match_domain_";
const MATCH_SERVICE: &str = "_match_service_";
const MATCH_ROUTE_PREFIX: &str = "_match_route_prefix_";

/// What a request is matched on: its `:authority`, and Envoy's `route_name` and `cluster_name` properties.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub authority: &'a str,
    pub route_name: &'a str,
    pub cluster_name: &'a str,
}

/// A host pattern of `_match_domain_`.
#[derive(Debug, Clone, PartialEq)]
enum Host {
    Suffix(String),
    Prefix(String),
    Exact(String),
}

/// What one rule matches, by the first kind it names (wasm-go's categories).
#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Route(Vec<String>),
    RouteAndService(Vec<String>, Vec<String>),
    Domain(Vec<Host>),
    Service(Vec<String>),
    RoutePrefix(Vec<String>),
}

impl Matcher {
    fn matches(&self, facts: &RequestFacts) -> bool {
        match self {
            Matcher::Route(routes) => routes.iter().any(|r| r == facts.route_name),
            Matcher::RouteAndService(routes, services) => {
                routes.iter().any(|r| r == facts.route_name) && service_matches(services, facts.cluster_name)
            }
            Matcher::Domain(hosts) => {
                let host = strip_port(facts.authority);
                hosts.iter().any(|h| match h {
                    Host::Suffix(s) => host.ends_with(s.as_str()),
                    Host::Prefix(p) => host.starts_with(p.as_str()),
                    Host::Exact(e) => host == e,
                })
            }
            Matcher::Service(services) => service_matches(services, facts.cluster_name),
            Matcher::RoutePrefix(prefixes) => prefixes.iter().any(|p| facts.route_name.starts_with(p.as_str())),
        }
    }
}

/// `name` or `name:port` against a cluster named `outbound|port||name` (Higress's service clusters).
fn service_matches(services: &[String], cluster: &str) -> bool {
    let parts: Vec<&str> = cluster.split('|').collect();
    let [_, port, _, fqdn] = parts.as_slice() else {
        return false;
    };
    services.iter().any(|s| match s.rsplit_once(':') {
        Some((name, p)) if name == *fqdn && p == *port => true,
        _ => s == fqdn,
    })
}

/// The authority without its port; an IPv6 literal keeps its brackets (Envoy's rule).
fn strip_port(authority: &str) -> &str {
    match authority.rfind(':') {
        Some(colon) if authority.rfind(']').is_none_or(|bracket| bracket < colon) => &authority[..colon],
        _ => authority,
    }
}

/// The configurations of one plugin instance: per-route rules, in order, and the global one.
#[derive(Debug)]
pub struct Rules<T> {
    rules: Vec<(Matcher, T)>,
    global: Option<T>,
}

impl<T> Rules<T> {
    /// One configuration for every request (no `_rules_`).
    pub fn single(config: T) -> Rules<T> {
        Rules { rules: Vec::new(), global: Some(config) }
    }

    /// Splits a configuration document into its global part and its rules, and builds each with `build`
    /// (given the configuration object and the field prefix its errors must carry).
    pub fn parse(doc: Value, mut build: impl FnMut(Value) -> Result<T, ConfigError>) -> Result<Rules<T>, ConfigError> {
        let Value::Object(mut top) = doc else {
            return Err(ConfigError::new("(root)", "the plugin configuration must be an object"));
        };
        let Some(raw_rules) = top.remove(RULES) else {
            return Ok(Rules::single(build(Value::Object(top))?));
        };
        let Value::Array(raw_rules) = raw_rules else {
            return Err(ConfigError::new(RULES, "must be a list of rules"));
        };
        let global = if top.is_empty() { None } else { Some(build(Value::Object(top))?) };
        let mut rules = Vec::with_capacity(raw_rules.len());
        for (i, raw) in raw_rules.into_iter().enumerate() {
            let at = format!("{RULES}[{i}]");
            let Value::Object(mut obj) = raw else {
                return Err(ConfigError::new(at, "must be an object"));
            };
            let matcher = take_matcher(&mut obj, &at)?;
            if let Some(key) = obj.keys().find(|k| k.starts_with('_') && k.ends_with('_')) {
                return Err(ConfigError::new(
                    format!("{at}.{key}"),
                    "unknown match key (known: _match_route_, _match_domain_, _match_service_, _match_route_prefix_)",
                ));
            }
            let config = build(Value::Object(obj)).map_err(|mut e| {
                e.field = if e.field == "(root)" { at.clone() } else { format!("{at}.{}", e.field) };
                e
            })?;
            rules.push((matcher, config));
        }
        if rules.is_empty() && global.is_none() {
            return Err(ConfigError::new(RULES, "no rules and no global configuration: the plugin would do nothing"));
        }
        Ok(Rules { rules, global })
    }

    /// The configuration for a request: the first rule that matches it, else the global one.
    pub fn select(&self, facts: &RequestFacts) -> Option<&T> {
        self.rules.iter().find(|(m, _)| m.matches(facts)).map(|(_, c)| c).or(self.global.as_ref())
    }

    /// The same rules over other configurations (e.g. each one shared behind an `Rc`).
    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> Rules<U> {
        Rules { global: self.global.map(&mut f), rules: self.rules.into_iter().map(|(m, c)| (m, f(c))).collect() }
    }

    /// Whether any rule exists, i.e. whether selecting needs the request's facts at all.
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Every configuration: the global one first, then the rules' in order.
    pub fn all(&self) -> impl Iterator<Item = &T> {
        self.global.iter().chain(self.rules.iter().map(|(_, c)| c))
    }
}

/// Removes the `_match_*_` keys of one rule and says what it matches.
fn take_matcher(obj: &mut Map<String, Value>, at: &str) -> Result<Matcher, ConfigError> {
    let mut list = |key: &str| -> Result<Vec<String>, ConfigError> {
        match obj.remove(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for v in items {
                    match v {
                        Value::String(s) if s.is_empty() => {}
                        Value::String(s) => out.push(s),
                        _ => return Err(ConfigError::new(format!("{at}.{key}"), "must be a list of strings")),
                    }
                }
                Ok(out)
            }
            Some(_) => Err(ConfigError::new(format!("{at}.{key}"), "must be a list of strings")),
        }
    };
    let routes = list(MATCH_ROUTE)?;
    let domains = list(MATCH_DOMAIN)?;
    let services = list(MATCH_SERVICE)?;
    let prefixes = list(MATCH_ROUTE_PREFIX)?;
    Ok(if !routes.is_empty() {
        if services.is_empty() {
            Matcher::Route(routes)
        } else {
            Matcher::RouteAndService(routes, services)
        }
    } else if !domains.is_empty() {
        let mut hosts = Vec::with_capacity(domains.len());
        for d in domains {
            hosts.push(if let Some(rest) = d.strip_prefix('*') {
                Host::Suffix(rest.to_string())
            } else if let Some(rest) = d.strip_suffix('*') {
                Host::Prefix(rest.to_string())
            } else {
                Host::Exact(d)
            });
        }
        Matcher::Domain(hosts)
    } else if !services.is_empty() {
        Matcher::Service(services)
    } else if !prefixes.is_empty() {
        Matcher::RoutePrefix(prefixes)
    } else {
        return Err(ConfigError::new(
            at,
            "a rule needs one of _match_route_, _match_domain_, _match_service_ or _match_route_prefix_",
        ));
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Builds each configuration as its `name` field, failing on `bad`.
    fn names(doc: Value) -> Result<Rules<String>, ConfigError> {
        Rules::parse(doc, |v| match v.get("name").and_then(Value::as_str) {
            Some("bad") => Err(ConfigError::new("servers[0].name", "bad")),
            Some(n) => Ok(n.to_string()),
            None => Err(ConfigError::new("(root)", "no name")),
        })
    }

    fn facts<'a>(authority: &'a str, route: &'a str, cluster: &'a str) -> RequestFacts<'a> {
        RequestFacts { authority, route_name: route, cluster_name: cluster }
    }

    #[test]
    fn without_rules_one_configuration_serves_everything() {
        let rules = names(json!({"name": "g"})).unwrap();
        assert!(!rules.has_rules());
        assert_eq!(rules.select(&RequestFacts::default()).map(String::as_str), Some("g"));
    }

    #[test]
    fn the_first_matching_rule_wins_else_the_global_configuration() {
        let rules = names(json!({
            "name": "global",
            "_rules_": [
                {"_match_route_": ["r1", "r2"], "name": "routes"},
                {"_match_domain_": ["*.example.com", "www.*", "api.test"], "name": "domains"},
                {"_match_service_": ["svc.dns", "other.static:8080"], "name": "services"},
                {"_match_route_prefix_": ["pre-"], "name": "prefix"},
                {"_match_route_": ["r3"], "_match_service_": ["svc.dns"], "name": "route+service"},
            ]
        }))
        .unwrap();
        let pick = |a, r, c| rules.select(&facts(a, r, c)).map(String::as_str);
        assert_eq!(pick("x", "r2", ""), Some("routes"));
        assert_eq!(pick("a.example.com:8080", "", ""), Some("domains"));
        assert_eq!(pick("example.com", "", ""), Some("global")); // "*.example.com" needs the dot
        assert_eq!(pick("www.foo.org", "", ""), Some("domains"));
        assert_eq!(pick("api.test:443", "", ""), Some("domains"));
        assert_eq!(pick("[::1]:80", "", ""), Some("global"));
        assert_eq!(pick("x", "", "outbound|80||svc.dns"), Some("services"));
        assert_eq!(pick("x", "", "outbound|8080||other.static"), Some("services"));
        assert_eq!(pick("x", "", "outbound|80||other.static"), Some("global")); // wrong port
        assert_eq!(pick("x", "", "svc.dns"), Some("global")); // not a service cluster name
        assert_eq!(pick("x", "pre-1", ""), Some("prefix"));
        assert_eq!(pick("x", "r3", "outbound|80||nope.dns"), Some("global")); // route and service: both
        assert_eq!(pick("x", "r3", "outbound|80||svc.dns"), Some("services")); // an earlier rule matches first
                                                                               // order matters: a request two rules match gets the first
        assert_eq!(pick("a.example.com", "r1", "outbound|80||svc.dns"), Some("routes"));
    }

    #[test]
    fn rules_alone_leave_other_requests_alone() {
        let rules = names(json!({"_rules_": [{"_match_route_": ["r"], "name": "only"}]})).unwrap();
        assert_eq!(rules.select(&facts("h", "r", "")).map(String::as_str), Some("only"));
        assert_eq!(rules.select(&facts("h", "other", "")), None);
        assert_eq!(rules.all().count(), 1);
    }

    #[test]
    fn invalid_rules_are_refused_naming_the_rule() {
        let err = names(json!({"name": "g", "_rules_": [{"_match_route_": ["r"], "name": "bad"}]})).unwrap_err();
        assert_eq!(err.field, "_rules_[0].servers[0].name");
        let err = names(json!({"_rules_": [{"_match_route_": ["r"]}]})).unwrap_err();
        assert_eq!(err.field, "_rules_[0]");
        let err = names(json!({"name": "g", "_rules_": [{"name": "x"}]})).unwrap_err();
        assert_eq!(err.field, "_rules_[0]");
        assert!(err.message.contains("_match_route_"), "{}", err.message);
        let err = names(json!({"name": "g", "_rules_": [{"_match_route_": "r", "name": "x"}]})).unwrap_err();
        assert_eq!(err.field, "_rules_[0]._match_route_");
        let err =
            names(json!({"name": "g", "_rules_": [{"_match_route_": ["r"], "_match_host_": ["h"], "name": "x"}]}))
                .unwrap_err();
        assert_eq!(err.field, "_rules_[0]._match_host_");
        let err = names(json!({"name": "g", "_rules_": {}})).unwrap_err();
        assert_eq!(err.field, "_rules_");
        let err = names(json!({"_rules_": []})).unwrap_err();
        assert_eq!(err.field, "_rules_");
    }
}
