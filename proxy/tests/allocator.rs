//! The binary's allocator settings: mimalloc's eager arena commit and
//! transparent huge pages are off unless the environment says otherwise
//! (see `mimalloc_defaults` in src/main.rs). mimalloc prints its options
//! with `MIMALLOC_VERBOSE=1`; the kernel shows a process's THP switch in
//! `/proc/PID/status`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn eager_commit(env: Option<&str>) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iron-proxy"));
    cmd.arg("--version").env("MIMALLOC_VERBOSE", "1");
    cmd.env_remove("MIMALLOC_ARENA_EAGER_COMMIT");
    if let Some(v) = env {
        cmd.env("MIMALLOC_ARENA_EAGER_COMMIT", v);
    }
    let out = cmd.output().expect("run iron-proxy --version");
    assert!(out.status.success(), "iron-proxy --version failed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("option 'arena_eager_commit': "))
        .unwrap_or_else(|| panic!("mimalloc printed no arena_eager_commit option:\n{stderr}"))
        .trim()
        .to_string()
}

#[test]
fn eager_arena_commit_is_off_unless_the_environment_sets_it() {
    assert_eq!(eager_commit(None), "0", "the binary's default");
    assert_eq!(eager_commit(Some("1")), "1", "an explicit setting wins");
}

/// A started iron-proxy, killed and reaped when dropped: also when an
/// assertion fails.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A config that serves on free loopback ports and needs no files.
const CONFIG: &str = "proxy:\n  http_listen: \"127.0.0.1:0\"\n  https_listen: \"127.0.0.1:0\"\n\
                      tls:\n  mode: sni-only\nmetrics:\n  listen: \"127.0.0.1:0\"\n\
                      transforms:\n  - name: allowlist\n    config:\n      domains: [\"none.test\"]\n";

/// The `THP_enabled` line of a running iron-proxy's /proc status, with
/// `MIMALLOC_ALLOW_THP` set to `env` (or unset). The process is read once it
/// says it is ready (every constructor has run by then, and after a re-exec
/// too), then killed.
fn thp_enabled(env: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, CONFIG).expect("write config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iron-proxy"));
    cmd.arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_remove("MIMALLOC_ALLOW_THP");
    if let Some(v) = env {
        cmd.env("MIMALLOC_ALLOW_THP", v);
    }
    let mut child = Started(cmd.spawn().expect("start iron-proxy"));
    let pid = child.0.id();
    let stderr = child.0.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("\"msg\":\"ready\"") => break,
            Ok(line) => seen.push(line),
            Err(_) => panic!("iron-proxy was not ready within 20 s:\n{}", seen.join("\n")),
        }
    }
    let line = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("read /proc status")
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:").map(|v| v.trim().to_string()));
    drop(child);
    line.expect("this kernel shows no THP_enabled in /proc/PID/status")
}

#[test]
fn transparent_huge_pages_are_off_unless_the_environment_allows_them() {
    assert_eq!(thp_enabled(None), "0", "the binary's default");
    assert_eq!(thp_enabled(Some("1")), "1", "an explicit setting wins");
}
