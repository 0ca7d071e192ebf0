use std::sync::atomic::AtomicI64;
use std::sync::Barrier;

use super::*;
use crate::tls::test_support::minter;

/// A clock that starts at the real "now" and moves only when told.
fn test_clock() -> (Clock, Arc<AtomicI64>) {
    let start = OffsetDateTime::now_utc();
    let offset = Arc::new(AtomicI64::new(0));
    let o = offset.clone();
    let clock: Clock = Arc::new(move || start + time::Duration::seconds(o.load(Ordering::SeqCst)));
    (clock, offset)
}

fn cache(capacity: u64) -> (LeafCache, Arc<AtomicI64>) {
    let (clock, offset) = test_clock();
    (LeafCache::with_clock(minter().0, capacity, clock), offset)
}

#[test]
fn second_lookup_hits_and_names_are_case_insensitive() {
    let (cache, _) = cache(10);
    let a = cache.get("Example.TEST").expect("first");
    let b = cache.get("example.test.").expect("second");
    assert!(Arc::ptr_eq(&a, &b), "same leaf for both spellings");
    let stats = cache.stats();
    assert_eq!(
        (stats.hits, stats.misses, stats.mints, stats.mint_errors),
        (1, 1, 1, 0)
    );
}

#[test]
fn invalid_names_count_as_mint_errors_and_are_not_cached() {
    let (cache, _) = cache(10);
    assert!(cache.get("bad name").is_err());
    assert!(cache.get("bad name").is_err());
    let stats = cache.stats();
    assert_eq!((stats.mints, stats.mint_errors, stats.misses), (0, 2, 2));
}

#[test]
fn evicts_the_least_recently_used_at_capacity() {
    let (cache, _) = cache(3);
    for name in ["a.test", "b.test", "c.test"] {
        cache.get(name).expect("mint");
        cache.run_pending_tasks();
    }
    cache.get("a.test").expect("touch a"); // b is now least recently used
    cache.run_pending_tasks();
    cache.get("d.test").expect("mint d");
    cache.run_pending_tasks();
    assert_eq!(cache.stats().entries, 3);
    assert_eq!(cache.stats().mints, 4);

    cache.get("a.test").expect("a");
    cache.get("c.test").expect("c");
    cache.get("d.test").expect("d");
    assert_eq!(cache.stats().mints, 4, "a, c and d are still cached");
    cache.run_pending_tasks();
    cache.get("b.test").expect("b");
    assert_eq!(cache.stats().mints, 5, "b was evicted and is minted again");
}

#[test]
fn remints_when_a_leaf_nears_expiry() {
    let (cache, offset) = cache(10);
    let first = cache.get("x.test").expect("mint");
    // 72h leaf: replaced once less than a tenth (7.2h) of its life remains.
    offset.store(64 * 3600, Ordering::SeqCst);
    let same = cache.get("x.test").expect("still fresh");
    assert!(Arc::ptr_eq(&first, &same));
    assert_eq!(cache.stats().mints, 1);

    offset.store(65 * 3600, Ordering::SeqCst);
    let fresh = cache.get("x.test").expect("re-mint");
    assert!(!Arc::ptr_eq(&first, &fresh), "a new leaf after 65h");
    assert_eq!(cache.stats().mints, 2);
    let again = cache.get("x.test").expect("hit");
    assert!(Arc::ptr_eq(&fresh, &again));
    assert_eq!(cache.stats().mints, 2);
}

#[test]
fn concurrent_lookups_of_a_new_name_mint_once() {
    let (cache, _) = cache(100);
    let cache = Arc::new(cache);
    let threads = 200;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (cache, barrier) = (cache.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                cache.get("burst.test").expect("leaf")
            })
        })
        .collect();
    let leaves: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let stats = cache.stats();
    assert_eq!(stats.mints, 1, "exactly one mint for one name: {stats:?}");
    assert_eq!(stats.hits + stats.misses, threads as u64);
    assert!(
        leaves.iter().all(|l| Arc::ptr_eq(l, &leaves[0])),
        "everyone got the same leaf"
    );
}

#[test]
fn stale_entry_is_replaced_once_under_concurrency() {
    let (cache, offset) = cache(100);
    let cache = Arc::new(cache);
    cache.get("stale.test").expect("mint");
    offset.store(70 * 3600, Ordering::SeqCst);
    let threads = 50;
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (cache, barrier) = (cache.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                cache.get("stale.test").expect("leaf")
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    assert_eq!(cache.stats().mints, 2, "one re-mint: {:?}", cache.stats());
}

mod made_up;
mod prepare;
