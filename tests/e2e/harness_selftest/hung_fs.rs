//! `HungFs` when its test process is killed outright (SIGKILL: no Drop runs): the daemon
//! ends and its mount goes with it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use iron_proxy_tests::process::{ChildGuard, Lines};
use iron_proxy_tests::*;
use nix::sys::signal::Signal;

/// What the child prints before the daemon's PID.
const DAEMON: &str = "hung_fs daemon ";

/// Set for the child run of [`the_child_mounts_and_waits`]: the directory to mount at.
const CHILD_DIR: &str = "IRON_TEST_HUNG_FS_CHILD_DIR";

/// Whether `pid` has exited (gone, or a zombie its new parent has not reaped yet).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // PID (COMM) STATE ...: COMM may hold spaces and parentheses.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

fn mounted(dir: &Path) -> bool {
    hung_fs_mounts().iter().any(|(point, _)| point == dir)
}

/// The child: mounts, says the daemon's PID, and waits to be killed.
#[test]
#[ignore = "run as a child process by hung_fs_dies_with_its_test_process"]
fn the_child_mounts_and_waits() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let fs = HungFs::mount(Path::new(&dir), &["f"]);
    println!("{DAEMON}{}", fs.daemon_pid());
    loop {
        std::thread::park();
    }
}

#[test]
fn hung_fs_dies_with_its_test_process() {
    require_root!();
    let scratch = paths::scratch_dir("hungfs");
    let dir = scratch.path().join("mnt");
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args([
        "--exact",
        "harness_selftest::hung_fs::the_child_mounts_and_waits",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_DIR, &dir)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = ChildGuard::spawn("the mounting test process", &mut cmd);
    let (out, _) = Lines::capture(child.child_mut().stdout.take().expect("stdout"), |_| {});
    let (err, _) = Lines::capture(child.child_mut().stderr.take().expect("stderr"), |_| {});
    // The line may follow libtest's "test NAME ... " on the same line.
    let line = out
        .wait_for(Duration::from_secs(60), |l| l.contains(DAEMON))
        .unwrap_or_else(|| {
            panic!(
                "the child did not mount:\n{}\n{}",
                out.snapshot().join("\n"),
                err.snapshot().join("\n")
            )
        });
    let daemon: u32 = line
        .split_once(DAEMON)
        .and_then(|(_, pid)| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no PID in {line:?}"));
    assert!(mounted(&dir), "{} is not a hung_fs mount", dir.display());
    assert!(!exited(daemon), "the daemon {daemon} is not running");

    child.signal(Signal::SIGKILL);
    child.stop(Duration::from_secs(10));
    wait_until(Duration::from_secs(30), "the daemon to exit", || {
        exited(daemon).then_some(())
    });
    wait_until(Duration::from_secs(30), "the mount to be gone", || {
        (!mounted(&dir)).then_some(())
    });
}
