//! Pinned maps left by an earlier build: checking their layout against this
//! build's, and moving the ones that differ aside so loading creates fresh
//! ones.

use std::path::{Path, PathBuf};

use aya::maps::{MapInfo, MapType};
use ebpf_common::{counter, limits, map, Config, Origin, Sender, Tuple};

use super::{op, MapsError};

/// The layout each map must have: (name, type, key size, value size, entries).
fn expected() -> [(&'static str, MapType, usize, usize, u32); 10] {
    use std::mem::size_of;
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
            limits::IRON_ORIGINS_MAX,
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
            limits::IRON_DNS_SENDERS_MAX,
        ),
    ]
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
    let wanted =
        expected().map(|(name, ty, key, value, entries)| (name, Some((ty, key, value, entries))));
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
