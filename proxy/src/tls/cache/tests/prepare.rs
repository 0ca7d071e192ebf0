//! [`LeafCache::prepare`]: mints run off the runtime's worker, one at a time
//! per client, in FIFO turns, and a fresh hit takes no turn. Each test runs
//! on a single-threaded runtime (the connection workers' kind), whose only
//! worker is the test's own thread; mints are held by a [`Gate`] until the
//! test releases them, so every step is ordered by the test, not by time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;

/// A deadline no test reaches: held mints wait for the test, not the clock.
const WITHIN: Duration = Duration::from_secs(3600);

/// A mint as it started.
#[derive(Debug)]
struct Started {
    name: String,
    /// It ran on the runtime's worker (the test's thread).
    on_worker: bool,
}

/// Held mints: a name's receiver, its mint waits for a message (or for the
/// sender to go).
type Holds = Arc<Mutex<HashMap<String, std::sync::mpsc::Receiver<()>>>>;

/// Reports every mint of a cache as it starts, and holds the mints of the
/// names given to [`Gate::hold`] until their sender sends (or is dropped).
struct Gate {
    started: mpsc::UnboundedReceiver<Started>,
    holds: Holds,
}

impl Gate {
    fn on(cache: &LeafCache) -> Gate {
        let (tx, started) = mpsc::unbounded_channel();
        let holds = Holds::default();
        let held = holds.clone();
        let worker: ThreadId = std::thread::current().id();
        cache.on_mint(Box::new(move |name| {
            let on_worker = std::thread::current().id() == worker;
            let _ = tx.send(Started {
                name: name.to_string(),
                on_worker,
            });
            if on_worker {
                // Held there, it would stall the runtime and the test with
                // it: the test fails on `on_worker` instead.
                return;
            }
            let hold = held.lock().expect("holds").remove(name);
            if let Some(release) = hold {
                let _ = release.recv();
            }
        }));
        Gate { started, holds }
    }

    /// Holds the mint of `name` until the returned sender sends.
    fn hold(&self, name: &str) -> std::sync::mpsc::Sender<()> {
        let (release, held) = std::sync::mpsc::channel();
        self.holds
            .lock()
            .expect("holds")
            .insert(name.to_string(), held);
        release
    }

    /// The next mint to start.
    async fn next(&mut self) -> Started {
        self.started.recv().await.expect("the hook is alive")
    }

    /// The next mint to start, if one has.
    fn started_already(&mut self) -> Option<Started> {
        self.started.try_recv().ok()
    }
}

fn client(n: u8) -> Client {
    Client::Address(IpAddr::from([10, 0, 0, n]))
}

/// A cache minting in turns of `slots` slots.
fn cache_with_slots(slots: usize) -> Arc<LeafCache> {
    let (clock, _) = test_clock();
    Arc::new(LeafCache::with_queue(
        minter().0,
        100,
        clock,
        crate::tls::mint_queue::with_slots(slots),
    ))
}

/// Starts preparing `name` for `client` in a task of its own.
fn spawn_prepare(
    cache: &Arc<LeafCache>,
    name: &str,
    client: Client,
) -> tokio::task::JoinHandle<Result<(), PrepareError>> {
    let minting = cache
        .prepare(name, client, WITHIN, || false)
        .unwrap_or_else(|| panic!("{name} is not cached yet"));
    tokio::spawn(minting)
}

/// Runs the other tasks until `n` mints wait for a turn; panics if a mint
/// starts meanwhile (one that should have waited went ahead).
async fn until_waiting(cache: &LeafCache, gate: &mut Gate, n: u64) {
    while cache.stats().mints_waiting < n {
        if let Some(started) = gate.started_already() {
            panic!("{started:?} started while it should wait for its turn");
        }
        tokio::task::yield_now().await;
    }
}

async fn done(task: tokio::task::JoinHandle<Result<(), PrepareError>>, what: &str) {
    match task.await {
        Ok(Ok(())) => {}
        other => panic!("{what}: {other:?}"),
    }
}

#[tokio::test]
async fn a_mint_runs_off_the_worker_while_other_tasks_go_on() {
    let cache = cache_with_slots(1);
    let mut gate = Gate::on(&cache);
    let release = gate.hold("slow.test");
    let minting = spawn_prepare(&cache, "slow.test", client(1));
    let started = gate.next().await;
    assert_eq!(started.name, "slow.test");
    assert!(
        !started.on_worker,
        "the leaf was minted on the runtime's worker"
    );

    // The mint is held mid-way on its thread; this runtime has one worker,
    // and another task on it still runs.
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move { tx.send(()) });
    rx.await
        .expect("another task ran while the mint was in progress");
    assert!(!minting.is_finished(), "the mint is still held");

    release.send(()).expect("the mint waits");
    done(minting, "slow.test").await;
    assert!(
        cache
            .prepare("slow.test", client(1), WITHIN, || false)
            .is_none(),
        "the prepared leaf is cached"
    );
    let stats = cache.stats();
    assert_eq!(
        (stats.mints, stats.misses, stats.hits),
        (1, 1, 1),
        "{stats:?}"
    );
    cache.for_handshake("slow.test").expect("the leaf");
    assert_eq!(cache.stats().mints, 1, "the resolver found the leaf");
}

#[tokio::test]
async fn a_clients_next_mint_waits_for_its_first_while_another_clients_mint_starts() {
    let cache = cache_with_slots(2);
    let mut gate = Gate::on(&cache);
    let release_a1 = gate.hold("a1.test");
    let release_b1 = gate.hold("b1.test");
    let a1 = spawn_prepare(&cache, "a1.test", client(1));
    assert_eq!(gate.next().await.name, "a1.test");

    let a2 = spawn_prepare(&cache, "a2.test", client(1));
    until_waiting(&cache, &mut gate, 1).await;
    // A slot is free, but a2 waits behind its client's first mint; another
    // client's mint takes the free slot.
    let b1 = spawn_prepare(&cache, "b1.test", client(2));
    assert_eq!(gate.next().await.name, "b1.test");
    assert!(gate.started_already().is_none(), "a2 started beside a1");
    assert_eq!(cache.stats().mints_waiting, 1, "a2 waits");

    release_a1.send(()).expect("a1 waits");
    done(a1, "a1").await;
    assert_eq!(
        gate.next().await.name,
        "a2.test",
        "a2 starts once a1 is done"
    );
    release_b1.send(()).expect("b1 waits");
    done(a2, "a2").await;
    done(b1, "b1").await;
    let stats = cache.stats();
    assert_eq!(
        (stats.mints, stats.mint_waits, stats.mints_waiting),
        (3, 1, 0)
    );
    assert_eq!(cache.queue().clients(), 0, "no client is left in the map");
}

#[tokio::test]
async fn a_client_looping_names_takes_turns_with_the_others() {
    let cache = cache_with_slots(1);
    let mut gate = Gate::on(&cache);
    let releases: HashMap<&str, _> = ["a1.test", "a2.test", "a3.test", "b1.test"]
        .into_iter()
        .map(|name| (name, gate.hold(name)))
        .collect();
    let a1 = spawn_prepare(&cache, "a1.test", client(1));
    assert_eq!(gate.next().await.name, "a1.test");
    // Client 1 asks for two more names before client 2 asks for one.
    let a2 = spawn_prepare(&cache, "a2.test", client(1));
    until_waiting(&cache, &mut gate, 1).await;
    let a3 = spawn_prepare(&cache, "a3.test", client(1));
    until_waiting(&cache, &mut gate, 2).await;
    let b1 = spawn_prepare(&cache, "b1.test", client(2));
    until_waiting(&cache, &mut gate, 3).await;

    let mut order = vec!["a1.test".to_string()];
    for _ in 0..3 {
        let last = order.last().expect("a mint started").as_str();
        releases[last].send(()).expect("held");
        order.push(gate.next().await.name);
    }
    assert_eq!(
        order,
        ["a1.test", "b1.test", "a2.test", "a3.test"],
        "client 2's mint goes between client 1's"
    );
    releases["a3.test"].send(()).expect("held");
    for (task, what) in [(a1, "a1"), (a2, "a2"), (a3, "a3"), (b1, "b1")] {
        done(task, what).await;
    }
    assert_eq!(cache.queue().clients(), 0);
}

#[tokio::test]
async fn concurrent_prepares_of_one_name_mint_once() {
    let cache = cache_with_slots(2);
    let mut gate = Gate::on(&cache);
    let release = gate.hold("one.test");
    let first = spawn_prepare(&cache, "one.test", client(1));
    assert_eq!(gate.next().await.name, "one.test");
    // Both miss while the first mint is held: one from the same client (it
    // waits for the client's turn), one from another (it takes the second
    // slot and joins the first mint in the cache).
    let same_client = spawn_prepare(&cache, "one.test", client(1));
    let other_client = spawn_prepare(&cache, "ONE.test.", client(2));
    tokio::task::yield_now().await;
    release.send(()).expect("held");
    for (task, what) in [
        (first, "first"),
        (same_client, "same client"),
        (other_client, "other client"),
    ] {
        done(task, what).await;
    }
    assert!(gate.started_already().is_none(), "a second mint started");
    let stats = cache.stats();
    assert_eq!((stats.mints, stats.misses), (1, 3), "{stats:?}");
}

#[tokio::test]
async fn a_fresh_leaf_takes_no_turn() {
    let cache = cache_with_slots(1);
    // Minted before the gate, on this thread: not through prepare.
    cache.get("cached.test").expect("mint");
    let mut gate = Gate::on(&cache);
    let release = gate.hold("held.test");
    let held = spawn_prepare(&cache, "held.test", client(1));
    assert_eq!(gate.next().await.name, "held.test");
    let queued = spawn_prepare(&cache, "queued.test", client(1));
    until_waiting(&cache, &mut gate, 1).await;
    // The only slot and client 1's turn are taken, and a mint waits.
    assert_eq!(cache.queue().free_slots(), 0);

    for who in [client(1), client(2)] {
        assert!(
            cache
                .prepare("cached.test", who, WITHIN, || false)
                .is_none(),
            "a fresh leaf is ready at once for {who:?}"
        );
    }
    let stats = cache.stats();
    assert_eq!(
        (stats.mints_waiting, stats.mint_waits, stats.hits),
        (1, 1, 2),
        "the hits waited for nothing: {stats:?}"
    );

    release.send(()).expect("held");
    done(held, "held").await;
    assert_eq!(gate.next().await.name, "queued.test");
    done(queued, "queued").await;
}

#[tokio::test]
async fn a_mint_that_gets_no_turn_in_time_is_busy_and_gives_its_place_up() {
    let cache = cache_with_slots(1);
    let mut gate = Gate::on(&cache);
    let release = gate.hold("first.test");
    let first = spawn_prepare(&cache, "first.test", client(1));
    assert_eq!(gate.next().await.name, "first.test");

    let late = cache
        .prepare("late.test", client(1), Duration::ZERO, || false)
        .expect("not cached");
    let result = late.await;
    assert!(matches!(result, Err(PrepareError::Busy)), "{result:?}");
    assert_eq!(
        cache.stats().mints_waiting,
        0,
        "the late mint left the queue"
    );
    assert_eq!(
        cache.queue().clients(),
        1,
        "client 1's entry: the first mint's"
    );

    release.send(()).expect("held");
    done(first, "first").await;
    assert!(
        gate.started_already().is_none(),
        "the late mint never started"
    );
    assert_eq!(
        cache.queue().clients(),
        0,
        "the entry went with the last mint"
    );
}

#[tokio::test]
async fn a_failed_mint_is_an_error_and_is_not_cached() {
    let cache = cache_with_slots(1);
    let minting = cache
        .prepare("bad name", client(1), WITHIN, || false)
        .expect("not cached");
    let result = minting.await;
    assert!(
        matches!(result, Err(PrepareError::Mint(LeafError::InvalidName(_)))),
        "{result:?}"
    );
    assert!(cache
        .prepare("bad name", client(1), WITHIN, || false)
        .is_some());
    assert_eq!(cache.stats().mint_errors, 1);
    assert_eq!(cache.queue().clients(), 0);
}
