use std::net::IpAddr;

use super::*;
use crate::intercept::Client;

fn client(n: u8) -> Client {
    Client::Address(IpAddr::from([10, 0, 0, n]))
}

/// Client `n`'s turn and a slot, taken at once.
async fn full_turn(queue: &Arc<MintQueue>, n: u8) -> Turn {
    let turn = queue.client_turn(client(n)).await.expect("turn");
    turn.slot().await.expect("slot")
}

/// Runs the other tasks until `n` turns are waited for; panics if
/// `went_ahead` says a turn that should wait was granted.
async fn until_waiting(queue: &MintQueue, n: u64, mut went_ahead: impl FnMut() -> bool) {
    while queue.waiting() < n {
        assert!(!went_ahead(), "a turn was granted that should wait");
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_free_turn_is_taken_without_waiting_and_its_entry_goes_with_it() {
    let queue = with_slots(1);
    let turn = full_turn(&queue, 1).await;
    assert_eq!((queue.waits(), queue.waiting(), queue.clients()), (0, 0, 1));
    assert_eq!(queue.free_slots(), 0);
    drop(turn);
    assert_eq!((queue.clients(), queue.free_slots()), (0, 1));
}

#[tokio::test]
async fn a_clients_turns_come_one_at_a_time() {
    let queue = with_slots(4);
    let first = queue.client_turn(client(1)).await.expect("turn");
    let q = queue.clone();
    let second = tokio::spawn(async move { q.client_turn(client(1)).await.map(drop) });
    until_waiting(&queue, 1, || second.is_finished()).await;
    // Another client is not held up by the first one's turn.
    let other = queue.client_turn(client(2)).await.expect("other turn");
    assert!(
        !second.is_finished(),
        "a second turn while the first is held"
    );
    assert_eq!((queue.waits(), queue.clients()), (1, 2));

    drop(first);
    second.await.expect("task").expect("second turn");
    assert_eq!(queue.waiting(), 0);
    drop(other);
    assert_eq!(queue.clients(), 0, "idle clients leave the map");
}

#[tokio::test]
async fn a_wait_given_up_leaves_no_place_behind() {
    let queue = with_slots(1);
    let first = queue.client_turn(client(1)).await.expect("turn");
    let q = queue.clone();
    let waiter = tokio::spawn(async move { q.client_turn(client(1)).await.map(drop) });
    until_waiting(&queue, 1, || waiter.is_finished()).await;
    waiter.abort();
    assert!(waiter.await.is_err_and(|e| e.is_cancelled()));
    assert_eq!((queue.waiting(), queue.clients()), (0, 1));
    drop(first);
    assert_eq!(queue.clients(), 0);
}

#[tokio::test]
async fn slots_go_first_come_first_served() {
    let queue = with_slots(1);
    let held = full_turn(&queue, 1).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for n in 2..=4 {
        let (q, tx) = (queue.clone(), tx.clone());
        tasks.push(tokio::spawn(async move {
            let slot = full_turn(&q, n).await;
            tx.send(n).expect("the test listens");
            drop(slot);
        }));
        until_waiting(&queue, u64::from(n) - 1, || !rx.is_empty()).await;
    }
    drop(held);
    for task in tasks {
        task.await.expect("task");
    }
    let order: Vec<u8> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(order, [2, 3, 4], "slots in the order they were asked for");
    assert_eq!((queue.clients(), queue.free_slots()), (0, 1));
}
