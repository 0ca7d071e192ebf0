use super::*;

fn leaked(total: usize) -> &'static BufferBudget {
    Box::leak(Box::new(BufferBudget::new(total)))
}

#[test]
fn holds_share_the_total_and_give_it_back_when_dropped() {
    let b = leaked(100);
    let mut first = b.hold();
    first.grow(60).expect("fits");
    let mut second = b.hold();
    assert_eq!(second.grow(50), Err(Exhausted { total: 100 }));
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
    let mut h = b.hold();
    h.grow(usize::MAX / 2).expect("no limit");
    b.set_total(10);
    let mut other = b.hold();
    assert!(other.grow(1).is_err(), "over the new total already");
    drop(h);
    other.grow(10).expect("room once the old hold went");
}

#[test]
fn concurrent_holds_never_exceed_the_total() {
    let b = leaked(1000);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut got = 0;
                for _ in 0..10_000 {
                    let mut h = b.hold();
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
    assert_eq!(b.used(), 0);
}
