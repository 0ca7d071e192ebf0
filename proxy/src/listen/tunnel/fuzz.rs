//! Property tests of the SOCKS5 handshake a tunnel client sends: whatever
//! the bytes, the read ends with a target or a typed error (never a panic or
//! a wait for bytes that will not come), a valid request reads as the target
//! it names, and a refused one is refused for the field that is wrong.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{socks5_request, SocksError};
use crate::exchange::tunnel_target;

/// What `socks5_request` made of `input` (the client's whole side of the
/// handshake, then its end of the stream), and the bytes it answered with.
fn handshake(input: &[u8]) -> (Result<(String, u16), SocksError>, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(input).await.expect("write");
        client.shutdown().await.expect("shutdown");
        let got = socks5_request(&mut server).await;
        drop(server);
        let mut replies = Vec::new();
        client.read_to_end(&mut replies).await.expect("replies");
        (got, replies)
    })
}

/// A SOCKS5 target's address field: type byte and bytes.
#[derive(Debug, Clone)]
enum Addr {
    V4(Ipv4Addr),
    V6(Ipv6Addr),
    Domain(String),
}

impl Addr {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Addr::V4(a) => {
                out.push(0x01);
                out.extend_from_slice(&a.octets());
            }
            Addr::V6(a) => {
                out.push(0x04);
                out.extend_from_slice(&a.octets());
            }
            Addr::Domain(d) => {
                out.push(0x03);
                out.push(u8::try_from(d.len()).expect("short domain"));
                out.extend_from_slice(d.as_bytes());
            }
        }
    }

    /// The host the tunnel should make of it.
    fn host(&self) -> String {
        match self {
            Addr::V4(a) => a.to_string(),
            Addr::V6(a) => a.to_string(),
            Addr::Domain(d) => d.trim_end_matches('.').to_ascii_lowercase(),
        }
    }
}

/// Host names of one to four labels, in any case, with or without the root's dot.
fn domain() -> impl Strategy<Value = String> {
    (
        prop::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?", 1..5),
        any::<bool>(),
    )
        .prop_map(|(labels, root)| {
            let mut d = labels.join(".");
            if root {
                d.push('.');
            }
            d
        })
}

fn addr() -> impl Strategy<Value = Addr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|a| Addr::V4(a.into())),
        any::<[u8; 16]>().prop_map(|a| Addr::V6(a.into())),
        domain().prop_map(Addr::Domain),
    ]
}

/// A valid handshake: the greeting (methods including "no authentication",
/// in any order) and a CONNECT request.
#[derive(Debug, Clone)]
struct Valid {
    methods: Vec<u8>,
    addr: Addr,
    port: u16,
}

impl Valid {
    fn encode(&self) -> Vec<u8> {
        let mut out = vec![0x05, u8::try_from(self.methods.len()).expect("methods")];
        out.extend_from_slice(&self.methods);
        out.extend_from_slice(&[0x05, 0x01, 0x00]);
        self.addr.encode(&mut out);
        out.extend_from_slice(&self.port.to_be_bytes());
        out
    }
}

fn valid() -> impl Strategy<Value = Valid> {
    (
        prop::collection::vec(1u8..=255, 0..8),
        any::<prop::sample::Index>(),
        addr(),
        1u16..,
    )
        .prop_map(|(mut methods, at, addr, port)| {
            methods.insert(at.index(methods.len() + 1), 0x00);
            Valid {
                methods,
                addr,
                port,
            }
        })
}

/// What any accepted target must be: a host and a port the CONNECT path
/// would take too (no userinfo, port or path in the host; not port 0), the
/// same again when read back.
fn assert_a_tunnel_target(host: &str, port: u16) {
    assert_ne!(port, 0, "port 0 accepted for {host:?}");
    assert!(!host.is_empty(), "empty host accepted");
    let is_v6 = host.parse::<Ipv6Addr>().is_ok();
    let text = if is_v6 {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let authority: http::uri::Authority = text
        .parse()
        .unwrap_or_else(|e| panic!("accepted {host:?} is not an authority host: {e}"));
    assert_eq!(
        tunnel_target(&authority),
        Some((host.to_string(), port)),
        "accepted {host:?} reads back as another target"
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_end_in_a_target_or_an_error(
        input in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        if let (Ok((host, port)), _) = handshake(&input) {
            assert_a_tunnel_target(&host, port);
        }
    }

    #[test]
    fn a_valid_request_reads_as_its_target(v in valid()) {
        let (got, replies) = handshake(&v.encode());
        let (host, port) = got.unwrap_or_else(|e| panic!("{v:?} refused: {e}"));
        prop_assert_eq!(&host, &v.addr.host());
        prop_assert_eq!(port, v.port);
        // "No authentication" chosen, nothing else said before the target is checked.
        prop_assert_eq!(replies, vec![0x05, 0x00]);
        assert_a_tunnel_target(&host, port);
    }

    /// Cut anywhere short of its end, a request is an error: never a target
    /// read from the bytes that did come.
    #[test]
    fn a_cut_request_is_refused(v in valid(), at in any::<prop::sample::Index>()) {
        let bytes = v.encode();
        let cut = &bytes[..at.index(bytes.len())];
        let (got, _) = handshake(cut);
        prop_assert!(got.is_err(), "{:?} cut to {} bytes read as {:?}", v, cut.len(), got);
    }

    /// One byte changed or bytes added: a target (the tunnel's rules) or an
    /// error, never a panic.
    #[test]
    fn a_mangled_request_is_a_target_or_an_error(
        v in valid(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        tail in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = v.encode();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        bytes.extend_from_slice(&tail);
        if let (Ok((host, port)), _) = handshake(&bytes) {
            assert_a_tunnel_target(&host, port);
        }
    }

    /// A request refused for one field names that field and its value, and
    /// the client gets the SOCKS reply that says so.
    #[test]
    fn a_refusal_names_the_field_at_fault(v in valid(), field in 0usize..4, bad in any::<u8>()) {
        let mut bytes = v.encode();
        let request = 2 + v.methods.len();
        let (at, ok, want_reply): (usize, &[u8], Option<u8>) = match field {
            0 => (0, &[0x05], None),                    // greeting version
            1 => (request, &[0x05], None),              // request version
            2 => (request + 1, &[0x01], Some(0x07)),    // command
            _ => (request + 3, &[0x01, 0x03, 0x04], Some(0x08)), // address type
        };
        prop_assume!(!ok.contains(&bad));
        bytes[at] = bad;
        let (got, replies) = handshake(&bytes);
        match (field, got) {
            (0 | 1, Err(SocksError::Version(b))) => prop_assert_eq!(b, bad),
            (2, Err(SocksError::Command(b))) => prop_assert_eq!(b, bad),
            (3, Err(SocksError::AddressType(b))) => prop_assert_eq!(b, bad),
            (_, other) => prop_assert!(false, "field {} set to {:#04x}: {:?}", field, bad, other),
        }
        if let Some(code) = want_reply {
            prop_assert_eq!(replies.get(2..4), Some(&[0x05, code][..]));
        }
    }
}

/// A greeting without "no authentication" is refused with 0xFF, whatever else it offers.
#[test]
fn a_greeting_without_no_auth_is_refused_with_no_method() {
    let (got, replies) = handshake(&[0x05, 0x02, 0x01, 0x02]);
    assert!(matches!(got, Err(SocksError::NoAcceptableAuth)), "{got:?}");
    assert_eq!(replies, [0x05, 0xff]);
}
