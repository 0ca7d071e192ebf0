//! Credential values found in a response body and masked as it streams.
//!
//! An upstream that reflects the request (an echo endpoint, an error message
//! quoting the key, a debug body listing the request's headers) would hand
//! the credential `secrets` put in the request back to the workload. A
//! [`BodyScrubber`] searches the body for each value in the forms a URL, a
//! header, a JSON string or base64 gives it ([`needle_forms`]) and replaces each
//! occurrence with a mask of the same length ([`mask`]), so a body keeps its
//! length and its framing (`Content-Length`, chunk sizes of a re-chunked
//! body) whatever it holds.
//!
//! The search is aho-corasick's leftmost-longest: scanning from the left,
//! the earliest occurrence wins, and of those starting there the longest.
//! The body is never buffered: of the data seen, only the longest suffix that
//! is a proper prefix of some form is held back, because the next data may
//! complete it; it is released as soon as the next data shows it does not
//! (or at the end of the body). A chunk that does not end in the start of a
//! form goes out at once, so server-sent events and streamed model output
//! keep flowing. The output is the same however the body is cut into chunks
//! (a property test below checks it).

use std::sync::Arc;

use aho_corasick::{AhoCorasick, Input, MatchKind};
use bytes::Bytes;
use zeroize::Zeroizing;

use super::scrub::{base64_forms, url_forms, MIN_SECRET_LEN, REDACTED};

/// What can go wrong building a [`BodyScrubber`].
#[derive(Debug, thiserror::Error)]
pub enum BodyScrubError {
    /// The automaton over the values' forms could not be built (it would
    /// exceed the library's size limits: values of megabytes).
    #[error("building the search over {forms} credential forms")]
    Build {
        /// How many forms were searched for.
        forms: usize,
        /// The library's error (it names limits, never a pattern).
        #[source]
        source: aho_corasick::BuildError,
    },
}

/// The forms a value of at least [`MIN_SECRET_LEN`] bytes is searched for in
/// a body: itself, percent-encoded (either hex case) and form-encoded
/// ([`url_forms`], as in headers), as JSON writes it inside a string (`"`
/// and `\` escaped, control characters as `\n` or `\u00XX`), also with `/`
/// escaped as `\/` (PHP's `json_encode`, some Java and .NET writers), as the
/// common JSON writers that escape more write it ([`JSON_WRITERS`]), and in
/// base64 at any alignment ([`base64_forms`]: an echoed `Authorization:
/// Basic` header, or a formatter's `base64`), the characters that carry the
/// value's bits alone. Duplicates are left out: a value of letters, digits,
/// `-` and `_` has five forms besides base64, whatever the writer.
pub fn needle_forms(value: &str) -> Vec<Zeroizing<String>> {
    let mut forms: Vec<Zeroizing<String>> = Vec::new();
    let mut add = |f: String| {
        let f = Zeroizing::new(f);
        if !f.is_empty() && !forms.contains(&f) {
            forms.push(f);
        }
    };
    for f in url_forms(value) {
        add(f);
    }
    let json = Zeroizing::new(serde_json::Value::from(value).to_string());
    let inner = &json[1..json.len() - 1];
    if value.contains('/') {
        add(inner.replace('/', "\\/"));
    }
    add(inner.to_string());
    for w in &JSON_WRITERS {
        add(w.write(value));
    }
    for f in base64_forms(value) {
        add(f);
    }
    forms
}

/// How a JSON writer that escapes more than `"`, `\\` and control
/// characters writes a string's content. Which characters a writer escapes as
/// `\uXXXX`, in which hex case, is its documented default:
///
/// - Go's `encoding/json` (and Rails' `to_json`): `<`, `>`, `&`, U+2028 and
///   U+2029, lower case (`\u0026`);
/// - Gson's default (HTML-safe) writer: also `=` and `'`, lower case: a
///   base64 value's padding becomes `\u003d`;
/// - .NET's `System.Text.Json` (`JavaScriptEncoder.Default`): `<`, `>`, `&`,
///   `'`, `"`, `+`, `` ` `` and everything outside ASCII, upper case
///   (`\u002B`);
/// - Python's `json.dumps` (`ensure_ascii`, the default): everything outside
///   ASCII, lower case, as UTF-16 surrogate pairs beyond U+FFFF;
/// - PHP's `json_encode`: the same, with `/` written `\/`.
pub struct JsonWriter {
    /// Whether the writer escapes `c` as `\uXXXX`.
    escapes: fn(char) -> bool,
    /// Upper-case hex digits.
    upper: bool,
    /// `/` written `\/`.
    slash: bool,
}

/// The writers [`needle_forms`] writes a value as (see [`JsonWriter`]).
pub const JSON_WRITERS: [JsonWriter; 5] = [
    JsonWriter {
        escapes: |c| matches!(c, '<' | '>' | '&' | '\u{2028}' | '\u{2029}'),
        upper: false,
        slash: false,
    },
    JsonWriter {
        escapes: |c| matches!(c, '<' | '>' | '&' | '=' | '\'' | '\u{2028}' | '\u{2029}'),
        upper: false,
        slash: false,
    },
    JsonWriter {
        escapes: |c| matches!(c, '<' | '>' | '&' | '\'' | '"' | '+' | '`') || !c.is_ascii(),
        upper: true,
        slash: false,
    },
    JsonWriter {
        escapes: |c| !c.is_ascii(),
        upper: false,
        slash: false,
    },
    JsonWriter {
        escapes: |c| !c.is_ascii(),
        upper: false,
        slash: true,
    },
];

impl JsonWriter {
    /// `value` as this writer writes it between a JSON string's quotes.
    pub fn write(&self, value: &str) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(value.len() + 8);
        for c in value.chars() {
            match c {
                '"' if !(self.escapes)(c) => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '/' if self.slash => out.push_str("\\/"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if c < ' ' || (self.escapes)(c) => {
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        // Writing to a String cannot fail.
                        let _ = if self.upper {
                            write!(out, "\\u{u:04X}")
                        } else {
                            write!(out, "\\u{u:04x}")
                        };
                    }
                }
                c => out.push(c),
            }
        }
        out
    }
}

/// Appends a mask of `len` bytes to `out`: [`REDACTED`] followed by as many
/// `*` as the length needs, or `len` stars when the match is shorter than
/// [`REDACTED`] (an 8- or 9-byte value). ASCII without quotes or
/// backslashes, so a JSON string or a URL stays well-formed.
pub fn mask(out: &mut Vec<u8>, len: usize) {
    if len >= REDACTED.len() {
        out.extend_from_slice(REDACTED.as_bytes());
        out.resize(out.len() + len - REDACTED.len(), b'*');
    } else {
        out.resize(out.len() + len, b'*');
    }
}

/// One form, with what is needed to tell how much of a text's end could be
/// its start.
struct Form {
    bytes: Zeroizing<Vec<u8>>,
    /// `border[i]`: the length of the longest proper prefix of
    /// `bytes[..=i]` that is also its suffix (the KMP failure function).
    border: Vec<usize>,
}

impl Form {
    fn new(bytes: Vec<u8>) -> Form {
        let mut border = vec![0; bytes.len()];
        let mut k = 0;
        for i in 1..bytes.len() {
            while k > 0 && bytes[i] != bytes[k] {
                k = border[k - 1];
            }
            if bytes[i] == bytes[k] {
                k += 1;
            }
            border[i] = k;
        }
        Form {
            bytes: Zeroizing::new(bytes),
            border,
        }
    }

    /// The length of the longest suffix of `text` that is a proper prefix of
    /// this form (shorter than the form: a whole form is a match, not a
    /// start). Looks at the last `len - 1` bytes only, once each.
    fn open_suffix(&self, text: &[u8]) -> usize {
        let form = &self.bytes[..];
        let from = text.len().saturating_sub(form.len() - 1);
        let mut q = 0;
        for &b in &text[from..] {
            while q > 0 && form[q] != b {
                q = self.border[q - 1];
            }
            if form[q] == b {
                q += 1;
            }
            if q == form.len() {
                q = self.border[q - 1];
            }
        }
        q
    }
}

/// The search over the forms of one set of values: the automaton and, for
/// each form, what tells how much of a chunk's end could be its start. Built
/// once per set of values and shared by the responses that follow
/// ([`search_cache`]): building one costs tens of microseconds, more than the
/// proxy's whole work on a request.
pub struct Search {
    automaton: AhoCorasick,
    forms: Vec<Form>,
    /// The same forms, matched in any ASCII case: for header names, which
    /// HTTP lowercases (an NFA: names are short, and it stays small).
    names: AhoCorasick,
}

impl Search {
    /// The search over every form of `values` (none empty).
    fn build(values: &[&str]) -> Result<Search, BodyScrubError> {
        let mut forms: Vec<Zeroizing<String>> = Vec::new();
        for v in values {
            for f in needle_forms(v) {
                if !forms.contains(&f) {
                    forms.push(f);
                }
            }
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(forms.iter().map(|f| f.as_bytes()))
            .map_err(|source| BodyScrubError::Build {
                forms: forms.len(),
                source,
            })?;
        let names = AhoCorasick::builder()
            .kind(Some(aho_corasick::AhoCorasickKind::NoncontiguousNFA))
            .ascii_case_insensitive(true)
            .build(forms.iter().map(|f| f.as_bytes()))
            .map_err(|source| BodyScrubError::Build {
                forms: forms.len(),
                source,
            })?;
        Ok(Search {
            automaton,
            names,
            forms: forms
                .iter()
                .map(|f| Form::new(f.as_bytes().to_vec()))
                .collect(),
        })
    }
}

/// The credential values of one exchange, ready to search a response body
/// for. The automaton's own tables hold the forms too and are not wiped when
/// dropped; the forms kept here are.
pub struct BodyScrubber {
    search: Arc<Search>,
    /// Data seen but not yet released: the start of a possible match.
    held: Vec<u8>,
    /// Matches masked so far.
    found: u64,
}

impl BodyScrubber {
    /// A scrubber for the `values` of at least [`MIN_SECRET_LEN`] bytes (a
    /// shorter one would match ordinary text); `None` when there is none.
    /// The search is the one built for the same values before, when it is
    /// still kept ([`search_cache`]).
    pub fn new<'a>(
        values: impl IntoIterator<Item = &'a str>,
    ) -> Result<Option<BodyScrubber>, BodyScrubError> {
        let mut values: Vec<&str> = values
            .into_iter()
            .filter(|v| v.len() >= MIN_SECRET_LEN)
            .collect();
        if values.is_empty() {
            return Ok(None);
        }
        values.sort_unstable();
        values.dedup();
        Ok(Some(BodyScrubber {
            search: search_cache::SEARCHES.get(&values)?,
            held: Vec::new(),
            found: 0,
        }))
    }

    /// `text` (a whole value: a response header's) with each occurrence of a
    /// form replaced by [`REDACTED`], or `None` when it holds none. The
    /// stream's held bytes and count are left alone.
    pub fn redact(&self, text: &[u8]) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        for m in self.search.automaton.find_iter(text) {
            let o = out.get_or_insert_with(|| Vec::with_capacity(text.len()));
            o.extend_from_slice(&text[copied..m.start()]);
            o.extend_from_slice(REDACTED.as_bytes());
            copied = m.end();
        }
        let mut o = out?;
        o.extend_from_slice(&text[copied..]);
        Some(o)
    }

    /// Whether a header name holds a value in one of its forms, in any
    /// ASCII case (HTTP lowercases names).
    pub fn in_name(&self, name: &[u8]) -> bool {
        self.search.names.is_match(name)
    }

    /// How many occurrences were masked so far.
    pub fn found(&self) -> u64 {
        self.found
    }

    /// How many bytes are held back, waiting for the next data.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Takes the next piece of the body; returns what can be released now
    /// (possibly empty, never more than was given so far).
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.held.is_empty() {
            let (masked, cut) = self.scan(&chunk, false);
            self.held.extend_from_slice(&chunk[cut..]);
            return match masked {
                Some(m) => Bytes::from(m),
                // Nothing found: the chunk itself (or its start), not a copy.
                None => chunk.slice(..cut),
            };
        }
        let mut buf = std::mem::take(&mut self.held);
        buf.extend_from_slice(&chunk);
        self.release(buf, false)
    }

    /// The end of the body: whatever was held back, masked where it holds a
    /// whole form.
    pub fn finish(&mut self) -> Bytes {
        let buf = std::mem::take(&mut self.held);
        self.release(buf, true)
    }

    fn release(&mut self, mut buf: Vec<u8>, end: bool) -> Bytes {
        let (masked, cut) = self.scan(&buf, end);
        self.held.extend_from_slice(&buf[cut..]);
        match masked {
            Some(m) => Bytes::from(m),
            None => {
                buf.truncate(cut);
                Bytes::from(buf)
            }
        }
    }

    /// Finds the matches in `buf` that no further data can change, and the
    /// point up to which `buf` can be released (`buf.len()` at the end of
    /// the body). Returns the released part, masked, when it held a match
    /// (`None`: release `buf[..cut]` as it is), and the cut.
    ///
    /// A match starting before `hold` (where the longest suffix that could
    /// still grow into a form begins) is final: every form occurrence
    /// starting there lies wholly in `buf`, and none starting further left
    /// can appear later. One starting at or after `hold` waits.
    fn scan(&mut self, buf: &[u8], end: bool) -> (Option<Vec<u8>>, usize) {
        let mut pos = 0;
        let mut hold = self.hold_from(buf, 0, end);
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        while let Some(m) = self.search.automaton.find(Input::new(buf).range(pos..)) {
            if m.start() >= hold {
                break;
            }
            let o = out.get_or_insert_with(|| Vec::with_capacity(buf.len()));
            o.extend_from_slice(&buf[copied..m.start()]);
            mask(o, m.len());
            copied = m.end();
            pos = m.end();
            self.found += 1;
            if pos > hold {
                hold = self.hold_from(buf, pos, end);
            }
        }
        if let Some(o) = out.as_mut() {
            o.extend_from_slice(&buf[copied..hold]);
        }
        (out, hold)
    }

    /// Where the longest suffix of `buf[from..]` that is a proper prefix of
    /// some form begins (`buf.len()` when none is, or at the end).
    fn hold_from(&self, buf: &[u8], from: usize, end: bool) -> usize {
        if end {
            return buf.len();
        }
        let open = self
            .search
            .forms
            .iter()
            .map(|f| f.open_suffix(&buf[from..]))
            .max()
            .unwrap_or(0);
        buf.len() - open
    }
}

mod search_cache;

#[cfg(test)]
mod tests;
