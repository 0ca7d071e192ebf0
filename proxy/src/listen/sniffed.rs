//! The "original destination" intake: a connection whose destination is
//! already known (a CONNECT/SOCKS5 target, an intercepted socket's original
//! destination, or the HTTPS listener) is sniffed, then handed to MITM, to
//! TLS passthrough (sni-only), or to the plain HTTP path. Anything else is
//! refused and audited.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use crate::audit::AuditRecord;
use crate::exchange::{AuditGuard, Awaits, ConnInfo, Unfinished};
use crate::revoke::Recheck;
use crate::rules::normalize_host;
use crate::state::Shared;
use crate::tls::sniff::{peek_client_hello, PrefixedStream, Sniff};
use crate::tls::ticket_hold::TicketHold;
use crate::tls::{LeafCache, PrepareError};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Largest ClientHello the proxy reads before deciding.
pub const MAX_CLIENT_HELLO: usize = 16 * 1024;
/// How long a client may take to send its first bytes.
pub const SNIFF_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a failed handshake's alert may take to leave.
const HELD_ALERT_TIMEOUT: Duration = Duration::from_secs(1);

/// How TLS from workloads is handled (`tls.mode`).
#[derive(Clone)]
pub enum TlsHandling {
    /// Terminate TLS with leaves minted from the CA.
    Mitm {
        /// Server config with the SNI resolver and ALPN h2/http1.1.
        config: Arc<rustls::ServerConfig>,
        /// The leaf cache, for SNI-less connections to an IP.
        cache: Arc<LeafCache>,
    },
    /// Pass TLS through after checking the SNI.
    SniOnly,
}

/// Everything a listener needs to take a connection in.
#[derive(Clone)]
pub struct Intake {
    /// Shared proxy state.
    pub shared: Arc<Shared>,
    /// TLS handling.
    pub tls: TlsHandling,
}

/// What is known about where the connection was going.
#[derive(Debug, Clone)]
pub struct KnownDest {
    /// A host name or IP literal, when known (CONNECT target, original IP).
    /// With it, `port` is the destination's for certain: requests whose Host
    /// names another port are refused.
    pub host: Option<String>,
    /// The destination port.
    pub port: u16,
}

impl Intake {
    /// Runs the pipeline on a host-only request and reports whether it may go on.
    /// With `precheck`, the inner requests will be checked again in full, so a
    /// rule's host alone is enough here.
    pub async fn check_host(
        &self,
        conn: &ConnInfo,
        host: &str,
        port: u16,
        precheck: bool,
        rec: &mut AuditRecord,
    ) -> bool {
        rec.host = host.to_string();
        rec.sni = rec.sni.clone().or_else(|| conn.sni().map(str::to_string));
        self.shared
            .policy()
            .check_host(host, port, precheck, rec)
            .await
    }

    /// For a granted tunnel (`conn.tunnel`), its request's record to `host`,
    /// written if what follows is cut before the client sends its request
    /// ([`Awaits::ClientData`]); other connections have sent none yet.
    fn tunnel_waiting(&self, conn: &ConnInfo, host: &str) -> Option<Unfinished> {
        conn.tunnel.is_some().then(|| {
            let mut rec = conn.record();
            rec.host = host.to_string();
            Unfinished::new(rec, &self.shared.audit, Awaits::ClientData)
        })
    }

    /// Sniffs `io` and serves it according to what it carries.
    ///
    /// `conn` is boxed, as the TLS stream in `serve_tls`: passed by value
    /// down to `serve_http`, it took room in each of their futures twice
    /// (argument and local), which a connection's task keeps while it serves.
    pub async fn serve<I>(&self, mut io: I, mut conn: Box<ConnInfo>, dest: KnownDest)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // A listener may know the port without a host (https_listen: 443).
        conn.fixed_port |= dest.host.is_some();
        // A granted tunnel's request is written if shutdown cuts the wait for
        // its first bytes (other connections have sent nothing yet).
        let waiting = self.tunnel_waiting(&conn, dest.host.as_deref().unwrap_or_default());
        let peeked = peek_client_hello(&mut io, MAX_CLIENT_HELLO, SNIFF_TIMEOUT).await;
        drop(waiting.map(Unfinished::finish));
        let (verdict, prefix) = match peeked {
            Ok(v) => v,
            Err(crate::tls::sniff::SniffError::Closed(0)) if conn.tunnel.is_none() => {
                // Connected and closed without a byte (TCP health checks,
                // port probes): no request, so no audit record.
                tracing::debug!(client = %conn.remote, "connection closed before sending anything");
                return;
            }
            Err(crate::tls::sniff::SniffError::Closed(0)) => {
                // A CONNECT or SOCKS5 request was made (and granted) and the
                // client closed the tunnel unused: that request gets its
                // record, as one that stalls does.
                let mut rec = conn.record();
                rec.host = dest.host.clone().unwrap_or_default();
                rec.reject(None, "no_client_data", 0);
                rec.error =
                    Some("the client closed the tunnel without sending anything through it".into());
                self.shared.audit.emit(&rec);
                return;
            }
            Err(e) => {
                let mut rec = conn.record();
                rec.host = dest.host.clone().unwrap_or_default();
                rec.reject(None, "no_client_data", 0);
                rec.error = Some(e.to_string());
                self.shared.audit.emit(&rec);
                return;
            }
        };
        let mut prefix = prefix;
        if matches!(verdict, Sniff::NotTls) {
            // Not TLS: the client may have sent only the start of a method
            // (`G`, then `ET / ...`); read on until the token has ended.
            extend_request_start(&mut io, &mut prefix).await;
        }
        let is_http = looks_like_http(&prefix);
        let io = PrefixedStream::new(prefix, io);
        match verdict {
            Sniff::Tls { sni, .. } => self.serve_tls(io, conn, dest, sni).await,
            Sniff::NotTls if is_http => {
                conn.default_port = dest.port;
                conn.tls = false;
                super::serve_http(self.shared.clone(), conn, io).await;
            }
            other => {
                let mut rec = conn.record();
                rec.host = dest.host.clone().unwrap_or_default();
                let reason = match other {
                    Sniff::Malformed(detail) => {
                        rec.error = Some(detail.into());
                        "malformed_client_hello"
                    }
                    Sniff::TooLarge => "client_hello_too_large",
                    _ => "unknown_protocol",
                };
                rec.reject(None, reason, 0);
                self.shared.audit.emit(&rec);
                let mut io = io;
                let _ = io.shutdown().await;
            }
        }
    }

    async fn serve_tls<I>(
        &self,
        io: PrefixedStream<I>,
        mut conn: Box<ConnInfo>,
        dest: KnownDest,
        sni: Option<String>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let sni = sni.map(|s| normalize_host(&s));
        conn.set_sni(sni.as_deref());
        // The name the proxy will dial: the SNI; without SNI, the known destination (an IP is treated as that IP).
        let Some(host) = sni.clone().or_else(|| dest.host.clone()) else {
            let mut rec = conn.record();
            if matches!(self.tls, TlsHandling::SniOnly) {
                // As every other record of a TLS connection passed through.
                rec.mode = crate::audit::Mode::SniOnly;
            }
            rec.reject(None, "missing_sni", 0);
            self.shared.audit.emit(&rec);
            return;
        };
        match &self.tls {
            // Boxed, as the TLS stream below: the splice's state would
            // otherwise size every connection's task, MITM ones included.
            TlsHandling::SniOnly => Box::pin(self.passthrough(io, conn, &host, dest.port)).await,
            TlsHandling::Mitm { config, cache } => {
                // The leaf and the handshake are boxed, and so is the
                // stream: a connection's task keeps its whole future, sized
                // by its largest state, for as long as it serves (idle
                // keep-alive connections included). Held by value, the
                // handshake's state (2.9 KiB) set that size, and the stream
                // (1.3 KiB) took room in this future, in `serve_http`'s
                // (argument and local) and in the connection's, since a
                // local that was borrowed keeps its place in a future after
                // it is moved out.
                //
                // A granted tunnel's request is written if shutdown cuts its
                // handshake or the wait for its first request.
                let waiting = self.tunnel_waiting(&conn, &host);
                let accept = self.accept_mitm(io, &conn, &host, sni.as_deref(), config, cache);
                let mut tls = match Box::pin(accept).await {
                    Some(t) => Box::new(t),
                    None => {
                        drop(waiting.map(Unfinished::finish));
                        return;
                    }
                };
                // What TLS carries must be HTTP too: anything else (DNS over TLS, a raw
                // protocol) is refused and audited here rather than dropped by the HTTP parser.
                let started = read_request_start(&mut tls).await;
                drop(waiting.map(Unfinished::finish));
                let first = match started {
                    Ok(first) if looks_like_http(&first) => first,
                    result => {
                        let mut rec = conn.record();
                        rec.host = host;
                        match result {
                            Ok(first) if first.is_empty() => {
                                rec.reject(None, "no_client_data", 0);
                                rec.error = Some("no request inside TLS".into());
                            }
                            Ok(_) => {
                                rec.reject(None, "unknown_protocol", 0);
                                rec.error = Some("TLS carries something other than HTTP".into());
                            }
                            Err(e) => {
                                rec.reject(None, "no_client_data", 0);
                                rec.error = Some(e.to_string());
                            }
                        }
                        self.shared.audit.emit(&rec);
                        let _ = tls.shutdown().await;
                        return;
                    }
                };
                if sni.is_none() {
                    conn.expect_host(&host);
                }
                conn.tls = true;
                conn.default_port = dest.port;
                super::serve_http(self.shared.clone(), conn, PrefixedStream::new(first, tls)).await;
            }
        }
    }

    /// The client-facing TLS of a MITM connection: its leaf readied, then
    /// the handshake, within [`SNIFF_TIMEOUT`] in all. `None` when refused
    /// (audited).
    async fn accept_mitm<I>(
        &self,
        io: PrefixedStream<I>,
        conn: &ConnInfo,
        host: &str,
        sni: Option<&str>,
        config: &Arc<rustls::ServerConfig>,
        cache: &Arc<LeafCache>,
    ) -> Option<MitmStream<PrefixedStream<I>>>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // The leaf, minted now unless it is cached: on the blocking pool and
        // in the client's turn (tls::mint_queue), so that no CA signature
        // runs on this worker and the resolver finds the leaf. A cached
        // leaf (nearly every connection) costs one lookup here. On a miss,
        // a name no rule can allow gets its leaf (for its 403) apart from
        // the main cache, where it would push out the leaves others use.
        let mut spent = Duration::ZERO;
        let mut mint_failed = None;
        let refused = || self.shared.policy().refuses_host(host);
        if let Some(minting) = cache.prepare(host, conn.counted_as, SNIFF_TIMEOUT, refused) {
            let started = tokio::time::Instant::now();
            match minting.await {
                Ok(()) => {}
                Err(PrepareError::Busy) => {
                    let mut rec = conn.record();
                    rec.host = host.to_string();
                    rec.reject(None, "leaf_mint_busy", 0);
                    rec.error = Some(format!(
                        "no leaf certificate for {host} within {SNIFF_TIMEOUT:?}: \
                         the mints queued before it did not leave it a turn"
                    ));
                    self.shared.audit.emit(&rec);
                    let mut io = io;
                    let _ = io.shutdown().await;
                    return None;
                }
                Err(e) => {
                    let error = crate::error_chain(&e);
                    mint_failed = Some(format!("no leaf certificate for {host}: {error}"));
                }
            }
            spent = started.elapsed();
        }
        // rustls passes an SNI that is an IP literal over (RFC 6066
        // forbids it), so the cache's resolver would see none.
        let sni_is_ip = sni.is_some_and(|s| s.parse::<IpAddr>().is_ok());
        let config = if mint_failed.is_some() {
            // The handshake fails with the alert of a resolver that has no
            // leaf, as it did when the resolver minted, without a second try.
            with_resolver(config, Arc::new(NoLeaf))
        } else if sni.is_some() && !sni_is_ip {
            config.clone()
        } else {
            // No SNI (or an IP): present a leaf for the destination itself (an IP SAN for IPs).
            let name = host.to_string();
            let cache = cache.clone();
            with_resolver(config, Arc::new(FixedName { cache, name }))
        };
        match mitm_handshake(config, io, SNIFF_TIMEOUT, spent).await {
            Ok(tls) => Some(tls),
            Err(e) => {
                let mut rec = conn.record();
                rec.host = host.to_string();
                rec.reject(None, "client_tls_handshake_failed", 0);
                rec.error = Some(mint_failed.unwrap_or_else(|| e.to_string()));
                self.shared.audit.emit(&rec);
                None
            }
        }
    }

    /// sni-only: check the host, then splice TCP to the SNI name on the same port.
    async fn passthrough<I>(
        &self,
        mut io: PrefixedStream<I>,
        conn: Box<ConnInfo>,
        host: &str,
        port: u16,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let started = std::time::Instant::now();
        let mut rec = conn.record();
        rec.mode = crate::audit::Mode::SniOnly;
        if let Some(expected) = conn.expected_host() {
            if expected != host {
                rec.host = host.to_string();
                rec.reject(None, "host_mismatch", 0);
                self.shared.audit.emit(&rec);
                return;
            }
        }
        // Loaded before the check: a reload in between is then checked again.
        let allowed_by = self.shared.policy();
        if !self.check_host(&conn, host, port, false, &mut rec).await {
            // Refused by closing the connection, not with an HTTP response: status 0.
            rec.status_code = 0;
            self.shared.audit.emit(&rec);
            let _ = io.shutdown().await;
            return;
        }
        let mut guard = AuditGuard::since(rec, self.shared.audit.clone(), started);
        // Each address has its own connect timeout; a name with many that do
        // not answer is bounded as a whole, as an HTTP exchange's connect is.
        let within = allowed_by.limits.upstream_response_header_timeout;
        let dialer = self.shared.upstream.dialer().for_client(conn.counted_as);
        let dial = dialer.tcp(host, port);
        let dialed = tokio::time::timeout(within, dial).await;
        let upstream = match dialed {
            Ok(Ok(u)) => u,
            Ok(Err(e)) => {
                if let Some(r) = guard.record_mut() {
                    r.fail(e.reason(), e.to_string(), 0);
                }
                return;
            }
            Err(_) => {
                if let Some(r) = guard.record_mut() {
                    let error = format!("{host}:{port}: not connected within {within:?}");
                    r.fail("upstream_timeout", error, 0);
                }
                return;
            }
        };
        let peer = upstream.peer_addr().ok().map(|a| a.ip());
        crate::upgrade::SplicedRecord::new(
            guard,
            self.shared.drain.guard(),
            crate::traffic::SpliceKind::Passthrough,
        )
        .run(
            io,
            upstream,
            Recheck::new(&self.shared, allowed_by, host, port, false)
                .between(conn.remote.ip(), peer),
        )
        .await;
    }
}

/// The client-facing TLS handshake, within `deadline` of the ClientHello,
/// `spent` of which already went (on minting its leaf): a client that sends
/// its ClientHello and then stalls would otherwise hold its connection
/// forever. The IO goes under a [`TicketHold`], released once the
/// handshake is done: the session ticket leaves with the first response.
async fn mitm_handshake<I>(
    config: Arc<rustls::ServerConfig>,
    io: I,
    deadline: Duration,
    spent: Duration,
) -> std::io::Result<MitmStream<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let accept = TlsAcceptor::from(config).accept(TicketHold::new(io));
    let left = deadline.saturating_sub(spent);
    match tokio::time::timeout(left, accept.into_fallible()).await {
        Ok(Ok(mut tls)) => {
            tls.get_mut().0.release();
            Ok(tls)
        }
        Ok(Err((e, mut io))) => {
            // An alert held back after the client's Finished goes out before
            // the connection closes.
            io.release();
            if io.held() > 0 {
                let _ = tokio::time::timeout(HELD_ALERT_TIMEOUT, io.shutdown()).await;
            }
            Err(e)
        }
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("TLS handshake not done within {deadline:?}"),
        )),
    }
}

/// A client-facing TLS stream after [`mitm_handshake`].
type MitmStream<I> = tokio_rustls::server::TlsStream<TicketHold<I>>;

/// Presents the leaf for one fixed name whatever the ClientHello says: used
/// for SNI-less TLS to a known destination (an IP is treated as that IP).
#[derive(Debug)]
struct FixedName {
    cache: Arc<LeafCache>,
    name: String,
}

impl ResolvesServerCert for FixedName {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.cache.for_handshake(&self.name).ok()
    }
}

/// Presents no leaf: the handshake of a connection whose leaf could not be
/// minted fails with rustls's alert, as when a resolver finds none.
#[derive(Debug)]
struct NoLeaf;

impl ResolvesServerCert for NoLeaf {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

/// `config` with its certificate resolver replaced (a copy: per connection).
fn with_resolver(
    config: &rustls::ServerConfig,
    resolver: Arc<dyn ResolvesServerCert>,
) -> Arc<rustls::ServerConfig> {
    let mut config = config.clone();
    config.cert_resolver = resolver;
    Arc::new(config)
}

/// Longest request-method token [`looks_like_http`] accepts (the longest the
/// HTTP side takes: `exchange::hygiene`'s 32 bytes), plus the space after it.
const REQUEST_START: usize = 33;

/// A byte of a method token as methods are spelled: letters, digits, `-` and
/// `_` (`M-SEARCH`, `VERSION-CONTROL`, `MKWORKSPACE`, a custom `X_SYNC`).
/// Not a `.`: `SSH-2.0-...` is no request.
fn method_byte(b: &u8) -> bool {
    b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_'
}

/// Reads the first bytes of a decrypted stream: until one is not a [`method_byte`] (the
/// method token has ended) or [`REQUEST_START`] bytes arrived, whichever is first; fewer at
/// EOF. Enough for [`looks_like_http`] to decide. Bounded by [`SNIFF_TIMEOUT`].
async fn read_request_start<I>(io: &mut I) -> std::io::Result<Vec<u8>>
where
    I: AsyncRead + Unpin,
{
    let mut buf = Vec::with_capacity(REQUEST_START);
    tokio::time::timeout(SNIFF_TIMEOUT, fill_request_start(io, &mut buf))
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no request within the sniff timeout",
            ))
        })?;
    Ok(buf)
}

/// Reads more into `prefix` while it is all [`method_byte`]s and shorter than
/// [`REQUEST_START`] (a method token not yet ended), within [`SNIFF_TIMEOUT`].
/// A read error, EOF or the timeout just stops it: the caller judges what it has.
async fn extend_request_start<I>(io: &mut I, prefix: &mut Vec<u8>)
where
    I: AsyncRead + Unpin,
{
    let _ = tokio::time::timeout(SNIFF_TIMEOUT, fill_request_start(io, prefix)).await;
}

/// Reads into `buf` while it is all [`method_byte`]s and shorter than
/// [`REQUEST_START`]; stops at EOF.
async fn fill_request_start<I>(io: &mut I, buf: &mut Vec<u8>) -> std::io::Result<()>
where
    I: AsyncRead + Unpin,
{
    let mut chunk = [0u8; REQUEST_START];
    while buf.len() < REQUEST_START && buf.iter().all(method_byte) {
        let want = REQUEST_START - buf.len();
        let n = io.read(&mut chunk[..want]).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// True when the first bytes look like an HTTP/1 request line (a method of 3
/// to 32 [`method_byte`]s starting with a letter, then a space) or an HTTP/2
/// preface.
fn looks_like_http(prefix: &[u8]) -> bool {
    let token_len = prefix.iter().take_while(|b| method_byte(b)).count();
    prefix.first().is_some_and(u8::is_ascii_alphabetic)
        && (3..REQUEST_START).contains(&token_len)
        && prefix.get(token_len) == Some(&b' ')
        || prefix.starts_with(b"PRI * HTTP/2.0")
}

#[cfg(test)]
mod tests;
