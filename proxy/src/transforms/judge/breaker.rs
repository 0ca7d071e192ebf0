//! A consecutive-failure circuit breaker, one per judge instance: after
//! `threshold` failures in a row it opens for `cooldown`, then admits one
//! probe; the probe's success closes it, its failure reopens it. Any success
//! resets the count. A provider's `Retry-After` holds it open for as long
//! as asked ([`Breaker::hold`]).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The breaker.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// The probe is in flight.
    HalfOpen,
}

/// Permission to call, to be settled with [`Ticket::settle`]. A ticket
/// dropped unsettled (the request went away mid-call) counts as a failure
/// when it was the probe, so the breaker never stays half-open.
#[derive(Debug)]
pub struct Ticket<'b> {
    breaker: &'b Breaker,
    probe: bool,
    settled: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    /// A ticket to call, or `None` while the breaker is open (or its probe is out).
    pub fn admit(&self) -> Option<Ticket<'_>> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let probe = match *s {
            State::Closed { .. } => false,
            State::Open { until } if Instant::now() >= until => {
                *s = State::HalfOpen;
                true
            }
            State::Open { .. } | State::HalfOpen => return None,
        };
        Some(Ticket {
            breaker: self,
            probe,
            settled: false,
        })
    }

    /// True while the breaker refuses calls (open and cooling down, or its
    /// probe out): a caller can apply its fallback without queueing first.
    pub fn is_open(&self) -> bool {
        match *self.state.lock().unwrap_or_else(|p| p.into_inner()) {
            State::Closed { .. } => false,
            State::Open { until } => Instant::now() < until,
            State::HalfOpen => true,
        }
    }

    /// Refuses calls until `until` (a provider's `Retry-After`), then admits
    /// a probe as after a cooldown. Never shortens an open period.
    pub fn hold(&self, until: Instant) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match *s {
            State::Open { until: u } if u >= until => {}
            _ => *s = State::Open { until },
        }
    }

    fn record(&self, ok: bool, probe: bool) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let open = State::Open {
            until: Instant::now() + self.cooldown,
        };
        *s = match (*s, ok) {
            (_, true) => State::Closed { failures: 0 },
            (State::HalfOpen, false) if probe => open,
            (State::Closed { failures }, false) if failures + 1 >= self.threshold => open,
            (State::Closed { failures }, false) => State::Closed {
                failures: failures + 1,
            },
            // A call admitted before the breaker opened finishing late.
            (other, false) => other,
        };
    }
}

impl Ticket<'_> {
    /// Records the call's outcome.
    pub fn settle(mut self, ok: bool) {
        self.settled = true;
        self.breaker.record(ok, self.probe);
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.settled && self.probe {
            self.breaker.record(false, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_and_probes_after_the_cooldown() {
        let b = Breaker::new(3, Duration::from_secs(10));
        b.admit().expect("closed").settle(false);
        b.admit().expect("closed").settle(false);
        b.admit().expect("closed").settle(true); // resets the count
        for _ in 0..2 {
            b.admit().expect("closed").settle(false);
        }
        assert!(b.admit().is_some(), "two in a row: still closed");
        b.admit().expect("closed").settle(false);
        assert!(b.admit().is_none(), "three in a row: open");
        assert!(b.is_open());
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(b.admit().is_none(), "still cooling down");
        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = b.admit().expect("one probe");
        assert!(b.admit().is_none(), "only one probe at a time");
        probe.settle(false);
        assert!(b.admit().is_none(), "a failed probe reopens");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!b.is_open(), "cooled down: a probe may go");
        b.admit().expect("probe").settle(true);
        assert!(b.admit().is_some() && b.admit().is_some(), "closed again");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_opens_until_its_end_then_probes() {
        let b = Breaker::new(5, Duration::from_secs(10));
        b.admit().expect("closed").settle(false);
        b.hold(Instant::now() + Duration::from_secs(30));
        assert!(b.is_open() && b.admit().is_none(), "held after one failure");
        b.hold(Instant::now() + Duration::from_secs(5));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(b.admit().is_none(), "a shorter hold does not shorten it");
        tokio::time::advance(Duration::from_secs(1)).await;
        let probe = b.admit().expect("probe after the hold");
        assert!(b.admit().is_none(), "one probe");
        probe.settle(true);
        assert!(b.admit().is_some(), "closed");
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_reopens() {
        let b = Breaker::new(1, Duration::from_secs(1));
        b.admit().expect("closed").settle(false);
        tokio::time::advance(Duration::from_secs(1)).await;
        drop(b.admit().expect("probe"));
        assert!(b.admit().is_none(), "reopened");
    }
}
