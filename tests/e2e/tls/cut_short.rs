//! Exchanges the client cuts short, and what their one record says: a response body the client
//! stops receiving (HTTP/1.1 and HTTP/2, chunked and `Content-Length` framed), a request body
//! that breaks off (an HTTP/1.1 connection closed, an HTTP/2 stream reset), and a request whose
//! client shuts down its sending side right after it (a half-close).
//!
//! Real clients where one does the job (curl for downloads it gives up on, the Python `h2`
//! library for a stream reset mid-upload); a raw socket where only one can (a half-close, a
//! connection closed mid-body).

use super::*;

/// A download the client gives up on while its body streams keeps its record's decision
/// (`allow`) and status (the head went out), and says what happened: `error` names the cut and
/// `bytes_received` how many body bytes were sent. Before, the record was a plain `allow`, as
/// for a complete download. A download the client read to its end, or one with no body (HEAD),
/// has neither.
#[test]
fn a_response_body_the_client_stops_receiving_is_marked_in_its_record() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    // A chunked stream (one line every 200 ms for 40 s) and a Content-Length body read at
    // 64 KiB/s (100 MiB, so several minutes): curl gives up on both after 4 s, mid-body.
    // Each case its own path, so that each finds its own record.
    let cases = [
        ("/stream/200", "?interval_ms=200", &[][..], "--http1.1"),
        ("/stream/201", "?interval_ms=200", &[][..], "--http2"),
        (
            "/bytes/104857600",
            "",
            &["--limit-rate", "64k"][..],
            "--http1.1",
        ),
        (
            "/bytes/104857601",
            "",
            &["--limit-rate", "64k"][..],
            "--http2",
        ),
    ];
    for (path, query, extra, version) in cases {
        {
            let what = format!("{path} over {version}");
            let r = Curl::get(&up.url(&format!("{path}{query}")))
                .args([version])
                .args(extra.iter().copied())
                .max_time(4)
                .via(&px)
                .run();
            assert_eq!(r.exit, 28, "{what}: curl gave up mid-body: {}", r.stderr);
            let rec = px.wait_for_audit(|a| a.path() == Some(path));
            assert!(rec.is_allowed(), "{what}: the decision stays allow: {rec}");
            assert_eq!(rec.status_code(), Some(200), "{what}: {rec}");
            assert!(
                rec.str("error")
                    .is_some_and(|e| e.contains("before the response body was complete")),
                "{what}: the record says the body was cut: {rec}"
            );
            let sent = rec
                .json()
                .get("bytes_received")
                .and_then(|v| v.as_u64())
                .unwrap_or_else(|| panic!("{what}: no bytes_received: {rec}"));
            assert!(sent > 0, "{what}: some of the body went out: {rec}");
        }
    }
    // Read to the end, or without a body: no marker.
    for (args, path) in [
        (&["--http1.1"][..], "/stream/3"),
        (&["--http2"][..], "/stream/4"),
        (&["--http1.1", "--head"][..], "/bytes/1000"),
        (&["--http1.1"][..], "/bytes/100000"),
        (&["--http2"][..], "/bytes/100001"),
    ] {
        let r = Curl::get(&up.url(path))
            .args(args.iter().copied())
            .max_time(20)
            .via(&px)
            .run();
        assert_eq!(r.exit, 0, "{path} {args:?}: {}", r.stderr);
        let rec = px.wait_for_audit(|a| a.path() == Some(path));
        assert!(rec.is_allowed(), "{path} {args:?}: {rec}");
        assert_eq!(rec.str("error"), None, "{path} {args:?}: {rec}");
        assert!(
            rec.json().get("bytes_received").is_none(),
            "{path} {args:?}: {rec}"
        );
    }
}

/// An HTTP/2 client over TLS to the proxy's HTTPS listener (SNI and `:authority` = HOST) that
/// POSTs to PATH a body announced as 1 MiB, sends 64 KiB of it, reads what the proxy says for
/// 1 s (the proxy forwards the head and that much meanwhile), resets the stream (CANCEL) and
/// closes the connection 1 s later. Prints `{"reset": true, "sent": N}`.
///
/// usage: ADDR PORT HOST CA PATH
const H2_RESET_UPLOAD: &str = r#"
import json, socket, ssl, sys, time
import h2.config, h2.connection, h2.errors

addr, port, host, ca, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["h2"])
sock = ctx.wrap_socket(socket.create_connection((addr, port), timeout=10), server_hostname=host)
if sock.selected_alpn_protocol() != "h2":
    sys.exit("the proxy did not negotiate h2: %r" % sock.selected_alpn_protocol())
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
conn.initiate_connection()
sid = conn.get_next_available_stream_id()
conn.send_headers(sid, [(":method", "POST"), (":scheme", "https"), (":authority", host),
                        (":path", path), ("content-length", str(1 << 20))])
sent = 0
while sent < 65536:
    n = min(16384, conn.local_flow_control_window(sid), 65536 - sent)
    if n <= 0:
        break
    conn.send_data(sid, b"x" * n)
    sent += n
sock.sendall(conn.data_to_send())
# Whatever the proxy says meanwhile (SETTINGS, WINDOW_UPDATE) is read and acknowledged.
deadline = time.time() + 1
sock.settimeout(0.1)
while time.time() < deadline:
    try:
        data = sock.recv(65536)
    except (socket.timeout, ssl.SSLWantReadError):
        continue
    if not data:
        sys.exit("the proxy closed the connection before the reset")
    conn.receive_data(data)
    out = conn.data_to_send()
    if out:
        sock.sendall(out)
conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
sock.sendall(conn.data_to_send())
time.sleep(1)
sock.close()
print(json.dumps({"reset": True, "sent": sent}))
"#;

/// A request body the client breaks off is `client_body_error` (status 400) on HTTP/1.1 (the
/// client closes its connection mid-body) and on HTTP/2 (the client resets its stream
/// mid-body). Before, the HTTP/2 one was `client_closed`, as if the request had been whole.
#[test]
fn a_request_body_the_client_breaks_off_is_a_client_body_error_on_http1_and_http2() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");

    // HTTP/2: a stream reset mid-upload.
    let https = px.https_addr();
    let args = [
        https.ip().to_string(),
        https.port().to_string(),
        "httpbin.test".to_string(),
        px.ca().to_string(),
        "/anything/h2-reset".to_string(),
    ];
    let r = python(H2_RESET_UPLOAD, args);
    r.assert_ok();
    // HTTP/1.1: the connection closed mid-body (a FIN after 1,000 of 100,000 bytes).
    let mut raw = Raw::connect(px.http_addr());
    raw.send(b"POST http://httpbin.test/anything/h1-close HTTP/1.1\r\nHost: httpbin.test\r\nContent-Length: 100000\r\n\r\n");
    raw.send(&[b'x'; 1000]);
    drop(raw);

    for path in ["/anything/h2-reset", "/anything/h1-close"] {
        let rec = px.wait_for_audit(|a| a.path() == Some(path));
        assert_eq!(rec.action(), Some("error"), "{path}: {rec}");
        assert_eq!(
            rec.str("reason"),
            Some("client_body_error"),
            "{path}: {rec}"
        );
        assert_eq!(rec.status_code(), Some(400), "{path}: {rec}");
        assert!(
            rec.str("error")
                .is_some_and(|e| e.starts_with("client request body")),
            "{path}: {rec}"
        );
        assert_eq!(
            px.audit().iter().filter(|a| a.path() == Some(path)).count(),
            1,
            "{path}: one record"
        );
    }
    assert_still_serving(&px, &up, "after-broken-off-uploads");
}

/// A client that sends a whole request and then shuts down its sending side (a half-close: `nc
/// -N`, a script's `shutdown(SHUT_WR)`, TLS `close_notify`) gets exactly one record, on
/// `http_listen`, on `tunnel_listen` as an HTTP proxy and inside TLS on `https_listen`. The
/// proxy takes the end of the client's stream as the client leaving, as nginx and Go's server
/// do (see docs/audit-log.md): the answer is not guaranteed, the record is. Before, when
/// the proxy read the end in the same go as the request, the request was dropped before it ran
/// and left no record at all. Repeated, as that depended on timing.
#[test]
fn a_half_closed_request_gets_exactly_one_record() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    let mut clients = Vec::new();
    for i in 0..60 {
        let (via, target) = match i % 3 {
            0 => ("http", "http://httpbin.test"),
            1 => ("tunnel", "http://httpbin.test"),
            _ => ("https", ""),
        };
        let path = format!("/anything/half-close-{via}-{i}");
        let request = format!("GET {target}{path} HTTP/1.1\r\nHost: httpbin.test\r\n\r\n");
        let (reply, me) = match via {
            "https" => {
                let mut tls = tls_handshake_only(&px, "httpbin.test");
                let me = tls.sock.local_addr().expect("local addr").to_string();
                tls.write_all(request.as_bytes())
                    .unwrap_or_else(|e| panic!("{path}: writing inside TLS: {e}"));
                tls.conn.send_close_notify();
                let _ = tls.flush();
                let _ = tls.sock.shutdown(std::net::Shutdown::Write);
                let mut reply = Vec::new();
                let _ = std::io::Read::read_to_end(&mut tls, &mut reply);
                (reply, me)
            }
            _ => {
                let addr = if via == "http" {
                    px.http_addr()
                } else {
                    px.tunnel_addr()
                };
                let mut raw = Raw::connect(addr);
                raw.send(request.as_bytes());
                raw.stream
                    .shutdown(std::net::Shutdown::Write)
                    .expect("shutting down our sending side");
                (raw.read_to_close(), raw.local())
            }
        };
        let reply = String::from_utf8_lossy(&reply).into_owned();
        assert!(
            reply.is_empty() || reply.starts_with("HTTP/1.1 200 "),
            "{path}: the answer, or none: {reply:?}"
        );
        clients.push((path, me, !reply.is_empty()));
    }
    for (path, me, answered) in &clients {
        // By path: the three listeners' clients draw from one pool of
        // ephemeral ports, so a closed client's port comes back for another.
        let rec = px.wait_for_audit(|a| a.path() == Some(path.as_str()));
        assert_eq!(rec.str("remote_addr"), Some(me.as_str()), "{path}: {rec}");
        assert_eq!(rec.host(), Some("httpbin.test"), "{path}: {rec}");
        if *answered {
            assert!(rec.is_allowed(), "{path}: answered, so allowed: {rec}");
        } else {
            assert_eq!(rec.str("reason"), Some("client_closed"), "{path}: {rec}");
        }
    }
    assert_still_serving(&px, &up, "after-half-closes");
    let audit = px.audit();
    for (path, _, _) in &clients {
        let n = audit
            .iter()
            .filter(|a| a.path() == Some(path.as_str()))
            .count();
        assert_eq!(n, 1, "{path}: {n} records");
    }
}
