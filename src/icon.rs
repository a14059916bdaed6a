//! Icons a client may show for a server, tool, prompt or resource (MCP 2025-11-25 `Icon`).
//!
//! Checked at load, so that a client never receives an icon it must refuse: `src` is an http(s) URL or a
//! `data:` URI, `theme` is `light` or `dark`.

use crate::fields::{FieldError, Fields};
use serde::Serialize;
use serde_json::Value;

/// One icon, as the config gives it and as `*/list` results carry it.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Icon {
    pub src: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// `WxH` strings, or `any` for scalable formats.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sizes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme: Option<String>,
}

impl Icon {
    /// The icon as results carry it (built by hand: a `Serialize` derive would cost the module more).
    pub fn to_json(&self) -> Value {
        let mut o = serde_json::Map::new();
        o.insert("src".into(), Value::String(self.src.clone()));
        if let Some(m) = &self.mime_type {
            o.insert("mimeType".into(), Value::String(m.clone()));
        }
        if !self.sizes.is_empty() {
            let mut sizes = Vec::with_capacity(self.sizes.len());
            for s in &self.sizes {
                sizes.push(Value::String(s.clone()));
            }
            o.insert("sizes".into(), Value::Array(sizes));
        }
        if let Some(t) = &self.theme {
            o.insert("theme".into(), Value::String(t.clone()));
        }
        Value::Object(o)
    }

    /// Reads one icon from the config.
    pub fn read(v: &Value, at: &str) -> Result<Icon, FieldError> {
        let mut f = Fields::read(v, at, &[]);
        let mut icon = Icon::default();
        icon.src = f.required_string("src");
        icon.mime_type = f.string("mimeType");
        icon.sizes = f.strings("sizes").unwrap_or_default();
        icon.theme = f.string("theme");
        f.finish()?;
        Ok(icon)
    }
}

/// A list of icons as results carry it.
pub fn to_json(icons: &[Icon]) -> Value {
    let mut out = Vec::with_capacity(icons.len());
    for i in icons {
        out.push(i.to_json());
    }
    Value::Array(out)
}

/// Checks a list of icons; the error names the offending one by index (`icons[1].theme`).
pub fn validate(icons: &[Icon]) -> Result<(), (String, String)> {
    for (i, icon) in icons.iter().enumerate() {
        let field = |f: &str| format!("icons[{i}].{f}");
        let src = icon.src.trim();
        let lower = src.to_ascii_lowercase();
        let scheme_ok = lower.starts_with("https://") || lower.starts_with("http://") || lower.starts_with("data:");
        if src.is_empty() || !scheme_ok || src.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err((field("src"), "must be an http(s) URL or a data: URI".into()));
        }
        if let Some(t) = &icon.theme {
            if t != "light" && t != "dark" {
                return Err((field("theme"), format!("'{t}' must be light or dark")));
            }
        }
        if let Some(s) = icon.sizes.iter().find(|s| !size_ok(s)) {
            return Err((field("sizes"), format!("'{s}' must be WxH (48x48) or any")));
        }
    }
    Ok(())
}

fn size_ok(s: &str) -> bool {
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    s == "any" || s.split_once('x').is_some_and(|(w, h)| digits(w) && digits(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icons_are_checked_by_field() {
        let ok = Icon { src: "https://x/i.png".into(), sizes: vec!["48x48".into(), "any".into()], ..Icon::default() };
        assert!(validate(std::slice::from_ref(&ok)).is_ok());
        let data = Icon { src: "data:image/png;base64,iVBO".into(), theme: Some("dark".into()), ..Icon::default() };
        assert!(validate(&[data]).is_ok());
        let bad_src = Icon { src: "javascript:alert(1)".into(), ..Icon::default() };
        assert_eq!(validate(&[ok.clone(), bad_src]).unwrap_err().0, "icons[1].src");
        let bad_theme = Icon { theme: Some("blue".into()), ..ok.clone() };
        assert_eq!(validate(&[bad_theme]).unwrap_err().0, "icons[0].theme");
        let bad_size = Icon { sizes: vec!["big".into()], ..ok };
        assert_eq!(validate(&[bad_size]).unwrap_err().0, "icons[0].sizes");
    }
}
