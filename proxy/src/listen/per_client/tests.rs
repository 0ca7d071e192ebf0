//! The per-client count, its cap, and the refusal warnings' rate.

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

fn limit(max: u32) -> Arc<ClientLimit> {
    ClientLimit::new(NonZeroU32::new(max).expect("nonzero"))
}

#[test]
fn a_client_gets_up_to_the_cap_and_another_client_is_not_affected() {
    let l = limit(3);
    let a = ip("127.0.0.1");
    let mut held: Vec<Permit> = (0..3).map(|_| l.admit(a).expect("under the cap")).collect();
    assert_eq!(l.admit(a).err(), Some(3), "the fourth is refused");
    // Another address, and the same address written as v4-mapped v6 (the
    // same client on a dual-stack socket).
    let b = l.admit(ip("127.0.0.2")).expect("another client");
    assert_eq!(l.admit(ip("::ffff:127.0.0.1")).err(), Some(3));
    assert_eq!(l.open(ip("127.0.0.2")), 1);
    // Closing one lets one more in.
    drop(held.pop());
    let again = l.admit(a).expect("one closed");
    assert_eq!(l.open(a), 3);
    drop((again, b, held));
}

#[test]
fn closed_connections_leave_no_entry_behind() {
    let l = limit(2);
    let permits: Vec<Permit> = (0..200u32)
        .map(|i| {
            let v4 = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            l.admit(IpAddr::V4(v4)).expect("one each")
        })
        .collect();
    assert_eq!(l.clients(), 200);
    drop(permits);
    assert_eq!(l.clients(), 0);
}

#[test]
fn one_warning_per_period_while_connections_are_refused() {
    let l = limit(1);
    let t0 = Instant::now();
    assert_eq!(l.note_refusal(t0), Some(1), "the first refusal is reported");
    let mut warned = Vec::new();
    // A minute of refusals every 10 ms.
    for i in 1..=6000u32 {
        if let Some(n) = l.note_refusal(t0 + Duration::from_millis(10) * i) {
            warned.push(n);
        }
    }
    assert_eq!(warned.len(), 6, "{warned:?}");
    assert_eq!(
        warned.iter().sum::<u64>(),
        6000,
        "every refusal is counted once"
    );
}

#[tokio::test]
async fn an_io_made_in_a_connections_task_holds_its_permit_after_the_task() {
    let l = limit(1);
    let a = ip("127.0.0.1");
    let permit = Arc::new(l.admit(a).expect("first"));
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn(Some(permit), async move {
        // What hyper hands on to an upgrade outlives this task.
        let _ = tx.send(Permitted::new(tokio::io::empty()));
    });
    let io = rx.await.expect("the io");
    tokio::task::yield_now().await;
    assert_eq!(l.open(a), 1, "still counted");
    assert!(l.admit(a).is_err());
    drop(io);
    assert_eq!(l.open(a), 0);
    // Outside any connection's task: no permit.
    assert!(Permitted::new(tokio::io::empty())._permit.is_none());
}
