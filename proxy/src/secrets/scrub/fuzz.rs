//! Property tests of the scrubber over credential values of any shape, echoed
//! by a peer in each form the module claims to find (itself, cut short,
//! percent- or form-encoded in either hex case, JSON-escaped, hex, base64
//! alone or inside a Basic pair, of the value or of its form-encoding)
//! within any text: no whole form and no 8-byte run of the value is left, a
//! value too short to search for withholds the text, and what is kept has no
//! control character and is bounded.

use base64::Engine as _;
use proptest::prelude::*;

use super::{Scrubber, MAX_PEER_CHARS, MIN_SECRET_LEN, REDACTED};

/// Credential values: key-like, with the characters encoders change, and any
/// text (no `[` or `]`, which [`REDACTED`] itself holds).
fn secret() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9_-]{8,48}",
        3 => "[A-Za-z0-9+/=%&:@!*' .~-]{8,40}",
        2 => "[^\\[\\]]{8,24}",
    ]
}

/// Text around the echoed value: words, punctuation, any characters.
fn around() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z =:,()\"]{0,30}",
        1 => "[^\\[\\]]{0,30}",
    ]
}

/// The forms of `secret` a peer may echo, encoded by libraries other than
/// the scrubber's own where one exists.
fn encodings(secret: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let url_safe = base64::engine::general_purpose::URL_SAFE;
    let upper: String =
        percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC).collect();
    vec![
        secret.to_string(),
        upper.clone(),
        lower_escapes(&upper),
        url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
        serde_json::to_string(secret)
            .expect("json")
            .trim_matches('"')
            .to_string(),
        hex::encode(secret),
        b64.encode(secret),
        url_safe.encode(secret),
        b64.encode(format!("client-id:{secret}")),
        b64.encode(format!("id:{secret}")),
        b64.encode(format!("i:{secret}")),
        b64.encode(format!(
            "client-id:{}",
            url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>()
        )),
    ]
}

/// `%2F` → `%2f`: what encoders that write lowercase hex send.
fn lower_escapes(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let hex = rest.get(at + 1..at + 3).unwrap_or("");
        out.push('%');
        out.push_str(&hex.to_ascii_lowercase());
        rest = &rest[at + 1 + hex.len()..];
    }
    out.push_str(rest);
    out
}

proptest! {
    #[test]
    fn no_form_of_a_value_survives(
        secret in secret(),
        before in around(),
        after in around(),
        pick in any::<prop::sample::Index>(),
    ) {
        let forms = encodings(&secret);
        let echoed = &forms[pick.index(forms.len())];
        let text = format!("{before}{echoed}{after}");
        let s = Scrubber::new([secret.as_str()]);
        let out = s.redact(&text);
        prop_assert!(!out.contains(echoed.as_str()), "{:?} left in {:?}", echoed, out);
        prop_assert!(out.contains(REDACTED), "nothing redacted in {:?}", out);
        // Nor any whole-character run of 8 bytes of the value itself.
        let bytes = secret.as_bytes();
        for start in (0..bytes.len()).filter(|&i| secret.is_char_boundary(i)) {
            let end = (start + MIN_SECRET_LEN..=bytes.len()).find(|&e| secret.is_char_boundary(e));
            if let Some(end) = end {
                let piece = &secret[start..end];
                prop_assert!(!out.contains(piece), "{:?} of {:?} left in {:?}", piece, secret, out);
            }
        }
    }

    #[test]
    fn a_value_cut_short_is_redacted_too(
        secret in secret(),
        cut in any::<prop::sample::Index>(),
        before in around(),
    ) {
        let ends: Vec<usize> = (MIN_SECRET_LEN..=secret.len())
            .filter(|&e| secret.is_char_boundary(e))
            .collect();
        let cut = &secret[..ends[cut.index(ends.len())]];
        let out = Scrubber::new([secret.as_str()]).peer_text(&format!("{before}{cut}"));
        prop_assert!(!out.contains(cut), "{:?} left in {:?}", cut, out);
    }

    #[test]
    fn a_short_value_that_appears_withholds_the_text(
        secret in "[A-Za-z0-9!@#]{1,7}",
        before in around(),
        after in around(),
    ) {
        let out = Scrubber::new([secret.as_str()]).peer_text(&format!("{before}{secret}{after}"));
        prop_assert!(out.starts_with("(withheld"), "{:?}", out);
    }

    #[test]
    fn peer_text_is_escaped_and_bounded(
        text in prop_oneof![
            3 => "\\PC{0,100}",
            1 => ".{0,100}",
            1 => any::<Vec<char>>().prop_map(|c| c.into_iter().collect::<String>()),
            1 => ("\\PC{1,3}", 200usize..800).prop_map(|(s, n)| s.repeat(n)),
        ],
        secret in prop::option::of(secret()),
    ) {
        let s = Scrubber::new(secret.as_deref());
        let out = s.peer_text(&text);
        prop_assert!(!out.chars().any(char::is_control), "{:?}", out);
        // Each kept character escapes to at most `\u{10ffff}`, 10 characters.
        prop_assert!(out.chars().count() <= MAX_PEER_CHARS * 10 + 3, "{} characters", out.len());
        if s.is_empty() && !text.chars().any(char::is_control) {
            let kept: String = text.chars().take(MAX_PEER_CHARS).collect();
            prop_assert!(out.starts_with(&kept), "{:?} is not the start of {:?}", out, text);
        }
    }
}
