//! Which workload sent a redirected DNS datagram: a lookup in the pinned
//! map the egress program fills from the datagrams a redirected UDP socket
//! sends to the DNS listener, keyed by the 4-tuple the DNS server sees on
//! `recv_from` (the workload's address and port, the listener's).
//!
//! Unlike [`OriginalDst`](super::OriginalDst), a lookup leaves the entry in
//! place: a UDP socket sends many queries, and the kernel writes an entry
//! only when it is missing. The map is an LRU: the sockets gone quiet are
//! forgotten as new ones come.

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;

use aya::maps::{HashMap, Map, MapData, MapError};
use ebpf_common::{map, Sender, Tuple};

use super::origin::tuple_key;
use super::sys;
use super::workload::{DatagramIdentity, Workload};

/// Errors of opening the DNS senders lookup.
#[derive(Debug, thiserror::Error)]
pub enum DnsSendersError {
    /// The pinned map could not be opened, or is not what this build
    /// expects.
    #[error("opening pinned map {path}")]
    Open {
        /// The pin.
        path: std::path::PathBuf,
        /// The underlying error.
        #[source]
        source: MapError,
    },
}

/// Looks up the workloads of redirected DNS datagrams. Cheap to clone; safe
/// to share between threads.
#[derive(Clone)]
pub struct DnsSenders {
    /// The senders map; its key and value sizes were checked on open.
    map: Arc<MapData>,
}

impl std::fmt::Debug for DnsSenders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsSenders").finish_non_exhaustive()
    }
}

impl DnsSenders {
    /// Opens the senders map pinned under `pin_path` (as
    /// [`Interceptor::attach`](super::Interceptor::attach) laid it out).
    pub fn open(pin_path: &Path) -> Result<Self, DnsSendersError> {
        let path = super::maps_dir(pin_path).join(map::IRON_DNS_SENDERS);
        let open_err = |source| DnsSendersError::Open {
            path: path.clone(),
            source,
        };
        let map = Map::LruHashMap(MapData::from_pin(&path).map_err(open_err)?);
        // Checks the map's type and its key and value sizes.
        HashMap::<_, Tuple, Sender>::try_from(&map).map_err(open_err)?;
        let Map::LruHashMap(data) = map else {
            unreachable!("built as LruHashMap above")
        };
        Ok(Self {
            map: Arc::new(data),
        })
    }

    /// The workload whose redirected socket sent the datagram received from
    /// `peer` on `local` (the DNS listener's address), if the kernel
    /// recorded it. One `bpf(2)` call; the entry stays.
    pub fn lookup(&self, peer: SocketAddr, local: SocketAddr) -> Option<Workload> {
        let key = tuple_key(peer, local);
        let mut raw = Sender::default();
        // SAFETY: `open` checked the key and value sizes against `Tuple`
        // and `Sender`.
        unsafe { sys::map_lookup(self.map.fd().as_fd(), &key, &mut raw) }.ok()?;
        Some(Workload {
            uid: raw.uid,
            cgroup_id: raw.cgroup_id,
        })
    }
}

impl DatagramIdentity for DnsSenders {
    fn identify_datagram(&self, peer: SocketAddr, local: SocketAddr) -> Option<Workload> {
        self.lookup(peer, local)
    }
}
