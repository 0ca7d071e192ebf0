use std::net::UdpSocket;

use super::*;

fn client(n: u8) -> Client {
    Client::Address(IpAddr::from([10, 0, 0, n]))
}

/// A resolver on a loopback nameserver that never answers (the socket is
/// returned so that it stays bound), with `total` places, one per client,
/// and a short wait for a turn.
fn silent(total: usize) -> (Resolver, UdpSocket) {
    let ns = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = ns.local_addr().expect("addr");
    let r = Resolver::bounded(Some(addr), total, 1, Duration::from_millis(200)).expect("resolver");
    (r, ns)
}

/// Starts a lookup of `name` for `client`'s request and waits until it holds a place.
async fn hanging(r: &Resolver, n: u8, name: &str) -> tokio::task::JoinHandle<()> {
    let before = r.in_flight();
    let (r2, owned) = (r.clone(), name.to_string());
    let task = tokio::spawn(async move {
        let _ = on_behalf_of(client(n), r2.lookup(&owned)).await;
    });
    while r.in_flight() == before {
        assert!(!task.is_finished(), "the lookup of {name:?} ended");
        tokio::task::yield_now().await;
    }
    task
}

#[tokio::test]
async fn a_client_past_its_share_is_refused_while_another_still_gets_a_place() {
    let (r, _ns) = silent(4);
    let held = hanging(&r, 1, "a.slow.test").await;
    let got = on_behalf_of(client(1), r.lookup("b.slow.test")).await;
    assert!(
        matches!(&got, Err(ResolveError::Busy { name, per_client: 1, total: 4, .. }) if name == "b.slow.test"),
        "{got:?}"
    );
    assert_eq!((r.busy(), r.in_flight()), (1, 1));
    // Another client's lookup is not held up by the first one's.
    let other = hanging(&r, 2, "c.slow.test").await;
    assert_eq!(r.in_flight(), 2);
    // An address needs no place.
    let ip = on_behalf_of(client(1), r.lookup("192.0.2.7")).await;
    assert_eq!(ip.expect("literal"), vec![IpAddr::from([192, 0, 2, 7])]);
    held.abort();
    other.abort();
    let _ = (held.await, other.await);
    assert_eq!(r.in_flight(), 0, "the places go with the lookups");
}

#[tokio::test]
async fn every_place_taken_refuses_a_new_client_too() {
    let (r, _ns) = silent(2);
    let a = hanging(&r, 1, "a.slow.test").await;
    let b = hanging(&r, 2, "b.slow.test").await;
    let got = on_behalf_of(client(3), r.lookup("c.slow.test")).await;
    assert!(matches!(got, Err(ResolveError::Busy { .. })), "{got:?}");
    // Without a client named, lookups count as one unknown client.
    let got = r.lookup("d.slow.test").await;
    assert!(matches!(got, Err(ResolveError::Busy { .. })), "{got:?}");
    assert_eq!(r.busy(), 2);
    a.abort();
    b.abort();
}

#[tokio::test]
async fn a_client_named_to_the_lookup_counts_whatever_the_task_names() {
    let (r, _ns) = silent(4);
    let held = hanging(&r, 1, "a.slow.test").await;
    // Named directly, with no task scope, the client finds its share taken.
    let got = r.lookup_for("b.slow.test", client(1)).await;
    assert!(matches!(got, Err(ResolveError::Busy { .. })), "{got:?}");
    // The client named wins over the one the task names.
    let got = on_behalf_of(client(2), r.lookup_for("c.slow.test", client(1))).await;
    assert!(matches!(got, Err(ResolveError::Busy { .. })), "{got:?}");
    assert_eq!((r.busy(), r.in_flight()), (2, 1));
    held.abort();
    let _ = held.await;
}
