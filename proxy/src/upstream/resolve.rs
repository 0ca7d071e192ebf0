//! The proxy's own name resolution for dialing upstreams: hickory-resolver with
//! its TTL-respecting cache, pointed at `dns.upstream_resolver` when set and at
//! the OS configuration otherwise. Names are resolved only after the pipeline
//! allowed the request, so a denied name never leaves the proxy.
//!
//! Each lookup that reaches the network holds a socket (two: A and AAAA)
//! until the resolver answers or hickory gives up, so the lookups in flight
//! are bounded as the DNS server's forwarded queries are
//! ([`crate::dns`]'s `forward.rs`): [`MAX_IN_FLIGHT`] in all, and
//! [`MAX_IN_FLIGHT_PER_CLIENT`] for the requests of one client, so that one
//! workload allowed `*.example.com` asking for made-up names against a slow
//! resolver cannot take every place and leave every other workload's new
//! names unresolved. The places are fair turns ([`crate::turns`]), each
//! first come first served; a lookup waits at most [`TURN_WAIT`] for one,
//! then its request is answered 503 `dns_lookup_busy`. A client is what
//! `proxy.max_connections_per_client` counts by ([`Client`]): a dial made
//! for a client connection names its client ([`Resolver::lookup_for`],
//! through [`Dialer::for_client`](super::Dialer::for_client)); the shared
//! pools' dials, whose connector serves every client, take it from the
//! task the request runs in ([`on_behalf_of`]); lookups for neither (a
//! secret source's backend, a background refresh) share
//! [`Client::UNKNOWN`]'s turns.
//!
//! hickory looks in its cache inside the lookup and has no way to ask the
//! cache alone, so a name it has cached takes a turn too: held for the
//! microseconds the cache takes to answer, it waits only while its client's
//! share, or every place, is taken.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;

use crate::intercept::Client;
use crate::turns::Turns;

/// Lookups in flight at once, over all clients.
pub const MAX_IN_FLIGHT: usize = 256;

/// Lookups in flight at once for the requests of one client: a quarter of
/// [`MAX_IN_FLIGHT`], so that at least three others asking as much still
/// find room (a build resolving a hundred new names at once waits only
/// for its own earlier lookups).
pub const MAX_IN_FLIGHT_PER_CLIENT: usize = MAX_IN_FLIGHT / 4;

/// How long a lookup may wait for its turn before its request is refused:
/// the time the DNS server gives a forwarded query
/// ([`crate::dns::UPSTREAM_TIMEOUT`]).
pub const TURN_WAIT: Duration = crate::dns::UPSTREAM_TIMEOUT;

/// Errors building the resolver or resolving a name.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The resolver could not be built (for example, unreadable resolv.conf).
    #[error("building the resolver")]
    Build(#[source] crate::dns::DnsError),
    /// The lookup failed or returned no address.
    #[error("resolving {name}: {detail}")]
    Lookup {
        /// The name looked up.
        name: String,
        /// What went wrong.
        detail: String,
    },
    /// The lookup found no turn within the wait: its client's share of the
    /// lookups in flight, or all of them, stayed taken.
    #[error(
        "resolving {name}: no turn among the lookups in flight within {waited:?} \
         ({per_client} per client, {total} in all)"
    )]
    Busy {
        /// The name looked up.
        name: String,
        /// How long it waited.
        waited: Duration,
        /// The per-client share.
        per_client: usize,
        /// The places in all.
        total: usize,
    },
}

tokio::task_local! {
    /// The client whose request the lookups of this task are made for.
    static ASKER: Client;
}

/// `f`, with its lookups counted as `client`'s. Not an `async fn`: its
/// future would hold `f` twice (as the argument and inside the scope), and
/// a request's future is moved whole several times.
pub fn on_behalf_of<F: Future>(client: Client, f: F) -> impl Future<Output = F::Output> {
    ASKER.scope(client, f)
}

/// Resolves upstream host names.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
    turns: Arc<Turns>,
    per_client: usize,
    total: usize,
    wait: Duration,
    /// Lookups refused for want of a turn.
    busy: Arc<AtomicU64>,
}

impl Resolver {
    /// A resolver using `upstream` (UDP and TCP) or, when `None`, the OS configuration.
    pub fn new(upstream: Option<SocketAddr>) -> Result<Self, ResolveError> {
        Self::bounded(upstream, MAX_IN_FLIGHT, MAX_IN_FLIGHT_PER_CLIENT, TURN_WAIT)
    }

    /// Like [`new`](Self::new) with the bounds given.
    fn bounded(
        upstream: Option<SocketAddr>,
        total: usize,
        per_client: usize,
        wait: Duration,
    ) -> Result<Self, ResolveError> {
        Ok(Resolver {
            inner: crate::dns::build_resolver(upstream).map_err(ResolveError::Build)?,
            turns: Turns::new(total, per_client),
            per_client,
            total,
            wait,
            busy: Arc::default(),
        })
    }

    /// Lookups in flight now (a gauge).
    pub fn in_flight(&self) -> u64 {
        self.turns.in_use() as u64
    }

    /// Lookups refused since start for want of a turn (a counter).
    pub fn busy(&self) -> u64 {
        self.busy.load(Ordering::Relaxed)
    }

    /// All addresses of `host` (A and AAAA), looked up in a turn of the
    /// client [`on_behalf_of`] names, or of [`Client::UNKNOWN`]. An IP
    /// literal resolves to itself.
    pub async fn lookup(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let client = ASKER.try_with(|c| *c).unwrap_or(Client::UNKNOWN);
        self.lookup_for(host, client).await
    }

    /// All addresses of `host` (A and AAAA), looked up in a turn of
    /// `client`. An IP literal resolves to itself.
    pub async fn lookup_for(
        &self,
        host: &str,
        client: Client,
    ) -> Result<Vec<IpAddr>, ResolveError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        let turn = async {
            let mine = self.turns.client_turn(client).await.ok()?;
            mine.slot().await.ok()
        };
        let Ok(Some(_turn)) = tokio::time::timeout(self.wait, turn).await else {
            self.busy.fetch_add(1, Ordering::Relaxed);
            return Err(ResolveError::Busy {
                name: host.to_string(),
                waited: self.wait,
                per_client: self.per_client,
                total: self.total,
            });
        };
        // A trailing dot makes the name fully qualified, so search domains never apply.
        let fqdn = format!("{host}.");
        let found =
            self.inner
                .lookup_ip(fqdn.as_str())
                .await
                .map_err(|e| ResolveError::Lookup {
                    name: host.to_string(),
                    detail: describe::lookup_failure(&e),
                })?;
        let ips: Vec<IpAddr> = found.iter().collect();
        if ips.is_empty() {
            return Err(ResolveError::Lookup {
                name: host.to_string(),
                detail: "no addresses".into(),
            });
        }
        Ok(ips)
    }
}

mod describe;
#[cfg(test)]
mod tests;
