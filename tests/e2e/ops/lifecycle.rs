//! Shutdown: SIGTERM stops accepting (the metrics endpoint stays up, `/readyz` 503, until the
//! drain is over), drains the in-flight request, exits 0; a second signal
//! ends the grace period, and the records of the exchanges it cuts say so. Startup:
//! `TOKIO_WORKER_THREADS` sets the thread counts, and a value that is not a positive number
//! stops startup with an error naming it. On an AMD CPU with FSRM and a glibc before 2.40 the
//! proxy executes itself again with glibc's `REP MOVSB` threshold raised, keeping its PID,
//! arguments, environment and any threshold the operator set.

use std::time::Duration;

use iron_proxy_tests::*;
use nix::sys::signal::Signal;

use super::KeepAlive;

#[test]
fn sigterm_drains_an_in_flight_request_then_exits_0() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let mut px = allowing(&net, "httpbin.test");

    let slow = Curl::get("https://httpbin.test/delay/6").via(&px).spawn();
    up.wait_for_request(|r| r.path() == "/delay/6");
    // What follows must happen while the upstream still holds that answer (6 s): a
    // connection, a request, the signal, a metrics probe, each a process or a round trip
    // on a loaded machine.
    // A keep-alive client connection, idle when the signal comes.
    let mut idle = KeepAlive::open(px.http_addr(), Duration::from_secs(10));
    assert!(idle
        .get("/before", "denied.test")
        .starts_with("HTTP/1.1 403"));
    px.signal(Signal::SIGTERM);

    // New connections are refused while the slow one is still running...
    let https = px.https_addr();
    wait_until(Duration::from_secs(10), "the listener to close", || {
        std::net::TcpStream::connect_timeout(&https, Duration::from_millis(200))
            .is_err()
            .then_some(())
    });
    // The metrics endpoint serves until the drain is over: not ready, but alive (before, it
    // closed at the signal, so probes saw refused connections for the whole drain).
    let metrics = px.metrics_addr();
    let probe = |path: &str| Curl::get(&format!("http://{metrics}{path}")).run();
    assert_eq!(probe("/readyz").status, 503, "not ready while draining");
    assert_eq!(probe("/healthz").status, 200, "alive while draining");
    assert!(px.is_running(), "the proxy waits for the in-flight request");
    // A new request on the idle connection is refused, and its record says why.
    let head = idle.get("/after", "denied.test");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/after"));
    assert_eq!(rec.str("reason"), Some("not_ready"), "{rec}");
    assert_eq!(rec.host(), Some("denied.test"), "{rec}");
    assert!(
        rec.str("error")
            .is_some_and(|e| e.contains("shutting down")),
        "{rec}"
    );
    // A record of the drain is in the metrics while it lasts: /after's 503 (an error).
    let scrape = probe("/metrics").body;
    assert!(
        scrape
            .lines()
            .any(|l| l.starts_with("iron_proxy_requests_total{")
                && l.contains("action=\"error\"")
                && l.contains("mode=\"http\"")
                && l.ends_with(" 1")),
        "{scrape}"
    );

    // ...and the in-flight one completes.
    let (r, _) = slow.finish();
    assert_eq!(r.status, 200, "{r}");
    assert!(r.body.contains("/delay/6"), "the whole body arrived: {r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/delay/6"));
    assert!(rec.is_allowed(), "{rec}");

    let status = wait_until(Duration::from_secs(15), "the proxy to exit", || {
        (!px.is_running()).then(|| px.stop())
    });
    let status = status.expect("an exit status");
    assert_eq!(
        status.code(),
        Some(0),
        "clean exit after the drain: {status}"
    );
    px.wait_for_log(|l| l.contains("in-flight requests drained"));
}

/// Exchanges still running when the grace period ends are cut by the proxy, not by their
/// clients: their records say `shutdown` (before, one waiting for its response head was
/// recorded as `client_closed`, "the client closed the connection", and a response cut
/// mid-body as a plain `allow`). A second SIGTERM ends the grace period at once (before, it
/// was ignored and the drain waited its 30 s).
#[test]
fn a_second_sigterm_ends_the_drain_and_cut_exchanges_are_recorded_as_shutdown() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let mut px = allowing(&net, "httpbin.test");

    let waiting = Curl::get("https://httpbin.test/delay/20").via(&px).spawn();
    let streaming = Curl::get("https://httpbin.test/stream/100?interval_ms=500")
        .via(&px)
        .spawn();
    up.wait_for_request(|r| r.path() == "/delay/20");
    streaming.wait_for_line(Duration::from_secs(10), |l| {
        l.contains("\"id\": 1") || l.contains("\"id\":1")
    });

    px.signal(Signal::SIGTERM);
    px.wait_for_log(|l| l.contains("draining"));
    px.signal(Signal::SIGTERM);
    let status = wait_until(Duration::from_secs(15), "the proxy to exit", || {
        (!px.is_running()).then(|| px.stop())
    });
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit 0");
    let _ = waiting.finish();
    let _ = streaming.finish();

    let rec = px.wait_for_audit(|a| a.path() == Some("/delay/20"));
    assert_eq!(rec.str("reason"), Some("shutdown"), "{rec}");
    assert_eq!(rec.action(), Some("error"), "{rec}");
    assert_eq!(rec.status_code(), Some(0), "no response was sent: {rec}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/stream/100"));
    assert_eq!(rec.str("reason"), Some("shutdown"), "{rec}");
    assert_eq!(rec.action(), Some("error"), "the body was cut: {rec}");
    assert_eq!(
        rec.status_code(),
        Some(200),
        "the status already sent: {rec}"
    );
    assert_eq!(
        px.audit()
            .iter()
            .filter(|a| a.host() == Some("httpbin.test"))
            .count(),
        2,
        "one record each"
    );
}

/// Connects to `wss://ws.test/ws` through the proxy's HTTPS listener, echoes one message,
/// touches `<dir>/echoed`; once `<dir>/again` exists echoes another and touches
/// `<dir>/echoed-again`; then waits for the connection to end. The asyncio client (see
/// tests/README.md).
const WS_HELD_OPEN: &str = r#"
import asyncio, json, os, socket, ssl, sys, time
from websockets.asyncio.client import connect
host, port, ca, flags = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def touch(name): open(os.path.join(flags, name), "w").close()
async def main():
    ctx = ssl.create_default_context(cafile=ca)
    sock = socket.create_connection((host, port), timeout=10)
    got = []
    async with connect("wss://ws.test/ws", sock=sock, ssl=ctx, server_hostname="ws.test",
                       open_timeout=10, ping_interval=None) as ws:
        await ws.send("hello")
        got.append(await asyncio.wait_for(ws.recv(), 10))
        touch("echoed")
        deadline = time.time() + 30
        while not os.path.exists(os.path.join(flags, "again")) and time.time() < deadline:
            await asyncio.sleep(0.02)
        await ws.send("after-sigterm")
        got.append(await asyncio.wait_for(ws.recv(), 10))
        touch("echoed-again")
        try:
            await asyncio.wait_for(ws.recv(), 30)
        except Exception as e:
            got.append(type(e).__name__)
    return got
print(json.dumps({"got": asyncio.run(main())}))
"#;

/// A WebSocket open at SIGTERM is an exchange in flight: the drain waits for it (before, its
/// splice was not counted, so the proxy cut it at once), and when the grace period ends (here
/// a second SIGTERM) its record says `shutdown` and keeps the bytes it moved (before, a cut
/// splice's record had no `bytes_sent`/`bytes_received`).
#[test]
fn a_websocket_open_at_sigterm_is_drained_and_its_cut_record_keeps_its_bytes() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("ws.test").start(&net);
    let mut px = allowing(&net, "ws.test");
    let flags = tempfile::tempdir().expect("temp dir");
    let dir = flags.path().to_str().expect("utf-8 temp path").to_string();
    let https = px.https_addr();
    let ca = px.ca().to_string();
    let client = std::thread::spawn(move || {
        python(
            WS_HELD_OPEN,
            [https.ip().to_string(), https.port().to_string(), ca, dir],
        )
    });
    let flag = |name: &str| flags.path().join(name);
    wait_until(Duration::from_secs(30), "the WebSocket echo", || {
        (flag("echoed").exists() || client.is_finished()).then_some(())
    });
    assert!(flag("echoed").exists(), "the WebSocket client gave up");
    up.wait_for_request(|q| q.path() == "/ws");

    px.signal(Signal::SIGTERM);
    let draining = px.wait_for_log(|l| l.contains("\"draining\""));
    assert!(
        draining.contains("\"in_flight\":1"),
        "the WebSocket is in flight: {draining}"
    );
    // Still spliced while the proxy drains.
    std::fs::write(flag("again"), "").expect("writing a flag");
    wait_until(Duration::from_secs(15), "the echo after SIGTERM", || {
        (flag("echoed-again").exists() || client.is_finished()).then_some(())
    });
    assert!(
        flag("echoed-again").exists(),
        "the WebSocket was cut at SIGTERM instead of drained"
    );
    px.signal(Signal::SIGTERM);
    let status = wait_until(Duration::from_secs(15), "the proxy to exit", || {
        (!px.is_running()).then(|| px.stop())
    });
    assert_eq!(status.and_then(|s| s.code()), Some(0), "exit 0");
    let out = client.join().expect("client thread");
    let got = out.assert_ok().json();
    assert_eq!(got["got"][1], "after-sigterm", "{out}");

    let rec = px.wait_for_audit(|a| a.path() == Some("/ws"));
    assert_eq!(rec.str("reason"), Some("shutdown"), "{rec}");
    assert_eq!(rec.status_code(), Some(101), "{rec}");
    let sent = rec.pointer("/bytes_sent").and_then(|v| v.as_u64());
    let received = rec.pointer("/bytes_received").and_then(|v| v.as_u64());
    assert!(
        sent.is_some_and(|n| n > 0) && received.is_some_and(|n| n > 0),
        "the record keeps the bytes moved: {rec}"
    );
}

/// A proxy resolving through `net` whose allowlist names `host` only.
fn allowing(net: &FakeInternet, host: &str) -> ProxyProcess {
    Proxy::with(format!(
        "transforms:\n  - name: allowlist\n    config:\n      domains: [\"{host}\"]\n"
    ))
    .resolver(net)
    .start()
}

/// The names of `pid`'s threads.
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the proxy's threads")
        .filter_map(|t| {
            let path = t.ok()?.path().join("comm");
            Some(std::fs::read_to_string(path).ok()?.trim().to_string())
        })
        .collect()
}

const SNI_ONLY: &str = "tls:\n  mode: sni-only\ntransforms:\n  - name: allowlist\n    config:\n      domains: [\"api.test\"]\n";

#[test]
fn tokio_worker_threads_sets_the_connection_workers_and_the_main_runtime() {
    // Three: not what one per core gives on the usual 1-, 2- or 4-core runner.
    let proxy = Proxy::with(SNI_ONLY)
        .env("TOKIO_WORKER_THREADS", " 3 ")
        .start();
    let names = thread_names(proxy.pid());
    let count = |prefix: &str| names.iter().filter(|n| n.starts_with(prefix)).count();
    assert_eq!(count("iron-conn-"), 3, "connection workers: {names:?}");
    assert_eq!(count("tokio-rt-worker"), 3, "main runtime: {names:?}");
}

#[test]
fn an_invalid_tokio_worker_threads_stops_startup_naming_it() {
    let dir = paths::scratch_dir("worker-threads");
    let file = dir.path().join("proxy.yaml");
    std::fs::write(&file, SNI_ONLY).expect("writing the config");
    for bad in ["abc", "0", "-1"] {
        let out = process::run_with_timeout(
            "iron-proxy",
            std::process::Command::new(paths::iron_proxy_bin())
                .arg("-config")
                .arg(&file)
                .env("TOKIO_WORKER_THREADS", bad),
            Duration::from_secs(30),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.exit, 1, "{bad}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "iron-proxy: TOKIO_WORKER_THREADS: expected a positive whole number of threads, \
                 got {bad:?}; not starting"
            )),
            "{bad}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{bad}: {stderr}");
    }
}

/// Whether this host is one the proxy raises glibc's `REP MOVSB` threshold on, found the way an
/// operator would (`/proc/cpuinfo`, `getconf`), not the way the proxy does (CPUID, glibc's own
/// version call).
fn rep_movsb_host() -> bool {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo");
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let amd_fsrm = field("vendor_id") == "AuthenticAMD"
        && field("flags").split_whitespace().any(|f| f == "fsrm");
    let out = std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .expect("getconf");
    let text = String::from_utf8_lossy(&out.stdout);
    let old_glibc = text
        .trim()
        .strip_prefix("glibc ")
        .and_then(|v| {
            let mut parts = v.split('.');
            let major: u32 = parts.next()?.parse().ok()?;
            let minor: u32 = parts.next()?.parse().ok()?;
            Some((major, minor) < (2, 40))
        })
        .unwrap_or(false);
    amd_fsrm && old_glibc
}

/// `pid`'s environment as the kernel holds it: `NAME=value` entries, each ended by a NUL.
fn environ(pid: u32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/environ")).expect("the proxy's environment")
}

/// Whether `environ` holds exactly one `name=value` entry for `name`, and it is `value`. glibc
/// before 2.39 parses `GLIBC_TUNABLES` in place, ending each `name=value` pair of it with a NUL
/// where the `:` was, so a `:` of `value` may read as a NUL there.
fn has_var(environ: &[u8], name: &str, value: &str) -> bool {
    let head = format!("{name}=");
    let starts: Vec<usize> = std::iter::once(0)
        .chain(
            environ
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == 0)
                .map(|(i, _)| i + 1),
        )
        .filter(|&i| environ[i..].starts_with(head.as_bytes()))
        .collect();
    let [start] = starts[..] else {
        return false;
    };
    let rest = &environ[start + head.len()..];
    rest.len() > value.len()
        && value
            .bytes()
            .zip(rest)
            .all(|(want, &got)| got == want || (want == b':' && got == 0))
        && rest[value.len()] == 0
}

#[test]
fn glibc_rep_movsb_threshold_is_raised_on_affected_hosts_and_an_operators_value_kept() {
    require_root!();
    let ours = "glibc.cpu.x86_rep_movsb_threshold=4194304";
    let affected = rep_movsb_host();
    let cases = [
        // (GLIBC_TUNABLES given, what the running proxy has on an affected host)
        ("", ours.to_string()),
        (
            "glibc.malloc.arena_max=2",
            format!("glibc.malloc.arena_max=2:{ours}"),
        ),
        (
            "glibc.cpu.x86_rep_movsb_threshold=2112",
            "glibc.cpu.x86_rep_movsb_threshold=2112".to_string(),
        ),
    ];
    for (given, raised) in cases {
        let px = Proxy::with(format!("{SNI_ONLY}log:\n  level: debug\n"))
            .env("GLIBC_TUNABLES", given)
            .env("IRON_TEST_MARK", "kept")
            .start();
        let env = environ(px.pid());
        let want = if affected { raised } else { given.to_string() };
        assert!(
            has_var(&env, "GLIBC_TUNABLES", &want),
            "given {given:?}, want {want:?} (affected host: {affected}): {:?}",
            String::from_utf8_lossy(&env)
        );
        assert!(
            has_var(&env, "IRON_TEST_MARK", "kept"),
            "the rest of the environment is kept: {:?}",
            String::from_utf8_lossy(&env)
        );
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", px.pid())).expect("cmdline");
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        assert_eq!(
            args[1..],
            ["-config", &px.config_path().display().to_string()][..],
            "arguments kept: {args:?}"
        );
        // Executed once at most: the new image was told so (the mark holds the name the
        // process had), and took the mark out of its environment, so the eBPF loader child (or
        // anything else it starts) never sees it.
        assert_eq!(
            has_var(&env, "IRON_PROXY_REEXECUTED", "iron-proxy"),
            affected && !given.contains("x86_rep_movsb_threshold"),
            "{:?}",
            String::from_utf8_lossy(&env)
        );
        // Executed again or not, the process keeps its name (executing /proc/self/exe names
        // it `exe`), so `ps`, `top` and `pgrep iron-proxy` find it.
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", px.pid())).expect("comm");
        assert_eq!(comm.trim_end(), "iron-proxy", "given {given:?}");
        // The process serves: its listeners answered before start() returned, and its
        // startup log says which threshold it runs with.
        let line = px.wait_for_log(|l| l.contains("glibc REP MOVSB copy threshold"));
        if affected {
            let pair = want.rsplit(':').next().expect("a pair");
            assert!(line.contains(pair), "{line}");
        }
    }
}

/// SIGHUP and SIGUSR1 while the proxy is still starting (here: it fetches its config from
/// an `s3://` endpoint that accepts and never answers, which start-up waits up to 30 s for)
/// do not kill it: logrotate's `postrotate` sends SIGUSR1 to whatever state the unit is in.
/// Before, their handlers were installed at the end of start-up and the default action ended
/// the process.
#[test]
fn sighup_and_sigusr1_during_start_up_do_not_kill_the_proxy() {
    require_root!();
    // Loopback only: a listener that takes connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept() {
            conns.push(c);
            if conns.len() >= 8 {
                break;
            }
        }
        std::thread::sleep(Duration::from_secs(40));
        drop(conns);
    });
    let _ = &held;
    let mut px = Proxy::with("transforms: []\n")
        .config_arg(|_| "s3://iron-e2e-bucket/proxy.yaml".to_string())
        .env("AWS_ENDPOINT_URL", &format!("http://127.0.0.1:{port}"))
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/iron-e2e-aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/iron-e2e-aws-credentials",
        )
        .spawn_unready();
    // The handlers are installed in the first milliseconds; the fetch then waits.
    std::thread::sleep(Duration::from_secs(1));
    assert!(px.is_running(), "{}", px.logs().join("\n"));
    px.signal(Signal::SIGHUP);
    px.signal(Signal::SIGUSR1);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        px.is_running(),
        "a signal during start-up ended the proxy:\n{}",
        px.logs().join("\n")
    );
    px.signal(Signal::SIGKILL);
}
