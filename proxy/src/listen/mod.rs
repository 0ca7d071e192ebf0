//! Listeners: each accepts connections, works out what it can about the
//! client and destination, and hands HTTP to [`serve_http`].

pub(crate) mod accept;
mod connect_head;
pub mod http;
pub mod https;
pub mod linger;
pub mod refused;
pub mod sniffed;
pub mod transparent;
pub mod tunnel;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::exchange::{self, ConnInfo};
use crate::read_cap::ReadCap;
use crate::state::Shared;
use crate::tls::sniff::PrefixedStream;
use crate::upstream::{held, HeldSlot};

/// How long a client may take to start its first request (also after a TLS
/// handshake): the same bound as for the first bytes of a sniffed connection.
pub const FIRST_REQUEST_TIMEOUT: Duration = sniffed::SNIFF_TIMEOUT;
/// How long an HTTP/1 client may take to send a whole request head (and how
/// long a keep-alive connection may sit idle between requests).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The HTTP/2 connection preface; its prefix decides between HTTP/1 and HTTP/2.
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Reads until the bytes decide HTTP/1 versus HTTP/2 (a byte that differs
/// from the HTTP/2 preface, or the whole preface), within `timeout`. Returns
/// the bytes read, or `None` when the client sent nothing usable in time.
/// hyper's own version detection has no deadline, so without this a client
/// that connects and stays silent would hold its connection forever.
pub(crate) async fn read_first_bytes<I>(io: &mut I, timeout: Duration) -> Option<Vec<u8>>
where
    I: AsyncRead + Unpin,
{
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
            let n = io.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        Some(buf)
    };
    tokio::time::timeout(timeout, read).await.ok().flatten()
}

/// Serves HTTP/1.1 and HTTP/2 (by preface or ALPN) on `io` through the pipeline.
/// A request that hyper refuses to parse (and answers itself) is audited
/// here, as it never reaches the pipeline (see [`refused`]).
pub async fn serve_http<I>(shared: Arc<Shared>, mut conn: ConnInfo, mut io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let remote = conn.remote;
    let Some(first) = read_first_bytes(&mut io, FIRST_REQUEST_TIMEOUT).await else {
        tracing::debug!(client = %remote, "no request within {FIRST_REQUEST_TIMEOUT:?}; closing");
        return;
    };
    // Closed by the proxy first, the connection drains what the client
    // still sends, so that it reads the response instead of a reset. Reads
    // are capped so that hyper's read buffer stays small after an upload.
    let io = linger::Linger::new(ReadCap::new(PrefixedStream::new(first, io)));
    // This task drives the upstream connection its HTTP/1 requests go out on.
    let held = HeldSlot::default();
    conn.held = Some(held.clone());
    let conn = Arc::new(conn);
    let (audit_shared, audit_conn) = (shared.clone(), conn.clone());
    let svc = service_fn(move |req| -> exchange::HandleFuture {
        Box::pin(exchange::handle(shared.clone(), conn.clone(), req))
    });
    let builder = http_builder();
    let served = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    if let Err(e) = held::drive(held, served).await {
        tracing::debug!(client = %remote, error = %e, "client connection ended with an error");
        // A request hyper refused to parse never reached the pipeline: audit it here.
        refused::audit(&audit_shared, &audit_conn, &*e);
    }
}

/// How often an HTTP/2 client connection is PINGed to check that the client
/// is still there (long-lived gRPC streams, idle multiplexed connections).
pub const H2_PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long the client has to answer that PING before the connection closes.
pub const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// How much of one HTTP/2 stream's request body a client may send ahead of
/// what the proxy has forwarded (the stream's receive window).
///
/// Well below [`H2_CONN_WINDOW`]: a stream whose body the proxy cannot move
/// on (its upstream reads slowly or not at all, or is still being dialed)
/// parks at most this much, and the client's other streams on the same
/// connection keep the rest of the connection window. hyper's default, 1 MiB
/// for both windows, let one such stream take the whole connection window
/// and stall every other upload on the connection. A fixed window, not
/// hyper's adaptive one: that one sets both windows to the same estimate,
/// which brings the stall back.
pub const H2_STREAM_WINDOW: u32 = 256 * 1024;
/// How much request body, over all its streams, an HTTP/2 client connection
/// may send ahead of what the proxy has forwarded: the most the proxy
/// buffers for it (hyper's default, kept). Four streams stalled at once take
/// it all; they are that client's own streams, and no other connection's.
pub const H2_CONN_WINDOW: u32 = 1024 * 1024;

/// The most an HTTP/1 client connection buffers in hyper, each way: a
/// request head may be this large (beyond it: 431, or 414 for the URI),
/// and response bytes the client has not read yet queue up to this much
/// before the proxy stops pulling the upstream's body. hyper's default,
/// about 408 KiB, let every client that stops reading its response pin that
/// much (a few hundred such connections held a hundred MB). 128 KiB is
/// above the 64 KiB request heads load balancers accept (AWS ALB) and
/// Node's 16 KiB, and holds two 64 KiB TLS-record-sized writes.
pub const H1_MAX_BUF: usize = 128 * 1024;

/// The server builder every listener uses: header case preserved, a timer
/// so that HTTP/1 heads and idle keep-alive connections are bounded by
/// [`HEADER_READ_TIMEOUT`], HTTP/2 PINGs ([`H2_PING_INTERVAL`],
/// [`H2_PING_TIMEOUT`]) so that a client gone silent does not hold its
/// connection and streams forever, HTTP/1 buffers bounded by
/// [`H1_MAX_BUF`], and HTTP/2 receive windows
/// ([`H2_STREAM_WINDOW`], [`H2_CONN_WINDOW`]) that keep one stalled upload
/// from stalling the connection's others.
pub(crate) fn http_builder() -> auto::Builder<TokioExecutor> {
    http_builder_with(H2_PING_INTERVAL, H2_PING_TIMEOUT)
}

fn http_builder_with(ping_every: Duration, ping_timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .preserve_header_case(true)
        .keep_alive(true)
        .max_buf_size(H1_MAX_BUF)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(ping_every))
        .keep_alive_timeout(ping_timeout)
        .adaptive_window(false)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// Serves one connection on 127.0.0.1 with `builder` (every request
    /// answered 200, empty) and returns the client's end.
    async fn serve_one(builder: auto::Builder<TokioExecutor>) -> tokio::net::TcpStream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let svc = service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(crate::body::empty()))
            });
            let _ = builder.serve_connection(TokioIo::new(tcp), svc).await;
        });
        tokio::net::TcpStream::connect(addr).await.expect("connect")
    }

    /// An endless response body of 32 KiB chunks (the proxy reads upstreams 32 KiB at a
    /// time), counting what is pulled.
    struct Endless(Arc<std::sync::atomic::AtomicUsize>);

    impl hyper::body::Body for Endless {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>>
        {
            self.0
                .fetch_add(32 * 1024, std::sync::atomic::Ordering::SeqCst);
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(bytes::Bytes::from(
                vec![b'x'; 32 * 1024],
            )))))
        }
    }

    /// A client that never reads its response: the server pulls from the
    /// response body only as far as hyper's write buffer ([`H1_MAX_BUF`])
    /// and the sockets' (shrunk) kernel buffers hold, not hyper's default
    /// of about 408 KiB.
    #[tokio::test]
    async fn a_client_that_does_not_read_pins_a_bounded_response_buffer() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let pulled = Arc::new(AtomicUsize::new(0));
        let counted = pulled.clone();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            socket2::SockRef::from(&tcp)
                .set_send_buffer_size(4096)
                .expect("sndbuf");
            let svc = service_fn(move |_req| {
                let counted = counted.clone();
                async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Endless(counted))) }
            });
            let _ = http_builder()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("rcvbuf");
        let mut client = sock.connect(addr).await.expect("connect");
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("request");
        // Wait until the server stops pulling (the buffers are full).
        let mut last = 0;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = pulled.load(Ordering::SeqCst);
            if now == last && now > 0 {
                break;
            }
            last = now;
        }
        let pulled = pulled.load(Ordering::SeqCst);
        // The write buffer, a chunk in hand, and the kernel's buffers
        // (a few KiB at the smallest sizes it allows). Without the cap: ~408 KiB.
        assert!(
            pulled <= H1_MAX_BUF + 96 * 1024,
            "{pulled} bytes pulled for a client that reads nothing"
        );
        drop(client);
    }

    #[tokio::test]
    async fn a_silent_http2_client_is_pinged_and_then_dropped() {
        use crate::h2_frames::{read_frame, Frame, ACK, PING};
        let mut client = serve_one(http_builder_with(
            Duration::from_millis(100),
            Duration::from_millis(200),
        ))
        .await;
        // The preface and an empty SETTINGS frame; then the client says nothing
        // more, and never answers a PING.
        client.write_all(H2_PREFACE).await.expect("preface");
        client
            .write_all(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0])
            .await
            .expect("settings");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let pinged = tokio::time::timeout_at(deadline, async {
            loop {
                match read_frame(&mut client).await {
                    Some(Frame {
                        kind: PING, flags, ..
                    }) if flags & ACK == 0 => return true,
                    Some(_) => continue,
                    None => return false,
                }
            }
        })
        .await
        .expect("a PING within 10 s");
        assert!(pinged, "the server closed without a PING");
        // Unanswered, the PING ends the connection (a GOAWAY may come first).
        let closed = tokio::time::timeout_at(deadline, async {
            while read_frame(&mut client).await.is_some() {}
        })
        .await;
        assert!(
            closed.is_ok(),
            "the connection stayed open after the PING timeout"
        );
    }

    #[tokio::test]
    async fn a_stream_gets_a_quarter_of_the_connection_receive_window() {
        use crate::h2_frames::*;
        let mut client = serve_one(http_builder()).await;
        client.write_all(H2_PREFACE).await.expect("preface");
        client
            .write_all(&frame(SETTINGS, 0, 0, &[]))
            .await
            .expect("settings");
        // The server's SETTINGS (the stream window) and its WINDOW_UPDATE on
        // stream 0 (the connection window, from the 65,535 every one starts with).
        let (mut stream_window, mut conn_window) = (None, None);
        let read = async {
            while stream_window.is_none() || conn_window.is_none() {
                let Some(f) = read_frame(&mut client).await else {
                    break;
                };
                match f.kind {
                    SETTINGS if f.flags & ACK == 0 => {
                        stream_window = f.setting(SETTINGS_INITIAL_WINDOW_SIZE);
                    }
                    WINDOW_UPDATE if f.stream == 0 => {
                        conn_window = f.increment().map(|i| i + DEFAULT_WINDOW);
                    }
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the server's SETTINGS and WINDOW_UPDATE within 10 s");
        assert_eq!(stream_window, Some(H2_STREAM_WINDOW));
        assert_eq!(conn_window, Some(H2_CONN_WINDOW));
        // One stream the proxy cannot drain leaves three quarters of the
        // connection to the client's other streams.
        assert_eq!(H2_CONN_WINDOW / H2_STREAM_WINDOW, 4);
    }

    #[tokio::test]
    async fn first_bytes_decide_the_version_or_time_out() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let got = read_first_bytes(&mut server, Duration::from_secs(5)).await;
        assert_eq!(got.as_deref(), Some(&b"GET / HTTP/1.1\r\n"[..]));

        let (mut client, mut server) = tokio::io::duplex(64);
        client
            .write_all(b"PRI * HTTP/2.0\r\n")
            .await
            .expect("write");
        let pending = read_first_bytes(&mut server, Duration::from_millis(50));
        assert_eq!(pending.await, None, "half a preface then silence times out");

        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(H2_PREFACE).await.expect("write");
        let got = read_first_bytes(&mut server, Duration::from_secs(5)).await;
        assert_eq!(got.as_deref(), Some(H2_PREFACE));

        let (client, mut server) = tokio::io::duplex(64);
        drop(client);
        assert_eq!(
            read_first_bytes(&mut server, Duration::from_secs(5)).await,
            None
        );
    }
}
