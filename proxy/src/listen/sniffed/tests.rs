use super::{looks_like_http, mitm_handshake, read_request_start};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// A MITM server config, a client config trusting its CA, and a
/// connected pair (client end, server end).
async fn mitm_pair() -> (
    Arc<rustls::ServerConfig>,
    Arc<rustls::ClientConfig>,
    TcpStream,
    TcpStream,
) {
    use crate::tls::server::{client_config, server_config, ALPN_H2_HTTP11};
    let cache = Arc::new(crate::tls::LeafCache::new(
        crate::tls::test_support::minter().0,
        10,
    ));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cache.minter().ca().cert_der().clone()).unwrap();
    let server = server_config(
        Arc::new(crate::tls::SniResolver::new(cache)),
        ALPN_H2_HTTP11,
    );
    let client = client_config(roots, ALPN_H2_HTTP11);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (c, s) = tokio::join!(TcpStream::connect(l.local_addr().unwrap()), l.accept());
    (server, client, c.unwrap(), s.unwrap().0)
}

#[tokio::test]
async fn a_client_that_stalls_after_its_client_hello_is_dropped_at_the_deadline() {
    let (server, client, mut c, s) = mitm_pair().await;
    // A real ClientHello, and then nothing.
    let name = rustls_pki_types::ServerName::try_from("api.test").unwrap();
    let mut hello = Vec::new();
    rustls::ClientConnection::new(client, name)
        .unwrap()
        .write_tls(&mut hello)
        .unwrap();
    c.write_all(&hello).await.unwrap();
    let started = Instant::now();
    let err = mitm_handshake(server, s, Duration::from_millis(300), Duration::ZERO)
        .await
        .expect_err("a stalled handshake must fail");
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_client_that_completes_its_handshake_in_time_is_served() {
    let (server, client, c, s) = mitm_pair().await;
    let name = rustls_pki_types::ServerName::try_from("api.test").unwrap();
    let connect = tokio_rustls::TlsConnector::from(client).connect(name, c);
    let (client, served) = tokio::join!(
        connect,
        mitm_handshake(server, s, Duration::from_millis(300), Duration::ZERO)
    );
    client.expect("client handshake");
    served.expect("server handshake");
}

async fn start_of(bytes: &[u8]) -> Vec<u8> {
    let (mut client, mut server) = tokio::io::duplex(64);
    use tokio::io::AsyncWriteExt;
    client.write_all(bytes).await.expect("write");
    drop(client);
    read_request_start(&mut server).await.expect("read")
}

#[tokio::test]
async fn reads_just_enough_to_tell_http_from_anything_else() {
    for (input, http) in [
        (&b"GET /anything HTTP/1.1\r\n"[..], true),
        (b"OPTIONS * HTTP/1.1\r\n", true),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", true),
        // A DNS-over-TLS message: a two-byte length, then the query.
        (b"\x00\x1e\x12\x34\x01\x00", false),
        (b"M-SEARCH * HTTP/1.1\r\n", true),
        (b"VERSION-CONTROL /r HTTP/1.1\r\n", true),
        (b"UPDATEREDIRECTREF /r HTTP/1.1\r\n", true),
        (b"GETTINGLONGERTHANANYMETHODEVERWAS /", false),
        (b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n", false),
        (b"-X- / HTTP/1.1\r\n", false),
        (b"X_SYNC2 / HTTP/1.1\r\n", true),
        (b"2GET / HTTP/1.1\r\n", false),
        (b"GE", false),
    ] {
        let first = start_of(input).await;
        assert!(first.len() <= super::REQUEST_START);
        assert!(input.starts_with(&first));
        assert_eq!(looks_like_http(&first), http, "{input:?} -> {first:?}");
    }
    assert!(start_of(b"").await.is_empty());
}

#[test]
fn http_detection() {
    assert!(looks_like_http(b"GET / HTTP/1.1\r\n"));
    assert!(looks_like_http(b"OPTIONS * HTTP/1.1\r\n"));
    assert!(looks_like_http(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    assert!(!looks_like_http(b"SSH-2.0-OpenSSH_9.2\r\n"));
    assert!(!looks_like_http(b"\x00\x01garbage"));
}
