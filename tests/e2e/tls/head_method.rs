//! HEAD (RFC 9110 §9.3.2): the response carries the headers a GET would, Content-Length
//! included, and no body, on HTTP/1.1 and HTTP/2 both legs (the upstream leg takes the
//! client's version). Over HTTP/2 a body on a HEAD response is a malformed response
//! (RFC 9113 §8.1.1) that h2 clients refuse: the fake upstream's `/bytes/N` used to send one
//! (hyper's HTTP/2 server does not drop it), and so did the proxy's own answers (a refusal).
//! Real clients: curl -I, and httpx over HTTP/2 (the h2 library, which refuses such DATA).

use super::*;

/// The allowlist of [`MITM`]'s host, but only under `/bytes/`: anything else is refused by
/// the proxy with its own 403 page.
const BYTES_ONLY: &str = r#"
proxy:
  tunnel_listen: auto
transforms:
  - name: allowlist
    config:
      rules:
        - host: "httpbin.test"
          paths: ["/bytes/*"]
"#;

/// HEADs `argv[3..]` through the CONNECT proxy `argv[2]` over HTTP/2 (CA `argv[1]`); prints
/// one `{"status", "version", "content_length", "body_len"}` or `{"error"}` per URL.
const HTTPX_HEAD: &str = r#"
import json, sys, httpx
ca, proxy = sys.argv[1], sys.argv[2]
with httpx.Client(http1=False, http2=True, verify=ca, proxy=proxy, timeout=30) as c:
    for url in sys.argv[3:]:
        try:
            r = c.head(url)
            print(json.dumps({"status": r.status_code, "version": r.http_version,
                              "content_length": r.headers.get("content-length"),
                              "body_len": len(r.content)}))
        except Exception as e:
            print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))
"#;

/// curl -I `url` with `flag`; the status and Content-Length, checking nothing follows the head.
fn curl_head(px: &ProxyProcess, what: &str, flag: &str, url: &str) -> (u16, Option<String>) {
    let r = Curl::new(["-I", flag, url]).via(px).run();
    assert_eq!(r.exit, 0, "{what}: {r}");
    // curl -I writes the head where the body would go: nothing may follow it.
    let end = r.body.find("\r\n\r\n").map(|i| i + 4);
    assert_eq!(
        end,
        Some(r.body.len()),
        "{what}: no body after the head: {r}"
    );
    (r.status, r.header("content-length").map(str::to_string))
}

#[test]
fn head_gets_the_headers_and_no_body_over_http1_and_http2() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    for (what, flag, url) in [
        ("h1", "--http1.1", "https://httpbin.test/bytes/100001"),
        ("h2", "--http2", "https://httpbin.test/bytes/100002"),
        ("plain", "--http1.1", "http://httpbin.test/bytes/100003"),
    ] {
        let len = &url[url.len() - 6..];
        let path = &url[url.find("/bytes").expect("path")..];
        let (status, cl) = curl_head(&px, what, flag, url);
        assert_eq!(status, 200, "{what}");
        assert_eq!(cl.as_deref(), Some(len), "{what}: the GET's Content-Length");
        let seen = up.wait_for_request(|q| q.path() == path);
        assert_eq!(seen.method(), "HEAD", "{what}");
        let rec = px.wait_for_audit(|a| a.path() == Some(path));
        assert!(rec.is_allowed(), "{what}: {rec}");
        assert_eq!(rec.status_code(), Some(200), "{what}: {rec}");
    }
}

#[test]
fn head_answered_by_the_proxy_has_no_body_over_http2() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let px = Proxy::with(BYTES_ONLY).resolver(&net).start();
    let proxy = format!("http://{}", hostport(px.tunnel_addr()));
    let out = python(
        HTTPX_HEAD,
        [
            px.ca(),
            proxy.as_str(),
            "https://httpbin.test/bytes/5000",
            "https://httpbin.test/refused-hx",
        ],
    );
    out.assert_ok();
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    let (allowed, refused) = (&lines[0], &lines[1]);
    assert_eq!(allowed["status"], 200, "{allowed}");
    assert_eq!(allowed["version"], "HTTP/2", "{allowed}");
    assert_eq!(allowed["content_length"], "5000", "{allowed}");
    assert_eq!(allowed["body_len"], 0, "{allowed}");
    // The refusal: the headers of the proxy's 403 page, Content-Length included, no DATA.
    assert_eq!(refused["status"], 403, "{refused}");
    assert_eq!(refused["body_len"], 0, "{refused}");
    let page: u64 = refused["content_length"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("the 403 page's Content-Length: {refused}"));
    assert!(page > 0, "{refused}");
    // curl: the same refusal (a page of the same length) over HTTP/1.1 and HTTP/2.
    for (what, flag) in [("h1", "--http1.1"), ("h2", "--http2")] {
        let url = format!("https://httpbin.test/refused-{what}");
        let (status, cl) = curl_head(&px, what, flag, &url);
        assert_eq!(status, 403, "{what}");
        assert_eq!(cl, Some(page.to_string()), "{what}");
    }
    up.assert_no_request(|q| q.path().starts_with("/refused"));
    let rec = px.wait_for_audit(|a| a.path() == Some("/bytes/5000"));
    assert!(rec.is_allowed(), "{rec}");
    assert_eq!(rec.status_code(), Some(200), "{rec}");
    for path in ["/refused-hx", "/refused-h1", "/refused-h2"] {
        let rec = px.wait_for_audit(|a| a.path() == Some(path));
        assert_eq!(rec.action(), Some("reject"), "{rec}");
        assert_eq!(rec.status_code(), Some(403), "{rec}");
        assert_eq!(
            rec.str("error"),
            None,
            "the client took the whole answer: {rec}"
        );
    }
}
