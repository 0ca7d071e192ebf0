//! Re-reads after reloads: one at a time per source, and a fetch that ends
//! after a later one never replaces the later one's value or marks it stale.

use tokio::sync::Semaphore;

use super::*;

/// A backend each of whose calls answers what it was set to when the call
/// began, once the test opens that call's gate (calls numbered from 0).
#[derive(Clone, Default)]
struct Gated {
    answer: Scripted,
    gates: Arc<Mutex<Vec<Arc<Semaphore>>>>,
}

impl Gated {
    fn gate(&self, call: usize) -> Arc<Semaphore> {
        let mut gates = self.gates.lock().expect("lock");
        while gates.len() <= call {
            gates.push(Arc::new(Semaphore::new(0)));
        }
        gates[call].clone()
    }
    fn open(&self, call: usize) {
        self.gate(call).add_permits(1);
    }
    fn calls(&self) -> usize {
        self.answer.calls()
    }
}

#[async_trait]
impl Fetch for Gated {
    async fn fetch(&self) -> Result<SecretValue, SecretError> {
        let call = self.answer.calls();
        let answer = self.answer.fetch().await;
        let _open = self.gate(call).acquire_owned().await.expect("gate");
        answer
    }
}

#[tokio::test(start_paused = true)]
async fn reloads_in_a_burst_get_one_reread_in_flight_and_one_after_it() {
    let backend = Gated::default();
    backend.answer.set(Ok("v1".into()));
    backend.open(0);
    let cached = Cached::new("k".into(), Box::new(backend.clone()), Duration::ZERO);
    assert_eq!(cached.get().await.expect("value").expose(), "v1");

    backend.answer.set(Ok("v2".into()));
    for _ in 0..5 {
        assert!(cached.reread(), "a re-read runs or is queued");
    }
    settle().await;
    assert_eq!(backend.calls(), 2, "one re-read in flight, not five");
    backend.open(1);
    settle().await;
    assert_eq!(
        backend.calls(),
        3,
        "the reloads that asked meanwhile get one more"
    );
    backend.answer.set(Ok("v3".into()));
    backend.open(2);
    settle().await;
    assert_eq!(cached.get().await.expect("value").expose(), "v2");
    assert_eq!(backend.calls(), 3, "and no more");

    assert!(cached.reread(), "a later reload re-reads again");
    backend.open(3);
    settle().await;
    assert_eq!(backend.calls(), 4);
    assert_eq!(cached.get().await.expect("value").expose(), "v3");
}

#[tokio::test(start_paused = true)]
async fn a_reread_overtaken_by_a_refresh_neither_replaces_nor_stales_its_value() {
    let backend = Gated::default();
    backend.answer.set(Ok("v1".into()));
    backend.open(0);
    let cached = Cached::new("k".into(), Box::new(backend.clone()), Duration::ZERO);
    assert_eq!(cached.get().await.expect("value").expose(), "v1");

    // A re-read reads the old value, then waits at its gate; the backend rotates
    // and a refresh (its ttl set by the reload) gets the new one first.
    assert!(cached.reread());
    settle().await;
    backend.answer.set(Ok("v2".into()));
    cached.set_ttl(Duration::from_secs(10), 1);
    backend.open(2);
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle().await;
    assert_eq!(backend.calls(), 3);
    assert_eq!(cached.get().await.expect("value").expose(), "v2");
    backend.open(1);
    settle().await;
    assert_eq!(
        cached.get().await.expect("value").expose(),
        "v2",
        "the re-read that began first ends last and is not served"
    );

    // The same for a failure: a re-read that began before a good refresh and
    // fails after it leaves the value fresh.
    backend.answer.set(Err(down()));
    assert!(cached.reread());
    settle().await;
    backend.answer.set(Ok("v3".into()));
    backend.open(4);
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle().await;
    assert_eq!(backend.calls(), 5);
    backend.open(3);
    settle().await;
    assert_eq!(cached.get().await.expect("value").expose(), "v3");
    assert_eq!(
        cached.stale_for(),
        Duration::ZERO,
        "fresh: the later fetch succeeded"
    );
}
