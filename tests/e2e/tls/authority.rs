//! The authority a request or a tunnel names: a port left out is the default of the URI's
//! scheme (`GET https://…` means 443 on any listener), a tunnel target is `host:port` and
//! nothing else (no userinfo, in CONNECT and in SOCKS5 domains alike), and `https_listen`,
//! where port-443 traffic lands, serves port 443 only.

use super::*;

/// The upstream request with `path`, which must have come in on its TLS port (443).
fn assert_reached_443(up: &UpstreamHandle, path: &str) {
    let seen = up.wait_for_request(|q| q.path() == path);
    assert!(
        seen.0["listener"].as_str().unwrap_or("").ends_with(":443"),
        "{path} must reach the TLS port: {seen}"
    );
    assert_eq!(seen.sni(), Some("httpbin.test"), "{seen}");
}

#[test]
fn an_absolute_form_https_uri_without_a_port_goes_to_443() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");

    // On http_listen and as a plain proxy request on tunnel_listen: the upstream also
    // serves plain HTTP on 80, so dialing TLS there would hang or fail instead.
    for (listener, addr) in [("http", px.http_addr()), ("tunnel", px.tunnel_addr())] {
        let path = format!("/anything/abs-https-{listener}");
        let mut raw = Raw::connect(addr);
        raw.send(
            format!(
                "GET https://httpbin.test{path} HTTP/1.1\r\nHost: httpbin.test\r\n\
                 Connection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        let head = raw.read_head();
        assert!(head.starts_with("HTTP/1.1 200"), "{listener}: {head}");
        assert_reached_443(&up, &path);
        let rec = px.wait_for_audit(|a| a.path() == Some(path.as_str()));
        assert!(rec.is_allowed(), "{listener}: {rec}");
        assert_eq!(rec.status_code(), Some(200), "{listener}: {rec}");
    }
}

/// The record written for the client connection `raw`.
fn record_of(px: &ProxyProcess, raw: &Raw) -> AuditRecord {
    let me = raw.local();
    px.wait_for_audit(|a| a.str("remote_addr") == Some(me.as_str()))
}

#[test]
fn connect_and_socks5_targets_with_userinfo_are_refused() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    // The userinfo may be a credential: the record names the target without it.
    let target = "eve:EvePW@httpbin.test:443";

    // A CONNECT read directly, and one hyper reads (a ClientHello sent before the answer).
    for early in [&b""[..], b"\x16\x03\x01"] {
        let mut raw = Raw::connect(px.tunnel_addr());
        let mut bytes = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").into_bytes();
        bytes.extend_from_slice(early);
        raw.send(&bytes);
        let head = raw.read_head();
        assert!(head.starts_with("HTTP/1.1 400"), "early {early:?}: {head}");
        let rec = record_of(&px, &raw);
        assert_eq!(rec.action(), Some("reject"), "{rec}");
        assert_eq!(rec.str("reason"), Some("invalid_host"), "{rec}");
        assert_eq!(rec.status_code(), Some(400), "{rec}");
        assert_eq!(rec.method(), Some("CONNECT"), "{rec}");
        let masked = "***@httpbin.test:443";
        assert_eq!(rec.pointer("/tunnel/target"), Some(&masked.into()), "{rec}");
        assert!(!rec.to_string().contains("EvePW"), "{rec}");
    }

    // A target that is no authority at all is named as sent.
    for target in ["*", "/path"] {
        let mut raw = Raw::connect(px.tunnel_addr());
        raw.send(format!("CONNECT {target} HTTP/1.1\r\nHost: httpbin.test\r\n\r\n").as_bytes());
        let head = raw.read_head();
        assert!(head.starts_with("HTTP/1.1 400"), "{target}: {head}");
        let rec = record_of(&px, &raw);
        assert_eq!(rec.str("reason"), Some("invalid_host"), "{rec}");
        assert_eq!(rec.pointer("/tunnel/target"), Some(&target.into()), "{rec}");
        let error = format!("CONNECT target {target:?} is not host:port");
        assert_eq!(rec.str("error"), Some(error.as_str()), "{rec}");
    }

    // SOCKS5 with the same name as its domain: refused as "not allowed" (0x02), no tunnel.
    let domain = b"eve:EvePW@httpbin.test";
    let mut raw = Raw::connect(px.tunnel_addr());
    let mut request = vec![0x05, 0x01, 0x00, 0x03, domain.len() as u8];
    request.extend_from_slice(domain);
    request.extend_from_slice(&443u16.to_be_bytes());
    raw.send(&[0x05, 0x01, 0x00]).send(&request);
    let reply = raw.read_to_close();
    assert_eq!(&reply[..2], &[0x05, 0x00], "greeting accepted: {reply:?}");
    assert_eq!(
        reply.get(3),
        Some(&0x02),
        "then the target refused: {reply:?}"
    );
    let rec = record_of(&px, &raw);
    assert_eq!(rec.action(), Some("reject"), "{rec}");
    assert_eq!(rec.str("reason"), Some("invalid_host"), "{rec}");
    assert_eq!(rec.status_code(), Some(0), "no HTTP response: {rec}");
    assert_eq!(rec.pointer("/tunnel/kind"), Some(&"socks5".into()), "{rec}");
    assert!(!rec.to_string().contains("EvePW"), "{rec}");

    up.assert_untouched();
    assert_still_serving(&px, &up, "after-userinfo");
}

#[test]
fn a_host_naming_another_port_on_the_https_listener_gets_421() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");

    let r = Curl::get(&up.url("/anything/port-8443"))
        .header("Host", "httpbin.test:8443")
        .via(&px)
        .run();
    assert_eq!(r.status, 421, "{r}");
    assert!(r.body.contains("port 8443"), "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/port-8443"));
    assert_eq!(rec.str("reason"), Some("host_mismatch"), "{rec}");
    assert_eq!(rec.status_code(), Some(421), "{rec}");
    assert_eq!(rec.str("mode"), Some("https"), "{rec}");

    // Port 443 spelled out is the same port.
    let r = Curl::get(&up.url("/anything/port-443"))
        .header("Host", "httpbin.test:443")
        .via(&px)
        .run();
    r.expect_status(200);
    assert_reached_443(&up, "/anything/port-443");
    up.assert_no_request(|q| q.path() == "/anything/port-8443");
}

/// An SNI that is an IP literal (RFC 6066 forbids it; clients send it) is served as that
/// address, IPv4 and IPv6 alike: a leaf with the address as its name, then the allowlist's
/// answer (here a 403: loopback is not allowed). Before, `127.0.0.1` failed the handshake
/// ("no server certificate chain resolved": rustls passes IP names over) and `::1` was
/// refused as a malformed ClientHello, with no error in the record (now it has one).
#[test]
fn an_ip_literal_in_sni_is_served_as_that_address() {
    require_root!();
    let (_net, _up, px) = mitm_with("httpbin.test");
    for (sni, host) in [("127.0.0.1", "127.0.0.1"), ("::1", "[::1]")] {
        let script = format!(
            "printf 'GET /ip-sni HTTP/1.1\\r\\nHost: {host}\\r\\nConnection: close\\r\\n\\r\\n' | \
             openssl s_client -connect {addr} -servername {sni} -ign_eof",
            addr = hostport(px.https_addr()),
        );
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", &script]);
        let out = iron_proxy_tests::process::run_with_timeout(
            "openssl",
            &mut cmd,
            Duration::from_secs(20),
        );
        let out = String::from_utf8_lossy(&out.stdout);
        assert!(out.contains(&format!("subject=CN = {sni}")), "{sni}: {out}");
        assert!(out.contains("HTTP/1.1 403"), "{sni}: {out}");
        let rec = px.wait_for_audit(|a| a.str("sni") == Some(sni));
        assert_eq!(rec.str("reason"), Some("not_allowlisted"), "{rec}");
        assert_eq!(rec.host(), Some(sni), "{rec}");
        assert_eq!(rec.status_code(), Some(403), "{rec}");
    }
    // Brackets are no IP literal: refused, and the record says why.
    let script = format!(
        "openssl s_client -connect {} -servername '[::1]' </dev/null",
        hostport(px.https_addr())
    );
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", &script]);
    iron_proxy_tests::process::run_with_timeout("openssl", &mut cmd, Duration::from_secs(20));
    let rec = px.wait_for_audit(|a| a.str("reason") == Some("malformed_client_hello"));
    assert_eq!(
        rec.str("error"),
        Some("server_name is not a valid host name"),
        "{rec}"
    );
}
