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
mod running;

pub use running::readyz_ok;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::ca::TestCa;
use crate::netns::FakeInternet;
use crate::process::{ChildGuard, Lines};

pub use render::Ports;
pub use running::ProxyProcess;

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
    config_arg: Option<ConfigArg>,
    stderr_to: Option<StderrTo>,
    cgroup: Option<PathBuf>,
}

/// Where the proxy's stderr goes instead of the harness's pipe (made again on every start
/// attempt).
struct StderrTo(Box<dyn Fn() -> Stdio + Send + Sync>);

impl std::fmt::Debug for StderrTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StderrTo(..)")
    }
}

/// Turns the rendered config file into the `-config` argument (e.g. uploads it, returns its URL).
struct ConfigArg(Box<dyn Fn(&Path) -> String + Send + Sync>);

impl std::fmt::Debug for ConfigArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfigArg(..)")
    }
}

/// How many times [`Proxy::start`] starts a proxy that lost a port to another process.
const START_ATTEMPTS: usize = 3;

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
            config_arg: None,
            stderr_to: None,
            cgroup: None,
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

    /// Passes `-config f(rendered file)` instead of the file: `f` may upload the rendered
    /// config somewhere and return its URL (`s3://bucket/key`). Called on every start attempt.
    pub fn config_arg(mut self, f: impl Fn(&Path) -> String + Send + Sync + 'static) -> Self {
        self.config_arg = Some(ConfigArg(Box::new(f)));
        self
    }

    /// Sends the proxy's stderr (audit records and operational logs) to what `f` returns (a file
    /// opened for appending, as systemd's `StandardError=append:` does; one end of a pipe)
    /// instead of the harness's reader: [`ProxyProcess::audit`] and the log helpers then see
    /// only stdout. Readiness is still detected from the listeners and `/readyz`.
    pub fn stderr_to(mut self, f: impl Fn() -> Stdio + Send + Sync + 'static) -> Self {
        self.stderr_to = Some(StderrTo(Box::new(f)));
        self
    }

    /// Binds the harness-chosen listeners to `ip` instead of 127.0.0.1.
    pub fn listen_ip(mut self, ip: IpAddr) -> Self {
        self.listen_ip = ip;
        self
    }

    /// Starts the proxy inside the cgroup v2 directory `dir` (it joins between fork and exec).
    pub fn in_cgroup(mut self, dir: &Path) -> Self {
        self.cgroup = Some(dir.to_path_buf());
        self
    }

    /// Runs this executable instead of the located `iron-proxy` (e.g. a stand-in).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Renders the config, spawns the proxy and waits until its listeners accept connections
    /// (or it logs `ready`: a bare line, or a JSON log with that message). Panics with the proxy's output if it exits.
    ///
    /// The harness picks free ports and the proxy binds them a moment later; when another
    /// process took one in between (the proxy exits with "Address already in use"), it starts
    /// again on fresh ports, up to [`START_ATTEMPTS`] times.
    pub fn start(self) -> ProxyProcess {
        let mut attempt = 1;
        loop {
            let mut px = self.spawn();
            match px.wait_ready() {
                Ok(()) => return px,
                Err(why) if attempt < START_ATTEMPTS && why.contains("Address already in use") => {
                    eprintln!("iron-proxy lost a port to another process; starting again");
                    attempt += 1;
                }
                Err(why) => panic!("{why}"),
            }
        }
    }

    /// Spawns the proxy without waiting for it to be ready (a start-up that stalls on
    /// purpose); the process is stopped when the returned handle drops.
    pub fn spawn_unready(self) -> ProxyProcess {
        self.spawn()
    }

    /// Starts the proxy expecting it to exit on its own (bad config, `validate`, ...): returns
    /// its exit status and output lines. Panics if it is still running after `timeout`.
    pub fn run_to_exit(self, timeout: Duration) -> (ExitStatus, Vec<String>) {
        let mut px = self.spawn();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = px.child.try_status() {
                px.wait_output_read();
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

    fn spawn(&self) -> ProxyProcess {
        let dir = crate::paths::scratch_dir("proxy");
        let ca = TestCa::new("iron-proxy test MITM CA", &dir.path().join("ca"));
        let resolver = self.net.as_ref().map(FakeInternet::resolver);
        let mut config = self.config.clone();
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

        let bin = self
            .binary
            .clone()
            .unwrap_or_else(crate::paths::iron_proxy_bin);
        let mut cmd = Command::new(&bin);
        match &self.config_arg {
            Some(f) => cmd.arg("-config").arg((f.0)(&config_path)),
            None => cmd.arg("-config").arg(&config_path),
        };
        cmd.args(&self.args);
        if let Some(dir) = &self.cgroup {
            crate::cgroup::join_before_exec(&mut cmd, &dir.join("cgroup.procs"), None);
        }
        for var in crate::client::PROXY_ENV.iter().chain(&["SSL_CERT_DIR"]) {
            cmd.env_remove(var);
        }
        if let Some(net) = &self.net {
            cmd.env("SSL_CERT_FILE", net.ca_bundle());
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(match &self.stderr_to {
                Some(f) => (f.0)(),
                None => Stdio::piped(),
            });
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
        let (out, _) = Lines::capture(stdout, tee("[stdout] "));
        let err = match child.child_mut().stderr.take() {
            Some(stderr) => Lines::capture(stderr, tee("")).0,
            None => Lines::none(),
        };
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
            _net: self.net.clone(),
            dir,
        }
    }
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("temp paths are UTF-8").to_string()
}

pub(crate) fn write_config(path: &Path, config: &Value) {
    let yaml = serde_yaml_ng::to_string(config).expect("a JSON value serialises to YAML");
    std::fs::write(path, yaml).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
