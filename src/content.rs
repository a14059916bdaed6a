//! Content blocks built by templates: text, image, audio, resource links and embedded resources, for tool
//! results (`responseTemplate.content`) and prompt messages alike.
//!
//! Every string of a block is a template, compiled at load; rendering checks what the client would refuse
//! (binary data that is not base64, a block without its uri), so a broken block is an error that says
//! which one, never a block the client cannot read.

use crate::fields::{FieldError, Fields};
use crate::icon::{self, Icon};
use crate::template::{TemplateId, Templates};
use serde::Serialize;
use serde_json::{Map, Value};

/// One content block as the config writes it; every string is a template. One flat struct for the five
/// types (rather than a tagged enum) keeps the config reader small in the wasm module; [`Content::compile`]
/// checks which fields each type takes.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentConfig {
    #[serde(rename = "type")]
    pub kind: ContentKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Base64, for `image` and `audio`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Base64, for an embedded `resource`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub icons: Vec<Icon>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Map<String, Value>>,
}

/// The content block types of MCP.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum ContentKind {
    #[default]
    Text,
    Image,
    Audio,
    /// A link to a resource the client may read.
    ResourceLink,
    /// A resource embedded with its contents: `text`, or `blob`.
    Resource,
}

impl ContentKind {
    const ALL: [ContentKind; 5] =
        [ContentKind::Text, ContentKind::Image, ContentKind::Audio, ContentKind::ResourceLink, ContentKind::Resource];

    fn name(self) -> &'static str {
        match self {
            ContentKind::Text => "text",
            ContentKind::Image => "image",
            ContentKind::Audio => "audio",
            ContentKind::ResourceLink => "resource_link",
            ContentKind::Resource => "resource",
        }
    }
}

impl ContentConfig {
    /// Reads one block from the config.
    pub fn read(v: &Value, at: &str) -> Result<ContentConfig, FieldError> {
        let mut f = Fields::read(v, at, &[]);
        let kind = f.required_string("type");
        f.check()?;
        let Some(kind) = ContentKind::ALL.into_iter().find(|k| k.name() == kind) else {
            return Err((f.path("type"), format!("'{kind}' must be text, image, audio, resource_link or resource")));
        };
        let mut c = ContentConfig::default();
        c.kind = kind;
        c.text = f.string("text");
        c.data = f.string("data");
        c.blob = f.string("blob");
        c.mime_type = f.string("mimeType");
        c.uri = f.string("uri");
        c.name = f.string("name");
        c.title = f.string("title");
        c.description = f.string("description");
        c.size = f.unsigned("size");
        c.icons = f.list("icons", Icon::read);
        c.annotations = f.object("annotations");
        f.finish()?;
        Ok(c)
    }

    /// A text block.
    pub fn text(text: &str) -> ContentConfig {
        ContentConfig { text: Some(text.to_string()), ..ContentConfig::default() }
    }
}

/// What a rendered field must be.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Check {
    /// Any text, empty included.
    Any,
    /// Not empty (a uri, a name, a MIME type).
    Present,
    /// Base64 (standard alphabet, padded), not empty.
    Base64,
    /// Left out when it renders empty (optional fields).
    Optional,
}

#[derive(Debug)]
struct Field {
    /// The key in the block, or in its `resource` for an embedded resource.
    key: &'static str,
    nested: bool,
    template: TemplateId,
    check: Check,
}

/// A compiled content block.
#[derive(Debug)]
pub struct Content {
    /// The parts that do not depend on the request: `type`, `annotations`, `icons`, `size`.
    fixed: Map<String, Value>,
    fields: Vec<Field>,
}

/// How a block's templates are compiled: tool results read the upstream answer, whose keys are not known
/// at load; prompts know every name they may read.
pub type Compile<'a> = dyn FnMut(&mut Templates, &str, &str) -> Result<TemplateId, String> + 'a;

impl Content {
    /// Compiles one block; `field` locates it in errors (`responseTemplate.content[2]`).
    pub fn compile(
        cfg: &ContentConfig,
        field: &str,
        templates: &mut Templates,
        compile: &mut Compile<'_>,
    ) -> Result<Content, (String, String)> {
        let mut fixed = Map::new();
        let mut fields = Vec::new();
        let kind = cfg.kind;
        // Which fields each type takes, required first: `(key, value, check)`.
        let given: [(&'static str, Option<&String>); 8] = [
            ("text", cfg.text.as_ref()),
            ("data", cfg.data.as_ref()),
            ("blob", cfg.blob.as_ref()),
            ("mimeType", cfg.mime_type.as_ref()),
            ("uri", cfg.uri.as_ref()),
            ("name", cfg.name.as_ref()),
            ("title", cfg.title.as_ref()),
            ("description", cfg.description.as_ref()),
        ];
        let takes: &[(&str, Check)] = match kind {
            ContentKind::Text => &[("text", Check::Any)],
            ContentKind::Image | ContentKind::Audio => &[("data", Check::Base64), ("mimeType", Check::Present)],
            ContentKind::ResourceLink => &[
                ("uri", Check::Present),
                ("name", Check::Present),
                ("title", Check::Optional),
                ("description", Check::Optional),
                ("mimeType", Check::Optional),
            ],
            ContentKind::Resource => {
                &[("uri", Check::Present), ("mimeType", Check::Optional), ("text", Check::Any), ("blob", Check::Base64)]
            }
        };
        let extra = [("size", cfg.size.is_some()), ("icons", !cfg.icons.is_empty())];
        let wrong = given
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| *k)
            .chain(extra.iter().filter(|e| e.1).map(|e| e.0))
            .find(|k| {
                !(takes.iter().any(|(t, _)| t == k)
                    || kind == ContentKind::ResourceLink && matches!(*k, "size" | "icons"))
            });
        if let Some(k) = wrong {
            return Err((format!("{field}.{k}"), format!("does not apply to a {} block", kind.name())));
        }
        if kind == ContentKind::Resource && cfg.text.is_some() == cfg.blob.is_some() {
            return Err((field.to_string(), "an embedded resource has either text or blob".into()));
        }
        fixed.insert("type".into(), Value::from(kind.name()));
        for (key, check) in takes {
            let src = given.iter().find(|(k, _)| k == key).and_then(|(_, v)| *v);
            let Some(src) = src else {
                if matches!(check, Check::Optional) || kind == ContentKind::Resource && matches!(*key, "text" | "blob")
                {
                    continue;
                }
                return Err((format!("{field}.{key}"), format!("a {} block needs it", kind.name())));
            };
            let name = format!("{field}.{key}");
            let template = compile(templates, &name, src).map_err(|e| (name, e))?;
            fields.push(Field { key, nested: kind == ContentKind::Resource, template, check: *check });
        }
        icon::validate(&cfg.icons).map_err(|(f, m)| (format!("{field}.{f}"), m))?;
        if let Some(size) = cfg.size {
            fixed.insert("size".into(), Value::from(size));
        }
        if !cfg.icons.is_empty() {
            fixed.insert("icons".into(), icon::to_json(&cfg.icons));
        }
        let annotations = &cfg.annotations;
        if let Some(a) = annotations {
            fixed.insert("annotations".into(), Value::Object(a.clone()));
        }
        Ok(Content { fixed, fields })
    }

    /// The block's templates (to ask what they read).
    pub fn templates(&self) -> impl Iterator<Item = &TemplateId> {
        self.fields.iter().map(|f| &f.template)
    }

    /// Renders the block over a minijinja context (prompts, resources); the error names the field at fault.
    pub fn render<C: Serialize + Clone>(&self, templates: &Templates, ctx: &C) -> Result<Value, String> {
        self.render_with(&|t| templates.render_ctx(t, ctx.clone()))
    }

    /// Renders the block with `render` (a tool result renders over its call data, in either dialect).
    pub fn render_with(&self, render: &dyn Fn(&TemplateId) -> Result<String, String>) -> Result<Value, String> {
        let mut block = self.fixed.clone();
        let mut resource = Map::new();
        for f in &self.fields {
            let text = render(&f.template).map_err(|e| format!("`{}`: {e}", f.key))?;
            match f.check {
                Check::Present | Check::Base64 if text.trim().is_empty() => {
                    return Err(format!("`{}` rendered empty", f.key));
                }
                Check::Base64 if !is_base64(text.trim()) => {
                    return Err(format!("`{}` is not base64 ({} characters)", f.key, text.len()));
                }
                Check::Optional if text.is_empty() => continue,
                _ => {}
            }
            let text = if f.check == Check::Base64 { text.trim().to_string() } else { text };
            let target = if f.nested { &mut resource } else { &mut block };
            target.insert(f.key.into(), Value::String(text));
        }
        if !resource.is_empty() {
            // Annotations belong to the block; the embedded contents carry uri, mimeType and text or blob.
            block.insert("resource".into(), Value::Object(resource));
        }
        Ok(Value::Object(block))
    }
}

/// Compiles a list of blocks, located as `{field}[i]`.
pub fn compile_all(
    blocks: &[ContentConfig],
    field: &str,
    templates: &mut Templates,
    compile: &mut Compile<'_>,
) -> Result<Vec<Content>, (String, String)> {
    let mut out = Vec::with_capacity(blocks.len());
    for (i, b) in blocks.iter().enumerate() {
        out.push(Content::compile(b, &format!("{field}[{i}]"), templates, compile)?);
    }
    Ok(out)
}

/// Standard base64 with padding, as MCP's `data` and `blob` are: checked without decoding.
fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len() % 4 == 0
        && s.len() - body.len() <= 2
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;
    use serde_json::json;

    fn compile(yaml: &str) -> (Vec<Content>, Templates) {
        let doc = crate::config::parse_document(yaml).unwrap();
        let blocks: Vec<ContentConfig> =
            doc.as_array().unwrap().iter().map(|b| ContentConfig::read(b, "content").unwrap()).collect();
        let mut t = Templates::new();
        let mut c = |t: &mut Templates, name: &str, src: &str| t.add(name, src, crate::template::Escape::None);
        (compile_all(&blocks, "content", &mut t, &mut c).unwrap(), t)
    }

    #[test]
    fn every_block_type_renders() {
        let (blocks, t) = compile(
            "- {type: text, text: 'hi {{ who }}', annotations: {audience: [user]}}\n\
             - {type: image, data: '{{ png }}', mimeType: image/png}\n\
             - {type: audio, data: AAAA, mimeType: audio/wav}\n\
             - {type: resource_link, uri: 'test://{{ who }}', name: n, mimeType: '', size: 3, icons: [{src: 'https://i/x.png'}]}\n\
             - {type: resource, uri: 'test://e', mimeType: text/plain, text: 'body {{ who }}'}\n\
             - {type: resource, uri: 'test://b', blob: 'AQID'}\n",
        );
        let ctx = context! { who => "bo", png => "iVBORw0KGgo=" };
        let out: Vec<Value> = blocks.iter().map(|b| b.render(&t, &ctx).unwrap()).collect();
        assert_eq!(out[0], json!({"type": "text", "text": "hi bo", "annotations": {"audience": ["user"]}}));
        assert_eq!(out[1], json!({"type": "image", "data": "iVBORw0KGgo=", "mimeType": "image/png"}));
        assert_eq!(out[2]["type"], json!("audio"));
        assert_eq!(
            out[3],
            json!({"type": "resource_link", "uri": "test://bo", "name": "n", "size": 3, "icons": [{"src": "https://i/x.png"}]}),
            "an optional field that renders empty is left out"
        );
        assert_eq!(
            out[4],
            json!({"type": "resource", "resource": {"uri": "test://e", "mimeType": "text/plain", "text": "body bo"}})
        );
        assert_eq!(out[5]["resource"], json!({"uri": "test://b", "blob": "AQID"}));
    }

    #[test]
    fn broken_blocks_say_which_field() {
        let (blocks, t) = compile("- {type: image, data: '{{ d }}', mimeType: image/png}\n");
        assert!(blocks[0].render(&t, &context! { d => "" }).unwrap_err().contains("`data` rendered empty"));
        assert!(blocks[0].render(&t, &context! { d => "not base64!" }).unwrap_err().contains("not base64"));
        let mut t = Templates::new();
        let mut c = |t: &mut Templates, name: &str, src: &str| t.add(name, src, crate::template::Escape::None);
        for (block, field) in [
            (json!({"type": "resource", "uri": "u", "text": "a", "blob": "AA=="}), "messages[0].content[0]"),
            (json!({"type": "text", "text": "a", "uri": "u"}), "messages[0].content[0].uri"),
            (json!({"type": "image", "data": "AA=="}), "messages[0].content[0].mimeType"),
            (json!({"type": "text", "text": "a", "size": 1}), "messages[0].content[0].size"),
        ] {
            let bad = vec![ContentConfig::read(&block, "c").unwrap()];
            let e = compile_all(&bad, "messages[0].content", &mut t, &mut c).unwrap_err();
            assert_eq!(e.0, field, "{e:?}");
        }
        assert_eq!(ContentConfig::read(&json!({"type": "video"}), "c").unwrap_err().0, "c.type");
        assert_eq!(ContentConfig::read(&json!({"type": "text", "text": "x", "txt": 1}), "c").unwrap_err().0, "c.txt");
        assert!(is_base64("iVBORw0KGgo=") && !is_base64("abc") && !is_base64("ab=c"));
    }
}
