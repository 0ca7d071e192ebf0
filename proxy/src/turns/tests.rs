//! The shares of turns wider than one (the mint queue's one-at-a-time
//! turns are tested in `tls::mint_queue`).

use std::net::IpAddr;

use super::*;

fn client(n: u8) -> Client {
    Client::Address(IpAddr::from([10, 0, 0, n]))
}

async fn full_turn(turns: &Arc<Turns>, n: u8) -> Turn {
    let turn = turns.client_turn(client(n)).await.expect("turn");
    turn.slot().await.expect("slot")
}

/// Runs the other tasks until `n` turns wait.
async fn until_waiting(turns: &Turns, n: u64) {
    while turns.waiting() < n {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_client_holds_its_share_and_no_more_while_others_still_get_slots() {
    let turns = Turns::new(4, 2);
    let first = full_turn(&turns, 1).await;
    let second = full_turn(&turns, 1).await;
    assert_eq!(turns.in_use(), 2);
    let t = turns.clone();
    let third = tokio::spawn(async move { full_turn(&t, 1).await });
    until_waiting(&turns, 1).await;
    assert!(!third.is_finished(), "a third turn past the client's share");
    assert_eq!(turns.in_use(), 2, "the waiting turn holds no slot");
    // The other client gets the slots the first one cannot take.
    let a = full_turn(&turns, 2).await;
    let b = full_turn(&turns, 2).await;
    assert_eq!((turns.in_use(), turns.waits()), (4, 1));
    drop((a, b));
    assert!(!third.is_finished(), "free slots do not lift the share");
    drop(first);
    let third = third.await.expect("task");
    assert_eq!((turns.in_use(), turns.waiting()), (2, 0));
    drop((second, third));
    assert_eq!(
        (turns.in_use(), turns.clients()),
        (0, 0),
        "nothing left behind"
    );
}

#[tokio::test]
async fn a_wait_cut_short_gives_its_place_up() {
    let turns = Turns::new(1, 8);
    let held = full_turn(&turns, 1).await;
    let waited = tokio::time::timeout(std::time::Duration::from_millis(10), full_turn(&turns, 2));
    assert!(waited.await.is_err(), "a slot while the only one is held");
    assert_eq!(
        (turns.waiting(), turns.clients(), turns.in_use()),
        (0, 1, 1)
    );
    drop(held);
    assert_eq!((turns.clients(), turns.in_use()), (0, 0));
    drop(full_turn(&turns, 2).await);
}
