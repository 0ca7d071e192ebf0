//! DNS over UDP, served here rather than by hickory's server, so that each
//! answer is encoded once by [`super::encode`] (names compressed against the
//! question; the size checked is the size sent) instead of measured by one
//! encoding and sent as another.
//!
//! As with hickory's server: each datagram is answered in its own task, a
//! datagram shorter than a DNS header gets nothing, and nothing is sent to
//! an address no answer can reach (port 0, the unspecified address, IPv4
//! broadcast). The tasks still running when the server stops are aborted.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_server::net::xfer::Protocol;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::handler::Handler;
use crate::ops::warn_every::WarnEvery;

/// The longest query read; the rest of a longer datagram is cut (as
/// hickory's server read), and what is left does not decode: FORMERR.
const MAX_QUERY: usize = 4096;

/// The length of a DNS header: a shorter datagram gets no answer.
const HEADER_LEN: usize = 12;

/// Answers the queries arriving on `socket` until `stop` is cancelled.
pub(crate) async fn serve(socket: UdpSocket, handler: Arc<Handler>, stop: CancellationToken) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; MAX_QUERY];
    let mut tasks = JoinSet::new();
    let failures = WarnEvery::new(std::time::Duration::from_secs(60));
    loop {
        let (n, peer) = tokio::select! {
            () = stop.cancelled() => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                Err(error) => {
                    if let Some(held_back) = failures.due(std::time::Instant::now()) {
                        warn!(%error, held_back,
                            "dns udp receive failed (warned at most once a minute)");
                    }
                    // Whatever it is (no memory for the datagram, a socket
                    // error), do not spin on it.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if n < HEADER_LEN || !reachable(peer) {
            debug!(%peer, len = n, "dns udp datagram ignored");
            continue;
        }
        let query = buf[..n].to_vec();
        let (socket, handler) = (socket.clone(), handler.clone());
        tasks.spawn(async move {
            if let Some(answer) = handler.respond(query, peer, Protocol::Udp).await {
                if let Err(error) = socket.send_to(&answer, peer).await {
                    debug!(%peer, %error, "sending dns answer failed");
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
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
