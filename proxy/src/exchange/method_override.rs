//! The methods a request asks a server to perform instead of its own.
//!
//! Many servers let a client tunnel one method through another: Google APIs
//! and ASP.NET read `X-HTTP-Method-Override`, Rack and Laravel a `_method`
//! parameter, others `X-HTTP-Method` or `X-Method-Override`. A `POST` that
//! carries `X-HTTP-Method-Override: DELETE` is a DELETE to such a server, so
//! a rule that allows only `POST` (an allowlist rule, a credential's scope)
//! must not pass it on that basis alone: rules that restrict methods match
//! only when they allow the request's method and each of these
//! ([`crate::rules::Rule::matches`]). A body parameter (`_method` in a form
//! body) is not read: the body streams.

use http::{HeaderMap, HeaderName};

/// The headers servers read a method override from. Built names: looked up
/// on every request, a `&str` would be parsed into a name each time.
static HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// Each method `headers` and `query` (the URI's query, undecoded) name
/// besides `method`, uppercased, once each. A value that is no method name
/// is kept as it is (uppercased): no rule allows it, so a rule restricting
/// methods does not match.
pub fn method_overrides(method: &str, headers: &HeaderMap, query: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |v: &str| {
        let v = v.trim().to_ascii_uppercase();
        if !v.eq_ignore_ascii_case(method) && !out.contains(&v) {
            out.push(v);
        }
    };
    for name in &HEADERS {
        for v in headers.get_all(name) {
            add(&String::from_utf8_lossy(v.as_bytes()));
        }
    }
    // Parsed only when it may hold the parameter (`_method`, or some
    // percent-encoding of it): most queries do not.
    if let Some(q) = query.filter(|q| q.contains("method") || q.contains('%')) {
        for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
            if k == "_method" {
                add(&v);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        h
    }

    #[test]
    fn every_header_and_query_spelling_is_read_once_uppercased() {
        let h = headers(&[
            ("X-HTTP-Method-Override", "delete"),
            ("x-http-method", "PUT"),
            ("X-Method-Override", " DELETE "),
        ]);
        assert_eq!(
            method_overrides("POST", &h, Some("a=1&_method=patch&_%6Dethod=get")),
            ["DELETE", "PUT", "PATCH", "GET"]
        );
    }

    #[test]
    fn the_requests_own_method_and_no_override_give_nothing() {
        let h = headers(&[("X-HTTP-Method-Override", "post")]);
        assert!(method_overrides("POST", &h, Some("_method=POST")).is_empty());
        assert!(method_overrides("GET", &HeaderMap::new(), Some("method=DELETE")).is_empty());
    }
}
