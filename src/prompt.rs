//! Prompts from config: `prompts/list` and `prompts/get`, messages rendered by templates.
//!
//! A prompt's templates see `args` (its arguments, as strings) and `config`; one that reads any other name,
//! an argument the prompt does not declare, or a `config` key the server does not have is refused at load,
//! since it would render empty without a word.

use crate::completion::{self, Argument, ArgumentConfig};
use crate::content::{Content, ContentConfig};
use crate::fields::{FieldError, Fields};
use crate::icon::{self, Icon};
use crate::jsonrpc::RpcError;
use crate::template::Templates;
use minijinja::{context, value::Value as MjValue};
use serde_json::{Map, Value};

/// One prompt as the config writes it.
#[derive(Debug, Clone, Default)]
pub struct PromptConfig {
    pub name: String,
    pub title: Option<String>,
    pub description: Option<String>,
    pub icons: Vec<Icon>,
    pub arguments: Vec<ArgumentConfig>,
    pub messages: Vec<MessageConfig>,
    /// What to ask the client before the messages are rendered ([`crate::input`]).
    pub input_requests: Option<Value>,
}

impl PromptConfig {
    pub fn read(v: &Value) -> Result<PromptConfig, FieldError> {
        let mut f = Fields::read(v, "", &[]);
        let mut p = PromptConfig::default();
        p.name = f.required_string("name");
        p.title = f.string("title");
        p.description = f.string("description");
        p.icons = f.list("icons", Icon::read);
        p.arguments = f.list("arguments", ArgumentConfig::read);
        p.messages = f.list("messages", MessageConfig::read);
        p.input_requests = f.value("inputRequests").cloned();
        f.finish()?;
        Ok(p)
    }
}

/// A message: its role, and `text` (a template) or one content block.
#[derive(Debug, Clone)]
pub struct MessageConfig {
    pub role: Role,
    pub text: Option<String>,
    pub content: Option<ContentConfig>,
}

impl MessageConfig {
    fn read(v: &Value, at: &str) -> Result<MessageConfig, FieldError> {
        let mut f = Fields::read(v, at, &[]);
        let role = f.required_string("role");
        f.check()?;
        let role = match role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            other => return Err((f.path("role"), format!("'{other}' must be user or assistant"))),
        };
        let text = f.string("text");
        let content = f.nested("content", ContentConfig::read);
        f.finish()?;
        Ok(MessageConfig { role, text, content })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Role {
    User,
    Assistant,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// A compiled prompt.
#[derive(Debug)]
pub struct Prompt {
    pub name: String,
    /// As `prompts/list` shows it, built once.
    pub listing: Value,
    description: Option<String>,
    pub arguments: Vec<Argument>,
    messages: Vec<(Role, Content)>,
    /// What the prompt asks the client before its messages are rendered (`inputRequests`).
    pub inputs: Option<crate::input::Inputs>,
}

impl Prompt {
    /// Compiles one prompt; errors are `(field, message)`.
    pub fn compile(
        cfg: &PromptConfig,
        server: &str,
        templates: &mut Templates,
        config: &MjValue,
    ) -> Result<Prompt, (String, String)> {
        if cfg.name.trim().is_empty() {
            return Err(crate::fields::pair("name", "must not be empty"));
        }
        icon::validate(&cfg.icons)?;
        let arguments = completion::compile_all(&cfg.arguments)?;
        if cfg.messages.is_empty() {
            return Err(crate::fields::pair("messages", "a prompt needs at least one message"));
        }
        let names = completion::names(&arguments);
        let prefix = format!("{server}/prompt:{}", cfg.name);
        let inputs = match &cfg.input_requests {
            Some(raw) => Some(crate::input::Inputs::compile(raw, &prefix, &names, templates, config)?),
            None => None,
        };
        // The messages may read the answers to the prompt's input requests, and only then.
        let known: &[&str] = if inputs.is_some() { &["args", "config", "input"] } else { &["args", "config"] };
        let mut compile = |t: &mut Templates, field: &str, src: &str| {
            t.add_checked(&format!("{prefix}/{field}"), src, known, &names, config)
        };
        let mut messages = Vec::with_capacity(cfg.messages.len());
        for (i, m) in cfg.messages.iter().enumerate() {
            let field = format!("messages[{i}]");
            let text_block;
            let block = match (&m.text, &m.content) {
                (Some(text), None) => {
                    text_block = ContentConfig::text(text);
                    &text_block
                }
                (None, Some(c)) => c,
                _ => return Err((field, "give the message either text or content".into())),
            };
            let field = if m.text.is_some() { field } else { format!("{field}.content") };
            messages.push((m.role, Content::compile(block, &field, templates, &mut compile)?));
        }
        // A text message compiled as a block reports `messages[0].text` for its template: the field it came from.
        let mut listing = Map::new();
        listing.insert("name".into(), Value::from(cfg.name.as_str()));
        if let Some(t) = &cfg.title {
            listing.insert("title".into(), Value::from(t.as_str()));
        }
        if let Some(d) = &cfg.description {
            listing.insert("description".into(), Value::from(d.as_str()));
        }
        if !cfg.arguments.is_empty() {
            let mut args = Vec::with_capacity(cfg.arguments.len());
            for a in &cfg.arguments {
                let mut o = Map::new();
                o.insert("name".into(), Value::from(a.name.as_str()));
                if let Some(t) = &a.title {
                    o.insert("title".into(), Value::from(t.as_str()));
                }
                if let Some(d) = &a.description {
                    o.insert("description".into(), Value::from(d.as_str()));
                }
                o.insert("required".into(), Value::Bool(a.required));
                args.push(Value::Object(o));
            }
            listing.insert("arguments".into(), Value::Array(args));
        }
        if !cfg.icons.is_empty() {
            listing.insert("icons".into(), icon::to_json(&cfg.icons));
        }
        Ok(Prompt {
            name: cfg.name.clone(),
            listing: Value::Object(listing),
            description: cfg.description.clone(),
            arguments,
            messages,
            inputs,
        })
    }

    /// The `GetPromptResult` for these arguments: refused, naming each problem, when an argument is missing,
    /// unknown, not a string, or outside its enum.
    /// `input`: the answers to its input requests, which its messages read as `input`.
    pub fn get(
        &self,
        templates: &Templates,
        config: &MjValue,
        arguments: Option<&Value>,
        input: Option<&Value>,
    ) -> Result<Value, RpcError> {
        let given = match arguments {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => return Err(RpcError::invalid_params("`arguments` must be an object of strings")),
        };
        let mut problems = Vec::new();
        for (k, v) in &given {
            match self.arguments.iter().find(|a| &a.name == k) {
                None => problems.push(format!("`{k}`: is not an argument of this prompt")),
                Some(a) => match (v.as_str(), a.accepted(&given)) {
                    (None, _) => problems.push(format!("`{k}`: must be a string")),
                    (Some(s), Some(accepted)) if !accepted.iter().any(|x| *x == s) => {
                        let list: Vec<&str> = accepted.iter().map(|x| x.as_str()).collect();
                        // Which other arguments narrowed the enum, when some did.
                        let since: Vec<String> = a
                            .when
                            .iter()
                            .filter_map(|w| given.get(&w.argument).and_then(Value::as_str).map(|v| (w, v)))
                            .filter(|(w, v)| w.lists.iter().any(|(x, _)| x == v))
                            .map(|(w, v)| format!("`{}` is {v}", w.argument))
                            .collect();
                        problems.push(match (since.is_empty(), list.is_empty()) {
                            (true, _) => format!("`{k}`: must be one of {}", list.join(", ")),
                            (false, true) => format!("`{k}`: takes no value when {}", since.join(" and ")),
                            (false, false) => {
                                format!("`{k}`: must be one of {} when {}", list.join(", "), since.join(" and "))
                            }
                        });
                    }
                    _ => {}
                },
            }
        }
        for a in self.arguments.iter().filter(|a| a.required && !given.contains_key(&a.name)) {
            problems.push(format!("`{}`: is required", a.name));
        }
        if !problems.is_empty() {
            let accepted = completion::names(&self.arguments);
            let accepted = if accepted.is_empty() { "none".to_string() } else { accepted.join(", ") };
            return Err(RpcError::invalid_params(format!(
                "Invalid arguments for prompt {} (its arguments: {accepted}):\n- {}",
                self.name,
                problems.join("\n- ")
            )));
        }
        let ctx = match input {
            Some(i) => context! {
                args => MjValue::from(minijinja::value::Serde(&given)),
                config => config.clone(),
                input => MjValue::from(minijinja::value::Serde(i)),
            },
            None => context! { args => MjValue::from(minijinja::value::Serde(&given)), config => config.clone() },
        };
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, (role, block)) in self.messages.iter().enumerate() {
            let content = block.render(templates, &ctx).map_err(|e| {
                RpcError::new(crate::jsonrpc::INTERNAL_ERROR, format!("prompt {} message {i}: {e}", self.name))
            })?;
            messages.push(crate::json::object(vec![("role", Value::from(role.name())), ("content", content)]));
        }
        let mut result = vec![("messages", Value::Array(messages))];
        if let Some(d) = &self.description {
            result.push(("description", Value::from(d.as_str())));
        }
        Ok(crate::json::object(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prompt(yaml: &str) -> Result<(Prompt, Templates, MjValue), (String, String)> {
        let cfg = PromptConfig::read(&crate::config::parse_document(yaml).unwrap())?;
        let config = crate::gateway::safe_config(json!({"team": "ops"}).as_object().unwrap());
        let mut t = Templates::new();
        let p = Prompt::compile(&cfg, "s", &mut t, &config)?;
        Ok((p, t, config))
    }

    #[test]
    fn renders_messages_from_arguments() {
        let (p, t, c) = prompt(
            "name: review\ndescription: Review code\narguments:\n- {name: lang, required: true, enum: [rust, go]}\n- {name: focus}\n\
             messages:\n- {role: user, text: 'Review this {{ args.lang }} for {{ config.team }}{% if args.focus %}: {{ args.focus }}{% endif %}'}\n\
             - role: assistant\n  content: {type: image, data: AAAA, mimeType: image/png}\n",
        )
        .unwrap();
        assert_eq!(p.listing["arguments"][0], json!({"name": "lang", "required": true}));
        let r = p.get(&t, &c, Some(&json!({"lang": "rust"})), None).unwrap();
        assert_eq!(
            r["messages"][0],
            json!({"role": "user", "content": {"type": "text", "text": "Review this rust for ops"}})
        );
        assert_eq!(r["messages"][1]["content"]["type"], json!("image"));
        assert_eq!(r["description"], json!("Review code"));
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["messages", "description"]);
        assert_eq!(
            r["messages"][0].to_string(),
            r#"{"role":"user","content":{"type":"text","text":"Review this rust for ops"}}"#
        );
        assert_eq!(
            p.listing.to_string(),
            r#"{"name":"review","description":"Review code","arguments":[{"name":"lang","required":true},{"name":"focus","required":false}]}"#
        );
        let e = p.get(&t, &c, Some(&json!({"lang": "cobol", "x": "1", "focus": 3})), None).unwrap_err();
        assert_eq!(e.code, crate::jsonrpc::INVALID_PARAMS);
        for part in ["`lang`: must be one of rust, go", "`x`: is not an argument", "`focus`: must be a string"] {
            assert!(e.message.contains(part), "{}", e.message);
        }
        assert!(p.get(&t, &c, None, None).unwrap_err().message.contains("`lang`: is required"));
    }

    #[test]
    fn an_enum_narrowed_by_another_argument_refuses_what_it_rules_out() {
        let (p, t, c) = prompt(
            "name: pick\narguments:\n- {name: lang, enum: [rust, go]}\n\
             - {name: level, enum: ['1', '2'], valuesWhen: {lang: {go: ['1'], rust: []}}}\n\
             messages: [{role: user, text: '{{ args.level }}'}]\n",
        )
        .unwrap();
        assert!(p.get(&t, &c, Some(&json!({"lang": "go", "level": "1"})), None).is_ok());
        assert!(p.get(&t, &c, Some(&json!({"level": "2"})), None).is_ok(), "nothing narrows it");
        let e = p.get(&t, &c, Some(&json!({"lang": "go", "level": "2"})), None).unwrap_err();
        assert!(e.message.contains("`level`: must be one of 1 when `lang` is go"), "{}", e.message);
        let e = p.get(&t, &c, Some(&json!({"lang": "rust", "level": "1"})), None).unwrap_err();
        assert!(e.message.contains("`level`: takes no value when `lang` is rust"), "{}", e.message);
    }

    #[test]
    fn unknown_names_are_refused_at_load() {
        let e =
            prompt("name: p\narguments: [{name: a}]\nmessages: [{role: user, text: '{{ args.b }}'}]\n").unwrap_err();
        assert_eq!(e.0, "messages[0].text");
        assert!(e.1.contains("`args.b`") && e.1.contains("arguments: a"), "{}", e.1);
        let e = prompt("name: p\nmessages: [{role: user, text: '{{ nme }}'}]\n").unwrap_err();
        assert!(e.1.contains("`nme`"), "{}", e.1);
        let e = prompt("name: p\nmessages: [{role: user, text: '{{ config.teem }}'}]\n").unwrap_err();
        assert!(e.1.contains("`config.teem`"), "{}", e.1);
        let e = prompt("name: p\nmessages: [{role: user, text: a, content: {type: text, text: b}}]\n").unwrap_err();
        assert_eq!(e.0, "messages[0]");
        assert_eq!(prompt("name: p\nmessages: []\n").unwrap_err().0, "messages");
        let e = prompt("name: p\nicons: [{src: 'ftp://x'}]\nmessages: [{role: user, text: a}]\n").unwrap_err();
        assert_eq!(e.0, "icons[0].src");
        assert!(
            prompt("name: p\nmessages: [{role: user, text: '{{ args | tojson }} {{ range(2) | list }}'}]\n").is_ok()
        );
    }
}
