//! One HTTP exchange, whatever listener it came from: identify the
//! destination, enforce hygiene, run the request phase, forward upstream, run
//! the response phase, and write exactly one audit record when it ends.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Frame;
use hyper::body::Incoming;

use crate::audit::{AuditRecord, AuditSink, ClientProcess, Mode, TunnelInfo};
use crate::body::{self, Body, BoxError, BufferError};
use crate::pipeline::{
    policy_response, BodyNeed, BodyPrefix, BodyTrailers, BufferedBody, Dest, Flow, OriginalBody,
    PhaseOutcome,
};
use crate::rules::normalize_host;
use crate::state::Shared;
use crate::upstream::UpstreamError;

/// What the listener knows about the client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Client address.
    pub remote: SocketAddr,
    /// How the connection arrived.
    pub mode: Mode,
    /// TLS server name the client sent, when the proxy terminated TLS.
    pub sni: Option<String>,
    /// True when the client leg was TLS (the upstream leg is then TLS too).
    pub tls: bool,
    /// Port to dial when the request names none.
    pub default_port: u16,
    /// True when `default_port` is the destination's port for certain (a
    /// tunnel target, an intercepted connection's original destination,
    /// `https_listen`'s 443): a Host naming another port is refused.
    pub fixed_port: bool,
    /// A host the request's Host must agree with (a CONNECT/SOCKS5 target).
    pub expected_host: Option<String>,
    /// The process behind an intercepted connection.
    pub client: Option<ClientProcess>,
    /// The original destination of an intercepted connection.
    pub original_dst: Option<SocketAddr>,
    /// The tunnel the connection came through.
    pub tunnel: Option<TunnelInfo>,
    /// The upstream connection this client connection holds, when its task
    /// drives one (see `upstream::held`); `None` sends through the shared pool.
    pub held: Option<crate::upstream::HeldSlot>,
    /// `remote` and `original_dst` as text, formatted at the connection's
    /// first record and reused by the records of its later requests.
    texts: std::sync::OnceLock<(String, Option<String>)>,
}

impl ConnInfo {
    /// A connection with nothing known beyond its address and mode.
    pub fn new(remote: SocketAddr, mode: Mode, tls: bool, default_port: u16) -> Self {
        ConnInfo {
            remote,
            mode,
            sni: None,
            tls,
            default_port,
            fixed_port: false,
            expected_host: None,
            client: None,
            original_dst: None,
            tunnel: None,
            held: None,
            texts: std::sync::OnceLock::new(),
        }
    }

    /// A fresh audit record pre-filled from the connection. The connection's
    /// addresses must not change once it has made a record.
    pub fn record(&self) -> AuditRecord {
        let (remote, original_dst) = self.texts.get_or_init(|| {
            (
                self.remote.to_string(),
                self.original_dst.map(|a| a.to_string()),
            )
        });
        let mut rec = AuditRecord::new(self.mode, remote.clone());
        rec.sni = self.sni.clone();
        rec.client = self.client.clone();
        rec.original_dst = original_dst.clone();
        rec.tunnel = self.tunnel.clone();
        rec
    }
}

/// Emits its record exactly once, when dropped: at the end of the response
/// body, or when the client goes away.
pub struct AuditGuard {
    record: Option<AuditRecord>,
    sink: AuditSink,
    started: std::time::Instant,
}

impl AuditGuard {
    /// A guard for `record` of an exchange that began at `started`, so that
    /// `duration_ms` includes the request phase and the wait for the upstream.
    pub fn since(record: AuditRecord, sink: AuditSink, started: std::time::Instant) -> Self {
        AuditGuard {
            record: Some(record),
            sink,
            started,
        }
    }

    /// The record, for late changes.
    pub fn record_mut(&mut self) -> Option<&mut AuditRecord> {
        self.record.as_mut()
    }

    /// True once shutdown's grace period is over: an exchange dropped now
    /// was cut by the proxy.
    pub fn is_abandoning(&self) -> bool {
        self.sink.is_abandoning()
    }
}

impl Drop for AuditGuard {
    fn drop(&mut self) {
        if let Some(mut r) = self.record.take() {
            let elapsed = self.started.elapsed();
            r.duration_ms = elapsed.as_millis() as u64;
            r.duration_us = elapsed.as_micros() as u64;
            r.settle_late();
            self.sink.emit(&r);
        }
    }
}

/// The record of an exchange still in its request phase or waiting for the
/// upstream. Taken ([`Pending::into_guard`]) when a response is chosen, it becomes that
/// response's [`AuditGuard`]; dropped before that (the client closed its
/// connection or stream while a transform, the judge or the upstream was
/// still working, so hyper dropped the exchange), it is written at once as
/// `client_closed`, status 0: a request that may have reached the upstream
/// with an injected credential never goes unrecorded.
struct Pending {
    record: Option<AuditRecord>,
    sink: AuditSink,
    started: std::time::Instant,
}

impl Pending {
    fn new(record: AuditRecord, sink: AuditSink, started: std::time::Instant) -> Self {
        Pending {
            record: Some(record),
            sink,
            started,
        }
    }
}

impl std::ops::Deref for Pending {
    type Target = AuditRecord;
    fn deref(&self) -> &AuditRecord {
        // Only `From<Pending>` takes the record, and it consumes the Pending.
        self.record.as_ref().expect("pending record present")
    }
}

impl std::ops::DerefMut for Pending {
    fn deref_mut(&mut self) -> &mut AuditRecord {
        self.record.as_mut().expect("pending record present")
    }
}

impl Pending {
    /// The guard of the response chosen for this exchange; `duration_ms`
    /// counts from the exchange's start.
    fn into_guard(mut self) -> AuditGuard {
        let record = self.record.take().expect("pending record present");
        AuditGuard::since(record, self.sink.clone(), self.started)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(mut r) = self.record.take() {
            if self.sink.is_abandoning() {
                // Not the client: shutdown's grace period ran out.
                r.fail("shutdown", SHUTDOWN_BEFORE_RESPONSE.into(), 0);
            } else if r.reason.is_none() {
                r.fail(
                    "client_closed",
                    "the client closed the connection before the response began".into(),
                    0,
                );
            }
            drop(AuditGuard::since(r, self.sink.clone(), self.started));
        }
    }
}

/// `error` of an exchange cut by shutdown before its response began.
const SHUTDOWN_BEFORE_RESPONSE: &str =
    "iron-proxy shut down before the response began (its grace period ended)";

pin_project_lite::pin_project! {
    /// A response body that carries the audit guard until the body ends.
    struct AuditedBody {
        #[pin]
        inner: Body,
        guard: Option<AuditGuard>,
    }

    impl PinnedDrop for AuditedBody {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its end: the client went away (the record keeps
            // the response's status), or shutdown cut it, which the record says.
            let this = this.project();
            if let Some(g) = this.guard.as_mut() {
                if g.sink.is_abandoning() {
                    if let Some(r) = g.record_mut() {
                        let status = r.status_code;
                        r.fail(
                            "shutdown",
                            "iron-proxy shut down while the response body streamed (its grace period ended)".into(),
                            status,
                        );
                    }
                }
            }
        }
    }
}

impl http_body::Body for AuditedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let res = this.inner.poll_frame(cx);
        match &res {
            Poll::Ready(None) => {
                this.guard.take();
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(r) = this.guard.as_mut().and_then(|g| g.record_mut()) {
                    let detail = format!("response body: {}", crate::error_chain(e.as_ref()));
                    if let Some(b) = crate::find_in_chain::<body::BodyRefused>(e.as_ref()) {
                        // A transform cut the body on purpose: its reason.
                        let status = r.status_code;
                        r.fail(b.reason, detail, status);
                    } else if r.reason.is_none() {
                        // The head went out, the body broke off (the upstream
                        // closed or reset mid-body): the client got less than
                        // it was promised, so the record is an error too.
                        let status = r.status_code;
                        r.fail("upstream_body_error", detail, status);
                    } else {
                        r.error = Some(detail);
                    }
                }
                this.guard.take();
            }
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn finish(rsp: Response<Body>, mut guard: AuditGuard) -> Response<Body> {
    if let Some(r) = guard.record_mut() {
        if r.status_code == 0 {
            r.status_code = rsp.status().as_u16();
        }
    }
    let (parts, inner) = rsp.into_parts();
    Response::from_parts(
        parts,
        body::boxed(AuditedBody {
            inner,
            guard: Some(guard),
        }),
    )
}

fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    let mut rsp = Response::new(body::full(format!("iron-proxy: {message}\n")));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

/// Connection-level headers that never cross the proxy (RFC 9110 §7.6.1), plus
/// the proxy's own credentials header. Built names, so that removing them does
/// not parse a string per request. `Trailer` is not one of them: it is
/// end-to-end (RFC 9110 §6.6.2), and hyper sends an HTTP/1.1 response's
/// trailers only for the fields it announces.
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including those named by `Connection`. Keeps
/// `te: trailers` (gRPC needs it) and, when `upgrade` is set, the upgrade pair.
pub fn strip_hop_by_hop(h: &mut HeaderMap, upgrade: bool) {
    if h.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .filter(|n| !(upgrade && n == header::UPGRADE))
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    let trailers = h
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    for name in HOP_BY_HOP.iter() {
        if upgrade && (name == header::CONNECTION || name == header::UPGRADE) {
            continue;
        }
        h.remove(name);
    }
    if trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    h.remove(header::TRANSFER_ENCODING);
}

/// True when a path contains a `.` or `..` segment (also percent-encoded,
/// `%2e` in either case), as any upstream may read its segments: split at
/// `/`, and also at `\` and the encoded `%2F` / `%5C` (servers that decode
/// or normalise them, IIS reading `\` as `/`), with `;` path parameters
/// cut off (`..;` is `..` to Tomcat and Spring). Rules match the path as
/// sent, so `/public/..%2Fprivate` would pass a `/public/*` rule and reach
/// `/private` on such a server.
pub fn has_dot_segment(path: &str) -> bool {
    segments(path.as_bytes()).any(|seg| {
        let seg = seg.split(|b| *b == b';').next().unwrap_or(seg);
        let mut rest = seg;
        let mut dots = 0;
        while !rest.is_empty() && dots < 3 {
            rest = match rest {
                [b'.', tail @ ..] => tail,
                [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
                _ => return false,
            };
            dots += 1;
        }
        rest.is_empty() && (dots == 1 || dots == 2)
    })
}

/// The segments of `path` split at every separator some server reads:
/// `/`, `\`, `%2F`, `%5C` (either case).
fn segments(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(path);
    std::iter::from_fn(move || {
        let p = rest?;
        let mut i = 0;
        while i < p.len() {
            let sep = match &p[i..] {
                [b'/' | b'\\', ..] => 1,
                [b'%', b'2', b'f' | b'F', ..] | [b'%', b'5', b'c' | b'C', ..] => 3,
                _ => 0,
            };
            if sep > 0 {
                rest = Some(&p[i + sep..]);
                return Some(&p[..i]);
            }
            i += 1;
        }
        rest = None;
        Some(p)
    })
}

/// True for an HTTP/1.1 request with `Expect: 100-continue` (RFC 9110
/// §10.1.1): until the proxy reads its body, the client waits.
fn awaits_continue(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req
            .headers()
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// True for a WebSocket upgrade (RFC 6455 §4.1): HTTP/1.1, `Connection:
/// upgrade`, and `Upgrade` naming `websocket` and nothing else. Only
/// WebSocket is spliced: any other upgrade (`h2c`, `TLS/1.0`) would carry
/// requests the pipeline never sees (an h2c stream to another path, method
/// or `:authority`, with no audit record), so for those the upgrade headers
/// are dropped and the request goes as an ordinary one, which is what a
/// server ignoring the upgrade answers (RFC 9110 §7.8).
fn is_upgrade(req: &Request<Incoming>) -> bool {
    let tokens = |name: header::HeaderName| {
        req.headers()
            .get_all(name)
            .iter()
            // A value that is not text counts as a token of its own.
            .map(|v| v.to_str().unwrap_or("?"))
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
    };
    let upgrade = tokens(header::UPGRADE);
    req.version() == Version::HTTP_11
        && !upgrade.is_empty()
        && upgrade.iter().all(|t| t.eq_ignore_ascii_case("websocket"))
        && tokens(header::CONNECTION)
            .iter()
            .any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// True when an upstream's 101 switches to WebSocket, the one upgrade the
/// proxy asked for.
fn switches_to_websocket(rsp: &Response<Incoming>) -> bool {
    rsp.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// Splits an authority (`host[:port]`) into a normalized host and a port;
/// `None` when it is not a valid authority.
fn split_authority(raw: &str, default_port: u16) -> Option<(String, u16)> {
    let a: http::uri::Authority = raw.parse().ok()?;
    host_port(&a, default_port)
}

/// The host and port of a request's authority. `None` for what a Host header
/// may not hold (RFC 9110 §7.2: `uri-host [":" port]`): userinfo, which
/// upstreams read in more than one way (`a.test@b.test`), and a port that is
/// not a number from 1 to 65535 (rather than quietly dialing the default).
/// An empty port (`a.test:`) means the default.
fn host_port(a: &http::uri::Authority, default_port: u16) -> Option<(String, u16)> {
    let text = a.as_str();
    if text.contains('@') {
        return None;
    }
    let host = normalize_host(a.host());
    if host.is_empty() {
        return None;
    }
    // The port's text: after the host's last `:` (after `]` for IPv6).
    let port_text = match text.strip_prefix('[') {
        Some(v6) => match v6.split_once(']')?.1 {
            "" => None,
            after => Some(after.strip_prefix(':')?),
        },
        None => text.rsplit_once(':').map(|(_, p)| p),
    };
    let port = match port_text {
        None | Some("") => default_port,
        // `u16::from_str` takes a leading `+`; a port is digits only.
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => p.parse::<u16>().ok()?,
        Some(_) => return None,
    };
    (port != 0).then_some((host, port))
}

/// The host and port of a tunnel target (a CONNECT's request target, a
/// SOCKS5 domain and port): RFC 9110 §9.3.6's `uri-host ":" port`, with the
/// port required and, as for Host, no userinfo (`CONNECT b.test@a.test:443`
/// names a.test to one reader and something else to another).
pub(crate) fn tunnel_target(a: &http::uri::Authority) -> Option<(String, u16)> {
    a.port()?;
    host_port(a, 0)
}

/// Why a request names no destination the proxy will dial.
#[derive(Debug, PartialEq, Eq)]
enum HostError {
    /// No Host header (or an empty one) and no absolute URI.
    Missing,
    /// More than one Host header. RFC 9112 §3.2 answers 400: the proxy and the
    /// upstream could each take a different one (domain fronting).
    Duplicate,
    /// A Host or `:authority` that is not `host[:port]`; the text as received
    /// (lossy, cut short).
    Invalid(String),
}

impl HostError {
    fn reason(&self) -> &'static str {
        match self {
            HostError::Missing => "missing_host",
            HostError::Duplicate | HostError::Invalid(_) => "invalid_host",
        }
    }

    fn message(&self) -> String {
        match self {
            HostError::Missing => "request names no host".into(),
            HostError::Duplicate => "request has more than one Host header".into(),
            HostError::Invalid(v) => format!("{v:?} is not a valid host[:port]"),
        }
    }
}

/// The port a request means when its authority names none (RFC 9110
/// §4.2.1, §4.2.2): the default port of the scheme its target URI names
/// (absolute form, HTTP/2 `:scheme`), 443 for `https` and 80 for `http`;
/// for origin form, the connection's (`http_listen` 80, `https_listen` 443,
/// a tunnel's or intercepted connection's destination port). `GET
/// https://a.test/` on a plain listener means a.test:443 (it goes upstream
/// over TLS), never port 80. An `http` URI on a TLS connection is served as
/// HTTPS (the client leg decides), so it keeps the connection's port.
fn default_port(uri: &Uri, conn: &ConnInfo) -> u16 {
    match uri.scheme() {
        Some(s) if *s == http::uri::Scheme::HTTPS => 443,
        Some(s) if *s == http::uri::Scheme::HTTP && !conn.tls => 80,
        _ => conn.default_port,
    }
}

/// The request's destination: the URI's authority (absolute form, HTTP/2
/// `:authority`), else the Host header.
fn destination(req: &Request<Incoming>, default_port: u16) -> Result<(String, u16), HostError> {
    destination_of(req.uri(), req.headers(), default_port)
}

fn destination_of(
    uri: &Uri,
    headers: &HeaderMap,
    default_port: u16,
) -> Result<(String, u16), HostError> {
    let invalid = |raw: &[u8]| {
        let text = String::from_utf8_lossy(raw);
        HostError::Invalid(text.chars().take(256).collect())
    };
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(HostError::Duplicate);
    }
    match uri.authority() {
        Some(a) => host_port(a, default_port).ok_or_else(|| invalid(a.as_str().as_bytes())),
        None => {
            let value = host.filter(|v| !v.is_empty()).ok_or(HostError::Missing)?;
            value
                .to_str()
                .ok()
                .and_then(|v| split_authority(v, default_port))
                .ok_or_else(|| invalid(value.as_bytes()))
        }
    }
}

/// The Host header, when the URI also names an authority and the two disagree.
///
/// RFC 9112 §3.2.2 lets a proxy ignore Host for an absolute-form request, but
/// the header still reaches the upstream: `GET http://allowed/` with
/// `Host: other` would dial the allowed name and ask its server (a shared CDN
/// front, say) for another site. A boundary refuses instead, as it does when
/// Host and SNI disagree.
fn conflicting_host_header(
    headers: &HeaderMap,
    uri: &Uri,
    dest: (&str, u16),
    default_port: u16,
) -> Option<String> {
    uri.authority()?;
    let value = headers.get(header::HOST)?;
    let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
    match value
        .to_str()
        .ok()
        .and_then(|v| split_authority(v, default_port))
    {
        Some((host, port)) if host == dest.0 && port == dest.1 => None,
        _ => Some(text),
    }
}

/// The absolute URI a request goes upstream with: its path and query as they
/// came (no copy, no re-parse) under the destination's scheme and authority.
fn upstream_uri(
    tls: bool,
    host: &str,
    ipv6: bool,
    port: u16,
    pq: http::uri::PathAndQuery,
) -> Result<Uri, http::Error> {
    let scheme = if tls {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    };
    let authority = if ipv6 {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(pq)
        .build()
}

/// The boxed future of [`handle`]; boxing pins down its `Send` bound for hyper.
pub type HandleFuture =
    Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>>;

pin_project_lite::pin_project! {
    /// Keeps the exchange counted as in flight (for graceful shutdown) until its body ends.
    struct Tracked {
        #[pin]
        inner: Body,
        _drain: crate::ops::signals::DrainGuard,
    }
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Handles one request. Never fails: every outcome is a response plus one audit record.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let drain = shared.drain.guard();
    let rsp = handle_tracked(shared, conn, req).await?;
    let (parts, inner) = rsp.into_parts();
    Ok(Response::from_parts(
        parts,
        body::boxed(Tracked {
            inner,
            _drain: drain,
        }),
    ))
}

async fn handle_tracked(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let started = std::time::Instant::now();
    // Until a response is chosen, the record is pending: if the client goes
    // away first (hyper drops this future), it is still written.
    let mut rec = Pending::new(conn.record(), shared.audit.clone(), started);
    rec.method = req.method().as_str().to_string();
    rec.path = req.uri().path().to_string();

    let default_port = default_port(req.uri(), &conn);
    if !shared.is_ready() {
        rec.host = destination(&req, default_port)
            .map(|(h, _)| h)
            .unwrap_or_default();
        let why = if shared.is_stopping() {
            "the proxy is shutting down and takes no new requests"
        } else {
            "the proxy is starting and refuses traffic until policy is loaded"
        };
        rec.fail("not_ready", why.into(), 503);
        return Ok(finish(
            error_response(StatusCode::SERVICE_UNAVAILABLE, "not ready"),
            rec.into_guard(),
        ));
    }
    if req.method() == http::Method::CONNECT {
        // Tunnels are served by proxy.tunnel_listen; here CONNECT has no path and
        // would otherwise be refused as an invalid path, which misleads.
        rec.host = destination(&req, 443).map(|(h, _)| h).unwrap_or_default();
        rec.reject(None, "connect_not_supported", 405);
        let mut rsp = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is served on proxy.tunnel_listen, not on this listener",
        );
        rsp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return Ok(finish(rsp, rec.into_guard()));
    }
    let (host, port) = match destination(&req, default_port) {
        Ok(d) => d,
        Err(e) => {
            rec.reject(None, e.reason(), 400);
            let msg = e.message();
            rec.error = Some(msg.clone());
            return Ok(finish(
                error_response(StatusCode::BAD_REQUEST, &msg),
                rec.into_guard(),
            ));
        }
    };
    rec.host = host.clone();
    if conn.fixed_port && port != conn.default_port {
        // A tunnel's target or an intercepted connection's original
        // destination names the port; Host may not send the request elsewhere.
        rec.reject(None, "host_mismatch", 421);
        let msg = format!(
            "Host port {port} does not match the destination port {}",
            conn.default_port
        );
        return Ok(finish(
            error_response(StatusCode::MISDIRECTED_REQUEST, &msg),
            rec.into_guard(),
        ));
    }
    for (what, expected) in [("SNI", &conn.sni), ("tunnel target", &conn.expected_host)] {
        if let Some(exp) = expected {
            if normalize_host(exp) != host {
                rec.reject(None, "host_mismatch", 421);
                let msg = format!("Host {host} does not match the {what} {exp}");
                return Ok(finish(
                    error_response(StatusCode::MISDIRECTED_REQUEST, &msg),
                    rec.into_guard(),
                ));
            }
        }
    }
    if let Some(h) = conflicting_host_header(req.headers(), req.uri(), (&host, port), default_port)
    {
        rec.reject(None, "host_mismatch", 421);
        let msg = format!("Host {h} does not match the request target {host}:{port}");
        return Ok(finish(
            error_response(StatusCode::MISDIRECTED_REQUEST, &msg),
            rec.into_guard(),
        ));
    }
    let path = req.uri().path().to_string();
    if has_dot_segment(&path) || !(path.starts_with('/') || path == "*") {
        rec.reject(None, "invalid_path", 400);
        return Ok(finish(
            error_response(
                StatusCode::BAD_REQUEST,
                "path has dot segments or is not absolute",
            ),
            rec.into_guard(),
        ));
    }

    let policy = shared.policy();
    let upgrade = is_upgrade(&req);
    let awaits_continue = awaits_continue(&req);
    let client_upgrade = if upgrade {
        Some(hyper::upgrade::on(&mut req))
    } else {
        None
    };
    let tls = conn.tls || req.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
    let dest = Dest {
        ip: host.parse::<IpAddr>().ok(),
        host: host.clone(),
        port,
        tls,
    };
    let mut cx = Flow::new(
        dest,
        req.method().as_str().to_ascii_uppercase(),
        path.clone(),
    );
    cx.conn = Some(conn.clone());

    // Rebuild the request with an absolute upstream URI and a boxed body.
    let (mut parts, incoming) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers, upgrade);
    // The path and query are reused as they are (no copy, no re-parse).
    let pq = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    parts.uri = match upstream_uri(
        tls,
        &host,
        cx.dest.ip.is_some_and(|ip| ip.is_ipv6()),
        port,
        pq,
    ) {
        Ok(u) => u,
        Err(_) => {
            rec.reject(None, "invalid_uri", 400);
            return Ok(finish(
                error_response(StatusCode::BAD_REQUEST, "invalid request target"),
                rec.into_guard(),
            ));
        }
    };
    // parts.version stays the client's: Upstream::send picks the upstream's from it.
    let mut body = body::from_client(incoming);
    let need = policy.pipeline.body_need(&cx, &parts);
    if let BodyNeed::Prefix(want) = need {
        let limit = policy.limits.max_request_body_bytes;
        let want = if limit == 0 { want } else { want.min(limit) };
        match body::read_prefix(body, want, body::PREFIX_IDLE).await {
            Ok(p) => {
                // A chunk may run past `want`: transforms see `want` bytes at
                // most (the limit holds), the body keeps them all.
                let seen = p.bytes.len().min(want);
                parts.extensions.insert(BodyPrefix {
                    bytes: p.bytes.slice(..seen),
                    complete: p.complete && seen == p.bytes.len(),
                });
                body = p.body;
            }
            Err(e) => {
                // Only a failing client body stops a prefix read; say why it failed.
                let detail = match e {
                    BufferError::Read(inner) => crate::error_chain(&*inner),
                    other => other.to_string(),
                };
                rec.fail("client_body_error", detail, 400);
                return Ok(finish(
                    error_response(StatusCode::BAD_REQUEST, "reading request body failed"),
                    rec.into_guard(),
                ));
            }
        }
    }
    if need == BodyNeed::Full {
        match body::collect_all(body, policy.limits.max_request_body_bytes).await {
            Ok(c) => {
                parts.extensions.insert(BufferedBody(c.bytes.clone()));
                parts.extensions.insert(OriginalBody(c.bytes.clone()));
                if let Some(t) = &c.trailers {
                    parts.extensions.insert(BodyTrailers(t.clone()));
                }
                body = body::with_trailers(c.bytes, c.trailers);
            }
            Err(BufferError::TooLarge { limit }) => {
                // A signer would see a truncated body: refused as the spec's
                // `body_truncated`, by that transform.
                match policy.pipeline.body_signer(&cx, &parts) {
                    Some(by) => rec.reject(Some(by), "body_truncated", 413),
                    None => rec.reject(
                        policy.pipeline.body_wanter(&cx, &parts),
                        "request_body_too_large",
                        413,
                    ),
                }
                let msg = format!("request body exceeds proxy.max_request_body_bytes ({limit})");
                return Ok(finish(
                    error_response(StatusCode::PAYLOAD_TOO_LARGE, &msg),
                    rec.into_guard(),
                ));
            }
            Err(BufferError::Read(e)) => {
                rec.fail("client_body_error", crate::error_chain(&*e), 400);
                return Ok(finish(
                    error_response(StatusCode::BAD_REQUEST, "reading request body failed"),
                    rec.into_guard(),
                ));
            }
        }
    }
    let mut req = Request::from_parts(parts, body);

    let outcome = policy
        .pipeline
        .on_request(&mut req, &mut cx, &mut rec.request_transforms)
        .await;
    rec.late.append(&mut cx.late_audit);
    // What transforms recorded (a captured body) belongs in the record of a
    // refused request too: those are the ones worth investigating.
    rec.extra.append(&mut cx.audit_extra);
    let local = match outcome {
        PhaseOutcome::Continue => None,
        PhaseOutcome::Reject(by, r) => {
            rec.reject(Some(&by), &r.reason, r.status.as_u16());
            tracing::debug!(host = %host, transform = %by, reason = %r.reason, "rejected");
            Some(r.into_response())
        }
        PhaseOutcome::Stub(_, rsp) => Some(rsp),
        PhaseOutcome::Fail(by, e) => {
            rec.fail(e.reason, e.detail.clone(), e.status.as_u16());
            rec.rejected_by = Some(by);
            Some(error_response(
                e.status,
                "the proxy failed closed on this request",
            ))
        }
    };
    if let Some(rsp) = local {
        // A client waiting for `100 Continue` has sent no body yet: reading it
        // would make hyper invite the upload only to refuse it. Left unread,
        // hyper answers without the 100 and stops reading the connection.
        if !(awaits_continue && need == BodyNeed::None) {
            drain_unread(req.into_body()).await;
        }
        return Ok(finish(rsp, rec.into_guard()));
    }

    let upstream = match shared
        .upstream
        .send(
            req,
            policy.limits.upstream_response_header_timeout,
            conn.held.as_ref().filter(|_| !upgrade),
        )
        .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(host = %host, error = %e, "upstream failed");
            if let UpstreamError::Refused(r) = &e {
                // A transform refused the body as it streamed: its rejection.
                rec.reject(Some(r.by), r.reason, e.status().as_u16());
                rec.error = Some(r.detail.clone());
            } else {
                rec.fail(e.reason(), e.to_string(), e.status().as_u16());
            }
            // The record keeps the detail (addresses tried); the client gets
            // the host and the class of failure only.
            return Ok(finish(
                error_response(e.status(), &e.client_message()),
                rec.into_guard(),
            ));
        }
    };

    if upstream.status() == StatusCode::SWITCHING_PROTOCOLS {
        match client_upgrade {
            Some(client_up) if switches_to_websocket(&upstream) => {
                return Ok(crate::upgrade::splice(
                    upstream,
                    client_up,
                    rec.into_guard(),
                    shared.drain.guard(),
                ));
            }
            _ => {
                // Switching to anything else (or unasked) would hand the
                // connection to a protocol the pipeline does not see.
                let detail = "the upstream answered 101 Switching Protocols without the WebSocket \
                              upgrade the request asked for";
                rec.fail("upstream_error", detail.to_string(), 502);
                return Ok(finish(
                    error_response(StatusCode::BAD_GATEWAY, detail),
                    rec.into_guard(),
                ));
            }
        }
    }

    let (mut parts, incoming) = upstream.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    let mut rsp = Response::from_parts(parts, body::incoming(incoming));
    if policy.pipeline.wants_response_body(&cx) {
        let (mut parts, b) = rsp.into_parts();
        match body::collect_all(b, policy.limits.max_response_body_bytes).await {
            Ok(c) => {
                if let Some(t) = &c.trailers {
                    parts.extensions.insert(BodyTrailers(t.clone()));
                }
                rsp = Response::from_parts(parts, body::with_trailers(c.bytes, c.trailers));
            }
            Err(e) => {
                let reason = if matches!(e, BufferError::TooLarge { .. }) {
                    "response_body_too_large"
                } else {
                    "upstream_body_error"
                };
                rec.fail(reason, e.to_string(), 502);
                return Ok(finish(
                    error_response(StatusCode::BAD_GATEWAY, &e.to_string()),
                    rec.into_guard(),
                ));
            }
        }
    }
    rec.status_code = rsp.status().as_u16();
    let outcome = policy
        .pipeline
        .on_response(&mut rsp, &mut cx, &mut rec.response_transforms)
        .await;
    rec.late.append(&mut cx.late_audit);
    rec.extra.append(&mut cx.audit_extra);
    match outcome {
        PhaseOutcome::Continue => {}
        PhaseOutcome::Reject(by, r) => {
            rec.reject(Some(&by), &r.reason, r.status.as_u16());
            return Ok(finish(r.into_response(), rec.into_guard()));
        }
        PhaseOutcome::Stub(_, s) => {
            rec.status_code = s.status().as_u16();
            return Ok(finish(s, rec.into_guard()));
        }
        PhaseOutcome::Fail(by, e) => {
            rec.fail(e.reason, e.detail.clone(), e.status.as_u16());
            rec.rejected_by = Some(by);
            return Ok(finish(
                error_response(e.status, "the proxy failed closed on this response"),
                rec.into_guard(),
            ));
        }
    }
    Ok(finish(rsp, rec.into_guard()))
}

/// How much of a request body the proxy reads before answering the request
/// itself (a refusal, a stub), and for how long.
const DRAIN_LIMIT: usize = 64 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads what is left of the body of a request the proxy answers itself, up
/// to [`DRAIN_LIMIT`] within [`DRAIN_TIME`]. Dropping an HTTP/2 request body
/// mid-stream resets the stream (CANCEL) while the client may still be
/// sending, and clients then report the whole exchange as failed (curl:
/// "Stream error in the HTTP/2 framing layer") instead of reading the answer;
/// over HTTP/1.1 it spares the connection. A bigger or slower body is
/// dropped (reset) as before.
async fn drain_unread(mut body: Body) {
    use http_body_util::BodyExt as _;
    if http_body::Body::is_end_stream(&body) {
        return;
    }
    let mut read = 0;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                read += data.len();
                if read > DRAIN_LIMIT {
                    break;
                }
            }
        }
    })
    .await;
}

/// A policy refusal for a connection that never became an HTTP exchange
/// (tunnels, passthrough): the response used when one can still be sent.
pub fn connection_refusal(message: &str) -> Response<Body> {
    policy_response(StatusCode::FORBIDDEN, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments() {
        assert!(has_dot_segment("/a/../b"));
        assert!(has_dot_segment("/a/./b"));
        assert!(has_dot_segment("/a/%2e%2E/b"));
        assert!(!has_dot_segment("/a/..b/c"));
        assert!(!has_dot_segment("/a%2Fb"));
        // Separators other servers read, and path parameters (QA E).
        for bypass in [
            "/public/..%2Fprivate",
            "/public/..%2fprivate",
            "/public/%2e%2e%2fprivate",
            "/public/..;/private",
            "/public/..;jsessionid=1/private",
            "/public/.;/private",
            "/public/..\\private",
            "/public/..%5Cprivate",
            "/public/..%5cprivate",
            "/public%2F..%2Fprivate",
        ] {
            assert!(has_dot_segment(bypass), "{bypass}");
        }
        for fine in [
            "/api/v4/projects/group%2Fproject",
            "/a/b;v=1/c",
            "/a\\b",
            "/a%5Cb",
            "/a/..b;x/c",
            "/files/%2e%2e%2e",
        ] {
            assert!(!has_dot_segment(fine), "{fine}");
        }
        assert!(has_dot_segment("."));
        assert!(has_dot_segment("/a/%2E"));
        assert!(has_dot_segment("/a/.%2e/"));
        assert!(!has_dot_segment("/a/.../b"));
        assert!(!has_dot_segment("/a/%2e%2e%2e"));
        assert!(!has_dot_segment("/a/%2/b"));
        assert!(!has_dot_segment("/a/%2f/b"));
        assert!(!has_dot_segment("/a//b/"));
        assert!(!has_dot_segment("/.well-known/x"));
    }

    #[test]
    fn host_header_must_agree_with_an_absolute_uri() {
        let conflict = |uri: &str, host: Option<&str>| {
            let uri: Uri = uri.parse().expect("uri");
            let mut h = HeaderMap::new();
            if let Some(v) = host {
                h.insert(header::HOST, HeaderValue::from_str(v).expect("value"));
            }
            let (dest, port) = match uri.authority() {
                Some(a) => split_authority(a.as_str(), 80).expect("authority"),
                None => ("origin.test".to_string(), 80),
            };
            conflicting_host_header(&h, &uri, (&dest, port), 80)
        };
        assert_eq!(conflict("http://a.test/x", Some("a.test")), None);
        assert_eq!(conflict("http://a.test/x", Some("A.Test.:80")), None);
        assert_eq!(conflict("http://a.test:8080/x", Some("a.test:8080")), None);
        assert_eq!(conflict("http://a.test/x", None), None, "HTTP/1.0 or h2");
        assert_eq!(conflict("/x", Some("b.test")), None, "origin form");
        assert_eq!(
            conflict("http://a.test/x", Some("b.test")),
            Some("b.test".into())
        );
        assert_eq!(
            conflict("http://a.test/x", Some("a.test:8080")),
            Some("a.test:8080".into())
        );
        assert_eq!(
            conflict("http://a.test/x", Some("a.test/evil")),
            Some("a.test/evil".into())
        );
    }

    #[test]
    fn a_host_is_host_and_port_and_nothing_else() {
        let ok = |raw: &str| split_authority(raw, 443);
        assert_eq!(ok("A.Test."), Some(("a.test".into(), 443)));
        assert_eq!(ok("a.test:8443"), Some(("a.test".into(), 8443)));
        assert_eq!(ok("a.test:"), Some(("a.test".into(), 443)), "empty port");
        assert_eq!(ok("a.test:0443"), Some(("a.test".into(), 443)));
        assert_eq!(ok("[::1]:8080"), Some(("::1".into(), 8080)));
        assert_eq!(ok("[::1]"), Some(("::1".into(), 443)));
        assert_eq!(ok("10.0.0.1:80"), Some(("10.0.0.1".into(), 80)));
        for bad in [
            "denied.test@allowed.test",
            "user:pw@a.test",
            "a.test:99999",
            "a.test:0",
            "a.test:+5",
            "a.test:8o",
            "[::1]x",
            "a.test/evil",
            "a test",
            "",
        ] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_tunnel_target_is_host_and_port_without_userinfo() {
        let target = |raw: &str| {
            raw.parse::<http::uri::Authority>()
                .ok()
                .and_then(|a| tunnel_target(&a))
        };
        assert_eq!(target("A.Test:443"), Some(("a.test".into(), 443)));
        assert_eq!(target("[::1]:8443"), Some(("::1".into(), 8443)));
        for bad in [
            "b.test@a.test:443",
            "user:pw@a.test:443",
            "a.test",
            "a.test:",
            "a.test:0",
            "[::1]",
        ] {
            assert_eq!(target(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_destination_comes_from_one_valid_host() {
        let req = |uri: &str, hosts: &[&str]| {
            let mut b = Request::builder().uri(uri);
            for h in hosts {
                b = b.header(header::HOST, *h);
            }
            b.body(()).expect("request")
        };
        let dest = |r: &Request<()>| destination_of(r.uri(), r.headers(), 80);
        assert_eq!(dest(&req("/", &["a.test"])), Ok(("a.test".into(), 80)));
        assert_eq!(
            dest(&req("/", &["a.test", "b.test"])),
            Err(HostError::Duplicate)
        );
        assert_eq!(
            dest(&req("/", &["a.test", "a.test"])),
            Err(HostError::Duplicate),
            "even when they agree"
        );
        assert_eq!(
            dest(&req("http://a.test/", &["a.test", "b.test"])),
            Err(HostError::Duplicate),
            "absolute form too"
        );
        assert_eq!(dest(&req("/", &[])), Err(HostError::Missing));
        assert_eq!(dest(&req("/", &[""])), Err(HostError::Missing));
        assert_eq!(
            dest(&req("/", &["b.test@a.test"])),
            Err(HostError::Invalid("b.test@a.test".into()))
        );
        assert_eq!(
            dest(&req("http://b.test@a.test/", &[])),
            Err(HostError::Invalid("b.test@a.test".into()))
        );
        assert_eq!(HostError::Duplicate.reason(), "invalid_host");
        assert_eq!(HostError::Missing.reason(), "missing_host");
    }

    #[test]
    fn a_port_left_out_is_the_default_of_the_uris_scheme() {
        let remote: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let plain = ConnInfo::new(remote, Mode::Http, false, 80);
        let tls = ConnInfo::new(remote, Mode::Tunnel, true, 8443);
        let port = |uri: &str, conn: &ConnInfo| {
            let uri: Uri = uri.parse().expect("uri");
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("a.test"));
            let d = default_port(&uri, conn);
            let dest = destination_of(&uri, &h, d).expect("a destination");
            if uri.port().is_none() {
                // Host without a port agrees with the URI: it means the same default.
                assert_eq!(
                    conflicting_host_header(&h, &uri, (&dest.0, dest.1), d),
                    None
                );
            }
            dest.1
        };
        assert_eq!(port("https://a.test/p", &plain), 443);
        assert_eq!(port("http://a.test/p", &plain), 80);
        assert_eq!(port("https://a.test:8443/p", &plain), 8443);
        assert_eq!(port("/p", &plain), 80, "origin form: the listener's");
        assert_eq!(port("/p", &tls), 8443, "origin form: the tunnel's");
        assert_eq!(port("https://a.test/p", &tls), 443);
        assert_eq!(port("http://a.test/p", &tls), 8443, "TLS decides");
    }

    #[test]
    fn upstream_uris() {
        let uri = |tls, host, v6, port, pq: &str| {
            upstream_uri(tls, host, v6, port, pq.parse().expect("pq")).map(|u| u.to_string())
        };
        assert_eq!(
            uri(true, "a.test", false, 443, "/x?y=1&z").ok().as_deref(),
            Some("https://a.test:443/x?y=1&z")
        );
        assert_eq!(
            uri(false, "::1", true, 8080, "/").ok().as_deref(),
            Some("http://[::1]:8080/")
        );
        assert_eq!(
            uri(false, "10.0.0.1", false, 80, "*").ok().as_deref(),
            Some("http://10.0.0.1:80*")
        );
        assert!(uri(false, "a b", false, 80, "/").is_err());
    }

    #[test]
    fn hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-custom"),
        );
        h.insert("x-custom", HeaderValue::from_static("1"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-custom").is_none());
        assert!(h.get("proxy-authorization").is_none());
        assert!(h.get("connection").is_none());
        assert_eq!(h.get("te").map(|v| v.as_bytes()), Some(&b"trailers"[..]));
        assert!(h.get("x-keep").is_some());
    }
}
