//! What is neither a usable ClientHello nor HTTP is refused cleanly and audited: TLS
//! without SNI where no destination is known, garbage, a malformed or oversized
//! ClientHello. The proxy keeps serving afterwards.

use std::process::Command;

use super::*;

/// A reject record for a connection from `remote` with `reason`.
fn wait_for_refusal(px: &ProxyProcess, remote: &str, reason: &str) -> AuditRecord {
    let rec = px.wait_for_audit(|a| a.str("remote_addr") == Some(remote));
    assert_eq!(rec.action(), Some("reject"), "{rec}");
    assert_eq!(rec.str("reason"), Some(reason), "{rec}");
    assert_eq!(rec.status_code(), Some(0), "{rec}");
    rec
}

#[test]
fn tls_without_sni_on_the_https_listener_is_refused_and_audited() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    let https = hostport(px.https_addr());

    let out = openssl(&["s_client", "-connect", &https, "-noservername"]);
    assert!(
        !out.contains("BEGIN CERTIFICATE") && !out.contains("Server certificate"),
        "no certificate for a ClientHello without SNI:\n{out}"
    );
    // curl sends no SNI for an IP literal.
    let r = curl([
        "--cacert".to_string(),
        px.ca().to_string(),
        format!("https://{https}/get"),
    ]);
    assert_ne!(r.exit, 0, "{r}");

    wait_until(Duration::from_secs(10), "two missing_sni records", || {
        let audit = px.audit();
        let recs: Vec<_> = audit
            .iter()
            .filter(|a| a.str("reason") == Some("missing_sni"))
            .cloned()
            .collect();
        (recs.len() == 2).then_some(recs)
    })
    .iter()
    .for_each(|rec| {
        assert_eq!(rec.action(), Some("reject"), "{rec}");
        assert_eq!(rec.str("mode"), Some("https"), "{rec}");
    });
    up.assert_untouched();
    assert_still_serving(&px, &up, "after-no-sni");
}

#[test]
fn garbage_malformed_and_oversized_client_hellos_are_refused_and_audited() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");

    let cases: [(&str, Vec<u8>); 4] = [
        (
            "unknown_protocol",
            b"\x00\x01\x02 not tls, not http\r\n\r\n".to_vec(),
        ),
        ("unknown_protocol", b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()),
        // A handshake record whose message is a ServerHello.
        (
            "malformed_client_hello",
            vec![0x16, 0x03, 0x01, 0x00, 0x05, 0x02, 0x00, 0x00, 0x01, 0x00],
        ),
        // A ClientHello announcing 20 KiB, above the 16 KiB limit.
        (
            "client_hello_too_large",
            vec![0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x50, 0x00],
        ),
    ];
    for (reason, bytes) in cases {
        let mut raw = Raw::connect(px.https_addr());
        raw.send(&bytes);
        let reply = raw.read_to_close();
        assert!(
            reply.is_empty() || reply[0] == 0x15,
            "{reason}: only a close or a TLS alert, got {reply:?}"
        );
        let rec = wait_for_refusal(&px, &raw.local(), reason);
        assert_eq!(rec.str("mode"), Some("https"), "{rec}");
    }
    // The same through a CONNECT tunnel: the record names the tunnel target.
    let mut raw = Raw::connect(px.tunnel_addr());
    raw.send(b"CONNECT httpbin.test:443 HTTP/1.1\r\nHost: httpbin.test:443\r\n\r\n");
    let head = raw.read_head();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    raw.send(b"\x00garbage inside the tunnel\r\n");
    raw.read_to_close();
    let rec = px.wait_for_audit(|a| {
        a.str("remote_addr") == Some(raw.local().as_str()) && a.str("reason").is_some()
    });
    assert_eq!(rec.str("reason"), Some("unknown_protocol"), "{rec}");
    assert_eq!(rec.host(), Some("httpbin.test"), "{rec}");

    up.assert_untouched();
    assert_still_serving(&px, &up, "after-garbage");
}

/// Runs `openssl ARGS` with no input and returns stdout and stderr together.
fn openssl(args: &[&str]) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(args).stdin(std::process::Stdio::null());
    let out =
        iron_proxy_tests::process::run_with_timeout("openssl", &mut cmd, Duration::from_secs(20));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The other side of the sniff: HTTP with a registered method the first sniff refused
/// (`M-SEARCH`, `VERSION-CONTROL`: a `-`; `UPDATEREDIRECTREF`: over ten letters), or a
/// custom one the allowlist docs name (`X_SYNC`), is served
/// through a CONNECT tunnel, inside TLS and as plain HTTP, as the http and https listeners
/// serve it. Before, the tunnel (and transparent interception) refused it as
/// `unknown_protocol`.
#[test]
fn registered_methods_of_any_spelling_pass_the_sniff() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let plain = Upstream::http("plain.test").start(&net);
    let px = Proxy::with(MITM.replace("httpbin.test", "httpbin.test\", \"plain.test"))
        .resolver(&net)
        .start();
    for method in ["M-SEARCH", "VERSION-CONTROL", "UPDATEREDIRECTREF", "X_SYNC"] {
        let path = format!("/anything/{method}");
        let r = Curl::get(&up.url(&path))
            .args(["-X", method])
            .through_connect(&px)
            .run();
        assert_eq!(r.status, 200, "{method} inside TLS: {r}");
        let q = up.wait_for_request(|q| q.path() == path);
        assert_eq!(q.method(), method);

        let r = Curl::get(&plain.url(&path))
            .args(["-X", method, "--proxytunnel"])
            .through_connect(&px)
            .run();
        assert_eq!(r.status, 200, "{method} inside a tunnel: {r}");
        let q = plain.wait_for_request(|q| q.path() == path);
        assert_eq!(q.method(), method);
    }
}
