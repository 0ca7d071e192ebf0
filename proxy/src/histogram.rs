//! Duration histograms with fixed buckets, updated with atomics.
//!
//! Every histogram the proxy exports is observed on the request path: a
//! request's duration and each transform hook's (by the audit observer, on
//! the worker that finished the request), upstream connect and response-head
//! times. `prometheus_client`'s histogram takes a mutex per observation; this
//! one costs a bucket search over integers, one `fetch_add` and one
//! compare-and-swap loop for the sum, and nothing is shared but the cache
//! lines of its own atomics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The most bucket bounds a [`Buckets`] may have (`+Inf` not counted).
pub const MAX_BOUNDS: usize = 16;

/// A histogram's bucket bounds, in seconds and in nanoseconds (what
/// [`Histogram::observe`] compares with). Made at compile time.
#[derive(Debug)]
pub struct Buckets {
    seconds: &'static [f64],
    /// `seconds` in nanoseconds, then `u64::MAX` up to [`MAX_BOUNDS`].
    ns: [u64; MAX_BOUNDS],
}

impl Buckets {
    /// Bounds from upper bounds in seconds. They must be ascending and
    /// positive, and no more than [`MAX_BOUNDS`]: a `const` that breaks this
    /// does not compile.
    pub const fn new(seconds: &'static [f64]) -> Buckets {
        assert!(
            !seconds.is_empty() && seconds.len() <= MAX_BOUNDS,
            "1 to MAX_BOUNDS bounds"
        );
        let mut ns = [u64::MAX; MAX_BOUNDS];
        let mut i = 0;
        while i < seconds.len() {
            assert!(seconds[i] > 0.0, "bounds are positive");
            assert!(i == 0 || seconds[i] > seconds[i - 1], "bounds ascend");
            ns[i] = (seconds[i] * 1e9 + 0.5) as u64;
            i += 1;
        }
        Buckets { seconds, ns }
    }
}

/// A duration histogram over fixed [`Buckets`]. `const`-constructible, so a
/// `static` can hold it.
#[derive(Debug)]
pub struct Histogram {
    buckets: &'static Buckets,
    /// Observations per bucket, not cumulative: one per bound, then `+Inf`;
    /// slots past the bounds' count stay at zero.
    counts: [AtomicU64; MAX_BOUNDS + 1],
    /// The sum of the observations in seconds, as `f64` bits (a sum in whole
    /// nanoseconds would wrap after 584 years of summed time, which the
    /// durations of long tunnels reach in weeks on a busy proxy).
    sum: AtomicU64,
}

/// A [`Histogram`] as read at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// The sum of the observations, in seconds.
    pub sum: f64,
    /// How many observations.
    pub count: u64,
    /// `(upper bound in seconds, observations in that bucket)`, not
    /// cumulative, the last bound `+Inf`: what `prometheus_client`'s encoder
    /// takes.
    pub buckets: Vec<(f64, u64)>,
}

impl Histogram {
    /// An empty histogram over `buckets`.
    pub const fn new(buckets: &'static Buckets) -> Self {
        Histogram {
            buckets,
            counts: [const { AtomicU64::new(0) }; MAX_BOUNDS + 1],
            sum: AtomicU64::new(0),
        }
    }

    /// Counts one observation of `took`.
    #[inline]
    pub fn observe(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bounds = &self.buckets.ns[..self.buckets.seconds.len()];
        let i = bounds.iter().position(|b| ns <= *b).unwrap_or(bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let mut cur = self.sum.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(cur) + secs).to_bits();
            match self
                .sum
                .compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
    }

    /// The histogram now. The count is the buckets' total, so the two
    /// always agree (the sum may be a moment ahead or behind under load).
    pub fn snapshot(&self) -> HistogramSnapshot {
        let bounds = self.buckets.seconds;
        let buckets: Vec<(f64, u64)> = bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(&self.counts)
            .map(|(le, n)| (le, n.load(Ordering::Relaxed)))
            .collect();
        HistogramSnapshot {
            sum: f64::from_bits(self.sum.load(Ordering::Relaxed)),
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: Buckets = Buckets::new(&[0.0005, 0.001, 60.0]);

    #[test]
    fn an_observation_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let h = Histogram::new(&THREE);
        h.observe(Duration::from_micros(500)); // on the first bound: in it
        h.observe(Duration::from_micros(501));
        h.observe(Duration::from_secs(61)); // over every bound
        h.observe(Duration::MAX); // past u64 nanoseconds: still +Inf
        let s = h.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(
            s.buckets,
            vec![(0.0005, 1), (0.001, 1), (60.0, 0), (f64::INFINITY, 2)]
        );
    }

    #[test]
    fn the_sum_is_in_seconds_and_does_not_wrap() {
        let h = Histogram::new(&THREE);
        h.observe(Duration::from_micros(1_500));
        h.observe(Duration::from_secs(61));
        assert!((h.snapshot().sum - 61.0015).abs() < 1e-9);
        // 1,000 observations of a year each: past u64 nanoseconds (584 years).
        let year = Duration::from_secs(365 * 86_400);
        for _ in 0..1_000 {
            h.observe(year);
        }
        let want = 61.0015 + 1_000.0 * year.as_secs_f64();
        assert!((h.snapshot().sum - want).abs() / want < 1e-12);
    }

    #[test]
    fn observations_from_many_threads_are_all_counted() {
        static H: Histogram = Histogram::new(&THREE);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        H.observe(Duration::from_micros(700));
                    }
                });
            }
        });
        let snap = H.snapshot();
        assert_eq!(snap.buckets[1], (0.001, 40_000));
        assert!((snap.sum - 28.0).abs() < 1e-6, "{}", snap.sum);
    }

    #[test]
    fn a_bound_is_kept_in_nanoseconds_rounded() {
        const B: Buckets = Buckets::new(&[0.0001, 0.00025]);
        assert_eq!(&B.ns[..3], &[100_000, 250_000, u64::MAX]);
        assert_eq!(B.seconds, &[0.0001, 0.00025]);
    }
}
