//! The response-header timer behind `proxy.upstream_response_header_timeout`.
//!
//! It counts the time an exchange waits on the upstream: to connect, and,
//! once the whole request body has been handed to the connection, to begin
//! its response (Envoy and nginx start their header timers there too). The
//! upload in between is not timed as a whole, so a slow upload is never cut
//! off, however long it takes. Only a wait in which nothing moves is: an
//! upstream that takes none of the body for the timeout (it stopped reading;
//! [`UpstreamError::Stalled`], a 504 like the header timeout), or a client
//! that sends none of it for the timeout ([`UpstreamError::ClientIdle`],
//! 408). Before this timer excluded the upload, both were cut off by the
//! header timeout anyway; with the same limit per wait, nothing that
//! finished before is cut off now, and nothing can hang forever either.
//! An upstream that answers before the upload ends (a 413, a 401) is
//! answered at once.
//!
//! A request without a body to send (a GET, the common case) is timed from
//! the start in one span, as a plain `timeout_at`, with no allocation; a
//! request with one has its body wrapped ([`Watched`]) to report progress,
//! and to count the body bytes handed to the upstream connection
//! ([`crate::traffic`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::time::Instant;

use super::UpstreamError;
use crate::body::{Body, BoxError};

/// Times one exchange's wait on its upstream for the response head.
pub(crate) struct HeadTimer {
    timeout: Duration,
    started: Instant,
    /// Shared with the request body while it is still to be sent.
    upload: Option<Arc<Upload>>,
}

impl HeadTimer {
    /// Starts timing `req`; a body still to be sent is wrapped to report
    /// how its upload goes.
    /// When the request started (read once, in [`HeadTimer::start`]).
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    pub(crate) fn start(req: Request<Body>, timeout: Duration) -> (Request<Body>, Self) {
        let started = Instant::now();
        if req.body().is_end_stream() {
            let timer = HeadTimer {
                timeout,
                started,
                upload: None,
            };
            return (req, timer);
        }
        let upload = Arc::new(Upload::new(started));
        let watched = upload.clone();
        let req = req.map(|inner| {
            Watched {
                inner,
                upload: watched,
            }
            .boxed()
        });
        let timer = HeadTimer {
            timeout,
            started,
            upload: Some(upload),
        };
        (req, timer)
    }

    /// Drives `step` (a dial, or the exchange up to its response head) until
    /// it finishes, or fails it once one side (the upstream, or the client
    /// mid-upload) has kept it waiting for the timeout.
    pub(crate) async fn run<F: Future>(&self, step: F) -> Result<F::Output, UpstreamError> {
        let Some(upload) = &self.upload else {
            return tokio::time::timeout_at(self.started + self.timeout, step)
                .await
                .map_err(|_| UpstreamError::Timeout(self.timeout));
        };
        let mut step = std::pin::pin!(step);
        loop {
            // The body reports progress without waking this task: on expiry,
            // look again whether anything moved meanwhile.
            let (_, since) = upload.state();
            if let Ok(out) = tokio::time::timeout_at(since + self.timeout, step.as_mut()).await {
                return Ok(out);
            }
            let (phase, since) = upload.state();
            if since + self.timeout > Instant::now() {
                continue;
            }
            return Err(match phase {
                Phase::Connect | Phase::Sent => UpstreamError::Timeout(self.timeout),
                Phase::Body => UpstreamError::Stalled(self.timeout),
                Phase::Client => UpstreamError::ClientIdle(self.timeout),
            });
        }
    }
}

/// Whom an exchange with a body to send is waiting on, and since when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// The upstream: the body has not been asked for yet (connecting,
    /// sending the head).
    Connect = 0,
    /// The client: the connection asked for more body and there is none yet.
    Client = 1,
    /// The upstream: it has the latest piece of the body and has not asked
    /// for the next.
    Body = 2,
    /// The upstream: the whole body is handed over; its response is awaited.
    Sent = 3,
}

/// The progress of one upload, shared by the body and the timer. One word:
/// the phase in the top two bits, the time it began in the rest
/// (nanoseconds after `base`, enough for 146 years).
struct Upload {
    base: Instant,
    state: AtomicU64,
}

const SINCE_BITS: u32 = 62;
const SINCE_MASK: u64 = (1 << SINCE_BITS) - 1;

impl Upload {
    fn new(base: Instant) -> Self {
        Upload {
            base,
            state: AtomicU64::new((Phase::Connect as u64) << SINCE_BITS),
        }
    }

    fn set(&self, phase: Phase) {
        // A wait on the client that goes on (another poll, the client still
        // silent) keeps its start.
        if phase == Phase::Client && self.state().0 == Phase::Client {
            return;
        }
        let since = (self.base.elapsed().as_nanos() as u64).min(SINCE_MASK);
        self.state
            .store(((phase as u64) << SINCE_BITS) | since, Ordering::Relaxed);
    }

    fn state(&self) -> (Phase, Instant) {
        let word = self.state.load(Ordering::Relaxed);
        let phase = match word >> SINCE_BITS {
            0 => Phase::Connect,
            1 => Phase::Client,
            2 => Phase::Body,
            _ => Phase::Sent,
        };
        (phase, self.base + Duration::from_nanos(word & SINCE_MASK))
    }
}

/// A request body that reports to its [`Upload`] who is being waited on.
struct Watched {
    inner: Body,
    upload: Arc<Upload>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            // Handed to the upstream connection (a request sent again on a
            // new connection went unsent first: never counted twice).
            if let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) {
                crate::traffic::TRAFFIC.request_body_sent(data.len() as u64);
            }
        }
        let phase = match &polled {
            Poll::Pending => Phase::Client,
            // hyper stops asking once the body says it has ended.
            Poll::Ready(Some(Ok(_))) if !self.inner.is_end_stream() => Phase::Body,
            // The end, or an error that ends the exchange anyway.
            Poll::Ready(_) => Phase::Sent,
        };
        self.upload.set(phase);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Watched {
    /// A connection that drops the body unfinished (after an early answer,
    /// or on an error) sends no more of it: from here on only the response
    /// is awaited, so the clock must run even if the client was the one
    /// awaited last.
    fn drop(&mut self) {
        if matches!(self.upload.state().0, Phase::Client | Phase::Body) {
            self.upload.set(Phase::Sent);
        }
    }
}

#[cfg(test)]
mod tests;
