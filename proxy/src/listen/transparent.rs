//! `intercept.listen`: connections redirected by eBPF (or nftables REDIRECT).
//! The original destination comes from the interception maps (or from
//! `SO_ORIGINAL_DST`); the proxy then dials the name the client asked for
//! (SNI or Host), never the IP it connected to.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use super::sniffed::{Intake, KnownDest};
use crate::audit::{ClientProcess, Mode};
use crate::exchange::ConnInfo;
use crate::intercept::{Client, Workload};

/// Where a redirected connection was going, and who made it.
#[derive(Debug, Clone)]
pub struct Redirected {
    /// The original destination.
    pub dst: SocketAddr,
    /// The process, when the interception layer recorded it.
    pub client: Option<ClientProcess>,
    /// The id of the process's cgroup when its name (`client.cgroup`) is
    /// still to be found: a walk of the cgroup hierarchy, which
    /// [`find_origin`] runs on the blocking pool.
    pub unnamed_cgroup: Option<u64>,
    /// The workload (uid and cgroup id) the interception record names:
    /// what `proxy.max_connections_per_client` counts the connection by
    /// instead of its loopback address.
    pub workload: Option<Workload>,
}

/// Finds the original destination of an accepted, redirected connection.
pub trait OriginLookup: Send + Sync {
    /// `peer` is the client's address, `local` the listener side of the accepted socket.
    fn lookup(&self, stream: &TcpStream, peer: SocketAddr, local: SocketAddr)
        -> Option<Redirected>;

    /// True when `lookup` may block for a while (scanning /proc): it then
    /// runs on the blocking pool instead of a runtime worker.
    fn blocking(&self) -> bool {
        false
    }
}

/// Runs `lookup` for one accepted connection on the blocking pool (it may
/// block: nftables attribution scans /proc).
async fn find_origin_blocking(
    lookup: Arc<dyn OriginLookup>,
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
) -> Option<(TcpStream, Option<Redirected>)> {
    tokio::task::spawn_blocking(move || {
        let origin = lookup.lookup(&stream, peer, local);
        (stream, origin)
    })
    .await
    .ok()
}

/// Names the cgroup of `origin`'s process when the lookup left it to do
/// (a walk of the cgroup hierarchy, on the blocking pool).
async fn name_cgroup(origin: &mut Redirected) {
    let Some(id) = origin.unnamed_cgroup.take() else {
        return;
    };
    let name = tokio::task::spawn_blocking(move || crate::intercept::cgroup_name(id))
        .await
        .ok()
        .flatten();
    if let Some(client) = origin.client.as_mut() {
        client.cgroup = name.unwrap_or_default();
    }
}

/// `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST` on the accepted socket: answered
/// by conntrack after an nftables REDIRECT, or by the eBPF getsockopt program.
pub struct SockoptLookup;

impl OriginLookup for SockoptLookup {
    fn lookup(
        &self,
        stream: &TcpStream,
        _peer: SocketAddr,
        local: SocketAddr,
    ) -> Option<Redirected> {
        use nix::sys::socket::{getsockopt, sockopt};
        let fd = stream.as_fd();
        let dst = if local.is_ipv4() {
            let sin = getsockopt(&fd, sockopt::OriginalDst).ok()?;
            SocketAddr::from((
                std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            ))
        } else {
            let sin6 = getsockopt(&fd, sockopt::Ip6tOriginalDst).ok()?;
            SocketAddr::from((
                std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
            ))
        };
        Some(Redirected {
            dst,
            client: None,
            unnamed_cgroup: None,
            workload: None,
        })
    }
}

/// Accepts redirected connections until the task is dropped.
///
/// A lookup that does not block (the eBPF maps: one system call) runs here,
/// before the connection is admitted: the record it takes out of the map
/// names the workload, which `proxy.max_connections_per_client` counts the
/// connection by (every redirected connection comes from loopback). One
/// that may block (nftables) runs in the connection's task, so it never
/// holds up the accept loop, and the connection is counted by its address.
pub async fn run(listener: TcpListener, intake: Intake, lookup: Arc<dyn OriginLookup>) {
    let mut errors = super::accept::AcceptErrors::new("transparent");
    loop {
        let (stream, remote) = errors.accept(&listener).await;
        let local = match stream.local_addr() {
            Ok(l) => l,
            Err(_) => continue,
        };
        if lookup.blocking() {
            let Ok(permit) = super::per_client::admit(&intake.shared, Mode::Transparent, remote)
            else {
                continue;
            };
            let (intake, lookup) = (intake.clone(), lookup.clone());
            super::per_client::spawn(permit, async move {
                if let Some((stream, found)) =
                    find_origin_blocking(lookup, stream, remote, local).await
                {
                    serve(stream, remote, found, intake).await;
                }
            });
            continue;
        }
        let found = lookup.lookup(&stream, remote, local);
        let client = Client::new(remote.ip(), found.as_ref().and_then(|o| o.workload));
        let process = found.as_ref().and_then(|o| o.client.as_ref());
        let Ok(permit) = super::per_client::admit_client(
            &intake.shared,
            Mode::Transparent,
            remote,
            client,
            process,
        ) else {
            continue;
        };
        let intake = intake.clone();
        super::per_client::spawn(permit, async move {
            serve(stream, remote, found, intake).await;
        });
    }
}

/// Serves a redirected connection to `found`'s destination, or refuses it
/// when nothing was recorded for it.
async fn serve(stream: TcpStream, remote: SocketAddr, found: Option<Redirected>, intake: Intake) {
    let Some(mut origin) = found else {
        // Nothing recorded: not a redirected connection. Refuse rather than guess.
        let conn = ConnInfo::new(remote, Mode::Transparent, false, 0);
        let mut rec = conn.record();
        rec.reject(None, "unknown_original_destination", 0);
        intake.shared.audit.emit(&rec);
        return;
    };
    name_cgroup(&mut origin).await;
    let mut conn = Box::new(ConnInfo::new(
        remote,
        Mode::Transparent,
        false,
        origin.dst.port(),
    ));
    conn.client = origin.client;
    conn.original_dst = Some(origin.dst);
    let ip = crate::rules::canonical_ip(origin.dst.ip()).to_string();
    intake
        .serve(
            stream,
            conn,
            KnownDest {
                host: Some(ip),
                port: origin.dst.port(),
            },
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers every lookup with this process's uid and the given cgroup id,
    /// its name left to `find_origin`.
    struct Unnamed(u64);

    impl OriginLookup for Unnamed {
        fn lookup(&self, _: &TcpStream, _: SocketAddr, local: SocketAddr) -> Option<Redirected> {
            Some(Redirected {
                dst: local,
                client: Some(ClientProcess {
                    pid: std::process::id(),
                    uid: 0,
                    comm: "test".into(),
                    cgroup: String::new(),
                }),
                unnamed_cgroup: Some(self.0),
                workload: None,
            })
        }
    }

    #[tokio::test]
    async fn a_cgroup_not_yet_named_is_looked_up_off_the_worker() {
        let own = crate::intercept::current_cgroup().expect("cgroup v2 is mounted");
        let id = crate::intercept::cgroup_id(&own).expect("cgroup id");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (stream, peer) = listener.accept().await.expect("accept");
        let mut found = Unnamed(id).lookup(&stream, peer, addr).expect("an origin");
        name_cgroup(&mut found).await;
        let mount = crate::intercept::cgroup2_mount().expect("mount");
        let rel = own.strip_prefix(&mount).expect("under the mount");
        assert_eq!(
            found.client.expect("client").cgroup,
            format!("/{}", rel.display())
        );
        assert_eq!(found.unnamed_cgroup, None);
    }
}
