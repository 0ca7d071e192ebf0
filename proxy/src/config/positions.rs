//! Where the fields of a parsed config were set, so that findings about a
//! valid config ([`super::lint`]) point at their field the way errors do:
//! `proxy.yaml:14:5`, or the `IRON_*` variable that set it.

use std::fmt;
use std::sync::Arc;

use super::yaml::{Kind, Node, Pos};

/// The document a config was decoded from (after environment overrides),
/// kept for its positions.
#[derive(Clone)]
pub(crate) struct Positions {
    file: String,
    root: Arc<Node>,
}

impl fmt::Debug for Positions {
    /// The file only: the tree holds the config's values, secrets among them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Positions")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
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
    /// The positions of `root`, read from `file`.
    pub(crate) fn new(file: &str, root: Node) -> Positions {
        Positions {
            file: file.to_string(),
            root: Arc::new(root),
        }
    }

    /// Where the field at `path` (`transforms[2]`, `management.listen`) was
    /// set: its value's position, as errors about a value give it. A field
    /// left out (a default) is placed at the nearest enclosing one that is
    /// there, and at the file when none is.
    pub(crate) fn locate(&self, path: &str) -> Location {
        let mut node = &*self.root;
        let mut pos = None;
        for step in steps(path) {
            let next = match (step, &node.kind) {
                (Step::Key(key), Kind::Map(_)) => node.get(key),
                (Step::Index(i), Kind::Seq(items)) => items.get(i),
                _ => None,
            };
            let Some(next) = next else {
                break;
            };
            node = next;
            pos = Some(node.pos);
        }
        match pos {
            Some(Pos::File { line, column }) => Location {
                file: self.file.clone(),
                line: Some(line),
                column: Some(column),
            },
            Some(Pos::Env(var)) => Location {
                file: var.to_string(),
                line: None,
                column: None,
            },
            None => Location {
                file: self.file.clone(),
                line: None,
                column: None,
            },
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

    fn positions(text: &str) -> Positions {
        let root = super::super::yaml::parse(text)
            .ok()
            .flatten()
            .expect("a document");
        Positions::new("p.yaml", root)
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
        let p = positions(
            "management:\n  listen: \":9092\"\ntransforms:\n  - name: allowlist\n  - name: judge\n",
        );
        assert_eq!(p.locate("management.listen").to_string(), "p.yaml:2:11");
        assert_eq!(p.locate("transforms[1]").to_string(), "p.yaml:5:5");
        // A default: the enclosing block; nothing at all: the file.
        assert_eq!(p.locate("management.api_key_env").to_string(), "p.yaml:2:3");
        assert_eq!(p.locate("metrics.listen").to_string(), "p.yaml");
        assert_eq!(p.locate("transforms[7]").to_string(), "p.yaml:4:3");
    }
}
