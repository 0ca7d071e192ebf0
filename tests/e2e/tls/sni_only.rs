//! `tls.mode: sni-only`: TLS is passed through untouched after the SNI is checked, so the
//! client sees the upstream's own certificate; one audit record per connection.

use super::*;

const SNI_ONLY: &str = r#"
tls:
  mode: sni-only
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
"#;

/// curl to the HTTPS listener trusting only `ca`.
fn curl_trusting(px: &ProxyProcess, ca: &str, urls: &[String]) -> CurlResult {
    let mut args = vec![
        "--cacert".to_string(),
        ca.to_string(),
        "--connect-to".to_string(),
        px.connect_to_https(),
    ];
    args.extend(urls.iter().cloned());
    Curl::new(args).run()
}

#[test]
fn client_verifies_the_upstreams_own_certificate_and_one_record_per_connection() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let px = Proxy::with(SNI_ONLY).resolver(&net).start();
    let upstream_ca = net.ca_bundle();
    let upstream_ca = upstream_ca.to_str().expect("utf-8 path");

    // Two requests on one connection (curl reuses it for the same host).
    let urls = [up.url("/anything/pass-1"), up.url("/anything/pass-2")];
    let r = curl_trusting(&px, upstream_ca, &urls);
    assert_eq!(r.exit, 0, "trusting the upstream CA works:\n{r}");
    let first = up.wait_for_request(|q| q.path() == "/anything/pass-1");
    let second = up.wait_for_request(|q| q.path() == "/anything/pass-2");
    assert_eq!(first.sni(), Some("httpbin.test"), "{first}");
    assert_eq!(
        first.0["origin"], second.0["origin"],
        "one upstream connection"
    );

    let rec = px.wait_for_audit(|a| a.host() == Some("httpbin.test"));
    assert!(rec.is_allowed(), "{rec}");
    assert_eq!(rec.str("mode"), Some("sni-only"), "{rec}");
    assert_eq!(rec.str("sni"), Some("httpbin.test"), "{rec}");
    let bytes = |k: &str| rec.pointer(k).and_then(|v| v.as_u64()).unwrap_or(0);
    assert!(bytes("/bytes_sent") > 0, "{rec}");
    assert!(bytes("/bytes_received") > 0, "{rec}");
    assert_eq!(
        px.audit().for_host("httpbin.test").len(),
        1,
        "one record per connection, not per request:\n{}",
        px.audit()
    );

    // The proxy's own CA is not what the client sees: trusting it alone fails.
    let r = curl_trusting(&px, px.ca(), &[up.url("/anything/pass-3")]);
    assert_eq!(
        r.exit, 60,
        "the certificate is the upstream's, not a minted leaf:\n{r}"
    );
}

#[test]
fn denied_sni_is_closed_and_audited() {
    require_root!();
    let net = FakeInternet::new();
    let evil = Upstream::https("evil.test").start(&net);
    let px = Proxy::with(SNI_ONLY).resolver(&net).start();
    let ca = net.ca_bundle();

    let r = curl_trusting(&px, ca.to_str().expect("utf-8 path"), &[evil.url("/get")]);
    assert_ne!(r.exit, 0, "a denied SNI must not connect:\n{r}");
    assert_eq!(r.status, 0, "{r}");
    let rec = px.wait_for_audit(|a| a.host() == Some("evil.test"));
    assert_eq!(rec.action(), Some("reject"), "{rec}");
    assert_eq!(rec.str("mode"), Some("sni-only"), "{rec}");
    assert_eq!(rec.rejected_by(), Some("allowlist"), "{rec}");
    assert_eq!(rec.str("sni"), Some("evil.test"), "{rec}");
    // Refused by closing the connection: no HTTP response, status 0.
    assert_eq!(rec.status_code(), Some(0), "{rec}");
    evil.assert_untouched();
}

#[test]
fn tls_without_sni_is_refused_and_audited_as_sni_only() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let px = Proxy::with(SNI_ONLY).resolver(&net).start();

    // curl sends no SNI for an IP literal.
    let ca = net.ca_bundle();
    let https = hostport(px.https_addr());
    let r = Curl::new([
        "--cacert".to_string(),
        ca.to_str().expect("utf-8 path").to_string(),
        format!("https://{https}/get"),
    ])
    .run();
    assert_ne!(r.exit, 0, "{r}");
    let rec = px.wait_for_audit(|a| a.str("reason") == Some("missing_sni"));
    assert_eq!(rec.action(), Some("reject"), "{rec}");
    assert_eq!(rec.status_code(), Some(0), "{rec}");
    // As every other record of a connection in sni-only mode.
    assert_eq!(rec.str("mode"), Some("sni-only"), "{rec}");
    up.assert_untouched();
}

#[test]
fn a_passthrough_dial_to_addresses_that_never_answer_is_bounded_as_a_whole() {
    require_root!();
    let net = FakeInternet::new();
    // Two addresses that drop SYNs: each connect waits the dialer's 10 s, so without a bound
    // on the whole the client's connection would be held 20 s.
    let ips: Vec<std::net::IpAddr> = (0..2).map(|_| net.add_silent_host().v4.into()).collect();
    net.dns().set("httpbin.test", &ips);
    let config = format!("{SNI_ONLY}proxy:\n  upstream_response_header_timeout: 2s\n");
    let px = Proxy::with(config.as_str()).resolver(&net).start();
    let started = std::time::Instant::now();
    let r = Curl::new([
        "--max-time",
        "30",
        "--connect-to",
        &px.connect_to_https(),
        "https://httpbin.test/get",
    ])
    .run();
    assert_ne!(r.exit, 0, "{r}");
    let rec = px.wait_for_audit(|a| a.host() == Some("httpbin.test"));
    assert_eq!(rec.str("reason"), Some("upstream_timeout"), "{rec}");
    assert!(
        rec.str("error")
            .is_some_and(|e| e.contains("not connected within 2s")),
        "{rec}"
    );
    // Not a timing assertion on the proxy's speed: the bound is 2 s, the unbounded dial 20 s.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "{r}"
    );
}
