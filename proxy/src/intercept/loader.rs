//! Loading the eBPF programs in a short-lived child process.
//!
//! aya 0.14 parses the kernel's BTF (`/sys/kernel/btf/vmlinux`, several MB of
//! type data, tens of MB once parsed) every time it loads an object. Done in
//! the proxy itself, that parse sets the process's peak RSS for good, and the
//! allocator keeps part of it. The proxy therefore runs itself
//! (`/proc/self/exe intercept load --log-level L --log-format F`, hidden
//! from `--help`) with the settings as JSON on stdin: the child loads,
//! attaches and pins everything, exactly as [`Interceptor::attach`] does in
//! process, and exits. The proxy then takes
//! the pinned maps over ([`Interceptor::adopt`]); the pinned links keep the
//! programs attached without any process holding them.
//!
//! The child's logs go to the proxy's stderr. Its outcome comes back on
//! stdout: nothing on success, the error (with its causes) on failure.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use super::{InterceptError, InterceptSettings, Interceptor};
use crate::error_chain;

/// The program the proxy runs as its loader: itself, even when the binary on
/// disk was replaced since it started (an upgrade in progress).
const SELF_EXE: &str = "/proc/self/exe";

/// Names another loader binary instead of [`SELF_EXE`]. For profiling: under
/// valgrind `/proc/self/exe` is valgrind's own tool, so `cargo xtask
/// link-order` points this at the binary it profiles. It must be the same
/// build as the proxy (the settings cross over as JSON).
pub const LOADER_ENV: &str = "IRON_PROXY_LOADER_EXE";

/// The loader to run, given [`LOADER_ENV`]'s value.
fn loader_exe(var: Option<OsString>) -> PathBuf {
    var.filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(SELF_EXE))
}

/// Errors of running the loader child.
#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    /// The settings did not serialize (not expected: plain data).
    #[error("encoding the interception settings for the loader")]
    Encode(#[source] serde_json::Error),
    /// The child could not be started or talked to.
    #[error("running the eBPF loader ({exe} intercept load)")]
    Spawn {
        /// The program run.
        exe: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The child reported a failure, or died.
    #[error("loading the eBPF programs failed ({status}): {message}")]
    Failed {
        /// The child's exit status.
        status: std::process::ExitStatus,
        /// What the child reported.
        message: String,
    },
}

impl Interceptor {
    /// [`Interceptor::attach`] in a child process (see the module docs), then
    /// [`Interceptor::adopt`] of what it pinned.
    pub fn attach_in_child(settings: &InterceptSettings) -> Result<Self, InterceptError> {
        attach_with(&loader_exe(std::env::var_os(LOADER_ENV)), settings)
    }
}

/// Runs `exe intercept load` with `settings` and adopts the result.
pub(crate) fn attach_with(
    exe: &Path,
    settings: &InterceptSettings,
) -> Result<Interceptor, InterceptError> {
    let json = serde_json::to_vec(settings).map_err(LoaderError::Encode)?;
    let spawn_err = |source| LoaderError::Spawn {
        exe: exe.display().to_string(),
        source,
    };
    let started = std::time::Instant::now();
    // The child logs at the proxy's level, in the proxy's format.
    let level = tracing::level_filters::LevelFilter::current().to_string();
    let format = crate::ops::logs::current_format().as_str();
    let mut cmd = Command::new(exe);
    // With the open-file limit the proxy started with, not the raised one.
    crate::ops::fd_limit::restore_in_child(&mut cmd);
    let mut child = cmd
        .args(["intercept", "load", "--log-level", &level])
        .args(["--log-format", format])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(spawn_err)?;
    // Writing may fail only when the child exited early; its status says why.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(&json);
    }
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        let reported = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let message = if reported.is_empty() {
            "the loader reported nothing (see the log above)".to_string()
        } else {
            reported
        };
        return Err(LoaderError::Failed {
            status: out.status,
            message,
        }
        .into());
    }
    tracing::info!(
        pin = %settings.pin_path.display(),
        took_ms = started.elapsed().as_millis() as u64,
        "eBPF programs loaded, attached and pinned by the loader child"
    );
    Interceptor::adopt(&settings.pin_path)
}

/// The child's side: settings from stdin, [`Interceptor::attach`], outcome on
/// stdout. Exit code 0 on success, 1 on failure, 2 for unreadable settings.
pub fn child_main() -> ExitCode {
    let mut input = Vec::new();
    let settings: InterceptSettings = match std::io::stdin()
        .read_to_end(&mut input)
        .map_err(|e| e.to_string())
        .and_then(|_| serde_json::from_slice(&input).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            let _ = crate::console::outln!("reading the interception settings from stdin: {e}");
            return ExitCode::from(2);
        }
    };
    match Interceptor::attach(&settings) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = crate::console::outln!("{}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intercept::{DenyCidr, ProxyIdentity};
    use std::net::{SocketAddrV4, SocketAddrV6};

    #[test]
    fn the_loader_is_the_running_binary_unless_the_environment_names_one() {
        assert_eq!(loader_exe(None), Path::new("/proc/self/exe"));
        assert_eq!(loader_exe(Some("".into())), Path::new("/proc/self/exe"));
        assert_eq!(
            loader_exe(Some("/opt/iron-proxy".into())),
            Path::new("/opt/iron-proxy")
        );
    }

    fn settings() -> InterceptSettings {
        InterceptSettings {
            cgroups: vec!["/sys/fs/cgroup/workloads".into()],
            uids: vec![1000, 1001],
            uid_ranges: Vec::new(),
            listen_v4: "127.0.0.1:15001".parse::<SocketAddrV4>().expect("v4"),
            listen_v6: Some("[::1]:15001".parse::<SocketAddrV6>().expect("v6")),
            dns_v4: Some("127.0.0.1:53".parse().expect("dns")),
            dns_v6: None,
            dns_answers: Vec::new(),
            deny: vec![
                DenyCidr::all("169.254.0.0/16".parse().expect("net")),
                DenyCidr::workload("fd00::/8".parse().expect("net")),
            ],
            proxy: ProxyIdentity {
                tgid: Some(42),
                cgroup_id: None,
                uid: Some(999),
            },
            getsockopt_cgroups: Vec::new(),
            pin_path: "/sys/fs/bpf/iron-proxy".into(),
            listener_priority: true,
            dns_listener_priority: true,
        }
    }

    #[test]
    fn settings_reach_the_child_unchanged() {
        let json = serde_json::to_vec(&settings()).expect("encode");
        let back: InterceptSettings = serde_json::from_slice(&json).expect("decode");
        assert_eq!(back, settings());
    }

    #[test]
    fn a_loader_that_fails_is_reported_with_what_it_printed() {
        // A shell script stands in for the proxy: it ignores its arguments,
        // reads the settings and fails the way the child does.
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = script(
            dir.path(),
            "#!/bin/sh\ncat >/dev/null\necho 'kernel 4.19 is too old'\nexit 1\n",
        );
        let err = attach_failing(&fake);
        let text = err.to_string();
        assert!(
            text.contains("loading the eBPF programs failed")
                && text.contains("kernel 4.19 is too old"),
            "{text}"
        );
    }

    /// Writes `script` as an executable file in `dir`.
    fn script(dir: &Path, script: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt as _;
        let path = dir.join("fake-loader");
        std::fs::write(&path, script).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// Runs `attach_with(exe)`, again while another test thread's fork makes
    /// exec fail with ETXTBSY (it held the script open for writing).
    fn attach_failing(exe: &Path) -> InterceptError {
        let mut tries = 0;
        loop {
            let err = attach_with(exe, &settings()).expect_err("the loader failed");
            let busy = matches!(
                &err,
                InterceptError::Loader(LoaderError::Spawn { source, .. })
                    if source.raw_os_error() == Some(libc::ETXTBSY)
            );
            tries += 1;
            if !busy || tries == 50 {
                return err;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// The loader child starts with the open-file limit the proxy started
    /// with, not the one `fd_limit::raise` gave the proxy (as Go's os/exec
    /// does): its own /proc/PID/limits says so.
    #[test]
    fn the_loader_starts_with_the_open_file_limit_the_proxy_started_with() {
        let (started, hard) = crate::ops::fd_limit::raised_for_tests();
        // The child reports its limit the way the loader reports a failure.
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = script(
            dir.path(),
            "#!/bin/sh\ncat >/dev/null\ngrep 'Max open files' /proc/$$/limits\nexit 1\n",
        );
        let text = attach_failing(&fake).to_string();
        let limits: Vec<u64> = text
            .rsplit("Max open files")
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .take(2)
            .filter_map(|n| n.parse().ok())
            .collect();
        assert_eq!(limits, [started, hard], "{text}");
    }

    #[test]
    fn a_loader_that_cannot_start_is_named() {
        let err = attach_with(Path::new("/nonexistent/iron-proxy"), &settings())
            .expect_err("no such program");
        let text = error_chain(&err);
        assert!(
            text.contains("/nonexistent/iron-proxy intercept load")
                && text.contains("No such file"),
            "{text}"
        );
    }
}
