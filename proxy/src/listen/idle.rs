//! Client connections that carry no requests are closed. hyper bounds an
//! HTTP/1 connection's wait for a request head (`header_read_timeout`, also
//! the keep-alive idle time), but an HTTP/2 connection that sent its preface
//! and SETTINGS and then opens no stream, answering PINGs, was held forever:
//! a workload could take every descriptor the proxy has, on the proxy's
//! listeners and on the metrics and management endpoints alike. Here each
//! served connection counts the requests it starts, and one that starts none
//! within [`FIRST_REQUEST`] of its start, or within [`BETWEEN_REQUESTS`]
//! after that, is shut down gracefully: HTTP/2 sends GOAWAY and lets the
//! streams in flight finish (a long event stream goes on; new requests go on
//! a new connection), HTTP/1 closes once its exchange in flight is done.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::server::graceful::GracefulConnection;

/// How long a connection may take to start its first request after its
/// first bytes (the HTTP/2 preface): as long as it had for those.
pub const FIRST_REQUEST: Duration = super::FIRST_REQUEST_TIMEOUT;
/// How long a connection may go without starting a request: as long as an
/// HTTP/1 keep-alive connection may sit idle ([`super::HEADER_READ_TIMEOUT`]).
pub const BETWEEN_REQUESTS: Duration = super::HEADER_READ_TIMEOUT;

/// The requests a connection has started, counted by its service.
#[derive(Clone, Default)]
pub struct Started(Arc<AtomicU64>);

impl Started {
    /// Counts one request.
    pub fn one(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Serves `conn` to its end, shut down gracefully once it has started no
/// request (counted in `started`) for the bounds above.
pub fn bounded<C: GracefulConnection>(conn: C, started: Started) -> Bounded<C> {
    bounded_by(conn, started, FIRST_REQUEST, BETWEEN_REQUESTS)
}

/// [`bounded`] with the bounds given (tests).
pub(crate) fn bounded_by<C: GracefulConnection>(
    conn: C,
    started: Started,
    first: Duration,
    between: Duration,
) -> Bounded<C> {
    Bounded {
        conn,
        timer: tokio::time::sleep(first),
        started,
        seen: 0,
        between,
        shutting_down: false,
    }
}

pin_project_lite::pin_project! {
    /// A connection served under [`bounded`]. (A future written by hand: an
    /// `async fn` generic over the connection trips the compiler's
    /// higher-ranked `Send` checks where it is spawned.)
    pub struct Bounded<C> {
        #[pin]
        conn: C,
        #[pin]
        timer: tokio::time::Sleep,
        started: Started,
        // The count when the timer was last set.
        seen: u64,
        between: Duration,
        shutting_down: bool,
    }
}

impl<C: GracefulConnection> Bounded<C> {
    /// Shuts the connection down gracefully now, for another bound than
    /// idleness (`cancels`): HTTP/2 sends GOAWAY, HTTP/1 closes after its
    /// exchange in flight.
    pub fn graceful_shutdown(self: Pin<&mut Self>) {
        let this = self.project();
        if !*this.shutting_down {
            *this.shutting_down = true;
            this.conn.graceful_shutdown();
        }
    }
}

impl<C: GracefulConnection> Future for Bounded<C> {
    type Output = Result<(), C::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(ended) = this.conn.as_mut().poll(cx) {
            return Poll::Ready(ended);
        }
        if *this.shutting_down {
            return Poll::Pending;
        }
        while this.timer.as_mut().poll(cx).is_ready() {
            let now = this.started.count();
            if now == *this.seen {
                *this.shutting_down = true;
                this.conn.as_mut().graceful_shutdown();
                // The shutdown has frames to send: drive it now.
                return this.conn.poll(cx);
            }
            *this.seen = now;
            let next = tokio::time::Instant::now() + *this.between;
            this.timer.as_mut().reset(next);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves one connection through [`bounded_by`] (200 ms, 400 ms) and
    /// returns an HTTP/2 client that has sent its preface and SETTINGS.
    async fn idle_h2_client() -> tokio::net::TcpStream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let started = Started::default();
            let counter = started.clone();
            let svc = service_fn(move |_req| {
                counter.one();
                async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(crate::body::empty()))
                }
            });
            let builder = super::super::http_builder();
            let conn = builder.serve_connection(TokioIo::new(tcp), svc);
            let _ = bounded_by(
                conn,
                started,
                Duration::from_millis(200),
                Duration::from_millis(400),
            )
            .await;
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(super::super::H2_PREFACE)
            .await
            .expect("preface");
        let settings = crate::h2_frames::frame(crate::h2_frames::SETTINGS, 0, 0, &[]);
        client.write_all(&settings).await.expect("settings");
        client
    }

    /// The frame types the server sends `client` until it sends a GOAWAY
    /// (then answered) or closes, within 10 s.
    async fn frames_until_goaway(client: &mut tokio::net::TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut kinds = Vec::new();
        let read = async {
            let mut at = 0;
            loop {
                let mut buf = [0u8; 4096];
                let n = client.read(&mut buf).await.expect("read");
                if n == 0 {
                    return;
                }
                got.extend_from_slice(&buf[..n]);
                while at + 9 <= got.len() {
                    let len = usize::from(got[at]) << 16
                        | usize::from(got[at + 1]) << 8
                        | usize::from(got[at + 2]);
                    if at + 9 + len > got.len() {
                        break;
                    }
                    kinds.push(got[at + 3]);
                    at += 9 + len;
                    if kinds.last() == Some(&7) {
                        return;
                    }
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), read)
            .await
            .expect("a GOAWAY well before 10 s");
        kinds
    }

    #[tokio::test]
    async fn an_http2_connection_that_opens_no_stream_gets_goaway() {
        let mut client = idle_h2_client().await;
        let started = std::time::Instant::now();
        let kinds = frames_until_goaway(&mut client).await;
        assert_eq!(kinds.last(), Some(&7), "frame types {kinds:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(150),
            "{:?}",
            started.elapsed()
        );
    }
}
