//! The shape of `target/bench/results.json`, the machine description, and
//! medians over repeated runs.

use std::collections::BTreeMap;
use std::process::Command;

use serde::Serialize;

use super::connect::ConnectResult;
use super::load::RunResult;
use super::micro::{AllowlistResult, LeafResult, ScrubResult};
use super::procstat::Mem;

/// Everything one `cargo xtask bench` run measured.
#[derive(Debug, Serialize)]
pub struct Results {
    /// Unix time at the start.
    pub started_unix: u64,
    /// The command line.
    pub command: String,
    /// Quick (smoke) mode.
    pub quick: bool,
    /// The machine.
    pub machine: Machine,
    /// Run settings.
    pub settings: Settings,
    /// Library micro-benchmarks.
    pub allowlist: Option<AllowlistResult>,
    /// Leaf minting.
    pub leaf: Option<LeafResult>,
    /// The response-body scrub.
    pub scrub: Option<ScrubResult>,
    /// connect() cost: direct, eBPF redirect, nftables redirect.
    pub connect: Option<ConnectResult>,
    /// One entry per topology, in order.
    pub topologies: Vec<TopoResult>,
    /// Direct measured again after the other topologies (full runs that
    /// include direct and another topology): how far the machine's speed
    /// drifted during the run.
    pub direct_end: Option<TopoResult>,
    /// perf reports written, if profiling was asked for.
    pub perf_reports: Vec<String>,
    /// Total wall time in seconds.
    pub wall_secs: f64,
}

/// Settings in force.
#[derive(Debug, Serialize, Clone)]
pub struct Settings {
    /// Measured seconds per run.
    pub measure_secs: f64,
    /// Warm-up seconds per run.
    pub warmup_secs: f64,
    /// Runs per measure (median reported).
    pub repeats: usize,
    /// Keep-alive connections.
    pub conns: usize,
    /// New-connection loops.
    pub new_conns: usize,
    /// Idle connections for iron-proxy.
    pub idle: usize,
    /// Idle connections for peers.
    pub idle_peers: usize,
    /// Upstream worker threads (in the harness process).
    pub upstream_threads: usize,
    /// Load-client worker threads (in the harness process).
    pub client_threads: usize,
    /// Cargo profile of iron-proxy.
    pub profile: String,
    /// Every run of a topology other than direct is paired with a direct run
    /// next to it (see [`Paired`]).
    pub paired: bool,
    /// iron-proxy injected a key into every request (`--secrets`).
    pub secrets: bool,
    /// The proxy runs under a profiler (`xtask link-order`): a measure in
    /// which no request completed, with no error recorded, only warns (a
    /// 64 KiB response through a debug binary under callgrind can take longer
    /// than the run), as the profile still holds what ran.
    #[serde(skip)]
    pub profiling: bool,
}

/// One topology's results.
#[derive(Debug, Serialize, Default)]
pub struct TopoResult {
    /// Topology name.
    pub name: String,
    /// The proxy's version line.
    pub version: String,
    /// Why it was not run, if it was not.
    pub skipped: Option<String>,
    /// Measures by name (`keepalive_1k`, ...).
    pub measures: BTreeMap<String, Measure>,
    /// Peak RSS (VmHWM) over all the load runs (the largest of the measures'
    /// peaks), KiB.
    pub peak_rss_kib: Option<u64>,
    /// Peak RSS (VmHWM) during the first measure, 1 KiB responses over 32
    /// keep-alive connections (the reference conditions), KiB.
    pub peak_rss_1k_kib: Option<u64>,
    /// Peak RSS (VmHWM) before any load, KiB: start-up's (for eBPF
    /// interception, loading the programs).
    pub start_peak_rss_kib: Option<u64>,
    /// RSS before any load, KiB.
    pub start_rss_kib: Option<u64>,
    /// Anonymous (RssAnon) and file-backed (RssFile) RSS right after the load runs, KiB.
    pub after_load_anon_file_kib: Option<(u64, u64)>,
    /// Resident code of the proxy's own binary right after the load runs,
    /// KiB (iron-proxy: shows when `proxy/link-order.txt` is stale).
    #[serde(default)]
    pub after_load_code_kib: Option<u64>,
    /// Idle-connection memory.
    pub idle: Option<IdleResult>,
    /// eBPF topology: connects the kernel redirected to the transparent
    /// listener over the whole run (proves the client was intercepted).
    pub redirected: Option<u64>,
}

/// One measure: the median and every run.
#[derive(Debug, Serialize)]
pub struct Measure {
    /// Field-wise median over the runs.
    pub median: RunResult,
    /// Each run.
    pub runs: Vec<RunResult>,
    /// The proxy's peak RSS (VmHWM) during this measure's runs, KiB (the
    /// peak is reset before each measure).
    pub peak_rss_kib: Option<u64>,
    /// The direct run paired with each run, in the same order (empty when
    /// runs were not paired).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub direct_runs: Vec<RunResult>,
    /// What the pairs say, when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paired: Option<Paired>,
}

/// A measure against direct, run by run: each run of the topology has a
/// direct run right before or after it (the order alternates), and the
/// figures are medians of the per-pair ratios and differences. The guest's
/// speed drifts by tens of percent within minutes; a drift slows both runs
/// of a pair, so these move far less than a ratio of two topologies'
/// medians measured minutes apart.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct Paired {
    /// Median over pairs of rate / direct rate.
    pub rate_ratio: f64,
    /// Median over pairs of p50 minus direct's p50, µs.
    pub added_p50_us: f64,
    /// Median over pairs of p99 minus direct's p99, µs.
    pub added_p99_us: f64,
    /// Median rate of the direct runs (how fast the machine was meanwhile).
    pub direct_rate: f64,
}

impl Paired {
    /// The pairs' medians; `None` without a complete pair (runs with no
    /// request on either side are left out).
    pub fn of(runs: &[RunResult], direct: &[RunResult]) -> Option<Paired> {
        let pairs: Vec<(&RunResult, &RunResult)> = runs
            .iter()
            .zip(direct)
            .filter(|(r, d)| r.requests > 0 && d.requests > 0 && d.rate > 0.0)
            .collect();
        if pairs.is_empty() {
            return None;
        }
        let med = |f: &dyn Fn(&RunResult, &RunResult) -> f64| {
            median_of(pairs.iter().map(|(r, d)| f(r, d)).collect())
        };
        Some(Paired {
            rate_ratio: med(&|r, d| r.rate / d.rate),
            added_p50_us: med(&|r, d| r.p50_us - d.p50_us),
            added_p99_us: med(&|r, d| r.p99_us - d.p99_us),
            direct_rate: med(&|_, d| d.rate),
        })
    }
}

/// The median of `v` (the upper one of an even count, as [`median`] takes);
/// 0 when empty.
fn median_of(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Memory with many idle connections.
#[derive(Debug, Serialize, Default)]
pub struct IdleResult {
    /// Connections asked for.
    pub requested: usize,
    /// Connections opened (one request each) and still open at measurement.
    pub open: usize,
    /// Connections that failed to open.
    pub failed: u64,
    /// The first failure.
    pub first_error: Option<String>,
    /// Proxy memory before opening them.
    pub before: Mem,
    /// Proxy memory with them open.
    pub after: Mem,
    /// (after.rss - before.rss) / open, KiB.
    pub kib_per_conn: f64,
}

/// The machine the numbers come from.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// Memory in GiB.
    pub mem_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// OS name.
    pub os: String,
    /// rustc version.
    pub rustc: String,
    /// Git commit of the tree.
    pub commit: String,
    /// /proc/loadavg when the bench started (other work on the machine skews numbers).
    pub loadavg_start: String,
    /// /proc/loadavg at the end.
    pub loadavg_end: String,
    /// How idle CPUs wait (see [`IdlePolicy`]); moves the one-connection
    /// latencies by a factor of three on a VM (docs/benchmarks.md, round 25).
    pub idle: IdlePolicy,
    /// The kernel's transparent huge page mode (`always`, `madvise`,
    /// `never`; empty when unknown). iron-proxy turns THP off for itself;
    /// peers that do not get 2 MiB pages under `always` (docs/benchmarks.md,
    /// round 26).
    pub thp: String,
    /// Warnings that a release binary under test does not fit
    /// `proxy/link-order.txt` (its memory figures are then not the shipped
    /// build's: docs/benchmarks.md, round 35); empty when it fits.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub link_order: Vec<String>,
}

/// The selected mode in a sysfs choice list such as
/// `/sys/kernel/mm/transparent_hugepage/enabled` (`always [madvise] never`):
/// the bracketed word, or empty.
pub fn sysfs_choice(text: &str) -> String {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .unwrap_or_default()
        .to_string()
}

/// The cpuidle driver and governor, and for the `haltpoll` driver (KVM
/// guests) how long an idle vCPU polls before it halts.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct IdlePolicy {
    /// `/sys/devices/system/cpu/cpuidle/current_driver` (empty: none).
    pub driver: String,
    /// `/sys/devices/system/cpu/cpuidle/current_governor` (or `_ro`).
    pub governor: String,
    /// `/sys/module/haltpoll/parameters/guest_halt_poll_ns`, when present.
    pub guest_halt_poll_ns: Option<u64>,
}

impl IdlePolicy {
    /// Reads it through `read` (a path to its contents, empty when absent).
    pub fn detect(read: &dyn Fn(&str) -> String) -> Self {
        let cpuidle = "/sys/devices/system/cpu/cpuidle";
        let governor = [
            format!("{cpuidle}/current_governor"),
            format!("{cpuidle}/current_governor_ro"),
        ]
        .iter()
        .map(|p| read(p).trim().to_string())
        .find(|g| !g.is_empty())
        .unwrap_or_default();
        IdlePolicy {
            driver: read(&format!("{cpuidle}/current_driver"))
                .trim()
                .to_string(),
            governor,
            guest_halt_poll_ns: read("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
                .trim()
                .parse()
                .ok(),
        }
    }

    /// A vCPU halts as soon as it is idle, so every wake-up of one goes
    /// through the host: one-connection latencies are the host's as much as
    /// the proxy's.
    pub fn halts_at_once(&self) -> bool {
        self.driver == "haltpoll" && self.guest_halt_poll_ns == Some(0)
    }
}

impl std::fmt::Display for IdlePolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.driver.is_empty() {
            return f.write_str("no cpuidle driver");
        }
        write!(f, "cpuidle {}/{}", self.driver, self.governor)?;
        if let Some(ns) = self.guest_halt_poll_ns {
            write!(f, ", guest_halt_poll_ns {ns}")?;
        }
        Ok(())
    }
}

impl Machine {
    /// Reads /proc and asks rustc and git.
    pub fn detect(root: &std::path::Path) -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let mem_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default();
        let out = |cmd: &mut Command| {
            cmd.output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        };
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            mem_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            os,
            rustc: out(Command::new("rustc").arg("--version")),
            commit: out(Command::new("git").arg("-C").arg(root).args([
                "rev-parse",
                "--short",
                "HEAD",
            ])),
            loadavg_start: String::new(),
            loadavg_end: loadavg(),
            idle: IdlePolicy::detect(&|p| read(p)),
            thp: sysfs_choice(&read("/sys/kernel/mm/transparent_hugepage/enabled")),
            link_order: Vec::new(),
        }
    }
}

/// Field-wise median of runs (errors summed).
pub fn median(runs: &[RunResult]) -> RunResult {
    let med = |f: &dyn Fn(&RunResult) -> f64| -> f64 { median_of(runs.iter().map(f).collect()) };
    let med_opt = |f: &dyn Fn(&RunResult) -> Option<f64>| -> Option<f64> {
        let mut v: Vec<f64> = runs.iter().filter_map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    };
    RunResult {
        requests: med(&|r| r.requests as f64) as u64,
        errors: runs.iter().map(|r| r.errors).sum(),
        first_error: runs.iter().find_map(|r| r.first_error.clone()),
        rate: med(&|r| r.rate),
        p50_us: med(&|r| r.p50_us),
        p90_us: med(&|r| r.p90_us),
        p99_us: med(&|r| r.p99_us),
        mean_us: med(&|r| r.mean_us),
        proxy_cpu_us_per_req: med_opt(&|r| r.proxy_cpu_us_per_req),
        proxy_cores: med_opt(&|r| r.proxy_cores),
        proxy_sys_share: med_opt(&|r| r.proxy_sys_share),
    }
}

/// The first three fields of /proc/loadavg.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(files: &[(&str, &str)]) -> IdlePolicy {
        let files: BTreeMap<String, String> = files
            .iter()
            .map(|(p, c)| (p.to_string(), c.to_string()))
            .collect();
        IdlePolicy::detect(&|p| files.get(p).cloned().unwrap_or_default())
    }

    #[test]
    fn idle_policy_names_the_driver_and_the_guest_halt_polling() {
        let guest = idle(&[
            (
                "/sys/devices/system/cpu/cpuidle/current_driver",
                "haltpoll\n",
            ),
            (
                "/sys/devices/system/cpu/cpuidle/current_governor_ro",
                "haltpoll\n",
            ),
            ("/sys/module/haltpoll/parameters/guest_halt_poll_ns", "0\n"),
        ]);
        assert_eq!(
            guest.to_string(),
            "cpuidle haltpoll/haltpoll, guest_halt_poll_ns 0"
        );
        assert!(guest.halts_at_once());
        let polling = idle(&[
            (
                "/sys/devices/system/cpu/cpuidle/current_driver",
                "haltpoll\n",
            ),
            (
                "/sys/devices/system/cpu/cpuidle/current_governor",
                "haltpoll\n",
            ),
            (
                "/sys/module/haltpoll/parameters/guest_halt_poll_ns",
                "200000\n",
            ),
        ]);
        assert_eq!(polling.guest_halt_poll_ns, Some(200000));
        assert!(!polling.halts_at_once());
        let metal = idle(&[
            (
                "/sys/devices/system/cpu/cpuidle/current_driver",
                "intel_idle\n",
            ),
            ("/sys/devices/system/cpu/cpuidle/current_governor", "menu\n"),
        ]);
        assert_eq!(metal.to_string(), "cpuidle intel_idle/menu");
        assert!(!metal.halts_at_once());
        assert_eq!(idle(&[]).to_string(), "no cpuidle driver");
    }

    #[test]
    fn sysfs_choice_is_the_bracketed_word() {
        assert_eq!(sysfs_choice("always [madvise] never\n"), "madvise");
        assert_eq!(sysfs_choice("[always] madvise never"), "always");
        assert_eq!(sysfs_choice("always madvise never"), "");
        assert_eq!(sysfs_choice(""), "");
    }

    fn run(rate: f64, p50: f64, p99: f64) -> RunResult {
        RunResult {
            requests: 100,
            rate,
            p50_us: p50,
            p99_us: p99,
            ..Default::default()
        }
    }

    #[test]
    fn pairs_cancel_a_drift_that_the_medians_do_not() {
        // The machine halves its speed between the first and the last pair;
        // the topology runs at 0.3× whatever the speed.
        let direct = [
            run(100.0, 20.0, 30.0),
            run(70.0, 28.0, 40.0),
            run(50.0, 40.0, 60.0),
        ];
        let topo = [
            run(30.0, 50.0, 70.0),
            run(21.0, 60.0, 80.0),
            run(15.0, 75.0, 100.0),
        ];
        let p = Paired::of(&topo, &direct).expect("pairs");
        assert!((p.rate_ratio - 0.3).abs() < 1e-9, "{p:?}");
        assert_eq!(p.added_p50_us, 32.0);
        assert_eq!(p.added_p99_us, 40.0);
        assert_eq!(p.direct_rate, 70.0);
        // Whereas medians of runs taken at different times would mislead:
        // here a late topology against an early direct.
        assert!((median(&topo).rate / 100.0 - 0.3).abs() > 0.05);
    }

    #[test]
    fn pairs_with_an_empty_side_are_left_out() {
        let empty = RunResult::default();
        let direct = [run(100.0, 20.0, 30.0), empty.clone()];
        let topo = [empty, run(30.0, 50.0, 70.0)];
        assert_eq!(Paired::of(&topo, &direct), None);
        assert_eq!(Paired::of(&[], &[]), None);
        let direct = [run(100.0, 20.0, 30.0), run(100.0, 20.0, 30.0)];
        let failed = RunResult {
            requests: 0,
            ..run(0.0, 0.0, 0.0)
        };
        let p = Paired::of(&[failed, run(40.0, 30.0, 50.0)], &direct).expect("one pair");
        assert!((p.rate_ratio - 0.4).abs() < 1e-9);
    }
}
