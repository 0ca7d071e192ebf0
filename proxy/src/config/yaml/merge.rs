//! YAML merge keys, as yaml.v3 reads them: `<<: *base` copies the entries of
//! the mapping `base` into the mapping that holds the key, and `<<: [*a, *b]`
//! those of several. A key the mapping sets itself wins over a merged one, and
//! among merged mappings the earlier wins (`a` over `b`).
//!
//! The merged entries take the place of the `<<` entry, in the order of the
//! merged mappings; the mapping's own keys keep theirs. Merged entries keep
//! their positions, so an error in one points where it was written.
//!
//! The value of `<<` is a mapping, an alias of one, or a list written in place
//! of mappings or aliases of them. yaml.v3 refuses an alias of a list, even a
//! list of mappings (`<<: *defaults` with `defaults: [*a, *b]`), so this reader
//! does too ([`check_alias`]).
//!
//! Merging moves entries out of nodes the builder already made: an alias was
//! counted against the alias limits where it occurs (see [`super::limits`]),
//! so a merge adds no work the limits have not counted.

use std::collections::HashSet;

use super::{Kind, Node, Pos, SyntaxError};

/// True for a merge key: a plain `<<` (quoted or `!!str`, it is an ordinary key).
pub(super) fn is_merge_key(key: &Node) -> bool {
    matches!(&key.kind, Kind::Scalar { text, plain: true } if text == "<<")
}

/// The entries of a mapping with its merge key expanded.
pub(super) fn expand(entries: Vec<(Node, Node)>) -> Result<Vec<(Node, Node)>, SyntaxError> {
    // The mapping's own keys, which merged entries never override.
    let mut taken: HashSet<String> = entries
        .iter()
        .filter(|(k, _)| !is_merge_key(k))
        .filter_map(|(k, _)| k.scalar().map(str::to_string))
        .collect();
    let mut out = Vec::with_capacity(entries.len());
    let mut merged = false;
    for (key, value) in entries {
        if !is_merge_key(&key) {
            out.push((key, value));
            continue;
        }
        if merged {
            return Err(SyntaxError {
                pos: key.pos,
                message: "a mapping holds one '<<' merge key; merge several mappings with \
                          '<<: [*a, *b]'"
                    .into(),
            });
        }
        merged = true;
        let sources = match value.kind {
            Kind::Map(_) => vec![value],
            Kind::Seq(items) => items,
            _ => return Err(not_a_mapping(&value)),
        };
        for source in sources {
            let Kind::Map(source_entries) = source.kind else {
                return Err(not_a_mapping(&source));
            };
            for (k, v) in source_entries {
                match k.scalar() {
                    Some(name) if !taken.insert(name.to_string()) => {}
                    _ => out.push((k, v)),
                }
            }
        }
    }
    Ok(out)
}

/// An alias `aliased`, written at `pos` as the value of `key` in a mapping:
/// an error when `key` is `<<` and the alias names a list, as yaml.v3 has it
/// ("map merge requires map or sequence of maps as the value": only a list
/// written in place may merge several mappings).
pub(super) fn check_alias(key: &Node, aliased: &Node, pos: Pos) -> Result<(), SyntaxError> {
    if is_merge_key(key) && matches!(aliased.kind, Kind::Seq(_)) {
        return Err(SyntaxError {
            pos,
            message: "'<<' merges a mapping or a list of mappings, found an alias of a list \
                      (yaml.v3 refuses it: write the list in place, '<<: [*a, *b]')"
                .into(),
        });
    }
    Ok(())
}

fn not_a_mapping(node: &Node) -> SyntaxError {
    SyntaxError {
        pos: node.pos,
        message: format!(
            "'<<' merges a mapping or a list of mappings, found {}",
            node.type_name()
        ),
    }
}
