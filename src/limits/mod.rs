//! Rate limits and quotas on tool calls: per server (every call of its tools) and per tool, counted for
//! all callers together (`per: all`) or for each consumer apart (`per: consumer`, the [`Caller`]'s).
//!
//! | limit       | counter                                          | scope `process`      | scope `cluster`          |
//! |-------------|--------------------------------------------------|----------------------|--------------------------|
//! | `rateLimits`| a token bucket: `burst` calls at once, refilled at `requests` per `window` | shared data, CAS ([`local`]) | Redis, one `EVAL` ([`redis`]) |
//! | `quotas`    | calls per UTC day or month, a key per period     | —                    | Redis (always)           |
//!
//! A call passes only if every limit that applies to it has room; it then costs one from each, and a call
//! refused by one limit costs nothing from the others. Limits are checked once the calls of a request are
//! known and before any of them goes upstream ([`Step::Limit`](crate::transport::Step)); process counters
//! complete at once, Redis ones with one round trip for the whole request. Only `tools/call`s that go
//! upstream are counted: a call refused earlier (unknown tool, bad arguments) costs nothing.
//!
//! When Redis does not answer within `sessions.redis.timeoutMs`, each limit does what its
//! `onStoreError` says: `allow` (the default, as Envoy's and Higress's rate limiters do: a limiter outage
//! must not become an outage of every tool) or `deny` (503).

pub mod bucket;
pub mod local;
pub mod redis;

use crate::caller::Caller;
use crate::config::ConfigError;
use crate::error::GatewayError;
use crate::fields::{FieldError, Fields};
use crate::session::Env;
use bucket::{Period, Rate};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// Whose calls one counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// Every caller's together.
    All,
    /// Each consumer's apart (anonymous callers share one counter, `-`).
    Consumer,
}

/// Where a counter lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This Envoy process's shared data: all its workers, not other replicas.
    Process,
    /// Redis, through Higress's host: every replica on that Redis.
    Cluster,
}

/// What a counter in Redis does when Redis does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnStoreError {
    Allow,
    Deny,
}

/// What a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rate(Rate),
    Quota { requests: u64, period: Period },
}

/// One configured limit, compiled.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub kind: Kind,
    pub per: Per,
    pub scope: Scope,
    pub on_store_error: OnStoreError,
    /// Where it is configured (`rateLimits[0]`), for messages.
    field: String,
    /// The part of its counters' keys that changes when the limit does, so a changed limit starts afresh.
    spec: String,
    /// What it allows, for people (`5 calls per 2s, bursts of 10`): written at load, read in refusals.
    rule: String,
    /// The refusal's wording without the caller, written once its server and tool are known
    /// ([`ServerLimits::compile`]), so that a call that passes writes none of it.
    about: About,
    /// The whole key of a counter that is the same for every call (a `per: all` rate limit), written at
    /// load: such a call builds no key.
    fixed: Option<Arc<str>>,
}

/// The limits of one server: its own (every tool call) and each tool's; a virtual server's calls count
/// against their tools' own servers' limits too ([`ServerLimits::through`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerLimits {
    server: Vec<Limit>,
    tools: HashMap<String, Vec<Limit>>,
    /// By a virtual server's tool name: the limits of the tool's own server that apply to it.
    via: HashMap<String, Via>,
    /// This worker's last writes of the process counters ([`local::Written`]).
    written: local::Written,
}

/// The limits a virtual server's tool takes from its own server: that server's (`false`) and the tool's
/// (`true`), counted under the server's name and the tool's name there.
#[derive(Debug, Clone, Default, PartialEq)]
struct Via {
    server: String,
    tool: String,
    limits: Vec<(Limit, bool)>,
}

/// One counter a call must pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// The counter's key: in shared data for process counters ([`local::PREFIX`] included), after
    /// Redis's `{keyPrefix}limit:` for cluster ones.
    pub key: Key,
    pub kind: BucketKind,
    pub scope: Scope,
    pub on_store_error: OnStoreError,
    /// Names the limit for the caller (server, tool, rate, consumer, config field): see [`Bucket::describe`].
    pub about: About,
}

/// A counter's key: written at load (shared by every call) or for this call (per consumer, per period).
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    Fixed(Arc<str>),
    Built(String),
}

impl Key {
    pub fn as_str(&self) -> &str {
        match self {
            Key::Fixed(k) => k,
            Key::Built(k) => k,
        }
    }
}

#[cfg(test)]
impl PartialEq<&str> for Key {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What a limit allows and whose calls it counts, for refusals: the wording is put together only when a
/// call is refused (it was written for every call before).
#[derive(Debug, Clone, PartialEq)]
pub struct About {
    /// `tool 'x' of server 'y' allows 5 calls per 2s`.
    said: Arc<str>,
    /// The config field, `rateLimits[0]`.
    field: Arc<str>,
    /// `None` for a `per: all` limit; the caller's consumer (`Some(None)`: anonymous) for `per: consumer`.
    consumer: Option<Option<String>>,
}

impl About {
    /// A wording given whole (tests, and limits known only by name).
    pub fn text(said: &str, field: &str) -> About {
        About { said: said.into(), field: field.into(), consumer: None }
    }
}

/// What a counter is, at the time of the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketKind {
    Rate(Rate),
    /// A quota's counter for the current period, which ends (and the key expires) at `until_ms`.
    Quota {
        requests: u64,
        until_ms: u64,
    },
}

/// The calls of one request to check: each call's index in the exchange and its tool. The caller is
/// the exchange's, lent to [`start`] (a copy per call cost more than the check of a process counter).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitOp {
    pub server: usize,
    pub calls: Vec<(usize, String)>,
}

/// The verdict on each call checked, by the index it was given with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LimitOutcome {
    pub refused: Vec<(usize, GatewayError)>,
    /// Redis failed and the limits said what to do: for the operator's log.
    pub store_error: Option<String>,
}

/// How a check proceeds.
#[derive(Debug)]
pub enum Started {
    Done(LimitOutcome),
    /// Send `pending.command` to Redis, then finish with [`redis::finish`].
    Redis(redis::Pending),
}

impl ServerLimits {
    /// Where the first of the server's own limits that counts in Redis is configured (`rateLimits[0]`), if
    /// any: what a server that cannot wait on Redis refuses at load.
    pub fn in_redis(&self) -> Option<&str> {
        self.server.iter().find(|l| l.scope == Scope::Cluster).map(|l| l.field.as_str())
    }

    /// Reads a server's `rateLimits`/`quotas` and each tool's. `redis`: a Redis is configured
    /// (`sessions.redis`), which `scope: cluster` limits and quotas need.
    pub fn compile(server: &crate::config::ServerConfig, redis: bool) -> Result<ServerLimits, ConfigError> {
        let at_server = |(f, m): FieldError| ConfigError::new(f, m).in_server(&server.name);
        let mut own = read(server.rate_limits.as_ref(), server.quotas.as_ref(), redis).map_err(at_server)?;
        for l in &mut own {
            l.name(&server.name, None);
        }
        let mut tools = HashMap::new();
        for t in &server.tools {
            let mut limits = read(t.rate_limits.as_ref(), t.quotas.as_ref(), redis)
                .map_err(|(f, m)| ConfigError::new(f, m).in_server(&server.name).in_tool(&t.name))?;
            for l in &mut limits {
                l.name(&server.name, Some(&t.name));
            }
            if !limits.is_empty() {
                tools.insert(t.name.clone(), limits);
            }
        }
        Ok(ServerLimits { server: own, tools, via: HashMap::new(), written: local::Written::default() })
    }

    /// Whether any limit applies to any call of this server.
    pub fn is_empty(&self) -> bool {
        self.server.is_empty() && self.tools.is_empty() && self.via.is_empty()
    }

    /// Whether a call of `tool` is limited.
    pub fn applies(&self, tool: &str) -> bool {
        !self.server.is_empty() || self.tools.contains_key(tool) || self.via.contains_key(tool)
    }

    /// A virtual server's tool `name` is tool `tool` of server `owner`, whose `limits` count its calls
    /// too, on the same counters as that server's own calls.
    pub fn through(&mut self, name: &str, owner: &str, tool: &str, limits: &ServerLimits) {
        let own = limits.server.iter().map(|l| (l.clone(), false));
        let tools = limits.tools.get(tool).into_iter().flatten().map(|l| (l.clone(), true));
        let limits: Vec<(Limit, bool)> = own.chain(tools).collect();
        if !limits.is_empty() {
            self.via.insert(name.to_string(), Via { server: owner.to_string(), tool: tool.to_string(), limits });
        }
    }

    /// Where the first limit counted in Redis is configured (`tool 'x' field 'quotas[0]'`), if any: a
    /// build without Redis refuses the configuration naming it.
    pub fn first_in_redis(&self) -> Option<String> {
        let own = self.server.iter().find(|l| l.scope == Scope::Cluster).map(|l| format!("field '{}'", l.field));
        own.or_else(|| {
            let mut names: Vec<&String> = self.tools.keys().collect();
            crate::sort::sort(&mut names);
            names.into_iter().find_map(|name| {
                let l = self.tools[name].iter().find(|l| l.scope == Scope::Cluster)?;
                Some(format!("tool '{name}' field '{}'", l.field))
            })
        })
    }

    /// The process counters whose keys are known before traffic (`per: all`), for [`local::prepare`].
    pub fn known_process_buckets(&self, server: &str) -> Vec<Bucket> {
        let anonymous = Caller::anonymous();
        let own = self.server.iter().map(|l| (l, None));
        let tools = self.tools.iter().flat_map(|(t, ls)| ls.iter().map(move |l| (l, Some(t.as_str()))));
        own.chain(tools)
            .filter(|(l, _)| l.scope == Scope::Process && l.per == Per::All)
            .map(|(l, t)| l.bucket(server, t, &anonymous, 0))
            .collect()
    }

    /// The counters a call of `tool` by `caller` must pass at `now_ms`: the server's, then the tool's
    /// (then, for a virtual server's tool, those of the tool's own server).
    pub fn plan(&self, server: &str, tool: &str, caller: &Caller, now_ms: u64) -> Vec<Bucket> {
        let own = self.server.iter().map(|l| (l, None));
        let tool_limits = self.tools.get(tool).into_iter().flatten().map(|l| (l, Some(tool)));
        let mut plan: Vec<Bucket> = own.chain(tool_limits).map(|(l, t)| l.bucket(server, t, caller, now_ms)).collect();
        if let Some(via) = self.via.get(tool) {
            for (l, per_tool) in &via.limits {
                plan.push(l.bucket(&via.server, per_tool.then_some(via.tool.as_str()), caller, now_ms));
            }
        }
        plan
    }
}

impl Limit {
    /// Writes what does not change from call to call once the limit's server and tool are known: the
    /// refusal's wording and, for a `per: all` rate limit, its counter's whole key.
    fn name(&mut self, server: &str, tool: Option<&str>) {
        let said = match tool {
            Some(t) => format!("tool '{t}' of server '{server}' allows {}", self.rule),
            None => format!("server '{server}' allows {}", self.rule),
        };
        self.about = About { said: said.into(), field: self.field.as_str().into(), consumer: None };
        if let (Per::All, Kind::Rate(_)) = (self.per, self.kind) {
            let mut key = self.key_head(server, tool);
            key.push('*');
            self.fixed = Some(key.into());
        }
    }

    /// `{prefix}{server}/{tool|*}/{spec}/`: the start of every key of this limit's counters (the prefix
    /// of shared data for process counters; Redis's is added by [`redis`]).
    fn key_head(&self, server: &str, tool: Option<&str>) -> String {
        let prefix = if self.scope == Scope::Process { local::PREFIX } else { "" };
        let tool = tool.unwrap_or("*");
        let mut key = String::with_capacity(prefix.len() + server.len() + tool.len() + self.spec.len() + 24);
        for part in [prefix, server, "/", tool, "/", &self.spec, "/"] {
            key.push_str(part);
        }
        key
    }

    /// The counter a call must pass. A `per: all` rate limit's key and every limit's wording were written
    /// at load: such a call allocates nothing here.
    fn bucket(&self, server: &str, tool: Option<&str>, caller: &Caller, now_ms: u64) -> Bucket {
        let (kind, period) = match self.kind {
            Kind::Rate(rate) => (BucketKind::Rate(rate), None),
            Kind::Quota { requests, period } => {
                let (name, until_ms) = period.at(now_ms);
                (BucketKind::Quota { requests, until_ms }, Some(name))
            }
        };
        let key = match &self.fixed {
            Some(k) => Key::Fixed(k.clone()),
            None => {
                let mut key = self.key_head(server, tool);
                match self.per {
                    Per::All => key.push('*'),
                    Per::Consumer => push_key_part(&mut key, caller.label()),
                }
                if let Some(name) = period {
                    key.push('/');
                    key.push_str(&name);
                }
                Key::Built(key)
            }
        };
        let mut about = self.about.clone();
        if self.per == Per::Consumer {
            about.consumer = Some(caller.consumer.clone());
        }
        Bucket { key, kind, scope: self.scope, on_store_error: self.on_store_error, about }
    }
}

impl Bucket {
    /// The refusal of a call that this counter has no room for, for `wait_ms` more.
    pub fn refusal(&self, wait_ms: u64) -> GatewayError {
        let secs = bucket::retry_secs(wait_ms);
        let what = if matches!(self.kind, BucketKind::Quota { .. }) { "quota" } else { "rate limit" };
        GatewayError::RateLimited {
            message: format!("{what} exceeded: {}; retry in {secs} s", self.describe()),
            retry_after_secs: secs,
        }
    }

    /// The limit for people: `tool 'x' of server 'y' allows 5 calls per 2s for consumer 'c' (rateLimits[0])`.
    pub fn describe(&self) -> String {
        let a = &self.about;
        let who = match &a.consumer {
            None => String::new(),
            Some(Some(c)) => format!(" for consumer '{c}'"),
            Some(None) => " for anonymous callers".into(),
        };
        format!("{}{who} ({})", a.said, a.field)
    }
}

/// A consumer's name in a key: `/`, `%`, `:` and anything unprintable percent-encoded, so no name can
/// reach into another counter's key.
fn push_key_part(out: &mut String, name: &str) {
    for c in name.chars() {
        if c.is_ascii_graphic() && !matches!(c, '/' | '%' | ':') {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = std::fmt::Write::write_fmt(out, format_args!("%{b:02X}"));
            }
        }
    }
}

/// A window for people: `2s`, `1m`, `1500ms`.
fn show_ms(ms: u64) -> String {
    for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)] {
        if ms % size == 0 {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

/// The longest window and the most requests a limit may name.
const MAX_WINDOW_MS: u64 = 31 * 86_400_000;
const MAX_REQUESTS: u64 = 1_000_000_000;

fn read(rate_limits: Option<&Value>, quotas: Option<&Value>, redis: bool) -> Result<Vec<Limit>, FieldError> {
    let mut out = Vec::new();
    for (field, value) in [("rateLimits", rate_limits), ("quotas", quotas)] {
        let items = match value {
            None | Some(Value::Null) => continue,
            Some(Value::Array(items)) => items,
            Some(_) => return Err((field.into(), "must be a list".into())),
        };
        for (i, item) in items.iter().enumerate() {
            let at = format!("{field}[{i}]");
            let limit = if field == "quotas" { read_quota(item, &at, redis)? } else { read_rate(item, &at, redis)? };
            out.push(limit);
        }
    }
    Ok(out)
}

fn requests(f: &mut Fields<'_>, key: &'static str) -> Result<u64, FieldError> {
    let n = f.unsigned(key);
    f.check()?;
    match n {
        None => Err((f.path(key), "is required: how many calls the limit allows".into())),
        Some(n) if (1..=MAX_REQUESTS).contains(&n) => Ok(n),
        Some(_) => Err((f.path(key), format!("must be between 1 and {MAX_REQUESTS}"))),
    }
}

fn per(f: &mut Fields<'_>) -> Result<Per, FieldError> {
    let per = f.string("per");
    f.check()?;
    match per.as_deref() {
        None | Some("all") => Ok(Per::All),
        Some("consumer") => Ok(Per::Consumer),
        Some(other) => Err((f.path("per"), format!("'{other}' is not one of all, consumer"))),
    }
}

fn on_store_error(f: &mut Fields<'_>, scope: Scope) -> Result<OnStoreError, FieldError> {
    let choice = f.string("onStoreError");
    f.check()?;
    let choice = match choice.as_deref() {
        None => return Ok(OnStoreError::Allow),
        Some("allow") => OnStoreError::Allow,
        Some("deny") => OnStoreError::Deny,
        Some(other) => return Err((f.path("onStoreError"), format!("'{other}' is not one of allow, deny"))),
    };
    if scope == Scope::Process {
        return Err((f.path("onStoreError"), "only limits in Redis (scope: cluster) can fail to be read".into()));
    }
    Ok(choice)
}

fn needs_redis(f: &Fields<'_>, key: &str, redis: bool) -> Result<(), FieldError> {
    if redis {
        return Ok(());
    }
    Err((
        f.path(key),
        "counts in Redis, and no Redis is configured: add a sessions.redis block (the Higress build's Redis; \
         vanilla Envoy has none), or use scope: process for a limit per Envoy process"
            .into(),
    ))
}

fn read_rate(v: &Value, at: &str, redis: bool) -> Result<Limit, FieldError> {
    let mut f = Fields::of(v, at)?;
    let requests = requests(&mut f, "requests")?;
    let window_ms = match f.value("window") {
        None => return Err((f.path("window"), "is required: a duration such as 1s, 1m, 1h (or seconds)".into())),
        Some(w) => duration_ms(w).ok_or_else(|| {
            (f.path("window"), "must be a duration such as 500ms, 10s, 1m, 1h, 1d, or a number of seconds".into())
        })?,
    };
    if !(1..=MAX_WINDOW_MS).contains(&window_ms) {
        return Err((f.path("window"), "must be between 1ms and 31d".into()));
    }
    let burst = f.unsigned("burst");
    f.check()?;
    let capacity = match burst {
        None => requests,
        Some(n) if (1..=MAX_REQUESTS).contains(&n) => n,
        Some(_) => return Err((f.path("burst"), format!("must be between 1 and {MAX_REQUESTS}"))),
    };
    let per = per(&mut f)?;
    let scope = f.string("scope");
    f.check()?;
    let scope = match scope.as_deref() {
        None | Some("process") => Scope::Process,
        Some("cluster") => {
            needs_redis(&f, "scope", redis)?;
            Scope::Cluster
        }
        Some(other) => return Err((f.path("scope"), format!("'{other}' is not one of process, cluster"))),
    };
    let on_store_error = on_store_error(&mut f, scope)?;
    f.finish()?;
    let rate = Rate { requests, window_ms, capacity };
    let spec = format!("r{requests}w{window_ms}b{capacity}");
    let burst = if capacity == requests { String::new() } else { format!(", bursts of {capacity}") };
    let rule = format!("{requests} calls per {}{burst}", show_ms(window_ms));
    Ok(Limit::new(Kind::Rate(rate), per, scope, on_store_error, at, spec, rule))
}

fn read_quota(v: &Value, at: &str, redis: bool) -> Result<Limit, FieldError> {
    let mut f = Fields::of(v, at)?;
    let requests = requests(&mut f, "requests")?;
    let period = f.string("period");
    f.check()?;
    let period = match period.as_deref() {
        Some("day") => Period::Day,
        Some("month") => Period::Month,
        None => return Err((f.path("period"), "is required: day or month".into())),
        Some(other) => return Err((f.path("period"), format!("'{other}' is not one of day, month"))),
    };
    let per = per(&mut f)?;
    needs_redis(&f, "period", redis)?;
    let on_store_error = on_store_error(&mut f, Scope::Cluster)?;
    f.finish()?;
    let spec = format!("q{requests}{}", if period == Period::Day { "d" } else { "m" });
    let rule = format!("{requests} calls per {}", if period == Period::Day { "day (UTC)" } else { "month (UTC)" });
    Ok(Limit::new(Kind::Quota { requests, period }, per, Scope::Cluster, on_store_error, at, spec, rule))
}

impl Limit {
    /// A limit as read at `at`; its refusal's wording and fixed key are written once its server is known.
    fn new(
        kind: Kind,
        per: Per,
        scope: Scope,
        on_store_error: OnStoreError,
        at: &str,
        spec: String,
        rule: String,
    ) -> Self {
        Limit {
            kind,
            per,
            scope,
            on_store_error,
            field: at.to_string(),
            spec,
            rule,
            about: About::text("", at),
            fixed: None,
        }
    }
}

/// Whether a server's configuration asks for Redis (a limit with `scope: cluster`, or a quota), before
/// it is validated: the `sessions.redis` block is then wanted whatever the session store.
pub fn mentions_redis(server: &crate::config::ServerConfig) -> bool {
    let asks = |rate: &Option<Value>, quotas: &Option<Value>| {
        let cluster = |l: &Value| l.get("scope").and_then(Value::as_str) == Some("cluster");
        rate.as_ref().and_then(Value::as_array).is_some_and(|ls| ls.iter().any(cluster))
            || quotas.as_ref().and_then(Value::as_array).is_some_and(|qs| !qs.is_empty())
    };
    asks(&server.rate_limits, &server.quotas) || server.tools.iter().any(|t| asks(&t.rate_limits, &t.quotas))
}

/// `500ms`, `10s`, `1m`, `1h`, `1d`, or a number of seconds.
fn duration_ms(v: &Value) -> Option<u64> {
    if let Some(secs) = v.as_u64() {
        return secs.checked_mul(1000);
    }
    let text = v.as_str()?.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let size = match unit.trim() {
        "" | "s" => 1000,
        "ms" => 1,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(size)
}

/// Checks the calls of `op` at the host's clock: the process counters now, then (if any call needs them)
/// the Redis ones in one command.
pub fn start(
    limits: &ServerLimits,
    server: &str,
    caller: &Caller,
    op: &LimitOp,
    env: &mut dyn Env,
    store: Option<&crate::session::redis::RedisStore>,
) -> Started {
    let now = env.now_ms();
    let mut outcome = LimitOutcome::default();
    let mut remote = Vec::new();
    for (index, tool) in &op.calls {
        let buckets = limits.plan(server, tool, caller, now);
        // Split only when some counter is in Redis (the plan, taken whole, allocates nothing more).
        let (here, there): (Vec<Bucket>, Vec<Bucket>) = if buckets.iter().all(|b| b.scope == Scope::Process) {
            (buckets, Vec::new())
        } else {
            buckets.into_iter().partition(|b| b.scope == Scope::Process)
        };
        match local::take(env.kv(), &here, now, &limits.written) {
            Err(refusal) => outcome.refused.push((*index, refusal)),
            Ok(()) if there.is_empty() => {}
            Ok(()) => remote.push(redis::Check { index: *index, local: here, buckets: there }),
        }
    }
    match (remote.is_empty(), store) {
        (true, _) => Started::Done(outcome),
        (false, Some(store)) => Started::Redis(redis::Pending::new(store, remote, outcome)),
        // Refused at load; kept safe anyway.
        (false, None) => Started::Done(redis::store_failed(env, remote, outcome, "no Redis is configured")),
    }
}

#[cfg(test)]
mod tests;
