//! Pinned maps left by an earlier build: checking their layout against this
//! build's, and moving the ones that differ aside so loading creates fresh
//! ones.

use std::path::{Path, PathBuf};

use aya::maps::{MapInfo, MapType};
use ebpf_common::{counter, limits, map, Config, Origin, Sender, Tuple};

use super::{op, MapsError};

/// The layout each map must have on a host with `possible_cpus` possible
/// CPUs: (name, type, key size, value size, entries as the kernel reports
/// them, see [`per_cpu_lru_entries`]).
fn expected(possible_cpus: u32) -> [(&'static str, MapType, usize, usize, u32); 10] {
    use std::mem::size_of;
    let lru = |max| per_cpu_lru_entries(max, possible_cpus);
    [
        (
            map::IRON_CFG,
            MapType::Array,
            4,
            size_of::<Config>(),
            limits::IRON_CFG_SLOTS,
        ),
        (map::IRON_CFG_SEL, MapType::Array, 4, 4, 1),
        (
            map::IRON_DENY,
            MapType::LpmTrie,
            20,
            4,
            limits::IRON_DENY_MAX,
        ),
        (map::IRON_UIDS, MapType::Hash, 4, 4, limits::IRON_UIDS_MAX),
        // Socket-local storage: an `int` key and no entries limit.
        (
            map::IRON_SK_ORIGIN,
            MapType::SkStorage,
            4,
            size_of::<Origin>(),
            0,
        ),
        (
            map::IRON_BY_TUPLE,
            MapType::LruHash,
            size_of::<Tuple>(),
            size_of::<Origin>(),
            lru(limits::IRON_ORIGINS_MAX),
        ),
        (
            map::IRON_COUNTERS,
            MapType::PerCpuArray,
            4,
            8,
            counter::IRON_CNT_MAX,
        ),
        (map::IRON_SK_PROXY, MapType::SkStorage, 4, 4, 0),
        (
            map::IRON_COOKIE_ORIGIN,
            MapType::Hash,
            8,
            size_of::<Origin>(),
            limits::IRON_COOKIE_ORIGINS_MAX,
        ),
        (
            map::IRON_DNS_SENDERS,
            MapType::LruHash,
            size_of::<Tuple>(),
            size_of::<Sender>(),
            lru(limits::IRON_DNS_SENDERS_MAX),
        ),
    ]
}

/// The `max_entries` the kernel gives an LRU hash of `max` entries with
/// per-CPU lists (`BPF_F_NO_COMMON_LRU`, as `iron_by_tuple` and
/// `iron_dns_senders` are): `htab_map_alloc` rounds it up to a multiple of
/// the number of possible CPUs, so that every CPU's list holds as many
/// (down instead where rounding up overflows). Comparing with `max` itself
/// replaced both maps on every start wherever that number does not divide
/// it (3, 6, 12, 24, 48 or 96 possible CPUs), losing the origins of
/// connections not accepted yet.
fn per_cpu_lru_entries(max: u32, possible_cpus: u32) -> u32 {
    if possible_cpus <= 1 {
        return max;
    }
    let n = u64::from(possible_cpus);
    u32::try_from(u64::from(max).div_ceil(n) * n).unwrap_or(max / possible_cpus * possible_cpus)
}

/// The kernel's `num_possible_cpus()`: the CPUs listed in
/// `/sys/devices/system/cpu/possible`. Where that cannot be read, 1: the
/// per-CPU maps are then compared with their size unrounded (a host whose
/// CPU count does not divide it gets them replaced, as before).
fn possible_cpus() -> u32 {
    match aya::util::nr_cpus() {
        Ok(n) => u32::try_from(n).unwrap_or(u32::MAX),
        Err((path, error)) => {
            tracing::warn!(path, %error, "reading the possible CPUs; per-CPU LRU maps compared unrounded");
            1
        }
    }
}

/// Suffix of a pinned map moved aside because its layout is older than this build's.
/// (bpffs refuses dots in the names of pinned objects.)
const REPLACED: &str = "_replaced";

/// Pinned maps whose layout differs from this build's (an upgrade changed a
/// map), and pinned maps this build no longer uses ([`map::OBSOLETE`]), are
/// moved to `<name>_replaced`, so that loading creates and pins fresh ones.
/// The programs still attached keep using the old maps until their links are
/// switched to the new programs, so enforcement never lapses; the caller
/// removes the returned pins once that is done (or puts them back with
/// [`restore_aside`] if the takeover fails). What a replaced map held is
/// lost: counters restart, connections accepted before the switch may lose
/// their original destination, and sockets the old programs marked as the
/// proxy's (an old build's `iron_proxy_socks`) lose that mark.
pub(crate) fn set_aside_incompatible(maps_dir: &Path) -> Result<Vec<PathBuf>, MapsError> {
    let mut aside = Vec::new();
    let wanted = expected(possible_cpus())
        .map(|(name, ty, key, value, entries)| (name, Some((ty, key, value, entries))));
    let obsolete = map::OBSOLETE.map(|name| (name, None));
    for (name, layout) in wanted.into_iter().chain(obsolete) {
        let path = maps_dir.join(name);
        let old = maps_dir.join(format!("{name}{REPLACED}"));
        if old.exists() {
            // Left by a takeover that died halfway; the current pin (if any) is newer.
            let _ = std::fs::remove_file(&old);
        }
        if !path.exists() {
            continue;
        }
        let info = MapInfo::from_pin(&path).map_err(op(name, "opening pinned"))?;
        let found_ty = info.map_type().map_err(op(name, "reading type of"))?;
        let found = (
            found_ty,
            info.key_size() as usize,
            info.value_size() as usize,
            info.max_entries(),
        );
        if layout == Some(found) {
            continue;
        }
        let (found, expected) = (
            format!("{found:?}"),
            layout.map_or_else(|| "no such map".to_owned(), |l| format!("{l:?}")),
        );
        if let Err(source) = move_pin(&path, &old) {
            restore_aside(&aside);
            return Err(MapsError::Incompatible {
                path,
                found,
                expected,
                source,
            });
        }
        if layout.is_some() {
            tracing::warn!(map = name, %found, %expected, "pinned map has an older layout; replacing it");
        } else {
            tracing::info!(map = name, %found, "removing a pinned map this build no longer uses");
        }
        aside.push(old);
    }
    Ok(aside)
}

/// Moves a pin: pin the object again under `to`, then unpin `from`.
fn move_pin(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::fd::AsFd;
    let fd = crate::intercept::sys::obj_get(from)?;
    crate::intercept::sys::obj_pin(fd.as_fd(), to)?;
    std::fs::remove_file(from)
}

/// Puts maps moved aside by [`set_aside_incompatible`] back (a failed takeover).
pub(crate) fn restore_aside(aside: &[PathBuf]) {
    for old in aside {
        let Some(pin) = old
            .to_str()
            .and_then(|p| p.strip_suffix(REPLACED))
            .map(PathBuf::from)
        else {
            continue;
        };
        let _ = std::fs::remove_file(&pin);
        if let Err(e) = move_pin(old, &pin) {
            tracing::error!(pin = %pin.display(), error = %e, "restoring a pinned map");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(possible_cpus: u32, name: &str) -> u32 {
        expected(possible_cpus)
            .into_iter()
            .find(|e| e.0 == name)
            .map(|e| e.4)
            .unwrap_or_else(|| panic!("no map {name}"))
    }

    /// The kernel's rounding of per-CPU LRU maps (`htab_map_alloc`): what a
    /// pinned map reports on hosts whose possible-CPU count does not divide
    /// its size. Before, the check expected the unrounded size there and
    /// replaced both maps on every start.
    #[test]
    fn per_cpu_lru_maps_are_expected_at_the_kernels_rounded_size() {
        for (cpus, by_tuple, senders) in [
            (1, 65536, 16384),
            (2, 65536, 16384),
            (3, 65538, 16386),
            (6, 65538, 16386),
            (12, 65544, 16392),
            (48, 65568, 16416),
            (96, 65568, 16416),
        ] {
            assert_eq!(
                entries(cpus, map::IRON_BY_TUPLE),
                by_tuple,
                "{cpus} possible CPUs"
            );
            assert_eq!(
                entries(cpus, map::IRON_DNS_SENDERS),
                senders,
                "{cpus} possible CPUs"
            );
            // Maps without per-CPU lists keep their size.
            assert_eq!(
                entries(cpus, map::IRON_COOKIE_ORIGIN),
                limits::IRON_COOKIE_ORIGINS_MAX
            );
            assert_eq!(entries(cpus, map::IRON_DENY), limits::IRON_DENY_MAX);
        }
        // Rounding up past u32 rounds down instead, as the kernel does.
        assert_eq!(per_cpu_lru_entries(u32::MAX, 2), u32::MAX - 1);
        assert_eq!(per_cpu_lru_entries(0, 3), 0);
    }
}
