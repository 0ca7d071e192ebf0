//! The binary's allocator settings: mimalloc's eager arena commit and
//! transparent huge pages are off unless the environment says otherwise
//! (see `mimalloc_defaults` in src/main.rs). mimalloc prints its options
//! with `MIMALLOC_VERBOSE=1`; the kernel shows a process's THP switch in
//! `/proc/PID/status`.

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
/// assertion fails, since one blocked on the FIFO would wait forever.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `THP_enabled` line of a running iron-proxy's /proc status, with
/// `MIMALLOC_ALLOW_THP` set to `env` (or unset). The process is held at
/// start-up, after its constructors ran, by a config path that is a FIFO
/// nobody opens for writing; then killed.
fn thp_enabled(env: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("config.yaml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iron-proxy"));
    cmd.arg("--config")
        .arg(&fifo)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_remove("MIMALLOC_ALLOW_THP");
    if let Some(v) = env {
        cmd.env("MIMALLOC_ALLOW_THP", v);
    }
    let child = Started(cmd.spawn().expect("start iron-proxy"));
    let pid = child.0.id();
    // Wait until the process is blocked opening the FIFO: by then main has
    // begun, so every constructor has run (the kernel's wait channel for an
    // open of a FIFO without a writer is `wait_for_partner`, fs/pipe.c).
    let deadline = Instant::now() + Duration::from_secs(20);
    let wchan = format!("/proc/{pid}/wchan");
    while std::fs::read_to_string(&wchan).unwrap_or_default() != "wait_for_partner" {
        assert!(
            Instant::now() < deadline,
            "iron-proxy never blocked opening its config FIFO"
        );
        std::thread::sleep(Duration::from_millis(10));
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
