//! The upstream exchanges in flight are shared fairly: one client flooding
//! passthrough names at an upstream that never answers takes at most its
//! share of the places, and another client's passthrough query still goes
//! upstream.

use std::collections::HashSet;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::*;
use crate::dns::forward::{MAX_IN_FLIGHT, MAX_IN_FLIGHT_PER_CLIENT};

/// More queries than every place in all: before the per-client share, the
/// flooding client took all [`MAX_IN_FLIGHT`] of them.
const FLOOD: usize = MAX_IN_FLIGHT + 100;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_flooding_a_dead_upstream_leaves_room_for_another_clients_queries() {
    let upstream = FakeUpstream::start(Mode::Silent).await;
    let (_server, addr) = start(settings(&["*.pass.test"], Some(upstream.addr))).await;
    // The flood, from 127.0.0.1: every query is either forwarded (the upstream
    // sees it and never answers) or answered SERVFAIL at once.
    let flooder = UdpSocket::bind("127.0.0.1:0").await.expect("bind flooder");
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
    let other = UdpSocket::bind("127.0.0.2:0")
        .await
        .expect("bind 127.0.0.2");
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
