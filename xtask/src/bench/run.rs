//! One bench run: set up certificates, the upstream and the client, run the
//! micro-benchmarks, measure every topology, optionally profile, and write
//! the results.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::certs::Certs;
use super::connect;
use super::load::{Client, Mode, RunResult, Spec};
use super::remote::{Remote, Runner};
use super::report::{self, KA_1K, KA_64K, LAT_KA, LAT_NC, NC_1K};
use super::results::{median, IdleResult, Machine, Measure, Paired, Results, Settings, TopoResult};
use super::sandbox::check_interrupted;
use super::topo::{self, Env, Kind};
use super::upstream::Upstream;
use super::{micro, procstat, BenchArgs};

/// Threads for the upstream and for the client, each (the machine has 2 cores).
pub const THREADS: usize = 2;

/// Runs the bench and writes results under `out`.
pub fn run(
    root: &Path,
    target: &Path,
    out: &Path,
    proxy_bin: &Path,
    profile: &str,
    args: &BenchArgs,
    // Where a release binary under test does not fit proxy/link-order.txt.
    link_order: Vec<String>,
) -> Result<()> {
    let t0 = Instant::now();
    let load_start = super::results::loadavg();
    let quick = args.quick;
    let perf_kind = super::perf::topology(&args.perf_topology)?;
    let mut settings = Settings {
        measure_secs: args.duration.unwrap_or(if quick { 0.5 } else { 2.0 }),
        warmup_secs: if quick { 0.2 } else { 0.5 },
        repeats: args.repeats.unwrap_or(if quick { 1 } else { 3 }).max(1),
        conns: args.conns.max(1),
        new_conns: args.new_conns.max(1),
        idle: args.idle.unwrap_or(if quick { 200 } else { 10_000 }),
        idle_peers: args.idle_peers.unwrap_or(2000),
        upstream_threads: THREADS,
        client_threads: THREADS,
        profile: profile.to_string(),
        paired: !args.unpaired,
        secrets: args.secrets,
        profiling: args.profiling,
    };
    let work = out.join("work");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    // The client holds every idle connection, and tunnels hold an upstream one too.
    let idle_max = settings.idle.max(settings.idle_peers) as u64;
    let nofile = procstat::raise_nofile(idle_max * 3 + 4096)?;
    if nofile < idle_max * 2 + 1024 {
        let want = idle_max * 2 + 1024;
        eprintln!("bench: RLIMIT_NOFILE is {nofile} (< {want}); idle-connection counts may fail");
    }
    // iron-proxy refuses connections past its default `proxy.max_connections`
    // (two fifths of the open-file limit it inherits): asking for more idle
    // connections measured those refusals as failures (8,000 of 10,000 held
    // on a machine whose hard limit is 20,000).
    let admitted = iron_proxy::ops::fd_limit::max_connections_for(nofile).get() as usize;
    if settings.idle > admitted {
        eprintln!(
            "bench: iron-proxy's idle count {} lowered to {admitted}: with RLIMIT_NOFILE {nofile} \
             its default proxy.max_connections admits no more",
            settings.idle
        );
        settings.idle = admitted;
    }

    let listener = Upstream::bind()?;
    let certs = Certs::create(&work.join("certs"), listener.local_addr()?.ip())?;
    let upstream = Upstream::start(listener, certs.upstream_server_config()?, THREADS)?;
    let client_tls = certs.client_config()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let env = Env {
        work: &work,
        certs: &certs,
        upstream: upstream.addr,
        dns: upstream.dns,
        proxy_bin,
        venv: out.join("venv"),
        // Under the target directory, not `out`: kept across runs with other `--out`s.
        peer_build: target.join("bench-peer"),
        proxy_log: args.proxy_log,
        secrets: args.secrets,
    };
    eprintln!(
        "bench: upstream on {}; results in {}",
        upstream.addr,
        out.display()
    );

    if let Some(b) = &args.against {
        let machine = Machine {
            loadavg_start: load_start,
            link_order,
            ..Machine::detect(root)
        };
        return compare(args, &settings, machine, &env, b, &rt, &client_tls, out);
    }

    let budget = Duration::from_secs_f64(if quick { 0.3 } else { 2.0 });
    let allowlist = micro::allowlist(100_000, budget)?;
    eprintln!(
        "bench: allowlist 100k: {:.0} / {:.0} / {:.0} ns (exact / wildcard / miss)",
        allowlist.exact_hit_ns, allowlist.wildcard_hit_ns, allowlist.miss_ns
    );
    let leaf = micro::leaf(&certs.mitm_ca_cert, &certs.mitm_ca_key, budget)?;
    eprintln!("bench: leaf mint p50 {:.0} µs", leaf.mint_p50_us);
    let scrub = micro::scrub(budget)?;
    eprintln!(
        "bench: body scrub per 1 KiB response: {:.0} / {:.0} / {:.0} ns (one value / two / new value)",
        scrub.one_value_ns, scrub.two_values_ns, scrub.new_value_ns
    );
    let mut failures = Vec::new();
    // SAFETY: geteuid(2) has no preconditions.
    let root_user = unsafe { libc::geteuid() } == 0;
    let want_connect = args.only.is_empty() || args.only.iter().any(|o| o == "connect");
    if want_connect && !root_user {
        eprintln!("bench: connect() micro-benchmark skipped: it needs root (cgroups, eBPF, nft)");
    }
    let connect = if want_connect && root_user {
        let secs = args.duration.unwrap_or(if quick { 0.3 } else { 2.0 });
        let r = connect::bench(secs, settings.repeats)?;
        check_interrupted()?;
        for s in &r.setups {
            if let Some(why) = &s.skipped {
                eprintln!("bench: connect {}: skipped: {why}", s.name);
                // nft's cgroupv2 support depends on the system; ours must work.
                if s.name != "nftables" {
                    failures.push(format!("connect {}: {why}", s.name));
                }
            }
        }
        Some(r)
    } else {
        None
    };

    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| !(quick || args.no_peers) || !k.is_peer())
        .filter(|k| args.only.is_empty() || args.only.iter().any(|o| o == k.name()))
        .collect();
    let mut topologies = Vec::new();
    for kind in kinds {
        check_interrupted()?;
        let mut tr = TopoResult {
            name: kind.name().into(),
            ..Default::default()
        };
        if kind == Kind::IronIntercept && !root_user {
            tr.skipped = Some("needs root (a cgroup and eBPF programs)".into());
            topologies.push(tr);
            continue;
        }
        if let Err(e) = measure(kind, &env, &rt, &client_tls, &settings, &mut tr) {
            check_interrupted()?;
            let why = format!("{e:#}");
            eprintln!("bench: {}: {why}", kind.name());
            if !kind.is_peer() {
                failures.push(format!("{}: {why}", kind.name()));
            }
            tr.skipped = Some(why);
        }
        topologies.push(tr);
    }
    let direct_end = if !quick && wants_direct_end(&topologies) {
        check_interrupted()?;
        eprintln!("bench: direct again, to see how far the machine's speed drifted during the run");
        let mut tr = TopoResult {
            name: "direct (end)".into(),
            ..Default::default()
        };
        match measure(Kind::Direct, &env, &rt, &client_tls, &settings, &mut tr) {
            Ok(()) => Some(tr),
            Err(e) => {
                check_interrupted()?;
                eprintln!("bench: direct (end): {e:#}");
                None
            }
        }
    } else {
        None
    };

    let mut results = Results {
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(t0.elapsed().as_secs()),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        quick,
        machine: Machine {
            loadavg_start: load_start,
            link_order,
            ..Machine::detect(root)
        },
        settings,
        allowlist: Some(allowlist),
        scrub: Some(scrub),
        leaf: Some(leaf),
        connect,
        topologies,
        direct_end,
        perf_reports: Vec::new(),
        wall_secs: t0.elapsed().as_secs_f64(),
    };
    // Written before profiling, so that a failing perf loses nothing.
    write_results(out, &results)?;
    if let Some(secs) = args.perf {
        match super::perf::profile(
            &env,
            &rt,
            &client_tls,
            &results.settings,
            secs,
            perf_kind,
            out,
        ) {
            Ok(files) => {
                results.perf_reports = files;
                write_results(out, &results)?;
            }
            Err(e) => eprintln!("bench: perf profile skipped: {e:#}"),
        }
    }
    println!("{}", report::markdown(&results));
    println!("wrote {}", out.join("results.json").display());
    drop(rt);
    drop(upstream);
    if !failures.is_empty() {
        bail!("bench harness failures:\n  {}", failures.join("\n  "));
    }
    Ok(())
}

/// Whether to measure direct again at the end: it ran, and so did at least
/// one other topology after it.
fn wants_direct_end(topologies: &[TopoResult]) -> bool {
    let ran = |t: &&TopoResult| t.skipped.is_none();
    topologies
        .iter()
        .filter(ran)
        .any(|t| t.name == Kind::Direct.name())
        && topologies
            .iter()
            .filter(ran)
            .any(|t| t.name != Kind::Direct.name())
}

/// `--against`: A and B in interleaved rounds (see [`super::compare`]).
#[allow(clippy::too_many_arguments)]
fn compare(
    args: &BenchArgs,
    settings: &Settings,
    machine: Machine,
    env: &Env<'_>,
    b: &Path,
    rt: &tokio::runtime::Runtime,
    tls: &Arc<rustls::ClientConfig>,
    out: &Path,
) -> Result<()> {
    // SAFETY: geteuid(2) has no preconditions.
    let root_user = unsafe { libc::geteuid() } == 0;
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| !k.is_peer() && *k != Kind::Direct)
        .filter(|k| *k != Kind::IronIntercept || root_user)
        .filter(|k| {
            if args.only.is_empty() {
                *k == Kind::IronHttps
            } else {
                args.only.iter().any(|o| o == k.name())
            }
        })
        .collect();
    if kinds.is_empty() {
        bail!("--against compares iron-proxy topologies: name them with --only (iron-https, iron-connect, iron-intercept)");
    }
    let rounds = args.repeats.unwrap_or(6).max(1);
    let one = Settings {
        repeats: 1,
        paired: false,
        idle: 0,
        idle_peers: 0,
        ..settings.clone()
    };
    let env_b = super::compare::env_for(env, b);
    let cmp = super::compare::run(
        [env, &env_b],
        &kinds,
        rounds,
        one.clone(),
        machine,
        out,
        |kind, e, tr| measure(kind, e, rt, tls, &one, tr),
    )?;
    println!("{}", super::compare::markdown(&cmp));
    println!("wrote {}", out.join("compare.json").display());
    Ok(())
}

fn write_results(out: &Path, results: &Results) -> Result<()> {
    let json = serde_json::to_string_pretty(results)?;
    let write = |name: String, data: &str| {
        std::fs::write(out.join(&name), data).with_context(|| format!("writing {name}"))
    };
    write("results.json".into(), &json)?;
    write(format!("results-{}.json", results.started_unix), &json)?;
    write("summary.md".into(), &report::markdown(results))
}

fn specs(s: &Settings) -> Vec<(&'static str, Spec)> {
    let spec = |mode, conns, path| Spec {
        mode,
        conns,
        path,
        warmup: Duration::from_secs_f64(s.warmup_secs),
        measure: Duration::from_secs_f64(s.measure_secs),
    };
    vec![
        (KA_1K, spec(Mode::KeepAlive, s.conns, "/1k")),
        (KA_64K, spec(Mode::KeepAlive, s.conns, "/64k")),
        (NC_1K, spec(Mode::NewConn, s.new_conns, "/1k")),
        (LAT_KA, spec(Mode::KeepAlive, 1, "/1k")),
        (LAT_NC, spec(Mode::NewConn, 1, "/1k")),
    ]
}

fn measure(
    kind: Kind,
    env: &Env<'_>,
    rt: &tokio::runtime::Runtime,
    tls: &Arc<rustls::ClientConfig>,
    s: &Settings,
    tr: &mut TopoResult,
) -> Result<()> {
    let running = topo::start(kind, env)?;
    tr.version = running.version.clone();
    tr.start_rss_kib = running.watch.as_ref().map(|w| w.mem().rss_kib);
    let runner = match remote_for(&running, env) {
        Some(r) => Runner::Remote(r),
        None => Runner::Local(Client::new(running.route.clone(), tls.clone())?),
    };
    runner
        .first(rt)
        .context("first request (rerun with --proxy-log to keep the proxy's log)")?;
    if let Some(i) = &running.intercept {
        // The probe must have gone through the eBPF redirect, not straight to the upstream.
        if i.redirected().unwrap_or(0) == 0 {
            bail!("the client's connect was not redirected (eBPF counter is 0)");
        }
    }
    // The peak so far is start-up's (for eBPF interception, loading the
    // programs); from here on each measure's peak is taken on its own.
    tr.start_peak_rss_kib = running.watch.as_ref().map(|w| w.mem().hwm_kib);
    // Each run of a proxy gets a direct run next to it (alternating which
    // goes first), so that ratios to direct survive the guest's drift.
    let direct = if s.paired && kind != Kind::Direct {
        Some(Client::new(topo::direct_route(env), tls.clone())?)
    } else {
        None
    };
    for (key, spec) in specs(s) {
        if let Some(w) = &running.watch {
            w.reset_peak();
        }
        let mut runs: Vec<RunResult> = Vec::new();
        let mut direct_runs: Vec<RunResult> = Vec::new();
        for i in 0..s.repeats {
            check_interrupted()?;
            let direct_first = i % 2 == 0;
            let mut run_direct = || -> Result<()> {
                if let Some(d) = &direct {
                    check_interrupted()?;
                    let r = rt.block_on(d.run(&spec, None))?;
                    log_run("  (direct)", key, i, s.repeats, &r);
                    direct_runs.push(r);
                }
                Ok(())
            };
            if direct_first {
                run_direct()?;
            }
            let r = runner.run(rt, &spec, running.watch.as_ref())?;
            log_run(kind.name(), key, i, s.repeats, &r);
            if r.requests == 0 && r.first_error.is_none() && s.profiling {
                eprintln!(
                    "bench: {}: {key}: no request completed within the run under the profiler \
                     (no error recorded); the profile holds what ran",
                    kind.name()
                );
                continue;
            }
            if r.requests == 0 {
                bail!(
                    "{key}: no request completed ({})",
                    r.first_error.as_deref().unwrap_or("no error recorded")
                );
            }
            runs.push(r);
            if !direct_first {
                run_direct()?;
            }
        }
        if runs.is_empty() {
            // Only under a profiler (above): nothing to report.
            continue;
        }
        let peak = running.watch.as_ref().map(|w| w.mem().hwm_kib);
        if key == KA_1K {
            tr.peak_rss_1k_kib = peak;
        }
        tr.peak_rss_kib = tr.peak_rss_kib.max(peak);
        tr.measures.insert(
            key.to_string(),
            Measure {
                median: median(&runs),
                paired: Paired::of(&runs, &direct_runs),
                runs,
                peak_rss_kib: peak,
                direct_runs,
            },
        );
    }
    let after = running.watch.as_ref().map(|w| w.mem());
    tr.after_load_anon_file_kib = after.map(|m| (m.anon_kib, m.file_kib));
    tr.after_load_code_kib = running.watch.as_ref().and_then(|w| w.exe_code_kib());
    tr.redirected = running.intercept.as_ref().and_then(|i| i.redirected());
    drop(running);

    let n = if kind.is_peer() { s.idle_peers } else { s.idle };
    if n > 0 && kind != Kind::Direct {
        tr.idle = Some(idle(kind, env, rt, tls, n)?);
    }
    Ok(())
}

/// One line of progress per run.
fn log_run(who: &str, key: &str, i: usize, repeats: usize, r: &RunResult) {
    eprintln!(
        "bench: {:<16} {:<22} run {}/{}: {:>8.0}/s  p50 {:>6.0}µs  p99 {:>6.0}µs  cpu/req {}{}  errors {}",
        who,
        key,
        i + 1,
        repeats,
        r.rate,
        r.p50_us,
        r.p99_us,
        r.proxy_cpu_us_per_req.map_or("-".into(), |v| format!("{v:.1}µs")),
        r.proxy_sys_share
            .map_or(String::new(), |v| format!(" ({:.0}% kernel)", v * 100.0)),
        r.errors
    );
}

/// For the eBPF topology: the load client as a child in its cgroup.
fn remote_for(running: &topo::Running, env: &Env<'_>) -> Option<Remote> {
    running.intercept.as_ref().map(|i| Remote {
        cgroup: i.cgroup.path().to_path_buf(),
        route: running.route.clone(),
        cas: vec![
            env.certs.upstream_ca.clone(),
            env.certs.mitm_ca_cert.clone(),
        ],
    })
}

/// Opens `n` connections through a fresh proxy, one request each, and
/// measures the proxy's memory with them held open.
fn idle(
    kind: Kind,
    env: &Env<'_>,
    rt: &tokio::runtime::Runtime,
    tls: &Arc<rustls::ClientConfig>,
    n: usize,
) -> Result<IdleResult> {
    let running = topo::start(kind, env)?;
    let Some(w) = running.watch else {
        bail!("no process to measure");
    };
    std::thread::sleep(Duration::from_millis(200));
    let before = w.mem();
    let t = Instant::now();
    // The connections are held in this process, or by a child in the eBPF
    // topology's cgroup; they close when `senders` / `hold` drop.
    let (mut senders, mut hold) = (Vec::new(), None);
    let (open, failed, first_error) = match remote_for(&running, env) {
        Some(remote) => {
            let h = remote.hold_idle(n)?;
            let r = h.report.clone();
            hold = Some(h);
            (r.open, r.failed, r.first_error)
        }
        None => {
            let client = Client::new(running.route.clone(), tls.clone())?;
            let (s, failed, first_error) = rt.block_on(client.open_idle(n, 64, "/1k"));
            rt.block_on(async { tokio::time::sleep(Duration::from_secs(1)).await });
            senders = s;
            let open = senders.iter().filter(|s| !s.is_closed()).count();
            (open, failed, first_error)
        }
    };
    let after = w.mem();
    eprintln!(
        "bench: {:<16} idle: {open}/{n} open in {:.1}s, RSS {} → {} KiB, {failed} failed",
        kind.name(),
        t.elapsed().as_secs_f64(),
        before.rss_kib,
        after.rss_kib
    );
    drop(senders);
    drop(hold);
    let kib_per_conn = if open > 0 {
        after.rss_kib.saturating_sub(before.rss_kib) as f64 / open as f64
    } else {
        0.0
    };
    Ok(IdleResult {
        requested: n,
        open,
        failed,
        first_error,
        before,
        after,
        kib_per_conn,
    })
}
