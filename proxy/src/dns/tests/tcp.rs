//! DNS over TCP ([`crate::dns::tcp`]): a bounded number of connections, and
//! pipelined queries answered as each is resolved.

use std::time::Instant;

use hickory_proto::op::ResponseCode;

use super::*;
use crate::dns::clients::MAX_PER_CLIENT;

/// Writes one framed query on `s`.
async fn send_query(s: &mut TcpStream, bytes: &[u8]) {
    let len = u16::try_from(bytes.len()).expect("short query");
    s.write_all(&len.to_be_bytes()).await.expect("write len");
    s.write_all(bytes).await.expect("write query");
}

/// Reads one framed answer from `s`.
async fn read_answer(s: &mut TcpStream) -> Message {
    let n = s.read_u16().await.expect("read len");
    let mut buf = vec![0u8; usize::from(n)];
    s.read_exact(&mut buf).await.expect("read body");
    Message::from_vec(&buf).expect("answer parses")
}

/// One client may hold at most [`MAX_PER_CLIENT`] connections: the next is
/// closed at once (before, every connection was accepted until the proxy ran
/// out of descriptors, its HTTP listeners included), and one is served again
/// once another closes.
#[tokio::test]
async fn connections_past_the_per_client_bound_are_closed() {
    let (_server, addr) = start(settings(&[], None)).await;
    let mut held = Vec::new();
    for i in 0..MAX_PER_CLIENT {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        // A query each, so that every one is surely accepted and counted.
        let (_, q) = query_bytes(&format!("held{i}.example."), RecordType::A, None);
        send_query(&mut s, &q).await;
        assert_eq!(a_addrs(&read_answer(&mut s).await), vec![PROXY_IP]);
        held.push(s);
    }
    let mut over = TcpStream::connect(addr).await.expect("the kernel accepts");
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), over.read(&mut buf))
        .await
        .expect("closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    drop(held.pop());
    // The slot is freed when the server sees the close.
    let try_query = || async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let (_, q) = query_bytes("again.example.", RecordType::A, None);
        let len = u16::try_from(q.len()).ok()?;
        s.write_all(&len.to_be_bytes()).await.ok()?;
        s.write_all(&q).await.ok()?;
        let n = s.read_u16().await.ok()?;
        let mut buf = vec![0u8; usize::from(n)];
        s.read_exact(&mut buf).await.ok()?;
        Message::from_vec(&buf).ok()
    };
    let mut answered = None;
    for _ in 0..50 {
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), try_query()).await {
            answered = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(a_addrs(&answered.expect("served again")), vec![PROXY_IP]);
}

/// Queries pipelined on one connection are answered as each is resolved: an
/// intercepted name behind a passthrough query waiting on a silent upstream
/// is answered at once, and the passthrough one later (SERVFAIL). Before, the
/// connection's queries were answered in order.
#[tokio::test]
async fn a_slow_query_does_not_hold_up_the_next_on_the_same_connection() {
    let up = FakeUpstream::start(Mode::Silent).await;
    let (_server, addr) = start(settings(&["*.slow.test"], Some(up.addr))).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let (slow_id, slow) = query_bytes("a.slow.test.", RecordType::A, None);
    let (fast_id, fast) = query_bytes("fast.example.", RecordType::A, None);
    send_query(&mut s, &slow).await;
    send_query(&mut s, &fast).await;
    let started = Instant::now();
    let first = read_answer(&mut s).await;
    assert_eq!(first.metadata.id, fast_id, "the intercepted answer first");
    assert_eq!(a_addrs(&first), vec![PROXY_IP]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let second = read_answer(&mut s).await;
    assert_eq!(second.metadata.id, slow_id);
    assert_eq!(second.metadata.response_code, ResponseCode::ServFail);
}

/// A query whose header decodes and whose body does not gets FORMERR with its
/// id; one that is a response gets nothing, and the connection serves on.
#[tokio::test]
async fn a_broken_query_gets_formerr_and_a_response_gets_nothing() {
    let (_server, addr) = start(settings(&[], None)).await;
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // Header: id 0x1234, a query, one question; then a truncated name.
    let broken = [0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 5, b'a'];
    send_query(&mut s, &broken).await;
    let m = read_answer(&mut s).await;
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // QR set: a response, never answered (no reflection).
    let (_, mut reflected) = query_bytes("x.example.", RecordType::A, None);
    reflected[2] |= 0x80;
    send_query(&mut s, &reflected).await;
    let (id, q) = query_bytes("after.example.", RecordType::A, None);
    send_query(&mut s, &q).await;
    let m = read_answer(&mut s).await;
    assert_eq!(m.metadata.id, id, "the next answer is the next query's");
    assert_eq!(a_addrs(&m), vec![PROXY_IP]);
}
