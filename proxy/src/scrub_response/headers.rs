//! An upstream that reflects the request hands the credentials put in it
//! back to the workload: a redirect that keeps the query (`Location:
//! /v2/x?api_key=...`), a `Set-Cookie` or debug header quoting a request
//! header, a `WWW-Authenticate` echoing the token. Response headers are
//! scrubbed here, in every form the body's scrub looks for (itself,
//! percent-encoded in either hex case, form-encoded, JSON-escaped, base64 at
//! any alignment), with one search over all of them; the body is scrubbed as
//! it streams by [`super::body`]. An API that stores what it is sent (a
//! comment, an issue) and returns it later on another request is out of
//! reach; see docs/secrets.md ("What comes back").

use http::{HeaderMap, HeaderValue};

use crate::secrets::body_scrub::BodyScrubber;

/// What stands in [`redact_headers`]' list for the fields dropped because
/// their name held a value.
pub(super) const REDACTED_NAME: &str = "[redacted name]";

/// Replaces what `search` looks for (the values of at least
/// `MIN_SECRET_LEN` bytes this request was given, in every form the body's
/// scrub looks for: [`crate::secrets::body_scrub::needle_forms`], raw,
/// URL-encoded, JSON-escaped, base64 at any alignment, as an echoed
/// `Authorization: Basic` carries a formatted value) in the header values
/// of `headers` with `[redacted]`, and drops a field whose name holds one
/// (`x-echo-<key>: 1`; a name cannot be masked and stay the field it was);
/// returns the names of the fields changed, once each ([`REDACTED_NAME`]
/// for the dropped ones). Used for trailers too.
pub(super) fn redact_headers(headers: &mut HeaderMap, search: &BodyScrubber) -> Vec<String> {
    let mut changed: Vec<String> = Vec::new();
    let named: Vec<http::HeaderName> = headers
        .keys()
        .filter(|n| search.in_name(n.as_str().as_bytes()))
        .cloned()
        .collect();
    if !named.is_empty() {
        for n in &named {
            headers.remove(n);
        }
        changed.push(REDACTED_NAME.to_string());
    }
    for (name, value) in headers.iter_mut() {
        let Some(bytes) = search.redact(value.as_bytes()) else {
            continue;
        };
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            *value = v;
        }
        if !changed.iter().any(|c| c == name.as_str()) {
            changed.push(name.as_str().to_string());
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`redact_headers`] for `values`, as [`super::super::scrub`] calls it.
    fn redact<'a>(h: &mut HeaderMap, values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        match BodyScrubber::new(values).expect("search") {
            Some(search) => redact_headers(h, &search),
            None => Vec::new(),
        }
    }

    #[test]
    fn reflected_values_are_redacted_in_every_url_form() {
        let secret = "sk-live/ab+cd=ef 123";
        let mut h = HeaderMap::new();
        h.insert(
            "location",
            HeaderValue::from_static("/v2/x?api_key=sk-live%2Fab%2Bcd%3Def+123&page=2"),
        );
        h.append(
            "set-cookie",
            HeaderValue::from_static("k=sk-live%2fab%2bcd%3def%20123"),
        );
        h.append("set-cookie", HeaderValue::from_static("other=1"));
        h.insert(
            "x-echo",
            HeaderValue::from_static("Bearer sk-live/ab+cd=ef 123"),
        );
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        let changed = redact(&mut h, [secret, "short"]);
        assert_eq!(changed, ["location", "set-cookie", "x-echo"]);
        assert_eq!(h["location"], "/v2/x?api_key=[redacted]&page=2");
        let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["k=[redacted]", "other=1"]);
        assert_eq!(h["x-echo"], "Bearer [redacted]");
        assert_eq!(h["content-type"], "text/plain");
    }

    /// A value a formatter put in `Authorization: Basic` goes out in base64:
    /// a debug header echoing the request's authorization carries it so.
    #[test]
    fn a_value_echoed_in_base64_is_redacted() {
        use base64::Engine as _;
        let secret = "s3cr3t-password-xyz";
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("git-user:{secret}"));
        let mut h = HeaderMap::new();
        h.insert(
            "x-echo-authorization",
            HeaderValue::from_str(&format!("Basic {basic}")).unwrap(),
        );
        let changed = redact(&mut h, [secret]);
        assert_eq!(changed, ["x-echo-authorization"]);
        let shown = h["x-echo-authorization"].to_str().unwrap();
        assert!(shown.contains("[redacted]"), "{shown}");
        let inner = &basic[12..basic.len() - 4];
        assert!(!shown.contains(inner), "{shown}");
    }

    /// Finding 6 of the credential audit: `x-e-<key>: 1` came back whole.
    #[test]
    fn a_field_whose_name_holds_a_value_is_dropped() {
        // Upper case in the value; HTTP lowercases the name.
        let secret = "sk-live-ABCDefgh1234";
        let mut h = HeaderMap::new();
        h.insert("x-e-sk-live-abcdefgh1234", HeaderValue::from_static("1"));
        h.insert("x-other", HeaderValue::from_static("2"));
        let changed = redact(&mut h, [secret]);
        assert_eq!(changed, [REDACTED_NAME]);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-other"], "2");
    }

    #[test]
    fn nothing_to_find_changes_nothing() {
        let mut h = HeaderMap::new();
        h.insert("location", HeaderValue::from_static("/short/path"));
        assert!(redact(&mut h, ["short"]).is_empty());
        assert!(redact(&mut h, std::iter::empty()).is_empty());
        assert_eq!(h["location"], "/short/path");
    }
}
