//! Host side effects of `init`: idempotent file writes, systemctl, waiting
//! for `/readyz`, and the system trust store.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::InitError;

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The file did not exist.
    Created,
    /// The content or mode differed.
    Updated,
    /// Same content and mode: not touched.
    Unchanged,
}

impl Change {
    /// Past-tense verb for the report.
    pub fn verb(self) -> &'static str {
        match self {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> InitError + '_ {
    move |source| InitError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `content` with `mode` unless the file already has both. The new
/// file is created with its final mode under a temporary name and renamed
/// into place, so a secret is never readable by others, even briefly.
pub fn write_if_changed(path: &Path, content: &str, mode: u32) -> Result<Change, InitError> {
    let existing = match fs::read(path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(path)(e)),
    };
    if let Some(old) = &existing {
        let old_mode = fs::metadata(path).map_err(io(path))?.permissions().mode() & 0o7777;
        if old == content.as_bytes() && old_mode == mode {
            return Ok(Change::Unchanged);
        }
    }
    let dir = path.parent().ok_or_else(|| InitError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other("no parent directory"),
    })?;
    fs::create_dir_all(dir).map_err(io(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.init-tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(content.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    // The umask may have cleared bits of `mode`.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    fs::rename(&tmp, path).map_err(io(path))?;
    Ok(if existing.is_some() {
        Change::Updated
    } else {
        Change::Created
    })
}

/// Runs a command, turning a non-zero exit into an error with its output.
pub fn run(cmd: &mut Command) -> Result<String, InitError> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|source| InitError::Command {
        command: shown.clone(),
        detail: source.to_string(),
    })?;
    if !out.status.success() {
        let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if detail.is_empty() {
            detail = out.status.to_string();
        }
        return Err(InitError::Command {
            command: shown,
            detail,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether systemd is the running init (sd_booted()).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Enables the service and (re)starts it when something changed or it is not running.
/// Returns what was done, for the report.
pub fn enable_and_start(unit: &str, changed: bool) -> Result<&'static str, InitError> {
    run(Command::new("systemctl").arg("daemon-reload"))?;
    run(Command::new("systemctl").args(["enable", unit]))?;
    let active = Command::new("systemctl")
        .args(["is-active", "--quiet", unit])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if active && !changed {
        return Ok("already running with this configuration");
    }
    let verb = if active { "restart" } else { "start" };
    run(Command::new("systemctl").args([verb, unit]))?;
    Ok(if active { "restarted" } else { "started" })
}

/// One HTTP/1.0 GET; returns the status code.
fn get_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    let head = String::from_utf8_lossy(&buf[..n]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))
}

/// Polls `http://addr/readyz` until it answers 200 or `timeout` passes.
pub fn wait_ready(addr: SocketAddr, timeout: Duration) -> Result<(), InitError> {
    let start = Instant::now();
    let mut last = String::from("no attempt");
    while start.elapsed() < timeout {
        match get_status(addr, "/readyz") {
            Ok(200) => return Ok(()),
            Ok(code) => last = format!("HTTP {code}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(InitError::NotReady {
        addr,
        seconds: timeout.as_secs(),
        last,
    })
}

/// Where a distribution keeps local CA anchors, and how it rebuilds the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustStore {
    /// Debian, Ubuntu, Alpine.
    Debian,
    /// RHEL, Fedora, Amazon Linux.
    Rhel,
}

impl TrustStore {
    /// The anchor file for our CA.
    pub fn anchor(self) -> &'static str {
        match self {
            TrustStore::Debian => "/usr/local/share/ca-certificates/iron-proxy.crt",
            TrustStore::Rhel => "/etc/pki/ca-trust/source/anchors/iron-proxy.crt",
        }
    }

    /// The combined bundle after the update (for SSL_CERT_FILE).
    pub fn bundle(self) -> &'static str {
        match self {
            TrustStore::Debian => "/etc/ssl/certs/ca-certificates.crt",
            TrustStore::Rhel => "/etc/pki/tls/certs/ca-bundle.crt",
        }
    }

    fn update_command(self) -> &'static str {
        match self {
            TrustStore::Debian => "update-ca-certificates",
            TrustStore::Rhel => "update-ca-trust",
        }
    }

    /// Detects the store: under `-root` by directories, else by the tool on PATH.
    pub fn detect(root: Option<&Path>) -> Option<TrustStore> {
        match root {
            Some(r) if r.join("etc/pki/ca-trust/source/anchors").is_dir() => Some(TrustStore::Rhel),
            Some(_) => Some(TrustStore::Debian),
            None if on_path("update-ca-certificates") => Some(TrustStore::Debian),
            None if on_path("update-ca-trust") => Some(TrustStore::Rhel),
            None => None,
        }
    }
}

fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|d| d.join(tool).is_file())
}

/// Copies the CA into the store (`anchor` is the path under -root) and, on a live system, rebuilds the bundle.
pub fn trust(
    store: TrustStore,
    ca_pem: &str,
    anchor: &Path,
    live: bool,
) -> Result<Change, InitError> {
    let change = write_if_changed(anchor, ca_pem, 0o644)?;
    if live && change != Change::Unchanged {
        run(&mut Command::new(store.update_command()))?;
    }
    Ok(change)
}

/// Installs the packages' logrotate file in `dir` (`/etc/logrotate.d`, under
/// `-root` if given) for an install without the package (which ships it),
/// so that the log the unit appends to is rotated: only when logrotate's
/// directory exists and no file is there yet. A file already there, the
/// operator's or an earlier init's, is never replaced (a `.bak` beside it
/// would be read by logrotate as a second entry for the same log, which it
/// refuses). Returns the step for the report.
pub fn install_logrotate(dir: &Path) -> Result<String, InitError> {
    let log = super::LOG_FILE;
    if !dir.is_dir() {
        return Ok(format!(
            "no {} (logrotate is not installed): {log} is not rotated; install logrotate and \
             re-run init, or rotate it yourself (SIGUSR1 makes the proxy reopen it)",
            dir.display()
        ));
    }
    let path = dir.join("iron-proxy");
    let content = super::render::logrotate();
    match fs::read(&path) {
        Ok(old) if old == content.as_bytes() => Ok(format!("unchanged {}", path.display())),
        Ok(_) => Ok(format!(
            "kept {} (already there; init does not replace it): it should rotate {log} and \
             send SIGUSR1 after, as packaging/logrotate does",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_if_changed(&path, &content, 0o644)?;
            Ok(format!(
                "created {} (rotates {log} daily, keeps 14 compressed; SIGUSR1 makes the proxy \
                 reopen it)",
                path.display()
            ))
        }
        Err(source) => Err(InitError::Io { path, source }),
    }
}
