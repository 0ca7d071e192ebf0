//! Workloads under eBPF interception: [`TestCgroup`], a cgroup v2 directory created for one
//! test, runs real clients inside it (optionally as another uid); [`PinGuard`] owns a bpffs
//! pin directory and ends interception when it drops.
//!
//! ```no_run
//! # use iron_proxy_tests::*;
//! let cg = TestCgroup::new();
//! let pins = PinGuard::new();
//! // ... start a proxy with `intercept: {cgroups: [cg.path()], pin_path: pins.path()}` ...
//! let r = cg.curl(["--resolve", "httpbin.test:80:198.18.0.10", "http://httpbin.test/get"]);
//! assert_eq!(r.status, 200, "{r}");
//! let who = r.pid; // the curl process, as the audit record's `client.pid` names it
//! ```
//!
//! The cgroup is `<cgroup2 mount>/iron-e2e-<pid>-<n>`, the mount found in
//! `/proc/self/mountinfo`. Only processes the test started ever enter it, so on drop every
//! process still inside is killed by PID before the directory is removed. Leftovers of a
//! killed test run (cgroups and pins whose `<pid>` is gone) are swept by the next run.

mod workload;

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::client::PyResult;

pub(crate) use workload::join_before_exec;
pub use workload::{system_python, Ran, Workload, WorkloadCurl};

/// Prefix of every cgroup and pin directory the harness creates: `iron-e2e-<pid>-<n>`.
const PREFIX: &str = "iron-e2e-";
pub(crate) static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

fn unique_name() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{n}", std::process::id())
}

/// The cgroup v2 mount point, from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> PathBuf {
    mount_of("cgroup2").expect("no cgroup2 filesystem in /proc/self/mountinfo")
}

/// The first bpffs mount point, from `/proc/self/mountinfo`.
pub fn bpffs_mount() -> PathBuf {
    mount_of("bpf").expect(
        "no bpf filesystem in /proc/self/mountinfo (run scripts/setup-test-env.sh, which mounts it)",
    )
}

/// The mount point of the first `fstype` filesystem in `/proc/self/mountinfo`.
pub fn mount_of(fstype: &str) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (head, tail) = line.split_once(" - ")?;
        (tail.split_whitespace().next()? == fstype)
            .then(|| head.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// A cgroup v2 directory for one test's workloads. Dropping it kills (by PID) whatever is
/// still inside, then removes it.
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
    relative: String,
    shared: tempfile::TempDir,
}

impl TestCgroup {
    /// Creates `<cgroup2 mount>/iron-e2e-<pid>-<n>`. Panics when not root.
    pub fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "TestCgroup needs root; start the test with require_root!()"
        );
        SWEEP.call_once(sweep_stale);
        let name = unique_name();
        let path = cgroup2_mount().join(&name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        let shared = crate::paths::scratch_dir("workload");
        // Workloads running as another uid write their output here.
        std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod workload dir");
        Self {
            path,
            relative: format!("/{name}"),
            shared,
        }
    }

    /// The cgroup's absolute path (for `intercept.cgroups`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path relative to the cgroup v2 mount, as audit records show it (`/iron-e2e-...`).
    pub fn relative(&self) -> &str {
        &self.relative
    }

    /// Removes the (empty) cgroup and creates it again under the same path, as systemd does
    /// when it restarts a unit: a new cgroup, with a new id and nothing attached to it.
    pub fn make_again(&self) {
        let old = std::fs::metadata(&self.path).map(|m| m.ino()).ok();
        std::fs::remove_dir(&self.path)
            .unwrap_or_else(|e| panic!("removing {}: {e}", self.path.display()));
        std::fs::create_dir(&self.path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", self.path.display()));
        let new = std::fs::metadata(&self.path).map(|m| m.ino()).ok();
        assert_ne!(old, new, "{} has a new cgroup id", self.path.display());
    }

    /// PIDs currently inside.
    pub fn pids(&self) -> Vec<u32> {
        std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// A world-writable scratch directory (removed on drop) for workload files, so that
    /// workloads running as another uid can write their output and read what they need.
    pub fn shared_dir(&self) -> &Path {
        self.shared.path()
    }

    /// Copies `file` into [`Self::shared_dir`], world-readable, for workloads running as
    /// another uid (e.g. the proxy's CA for `curl --cacert`).
    pub fn share(&self, file: impl AsRef<Path>) -> PathBuf {
        let file = file.as_ref();
        let name = file.file_name().expect("a file name");
        let dst = self.shared.path().join(name);
        std::fs::copy(file, &dst).unwrap_or_else(|e| panic!("copying {}: {e}", file.display()));
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o644))
            .expect("chmod shared file");
        dst
    }

    /// A command that runs `program` inside this cgroup.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Workload {
        Workload::new(program, self.path.join("cgroup.procs"), self.shared.path())
    }

    /// Makes `cmd` run inside this cgroup (it joins between fork and exec, so everything it
    /// runs is a workload), as `uid` when given; for clients built as a plain `Command`
    /// elsewhere (arguments, environment, working directory already set).
    pub fn enter(&self, cmd: &mut std::process::Command, uid: Option<u32>) {
        workload::join_before_exec(cmd, &self.path.join("cgroup.procs"), uid);
    }

    /// `curl ARGS` inside the cgroup, as root; see [`Workload::curl`].
    pub fn curl<I, S>(&self, args: I) -> WorkloadCurl
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.command("curl").curl(args)
    }

    /// The system `python3 -c script args...` (stdlib only) inside the cgroup, as root.
    pub fn python<I, S>(&self, script: &str, args: I) -> PyResult
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.command(system_python()).python(script, args)
    }

    /// `dig ARGS` inside the cgroup, as root; returns its stdout (panics if dig could not run).
    pub fn dig(&self, args: &[&str]) -> Ran {
        self.command("dig").args(args).run()
    }
}

impl Default for TestCgroup {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        remove_cgroup(&self.path);
    }
}

/// Kills (by PID) every process in `path`, a cgroup only the harness put processes in, then
/// removes the directory.
fn remove_cgroup(path: &Path) {
    if let Err(e) = kill_and_remove_cgroup(path) {
        eprintln!(
            "warning: could not remove test cgroup {}: {e}",
            path.display()
        );
    }
}

/// Kills (by PID) every process in the cgroup `path`, then removes the directory (gone
/// already: done). Only for a cgroup the caller alone put processes in. Gives up after five
/// seconds with the error of the last attempt. Shared with the bench's sandbox.
pub fn kill_and_remove_cgroup(path: &Path) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
        let pids: Vec<i32> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() || Instant::now() >= deadline {
            break;
        }
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    while let Err(e) = std::fs::remove_dir(path) {
        if e.kind() == std::io::ErrorKind::NotFound {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// A bpffs pin directory (`<bpffs>/iron-e2e-<pid>-<n>`, not created) for `intercept.pin_path`.
/// Dropping it detaches everything pinned there, ending interception.
#[derive(Debug)]
pub struct PinGuard {
    path: PathBuf,
}

impl PinGuard {
    /// A fresh, unique pin path.
    pub fn new() -> Self {
        SWEEP.call_once(sweep_stale);
        Self {
            path: bpffs_mount().join(unique_name()),
        }
    }

    /// The pin directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether anything is pinned there.
    pub fn is_pinned(&self) -> bool {
        self.path.exists()
    }
}

impl Default for PinGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        if let Err(e) = iron_proxy::intercept::Interceptor::detach(&self.path) {
            eprintln!("warning: detaching {}: {e}", self.path.display());
        }
    }
}

/// The creator PID in `iron-e2e-<pid>-<n>`.
fn creator_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Whether no process `pid` exists (any more).
pub fn pid_gone(pid: u32) -> bool {
    !Path::new("/proc").join(pid.to_string()).exists()
}

/// The entries of `dir` (none if it cannot be read) whose names `is_stale` picks.
/// Shared with the bench's sandbox.
pub fn stale_entries(dir: &Path, is_stale: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| is_stale(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect()
}

/// Detaches pins and removes cgroups left by test processes that no longer exist.
fn sweep_stale() {
    let stale = |dir: &Path| stale_entries(dir, |name| creator_pid(name).is_some_and(pid_gone));
    if let Some(bpffs) = mount_of("bpf") {
        for pin in stale(&bpffs) {
            eprintln!("detaching stale test pins {}", pin.display());
            let _ = iron_proxy::intercept::Interceptor::detach(&pin);
        }
    }
    if let Some(mount) = mount_of("cgroup2") {
        for cg in stale(&mount) {
            eprintln!("removing stale test cgroup {}", cg.display());
            remove_cgroup(&cg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_creator_pid() {
        let name = unique_name();
        assert_eq!(creator_pid(&name), Some(std::process::id()));
        assert_eq!(creator_pid("iron-proxy"), None);
        assert_eq!(creator_pid("iron-e2e-x-1"), None);
    }
}
