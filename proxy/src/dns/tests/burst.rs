//! The UDP socket's receive buffer: a burst of queries that arrives before
//! the server reads any of them must be queued, not dropped.

use std::collections::HashSet;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::RecordType;
use socket2::SockRef;

use super::*;
use crate::dns::bind::bind_pair;
use crate::dns::UDP_RECV_BUFFER;

/// More than the ~256 small datagrams a default-sized buffer (208 KiB)
/// holds, fewer than the ~512 of the smallest buffer the fix can get (twice
/// the default, when `net.core.rmem_max` is left at its default).
const BURST: u16 = 400;

#[tokio::test]
async fn udp_socket_gets_a_larger_receive_buffer_than_the_default() {
    let plain = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a plain socket");
    let default = SockRef::from(&plain).recv_buffer_size().expect("SO_RCVBUF");
    let (udp, _tcp, _) = bind_pair((Ipv4Addr::LOCALHOST, 0).into(), true, false).expect("bind");
    let ours = SockRef::from(&udp).recv_buffer_size().expect("SO_RCVBUF");
    // Linux reports twice what it grants, capped by net.core.rmem_max: with
    // rmem_max at its default (= rmem_default) that is still twice the default.
    assert!(
        ours > default,
        "SO_RCVBUF {ours} is not above the default {default} (requested {UDP_RECV_BUFFER})"
    );
}

/// All `BURST` queries are sent while the server cannot read (this test's
/// runtime is single-threaded and does not yield while sending), so they
/// all sit in the socket's receive buffer at once. Every one must be answered.
#[tokio::test]
async fn a_burst_of_queries_is_queued_and_all_answered() {
    let (_server, addr) = start(settings(&[], None)).await;
    let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind client");
    // The answers come back as fast as the server makes them: room for all.
    let _ = SockRef::from(&client).set_recv_buffer_size(UDP_RECV_BUFFER);
    let mut ids = HashSet::new();
    for i in 0..BURST {
        let (_, mut bytes) = query_bytes(&format!("burst-{i}.example.com."), RecordType::A, None);
        // Random ids would collide among this many: number them instead.
        bytes[..2].copy_from_slice(&i.to_be_bytes());
        ids.insert(i);
        client.send_to(&bytes, addr).expect("send query");
    }
    client.set_nonblocking(true).expect("nonblocking");
    let client = UdpSocket::from_std(client).expect("tokio socket");
    let mut buf = vec![0u8; 4096];
    let mut answered = 0usize;
    while answered < usize::from(BURST) {
        match tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                let msg = Message::from_vec(&buf[..n]).expect("answer parses");
                assert!(ids.remove(&msg.metadata.id), "unexpected answer id");
                assert_eq!(a_addrs(&msg), [PROXY_IP]);
                answered += 1;
            }
            Ok(Err(e)) => panic!("recv: {e}"),
            Err(_) => break,
        }
    }
    assert_eq!(
        answered,
        usize::from(BURST),
        "{} of {BURST} queries in a burst went unanswered",
        ids.len()
    );
}
