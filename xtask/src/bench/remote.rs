//! The load client as a separate process inside a bench cgroup, for the eBPF
//! topology: iron-proxy's programs act on the cgroup's processes, so the
//! client cannot be a thread of the harness. The harness re-executes itself
//! as `xtask bench-client --cgroup DIR ...` (hidden); the child joins the
//! cgroup before anything else, checks that it is there, runs one load
//! [`Spec`] (or the connect() loop of [`super::connect`]) and prints the
//! result as JSON on stdout.

use std::ffi::OsString;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;

use super::certs;
use super::load::{Client, Mode, Route, RunResult, Spec};
use super::procstat::Watch;
use super::sandbox::{interrupted, mount_of};

/// Hidden `xtask bench-client` (run by the bench, not by hand).
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// cgroup v2 directory to join before doing anything else.
    #[arg(long)]
    pub cgroup: PathBuf,
    /// What to run.
    #[command(subcommand)]
    pub what: ClientCmd,
}

/// What the child runs.
#[derive(clap::Subcommand, Debug)]
pub enum ClientCmd {
    /// HTTPS load; prints a `RunResult` as JSON.
    Load {
        /// Where the TCP connections go (redirected by the kernel).
        #[arg(long)]
        addr: SocketAddr,
        /// TLS server name and Host header.
        #[arg(long)]
        host: String,
        /// CA certificates to trust (PEM), repeatable.
        #[arg(long)]
        ca: Vec<PathBuf>,
        /// Keep-alive or a new connection per request.
        #[arg(long, value_enum)]
        mode: Mode,
        /// Connections or loops.
        #[arg(long)]
        conns: usize,
        /// `/1k` or `/64k`.
        #[arg(long)]
        path: String,
        /// Warm-up, milliseconds.
        #[arg(long)]
        warmup_ms: u64,
        /// Measured window, milliseconds.
        #[arg(long)]
        measure_ms: u64,
        /// The proxy's PID, for CPU accounting over the measured window.
        #[arg(long)]
        watch_pid: Option<u32>,
        /// Only one request on one connection (start-up check).
        #[arg(long)]
        probe: bool,
    },
    /// TCP connect() + close loop; prints a `ConnectRun` as JSON.
    Connect {
        /// Where to connect.
        #[arg(long)]
        addr: SocketAddr,
        /// Seconds to loop.
        #[arg(long)]
        secs: f64,
    },
}

/// Entry point of the child.
pub fn child_main(args: ClientArgs) -> Result<()> {
    join_cgroup(&args.cgroup)?;
    let json = match args.what {
        ClientCmd::Connect { addr, secs } => {
            serde_json::to_string(&super::connect::client_loop(addr, secs)?)?
        }
        ClientCmd::Load {
            addr,
            host,
            ca,
            mode,
            conns,
            path,
            warmup_ms,
            measure_ms,
            watch_pid,
            probe,
        } => {
            let path = match path.as_str() {
                "/1k" => "/1k",
                "/64k" => "/64k",
                other => bail!("unknown path {other}"),
            };
            let tls = certs::client_config_from(&ca)?;
            let route = Route {
                addr,
                connect: None,
                host,
            };
            let client = Client::new(route, tls)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(super::run::THREADS)
                .thread_name("bench-client")
                .enable_all()
                .build()?;
            let r = if probe {
                rt.block_on(async {
                    let mut c = client.open().await?;
                    client.get(&mut c, path).await
                })?;
                RunResult {
                    requests: 1,
                    ..RunResult::default()
                }
            } else {
                let spec = Spec {
                    mode,
                    conns,
                    path,
                    warmup: Duration::from_millis(warmup_ms),
                    measure: Duration::from_millis(measure_ms),
                };
                let watch = watch_pid.map(|pid| Watch { pid });
                rt.block_on(client.run(&spec, watch.as_ref()))?
            };
            rt.shutdown_background();
            serde_json::to_string(&r)?
        }
    };
    println!("{json}");
    Ok(())
}

/// Moves this process into `cgroup` and checks that `/proc/self/cgroup` says so.
fn join_cgroup(cgroup: &Path) -> Result<()> {
    let procs = cgroup.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .with_context(|| format!("writing {}", procs.display()))?;
    let mount = mount_of("cgroup2").context("no cgroup2 mount")?;
    let rel = cgroup
        .strip_prefix(&mount)
        .with_context(|| format!("{} is not under {}", cgroup.display(), mount.display()))?;
    let want = format!("0::/{}", rel.display());
    let have = std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    if !have.lines().any(|l| l == want) {
        bail!("not in {} after joining it: {have}", cgroup.display());
    }
    Ok(())
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
