//! A warning that a peer can trigger at will, logged at most once per
//! interval with the count of those held back in between: one log line per
//! forwarded query would let a client fill the journal.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When a repeated warning is next due.
#[derive(Debug)]
pub struct WarnEvery {
    interval: Duration,
    /// The last warning's time and the occurrences since it.
    state: Mutex<(Option<Instant>, u64)>,
}

impl WarnEvery {
    pub const fn new(interval: Duration) -> Self {
        WarnEvery {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts one occurrence at `now`; `Some(occurrences held back since
    /// the last warning)` when a warning is due.
    pub fn due(&self, now: Instant) -> Option<u64> {
        // A poisoned lock only means a panic elsewhere mid-count: keep counting.
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, held) = &mut *st;
        match last {
            Some(t) if now.saturating_duration_since(*t) < self.interval => {
                *held += 1;
                None
            }
            _ => {
                *last = Some(now);
                Some(std::mem::take(held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_once_per_interval_with_the_count_held_back() {
        let w = WarnEvery::new(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(w.due(t0), Some(0));
        for i in 1..=5 {
            assert_eq!(w.due(t0 + Duration::from_secs(i)), None);
        }
        assert_eq!(w.due(t0 + Duration::from_secs(10)), Some(5));
        assert_eq!(w.due(t0 + Duration::from_secs(11)), None);
        assert_eq!(w.due(t0 + Duration::from_secs(30)), Some(1));
    }
}
