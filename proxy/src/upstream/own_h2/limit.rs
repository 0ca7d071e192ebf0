//! The bounds on the upstream connections of one client connection's own
//! client ([`super::OwnH2`]): per host, and over all hosts.
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
//! Every connection, HTTP/1 or HTTP/2, also holds a place among the client
//! connection's [`MAX_OPEN`] over all hosts. Without it, one client
//! connection whose streams went to many hosts (a wildcard allowlist, a
//! CIDR, many ports) opened a connection for each: 100 streams to 400 hosts
//! took the proxy from 29 to 430 descriptors in a third of a second, and six
//! such connections exhausted a limit of 2,048, so every other workload's
//! dials and accepts failed. An idle connection keeps its place, and
//! hyper's pool cannot be told to close one, so a dial that finds no place
//! closes the client's least recently used idle connection itself
//! ([`room`]): idle meaning no exchange on it between its response head and
//! the end of its body ([`InUse`]), and no request to its host waiting for
//! a response head (such a request may be about to take it from the pool).
//! With none idle, the dial waits for a place, as for its host's.
//!
//! The per-host semaphore stays, because it keeps one host from taking all
//! of the client's places, and because a waiter on it waits only for busy
//! connections of its own host: hyper hands a connection coming back to the
//! pool to a waiter first. How many stay idle per host is hyper's
//! `pool_max_idle_per_host`, [`IDLE_PER_HOST`] for these clients.
//!
//! An HTTP/2 connection gives its host's permit back once ALPN chose h2:
//! hyper keeps one per host, carrying every stream. It keeps its place
//! among all: it is a descriptor like any other.
//!
//! hyper races a pool checkout against a connect for each request, and
//! when the checkout wins it lets the connect finish in the background, to
//! pool the connection. A connect that had to wait for a permit or a place
//! therefore dials only if a request to the host still waits for its
//! response head ([`OwnDialer::want`]), and gives up as soon as none does:
//! else each request of a burst left a connect behind, to dial whenever a
//! connection closed. For the same reason the client keeps as many idle
//! connections per host as it may have open ([`IDLE_PER_HOST`]): a
//! connection dropped from a full idle list would free a permit for a
//! background connect.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::Connection as _;
use hyper_util::client::legacy::Client;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::body::Body;
use crate::upstream::dial::{self, Conn, DialError, Dialer};

mod room;

/// How many HTTP/1 connections to one host one client connection's own
/// client may have open, idle ones included.
pub(crate) const MAX_OPEN_PER_HOST: usize = 8;
/// How many upstream connections one client connection's own client may
/// have open or being dialed over all hosts, idle ones included. 32 is four
/// hosts at their [`MAX_OPEN_PER_HOST`], or 32 HTTP/2 upstreams (one
/// connection each, carrying every stream), and a third of the 100 streams
/// a client connection may have in flight
/// (`listen::H2_MAX_CONCURRENT_STREAMS`): a client connection whose streams
/// go to more hosts at once shares 32 connections among them (idle ones
/// closed to make room, busy ones waited for within the response-header
/// timeout) rather than holding a descriptor per host, so six of them sent
/// to 400 hosts hold 192 rather than 2,400. One that serves a single host
/// (MITM, interception) stops at the per-host bound first; 64 would let one
/// HTTP/2 client connection cost as many descriptors as 64 HTTP/1 ones.
pub(crate) const MAX_OPEN: usize = 32;
/// How many idle connections one client connection's own client keeps per
/// host (hyper's `pool_max_idle_per_host`; was 64): as many as it may have
/// open, see the module's doc.
pub(crate) const IDLE_PER_HOST: usize = MAX_OPEN_PER_HOST;

/// A host as the pool names it: TLS or not, host, port.
type HostKey = (bool, String, u16);

/// One client connection's own pooled client, with a handle on its
/// connector's bounds.
#[derive(Clone)]
pub(crate) struct OwnClient {
    pub(crate) client: Client<OwnDialer, Body>,
    pub(crate) dialer: OwnDialer,
}

impl OwnClient {
    /// How many upstream connections it has open or being dialed: what it
    /// costs kept as a spare.
    pub(crate) fn connections(&self) -> usize {
        self.dialer.connections()
    }
}

/// The [`Dialer`] of one client connection's own client: bounds its
/// connections per host ([`MAX_OPEN_PER_HOST`], HTTP/1) and over all hosts
/// ([`MAX_OPEN`]).
#[derive(Clone)]
pub(crate) struct OwnDialer {
    dialer: Dialer,
    hosts: Arc<Hosts>,
}

/// The state of each host with connections open, dialed or wanted, and of
/// the connections open.
struct Hosts {
    /// How many HTTP/1 connections a host may have.
    per_host: usize,
    /// How many connections there may be over all hosts.
    max: usize,
    /// A place per connection open or being dialed, over all hosts.
    places: Arc<Semaphore>,
    inner: Mutex<Inner>,
}

/// What [`Hosts`] keeps under its lock. A request's [`Want`] is counted
/// under it, so that a connection [`room`] closes is one no request can be
/// taking from hyper's pool.
#[derive(Default)]
struct Inner {
    by_key: HashMap<HostKey, Arc<Host>>,
    /// The connections dialed and not yet closed, by number.
    open: HashMap<u64, room::Open>,
    /// The number of the next connection dialed.
    next_id: u64,
    /// Dials waiting for a place.
    waiting: usize,
    /// Connections closed to make room whose place has not come back yet:
    /// at most `waiting` (one closed per dial waiting, not more).
    closing: usize,
}

struct Host {
    /// A permit per HTTP/1 connection open or being dialed.
    open: Arc<Semaphore>,
    /// Requests in flight without a response head yet. Raised under
    /// [`Hosts`]'s lock.
    wanting: AtomicUsize,
    /// Notified when `wanting` drops to zero.
    none_wanting: Notify,
}

impl Hosts {
    fn new(per_host: usize, max: usize) -> Self {
        Hosts {
            per_host,
            max,
            places: Arc::new(Semaphore::new(max)),
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// The state of `key`, made if need be.
    fn host(&mut self, key: &HostKey, per_host: usize) -> Arc<Host> {
        self.by_key
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Host {
                    open: Arc::new(Semaphore::new(per_host)),
                    wanting: AtomicUsize::new(0),
                    none_wanting: Notify::new(),
                })
            })
            .clone()
    }

    /// Forgets `key` when nothing holds or waits for its state: a workload
    /// going through many hosts leaves no entry behind for each.
    fn forget_unused(&mut self, key: &HostKey, per_host: usize) {
        let unused = self.by_key.get(key).is_some_and(|h| {
            Arc::strong_count(h) == 1
                && Arc::strong_count(&h.open) == 1
                && h.open.available_permits() == per_host
        });
        if unused {
            self.by_key.remove(key);
        }
    }
}

/// The place an upstream connection of an own client takes in its host's
/// bound and in the bound over all hosts, given back when the connection
/// closes. Kept in the connection ([`Conn`]), which asks it whether
/// [`room`] closed the connection ([`OpenPermit::is_shut`]).
pub(crate) struct OpenPermit {
    /// Among its host's HTTP/1 connections; given back once ALPN chose h2.
    host_permit: Option<OwnedSemaphorePermit>,
    /// Among all the client's connections.
    place: Option<OwnedSemaphorePermit>,
    host: Option<Arc<Host>>,
    hosts: Arc<Hosts>,
    key: HostKey,
    /// Its number among the open ones, once dialed.
    id: Option<u64>,
    /// Set when [`room`] closes it to make room.
    shut: Arc<AtomicBool>,
}

impl Drop for OpenPermit {
    fn drop(&mut self) {
        let mut inner = self.hosts.lock();
        if let Some(open) = self.id.and_then(|id| inner.open.remove(&id)) {
            // Under the lock with `closing`, so that no dial counts both
            // this place back and the room still coming.
            drop(self.place.take());
            if open.is_shut() {
                inner.closing -= 1;
            }
        }
        drop(self.place.take());
        drop(self.host_permit.take());
        drop(self.host.take());
        inner.forget_unused(&self.key, self.hosts.per_host);
    }
}

/// A request to a host waiting for its response head (see [`OwnDialer::want`]).
pub(crate) struct Want {
    host: Option<Arc<Host>>,
    hosts: Arc<Hosts>,
    key: HostKey,
}

impl Drop for Want {
    fn drop(&mut self) {
        let last = self.host.take().is_some_and(|host| {
            let last = host.wanting.fetch_sub(1, Ordering::AcqRel) == 1;
            if last {
                host.none_wanting.notify_waiters();
            }
            last
        });
        let mut inner = self.hosts.lock();
        if last {
            // The host's idle connections may be closed now.
            inner.make_room();
        }
        inner.forget_unused(&self.key, self.hosts.per_host);
    }
}

/// A dial waiting for a place, counted in [`Inner::waiting`] while it waits.
struct Waiting<'a>(&'a Hosts);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

impl OwnDialer {
    /// A dialer over `dialer` with bounds of its own.
    pub(crate) fn new(dialer: Dialer) -> Self {
        Self::with_bounds(dialer, MAX_OPEN_PER_HOST, MAX_OPEN)
    }

    /// A dialer over `dialer` allowing `per_host` HTTP/1 connections per
    /// host and `max` connections in all.
    pub(crate) fn with_bounds(dialer: Dialer, per_host: usize, max: usize) -> Self {
        OwnDialer {
            dialer,
            hosts: Arc::new(Hosts::new(per_host, max)),
        }
    }

    /// How many connections it has open or being dialed.
    pub(crate) fn connections(&self) -> usize {
        self.hosts.max - self.hosts.places.available_permits()
    }

    /// How many dials wait for a place over all hosts.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.hosts.lock().waiting
    }

    /// Marks a request to `uri`'s host as waiting for its response head
    /// until the guard drops: a connect that waited for a permit dials only
    /// while one does, and the host's idle connections are not closed to
    /// make room (the request may be taking one from the pool).
    pub(crate) fn want(&self, uri: &Uri) -> Option<Want> {
        let (host, port, tls) = dial::target(uri).ok()?;
        let key = (tls, host, port);
        let host = {
            let mut inner = self.hosts.lock();
            let host = inner.host(&key, self.hosts.per_host);
            host.wanting.fetch_add(1, Ordering::AcqRel);
            host
        };
        Some(Want {
            host: Some(host),
            hosts: self.hosts.clone(),
            key,
        })
    }

    /// A permit of `sem` for a connection to `host`: at once if there is
    /// one, else once one comes back; `None` when it had to wait and no
    /// request wants a new connection to `host` any more.
    async fn acquire(sem: &Arc<Semaphore>, host: &Host) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = sem.clone().try_acquire_owned() {
            return Some(permit);
        }
        loop {
            let none_wanting = host.none_wanting.notified();
            if host.wanting.load(Ordering::Acquire) == 0 {
                return None;
            }
            tokio::select! {
                // Never closed.
                permit = sem.clone().acquire_owned() => {
                    let permit = permit.ok()?;
                    return (host.wanting.load(Ordering::Acquire) > 0).then_some(permit);
                }
                _ = none_wanting => {}
            }
        }
    }

    /// A place among all the client's connections for one to `host`; when
    /// there is none, the least recently used idle connection is closed to
    /// make room, or the dial waits (see [`OwnDialer::acquire`]).
    async fn place(&self, host: &Host) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.hosts.places.clone().try_acquire_owned() {
            return Some(permit);
        }
        let _waiting = {
            let mut inner = self.hosts.lock();
            inner.waiting += 1;
            inner.make_room();
            Waiting(&self.hosts)
        };
        Self::acquire(&self.hosts.places, host).await
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
            let mut permit = OpenPermit {
                host_permit: None,
                place: None,
                host: None,
                hosts: this.hosts.clone(),
                key: (tls, host, port),
                id: None,
                shut: Arc::default(),
            };
            // Declared after `permit`, so dropped before it on every path:
            // the permit's drop forgets the host when nothing else holds it.
            let state = this.hosts.lock().host(&permit.key, this.hosts.per_host);
            permit.host = Some(state.clone());
            permit.host_permit = Self::acquire(&state.open, &state).await;
            if permit.host_permit.is_none() {
                return Err(DialError::Unwanted);
            }
            permit.place = this.place(&state).await;
            if permit.place.is_none() {
                return Err(DialError::Unwanted);
            }
            let (_, host, _) = &permit.key;
            let mut conn = this.dialer.open(host, port, tls).await?;
            let h2 = conn.connected().is_negotiated_h2();
            if h2 {
                // hyper keeps one HTTP/2 connection per host, for every stream.
                drop(permit.host_permit.take());
            }
            permit.opened(h2, conn.0.inner().raw_fd());
            conn.3 = Some(permit);
            Ok(conn)
        })
    }
}

#[cfg(test)]
mod tests;
