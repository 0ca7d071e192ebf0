//! Where the fields of a parsed config were set, so that findings about a
//! valid config ([`super::lint`], [`super::check_references`]) point at their
//! field the way errors do: `proxy.yaml:14:5`, or the `IRON_*` variable that
//! set it.
//!
//! The places are looked up in the document once, at load, for the fields
//! findings can name ([`locate_all`]); the config keeps those [`Positions`]
//! and not the document, which would be a second copy of the whole config
//! (inline values among it) for as long as the proxy runs.

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::yaml::{Kind, Node, Pos};

/// The places of the fields a loaded config's findings can name, resolved
/// from the document at load: paths and locations only, no values.
#[derive(Debug, Clone, Default)]
pub(crate) struct Positions {
    file: String,
    places: HashMap<String, Location>,
}

/// Where a field was set: the file and its 1-based line and column, or the
/// `IRON_*` variable (no line) that set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The config file as given, or the `IRON_*` variable.
    pub file: String,
    /// 1-based line; `None` for a variable, or a field with no place in the file.
    pub line: Option<usize>,
    /// 1-based column; `None` together with `line`.
    pub column: Option<usize>,
}

impl fmt::Display for Location {
    /// `proxy.yaml:14:5`, or just the file (or variable) without a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        Ok(())
    }
}

impl Positions {
    /// The places of `paths` in `root`, the document read from `file`.
    pub(crate) fn new(file: &str, root: &Node, paths: Vec<String>) -> Positions {
        let places = locate_all(file, root, &paths);
        Positions {
            file: file.to_string(),
            places: paths.into_iter().zip(places).collect(),
        }
    }

    /// Where the field at `path` was set, as [`locate_all`] found it at load;
    /// for a path that was not asked for then, the nearest enclosing one
    /// that was, else the file alone.
    pub(crate) fn locate(&self, path: &str) -> Location {
        let mut p = path;
        loop {
            if let Some(l) = self.places.get(p) {
                return l.clone();
            }
            match p.rfind(['.', '[']) {
                Some(end) => p = &p[..end],
                None => {
                    return Location {
                        file: self.file.clone(),
                        line: None,
                        column: None,
                    }
                }
            }
        }
    }

    /// How many places are kept (tests: the count of named fields, not of nodes).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.places.len()
    }
}

/// Where each field of `paths` (`transforms[2]`, `management.listen`) was
/// set in `root`, the document read from `file`: its value's position, as
/// errors about a value give it. A field left out (a default) is placed at
/// the nearest enclosing one that is there, and at the file when none is.
///
/// One walk over the parts of the document the paths lead through, looking
/// each mapping's keys up in a hash map of the wanted ones, so a mapping with
/// many named fields (50,000 credentials) costs its size, not its size times
/// the number of paths.
pub(crate) fn locate_all(file: &str, root: &Node, paths: &[String]) -> Vec<Location> {
    let mut trie = Trie::default();
    for (i, path) in paths.iter().enumerate() {
        let mut t = &mut trie;
        for step in steps(path) {
            t = match step {
                Step::Key(k) => t.keys.entry(k).or_default(),
                Step::Index(i) => t.indexes.entry(i).or_default(),
            };
        }
        t.ends.push(i);
    }
    let mut found = vec![None; paths.len()];
    trie.walk(Some(root), None, &mut found);
    found
        .into_iter()
        .map(|pos| match pos {
            Some(pos) => location(file, pos),
            None => Location {
                file: file.to_string(),
                line: None,
                column: None,
            },
        })
        .collect()
}

/// The place `pos` names in `file`: its line and column, or the `IRON_*`
/// variable that set the value.
pub(crate) fn location(file: &str, pos: Pos) -> Location {
    match pos {
        Pos::File { line, column } => Location {
            file: file.to_string(),
            line: Some(line),
            column: Some(column),
        },
        Pos::Env(var) => Location {
            file: var.to_string(),
            line: None,
            column: None,
        },
    }
}

/// The wanted paths, step by step; `ends` are the indexes of the paths that end here.
#[derive(Default)]
struct Trie<'p> {
    ends: Vec<usize>,
    keys: HashMap<&'p str, Trie<'p>>,
    indexes: HashMap<usize, Trie<'p>>,
}

impl Trie<'_> {
    /// Records `pos` (the deepest position found so far) for the paths ending
    /// here, then goes on into `node`; a step `node` does not have leaves the
    /// rest of its paths at `pos`. The recursion is as deep as the longest path.
    fn walk(&self, node: Option<&Node>, pos: Option<Pos>, found: &mut [Option<Pos>]) {
        for &i in &self.ends {
            found[i] = pos;
        }
        let mut keys_done: HashSet<&str> = HashSet::new();
        let mut indexes_done: HashSet<usize> = HashSet::new();
        match node.map(|n| &n.kind) {
            Some(Kind::Map(entries)) if !self.keys.is_empty() => {
                for (k, v) in entries {
                    let Some((name, sub)) = k.scalar().and_then(|s| self.keys.get_key_value(s))
                    else {
                        continue;
                    };
                    // The first entry with the key, as a lookup finds it.
                    if keys_done.insert(name) {
                        sub.walk(Some(v), Some(v.pos), found);
                    }
                }
            }
            Some(Kind::Seq(items)) => {
                for (&i, sub) in &self.indexes {
                    if let Some(item) = items.get(i) {
                        indexes_done.insert(i);
                        sub.walk(Some(item), Some(item.pos), found);
                    }
                }
            }
            _ => {}
        }
        for (name, sub) in &self.keys {
            if !keys_done.contains(name) {
                sub.walk(None, pos, found);
            }
        }
        for (i, sub) in &self.indexes {
            if !indexes_done.contains(i) {
                sub.walk(None, pos, found);
            }
        }
    }
}

/// One step of a field path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step<'p> {
    Key(&'p str),
    Index(usize),
}

/// The steps of `a.b[1][2].c`; a malformed index ends the path there.
fn steps(path: &str) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, mut rest) = part.split_at(part.find('[').unwrap_or(part.len()));
        if !key.is_empty() {
            out.push(Step::Key(key));
        }
        while let Some(inner) = rest.strip_prefix('[') {
            let Some((index, after)) = inner.split_once(']') else {
                return out;
            };
            let Ok(index) = index.parse() else {
                return out;
            };
            out.push(Step::Index(index));
            rest = after;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locate(text: &str, paths: &[&str]) -> Vec<String> {
        let root = super::super::yaml::parse(text)
            .ok()
            .flatten()
            .expect("a document");
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        locate_all("p.yaml", &root, &paths)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn paths_are_split_into_keys_and_indexes() {
        assert_eq!(
            steps("transforms[2].config.rules[0][1]"),
            [
                Step::Key("transforms"),
                Step::Index(2),
                Step::Key("config"),
                Step::Key("rules"),
                Step::Index(0),
                Step::Index(1),
            ]
        );
        assert_eq!(steps("a[x].b"), [Step::Key("a")]);
    }

    #[test]
    fn a_field_is_located_at_its_value_or_its_nearest_enclosing_field() {
        let text =
            "management:\n  listen: \":9092\"\ntransforms:\n  - name: allowlist\n  - name: judge\n";
        let paths = [
            "management.listen",
            "transforms[1]",
            // A default: the enclosing block; nothing at all: the file.
            "management.api_key_env",
            "metrics.listen",
            "transforms[7]",
            // A step into a scalar stops at the scalar.
            "management.listen.port",
        ];
        assert_eq!(
            locate(text, &paths),
            [
                "p.yaml:2:11",
                "p.yaml:5:5",
                "p.yaml:2:3",
                "p.yaml",
                "p.yaml:4:3",
                "p.yaml:2:11"
            ]
        );
    }

    #[test]
    fn kept_positions_answer_only_for_the_paths_asked_at_load() {
        let root = super::super::yaml::parse("management:\n  listen: \":9092\"\n")
            .ok()
            .flatten()
            .expect("a document");
        let p = Positions::new("p.yaml", &root, vec!["management.listen".into()]);
        drop(root);
        assert_eq!(p.len(), 1);
        assert_eq!(p.locate("management.listen").to_string(), "p.yaml:2:11");
        assert_eq!(p.locate("management").to_string(), "p.yaml");
    }
}
