//! An upstream that reflects the request hands the credential `secrets` put
//! in it back to the workload: a redirect that keeps the query (`Location:
//! /v2/x?api_key=...`), a `Set-Cookie` or debug header quoting a request
//! header, a `WWW-Authenticate` echoing the token. Response headers are
//! scrubbed here, in every form a URL or a header gives the value (itself,
//! percent-encoded in either hex case, form-encoded); the body is scrubbed as
//! it streams by `response_body`. An API that stores what it is sent (a
//! comment, an issue) and returns it later on another request is out of
//! reach; see docs/secrets.md ("What comes back").

use http::{HeaderMap, HeaderValue};

use crate::secrets::scrub::{url_forms, MIN_SECRET_LEN, REDACTED};

/// Replaces each of `values` (at least [`MIN_SECRET_LEN`] bytes: a shorter
/// one would match ordinary text) in the header values of `headers` with
/// [`REDACTED`]; returns the names of the headers changed, once each.
pub(super) fn redact_headers<'a>(
    headers: &mut HeaderMap,
    values: impl Iterator<Item = &'a str>,
) -> Vec<String> {
    let mut needles: Vec<Vec<u8>> = Vec::new();
    for v in values.filter(|v| v.len() >= MIN_SECRET_LEN) {
        for f in url_forms(v).map(String::into_bytes) {
            if !needles.contains(&f) {
                needles.push(f);
            }
        }
    }
    // Longest first, so a form is not cut by a shorter one inside it.
    needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
    let mut changed: Vec<String> = Vec::new();
    if needles.is_empty() {
        return changed;
    }
    for (name, value) in headers.iter_mut() {
        let mut bytes = value.as_bytes().to_vec();
        let mut hit = false;
        for n in &needles {
            while let Some(at) = find(&bytes, n) {
                bytes.splice(at..at + n.len(), REDACTED.bytes());
                hit = true;
            }
        }
        if !hit {
            continue;
        }
        if let Ok(v) = HeaderValue::from_bytes(&bytes) {
            *value = v;
        }
        if !changed.iter().any(|c| c == name.as_str()) {
            changed.push(name.as_str().to_string());
        }
    }
    changed
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let changed = redact_headers(&mut h, [secret, "short"].into_iter());
        assert_eq!(changed, ["location", "set-cookie", "x-echo"]);
        assert_eq!(h["location"], "/v2/x?api_key=[redacted]&page=2");
        let cookies: Vec<_> = h.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["k=[redacted]", "other=1"]);
        assert_eq!(h["x-echo"], "Bearer [redacted]");
        assert_eq!(h["content-type"], "text/plain");
    }

    #[test]
    fn nothing_to_find_changes_nothing() {
        let mut h = HeaderMap::new();
        h.insert("location", HeaderValue::from_static("/short/path"));
        assert!(redact_headers(&mut h, ["short"].into_iter()).is_empty());
        assert!(redact_headers(&mut h, std::iter::empty()).is_empty());
        assert_eq!(h["location"], "/short/path");
    }
}
