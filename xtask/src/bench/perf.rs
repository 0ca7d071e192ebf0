//! `--perf SECS`: perf profiles of iron-proxy (https_listen) under load.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::load::{Client, Mode, Spec};
use super::results::Settings;
use super::topo::{self, Env, Kind};

/// `perf record` (DWARF call graphs) on iron-proxy (https_listen) under
/// keep-alive load (1 KiB, 64 KiB) and new-connection load; writes reports
/// by symbol (self and inclusive time) and by shared object.
pub fn profile(
    env: &Env<'_>,
    rt: &tokio::runtime::Runtime,
    tls: &Arc<rustls::ClientConfig>,
    s: &Settings,
    secs: u64,
    out: &Path,
) -> Result<Vec<String>> {
    let running = topo::start(Kind::IronHttps, env)?;
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
        let data = out.join(format!("perf-iron-https-{tag}.data"));
        let log = out.join(format!("perf-iron-https-{tag}.log"));
        let mut perf = Command::new("perf")
            // DWARF unwinding: release builds have no frame pointers, and the
            // inclusive (children) view needs whole user-space stacks.
            .args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-p"])
            .arg(w.pid.to_string())
            .arg("-o")
            .arg(&data)
            .args(["--", "sleep"])
            .arg(secs.to_string())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting perf (apt-get install linux-perf)")?;
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
        for (children, sort, suffix) in [
            ("--no-children", "symbol", "self"),
            ("--children", "symbol", "inclusive"),
            ("--no-children", "dso", "dso"),
        ] {
            let txt = out.join(format!("perf-iron-https-{tag}-{suffix}.txt"));
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
