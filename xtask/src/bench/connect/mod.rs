//! connect() cost: direct, redirected by iron-proxy's eBPF programs, and
//! redirected by an nftables `redirect` rule.
//!
//! One iteration is `socket()`, `SO_LINGER {on, 0}`, a blocking `connect()`
//! to 127.0.0.1 and `close()` (an RST, so that no TIME_WAIT state fills the
//! ephemeral port range). A listener in the harness accepts and closes on
//! the far side. The loop runs in a `bench-client` child inside a bench
//! cgroup, one cgroup per setup:
//! - `direct`: to the listener, no program, no rule;
//! - `ebpf`: to a closed port; iron-proxy's programs (attached to this
//!   cgroup only, with the library's `Interceptor`, pinned under a bench pin
//!   directory) redirect it to the listener;
//! - `nftables`: to the same closed port; a bench-owned `inet` table with a
//!   nat output rule `socket cgroupv2 level N "<path>" redirect` sends it to
//!   the listener. The table exists only during these runs, because its nat
//!   hook (and conntrack) would also tax the other setups.
//!
//! A redirected setup that reaches nothing fails: ECONNREFUSED, not a number.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use iron_proxy::intercept::{DenyCidr, InterceptSettings, Interceptor, OriginalDst, ProxyIdentity};
use serde::{Deserialize, Serialize};

use super::remote::spawn_json;
use super::sandbox::{check_interrupted, mount_of, BenchCgroup, NftTable, PinDir};

mod child;
mod profile;

pub use child::client_loop;
pub use profile::ProgramCost;

/// nft 1.0.6 resolves `socket cgroupv2` paths against this directory.
const NFT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// One loop in one setup (what the child prints).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectRun {
    /// Iterations that connected.
    pub connects: u64,
    /// Iterations that failed.
    pub errors: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// Mean wall time per iteration (socket + connect + close), ns.
    pub mean_ns: f64,
    /// Median, ns.
    pub p50_ns: f64,
    /// 99th percentile, ns.
    pub p99_ns: f64,
    /// The client thread's CPU time (user + system) per iteration, ns.
    pub cpu_ns: f64,
}

/// One setup: its runs and their medians.
#[derive(Debug, Default, Serialize)]
pub struct ConnectSetup {
    /// `direct`, `ebpf` or `nftables`.
    pub name: String,
    /// What it is.
    pub what: String,
    /// Why it was not measured.
    pub skipped: Option<String>,
    /// Each run.
    pub runs: Vec<ConnectRun>,
    /// Median of the runs' means, ns.
    pub mean_ns: Option<f64>,
    /// Median of the runs' medians, ns.
    pub p50_ns: Option<f64>,
    /// Median of the runs' p99, ns.
    pub p99_ns: Option<f64>,
    /// Median of the runs' CPU per iteration, ns.
    pub cpu_ns: Option<f64>,
}

/// The three setups.
#[derive(Debug, Default, Serialize)]
pub struct ConnectResult {
    /// Seconds per run.
    pub secs_per_run: f64,
    /// Runs per setup, interleaved (direct, ebpf, nftables, direct, ...).
    pub repeats: usize,
    /// direct, ebpf, nftables.
    pub setups: Vec<ConnectSetup>,
    /// The eBPF `redirected` counter over the eBPF runs (≥ their connects).
    pub ebpf_redirected: Option<u64>,
    /// nft tables that existed before the bench (their hooks tax every setup).
    pub other_nft_tables: Vec<String>,
    /// iron-proxy's programs in an extra eBPF run with BPF statistics on,
    /// most expensive first.
    pub ebpf_programs: Vec<ProgramCost>,
    /// Why `ebpf_programs` is empty, if it is.
    pub ebpf_programs_error: Option<String>,
}

impl ConnectResult {
    /// A measured setup.
    pub fn setup(&self, name: &str) -> Option<&ConnectSetup> {
        self.setups
            .iter()
            .find(|s| s.name == name && s.skipped.is_none() && !s.runs.is_empty())
    }

    /// `setup / direct - 1` of a field, in percent.
    pub fn overhead_pct(&self, name: &str, f: fn(&ConnectSetup) -> Option<f64>) -> Option<f64> {
        let d = f(self.setup("direct")?)?;
        let v = f(self.setup(name)?)?;
        (d > 0.0).then(|| (v / d - 1.0) * 100.0)
    }
}

/// Accepts and closes on 127.0.0.1 until dropped. Once the eBPF programs
/// are attached it also takes each connection's origin out of the tuple
/// map, as iron-proxy's transparent listener does; otherwise the map would
/// fill up and every connect would pay for an eviction the proxy never causes.
struct Acceptor {
    origins: Arc<OnceLock<OriginalDst>>,
    addr: SocketAddrV4,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Acceptor {
    fn start() -> Result<Self> {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        // A deep accept queue: a full one drops SYNs (1 s retransmits).
        // SAFETY: listen(2) again on our own listening socket only resizes its queue.
        unsafe { libc::listen(l.as_raw_fd(), 4096) };
        let SocketAddr::V4(addr) = l.local_addr()? else {
            bail!("listener is not IPv4");
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let origins: Arc<OnceLock<OriginalDst>> = Arc::default();
        let lookup = origins.clone();
        let thread = std::thread::Builder::new()
            .name("bench-accept".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let Ok((s, peer)) = l.accept() else {
                        continue;
                    };
                    if let (Some(od), Ok(local)) = (lookup.get(), s.local_addr()) {
                        let _ = od.lookup(peer, local);
                    }
                }
            })?;
        Ok(Acceptor {
            origins,
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the blocking accept (loopback, our own listener).
        let _ = TcpStream::connect_timeout(&self.addr.into(), Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The nft rule body redirecting TCP from the cgroup at `cg` (under the
/// cgroup2 `mount`) to `port`, or why nft cannot name that cgroup.
fn nft_rule(cg: &Path, mount: &Path, port: u16) -> Result<String> {
    let rel = cg.strip_prefix(NFT_CGROUP_ROOT).with_context(|| {
        format!(
            "nft resolves cgroupv2 paths under {NFT_CGROUP_ROOT}, and the cgroup2 mount {} is not there",
            mount.display()
        )
    })?;
    // The level is the cgroup's depth in the v2 hierarchy, not in the path nft sees.
    let level = cg
        .strip_prefix(mount)
        .with_context(|| format!("{} is not under {}", cg.display(), mount.display()))?
        .components()
        .count();
    Ok(format!(
        "  chain out {{\n    type nat hook output priority -100; policy accept;\n    \
         meta l4proto tcp socket cgroupv2 level {level} \"{}\" redirect to :{port}\n  }}",
        rel.display()
    ))
}

fn nft_tables() -> Vec<String> {
    std::process::Command::new("nft")
        .args(["list", "tables"])
        .stderr(std::process::Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

fn one_run(cg: &Path, addr: SocketAddr, secs: f64) -> Result<ConnectRun> {
    let args = [
        "connect",
        "--addr",
        &addr.to_string(),
        "--secs",
        &secs.to_string(),
    ]
    .map(Into::into);
    let r: ConnectRun = spawn_json(cg, &args, Duration::from_secs_f64(secs + 30.0))?;
    if r.connects == 0 {
        bail!(
            "no connect succeeded ({})",
            r.first_error.as_deref().unwrap_or("no error recorded")
        );
    }
    Ok(r)
}

/// Runs the three setups, `repeats` interleaved runs of `secs` each.
pub fn bench(secs: f64, repeats: usize) -> Result<ConnectResult> {
    let other_nft_tables = nft_tables();
    let acceptor = Acceptor::start()?;
    let target = SocketAddr::from(acceptor.addr);
    // A port nothing listens on: only a redirect makes a connect there succeed.
    let closed = SocketAddr::from((Ipv4Addr::LOCALHOST, super::topo::free_port(false)?));
    let cg_direct = BenchCgroup::new()?;
    let cg_ebpf = BenchCgroup::new()?;
    let cg_nft = BenchCgroup::new()?;
    let pins = PinDir::new()?;

    let mut setups = [
        ("direct", "to the listener, no program or rule"),
        (
            "ebpf",
            "to a closed port, redirected by iron-proxy's cgroup programs",
        ),
        (
            "nftables",
            "to a closed port, redirected by an nft nat output rule (socket cgroupv2)",
        ),
    ]
    .map(|(name, what)| ConnectSetup {
        name: name.into(),
        what: what.into(),
        ..Default::default()
    });

    let settings = InterceptSettings {
        cgroups: vec![cg_ebpf.path().to_path_buf()],
        uids: Vec::new(),
        uid_ranges: Vec::new(),
        listen_v4: acceptor.addr,
        listen_v6: None,
        dns_v4: None,
        dns_v6: None,
        dns_answers: Vec::new(),
        // Parsed once more by the bench's unit test, which checks every entry.
        deny: super::BENCH_DENY
            .iter()
            .filter_map(|c| c.parse().ok().map(DenyCidr::all))
            .collect(),
        proxy: ProxyIdentity::current_process(),
        getsockopt_cgroups: Vec::new(),
        pin_path: pins.path().to_path_buf(),
        listener_priority: false,
        dns_listener_priority: false,
    };
    // Dropped before `pins`, whose drop detaches.
    let interceptor = match Interceptor::attach(&settings) {
        Ok(i) => {
            let _ = acceptor.origins.set(i.original_dst());
            Some(i)
        }
        Err(e) => {
            setups[1].skipped = Some(format!("attaching iron-proxy's programs: {e}"));
            None
        }
    };
    let nft_body = mount_of("cgroup2")
        .context("no cgroup2 mount")
        .and_then(|mount| nft_rule(cg_nft.path(), &mount, acceptor.addr.port()));
    if let Err(e) = &nft_body {
        setups[2].skipped = Some(format!("{e:#}"));
    }
    let counter = |i: &Option<Interceptor>| {
        i.as_ref()
            .and_then(|i| i.counters().ok())
            .map(|c| c.redirected)
    };
    let redirected_before = counter(&interceptor);

    for _ in 0..repeats {
        for setup in setups.iter_mut() {
            check_interrupted()?;
            if setup.skipped.is_some() {
                continue;
            }
            let r = match setup.name.as_str() {
                "direct" => one_run(cg_direct.path(), target, secs),
                "ebpf" => one_run(cg_ebpf.path(), closed, secs),
                _ => match &nft_body {
                    Ok(body) => NftTable::create(body)
                        .and_then(|_table| one_run(cg_nft.path(), closed, secs)),
                    Err(_) => continue,
                },
            };
            match r {
                Ok(r) => {
                    eprintln!(
                        "bench: connect {:<9} {:>6.0} ns/iteration (p50 {:.0}, p99 {:.0}, cpu {:.0}), {} errors",
                        setup.name, r.mean_ns, r.p50_ns, r.p99_ns, r.cpu_ns, r.errors
                    );
                    setup.runs.push(r);
                }
                Err(e) => {
                    check_interrupted()?;
                    setup.skipped = Some(format!("{e:#}"));
                }
            }
        }
    }
    let ebpf_redirected = match (redirected_before, counter(&interceptor)) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    let (mut ebpf_programs, mut ebpf_programs_error) = (Vec::new(), None);
    if interceptor.is_some() && setups[1].skipped.is_none() {
        match profile::programs(pins.path(), cg_ebpf.path(), closed, secs.min(1.0)) {
            Ok(p) => ebpf_programs = p,
            Err(e) => {
                check_interrupted()?;
                ebpf_programs_error = Some(format!("{e:#}"));
            }
        }
    }
    drop(interceptor);
    drop(pins);
    for s in setups.iter_mut() {
        let med = |f: &dyn Fn(&ConnectRun) -> f64| {
            let mut v: Vec<f64> = s.runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied()
        };
        s.mean_ns = med(&|r| r.mean_ns);
        s.p50_ns = med(&|r| r.p50_ns);
        s.p99_ns = med(&|r| r.p99_ns);
        s.cpu_ns = med(&|r| r.cpu_ns);
    }
    Ok(ConnectResult {
        secs_per_run: secs,
        repeats,
        setups: setups.into_iter().collect(),
        ebpf_redirected,
        other_nft_tables,
        ebpf_programs,
        ebpf_programs_error,
    })
}

#[cfg(test)]
mod tests;
