//! The real clients of coding agents and CI runners through the MITM: git over smart HTTP
//! (clone, fetch, push; the credential swapped in by the proxy), Node (`https` and undici's
//! `fetch`), pip and npm, each against a local origin (tests/client_peer.py: `git
//! http-backend`, a static package index and registry) in the fake internet.
//!
//! Each client reaches the proxy the three ways a workload does: through the CONNECT listener
//! (its own proxy setting); through `https_listen`, with the origin's name resolved to the
//! listener (a private `/etc/hosts`, [`HostsFile`]; the listener binds port 443 of a loopback
//! address of its own); and transparently, with no proxy setting at all, from a test cgroup
//! under eBPF interception ([`Via::Transparent`]): its DNS goes to the proxy's DNS server, which
//! answers every name with `dns.proxy_ip`, and its connection there to the transparent
//! listener. Every test compares the origin's request log with the audit log: one record per
//! request, with the same method, path and status, and the refused ones with the proxy's
//! status and reason; under interception every record also names the workload's cgroup and
//! the address the proxy's DNS gave it as the original destination.

mod git;
mod node;
mod npm;
mod pip;
mod requests;
mod uploads;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use crate::intercept::lab::start_intercepting;
use iron_proxy_tests::netns::NetProcess;
use iron_proxy_tests::process::{run_with_timeout, Finished};
use iron_proxy_tests::*;
use serde_json::Value;

/// The origin's real credential (what the proxy holds) and the placeholder the client holds.
const REAL_TOKEN: &str = "ghs-real-token-4c1d9e";
const PROXY_TOKEN: &str = "proxy-git-token";

/// How the client reaches the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// The client's own proxy setting, to `tunnel_listen` (HTTP CONNECT).
    Connect,
    /// The origin's name resolves to `https_listen` (as DNS interception would answer).
    HttpsListen,
    /// No proxy setting and no hosts file: the client runs in a test cgroup whose sockets
    /// the proxy intercepts (eBPF), as root, or as `uid` with `intercept.uids: [uid]` (only
    /// that user's sockets are taken). It resolves the origin's name through the system
    /// resolver, whose queries the kernel hands to the proxy's DNS server.
    Transparent { uid: Option<u32> },
}

/// Transparent interception of the cgroup's root processes.
const TRANSPARENT: Via = Via::Transparent { uid: None };
/// The unprivileged user of the uid-selected tests.
const NOBODY: u32 = 65534;

/// `tests/client_peer.py` on a fresh host of the fake internet, answering for `names`: HTTPS
/// on ports 443 and 8443, plain HTTP on 80.
struct Origin {
    _proc: NetProcess,
    root: PathBuf,
    log: PathBuf,
}

impl Origin {
    fn start(net: &FakeInternet, names: &[&str]) -> Self {
        static N: AtomicU8 = AtomicU8::new(0);
        let root = net
            .dir()
            .join(format!("origin-{}", N.fetch_add(1, Ordering::Relaxed)));
        for sub in ["git", "static"] {
            std::fs::create_dir_all(root.join(sub)).expect("origin dirs");
        }
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let leaf = net.ca().issue(&names, &root, "server");
        let log = root.join("requests.jsonl");
        std::fs::write(&log, "").expect("origin log");
        let (proc, addr) = net.python_peer("client_peer.py", 443, |host, cmd| {
            cmd.arg(host.v4.to_string())
                .arg("443,8443,plain:80")
                .arg(&leaf.cert)
                .arg(&leaf.key)
                .arg(&root)
                .arg(&log)
                .arg(REAL_TOKEN);
        });
        let records: Vec<(&str, Vec<IpAddr>)> = names
            .iter()
            .map(|n| (n.as_str(), vec![addr.ip()]))
            .collect();
        net.dns().set_all(&records);
        Self {
            _proc: proc,
            root,
            log,
        }
    }

    fn git_root(&self) -> PathBuf {
        self.root.join("git")
    }

    fn static_root(&self) -> PathBuf {
        self.root.join("static")
    }

    /// Every request the origin answered so far, in order.
    fn requests(&self) -> Vec<Value> {
        json_lines(&self.log)
    }

    /// Panics if the origin answered a request for `path`.
    fn assert_never(&self, path: &str) {
        if let Some(r) = self.requests().iter().find(|r| r["path"] == path) {
            panic!("the origin received {path}: {r}");
        }
    }
}

/// A loopback address whose port 443 is free, for `https_listen` (clients dial port 443 of
/// whatever the name resolves to). Each call gives another address.
fn listener_ip() -> Ipv4Addr {
    static NEXT: AtomicU8 = AtomicU8::new(0);
    let pid = std::process::id();
    for _ in 0..200 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let ip = Ipv4Addr::new(
            127,
            100 + (pid % 100) as u8,
            (pid / 100 % 250) as u8,
            10 + n,
        );
        if TcpListener::bind(SocketAddr::new(IpAddr::V4(ip), 443)).is_ok() {
            return ip;
        }
    }
    panic!("no loopback address with port 443 free");
}

/// A proxy for these tests: CONNECT on `tunnel_listen`, `https_listen` on port 443 of its
/// own loopback address, and `transforms` as given (YAML, indented for the `transforms:` key);
/// with [`Px::start_for`] a [`Via::Transparent`], also intercepting a test cgroup.
struct Px {
    px: ProxyProcess,
    /// Dropped after the proxy: the pins are detached, then the cgroup is removed.
    intercept: Option<Intercepted>,
    listen: Ipv4Addr,
    dir: tempfile::TempDir,
}

/// The workloads a [`Px`] intercepts.
struct Intercepted {
    _pins: PinGuard,
    cg: TestCgroup,
    uid: Option<u32>,
    /// The proxy's CA, readable by `uid`.
    ca: PathBuf,
    /// `dns.proxy_ip`: what the proxy's DNS server answers for every intercepted name.
    proxy_ip: Ipv4Addr,
}

impl Px {
    fn start(net: &FakeInternet, transforms: &str) -> Self {
        Self::start_with(net, transforms, None)
    }

    /// A proxy `via` reaches: for [`Via::Transparent`] one intercepting a fresh test cgroup
    /// (`uid` alone when given), its DNS server answering with the fake internet's side of
    /// the veth (so that a workload following the answer is intercepted, not refused as
    /// loopback).
    fn start_for(net: &FakeInternet, via: Via, transforms: &str) -> Self {
        let Via::Transparent { uid } = via else {
            return Self::start(net, transforms);
        };
        let cg = TestCgroup::new();
        let pins = PinGuard::new();
        let proxy_ip = net.host_side_v4();
        // The interception tests' `dns` and `intercept` sections (JSON is YAML too).
        let mut lab = crate::intercept::lab::base_config(net, &cg, &pins);
        if let Some(uid) = uid {
            lab["intercept"]["uids"] = serde_json::json!([uid]);
        }
        let intercept = format!("dns: {}\nintercept: {}\n", lab["dns"], lab["intercept"]);
        let mut px = Self::start_with(net, transforms, Some(&intercept));
        let ca = cg.share(px.px.ca());
        px.intercept = Some(Intercepted {
            _pins: pins,
            cg,
            uid,
            ca,
            proxy_ip,
        });
        px
    }

    fn start_with(net: &FakeInternet, transforms: &str, intercept: Option<&str>) -> Self {
        let listen = listener_ip();
        let config = format!(
            "proxy:\n  tunnel_listen: auto\n  https_listen: \"{listen}:443\"\n{}transforms:\n{transforms}",
            intercept.unwrap_or_default()
        );
        let proxy = Proxy::with(config)
            .resolver(net)
            .env("GIT_TOKEN", REAL_TOKEN)
            .env("NPM_TOKEN", REAL_TOKEN)
            .env("PIP_TOKEN", REAL_TOKEN)
            .env("API_TOKEN", REAL_TOKEN);
        let px = match intercept {
            Some(_) => start_intercepting(proxy),
            None => proxy.start(),
        };
        Self {
            px,
            intercept: None,
            listen,
            dir: tempfile::tempdir().expect("client dir"),
        }
    }

    /// The proxy's CA for a client to trust (a copy every uid can read when intercepting).
    fn client_ca(&self) -> &Path {
        match &self.intercept {
            Some(i) => &i.ca,
            None => Path::new(self.px.ca()),
        }
    }

    /// Under interception: `rec` is the transparent listener's, for a connection of the
    /// test cgroup's workload (its uid) to `dns.proxy_ip`, the address only the
    /// proxy's DNS server gives out: the client's lookup was answered by the proxy. Without
    /// interception, nothing.
    fn assert_intercepted(&self, rec: &AuditRecord) {
        let Some(i) = &self.intercept else {
            return;
        };
        assert_eq!(rec.str("mode"), Some("transparent"), "{rec}");
        let dst = rec.str("original_dst").unwrap_or_default();
        assert_eq!(
            dst.rsplit_once(':').map(|(ip, _)| ip),
            Some(i.proxy_ip.to_string().as_str()),
            "the client connected where the proxy's DNS answer sent it: {rec}"
        );
        assert_eq!(
            rec.pointer("/client/cgroup").and_then(Value::as_str),
            Some(i.cg.relative()),
            "{rec}"
        );
        assert_eq!(
            rec.pointer("/client/uid").and_then(Value::as_u64),
            Some(u64::from(i.uid.unwrap_or(0))),
            "{rec}"
        );
    }

    /// `http://127.0.0.1:PORT`, the CONNECT proxy URL.
    fn proxy_url(&self) -> String {
        format!("http://{}", self.px.tunnel_addr())
    }

    /// `program` as a client reaching the proxy `via`, with every proxy variable scrubbed
    /// (the caller sets the client's own proxy option for [`Via::Connect`]); for
    /// [`Via::HttpsListen`] `names` resolve to the HTTPS listener.
    fn command(&self, via: Via, names: &[&str], program: impl AsRef<OsStr>) -> Command {
        let mut cmd = match via {
            Via::Connect => Command::new(program),
            Via::Transparent { uid } => {
                let i = self
                    .intercept
                    .as_ref()
                    .expect("a transparent client needs a proxy from Px::start_for");
                assert_eq!(uid, i.uid, "the proxy intercepts another selection");
                let mut cmd = Command::new(program);
                i.cg.enter(&mut cmd, uid);
                cmd
            }
            Via::HttpsListen => {
                let map: Vec<(&str, IpAddr)> = names
                    .iter()
                    .map(|n| (*n, IpAddr::V4(self.listen)))
                    .collect();
                let dir = tempfile::Builder::new()
                    .prefix("hosts")
                    .tempdir_in(self.dir.path())
                    .expect("hosts dir")
                    .keep();
                HostsFile::new(&dir, &map).command(program)
            }
        };
        for var in iron_proxy_tests::client::PROXY_ENV.iter().chain(&[
            // Trust: each test names the proxy's CA itself. A bundle from the environment
            // (CI images set these) would win over a client's own option: requests lets
            // REQUESTS_CA_BUNDLE override pip's --cert on a connection without a proxy.
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "NODE_EXTRA_CA_CERTS",
        ]) {
            cmd.env_remove(var);
        }
        // pip's and npm's settings from the environment (an index, find-links, a cert).
        for (var, _) in std::env::vars_os() {
            let name = var.to_string_lossy().to_ascii_lowercase();
            if name.starts_with("pip_") || name.starts_with("npm_config_") {
                cmd.env_remove(&var);
            }
        }
        cmd
    }
}

impl std::ops::Deref for Px {
    type Target = ProxyProcess;
    fn deref(&self) -> &ProxyProcess {
        &self.px
    }
}

/// Runs `cmd` ([`CLIENT_TIMEOUT`] at most) and returns what it did.
fn run(cmd: &mut Command) -> Finished {
    let name = format!("{:?}", cmd.get_program());
    let out = run_with_timeout(&name, cmd, Duration::from_secs(CLIENT_TIMEOUT));
    assert!(
        !out.timed_out,
        "{cmd:?} timed out:\n{}\nits processes when it timed out:\n{}",
        text(&out),
        out.diagnosis
    );
    out
}

/// How long a client command may take (seconds) before it is killed and its state shown.
const CLIENT_TIMEOUT: u64 = 120;

fn text(out: &Finished) -> String {
    format!(
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        out.exit,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Finished) -> Finished {
    assert_eq!(out.exit, 0, "client failed:\n{}", text(&out));
    out
}

/// `(method, path, status)` of one exchange.
type Exchange = (String, String, u16);

/// Checks the audit log against the origin's log for `host`: every request the origin
/// answered has exactly one allowed record with its method, path and status, and the only
/// other records for `host` are the refusals in `refused` (method, path), each a 403 from the
/// allowlist (`not_allowlisted`). Under interception every record is also checked with
/// [`Px::assert_intercepted`]. Waits for the records of exchanges still closing.
fn assert_audit_matches_origin(px: &Px, origin: &Origin, host: &str, refused: &[(&str, &str)]) {
    let mut want: BTreeMap<Exchange, usize> = BTreeMap::new();
    for r in origin.requests() {
        let key = (
            r["method"].as_str().unwrap_or("").to_string(),
            r["path"].as_str().unwrap_or("").to_string(),
            u16::try_from(r["status"].as_u64().unwrap_or(0)).unwrap_or(0),
        );
        *want.entry(key).or_default() += 1;
    }
    let total = want.values().sum::<usize>() + refused.len();
    let records = wait_until(
        Duration::from_secs(10),
        "every exchange's audit record",
        || {
            let recs: Vec<AuditRecord> = px.audit().for_host(host).into_iter().cloned().collect();
            (recs.len() >= total).then_some(recs)
        },
    );
    let mut got: BTreeMap<Exchange, usize> = BTreeMap::new();
    let mut rejected = Vec::new();
    for rec in &records {
        px.assert_intercepted(rec);
        if rec.action() == Some("reject") {
            assert_allowlist_refusal(rec);
            rejected.push((
                rec.method().unwrap_or("").to_string(),
                rec.path().unwrap_or("").to_string(),
            ));
            continue;
        }
        assert!(rec.is_allowed(), "{rec}");
        let key = (
            rec.method().unwrap_or("").to_string(),
            rec.path().unwrap_or("").to_string(),
            rec.status_code().unwrap_or(0),
        );
        *got.entry(key).or_default() += 1;
    }
    assert_eq!(
        got,
        want,
        "one allowed audit record per request the origin answered (records:\n{})",
        records.iter().map(|r| format!("{r}\n")).collect::<String>()
    );
    let mut refused: Vec<(String, String)> = refused
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    refused.sort();
    rejected.sort();
    assert_eq!(rejected, refused, "the refusals' audit records");
}

/// Panics unless `rec` is the allowlist's refusal: reject, 403, `not_allowlisted`.
fn assert_allowlist_refusal(rec: &AuditRecord) {
    assert_eq!(rec.action(), Some("reject"), "{rec}");
    assert_eq!(rec.rejected_by(), Some("allowlist"), "{rec}");
    assert_eq!(rec.str("reason"), Some("not_allowlisted"), "{rec}");
    assert_eq!(rec.status_code(), Some(403), "{rec}");
}

/// Waits for `n` audit records of `host` and checks that there are exactly `n`, each the
/// allowlist's refusal.
fn assert_refused_by_allowlist(px: &Px, host: &str, n: usize) {
    let refused = wait_until(Duration::from_secs(10), "the refusals' records", || {
        let recs: Vec<AuditRecord> = px.audit().for_host(host).into_iter().cloned().collect();
        (recs.len() >= n).then_some(recs)
    });
    assert_eq!(refused.len(), n, "{refused:?}");
    for rec in &refused {
        assert_allowlist_refusal(rec);
        px.assert_intercepted(rec);
    }
}

/// Panics if the proxy's output holds `secret` anywhere.
fn assert_never_logged(px: &ProxyProcess, secret: &str) {
    for line in px.logs() {
        assert!(!line.contains(secret), "the proxy logged a secret: {line}");
    }
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("creating a directory");
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// `n` bytes no compressor shrinks (a fixed xorshift stream).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}
