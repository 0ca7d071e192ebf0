//! `HungFs`: a FUSE file system (tests/hung_fs.py) whose files stat and open at once and
//! whose reads never return, as a file on a hung network file system's do. Dropping it
//! SIGKILLs the daemon by PID (every blocked reader then gets ENOTCONN) and unmounts it.
//!
//! A test process killed outright never drops it: the daemon then gets SIGTERM from the
//! kernel (`PR_SET_PDEATHSIG`, set by the daemon itself), detaches its mount and exits. The
//! signal comes when the *thread* that started the daemon ends, so a `HungFs` must not
//! outlive the thread that mounted it (a test's own thread, as usual). A mount left by a run
//! older than that, or by a signal lost in the instant the daemon starts, names its run's
//! PID in its source (`ipx-<pid>-hung_fs`), and [`detach_stale_mounts`] detaches those of
//! dead runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use nix::mount::{umount2, MntFlags};
use nix::sys::signal::Signal;

use crate::paths;
use crate::process::{ChildGuard, Lines};

/// The mount, under a directory the test owns, with the names given to [`HungFs::mount`].
pub struct HungFs {
    dir: PathBuf,
    child: ChildGuard,
    out: Lines,
}

impl HungFs {
    /// Mounts the file system at `dir` (created if missing) with a regular file for each of
    /// `names`, and waits until the mount answers.
    pub fn mount(dir: &Path, names: &[&str]) -> Self {
        static SWEEP: Once = Once::new();
        SWEEP.call_once(detach_stale_mounts);
        std::fs::create_dir_all(dir).expect("creating the mount point");
        let script = paths::repo_root().join("tests/hung_fs.py");
        let mut cmd = Command::new(paths::venv_python());
        cmd.arg(&script)
            .arg(dir)
            .args(names)
            .env("HUNG_FS_PARENT", std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = ChildGuard::spawn("hung_fs.py", &mut cmd);
        let stdout = child.child_mut().stdout.take().expect("piped stdout");
        let stderr = child.child_mut().stderr.take().expect("piped stderr");
        let (out, _) = Lines::capture(stdout, |_| {});
        let (err, _) = Lines::capture(stderr, |_| {});
        let mut fs = HungFs {
            dir: dir.to_path_buf(),
            child,
            out: out.clone(),
        };
        if out
            .wait_for(Duration::from_secs(20), |l| l == "ready")
            .is_none()
        {
            let status = fs.child.try_status();
            panic!(
                "hung_fs.py did not mount {} (exit {status:?}); is libfuse2 installed \
                 (scripts/setup-test-env.sh)?\n{}",
                dir.display(),
                err.snapshot().join("\n")
            );
        }
        fs
    }

    /// Waits (20 s at most) until a read of `name` has started, and so hangs.
    pub fn wait_for_read(&self, name: &str) {
        let line = format!("read {name}");
        assert!(
            self.out
                .wait_for(Duration::from_secs(20), |l| l == line)
                .is_some(),
            "nothing read {name} on the hung file system"
        );
    }

    /// The daemon's PID.
    pub fn daemon_pid(&self) -> u32 {
        self.child.pid()
    }

    /// The path of the file `name` on the mount.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for HungFs {
    fn drop(&mut self) {
        // SIGTERM would wait for the blocked reads; SIGKILL ends the FUSE connection.
        self.child.signal(Signal::SIGKILL);
        self.child.stop(Duration::from_secs(2));
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
    }
}

/// The mount points of `hung_fs.py` mounts, with the PID of the test process that made each
/// (from its source, `ipx-<pid>-hung_fs`), read from `/proc/self/mountinfo`.
pub fn hung_fs_mounts() -> Vec<(PathBuf, u32)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|line| {
            // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
            let (head, tail) = line.split_once(" - ")?;
            let point = head.split(' ').nth(4)?;
            let source = tail.split(' ').nth(1)?;
            let pid = source.strip_prefix("ipx-")?.strip_suffix("-hung_fs")?;
            Some((PathBuf::from(unescape_octal(point)), pid.parse().ok()?))
        })
        .collect()
}

/// Lazily detaches the `hung_fs.py` mounts of test processes that no longer exist.
pub fn detach_stale_mounts() {
    for (point, pid) in hung_fs_mounts() {
        if !Path::new("/proc").join(pid.to_string()).exists() {
            eprintln!("detaching the stale hung_fs mount {}", point.display());
            let _ = umount2(&point, MntFlags::MNT_DETACH);
        }
    }
}

/// A mountinfo path with its `\ooo` escapes (space, tab, newline, backslash) decoded.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = b.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (b[i], code) {
            (b'\\', Some(c)) => {
                out.push(c);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(super::unescape_octal(r"/tmp/a\040b\134c"), "/tmp/a b\\c");
        assert_eq!(super::unescape_octal(r"/plain\0"), r"/plain\0");
    }
}
