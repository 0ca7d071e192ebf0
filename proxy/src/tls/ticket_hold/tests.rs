use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::{ClientConfig, HandshakeKind, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;
use crate::tls::server::{server_config, ALPN_H2_HTTP11};
use crate::tls::test_support::minter;
use crate::tls::{LeafCache, SniResolver};

/// The server's TCP stream, recording the size of every write that reached
/// the socket, and taking at most `cap` bytes per write.
struct Recorder {
    tcp: TcpStream,
    cap: usize,
    writes: Arc<Mutex<Vec<usize>>>,
}

impl Recorder {
    fn record(&self, n: usize) {
        self.writes.lock().unwrap().push(n);
    }
}

impl AsyncRead for Recorder {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Flatten up to `cap` bytes so a capped write cuts anywhere, records
        // included.
        let mut flat = Vec::new();
        for b in bufs {
            flat.extend_from_slice(&b[..b.len().min(this.cap - flat.len())]);
        }
        let n = ready!(Pin::new(&mut this.tcp).poll_write(cx, &flat))?;
        this.record(n);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// What the server does once the handshake is done.
#[derive(Clone, Copy)]
enum Then {
    /// Reads "ping", flushes, checks the ticket is still held, answers `len` bytes.
    Answer { len: usize },
    /// Closes without writing anything.
    Close,
}

/// One connection's server side: writes per connection and bytes held
/// right after the handshake.
#[derive(Default)]
struct Seen {
    writes: Vec<Vec<usize>>,
    held_after_handshake: Vec<usize>,
}

/// A MITM server config (session tickets on) behind [`TicketHold`].
async fn start(cap: usize, then: Then) -> (SocketAddr, CertificateDer<'static>, Arc<Mutex<Seen>>) {
    let cache = Arc::new(LeafCache::new(minter().0, 100));
    let ca = cache.minter().ca().cert_der().clone();
    let acceptor = TlsAcceptor::from(server_config(
        Arc::new(SniResolver::new(cache)),
        ALPN_H2_HTTP11,
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let writes = Arc::new(Mutex::new(Vec::new()));
            let io = TicketHold::new(Recorder {
                tcp,
                cap,
                writes: writes.clone(),
            });
            let mut tls = acceptor.accept(io).await.expect("handshake");
            tls.get_mut().0.release();
            let held = tls.get_ref().0.held();
            match then {
                Then::Answer { len } => {
                    let mut ping = [0u8; 4];
                    tls.read_exact(&mut ping).await.unwrap();
                    assert_eq!(&ping, b"ping");
                    tls.flush().await.unwrap();
                    assert_eq!(tls.get_ref().0.held(), held, "a flush sends nothing held");
                    let body: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                    tls.write_all(&body).await.unwrap();
                    tls.flush().await.unwrap();
                    let mut rest = Vec::new();
                    let _ = tls.read_to_end(&mut rest).await;
                }
                Then::Close => {}
            }
            tls.shutdown().await.unwrap();
            let mut seen = seen2.lock().unwrap();
            seen.held_after_handshake.push(held);
            seen.writes.push(writes.lock().unwrap().clone());
        }
    });
    (addr, ca, seen)
}

/// A client trusting `ca`, speaking TLS 1.2 only or the default versions.
fn connector(ca: &CertificateDer<'static>, tls12_only: bool) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let builder = ClientConfig::builder_with_provider(crate::tls::provider());
    let builder = if tls12_only {
        builder.with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        builder.with_safe_default_protocol_versions()
    };
    let client = builder
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(client))
}

/// One client connection: sends "ping" when the server answers, reads all
/// of the reply and says whether the handshake was a resumption.
async fn client(tls: &TlsConnector, addr: SocketAddr, then: Then) -> bool {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("api.test").unwrap();
    let mut conn = tls.connect(name, tcp).await.expect("client handshake");
    let mut reply = Vec::new();
    if let Then::Answer { len } = then {
        conn.write_all(b"ping").await.unwrap();
        reply.resize(len, 0);
        conn.read_exact(&mut reply).await.unwrap();
        let expect: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        assert!(reply == expect, "the response arrived intact");
        conn.shutdown().await.unwrap();
    }
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    conn.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed)
}

/// Waits for the server side of the `n`th connection to finish.
async fn server_side(seen: &Mutex<Seen>, n: usize) -> (Vec<usize>, usize) {
    for _ in 0..500 {
        {
            let seen = seen.lock().unwrap();
            if seen.writes.len() > n {
                return (seen.writes[n].clone(), seen.held_after_handshake[n]);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("server side of connection {n} did not finish");
}

#[tokio::test]
async fn the_ticket_leaves_with_the_first_response_in_one_write() {
    let then = Then::Answer { len: 100 };
    let (addr, ca, seen) = start(usize::MAX, then).await;
    let tls = connector(&ca, false);
    assert!(!client(&tls, addr, then).await);
    let (writes, held) = server_side(&seen, 0).await;
    assert!(held > 0, "the ticket was held");
    // The handshake flight, the ticket with the response, the close_notify:
    // without the hold, the ticket is a write of its own.
    assert_eq!(writes.len(), 3, "writes: {writes:?}");
    assert!(writes[1] > held + 100, "writes: {writes:?}");
    // The ticket reached the client: its next connection resumes.
    assert!(
        client(&tls, addr, then).await,
        "the second connection resumes"
    );
}

#[tokio::test]
async fn a_ticket_held_until_shutdown_goes_with_the_close_notify() {
    let (addr, ca, seen) = start(usize::MAX, Then::Close).await;
    let tls = connector(&ca, false);
    assert!(!client(&tls, addr, Then::Close).await);
    let (writes, held) = server_side(&seen, 0).await;
    assert!(held > 0);
    assert_eq!(
        writes.len(),
        2,
        "flight, then ticket and close_notify: {writes:?}"
    );
    assert!(client(&tls, addr, Then::Close).await, "the ticket arrived");
}

#[tokio::test]
async fn writes_cut_anywhere_deliver_the_ticket_and_the_response_intact() {
    let then = Then::Answer { len: 40_000 };
    for cap in [1, 7, 300] {
        let (addr, ca, seen) = start(cap, then).await;
        let tls = connector(&ca, false);
        assert!(!client(&tls, addr, then).await);
        let (writes, held) = server_side(&seen, 0).await;
        assert!(held > 0);
        assert!(writes.iter().all(|&n| n <= cap));
        assert!(
            client(&tls, addr, then).await,
            "cap {cap}: the ticket arrived"
        );
    }
}

#[tokio::test]
async fn tls12_handshakes_hold_nothing() {
    let then = Then::Answer { len: 100 };
    let (addr, ca, seen) = start(usize::MAX, then).await;
    let tls = connector(&ca, true);
    assert!(!client(&tls, addr, then).await);
    let (writes, held) = server_side(&seen, 0).await;
    assert_eq!(held, 0);
    // Both handshake flights (the second with the ticket), the response,
    // the close_notify.
    assert_eq!(writes.len(), 4, "writes: {writes:?}");
    assert!(client(&tls, addr, then).await, "the TLS 1.2 ticket arrived");
}

#[test]
fn the_client_records_are_followed_across_reads() {
    // A handshake record whose body contains the byte 23, a CCS, then an
    // encrypted record: only the last counts, however the bytes are split.
    let mut stream = vec![22, 3, 1, 0, 4, 23, 23, 23, 23];
    stream.extend_from_slice(&[20, 3, 3, 0, 1, 1]);
    let encrypted_at = stream.len();
    stream.extend_from_slice(&[23, 3, 3, 0, 2, 9, 9]);
    for split in 1..stream.len() {
        let mut records = ClientRecords::default();
        for chunk in stream[..encrypted_at].chunks(split) {
            records.feed(chunk);
            assert!(!records.encrypted_seen, "split {split}");
        }
        for chunk in stream[encrypted_at..].chunks(split) {
            records.feed(chunk);
        }
        assert!(records.encrypted_seen, "split {split}");
    }
}
