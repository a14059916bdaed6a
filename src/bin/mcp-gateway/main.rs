//! `mcp-gateway`: the plugin's companion CLI. `openapi` turns an OpenAPI/Swagger document into a plugin
//! config server (or, with `--check`, only reports what would convert); `check` validates a plugin config
//! exactly as the plugin's `on_configure` does; `render` is a dry run of one tool call.

mod render;
mod yaml;

use mcp_gateway::gateway::Gateway;
use mcp_gateway::openapi::{self, Conversion, Options};
use serde_json::{json, Map, Value};
use std::io::Read;
use std::process::ExitCode;

const USAGE: &str = "\
usage:
  mcp-gateway openapi <document.{yaml,yml,json}|-> [options]
      --name NAME           server name (default: the document's info.title, sanitised)
      --cluster CLUSTER     Envoy cluster serving the API (default: the host of the server URL)
      --server-url URL      use this base URL instead of servers[0] (Swagger: schemes/host/basePath)
      --tool-prefix P       put P before every tool name
      --no-output-schemas   leave out every outputSchema (most of a large API's size; answers stay text)
      --inline-schemas      write every tool's schemas whole (default: models repeated across tools are
                            written once, in the server's schemaDefs; tools/list shows them inlined)
      --output-schema-depth N   expand N $refs inside one another in an outputSchema (default 3)
      --include-tag T, --include-op ID, --include-path GLOB   convert only matching operations (repeatable)
      --exclude-tag T, --exclude-op ID, --exclude-path GLOB   leave matching operations out (repeatable)
      -o, --output FILE     write the plugin config to FILE (JSON if it ends in .json, else YAML)
      --check               validate and print a summary only
      $refs to other files are read from the document's folder (never from the network)
  mcp-gateway check <plugin-config.{yaml,json}|->
      validate a plugin config as the plugin does at load
  mcp-gateway render <plugin-config.{yaml,json}|-> --tool NAME [options]
      print the upstream request a tools/call would send (nothing is sent), and given an answer the result
      --server NAME         the server (default: the one server with that tool)
      --args JSON           the call's arguments (default {})
      --response FILE       an upstream answer's body: print the tool result the gateway would make of it
      --status N            the answer's HTTP status (default 200)
      --response-header NAME:VALUE   an answer header, e.g. content-type (repeatable)
      --show-credentials    print credentials as sent (by default, security schemes' credentials, config
                            values named like secrets and Authorization/Cookie values print as <redacted>)

exit status: 0 ok, 1 invalid document or config, 2 usage error";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("openapi") => run_openapi(&args[1..]),
        Some("check") => run_check(&args[1..]),
        Some("render") => render::run(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => Err(Failure::Usage("expected a command: openapi, check or render".into())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("mcp-gateway: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Invalid(msg)) => {
            eprintln!("mcp-gateway: {msg}");
            ExitCode::from(1)
        }
    }
}

pub(crate) enum Failure {
    Usage(String),
    Invalid(String),
}

pub(crate) fn read_input(path: &str) -> Result<String, Failure> {
    if path == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| Failure::Invalid(format!("reading stdin: {e}")))?;
        return Ok(text);
    }
    std::fs::read_to_string(path).map_err(|e| Failure::Invalid(format!("{path}: {e}")))
}

struct OpenApiArgs {
    input: String,
    name: Option<String>,
    cluster: Option<String>,
    output: Option<String>,
    check: bool,
    options: Options,
}

/// Command-line options as every subcommand reads them: `--flag VALUE`, `--flag=VALUE`, bare switches and
/// positional arguments, in any order.
pub(crate) struct Flags<'a> {
    rest: std::slice::Iter<'a, String>,
    inline: Option<&'a str>,
}

impl<'a> Flags<'a> {
    pub(crate) fn new(args: &'a [String]) -> Flags<'a> {
        Flags { rest: args.iter(), inline: None }
    }

    /// The next flag (without an `=VALUE` it carried) and the argument as given.
    pub(crate) fn next_flag(&mut self) -> Option<(&'a str, &'a str)> {
        let arg = self.rest.next()?;
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v)),
            _ => (arg.as_str(), None),
        };
        self.inline = inline;
        Some((flag, arg.as_str()))
    }

    /// The value of `flag`: its `=VALUE`, else the next argument.
    pub(crate) fn value(&mut self, flag: &str) -> Result<String, Failure> {
        self.inline
            .take()
            .or_else(|| self.rest.next().map(String::as_str))
            .map(str::to_string)
            .ok_or_else(|| Failure::Usage(format!("{flag} needs a value")))
    }
}

fn parse_openapi_args(args: &[String]) -> Result<OpenApiArgs, Failure> {
    let mut out = OpenApiArgs {
        input: String::new(),
        name: None,
        cluster: None,
        output: None,
        check: false,
        options: Options::default(),
    };
    let mut flags = Flags::new(args);
    while let Some((flag, arg)) = flags.next_flag() {
        let mut value = || flags.value(flag);
        match flag {
            "--check" => out.check = true,
            "--name" => out.name = Some(value()?),
            "--cluster" => out.cluster = Some(value()?),
            "--server-url" => {
                let url = value()?;
                openapi::check_server_url(&url).map_err(|e| Failure::Usage(format!("--server-url: {e}")))?;
                out.options.server_url = Some(url);
            }
            "--tool-prefix" => out.options.tool_prefix = value()?,
            "--no-output-schemas" => out.options.no_output_schemas = true,
            "--inline-schemas" => out.options.inline_schemas = true,
            "--output-schema-depth" => {
                let v = value()?;
                let depth =
                    v.parse().map_err(|_| Failure::Usage(format!("--output-schema-depth: '{v}' is not a number")))?;
                out.options.output_schema_depth = Some(depth);
            }
            "-o" | "--output" => out.output = Some(value()?),
            "--include-tag" => out.options.include.tags.push(value()?),
            "--include-op" => out.options.include.operations.push(value()?),
            "--include-path" => out.options.include.paths.push(value()?),
            "--exclude-tag" => out.options.exclude.tags.push(value()?),
            "--exclude-op" => out.options.exclude.operations.push(value()?),
            "--exclude-path" => out.options.exclude.paths.push(value()?),
            f if f.starts_with('-') && f != "-" => return Err(Failure::Usage(format!("unknown option {f}"))),
            _ if out.input.is_empty() => out.input = arg.to_string(),
            _ => return Err(Failure::Usage(format!("unexpected argument {arg}"))),
        }
    }
    if out.input.is_empty() {
        return Err(Failure::Usage("give the OpenAPI document's path (or - for stdin)".into()));
    }
    Ok(out)
}

fn run_openapi(args: &[String]) -> Result<(), Failure> {
    let args = parse_openapi_args(args)?;
    let text = read_input(&args.input)?;
    let invalid = |e: openapi::OpenApiError| Failure::Invalid(format!("{}: {e}", args.input));
    let doc = openapi::parse_document(&text).map_err(invalid)?;
    drop(text);
    // `$ref`s to files next to the document (never URLs) are read and bundled in.
    let (doc, unread) = match std::path::Path::new(&args.input) {
        _ if args.input == "-" => (doc, Vec::new()),
        path => {
            let dir = path.parent().unwrap_or(std::path::Path::new(".")).to_path_buf();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            openapi::bundle::bundle(doc, &name, &mut |rel| {
                std::fs::read_to_string(dir.join(rel)).map_err(|e| e.to_string())
            })
        }
    };
    for problem in &unread {
        eprintln!("warning: {problem} (its $refs are left external)");
    }
    let mut conversion =
        openapi::convert(&doc, &args.options).and_then(|c| c.refusal().map_or(Ok(c), Err)).map_err(invalid)?;
    drop(doc);
    if args.check {
        print_summary(&conversion);
        return Ok(());
    }
    let converted = conversion.tools.len();
    let config =
        plugin_config(&mut conversion, args.name.as_deref(), args.cluster.as_deref(), args.options.inline_schemas);
    // The output must load in the plugin unchanged: compile it exactly as `on_configure` would.
    let as_json = serde_json::to_string(&config).unwrap_or_default();
    if let Err(e) = Gateway::from_config_str(&as_json) {
        return Err(Failure::Invalid(format!("the converted config does not load in the plugin: {e}")));
    }
    drop(as_json);
    let rendered = match &args.output {
        Some(path) if path.ends_with(".json") => serde_json::to_string_pretty(&config).unwrap_or_default() + "\n",
        _ => yaml::to_string(&config),
    };
    match &args.output {
        Some(path) => std::fs::write(path, rendered).map_err(|e| Failure::Invalid(format!("{path}: {e}")))?,
        None => print!("{rendered}"),
    }
    for s in &conversion.skipped {
        eprintln!("skipped: {s}");
    }
    for w in conversion.warnings.iter().filter(|w| w.starts_with("the selection")) {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "converted {converted} of {} operation(s) into server '{}'",
        conversion.found() + converted,
        config["servers"][0]["name"].as_str().unwrap_or_default()
    );
    Ok(())
}

fn print_summary(c: &Conversion) {
    println!(
        "document: {} {} (OpenAPI {})",
        c.title.as_deref().unwrap_or("(untitled)"),
        c.version.as_deref().unwrap_or(""),
        c.spec_version
    );
    println!("server url: {}", c.server_url.as_deref().unwrap_or("(none: give --server-url or a cluster)"));
    println!(
        "operations: {} found, {} converted, {} skipped, {} excluded by selection",
        c.found(),
        c.tools.len(),
        c.skipped.len(),
        c.excluded.len()
    );
    for s in &c.skipped {
        println!("skipped: {s}");
    }
    for w in &c.warnings {
        println!("warning: {w}");
    }
    for s in &c.security_schemes {
        println!(
            "security scheme: {} ({}{}) - credential to be filled by the operator",
            s.id,
            s.kind,
            match (&s.scheme, &s.location) {
                (Some(scheme), _) => format!(" {scheme}"),
                (_, Some(location)) => format!(" in {location}"),
                _ => String::new(),
            }
        );
    }
}

/// The plugin config holding one server with the converted tools (moved out of the conversion, which can
/// be large).
fn plugin_config(c: &mut Conversion, name: Option<&str>, cluster: Option<&str>, inline: bool) -> Value {
    let name = name.map(str::to_string).unwrap_or_else(|| server_name(c.title.as_deref().unwrap_or("openapi")));
    let host = c.server_url.as_deref().and_then(openapi::url_host).map(str::to_string);
    let cluster = cluster.map(str::to_string).or(host).unwrap_or_else(|| name.clone());
    let mut server = Map::new();
    server.insert("name".into(), json!(name));
    if let Some(t) = &c.title {
        server.insert("title".into(), json!(t));
    }
    server.insert("upstream".into(), json!({"cluster": cluster}));
    if !c.security_schemes.is_empty() {
        server.insert("securitySchemes".into(), serde_json::to_value(&c.security_schemes).unwrap_or_default());
    }
    let defs = if inline { Map::new() } else { c.share_schemas([]) };
    if !defs.is_empty() {
        server.insert("schemaDefs".into(), Value::Object(defs));
    }
    let tools: Vec<Value> =
        std::mem::take(&mut c.tools).into_iter().filter_map(|t| serde_json::to_value(t.tool).ok()).collect();
    server.insert("tools".into(), Value::Array(tools));
    json!({"servers": [Value::Object(server)]})
}

/// A server name from a title: letters, digits, `-`, `_` and `.` only.
fn server_name(title: &str) -> String {
    let mut out = String::new();
    for c in title.trim().chars() {
        let c = if c.is_ascii_alphanumeric() || "-_.".contains(c) { c.to_ascii_lowercase() } else { '-' };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    let out = out.trim_end_matches('-').to_string();
    if out.is_empty() {
        "openapi".into()
    } else {
        out
    }
}

fn run_check(args: &[String]) -> Result<(), Failure> {
    let [path] = args else {
        return Err(Failure::Usage("check takes one plugin config file (or -)".into()));
    };
    let text = read_input(path)?;
    let rules = Gateway::rules_from_config_str(&text).map_err(|e| Failure::Invalid(format!("{path}: {e}")))?;
    for (i, gateway) in rules.all().enumerate() {
        if rules.has_rules() {
            println!("configuration {}:", i + 1);
        }
        for notice in &gateway.notices {
            println!("notice: {notice}");
        }
        for s in &gateway.servers {
            println!("server '{}': {} tool(s) at {}/{}", s.name, s.tools.len(), gateway.prefix, s.name);
        }
    }
    Ok(())
}
