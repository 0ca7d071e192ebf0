//! The child side: `xtask bench-client --cgroup DIR load|connect ...`.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::IdleOpen;
use crate::bench::certs;
use crate::bench::load::{Client, Mode, Route, RunResult, Spec};
use crate::bench::procstat::Watch;
use crate::bench::sandbox::mount_of;

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
        /// Open this many connections (one request each), print an
        /// `IdleOpen` line, and hold them until stdin closes.
        #[arg(long)]
        idle: Option<usize>,
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
            serde_json::to_string(&crate::bench::connect::client_loop(addr, secs)?)?
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
            idle,
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
                .worker_threads(crate::bench::run::THREADS)
                .thread_name("bench-client")
                .enable_all()
                .build()?;
            if let Some(n) = idle {
                return hold_idle(&rt, &client, n, path);
            }
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

/// The child's idle mode: opens `n` connections, reports, holds them until
/// stdin closes.
fn hold_idle(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    n: usize,
    path: &'static str,
) -> Result<()> {
    let (senders, failed, first_error) = rt.block_on(client.open_idle(n, 64, path));
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(1)).await });
    let open = senders.iter().filter(|s| !s.is_closed()).count();
    println!(
        "{}",
        serde_json::to_string(&IdleOpen {
            open,
            failed,
            first_error
        })?
    );
    std::io::Write::flush(&mut std::io::stdout())?;
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(senders);
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
