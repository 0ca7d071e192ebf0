//! The upstream HTTP/1 connection a client connection holds.
//!
//! An HTTP/1 client connection sends one request at a time, and in MITM and
//! interception modes nearly always to one host. So instead of handing each
//! request to a pooled connection running in a task of its own (a channel
//! send, a pool lookup and a cross-task wake-up per request), the client
//! connection's task keeps the upstream connection it last used in a
//! [`HeldSlot`] and drives it itself: [`Driven`] polls the server side and
//! the held upstream connection in one task.
//!
//! As soon as its response is done, the upstream connection goes back to the
//! shared [`IdlePool`]: the client connection's next request takes it back
//! from there (a short lock), and meanwhile another client connection to the
//! same host can use it. So an idle client connection holds no upstream
//! connection, upstream connections number the requests in flight rather
//! than the client connections open, and a new client connection starts with
//! a warm upstream connection instead of a new TCP and TLS handshake.
//!
//! A connection's socket is registered with the reactor of the runtime it was
//! dialed on (its [`Home`], one per connection worker). Driven from another
//! runtime, each of its readiness events would wake the home runtime's
//! thread, which would then wake the client connection's thread: two thread
//! wake-ups per event instead of none. So the pool hands out a connection of
//! the caller's own runtime first, and one from elsewhere only when it has
//! none; that one is moved to the caller's runtime first ([`Held::rehome`]:
//! a few system calls, once). Dialing a new one instead would leave every
//! runtime holding as many idle connections as it ever had requests in
//! flight.

use std::collections::HashMap;
use std::future::Future;
use std::os::fd::{BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use hyper::client::conn::http1;

use super::dial::Conn;
use super::own_h2::{H2Client, OwnH2};
use crate::body::Body;

/// How many idle connections the pool keeps per host.
const MAX_IDLE_PER_HOST: usize = 64;
/// The bounds of the pool's cap over all hosts ([`idle_cap_for`]).
const IDLE_CAP_RANGE: (usize, usize) = (16, 1024);
/// The share of the soft open-file limit the pool's idle connections may
/// take over all hosts: a tenth, half of the fifth `proxy.max_connections`
/// leaves for everything but the connections it admits and their upstreams
/// (see `ops::fd_limit::DEFAULT_MAX_CONNECTIONS_SHARE`).
const IDLE_SHARE_OF_FD_LIMIT: u64 = 10;
/// How long an idle connection may wait in the pool.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often [`IdlePool`] sweeps out expired and closed connections (see
/// [`IdlePool::start_sweeper`]).
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(15);
/// How many times [`Driven`] re-polls after waking itself before it yields.
const MAX_SELF_POLLS: usize = 8;
/// An idle connection parked for longer than this is polled once before it
/// is handed out, to notice a close by the peer. One parked more recently
/// is handed out as is: if the peer closed it meanwhile, the request comes
/// back unsent and goes out on a new connection (see `Upstream::send_held`).
const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// Which upstream a connection talks to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    /// Whether the leg is TLS.
    pub tls: bool,
    /// The host, as dialed.
    pub host: String,
    /// The port.
    pub port: u16,
}

/// The HTTP/1 client settings of every held connection: header case
/// preserved, and response heads bounded as the client side bounds request
/// heads: by [`crate::listen::H1_MAX_BUF`] bytes (hyper's default, about
/// 408 KiB, let every upstream answering with a huge head pin that much per
/// exchange) and by [`crate::listen::H1_MAX_HEADERS`] fields rather than
/// hyper's default of 100. A head beyond either fails the exchange: 502
/// `upstream_error`, see [`super::classify`].
pub(crate) fn http1_client() -> http1::Builder {
    let mut b = http1::Builder::new();
    b.preserve_header_case(true)
        .max_buf_size(crate::listen::H1_MAX_BUF)
        .max_headers(crate::listen::H1_MAX_HEADERS);
    b
}

/// The tokio runtime whose reactor a socket is registered with (`None`
/// outside a runtime): one per connection worker, one for the main runtime.
pub(crate) type Home = Option<tokio::runtime::Id>;

/// The runtime the calling task runs on.
pub(crate) fn current_home() -> Home {
    tokio::runtime::Handle::try_current().ok().map(|h| h.id())
}

/// One open upstream HTTP/1 connection: the request sender and the
/// connection future that does its I/O.
pub(crate) struct Held {
    pub key: Key,
    /// The runtime it was dialed on, whose reactor its socket is registered with.
    home: Home,
    pub sender: http1::SendRequest<Body>,
    conn: Pin<Box<http1::Connection<Conn, Body>>>,
    /// Where it goes when its client connection ends. Weak: the pool holds
    /// its idle connections, which must not keep the pool alive.
    pool: Weak<IdlePool>,
    /// Whether it has already carried a request (a failed send on a reused
    /// connection may be retried on a fresh one).
    pub reused: bool,
    /// When its last request was sent (the request's start), to tell a
    /// connection in steady use from one that sat idle.
    pub last_sent: Option<tokio::time::Instant>,
    /// Closed once its exchange is done instead of kept: the upstream
    /// answered in HTTP/1.0, after which hyper sends every request on the
    /// connection as HTTP/1.0, which cannot carry a body of unknown length
    /// (a chunked upload went out without its body).
    pub retire: bool,
    /// Retired by a reload ([`super::Dialer::retire_open`]): not reused.
    standing: super::dial::Standing,
    /// Its socket, open as long as `conn` is, to look for bytes the
    /// upstream sent while it was idle ([`Held::quiet`]).
    fd: RawFd,
    /// The client connection ([`HeldSlot`]'s id) whose exchange it last
    /// carried; 0 when not known.
    parked_by: u64,
}

impl Held {
    /// A fresh connection, dialed on the calling task's runtime, that will
    /// return to `pool`.
    pub fn new(
        key: Key,
        sender: http1::SendRequest<Body>,
        conn: http1::Connection<Conn, Body>,
        standing: super::dial::Standing,
        fd: RawFd,
        pool: &Arc<IdlePool>,
    ) -> Self {
        Held {
            standing,
            fd,
            parked_by: 0,
            key,
            home: current_home(),
            sender,
            conn: Box::pin(conn),
            pool: Arc::downgrade(pool),
            reused: false,
            last_sent: None,
            retire: false,
        }
    }

    /// The runtime it was dialed on (or moved to).
    pub fn home(&self) -> Home {
        self.home
    }

    /// Moves an idle connection to the calling task's runtime: its socket
    /// joins this runtime's reactor and a new HTTP/1 connection state takes
    /// over the same stream. None (the connection is dropped) if it is not
    /// idle, the upstream sent anything while it was, or the socket cannot
    /// be moved.
    ///
    /// The check for bytes sent while idle is this function's own: on its
    /// home runtime hyper finds them itself (a read of an idle connection
    /// that returns bytes is an error), but a socket newly registered with a
    /// reactor reads as not ready until that reactor has next polled, so
    /// hyper wrote the request first and took the bytes waiting, an
    /// unsolicited response (a second answer to the last request, or one an
    /// upstream that ignores a body's length made of that body), for the
    /// answer to another client connection's request.
    pub async fn rehome(self) -> Option<Held> {
        let Held {
            key,
            conn,
            pool,
            reused,
            last_sent,
            retire,
            parked_by,
            ..
        } = self;
        let parts = Pin::into_inner(conn).into_parts();
        if !parts.read_buf.is_empty() {
            return None;
        }
        let mut io = parts.io;
        io.0.inner_mut().rehome().ok()?;
        if !io.0.inner_mut().is_quiet() {
            return None;
        }
        let standing = io.1.clone();
        let fd = io.0.inner().raw_fd();
        let (sender, conn) = http1_client().handshake(io).await.ok()?;
        Some(Held {
            standing,
            fd,
            parked_by,
            key,
            home: current_home(),
            sender,
            conn: Box::pin(conn),
            pool,
            reused,
            last_sent,
            retire,
        })
    }

    /// True when the upstream has sent nothing since its last response
    /// (one `recv(MSG_PEEK)`). Checked when a connection goes to another
    /// client connection than the one that used it last: idle in the pool,
    /// nothing reads it, and a request written on it would take what the
    /// upstream sent meanwhile (a second answer to the last request, or the
    /// answer to a request an upstream that ignores a body's length made of
    /// that body) for its own answer, before the reactor has reported the
    /// socket readable for hyper to notice.
    fn quiet(&self) -> bool {
        // SAFETY: `fd` is the socket `conn` owns, open as long as `self` is.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        super::dial::nothing_waiting(fd)
    }

    /// Drives the connection's I/O; false once it has ended.
    fn poll_open(&mut self, cx: &mut Context<'_>) -> bool {
        self.conn.as_mut().poll(cx).is_pending()
    }

    /// True when it is open and idle, ready for a request. Lets the
    /// connection settle first (a finished response, a close by the peer).
    /// A connection a reload retired is never ready.
    fn ready(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        !self.standing.is_retired() && self.poll_open(&mut cx) && self.sender.is_ready()
    }

    /// Returns an idle connection to its pool; drops anything else.
    fn release(mut self, by: u64) {
        if self.ready() {
            self.park(by);
        }
    }

    /// Puts a connection known to be open and idle into its pool (or
    /// closes it, when it is to [`retire`](Held::retire)).
    fn park(mut self, by: u64) {
        self.parked_by = by;
        if self.retire {
            return;
        }
        if let Some(pool) = self.pool.upgrade() {
            pool.put(self);
        }
    }
}

/// How many idle connections the pool keeps over all hosts when the soft
/// open-file limit is `soft` (`None`: unknown): a tenth of it, within
/// [`IDLE_CAP_RANGE`]. Without a cap over hosts, a workload allowed a
/// wildcard, `"*"` or a CIDR could ask for `a1`, `a2`, ... (or as many
/// ports) and leave an idle socket for each for [`IDLE_TIMEOUT`]: with
/// enough of them, every workload's accepts and dials fail for want of a
/// descriptor.
pub(crate) fn idle_cap_for(soft: Option<u64>) -> usize {
    let (min, max) = IDLE_CAP_RANGE;
    let share = soft.map_or(max as u64, |s| s / IDLE_SHARE_OF_FD_LIMIT);
    usize::try_from(share).unwrap_or(max).clamp(min, max)
}

/// Idle upstream HTTP/1 connections, by upstream, newest last. Each goes
/// first to a client connection on its [`Home`] runtime. At most
/// [`MAX_IDLE_PER_HOST`] per host and `cap` in all (see [`idle_cap_for`]).
pub(crate) struct IdlePool {
    inner: Mutex<PoolInner>,
}

impl Default for IdlePool {
    /// A pool capped by the process's soft open-file limit now.
    fn default() -> Self {
        IdlePool::with_cap(idle_cap_for(crate::ops::fd_limit::soft_limit()))
    }
}

struct PoolInner {
    idle: HashMap<Key, Vec<(Instant, Held)>>,
    /// How many connections `idle` holds, over all hosts.
    total: usize,
    /// The most it may hold over all hosts.
    cap: usize,
    /// When a `put` at the cap last swept: at most once a second, so a pool
    /// kept full does not make every request's `put` look at every idle
    /// connection under the lock.
    swept_at_cap: Option<Instant>,
}

impl IdlePool {
    /// A pool that keeps at most `cap` idle connections over all hosts.
    pub(crate) fn with_cap(cap: usize) -> Self {
        IdlePool {
            inner: Mutex::new(PoolInner {
                idle: HashMap::new(),
                total: 0,
                cap: cap.max(1),
                swept_at_cap: None,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sweeps `pool` every `every` from a task on the current tokio runtime,
    /// so that connections the peer closed are closed here too (instead of
    /// waiting in CLOSE_WAIT) and expired ones go, even when nothing uses the
    /// pool. The task ends with the pool. Does nothing outside a runtime.
    pub fn start_sweeper(pool: &Arc<IdlePool>, every: Duration) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pool = Arc::downgrade(pool);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await; // the first tick is immediate
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else {
                    return;
                };
                pool.lock().sweep();
            }
        });
    }

    /// An idle connection to `key` that is still open, for the client
    /// connection `taker` ([`HeldSlot`]'s id) on runtime `home`: the newest
    /// one `taker` used last, else the newest of `home`, else the newest.
    /// One that another client connection used last is handed out only if
    /// the upstream sent nothing while it was idle ([`Held::quiet`]); a
    /// client connection taking back its own pays no check.
    pub fn take(&self, key: &Key, home: Home, taker: u64) -> Option<Held> {
        let mut inner = self.lock();
        let now = Instant::now();
        let PoolInner { idle, total, .. } = &mut *inner;
        let list = idle.get_mut(key)?;
        let found = loop {
            let Some(i) = list
                .iter()
                .rposition(|(_, h)| h.parked_by == taker)
                .or_else(|| list.iter().rposition(|(_, h)| h.home == home))
                .or_else(|| list.len().checked_sub(1))
            else {
                break None;
            };
            let (since, mut held) = list.remove(i);
            *total -= 1;
            let fresh = now.duration_since(since) < RECHECK_AFTER;
            if !held.standing.is_retired()
                && ((fresh && held.sender.is_ready()) || held.ready())
                && (held.parked_by == taker || held.quiet())
            {
                held.reused = true;
                break Some(held);
            }
        };
        // An emptied host's list stays (the connection taken usually comes
        // back at once; the sweep drops lists left empty).
        found
    }

    /// Closes the idle connection to `key` whose last request went out at
    /// `sent` (see [`HeldSlot::retire`]), if it got here already.
    pub fn retire(&self, key: &Key, sent: tokio::time::Instant) {
        let mut inner = self.lock();
        let PoolInner { idle, total, .. } = &mut *inner;
        if let Some(list) = idle.get_mut(key) {
            let before = list.len();
            list.retain(|(_, h)| h.last_sent != Some(sent));
            *total -= before - list.len();
        }
    }

    /// Keeps `held` as the newest idle connection to its upstream. When its
    /// host has [`MAX_IDLE_PER_HOST`], the host's oldest goes; else, when
    /// the pool is at its cap, closed and expired ones go first and then,
    /// if none did, the least recently parked of all hosts.
    fn put(&self, held: Held) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let now = Instant::now();
        if inner.total >= inner.cap
            && inner
                .idle
                .get(&held.key)
                .is_none_or(|list| list.len() < MAX_IDLE_PER_HOST)
        {
            // Only at the cap, and at most once a second: a look at every
            // connection; then, if none went, at the oldest of every host.
            if inner
                .swept_at_cap
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                inner.swept_at_cap = Some(now);
                inner.sweep();
            }
            if inner.total >= inner.cap {
                inner.evict_oldest();
            }
        }
        let list = inner.idle.entry(held.key.clone()).or_default();
        if list.len() >= MAX_IDLE_PER_HOST {
            list.remove(0);
            inner.total -= 1;
        }
        list.push((now, held));
        inner.total += 1;
    }

    /// How many idle connections the pool holds (`iron_proxy_upstream_idle_connections`).
    pub fn len(&self) -> usize {
        self.lock().total
    }
}

impl PoolInner {
    /// Closes connections idle for longer than [`IDLE_TIMEOUT`], or closed by the peer.
    fn sweep(&mut self) {
        let now = Instant::now();
        for list in self.idle.values_mut() {
            list.retain_mut(|(since, held)| {
                now.duration_since(*since) < IDLE_TIMEOUT && held.ready()
            });
        }
        self.idle.retain(|_, list| !list.is_empty());
        self.total = self.idle.values().map(Vec::len).sum();
    }

    /// Closes the least recently parked connection of all hosts (each
    /// host's list is oldest first).
    fn evict_oldest(&mut self) {
        let oldest = self
            .idle
            .iter()
            .filter_map(|(key, list)| list.first().map(|(since, _)| (*since, key)))
            .min_by_key(|(since, _)| *since)
            .map(|(_, key)| key.clone());
        let Some(key) = oldest else { return };
        if let Some(list) = self.idle.get_mut(&key) {
            list.remove(0);
            self.total -= 1;
            if list.is_empty() {
                self.idle.remove(&key);
            }
        }
    }
}

/// The upstream connection one client connection holds, shared by its
/// request handler (which sends on it) and its [`Driven`] task (which does
/// its I/O). Returned to the pool when the last handle drops. It also keeps
/// the client connection's own HTTP/2 client (see [`super::own_h2`]).
#[derive(Clone, Default)]
pub struct HeldSlot {
    inner: Arc<SlotInner>,
}

struct SlotInner {
    /// This client connection's number, unique in the process (from 1).
    id: u64,
    held: Mutex<Option<Held>>,
    h2: OnceLock<OwnH2>,
    /// The waker [`Driven`] polls the held connection with: a connection
    /// put in the slot needs that first poll (see [`HeldSlot::hold`]).
    waker: Mutex<Option<Waker>>,
}

impl Default for SlotInner {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SlotInner {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            held: Mutex::default(),
            h2: OnceLock::new(),
            waker: Mutex::default(),
        }
    }
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        let held = self
            .held
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(h) = held {
            h.release(self.id);
        }
    }
}

impl std::fmt::Debug for HeldSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldSlot").finish_non_exhaustive()
    }
}

impl HeldSlot {
    fn lock(&self) -> MutexGuard<'_, Option<Held>> {
        self.inner.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This client connection's number, for [`IdlePool::take`].
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }

    /// The held connection when it goes to `key` and is ready. One to
    /// another upstream goes back to the pool.
    pub(crate) fn take(&self, key: &Key) -> Option<Held> {
        let mut held = self.lock().take()?;
        if held.key != *key {
            held.release(self.inner.id);
            return None;
        }
        if !held.ready() {
            return None;
        }
        held.reused = true;
        Some(held)
    }

    /// The client connection's own HTTP/2 client, made by `init` on first
    /// use (an `init` that fails leaves the slot without one); None once a
    /// reload retired the connections it pools (the shared pool serves).
    pub(crate) fn h2_client<E>(
        &self,
        init: impl FnOnce() -> Result<OwnH2, E>,
    ) -> Result<Option<&H2Client>, E> {
        if let Some(own) = self.inner.h2.get() {
            return Ok(own.client());
        }
        let own = init()?;
        Ok(self.inner.h2.get_or_init(|| own).client())
    }

    /// Holds `held`, so the client connection's task drives it. Whatever
    /// was held before goes back to the pool.
    pub(crate) fn hold(&self, held: Held) {
        let previous = self.lock().replace(held);
        if let Some(p) = previous {
            p.release(self.inner.id);
        }
        // Its last poll, if any, was with another waker (a pool check's, or
        // another client connection's): the driving task must poll it.
        let waker = self.inner.waker.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = waker.as_ref() {
            w.wake_by_ref();
        }
    }

    /// Closes the held connection once its exchange is done, instead of
    /// keeping it for the next request ([`Held::retire`]). True when it was
    /// still held; else its exchange was over already and it went to the
    /// pool (for [`IdlePool::retire`]).
    pub(crate) fn retire(&self) -> bool {
        match self.lock().as_mut() {
            Some(h) => {
                h.retire = true;
                true
            }
            None => false,
        }
    }

    /// Sets the waker the held connection is polled with (by [`drive`]).
    fn set_waker(&self, waker: Waker) {
        *self.inner.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(waker);
    }

    /// Drives the held connection's I/O: drops it once it has ended, and
    /// returns it to the pool once its exchange is done.
    fn poll_held(&self, cx: &mut Context<'_>) {
        let mut slot = self.lock();
        let Some(h) = slot.as_mut() else {
            return;
        };
        if !h.poll_open(cx) {
            *slot = None;
        } else if h.sender.is_ready() {
            // Just polled: open, and its exchange is done.
            if let Some(idle) = slot.take() {
                drop(slot);
                idle.park(self.inner.id);
            }
        }
    }
}

/// Which part of a [`Driven`] a wake-up is for: the client connection.
const INNER: u8 = 1;
/// Which part of a [`Driven`] a wake-up is for: the held upstream connection.
const HELD: u8 = 2;

/// The wake-ups of [`Driven`]'s two parts. A part's wake-up that happens
/// while [`Driven`] is polling is served in that same poll, without
/// rescheduling the task; any other wakes the task. Either way only the
/// parts that were woken are polled again: a client connection waiting for
/// its response is not polled when the upstream connection reads a chunk,
/// and the upstream connection is not polled when the client sends more.
struct Wakes {
    polling: AtomicBool,
    /// The parts woken since they were last polled ([`INNER`], [`HELD`]).
    woken: AtomicU8,
    task: Mutex<Option<Waker>>,
}

/// The waker one part of a [`Driven`] is polled with.
struct PartWake {
    wakes: Arc<Wakes>,
    part: u8,
}

impl Wake for PartWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.woken.fetch_or(self.part, Ordering::SeqCst);
        if !self.wakes.polling.load(Ordering::SeqCst) {
            let task = self.wakes.task.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(w) = task.as_ref() {
                w.wake_by_ref();
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// A client connection's future together with the upstream connection it holds.
    pub struct Driven<F> {
        #[pin]
        inner: F,
        slot: HeldSlot,
        wakes: Arc<Wakes>,
        inner_waker: Waker,
        held_waker: Waker,
    }
}

/// Runs `inner` (a client connection) and the upstream connection in `slot` in one task.
pub fn drive<F: Future>(slot: HeldSlot, inner: F) -> Driven<F> {
    let wakes = Arc::new(Wakes {
        polling: AtomicBool::new(false),
        // The first poll polls both parts.
        woken: AtomicU8::new(INNER | HELD),
        task: Mutex::new(None),
    });
    let part = |part| {
        Waker::from(Arc::new(PartWake {
            wakes: wakes.clone(),
            part,
        }))
    };
    let (inner_waker, held_waker) = (part(INNER), part(HELD));
    slot.set_waker(held_waker.clone());
    Driven {
        inner,
        slot,
        wakes,
        inner_waker,
        held_waker,
    }
}

impl<F: Future> Future for Driven<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let wakes = &**this.wakes;
        {
            let mut task = wakes.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        wakes.polling.store(true, Ordering::SeqCst);
        let mut due = wakes.woken.swap(0, Ordering::SeqCst);
        for _ in 0..MAX_SELF_POLLS {
            if due & INNER != 0 {
                due &= !INNER;
                let mut own = Context::from_waker(this.inner_waker);
                if let Poll::Ready(out) = this.inner.as_mut().poll(&mut own) {
                    wakes.polling.store(false, Ordering::SeqCst);
                    return Poll::Ready(out);
                }
                // A request it sent, or a connection it put in the slot,
                // has woken the upstream part: served next, in this poll.
                due |= wakes.woken.swap(0, Ordering::SeqCst);
            }
            if due & HELD != 0 {
                due &= !HELD;
                this.slot
                    .poll_held(&mut Context::from_waker(this.held_waker));
                due |= wakes.woken.swap(0, Ordering::SeqCst);
            }
            if due == 0 {
                wakes.polling.store(false, Ordering::SeqCst);
                // A wake-up from another thread may have come in before
                // `polling` was cleared, and not gone to the task.
                due = wakes.woken.swap(0, Ordering::SeqCst);
                if due == 0 {
                    return Poll::Pending;
                }
                wakes.polling.store(true, Ordering::SeqCst);
            }
        }
        // Still busy: let other tasks run, and come back for the parts due.
        wakes.woken.fetch_or(due, Ordering::SeqCst);
        wakes.polling.store(false, Ordering::SeqCst);
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests;
