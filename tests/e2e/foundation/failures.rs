//! Upstream failures map to one status and one audit reason each: a name that
//! does not resolve (502 `dns_failure`), an address where nothing listens
//! (502 `connect_failed`), an untrusted certificate (502 `upstream_tls_failed`)
//! and no response headers in time (504 `upstream_timeout`).

use std::net::IpAddr;

use iron_proxy_tests::*;

use super::{audited, failed, plain, LoopbackServer, TRUNCATED};

#[test]
fn unreachable_upstreams_get_502_with_the_cause() {
    require_root!();
    let net = FakeInternet::new();
    let silent = net.add_host();
    net.dns().set("silent.test", &[IpAddr::V4(silent.v4)]);
    let badcert = Upstream::https("badcert.test").untrusted_cert().start(&net);
    let px = Proxy::with(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["*.test"]
"#,
    )
    .resolver(&net)
    .start();

    let r = plain(&px, "http://nxdomain.test/get").run();
    assert_eq!(r.status, 502, "{r}");
    audited(&px, "nxdomain.test", "/get", &failed(502, "dns_failure"));
    assert!(net.dns().was_queried("nxdomain.test"));

    let r = plain(&px, "http://silent.test/get").run();
    assert_eq!(r.status, 502, "{r}");
    audited(&px, "silent.test", "/get", &failed(502, "connect_failed"));

    let r = Curl::get("https://badcert.test/get").via(&px).run();
    assert_eq!(r.status, 502, "{r}");
    audited(
        &px,
        "badcert.test",
        "/get",
        &failed(502, "upstream_tls_failed"),
    );
    badcert.assert_untouched();
}

#[test]
fn slow_response_headers_get_504() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("slow.test").start(&net);
    let px = Proxy::with(
        r#"
proxy:
  upstream_response_header_timeout: 1s
transforms:
  - name: allowlist
    config:
      domains: ["slow.test"]
"#,
    )
    .resolver(&net)
    .start();

    let r = plain(&px, "http://slow.test/delay/3").run();
    assert_eq!(r.status, 504, "{r}");
    audited(
        &px,
        "slow.test",
        "/delay/3",
        &failed(504, "upstream_timeout"),
    );
    up.wait_for_request(|q| q.path() == "/delay/3");

    let r = Curl::get("https://slow.test/delay/2").via(&px).run();
    assert_eq!(r.status, 504, "{r}");
    audited(
        &px,
        "slow.test",
        "/delay/2",
        &failed(504, "upstream_timeout"),
    );
}

#[test]
fn a_response_body_cut_short_is_an_error_in_the_audit() {
    require_root!();
    let net = FakeInternet::new();
    let local = LoopbackServer::answering(TRUNCATED);
    net.dns().set("short.test", &[IpAddr::from([127, 0, 0, 1])]);
    let px = Proxy::with(
        r#"
proxy:
  upstream_deny_cidrs: []
transforms:
  - name: allowlist
    config:
      domains: ["short.test"]
"#,
    )
    .resolver(&net)
    .start();

    // The head (200, 100 bytes promised) goes out; the body stops at 8.
    let r = plain(&px, &format!("http://short.test:{}/short", local.port)).run();
    assert_eq!(r.status, 200, "{r}");
    assert_ne!(r.exit, 0, "curl reports the short body: {r}");
    let rec = audited(
        &px,
        "short.test",
        "/short",
        &failed(200, "upstream_body_error"),
    );
    assert!(
        rec.str("error")
            .is_some_and(|e| e.starts_with("response body:")),
        "{rec}"
    );
}
