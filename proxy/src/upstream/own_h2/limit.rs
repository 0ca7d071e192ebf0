//! The bound on the HTTP/1 upstream connections of one client connection's
//! own client ([`super::OwnH2`]).
//!
//! When the upstream does not speak HTTP/2 (plain `http://`, or no `h2` in
//! its ALPN answer), hyper's pooled client opens one HTTP/1 connection per
//! request in flight: an HTTP/2 client connection with 100 streams open had
//! 100 upstream sockets, kept up to 64 of them idle per host, and passed them
//! on as a spare. [`OwnDialer`] holds each such connection to a permit of its
//! host's semaphore ([`MAX_OPEN_PER_HOST`]), so requests beyond it wait for a
//! connection of that host to come back to the pool (or to close) instead of
//! dialing; the response-header timeout bounds the wait.
//!
//! The semaphore is per host, not over all hosts, because an idle
//! connection keeps its permit: with one semaphore over all hosts, idle
//! connections to other hosts would hold every permit while a request to a
//! new host waited, and hyper's pool has no way to close them on demand.
//! Per host, an idle connection is always one the waiters can take (hyper
//! hands a connection coming back to the pool to a waiter first), so a
//! waiter waits only for busy connections of its own host. How many stay
//! idle is hyper's `pool_max_idle_per_host`, [`IDLE_PER_HOST`] for these
//! clients.
//!
//! An HTTP/2 connection gives its permit back once ALPN chose h2: hyper
//! keeps one per host, carrying every stream.
//!
//! hyper races a pool checkout against a connect for each request, and
//! when the checkout wins it lets the connect finish in the background, to
//! pool the connection. A connect that had to wait for a permit therefore
//! dials only if a request to the host still waits for its response head
//! ([`OwnDialer::want`]), and gives up as soon as none does: else each
//! request of a burst left a connect behind, to dial whenever a connection
//! closed. For the same reason the client keeps as many idle connections
//! per host as it may have open ([`IDLE_PER_HOST`]): a connection dropped
//! from a full idle list would free a permit for a background connect.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::Connection as _;
use hyper_util::client::legacy::Client;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::body::Body;
use crate::upstream::dial::{self, Conn, DialError, Dialer};

/// How many HTTP/1 connections to one host one client connection's own
/// client may have open, idle ones included.
pub(crate) const MAX_OPEN_PER_HOST: usize = 8;
/// How many idle connections one client connection's own client keeps per
/// host (hyper's `pool_max_idle_per_host`; was 64): as many as it may have
/// open, see the module's doc.
pub(crate) const IDLE_PER_HOST: usize = MAX_OPEN_PER_HOST;

/// A host as the pool names it: TLS or not, host, port.
type HostKey = (bool, String, u16);

/// One client connection's own pooled client, with a handle on its
/// connector's bound.
#[derive(Clone)]
pub(crate) struct OwnClient {
    pub(crate) client: Client<OwnDialer, Body>,
    pub(crate) dialer: OwnDialer,
}

/// The [`Dialer`] of one client connection's own client: bounds its HTTP/1
/// connections per host ([`MAX_OPEN_PER_HOST`]).
#[derive(Clone)]
pub(crate) struct OwnDialer {
    dialer: Dialer,
    hosts: Arc<Hosts>,
    max: usize,
}

/// The state of each host with connections open, dialed or wanted.
#[derive(Default)]
struct Hosts {
    by_key: Mutex<HashMap<HostKey, Arc<Host>>>,
}

struct Host {
    /// A permit per HTTP/1 connection open or being dialed.
    open: Arc<Semaphore>,
    /// Requests in flight without a response head yet.
    wanting: AtomicUsize,
    /// Notified when `wanting` drops to zero.
    none_wanting: Notify,
}

impl Hosts {
    /// The state of `key`, made if need be.
    fn host(&self, key: &HostKey, max: usize) -> Arc<Host> {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        by_key
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Host {
                    open: Arc::new(Semaphore::new(max)),
                    wanting: AtomicUsize::new(0),
                    none_wanting: Notify::new(),
                })
            })
            .clone()
    }

    /// Forgets `key` when nothing holds or waits for its state: a workload
    /// going through many hosts leaves no entry behind for each.
    fn forget_unused(&self, key: &HostKey, max: usize) {
        let mut by_key = self.by_key.lock().unwrap_or_else(|e| e.into_inner());
        let unused = by_key.get(key).is_some_and(|h| {
            Arc::strong_count(h) == 1
                && Arc::strong_count(&h.open) == 1
                && h.open.available_permits() == max
        });
        if unused {
            by_key.remove(key);
        }
    }
}

/// The place an HTTP/1 connection of an own client takes in its host's
/// bound, given back when the connection closes.
pub(crate) struct OpenPermit {
    permit: Option<OwnedSemaphorePermit>,
    host: Option<Arc<Host>>,
    hosts: Arc<Hosts>,
    key: HostKey,
    max: usize,
}

impl Drop for OpenPermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        drop(self.host.take());
        self.hosts.forget_unused(&self.key, self.max);
    }
}

/// A request to a host waiting for its response head (see [`OwnDialer::want`]).
pub(crate) struct Want {
    host: Option<Arc<Host>>,
    hosts: Arc<Hosts>,
    key: HostKey,
    max: usize,
}

impl Drop for Want {
    fn drop(&mut self) {
        if let Some(host) = self.host.take() {
            if host.wanting.fetch_sub(1, Ordering::AcqRel) == 1 {
                host.none_wanting.notify_waiters();
            }
        }
        self.hosts.forget_unused(&self.key, self.max);
    }
}

impl OwnDialer {
    /// A dialer over `dialer` with a bound of its own.
    pub(crate) fn new(dialer: Dialer) -> Self {
        OwnDialer {
            dialer,
            hosts: Arc::default(),
            max: MAX_OPEN_PER_HOST,
        }
    }

    /// Marks a request to `uri`'s host as waiting for its response head
    /// until the guard drops: a connect that waited for a permit dials only
    /// while one does.
    pub(crate) fn want(&self, uri: &Uri) -> Option<Want> {
        let (host, port, tls) = dial::target(uri).ok()?;
        let key = (tls, host, port);
        let host = self.hosts.host(&key, self.max);
        host.wanting.fetch_add(1, Ordering::AcqRel);
        Some(Want {
            host: Some(host),
            hosts: self.hosts.clone(),
            key,
            max: self.max,
        })
    }

    /// A permit to open a connection to `host`; `None` when it had to wait
    /// and no request wants a new connection any more.
    async fn permit(host: &Host) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = host.open.clone().try_acquire_owned() {
            return Some(permit);
        }
        loop {
            let none_wanting = host.none_wanting.notified();
            if host.wanting.load(Ordering::Acquire) == 0 {
                return None;
            }
            tokio::select! {
                // Never closed.
                permit = host.open.clone().acquire_owned() => {
                    let permit = permit.ok()?;
                    return (host.wanting.load(Ordering::Acquire) > 0).then_some(permit);
                }
                _ = none_wanting => {}
            }
        }
    }
}

impl tower_service::Service<Uri> for OwnDialer {
    type Response = Conn;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, DialError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (host, port, tls) = dial::target(&uri)?;
            let key = (tls, host, port);
            let state = this.hosts.host(&key, this.max);
            let permit = OwnDialer::permit(&state).await;
            let mut permit = OpenPermit {
                permit,
                host: Some(state),
                hosts: this.hosts.clone(),
                key,
                max: this.max,
            };
            if permit.permit.is_none() {
                return Err(DialError::Unwanted);
            }
            let (_, host, _) = &permit.key;
            let mut conn = this.dialer.open(host, port, tls).await?;
            if conn.connected().is_negotiated_h2() {
                // hyper keeps one HTTP/2 connection per host, for every stream.
                drop(permit.permit.take());
            }
            conn.3 = Some(permit);
            Ok(conn)
        })
    }
}
