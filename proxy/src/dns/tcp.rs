//! DNS over TCP, served here rather than by hickory's listener, for two
//! bounds a workload could otherwise break:
//!
//! - **Connections.** hickory accepts every connection: a workload that
//!   opened thousands and sent a query every few seconds held one
//!   descriptor each, until the proxy had none left for its HTTP listeners.
//!   Here at most [`MAX_CONNECTIONS`] are open at once, and
//!   [`MAX_PER_CLIENT`] from one client (Unbound's `incoming-num-tcp`,
//!   BIND's `tcp-clients`): one address, or one workload that interception
//!   identifies ([`super::clients`]); one over is closed at once.
//! - **Pipelining.** hickory answered a connection's queries one after the
//!   other, so a passthrough query waiting on a slow upstream held up the
//!   intercepted ones behind it. Here each query is answered as soon as it
//!   is resolved, in any order (RFC 7766 §6.2.1.1), with at most
//!   [`MAX_IN_FLIGHT`] per connection.
//!
//! Framing and idle handling are as before: two-byte lengths, and a
//! connection that sends no complete query for [`super::TCP_IDLE_TIMEOUT`]
//! is closed. The answers come from the same [`Handler`] as over UDP.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use hickory_server::net::xfer::Protocol;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::asker::Asker;
use super::clients::{admit, Client, Identity, Open, MAX_CONNECTIONS, MAX_PER_CLIENT};
use super::handler::Handler;
use crate::client_acl::ClientAcl;
use crate::ops::warn_every::WarnEvery;

/// Queries of one connection being answered at once; the next waits.
const MAX_IN_FLIGHT: usize = 16;

/// Accepts on `listener` until `stop` is cancelled; each connection's
/// queries are answered by `handler`.
pub(crate) async fn serve(
    listener: TcpListener,
    handler: Arc<Handler>,
    identity: Identity,
    clients: Arc<ClientAcl>,
    stop: CancellationToken,
) {
    let open = Arc::new(Mutex::new(Open::default()));
    let refusals = WarnEvery::new(std::time::Duration::from_secs(60));
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // EMFILE and the like: back off a little, keep serving.
                    warn!(%error, "dns tcp accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !clients.allows(peer.ip()) {
            // Closed unread: a client outside `proxy.client_cidrs`.
            handler
                .stats()
                .client_not_allowed
                .fetch_add(1, Ordering::Relaxed);
            clients.refused(peer.ip(), "dns connection");
            drop(stream);
            continue;
        }
        let client = Client::identified(identity.get().map(|i| &**i), peer, || {
            stream.local_addr().ok()
        });
        let Some(slot) = admit(&open, client) else {
            if let Some(held_back) = refusals.due(std::time::Instant::now()) {
                warn!(
                    %client,
                    held_back,
                    max = MAX_CONNECTIONS,
                    max_per_client = MAX_PER_CLIENT,
                    "dns tcp connection refused: too many open (warned at most once a minute)"
                );
            }
            drop(stream);
            continue;
        };
        let (handler, stop) = (handler.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = connection(stream, peer, client, handler) => {}
                () = stop.cancelled() => {}
            }
            drop(slot);
        });
    }
}

/// Reads `stream`'s queries and answers each as soon as it is resolved;
/// they count for `client` (its share of the upstream exchanges).
async fn connection(stream: TcpStream, peer: SocketAddr, client: Client, handler: Arc<Handler>) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(async move {
        while let Some(answer) = rx.recv().await {
            let Ok(len) = u16::try_from(answer.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(answer.len() + 2);
            framed.extend_from_slice(&len.to_be_bytes());
            framed.extend_from_slice(&answer);
            // A client that stops reading its answers holds nothing past
            // the idle timeout: the connection (and its slot) ends.
            let write = tokio::time::timeout(super::TCP_IDLE_TIMEOUT, wr.write_all(&framed));
            if !matches!(write.await, Ok(Ok(()))) {
                return;
            }
        }
    });
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let Some(query) = read_frame(&mut rd).await else {
            break;
        };
        let (handler, tx) = (handler.clone(), tx.clone());
        tokio::spawn(async move {
            let asker = Asker::Known(client);
            if let Some(answer) = handler.respond(query, peer, Protocol::Tcp, &asker).await {
                let _ = tx.send(answer).await;
            }
            drop(permit);
        });
    }
    // The queries still being answered hold their senders: the writer sends
    // their answers, then ends (or gives up on a client that reads nothing).
    drop(tx);
    let _ = writer.await;
}

/// One length-prefixed message, within the idle timeout; `None` at the
/// connection's end, on a timeout or an empty frame.
async fn read_frame(rd: &mut tokio::net::tcp::OwnedReadHalf) -> Option<Vec<u8>> {
    let read = async {
        let mut len = [0u8; 2];
        rd.read_exact(&mut len).await.ok()?;
        let len = usize::from(u16::from_be_bytes(len));
        if len == 0 {
            return None;
        }
        let mut buf = vec![0u8; len];
        rd.read_exact(&mut buf).await.ok()?;
        Some(buf)
    };
    tokio::time::timeout(super::TCP_IDLE_TIMEOUT, read)
        .await
        .ok()
        .flatten()
}
