//! Topologies: how the load client reaches the upstream. Direct, iron-proxy
//! (MITM through `https_listen`, MITM through a CONNECT tunnel, MITM of a
//! client redirected by eBPF interception) and the peers (see
//! [`super::peers`]). Each proxy is a fresh process, stopped by PID when its
//! [`Running`] is dropped; the eBPF topology's cgroup and pins go after it.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::certs::{Certs, UPSTREAM_NAME};
use super::load::Route;
use super::procstat::{alive, Watch};
use super::sandbox::{BenchCgroup, PinDir};

/// One way of reaching the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Client straight to the upstream.
    Direct,
    /// iron-proxy MITM, the client connecting to `https_listen` (as DNS interception does).
    IronHttps,
    /// iron-proxy MITM inside an HTTP CONNECT tunnel on `tunnel_listen`.
    IronConnect,
    /// iron-proxy MITM of a client with no proxy settings, in a bench
    /// cgroup whose connects iron-proxy's eBPF programs redirect to its
    /// transparent listener.
    IronIntercept,
    /// squid-openssl with ssl-bump (CONNECT).
    Squid,
    /// mitmproxy (mitmdump, regular mode, CONNECT).
    Mitmproxy,
    /// tinyproxy: a CONNECT tunnel without MITM (TLS is end to end).
    Tinyproxy,
    /// hudsucker (Rust, hyper + rustls) MITM over CONNECT, with TCP_NODELAY.
    Hudsucker,
}

impl Kind {
    /// Every topology, in report order.
    pub const ALL: [Kind; 8] = [
        Kind::Direct,
        Kind::IronHttps,
        Kind::IronConnect,
        Kind::IronIntercept,
        Kind::Squid,
        Kind::Mitmproxy,
        Kind::Tinyproxy,
        Kind::Hudsucker,
    ];

    /// The name used in results.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::IronHttps => "iron-https",
            Kind::IronConnect => "iron-connect",
            Kind::IronIntercept => "iron-intercept",
            Kind::Squid => "squid-bump",
            Kind::Mitmproxy => "mitmproxy",
            Kind::Tinyproxy => "tinyproxy-tunnel",
            Kind::Hudsucker => "hudsucker",
        }
    }

    /// True for the third-party proxies.
    pub fn is_peer(self) -> bool {
        matches!(
            self,
            Kind::Squid | Kind::Mitmproxy | Kind::Tinyproxy | Kind::Hudsucker
        )
    }
}

/// What starting a topology needs.
pub struct Env<'a> {
    /// Scratch directory for configs and logs.
    pub work: &'a Path,
    /// Certificates.
    pub certs: &'a Certs,
    /// The upstream's address (port 443).
    pub upstream: SocketAddr,
    /// The bench DNS responder (answers every A query with the upstream's IP).
    pub dns: SocketAddr,
    /// The iron-proxy binary.
    pub proxy_bin: &'a Path,
    /// Python virtualenv for mitmproxy.
    pub venv: PathBuf,
    /// Build directory of the hudsucker peer.
    pub peer_build: PathBuf,
    /// Keep iron-proxy's stderr (operational log and audit records) in
    /// `<work>/<topology>/stderr.log` instead of /dev/null.
    pub proxy_log: bool,
    /// A `secrets` transform injects [`BENCH_KEY`] into every request.
    pub secrets: bool,
}

/// The key `--secrets` has iron-proxy inject (40 bytes, as an API key).
pub const BENCH_KEY: &str = "sk-live_ABCdef0123456789abcdefghijklmnop";

/// A started topology.
pub struct Running {
    /// How the client reaches the upstream through it.
    pub route: Route,
    /// The proxy process, if there is one.
    pub watch: Option<Watch>,
    /// The proxy's version string, for the report.
    pub version: String,
    /// Kept to stop the process when dropped.
    pub _child: Option<ChildGuard>,
    /// The eBPF topology's cgroup and pins, dropped after the proxy.
    pub intercept: Option<Intercepted>,
}

/// What the eBPF topology created: the load client must run in `cgroup`.
pub struct Intercepted {
    /// iron-proxy's pin directory (detached on drop).
    pub pins: PinDir,
    /// The cgroup iron-proxy intercepts (removed on drop).
    pub cgroup: BenchCgroup,
}

impl Intercepted {
    /// The pinned `redirected` counter: connects sent to the transparent listener.
    pub fn redirected(&self) -> Option<u64> {
        iron_proxy::intercept::Interceptor::status(self.pins.path())
            .ok()?
            .counters
            .map(|c| c.redirected)
    }
}

/// Stops a child we started, by its PID: SIGTERM, then SIGKILL after 3s.
pub struct ChildGuard {
    child: Child,
}

impl ChildGuard {
    /// Guards `child`.
    pub fn new(child: Child) -> Self {
        ChildGuard { child }
    }

    /// The child's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill() on a PID we spawned and have not yet reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        reap_within(&mut self.child, Duration::from_secs(3));
    }
}

/// Waits up to `grace` for `child` (ours) to exit, then kills it; reaps it either way.
pub fn reap_within(child: &mut Child, grace: Duration) {
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The client's way straight to the upstream.
pub fn direct_route(env: &Env<'_>) -> Route {
    Route {
        addr: env.upstream,
        connect: None,
        host: UPSTREAM_NAME.into(),
    }
}

/// Starts `kind`.
pub fn start(kind: Kind, env: &Env<'_>) -> Result<Running> {
    match kind {
        Kind::Direct => Ok(Running {
            route: direct_route(env),
            watch: None,
            version: String::new(),
            _child: None,
            intercept: None,
        }),
        Kind::IronHttps | Kind::IronConnect | Kind::IronIntercept => start_iron(kind, env),
        Kind::Squid => super::peers::start_squid(env),
        Kind::Mitmproxy => super::peers::start_mitmproxy(env),
        Kind::Tinyproxy => super::peers::start_tinyproxy(env),
        Kind::Hudsucker => super::peers::start_hudsucker(env),
    }
}

fn start_iron(kind: Kind, env: &Env<'_>) -> Result<Running> {
    let dir = env.work.join(kind.name());
    std::fs::create_dir_all(&dir)?;
    let https = free_port(false)?;
    let tunnel = free_port(false)?;
    let http = free_port(false)?;
    let dns = free_port(true)?;
    let metrics = free_port(false)?;
    let transparent = free_port(false)?;
    // The client connects to the upstream itself, which must be on loopback
    // (or in a bench netns): nothing else is ever a destination.
    if kind == Kind::IronIntercept && !env.upstream.ip().is_loopback() {
        bail!("the upstream {} is not on loopback", env.upstream);
    }
    // Created before the proxy starts, dropped after it stops.
    let intercept = match kind {
        Kind::IronIntercept => Some(Intercepted {
            pins: PinDir::new()?,
            cgroup: BenchCgroup::new()?,
        }),
        _ => None,
    };
    let intercept_block = match &intercept {
        Some(i) => format!(
            "intercept:\n  cgroups: [\"{}\"]\n  listen: \"127.0.0.1:{transparent}\"\n  dns: false\n  pin_path: \"{}\"\n",
            i.cgroup.path().display(),
            i.pins.path().display()
        ),
        None => String::new(),
    };
    let secrets_block = if env.secrets {
        format!(
            "  - name: secrets\n    config:\n      secrets:\n        - source: {{type: env, var: BENCH_KEY}}\n          inject:\n            header: \"X-Api-Key\"\n          rules:\n            - host: \"{UPSTREAM_NAME}\"\n"
        )
    } else {
        String::new()
    };
    // The proxy resolves the upstream's name through the bench DNS responder, so
    // no system file is touched.
    let config = format!(
        r#"dns:
  listen: "127.0.0.1:{dns}"
  proxy_ip: "127.0.0.1"
  upstream_resolver: "{resolver}"
proxy:
  http_listen: "127.0.0.1:{http}"
  https_listen: "127.0.0.1:{https}"
  tunnel_listen: "127.0.0.1:{tunnel}"
  upstream_deny_cidrs: {deny}
tls:
  mode: mitm
  ca_cert: "{ca_cert}"
  ca_key: "{ca_key}"
transforms:
  - name: allowlist
    config:
      domains: ["{UPSTREAM_NAME}"]
{secrets_block}metrics:
  listen: "127.0.0.1:{metrics}"
log:
  level: warn
{intercept_block}"#,
        resolver = env.dns,
        deny = super::bench_deny_yaml(),
        ca_cert = env.certs.mitm_ca_cert.display(),
        ca_key = env.certs.mitm_ca_key.display(),
    );
    let cfg_path = dir.join("proxy.yaml");
    std::fs::write(&cfg_path, config)?;
    // The audit log (one JSON line per request) goes to stderr: /dev/null
    // unless asked, or a full run would write gigabytes.
    let log = dir.join("stderr.log");
    let stderr = if env.proxy_log {
        Stdio::from(std::fs::File::create(&log)?)
    } else {
        Stdio::null()
    };
    let child = Command::new(env.proxy_bin)
        .arg("--config")
        .arg(&cfg_path)
        .env("SSL_CERT_FILE", &env.certs.upstream_ca)
        .env("BENCH_KEY", BENCH_KEY)
        .env_remove("SSL_CERT_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("starting {}", env.proxy_bin.display()))?;
    let guard = ChildGuard::new(child);
    let listen = SocketAddr::from((Ipv4Addr::LOCALHOST, https));
    let tunnel_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, tunnel));
    let transparent_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, transparent));
    let mut addrs = vec![listen, tunnel_addr];
    if let Some(i) = &intercept {
        addrs.push(transparent_addr);
        wait_listening(guard.pid(), &addrs, &log)?;
        wait_attached(guard.pid(), i)?;
    } else {
        wait_listening(guard.pid(), &addrs, &log)?;
    }
    // The listeners answer 503 until start-up is over; measure from then.
    wait_ready(
        guard.pid(),
        SocketAddr::from((Ipv4Addr::LOCALHOST, metrics)),
    )?;
    let route = match kind {
        // No proxy settings: the client dials the upstream, the kernel redirects.
        Kind::IronIntercept => Route {
            addr: env.upstream,
            connect: None,
            host: UPSTREAM_NAME.into(),
        },
        Kind::IronHttps => Route {
            addr: listen,
            connect: None,
            host: UPSTREAM_NAME.into(),
        },
        _ => Route {
            addr: tunnel_addr,
            connect: Some(format!("{UPSTREAM_NAME}:443")),
            host: UPSTREAM_NAME.into(),
        },
    };
    Ok(Running {
        route,
        watch: Some(Watch { pid: guard.pid() }),
        version: format!("iron-proxy {}", iron_proxy::VERSION),
        _child: Some(guard),
        intercept,
    })
}

/// Waits until iron-proxy's links are pinned and attached to the bench cgroup.
fn wait_attached(pid: u32, i: &Intercepted) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = iron_proxy::intercept::Interceptor::status(i.pins.path());
        if let Ok(st) = &st {
            let ours = |l: &iron_proxy::intercept::LinkStatus| {
                l.attached && l.cgroup_path.as_deref() == Some(i.cgroup.path())
            };
            if st.links.iter().any(|l| l.hook == "connect4" && ours(l)) {
                return Ok(());
            }
        }
        if !alive(pid) {
            bail!("iron-proxy exited before attaching its programs (rerun with --proxy-log)");
        }
        if Instant::now() > deadline {
            bail!(
                "iron-proxy did not attach to {} within 30s",
                i.cgroup.path().display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until iron-proxy's `/readyz` (on its metrics listener) answers 200.
fn wait_ready(pid: u32, metrics: SocketAddr) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if iron_proxy_tests::proxy::readyz_ok(metrics) {
            return Ok(());
        }
        if !alive(pid) {
            bail!("iron-proxy exited before it was ready (rerun with --proxy-log)");
        }
        if Instant::now() > deadline {
            bail!("iron-proxy was not ready within 30s (http://{metrics}/readyz)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A free loopback port (free for UDP too when `udp`), from the e2e harness:
/// below the ephemeral range, so no client socket of the load takes it first.
pub fn free_port(udp: bool) -> Result<u16> {
    match iron_proxy_tests::ports::try_free_port(Ipv4Addr::LOCALHOST.into(), udp) {
        Some(port) => Ok(port),
        None => bail!("no free loopback port"),
    }
}

/// Waits until every address accepts TCP, failing early if `pid` exits.
pub fn wait_listening(pid: u32, addrs: &[SocketAddr], log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for addr in addrs {
        loop {
            if std::net::TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if !alive(pid) {
                let tail = std::fs::read_to_string(log)
                    .unwrap_or_else(|_| "(no log kept: rerun with --proxy-log)".into());
                let tail: String = tail.lines().rev().take(15).collect::<Vec<_>>().join("\n");
                bail!("process {pid} exited before listening on {addr}; log tail (newest first):\n{tail}");
            }
            if Instant::now() > deadline {
                bail!("process {pid} did not listen on {addr} within 30s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}
