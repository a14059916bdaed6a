//! Stand-in for the Go dialect in builds without the `go-templates` feature: every Go template is refused at
//! load, saying why, so a Higress config fails loudly instead of rendering wrong.

use std::fmt;

/// Why a Go template cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub enum GoError {
    Unavailable,
    BadData,
}

impl fmt::Display for GoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GoError::Unavailable => write!(
                f,
                "this build has no Go template dialect (cargo feature `go-templates`): load mcp_gateway_go.wasm \
                 (Envoy) or mcp_gateway_higress.wasm (Higress), or write the server's templates in our dialect \
                 (`templateDialect: jinja`)"
            ),
            GoError::BadData => write!(f, "data must be a valid JSON object or array"),
        }
    }
}

/// Never constructed: parsing always fails.
#[derive(Debug, Clone)]
pub struct GoTemplate(());

/// Limits of one render.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub fuel: u64,
    pub max_output: usize,
}

/// What functions may read besides their arguments.
#[derive(Debug, Clone, Default)]
pub struct Env {
    _private: (),
}

impl GoTemplate {
    pub fn parse(_src: &str) -> Result<GoTemplate, GoError> {
        Err(GoError::Unavailable)
    }
    pub fn render(&self, _data: &str, _l: Limits, _url: bool, _env: &Env) -> Result<String, GoError> {
        Err(GoError::Unavailable)
    }
    pub fn literal(&self) -> Option<String> {
        None
    }
    pub fn reads_config_only(&self) -> bool {
        false
    }
}
