//! The pinned maps: opening them, checking that maps pinned by an earlier run
//! have the layout this build expects, and writing the settings into them
//! without a moment where the kernel sees a half-applied configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray};
use ebpf_common::{class, counter, flags, limits, map, Config};

use super::settings::{DenyCidr, InterceptSettings, UidRange};

mod layout;

pub(crate) use layout::{restore_aside, set_aside_incompatible};

/// Errors of map access.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    /// A pinned map could not be opened or used.
    #[error("{op} on map {name}")]
    Op {
        /// Map name.
        name: &'static str,
        /// What was being done.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: MapError,
    },
    /// A pinned map with an older layout could not be moved aside.
    #[error(
        "pinned map {path} has {found}, this build expects {expected}; moving it aside failed"
    )]
    Incompatible {
        /// The pin.
        path: PathBuf,
        /// What the pinned map has.
        found: String,
        /// What this build expects.
        expected: String,
        /// Why the rename failed.
        #[source]
        source: std::io::Error,
    },
    /// A new deny list that fits the trie, but not next to the entries of
    /// the old one it replaces: new entries go in before stale ones go, so
    /// for a moment the trie holds both. Refused before any write.
    #[error(
        "the deny list's {new} entries and the {stale} entries of the old one it replaces \
         would not fit the kernel trie together (at most {max}); nothing was changed: \
         change it in steps that each fit beside the list in force, or detach first \
         (workloads are not intercepted until the next start)"
    )]
    NoRoomForDenyChange {
        /// Entries of the new list.
        new: usize,
        /// Entries in the trie that the new list does not have.
        stale: usize,
        /// The trie's capacity.
        max: u32,
    },
    /// A new uid set that fits the map, but not next to the uids of the old
    /// one it replaces: new uids go in before stale ones go (so a uid in
    /// both is never unselected), so for a moment the map holds both.
    /// Refused before any write.
    #[error(
        "the {new} uids of intercept.uids and the {stale} uids of the set in force it replaces \
         would not fit the kernel map together (at most {max}); nothing was changed: change \
         the set in steps that each fit beside the one in force, or detach first (workloads \
         are not intercepted until the next start)"
    )]
    NoRoomForUidChange {
        /// Uids of the new set.
        new: usize,
        /// Uids in the map that the new set does not have.
        stale: usize,
        /// The map's capacity.
        max: u32,
    },
    /// More entries than the map holds.
    #[error("{count} entries for {name}, at most {max} fit")]
    TooMany {
        /// Map name.
        name: &'static str,
        /// Entries requested.
        count: usize,
        /// Capacity.
        max: u32,
    },
}

fn op(name: &'static str, op: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Op { name, op, source }
}

fn open(maps_dir: &Path, name: &'static str) -> Result<MapData, MapsError> {
    MapData::from_pin(maps_dir.join(name)).map_err(op(name, "opening pinned"))
}

/// The pinned settings maps, opened.
pub(crate) struct SettingsMaps {
    cfg: Array<MapData, Config>,
    sel: Array<MapData, u32>,
    deny: LpmTrie<MapData, [u8; 16], u32>,
    uids: HashMap<MapData, u32, u32>,
}

impl SettingsMaps {
    pub(crate) fn open(maps_dir: &Path) -> Result<Self, MapsError> {
        Ok(Self {
            cfg: Array::try_from(Map::Array(open(maps_dir, map::IRON_CFG)?))
                .map_err(op(map::IRON_CFG, "typing"))?,
            sel: Array::try_from(Map::Array(open(maps_dir, map::IRON_CFG_SEL)?))
                .map_err(op(map::IRON_CFG_SEL, "typing"))?,
            deny: LpmTrie::try_from(Map::LpmTrie(open(maps_dir, map::IRON_DENY)?))
                .map_err(op(map::IRON_DENY, "typing"))?,
            uids: HashMap::try_from(Map::HashMap(open(maps_dir, map::IRON_UIDS)?))
                .map_err(op(map::IRON_UIDS, "typing"))?,
        })
    }

    /// Applies `s`. New uid and deny entries go in first, then the config
    /// slot flips, then stale entries go: at every instant the kernel
    /// enforces the old settings, the new ones, or their union of denials.
    pub(crate) fn apply(&mut self, s: &InterceptSettings) -> Result<(), MapsError> {
        let deny = checked_deny_entries(&s.deny)?;
        self.check_deny_room(&deny)?;
        let uids: BTreeSet<u32> = s.uids.iter().copied().collect();
        if uids.len() > limits::IRON_UIDS_MAX as usize {
            return Err(MapsError::TooMany {
                name: map::IRON_UIDS,
                count: uids.len(),
                max: limits::IRON_UIDS_MAX,
            });
        }
        // New uids go in before stale ones go: both must fit at once
        // (review 47: a change that ran out of room halfway left the old set
        // and part of the new one, and every later start failed the same way).
        let stale = self
            .uids
            .keys()
            .map(|k| k.map_err(op(map::IRON_UIDS, "reading")))
            .collect::<Result<Vec<u32>, _>>()?
            .into_iter()
            .filter(|u| !uids.contains(u))
            .count();
        if uids.len() + stale > limits::IRON_UIDS_MAX as usize {
            return Err(MapsError::NoRoomForUidChange {
                new: uids.len(),
                stale,
                max: limits::IRON_UIDS_MAX,
            });
        }

        for uid in &uids {
            self.uids
                .insert(uid, 1, 0)
                .map_err(op(map::IRON_UIDS, "inserting into"))?;
        }
        self.insert_deny(&deny)?;

        let live = self
            .sel
            .get(&0, 0)
            .map_err(op(map::IRON_CFG_SEL, "reading"))?
            & 1;
        let next = 1 - live;
        self.cfg
            .set(next, build_config(s), 0)
            .map_err(op(map::IRON_CFG, "writing"))?;
        self.sel
            .set(0, next, 0)
            .map_err(op(map::IRON_CFG_SEL, "writing"))?;

        let stale_uids: Vec<u32> = self
            .uids
            .keys()
            .filter_map(Result::ok)
            .filter(|u| !uids.contains(u))
            .collect();
        for uid in stale_uids {
            self.uids
                .remove(&uid)
                .map_err(op(map::IRON_UIDS, "removing from"))?;
        }
        self.remove_stale_deny(&deny)?;
        Ok(())
    }

    /// Replaces the deny trie's entries with `deny`'s: new and changed
    /// entries first, then the stale ones go, so a range in both the old
    /// and the new list is never absent. Returns the number of entries.
    pub(crate) fn apply_deny(&mut self, deny: &[DenyCidr]) -> Result<usize, MapsError> {
        let entries = checked_deny_entries(deny)?;
        self.check_deny_room(&entries)?;
        self.insert_deny(&entries)?;
        self.remove_stale_deny(&entries)?;
        Ok(entries.len())
    }

    /// Refuses `deny` unless its entries and the stale ones already in the
    /// trie fit together, as they must while the change is applied. Checked
    /// before anything is written: a change that ran out of room halfway
    /// (ENOSPC) left the old entries and part of the new ones, with class
    /// masks partly rewritten.
    fn check_deny_room(&self, deny: &BTreeMap<(u32, [u8; 16]), u32>) -> Result<(), MapsError> {
        let mut stale = 0;
        for key in self.deny.keys() {
            let k = key.map_err(op(map::IRON_DENY, "reading"))?;
            if !deny.contains_key(&(k.prefix_len(), k.data())) {
                stale += 1;
            }
        }
        let max = limits::IRON_DENY_MAX;
        if deny.len() + stale > max as usize {
            return Err(MapsError::NoRoomForDenyChange {
                new: deny.len(),
                stale,
                max,
            });
        }
        Ok(())
    }

    fn insert_deny(&mut self, deny: &BTreeMap<(u32, [u8; 16]), u32>) -> Result<(), MapsError> {
        for ((len, addr), mask) in deny {
            self.deny
                .insert(&Key::new(*len, *addr), mask, 0)
                .map_err(op(map::IRON_DENY, "inserting into"))?;
        }
        Ok(())
    }

    fn remove_stale_deny(
        &mut self,
        deny: &BTreeMap<(u32, [u8; 16]), u32>,
    ) -> Result<(), MapsError> {
        let stale_deny: Vec<(u32, [u8; 16])> = self
            .deny
            .keys()
            .filter_map(Result::ok)
            .map(|k| (k.prefix_len(), k.data()))
            .filter(|k| !deny.contains_key(k))
            .collect();
        for (len, addr) in stale_deny {
            self.deny
                .remove(&Key::new(len, addr))
                .map_err(op(map::IRON_DENY, "removing from"))?;
        }
        Ok(())
    }
}

/// [`deny_entries`], refused when they do not fit the trie.
fn checked_deny_entries(deny: &[DenyCidr]) -> Result<BTreeMap<(u32, [u8; 16]), u32>, MapsError> {
    let entries = deny_entries(deny);
    if entries.len() > limits::IRON_DENY_MAX as usize {
        return Err(MapsError::TooMany {
            name: map::IRON_DENY,
            count: entries.len(),
            max: limits::IRON_DENY_MAX,
        });
    }
    Ok(entries)
}

/// The kernel's view of the settings.
pub(crate) fn build_config(s: &InterceptSettings) -> Config {
    let mut c = Config {
        flags: flags::IRON_F_CONFIGURED,
        listen_v4: u32::from_ne_bytes(s.listen_v4.ip().octets()),
        listen_v4_port: s.listen_v4.port().to_be(),
        ..Config::default()
    };
    if let Some(l) = s.listen_v6 {
        c.flags |= flags::IRON_F_LISTEN_V6;
        c.listen_v6 = l.ip().octets();
        c.listen_v6_port = l.port().to_be();
    }
    if let Some(d) = s.dns_v4 {
        c.flags |= flags::IRON_F_DNS_V4;
        c.dns_v4 = u32::from_ne_bytes(d.ip().octets());
        c.dns_v4_port = d.port().to_be();
    }
    if let Some(d) = s.dns_v6 {
        c.flags |= flags::IRON_F_DNS_V6;
        c.dns_v6 = d.ip().octets();
        c.dns_v6_port = d.port().to_be();
    }
    for ip in &s.dns_answers {
        match ip.to_canonical() {
            ip @ IpAddr::V4(_) => {
                c.flags |= flags::IRON_F_ANSWER_V4;
                c.answer_v4 = addr16(ip);
            }
            ip @ IpAddr::V6(_) => {
                c.flags |= flags::IRON_F_ANSWER_V6;
                c.answer_v6 = addr16(ip);
            }
        }
    }
    if !s.uids.is_empty() {
        c.flags |= flags::IRON_F_UID_FILTER;
        for (i, r) in kernel_uid_ranges(&s.uid_ranges).into_iter().enumerate() {
            c.uid_range_start[i] = r.start;
            c.uid_range_count[i] = r.count;
        }
    }
    c.proxy_tgid = s.proxy.tgid.unwrap_or(0);
    c.proxy_cgroup_id = s.proxy.cgroup_id.unwrap_or(0);
    if let Some(uid) = s.proxy.uid {
        c.flags |= flags::IRON_F_PROXY_UID;
        c.proxy_uid = uid;
    }
    if s.listener_priority {
        c.flags |= flags::IRON_F_LISTENER_PRIORITY;
    }
    if s.dns_listener_priority {
        c.flags |= flags::IRON_F_DNS_LISTENER_PRIORITY;
    }
    c
}

/// [`UidRange::merged`], at most `IRON_UID_RANGES` of them: past that, the
/// last one covers the rest (and the uids between them: more is
/// intercepted, never less).
pub(crate) fn kernel_uid_ranges(ranges: &[UidRange]) -> Vec<UidRange> {
    let max = limits::IRON_UID_RANGES as usize;
    let mut merged = UidRange::merged(ranges);
    if merged.len() > max {
        let end = merged.iter().map(|r| r.end()).max().unwrap_or(0);
        merged.truncate(max);
        if let Some(last) = merged.last_mut() {
            last.count = (end - u64::from(last.start)) as u32;
        }
    }
    merged
}

/// A 16-byte address, IPv4 written v4-mapped.
pub fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Deny trie entries: (prefix length over 128 bits, address) to class mask.
/// An LPM lookup returns only the longest match, so each entry also carries
/// the classes of every shorter entry that contains it.
pub(crate) fn deny_entries(deny: &[DenyCidr]) -> BTreeMap<(u32, [u8; 16]), u32> {
    let mut entries: BTreeMap<(u32, [u8; 16]), u32> = BTreeMap::new();
    for d in deny {
        let net = d.net.trunc();
        let len = match net {
            ipnet::IpNet::V4(n) => 96 + u32::from(n.prefix_len()),
            ipnet::IpNet::V6(n) => u32::from(n.prefix_len()),
        };
        let mask = if d.workload {
            class::IRON_CLASS_WORKLOAD
        } else {
            0
        } | if d.proxy { class::IRON_CLASS_PROXY } else { 0 };
        *entries.entry((len, addr16(net.addr()))).or_default() |= mask;
    }
    let snapshot: Vec<((u32, [u8; 16]), u32)> = entries.iter().map(|(k, v)| (*k, *v)).collect();
    for ((len, addr), mask) in entries.iter_mut() {
        for ((olen, oaddr), omask) in &snapshot {
            if olen < len && prefix_eq(addr, oaddr, *olen) {
                *mask |= omask;
            }
        }
    }
    entries
}

/// Whether the first `bits` bits of `a` and `b` are equal.
fn prefix_eq(a: &[u8; 16], b: &[u8; 16], bits: u32) -> bool {
    let full = (bits / 8) as usize;
    if a[..full] != b[..full] {
        return false;
    }
    let rest = bits % 8;
    if rest == 0 {
        return true;
    }
    let m = 0xffu8 << (8 - rest);
    (a[full] & m) == (b[full] & m)
}

/// Counter values, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// TCP connects sent to the transparent listener.
    pub redirected: u64,
    /// Connects and sends refused by the deny list.
    pub denied: u64,
    /// UDP (other than DNS) refused.
    pub udp_refused: u64,
    /// Port-53 traffic sent to the DNS listener.
    pub dns_redirected: u64,
    /// Raw, ICMP and other non-TCP/UDP sockets refused.
    pub raw_refused: u64,
    /// The proxy's own connects let through.
    pub proxy_exempt: u64,
    /// Client 4-tuples recorded for the lookup.
    pub tuple_recorded: u64,
    /// `SO_ORIGINAL_DST` answers from the getsockopt program.
    pub origdst_answered: u64,
    /// Calls refused because no configuration was loaded.
    pub unconfigured: u64,
    /// Packets of workload sockets dropped by the cgroup_skb backstop.
    pub backstop_dropped: u64,
    /// Connects and DNS datagrams refused because the socket at the
    /// transparent (or DNS) listener's address was not the proxy's, or no
    /// socket was bound there (the proxy is down).
    pub foreign_listener: u64,
}

/// How many redirected sockets have their origin in `iron_cookie_origin`
/// (open ones; beyond [`limits::IRON_COOKIE_ORIGINS_MAX`] origins go to
/// socket-local storage, which cannot be counted from here).
pub(crate) fn count_cookie_origins(maps_dir: &Path) -> Result<u64, MapsError> {
    let name = map::IRON_COOKIE_ORIGIN;
    let origins: HashMap<MapData, u64, ebpf_common::Origin> =
        HashMap::try_from(Map::HashMap(open(maps_dir, name)?)).map_err(op(name, "typing"))?;
    let mut n = 0;
    for key in origins.keys() {
        key.map_err(op(name, "reading"))?;
        n += 1;
    }
    Ok(n)
}

/// Reads the pinned counters.
pub(crate) fn read_counters(maps_dir: &Path) -> Result<Counters, MapsError> {
    let name = map::IRON_COUNTERS;
    let arr: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(open(maps_dir, name)?))
            .map_err(op(name, "typing"))?;
    let mut v = [0u64; counter::IRON_CNT_MAX as usize];
    for (i, slot) in v.iter_mut().enumerate() {
        let per_cpu = arr.get(&(i as u32), 0).map_err(op(name, "reading"))?;
        *slot = per_cpu.iter().sum();
    }
    use counter::*;
    let at = |i: u32| v[i as usize];
    Ok(Counters {
        redirected: at(IRON_CNT_REDIRECTED),
        denied: at(IRON_CNT_DENIED),
        udp_refused: at(IRON_CNT_UDP_REFUSED),
        dns_redirected: at(IRON_CNT_DNS_REDIRECTED),
        raw_refused: at(IRON_CNT_RAW_REFUSED),
        proxy_exempt: at(IRON_CNT_PROXY_EXEMPT),
        tuple_recorded: at(IRON_CNT_TUPLE_RECORDED),
        origdst_answered: at(IRON_CNT_ORIGDST_ANSWERED),
        unconfigured: at(IRON_CNT_UNCONFIGURED),
        backstop_dropped: at(IRON_CNT_BACKSTOP_DROPPED),
        foreign_listener: at(IRON_CNT_FOREIGN_LISTENER),
    })
}
