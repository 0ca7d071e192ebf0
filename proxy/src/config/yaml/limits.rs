//! Limits that keep a hostile config from crashing or exhausting the process that
//! parses it (start-up, `validate`, and a reload inside the running proxy).
//!
//! The document is read event by event (yaml-rust2's `Parser::load` recurses once
//! per nesting level and overflows a tokio worker's stack on a few thousand levels
//! of block nesting), and before any node is built:
//! - sequences and mappings may nest at most [`MAX_DEPTH`] levels, counting the
//!   levels an alias brings with it;
//! - aliases may expand to at most [`MAX_ALIAS_NODES`] nodes and
//!   [`MAX_ALIAS_BYTES`] bytes of scalar text in all (a "billion laughs" file of
//!   a few lines would otherwise expand to gigabytes).
//!
//! Merge keys (`<<: *base`, see `merge.rs`) move what an alias brought into the
//! mapping that merges it, so they are counted here at the alias, in full, even
//! when merging drops keys the mapping sets itself (building copied them all
//! first); a mapping merged inline is text of the file, not an expansion.
//!
//! Building then copies only anchors some alias uses, each once; such a copy is
//! no bigger than an expansion already counted, so building stays within twice
//! the alias budget (an unused anchor on every level would otherwise be copied
//! up to [`MAX_DEPTH`] times).

use std::collections::{HashMap, HashSet};

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

use super::{Pos, SyntaxError};

/// How deep sequences and mappings may nest (serde_yaml's limit too). Real configs
/// stay under 10 levels.
pub(crate) const MAX_DEPTH: usize = 128;

/// How many nodes all aliases of a document may expand to together. A real config
/// that reuses an allowlist of a few hundred rules in several transforms stays far below.
pub(crate) const MAX_ALIAS_NODES: usize = 100_000;

/// How many bytes of scalar text all aliases of a document may expand to together (4 MiB).
pub(crate) const MAX_ALIAS_BYTES: usize = 4 << 20;

/// A document's events, read within the limits.
pub(super) struct Events {
    /// Every event after the stream start, in order, with its position.
    pub list: Vec<(Event, Marker)>,
    /// The anchors some alias refers to: only these need a copy while building.
    pub aliased: HashSet<usize>,
}

/// What a node expands to: its nodes, its scalar bytes, and how many levels of
/// sequences and mappings it spans (0 for a scalar, 1 for a flat list).
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: usize,
    bytes: usize,
    height: usize,
}

impl Size {
    /// Adds a child of size `child` to this (open) collection.
    fn add(&mut self, child: Size) {
        self.nodes = self.nodes.saturating_add(child.nodes);
        self.bytes = self.bytes.saturating_add(child.bytes);
        self.height = self.height.max(child.height + 1);
    }
}

/// Reads all events of `text`, stopping at the first syntax error or exceeded limit.
pub(super) fn read_events(text: &str) -> Result<Events, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut events = Events {
        list: Vec::new(),
        aliased: HashSet::new(),
    };
    // Open collections: anchor id and size so far (the collection itself counted).
    let mut open: Vec<(usize, Size)> = Vec::new();
    let mut anchors: HashMap<usize, Size> = HashMap::new();
    let mut expanded = Size::default();
    loop {
        let (ev, mark) = parser.next_token().map_err(|e| {
            let (line, column) = (e.marker().line(), e.marker().col() + 1);
            let (pos, message) = super::explain::explain(text, line, column, e.info());
            SyntaxError { pos, message }
        })?;
        let done = match &ev {
            Event::StreamEnd => return Ok(events),
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if open.len() >= MAX_DEPTH {
                    return Err(too_deep(mark));
                }
                let size = Size {
                    nodes: 1,
                    bytes: 0,
                    height: 1,
                };
                open.push((*anchor, size));
                None
            }
            Event::SequenceEnd | Event::MappingEnd => open.pop(),
            Event::Scalar(text, _, anchor, _) => {
                let size = Size {
                    nodes: 1,
                    bytes: text.len(),
                    height: 0,
                };
                Some((*anchor, size))
            }
            Event::Alias(id) => {
                // The parser refuses an alias to an anchor it has not seen; one to an
                // anchor still open (`&a [*a]`) is not in `anchors` yet.
                let Some(size) = anchors.get(id).copied() else {
                    return Err(SyntaxError {
                        pos: Pos::from_marker(mark),
                        message: "alias to an anchor that contains it".into(),
                    });
                };
                if open.len() + size.height > MAX_DEPTH {
                    return Err(too_deep(mark));
                }
                expanded.nodes = expanded.nodes.saturating_add(size.nodes);
                expanded.bytes = expanded.bytes.saturating_add(size.bytes);
                if expanded.nodes > MAX_ALIAS_NODES {
                    let message = format!("aliases expand to more than {MAX_ALIAS_NODES} nodes");
                    return Err(SyntaxError {
                        pos: Pos::from_marker(mark),
                        message,
                    });
                }
                if expanded.bytes > MAX_ALIAS_BYTES {
                    let message = format!(
                        "aliases expand to more than {} MiB of text",
                        MAX_ALIAS_BYTES >> 20
                    );
                    return Err(SyntaxError {
                        pos: Pos::from_marker(mark),
                        message,
                    });
                }
                events.aliased.insert(*id);
                Some((0, size))
            }
            _ => None,
        };
        // A finished node: remember its size if anchored, and count it in its parent.
        if let Some((anchor, size)) = done {
            if anchor > 0 {
                anchors.insert(anchor, size);
            }
            if let Some((_, parent)) = open.last_mut() {
                parent.add(size);
            }
        }
        events.list.push((ev, mark));
    }
}

fn too_deep(mark: Marker) -> SyntaxError {
    SyntaxError {
        pos: Pos::from_marker(mark),
        message: format!("nesting deeper than {MAX_DEPTH} levels"),
    }
}
