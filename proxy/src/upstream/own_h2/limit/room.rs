//! Making room among one client connection's upstream connections: which
//! of them are idle, and closing the least recently used of those when a
//! dial finds no place.
//!
//! hyper's pool says nothing of its connections, so what is idle is worked
//! out from the exchanges: hyper copies each connection's number
//! ([`OnConn`]) into every response it carries, and the response's body
//! holds the connection busy ([`InUse`]) from the head to its end. Before
//! the head, the request counts as wanting its host ([`super::Want`]), and
//! no connection of a host wanted is closed: hyper may be handing it to
//! that request. Both are counted under the same lock as the choice of
//! what to close, so a request for the host that comes after finds the
//! connection already closed ([`Open::close`]).

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Response;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::CaptureConnection;

use super::{Host, Hosts, Inner, OpenPermit, OwnDialer};
use crate::body::{Body, CleanTrailers};

/// An upstream connection of an own client, dialed and not yet closed.
pub(super) struct Open {
    host: Arc<Host>,
    /// Whether ALPN chose h2.
    h2: bool,
    /// Its socket. Open as long as this entry is in [`Inner::open`]: the
    /// connection takes its entry out before its socket closes (see
    /// `dial::Conn`'s drop).
    fd: RawFd,
    /// Exchanges on it between their response head and the end of their body.
    busy: usize,
    /// When it was dialed or last stopped being busy.
    since: Instant,
    /// Set once [`Open::close`] closed it; shared with its [`OpenPermit`].
    shut: Arc<AtomicBool>,
    /// What a request it carried saw of hyper's pool entry for it: poisoned,
    /// the pool hands the connection out no more.
    pool_entry: Option<CaptureConnection>,
}

impl Open {
    pub(super) fn is_shut(&self) -> bool {
        self.shut.load(Ordering::Acquire)
    }

    /// Whether it may be closed to make room: not busy, its host not wanted
    /// (checked under [`Hosts`]'s lock, as the host's requests count
    /// themselves). An HTTP/2 one only once its pool entry is known: hyper
    /// may open streams on a shared connection whose task has not yet seen
    /// it close, and those fail; poisoned first, it is never handed out. An
    /// HTTP/1 one hyper hands out as it closes (a connect that finished in
    /// the background) reads as ended before hyper writes a request on it
    /// ([`OpenPermit::is_shut`]), so the request comes back unsent and
    /// hyper sends it on another connection.
    fn is_idle(&self) -> bool {
        !self.is_shut()
            && self.busy == 0
            && self.host.wanting.load(Ordering::Acquire) == 0
            && (!self.h2 || self.pool_entry.is_some())
    }

    /// Closes it: out of hyper's pool, and its socket shut down, which
    /// wakes the task driving it to find it ended; its place comes back
    /// when that task drops it.
    fn close(&mut self) {
        self.shut.store(true, Ordering::Release);
        if let Some(entry) = &self.pool_entry {
            if let Some(connected) = entry.connection_metadata().as_ref() {
                connected.poison();
            }
        }
        // SAFETY: `fd` is the connection's socket, open while this entry is
        // in `Inner::open`, whose lock the caller holds (see `fd`).
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let _ = socket2::SockRef::from(&fd).shutdown(std::net::Shutdown::Both);
    }
}

impl Inner {
    /// Closes the least recently used idle connections, one for each dial
    /// waiting for a place beyond the connections already closing. Called
    /// whenever a dial starts waiting or a connection may have become idle.
    pub(super) fn make_room(&mut self) {
        while self.closing < self.waiting {
            let lru = self
                .open
                .iter()
                .filter(|(_, open)| open.is_idle())
                .min_by_key(|(_, open)| open.since)
                .map(|(id, _)| *id);
            let Some(open) = lru.and_then(|id| self.open.get_mut(&id)) else {
                return;
            };
            open.close();
            self.closing += 1;
        }
    }
}

impl OpenPermit {
    /// Counts the connection just dialed, whose socket is `fd`, among the
    /// open ones.
    pub(super) fn opened(&mut self, h2: bool, fd: RawFd) {
        let Some(host) = self.host.clone() else {
            return;
        };
        let mut inner = self.hosts.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        inner.open.insert(
            id,
            Open {
                host,
                h2,
                fd,
                busy: 0,
                since: Instant::now(),
                shut: self.shut.clone(),
                pool_entry: None,
            },
        );
        self.id = Some(id);
        // One hyper dialed in the background may be idle already.
        inner.make_room();
    }

    /// Whether it was closed to make room: the connection then reads as
    /// ended (`dial::Conn`), whatever its socket still holds.
    pub(crate) fn is_shut(&self) -> bool {
        self.shut.load(Ordering::Acquire)
    }

    /// Which connection it is, for hyper to copy into its responses.
    pub(crate) fn on_conn(&self) -> Option<OnConn> {
        self.id.map(OnConn)
    }
}

/// The number of the connection a response came on (hyper copies it from
/// the connection's `Connected::extra` into every response).
#[derive(Clone, Copy)]
pub(crate) struct OnConn(u64);

/// An exchange on an own client's connection, from its response head to
/// the end of its body: while one is, the connection is not closed to make
/// room. Held by the response body.
pub(crate) struct InUse {
    hosts: Arc<Hosts>,
    id: u64,
}

impl Drop for InUse {
    fn drop(&mut self) {
        let mut inner = self.hosts.lock();
        if let Some(open) = inner.open.get_mut(&self.id) {
            open.busy -= 1;
            if open.busy == 0 {
                open.since = Instant::now();
                inner.make_room();
            }
        }
    }
}

impl OwnDialer {
    /// `rsp`, answered on one of this dialer's connections, with its body
    /// holding the connection busy until it ends. `pool_entry` is what the
    /// request saw of the connection (`capture_connection`): kept, it lets
    /// [`Open::close`] take the connection out of hyper's pool. To be
    /// called before the request's [`super::Want`] drops.
    pub(crate) fn in_use(
        &self,
        mut rsp: Response<Incoming>,
        pool_entry: &CaptureConnection,
    ) -> Response<Body> {
        let guard = rsp
            .extensions_mut()
            .remove::<OnConn>()
            .and_then(|OnConn(id)| {
                let mut inner = self.hosts.lock();
                let open = inner.open.get_mut(&id)?;
                open.busy += 1;
                if open.pool_entry.is_none() {
                    open.pool_entry = Some(pool_entry.clone());
                }
                Some(InUse {
                    hosts: self.hosts.clone(),
                    id,
                })
            });
        rsp.map(|body| match guard {
            Some(guard) => crate::body::boxed(Holding {
                inner: CleanTrailers::new(body),
                guard: Some(guard),
            }),
            None => crate::body::incoming(body),
        })
    }
}

impl OwnDialer {
    /// Keeps what a request that got no response saw of its connection's
    /// pool entry, if it went out on one and none is kept yet: an HTTP/2
    /// connection whose first stream failed can then be closed to make room.
    pub(crate) fn saw(&self, pool_entry: &CaptureConnection) {
        let mut extras = http::Extensions::new();
        if let Some(connected) = pool_entry.connection_metadata().as_ref() {
            connected.get_extras(&mut extras);
        }
        let Some(OnConn(id)) = extras.remove::<OnConn>() else {
            return;
        };
        let mut inner = self.hosts.lock();
        if let Some(open) = inner.open.get_mut(&id) {
            open.pool_entry.get_or_insert_with(|| pool_entry.clone());
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body holding its exchange's [`InUse`] until it ends.
    struct Holding<B> {
        #[pin]
        inner: B,
        guard: Option<InUse>,
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for Holding<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let polled = inner.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None | Some(Err(_))) => true,
            Poll::Ready(Some(Ok(_))) => inner.is_end_stream(),
            Poll::Pending => false,
        };
        if ended {
            this.guard.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
