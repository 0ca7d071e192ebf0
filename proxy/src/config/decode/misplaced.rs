//! Keys in the wrong place. A key indented under the wrong parent decodes as
//! an unknown field of the mapping it landed in, though it is a key of the
//! parent, of a sibling section or of a mapping inside. The decoder records
//! every mapping's fields and every unknown key as it goes; once the whole
//! document is decoded, an unknown key that is a key of exactly one of those
//! nearby mappings gets an error that says where it belongs:
//! `tls: unknown field 'http_listen' under tls; it belongs under proxy — check its indentation`.
//!
//! Top-level sections the file leaves out are known all the same
//! ([`Places::section`]). A key known in several nearby places (`listen`:
//! `dns`, `intercept`, `management`, `metrics`) keeps the plain message,
//! which lists what is valid where it is.

use super::{render, Seg};
use crate::config::error::ConfigError;
use crate::config::lookalike::Odd;

/// The most mappings remembered: every one of a real config, without
/// letting a hostile file of millions of `{}` cost a copy of each path.
const MAX_MAPPINGS: usize = 10_000;
/// The most unknown keys explained (more errors than are ever shown).
const MAX_UNKNOWN: usize = 100;

/// The mappings decoded, with their fields, and the unknown keys met.
#[derive(Default)]
pub(super) struct Places {
    mappings: Vec<Mapping>,
    unknown: Vec<Unknown>,
}

struct Mapping {
    path: Vec<Seg>,
    fields: Vec<&'static str>,
}

struct Unknown {
    /// The mapping it is in.
    path: Vec<Seg>,
    name: String,
    /// Its lookalike or invisible characters, when it has some: then the key
    /// it reads as is looked for.
    odd: Option<Odd>,
    /// Its error, by index into the decoder's errors.
    error: usize,
}

impl Places {
    /// The mapping at `path` takes `fields`.
    pub(super) fn mapping(&mut self, path: &[Seg], fields: &[&'static str]) {
        if self.mappings.len() < MAX_MAPPINGS {
            self.mappings.push(Mapping {
                path: path.to_vec(),
                fields: fields.to_vec(),
            });
        }
    }

    /// The top-level section `name` takes `fields`, whether the file has it or not.
    pub(super) fn section(&mut self, name: &str, fields: &[&'static str]) {
        self.mapping(&[Seg::Key(name.to_string())], fields);
    }

    /// `name` is not a field of the mapping at `path`; its error is `errors[error]`.
    /// `odd`: its lookalike characters (`lookalike::odd`).
    pub(super) fn unknown(&mut self, path: &[Seg], name: &str, odd: Option<Odd>, error: usize) {
        if self.unknown.len() < MAX_UNKNOWN {
            self.unknown.push(Unknown {
                path: path.to_vec(),
                name: name.to_string(),
                odd,
                error,
            });
        }
    }

    /// Rewrites the error of each unknown key that belongs in exactly one
    /// nearby place.
    pub(super) fn explain(&self, errors: &mut [ConfigError]) {
        for u in &self.unknown {
            let mut places = self.places_of(u);
            places.sort();
            places.dedup();
            let ([there], Some(e)) = (places.as_slice(), errors.get_mut(u.error)) else {
                continue;
            };
            let here = where_is(&u.path);
            e.message = match &u.odd {
                Some(odd) => format!(
                    "unknown field '{}' {here}: {}; '{}' belongs {there} — check its indentation",
                    odd.shown, odd.note, odd.folded
                ),
                None => format!(
                    "unknown field '{}' {here}; it belongs {there} — check its indentation",
                    u.name
                ),
            };
        }
    }

    /// Where `u`'s key is a field: the parent mapping, a sibling, a mapping inside.
    fn places_of(&self, u: &Unknown) -> Vec<String> {
        let name = u
            .odd
            .as_ref()
            .map_or(u.name.as_str(), |o| o.folded.as_str());
        let has = |m: &&Mapping| m.fields.contains(&name);
        // A lookalike of a key of its own mapping is only that (the plain error says so).
        if u.odd.is_some() && self.mappings.iter().filter(has).any(|m| m.path == u.path) {
            return Vec::new();
        }
        let parent = parent_of(&u.path);
        let mut out = Vec::new();
        if let Some(p) = parent {
            if self.mappings.iter().filter(has).any(|m| m.path == p) {
                out.push(where_is(p));
            }
        }
        for m in self.mappings.iter().filter(has) {
            let m_parent = parent_of(&m.path);
            let sibling = m.path != u.path && parent.is_some() && m_parent == parent;
            let inside = m_parent == Some(u.path.as_slice());
            if sibling || inside {
                out.push(format!("under {}", entry_name(&m.path)));
            }
        }
        out
    }
}

/// The mapping that holds the one at `path` (past the list it may be an
/// entry of); `None` for the document itself.
fn parent_of(path: &[Seg]) -> Option<&[Seg]> {
    let end = path.iter().rposition(|s| matches!(s, Seg::Key(_)))?;
    Some(&path[..end])
}

/// "at the top level", or "under" the mapping's name within its parent.
fn where_is(path: &[Seg]) -> String {
    if path.is_empty() {
        "at the top level".to_string()
    } else {
        format!("under {}", own_name(path))
    }
}

/// The mapping's name within its parent: `proxy`, `source`, `secrets[0]`.
fn own_name(path: &[Seg]) -> String {
    let start = parent_of(path).map_or(0, <[Seg]>::len);
    render(&path[start..])
}

/// The same without list positions: `rules` for every entry of `rules`.
fn entry_name(path: &[Seg]) -> String {
    match parent_of(path).and_then(|p| path.get(p.len())) {
        Some(Seg::Key(k)) => k.clone(),
        _ => render(path),
    }
}
