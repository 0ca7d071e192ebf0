//! Keeps secrets out of what a judge records. The model's raw output and its
//! reasons go to the audit log, and a provider may echo what it was sent (the
//! envelope, which holds real credentials when the judge runs after a
//! credential transform) or quote the judge's own API key in an answer.
//! `oauth_token` scrubs a token endpoint's error text with [`redact`] too.

use http::HeaderMap;

use crate::pipeline::Flow;
use crate::transforms::annotate::REDACTED;

/// Values shorter than this are not searched for: they would match ordinary
/// text, and no API key or injected credential is that short.
pub const MIN_SECRET_LEN: usize = 8;

/// The secret values a request's judge knows of: the values of the headers a
/// credential transform set in this request ([`Flow::is_credential_header`])
/// and, for a `Scheme token` value, the token alone.
pub fn request_secrets<'h>(headers: &'h HeaderMap, cx: &Flow) -> Vec<&'h str> {
    let mut out = Vec::new();
    for (name, value) in headers {
        if !cx.is_credential_header(name) {
            continue;
        }
        let Ok(v) = value.to_str() else { continue };
        out.push(v);
        if let Some((_, token)) = v.trim().split_once(' ') {
            out.push(token.trim());
        }
    }
    out
}

/// `text` with every occurrence of each of `secrets` (longest first, those of
/// at least [`MIN_SECRET_LEN`] bytes) replaced by [`REDACTED`].
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let mut secrets: Vec<&str> = secrets
        .iter()
        .copied()
        .filter(|s| s.len() >= MIN_SECRET_LEN)
        .collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut out = text.to_string();
    for s in secrets {
        if out.contains(s) {
            out = out.replace(s, REDACTED);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_longest_first_and_short_values_left() {
        let key = "sk-judge-key-0123";
        let text = format!("echo: x-api-key: {key}, auth Bearer real-token-456, id 42");
        let out = redact(
            &text,
            &[key, "real-token-456", "Bearer real-token-456", "42"],
        );
        assert_eq!(out, "echo: x-api-key: [redacted], auth [redacted], id 42");
    }

    #[test]
    fn credential_headers_of_the_request_are_secrets() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            "Bearer real-token-456".parse().expect("value"),
        );
        h.insert("x-other", "visible-value".parse().expect("value"));
        let mut cx = crate::pipeline::test_flow("api.test", "POST", "/");
        assert!(request_secrets(&h, &cx).is_empty());
        cx.mark_credential_header(&http::header::AUTHORIZATION);
        assert_eq!(
            request_secrets(&h, &cx),
            ["Bearer real-token-456", "real-token-456"]
        );
    }
}
