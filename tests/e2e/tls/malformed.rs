//! Request heads the HTTP parser refuses (smuggling-shaped framing, bad header syntax, unknown
//! versions, heads over the limits) are answered by the parser itself, before any transform
//! runs. Each one still gets exactly one audit record, on every listener that serves HTTP;
//! a connection that merely ends gets none.

use std::io::Read;

use super::*;

/// Where a raw request goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// `http_listen`, plain TCP.
    Http,
    /// `https_listen`, inside TLS (MITM).
    Https,
    /// `tunnel_listen` as an HTTP proxy (the request itself, absolute- or origin-form).
    TunnelProxy,
    /// Inside a CONNECT tunnel, plain HTTP.
    TunnelConnect,
}

/// A malformed request: a label, its bytes, the status the parser answers and the reason.
struct Case {
    label: &'static str,
    bytes: Vec<u8>,
    status: u16,
    reason: &'static str,
}

fn case(label: &'static str, bytes: impl Into<Vec<u8>>, status: u16, reason: &'static str) -> Case {
    Case {
        label,
        bytes: bytes.into(),
        status,
        reason,
    }
}

/// A request with `headers` (each ending in CRLF) after the Host header.
fn with_headers(headers: &str) -> Vec<u8> {
    format!("POST /anything/malformed HTTP/1.1\r\nHost: httpbin.test\r\n{headers}\r\n").into_bytes()
}

fn cases() -> Vec<Case> {
    let bad = "malformed_request";
    let mut long_uri = b"GET /anything/".to_vec();
    long_uri.resize(100 * 1024, b'a');
    long_uri.extend_from_slice(b" HTTP/1.1\r\nHost: httpbin.test\r\n\r\n");
    // Many fields are not refused for their number, only for their bytes (over 128 KiB).
    let many: String = (0..150)
        .map(|i| format!("X-H{i}: {}\r\n", "v".repeat(1024)))
        .collect();
    let big = format!("X-Big: {}\r\n", "a".repeat(512 * 1024));
    vec![
        case(
            "two differing Content-Lengths",
            with_headers("Content-Length: 5\r\nContent-Length: 6\r\n"),
            400,
            bad,
        ),
        case(
            "Content-Length: 5, 5",
            with_headers("Content-Length: 5, 5\r\n"),
            400,
            bad,
        ),
        case(
            "Content-Length: +5",
            with_headers("Content-Length: +5\r\n"),
            400,
            bad,
        ),
        case(
            "Transfer-Encoding: xchunked",
            with_headers("Transfer-Encoding: xchunked\r\n"),
            400,
            bad,
        ),
        case(
            "Transfer-Encoding: chunked, identity",
            with_headers("Transfer-Encoding: chunked, identity\r\n"),
            400,
            bad,
        ),
        case(
            "a space before the colon",
            with_headers("X-Bad : v\r\n"),
            400,
            bad,
        ),
        case("obs-fold", with_headers("X-Fold: a\r\n b\r\n"), 400, bad),
        case("CR in a value", with_headers("X-Cr: a\rb\r\n"), 400, bad),
        case("NUL in a value", with_headers("X-Nul: a\0b\r\n"), 400, bad),
        case(
            "an HTTP/0.9 request line",
            "GET /anything/09\r\n\r\n",
            400,
            bad,
        ),
        case(
            "an HTTP/2.0 request line",
            "GET /anything/h2 HTTP/2.0\r\nHost: httpbin.test\r\n\r\n",
            400,
            bad,
        ),
        case(
            "a space in the target",
            "GET /any thing HTTP/1.1\r\nHost: httpbin.test\r\n\r\n",
            400,
            bad,
        ),
        case(
            "a CONNECT to a UTF-8 IDN",
            "CONNECT bücher.test:443 HTTP/1.1\r\nHost: bücher.test:443\r\n\r\n",
            400,
            bad,
        ),
        case("a 100 KiB URI", long_uri, 414, "uri_too_long"),
        case(
            "150 headers of 1 KiB",
            with_headers(&many),
            431,
            "request_header_too_large",
        ),
        case(
            "a 512 KiB header",
            with_headers(&big),
            431,
            "request_header_too_large",
        ),
    ]
}

/// Sends `bytes` as the first request on a new connection through `via`; returns what came
/// back until the proxy closed, and our address as the audit record shows it.
fn send_raw(px: &ProxyProcess, via: Via, bytes: &[u8]) -> (String, String) {
    let (reply, me) = match via {
        Via::Http | Via::TunnelProxy => {
            let addr = match via {
                Via::Http => px.http_addr(),
                _ => px.tunnel_addr(),
            };
            let mut raw = Raw::connect(addr);
            raw.send(bytes);
            (raw.read_to_close(), raw.local())
        }
        Via::TunnelConnect => {
            let mut raw = Raw::connect(px.tunnel_addr());
            raw.send(b"CONNECT httpbin.test:80 HTTP/1.1\r\nHost: httpbin.test:80\r\n\r\n");
            let head = raw.read_head();
            assert!(head.starts_with("HTTP/1.1 200"), "CONNECT: {head}");
            raw.send(bytes);
            (raw.read_to_close(), raw.local())
        }
        Via::Https => {
            let mut tls = tls_handshake_only(px, "httpbin.test");
            let me = tls.sock.local_addr().expect("local addr").to_string();
            tls.write_all(bytes)
                .unwrap_or_else(|e| panic!("writing inside TLS: {e}"));
            let mut reply = Vec::new();
            // The proxy closes with close_notify; a reset after the answer is fine too.
            let _ = tls.read_to_end(&mut reply);
            (reply, me)
        }
    };
    (String::from_utf8_lossy(&reply).into_owned(), me)
}

#[test]
fn requests_the_parser_refuses_are_answered_and_audited_once_on_every_listener() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    let mut seen = Vec::new();
    // Records already matched: the kernel may give a later connection the local port of an
    // earlier one, on the same listener too, so the address alone can find an old record.
    let mut matched = std::collections::HashSet::new();
    for via in [Via::Http, Via::Https, Via::TunnelProxy, Via::TunnelConnect] {
        for c in cases() {
            let (reply, me) = send_raw(&px, via, &c.bytes);
            let what = format!("{} via {via:?}", c.label);
            assert!(
                reply.starts_with(&format!("HTTP/1.1 {} ", c.status)),
                "{what}: the client got {reply:?}"
            );
            let mode = match via {
                Via::Http => "http",
                Via::Https => "https",
                Via::TunnelProxy | Via::TunnelConnect => "tunnel",
            };
            // By address and listener: the kernel may give a connection to another
            // listener the local port an earlier connection had.
            let mine = |a: &AuditRecord| {
                a.str("remote_addr") == Some(me.as_str())
                    && a.str("mode") == Some(mode)
                    && a.str("request_id").is_some_and(|id| !matched.contains(id))
            };
            let rec = px.wait_for_audit(mine);
            matched.insert(rec.str("request_id").unwrap_or_default().to_string());
            assert_eq!(rec.action(), Some("reject"), "{what}: {rec}");
            assert_eq!(rec.str("reason"), Some(c.reason), "{what}: {rec}");
            assert_eq!(rec.status_code(), Some(c.status), "{what}: {rec}");
            assert!(
                rec.str("error").is_some_and(|e| !e.is_empty()),
                "{what}: {rec}"
            );
            match via {
                Via::Https => assert_eq!(rec.str("sni"), Some("httpbin.test"), "{what}: {rec}"),
                Via::TunnelConnect => {
                    assert_eq!(rec.host(), Some("httpbin.test"), "{what}: {rec}");
                    assert_eq!(
                        rec.pointer("/tunnel/kind"),
                        Some(&"connect".into()),
                        "{what}: {rec}"
                    );
                }
                _ => {}
            }
            seen.push(what);
        }
    }
    up.assert_untouched();
    // A request after all of them is recorded; by then no refusal has a second record.
    assert_still_serving(&px, &up, "after-malformed");
    let audit = px.audit();
    let refusals: Vec<_> = audit
        .iter()
        .filter(|a| a.action() == Some("reject"))
        .collect();
    assert_eq!(
        refusals.len(),
        seen.len(),
        "one record per refusal ({seen:?}): {refusals:?}"
    );
}

/// The `Content-Length` of a response head.
fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no Content-Length in {head}"))
}

#[test]
fn connections_that_just_end_leave_no_extra_record() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    let request = b"GET http://httpbin.test/anything/keep HTTP/1.1\r\nHost: httpbin.test\r\n\r\n";
    let mut quiet = Vec::new();
    for (how, addr) in [
        ("close", px.http_addr()),
        ("reset", px.http_addr()),
        ("close", px.tunnel_addr()),
    ] {
        // One request served on a keep-alive connection, which the client then ends while
        // the proxy waits for the next request.
        let mut raw = Raw::connect(addr);
        raw.send(request);
        let head = raw.read_head();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        // The whole body, so that closing sends a FIN rather than a reset.
        let mut body = vec![0u8; content_length(&head)];
        raw.stream.read_exact(&mut body).expect("reading the body");
        let me = raw.local();
        let rec = px.wait_for_audit(|a| a.str("remote_addr") == Some(me.as_str()));
        assert!(rec.is_allowed(), "{rec}");
        if how == "reset" {
            raw.reset();
        } else {
            drop(raw);
        }
        quiet.push((format!("keep-alive then {how} on {addr}"), me, 1));
    }
    // Half a request head, then the client closes: nothing was refused.
    let mut raw = Raw::connect(px.http_addr());
    raw.send(b"GET /anything/half HTTP/1.1\r\nHost: http");
    raw.stream
        .shutdown(std::net::Shutdown::Write)
        .expect("closing our side");
    assert_eq!(raw.read_to_close(), b"", "no answer to half a head");
    quiet.push(("half a head, then close".into(), raw.local(), 0));

    assert_still_serving(&px, &up, "after-quiet-ends");
    let audit = px.audit();
    for (what, me, want) in quiet {
        let n = audit
            .iter()
            .filter(|a| a.str("remote_addr") == Some(me.as_str()))
            .count();
        assert_eq!(n, want, "{what}: {n} records for {me}");
    }
}

/// A request body that breaks off is the client's fault, not the upstream's: a chunk size that is
/// not hex, and a body shorter than its `Content-Length` (the client ends the connection), each
/// streamed to the upstream as it comes, get 400 and one `client_body_error` record, on the plain
/// and the TLS listener.
#[test]
fn a_request_body_that_breaks_off_is_audited_as_the_clients_error() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    let head = |framing: &str| {
        format!("POST /anything/broken-body HTTP/1.1\r\nHost: httpbin.test\r\n{framing}\r\n")
    };
    let cases = [
        (
            "a chunk size that is not hex",
            format!(
                "{}5\r\nhello\r\nzz\r\n",
                head("Transfer-Encoding: chunked\r\n")
            ),
        ),
        (
            "a body short of its Content-Length",
            format!("{}hello", head("Content-Length: 100\r\n")),
        ),
    ];
    for via in [Via::Http, Via::Https] {
        for (label, bytes) in &cases {
            let what = format!("{label} via {via:?}");
            let (reply, me) = send_and_end(&px, via, bytes.as_bytes());
            // By address and listener (a local port may come back on the other listener).
            let mode = if via == Via::Https { "https" } else { "http" };
            let rec = px.wait_for_audit(|a| {
                a.str("remote_addr") == Some(me.as_str()) && a.str("mode") == Some(mode)
            });
            assert_eq!(rec.action(), Some("error"), "{what}: {rec}");
            assert_eq!(
                rec.str("reason"),
                Some("client_body_error"),
                "{what}: {rec}"
            );
            assert_eq!(rec.status_code(), Some(400), "{what}: {rec}");
            assert!(
                rec.str("error")
                    .is_some_and(|e| e.starts_with("client request body")),
                "{what}: {rec}"
            );
            // Each cause once: "client request body: error reading a body from connection: ..."
            let error = rec.str("error").unwrap_or_default();
            let causes: Vec<&str> = error.split(": ").collect();
            let mut unique = causes.clone();
            unique.dedup();
            assert_eq!(causes, unique, "{what}: a cause repeated in {error:?}");
            assert!(
                reply.is_empty() || reply.starts_with("HTTP/1.1 400 "),
                "{what}: the client got {reply:?}"
            );
        }
    }
    assert_still_serving(&px, &up, "after-broken-bodies");
}

/// Sends `bytes` on a new connection through `via`, then ends our sending side (a FIN, or
/// close_notify inside TLS); returns whatever came back and our address.
fn send_and_end(px: &ProxyProcess, via: Via, bytes: &[u8]) -> (String, String) {
    match via {
        Via::Https => {
            let mut tls = tls_handshake_only(px, "httpbin.test");
            let me = tls.sock.local_addr().expect("local addr").to_string();
            tls.write_all(bytes)
                .unwrap_or_else(|e| panic!("writing inside TLS: {e}"));
            tls.conn.send_close_notify();
            let _ = tls.flush();
            let mut reply = Vec::new();
            let _ = tls.read_to_end(&mut reply);
            (String::from_utf8_lossy(&reply).into_owned(), me)
        }
        _ => {
            let mut raw = Raw::connect(px.http_addr());
            raw.send(bytes);
            raw.stream
                .shutdown(std::net::Shutdown::Write)
                .expect("closing our side");
            let reply = raw.read_to_close();
            (String::from_utf8_lossy(&reply).into_owned(), raw.local())
        }
    }
}

/// A client that gives up while the upstream is still working (here, before its response head)
/// leaves a record all the same: the request reached the upstream, so it must be in the audit log
/// (`client_closed`, status 0), on HTTP/1.1 and HTTP/2, through https_listen and CONNECT.
#[test]
fn a_request_the_client_abandons_before_the_response_is_still_audited() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    let cases = [
        ("h1", "--http1.1", false),
        ("h2", "--http2", false),
        ("connect", "--http1.1", true),
    ];
    for (i, (label, flag, connect)) in cases.into_iter().enumerate() {
        let curl = Curl::get(&up.url("/delay/10")).args([flag]).max_time(3);
        let curl = if connect {
            curl.through_connect(&px)
        } else {
            curl.via(&px)
        };
        let r = curl.run();
        assert_eq!(r.exit, 28, "{label}: curl gave up after 3 s: {}", r.stderr);
        // The abandoned requests so far, each with its record once the proxy noticed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let abandoned = loop {
            let found: Vec<_> = px
                .audit()
                .iter()
                .filter(|a| a.path() == Some("/delay/10"))
                .cloned()
                .collect();
            if found.len() > i || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        assert_eq!(
            abandoned.len(),
            i + 1,
            "{label}: one record per abandoned request"
        );
        let rec = &abandoned[i];
        assert_eq!(rec.action(), Some("error"), "{label}: {rec}");
        assert_eq!(rec.str("reason"), Some("client_closed"), "{label}: {rec}");
        assert_eq!(rec.status_code(), Some(0), "{label}: {rec}");
        assert_eq!(rec.host(), Some("httpbin.test"), "{label}: {rec}");
    }
    assert_eq!(
        up.requests()
            .iter()
            .filter(|q| q.path() == "/delay/10")
            .count(),
        3,
        "each abandoned request reached the upstream"
    );
    assert_still_serving(&px, &up, "after-abandoned");
}

/// An HTTP/2 client over TLS to the proxy's HTTPS listener (SNI and `:authority` = HOST), with
/// the `h2` library told not to check what it sends, on one connection: stream 1 has no
/// `:path`; stream 3 has a 160 KiB header (over the 128 KiB header list the proxy takes);
/// stream 5 is `GET /anything/h2-after-malformed`; stream 7 has a field value starting with a
/// space (RFC 9113 8.2.1 calls it malformed). Prints each stream's outcome (`reset` with the
/// error code, or `status`) and the client's address.
///
/// usage: ADDR PORT HOST CA
const H2_MALFORMED: &str = r#"
import json, socket, ssl, sys, time
import h2.config, h2.connection, h2.events

addr, port, host, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["h2"])
sock = ctx.wrap_socket(socket.create_connection((addr, port), timeout=10), server_hostname=host)
if sock.selected_alpn_protocol() != "h2":
    sys.exit("the proxy did not negotiate h2: %r" % sock.selected_alpn_protocol())
conn = h2.connection.H2Connection(h2.config.H2Configuration(
    client_side=True, header_encoding="utf-8",
    validate_outbound_headers=False, normalize_outbound_headers=False))
conn.initiate_connection()
base = [(":method", "GET"), (":scheme", "https"), (":authority", host)]
conn.send_headers(1, base, end_stream=True)
conn.send_headers(3, base + [(":path", "/anything/h2-too-large"), ("x-big", "a" * (160 * 1024))],
                  end_stream=True)
conn.send_headers(5, base + [(":path", "/anything/h2-after-malformed")], end_stream=True)
conn.send_headers(7, base + [(":path", "/anything/h2-padded"), ("x-role", " admin")],
                  end_stream=True)
sock.sendall(conn.data_to_send())
out = {"client": "%s:%d" % sock.getsockname()[:2]}
deadline = time.time() + 20
while len(out) < 5 and time.time() < deadline:
    data = sock.recv(65536)
    if not data:
        break
    for ev in conn.receive_data(data):
        sid = getattr(ev, "stream_id", None)
        if isinstance(ev, h2.events.ResponseReceived):
            out[str(sid)] = {"status": dict(ev.headers).get(":status")}
        elif isinstance(ev, h2.events.StreamReset) and str(sid) not in out:
            out[str(sid)] = {"reset": int(ev.error_code)}
        elif isinstance(ev, h2.events.DataReceived):
            conn.acknowledge_received_data(ev.flow_controlled_length, sid)
    pending = conn.data_to_send()
    if pending:
        sock.sendall(pending)
print(json.dumps(out))
"#;

/// Pins a documented gap (docs/audit-log.md, "Not audited: malformed HTTP/2 streams"): the
/// HTTP/2 library refuses a stream without `:path` (RST_STREAM PROTOCOL_ERROR) and answers a
/// header list over 128 KiB with 431 itself, before the proxy sees either, so neither has a
/// record; the connection and its other streams go on, and those are audited as usual. If
/// this starts failing because such streams are audited, update the docs. A field value with
/// whitespace around it passes the library; the proxy refuses it (400, `malformed_request`),
/// since HTTP/1 parsers strip that whitespace and an upstream would read another value.
#[test]
fn malformed_http2_streams_are_refused_by_the_h2_layer_without_a_record() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    let https = px.https_addr();
    let r = python(
        H2_MALFORMED,
        [
            https.ip().to_string(),
            https.port().to_string(),
            "httpbin.test".to_string(),
            px.ca().to_string(),
        ],
    );
    r.assert_ok();
    let out = r.json();
    assert_eq!(out["1"]["reset"], 1, "no :path: PROTOCOL_ERROR (1): {out}");
    assert_eq!(out["3"]["status"], "431", "too large a header list: {out}");
    assert_eq!(
        out["5"]["status"], "200",
        "the connection still serves: {out}"
    );
    assert_eq!(out["7"]["status"], "400", "a padded field value: {out}");
    let me = out["client"]
        .as_str()
        .expect("the client's address")
        .to_string();
    px.wait_for_audit(|a| a.path() == Some("/anything/h2-after-malformed"));
    assert_still_serving(&px, &up, "after-malformed-h2");
    let mine: Vec<_> = px
        .audit()
        .iter()
        .filter(|a| a.str("remote_addr") == Some(me.as_str()))
        .cloned()
        .collect();
    let padded = px.wait_for_audit(|a| a.path() == Some("/anything/h2-padded"));
    assert_eq!(
        padded.str("reason"),
        Some("malformed_request"),
        "{padded:?}"
    );
    assert_eq!(padded.status_code(), Some(400), "{padded:?}");
    assert!(
        padded.str("error").is_some_and(|e| e.contains("x-role")),
        "the record names the field: {padded:?}"
    );
    let mine: Vec<_> = mine
        .into_iter()
        .filter(|a| a.path() != Some("/anything/h2-padded"))
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "only the well-formed stream is audited: {mine:?}"
    );
    assert_eq!(mine[0].path(), Some("/anything/h2-after-malformed"));
}
