//! Keeps credential values out of text the proxy records: a token endpoint's
//! or a secret backend's error text, a judge model's answer. Such text comes
//! from a peer that saw the credential and may echo it: whole, percent- or
//! form-encoded (either hex case), in base64 (alone or inside a Basic pair,
//! form-encoded first as RFC 6749 has it), cut short, or with JSON escapes. Exact replacement misses most of those, so
//! a [`Scrubber`] indexes every [`WINDOW`]-byte piece of each value and of its
//! encodings, and redacts each run of token characters around a piece it
//! finds. Values too short to index withhold the whole text when they appear.

use std::borrow::Cow;
use std::collections::HashSet;

use base64::Engine as _;

/// What a redacted run becomes.
pub const REDACTED: &str = "[redacted]";

/// Values shorter than this are not searched for piece by piece: their pieces
/// would match ordinary text. No API key or injected credential is that short.
pub const MIN_SECRET_LEN: usize = 8;

/// The length of the pieces searched for, in bytes.
const WINDOW: usize = MIN_SECRET_LEN;

/// What a URL component's percent-encoding leaves as it is: letters,
/// digits and the unreserved `-._~` (RFC 3986), as Python's `quote` and
/// most encoders do.
const URL_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The longest peer text kept, in characters ([`Scrubber::peer_text`]).
pub const MAX_PEER_CHARS: usize = 512;

/// The known credential values of one exchange, ready to search text for.
#[derive(Default)]
pub struct Scrubber {
    /// Every [`WINDOW`]-byte piece of each value and of each of its forms.
    pieces: HashSet<[u8; WINDOW]>,
    /// The forms of values shorter than [`MIN_SECRET_LEN`], searched whole.
    short: Vec<String>,
}

impl Scrubber {
    /// A scrubber for `values` (empty ones are skipped).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Scrubber {
        let mut s = Scrubber::default();
        for v in values {
            s.add(v);
        }
        s
    }

    /// Adds `value` and its encodings.
    pub fn add(&mut self, value: &str) {
        if value.is_empty() {
            return;
        }
        let forms = forms(value);
        if value.len() < MIN_SECRET_LEN {
            self.short
                .extend(forms.into_iter().filter(|f| !f.is_empty()));
            return;
        }
        for f in &forms {
            for w in f.as_bytes().windows(WINDOW) {
                let mut piece = [0u8; WINDOW];
                piece.copy_from_slice(w);
                self.pieces.insert(piece);
            }
        }
    }

    /// Whether no value is known.
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty() && self.short.is_empty()
    }

    /// Whether `text` holds a value too short to redact.
    fn holds_short(&self, text: &str) -> bool {
        self.short.iter().any(|s| text.contains(s.as_str()))
    }

    /// `text` with every run of token characters that holds a piece of a
    /// known value replaced by [`REDACTED`]. A value shorter than
    /// [`MIN_SECRET_LEN`] is left: see [`Scrubber::peer_text`].
    pub fn redact<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let bytes = text.as_bytes();
        if self.pieces.is_empty() || bytes.len() < WINDOW {
            return Cow::Borrowed(text);
        }
        // Byte ranges to redact, in order and merged.
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        let mut i = 0;
        while i + WINDOW <= bytes.len() {
            // Inside a run already redacted: nothing to find (and widening
            // again for each piece of a long run would be quadratic).
            if ranges.last().is_some_and(|last| i + WINDOW <= last.1) {
                i += 1;
                continue;
            }
            let mut piece = [0u8; WINDOW];
            piece.copy_from_slice(&bytes[i..i + WINDOW]);
            if !self.pieces.contains(&piece) {
                i += 1;
                continue;
            }
            let (start, end) = widen(bytes, i, i + WINDOW);
            match ranges.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => ranges.push((start, end)),
            }
            i += 1;
        }
        if ranges.is_empty() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end) in ranges {
            // Runs are widened over ASCII only, and pieces hold whole
            // characters of the text where they match a UTF-8 value; a range
            // inside a character is moved out to its boundaries.
            let start = floor_char(text, start.max(at));
            let end = ceil_char(text, end);
            out.push_str(&text[at..start]);
            out.push_str(REDACTED);
            at = end;
        }
        out.push_str(&text[at..]);
        Cow::Owned(out)
    }

    /// A peer's text (an error message or description) fit to record:
    /// [`Scrubber::redact`]ed, withheld whole when a value too short to
    /// redact appears, control characters escaped, cut to [`MAX_PEER_CHARS`].
    pub fn peer_text(&self, text: &str) -> String {
        if self.holds_short(text) {
            return "(withheld: the text holds a credential value)".into();
        }
        let mut kept = String::new();
        for (i, c) in self.redact(text).chars().enumerate() {
            if i == MAX_PEER_CHARS {
                kept.push_str("...");
                break;
            }
            if c.is_control() {
                kept.extend(c.escape_default());
            } else {
                kept.push(c);
            }
        }
        kept
    }
}

/// The forms `value` takes on the wire: itself; percent-encoded (upper and
/// lower case hex, `+` or `%20` for a space); JSON-escaped; hex; and base64
/// (standard and URL-safe), of the value and of its form-encoding, at each
/// of the three alignments it can have inside a longer encoded string, such
/// as a Basic `id:secret` pair, keeping only the characters that depend on
/// the value's bytes alone.
fn forms(value: &str) -> Vec<String> {
    let mut out = url_forms(value);
    let upper: String =
        percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).collect();
    out.push(lower_hex_escapes(&upper));
    out.push(upper);
    if let Ok(json) = serde_json::to_string(value) {
        out.push(json.trim_matches('"').replace('/', "\\/"));
        out.push(json.trim_matches('"').to_string());
    }
    out.push(hex::encode(value));
    out.extend(base64_forms(value));
    // A Basic pair is made of the form-encoded id and secret (RFC 6749
    // 2.3.1, as golang.org/x/oauth2 and `oauth_token` send it): its base64
    // is that of the encoded value, which shares no piece with the value's
    // own when the value is dense with characters the encoding changes.
    let form: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
    if form != value {
        out.extend(base64_forms(&form));
    }
    out.sort();
    out.dedup();
    out
}

/// `value` in base64 (standard and URL-safe) at each of the three
/// alignments it can have inside a longer encoded string, such as a Basic
/// `id:secret` pair, keeping only the characters that depend on the value's
/// bytes alone (the one or two at each end that mix in a neighbour's bits
/// are left out).
pub(crate) fn base64_forms(value: &str) -> Vec<String> {
    let engines = [
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    let mut out = Vec::with_capacity(6);
    for align in 0..3usize {
        let mut input = vec![0u8; align];
        input.extend_from_slice(value.as_bytes());
        for engine in &engines {
            let enc = engine.encode(&input);
            // Character j carries bits 6j..6j+6 of the input: it depends on
            // the value alone when those bits lie within the value's bytes.
            let first = (align * 8).div_ceil(6);
            let last = (input.len() * 8) / 6; // exclusive
            if first < last {
                out.push(enc[first..last].to_string());
            }
        }
    }
    out
}

/// Python's `quote()` with its default `safe='/'`.
const PYTHON_QUOTE: &percent_encoding::AsciiSet = &URL_COMPONENT.remove(b'/');

/// Go's `url.PathEscape`: also `$&+:=@` left as they are (`,` and `;` are
/// escaped: Go keeps them for a segment's own meaning).
const GO_PATH: &percent_encoding::AsciiSet = &URL_COMPONENT
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b':')
    .remove(b'=')
    .remove(b'@');

/// JavaScript's `encodeURIComponent`: also `!*'()` left as they are.
const JS_COMPONENT: &percent_encoding::AsciiSet = &URL_COMPONENT
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// JavaScript's `encodeURI`: also `;,/?:@&=+$#` left as they are.
const JS_URI: &percent_encoding::AsciiSet = &JS_COMPONENT
    .remove(b';')
    .remove(b',')
    .remove(b'/')
    .remove(b'?')
    .remove(b':')
    .remove(b'@')
    .remove(b'&')
    .remove(b'=')
    .remove(b'+')
    .remove(b'$')
    .remove(b'#');

/// PHP's `urlencode` (with `+` for a space): `~` encoded too.
const PHP_URLENCODE: &percent_encoding::AsciiSet = &URL_COMPONENT.add(b'~');

/// The forms `value` takes in a URL or a header: itself, percent-encoded as a
/// URL component ([`URL_COMPONENT`], upper and lower case hex; with `+` for a
/// space, as Python's `quote_plus` and Go's `QueryEscape` write it),
/// form-encoded (WHATWG, as `URLSearchParams` writes it), and as other common
/// encoders leave more characters as they are: Python's `quote()`, Go's
/// `PathEscape`, JavaScript's `encodeURIComponent` and `encodeURI`, PHP's
/// `urlencode`. A value of letters, digits, `-`, `.` and `_` has one form.
pub(crate) fn url_forms(value: &str) -> Vec<String> {
    let encode = |set| -> String { percent_encoding::utf8_percent_encode(value, set).collect() };
    let component = encode(URL_COMPONENT);
    let mut forms = vec![
        value.to_string(),
        lower_hex_escapes(&component),
        component.replace("%20", "+"),
        url::form_urlencoded::byte_serialize(value.as_bytes()).collect(),
        encode(PYTHON_QUOTE),
        encode(GO_PATH),
        encode(JS_COMPONENT),
        encode(JS_URI),
        encode(PHP_URLENCODE).replace("%20", "+"),
        component,
    ];
    forms.sort_unstable();
    forms.dedup();
    forms
}

/// `%2F` → `%2f`, leaving the rest as it is.
fn lower_hex_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut escape = 0;
    for c in s.chars() {
        if c == '%' {
            escape = 2;
            out.push(c);
        } else if escape > 0 {
            escape -= 1;
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `b` may be part of a credential's run in text: the characters of
/// tokens, keys and their encodings (not `=`, `&` or `:`, which join a
/// field's name to its value).
fn token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'_' | b'.' | b'~' | b'%' | b'-' | b'\\')
}

/// `start..end` widened to the run of token bytes around it, and over the
/// `=` padding that may end a base64 run.
fn widen(bytes: &[u8], mut start: usize, mut end: usize) -> (usize, usize) {
    while start > 0 && token_byte(bytes[start - 1]) {
        start -= 1;
    }
    while end < bytes.len() && token_byte(bytes[end]) {
        end += 1;
    }
    while end < bytes.len() && bytes[end] == b'=' {
        end += 1;
    }
    (start, end)
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_char(s: &str, mut i: usize) -> usize {
    while i < s.len() && !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "SEKRET-7f3a9c-CS/ab+cd=ef";

    fn clean(out: &str) {
        for leak in ["SEKRET", "7f3a9c", "U0VLUkVU", "ab+cd", "ab%2"] {
            assert!(!out.contains(leak), "{leak:?} left in {out:?}");
        }
    }

    #[test]
    fn every_encoding_of_a_value_is_redacted() {
        let s = Scrubber::new([SECRET]);
        let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
        let texts = [
            format!("client_secret={SECRET} rest"),
            "upper SEKRET-7f3a9c-CS%2Fab%2Bcd%3Def".to_string(),
            "lower SEKRET-7f3a9c-CS%2fab%2bcd%3def".to_string(),
            format!("json {}", serde_json::to_string(SECRET).expect("json")),
            "escaped SEKRET-7f3a9c-CS\\/ab+cd=ef".to_string(),
            format!("alone {}", b64(SECRET)),
            format!("Basic {}", b64(&format!("client-id:{SECRET}"))),
            format!("Basic {}", b64(&format!("id1:{SECRET}"))),
            format!("Basic {}", b64(&format!("i:{SECRET}"))),
            format!(
                "urlsafe {}",
                base64::engine::general_purpose::URL_SAFE.encode(SECRET)
            ),
            format!("hex {}", hex::encode(SECRET)),
            "cut short SEKRET-7f3a9c-CS/ab+cd".to_string(),
        ];
        for t in &texts {
            let out = s.redact(t);
            clean(&out);
            assert!(out.contains(REDACTED), "{t:?} -> {out:?}");
        }
        assert_eq!(
            s.redact(&format!(
                "invalid_client (client_secret={SECRET}, grant_type=x)"
            )),
            "invalid_client (client_secret=[redacted], grant_type=x)"
        );
    }

    /// Found by the oauth_token property test: a Basic pair holds the base64 of the
    /// form-encoded secret, and a secret dense with characters the encoding changes
    /// shares no 8-character piece with its own base64, so an endpoint's echo of the
    /// Authorization header it was sent was shown whole.
    #[test]
    fn a_basic_pair_of_the_form_encoded_value_is_redacted() {
        let secret = "-!+0-A!!0%0a";
        let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("c1:{form}"));
        let text = format!("(Authorization: Basic {basic};)");
        let out = Scrubber::new([secret]).redact(&text);
        assert_eq!(out, "(Authorization: Basic [redacted];)");
    }

    #[test]
    fn text_without_a_value_is_left_as_it_is() {
        let s = Scrubber::new([SECRET, "another-long-value-123"]);
        let t = "invalid_grant: Token has been expired or revoked. (see https://example.test/x)";
        assert!(matches!(s.redact(t), Cow::Borrowed(_)));
        assert_eq!(s.peer_text(t), t);
        assert!(Scrubber::new([]).is_empty());
    }

    #[test]
    fn a_short_value_that_appears_withholds_the_text() {
        let s = Scrubber::new(["pw1"]);
        let out = s.peer_text("bad password pw1 for svc");
        assert!(out.contains("withheld") && !out.contains("pw1"), "{out}");
        assert_eq!(s.peer_text("fine"), "fine");
    }

    #[test]
    fn control_characters_are_escaped_and_the_length_capped() {
        let s = Scrubber::default();
        assert_eq!(s.peer_text("a\r\nb\u{1b}[31m"), "a\\r\\nb\\u{1b}[31m");
        let long = "x".repeat(2000);
        assert_eq!(s.peer_text(&long).chars().count(), MAX_PEER_CHARS + 3);
    }

    #[test]
    fn multibyte_text_around_a_value_stays_valid() {
        let s = Scrubber::new(["clé-secrète-très-longue"]);
        let out = s.redact("é«clé-secrète-très-longue»é");
        assert_eq!(out, "é«[redacted]»é");
    }
}
