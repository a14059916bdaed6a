//! Templates for upstream requests and tool results, in two dialects: ours (minijinja) and Higress's (Go
//! `text/template` over JSON, see [`crate::gotemplate`]).
//!
//! All templates of a plugin are compiled at configure time. Rendering is bounded the same way in both
//! dialects: a fuel limit stops runaway loops and the output size is capped. URL templates escape every
//! interpolated value for a URL, so arguments cannot inject path segments, query parameters or a host.
//! Callers hand a [`Data`] to [`Templates::render`]; each dialect builds its own view of it.

use crate::gotemplate::{self, GoTemplate};
use minijinja::value::Value as MjValue;
use minijinja::value::{Enumerator, Object, ObjectRepr};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Serialize;
use std::cell::OnceCell;
use std::sync::Arc;

mod builtins;

/// Characters kept as they are in URL components: RFC 3986 "unreserved". Everything else is encoded.
pub const URL_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Evaluation budget of one render: generous for real templates, fatal for accidental infinite work.
const FUEL: u64 = 200_000;
/// Largest rendered output accepted.
const MAX_OUTPUT: usize = 4 * 1024 * 1024;
/// Output beyond [`MAX_OUTPUT`] is only counted, so that the refusal can say how large it was, up to this
/// size, where the render stops: writing is the work fuel does not see (one instruction may print a long
/// list), so a loop over a large answer is cut off soon after the limit.
const MAX_COUNTED: usize = MAX_OUTPUT + MAX_OUTPUT / 4;
/// Largest count or width the built-in filters that allocate it up front accept (`indent`,
/// `tojson(indent=...)`, `batch`, `slice`): minijinja reserves that much memory before looking at the
/// value, and a failed allocation aborts the VM.
const MAX_FILTER_SIZE: usize = 1024;

/// Which escaping a template gets, chosen by the suffix of its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    None,
    Url,
}

/// Who sent the MCP request, for Higress's `getRealIP` and `getSocketIP`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    /// The first `X-Forwarded-For` hop, else the socket peer's address.
    pub real_ip: Option<String>,
    /// The socket peer's address, without its port.
    pub socket_ip: Option<String>,
}

impl Client {
    /// Reads the client as Higress does: the first hop of `X-Forwarded-For`, else the socket address
    /// (`ip:port` or `[ipv6]:port`, the port dropped).
    pub fn from_request(forwarded_for: Option<&str>, socket: Option<&str>) -> Client {
        let socket_ip = socket.map(str::trim).filter(|s| !s.is_empty()).map(|s| {
            if let Some(rest) = s.strip_prefix('[') {
                rest.split(']').next().unwrap_or(rest).to_string()
            } else if s.matches(':').count() == 1 {
                s.split(':').next().unwrap_or(s).to_string()
            } else {
                s.to_string()
            }
        });
        let forwarded = forwarded_for.and_then(|f| f.split(',').next()).map(str::trim).filter(|f| !f.is_empty());
        Client { real_ip: forwarded.map(str::to_string).or_else(|| socket_ip.clone()), socket_ip }
    }
}

thread_local! {
    /// The client of the request being served: set around request handling by [`with_client`], so templates
    /// can read it without every call path carrying it.
    static CLIENT: std::cell::RefCell<Client> = std::cell::RefCell::new(Client::default());
}

/// Runs `f` with `client` as the request's client for templates, restoring the previous one afterwards.
/// An unknown client (a configuration without Go templates never reads one) costs nothing.
pub fn with_client<R>(client: &Client, f: impl FnOnce() -> R) -> R {
    if client.real_ip.is_none() && client.socket_ip.is_none() {
        return f();
    }
    let previous = CLIENT.with(|c| c.replace(client.clone()));
    let r = f();
    CLIENT.with(|c| *c.borrow_mut() = previous);
    r
}

thread_local! {
    /// The client's answers to the call's input requests (`input` in templates; see [`crate::input`]), set
    /// around the call by [`with_input`] like the client above.
    static INPUT: std::cell::RefCell<Option<serde_json::Value>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with `input` as the answers templates read as `input`, restoring the previous ones afterwards.
/// `None` (a tool or prompt that asks nothing) costs nothing.
pub fn with_input<R>(input: Option<&serde_json::Value>, f: impl FnOnce() -> R) -> R {
    let Some(input) = input else { return f() };
    let previous = INPUT.with(|c| c.replace(Some(input.clone())));
    let r = f();
    INPUT.with(|c| *c.borrow_mut() = previous);
    r
}

fn current_input() -> Option<serde_json::Value> {
    INPUT.with(|c| c.borrow().clone())
}

/// The template language of a server's templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// minijinja, with this gateway's context (`args`, `config`, `response`, `body`, `status`, `headers`).
    #[default]
    Jinja,
    /// Higress's: Go `text/template` over JSON data, sprig functions, gjson paths.
    Go,
}

/// What a template is for, which decides the data a Go template sees (Higress's rules): request templates
/// `{config, args}`, result templates the upstream answer's JSON, error templates the answer plus `_headers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Request,
    Result,
    Error,
}

/// How a template is compiled.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    pub escape: Escape,
    pub dialect: Dialect,
    pub role: Role,
}

impl Spec {
    /// A template of our dialect (whose data does not depend on the role).
    pub fn jinja(escape: Escape) -> Spec {
        Spec { escape, dialect: Dialect::Jinja, role: Role::Request }
    }
}

/// The compiled templates of a plugin.
pub struct Templates {
    env: Environment<'static>,
    count: usize,
    go: Vec<GoTemplate>,
    /// Request templates compiled now may read `input` (the tool being compiled asks for input).
    input_visible: bool,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Templates({})", self.count)
    }
}

/// A handle to one template: compiled, or already resolved to its text at configure time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateId(Resolved);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Resolved {
    /// The text does not depend on the request (no template syntax, or it reads only `config`).
    Static(String),
    Compiled(String),
    /// A Go template: its index, whether it escapes for URLs, and its role.
    Go(usize, bool, Role),
}

/// An upstream answer as templates see it.
pub struct AnswerData<'a> {
    /// The answer parsed, when it is JSON and a template or schema needed it parsed.
    pub parsed: Option<Arc<serde_json::Value>>,
    pub body: &'a str,
    /// The answer's bytes in base64, when a template reads `bodyBase64` (else empty).
    pub body_base64: &'a str,
    pub status: u16,
    /// Lower-cased names.
    pub headers: &'a serde_json::Map<String, serde_json::Value>,
}

/// What templates render over. Each dialect's view is built once, on first use.
pub struct Data<'a> {
    args: &'a serde_json::Value,
    config: &'a MjValue,
    answer: Option<AnswerData<'a>>,
    jinja: OnceCell<MjValue>,
    go_request: OnceCell<String>,
    go_error: OnceCell<String>,
}

impl<'a> Data<'a> {
    /// Data for request templates (and tools that answer without an upstream).
    pub fn request(args: &'a serde_json::Value, config: &'a MjValue) -> Self {
        Self::new(args, config, None)
    }

    /// Data for result and error templates.
    pub fn answer(args: &'a serde_json::Value, config: &'a MjValue, answer: AnswerData<'a>) -> Self {
        Self::new(args, config, Some(answer))
    }

    fn new(args: &'a serde_json::Value, config: &'a MjValue, answer: Option<AnswerData<'a>>) -> Self {
        Data { args, config, answer, jinja: OnceCell::new(), go_request: OnceCell::new(), go_error: OnceCell::new() }
    }

    /// Our context: `args`, `config`, and with an answer `response`, `body`, `status`, `headers` and the
    /// answer's top-level keys.
    pub(crate) fn jinja(&self) -> &MjValue {
        // Built as a map of values directly: minijinja's `context!` passes every value through serde again,
        // template values included (`config`, the answer's lazy view), which was a tenth of a call's time.
        self.jinja.get_or_init(|| {
            let args = MjValue::from(minijinja::value::Serde(self.args));
            // `input` only where the call asked for input: elsewhere the name stays the answer's.
            let input = current_input().map(|i| map_of(vec![("input", MjValue::from(minijinja::value::Serde(&i)))]));
            let Some(a) = &self.answer else {
                let base = map_of(vec![("args", args), ("config", self.config.clone())]);
                return match input {
                    Some(input) => minijinja::value::merge_maps(vec![base, input]),
                    None => base,
                };
            };
            let response = a.parsed.clone().map_or(MjValue::from(()), json_view);
            let flattened = a.parsed.as_deref().is_some_and(serde_json::Value::is_object).then(|| response.clone());
            let own = map_of(vec![
                ("args", args),
                ("config", self.config.clone()),
                ("response", response),
                ("body", MjValue::from(a.body)),
                ("bodyBase64", MjValue::from(a.body_base64)),
                ("status", MjValue::from(a.status)),
                ("headers", MjValue::from(minijinja::value::Serde(a.headers))),
            ]);
            // The last layer wins a name: ours, then the answer's top-level keys, then the client's input.
            // Pushed, not chained: the chain's adapters were instantiated for this list alone.
            let mut layers: Vec<MjValue> = Vec::with_capacity(3);
            if let Some(input) = input {
                layers.push(input);
            }
            if let Some(flattened) = flattened {
                layers.push(flattened);
            }
            layers.push(own);
            minijinja::value::merge_maps(layers)
        })
    }

    /// Higress's data for a Go template of this role, as JSON text.
    fn go(&self, role: Role) -> Result<&str, gotemplate::GoError> {
        let request = || {
            let config = serde_json::to_value(self.config).unwrap_or_default();
            let mut data = vec![("config", config), ("args", self.args.clone())];
            if let Some(input) = current_input() {
                data.push(("input", input));
            }
            crate::json::object(data).to_string()
        };
        match (&self.answer, role) {
            (None, _) | (Some(_), Role::Request) => Ok(self.go_request.get_or_init(request)),
            // The answer itself, only when it parsed as JSON: gjson never reads text that is not JSON.
            (Some(a), Role::Result) => match a.parsed.as_deref() {
                Some(v) if v.is_object() || v.is_array() => Ok(a.body),
                _ => Err(gotemplate::GoError::BadData),
            },
            (Some(a), Role::Error) => Ok(self.go_error.get_or_init(|| {
                let mut headers = a.headers.clone();
                headers.insert(":status".into(), serde_json::Value::String(a.status.to_string()));
                let mut data = match a.parsed.as_deref() {
                    Some(serde_json::Value::Object(m)) => m.clone(),
                    _ => serde_json::Map::new(),
                };
                data.insert("_headers".into(), serde_json::Value::Object(headers));
                serde_json::Value::Object(data).to_string()
            })),
        }
    }
}

/// The environment's settings and the gateway's own filters, over the builtins.
fn configure(env: &mut Environment<'static>) {
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(64);
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_auto_escape_callback(|name| {
        if name.ends_with("#url") {
            AutoEscape::Custom(std::borrow::Cow::Borrowed("url"))
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(format_value);
    // Filters of one signature are added as one function pointer type: minijinja instantiates its
    // argument-converting adapter once per type, and each closure is a type of its own.
    type TextFilter = fn(String) -> String;
    type SizedFilter = fn(&State, MjValue, usize, Option<MjValue>) -> Result<MjValue, Error>;
    env.add_filter("b64enc", (|s: String| crate::b64::STANDARD.encode(s)) as TextFilter);
    env.add_filter("b64dec", b64dec);
    env.add_filter("query", query_filter);
    env.add_filter(
        "urlencode_component",
        (|s: String| utf8_percent_encode(&s, URL_COMPONENT).to_string()) as TextFilter,
    );
    env.add_filter("indent", indent);
    env.add_filter("tojson", tojson);
    env.add_filter(
        "batch",
        (|state: &State, value: MjValue, count: usize, fill: Option<MjValue>| {
            minijinja::filters::batch(state, value, bounded("batch", count)?, fill)
        }) as SizedFilter,
    );
    env.add_filter(
        "slice",
        (|state: &State, value: MjValue, count: usize, fill: Option<MjValue>| {
            minijinja::filters::slice(state, value, bounded("slice", count)?, fill)
        }) as SizedFilter,
    );
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Templates {
        let mut env = Environment::empty();
        builtins::register(&mut env);
        configure(&mut env);
        Templates { env, count: 0, go: Vec::new(), input_visible: false }
    }

    /// A fixed text, not a template (Higress's `prependBody`/`appendBody`).
    /// Whether any template is in the Go dialect: only those read the request's client (`getRealIP`), so
    /// the host reads and carries it only then.
    pub fn has_go(&self) -> bool {
        !self.go.is_empty()
    }

    pub fn literal(text: &str) -> TemplateId {
        TemplateId(Resolved::Static(text.to_string()))
    }

    /// Compiles a template in either dialect; errors carry line information, and a Go template that calls a
    /// function this gateway lacks is refused naming it.
    pub fn add_spec(&mut self, name: &str, source: &str, spec: Spec) -> Result<TemplateId, String> {
        match spec.dialect {
            Dialect::Jinja => {
                let id = self.add(name, source, spec.escape)?;
                if spec.role == Role::Request {
                    self.check_request_names(&id)?;
                }
                Ok(id)
            }
            Dialect::Go => {
                let t = GoTemplate::parse(source).map_err(|e| e.to_string())?;
                if let Some(text) = t.literal() {
                    return Ok(TemplateId(Resolved::Static(text)));
                }
                self.count += 1;
                self.go.push(t);
                Ok(TemplateId(Resolved::Go(self.go.len() - 1, spec.escape == Escape::Url, spec.role)))
            }
        }
    }

    /// Refuses a template (in our dialect) that reads `config.KEY` for a KEY the server's `config` does not
    /// have: it would render empty without a word. A key the template tests first (`config.KEY is defined`,
    /// `config.KEY | default(...)`) may be missing.
    pub fn check_config_keys(&self, id: &TemplateId, source: &str, config: &MjValue) -> Result<(), String> {
        let TemplateId(Resolved::Compiled(full)) = id else { return Ok(()) };
        let template = self.env.get_template(full).map_err(describe)?;
        let mut missing: Vec<String> = Vec::new();
        for var in template.undeclared_variables(true) {
            let mut parts = var.splitn(3, '.');
            let (Some("config"), Some(key)) = (parts.next(), parts.next()) else { continue };
            if config.get_attr(key).is_ok_and(|v| !v.is_undefined()) {
                continue;
            }
            let name = format!("`config.{key}`");
            if !tested(source, &format!("config.{key}")) && !missing.contains(&name) {
                missing.push(name);
            }
        }
        crate::sort::sort(&mut missing);
        match missing.is_empty() {
            true => Ok(()),
            false => Err(format!(
                "reads {}, which the server's `config` does not have (a key that may be missing must be tested \
                 first: `config.KEY is defined`, or `config.KEY | default(...)`)",
                missing.join(", ")
            )),
        }
    }

    /// Compiles a template (in our dialect); the error message is minijinja's, with line information.
    pub fn add(&mut self, name: &str, source: &str, escape: Escape) -> Result<TemplateId, String> {
        self.count += 1;
        let full = match escape {
            Escape::None => format!("{}:{name}", self.count),
            Escape::Url => format!("{}:{name}#url", self.count),
        };
        self.env.add_template_owned(full.clone(), source.to_string()).map_err(describe)?;
        self.check_filters_and_tests(source)?;
        Ok(TemplateId(Resolved::Compiled(full)))
    }

    /// Compiles a template and, when its output cannot depend on the request (it has no template syntax,
    /// or reads nothing but `config`), renders it once now so requests skip the template engine.
    pub fn add_resolving(
        &mut self,
        name: &str,
        source: &str,
        spec: Spec,
        config: &MjValue,
    ) -> Result<TemplateId, String> {
        let id = self.add_spec(name, source, spec)?;
        self.check_config_keys(&id, source, config)?;
        if let TemplateId(Resolved::Go(i, _, _)) = &id {
            if self.go.get(*i).is_some_and(GoTemplate::reads_config_only) {
                let text = self.render(&id, &Data::request(&serde_json::Value::Null, config))?;
                return Ok(TemplateId(Resolved::Static(text)));
            }
            return Ok(id);
        }
        self.resolve(id, source, config)
    }

    fn resolve(&self, id: TemplateId, source: &str, config: &MjValue) -> Result<TemplateId, String> {
        let TemplateId(Resolved::Compiled(full)) = &id else { return Ok(id) };
        if !source.contains(['{', '%', '#']) {
            return Ok(TemplateId(Resolved::Static(source.to_string())));
        }
        let template = self.env.get_template(full).map_err(describe)?;
        if template.undeclared_variables(false).iter().all(|v| v == "config") {
            let text = self.render_ctx(&id, minijinja::context! { config => config.clone() })?;
            return Ok(TemplateId(Resolved::Static(text)));
        }
        Ok(id)
    }

    /// Compiles a template whose context is fully known at load (prompts, resources), refusing one that reads
    /// a name the context will not have: it would render empty without a word. `known` are the top-level
    /// variables; `args.x` must be one of `args`, and `config.x` a key of `config`. Resolved like
    /// [`Templates::add_resolving`].
    pub fn add_checked(
        &mut self,
        name: &str,
        source: &str,
        known: &[&str],
        args: &[&str],
        config: &MjValue,
    ) -> Result<TemplateId, String> {
        let id = self.add(name, source, Escape::None)?;
        let TemplateId(Resolved::Compiled(full)) = &id else { return Ok(id) };
        let template = self.env.get_template(full).map_err(describe)?;
        let mut unknown: Vec<String> = Vec::new();
        for var in template.undeclared_variables(true) {
            let mut parts = var.splitn(3, '.');
            let (top, key) = (parts.next().unwrap_or_default(), parts.next());
            if self.env.globals().any(|(g, _)| g == top) {
                continue;
            }
            let ok = match (top, key) {
                ("args", Some(k)) => args.contains(&k),
                ("config", Some(k)) => config.get_attr(k).is_ok_and(|v| !v.is_undefined()),
                (t, _) => known.contains(&t),
            };
            if !ok {
                // In order, so that the message is the same on every load.
                let var = format!("`{var}`");
                let at = unknown.binary_search(&var).unwrap_or_else(|i| i);
                unknown.insert(at, var);
            }
        }
        if !unknown.is_empty() {
            let args = if args.is_empty() { "none".to_string() } else { args.join(", ") };
            return Err(format!(
                "reads {}, which it will never have (it sees: {}; arguments: {args})",
                unknown.join(", "),
                known.join(", ")
            ));
        }
        self.resolve(id, source, config)
    }

    /// Whether a template reads a variable (`bodyBase64`), so that costly context is built only when read.
    pub fn reads(&self, id: &TemplateId, variable: &str) -> bool {
        let TemplateId(Resolved::Compiled(name)) = id else { return false };
        self.env.get_template(name).map_or(true, |t| t.undeclared_variables(false).contains(variable))
    }

    /// Refuses a filter or test this environment does not have, naming it: minijinja would accept the template
    /// and fail only when a call reaches it. Candidates are the names after `|` and `is [not]` inside tags
    /// (string literals skipped); the environment itself says which it lacks.
    fn check_filters_and_tests(&self, source: &str) -> Result<(), String> {
        let mut checked: Vec<(bool, String)> = Vec::new();
        for (is_filter, name) in filter_and_test_names(source) {
            if checked.iter().any(|(f, n)| *f == is_filter && *n == name) {
                continue;
            }
            let probe =
                if is_filter { format!("{{{{ none | {name} }}}}") } else { format!("{{{{ none is {name} }}}}") };
            let kind = match self.env.render_str(&probe, ()) {
                Ok(_) => None,
                Err(e) => Some(e.kind()),
            };
            match kind {
                Some(ErrorKind::UnknownFilter) if is_filter => return Err(format!("unknown filter `{name}`")),
                Some(ErrorKind::UnknownTest) if !is_filter => return Err(format!("unknown test `{name}`")),
                _ => checked.push((is_filter, name)),
            }
        }
        Ok(())
    }

    /// Lets request templates compiled from now on read `input` (while a tool that asks for input compiles).
    pub fn set_input_visible(&mut self, visible: bool) {
        self.input_visible = visible;
    }

    /// A request template sees `args` and `config` only: any other name (a Go-dialect function such as
    /// `uuidv4`, a typo) would render empty, so it is refused when the configuration loads.
    fn check_request_names(&self, id: &TemplateId) -> Result<(), String> {
        let TemplateId(Resolved::Compiled(name)) = id else { return Ok(()) };
        let template = self.env.get_template(name).map_err(describe)?;
        let mut unknown: Vec<String> = Vec::new();
        for v in template.undeclared_variables(false) {
            if v != "args"
                && v != "config"
                && !(self.input_visible && v == "input")
                && !self.env.globals().any(|(g, _)| g == v)
            {
                unknown.push(v);
            }
        }
        crate::sort::sort(&mut unknown);
        match unknown.first() {
            None => Ok(()),
            Some(_) => Err(format!(
                "unknown name(s) {}: a request template sees only `args` and `config`{}",
                crate::fields::backticked(&unknown),
                " (Go-dialect templates such as Higress's need the server's `templateDialect: go`)"
            )),
        }
    }

    /// Whether a response template reads the parsed upstream answer: `response`, or a top-level key of a JSON
    /// object answer (any name other than the context's own and the environment's globals). Decides whether
    /// an answer that does not parse must fail the call rather than render as if it were empty.
    pub fn reads_answer(&self, id: &TemplateId) -> bool {
        const OWN: [&str; 6] = ["args", "config", "body", "bodyBase64", "status", "headers"];
        let name = match id {
            TemplateId(Resolved::Compiled(name)) => name,
            // A Go result template's data is the answer itself.
            TemplateId(Resolved::Go(_, _, role)) => return *role != Role::Request,
            TemplateId(Resolved::Static(_)) => return false,
        };
        let Ok(template) = self.env.get_template(name) else { return true };
        template
            .undeclared_variables(false)
            .iter()
            .any(|v| !OWN.contains(&v.as_str()) && !self.env.globals().any(|(g, _)| g == v))
    }

    /// Renders a template over call data; errors (including running out of fuel) are reported, not raised.
    pub fn render(&self, id: &TemplateId, data: &Data) -> Result<String, String> {
        match &id.0 {
            Resolved::Static(text) => Ok(text.clone()),
            Resolved::Compiled(_) => self.render_ctx(id, data.jinja()),
            Resolved::Go(i, url, role) => {
                let Some(t) = self.go.get(*i) else { return Err("unknown template".into()) };
                let limits = gotemplate::Limits { fuel: FUEL, max_output: MAX_OUTPUT };
                let json = data.go(*role).map_err(|e| e.to_string())?;
                let env = CLIENT.with(|c| go_env(&c.borrow()));
                t.render(json, limits, *url, &env).map_err(|e| e.to_string())
            }
        }
    }

    /// Renders a minijinja template against a context.
    pub fn render_ctx<C: Serialize>(&self, id: &TemplateId, ctx: C) -> Result<String, String> {
        match &id.0 {
            Resolved::Static(text) => Ok(text.clone()),
            Resolved::Compiled(name) => self.render_value(name, MjValue::from(minijinja::value::Serde(ctx))),
            Resolved::Go(..) => Err("a Go template needs call data".into()),
        }
    }

    /// The part of [`Templates::render_ctx`] that does not depend on the context's type (one copy for all).
    fn render_value(&self, name: &str, ctx: MjValue) -> Result<String, String> {
        let t = self.env.get_template(name).map_err(describe)?;
        let mut out = Capped::default();
        let rendered = t.render_captured_to(ctx, &mut out);
        if out.len > MAX_OUTPUT {
            let size = if out.len > MAX_COUNTED { format!("more than {MAX_COUNTED}") } else { out.len.to_string() };
            return Err(format!(
                "the rendered template has {size} bytes, over the gateway's fixed limit of {MAX_OUTPUT} bytes per template"
            ));
        }
        rendered.map_err(describe)?;
        Ok(String::from_utf8(out.kept).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }
}

/// The names used as filters (`| name`) and tests (`is name`, `is not name`) inside `{{ }}` and `{% %}`,
/// outside string literals: `(is_filter, name)`.
fn filter_and_test_names(source: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find(['{']) {
        rest = &rest[start..];
        let close = if rest.starts_with("{{") {
            "}}"
        } else if rest.starts_with("{%") {
            "%}"
        } else {
            rest = &rest[1..];
            continue;
        };
        let Some(end) = rest.find(close) else { break };
        let mut tag = rest[2..end].to_string();
        rest = &rest[end + 2..];
        if tag.trim_start_matches(['-', '+', ' ']).starts_with("raw") {
            // `{% raw %}` text is not template code.
            match rest.find("endraw") {
                Some(i) => rest = &rest[i..],
                None => break,
            }
            continue;
        }
        // Blank out string literals so that `"a|b"` is not read as a filter.
        let mut quote: Option<char> = None;
        tag = tag
            .chars()
            .map(|c| match quote {
                Some(q) if c == q => {
                    quote = None;
                    ' '
                }
                Some(_) => ' ',
                None if c == '"' || c == '\'' => {
                    quote = Some(c);
                    ' '
                }
                None => c,
            })
            .collect();
        // Tokens: identifiers and `|`; anything else only separates them.
        let mut tokens: Vec<String> = Vec::new();
        let mut word = String::new();
        for c in tag.chars().chain([' ']) {
            if c.is_alphanumeric() || c == '_' {
                word.push(c);
                continue;
            }
            if !word.is_empty() {
                tokens.push(std::mem::take(&mut word));
            }
            if c == '|' {
                tokens.push("|".into());
            } else if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
        }
        for (i, tok) in tokens.iter().enumerate() {
            let ident =
                |t: Option<&String>| t.filter(|t| t.starts_with(|c: char| c.is_alphabetic() || c == '_')).cloned();
            if tok == "|" {
                if let Some(name) = ident(tokens.get(i + 1)) {
                    out.push((true, name));
                }
            } else if tok == "is" {
                let next =
                    if tokens.get(i + 1).is_some_and(|n| n == "not") { tokens.get(i + 2) } else { tokens.get(i + 1) };
                if let Some(name) = ident(next) {
                    out.push((false, name));
                }
            }
        }
    }
    out
}

/// A render's output: kept up to [`MAX_OUTPUT`], counted beyond, and cut off (an error that stops the render)
/// past [`MAX_COUNTED`], so that memory and time stay bounded whatever the template writes.
#[derive(Default)]
struct Capped {
    kept: Vec<u8>,
    len: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.len = self.len.saturating_add(buf.len());
        if self.len > MAX_COUNTED {
            return Err(std::io::Error::other("the rendered template is too large"));
        }
        if self.len <= MAX_OUTPUT {
            self.kept.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn bounded(filter: &str, n: usize) -> Result<usize, Error> {
    if n > MAX_FILTER_SIZE {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{filter}: {n} is over the gateway's limit of {MAX_FILTER_SIZE}"),
        ));
    }
    Ok(n)
}

/// minijinja's `indent`, refusing widths it would fail to allocate.
fn indent(
    value: minijinja::value::StringInput<'_>,
    width: Option<usize>,
    first: Option<bool>,
    blank: Option<bool>,
    kwargs: minijinja::value::Kwargs,
) -> Result<MjValue, Error> {
    let width = match width {
        Some(w) => Some(w),
        None => kwargs.peek::<Option<usize>>("width")?,
    };
    bounded("indent", width.unwrap_or(0))?;
    minijinja::filters::indent(value, width, first, blank, kwargs)
}

/// `tojson`'s layout, compact or indented (serde_json's `PrettyFormatter`'s, when `indent` is set): one
/// formatter type, so that a template value's serializer is instantiated once for both (about 3.5 KB of
/// wasm each).
struct Layout<'a> {
    indent: Option<&'a [u8]>,
    depth: usize,
    has_value: bool,
}

impl Layout<'_> {
    fn open<W: ?Sized + std::io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> std::io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(bracket)
    }

    fn close<W: ?Sized + std::io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> std::io::Result<()> {
        self.depth -= 1;
        if let (Some(indent), true) = (self.indent, self.has_value) {
            w.write_all(b"\n")?;
            for _ in 0..self.depth {
                w.write_all(indent)?;
            }
        }
        w.write_all(bracket)
    }

    fn item<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        match self.indent {
            None if first => Ok(()),
            None => w.write_all(b","),
            Some(indent) => {
                w.write_all(if first { b"\n" } else { b",\n" })?;
                for _ in 0..self.depth {
                    w.write_all(indent)?;
                }
                Ok(())
            }
        }
    }
}

impl serde_json::ser::Formatter for Layout<'_> {
    fn begin_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"[")
    }

    fn end_array<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"]")
    }

    fn begin_array_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.item(w, first)
    }

    fn end_array_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.open(w, b"{")
    }

    fn end_object<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        self.close(w, b"}")
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(&mut self, w: &mut W, first: bool) -> std::io::Result<()> {
        self.item(w, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(if self.indent.is_some() { b": " } else { b":" })
    }

    fn end_object_value<W: ?Sized + std::io::Write>(&mut self, _w: &mut W) -> std::io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

/// `tojson`: compact JSON as minijinja 2 wrote it (minijinja 3 adds Python's spaces; a request body should not
/// change because the engine did), safe in HTML (`<`, `>`, `&` and `'` escaped), indentations bounded.
fn tojson(value: &MjValue, indent: Option<MjValue>, kwargs: minijinja::value::Kwargs) -> Result<MjValue, Error> {
    let given = match indent {
        Some(i) => Some(i),
        None => kwargs.get::<Option<MjValue>>("indent")?,
    };
    kwargs.assert_all_used()?;
    let width = match given {
        None => None,
        Some(v) => match bool::try_from(v.clone()) {
            Ok(true) => Some(2),
            Ok(false) => None,
            Err(_) => Some(usize::try_from(v)?),
        },
    };
    let cannot =
        |e: serde_json::Error| Error::new(ErrorKind::InvalidOperation, "cannot serialize to JSON").with_source(e);
    if let Some(width) = width {
        bounded("tojson", width)?;
    }
    let pad = vec![b' '; width.unwrap_or(0)];
    let layout = Layout { indent: width.map(|_| pad.as_slice()), depth: 0, has_value: false };
    let mut text = Vec::with_capacity(128);
    let mut ser = serde_json::Serializer::with_formatter(&mut text, layout);
    serde::Serialize::serialize(value, &mut ser).map_err(cannot)?;
    let mut safe = String::with_capacity(text.len());
    for c in String::from_utf8_lossy(&text).chars() {
        match c {
            '<' => safe.push_str("\\u003c"),
            '>' => safe.push_str("\\u003e"),
            '&' => safe.push_str("\\u0026"),
            '\'' => safe.push_str("\\u0027"),
            c => safe.push(c),
        }
    }
    Ok(MjValue::from_safe_string(safe))
}

#[cfg(feature = "go-templates")]
fn go_env(client: &Client) -> gotemplate::Env {
    gotemplate::Env { real_ip: client.real_ip.clone(), socket_ip: client.socket_ip.clone(), now: None }
}

#[cfg(not(feature = "go-templates"))]
fn go_env(_client: &Client) -> gotemplate::Env {
    gotemplate::Env::default()
}

fn describe(e: Error) -> String {
    let mut msg = e.to_string();
    if e.kind() == ErrorKind::OutOfFuel {
        msg = "template evaluation exceeded its fuel limit".into();
    }
    msg
}

/// A template map of named values. One non-generic function, because each `MjValue::from_pairs` over another
/// iterator type instantiates minijinja's map building and a stable sort again (about 1 KB of wasm each).
#[inline(never)]
pub(crate) fn map_of(pairs: Vec<(&str, MjValue)>) -> MjValue {
    MjValue::from_pairs(pairs)
}

/// Renders `none`/undefined as nothing (not Python's "none") and percent-encodes values in URL templates.
fn format_value(out: &mut Output, state: &mut State, value: &MjValue) -> Result<(), Error> {
    if value.is_none() || value.is_undefined() {
        return Ok(());
    }
    if *state.auto_escape() == AutoEscape::Custom(std::borrow::Cow::Borrowed("url")) && !value.is_safe() {
        let text = value.to_string();
        return out.write_str(&utf8_percent_encode(&text, URL_COMPONENT).to_string()).map_err(Error::from);
    }
    minijinja::escape_formatter(out, state, value)
}

fn b64dec(s: String) -> Result<String, Error> {
    let bytes = crate::b64::STANDARD
        .decode(s.trim())
        .or_else(|_| crate::b64::URL_SAFE_NO_PAD.decode(s.trim()))
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("b64dec: {e}")))?;
    String::from_utf8(bytes).map_err(|_| Error::new(ErrorKind::InvalidOperation, "b64dec: not UTF-8 text"))
}

/// `value | query("a.b.0.c")`: a gjson-like path. `#` is an array's length, or maps over it (`items.#.name`).
fn query_filter(value: MjValue, path: String) -> Result<MjValue, Error> {
    if let Some(view) = value.downcast_object_ref::<JsonView>() {
        return Ok(MjValue::from(minijinja::value::Serde(query_path(view.node(), &path))));
    }
    let json = serde_json::to_value(&value).map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
    Ok(MjValue::from(minijinja::value::Serde(query_path(&json, &path))))
}

/// Whether `source` tests `var` somewhere before relying on it: `var is [not] defined`, `var is undefined`
/// or `var | default`.
fn tested(source: &str, var: &str) -> bool {
    source.match_indices(var).any(|(at, _)| {
        let rest = source[at + var.len()..].trim_start();
        let after_is = rest.strip_prefix("is ").map(|r| r.trim_start().trim_start_matches("not ").trim_start());
        after_is.is_some_and(|r| r.starts_with("defined") || r.starts_with("undefined"))
            || rest.strip_prefix('|').is_some_and(|r| r.trim_start().starts_with("default"))
    })
}

/// A parsed JSON document as templates see it, converted lazily: upstream answers can be large and a
/// template usually reads a few fields, so only what a template touches becomes a template value.
pub fn json_view(root: Arc<serde_json::Value>) -> MjValue {
    JsonView::at(root, Vec::new())
}

#[derive(Debug)]
struct JsonView {
    root: Arc<serde_json::Value>,
    path: Vec<Seg>,
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

impl JsonView {
    fn at(root: Arc<serde_json::Value>, path: Vec<Seg>) -> MjValue {
        use serde_json::Value as J;
        let view = JsonView { root, path };
        match view.node() {
            J::Object(_) | J::Array(_) => MjValue::from_object(view),
            J::Null => MjValue::from(()),
            J::Bool(b) => MjValue::from(*b),
            J::Number(n) => n
                .as_i64()
                .map(MjValue::from)
                .or_else(|| n.as_u64().map(MjValue::from))
                .unwrap_or_else(|| MjValue::from(n.as_f64().unwrap_or(0.0))),
            J::String(s) => MjValue::from(s.as_str()),
        }
    }

    fn node(&self) -> &serde_json::Value {
        let mut v = &*self.root;
        for seg in &self.path {
            v = match (seg, v) {
                (Seg::Key(k), serde_json::Value::Object(m)) => m.get(k),
                (Seg::Index(i), serde_json::Value::Array(a)) => a.get(*i),
                _ => None,
            }
            .unwrap_or(&serde_json::Value::Null);
        }
        v
    }

    fn child(&self, seg: Seg) -> MjValue {
        let mut path = self.path.clone();
        path.push(seg);
        JsonView::at(self.root.clone(), path)
    }
}

impl Object for JsonView {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        if self.node().is_array() {
            ObjectRepr::Seq
        } else {
            ObjectRepr::Map
        }
    }

    fn get_value(self: &Arc<Self>, key: &MjValue) -> Option<MjValue> {
        match self.node() {
            serde_json::Value::Object(m) => {
                let k = key.as_str()?;
                m.contains_key(k).then(|| self.child(Seg::Key(k.to_string())))
            }
            serde_json::Value::Array(a) => {
                let i = i64::try_from(key.clone()).ok()?;
                let i = if i < 0 { a.len() as i64 + i } else { i };
                (0..a.len() as i64).contains(&i).then(|| self.child(Seg::Index(i as usize)))
            }
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.node() {
            serde_json::Value::Object(m) => {
                let mut keys = Vec::with_capacity(m.len());
                for k in m.keys() {
                    keys.push(MjValue::from(k.as_str()));
                }
                Enumerator::Values(keys)
            }
            serde_json::Value::Array(a) => Enumerator::Seq(a.len()),
            _ => Enumerator::Empty,
        }
    }
}

/// Queries a JSON value with a gjson-like dotted path; missing parts give `null`.
pub fn query_path(value: &serde_json::Value, path: &str) -> serde_json::Value {
    use serde_json::Value;
    let path = path.trim();
    if path.is_empty() {
        return value.clone();
    }
    let normalized = path.replace('[', ".").replace(']', "");
    let mut parts = normalized.split('.').filter(|p| !p.is_empty());
    // Walked by reference: only what the path selects is copied, not the document (upstream answers can be
    // large, and a template reads a few fields of them).
    let mut current = value;
    while let Some(part) = parts.next() {
        let next = match (part, current) {
            ("#", Value::Array(items)) => {
                // The rest of the path, joined again (the same text as collecting the parts and joining them).
                let mut sub = String::new();
                for p in parts {
                    if !sub.is_empty() {
                        sub.push('.');
                    }
                    sub.push_str(p);
                }
                if sub.is_empty() {
                    return Value::from(items.len());
                }
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(query_path(i, &sub));
                }
                return Value::Array(out);
            }
            (p, Value::Array(items)) => p.parse::<usize>().ok().and_then(|i| items.get(i)),
            (p, Value::Object(map)) => map.get(p),
            _ => None,
        };
        match next {
            Some(v) => current = v,
            None => return Value::Null,
        }
    }
    current.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn url_templates_percent_encode_values() {
        let mut t = Templates::new();
        let id = t.add("u", "/users/{{ args.id }}?q={{ args.q }}&raw={{ args.r | safe }}", Escape::Url).unwrap();
        let out = t.render_ctx(&id, json!({"args": {"id": "../a b/?x=1&y", "q": "é#", "r": "a/b"}})).unwrap();
        assert_eq!(out, "/users/..%2Fa%20b%2F%3Fx%3D1%26y?q=%C3%A9%23&raw=a/b");
    }

    #[test]
    fn plain_templates_do_not_escape_and_render_none_as_empty() {
        let mut t = Templates::new();
        let id = t
            .add("b", "{\"a\": {{ args.a | tojson }}, \"n\": \"{{ args.missing }}{{ args.nul }}\"}", Escape::None)
            .unwrap();
        let out = t.render_ctx(&id, json!({"args": {"a": "x\"y<", "nul": null}})).unwrap();
        assert_eq!(out, "{\"a\": \"x\\\"y\\u003c\", \"n\": \"\"}");
    }

    #[test]
    fn filters_work() {
        let mut t = Templates::new();
        let id = t
            .add("f", "{{ 'hi' | b64enc }} {{ 'aGk=' | b64dec }} {{ r | query('items.#') }} {{ r | query('items.1.n') }} {{ r | query('items.#.n') | join(',') }} {{ 'a b&' | urlencode }}", Escape::None)
            .unwrap();
        let out = t.render_ctx(&id, json!({"r": {"items": [{"n": "x"}, {"n": "y"}]}})).unwrap();
        assert_eq!(out, "aGk= hi 2 y x,y a%20b%26");
    }

    #[test]
    fn runaway_templates_are_stopped() {
        let mut t = Templates::new();
        let id = t
            .add(
                "loop",
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
                Escape::None,
            )
            .unwrap();
        let err = t.render_ctx(&id, json!({})).unwrap_err();
        assert!(err.contains("fuel"), "{err}");
        assert!(t.add("bad", "{{ unclosed", Escape::None).is_err());
        // Output beyond the limit is refused, naming it (a template quoting a large answer, say).
        let quote = t.add("quote", "<{{ body }}>", Escape::None).unwrap();
        let err = t.render_ctx(&quote, json!({"body": "x".repeat(MAX_OUTPUT)})).unwrap_err();
        assert!(err.contains(&format!("has {} bytes", MAX_OUTPUT + 2)) && err.contains("limit of 4194304"), "{err}");
    }

    #[test]
    fn filter_sizes_that_would_not_allocate_are_refused() {
        // minijinja reserves a filter's width or count before looking at the value; a failed allocation aborts
        // the VM (found by `properties::templates_compile_or_refuse_and_render_within_bounds`).
        let mut t = Templates::new();
        for src in [
            "{{ 'a\nb' | indent(99999999999) }}",
            "{{ 'a' | indent(width=18446744073709551615) }}",
            "{{ [1] | tojson(indent=4294967296) }}",
            "{{ [1] | tojson(99999999999) }}",
            "{{ [1] | batch(99999999999) | list }}",
            "{{ [1] | slice(99999999999) | list }}",
        ] {
            let id = t.add("f", src, Escape::None).unwrap();
            let err = t.render_ctx(&id, json!({})).unwrap_err();
            assert!(err.contains("over the gateway's limit of 1024"), "{src}: {err}");
        }
        let id = t
            .add("ok", "{{ 'a\nb' | indent(2) }}|{{ [1] | tojson(indent=2) }}|{{ [1,2,3] | batch(2) | list }}|{{ [1,2] | slice(2) | list }}|{{ [1] | tojson(true) }}", Escape::None)
            .unwrap();
        assert_eq!(t.render_ctx(&id, json!({})).unwrap(), "a\n  b|[\n  1\n]|[[1, 2], [3]]|[[1], [2]]|[\n  1\n]");
    }

    #[test]
    fn tojson_writes_compact_or_indented_json() {
        let mut t = Templates::new();
        let src = "{{ v | tojson }}|{{ v | tojson(indent=2) }}|{{ [] | tojson(1) }}|{{ {} | tojson }}";
        let id = t.add("j", src, Escape::None).unwrap();
        let out = t.render_ctx(&id, json!({"v": {"a": [1, {"b": "<x>"}], "c": null}})).unwrap();
        let compact = r#"{"a":[1,{"b":"\u003cx\u003e"}],"c":null}"#;
        let indented = "{\n  \"a\": [\n    1,\n    {\n      \"b\": \"\\u003cx\\u003e\"\n    }\n  ],\n  \"c\": null\n}";
        assert_eq!(out, format!("{compact}|{indented}|[]|{{}}"));
    }

    #[test]
    fn repeated_sequences_are_refused_before_they_allocate() {
        // minijinja 2 sized `seq * n` as `len * n` unchecked: a huge n aborted the VM in `| list` (a failed
        // allocation) and overflowed in a debug build. minijinja 3 refuses a repeat over its own bound.
        let mut t = Templates::new();
        for src in [
            "{{ ([1, 2] * 100000000000) | list }}",
            "{{ (9223372036854775807 * [1, 2]) | list }}",
            "{{ ([1] * n) | length }}",
        ] {
            let id = t.add("r", src, Escape::None).unwrap();
            let err = t.render_ctx(&id, json!({"n": 1u64 << 40})).unwrap_err();
            assert!(err.contains("too large"), "{src}: {err}");
        }
        let id = t.add("ok", "{{ ([1, 2] * 2) | list }}", Escape::None).unwrap();
        assert_eq!(t.render_ctx(&id, json!({})).unwrap(), "[1, 2, 1, 2]");
    }

    #[test]
    fn output_is_cut_off_while_rendering() {
        // Found by `properties::templates_compile_or_refuse_and_render_within_bounds`: printing a list on each
        // of a loop's iterations wrote 64 MiB within the fuel (5 s in a debug build).
        let mut t = Templates::new();
        let src = "{% for x in range(65536)[1:] %}{% set v = range(1000) %}{{ v }}{{ x }}{% endfor %}";
        let id = t.add("print", src, Escape::None).unwrap();
        let started = std::time::Instant::now();
        // minijinja 3 charges what it prints to the fuel, and stops first; minijinja 2 did not, and the size
        // check stopped it.
        let err = t.render_ctx(&id, json!({})).unwrap_err();
        assert!(err.contains("has more than 5242880 bytes") || err.contains("fuel"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
        // A loop over a large answer used to build all of its output (here 1 GiB) before the size check.
        let mut t = Templates::new();
        let id = t.add("loop", "{% for i in range(1000) %}{{ body }}{% endfor %}", Escape::None).unwrap();
        let started = std::time::Instant::now();
        let err = t.render_ctx(&id, json!({"body": "x".repeat(1 << 20)})).unwrap_err();
        assert!(err.contains("has more than 5242880 bytes, over the gateway's fixed limit of 4194304"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(3), "{:?}", started.elapsed());
    }

    #[test]
    fn request_independent_templates_are_resolved_once() {
        let mut t = Templates::new();
        let config = crate::gateway::safe_config(json!({"base": "/v1", "key": "k"}).as_object().unwrap());
        let fixed = t.add_resolving("a", "/weather", Spec::jinja(Escape::Url), &config).unwrap();
        let from_config =
            t.add_resolving("b", "{{ config.base }}/x?k={{ config.key }}", Spec::jinja(Escape::Url), &config).unwrap();
        let dynamic =
            t.add_resolving("c", "{{ config.base }}/{{ args.id }}", Spec::jinja(Escape::Url), &config).unwrap();
        assert!(matches!(fixed.0, Resolved::Static(ref s) if s == "/weather"));
        assert!(matches!(from_config.0, Resolved::Static(ref s) if s == "/v1/x?k=k"));
        assert!(matches!(dynamic.0, Resolved::Compiled(_)));
        let ctx = minijinja::context! { args => MjValue::from(minijinja::value::Serde(json!({"id": "a b"}))), config => config.clone() };
        assert_eq!(t.render_ctx(&dynamic, ctx).unwrap(), "/v1/a%20b");
        assert!(t.add_resolving("d", "{{ config.x | nosuchfilter }}", Spec::jinja(Escape::None), &config).is_err());
    }

    #[test]
    #[cfg(feature = "go-templates")]
    fn go_templates_resolve_and_render_through_data() {
        let mut t = Templates::new();
        let config = crate::gateway::safe_config(json!({"key": "k"}).as_object().unwrap());
        let spec = Spec { escape: Escape::None, dialect: Dialect::Go, role: Role::Request };
        let fixed = t.add_resolving("h", "Bearer {{.config.key}}", spec, &config).unwrap();
        assert!(matches!(fixed.0, Resolved::Static(ref s) if s == "Bearer k"));
        let dynamic = t.add_resolving("u", "{{.args.id}}-{{.config.key}}", spec, &config).unwrap();
        assert!(matches!(dynamic.0, Resolved::Go(..)));
        let args = json!({"id": 7});
        assert_eq!(t.render(&dynamic, &Data::request(&args, &config)).unwrap(), "7-k");
        assert!(t.add_spec("x", "{{uuidv5}}", spec).unwrap_err().contains("\"uuidv5\" not defined"));
        // Our dialect refuses names a request template cannot see, rather than rendering them empty.
        let e = t.add_spec("y", "{{ uuidv4 }}", Spec::jinja(Escape::None)).unwrap_err();
        assert!(e.contains("`uuidv4`"), "{e}");
        let result = Spec { escape: Escape::None, dialect: Dialect::Jinja, role: Role::Result };
        assert!(t.add_spec("z", "{{ temp }}", result).is_ok(), "a result template may read the answer's keys");
    }

    #[test]
    fn clients_are_read_as_higress_reads_them() {
        let c = |xff: Option<&str>, sock: Option<&str>| {
            let c = Client::from_request(xff, sock);
            (c.real_ip.unwrap_or_default(), c.socket_ip.unwrap_or_default())
        };
        assert_eq!(
            c(Some(" 203.0.113.7 , 10.0.0.1"), Some("10.0.0.2:5555")),
            ("203.0.113.7".into(), "10.0.0.2".into())
        );
        assert_eq!(c(None, Some("[2001:db8::1]:443")), ("2001:db8::1".into(), "2001:db8::1".into()));
        assert_eq!(c(Some(""), Some("192.0.2.1")), ("192.0.2.1".into(), "192.0.2.1".into()));
        assert_eq!(c(None, None), (String::new(), String::new()));
    }

    #[test]
    fn unknown_filters_and_tests_are_refused_at_load() {
        let mut t = Templates::new();
        let e = t.add("a", "{% if args.a %}{{ args.a | nosuch(1) }}{% endif %}", Escape::None).unwrap_err();
        assert_eq!(e, "unknown filter `nosuch`");
        let e = t.add("b", "{{ args.b is not nosuchtest }}", Escape::None).unwrap_err();
        assert_eq!(e, "unknown test `nosuchtest`");
        // Known ones, ours among them, strings that look like filters, and raw blocks are fine.
        let ok = "{{ args.x | default('a|nope') | b64enc | query('a.b') | tojson }}{% if args.x is defined and 1 is not none %}{{ \"|x\" }}{% endif %}{% raw %}{{ y | nope }}{% endraw %}{% for i in args.l | select('odd') %}{% endfor %}";
        assert!(t.add("c", ok, Escape::None).is_ok(), "{:?}", t.add("c", ok, Escape::None));
    }

    #[test]
    fn json_views_behave_like_converted_values() {
        let mut t = Templates::new();
        let doc = json!({"n": 2, "items": [{"name": "a", "tags": ["x"]}, {"name": "b", "tags": []}], "ok": true, "none": null, "f": 1.5});
        let src = "{{ n }} {{ items|length }} {{ items[1].name }} {{ items[-1].name }} {% for i in items %}{{ i.name }}{{ i.tags|join('+') }},{% endfor %} \
                   {% if ok %}yes{% endif %}{{ none }} {{ f }} {{ items[0] | tojson }} {{ items | query('#.name') | join('/') }} \
                   {{ missing }}{% for k in items[0] %}[{{ k }}]{% endfor %} {{ items[5] }}";
        let id = t.add("v", src, Escape::None).unwrap();
        let view = json_view(Arc::new(doc.clone()));
        let lazy = t.render_ctx(&id, minijinja::context! { ..view }).unwrap();
        let eager = t.render_ctx(&id, MjValue::from(minijinja::value::Serde(&doc))).unwrap();
        assert_eq!(lazy, eager);
        assert!(lazy.starts_with("2 2 b b ax,b, yes 1.5 {\"name\":\"a\",\"tags\":[\"x\"]} a/b [name][tags]"), "{lazy}");
    }

    #[test]
    fn gjson_like_paths() {
        let v = json!({"a": {"b": [1, {"c": true}]}});
        assert_eq!(query_path(&v, "a.b.1.c"), json!(true));
        assert_eq!(query_path(&v, "a.b[0]"), json!(1));
        assert_eq!(query_path(&v, "a.x.y"), json!(null));
        assert_eq!(query_path(&v, "a.b.#"), json!(2));
        assert_eq!(query_path(&v, ""), v);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::strategies::{hostile_string, json_value};
    use proptest::prelude::*;
    use serde_json::json;
    use std::time::{Duration, Instant};

    /// Longest a render may take here (a debug build, on a loaded machine). Fuel counts instructions, not the
    /// work one instruction does on a large value (a filter over a long list, a string repeated), so sources
    /// here keep their own literals small (lists of at most 1,000 items): what is measured is a template
    /// against values of any shape from the client and the upstream, and the output limit, which bounds the
    /// work a render does by writing.
    const TIME_LIMIT: Duration = Duration::from_secs(5);

    const KEYS: &[&str] = &["a", "s", "n", "list", "items", "name", "x"];

    fn literal() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "0",
                "1",
                "-1",
                "2",
                "7",
                "100",
                "65536",
                "2147483648",
                "9223372036854775807",
                "18446744073709551615",
                "1e308",
                "0.5",
                "none",
                "true",
                "'x'",
                "'{{'",
                "'é'",
                "'a.#'",
                "''",
                "[1, 2]",
                "{'a': 1}",
                "range(3)",
                "range(1000)",
                "namespace(v=1)",
            ])
            .prop_map(String::from),
            hostile_string().prop_map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))),
        ]
    }

    fn operand() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "args",
                "args.a",
                "args.s",
                "args.n",
                "args.list",
                "args.items",
                "args.x.y",
                "config",
                "config.key",
                "response",
                "response.items",
                "response[0]",
                "body",
                "status",
                "headers",
                "missing",
                "loop.index",
            ])
            .prop_map(String::from),
            literal(),
        ]
    }

    const FILTERS: &[&str] = &[
        "tojson",
        "tojson(indent=2)",
        "tojson(indent=99999999999)",
        "urlencode",
        "urlencode_component",
        "b64enc",
        "b64dec",
        "query('a.#')",
        "query('items.#.name')",
        "query('0.x')",
        "join(',')",
        "length",
        "upper",
        "lower",
        "replace('a', 'bb')",
        "indent(4)",
        "indent(99999999999)",
        "indent(width=18446744073709551615)",
        "int",
        "float",
        "abs",
        "first",
        "last",
        "list",
        "sort",
        "unique",
        "reverse",
        "string",
        "trim",
        "safe",
        "default('d')",
        "round",
        "sum",
        "min",
        "max",
        "items",
        "dictsort",
        "batch(2)",
        "batch(99999999999)",
        "slice(3)",
        "map('upper')",
        "select",
        "reject",
        "title",
        "capitalize",
        "pprint",
        "escape",
        "split",
        "lines",
        "count",
        "attr('x')",
        "center(9999999999)",
        "truncate(3)",
        "wordcount",
    ];

    fn expr() -> impl Strategy<Value = String> {
        operand().prop_recursive(3, 24, 3, |inner| {
            prop_oneof![
                (
                    inner.clone(),
                    prop::sample::select(vec!["~", "+", "-", "*", "**", "//", "%", "/", "==", "<", "in", "and", "or"]),
                    inner.clone()
                )
                    .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
                (inner.clone(), prop::sample::select(FILTERS)).prop_map(|(a, f)| format!("({a} | {f})")),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a}[{b}]")),
                (inner.clone(), inner.clone(), inner.clone()).prop_map(|(a, b, c)| format!("({a} if {b} else {c})")),
                inner.clone().prop_map(|a| format!("(not {a})")),
                inner.clone().prop_map(|a| format!("range({a})")),
                inner.prop_map(|a| format!("{a}[1:]")),
            ]
        })
    }

    /// Template sources from Jinja's statements over the context the gateway gives, with junk mixed in so that
    /// some do not compile.
    fn source() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            3 => expr().prop_map(|e| format!("{{{{ {e} }}}}")),
            1 => hostile_string().prop_map(|s| s.replace('{', "(")),
            1 => expr().prop_map(|e| format!("{{% set v = {e} %}}{{{{ v }}}}")),
            1 => expr().prop_map(|e| format!("{{% set ns = namespace(v='ab') %}}{{% for i in range(40) %}}{{% set ns.v = ns.v ~ {e} %}}{{% endfor %}}{{{{ ns.v | length }}}}")),
            1 => Just("{# c #}{% raw %}{{ x }}{% endraw %}".to_string()),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                4 => prop::collection::vec(inner.clone(), 1..4).prop_map(|v| v.concat()),
                2 => (expr(), inner.clone()).prop_map(|(e, b)| format!("{{% for x in {e} %}}{b}{{{{ x }}}}{{% endfor %}}")),
                2 => (expr(), inner.clone(), inner.clone())
                    .prop_map(|(e, a, b)| format!("{{% if {e} %}}{a}{{% else %}}{b}{{% endif %}}")),
                1 => (inner.clone(), expr()).prop_map(|(b, e)| format!("{{% set v %}}{b}{{{{ {e} }}}}{{% endset %}}{{{{ v ~ v }}}}")),
                1 => inner.clone().prop_map(|b| format!("{{% filter upper %}}{b}{{% endfilter %}}")),
                1 => (inner, 0..40usize, hostile_string()).prop_map(|(b, cut, junk)| b.chars().take(cut).collect::<String>() + &junk),
            ]
        })
    }

    proptest! {
        #![proptest_config(crate::strategies::cases(2000))]

        /// Guards templates against whatever the operator writes and whatever the client and the upstream send:
        /// a source compiles or is refused; a compiled one renders or fails with a message, within its fuel
        /// and the output limit, in bounded time, never a panic (which would take the VM down).
        #[test]
        fn templates_compile_or_refuse_and_render_within_bounds(
            src in source(),
            url in any::<bool>(),
            args in json_value(KEYS),
            response in json_value(KEYS),
            body in hostile_string(),
        ) {
            let mut t = Templates::new();
            let escape = if url { Escape::Url } else { Escape::None };
            let config = crate::gateway::safe_config(json!({"key": "k/1", "base": "/v1"}).as_object().unwrap());
            let Ok(id) = t.add_resolving("fuzz", &src, Spec::jinja(escape), &config) else { return Ok(()) };
            let ctx = minijinja::context! {
                args => MjValue::from(minijinja::value::Serde(&args)),
                config => config.clone(),
                response => json_view(Arc::new(response)),
                body => body,
                status => 200,
                headers => MjValue::from(minijinja::value::Serde(json!({"content-type": "application/json"}))),
            };
            let started = Instant::now();
            let out = t.render_ctx(&id, ctx);
            prop_assert!(started.elapsed() < TIME_LIMIT, "{:?} for {}", started.elapsed(), src);
            if let Ok(out) = out {
                prop_assert!(out.len() <= MAX_OUTPUT);
            }
        }

        /// Guards the escaping of `url` templates: whatever a value holds, it comes out as RFC 3986 unreserved
        /// characters and %XX only, so it cannot add a path segment, a query parameter or a host.
        #[test]
        fn url_values_are_always_percent_encoded(v in json_value(KEYS)) {
            let mut t = Templates::new();
            let id = t.add("u", "/p/{{ args.v }}?q={{ args.v }}", Escape::Url).unwrap();
            let out = t.render_ctx(&id, json!({"args": {"v": v}})).unwrap();
            let (path, query) = out.split_once("?q=").unwrap();
            let value = path.strip_prefix("/p/").unwrap();
            prop_assert_eq!(value, query);
            let bytes = value.as_bytes();
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'%' {
                    prop_assert!(bytes.len() > i + 2 && bytes[i + 1..i + 3].iter().all(u8::is_ascii_hexdigit), "{}", value);
                    i += 3;
                } else {
                    prop_assert!(bytes[i].is_ascii_alphanumeric() || b"-_.~".contains(&bytes[i]), "{}", value);
                    i += 1;
                }
            }
        }
    }
}
