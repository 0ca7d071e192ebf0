//! The upstream side: name resolution, the deny list, dialing, and pooled
//! HTTP clients (one pool per scheme+host+port, header case preserved). The
//! upstream leg speaks the client's HTTP version where it can: an HTTP/2
//! client's request goes out as HTTP/2 when the upstream offers it through
//! ALPN (HTTP/1.1 otherwise); an HTTP/1 client's request always goes out as
//! HTTP/1.1, so upgrades such as WebSocket keep working.
//!
//! HTTP/2 upstream connections are not shared between client connections:
//! each client connection has its own pooled client ([`own_h2`]), so that a
//! workload that stops reading its responses, or holds many streams open,
//! stalls only itself.

pub mod deny;
pub mod dial;
mod head_timer;
pub mod held;
mod own_h2;
pub mod resolve;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::body::Body;
use crate::listen::{
    H1_MAX_BUF, H1_MAX_HEADERS, H2_MAX_HEADER_LIST, H2_PING_INTERVAL, H2_PING_TIMEOUT,
};
pub use deny::DenyList;
pub use dial::{ConnectFailure, DialError, Dialer, TlsFailure, UpstreamPeer};
use head_timer::HeadTimer;
pub use held::HeldSlot;
use held::{Held, IdlePool, Key};
use own_h2::{OwnClient, OwnDialer, OwnH2, Spares};
pub use resolve::Resolver;

/// Why a request to the upstream failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The upstream could not be reached.
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The upstream did not start its response in time (connecting
    /// included, the client's upload not; see `head_timer.rs`).
    #[error("upstream sent no response headers within {0:?}")]
    Timeout(Duration),
    /// The upstream stopped taking the request body: it took none of it
    /// for the response-header timeout and did not answer either.
    #[error("upstream took none of the request body for {0:?}")]
    Stalled(Duration),
    /// The client stopped sending its request body before the response
    /// began: it sent none of it for the response-header timeout.
    #[error("the client sent none of its request body for {0:?}")]
    ClientIdle(Duration),
    /// The client's request body failed while it was being sent (a
    /// malformed chunk, or the client ended its connection or stream
    /// mid-body): the client's fault, not the upstream's.
    #[error("{0}")]
    ClientBody(String),
    /// A transform refused the request body as it streamed (a malformed
    /// aws-chunked upload `aws_auth` re-signs): that transform's rejection.
    #[error(transparent)]
    Refused(crate::body::BodyRefused),
    /// The exchange failed after connecting.
    #[error("upstream exchange failed: {0}")]
    Http(String),
}

impl UpstreamError {
    /// The audit `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::Dial(d) => d.reason(),
            UpstreamError::Timeout(_) | UpstreamError::Stalled(_) => "upstream_timeout",
            UpstreamError::ClientIdle(_) => "client_body_timeout",
            UpstreamError::ClientBody(_) => "client_body_error",
            UpstreamError::Refused(r) => r.reason,
            UpstreamError::Http(_) => "upstream_error",
        }
    }

    /// The message the client gets in the error response's body. For a
    /// dial failure it names the host and the class of failure but not the
    /// addresses tried (see [`DialError::client_message`]); the full detail
    /// (`Display`) goes to the audit record.
    pub fn client_message(&self) -> String {
        match self {
            UpstreamError::Dial(d) => d.client_message(),
            other => other.to_string(),
        }
    }

    /// The status the client gets: 504 for an upstream timeout, 408 for a
    /// client that stopped sending, 400 for a client body that failed, 503
    /// for a lookup that found the proxy's resolver busy (the proxy's
    /// capacity, as `body_buffer_full`), 502 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self {
            UpstreamError::Dial(DialError::ResolveBusy { .. }) => {
                http::StatusCode::SERVICE_UNAVAILABLE
            }
            UpstreamError::Timeout(_) | UpstreamError::Stalled(_) => {
                http::StatusCode::GATEWAY_TIMEOUT
            }
            UpstreamError::ClientIdle(_) => http::StatusCode::REQUEST_TIMEOUT,
            UpstreamError::ClientBody(_) | UpstreamError::Refused(_) => {
                http::StatusCode::BAD_REQUEST
            }
            _ => http::StatusCode::BAD_GATEWAY,
        }
    }
}

/// Marks a response whose request went out a second time, on a new
/// connection, after the upstream closed the idle one it was first sent on
/// (see [`Upstream::send`]): the audit record says so (`upstream_retried`).
#[derive(Debug, Clone, Copy)]
pub struct Replayed;

/// The pooled upstream HTTP clients.
#[derive(Clone)]
pub struct Upstream {
    /// The shared pools, replaced when a reload retires the open
    /// connections ([`Upstream::retire_pools`]).
    shared: Arc<arc_swap::ArcSwap<SharedClients>>,
    dialer: Dialer,
    /// The dialer offering http/1.1 only, for held HTTP/1 connections.
    dialer_h1: Dialer,
    /// Idle HTTP/1 connections handed between client connections (see [`held`]).
    idle: Arc<IdlePool>,
    /// HTTP/2 clients of ended client connections (see [`own_h2`]).
    spares: Arc<Spares>,
    /// How often HTTP/2 upstream connections are PINGed, and how long an
    /// answer may take.
    pings: (Duration, Duration),
}

/// How many idle connections each shared pool keeps per host. hyper's pool
/// has no cap over all hosts; what bounds these is how little reaches them:
/// an upgraded connection (`client_h1`) never comes back to the pool, and
/// `client` serves only HTTP/2 requests without a client connection and the
/// client connections whose own client a reload retired. Was 64, the
/// default of the pool that carried every client's traffic before
/// [`held`] and [`own_h2`].
const SHARED_IDLE_PER_HOST: usize = 8;

/// The pooled clients not tied to a client connection.
struct SharedClients {
    /// Retired with the connections made before them.
    standing: dial::Standing,
    /// Offers h2 and http/1.1: for HTTP/2 requests sent without a client
    /// connection's slot (a client connection uses its own, see [`own_h2`]).
    client: Client<Dialer, Body>,
    /// Offers http/1.1 only (for HTTP/1 clients).
    client_h1: Client<Dialer, Body>,
}

impl SharedClients {
    fn new(dialer: &Dialer, (every, timeout): (Duration, Duration)) -> Self {
        SharedClients {
            standing: dialer.standing(),
            client: client(dialer.clone(), every, timeout, SHARED_IDLE_PER_HOST),
            client_h1: client(dialer.http1_only(), every, timeout, SHARED_IDLE_PER_HOST),
        }
    }
}

/// A pooled client over `dialer`. HTTP/2 connections are PINGed every
/// `ping_every`, idle ones too, and closed when a PING goes unanswered for
/// `ping_timeout`: an upstream that vanished (a dropped NAT entry, a dead
/// host) then fails the streams it holds, a streamed response body included,
/// instead of leaving them open forever. HTTP/2 receive windows as in
/// [`own_h2`] (fixed: hyper's adaptive window sets the connection's window to
/// the stream's, so one stalled stream would stall the connection), and a
/// send queue of [`own_h2::MAX_SEND_BUF`] per stream. Response heads are
/// bounded as the client side bounds request heads: by [`H1_MAX_BUF`] bytes
/// (hyper's default: about 408 KiB) and [`H1_MAX_HEADERS`] fields (see
/// [`held::http1_client`]).
///
/// `idle_per_host` idle connections are kept per host: hyper's pool has no
/// cap over all hosts.
fn client<C>(
    dialer: C,
    ping_every: Duration,
    ping_timeout: Duration,
    idle_per_host: usize,
) -> Client<C, Body>
where
    C: hyper_util::client::legacy::connect::Connect + Clone,
{
    Client::builder(TokioExecutor::new())
        .http1_preserve_header_case(true)
        .http1_max_headers(H1_MAX_HEADERS)
        .http1_max_buf_size(H1_MAX_BUF)
        .timer(hyper_util::rt::TokioTimer::new())
        .http2_keep_alive_interval(ping_every)
        .http2_keep_alive_timeout(ping_timeout)
        .http2_keep_alive_while_idle(true)
        .http2_adaptive_window(false)
        .http2_initial_stream_window_size(own_h2::STREAM_WINDOW)
        .http2_initial_connection_window_size(own_h2::CONN_WINDOW)
        .http2_max_send_buf_size(own_h2::MAX_SEND_BUF)
        .http2_max_header_list_size(H2_MAX_HEADER_LIST)
        .pool_idle_timeout(Duration::from_secs(90))
        // Without a timer, expired idle connections are only noticed on checkout.
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_max_idle_per_host(idle_per_host)
        .build(dialer)
}

impl Upstream {
    /// A client over `dialer`.
    /// Inside a tokio runtime, also starts the idle pool's sweeper there.
    pub fn new(dialer: Dialer) -> Self {
        Self::with_h2_pings(dialer, H2_PING_INTERVAL, H2_PING_TIMEOUT)
    }

    /// A client whose HTTP/2 connections are PINGed every `every` and
    /// dropped after `timeout` without an answer.
    pub(crate) fn with_h2_pings(dialer: Dialer, every: Duration, timeout: Duration) -> Self {
        let idle = Arc::default();
        IdlePool::start_sweeper(&idle, held::SWEEP_EVERY);
        Upstream {
            shared: Arc::new(arc_swap::ArcSwap::from_pointee(SharedClients::new(
                &dialer,
                (every, timeout),
            ))),
            dialer_h1: dialer.http1_only(),
            dialer,
            idle,
            spares: Arc::default(),
            pings: (every, timeout),
        }
    }

    /// How many HTTP/1 connections wait in the shared idle pool.
    pub fn idle_connections(&self) -> usize {
        self.idle.len()
    }

    /// How many upstream connections the HTTP/2 clients of ended client
    /// connections hold, kept as spares (see [`own_h2`]).
    pub fn spare_connections(&self) -> usize {
        self.spares.connections()
    }

    /// The dialer, for raw TCP legs (tunnels, passthrough, upgrades).
    pub fn dialer(&self) -> &Dialer {
        &self.dialer
    }

    /// Retires every open upstream HTTP connection: none carries another
    /// request, whichever pool holds it (held HTTP/1 connections, idle ones,
    /// the client connections' HTTP/2 clients and their spares, the shared
    /// pools); exchanges in flight finish.
    pub fn retire_pools(&self) {
        self.dialer.retire_open();
        self.spares.clear();
        self.shared
            .store(Arc::new(SharedClients::new(&self.dialer, self.pings)));
    }

    /// The shared pools of the current generation.
    /// (An `Arc`, not a guard: it is held across the exchange.)
    fn shared(&self) -> Arc<SharedClients> {
        let shared = self.shared.load_full();
        if !shared.standing.is_retired() {
            return shared;
        }
        // The dialer was retired through another handle.
        let fresh = Arc::new(SharedClients::new(&self.dialer, self.pings));
        self.shared.store(fresh.clone());
        fresh
    }

    /// Sends `req` (absolute URI) and waits for the response head, failing
    /// when the upstream keeps the exchange waiting for `header_timeout` (to
    /// connect, to take the next piece of the body, or to start its response
    /// once the body is sent), or the client does (to send the next piece).
    /// An upload that keeps moving is not timed (see `head_timer.rs`).
    ///
    /// `req`'s version is the client's: HTTP/2 may go out as HTTP/2 (if the
    /// upstream agrees through ALPN), anything else goes out as HTTP/1.1.
    ///
    /// With a `held` slot, an HTTP/1 request goes out on the upstream
    /// connection that slot holds (see [`held`]), an HTTP/2 request through
    /// the slot's own HTTP/2 client (see [`own_h2`]); without one (protocol
    /// upgrades), through the shared pool. Names are looked up in `client`'s
    /// turns (see [`resolve`]) as `asker`'s.
    ///
    /// The response's body is the upstream's, its trailers cleaned
    /// ([`crate::body::incoming`]); on a client connection's own HTTP/2
    /// client it also holds the upstream connection busy until it ends
    /// (see `own_h2::limit`), so it is not to be swapped for another body
    /// while the upstream's is still read.
    pub async fn send(
        &self,
        req: Request<Body>,
        header_timeout: Duration,
        held: Option<&HeldSlot>,
        asker: &crate::intercept::Client,
    ) -> Result<Response<Body>, UpstreamError> {
        let req = chunk_a_read_with_a_body(req);
        let (req, timer) = HeadTimer::start(req, header_timeout);
        let incoming = |rsp: Response<Incoming>| rsp.map(crate::body::incoming);
        let answered = match held {
            Some(slot) if req.version() < http::Version::HTTP_2 => {
                self.send_held(slot, req, &timer, asker).await.map(incoming)
            }
            Some(slot) => {
                // The key only matters for the first request, which makes the client.
                let own = slot.h2_client(|| {
                    Ok::<_, UpstreamError>(OwnH2::for_key(
                        key_of(req.uri())?,
                        held::current_home(),
                        &self.spares,
                        self.dialer.standing(),
                        || {
                            let dialer = OwnDialer::new(self.dialer.for_client(*asker));
                            OwnClient {
                                client: client(
                                    dialer.clone(),
                                    self.pings.0,
                                    self.pings.1,
                                    own_h2::IDLE_PER_HOST,
                                ),
                                dialer,
                            }
                        },
                    ))
                })?;
                match own {
                    Some(own) => self.send_own(own, req, &timer).await,
                    None => self
                        .send_shared(&self.shared().client, req, &timer, asker)
                        .await
                        .map(incoming),
                }
            }
            None if req.version() == http::Version::HTTP_2 => self
                .send_shared(&self.shared().client, req, &timer, asker)
                .await
                .map(incoming),
            None => self
                .send_shared(&self.shared().client_h1, req, &timer, asker)
                .await
                .map(incoming),
        };
        if answered.is_ok() {
            // From the start of the upstream leg, a connect included (as
            // nginx's `$upstream_header_time`), to the response head.
            crate::traffic::TRAFFIC.response_head(timer.started().elapsed());
        }
        answered
    }

    /// Sends `req` on a client connection's own client: the request counts
    /// as wanting its host until its response head, and the exchange as
    /// keeping its connection busy from then until the body's end (see
    /// `own_h2::limit`).
    async fn send_own(
        &self,
        own: &OwnClient,
        mut req: Request<Body>,
        timer: &HeadTimer,
    ) -> Result<Response<Body>, UpstreamError> {
        let _want = own.dialer.want(req.uri());
        let pool_entry = hyper_util::client::legacy::connect::capture_connection(&mut req);
        match self.send_pooled(&own.client, req, timer).await {
            // Busy before `_want` drops: at no point is the connection idle.
            Ok(rsp) => Ok(own.dialer.in_use(rsp, &pool_entry)),
            Err(e) => {
                own.dialer.saw(&pool_entry);
                Err(e)
            }
        }
    }

    /// Sends `req` through a shared pool, whose connector serves every
    /// client: the dial it may make takes `client` from the task
    /// ([`resolve::on_behalf_of`]). Boxed: rare (upgrades, HTTP/2 after a
    /// reload retired the connection's own client), and the scope would
    /// size every request's future.
    async fn send_shared(
        &self,
        pool: &Client<Dialer, Body>,
        req: Request<Body>,
        timer: &HeadTimer,
        asker: &crate::intercept::Client,
    ) -> Result<Response<Incoming>, UpstreamError> {
        Box::pin(resolve::on_behalf_of(
            *asker,
            self.send_pooled(pool, req, timer),
        ))
        .await
    }

    async fn send_pooled<C>(
        &self,
        client: &Client<C, Body>,
        mut req: Request<Body>,
        timer: &HeadTimer,
    ) -> Result<Response<Incoming>, UpstreamError>
    where
        C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
    {
        // The pooled connection decides the wire version; HTTP/1.1 is what hyper
        // accepts on either kind.
        *req.version_mut() = http::Version::HTTP_11;
        timer
            .run(client.request(req))
            .await?
            .map_err(|e| classify(&e))
    }

    /// Sends an HTTP/1 request on the connection `slot` holds, or on an idle
    /// pooled one, or on a new one; the slot then holds that connection. A
    /// request that a reused connection refused before sending any of it
    /// (the upstream closed it meanwhile) is sent again on a new one; so is
    /// a replayable one (see [`replay_copy`]) whose connection, idle for a
    /// while, ended before any byte of an answer: the upstream's idle
    /// timeout closed it as the request went out (Go's transport retries
    /// these too).
    async fn send_held(
        &self,
        slot: &HeldSlot,
        req: Request<Body>,
        timer: &HeadTimer,
        asker: &crate::intercept::Client,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let (key, mut req) = origin_form(req)?;
        // The runtime this task runs on: idle connections of its own go first.
        let home = held::current_home();
        let mut fresh_only = false;
        let mut replayed = false;
        loop {
            let reused = if fresh_only {
                None
            } else {
                match slot
                    .take(&key)
                    .or_else(|| self.idle.take(&key, home, slot.id()))
                {
                    // Boxed: rare, and its handshake's state would size
                    // every request's future.
                    Some(h) if h.home() != home => Box::pin(h.rehome()).await,
                    other => other,
                }
            };
            let mut held = match reused {
                Some(h) => h,
                // Boxed: the dial's future (about 2.8 KB) would otherwise be
                // part of every request's future, which is moved (copied)
                // whole several times per request; a dial is once per
                // connection.
                None => timer.run(Box::pin(self.dial_http1(&key, asker))).await??,
            };
            let reused = held.reused;
            let idle = held
                .last_sent
                .is_some_and(|t| timer.started().saturating_duration_since(t) >= REPLAY_AFTER);
            let copy = (reused && idle && !replayed)
                .then(|| replay_copy(&req))
                .flatten();
            held.last_sent = Some(timer.started());
            let sent = held.sender.try_send_request(req);
            slot.hold(held);
            match timer.run(sent).await? {
                Ok(mut rsp) => {
                    if replayed {
                        rsp.extensions_mut().insert(Replayed);
                    }
                    // Answered in HTTP/1.0: hyper would send the connection's
                    // later requests as HTTP/1.0 too, which cannot carry a
                    // body of unknown length. Not reused (a rare upstream).
                    if rsp.version() == http::Version::HTTP_10 && !slot.retire() {
                        self.idle.retire(&key, timer.started());
                    }
                    return Ok(rsp);
                }
                Err(mut e) => match (e.take_message(), copy) {
                    (Some(back), _) if reused => {
                        req = back;
                        fresh_only = true;
                    }
                    (None, Some(copy)) if e.error().is_incomplete_message() => {
                        tracing::debug!(
                            host = %key.host,
                            "the upstream closed an idle connection as the request went out; \
                             sending it again on a new one"
                        );
                        req = copy;
                        fresh_only = true;
                        replayed = true;
                    }
                    _ => return Err(classify(e.error())),
                },
            }
        }
    }

    /// Dials `key` offering only http/1.1 and starts an HTTP/1 connection on it.
    /// Its name is looked up in `asker`'s turns.
    async fn dial_http1(
        &self,
        key: &Key,
        asker: &crate::intercept::Client,
    ) -> Result<Held, UpstreamError> {
        let dialer = self.dialer_h1.for_client(*asker);
        let io = dialer.open(&key.host, key.port, key.tls).await?;
        let standing = io.1.clone();
        let fd = io.0.inner().raw_fd();
        let (sender, conn) = held::http1_client()
            .handshake(io)
            .await
            .map_err(|e| classify(&e))?;
        Ok(Held::new(
            key.clone(),
            sender,
            conn,
            standing,
            fd,
            &self.idle,
        ))
    }
}

/// A GET or HEAD with a body of unknown length (sent chunked by the client)
/// is marked `Transfer-Encoding: chunked` for HTTP/1: without it, hyper sends
/// these methods without any body (it assumes they have none), and the body
/// the transforms saw never reached the upstream. An HTTP/2 upstream
/// connection drops the header (its frames carry the body).
fn chunk_a_read_with_a_body(mut req: Request<Body>) -> Request<Body> {
    use http_body::Body as _;
    let read = matches!(*req.method(), http::Method::GET | http::Method::HEAD);
    if read
        && !req.body().is_end_stream()
        && req.body().size_hint().exact().is_none()
        && !req.headers().contains_key(header::CONTENT_LENGTH)
    {
        req.headers_mut().insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    req
}

/// A connection whose last request went out at least this long ago may
/// have been closed by the upstream's idle timeout as the next one goes
/// out: a replayable request is copied first. Connections in steady use
/// (the next request right after the last answer) pay nothing.
const REPLAY_AFTER: Duration = Duration::from_millis(100);

/// A copy of a request that may be sent twice: an idempotent method that
/// changes nothing (GET, HEAD, OPTIONS, TRACE; RFC 9110 §9.2.2) and no body.
/// `None` for any other.
fn replay_copy(req: &Request<Body>) -> Option<Request<Body>> {
    use http::Method;
    let safe = matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    );
    if !safe || !http_body::Body::is_end_stream(req.body()) {
        return None;
    }
    let mut copy = Request::new(crate::body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    Some(copy)
}

/// The upstream an absolute-form URI goes to.
fn key_of(uri: &Uri) -> Result<Key, UpstreamError> {
    let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let authority = uri.authority().ok_or(DialError::NoHost)?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    Ok(Key { tls, host, port })
}

/// Splits an absolute-form request into the upstream it goes to and the
/// request as an HTTP/1 origin server expects it: origin-form target, a
/// `Host` header, HTTP/1.1.
fn origin_form(mut req: Request<Body>) -> Result<(Key, Request<Body>), UpstreamError> {
    let uri = req.uri().clone();
    let key = key_of(&uri)?;
    let (tls, port) = (key.tls, key.port);
    let authority = uri.authority().ok_or(DialError::NoHost)?.clone();
    if !req.headers().contains_key(header::HOST) {
        let default = if tls { 443 } else { 80 };
        let value = if port == default {
            authority.host().to_string()
        } else {
            format!("{}:{port}", authority.host())
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            req.headers_mut().insert(header::HOST, v);
        }
    }
    *req.uri_mut() = match uri.path_and_query() {
        // The common case: the parsed path and query reused as they are (a
        // `Bytes` clone), which is what parsing their text would give.
        Some(pq) if pq.as_str().starts_with('/') => Uri::from(pq.clone()),
        // No path (`http://host` or `http://host?a=1`): the path is `/`
        // (RFC 9112 §3.2.1), the query kept.
        pq => {
            let target = match pq.map(|pq| pq.as_str()).filter(|pq| !pq.is_empty()) {
                Some(q) if q.starts_with('?') => format!("/{q}"),
                Some(other) => other.to_owned(),
                None => "/".to_owned(),
            };
            Uri::try_from(target)
                .map_err(|e| UpstreamError::Http(format!("request target: {e}")))?
        }
    };
    *req.version_mut() = http::Version::HTTP_11;
    Ok((key, req))
}

/// Turns a client error into an [`UpstreamError`], keeping a dial failure's reason.
fn classify(e: &(dyn std::error::Error + 'static)) -> UpstreamError {
    if let Some(d) = crate::find_in_chain::<DialError>(e) {
        return UpstreamError::Dial(d.clone());
    }
    if let Some(client) = crate::find_in_chain::<crate::body::ClientBodyError>(e) {
        return UpstreamError::ClientBody(crate::error_chain(client));
    }
    if let Some(refusal) = crate::find_in_chain::<crate::body::BodyRefused>(e) {
        return UpstreamError::Refused(refusal.clone());
    }
    if crate::find_in_chain::<hyper::Error>(e).is_some_and(hyper::Error::is_parse_too_large) {
        return UpstreamError::Http(format!(
            "upstream response head too large: over {H1_MAX_BUF} bytes or {H1_MAX_HEADERS} \
             header fields"
        ));
    }
    let mut detail = e.to_string();
    if let Some(s) = e.source() {
        detail.push_str(": ");
        detail.push_str(&s.to_string());
    }
    UpstreamError::Http(detail)
}
