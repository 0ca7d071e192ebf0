use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::tls::sniff::{peek_client_hello, PrefixedStream, Sniff};
use crate::tls::test_support::minter;
use crate::tls::{LeafCache, SniResolver};

/// A MITM-style server the way the listeners will use it: peek the
/// ClientHello, replay it with PrefixedStream, then terminate TLS. Each
/// connection gets back the SNI that the sniffer saw.
async fn start_server(cache: Arc<LeafCache>) -> SocketAddr {
    let config = server_config(Arc::new(SniResolver::new(cache)), ALPN_H2_HTTP11);
    let acceptor = TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let (verdict, bytes) =
                    peek_client_hello(&mut tcp, 32 * 1024, Duration::from_secs(5))
                        .await
                        .expect("peek");
                let Sniff::Tls { sni, .. } = verdict else {
                    panic!("not TLS: {verdict:?}")
                };
                // A failed handshake (no SNI) just ends this connection.
                if let Ok(mut tls) = acceptor.accept(PrefixedStream::new(bytes, tcp)).await {
                    let _ = tls.write_all(format!("{sni:?}").as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

fn connector(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).expect("root");
    TlsConnector::from(client_config(roots, alpn))
}

#[tokio::test]
async fn mitm_handshake_with_sni_negotiates_h2_and_presents_leaf_and_ca() {
    let cache = Arc::new(LeafCache::new(minter().0, 100));
    let ca = cache.minter().ca().cert_der().clone();
    let addr = start_server(cache.clone()).await;

    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("example.test").expect("name");
    let mut tls = connector(&ca, ALPN_H2_HTTP11)
        .connect(name, tcp)
        .await
        .expect("handshake");
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    let presented = conn.peer_certificates().expect("certs");
    assert_eq!(presented.len(), 2, "leaf then CA");
    assert_eq!(presented[1], ca);
    let mut echoed = String::new();
    tls.read_to_string(&mut echoed).await.expect("read");
    assert_eq!(echoed, r#"Some("example.test")"#);

    // An HTTP/1.1-only client gets http/1.1.
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("example.test").expect("name");
    let tls = connector(&ca, &[b"http/1.1"])
        .connect(name, tcp)
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(cache.stats().mints, 1, "second handshake reused the leaf");
}

#[tokio::test]
async fn handshake_without_sni_fails_cleanly_and_the_server_keeps_serving() {
    let cache = Arc::new(LeafCache::new(minter().0, 100));
    let ca = cache.minter().ca().cert_der().clone();
    let addr = start_server(cache.clone()).await;

    // rustls sends no SNI for an IP address.
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let ip = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let err = connector(&ca, ALPN_H2_HTTP11)
        .connect(ip, tcp)
        .await
        .expect_err("no SNI");
    assert!(
        err.to_string().contains("alert"),
        "expected a TLS alert, got: {err}"
    );
    assert_eq!(cache.stats().mints, 0);

    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("next.test").expect("name");
    let mut tls = connector(&ca, ALPN_H2_HTTP11)
        .connect(name, tcp)
        .await
        .expect("next client");
    let mut echoed = String::new();
    tls.read_to_string(&mut echoed).await.expect("read");
    assert_eq!(echoed, r#"Some("next.test")"#);
}

#[tokio::test]
async fn client_that_does_not_trust_the_ca_fails() {
    let cache = Arc::new(LeafCache::new(minter().0, 100));
    let addr = start_server(cache).await;
    let other = crate::tls::test_support::make_ca_with(
        &crate::tls::test_support::ca_params("some other CA"),
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let other_ca = crate::tls::test_support::load(&other)
        .expect("load")
        .cert_der()
        .clone();
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("example.test").expect("name");
    let err = connector(&other_ca, ALPN_H2_HTTP11)
        .connect(name, tcp)
        .await
        .expect_err("untrusted");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
}

/// Runs `native_roots_child` in a child process with SSL_CERT_FILE set, so
/// no test mutates this process's environment.
fn run_native_roots_child(cert_file: &std::path::Path, expect: &str) {
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "tls::server::tests::native_roots_child",
            "--ignored",
            "--nocapture",
        ])
        .env("SSL_CERT_FILE", cert_file)
        .env_remove("SSL_CERT_DIR")
        .env("IRON_TLS_TEST_EXPECT", expect)
        .output()
        .expect("running the child");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "child failed:\n{text}"
    );
}

#[test]
fn upstream_roots_honour_ssl_cert_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (minter, ca) = minter();
    drop(minter);
    let file = dir.path().join("roots.pem");
    std::fs::write(&file, &ca.cert_pem).expect("write");
    run_native_roots_child(&file, "one");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    run_native_roots_child(&empty, "none");
}

#[test]
#[ignore = "run by upstream_roots_honour_ssl_cert_file in a child process"]
fn native_roots_child() {
    match std::env::var("IRON_TLS_TEST_EXPECT").as_deref() {
        Ok("one") => {
            let roots = load_native_roots().expect("roots from SSL_CERT_FILE");
            assert_eq!(roots.len(), 1);
            let config = upstream_client_config().expect("config");
            assert_eq!(
                config.alpn_protocols,
                vec![b"h2".to_vec(), b"http/1.1".to_vec()]
            );
        }
        Ok("none") => {
            let err = upstream_client_config().expect_err("no roots");
            assert!(
                err.to_string().starts_with("no upstream root certificates"),
                "{err}"
            );
        }
        // Run directly (e.g. --include-ignored) without the parent's setup: nothing to check.
        Err(_) => {}
        other => panic!("unexpected IRON_TLS_TEST_EXPECT {other:?}"),
    }
}

#[tokio::test]
async fn mitm_server_picks_aes128_even_when_the_client_prefers_aes256() {
    let cache = Arc::new(LeafCache::new(minter().0, 100));
    let ca = cache.minter().ca().cert_der().clone();
    let addr = start_server(cache).await;
    let mut roots = RootCertStore::empty();
    roots.add(ca).expect("root");
    // Stock rustls order: TLS13_AES_256_GCM_SHA384 first, like curl and browsers.
    let stock = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    assert_eq!(
        stock.crypto_provider().cipher_suites[0].suite(),
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
    );
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let tls = TlsConnector::from(Arc::new(stock))
        .connect(ServerName::try_from("example.test").expect("name"), tcp)
        .await
        .expect("handshake");
    let suite = tls.get_ref().1.negotiated_cipher_suite().expect("suite");
    assert_eq!(suite.suite(), rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
}

/// The key-exchange group of one handshake between `server` and `client`
/// over an in-memory pipe, for the name `example.test`.
async fn negotiated_group(
    server: Arc<ServerConfig>,
    client: Arc<rustls::ClientConfig>,
) -> rustls::NamedGroup {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let accept = tokio::spawn(async move { TlsAcceptor::from(server).accept(b).await });
    let name = ServerName::try_from("example.test").expect("name");
    let tls = TlsConnector::from(client)
        .connect(name, a)
        .await
        .expect("handshake");
    let group = tls
        .get_ref()
        .1
        .negotiated_key_exchange_group()
        .expect("group")
        .name();
    accept.await.expect("join").expect("server handshake");
    group
}

/// A server config for `example.test` on a provider limited to `groups`.
fn server_with_groups(
    cache: Arc<LeafCache>,
    provider: rustls::crypto::CryptoProvider,
    groups: Vec<&'static dyn rustls::crypto::SupportedKxGroup>,
) -> Arc<ServerConfig> {
    let provider = rustls::crypto::CryptoProvider {
        kx_groups: groups,
        ..provider
    };
    let config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver::new(cache)));
    Arc::new(config)
}

fn roots_for(cache: &LeafCache) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots
        .add(cache.minter().ca().cert_der().clone())
        .expect("root");
    roots
}

#[tokio::test]
async fn upstream_leg_is_post_quantum_where_the_server_can_and_x25519_where_it_cannot() {
    use rustls::crypto::aws_lc_rs::{self, kx_group};
    let cache = Arc::new(LeafCache::new(minter().0, 100));
    let ours = client_config(roots_for(&cache), ALPN_H2_HTTP11);

    let hybrid = server_with_groups(
        cache.clone(),
        aws_lc_rs::default_provider(),
        vec![
            aws_lc_rs::kx_group::X25519MLKEM768,
            aws_lc_rs::kx_group::X25519,
        ],
    );
    assert_eq!(
        negotiated_group(hybrid, ours.clone()).await,
        rustls::NamedGroup::X25519MLKEM768
    );

    // A server without ML-KEM uses the X25519 share sent alongside the hybrid one.
    let classic = server_with_groups(
        cache.clone(),
        aws_lc_rs::default_provider(),
        vec![kx_group::X25519],
    );
    assert_eq!(
        negotiated_group(classic, ours).await,
        rustls::NamedGroup::X25519
    );
}

#[tokio::test]
async fn mitm_server_follows_the_client_group_order() {
    use rustls::crypto::aws_lc_rs::{self, kx_group};
    let cache = Arc::new(LeafCache::new(minter().0, 100));
    let mitm = server_config(Arc::new(SniResolver::new(cache.clone())), ALPN_H2_HTTP11);
    let client = |provider: rustls::crypto::CryptoProvider| {
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots_for(&cache))
            .with_no_client_auth();
        Arc::new(config)
    };

    // A client offering the hybrid first (browsers, curl with OpenSSL 3.5) gets it.
    let pq = rustls::crypto::CryptoProvider {
        kx_groups: vec![
            aws_lc_rs::kx_group::X25519MLKEM768,
            aws_lc_rs::kx_group::X25519,
        ],
        ..aws_lc_rs::default_provider()
    };
    assert_eq!(
        negotiated_group(mitm.clone(), client(pq)).await,
        rustls::NamedGroup::X25519MLKEM768
    );
    // One offering X25519 first (stock rustls order without the
    // prefer-post-quantum feature) pays for X25519 only, not the hybrid.
    let classic = rustls::crypto::CryptoProvider {
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1],
        ..aws_lc_rs::default_provider()
    };
    assert_eq!(
        negotiated_group(mitm.clone(), client(classic)).await,
        rustls::NamedGroup::X25519
    );
    // P-256 only still works.
    let p256 = rustls::crypto::CryptoProvider {
        kx_groups: vec![kx_group::SECP256R1],
        ..aws_lc_rs::default_provider()
    };
    assert_eq!(
        negotiated_group(mitm, client(p256)).await,
        rustls::NamedGroup::secp256r1
    );
}

/// Connects to `addr` as `name` with `tls`, reads the server's whole reply
/// (which also takes in its session ticket) and says whether the handshake
/// was a resumption.
async fn resumed(tls: &TlsConnector, addr: SocketAddr, name: &str) -> bool {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(name.to_string()).expect("name");
    let mut conn = tls.connect(name, tcp).await.expect("handshake");
    let mut reply = Vec::new();
    let _ = conn.read_to_end(&mut reply).await;
    conn.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
}

#[tokio::test]
async fn a_client_resumes_its_session_even_after_hundreds_of_other_handshakes() {
    let cache = Arc::new(LeafCache::new(minter().0, 100));
    let ca = cache.minter().ca().cert_der().clone();
    let addr = start_server(cache).await;
    let client = connector(&ca, ALPN_H2_HTTP11);
    assert!(!resumed(&client, addr, "api.test").await, "first is full");
    assert!(resumed(&client, addr, "api.test").await, "second resumes");
    // Other clients (fresh configs: nothing to resume) fill any bounded
    // server-side session store many times over.
    for _ in 0..300 {
        let other = connector(&ca, ALPN_H2_HTTP11);
        assert!(!resumed(&other, addr, "other.test").await);
    }
    assert!(
        resumed(&client, addr, "api.test").await,
        "the ticket outlived 300 other handshakes"
    );
}
