//! Metric handles per transform name, resolved once: the pipeline records a
//! duration and a decision for every transform of every request, and looking
//! the label sets up each time (a bounded-label check, two `String`s and two
//! hashed family lookups per call) showed up in the request path's profile.
//!
//! The cache is read on every request by every connection worker, so a read
//! writes nothing shared: no lock word and no reference count that the
//! workers' cores would pass back and forth (a `RwLock` read is two atomic
//! writes to one cache line, and a clone of the `Arc` two more).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwap;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::MAX_LABEL_VALUES;

/// The decisions a transform reports, in the order of [`TransformHandles::decisions`].
const ACTIONS: [&str; 4] = ["continue", "reject", "stub", "error"];

/// One transform's metrics.
pub(super) struct TransformHandles {
    /// Its label value (bounded: `other` past the cap).
    pub(super) label: String,
    /// `transform_duration_seconds` for it.
    pub(super) duration: Histogram,
    /// `transform_decisions` per action, created on first use so that a
    /// decision never taken is not exported.
    decisions: [OnceLock<Counter>; 4],
}

impl TransformHandles {
    pub(super) fn new(label: String, duration: Histogram) -> Self {
        TransformHandles {
            label,
            duration,
            decisions: Default::default(),
        }
    }

    /// The counter for `action`, made by `make` the first time; `None` for an
    /// action outside [`ACTIONS`].
    pub(super) fn decision(
        &self,
        action: &'static str,
        make: impl FnOnce() -> Counter,
    ) -> Option<&Counter> {
        let i = ACTIONS.iter().position(|a| *a == action)?;
        Some(self.decisions[i].get_or_init(make))
    }
}

/// Handles by transform name. Names come from config, so there are few; past
/// twice the label cap nothing more is cached (the labels are `other` anyway).
#[derive(Default)]
pub(super) struct HandleCache {
    by_name: ArcSwap<HashMap<String, Arc<TransformHandles>>>,
    /// Serializes the rare insertions (copy, insert, swap).
    insert: Mutex<()>,
}

impl HandleCache {
    /// Calls `f` with the handles for `name`, made by `make` on first use.
    pub(super) fn with<R>(
        &self,
        name: &str,
        make: impl FnOnce() -> TransformHandles,
        f: impl FnOnce(&TransformHandles) -> R,
    ) -> R {
        if let Some(h) = self.by_name.load().get(name) {
            return f(h);
        }
        let _insert = self.insert.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.by_name.load_full();
        if let Some(h) = current.get(name) {
            return f(h);
        }
        let made = Arc::new(make());
        if current.len() < 2 * MAX_LABEL_VALUES {
            let mut map = HashMap::clone(&current);
            map.insert(name.to_string(), made.clone());
            self.by_name.store(Arc::new(map));
        }
        f(&made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn handles(label: &str) -> TransformHandles {
        TransformHandles::new(label.to_string(), Histogram::new([1.0]))
    }

    #[test]
    fn handles_are_made_once_per_name_and_shared_by_threads() {
        let cache = Arc::new(HandleCache::default());
        let made = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (cache, made) = (cache.clone(), made.clone());
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        let name = ["allowlist", "secrets"][i % 2];
                        let label = cache.with(
                            name,
                            || {
                                made.fetch_add(1, Ordering::SeqCst);
                                handles(name)
                            },
                            |h| h.label.clone(),
                        );
                        assert_eq!(label, name);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(
            made.load(Ordering::SeqCst),
            2,
            "one set of handles per name"
        );
    }

    #[test]
    fn past_the_cap_handles_are_made_but_not_kept() {
        let cache = HandleCache::default();
        for i in 0..2 * MAX_LABEL_VALUES {
            let name = format!("t{i}");
            cache.with(&name, || handles(&name), |_| ());
        }
        let made = AtomicUsize::new(0);
        for _ in 0..3 {
            let label = cache.with(
                "one-too-many",
                || {
                    made.fetch_add(1, Ordering::SeqCst);
                    handles("other")
                },
                |h| h.label.clone(),
            );
            assert_eq!(label, "other");
        }
        assert_eq!(made.load(Ordering::SeqCst), 3, "not cached past the cap");
        assert_eq!(cache.by_name.load().len(), 2 * MAX_LABEL_VALUES);
        let kept = AtomicUsize::new(0);
        cache.with(
            "t0",
            || handles("t0"),
            |_| kept.fetch_add(1, Ordering::SeqCst),
        );
        assert_eq!(kept.load(Ordering::SeqCst), 1);
    }
}
