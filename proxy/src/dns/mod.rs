//! The built-in DNS server (config section `dns:`).
//!
//! Every name resolves to the proxy (`proxy_ip`, and `proxy_ip6` for AAAA), so
//! workloads that use this server connect to the proxy's listeners. Names that
//! match a `passthrough` glob are forwarded to the upstream resolver and
//! answered exactly as it answered (TTLs included); static `records` take
//! precedence over both. An intercepted name is never sent upstream by any
//! path, so DNS is not an exfiltration channel (see `docs/dns.md`).
//!
//! Layout: [`policy`] decides what a name gets, [`forward`] talks to the
//! upstream resolver, [`handler`] glues both into the answer to a query,
//! [`encode`] puts it on the wire, [`bind`] binds the sockets, [`udp`] and
//! [`tcp`] serve them ([`clients`]: the TCP bounds), and this file starts
//! the server and holds the public API.

mod asker;
mod bind;
mod clients;
mod encode;
mod forward;
mod handler;
mod policy;
mod stats;
mod tcp;
mod udp;
mod udp_fair;

#[cfg(test)]
mod tests;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::TokioResolver;
use tracing::{info, warn};

use crate::rules::HostPattern;

pub use crate::intercept::{ClientIdentity, DatagramIdentity, Workload};
pub use stats::{DnsStats, DnsStatsSnapshot};

/// How long a passthrough query may wait for the upstream resolver before the
/// client gets SERVFAIL. Other queries never wait on it: each query runs in its
/// own task.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// TTL of the answers this server makes up (intercepted names, static records).
pub const LOCAL_TTL: u32 = 60;

/// The receive buffer requested for each UDP socket. The kernel default
/// (`net.core.rmem_default`, often 208 KiB) queues only about 256 small
/// queries, so a burst from a busy workload (a build resolving hundreds of
/// names at once) was dropped before the server could read it. The kernel
/// caps the request at `net.core.rmem_max` (and reports double what it
/// grants); we never change sysctls, only ask.
pub const UDP_RECV_BUFFER: usize = 4 << 20;

/// Idle timeout of a client's TCP connection to this server.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runtime settings of the DNS server, mapped from the `dns:` config section.
#[derive(Debug, Clone)]
pub struct DnsSettings {
    /// Addresses to serve on; each gets a UDP socket and a TCP listener on the same port.
    pub listen: Vec<SocketAddr>,
    /// The answer to every intercepted A query.
    pub proxy_ip: Ipv4Addr,
    /// The answer to every intercepted AAAA query; `None` gives an empty NOERROR.
    pub proxy_ip6: Option<Ipv6Addr>,
    /// Where passthrough names are forwarded; `None` uses the nameservers in /etc/resolv.conf.
    pub upstream: Option<SocketAddr>,
    /// Globs of names forwarded to the upstream instead of being intercepted.
    pub passthrough: Vec<HostPattern>,
    /// Static records; they take precedence over passthrough and interception.
    pub records: Vec<StaticRecord>,
    /// Give every socket the `SO_PRIORITY` mark the interception programs
    /// look for ([`crate::intercept::mark_listener`]), so that they redirect
    /// port 53 only to these sockets and not to one another process bound
    /// at the same address while the proxy was down. Needs
    /// `CAP_NET_ADMIN`; set when interception redirects DNS here.
    pub mark_as_proxy: bool,
    /// The client addresses answered (`proxy.client_cidrs`, shared with the
    /// listeners so that a reload changes both): a query from any other
    /// address gets no answer, a TCP connection from one is closed.
    pub clients: std::sync::Arc<crate::client_acl::ClientAcl>,
}

/// One entry of `dns.records[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StaticRecord {
    /// `type: A`: `name` resolves to `ip` (several A entries for one name all answer).
    A {
        /// Owner name, such as `db.internal`.
        name: String,
        /// The address returned.
        ip: Ipv4Addr,
    },
    /// `type: CNAME`: `name` is an alias of `target`, which is resolved by the same rules.
    Cname {
        /// Owner name.
        name: String,
        /// Canonical name the alias points to.
        target: String,
    },
}

/// Errors of the DNS server and of the upstream resolver helper.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// `dns.listen` is empty.
    #[error("no listen address for the dns server")]
    NoListen,
    /// A UDP socket or TCP listener could not be bound.
    #[error("binding dns {proto} socket on {addr}")]
    Bind {
        /// "udp" or "tcp".
        proto: &'static str,
        /// The listen address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A socket could not be given the interception programs' mark.
    #[error("marking the dns {proto} socket on {addr} as the proxy's (SO_PRIORITY, needs CAP_NET_ADMIN)")]
    Mark {
        /// "udp" or "tcp".
        proto: &'static str,
        /// The listen address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A static record's name or CNAME target is not a valid host name.
    #[error("invalid name {0:?} in dns.records")]
    RecordName(String),
    /// A name has a CNAME record and another record, or two CNAME records.
    #[error("dns.records: {0:?} has a CNAME and other records")]
    CnameConflict(String),
    /// Static CNAME records form a loop or a chain longer than the limit.
    #[error("dns.records: CNAME chain from {0:?} loops or is too long")]
    CnameLoop(String),
    /// /etc/resolv.conf could not be read or parsed.
    #[error("reading the system resolver configuration")]
    SystemConfig(#[source] NetError),
    /// The hickory resolver could not be built.
    #[error("building the upstream resolver")]
    Resolver(#[source] NetError),
    /// No upstream nameserver is available for a passthrough query.
    #[error("no upstream nameserver configured")]
    NoUpstream,
    /// Too many passthrough queries are already waiting on the upstream.
    #[error("too many upstream queries in flight")]
    UpstreamBusy,
    /// Too many of this client's passthrough queries are already waiting on the upstream.
    #[error("too many upstream queries in flight for this client")]
    ClientUpstreamBusy,
    /// The upstream did not answer in time.
    #[error("upstream {0} timed out")]
    UpstreamTimeout(SocketAddr),
    /// Talking to the upstream failed.
    #[error("upstream {addr} i/o")]
    UpstreamIo {
        /// The upstream nameserver.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The upstream sent something that is not a valid answer to our query.
    #[error("upstream {addr} sent an invalid answer: {reason}")]
    UpstreamInvalid {
        /// The upstream nameserver.
        addr: SocketAddr,
        /// What was wrong.
        reason: String,
    },
    /// A server task panicked.
    #[error("dns server task failed")]
    Server(#[source] tokio::task::JoinError),
}

/// A running DNS server. Dropping it without [`DnsServer::shutdown`] leaves the
/// sockets served until the runtime stops.
pub struct DnsServer {
    /// Stops the UDP and TCP loops ([`udp`], [`tcp`]).
    stop: tokio_util::sync::CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Who opened a TCP connection, once interception can tell.
    identity: clients::Identity,
    /// Who sent a datagram, likewise.
    senders: asker::Senders,
    local_addrs: Vec<SocketAddr>,
    stats: Arc<DnsStats>,
}

impl DnsServer {
    /// Binds UDP and TCP on every listen address and starts serving.
    ///
    /// Fails on invalid static records (bad names, CNAME conflicts or loops)
    /// and on bind errors; nothing is served unless every socket is bound.
    pub async fn start(settings: DnsSettings) -> Result<DnsServer, DnsError> {
        if settings.listen.is_empty() {
            return Err(DnsError::NoListen);
        }
        let policy = policy::Policy::new(&settings)?;
        let any_v4 = settings.listen.iter().any(SocketAddr::is_ipv4);
        let mut sockets = Vec::with_capacity(settings.listen.len());
        for addr in &settings.listen {
            sockets.push(bind::bind_pair(*addr, any_v4, settings.mark_as_proxy)?);
        }
        let local_addrs: Vec<SocketAddr> = sockets.iter().map(|(_, _, a)| *a).collect();

        let servers = match settings.upstream {
            Some(up) => vec![up],
            None if settings.passthrough.is_empty() => Vec::new(),
            None => system_nameservers(&local_addrs)?,
        };
        if !settings.passthrough.is_empty() && servers.is_empty() {
            warn!("dns passthrough is configured but no upstream nameserver is usable; passthrough names will get SERVFAIL");
        }
        let stats = Arc::new(DnsStats::default());
        let forwarder = forward::Forwarder::new(servers, UPSTREAM_TIMEOUT);
        let handler = Arc::new(handler::Handler::new(policy, forwarder, stats.clone()));
        let stop = tokio_util::sync::CancellationToken::new();
        let identity = clients::Identity::default();
        let senders = asker::Senders::default();
        let mut tasks = Vec::with_capacity(2 * sockets.len());
        for (udp, tcp, addr) in sockets {
            tasks.push(tokio::spawn(udp::serve(
                udp,
                handler.clone(),
                senders.clone(),
                settings.clients.clone(),
                stop.clone(),
            )));
            tasks.push(tokio::spawn(tcp::serve(
                tcp,
                handler.clone(),
                identity.clone(),
                settings.clients.clone(),
                stop.clone(),
            )));
            info!(%addr, "dns server listening (udp, tcp)");
        }
        Ok(DnsServer {
            stop,
            tasks,
            identity,
            senders,
            local_addrs,
            stats,
        })
    }

    /// The bound addresses, in `listen` order (port 0 replaced by the real port).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Bounds the TCP connections of each workload `identity` names (its uid
    /// and cgroup), and keeps the UDP budget and the passthrough share of
    /// each workload `senders` names, on their own rather than those of
    /// each client address: every workload whose DNS interception
    /// redirects on this host reaches the server from the same loopback
    /// address. Set once interception is attached; a second call changes
    /// nothing and returns false.
    pub fn identify_clients(
        &self,
        identity: Arc<dyn ClientIdentity>,
        senders: Arc<dyn DatagramIdentity>,
    ) -> bool {
        let tcp = self.identity.set(identity).is_ok();
        self.senders.set(senders).is_ok() && tcp
    }

    /// Counters per outcome, shared with the metrics exporter.
    pub fn stats(&self) -> Arc<DnsStats> {
        self.stats.clone()
    }

    /// Stops accepting queries and waits for the server tasks to end (the
    /// queries still being answered are dropped).
    pub async fn shutdown(self) -> Result<(), DnsError> {
        self.stop.cancel();
        let mut failed = None;
        for t in self.tasks {
            if let Err(e) = t.await {
                failed.get_or_insert(e);
            }
        }
        failed.map_or(Ok(()), |e| Err(DnsError::Server(e)))
    }
}

/// Builds the resolver the proxy uses to dial upstreams: `upstream` over UDP
/// and TCP when given, else the OS configuration (/etc/resolv.conf). hickory's
/// cache respects the answers' TTLs.
pub fn build_resolver(upstream: Option<SocketAddr>) -> Result<TokioResolver, DnsError> {
    let builder = match upstream {
        Some(addr) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![ns]),
                TokioRuntimeProvider::default(),
            )
        }
        None => TokioResolver::builder_tokio().map_err(DnsError::SystemConfig)?,
    };
    builder.build().map_err(DnsError::Resolver)
}

/// Nameservers from /etc/resolv.conf, minus this server itself (a host where
/// iron-proxy owns the system DNS would otherwise forward to itself forever).
fn system_nameservers(own: &[SocketAddr]) -> Result<Vec<SocketAddr>, DnsError> {
    let (config, _) =
        hickory_resolver::system_conf::read_system_conf().map_err(DnsError::SystemConfig)?;
    let mut out: Vec<SocketAddr> = Vec::new();
    for ns in config.name_servers() {
        let port = ns.connections.first().map_or(53, |c| c.port);
        let addr = SocketAddr::new(ns.ip, port);
        let is_self = own.iter().any(|o| {
            o.port() == addr.port()
                && (o.ip() == addr.ip() || (o.ip().is_unspecified() && addr.ip().is_loopback()))
        });
        if is_self {
            warn!(%addr, "ignoring system nameserver: it is this dns server");
        } else if !out.contains(&addr) {
            out.push(addr);
        }
    }
    Ok(out)
}
