//! A REST-backed tool: compiled from config once, then turning arguments into an upstream request and the
//! upstream answer into a `CallToolResult`.

use crate::config::{Position, ServerConfig, ToolConfig};
use crate::content::{self, Content};
use crate::credential::{Credential, Downstream, Presented, Source};
use crate::encoding::{self, Encoding};
use crate::higress::{self, Semantics};
use crate::icon::{self, Icon};
use crate::json::object;
use crate::schema::{self, Validator};
use crate::template::{AnswerData, Data, Dialect, Escape, Role, Spec, TemplateId, Templates};
use crate::upstream::{is_forbidden_header, is_safe_header_value, is_token, Target, UpstreamRequest, UpstreamResult};
use minijinja::value::Value as MjValue;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Upstream bodies quoted in error results are cut to this size.
const ERROR_BODY_QUOTE: usize = 2048;

/// How arguments end up in the upstream request body when no body template is given.
#[derive(Debug, Clone, Copy, PartialEq)]
enum BodyMode {
    None,
    Json,
    Form,
    Multipart,
    /// The one file argument's bytes are the body.
    File,
}

#[derive(Debug)]
struct RequestPlan {
    target: Target,
    method: String,
    url: TemplateId,
    headers: Vec<(String, TemplateId)>,
    body: Option<TemplateId>,
    body_mode: BodyMode,
    /// Arguments not placed by `position` go to the query string.
    rest_to_query: bool,
    /// `argsToJsonBody`/`argsToFormBody`: arguments not placed by `position` go to the body (Higress's
    /// semantics drop them otherwise).
    #[cfg_attr(not(feature = "go-templates"), allow(dead_code))]
    rest_to_body: bool,
    /// Content-Type set explicitly by a header template, lower-cased.
    declared_content_type: Option<String>,
    /// The credential the gateway adds, from the server's `securitySchemes` (`requestTemplate.security`, else
    /// the server's `defaultUpstreamSecurity`).
    credential: Option<Credential>,
}

/// Where one argument goes in the upstream request.
#[derive(Debug)]
struct Placement {
    arg: String,
    /// The parameter name on the wire (differs from `arg` when names clash).
    wire: String,
    position: Position,
    /// How arrays and objects are written there (OpenAPI styles).
    encoding: Encoding,
    /// A file: base64 content, sent as bytes.
    file: bool,
    /// A form or multipart field's media type (`contentType`).
    content_type: Option<String>,
}

impl Placement {
    /// Whether a field's value goes as JSON text because its `contentType` is JSON (a string goes as it is,
    /// which is what a form field holding JSON text means).
    fn json_text(&self, value: &Value) -> bool {
        !value.is_string() && self.content_type.as_deref().is_some_and(is_json_media)
    }
}

/// `application/json` and the `+json` types, parameters aside.
fn is_json_media(media: &str) -> bool {
    let essence = media.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// A compiled tool.
#[derive(Debug)]
pub struct Tool {
    pub name: String,
    title: Option<String>,
    description: String,
    annotations: Option<Map<String, Value>>,
    icons: Vec<Icon>,
    /// Client capabilities a call needs (`requiredClientCapabilities`).
    pub required_client_capabilities: Option<Map<String, Value>>,
    /// What the tool asks the client before it runs (`inputRequests`).
    pub inputs: Option<crate::input::Inputs>,
    /// The input and output schemas live in their validators only: a large API's schemas are most of the
    /// plugin's memory, in every worker's VM.
    input: Validator,
    output: Option<Validator>,
    placements: Vec<Placement>,
    request: Option<RequestPlan>,
    /// Where clients present their credential (`security`, else the server's `defaultDownstreamSecurity`).
    downstream: Option<Downstream>,
    /// `passthroughAuthHeader`: the client's `Authorization` goes upstream (no downstream http scheme read it).
    forward_authorization: bool,
    response_body: Option<TemplateId>,
    prepend: Option<TemplateId>,
    append: Option<TemplateId>,
    error_body: Option<TemplateId>,
    /// Content blocks rendered from the answer (`responseTemplate.content`), instead of one text.
    content: Vec<Content>,
    /// A response template reads `bodyBase64`, so the answer's bytes are encoded for it.
    reads_base64: bool,
    /// The response templates read the parsed answer (so an unparseable JSON answer cannot render).
    result_reads_answer: bool,
    error_reads_answer: bool,
    /// Whose request and response semantics the tool follows (its server's `semantics`).
    semantics: Semantics,
    /// Arguments declared `integer` (Higress converts them to Go ints, and so prints them as integers).
    integers: Vec<String>,
    /// [`Tool::listing`] as JSON text, written when the tool is first listed: pages are then written from
    /// it, not built as trees. Not at load, where it would cost every VM the memory of every inlined schema.
    listing_text: std::sync::OnceLock<String>,
}

/// What preparing a call produced.
#[derive(Debug)]
pub enum Prepared {
    /// The call is answered without an upstream (a template-only tool, or invalid arguments).
    Done(Value),
    /// Send this request, then call [`Tool::finish`] with the answer and these arguments.
    Upstream(UpstreamRequest, Value),
}

fn tool_name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// An `args` error naming the argument (`'name': what`): one outlined copy for the checks of
/// [`Tool::compile`].
#[inline(never)]
fn arg_error(name: &str, what: &str) -> (String, String) {
    ("args".to_string(), format!("'{name}': {what}"))
}

impl Tool {
    /// Compiles one tool; errors name the field at fault.
    pub fn compile(
        server: &ServerConfig,
        cfg: &ToolConfig,
        templates: &mut Templates,
        config: &MjValue,
    ) -> Result<Tool, (String, String)> {
        let err = crate::fields::located;
        if !tool_name_ok(&cfg.name) {
            return Err(err("name", "use 1-128 characters from A-Z a-z 0-9 _ - .".into()));
        }
        icon::validate(&cfg.icons)?;
        let input_schema = match (&cfg.input_schema, cfg.args.is_empty()) {
            (Some(_), false) => return Err(err("inputSchema", "give either args or inputSchema, not both".into())),
            (Some(s), true) => s.clone(),
            (None, _) => {
                // Higress's configs carry argument schemas as their authors meant them (`higress::arg_types`).
                let higress_args;
                let args = match server.semantics.is_some_and(Semantics::is_higress) {
                    true => {
                        higress_args = higress::arg_types(&cfg.args);
                        &higress_args
                    }
                    false => &cfg.args,
                };
                schema::from_args(args).map_err(|e| err("args", e))?
            }
        };
        if input_schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(err("inputSchema", "must be an object schema (\"type\": \"object\")".into()));
        }
        let defs = server.compiled_defs.clone();
        let input = Validator::with_defs(input_schema, defs.clone()).map_err(|e| err("inputSchema", e))?;
        // The tool's request templates may read the answers to its input requests, and only then.
        templates.set_input_visible(cfg.input_requests.is_some());
        let inputs = match &cfg.input_requests {
            Some(raw) => {
                let prefix = format!("{}/{}", server.name, cfg.name);
                Some(crate::input::Inputs::compile(raw, &prefix, &input.declared_names(), templates, config)?)
            }
            None => None,
        };
        let output = match &cfg.output_schema {
            Some(s) if s.get("type").and_then(Value::as_str) != Some("object") => {
                return Err(err("outputSchema", "must be an object schema (\"type\": \"object\")".into()))
            }
            Some(s) => Some(Validator::for_answer_with_defs(s.clone(), defs).map_err(|e| err("outputSchema", e))?),
            None => None,
        };
        let form_body = cfg.request_template.as_ref().is_some_and(|r| r.args_to_form_body || r.args_to_multipart_body);
        let mut placements: Vec<Placement> = Vec::new();
        for a in &cfg.args {
            if a.file && a.position != Some(Position::Body) {
                return Err(arg_error(&a.name, "a file argument goes in the body (position: body)"));
            }
            let Some(position) = a.position else {
                if a.style.is_some() || a.explode.is_some() {
                    return Err(arg_error(&a.name, "style and explode need a position"));
                }
                continue;
            };
            if position == Position::Body && !form_body && (a.style.is_some() || a.explode.is_some()) {
                return Err(arg_error(&a.name, "style and explode apply to form bodies only"));
            }
            let mut encoding = Encoding::resolve(position, a.style, a.explode).map_err(|e| arg_error(&a.name, &e))?;
            if a.allow_reserved && position != Position::Query {
                return Err(arg_error(&a.name, "allowReserved applies to query parameters only"));
            }
            encoding.allow_reserved = a.allow_reserved;
            if let Some(ct) = &a.content_type {
                if position != Position::Body || !form_body {
                    return Err(arg_error(&a.name, "contentType applies to form and multipart body fields only"));
                }
                if ct.is_empty() || !ct.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
                    return Err(arg_error(&a.name, "contentType must be a media type of visible ASCII"));
                }
            }
            placements.push(Placement {
                arg: a.name.clone(),
                wire: a.param_name.clone().unwrap_or_else(|| a.name.clone()),
                position,
                encoding,
                file: a.file,
                content_type: a.content_type.clone(),
            });
        }
        for p in &placements {
            let bad = match p.position {
                Position::Header => !is_token(&p.wire) || is_forbidden_header(&p.wire),
                Position::Cookie => !is_token(&p.wire),
                _ => p.wire.is_empty(),
            };
            if bad {
                return Err(err("args", format!("'{}' cannot be used as a {:?} parameter name", p.wire, p.position)));
            }
        }
        let dialect = server.template_dialect.unwrap_or_default();
        let semantics = server.semantics.unwrap_or_default();
        if semantics == Semantics::Higress {
            // Higress's request building lives in the builds with its dialect, which its configs need anyway.
            if !cfg!(feature = "go-templates") {
                return Err(err(
                    "semantics",
                    "this build has no Higress semantics (cargo feature `go-templates`): load mcp_gateway_go.wasm \
                     (Envoy) or mcp_gateway_higress.wasm (Higress), or set the server's `semantics: native`"
                        .into(),
                ));
            }
            let rt = cfg.request_template.as_ref();
            if rt.is_some_and(|r| r.args_to_multipart_body) || cfg.args.iter().any(|a| a.file) {
                return Err(err(
                    "requestTemplate",
                    "argsToMultipartBody and file arguments need `semantics: native`".into(),
                ));
            }
            if let Some(a) = cfg.args.iter().find(|a| a.style.is_some() || a.explode.is_some()) {
                return Err(arg_error(
                    &a.name,
                    "style and explode need `semantics: native` (Higress writes arrays and objects as JSON text)",
                ));
            }
        }
        let compile = |templates: &mut Templates, field: &str, src: &str, role: Role| {
            let spec = Spec { escape: Escape::None, dialect, role };
            let id = templates
                .add_spec(&format!("{}/{}/{field}", server.name, cfg.name), src, spec)
                .map_err(|e| err(field, e))?;
            templates.check_config_keys(&id, src, config).map_err(|e| err(field, e))?;
            Ok(id)
        };
        // Request-side templates that depend only on config are rendered once here.
        let compile_request = |templates: &mut Templates, field: &str, src: &str, escape: Escape| {
            let spec = Spec { escape, dialect, role: Role::Request };
            templates
                .add_resolving(&format!("{}/{}/{field}", server.name, cfg.name), src, spec, config)
                .map_err(|e| err(field, e))
        };
        let rt = cfg.request_template.clone().unwrap_or_default();
        let request = match rt.url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            None => {
                if rt.body.is_some() || !rt.headers.is_empty() || rt.method.is_some() {
                    return Err(err(
                        "requestTemplate.url",
                        "is required when the request template sets a method, headers or body".into(),
                    ));
                }
                if cfg.response_template.as_ref().is_none_or(|r| {
                    r.body.is_none() && r.prepend_body.is_none() && r.append_body.is_none() && r.content.is_none()
                }) {
                    return Err(err(
                        "requestTemplate.url",
                        "a tool needs a url, or a responseTemplate to answer from".into(),
                    ));
                }
                None
            }
            Some(url) => {
                // Higress's configs may take the whole base URL from `config` (`{{.config.baseUrl}}/x`): the
                // operator's value is put in at load, so its host is as literal as a written one.
                let url = match semantics.is_higress() {
                    true => higress::config_base(url, &server.config).map_err(|e| err("requestTemplate.url", e))?,
                    false => url.to_string(),
                };
                let (host, path_src) = split_url(&url).map_err(|e| err("requestTemplate.url", e))?;
                if path_src.starts_with("//") {
                    return Err(err(
                        "requestTemplate.url",
                        "starts with '//', which would name a host; write http://host/path, or a path".into(),
                    ));
                }
                if let Some(segment) = dot_segment(&path_src) {
                    return Err(err(
                        "requestTemplate.url",
                        format!("contains the dot segment '{segment}'; write the path it stands for"),
                    ));
                }
                let target = Target::resolve(server.upstream.as_ref(), cfg.upstream.as_ref(), host.as_deref())
                    .map_err(|e| err("upstream", e))?;
                let method = rt.method.as_deref().unwrap_or("GET").to_ascii_uppercase();
                if !is_token(&method) {
                    return Err(err("requestTemplate.method", format!("'{method}' is not an HTTP method")));
                }
                // Higress lets a body template win over argsToJsonBody/argsToFormBody, and refuses two `argsTo*`.
                let modes = match semantics.is_higress() {
                    false => [rt.args_to_json_body, rt.args_to_form_body, rt.args_to_multipart_body, rt.body.is_some()],
                    true => [rt.args_to_json_body, rt.args_to_form_body, rt.args_to_url_param, false],
                };
                if modes.iter().filter(|m| **m).count() > 1 && semantics.is_higress() {
                    return Err(err(
                        "requestTemplate",
                        "argsToJsonBody, argsToUrlParam and argsToFormBody are exclusive".into(),
                    ));
                }
                if modes.iter().filter(|m| **m).count() > 1 {
                    return Err(err(
                        "requestTemplate",
                        "body, argsToJsonBody, argsToFormBody and argsToMultipartBody are exclusive".into(),
                    ));
                }
                let mut headers = Vec::new();
                let mut declared_content_type = None;
                for (i, h) in rt.headers.iter().enumerate() {
                    let field = format!("requestTemplate.headers[{i}]");
                    if !is_token(&h.key) || is_forbidden_header(&h.key) {
                        return Err(err(&field, format!("'{}' cannot be set by a template", h.key)));
                    }
                    if h.key.eq_ignore_ascii_case("content-type") {
                        declared_content_type = Some(h.value.to_ascii_lowercase());
                    }
                    headers.push((
                        h.key.to_ascii_lowercase(),
                        compile_request(templates, &field, &h.value, Escape::None)?,
                    ));
                }
                let body = match &rt.body {
                    Some(b) => Some(compile_request(templates, "requestTemplate.body", b, Escape::None)?),
                    None => None,
                };
                // Counted by a loop (a filtered collect instantiated its adapters for this closure alone).
                let (mut in_body, mut first_file, mut any_file) = (0usize, false, false);
                for p in placements.iter() {
                    if p.position == Position::Body {
                        first_file |= in_body == 0 && p.file;
                        any_file |= p.file;
                        in_body += 1;
                    }
                }
                // Higress sends `position: body` arguments as a form when a header declares one.
                let form_declared = semantics.is_higress()
                    && declared_content_type
                        .as_deref()
                        .is_some_and(|c| c.contains("application/x-www-form-urlencoded"));
                let body_mode = if rt.args_to_form_body || (form_declared && !rt.args_to_json_body && in_body > 0) {
                    BodyMode::Form
                } else if rt.args_to_multipart_body {
                    BodyMode::Multipart
                } else if !rt.args_to_json_body && body.is_none() && in_body == 1 && first_file {
                    BodyMode::File
                } else if rt.args_to_json_body || (body.is_none() && in_body > 0) {
                    BodyMode::Json
                } else {
                    BodyMode::None
                };
                if any_file && !matches!(body_mode, BodyMode::Multipart | BodyMode::File) {
                    return Err(err(
                        "args",
                        "a file argument needs argsToMultipartBody, or to be the only body argument".into(),
                    ));
                }
                let credential = match (&rt.security, &server.default_upstream_security) {
                    (Some(r), _) => Some(
                        Credential::compile(&server.security_schemes, r)
                            .map_err(|e| err("requestTemplate.security", e))?,
                    ),
                    (None, Some(r)) => Some(
                        Credential::compile(&server.security_schemes, r)
                            .map_err(|e| err("defaultUpstreamSecurity (of the server)", e))?,
                    ),
                    (None, None) => None,
                };
                Some(RequestPlan {
                    credential,
                    target,
                    method,
                    url: compile_request(templates, "requestTemplate.url", &path_src, Escape::Url)?,
                    headers,
                    body,
                    body_mode,
                    rest_to_query: rt.args_to_url_param,
                    rest_to_body: rt.args_to_json_body || rt.args_to_form_body,
                    declared_content_type,
                })
            }
        };
        let resp = cfg.response_template.clone().unwrap_or_default();
        if resp.body.is_some() && (resp.prepend_body.is_some() || resp.append_body.is_some()) {
            return Err(err("responseTemplate", "body excludes prependBody/appendBody".into()));
        }
        if resp.content.is_some() && (resp.body.is_some() || resp.prepend_body.is_some() || resp.append_body.is_some())
        {
            return Err(err("responseTemplate.content", "content excludes body, prependBody and appendBody".into()));
        }
        if resp.content.as_ref().is_some_and(Vec::is_empty) {
            return Err(err("responseTemplate.content", "must list at least one block".into()));
        }
        // With no url, a result template renders over the call itself, as a request template does.
        let result_role = if request.is_some() { Role::Result } else { Role::Request };
        let opt = |templates: &mut Templates,
                   field: &str,
                   src: &Option<String>,
                   role: Role|
         -> Result<Option<TemplateId>, (String, String)> {
            src.as_deref().map(|s| compile(templates, field, s, role)).transpose()
        };
        // Higress adds prependBody and appendBody as they are written: in its dialect they are not templates.
        let text = |templates: &mut Templates, field: &str, src: &Option<String>| match dialect {
            Dialect::Go => Ok(src.as_deref().map(Templates::literal)),
            Dialect::Jinja => opt(templates, field, src, result_role),
        };
        let response_body = opt(templates, "responseTemplate.body", &resp.body, result_role)?;
        let prepend = text(templates, "responseTemplate.prependBody", &resp.prepend_body)?;
        let append = text(templates, "responseTemplate.appendBody", &resp.append_body)?;
        let error_body = opt(templates, "errorResponseTemplate", &cfg.error_response_template, Role::Error)?;
        let content = match &resp.content {
            Some(blocks) => {
                let mut compile_block = |t: &mut Templates, field: &str, src: &str| {
                    t.add(&format!("{}/{}/{field}", server.name, cfg.name), src, Escape::None)
                };
                content::compile_all(blocks, "responseTemplate.content", templates, &mut compile_block)?
            }
            None => Vec::new(),
        };
        let reads_base64 = [&response_body, &prepend, &append]
            .into_iter()
            .flatten()
            .chain(content.iter().flat_map(Content::templates))
            .any(|t| templates.reads(t, "bodyBase64"));
        let reads = |t: &Option<TemplateId>| t.as_ref().is_some_and(|t| templates.reads_answer(t));
        let result_reads_answer = reads(&response_body)
            || reads(&prepend)
            || reads(&append)
            || content.iter().any(|c| c.templates().any(|t| templates.reads_answer(t)));
        let error_reads_answer = reads(&error_body);

        let downstream = match (&cfg.security, &server.default_downstream_security) {
            (Some(r), _) => Some(Downstream::compile(&server.security_schemes, r).map_err(|e| err("security", e))?),
            (None, Some(r)) => Some(
                Downstream::compile(&server.security_schemes, r)
                    .map_err(|e| err("defaultDownstreamSecurity (of the server)", e))?,
            ),
            (None, None) => None,
        };
        if let (Some(d), Some(plan)) = (&downstream, &request) {
            if d.passthrough && plan.credential.is_none() {
                let field =
                    if cfg.security.is_some() { "security" } else { "defaultDownstreamSecurity (of the server)" };
                return Err(err(
                    field,
                    "passthrough needs an upstream requirement (requestTemplate.security or the server's \
                     defaultUpstreamSecurity) saying where the client's credential goes"
                        .into(),
                ));
            }
        }
        let forward_authorization = server.passthrough_auth_header
            && !downstream.as_ref().is_some_and(|d| matches!(d.source, Source::Authorization(_)));
        templates.set_input_visible(false);
        Ok(Tool {
            inputs,
            downstream,
            forward_authorization,
            name: cfg.name.clone(),
            title: cfg.title.clone(),
            description: cfg.description.clone(),
            annotations: cfg.annotations.clone(),
            icons: cfg.icons.clone(),
            required_client_capabilities: cfg.required_client_capabilities.clone(),
            input,
            output,
            placements,
            request,
            response_body,
            prepend,
            append,
            error_body,
            content,
            reads_base64,
            result_reads_answer,
            error_reads_answer,
            semantics,
            integers: match semantics.is_higress() {
                true => {
                    let mut out = Vec::new();
                    for a in &cfg.args {
                        if matches!(a.kind.as_deref(), Some("integer" | "int")) {
                            out.push(a.name.clone());
                        }
                    }
                    out
                }
                false => Vec::new(),
            },
            listing_text: std::sync::OnceLock::new(),
        })
    }

    /// What a request must be read for before this tool is called: where its clients present credentials.
    pub fn credential_sources(&self) -> impl Iterator<Item = Source> + '_ {
        let whole = self.forward_authorization.then_some(Source::WholeAuthorization);
        self.downstream.iter().map(|d| d.source.clone()).chain(whole)
    }

    /// How the tool's request is sent; `None` for a tool that answers from its template alone.
    pub fn dispatch(&self) -> Option<crate::upstream::Dispatch> {
        self.request.as_ref().map(|plan| plan.target.dispatch)
    }

    /// [`Tool::listing`] as JSON text, serialised once per tool (for `tools/list` pages).
    pub fn listing_json(&self) -> &str {
        self.listing_text.get_or_init(|| self.listing().to_string())
    }

    /// The tool as `tools/list` shows it.
    pub fn listing(&self) -> Value {
        let mut listing = Map::new();
        listing.insert("name".into(), Value::from(self.name.as_str()));
        if let Some(t) = &self.title {
            listing.insert("title".into(), Value::from(t.as_str()));
        }
        listing.insert("description".into(), Value::from(self.description.as_str()));
        listing.insert("inputSchema".into(), self.input.listing());
        if let Some(o) = &self.output {
            listing.insert("outputSchema".into(), o.listing());
        }
        if let Some(a) = &self.annotations {
            listing.insert("annotations".into(), Value::Object(a.clone()));
        }
        if !self.icons.is_empty() {
            listing.insert("icons".into(), icon::to_json(&self.icons));
        }
        Value::Object(listing)
    }

    /// Whether a template turns a successful answer into the result (rather than the answer as it is).
    pub fn renders_answer(&self) -> bool {
        self.response_body.is_some() || self.prepend.is_some() || self.append.is_some() || !self.content.is_empty()
    }

    /// Coerces and validates arguments, then renders the upstream request (or answers directly).
    pub fn prepare(&self, templates: &Templates, config: &MjValue, arguments: Option<&Value>) -> Prepared {
        self.prepare_for(templates, config, arguments, &Presented::NONE)
    }

    /// [`Tool::prepare`] for a client that presented credentials (read where [`Tool::credential_sources`]
    /// says): the downstream requirement may pass one upstream.
    pub fn prepare_for(
        &self,
        templates: &Templates,
        config: &MjValue,
        arguments: Option<&Value>,
        presented: &Presented,
    ) -> Prepared {
        self.prepare_owned(templates, config, arguments.cloned(), presented)
    }

    /// [`Tool::prepare_for`] taking the arguments, which it coerces in place: the request path hands over
    /// the ones it parsed instead of copying them.
    pub fn prepare_owned(
        &self,
        templates: &Templates,
        config: &MjValue,
        arguments: Option<Value>,
        presented: &Presented,
    ) -> Prepared {
        let mut args = match arguments {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m,
            Some(_) => return Prepared::Done(error_result("Invalid arguments: `arguments` must be an object")),
        };
        if self.semantics.is_higress() {
            higress::coerce(&mut args, &self.integers);
        }
        schema::coerce_and_default(self.input.schema(), &mut args);
        let too_complex =
            |e: String| Prepared::Done(error_result(&format!("Tool {} cannot check its arguments: {e}", self.name)));
        let undeclared = match self.input.undeclared(&args) {
            Ok(names) => names,
            Err(e) => return too_complex(e),
        };
        for name in &undeclared {
            args.remove(name);
        }
        let mut args = Value::Object(args);
        if let Err(e) = self.input.normalize_integers(&mut args) {
            return too_complex(e);
        }
        let mut problems = self.input.validate(&args);
        // A path placeholder without its value would go upstream as the literal `{name}` (found by
        // `properties::arguments_never_escape_their_place`); OpenAPI makes path parameters required for this.
        for p in self.placements.iter().filter(|p| p.position == Position::Path && args.get(&p.arg).is_none()) {
            let missing = format!("`{}`: is required", p.arg);
            if !problems.contains(&missing) {
                problems.push(format!("{missing} (it is part of the url path)"));
            }
        }
        // Higress keeps declared arguments only, dropping the rest silently.
        if !undeclared.is_empty() && !self.semantics.is_higress() {
            let accepted = self.input.declared_names();
            let accepted = if accepted.is_empty() {
                "this tool takes no arguments".to_string()
            } else {
                format!("it accepts: {}", accepted.join(", "))
            };
            for n in &undeclared {
                problems.push(format!("`{n}`: is not an accepted argument ({accepted})"));
            }
        }
        if !problems.is_empty() {
            return Prepared::Done(error_result(&format!(
                "Invalid arguments for tool {}:\n- {}",
                self.name,
                problems.join("\n- ")
            )));
        }
        let Some(plan) = &self.request else {
            return Prepared::Done(self.render_result(templates, config, &args, None));
        };
        #[cfg(feature = "go-templates")]
        let built = match self.semantics {
            Semantics::Native => self.build_request(plan, templates, config, &args, presented),
            Semantics::Higress => self.build_higress(plan, templates, config, &args, presented),
        };
        // Refused at load in this build: Higress's semantics come with its dialect.
        #[cfg(not(feature = "go-templates"))]
        let built = self.build_request(plan, templates, config, &args, presented);
        match built {
            Ok(req) => Prepared::Upstream(req, args),
            Err(e) => Prepared::Done(error_result(&format!("Could not build the upstream request: {e}"))),
        }
    }

    /// The credentials a request carries, for both semantics: the client's `Authorization` when
    /// `passthroughAuthHeader` forwards it (unless a header template set one), then the upstream credential,
    /// which is the client's own when the downstream requirement passes it through.
    fn secure(
        &self,
        plan: &RequestPlan,
        presented: &Presented,
        headers: &mut Vec<(String, String)>,
        query: &mut Vec<(String, String)>,
        cookies: &mut Vec<String>,
    ) {
        if let Some(auth) = presented.authorization().filter(|_| self.forward_authorization) {
            if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
                headers.push(("authorization".into(), auth.to_string()));
            }
        }
        if let Some(credential) = &plan.credential {
            // The client's own credential when passed through, else the caller's own upstream credential
            // (per-user credentials), else the configured one.
            let passed = self.downstream.as_ref().filter(|d| d.passthrough).and_then(|d| d.read(presented));
            let passed = passed.or_else(|| presented.own());
            credential.apply(passed, headers, query, cookies);
        }
    }

    fn build_request(
        &self,
        plan: &RequestPlan,
        templates: &Templates,
        config: &MjValue,
        args: &Value,
        presented: &Presented,
    ) -> Result<UpstreamRequest, String> {
        let ctx = Data::request(args, config);
        let mut path = templates.render(&plan.url, &ctx)?;
        let no_args = Map::new();
        let obj = args.as_object().unwrap_or(&no_args);
        // Query and form pairs are percent-encoded as they are made (see `encoding`).
        let mut query: Vec<(String, String)> = Vec::new();
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut cookies: Vec<String> = Vec::new();
        let mut body_args = Map::new();
        let mut form: Vec<(String, String)> = Vec::new();
        let mut parts: Vec<encoding::Part> = Vec::new();
        let text_parts = |parts: &mut Vec<encoding::Part>, name: &str, value: &Value, e: Encoding| {
            // A multipart field: an object without a style is a JSON part, as OpenAPI's default says.
            if value.is_object() && e.json_objects {
                let data = serde_json::to_vec(value).unwrap_or_default();
                let ct = Some("application/json".to_string());
                parts.push(encoding::Part { name: name.into(), filename: None, content_type: ct, data });
                return;
            }
            for (k, v) in encoding::raw_pairs(name, value, e) {
                parts.push(encoding::Part { name: k, filename: None, content_type: None, data: v.into_bytes() });
            }
        };
        for (name, value) in obj {
            let Some(p) = self.placements.iter().find(|p| &p.arg == name) else {
                if plan.rest_to_query {
                    encoding::pairs(name, value, Encoding::QUERY, &mut query);
                } else if plan.body_mode == BodyMode::Form {
                    encoding::pairs(name, value, Encoding::FORM_FIELD, &mut form);
                } else if plan.body_mode == BodyMode::Multipart {
                    text_parts(&mut parts, name, value, Encoding::FORM_FIELD);
                } else if plan.body_mode == BodyMode::Json {
                    body_args.insert(name.clone(), value.clone());
                }
                continue;
            };
            let wire = p.wire.as_str();
            match p.position {
                Position::Path => path = path.replace(&format!("{{{wire}}}"), &encoding::path(wire, value, p.encoding)),
                Position::Query => encoding::pairs(wire, value, p.encoding, &mut query),
                Position::Header => headers.push((wire.to_ascii_lowercase(), encoding::header(value, p.encoding))),
                Position::Cookie => encoding::cookies(wire, value, p.encoding, &mut cookies),
                Position::Body if plan.body_mode == BodyMode::Form && p.json_text(value) => {
                    let json = serde_json::to_string(value).unwrap_or_default();
                    encoding::pairs(wire, &Value::String(json), p.encoding, &mut form)
                }
                Position::Body if plan.body_mode == BodyMode::Form => {
                    encoding::pairs(wire, value, p.encoding, &mut form)
                }
                Position::Body if p.file => {
                    let mut files = encoding::file_parts(wire, value)?;
                    files
                        .iter_mut()
                        .filter(|f| f.content_type.is_none())
                        .for_each(|f| f.content_type.clone_from(&p.content_type));
                    parts.extend(files)
                }
                Position::Body if plan.body_mode == BodyMode::Multipart && p.content_type.is_some() => {
                    let data = match value {
                        Value::String(s) if !p.json_text(value) => s.clone().into_bytes(),
                        other => serde_json::to_vec(other).unwrap_or_default(),
                    };
                    parts.push(encoding::Part {
                        name: wire.into(),
                        filename: None,
                        content_type: p.content_type.clone(),
                        data,
                    })
                }
                Position::Body if plan.body_mode == BodyMode::Multipart => {
                    text_parts(&mut parts, wire, value, p.encoding)
                }
                Position::Body => {
                    body_args.insert(wire.to_string(), value.clone());
                }
            }
        }
        check_path(&mut path, obj)?;
        for (name, tid) in &plan.headers {
            headers.push((name.clone(), templates.render(tid, &ctx)?));
        }
        self.secure(plan, presented, &mut headers, &mut query, &mut cookies);
        if !query.is_empty() {
            path.push(if path.contains('?') { '&' } else { '?' });
            path.push_str(&encode_pairs(&query));
        }
        if !cookies.is_empty() {
            headers.push(("cookie".into(), cookies.join("; ")));
        }
        let mut content_type = plan.declared_content_type.clone();
        let rendered_body = match &plan.body {
            Some(tid) => Some(templates.render(tid, &ctx)?).filter(|b| !b.trim().is_empty()),
            None => None,
        };
        let body = if let Some(rendered) = rendered_body {
            let looks_json = serde_json::from_slice::<Value>(rendered.as_bytes()).is_ok();
            match content_type.as_deref() {
                Some(ct) if ct.contains("json") && !looks_json => {
                    return Err("the body template did not produce valid JSON for a JSON Content-Type".into())
                }
                Some(_) => {}
                None => {
                    content_type =
                        Some(if looks_json { "application/json" } else { "text/plain; charset=utf-8" }.into())
                }
            }
            Some(rendered.into_bytes())
        } else if plan.body_mode == BodyMode::Json {
            content_type.get_or_insert_with(|| "application/json".into());
            Some(serde_json::to_vec(&Value::Object(body_args)).unwrap_or_default())
        } else if plan.body_mode == BodyMode::Form {
            content_type.get_or_insert_with(|| "application/x-www-form-urlencoded".into());
            Some(encode_pairs(&form).into_bytes())
        } else if plan.body_mode == BodyMode::Multipart {
            let (ct, body) = encoding::multipart(&parts);
            // The boundary is ours: a declared multipart Content-Type is replaced.
            headers.retain(|(k, _)| k != "content-type");
            headers.push(("content-type".into(), ct));
            Some(body)
        } else if plan.body_mode == BodyMode::File {
            match parts.pop() {
                None => None,
                Some(file) => {
                    if let Some(ct) = file.content_type {
                        headers.retain(|(k, _)| k != "content-type");
                        headers.push(("content-type".into(), ct));
                    } else if plan.declared_content_type.is_none() {
                        content_type = Some("application/octet-stream".into());
                    }
                    Some(file.data)
                }
            }
        } else {
            None
        };
        if body.is_some() && plan.declared_content_type.is_none() {
            if let Some(ct) = content_type {
                headers.push(("content-type".into(), ct));
            }
        }
        check_headers(&headers)?;
        Ok(UpstreamRequest {
            dispatch: plan.target.dispatch,
            cluster: plan.target.cluster.clone(),
            method: plan.method.clone(),
            authority: plan.target.authority.clone(),
            path,
            headers,
            body,
            timeout_ms: plan.target.timeout_ms,
        })
    }

    /// The upstream request as Higress builds it (`rest_server.go`, `RestMCPTool.Call`; the rules, with links,
    /// in `docs/higress-semantics.md`): arguments written as Go prints them, path arguments in place of
    /// `{name}`, the query rebuilt by Go's `url.Values` (keys sorted), JSON bodies as Go marshals them,
    /// `Accept: */*` unless set. Values never change the URL's structure (which in Higress they can).
    #[cfg(feature = "go-templates")]
    fn build_higress(
        &self,
        plan: &RequestPlan,
        templates: &Templates,
        config: &MjValue,
        args: &Value,
        presented: &Presented,
    ) -> Result<UpstreamRequest, String> {
        let ctx = Data::request(args, config);
        let mut url = templates.render(&plan.url, &ctx)?;
        let no_args = Map::new();
        let obj = args.as_object().unwrap_or(&no_args);
        let mut query_sets: Vec<(String, String)> = Vec::new();
        let mut arg_headers: Vec<(String, String)> = Vec::new();
        let mut cookies: Vec<String> = Vec::new();
        let mut body_args = Map::new();
        let mut form = higress::Query::default();
        for (name, value) in obj {
            let text = higress::arg_text(value, self.integers.contains(name));
            let Some(p) = self.placements.iter().find(|p| &p.arg == name) else {
                if plan.rest_to_query {
                    query_sets.push((name.clone(), text));
                } else if !plan.rest_to_body {
                    // Dropped: Higress sends an argument without a position only when an `argsTo*` says so.
                } else if plan.body_mode == BodyMode::Form {
                    form.set(name, text);
                } else if plan.body_mode == BodyMode::Json {
                    body_args.insert(name.clone(), value.clone());
                }
                continue;
            };
            let wire = p.wire.as_str();
            match p.position {
                Position::Path => url = higress::substitute(&url, wire, &text),
                Position::Query => query_sets.push((wire.to_string(), text)),
                Position::Header => arg_headers.push((wire.to_ascii_lowercase(), text)),
                Position::Cookie => cookies.push(format!("{wire}={}", higress::cookie_value(&text))),
                Position::Body if plan.body_mode == BodyMode::Form => form.set(wire, text),
                Position::Body => {
                    body_args.insert(wire.to_string(), value.clone());
                }
            }
        }
        let (path, raw_query) = match url.find('?') {
            Some(i) => (&url[..i], &url[i + 1..]),
            None => (url.as_str(), ""),
        };
        let mut path = higress::go_path(path);
        check_path(&mut path, obj)?;
        let mut query = higress::Query::parse(raw_query);
        for (k, v) in query_sets {
            query.set(&k, v);
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for (name, tid) in &plan.headers {
            headers.push((name.clone(), templates.render(tid, &ctx)?));
        }
        headers.extend(arg_headers);
        let body = match &plan.body {
            Some(tid) => {
                let rendered = templates.render(tid, &ctx)?;
                if !higress::has_content_type(&headers, "application/json") && higress::body_is_json(&rendered) {
                    headers.push(("content-type".into(), higress::JSON_CONTENT_TYPE.into()));
                }
                let declared_json = plan.declared_content_type.as_deref().is_some_and(|c| c.contains("json"));
                if declared_json
                    && !rendered.trim().is_empty()
                    && serde_json::from_slice::<Value>(rendered.as_bytes()).is_err()
                {
                    return Err("the body template did not produce valid JSON for a JSON Content-Type".into());
                }
                Some(rendered.into_bytes()).filter(|b| !b.is_empty())
            }
            None if plan.body_mode == BodyMode::Json => {
                if !higress::has_content_type(&headers, "application/json") {
                    headers.push(("content-type".into(), higress::JSON_CONTENT_TYPE.into()));
                }
                Some(higress::go_json(&Value::Object(body_args)).into_bytes())
            }
            None if plan.body_mode == BodyMode::Form => {
                if !higress::has_content_type(&headers, "application/x-www-form-urlencoded") {
                    headers.push(("content-type".into(), "application/x-www-form-urlencoded".into()));
                }
                Some(form.encode().into_bytes())
            }
            None => None,
        };
        if !higress::has_header(&headers, "accept") {
            headers.push(("accept".into(), "*/*".into()));
        }
        // Security last, as Higress applies it; a query credential joins the rebuilt query.
        let mut pairs = Vec::new();
        self.secure(plan, presented, &mut headers, &mut pairs, &mut cookies);
        for (k, v) in pairs {
            query.set_encoded(&k, &v);
        }
        if !cookies.is_empty() {
            match headers.iter_mut().find(|(k, _)| k.eq_ignore_ascii_case("cookie")) {
                Some((_, v)) => {
                    v.push_str("; ");
                    v.push_str(&cookies.join("; "));
                }
                None => headers.push(("cookie".into(), cookies.join("; "))),
            }
        }
        let query = query.encode();
        if !query.is_empty() {
            path.push('?');
            path.push_str(&query);
        }
        check_headers(&headers)?;
        Ok(UpstreamRequest {
            dispatch: plan.target.dispatch,
            cluster: plan.target.cluster.clone(),
            method: plan.method.clone(),
            authority: plan.target.authority.clone(),
            path,
            headers,
            body,
            timeout_ms: plan.target.timeout_ms,
        })
    }

    /// Turns the upstream answer into a `CallToolResult`.
    pub fn finish(&self, templates: &Templates, config: &MjValue, args: &Value, outcome: UpstreamResult) -> Value {
        match outcome {
            UpstreamResult::Failed(reason) => error_result(&format!("The upstream request failed: {reason}")),
            UpstreamResult::Response { status, headers, body } => {
                self.render_result(templates, config, args, Some(Answer { status, headers, body }))
            }
        }
    }

    fn render_result(&self, templates: &Templates, config: &MjValue, args: &Value, answer: Option<Answer>) -> Value {
        let upstream_answer = answer.is_some();
        let (status, headers, body) = match answer {
            Some(a) => (a.status, a.headers, a.body),
            None => (200, Vec::new(), Vec::new()),
        };
        let ok = (200..300).contains(&status);
        let header = |name: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str());
        let raw_type = header("content-type").unwrap_or_default();
        let content_type = raw_type.to_ascii_lowercase();
        let media = ["image/", "audio/"].into_iter().find(|m| content_type.starts_with(m));
        if let (true, Some(media), true) = (ok, media, self.content.is_empty()) {
            // Higress gives an image the answer's Content-Type as it came, parameters and all
            // (`SendMCPToolImageResult`); native semantics give the bare media type.
            let mime = match self.semantics.is_higress() && media == "image/" {
                true => raw_type.trim().to_string(),
                false => content_type.split(';').next().unwrap_or_default().trim().to_string(),
            };
            let data = crate::b64::STANDARD.encode(&body);
            let kind = media.trim_end_matches('/');
            let block =
                object(vec![("type", Value::from(kind)), ("data", Value::from(data)), ("mimeType", Value::from(mime))]);
            return tool_result(vec![block], false);
        }
        let body_base64 = if ok && self.reads_base64 { crate::b64::STANDARD.encode(&body) } else { String::new() };
        // Valid UTF-8 (the common case) is taken over without a copy.
        let text = String::from_utf8(body).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        let empty_answer = text.trim().is_empty();
        // Parsing the answer and building a template context cost time on large bodies: do it only when a
        // template or the output schema will look at it.
        let uses_template = if ok { self.renders_answer() } else { self.error_body.is_some() };
        let (parsed, unparseable): (Option<Arc<Value>>, Option<String>) = if text.is_empty()
            || !(uses_template || (ok && self.output.is_some()))
        {
            (None, None)
        } else {
            match serde_json::from_slice(text.as_bytes()) {
                Ok(v) => (Some(Arc::new(v)), None),
                Err(e) if !empty_answer && claims_json(header("content-type"), &text) => (None, Some(json_failure(&e))),
                Err(_) => (None, None),
            }
        };
        // An answer that says it is JSON but does not parse would render as if it were empty (or make the
        // outputSchema check fail for an unclear reason): the call fails and says why instead.
        if let Some(why) = &unparseable {
            if ok && (self.result_reads_answer || self.output.is_some()) {
                return error_result(&format!("The upstream answer could not be read: {why}"));
            }
        }
        let header_map: Map<String, Value> = if uses_template {
            let mut m = Map::new();
            for (k, v) in headers {
                m.insert(k.to_ascii_lowercase(), Value::from(v.as_str()));
            }
            m
        } else {
            Map::new()
        };
        let answer = AnswerData {
            parsed: parsed.clone(),
            body: text.as_str(),
            body_base64: &body_base64,
            status,
            headers: &header_map,
        };
        let ctx = Data::answer(args, config, answer);
        if !ok && self.semantics.is_higress() {
            // Higress: the error template over the answer and `_headers`; empty, or none: its own message.
            let message = match &self.error_body {
                Some(t) => match templates.render(t, &ctx) {
                    Ok(m) if !m.is_empty() => m,
                    Ok(_) => higress::call_failed(status, &text),
                    Err(e) => format!("error executing error response template: {e}"),
                },
                None => higress::call_failed(status, &text),
            };
            return error_result(&message);
        }
        if !ok {
            let message = match (&self.error_body, &unparseable) {
                (Some(_), Some(why)) if self.error_reads_answer => format!(
                    "HTTP {status}: {}\n(The errorResponseTemplate was not applied: {why}.)",
                    truncate(&text, ERROR_BODY_QUOTE)
                ),
                (Some(t), _) => {
                    templates.render(t, &ctx).unwrap_or_else(|e| format!("HTTP {status} (error template failed: {e})"))
                }
                (None, _) => format!("HTTP {status}: {}", truncate(&text, ERROR_BODY_QUOTE)),
            };
            let missing = self.request.as_ref().and_then(|r| r.credential.as_ref()).filter(|c| c.is_missing());
            let passing = self.downstream.as_ref().filter(|d| d.passthrough);
            if let (401 | 403, Some(c), Some(d)) = (status, missing, passing) {
                return error_result(&format!(
                    "{message}\n(The upstream credential for security scheme '{}' is the client's (scheme '{}', \
                     passthrough): none was presented, or the upstream refused it; the gateway has none of its own.)",
                    c.scheme, d.scheme
                ));
            }
            if let (401 | 403, Some(c)) = (status, missing) {
                return error_result(&format!(
                    "{message}\n(The gateway has no credential for security scheme '{}': the operator must set its \
                     defaultCredential.)",
                    c.scheme
                ));
            }
            return error_result(&message);
        }
        let blocks = if self.content.is_empty() {
            None
        } else {
            let mut blocks = Vec::with_capacity(self.content.len());
            for (i, c) in self.content.iter().enumerate() {
                match c.render_with(&|t: &TemplateId| templates.render(t, &ctx)) {
                    Ok(b) => blocks.push(b),
                    Err(e) => return error_result(&format!("The response template failed: content block {i}: {e}")),
                }
            }
            Some(blocks)
        };
        let rendered = if blocks.is_some() {
            Some(Ok(String::new()))
        } else if let Some(t) = &self.response_body {
            Some(templates.render(t, &ctx))
        } else if self.prepend.is_some() || self.append.is_some() {
            let part = |t: &Option<TemplateId>| t.as_ref().map_or(Ok(String::new()), |t| templates.render(t, &ctx));
            Some(part(&self.prepend).and_then(|p| part(&self.append).map(|a| format!("{p}{text}{a}"))))
        } else {
            None
        };
        drop(ctx);
        let text_out = match rendered {
            None => text,
            Some(Ok(t)) => t,
            Some(Err(e)) => return error_result(&format!("The response template failed: {e}")),
        };
        // Higress answers "success" for an upstream answer that leaves the result empty (a 204, say).
        let text_out = if text_out.is_empty() && self.semantics.is_higress() && upstream_answer {
            "success".to_string()
        } else {
            text_out
        };
        let content = match blocks {
            Some(b) => b,
            None => vec![text_block(text_out)],
        };
        let mut result = tool_result(content, false);
        if let Some(validator) = &self.output {
            // An empty answer (202, 204) is the empty object, if the schema allows one.
            let parsed = match parsed {
                None if empty_answer => Some(Arc::new(Value::Object(Map::new()))),
                other => other,
            };
            match parsed {
                Some(v) if v.is_object() => {
                    let problems = validator.validate(&v);
                    if !problems.is_empty() {
                        return error_result(&format!(
                            "The upstream answer does not match the tool's outputSchema:\n- {}",
                            problems.join("\n- ")
                        ));
                    }
                    result["structuredContent"] = Arc::try_unwrap(v).unwrap_or_else(|shared| (*shared).clone());
                }
                _ => {
                    return error_result(
                        "The upstream answer is not a JSON object, but the tool declares an outputSchema",
                    )
                }
            }
        }
        result
    }
}

/// Refuses a header a template or argument could not set, or a value with CR, LF or another control character.
fn check_headers(headers: &[(String, String)]) -> Result<(), String> {
    for (name, value) in headers {
        if !is_token(name) || is_forbidden_header(name) {
            return Err(format!("header '{name}' cannot be set"));
        }
        if !is_safe_header_value(value) {
            return Err(format!("header '{name}' would contain CR, LF or another control character; refused"));
        }
    }
    Ok(())
}

/// Refuses a rendered path that could reach another endpoint than the one written (dot segments, a leading
/// `//`, characters that are not URL syntax), and encodes what is left beyond ASCII.
fn check_path(path: &mut String, obj: &Map<String, Value>) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("the rendered url path must start with '/', got '{}'", truncate(path, 80)));
    }
    if let Some(bad) = path.chars().find(|c| c.is_whitespace() || c.is_control() || *c == '#') {
        return Err(format!("the rendered url contains {bad:?}; use percent-encoding"));
    }
    // Only an operator's `| safe` value or `config` text can still hold characters beyond ASCII (arguments are
    // encoded). They cannot be URL syntax, so encoding them keeps the URL's meaning and the request line ASCII.
    if !path.is_ascii() {
        *path = percent_encoding::utf8_percent_encode(path, &percent_encoding::AsciiSet::EMPTY).to_string();
    }
    if let Some(segment) = dot_segment(path) {
        let from = arguments_where(obj, &|v| simple_text(v).split('/').any(is_dot_segment));
        let from = if from.is_empty() { String::new() } else { format!(" (from argument {from})") };
        return Err(format!(
            "the url path would contain the dot segment '{segment}'{from}, which the upstream would resolve to \
             another path; refused"
        ));
    }
    // `//x` is a network-path reference: servers that parse the request target as a URL take `x` for the
    // host. Only an empty value in the first segment makes one (the url as written may not start so).
    if path.starts_with("//") {
        let from = arguments_where(obj, &|v| simple_text(v).is_empty());
        let from = if from.is_empty() { String::new() } else { format!(" (empty argument {from})") };
        return Err(format!(
            "the url path would start with '//'{from}, which the upstream could read as a host name; refused"
        ));
    }
    Ok(())
}

/// The names of the arguments whose value `picks`, in backticks and comma-separated (built by a loop: a
/// filtered collect per check instantiated its adapters for that closure alone).
fn arguments_where(obj: &Map<String, Value>, picks: &dyn Fn(&Value) -> bool) -> String {
    let mut out = String::new();
    for (k, v) in obj {
        if picks(v) {
            out.push_str(if out.is_empty() { "`" } else { ", `" });
            out.push_str(k);
            out.push('`');
        }
    }
    out
}

/// Whether an answer is meant to be JSON: its Content-Type says so (`application/json`, `*+json`), or it has
/// none and starts like a JSON object or array.
fn claims_json(content_type: Option<&str>, text: &str) -> bool {
    match content_type {
        Some(ct) => {
            let mime = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
            mime.ends_with("/json") || mime.ends_with("+json")
        }
        None => text.trim_start().starts_with(['{', '[']),
    }
}

/// Why a JSON answer did not parse, in words an operator can act on.
fn json_failure(e: &serde_json::Error) -> String {
    let mut why = format!("it is not valid JSON ({e})");
    if e.to_string().contains("recursion limit") {
        why.push_str("; the gateway reads answers nested at most 128 levels deep");
    }
    why
}

/// An upstream answer, owned: the body moves into the result text without a copy.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// A tool result reporting a failure to the model (not a protocol error).
pub fn error_result(message: &str) -> Value {
    tool_result(vec![text_block(message.to_string())], true)
}

/// A `text` content block.
fn text_block(text: String) -> Value {
    object(vec![("type", Value::from("text")), ("text", Value::from(text))])
}

/// A tool result of these content blocks (moved in: `json!` would copy them through serde).
fn tool_result(content: Vec<Value>, is_error: bool) -> Value {
    object(vec![("content", Value::Array(content)), ("isError", Value::Bool(is_error))])
}

/// Splits `scheme://host/path` into its literal host and the templated rest; a bare path is kept whole.
fn split_url(url: &str) -> Result<(Option<String>, String), String> {
    let lower = url.to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &url[7..]
    } else if lower.starts_with("https://") {
        &url[8..]
    } else if url.starts_with('/') || url.starts_with("{{") || url.starts_with("{%") {
        return Ok((None, url.to_string()));
    } else {
        return Err("must be an absolute http(s) URL or a path starting with '/'".into());
    };
    let (host, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    if host.is_empty() || host.contains(['{', '}', '%', '@']) {
        return Err("the host part must be literal (templates may not choose the upstream host)".into());
    }
    Ok((Some(host.to_string()), path))
}

/// A `.` or `..` segment of a URL path (before any `?`), written plainly or percent-encoded.
///
/// Such segments are refused rather than encoded: `%2E%2E` is no protection, because normalising proxies and
/// WHATWG URL parsers treat it as `..` too (Envoy's `normalize_path` turns `/a/b/%2E%2E/c` into `/a/c`), so an
/// argument could move the request to another path of the upstream.
fn dot_segment(path: &str) -> Option<&str> {
    let path = path.split('?').next().unwrap_or_default();
    path.split('/').find(|s| is_dot_segment(s))
}

fn is_dot_segment(segment: &str) -> bool {
    let plain = segment.to_ascii_lowercase().replace("%2e", ".");
    plain == "." || plain == ".."
}

/// An argument's value as it appears in a path ("simple" style), to tell which argument a dot segment came from.
fn simple_text(v: &Value) -> String {
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match v {
        Value::Array(items) => {
            let mut out = String::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&scalar(item));
            }
            out
        }
        other => scalar(other),
    }
}

/// `k=v&k2=v2` of pairs already percent-encoded (query strings and form bodies alike).
fn encode_pairs(pairs: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PluginConfig;
    use serde_json::json;

    fn tool(yaml_tool: &str) -> (Tool, Templates, MjValue) {
        let doc = format!("servers:\n- name: s\n  config: {{base: v1, key: k1}}\n  upstream: {{cluster: api, authority: api.local}}\n  tools:\n  - {yaml_tool}\n");
        let cfg = PluginConfig::parse(&doc).unwrap();
        let mut templates = Templates::new();
        let config = crate::gateway::safe_config(&cfg.servers[0].config);
        let t = Tool::compile(&cfg.servers[0], &cfg.servers[0].tools[0], &mut templates, &config).unwrap();
        (t, templates, config)
    }

    fn request(t: &Tool, tpl: &Templates, cfg: &MjValue, args: Value) -> UpstreamRequest {
        match t.prepare(tpl, cfg, Some(&args)) {
            Prepared::Upstream(r, _) => r,
            Prepared::Done(v) => panic!("expected a request, got {v}"),
        }
    }

    /// A tool of a server in Higress's template dialect (`templateDialect: go`).
    #[cfg(feature = "go-templates")]
    fn go_tool(yaml_tool: &str) -> (Tool, Templates, MjValue) {
        let doc = format!("servers:\n- name: s\n  templateDialect: go\n  config: {{base: v1, key: k1}}\n  upstream: {{cluster: api}}\n  tools:\n  - {yaml_tool}\n");
        let cfg = PluginConfig::parse(&doc).unwrap();
        let mut templates = Templates::new();
        let config = crate::gateway::safe_config(&cfg.servers[0].config);
        let t = Tool::compile(&cfg.servers[0], &cfg.servers[0].tools[0], &mut templates, &config).unwrap();
        (t, templates, config)
    }

    #[test]
    fn a_config_key_the_server_lacks_is_refused_unless_tested_first() {
        let doc = |template: &str| {
            format!(
                "servers:\n- name: s\n  config: {{token: t}}\n  upstream: {{cluster: c}}\n  tools:\n  - {{name: t, \
                 description: d, {template}}}\n"
            )
        };
        let refused =
            |template: &str| crate::gateway::Gateway::from_config_str(&doc(template)).unwrap_err().to_string();
        // A typo of a config key would render empty: refused at load, naming server, tool, field and key.
        let e = refused("requestTemplate: {url: '/x?k={{ config.tokn }}&q={{ args.q }}'}");
        assert!(
            e.contains("'s'") && e.contains("'t'") && e.contains("requestTemplate.url") && e.contains("`config.tokn`"),
            "{e}"
        );
        let e = refused("requestTemplate: {url: /x}, responseTemplate: {body: '{{ config.motd }} {{ body }}'}");
        assert!(e.contains("responseTemplate.body") && e.contains("`config.motd`"), "{e}");
        // Keys it has, and keys it tests first, load.
        for ok in [
            "requestTemplate: {url: '/x?k={{ config.token }}&q={{ args.q }}'}",
            "requestTemplate: {url: '/x{% if config.extra is defined %}?e={{ config.extra }}{% endif %}'}",
            "requestTemplate: {url: '/x?e={{ config.extra | default(\"none\") }}&q={{ args.q }}'}",
        ] {
            assert!(crate::gateway::Gateway::from_config_str(&doc(ok)).is_ok(), "{ok}");
        }
    }

    #[test]
    #[cfg(not(feature = "go-templates"))]
    fn higress_semantics_are_refused_without_their_feature() {
        let doc = "servers:\n- name: s\n  semantics: higress\n  upstream: {cluster: c}\n  tools:\n  - {name: t, description: d, requestTemplate: {url: /x}}\n";
        let e = crate::gateway::Gateway::from_config_str(doc).unwrap_err();
        assert!(e.message.contains("go-templates") && e.message.contains("semantics"), "{e}");
    }

    #[test]
    #[cfg(not(feature = "go-templates"))]
    fn go_dialect_is_refused_without_its_feature() {
        let doc = "server: {name: s}\ntools:\n- {name: t, description: d, responseTemplate: {body: '{{.args.x}}'}}\n";
        let e = crate::gateway::Gateway::from_config_str(doc).unwrap_err();
        assert!(e.message.contains("go-templates"), "{e}");
    }

    #[test]
    #[cfg(feature = "go-templates")]
    fn higress_images_keep_their_content_type_whole() {
        let image = |ct: &str| UpstreamResult::Response {
            status: 200,
            headers: vec![("content-type".into(), ct.into())],
            body: vec![137, 80],
        };
        let higress = "servers:\n- name: s\n  semantics: higress\n  upstream: {cluster: api}\n  tools:\n  - {name: t, description: d, requestTemplate: {url: /i}}\n";
        let cfg = PluginConfig::parse(higress).unwrap();
        let mut tpl = Templates::new();
        let config = crate::gateway::safe_config(&cfg.servers[0].config);
        let t = Tool::compile(&cfg.servers[0], &cfg.servers[0].tools[0], &mut tpl, &config).unwrap();
        // SendMCPToolImageResult: mimeType is the answer's Content-Type as it came.
        let r = t.finish(&tpl, &config, &json!({}), image("image/png; x=y"));
        assert_eq!(r["content"][0], json!({"type": "image", "data": "iVA=", "mimeType": "image/png; x=y"}));
        // Audio is ours (Higress returns its bytes as text): the bare media type, as natively.
        let r = t.finish(&tpl, &config, &json!({}), image("audio/wav; rate=8000"));
        assert_eq!(r["content"][0]["mimeType"], json!("audio/wav"));
        // Native semantics give the bare media type.
        let (t, tpl, cfg) = tool("{name: t, description: d, requestTemplate: {url: /i}}");
        let r = t.finish(&tpl, &cfg, &json!({}), image("Image/PNG; x=y"));
        assert_eq!(r["content"][0]["mimeType"], json!("image/png"));
    }

    #[test]
    #[cfg(feature = "go-templates")]
    fn go_dialect_requests_and_results() {
        let (t, tpl, cfg) = go_tool(
            "{name: t, description: d, args: [{name: q}, {name: tags, type: array}], requestTemplate: {url: 'https://api.x/{{.config.base}}/s?q={{.args.q}}', method: POST, \
             headers: [{key: Authorization, value: 'Bearer {{.config.key}}'}, {key: X-Id, value: '{{uuidv4}}'}], \
             body: '{\"tags\": {{.args.tags | toJson}}, \"n\": {{len .args.tags}}}'}, \
             responseTemplate: {body: '{{range .items}}[{{.name}}]{{end}} {{.args.q}}'}, errorResponseTemplate: 'E{{index ._headers \":status\"}} {{.error}}'}",
        );
        let r = request(&t, &tpl, &cfg, json!({"q": "a b&c", "tags": ["x", "y"]}));
        assert_eq!(r.path, "/v1/s?q=a%20b%26c");
        let h = |k: &str| r.headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
        assert_eq!(h("authorization"), "Bearer k1");
        assert_eq!(h("x-id").len(), 36);
        assert_eq!(r.body.as_deref(), Some(&br#"{"tags": ["x","y"], "n": 2}"#[..]));
        // Result templates see the answer's JSON only (Higress's rule): `.args` is missing there.
        let answer = |status: u16, body: &str| UpstreamResult::Response {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        };
        let res = t.finish(&tpl, &cfg, &json!({"q": "z"}), answer(200, r#"{"items": [{"name": "a"}, {"name": "b"}]}"#));
        assert_eq!(res["content"][0]["text"], json!("[a][b] "));
        let res = t.finish(&tpl, &cfg, &json!({}), answer(200, "\"just a string\""));
        assert!(res["content"][0]["text"].as_str().unwrap().contains("valid JSON object or array"), "{res}");
        // Error templates see the answer plus `_headers`, `:status` among them.
        let res = t.finish(&tpl, &cfg, &json!({}), answer(503, r#"{"error": "down"}"#));
        assert_eq!((res["isError"].clone(), res["content"][0]["text"].clone()), (json!(true), json!("E503 down")));
        // prependBody/appendBody are literal text in Higress's dialect, `{{` included.
        let (t, tpl, cfg) = go_tool("{name: t, description: d, requestTemplate: {url: /x}, responseTemplate: {prependBody: 'P {{x}} ', appendBody: ' A'}}");
        let res = t.finish(&tpl, &cfg, &json!({}), answer(200, "{}"));
        assert_eq!(res["content"][0]["text"], json!("P {{x}} {} A"));
        // mcp-github's `contents/{{.args.path}}`: a nested path keeps its slashes; a dot segment is refused.
        let (t, tpl, cfg) = go_tool("{name: t, description: d, args: [{name: path}], requestTemplate: {url: 'https://api.github.com/repos/o/contents/{{.args.path}}?ref={{.args.path}}'}}");
        assert_eq!(
            request(&t, &tpl, &cfg, json!({"path": "dir/a b.txt"})).path,
            "/repos/o/contents/dir/a%20b.txt?ref=dir%2Fa%20b.txt"
        );
        assert!(refused(&t, &tpl, &cfg, json!({"path": "../../admin"})).contains("dot segment"));
        // getRealIP and getSocketIP read the request's client (set by the transport around the call).
        let (t, tpl, cfg) = go_tool("{name: t, description: d, requestTemplate: {url: /x, headers: [{key: X-Client, value: '{{getRealIP}} {{getSocketIP}}'}]}, responseTemplate: {body: 'from {{getRealIP}}'}}");
        let client = crate::template::Client::from_request(Some("203.0.113.7, 10.0.0.1"), Some("10.0.0.2:5555"));
        let r = crate::template::with_client(&client, || request(&t, &tpl, &cfg, json!({})));
        assert!(r.headers.contains(&("x-client".into(), "203.0.113.7 10.0.0.2".into())), "{:?}", r.headers);
        let res = crate::template::with_client(&client, || t.finish(&tpl, &cfg, &json!({}), answer(200, "{}")));
        assert_eq!(res["content"][0]["text"], json!("from 203.0.113.7"));
        // A tool with no url renders over the call: {config, args}.
        let (t, tpl, cfg) = go_tool("{name: t, description: d, args: [{name: who, default: w}], responseTemplate: {body: 'hi {{.args.who}} {{.config.key}}'}}");
        let Prepared::Done(res) = t.prepare(&tpl, &cfg, None) else { panic!() };
        assert_eq!(res["content"][0]["text"], json!("hi w k1"));
        // Unknown functions fail the load, naming the function and the field.
        let doc = "servers:\n- name: s\n  templateDialect: go\n  upstream: {cluster: c}\n  tools:\n  - {name: t, description: d, requestTemplate: {url: /x, headers: [{key: X, value: '{{nope .args.a}}'}]}}\n";
        let e = crate::gateway::Gateway::from_config_str(doc).unwrap_err();
        assert!(e.field == "requestTemplate.headers[0]" && e.message.contains("function \"nope\" not defined"), "{e}");
        // The same text in our dialect is another language: `{{uuidv4}}` is refused there instead of rendering empty.
        let doc = "servers:\n- name: s\n  upstream: {cluster: c}\n  tools:\n  - {name: t, description: d, requestTemplate: {url: /x, headers: [{key: X, value: '{{uuidv4}}'}]}}\n";
        let e = crate::gateway::Gateway::from_config_str(doc).unwrap_err();
        assert!(e.message.contains("uuidv4") && e.message.contains("templateDialect"), "{e}");
    }

    /// `allowReserved` is for query values, `contentType` for form and multipart fields: elsewhere, or with
    /// a value that could break a header, the load is refused naming the tool and the argument.
    #[test]
    fn allow_reserved_and_content_type_are_refused_where_they_mean_nothing() {
        let refused = |args: &str, form: &str| {
            let doc = format!("servers:\n- name: s\n  upstream: {{cluster: c}}\n  tools:\n  - {{name: t, description: d, requestTemplate: {{url: '/x/{{id}}', method: POST{form}}}, args: [{args}]}}\n");
            let e = crate::gateway::Gateway::from_config_str(&doc).unwrap_err();
            (e.tool.clone().unwrap_or_default(), e.field.clone(), e.message)
        };
        let (tool, field, msg) = refused("{name: id, position: path, allowReserved: true}", "");
        assert_eq!((tool.as_str(), field.as_str()), ("t", "args"));
        assert!(msg.contains("'id': allowReserved applies to query parameters only"), "{msg}");
        let (_, _, msg) = refused(
            "{name: id, position: path}, {name: q, position: query, contentType: application/json}",
            ", argsToFormBody: true",
        );
        assert!(msg.contains("'q': contentType applies to form and multipart body fields only"), "{msg}");
        let (_, _, msg) =
            refused("{name: id, position: path}, {name: b, position: body, contentType: application/json}", "");
        assert!(msg.contains("'b': contentType applies to form"), "{msg}");
        let (_, _, msg) = refused(
            "{name: id, position: path}, {name: b, position: body, contentType: \"a/b\\r\\nX: y\"}",
            ", argsToFormBody: true",
        );
        assert!(msg.contains("'b': contentType must be a media type of visible ASCII"), "{msg}");
    }

    #[test]
    fn places_args_by_position_and_encodes_them() {
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, args: [{name: id, position: path}, {name: q, position: query}, {name: h, position: header}, \
             {name: c, position: cookie}, {name: n, type: integer, position: body}], \
             requestTemplate: {url: 'http://ignored.example/{{ config.base }}/items/{id}', method: post}}",
        );
        let r = request(&t, &tpl, &cfg, json!({"id": "a/b c", "q": "x&y=z", "h": "v", "c": "1;2", "n": "7"}));
        assert_eq!(r.path, "/v1/items/a%2Fb%20c?q=x%26y%3Dz");
        assert_eq!(r.method, "POST");
        assert_eq!((r.cluster.as_str(), r.authority.as_str()), ("api", "api.local"));
        assert!(r.headers.contains(&("h".into(), "v".into())));
        assert!(r.headers.contains(&("cookie".into(), "c=1%3B2".into())));
        assert!(r.headers.contains(&("content-type".into(), "application/json".into())));
        assert_eq!(r.body.as_deref(), Some(&b"{\"n\":7}"[..]));
    }

    #[test]
    fn args_to_url_param_and_form_body() {
        let (t, tpl, cfg) = tool("{name: t, description: d, args: [{name: a}, {name: tags, type: array}], requestTemplate: {url: /s?fixed=1, argsToUrlParam: true}}");
        let r = request(&t, &tpl, &cfg, json!({"a": "1 2", "tags": ["x", "y"]}));
        assert_eq!(r.path, "/s?fixed=1&a=1%202&tags=x&tags=y");
        let (t, tpl, cfg) = tool("{name: t, description: d, args: [{name: a}], requestTemplate: {url: /f, method: POST, argsToFormBody: true}}");
        let r = request(&t, &tpl, &cfg, json!({"a": "é&"}));
        assert_eq!(r.body.as_deref(), Some(&b"a=%C3%A9%26"[..]));
        assert!(r.headers.contains(&("content-type".into(), "application/x-www-form-urlencoded".into())));
    }

    #[test]
    fn hand_written_styles_in_path_query_and_form_body() {
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, args: [{name: id, type: array, position: path, style: matrix, explode: true}, \
             {name: filter, type: object, position: query, style: deepObject}, {name: ids, type: array, position: query, style: pipeDelimited}, \
             {name: address, type: object, position: body, style: deepObject}, {name: expand, type: array, position: body, style: deepObject}, \
             {name: meta, type: object, position: body}], \
             requestTemplate: {url: '/c/{id}', method: POST, argsToFormBody: true}}",
        );
        let r = request(
            &t,
            &tpl,
            &cfg,
            json!({"id": ["a", "b"], "filter": {"gt": 5}, "ids": [1, 2], "address": {"city": "Paris"},
                   "expand": ["customer"], "meta": {"k": "v"}}),
        );
        assert_eq!(r.path, "/c/;id=a;id=b?filter%5Bgt%5D=5&ids=1%7C2");
        let body = String::from_utf8(r.body.unwrap()).unwrap();
        assert_eq!(body, "address%5Bcity%5D=Paris&expand%5B0%5D=customer&meta=%7B%22k%22%3A%22v%22%7D");
        for bad in [
            "{name: t, description: d, args: [{name: a, position: path, style: form}], requestTemplate: {url: '/{a}'}}",
            "{name: t, description: d, args: [{name: a, position: body, style: deepObject}], requestTemplate: {url: /x, method: POST}}",
            "{name: t, description: d, args: [{name: a, style: form}], requestTemplate: {url: /x, argsToUrlParam: true}}",
            "{name: t, description: d, args: [{name: a, position: query, style: diagonal}], requestTemplate: {url: /x}}",
        ] {
            let doc = format!("servers:\n- name: s\n  upstream: {{cluster: api}}\n  tools:\n  - {bad}\n");
            assert!(crate::gateway::Gateway::from_config_str(&doc).is_err(), "{bad}");
        }
    }

    #[test]
    fn files_go_as_multipart_parts_or_as_the_body() {
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, args: [{name: file, position: body, file: true}, {name: purpose, position: body}, \
             {name: meta, type: object, position: body}], requestTemplate: {url: /f, method: POST, argsToMultipartBody: true}}",
        );
        let r = request(
            &t,
            &tpl,
            &cfg,
            json!({"file": {"content": "AAEC/w==", "filename": "x.bin"}, "purpose": "test", "meta": {"a": 1}}),
        );
        let ct = r.headers.iter().find(|(k, _)| k == "content-type").unwrap().1.clone();
        let boundary = ct.strip_prefix("multipart/form-data; boundary=").unwrap();
        let body = r.body.unwrap();
        let head = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.bin\"\r\n\r\n");
        assert!(body.starts_with(head.as_bytes()));
        assert_eq!(&body[head.len()..head.len() + 4], &[0, 1, 2, 255], "bytes, not base64");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("name=\"meta\"\r\nContent-Type: application/json\r\n\r\n{\"a\":1}\r\n"), "{text}");
        let Prepared::Done(res) = t.prepare(&tpl, &cfg, Some(&json!({"file": {"content": "%%%"}}))) else { panic!() };
        assert!(res["content"][0]["text"].as_str().unwrap().contains("not base64"), "{res}");

        let (t, tpl, cfg) = tool(
            "{name: t, description: d, args: [{name: tar, position: body, file: true, required: true}], \
             requestTemplate: {url: /load, method: POST, headers: [{key: Content-Type, value: application/x-tar}]}}",
        );
        let r = request(&t, &tpl, &cfg, json!({"tar": {"content": "aGk="}}));
        assert_eq!(
            (r.body.as_deref(), r.headers.iter().find(|(k, _)| k == "content-type").map(|h| h.1.as_str())),
            (Some(&b"hi"[..]), Some("application/x-tar"))
        );
        let r = request(&t, &tpl, &cfg, json!({"tar": {"content": "aGk=", "contentType": "application/gzip"}}));
        assert_eq!(
            r.headers.iter().filter(|(k, _)| k == "content-type").map(|h| h.1.as_str()).collect::<Vec<_>>(),
            ["application/gzip"]
        );
        let bad = "{name: t, description: d, args: [{name: f, position: body, file: true}, {name: g, position: body}], requestTemplate: {url: /x, method: POST}}";
        let doc = format!("servers:\n- name: s\n  upstream: {{cluster: api}}\n  tools:\n  - {bad}\n");
        assert!(crate::gateway::Gateway::from_config_str(&doc)
            .unwrap_err()
            .to_string()
            .contains("argsToMultipartBody"));
    }

    #[test]
    fn refuses_header_injection_and_bad_json_bodies() {
        let (t, tpl, cfg) = tool("{name: t, description: d, args: [{name: v}], requestTemplate: {url: /x, headers: [{key: X-V, value: '{{ args.v }}'}]}}");
        let Prepared::Done(res) = t.prepare(&tpl, &cfg, Some(&json!({"v": "a\r\nX-Evil: 1"}))) else { panic!() };
        assert_eq!(res["isError"], json!(true));
        assert!(res["content"][0]["text"].as_str().unwrap().contains("CR, LF"));
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, args: [{name: v}], requestTemplate: {url: /x, method: POST, body: '{\"v\": \"{{ args.v }}\"}', headers: [{key: Content-Type, value: application/json}]}}",
        );
        let Prepared::Done(res) = t.prepare(&tpl, &cfg, Some(&json!({"v": "\"}, \"admin\": true, \"x\": \""}))) else {
            panic!()
        };
        assert!(res["content"][0]["text"].as_str().unwrap().contains("valid JSON"));
    }

    #[test]
    fn validation_failures_name_each_argument() {
        let (t, tpl, cfg) = tool("{name: t, description: d, args: [{name: city, required: true}, {name: days, type: integer}], requestTemplate: {url: /x}}");
        let Prepared::Done(res) = t.prepare(&tpl, &cfg, Some(&json!({"days": "many"}))) else { panic!() };
        let text = res["content"][0]["text"].as_str().unwrap();
        assert!(text.contains("`city`: is required") && text.contains("`days`: expected integer"), "{text}");
        let Prepared::Done(res) = t.prepare(&tpl, &cfg, Some(&json!([1]))) else { panic!() };
        assert_eq!(res["isError"], json!(true));
    }

    #[test]
    fn renders_results() {
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, args: [{name: city}], requestTemplate: {url: /w}, responseTemplate: {body: '{{ args.city }}: {{ temp }} / {{ response.temp }} / {{ status }}'}, errorResponseTemplate: 'failed {{ status }} {{ error }}'}",
        );
        let args = json!({"city": "Oslo"});
        let ok = UpstreamResult::Response {
            status: 200,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: b"{\"temp\": 3}".to_vec(),
        };
        assert_eq!(t.finish(&tpl, &cfg, &args, ok)["content"][0]["text"], json!("Oslo: 3 / 3 / 200"));
        let bad = UpstreamResult::Response { status: 503, headers: vec![], body: b"{\"error\": \"down\"}".to_vec() };
        let r = t.finish(&tpl, &cfg, &args, bad);
        assert_eq!((r["isError"].clone(), r["content"][0]["text"].clone()), (json!(true), json!("failed 503 down")));
        let r = t.finish(&tpl, &cfg, &args, UpstreamResult::Failed("timeout".into()));
        assert_eq!(r["isError"], json!(true));
    }

    #[test]
    fn content_blocks_audio_and_the_answer_in_base64() {
        let png = || UpstreamResult::Response {
            status: 200,
            headers: vec![("content-type".into(), "image/png".into())],
            body: vec![137, 80, 78, 71],
        };
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, icons: [{src: 'https://x/i.png'}], requestTemplate: {url: /i}, responseTemplate: {content: [\
             {type: text, text: 'got {{ headers[\"content-type\"] }}'}, {type: image, data: '{{ bodyBase64 }}', mimeType: image/png}, \
             {type: resource_link, uri: 'x://{{ status }}', name: n}]}}",
        );
        assert_eq!(t.listing()["icons"], json!([{"src": "https://x/i.png"}]));
        let r = t.finish(&tpl, &cfg, &json!({}), png());
        assert_eq!(r["content"][0], json!({"type": "text", "text": "got image/png"}));
        assert_eq!(r["content"][1], json!({"type": "image", "data": "iVBORw==", "mimeType": "image/png"}));
        assert_eq!(r["content"][2], json!({"type": "resource_link", "uri": "x://200", "name": "n"}));
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, requestTemplate: {url: /i}, responseTemplate: {body: 'b64={{ bodyBase64 }}'}}",
        );
        assert_eq!(t.finish(&tpl, &cfg, &json!({}), png())["content"][0]["type"], json!("image"), "an image stays one");
        let text = UpstreamResult::Response { status: 200, headers: vec![], body: b"hi".to_vec() };
        assert_eq!(t.finish(&tpl, &cfg, &json!({}), text)["content"][0]["text"], json!("b64=aGk="));
        let (t, tpl, cfg) = tool("{name: t, description: d, requestTemplate: {url: /a}}");
        let wav = UpstreamResult::Response {
            status: 200,
            headers: vec![("Content-Type".into(), "audio/wav; rate=8000".into())],
            body: vec![1, 2, 3],
        };
        assert_eq!(
            t.finish(&tpl, &cfg, &json!({}), wav)["content"][0],
            json!({"type": "audio", "data": "AQID", "mimeType": "audio/wav"})
        );
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, responseTemplate: {content: [{type: image, data: '{{ args.x }}', mimeType: image/png}]}, args: [{name: x}]}",
        );
        let Prepared::Done(r) = t.prepare(&tpl, &cfg, Some(&json!({"x": "%%"}))) else { panic!() };
        assert_eq!(r["isError"], json!(true));
        assert!(r["content"][0]["text"].as_str().unwrap().contains("content block 0: `data` is not base64"), "{r}");
        let doc = "servers:\n- name: s\n  tools:\n  - {name: t, description: d, responseTemplate: {body: a, content: [{type: text, text: b}]}}\n";
        let e = crate::gateway::Gateway::from_config_str(doc).unwrap_err();
        assert_eq!(e.field, "responseTemplate.content");
    }

    #[test]
    fn images_structured_content_and_template_only_tools() {
        let (t, tpl, cfg) =
            tool("{name: t, description: d, requestTemplate: {url: /i}, outputSchema: {type: object, required: [a]}}");
        let png = UpstreamResult::Response {
            status: 200,
            headers: vec![("content-type".into(), "image/png".into())],
            body: vec![137, 80],
        };
        let r = t.finish(&tpl, &cfg, &json!({}), png);
        assert_eq!(r["content"][0], json!({"type": "image", "data": "iVA=", "mimeType": "image/png"}));
        let js = UpstreamResult::Response { status: 200, headers: vec![], body: b"{\"a\": 1}".to_vec() };
        assert_eq!(t.finish(&tpl, &cfg, &json!({}), js)["structuredContent"], json!({"a": 1}));
        let wrong = UpstreamResult::Response { status: 200, headers: vec![], body: b"{\"b\": 1}".to_vec() };
        assert_eq!(t.finish(&tpl, &cfg, &json!({}), wrong)["isError"], json!(true));
        let (t, tpl, cfg) = tool("{name: t, description: d, args: [{name: who, default: world}], responseTemplate: {body: 'hello {{ args.who }} {{ config.key }}'}}");
        let Prepared::Done(r) = t.prepare(&tpl, &cfg, None) else { panic!() };
        assert_eq!(r["content"][0]["text"], json!("hello world k1"));
    }

    fn refused(t: &Tool, tpl: &Templates, cfg: &MjValue, args: Value) -> String {
        match t.prepare(tpl, cfg, Some(&args)) {
            Prepared::Done(v) if v["isError"] == json!(true) => v["content"][0]["text"].as_str().unwrap().to_string(),
            other => panic!("expected an error result, got {other:?}"),
        }
    }

    #[test]
    fn dot_segments_are_refused() {
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, args: [{name: seg, position: path}], requestTemplate: {url: '/a/{seg}/b'}}",
        );
        for seg in ["..", "."] {
            let text = refused(&t, &tpl, &cfg, json!({ "seg": seg }));
            assert!(text.contains(&format!("dot segment '{seg}'")) && text.contains("`seg`"), "{text}");
        }
        // Only whole segments are dot segments; percent signs of values are encoded, so `%2e` stays data.
        for (seg, path) in
            [("...", "/a/.../b"), ("a..", "/a/a../b"), ("%2e%2e", "/a/%252e%252e/b"), ("../x", "/a/..%2Fx/b")]
        {
            assert_eq!(request(&t, &tpl, &cfg, json!({ "seg": seg })).path, path);
        }
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, args: [{name: p}, {name: raw}], requestTemplate: {url: '/a/{{ args.p }}/{{ args.raw | safe }}?q={{ args.p }}'}}",
        );
        assert!(refused(&t, &tpl, &cfg, json!({"p": "..", "raw": "x"})).contains("'..' (from argument `p`)"));
        assert!(refused(&t, &tpl, &cfg, json!({"p": "x", "raw": "c/%2E%2e/d"})).contains("`raw`"));
        assert_eq!(request(&t, &tpl, &cfg, json!({"p": "x", "raw": "y"})).path, "/a/x/y?q=x");
        // A dot segment the operator wrote is a config error.
        let doc = "servers:\n- name: s\n  upstream: {cluster: c}\n  tools:\n  - {name: t, description: d, requestTemplate: {url: '/a/../b?x=..'}}\n";
        let e = crate::gateway::Gateway::from_config_str(doc).unwrap_err();
        assert!(e.field == "requestTemplate.url" && e.message.contains("dot segment '..'"), "{e}");
    }

    #[test]
    fn paths_never_start_with_two_slashes() {
        // An empty first segment would make `//evil.example/x`, which URL parsers read as a host (found by
        // `properties::arguments_never_escape_their_place`).
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, args: [{name: p, position: path}, {name: u}], requestTemplate: {url: '/{p}/{{ args.u }}'}}",
        );
        let text = refused(&t, &tpl, &cfg, json!({"p": "", "u": "evil.example"}));
        assert!(text.contains("start with '//' (empty argument `p`)"), "{text}");
        assert_eq!(request(&t, &tpl, &cfg, json!({"p": "a", "u": ""})).path, "/a/");
        let doc = "servers:\n- name: s\n  upstream: {cluster: c}\n  tools:\n  - {name: t, description: d, requestTemplate: {url: '//h/x'}}\n";
        let e = crate::gateway::Gateway::from_config_str(doc).unwrap_err();
        assert!(e.field == "requestTemplate.url" && e.message.contains("starts with '//'"), "{e}");
    }

    #[test]
    fn a_missing_path_argument_is_refused() {
        // It went upstream as the literal `/a/{p}/b` (found by `properties::arguments_never_escape_their_place`).
        let (t, tpl, cfg) =
            tool("{name: t, description: d, args: [{name: p, position: path}, {name: q}], requestTemplate: {url: '/a/{p}/b'}}");
        let text = refused(&t, &tpl, &cfg, json!({"q": "x"}));
        assert!(text.contains("`p`: is required (it is part of the url path)"), "{text}");
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, args: [{name: p, position: path, required: true}], requestTemplate: {url: '/a/{p}'}}",
        );
        assert_eq!(refused(&t, &tpl, &cfg, json!({})).matches("`p`: is required").count(), 1);
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, args: [{name: p, position: path, default: d}], requestTemplate: {url: '/a/{p}'}}",
        );
        assert_eq!(request(&t, &tpl, &cfg, json!({})).path, "/a/d");
    }

    #[test]
    fn safe_values_beyond_ascii_are_encoded() {
        // `| safe` keeps URL syntax as the operator wants it; characters beyond ASCII are not syntax, and a raw
        // one in the request line is not HTTP (found by `properties::arguments_never_escape_their_place`).
        let (t, tpl, cfg) =
            tool("{name: t, description: d, args: [{name: u}], requestTemplate: {url: '/s/{{ args.u | safe }}'}}");
        assert_eq!(request(&t, &tpl, &cfg, json!({"u": "a/é?x=\u{202e}"})).path, "/s/a/%C3%A9?x=%E2%80%AE");
        assert!(refused(&t, &tpl, &cfg, json!({"u": "a b"})).contains("use percent-encoding"));
    }

    #[test]
    fn integers_go_out_as_integers() {
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, args: [{name: id, type: integer, position: path}, {name: ids, type: array, items: {type: integer}, position: query}, \
             {name: n, type: integer, position: body}, {name: box, type: object, properties: {w: {type: integer}}, position: body}, \
             {name: f, type: number, position: body}], requestTemplate: {url: '/u/{id}', method: POST}}",
        );
        let args: Value =
            serde_json::from_str(r#"{"id": 1.0, "ids": [1e2, "2.0", 3], "n": -5e0, "box": {"w": 7.0}, "f": 1.5}"#)
                .unwrap();
        let r = request(&t, &tpl, &cfg, args);
        assert_eq!(r.path, "/u/1?ids=100&ids=2&ids=3");
        assert_eq!(r.body.as_deref(), Some(&br#"{"n":-5,"box":{"w":7},"f":1.5}"#[..]));
        let big = u64::MAX.to_string();
        let r = request(&t, &tpl, &cfg, serde_json::from_str(&format!(r#"{{"id": {big}, "n": "{big}"}}"#)).unwrap());
        assert_eq!(r.path, format!("/u/{big}"));
        assert_eq!(r.body.as_deref(), Some(format!(r#"{{"n":{big}}}"#).as_bytes()));
        for bad in [
            r#"{"id": 18446744073709551616}"#,
            r#"{"id": -9223372036854775809}"#,
            r#"{"id": 1e19}"#,
            r#"{"id": 1, "box": {"w": 1e300}}"#,
        ] {
            let text = refused(&t, &tpl, &cfg, serde_json::from_str(bad).unwrap());
            assert!(
                text.contains("integer out of range") && (text.contains("`id`") || text.contains("`box/w`")),
                "{bad}: {text}"
            );
        }
        assert!(refused(&t, &tpl, &cfg, json!({"id": 1.5})).contains("`id`: expected integer, got number"));
    }

    #[test]
    fn undeclared_arguments_are_refused_unless_the_schema_allows_them() {
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, args: [{name: name}, {name: size, type: integer}], requestTemplate: {url: /x, method: POST, argsToJsonBody: true}}",
        );
        assert_eq!(t.listing()["inputSchema"]["additionalProperties"], json!(false));
        let text = refused(&t, &tpl, &cfg, json!({"name": "n", "admin": true, "size": "x"}));
        assert!(text.contains("`admin`: is not an accepted argument (it accepts: name, size)"), "{text}");
        assert!(text.contains("`size`: expected integer"), "every problem is named: {text}");
        assert_eq!(text.matches("admin").count(), 1, "{text}");
        // A raw inputSchema that says nothing gets the same rule; combinators and patterns declare names too.
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, inputSchema: {type: object, properties: {a: {type: string}}, patternProperties: {'^x-': {}}, \
             allOf: [{properties: {b: {type: string}}}]}, requestTemplate: {url: /x, argsToUrlParam: true}}",
        );
        assert!(refused(&t, &tpl, &cfg, json!({"a": "1", "c": "2"}))
            .contains("`c`: is not an accepted argument (it accepts: a, b)"));
        assert_eq!(request(&t, &tpl, &cfg, json!({"a": "1", "b": "2", "x-y": "3"})).path, "/x?a=1&b=2&x-y=3");
        // additionalProperties true (or a schema) is the operator accepting extra arguments.
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, inputSchema: {type: object, properties: {a: {type: string}}, additionalProperties: true}, requestTemplate: {url: /x, method: POST, argsToJsonBody: true}}",
        );
        assert_eq!(
            request(&t, &tpl, &cfg, json!({"a": "1", "extra": 2})).body.as_deref(),
            Some(&br#"{"a":"1","extra":2}"#[..])
        );
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, inputSchema: {type: object, additionalProperties: {type: integer}}, requestTemplate: {url: /x, argsToUrlParam: true}}",
        );
        assert_eq!(request(&t, &tpl, &cfg, json!({"k": 2.0})).path, "/x?k=2");
        assert!(refused(&t, &tpl, &cfg, json!({"k": "v"})).contains("`k`: expected integer"));
        let (t, tpl, cfg) = tool("{name: t, description: d, responseTemplate: {body: hi}}");
        assert!(refused(&t, &tpl, &cfg, json!({"x": 1})).contains("(this tool takes no arguments)"));
    }

    #[test]
    fn a_schema_too_complex_to_walk_is_an_error_result() {
        // `$ref`s in `anyOf` that multiply: without a step budget this call never returned.
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, inputSchema: {type: object, properties: {a: {type: integer}}, \
             anyOf: [{$ref: '#'}, {$ref: '#'}]}, requestTemplate: {url: /x, argsToUrlParam: true}}",
        );
        let text = refused(&t, &tpl, &cfg, json!({"a": 1}));
        assert!(text.starts_with("Tool t cannot check its arguments: arguments: the schema is too complex"), "{text}");
    }

    #[test]
    fn answers_that_do_not_parse_are_errors_when_they_are_read() {
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        let answer = |ct: Option<&str>, status: u16, body: &str| UpstreamResult::Response {
            status,
            headers: ct.map(|c| vec![("Content-Type".to_string(), c.to_string())]).unwrap_or_default(),
            body: body.as_bytes().to_vec(),
        };
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, requestTemplate: {url: /d}, responseTemplate: {body: '{{ response | tojson }}'}, errorResponseTemplate: 'E {{ error }}'}",
        );
        let r = t.finish(&tpl, &cfg, &json!({}), answer(Some("application/json"), 200, &deep));
        let text = r["content"][0]["text"].as_str().unwrap();
        assert_eq!(r["isError"], json!(true));
        assert!(text.contains("recursion limit") && text.contains("128 levels"), "{text}");
        let r = t.finish(&tpl, &cfg, &json!({}), answer(None, 200, "{\"a\": "));
        assert!(r["content"][0]["text"].as_str().unwrap().contains("not valid JSON"), "{r}");
        // An answer that is not meant to be JSON is text: `response` is none, `body` has it.
        let r = t.finish(&tpl, &cfg, &json!({}), answer(Some("text/plain"), 200, "[INFO] up"));
        assert_eq!((r["isError"].clone(), r["content"][0]["text"].clone()), (json!(false), json!("null")));
        let r = t.finish(&tpl, &cfg, &json!({}), answer(Some("application/json"), 200, "[[1]]"));
        assert_eq!(r["content"][0]["text"], json!("[[1]]"));
        let r = t.finish(&tpl, &cfg, &json!({}), answer(Some("application/problem+json"), 500, &deep));
        let text = r["content"][0]["text"].as_str().unwrap();
        assert!(text.starts_with("HTTP 500: [[[") && text.contains("errorResponseTemplate was not applied"), "{text}");
        // Templates that read only the raw body do not need it to parse.
        let (t, tpl, cfg) = tool(
            "{name: t, description: d, requestTemplate: {url: /d}, responseTemplate: {body: '{{ body | length }} {{ status }}'}}",
        );
        let r = t.finish(&tpl, &cfg, &json!({}), answer(Some("application/json"), 200, &deep));
        assert_eq!((r["isError"].clone(), r["content"][0]["text"].clone()), (json!(false), json!("400 200")));
        let (t, tpl, cfg) = tool("{name: t, description: d, requestTemplate: {url: /d}, outputSchema: {type: object}}");
        let r = t.finish(&tpl, &cfg, &json!({}), answer(Some("application/json"), 200, &format!("{{\"a\": {deep}}}")));
        assert!(r["content"][0]["text"].as_str().unwrap().contains("128 levels"), "{r}");
    }

    #[test]
    fn url_hosts_must_be_literal() {
        assert!(split_url("http://{{ args.host }}/x").is_err());
        assert!(split_url("ftp://x/y").is_err());
        assert_eq!(split_url("https://api.example.com").unwrap(), (Some("api.example.com".into()), "/".into()));
        assert_eq!(split_url("http://h:8080?a=1").unwrap(), (Some("h:8080".into()), "/?a=1".into()));
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::config::PluginConfig;
    use crate::strategies::{hostile_string, json_number, json_value};
    use proptest::prelude::*;
    use serde_json::json;

    /// The request templates an operator may write, each with the arguments it places: a path placeholder, `{{ }}`
    /// values in the path and the query, an absolute URL with a fixed query, a base path from `config`, a
    /// placeholder in the first segment, and an operator's `| safe` opt-out.
    const URLS: &[&str] = &[
        "/a/{p}/b",
        "/t/{{ args.u }}/x?y={{ args.u }}",
        "http://api.example/base/{p}?fixed=1",
        "{{ config.base }}/{p}",
        "/{p}/x",
        "/s/{{ args.u | safe }}",
    ];

    /// How arguments without a position travel.
    const BODIES: &[&str] = &[
        "",
        "argsToJsonBody: true",
        "argsToFormBody: true",
        "argsToUrlParam: true",
        "body: '{\"u\": {{ args.u | tojson }}}'",
    ];

    const TYPES: &[&str] = &["string", "integer", "number", "boolean", "array", "object"];

    /// One tool: `p` in the path, `q` in the query (repeated or comma-joined), `h` a header, `c` a cookie, `b` in
    /// the body, `u` without a position, each of any type, and a header rendered from `u`; with the types and
    /// whether `q` is exploded.
    fn tool_yaml() -> impl Strategy<Value = (String, Vec<&'static str>, bool)> {
        (
            prop::sample::select(URLS),
            prop::sample::select(BODIES),
            prop::collection::vec(prop::sample::select(TYPES), 6),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(url, body, types, explode, wire)| {
                let arg = |name: &str, ty: &str, extra: &str| format!("{{name: {name}, type: {ty}{extra}}}");
                let q_wire = if wire { ", paramName: 'q[]'" } else { "" };
                let h_wire = if wire { ", paramName: X-Trace" } else { "" };
                let args = [
                    arg("p", types[0], ", position: path"),
                    arg("q", types[1], &format!(", position: query, explode: {explode}{q_wire}")),
                    arg("h", types[2], &format!(", position: header{h_wire}")),
                    arg("c", types[3], ", position: cookie"),
                    arg("b", types[4], ", position: body"),
                    arg("u", types[5], ""),
                ];
                let method = if body.is_empty() || body.starts_with("argsToUrl") { "GET" } else { "POST" };
                let yaml = format!(
                    "{{name: t, description: d, args: [{}], requestTemplate: {{url: '{url}', method: {method}, {body}{}\
                     headers: [{{key: X-U, value: '{{{{ args.u }}}}'}}]}}}}",
                    args.join(", "),
                    if body.is_empty() { "" } else { ", " },
                );
                (yaml, types, explode)
            })
    }

    /// Mostly a value of the declared type (so that most cases reach the upstream request), else any value.
    fn typed(ty: &str) -> BoxedStrategy<Value> {
        let fitting = match ty {
            "string" => hostile_string().prop_map(Value::from).boxed(),
            "integer" => prop_oneof![any::<i64>().prop_map(Value::from), json_number()].boxed(),
            "number" => json_number().boxed(),
            "boolean" => any::<bool>().prop_map(Value::from).boxed(),
            "array" => {
                prop::collection::vec(hostile_string().prop_map(Value::from), 0..4).prop_map(Value::Array).boxed()
            }
            _ => prop::collection::vec((prop::sample::select(OBJECT_KEYS), hostile_string()), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), Value::from(v))).collect()))
                .boxed(),
        };
        prop_oneof![4 => fitting, 1 => value()].boxed()
    }

    /// A tool and arguments for it: six values, each present or not.
    fn tool_and_args() -> impl Strategy<Value = (String, bool, bool, Map<String, Value>)> {
        tool_yaml().prop_flat_map(|(yaml, types, explode)| {
            let q_object = types[1] == "object";
            let values: Vec<_> = types.iter().map(|t| prop::option::weighted(0.8, typed(t))).collect();
            (Just(yaml), Just(q_object), Just(explode), values).prop_map(|(yaml, q_object, explode, values)| {
                let args = ["p", "q", "h", "c", "b", "u"]
                    .iter()
                    .zip(values)
                    .filter_map(|(name, v)| Some((name.to_string(), v?)))
                    .collect();
                (yaml, q_object, explode, args)
            })
        })
    }

    /// The keys of generated objects.
    const OBJECT_KEYS: &[&str] = &["a", "w", "x"];

    fn compile(yaml_tool: &str) -> (Tool, Templates, MjValue) {
        let doc = format!(
            "servers:\n- name: s\n  config: {{base: /v1}}\n  upstream: {{cluster: api, authority: api.local}}\n  tools:\n  - {yaml_tool}\n"
        );
        let cfg = PluginConfig::parse(&doc).unwrap_or_else(|e| panic!("{e}: {doc}"));
        let mut templates = Templates::new();
        let config = crate::gateway::safe_config(&cfg.servers[0].config);
        let t = Tool::compile(&cfg.servers[0], &cfg.servers[0].tools[0], &mut templates, &config)
            .unwrap_or_else(|e| panic!("{e:?}: {doc}"));
        (t, templates, config)
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![3 => hostile_string().prop_map(Value::from), 2 => json_value(OBJECT_KEYS)]
    }

    fn percent_decoded(s: &str) -> String {
        percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
    }

    proptest! {
        #![proptest_config(crate::strategies::cases(1500))]

        /// Guards the upstream request built from a client's arguments, for every position, type, `explode` and
        /// body mode: whatever the values, the request goes to the configured cluster and authority, its path
        /// starts with a single `/` (never `//host`), is visible ASCII without `#` and without a `.`/`..`
        /// segment (plain or %2E-encoded), arguments add no query parameters of their own, a JSON body parses,
        /// and no header has CR, LF or another control character. Anything else is an error result.
        #[test]
        fn arguments_never_escape_their_place((yaml, q_object, explode, args) in tool_and_args()) {
            let (t, tpl, cfg) = compile(&yaml);
            let req = match t.prepare(&tpl, &cfg, Some(&Value::Object(args.clone()))) {
                Prepared::Upstream(req, _) => req,
                Prepared::Done(result) => {
                    prop_assert_eq!(&result["isError"], &json!(true), "{}", result);
                    return Ok(());
                }
            };
            prop_assert_eq!(req.cluster.as_str(), "api");
            prop_assert_eq!(req.authority.as_str(), "api.local");
            prop_assert!(req.path.starts_with('/') && !req.path.starts_with("//"), "path {}", req.path);
            prop_assert!(req.path.bytes().all(|b| b.is_ascii_graphic() && b != b'#'), "path {:?}", req.path);
            let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
            for segment in path.split('/') {
                let plain = percent_decoded(&segment.to_ascii_lowercase().replace("%2e", "."));
                prop_assert!(plain != "." && plain != "..", "dot segment in {}", req.path);
            }
            if !yaml.contains("| safe") {
                let mut allowed = vec!["y", "fixed", "q", "q[]", "u", "p", "h", "c", "b"];
                // An exploded object is written as one parameter per member (OpenAPI's `form` style).
                let url_param_object = yaml.contains("argsToUrlParam") && args.get("u").is_some_and(Value::is_object);
                if url_param_object || (q_object && explode && args.get("q").is_some_and(Value::is_object)) {
                    allowed.extend(OBJECT_KEYS);
                }
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let key = percent_decoded(pair.split('=').next().unwrap_or_default());
                    prop_assert!(allowed.contains(&key.as_str()), "query parameter {:?} in {}", key, req.path);
                }
            }
            for (name, value) in &req.headers {
                prop_assert!(is_token(name) && !is_forbidden_header(name), "header name {:?}", name);
                prop_assert!(is_safe_header_value(value), "header {}: {:?}", name, value);
            }
            if yaml.contains("argsToJsonBody") || (!yaml.contains("Form") && !yaml.contains("body:") && args.contains_key("b")) {
                let body = req.body.as_deref().unwrap_or_default();
                prop_assert!(serde_json::from_slice::<Value>(body).is_ok_and(|v| v.is_object()), "{:?}", String::from_utf8_lossy(body));
            }
        }
    }
}
