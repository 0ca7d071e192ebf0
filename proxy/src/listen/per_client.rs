//! How many connections the proxy has open, over all its listeners: in
//! all (`proxy.max_connections`), and per client
//! (`proxy.max_connections_per_client`): per address, or per workload
//! (uid and cgroup) for a connection eBPF interception redirected
//! ([`Client`]), since every redirected connection comes from loopback.
//!
//! Every client connection takes a descriptor (and a forwarded one a
//! second), and the proxy's descriptors are shared by every workload it
//! serves. Two caps keep one workload from taking them all:
//!
//! - **In all.** Without a cap, a workload opening connections (silent
//!   ones, slow uploads, keep-alive connections it keeps busy) takes the
//!   proxy to its descriptor ceiling; then the connections already
//!   accepted fail as well, since their upstream dials get `EMFILE` (502
//!   `connect_failed`), and so do DNS forwarding and a reload. The cap
//!   refuses client connections while descriptors are left for the
//!   accepted ones' upstreams (nginx's `worker_connections`, HAProxy's
//!   `maxconn`, Envoy's `global_downstream_max_connections`). On by
//!   default: two fifths of the open-file limit
//!   (`ops::fd_limit::default_max_connections`).
//! - **Per client.** So that a workload at that cap does not shut every
//!   other workload out: squid's `maxconn` ACL, nginx's `limit_conn` keyed
//!   by `$binary_remote_addr`, HAProxy's `src_conn_cur`. Off by default:
//!   behind NAT many workloads share one address, and only the operator
//!   knows how many connections that address legitimately needs. Under
//!   eBPF interception the transparent listener counts each workload on its
//!   own (the record of the redirect names it), so one workload at the cap
//!   leaves the others served; nftables interception, whose attribution
//!   scans /proc after the connection is admitted, counts by address.
//!
//! Connections are counted with the per-client cap off too, so a reload
//! can set, change or remove either cap ([`ClientLimit::set_max`],
//! [`ClientLimit::set_max_total`]) and the new cap applies at once with
//! every open connection counted. Lowering one closes nothing: over the
//! new cap, no new connection is admitted until enough of the open ones
//! have closed (as nginx's `limit_conn` after a reload).
//!
//! A connection over a cap is closed right after `accept(2)`, before any
//! byte is read or any task spawned for it, and audited (one record,
//! reason `client_connection_limit` or `connection_limit`). The warnings
//! in the operational log are rate limited ([`WARN_EVERY`]), so a flood of
//! refused connections does not become a flood of warnings.
//!
//! The count is kept at accept and close only, in a map sharded by client
//! (the connection workers accept in parallel) and one atomic total:
//! nothing on the request path. A connection's [`Permit`] lives as long as
//! its socket: the connection's task holds it, and [`Permitted`] carries it
//! into whatever outlives the task (an upgraded WebSocket, a CONNECT served
//! through hyper).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::audit::{ClientProcess, Mode};
use crate::exchange::ConnInfo;
use crate::intercept::Client;
use crate::state::Shared;

/// The audit reason of a connection refused over the per-client cap.
pub const REASON: &str = "client_connection_limit";
/// The audit reason of a connection refused over `proxy.max_connections`.
pub const TOTAL_REASON: &str = "connection_limit";
/// At most one warning in this period while connections are refused.
pub const WARN_EVERY: Duration = Duration::from_secs(10);
/// How many independently locked parts the counts are split into.
const SHARDS: usize = 16;

/// The open connections of every client and in all, and the caps.
pub struct ClientLimit {
    /// The per-client cap; 0 when there is none (connections are counted all the same).
    max: AtomicU32,
    /// The cap over all clients; 0 when there is none.
    max_total: AtomicU32,
    /// Connections open over all clients.
    total: AtomicU32,
    shards: [Mutex<HashMap<Client, u32>>; SHARDS],
    warned: Mutex<Warned>,
    warned_total: Mutex<Warned>,
    /// `iron_proxy_client_connections` by listener, in the order of
    /// [`LISTENERS`], once the metrics are wired ([`ClientLimit::count_into`]).
    gauges: std::sync::OnceLock<[prometheus_client::metrics::gauge::Gauge; 4]>,
}

/// The listeners that admit connections, in the order of the gauges
/// [`ClientLimit::count_into`] takes.
pub const LISTENERS: [Mode; 4] = [Mode::Http, Mode::Https, Mode::Tunnel, Mode::Transparent];

/// `mode`'s place in [`LISTENERS`]; `None` for a mode no listener has (sni-only).
fn listener_slot(mode: Mode) -> Option<u8> {
    match mode {
        Mode::Http => Some(0),
        Mode::Https => Some(1),
        Mode::Tunnel => Some(2),
        Mode::Transparent => Some(3),
        Mode::SniOnly => None,
    }
}

/// The refusals not yet warned about.
#[derive(Default)]
struct Warned {
    last: Option<Instant>,
    unreported: u64,
}

/// Why a connection was not admitted: the connections open (from its
/// client, or in all) and the cap they reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its client has `open` connections, at `proxy.max_connections_per_client`.
    Client {
        /// Connections the client has open.
        open: u32,
        /// The cap.
        max: NonZeroU32,
    },
    /// The proxy has `open` client connections, at `proxy.max_connections`.
    Total {
        /// Client connections open over all clients.
        open: u32,
        /// The cap.
        max: NonZeroU32,
    },
}

/// One open connection of a client: counted until dropped.
pub struct Permit {
    limit: Arc<ClientLimit>,
    client: Client,
    /// Its listener's place in [`LISTENERS`].
    listener: Option<u8>,
}

impl ClientLimit {
    /// A cap of `max` connections per client (`None`: no cap, and
    /// the connections counted for when one is set).
    pub fn new(max: Option<NonZeroU32>) -> Arc<Self> {
        Arc::new(ClientLimit {
            max: AtomicU32::new(max.map_or(0, NonZeroU32::get)),
            max_total: AtomicU32::new(0),
            total: AtomicU32::new(0),
            shards: Default::default(),
            warned: Mutex::default(),
            warned_total: Mutex::default(),
            gauges: std::sync::OnceLock::new(),
        })
    }

    /// Keeps `gauges` at the number of open connections of each listener
    /// ([`LISTENERS`]) from now on (set once, at start-up, before any
    /// connection is accepted).
    pub fn count_into(&self, gauges: [prometheus_client::metrics::gauge::Gauge; 4]) {
        let _ = self.gauges.set(gauges);
    }

    /// The gauge of a listener's open connections, once wired.
    fn gauge(&self, listener: Option<u8>) -> Option<&prometheus_client::metrics::gauge::Gauge> {
        self.gauges.get()?.get(usize::from(listener?))
    }

    /// The cap, if any.
    pub fn max(&self) -> Option<NonZeroU32> {
        NonZeroU32::new(self.max.load(Ordering::Relaxed))
    }

    /// Sets, changes or removes the cap (a reload): it applies to the next
    /// connection accepted. Returns the cap it replaced.
    pub fn set_max(&self, max: Option<NonZeroU32>) -> Option<NonZeroU32> {
        NonZeroU32::new(
            self.max
                .swap(max.map_or(0, NonZeroU32::get), Ordering::Relaxed),
        )
    }

    /// The cap over all clients, if any.
    pub fn max_total(&self) -> Option<NonZeroU32> {
        NonZeroU32::new(self.max_total.load(Ordering::Relaxed))
    }

    /// Sets, changes or removes the cap over all clients (start-up, a
    /// reload): it applies to the next connection accepted. Returns the
    /// cap it replaced.
    pub fn set_max_total(&self, max: Option<NonZeroU32>) -> Option<NonZeroU32> {
        NonZeroU32::new(
            self.max_total
                .swap(max.map_or(0, NonZeroU32::get), Ordering::Relaxed),
        )
    }

    fn shard(&self, client: &Client) -> std::sync::MutexGuard<'_, HashMap<Client, u32>> {
        // The low bits of the address: clients are spread over the shards
        // by their last octets, which is where addresses in one subnet
        // differ. Workloads by their cgroup id, which the kernel hands out
        // in sequence, and uid.
        let low = match client {
            Client::Address(IpAddr::V4(v4)) => u32::from(*v4) as usize,
            Client::Address(IpAddr::V6(v6)) => u128::from(*v6) as usize,
            Client::Workload(w) => (w.cgroup_id ^ u64::from(w.uid)) as usize,
        };
        self.shards[low % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `client` on the listener of `mode`: a
    /// permit, or the [`Refusal`] when the proxy or the client is at its cap.
    pub fn admit(self: &Arc<Self>, client: Client, mode: Mode) -> Result<Permit, Refusal> {
        // Counted first and taken back when over: two workers admitting at
        // once cannot both take the last place.
        let before = self.total.fetch_add(1, Ordering::Relaxed);
        if let Some(max) = self.max_total().filter(|m| before >= m.get()) {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::Total { open: before, max });
        }
        let max = self.max();
        let mut shard = self.shard(&client);
        let open = shard.entry(client).or_insert(0);
        if let Some(max) = max.filter(|m| *open >= m.get()) {
            let open = *open;
            drop(shard);
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err(Refusal::Client { open, max });
        }
        *open += 1;
        drop(shard);
        let listener = listener_slot(mode);
        if let Some(g) = self.gauge(listener) {
            g.inc();
        }
        Ok(Permit {
            limit: self.clone(),
            client,
            listener,
        })
    }

    /// How many connections `client` has open.
    #[cfg(test)]
    pub fn open(&self, client: Client) -> u32 {
        self.shard(&client).get(&client).copied().unwrap_or(0)
    }

    /// How many connections are open over all clients.
    #[cfg(test)]
    pub fn open_total(&self) -> u32 {
        self.total.load(Ordering::Relaxed)
    }

    /// How many clients have connections open.
    #[cfg(test)]
    fn clients(&self) -> usize {
        (0..SHARDS)
            .map(|i| self.shards[i].lock().map_or(0, |s| s.len()))
            .sum()
    }

    /// Counts a refusal at `now`; `Some(refusals not yet reported)` when a
    /// warning is due.
    fn note_refusal(&self, refusal: Refusal, now: Instant) -> Option<u64> {
        let warned = match refusal {
            Refusal::Client { .. } => &self.warned,
            Refusal::Total { .. } => &self.warned_total,
        };
        let mut w = warned.lock().unwrap_or_else(|e| e.into_inner());
        w.unreported += 1;
        let due = w.last.is_none_or(|at| now.duration_since(at) >= WARN_EVERY);
        if !due {
            return None;
        }
        w.last = Some(now);
        Some(std::mem::take(&mut w.unreported))
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(g) = self.limit.gauge(self.listener) {
            g.dec();
        }
        self.limit.total.fetch_sub(1, Ordering::Relaxed);
        let mut shard = self.limit.shard(&self.client);
        if let Some(open) = shard.get_mut(&self.client) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                shard.remove(&self.client);
            }
        }
    }
}

tokio::task_local! {
    /// The permit of the connection whose task this is.
    static PERMIT: Arc<Permit>;
}

/// Admits a connection just accepted from `remote` on a listener of
/// `mode`, counted by its address: its permit, under the caps or with none.
/// Over one, the connection is audited and `Err(())` says to close it.
pub(crate) fn admit(shared: &Shared, mode: Mode, remote: SocketAddr) -> Result<Arc<Permit>, ()> {
    admit_client(shared, mode, remote, Client::new(remote.ip(), None), None)
}

/// [`admit`] for a connection counted as `client` (the workload that
/// interception says opened it); `process`, when known, goes into the
/// record of a refusal.
pub(crate) fn admit_client(
    shared: &Shared,
    mode: Mode,
    remote: SocketAddr,
    client: Client,
    process: Option<&ClientProcess>,
) -> Result<Arc<Permit>, ()> {
    if !shared.client_acl.allows(remote.ip()) {
        not_allowed(shared, mode, remote, process);
        return Err(());
    }
    let limit = &shared.client_limit;
    match limit.admit(client, mode) {
        Ok(permit) => Ok(Arc::new(permit)),
        Err(refusal) => {
            refused(shared, limit, mode, remote, client, process, refusal);
            Err(())
        }
    }
}

/// Audits (and, when due, warns about) a connection refused for its
/// client's address (`proxy.client_cidrs`).
fn not_allowed(shared: &Shared, mode: Mode, remote: SocketAddr, process: Option<&ClientProcess>) {
    let mut conn = ConnInfo::new(remote, mode, false, 0);
    conn.client = process.cloned();
    let mut rec = conn.record();
    rec.reject(None, crate::client_acl::REASON, 0);
    rec.error = Some(crate::client_acl::ClientAcl::error(remote.ip()));
    shared.audit.emit(&rec);
    shared.client_acl.refused(remote.ip(), "connection");
}

/// Audits (and, when due, warns about) a connection refused over a cap.
fn refused(
    shared: &Shared,
    limit: &ClientLimit,
    mode: Mode,
    remote: SocketAddr,
    client: Client,
    process: Option<&ClientProcess>,
    why: Refusal,
) {
    let mut conn = ConnInfo::new(remote, mode, false, 0);
    conn.client = process.cloned();
    let mut rec = conn.record();
    let (reason, error) = match why {
        Refusal::Client { open, max } => (
            REASON,
            match client {
                Client::Address(ip) => format!(
                    "{open} connections already open from {ip} (proxy.max_connections_per_client: {max})"
                ),
                Client::Workload(_) => format!(
                    "{open} connections already open from the workload of {client} (proxy.max_connections_per_client: {max})"
                ),
            },
        ),
        Refusal::Total { open, max } => (
            TOTAL_REASON,
            format!("{open} client connections already open in all (proxy.max_connections: {max})"),
        ),
    };
    rec.reject(None, reason, 0);
    rec.error = Some(error);
    shared.audit.emit(&rec);
    if let Some(refused) = limit.note_refusal(why, Instant::now()) {
        match why {
            Refusal::Client { max, .. } => tracing::warn!(
                %client,
                max,
                refused_since_last_warning = refused,
                "refused connections over proxy.max_connections_per_client"
            ),
            Refusal::Total { max, .. } => tracing::warn!(
                max,
                refused_since_last_warning = refused,
                "refused connections over proxy.max_connections"
            ),
        }
    }
}

/// The client the current task's connection is counted as: its permit's
/// (the workload, for a connection eBPF interception redirected), or, in a
/// task that holds none (a CONNECT upgraded through hyper runs in a task of
/// its own), the client at `remote`, which is how those are admitted. The
/// leaf cache gives each such client its own turn to mint
/// (`tls::mint_queue`).
pub(crate) fn current_client(remote: SocketAddr) -> Client {
    PERMIT
        .try_with(|permit| permit.client)
        .unwrap_or_else(|_| Client::new(remote.ip(), None))
}

/// Spawns `serve`, the task of an admitted connection, holding `permit`
/// for as long as it runs; [`Permitted`] takes a share of it.
///
/// `serve` is boxed first. A connection's future is some 12 KiB (the TLS
/// handshake, hyper's connection and the exchange, all inline), and tokio
/// moves a task's future by value several times as it spawns and finishes
/// it (into the task cell, and each stage change writes the whole stage):
/// about 100 KB copied per connection, where the box makes it one copy and
/// pointer moves after that (docs/benchmarks.md, round 28).
pub(crate) fn spawn<F>(permit: Arc<Permit>, serve: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(PERMIT.scope(permit, Box::pin(serve)));
}

/// An I/O stream that holds its connection's permit (the one of the task
/// that made it, if any): a socket hyper hands on to an upgrade stays
/// counted until it is closed, after the connection's task has ended.
pub(crate) struct Permitted<I> {
    io: I,
    _permit: Option<Arc<Permit>>,
}

impl<I> Permitted<I> {
    /// `io` with the current task's permit.
    pub(crate) fn new(io: I) -> Self {
        Permitted {
            io,
            _permit: PERMIT.try_with(Arc::clone).ok(),
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Permitted<I> {
    #[inline]
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Permitted<I> {
    #[inline]
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    #[inline]
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    #[inline]
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    #[inline]
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    #[inline]
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
