//! cgroup v2 discovery: where the hierarchy is mounted (from
//! `/proc/self/mountinfo`, never assumed), resolving configured cgroup paths,
//! cgroup ids, and the reverse lookup from an id to a path for audit records.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Errors of cgroup discovery.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// `/proc/self/mountinfo` could not be read.
    #[error("reading /proc/self/mountinfo")]
    MountInfo(#[source] std::io::Error),
    /// No cgroup2 filesystem is mounted.
    #[error("no cgroup v2 filesystem is mounted (eBPF interception needs the unified hierarchy, Linux 4.5+; mount it with `mount -t cgroup2 none /sys/fs/cgroup`)")]
    NoCgroup2,
    /// A configured path escapes the hierarchy or is not a cgroup.
    #[error("{path}: not a cgroup under the cgroup v2 mount {mount}")]
    NotACgroup {
        /// The offending path.
        path: PathBuf,
        /// The cgroup2 mount.
        mount: PathBuf,
    },
    /// A cgroup directory could not be inspected.
    #[error("inspecting cgroup {path}")]
    Stat {
        /// The cgroup directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `/proc/self/cgroup` has no cgroup v2 line.
    #[error("/proc/self/cgroup has no cgroup v2 entry")]
    NoOwnCgroup,
}

/// The mount point of the cgroup v2 hierarchy, from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Result<PathBuf, CgroupError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::MountInfo)?;
    parse_cgroup2_mount(&info).ok_or(CgroupError::NoCgroup2)
}

/// Finds the first cgroup2 mount point in mountinfo text.
pub(crate) fn parse_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // id parent major:minor root mountpoint options [optional...] - fstype source superopts
        let (head, tail) = line.split_once(" - ")?;
        let fstype = tail.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        let mountpoint = head.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mountpoint)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let oct = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Resolves a configured cgroup path to an absolute directory under the
/// cgroup2 mount `mount`. A path already under the mount is kept; any other
/// path (`workloads/a` or `/workloads/a`) is taken relative to the mount, the
/// way `/proc/<pid>/cgroup` spells cgroups. `..` is refused.
pub fn resolve_cgroup(mount: &Path, path: &Path) -> Result<PathBuf, CgroupError> {
    let not_a_cgroup = || CgroupError::NotACgroup {
        path: path.to_owned(),
        mount: mount.to_owned(),
    };
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(not_a_cgroup());
    }
    if path.starts_with(mount) {
        return Ok(path.to_owned());
    }
    let rel: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    Ok(mount.join(rel))
}

/// The cgroup v2 id of a cgroup directory (its inode number).
pub fn cgroup_id(path: &Path) -> Result<u64, CgroupError> {
    let meta = std::fs::metadata(path).map_err(|source| CgroupError::Stat {
        path: path.to_owned(),
        source,
    })?;
    Ok(meta.ino())
}

/// The cgroup v2 directory of this process, from `/proc/self/cgroup`.
pub fn current_cgroup() -> Result<PathBuf, CgroupError> {
    let mount = cgroup2_mount()?;
    let text = std::fs::read_to_string("/proc/self/cgroup").map_err(CgroupError::MountInfo)?;
    let rel = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .ok_or(CgroupError::NoOwnCgroup)?;
    resolve_cgroup(&mount, Path::new(rel))
}

/// A cached answer of [`cgroup_path`]: the directory, and when it was last
/// seen to still have the id.
struct Known {
    path: PathBuf,
    checked: Instant,
}

fn path_cache() -> &'static Mutex<HashMap<u64, Known>> {
    static CACHE: OnceLock<Mutex<HashMap<u64, Known>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Most directories `cgroup_path` visits per lookup, so a huge hierarchy
/// cannot stall the caller.
const WALK_LIMIT: usize = 20_000;

/// How long a cached id → path answer is used before its directory is
/// checked again. A cgroup can be renamed or removed (ids are not reused),
/// so an answer is at most this stale; checking on every use cost a `stat`
/// per intercepted connection.
const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// The directory of the cgroup with this id, best effort: a walk of the
/// cgroup2 hierarchy, cached (an entry is checked again once it is older
/// than [`RECHECK_AFTER`]).
pub fn cgroup_path(id: u64) -> Option<PathBuf> {
    cgroup_path_at(id, Instant::now())
}

fn cgroup_path_at(id: u64, now: Instant) -> Option<PathBuf> {
    if let Some(p) = cached_path_at(id, now) {
        return Some(p);
    }
    walk_for(id, now)
}

/// The cached answer for `id`, checked again (one `stat`) when it is older
/// than [`RECHECK_AFTER`]; `None` when only a walk can tell.
fn cached_path_at(id: u64, now: Instant) -> Option<PathBuf> {
    let cache = path_cache();
    let stale = {
        let guard = cache.lock().ok()?;
        let k = guard.get(&id)?;
        if now.saturating_duration_since(k.checked) < RECHECK_AFTER {
            return Some(k.path.clone());
        }
        k.path.clone()
    };
    if cgroup_id(&stale).ok() != Some(id) {
        return None;
    }
    if let Ok(mut guard) = cache.lock() {
        if let Some(k) = guard.get_mut(&id) {
            k.checked = now;
        }
    }
    Some(stale)
}

/// Walks the cgroup2 hierarchy for the directory with this id, caching every
/// directory it passes.
fn walk_for(id: u64, now: Instant) -> Option<PathBuf> {
    let mount = cgroup2_mount().ok()?;
    let mut stack = vec![mount];
    let mut found = None;
    let mut seen = HashMap::new();
    let mut visited = 0;
    while let Some(dir) = stack.pop() {
        visited += 1;
        if visited > WALK_LIMIT {
            break;
        }
        let Ok(meta) = std::fs::metadata(&dir) else {
            continue;
        };
        seen.insert(meta.ino(), dir.clone());
        if meta.ino() == id {
            found = Some(dir);
            break;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(entry.path());
            }
        }
    }
    if let Ok(mut guard) = path_cache().lock() {
        if guard.len() > 4 * WALK_LIMIT {
            guard.clear();
        }
        guard.extend(
            seen.into_iter()
                .map(|(ino, path)| (ino, Known { path, checked: now })),
        );
    }
    found
}

/// The cgroup with this id as `/a/b`, relative to the cgroup v2 mount (the
/// way `/proc/PID/cgroup` spells it), for audit records; `None` when it
/// cannot be found. The mount point is read once per process.
pub fn cgroup_name(id: u64) -> Option<String> {
    named(&cgroup_path(id)?)
}

/// [`cgroup_name`] from the cache alone: `None` when the id is not cached
/// (or its directory no longer has it), so that only a walk of the
/// hierarchy, which can take milliseconds, could find it. Callers on an
/// async worker use this first and run [`cgroup_name`] on the blocking pool.
pub fn cgroup_name_cached(id: u64) -> Option<String> {
    named(&cached_path_at(id, Instant::now())?)
}

fn named(path: &Path) -> Option<String> {
    static MOUNT: OnceLock<Option<PathBuf>> = OnceLock::new();
    let mount = MOUNT.get_or_init(|| cgroup2_mount().ok());
    Some(relative_name(path, mount.as_deref()))
}

/// `path` relative to `mount`, as `/a/b` (the mount itself is `/`); the
/// whole path when it is not under the mount.
fn relative_name(path: &Path, mount: Option<&Path>) -> String {
    match mount.and_then(|m| path.strip_prefix(m).ok()) {
        Some(rel) => format!("/{}", rel.display()),
        None => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_relative_to_the_mount() {
        let mount = Path::new("/sys/fs/cgroup/unified");
        let name = |p: &str, m| relative_name(Path::new(p), m);
        assert_eq!(name("/sys/fs/cgroup/unified/a/b", Some(mount)), "/a/b");
        assert_eq!(name("/sys/fs/cgroup/unified", Some(mount)), "/");
        assert_eq!(name("/elsewhere/x", Some(mount)), "/elsewhere/x");
        assert_eq!(
            name("/sys/fs/cgroup/unified/a", None),
            "/sys/fs/cgroup/unified/a"
        );
    }

    #[test]
    fn a_cached_path_is_trusted_for_a_while_then_checked_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("cg");
        std::fs::create_dir(&dir).expect("mkdir");
        let id = cgroup_id(&dir).expect("ino");
        let t0 = Instant::now();
        path_cache().lock().expect("lock").insert(
            id,
            Known {
                path: dir.clone(),
                checked: t0,
            },
        );
        // Renamed: within RECHECK_AFTER the cached answer stands, unchecked.
        let moved = tmp.path().join("moved");
        std::fs::rename(&dir, &moved).expect("rename");
        let soon = t0 + RECHECK_AFTER / 2;
        assert_eq!(cgroup_path_at(id, soon), Some(dir.clone()));
        // Later it is checked: the old path no longer has the id, so it is
        // not the answer (the walk of the real hierarchy cannot find a
        // temporary directory).
        let later = t0 + RECHECK_AFTER * 2;
        assert_ne!(cgroup_path_at(id, later), Some(dir.clone()));
        // A path that still has its id is confirmed, and trusted again.
        path_cache().lock().expect("lock").insert(
            id,
            Known {
                path: moved.clone(),
                checked: t0,
            },
        );
        assert_eq!(cgroup_path_at(id, later), Some(moved.clone()));
        let checked = path_cache()
            .lock()
            .expect("lock")
            .get(&id)
            .map(|k| k.checked);
        assert_eq!(checked, Some(later));
        path_cache().lock().expect("lock").remove(&id);
    }
}
