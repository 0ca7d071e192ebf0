//! Streaming curl: the body is read line by line while the transfer runs, so a test can prove
//! that the first part of a response (an SSE event, a JSON line) arrived before the upstream
//! finished sending.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{last_header_block, CurlResult};
use crate::process::{ChildGuard, Lines};

/// A curl transfer in progress (started by [`super::Curl::spawn`]).
#[derive(Debug)]
pub struct CurlStream {
    child: ChildGuard,
    body: Lines,
    stderr: Lines,
    head_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    started: Instant,
}

impl CurlStream {
    pub(super) fn start(
        mut cmd: Command,
        dir: tempfile::TempDir,
        head_path: std::path::PathBuf,
    ) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = ChildGuard::spawn("curl", &mut cmd);
        let out = child.child_mut().stdout.take().expect("piped stdout");
        let err = child.child_mut().stderr.take().expect("piped stderr");
        let (body, _) = Lines::capture(out, |_| {});
        let (stderr, _) = Lines::capture(err, |_| {});
        Self {
            child,
            body,
            stderr,
            head_path,
            _dir: dir,
            started,
        }
    }

    /// Waits for a body line matching `pred`; returns it and the time since curl started.
    /// Panics with what was received after `timeout`.
    pub fn wait_for_line(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> (String, Duration) {
        match self.body.wait_for(timeout, pred) {
            Some(line) => (line, self.started.elapsed()),
            None => panic!(
                "no matching body line within {timeout:?}; got {:?}, stderr {:?}",
                self.body.snapshot(),
                self.stderr.snapshot()
            ),
        }
    }

    /// Body lines received so far.
    pub fn lines(&self) -> Vec<String> {
        self.body.snapshot()
    }

    /// Waits for curl to exit (its own `--max-time` bounds this) and returns the result and
    /// the total time since it started.
    pub fn finish(mut self) -> (CurlResult, Duration) {
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(s) = self.child.try_status() {
                break Some(s);
            }
            if Instant::now() >= deadline {
                break self.child.stop(Duration::ZERO);
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.started.elapsed();
        // Everything curl wrote, read to the end (5 s at most: a child of its own could hold
        // the pipes).
        self.body.wait_closed(Duration::from_secs(5));
        self.stderr.wait_closed(Duration::from_secs(5));
        let heads = std::fs::read_to_string(&self.head_path).unwrap_or_default();
        let headers = last_header_block(&heads);
        let status_code = heads
            .lines()
            .rfind(|l| l.starts_with("HTTP/"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = self.body.snapshot().join("\n");
        let result = CurlResult {
            status: status_code,
            body_bytes: body.clone().into_bytes(),
            body,
            headers,
            stderr: self.stderr.snapshot().join("\n"),
            exit: status.and_then(|s| s.code()).unwrap_or(-1),
        };
        (result, elapsed)
    }
}
