//! Micro-benchmarks on iron-proxy's library, without criterion: a timed loop
//! with `std::hint::black_box`.
//! - allowlist decision with 100k domains (70k exact names, 30k `*.apex`):
//!   exact hit, subdomain hit and miss;
//! - leaf certificate minting (`LeafMinter::mint`), and a leaf cache hit;
//! - the response-body scrub of a request given credentials: a scrubber set
//!   up and a 1 KiB body through it, for values seen before (the search
//!   kept) and for new ones (the search built).

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use iron_proxy::rules::{HostPattern, Scheme, Target};
use iron_proxy::secrets::body_scrub::BodyScrubber;
use iron_proxy::tls::{CertificateAuthority, LeafCache, LeafMinter};
use iron_proxy::transforms::allowlist::Allowlist;
use serde::Serialize;

/// Allowlist results.
#[derive(Debug, Serialize)]
pub struct AllowlistResult {
    /// Number of domain patterns.
    pub domains: usize,
    /// Time to index them, in milliseconds.
    pub build_ms: f64,
    /// ns per decision for a name listed exactly.
    pub exact_hit_ns: f64,
    /// ns per decision for a subdomain of a `*.apex` entry (three labels deep).
    pub wildcard_hit_ns: f64,
    /// ns per decision for a name not listed (walks every suffix).
    pub miss_ns: f64,
}

/// Leaf results.
#[derive(Debug, Serialize)]
pub struct LeafResult {
    /// Leaves minted.
    pub mints: usize,
    /// Median µs per mint.
    pub mint_p50_us: f64,
    /// 99th percentile µs per mint.
    pub mint_p99_us: f64,
    /// Mean µs per mint.
    pub mint_mean_us: f64,
    /// ns per cache hit (`LeafCache::get` of a cached name).
    pub cache_hit_ns: f64,
}

/// Response-body scrub results: ns per response of 1 KiB, scrubber set up,
/// body pushed, end taken.
#[derive(Debug, Serialize)]
pub struct ScrubResult {
    /// One value (40 bytes), seen before.
    pub one_value_ns: f64,
    /// Two values, seen before.
    pub two_values_ns: f64,
    /// One value never seen before: its search built.
    pub new_value_ns: f64,
}

/// Runs the scrub benchmark for about `budget` per case.
pub fn scrub(budget: Duration) -> Result<ScrubResult> {
    const A: &str = "sk-live_ABCdef0123456789abcdefghijklmnop";
    const B: &str = "ghp_0123456789abcdefABCDEF0123456789abcd";
    let body = bytes::Bytes::from(vec![b'x'; 1024]);
    let one = |values: &[&str]| -> Result<()> {
        let mut s = BodyScrubber::new(values.iter().copied())?.context("a value")?;
        black_box(s.push(body.clone()));
        black_box(s.finish());
        Ok(())
    };
    let time = |f: &mut dyn FnMut(u64) -> Result<()>| -> Result<f64> {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < budget || n < 100 {
            f(n)?;
            n += 1;
        }
        Ok(start.elapsed().as_nanos() as f64 / n as f64)
    };
    Ok(ScrubResult {
        one_value_ns: time(&mut |_| one(&[A]))?,
        two_values_ns: time(&mut |_| one(&[A, B]))?,
        new_value_ns: time(&mut |i| one(&[&format!("{A}{i}")]))?,
    })
}

/// Runs the allowlist benchmark with `n` domains for about `budget`.
pub fn allowlist(n: usize, budget: Duration) -> Result<AllowlistResult> {
    let exact = n * 7 / 10;
    let mut patterns = Vec::with_capacity(n);
    for i in 0..n {
        let p = if i < exact {
            format!("svc{i}.corp{}.example.com", i % 5000)
        } else {
            format!("*.zone{i}.example.net")
        };
        patterns.push(p.parse::<HostPattern>().context("host pattern")?);
    }
    let t = Instant::now();
    let list = Allowlist::new(patterns, Vec::new(), Vec::new(), false);
    let build_ms = t.elapsed().as_secs_f64() * 1e3;

    let hits: Vec<String> = (0..1024)
        .map(|k| {
            let i = (k * 67) % exact;
            format!("svc{i}.corp{}.example.com", i % 5000)
        })
        .collect();
    let wild: Vec<String> = (0..1024)
        .map(|k| format!("api.eu.zone{}.example.net", exact + (k * 29) % (n - exact)))
        .collect();
    let miss: Vec<String> = (0..1024)
        .map(|k| format!("cdn{k}.assets.unlisted{k}.example.org"))
        .collect();
    let per = budget / 3;
    let exact_hit_ns = time_decisions(&list, &hits, per, true)?;
    let wildcard_hit_ns = time_decisions(&list, &wild, per, true)?;
    let miss_ns = time_decisions(&list, &miss, per, false)?;
    Ok(AllowlistResult {
        domains: n,
        build_ms,
        exact_hit_ns,
        wildcard_hit_ns,
        miss_ns,
    })
}

/// Mean ns per `Allowlist::allows` over `names`, run for about `budget`.
fn time_decisions(
    list: &Allowlist,
    names: &[String],
    budget: Duration,
    expect: bool,
) -> Result<f64> {
    let targets: Vec<Target<'_>> = names
        .iter()
        .map(|h| Target {
            host: h,
            ip: None,
            method: "GET",
            method_overrides: &[],
            path: "/",
            scheme: Scheme::Https,
        })
        .collect();
    // Sanity: the benchmark measures what it says.
    if let Some(t) = targets.iter().find(|t| list.allows(t) != expect) {
        anyhow::bail!("allowlist bench: {} should be allowed={expect}", t.host);
    }
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < budget {
        for t in &targets {
            black_box(list.allows(black_box(t)));
        }
        ops += targets.len() as u64;
    }
    Ok(start.elapsed().as_nanos() as f64 / ops as f64)
}

/// Mints leaves for about `budget` with the CA at `cert`/`key`.
pub fn leaf(cert: &Path, key: &Path, budget: Duration) -> Result<LeafResult> {
    let lifetime = Duration::from_secs(72 * 3600);
    let ca = Arc::new(CertificateAuthority::load(cert, key)?);
    let minter = LeafMinter::new(ca.clone(), lifetime)?;
    let mut times = Vec::new();
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed() < budget || times.len() < 20 {
        let name = format!("host{i}.bench.example");
        let t = Instant::now();
        black_box(minter.mint(&name, time::OffsetDateTime::now_utc())?);
        times.push(t.elapsed().as_secs_f64() * 1e6);
        i += 1;
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    times.sort_by(f64::total_cmp);
    let pick = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];

    let cache = LeafCache::new(LeafMinter::new(ca, lifetime)?, 1000);
    cache.get("cached.bench.example")?;
    let hits = 200_000u32;
    let t = Instant::now();
    for _ in 0..hits {
        black_box(cache.get(black_box("cached.bench.example"))?);
    }
    let cache_hit_ns = t.elapsed().as_nanos() as f64 / f64::from(hits);
    Ok(LeafResult {
        mints: times.len(),
        mint_p50_us: pick(0.5),
        mint_p99_us: pick(0.99),
        mint_mean_us: mean,
        cache_hit_ns,
    })
}
