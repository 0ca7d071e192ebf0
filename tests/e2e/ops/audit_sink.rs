//! The audit log's output misbehaving under the proxy: a full disk (a small tmpfs of our own,
//! rotated with copytruncate), a stderr pipe nobody reads, /dev/full, a stderr closed or open for
//! reading only at start-up (refused), and a shutdown that cuts exchanges.
//! Every line that reaches the output is a whole JSON line; nothing is lost without being
//! counted; the data plane is never held forever.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use iron_proxy_tests::*;
use nix::sys::signal::Signal;
use serde_json::Value;

use super::metrics::{sample, scrape};
use super::KeepAlive;

/// Refuses every host: each request is a 403 with its record, no upstream needed.
const DENY_ALL: &str = r#"
transforms:
  - name: allowlist
    config:
      domains: ["allowed.test"]
"#;

/// A tmpfs of `size` mounted on a fresh directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("a mount point");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount")
            .success();
        assert!(ok, "mounting a tmpfs on {}", dir.path().display());
        Tmpfs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// The proxy over [`DENY_ALL`] with its stderr appended to `log`, as systemd's
/// `StandardError=append:` opens it.
fn proxy_appending_to(log: &Path) -> ProxyProcess {
    let file = log.to_path_buf();
    Proxy::with(DENY_ALL)
        .stderr_to(move || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)
                .expect("opening the log file")
                .into()
        })
        .start()
}

/// Every line of `bytes`, each parsed as JSON; panics on a line that is not whole JSON.
fn json_lines(bytes: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("a torn or interleaved line ({e}): {l:?}\n"))
        })
        .collect()
}

fn audit_paths(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter(|v| v.get("action").is_some())
        .map(|v| v["path"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The audit log on a disk that fills up. Before the fix, the first failed write made
/// tracing-subscriber's fallback `eprint!` panic on the writer thread: no record was written
/// again (not even after space was freed), requests hung once 4 MiB of records had queued, and
/// SIGTERM never finished. Now the writer keeps the bytes not yet written and writes them once
/// logrotate's copytruncate frees the space: copy + new file hold every record, each line
/// whole, in order, with one ERROR line for the failure.
#[test]
fn a_full_disk_loses_no_record_and_writing_resumes_after_copytruncate() {
    require_root!();
    let disk = Tmpfs::new("64k");
    let log = disk.path("iron-proxy.log");
    let mut px = proxy_appending_to(&log);

    // ~2.3 KiB records: 45 of them are over half again what the disk holds (and what is left
    // after the copy fits in the truncated file).
    let pad = "p".repeat(2000);
    let mut conn = KeepAlive::open(px.http_addr(), Duration::from_secs(30));
    for i in 0..45 {
        let status = conn.status(&format!("/full/{i}/{pad}"), "denied.test");
        assert!(status.contains(" 403 "), "request {i} answered: {status}");
    }
    wait_until(Duration::from_secs(10), "the disk to fill", || {
        (std::fs::metadata(&log).map_or(0, |m| m.len()) >= 60 << 10).then_some(())
    });

    // logrotate's copytruncate: copy, then truncate in place.
    let copy = read(&log);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .expect("opening the log to truncate it")
        .set_len(0)
        .expect("truncating");
    let status = conn.status("/after-rotation", "denied.test");
    assert!(status.contains(" 403 "), "the proxy still serves: {status}");

    let all = wait_until(
        Duration::from_secs(15),
        "every record in copy + new file",
        || {
            let mut all = copy.clone();
            all.extend_from_slice(&read(&log));
            let lines = String::from_utf8_lossy(&all).into_owned();
            lines.contains("/after-rotation").then_some(all)
        },
    );
    let lines = json_lines(&all);
    let mut want: Vec<String> = (0..45).map(|i| format!("/full/{i}/{pad}")).collect();
    want.push("/after-rotation".into());
    assert_eq!(audit_paths(&lines), want, "every record, once, in order");
    let failures = lines
        .iter()
        .filter(|v| {
            v["msg"]
                .as_str()
                .is_some_and(|m| m.starts_with("writing to stderr failed"))
        })
        .count();
    assert_eq!(
        failures, 1,
        "one ERROR line for the failure, not one per record"
    );

    px.signal(Signal::SIGTERM);
    let status = wait_until(Duration::from_secs(20), "the proxy to exit", || {
        (!px.is_running()).then(|| px.stop())
    });
    assert_eq!(status.and_then(|s| s.code()), Some(0), "clean exit");
    assert!(
        read(&log).ends_with(b"\n"),
        "the log ends with a whole line after exit"
    );
}

/// stderr is a pipe whose reader stopped (a wedged log shipper). Before the fix, once the pipe
/// and the 4 MiB queue were full every request waited forever for the writer (and every
/// operational log line waited on stderr's lock). Now requests wait for the writer at most
/// the stall limit, then records are dropped, counted in
/// `iron_proxy_audit_dropped_records_total`, and reported in the log once it moves again.
#[test]
fn a_stuck_stderr_pipe_never_holds_requests_forever_and_drops_are_counted() {
    require_root!();
    let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("a pipe");
    let writer = std::sync::Arc::new(writer);
    let w = writer.clone();
    let mut px = Proxy::with(DENY_ALL)
        .stderr_to(move || Stdio::from(w.try_clone().expect("dup the pipe's write end")))
        .start();
    drop(writer);

    // ~4 KiB records (a path within the audit log's 4,096-byte field bound): about 1,050 fill
    // the pipe and the queue; nobody reads the pipe.
    let pad = "s".repeat(3_900);
    let mut conn = KeepAlive::open(px.http_addr(), Duration::from_secs(30));
    for i in 0..1500 {
        let status = conn.status(&format!("/stuck/{i}/{pad}"), "denied.test");
        assert!(status.contains(" 403 "), "request {i} answered: {status}");
    }
    let dropped = sample(&scrape(&px), "iron_proxy_audit_dropped_records_total", &[])
        .expect("the drop counter");
    assert!(
        dropped >= 1.0,
        "records were dropped and counted: {dropped}"
    );

    // The reader comes back: what was kept is written, each line whole, and the log says how
    // many records were lost.
    let (out, reader) =
        iron_proxy_tests::process::Lines::capture(std::fs::File::from(reader), |_| {});
    out.wait_for(Duration::from_secs(20), |l| {
        l.contains("lines were dropped")
    })
    .expect("a line reporting the drops once stderr moves again");
    // A new connection: the first one sat idle through the scrape (a Python process, which
    // also sets up the test venv on first use) and the wait above, and on a loaded machine
    // that can outlast the proxy's 30 s keep-alive idle timeout, which then rightly closes
    // it. What this request proves (the proxy serves and records again) needs no reuse.
    drop(conn);
    let mut conn = KeepAlive::open(px.http_addr(), Duration::from_secs(30));
    let status = conn.status("/after-stall", "denied.test");
    assert!(status.contains(" 403 "), "{status}");
    // Records are written as each response ends, so the count read above may have missed the
    // last drop; nothing is dropped any more, so this one is final.
    let dropped = sample(&scrape(&px), "iron_proxy_audit_dropped_records_total", &[])
        .expect("the drop counter");
    px.signal(Signal::SIGTERM);
    let status = wait_until(Duration::from_secs(30), "the proxy to exit", || {
        (!px.is_running()).then(|| px.stop())
    });
    assert_eq!(status.and_then(|s| s.code()), Some(0), "clean exit");
    reader.join().expect("the reader thread");
    let mut out = out.snapshot().join("\n").into_bytes();
    out.push(b'\n');
    let lines = json_lines(&out);
    let paths: Vec<String> = audit_paths(&lines)
        .iter()
        .map(|p| p.split('/').take(3).collect::<Vec<_>>().join("/"))
        .collect();
    assert_eq!(
        paths.len() as f64 + dropped,
        1501.0,
        "every record written or counted as dropped"
    );
    assert_eq!(
        paths.last().map(String::as_str),
        Some("/after-stall"),
        "{paths:?}"
    );
    // One line per stuck spell (the writer may move a little in between) says how many
    // records it lost; together they account for every drop.
    let reported: f64 = lines
        .iter()
        .filter(|v| {
            v["msg"]
                .as_str()
                .is_some_and(|m| m.contains("lines were dropped"))
        })
        .filter_map(|v| v["audit_records"].as_f64())
        .sum();
    assert_eq!(
        reported, dropped,
        "the log reports the drops the metric counted"
    );
}

/// stderr redirected to a file without `O_APPEND` (`iron-proxy ... 2>file`, systemd's
/// `StandardError=file:`) and rotated with logrotate's `copytruncate`, as the packaged
/// logrotate config does. Before the fix the proxy kept writing at its old offset, so the
/// truncated file began with a hole of NUL bytes as long as the old file, which log shippers
/// read as binary. Now the proxy sets `O_APPEND` on a regular-file stderr.
#[test]
fn copytruncate_of_a_non_append_stderr_file_leaves_no_hole_of_nul_bytes() {
    require_root!();
    let dir = tempfile::tempdir().expect("a temp dir");
    let log = dir.path().join("iron-proxy.log");
    let file = log.clone();
    let mut px = Proxy::with(DENY_ALL)
        .stderr_to(move || {
            std::fs::File::create(&file)
                .expect("creating the log file")
                .into()
        })
        .start();
    let mut conn = KeepAlive::open(px.http_addr(), Duration::from_secs(30));
    assert!(conn
        .status("/before-rotation", "denied.test")
        .contains(" 403 "));
    wait_until(Duration::from_secs(10), "the first record", || {
        String::from_utf8_lossy(&read(&log))
            .contains("/before-rotation")
            .then_some(())
    });
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .expect("opening the log to truncate it")
        .set_len(0)
        .expect("truncating");
    assert!(conn
        .status("/after-rotation", "denied.test")
        .contains(" 403 "));
    let after = wait_until(Duration::from_secs(10), "the next record", || {
        let bytes = read(&log);
        String::from_utf8_lossy(&bytes)
            .contains("/after-rotation")
            .then_some(bytes)
    });
    assert_ne!(after.first(), Some(&0), "the file starts with a NUL hole");
    assert_eq!(audit_paths(&json_lines(&after)), ["/after-rotation"]);
    px.stop();
}

/// logrotate without `copytruncate`, as the packaged config does it: the file is renamed,
/// then SIGUSR1 (`postrotate`) makes the proxy reopen its path. Requests keep coming the whole
/// time: every record is in the old file or the new one, once, each file ending on a whole
/// line, and the records after the signal are in the new file. Before, the proxy went on
/// writing into the renamed file until it was restarted.
#[test]
fn sigusr1_after_a_rename_reopens_the_log_file_and_loses_no_record() {
    require_root!();
    let dir = tempfile::tempdir().expect("a temp dir");
    let log = dir.path().join("iron-proxy.log");
    let mut px = proxy_appending_to(&log);
    let addr = px.http_addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut conn = KeepAlive::open(addr, Duration::from_secs(30));
            let mut sent = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || sent < 200 {
                let status = conn.status(&format!("/rot/{sent}"), "denied.test");
                assert!(status.contains(" 403 "), "request {sent}: {status}");
                sent += 1;
            }
            sent
        })
    };
    wait_until(
        Duration::from_secs(10),
        "records before the rotation",
        || {
            String::from_utf8_lossy(&read(&log))
                .contains("/rot/50\"")
                .then_some(())
        },
    );
    let rotated = dir.path().join("iron-proxy.log.1");
    std::fs::rename(&log, &rotated).expect("logrotate's rename");
    std::thread::sleep(Duration::from_millis(100));
    px.signal(Signal::SIGUSR1);
    wait_until(Duration::from_secs(10), "the new file", || {
        String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default())
            .contains("reopened the log file")
            .then_some(())
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = load.join().expect("the load");
    let last = format!("/rot/{}", sent - 1);
    let (old, new) = wait_until(Duration::from_secs(10), "the last record", || {
        let new = read(&log);
        String::from_utf8_lossy(&new)
            .contains(&format!("{last}\""))
            .then(|| (read(&rotated), new))
    });
    for (name, bytes) in [("old", &old), ("new", &new)] {
        assert_eq!(
            bytes.last(),
            Some(&b'\n'),
            "the {name} file ends on a whole line"
        );
    }
    let (old, new) = (json_lines(&old), json_lines(&new));
    let mut all = audit_paths(&old);
    let after = audit_paths(&new);
    assert!(
        !after.is_empty() && !all.is_empty(),
        "both files hold records"
    );
    all.extend(after);
    let want: Vec<String> = (0..sent).map(|i| format!("/rot/{i}")).collect();
    assert_eq!(
        all, want,
        "every record once, in order, across the two files"
    );
    let reopened = new
        .iter()
        .find(|v| v["msg"] == "SIGUSR1: reopened the log file")
        .expect("the reopen is logged in the new file");
    assert_eq!(reopened["path"], log.display().to_string());
    px.stop();
}

/// With stderr a pipe (the journal, a container runtime) SIGUSR1 has nothing to reopen:
/// the proxy says so and goes on serving.
#[test]
fn sigusr1_with_stderr_a_pipe_is_a_warning() {
    require_root!();
    let mut px = Proxy::with(DENY_ALL).start();
    px.signal(Signal::SIGUSR1);
    px.wait_for_log(|l| l.contains("nothing to reopen"));
    let mut conn = KeepAlive::open(px.http_addr(), Duration::from_secs(30));
    assert!(conn.status("/after-usr1", "denied.test").contains(" 403 "));
}

/// A CONNECT or SOCKS5 request that is granted and then closed without a byte through the
/// tunnel is a request, and gets its record (`no_client_data`, as one that stalls until the
/// timeout does). Before, it was taken for a port probe and left no trace.
#[test]
fn a_tunnel_closed_unused_still_has_its_record() {
    require_root!();
    let px = Proxy::with(format!("proxy:\n  tunnel_listen: auto\n{DENY_ALL}").as_str()).start();

    let mut connect = TcpStream::connect(px.tunnel_addr()).expect("connecting to the tunnel");
    connect
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    connect
        .write_all(b"CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n")
        .expect("writing CONNECT");
    let mut head = [0u8; 64];
    let n = iron_proxy_tests::timed_read::read_some(&mut connect, &mut head)
        .expect("reading the CONNECT answer");
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let connect_port = connect.local_addr().expect("local addr").port();
    drop(connect);

    let mut socks = TcpStream::connect(px.tunnel_addr()).expect("connecting to the tunnel");
    socks
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    socks.write_all(&[5, 1, 0]).expect("greeting");
    let mut reply = [0u8; 2];
    socks.read_exact(&mut reply).expect("method reply");
    assert_eq!(reply, [5, 0]);
    let mut req = vec![5, 1, 0, 3, 12];
    req.extend_from_slice(b"allowed.test");
    req.extend_from_slice(&443u16.to_be_bytes());
    socks.write_all(&req).expect("CONNECT request");
    let mut reply = [0u8; 10];
    socks.read_exact(&mut reply).expect("CONNECT reply");
    assert_eq!(reply[1], 0, "granted: {reply:?}");
    let socks_port = socks.local_addr().expect("local addr").port();
    drop(socks);

    for (kind, port) in [("connect", connect_port), ("socks5", socks_port)] {
        let rec = px.wait_for_audit(|a| {
            a.str("remote_addr")
                .is_some_and(|r| r.ends_with(&format!(":{port}")))
        });
        assert_eq!(rec.str("reason"), Some("no_client_data"), "{rec}");
        assert_eq!(
            rec.pointer("/tunnel/kind").and_then(Value::as_str),
            Some(kind),
            "{rec}"
        );
        assert_eq!(
            rec.pointer("/tunnel/target").and_then(Value::as_str),
            Some("allowed.test:443"),
            "{rec}"
        );
    }
}

/// Starts the proxy through `sh -c 'exec <redirect> iron-proxy ...'`, so that its fd 2 is as
/// `redirect` leaves it (`2>&-`: closed; `2</dev/null`: open for reading only). Returns the
/// exit code and the output (stdout alone: there is no stderr to read).
fn start_with_stderr(redirect: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("a directory for the wrapper");
    let wrapper = dir.path().join("iron-proxy-with-fd2");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {redirect} '{}' \"$@\"\n",
            paths::iron_proxy_bin().display()
        ),
    )
    .expect("writing the wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("making the wrapper executable");
    let (status, logs) = Proxy::with(DENY_ALL)
        .binary(&wrapper)
        .run_to_exit(Duration::from_secs(15));
    (status.code(), logs.join("\n"))
}

/// Audit records go to stderr. Started with fd 2 closed (which Rust's runtime would quietly
/// replace with /dev/null) or open for reading only (where every write fails with EBADF, which
/// `std::io::stderr()` reports as done), the proxy would run and lose every record without a
/// trace; it refuses to start instead: exit status 1, and the reason on stdout.
#[test]
fn a_closed_or_read_only_stderr_stops_start_up() {
    require_root!();
    for (redirect, why) in [
        ("2>&-", "stderr (fd 2) is closed"),
        ("2</dev/null", "stderr (fd 2) is open for reading only"),
    ] {
        let (code, out) = start_with_stderr(redirect);
        assert_eq!(
            code,
            Some(1),
            "{redirect}: the proxy does not start:\n{out}"
        );
        assert!(
            out.contains(why) && out.contains("not starting"),
            "{redirect}: the reason is on stdout:\n{out}"
        );
    }
}

/// stderr on /dev/full: every write fails (ENOSPC). The records are kept and tried again (see
/// above), and each failed write is counted in `iron_proxy_audit_write_errors_total`, the one
/// signal that can be seen while stderr fails (the log lines saying so wait behind the records).
#[test]
fn writes_to_a_failing_stderr_are_counted() {
    require_root!();
    let px = Proxy::with(DENY_ALL)
        .stderr_to(|| {
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .expect("opening /dev/full")
                .into()
        })
        .start();
    let mut conn = KeepAlive::open(px.http_addr(), Duration::from_secs(10));
    let status = conn.status("/on-dev-full", "denied.test");
    assert!(status.contains(" 403 "), "the proxy serves: {status}");
    let errors = wait_until(
        Duration::from_secs(10),
        "failed writes to be counted",
        || {
            px.metric("iron_proxy_audit_write_errors_total", &[])
                .filter(|n| *n > 0.0)
        },
    );
    // Tried again, and counted again: 50 ms, then backing off to 1 s.
    wait_until(Duration::from_secs(10), "the count to grow", || {
        px.metric("iron_proxy_audit_write_errors_total", &[])
            .filter(|n| *n > errors)
    });
    assert_eq!(
        px.metric("iron_proxy_audit_dropped_records_total", &[]),
        Some(0.0),
        "nothing dropped: the records are kept"
    );
}
