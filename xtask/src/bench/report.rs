//! Markdown summary of [`Results`]: rates and ratios to direct and to the
//! peers, single-connection latency and what each proxy adds, CPU and memory,
//! the micro-benchmarks, and the targets side by side.

use std::fmt::Write as _;

use super::connect::ConnectResult;
use super::results::{Machine, Results, TopoResult};

/// Measure keys.
pub const KA_1K: &str = "keepalive_1k";
/// Keep-alive, 64 KiB bodies.
pub const KA_64K: &str = "keepalive_64k";
/// New connection per request, 1 KiB.
pub const NC_1K: &str = "newconn_1k";
/// One keep-alive connection, 1 KiB (latency).
pub const LAT_KA: &str = "latency_keepalive_1k";
/// One new-connection loop, 1 KiB (latency).
pub const LAT_NC: &str = "latency_newconn_1k";

fn get<'a>(r: &'a Results, name: &str) -> Option<&'a TopoResult> {
    r.topologies
        .iter()
        .find(|t| t.name == name && t.skipped.is_none())
}

fn rate(t: Option<&TopoResult>, m: &str) -> Option<f64> {
    t?.measures
        .get(m)
        .map(|x| x.median.rate)
        .filter(|v| *v > 0.0)
}

fn lat(t: Option<&TopoResult>, m: &str) -> Option<(f64, f64)> {
    t?.measures
        .get(m)
        .filter(|x| x.median.requests > 0)
        .map(|x| (x.median.p50_us, x.median.p99_us))
}

/// A topology's rate for measure `m` over direct's: the median of its paired
/// runs' ratios when the runs were paired, else the ratio of the medians.
fn vs_direct(t: Option<&TopoResult>, m: &str, direct: Option<&TopoResult>) -> Option<f64> {
    let t = t?;
    if let Some(p) = t.measures.get(m).and_then(|x| x.paired.as_ref()) {
        return Some(p.rate_ratio);
    }
    Some(rate(Some(t), m)? / rate(direct, m)?)
}

/// What a topology adds to direct's p50 and p99 at measure `m` (paired, as
/// [`vs_direct`]); `None` for direct itself.
fn added(t: Option<&TopoResult>, m: &str, direct: Option<&TopoResult>) -> Option<(f64, f64)> {
    let t = t.filter(|t| t.name != "direct")?;
    if let Some(p) = t.measures.get(m).and_then(|x| x.paired.as_ref()) {
        return Some((p.added_p50_us, p.added_p99_us));
    }
    let (a, d) = (lat(Some(t), m)?, lat(direct, m)?);
    Some((a.0 - d.0, a.1 - d.1))
}

fn added_p50(t: Option<&TopoResult>, direct: Option<&TopoResult>) -> Option<f64> {
    added(t, LAT_KA, direct).map(|a| a.0)
}

fn cpu_per_req(t: Option<&TopoResult>, m: &str) -> Option<f64> {
    t?.measures.get(m)?.median.proxy_cpu_us_per_req
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

fn times(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.2}×"))
}

fn num(v: Option<f64>, prec: usize) -> String {
    v.map_or("–".into(), |v| format!("{v:.prec$}"))
}

/// How far direct's rates may move between the start and the end of the run
/// before the summary warns that ratios across topologies are unsafe. Runs of
/// one measure spread by about ±10% on the 2-core test machine, so a medians'
/// move below this is noise.
const DRIFT_WARN: f64 = 0.20;

/// The paragraph on direct measured again at the end of the run: its rates
/// against the start's, and a warning when one moved by more than
/// [`DRIFT_WARN`]. `None` when either measurement is missing.
fn drift(start: Option<&TopoResult>, end: Option<&TopoResult>) -> Option<String> {
    let (start, end) = (start?, end.filter(|t| t.skipped.is_none())?);
    let mut parts = Vec::new();
    let mut worst: f64 = 0.0;
    for (key, what) in [
        (KA_1K, "keep-alive 1 KiB"),
        (KA_64K, "keep-alive 64 KiB"),
        (NC_1K, "new connections"),
    ] {
        if let (Some(a), Some(b)) = (rate(Some(start), key), rate(Some(end), key)) {
            worst = worst.max((b / a - 1.0).abs());
            parts.push(format!("{what} {b:.0}/s ({:.2}× the start's)", b / a));
        }
    }
    if parts.is_empty() {
        return None;
    }
    let mut s = format!(
        "Direct measured again at the end of the run: {}.",
        parts.join(", ")
    );
    if worst > DRIFT_WARN {
        s.push_str(&format!(
            " **The machine's speed changed by up to {:.0}% during the run**: rates and CPU per \
             request of topologies measured minutes apart do not compare in this run (paired \
             ratios to direct still do). Compare iron-proxy builds with `--against` \
             (interleaved rounds), or rerun.",
            worst * 100.0
        ));
    }
    s.push('\n');
    Some(s)
}

/// The note on paired runs under the throughput table: what "×direct"
/// means, and how fast direct ran next to each topology (the guest's speed
/// over the run). `None` when no measure was paired.
fn pairing(r: &Results) -> Option<String> {
    let during: Vec<String> = r
        .topologies
        .iter()
        .filter(|t| t.skipped.is_none())
        .filter_map(|t| {
            let p = t.measures.get(KA_1K)?.paired.as_ref()?;
            Some(format!("{} {:.0}/s", t.name, p.direct_rate))
        })
        .collect();
    if during.is_empty() {
        return None;
    }
    Some(format!(
        "\"×direct\" and \"added\" are paired: every run of a proxy had a direct run right before or after \
         it, and the figure is the median of the per-pair ratios (differences for latency), so a change \
         in the machine's speed during the run moves them little; rates and CPU per request are \
         absolute and do move with it. Direct, keep-alive 1 KiB, next to each: {}.\n",
        during.join(", ")
    ))
}

/// The report's first line: the machine the figures come from.
pub fn machine_line(m: &Machine) -> String {
    format!(
        "Machine: {} × {}, {} GiB, kernel {}, {}; {}; transparent huge pages {}; {}; commit {}; load average {} at start, {} at end.",
        m.cpus,
        m.cpu,
        m.mem_gib,
        m.kernel,
        m.os,
        m.idle,
        if m.thp.is_empty() { "unknown" } else { &m.thp },
        m.rustc,
        m.commit,
        m.loadavg_start,
        m.loadavg_end
    ) + &m
        .link_order
        .iter()
        .map(|w| format!("\n\n**Warning:** {w}"))
        .collect::<String>()
}

/// The summary as markdown.
pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let m = &r.machine;
    let st = &r.settings;
    let _ = writeln!(s, "{}", machine_line(m));
    if m.idle.halts_at_once() {
        let _ = writeln!(
            s,
            "Idle vCPUs halt at once (`guest_halt_poll_ns` 0): each wake-up of one goes through the \
             host, which dominates the one-connection latencies, direct and proxied alike \
             (docs/operations.md, \"Tuning\").\n"
        );
    }
    let _ = writeln!(
        s,
        "Settings: {}s measured after {}s warm-up, median of {} run(s); {} keep-alive connections; \
         {} new-connection loops; iron-proxy built with profile `{}`{}; wall time {:.0}s.\n",
        st.measure_secs,
        st.warmup_secs,
        st.repeats,
        st.conns,
        st.new_conns,
        st.profile,
        if st.secrets {
            ", injecting a key into every request (`--secrets`)"
        } else {
            ""
        },
        r.wall_secs
    );
    let direct = get(r, "direct");

    s.push_str("### Throughput\n\n");
    s.push_str("| topology | keep-alive 1 KiB req/s | ×direct | keep-alive 64 KiB req/s | ×direct | new TLS conn/s (1 KiB) | ×direct | proxy CPU µs/req 1 KiB | 64 KiB | per new conn | kernel share of that CPU, 1 KiB / 64 KiB / new conn | proxy cores used (1 KiB) | peak RSS MiB |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for t in &r.topologies {
        if let Some(why) = &t.skipped {
            let _ = writeln!(
                s,
                "| {} | skipped: {} ||||||||||||",
                t.name,
                why.replace('|', "/")
            );
            continue;
        }
        let cpu = |k: &str| {
            t.measures
                .get(k)
                .and_then(|x| x.median.proxy_cpu_us_per_req)
        };
        let cores = t.measures.get(KA_1K).and_then(|x| x.median.proxy_cores);
        let kernel = [KA_1K, KA_64K, NC_1K]
            .map(|k| {
                t.measures
                    .get(k)
                    .and_then(|x| x.median.proxy_sys_share)
                    .map_or("–".to_string(), |v| format!("{:.0}%", v * 100.0))
            })
            .join(" / ");
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            t.name,
            num(rate(Some(t), KA_1K), 0),
            times(vs_direct(Some(t), KA_1K, direct)),
            num(rate(Some(t), KA_64K), 0),
            times(vs_direct(Some(t), KA_64K, direct)),
            num(rate(Some(t), NC_1K), 0),
            times(vs_direct(Some(t), NC_1K, direct)),
            num(cpu(KA_1K), 1),
            num(cpu(KA_64K), 1),
            num(cpu(NC_1K), 1),
            kernel,
            num(cores, 2),
            num(t.peak_rss_kib.map(|k| k as f64 / 1024.0), 1),
        );
    }

    if let Some(p) = pairing(r) {
        s.push('\n');
        s.push_str(&p);
    }
    if let Some(d) = drift(direct, r.direct_end.as_ref()) {
        s.push('\n');
        s.push_str(&d);
    }

    s.push_str("\n### Memory under load (MiB)\n\n");
    s.push_str("File-backed pages are mostly the binary's code, shared with every process that maps the same file; anonymous memory is the heap and stacks. \"Own code\" is the part of the file-backed pages that is the proxy binary's executable code: for iron-proxy about 2 MiB of listed serving functions plus aws-lc's AES-GCM and X25519 assembly when `proxy/link-order.txt` is current; more means serving functions fell out of the list (regenerate it with `cargo xtask link-order`).\n\n");
    s.push_str(
        "| topology | RSS at start | start-up peak | peak, 1 KiB keep-alive | peak, 64 KiB keep-alive | peak, new connections | peak RSS under load (all measures) | anonymous after load | file-backed after load | own code after load |\n",
    );
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for t in r.topologies.iter().filter(|t| t.skipped.is_none()) {
        let mib = |k: Option<u64>| num(k.map(|k| k as f64 / 1024.0), 1);
        let (anon, file) = t.after_load_anon_file_kib.unzip();
        if t.peak_rss_kib.is_none() {
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            t.name,
            mib(t.start_rss_kib),
            mib(t.start_peak_rss_kib),
            mib(t.peak_rss_1k_kib),
            mib(t.measures.get(KA_64K).and_then(|m| m.peak_rss_kib)),
            mib(t.measures.get(NC_1K).and_then(|m| m.peak_rss_kib)),
            mib(t.peak_rss_kib),
            mib(anon),
            mib(file),
            mib(t.after_load_code_kib),
        );
    }
    s.push('\n');

    for t in &r.topologies {
        if let Some(n) = t.redirected {
            let _ = writeln!(
                s,
                "\n{}: the kernel redirected {n} connects of the load client (a child process in a bench cgroup, no proxy settings) to iron-proxy's transparent listener.",
                t.name
            );
        }
    }

    s.push_str("\n### Latency at one connection (µs) and what the proxy adds over direct\n\n");
    s.push_str("| topology | keep-alive p50 | p99 | added p50 | added p99 | new-conn p50 | p99 | added p50 | added p99 |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for t in r.topologies.iter().filter(|t| t.skipped.is_none()) {
        let ka = lat(Some(t), LAT_KA);
        let nc = lat(Some(t), LAT_NC);
        let signed = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:+.0}"));
        let (aka, anc) = (
            added(Some(t), LAT_KA, direct),
            added(Some(t), LAT_NC, direct),
        );
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            t.name,
            num(ka.map(|x| x.0), 0),
            num(ka.map(|x| x.1), 0),
            signed(aka.map(|x| x.0)),
            signed(aka.map(|x| x.1)),
            num(nc.map(|x| x.0), 0),
            num(nc.map(|x| x.1), 0),
            signed(anc.map(|x| x.0)),
            signed(anc.map(|x| x.1)),
        );
    }

    let peers: Vec<&TopoResult> = r
        .topologies
        .iter()
        .filter(|t| {
            t.skipped.is_none()
                && ["squid-bump", "mitmproxy", "tinyproxy-tunnel", "hudsucker"]
                    .contains(&t.name.as_str())
        })
        .collect();
    if !peers.is_empty() {
        s.push_str("\n### iron-proxy (CONNECT, MITM) relative to each peer (>1 means iron-proxy is faster)\n\n");
        s.push_str("| peer | keep-alive 1 KiB | keep-alive 64 KiB | new TLS conn/s | keep-alive added p50 (iron / peer) |\n|---|---|---|---|---|\n");
        let iron = get(r, "iron-connect");
        // Each side's ratio to direct, so that pairing carries over.
        let over = |m: &str, p: &TopoResult| {
            ratio(vs_direct(iron, m, direct), vs_direct(Some(p), m, direct))
        };
        for p in peers {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} / {} µs |",
                p.name,
                over(KA_1K, p),
                over(KA_64K, p),
                over(NC_1K, p),
                num(added_p50(iron, direct), 0),
                num(added_p50(Some(p), direct), 0),
            );
        }
    }

    s.push_str("\n### Memory with idle connections (each opened, one request, then held)\n\n");
    s.push_str("| topology | connections open | failed | RSS before MiB | RSS with them MiB | KiB per connection |\n|---|---|---|---|---|---|\n");
    for t in &r.topologies {
        if let Some(i) = &t.idle {
            let _ = writeln!(
                s,
                "| {} | {} / {} | {} | {:.1} | {:.1} | {:.1} |",
                t.name,
                i.open,
                i.requested,
                i.failed,
                i.before.rss_kib as f64 / 1024.0,
                i.after.rss_kib as f64 / 1024.0,
                i.kib_per_conn
            );
        }
    }

    s.push_str("\n### Micro-benchmarks (in-process, iron-proxy library)\n\n");
    if let Some(a) = &r.allowlist {
        let _ = writeln!(
            s,
            "- allowlist, {} domains (70% exact, 30% `*.apex`): index built in {:.0} ms; decision {:.0} ns (exact hit), {:.0} ns (wildcard hit, 3 labels deep), {:.0} ns (miss).",
            a.domains, a.build_ms, a.exact_hit_ns, a.wildcard_hit_ns, a.miss_ns
        );
    }
    if let Some(l) = &r.leaf {
        let _ = writeln!(
            s,
            "- leaf mint (`LeafMinter::mint`, ECDSA P-256 CA, shared leaf key): p50 {:.0} µs, p99 {:.0} µs, mean {:.0} µs over {} mints; cache hit (`LeafCache::get`) {:.0} ns.",
            l.mint_p50_us, l.mint_p99_us, l.mint_mean_us, l.mints, l.cache_hit_ns
        );
    }
    if let Some(b) = &r.scrub {
        let _ = writeln!(
            s,
            "- response-body scrub of a request given credentials (`BodyScrubber`: set up, a 1 KiB body, end): {:.0} ns with one value, {:.0} ns with two (their search kept from an earlier response), {:.0} ns for a value never seen (its search built).",
            b.one_value_ns, b.two_values_ns, b.new_value_ns
        );
    }

    if let Some(c) = &r.connect {
        connect_table(&mut s, c);
    }

    s.push_str("\n### Targets from the issue\n\n| target | measured | met |\n|---|---|---|\n");
    let mut target = |name: &str,
                      measured: Option<f64>,
                      fmt: &dyn Fn(f64) -> String,
                      ok: &dyn Fn(f64) -> bool| {
        let (v, met) = match measured {
            Some(v) => (fmt(v), if ok(v) { "yes" } else { "**no**" }),
            None => ("–".into(), "–"),
        };
        let _ = writeln!(s, "| {name} | {v} | {met} |");
    };
    for (label, topo) in [
        ("https_listen", "iron-https"),
        ("CONNECT", "iron-connect"),
        ("eBPF interception", "iron-intercept"),
    ] {
        let t = get(r, topo);
        target(
            &format!("keep-alive MITM ≥ 0.5× direct ({label}, 1 KiB)"),
            vs_direct(t, KA_1K, direct),
            &|v| format!("{v:.2}×"),
            &|v| v >= 0.5,
        );
        target(
            &format!("keep-alive MITM ≥ 0.5× direct ({label}, 64 KiB)"),
            vs_direct(t, KA_64K, direct),
            &|v| format!("{v:.2}×"),
            &|v| v >= 0.5,
        );
        target(
            &format!("new TLS conn/s ≥ 0.9× direct ({label})"),
            vs_direct(t, NC_1K, direct),
            &|v| format!("{v:.2}×"),
            &|v| v >= 0.9,
        );
        target(
            &format!("added p50 ≤ 60 µs, keep-alive ({label})"),
            added_p50(t, direct),
            &|v| format!("{v:.0} µs"),
            &|v| v <= 60.0,
        );
        target(
            &format!("proxy CPU ≤ 20 µs per keep-alive request ({label}, 1 KiB)"),
            cpu_per_req(t, KA_1K),
            &|v| format!("{v:.1} µs"),
            &|v| v <= 20.0,
        );
        target(
            &format!("proxy CPU ≤ 200 µs per new client connection ({label})"),
            cpu_per_req(t, NC_1K),
            &|v| format!("{v:.0} µs"),
            &|v| v <= 200.0,
        );
        // 15 MB, decimal: 14.3 MiB.
        let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
        target(
            &format!("peak RSS ≤ 15 MB at 32 connections ({label}, 1 KiB keep-alive)"),
            t.and_then(|t| t.peak_rss_1k_kib).map(mb),
            &|v| format!("{v:.1} MB"),
            &|v| v <= 15.0,
        );
        target(
            &format!("peak RSS ≤ 15 MB at 32 connections ({label}, all measures, 64 KiB included)"),
            t.and_then(|t| t.peak_rss_kib).map(mb),
            &|v| format!("{v:.1} MB"),
            &|v| v <= 15.0,
        );
        target(
            &format!("≤ 50 KiB per idle connection ({label})"),
            t.and_then(|t| t.idle.as_ref())
                .filter(|i| i.open > 0)
                .map(|i| i.kib_per_conn),
            &|v| format!("{v:.1} KiB"),
            &|v| v <= 50.0,
        );
    }
    let connect = r.connect.as_ref();
    target(
        "eBPF connect overhead ≤ 10% over direct (p50 wall time of socket+connect+close)",
        connect.and_then(|c| c.overhead_pct("ebpf", |s| s.p50_ns)),
        &|v| format!("{v:+.1}%"),
        &|v| v <= 10.0,
    );
    target(
        "eBPF connect overhead ≤ 10% over direct (client CPU per iteration)",
        connect.and_then(|c| c.overhead_pct("ebpf", |s| s.cpu_ns)),
        &|v| format!("{v:+.1}%"),
        &|v| v <= 10.0,
    );
    target(
        "leaf mint ≤ 100 µs (p50)",
        r.leaf.as_ref().map(|l| l.mint_p50_us),
        &|v| format!("{v:.0} µs"),
        &|v| v <= 100.0,
    );
    target(
        "allowlist ≤ 1 µs at 100k (worst case of hit/miss)",
        r.allowlist
            .as_ref()
            .map(|a| a.exact_hit_ns.max(a.wildcard_hit_ns).max(a.miss_ns)),
        &|v| format!("{v:.0} ns"),
        &|v| v <= 1000.0,
    );
    s
}

fn connect_table(s: &mut String, c: &ConnectResult) {
    let _ = writeln!(
        s,
        "\n### connect() cost: direct, eBPF redirect, nftables REDIRECT\n\n\
         One iteration: `socket()`, `SO_LINGER 0`, blocking `connect()` to 127.0.0.1, `close()`, in a child \
         process inside a bench cgroup; the far side accepts and closes. {} run(s) of {} s per setup, \
         interleaved; medians. Wall time per iteration, and the client thread's CPU time per iteration.\n",
        c.repeats, c.secs_per_run
    );
    s.push_str("| setup | p50 ns | × direct | mean ns | p99 ns | client CPU ns | × direct | what |\n|---|---|---|---|---|---|---|---|\n");
    let direct = c.setup("direct");
    for st in &c.setups {
        if let Some(why) = &st.skipped {
            let _ = writeln!(
                s,
                "| {} | skipped: {} |||||||",
                st.name,
                why.replace('|', "/")
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            st.name,
            num(st.p50_ns, 0),
            ratio(st.p50_ns, direct.and_then(|d| d.p50_ns)),
            num(st.mean_ns, 0),
            num(st.p99_ns, 0),
            num(st.cpu_ns, 0),
            ratio(st.cpu_ns, direct.and_then(|d| d.cpu_ns)),
            st.what
        );
    }
    if let Some(n) = c.ebpf_redirected {
        let _ = writeln!(s, "\neBPF `redirected` counter over the eBPF runs: {n}.");
    }
    if !c.ebpf_programs.is_empty() {
        s.push_str("\niron-proxy's programs per connect (an extra eBPF run with BPF run-time statistics on):\n\n| hook | runs per connect | ns per run | ns per connect |\n|---|---|---|---|\n");
        for p in &c.ebpf_programs {
            let _ = writeln!(
                s,
                "| {} | {:.2} | {:.0} | {:.0} |",
                p.hook, p.runs_per_connect, p.ns_per_run, p.ns_per_connect
            );
        }
    }
    if let Some(e) = &c.ebpf_programs_error {
        let _ = writeln!(s, "\nPer-program eBPF statistics unavailable: {e}.");
    }
    if !c.other_nft_tables.is_empty() {
        let _ = writeln!(
            s,
            "\nOther nft tables were loaded during every setup: {}.",
            c.other_nft_tables.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::load::RunResult;
    use crate::bench::results::{Machine, Measure, Paired, Settings};

    fn direct(name: &str, ka: f64, nc: f64) -> TopoResult {
        let mut t = TopoResult {
            name: name.into(),
            ..Default::default()
        };
        for (key, rate) in [(KA_1K, ka), (NC_1K, nc)] {
            let median = RunResult {
                rate,
                requests: 1000,
                ..Default::default()
            };
            t.measures.insert(
                key.into(),
                Measure {
                    median: median.clone(),
                    runs: vec![median],
                    peak_rss_kib: None,
                    direct_runs: Vec::new(),
                    paired: None,
                },
            );
        }
        t
    }

    #[test]
    fn drift_within_the_noise_is_reported_without_a_warning() {
        let start = direct("direct", 100_000.0, 3_000.0);
        let end = direct("direct (end)", 85_000.0, 3_150.0);
        let text = drift(Some(&start), Some(&end)).expect("paragraph");
        assert!(
            text.contains("keep-alive 1 KiB 85000/s (0.85× the start's)"),
            "{text}"
        );
        assert!(
            text.contains("new connections 3150/s (1.05× the start's)"),
            "{text}"
        );
        assert!(!text.contains("speed changed"), "{text}");
    }

    #[test]
    fn drift_beyond_the_noise_warns_that_ratios_are_unreliable() {
        let start = direct("direct", 88_000.0, 2_200.0);
        let end = direct("direct (end)", 90_000.0, 3_300.0);
        let text = drift(Some(&start), Some(&end)).expect("paragraph");
        assert!(text.contains("changed by up to 50%"), "{text}");
        assert!(text.contains("--against"), "{text}");
    }

    #[test]
    fn no_paragraph_without_both_measurements() {
        let start = direct("direct", 88_000.0, 2_200.0);
        assert!(drift(Some(&start), None).is_none());
        assert!(drift(None, Some(&start)).is_none());
        let skipped = TopoResult {
            skipped: Some("failed".into()),
            ..direct("direct (end)", 1.0, 1.0)
        };
        assert!(drift(Some(&start), Some(&skipped)).is_none());
    }

    #[test]
    fn machine_line_names_the_huge_page_mode() {
        let mut m = results(Vec::new()).machine;
        assert!(
            machine_line(&m).contains("; transparent huge pages unknown;"),
            "{}",
            machine_line(&m)
        );
        m.thp = "always".into();
        assert!(
            machine_line(&m).contains("; transparent huge pages always;"),
            "{}",
            machine_line(&m)
        );
        assert!(markdown(&results(Vec::new())).starts_with("Machine: 2 × "));
    }

    /// A stale link order moves the memory figures by megabytes (round 35):
    /// the warning stays with the saved report, not only on the terminal.
    #[test]
    fn a_stale_link_order_is_in_the_report() {
        let mut r = results(Vec::new());
        assert!(!machine_line(&r.machine).contains("Warning"));
        r.machine.link_order = vec!["\"/tmp/a\" defines only 912 of the 3009 functions".into()];
        let text = markdown(&r);
        assert!(
            text.contains("**Warning:** \"/tmp/a\" defines only 912 of the 3009 functions"),
            "{text}"
        );
        let json = serde_json::to_string(&r.machine).expect("json");
        assert!(
            json.contains("\"link_order\":[\"\\\"/tmp/a\\\" defines"),
            "{json}"
        );
    }

    fn results(topologies: Vec<TopoResult>) -> Results {
        Results {
            started_unix: 0,
            command: String::new(),
            quick: false,
            machine: Machine {
                cpu: String::new(),
                cpus: 2,
                mem_gib: 1.0,
                kernel: String::new(),
                os: String::new(),
                rustc: String::new(),
                commit: String::new(),
                loadavg_start: String::new(),
                loadavg_end: String::new(),
                idle: Default::default(),
                thp: String::new(),
                link_order: Vec::new(),
            },
            settings: Settings {
                measure_secs: 2.0,
                warmup_secs: 0.5,
                repeats: 3,
                conns: 32,
                new_conns: 8,
                idle: 0,
                idle_peers: 0,
                upstream_threads: 2,
                client_threads: 2,
                profile: "release".into(),
                paired: true,
                secrets: false,
                profiling: false,
            },
            allowlist: None,
            leaf: None,
            scrub: None,
            connect: None,
            topologies,
            direct_end: None,
            perf_reports: Vec::new(),
            wall_secs: 1.0,
        }
    }

    /// A proxy measured late in a run whose machine slowed down: 30k/s
    /// against a direct that ran 100k/s at the start but 60k/s next to it.
    fn late_proxy() -> TopoResult {
        let mut t = direct("iron-https", 30_000.0, 3_000.0);
        let m = t.measures.get_mut(KA_1K).expect("measure");
        m.paired = Some(Paired {
            rate_ratio: 0.5,
            added_p50_us: 31.0,
            added_p99_us: 45.0,
            direct_rate: 60_000.0,
        });
        t
    }

    #[test]
    fn paired_ratios_replace_the_ratio_of_medians() {
        let r = results(vec![direct("direct", 100_000.0, 3_000.0), late_proxy()]);
        let text = markdown(&r);
        assert!(
            text.contains("| iron-https | 30000 | 0.50× |"),
            "the paired ratio, not 30k / 100k:\n{text}"
        );
        assert!(
            text.contains("keep-alive MITM ≥ 0.5× direct (https_listen, 1 KiB) | 0.50× | yes"),
            "{text}"
        );
        // Unpaired measures keep the ratio of medians.
        assert!(text.contains("| 3000 | 1.00× |"), "{text}");
        assert!(text.contains("next to each: iron-https 60000/s."), "{text}");
    }

    #[test]
    fn paired_latency_is_the_median_of_the_pairs_differences() {
        let mut t = late_proxy();
        let m = t.measures.remove(KA_1K).expect("measure");
        t.measures.insert(LAT_KA.into(), m);
        let r = results(vec![direct("direct", 100_000.0, 3_000.0), t]);
        assert_eq!(
            added(get(&r, "iron-https"), LAT_KA, get(&r, "direct")),
            Some((31.0, 45.0))
        );
        assert_eq!(added(get(&r, "direct"), LAT_KA, get(&r, "direct")), None);
        assert!(markdown(&r).contains("| +31 | +45 |"));
    }

    #[test]
    fn no_pairing_note_without_paired_runs() {
        let r = results(vec![
            direct("direct", 100_000.0, 3_000.0),
            direct("iron-https", 30_000.0, 3_000.0),
        ]);
        let text = markdown(&r);
        assert!(pairing(&r).is_none());
        assert!(text.contains("| iron-https | 30000 | 0.30× |"), "{text}");
    }

    /// The kernel's share of the proxy's CPU is in the throughput table, per
    /// measure, and a measure without it shows a dash, as the other figures do.
    #[test]
    fn the_kernel_share_of_the_proxys_cpu_is_in_the_table() {
        let mut t = direct("iron-https", 30_000.0, 3_000.0);
        for (key, share) in [(KA_1K, 0.614), (NC_1K, 0.38)] {
            let m = t.measures.get_mut(key).expect("measure");
            m.median.proxy_cpu_us_per_req = Some(25.0);
            m.median.proxy_sys_share = Some(share);
        }
        let text = markdown(&results(vec![direct("direct", 100_000.0, 3_000.0), t]));
        assert!(
            text.contains("| 25.0 | – | 25.0 | 61% / – / 38% |"),
            "{text}"
        );
        let header = text
            .lines()
            .find(|l| l.contains("kernel share"))
            .expect("header");
        let rule = text
            .lines()
            .skip_while(|l| *l != header)
            .nth(1)
            .expect("rule");
        assert_eq!(header.matches('|').count(), rule.matches('|').count());
    }
}
