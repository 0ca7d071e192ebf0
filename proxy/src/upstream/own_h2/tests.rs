//! The spares' cap and expiry, with the time passed in (no sleeping).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::*;

/// A spare cap no test of the per-host cap or of expiry reaches.
const ROOMY: usize = 10_000;

/// A test client holding one upstream connection.
impl Holds for u32 {
    fn connections(&self) -> usize {
        1
    }
}

fn spares() -> Spares<u32> {
    Spares::with_cap(ROOMY)
}

fn key(host: &str) -> Key {
    Key {
        tls: true,
        host: host.to_string(),
        port: 443,
    }
}

impl Spares<u32> {
    /// [`Spares::put_at`] of a spare whose standing is never retired.
    fn put_live(&self, key: Key, home: Home, client: u32, now: Instant) {
        self.put_at(key, home, client, Standing::for_tests().0, now);
    }
}

/// Every spare `spares` hands out for `key` at `now`, in the order it does.
fn drain(spares: &Spares<u32>, key: &Key, now: Instant) -> Vec<u32> {
    std::iter::from_fn(|| spares.take_at(key, None, now)).collect()
}

#[test]
fn a_host_keeps_at_most_its_cap_of_spares_the_oldest_going_first() {
    let spares = spares();
    let t0 = Instant::now();
    let extra = 6;
    let n = MAX_SPARES_PER_HOST as u32 + extra;
    for i in 0..n {
        spares.put_live(key("a.test"), None, i, t0 + Duration::from_millis(i.into()));
    }
    assert_eq!(spares.count(&key("a.test")), MAX_SPARES_PER_HOST);
    // Another host has a cap of its own.
    spares.put_live(key("b.test"), None, 1000, t0);
    assert_eq!(spares.count(&key("a.test")), MAX_SPARES_PER_HOST);
    assert_eq!(spares.count(&key("b.test")), 1);
    // The newest first; the oldest `extra` are gone.
    let now = t0 + Duration::from_secs(1);
    let want: Vec<u32> = (extra..n).rev().collect();
    assert_eq!(drain(&spares, &key("a.test"), now), want);
    assert_eq!(spares.count(&key("a.test")), 0);
    assert_eq!(spares.hosts(), 1, "only b.test has spares left");
}

#[test]
fn a_spare_is_handed_out_until_the_idle_timeout_and_not_after() {
    let spares = spares();
    let t0 = Instant::now();
    let a = key("a.test");
    spares.put_live(a.clone(), None, 1, t0);
    let just_before = t0 + IDLE_TIMEOUT - Duration::from_millis(1);
    assert_eq!(spares.take_at(&a, None, just_before), Some(1));

    spares.put_live(a.clone(), None, 2, t0);
    spares.put_live(a.clone(), None, 3, t0 + Duration::from_secs(10));
    // At the timeout, the first is expired and the second is not.
    assert_eq!(drain(&spares, &a, t0 + IDLE_TIMEOUT), [3]);

    spares.put_live(a.clone(), None, 4, t0);
    assert_eq!(spares.take_at(&a, None, t0 + IDLE_TIMEOUT), None);
    // Nothing is left behind for the host: no empty list.
    assert_eq!(spares.hosts(), 0);
}

#[test]
fn expired_spares_of_hosts_nobody_asks_for_go_when_another_is_put() {
    let spares = spares();
    let t0 = Instant::now();
    for (i, host) in ["a.test", "b.test", "c.test"].into_iter().enumerate() {
        spares.put_live(key(host), None, i as u32, t0);
    }
    spares.put_live(key("b.test"), None, 10, t0 + Duration::from_secs(60));
    assert_eq!(spares.hosts(), 3);
    spares.put_live(key("d.test"), None, 20, t0 + IDLE_TIMEOUT);
    assert_eq!(spares.count(&key("a.test")), 0);
    assert_eq!(
        spares.count(&key("b.test")),
        1,
        "b.test's second is not expired"
    );
    assert_eq!(spares.count(&key("c.test")), 0);
    assert_eq!(spares.hosts(), 2);
}

#[tokio::test]
async fn a_spare_of_the_takers_own_runtime_goes_first() {
    let spares = spares();
    let here: Home = Some(tokio::runtime::Handle::current().id());
    let t0 = Instant::now();
    let a = key("a.test");
    spares.put_live(a.clone(), here, 1, t0);
    spares.put_live(a.clone(), None, 2, t0 + Duration::from_secs(1));
    spares.put_live(a.clone(), here, 3, t0 + Duration::from_secs(2));
    spares.put_live(a.clone(), None, 4, t0 + Duration::from_secs(3));
    let now = t0 + Duration::from_secs(4);
    // The newest of the taker's runtime, then the newest of any.
    assert_eq!(spares.take_at(&a, here, now), Some(3));
    assert_eq!(spares.take_at(&a, here, now), Some(1));
    assert_eq!(spares.take_at(&a, here, now), Some(4));
    assert_eq!(spares.take_at(&a, None, now), Some(2));
    assert_eq!(spares.take_at(&a, None, now), None);
}

#[test]
fn spares_over_all_hosts_are_capped_the_least_recently_put_going_first() {
    let cap = 100;
    let spares = Spares::<u32>::with_cap(cap);
    let t0 = Instant::now();
    // One spare for each of more hosts than the cap, each put a millisecond
    // after the last: the per-host cap never applies.
    let extra = 5;
    let n = cap as u32 + extra;
    for i in 0..n {
        let at = t0 + Duration::from_millis(i.into());
        spares.put_live(key(&format!("h{i}.test")), None, i, at);
    }
    assert_eq!(spares.total(), cap);
    assert_eq!(spares.connections(), cap);
    assert_eq!(spares.hosts(), cap, "no empty list is left behind");
    let now = t0 + Duration::from_secs(1);
    for i in 0..extra {
        assert_eq!(spares.count(&key(&format!("h{i}.test"))), 0, "h{i} evicted");
    }
    assert_eq!(
        spares.take_at(&key(&format!("h{extra}.test")), None, now),
        Some(extra)
    );
    assert_eq!(
        spares.take_at(&key(&format!("h{}.test", n - 1)), None, now),
        Some(n - 1)
    );

    // A host at its own cap gives up its own oldest, not another host's.
    let cap = MAX_SPARES_PER_HOST + 10;
    let spares = Spares::<u32>::with_cap(cap);
    for i in 0..(cap - MAX_SPARES_PER_HOST) as u32 {
        spares.put_live(key(&format!("o{i}.test")), None, i, t0);
    }
    let later = t0 + Duration::from_secs(1);
    for i in 0..=MAX_SPARES_PER_HOST as u32 {
        spares.put_live(
            key("a.test"),
            None,
            1000 + i,
            later + Duration::from_millis(i.into()),
        );
    }
    assert_eq!(spares.total(), cap);
    assert_eq!(spares.count(&key("a.test")), MAX_SPARES_PER_HOST);
    assert_eq!(
        spares.count(&key("o0.test")),
        1,
        "the older hosts keep theirs"
    );
}

/// A test client holding as many upstream connections as its count says
/// (its pool closes them as they expire or the upstream closes them).
struct Holding {
    id: u32,
    held: Arc<AtomicUsize>,
}

impl Holds for Holding {
    fn connections(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }
}

/// A spare of `id` holding `n` connections, and its count.
fn holding(id: u32, n: usize) -> (Holding, Arc<AtomicUsize>) {
    let held = Arc::new(AtomicUsize::new(n));
    (
        Holding {
            id,
            held: held.clone(),
        },
        held,
    )
}

/// Spares were capped as clients (256), each holding any number of idle
/// connections: they are capped by the connections they hold, the least
/// recently put going first, and one holding nothing is not kept.
#[test]
fn spares_are_capped_by_the_connections_they_hold() {
    let spares = Spares::<Holding>::with_cap(10);
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let put = |host: &str, (client, _): (Holding, Arc<AtomicUsize>), when| {
        spares.put_at(key(host), None, client, Standing::for_tests().0, when);
    };
    put("a.test", holding(1, 4), at(0));
    put("b.test", holding(2, 4), at(1));
    assert_eq!(spares.connections(), 8);
    // Six more do not fit beside eight: the oldest goes.
    put("c.test", holding(3, 6), at(2));
    assert_eq!(spares.connections(), 10);
    assert_eq!(spares.count(&key("a.test")), 0, "the oldest was evicted");
    assert_eq!(spares.count(&key("b.test")), 1);
    // One holding nothing, or more than the cap on its own, is not kept.
    put("d.test", holding(4, 0), at(3));
    put("e.test", holding(5, 11), at(4));
    assert_eq!(spares.count(&key("d.test")), 0);
    assert_eq!(spares.count(&key("e.test")), 0);
    assert_eq!(
        spares.connections(),
        10,
        "nothing else was evicted for them"
    );

    // A spare whose connections all closed is not handed out, and does not
    // count against the cap.
    let (client, f_held) = holding(6, 3);
    spares.put_at(key("f.test"), None, client, Standing::for_tests().0, at(5));
    // Ten did not leave room for three: b.test (4) went.
    assert_eq!(spares.count(&key("b.test")), 0);
    f_held.store(0, Ordering::SeqCst);
    assert!(spares.take_at(&key("f.test"), None, at(6)).is_none());
    let took = spares.take_at(&key("c.test"), None, at(6));
    assert_eq!(took.map(|c| c.id), Some(3));
    assert_eq!(spares.connections(), 0);
}

/// The race of a client connection ending as a reload retires the open
/// connections: `OwnH2::drop` found its client current, then the reload
/// retired the connections and cleared the spares, then the drop put the
/// client. That spare, whose connections were checked against the old deny
/// list, must never be handed out.
#[test]
fn a_spare_put_after_the_reload_that_retired_it_is_never_handed_out() {
    let spares = spares();
    let t0 = Instant::now();
    let a = key("a.test");
    let (standing, retire) = Standing::for_tests();
    assert!(!standing.is_retired(), "checked current, as the drop does");
    // The reload, between that check and the put.
    retire();
    spares.clear();
    // The put, under the lock: refused (or left to the take to drop).
    spares.put_at(a.clone(), None, 1, standing.clone(), t0);
    assert_eq!(
        spares.take_at(&a, None, t0),
        None,
        "a retired spare was handed out"
    );

    // One retired after it was put is not handed out either.
    let (standing, retire) = Standing::for_tests();
    spares.put_at(a.clone(), None, 2, standing, t0);
    retire();
    assert_eq!(
        spares.take_at(&a, None, t0),
        None,
        "a retired spare was handed out"
    );
    assert_eq!(spares.hosts(), 0, "the retired spare went at the take");
}
