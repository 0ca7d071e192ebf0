//! Tests of the DNS server: in-process queries (`server`), real tools such as
//! dig and dnsmasq (`tools`, with the peers themselves in `peers`),
//! getaddrinfo in a private network namespace (`netns`), and a burst of UDP
//! queries (`burst`), one client flooding the forwarder (`fairness`). Helpers
//! shared by them live here.

mod apex;
mod burst;
mod compression;
mod fairness;
mod fuzz;
mod netns;
mod peers;
mod server;
mod squat;
mod tcp;
mod tools;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use super::{DnsServer, DnsSettings, StaticRecord};

pub(super) const PROXY_IP: Ipv4Addr = Ipv4Addr::new(10, 11, 12, 13);

/// Settings listening on 127.0.0.1:0 with the given passthrough globs and upstream.
pub(super) fn settings(passthrough: &[&str], upstream: Option<SocketAddr>) -> DnsSettings {
    DnsSettings {
        listen: vec![(Ipv4Addr::LOCALHOST, 0).into()],
        proxy_ip: PROXY_IP,
        proxy_ip6: None,
        upstream,
        passthrough: passthrough
            .iter()
            .map(|p| p.parse().expect("test glob"))
            .collect(),
        records: Vec::new(),
        mark_as_proxy: false,
        clients: crate::client_acl::ClientAcl::new(None),
    }
}

pub(super) fn a_record(name: &str, ip: [u8; 4]) -> StaticRecord {
    StaticRecord::A {
        name: name.into(),
        ip: ip.into(),
    }
}

pub(super) fn cname_record(name: &str, target: &str) -> StaticRecord {
    StaticRecord::Cname {
        name: name.into(),
        target: target.into(),
    }
}

pub(super) async fn start(s: DnsSettings) -> (DnsServer, SocketAddr) {
    let server = DnsServer::start(s).await.expect("dns server starts");
    let addr = server.local_addrs()[0];
    (server, addr)
}

pub(super) fn query_bytes(name: &str, qtype: RecordType, edns: Option<u16>) -> (u16, Vec<u8>) {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(
        Name::from_ascii(name).expect("test name"),
        qtype,
    ));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        msg.set_edns(e);
    }
    (msg.metadata.id, msg.to_vec().expect("encode query"))
}

/// One query over UDP; panics after 10 s without an answer.
pub(super) async fn udp_query(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    edns: Option<u16>,
) -> Message {
    udp_query_raw(server, name, qtype, edns).await.0
}

/// [`udp_query`], with the datagram as received; panics unless the whole
/// datagram is the message (no bytes after its last record).
pub(super) async fn udp_query_raw(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    edns: Option<u16>,
) -> (Message, Vec<u8>) {
    use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
    let (id, bytes) = query_bytes(name, qtype, edns);
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
    sock.send_to(&bytes, server).await.expect("send query");
    let mut buf = vec![0u8; 65_535];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.recv(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no udp answer for {name} {qtype}"))
        .expect("recv");
    buf.truncate(n);
    let mut decoder = BinDecoder::new(&buf);
    let msg = Message::read(&mut decoder).expect("answer parses");
    assert!(
        decoder.is_empty(),
        "{} bytes after the message in a {n}-byte datagram",
        decoder.len()
    );
    assert_eq!(msg.metadata.id, id, "answer id");
    (msg, buf)
}

/// One query over TCP; panics after 10 s without an answer.
pub(super) async fn tcp_query(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let (id, bytes) = query_bytes(name, qtype, None);
    let fut = async {
        let mut s = TcpStream::connect(server).await.expect("connect");
        let len = u16::try_from(bytes.len()).expect("short query");
        s.write_all(&len.to_be_bytes()).await.expect("write");
        s.write_all(&bytes).await.expect("write");
        let n = s.read_u16().await.expect("read len");
        let mut buf = vec![0u8; usize::from(n)];
        s.read_exact(&mut buf).await.expect("read body");
        buf
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .unwrap_or_else(|_| panic!("no tcp answer for {name} {qtype}"));
    let msg = Message::from_vec(&buf).expect("answer parses");
    assert_eq!(msg.metadata.id, id, "answer id");
    msg
}

/// The A addresses in an answer section.
pub(super) fn a_addrs(msg: &Message) -> Vec<Ipv4Addr> {
    msg.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

/// How a [`FakeUpstream`] behaves.
#[derive(Clone, Copy)]
pub(super) enum Mode {
    /// Reads queries and never answers (UDP and TCP).
    Silent,
    /// Answers with `count` A records (TTL [`FAKE_TTL`]); over UDP answers with
    /// TC and no records when `truncate_udp`.
    Answer { count: u8, truncate_udp: bool },
    /// An old server: FORMERR (without OPT) to a query with EDNS, one A
    /// record to one without.
    NoEdns,
    /// One A record in the answer and `count` more of the same name in the
    /// additional section.
    Additional { count: u8 },
}

pub(super) const FAKE_TTL: u32 = 1234;

/// A minimal upstream resolver on 127.0.0.1 that records every question it gets.
pub(super) struct FakeUpstream {
    pub(super) addr: SocketAddr,
    pub(super) seen: Arc<Mutex<Vec<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FakeUpstream {
    pub(super) async fn start(mode: Mode) -> FakeUpstream {
        let (udp, tcp, addr) = bind_udp_tcp().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_udp = seen.clone();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                if let Some(answer) = fake_answer(&buf[..n], mode, true, &seen_udp) {
                    let _ = udp.send_to(&answer, from).await;
                }
            }
        });
        let seen_tcp = seen.clone();
        let tcp_task = tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                let seen = seen_tcp.clone();
                tokio::spawn(async move {
                    let Ok(n) = s.read_u16().await else { return };
                    let mut buf = vec![0u8; usize::from(n)];
                    if s.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    match fake_answer(&buf, mode, false, &seen) {
                        Some(answer) => {
                            let len = u16::try_from(answer.len()).expect("answer fits");
                            let _ = s.write_all(&len.to_be_bytes()).await;
                            let _ = s.write_all(&answer).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(60)).await,
                    }
                });
            }
        });
        FakeUpstream {
            addr,
            seen,
            tasks: vec![udp_task, tcp_task],
        }
    }

    pub(super) fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("lock").clone()
    }
}

/// A UDP socket and a TCP listener on the same 127.0.0.1 port.
async fn bind_udp_tcp() -> (UdpSocket, TcpListener, SocketAddr) {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind fake udp");
        let addr = udp.local_addr().expect("addr");
        // The TCP side of that port may be taken by another test: try another.
        if let Ok(tcp) = TcpListener::bind(addr).await {
            return (udp, tcp, addr);
        }
    }
    panic!("no free udp+tcp port pair for the fake upstream");
}

fn fake_answer(raw: &[u8], mode: Mode, udp: bool, seen: &Mutex<Vec<String>>) -> Option<Vec<u8>> {
    let query = Message::from_vec(raw).ok()?;
    let q = query.queries.first()?.clone();
    let proto = if udp { "udp" } else { "tcp" };
    let edns = if query.edns.is_some() { " edns" } else { "" };
    seen.lock()
        .ok()?
        .push(format!("{} {} {proto}{edns}", q.name, q.query_type));
    let mut msg = Message::response(query.metadata.id, query.metadata.op_code);
    msg.metadata.message_type = MessageType::Response;
    msg.metadata.recursion_available = true;
    msg.add_query(q.clone());
    let (count, truncate_udp) = match mode {
        Mode::Answer {
            count,
            truncate_udp,
        } => (count, truncate_udp),
        Mode::NoEdns if query.edns.is_some() => {
            msg.metadata.response_code = hickory_proto::op::ResponseCode::FormErr;
            return msg.to_vec().ok();
        }
        Mode::NoEdns => (1, false),
        Mode::Additional { count } => {
            for i in 0..=count {
                let rdata = RData::A(A(Ipv4Addr::new(198, 18, 2, i)));
                let record = Record::from_rdata(q.name.clone(), FAKE_TTL, rdata);
                if i == 0 {
                    msg.add_answer(record);
                } else {
                    msg.add_additional(record);
                }
            }
            return msg.to_vec().ok();
        }
        Mode::Silent => return None,
    };
    if udp && truncate_udp {
        msg.metadata.truncation = true;
    } else if q.query_type == RecordType::A {
        for i in 0..count {
            let rdata = RData::A(A(Ipv4Addr::new(198, 18, 1, i)));
            msg.add_answer(Record::from_rdata(q.name.clone(), FAKE_TTL, rdata));
        }
    }
    msg.to_vec().ok()
}

/// A free localhost port for UDP and TCP (bound and released; the race is harmless in tests).
pub(super) fn free_port() -> u16 {
    for _ in 0..20 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let port = udp.local_addr().expect("addr").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair found");
}
