//! Resources and resource templates from config: `resources/list`, `resources/templates/list`,
//! `resources/read`.
//!
//! A resource's contents are static text or base64 (templates over `config`, and for a template the
//! variables of its URI as `args`), or fetched from an upstream: then the resource is served by a [`Tool`]
//! compiled from its `requestTemplate`/`responseTemplate`, the URI's variables as its arguments, so that a
//! resource read is built, sent, limited and rendered exactly as a tool call is.

use crate::completion::{self, Argument, ArgumentConfig};
use crate::config::{RequestTemplate, ResponseTemplate, ServerConfig, ToolConfig, UpstreamConfig};
use crate::fields::{FieldError, Fields};
use crate::icon::{self, Icon};
use crate::json::object;
use crate::jsonrpc::{RpcError, INTERNAL_ERROR};
use crate::template::{TemplateId, Templates};
use crate::tool::{Prepared, Tool};
use crate::upstream::{UpstreamRequest, UpstreamResult};
use crate::uri_template::UriTemplate;
use minijinja::{context, value::Value as MjValue};
use serde_json::{Map, Value};

/// What resources and resource templates share in the config: how they are shown and where their contents
/// come from (exactly one of `text`, `blob`, `requestTemplate`).
#[derive(Debug, Clone, Default)]
pub struct ResourceConfig {
    /// A resource's URI (`resources`).
    pub uri: Option<String>,
    /// An RFC 6570 template such as `users://{id}` (`resourceTemplates`).
    pub uri_template: Option<String>,
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub mime_type: Option<String>,
    /// Size in bytes, when known (resources only).
    pub size: Option<u64>,
    pub icons: Vec<Icon>,
    pub annotations: Option<Map<String, Value>>,
    /// Completion values for the template's variables (resource templates only).
    pub arguments: Vec<ArgumentConfig>,
    pub text: Option<String>,
    pub blob: Option<String>,
    pub request_template: Option<RequestTemplate>,
    pub response_template: Option<ResponseTemplate>,
    pub error_response_template: Option<String>,
    pub upstream: Option<UpstreamConfig>,
    /// What to ask the client before the resource is read (as for tools and prompts).
    pub input_requests: Option<Value>,
}

impl ResourceConfig {
    /// Reads a resource (`template` false) or a resource template.
    pub fn read(v: &Value, template: bool) -> Result<ResourceConfig, FieldError> {
        let mut f = Fields::read(v, "", &[]);
        let (uri, uri_template) = if template {
            (None, Some(f.required_string("uriTemplate")))
        } else {
            (Some(f.required_string("uri")), None)
        };
        let mut r = ResourceConfig::default();
        r.uri = uri;
        r.uri_template = uri_template;
        r.name = f.required_string("name");
        r.title = f.string("title");
        r.description = f.string("description");
        r.mime_type = f.string("mimeType");
        r.size = if template { None } else { f.unsigned("size") };
        r.icons = f.list("icons", Icon::read);
        r.annotations = f.object("annotations");
        r.arguments = if template { f.list("arguments", ArgumentConfig::read) } else { Vec::new() };
        r.text = f.string("text");
        r.blob = f.string("blob");
        r.request_template = f.nested("requestTemplate", crate::config::RequestTemplate::read);
        r.response_template = f.nested("responseTemplate", crate::config::ResponseTemplate::read);
        r.error_response_template = f.string("errorResponseTemplate");
        r.upstream = f.nested("upstream", crate::config::UpstreamConfig::read);
        r.input_requests = f.value("inputRequests").cloned();
        f.finish()?;
        Ok(r)
    }
}

/// Where a resource's contents come from.
#[derive(Debug)]
enum Source {
    Text(TemplateId),
    Blob(TemplateId),
    Upstream(Box<Tool>),
}

/// A compiled resource or resource template.
#[derive(Debug)]
pub struct Resource {
    /// The URI, or the URI template as written.
    pub uri: String,
    /// The template's matcher; `None` for a resource.
    pattern: Option<UriTemplate>,
    /// As `resources/list` or `resources/templates/list` shows it, built once.
    pub listing: Value,
    mime_type: Option<String>,
    pub arguments: Vec<Argument>,
    source: Source,
    /// What the client is asked before a read (`inputRequests`).
    pub inputs: Option<crate::input::Inputs>,
}

/// What reading a resource produced.
#[derive(Debug)]
pub enum Read {
    Done(Result<Value, RpcError>),
    /// Send this request, then call [`Resource::finish`] with the answer and these arguments.
    Upstream(UpstreamRequest, Value),
}

impl Resource {
    /// Compiles a resource (`template` false) or a resource template; errors are `(field, message)`.
    pub fn compile(
        cfg: &ResourceConfig,
        template: bool,
        server: &ServerConfig,
        templates: &mut Templates,
        config: &MjValue,
    ) -> Result<Resource, (String, String)> {
        let err = |f: &str, m: &str| Err(crate::fields::pair(f, m));
        let (uri, pattern) = match (template, &cfg.uri, &cfg.uri_template) {
            (false, Some(u), None) => {
                if !is_uri(u) {
                    return err("uri", "must be an absolute URI (scheme:...)");
                }
                (u.clone(), None)
            }
            (true, None, Some(t)) => {
                (t.clone(), Some(UriTemplate::parse(t).map_err(|m| ("uriTemplate".to_string(), m))?))
            }
            (false, _, _) => return err("uri", "a resource needs a uri (uriTemplate is for resourceTemplates)"),
            (true, _, _) => {
                return err("uriTemplate", "a resource template needs a uriTemplate (uri is for resources)")
            }
        };
        if cfg.name.trim().is_empty() {
            return err("name", "must not be empty");
        }
        icon::validate(&cfg.icons)?;
        if template && cfg.size.is_some() {
            return err("size", "applies to resources, not resource templates");
        }
        let vars: Vec<String> = pattern.as_ref().map(|p| p.vars.clone()).unwrap_or_default();
        if !template && !cfg.arguments.is_empty() {
            return err("arguments", "a resource has no arguments (resource templates do)");
        }
        let arguments = completion::compile_all(&cfg.arguments)?;
        if let Some((i, a)) = arguments.iter().enumerate().find(|(_, a)| !vars.contains(&a.name)) {
            return Err((
                format!("arguments[{i}].name"),
                format!("'{}' is not a variable of the uriTemplate (it has: {})", a.name, vars.join(", ")),
            ));
        }
        let fetched = cfg.request_template.is_some();
        let sources = [cfg.text.is_some(), cfg.blob.is_some(), fetched].iter().filter(|s| **s).count();
        if sources != 1 {
            return err("text", "give exactly one of text, blob or requestTemplate");
        }
        if !fetched
            && (cfg.response_template.is_some() || cfg.error_response_template.is_some() || cfg.upstream.is_some())
        {
            return err(
                "responseTemplate",
                "responseTemplate, errorResponseTemplate and upstream go with a requestTemplate",
            );
        }
        let prefix = format!("{}/resource:{}", server.name, uri);
        let mut names = Vec::with_capacity(vars.len());
        for v in &vars {
            names.push(v.as_str());
        }
        let inputs = match &cfg.input_requests {
            Some(raw) => Some(crate::input::Inputs::compile(raw, &prefix, &names, templates, config)?),
            None => None,
        };
        // The contents' templates may read the answers to the input requests, and only then.
        let known: &[&str] =
            if inputs.is_some() { &["args", "uri", "config", "input"] } else { &["args", "uri", "config"] };
        let checked = |t: &mut Templates, field: &str, src: &str| {
            t.add_checked(&format!("{prefix}/{field}"), src, known, &names, config).map_err(|e| (field.to_string(), e))
        };
        let source = if let Some(text) = &cfg.text {
            Source::Text(checked(templates, "text", text)?)
        } else if let Some(blob) = &cfg.blob {
            Source::Blob(checked(templates, "blob", blob)?)
        } else {
            let rt = cfg.request_template.clone().unwrap_or_default();
            if rt.url.as_deref().is_none_or(|u| u.trim().is_empty()) {
                return err("requestTemplate.url", "is required to fetch a resource");
            }
            let tool = ToolConfig {
                name: "resource".into(),
                description: cfg.name.clone(),
                args: {
                    let mut args = Vec::with_capacity(vars.len());
                    for v in &vars {
                        args.push(crate::config::ArgConfig { name: v.clone(), required: true, ..Default::default() });
                    }
                    args
                },
                upstream: cfg.upstream.clone(),
                request_template: Some(rt),
                response_template: cfg.response_template.clone(),
                error_response_template: cfg.error_response_template.clone(),
                // Lets its templates read `input`; the resource asks, the tool's own copy is not used.
                input_requests: cfg.input_requests.clone(),
                ..ToolConfig::default()
            };
            Source::Upstream(Box::new(Tool::compile(server, &tool, templates, config)?))
        };
        let mut listing = Map::new();
        listing.insert(if template { "uriTemplate" } else { "uri" }.into(), Value::from(uri.as_str()));
        listing.insert("name".into(), Value::from(cfg.name.as_str()));
        for (key, v) in [("title", &cfg.title), ("description", &cfg.description), ("mimeType", &cfg.mime_type)] {
            if let Some(v) = v {
                listing.insert(key.into(), Value::from(v.as_str()));
            }
        }
        if let Some(s) = cfg.size {
            listing.insert("size".into(), Value::from(s));
        }
        if !cfg.icons.is_empty() {
            listing.insert("icons".into(), icon::to_json(&cfg.icons));
        }
        if let Some(a) = &cfg.annotations {
            listing.insert("annotations".into(), Value::Object(a.clone()));
        }
        Ok(Resource {
            uri,
            pattern,
            listing: Value::Object(listing),
            mime_type: cfg.mime_type.clone(),
            arguments,
            source,
            inputs,
        })
    }

    /// The template's variables in `uri`, when this template matches it.
    pub fn matches(&self, uri: &str) -> Option<Map<String, Value>> {
        self.pattern.as_ref()?.matches(uri)
    }

    /// Reads the resource at `uri` (with the variables a template matched, and the client's answers to its
    /// input requests).
    pub fn read(
        &self,
        templates: &Templates,
        config: &MjValue,
        uri: &str,
        vars: Map<String, Value>,
        input: Option<&Value>,
    ) -> Read {
        let args = Value::Object(vars);
        let ctx = || match input {
            Some(i) => context! {
                args => MjValue::from(minijinja::value::Serde(&args)), uri => uri, config => config.clone(),
                input => MjValue::from(minijinja::value::Serde(i)),
            },
            None => {
                context! { args => MjValue::from(minijinja::value::Serde(&args)), uri => uri, config => config.clone() }
            }
        };
        let render = |t: &TemplateId| {
            templates.render_ctx(t, ctx()).map_err(|e| RpcError::new(INTERNAL_ERROR, format!("resource {uri}: {e}")))
        };
        match &self.source {
            Source::Text(t) => Read::Done(render(t).map(|text| self.contents(uri, None, Some(text), None))),
            Source::Blob(t) => Read::Done(render(t).and_then(|b| {
                let b = b.trim().to_string();
                if crate::b64::STANDARD.decode(&b).is_err() {
                    return Err(RpcError::new(INTERNAL_ERROR, format!("resource {uri}: the blob is not base64")));
                }
                Ok(self.contents(uri, None, None, Some(b)))
            })),
            Source::Upstream(tool) => {
                match crate::template::with_input(input, || tool.prepare(templates, config, Some(&args))) {
                    Prepared::Done(result) => Read::Done(self.contents_of(uri, None, result)),
                    Prepared::Upstream(request, args) => Read::Upstream(request, args),
                }
            }
        }
    }

    /// The `ReadResourceResult` from the upstream answer of a fetched resource. A binary answer the
    /// operator did not template is the blob itself.
    pub fn finish(
        &self,
        templates: &Templates,
        config: &MjValue,
        uri: &str,
        args: &Value,
        outcome: UpstreamResult,
    ) -> Result<Value, RpcError> {
        let Source::Upstream(tool) = &self.source else {
            return Err(RpcError::new(INTERNAL_ERROR, "the resource is not fetched"));
        };
        let mime = match &outcome {
            UpstreamResult::Response { headers, .. } => headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase()),
            UpstreamResult::Failed(_) => None,
        };
        if let UpstreamResult::Response { status: 200..=299, body, .. } = &outcome {
            let binary = match mime.as_deref() {
                Some(m) => !is_textual(m),
                None => std::str::from_utf8(body).is_err(),
            };
            if binary && !tool.renders_answer() {
                let blob = crate::b64::STANDARD.encode(body);
                return Ok(self.contents(uri, mime.as_deref(), None, Some(blob)));
            }
        }
        let result = tool.finish(templates, config, args, outcome);
        self.contents_of(uri, mime.as_deref(), result)
    }

    /// Turns a tool result into resource contents: text blocks are text, images and audio blobs, embedded
    /// resources themselves; an error result is a JSON-RPC error.
    fn contents_of(&self, uri: &str, upstream_mime: Option<&str>, mut result: Value) -> Result<Value, RpcError> {
        // Loops, not iterator chains (their adapters are instantiated per closure); the blocks are moved.
        let blocks = match result.get_mut("content") {
            Some(Value::Array(blocks)) => std::mem::take(blocks),
            _ => Vec::new(),
        };
        if result.get("isError") == Some(&Value::Bool(true)) {
            let mut text = format!("resource {uri}: ");
            let mut first = true;
            for b in &blocks {
                if let Some(t) = b["text"].as_str() {
                    if !first {
                        text.push('\n');
                    }
                    text.push_str(t);
                    first = false;
                }
            }
            return Err(RpcError::new(INTERNAL_ERROR, text));
        }
        let mime = self.mime_type.as_deref().or(upstream_mime);
        let mut contents = Vec::new();
        for mut b in blocks {
            match b["type"].as_str() {
                Some("text") => {
                    contents.push(entry(uri, mime, Some(b["text"].as_str().unwrap_or_default().into()), None))
                }
                Some("image" | "audio") => contents.push(entry(
                    uri,
                    b["mimeType"].as_str().or(mime),
                    None,
                    Some(b["data"].as_str().unwrap_or_default().into()),
                )),
                Some("resource") => contents.push(b.get_mut("resource").map(Value::take).unwrap_or(Value::Null)),
                _ => {}
            }
        }
        Ok(object(vec![("contents", Value::Array(contents))]))
    }

    fn contents(&self, uri: &str, upstream_mime: Option<&str>, text: Option<String>, blob: Option<String>) -> Value {
        let mime = self.mime_type.as_deref().or(upstream_mime);
        object(vec![("contents", Value::Array(vec![entry(uri, mime, text, blob)]))])
    }
}

fn entry(uri: &str, mime: Option<&str>, text: Option<String>, blob: Option<String>) -> Value {
    let mut e = Map::new();
    e.insert("uri".into(), Value::from(uri));
    if let Some(m) = mime {
        e.insert("mimeType".into(), Value::from(m));
    }
    match (text, blob) {
        (_, Some(b)) => e.insert("blob".into(), Value::from(b)),
        (t, None) => e.insert("text".into(), Value::from(t.unwrap_or_default())),
    };
    Value::Object(e)
}

/// Whether a media type is text a client reads as such.
fn is_textual(mime: &str) -> bool {
    mime.starts_with("text/")
        || mime.ends_with("/json")
        || mime.ends_with("+json")
        || mime.ends_with("/xml")
        || mime.ends_with("+xml")
        || mime == "application/javascript"
}

/// `scheme:rest`, the scheme as RFC 3986 spells it.
pub(crate) fn is_uri(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once(':') else { return false };
    !rest.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !s.bytes().any(|b| b.is_ascii_control() || b == b' ')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn compile(yaml: &str, template: bool) -> Result<(Resource, Templates, MjValue), (String, String)> {
        let doc = crate::config::parse_document(&format!("r: {yaml}")).unwrap();
        let cfg = ResourceConfig::read(&doc["r"], template)?;
        let server =
            ServerConfig::read(&json!({"name": "s", "upstream": {"cluster": "api"}, "config": {"k": "v"}})).unwrap();
        let config = crate::gateway::safe_config(&server.config);
        let mut t = Templates::new();
        let r = Resource::compile(&cfg, template, &server, &mut t, &config)?;
        Ok((r, t, config))
    }

    fn done(r: Read) -> Result<Value, RpcError> {
        match r {
            Read::Done(v) => v,
            Read::Upstream(..) => panic!("expected no upstream"),
        }
    }

    #[test]
    fn static_and_templated_contents() {
        let (r, t, c) =
            compile("{uri: 'test://a', name: a, mimeType: text/plain, text: 'k={{ config.k }}'}", false).unwrap();
        assert_eq!(r.listing, json!({"uri": "test://a", "name": "a", "mimeType": "text/plain"}));
        let v = done(r.read(&t, &c, "test://a", Map::new(), None)).unwrap();
        assert_eq!(v, json!({"contents": [{"uri": "test://a", "mimeType": "text/plain", "text": "k=v"}]}));
        let (r, t, c) = compile("{uri: 'test://b', name: b, blob: AQID}", false).unwrap();
        assert_eq!(done(r.read(&t, &c, "test://b", Map::new(), None)).unwrap()["contents"][0]["blob"], json!("AQID"));
        let (r, t, c) = compile(
            "{uriTemplate: 'test://t/{id}/x{+rest}', name: t, text: '{{ args.id }}|{{ args.rest }}|{{ uri }}'}",
            true,
        )
        .unwrap();
        assert!(r.matches("test://t//x").is_none() && r.matches("test://u/1/x2").is_none());
        let vars = r.matches("test://t/a%20b/x/c/d").unwrap();
        let v = done(r.read(&t, &c, "test://t/a%20b/x/c/d", vars, None)).unwrap();
        assert_eq!(v["contents"][0]["text"], json!("a b|/c/d|test://t/a%20b/x/c/d"));
        assert_eq!(r.listing["uriTemplate"], json!("test://t/{id}/x{+rest}"));
    }

    #[test]
    fn fetched_resources_use_the_tool_machinery() {
        let (r, t, c) =
            compile("{uriTemplate: 'users://{id}', name: u, mimeType: application/json, requestTemplate: {url: '/users/{{ args.id }}'}}", true)
                .unwrap();
        let Read::Upstream(req, args) = r.read(&t, &c, "users://7", r.matches("users://7").unwrap(), None) else {
            panic!()
        };
        assert_eq!((req.cluster.as_str(), req.path.as_str()), ("api", "/users/7"));
        let ok = UpstreamResult::Response { status: 200, headers: vec![], body: b"{\"id\": 7}".to_vec() };
        let v = r.finish(&t, &c, "users://7", &args, ok).unwrap();
        assert_eq!(
            v["contents"][0],
            json!({"uri": "users://7", "mimeType": "application/json", "text": "{\"id\": 7}"})
        );
        let png = UpstreamResult::Response {
            status: 200,
            headers: vec![("Content-Type".into(), "application/octet-stream".into())],
            body: vec![0, 159, 146, 150],
        };
        assert_eq!(r.finish(&t, &c, "users://7", &args, png).unwrap()["contents"][0]["blob"], json!("AJ+Slg=="));
        let bad = UpstreamResult::Response { status: 404, headers: vec![], body: b"no".to_vec() };
        let e = r.finish(&t, &c, "users://7", &args, bad).unwrap_err();
        assert!(e.message.contains("HTTP 404: no"), "{e:?}");
    }

    #[test]
    fn bad_resources_are_located() {
        let field = |yaml: &str, template: bool| compile(yaml, template).unwrap_err().0;
        assert_eq!(field("{uri: 'nope', name: a, text: x}", false), "uri");
        assert_eq!(field("{uri: 'a:b', name: a}", false), "text");
        assert_eq!(field("{uri: 'a:b', name: a, text: x, blob: AA==}", false), "text");
        assert_eq!(field("{uri: 'a:b', name: a, text: '{{ args.id }}'}", false), "text");
        assert_eq!(field("{uriTemplate: 'a://{id}', name: a, text: '{{ args.di }}'}", true), "text");
        assert_eq!(field("{uriTemplate: 'a://{?q*}', name: a, text: x}", true), "uriTemplate");
        assert_eq!(field("{uriTemplate: 'a://x', name: a, text: x}", true), "uriTemplate");
        assert_eq!(field("{uri: 'a://x', name: a, text: x}", true), "uriTemplate");
        assert_eq!(field("{uri: 'a://x', name: a, text: x, size: -1}", false), "size");
        assert_eq!(field("{uri: 'a://x', name: a, text: x, arguments: []}", false), "arguments");
        assert_eq!(
            field("{uri: 'a://x', name: a, requestTemplate: {url: /x, bogus: 1}}", false),
            "requestTemplate.bogus"
        );
        assert_eq!(
            field("{uriTemplate: 'a://{id}', name: a, text: x, arguments: [{name: x}]}", true),
            "arguments[0].name"
        );
        assert_eq!(field("{uri: 'a:b', name: a, text: x, upstream: {cluster: c}}", false), "responseTemplate");
        assert_eq!(field("{uri: 'a:b', name: a, requestTemplate: {url: 'x'}}", false), "requestTemplate.url");
        assert_eq!(field("{uri: 'a:b', name: a, requestTemplate: {method: POST}}", false), "requestTemplate.url");
    }
}
