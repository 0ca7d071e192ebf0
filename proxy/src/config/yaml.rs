//! A YAML document tree that remembers where every node came from: a line and
//! column in the file, or the `IRON_*` variable that overrode it. Built from
//! yaml-rust2's event stream so config errors can point at the offending key.
//! Nesting depth and alias expansion are limited ([`limits`]); merge keys
//! ([`merge`]), the standard tags ([`tags`]) and numbers and booleans in typed
//! fields ([`resolve`]) are read as yaml.v3 reads them.

mod explain;
mod limits;
mod merge;
mod resolve;
mod tags;

use std::collections::{HashMap, HashSet};

use yaml_rust2::parser::{Event, Tag};
use yaml_rust2::scanner::{Marker, TScalarStyle};

pub(crate) use resolve::{number, yaml11_bool, Number};
use tags::Std;

/// Where a node came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pos {
    /// 1-based line and column in the config file.
    File { line: usize, column: usize },
    /// Set by an environment override.
    Env(&'static str),
}

impl Pos {
    fn from_marker(m: Marker) -> Pos {
        // yaml-rust2 lines are 1-based, columns 0-based.
        Pos::File {
            line: m.line(),
            column: m.col() + 1,
        }
    }
}

/// One YAML node with its position.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

/// The shape of a node.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// A scalar; `plain` is false when quoted or a block scalar (always a string then).
    Scalar { text: String, plain: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in document order.
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// A plain scalar, as an environment override produces.
    pub fn plain(text: impl Into<String>, pos: Pos) -> Node {
        Node {
            pos,
            kind: Kind::Scalar {
                text: text.into(),
                plain: true,
            },
        }
    }

    /// An empty mapping.
    pub fn empty_map(pos: Pos) -> Node {
        Node {
            pos,
            kind: Kind::Map(Vec::new()),
        }
    }

    /// True for `~`, `null` and an empty plain value.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// A short name of the node's type, for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            _ if self.is_null() => "null",
            Kind::Scalar { plain: false, .. } => "a string",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }

    /// The value under `key` when this is a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node and value under `key` when this is a mapping.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.scalar() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The scalar text, when this is a scalar.
    pub fn scalar(&self) -> Option<&str> {
        match &self.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Sets `key` to `value` in this mapping (replacing an existing value, keeping its key's position).
    pub fn set(&mut self, key: &str, value: Node) {
        if let Kind::Map(entries) = &mut self.kind {
            match entries.iter_mut().find(|(k, _)| k.scalar() == Some(key)) {
                Some((_, v)) => *v = value,
                None => entries.push((Node::plain(key, value.pos), value)),
            }
        }
    }

    /// Removes `key` from this mapping.
    pub fn remove(&mut self, key: &str) {
        if let Kind::Map(entries) = &mut self.kind {
            entries.retain(|(k, _)| k.scalar() != Some(key));
        }
    }

    /// The mapping under `key`, created (empty) when absent or null. `None` when
    /// this node or the existing value is not a mapping: decoding reports that.
    pub fn map_mut(&mut self, key: &str, pos: Pos) -> Option<&mut Node> {
        let absent = self.get(key).is_none_or(Node::is_null);
        if absent {
            self.set(key, Node::empty_map(pos));
        }
        let Kind::Map(entries) = &mut self.kind else {
            return None;
        };
        let (_, v) = entries.iter_mut().find(|(k, _)| k.scalar() == Some(key))?;
        matches!(v.kind, Kind::Map(_)).then_some(v)
    }
}

/// A YAML syntax error.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses the first document of `text`: `None` when there is nothing in it (no
/// document, only comments and whitespace, or a document that is just null).
///
/// A leading UTF-8 byte order mark, which Windows editors write, is skipped as
/// yaml.v3 skips it (yaml-rust2 would read it as part of the first key).
/// Nesting and alias expansion are limited (see [`limits`]), so no input can
/// overflow the stack or exhaust memory. Characters YAML does not allow are
/// refused where they are ([`printable`]).
pub(crate) fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    printable(text)?;
    let events = limits::read_events(text)?;
    let mut builder = Builder {
        text,
        aliased: events.aliased,
        stack: Vec::new(),
        anchors: HashMap::new(),
        docs: Vec::new(),
        previous: 0,
    };
    for (ev, mark) in events.list {
        builder.on_event(ev, mark)?;
    }
    let mut docs = builder.docs.into_iter();
    let root = docs.next();
    if let Some(extra) = docs.next() {
        return Err(SyntaxError {
            pos: extra.pos,
            message: "the config must be a single YAML document (found a second one)".into(),
        });
    }
    Ok(root.filter(|root| !root.is_null()))
}

/// Refuses the first character outside YAML's printable set (`c-printable`:
/// tab, line breaks, U+0020–U+007E, U+0085, U+00A0–U+D7FF, U+E000–U+FFFD and
/// above U+FFFF), with its line and column, as yaml.v3 refuses them
/// ("control characters are not allowed"). yaml-rust2 reads a NUL as the end
/// of the input: a stray one (a torn write, an editor's artefact) silently
/// dropped the rest of the file, its allowlist included, and a reload applied
/// what was left.
fn printable(text: &str) -> Result<(), SyntaxError> {
    let (mut line, mut column) = (1, 1);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let allowed = matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}')
            || matches!(c, '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}')
            || c > '\u{ffff}';
        if !allowed {
            return Err(SyntaxError {
                pos: Pos::File { line, column },
                message: format!(
                    "U+{:04X} is a control character, which YAML does not allow",
                    u32::from(c)
                ),
            });
        }
        // CRLF, CR and LF each end a line.
        if c == '\n' || (c == '\r' && chars.peek() != Some(&'\n')) {
            (line, column) = (line + 1, 1);
        } else if c != '\r' {
            column += 1;
        }
    }
    Ok(())
}

/// Builds nodes from parser events.
struct Builder<'t> {
    /// The document, to find where a tag was written.
    text: &'t str,
    /// Open sequences and mappings, each with its anchor id; a mapping keeps a pending key.
    stack: Vec<(Node, usize, Option<Node>)>,
    /// The anchors an alias refers to; only these are kept (a copy each).
    aliased: HashSet<usize>,
    anchors: HashMap<usize, Node>,
    docs: Vec<Node>,
    /// Character index of the previous event's mark.
    previous: usize,
}

impl Builder<'_> {
    fn finish(&mut self, node: Node, anchor: usize) {
        if self.aliased.contains(&anchor) {
            self.anchors.insert(anchor, node.clone());
        }
        let Some((parent, _, pending)) = self.stack.last_mut() else {
            self.docs.push(node);
            return;
        };
        match &mut parent.kind {
            Kind::Seq(items) => items.push(node),
            Kind::Map(entries) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => entries.push((key, node)),
            },
            Kind::Scalar { .. } => {}
        }
    }

    /// Takes one event. The events were read within the limits, so every copy
    /// made here was counted there.
    fn on_event(&mut self, ev: Event, mark: Marker) -> Result<(), SyntaxError> {
        let pos = Pos::from_marker(mark);
        let previous = std::mem::replace(&mut self.previous, mark.index());
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let plain = style == TScalarStyle::Plain;
                let (text, plain) = match tag {
                    None => (text, plain),
                    Some(tag) => {
                        let std = self.honoured(&tag, mark, previous)?;
                        tags::scalar(std, text, plain).map_err(|message| SyntaxError {
                            pos: self.tag_pos(&tag, mark, previous),
                            message,
                        })?
                    }
                };
                self.finish(
                    Node {
                        pos,
                        kind: Kind::Scalar { text, plain },
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, tag) => {
                self.check_collection(tag.as_ref(), false, mark, previous)?;
                self.stack.push((
                    Node {
                        pos,
                        kind: Kind::Seq(Vec::new()),
                    },
                    anchor,
                    None,
                ));
            }
            Event::MappingStart(anchor, tag) => {
                self.check_collection(tag.as_ref(), true, mark, previous)?;
                self.stack.push((
                    Node {
                        pos,
                        kind: Kind::Map(Vec::new()),
                    },
                    anchor,
                    None,
                ));
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((mut node, anchor, _)) = self.stack.pop() {
                    if let Kind::Map(entries) = &mut node.kind {
                        // A block mapping's start mark is at its first ':'; point at the first key instead.
                        if let Some((k, _)) = entries.first() {
                            node.pos = k.pos;
                        }
                        if entries.iter().any(|(k, _)| merge::is_merge_key(k)) {
                            *entries = merge::expand(std::mem::take(entries))?;
                        }
                    }
                    self.finish(node, anchor);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(node) => {
                    if let Some((_, _, Some(key))) = self.stack.last() {
                        merge::check_alias(key, &node, pos)?;
                    }
                    self.finish(Node { pos, ..node }, 0)
                }
                None => {
                    return Err(SyntaxError {
                        pos,
                        message: "unknown alias".into(),
                    })
                }
            },
            _ => {}
        }
        Ok(())
    }

    /// What `tag` means, or an error naming it where it was written.
    fn honoured(&self, tag: &Tag, mark: Marker, previous: usize) -> Result<Std, SyntaxError> {
        tags::standard(tag).map_err(|message| SyntaxError {
            pos: self.tag_pos(tag, mark, previous),
            message,
        })
    }

    /// A sequence's or mapping's tag must be honoured and fit it.
    fn check_collection(
        &self,
        tag: Option<&Tag>,
        is_map: bool,
        mark: Marker,
        previous: usize,
    ) -> Result<(), SyntaxError> {
        let Some(tag) = tag else {
            return Ok(());
        };
        let std = self.honoured(tag, mark, previous)?;
        tags::collection(std, is_map).map_err(|message| SyntaxError {
            pos: self.tag_pos(tag, mark, previous),
            message,
        })
    }

    /// Where `tag` was written: the parser marks the tagged node, not its tag,
    /// so the tag is looked for between the line of the previous event and the
    /// node (the node itself when it is not found, e.g. written in full form).
    fn tag_pos(&self, tag: &Tag, mark: Marker, previous: usize) -> Pos {
        let byte = |chars: usize| {
            self.text
                .char_indices()
                .nth(chars)
                .map_or(self.text.len(), |(b, _)| b)
        };
        let (end, start) = (byte(mark.index()), byte(previous.min(mark.index())));
        let start = self.text[..start].rfind('\n').map_or(0, |nl| nl + 1);
        let Some(found) = self.text[start..end].rfind(&tags::display(tag)) else {
            return Pos::from_marker(mark);
        };
        let at = start + found;
        let line_start = self.text[..at].rfind('\n').map_or(0, |nl| nl + 1);
        Pos::File {
            line: self.text[..at].matches('\n').count() + 1,
            column: self.text[line_start..at].chars().count() + 1,
        }
    }
}

#[cfg(test)]
mod tests;
