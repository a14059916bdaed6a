//! The plugin configuration as users write it (YAML or JSON), before compilation.
//!
//! Field names follow Higress's `mcp-server` plugin so its users feel at home. Parsing happens in layers
//! (plugin, then each server, then each tool) so that every error names the server, tool and field at fault.

use crate::fields::{FieldError, Fields};
use serde::Serialize;
use serde_json::{Map, Value};
use std::fmt;

/// A configuration error, located by server, tool and field so operators can find it in a large config.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub server: Option<String>,
    pub tool: Option<String>,
    /// A prompt, resource or resource template, as `prompt 'name'`.
    pub entry: Option<String>,
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::of(field.into(), message.into())
    }

    /// The part of [`ConfigError::new`] that does not depend on its arguments' types (one copy, not one at
    /// each of the 90-odd places that make an error).
    #[inline(never)]
    fn of(field: String, message: String) -> Self {
        ConfigError { server: None, tool: None, entry: None, field, message }
    }

    /// Attaches the server the error belongs to.
    #[inline(never)]
    pub fn in_server(mut self, server: &str) -> Self {
        self.server.get_or_insert_with(|| server.to_string());
        self
    }

    /// Attaches the prompt or resource the error belongs to: `kind` is `prompt`, `resource` or
    /// `resource template`.
    #[inline(never)]
    pub fn in_entry(mut self, kind: &str, name: &str) -> Self {
        self.entry.get_or_insert_with(|| format!("{kind} '{name}'"));
        self
    }

    /// Attaches the tool the error belongs to.
    #[inline(never)]
    pub fn in_tool(mut self, tool: &str) -> Self {
        self.tool.get_or_insert_with(|| tool.to_string());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid plugin config:")?;
        if let Some(s) = &self.server {
            write!(f, " server '{s}'")?;
        }
        if let Some(t) = &self.tool {
            write!(f, " tool '{t}'")?;
        }
        if let Some(e) = &self.entry {
            write!(f, " {e}")?;
        }
        write!(f, " field '{}': {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Top-level plugin settings; `servers` stay raw until each is parsed with its own error context.
#[derive(Debug, Default)]
struct RawPlugin {
    prefix: String,
    allowed_origins: Vec<String>,
    /// The pre-`sessions` spelling of `sessions.ttlSeconds`, still accepted.
    session_ttl_seconds: Option<u64>,
    sessions: Option<Value>,
    max_request_bytes: usize,
    tools_page_size: usize,
    max_response_bytes: usize,
    max_calls_per_request: usize,
    max_calls_in_flight: usize,
    request_body_timeout_ms: u64,
    input_signing_keys: Vec<String>,
    /// Stats and audit lines (see `crate::metrics`).
    observability: Option<Value>,
    servers: Vec<Value>,
    /// Higress's single-server shape: `server:` plus top-level `tools:`.
    server: Option<Value>,
    tools: Option<Vec<Value>>,
    /// Higress's single-server shape: `allowTools:` beside `server:`.
    allow_tools: Option<Value>,
    /// Whether a request's `x-higress-mcpserver-config` may replace a server's `config`, as Higress lets it
    /// ([`crate::config_header`]); off, the header is refused on requests.
    trust_config_header: bool,
    /// Higress's composed server beside `servers:`: a virtual server named `toolSet.name`.
    tool_set: Option<Value>,
    /// The virtual servers' default `gatewayCluster`.
    gateway_cluster: Option<String>,
    /// Identities ([`crate::admission`]): Higress-style consumers and where their API keys are read.
    consumers: Option<Value>,
    key_auth: Option<Value>,
    /// Claims verified by Envoy's `jwt_authn`, read from the request's dynamic metadata.
    jwt_auth: Option<Value>,
    /// A Higress auth plugin's consumer header (`x-mse-consumer`), trusted only when named here.
    consumer_header: Option<String>,
}

fn default_prefix() -> String {
    "/mcp-servers".into()
}
fn default_ttl() -> u64 {
    1800
}
fn default_calls_per_request() -> usize {
    64
}
fn default_calls_in_flight() -> usize {
    512
}
fn default_body_timeout() -> u64 {
    10_000
}
fn default_max_sessions() -> u64 {
    100_000
}
fn default_new_per_second() -> u32 {
    1_000
}
fn default_redis_timeout() -> u64 {
    500
}
fn default_key_prefix() -> String {
    "mcp-gateway:".into()
}

/// `sessions:`: which store keeps sessions, and their lifetime.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionsConfig {
    pub store: StoreKind,
    /// Idle lifetime (local, redis), or lifetime from `initialize` (signed: an id cannot be extended).
    pub ttl_seconds: u64,
    /// Base64 keys of at least 32 bytes; the first signs, every one verifies.
    pub signing_keys: Vec<String>,
    pub redis: Option<RedisConfig>,
    /// Live sessions per server where they cost the gateway memory (`local`).
    pub max_sessions: u64,
    /// New sessions per second per server on one Envoy process, every store.
    pub max_new_per_second: u32,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            store: StoreKind::Local,
            ttl_seconds: default_ttl(),
            signing_keys: Vec::new(),
            redis: None,
            max_sessions: default_max_sessions(),
            max_new_per_second: default_new_per_second(),
        }
    }
}

/// The session stores (see `session`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StoreKind {
    /// This Envoy's shared data: every worker of one process.
    #[default]
    Local,
    /// The id carries the session, signed: every replica with the key.
    Signed,
    /// Redis through Higress's host: every replica on that Redis.
    Redis,
}

/// `sessions.redis`: the Redis that Higress's host connects to (`proxy_redis_init`).
#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    /// The Envoy cluster of the Redis service, e.g. `outbound|6379||redis.dns`.
    pub cluster: String,
    pub username: String,
    pub password: String,
    pub database: u32,
    /// How long one Redis command may take before the request fails.
    pub timeout_ms: u64,
    pub key_prefix: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            cluster: String::new(),
            username: String::new(),
            password: String::new(),
            database: 0,
            timeout_ms: default_redis_timeout(),
            key_prefix: default_key_prefix(),
        }
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the password.
        f.debug_struct("RedisConfig")
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("database", &self.database)
            .field("timeout_ms", &self.timeout_ms)
            .field("key_prefix", &self.key_prefix)
            .finish_non_exhaustive()
    }
}

impl SessionsConfig {
    /// Merges the old top-level `sessionTtlSeconds` and checks that each setting belongs to the chosen store,
    /// so that a key or a Redis block given to the wrong store is an error rather than silently unused.
    ///
    /// `limits_in_redis`: some rate limit or quota counts in Redis, which then needs the `redis` block
    /// whatever the store.
    fn resolve(
        sessions: Option<SessionsConfig>,
        old_ttl: Option<u64>,
        limits_in_redis: bool,
    ) -> Result<SessionsConfig, ConfigError> {
        let explicit = sessions.is_some();
        let mut s = sessions.unwrap_or_default();
        if let Some(ttl) = old_ttl {
            if explicit && s.ttl_seconds != default_ttl() && s.ttl_seconds != ttl {
                return Err(ConfigError::new(
                    "sessionTtlSeconds",
                    "conflicts with sessions.ttlSeconds; keep only sessions.ttlSeconds",
                ));
            }
            s.ttl_seconds = ttl;
        }
        let field = if explicit { "sessions.ttlSeconds" } else { "sessionTtlSeconds" };
        if s.ttl_seconds == 0 {
            return Err(ConfigError::new(field, "must be at least 1"));
        }
        if s.ttl_seconds > 366 * 24 * 3600 {
            return Err(ConfigError::new(field, "must be at most a year (31622400)"));
        }
        if s.max_sessions == 0 {
            return Err(ConfigError::new("sessions.maxSessions", "must be at least 1"));
        }
        if s.max_new_per_second == 0 {
            return Err(ConfigError::new("sessions.maxNewPerSecond", "must be at least 1"));
        }
        if s.store != StoreKind::Signed && !s.signing_keys.is_empty() {
            return Err(ConfigError::new("sessions.signingKeys", "only store: signed uses signing keys"));
        }
        match (&s.store, &s.redis) {
            (StoreKind::Redis, None) => {
                return Err(ConfigError::new("sessions.redis", "store: redis needs a redis block with a cluster"))
            }
            (_, Some(r)) if s.store == StoreKind::Redis || limits_in_redis => {
                if r.cluster.is_empty() || r.cluster.bytes().any(|b| b.is_ascii_control() || b == b'?') {
                    return Err(ConfigError::new(
                        "sessions.redis.cluster",
                        "must be the Envoy cluster name of the Redis service (select the database with `database`)",
                    ));
                }
                if r.timeout_ms == 0 || r.timeout_ms > u32::MAX as u64 {
                    return Err(ConfigError::new("sessions.redis.timeoutMs", "must be between 1 and 4294967295"));
                }
            }
            (_, Some(_)) => {
                return Err(ConfigError::new(
                    "sessions.redis",
                    "only store: redis and limits with scope: cluster (or quotas) use a redis block",
                ));
            }
            _ => {}
        }
        Ok(s)
    }
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_page_size() -> usize {
    100
}
fn default_max_response() -> usize {
    8 * 1024 * 1024
}

/// The whole plugin configuration.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    /// Path prefix under which servers are served; everything else passes through.
    pub prefix: String,
    /// Origins allowed besides loopback ones; `*` allows any.
    pub allowed_origins: Vec<String>,
    /// Where sessions live, and for how long.
    pub sessions: SessionsConfig,
    /// Larger request bodies are refused with 413 before they are parsed.
    pub max_request_bytes: usize,
    /// Tools per `tools/list` page.
    pub tools_page_size: usize,
    /// Larger upstream answers become an error result without being read into the VM.
    pub max_response_bytes: usize,
    /// Tool calls one request (a batch) may start; the rest are refused.
    pub max_calls_per_request: usize,
    /// Upstream calls one worker may have outstanding; more are refused rather than letting Envoy's
    /// circuit breakers fail them (and other clients' calls) for everyone.
    pub max_calls_in_flight: usize,
    /// How long a client may take to send a request body before it gets 408.
    pub request_body_timeout_ms: u64,
    /// Keys that sign input requests' `requestState` ([`crate::input`]), shared by replicas; before
    /// `sessions.signingKeys`.
    pub input_signing_keys: Vec<String>,
    /// Who calls: consumers, API keys, `jwt_authn` claims, a trusted consumer header.
    pub admission: crate::admission::AdmissionConfig,
    /// Stats and audit lines, compiled.
    pub observability: crate::metrics::Observability,
    pub servers: Vec<ServerConfig>,
    /// The `gatewayCluster` of every virtual server (and top-level `toolSet`) that names none of its own:
    /// one Envoy cluster back to this listener serves them all.
    pub gateway_cluster: Option<String>,
    /// `trustConfigHeader: true`: the document as given, to compile a server again with a request's own
    /// `config` ([`crate::config_header`]); `None` otherwise.
    pub config_header_source: Option<Value>,
}

/// One MCP server, served at `{prefix}/{name}`.
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    pub name: String,
    pub version: Option<String>,
    pub title: Option<String>,
    pub instructions: Option<String>,
    /// What the server does, in its `serverInfo` (`Implementation.description`).
    pub description: Option<String>,
    pub icons: Vec<crate::icon::Icon>,
    /// Free-form values visible to templates as `config` (API keys, base paths).
    pub config: Map<String, Value>,
    pub upstream: Option<UpstreamConfig>,
    /// Upstream credentials tools refer to by `requestTemplate.security.id` (Higress's `server.securitySchemes`).
    pub security_schemes: Vec<SecurityScheme>,
    /// How clients present their credential, for tools without their own `security` (Higress's).
    pub default_downstream_security: Option<SecurityRef>,
    /// The credential the gateway adds upstream, for tools without their own `requestTemplate.security`.
    pub default_upstream_security: Option<SecurityRef>,
    /// Copy the client's `Authorization` header to the upstream request when no downstream security reads
    /// it (Higress's flag). Off: no client header ever reaches an upstream.
    pub passthrough_auth_header: bool,
    /// The tools clients may see and call (Higress's `allowTools`); absent: all of them. A request's
    /// `x-envoy-allow-mcp-tools` header narrows it further.
    pub allow_tools: Option<Vec<String>>,
    /// The language of this server's templates: `jinja` (ours) or `go` (Higress's). Unset: `go` in Higress's
    /// single-server shape (top-level `server:` and `tools:`), so Higress configs run unchanged; `jinja` else.
    pub template_dialect: Option<crate::template::Dialect>,
    /// How requests are built and answers read: `native` (ours) or `higress` (Higress's, so that its configs
    /// call their APIs exactly as before). Unset: `higress` in Higress's single-server shape, `native` else.
    pub semantics: Option<crate::higress::Semantics>,
    /// Schemas the tools' `inputSchema`, `outputSchema` and argument schemas share, by `$ref:
    /// "#/$defs/NAME"`: kept once for the server (what `mcp-gateway openapi` writes for the models an API
    /// repeats), shown inlined in each tool's listing.
    pub schema_defs: Map<String, Value>,
    /// `schema_defs` compiled, once per server (set when the gateway compiles the server).
    pub compiled_defs: Option<std::sync::Arc<crate::schema::SchemaDefs>>,
    /// `mcp-proxy`: the server is another MCP server, fronted (Higress's `server.type`; see `crate::proxy`).
    pub kind: Option<String>,
    /// A proxied server's transport: `http` (Streamable HTTP) or `sse`.
    pub transport: Option<String>,
    /// A proxied server's endpoint: a path on the route's cluster, or `http(s)://host[:port]/path`.
    pub mcp_server_url: Option<String>,
    /// A proxied server's request timeout in milliseconds (Higress's `timeout`).
    pub timeout: Option<u64>,
    /// A proxied server's tools renamed or re-described for its clients, keyed by the backend's name
    /// (ToolHive spells it `toolsOverride`; Higress has no such field for `mcp-proxy`).
    pub tool_overrides: Map<String, Value>,
    /// Guardrails on this server's tool input and output (see `crate::guard`).
    pub guardrails: Option<crate::guard::GuardrailsConfig>,
    /// Rate limits on every tool call of this server, read by [`crate::limits`].
    pub rate_limits: Option<Value>,
    /// Daily or monthly quotas on every tool call of this server, read by [`crate::limits`].
    pub quotas: Option<Value>,
    pub tools: Vec<ToolConfig>,
    pub prompts: Vec<crate::prompt::PromptConfig>,
    pub resources: Vec<crate::resource::ResourceConfig>,
    pub resource_templates: Vec<crate::resource::ResourceConfig>,
    /// What the operator should read once, at load, for the host to log: operations an `openapi` import
    /// skipped and why, fields of a Higress-shape config that Higress ignores and so does this gateway.
    pub import_notices: Vec<String>,
    /// A virtual server's (`type: virtual`) tools: references to other servers' tools (its `tools:` list).
    pub tool_refs: Vec<crate::composed::RefConfig>,
    /// Higress's `toolSet` (`{name, serverTools: [{serverName, tools}]}`) on a virtual server.
    pub tool_set: Option<Value>,
    /// How long a virtual server keeps its proxied servers' tool lists, in milliseconds (per worker).
    pub tools_cache_ms: Option<u64>,
    /// The Envoy cluster that reaches this Envoy's own listener, through which a virtual server calls the
    /// tools of `transport: sse` servers ([`crate::loopback`]).
    pub gateway_cluster: Option<String>,
    /// Who the server admits ([`crate::admission::ServerAuth`]); absent: everyone.
    pub auth: Option<Value>,
    /// Which tools, prompts and resources each caller may use ([`crate::admission::policy`]).
    pub policy: Option<Value>,
}

/// How the gateway authenticates to an upstream, in OpenAPI's terms; the credential is the operator's.
#[derive(Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecurityScheme {
    pub id: String,
    /// `http` (with `scheme` basic or bearer) or `apiKey` (with `in` and `name`).
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(rename = "in", skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `user:password` for basic, the token for bearer, the key for apiKey. Empty: sent without.
    pub default_credential: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl fmt::Debug for SecurityScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The default credential is a secret: never printed.
        f.debug_struct("SecurityScheme")
            .field("id", &self.id)
            .field("type", &self.kind)
            .field("scheme", &self.scheme)
            .field("in", &self.location)
            .field("name", &self.name)
            .field("defaultCredential", &(!self.default_credential.is_empty()).then_some("<redacted>"))
            .finish_non_exhaustive()
    }
}

/// A choice of security scheme (Higress's `SecurityRequirement`): upstream, optionally with its own
/// credential; downstream (a tool's `security`), optionally passing the client's credential upstream.
#[derive(Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecurityRef {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// Downstream only: the credential the client presented becomes the upstream credential.
    #[serde(skip_serializing_if = "is_false")]
    pub passthrough: bool,
}

impl fmt::Debug for SecurityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The credential is a secret: never printed.
        let credential = self.credential.as_ref().map(|_| "<redacted>");
        f.debug_struct("SecurityRef")
            .field("id", &self.id)
            .field("credential", &credential)
            .field("passthrough", &self.passthrough)
            .finish()
    }
}

/// Where a tool's HTTP request goes: always an Envoy cluster from config, never from arguments.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamConfig {
    /// `call` (Envoy's async HTTP client to `cluster`; the default when a cluster is set) or `route` (the
    /// client's request rewritten for Envoy's router; the default without a cluster, as in Higress).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dispatch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// One REST-backed tool.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    pub description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<ArgConfig>,
    /// How the client presents its credential for this tool (Higress's downstream security): read from
    /// where the scheme says, and with `passthrough` sent upstream in place of the configured one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security: Option<SecurityRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub icons: Vec<crate::icon::Icon>,
    /// Client capabilities the tool needs (`{sampling: {}}`): a stateless client that does not declare them
    /// gets -32021 instead of a call that cannot work.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required_client_capabilities: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_template: Option<RequestTemplate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_template: Option<ResponseTemplate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_response_template: Option<String>,
    /// Log messages and progress reports sent before the result ([`crate::notify`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<crate::notify::NotificationConfig>,
    /// What to ask the client before the call runs (MCP 2026-07-28 input requests, [`crate::input`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_requests: Option<Value>,
    /// Rate limits on this tool's calls, besides the server's ([`crate::limits`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<Value>,
    /// Daily or monthly quotas on this tool's calls, besides the server's ([`crate::limits`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Value>,
}

/// One tool argument, turned into a JSON Schema property.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArgConfig {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(rename = "enum", skip_serializing_if = "Option::is_none")]
    pub enum_values: Option<Vec<Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub properties: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<Position>,
    /// The parameter's name in the upstream request, when it differs from the argument's (name clashes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub param_name: Option<String>,
    /// A full JSON Schema for the argument, in place of `type`/`enum`/`items`/`properties` (OpenAPI imports).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// How the value is written where it goes (OpenAPI 3 parameter styles); the position's default when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub style: Option<Style>,
    /// Arrays and objects as repeated or separate entries (`true`) or one delimited value; OpenAPI's
    /// default: `true` for `form`, `false` otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explode: Option<bool>,
    /// A file in the body: its value is `{content: base64, filename?, contentType?}` (or a list of them),
    /// sent as a multipart part, or as the whole body when it is the tool's only body argument.
    #[serde(skip_serializing_if = "is_false")]
    pub file: bool,
    /// A query value keeps the reserved characters `:/?[]@!$'()*,;` as they are (OpenAPI's `allowReserved`).
    #[serde(skip_serializing_if = "is_false")]
    pub allow_reserved: bool,
    /// A form or multipart field's media type (OpenAPI's `encoding.contentType`): a JSON type sends the value
    /// as JSON text; in a multipart body it is also the part's Content-Type (a file's own `contentType`
    /// wins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Where an argument goes in the upstream request when it is placed automatically. Read in any case
/// (`Query`, `HEADER`), as Higress lower-cases it before use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Position {
    Query,
    Path,
    Header,
    Cookie,
    Body,
}

impl Position {
    /// Every position, as config spells them by [`Position::name`].
    pub const ALL: [Position; 5] =
        [Position::Query, Position::Path, Position::Header, Position::Cookie, Position::Body];

    pub fn name(self) -> &'static str {
        match self {
            Position::Query => "query",
            Position::Path => "path",
            Position::Header => "header",
            Position::Cookie => "cookie",
            Position::Body => "body",
        }
    }
}

/// OpenAPI 3's parameter styles: how arrays and objects are written into a URL, header, cookie or form body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Style {
    Form,
    Simple,
    Label,
    Matrix,
    SpaceDelimited,
    PipeDelimited,
    DeepObject,
}

impl Style {
    /// Every style, OpenAPI's spelling by [`Style::name`].
    pub const ALL: [Style; 7] = [
        Style::Form,
        Style::Simple,
        Style::Label,
        Style::Matrix,
        Style::SpaceDelimited,
        Style::PipeDelimited,
        Style::DeepObject,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Style::Form => "form",
            Style::Simple => "simple",
            Style::Label => "label",
            Style::Matrix => "matrix",
            Style::SpaceDelimited => "spaceDelimited",
            Style::PipeDelimited => "pipeDelimited",
            Style::DeepObject => "deepObject",
        }
    }
}

/// How a `tools/call` becomes an upstream HTTP request.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestTemplate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderTemplate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "is_false")]
    pub args_to_json_body: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub args_to_url_param: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub args_to_form_body: bool,
    /// Body arguments as the parts of a multipart/form-data body (files among them).
    #[serde(skip_serializing_if = "is_false")]
    pub args_to_multipart_body: bool,
    /// The server security scheme whose credential the gateway adds to the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security: Option<SecurityRef>,
}

/// A request header whose value is a template.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderTemplate {
    pub key: String,
    pub value: String,
}

/// How the upstream answer becomes the tool result text.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseTemplate {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepend_body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub append_body: Option<String>,
    /// Content blocks (text, image, audio, resource links, embedded resources) instead of one text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Vec<crate::content::ContentConfig>>,
}

// Reading: each type's fields one by one ([`crate::fields`]); `FIELDS` is the list Higress-shape configs
// are filtered by (`crate::lenient`), and tests check that every field read is in it.

/// A big list moved out of its object rather than copied, or an error if it is not a list.
fn take_list(obj: &mut Map<String, Value>, key: &str) -> Result<Option<Vec<Value>>, ConfigError> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(_) => Err(ConfigError::new(key, "must be a list")),
    }
}

impl RawPlugin {
    pub(crate) const FIELDS: &'static [&'static str] = &[
        "prefix",
        "allowedOrigins",
        "sessionTtlSeconds",
        "sessions",
        "maxRequestBytes",
        "toolsPageSize",
        "maxResponseBytes",
        "maxCallsPerRequest",
        "maxCallsInFlight",
        "requestBodyTimeoutMs",
        "inputSigningKeys",
        "servers",
        "server",
        "tools",
        "allowTools",
        "trustConfigHeader",
        "observability",
        "toolSet",
        "gatewayCluster",
        "consumers",
        "keyAuth",
        "jwtAuth",
        "consumerHeader",
    ];

    /// Reads the top level; `servers`, `server` and `tools` (most of a large config) are moved, not copied.
    // Outlined, like `parse_server`: inlined into `from_value` they took 1,012 bytes more.
    #[inline(never)]
    fn read(mut doc: Value) -> Result<RawPlugin, ConfigError> {
        let Some(top) = doc.as_object_mut() else {
            return Err(ConfigError::new("(root)", "the plugin configuration must be an object"));
        };
        let servers = take_list(top, "servers")?.unwrap_or_default();
        let tools = take_list(top, "tools")?;
        let server = top.remove("server").filter(|v| !v.is_null());
        let located = |(field, message): FieldError| ConfigError::new(field, message);
        let mut f = Fields::read(&doc, "", Self::FIELDS);
        for moved in ["servers", "tools", "server"] {
            f.value(moved);
        }
        let mut raw = RawPlugin::default();
        raw.prefix = f.string("prefix").unwrap_or_else(default_prefix);
        raw.allowed_origins = f.strings("allowedOrigins").unwrap_or_default();
        raw.session_ttl_seconds = f.unsigned("sessionTtlSeconds");
        raw.sessions = f.value("sessions").cloned();
        raw.max_request_bytes = f.size("maxRequestBytes").unwrap_or_else(default_max_body);
        raw.tools_page_size = f.size("toolsPageSize").unwrap_or_else(default_page_size);
        raw.max_response_bytes = f.size("maxResponseBytes").unwrap_or_else(default_max_response);
        raw.max_calls_per_request = f.size("maxCallsPerRequest").unwrap_or_else(default_calls_per_request);
        raw.max_calls_in_flight = f.size("maxCallsInFlight").unwrap_or_else(default_calls_in_flight);
        raw.request_body_timeout_ms = f.unsigned("requestBodyTimeoutMs").unwrap_or_else(default_body_timeout);
        raw.input_signing_keys = f.strings("inputSigningKeys").unwrap_or_default();
        raw.allow_tools = f.value("allowTools").cloned();
        raw.trust_config_header = f.boolean("trustConfigHeader");
        raw.observability = f.value("observability").cloned();
        raw.tool_set = f.value("toolSet").cloned();
        raw.gateway_cluster = f.string("gatewayCluster");
        raw.consumers = f.value("consumers").cloned();
        raw.key_auth = f.value("keyAuth").cloned();
        raw.jwt_auth = f.value("jwtAuth").cloned();
        raw.consumer_header = f.string("consumerHeader");
        f.finish().map_err(located)?;
        Ok(RawPlugin { servers, server, tools, ..raw })
    }
}

impl SessionsConfig {
    const FIELDS: &'static [&'static str] =
        &["store", "ttlSeconds", "signingKeys", "redis", "maxSessions", "maxNewPerSecond"];

    fn read(v: &Value, at: &str) -> Result<SessionsConfig, FieldError> {
        let mut f = Fields::read(v, at, Self::FIELDS);
        let stores = [("local", StoreKind::Local), ("signed", StoreKind::Signed), ("redis", StoreKind::Redis)];
        let mut s = SessionsConfig::default();
        s.store = f.choice("store", &stores).unwrap_or_default();
        s.ttl_seconds = f.unsigned("ttlSeconds").unwrap_or_else(default_ttl);
        s.signing_keys = f.strings("signingKeys").unwrap_or_default();
        s.redis = f.nested("redis", RedisConfig::read);
        s.max_sessions = f.unsigned("maxSessions").unwrap_or_else(default_max_sessions);
        s.max_new_per_second =
            f.bounded("maxNewPerSecond", u32::MAX.into()).map_or_else(default_new_per_second, |n| n as u32);
        f.finish()?;
        Ok(s)
    }
}

impl RedisConfig {
    const FIELDS: &'static [&'static str] = &["cluster", "username", "password", "database", "timeoutMs", "keyPrefix"];

    fn read(v: &Value, at: &str) -> Result<RedisConfig, FieldError> {
        let mut f = Fields::read(v, at, Self::FIELDS);
        let mut r = RedisConfig::default();
        r.cluster = f.required_string("cluster");
        r.username = f.string("username").unwrap_or_default();
        r.password = f.string("password").unwrap_or_default();
        r.database = f.bounded("database", u32::MAX.into()).unwrap_or(0) as u32;
        r.timeout_ms = f.unsigned("timeoutMs").unwrap_or_else(default_redis_timeout);
        r.key_prefix = f.string("keyPrefix").unwrap_or_else(default_key_prefix);
        f.finish()?;
        Ok(r)
    }
}

impl ServerConfig {
    /// The fields read here; `tools`, `openapi`, `prompts`, `resources` and `resourceTemplates` are parsed
    /// apart, each with its own error context (`crate::lenient::SERVER_EXTRA`).
    pub const FIELDS: &'static [&'static str] = &[
        "name",
        "version",
        "title",
        "instructions",
        "description",
        "icons",
        "config",
        "upstream",
        "securitySchemes",
        "defaultDownstreamSecurity",
        "defaultUpstreamSecurity",
        "passthroughAuthHeader",
        "allowTools",
        "templateDialect",
        "semantics",
        "schemaDefs",
        "type",
        "transport",
        "mcpServerURL",
        "mcpServerUrl",
        "timeout",
        "toolOverrides",
        "toolsOverride",
        "guardrails",
        "rateLimits",
        "quotas",
        "toolSet",
        "toolsCacheMs",
        "gatewayCluster",
        "auth",
        "policy",
    ];

    /// Reads a server's own fields (the entry lists removed beforehand).
    pub fn read(v: &Value) -> Result<ServerConfig, FieldError> {
        let mut f = Fields::read(v, "", Self::FIELDS);
        let dialects = [("jinja", crate::template::Dialect::Jinja), ("go", crate::template::Dialect::Go)];
        let semantics =
            [("native", crate::higress::Semantics::Native), ("higress", crate::higress::Semantics::Higress)];
        let mut s = ServerConfig::default();
        s.name = f.required_string("name");
        s.version = f.string("version");
        s.title = f.string("title");
        s.instructions = f.string("instructions");
        s.description = f.string("description");
        s.icons = f.list("icons", crate::icon::Icon::read);
        s.config = f.object("config").unwrap_or_default();
        s.upstream = f.nested("upstream", UpstreamConfig::read);
        s.security_schemes = f.list("securitySchemes", SecurityScheme::read);
        s.default_downstream_security = f.nested("defaultDownstreamSecurity", SecurityRef::read);
        s.default_upstream_security = f.nested("defaultUpstreamSecurity", SecurityRef::read);
        s.passthrough_auth_header = f.boolean("passthroughAuthHeader");
        s.allow_tools = f.strings("allowTools");
        s.template_dialect = f.choice("templateDialect", &dialects);
        s.semantics = f.choice("semantics", &semantics);
        s.schema_defs = f.object("schemaDefs").unwrap_or_default();
        s.compiled_defs = None;
        s.kind = f.string("type");
        s.transport = f.string("transport");
        let (url, url_lower) = (f.string("mcpServerURL"), f.string("mcpServerUrl"));
        s.mcp_server_url = one_of(&mut f, url, url_lower, "mcpServerURL");
        s.timeout = f.unsigned("timeout");
        let (overrides, overrides_alias) = (f.object("toolOverrides"), f.object("toolsOverride"));
        s.tool_overrides = one_of(&mut f, overrides, overrides_alias, "toolOverrides").unwrap_or_default();
        s.tools = Vec::new();
        s.prompts = Vec::new();
        s.resources = Vec::new();
        s.resource_templates = Vec::new();
        s.import_notices = Vec::new();
        s.guardrails = f.nested("guardrails", crate::guard::GuardrailsConfig::read);
        s.rate_limits = f.value("rateLimits").cloned();
        s.quotas = f.value("quotas").cloned();
        s.tool_refs = Vec::new();
        s.tool_set = f.value("toolSet").cloned();
        s.tools_cache_ms = f.unsigned("toolsCacheMs");
        s.gateway_cluster = f.string("gatewayCluster");
        s.auth = f.value("auth").cloned();
        s.policy = f.value("policy").cloned();
        f.finish()?;
        Ok(s)
    }
}

/// A field spelled two ways: either, not both.
fn one_of<T>(f: &mut Fields<'_>, a: Option<T>, b: Option<T>, field: &str) -> Option<T> {
    if a.is_some() && b.is_some() {
        f.fail(field, "is given under both of its spellings; keep one");
        return None;
    }
    a.or(b)
}

impl SecurityScheme {
    pub const FIELDS: &'static [&'static str] =
        &["id", "type", "scheme", "in", "name", "defaultCredential", "description"];

    fn read(v: &Value, at: &str) -> Result<SecurityScheme, FieldError> {
        let mut f = Fields::read(v, at, Self::FIELDS);
        let mut s = SecurityScheme::default();
        s.id = f.required_string("id");
        s.kind = f.required_string("type");
        s.scheme = f.string("scheme");
        s.location = f.string("in");
        s.name = f.string("name");
        s.default_credential = f.string("defaultCredential").unwrap_or_default();
        s.description = f.string("description");
        f.finish()?;
        Ok(s)
    }
}

impl SecurityRef {
    pub const FIELDS: &'static [&'static str] = &["id", "credential", "passthrough"];

    fn read(v: &Value, at: &str) -> Result<SecurityRef, FieldError> {
        let mut f = Fields::read(v, at, Self::FIELDS);
        let mut s = SecurityRef::default();
        s.id = f.required_string("id");
        s.credential = f.string("credential");
        s.passthrough = f.boolean("passthrough");
        f.finish()?;
        Ok(s)
    }
}

impl UpstreamConfig {
    const FIELDS: &'static [&'static str] = &["dispatch", "cluster", "authority", "timeoutMs"];

    /// Reads a server's, tool's or resource's `upstream`.
    pub fn read(v: &Value, at: &str) -> Result<UpstreamConfig, FieldError> {
        let mut f = Fields::read(v, at, Self::FIELDS);
        let mut u = UpstreamConfig::default();
        u.dispatch = f.string("dispatch");
        u.cluster = f.string("cluster");
        u.authority = f.string("authority");
        u.timeout_ms = f.unsigned("timeoutMs");
        f.finish()?;
        Ok(u)
    }
}

impl ToolConfig {
    pub const FIELDS: &'static [&'static str] = &[
        "name",
        "title",
        "description",
        "args",
        "security",
        "inputSchema",
        "outputSchema",
        "annotations",
        "icons",
        "requiredClientCapabilities",
        "upstream",
        "requestTemplate",
        "responseTemplate",
        "errorResponseTemplate",
        "notifications",
        "inputRequests",
        "rateLimits",
        "quotas",
    ];

    /// Reads one tool (located by the caller: server and tool name).
    pub fn read(v: &Value) -> Result<ToolConfig, FieldError> {
        let mut f = Fields::read(v, "", Self::FIELDS);
        let mut t = ToolConfig::default();
        t.name = f.required_string("name");
        t.title = f.string("title");
        t.description = f.string("description").unwrap_or_default();
        t.args = f.list("args", ArgConfig::read);
        t.security = f.nested("security", SecurityRef::read);
        t.input_schema = f.value("inputSchema").cloned();
        t.output_schema = f.value("outputSchema").cloned();
        t.annotations = f.object("annotations");
        t.icons = f.list("icons", crate::icon::Icon::read);
        t.required_client_capabilities = f.object("requiredClientCapabilities");
        t.upstream = f.nested("upstream", UpstreamConfig::read);
        t.request_template = f.nested("requestTemplate", RequestTemplate::read);
        t.response_template = f.nested("responseTemplate", ResponseTemplate::read);
        t.error_response_template = f.string("errorResponseTemplate");
        t.notifications = f.list("notifications", crate::notify::NotificationConfig::read);
        t.input_requests = f.value("inputRequests").cloned();
        t.rate_limits = f.value("rateLimits").cloned();
        t.quotas = f.value("quotas").cloned();
        f.finish()?;
        Ok(t)
    }
}

impl ArgConfig {
    pub const FIELDS: &'static [&'static str] = &[
        "name",
        "description",
        "type",
        "required",
        "default",
        "enum",
        "items",
        "properties",
        "position",
        "paramName",
        "schema",
        "style",
        "explode",
        "file",
        "allowReserved",
        "contentType",
    ];

    /// Reads one argument.
    pub fn read(v: &Value, at: &str) -> Result<ArgConfig, FieldError> {
        let mut f = Fields::read(v, at, Self::FIELDS);
        let mut a = ArgConfig::default();
        a.name = f.required_string("name");
        a.description = f.string("description");
        a.kind = f.string("type");
        a.required = f.boolean("required");
        a.default = f.value("default").cloned();
        a.enum_values = f.values("enum");
        a.items = f.value("items").cloned();
        a.properties = f.value("properties").cloned();
        // Any case, as Higress lower-cases it.
        a.position = f.choice_any_case("position", &Position::ALL.map(|p| (p.name(), p)));
        a.param_name = f.string("paramName");
        a.schema = f.value("schema").cloned();
        a.style = f.choice("style", &Style::ALL.map(|s| (s.name(), s)));
        a.explode = f.flag("explode");
        a.file = f.boolean("file");
        a.allow_reserved = f.boolean("allowReserved");
        a.content_type = f.string("contentType");
        f.finish()?;
        Ok(a)
    }
}

impl RequestTemplate {
    pub const FIELDS: &'static [&'static str] = &[
        "url",
        "method",
        "headers",
        "body",
        "argsToJsonBody",
        "argsToUrlParam",
        "argsToFormBody",
        "argsToMultipartBody",
        "security",
    ];

    /// Reads a tool's or resource's `requestTemplate`.
    pub fn read(v: &Value, at: &str) -> Result<RequestTemplate, FieldError> {
        let mut f = Fields::read(v, at, Self::FIELDS);
        let mut r = RequestTemplate::default();
        r.url = f.string("url");
        r.method = f.string("method");
        r.headers = f.list("headers", HeaderTemplate::read);
        r.body = f.string("body");
        r.args_to_json_body = f.boolean("argsToJsonBody");
        r.args_to_url_param = f.boolean("argsToUrlParam");
        r.args_to_form_body = f.boolean("argsToFormBody");
        r.args_to_multipart_body = f.boolean("argsToMultipartBody");
        r.security = f.nested("security", SecurityRef::read);
        f.finish()?;
        Ok(r)
    }
}

impl HeaderTemplate {
    pub const FIELDS: &'static [&'static str] = &["key", "value"];

    fn read(v: &Value, at: &str) -> Result<HeaderTemplate, FieldError> {
        let mut f = Fields::read(v, at, Self::FIELDS);
        let h = HeaderTemplate { key: f.required_string("key"), value: f.required_string("value") };
        f.finish()?;
        Ok(h)
    }
}

impl ResponseTemplate {
    pub const FIELDS: &'static [&'static str] = &["body", "prependBody", "appendBody", "content"];

    /// Reads a tool's or resource's `responseTemplate` (also an OpenAPI import's override of it).
    pub fn read(v: &Value, at: &str) -> Result<ResponseTemplate, FieldError> {
        let mut f = Fields::read(v, at, Self::FIELDS);
        let mut r = ResponseTemplate::default();
        r.body = f.string("body");
        r.prepend_body = f.string("prependBody");
        r.append_body = f.string("appendBody");
        r.content = f.optional_list("content", crate::content::ContentConfig::read);
        f.finish()?;
        Ok(r)
    }
}

/// Parses a configuration string: JSON always, YAML when built with the `yaml` feature.
pub fn parse_document(text: &str) -> Result<Value, ConfigError> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(ConfigError::new("(root)", "the plugin configuration is empty"));
    }
    if trimmed.starts_with('{') {
        return serde_json::from_slice(text.as_bytes())
            .map_err(|e| ConfigError::new("(root)", format!("not valid JSON: {e}")));
    }
    #[cfg(feature = "yaml")]
    {
        serde_yaml_ng::from_str::<yaml::Lenient>(text)
            .map(|l| l.0)
            .map_err(|e| ConfigError::new("(root)", format!("not valid YAML: {e}")))
    }
    #[cfg(not(feature = "yaml"))]
    {
        Err(ConfigError::new("(root)", "expected a JSON object (this build does not read YAML)"))
    }
}

/// YAML read into JSON values as JSON reads it: an integer beyond 64 bits becomes a float (OpenAI's YAML
/// description has one) instead of failing the whole document.
#[cfg(feature = "yaml")]
mod yaml {
    use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Number, Value};
    use std::fmt;

    pub struct Lenient(pub Value);

    impl<'de> Deserialize<'de> for Lenient {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(LenientVisitor).map(Lenient)
        }
    }

    struct LenientVisitor;

    fn float(f: f64) -> Value {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }

    impl<'de> Visitor<'de> for LenientVisitor {
        type Value = Value;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any YAML value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
            Ok(i64::try_from(v).map_or_else(|_| float(v as f64), Value::from))
        }
        fn visit_u128<E>(self, v: u128) -> Result<Value, E> {
            Ok(u64::try_from(v).map_or_else(|_| float(v as f64), Value::from))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(float(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_string()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_none<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            Lenient::deserialize(d).map(|l| l.0)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(Lenient(v)) = seq.next_element()? {
                out.push(v);
            }
            Ok(Value::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some((Lenient(k), Lenient(v))) = map.next_entry()? {
                // YAML allows keys of any type; JSON's are strings (`200:` response codes among them).
                let key = match k {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(key, v);
            }
            Ok(Value::Object(out))
        }
    }
}

impl PluginConfig {
    /// Parses and structurally validates the configuration text.
    pub fn parse(text: &str) -> Result<PluginConfig, ConfigError> {
        Self::from_value(parse_document(text)?)
    }

    /// Builds the configuration from an already parsed document.
    pub fn from_value(doc: Value) -> Result<PluginConfig, ConfigError> {
        // Kept as given only where a request's header may replace a server's config (it is compiled again).
        let source = (doc.get("trustConfigHeader") == Some(&Value::Bool(true))).then(|| doc.clone());
        let mut doc = doc;
        let Some(top) = doc.as_object_mut() else {
            return Err(ConfigError::new("(root)", "the plugin configuration must be an object"));
        };
        let higress_shape = top.contains_key("server");
        if higress_shape && top.contains_key("toolSet") {
            return Err(ConfigError::new(
                "toolSet",
                "a toolSet takes tools of servers of the same configuration: list them under `servers:` with the toolSet beside it (or as a server of type: virtual)",
            ));
        }
        // Higress's shape is read as Higress reads it (with its template dialect, which that shape defaults
        // to): fields Higress ignores are dropped, with a warning.
        let mut warnings = Vec::new();
        #[cfg(feature = "go-templates")]
        if higress_shape {
            warnings = crate::lenient::tolerate_top(top, RawPlugin::FIELDS);
        }
        let raw = RawPlugin::read(doc)?;
        let mut raw_servers = raw.servers;
        if let Some(server) = raw.server {
            let mut server = server;
            if let Some(obj) = server.as_object_mut() {
                if let Some(tools) = raw.tools {
                    obj.insert("tools".into(), Value::Array(tools));
                }
                if let Some(allow) = raw.allow_tools {
                    obj.insert("allowTools".into(), allow);
                }
            }
            #[cfg(feature = "go-templates")]
            warnings.extend(crate::lenient::tolerate_server(&mut server));
            raw_servers.push(server);
        } else if raw.tools.is_some() || raw.allow_tools.is_some() {
            return Err(ConfigError::new("tools", "top-level tools and allowTools need a top-level `server`"));
        }
        if let Some(set) = raw.tool_set {
            let name = set.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            raw_servers.push(crate::json::object(vec![
                ("name", Value::String(name)),
                ("type", Value::from("virtual")),
                ("toolSet", set),
            ]));
        }
        if raw_servers.is_empty() {
            return Err(ConfigError::new("servers", "at least one server is required"));
        }
        let prefix = raw.prefix.trim_end_matches('/').to_string();
        if !prefix.starts_with('/') || prefix.contains(['?', '#']) {
            return Err(ConfigError::new("prefix", "must be an absolute path such as /mcp-servers"));
        }
        let sessions = match &raw.sessions {
            None => None,
            Some(v) => Some(SessionsConfig::read(v, "sessions").map_err(|(f, m)| ConfigError::new(f, m))?),
        };
        let observability = match raw.observability {
            None => crate::metrics::ObservabilityConfig::default(),
            Some(v) => crate::metrics::ObservabilityConfig::read(&v, "observability")
                .map_err(|(f, m)| ConfigError::new(f, m))?,
        };
        let observability =
            crate::metrics::Observability::compile(&observability).map_err(|(f, m)| ConfigError::new(f, m))?;
        for (field, value) in [
            ("toolsPageSize", raw.tools_page_size as u64),
            ("maxCallsPerRequest", raw.max_calls_per_request as u64),
            ("maxCallsInFlight", raw.max_calls_in_flight as u64),
            ("requestBodyTimeoutMs", raw.request_body_timeout_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::new(field, "must be at least 1"));
            }
        }
        let mut servers = Vec::with_capacity(raw_servers.len());
        let last = raw_servers.len() - 1;
        for (i, value) in raw_servers.into_iter().enumerate() {
            let mut server = parse_server(value, i)?;
            if higress_shape && i == last {
                server.template_dialect.get_or_insert(crate::template::Dialect::Go);
                server.semantics.get_or_insert(crate::higress::Semantics::Higress);
                server.import_notices.append(&mut warnings);
            }
            if servers.iter().any(|s: &ServerConfig| s.name == server.name) {
                return Err(ConfigError::new("name", "duplicate server name").in_server(&server.name));
            }
            servers.push(server);
        }
        let limits_in_redis = servers.iter().any(crate::limits::mentions_redis);
        let sessions = SessionsConfig::resolve(sessions, raw.session_ttl_seconds, limits_in_redis)?;
        Ok(PluginConfig {
            prefix,
            allowed_origins: raw.allowed_origins,
            sessions,
            max_request_bytes: raw.max_request_bytes,
            tools_page_size: raw.tools_page_size,
            max_response_bytes: raw.max_response_bytes,
            max_calls_per_request: raw.max_calls_per_request,
            max_calls_in_flight: raw.max_calls_in_flight,
            request_body_timeout_ms: raw.request_body_timeout_ms,
            input_signing_keys: raw.input_signing_keys,
            admission: crate::admission::AdmissionConfig {
                consumers: raw.consumers,
                key_auth: raw.key_auth,
                jwt_auth: raw.jwt_auth,
                consumer_header: raw.consumer_header,
            },
            observability,
            servers,
            gateway_cluster: raw.gateway_cluster,
            config_header_source: source.filter(|_| raw.trust_config_header),
        })
    }
}

/// Outlined (not inlined into `PluginConfig::from_value`): 682 bytes smaller that way.
#[inline(never)]
fn parse_server(mut value: Value, index: usize) -> Result<ServerConfig, ConfigError> {
    let label = value.get("name").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| format!("#{index}"));
    let (tools, openapi, prompts, resources, resource_templates) = match value.as_object_mut() {
        Some(obj) => (
            obj.remove("tools"),
            obj.remove("openapi"),
            obj.remove("prompts"),
            obj.remove("resources"),
            obj.remove("resourceTemplates"),
        ),
        None => return Err(ConfigError::new("(server)", "must be an object").in_server(&label)),
    };
    let mut server = ServerConfig::read(&value).map_err(|(f, m)| ConfigError::new(f, m).in_server(&label))?;
    if server.name.is_empty() || !server.name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err(ConfigError::new("name", "use letters, digits, '-', '_' or '.' only").in_server(&label));
    }
    if let Some(import) = openapi {
        #[cfg(feature = "openapi")]
        crate::openapi::import::apply(&mut server, import).map_err(|e| e.in_server(&label))?;
        #[cfg(not(feature = "openapi"))]
        {
            let _ = import;
            return Err(ConfigError::new("openapi", "this build has no OpenAPI import (cargo feature `openapi`)")
                .in_server(&label));
        }
    }
    let tools = match tools {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ConfigError::new("tools", "must be a list").in_server(&label)),
    };
    if server.kind.as_deref() == Some("virtual") {
        server.tool_refs = crate::composed::RefConfig::read(tools).map_err(|e| e.in_server(&label))?;
        return Ok(server);
    }
    for (i, tool) in tools.into_iter().enumerate() {
        let tool_label =
            tool.get("name").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| format!("#{i}"));
        let tool =
            ToolConfig::read(&tool).map_err(|(f, m)| ConfigError::new(f, m).in_server(&label).in_tool(&tool_label))?;
        if server.tools.iter().any(|t| t.name == tool.name) {
            return Err(ConfigError::new("name", "duplicate tool name").in_server(&label).in_tool(&tool.name));
        }
        server.tools.push(tool);
    }
    server.prompts = parse_entries(prompts, "prompts", "prompt", "name", &label, crate::prompt::PromptConfig::read)?;
    let resource = |v: &Value| crate::resource::ResourceConfig::read(v, false);
    server.resources = parse_entries(resources, "resources", "resource", "uri", &label, resource)?;
    let template = |v: &Value| crate::resource::ResourceConfig::read(v, true);
    server.resource_templates =
        parse_entries(resource_templates, "resourceTemplates", "resource template", "uriTemplate", &label, template)?;
    Ok(server)
}

/// Parses a server's `prompts`, `resources` or `resourceTemplates`, each error located by the entry's
/// name (or position), and refuses two entries with the same `key`.
fn parse_entries<T>(
    value: Option<Value>,
    field: &str,
    kind: &str,
    key: &str,
    server: &str,
    read: fn(&Value) -> Result<T, crate::fields::FieldError>,
) -> Result<Vec<T>, ConfigError> {
    let mut out = Vec::new();
    each_entry(value, field, kind, key, server, &mut |item| read(item).map(|parsed| out.push(parsed)))?;
    Ok(out)
}

/// The part of [`parse_entries`] that does not depend on the entry type (one copy for all of them).
#[inline(never)]
fn each_entry(
    value: Option<Value>,
    field: &str,
    kind: &str,
    key: &str,
    server: &str,
    visit: &mut dyn FnMut(&Value) -> Result<(), crate::fields::FieldError>,
) -> Result<(), ConfigError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(ConfigError::new(field, "must be a list").in_server(server)),
    };
    let mut seen: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let label = item.get(key).and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| format!("#{i}"));
        if seen.contains(&label) {
            return Err(ConfigError::new(key, format!("duplicate {kind} {key}"))
                .in_server(server)
                .in_entry(kind, &label));
        }
        visit(&item).map_err(|(f, m)| ConfigError::new(f, m).in_server(server).in_entry(kind, &label))?;
        seen.push(label);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_with_defaults() {
        let c = PluginConfig::parse("servers:\n  - name: a\n    tools:\n      - name: t\n        description: d\n")
            .unwrap();
        assert_eq!(c.prefix, "/mcp-servers");
        assert_eq!(c.sessions, SessionsConfig::default());
        assert_eq!(c.servers[0].tools[0].name, "t");
    }

    #[test]
    fn positions_are_read_in_any_case_as_higress_reads_them() {
        let p = |pos: &str| {
            PluginConfig::parse(&format!(
                "servers: [{{name: a, tools: [{{name: t, description: d, args: [{{name: x, position: {pos}}}]}}]}}]"
            ))
        };
        for (given, want) in [("query", Position::Query), ("Query", Position::Query), ("HEADER", Position::Header)] {
            assert_eq!(p(given).unwrap().servers[0].tools[0].args[0].position, Some(want), "{given}");
        }
        let e = p("nowhere").unwrap_err();
        assert!(e.to_string().contains("nowhere") && e.to_string().contains("query"), "{e}");
    }

    #[test]
    fn sessions_config() {
        let p = |extra: &str| PluginConfig::parse(&format!("{extra}\nservers: [{{name: a}}]"));
        assert_eq!(p("sessionTtlSeconds: 60").unwrap().sessions.ttl_seconds, 60);
        let c = p("sessions: {store: signed, ttlSeconds: 90, signingKeys: [k]}").unwrap().sessions;
        assert_eq!((c.store, c.ttl_seconds, c.signing_keys.len()), (StoreKind::Signed, 90, 1));
        let r = p("sessions: {store: redis, redis: {cluster: 'outbound|6379||redis.dns', password: pw}}").unwrap();
        let redis = r.sessions.redis.unwrap();
        assert_eq!((redis.timeout_ms, redis.key_prefix.as_str(), redis.database), (500, "mcp-gateway:", 0));
        assert!(!format!("{redis:?}").contains("pw"), "passwords never reach logs");
        for (bad, field) in [
            ("sessions: {store: disk}", "sessions.store"),
            ("sessions: {ttlSeconds: 0}", "sessions.ttlSeconds"),
            ("sessionTtlSeconds: 0", "sessionTtlSeconds"),
            ("sessions: {ttlSeconds: 5}\nsessionTtlSeconds: 6", "sessionTtlSeconds"),
            ("sessions: {signingKeys: [k]}", "sessions.signingKeys"),
            ("sessions: {store: redis}", "sessions.redis"),
            ("sessions: {store: local, redis: {cluster: c}}", "sessions.redis"),
            ("sessions: {store: redis, redis: {cluster: 'c?db=1'}}", "sessions.redis.cluster"),
            ("sessions: {store: redis, redis: {cluster: c, timeoutMs: 0}}", "sessions.redis.timeoutMs"),
            ("sessions: {store: redis, redis: {cluster: c, db: 1}}", "sessions.redis.db"),
        ] {
            let e = p(bad).unwrap_err();
            assert!(e.field.contains(field), "{bad}: {e}");
        }
    }

    #[test]
    fn yaml_reads_like_json() {
        let v =
            parse_document("a: 99999999999999999999999999999\nb: -99999999999999999999\nc: 7\n200: {x: ~}\n").unwrap();
        assert_eq!(v["a"].as_f64(), Some(1e29), "beyond 64 bits: a float, as JSON reads it");
        assert!(v["b"].is_f64() && v["c"].is_u64());
        assert_eq!(v["200"], serde_json::json!({"x": null}));
    }

    #[test]
    fn accepts_higress_single_server_shape() {
        use crate::template::Dialect;
        let c = PluginConfig::parse("server:\n  name: time\ntools:\n  - name: now\n    description: d\n").unwrap();
        assert_eq!(c.servers.len(), 1);
        assert_eq!(c.servers[0].tools[0].name, "now");
        // Higress's shape speaks Higress's template dialect unless the server says otherwise; ours speaks ours.
        assert_eq!(c.servers[0].template_dialect, Some(Dialect::Go));
        let c = PluginConfig::parse("server: {name: t, templateDialect: jinja}").unwrap();
        assert_eq!(c.servers[0].template_dialect, Some(Dialect::Jinja));
        let c = PluginConfig::parse("servers: [{name: a}, {name: b, templateDialect: go}]").unwrap();
        assert_eq!((c.servers[0].template_dialect, c.servers[1].template_dialect), (None, Some(Dialect::Go)));
        let e = PluginConfig::parse("servers: [{name: a, templateDialect: jsx}]").unwrap_err();
        assert!(e.to_string().contains("jsx"), "{e}");
    }

    #[test]
    fn errors_name_server_tool_and_field() {
        let e = PluginConfig::parse(r#"{"servers":[{"name":"s","tools":[{"name":"t","urll":"x"}]}]}"#).unwrap_err();
        assert_eq!(e.server.as_deref(), Some("s"));
        assert_eq!(e.tool.as_deref(), Some("t"));
        assert_eq!(e.field, "urll");
        assert!(e.to_string().contains("server 's' tool 't' field 'urll'"), "{e}");
    }

    #[test]
    fn the_first_wrong_field_is_the_one_reported() {
        // The readers go on after an error (with defaults) but report the first one, in reading order.
        let first = |text: &str| {
            let e = PluginConfig::parse(text).unwrap_err();
            format!("{}: {}", e.field, e.message)
        };
        let server = r#"{"servers":[{"name":"s","version":[1],"mcpServerURL":"a","mcpServerUrl":"b","zz":1}]}"#;
        assert_eq!(first(server), "version: must be a string");
        let server = r#"{"servers":[{"name":"s","mcpServerURL":"a","mcpServerUrl":"b","timeout":-1,"zz":1}]}"#;
        assert_eq!(first(server), "mcpServerURL: is given under both of its spellings; keep one");
        let tool = r#"{"servers":[{"name":"s","tools":[{"name":"t","args":[{"name":"a","required":1},
            {"position":"sky"}],"requestTemplate":{"url":[]},"zz":1}]}]}"#;
        assert_eq!(first(tool), "args[0].required: must be true or false");
        let tool = r#"{"servers":[{"name":"s","tools":[{"title":{},"args":[{"position":"sky"}]}]}]}"#;
        assert_eq!(first(tool), "name: is required");
        let args = r#"{"servers":[{"name":"s","tools":[{"name":"t","args":[{"name":"a"},{"position":"sky"}]}]}]}"#;
        assert_eq!(first(args), "args[1].name: is required");
        let prompt = r#"{"servers":[{"name":"s","prompts":[{"name":"p","messages":[{"role":"x","text":[]}]}]}]}"#;
        assert_eq!(first(prompt), "messages[0].role: 'x' must be user or assistant");
        let prompt = r#"{"servers":[{"name":"s","prompts":[{"name":"p","messages":[{"text":[],"content":{}}]}]}]}"#;
        assert_eq!(first(prompt), "messages[0].role: is required");
        let limits = r#"{"servers":[{"name":"s","rateLimits":[{"requests":"x","window":"zz"}]}]}"#;
        let e = crate::gateway::Gateway::compile(PluginConfig::parse(limits).unwrap()).err().unwrap();
        assert!(e.to_string().contains("rateLimits[0].requests"), "{e}");
        let sessions = r#"{"sessions":{"store":"disk","ttlSeconds":-1},"servers":[{"name":"s"}]}"#;
        assert!(first(sessions).starts_with("sessions.store: unknown variant `disk`"), "{}", first(sessions));
    }

    #[test]
    fn rejects_wrong_types_and_duplicates() {
        let e = PluginConfig::parse(
            r#"{"servers":[{"name":"s","tools":[{"name":"t","args":[{"name":"a","position":"sky"}]}]}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.tool.as_deref(), Some("t"));
        let e = PluginConfig::parse(r#"{"servers":[{"name":"s"},{"name":"s"}]}"#).unwrap_err();
        assert_eq!(e.field, "name");
        assert!(PluginConfig::parse("").is_err());
        assert!(PluginConfig::parse("[1,2]").is_err());
        assert!(PluginConfig::parse(r#"{"servers":[]}"#).is_err());
        assert!(PluginConfig::parse(r#"{"prefix":"x","servers":[{"name":"s"}]}"#).is_err());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        #![proptest_config(crate::strategies::cases(300))]

        /// Arbitrary text is either a config or an error, never a panic.
        #[test]
        fn any_text_parses_or_errs(text in ".{0,200}") {
            let _ = crate::gateway::Gateway::from_config_str(&text);
        }

        /// Mutated valid configs (wrong types in random fields) are rejected with a located error or accepted.
        #[test]
        fn mutated_configs_never_panic(field in prop_oneof![Just("url"), Just("method"), Just("body"), Just("args"), Just("inputSchema"), Just("outputSchema"), Just("upstream"), Just("headers"), Just("responseTemplate"), Just("errorResponseTemplate")],
                                       value in prop_oneof![Just(json!(1)), Just(json!("{{")), Just(json!([])), Just(json!({})), Just(json!(null)), Just(json!({"type": "object", "properties": {"a": {"pattern": "("}}})), Just(json!("http://{{ args.x }}/"))]) {
            let mut tool = json!({"name": "t", "description": "d", "requestTemplate": {"url": "/x"}});
            match field {
                "url" | "method" | "body" | "headers" => tool["requestTemplate"][field] = value,
                other => tool[other] = value,
            }
            let doc = json!({"servers": [{"name": "s", "upstream": {"cluster": "c"}, "tools": [tool]}]});
            if let Err(e) = crate::gateway::Gateway::from_config_str(&doc.to_string()) {
                prop_assert_eq!(e.server.as_deref(), Some("s"));
            }
        }
    }
}
