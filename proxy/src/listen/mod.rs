//! Listeners: each accepts connections, works out what it can about the
//! client and destination, and hands HTTP to [`serve_http`].

pub(crate) mod accept;
pub mod cancels;
mod connect_head;
pub mod http;
pub mod https;
pub mod idle;
pub mod linger;
pub mod per_client;
pub mod refused;
pub mod sniffed;
pub mod transparent;
pub mod tunnel;
pub mod workers;

#[cfg(test)]
mod h2_server_tests;

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

/// The room each read of [`read_first_bytes`] offers.
const FIRST_READ: usize = 4096;

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
        // Read straight into the heap: a buffer on the stack would live in
        // the connection's future (4 KiB more for every connection, idle ones
        // included) and cost a copy.
        let mut buf = Vec::new();
        while buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&buf) {
            buf.reserve(FIRST_READ);
            let n = io.read_buf(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
        }
        Some(buf)
    };
    tokio::time::timeout(timeout, read).await.ok().flatten()
}

/// Serves HTTP/1.1 and HTTP/2 (by preface or ALPN) on `io` through the pipeline.
/// A request that hyper refuses to parse (and answers itself) is audited
/// here, as it never reaches the pipeline (see [`refused`]).
pub async fn serve_http<I>(shared: Arc<Shared>, mut conn: Box<ConnInfo>, mut io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let remote = conn.remote;
    let Some(first) = read_first_bytes(&mut io, FIRST_REQUEST_TIMEOUT).await else {
        tracing::debug!(client = %remote, "no request within {FIRST_REQUEST_TIMEOUT:?}; closing");
        return;
    };
    // HTTP/2 streams the client cancels are counted (the "Rapid Reset" bound).
    let cancels = cancels::Cancels::for_connection(remote, &first);
    // An upgraded connection outlives this task: the socket keeps its
    // client's connection counted (`per_client`).
    let io = per_client::Permitted::new(io);
    // Closed by the proxy first, the connection drains what the client
    // still sends, so that it reads the response instead of a reset. Reads
    // are capped so that hyper's read buffer stays small after an upload.
    let io = linger::Linger::new(ReadCap::new(PrefixedStream::new(first, io)));
    // This task drives the upstream connection its HTTP/1 requests go out on.
    let held = HeldSlot::default();
    conn.held = Some(held.clone());
    let conn = Arc::<ConnInfo>::from(conn);
    let (audit_shared, audit_conn) = (shared.clone(), conn.clone());
    let started = idle::Started::default();
    let counter = started.clone();
    let tracker = cancels.clone();
    let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        counter.one();
        let version = req.version();
        let exchange: exchange::HandleFuture =
            Box::pin(exchange::handle(shared.clone(), conn.clone(), req));
        cancels::track(tracker.as_ref(), version, exchange)
    });
    let builder = http_builder();
    let served = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    let served = cancels::watch(idle::bounded(served, started), cancels);
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

/// How many header fields an HTTP/1 request head may have (beyond it:
/// 431); the same number bounds the upstream's HTTP/1 response heads.
/// hyper's default, 100 (Envoy's and HAProxy's too), refused heads that the
/// Go proxy took (its only bound is 1 MiB of head bytes). Not as many as
/// [`H1_MAX_BUF`] would hold: above 100 hyper allocates room for this many
/// fields on every head it parses, used or not (32 KiB at 512, 1 MiB for
/// 16,384 one-per-8-bytes fields), so the request path stays cheap and a
/// head of many tiny fields is refused by count.
pub const H1_MAX_HEADERS: usize = 512;

/// The most an HTTP/2 request's header list may take, counted as HTTP/2
/// counts it (each field's name and value plus 32 bytes): the same bound
/// as [`H1_MAX_BUF`] on an HTTP/1 head (hyper's default was 16 KiB).
/// Beyond it the stream is answered 431 (by the h2 library) and reset.
/// It is also the bound on the upstream's HTTP/2 response heads.
pub const H2_MAX_HEADER_LIST: u32 = H1_MAX_BUF as u32;

/// How much of one HTTP/2 stream's response the proxy queues for the
/// client beyond what the client's socket takes. hyper's default, 400 KiB
/// per stream, let a client that advertises a large flow-control window
/// and then reads nothing pin that much on every stream it opens (200 of
/// them per connection). 64 KiB holds four full-sized frames, enough that
/// a client that reads keeps the socket busy (a bulk download through the
/// proxy moves as fast as with the default).
pub const H2_MAX_SEND_BUF: usize = 64 * 1024;

/// How many streams an HTTP/2 client connection may have open at once
/// (`SETTINGS_MAX_CONCURRENT_STREAMS`; a stream beyond it is refused with
/// `REFUSED_STREAM`, which clients retry once another ends).
///
/// What one connection can pin is bounded per stream by the send queue
/// ([`H2_MAX_SEND_BUF`]) plus the chunk of response in hand (up to 32 KiB
/// read from the upstream, `read_cap.rs`), about 96 KiB, and over all
/// streams by the receive window ([`H2_CONN_WINDOW`], 1 MiB). hyper's
/// default of 200 streams let a client that opens them all with a huge
/// flow-control window and reads nothing pin about 19 MiB per connection;
/// at 100, about 9.4 MiB plus the window (measured: see the
/// `an_http2_client_holding_more_streams_than_the_limit_pins_no_more`
/// test). 100 is what RFC 9113 (section 6.5.2) asks servers not to go
/// below so as not to limit parallelism needlessly, Envoy's default and
/// what most CDNs advertise (nginx 128, Go 250); browsers cap themselves
/// at the server's value and gRPC clients queue calls beyond it, so normal
/// fan-out and streaming are unaffected.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// How many streams the client reset before hyper took them (h2's accept
/// queue) an HTTP/2 connection may have waiting at once; one more is a
/// connection error, GOAWAY with `ENHANCE_YOUR_CALM` (h2's answer to the
/// original Rapid Reset, CVE-2023-44487, where each stream is opened and
/// reset in one go). hyper leaves it to h2, whose default this is, set here
/// so that a change of default does not pass unseen. hyper takes streams as
/// soon as h2 has read them, so only streams opened and reset in one read
/// wait there; resets of streams hyper took are bounded by [`cancels`].
pub const H2_MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// How many streams h2 itself may reset on an HTTP/2 connection, over its
/// life, for the client's protocol errors (a malformed header block, a
/// stream over [`H2_MAX_CONCURRENT_STREAMS`], a body longer than its
/// `content-length`, ...) before it ends the connection with GOAWAY
/// `ENHANCE_YOUR_CALM`: the bound on "MadeYouReset" (CVE-2025-8671), where a
/// client makes the server reset streams it would otherwise have to serve.
/// hyper's and h2's default (1,024), set here explicitly for the same
/// reason; a client that speaks HTTP/2 correctly gets none of these.
pub const H2_MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// The server builder every listener uses: header case preserved, a timer
/// so that HTTP/1 heads and idle keep-alive connections are bounded by
/// [`HEADER_READ_TIMEOUT`], HTTP/2 PINGs ([`H2_PING_INTERVAL`],
/// [`H2_PING_TIMEOUT`]) so that a client gone silent does not hold its
/// connection and streams forever, HTTP/1 buffers bounded by
/// [`H1_MAX_BUF`] (and heads by it, not by a header count:
/// [`H1_MAX_HEADERS`], [`H2_MAX_HEADER_LIST`]), HTTP/2 receive windows
/// ([`H2_STREAM_WINDOW`], [`H2_CONN_WINDOW`]) that keep one stalled upload
/// from stalling the connection's others, and HTTP/2 send queues bounded
/// by [`H2_MAX_SEND_BUF`] per stream, on at most
/// [`H2_MAX_CONCURRENT_STREAMS`] streams at a time, with h2's bounds on
/// streams reset before they were taken ([`H2_MAX_PENDING_ACCEPT_RESETS`])
/// and reset by h2 for the client's errors ([`H2_MAX_LOCAL_ERROR_RESETS`]).
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
        .max_headers(H1_MAX_HEADERS)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(ping_every))
        .keep_alive_timeout(ping_timeout)
        .adaptive_window(false)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .max_header_list_size(H2_MAX_HEADER_LIST)
        .max_send_buf_size(H2_MAX_SEND_BUF)
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endless::{settled, Endless, CHUNK};
    use tokio::io::AsyncWriteExt;

    /// An HTTP/2 client of [`serve_one`]`(builder)` that has sent the preface
    /// and an empty SETTINGS frame.
    async fn h2_client(builder: auto::Builder<TokioExecutor>) -> tokio::net::TcpStream {
        let mut client = serve_one(builder).await;
        client.write_all(H2_PREFACE).await.expect("preface");
        client
            .write_all(&crate::h2_frames::frame(
                crate::h2_frames::SETTINGS,
                0,
                0,
                &[],
            ))
            .await
            .expect("settings");
        client
    }

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

    /// Serves one connection on 127.0.0.1 with [`http_builder`], answering
    /// every request with an [`Endless`] body counted in `pulled`; the
    /// server's socket has the smallest send buffer the kernel allows.
    /// Returns the address.
    async fn serve_endless(pulled: Arc<std::sync::atomic::AtomicUsize>) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            socket2::SockRef::from(&tcp)
                .set_send_buffer_size(4096)
                .expect("sndbuf");
            let svc = service_fn(move |_req| {
                let counted = pulled.clone();
                async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Endless(counted))) }
            });
            let _ = http_builder()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
        addr
    }

    /// A client of `addr` with the smallest receive buffer the kernel allows.
    async fn small_window_client(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("rcvbuf");
        sock.connect(addr).await.expect("connect")
    }

    /// A client that never reads its response: the server pulls from the
    /// response body only as far as hyper's write buffer ([`H1_MAX_BUF`])
    /// and the sockets' (shrunk) kernel buffers hold, not hyper's default
    /// of about 408 KiB.
    #[tokio::test]
    async fn a_client_that_does_not_read_pins_a_bounded_response_buffer() {
        let pulled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let addr = serve_endless(pulled.clone()).await;
        let mut client = small_window_client(addr).await;
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("request");
        // Wait until the server stops pulling (the buffers are full).
        let pulled = settled(&pulled).await;
        // The write buffer, a chunk in hand, and the kernel's buffers
        // (a few KiB at the smallest sizes it allows). Without the cap: ~408 KiB.
        assert!(
            pulled <= H1_MAX_BUF + 96 * 1024,
            "{pulled} bytes pulled for a client that reads nothing"
        );
        drop(client);
    }

    /// The same over HTTP/2, from a client that opens the largest
    /// flow-control windows there are (so that flow control never holds the
    /// server back) and then reads nothing: each stream's response is pulled
    /// only as far as [`H2_MAX_SEND_BUF`], a chunk in hand and the kernel's
    /// buffers hold, not hyper's default of 400 KiB per stream.
    #[tokio::test]
    async fn an_http2_client_that_does_not_read_pins_a_bounded_buffer_per_stream() {
        const STREAMS: u32 = 2;
        let pulled = pulled_by_unread_streams(STREAMS).await;
        // Per stream: the send queue and a chunk in hand; the kernel's
        // buffers and the frame being written once (as in the HTTP/1 test).
        // Without the bound: over 400 KiB per stream.
        let bound = STREAMS as usize * (H2_MAX_SEND_BUF + CHUNK) + 96 * 1024;
        assert!(
            pulled <= bound,
            "{pulled} bytes pulled for {STREAMS} streams of a client that reads nothing \
             (bound {bound})"
        );
    }

    /// A client opening as many streams as hyper's default allowed (200),
    /// each with the largest window and none read, gets only
    /// [`H2_MAX_CONCURRENT_STREAMS`] served (the rest are refused), so it
    /// pins what that many streams hold at most. Without the limit: 200
    /// send queues, over 12.5 MiB.
    #[tokio::test]
    async fn an_http2_client_holding_more_streams_than_the_limit_pins_no_more() {
        const STREAMS: u32 = 200;
        let pulled = pulled_by_unread_streams(STREAMS).await;
        let bound = H2_MAX_CONCURRENT_STREAMS as usize * (H2_MAX_SEND_BUF + CHUNK) + 96 * 1024;
        assert!(
            pulled <= bound,
            "{pulled} bytes pulled for {STREAMS} unread streams (bound {bound})"
        );
        // Well below 19 MiB a connection (hyper's default of 200 streams).
        assert!(bound < 10 * 1024 * 1024, "{bound}");
    }

    /// The server tells clients how many streams they may open.
    #[tokio::test]
    async fn http2_clients_are_told_the_stream_limit() {
        use crate::h2_frames::*;
        let mut client = h2_client(http_builder()).await;
        let read = async {
            loop {
                let f = read_frame(&mut client).await?;
                if f.kind == SETTINGS && f.flags & ACK == 0 {
                    return f.setting(SETTINGS_MAX_CONCURRENT_STREAMS);
                }
            }
        };
        let advertised = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the server's SETTINGS within 10 s");
        assert_eq!(advertised, Some(H2_MAX_CONCURRENT_STREAMS));
    }

    /// Opens `streams` GETs on one HTTP/2 connection to [`serve_endless`]
    /// with the largest flow-control windows there are and reads nothing;
    /// returns how much of the endless responses the server pulled once it
    /// stopped.
    async fn pulled_by_unread_streams(streams: u32) -> usize {
        use crate::h2_frames::*;
        let pulled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let addr = serve_endless(pulled.clone()).await;
        let mut client = small_window_client(addr).await;
        let max_window: u32 = 0x7fff_ffff;
        let mut hello = H2_PREFACE.to_vec();
        let mut settings = SETTINGS_INITIAL_WINDOW_SIZE.to_be_bytes().to_vec();
        settings.extend_from_slice(&max_window.to_be_bytes());
        hello.extend(frame(SETTINGS, 0, 0, &settings));
        hello.extend(frame(
            WINDOW_UPDATE,
            0,
            0,
            &(max_window - DEFAULT_WINDOW).to_be_bytes(),
        ));
        // GET http://a/ from HPACK's static table (:method GET, :scheme
        // http, :path /) and a literal :authority.
        let block = [0x82, 0x86, 0x84, 0x41, 0x01, b'a'];
        for i in 0..streams {
            hello.extend(frame(HEADERS, END_STREAM | END_HEADERS, 1 + 2 * i, &block));
        }
        client.write_all(&hello).await.expect("requests");
        let pulled = settled(&pulled).await;
        drop(client);
        pulled
    }

    /// Sends `head` as the first request on a connection to `http_builder`
    /// and returns the status line of the answer.
    async fn status_of(head: &[u8]) -> String {
        let mut client = serve_one(http_builder()).await;
        client.write_all(head).await.expect("request");
        let mut answer = Vec::new();
        let mut chunk = [0u8; 1024];
        while !answer.windows(2).any(|w| w == b"\r\n") {
            let n = tokio::io::AsyncReadExt::read(&mut client, &mut chunk)
                .await
                .expect("answer");
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&answer);
        text.lines().next().unwrap_or_default().to_string()
    }

    /// A request head of `fields` header lines, each `value` after a name
    /// of its own (5 hex digits: with an empty value, 8 bytes a line).
    fn head_with(fields: usize, value: &str) -> Vec<u8> {
        let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..fields {
            head.extend_from_slice(format!("{i:05x}:{value}\r\n").as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        head
    }

    /// Up to [`H1_MAX_HEADERS`] header fields get through (hyper's default
    /// refused more than 100); one more is 431.
    #[tokio::test]
    async fn http1_heads_take_up_to_the_field_limit() {
        assert_eq!(status_of(&head_with(150, " v")).await, "HTTP/1.1 200 OK");
        // The Host line counts as one.
        let most = H1_MAX_HEADERS - 1;
        assert_eq!(status_of(&head_with(most, "")).await, "HTTP/1.1 200 OK");
        assert_eq!(
            status_of(&head_with(most + 1, "")).await,
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
        // Beyond H1_MAX_BUF in bytes: 431 too (tests/e2e/tls/malformed.rs,
        // through the proxy, which drains what the client still sends so
        // that it reads the answer).
    }

    /// An HTTP/2 client is told it may send a header list as large as an
    /// HTTP/1 head (hyper's default was 16 KiB).
    #[tokio::test]
    async fn http2_header_lists_have_the_http1_head_bound() {
        use crate::h2_frames::*;
        let mut client = h2_client(http_builder()).await;
        let read = async {
            loop {
                let f = read_frame(&mut client).await?;
                if f.kind == SETTINGS && f.flags & ACK == 0 {
                    return f.setting(SETTINGS_MAX_HEADER_LIST_SIZE);
                }
            }
        };
        let advertised = tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("the server's SETTINGS within 10 s");
        assert_eq!(advertised, Some(H1_MAX_BUF as u32));
    }

    #[tokio::test]
    async fn a_silent_http2_client_is_pinged_and_then_dropped() {
        use crate::h2_frames::{read_frame, Frame, ACK, PING};
        // After the preface and an empty SETTINGS frame the client says
        // nothing more, and never answers a PING.
        let mut client = h2_client(http_builder_with(
            Duration::from_millis(100),
            Duration::from_millis(200),
        ))
        .await;
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
        let mut client = h2_client(http_builder()).await;
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
