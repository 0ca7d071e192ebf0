//! Child processes the harness starts: killed by PID when their guard drops, output captured
//! line by line.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// A process started by the harness. Dropping it sends SIGTERM to its PID, waits up to two
/// seconds, then SIGKILLs it: never anything but the PID we spawned.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Option<Child>,
}

impl ChildGuard {
    /// Spawns `cmd`; `name` appears in panic messages.
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({cmd:?}): {e}"));
        Self {
            name: name.to_string(),
            child: Some(child),
        }
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The child itself, e.g. to take its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child is present until drop")
    }

    /// The exit status if the process has already exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends `sig` to the child's PID (no-op once it has been reaped).
    pub fn signal(&mut self, sig: Signal) {
        if self.try_status().is_none() {
            if let Ok(pid) = i32::try_from(self.pid()) {
                let _ = kill(Pid::from_raw(pid), sig);
            }
        }
    }

    /// Stops the process (SIGTERM, then SIGKILL after `grace`) and returns its exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// The name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

/// Lines read from a child's pipe by a background thread, shared with the test.
#[derive(Clone, Debug, Default)]
pub struct Lines {
    inner: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Lines {
    /// Starts a thread that reads `pipe` line by line until EOF. Each line is also passed to
    /// `tee` (e.g. to write a log file).
    pub fn capture(
        pipe: impl Read + Send + 'static,
        mut tee: impl FnMut(&str) + Send + 'static,
    ) -> (Self, JoinHandle<()>) {
        let lines = Self::default();
        let shared = lines.clone();
        let handle = std::thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']).to_string();
                        tee(&line);
                        let (list, cv) = &*shared.inner;
                        list.lock().expect("lines lock").push(line);
                        cv.notify_all();
                    }
                }
            }
        });
        (lines, handle)
    }

    /// A copy of every line read so far.
    pub fn snapshot(&self) -> Vec<String> {
        self.inner.0.lock().expect("lines lock").clone()
    }

    /// Waits until some line satisfies `pred`, returning it, or `None` after `timeout`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (list, cv) = &*self.inner;
        let mut guard = list.lock().expect("lines lock");
        let mut seen = 0;
        loop {
            if let Some(l) = guard[seen..].iter().find(|l| pred(l)) {
                return Some(l.clone());
            }
            seen = guard.len();
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            guard = cv
                .wait_timeout(guard, (deadline - now).min(Duration::from_millis(50)))
                .expect("lines lock")
                .0;
        }
    }
}

/// Output of a command run to completion by [`run_with_timeout`].
#[derive(Clone, Debug)]
pub struct Finished {
    /// Exit code; -1 when killed by a signal or by the timeout.
    pub exit: i32,
    /// Captured stdout.
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
    /// Whether the harness killed it at the timeout.
    pub timed_out: bool,
}

/// Runs `cmd` with piped stdout/stderr, killing it (by PID) after `timeout`.
pub fn run_with_timeout(name: &str, cmd: &mut Command, timeout: Duration) -> Finished {
    use std::process::Stdio;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut guard = ChildGuard::spawn(name, cmd);
    let out = guard.child_mut().stdout.take().expect("piped stdout");
    let err = guard.child_mut().stderr.take().expect("piped stderr");
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let (out, err) = (read_all(Box::new(out)), read_all(Box::new(err)));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = guard.try_status() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break guard.stop(Duration::ZERO);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Finished {
        exit: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        timed_out,
    }
}
