use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;
use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::tls::server::{client_config, ALPN_H2_HTTP11};

/// The first flight of a real rustls client: its ClientHello records.
fn rustls_hello(name: ServerName<'static>, alpn: &[&[u8]]) -> Vec<u8> {
    let config = client_config(RootCertStore::empty(), alpn);
    let mut conn = rustls::ClientConnection::new(config, name).expect("client");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("write_tls");
    }
    out
}

fn example_hello() -> Vec<u8> {
    rustls_hello(
        ServerName::try_from("Example.Test").expect("name"),
        ALPN_H2_HTTP11,
    )
}

/// Re-frames a single-record ClientHello into records of at most `size` bytes.
fn fragment(hello: &[u8], size: usize) -> Vec<u8> {
    let payload = &hello[5..5 + usize::from(u16::from_be_bytes([hello[3], hello[4]]))];
    let mut out = Vec::new();
    for chunk in payload.chunks(size) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// A hand-built ClientHello record with the given extensions (None: no extension block).
fn build_hello(exts: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x02, 0x13, 0x01]);
    body.extend_from_slice(&[0x01, 0x00]);
    if let Some(exts) = exts {
        let mut block = Vec::new();
        for (kind, data) in exts {
            block.extend_from_slice(&kind.to_be_bytes());
            block.extend_from_slice(&(data.len() as u16).to_be_bytes());
            block.extend_from_slice(data);
        }
        body.extend_from_slice(&(block.len() as u16).to_be_bytes());
        body.extend_from_slice(&block);
    }
    let mut hs = vec![0x01, 0, (body.len() >> 8) as u8, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01, (hs.len() >> 8) as u8, hs.len() as u8];
    rec.extend_from_slice(&hs);
    rec
}

fn sni_ext(names: &[(u8, &[u8])]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for (kind, name) in names {
        list.push(*kind);
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name);
    }
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&list);
    (EXT_SERVER_NAME, data)
}

fn alpn_ext(protos: &[&[u8]]) -> (u16, Vec<u8>) {
    let mut list = Vec::new();
    for p in protos {
        list.push(p.len() as u8);
        list.extend_from_slice(p);
    }
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&list);
    (EXT_ALPN, data)
}

fn tls(sni: Option<&str>, alpn: &[&str]) -> Sniff {
    Sniff::Tls {
        sni: sni.map(str::to_owned),
        alpn: alpn.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn real_rustls_hello_gives_sni_and_alpn() {
    let hello = example_hello();
    assert_eq!(
        sniff(&hello),
        tls(Some("example.test"), &["h2", "http/1.1"])
    );
    // Bytes after the ClientHello (early data, a pipelined request) do not matter.
    let mut more = hello.clone();
    more.extend_from_slice(b"\x17\x03\x03\x00\x01x");
    assert_eq!(sniff(&more), tls(Some("example.test"), &["h2", "http/1.1"]));
}

#[test]
fn hello_for_an_ip_has_no_sni() {
    let ip = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    assert_eq!(sniff(&rustls_hello(ip, &[])), tls(None, &[]));
}

#[test]
fn every_truncation_needs_more() {
    let hello = example_hello();
    for len in 0..hello.len() {
        assert_eq!(
            sniff(&hello[..len]),
            Sniff::NeedMore,
            "prefix of {len} bytes"
        );
    }
}

#[test]
fn multi_record_hello_is_reassembled() {
    let hello = example_hello();
    for size in [1, 7, 100] {
        let split = fragment(&hello, size);
        assert_eq!(
            sniff(&split),
            tls(Some("example.test"), &["h2", "http/1.1"]),
            "{size}"
        );
        for len in 0..split.len() {
            assert_eq!(
                sniff(&split[..len]),
                Sniff::NeedMore,
                "size {size}, prefix {len}"
            );
        }
    }
    // A non-handshake record in the middle is broken TLS, not "another protocol".
    let mut split = fragment(&hello, 100);
    split[105] = 0x17;
    assert!(
        matches!(sniff(&split), Sniff::Malformed(_)),
        "{:?}",
        sniff(&split)
    );
}

#[test]
fn other_protocols_are_not_tls() {
    for input in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"G",
        b"PRI * HTTP/2.0",
        b"SSH-2.0-x",
        b"\x16\x02",
        b"\x16\x03\x09",
    ] {
        assert_eq!(sniff(input), Sniff::NotTls, "{input:?}");
    }
    assert_eq!(sniff(b""), Sniff::NeedMore);
    assert_eq!(sniff(b"\x16"), Sniff::NeedMore);
    assert_eq!(sniff(b"\x16\x03"), Sniff::NeedMore);
}

#[test]
fn oversize_hello_is_refused_from_its_header() {
    // Handshake length 0x5000 (20 KiB), decided after 9 bytes.
    let header = [0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x50, 0x00];
    assert_eq!(sniff(&header), Sniff::TooLarge);
    // Exactly at the bound is fine (needs more), one over is not.
    let at = MAX_CLIENT_HELLO - 4;
    let ok = [
        0x16,
        0x03,
        0x01,
        0x40,
        0x00,
        0x01,
        0x00,
        (at >> 8) as u8,
        at as u8,
    ];
    assert_eq!(sniff(&ok), Sniff::NeedMore);
    let over = at + 1;
    let bad = [
        0x16,
        0x03,
        0x01,
        0x40,
        0x00,
        0x01,
        0x00,
        (over >> 8) as u8,
        over as u8,
    ];
    assert_eq!(sniff(&bad), Sniff::TooLarge);
    // A record longer than TLS allows.
    assert!(matches!(
        sniff(&[0x16, 0x03, 0x01, 0x40, 0x01]),
        Sniff::Malformed(_)
    ));
}

#[test]
fn hand_built_hellos() {
    assert_eq!(sniff(&build_hello(None)), tls(None, &[]));
    assert_eq!(sniff(&build_hello(Some(&[]))), tls(None, &[]));
    let hello = build_hello(Some(&[
        sni_ext(&[(0, b"API.example.TEST")]),
        alpn_ext(&[b"h2"]),
    ]));
    assert_eq!(sniff(&hello), tls(Some("api.example.test"), &["h2"]));
    // Unknown name types are skipped.
    let hello = build_hello(Some(&[sni_ext(&[(7, b"whatever"), (0, b"a.test")])]));
    assert_eq!(sniff(&hello), tls(Some("a.test"), &[]));

    let malformed = [
        build_hello(Some(&[
            sni_ext(&[(0, b"a.test")]),
            sni_ext(&[(0, b"b.test")]),
        ])),
        build_hello(Some(&[sni_ext(&[(0, b"a.test"), (0, b"b.test")])])),
        build_hello(Some(&[sni_ext(&[(0, b"bad name")])])),
        build_hello(Some(&[sni_ext(&[(0, b"")])])),
        build_hello(Some(&[sni_ext(&[])])),
        build_hello(Some(&[(EXT_SERVER_NAME, vec![])])),
        build_hello(Some(&[alpn_ext(&[b""])])),
        build_hello(Some(&[alpn_ext(&[])])),
        build_hello(Some(&[(EXT_ALPN, vec![0, 5, 2, b'h', b'2'])])),
    ];
    for (i, hello) in malformed.iter().enumerate() {
        assert!(
            matches!(sniff(hello), Sniff::Malformed(_)),
            "case {i}: {:?}",
            sniff(hello)
        );
    }
    // Not a ClientHello (a ServerHello, type 2).
    let mut server_hello = build_hello(None);
    server_hello[5] = 0x02;
    assert!(matches!(sniff(&server_hello), Sniff::Malformed(_)));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = sniff(&bytes);
    }

    #[test]
    fn random_tls_looking_bytes_never_panic(
        minor in 0u8..5, len in any::<u16>(), hs_type in 0u8..3,
        rest in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut bytes = vec![0x16, 0x03, minor];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.push(hs_type);
        bytes.extend_from_slice(&rest);
        let _ = sniff(&bytes);
    }

    #[test]
    fn mutated_real_hello_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut hello = example_hello();
        for (i, b) in edits {
            let at = i.index(hello.len());
            hello[at] = b;
        }
        let _ = sniff(&hello);
        let _ = sniff(&hello[..cut.index(hello.len())]);
    }

    #[test]
    fn the_sniffer_agrees_with_sniff_at_every_read(
        size in 1usize..300,
        reads in proptest::collection::vec(1usize..64, 1..400),
        flip in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
    ) {
        let mut split = fragment(&example_hello(), size);
        if let Some((at, byte)) = flip {
            let i = at.index(split.len());
            split[i] = byte;
        }
        let mut sniffer = Sniffer::default();
        let mut end = 0;
        for n in reads {
            end = (end + n).min(split.len());
            let verdict = sniffer.feed(&split[..end]);
            prop_assert_eq!(&verdict, &sniff(&split[..end]));
            if verdict != Sniff::NeedMore || end == split.len() {
                break;
            }
        }
    }

    #[test]
    fn truncations_of_a_real_hello_need_more(cut in any::<prop::sample::Index>(), size in 1usize..300) {
        let split = fragment(&example_hello(), size);
        prop_assert_eq!(sniff(&split[..cut.index(split.len())]), Sniff::NeedMore);
    }
}

#[tokio::test]
async fn peek_reads_a_split_hello_and_replays_every_byte() {
    let hello = example_hello();
    let (mut client, mut server) = tokio::io::duplex(64 * 1024);
    let h = hello.clone();
    let writer = tokio::spawn(async move {
        client.write_all(&h[..10]).await.expect("write");
        tokio::task::yield_now().await;
        client.write_all(&h[10..]).await.expect("write");
        client.write_all(b"tail").await.expect("write");
        let mut reply = [0u8; 5];
        client.read_exact(&mut reply).await.expect("reply");
        assert_eq!(&reply, b"reply");
    });
    let (verdict, bytes) = peek_client_hello(&mut server, 32 * 1024, Duration::from_secs(5))
        .await
        .expect("peek");
    assert_eq!(verdict, tls(Some("example.test"), &["h2", "http/1.1"]));
    assert!(
        hello.starts_with(&bytes) || bytes.starts_with(&hello),
        "bytes read are the stream's"
    );

    let mut replay = PrefixedStream::new(bytes, server);
    let mut all = vec![0u8; hello.len() + 4];
    replay.read_exact(&mut all).await.expect("replay");
    assert_eq!(&all[..hello.len()], &hello[..]);
    assert_eq!(&all[hello.len()..], b"tail");
    replay.write_all(b"reply").await.expect("write through");
    writer.await.expect("writer");
}

#[tokio::test]
async fn peek_decides_not_tls_on_the_first_bytes() {
    let (mut client, mut server) = tokio::io::duplex(1024);
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    let (verdict, bytes) = peek_client_hello(&mut server, 32 * 1024, Duration::from_secs(5))
        .await
        .expect("peek");
    assert_eq!(verdict, Sniff::NotTls);
    assert!(bytes.starts_with(b"G"));
    let mut replay = PrefixedStream::new(bytes, server);
    let mut line = [0u8; 14];
    replay.read_exact(&mut line).await.expect("read");
    assert_eq!(&line, b"GET / HTTP/1.1");
}

#[tokio::test(start_paused = true)]
async fn peek_times_out_on_a_silent_client() {
    let hello = example_hello();
    let (mut client, mut server) = tokio::io::duplex(1024);
    client.write_all(&hello[..20]).await.expect("write");
    let err = peek_client_hello(&mut server, 32 * 1024, Duration::from_secs(10))
        .await
        .expect_err("timeout");
    assert!(matches!(err, SniffError::Timeout { got: 20, .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "timed out after 10s with 20 bytes sent, before the ClientHello was whole"
    );
    drop(client);
    let (_client, mut server) = tokio::io::duplex(1024);
    let err = peek_client_hello(&mut server, 32 * 1024, Duration::from_secs(10))
        .await
        .expect_err("timeout");
    assert_eq!(
        err.to_string(),
        "timed out after 10s waiting for the first bytes"
    );
}

#[tokio::test]
async fn peek_reports_early_close_and_the_byte_bound() {
    let (mut client, mut server) = tokio::io::duplex(1024);
    client.write_all(b"\x16\x03\x01").await.expect("write");
    drop(client);
    let err = peek_client_hello(&mut server, 1024, Duration::from_secs(5))
        .await
        .expect_err("closed");
    assert!(matches!(err, SniffError::Closed(3)), "{err}");

    // No decision within the bound is a verdict, audited as a ClientHello
    // too large (it was an error, audited as `no_client_data`).
    let (mut client, mut server) = tokio::io::duplex(64 * 1024);
    client.write_all(&example_hello()).await.expect("write");
    let (verdict, bytes) = peek_client_hello(&mut server, 10, Duration::from_secs(5))
        .await
        .expect("bound");
    assert_eq!(verdict, Sniff::TooLarge);
    assert_eq!(bytes.len(), 10);
}

#[tokio::test]
async fn peek_decides_on_a_hello_in_one_byte_records() {
    let hello = example_hello();
    let split = fragment(&hello, 1);
    let (mut client, mut server) = tokio::io::duplex(64 * 1024);
    let s = split.clone();
    let writer = tokio::spawn(async move {
        for chunk in s.chunks(7) {
            client.write_all(chunk).await.expect("write");
            tokio::task::yield_now().await;
        }
        client
    });
    let (verdict, bytes) = peek_client_hello(&mut server, 64 * 1024, Duration::from_secs(5))
        .await
        .expect("peek");
    assert_eq!(verdict, tls(Some("example.test"), &["h2", "http/1.1"]));
    assert_eq!(bytes, split);
    drop(writer.await.expect("writer"));
}

#[test]
fn the_sniffer_takes_each_byte_in_once() {
    // A hello in 1-byte records, fed a byte at a time: the handshake bytes
    // kept are the hello's, copied once (a fresh `sniff` per read copied the
    // whole buffer each time).
    let hello = example_hello();
    let split = fragment(&hello, 1);
    let mut sniffer = Sniffer::default();
    let mut verdict = Sniff::NeedMore;
    for end in 1..=split.len() {
        verdict = sniffer.feed(&split[..end]);
        if verdict != Sniff::NeedMore {
            assert_eq!(end, split.len(), "decided before the last byte");
        }
    }
    assert_eq!(verdict, tls(Some("example.test"), &["h2", "http/1.1"]));
    assert_eq!(sniffer.hs.len(), hello.len() - 5);
}

#[tokio::test]
async fn prefixed_stream_into_parts_returns_the_unread_prefix() {
    let (_client, server) = tokio::io::duplex(16);
    let mut s = PrefixedStream::new(b"abcdef".to_vec(), server);
    let mut two = [0u8; 2];
    s.read_exact(&mut two).await.expect("read");
    let (rest, _inner) = s.into_parts();
    assert_eq!(&rest[..], b"cdef");
}

#[tokio::test]
async fn prefixed_stream_lets_go_of_the_prefix_once_replayed() {
    let (mut client, server) = tokio::io::duplex(16);
    let mut held = Vec::with_capacity(4096);
    held.extend_from_slice(b"abcdef");
    let held = Bytes::from(held);
    let mut s = PrefixedStream::new(held.clone(), server);
    let mut some = [0u8; 4];
    s.read_exact(&mut some).await.expect("read");
    assert!(
        !held.is_unique(),
        "still replaying: the stream shares the buffer"
    );
    let mut rest = [0u8; 2];
    s.read_exact(&mut rest).await.expect("read");
    assert_eq!(&rest, b"ef");
    assert!(
        held.is_unique(),
        "replayed: the stream no longer keeps the buffer"
    );
    // Reads go on from the inner stream.
    client.write_all(b"gh").await.expect("write");
    let mut next = [0u8; 2];
    s.read_exact(&mut next).await.expect("read");
    assert_eq!(&next, b"gh");
}
