//! Property tests of the handler's answer to one message, as UDP and TCP
//! hand it over: arbitrary bytes, and queries built field by field (any
//! number of questions, any type and class, names of any bytes, EDNS of any
//! version and options, counts that disagree with the sections) and then
//! edited byte by byte. Whatever comes, the handler answers with a message
//! that decodes, carries the query's id and question, and fits the
//! transport (the client's UDP size), or stays silent for what gets no
//! answer (a response, fewer than 12 bytes); it never panics. Over the real
//! TCP listener, frames pipelined on one connection (empty and short ones
//! among them) are each answered once.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::net::xfer::Protocol;
use proptest::prelude::*;

use super::{a_record, cname_record, settings};
use crate::dns::forward::Forwarder;
use crate::dns::handler::Handler;
use crate::dns::policy::Policy;
use crate::dns::stats::DnsStats;

/// A handler with a static A record, static CNAMEs (to it and to an
/// intercepted name), passthrough names (no upstream: SERVFAIL) and the
/// proxy's IPv6 address; every other name intercepted.
fn handler() -> Handler {
    let mut s = settings(&["*.pass.test"], None);
    s.proxy_ip6 = Some("fd00::53".parse().expect("v6"));
    s.records = vec![
        a_record("a.rec.test", [192, 0, 2, 1]),
        a_record("a.rec.test", [192, 0, 2, 2]),
        cname_record("alias.rec.test", "a.rec.test"),
        cname_record("out.rec.test", "elsewhere.test"),
    ];
    let policy = Policy::new(&s).expect("policy");
    Handler::new(
        policy,
        Forwarder::new(Vec::new(), Duration::from_secs(1)),
        Arc::new(DnsStats::default()),
    )
}

/// The handler's answer to `query` over `protocol`.
fn respond(query: &[u8], protocol: Protocol) -> Option<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let peer = SocketAddr::from((Ipv4Addr::LOCALHOST, 5353));
    let asker = crate::dns::asker::Asker::Known(crate::intercept::Client::new(peer.ip(), None));
    rt.block_on(handler().respond(query.to_vec(), peer, protocol, &asker))
}

/// The whole message `bytes` holds, nothing after it.
fn decode_whole(bytes: &[u8]) -> Result<Message, String> {
    let mut decoder = BinDecoder::new(bytes);
    let msg = Message::read(&mut decoder).map_err(|e| e.to_string())?;
    if !decoder.is_empty() {
        return Err(format!("{} bytes after the message", decoder.len()));
    }
    Ok(msg)
}

/// The checks every answer to `query` passes.
fn check(query: &[u8]) -> Result<(), TestCaseError> {
    for protocol in [Protocol::Udp, Protocol::Tcp] {
        let answer = respond(query, protocol);
        let is_response = query.get(2).is_some_and(|b| b & 0x80 != 0);
        let Some(answer) = answer else {
            prop_assert!(
                query.len() < 12 || is_response,
                "{:?}: no answer to a query of {} bytes: {:02x?}",
                protocol,
                query.len(),
                query
            );
            continue;
        };
        prop_assert!(query.len() >= 12 && !is_response, "answered a non-query");
        let msg = decode_whole(&answer).map_err(|e| {
            TestCaseError::fail(format!("{protocol:?}: answer does not decode: {e}"))
        })?;
        prop_assert_eq!(msg.metadata.message_type, MessageType::Response);
        prop_assert_eq!(msg.metadata.id, u16::from_be_bytes([query[0], query[1]]));
        // What the client asked, as far as it decodes: its EDNS size, its question.
        let asked = Message::from_vec(query).ok();
        let limit = match protocol {
            Protocol::Udp => asked
                .as_ref()
                .and_then(|m| m.edns.as_ref())
                .map_or(512, |e| e.max_payload().clamp(512, 4096)),
            _ => u16::MAX,
        };
        prop_assert!(
            answer.len() <= usize::from(limit),
            "{:?}: a {}-byte answer to a client that takes {}: {:?}",
            protocol,
            answer.len(),
            limit,
            msg
        );
        // The question as asked; left out only when it alone outgrows a
        // UDP answer (TC set), and from a FORMERR for a body that did not decode.
        let cut = protocol == Protocol::Udp && msg.metadata.truncation && msg.queries.is_empty();
        if let Some(asked) = asked
            .as_ref()
            .filter(|_| msg.metadata.response_code != ResponseCode::FormErr)
        {
            if !cut {
                prop_assert_eq!(
                    &msg.queries,
                    &asked.queries,
                    "the question is not the one asked"
                );
            }
        }
        if cut {
            prop_assert!(
                asked.as_ref().is_some_and(|a| a.queries.len() > 1),
                "a single question cut"
            );
        }
    }
    Ok(())
}

/// One question: its name's labels, type and class.
#[derive(Debug, Clone)]
struct Question {
    labels: Vec<Vec<u8>>,
    qtype: u16,
    qclass: u16,
}

/// An OPT record's fields.
#[derive(Debug, Clone)]
struct Opt {
    payload: u16,
    version: u8,
    dnssec_ok: bool,
    /// Code and data of each option.
    options: Vec<(u16, Vec<u8>)>,
}

/// A query's fields, encoded by hand so that counts, classes and versions
/// can be anything the wire allows.
#[derive(Debug, Clone)]
struct Query {
    id: u16,
    /// The header's second and third bytes, QR clear.
    flags: u16,
    questions: Vec<Question>,
    edns: Option<Opt>,
    /// Added to the question count written in the header.
    qd_skew: i8,
}

impl Query {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&(self.flags & 0x7fff).to_be_bytes());
        let qd = i32::try_from(self.questions.len()).unwrap_or(0) + i32::from(self.qd_skew);
        out.extend_from_slice(
            &u16::try_from(qd.clamp(0, 0xffff))
                .unwrap_or(0)
                .to_be_bytes(),
        );
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&u16::from(self.edns.is_some()).to_be_bytes());
        for q in &self.questions {
            for l in &q.labels {
                out.push(u8::try_from(l.len()).expect("label"));
                out.extend_from_slice(l);
            }
            out.push(0);
            out.extend_from_slice(&q.qtype.to_be_bytes());
            out.extend_from_slice(&q.qclass.to_be_bytes());
        }
        if let Some(Opt {
            payload,
            version,
            dnssec_ok,
            options,
        }) = &self.edns
        {
            out.push(0); // root
            out.extend_from_slice(&41u16.to_be_bytes());
            out.extend_from_slice(&payload.to_be_bytes());
            out.push(0); // extended rcode
            out.push(*version);
            out.extend_from_slice(&(if *dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
            let rdata: Vec<u8> = options
                .iter()
                .flat_map(|(code, data)| {
                    let len = u16::try_from(data.len()).expect("option");
                    [
                        code.to_be_bytes().to_vec(),
                        len.to_be_bytes().to_vec(),
                        data.clone(),
                    ]
                    .concat()
                })
                .collect();
            out.extend_from_slice(&u16::try_from(rdata.len()).expect("rdata").to_be_bytes());
            out.extend_from_slice(&rdata);
        }
        out
    }
}

/// Names the handler answers each its own way, and names of any bytes.
fn labels() -> impl Strategy<Value = Vec<Vec<u8>>> {
    let known = prop::sample::select(vec![
        "a.rec.test",
        "alias.rec.test",
        "out.rec.test",
        "x.pass.test",
        "api.example.com",
        "localhost",
        "db.localhost",
        "x.invalid",
        "x.onion",
        "",
    ])
    .prop_map(|n| {
        n.split('.')
            .filter(|l| !l.is_empty())
            .map(|l| l.as_bytes().to_vec())
            .collect::<Vec<_>>()
    });
    let label = prop_oneof![
        4 => "[a-zA-Z0-9-]{1,20}".prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 1..64),
    ];
    prop_oneof![
        2 => known,
        // Up to 255 bytes on the wire: 4 labels of 63 and their lengths.
        1 => prop::collection::vec(label, 0..5),
    ]
}

fn question() -> impl Strategy<Value = Question> {
    let qtype = prop_oneof![
        4 => prop::sample::select(vec![1u16, 28, 5, 6, 2, 255, 16, 33, 65, 252, 251, 41, 0]),
        1 => any::<u16>(),
    ];
    let qclass = prop_oneof![4 => Just(1u16), 1 => any::<u16>()];
    (labels(), qtype, qclass).prop_map(|(labels, qtype, qclass)| Question {
        labels,
        qtype,
        qclass,
    })
}

fn query() -> impl Strategy<Value = Query> {
    let flags = prop_oneof![
        4 => prop::sample::select(vec![0x0100u16, 0x0000, 0x0110, 0x0120]),
        1 => any::<u16>(),
    ];
    let questions = prop_oneof![
        8 => prop::collection::vec(question(), 1..2),
        2 => prop::collection::vec(question(), 0..4),
        // Enough long names that echoing them all outgrows 512 bytes.
        1 => prop::collection::vec(question(), 10..40),
    ];
    let option = (
        prop_oneof![Just(8u16), Just(10), Just(12), Just(3), any::<u16>()],
        prop::collection::vec(any::<u8>(), 0..24),
    );
    let edns = prop::option::of(
        (
            prop_oneof![Just(512u16), Just(1232), Just(4096), any::<u16>()],
            prop_oneof![4 => Just(0u8), 1 => any::<u8>()],
            any::<bool>(),
            prop::collection::vec(option, 0..3),
        )
            .prop_map(|(payload, version, dnssec_ok, options)| Opt {
                payload,
                version,
                dnssec_ok,
                options,
            }),
    );
    let skew = prop_oneof![8 => Just(0i8), 1 => -2i8..3];
    (any::<u16>(), flags, questions, edns, skew).prop_map(
        |(id, flags, questions, edns, qd_skew)| Query {
            id,
            flags,
            questions,
            edns,
            qd_skew,
        },
    )
}

proptest! {
    #[test]
    fn arbitrary_datagrams_get_a_well_formed_answer_or_none(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
    ) {
        check(&bytes)?;
    }

    #[test]
    fn built_queries_get_a_well_formed_answer(q in query()) {
        check(&q.encode())?;
    }

    #[test]
    fn edited_queries_get_a_well_formed_answer_or_none(
        q in query(),
        edits in prop::collection::vec(
            (any::<prop::sample::Index>(), prop::option::of(any::<u8>())), 1..4),
        cut in prop::option::of(any::<prop::sample::Index>()),
        tail in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut bytes = q.encode();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            match b {
                Some(b) => bytes[i] = b,
                None => {
                    // The bytes from here on again: a repeated field.
                    let again = bytes[i..].to_vec();
                    bytes.extend_from_slice(&again);
                }
            }
        }
        if let Some(cut) = cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        bytes.extend_from_slice(&tail);
        check(&bytes)?;
    }
}

/// A UDP query of 40 questions (each a 60-byte name) gets FORMERR within
/// the 512 bytes a client without EDNS takes. Before, the answer echoed
/// every question, 2.6 KB, even after the cut to "header and question with
/// TC" meant to fit.
#[test]
fn a_query_of_many_questions_gets_an_answer_that_fits_udp() {
    let q = Query {
        id: 0x5a5a,
        flags: 0x0100,
        questions: (0..40u8)
            .map(|i| Question {
                labels: vec![vec![b'a' + i % 26; 59]],
                qtype: 1,
                qclass: 1,
            })
            .collect(),
        edns: None,
        qd_skew: 0,
    };
    let answer = respond(&q.encode(), Protocol::Udp).expect("an answer");
    assert!(answer.len() <= 512, "{} bytes", answer.len());
    let msg = decode_whole(&answer).expect("decodes");
    assert_eq!(msg.metadata.id, 0x5a5a);
    assert_eq!(msg.metadata.response_code, ResponseCode::FormErr);
    assert!(msg.metadata.truncation, "TC: ask again over TCP");
    // Over TCP the whole answer goes, questions and all.
    let tcp = respond(&q.encode(), Protocol::Tcp).expect("an answer");
    let msg = decode_whole(&tcp).expect("decodes");
    assert_eq!(msg.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(msg.queries.len(), 40);
}

/// One TCP frame a client sends: a message, an empty frame (which ends the
/// connection's queries), or a length that promises more than follows
/// (written last, so that nothing after it makes up the promise).
#[derive(Debug, Clone)]
enum Frame {
    Message(Vec<u8>),
    Empty,
    Short { promised: u16, sent: Vec<u8> },
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        6 => query().prop_map(|q| Frame::Message(q.encode())),
        2 => prop::collection::vec(any::<u8>(), 1..80).prop_map(Frame::Message),
        1 => Just(Frame::Empty),
        1 => (any::<u16>(), prop::collection::vec(any::<u8>(), 0..40))
            .prop_filter("promises more", |(p, s)| usize::from(*p) > s.len())
            .prop_map(|(promised, sent)| Frame::Short { promised, sent }),
    ]
}

/// The ids `frames` should be answered with over one connection: one per
/// whole message of 12 bytes or more that is not a response, up to the
/// first empty or short frame (the connection's last).
fn ids_answered(frames: &[Frame]) -> Vec<u16> {
    let mut ids = Vec::new();
    for f in frames {
        match f {
            Frame::Message(m) if m.len() >= 12 && m[2] & 0x80 == 0 => {
                ids.push(u16::from_be_bytes([m[0], m[1]]));
            }
            Frame::Message(_) => {}
            Frame::Empty | Frame::Short { .. } => break,
        }
    }
    ids.sort_unstable();
    ids
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Length-prefixed messages pipelined on one connection to the real
    /// TCP listener, then the client's end: each gets its one answer, in
    /// any order, and the connection closes once they are sent.
    #[test]
    fn pipelined_tcp_frames_are_each_answered_once(frames in prop::collection::vec(frame(), 1..12)) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let got: Vec<u16> = rt.block_on(async {
            let (server, addr) = super::start(settings(&["*.pass.test"], None)).await;
            let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let mut bytes = Vec::new();
            for f in &frames {
                match f {
                    Frame::Message(m) => {
                        let len = u16::try_from(m.len()).expect("short message");
                        bytes.extend_from_slice(&len.to_be_bytes());
                        bytes.extend_from_slice(m);
                    }
                    Frame::Empty => bytes.extend_from_slice(&[0, 0]),
                    Frame::Short { promised, sent } => {
                        // The client's last bytes: what followed would
                        // otherwise make up the promised length.
                        bytes.extend_from_slice(&promised.to_be_bytes());
                        bytes.extend_from_slice(sent);
                        break;
                    }
                }
            }
            s.write_all(&bytes).await.expect("write");
            s.shutdown().await.expect("shutdown");
            let mut answers = Vec::new();
            // The server's idle timeout (10 s) bounds this; it is not waited
            // on: the end of the client's stream ends the reading.
            let read = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answers));
            read.await.expect("the server closes the connection").expect("read");
            server.shutdown().await.expect("shutdown");
            let mut ids = Vec::new();
            let mut rest = &answers[..];
            while let [a, b, tail @ ..] = rest {
                let len = usize::from(u16::from_be_bytes([*a, *b]));
                let msg = tail.get(..len).expect("a whole answer frame");
                let m = decode_whole(msg).expect("the answer decodes");
                ids.push(m.metadata.id);
                rest = &tail[len..];
            }
            ids.sort_unstable();
            ids
        });
        prop_assert_eq!(got, ids_answered(&frames));
    }
}
