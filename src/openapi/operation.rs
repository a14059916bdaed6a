//! One OpenAPI operation to one tool: parameters and body properties become arguments placed where the
//! operation wants them, the 2xx JSON response becomes `outputSchema`, security becomes a credential slot.

use super::schema::{flatten_object, is_object, Direction, SchemaConverter};
use super::{check_server_url, first_server, pointer_token, resolve, url_host, Fail, OpenApiError};
use crate::config::UpstreamConfig;
use crate::config::{
    ArgConfig, HeaderTemplate, Position, RequestTemplate, SecurityRef, SecurityScheme, Style, ToolConfig,
};
use crate::encoding::Encoding;
use crate::upstream::{is_forbidden_header, is_token};
use serde_json::{Map, Value};
use std::collections::HashSet;

/// MCP's limit on tool names.
const MAX_NAME: usize = 128;
/// `$ref`s expanded inside one another in argument schemas, then cut.
const REQUEST_REFS: usize = 8;
/// The same for `outputSchema`, kept shallower: response models are large and nested, and every tool
/// lists its own copy (the CLI keeps repeated ones once, `share`). `Options::output_schema_depth` changes it.
pub const RESPONSE_REFS: usize = 3;

/// What every operation of a document shares.
pub struct Context<'a> {
    pub doc: &'a Value,
    pub schemes: &'a SecuritySchemes,
    /// Base URL (no trailing slash) the operation path is appended to.
    pub base: &'a str,
    /// The document's `servers[0]`: an operation or path item repeating it is served from `base`, which may
    /// be a URL the operator gave instead.
    pub doc_server: Option<&'a str>,
    pub prefix: &'a str,
    pub output_schemas: bool,
    /// `$ref`s expanded inside one another in an `outputSchema`.
    pub output_depth: usize,
}

/// The document's security schemes, split into those the gateway can apply and those it cannot.
pub struct SecuritySchemes {
    pub supported: Vec<SecurityScheme>,
    pub unsupported: Vec<(String, String)>,
}

impl SecuritySchemes {
    /// Reads `components.securitySchemes`.
    pub fn read(doc: &Value) -> Result<SecuritySchemes, OpenApiError> {
        let mut out = SecuritySchemes { supported: Vec::new(), unsupported: Vec::new() };
        let Some(Value::Object(declared)) = doc.pointer("/components/securitySchemes") else {
            return Ok(out);
        };
        for (id, scheme) in declared {
            let at = format!("#/components/securitySchemes/{}", pointer_token(id));
            let scheme = resolve(doc, scheme, &at).map_err(|f| match f {
                Fail::Invalid(e) => e,
                Fail::Skip(why) => OpenApiError::new(&at, why),
            })?;
            let field = |name: &str| scheme.get(name).and_then(Value::as_str);
            let kind = field("type").ok_or_else(|| OpenApiError::new(format!("{at}/type"), "is required"))?;
            let required = |name: &str| {
                field(name)
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| OpenApiError::new(format!("{at}/{name}"), format!("is required for type {kind}")))
            };
            let candidate = SecurityScheme {
                id: id.clone(),
                kind: kind.into(),
                description: field("description").map(str::to_string),
                ..SecurityScheme::default()
            };
            let entry = match kind {
                "http" => Ok(SecurityScheme { scheme: Some(required("scheme")?.to_ascii_lowercase()), ..candidate }),
                "apiKey" => {
                    Ok(SecurityScheme { location: Some(required("in")?), name: Some(required("name")?), ..candidate })
                }
                other => Err(format!(
                    "type '{other}' is not applied by the gateway; set the credential with requestTemplate.headers"
                )),
            }
            .and_then(|s| crate::credential::check_scheme(&s).map(|()| s));
            match entry {
                Ok(s) => out.supported.push(s),
                Err(why) => out.unsupported.push((id.clone(), why)),
            }
        }
        Ok(out)
    }

    fn declares(&self, id: &str) -> bool {
        self.supported.iter().any(|s| s.id == id) || self.unsupported.iter().any(|(u, _)| u == id)
    }

    fn supports(&self, id: &str) -> bool {
        self.supported.iter().any(|s| s.id == id)
    }
}

/// One parameter, merged from the path item and the operation.
struct Param<'a> {
    name: &'a str,
    location: &'a str,
    spec: &'a Map<String, Value>,
    at: String,
}

/// Converts one operation; the warnings are lossy-but-harmless details for the operator.
pub fn convert(
    ctx: &Context<'_>,
    path: &str,
    method: &str,
    item: &Map<String, Value>,
    op: &Map<String, Value>,
    at: &str,
    names: &mut HashSet<String>,
) -> Result<(ToolConfig, Vec<String>), Fail> {
    if ["{{", "{%", "{#"].iter().any(|t| path.contains(t)) {
        return Err(Fail::Skip("the path contains template syntax ({{, {% or {#)".into()));
    }
    let item_at = &at[..at.rfind('/').unwrap_or(0)];
    let mut b = Builder {
        ctx,
        op,
        at,
        args: Vec::new(),
        taken: HashSet::new(),
        warnings: Vec::new(),
        inputs: SchemaConverter::new(ctx.doc, Direction::Request, REQUEST_REFS),
    };
    for p in parameters(ctx.doc, path, item, item_at, op, at)? {
        b.parameter(&p, path)?;
    }
    let (base, upstream) = b.own_server(item, item_at)?;
    let mut request = RequestTemplate {
        url: Some(format!("{base}{path}")),
        method: Some(method.to_ascii_uppercase()),
        ..RequestTemplate::default()
    };
    b.body(&mut request)?;
    let output_schema = if ctx.output_schemas { b.output_schema()? } else { None };
    request.security = b.security()?;
    let Builder { args, mut warnings, mut inputs, .. } = b;
    warnings.append(&mut inputs.warnings);

    let text = |key: &str| op.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty());
    let summary = text("summary");
    let mut description = text("description")
        .or(summary)
        .map_or_else(|| format!("{} {path}", method.to_ascii_uppercase()), str::to_string);
    if op.get("deprecated").and_then(Value::as_bool) == Some(true) {
        description = format!("Deprecated. {description}");
    }
    let base_name = match op.get("operationId").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        Some(id) => sanitize(id),
        None => sanitize(&format!("{method}_{path}")),
    };
    let name = claim_name(names, &format!("{}{base_name}", ctx.prefix));
    Ok((
        ToolConfig {
            name,
            title: summary.map(str::to_string),
            description,
            args,
            output_schema,
            annotations: Some(annotations(method)),
            upstream,
            request_template: Some(request),
            ..ToolConfig::default()
        },
        warnings,
    ))
}

/// The parameters of an operation, merged: the operation's override the path item's of the same name and
/// location. Every path variable must have one.
fn parameters<'a>(
    doc: &'a Value,
    path: &str,
    item: &'a Map<String, Value>,
    item_at: &str,
    op: &'a Map<String, Value>,
    at: &str,
) -> Result<Vec<Param<'a>>, Fail> {
    let invalid = |pointer: String, why: &str| Fail::Invalid(OpenApiError::new(pointer, why));
    let mut params: Vec<Param<'_>> = Vec::new();
    for (list, base) in [(item.get("parameters"), item_at.to_string()), (op.get("parameters"), at.to_string())] {
        let Some(list) = list else { continue };
        let Value::Array(list) = list else {
            return Err(invalid(format!("{base}/parameters"), "must be a list"));
        };
        for (i, p) in list.iter().enumerate() {
            let p_at = format!("{base}/parameters/{i}");
            let Value::Object(spec) = resolve(doc, p, &p_at)? else {
                return Err(invalid(p_at, "a parameter must be an object"));
            };
            let name = spec.get("name").and_then(Value::as_str).filter(|n| !n.is_empty());
            let name = name.ok_or_else(|| invalid(format!("{p_at}/name"), "is required"))?;
            let location = spec.get("in").and_then(Value::as_str).unwrap_or_default();
            if !["path", "query", "header", "cookie"].contains(&location) {
                return Err(invalid(format!("{p_at}/in"), "must be path, query, header or cookie"));
            }
            params.retain(|q| !(q.name == name && q.location == location));
            params.push(Param { name, location, spec, at: p_at });
        }
    }
    for var in path_variables(path) {
        if !params.iter().any(|p| p.location == "path" && p.name == var) {
            return Err(invalid(at.to_string(), &format!("path variable {{{var}}} has no `in: path` parameter")));
        }
    }
    Ok(params)
}

/// One operation's tool, being assembled.
struct Builder<'a, 'c> {
    ctx: &'c Context<'a>,
    op: &'a Map<String, Value>,
    at: &'c str,
    args: Vec<ArgConfig>,
    /// Argument names in use.
    taken: HashSet<String>,
    warnings: Vec<String>,
    inputs: SchemaConverter<'a>,
}

impl<'a> Builder<'a, '_> {
    fn invalid(pointer: String, why: &str) -> Fail {
        Fail::Invalid(OpenApiError::new(pointer, why))
    }

    /// Leaves out an optional part of the operation the gateway cannot express, with a warning; a required
    /// one makes the whole operation unreachable.
    fn inexpressible(&mut self, required: bool, what: String) -> Result<(), Fail> {
        if required {
            return Err(Fail::Skip(what));
        }
        self.warnings.push(format!("optional {what}: left out of the tool"));
        Ok(())
    }

    /// One path, query, header or cookie parameter as a placed argument.
    fn parameter(&mut self, p: &Param<'a>, path: &str) -> Result<(), Fail> {
        if p.location == "path" && !path_variables(path).any(|v| v == p.name) {
            self.warnings.push(format!("path parameter '{}' does not appear in the path; ignored", p.name));
            return Ok(());
        }
        let required = p.location == "path" || p.spec.get("required").and_then(Value::as_bool) == Some(true);
        if p.location == "header" {
            if ["accept", "content-type", "authorization"].contains(&p.name.to_ascii_lowercase().as_str()) {
                // OpenAPI 3: such header parameters are ignored; content negotiation and auth are elsewhere.
                return Ok(());
            }
            if !is_token(p.name) || is_forbidden_header(p.name) {
                let what = format!("header parameter '{}' cannot be set by the gateway", p.name);
                return self.inexpressible(required, what);
            }
        }
        let position = match p.location {
            "path" => Position::Path,
            "query" => Position::Query,
            "header" => Position::Header,
            _ => Position::Cookie,
        };
        let (style, explode) = match encoding_of(p.spec, position) {
            Ok(e) => e,
            Err(why) => return self.inexpressible(required, format!("{} parameter '{}': {why}", p.location, p.name)),
        };
        let schema_at = format!("{}/schema", p.at);
        let schema = match (p.spec.get("schema"), p.spec.get("content").and_then(Value::as_object)) {
            (Some(s), _) => self.inputs.convert(s, &schema_at),
            (None, Some(content)) => match content.iter().next().and_then(|(media, m)| Some((media, m.get("schema")?)))
            {
                Some((media, s)) => {
                    let converted =
                        self.inputs.convert(s, &format!("{}/content/{}/schema", p.at, pointer_token(media)));
                    // The value is a document of that media type, which no style describes: as text, only
                    // what reads the same (a JSON string has quotes, a JSON object is no scalar).
                    let plain: &[&str] = if media.contains("json") {
                        &["integer", "number", "boolean"]
                    } else {
                        &["string", "integer", "number", "boolean"]
                    };
                    let scalar = |c: &Value| c.get("type").and_then(Value::as_str).is_some_and(|t| plain.contains(&t));
                    if converted.as_ref().is_ok_and(|c| !scalar(c)) {
                        let what = format!("{} parameter '{}' serialised as {media}", p.location, p.name);
                        return self.inexpressible(required, what);
                    }
                    converted
                }
                None => Ok(string_schema()),
            },
            (None, None) => Ok(string_schema()),
        };
        let schema = match schema {
            Ok(s) => s,
            Err(Fail::Skip(why)) => return self.inexpressible(required, format!("parameter '{}': {why}", p.name)),
            Err(e) => return Err(e),
        };
        let arg_name = claim_arg(&mut self.taken, p.name, p.location);
        let mut a = arg(Some(p.name), arg_name, required, Some(position), schema);
        a.description = p.spec.get("description").and_then(Value::as_str).map(str::to_string);
        a.style = style;
        a.explode = explode;
        a.allow_reserved =
            position == Position::Query && p.spec.get("allowReserved").and_then(Value::as_bool).unwrap_or(false);
        self.args.push(a);
        Ok(())
    }

    /// An operation (or path item) may name its own server, e.g. a separate upload host: the base URL and,
    /// for another host, the cluster to use.
    fn own_server(
        &mut self,
        item: &Map<String, Value>,
        item_at: &str,
    ) -> Result<(String, Option<UpstreamConfig>), Fail> {
        let (ctx, op, at) = (self.ctx, self.op, self.at);
        let mut base = ctx.base.to_string();
        let mut upstream = None;
        let own = match first_server(op.get("servers"), &format!("{at}/servers")).map_err(Fail::Invalid)? {
            Some(url) => Some((url, format!("{at}/servers/0/url"))),
            None => first_server(item.get("servers"), &format!("{item_at}/servers"))
                .map_err(Fail::Invalid)?
                .map(|url| (url, format!("{item_at}/servers/0/url"))),
        };
        let same = |url: &str| ctx.doc_server.is_some_and(|d| d.trim_end_matches('/') == url.trim_end_matches('/'));
        if let Some((url, url_at)) = own.filter(|(url, _)| !same(url)) {
            let own_base = check_server_url(&url).map_err(|e| Self::invalid(url_at, &e))?;
            match (url_host(&own_base), url_host(ctx.base)) {
                (Some(own_host), base_host) if Some(own_host) != base_host => {
                    self.warnings.push(format!(
                        "served by its own server {own_base}: the tool goes to cluster '{own_host}' (route that cluster \
                         to it, or change upstream.cluster)"
                    ));
                    upstream =
                        Some(UpstreamConfig { cluster: Some(own_host.to_string()), ..UpstreamConfig::default() });
                    base = own_base;
                }
                (Some(_), _) => base = own_base,
                // A relative server URL is a base path on the document's host.
                (None, _) => {
                    let host_part = ctx.base.len() - ctx.base.split_once("://").map_or(ctx.base, |(_, r)| r).len();
                    let authority_end = ctx.base[host_part..].find('/').map_or(ctx.base.len(), |i| host_part + i);
                    base = format!("{}{own_base}", &ctx.base[..authority_end]);
                }
            }
        }

        Ok((base, upstream))
    }

    /// The request body: object properties as arguments, anything else as one `body` argument.
    fn body(&mut self, request: &mut RequestTemplate) -> Result<(), Fail> {
        let (ctx, op, at) = (self.ctx, self.op, self.at);
        let Some(body) = op.get("requestBody") else { return Ok(()) };
        let body_at = format!("{at}/requestBody");
        let body = match resolve(ctx.doc, body, &body_at) {
            Ok(Value::Object(b)) => b,
            Ok(_) => return Err(Self::invalid(body_at, "must be an object")),
            // Whether an external body is required is in the part not read.
            Err(Fail::Skip(why)) => return Err(Fail::Skip(format!("request body: {why}"))),
            Err(e) => return Err(e),
        };
        let marked = body.get("required").and_then(Value::as_bool);
        let required = marked == Some(true);
        let content = match body.get("content") {
            Some(Value::Object(c)) => c,
            _ => return Err(Self::invalid(format!("{body_at}/content"), "must be an object")),
        };
        if content.is_empty() {
            return Ok(());
        }
        let Some((mut media, mut kind)) = pick_media(content, &[]) else {
            let mut kinds = Vec::new();
            for k in content.keys() {
                kinds.push(k.as_str());
            }
            let why = format!(
                "request body of type {} (JSON, form, multipart/form-data, text and bytes are)",
                kinds.join(", ")
            );
            return self.inexpressible(required, why);
        };
        let mut schema = match self.media_schema(content, media, &body_at) {
            Ok(s) => s,
            Err(Fail::Skip(why)) => return self.inexpressible(required, format!("request body: {why}")),
            Err(e) => return Err(e),
        };
        // A JSON Patch (RFC 6902) is an array: a schema that does not say array (Kubernetes' says object, or
        // nothing) means another patch type the operation accepts (Kubernetes: merge-patch).
        let says_array = schema
            .get("type")
            .is_some_and(|t| t == "array" || t.as_array().is_some_and(|a| a.iter().any(|x| x == "array")));
        if essence(media) == "application/json-patch+json" && !says_array {
            if let Some((other, BodyKind::Json)) = pick_media(content, &[media.as_str()]) {
                if let Ok(s) = self.media_schema(content, other, &body_at) {
                    (media, kind, schema) = (other, BodyKind::Json, s);
                }
            }
        }
        let description = body.get("description").and_then(Value::as_str).map(str::to_string);
        if !media.bytes().all(|b| b.is_ascii_graphic() || b == b' ') || media.contains(['{', '}']) {
            return self
                .inexpressible(required, format!("request body: media type '{media}' cannot be sent as a header"));
        }
        let split = if matches!(kind, BodyKind::Text | BodyKind::Binary) { None } else { flatten_object(&schema) };
        match (kind, split) {
            (BodyKind::Json | BodyKind::Form | BodyKind::Multipart, Some((props, req))) => {
                let encodings = content[media].get("encoding").and_then(Value::as_object);
                let fields = matches!(kind, BodyKind::Form | BodyKind::Multipart);
                for (name, prop) in props {
                    let required = marked != Some(false) && req.contains(&name);
                    let field_encoding = encodings.and_then(|e| e.get(&name)).and_then(Value::as_object);
                    let content_type = field_encoding
                        .filter(|_| fields)
                        .and_then(|e| e.get("contentType"))
                        .and_then(Value::as_str)
                        // Several types ("image/png, image/jpeg") leave the choice to the file's own type.
                        .filter(|ct| {
                            !ct.contains(',') && !ct.is_empty() && ct.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
                        })
                        .map(str::to_string);
                    if kind == BodyKind::Multipart && is_binary(&prop) {
                        let arg_name = claim_arg(&mut self.taken, &name, "body");
                        let mut a = arg(Some(&name), arg_name, required, Some(Position::Body), file_arg_schema(&prop));
                        a.file = true;
                        a.content_type = content_type;
                        self.args.push(a);
                        continue;
                    }
                    let (style, explode) = match field_encoding {
                        Some(e) if fields => match encoding_of(e, Position::Body) {
                            Ok(found) => found,
                            Err(why) => {
                                let what = format!("form field '{name}': {why}");
                                self.inexpressible(required && req.contains(&name), what)?;
                                continue;
                            }
                        },
                        _ => (None, None),
                    };
                    let arg_name = claim_arg(&mut self.taken, &name, "body");
                    // The schema's own list binds unless the document says the body may be left out.
                    let mut a = arg(Some(&name), arg_name, required, Some(Position::Body), prop);
                    // A style, when the encoding has one, says how the field is written; contentType then
                    // only names what the parts are (OpenAPI 3.1.1's rule for form bodies).
                    a.content_type = content_type.filter(|_| kind == BodyKind::Multipart || style.is_none());
                    a.style = style;
                    a.explode = explode;
                    self.args.push(a);
                }
                if kind == BodyKind::Form {
                    request.args_to_form_body = true;
                } else if kind == BodyKind::Multipart {
                    request.args_to_multipart_body = true;
                } else if media != "application/json" {
                    request.headers.push(HeaderTemplate { key: "Content-Type".into(), value: media.clone() });
                }
            }
            (BodyKind::Form, None) if is_object(&schema) => {
                let open = schema.get("additionalProperties").is_some_and(|a| a != &Value::Bool(false));
                if !open {
                    // An object without properties: nothing to send (Stripe's GETs declare such bodies).
                    return Ok(());
                }
                // A free-form map: its members become the form's fields.
                let arg_name = self.body_arg_name();
                request.args_to_form_body = true;
                let mut a = arg(None, arg_name, required, Some(Position::Body), schema);
                a.description = description;
                a.style = Some(Style::Form);
                self.args.push(a);
            }
            (BodyKind::Form, None) => {
                return self.inexpressible(required, "request body: a form body that is not an object".into());
            }
            (BodyKind::Multipart, None)
                if is_object(&schema)
                    && schema.get("additionalProperties").is_none_or(|a| a == &Value::Bool(false)) => {}
            (BodyKind::Multipart, None) => {
                return self.inexpressible(required, "request body: a multipart body without named fields".into());
            }
            (BodyKind::Binary, _) => {
                if !(schema.as_object().is_some_and(|m| m.is_empty())
                    || is_binary(&schema)
                    || schema.get("type").is_some_and(|t| t == "string"))
                {
                    let why = format!("request body of type {media} whose schema is not a string of bytes");
                    return self.inexpressible(required, why);
                }
                // The bytes come base64 in one file argument; the media type is the default Content-Type.
                let arg_name = self.body_arg_name();
                if !media.contains('*') {
                    request.headers.push(HeaderTemplate { key: "Content-Type".into(), value: media.clone() });
                }
                let mut schema = file_arg_schema(&schema);
                if let (Some(d), Value::Object(m)) = (description, &mut schema) {
                    m.insert("description".into(), Value::String(d));
                }
                let mut a = arg(None, arg_name, required, Some(Position::Body), schema);
                a.file = true;
                self.args.push(a);
            }
            (kind, _) => {
                let arg_name = self.body_arg_name();
                let filter = if kind == BodyKind::Json { " | tojson" } else { "" };
                request.body = Some(format!(
                    "{{% if args.{arg_name} is defined %}}{{{{ args.{arg_name}{filter} }}}}{{% endif %}}"
                ));
                request.headers.push(HeaderTemplate { key: "Content-Type".into(), value: media.clone() });
                let mut a = arg(None, arg_name, required, None, schema);
                a.description = description;
                self.args.push(a);
            }
        }
        Ok(())
    }

    /// The converted schema of one media type of a body.
    fn media_schema(&mut self, content: &'a Map<String, Value>, media: &str, body_at: &str) -> Result<Value, Fail> {
        match content[media].get("schema") {
            Some(s) => self.inputs.convert(s, &format!("{body_at}/content/{}/schema", pointer_token(media))),
            None => Ok(Value::Object(Map::new())),
        }
    }

    /// The name of the argument that carries a whole body.
    fn body_arg_name(&mut self) -> String {
        let name = ["body", "requestBody", "request_body"]
            .into_iter()
            .find(|n| !self.taken.contains(*n))
            .unwrap_or("body_")
            .to_string();
        self.taken.insert(name.clone());
        name
    }

    /// The answer: the first 2xx JSON response that describes an object.
    fn output_schema(&mut self) -> Result<Option<Value>, Fail> {
        let (ctx, op, at) = (self.ctx, self.op, self.at);
        let mut output_schema = None;
        if let Some(responses) = op.get("responses") {
            let Value::Object(responses) = responses else {
                return Err(Self::invalid(format!("{at}/responses"), "must be an object"));
            };
            let mut codes: Vec<&String> = Vec::new();
            for c in responses.keys() {
                if c.starts_with('2') {
                    codes.push(c);
                }
            }
            crate::sort::sort(&mut codes);
            let mut outputs = SchemaConverter::new(ctx.doc, Direction::Response, ctx.output_depth);
            for code in codes {
                let r_at = format!("{at}/responses/{code}");
                let response = match resolve(ctx.doc, &responses[code], &r_at) {
                    Ok(r) => r,
                    Err(Fail::Skip(why)) => {
                        self.warnings.push(format!("no outputSchema: {why}"));
                        break;
                    }
                    Err(e) => return Err(e),
                };
                let Some(Value::Object(content)) = response.get("content") else { continue };
                let Some((media, BodyKind::Json)) = pick_media(content, &[]) else { continue };
                let Some(schema) = content[media].get("schema") else { break };
                match outputs.convert(schema, &format!("{r_at}/content/{}/schema", pointer_token(media))) {
                    Ok(mut s) if is_object(&s) => {
                        if let Value::Object(m) = &mut s {
                            m.entry("type").or_insert_with(|| Value::from("object"));
                        }
                        output_schema = Some(s);
                    }
                    Ok(_) => {}
                    Err(Fail::Skip(why)) => self.warnings.push(format!("no outputSchema: {why}")),
                    Err(e) => return Err(e),
                }
                break;
            }
            self.warnings.append(&mut outputs.warnings);
        }

        Ok(output_schema)
    }

    /// The credential the gateway adds: the first alternative it can apply.
    fn security(&mut self) -> Result<Option<SecurityRef>, Fail> {
        let (ctx, op, at) = (self.ctx, self.op, self.at);
        let mut chosen = None;
        let requirements = op.get("security").or_else(|| ctx.doc.get("security"));
        if let Some(requirements) = requirements {
            let Value::Array(alternatives) = requirements else {
                return Err(Self::invalid(format!("{at}/security"), "must be a list"));
            };
            let mut optional = alternatives.is_empty();
            for (i, alt) in alternatives.iter().enumerate() {
                let Value::Object(alt) = alt else {
                    return Err(Self::invalid(format!("{at}/security/{i}"), "must be an object"));
                };
                if let Some(id) = alt.keys().find(|id| !ctx.schemes.declares(id)) {
                    return Err(Self::invalid(format!("{at}/security/{i}"), &format!("scheme '{id}' is not declared")));
                }
                optional |= alt.is_empty();
                if chosen.is_none() && alt.len() == 1 && alt.keys().all(|id| ctx.schemes.supports(id)) {
                    chosen = alt.keys().next().map(|id| SecurityRef { id: id.clone(), ..SecurityRef::default() });
                }
            }
            if chosen.is_none() && !optional {
                let mut ids: Vec<&str> = Vec::new();
                for a in alternatives.iter().filter_map(Value::as_object) {
                    for k in a.keys() {
                        ids.push(k);
                    }
                }
                self.warnings.push(format!(
                    "requires {} which the gateway cannot apply; set the credential with requestTemplate.headers",
                    ids.join(" + ")
                ));
            }
        }

        Ok(chosen)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
    Multipart,
    Text,
    /// Any other media type: bytes.
    Binary,
}

/// Whether a schema describes bytes (a file): `format: binary`, or OpenAPI 3.1's `contentMediaType` without
/// an encoding; an array of such is several files.
fn is_binary(schema: &Value) -> bool {
    let bytes = |s: &Value| {
        s.get("format").is_some_and(|f| f == "binary")
            || (s.get("contentMediaType").is_some() && s.get("contentEncoding").is_none())
    };
    bytes(schema) || (schema.get("type").is_some_and(|t| t == "array") && schema.get("items").is_some_and(bytes))
}

/// A file argument's schema (base64 content, filename, media type), keeping the document's description.
fn file_arg_schema(prop: &Value) -> Value {
    let mut file = crate::schema::file_schema();
    if let Some(d) = prop.get("description") {
        file["description"] = d.clone();
    }
    if prop.get("type").is_some_and(|t| t == "array") {
        return crate::json::object(vec![("type", Value::from("array")), ("items", file)]);
    }
    file
}

/// An argument of the tool; `wire` is the parameter's own name, kept as `param_name` when the argument's
/// differs. One constructor, not a struct literal with its defaults at each site.
#[inline(never)]
fn arg(wire: Option<&str>, name: String, required: bool, position: Option<Position>, schema: Value) -> ArgConfig {
    ArgConfig {
        param_name: wire.filter(|w| *w != name).map(str::to_string),
        name,
        required,
        position,
        schema: Some(schema),
        ..ArgConfig::default()
    }
}

/// `{"type": "string"}`: a parameter without a schema.
fn string_schema() -> Value {
    crate::json::object(vec![("type", Value::from("string"))])
}

/// A media type without its parameters, lower-cased.
fn essence(media: &str) -> String {
    media.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// The media type the gateway sends or reads: JSON first, then form, then text; `excluded` ones are passed
/// over.
fn pick_media<'m>(content: &'m Map<String, Value>, excluded: &[&str]) -> Option<(&'m String, BodyKind)> {
    let find =
        |pred: &dyn Fn(&str) -> bool| content.keys().find(|m| !excluded.contains(&m.as_str()) && pred(&essence(m)));
    if let Some(m) = find(&|m| m == "application/json") {
        return Some((m, BodyKind::Json));
    }
    if let Some(m) = find(&|m| m.ends_with("+json") || m.ends_with("/json") || m == "*/*") {
        return Some((m, BodyKind::Json));
    }
    if let Some(m) = find(&|m| m == "application/x-www-form-urlencoded") {
        return Some((m, BodyKind::Form));
    }
    if let Some(m) = find(&|m| m == "multipart/form-data") {
        return Some((m, BodyKind::Multipart));
    }
    if let Some(m) = find(&|m| m.starts_with("text/")) {
        return Some((m, BodyKind::Text));
    }
    // Other multipart types (mixed, related) have no field names to give the arguments.
    find(&|m| !m.starts_with("multipart/")).map(|m| (m, BodyKind::Binary))
}

/// The `{name}`s of a path template.
fn path_variables(path: &str) -> impl Iterator<Item = &str> {
    path.split('{').skip(1).filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
}

/// The style and explode a parameter (or a form field's `encoding`) asks for, written only where they differ
/// from what the gateway does without them. A style the gateway does not know, or that cannot go where the
/// value goes, is the reason the value cannot be sent.
fn encoding_of(spec: &Map<String, Value>, position: Position) -> Result<(Option<Style>, Option<bool>), String> {
    let style = match spec.get("style") {
        None => None,
        Some(v) => Some(
            Style::ALL
                .into_iter()
                .find(|s| v.as_str() == Some(s.name()))
                .ok_or_else(|| format!("style {v} is not an OpenAPI 3 style"))?,
        ),
    };
    let explode = spec.get("explode").and_then(Value::as_bool);
    let chosen = Encoding::resolve(position, style, explode)?;
    let bare = Encoding::resolve(position, None, None)?;
    let style_default = Encoding::resolve(position, Some(chosen.style), None)?;
    // A form field without a style goes as JSON text; any encoding entry makes it follow its style instead.
    let body_styled = position == Position::Body && (style.is_some() || explode.is_some());
    let style_out = (chosen.style != bare.style || body_styled).then_some(chosen.style);
    // deepObject reads the same whatever explode says.
    let explode_out =
        (chosen.explode != style_default.explode && chosen.style != Style::DeepObject).then_some(chosen.explode);
    Ok((style_out, explode_out))
}

/// Longest argument name: several model APIs refuse tool schemas with longer property names.
const MAX_ARG: usize = 64;

/// An argument name in `[A-Za-z0-9_.-]{1,64}`, which model APIs accept as a property name: comparison
/// suffixes spelled out (`StartTime<` is `StartTime_lt`), a trailing `[]` dropped, anything else `_`.
fn arg_name(wire: &str) -> String {
    let mut raw = wire.strip_suffix("[]").unwrap_or(wire).to_string();
    for (op, word) in [("<=", "_lte"), (">=", "_gte"), ("<", "_lt"), (">", "_gt"), ("!=", "_ne")] {
        raw = raw.replace(op, word);
    }
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let kept = c.is_ascii_alphanumeric() || "_.-".contains(c);
        // Runs of replaced characters become one `_`; underscores of the name itself stay.
        if kept {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    let trimmed = out.trim_matches('_');
    let name = if trimmed.is_empty() { "param" } else { trimmed };
    name[..name.len().min(MAX_ARG)].to_string()
}

/// An argument name not yet used: the parameter's own (made acceptable), else prefixed by where it goes.
fn claim_arg(taken: &mut HashSet<String>, name: &str, location: &str) -> String {
    let base = arg_name(name);
    let cut = |s: String, max: usize| s[..s.len().min(max)].to_string();
    let mut candidate = base.clone();
    if taken.contains(&candidate) {
        candidate = cut(format!("{location}_{base}"), MAX_ARG);
    }
    let mut n = 2;
    while taken.contains(&candidate) {
        let suffix = format!("_{n}");
        candidate = format!("{}{suffix}", cut(format!("{location}_{base}"), MAX_ARG - suffix.len()));
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

/// MCP tool names use `[A-Za-z0-9_.-]`: everything else becomes `_`, runs collapse.
fn sanitize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() || "_.-".contains(c) { c } else { '_' };
        if !(c == '_' && out.ends_with('_')) {
            out.push(c);
        }
    }
    let out = out.trim_matches('_');
    if out.is_empty() {
        "operation".into()
    } else {
        out.to_string()
    }
}

/// A unique name of at most 128 characters: `name`, else `name_2`, `name_3`...
fn claim_name(names: &mut HashSet<String>, wanted: &str) -> String {
    let cut = |s: &str, max: usize| {
        let mut end = s.len().min(max);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_string()
    };
    let mut candidate = cut(wanted, MAX_NAME);
    let mut n = 2;
    while names.contains(&candidate) {
        let suffix = format!("_{n}");
        candidate = format!("{}{suffix}", cut(wanted, MAX_NAME - suffix.len()));
        n += 1;
    }
    names.insert(candidate.clone());
    candidate
}

/// MCP tool hints from HTTP method semantics (RFC 9110 safe and idempotent methods).
fn annotations(method: &str) -> Map<String, Value> {
    let (read_only, destructive, idempotent) = match method {
        "get" | "head" | "options" | "trace" => (true, false, true),
        "put" | "delete" => (false, true, true),
        "patch" => (false, true, false),
        _ => (false, false, false),
    };
    let mut m = Map::new();
    m.insert("readOnlyHint".into(), Value::Bool(read_only));
    m.insert("destructiveHint".into(), Value::Bool(destructive));
    m.insert("idempotentHint".into(), Value::Bool(idempotent));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_sanitised_unique_and_bounded() {
        assert_eq!(sanitize("find pet by id"), "find_pet_by_id");
        assert_eq!(sanitize("get_/pets/{petId}"), "get_pets_petId");
        assert_eq!(sanitize("list-data-sets"), "list-data-sets");
        assert_eq!(sanitize("é/?"), "operation");
        let mut names = HashSet::new();
        assert_eq!(claim_name(&mut names, "a"), "a");
        assert_eq!(claim_name(&mut names, "a"), "a_2");
        assert_eq!(claim_name(&mut names, "a"), "a_3");
        let long = "x".repeat(200);
        let first = claim_name(&mut names, &long);
        let second = claim_name(&mut names, &long);
        assert_eq!((first.len(), second.len()), (128, 128));
        assert!(second.ends_with("_2"));
    }

    #[test]
    fn media_preference_and_path_variables() {
        let c: Map<String, Value> =
            serde_json::from_value(json!({"multipart/form-data": {}, "text/plain": {}, "application/x-www-form-urlencoded": {}, "application/vnd.api+json": {}})).unwrap();
        assert_eq!(
            pick_media(&c, &[]).map(|(m, k)| (m.as_str(), k)),
            Some(("application/vnd.api+json", BodyKind::Json))
        );
        let c: Map<String, Value> =
            serde_json::from_value(json!({"multipart/form-data": {}, "image/png": {}})).unwrap();
        assert_eq!(pick_media(&c, &[]).map(|(_, k)| k), Some(BodyKind::Multipart));
        assert_eq!(
            pick_media(&c, &["multipart/form-data"]).map(|(m, k)| (m.as_str(), k)),
            Some(("image/png", BodyKind::Binary))
        );
        let c: Map<String, Value> = serde_json::from_value(json!({"multipart/mixed": {}})).unwrap();
        assert!(pick_media(&c, &[]).is_none());
        assert_eq!(path_variables("/a/{x}/b/{y}.json").collect::<Vec<_>>(), ["x", "y"]);
    }

    #[test]
    fn argument_names_fit_model_apis() {
        let mut taken = HashSet::new();
        let claimed: Vec<String> =
            ["StartTime", "StartTime<", "StartTime>", "include[]", "a b/c", "日本", "x__y", &"n".repeat(80)]
                .iter()
                .map(|n| claim_arg(&mut taken, n, "query"))
                .collect();
        assert_eq!(claimed[..7], ["StartTime", "StartTime_lt", "StartTime_gt", "include", "a_b_c", "param", "x__y"]);
        assert_eq!(claimed[7].len(), 64);
        assert_eq!(claim_arg(&mut taken, "StartTime", "body"), "body_StartTime");
        assert_eq!(claim_arg(&mut taken, &"n".repeat(80), "body").len(), 64, "prefixed names are cut too");
        assert!(taken
            .iter()
            .all(|n| n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))));
    }

    #[test]
    fn method_annotations() {
        assert_eq!(annotations("get")["readOnlyHint"], true);
        assert_eq!(annotations("delete")["destructiveHint"], true);
        assert_eq!(annotations("put")["idempotentHint"], true);
        assert_eq!(annotations("post")["destructiveHint"], false);
        assert_eq!(annotations("patch")["idempotentHint"], false);
    }
}
