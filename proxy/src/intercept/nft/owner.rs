//! Who made a redirected connection, without eBPF: the workload's socket is
//! found in `/proc/net/tcp{,6}` by its 4-tuple (its own address, and the
//! original destination from conntrack), which gives the uid and the socket
//! inode; the process holding that inode is then found under `/proc/PID/fd`,
//! scanning only the selected cgroups' processes (or, in UID mode, the
//! processes of that uid).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Errors of finding a socket's owner.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// A `/proc` table could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No socket with this 4-tuple exists (it closed, or lives in another
    /// network namespace).
    #[error("no socket {local} -> {remote} in /proc/net/tcp")]
    NotFound {
        /// The workload's address.
        local: SocketAddr,
        /// The original destination.
        remote: SocketAddr,
    },
}

/// The owner of a workload's socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOwner {
    /// The socket's uid (always known once the socket is found).
    pub uid: u32,
    /// The socket inode.
    pub inode: u64,
    /// The process holding the socket, when it could be found.
    pub pid: Option<u32>,
    /// Its `comm`.
    pub comm: Option<String>,
    /// Its cgroup v2 path relative to the mount (`/ci.slice/job`).
    pub cgroup: Option<String>,
}

/// Finds the socket `local -> remote` (as the workload sees it) and its
/// process. `cgroups` are the selected cgroup directories (empty: UID mode).
pub fn find(
    local: SocketAddr,
    remote: SocketAddr,
    cgroups: &[PathBuf],
) -> Result<SocketOwner, OwnerError> {
    let (uid, inode) = socket_entry(local, remote)?;
    let mut owner = SocketOwner {
        uid,
        inode,
        pid: None,
        comm: None,
        cgroup: None,
    };
    let candidates = if cgroups.is_empty() {
        uid_pids(uid)
    } else {
        cgroups.iter().flat_map(|c| cgroup_pids(c)).collect()
    };
    let target = format!("socket:[{inode}]");
    if let Some(pid) = candidates.into_iter().find(|p| holds(*p, &target)) {
        owner.pid = Some(pid);
        owner.comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()
            .map(|s| s.trim_end().to_owned());
        owner.cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("0::"))
                    .map(str::to_owned)
            });
    }
    Ok(owner)
}

fn socket_entry(local: SocketAddr, remote: SocketAddr) -> Result<(u32, u64), OwnerError> {
    let mut tables = vec!["/proc/net/tcp6"];
    if local.is_ipv4() {
        tables.insert(0, "/proc/net/tcp");
    }
    for table in tables {
        let text = std::fs::read_to_string(table).map_err(|source| OwnerError::Read {
            path: table.into(),
            source,
        })?;
        if let Some(hit) = find_in_table(&text, local, remote) {
            return Ok(hit);
        }
    }
    Err(OwnerError::NotFound { local, remote })
}

/// `(uid, inode)` of the entry `local -> remote` in `/proc/net/tcp{,6}` text.
/// IPv4 tuples also match their v4-mapped form (IPv6 sockets).
pub(crate) fn find_in_table(
    text: &str,
    local: SocketAddr,
    remote: SocketAddr,
) -> Option<(u32, u64)> {
    let norm = |a: SocketAddr| (crate::rules::canonical_ip(a.ip()), a.port());
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (l, r) = (parse_addr(f.get(1)?)?, parse_addr(f.get(2)?)?);
        if norm(l) != norm(local) || norm(r) != norm(remote) {
            return None;
        }
        Some((f.get(7)?.parse().ok()?, f.get(9)?.parse().ok()?))
    })
}

/// `0100007F:1F90` (words in host byte order, as the kernel prints them).
pub(crate) fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| {
        let w = addr.get(i * 8..i * 8 + 8)?;
        u32::from_str_radix(w, 16).ok().map(u32::to_ne_bytes)
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn cgroup_pids(dir: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        if let Ok(text) = std::fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        if let Ok(entries) = std::fs::read_dir(&d) {
            stack.extend(
                entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

fn uid_pids(uid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            (e.metadata().ok()?.uid() == uid).then_some(pid)
        })
        .collect()
}

fn holds(pid: u32, target: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten()
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target))
}
