//! `cargo xtask bench`: iron-proxy against direct and against peer proxies,
//! on this machine, in one run. See docs/benchmarks.md for what is measured
//! and how to read it.
//!
//! One HTTPS upstream (hyper + rustls, in this process, `127.0.0.x:443`) and
//! one load client (also in this process, or for the eBPF topology a child
//! inside a bench cgroup, see [`remote`]) serve every topology; each proxy is
//! its own process, measured through /proc. Results go to
//! `<target>/bench/results.json` and `summary.md`.

mod certs;
mod compare;
mod connect;
mod dns;
pub mod link_order;
mod load;
mod micro;
mod peers;
mod perf;
mod procstat;
mod remote;
mod report;
mod results;
mod run;
mod sandbox;
mod topo;
mod upstream;

pub use remote::{child_main as client_main, ClientArgs};

use std::path::PathBuf;

/// The deny list iron-proxy runs with in the bench, in the proxy and, with
/// interception, in the kernel: the spec's defaults without loopback (the
/// bench's upstream is on loopback) plus the private ranges a hardened
/// deployment adds, so every check walks a populated list.
pub(crate) const BENCH_DENY: [&str; 6] = [
    "169.254.169.254/32",
    "fd00:ec2::254/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
];

/// [`BENCH_DENY`] as a YAML flow sequence.
pub(crate) fn bench_deny_yaml() -> String {
    let quoted: Vec<String> = BENCH_DENY.iter().map(|c| format!("\"{c}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

use anyhow::{bail, Context, Result};

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Smoke test for CI: direct, the iron-proxy topologies (https_listen,
    /// CONNECT, eBPF interception) and the connect() micro-benchmark, no
    /// peers, half a second per run. Fails only if the harness or the proxy
    /// is broken, never on numbers.
    #[arg(long)]
    pub quick: bool,
    /// Run only these topologies (comma-separated: direct, iron-https,
    /// iron-connect, iron-intercept, squid-bump, mitmproxy, tinyproxy-tunnel,
    /// hudsucker)
    /// and, when listed, `connect` (the connect() micro-benchmark).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Skip the peer proxies (squid, mitmproxy, tinyproxy, hudsucker).
    #[arg(long)]
    pub no_peers: bool,
    /// Measured seconds per run (default 2; --quick 0.5).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Runs per measure, median reported (default 3; --quick 1).
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 32)]
    pub conns: usize,
    /// Concurrent loops in new-connection mode.
    #[arg(long, default_value_t = 8)]
    pub new_conns: usize,
    /// Idle connections held open through iron-proxy for the memory measure
    /// (default 10000; --quick 200; 0 skips).
    #[arg(long)]
    pub idle: Option<usize>,
    /// Idle connections for each peer (default 2000; 0 skips).
    #[arg(long)]
    pub idle_peers: Option<usize>,
    /// Cargo profile for iron-proxy and this harness (default release; --quick dev).
    #[arg(long)]
    pub profile: Option<String>,
    /// Use this iron-proxy binary instead of building one.
    #[arg(long, value_name = "PATH")]
    pub proxy_bin: Option<PathBuf>,
    /// Also profile iron-proxy (https_listen unless --perf-topology; keep-alive
    /// 1 KiB and 64 KiB, new connections) with
    /// `perf record --call-graph dwarf` for this many seconds each; reports
    /// and flamegraphs (SVG) go next to the results.
    #[arg(long, value_name = "SECS")]
    pub perf: Option<u64>,
    /// The iron-proxy topology `--perf` profiles: iron-https (default),
    /// iron-connect or iron-intercept.
    #[arg(long, value_name = "TOPOLOGY", default_value = "iron-https")]
    pub perf_topology: String,
    /// Keep iron-proxy's stderr (log and audit lines) under <out>/work instead
    /// of /dev/null; large on a full run.
    #[arg(long)]
    pub proxy_log: bool,
    /// Output directory (default <target>/bench).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Compare with this second iron-proxy binary (B; A is --proxy-bin or the
    /// one built): the iron-proxy topologies of --only (default iron-https)
    /// in interleaved rounds, A B then B A, one run per measure each;
    /// --repeats sets the rounds (default 6). Reports the median of the
    /// per-round ratios B / A, in compare.md and compare.json.
    #[arg(long, value_name = "PATH")]
    pub against: Option<PathBuf>,
    /// Do not pair each run of a proxy or peer with a direct run next to it.
    /// Saves about a third of a full run's time; "×direct" and "added" are
    /// then taken between medians measured minutes apart.
    #[arg(long)]
    pub unpaired: bool,
    /// Give iron-proxy a `secrets` transform that injects a 40-byte key
    /// into every request to the upstream (X-Api-Key), so each response is
    /// also searched for it: a deployment's usual request, where the
    /// default pipeline (an allowlist alone) measures the bare proxy.
    #[arg(long)]
    pub secrets: bool,
    /// Set by `xtask link-order` (the proxy runs under callgrind): see
    /// `Settings::profiling`.
    #[arg(skip)]
    pub profiling: bool,
}

/// Entry point: re-runs itself in release when asked for a release bench
/// from a debug build (the load client must not be the bottleneck), builds
/// iron-proxy, then measures.
pub fn main(root: &std::path::Path, target: &std::path::Path, args: BenchArgs) -> Result<()> {
    // Ctrl-C unwinds through the Drop guards (cgroups, pins, nft tables)
    // instead of killing the harness; a release re-run waits for its child.
    sandbox::install_interrupt_handler();
    let profile = args
        .profile
        .clone()
        .unwrap_or_else(|| if args.quick { "dev" } else { "release" }.into());
    if profile == "release" && cfg!(debug_assertions) {
        eprintln!("bench: re-running the harness built with --release");
        let status = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()))
            .args(["run", "--quiet", "--release", "-p", "xtask", "--"])
            .args(std::env::args_os().skip(1))
            .current_dir(root)
            .status()
            .context("running cargo")?;
        if !status.success() {
            bail!("bench (release harness) failed: {status}");
        }
        return Ok(());
    }
    let proxy_bin = match &args.proxy_bin {
        Some(p) => p.clone(),
        None => build_proxy(root, target, &profile)?,
    };
    // Repeated under the machine line of the reports.
    let mut link_order = Vec::new();
    if profile == "release" {
        for bin in std::iter::once(&proxy_bin).chain(&args.against) {
            if let Some(w) = link_order_stale(root, bin) {
                eprintln!("bench: warning: {w}");
                link_order.push(w);
            }
        }
    }
    let out = args.out.clone().unwrap_or_else(|| target.join("bench"));
    sandbox::sweep_stale();
    run::run(root, target, &out, &proxy_bin, &profile, &args, link_order)
}

/// Release binaries are linked with `proxy/link-order.txt`; say so when the
/// list no longer matches the binary's functions: new dependency versions
/// rename most of them, a change to the request path renames or un-inlines
/// a few hot ones (round 33 of docs/benchmarks.md: two dozen renamed tokio
/// task functions kept 0.8 MiB more code resident).
fn link_order_stale(root: &std::path::Path, proxy_bin: &std::path::Path) -> Option<String> {
    let list = root.join("proxy/link-order.txt");
    match link_order::coverage(&list, proxy_bin) {
        Ok(c) if c.found * 10 < c.listed * 9 => Some(format!(
            "{proxy_bin:?} defines only {} of the {} functions in \
             proxy/link-order.txt; run `cargo xtask link-order` and rebuild",
            c.found, c.listed
        )),
        Ok(c) if c.serving_missing > link_order::SERVING_MISSING_WARN => Some(format!(
            "{proxy_bin:?} does not define {} of the serving functions in \
             proxy/link-order.txt, which then land among cold code (\"own code after load\" \
             grows); run `cargo xtask link-order` and rebuild",
            c.serving_missing
        )),
        Ok(_) => None,
        Err(e) => Some(format!(
            "could not compare proxy/link-order.txt with {proxy_bin:?}: {e:#}"
        )),
    }
}

fn build_proxy(root: &std::path::Path, target: &std::path::Path, profile: &str) -> Result<PathBuf> {
    let mut cmd = std::process::Command::new(std::env::var("CARGO").unwrap_or("cargo".into()));
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "iron-proxy",
        "--bin",
        "iron-proxy",
    ])
    .current_dir(root);
    let dir = if profile == "dev" {
        "debug"
    } else {
        cmd.args(["--profile", profile]);
        profile
    };
    eprintln!("bench: building iron-proxy ({profile})");
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build -p iron-proxy failed: {status}");
    }
    Ok(target.join(dir).join("iron-proxy"))
}
