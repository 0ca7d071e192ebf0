use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;
use crate::h2_frames::*;
use crate::listen::H2_PREFACE;

/// The client the requests of these tests are sent for.
const ANYONE: &crate::intercept::Client = &crate::intercept::Client::UNKNOWN;

/// A TLS acceptor offering ALPN h2 only, with a self-signed certificate for
/// 127.0.0.1, and the root to trust.
pub(crate) fn h2_acceptor() -> (rustls::RootCertStore, tokio_rustls::TlsAcceptor) {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).expect("cert");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut tls = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .expect("server config");
    tls.alpn_protocols = vec![b"h2".to_vec()];
    (roots, tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
}

/// A TLS listener on 127.0.0.1 offering ALPN h2 only ([`h2_acceptor`]): the
/// listener, its port, the root to trust and the acceptor.
async fn h2_tls_listener() -> (
    TcpListener,
    u16,
    rustls::RootCertStore,
    tokio_rustls::TlsAcceptor,
) {
    let (roots, acceptor) = h2_acceptor();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (listener, port, roots, acceptor)
}

/// An HTTPS upstream on 127.0.0.1 that speaks HTTP/2 (ALPN h2) by hand:
/// it answers the first request with a 200 head and then goes silent, as a
/// host that vanished mid-response would, never answering a PING. Returns
/// its port, the CA to trust, the PINGs it saw, and a channel that fires when
/// the proxy closes the connection.
async fn vanishing_h2_upstream() -> (
    u16,
    rustls::RootCertStore,
    Arc<AtomicUsize>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (listener, port, roots, acceptor) = h2_tls_listener().await;
    let pings = Arc::new(AtomicUsize::new(0));
    let seen = pings.clone();
    let (closed_tx, closed) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut io = acceptor.accept(tcp).await.expect("TLS");
        let mut preface = [0u8; 24];
        io.read_exact(&mut preface).await.expect("preface");
        assert_eq!(&preface[..], H2_PREFACE);
        io.write_all(&frame(SETTINGS, 0, 0, &[]))
            .await
            .expect("settings");
        while let Some(Frame {
            kind,
            flags,
            stream,
            ..
        }) = read_frame(&mut io).await
        {
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    io.write_all(&frame(SETTINGS, ACK, 0, &[]))
                        .await
                        .expect("ack");
                }
                // `:status: 200` is entry 8 of HPACK's static table. No
                // END_STREAM: the body is still to come, and never does.
                HEADERS => {
                    io.write_all(&frame(HEADERS, END_HEADERS, stream, &[0x88]))
                        .await
                        .expect("headers");
                }
                PING if flags & ACK == 0 => {
                    seen.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
        let _ = closed_tx.send(());
    });
    (port, roots, pings, closed)
}

fn upstream_trusting(roots: rustls::RootCertStore, every: Duration, timeout: Duration) -> Upstream {
    let mut tls = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let deny = Arc::new(arc_swap::ArcSwap::from_pointee(DenyList::new(Vec::new())));
    let dialer = Dialer::new(Resolver::new(None).expect("resolver"), deny, Arc::new(tls));
    Upstream::with_h2_pings(dialer, every, timeout)
}

#[tokio::test]
async fn an_http2_upstream_that_goes_silent_is_pinged_and_its_stream_fails() {
    let (port, roots, pings, closed) = vanishing_h2_upstream().await;
    let up = upstream_trusting(
        roots,
        Duration::from_millis(100),
        Duration::from_millis(200),
    );
    let mut req = http::Request::get(format!("https://127.0.0.1:{port}/stream"))
        .body(crate::body::empty())
        .expect("request");
    *req.version_mut() = http::Version::HTTP_2;
    let rsp = up
        .send(req, Duration::from_secs(5), None, ANYONE)
        .await
        .expect("the response head");
    assert_eq!(rsp.status(), http::StatusCode::OK);
    assert_eq!(rsp.version(), http::Version::HTTP_2, "ALPN chose h2");
    // Without PINGs this body never ends: the upstream is silent but open.
    let body = tokio::time::timeout(Duration::from_secs(10), rsp.into_body().collect())
        .await
        .expect("the stream failed within 10 s instead of hanging");
    assert!(body.is_err(), "the silent stream ended cleanly");
    assert!(
        pings.load(Ordering::SeqCst) >= 1,
        "no PING reached the upstream"
    );
    tokio::time::timeout(Duration::from_secs(10), closed)
        .await
        .expect("the proxy closed the upstream connection")
        .expect("the upstream task ended");
}

/// An HTTPS upstream on 127.0.0.1 speaking HTTP/2 only (ALPN h2, hyper's
/// server) that answers every request 200 and counts the connections it
/// accepts. Returns its port, the CA to trust and the count.
async fn counting_h2_upstream() -> (u16, rustls::RootCertStore, Arc<AtomicUsize>) {
    let (listener, port, roots, acceptor) = h2_tls_listener().await;
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(io) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(crate::body::empty()))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(io), svc)
                    .await;
            });
        }
    });
    (port, roots, accepted)
}

/// Sends an HTTP/2 GET for `/` to the upstream on `port` as the client
/// connection of `slot`; returns the status.
async fn h2_get(up: &Upstream, port: u16, slot: &HeldSlot) -> http::StatusCode {
    let mut req = http::Request::get(format!("https://127.0.0.1:{port}/"))
        .body(crate::body::empty())
        .expect("request");
    *req.version_mut() = http::Version::HTTP_2;
    let rsp = up
        .send(req, Duration::from_secs(5), Some(slot), ANYONE)
        .await
        .expect("the response");
    assert_eq!(rsp.version(), http::Version::HTTP_2, "ALPN chose h2");
    rsp.status()
}

#[tokio::test]
async fn client_connections_get_http2_upstream_connections_of_their_own_and_hand_them_on() {
    let (port, roots, accepted) = counting_h2_upstream().await;
    let up = upstream_trusting(roots, Duration::from_secs(30), Duration::from_secs(20));
    let (a, b) = (HeldSlot::default(), HeldSlot::default());
    for _ in 0..2 {
        assert_eq!(h2_get(&up, port, &a).await, http::StatusCode::OK);
        assert_eq!(h2_get(&up, port, &b).await, http::StatusCode::OK);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "one upstream connection per client connection, reused by its own requests"
    );
    let key = Key {
        tls: true,
        host: "127.0.0.1".to_string(),
        port,
    };
    // A's client connection ends: its client becomes a spare, and the next
    // client connection to the host starts with its warm upstream connection.
    drop(a);
    assert_eq!(up.spares.count(&key), 1);
    let c = HeldSlot::default();
    assert_eq!(h2_get(&up, port, &c).await, http::StatusCode::OK);
    assert_eq!(up.spares.count(&key), 0, "C took the spare");
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "C dialed nothing new");
    // While C holds it, a fourth client connection dials its own.
    let d = HeldSlot::default();
    assert_eq!(h2_get(&up, port, &d).await, http::StatusCode::OK);
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
    drop((b, c, d));
    assert_eq!(up.spares.count(&key), 3);
}

#[tokio::test]
async fn retired_pools_are_not_reused_by_live_client_connections_or_spares() {
    let (port, roots, accepted) = counting_h2_upstream().await;
    let up = upstream_trusting(roots, Duration::from_secs(30), Duration::from_secs(20));
    let (a, b) = (HeldSlot::default(), HeldSlot::default());
    assert_eq!(h2_get(&up, port, &a).await, http::StatusCode::OK);
    assert_eq!(h2_get(&up, port, &b).await, http::StatusCode::OK);
    drop(b);
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // A reload changed the deny list: no connection made before is used again.
    up.retire_pools();
    let key = Key {
        tls: true,
        host: "127.0.0.1".to_string(),
        port,
    };
    assert_eq!(up.spares.count(&key), 0, "the spare is dropped");
    assert_eq!(h2_get(&up, port, &a).await, http::StatusCode::OK);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        3,
        "A's request went out on a new connection, not on A's own"
    );
    assert_eq!(h2_get(&up, port, &a).await, http::StatusCode::OK);
    assert_eq!(accepted.load(Ordering::SeqCst), 3, "which is then reused");
    drop(a);
    assert_eq!(
        up.spares.count(&key),
        0,
        "a retired client is not kept as a spare"
    );
    let c = HeldSlot::default();
    assert_eq!(h2_get(&up, port, &c).await, http::StatusCode::OK);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        4,
        "C dials a connection of its own"
    );
}

/// An HTTPS upstream on 127.0.0.1 speaking HTTP/2 by hand that opens the
/// largest flow-control windows there are, takes one request's HEADERS, and
/// from then on reads nothing (its socket has the smallest receive buffer
/// the kernel allows): an upstream that lets the proxy send all it wants and
/// takes none of it. Returns its port and the CA to trust.
async fn unread_h2_upstream() -> (u16, rustls::RootCertStore) {
    let (listener, port, roots, acceptor) = h2_tls_listener().await;
    socket2::SockRef::from(&listener)
        .set_recv_buffer_size(4096)
        .expect("rcvbuf");
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut io = acceptor.accept(tcp).await.expect("TLS");
        let mut preface = [0u8; 24];
        io.read_exact(&mut preface).await.expect("preface");
        let max_window: u32 = 0x7fff_ffff;
        let mut settings = SETTINGS_INITIAL_WINDOW_SIZE.to_be_bytes().to_vec();
        settings.extend_from_slice(&max_window.to_be_bytes());
        let mut hello = frame(SETTINGS, 0, 0, &settings);
        hello.extend(frame(
            WINDOW_UPDATE,
            0,
            0,
            &(max_window - DEFAULT_WINDOW).to_be_bytes(),
        ));
        io.write_all(&hello).await.expect("settings");
        while let Some(f) = read_frame(&mut io).await {
            match f.kind {
                SETTINGS if f.flags & ACK == 0 => {
                    io.write_all(&frame(SETTINGS, ACK, 0, &[]))
                        .await
                        .expect("ack");
                }
                HEADERS => break,
                _ => {}
            }
        }
        // Reads nothing more, and holds the connection open.
        std::future::pending::<()>().await;
        drop(io);
    });
    (port, roots)
}

/// A fast uploading client and an HTTP/2 upstream that takes none of the
/// body: the proxy pulls the body only as far as the stream's send queue
/// ([`own_h2::MAX_SEND_BUF`]), a chunk in hand, and the TLS and kernel
/// buffers hold, not hyper's client default of 1 MiB per stream.
#[tokio::test]
async fn an_http2_upstream_that_takes_no_upload_pins_a_bounded_buffer() {
    use crate::endless::{settled, Endless, CHUNK};
    let (port, roots) = unread_h2_upstream().await;
    let up = upstream_trusting(roots, Duration::from_secs(30), Duration::from_secs(20));
    let pulled = Arc::new(AtomicUsize::new(0));
    let mut req = http::Request::post(format!("https://127.0.0.1:{port}/upload"))
        .body(crate::body::boxed(Endless(pulled.clone())))
        .expect("request");
    *req.version_mut() = http::Version::HTTP_2;
    let slot = HeldSlot::default();
    // No response ever comes; the send is dropped with the test.
    let sending = tokio::spawn(async move {
        let _ = up
            .send(req, Duration::from_secs(60), Some(&slot), ANYONE)
            .await;
    });
    let pulled = settled(&pulled).await;
    // What the kernel holds does not count: the proxy's socket has a send
    // buffer sized by the kernel's autotuning (MBs on loopback), not by the
    // proxy, and the upstream took a little before it stopped reading.
    let in_kernel = send_queue_towards(port) + 16 * 1024;
    let held = pulled.saturating_sub(in_kernel);
    // The send queue and a chunk in hand, rustls's buffer (64 KiB) and the
    // frame being written. Without the bound: over 1 MiB.
    let bound = own_h2::MAX_SEND_BUF + CHUNK + 96 * 1024;
    assert!(
        held <= bound,
        "{held} bytes of the upload held in the proxy for an upstream that takes none \
         ({pulled} pulled, {in_kernel} in the kernel; bound {bound})"
    );
    sending.abort();
}

/// The bytes the kernel holds unacknowledged or unsent on this host's TCP
/// sockets whose remote port is `port` (`tx_queue` in /proc/net/tcp).
fn send_queue_towards(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields.get(2)?.rsplit(':').next()?;
            (u16::from_str_radix(remote_port, 16).ok()? == port).then_some(())?;
            let tx = fields.get(4)?.split(':').next()?;
            usize::from_str_radix(tx, 16).ok()
        })
        .sum()
}

/// `origin_form` gives the target parsing its path and query as text gives
/// (reused without a re-parse when it starts with `/`), the upstream's key,
/// a `Host` when the request had none, and HTTP/1.1.
#[test]
fn origin_form_target_and_host() {
    for (uri, target, host) in [
        ("https://h.test/a/b?c=d&e", "/a/b?c=d&e", "h.test"),
        (
            "https://h.test:8443/a%2Fb?x=%20",
            "/a%2Fb?x=%20",
            "h.test:8443",
        ),
        ("http://h.test//double?q", "//double?q", "h.test"),
        ("http://h.test/p#frag", "/p", "h.test"),
        ("http://h.test", "/", "h.test"),
        // A query without a path: the path is `/` (was a 502 "invalid format").
        ("http://h.test?a=1", "/?a=1", "h.test"),
        ("http://h.test:81?", "/?", "h.test:81"),
        ("http://[::1]:81/v6", "/v6", "[::1]:81"),
    ] {
        let req = Request::builder()
            .uri(uri)
            .version(http::Version::HTTP_2)
            .body(crate::body::empty())
            .expect("request");
        let (key, req) = origin_form(req).expect(uri);
        assert_eq!(req.uri(), &Uri::try_from(target).expect(target), "{uri}");
        assert_eq!(req.uri().to_string(), target, "{uri}");
        assert_eq!(req.headers()[header::HOST], host, "{uri}");
        assert_eq!(req.version(), http::Version::HTTP_11, "{uri}");
        assert_eq!(key.tls, uri.starts_with("https"), "{uri}");
    }
}

#[tokio::test]
async fn upstream_sockets_probe_a_silent_peer_after_30_seconds() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let up = upstream_trusting(
        rustls::RootCertStore::empty(),
        H2_PING_INTERVAL,
        H2_PING_TIMEOUT,
    );
    let stream = up.dialer().tcp("127.0.0.1", port).await.expect("dial");
    let sock = socket2::SockRef::from(&stream);
    assert!(sock.keepalive().expect("SO_KEEPALIVE"), "keepalive is off");
    assert_eq!(
        sock.keepalive_time().expect("TCP_KEEPIDLE"),
        Duration::from_secs(30)
    );
    assert_eq!(
        sock.keepalive_interval().expect("TCP_KEEPINTVL"),
        Duration::from_secs(15)
    );
    assert_eq!(sock.keepalive_retries().expect("TCP_KEEPCNT"), 4);
    assert!(stream.nodelay().expect("TCP_NODELAY"), "nodelay is off");
}
