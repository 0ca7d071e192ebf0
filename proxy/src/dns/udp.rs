//! DNS over UDP, served here rather than by hickory's server, so that each
//! answer is encoded once by [`super::encode`] (names compressed against the
//! question; the size checked is the size sent) instead of measured by one
//! encoding and sent as another.
//!
//! As with hickory's server: each datagram is answered in its own task, a
//! datagram shorter than a DNS header gets nothing, and nothing is sent to
//! an address no answer can reach (port 0, the unspecified address, IPv4
//! broadcast). The tasks still running when the server stops are aborted.
//! A client flooding the socket while the server is behind loses its
//! queries over its share, not the other clients theirs ([`super::udp_fair`]);
//! a client is its address, or for a datagram from this host that
//! interception redirected, the workload that sent it, looked up only when
//! it matters (while the server is behind, or for a query that goes
//! upstream: [`super::asker`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use hickory_server::net::xfer::Protocol;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::asker::{Asker, Senders};
use super::handler::Handler;
use super::udp_fair::{Budgets, BURST, RATE, READ_BATCH};
use crate::client_acl::ClientAcl;
use crate::intercept::Client;
use crate::ops::warn_every::WarnEvery;

/// The longest query read; the rest of a longer datagram is cut (as
/// hickory's server read), and what is left does not decode: FORMERR.
const MAX_QUERY: usize = 4096;

/// The length of a DNS header: a shorter datagram gets no answer.
const HEADER_LEN: usize = 12;

/// Answers the queries arriving on `socket` until `stop` is cancelled.
///
/// The socket is read in batches: one awaited read, then what is already
/// waiting, up to [`READ_BATCH`]. A batch that fills means the server is
/// behind, and then a client over its budget loses its queries as they
/// are read ([`super::udp_fair`]). `senders` names the workloads of
/// redirected datagrams once interception is attached.
pub(crate) async fn serve(
    socket: UdpSocket,
    handler: Arc<Handler>,
    senders: Senders,
    clients: Arc<ClientAcl>,
    stop: CancellationToken,
) {
    // Only for the datagrams' tuple, and a bound socket has its address.
    let bound = socket
        .local_addr()
        .unwrap_or_else(|_| (Ipv4Addr::UNSPECIFIED, 0).into());
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; MAX_QUERY];
    let mut tasks = JoinSet::new();
    let failures = WarnEvery::new(std::time::Duration::from_secs(60));
    let shedding = WarnEvery::new(std::time::Duration::from_secs(60));
    let mut budgets = Budgets::new();
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => break,
            received = socket.recv_from(&mut buf) => received,
        };
        let mut read = 0;
        let mut next = Some(first);
        while let Some(received) = next.take() {
            match received {
                Ok((n, peer)) => {
                    read += 1;
                    let to = Take {
                        socket: &socket,
                        handler: &handler,
                        senders: &senders,
                        clients: &clients,
                        bound,
                    };
                    take(&buf[..n], peer, &to, &mut budgets, &mut tasks);
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    if let Some(held_back) = failures.due(std::time::Instant::now()) {
                        warn!(%error, held_back,
                            "dns udp receive failed (warned at most once a minute)");
                    }
                    // Whatever it is (no memory for the datagram, a socket
                    // error), do not spin on it.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    break;
                }
            }
            if read < READ_BATCH {
                next = Some(socket.try_recv_from(&mut buf));
            }
        }
        budgets.set_behind(read >= READ_BATCH);
        let shed = budgets.take_shed();
        if shed > 0 {
            handler.stats().shed.fetch_add(shed, Ordering::Relaxed);
            if let Some(held_back) = shedding.due(std::time::Instant::now()) {
                warn!(
                    dropped = shed,
                    held_back,
                    rate = RATE,
                    burst = BURST,
                    "dns udp server behind: dropped queries of clients over their share (warned at most once a minute)"
                );
            }
        }
        while tasks.try_join_next().is_some() {}
    }
}

/// What answering a datagram needs from the server.
struct Take<'a> {
    socket: &'a Arc<UdpSocket>,
    handler: &'a Arc<Handler>,
    senders: &'a Senders,
    clients: &'a ClientAcl,
    /// The socket's own address.
    bound: SocketAddr,
}

/// Answers one datagram from `peer` in a task of its own, unless it cannot
/// be answered, comes from a client outside `proxy.client_cidrs` (no answer:
/// a REFUSED would still reflect a spoofed query at its victim), or its
/// client is over its budget while the server is behind.
fn take(
    datagram: &[u8],
    peer: SocketAddr,
    to: &Take<'_>,
    budgets: &mut Budgets,
    tasks: &mut JoinSet<()>,
) {
    if datagram.len() < HEADER_LEN || !reachable(peer) {
        debug!(%peer, len = datagram.len(), "dns udp datagram ignored");
        return;
    }
    if !to.clients.allows(peer.ip()) {
        to.handler
            .stats()
            .client_not_allowed
            .fetch_add(1, Ordering::Relaxed);
        to.clients.refused(peer.ip(), "dns query");
        return;
    }
    let local = destination(to.bound, peer);
    // Whose budget: the workload's only while the server is behind (the
    // budget is enforced only then; the lookup is a system call).
    let asker = if budgets.behind() {
        Asker::Known(Client::of_datagram(
            to.senders.get().map(|s| &**s),
            peer,
            local,
        ))
    } else {
        Asker::Datagram {
            peer,
            local,
            senders: to.senders.clone(),
        }
    };
    let client = match &asker {
        Asker::Known(client) => *client,
        Asker::Datagram { .. } => Client::new(peer.ip(), None),
    };
    if !budgets.admit(client, std::time::Instant::now()) {
        return;
    }
    let query = datagram.to_vec();
    let (socket, handler) = (to.socket.clone(), to.handler.clone());
    tasks.spawn(async move {
        if let Some(answer) = handler.respond(query, peer, Protocol::Udp, &asker).await {
            if let Err(error) = socket.send_to(&answer, peer).await {
                debug!(%peer, %error, "sending dns answer failed");
            }
        }
    });
}

/// The address a datagram from `peer` was sent to, as the kernel's record
/// of it names it: the socket's own, or, for a socket bound to the
/// unspecified address, loopback (where interception sends the queries it
/// redirects to such a listener).
fn destination(bound: SocketAddr, peer: SocketAddr) -> SocketAddr {
    if !bound.ip().is_unspecified() {
        return bound;
    }
    let ip: IpAddr = match crate::rules::canonical_ip(peer.ip()) {
        IpAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
        IpAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
    };
    SocketAddr::new(ip, bound.port())
}

/// Whether an answer to `peer` can arrive anywhere.
fn reachable(peer: SocketAddr) -> bool {
    if peer.port() == 0 {
        return false;
    }
    match peer.ip() {
        IpAddr::V4(ip) => !ip.is_unspecified() && !ip.is_broadcast(),
        IpAddr::V6(ip) => !ip.is_unspecified(),
    }
}
