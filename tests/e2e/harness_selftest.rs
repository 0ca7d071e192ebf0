//! Proves the harness itself: namespaces come and go cleanly, the fake upstream serves what
//! tests rely on, dnsmasq answers, and the proxy runner parses audit records and cleans up.
//! None of these need the proxy binary.

mod hung_fs;

use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use iron_proxy_tests::*;

fn netns_list() -> String {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn direct(up: &iron_proxy_tests::UpstreamHandle, net: &FakeInternet) -> Curl {
    let ca = net.ca_bundle();
    Curl::new([
        "--cacert".into(),
        ca.into_os_string(),
        "--resolve".into(),
        up.curl_resolve().into(),
    ])
}

#[test]
fn netns_up_and_down_leaves_nothing_behind() {
    require_root!();
    let net = FakeInternet::new();
    let name = net.name().to_string();
    let veth = net.host_interface().to_string();
    let dir = net.dir().to_path_buf();
    assert!(netns_list().contains(&name), "namespace {name} missing");
    assert!(Path::new("/sys/class/net").join(&veth).exists());
    let host = net.add_host();
    // Reachable: the namespace's kernel answers a closed port with a reset, at once.
    let probe = std::net::TcpStream::connect_timeout(&host.v4_addr(9), Duration::from_secs(2));
    let refused = probe.as_ref().err().map(std::io::Error::kind);
    assert_eq!(
        refused,
        Some(std::io::ErrorKind::ConnectionRefused),
        "{probe:?}"
    );
    // One guarded process, one the test forgot about: both must die with the namespace.
    let guarded = net.spawn("sleep", net.command("sleep").arg("1000"));
    let guarded_pid = guarded.child.pid();
    let mut forgotten = net
        .command("sleep")
        .arg("1000")
        .spawn()
        .expect("spawn sleep");
    drop(guarded);
    drop(net);
    assert!(
        !netns_list().contains(&name),
        "namespace {name} left behind"
    );
    assert!(
        !Path::new("/sys/class/net").join(&veth).exists(),
        "veth {veth} left behind"
    );
    assert!(!dir.exists(), "scratch dir left behind");
    assert!(
        !Path::new(&format!("/proc/{guarded_pid}")).exists() || {
            // Reaped PIDs vanish; a zombie would still show a status file.
            std::fs::read_to_string(format!("/proc/{guarded_pid}/status"))
                .map_or(true, |s| !s.contains("sleep"))
        }
    );
    let status = forgotten.wait().expect("wait forgotten");
    assert!(
        !status.success(),
        "stray process should have been killed: {status}"
    );
}

#[test]
fn fake_upstream_echoes_over_h1_h2_plain_and_ipv6() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);

    let r = direct(&up, &net)
        .args(["--http1.1", "-H", "X-Mixed-Case: Yes", "-d", r#"{"k":1}"#])
        .args(["https://httpbin.test/anything/x?a=1&a=2&b=3"])
        .run();
    let j = r.expect_status(200).json();
    assert_eq!(j["method"], "POST");
    assert_eq!(j["path"], "/anything/x");
    assert_eq!(j["args"]["a"], serde_json::json!(["1", "2"]));
    assert_eq!(
        j["headers"]["X-Mixed-Case"], "Yes",
        "original case kept: {j}"
    );
    assert_eq!(j["json"]["k"], 1);
    assert_eq!(j["sni"], "httpbin.test");
    assert_eq!(j["http_version"], "HTTP/1.1");
    assert_eq!(r.header("x-fake-upstream"), Some("httpbin.test"));

    let r = direct(&up, &net)
        .args(["--http2", "https://httpbin.test/get"])
        .run();
    assert_eq!(r.expect_status(200).json()["http_version"], "HTTP/2");

    let plain = format!("httpbin.test:80:{}", up.ip());
    let r = curl(["--resolve", &plain, "http://httpbin.test/headers"]);
    assert!(
        r.expect_status(200).json()["headers"]["Host"].is_string(),
        "{r}"
    );

    let v6 = format!("httpbin.test:443:[{}]", up.ipv6());
    let r = curl(
        [
            "--cacert",
            net.ca_bundle().to_str().expect("utf8"),
            "--resolve",
            &v6,
        ]
        .into_iter()
        .chain(["https://httpbin.test/status/418"]),
    );
    r.expect_status(418);

    let r = direct(&up, &net)
        .args(["https://httpbin.test/bytes/100000"])
        .run();
    assert_eq!(r.body_bytes.len(), 100_000);
    assert!(r
        .body_bytes
        .iter()
        .enumerate()
        .all(|(i, b)| usize::from(*b) == i % 251));

    let r = direct(&up, &net)
        .args(["https://httpbin.test/response-headers?X-Set=1"])
        .run();
    assert_eq!(r.header("x-set"), Some("1"), "{r}");

    // The request log proves what reached the upstream, and what did not.
    let logged = up.wait_for_request(|r| r.path() == "/anything/x");
    assert_eq!(logged.header("x-mixed-case"), Some("Yes"));
    assert!(logged.headers().iter().any(|(k, _)| *k == "X-Mixed-Case"));
    assert_eq!(logged.body(), r#"{"k":1}"#);
    assert_eq!(logged.sni(), Some("httpbin.test"));
    up.assert_no_request(|r| r.path() == "/never");
    assert_eq!(up.requests().len(), 6);
}

/// A command that times out while a process it started holds its output (git push's
/// helpers do): `run_with_timeout` returns, with the state of the command's processes, and
/// none of them is left. It used to kill the command only and then wait, forever, for the
/// output its children still held open.
#[test]
fn a_timed_out_command_is_killed_with_the_children_holding_its_output() {
    let dir = paths::scratch_dir("timeout");
    let pid_file = dir.path().join("child.pid");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"sleep 100000 & echo $! > "$0"; echo started; wait"#)
        .arg(&pid_file);
    // A bound on the call itself, so that the old behaviour fails rather than hangs.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(process::run_with_timeout(
            "sh",
            &mut cmd,
            Duration::from_secs(2),
        ));
    });
    let done = rx.recv_timeout(Duration::from_secs(120));
    let child: Option<i32> = std::fs::read_to_string(&pid_file)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    // Gone, or a zombie its new parent has yet to reap.
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3)) != Some("Z"))
    };
    let Ok(out) = done else {
        if let Some(pid) = child {
            // Our own child's child, by its PID.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        panic!("run_with_timeout still waits for the output its command's child holds");
    };
    assert!(out.timed_out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\n");
    let child = child.expect("the child's pid");
    assert!(
        out.diagnosis
            .contains(&format!("--- pid {child}: sleep 100000")),
        "{}",
        out.diagnosis
    );
    assert!(out.diagnosis.contains("wchan"), "{}", out.diagnosis);
    // Killed and reaped (its parent, killed too, left it to init, which reaps it).
    let mut tries = 0;
    while alive(child) && tries < 500 {
        std::thread::sleep(Duration::from_millis(10));
        tries += 1;
    }
    assert!(!alive(child), "the child {child} was left running");
}

/// A HEAD over HTTP/2 with the h2 library (httpx's; strict about a body on a HEAD, RFC 9113
/// §8.1.1): `argv[1]` CA, `argv[2]` address, `argv[3]` port, `argv[4]` name, then paths. Prints
/// one `{"headers": {..}, "data": N, "ended": bool}` or `{"error"}` per path.
const H2_HEAD: &str = r#"
import json, socket, ssl, sys
import h2.config, h2.connection, h2.events
ca, ip, port, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["h2"])
for path in sys.argv[5:]:
    s = ctx.wrap_socket(socket.create_connection((ip, port), timeout=20), server_hostname=name)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    c.send_headers(1, [(":method", "HEAD"), (":path", path), (":scheme", "https"),
                       (":authority", name)], end_stream=True)
    s.sendall(c.data_to_send())
    out = {"headers": {}, "data": 0, "ended": False}
    try:
        while not out["ended"]:
            chunk = s.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            for e in c.receive_data(chunk):
                if isinstance(e, h2.events.ResponseReceived):
                    out["headers"] = {k.decode(): v.decode() for k, v in e.headers}
                elif isinstance(e, h2.events.DataReceived):
                    out["data"] += len(e.data)
                elif isinstance(e, h2.events.StreamEnded):
                    out["ended"] = True
                elif isinstance(e, h2.events.StreamReset):
                    raise EOFError("reset")
            s.sendall(c.data_to_send())
    except Exception as e:
        out = {"error": "%s: %s" % (type(e).__name__, e)}
    print(json.dumps(out))
    s.close()
"#;

/// HEAD gets the headers a GET gets and no body (RFC 9110 §9.3.2), over HTTP/2 too, where
/// hyper's server would send the body (the DATA frames h2 clients refuse).
#[test]
fn fake_upstream_answers_head_without_a_body() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let ca = net.ca_bundle();
    let out = python(
        H2_HEAD,
        [
            ca.to_str().expect("utf8"),
            &up.ip().to_string(),
            &up.tls_port().to_string(),
            "httpbin.test",
            "/bytes/1000",
            "/get",
        ],
    );
    out.assert_ok();
    let rsps: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(rsps.len(), 2, "{}", out.stdout);
    for (r, len) in rsps.iter().zip([Some("1000"), None]) {
        assert_eq!(r["headers"][":status"], "200", "{r}");
        assert_eq!(r["data"], 0, "{r}");
        assert_eq!(r["ended"], true, "{r}");
        if let Some(len) = len {
            assert_eq!(r["headers"]["content-length"], len, "{r}");
        }
    }
    // The GET's Content-Length, on HTTP/1.1 as on HTTP/2.
    let get = direct(&up, &net)
        .args(["--http2", "https://httpbin.test/bytes/1000"])
        .run();
    assert_eq!(get.body_bytes.len(), 1000, "{get}");
    for flag in ["--http1.1", "--http2"] {
        let r = direct(&up, &net)
            .args(["-I", flag, "https://httpbin.test/bytes/1000"])
            .run();
        assert_eq!(
            r.expect_status(200).header("content-length"),
            Some("1000"),
            "{r}"
        );
        let end = r.body.find("\r\n\r\n").map(|i| i + 4);
        assert_eq!(end, Some(r.body.len()), "nothing after the head: {r}");
    }
    assert!(
        rsps[1]["headers"]["content-length"].is_string(),
        "{}",
        rsps[1]
    );
}

#[test]
fn untrusted_upstream_cert_is_refused_by_curl() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("self.test").untrusted_cert().start(&net);
    let r = direct(&up, &net).args(["https://self.test/get"]).run();
    assert_eq!(r.exit, 60, "self-signed cert must not verify: {r}");
    up.assert_untouched();
}

#[test]
fn sse_first_event_arrives_before_the_stream_ends() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("events.test").start(&net);
    let stream = direct(&up, &net)
        .args(["https://events.test/sse?count=3&interval_ms=700"])
        .spawn();
    let (first, t_first) = stream.wait_for_line(Duration::from_secs(5), |l| l.starts_with("data:"));
    assert!(first.contains(r#""n":0"#), "{first}");
    let (r, t_end) = stream.finish();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    assert_eq!(r.body.matches("data:").count(), 3, "{r}");
    assert!(
        t_end >= Duration::from_millis(1400),
        "stream ended too early: {t_end:?}"
    );
    assert!(
        t_first + Duration::from_millis(1000) < t_end,
        "first event at {t_first:?} should precede the end at {t_end:?}"
    );
}

#[test]
fn websocket_echo_with_python_websockets() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("ws.test").start(&net);
    // The asyncio client, not `websockets.sync`: see "WebSockets from Python" in tests/README.md.
    let script = r#"
import asyncio, json, socket, ssl, sys
from websockets.asyncio.client import connect
async def main():
    ctx = ssl.create_default_context(cafile=sys.argv[1])
    sock = socket.create_connection((sys.argv[2], 443), timeout=10)
    async with connect("wss://ws.test/ws", sock=sock, ssl=ctx, server_hostname="ws.test") as ws:
        await ws.send("hello")
        text = await asyncio.wait_for(ws.recv(), 5)
        await ws.send(b"\x00\x01\x02")
        data = await asyncio.wait_for(ws.recv(), 5)
    return {"text": text, "binary": list(data)}
print(json.dumps(asyncio.run(main())))
"#;
    let ca = net.ca_bundle();
    let out = python(script, [ca.to_str().expect("utf8"), &up.ip().to_string()]);
    let j = out.assert_ok().json();
    assert_eq!(j["text"], "hello");
    assert_eq!(j["binary"], serde_json::json!([0, 1, 2]));
    up.wait_for_request(|r| r.path() == "/ws");
}

#[test]
fn dnsmasq_answers_registered_names_and_logs_queries() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("dns.test").alias("other.test").start(&net);
    let server = format!("@{}", net.resolver().ip());
    let dig = |args: &[&str]| {
        let out = Command::new("dig")
            .args(["+time=2", "+tries=1", &server])
            .args(args)
            .output()
            .expect("dig");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        dig(&["+short", "dns.test", "A"]).trim(),
        up.ip().to_string()
    );
    assert_eq!(
        dig(&["+short", "other.test", "AAAA"]).trim(),
        up.ipv6().to_string()
    );
    assert!(dig(&["unknown.test", "A"]).contains("NXDOMAIN"));
    assert!(
        net.dns().was_queried("dns.test"),
        "{:?}",
        net.dns().queries()
    );

    let ip: IpAddr = [198, 18, 255, 254].into();
    net.dns().set("late.test", &[ip]);
    assert_eq!(dig(&["+short", "late.test"]).trim(), "198.18.255.254");
    net.dns().remove("late.test");
    assert!(dig(&["late.test"]).contains("NXDOMAIN"));
}

/// A stand-in for iron-proxy: listens on the rendered http/https ports, writes one audit
/// line and a `ready` line to stderr, and runs until killed.
const STAND_IN: &str = r#"#!/bin/sh
cfg="$2"
exec python3 - "$cfg" <<'PY'
import json, re, socket, sys, time
text = open(sys.argv[1]).read()
socks = []
for key in ("http_listen", "https_listen"):
    host, port = re.search(key + r": ['\"]?([0-9.]+):(\d+)", text).groups()
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port))); s.listen(); socks.append(s)
print("operational log line", file=sys.stderr, flush=True)
print(json.dumps({"host": "a.test", "method": "GET", "path": "/", "action": "reject",
                  "rejected_by": "allowlist", "status_code": 403}), file=sys.stderr, flush=True)
print("ready", file=sys.stderr, flush=True)
time.sleep(3600)
PY
"#;

#[test]
fn proxy_runner_renders_config_waits_parses_audit_and_kills() {
    require_root!();
    let net = FakeInternet::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("stand-in");
    std::fs::write(&bin, STAND_IN).expect("write stand-in");
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");

    let mut px = Proxy::with("transforms: []")
        .resolver(&net)
        .binary(&bin)
        .start();
    let cfg = px.config().clone();
    assert_eq!(cfg["dns"]["upstream_resolver"], net.resolver().to_string());
    assert_eq!(cfg["tls"]["ca_cert"], px.ca());
    let rec = px.wait_for_audit(|r| r.host() == Some("a.test"));
    assert_eq!(rec.rejected_by(), Some("allowlist"));
    assert_eq!(
        px.audit().len(),
        1,
        "operational lines are not audit records"
    );
    // A reload test rewrites the config; the harness keeps its ports, resolver and CA.
    let http = cfg["proxy"]["http_listen"].clone();
    px.rewrite_config("transforms: [{name: allowlist, config: {domains: [x.test]}}]");
    let text = std::fs::read_to_string(px.config_path()).expect("read config");
    let again: serde_json::Value = serde_yaml_ng::from_str(&text).expect("yaml");
    assert_eq!(again["proxy"]["http_listen"], http);
    assert_eq!(again["tls"]["ca_key"], cfg["tls"]["ca_key"]);
    assert_eq!(again["transforms"][0]["config"]["domains"][0], "x.test");
    let pid = px.pid();
    drop(px);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "stand-in proxy still running"
    );

    let (status, lines) = Proxy::with("{}")
        .binary("/bin/false")
        .run_to_exit(Duration::from_secs(5));
    assert!(!status.success());
    assert!(lines.is_empty());
}

/// A proxy stand-in that fails like iron-proxy losing a port the first time
/// it runs (per `$IRON_STAND_IN_MARK`), and starts the next time.
const LOSES_A_PORT_ONCE: &str = r#"#!/bin/sh
if [ ! -e "$IRON_STAND_IN_MARK" ]; then
  echo first > "$IRON_STAND_IN_MARK"
  echo "iron-proxy: binding proxy.http_listen 127.0.0.1:1: Address already in use (os error 98)" >&2
  exit 1
fi
echo again >> "$IRON_STAND_IN_MARK"
echo ready >&2
exec sleep 3600
"#;

#[test]
fn proxy_runner_starts_again_on_fresh_ports_when_a_port_was_taken() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("stand-in");
    std::fs::write(&bin, LOSES_A_PORT_ONCE).expect("write stand-in");
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let mark = dir.path().join("runs");
    let mark_str = mark.to_str().expect("utf-8 temp path");

    let px = Proxy::with("transforms: []")
        .binary(&bin)
        .env("IRON_STAND_IN_MARK", mark_str)
        .start();
    let runs = std::fs::read_to_string(&mark).expect("runs");
    assert_eq!(runs, "first\nagain\n", "failed once, then started");
    drop(px);

    // Any other startup failure is reported at once, not retried.
    let once = dir.path().join("once");
    std::fs::write(
        &once,
        "#!/bin/sh\necho run >> \"$IRON_STAND_IN_MARK\"\necho 'bad config' >&2\nexit 1\n",
    )
    .expect("write");
    std::fs::set_permissions(&once, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let count = dir.path().join("count");
    let count_str = count.to_str().expect("utf-8 temp path").to_string();
    let failed = std::panic::catch_unwind(move || {
        Proxy::with("transforms: []")
            .binary(&once)
            .env("IRON_STAND_IN_MARK", &count_str)
            .start()
    });
    let why = failed.expect_err("a failing start panics");
    let why = why.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        why.contains("exited during startup") && why.contains("bad config"),
        "{why}"
    );
    assert_eq!(std::fs::read_to_string(&count).expect("count"), "run\n");
}
