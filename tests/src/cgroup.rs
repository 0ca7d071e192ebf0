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

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::ops::Deref;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::client::{CurlResult, PyResult};
use crate::process::ChildGuard;

/// Prefix of every cgroup and pin directory the harness creates: `iron-e2e-<pid>-<n>`.
const PREFIX: &str = "iron-e2e-";
/// How long a workload may run before it is killed.
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(30);

static COUNTER: AtomicU32 = AtomicU32::new(0);
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

fn mount_of(fstype: &str) -> Option<PathBuf> {
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
        let mut cmd = Command::new(program);
        for var in PROXY_ENV {
            cmd.env_remove(var);
        }
        Workload {
            cmd,
            procs: self.path.join("cgroup.procs"),
            uid: None,
            shared: self.shared.path().to_path_buf(),
        }
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
            return;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "warning: could not remove test cgroup {}: {e}",
                path.display()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
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

/// Detaches pins and removes cgroups left by test processes that no longer exist.
fn sweep_stale() {
    let stale = |dir: &Path| -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                creator_pid(&name)
                    .is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists())
            })
            .map(|e| e.path())
            .collect()
    };
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

/// Proxy variables scrubbed from every workload: interception must work without them.
const PROXY_ENV: [&str; 8] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// The distribution's Python (stdlib only): readable by every uid, unlike the test venv.
pub fn system_python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// A command to run inside a [`TestCgroup`]. The child joins the cgroup between fork and
/// exec, so everything it runs, and every descendant, is a workload.
#[derive(Debug)]
pub struct Workload {
    cmd: Command,
    procs: PathBuf,
    uid: Option<u32>,
    shared: PathBuf,
}

/// What a workload did.
#[derive(Clone, Debug)]
pub struct Ran {
    /// Its PID (the audit record's `client.pid` for connections it made itself).
    pub pid: u32,
    /// Exit code; -1 when killed.
    pub exit: i32,
    /// stdout, lossy UTF-8.
    pub stdout: String,
    /// stderr, lossy UTF-8.
    pub stderr: String,
}

impl fmt::Display for Ran {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pid {} exit {}\nstdout:\n{}\nstderr:\n{}",
            self.pid, self.exit, self.stdout, self.stderr
        )
    }
}

impl Workload {
    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Runs as `uid` (gid the same, no supplementary groups) after joining the cgroup.
    pub fn as_uid(mut self, uid: u32) -> Self {
        self.uid = Some(uid);
        self
    }

    /// Spawns it inside the cgroup; the guard kills it (by PID) on drop.
    pub fn spawn(mut self) -> ChildGuard {
        let procs = CString::new(self.procs.into_os_string().into_encoded_bytes())
            .expect("cgroup path without NUL");
        let uid = self.uid;
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
        // calls (open, write, close, setgroups, setgid, setuid) on data prepared before fork.
        unsafe {
            self.cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0" moves the writing process: the child, before it execs.
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(uid) = uid {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(uid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        ChildGuard::spawn("workload", &mut self.cmd)
    }

    /// Runs it to completion (killed after 30 s), capturing its output.
    pub fn run(mut self) -> Ran {
        self.cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut guard = self.spawn();
        let pid = guard.pid();
        let read_all = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut v = Vec::new();
                let _ = r.read_to_end(&mut v);
                v
            })
        };
        let out = read_all(Box::new(guard.child_mut().stdout.take().expect("piped")));
        let err = read_all(Box::new(guard.child_mut().stderr.take().expect("piped")));
        let deadline = Instant::now() + WORKLOAD_TIMEOUT;
        let status = loop {
            if let Some(status) = guard.try_status() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break guard.stop(Duration::ZERO);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let text = |h: std::thread::JoinHandle<Vec<u8>>| {
            String::from_utf8_lossy(&h.join().unwrap_or_default()).into_owned()
        };
        Ran {
            pid,
            exit: status.and_then(|s| s.code()).unwrap_or(-1),
            stdout: text(out),
            stderr: text(err),
        }
    }

    /// Runs `python -c script args...` (the program given to [`TestCgroup::command`]).
    pub fn python<I, S>(self, script: &str, args: I) -> PyResult
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut w = self.arg("-c").arg(script).args(args);
        w.cmd.env("PYTHONUNBUFFERED", "1");
        let ran = w.run();
        PyResult {
            exit: ran.exit,
            stdout: ran.stdout,
            stderr: ran.stderr,
        }
    }

    /// Runs curl (the program given to [`TestCgroup::command`]) with `ARGS` plus
    /// `-sS --noproxy '*' --max-time 10`, no proxy settings: whatever reaches the proxy got
    /// there by interception.
    pub fn curl<I, S>(self, args: I) -> WorkloadCurl
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let body = self.shared.join(format!("curl-{n}.body"));
        let head = self.shared.join(format!("curl-{n}.head"));
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let ran = self
            .args([
                "-sS",
                "--noproxy",
                "*",
                "--max-time",
                "10",
                "-w",
                "%{http_code}",
            ])
            .arg("-o")
            .arg(&body)
            .arg("-D")
            .arg(&head)
            .args(args)
            .run();
        let body_bytes = std::fs::read(&body).unwrap_or_default();
        let heads = std::fs::read_to_string(&head).unwrap_or_default();
        let _ = std::fs::remove_file(&body);
        let _ = std::fs::remove_file(&head);
        WorkloadCurl {
            pid: ran.pid,
            result: CurlResult {
                status: ran.stdout.trim().parse().unwrap_or(0),
                body: String::from_utf8_lossy(&body_bytes).into_owned(),
                body_bytes,
                headers: last_headers(&heads),
                stderr: ran.stderr,
                exit: ran.exit,
            },
        }
    }
}

/// The response headers of the last response in a `curl -D` dump.
fn last_headers(dump: &str) -> Vec<(String, String)> {
    let mut last = Vec::new();
    for line in dump.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("HTTP/") {
            last.clear();
        } else if let Some((k, v)) = line.split_once(':') {
            last.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    last
}

/// A curl run inside a cgroup: the usual [`CurlResult`] plus curl's PID.
#[derive(Clone, Debug)]
pub struct WorkloadCurl {
    /// curl's PID.
    pub pid: u32,
    /// What curl did.
    pub result: CurlResult,
}

impl Deref for WorkloadCurl {
    type Target = CurlResult;

    fn deref(&self) -> &CurlResult {
        &self.result
    }
}

impl fmt::Display for WorkloadCurl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "(workload pid {}) {}", self.pid, self.result)
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

    #[test]
    fn keeps_the_last_header_block() {
        let dump = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\nx-a: b\r\n\r\n";
        assert_eq!(last_headers(dump), vec![("x-a".into(), "b".into())]);
    }
}
