//! What `-config` names, through the real binary: `validate` and start-up refuse a FIFO, a
//! directory, a socket, a character device, a link to one of them and a file over 16 MiB,
//! naming the path and what it is, at once (a FIFO used to block in `open(2)` for a writer
//! forever); a running proxy whose config was replaced by a FIFO keeps serving on SIGHUP and
//! on `POST /v1/reload`, reports the failure (log, 422, `/v1/status`, the failure counter)
//! and reloads once a file is back; and a config reached through a ConfigMap-style chain of
//! links is reloaded through it, following an atomic swap of the link.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use iron_proxy_tests::*;
use nix::sys::signal::Signal;

use super::metrics::{sample, scrape};
use super::{managed_proxy, management, policy, policy_file, reload, status_of, API_KEY};

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

/// Runs the binary with `args` (a whole minute at most: a command blocked on a FIFO is
/// killed then, and the test fails on its `timed_out`): exit code and stderr.
fn run(args: &[&str], config: &Path) -> (i32, String, bool) {
    let mut cmd = Command::new(paths::iron_proxy_bin());
    cmd.args(args).arg("-config").arg(config);
    let out = process::run_with_timeout("iron-proxy", &mut cmd, Duration::from_secs(60));
    (
        out.exit,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.timed_out,
    )
}

#[test]
fn validate_and_start_up_refuse_what_is_not_a_regular_file_without_blocking() {
    let dir = paths::scratch_dir("config-kinds");
    let d = dir.path();
    let fifo = d.join("fifo.yaml");
    mkfifo(&fifo);
    let sock = d.join("socket.yaml");
    let _listener = UnixListener::bind(&sock).expect("binding a socket");
    let link = d.join("link.yaml");
    std::os::unix::fs::symlink(&fifo, &link).expect("symlink");
    let big = d.join("big.yaml");
    // Sparse: 16 MiB and one byte, none of it written.
    std::fs::File::create(&big)
        .and_then(|f| f.set_len((16 << 20) + 1))
        .expect("a file over the limit");
    let canonical_fifo = std::fs::canonicalize(&fifo).expect("canonical FIFO path");
    let cases: Vec<(PathBuf, String)> = vec![
        (
            fifo.clone(),
            "cannot read config: it is a FIFO (named pipe), not a regular file; the config is \
             read again on every reload"
                .into(),
        ),
        (
            d.to_path_buf(),
            "cannot read config: it is a directory, not a regular file".into(),
        ),
        (
            sock.clone(),
            "cannot read config: it is a socket, not a regular file".into(),
        ),
        (
            "/dev/zero".into(),
            "cannot read config: it is a character device, not a regular file".into(),
        ),
        (
            link.clone(),
            format!(
                "cannot read config: it is a symbolic link to {}, a FIFO (named pipe), not a \
                 regular file",
                canonical_fifo.display()
            ),
        ),
        (
            big.clone(),
            "cannot read config: the file is larger than 16 MiB; is it the config?".into(),
        ),
    ];
    for (path, error) in &cases {
        let (exit, stderr, timed_out) = run(&["validate"], path);
        assert!(
            !timed_out,
            "validate on {} blocked until it was killed: {stderr}",
            path.display()
        );
        assert_eq!(exit, 1, "validate on {}: {stderr}", path.display());
        let expected = format!("{}: {error}", path.display());
        assert!(
            stderr.lines().any(|l| l.starts_with(&expected)),
            "validate on {}: expected a line starting {expected:?} in:\n{stderr}",
            path.display()
        );
    }
    // Start-up reads the config the same way: a FIFO fails it at once.
    let (exit, stderr, timed_out) = run(&[], &fifo);
    assert!(!timed_out, "start-up on a FIFO blocked: {stderr}");
    assert_eq!(exit, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: cannot read config: it is a FIFO (named pipe)",
            fifo.display()
        )) && stderr.contains("not starting"),
        "{stderr}"
    );
}

/// The reload failure counter, `iron_proxy_reloads_total{result="failure"}`.
fn failed_reloads(px: &ProxyProcess) -> f64 {
    sample(
        &scrape(px),
        "iron_proxy_reloads_total",
        &[("result", "failure")],
    )
    .unwrap_or(0.0)
}

#[test]
fn a_config_replaced_by_a_fifo_fails_the_reload_and_the_proxy_keeps_serving() {
    require_root!();
    let net = FakeInternet::new();
    let _a = Upstream::https("httpbin.test").start(&net);
    let _b = Upstream::https("other.test").start(&net);
    let mut px = managed_proxy(&policy(&["httpbin.test"]), &net);
    assert_eq!(status_of(&px, "httpbin.test"), 200);
    assert_eq!(failed_reloads(&px), 0.0);
    assert_eq!(
        last_reload_successful(&px),
        Some(1.0),
        "the start-up load counts"
    );

    // The file becomes a FIFO that nothing ever writes.
    let path = px.config_path().to_path_buf();
    std::fs::remove_file(&path).expect("removing the config");
    mkfifo(&path);
    let error = format!(
        "{}: cannot read config: it is a FIFO (named pipe), not a regular file",
        path.display()
    );

    px.signal(Signal::SIGHUP);
    let failed = wait_until(
        Duration::from_secs(20),
        "the SIGHUP reload's failure recorded in /v1/status",
        || {
            let s = management(&px, "GET", "/v1/status", Some(API_KEY)).json();
            (s["last_reload"]["trigger"] == "signal").then_some(s)
        },
    );
    assert_eq!(failed["last_reload"]["result"], "failure", "{failed}");
    assert!(
        failed["last_reload"]["errors"][0]
            .as_str()
            .is_some_and(|e| e.starts_with(&error)),
        "{failed}"
    );
    px.wait_for_log(|l| l.contains("configuration reload error") && l.contains(&error));
    assert_eq!(failed_reloads(&px), 1.0);
    assert_eq!(last_reload_successful(&px), Some(0.0));
    assert!(px.is_running());
    assert_eq!(status_of(&px, "httpbin.test"), 200, "the old policy serves");

    // The API's reload is not queued behind a stuck one: it answers 422 with the same error.
    let r = reload(&px);
    assert_eq!(r.status, 422, "{r}");
    assert!(
        r.json()["errors"][0]
            .as_str()
            .is_some_and(|e| e.starts_with(&error)),
        "{r}"
    );
    assert_eq!(failed_reloads(&px), 2.0);

    // A regular file again: the next SIGHUP loads it.
    std::fs::remove_file(&path).expect("removing the FIFO");
    px.rewrite_config(policy_file(&["httpbin.test", "other.test"]));
    px.signal(Signal::SIGHUP);
    wait_until(
        Duration::from_secs(20),
        "the next SIGHUP reload succeeding",
        || {
            let s = management(&px, "GET", "/v1/status", Some(API_KEY)).json();
            (s["last_reload"]["trigger"] == "signal" && s["last_reload"]["result"] == "success")
                .then_some(())
        },
    );
    assert_eq!(status_of(&px, "other.test"), 200, "the new policy serves");
    assert_eq!(status_of(&px, "httpbin.test"), 200);
    assert_eq!(last_reload_successful(&px), Some(1.0));
}

/// `iron_proxy_last_reload_successful`: 1 while the last load succeeded.
fn last_reload_successful(px: &ProxyProcess) -> Option<f64> {
    sample(&scrape(px), "iron_proxy_last_reload_successful", &[])
}

/// A Kubernetes ConfigMap volume: `proxy.yaml -> ..data/proxy.yaml`, `..data -> ..<version>`,
/// updated by creating the new version's directory and link and renaming the link over
/// `..data` (one atomic `rename(2)`).
#[test]
fn a_config_behind_a_configmap_style_link_chain_reloads_through_an_atomic_swap() {
    require_root!();
    let net = FakeInternet::new();
    let _a = Upstream::https("httpbin.test").start(&net);
    let _b = Upstream::https("other.test").start(&net);
    let mut px = managed_proxy(&policy(&["httpbin.test"]), &net);
    let path = px.config_path().to_path_buf();
    let dir = path.parent().expect("the config's directory").to_path_buf();

    // Two versions as the harness renders them: the running one, and one allowing more.
    let v1 = std::fs::read(&path).expect("the running config");
    px.rewrite_config(policy_file(&["httpbin.test", "other.test"]));
    let v2 = std::fs::read(&path).expect("the new config");
    for (version, text) in [("..v1", &v1), ("..v2", &v2)] {
        std::fs::create_dir(dir.join(version)).expect(version);
        std::fs::write(dir.join(version).join("proxy.yaml"), text).expect(version);
    }
    std::fs::remove_file(&path).expect("removing the plain file");
    std::os::unix::fs::symlink("..v1", dir.join("..data")).expect("..data");
    std::os::unix::fs::symlink("..data/proxy.yaml", &path).expect("the config link");
    let r = reload(&px);
    assert_eq!(r.status, 200, "the first version through two links: {r}");
    assert_eq!(status_of(&px, "other.test"), 403, "still the first version");

    std::os::unix::fs::symlink("..v2", dir.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("the atomic swap");
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(status_of(&px, "other.test"), 200, "the swapped-in version");
    assert_eq!(status_of(&px, "httpbin.test"), 200);
}

/// A file the config names is read the same way: a reload whose `grpc` transform names a FIFO
/// as its CA fails at once, naming the file and what it is, and the API's reload after it is
/// not queued behind it. Before, building the transform blocked in `open(2)` for a writer,
/// holding the reload lock.
#[test]
fn a_reload_naming_a_fifo_as_a_tls_file_fails_without_blocking() {
    require_root!();
    let net = FakeInternet::new();
    let _a = Upstream::https("httpbin.test").start(&net);
    let mut px = managed_proxy(&policy(&["httpbin.test"]), &net);
    let ca = px.dir().join("grpc-ca.pem");
    mkfifo(&ca);
    let grpc = format!(
        "  - name: grpc\n    config:\n      name: policy\n      target: \"127.0.0.1:9\"\n      \
         tls:\n        enabled: true\n        ca_cert: \"{}\"\n      rules:\n        - host: \"httpbin.test\"\n",
        ca.display()
    );
    px.rewrite_config(format!("{}{grpc}", policy_file(&["httpbin.test"])));
    let r = reload(&px);
    assert_eq!(r.status, 422, "{r}");
    let errors = r.json()["errors"].to_string();
    assert!(
        errors.contains(&ca.display().to_string())
            && errors.contains("it is a FIFO (named pipe), not a regular file"),
        "{r}"
    );
    assert_eq!(status_of(&px, "httpbin.test"), 200, "the old policy serves");
    // The next reload is answered too: nothing holds the lock.
    assert_eq!(reload(&px).status, 422);
}

/// A file the config names on a hung file system (a FUSE mount whose reads never return, as
/// a stalled NFS server's): the reload gives up after 30 s with an error saying so, the proxy
/// serves throughout, and the next reload is answered. Before, building the policy read the
/// file on a runtime thread and waited forever, holding the reload lock: the reload never
/// answered, nor did any reload after it.
#[test]
fn a_reload_naming_a_file_on_a_hung_file_system_gives_up_and_keeps_serving() {
    require_root!();
    let net = FakeInternet::new();
    let _a = Upstream::https("httpbin.test").start(&net);
    let mut px = managed_proxy(&policy(&["httpbin.test"]), &net);
    let fs = HungFs::mount(&px.dir().join("hung"), &["grpc-ca.pem"]);
    let grpc = format!(
        "  - name: grpc\n    config:\n      name: policy\n      target: \"127.0.0.1:9\"\n      \
         tls:\n        enabled: true\n        ca_cert: \"{}\"\n      rules:\n        - host: \"httpbin.test\"\n",
        fs.path("grpc-ca.pem").display()
    );
    px.rewrite_config(format!("{}{grpc}", policy_file(&["httpbin.test"])));
    let api = format!("http://{}/v1/reload", px.management_addr());
    let hung = std::thread::spawn(move || {
        Curl::get(&api)
            .args(["-X", "POST"])
            .header("Authorization", &format!("Bearer {API_KEY}"))
            .max_time(90)
            .run()
    });
    // While the reload waits on the file, the proxy serves with the policy it had.
    assert_eq!(status_of(&px, "httpbin.test"), 200);
    let r = hung.join().expect("the reload's client");
    assert_eq!(r.status, 422, "{r}");
    assert!(
        r.json()["errors"]
            .to_string()
            .contains("building the policy took longer than 30 s"),
        "{r}"
    );
    assert_eq!(status_of(&px, "httpbin.test"), 200, "the old policy serves");
    // Nothing holds the reload lock: the next reload, naming the file no more, applies.
    px.rewrite_config(policy_file(&["httpbin.test", "other.test"]));
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
}
