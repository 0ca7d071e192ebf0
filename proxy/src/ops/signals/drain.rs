//! Stop accepting, then wait (boundedly) for in-flight work.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;

/// Shared by every listener: accept loops stop when [`Drain::stopping`]
/// resolves, and each connection holds a [`DrainGuard`] (or runs in
/// [`Drain::spawn`]) so [`Drain::drain`] knows when they are done.
#[derive(Clone, Default)]
pub struct Drain {
    stop: CancellationToken,
    tracker: TaskTracker,
    /// Cancelled once the drain is over ([`Drain::finish`]).
    done: CancellationToken,
}

/// One unit of in-flight work; the drain waits until every guard is dropped.
pub struct DrainGuard(#[allow(dead_code)] TaskTrackerToken);

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every in-flight request finished.
    Drained,
    /// The grace period ran out with this many still in flight.
    TimedOut {
        /// Requests or connections still running.
        in_flight: usize,
    },
}

impl Drain {
    /// A drain with nothing in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resolves once shutdown has begun; accept loops select on it.
    pub fn stopping(&self) -> impl Future<Output = ()> + Send + 'static {
        self.stop.clone().cancelled_owned()
    }

    /// Resolves once the drain is over, in-flight work done or cut
    /// ([`Drain::finish`]): the metrics endpoint serves until then, so that
    /// `/readyz` answers 503 (not a refused connection) and `/metrics` shows
    /// the drain while it lasts.
    pub fn finished(&self) -> impl Future<Output = ()> + Send + 'static {
        self.done.clone().cancelled_owned()
    }

    /// Marks the drain over (wakes every [`Drain::finished`]).
    pub fn finish(&self) {
        self.done.cancel();
    }

    /// True once shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Marks one request or connection in flight until the guard drops.
    pub fn guard(&self) -> DrainGuard {
        DrainGuard(self.tracker.token())
    }

    /// Spawns a task the drain waits for.
    pub fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(fut)
    }

    /// Requests and connections in flight.
    pub fn in_flight(&self) -> usize {
        self.tracker.len()
    }

    /// Begins shutdown (wakes every [`Drain::stopping`]) and waits up to
    /// `grace` for the work in flight to finish.
    pub async fn drain(&self, grace: Duration) -> DrainOutcome {
        self.stop.cancel();
        self.tracker.close();
        tracing::info!(in_flight = self.in_flight(), "draining");
        match tokio::time::timeout(grace, self.tracker.wait()).await {
            Ok(()) => DrainOutcome::Drained,
            Err(_) => DrainOutcome::TimedOut {
                in_flight: self.in_flight(),
            },
        }
    }
}
