//! Virtual servers (`type: virtual`, or Higress's `toolSet`): a server whose tools are references to tools
//! of other servers of the same configuration, REST-backed or proxied, each optionally renamed and
//! re-described. The gateway serves their sessions itself; only tools come from elsewhere:
//!
//! - `tools/list` merges, in configuration order, the REST tools' listings (fixed at load) with the tools
//!   each referenced proxied server lists. Those lists are fetched in parallel ([`Job`], one [`Link`] per
//!   proxied server, each with the virtual server's `timeout` as deadline) and kept per worker for
//!   `toolsCacheMs`. A proxied server that fails loses only its own tools, and is logged once until it
//!   answers again.
//! - `tools/call` goes to the owning server: a REST tool runs exactly as on its own server (the transport
//!   calls it there); a proxied tool is sent to its backend under its own name ([`Link`]), once the guard
//!   services (`guardrails.external`, the virtual server's then the proxied server's) allowed its
//!   arguments, and its result is checked by them before the client sees it ([`Asking`]).
//! - A `transport: sse` proxied server is reached through this Envoy's own Streamable HTTP bridge, on the
//!   virtual server's `gatewayCluster`, as the gateway's own call ([`crate::loopback`]): plugin HTTP calls
//!   deliver only complete answers, and an SSE backend answers on a stream that never ends.
//!
//! Plain Rust: the core decides which requests go out and merges the answers; the driver sends them.

pub mod link;

use crate::config::ConfigError;
use crate::gateway::{Gateway, Server};
use crate::guard::external::{Checks, Phase as Side};
use crate::jsonrpc;
use crate::loopback::{Key, SLACK_MS};
use crate::mcp::Revision;
use crate::upstream::{UpstreamRequest, UpstreamResult};
pub use link::{Link, LinkStep, Loop, Session};
use serde_json::{json, Map, Value};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;

/// Default `toolsCacheMs`.
pub const DEFAULT_CACHE_MS: u64 = 30_000;
/// Default per-backend deadline of a `tools/list` fan-out (the virtual server's `timeout`).
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// How a `toolSet` names the tools it takes: `{serverName}___{tool}` (Higress's `mcp-router` splits there).
pub const SEPARATOR: &str = "___";
/// Pages of one proxied server's `tools/list` read at most.
const MAX_PAGES: usize = 20;

/// One entry of a virtual server's `tools:`.
#[derive(Debug, Clone, Default)]
pub struct RefConfig {
    /// The server that has the tool.
    pub server: String,
    /// Its name there.
    pub tool: String,
    /// The name clients see; default: `tool`.
    pub name: Option<String>,
    pub description: Option<String>,
    pub title: Option<String>,
}

/// The string fields of a config object, by name, each checked to be a string; an unknown field or a
/// missing `required` one is an error naming it. (Read by hand: serde's derives cost the module more.)
fn fields<const N: usize>(v: &Value, known: [&str; N], required: &[&str]) -> Result<[Option<String>; N], String> {
    let Some(obj) = v.as_object() else { return Err("must be an object".into()) };
    let mut out: [Option<String>; N] = std::array::from_fn(|_| None);
    for (k, v) in obj {
        let Some(i) = known.iter().position(|f| f == k) else {
            return Err(format!("unknown field `{k}`, expected one of {}", known.join(", ")));
        };
        match v {
            Value::String(s) => out[i] = Some(s.clone()),
            Value::Null => {}
            _ => return Err(format!("`{k}` must be a string")),
        }
    }
    for (i, f) in known.iter().enumerate() {
        if required.contains(f) && out[i].is_none() {
            return Err(format!("missing field `{f}`"));
        }
    }
    Ok(out)
}

impl RefConfig {
    /// Reads a virtual server's `tools:` list; errors name the entry.
    pub fn read(items: Vec<Value>) -> Result<Vec<RefConfig>, ConfigError> {
        let mut refs = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let label = item.get("name").or(item.get("tool")).and_then(Value::as_str).unwrap_or("").to_string();
            let [server, tool, name, description, title] =
                fields(item, ["server", "tool", "name", "description", "title"], &["server", "tool"]).map_err(|e| {
                    let msg = format!("{e} (a virtual server's tool is {{server, tool, name?, description?, title?}})");
                    ConfigError::new(format!("tools[{i}]"), msg).in_tool(&label)
                })?;
            let (server, tool) = (server.unwrap_or_default(), tool.unwrap_or_default());
            refs.push(RefConfig { server, tool, name, description, title });
        }
        Ok(refs)
    }
}

/// Higress's `toolSet`: `{name, serverTools: [{serverName, tools: [..]}]}`.
#[derive(Debug, Clone, Default)]
pub struct ToolSetConfig {
    pub name: Option<String>,
    /// `(serverName, tools)`.
    pub server_tools: Vec<(String, Vec<String>)>,
    /// `gatewayCluster` beside `serverTools`: a top-level `toolSet` has no server of its own to carry it.
    pub gateway_cluster: Option<String>,
}

impl ToolSetConfig {
    /// Reads a `toolSet`; errors give the field.
    pub fn read(v: &Value) -> Result<ToolSetConfig, (String, String)> {
        let err = |field: &str, msg: &str| Err((format!("toolSet{field}"), msg.to_string()));
        let Some(obj) = v.as_object() else { return err("", "must be {name, serverTools: [{serverName, tools}]}") };
        if let Some(k) = obj.keys().find(|k| !["name", "serverTools", "gatewayCluster"].contains(&k.as_str())) {
            return err(&format!(".{k}"), "is not a field: use name, serverTools, gatewayCluster");
        }
        let gateway_cluster = match obj.get("gatewayCluster") {
            None | Some(Value::Null) => None,
            Some(Value::String(c)) if !c.is_empty() => Some(c.clone()),
            Some(_) => return err(".gatewayCluster", "must be the name of an Envoy cluster"),
        };
        let name = match obj.get("name") {
            None | Some(Value::Null) => None,
            Some(Value::String(n)) => Some(n.clone()),
            Some(_) => return err(".name", "must be a string"),
        };
        let Some(list) = obj.get("serverTools").and_then(Value::as_array) else {
            return err(".serverTools", "must be a list of {serverName, tools}");
        };
        let mut server_tools = Vec::with_capacity(list.len());
        for (i, entry) in list.iter().enumerate() {
            let field = format!(".serverTools[{i}]");
            let server = entry.get("serverName").and_then(Value::as_str);
            let tools = entry.get("tools").and_then(Value::as_array);
            let extra = entry.as_object().and_then(|o| o.keys().find(|k| *k != "serverName" && *k != "tools").cloned());
            let (Some(server), Some(tools), None) = (server, tools, extra) else {
                return err(&field, "must be {serverName, tools: [names]}");
            };
            let mut names = Vec::with_capacity(tools.len());
            for t in tools {
                let Some(t) = t.as_str() else { return err(&format!("{field}.tools"), "must be a list of tool names") };
                names.push(t.to_string());
            }
            let tools = names;
            server_tools.push((server.to_string(), tools));
        }
        Ok(ToolSetConfig { name, server_tools, gateway_cluster })
    }
}

/// One tool of a virtual server.
#[derive(Debug)]
pub struct Ref {
    /// The name clients see.
    pub name: String,
    /// The owning server's index in [`Gateway::servers`].
    pub owner: usize,
    /// The tool's name on its server.
    pub tool: String,
    description: Option<String>,
    title: Option<String>,
    /// A REST tool's listing, renamed (fixed at load); `None` for a proxied tool.
    listing: Option<Value>,
}

impl Ref {
    /// A backend's tool descriptor as clients of the virtual server see it.
    fn present(&self, mut tool: Value) -> Value {
        if let Value::Object(t) = &mut tool {
            t.insert("name".into(), Value::from(self.name.as_str()));
            for (key, v) in [("description", &self.description), ("title", &self.title)] {
                if let Some(v) = v {
                    t.insert(key.into(), Value::from(v.as_str()));
                }
            }
        }
        tool
    }
}

/// What a worker knows of one proxied server.
#[derive(Debug, Default)]
struct Held {
    session: Option<Session>,
    /// Its tools, and when they were fetched.
    tools: Option<(u64, Vec<Value>)>,
    /// Its last fetch failed (and that was logged).
    down: bool,
}

/// A compiled virtual server.
#[derive(Debug)]
pub struct Virtual {
    pub refs: Vec<Ref>,
    index: HashMap<String, usize>,
    /// The proxied servers referenced, each once.
    pub backends: Vec<usize>,
    pub cache_ms: u64,
    pub timeout_ms: u64,
    /// `gatewayCluster`: where calls to `transport: sse` servers go, to this Envoy's own bridge
    /// ([`crate::loopback`]).
    pub gateway_cluster: Option<String>,
    /// It calls some `transport: sse` server through the bridge, so its requests need the loopback key:
    /// decided here, so that no other virtual server's request takes a copy of the key.
    pub loops_back: bool,
    /// The virtual server's name, which its passes carry (the bridge reports its calls under it).
    name: Box<str>,
    /// Per worker (a gateway is per worker): backend sessions and tool lists, by proxied server (a
    /// short list: scanned).
    state: RefCell<Vec<(usize, Held)>>,
    /// Requests this worker sent to proxied servers: the next one's number (its JSON-RPC id's).
    sent: Cell<u64>,
}

fn held(state: &[(usize, Held)], backend: usize) -> Option<&Held> {
    state.iter().find(|(b, _)| *b == backend).map(|(_, h)| h)
}

fn held_mut(state: &mut Vec<(usize, Held)>, backend: usize) -> &mut Held {
    let i = match state.iter().position(|(b, _)| *b == backend) {
        Some(i) => i,
        None => {
            state.push((backend, Held::default()));
            state.len() - 1
        }
    };
    &mut state[i].1
}

fn name_ok(n: &str) -> bool {
    !n.is_empty() && n.len() <= 128 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

impl Virtual {
    /// Compiles a virtual server's references against the servers compiled so far (`servers`); `virtuals`
    /// names the other virtual servers (which cannot be referenced). Errors name server, tool and field.
    /// `default_cluster`: the plugin's `gatewayCluster`, for a server whose own and toolSet's are unset.
    #[allow(clippy::too_many_arguments)]
    pub fn compile(
        name: &str,
        refs: &[RefConfig],
        tool_set: Option<&ToolSetConfig>,
        cache_ms: Option<u64>,
        timeout_ms: Option<u64>,
        gateway_cluster: Option<String>,
        default_cluster: Option<&str>,
        servers: &[Server],
        virtuals: &[String],
    ) -> Result<Virtual, ConfigError> {
        let err =
            |field: String, msg: String, tool: &str| Err(ConfigError::new(field, msg).in_server(name).in_tool(tool));
        let mut all: Vec<(String, RefConfig)> = Vec::with_capacity(refs.len());
        for (i, r) in refs.iter().enumerate() {
            all.push((format!("tools[{i}]"), r.clone()));
        }
        let mut gateway_cluster = gateway_cluster;
        if let Some(set) = tool_set {
            if let Some(n) = set.name.as_deref().filter(|n| *n != name) {
                return Err(
                    ConfigError::new("toolSet.name", format!("'{n}' differs from the server's name")).in_server(name)
                );
            }
            match (&gateway_cluster, &set.gateway_cluster) {
                (Some(own), Some(c)) if own != c => {
                    let msg = format!("'{c}' differs from the server's gatewayCluster '{own}'");
                    return Err(ConfigError::new("toolSet.gatewayCluster", msg).in_server(name));
                }
                (None, Some(c)) => gateway_cluster = Some(c.clone()),
                _ => {}
            }
            for (i, (server, tools)) in set.server_tools.iter().enumerate() {
                for (j, tool) in tools.iter().enumerate() {
                    let r = RefConfig {
                        server: server.clone(),
                        tool: tool.clone(),
                        name: Some(format!("{server}{SEPARATOR}{tool}")),
                        description: None,
                        title: None,
                    };
                    all.push((format!("toolSet.serverTools[{i}].tools[{j}]"), r));
                }
            }
        }
        let gateway_cluster = gateway_cluster.or_else(|| default_cluster.map(str::to_string));
        if all.is_empty() {
            return Err(ConfigError::new("tools", "a virtual server needs tools: [{server, tool}] or a toolSet")
                .in_server(name));
        }
        if cache_ms == Some(0) || timeout_ms == Some(0) {
            let field = if cache_ms == Some(0) { "toolsCacheMs" } else { "timeout" };
            return Err(ConfigError::new(field, "must be at least 1").in_server(name));
        }
        let mut v = Virtual {
            refs: Vec::with_capacity(all.len()),
            index: HashMap::new(),
            backends: Vec::new(),
            cache_ms: cache_ms.unwrap_or(DEFAULT_CACHE_MS),
            timeout_ms: timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS),
            gateway_cluster,
            loops_back: false,
            name: name.into(),
            state: RefCell::new(Vec::new()),
            sent: Cell::new(0),
        };
        for (field, r) in all {
            let exposed = r.name.clone().unwrap_or_else(|| r.tool.clone());
            if virtuals.contains(&r.server) || r.server == name {
                let msg = format!(
                    "'{}' is a virtual server: a virtual server takes tools of REST-backed or proxied servers",
                    r.server
                );
                return err(format!("{field}.server"), msg, &exposed);
            }
            let Some(owner) = servers.iter().position(|s| s.name == r.server) else {
                return err(format!("{field}.server"), format!("no server is named '{}'", r.server), &exposed);
            };
            let server = &servers[owner];
            let listing = match &server.proxy {
                Some(backend) => {
                    if backend.sse && v.gateway_cluster.is_none() {
                        let to =
                            if field.starts_with("toolSet") { "toolSet, beside serverTools" } else { "virtual server" };
                        let msg = format!(
                            "'{}' is a transport: sse proxied server, whose tools a virtual server calls through this \
                             Envoy's own Streamable HTTP bridge: add gatewayCluster (an Envoy cluster that reaches this \
                             Envoy's MCP listener) to the {to}, or to the plugin's top level for every virtual server",
                            r.server
                        );
                        return err(format!("{field}.server"), msg, &exposed);
                    }
                    if !backend.sse && backend.cluster.is_none() {
                        let msg = format!(
                            "proxied server '{}' needs upstream.cluster (the Envoy cluster of its backend), which the \
                             gateway's own calls for virtual servers use",
                            r.server
                        );
                        return err(format!("{field}.server"), msg, &exposed);
                    }
                    if !name_ok(&r.tool) {
                        return err(format!("{field}.tool"), format!("'{}' is not a tool name", r.tool), &exposed);
                    }
                    if !v.backends.contains(&owner) {
                        v.backends.push(owner);
                    }
                    None
                }
                None => {
                    let Some(tool) = server.tool(&r.tool) else {
                        return err(
                            format!("{field}.tool"),
                            format!("server '{}' has no tool '{}'", r.server, r.tool),
                            &exposed,
                        );
                    };
                    Some(tool.listing())
                }
            };
            if !name_ok(&exposed) {
                return err(
                    format!("{field}.name"),
                    format!("'{exposed}' must be 1-128 characters from A-Z a-z 0-9 _ - ."),
                    &exposed,
                );
            }
            if v.index.contains_key(&exposed) {
                return err(
                    format!("{field}.name"),
                    format!("'{exposed}' is the name of another tool of this server"),
                    &exposed,
                );
            }
            let r = Ref {
                name: exposed.clone(),
                owner,
                tool: r.tool,
                description: r.description,
                title: r.title,
                listing: None,
            };
            let listing = listing.map(|l| r.present(l));
            v.index.insert(exposed, v.refs.len());
            v.refs.push(Ref { listing, ..r });
        }
        v.loops_back =
            v.gateway_cluster.is_some() && v.backends.iter().any(|b| servers[*b].proxy.as_ref().is_some_and(|p| p.sse));
        Ok(v)
    }

    /// The tool clients call `name`.
    pub fn find(&self, name: &str) -> Option<&Ref> {
        self.index.get(name).map(|i| &self.refs[*i])
    }

    /// The merged list as this worker knows it: plain tool descriptors in configuration order, the tools
    /// of proxied servers that did not answer left out. Filters (allowTools, authorization) apply to it.
    pub fn tools(&self) -> Vec<Value> {
        let state = self.state.borrow();
        self.refs
            .iter()
            .filter_map(|r| match &r.listing {
                Some(l) => Some(l.clone()),
                None => {
                    let (_, tools) = held(&state, r.owner)?.tools.as_ref()?;
                    let tool = tools.iter().find(|t| t.get("name").and_then(Value::as_str) == Some(&r.tool))?;
                    Some(r.present(tool.clone()))
                }
            })
            .collect()
    }

    /// The backend session this worker holds for proxied server `backend`.
    pub fn session(&self, backend: usize) -> Option<Session> {
        held(&self.state.borrow(), backend).and_then(|h| h.session.clone())
    }

    /// `method` on proxied server `backend`, on the session this worker holds for it, under an id of its own.
    fn link(
        &self,
        gw: &Gateway,
        backend: usize,
        method: &'static str,
        params: Value,
        timeout_ms: u64,
        via: Option<Loop>,
    ) -> (Link, UpstreamRequest) {
        let n = self.sent.get();
        self.sent.set(n.wrapping_add(1));
        Link::start(gw, backend, self.session(backend), n, method, params, timeout_ms, via)
    }

    /// The session `link` ended on becomes the one held, unless another link replaced the one it began
    /// with meanwhile: a call cut off on a session the backend forgot, ending after a call that
    /// re-initialised, would bring the forgotten one back.
    fn keep_session(&self, link: &Link) {
        let mut state = self.state.borrow_mut();
        let held = held_mut(&mut state, link.backend);
        if held.session.as_ref() == link.began.as_deref() {
            held.session = link.session.clone();
        }
    }

    /// How this virtual server reaches proxied server `backend`: directly (`None`), or through this Envoy's
    /// own bridge for a `transport: sse` one, with a pass signed by `signer` that expires at `expires_ms`.
    fn via(&self, gw: &Gateway, backend: usize, signer: Option<&Key>, expires_ms: u64) -> Option<Loop> {
        let server = &gw.servers[backend];
        let cluster = self.gateway_cluster.clone().filter(|_| server.proxy.as_ref().is_some_and(|b| b.sse))?;
        Some(Loop { cluster, pass: signer.map(|k| k.sign(&server.name, &self.name, expires_ms)) })
    }

    /// Starts a `tools/list`: answered now when every proxied server's list is fresh, else the fetches
    /// of the stale ones to send (by index into the job's links). `signer`: the loopback key, for SSE
    /// servers.
    pub fn list(&self, gw: &Gateway, request: ListRequest, now_ms: u64, signer: Option<&Key>) -> (Option<Job>, Next) {
        let stale: Vec<usize> = {
            let state = self.state.borrow();
            let fresh = |b: &usize| {
                held(&state, *b)
                    .and_then(|h| h.tools.as_ref())
                    .is_some_and(|(at, _)| now_ms < at.saturating_add(self.cache_ms))
            };
            let mut stale = Vec::new();
            for b in &self.backends {
                if !fresh(b) {
                    stale.push(*b);
                }
            }
            stale
        };
        if stale.is_empty() {
            return (None, Next::Reply(self.render(gw, &request)));
        }
        let mut links = Vec::with_capacity(stale.len());
        let mut sends = Vec::with_capacity(stale.len());
        // A pass lasts for every page the list may take.
        let expires_ms = now_ms.saturating_add(self.timeout_ms.saturating_mul(MAX_PAGES as u64 + 1) + SLACK_MS);
        for (i, b) in stale.into_iter().enumerate() {
            let via = self.via(gw, b, signer, expires_ms);
            let (link, first) = self.link(gw, b, "tools/list", json!({}), self.timeout_ms, via);
            links.push(Some((link, Vec::new(), 1)));
            sends.push((i, first));
        }
        let remaining = links.len();
        (Some(Job::List { request, links, remaining }), Next::Send(sends))
    }

    /// One page of the merged list, filtered by the server's `allowTools`, the request's allowed tools and
    /// the server's `policy` for the caller.
    fn render(&self, gw: &Gateway, r: &ListRequest) -> Value {
        let server = &gw.servers[r.server];
        let access = crate::gateway::Access { caller: &r.caller, header: r.allowed.as_deref() };
        let kind = crate::admission::policy::Kind::Tool;
        let mut visible: Vec<Value> = Vec::new();
        for t in self.tools() {
            if server.may(&access, kind, t.get("name").and_then(Value::as_str).unwrap_or("")) {
                visible.push(t);
            }
        }
        match crate::mcp::page(gw, "tools", visible.len(), r.cursor.as_ref()) {
            Ok((range, next)) => {
                let mut result = serde_json::Map::new();
                let mut page = Vec::with_capacity(range.len());
                for (i, t) in visible.into_iter().enumerate() {
                    if range.contains(&i) {
                        page.push(t);
                    }
                }
                result.insert("tools".into(), Value::Array(page));
                if let Some(next) = next {
                    result.insert("nextCursor".into(), Value::String(next));
                }
                jsonrpc::result(r.id.clone(), crate::mcp::complete("tools/list", Value::Object(result), r.revision))
            }
            Err(e) => e.reply(r.id.clone()),
        }
    }

    /// Records a fetch's outcome for proxied server `backend`; what the operator should read, if anything
    /// (once per failure, and once when it answers again).
    fn fetched(
        &self,
        gw: &Gateway,
        backend: usize,
        outcome: Result<Vec<Value>, String>,
        now_ms: u64,
    ) -> Option<String> {
        let mut state = self.state.borrow_mut();
        let held = held_mut(&mut state, backend);
        let name = &gw.servers[backend].name;
        match outcome {
            Ok(tools) => {
                held.tools = Some((now_ms, tools));
                std::mem::take(&mut held.down).then(|| format!("proxied server '{name}' lists its tools again"))
            }
            Err(why) => {
                held.tools = None;
                (!std::mem::replace(&mut held.down, true)).then(|| {
                    format!("proxied server '{name}' could not list its tools ({why}): virtual servers leave them out until it does")
                })
            }
        }
    }
}

/// What a virtual server's `tools/list` needs to answer.
#[derive(Debug)]
pub struct ListRequest {
    pub id: Value,
    /// The virtual server's index in [`Gateway::servers`].
    pub server: usize,
    pub cursor: Option<Value>,
    pub allowed: Option<Vec<String>>,
    /// Who asks: the server's `policy` shows it only the tools it may call.
    pub caller: crate::caller::Caller,
    pub revision: Revision,
}

/// A virtual server's request waiting on proxied servers.
#[derive(Debug)]
pub enum Job {
    /// A `tools/list` fan-out: per link, the tools read so far and the pages read.
    List { request: ListRequest, links: Vec<Option<(Link, Vec<Value>, usize)>>, remaining: usize },
    /// A `tools/call` of a proxied tool (`tool` on its server, `name` on the virtual server), who listens
    /// to the notifications the backend sends ahead of its answer, who calls (the guard services' `consumer`)
    /// and what it waits on.
    Call {
        id: Value,
        server: usize,
        tool: String,
        name: String,
        link: Link,
        listener: crate::notify::Listener,
        consumer: String,
        asking: Asking,
    },
}

/// What a proxied tool's call waits on: its backend, or a guard service ([`Checks`], by stage).
#[derive(Debug)]
pub enum Asking {
    Backend,
    /// A guard service about the arguments; then this first request goes to the backend.
    Input(u8, Box<UpstreamRequest>),
    /// A guard service about the result of this reply.
    Output(u8, Value),
}

/// What the exchange does next.
#[derive(Debug, PartialEq)]
pub enum Next {
    Reply(Value),
    /// Send these requests too, each answered by its index.
    Send(Vec<(usize, UpstreamRequest)>),
    /// Other answers are outstanding.
    Wait,
}

impl Job {
    /// A `tools/call` of proxied tool `r` on virtual server `server`, by `consumer`, at `now_ms`: the guard
    /// services' checks of its arguments first, if any. `signer`: the loopback key, for an SSE server.
    #[allow(clippy::too_many_arguments)]
    pub fn call(
        gw: &Gateway,
        server: usize,
        v: &Virtual,
        r: &Ref,
        id: Value,
        mut params: Map<String, Value>,
        listener: crate::notify::Listener,
        consumer: &str,
        signer: Option<&Key>,
        now_ms: u64,
    ) -> (Job, Next) {
        params.insert("name".into(), Value::from(r.tool.as_str()));
        let checks = Checks { via: Some((server, &r.name)), owner: r.owner, tool: &r.tool };
        let check = checks.next(gw, 0, Side::Input, consumer, params.get("arguments").unwrap_or(&Value::Null), None);
        let timeout = gw.servers[r.owner].proxy.as_ref().map_or(DEFAULT_TIMEOUT_MS, |b| b.timeout_ms);
        let via =
            v.via(gw, r.owner, signer, now_ms.saturating_add(timeout + crate::routed::ROUTER_GRACE_MS + SLACK_MS));
        // Through the bridge, the call outlasts the bridge's own deadline (the server's `timeout`), whose
        // answer says more than a timed-out call would.
        let timeout = if via.is_some() { timeout.saturating_add(crate::routed::ROUTER_GRACE_MS) } else { timeout };
        let params = Value::Object(params);
        let (link, first) = v.link(gw, r.owner, "tools/call", params, timeout, via);
        let (asking, send) = match check {
            Some((stage, request)) => (Asking::Input(stage, Box::new(first)), request),
            None => (Asking::Backend, first),
        };
        let (tool, name, consumer) = (r.tool.clone(), r.name.clone(), consumer.to_string());
        (Job::Call { id, server, tool, name, link, listener, consumer, asking }, Next::Send(vec![(0, send)]))
    }

    /// The id of the client's request the job answers.
    pub fn id(&self) -> Value {
        match self {
            Job::Call { id, .. } => id.clone(),
            Job::List { request, .. } => request.id.clone(),
        }
    }

    /// The notifications of a finished `tools/call` its client listens to (its log level, its progress
    /// token), to go ahead of the answer; the backend's other notifications are dropped.
    pub fn take_notes(&mut self) -> Vec<Value> {
        let Job::Call { link, listener, .. } = self else { return Vec::new() };
        let heard = |m: &Value| match m.get("method").and_then(Value::as_str) {
            Some("notifications/message") => {
                let level = crate::notify::LogLevel::from_json(m.pointer("/params/level"));
                matches!((level, listener.level), (Ok(l), Some(min)) if l >= min)
            }
            Some("notifications/progress") => {
                listener.progress_token.is_some()
                    && m.pointer("/params/progressToken") == listener.progress_token.as_ref()
            }
            _ => false,
        };
        let mut kept = Vec::new();
        for m in std::mem::take(&mut link.notes) {
            if heard(&m) {
                kept.push(m);
            }
        }
        kept
    }

    /// The answer to the request sent under `index`; warnings for the operator go to `warn`.
    pub fn on_answer(
        &mut self,
        gw: &Gateway,
        index: usize,
        result: UpstreamResult,
        now_ms: u64,
        warn: &mut Vec<String>,
    ) -> Next {
        match self {
            Job::Call { id, server, tool, name, link, consumer, asking, .. } => {
                let Some(v) = gw.servers[*server].composed.as_deref() else { return Next::Wait };
                let checks = Checks { via: Some((*server, name)), owner: link.backend, tool };
                match std::mem::replace(asking, Asking::Backend) {
                    Asking::Input(stage, first) => {
                        if let Err(e) = checks.verdict(gw, stage, Side::Input, &result) {
                            return Next::Reply(e.reply(id.clone()));
                        }
                        match checks.next(gw, stage + 1, Side::Input, consumer, link.arguments(), None) {
                            Some((stage, check)) => {
                                *asking = Asking::Input(stage, first);
                                Next::Send(vec![(0, check)])
                            }
                            None => Next::Send(vec![(0, *first)]),
                        }
                    }
                    Asking::Output(stage, reply) => {
                        if let Err(e) = checks.verdict(gw, stage, Side::Output, &result) {
                            return Next::Reply(e.reply(id.clone()));
                        }
                        output(gw, checks, stage + 1, consumer, link.arguments(), reply, asking)
                    }
                    Asking::Backend => match link.on_answer(gw, result) {
                        LinkStep::Send(r) => Next::Send(vec![(0, r)]),
                        LinkStep::Done(answer) => {
                            v.keep_session(link);
                            let reply = link::reply(id.clone(), answer, &gw.servers[link.backend].name);
                            // The proxied server's guardrails, then the virtual server's; then the guard services.
                            let reply = guarded(gw.servers[link.backend].guard.as_deref(), tool, reply);
                            let reply = guarded(gw.servers[*server].guard.as_deref(), name, reply);
                            output(gw, checks, 0, consumer, link.arguments(), reply, asking)
                        }
                    },
                }
            }
            Job::List { request, links, remaining } => {
                let Some(v) = gw.servers[request.server].composed.as_deref() else { return Next::Wait };
                let Some((link, tools, pages)) = links.get_mut(index).and_then(Option::as_mut) else {
                    return Next::Wait;
                };
                let outcome = match link.on_answer(gw, result) {
                    LinkStep::Send(r) => return Next::Send(vec![(index, r)]),
                    LinkStep::Done(Err(why)) => Err(why),
                    LinkStep::Done(Ok(answer)) => match answer.pointer("/result/tools").and_then(Value::as_array) {
                        None => Err(answer
                            .pointer("/error/message")
                            .and_then(Value::as_str)
                            .unwrap_or("no tools in its answer")
                            .to_string()),
                        Some(page) => {
                            tools.extend(page.iter().cloned());
                            match answer.pointer("/result/nextCursor").and_then(Value::as_str) {
                                Some(c) if !c.is_empty() && *pages < MAX_PAGES => {
                                    *pages += 1;
                                    return Next::Send(vec![(
                                        index,
                                        link.again(gw, crate::json::object(vec![("cursor", Value::from(c))])),
                                    )]);
                                }
                                _ => Ok(std::mem::take(tools)),
                            }
                        }
                    },
                };
                v.keep_session(link);
                warn.extend(v.fetched(gw, link.backend, outcome, now_ms));
                links[index] = None;
                *remaining -= 1;
                if *remaining > 0 {
                    return Next::Wait;
                }
                Next::Reply(v.render(gw, request))
            }
        }
    }
}

/// A proxied tool's reply through the guard services that check results, from `stage` on: the next
/// one's check (the reply held in `asking`), or the reply when none is left.
fn output(
    gw: &Gateway,
    checks: Checks<'_>,
    stage: u8,
    consumer: &str,
    args: &Value,
    reply: Value,
    asking: &mut Asking,
) -> Next {
    match reply.get("result").and_then(|r| checks.next(gw, stage, Side::Output, consumer, args, Some(r))) {
        Some((stage, check)) => {
            *asking = Asking::Output(stage, reply);
            Next::Send(vec![(0, check)])
        }
        None => Next::Reply(reply),
    }
}

/// A tool call's reply with its result filtered by `guard` (masking, size): its error when the result is
/// refused.
pub fn guarded(guard: Option<&crate::guard::Guard>, tool: &str, mut reply: Value) -> Value {
    let Some(g) = guard.filter(|g| g.filters_results(tool)) else { return reply };
    match reply.get_mut("result").map(|r| g.filter_result(tool, r)) {
        Some(Err(e)) => e.reply(reply.get_mut("id").map(Value::take).unwrap_or(Value::Null)),
        _ => reply,
    }
}

#[cfg(test)]
mod tests;
