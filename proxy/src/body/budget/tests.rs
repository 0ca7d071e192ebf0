use std::net::IpAddr;

use super::*;

fn leaked(total: usize) -> &'static BufferBudget {
    Box::leak(Box::new(BufferBudget::new(total)))
}

fn client(n: u8) -> Client {
    Client::Address(IpAddr::from([10, 0, 0, n]))
}

#[test]
fn holds_share_the_total_and_give_it_back_when_dropped() {
    let b = leaked(100);
    let mut first = b.hold(client(1));
    first.grow(60).expect("fits");
    let mut second = b.hold(client(2));
    assert_eq!(second.grow(50), Err(Exhausted::Total { total: 100 }));
    assert_eq!(second.bytes(), 0, "a refused grow takes nothing");
    second.grow(40).expect("what is left fits");
    assert_eq!(b.used(), 100);
    drop(first);
    assert_eq!(b.used(), 40);
    second.grow(60).expect("freed by the first");
    drop(second);
    assert_eq!(b.used(), 0);
}

#[test]
fn zero_is_no_limit_and_a_new_total_applies_at_once() {
    let b = leaked(0);
    let mut h = b.hold(client(1));
    h.grow(usize::MAX / 2).expect("no limit");
    b.set_total(10);
    let mut other = b.hold(client(2));
    assert!(other.grow(1).is_err(), "over the new total already");
    drop(h);
    other.grow(10).expect("room once the old hold went");
}

#[test]
fn concurrent_holds_never_exceed_the_total() {
    let b = leaked(1000);
    let threads: Vec<_> = (0..8)
        .map(|n| {
            std::thread::spawn(move || {
                let mut got = 0;
                for _ in 0..10_000 {
                    let mut h = b.hold(client(n));
                    if h.grow(300).is_ok() {
                        assert!(b.used() <= 1000);
                        got += 1;
                    }
                }
                got
            })
        })
        .collect();
    let granted: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
    assert!(granted > 0);
    assert_eq!((b.used(), b.clients()), (0, 0));
}

#[test]
fn a_clients_bodies_together_hold_half_and_the_other_half_stays_for_others() {
    let b = leaked(100);
    let mut a1 = b.hold(client(1));
    a1.grow(30).expect("fits");
    let mut a2 = b.hold(client(1));
    a2.grow(20).expect("the client's two bodies hold half");
    assert_eq!(
        a2.grow(1),
        Err(Exhausted::Share {
            share: 50,
            total: 100
        }),
        "past half with two bodies"
    );
    let mut a3 = b.hold(client(1));
    assert!(a3.grow(1).is_err(), "a third body while the two hold half");
    // Another client gets the other half whole.
    let mut other = b.hold(client(2));
    other.grow(50).expect("the other half");
    assert_eq!(b.used(), 100);
    drop(a1);
    a3.grow(30).expect("room once the client's first body went");
    drop((a2, a3, other));
    assert_eq!((b.used(), b.clients()), (0, 0), "nothing left counted");
}

#[test]
fn a_clients_only_body_may_grow_past_half_to_what_the_total_has_left() {
    let b = leaked(100);
    let mut other = b.hold(client(2));
    other.grow(10).expect("fits");
    let mut big = b.hold(client(1));
    big.grow(60).expect("one body past half");
    big.grow(30).expect("up to what the others leave");
    assert_eq!(big.grow(1), Err(Exhausted::Total { total: 100 }));
    drop(other);
    // Its client's next body waits for the big one to go, room or not.
    let mut next = b.hold(client(1));
    assert!(matches!(next.grow(1), Err(Exhausted::Share { .. })));
    assert_eq!(next.bytes(), 0);
    drop(big);
    next.grow(100).expect("alone again, the whole total");
    drop(next);
    assert_eq!((b.used(), b.clients()), (0, 0));
}
