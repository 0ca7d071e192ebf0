//! The smallest end-to-end proof through the real binary: an allowed HTTPS request reaches the
//! upstream through MITM and is audited as allowed; a host outside the allowlist is refused,
//! audited with `rejected_by`, and never reaches its upstream.

use iron_proxy_tests::*;

const CONFIG: &str = r#"
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
"#;

#[test]
fn allowed_https_request_reaches_upstream_and_is_audited() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let px = Proxy::with(CONFIG).resolver(&net).start();

    let r = Curl::get("https://httpbin.test/anything/hello?x=1")
        .header("X-Test-Case", "smoke")
        .via(&px)
        .run();
    let echo = r.expect_status(200).json();
    assert_eq!(echo["path"], "/anything/hello");
    assert_eq!(
        echo["sni"], "httpbin.test",
        "the proxy dials with the client's SNI"
    );
    let seen = up.wait_for_request(|q| q.path() == "/anything/hello");
    assert_eq!(seen.header("x-test-case"), Some("smoke"));

    let rec = px.wait_for_audit(|a| a.host() == Some("httpbin.test"));
    assert!(rec.is_allowed(), "{rec}");
    assert_eq!(rec.method(), Some("GET"));
    assert_eq!(rec.path(), Some("/anything/hello"));
    assert_eq!(rec.status_code(), Some(200));
}

#[test]
fn host_outside_allowlist_is_refused_and_never_reaches_upstream() {
    require_root!();
    let net = FakeInternet::new();
    let evil = Upstream::https("evil.test").start(&net);
    let px = Proxy::with(CONFIG).resolver(&net).start();

    let r = Curl::get("https://evil.test/get").via(&px).run();
    assert_eq!(r.status, 403, "{r}");
    let rec = px.wait_for_audit(|a| a.host() == Some("evil.test"));
    assert_eq!(rec.action(), Some("reject"), "{rec}");
    assert_eq!(rec.rejected_by(), Some("allowlist"), "{rec}");
    evil.assert_untouched();
}
