//! The load client as a separate process inside a bench cgroup, for the eBPF
//! topology: iron-proxy's programs act on the cgroup's processes, so the
//! client cannot be a thread of the harness. The harness re-executes itself
//! as `xtask bench-client --cgroup DIR ...` (hidden); the child joins the
//! cgroup before anything else, checks that it is there, runs one load
//! [`Spec`] (or the connect() loop of [`super::connect`]) and prints the
//! result as JSON on stdout.

use std::ffi::OsString;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod child;

use super::load::{Client, Mode, Route, RunResult, Spec};
use super::procstat::Watch;
use super::sandbox::interrupted;
use super::topo::reap_within;
pub use child::{child_main, ClientArgs};

/// What the idle child reports once its connections are open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleOpen {
    /// Connections open (one request each) a second after opening.
    pub open: usize,
    /// Connections that failed to open.
    pub failed: u64,
    /// The first failure.
    pub first_error: Option<String>,
}

/// A child holding idle connections; they close when this drops.
pub struct IdleHold {
    child: Child,
    /// What the child reported.
    pub report: IdleOpen,
}

impl Drop for IdleHold {
    fn drop(&mut self) {
        // EOF on its stdin ends the child.
        drop(self.child.stdin.take());
        reap_within(&mut self.child, Duration::from_secs(10));
    }
}

/// Runs `xtask bench-client --cgroup <cgroup> <args>` and parses its stdout.
/// Kills the child (by PID) after `timeout` or on Ctrl-C.
pub fn spawn_json<T: DeserializeOwned>(
    cgroup: &Path,
    args: &[OsString],
    timeout: Duration,
) -> Result<T> {
    let exe = std::env::current_exe().context("locating the xtask binary")?;
    let mut child = Command::new(exe)
        .arg("bench-client")
        .arg("--cgroup")
        .arg(cgroup)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the bench client")?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if interrupted() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            if interrupted() {
                bail!("interrupted");
            }
            bail!("bench client did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out)?;
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_string(&mut err)?;
    }
    if !status.success() {
        bail!("bench client failed ({status}): {}", err.trim());
    }
    serde_json::from_str(out.trim())
        .with_context(|| format!("parsing the bench client's output {out:?}"))
}

/// The load client of the eBPF topology: each run is a child in `cgroup`.
pub struct Remote {
    /// The bench cgroup the child joins.
    pub cgroup: PathBuf,
    /// What the child connects to (the upstream itself: the kernel redirects).
    pub route: Route,
    /// CA files the child trusts.
    pub cas: Vec<PathBuf>,
}

impl Remote {
    fn args(&self, mode: Mode, conns: usize, path: &str) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "load".into(),
            "--addr".into(),
            self.route.addr.to_string().into(),
            "--host".into(),
            self.route.host.clone().into(),
        ];
        for ca in &self.cas {
            a.push("--ca".into());
            a.push(ca.into());
        }
        let mode = match mode {
            Mode::KeepAlive => "keep-alive",
            Mode::NewConn => "new-conn",
        };
        for (k, v) in [
            ("--mode", mode.to_string()),
            ("--conns", conns.to_string()),
            ("--path", path.to_string()),
        ] {
            a.push(k.into());
            a.push(v.into());
        }
        a
    }

    /// Starts a child holding `n` idle connections (one request each) and
    /// waits for its report.
    pub fn hold_idle(&self, n: usize) -> Result<IdleHold> {
        let mut a = self.args(Mode::KeepAlive, 1, "/1k");
        a.extend(["--warmup-ms", "0", "--measure-ms", "0", "--idle"].map(OsString::from));
        a.push(n.to_string().into());
        let exe = std::env::current_exe().context("locating the xtask binary")?;
        let mut child = Command::new(exe)
            .arg("bench-client")
            .arg("--cgroup")
            .arg(&self.cgroup)
            .args(&a)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the bench client")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let r = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
            let _ = tx.send(r.map(|_| line));
        });
        // Held from here on, so the child goes whatever happens next.
        let mut hold = IdleHold {
            child,
            report: IdleOpen {
                open: 0,
                failed: 0,
                first_error: None,
            },
        };
        let deadline = Instant::now() + Duration::from_secs(300);
        let line = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(r) => break r.context("reading the bench client's report")?,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if interrupted() {
                        bail!("interrupted");
                    }
                    if Instant::now() > deadline {
                        bail!("the idle bench client did not report within 300 s");
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("the idle bench client exited without a report")
                }
            }
        };
        hold.report = serde_json::from_str(line.trim())
            .with_context(|| format!("parsing the idle bench client's report {line:?}"))?;
        Ok(hold)
    }

    /// One request on one connection.
    pub fn probe(&self) -> Result<()> {
        let mut a = self.args(Mode::KeepAlive, 1, "/1k");
        a.extend(["--warmup-ms", "0", "--measure-ms", "0", "--probe"].map(OsString::from));
        let _: RunResult = spawn_json(&self.cgroup, &a, Duration::from_secs(30))?;
        Ok(())
    }

    /// Runs `spec` in a child, sampling `watch`'s CPU around the measured window.
    pub fn run(&self, spec: &Spec, watch: Option<&Watch>) -> Result<RunResult> {
        let mut a = self.args(spec.mode, spec.conns, spec.path);
        a.push("--warmup-ms".into());
        a.push(spec.warmup.as_millis().to_string().into());
        a.push("--measure-ms".into());
        a.push(spec.measure.as_millis().to_string().into());
        if let Some(w) = watch {
            a.push("--watch-pid".into());
            a.push(w.pid.to_string().into());
        }
        let timeout = spec.warmup + spec.measure + Duration::from_secs(40);
        spawn_json(&self.cgroup, &a, timeout)
    }
}

/// The load client: in this process, or a child in the eBPF topology's cgroup.
pub enum Runner {
    /// In this process.
    Local(Client),
    /// A `bench-client` child per run.
    Remote(Remote),
}

impl Runner {
    /// One request on a fresh connection.
    pub fn first(&self, rt: &tokio::runtime::Runtime) -> Result<()> {
        match self {
            Runner::Local(c) => rt
                .block_on(async {
                    let mut s = c.open().await?;
                    c.get(&mut s, "/1k").await
                })
                .map(drop),
            Runner::Remote(r) => r.probe(),
        }
    }

    /// One run of `spec`.
    pub fn run(
        &self,
        rt: &tokio::runtime::Runtime,
        spec: &Spec,
        watch: Option<&Watch>,
    ) -> Result<RunResult> {
        match self {
            Runner::Local(c) => rt.block_on(c.run(spec, watch)),
            Runner::Remote(r) => r.run(spec, watch),
        }
    }
}
