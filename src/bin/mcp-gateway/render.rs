//! `mcp-gateway render`: a dry run of one tool call. The call goes through the plugin's own path
//! ([`mcp::handle`] then, given an answer, [`mcp::finish_call`]: what the transport runs for every
//! `tools/call`), so the upstream request printed is the one the gateway would send, and an error is the
//! one a client would get. Nothing is sent anywhere.

use crate::Failure;
use mcp_gateway::gateway::{Gateway, Server};
use mcp_gateway::jsonrpc::Message;
use mcp_gateway::mcp::{self, Handled, Revision};
use mcp_gateway::upstream::{UpstreamRequest, UpstreamResult};
use serde_json::{json, Value};

struct RenderArgs {
    config: String,
    tool: String,
    server: Option<String>,
    args: Value,
    response: Option<String>,
    status: u16,
    response_headers: Vec<(String, String)>,
    /// Print credentials as sent instead of `<redacted>`.
    show_credentials: bool,
}

fn parse(args: &[String]) -> Result<RenderArgs, Failure> {
    let mut out = RenderArgs {
        config: String::new(),
        tool: String::new(),
        server: None,
        args: json!({}),
        response: None,
        status: 200,
        response_headers: Vec::new(),
        show_credentials: false,
    };
    let mut status = None;
    let mut flags = crate::Flags::new(args);
    while let Some((flag, arg)) = flags.next_flag() {
        let mut value = || flags.value(flag);
        match flag {
            "--tool" => out.tool = value()?,
            "--server" => out.server = Some(value()?),
            "--args" => {
                let text = value()?;
                out.args = serde_json::from_str(&text)
                    .map_err(|e| Failure::Usage(format!("--args: not JSON ({e}): {text}")))?;
            }
            "--response" => out.response = Some(value()?),
            "--show-credentials" => out.show_credentials = true,
            "--status" => {
                let v = value()?;
                status = Some(
                    v.parse::<u16>()
                        .ok()
                        .filter(|s| (100..600).contains(s))
                        .ok_or_else(|| Failure::Usage(format!("--status: '{v}' is not an HTTP status")))?,
                );
            }
            "--response-header" => {
                let v = value()?;
                let (k, val) = v
                    .split_once(':')
                    .ok_or_else(|| Failure::Usage(format!("--response-header: '{v}' is not NAME:VALUE")))?;
                out.response_headers.push((k.trim().to_ascii_lowercase(), val.trim().to_string()));
            }
            f if f.starts_with('-') && f != "-" => return Err(Failure::Usage(format!("unknown option {f}"))),
            _ if out.config.is_empty() => out.config = arg.to_string(),
            _ => return Err(Failure::Usage(format!("unexpected argument {arg}"))),
        }
    }
    if out.config.is_empty() {
        return Err(Failure::Usage("render needs the plugin config's path (or -)".into()));
    }
    if out.tool.is_empty() {
        return Err(Failure::Usage("render needs --tool NAME".into()));
    }
    if out.response.is_none() && (status.is_some() || !out.response_headers.is_empty()) {
        return Err(Failure::Usage("--status and --response-header describe an answer: give --response FILE".into()));
    }
    out.status = status.unwrap_or(200);
    Ok(out)
}

/// Runs `render`: prints the upstream request, then the tool result if an answer was given (or the result
/// the gateway gives without an upstream: a template-only tool, invalid arguments).
pub fn run(args: &[String]) -> Result<(), Failure> {
    let a = parse(args)?;
    let text = crate::read_input(&a.config)?;
    let rules = Gateway::rules_from_config_str(&text).map_err(|e| Failure::Invalid(format!("{}: {e}", a.config)))?;
    let (gw, server) = pick(rules.all(), &a)?;
    let call = Message::Request {
        id: json!(1),
        method: "tools/call".into(),
        params: Some(json!({"name": a.tool, "arguments": a.args})),
    };
    let revision = Revision::LATEST_LEGACY;
    match mcp::handle(gw, server, call, revision) {
        Handled::Reply(reply) => print_reply(&reply),
        Handled::Result { id, result } => print_reply(&mcp_gateway::jsonrpc::result(id, result)),
        Handled::Text(text) => print_reply(&mcp_gateway::jsonrpc::Reply::Text(text).into_value()),
        Handled::Silent => Err(Failure::Invalid("the call got no reply".into())),
        Handled::Call { id, call, request, args } => {
            let shown = describe(&request);
            if a.show_credentials {
                print!("{shown}");
            } else {
                print!("{}", redact(&shown, &secrets(&text)));
            }
            let Some(path) = &a.response else {
                return Ok(());
            };
            let body = std::fs::read(path).map_err(|e| Failure::Invalid(format!("{path}: {e}")))?;
            let outcome = UpstreamResult::Response { status: a.status, headers: a.response_headers, body };
            println!("\n--- result (answer: HTTP {} from {path})", a.status);
            print_reply(&mcp::finish_call(gw, server, id, &call, &args, outcome, revision).into_value())
        }
    }
}

/// The server that serves the tool: `--server`, else the one server (of every per-route configuration)
/// that has a tool of that name.
fn pick<'a>(gateways: impl Iterator<Item = &'a Gateway>, a: &RenderArgs) -> Result<(&'a Gateway, &'a Server), Failure> {
    let mut found = Vec::new();
    let mut names = Vec::new();
    let mut all = Vec::new();
    for gw in gateways {
        for s in &gw.servers {
            names.push(s.name.clone());
            all.push((gw, s));
            let named = a.server.as_deref().is_none_or(|n| n == s.name);
            if named && (a.server.is_some() || s.tool(&a.tool).is_some()) {
                found.push((gw, s));
            }
        }
    }
    match (found.len(), &a.server) {
        (1, _) => Ok(found[0]),
        (0, Some(name)) => Err(Failure::Invalid(format!("no server '{name}' (the config has: {})", names.join(", ")))),
        // One server: the gateway's own answer (`Unknown tool: NAME`).
        (0, None) if all.len() == 1 => Ok(all[0]),
        (0, None) => Err(Failure::Invalid(format!("Unknown tool: {} (in every server: {})", a.tool, names.join(", ")))),
        // Several per-route configurations may serve a server of the same name: the first is shown, as the
        // first rule that matches wins.
        (_, Some(_)) => Ok(found[0]),
        (_, None) => {
            let servers: Vec<&str> = found.iter().map(|(_, s)| s.name.as_str()).collect();
            Err(Failure::Usage(format!(
                "several servers have a tool '{}': give --server ({})",
                a.tool,
                servers.join(", ")
            )))
        }
    }
}

/// The request as it would go out: how it is sent, the request line, headers and body.
fn describe(r: &UpstreamRequest) -> String {
    let how = match r.dispatch {
        mcp_gateway::upstream::Dispatch::Call => {
            format!("# sent to Envoy cluster '{}' (upstream.dispatch: call), timeout {} ms\n", r.cluster, r.timeout_ms)
        }
        mcp_gateway::upstream::Dispatch::Route => format!(
            "# sent through the MCP request's own route (upstream.dispatch: route), timeout {} ms\n",
            r.timeout_ms
        ),
    };
    let mut out = how;
    out.push_str(&format!("{} {} HTTP/1.1\n", r.method, r.path));
    let authority = if r.authority.is_empty() { &r.cluster } else { &r.authority };
    if !authority.is_empty() {
        out.push_str(&format!("host: {authority}\n"));
    }
    for (k, v) in &r.headers {
        out.push_str(&format!("{k}: {v}\n"));
    }
    if let Some(body) = &r.body {
        out.push('\n');
        out.push_str(&String::from_utf8_lossy(body));
        if !body.ends_with(b"\n") {
            out.push('\n');
        }
    }
    out
}

/// Names of `config` entries that hold secrets by the usual naming (`apiKey`, `token`, `clientSecret`...):
/// their values are hidden from the printed request, as security schemes' credentials are.
const SECRET_NAMES: [&str; 6] = ["key", "token", "secret", "password", "credential", "auth"];

/// Headers whose values are credentials whatever put them there.
const CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// The configured secrets a printed request may carry: security schemes' credentials and `config` values
/// named like secrets, each also as sent (base64 for basic, percent-encoded in a query).
fn secrets(config_text: &str) -> Vec<String> {
    fn walk(v: &Value, in_config: bool, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let named = SECRET_NAMES.iter().any(|n| k.to_ascii_lowercase().contains(n));
                    match v {
                        Value::String(s) if (k == "defaultCredential" || k == "credential" || (in_config && named)) => {
                            out.push(s.clone())
                        }
                        _ => walk(v, in_config || k == "config", out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, in_config, out)),
            _ => {}
        }
    }
    let mut raw = Vec::new();
    if let Ok(doc) = mcp_gateway::config::parse_document(config_text) {
        walk(&doc, false, &mut raw);
    }
    let mut all = Vec::new();
    for s in raw.into_iter().filter(|s| s.len() >= 3) {
        all.push(mcp_gateway::b64::STANDARD.encode(&s));
        all.push(percent_encoding::utf8_percent_encode(&s, percent_encoding::NON_ALPHANUMERIC).to_string());
        all.push(s);
    }
    // Longest first, so that a secret inside another is not half-replaced.
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    all.dedup();
    all
}

/// The printed request with credentials replaced by `<redacted>`: the values of credential headers, and
/// every configured secret wherever it appears (a header, the query, the body).
fn redact(shown: &str, secrets: &[String]) -> String {
    let mut lines: Vec<String> = Vec::new();
    for line in shown.split_inclusive('\n') {
        match line.split_once(": ") {
            Some((name, _)) if CREDENTIAL_HEADERS.contains(&name) => lines.push(format!("{name}: <redacted>\n")),
            _ => lines.push(line.to_string()),
        }
    }
    let mut out = lines.concat();
    for s in secrets {
        out = out.replace(s.as_str(), "<redacted>");
    }
    out
}

/// Prints a JSON-RPC reply: its result, or its error (then the command fails, as the call would).
fn print_reply(reply: &Value) -> Result<(), Failure> {
    if let Some(e) = reply.get("error") {
        return Err(Failure::Invalid(format!(
            "the gateway would answer with JSON-RPC error {}: {}",
            e["code"],
            e["message"].as_str().unwrap_or_default()
        )));
    }
    let result = &reply["result"];
    println!("{}", serde_json::to_string_pretty(result).unwrap_or_default());
    if result["isError"] == json!(true) {
        return Err(Failure::Invalid("the tool result is an error (isError: true)".into()));
    }
    Ok(())
}
