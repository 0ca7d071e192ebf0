//! `cargo xtask bench --against <binary>`: two iron-proxy binaries measured
//! in interleaved rounds, for before/after figures on a machine whose speed
//! drifts.
//!
//! This guest's speed moves by 10–40% within minutes (docs/benchmarks.md),
//! so two separate bench runs compare the guest's phases as much as the
//! binaries. Here each round measures both binaries back to back, one run
//! per measure each, in alternating order (A B, B A, A B, ...), and the
//! figure that counts is the median of the per-round ratios B / A: a slow
//! phase slows both sides of a round alike.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::load::RunResult;
use super::report::{KA_1K, KA_64K, LAT_KA, LAT_NC, NC_1K};
use super::results::{Machine, Settings, TopoResult};
use super::sandbox::check_interrupted;
use super::topo::{Env, Kind};

/// One figure of one measure over the rounds, for A and B.
#[derive(Debug, Serialize, PartialEq)]
pub struct Paired {
    /// A's value in each round (rounds where either side lacks one are left out).
    pub a: Vec<f64>,
    /// B's value in the same rounds.
    pub b: Vec<f64>,
    /// Median of `a`.
    pub a_median: f64,
    /// Median of `b`.
    pub b_median: f64,
    /// B / A in each round.
    pub ratios: Vec<f64>,
    /// Median of `ratios`: the figure to quote.
    pub ratio_median: f64,
}

/// Pairs A's and B's values round by round; `None` when no round has both.
pub fn pair(a: &[Option<f64>], b: &[Option<f64>]) -> Option<Paired> {
    let (a, b): (Vec<f64>, Vec<f64>) = a
        .iter()
        .zip(b)
        .filter_map(|(x, y)| Some((x.filter(|v| *v > 0.0)?, y.filter(|v| v.is_finite())?)))
        .unzip();
    if a.is_empty() {
        return None;
    }
    let ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| y / x).collect();
    Some(Paired {
        a_median: median(&a),
        b_median: median(&b),
        ratio_median: median(&ratios),
        a,
        b,
        ratios,
    })
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The figures compared for one topology, by name (`keepalive_1k cpu`, ...).
#[derive(Debug, Serialize)]
pub struct TopoComparison {
    /// Topology name.
    pub name: String,
    /// Figure name → paired values.
    pub figures: BTreeMap<String, Paired>,
}

/// The whole comparison, written to `compare.json`.
#[derive(Debug, Serialize)]
pub struct Comparison {
    /// The command line.
    pub command: String,
    /// Binary A (`--proxy-bin` or the one built).
    pub a: String,
    /// Binary B (`--against`).
    pub b: String,
    /// Rounds run.
    pub rounds: usize,
    /// The machine (its load average at the start and the end).
    pub machine: Machine,
    /// Settings of each run (one run per measure).
    pub settings: Settings,
    /// Per topology.
    pub topologies: Vec<TopoComparison>,
}

/// A named figure read from one measure's run.
type RunFigure = (&'static str, fn(&RunResult) -> Option<f64>);
/// A named figure read from one topology's result, in KiB.
type TopoFigure = (&'static str, fn(&TopoResult) -> Option<u64>);

/// The figures taken from one measure's run.
const FIGURES: [RunFigure; 4] = [
    ("cpu µs/req", |r| r.proxy_cpu_us_per_req),
    ("kernel % of cpu", |r| r.proxy_sys_share.map(|s| s * 100.0)),
    ("rate /s", |r| Some(r.rate)),
    ("p50 µs", |r| Some(r.p50_us)),
];

/// Measures `kinds` with both binaries in `rounds` interleaved rounds;
/// `measure` runs one topology once (every measure, one run each).
pub fn run(
    envs: [&Env<'_>; 2],
    kinds: &[Kind],
    rounds: usize,
    settings: Settings,
    mut machine: Machine,
    out: &Path,
    mut measure: impl FnMut(Kind, &Env<'_>, &mut TopoResult) -> Result<()>,
) -> Result<Comparison> {
    let mut topologies = Vec::new();
    for &kind in kinds {
        let mut per: [Vec<TopoResult>; 2] = [Vec::new(), Vec::new()];
        for round in 0..rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for side in order {
                check_interrupted()?;
                let mut tr = TopoResult {
                    name: kind.name().into(),
                    ..Default::default()
                };
                measure(kind, envs[side], &mut tr).with_context(|| {
                    format!("{} with {}", kind.name(), envs[side].proxy_bin.display())
                })?;
                per[side].push(tr);
            }
            eprintln!(
                "bench: compare {}: round {}/{rounds} done",
                kind.name(),
                round + 1
            );
        }
        topologies.push(compare_topo(kind.name(), &per[0], &per[1]));
    }
    machine.loadavg_end = super::results::loadavg();
    let cmp = Comparison {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        a: envs[0].proxy_bin.display().to_string(),
        b: envs[1].proxy_bin.display().to_string(),
        rounds,
        machine,
        settings,
        topologies,
    };
    let json = serde_json::to_string_pretty(&cmp)?;
    std::fs::write(out.join("compare.json"), json).context("writing compare.json")?;
    std::fs::write(out.join("compare.md"), markdown(&cmp)).context("writing compare.md")?;
    Ok(cmp)
}

fn compare_topo(name: &str, a: &[TopoResult], b: &[TopoResult]) -> TopoComparison {
    let mut figures = BTreeMap::new();
    for key in [KA_1K, KA_64K, NC_1K, LAT_KA, LAT_NC] {
        for (fig, get) in FIGURES {
            let values = |side: &[TopoResult]| -> Vec<Option<f64>> {
                side.iter()
                    .map(|t| t.measures.get(key).and_then(|m| get(&m.median)))
                    .collect()
            };
            if let Some(p) = pair(&values(a), &values(b)) {
                figures.insert(format!("{key} {fig}"), p);
            }
        }
    }
    let mib = |side: &[TopoResult], f: fn(&TopoResult) -> Option<u64>| -> Vec<Option<f64>> {
        side.iter()
            .map(|t| f(t).map(|k| k as f64 / 1024.0))
            .collect()
    };
    let peaks: [TopoFigure; 2] = [
        ("peak RSS MiB, 1 KiB keep-alive", |t| t.peak_rss_1k_kib),
        ("peak RSS MiB, all measures", |t| t.peak_rss_kib),
    ];
    for (fig, f) in peaks {
        if let Some(p) = pair(&mib(a, f), &mib(b, f)) {
            figures.insert(fig.to_string(), p);
        }
    }
    TopoComparison {
        name: name.to_string(),
        figures,
    }
}

/// The comparison as a markdown table per topology.
pub fn markdown(c: &Comparison) -> String {
    let mut s = format!(
        "## A/B comparison, {} interleaved rounds{}\n\n{}\n\nA: `{}`\nB: `{}`\n",
        c.rounds,
        if c.settings.secrets {
            ", a key injected into every request (`--secrets`)"
        } else {
            ""
        },
        super::report::machine_line(&c.machine),
        c.a,
        c.b
    );
    for t in &c.topologies {
        s.push_str(&format!(
            "\n### {}\n\n| figure | A (median) | B (median) | B / A, median of rounds | B / A per round |\n|---|---|---|---|---|\n",
            t.name
        ));
        for (name, p) in &t.figures {
            let per: Vec<String> = p.ratios.iter().map(|r| format!("{r:.3}")).collect();
            s.push_str(&format!(
                "| {name} | {:.1} | {:.1} | **{:.3}** | {} |\n",
                p.a_median,
                p.b_median,
                p.ratio_median,
                per.join(" ")
            ));
        }
    }
    s
}

/// A's and B's environments: the same rig, two binaries.
pub fn env_for<'a>(base: &Env<'a>, bin: &'a Path) -> Env<'a> {
    Env {
        work: base.work,
        certs: base.certs,
        upstream: base.upstream,
        dns: base.dns,
        proxy_bin: bin,
        venv: base.venv.clone(),
        peer_build: base.peer_build.clone(),
        proxy_log: base.proxy_log,
        secrets: base.secrets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_paired_before_the_median_is_taken() {
        // The guest slows down over the rounds: both sides alike. B is 10%
        // dearer in every round, whatever the medians of each side say.
        let a = [Some(10.0), Some(20.0), Some(30.0), Some(40.0)];
        let b = [Some(11.0), Some(22.0), Some(33.0), Some(44.0)];
        let p = pair(&a, &b).unwrap();
        assert!((p.ratio_median - 1.1).abs() < 1e-9, "{p:?}");
        assert!((p.a_median - 25.0).abs() < 1e-9 && (p.b_median - 27.5).abs() < 1e-9);
        assert_eq!(p.ratios.len(), 4);
    }

    #[test]
    fn rounds_missing_a_value_on_either_side_are_left_out() {
        let a = [Some(10.0), None, Some(0.0), Some(20.0)];
        let b = [Some(5.0), Some(7.0), Some(9.0), None];
        let p = pair(&a, &b).unwrap();
        assert_eq!(p.a, vec![10.0]);
        assert_eq!(p.ratios, vec![0.5]);
        assert_eq!(pair(&[None], &[Some(1.0)]), None);
    }
}
