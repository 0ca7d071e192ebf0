//! One HTTP exchange, whatever listener it came from: identify the
//! destination, enforce hygiene, run the request phase, forward upstream, run
//! the response phase, and write exactly one audit record when it ends.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body::Frame;
use hyper::body::Incoming;

use crate::audit::{AuditRecord, ClientProcess, Mode, TunnelInfo};
use crate::body::{self, Body, BoxError, BufferError};
use crate::intercept::Client;
use crate::pipeline::{
    policy_response, BodyNeed, BodyPrefix, BodyTrailers, BufferedBody, Dest, Flow, OriginalBody,
    PhaseOutcome,
};
use crate::rules::normalize_host;
use crate::state::{Policy, Shared};
use crate::upstream::UpstreamError;

mod hygiene;
mod method_override;
mod record;
mod target;

pub use hygiene::{has_dot_segment, join_cookies, strip_hop_by_hop};
pub use method_override::method_overrides;
pub use record::{AuditGuard, Awaits, Unfinished};
pub(crate) use target::tunnel_target;

use hygiene::{awaits_continue, is_upgrade, switches_to_websocket};
use record::{finish, Pending};
use target::{conflicting_host_header, default_port, destination, upstream_uri, NamedHost};

/// What the listener knows about the client connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// Client address.
    pub remote: SocketAddr,
    /// How the connection arrived.
    pub mode: Mode,
    /// TLS server name the client sent, when the proxy terminated TLS;
    /// normalized ([`ConnInfo::set_sni`]).
    sni: Option<String>,
    /// True when the client leg was TLS (the upstream leg is then TLS too).
    pub tls: bool,
    /// Port to dial when the request names none.
    pub default_port: u16,
    /// True when `default_port` is the destination's port for certain (a
    /// tunnel target, an intercepted connection's original destination,
    /// `https_listen`'s 443): a Host naming another port is refused.
    pub fixed_port: bool,
    /// A host the request's Host must agree with (a CONNECT/SOCKS5 target);
    /// normalized ([`ConnInfo::expect_host`]).
    expected_host: Option<String>,
    /// The process behind an intercepted connection.
    pub client: Option<ClientProcess>,
    /// What the per-client bounds count the connection's work as (its
    /// admission permit's client: the workload under eBPF interception,
    /// else the address): the share of `proxy.max_buffered_bytes` its
    /// bodies hold, the lookups in flight its requests take.
    pub counted_as: Client,
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
    /// A connection with nothing known beyond its address and mode,
    /// counted as the client its task's admission permit names (else as
    /// `remote`).
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
            counted_as: crate::listen::per_client::current_client(remote),
            original_dst: None,
            tunnel: None,
            held: None,
            texts: std::sync::OnceLock::new(),
        }
    }

    /// Records the TLS server name the client sent, normalized once here:
    /// every request on the connection compares its Host with it as is.
    pub fn set_sni(&mut self, sni: Option<&str>) {
        self.sni = sni.map(normalize_host);
    }

    /// The TLS server name the client sent (normalized), if any.
    pub fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// Sets the host every request's Host must agree with (a tunnel's
    /// target, the name an intercepted connection was admitted for),
    /// normalized once here as [`ConnInfo::set_sni`] does.
    pub fn expect_host(&mut self, host: &str) {
        self.expected_host = Some(normalize_host(host));
    }

    /// The host requests must agree with (normalized), if any.
    pub fn expected_host(&self) -> Option<&str> {
        self.expected_host.as_deref()
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

fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    let mut rsp = Response::new(body::full(format!("iron-proxy: {message}\n")));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
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
        // Dropped after the response's end was queued: see `body::BodyPark`.
        _answered: Option<body::Answered>,
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
///
/// The record is begun here, before the returned future first runs: hyper
/// may drop that future unpolled (an HTTP/1 client that closes, or shuts
/// down its sending side, right after its request), and the request must
/// still be recorded (`client_closed`).
pub fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> impl std::future::Future<Output = Result<Response<Body>, Infallible>> + Send {
    let started = std::time::Instant::now();
    let drain = shared.drain.guard();
    // An HTTP/2 request body let go of unfinished is read out before the
    // response ends (or after, if let go of later), so that the client gets
    // the response rather than a reset.
    let park = (req.version() == Version::HTTP_2 && !http_body::Body::is_end_stream(req.body()))
        .then(body::BodyPark::default);
    // Until a response is chosen, the record is pending: if the client goes
    // away first (hyper drops this future), it is still written.
    let mut rec = Pending::new(conn.record(), shared.audit.clone(), started)
        .of_request(NamedHost::of(&req), park.clone());
    // A method over the limit is refused in `admit`; its record holds the start.
    let method = req.method().as_str();
    rec.method = method[..method.len().min(hygiene::MAX_METHOD_LEN)].to_string();
    rec.path = req.uri().path().to_string();
    let req = req.map(|b| match &park {
        Some(p) => body::from_client_parked(b, p.clone()),
        None => body::from_client(b),
    });
    Exchange {
        inner: handle_tracked(shared, conn, req, rec),
        gathering: None,
        park,
        drain: Some(drain),
    }
}

pin_project_lite::pin_project! {
    /// The future [`handle`] returns: the exchange, then the response made
    /// [`tracked`]. Written out rather than as an `async` block, which would
    /// hold the request and its record twice (as the block's captures and
    /// as `handle_tracked`'s arguments) in a future hyper boxes and moves.
    struct Exchange<F> {
        #[pin]
        inner: F,
        // An answer before an HTTP/2 upload's end, gathering its small body.
        gathering: Option<Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>>,
        park: Option<body::BodyPark>,
        drain: Option<crate::ops::signals::DrainGuard>,
    }
}

impl<F> std::future::Future for Exchange<F>
where
    F: std::future::Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let rsp = match this.gathering {
            Some(g) => std::task::ready!(g.as_mut().poll(cx)),
            None => {
                let Ok(rsp) = std::task::ready!(this.inner.poll(cx));
                match &*this.park {
                    // An answer before the upload's end goes out with its small body.
                    Some(p) if !p.upload_ended() => {
                        let gather = this.gathering.insert(Box::pin(async move {
                            let (parts, b) = rsp.into_parts();
                            Response::from_parts(parts, body::gather_small(b).await)
                        }));
                        std::task::ready!(gather.as_mut().poll(cx))
                    }
                    _ => rsp,
                }
            }
        };
        *this.gathering = None;
        let drain = this.drain.take().expect("an exchange answers once");
        Poll::Ready(Ok(tracked(rsp, this.park.take(), drain)))
    }
}

/// `rsp` counted as in flight until its body ends, and whose end waits for
/// a parked HTTP/2 upload to be read out (see `body::BodyPark`).
fn tracked(
    rsp: Response<Body>,
    park: Option<body::BodyPark>,
    drain: crate::ops::signals::DrainGuard,
) -> Response<Body> {
    let (parts, inner) = rsp.into_parts();
    let inner = match &park {
        Some(p) => body::answer_after_upload(inner, p.clone()),
        None => inner,
    };
    Response::from_parts(
        parts,
        body::boxed(Tracked {
            inner,
            _drain: drain,
            _answered: park.as_ref().map(body::BodyPark::answered_on_drop),
        }),
    )
}

async fn handle_tracked(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    mut req: Request<Body>,
    mut rec: Pending,
) -> Result<Response<Body>, Infallible> {
    let (host, port) = match admit(&shared, &conn, &req, &mut rec) {
        Ok(dest) => dest,
        Err(rsp) => return Ok(finish(rsp, rec.into_guard())),
    };
    let path = req.uri().path().to_string();
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
    // The method as sent (case and all): it is what goes upstream.
    let mut cx = Flow::new(dest, req.method().as_str().to_owned(), path);
    cx.method_overrides =
        method_overrides(req.method().as_str(), req.headers(), req.uri().query()).into();
    cx.conn = Some(conn.clone());

    // Rebuild the request with an absolute upstream URI and a boxed body.
    // In a block: its parts then take no room in this future once sent.
    let (mut req, need) = {
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers, upgrade);
        if parts.version == http::Version::HTTP_2 {
            join_cookies(&mut parts.headers);
        }
        // The path and query are reused as they are (no copy, no re-parse).
        let pq = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        let ipv6 = cx.dest.ip.is_some_and(|ip| ip.is_ipv6());
        parts.uri = match upstream_uri(tls, &host, ipv6, port, pq) {
            Ok(u) => u,
            Err(_) => {
                rec.reject(None, "invalid_uri", 400);
                let rsp = error_response(StatusCode::BAD_REQUEST, "invalid request target");
                return Ok(finish(rsp, rec.into_guard()));
            }
        };
        // parts.version stays the client's: Upstream::send picks the upstream's from it.
        let need = policy.pipeline.body_need(&cx, &parts);
        let body = match read_request_body(body, need, &policy, &cx, &mut parts, &mut rec).await {
            Ok(b) => b,
            Err(rsp) => return Ok(finish(rsp, rec.into_guard())),
        };
        (Request::from_parts(parts, body), need)
    };

    let outcome = policy
        .pipeline
        .on_request(&mut req, &mut cx, &mut rec.request_transforms)
        .await;
    rec.late.append(&mut cx.late_audit);
    // What transforms recorded (a captured body) belongs in the record of a
    // refused request too: those are the ones worth investigating.
    rec.extra.append(&mut cx.audit_extra);
    if let Some(rsp) = answered_by_policy(outcome, &mut rec, "request") {
        // A client waiting for `100 Continue` has sent no body yet: reading it
        // would make hyper invite the upload only to refuse it. Left unread,
        // hyper answers without the 100 and stops reading the connection.
        if !(awaits_continue && need == BodyNeed::None) {
            drain_unread(req.into_body()).await;
        }
        return Ok(finish(rsp, rec.into_guard()));
    }

    if cx.vouches_for_headers() && !http_body::Body::is_end_stream(req.body()) {
        req = req.map(body::without_trailers);
    }
    // The key the upstream gets, to check its answer by.
    let ws_key = client_upgrade
        .as_ref()
        .and_then(|_| req.headers().get("sec-websocket-key").cloned());
    let upstream = match shared
        .upstream
        .send(
            req,
            policy.limits.upstream_response_header_timeout,
            conn.held.as_ref().filter(|_| !upgrade),
            &conn.counted_as,
        )
        .await
    {
        Ok(mut r) => {
            if r.extensions().get::<crate::upstream::Replayed>().is_some() {
                rec.extra
                    .insert("upstream_retried".into(), serde_json::Value::Bool(true));
            }
            // An HTTP/1 upstream's own reason phrase (`401 Invalid key sk-...`)
            // would go to an HTTP/1 client as it came, past every response
            // transform (they see the status code and the headers): the
            // client gets the status's standard phrase instead (clients
            // ignore the phrase, RFC 9112 §4; HTTP/2 has none).
            r.extensions_mut().remove::<hyper::ext::ReasonPhrase>();
            r
        }
        Err(e) => {
            tracing::debug!(host = %host, error = %e, "upstream failed");
            return Ok(finish(upstream_failure(&e, &mut rec), rec.into_guard()));
        }
    };

    if upstream.status() == StatusCode::SWITCHING_PROTOCOLS {
        return Ok(match client_upgrade {
            Some(client_up)
                if switches_to_websocket(&upstream)
                    && hygiene::accepts_websocket_key(&upstream, ws_key.as_ref()) =>
            {
                let peer = upstream
                    .extensions()
                    .get::<crate::upstream::UpstreamPeer>()
                    .map(|p| p.0.ip());
                let (mut answer, upstream_up) = crate::upgrade::take_upgrade(upstream);
                if let Some(refusal) = response_phase(&policy, &mut answer, &mut cx, &mut rec).await
                {
                    // The upstream's upgraded connection is dropped unused.
                    return Ok(finish(refusal, rec.into_guard()));
                }
                if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
                    let detail = "a response transform changed the upstream's 101 Switching \
                                  Protocols into another status: the upgrade is not spliced";
                    rec.fail("upstream_error", detail.to_string(), 502);
                    return Ok(finish(
                        error_response(StatusCode::BAD_GATEWAY, detail),
                        rec.into_guard(),
                    ));
                }
                crate::upgrade::splice(
                    answer,
                    upstream_up,
                    client_up,
                    rec.into_guard(),
                    shared.drain.guard(),
                    crate::revoke::Recheck::new(&shared, policy.clone(), &host, port, true)
                        .between(conn.remote.ip(), peer),
                )
            }
            asked => {
                // Switching to anything else (or unasked) would hand the
                // connection to a protocol the pipeline does not see.
                let detail = if asked.is_some() && switches_to_websocket(&upstream) {
                    "the upstream answered 101 Switching Protocols without the \
                     Sec-WebSocket-Accept the request's key asks for (RFC 6455 §4.2.2): \
                     not a WebSocket handshake"
                } else if asked.is_some() {
                    "the upstream answered 101 Switching Protocols without the WebSocket \
                     upgrade the request asked for"
                } else {
                    "the upstream answered 101 Switching Protocols to a request that asked for \
                     no upgrade"
                };
                rec.fail("upstream_error", detail.to_string(), 502);
                finish(
                    error_response(StatusCode::BAD_GATEWAY, detail),
                    rec.into_guard(),
                )
            }
        });
    }

    let (mut parts, from_upstream) = upstream.into_parts();
    if let Some(coding) = hygiene::unsupported_transfer_coding(&parts.headers) {
        // Only the chunked framing is undone: the body would reach the
        // client still coded, without the header saying so.
        let detail = format!(
            "the upstream answered with transfer coding {coding}, which the proxy does not decode"
        );
        rec.fail("upstream_error", detail.clone(), 502);
        return Ok(finish(
            error_response(StatusCode::BAD_GATEWAY, &detail),
            rec.into_guard(),
        ));
    }
    strip_hop_by_hop(&mut parts.headers, false);
    let mut rsp = Response::from_parts(parts, from_upstream);
    if policy.pipeline.wants_response_body(&cx) {
        let limit = policy.limits.max_response_body_bytes;
        rsp = match buffer_response(rsp, limit, conn.counted_as, &mut rec).await {
            Ok(r) => r,
            Err(refusal) => return Ok(finish(refusal, rec.into_guard())),
        };
    }
    if let Some(answer) = response_phase(&policy, &mut rsp, &mut cx, &mut rec).await {
        return Ok(finish(answer, rec.into_guard()));
    }
    Ok(finish(rsp, rec.into_guard()))
}

/// Runs the response phase on `rsp` (its status recorded first) and keeps
/// what the transforms left for the record; the answer a transform chose
/// instead of `rsp`, if any.
async fn response_phase(
    policy: &Policy,
    rsp: &mut Response<Body>,
    cx: &mut Flow,
    rec: &mut Pending,
) -> Option<Response<Body>> {
    rec.status_code = rsp.status().as_u16();
    let outcome = policy
        .pipeline
        .on_response(rsp, cx, &mut rec.response_transforms)
        .await;
    rec.late.append(&mut cx.late_audit);
    rec.extra.append(&mut cx.audit_extra);
    answered_by_policy(outcome, rec, "response")
}

/// The checks before any policy runs: the proxy is ready, the request is not
/// a CONNECT, it names one valid destination that agrees with the
/// connection's (a fixed port, the SNI, a tunnel's target) and with its own
/// Host, and its path is absolute without dot segments. The destination, or
/// the refusal (the record says why).
#[allow(clippy::result_large_err)] // one per request, moved once, as the phases after it return theirs
fn admit(
    shared: &Shared,
    conn: &ConnInfo,
    req: &Request<Body>,
    rec: &mut Pending,
) -> Result<(String, u16), Response<Body>> {
    let default_port = default_port(req.uri(), conn);
    if !shared.is_ready() {
        rec.host = destination(req, default_port)
            .map(|(h, _)| h)
            .unwrap_or_default();
        let why = if shared.is_stopping() {
            "the proxy is shutting down and takes no new requests"
        } else {
            "the proxy is starting and refuses traffic until policy is loaded"
        };
        rec.fail("not_ready", why.into(), 503);
        return Err(error_response(StatusCode::SERVICE_UNAVAILABLE, "not ready"));
    }
    if !shared.client_acl.allows(conn.remote.ip()) {
        // Admitted when it connected, but a reload has since taken its
        // address out of `proxy.client_cidrs`: a connection kept alive must
        // not go on being served (with credentials added). Refused as at
        // accept, by reason, and the connection closes after the answer.
        rec.host = destination(req, default_port)
            .map(|(h, _)| h)
            .unwrap_or_default();
        let error = crate::client_acl::ClientAcl::error(conn.remote.ip());
        rec.reject(None, crate::client_acl::REASON, 403);
        let mut rsp = error_response(StatusCode::FORBIDDEN, &error);
        rec.error = Some(error);
        if req.version() < Version::HTTP_2 {
            rsp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        shared.client_acl.refused(conn.remote.ip(), "request");
        return Err(rsp);
    }
    if req.method() == http::Method::CONNECT {
        // Tunnels are served by proxy.tunnel_listen; here CONNECT has no path and
        // would otherwise be refused as an invalid path, which misleads.
        rec.host = destination(req, 443).map(|(h, _)| h).unwrap_or_default();
        rec.reject(None, "connect_not_supported", 405);
        let mut rsp = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is served on proxy.tunnel_listen, not on this listener",
        );
        rsp.headers_mut().insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
        return Err(rsp);
    }
    // A refusal whose record says why in `error`, as the response does.
    let refuse = |rec: &mut Pending, reason: &str, status: StatusCode, msg: String| {
        rec.reject(None, reason, status.as_u16());
        let rsp = error_response(status, &msg);
        rec.error = Some(msg);
        rsp
    };
    if let Some(msg) = hygiene::target_form_error(req.method(), req.uri()) {
        rec.host = NamedHost::of(req).host().unwrap_or_default();
        return Err(refuse(rec, "invalid_target", StatusCode::BAD_REQUEST, msg));
    }
    if req.method().as_str().len() > hygiene::MAX_METHOD_LEN {
        rec.host = NamedHost::of(req).host().unwrap_or_default();
        let msg = format!(
            "request method is {} bytes long; at most {} are forwarded",
            req.method().as_str().len(),
            hygiene::MAX_METHOD_LEN
        );
        return Err(refuse(
            rec,
            "method_too_long",
            StatusCode::NOT_IMPLEMENTED,
            msg,
        ));
    }
    if req.version() == Version::HTTP_2 {
        if let Some(name) = hygiene::padded_field(req.headers()) {
            // HTTP/1 parsers strip this whitespace; hyper's HTTP/2 server
            // keeps it, so a transform and the upstream could read the
            // value differently. RFC 9113 8.2.1: the request is malformed.
            rec.host = NamedHost::of(req).host().unwrap_or_default();
            let msg = format!(
                "header field {name:?} has a value that starts or ends with whitespace \
                 (RFC 9113 8.2.1)"
            );
            return Err(refuse(
                rec,
                "malformed_request",
                StatusCode::BAD_REQUEST,
                msg,
            ));
        }
    }
    let (host, port) = destination(req, default_port)
        .map_err(|e| refuse(rec, e.reason(), StatusCode::BAD_REQUEST, e.message()))?;
    rec.host = host.clone();
    let mismatch = |rec: &mut Pending, msg: String| {
        rec.reject(None, "host_mismatch", 421);
        error_response(StatusCode::MISDIRECTED_REQUEST, &msg)
    };
    if conn.fixed_port && port != conn.default_port {
        // A tunnel's target or an intercepted connection's original
        // destination names the port; Host may not send the request elsewhere.
        let msg = format!(
            "Host port {port} does not match the destination port {}",
            conn.default_port
        );
        return Err(mismatch(rec, msg));
    }
    // Both are normalized when set (`set_sni`, `expect_host`), once per connection.
    for (what, expected) in [("SNI", conn.sni()), ("tunnel target", conn.expected_host())] {
        if let Some(exp) = expected {
            if exp != host {
                let msg = format!("Host {host} does not match the {what} {exp}");
                return Err(mismatch(rec, msg));
            }
        }
    }
    if let Some(h) = conflicting_host_header(req.headers(), req.uri(), (&host, port), default_port)
    {
        let msg = format!("Host {h} does not match the request target {host}:{port}");
        return Err(mismatch(rec, msg));
    }
    if let Some(coding) = hygiene::unsupported_transfer_coding(req.headers()) {
        // The body would go on without its coding (RFC 9112 §6.1: answer 501).
        rec.reject(None, "unsupported_transfer_coding", 501);
        let msg = format!(
            "transfer coding {coding} is not supported; send the body chunked or with a \
             Content-Length"
        );
        return Err(error_response(StatusCode::NOT_IMPLEMENTED, &msg));
    }
    let path = req.uri().path();
    if has_dot_segment(path) || !(path.starts_with('/') || path == "*") {
        rec.reject(None, "invalid_path", 400);
        return Err(error_response(
            StatusCode::BAD_REQUEST,
            "path has dot segments or is not absolute",
        ));
    }
    Ok((host, port))
}

/// Reads as much of the request body as the pipeline asked for (`need`): a
/// prefix the transforms see in `parts`' extensions, or the whole body,
/// within `proxy.max_request_body_bytes`. The body to send on (what was read
/// plus the rest), or the refusal (the record says why).
async fn read_request_body(
    mut body: Body,
    need: BodyNeed,
    policy: &Policy,
    cx: &Flow,
    parts: &mut http::request::Parts,
    rec: &mut Pending,
) -> Result<Body, Response<Body>> {
    let body_error = || error_response(StatusCode::BAD_REQUEST, "reading request body failed");
    if let BodyNeed::Prefix(want) = need {
        let limit = policy.limits.max_request_body_bytes;
        let want = if limit == 0 { want } else { want.min(limit) };
        let stall = policy.limits.upstream_response_header_timeout;
        match body::read_prefix(body, want, body::PREFIX_IDLE, stall).await {
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
            Err(BufferError::Idle(d)) => return Err(client_stalled(rec, d)),
            Err(e) => {
                // Only a failing client body stops a prefix read; say why it failed.
                let detail = match e {
                    BufferError::Read(inner) => crate::error_chain(&*inner),
                    other => other.to_string(),
                };
                rec.fail("client_body_error", detail, 400);
                return Err(body_error());
            }
        }
    }
    if need == BodyNeed::Full {
        let limit = policy.limits.max_request_body_bytes;
        // A declared length over the limit is refused before reading (and
        // before a client waiting on `Expect: 100-continue` sends any of it).
        if let Some(len) = http_body::Body::size_hint(&body).exact() {
            if limit != 0 && len > limit as u64 {
                reject_too_large(policy, cx, parts, rec);
                let msg = format!("request body exceeds proxy.max_request_body_bytes ({limit})");
                return Err(error_response(StatusCode::PAYLOAD_TOO_LARGE, &msg));
            }
        }
        let stall = Some(policy.limits.upstream_response_header_timeout);
        let client = cx.conn.as_ref().map_or(Client::UNKNOWN, |c| c.counted_as);
        let mut hold = body::budget::global().hold(client);
        match body::collect_all_within(body, limit, stall, Some(&mut hold)).await {
            Ok(c) => {
                parts.extensions.insert(BufferedBody(c.bytes.clone()));
                parts.extensions.insert(OriginalBody(c.bytes.clone()));
                if let Some(t) = &c.trailers {
                    parts.extensions.insert(BodyTrailers(t.clone()));
                }
                body = body::counted(body::with_trailers(c.bytes, c.trailers), hold);
            }
            Err(BufferError::Budget(e)) => {
                rec.reject(None, BUFFER_FULL, 503);
                rec.error = Some(e.to_string());
                return Err(error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    BUFFER_FULL_TEXT,
                ));
            }
            Err(BufferError::TooLarge { limit }) => {
                reject_too_large(policy, cx, parts, rec);
                let msg = format!("request body exceeds proxy.max_request_body_bytes ({limit})");
                return Err(error_response(StatusCode::PAYLOAD_TOO_LARGE, &msg));
            }
            Err(BufferError::Idle(d)) => return Err(client_stalled(rec, d)),
            Err(BufferError::Read(e)) => {
                rec.fail("client_body_error", crate::error_chain(&*e), 400);
                return Err(body_error());
            }
        }
    }
    Ok(body)
}

/// Records a body over `proxy.max_request_body_bytes` that a transform
/// needed whole: a signer would see a truncated body, so it is refused as
/// the spec's `body_truncated` by that transform; otherwise as
/// `request_body_too_large` on behalf of the transform that wanted it.
fn reject_too_large(policy: &Policy, cx: &Flow, parts: &http::request::Parts, rec: &mut Pending) {
    match policy.pipeline.body_signer(cx, parts) {
        Some(by) => rec.reject(Some(by), "body_truncated", 413),
        None => rec.reject(
            policy.pipeline.body_wanter(cx, parts),
            "request_body_too_large",
            413,
        ),
    }
}

/// A client that declared a body and then sent none of it for `idle`, while
/// the proxy read it for a transform: 408, as when it streams upstream.
fn client_stalled(rec: &mut Pending, idle: std::time::Duration) -> Response<Body> {
    let e = UpstreamError::ClientIdle(idle);
    rec.fail(e.reason(), e.to_string(), e.status().as_u16());
    error_response(e.status(), &e.client_message())
}

/// The answer a phase's outcome chose instead of going on (`None` to go on):
/// a transform's rejection or stub, or a fail-closed error. `phase` names it
/// in the error's text.
fn answered_by_policy(
    outcome: PhaseOutcome,
    rec: &mut Pending,
    phase: &str,
) -> Option<Response<Body>> {
    match outcome {
        PhaseOutcome::Continue => None,
        PhaseOutcome::Reject(by, r) => {
            rec.reject(Some(&by), &r.reason, r.status.as_u16());
            tracing::debug!(host = %rec.host, transform = %by, reason = %r.reason, "rejected");
            Some(r.into_response())
        }
        PhaseOutcome::Stub(_, rsp) => {
            rec.status_code = rsp.status().as_u16();
            Some(rsp)
        }
        PhaseOutcome::Fail(by, e) => {
            rec.fail(e.reason, e.detail.clone(), e.status.as_u16());
            rec.rejected_by = Some(by);
            let msg = format!("the proxy failed closed on this {phase}");
            Some(error_response(e.status, &msg))
        }
    }
}

/// The answer to a request the upstream leg failed. The record keeps the
/// detail (addresses tried); the client gets the host and the class of
/// failure only.
fn upstream_failure(e: &UpstreamError, rec: &mut Pending) -> Response<Body> {
    if let UpstreamError::Refused(r) = e {
        // A transform refused the body as it streamed: its rejection.
        rec.reject(Some(r.by), r.reason, e.status().as_u16());
        rec.error = Some(r.detail.clone());
    } else {
        rec.fail(e.reason(), e.to_string(), e.status().as_u16());
    }
    error_response(e.status(), &e.client_message())
}

/// The response with its whole body read (for transforms that need it), within
/// `limit` (`proxy.max_response_body_bytes`); a 502 when it breaks off or is
/// too large (the record says which).
/// The audit reason of a body refused because holding it would exceed
/// `proxy.max_buffered_bytes` ([`body::budget`]).
const BUFFER_FULL: &str = "body_buffer_full";
/// What the client reads then.
const BUFFER_FULL_TEXT: &str =
    "the proxy holds as many request and response bodies as it may; try again later";

async fn buffer_response(
    rsp: Response<Body>,
    limit: usize,
    client: Client,
    rec: &mut Pending,
) -> Result<Response<Body>, Response<Body>> {
    let (mut parts, b) = rsp.into_parts();
    let mut hold = body::budget::global().hold(client);
    match body::collect_all_within(b, limit, None, Some(&mut hold)).await {
        Ok(c) => {
            if let Some(t) = &c.trailers {
                parts.extensions.insert(BodyTrailers(t.clone()));
            }
            Ok(Response::from_parts(
                parts,
                body::counted(body::with_trailers(c.bytes, c.trailers), hold),
            ))
        }
        Err(BufferError::Budget(e)) => {
            rec.fail(BUFFER_FULL, e.to_string(), 503);
            Err(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                BUFFER_FULL_TEXT,
            ))
        }
        Err(e) => {
            let reason = if matches!(e, BufferError::TooLarge { .. }) {
                "response_body_too_large"
            } else {
                "upstream_body_error"
            };
            rec.fail(reason, e.to_string(), 502);
            Err(error_response(StatusCode::BAD_GATEWAY, &e.to_string()))
        }
    }
}

/// How much of a request body the proxy reads before answering the request
/// itself (a refusal, a stub), and for how long.
const DRAIN_LIMIT: usize = 64 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Reads what is left of the body of a request the proxy answers itself, up
/// to [`DRAIN_LIMIT`] within [`DRAIN_TIME`], before answering: over HTTP/1.1
/// it spares the connection. A bigger or slower body is dropped: over
/// HTTP/1.1 the connection then closes after the answer; an HTTP/2 body is
/// read out before the answer's end (`body::BodyPark`), so the stream is not
/// reset under a client still uploading.
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

    /// `admit` compares each request's (normalized) Host with these as they
    /// are, so they must be normalized when set, whatever the caller passes.
    #[test]
    fn connection_names_are_normalized_when_set() {
        let mut conn = ConnInfo::new(([127, 0, 0, 1], 5000).into(), Mode::Tunnel, true, 443);
        assert_eq!((conn.sni(), conn.expected_host()), (None, None));
        conn.set_sni(Some("Api.Example.COM."));
        conn.expect_host("[2001:DB8::1]");
        assert_eq!(conn.sni(), Some("api.example.com"));
        assert_eq!(conn.expected_host(), Some("2001:db8::1"));
        assert_eq!(conn.record().sni.as_deref(), Some("api.example.com"));
        conn.set_sni(None);
        assert_eq!(conn.sni(), None);
    }

    fn future_size<A, R>(_: &impl FnOnce(A) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// hyper boxes each request's future and moves it whole several times
    /// while the request runs (into its box, between the phases' awaits).
    /// The record held by value (560 bytes, in `Pending`, `AuditGuard` and
    /// the response body) and the request held both by an outer `async`
    /// block and by `handle_tracked` made it 5.9 KB in a release build
    /// before round 35 (3.7 KB after).
    #[test]
    fn a_requests_future_and_its_record_stay_small() {
        let exchange =
            future_size(
                &|(s, c, r): (Arc<Shared>, Arc<ConnInfo>, Request<Incoming>)| handle(s, c, r),
            );
        assert!(exchange <= 4096, "a request's future is {exchange} bytes");
        for (what, size) in [
            ("Pending", std::mem::size_of::<Pending>()),
            ("AuditGuard", std::mem::size_of::<AuditGuard>()),
        ] {
            assert!(size <= 192, "{what} is {size} bytes");
        }
    }
}
