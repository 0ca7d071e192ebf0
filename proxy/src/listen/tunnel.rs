//! `proxy.tunnel_listen`: HTTP CONNECT, SOCKS5 (no auth; IPv4, IPv6 and
//! domain targets) and absolute-form HTTP proxy requests on one port, told
//! apart by the first byte (a greeting of another SOCKS version, such as
//! SOCKS4, is refused and audited). The tunnel target goes through the
//! pipeline; the inner stream is then sniffed like any connection with a
//! known destination.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use http::uri::Authority;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::connect_head::{self, FirstRequest};
use super::sniffed::{Intake, KnownDest, SNIFF_TIMEOUT};
use super::HEADER_READ_TIMEOUT;
use crate::audit::{Mode, TunnelInfo};
use crate::body::{self, Body};
use crate::exchange::{self, Awaits, ConnInfo, Unfinished};
use crate::rules::normalize_host;
use crate::tls::sniff::PrefixedStream;

/// Errors while reading a SOCKS5 handshake.
#[derive(Debug, thiserror::Error)]
pub enum SocksError {
    /// The client offered a version other than 5.
    #[error("unsupported SOCKS version {0}")]
    Version(u8),
    /// The client does not offer "no authentication".
    #[error("client offers no acceptable authentication method")]
    NoAcceptableAuth,
    /// A command other than CONNECT.
    #[error("unsupported SOCKS command {0}")]
    Command(u8),
    /// An unknown address type.
    #[error("unsupported SOCKS address type {0}")]
    AddressType(u8),
    /// A domain that is not a host name: not UTF-8, or holding what no
    /// host has (userinfo `b.test@a.test`, a port, a path); the text, lossy
    /// and cut short.
    #[error("SOCKS domain {0:?} is not a host name")]
    Domain(String),
    /// Port 0, which no server listens on (a CONNECT to `host:0` is refused
    /// the same way).
    #[error("SOCKS target {0}:0 has no port")]
    PortZero(String),
    /// The client did not finish its request in time.
    #[error("no complete SOCKS5 request within {0:?}")]
    Timeout(std::time::Duration),
    /// Reading or writing failed.
    #[error("socks i/o")]
    Io(#[from] std::io::Error),
}

/// A tunnel client connection, with the bytes read to tell SOCKS5 from HTTP put back.
type Client = PrefixedStream<TcpStream>;

/// The first byte of a SOCKS5 greeting.
const SOCKS5: u8 = 0x05;
/// First bytes taken for a greeting of another SOCKS version: SOCKS4/4a
/// (4), the SOCKS6 draft (6) and other small version numbers. No HTTP
/// request starts with a control byte, so HTTP and CONNECT are not affected.
const OTHER_SOCKS: std::ops::RangeInclusive<u8> = 0x01..=0x09;
/// SOCKS4's version byte.
const SOCKS4: u8 = 0x04;
/// SOCKS4's reply to a refused request: reply version 0, code 0x5B
/// ("request rejected or failed"), then port and address (ignored).
const SOCKS4_REJECTED: [u8; 8] = [0x00, 0x5b, 0, 0, 0, 0, 0, 0];

/// SOCKS5 reply codes.
const SOCKS_OK: u8 = 0x00;
const SOCKS_NOT_ALLOWED: u8 = 0x02;
const SOCKS_CMD_UNSUPPORTED: u8 = 0x07;
const SOCKS_ATYP_UNSUPPORTED: u8 = 0x08;

/// Accepts tunnel connections until the task is dropped.
pub async fn run(listener: TcpListener, intake: Intake) {
    let mut errors = super::accept::AcceptErrors::new("tunnel");
    loop {
        let (stream, remote) = errors.accept(&listener).await;
        let Ok(permit) = super::per_client::admit(&intake.shared, Mode::Tunnel, remote) else {
            continue;
        };
        let intake = intake.clone();
        super::per_client::spawn(permit, async move { serve(stream, remote, intake).await });
    }
}

async fn serve(mut stream: TcpStream, remote: SocketAddr, intake: Intake) {
    let Some(first) = super::read_first_bytes(&mut stream, SNIFF_TIMEOUT).await else {
        tracing::debug!(client = %remote, "tunnel client sent nothing within {SNIFF_TIMEOUT:?}");
        return;
    };
    match first.first() {
        Some(&SOCKS5) => {
            let stream = PrefixedStream::new(first, stream);
            if let Err(e) = socks5(stream, remote, &intake).await {
                tracing::debug!(client = %remote, error = %e, "socks5 handshake failed");
            }
            return;
        }
        Some(&version) if OTHER_SOCKS.contains(&version) => {
            refuse_socks_version(stream, version, remote, &intake).await;
            return;
        }
        _ => {}
    }
    match connect_head::read(&mut stream, first, HEADER_READ_TIMEOUT).await {
        FirstRequest::Connect { target, head } => {
            connect_direct(stream, head, &target, remote, intake).await;
        }
        FirstRequest::Other(bytes) => {
            http_proxy(PrefixedStream::new(bytes, stream), remote, intake).await;
        }
        FirstRequest::Gone => {
            tracing::debug!(client = %remote, "tunnel client did not finish its first request");
        }
    }
}

/// Serves absolute-form requests and CONNECTs that were not read by
/// `connect_head` through hyper.
async fn http_proxy(stream: Client, remote: SocketAddr, intake: Intake) {
    let shared = intake.shared.clone();
    let started = super::idle::Started::default();
    let counter = started.clone();
    let cancels = super::cancels::Cancels::new(remote);
    let tracker = cancels.clone();
    // As `serve_http`: this task drives the upstream connection the
    // connection's HTTP/1 requests go out on, and its HTTP/2 requests get
    // an HTTP/2 client of their own (not one shared with other clients).
    let held = crate::upstream::HeldSlot::default();
    let slot = held.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        counter.one();
        let version = req.version();
        let intake = intake.clone();
        let fut: exchange::HandleFuture = if req.method() == Method::CONNECT {
            Box::pin(async move { Ok(connect(req, remote, intake).await) })
        } else {
            // Called now, not in a future: the exchange's record begins
            // before hyper could drop the request unrun.
            let mut conn = ConnInfo::new(remote, Mode::Tunnel, false, 80);
            conn.held = Some(slot.clone());
            Box::pin(exchange::handle(intake.shared.clone(), Arc::new(conn), req))
        };
        tracker.track(version, fut)
    });
    // Like `serve_http`: a connection the proxy closes first (after a refused
    // head) drains, so that the client reads the answer rather than a reset.
    // A CONNECT served here goes on in a task of its own: the socket keeps
    // its client's connection counted (`per_client`).
    let stream = super::linger::Linger::new(super::per_client::Permitted::new(stream));
    let builder = super::http_builder();
    let served = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
    let served = super::cancels::watch(super::idle::bounded(served, started), Some(cancels));
    if let Err(e) = crate::upstream::held::drive(held, served).await {
        tracing::debug!(client = %remote, error = %e, "tunnel client connection ended with an error");
        // A request hyper refused to parse never reached the service: audit it here.
        let conn = ConnInfo::new(remote, Mode::Tunnel, false, 80);
        super::refused::audit(&shared, &conn, &*e);
    }
}

fn status(code: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(body::full(format!("iron-proxy: {text}\n")));
    *r.status_mut() = code;
    r
}

/// The answer to an admitted CONNECT on the direct path.
const CONNECT_OK: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

/// A CONNECT target the pipeline let through.
struct Admitted {
    conn: Box<ConnInfo>,
    dest: KnownDest,
}

/// Checks a CONNECT's target: the tunnel to open, or the response that
/// refuses it (audited here).
async fn admit(
    target: Option<&Authority>,
    remote: SocketAddr,
    intake: &Intake,
) -> Result<Admitted, Response<Body>> {
    let Some((host, port)) = target.and_then(exchange::tunnel_target) else {
        let text = target.map(|a| a.as_str()).unwrap_or_default();
        return Err(refuse_target(text, remote, intake));
    };
    let mut conn = Box::new(ConnInfo::new(remote, Mode::Tunnel, false, port));
    conn.tunnel = Some(TunnelInfo {
        kind: "connect",
        target: format!("{host}:{port}"),
    });
    let mut rec = conn.record();
    rec.method = "CONNECT".into();
    // Written if the check is cut: hyper drops a CONNECT's answer when its
    // client leaves, and shutdown drops every task.
    let mut rec = Unfinished::new(rec, &intake.shared.audit, Awaits::Answer);
    let allowed = intake
        .check_host(&conn, &host, port, precheck(intake), rec.record_mut())
        .await;
    let rec = rec.finish();
    if !allowed {
        let msg = format!("CONNECT to {host}:{port} is not allowed");
        intake.shared.audit.emit(&rec);
        return Err(crate::exchange::connection_refusal(&msg));
    }
    conn.expect_host(&host);
    let dest = KnownDest {
        host: Some(host),
        port,
    };
    Ok(Admitted { conn, dest })
}

/// Refuses (400, audited `invalid_host`) a CONNECT whose target is not
/// `host:port`: no port, or userinfo (`CONNECT b.test@a.test:443`), which
/// would otherwise be dropped quietly and the tunnel opened to a.test.
fn refuse_target(target: &str, remote: SocketAddr, intake: &Intake) -> Response<Body> {
    // Userinfo is refused, and may be a credential: not quoted.
    let text: String = crate::redact_url::userinfo_masked(target)
        .chars()
        .take(256)
        .collect();
    let mut conn = ConnInfo::new(remote, Mode::Tunnel, false, 0);
    conn.tunnel = Some(TunnelInfo {
        kind: "connect",
        target: text.clone(),
    });
    let mut rec = conn.record();
    rec.method = "CONNECT".into();
    rec.reject(None, "invalid_host", 400);
    let msg = format!("CONNECT target {text:?} is not host:port");
    rec.error = Some(msg.clone());
    intake.shared.audit.emit(&rec);
    status(StatusCode::BAD_REQUEST, &msg)
}

/// Answers a CONNECT that arrived through hyper: check the target, reply
/// 200, then serve the inner stream once hyper hands it over.
async fn connect(mut req: Request<Incoming>, remote: SocketAddr, intake: Intake) -> Response<Body> {
    if req.uri().authority().is_none() {
        // `CONNECT *`, `CONNECT /path`: named as sent.
        return refuse_target(&req.uri().to_string(), remote, &intake);
    }
    let Admitted { conn, dest } = match admit(req.uri().authority(), remote, &intake).await {
        Ok(a) => a,
        Err(refusal) => return refusal,
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    // Boxed, as in `per_client::spawn`: the tunnel's future is large.
    tokio::spawn(Box::pin(async move {
        match on_upgrade.await {
            Ok(up) => intake.serve(TokioIo::new(up), conn, dest).await,
            Err(e) => {
                // Granted, and never used: the CONNECT still has its record.
                let mut rec = conn.record();
                rec.host = dest.host.clone().unwrap_or_default();
                rec.reject(None, "no_client_data", 0);
                rec.error = Some(format!(
                    "the tunnel was granted but the client's connection ended before it was \
                     handed over: {e}"
                ));
                intake.shared.audit.emit(&rec);
            }
        }
    }));
    Response::new(body::empty())
}

/// Answers a CONNECT read without hyper (see `connect_head`): the tunnel
/// is served on the TCP stream itself. A refusal goes out through hyper,
/// which reads `head` again and sends the response.
async fn connect_direct(
    mut stream: TcpStream,
    head: Vec<u8>,
    target: &Authority,
    remote: SocketAddr,
    intake: Intake,
) {
    match admit(Some(target), remote, &intake).await {
        Ok(Admitted { conn, dest }) => {
            // Served even when the answer cannot be written (the client
            // left): the granted CONNECT then gets its `no_client_data`
            // record there, as one closed unused does.
            let _ = stream.write_all(CONNECT_OK).await;
            intake.serve(stream, conn, dest).await;
        }
        Err(refusal) => {
            let refusal = std::sync::Mutex::new(Some(refusal));
            let svc = service_fn(move |_req: Request<Incoming>| {
                let rsp = refusal
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .unwrap_or_else(|| status(StatusCode::BAD_REQUEST, "one request only"));
                std::future::ready(Ok::<_, std::convert::Infallible>(rsp))
            });
            let io = TokioIo::new(PrefixedStream::new(head, stream));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(client = %remote, error = %e, "sending a CONNECT refusal failed");
            }
        }
    }
}

/// In MITM mode the inner requests are checked in full, so the target check is host-only.
fn precheck(intake: &Intake) -> bool {
    matches!(intake.tls, super::sniffed::TlsHandling::Mitm { .. })
}

async fn socks_reply<S: AsyncWrite + Unpin>(s: &mut S, code: u8) -> std::io::Result<()> {
    s.write_all(&[0x05, code, 0x00, 0x01, 0, 0, 0, 0, 0, 0])
        .await
}

impl SocksError {
    /// The audit `reason` of a failed handshake.
    fn reason(&self) -> &'static str {
        match self {
            SocksError::Timeout(_) | SocksError::Io(_) => "no_client_data",
            SocksError::Domain(_) | SocksError::PortZero(_) => "invalid_host",
            _ => "socks5_unsupported",
        }
    }
}

/// The record of a SOCKS handshake before it names its target.
fn socks_handshake_record(remote: SocketAddr) -> crate::audit::AuditRecord {
    let mut conn = ConnInfo::new(remote, Mode::Tunnel, false, 0);
    conn.tunnel = Some(TunnelInfo {
        kind: "socks5",
        target: String::new(),
    });
    conn.record()
}

/// The one record of a SOCKS handshake that named no target the tunnel serves.
fn audit_handshake_failure(remote: SocketAddr, intake: &Intake, e: &SocksError) {
    let mut rec = socks_handshake_record(remote);
    rec.reject(None, e.reason(), 0);
    rec.error = Some(format!("SOCKS5 handshake: {e}"));
    intake.shared.audit.emit(&rec);
}

/// Refuses a greeting of another SOCKS version (see [`OTHER_SOCKS`]): audited
/// like a SOCKS5 handshake the tunnel does not serve, answered with SOCKS4's
/// "rejected" reply when it is SOCKS4/4a (other versions have no reply a
/// client would understand), then closed without a reset.
async fn refuse_socks_version(
    mut stream: TcpStream,
    version: u8,
    remote: SocketAddr,
    intake: &Intake,
) {
    let e = SocksError::Version(version);
    tracing::debug!(client = %remote, error = %e, "socks handshake refused");
    audit_handshake_failure(remote, intake, &e);
    if version == SOCKS4 && stream.write_all(&SOCKS4_REJECTED).await.is_err() {
        return;
    }
    // The rest of the request may still be unread: drain it, so that the
    // client reads the reply instead of a reset.
    super::linger::drain(stream).await;
}

async fn socks5(mut s: Client, remote: SocketAddr, intake: &Intake) -> Result<(), SocksError> {
    // Written if shutdown cuts the handshake; when it ends, what follows
    // writes the record.
    let handshake = Unfinished::new(
        socks_handshake_record(remote),
        &intake.shared.audit,
        Awaits::ClientData,
    );
    let request = tokio::time::timeout(SNIFF_TIMEOUT, socks5_request(&mut s))
        .await
        .unwrap_or(Err(SocksError::Timeout(SNIFF_TIMEOUT)));
    drop(handshake.finish());
    let (host, port) = match request {
        Ok(target) => target,
        Err(e) => {
            // The client spoke SOCKS5 but never named a target it may have: one record.
            audit_handshake_failure(remote, intake, &e);
            return Err(e);
        }
    };
    let mut conn = Box::new(ConnInfo::new(remote, Mode::Tunnel, false, port));
    conn.tunnel = Some(TunnelInfo {
        kind: "socks5",
        target: format!("{host}:{port}"),
    });
    // `socks5://` clients (curl, git, wget: the spec's own example) resolve
    // the name themselves and send its address. An address is then treated
    // as an intercepted connection's original destination is: the name
    // inside (SNI, else Host) is checked in full and dialed, never the
    // address the client picked; without a name, the address itself.
    let by_address = host.parse::<std::net::IpAddr>().is_ok();
    if !by_address {
        let mut rec = Unfinished::new(conn.record(), &intake.shared.audit, Awaits::Answer);
        let allowed = intake
            .check_host(&conn, &host, port, precheck(intake), rec.record_mut())
            .await;
        let mut rec = rec.finish();
        if !allowed {
            // Refused with a SOCKS reply, not an HTTP response: status 0.
            rec.status_code = 0;
            intake.shared.audit.emit(&rec);
            socks_reply(&mut s, SOCKS_NOT_ALLOWED).await?;
            return Ok(());
        }
        conn.expect_host(&host);
    }
    // As for CONNECT: a client gone before the reply still gets the
    // granted request's record (`no_client_data`) from `serve`.
    let _ = socks_reply(&mut s, SOCKS_OK).await;
    intake
        .serve(
            s,
            conn,
            KnownDest {
                host: Some(host),
                port,
            },
        )
        .await;
    Ok(())
}

/// Reads the SOCKS5 greeting and CONNECT request; answers unsupported ones.
async fn socks5_request<S>(s: &mut S) -> Result<(String, u16), SocksError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await?;
    if head[0] != SOCKS5 {
        return Err(SocksError::Version(head[0]));
    }
    let mut methods = vec![0u8; head[1] as usize];
    s.read_exact(&mut methods).await?;
    if !methods.contains(&0x00) {
        s.write_all(&[0x05, 0xff]).await?;
        return Err(SocksError::NoAcceptableAuth);
    }
    s.write_all(&[0x05, 0x00]).await?;
    let mut req = [0u8; 4];
    s.read_exact(&mut req).await?;
    if req[0] != SOCKS5 {
        return Err(SocksError::Version(req[0]));
    }
    if req[1] != 0x01 {
        socks_reply(s, SOCKS_CMD_UNSUPPORTED).await?;
        return Err(SocksError::Command(req[1]));
    }
    let host = match req[3] {
        0x01 => {
            let mut a = [0u8; 4];
            s.read_exact(&mut a).await?;
            Ipv4Addr::from(a).to_string()
        }
        0x04 => {
            let mut a = [0u8; 16];
            s.read_exact(&mut a).await?;
            Ipv6Addr::from(a).to_string()
        }
        0x03 => {
            let len = s.read_u8().await? as usize;
            let mut d = vec![0u8; len];
            s.read_exact(&mut d).await?;
            let port = s.read_u16().await?;
            return match socks_domain(&d) {
                Some(host) if port == 0 => {
                    socks_reply(s, SOCKS_NOT_ALLOWED).await?;
                    Err(SocksError::PortZero(host))
                }
                Some(host) => Ok((host, port)),
                None => {
                    // Refused as a target the tunnel does not allow.
                    socks_reply(s, SOCKS_NOT_ALLOWED).await?;
                    let text = String::from_utf8_lossy(&d);
                    // Userinfo may be a credential: not quoted.
                    let text = crate::redact_url::userinfo_masked(&text)
                        .chars()
                        .take(256)
                        .collect();
                    Err(SocksError::Domain(text))
                }
            };
        }
        other => {
            socks_reply(s, SOCKS_ATYP_UNSUPPORTED).await?;
            return Err(SocksError::AddressType(other));
        }
    };
    let port = s.read_u16().await?;
    if port == 0 {
        socks_reply(s, SOCKS_NOT_ALLOWED).await?;
        return Err(SocksError::PortZero(host));
    }
    Ok((host, port))
}

/// A SOCKS5 domain as a normalized host, when it is one: what a CONNECT
/// target's host may be (an IPv6 literal too), so never userinfo
/// (`b.test@a.test`), a port or a path.
fn socks_domain(d: &[u8]) -> Option<String> {
    let d = std::str::from_utf8(d).ok()?;
    if d.parse::<Ipv6Addr>().is_ok() {
        return Some(normalize_host(d));
    }
    // Any valid port will do: only the host is checked.
    let a: Authority = format!("{d}:1").parse().ok()?;
    exchange::tunnel_target(&a).map(|(host, _)| host)
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::{serve, socks_domain, ConnInfo, Intake, KnownDest, PrefixedStream, SocketAddr};
    use tokio::net::TcpStream;

    /// The size of the future `f` would return, without calling it.
    fn future_size<A, R>(_: &impl FnOnce(A) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// A connection's task keeps its whole future, whose size is that of its
    /// largest state, for as long as the connection is open, idle keep-alive
    /// connections included. Streams and buffers held by value in it (a TLS
    /// stream, a handshake's state, a read buffer on the stack) made it
    /// 9.5 KiB (`https_listen`) and 11 KiB (`tunnel_listen`) before round 34.
    #[test]
    fn a_connections_task_keeps_a_small_future() {
        const MAX: usize = 4096;
        let tunnel = future_size(&|(s, r, i): (TcpStream, SocketAddr, Intake)| serve(s, r, i));
        let https = future_size(
            &|(i, s, c): (Intake, TcpStream, Box<ConnInfo>)| async move {
                let dest = KnownDest {
                    host: None,
                    port: 443,
                };
                i.serve(s, c, dest).await
            },
        );
        let intercepted =
            future_size(
                &|(i, s, c): (Intake, PrefixedStream<TcpStream>, Box<ConnInfo>)| async move {
                    let dest = KnownDest {
                        host: Some("192.0.2.1".into()),
                        port: 443,
                    };
                    i.serve(s, c, dest).await
                },
            );
        for (what, size) in [
            ("tunnel_listen", tunnel),
            ("https_listen", https),
            ("a prefixed stream", intercepted),
        ] {
            assert!(size <= MAX, "{what}: a connection's future is {size} bytes");
        }
    }

    #[test]
    fn a_socks_domain_is_a_host_name_and_nothing_else() {
        assert_eq!(socks_domain(b"A.Test."), Some("a.test".into()));
        assert_eq!(socks_domain(b"10.0.0.1"), Some("10.0.0.1".into()));
        assert_eq!(socks_domain(b"::1"), Some("::1".into()));
        for bad in [
            &b"b.test@a.test"[..],
            b"user:pw@a.test",
            b"a.test:8080",
            b"a.test/evil",
            b"a test",
            b"",
            b"\xff\xfe",
        ] {
            assert_eq!(socks_domain(bad), None, "{bad:?}");
        }
    }
}
