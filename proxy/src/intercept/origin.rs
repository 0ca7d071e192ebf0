//! Recovering where an intercepted connection was going, and who made it,
//! from the accepted socket's addresses: a lookup in the pinned tuple map
//! that sockops fills. This works without any getsockopt program.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::Path;
use std::sync::Arc;

use aya::maps::{HashMap, Map, MapData, MapError};
use ebpf_common::{map, Tuple};

use super::maps::addr16;

/// Errors of opening the origin lookup.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// The pinned tuple map could not be opened.
    #[error("opening pinned map {path}")]
    Open {
        /// The pin.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: MapError,
    },
}

/// Where an intercepted connection was going, and who connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The destination the workload asked for. A v4-mapped destination on
    /// an IPv6 socket is reported as IPv4.
    pub dst: SocketAddr,
    /// Thread id of the connecting task.
    pub pid: u32,
    /// Process id of the connecting task.
    pub tgid: u32,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// Task name (`comm`).
    pub comm: String,
    /// cgroup v2 id; see [`cgroup_path`](super::cgroup_path).
    pub cgroup_id: u64,
}

impl Origin {
    pub(crate) fn from_raw(raw: &ebpf_common::Origin) -> Self {
        let end = raw
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(raw.comm.len());
        Self {
            dst: socket_addr(raw.addr, u16::from_be(raw.port)),
            pid: raw.pid,
            tgid: raw.tgid,
            uid: raw.uid,
            gid: raw.gid,
            comm: String::from_utf8_lossy(&raw.comm[..end]).into_owned(),
            cgroup_id: raw.cgroup_id,
        }
    }
}

/// A 16-byte address and port as a socket address (v4-mapped as IPv4).
pub(crate) fn socket_addr(addr: [u8; 16], port: u16) -> SocketAddr {
    let v6 = Ipv6Addr::from(addr);
    match v6.to_ipv4_mapped() {
        Some(v4) => SocketAddr::new(IpAddr::V4(v4), port),
        None => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, 0)),
    }
}

/// The tuple-map key for an accepted socket.
pub(crate) fn tuple_key(peer: SocketAddr, local: SocketAddr) -> Tuple {
    Tuple {
        src_addr: addr16(peer.ip()),
        dst_addr: addr16(local.ip()),
        src_port: peer.port().to_be(),
        dst_port: local.port().to_be(),
        pad: 0,
    }
}

/// Looks up intercepted connections' origins. Cheap to clone; safe to share
/// between threads.
#[derive(Clone)]
pub struct OriginalDst {
    map: Arc<HashMap<MapData, Tuple, ebpf_common::Origin>>,
}

impl std::fmt::Debug for OriginalDst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OriginalDst").finish_non_exhaustive()
    }
}

impl OriginalDst {
    /// Opens the tuple map pinned under `pin_path` (as
    /// [`Interceptor::attach`](super::Interceptor::attach) laid it out).
    pub fn open(pin_path: &Path) -> Result<Self, OriginError> {
        let path = super::maps_dir(pin_path).join(map::IRON_BY_TUPLE);
        let open_err = |source| OriginError::Open {
            path: path.clone(),
            source,
        };
        let data = MapData::from_pin(&path).map_err(open_err)?;
        let map = HashMap::try_from(Map::LruHashMap(data)).map_err(open_err)?;
        Ok(Self { map: Arc::new(map) })
    }

    /// The origin of the connection accepted with this `peer` (the
    /// workload's address and port) on this `local` address (the listener's,
    /// as `getsockname` reports it), if the kernel intercepted it.
    pub fn lookup(&self, peer: SocketAddr, local: SocketAddr) -> Option<Origin> {
        let key = tuple_key(peer, local);
        self.map.get(&key, 0).ok().map(|raw| Origin::from_raw(&raw))
    }
}
