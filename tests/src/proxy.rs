//! `Proxy`: starts the real `iron-proxy` binary with a rendered config and reads its audit log.
//!
//! ```no_run
//! # use iron_proxy_tests::*;
//! let net = FakeInternet::new();
//! let px = Proxy::with("transforms: []").resolver(&net).start();
//! let rec = px.wait_for_audit(|r| r.host() == Some("httpbin.test"));
//! ```
//!
//! The binary is found by [`crate::paths::iron_proxy_bin`] (`IRON_PROXY_BIN`, else next to the
//! test executable). Its stdout and stderr are captured line by line (and kept in `proxy.log`
//! in the proxy's temp dir); audit records are parsed from both. When a test panics while a
//! proxy is running, the tail of its log is printed.

pub mod render;

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::audit::{Audit, AuditRecord};
use crate::ca::TestCa;
use crate::netns::FakeInternet;
use crate::process::{ChildGuard, Lines};

pub use render::Ports;

/// How long `start()` waits for the proxy's listeners.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Something that can be a proxy config: YAML text or a JSON value.
pub trait IntoConfig {
    /// The config as a JSON value.
    fn into_config(self) -> Value;
}

impl IntoConfig for &str {
    fn into_config(self) -> Value {
        serde_yaml_ng::from_str(self).unwrap_or_else(|e| panic!("test config is not YAML: {e}"))
    }
}

impl IntoConfig for String {
    fn into_config(self) -> Value {
        self.as_str().into_config()
    }
}

impl IntoConfig for Value {
    fn into_config(self) -> Value {
        self
    }
}

/// Builder for a proxy process.
#[derive(Debug)]
pub struct Proxy {
    config: Value,
    net: Option<FakeInternet>,
    env: Vec<(String, String)>,
    args: Vec<String>,
    listen_ip: IpAddr,
    binary: Option<PathBuf>,
}

impl Proxy {
    /// A proxy with `config` (YAML text or `serde_json::Value`); see [`render`] for what the
    /// harness fills in.
    pub fn with(config: impl IntoConfig) -> Self {
        Self {
            config: config.into_config(),
            net: None,
            env: Vec::new(),
            args: Vec::new(),
            listen_ip: IpAddr::from([127, 0, 0, 1]),
            binary: None,
        }
    }

    /// Resolves through `net`'s DNS (`dns.upstream_resolver`) and trusts `net`'s upstream CA
    /// (`SSL_CERT_FILE`).
    pub fn resolver(mut self, net: &FakeInternet) -> Self {
        self.net = Some(net.clone());
        self
    }

    /// Sets an environment variable for the proxy (e.g. a secret it reads).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Adds a command-line argument after `-config FILE`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// Binds the harness-chosen listeners to `ip` instead of 127.0.0.1.
    pub fn listen_ip(mut self, ip: IpAddr) -> Self {
        self.listen_ip = ip;
        self
    }

    /// Runs this executable instead of the located `iron-proxy` (e.g. a stand-in).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Renders the config, spawns the proxy and waits until its listeners accept connections
    /// (or it logs `ready`: a bare line, or a JSON log with that message). Panics with the proxy's output if it exits.
    pub fn start(self) -> ProxyProcess {
        let mut px = self.spawn();
        px.wait_ready();
        px
    }

    /// Starts the proxy expecting it to exit on its own (bad config, `validate`, ...): returns
    /// its exit status and output lines. Panics if it is still running after `timeout`.
    pub fn run_to_exit(self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let mut px = self.spawn();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = px.child.try_status() {
                // Let the reader threads drain the pipes.
                std::thread::sleep(Duration::from_millis(50));
                return (status, px.logs());
            }
            if Instant::now() >= deadline {
                panic!(
                    "iron-proxy still running after {timeout:?}:\n{}",
                    px.logs().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spawn(self) -> ProxyProcess {
        let dir = tempfile::Builder::new()
            .prefix("iron-proxy-test.")
            .tempdir()
            .expect("creating a temp dir");
        let ca = TestCa::new("iron-proxy test MITM CA", &dir.path().join("ca"));
        let resolver = self.net.as_ref().map(FakeInternet::resolver);
        let mut config = self.config;
        let ports = render::render(
            &mut config,
            &render::Inputs {
                listen_ip: self.listen_ip,
                resolver,
                ca: (path_str(&ca.cert_path()), path_str(&ca.key_path())),
            },
        );
        let config_path = dir.path().join("proxy.yaml");
        write_config(&config_path, &config);

        let bin = self.binary.unwrap_or_else(crate::paths::iron_proxy_bin);
        let mut cmd = Command::new(&bin);
        cmd.arg("-config").arg(&config_path).args(&self.args);
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "NO_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "no_proxy",
            "SSL_CERT_DIR",
        ] {
            cmd.env_remove(var);
        }
        if let Some(net) = &self.net {
            cmd.env("SSL_CERT_FILE", net.ca_bundle());
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = ChildGuard::spawn("iron-proxy", &mut cmd);
        let log_path = dir.path().join("proxy.log");
        let file = std::sync::Arc::new(std::sync::Mutex::new(
            std::fs::File::create(&log_path).expect("creating proxy.log"),
        ));
        let tee = |prefix: &'static str| {
            let file = file.clone();
            move |line: &str| {
                use std::io::Write;
                if let Ok(mut f) = file.lock() {
                    let _ = writeln!(f, "{prefix}{line}");
                }
            }
        };
        let stdout = child.child_mut().stdout.take().expect("piped stdout");
        let stderr = child.child_mut().stderr.take().expect("piped stderr");
        let (out, _) = Lines::capture(stdout, tee("[stdout] "));
        let (err, _) = Lines::capture(stderr, tee(""));
        ProxyProcess {
            ca_path: path_str(&ca.cert_path()),
            _ca: ca,
            config,
            config_path,
            log_path,
            ports,
            stdout: out,
            stderr: err,
            child,
            _net: self.net,
            dir,
        }
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("temp paths are UTF-8").to_string()
}

fn write_config(path: &Path, config: &Value) {
    let yaml = serde_yaml_ng::to_string(config).expect("a JSON value serialises to YAML");
    std::fs::write(path, yaml).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// A running proxy. Stopped (by PID) on drop.
#[derive(Debug)]
pub struct ProxyProcess {
    ca_path: String,
    _ca: TestCa,
    config: Value,
    config_path: PathBuf,
    log_path: PathBuf,
    ports: Ports,
    stdout: Lines,
    stderr: Lines,
    child: ChildGuard,
    _net: Option<FakeInternet>,
    dir: tempfile::TempDir,
}

impl ProxyProcess {
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending: Vec<SocketAddr> = [self.ports.http, self.ports.https, self.ports.tunnel]
            .into_iter()
            .flatten()
            .collect();
        loop {
            if let Some(status) = self.child.try_status() {
                std::thread::sleep(Duration::from_millis(50));
                panic!(
                    "iron-proxy exited during startup ({status}); config:\n{}\noutput:\n{}",
                    std::fs::read_to_string(&self.config_path).unwrap_or_default(),
                    self.logs().join("\n")
                );
            }
            pending.retain(|a| TcpStream::connect_timeout(a, Duration::from_millis(100)).is_err());
            let said_ready = self.logs().iter().any(|l| is_ready_line(l));
            if pending.is_empty() || said_ready {
                return;
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

    /// Stops the proxy (SIGTERM, then SIGKILL) and returns its exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.child.stop(Duration::from_secs(5))
    }

    /// Every output line so far: stderr, then stdout.
    pub fn logs(&self) -> Vec<String> {
        let mut lines = self.stderr.snapshot();
        lines.extend(self.stdout.snapshot());
        lines
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

/// The proxy's readiness marker: a line `ready`, or a JSON log whose message is `ready`.
fn is_ready_line(line: &str) -> bool {
    if line.trim() == "ready" {
        return true;
    }
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return false;
    };
    let msg = v.get("message").or_else(|| v.pointer("/fields/message"));
    msg.and_then(Value::as_str) == Some("ready")
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
