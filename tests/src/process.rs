//! Child processes the harness starts: killed by PID when their guard drops, output captured
//! line by line.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Set once the reader thread has read the pipe to its end (or failed on it).
    closed: Arc<AtomicBool>,
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
                    Ok(0) | Err(_) => {
                        // Flag first, then notify under the lock: a waiter that checked the
                        // flag under the lock is either woken or sees it set.
                        shared.closed.store(true, Ordering::SeqCst);
                        let (list, cv) = &*shared.inner;
                        let _guard = list.lock().expect("lines lock");
                        cv.notify_all();
                        break;
                    }
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

    /// Lines of no pipe: empty, and closed already.
    pub fn none() -> Self {
        let lines = Self::default();
        lines.closed.store(true, Ordering::SeqCst);
        lines
    }

    /// Waits (up to `timeout`) until the pipe has been read to its end, so that a snapshot
    /// holds everything its writer wrote; false when it is still open then (a process the
    /// writer left behind may hold it).
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (list, cv) = &*self.inner;
        let mut guard = list.lock().expect("lines lock");
        loop {
            if self.closed.load(Ordering::SeqCst) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            guard = cv
                .wait_timeout(guard, deadline - now)
                .expect("lines lock")
                .0;
        }
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
    /// At the timeout: the state of every process of the command's group (see
    /// [`group_state`]), taken before they were killed; else empty.
    pub diagnosis: String,
}

/// How long the output of a command that ended is waited for: a process it left behind
/// (outside its group) may hold its pipes open.
const OUTPUT_GRACE: Duration = Duration::from_secs(10);

/// Runs `cmd` with piped stdout/stderr (stdin `/dev/null`) in a process group of its own.
/// After `timeout` the state of every process of that group is recorded in
/// [`Finished::diagnosis`], and each of them is killed by its PID: the helpers a command
/// starts (git's `remote-https`, `send-pack`, `pack-objects`) hold its pipes, and would
/// otherwise keep them open, and this call waiting, after the command itself was killed.
pub fn run_with_timeout(name: &str, cmd: &mut Command, timeout: Duration) -> Finished {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut guard = ChildGuard::spawn(name, cmd);
    let pgid = i32::try_from(guard.pid()).unwrap_or(i32::MAX);
    let out = guard.child_mut().stdout.take().expect("piped stdout");
    let err = guard.child_mut().stderr.take().expect("piped stderr");
    let read_all = |mut r: Box<dyn Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            let _ = tx.send(v);
        });
        rx
    };
    let (out, err) = (read_all(Box::new(out)), read_all(Box::new(err)));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let mut diagnosis = String::new();
    let status = loop {
        if let Some(status) = guard.try_status() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            timed_out = true;
            let members = group_members(pgid);
            diagnosis = group_state(&members);
            for pid in members.iter().filter(|p| **p != pgid) {
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            break guard.stop(Duration::ZERO);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // The command ended (or was killed); its group's other members still hold its pipes
    // if it left them running: they get the grace period, then are killed too.
    let output_deadline = Instant::now() + OUTPUT_GRACE;
    let mut collect = |rx: std::sync::mpsc::Receiver<Vec<u8>>| {
        let left = output_deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left).unwrap_or_else(|_| {
            let members = group_members(pgid);
            if !members.is_empty() {
                diagnosis.push_str(&format!(
                    "\n{name} ended, but processes of its group still held its output after \
                     {OUTPUT_GRACE:?}; killed:\n{}",
                    group_state(&members)
                ));
                for pid in members {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
            rx.recv_timeout(OUTPUT_GRACE).unwrap_or_default()
        })
    };
    let stdout = collect(out);
    let stderr = collect(err);
    Finished {
        exit: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout,
        stderr,
        timed_out,
        diagnosis,
    }
}

/// The PIDs of the process group `pgid` (a group the harness made: its leader is a child
/// it spawned), from `/proc`.
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // `pid (comm) state ppid pgrp ...`: comm may hold spaces and parentheses.
                    let rest = &stat[stat.rfind(')')? + 2..];
                    rest.split(' ').nth(2)?.parse::<i32>().ok()
                })
                == Some(pgid)
        })
        .collect()
}

/// What each process of `pids` is doing, for a failure message: its command line, parent,
/// state, where it sleeps (`wchan`, the syscall and its first arguments, the kernel stack
/// when readable), its open file descriptors, and the TCP sockets it holds (`ss -tnpi`).
pub fn group_state(pids: &[i32]) -> String {
    let read = |pid: i32, what: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{what}"))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_else(|e| format!("({e})"))
    };
    let mut out = String::new();
    for &pid in pids {
        let cmdline = read(pid, "cmdline").replace('\0', " ");
        let stat = read(pid, "stat");
        let state = stat
            .rfind(')')
            .map_or(stat.as_str(), |i| &stat[(i + 2).min(stat.len())..]);
        let state: Vec<&str> = state.split(' ').take(2).collect();
        out.push_str(&format!(
            "--- pid {pid}: {cmdline}\n    state/ppid {}  wchan {}  syscall {}\n",
            state.join(" "),
            read(pid, "wchan"),
            read(pid, "syscall")
        ));
        let stack = read(pid, "stack");
        if !stack.is_empty() && !stack.starts_with('(') {
            for line in stack.lines() {
                out.push_str(&format!("    stack {line}\n"));
            }
        }
        if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
            let mut fds: Vec<(u32, String)> = fds
                .filter_map(|e| {
                    let e = e.ok()?;
                    let n = e.file_name().to_str()?.parse().ok()?;
                    let target = std::fs::read_link(e.path()).ok()?;
                    Some((n, target.display().to_string()))
                })
                .collect();
            fds.sort();
            let list: Vec<String> = fds.iter().map(|(n, t)| format!("{n}->{t}")).collect();
            out.push_str(&format!("    fds {}\n", list.join(" ")));
        }
    }
    if let Ok(ss) = Command::new("ss").args(["-tnpi"]).output() {
        let text = String::from_utf8_lossy(&ss.stdout);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if pids.iter().any(|p| line.contains(&format!("pid={p},"))) {
                out.push_str(&format!("    ss {line}\n"));
                if let Some(info) = lines
                    .get(i + 1)
                    .filter(|l| l.starts_with(char::is_whitespace))
                {
                    out.push_str(&format!("    ss {}\n", info.trim()));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    /// A process's last lines are in the snapshot once `wait_closed` says the pipe ended, with
    /// no sleep: the writer's last line comes right before it exits.
    #[test]
    fn wait_closed_returns_once_every_line_is_read() {
        for _ in 0..20 {
            let mut child = Command::new("sh")
                .args([
                    "-c",
                    "i=0; while [ $i -lt 200 ]; do echo line$i; i=$((i+1)); done",
                ])
                .stdout(Stdio::piped())
                .spawn()
                .expect("sh");
            let (lines, _) = Lines::capture(child.stdout.take().expect("stdout"), |_| {});
            child.wait().expect("exit");
            assert!(lines.wait_closed(Duration::from_secs(10)));
            let got = lines.snapshot();
            assert_eq!(got.len(), 200);
            assert_eq!(got.last().map(String::as_str), Some("line199"));
        }
    }

    /// A pipe still held open is reported as such after the bound; no pipe is closed already.
    #[test]
    fn wait_closed_is_bounded_and_none_is_closed() {
        let (reader, writer) = std::io::pipe().expect("pipe");
        let (lines, _) = Lines::capture(reader, |_| {});
        assert!(!lines.wait_closed(Duration::from_millis(100)));
        drop(writer);
        assert!(lines.wait_closed(Duration::from_secs(10)));
        assert!(Lines::none().wait_closed(Duration::ZERO));
    }
}
