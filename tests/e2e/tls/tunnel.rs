//! CONNECT and SOCKS5 on `tunnel_listen`: the tunnel target is checked, the inner TLS is
//! MITM'd, and the inner request's audit record names the tunnel.

use super::*;

/// The inner request's record: allowed, mode `tunnel`, with the tunnel it came through.
fn assert_tunnelled(px: &ProxyProcess, path: &str, kind: &str, target: &str) {
    let rec = px.wait_for_audit(|a| a.path() == Some(path));
    assert!(rec.is_allowed(), "{rec}");
    assert_eq!(rec.str("mode"), Some("tunnel"), "{rec}");
    assert_eq!(rec.method(), Some("GET"), "{rec}");
    assert_eq!(rec.status_code(), Some(200), "{rec}");
    assert_eq!(rec.pointer("/tunnel/kind"), Some(&kind.into()), "{rec}");
    assert_eq!(rec.pointer("/tunnel/target"), Some(&target.into()), "{rec}");
}

#[test]
fn curl_through_connect_and_socks5h_is_intercepted_and_audited_with_the_tunnel() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");

    let r = Curl::get(&up.url("/anything/connect"))
        .through_connect(&px)
        .run();
    assert_eq!(r.json()["sni"], "httpbin.test", "{r}");
    up.wait_for_request(|q| q.path() == "/anything/connect");
    assert_tunnelled(&px, "/anything/connect", "connect", "httpbin.test:443");

    let r = Curl::get(&up.url("/anything/socks"))
        .through_socks5(&px)
        .run();
    r.expect_status(200);
    up.wait_for_request(|q| q.path() == "/anything/socks");
    assert_tunnelled(&px, "/anything/socks", "socks5", "httpbin.test:443");
}

/// Most clients wait for the CONNECT's answer before starting TLS (the proxy reads such a
/// CONNECT itself and serves the tunnel on the bare TCP stream). One that sends its ClientHello
/// right behind the CONNECT goes through hyper's CONNECT path instead, and nothing it sent
/// early is lost.
#[test]
fn a_client_hello_sent_before_the_connect_answer_is_not_lost() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    let mut conn = tls_client(&px, "httpbin.test");
    let mut first = b"CONNECT httpbin.test:443 HTTP/1.1\r\nHost: httpbin.test:443\r\n\r\n".to_vec();
    while conn.wants_write() {
        conn.write_tls(&mut first).expect("writing to a Vec");
    }
    let mut raw = Raw::connect(px.tunnel_addr());
    raw.send(&first);
    let head = raw.read_head();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    let mut tls = rustls::StreamOwned::new(conn, raw.stream);
    tls.write_all(
        b"GET /anything/early HTTP/1.1\r\nHost: httpbin.test\r\nConnection: close\r\n\r\n",
    )
    .expect("sending the request inside the tunnel");
    let mut reply = Vec::new();
    // The proxy may close without close_notify after a `Connection: close` response.
    let _ = std::io::Read::read_to_end(&mut tls, &mut reply);
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("/anything/early"), "{reply}");
    up.wait_for_request(|q| q.path() == "/anything/early");
    assert_tunnelled(&px, "/anything/early", "connect", "httpbin.test:443");
}

#[test]
fn socks5_to_an_ip_allowed_by_cidr_reaches_that_ip() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").unregistered().start(&net);
    let px = Proxy::with(MITM).resolver(&net).start();

    // socks5:// (not socks5h): curl resolves nothing itself here, the URL is an IP; no SNI is
    // sent for an IP, so the proxy presents a leaf for the IP and dials the IP.
    let url = format!("https://{}/anything/by-ip", up.ip());
    let r = Curl::get(&url)
        .args([
            "--cacert".to_string(),
            px.ca().to_string(),
            "--proxy".to_string(),
            format!("socks5://{}", hostport(px.tunnel_addr())),
        ])
        .run();
    let echo = r.expect_status(200).json();
    assert_eq!(echo["path"], "/anything/by-ip", "{r}");
    up.wait_for_request(|q| q.path() == "/anything/by-ip");
    let target = format!("{}:443", up.ip());
    assert_tunnelled(&px, "/anything/by-ip", "socks5", &target);
}

#[test]
fn socks5_with_a_name_the_client_resolved_is_checked_and_dialed_by_that_name() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let evil = Upstream::https("evil.test").start(&net);
    // Names only: neither address is allowed by itself.
    let px = Proxy::with(
        r#"
proxy:
  tunnel_listen: auto
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
"#,
    )
    .resolver(&net)
    .start();

    // ALL_PROXY=socks5://… (the spec's example): curl resolves the name and
    // sends an IPv4 address; the SNI and Host still name the host.
    let socks = |up: &UpstreamHandle, path: &str| {
        Curl::get(&up.url(path))
            .args([
                "--cacert".to_string(),
                px.ca().to_string(),
                "--resolve".to_string(),
                format!("{}:443:{}", up.name(), up.ip()),
                "--proxy".to_string(),
                format!("socks5://{}", hostport(px.tunnel_addr())),
            ])
            .run()
    };
    let r = socks(&up, "/anything/resolved");
    r.expect_status(200);
    up.wait_for_request(|q| q.path() == "/anything/resolved");
    let target = format!("{}:443", up.ip());
    assert_tunnelled(&px, "/anything/resolved", "socks5", &target);
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/resolved"));
    assert_eq!(rec.host(), Some("httpbin.test"), "{rec}");

    // A name the allowlist does not hold is refused inside the tunnel.
    let r = socks(&evil, "/anything/evil-resolved");
    assert_eq!(r.status, 403, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/evil-resolved"));
    assert_eq!(rec.str("reason"), Some("not_allowlisted"), "{rec}");
    evil.assert_untouched();
}

#[test]
fn connect_to_a_denied_host_is_refused_with_403_and_audited() {
    require_root!();
    let net = FakeInternet::new();
    let evil = Upstream::https("evil.test").start(&net);
    let px = Proxy::with(MITM).resolver(&net).start();

    let r = Curl::get(&evil.url("/get")).through_connect(&px).run();
    assert_ne!(r.exit, 0, "curl must fail when CONNECT is refused:\n{r}");
    assert!(
        r.stderr.contains("403"),
        "curl should report the CONNECT 403:\n{r}"
    );
    let rec = px.wait_for_audit(|a| a.host() == Some("evil.test"));
    assert_eq!(rec.action(), Some("reject"), "{rec}");
    assert_eq!(rec.method(), Some("CONNECT"), "{rec}");
    assert_eq!(rec.rejected_by(), Some("allowlist"), "{rec}");
    assert_eq!(rec.status_code(), Some(403), "{rec}");
    assert_eq!(
        rec.pointer("/tunnel/kind"),
        Some(&"connect".into()),
        "{rec}"
    );
    assert_eq!(
        rec.pointer("/tunnel/target"),
        Some(&"evil.test:443".into()),
        "{rec}"
    );

    let r = Curl::get(&evil.url("/get")).through_socks5(&px).run();
    assert_ne!(r.exit, 0, "curl must fail when SOCKS5 is refused:\n{r}");
    let rec = px.wait_for_audit(|a| {
        a.host() == Some("evil.test") && a.pointer("/tunnel/kind") == Some(&"socks5".into())
    });
    assert_eq!(rec.action(), Some("reject"), "{rec}");
    assert_eq!(rec.rejected_by(), Some("allowlist"), "{rec}");
    // Refused with SOCKS reply 0x02, not an HTTP response.
    assert_eq!(rec.status_code(), Some(0), "{rec}");
    evil.assert_untouched();
}

#[test]
fn request_inside_a_connect_tunnel_must_name_the_tunnel_target() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let other = Upstream::https("sse.test").start(&net);
    let px = Proxy::with(MITM).resolver(&net).start();

    // CONNECT httpbin.test:443, then TLS with SNI httpbin.test but Host sse.test.
    let r = Curl::get(&up.url("/anything/fronted"))
        .header("Host", "sse.test")
        .through_connect(&px)
        .run();
    assert_eq!(r.status, 421, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/fronted"));
    assert_eq!(rec.str("reason"), Some("host_mismatch"), "{rec}");
    up.assert_untouched();
    other.assert_untouched();
}

#[test]
fn request_inside_a_tunnel_cannot_name_another_port() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let px = Proxy::with(MITM).resolver(&net).start();

    // CONNECT httpbin.test:443, then a Host naming port 8443: the tunnel's
    // port holds, for CONNECT and SOCKS5 alike.
    for (via, path) in [
        ("connect", "/anything/port-c"),
        ("socks5", "/anything/port-s"),
    ] {
        let curl = Curl::get(&up.url(path)).header("Host", "httpbin.test:8443");
        let r = match via {
            "connect" => curl.through_connect(&px),
            _ => curl.through_socks5(&px),
        }
        .run();
        assert_eq!(r.status, 421, "{via}: {r}");
        assert!(r.body.contains("port 8443"), "{via}: {r}");
        let rec = px.wait_for_audit(|a| a.path() == Some(path));
        assert_eq!(rec.str("reason"), Some("host_mismatch"), "{via}: {rec}");
        assert_eq!(rec.status_code(), Some(421), "{via}: {rec}");
    }
    // The same port spelled out is fine.
    let r = Curl::get(&up.url("/anything/port-same"))
        .header("Host", "httpbin.test:443")
        .through_connect(&px)
        .run();
    assert_eq!(r.status, 200, "{r}");
    up.wait_for_request(|q| q.path() == "/anything/port-same");
}

#[test]
fn tls_for_another_name_inside_a_connect_tunnel_gets_421() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let other = Upstream::https("sse.test").start(&net);
    let px = Proxy::with(MITM).resolver(&net).start();

    // With a proxy, --connect-to changes only the CONNECT target: CONNECT httpbin.test:443,
    // then SNI and Host sse.test inside the tunnel.
    let r = Curl::get(&other.url("/anything/swapped"))
        .args(["--connect-to", "sse.test:443:httpbin.test:443"])
        .through_connect(&px)
        .run();
    assert_eq!(r.status, 421, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/swapped"));
    assert_eq!(rec.str("reason"), Some("host_mismatch"), "{rec}");
    assert_eq!(rec.str("sni"), Some("sse.test"), "{rec}");
    assert_eq!(
        rec.pointer("/tunnel/target"),
        Some(&"httpbin.test:443".into()),
        "{rec}"
    );
    up.assert_untouched();
    other.assert_untouched();
}

#[test]
fn sni_only_through_connect_passes_tls_through_and_audits_the_tunnel() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let config = r#"
proxy:
  tunnel_listen: auto
tls:
  mode: sni-only
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
"#;
    let px = Proxy::with(config).resolver(&net).start();
    let ca = net.ca_bundle();
    let r = Curl::get(&up.url("/anything/tunnel-pass"))
        .args([
            "--cacert".to_string(),
            ca.to_str().expect("utf-8 path").to_string(),
            "--proxy".to_string(),
            format!("http://{}", hostport(px.tunnel_addr())),
        ])
        .run();
    r.expect_status(200);
    up.wait_for_request(|q| q.path() == "/anything/tunnel-pass");
    let rec = px.wait_for_audit(|a| a.host() == Some("httpbin.test"));
    assert!(rec.is_allowed(), "{rec}");
    assert_eq!(rec.str("mode"), Some("sni-only"), "{rec}");
    assert_eq!(
        rec.pointer("/tunnel/kind"),
        Some(&"connect".into()),
        "{rec}"
    );
    assert!(
        rec.pointer("/bytes_received")
            .and_then(|v| v.as_u64())
            .is_some_and(|n| n > 0),
        "{rec}"
    );
}

#[test]
fn a_refused_socks5_handshake_is_answered_and_audited() {
    require_root!();
    let (_net, _up, px) = mitm_with("httpbin.test");

    // Username/password only: the proxy offers no acceptable method (0xff) and closes.
    let mut auth = Raw::connect(px.tunnel_addr());
    auth.send(&[0x05, 0x01, 0x02]);
    assert_eq!(auth.read_to_close(), vec![0x05, 0xff]);
    // BIND instead of CONNECT: "command not supported" (0x07).
    let mut bind = Raw::connect(px.tunnel_addr());
    bind.send(&[0x05, 0x01, 0x00])
        .send(&[0x05, 0x02, 0x00, 0x01, 127, 0, 0, 1, 0, 80]);
    let reply = bind.read_to_close();
    assert_eq!(&reply[..2], &[0x05, 0x00], "greeting accepted: {reply:?}");
    assert_eq!(reply.get(3), Some(&0x07), "then BIND refused: {reply:?}");

    // Port 0, by name and by address: "not allowed by ruleset" (0x02), audited invalid_host.
    let mut port0 = Raw::connect(px.tunnel_addr());
    port0
        .send(&[0x05, 0x01, 0x00])
        .send(&[0x05, 0x01, 0x00, 0x03, 12])
        .send(b"httpbin.test")
        .send(&[0, 0]);
    let reply = port0.read_to_close();
    assert_eq!(reply.get(3), Some(&0x02), "port 0 refused: {reply:?}");
    let mut port0_ip = Raw::connect(px.tunnel_addr());
    port0_ip
        .send(&[0x05, 0x01, 0x00])
        .send(&[0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0, 0]);
    let reply = port0_ip.read_to_close();
    assert_eq!(reply.get(3), Some(&0x02), "port 0 refused: {reply:?}");

    for (raw, reason, detail) in [
        (&auth, "socks5_unsupported", "no acceptable authentication"),
        (&bind, "socks5_unsupported", "unsupported SOCKS command 2"),
        (
            &port0,
            "invalid_host",
            "SOCKS target httpbin.test:0 has no port",
        ),
        (
            &port0_ip,
            "invalid_host",
            "SOCKS target 127.0.0.1:0 has no port",
        ),
    ] {
        let me = raw.local();
        let rec = px.wait_for_audit(|a| a.str("remote_addr") == Some(me.as_str()));
        assert_eq!(rec.action(), Some("reject"), "{rec}");
        assert_eq!(rec.str("reason"), Some(reason), "{rec}");
        assert_eq!(rec.pointer("/tunnel/kind"), Some(&"socks5".into()), "{rec}");
        assert!(
            rec.str("error").is_some_and(|e| e.contains(detail)),
            "{detail}: {rec}"
        );
    }
}

#[test]
fn a_socks4_or_other_version_greeting_is_refused_as_socks_and_audited() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");

    // curl speaking SOCKS4a gets SOCKS4's "request rejected" (0x5b), not an HTTP 400.
    let r = curl([
        "--socks4a".to_string(),
        hostport(px.tunnel_addr()),
        "http://httpbin.test/anything/socks4".to_string(),
    ]);
    assert_ne!(r.exit, 0, "{r}");
    assert!(
        r.stderr.contains("rejected") || r.stderr.contains("not permitted"),
        "curl should report a SOCKS4 refusal: {r}"
    );
    // The same by hand: the 8-byte SOCKS4 reply, then a close.
    let mut socks4 = Raw::connect(px.tunnel_addr());
    socks4.send(&[0x04, 0x01, 0x00, 0x50, 127, 0, 0, 1, b'u', 0x00]);
    assert_eq!(
        socks4.read_to_close(),
        vec![0x00, 0x5b, 0, 0, 0, 0, 0, 0],
        "a SOCKS4 reply"
    );
    // A version no SOCKS speaks (the SOCKS6 draft's greeting): closed without an answer.
    let mut socks6 = Raw::connect(px.tunnel_addr());
    socks6.send(&[0x06, 0x01, 0x00]);
    assert_eq!(socks6.read_to_close(), b"", "no HTTP answer to SOCKS6");

    for (raw, detail) in [
        (&socks4, "unsupported SOCKS version 4"),
        (&socks6, "unsupported SOCKS version 6"),
    ] {
        let me = raw.local();
        let rec = px.wait_for_audit(|a| a.str("remote_addr") == Some(me.as_str()));
        assert_eq!(rec.action(), Some("reject"), "{rec}");
        assert_eq!(rec.str("reason"), Some("socks5_unsupported"), "{rec}");
        assert_eq!(rec.status_code(), Some(0), "{rec}");
        assert_eq!(rec.pointer("/tunnel/kind"), Some(&"socks5".into()), "{rec}");
        assert!(
            rec.str("error").is_some_and(|e| e.contains(detail)),
            "{detail}: {rec}"
        );
    }
    let curl_refused = px
        .audit()
        .iter()
        .filter(|a| {
            a.str("error")
                .is_some_and(|e| e.contains("SOCKS version 4"))
        })
        .count();
    assert_eq!(curl_refused, 2, "curl's and ours: one record each");
    up.assert_untouched();
    // Plain HTTP and CONNECT on the same port are unaffected.
    assert_still_serving(&px, &up, "after-socks4");
    let r = Curl::get(&up.url("/anything/after-socks4-connect"))
        .through_connect(&px)
        .run();
    r.expect_status(200);
}

#[test]
fn plain_http_in_a_tunnel_is_served_when_its_first_write_is_a_single_byte() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    let mut raw = Raw::connect(px.tunnel_addr());
    raw.send(b"CONNECT httpbin.test:80 HTTP/1.1\r\nHost: httpbin.test:80\r\n\r\n");
    let head = raw.read_head();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // `G` alone, then the rest: the method token is read to its end before judging.
    raw.send(b"G");
    std::thread::sleep(Duration::from_millis(300));
    raw.send(b"ET /anything/split HTTP/1.1\r\nHost: httpbin.test\r\nConnection: close\r\n\r\n");
    let answer = String::from_utf8_lossy(&raw.read_to_close()).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    up.wait_for_request(|q| q.path() == "/anything/split");
}

/// A CONNECT head whose lines end in a bare LF (which hyper's parser reads) is answered at
/// once: 200 for an allowed target, 403 and a record for a denied one. It was held until the
/// header read timeout (30 s), then dropped unanswered and unrecorded (session 47's review).
#[test]
fn a_connect_head_with_bare_lf_line_ends_is_answered_at_once() {
    use std::io::{Read, Write};
    require_root!();
    let net = FakeInternet::new();
    let _ok = Upstream::https("httpbin.test").start(&net);
    let px = Proxy::with(MITM).resolver(&net).start();
    let answer = |target: &str| {
        let mut s = std::net::TcpStream::connect(px.tunnel_addr()).expect("connect");
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(format!("CONNECT {target} HTTP/1.1\nHost: {target}\n\n").as_bytes())
            .expect("write");
        let mut got = [0u8; 12];
        s.read_exact(&mut got)
            .unwrap_or_else(|e| panic!("no answer to the CONNECT of {target} within 5 s: {e}"));
        String::from_utf8_lossy(&got).into_owned()
    };
    assert_eq!(answer("httpbin.test:443"), "HTTP/1.1 200");
    assert_eq!(answer("evil.test:443"), "HTTP/1.1 403");
    let rec = px.wait_for_audit(|a| a.host() == Some("evil.test"));
    assert_eq!(rec.str("reason"), Some("not_allowlisted"), "{rec}");
    assert_eq!(rec.method(), Some("CONNECT"), "{rec}");
}

/// `iron_proxy_upstream_idle_connections` as the proxy's `/metrics` says it.
fn idle_upstream_connections(px: &ProxyProcess) -> Option<u64> {
    px.metric("iron_proxy_upstream_idle_connections", &[])
        .map(|v| v as u64)
}

/// An absolute-form request on `tunnel_listen` goes out as `http_listen`'s do: on the upstream
/// connection its client connection holds, which then waits in the idle pool for the next
/// request (it went through the shared pool, where HTTP/2 clients also shared upstream
/// connections with every other client).
#[test]
fn an_absolute_form_request_on_the_tunnel_listener_uses_its_connections_own_upstream_leg() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    assert_eq!(idle_upstream_connections(&px), Some(0));
    Curl::get("http://httpbin.test/anything/absolute")
        .args(["--proxy", &format!("http://{}", hostport(px.tunnel_addr()))])
        .run()
        .expect_status(200);
    up.wait_for_request(|q| q.path() == "/anything/absolute");
    let rec = px.wait_for_audit(|a| a.path() == Some("/anything/absolute"));
    assert_eq!(rec.str("mode"), Some("tunnel"), "{rec}");
    wait_until(
        Duration::from_secs(5),
        "the held connection in the idle pool",
        || (idle_upstream_connections(&px) == Some(1)).then_some(()),
    );
}

/// A tunnel granted and not used yet, and a SOCKS5 handshake under way, are cut by shutdown
/// with a record each saying so (before, the connection's task was dropped with its record:
/// neither left one).
#[test]
fn tunnels_cut_by_shutdown_before_their_first_bytes_are_recorded_as_shutdown() {
    require_root!();
    let (_net, _up, mut px) = mitm_with("httpbin.test");
    let mut granted = Raw::connect(px.tunnel_addr());
    granted.send(b"CONNECT httpbin.test:443 HTTP/1.1\r\nHost: httpbin.test:443\r\n\r\n");
    let head = granted.read_head();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut greeted = Raw::connect(px.tunnel_addr());
    greeted.send(&[0x05, 0x01, 0x00]);
    let mut reply = [0u8; 2];
    std::io::Read::read_exact(&mut greeted.stream, &mut reply).expect("greeting answered");
    assert_eq!(reply, [0x05, 0x00]);

    px.signal(nix::sys::signal::Signal::SIGTERM);
    let status = wait_until(Duration::from_secs(15), "the proxy to exit", || {
        (!px.is_running()).then(|| px.stop())
    });
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit 0");

    for (raw, kind) in [(&granted, "connect"), (&greeted, "socks5")] {
        let me = raw.local();
        let audit = px.audit();
        let recs: Vec<_> = audit
            .iter()
            .filter(|a| a.str("remote_addr") == Some(me.as_str()))
            .collect();
        assert_eq!(recs.len(), 1, "one record for the {kind} client: {recs:?}");
        let rec = &recs[0];
        assert_eq!(rec.str("reason"), Some("shutdown"), "{rec}");
        assert_eq!(rec.pointer("/tunnel/kind"), Some(&kind.into()), "{rec}");
    }
}

/// A CONNECT that is not its connection's first request goes through hyper, which drops the
/// CONNECT's answer when the client leaves: one left while a policy server (here one that never
/// answers) was judging it still gets its record, `client_closed` (before, none: a workload
/// chose which of its CONNECTs were audited).
#[test]
fn a_connect_whose_client_leaves_during_its_check_is_recorded() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("httpbin.test").start(&net);
    // Accepts (the kernel does) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let px = Proxy::with(format!(
        r#"
proxy:
  tunnel_listen: auto
tls:
  mode: sni-only
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test", "slow.test"]
  - name: grpc
    config:
      name: "policy-engine"
      target: "{}"
      rules:
        - host: "slow.test"
"#,
        silent.local_addr().expect("addr")
    ))
    .resolver(&net)
    .start();

    let mut raw = Raw::connect(px.tunnel_addr());
    raw.send(b"GET http://httpbin.test/get HTTP/1.1\r\nHost: httpbin.test\r\n\r\n");
    let head = raw.read_head();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = vec![0u8; crate::ops::content_length(&head)];
    std::io::Read::read_exact(&mut raw.stream, &mut body).expect("body");
    raw.send(b"CONNECT slow.test:443 HTTP/1.1\r\nHost: slow.test:443\r\n\r\n");
    // The policy server has the question once the proxy connected to it.
    let (_judged, _) = silent.accept().expect("the proxy asks the policy server");
    let me = raw.local();
    drop(raw);

    let rec = px.wait_for_audit(|a| {
        a.str("remote_addr") == Some(me.as_str()) && a.str("method") == Some("CONNECT")
    });
    assert_eq!(rec.str("reason"), Some("client_closed"), "{rec}");
    assert_eq!(rec.host(), Some("slow.test"), "{rec}");
}
