//! The fixture shared by the interception and bypass tests: a proxy intercepting a fresh
//! test cgroup ([`Lab`]), and a socket prober that workloads run ([`PROBE`]).

use std::net::IpAddr;

use iron_proxy_tests::process::run_with_timeout;
use iron_proxy_tests::*;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// A proxy intercepting one test cgroup. Fields drop in order: the proxy stops, then the
/// pins are detached, then the cgroup is removed.
pub(crate) struct Lab {
    pub px: ProxyProcess,
    pub pins: PinGuard,
    pub cg: TestCgroup,
    pub config: Value,
}

/// The base config: `httpbin.test` allowed; DNS answers with the veth's host side (a
/// fake-internet address, so a workload following it is intercepted, not denied as loopback);
/// the transparent listener on an ephemeral loopback port.
pub(crate) fn base_config(net: &FakeInternet, cg: &TestCgroup, pins: &PinGuard) -> Value {
    json!({
        "transforms": [{"name": "allowlist", "config": {"domains": ["httpbin.test"]}}],
        "dns": {"proxy_ip": net.host_side_v4().to_string()},
        "intercept": {
            "cgroups": [cg.path()],
            "listen": "127.0.0.1:0",
            "pin_path": pins.path(),
        },
    })
}

impl Lab {
    /// Starts a proxy intercepting a fresh cgroup with [`base_config`].
    pub fn start(net: &FakeInternet) -> Self {
        Self::start_with(net, |_| {})
    }

    /// Like [`Lab::start`], after `edit` changed the config.
    pub fn start_with(net: &FakeInternet, edit: impl FnOnce(&mut Value)) -> Self {
        Self::start_in(net, edit, false)
    }

    /// Like [`Lab::start`], with the proxy itself started inside the cgroup it intercepts.
    pub fn start_inside(net: &FakeInternet) -> Self {
        Self::start_in(net, |_| {}, true)
    }

    fn start_in(net: &FakeInternet, edit: impl FnOnce(&mut Value), inside: bool) -> Self {
        let cg = TestCgroup::new();
        let pins = PinGuard::new();
        let mut config = base_config(net, &cg, &pins);
        edit(&mut config);
        let mut proxy = Proxy::with(config.clone()).resolver(net);
        if inside {
            proxy = proxy.in_cgroup(cg.path());
        }
        let px = start_intercepting(proxy);
        Self {
            px,
            pins,
            cg,
            config,
        }
    }

    /// curl in the cgroup, trusting the proxy's CA.
    pub fn curl(&self, args: &[&str]) -> WorkloadCurl {
        workload_curl(&self.px, &self.cg, args)
    }

    /// The audit record for the request with this path.
    pub fn audit_for(&self, path: &str) -> AuditRecord {
        audit_for(&self.px, path)
    }
}

/// curl in `cg` with `args`, trusting `px`'s CA.
pub(crate) fn workload_curl(px: &ProxyProcess, cg: &TestCgroup, args: &[&str]) -> WorkloadCurl {
    let mut all = vec!["--cacert", px.ca()];
    all.extend_from_slice(args);
    cg.curl(all)
}

/// `px`'s audit record for the request with this path.
pub(crate) fn audit_for(px: &ProxyProcess, path: &str) -> AuditRecord {
    px.wait_for_audit(|a| a.path() == Some(path))
}

/// `iron-proxy intercept ACTION -config <px's config>`: (exit, stdout+stderr).
pub(crate) fn intercept_cmd(px: &ProxyProcess, action: &str) -> (i32, String) {
    let config = px.config_path().as_os_str();
    intercept_args(&[action.as_ref(), "-config".as_ref(), config])
}

/// `iron-proxy intercept ARGS...`: (exit, stdout+stderr).
pub(crate) fn intercept_args(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let mut cmd = std::process::Command::new(paths::iron_proxy_bin());
    cmd.arg("intercept").args(args);
    let out = run_with_timeout("intercept", &mut cmd, std::time::Duration::from_secs(20));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.exit, text)
}

/// Starts the proxy and waits until interception is in force: the transparent listener is
/// logged only after the programs are attached and the proxy is ready.
pub(crate) fn start_intercepting(proxy: Proxy) -> ProxyProcess {
    let px = proxy.start();
    px.wait_for_log(|l| l.contains("listening") && l.contains("transparent"));
    px
}

/// Waits until the proxy process has exited (after a SIGKILL).
pub(crate) fn wait_stopped(px: &mut ProxyProcess) {
    wait_until(
        std::time::Duration::from_secs(5),
        "the proxy to exit",
        || (!px.is_running()).then_some(()),
    );
}

/// `name:port:ip` for `curl --resolve` (IPv6 in brackets).
pub(crate) fn resolve(name: &str, port: u16, ip: impl Into<IpAddr>) -> String {
    match ip.into() {
        IpAddr::V4(v4) => format!("{name}:{port}:{v4}"),
        IpAddr::V6(v6) => format!("{name}:{port}:[{v6}]"),
    }
}

/// Socket probes run by a workload: each argument is `kind,host,port`; prints a JSON object
/// mapping each argument to `"ok"` or the errno. Kinds: `tcp` (connect), `tcplo` (connect
/// bound to `lo`, so that nothing could leave the machine even if interception were off),
/// `udp` (sendto), `udpconnect` (connect + send), `raw` (raw ICMP socket), `packet`
/// (AF_PACKET socket; nothing is sent), `sctp`/`mptcp`/`udplite`/`ping` (socket creation),
/// `tfo` (TCP Fast Open `sendto` without `connect`; prints the status line it got back),
/// `udpconnect-sendto` (UDP connected to port 53, then `sendto` another port).
pub(crate) const PROBE: &str = r#"
import json, socket, sys
def fam(h): return socket.AF_INET6 if ':' in h else socket.AF_INET
out = {}
for spec in sys.argv[1:]:
    kind, host, port = spec.split(',')
    try:
        if kind in ('tcp', 'tcplo'):
            s = socket.socket(fam(host), socket.SOCK_STREAM)
            s.settimeout(5)
            if kind == 'tcplo':
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'lo')
            s.connect((host, int(port)))
        elif kind == 'udp':
            s = socket.socket(fam(host), socket.SOCK_DGRAM)
            s.sendto(b'x', (host, int(port)))
        elif kind == 'udpconnect':
            s = socket.socket(fam(host), socket.SOCK_DGRAM)
            s.connect((host, int(port)))
            s.send(b'x')
        elif kind == 'raw':
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        elif kind == 'raw6':
            socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        elif kind == 'packet':
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
        elif kind in ('sctp', 'mptcp', 'udplite', 'ping'):
            proto = {'sctp': 132, 'mptcp': 262, 'udplite': 136, 'ping': 1}[kind]
            typ = socket.SOCK_DGRAM if kind in ('udplite', 'ping') else socket.SOCK_STREAM
            socket.socket(socket.AF_INET, typ, proto)
        elif kind == 'tfo':
            s = socket.socket(fam(host), socket.SOCK_STREAM)
            s.sendto(b'GET /anything/tfo HTTP/1.1\r\nHost: unlisted.test\r\nConnection: close\r\n\r\n', socket.MSG_FASTOPEN, (host, int(port)))
            s.settimeout(5)
            out[spec] = s.recv(100).split(b'\r\n')[0].decode()
            continue
        elif kind == 'udpconnect-sendto':
            s = socket.socket(fam(host), socket.SOCK_DGRAM)
            s.connect((host, 53))
            s.sendto(b'x', (host, int(port)))
        out[spec] = 'ok'
    except OSError as e:
        out[spec] = e.errno
print(json.dumps(out))
"#;

/// Runs [`PROBE`] in `cg` and returns `spec → result` (`"ok"` or an errno).
pub(crate) fn probe(cg: &TestCgroup, specs: &[String]) -> Value {
    let r = cg.python(PROBE, specs);
    r.assert_ok();
    r.json()
}

pub(crate) const EPERM: i64 = 1;

/// Panics unless every spec's result is `expected`.
pub(crate) fn assert_probes(results: &Value, specs: &[String], expected: Value, why: &str) {
    for s in specs {
        assert_eq!(results[s], expected, "{s}: {why}; all results: {results}");
    }
}

/// `dig` at a fake-internet address where no DNS server runs, over UDP and TCP, from the
/// workload cgroup: the interception must hand both to the proxy's DNS server, which answers
/// with its own address (`dns.proxy_ip`).
pub(crate) fn assert_foreign_dns_answered_by_the_proxy(cg: &TestCgroup, net: &FakeInternet) {
    let foreign = net.add_host();
    let expected = net.host_side_v4().to_string();
    for transport in ["+notcp", "+tcp"] {
        let at = format!("@{}", foreign.v4);
        let ran = cg.dig(&[
            &at,
            "example.test",
            "A",
            "+short",
            "+time=3",
            "+tries=1",
            transport,
        ]);
        assert_eq!(
            ran.stdout.trim(),
            expected,
            "dig {transport} at a foreign resolver must get the proxy's answer (dns.proxy_ip): {ran}"
        );
    }
}

/// With `dns.proxy_ip: 127.0.0.1` (what `iron-proxy init -intercept-dns` writes), inside
/// the default deny list (127.0.0.0/8): a stub resolver on loopback (`127.0.0.53`, as on
/// Ubuntu) and a foreign one are answered by the proxy, over UDP and TCP; a connection
/// that follows the answer reaches `up` through the proxy, by name; loopback itself stays
/// out of reach (a request to 127.0.0.1 is refused by the proxy, a connect to another
/// loopback address fails with `refused`, the errno of the interception mode).
pub(crate) fn assert_loopback_answer_followed(
    px: &ProxyProcess,
    cg: &TestCgroup,
    net: &FakeInternet,
    up: &UpstreamHandle,
    refused: i64,
) {
    let foreign = net.add_host().v4.to_string();
    for resolver in ["127.0.0.53", foreign.as_str()] {
        for transport in ["+notcp", "+tcp"] {
            let at = format!("@{resolver}");
            let ran = cg.dig(&[
                &at,
                "httpbin.test",
                "A",
                "+short",
                "+time=3",
                "+tries=1",
                transport,
            ]);
            assert_eq!(ran.stdout.trim(), "127.0.0.1", "{at} {transport}: {ran}");
        }
    }

    let r = workload_curl(
        px,
        cg,
        &[
            "--resolve",
            &resolve("httpbin.test", 443, std::net::Ipv4Addr::LOCALHOST),
            "https://httpbin.test/anything/answer",
        ],
    );
    assert_eq!(
        r.expect_status(200).json()["upstream"],
        "httpbin.test",
        "{r}"
    );
    up.wait_for_request(|q| q.path() == "/anything/answer");
    let rec = audit_for(px, "/anything/answer");
    assert!(rec.is_allowed(), "{rec}");
    assert_eq!(rec.str("original_dst"), Some("127.0.0.1:443"), "{rec}");

    let r = workload_curl(px, cg, &["http://127.0.0.1/anything/loopback"]);
    assert_ne!(r.status, 200, "{r}");
    let rec = audit_for(px, "/anything/loopback");
    assert!(!rec.is_allowed(), "{rec}");
    let other = vec!["tcp,127.0.0.2,80".to_string()];
    assert_probes(
        &probe(cg, &other),
        &other,
        json!(refused),
        "loopback other than the DNS answer must be refused",
    );
}

/// `n` concurrent redirected connections from the workload cgroup to `up` on ports
/// `base..base+n`: every one is answered (a 421 naming its own port), and its audit record
/// names its own original destination.
pub(crate) fn assert_concurrent_origins_kept(
    cg: &TestCgroup,
    px: &ProxyProcess,
    up: &UpstreamHandle,
    base: u16,
    n: u16,
) {
    let out = cg.python(MANY, [up.ip().to_string(), base.to_string(), n.to_string()]);
    out.assert_ok();
    assert_eq!(out.json()["ok"], json!(n), "{out}");

    // The last connections' records may come after the client has exited.
    px.wait_for_audits(usize::from(n), |a| {
        a.path().is_some_and(|p| p.starts_with("/anything/c"))
    });
    let audit = px.audit();
    let mut wrong = Vec::new();
    for k in 0..n {
        let path = format!("/anything/c{k}");
        let want = format!("{}:{}", up.ip(), base + k);
        match audit.find(|a| a.path() == Some(path.as_str())) {
            Some(rec) if rec.str("original_dst") == Some(want.as_str()) => {}
            other => wrong.push((k, other.map(|r| r.to_string()))),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} connections lost their original destination, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(3)]
    );
}

/// Opens N connections at once to distinct ports of one fake-internet address, each asking
/// for a distinct path with `Host: httpbin.test:80`, and reports which were refused (421)
/// for their own original port: the proxy kept each connection's destination apart.
pub(crate) const MANY: &str = r#"
import asyncio, json, sys
ip, base, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
async def one(k):
    r, w = await asyncio.open_connection(ip, base + k)
    w.write(('GET /anything/c%d HTTP/1.1\r\nHost: httpbin.test:80\r\nConnection: close\r\n\r\n' % k).encode())
    await w.drain()
    data = await r.read()
    w.close()
    head, _, body = data.partition(b'\r\n\r\n')
    # Host names port 80, not the port it connected to: the proxy refuses it
    # (421), naming the connection's own original destination port.
    return head.startswith(b'HTTP/1.1 421') and (b'destination port %d' % (base + k)) in body
async def main():
    conns = await asyncio.gather(*(one(k) for k in range(n)), return_exceptions=True)
    bad = [k for k, ok in enumerate(conns) if ok is not True]
    print(json.dumps({'ok': n - len(bad), 'bad': bad[:10], 'errors': [str(conns[k]) for k in bad[:3]]}))
asyncio.run(main())
"#;

/// Reloads `px` (SIGHUP) with `config`'s `upstream_deny_cidrs` replaced by `ip/32`, and
/// waits until the proxy says the kernel deny list moved with it.
pub(crate) fn reload_kernel_deny(px: &mut ProxyProcess, config: &Value, ip: IpAddr) {
    let mut config = config.clone();
    config["proxy"]["upstream_deny_cidrs"] = json!([format!("{ip}/32")]);
    px.rewrite_config(config);
    px.signal(Signal::SIGHUP);
    px.wait_for_log(|l| l.contains("kernel deny list reloaded"));
}

/// The kernel's origin-by-socket-cookie map (`iron_cookie_origin`), read and written from the
/// test through its pin, as the programs see it.
pub(crate) struct CookieOrigins {
    map: aya::maps::HashMap<aya::maps::MapData, u64, ebpf_common::Origin>,
}
/// How many origins the map holds.
pub(crate) const COOKIE_ORIGINS_MAX: u64 = ebpf_common::limits::IRON_COOKIE_ORIGINS_MAX as u64;

impl CookieOrigins {
    pub fn open(pins: &PinGuard) -> Self {
        let path = pins
            .path()
            .join("maps")
            .join(ebpf_common::map::IRON_COOKIE_ORIGIN);
        let data = aya::maps::MapData::from_pin(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        let map = aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data))
            .expect("iron_cookie_origin is a hash of u64 to an origin");
        Self { map }
    }

    /// Every entry's original destination, `ip:port` (IPv4 shown plain), sorted.
    pub fn destinations(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .map
            .iter()
            .map(|kv| {
                let (_, o) = kv.expect("reading iron_cookie_origin");
                let ip = std::net::Ipv6Addr::from(o.addr);
                let ip: IpAddr = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
                let port = u16::from_be(o.port);
                format!("{ip}:{port}")
            })
            .collect();
        out.sort();
        out
    }

    /// Adds an entry under a cookie no socket has (cookies count up from 1).
    pub fn insert_dummy(&mut self, n: u64) -> Result<(), aya::maps::MapError> {
        self.map
            .insert(u64::MAX - n, ebpf_common::Origin::default(), 0)
    }
}

/// Holds a redirected IPv4 and a redirected v4-mapped IPv6 TCP connection from the workload
/// to `ip:80`, one request answered on each, and reports what `getpeername` said and the
/// status lines. It writes its report to `argv[2]`, then waits for `argv[3]` to exist before
/// it closes the sockets and exits.
const HOLD: &str = r#"
import json, os, socket, sys, time
ip, out, go = sys.argv[1], sys.argv[2], sys.argv[3]
def ask(s, tag):
    s.sendall(('GET /anything/%s HTTP/1.1\r\nHost: httpbin.test\r\n\r\n' % tag).encode())
    data = b''
    while b'\r\n\r\n' not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b'\r\n')[0].decode()
s4 = socket.create_connection((ip, 80), timeout=10)
s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s6.settimeout(10)
s6.connect(('::ffff:' + ip, 80))
report = {
    'v4': ['%s:%d' % s4.getpeername()[:2], ask(s4, 'held-v4')],
    'v6': ['%s:%d' % s6.getpeername()[:2], ask(s6, 'held-v6')],
}
with open(out + '.tmp', 'w') as f:
    json.dump(report, f)
os.rename(out + '.tmp', out)
deadline = time.time() + 20
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.02)
s4.close()
s6.close()
"#;

/// A workload running [`HOLD`].
pub(crate) struct HeldSockets {
    child: iron_proxy_tests::process::ChildGuard,
    go: std::path::PathBuf,
    /// What it reported: `{"v4": [peer, status line], "v6": [...]}`.
    pub report: Value,
}

impl HeldSockets {
    /// Starts it and waits for its report.
    pub fn open(cg: &TestCgroup, ip: std::net::Ipv4Addr) -> Self {
        let dir = cg.shared_dir();
        let out = dir.join("held.json");
        let go = dir.join("held.go");
        let _ = std::fs::remove_file(&out);
        let _ = std::fs::remove_file(&go);
        let mut child = cg
            .command(iron_proxy_tests::cgroup::system_python())
            .arg("-c")
            .arg(HOLD)
            .arg(ip.to_string())
            .arg(&out)
            .arg(&go)
            .spawn();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let report = loop {
            if let Ok(text) = std::fs::read_to_string(&out) {
                break serde_json::from_str(&text).expect("the workload's report is JSON");
            }
            if let Some(status) = child.try_status() {
                panic!("the workload exited ({status}) before it reported");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no report from the workload"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        Self { child, go, report }
    }

    /// Lets it close its sockets and waits until it has exited.
    pub fn close(mut self) {
        std::fs::write(&self.go, b"").expect("writing the go file");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while self.child.try_status().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the workload did not exit"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
