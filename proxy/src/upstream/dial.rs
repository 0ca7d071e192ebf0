//! Dialing upstreams: resolve the name the client asked for (never the IP it
//! connected to), refuse any address inside `upstream_deny_cidrs` and the
//! proxy's own listeners, connect
//! with TCP_NODELAY, and add TLS with real roots when the upstream leg is HTTPS.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::deny::DenyList;
use super::resolve::Resolver;
use crate::intercept::Client;
use crate::read_cap::poll_read_capped;
use crate::secrets::http::OwnListeners;
use crate::traffic::{ConnectOutcome, UpstreamProtocol, TRAFFIC};

mod error;

pub use error::{ConnectFailure, DialError, TlsFailure};

/// How long one TCP connect attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// TCP keepalive on upstream sockets: a probe after 30 s without traffic,
/// then every 15 s; four unanswered probes close the connection. A pooled
/// connection or a long-lived stream (events, a tunnel) to a host that
/// vanished (no FIN, no RST: a rebooted peer, a dropped NAT entry) is then
/// found dead within two minutes instead of the kernel's two hours. Go's
/// transport does the same (30 s). A live upstream that merely sends
/// nothing is left alone: event streams may idle for minutes. The data
/// plane's listening sockets carry the same settings for the client leg
/// (`app::bind_addr`).
pub(crate) fn keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(15))
        .with_retries(4)
}

/// Everything needed to dial upstreams; cheap to clone.
#[derive(Clone)]
pub struct Dialer {
    resolver: Resolver,
    deny: Arc<arc_swap::ArcSwap<DenyList>>,
    /// TLS with the configured ALPN (h2 and http/1.1).
    tls: TlsConnector,
    /// TLS offering http/1.1 only, for HTTP/1 clients and upgrades.
    tls_h1: TlsConnector,
    /// Which of the two this dialer uses.
    http1_only: bool,
    /// The proxy's own listeners, never dialed (a request for the proxy's
    /// own address would loop through it until descriptors run out).
    own: OwnListeners,
    /// How many times [`Dialer::retire_open`] ran ([`Standing`]). Shared by
    /// its clones.
    generation: Arc<AtomicU64>,
    /// The client whose requests this dialer's lookups are for
    /// ([`Dialer::for_client`]); `None`: the one the task names
    /// ([`super::resolve::on_behalf_of`]), if any.
    asker: Option<Client>,
}

/// The standing of an upstream HTTP connection, or of a pool of them: the
/// dialer generation it was made in (for a connection, read before its
/// address was checked against the deny list). Held HTTP/1 connections, the
/// client connections' HTTP/2 clients and the shared pools of an older
/// generation are not used again.
#[derive(Clone)]
pub struct Standing {
    generation: u64,
    current: Arc<AtomicU64>,
}

impl Standing {
    /// Whether the connection must not carry another request.
    pub fn is_retired(&self) -> bool {
        self.generation != self.current.load(Ordering::Acquire)
    }
}

#[cfg(test)]
impl Standing {
    /// A standing of a generation counter of its own, and a function that
    /// retires it (as [`Dialer::retire_open`] would).
    pub(crate) fn for_tests() -> (Standing, impl Fn()) {
        let current = Arc::new(AtomicU64::new(0));
        let retire = {
            let current = current.clone();
            move || {
                current.fetch_add(1, Ordering::AcqRel);
            }
        };
        (
            Standing {
                generation: 0,
                current,
            },
            retire,
        )
    }
}

impl Dialer {
    /// A dialer with a TLS client config built once.
    pub fn new(
        resolver: Resolver,
        deny: Arc<arc_swap::ArcSwap<DenyList>>,
        tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        let mut h1 = (*tls).clone();
        h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        Dialer {
            resolver,
            deny,
            tls: TlsConnector::from(tls),
            tls_h1: TlsConnector::from(Arc::new(h1)),
            http1_only: false,
            own: OwnListeners::new(),
            generation: Arc::default(),
            asker: None,
        }
    }

    /// The same dialer looking names up in `client`'s turns (see
    /// [`super::resolve`]): for a client connection's own upstream
    /// connections.
    pub fn for_client(&self, client: Client) -> Dialer {
        Dialer {
            asker: Some(client),
            ..self.clone()
        }
    }

    /// The standing of a connection or pool made now: retired by the next
    /// [`Dialer::retire_open`].
    pub fn standing(&self) -> Standing {
        Standing {
            generation: self.generation.load(Ordering::Acquire),
            current: self.generation.clone(),
        }
    }

    /// Retires every HTTP connection this dialer (or a clone) opened so far,
    /// or is opening: none is reused for another request; each closes when
    /// its exchange in flight, if any, ends: every [`Standing`] made before
    /// is retired. A reload that changes `upstream_deny_cidrs`
    /// does this after the new list is in place, so that no connection
    /// checked against the old list is used again.
    pub fn retire_open(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The same dialer refusing the addresses of `own` (filled as the
    /// listeners bind).
    pub fn refusing(self, own: OwnListeners) -> Dialer {
        Dialer { own, ..self }
    }

    /// The same dialer offering only http/1.1 through ALPN: an HTTP/1.1 client's
    /// request (and a WebSocket upgrade, which HTTP/2 cannot carry) then reaches
    /// the upstream as HTTP/1.1.
    pub fn http1_only(&self) -> Dialer {
        Dialer {
            http1_only: true,
            ..self.clone()
        }
    }

    /// Resolves `host`, refuses denied addresses, and connects over TCP.
    /// The connect (not the resolution) is timed in
    /// `iron_proxy_upstream_connect_duration_seconds`.
    pub async fn tcp(&self, host: &str, port: u16) -> Result<TcpStream, DialError> {
        let ips = self.resolve(host, port).await?;
        timed(Self::connect(host, port, ips)).await
    }

    /// The addresses of `host`, none of them denied or the proxy's own.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<std::net::IpAddr>, DialError> {
        let found = match self.asker {
            Some(client) => self.resolver.lookup_for(host, client).await,
            None => self.resolver.lookup(host).await,
        };
        let ips = found.map_err(|e| match e {
            super::resolve::ResolveError::Busy { .. } => DialError::ResolveBusy {
                host: host.to_string(),
                detail: e.to_string(),
            },
            _ => DialError::Resolve {
                host: host.to_string(),
                detail: e.to_string(),
            },
        })?;
        let deny = self.deny.load();
        for ip in &ips {
            if let Some(net) = deny.check(*ip) {
                return Err(DialError::Denied {
                    host: host.to_string(),
                    ip: *ip,
                    net: *net,
                });
            }
            let addr = SocketAddr::new(*ip, port);
            if let Some(listener) = self.own.find(addr) {
                return Err(DialError::OwnListener {
                    host: host.to_string(),
                    addr,
                    listener,
                });
            }
        }
        Ok(ips)
    }

    /// Connects to the first of `ips` that answers.
    async fn connect(
        host: &str,
        port: u16,
        ips: Vec<std::net::IpAddr>,
    ) -> Result<TcpStream, DialError> {
        let mut last = String::from("no address");
        let mut failure = ConnectFailure::Other;
        for ip in ips {
            let addr = SocketAddr::new(ip, port);
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    // Without TCP_NODELAY small writes stall for 40 ms on new connections.
                    let _ = s.set_nodelay(true);
                    let _ = socket2::SockRef::from(&s).set_tcp_keepalive(&keepalive());
                    return Ok(s);
                }
                Ok(Err(e)) => {
                    failure = ConnectFailure::of(&e);
                    last = format!("{addr}: {e}");
                }
                Err(_) => {
                    failure = ConnectFailure::TimedOut;
                    last = format!("{addr}: timed out");
                }
            }
        }
        Err(DialError::Connect {
            host: host.to_string(),
            port,
            failure,
            detail: last,
        })
    }

    /// A connection to `host:port` for an HTTP client: TLS when `tls`, plain TCP otherwise.
    pub async fn open(&self, host: &str, port: u16, tls: bool) -> Result<Conn, DialError> {
        // Before the deny list is read: a reload between the check and the
        // connect retires the connection.
        let standing = self.standing();
        let stream = if tls {
            Stream::Tls(Box::new(self.tls(host, port).await?))
        } else {
            Stream::Plain(self.tcp(host, port).await?)
        };
        let protocol = match &stream {
            Stream::Tls(t) if t.get_ref().1.alpn_protocol() == Some(b"h2") => {
                UpstreamProtocol::Http2
            }
            _ => UpstreamProtocol::Http1,
        };
        Ok(Conn(
            TokioIo::new(stream),
            standing,
            TRAFFIC.upstream_opened(protocol),
            None,
        ))
    }

    /// TCP plus TLS to `host`, verifying its certificate against the system
    /// roots. The connect and the handshake are timed together, once.
    pub async fn tls(&self, host: &str, port: u16) -> Result<TlsStream<TcpStream>, DialError> {
        let ips = self.resolve(host, port).await?;
        timed(async {
            let tcp = Self::connect(host, port, ips).await?;
            self.handshake(host, tcp).await
        })
        .await
    }

    /// The TLS handshake on `tcp`, offering this dialer's ALPN.
    async fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
    ) -> Result<TlsStream<TcpStream>, DialError> {
        let name = ServerName::try_from(host.to_string()).map_err(|e| DialError::Tls {
            host: host.to_string(),
            failure: TlsFailure::BadServerName,
            detail: e.to_string(),
        })?;
        let connector = if self.http1_only {
            &self.tls_h1
        } else {
            &self.tls
        };
        connector
            .connect(name, tcp)
            .await
            .map_err(|e| DialError::Tls {
                host: host.to_string(),
                failure: TlsFailure::of(&e),
                detail: error::tls_detail(&e),
            })
    }
}

/// A plain or TLS upstream stream.
pub enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Stream {
    /// Registers the socket with the calling task's runtime instead of the
    /// one it was opened on (see `held`): a duplicate descriptor joins this
    /// runtime's reactor, then the original leaves its own and is closed.
    /// The connection itself (TCP and TLS state) is untouched.
    pub fn rehome(&mut self) -> io::Result<()> {
        let tcp = match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_mut().0,
        };
        let dup: std::net::TcpStream = socket2::SockRef::from(&*tcp).try_clone()?.into();
        *tcp = TcpStream::from_std(dup)?;
        Ok(())
    }

    /// True when nothing has come from the upstream since its last response:
    /// no byte (nor the end of the stream) waiting in the socket, and over
    /// TLS no plaintext rustls decrypted and has not handed on. A request
    /// written on a connection holding bytes nobody asked for would take
    /// them as its response (a reused connection may carry another
    /// workload's request). One `recv(MSG_PEEK)`.
    pub fn is_quiet(&mut self) -> bool {
        let tcp = match self {
            Stream::Plain(s) => &*s,
            Stream::Tls(s) => {
                let (tcp, tls) = s.get_mut();
                match tls.process_new_packets() {
                    Ok(state) if state.plaintext_bytes_to_read() == 0 => &*tcp,
                    _ => return false,
                }
            }
        };
        nothing_waiting(tcp.as_fd())
    }

    /// The address the socket is connected to, if the system still says.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            Stream::Plain(s) => s.peer_addr().ok(),
            Stream::Tls(s) => s.get_ref().0.peer_addr().ok(),
        }
    }

    /// The socket's descriptor, for [`nothing_waiting`] while hyper owns
    /// the stream.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            Stream::Plain(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.get_ref().0.as_raw_fd(),
        }
    }
}

/// True when no byte, nor the end of the stream, waits to be read from the
/// non-blocking socket `fd`: one `recv(MSG_PEEK)`.
pub fn nothing_waiting(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let mut byte = [std::mem::MaybeUninit::uninit()];
    // Non-blocking: nothing waiting is WouldBlock.
    matches!(
        socket2::SockRef::from(&fd).peek(&mut byte),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock
    )
}

/// Reads are capped (`read_cap`), so that hyper's read buffer on an
/// upstream connection stays small after large bodies.
impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => poll_read_capped(Pin::new(s), cx, buf),
            Stream::Tls(s) => poll_read_capped(Pin::new(s.as_mut()), cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Runs `dial` (a TCP connect, with or without its TLS handshake) and
/// counts it in `iron_proxy_upstream_connect_duration_seconds` by outcome.
async fn timed<T>(dial: impl Future<Output = Result<T, DialError>>) -> Result<T, DialError> {
    let started = std::time::Instant::now();
    let dialed = dial.await;
    let outcome = match &dialed {
        Ok(_) => ConnectOutcome::Success,
        Err(DialError::Tls { .. }) => ConnectOutcome::TlsFailed,
        Err(_) => ConnectOutcome::ConnectFailed,
    };
    TRAFFIC.connected(outcome, started.elapsed());
    dialed
}

/// The hyper-side connection type, with its [`Standing`], counted in
/// `iron_proxy_upstream_connections` while it is open, and for a client
/// connection's own client, its place in that client's bounds on its
/// connections, per host and over all hosts (see `own_h2::limit`).
pub struct Conn(
    pub TokioIo<Stream>,
    pub Standing,
    pub crate::traffic::UpstreamOpen,
    pub(crate) Option<super::own_h2::OpenPermit>,
);

impl Drop for Conn {
    /// Its place in an own client's bounds goes first, while its socket is
    /// still open: until then `own_h2::limit` may shut the socket down
    /// through its descriptor, which must not be another socket's by then.
    fn drop(&mut self) {
        drop(self.3.take());
    }
}

/// The address a shared pool's upstream connection is connected to, in
/// every response it carries: an upgraded connection (a WebSocket) keeps it
/// to be checked against the deny list a reload puts in force
/// (`revoke::Recheck`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamPeer(pub SocketAddr);

impl Connection for Conn {
    /// For an own client's connection, its number goes into every response
    /// it carries (see `own_h2::limit`); for a shared pool's (upgrades go
    /// through those), its peer's address ([`UpstreamPeer`]).
    fn connected(&self) -> Connected {
        let connected = match self.0.inner() {
            Stream::Tls(t) if t.get_ref().1.alpn_protocol() == Some(b"h2") => {
                Connected::new().negotiated_h2()
            }
            _ => Connected::new(),
        };
        match &self.3 {
            Some(permit) => match permit.on_conn() {
                Some(on) => connected.extra(on),
                None => connected,
            },
            None => match self.0.inner().peer_addr() {
                Some(peer) => connected.extra(UpstreamPeer(peer)),
                None => connected,
            },
        }
    }
}

impl hyper::rt::Read for Conn {
    /// An own client's connection closed to make room (`own_h2::limit`)
    /// reads as ended at once, before the reactor has seen its socket shut
    /// down: hyper, polling its read before taking a request, then closes
    /// an idle one rather than writing a request on it.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this
            .3
            .as_ref()
            .is_some_and(super::own_h2::OpenPermit::is_shut)
        {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

impl tower_service::Service<Uri> for Dialer {
    type Response = Conn;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, DialError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (host, port, tls) = target(&uri)?;
            this.open(&host, port, tls).await
        })
    }
}

/// The host (IPv6 without brackets), port and TLS-ness a pooled client's
/// connection URI names.
pub(crate) fn target(uri: &Uri) -> Result<(String, u16, bool), DialError> {
    let host = uri
        .host()
        .ok_or(DialError::NoHost)?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok((host, port, tls))
}
