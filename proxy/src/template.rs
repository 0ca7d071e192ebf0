//! Go `text/template`-compatible formatters, for `inject.formatter` and the
//! `hmac_sign` message and header templates. Parsed once at config load.
//!
//! We implement the subset those fields use rather than embed gtmpl: we need
//! the referenced field names at load time (Go's `missingkey=error` makes an
//! unknown field a config error), and errors that can never carry a secret.
//! Supported, with Go's meaning:
//! - text, and actions `{{ ... }}` with the trim markers `{{- ` and ` -}}`;
//! - comments `{{/* ... */}}`;
//! - fields `.Value`, `.Credentials.key` (nested maps);
//! - string literals `"..."` (Go escapes) and raw strings `` `...` ``;
//! - function calls `{{ base64 "x-access-token:" .Value }}`: `base64`
//!   concatenates its arguments and base64-encodes them (standard alphabet);
//! - pipelines `{{ .Value | base64 }}` (the left value becomes the last argument).
//!
//! Anything else (`if`, `range`, variables, numbers, `.` alone) is a parse error.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use zeroize::Zeroizing;

/// Template errors. None of them contains a value from the context.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    /// The template text is malformed or uses an unsupported construct.
    #[error("template column {column}: {message}")]
    Parse {
        /// 1-based character column in the template text.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A field the template uses is not in the context.
    #[error("template field {0} is not set")]
    MissingField(String),
    /// A field names a map where a value was needed (e.g. `.Credentials`).
    #[error("template field {0} is a map, not a value")]
    NotAValue(String),
    /// The output is not UTF-8 text where text is needed (a binary `.Body`
    /// rendered into a header).
    #[error("the rendered value is not UTF-8 text")]
    NotText,
}

/// A parsed template.
#[derive(Clone)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

#[derive(Clone)]
enum Piece {
    Text(String),
    Action(Vec<Command>),
}

#[derive(Clone)]
enum Command {
    Operand(Operand),
    Call(Func, Vec<Operand>),
}

#[derive(Clone)]
enum Operand {
    Field(Vec<String>),
    Literal(String),
}

#[derive(Clone, Copy)]
enum Func {
    Base64,
}

const FUNCS: &[(&str, Func)] = &[("base64", Func::Base64)];

impl Template {
    /// Parses `source`.
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut rest = source;
        let mut offset = 0; // chars consumed, for columns
        let mut trim_next = false;
        while !rest.is_empty() {
            let Some(open) = rest.find("{{") else {
                push_text(&mut pieces, rest, trim_next, false);
                break;
            };
            let inner_start = open + 2;
            let after_open = &rest[inner_start..];
            let trim_left = after_open.starts_with("- ")
                || after_open.starts_with("-\t")
                || after_open.starts_with("-\n");
            push_text(&mut pieces, &rest[..open], trim_next, trim_left);
            let column = offset + rest[..open].chars().count() + 1;
            let close = after_open.find("}}").ok_or(TemplateError::Parse {
                column,
                message: "unclosed action".into(),
            })?;
            let mut inner = &after_open[..close];
            if trim_left {
                inner = &inner[1..];
            }
            trim_next = inner.ends_with(" -") || inner.ends_with("\t-") || inner.ends_with("\n-");
            if trim_next {
                inner = &inner[..inner.len() - 1];
            }
            let trimmed = inner.trim();
            if !(trimmed.starts_with("/*") && trimmed.ends_with("*/")) {
                // Columns inside `inner` count from after `{{` and the trim
                // marker's `-`, which was cut from its start.
                let inner_column = column + 2 + usize::from(trim_left);
                let action =
                    parse::parse_action(inner).map_err(|(c, message)| TemplateError::Parse {
                        column: inner_column + c,
                        message,
                    })?;
                pieces.push(Piece::Action(action));
            }
            let consumed = inner_start + close + 2;
            offset += rest[..consumed].chars().count();
            rest = &rest[consumed..];
        }
        Ok(Template {
            source: source.to_string(),
            pieces,
        })
    }

    /// The template text as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Every field path the template reads, e.g. `["Credentials", "key"]`.
    pub fn fields(&self) -> Vec<&[String]> {
        let mut out = Vec::new();
        for piece in &self.pieces {
            let Piece::Action(cmds) = piece else { continue };
            for cmd in cmds {
                let ops: &[Operand] = match cmd {
                    Command::Operand(op) => std::slice::from_ref(op),
                    Command::Call(_, args) => args,
                };
                out.extend(ops.iter().filter_map(|op| match op {
                    Operand::Field(path) => Some(path.as_slice()),
                    Operand::Literal(_) => None,
                }));
            }
        }
        out
    }

    /// The text the template writes whatever its context: its literal
    /// text, and each action whose value is a string literal
    /// (`{{ "\n" }}`). A function's output (base64) and a field's value are
    /// not in it. For checks at load of what can never be valid where the
    /// output goes (a control character in a header value).
    pub fn fixed_text(&self) -> Vec<&str> {
        self.pieces
            .iter()
            .filter_map(|piece| match piece {
                Piece::Text(t) => Some(t.as_str()),
                Piece::Action(cmds) => match cmds.last() {
                    Some(Command::Operand(Operand::Literal(s))) => Some(s.as_str()),
                    _ => None,
                },
            })
            .collect()
    }

    /// Renders with `ctx` into text. A missing field is an error (Go's
    /// `missingkey=error`), and so is output that is not UTF-8 (a binary
    /// `.Body`): use [`Template::render_bytes`] where bytes will do.
    pub fn render(&self, ctx: &TemplateContext) -> Result<String, TemplateError> {
        let mut bytes = self.render_bytes(ctx)?;
        // Moved out, not copied: the wiped buffer keeps no second copy.
        String::from_utf8(std::mem::take(&mut *bytes)).map_err(|e| {
            // The caller gets no value back, so wipe the one in the error.
            drop(Zeroizing::new(e.into_bytes()));
            TemplateError::NotText
        })
    }

    /// Renders with `ctx` into bytes: values are byte strings, as in Go, so
    /// a binary request body renders as it is.
    pub fn render_bytes(&self, ctx: &TemplateContext) -> Result<Zeroizing<Vec<u8>>, TemplateError> {
        let mut out = Zeroizing::new(Vec::new());
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.extend_from_slice(t.as_bytes()),
                Piece::Action(cmds) => {
                    let mut prev: Option<Zeroizing<Vec<u8>>> = None;
                    for cmd in cmds {
                        prev = Some(match cmd {
                            Command::Operand(op) => eval(op, ctx)?,
                            Command::Call(func, args) => {
                                let mut vals =
                                    args.iter()
                                        .map(|a| eval(a, ctx))
                                        .collect::<Result<Vec<_>, _>>()?;
                                vals.extend(prev.take());
                                call(*func, &vals)
                            }
                        });
                    }
                    if let Some(v) = prev {
                        out.extend_from_slice(&v);
                    }
                }
            }
        }
        Ok(out)
    }
}

fn push_text(pieces: &mut Vec<Piece>, text: &str, trim_start: bool, trim_end: bool) {
    let mut t = text;
    if trim_start {
        t = t.trim_start();
    }
    if trim_end {
        t = t.trim_end();
    }
    if !t.is_empty() {
        pieces.push(Piece::Text(t.to_string()));
    }
}

fn eval(op: &Operand, ctx: &TemplateContext) -> Result<Zeroizing<Vec<u8>>, TemplateError> {
    match op {
        Operand::Literal(s) => Ok(Zeroizing::new(s.as_bytes().to_vec())),
        Operand::Field(path) => ctx.lookup(path).map(|s| Zeroizing::new(s.to_vec())),
    }
}

fn call(func: Func, args: &[Zeroizing<Vec<u8>>]) -> Zeroizing<Vec<u8>> {
    match func {
        Func::Base64 => {
            let mut joined = Zeroizing::new(Vec::new());
            for a in args {
                joined.extend_from_slice(a);
            }
            let encoded = base64::engine::general_purpose::STANDARD.encode(joined.as_slice());
            Zeroizing::new(encoded.into_bytes())
        }
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Template({:?})", self.source)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Template {}

/// A value in a [`TemplateContext`]: a byte string (often a secret, zeroized
/// on drop; text, except a binary `.Body`) or a nested map.
#[derive(Clone)]
pub enum TemplateValue {
    /// A string value, as bytes (Go strings are bytes too).
    Str(Zeroizing<Vec<u8>>),
    /// A nested map, e.g. `Credentials`.
    Map(BTreeMap<String, TemplateValue>),
}

/// The data a template renders against. `Debug` shows names only, never values.
#[derive(Clone, Default)]
pub struct TemplateContext {
    root: BTreeMap<String, TemplateValue>,
}

impl TemplateContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a top-level string field, e.g. `Value`.
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.root.insert(
            name.into(),
            TemplateValue::Str(Zeroizing::new(value.into().into_bytes())),
        );
        self
    }

    /// Sets a top-level field to bytes that need not be text, e.g. `Body`.
    pub fn set_bytes(&mut self, name: impl Into<String>, value: &[u8]) -> &mut Self {
        self.root.insert(
            name.into(),
            TemplateValue::Str(Zeroizing::new(value.to_vec())),
        );
        self
    }

    /// Sets a top-level map field, e.g. `Credentials`.
    pub fn set_map<K: Into<String>, V: Into<String>>(
        &mut self,
        name: impl Into<String>,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> &mut Self {
        let map = entries
            .into_iter()
            .map(|(k, v)| {
                let v = Zeroizing::new(v.into().into_bytes());
                (k.into(), TemplateValue::Str(v))
            })
            .collect();
        self.root.insert(name.into(), TemplateValue::Map(map));
        self
    }

    fn lookup(&self, path: &[String]) -> Result<&[u8], TemplateError> {
        let dotted = || path.iter().map(|p| format!(".{p}")).collect::<String>();
        let mut map = &self.root;
        for (i, seg) in path.iter().enumerate() {
            match map.get(seg) {
                Some(TemplateValue::Str(s)) if i + 1 == path.len() => return Ok(s),
                Some(TemplateValue::Map(m)) if i + 1 < path.len() => map = m,
                Some(TemplateValue::Map(_)) => return Err(TemplateError::NotAValue(dotted())),
                Some(TemplateValue::Str(_)) | None => {
                    return Err(TemplateError::MissingField(dotted()))
                }
            }
        }
        Err(TemplateError::MissingField(dotted()))
    }
}

impl fmt::Debug for TemplateContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.root.keys()).finish()
    }
}

#[cfg(test)]
mod fuzz;
mod parse;
#[cfg(test)]
mod tests;
