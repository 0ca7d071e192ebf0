use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const RESPONSE: &[u8] =
    b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// A server that reads the first 4 KiB of each connection, answers
/// [`RESPONSE`] and closes, with or without lingering.
async fn refusing_server(linger: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                if linger {
                    let mut io = Linger::new(tcp);
                    let _ = io.read_exact(&mut buf).await;
                    let _ = io.write_all(RESPONSE).await;
                } else {
                    let mut io = tcp;
                    let _ = io.read_exact(&mut buf).await;
                    let _ = io.write_all(RESPONSE).await;
                }
            });
        }
    });
    addr
}

/// Sends a 32 MiB request (far more than the socket buffers hold), then
/// reads the answer; what went wrong, if anything.
async fn send_big_then_read(addr: SocketAddr) -> Result<Vec<u8>, std::io::Error> {
    let mut tcp = TcpStream::connect(addr).await?;
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..32 {
        tcp.write_all(&chunk).await?;
    }
    let mut got = Vec::new();
    tcp.read_to_end(&mut got).await?;
    Ok(got)
}

#[tokio::test]
async fn a_client_still_sending_gets_the_response_instead_of_a_reset() {
    // Control: closing with unread bytes resets the connection mid-send.
    let plain = refusing_server(false).await;
    let err = send_big_then_read(plain)
        .await
        .expect_err("a plain close resets the sender");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
        "{err}"
    );

    let lingering = refusing_server(true).await;
    let got = send_big_then_read(lingering)
        .await
        .expect("the whole request is taken and the response read");
    assert_eq!(got, RESPONSE);
}

#[tokio::test]
async fn end_of_stream_is_noticed_so_nothing_is_drained() {
    let (mut client, server) = tokio::io::duplex(1024);
    let mut io = Linger::new(server);
    client.write_all(b"bye").await.expect("write");
    client.shutdown().await.expect("shutdown");
    let mut got = Vec::new();
    io.read_to_end(&mut got).await.expect("read");
    assert_eq!(got, b"bye");
    assert!(io.eof);
    // An empty read buffer is not an end of stream.
    let mut fresh = Linger::new(tokio::io::duplex(16).1);
    let mut none = [0u8; 0];
    let n = fresh.read(&mut none).await.expect("read nothing");
    assert_eq!(n, 0);
    assert!(!fresh.eof);
}

#[tokio::test(start_paused = true)]
async fn draining_stops_when_the_client_goes_quiet_or_time_is_up() {
    // Quiet: nothing arrives for LINGER_QUIET.
    let (client, server) = tokio::io::duplex(1024);
    let started = tokio::time::Instant::now();
    assert_eq!(drain(server).await, 0);
    assert_eq!(started.elapsed(), LINGER_QUIET);
    drop(client);

    // Chatty: a byte every second keeps it going until LINGER_FOR.
    let (mut client, server) = tokio::io::duplex(1024);
    let chatter = tokio::spawn(async move {
        while client.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let started = tokio::time::Instant::now();
    let discarded = drain(server).await;
    assert!(started.elapsed() <= LINGER_FOR + Duration::from_secs(1));
    assert!(started.elapsed() >= LINGER_FOR - Duration::from_secs(1));
    assert!((9..=11).contains(&discarded), "{discarded}");
    chatter.abort();
}

/// A stream whose reads fail with `read_err` and whose shutdown fails with
/// `shutdown_err`; counts the reads.
struct Broken {
    read_err: io::ErrorKind,
    shutdown_err: io::ErrorKind,
    reads: usize,
}

impl AsyncRead for Broken {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.reads += 1;
        Poll::Ready(Err(self.read_err.into()))
    }
}

impl AsyncWrite for Broken {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Err(self.shutdown_err.into()))
    }
}

#[tokio::test]
async fn a_failed_read_means_nothing_is_left_to_drain() {
    for kind in [
        io::ErrorKind::ConnectionReset,
        io::ErrorKind::UnexpectedEof,
        io::ErrorKind::InvalidData,
    ] {
        let mut io = Linger::new(Broken {
            read_err: kind,
            shutdown_err: io::ErrorKind::NotConnected,
            reads: 0,
        });
        let mut buf = [0u8; 16];
        let err = io.read(&mut buf).await.expect_err("the read fails");
        assert_eq!(err.kind(), kind);
        assert!(io.eof, "{kind:?} is the end of what the client sends");
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_gone_before_the_shutdown_is_not_read_from() {
    let started = tokio::time::Instant::now();
    let mut gone = Broken {
        read_err: io::ErrorKind::ConnectionReset,
        shutdown_err: io::ErrorKind::NotConnected,
        reads: 0,
    };
    assert_eq!(drain(&mut gone).await, 0);
    assert_eq!(gone.reads, 0, "no read after ENOTCONN");
    assert_eq!(started.elapsed(), Duration::ZERO);
    // Another shutdown error still drains (here, the read fails at once).
    let mut other = Broken {
        read_err: io::ErrorKind::ConnectionReset,
        shutdown_err: io::ErrorKind::BrokenPipe,
        reads: 0,
    };
    assert_eq!(drain(&mut other).await, 0);
    assert_eq!(other.reads, 1);
}

/// A stream whose shutdown never completes: what a TLS stream's close_notify does to a
/// client that stopped reading with the socket's buffer full.
struct StuckShutdown;

impl tokio::io::AsyncRead for StuckShutdown {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

impl tokio::io::AsyncWrite for StuckShutdown {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Pending
    }
}

/// The shutdown is bounded by LINGER_FOR too: a client that stops reading cannot hold a
/// closed connection (session 47's review: `drain` awaited it without a bound).
#[tokio::test(start_paused = true)]
async fn a_shutdown_that_never_completes_is_given_up_on() {
    let started = tokio::time::Instant::now();
    let drained = tokio::time::timeout(LINGER_FOR * 3, drain(StuckShutdown))
        .await
        .expect("drain returned");
    assert_eq!(drained, 0);
    assert!(started.elapsed() <= LINGER_FOR + Duration::from_millis(10));
}
