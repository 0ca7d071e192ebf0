//! Hostile or broken clients do not hurt the proxy: a client that stalls mid-ClientHello is
//! timed out while others are served, and a hundred connections reset mid-handshake leave
//! no file descriptors behind.

use super::*;

#[test]
fn a_stalled_client_hello_is_timed_out_while_others_are_served() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");

    let mut stalled = Raw::connect(px.https_addr());
    stalled.send(&partial_client_hello());
    // Silent clients everywhere else: each is closed after the first-bytes timeout (10 s).
    let mut silent_tls = tls_handshake_only(&px, "httpbin.test");
    let mut silent_http = Raw::connect(px.http_addr());
    let mut silent_tunnel = Raw::connect(px.tunnel_addr());
    let mut half_preface = Raw::connect(px.http_addr());
    half_preface.send(b"PRI * HTTP/2.0\r\n");
    let mut half_socks = Raw::connect(px.tunnel_addr());
    half_socks.send(&[0x05]);
    // A whole ClientHello, then silence: the handshake has 10 s as well.
    let mut stalled_handshake = Raw::connect(px.https_addr());
    stalled_handshake.send(&client_hello("httpbin.test"));
    assert_still_serving(&px, &up, "while-stalled");
    // The sniff timeout is 10 s; the proxy then closes and audits the connection.
    let rec = px.wait_for_audit_within(Duration::from_secs(20), |a| {
        a.str("remote_addr") == Some(stalled.local().as_str())
    });
    assert_eq!(rec.action(), Some("reject"), "{rec}");
    assert_eq!(rec.str("reason"), Some("no_client_data"), "{rec}");
    assert!(
        rec.str("error").is_some_and(|e| e.contains("timed out")),
        "{rec}"
    );
    stalled.read_to_close();
    let rec = px.wait_for_audit_within(Duration::from_secs(20), |a| {
        a.str("remote_addr") == Some(stalled_handshake.local().as_str())
    });
    assert_eq!(rec.action(), Some("reject"), "{rec}");
    assert_eq!(
        rec.str("reason"),
        Some("client_tls_handshake_failed"),
        "{rec}"
    );
    assert!(
        rec.str("error")
            .is_some_and(|e| e.contains("not done within 10s")),
        "{rec}"
    );
    assert!(
        !stalled_handshake.read_to_close().is_empty(),
        "the server's first flight came before the close"
    );
    for (what, raw) in [
        ("silent plain HTTP", &mut silent_http),
        ("silent tunnel client", &mut silent_tunnel),
        ("half an HTTP/2 preface", &mut half_preface),
        ("half a SOCKS5 greeting", &mut half_socks),
    ] {
        let got = raw.read_to_close();
        assert!(
            got.is_empty(),
            "{what}: closed without a reply, got {got:?}"
        );
    }
    let mut buf = [0u8; 64];
    match std::io::Read::read(&mut silent_tls, &mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        other => panic!("a TLS client that never sends a request must be closed: {other:?}"),
    }
}

#[test]
fn connections_reset_mid_handshake_leak_nothing_and_are_audited() {
    require_root!();
    let (_net, up, mut px) = mitm_with("httpbin.test");
    // Warm up: mint the leaf and open the upstream pool, so both are in the baseline.
    assert_still_serving(&px, &up, "warm-up");
    let before = open_fds(&px);

    let hello = client_hello("httpbin.test");
    let mut remotes = Vec::new();
    for i in 0..100 {
        let mut raw = Raw::connect(px.https_addr());
        if i % 2 == 0 {
            // Dies inside the ClientHello.
            raw.send(&partial_client_hello());
        } else {
            // Sends a whole ClientHello, waits for the proxy's first flight, then resets.
            raw.send(&hello);
            let mut b = [0u8; 1];
            let n = std::io::Read::read(&mut raw.stream, &mut b).expect("the ServerHello");
            assert_eq!(
                (n, b[0]),
                (1, 0x16),
                "the proxy answers with a handshake record"
            );
        }
        remotes.push(raw.local());
        raw.reset();
    }
    let records = wait_until(
        Duration::from_secs(20),
        "an audit record for every reset connection",
        || {
            let audit = px.audit();
            let recs: Vec<AuditRecord> = audit
                .iter()
                .filter(|a| remotes.iter().any(|r| a.str("remote_addr") == Some(r)))
                .cloned()
                .collect();
            (recs.len() == remotes.len()).then_some(recs)
        },
    );
    for rec in &records {
        assert_eq!(rec.action(), Some("reject"), "{rec}");
        let reason = rec.str("reason").unwrap_or("");
        assert!(
            ["no_client_data", "client_tls_handshake_failed"].contains(&reason),
            "{rec}"
        );
    }
    assert!(px.is_running(), "the proxy died");
    assert_still_serving(&px, &up, "after-resets");
    // Closing is asynchronous: give the proxy's tasks a moment to drop their sockets.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut after = open_fds(&px);
    while after > before + 10 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        after = open_fds(&px);
    }
    assert!(
        after <= before + 10,
        "fds before {before}, after 100 aborted connections {after}: a leak"
    );
}
