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
/// by symbol (self and inclusive time) and by shared object, a flamegraph
/// (SVG), and per-request counts from `perf stat` over the same window.
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
        // A flamegraph that cannot be drawn costs only itself: the reports
        // above are written, and the next measures still get profiled.
        let svg = out.join(format!("perf-{name}-{tag}.svg"));
        match flamegraph(
            &data,
            &svg,
            &format!("iron-proxy ({name}), {tag}, {secs} s"),
        ) {
            Ok(()) => files.push(svg.display().to_string()),
            Err(e) => eprintln!("bench: perf {tag}: no flamegraph: {e:#}"),
        }
    }
    Ok(files)
}

/// Draws a flamegraph of the samples in `data`: `perf script` (with inlined
/// frames, which is most of a Rust release build's call stacks), folded and
/// rendered with inferno.
fn flamegraph(data: &Path, svg: &Path, title: &str) -> Result<()> {
    let mut script = Command::new("perf")
        .arg("script")
        .arg("-i")
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running perf script")?;
    let stdout = script.stdout.take().context("perf script's output")?;
    let drawn = draw(std::io::BufReader::new(stdout), svg, title);
    let status = script.wait()?;
    if !status.success() {
        bail!("perf script -i {} failed ({status})", data.display());
    }
    drawn.with_context(|| format!("perf script -i {}", data.display()))
}

/// Folds `perf script` output and draws it into `svg`.
fn draw(mut script: impl std::io::BufRead, svg: &Path, title: &str) -> Result<()> {
    use inferno::collapse::Collapse;

    let mut text = Vec::new();
    script
        .read_to_end(&mut text)
        .context("reading the samples")?;
    let mut folded = Vec::new();
    inferno::collapse::perf::Folder::default()
        .collapse(text.as_slice(), &mut folded)
        .context("folding the stacks")?;
    if folded.is_empty() {
        bail!("no samples to draw");
    }
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_string();
    // Frames are weighed by each sample's period: nanoseconds for perf's
    // software clock (what a VM without a PMU samples), else the event's unit.
    opts.count_name = count_name(&text);
    let file = std::io::BufWriter::new(
        std::fs::File::create(svg).with_context(|| format!("creating {}", svg.display()))?,
    );
    inferno::flamegraph::from_reader(&mut opts, folded.as_slice(), file)
        .with_context(|| format!("drawing {}", svg.display()))?;
    Ok(())
}

/// What a sample's period counts, from the event named in the first sample's
/// header (`comm pid time: period event:`).
fn count_name(script: &[u8]) -> String {
    let first = script
        .split(|b| *b == b'\n')
        .map(String::from_utf8_lossy)
        .find(|l| !l.trim().is_empty() && !l.starts_with(char::is_whitespace));
    let event = first
        .as_deref()
        .and_then(|l| l.split_whitespace().last())
        .map(|e| {
            e.trim_end_matches(':')
                .split(':')
                .next()
                .unwrap_or(e)
                .to_string()
        });
    match event.as_deref() {
        Some("cpu-clock" | "task-clock") => "ns of CPU".into(),
        Some(e) if !e.is_empty() => e.into(),
        _ => "samples".into(),
    }
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
    use super::{count_name, draw, per_request, topology, Kind};

    #[test]
    fn perf_topology_names_an_iron_proxy_topology() {
        assert_eq!(topology("iron-intercept").unwrap(), Kind::IronIntercept);
        assert_eq!(topology("iron-https").unwrap(), Kind::IronHttps);
        for bad in ["direct", "squid-bump", "iron"] {
            let e = topology(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("iron-connect"), "{e}");
        }
    }

    /// Two samples as `perf script` prints them (trimmed from a real profile).
    const SCRIPT: &str = "\
iron-conn-1 29842 54148.849469:    2004008 cpu-clock:pppH: 
\tffffffff8226e079 _raw_spin_unlock_irqrestore+0x19 ([kernel.kallsyms])
\tffffffff8206d66b tcp_sendmsg+0x2b ([kernel.kallsyms])
\t           fde9d __GI___writev+0x4d (/usr/lib/x86_64-linux-gnu/libc.so.6)
\t          4e7895 rustls::vecbuf::ChunkVecBuffer::write_to+0x255 (/tmp/iron-proxy)
\t          4b44cc hyper::proto::h1::io::Buffered<T,B>::poll_flush+0x1ac (/tmp/iron-proxy)
\tffffffffffffffff [unknown] ([unknown])

iron-conn-1 29842 54148.852434:    2004008 cpu-clock:pppH: 
\t         11ff505 aws_lc_0_47_0_aes_gcm_decrypt_avx512+0xb45 (/tmp/iron-proxy)
\t          4bb3a4 rustls::record_layer::RecordLayer::decrypt_incoming+0x34 (/tmp/iron-proxy)
\t          4af596 hyper::proto::h1::io::Buffered<T,B>::poll_read_from_io+0xc6 (/tmp/iron-proxy)
\tffffffffffffffff [unknown] ([unknown])

";

    #[test]
    fn a_flamegraph_is_drawn_from_perf_script_output() {
        let dir = std::env::temp_dir().join(format!("iron-bench-flame-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let svg = dir.join("p.svg");
        draw(
            SCRIPT.as_bytes(),
            &svg,
            "iron-proxy (iron-https), keepalive-1k",
        )
        .expect("draw");
        let text = std::fs::read_to_string(&svg).expect("svg");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(text.starts_with("<?xml") && text.contains("<svg"), "an SVG");
        assert!(
            text.contains("iron-proxy (iron-https), keepalive-1k"),
            "the title"
        );
        for frame in [
            "ChunkVecBuffer::write_to",
            "aes_gcm_decrypt_avx512",
            "tcp_sendmsg",
        ] {
            assert!(text.contains(frame), "frame {frame} drawn");
        }
        assert!(
            text.contains("ns of CPU"),
            "cpu-clock periods are nanoseconds"
        );
    }

    #[test]
    fn the_count_is_named_after_the_sampled_event() {
        assert_eq!(count_name(SCRIPT.as_bytes()), "ns of CPU");
        let cycles = "proc 1 2.5:     100003 cycles:P: \n\t 1 f (x)\n";
        assert_eq!(count_name(cycles.as_bytes()), "cycles");
        assert_eq!(count_name(b""), "samples");
    }

    #[test]
    fn an_empty_profile_is_an_error_not_an_empty_picture() {
        let svg = std::env::temp_dir().join(format!("iron-bench-empty-{}.svg", std::process::id()));
        let err = draw(&b""[..], &svg, "t").expect_err("nothing to draw");
        assert!(format!("{err:#}").contains("no samples"), "{err:#}");
        assert!(!svg.exists(), "no file written");
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
