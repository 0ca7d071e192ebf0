//! The lines of a document the parser refused, and what they say about
//! keys, list items and indentation: the reading behind [`super::explain`].

use super::super::Pos;

/// The text, line by line.
pub(super) struct Doc<'t> {
    lines: Vec<&'t str>,
}

impl<'t> Doc<'t> {
    pub(super) fn new(text: &'t str) -> Self {
        Doc {
            lines: text
                .split('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .collect(),
        }
    }

    /// True when line `n` and every line after it are blank.
    pub(super) fn blank_from(&self, n: usize) -> bool {
        self.lines
            .iter()
            .skip(n.saturating_sub(1))
            .all(|l| l.trim().is_empty())
    }

    /// Line `n` (1-based).
    pub(super) fn line(&self, n: usize) -> Option<&'t str> {
        n.checked_sub(1).and_then(|i| self.lines.get(i)).copied()
    }

    /// The content lines before line `n` (neither blank nor a comment),
    /// nearest first, with their numbers.
    pub(super) fn above(&self, n: usize) -> impl Iterator<Item = (usize, &'t str)> + '_ {
        (1..n)
            .rev()
            .filter_map(|i| self.line(i).map(|l| (i, l)))
            .filter(|(_, l)| {
                let t = l.trim_start();
                !t.is_empty() && !t.starts_with('#') && t != "---"
            })
    }

    /// A `:` that would start a key where none may start: a second key on
    /// one line, or the end of a key whose text began on the line above (the
    /// `:` missing there, or written without its space).
    pub(super) fn misplaced_colon(&self, n: usize, column: usize) -> Option<(Pos, String)> {
        let this = self.line(n)?;
        let before: String = this.chars().take(column.saturating_sub(1)).collect();
        if key_colon(&before).is_some() {
            return Some((
                Pos::File { line: n, column },
                "a second 'key:' on one line: a key's value cannot be another key on the same \
                 line; put the inner key on a line of its own, indented under its parent, or \
                 quote a value that holds ': '"
                    .into(),
            ));
        }
        let mut above = self.above(n);
        let (p, prev) = above.next()?;
        // The line above is a whole `key: value`, or the text after one that
        // runs on from further up: this line continues that value.
        let valued = |l: &str| key_colon(l).is_some() && !l.trim_end().ends_with(':');
        let continued = if valued(prev) {
            Some((p, prev))
        } else {
            above
                .next()
                .filter(|(_, q)| valued(q) && indent(prev) > indent(q))
        };
        if let Some((q, value)) = continued {
            let t = value.trim();
            if let Some(rest) = t.strip_prefix('-').filter(|r| !r.starts_with([' ', '-'])) {
                // `-name: x` is a key named "-name": the item's nested keys run on into it.
                return Some((
                    Pos::File {
                        line: q,
                        column: indent(value) + 1,
                    },
                    format!(
                        "'{t}' is a key named '-{}', not a list item: write '- {rest}' (a list \
                         item needs a space after its '-')",
                        rest.split(':').next().unwrap_or(rest)
                    ),
                ));
            }
            return Some((
                Pos::File { line: n, column },
                format!(
                    "this line continues the value of line {q} ('{}'), and a value cannot hold \
                     ': ' unless it is quoted: quote the value, or write it as a block (key: |)",
                    value.trim()
                ),
            ));
        }
        Some(no_key(p, prev, &format!("runs on into line {n}")))
    }

    /// A line indented where it cannot belong: a list item out of line with
    /// its list, a key among list items, a key indented to no column above.
    pub(super) fn misaligned(&self, n: usize, info: &str) -> Option<(Pos, String)> {
        let this = self.line(n)?;
        let col = indent(this) + 1;
        let pos = Pos::File {
            line: n,
            column: col,
        };
        let (p, prev) = self.above(n).next()?;
        let prev_col = indent(prev) + 1;
        let item_above = self.above(n).find(|(_, l)| is_item(l));
        if !is_item(this) && !is_item(prev) && key_colon(prev).is_none() && prev_col == col {
            // A key after a line of text where a key was meant (`mode:mitm`).
            return Some(no_key(
                p,
                prev,
                &format!("the key on line {n} cannot follow it"),
            ));
        }
        if is_item(this) {
            if let Some((i, item)) = item_above.filter(|(_, l)| indent(l) + 1 != col) {
                let item_col = indent(item) + 1;
                return Some((
                    pos,
                    format!(
                        "this list item is at column {col}, but the items of the list above it \
                         (line {i}) are at column {item_col}: indent it to column {item_col} to \
                         add it to that list"
                    ),
                ));
            }
        } else if info.contains("'-' indicator") {
            if let Some((_, item)) = item_above.filter(|(_, l)| indent(l) + 1 == col) {
                return Some((
                    pos,
                    format!(
                        "line {n} lines up with the list items above it (column {col}) but is \
                         not one: start it with '- ' to make it a new item, or indent it to \
                         column {} to add it to the item above",
                        indent(item) + 3
                    ),
                ));
            }
        } else if col > prev_col && key_colon(prev).is_some() && !prev.trim_end().ends_with(':') {
            return Some((
                pos,
                format!(
                    "line {n} is indented further than line {p} ('{}'), whose key has its value \
                     on that line already: indent line {n} to column {prev_col} to make it a key \
                     beside it",
                    prev.trim()
                ),
            ));
        }
        let what = if is_item(this) { "list item" } else { "line" };
        Some((
            pos,
            format!(
                "this {what} is indented to column {col}, where nothing above it lines up: \
                 indent it like the {} it belongs with (the lines above it start at {})",
                if is_item(this) { "other items" } else { "keys" },
                columns(&self.open_columns(n))
            ),
        ))
    }

    /// The columns a line after line `n - 1` can start at: those of the
    /// nearest content line above and of each line that encloses it (each
    /// less indented than the last), and, inside a list item, where its
    /// content starts. Ascending.
    fn open_columns(&self, n: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut min = usize::MAX;
        for (_, l) in self.above(n) {
            let i = indent(l);
            if i < min {
                min = i;
                out.push(i + 1);
                if let Some(rest) = l.trim_start().strip_prefix("- ") {
                    let item = i + 2 + indent(rest);
                    out.push(item + 1);
                }
            }
            if min == 0 {
                break;
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The last `[` or `{` before `line`, `column` that is not closed by
    /// then (quoted text and comments skipped), and what to say about it.
    pub(super) fn unclosed_before(&self, line: usize, column: usize) -> Option<(Pos, String)> {
        let mut open: Vec<(char, usize, usize)> = Vec::new();
        for (i, l) in self.lines.iter().enumerate().take(line) {
            let n = i + 1;
            let mut quote: Option<char> = None;
            let mut prev = ' ';
            for (c_i, c) in l.chars().enumerate() {
                if n == line && c_i + 1 >= column {
                    break;
                }
                match (quote, c) {
                    (Some(q), c) if c == q => quote = None,
                    (Some(_), _) => {}
                    (None, '"' | '\'') if matches!(prev, ' ' | '[' | '{' | ',' | ':') => {
                        quote = Some(c)
                    }
                    (None, '#') if prev.is_whitespace() || c_i == 0 => break,
                    (None, '[' | '{') => open.push((c, n, c_i + 1)),
                    (None, ']' | '}') => {
                        open.pop();
                    }
                    _ => {}
                }
                prev = c;
            }
        }
        let (c, l, col) = open.pop()?;
        let (what, close) = if c == '[' {
            ("list", ']')
        } else {
            ("mapping", '}')
        };
        Some((
            Pos::File {
                line: l,
                column: col,
            },
            format!("the {what} opened here with '{c}' is not closed with '{close}'"),
        ))
    }
}

/// The mistake of line `p` (`prev`), a key without its `:` (or with no
/// space after it), which YAML reads as text; `then` says what that does to
/// the line where the parser stopped.
pub(super) fn no_key(p: usize, prev: &str, then: &str) -> (Pos, String) {
    let pos = Pos::File {
        line: p,
        column: indent(prev) + 1,
    };
    let shown = prev.trim();
    match glued_colon(prev) {
        Some(glued) => (
            pos,
            format!(
                "'{shown}' has no space after its ':', so it is text rather than a key, and \
                 {then}: write '{glued}'"
            ),
        ),
        None => (
            pos,
            format!(
                "'{shown}' has no ':' after its key, so it is text rather than a key, and \
                 {then}: write 'key: value' (or 'key:' with the value indented on the lines \
                 below)"
            ),
        ),
    }
}

/// True for a list item's line (`- x`, or a lone `-`).
fn is_item(line: &str) -> bool {
    let t = line.trim_start();
    t == "-" || t.starts_with("- ")
}

/// `column 3`, `columns 1 and 3`, `columns 1, 3 and 5`.
fn columns(list: &[usize]) -> String {
    match list {
        [] => "no column".into(),
        [one] => format!("column {one}"),
        [init @ .., last] => {
            let init: Vec<String> = init.iter().map(ToString::to_string).collect();
            format!("columns {} and {last}", init.join(", "))
        }
    }
}

/// How many spaces a line starts with.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// The byte offset of the first `:` in `line` that ends a key (followed by
/// a space or the end of the line), outside quotes and comments.
pub(super) fn key_colon(line: &str) -> Option<usize> {
    let mut quote: Option<char> = None;
    let mut prev = ' ';
    let mut chars = line.char_indices().peekable();
    while let Some((b, c)) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') if matches!(prev, ' ' | '[' | '{' | ',' | '-') => quote = Some(c),
            (None, '#') if prev.is_whitespace() => return None,
            (None, ':') => match chars.peek() {
                None => return Some(b),
                Some((_, n)) if n.is_whitespace() => return Some(b),
                _ => {}
            },
            _ => {}
        }
        prev = c;
    }
    None
}

/// For a line whose key is glued to its value (`mode:mitm`, not `http://x`),
/// the line as meant: `mode: mitm`.
fn glued_colon(line: &str) -> Option<String> {
    let t = line.trim();
    let t = t.strip_prefix("- ").unwrap_or(t);
    let (key, value) = t.split_once(':')?;
    let is_key = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    (is_key && !value.is_empty() && !value.starts_with("//") && !value.starts_with(' '))
        .then(|| format!("{key}: {value}"))
}
