//! Privileged resources the eBPF topology and the connect() micro-benchmark
//! create, each behind a Drop guard: a cgroup v2 directory for the load
//! client ([`BenchCgroup`]), a bpffs pin directory for iron-proxy's programs
//! ([`PinDir`]) and an nftables table ([`NftTable`]).
//!
//! Every name is `iron-bench-<pid>-<n>` (`iron_bench_<pid>_<n>` for nft), so
//! leftovers of a killed run (whose `<pid>` is gone) are swept by the next
//! run ([`sweep_stale`]). SIGINT and SIGTERM only raise a flag
//! ([`interrupted`]); the bench then stops at the next check and unwinds
//! through the guards, so Ctrl-C removes everything too.
//!
//! Mount points (cgroup2, bpffs) come from `/proc/self/mountinfo`, never
//! from a hard-coded path.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use anyhow::{bail, Context, Result};
pub use iron_proxy_tests::cgroup::mount_of;
use iron_proxy_tests::cgroup::{pid_gone, stale_entries};

/// Prefix of every cgroup and pin directory the bench creates.
const PREFIX: &str = "iron-bench-";
/// Prefix of every nft table the bench creates.
const NFT_PREFIX: &str = "iron_bench_";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn unique(prefix: &str, sep: char) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{sep}{n}", std::process::id())
}

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
    let msg = b"\nbench: interrupted; cleaning up (cgroups, pins, nft tables)\n";
    // SAFETY: write(2) is async-signal-safe; the buffer is a static string.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// Turns SIGINT and SIGTERM into a flag checked by [`check_interrupted`].
pub fn install_interrupt_handler() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores an atomic and calls write(2).
        unsafe { libc::signal(sig, handler) };
    }
}

/// Whether SIGINT or SIGTERM arrived.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails once SIGINT or SIGTERM arrived, so that the caller unwinds.
pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// A cgroup v2 directory for processes the bench starts. Dropping it kills
/// (by PID) whatever is still inside, then removes it.
#[derive(Debug)]
pub struct BenchCgroup {
    path: PathBuf,
}

impl BenchCgroup {
    /// Creates `<cgroup2 mount>/iron-bench-<pid>-<n>`.
    pub fn new() -> Result<Self> {
        let mount = mount_of("cgroup2").context("no cgroup2 filesystem in /proc/self/mountinfo")?;
        let name = unique(PREFIX, '-');
        let path = mount.join(&name);
        std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(BenchCgroup { path })
    }

    /// The absolute path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BenchCgroup {
    fn drop(&mut self) {
        remove_cgroup(&self.path);
    }
}

/// Kills (by PID) every process in `path`, a cgroup only the bench put its
/// own children in, then removes the directory.
fn remove_cgroup(path: &Path) {
    if let Err(e) = iron_proxy_tests::cgroup::kill_and_remove_cgroup(path) {
        eprintln!(
            "bench: warning: could not remove cgroup {}: {e}",
            path.display()
        );
    }
}

/// A bpffs directory (`<bpffs>/iron-bench-<pid>-<n>`, not created) for
/// iron-proxy's pins. Dropping it detaches everything pinned there.
#[derive(Debug)]
pub struct PinDir {
    path: PathBuf,
}

impl PinDir {
    /// A fresh pin path on the first bpffs mount.
    pub fn new() -> Result<Self> {
        let bpffs = mount_of("bpf").context(
            "no bpf filesystem in /proc/self/mountinfo (mount one: mount -t bpf bpf /sys/fs/bpf)",
        )?;
        Ok(PinDir {
            path: bpffs.join(unique(PREFIX, '-')),
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = iron_proxy::intercept::Interceptor::detach(&self.path) {
            eprintln!("bench: warning: detaching {}: {e}", self.path.display());
        }
    }
}

/// An nftables table (family `inet`) the bench created; deleted on drop.
#[derive(Debug)]
pub struct NftTable {
    name: String,
}

impl NftTable {
    /// Creates `table inet iron_bench_<pid>_<n> { <body> }`.
    pub fn create(body: &str) -> Result<Self> {
        let name = unique(NFT_PREFIX, '_');
        let ruleset = format!("table inet {name} {{\n{body}\n}}\n");
        // The guard exists before nft runs, so a half-applied table goes too.
        let table = NftTable { name };
        nft_stdin(&ruleset).with_context(|| format!("nft -f - <<EOF\n{ruleset}EOF"))?;
        Ok(table)
    }
}

impl Drop for NftTable {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn nft_stdin(ruleset: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running nft (apt-get install nftables)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(ruleset.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "nft failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The creator PID in `iron-bench-<pid>-<n>` or `iron_bench_<pid>_<n>`.
fn creator_pid(name: &str) -> Option<u32> {
    let rest = name
        .strip_prefix(PREFIX)
        .or_else(|| name.strip_prefix(NFT_PREFIX))?;
    rest.split(['-', '_']).next()?.parse().ok()
}

fn is_stale(name: &str) -> bool {
    creator_pid(name).is_some_and(pid_gone)
}

/// Detaches pins, removes cgroups and deletes nft tables left by bench runs
/// that no longer exist.
pub fn sweep_stale() {
    let stale = |dir: &Path| stale_entries(dir, is_stale);
    if let Some(bpffs) = mount_of("bpf") {
        for pin in stale(&bpffs) {
            eprintln!("bench: detaching stale pins {}", pin.display());
            let _ = iron_proxy::intercept::Interceptor::detach(&pin);
        }
    }
    if let Some(mount) = mount_of("cgroup2") {
        for cg in stale(&mount) {
            eprintln!("bench: removing stale cgroup {}", cg.display());
            remove_cgroup(&cg);
        }
    }
    let Ok(out) = Command::new("nft")
        .args(["list", "tables", "inet"])
        .stderr(Stdio::null())
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.trim().strip_prefix("table inet ") else {
            continue;
        };
        if is_stale(name) {
            eprintln!("bench: deleting stale nft table inet {name}");
            let _ = Command::new("nft")
                .args(["delete", "table", "inet", name])
                .status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_creator_pid() {
        let me = std::process::id();
        assert_eq!(creator_pid(&unique(PREFIX, '-')), Some(me));
        assert_eq!(creator_pid(&unique(NFT_PREFIX, '_')), Some(me));
        assert_eq!(creator_pid("iron-proxy"), None);
        assert_eq!(creator_pid("iron-bench-x-1"), None);
        assert!(!is_stale(&unique(PREFIX, '-')));
    }

    #[test]
    fn mountinfo_has_proc() {
        assert!(mount_of("proc").is_some());
    }
}
