//! Lexer and parser of Go's `text/template` syntax, as Higress's fork (gjson_template) reads it.
//!
//! The grammar is Go's (`text/template/parse`): text, `{{ }}` actions with `{{-`/`-}}` trim markers and
//! `/* */` comments, pipelines of commands, `$` variables with `:=` and `=`, parenthesised pipelines, field
//! chains, and `if`/`else if`/`with`/`range`/`break`/`continue`/`end`. Function names are checked here,
//! so that a template calling a function this gateway lacks is refused when the configuration loads.

use super::value::Value;
use super::GoError;

/// Deepest nesting of control structures and parentheses: bounds recursion when parsing and executing.
const MAX_DEPTH: usize = 64;

/// A parsed template: a list of nodes.
pub type List = Vec<Node>;

/// A node of the template tree; control structures own their lists.
#[derive(Debug, Clone)]
pub enum Node {
    Text(String),
    /// `{{ pipeline }}`; `line` locates errors.
    Action {
        pipe: Pipe,
        line: usize,
    },
    If {
        pipe: Pipe,
        list: List,
        else_list: Option<List>,
        line: usize,
    },
    With {
        pipe: Pipe,
        list: List,
        else_list: Option<List>,
        line: usize,
    },
    Range {
        pipe: Pipe,
        list: List,
        else_list: Option<List>,
        line: usize,
    },
    Break,
    Continue,
}

/// `$a, $b := cmd | cmd`.
#[derive(Debug, Clone, Default)]
pub struct Pipe {
    pub decl: Vec<String>,
    /// `=` (assign to existing variables) rather than `:=` (declare).
    pub assign: bool,
    pub cmds: Vec<Cmd>,
}

/// One command of a pipeline: a function and its arguments, or a single operand.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub args: Vec<Arg>,
}

/// An operand of a command.
#[derive(Debug, Clone)]
pub enum Arg {
    Dot,
    Nil,
    /// A constant: bool, number or string.
    Const(Value),
    /// A string literal's text, kept apart because a first word that is a back-quoted string in double quotes
    /// is a gjson path in Higress's fork.
    Str(String),
    /// `.a.b.c`: one gjson path on dot.
    Field(Vec<String>),
    /// `$x.a.b`.
    Var(String, Vec<String>),
    /// A character constant: a Go rune, so an integer (see `funcs::char_as_string`).
    Char(char),
    /// A function name.
    Func(String),
    /// `(pipeline).a.b`.
    Pipe(Box<Pipe>, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Text(String),
    /// `{{`, and whether it trims the text before it.
    Left,
    Right,
    Space,
    Ident(String),
    Field(String),
    Var(String),
    Str(String),
    Number(String),
    Char(char),
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
    Dot,
    Eof,
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    line: usize,
    toks: Vec<(Tok, usize)>,
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

impl<'a> Lexer<'a> {
    fn rest(&self) -> &'a str {
        self.src.get(self.pos..).unwrap_or("")
    }

    fn err(&self, msg: impl Into<String>) -> GoError {
        GoError::Parse { line: self.line, message: msg.into() }
    }

    fn push(&mut self, t: Tok) {
        self.toks.push((t, self.line));
    }

    fn advance(&mut self, n: usize) {
        let taken = self.src.get(self.pos..self.pos + n).unwrap_or("");
        self.line += taken.matches('\n').count();
        self.pos += n;
    }

    fn run(mut self) -> Result<Vec<(Tok, usize)>, GoError> {
        loop {
            let rest = self.rest();
            let Some(start) = rest.find("{{") else {
                if !rest.is_empty() {
                    self.push(Tok::Text(rest.to_string()));
                }
                self.push(Tok::Eof);
                return Ok(self.toks);
            };
            let mut text = &rest[..start];
            let after = &rest[start + 2..];
            let trim_left = after.starts_with('-') && after[1..].starts_with(is_space);
            if trim_left {
                text = text.trim_end_matches(is_space);
            }
            if !text.is_empty() {
                self.push(Tok::Text(text.to_string()));
            }
            self.advance(start + 2 + if trim_left { 2 } else { 0 });
            // A comment fills the whole action.
            let inner = self.rest().trim_start_matches(is_space);
            if inner.starts_with("/*") && (trim_left || self.rest().starts_with("/*")) {
                let skip = self.rest().len() - inner.len();
                self.advance(skip);
                let Some(end) = self.rest().find("*/") else { return Err(self.err("unclosed comment")) };
                self.advance(end + 2);
                let r = self.rest();
                let (n, trim_right) = if r.starts_with("}}") {
                    (2, false)
                } else if r.starts_with(" -}}") || r.starts_with("\t-}}") || r.starts_with("\n-}}") {
                    (4, true)
                } else {
                    return Err(self.err("comment ends before closing delimiter"));
                };
                self.advance(n);
                if trim_right {
                    let skip = self.rest().len() - self.rest().trim_start_matches(is_space).len();
                    self.advance(skip);
                }
                continue;
            }
            self.push(Tok::Left);
            self.lex_action()?;
        }
    }

    fn lex_action(&mut self) -> Result<(), GoError> {
        let mut parens = 0usize;
        loop {
            let r = self.rest();
            let mut chars = r.chars();
            let Some(c) = chars.next() else { return Err(self.err("unclosed action")) };
            if r.starts_with("}}") {
                if parens > 0 {
                    return Err(self.err("unclosed left paren"));
                }
                self.push(Tok::Right);
                self.advance(2);
                return Ok(());
            }
            if is_space(c) {
                let n = r.len() - r.trim_start_matches(is_space).len();
                let spaces = &r[n..];
                if spaces.starts_with("-}}") {
                    if parens > 0 {
                        return Err(self.err("unclosed left paren"));
                    }
                    self.push(Tok::Right);
                    self.advance(n + 3);
                    let skip = self.rest().len() - self.rest().trim_start_matches(is_space).len();
                    self.advance(skip);
                    return Ok(());
                }
                self.push(Tok::Space);
                self.advance(n);
                continue;
            }
            match c {
                '(' => {
                    parens += 1;
                    self.push(Tok::LParen);
                    self.advance(1);
                }
                ')' => {
                    if parens == 0 {
                        return Err(self.err("unexpected right paren"));
                    }
                    parens -= 1;
                    self.push(Tok::RParen);
                    self.advance(1);
                }
                '|' => {
                    self.push(Tok::Pipe);
                    self.advance(1);
                }
                ',' => {
                    self.push(Tok::Comma);
                    self.advance(1);
                }
                ':' => {
                    if !r.starts_with(":=") {
                        return Err(self.err("expected :="));
                    }
                    self.push(Tok::Declare);
                    self.advance(2);
                }
                '=' => {
                    self.push(Tok::Assign);
                    self.advance(1);
                }
                '"' => {
                    let (s, n) = unquote(r).map_err(|m| self.err(m))?;
                    self.push(Tok::Str(s));
                    self.advance(n);
                }
                '`' => {
                    let Some(end) = r[1..].find('`') else { return Err(self.err("unterminated raw quoted string")) };
                    self.push(Tok::Str(r[1..1 + end].to_string()));
                    self.advance(end + 2);
                }
                '\'' => {
                    let (ch, n) = unquote_char(r).map_err(|m| self.err(m))?;
                    self.push(Tok::Char(ch));
                    self.advance(n);
                }
                '$' => {
                    let n = 1 + r[1..].len() - r[1..].trim_start_matches(is_alnum).len();
                    self.push(Tok::Var(r[..n].to_string()));
                    self.advance(n);
                }
                '.' => {
                    let next = chars.next();
                    // `.users.0.name`: right after a field, a variable or `)`, a numeric segment continues the
                    // chain. Go (and Higress) read `.0` as a number there and fail; gjson_template's own README
                    // shows this form, so its authors mean the path.
                    let chained = matches!(self.toks.last(), Some((Tok::Field(_) | Tok::Var(_) | Tok::RParen, _)));
                    if chained && next.is_some_and(|d| d.is_ascii_digit()) {
                        let n = 1 + r[1..].len() - r[1..].trim_start_matches(is_alnum).len();
                        self.push(Tok::Field(r[1..n].to_string()));
                        self.advance(n);
                    } else if next.is_some_and(|d| d.is_ascii_digit()) {
                        let n = number_len(r);
                        self.push(Tok::Number(r[..n].to_string()));
                        self.advance(n);
                    } else if next.is_some_and(is_alnum) {
                        let n = 1 + r[1..].len() - r[1..].trim_start_matches(is_alnum).len();
                        self.push(Tok::Field(r[1..n].to_string()));
                        self.advance(n);
                    } else {
                        self.push(Tok::Dot);
                        self.advance(1);
                    }
                }
                c if c.is_ascii_digit()
                    || ((c == '-' || c == '+') && chars.next().is_some_and(|d| d.is_ascii_digit() || d == '.')) =>
                {
                    let n = number_len(r);
                    self.push(Tok::Number(r[..n].to_string()));
                    self.advance(n);
                }
                c if is_alnum(c) => {
                    let n = r.len() - r.trim_start_matches(is_alnum).len();
                    self.push(Tok::Ident(r[..n].to_string()));
                    self.advance(n);
                }
                other => return Err(self.err(format!("unexpected {other:?} in command"))),
            }
        }
    }
}

/// The length of a number literal at the start of `s` (Go's scanNumber, loosely).
fn number_len(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    while i < b.len() {
        let c = b[i];
        let prev = if i > 0 { b[i - 1] } else { 0 };
        let ok = c.is_ascii_alphanumeric()
            || c == b'.'
            || c == b'_'
            || ((c == b'+' || c == b'-') && matches!(prev, b'e' | b'E' | b'p' | b'P'));
        if !ok {
            break;
        }
        i += 1;
    }
    i
}

/// A Go double-quoted string at the start of `s`: its value and its length in the source.
fn unquote(s: &str) -> Result<(String, usize), String> {
    let mut out = String::new();
    let mut it = s.char_indices().skip(1);
    while let Some((i, c)) = it.next() {
        match c {
            '"' => return Ok((out, i + 1)),
            '\n' => break,
            '\\' => {
                let Some((_, e)) = it.next() else { break };
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'a' => out.push('\u{7}'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'v' => out.push('\u{b}'),
                    '\\' | '"' | '\'' => out.push(e),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let mut v = 0u32;
                        for _ in 0..n {
                            let d = it.next().and_then(|(_, d)| d.to_digit(16)).ok_or("bad escape in string")?;
                            v = v * 16 + d;
                        }
                        out.push(char::from_u32(v).ok_or("bad escape in string")?);
                    }
                    _ => return Err(format!("unknown escape \\{e} in string")),
                }
            }
            c => out.push(c),
        }
    }
    Err("unterminated quoted string".into())
}

fn unquote_char(s: &str) -> Result<(char, usize), String> {
    let body = s.get(1..).unwrap_or("");
    let end = body.find('\'').ok_or("unterminated character constant")?;
    let inner = &body[..end];
    let ch = if let Some(esc) = inner.strip_prefix('\\') {
        let (v, _) = unquote(&format!("\"\\{esc}\""))?;
        let mut c = v.chars();
        match (c.next(), c.next()) {
            (Some(ch), None) => ch,
            _ => return Err("bad character constant".into()),
        }
    } else {
        let mut c = inner.chars();
        match (c.next(), c.next()) {
            (Some(ch), None) => ch,
            _ => return Err("bad character constant".into()),
        }
    };
    Ok((ch, end + 2))
}

/// Parses a Go number literal into a JSON number value (Go's `NumberNode`, then Higress's conversion).
fn number_value(text: &str) -> Option<Value> {
    let t = text.replace('_', "");
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t.strip_prefix('+').unwrap_or(&t)),
    };
    let int = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i128::from_str_radix(h, 16).ok()
    } else if let Some(o) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
        i128::from_str_radix(o, 8).ok()
    } else if let Some(b) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
        i128::from_str_radix(b, 2).ok()
    } else if body.len() > 1 && body.starts_with('0') && body.bytes().all(|b| b.is_ascii_digit()) {
        i128::from_str_radix(&body[1..], 8).ok()
    } else if body.bytes().all(|b| b.is_ascii_digit()) {
        body.parse::<i128>().ok()
    } else {
        None
    };
    if let Some(i) = int {
        let i = if neg { -i } else { i };
        return Some(Value::Number(i.to_string()));
    }
    let f: f64 = body.parse().ok()?;
    if !f.is_finite() {
        return None;
    }
    let f = if neg { -f } else { f };
    // Higress prints an integral float constant as an integer (`2.0`, `1e3`), others with `%f`.
    if f.fract() == 0.0 && f.abs() < 9.2e18 {
        return Some(Value::int(f as i64));
    }
    Some(Value::float(f))
}

struct Parser<'f> {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
    /// Range loops open around the current position (`break`/`continue` need one).
    in_range: usize,
    vars: Vec<String>,
    known: &'f dyn Fn(&str) -> Result<(), String>,
}

/// What ended a list: `{{end}}`, `{{else}}` (with the rest of its action unread) or the end of the text.
enum Stop {
    End,
    Else,
    Eof,
}

impl Parser<'_> {
    fn line(&self) -> usize {
        self.toks.get(self.pos).map(|t| t.1).unwrap_or(0)
    }

    fn err(&self, msg: impl Into<String>) -> GoError {
        GoError::Parse { line: self.line(), message: msg.into() }
    }

    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map(|t| &t.0).unwrap_or(&Tok::Eof)
    }

    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn skip_space(&mut self) {
        while *self.peek() == Tok::Space {
            self.pos += 1;
        }
    }

    /// The next non-space token.
    fn next_ns(&mut self) -> Tok {
        self.skip_space();
        self.next()
    }

    fn expect_right(&mut self, context: &str) -> Result<(), GoError> {
        match self.next_ns() {
            Tok::Right => Ok(()),
            t => Err(self.err(format!("unexpected {t:?} in {context}"))),
        }
    }

    fn enter(&mut self) -> Result<(), GoError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(format!("nested deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn list(&mut self) -> Result<(List, Stop), GoError> {
        let mut list = Vec::new();
        loop {
            match self.next() {
                Tok::Eof => return Ok((list, Stop::Eof)),
                Tok::Text(t) => list.push(Node::Text(t)),
                Tok::Left => {
                    let line = self.line();
                    self.skip_space();
                    let keyword = match self.peek() {
                        Tok::Ident(k) => k.clone(),
                        _ => String::new(),
                    };
                    match keyword.as_str() {
                        "end" => {
                            self.next();
                            self.expect_right("end")?;
                            return Ok((list, Stop::End));
                        }
                        "else" => {
                            self.next();
                            return Ok((list, Stop::Else));
                        }
                        "if" | "with" | "range" => {
                            self.next();
                            self.enter()?;
                            let node = self.control(&keyword, line)?;
                            self.depth -= 1;
                            list.push(node);
                        }
                        "break" | "continue" => {
                            self.next();
                            if self.in_range == 0 {
                                return Err(self.err(format!("{{{{{keyword}}}}} outside {{{{range}}}}")));
                            }
                            self.expect_right(&keyword)?;
                            list.push(if keyword == "break" { Node::Break } else { Node::Continue });
                        }
                        "define" | "template" | "block" => {
                            return Err(self
                                .err(format!("{{{{{keyword}}}}} (named templates) is not supported by this gateway")))
                        }
                        _ => {
                            let pipe = self.pipeline("command", false)?;
                            list.push(Node::Action { pipe, line });
                        }
                    }
                }
                t => return Err(self.err(format!("unexpected {t:?}"))),
            }
        }
    }

    /// `if`, `with` or `range`, after its keyword; consumes through `{{end}}`.
    fn control(&mut self, keyword: &str, line: usize) -> Result<Node, GoError> {
        let vars_mark = self.vars.len();
        let pipe = self.pipeline(keyword, keyword == "range")?;
        if keyword == "range" {
            self.in_range += 1;
        }
        let (list, stop) = self.list()?;
        if keyword == "range" {
            self.in_range -= 1;
        }
        let else_list = match stop {
            Stop::End => None,
            Stop::Eof => return Err(self.err(format!("unexpected EOF: {{{{{keyword}}}}} has no {{{{end}}}}"))),
            Stop::Else => {
                self.skip_space();
                let chained = match self.peek() {
                    Tok::Ident(k) if (k == "if" || k == "with") && keyword != "range" => Some(k.clone()),
                    _ => None,
                };
                if let Some(k) = chained {
                    // `{{else if x}}` is `{{else}}{{if x}}...{{end}}` sharing the outer `{{end}}`.
                    self.next();
                    self.enter()?;
                    let inner = self.control(&k, self.line())?;
                    self.depth -= 1;
                    Some(vec![inner])
                } else {
                    self.expect_right("else")?;
                    let (else_list, stop) = self.list()?;
                    if !matches!(stop, Stop::End) {
                        return Err(self.err(format!("expected {{{{end}}}} after {{{{else}}}} of {{{{{keyword}}}}}")));
                    }
                    Some(else_list)
                }
            }
        };
        self.vars.truncate(vars_mark);
        Ok(match keyword {
            "if" => Node::If { pipe, list, else_list, line },
            "with" => Node::With { pipe, list, else_list, line },
            _ => Node::Range { pipe, list, else_list, line },
        })
    }

    /// A pipeline up to `}}` (or `)` when nested).
    fn pipeline(&mut self, context: &str, allow_two: bool) -> Result<Pipe, GoError> {
        let mut pipe = Pipe::default();
        // Declarations: `$x :=`, `$x =`, `$i, $e :=`.
        let save = self.pos;
        self.skip_space();
        if let Tok::Var(v) = self.peek().clone() {
            self.next();
            self.skip_space();
            match self.peek().clone() {
                Tok::Declare | Tok::Assign => {
                    pipe.assign = *self.peek() == Tok::Assign;
                    self.next();
                    pipe.decl.push(v);
                }
                Tok::Comma if allow_two => {
                    self.next();
                    self.skip_space();
                    let Tok::Var(v2) = self.next() else { return Err(self.err("expected a second variable")) };
                    self.skip_space();
                    match self.next() {
                        Tok::Declare => {}
                        Tok::Assign => pipe.assign = true,
                        _ => return Err(self.err("expected := after the range variables")),
                    }
                    pipe.decl.push(v);
                    pipe.decl.push(v2);
                }
                _ => self.pos = save,
            }
        } else {
            self.pos = save;
        }
        for v in &pipe.decl {
            if pipe.assign {
                if !self.vars.contains(v) {
                    return Err(self.err(format!("undefined variable \"{v}\"")));
                }
            } else {
                self.vars.push(v.clone());
            }
        }
        loop {
            self.skip_space();
            match self.peek() {
                Tok::Right | Tok::RParen => {
                    if pipe.cmds.is_empty() {
                        return Err(self.err(format!("missing value for {context}")));
                    }
                    if *self.peek() == Tok::Right {
                        self.next();
                    }
                    return Ok(pipe);
                }
                Tok::Eof => return Err(self.err("unclosed action")),
                _ => {}
            }
            let cmd = self.command()?;
            pipe.cmds.push(cmd);
            self.skip_space();
            if *self.peek() == Tok::Pipe {
                self.next();
                self.skip_space();
                if matches!(self.peek(), Tok::Right | Tok::RParen) {
                    return Err(self.err("missing command after |"));
                }
            }
        }
    }

    fn command(&mut self) -> Result<Cmd, GoError> {
        let mut args = Vec::new();
        loop {
            self.skip_space();
            match self.peek() {
                Tok::Right | Tok::RParen | Tok::Pipe => break,
                _ => args.push(self.operand()?),
            }
            match self.peek() {
                Tok::Space | Tok::Right | Tok::RParen | Tok::Pipe => {}
                t => return Err(self.err(format!("missing space before {t:?}"))),
            }
        }
        if args.is_empty() {
            return Err(self.err("empty command"));
        }
        // gjson paths written in the template are checked now: `gjson "..."`, and a first word "`path`".
        match args.as_slice() {
            [Arg::Func(f), Arg::Str(path), ..] if f == "gjson" => {
                super::check_gjson_path(path).map_err(|m| self.err(m))?
            }
            [Arg::Str(s), ..] if s.len() >= 2 && s.starts_with('`') && s.ends_with('`') => {
                super::check_gjson_path(s).map_err(|m| self.err(m))?
            }
            _ => {}
        }
        Ok(Cmd { args })
    }

    fn chain(&mut self) -> Vec<String> {
        let mut fields = Vec::new();
        while let Tok::Field(f) = self.peek().clone() {
            self.next();
            fields.push(f);
        }
        fields
    }

    fn operand(&mut self) -> Result<Arg, GoError> {
        let tok = self.next();
        let arg = match tok {
            Tok::Dot => Arg::Dot,
            Tok::Field(f) => {
                let mut fields = vec![f];
                fields.extend(self.chain());
                return Ok(Arg::Field(fields));
            }
            Tok::Var(v) => {
                if !self.vars.contains(&v) && v != "$" {
                    return Err(self.err(format!("undefined variable \"{v}\"")));
                }
                let fields = self.chain();
                return Ok(Arg::Var(v, fields));
            }
            Tok::Str(s) => Arg::Str(s),
            Tok::Char(c) => Arg::Char(c),
            Tok::Number(n) => {
                Arg::Const(number_value(&n).ok_or_else(|| self.err(format!("bad number syntax: {n:?}")))?)
            }
            Tok::Ident(name) => match name.as_str() {
                "true" => Arg::Const(Value::Bool(true)),
                "false" => Arg::Const(Value::Bool(false)),
                "nil" => Arg::Nil,
                "if" | "else" | "end" | "range" | "with" | "break" | "continue" | "define" | "template" | "block" => {
                    return Err(self.err(format!("unexpected keyword {name:?} in operand")))
                }
                _ => {
                    (self.known)(&name).map_err(|m| self.err(m))?;
                    Arg::Func(name)
                }
            },
            Tok::LParen => {
                self.enter()?;
                let pipe = self.pipeline("parenthesized pipeline", false)?;
                self.depth -= 1;
                match self.next() {
                    Tok::RParen => {}
                    _ => return Err(self.err("unclosed left paren")),
                }
                let fields = self.chain();
                return Ok(Arg::Pipe(Box::new(pipe), fields));
            }
            t => return Err(self.err(format!("unexpected {t:?} in operand"))),
        };
        if let Tok::Field(_) = self.peek() {
            return Err(self.err("unexpected . after term"));
        }
        Ok(arg)
    }
}

/// Parses a template; `known` accepts a function name or says why it is refused.
pub fn parse(src: &str, known: &dyn Fn(&str) -> Result<(), String>) -> Result<List, GoError> {
    let toks = Lexer { src, pos: 0, line: 1, toks: Vec::new() }.run()?;
    let mut p = Parser { toks, pos: 0, depth: 0, in_range: 0, vars: vec!["$".into()], known };
    let (list, stop) = p.list()?;
    match stop {
        Stop::Eof => Ok(list),
        Stop::End => Err(p.err("unexpected {{end}}")),
        Stop::Else => Err(p.err("unexpected {{else}}")),
    }
}
