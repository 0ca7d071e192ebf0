//! Keeps secrets out of what a judge records. The model's raw output and its
//! reasons go to the audit log, and a provider may echo what it was sent (the
//! envelope, which holds real credentials when the judge runs after a
//! credential transform) or quote the judge's own API key in an answer. The
//! values are searched for in every form ([`crate::secrets::scrub`]).

use http::HeaderMap;

use crate::pipeline::Flow;

/// The secret values a request's judge knows of: the values of the headers a
/// credential transform set in this request ([`Flow::is_credential_header`])
/// and, for a `Scheme token` value, the token alone; and every value
/// `secrets` put anywhere in it ([`Flow::secret_values`]: the query, the
/// path, the body).
pub fn request_secrets<'a>(headers: &'a HeaderMap, cx: &'a Flow) -> Vec<&'a str> {
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
    out.extend(cx.secret_values());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
        cx.note_secret_value(
            &crate::secrets::SecretValue::new("query-value-789".into()),
            "secrets",
            true,
        );
        assert_eq!(
            request_secrets(&h, &cx),
            ["Bearer real-token-456", "real-token-456", "query-value-789"]
        );
    }
}
