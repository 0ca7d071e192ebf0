//! A running proxy: its listeners, output, audit records and lifecycle.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use super::{write_config, IntoConfig, Ports};
use crate::audit::{Audit, AuditRecord};
use crate::ca::TestCa;
use crate::logs::LogLine;
use crate::netns::FakeInternet;
use crate::process::{ChildGuard, Lines};

/// How long `start()` waits for the proxy's listeners.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running proxy. Stopped (by PID) on drop.
#[derive(Debug)]
pub struct ProxyProcess {
    pub(super) ca_path: String,
    pub(super) _ca: TestCa,
    pub(super) config: Value,
    pub(super) config_path: PathBuf,
    pub(super) log_path: PathBuf,
    pub(super) ports: Ports,
    pub(super) stdout: Lines,
    pub(super) stderr: Lines,
    pub(super) child: ChildGuard,
    pub(super) _net: Option<FakeInternet>,
    pub(super) dir: tempfile::TempDir,
}

impl ProxyProcess {
    /// Waits for the listeners (or the `ready` line); the error says why the proxy exited
    /// during startup. Panics if it is still not ready after [`READY_TIMEOUT`].
    pub(super) fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending: Vec<SocketAddr> = [self.ports.http, self.ports.https, self.ports.tunnel]
            .into_iter()
            .flatten()
            .collect();
        loop {
            if let Some(status) = self.child.try_status() {
                self.wait_output_read();
                return Err(format!(
                    "iron-proxy exited during startup ({status}); config:\n{}\noutput:\n{}",
                    std::fs::read_to_string(&self.config_path).unwrap_or_default(),
                    self.logs().join("\n")
                ));
            }
            pending.retain(|a| TcpStream::connect_timeout(a, Duration::from_millis(100)).is_err());
            let said_ready = self.logs().iter().any(|l| is_ready_line(l));
            // Listeners accept (and answer 503) before interception is attached:
            // ready means the `ready` log line, or /readyz answering 200.
            if said_ready || (pending.is_empty() && self.ports.metrics.is_none_or(readyz_ok)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                panic!(
                    "iron-proxy not ready after {READY_TIMEOUT:?} (not listening on {pending:?}):\n{}",
                    self.logs().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Path of the MITM CA certificate, for `curl --cacert`.
    pub fn ca(&self) -> &str {
        &self.ca_path
    }

    /// The listener addresses.
    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// `proxy.http_listen`.
    pub fn http_addr(&self) -> SocketAddr {
        self.ports
            .http
            .expect("http_listen is not a socket address")
    }

    /// `proxy.https_listen`.
    pub fn https_addr(&self) -> SocketAddr {
        self.ports
            .https
            .expect("https_listen is not a socket address")
    }

    /// `proxy.tunnel_listen` (set it to `auto` in the config).
    pub fn tunnel_addr(&self) -> SocketAddr {
        self.ports
            .tunnel
            .expect("no tunnel_listen: set `proxy.tunnel_listen: auto`")
    }

    /// `dns.listen`.
    pub fn dns_addr(&self) -> SocketAddr {
        self.ports.dns.expect("dns.listen is not a socket address")
    }

    /// `metrics.listen`.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.ports
            .metrics
            .expect("metrics.listen is not a socket address")
    }

    /// `management.listen` (set it to `auto` in the config).
    pub fn management_addr(&self) -> SocketAddr {
        self.ports
            .management
            .expect("no management.listen: set it to `auto`")
    }

    /// `--connect-to` value sending every `https://` URL's connection to the HTTPS listener.
    pub fn connect_to_https(&self) -> String {
        format!("::{}", sockaddr_for_curl(self.https_addr()))
    }

    /// `--connect-to` value sending every `http://` URL's connection to the HTTP listener.
    pub fn connect_to_http(&self) -> String {
        format!("::{}", sockaddr_for_curl(self.http_addr()))
    }

    /// The config as rendered (with the harness's ports).
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The rendered config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Rewrites the config file (for reload tests), keeping the listeners, resolver and CA the
    /// harness chose. Does not signal the proxy.
    pub fn rewrite_config(&mut self, config: impl IntoConfig) {
        let mut config = config.into_config();
        for (section, key) in [
            ("proxy", "http_listen"),
            ("proxy", "https_listen"),
            ("proxy", "tunnel_listen"),
            ("dns", "listen"),
            ("dns", "proxy_ip"),
            ("dns", "upstream_resolver"),
            ("metrics", "listen"),
            ("management", "listen"),
            ("tls", "ca_cert"),
            ("tls", "ca_key"),
        ] {
            let Some(old) = self.config.get(section).and_then(|s| s.get(key)).cloned() else {
                continue;
            };
            if config.get(section).and_then(|s| s.get(key)).is_none() {
                if !config.get(section).is_some_and(Value::is_object) {
                    config[section] = Value::Object(Default::default());
                }
                config[section][key] = old;
            }
        }
        write_config(&self.config_path, &config);
        self.config = config;
    }

    /// Replaces the config file with `text` byte for byte (for reload tests with files the
    /// harness must not parse, such as hostile YAML). Does not signal the proxy, and
    /// [`config`](Self::config) keeps describing the config the proxy started with.
    pub fn write_config_text(&mut self, text: &str) {
        std::fs::write(&self.config_path, text)
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.config_path.display()));
    }

    /// The proxy's temp dir (config, CA, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The proxy's combined output, kept in its temp dir.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The proxy's PID.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Sends a signal to the proxy (e.g. SIGHUP, SIGKILL).
    pub fn signal(&mut self, sig: Signal) {
        self.child.signal(sig);
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_status().is_none()
    }

    /// Stops the proxy (SIGTERM, then SIGKILL) and returns its exit status, once its output
    /// has been read to the end.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let status = self.child.stop(Duration::from_secs(5));
        self.wait_output_read();
        status
    }

    /// After the process has ended: waits (5 s at most) until its stdout and stderr have been
    /// read to their end, so that [`ProxyProcess::logs`] holds its last lines.
    pub(super) fn wait_output_read(&self) {
        let bound = Duration::from_secs(5);
        self.stderr.wait_closed(bound);
        self.stdout.wait_closed(bound);
    }

    /// Every output line so far: stderr, then stdout.
    pub fn logs(&self) -> Vec<String> {
        let mut lines = self.stderr.snapshot();
        lines.extend(self.stdout.snapshot());
        lines
    }

    /// Every stderr line so far (operational logs and audit records).
    pub fn stderr(&self) -> Vec<String> {
        self.stderr.snapshot()
    }

    /// Every operational log line so far that is JSON (`log.format: json`), in order.
    pub fn log_lines(&self) -> Vec<LogLine> {
        self.logs()
            .iter()
            .filter_map(|l| LogLine::parse(l))
            .collect()
    }

    /// The value of the `/metrics` sample `name` (as exposed: `_total` included) whose labels
    /// include each `label="value"` of `labels`; `None` when there is no such sample.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let r = crate::client::Curl::get(&format!("http://{}/metrics", self.metrics_addr())).run();
        assert_eq!(r.status, 200, "scraping /metrics: {r}");
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        r.body.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?;
            if !(rest.starts_with('{') || rest.starts_with(' ')) {
                return None;
            }
            if !wanted.iter().all(|w| rest.contains(w.as_str())) {
                return None;
            }
            l.rsplit(' ').next()?.parse::<f64>().ok()
        })
    }

    /// Waits (up to 10 s) for an output line matching `pred`.
    pub fn wait_for_log(&self, pred: impl Fn(&str) -> bool) -> String {
        crate::wait_until(Duration::from_secs(10), "a matching proxy log line", || {
            self.logs().into_iter().find(|l| pred(l))
        })
    }

    /// Every audit record so far.
    pub fn audit(&self) -> Audit {
        let lines = self.logs();
        Audit::parse(lines.iter().map(String::as_str))
    }

    /// Waits (up to 10 s) for an audit record matching `pred`.
    pub fn wait_for_audit(&self, pred: impl Fn(&AuditRecord) -> bool) -> AuditRecord {
        self.wait_for_audit_within(Duration::from_secs(10), pred)
    }

    /// Waits (up to 10 s) until `n` audit records match `pred` (the proxy writes a record
    /// after the client may have exited) and returns the records then; panics with every
    /// record seen when fewer match. More than `n` are returned as they are, for the caller
    /// to count.
    pub fn wait_for_audits(
        &self,
        n: usize,
        pred: impl Fn(&AuditRecord) -> bool,
    ) -> Vec<AuditRecord> {
        let timeout = Duration::from_secs(10);
        let deadline = Instant::now() + timeout;
        loop {
            let audit = self.audit();
            let found: Vec<AuditRecord> = audit.iter().filter(|r| pred(r)).cloned().collect();
            if found.len() >= n {
                return found;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} of {n} matching audit records within {timeout:?}; records so far:\n{audit}",
                    found.len()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for an audit record matching `pred`; panics with every record
    /// seen when none matches.
    pub fn wait_for_audit_within(
        &self,
        timeout: Duration,
        pred: impl Fn(&AuditRecord) -> bool,
    ) -> AuditRecord {
        let deadline = Instant::now() + timeout;
        loop {
            let audit = self.audit();
            if let Some(r) = audit.find(&pred) {
                return r.clone();
            }
            if Instant::now() >= deadline {
                panic!("no matching audit record within {timeout:?}; records so far:\n{audit}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The proxy's readiness marker: a line `ready`, a JSON log line whose `msg` is `ready`
/// (`log.format: json`), or a tracing text line `... INFO ready ...` (`log.format: text`,
/// ANSI colours stripped).
fn is_ready_line(line: &str) -> bool {
    let plain = strip_ansi(line);
    if plain.trim() == "ready" {
        return true;
    }
    if let Ok(v) = serde_json::from_str::<Value>(&plain) {
        return v.get("msg").and_then(Value::as_str) == Some("ready");
    }
    let words: Vec<&str> = plain.split_whitespace().collect();
    words
        .windows(2)
        .any(|w| w[0].ends_with("INFO") && w[1] == "ready")
}

/// Removes `ESC [ ... letter` sequences.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn sockaddr_for_curl(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => v4.to_string(),
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let tail = &logs[logs.len().saturating_sub(60)..];
            eprintln!(
                "---- iron-proxy output (last {} of {} lines; config {}) ----\n{}\n----",
                tail.len(),
                logs.len(),
                self.config_path.display(),
                tail.join("\n")
            );
        }
        self.child.stop(Duration::from_secs(5));
    }
}

/// True when `GET /readyz` on the metrics listener answers 200 (also what
/// `cargo xtask bench` waits for).
pub fn readyz_ok(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_ready_lines() {
        assert!(is_ready_line("ready"));
        assert!(is_ready_line(
            r#"{"time":"2026-01-01T00:00:00.000Z","level":"info","msg":"ready","version":"0.1.0"}"#
        ));
        assert!(!is_ready_line(r#"{"level":"info","msg":"not ready"}"#));
        assert!(is_ready_line(
            "\u{1b}[2m2026-01-01T00:00:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m ready \u{1b}[3mversion\u{1b}[0m=0.1.0"
        ));
        assert!(!is_ready_line("INFO not ready yet"));
        assert!(!is_ready_line("INFO serving /readyz"));
    }
}
