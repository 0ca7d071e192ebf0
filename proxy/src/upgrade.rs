//! Protocol upgrades (WebSocket): once the pipeline allowed the request and the
//! upstream answered 101, both sides are spliced byte for byte. The exchange is
//! audited once, when the upgraded connection ends, with the bytes moved.
//!
//! [`SplicedRecord`] is also the passthrough splice (sni-only): it counts bytes
//! as they flow, so the counts survive a connection that ends with an error,
//! and adds them to the process's splice counters ([`crate::traffic`]) from
//! the same reads, so the metrics and the records agree.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Response;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::audit::AuditRecord;
use crate::body::{self, Body};
use crate::exchange::AuditGuard;
use crate::ops::signals::DrainGuard;
use crate::revoke::Recheck;
use crate::traffic::{SpliceKind, TRAFFIC};

/// Answers the client's upgrade with the upstream's 101 and splices the two
/// upgraded connections in a background task that owns the audit record. The
/// task counts as in flight for graceful shutdown (`drain`).
///
/// `answer` is the 101 to send the client: the upstream's, after the
/// response phase saw its head (see [`take_upgrade`]).
pub fn splice(
    answer: Response<Body>,
    upstream_up: OnUpgrade,
    client: OnUpgrade,
    mut guard: AuditGuard,
    drain: DrainGuard,
    recheck: Recheck,
) -> Response<Body> {
    if let Some(r) = guard.record_mut() {
        r.status_code = 101;
    }
    tokio::spawn(async move {
        let mut spliced = SplicedRecord::new(guard, drain, SpliceKind::WebSocket);
        let (c, u) = match tokio::join!(client, upstream_up) {
            (Ok(c), Ok(u)) => (c, u),
            (c, u) => {
                if let Some(r) = spliced.guard.record_mut() {
                    let err = c
                        .err()
                        .or(u.err())
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    r.error = Some(format!("upgrade failed: {err}"));
                }
                spliced.done = true;
                return;
            }
        };
        spliced.run(TokioIo::new(c), TokioIo::new(u), recheck).await;
    });
    answer
}

/// Splits the upstream's 101 into its upgraded connection (to come) and the
/// head, with an empty body, for the response phase to see before the
/// splice: a transform's response hook (the redaction of a reflected
/// credential, a `grpc` policy) applies to the handshake's answer too.
pub fn take_upgrade<B>(mut upstream: Response<B>) -> (Response<Body>, OnUpgrade) {
    let up = hyper::upgrade::on(&mut upstream);
    let (parts, _) = upstream.into_parts();
    (Response::from_parts(parts, body::empty()), up)
}

/// The audit record of a splice (a WebSocket, an sni-only passthrough) with
/// its live byte counts, held in flight for graceful shutdown. However the
/// splice ends, the record gets the bytes moved so far: when both sides
/// close, on an error, and when shutdown's grace period ends and the splice
/// is dropped mid-way, which the record then says (`reason: shutdown`).
pub struct SplicedRecord {
    guard: AuditGuard,
    sent: Arc<AtomicU64>,
    received: Arc<AtomicU64>,
    kind: SpliceKind,
    /// The splice ended on its own (or never started): not cut by shutdown.
    done: bool,
    _drain: DrainGuard,
}

impl SplicedRecord {
    /// Takes over `guard`; `kind` names the splice in an `error` and picks
    /// the process-wide counters its bytes are added to.
    pub fn new(guard: AuditGuard, drain: DrainGuard, kind: SpliceKind) -> Self {
        SplicedRecord {
            guard,
            sent: Arc::new(AtomicU64::new(0)),
            received: Arc::new(AtomicU64::new(0)),
            kind,
            done: false,
            _drain: drain,
        }
    }

    /// Splices `client` and `upstream` until both directions end, or until
    /// a reload refuses what `recheck` watches (the host, the upstream's
    /// address, the client's): both connections are then closed and the
    /// record says `revoked`.
    pub async fn run<C, U>(mut self, client: C, upstream: U, recheck: Recheck)
    where
        C: AsyncRead + AsyncWrite + Unpin,
        U: AsyncRead + AsyncWrite + Unpin,
    {
        let splice = splice_into(
            Counted::new(client, self.sent.clone())
                .also_into(TRAFFIC.spliced_counter(self.kind, true)),
            Counted::new(upstream, self.received.clone())
                .also_into(TRAFFIC.spliced_counter(self.kind, false)),
        );
        let what = self.kind.what();
        tokio::select! {
            outcome = splice => {
                if let Some(r) = self.guard.record_mut() {
                    outcome.record(r, what);
                }
            }
            revoked = recheck.revoked() => {
                tracing::info!(
                    target = %revoked.target,
                    splice = what,
                    refused_by = revoked.refused_by(),
                    "closed: a reload's policy no longer allows it"
                );
                if let Some(r) = self.guard.record_mut() {
                    revoked.record(r, what);
                }
            }
        }
        self.done = true;
    }
}

impl Drop for SplicedRecord {
    fn drop(&mut self) {
        let sent = self.sent.load(Ordering::Relaxed);
        let received = self.received.load(Ordering::Relaxed);
        let cut = !self.done && self.guard.is_abandoning();
        if let Some(r) = self.guard.record_mut() {
            r.bytes_sent.get_or_insert(sent);
            r.bytes_received.get_or_insert(received);
            if cut {
                let status = r.status_code;
                r.fail(
                    "shutdown",
                    format!(
                        "iron-proxy shut down during the {} (its grace period ended)",
                        self.kind.what()
                    ),
                    status,
                );
            }
        }
    }
}

/// What a splice moved, and how it ended.
#[derive(Debug)]
pub struct SpliceOutcome {
    /// Bytes read from the client and sent upstream.
    pub sent: u64,
    /// Bytes read from the upstream and sent to the client.
    pub received: u64,
    /// Why it ended, if not by an orderly close from both sides.
    pub error: Option<io::Error>,
}

impl SpliceOutcome {
    /// Writes the byte counts, and the error if any, into an audit record.
    pub fn record(&self, rec: &mut AuditRecord, what: &str) {
        rec.bytes_sent = Some(self.sent);
        rec.bytes_received = Some(self.received);
        if let Some(e) = &self.error {
            rec.error = Some(format!("{what}: {e}"));
        }
    }
}

/// Copies both ways between `client` and `upstream` until both directions end,
/// counting bytes as they flow. A peer that closes without TLS close_notify
/// (common: many clients just close the socket) counts as an orderly close.
pub async fn splice_counted<C, U>(client: C, upstream: U) -> SpliceOutcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    splice_into(
        Counted::new(client, Arc::new(AtomicU64::new(0))),
        Counted::new(upstream, Arc::new(AtomicU64::new(0))),
    )
    .await
}

/// [`splice_counted`] through streams whose counters the caller keeps, so
/// that the counts outlive a splice that is dropped before it ends.
async fn splice_into<C, U>(mut c: Counted<C>, mut u: Counted<U>) -> SpliceOutcome
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let error = match tokio::io::copy_bidirectional(&mut c, &mut u).await {
        Ok(_) => None,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => None,
        Err(e) => Some(e),
    };
    SpliceOutcome {
        sent: c.count.load(Ordering::Relaxed),
        received: u.count.load(Ordering::Relaxed),
        error,
    }
}

/// A stream that counts the bytes read from it: in its own counter (the
/// audit record's), and in a process-wide one if given (the metrics').
struct Counted<S> {
    inner: S,
    count: Arc<AtomicU64>,
    also: Option<&'static AtomicU64>,
}

impl<S> Counted<S> {
    fn new(inner: S, count: Arc<AtomicU64>) -> Self {
        Counted {
            inner,
            count,
            also: None,
        }
    }

    /// Adds every count to `total` as well.
    fn also_into(self, total: &'static AtomicU64) -> Self {
        Counted {
            also: Some(total),
            ..self
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before) as u64;
        if n > 0 {
            self.count.fetch_add(n, Ordering::Relaxed);
            if let Some(total) = self.also {
                total.fetch_add(n, Ordering::Relaxed);
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_survive_an_error_and_unexpected_eof_is_an_orderly_close() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let task = tokio::spawn(splice_counted(client, upstream));
        client_peer.write_all(b"hello").await.expect("write");
        let mut got = [0u8; 5];
        upstream_peer.read_exact(&mut got).await.expect("read");
        upstream_peer.write_all(b"hi").await.expect("write");
        let mut got = [0u8; 2];
        client_peer.read_exact(&mut got).await.expect("read");
        drop(client_peer);
        drop(upstream_peer);
        let out = task.await.expect("splice task");
        assert_eq!((out.sent, out.received), (5, 2));
        assert!(out.error.is_none(), "{:?}", out.error);
    }

    #[tokio::test]
    async fn a_read_error_is_reported_with_the_counts_so_far() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let upstream = tokio_test_io_error();
        let task = tokio::spawn(splice_counted(client, upstream));
        client_peer.write_all(b"abc").await.expect("write");
        let out = task.await.expect("splice task");
        assert!(out.error.is_some());
        let mut rec = AuditRecord::new(crate::audit::Mode::Https, "127.0.0.1:1".into());
        out.record(&mut rec, "spliced");
        assert!(rec
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("spliced: ")));
        assert!(rec.bytes_sent.is_some() && rec.bytes_received == Some(0));
    }

    /// A stream whose every read fails with a reset and whose writes vanish.
    fn tokio_test_io_error() -> impl AsyncRead + AsyncWrite + Unpin {
        struct Broken;
        impl AsyncRead for Broken {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
            }
        }
        impl AsyncWrite for Broken {
            fn poll_write(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                b: &[u8],
            ) -> Poll<io::Result<usize>> {
                Poll::Ready(Ok(b.len()))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        Broken
    }
}
