//! A bound on the HTTP/2 streams a client cancels after the proxy took them
//! on: "Rapid Reset" (CVE-2023-44487) applied after acceptance.
//!
//! A client that opens a stream, lets the proxy start on it (the pipeline,
//! the upstream request, the audit record) and then resets it frees its
//! stream slot at once, while the proxy's work was done for nothing. Repeated,
//! it costs the proxy (and the upstream, which sees each request cut) an
//! exchange per stream at whatever rate the client can write frames:
//! `SETTINGS_MAX_CONCURRENT_STREAMS` bounds streams open at once, not streams
//! opened and thrown away. h2's own bound (`max_pending_accept_reset_streams`)
//! counts only streams reset before the server accepted them, and
//! `max_local_error_reset_streams` only the resets h2 itself sends.
//!
//! Here each connection's service wraps the exchanges of its HTTP/2 requests
//! ([`Cancels::track`]); an exchange dropped before it chose a response,
//! while the connection is still served, was cancelled by its client (hyper
//! drops it when the stream is reset, by the client or by h2 for the client's
//! protocol error). Cancellations within [`PREMATURE`] of the stream's start
//! draw on a bucket of [`BURST`] refilled at [`PER_SECOND`] a second; one
//! beyond it shuts the connection down ([`watch`]): GOAWAY through hyper's
//! graceful shutdown, then closed outright [`GRACE`] later, or at once if
//! the client cancels [`super::H2_MAX_CONCURRENT_STREAMS`] more streams
//! meanwhile (h2 keeps accepting streams until the client answers the
//! GOAWAY's PING). The connection is counted ([`closed_connections`], the
//! metric `iron_proxy_http2_rapid_reset_closes_total`) and a warning names
//! the client, at most once a minute.
//!
//! Every cancelled exchange still writes its one record (the exchange's
//! `Pending` record, `client_closed` or `client_body_error`): this module
//! only counts.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper_util::server::graceful::GracefulConnection;
use tokio::time::Instant;

use super::idle;
use super::H2_MAX_CONCURRENT_STREAMS;
use crate::ops::warn_every::WarnEvery;

/// A stream cancelled within this long of its start counts against the
/// bound; one the client kept longer does not (a download or event stream
/// given up on, a call past its deadline). Envoy's
/// `premature_reset_min_stream_lifetime_seconds` default, for the same
/// reason: a client that holds each stream this long can cancel at most
/// [`H2_MAX_CONCURRENT_STREAMS`] a second anyway.
pub const PREMATURE: Duration = Duration::from_secs(1);

/// How many early cancellations a connection may make at once: every
/// stream it may have open, twice over (a browser leaving a page cancels
/// all of its requests in flight; doing so twice in a row is still normal).
/// nginx stops a connection at twice its stream limit of new streams per
/// read, Envoy at 250 early resets (half of 500 streams).
pub const BURST: u32 = 2 * H2_MAX_CONCURRENT_STREAMS;

/// How many early cancellations a second a connection may keep up beyond
/// [`BURST`]: as many as a client that holds each of its streams for
/// [`PREMATURE`] before cancelling it could make, so that cancelling early
/// gets a client no more work out of the proxy than cancelling late.
/// (Node's default is 33 a second with a burst of 1,000.)
pub const PER_SECOND: u32 = H2_MAX_CONCURRENT_STREAMS;

/// How long a connection over the bound has after its GOAWAY before it is
/// closed outright, whatever its streams are doing: Go's server closes a
/// connection 1 s after a GOAWAY for an error.
pub const GRACE: Duration = Duration::from_secs(1);

/// Client connections shut down for cancelling too many streams, since start.
static CLOSED: AtomicU64 = AtomicU64::new(0);

/// The warning about such a connection, at most once a minute.
static WARNING: WarnEvery = WarnEvery::new(Duration::from_secs(60));

/// How many client connections were shut down for cancelling too many
/// streams (`iron_proxy_http2_rapid_reset_closes_total`).
pub fn closed_connections() -> u64 {
    CLOSED.load(Ordering::Relaxed)
}

/// What a connection's cancellations call for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Verdict {
    /// Within the bound.
    #[default]
    Serve,
    /// Over it: GOAWAY, closed after [`GRACE`].
    GoAway,
    /// Still cancelling after the GOAWAY: closed now.
    Close,
}

/// A token bucket of [`BURST`] refilled at [`PER_SECOND`], as a virtual
/// scheduling time (GCRA): each cancellation moves `due` on by one
/// interval; one that would put it more than [`BURST`] intervals ahead of
/// now is over the bound.
#[derive(Debug, Default)]
struct Bucket {
    due: Option<Instant>,
}

impl Bucket {
    /// One interval: a second over [`PER_SECOND`].
    const INTERVAL: Duration = Duration::from_micros(1_000_000 / PER_SECOND as u64);

    /// Takes one cancellation at `now`; false when it is beyond the bound.
    fn take(&mut self, now: Instant) -> bool {
        let due = self.due.map_or(now, |d| d.max(now)) + Self::INTERVAL;
        if due.saturating_duration_since(now) > Self::INTERVAL * BURST {
            return false;
        }
        self.due = Some(due);
        true
    }
}

/// A connection's count, behind [`Cancels`]' lock.
#[derive(Debug, Default)]
struct Counts {
    bucket: Bucket,
    verdict: Verdict,
    /// Early cancellations since the GOAWAY.
    after: u32,
    /// The connection is no longer served: streams dropped now went with it.
    ended: bool,
    /// The connection's task, woken when the verdict changes.
    waker: Option<Waker>,
}

impl Counts {
    /// Counts a stream cancelled at `now`, `age` after its start; returns
    /// the waker to wake when the verdict changed.
    fn cancelled(&mut self, now: Instant, age: Duration) -> Option<Waker> {
        if self.ended || age >= PREMATURE {
            return None;
        }
        let next = match self.verdict {
            Verdict::Serve if self.bucket.take(now) => return None,
            Verdict::Serve => Verdict::GoAway,
            Verdict::GoAway => {
                self.after += 1;
                if self.after <= H2_MAX_CONCURRENT_STREAMS {
                    return None;
                }
                Verdict::Close
            }
            Verdict::Close => return None,
        };
        self.verdict = next;
        self.waker.clone()
    }
}

/// One client connection's cancelled HTTP/2 streams, shared by its service
/// (which counts them) and the connection's future (which acts).
#[derive(Clone)]
pub struct Cancels(Arc<Shared>);

struct Shared {
    /// The client, for the warning.
    client: SocketAddr,
    counts: Mutex<Counts>,
}

impl Cancels {
    /// The count of a connection from `client`.
    pub fn new(client: SocketAddr) -> Self {
        Cancels(Arc::new(Shared {
            client,
            counts: Mutex::new(Counts::default()),
        }))
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic mid-count leaves the counts usable: keep counting.
        self.0.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `exchange`, counted as cancelled if it is dropped before it is done,
    /// when it serves an HTTP/2 request (an HTTP/1 request is dropped only
    /// with its connection). Called when hyper hands the request over, so
    /// that the stream's age counts from then.
    pub fn track<F>(&self, version: http::Version, exchange: F) -> Tracked<F> {
        track(Some(self), version, exchange)
    }

    /// The count for a connection from `client` whose first bytes are
    /// `first`: only an HTTP/2 connection (the preface, which is what hyper
    /// goes by too) has one, so that an HTTP/1 connection carries no more
    /// than a null pointer for it.
    pub fn for_connection(client: SocketAddr, first: &[u8]) -> Option<Self> {
        first
            .starts_with(super::H2_PREFACE)
            .then(|| Cancels::new(client))
    }

    fn cancelled(&self, opened: Instant) {
        let now = Instant::now();
        let waker = self
            .counts()
            .cancelled(now, now.saturating_duration_since(opened));
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// The verdict, with `waker` kept to be woken when it changes.
    fn verdict(&self, waker: &Waker) -> Verdict {
        let mut c = self.counts();
        if !c.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            c.waker = Some(waker.clone());
        }
        c.verdict
    }

    /// The connection is no longer served: its streams are dropped with it,
    /// not cancelled by the client.
    fn end(&self) {
        let mut c = self.counts();
        c.ended = true;
        c.waker = None;
    }
}

/// `exchange`, counted in `cancels` if there is one ([`Cancels::track`]).
pub fn track<F>(cancels: Option<&Cancels>, version: http::Version, exchange: F) -> Tracked<F> {
    let ticket = cancels
        .filter(|_| version == http::Version::HTTP_2)
        .map(|c| Ticket {
            cancels: c.clone(),
            opened: Instant::now(),
        });
    Tracked { exchange, ticket }
}

/// An exchange's stream, counted once.
struct Ticket {
    cancels: Cancels,
    opened: Instant,
}

pin_project_lite::pin_project! {
    /// An exchange counted by [`Cancels::track`].
    pub struct Tracked<F> {
        #[pin]
        exchange: F,
        // Taken when the exchange is done; still here when it is dropped
        // unfinished.
        ticket: Option<Ticket>,
    }

    impl<F> PinnedDrop for Tracked<F> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(t) = this.project().ticket.take() {
                t.cancels.cancelled(t.opened);
            }
        }
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.exchange.poll(cx));
        this.ticket.take();
        Poll::Ready(out)
    }
}

/// Serves `conn` (whose service counts its exchanges in `cancels`) to its
/// end, shut down when its client cancels too many streams; without a
/// count (an HTTP/1 connection), only serves it.
pub fn watch<C: GracefulConnection>(
    conn: idle::Bounded<C>,
    cancels: Option<Cancels>,
) -> Watched<C> {
    Watched {
        conn,
        cancels,
        deadline: None,
    }
}

pin_project_lite::pin_project! {
    /// A connection served under [`watch`].
    pub struct Watched<C> {
        #[pin]
        conn: idle::Bounded<C>,
        cancels: Option<Cancels>,
        // Set at the GOAWAY: when the connection is closed outright. Boxed:
        // a connection that never gets there carries a pointer, not a timer.
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    }

    impl<C> PinnedDrop for Watched<C> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(c) = this.project().cancels {
                c.end();
            }
        }
    }
}

impl<C: GracefulConnection> Future for Watched<C> {
    type Output = Result<(), C::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let ended = this.conn.as_mut().poll(cx);
        let Some(cancels) = this.cancels.as_ref() else {
            return ended;
        };
        if ended.is_ready() {
            cancels.end();
            return ended;
        }
        let verdict = cancels.verdict(cx.waker());
        if verdict == Verdict::Serve {
            return Poll::Pending;
        }
        if this.deadline.is_none() {
            CLOSED.fetch_add(1, Ordering::Relaxed);
            warn(cancels.0.client);
            *this.deadline = Some(Box::pin(tokio::time::sleep(GRACE)));
            this.conn.as_mut().graceful_shutdown();
            // The GOAWAY has to go out: drive the connection now.
            if let Poll::Ready(ended) = this.conn.as_mut().poll(cx) {
                cancels.end();
                return Poll::Ready(ended);
            }
        }
        let due = this
            .deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready());
        if verdict == Verdict::Close || due {
            // Closed outright: the exchanges still running are dropped
            // (each writes its record) and the socket closes.
            tracing::debug!(
                client = %cancels.0.client,
                "closing the HTTP/2 connection of a client that cancelled too many streams"
            );
            cancels.end();
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

/// The warning about `client`'s connection, unless one went out within the minute.
fn warn(client: SocketAddr) {
    if let Some(held_back) = WARNING.due(std::time::Instant::now()) {
        tracing::warn!(
            client = %client,
            burst = BURST,
            per_second = PER_SECOND,
            held_back,
            "HTTP/2 client cancelled more streams the proxy had started than allowed \
             (Rapid Reset); sent GOAWAY, closing its connection"
        );
    }
}

#[cfg(test)]
mod tests;
