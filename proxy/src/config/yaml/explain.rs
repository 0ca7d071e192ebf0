//! The YAML parser's errors in plain words. yaml-rust2 reports what its
//! grammar expected ("while parsing a block mapping, did not find expected
//! key", "mapping values are not allowed in this context"), often at a place
//! past the mistake: a key without its `:` is reported at the `:` of the
//! next line. For the mistakes people make, the message here says what is
//! wrong and what to write instead, and the position is moved to the line
//! at fault:
//!
//! - a tab in the indentation (at the tab);
//! - a key without its `:`, or with no space after it (at that key);
//! - a second `key:` on one line (`tls: mode: mitm`);
//! - a line indented to where nothing above it lines up, a list item out of
//!   line with its list, a key among list items (at the line's first
//!   character, naming the columns it could belong at);
//! - a quoted value or a `[`/`{` never closed (at where it was opened);
//! - a value starting with `*` read as an alias (`*.example.com`), or with a
//!   character YAML reserves (`@`, `` ` ``, `%`).
//!
//! Anything else keeps the parser's own words.

use super::Pos;
use doc::{key_colon, no_key, Doc};

mod doc;

/// The plain-words message for the parser's error `info` at the 1-based
/// `line` and `column` of `text`, and where the mistake is.
pub(super) fn explain(text: &str, line: usize, column: usize, info: &str) -> (Pos, String) {
    let doc = Doc::new(text);
    let at = |line: usize, column: usize| Pos::File { line, column };
    let fallback = (at(line, column), info.to_string());
    let Some(this) = doc.line(line) else {
        return doc
            .unclosed_before(line, column)
            .map_or(fallback, |(pos, what)| {
                (pos, format!("{what} before the end of the file"))
            });
    };
    if info.starts_with("tabs disallowed")
        || info.starts_with("tab cannot be used")
        || info.contains("found a tab")
        || info.contains("cannot start with a tab")
    {
        // The parser may stop on the line before the tab's.
        let (tab_line, tab) = (line..line + 2)
            .find_map(|n| {
                let l = doc.line(n)?;
                let b = l.find('\t')?;
                (n == line || l[..b].trim().is_empty()).then(|| (n, l[..b].chars().count() + 1))
            })
            .unwrap_or((line, column));
        return (
            at(tab_line, tab),
            "a tab character: YAML indents with spaces only; replace the tab with spaces \
             (most editors can insert spaces when Tab is pressed)"
                .into(),
        );
    }
    if info == "mapping values are not allowed in this context" {
        return doc.misplaced_colon(line, column).unwrap_or(fallback);
    }
    if info == "simple key expect ':'" || info == "simple key expected" {
        let before: String = this.chars().take(column.saturating_sub(1)).collect();
        let here = (!before.trim().is_empty()).then_some((line, this));
        let text_line = here
            .into_iter()
            .chain(doc.above(line))
            .find(|(_, l)| key_colon(l).is_none());
        if let Some((p, l)) = text_line {
            return no_key(p, l, "a key is expected there");
        }
    }
    if info == "while parsing a block mapping, did not find expected key"
        || info == "while parsing a block collection, did not find expected '-' indicator"
        || info == "invalid indentation"
    {
        return doc.misaligned(line, info).unwrap_or(fallback);
    }
    if info == "invalid indentation in quoted scalar"
        || info == "while scanning a quoted scalar, found unexpected end of stream"
    {
        return (
            at(line, column),
            "this quoted value is never closed: add its closing quote (a quoted value may \
             continue on the next lines only when they are indented further than its key)"
                .into(),
        );
    }
    if info == "illegal placement of ':' indicator"
        || info == "while parsing a node, did not find expected node content"
        || info.starts_with("while parsing a flow sequence")
        || info.starts_with("while parsing a flow mapping")
    {
        let until = if doc.blank_from(line) {
            "before the end of the file".to_string()
        } else {
            format!("before line {line}")
        };
        return doc
            .unclosed_before(line, column)
            .map_or(fallback, |(pos, what)| (pos, format!("{what} {until}")));
    }
    if info == "while parsing node, found unknown anchor" {
        let token: String = this
            .chars()
            .skip(column.saturating_sub(1))
            .take_while(|c| !c.is_whitespace() && !matches!(c, ',' | ']' | '}'))
            .collect();
        if token.starts_with('*') {
            return (
                at(line, column),
                format!(
                    "{token} is read as an alias (*name refers to a value marked &name), and \
                     nothing is marked so: quote a value that starts with '*', as in \"{token}\""
                ),
            );
        }
    }
    if let Some(c) = info
        .strip_prefix("unexpected character: `")
        .and_then(|r| r.strip_suffix('\''))
    {
        return (
            at(line, column),
            format!("a value cannot start with '{c}' (YAML reserves it): quote the value"),
        );
    }
    if info == "block sequence entries are not allowed in this context" {
        return (
            at(line, column),
            "a list item ('- ') cannot follow a key on its line: start the item on the next \
             line, indented under the key, or write the list as [a, b]"
                .into(),
        );
    }
    fallback
}

#[cfg(test)]
mod tests;
