//! `HungFs`: a FUSE file system (tests/hung_fs.py) whose files stat and open at once and
//! whose reads never return, as a file on a hung network file system's do. Dropping it
//! SIGKILLs the daemon by PID (every blocked reader then gets ENOTCONN) and unmounts it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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
        std::fs::create_dir_all(dir).expect("creating the mount point");
        let script = paths::repo_root().join("tests/hung_fs.py");
        let mut cmd = Command::new(paths::venv_python());
        cmd.arg(&script)
            .arg(dir)
            .args(names)
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
