//! cgroup v2 discovery: where the hierarchy is mounted (from
//! `/proc/self/mountinfo`, never assumed), resolving configured cgroup paths,
//! cgroup ids, and the reverse lookup from an id to a path for audit records.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, OnceLock};

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

fn path_cache() -> &'static Mutex<HashMap<u64, PathBuf>> {
    static CACHE: OnceLock<Mutex<HashMap<u64, PathBuf>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Most directories `cgroup_path` visits per lookup, so a huge hierarchy
/// cannot stall the caller.
const WALK_LIMIT: usize = 20_000;

/// The directory of the cgroup with this id, best effort: a walk of the
/// cgroup2 hierarchy, cached (entries are re-checked before use).
pub fn cgroup_path(id: u64) -> Option<PathBuf> {
    let cache = path_cache();
    {
        let guard = cache.lock().ok()?;
        if let Some(p) = guard.get(&id) {
            if cgroup_id(p).ok() == Some(id) {
                return Some(p.clone());
            }
        }
    }
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
    if let Ok(mut guard) = cache.lock() {
        if guard.len() > 4 * WALK_LIMIT {
            guard.clear();
        }
        guard.extend(seen);
    }
    found
}
