//! What an accept loop does when `accept(2)` fails.
//!
//! At the file-descriptor ceiling (`EMFILE`/`ENFILE`) every accept fails
//! until some connection closes. Each loop (one per listener and worker)
//! pauses [`ACCEPT_RETRY`] and tries again, so it neither spins nor gives up;
//! it warns at the first failure of a run of them and then at most every
//! [`WARN_EVERY`] with the number of failures since, and says when accepting
//! works again. Without that, a workload holding the proxy at its ceiling
//! turned it into a log flood (a warning per loop every 50 ms).

use std::time::Duration;

use tokio::time::Instant;

/// How long a loop waits after a failed accept before trying again.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// At most one warning per loop in this period while accepts keep failing.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// The failures of one accept loop.
#[derive(Debug)]
pub struct AcceptErrors {
    listener: &'static str,
    /// Failures since the last successful accept.
    streak: u64,
    /// Failures not warned about since the last warning.
    unreported: u64,
    last_warn: Option<Instant>,
}

impl AcceptErrors {
    /// The failures of the accept loop of `listener` (its name in logs).
    pub fn new(listener: &'static str) -> Self {
        AcceptErrors {
            listener,
            streak: 0,
            unreported: 0,
            last_warn: None,
        }
    }

    /// The next connection of `listener`. A failed accept is counted,
    /// warned about when due and retried after [`ACCEPT_RETRY`].
    /// Cancel-safe: nothing is lost when the future is dropped.
    pub async fn accept(
        &mut self,
        listener: &tokio::net::TcpListener,
    ) -> (tokio::net::TcpStream, std::net::SocketAddr) {
        loop {
            match listener.accept().await {
                Ok(accepted) => {
                    self.accepted();
                    return accepted;
                }
                Err(e) => self.failed(&e).await,
            }
        }
    }

    /// An accept succeeded: ends a run of failures (logging that it ended).
    fn accepted(&mut self) {
        if self.streak > 0 {
            tracing::info!(
                listener = self.listener,
                failures = self.streak,
                "accepting connections again"
            );
            self.streak = 0;
            self.unreported = 0;
            self.last_warn = None;
        }
    }

    /// An accept failed: warns when due, then waits [`ACCEPT_RETRY`].
    async fn failed(&mut self, error: &std::io::Error) {
        if let Some(since_last) = self.note(Instant::now()) {
            tracing::warn!(
                listener = self.listener,
                %error,
                failures_since_last_warning = since_last,
                "accept failed on {} listener; retrying every {ACCEPT_RETRY:?}",
                self.listener
            );
        }
        tokio::time::sleep(ACCEPT_RETRY).await;
    }

    /// Counts a failure at `now`; `Some(failures not yet reported)` when a
    /// warning is due.
    fn note(&mut self, now: Instant) -> Option<u64> {
        self.streak += 1;
        self.unreported += 1;
        let due = self
            .last_warn
            .is_none_or(|at| now.duration_since(at) >= WARN_EVERY);
        if !due {
            return None;
        }
        self.last_warn = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_period_while_accepts_keep_failing() {
        let mut e = AcceptErrors::new("http");
        let t0 = Instant::now();
        assert_eq!(e.note(t0), Some(1), "the first failure is reported");
        let mut warned = Vec::new();
        // A minute of failures every 50 ms.
        for i in 1..=1200u32 {
            if let Some(n) = e.note(t0 + ACCEPT_RETRY * i) {
                warned.push(n);
            }
        }
        assert_eq!(warned.len(), 6, "{warned:?}");
        assert_eq!(
            warned.iter().sum::<u64>(),
            1200,
            "every failure is counted once"
        );
        // Success ends the run; the next failure is reported at once.
        e.accepted();
        assert_eq!(e.streak, 0);
        assert_eq!(e.note(t0 + ACCEPT_RETRY * 1201), Some(1));
    }
}
