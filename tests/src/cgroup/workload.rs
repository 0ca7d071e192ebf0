//! [`Workload`]: a command that joins a test cgroup (and optionally switches uid) between
//! fork and exec, and the runners built on it (curl, Python).

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::ops::Deref;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::COUNTER;
use crate::client::{CurlResult, PyResult, PROXY_ENV};
use crate::process::ChildGuard;

/// How long a workload may run before it is killed.
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes `cmd`'s child join the cgroup whose `cgroup.procs` is `procs` between fork and
/// exec, then switch to `uid` (gid the same, no supplementary groups) if given.
pub(crate) fn join_before_exec(cmd: &mut Command, procs: &Path, uid: Option<u32>) {
    let procs =
        CString::new(procs.as_os_str().as_encoded_bytes()).expect("cgroup path without NUL");
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // calls (open, write, close, setgroups, setgid, setuid) on data prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
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
}

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
    pub(super) fn new(program: impl AsRef<OsStr>, procs: PathBuf, shared: &Path) -> Self {
        let mut cmd = Command::new(program);
        // Interception must work without them.
        for var in PROXY_ENV {
            cmd.env_remove(var);
        }
        Self {
            cmd,
            procs,
            uid: None,
            shared: shared.to_path_buf(),
        }
    }

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
        join_before_exec(&mut self.cmd, &self.procs, self.uid);
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
    fn keeps_the_last_header_block() {
        let dump = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\nx-a: b\r\n\r\n";
        assert_eq!(last_headers(dump), vec![("x-a".into(), "b".into())]);
    }
}
