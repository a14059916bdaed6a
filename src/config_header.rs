//! `x-higress-mcpserver-config`: a server's `config` given per request, as Higress's `mcp-session` filter
//! (with `enableUserLevelServer`) gives each user's own: base64 of a JSON object, which Higress's plugin
//! takes in place of the server's `config` (`base_server.go GetConfig`).
//!
//! This gateway compiles a server's templates at load, checking every `config.x` they name, so a request's
//! config means compiling the server again: [`compile_for`] builds the gateway anew from the plugin
//! configuration as loaded with that server's `config` replaced, and the host keeps the results in a small
//! [`Cache`] keyed by the header's value. A header that does not decode or compile is refused with what is
//! wrong; the request is never served with the operator's config instead.
//!
//! Trust: off unless `trustConfigHeader: true`, and then whoever can set the header chooses the config
//! (the API keys in it, the hosts it names): only safe where something in front of the plugin sets or
//! removes it on every request. Higress's filter only sets it when a user has a stored config, and lets a
//! client's own value through otherwise. The header never reaches an upstream: no client header does.

use crate::config::PluginConfig;
use crate::gateway::Gateway;
use crate::transport::{config_header_refused, HttpResponse, RequestHead, CONFIG_HEADER};
use serde_json::Value;

/// What a gateway does with the header.
#[derive(Debug, Default)]
pub enum ConfigHeader {
    /// Refused on every request (the default).
    #[default]
    Refused,
    /// Trusted (`trustConfigHeader: true`): the configuration document as loaded, to compile again.
    Trusted(Value),
    /// This gateway was compiled from a request's header.
    Applied,
}

/// How many compiled per-request gateways a worker keeps.
pub const CACHE_ENTRIES: usize = 16;

/// The server a request for a trusting gateway names and the header's value, if it carries one.
pub fn requested<'h>(gw: &Gateway, head: &'h RequestHead) -> Option<(&'h str, &'h str)> {
    if !matches!(gw.config_header, ConfigHeader::Trusted(_)) {
        return None;
    }
    let value = head.header(CONFIG_HEADER)?;
    let path = head.path.split(['?', '#']).next().unwrap_or("");
    let name = path.strip_prefix(gw.prefix.as_str())?.strip_prefix('/')?;
    gw.server(name).is_some().then_some((name, value))
}

/// `gw` compiled again with `server`'s `config` replaced by the one `header` carries; or what is wrong.
pub fn compile_for(gw: &Gateway, server: &str, header: &str) -> Result<Gateway, String> {
    let ConfigHeader::Trusted(doc) = &gw.config_header else {
        return Err(format!("{CONFIG_HEADER} is not trusted by this gateway (trustConfigHeader)"));
    };
    let bytes =
        crate::b64::STANDARD.decode(header.trim()).map_err(|e| format!("{CONFIG_HEADER} is not base64 ({e})"))?;
    let config = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err(format!("{CONFIG_HEADER} is not a JSON object (a server's config)")),
        Err(e) => return Err(format!("{CONFIG_HEADER} is not JSON ({e})")),
    };
    let mut cfg = PluginConfig::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let target = cfg.servers.iter_mut().find(|s| s.name == server).ok_or_else(|| format!("no server '{server}'"))?;
    target.config = config;
    cfg.config_header_source = None;
    let mut compiled = Gateway::compile(cfg)
        .map_err(|e| format!("the server config in {CONFIG_HEADER} does not fit server '{server}': {e}"))?;
    compiled.config_header = ConfigHeader::Applied;
    Ok(compiled)
}

/// [`compile_for`], for a caller the server admits only: a compile costs as much as loading the whole
/// configuration, so a caller the request would be refused to anyway may not cause one. The refusal is the
/// answer to send: admission's own (401, 403), or 400 saying what is wrong with the header.
pub fn compile_admitted(gw: &Gateway, server: &str, head: &RequestHead, header: &str) -> Result<Gateway, HttpResponse> {
    let target = gw.server(server).ok_or_else(|| config_header_refused(gw, head, format!("no server '{server}'")))?;
    crate::transport::admit(gw, target, head).map_err(|refused| refused.response(Value::Null))?;
    compile_for(gw, server, header).map_err(|why| config_header_refused(gw, head, why))
}

/// The last [`CACHE_ENTRIES`] results, keyed by the gateway they came from (its address, which the
/// host makes unique by clearing the cache when the configuration changes), server and header value.
#[derive(Debug)]
pub struct Cache<T> {
    entries: Vec<(usize, String, String, T)>,
}

impl<T: Clone> Default for Cache<T> {
    fn default() -> Self {
        Cache { entries: Vec::new() }
    }
}

impl<T: Clone> Cache<T> {
    /// The cached value, or `make`'s (kept if it is `Ok`; the oldest entry goes when the cache is full).
    pub fn get_or_make<E>(
        &mut self,
        base: usize,
        server: &str,
        header: &str,
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        if let Some(pos) = self.entries.iter().position(|(b, s, h, _)| *b == base && s == server && h == header) {
            // Most recently used last.
            let entry = self.entries.remove(pos);
            let value = entry.3.clone();
            self.entries.push(entry);
            return Ok(value);
        }
        let value = make()?;
        if self.entries.len() >= CACHE_ENTRIES {
            self.entries.remove(0);
        }
        self.entries.push((base, server.to_string(), header.to_string(), value.clone()));
        Ok(value)
    }

    /// Forgets everything (the configuration changed).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::test_host::TestHost;
    use crate::upstream::UpstreamResult;

    const DOC: &str = "trustConfigHeader: true\nservers:\n- name: s\n  config: {key: operator}\n  upstream: {cluster: api}\n  tools:\n  - {name: t, description: d, requestTemplate: {url: '/x?k={{ config.key }}'}}\n";

    fn b64(s: &str) -> String {
        crate::b64::STANDARD.encode(s)
    }

    fn head(header: Option<&str>) -> RequestHead {
        let mut headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("accept".to_string(), "application/json, text/event-stream".to_string()),
        ];
        if let Some(v) = header {
            headers.push((CONFIG_HEADER.to_string(), v.to_string()));
        }
        RequestHead {
            method: "POST".into(),
            path: "/mcp-servers/s".into(),
            headers: headers.into(),
            client_address: None,
            jwt: None,
        }
    }

    /// The upstream path of a `tools/call t` through `gw`, or the HTTP status it was refused with.
    fn call(gw: &Gateway, h: &RequestHead) -> Result<String, u16> {
        let mut host = TestHost::new();
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26"}}"#;
        let r = host.send(gw, h.clone(), init, &|_| panic!("no upstream call"));
        let Some((_, sid)) = r.headers.iter().find(|(k, _)| k == "mcp-session-id") else { return Err(r.status) };
        let mut h = h.clone();
        h.headers.push("mcp-session-id", sid);
        let path = std::cell::RefCell::new(String::new());
        let call = r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"t","arguments":{}}}"#;
        let r = host.send(gw, h, call, &|req| {
            *path.borrow_mut() = req.path.clone();
            UpstreamResult::Response { status: 200, headers: vec![], body: b"ok".to_vec() }
        });
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        Ok(path.into_inner())
    }

    #[test]
    fn a_trusting_gateway_compiles_the_server_with_the_requests_config() {
        let gw = Gateway::from_config_str(DOC).unwrap();
        let header = b64(r#"{"key":"user-1"}"#);
        let h = head(Some(&header));
        assert_eq!(requested(&gw, &h), Some(("s", header.as_str())));
        let user = compile_for(&gw, "s", &header).unwrap();
        assert!(matches!(user.config_header, ConfigHeader::Applied));
        assert_eq!(call(&user, &h), Ok("/x?k=user-1".to_string()));
        // Without the header, the operator's config.
        assert_eq!(call(&gw, &head(None)), Ok("/x?k=operator".to_string()));
        // The operator's gateway refuses such a request itself rather than serve it with its own config.
        assert_eq!(call(&gw, &h), Err(400));
    }

    #[test]
    fn a_header_that_does_not_decode_or_fit_says_what_is_wrong() {
        let gw = Gateway::from_config_str(DOC).unwrap();
        let e = compile_for(&gw, "s", "%%%").unwrap_err();
        assert!(e.contains("not base64"), "{e}");
        assert!(compile_for(&gw, "s", &b64("[1]")).unwrap_err().contains("not a JSON object"));
        assert!(compile_for(&gw, "s", &b64("{")).unwrap_err().contains("not JSON"));
    }

    #[test]
    #[cfg(feature = "go-templates")]
    fn a_config_the_server_cannot_compile_with_is_located() {
        // Higress's shape, its URL's host from config (put in at load): a user config without it is refused,
        // located, with nothing of the operator's config in the message.
        let doc = "trustConfigHeader: true\nserver: {name: s, config: {baseUrl: 'https://operator.example'}}\ntools:\n- {name: t, description: d, requestTemplate: {url: '{{.config.baseUrl}}/x', method: GET}}\n";
        let gw = Gateway::from_config_str(doc).unwrap();
        let e = compile_for(&gw, "s", &b64(r#"{"other":"x"}"#)).unwrap_err();
        assert!(e.contains("server 's'") && e.contains("config.baseUrl") && !e.contains("operator"), "{e}");
        let user = compile_for(&gw, "s", &b64(r#"{"baseUrl":"https://user.example"}"#)).unwrap();
        assert!(matches!(user.config_header, ConfigHeader::Applied));
    }

    #[test]
    fn only_an_admitted_caller_causes_a_compile() {
        let doc = DOC
            .replace(
                "servers:",
                "consumers: [{name: alice, credential: k-alice}]\nkeyAuth: {keys: [x-api-key]}\nservers:",
            )
            .replace("  config:", "  auth: {anonymous: false}\n  config:");
        let gw = Gateway::from_config_str(&doc).unwrap();
        let header = b64(r#"{"key":"user-1"}"#);
        let refused = compile_admitted(&gw, "s", &head(Some(&header)), &header).unwrap_err();
        assert_eq!(refused.status, 401, "{}", String::from_utf8_lossy(&refused.body));
        let mut h = head(Some(&header));
        h.headers.push("x-api-key", "k-alice");
        assert!(compile_admitted(&gw, "s", &h, &header).is_ok());
        let bad = compile_admitted(&gw, "s", &h, "%%%").unwrap_err();
        assert_eq!(bad.status, 400);
        assert!(String::from_utf8_lossy(&bad.body).contains("not base64"));
    }

    #[test]
    fn off_unless_trusted() {
        let gw = Gateway::from_config_str(&DOC.replace("trustConfigHeader: true\n", "")).unwrap();
        let header = b64(r#"{"key":"user-1"}"#);
        assert_eq!(requested(&gw, &head(Some(&header))), None);
        assert!(compile_for(&gw, "s", &header).unwrap_err().contains("not trusted"));
        let trusting = Gateway::from_config_str(DOC).unwrap();
        assert_eq!(requested(&trusting, &head(None)), None);
        let mut other = head(Some(&header));
        other.path = "/mcp-servers/nope".into();
        assert_eq!(requested(&trusting, &other), None);
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_only_successes() {
        let mut c: Cache<u32> = Cache::default();
        let mut made = 0;
        for i in 0..(CACHE_ENTRIES + 4) {
            let v = c.get_or_make(1, "s", &i.to_string(), || {
                made += 1;
                Ok::<_, ()>(i as u32)
            });
            assert_eq!(v, Ok(i as u32));
        }
        assert_eq!((c.len(), made), (CACHE_ENTRIES, CACHE_ENTRIES + 4));
        let last = (CACHE_ENTRIES + 3).to_string();
        assert_eq!(c.get_or_make(1, "s", &last, || Err(())), Ok((CACHE_ENTRIES + 3) as u32), "cached");
        assert!(c.get_or_make(1, "s", "0", || Ok::<_, ()>(99)).is_ok(), "the oldest went");
        assert_eq!(c.get_or_make(2, "s", "0", || Err("bad")), Err("bad"));
        assert_eq!(c.len(), CACHE_ENTRIES, "a failure is not kept");
        c.clear();
        assert!(c.is_empty());
    }
}
