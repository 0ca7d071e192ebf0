//! The per-client count, its cap, and the refusal warnings' rate.

use super::*;

/// The client at this address, interception not involved.
fn ip(s: &str) -> Client {
    Client::new(s.parse().expect("address"), None)
}

/// The workload of `uid` in the cgroup of id `cgroup_id`.
fn workload(uid: u32, cgroup_id: u64) -> Client {
    Client::Workload(crate::intercept::Workload { uid, cgroup_id })
}

fn limit(max: u32) -> Arc<ClientLimit> {
    ClientLimit::new(Some(cap(max)))
}

fn cap(max: u32) -> NonZeroU32 {
    NonZeroU32::new(max).expect("nonzero")
}

fn client(open: u32, max: u32) -> Refusal {
    Refusal::Client {
        open,
        max: cap(max),
    }
}

#[test]
fn a_client_gets_up_to_the_cap_and_another_client_is_not_affected() {
    let l = limit(3);
    let a = ip("127.0.0.1");
    let mut held: Vec<Permit> = (0..3)
        .map(|_| l.admit(a, Mode::Http).expect("under the cap"))
        .collect();
    assert_eq!(
        l.admit(a, Mode::Http).err(),
        Some(client(3, 3)),
        "the fourth is refused"
    );
    // Another address, and the same address written as v4-mapped v6 (the
    // same client on a dual-stack socket).
    let b = l
        .admit(ip("127.0.0.2"), Mode::Http)
        .expect("another client");
    assert_eq!(
        l.admit(ip("::ffff:127.0.0.1"), Mode::Http).err(),
        Some(client(3, 3))
    );
    assert_eq!(l.open(ip("127.0.0.2")), 1);
    // Closing one lets one more in.
    drop(held.pop());
    let again = l.admit(a, Mode::Http).expect("one closed");
    assert_eq!(l.open(a), 3);
    drop((again, b, held));
}

#[test]
fn workloads_from_one_address_each_get_the_cap() {
    // Under eBPF interception every workload connects from loopback; each
    // is counted on its own, and apart from clients of that address that
    // interception did not identify.
    let l = limit(2);
    let held: Vec<Permit> = (0..2)
        .map(|_| {
            l.admit(workload(1000, 7), Mode::Http)
                .expect("under the cap")
        })
        .collect();
    assert_eq!(
        l.admit(workload(1000, 7), Mode::Http).err(),
        Some(client(2, 2))
    );
    let other_cgroup = l
        .admit(workload(1000, 8), Mode::Http)
        .expect("another cgroup");
    let other_uid = l.admit(workload(1001, 7), Mode::Http).expect("another uid");
    let direct = l
        .admit(ip("127.0.0.1"), Mode::Http)
        .expect("the address itself");
    assert_eq!(l.open(workload(1000, 7)), 2);
    assert_eq!(l.open(ip("127.0.0.1")), 1);
    drop((held, other_cgroup, other_uid, direct));
    assert_eq!(l.clients(), 0);
}

#[test]
fn a_cap_set_later_counts_the_connections_already_open() {
    let l = ClientLimit::new(None);
    let a = ip("127.0.0.1");
    // No cap: everything is admitted, and counted.
    let mut held: Vec<Permit> = (0..5)
        .map(|_| l.admit(a, Mode::Http).expect("no cap"))
        .collect();
    assert_eq!(l.open(a), 5);
    // A reload sets a cap below what the client has open: nothing is
    // closed, and nothing more is admitted until enough have closed.
    assert_eq!(l.set_max(Some(cap(3))), None);
    assert_eq!(l.admit(a, Mode::Http).err(), Some(client(5, 3)));
    held.truncate(3);
    assert_eq!(l.admit(a, Mode::Http).err(), Some(client(3, 3)));
    held.pop();
    held.push(l.admit(a, Mode::Http).expect("under the new cap"));
    // Raised, then removed: admitted again.
    assert_eq!(l.set_max(Some(cap(4))), Some(cap(3)));
    held.push(l.admit(a, Mode::Http).expect("under the raised cap"));
    assert!(l.admit(a, Mode::Http).is_err());
    assert_eq!(l.set_max(None), Some(cap(4)));
    held.push(l.admit(a, Mode::Http).expect("no cap again"));
    assert_eq!(l.open(a), 5);
    drop(held);
    assert_eq!(l.clients(), 0);
}

#[test]
fn closed_connections_leave_no_entry_behind() {
    let l = limit(2);
    let permits: Vec<Permit> = (0..200u32)
        .map(|i| {
            let v4 = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            l.admit(Client::Address(IpAddr::V4(v4)), Mode::Http)
                .expect("one each")
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
    assert_eq!(
        l.note_refusal(client(1, 1), t0),
        Some(1),
        "the first refusal is reported"
    );
    let mut warned = Vec::new();
    // A minute of refusals every 10 ms.
    for i in 1..=6000u32 {
        if let Some(n) = l.note_refusal(client(1, 1), t0 + Duration::from_millis(10) * i) {
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
    let permit = Arc::new(l.admit(a, Mode::Http).expect("first"));
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn(permit, async move {
        // What hyper hands on to an upgrade outlives this task.
        let _ = tx.send(Permitted::new(tokio::io::empty()));
    });
    let io = rx.await.expect("the io");
    tokio::task::yield_now().await;
    assert_eq!(l.open(a), 1, "still counted");
    assert!(l.admit(a, Mode::Http).is_err());
    drop(io);
    assert_eq!(l.open(a), 0);
    // Outside any connection's task: no permit.
    assert!(Permitted::new(tokio::io::empty())._permit.is_none());
}

#[test]
fn the_gauges_count_every_open_connection_by_listener_and_no_refused_one() {
    let l = limit(2);
    let gauges: [prometheus_client::metrics::gauge::Gauge; 4] = Default::default();
    l.count_into(gauges.clone());
    let at = |mode| {
        let i = LISTENERS
            .iter()
            .position(|m| *m == mode)
            .expect("a listener");
        gauges[i].get()
    };
    let a = l.admit(ip("127.0.0.1"), Mode::Http).expect("first");
    let b = l.admit(ip("127.0.0.1"), Mode::Tunnel).expect("second");
    let c = l.admit(ip("::1"), Mode::Http).expect("another client");
    assert!(
        l.admit(ip("127.0.0.1"), Mode::Transparent).is_err(),
        "over the cap"
    );
    assert_eq!(
        [Mode::Http, Mode::Https, Mode::Tunnel, Mode::Transparent].map(at),
        [2, 0, 1, 0],
        "a refused connection is not open"
    );
    drop((a, c));
    assert_eq!(at(Mode::Http), 0);
    assert_eq!(at(Mode::Tunnel), 1);
    drop(b);
    assert_eq!(at(Mode::Tunnel), 0, "back to zero when idle");
}

#[test]
fn the_total_cap_counts_every_client_and_refusals_under_either_cap_take_no_place() {
    let l = ClientLimit::new(Some(cap(2)));
    assert_eq!(l.set_max_total(Some(cap(3))), None);
    let (a, b) = (ip("127.0.0.1"), ip("127.0.0.2"));
    let mut held = vec![
        l.admit(a, Mode::Http).expect("1"),
        l.admit(a, Mode::Http).expect("2"),
    ];
    // At its own cap, a's refusal takes no place in the total.
    assert_eq!(l.admit(a, Mode::Http).err(), Some(client(2, 2)));
    assert_eq!(l.open_total(), 2);
    held.push(l.admit(b, Mode::Http).expect("3"));
    // Three open in all: any client is refused, whatever it has open.
    let total = Refusal::Total {
        open: 3,
        max: cap(3),
    };
    assert_eq!(l.admit(ip("127.0.0.3"), Mode::Http).err(), Some(total));
    assert_eq!(l.admit(b, Mode::Http).err(), Some(total));
    assert_eq!(l.open_total(), 3);
    // One closes: a place again.
    drop(held.remove(0));
    held.push(l.admit(ip("127.0.0.3"), Mode::Http).expect("a place freed"));
    // A reload removes the total cap: only the per-client one is left.
    assert_eq!(l.set_max_total(None), Some(cap(3)));
    held.push(l.admit(b, Mode::Http).expect("no total cap"));
    assert_eq!(l.open_total(), 4);
    drop(held);
    assert_eq!(l.open_total(), 0);
    assert_eq!(l.clients(), 0);
}
