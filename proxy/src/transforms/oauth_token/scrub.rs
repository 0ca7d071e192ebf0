//! What a token endpoint's error text may carry into the audit record: an
//! endpoint may echo the request it refused (the client secret, the Basic
//! header, the password), and its text is not ours to trust. Known
//! credential values are replaced (as the judge replaces them); a short one
//! that appears withholds the text; control characters are escaped and the
//! length is capped.

use base64::Engine as _;

use crate::transforms::judge::redact::{redact, MIN_SECRET_LEN};

/// The longest text kept, in characters.
const MAX_CHARS: usize = 512;

/// The forms a credential takes in a token request, besides itself: its
/// form encoding, and the Basic header made of a client id and secret.
pub(super) fn request_forms(values: &[&str], basic: Option<(&str, &str)>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for v in values.iter().filter(|v| !v.is_empty()) {
        out.push((*v).to_string());
        let encoded: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
        if encoded != *v {
            out.push(encoded);
        }
    }
    if let Some((id, secret)) = basic {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let pair = format!("{}:{}", enc(id), enc(secret));
        out.push(base64::engine::general_purpose::STANDARD.encode(pair.as_bytes()));
    }
    out
}

/// `text` fit for the audit record: each of `secrets` replaced by
/// `[redacted]` (the judge's [`redact`]), withheld when one too short to
/// replace appears, control characters escaped, cut to [`MAX_CHARS`].
pub(super) fn scrub(text: &str, secrets: &[String]) -> String {
    // Replacing a value as short as `ab` would rewrite ordinary words.
    if secrets
        .iter()
        .any(|s| !s.is_empty() && s.len() < MIN_SECRET_LEN && text.contains(s.as_str()))
    {
        return "(the token endpoint's text is withheld: it holds a credential value)".into();
    }
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
    let mut kept = String::new();
    for (i, c) in redact(text, &secrets).chars().enumerate() {
        if i == MAX_CHARS {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_credentials_in_any_request_form_are_redacted() {
        let forms = request_forms(
            &["S3cr3t/Client+Value", ""],
            Some(("client-id-XYZ", "S3cr3t/Client+Value")),
        );
        let basic = forms.last().expect("the basic form").clone();
        let text = format!(
            "invalid_client (client_secret=S3cr3t%2FClient%2BValue; Basic {basic}; \
             id client-id-XYZ secret S3cr3t/Client+Value)"
        );
        let out = scrub(&text, &forms);
        assert!(!out.contains("S3cr3t") && !out.contains(&basic), "{out}");
        assert!(
            out.starts_with("invalid_client (client_secret=[redacted]; Basic [redacted]"),
            "{out}"
        );
    }

    #[test]
    fn a_short_value_that_appears_withholds_the_text() {
        let out = scrub("bad password pw1 for svc", &["pw1".to_string()]);
        assert!(out.contains("withheld") && !out.contains("pw1"), "{out}");
        assert_eq!(scrub("fine", &["pw1".to_string()]), "fine");
    }

    #[test]
    fn control_characters_are_escaped_and_the_length_capped() {
        let out = scrub("a\r\nb\u{1b}[31m", &[]);
        assert_eq!(out, "a\\r\\nb\\u{1b}[31m");
        let long = "x".repeat(2000);
        assert_eq!(scrub(&long, &[]).chars().count(), MAX_CHARS + 3);
    }
}
