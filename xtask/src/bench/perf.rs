//! `--perf SECS`: perf profiles of iron-proxy (https_listen, or the topology
//! `--perf-topology` names) under load, and per-request counts of its system
//! calls and context switches.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::load::{Client, Mode, Spec};
use super::results::Settings;
use super::topo::{self, Env, Kind};

/// `perf record` (DWARF call graphs) on iron-proxy in topology `kind` under
/// keep-alive load (1 KiB, 64 KiB) and new-connection load; writes reports
/// by symbol (self and inclusive time) and by shared object, and per-request
/// counts from `perf stat` over the same window.
pub fn profile(
    env: &Env<'_>,
    rt: &tokio::runtime::Runtime,
    tls: &Arc<rustls::ClientConfig>,
    s: &Settings,
    secs: u64,
    kind: Kind,
    out: &Path,
) -> Result<Vec<String>> {
    let running = topo::start(kind, env)?;
    let name = kind.name();
    let Some(w) = running.watch else {
        bail!("no proxy process");
    };
    let client = Client::new(running.route.clone(), tls.clone())?;
    let mut files = Vec::new();
    let runs = [
        ("keepalive-1k", Mode::KeepAlive, s.conns, "/1k"),
        ("keepalive-64k", Mode::KeepAlive, s.conns, "/64k"),
        ("newconn-1k", Mode::NewConn, s.new_conns, "/1k"),
    ];
    for (tag, mode, conns, path) in runs {
        let data = out.join(format!("perf-{name}-{tag}.data"));
        let log = out.join(format!("perf-{name}-{tag}.log"));
        // DWARF unwinding: release builds have no frame pointers, and the
        // inclusive (children) view needs whole user-space stacks.
        let record = ["record", "-F", "499", "--call-graph", "dwarf,16384"];
        let mut perf = perf_on(w.pid, &record, &data, secs)
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting perf (apt-get install linux-perf)")?;
        let stat_file = out.join(format!("perf-{name}-{tag}-stat.csv"));
        let mut stat = perf_on(
            w.pid,
            &["stat", "-x", ",", "-e", STAT_EVENTS],
            &stat_file,
            secs,
        )
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf stat")?;
        let spec = Spec {
            mode,
            conns,
            path,
            warmup: Duration::from_millis(300),
            measure: Duration::from_secs(secs),
        };
        let r = rt.block_on(client.run(&spec, Some(&w)))?;
        let status = perf.wait()?;
        if !status.success() {
            let why = std::fs::read_to_string(&log).unwrap_or_default();
            bail!("perf record failed ({status}): {}", why.trim());
        }
        eprintln!("bench: perf {tag}: {:.0}/s under perf", r.rate);
        stat.wait()?;
        // The load runs through the whole perf window (it starts first and
        // measures `secs` after a warm-up), so the window saw about this many.
        let requests = r.rate * secs as f64;
        let csv = std::fs::read_to_string(&stat_file).unwrap_or_default();
        let per_request = per_request(&csv, requests);
        eprintln!("bench: perf {tag}: {}", per_request.replace('\n', "; "));
        let txt = out.join(format!("perf-{name}-{tag}-stat.txt"));
        std::fs::write(&txt, format!("{per_request}\n"))?;
        files.push(txt.display().to_string());
        for (children, sort, suffix) in [
            ("--no-children", "symbol", "self"),
            ("--children", "symbol", "inclusive"),
            ("--no-children", "dso", "dso"),
        ] {
            let txt = out.join(format!("perf-{name}-{tag}-{suffix}.txt"));
            let report = Command::new("perf")
                .arg("report")
                .arg("-i")
                .arg(&data)
                .args(["--stdio", children, "-g", "none", "--percent-limit", "0.5"])
                .arg("--sort")
                .arg(sort)
                .output()
                .context("running perf report")?;
            std::fs::write(&txt, &report.stdout)?;
            files.push(txt.display().to_string());
        }
    }
    Ok(files)
}

/// `perf ARGS -p PID -o OUTPUT -- sleep SECS`, with stdout discarded.
fn perf_on(pid: u32, args: &[&str], output: &Path, secs: u64) -> Command {
    let mut cmd = Command::new("perf");
    cmd.args(args)
        .arg("-p")
        .arg(pid.to_string())
        .arg("-o")
        .arg(output)
        .args(["--", "sleep"])
        .arg(secs.to_string())
        .stdout(Stdio::null());
    cmd
}

/// The topology `--perf-topology` names: one of iron-proxy's.
pub fn topology(name: &str) -> Result<Kind> {
    match Kind::ALL.into_iter().find(|k| k.name() == name) {
        Some(k) if !k.is_peer() && k != Kind::Direct => Ok(k),
        _ => bail!("--perf-topology {name:?}: expected iron-https, iron-connect or iron-intercept"),
    }
}

/// What `perf stat` counts alongside each profile.
const STAT_EVENTS: &str = "raw_syscalls:sys_enter,context-switches,task-clock";

/// Each counter of a `perf stat -x ,` report divided by `requests`, one line
/// per counter (`task-clock` in microseconds of CPU).
fn per_request(csv: &str, requests: f64) -> String {
    let mut lines = Vec::new();
    for line in csv
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(value), Some(event)) = (fields.first(), fields.get(2)) else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            lines.push(format!("{event}: not counted ({value})"));
            continue;
        };
        let (name, scale) = match *event {
            "task-clock" => ("CPU µs", 1000.0), // reported in msec
            "raw_syscalls:sys_enter" => ("system calls", 1.0),
            other => (other, 1.0),
        };
        let per = if requests > 0.0 {
            value * scale / requests
        } else {
            0.0
        };
        lines.push(format!("{name} per request: {per:.2}"));
    }
    if lines.is_empty() {
        lines.push("perf stat counted nothing".to_string());
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::{per_request, topology, Kind};

    #[test]
    fn perf_topology_names_an_iron_proxy_topology() {
        assert_eq!(topology("iron-intercept").unwrap(), Kind::IronIntercept);
        assert_eq!(topology("iron-https").unwrap(), Kind::IronHttps);
        for bad in ["direct", "squid-bump", "iron"] {
            let e = topology(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("iron-connect"), "{e}");
        }
    }

    #[test]
    fn per_request_divides_each_counter() {
        let csv = "# started on Mon\n\n\
                   40000,,raw_syscalls:sys_enter,2000000000,100.00,,\n\
                   1000,,context-switches,2000000000,100.00,,\n\
                   300.5,msec,task-clock,300500000,100.00,0.150,CPUs utilized\n\
                   <not counted>,,cycles,0,0.00,,\n";
        let out = per_request(csv, 10_000.0);
        assert_eq!(
            out,
            "system calls per request: 4.00\n\
             context-switches per request: 0.10\n\
             CPU µs per request: 30.05\n\
             cycles: not counted (<not counted>)"
        );
    }
}
