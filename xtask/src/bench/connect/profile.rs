//! Where the eBPF setup's extra time goes: one more eBPF run, outside the
//! measured ones, with the kernel's BPF run-time statistics switched on
//! (`BPF_ENABLE_STATS`, in force only while its fd is open, so no sysctl
//! changes), then each of iron-proxy's programs on the bench cgroup: how
//! often it ran per connect and how long each run took.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use aya::programs::loaded_programs;
use aya::sys::{enable_stats, Stats};
use iron_proxy::intercept::Interceptor;
use serde::Serialize;

use super::one_run;

/// One program's share of a redirected connect.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramCost {
    /// The hook (`connect4`, `skb_egress`, `sock_create`, ...).
    pub hook: String,
    /// Runs per connect (socket + connect + close iteration).
    pub runs_per_connect: f64,
    /// Mean ns per run.
    pub ns_per_run: f64,
    /// ns per connect (runs × ns per run).
    pub ns_per_connect: f64,
}

/// (run count, run time ns) per program id.
fn snapshot() -> BTreeMap<u32, (u64, u64)> {
    loaded_programs()
        .flatten()
        .map(|p| (p.id(), (p.run_count(), p.run_time().as_nanos() as u64)))
        .collect()
}

/// Runs the eBPF setup once more with statistics on and splits its cost per program.
pub fn programs(
    pins: &Path,
    cgroup: &Path,
    addr: SocketAddr,
    secs: f64,
) -> Result<Vec<ProgramCost>> {
    let status = Interceptor::status(pins).context("reading the pinned links")?;
    let ours: Vec<(String, u32)> = status
        .links
        .iter()
        .filter(|l| l.cgroup_path.as_deref() == Some(cgroup))
        .filter_map(|l| Some((l.hook.clone(), l.prog_id?)))
        .collect();
    let stats = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS")?;
    let before = snapshot();
    let run = one_run(cgroup, addr, secs);
    let after = snapshot();
    drop(stats);
    let run = run?;
    let connects = (run.connects + run.errors).max(1) as f64;
    let mut costs: Vec<ProgramCost> = ours
        .into_iter()
        .filter_map(|(hook, id)| {
            let (c0, t0) = before.get(&id).copied().unwrap_or_default();
            let (c1, t1) = *after.get(&id)?;
            let runs = c1.saturating_sub(c0);
            (runs > 0).then(|| {
                let ns = t1.saturating_sub(t0) as f64;
                ProgramCost {
                    hook,
                    runs_per_connect: runs as f64 / connects,
                    ns_per_run: ns / runs as f64,
                    ns_per_connect: ns / connects,
                }
            })
        })
        .collect();
    costs.sort_by(|a, b| b.ns_per_connect.total_cmp(&a.ns_per_connect));
    Ok(costs)
}
