//! The upstream exchanges in flight are shared fairly: one client flooding
//! passthrough names at an upstream that never answers takes at most its
//! share of the places, and another client's passthrough query still goes
//! upstream. A client is its address, or the workload interception names for
//! a datagram from this host.

use std::collections::{HashMap, HashSet};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::*;
use crate::dns::forward::{MAX_IN_FLIGHT, MAX_IN_FLIGHT_PER_CLIENT};
use crate::intercept::{ClientIdentity, DatagramIdentity, Workload};

/// More queries than every place in all: before the per-client share, the
/// flooding client took all [`MAX_IN_FLIGHT`] of them.
const FLOOD: usize = MAX_IN_FLIGHT + 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flooding_a_dead_upstream_leaves_room_for_another_clients_queries() {
    flood_then_ask_from("127.0.0.2", false).await;
}

/// Two workloads interception redirected, both from 127.0.0.1: each has its
/// share. Before, both were 127.0.0.1's, and the second one's passthrough
/// query got SERVFAIL while the first one's flood held the share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workloads_on_loopback_have_a_passthrough_share_each() {
    flood_then_ask_from("127.0.0.1", true).await;
}

/// The workloads of the datagrams sent to `server` from loopback, by port,
/// as the kernel's record of redirected sockets would name them.
struct ByPort {
    server: SocketAddr,
    workloads: HashMap<u16, Workload>,
}

impl DatagramIdentity for ByPort {
    fn identify_datagram(&self, peer: SocketAddr, local: SocketAddr) -> Option<Workload> {
        assert_eq!(local, self.server, "a datagram's tuple names the listener");
        self.workloads.get(&peer.port()).copied()
    }
}

/// No TCP connection is identified.
struct NoConnections;

impl ClientIdentity for NoConnections {
    fn identify(&self, _: SocketAddr, _: SocketAddr) -> Option<Workload> {
        None
    }
}

/// A flood of passthrough queries from a socket on 127.0.0.1, then one from
/// a socket on `other_ip`, which goes upstream; with `identify`, the two
/// sockets are two workloads to the server.
async fn flood_then_ask_from(other_ip: &str, identify: bool) {
    let upstream = FakeUpstream::start(Mode::Silent).await;
    let (server, addr) = start(settings(&["*.pass.test"], Some(upstream.addr))).await;
    // The flood, from 127.0.0.1: every query is either forwarded (the upstream
    // sees it and never answers) or answered SERVFAIL at once.
    let flooder = UdpSocket::bind("127.0.0.1:0").await.expect("bind flooder");
    let other = UdpSocket::bind((other_ip, 0))
        .await
        .expect("bind the other client");
    if identify {
        let port = |s: &UdpSocket| s.local_addr().expect("local address").port();
        let workload = |cgroup_id| Workload { uid: 0, cgroup_id };
        let senders = ByPort {
            server: addr,
            workloads: HashMap::from([(port(&flooder), workload(1)), (port(&other), workload(2))]),
        };
        assert!(server.identify_clients(Arc::new(NoConnections), Arc::new(senders)));
    }
    // Sent in batches, each accounted for before the next, so that neither
    // the server's receive buffer nor the flooder's drops a datagram.
    let mut ids = HashSet::new();
    let mut refused = 0;
    let mut buf = vec![0u8; 65_535];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for batch in (0..FLOOD).collect::<Vec<_>>().chunks(32) {
        for i in batch {
            let (id, bytes) = query_bytes(&format!("n{i}.pass.test"), RecordType::A, None);
            ids.insert(id);
            flooder.send_to(&bytes, addr).await.expect("send");
        }
        let sent = batch.last().map_or(0, |i| i + 1);
        while refused + upstream.seen().len() < sent {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{refused} SERVFAIL and {} forwarded of {sent}",
                upstream.seen().len()
            );
            let Ok(got) =
                tokio::time::timeout(Duration::from_millis(10), flooder.recv(&mut buf)).await
            else {
                continue;
            };
            let n = got.expect("recv");
            let msg = Message::from_vec(&buf[..n]).expect("answer parses");
            assert_eq!(msg.metadata.response_code, ResponseCode::ServFail);
            assert!(ids.contains(&msg.metadata.id), "an answer to the flood");
            refused += 1;
        }
    }
    assert_eq!(
        upstream.seen().len(),
        MAX_IN_FLIGHT_PER_CLIENT,
        "the flooding client's share went upstream, the rest got SERVFAIL"
    );
    // While the flood's queries still wait on the upstream, another client's
    // passthrough name goes upstream too (before: SERVFAIL, every place taken).
    let (_, bytes) = query_bytes("other.pass.test", RecordType::A, None);
    other.send_to(&bytes, addr).await.expect("send");
    let seen = loop {
        let seen = upstream.seen();
        if seen.iter().any(|q| q.starts_with("other.pass.test.")) {
            break seen;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!(
                "the other client's query never reached the upstream ({} forwarded, all the flood's)",
                seen.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(seen.len(), MAX_IN_FLIGHT_PER_CLIENT + 1);
}
