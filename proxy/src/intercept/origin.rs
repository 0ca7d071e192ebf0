//! Recovering where an intercepted connection was going, and who made it,
//! from the accepted socket's addresses: a lookup in the pinned tuple map
//! that the egress program fills on each redirected SYN. This works without
//! any getsockopt program.
//!
//! The lookup takes the entry out of the map: the proxy asks once per
//! accepted connection, and a map that stays nearly empty never makes
//! the egress program evict on a workload's SYN.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use aya::maps::{HashMap, Map, MapData, MapError};
use ebpf_common::{map, Tuple};

use super::maps::addr16;
use super::sys;

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
    /// The tuple map; its key and value sizes were checked on open.
    map: Arc<MapData>,
    /// Whether the kernel does lookup-and-delete on hash maps (5.14+);
    /// cleared on the first refusal, then lookup and delete go separately.
    one_step: Arc<AtomicBool>,
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
        let map = Map::LruHashMap(MapData::from_pin(&path).map_err(open_err)?);
        // Checks the map's type and its key and value sizes.
        HashMap::<_, Tuple, ebpf_common::Origin>::try_from(&map).map_err(open_err)?;
        let Map::LruHashMap(data) = map else {
            unreachable!("built as LruHashMap above")
        };
        Ok(Self {
            map: Arc::new(data),
            one_step: Arc::new(AtomicBool::new(true)),
        })
    }

    /// The origin of the connection accepted with this `peer` (the
    /// workload's address and port) on this `local` address (the listener's,
    /// as `getsockname` reports it), if the kernel intercepted it.
    ///
    /// The entry is removed as it is read: ask once per accepted connection
    /// (a second call answers `None`).
    pub fn lookup(&self, peer: SocketAddr, local: SocketAddr) -> Option<Origin> {
        let key = tuple_key(peer, local);
        let mut raw = ebpf_common::Origin::default();
        let fd = self.map.fd().as_fd();
        if self.one_step.load(Ordering::Relaxed) {
            // SAFETY: `open` checked the key and value sizes against `Tuple`
            // and `ebpf_common::Origin`.
            match unsafe { sys::map_lookup_and_delete(fd, &key, &mut raw) } {
                Ok(()) => return Some(Origin::from_raw(&raw)),
                Err(e) if !unsupported(&e) => return None,
                Err(_) => self.one_step.store(false, Ordering::Relaxed),
            }
        }
        // SAFETY: as above.
        unsafe { sys::map_lookup(fd, &key, &mut raw) }.ok()?;
        // SAFETY: as above. A failed delete leaves the entry to the LRU.
        let _ = unsafe { sys::map_delete(fd, &key) };
        Some(Origin::from_raw(&raw))
    }
}

/// Whether the kernel refused lookup-and-delete on this map type (before
/// 5.14): `ENOTSUPP` (524, kernel-internal), or `EOPNOTSUPP`/`EINVAL`.
fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(524) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
    )
}
