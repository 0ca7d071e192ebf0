//! A YAML document tree that remembers where every node came from: a line and
//! column in the file, or the `IRON_*` variable that overrode it. Built from
//! yaml-rust2's event stream so config errors can point at the offending key.
//! Nesting depth and alias expansion are limited ([`limits`]).

mod limits;

use std::collections::{HashMap, HashSet};

use yaml_rust2::parser::Event;
use yaml_rust2::scanner::{Marker, TScalarStyle};

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

/// Parses the first document of `text`. An empty document is an empty mapping.
///
/// Nesting and alias expansion are limited (see [`limits`]), so no input can
/// overflow the stack or exhaust memory.
pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let events = limits::read_events(text)?;
    let mut builder = Builder {
        aliased: events.aliased,
        ..Builder::default()
    };
    for (ev, mark) in events.list {
        builder.on_event(ev, mark)?;
    }
    let mut docs = builder.docs.into_iter();
    let root = docs
        .next()
        .unwrap_or(Node::empty_map(Pos::File { line: 1, column: 1 }));
    if let Some(extra) = docs.next() {
        return Err(SyntaxError {
            pos: extra.pos,
            message: "the config must be a single YAML document (found a second one)".into(),
        });
    }
    Ok(if root.is_null() {
        Node::empty_map(root.pos)
    } else {
        root
    })
}

/// Builds nodes from parser events.
#[derive(Default)]
struct Builder {
    /// Open sequences and mappings, each with its anchor id; a mapping keeps a pending key.
    stack: Vec<(Node, usize, Option<Node>)>,
    /// The anchors an alias refers to; only these are kept (a copy each).
    aliased: HashSet<usize>,
    anchors: HashMap<usize, Node>,
    docs: Vec<Node>,
}

impl Builder {
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
        match ev {
            Event::Scalar(text, style, anchor, _tag) => {
                let plain = style == TScalarStyle::Plain;
                self.finish(
                    Node {
                        pos,
                        kind: Kind::Scalar { text, plain },
                    },
                    anchor,
                );
            }
            Event::SequenceStart(anchor, _) => self.stack.push((
                Node {
                    pos,
                    kind: Kind::Seq(Vec::new()),
                },
                anchor,
                None,
            )),
            Event::MappingStart(anchor, _) => self.stack.push((
                Node {
                    pos,
                    kind: Kind::Map(Vec::new()),
                },
                anchor,
                None,
            )),
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some((mut node, anchor, _)) = self.stack.pop() {
                    // A block mapping's start mark is at its first ':'; point at the first key instead.
                    if let Kind::Map(entries) = &node.kind {
                        if let Some((k, _)) = entries.first() {
                            node.pos = k.pos;
                        }
                    }
                    self.finish(node, anchor);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(node) => self.finish(Node { pos, ..node }, 0),
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
}
