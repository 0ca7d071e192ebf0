//! TLS interception end to end: MITM through `https_listen` and through CONNECT/SOCKS5 on
//! `tunnel_listen` with real clients (curl, Python requests, grpcio, websockets), SNI/Host
//! agreement, sni-only passthrough, refusal of what is not TLS or HTTP (or is HTTP the
//! parser refuses, on every listener), leaf minting under
//! concurrency, `generate-ca`, and robustness against stalled and reset handshakes.
//!
//! Every test checks the audit records the proxy wrote, not only what the client saw.

mod authority;
mod cut_short;
mod flow_control;
mod generate_ca;
pub(crate) mod grpc;
mod half_close;
mod head_method;
mod heads;
mod leaf_cache;
mod malformed;
mod mitm;
mod rapid_reset;
mod refusals;
mod robustness;
mod sni_only;
mod streaming;
mod streams;
mod tunnel;
mod upgrades;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use iron_proxy_tests::*;

/// MITM, every listener, the fake internet's hosts allowed by name and (for IP targets) by
/// the whole 198.18.0.0/15 benchmark range the fake internets live in.
const MITM: &str = r#"
proxy:
  tunnel_listen: auto
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test", "grpc.test", "ws.test", "sse.test"]
      cidrs: ["198.18.0.0/15"]
"#;

/// A proxy in MITM mode with [`MITM`] and one upstream `name`.
fn mitm_with(name: &str) -> (FakeInternet, UpstreamHandle, ProxyProcess) {
    let net = FakeInternet::new();
    let up = Upstream::https(name).start(&net);
    let px = Proxy::with(MITM).resolver(&net).start();
    (net, up, px)
}

/// `host:port` as a string for URLs and proxy settings (IPv6 bracketed).
fn hostport(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => v4.to_string(),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

/// A raw TCP client of the proxy, for bytes no real client sends.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connecting to the proxy at {addr}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .expect("setting a read timeout");
        Raw { stream }
    }

    /// Our address, as the proxy's audit `remote_addr` shows it.
    fn local(&self) -> String {
        self.stream.local_addr().expect("local addr").to_string()
    }

    fn send(&mut self, bytes: &[u8]) -> &mut Self {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("writing to the proxy: {e}"));
        self
    }

    /// Reads a response head byte by byte, up to the blank line.
    fn read_head(&mut self) -> String {
        iron_proxy_tests::timed_read::read_head(&mut self.stream, "raw client")
    }

    /// Reads until the proxy closes the connection (EOF or reset); returns what it sent.
    /// Panics if the proxy keeps it open past the read timeout.
    fn read_to_close(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match iron_proxy_tests::timed_read::read_some(&mut self.stream, &mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
                Err(e) => panic!("the proxy did not close the connection: {e}"),
            }
        }
    }

    /// Closes with a TCP reset (SO_LINGER 0) instead of a FIN.
    fn reset(self) {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&self.stream);
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: fd is a live socket owned by self.stream; the option struct outlives the call.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "setting SO_LINGER");
        drop(self.stream);
    }
}

/// The start of a ClientHello (a record header and a handshake header promising more than
/// is sent): a client that stalls or dies mid-handshake.
fn partial_client_hello() -> Vec<u8> {
    // record: handshake, TLS 1.0 record version, 0x0100 bytes;
    // handshake: ClientHello, 0x0000fc bytes; then the client version and 8 bytes of random.
    let mut b = vec![
        0x16, 0x03, 0x01, 0x01, 0x00, 0x01, 0x00, 0x00, 0xfc, 0x03, 0x03,
    ];
    b.extend_from_slice(&[0x11; 8]);
    b
}

/// A complete ClientHello for `sni`, as rustls sends it.
fn client_hello(sni: &str) -> Vec<u8> {
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("a valid name");
    let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .expect("a client connection");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).expect("writing to a Vec");
    }
    out
}

/// A TLS connection to the proxy's HTTPS listener for `sni` whose handshake is complete and
/// on which nothing has been sent; trusts the proxy's CA.
fn tls_handshake_only(
    px: &ProxyProcess,
    sni: &str,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut conn = tls_client(px, sni);
    let mut sock = Raw::connect(px.https_addr()).stream;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .unwrap_or_else(|e| panic!("TLS handshake with the proxy: {e}"));
    }
    rustls::StreamOwned::new(conn, sock)
}

/// A rustls client connection for `sni` that trusts the proxy's CA, before any byte is sent.
fn tls_client(px: &ProxyProcess, sni: &str) -> rustls::ClientConnection {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls::pki_types::CertificateDer::from_pem_file(px.ca()).expect("the proxy CA");
    roots.add(ca).expect("adding the proxy CA");
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).expect("a valid name");
    rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("a client connection")
}

/// The proxy's open file descriptors (`/proc/PID/fd`).
fn open_fds(px: &ProxyProcess) -> usize {
    let dir = format!("/proc/{}/fd", px.pid());
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
        .count()
}

/// A normal request still works: the proxy survived whatever the test did to it.
fn assert_still_serving(px: &ProxyProcess, up: &UpstreamHandle, tag: &str) {
    let r = Curl::get(&up.url(&format!("/anything/{tag}")))
        .via(px)
        .run();
    assert_eq!(r.status, 200, "the proxy stopped serving after {tag}:\n{r}");
    up.wait_for_request(|q| q.path() == format!("/anything/{tag}"));
}
