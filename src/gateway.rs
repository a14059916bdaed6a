//! The compiled plugin: every server and tool validated, every template compiled, every listing precomputed,
//! so the request path only looks things up.

use crate::config::{parse_document, ConfigError, PluginConfig};
use crate::prompt::Prompt;
use crate::resource::Resource;
use crate::rules::Rules;
use crate::session::SessionStore;
use crate::template::Templates;
use crate::tool::Tool;
use crate::upstream::UpstreamResult;
use minijinja::value::Value as MjValue;
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Envoy's default limit on the answer to a plugin's HTTP call (`kBufferLimitForResponse` of its async
/// client): a larger answer is dropped and the call reset, so the plugin never sees its size.
pub const ENVOY_ANSWER_LIMIT: usize = 32 * 1024 * 1024;
/// The Envoy runtime key that changes [`ENVOY_ANSWER_LIMIT`].
pub const ENVOY_ANSWER_LIMIT_KEY: &str = "http.async_response_buffer_limit";
/// How early Envoy's timer may fire compared with the plugin's clock, both in milliseconds.
const TIMER_SLACK_MS: u64 = 50;

/// One served MCP server.
#[derive(Debug)]
pub struct Server {
    pub name: String,
    pub version: String,
    pub title: Option<String>,
    pub instructions: Option<String>,
    /// `serverInfo` as `initialize` and `server/discover` give it, built once.
    pub info: Value,
    /// What the server offers, computed from what it serves.
    pub capabilities: Value,
    pub tools: Vec<Tool>,
    tool_index: HashMap<String, usize>,
    pub prompts: Vec<Prompt>,
    prompt_index: HashMap<String, usize>,
    pub resources: Vec<Resource>,
    resource_index: HashMap<String, usize>,
    pub resource_templates: Vec<Resource>,
    /// `config` as templates see it: strings marked safe so URL templates do not escape operator values.
    pub config: MjValue,
    /// `allowTools`: the tools clients may see and call; `None`: all.
    pub allow_tools: Option<Vec<String>>,
    /// Each tool's notifications (most have none), in the order of `tools`.
    pub notifications: Vec<crate::notify::Notifications>,
    /// Where this server's clients present credentials its tools read (downstream security,
    /// `passthroughAuthHeader`): read from each request, and nothing else of it.
    pub credential_sources: Vec<crate::credential::Source>,
    /// Where a proxied server's backend is (`type: mcp-proxy`); `None`: the gateway serves it itself.
    pub proxy: Option<crate::proxy::Backend>,
    /// A virtual server's tools, references to other servers' (`type: virtual`, `toolSet`).
    pub composed: Option<Box<crate::composed::Virtual>>,
    /// Who the server admits (`auth`).
    pub auth: crate::admission::ServerAuth,
    /// Which tools, prompts and resources each caller may use (`policy`); `None`: all of them.
    pub policy: Option<std::sync::Arc<crate::admission::policy::Policy>>,
    /// `guardrails`: checks on tool arguments and filters on tool results; `None`: none configured.
    pub guard: Option<std::sync::Arc<crate::guard::Guard>>,
    /// Rate limits and quotas on its tool calls (`rateLimits`, `quotas`; [`crate::limits`]).
    pub limits: crate::limits::ServerLimits,
}

impl Server {
    pub fn tool(&self, name: &str) -> Option<&Tool> {
        self.tool_index.get(name).map(|i| &self.tools[*i])
    }

    /// Whether a client may see and call `tool`: it is in `allowTools` (when set) and in the request's
    /// `x-envoy-allow-mcp-tools` list (when the request has one), as Higress intersects them.
    pub fn tool_allowed(&self, tool: &str, header: Option<&[String]>) -> bool {
        let listed = |list: &[String]| list.iter().any(|t| t == tool);
        self.allow_tools.as_deref().is_none_or(listed) && header.is_none_or(listed)
    }

    /// Whether the caller may see and use an item: `allowTools` and the allow header for tools, then the
    /// server's `policy` for the caller.
    pub fn may(&self, access: &Access, kind: crate::admission::policy::Kind, name: &str) -> bool {
        (kind != crate::admission::policy::Kind::Tool || self.tool_allowed(name, access.header))
            && self.policy.as_ref().is_none_or(|p| p.allows(access.caller, kind, name))
    }

    /// Whether lists must be filtered for callers (some item may be hidden from some caller).
    pub fn filters(&self, access: &Access, kind: crate::admission::policy::Kind) -> bool {
        self.policy.is_some()
            || (kind == crate::admission::policy::Kind::Tool && (self.allow_tools.is_some() || access.header.is_some()))
    }

    /// The notifications a tool sends before its result, if it has any.
    pub fn notifications(&self, tool: &str) -> Option<&crate::notify::Notifications> {
        self.tool_index.get(tool).and_then(|i| self.notifications.get(*i)).filter(|n| !n.is_empty())
    }

    pub fn prompt(&self, name: &str) -> Option<&Prompt> {
        self.prompt_index.get(name).map(|i| &self.prompts[*i])
    }

    /// The resource at `uri`: a listed resource first, else the first template that matches, with the
    /// variables it matched.
    pub fn resource(&self, uri: &str) -> Option<(&Resource, Map<String, Value>)> {
        if let Some(i) = self.resource_index.get(uri) {
            return Some((&self.resources[*i], Map::new()));
        }
        self.resource_templates.iter().find_map(|t| t.matches(uri).map(|vars| (t, vars)))
    }

    /// Whether `completion/complete` has anything to offer here.
    pub fn completes(&self) -> bool {
        self.prompts
            .iter()
            .flat_map(|p| &p.arguments)
            .chain(self.resource_templates.iter().flat_map(|r| &r.arguments))
            .any(|a| a.completable())
    }
}

/// What a request may use: its caller, and the tools its `x-envoy-allow-mcp-tools` header allows.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    pub caller: &'a crate::caller::Caller,
    pub header: Option<&'a [String]>,
}

/// Everything the request path needs, built once in `on_configure`.
#[derive(Debug)]
pub struct Gateway {
    pub prefix: String,
    pub allowed_origins: Vec<String>,
    /// The session store chosen by `sessions.store`, keys derived.
    pub sessions: SessionStore,
    pub max_request_bytes: usize,
    pub page_size: usize,
    /// Upstream answers above this size are refused before they are copied into the VM.
    pub max_response_bytes: usize,
    /// Tool calls one request may start (`maxCallsPerRequest`).
    pub max_calls_per_request: usize,
    /// Upstream calls one worker may have outstanding (`maxCallsInFlight`).
    pub max_calls_in_flight: usize,
    /// How long a request body may take to arrive (`requestBodyTimeoutMs`).
    pub request_body_timeout_ms: u64,
    pub servers: Vec<Server>,
    pub templates: Templates,
    /// Things the operator should read once, at load (operations an OpenAPI import skipped, and why).
    pub notices: Vec<String>,
    /// `Some` when a tool or prompt asks for input: the state keys derived from `sessions.signingKeys`,
    /// or `None` inside for this Envoy's shared key ([`crate::input`]).
    pub input_keys: Option<Option<Vec<crate::input::Key>>>,
    /// `Some` when a virtual server reaches a `transport: sse` server through this Envoy's own bridge: the
    /// keys of its passes ([`crate::loopback`]).
    pub loopback: Option<crate::loopback::Keys>,
    /// Who calls: consumers, API keys, `jwt_authn` claims ([`crate::admission`]).
    pub admission: crate::admission::Admission,
    /// Stats and audit lines (`observability`).
    pub observability: crate::metrics::Observability,
    /// The metrics of every server's tools, laid out at load ([`crate::metrics::Stats`]).
    pub stats: crate::metrics::Stats,
    /// What a request's `x-higress-mcpserver-config` does here (`trustConfigHeader`).
    pub config_header: crate::config_header::ConfigHeader,
    /// The Redis that rate limits and quotas count in when sessions are not kept in Redis
    /// (`sessions.redis` with another store).
    limits_redis: Option<crate::session::redis::RedisStore>,
}

impl Gateway {
    /// The Redis the host connects to (`sessions.redis`): the session store's, or the rate limits' alone.
    pub fn redis(&self) -> Option<&crate::session::redis::RedisStore> {
        self.sessions.redis().or(self.limits_redis.as_ref())
    }

    /// Parses, validates and compiles a configuration string.
    pub fn from_config_str(text: &str) -> Result<Gateway, ConfigError> {
        Self::compile(PluginConfig::parse(text)?)
    }

    /// The same for a configuration that may carry Higress's per-route `_rules_` (what a `WasmPlugin`'s
    /// `matchRules` become): one gateway per rule, and one for the global keys if there are any.
    pub fn rules_from_config_str(text: &str) -> Result<Rules<Gateway>, ConfigError> {
        Rules::parse(parse_document(text)?, |doc| Self::compile(PluginConfig::from_value(doc)?))
    }

    /// Compiles a parsed configuration.
    pub fn compile(cfg: PluginConfig) -> Result<Gateway, ConfigError> {
        let mut templates = Templates::new();
        let mut servers = Vec::with_capacity(cfg.servers.len());
        let mut notices = Vec::new();
        // Virtual servers reference the others: compiled once all of those are.
        let mut virtuals = Vec::new();
        let mut names = Vec::with_capacity(cfg.servers.len());
        for s in &cfg.servers {
            names.push(s.name.as_str());
        }
        let admission = crate::admission::Admission::compile(&cfg.admission, &names)
            .map_err(|(field, msg)| ConfigError::new(field, msg))?;
        for mut s in cfg.servers {
            if s.kind.as_deref() == Some("virtual") {
                if !s.prompts.is_empty()
                    || !s.resources.is_empty()
                    || !s.resource_templates.is_empty()
                    || s.upstream.is_some()
                {
                    let field = if s.upstream.is_some() { "upstream" } else { "prompts" };
                    let msg = "a virtual server has tools of other servers only (its calls go where those tools live)";
                    return Err(ConfigError::new(field, msg).in_server(&s.name));
                }
                virtuals.push((
                    servers.len(),
                    std::mem::take(&mut s.tool_refs),
                    s.tool_set.take(),
                    s.tools_cache_ms,
                    s.timeout,
                    s.gateway_cluster.take(),
                ));
            } else if s.tool_set.is_some() || s.tools_cache_ms.is_some() || s.gateway_cluster.is_some() {
                let field = match () {
                    _ if s.tool_set.is_some() => "toolSet",
                    _ if s.tools_cache_ms.is_some() => "toolsCacheMs",
                    _ => "gatewayCluster",
                };
                return Err(ConfigError::new(field, "belongs to a virtual server (type: virtual)").in_server(&s.name));
            }
            let auth =
                crate::admission::ServerAuth::compile(s.auth.take(), &admission).map_err(|e| of_server(e, &s.name))?;
            let policy = match s.policy.take() {
                Some(p) => Some(std::sync::Arc::new(
                    crate::admission::policy::Policy::compile(p).map_err(|e| of_server(e, &s.name))?,
                )),
                None => None,
            };
            crate::credential::validate_schemes(&s.security_schemes).map_err(|e| of_server(e, &s.name))?;
            let proxy = crate::proxy::Backend::compile(&s).map_err(|e| of_server(e, &s.name))?;
            let limits = crate::limits::ServerLimits::compile(&s, cfg.sessions.redis.is_some())?;
            for n in &s.import_notices {
                notices.push(format!("server '{}': {n}", s.name));
            }
            let mut tools = Vec::with_capacity(s.tools.len());
            let mut tool_index = HashMap::new();
            let config = safe_config(&s.config);
            if !s.schema_defs.is_empty() {
                let defs = crate::schema::SchemaDefs::compile(std::mem::take(&mut s.schema_defs))
                    .map_err(|e| ConfigError::new("schemaDefs", e).in_server(&s.name))?;
                s.compiled_defs = Some(std::sync::Arc::new(defs));
            }
            let mut notifications = Vec::with_capacity(s.tools.len());
            // Each tool's config is dropped once compiled, so that a large API is not held twice at once.
            for t in std::mem::take(&mut s.tools) {
                let tool = Tool::compile(&s, &t, &mut templates, &config)
                    .map_err(|e| of_server(e, &s.name).in_tool(&t.name))?;
                notifications.push(
                    crate::notify::Notifications::compile(
                        &s.name,
                        &t,
                        tool.dispatch().is_some(),
                        &mut templates,
                        &config,
                    )
                    .map_err(|e| of_server(e, &s.name).in_tool(&t.name))?,
                );
                tool_index.insert(tool.name.clone(), tools.len());
                tools.push(tool);
            }
            crate::icon::validate(&s.icons).map_err(|e| of_server(e, &s.name))?;
            let mut prompts = Vec::with_capacity(s.prompts.len());
            let mut prompt_index = HashMap::new();
            for p in &s.prompts {
                let prompt = Prompt::compile(p, &s.name, &mut templates, &config)
                    .map_err(|(f, m)| ConfigError::new(f, m).in_server(&s.name).in_entry("prompt", &p.name))?;
                prompt_index.insert(prompt.name.clone(), prompts.len());
                prompts.push(prompt);
            }
            let mut resources = Vec::with_capacity(s.resources.len());
            let mut resource_index = HashMap::new();
            for r in &s.resources {
                let label = r.uri.clone().unwrap_or_default();
                let resource = Resource::compile(r, false, &s, &mut templates, &config)
                    .map_err(|(f, m)| ConfigError::new(f, m).in_server(&s.name).in_entry("resource", &label))?;
                resource_index.insert(resource.uri.clone(), resources.len());
                resources.push(resource);
            }
            let mut resource_templates = Vec::with_capacity(s.resource_templates.len());
            for r in &s.resource_templates {
                let label = r.uri_template.clone().unwrap_or_default();
                let resource = Resource::compile(r, true, &s, &mut templates, &config).map_err(|(f, m)| {
                    ConfigError::new(f, m).in_server(&s.name).in_entry("resource template", &label)
                })?;
                resource_templates.push(resource);
            }
            let version = s.version.unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string());
            let mut info = crate::json::object(vec![
                ("name", Value::String(s.name.clone())),
                ("version", Value::String(version.clone())),
            ]);
            for (key, v) in [("title", &s.title), ("description", &s.description)] {
                if let Some(v) = v {
                    info[key] = Value::String(v.clone());
                }
            }
            if !s.icons.is_empty() {
                info["icons"] = crate::icon::to_json(&s.icons);
            }
            let mut routed = 0;
            for t in &tools {
                routed += usize::from(t.dispatch() == Some(crate::upstream::Dispatch::Route));
            }
            if routed > 0 {
                notices.push(format!(
                    "server '{}': {routed} tool(s) have no upstream.cluster and are sent through the request's own \
                     route (upstream.dispatch: route): their paths must match an Envoy route to their upstream",
                    s.name
                ));
            }
            if proxy.is_none() && s.kind.is_none() {
                for name in s.allow_tools.as_deref().unwrap_or_default() {
                    if !tool_index.contains_key(name.as_str()) {
                        notices.push(format!(
                            "server '{}': allowTools names '{name}', which is not one of its tools",
                            s.name
                        ));
                    }
                }
            }
            let mut credential_sources = Vec::new();
            for t in &tools {
                add_sources(&mut credential_sources, t);
            }
            let guard = match &s.guardrails {
                None => None,
                Some(g) => {
                    let known = |n: &str| tool_index.contains_key(n);
                    // A proxied server's tools are known at run time, a virtual server's once it is compiled.
                    let at_load = proxy.is_none() && s.kind.as_deref() != Some("virtual");
                    let is_tool: Option<&dyn Fn(&str) -> bool> = if at_load { Some(&known) } else { None };
                    let compiled = crate::guard::Guard::compile(g, is_tool).map_err(|e| {
                        let err = ConfigError::new(e.field, e.message).in_server(&s.name);
                        match &e.tool {
                            Some(t) => err.in_tool(t),
                            None => err,
                        }
                    })?;
                    Some(std::sync::Arc::new(compiled))
                }
            };
            let mut server = Server {
                auth,
                policy,
                guard,
                credential_sources,
                allow_tools: s.allow_tools,
                name: s.name,
                version,
                title: s.title,
                instructions: s.instructions,
                info,
                capabilities: Value::Null,
                tools,
                tool_index,
                prompts,
                prompt_index,
                resources,
                resource_index,
                resource_templates,
                config,
                notifications,
                proxy,
                composed: None,
                limits,
            };
            server.capabilities = crate::mcp::capabilities(&server);
            servers.push(server);
        }
        let mut names = Vec::with_capacity(virtuals.len());
        for (i, ..) in &virtuals {
            names.push(servers[*i].name.clone());
        }
        // Some virtual server reaches an SSE server through this Envoy's own bridge ([`crate::loopback`]).
        let mut loops = false;
        for (i, refs, set, cache, timeout, gateway_cluster) in virtuals {
            let set = match set.as_ref().map(crate::composed::ToolSetConfig::read) {
                None => None,
                Some(Ok(set)) => Some(set),
                Some(Err((field, msg))) => return Err(ConfigError::new(field, msg).in_server(&servers[i].name)),
            };
            let v = crate::composed::Virtual::compile(
                &servers[i].name,
                &refs,
                set.as_ref(),
                cache,
                timeout,
                gateway_cluster,
                cfg.gateway_cluster.as_deref(),
                &servers,
                &names,
            )?;
            loops |= v.loops_back;
            let mut sources = Vec::new();
            for r in &v.refs {
                if let Some(t) = servers[r.owner].tool(&r.tool) {
                    add_sources(&mut sources, t);
                }
            }
            // A proxied backend may log during a call, and its log notifications are relayed (so may a REST
            // tool with `notifications`): clients may set the level they hear.
            let logs = v
                .refs
                .iter()
                .any(|r| servers[r.owner].proxy.is_some() || servers[r.owner].capabilities.get("logging").is_some());
            // Its calls count against their tools' own servers' limits too; its guardrails name its tools.
            let mut limits = std::mem::take(&mut servers[i].limits);
            for r in &v.refs {
                let owner = &servers[r.owner];
                limits.through(&r.name, &owner.name, &r.tool, &owner.limits);
            }
            if let Some(g) = &servers[i].guard {
                if let Some(t) = g.own_tools().find(|t| v.find(t).is_none()) {
                    let e = ConfigError::new(format!("guardrails.tools.{t}"), "names no tool of this server");
                    return Err(e.in_server(&servers[i].name).in_tool(t));
                }
            }
            let server = &mut servers[i];
            server.limits = limits;
            server.credential_sources = sources;
            server.capabilities =
                crate::json::object(vec![("tools", crate::json::object(vec![("listChanged", Value::Bool(false))]))]);
            if logs {
                server.capabilities["logging"] = Value::Object(Map::new());
            }
            server.composed = Some(Box::new(v));
        }
        for origin in &cfg.allowed_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(ConfigError::new(
                    "allowedOrigins",
                    format!("'{origin}' must be \"*\" or start with http:// or https://"),
                ));
            }
        }
        let sessions = SessionStore::from_config(&cfg.sessions).map_err(|(field, msg)| ConfigError::new(field, msg))?;
        if cfg.max_response_bytes > ENVOY_ANSWER_LIMIT {
            notices.push(format!(
                "maxResponseBytes ({}) is above Envoy's default limit for the answers of plugin HTTP calls ({} \
                 bytes): larger answers are cut off by Envoy unless its runtime key {} is raised as well",
                cfg.max_response_bytes, ENVOY_ANSWER_LIMIT, ENVOY_ANSWER_LIMIT_KEY
            ));
        }
        let asks = servers.iter().any(|s| {
            s.tools.iter().any(|t| t.inputs.is_some())
                || s.prompts.iter().any(|p| p.inputs.is_some())
                || s.resources.iter().chain(&s.resource_templates).any(|r| r.inputs.is_some())
        });
        let mut own_keys = Vec::with_capacity(cfg.input_signing_keys.len());
        for (i, text) in cfg.input_signing_keys.iter().enumerate() {
            let field = format!("inputSigningKeys[{i}]");
            match crate::session::signed::decode_key(text) {
                None => {
                    return Err(ConfigError::new(
                        field,
                        "is not base64 (generate a key with `openssl rand -base64 32`)",
                    ))
                }
                Some(k) if k.len() < crate::session::signed::MIN_KEY_BYTES => {
                    let need = crate::session::signed::MIN_KEY_BYTES;
                    return Err(ConfigError::new(
                        field,
                        format!("decodes to {} bytes; at least {need} are needed", k.len()),
                    ));
                }
                Some(k) => own_keys.push(k),
            }
        }
        // The state keys: inputSigningKeys, else the signed sessions' keys (both shared by replicas), else
        // this Envoy's own key from shared data.
        // The signed sessions' keys, decoded (validated by the session store above).
        let session_secrets = || -> Vec<Vec<u8>> {
            cfg.sessions.signing_keys.iter().filter_map(|k| crate::session::signed::decode_key(k)).collect()
        };
        let input_keys = asks.then(|| {
            let secrets = if own_keys.is_empty() { session_secrets() } else { own_keys };
            (!secrets.is_empty()).then(|| crate::input::keys_from_secrets(&secrets))
        });
        // The loopback's keys: the signed sessions' keys (shared by replicas), else this Envoy's own secret.
        let loopback = loops.then(|| crate::loopback::Keys::from_secrets(&session_secrets()));
        let stats = match cfg.observability.stats {
            true => crate::metrics::Stats::new(
                servers.iter().flat_map(|s| s.tools.iter().map(move |t| (s.name.as_str(), t.name.as_str()))),
            ),
            false => crate::metrics::Stats::default(),
        };
        let config_header = match cfg.config_header_source {
            Some(doc) => {
                notices.push(crate::transport::CONFIG_HEADER_TRUSTED.into());
                crate::config_header::ConfigHeader::Trusted(doc)
            }
            None => crate::config_header::ConfigHeader::Refused,
        };
        let mut allowed_origins = Vec::with_capacity(cfg.allowed_origins.len());
        for o in &cfg.allowed_origins {
            allowed_origins.push(o.trim_end_matches('/').to_ascii_lowercase());
        }
        Ok(Gateway {
            observability: cfg.observability,
            stats,
            input_keys,
            loopback,
            prefix: cfg.prefix,
            allowed_origins,
            limits_redis: match (&cfg.sessions.redis, sessions.redis()) {
                (Some(r), None) => Some(crate::session::redis::RedisStore::new(r, 0)),
                _ => None,
            },
            sessions,
            max_request_bytes: cfg.max_request_bytes,
            page_size: cfg.tools_page_size,
            max_response_bytes: cfg.max_response_bytes,
            max_calls_per_request: cfg.max_calls_per_request,
            max_calls_in_flight: cfg.max_calls_in_flight,
            request_body_timeout_ms: cfg.request_body_timeout_ms,
            servers,
            templates,
            notices,
            admission,
            config_header,
        })
    }

    /// The outcome to report instead of reading an upstream answer of `size` bytes, if it is too large.
    pub fn oversized_answer(&self, size: usize) -> Option<UpstreamResult> {
        (size > self.max_response_bytes).then(|| {
            UpstreamResult::Failed(format!(
                "the upstream answer has {size} bytes, over the gateway's limit of {} bytes (maxResponseBytes in \
                 the plugin config, which the operator can raise)",
                self.max_response_bytes
            ))
        })
    }

    /// The outcome of an answer read as it streams (route dispatch) that passed the limit after `received`
    /// bytes, with no size announced: the rest is not read.
    pub fn oversized_stream(&self, received: usize) -> UpstreamResult {
        UpstreamResult::Failed(format!(
            "the upstream answer has more than {} bytes ({received} received before the gateway stopped \
             reading), over the gateway's limit (maxResponseBytes in the plugin config, which the operator can \
             raise)",
            self.max_response_bytes
        ))
    }

    /// The outcome of a call that Envoy ended without handing over an answer, `elapsed_ms` after it was sent
    /// with `timeout_ms`.
    ///
    /// Envoy answers a call that fails before the upstream answers itself (504 for a timeout, 503 for a
    /// refused connection), so an empty outcome means the answer had started and was cut off: Envoy's async
    /// client resets a call whose answer outgrows its buffer ([`ENVOY_ANSWER_LIMIT`], the same "reset" the
    /// plugin sees when the upstream breaks the connection mid-answer), and the router resets one still
    /// streaming at its timeout. The time taken tells the timeout apart; the other two look the same.
    pub fn cut_off_answer(&self, elapsed_ms: Option<u64>, timeout_ms: Option<u64>) -> UpstreamResult {
        if let (Some(elapsed), Some(timeout)) = (elapsed_ms, timeout_ms) {
            if elapsed.saturating_add(TIMER_SLACK_MS) >= timeout {
                return UpstreamResult::Failed(format!(
                    "the upstream had not finished its answer when the call's timeout of {timeout} ms ran \
                     out (a REST tool's upstream.timeoutMs, a proxied or virtual server's timeout), so Envoy cut \
                     it off"
                ));
            }
        }
        UpstreamResult::Failed(format!(
            "Envoy cut the upstream answer off before it was complete. Either it was larger than Envoy's buffer \
             for plugin HTTP calls ({}, {} bytes by default; the operator can raise it in Envoy's runtime, and \
             the gateway's own limit, maxResponseBytes: {} bytes, applies below it), or the upstream broke the \
             connection while answering",
            ENVOY_ANSWER_LIMIT_KEY, ENVOY_ANSWER_LIMIT, self.max_response_bytes
        ))
    }

    pub fn server(&self, name: &str) -> Option<&Server> {
        self.servers.iter().find(|s| s.name == name)
    }

    /// Whether a browser `Origin` may talk to the gateway: loopback origins, listed ones, or any with `*`.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let o = origin.trim_end_matches('/').to_ascii_lowercase();
        if self.allowed_origins.iter().any(|a| a == "*" || *a == o) {
            return true;
        }
        let Some(rest) = o.strip_prefix("http://").or_else(|| o.strip_prefix("https://")) else {
            return false;
        };
        let host = if rest.starts_with('[') {
            rest.split_inclusive(']').next().unwrap_or("")
        } else {
            rest.split(':').next().unwrap_or("")
        };
        let port_ok = rest[host.len()..].is_empty()
            || rest[host.len()..]
                .strip_prefix(':')
                .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        port_ok && matches!(host, "localhost" | "127.0.0.1" | "[::1]")
    }
}

/// Adds the credential sources a tool reads that `sources` does not hold yet (one copy for plain and
/// virtual servers).
fn add_sources(sources: &mut Vec<crate::credential::Source>, tool: &Tool) {
    for source in tool.credential_sources() {
        if !sources.contains(&source) {
            sources.push(source);
        }
    }
}

/// A server's `(field, message)` error located in it: one outlined conversion for every compile step.
#[inline(never)]
fn of_server((field, message): (String, String), server: &str) -> ConfigError {
    ConfigError::new(field, message).in_server(server)
}

/// Converts a server's `config` map for templates, marking strings safe (operator values are trusted).
pub fn safe_config(config: &Map<String, Value>) -> MjValue {
    fn convert(v: &Value) -> MjValue {
        match v {
            Value::String(s) => MjValue::from_safe_string(s.clone()),
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for i in items {
                    out.push(convert(i));
                }
                MjValue::from(out)
            }
            Value::Object(map) => {
                let mut out = Vec::with_capacity(map.len());
                for (k, v) in map {
                    out.push((k.as_str(), convert(v)));
                }
                crate::template::map_of(out)
            }
            other => MjValue::from(minijinja::value::Serde(other)),
        }
    }
    convert(&Value::Object(config.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_and_reports_tool_errors_with_location() {
        let g = Gateway::from_config_str(
            "servers:\n- name: a\n  tools:\n  - {name: t, description: d, responseTemplate: {body: hi}}\n",
        )
        .unwrap();
        assert!(g.server("a").unwrap().tool("t").is_some());
        let e = Gateway::from_config_str(
            "servers:\n- name: a\n  upstream: {dispatch: call}\n  tools:\n  - {name: t, description: d, requestTemplate: {url: /x}}\n",
        )
        .unwrap_err();
        assert_eq!((e.server.as_deref(), e.tool.as_deref(), e.field.as_str()), (Some("a"), Some("t"), "upstream"));
        // Without a cluster, the tool is sent through the request's route, and the operator is told.
        let g = Gateway::from_config_str(
            "servers:\n- name: a\n  tools:\n  - {name: t, description: d, requestTemplate: {url: /x}}\n",
        )
        .unwrap();
        assert!(g.notices.iter().any(|n| n.contains("upstream.dispatch: route")), "{:?}", g.notices);
        let e = Gateway::from_config_str(
            "servers:\n- name: a\n  tools:\n  - {name: t, description: d, responseTemplate: {body: '{{ x'}}\n",
        )
        .unwrap_err();
        assert_eq!(e.field, "responseTemplate.body");
    }

    #[test]
    fn oversized_answers_are_refused_unread() {
        let g = Gateway::from_config_str("maxResponseBytes: 10\nservers:\n- name: a\n").unwrap();
        assert!(g.oversized_answer(10).is_none());
        assert!(matches!(g.oversized_answer(11), Some(UpstreamResult::Failed(m)) if m.contains("maxResponseBytes")));
        assert_eq!(Gateway::from_config_str("servers:\n- name: a\n").unwrap().max_response_bytes, 8 * 1024 * 1024);
    }

    #[test]
    fn cut_off_answers_name_the_limit_or_the_timeout() {
        let g = Gateway::from_config_str("maxResponseBytes: 10\nservers:\n- name: a\n").unwrap();
        let UpstreamResult::Failed(m) = g.cut_off_answer(Some(120), Some(5000)) else { panic!() };
        assert!(m.contains("http.async_response_buffer_limit") && m.contains("33554432"), "{m}");
        assert!(m.contains("maxResponseBytes: 10 bytes") && m.contains("broke the connection"), "{m}");
        let UpstreamResult::Failed(m) = g.cut_off_answer(Some(4990), Some(5000)) else { panic!() };
        assert!(m.contains("timeout of 5000 ms") && !m.contains("buffer"), "{m}");
        let UpstreamResult::Failed(m) = g.cut_off_answer(None, None) else { panic!() };
        assert!(m.contains("http.async_response_buffer_limit"), "{m}");
        assert!(g.notices.is_empty());
        let big = Gateway::from_config_str("maxResponseBytes: 40000000\nservers:\n- name: a\n").unwrap();
        assert!(big.notices.iter().any(|n| n.contains("http.async_response_buffer_limit")), "{:?}", big.notices);
    }

    #[test]
    fn origins() {
        let g = Gateway::from_config_str("allowedOrigins: [https://app.example.com]\nservers:\n- name: a\n").unwrap();
        for ok in ["http://localhost:6274", "http://127.0.0.1", "http://[::1]:80", "https://APP.example.com"] {
            assert!(g.origin_allowed(ok), "{ok}");
        }
        for bad in [
            "http://evil.example.com",
            "http://localhost.evil.com",
            "null",
            "http://127.0.0.1:x",
            "http://127.0.0.1.nip.io",
        ] {
            assert!(!g.origin_allowed(bad), "{bad}");
        }
        assert!(Gateway::from_config_str("allowedOrigins: [example.com]\nservers:\n- name: a\n").is_err());
    }
}
