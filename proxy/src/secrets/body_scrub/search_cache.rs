//! The searches built for the value sets seen last, kept for the responses
//! that follow.
//!
//! A deployment puts the same few credentials into request after request, so
//! the responses to them are searched for the same values: the search
//! ([`Search`]) is built once per set and shared. Building one (the forms,
//! the automaton) costs tens of microseconds, more than the proxy's whole
//! work on a request; finding it here costs a hash of the values and a look
//! at a few entries under a lock held for just that.
//!
//! At most [`CAPACITY`] sets are kept, the least recently used going first,
//! and none left unused for [`IDLE_FOR`]: a rotated or removed credential's
//! old search leaves as new ones come, or at the first look after it has sat
//! unused that long (in a deployment with one or two credentials, 16 newer
//! sets may never come, and the old values stayed for the life of the
//! process). The values a
//! set is known by are kept with it, wiped when it leaves (the automaton's
//! tables, which hold the forms too, are not), and compared in full on a
//! hash match: a collision never hands out another set's search.

use std::collections::hash_map::RandomState;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::{BodyScrubError, Search};

/// How many value sets are kept.
pub const CAPACITY: usize = 16;

/// How long a set is kept unused.
pub const IDLE_FOR: Duration = Duration::from_secs(10 * 60);

/// The process's searches.
pub static SEARCHES: LazyLock<SearchCache> = LazyLock::new(|| SearchCache::new(CAPACITY));

/// Searches by the set of values they search for.
pub struct SearchCache {
    capacity: usize,
    /// Hashes with a per-process random key: the hashes say nothing of the
    /// values to anyone who cannot read this process's memory.
    hasher: RandomState,
    /// Most recently used first.
    entries: Mutex<VecDeque<Entry>>,
}

struct Entry {
    hash: u64,
    values: Vec<Zeroizing<String>>,
    search: Arc<Search>,
    /// When it was last handed out.
    used: Instant,
}

impl Entry {
    fn holds(&self, hash: u64, values: &[&str]) -> bool {
        self.hash == hash
            && self.values.len() == values.len()
            && self
                .values
                .iter()
                .zip(values)
                .all(|(a, b)| a.as_str() == *b)
    }
}

impl SearchCache {
    /// An empty cache keeping at most `capacity` sets.
    pub fn new(capacity: usize) -> SearchCache {
        SearchCache {
            capacity,
            hasher: RandomState::new(),
            entries: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    /// The search for `values` (sorted, without duplicates, none empty):
    /// the kept one, or one built now (outside the lock) and kept.
    pub fn get(&self, values: &[&str]) -> Result<Arc<Search>, BodyScrubError> {
        self.get_at(values, Instant::now())
    }

    /// [`get`](Self::get) at `now`.
    fn get_at(&self, values: &[&str], now: Instant) -> Result<Arc<Search>, BodyScrubError> {
        let hash = self.hasher.hash_one(values);
        if let Some(found) = self.take(hash, values, now) {
            return Ok(found);
        }
        let built = Arc::new(Search::build(values)?);
        let mut entries = self.lock();
        // Another response may have built it meanwhile: keep one.
        if let Some(i) = entries.iter().position(|e| e.holds(hash, values)) {
            return Ok(entries[i].search.clone());
        }
        entries.push_front(Entry {
            hash,
            values: values
                .iter()
                .map(|v| Zeroizing::new(v.to_string()))
                .collect(),
            search: built.clone(),
            used: now,
        });
        entries.truncate(self.capacity);
        Ok(built)
    }

    /// The kept search for `values`, moved to the front; first drops the
    /// sets unused for [`IDLE_FOR`] (the oldest are at the back).
    fn take(&self, hash: u64, values: &[&str], now: Instant) -> Option<Arc<Search>> {
        let mut entries = self.lock();
        while entries
            .back()
            .is_some_and(|e| now.saturating_duration_since(e.used) >= IDLE_FOR)
        {
            entries.pop_back();
        }
        let i = entries.iter().position(|e| e.holds(hash, values))?;
        if i > 0 {
            let e = entries.remove(i)?;
            entries.push_front(e);
        }
        let front = entries.front_mut()?;
        front.used = now;
        Some(front.search.clone())
    }

    /// The entries; a panic elsewhere while they were held left them whole
    /// (every change is one `VecDeque` call), so a poisoned lock is taken as is.
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sk-live-aaaaaaaaaaaa";
    const B: &str = "sk-live-bbbbbbbbbbbb";

    #[test]
    fn the_same_values_share_one_search() {
        let cache = SearchCache::new(4);
        let first = cache.get(&[A, B]).expect("built");
        let again = cache.get(&[A, B]).expect("found");
        assert!(Arc::ptr_eq(&first, &again));
        let other = cache.get(&[A]).expect("built");
        assert!(!Arc::ptr_eq(&first, &other));
    }

    #[test]
    fn the_least_recently_used_set_leaves_first() {
        let cache = SearchCache::new(2);
        let a = cache.get(&[A]).expect("built");
        let b = cache.get(&[B]).expect("built");
        // A used again: B is now the oldest, and leaves for C.
        assert!(Arc::ptr_eq(&a, &cache.get(&[A]).expect("found")));
        cache.get(&["sk-live-cccccccccccc"]).expect("built");
        assert!(Arc::ptr_eq(&a, &cache.get(&[A]).expect("kept")));
        assert!(!Arc::ptr_eq(&b, &cache.get(&[B]).expect("rebuilt")));
        assert_eq!(cache.lock().len(), 2);
    }

    #[test]
    fn a_set_left_unused_leaves_at_the_next_look() {
        let cache = SearchCache::new(4);
        let start = Instant::now();
        let old = cache.get_at(&[A], start).expect("built");
        let b = cache.get_at(&[B], start).expect("built");
        // B is used again just before A's time is up; A is not.
        let later = start + IDLE_FOR - Duration::from_secs(1);
        assert!(Arc::ptr_eq(&b, &cache.get_at(&[B], later).expect("kept")));
        assert_eq!(cache.lock().len(), 2);
        // A look at any set, once A has sat unused for IDLE_FOR, drops A and
        // its values; B, used since, stays.
        assert!(Arc::ptr_eq(
            &b,
            &cache.get_at(&[B], start + IDLE_FOR).expect("kept")
        ));
        assert_eq!(cache.lock().len(), 1);
        assert!(cache.lock().iter().all(|e| e.values[0].as_str() == B));
        let again = cache.get_at(&[A], start + IDLE_FOR).expect("rebuilt");
        assert!(!Arc::ptr_eq(&old, &again));
    }

    #[test]
    fn a_hash_match_alone_does_not_hand_out_a_search() {
        let cache = SearchCache::new(4);
        let a = cache.get(&[A]).expect("built");
        // Another set under A's hash, as a collision would put it.
        let hash = cache.hasher.hash_one([B].as_slice());
        cache.lock()[0].hash = hash;
        let b = cache.get(&[B]).expect("built");
        assert!(!Arc::ptr_eq(&a, &b));
        let out = {
            let mut s = crate::secrets::body_scrub::BodyScrubber {
                search: b,
                held: Vec::new(),
                found: 0,
            };
            let mut out = s.push(bytes::Bytes::from(format!("{A} {B}"))).to_vec();
            out.extend_from_slice(&s.finish());
            out
        };
        let out = String::from_utf8(out).expect("ascii");
        assert!(out.starts_with(A), "B's search masks B only: {out}");
        assert!(!out.contains(B), "{out}");
    }
}
