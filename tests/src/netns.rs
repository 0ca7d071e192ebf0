//! `FakeInternet`: a network namespace joined to the host by a veth pair, standing in for the
//! internet.
//!
//! Each instance takes one /24 out of 198.18.0.0/15 (slot `k` in 0..512) and the ULA
//! `fdaa:k::/64`. The host side of the veth is `.1` / `::1`, the namespace side `.2` / `::2`,
//! and [`FakeInternet::add_host`] adds `.10`, `.11`, ... inside the namespace for servers with
//! distinct addresses. The namespace has no default route: nothing in it can reach anything
//! but the host side of its veth. Dropping the last handle kills every process left in the
//! namespace, deletes the veth and the namespace.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::ca::TestCa;
use crate::dnsmasq::Dnsmasq;
use crate::process::ChildGuard;

/// Number of /24 slots in 198.18.0.0/15.
const SLOTS: u32 = 512;
/// Prefix of every namespace name we create: `ipx-<pid>-<n>`.
const NS_PREFIX: &str = "ipx-";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// One address pair inside the fake internet, for a server that needs its own IPs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Host {
    /// IPv4 address, `198.18.x.n`.
    pub v4: Ipv4Addr,
    /// IPv6 address, `fdaa:k::n`.
    pub v6: Ipv6Addr,
}

impl Host {
    /// Both addresses.
    pub fn ips(&self) -> [IpAddr; 2] {
        [IpAddr::V4(self.v4), IpAddr::V6(self.v6)]
    }

    /// `v4:port` as a socket address.
    pub fn v4_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.v4), port)
    }

    /// `[v6]:port` as a socket address.
    pub fn v6_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(self.v6), port)
    }
}

/// A network namespace standing in for the internet. Cheap to clone; the namespace lives until
/// the last clone (and every upstream started in it) is dropped.
#[derive(Clone, Debug)]
pub struct FakeInternet {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    name: String,
    slot: u32,
    host_if: String,
    ns_if: String,
    next_host: AtomicU8,
    dir: tempfile::TempDir,
    ca: TestCa,
    dns: Mutex<Dnsmasq>,
}

impl FakeInternet {
    /// Creates the namespace, the veth pair and the addresses. Panics (with the failing `ip`
    /// command) when not root or when the kernel refuses.
    pub fn new() -> Self {
        assert!(
            nix::unistd::geteuid().is_root(),
            "FakeInternet needs root (network namespaces); start the test with require_root!()"
        );
        static SWEEP: Once = Once::new();
        SWEEP.call_once(sweep_stale_namespaces);

        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NS_PREFIX}{pid}-{n}");
        // Everything that can fail without kernel state comes first.
        let dir = crate::paths::scratch_dir(&n.to_string());
        let ca = TestCa::new(
            "iron-proxy test upstream CA",
            &dir.path().join("upstream-ca"),
        );
        ip(&["netns", "add", &name]);
        let offset = pid.wrapping_mul(37);
        let mut created = None;
        for attempt in 0..SLOTS {
            let slot = (offset + n * 7 + attempt) % SLOTS;
            let (host_if, ns_if) = (format!("ipxh{slot}"), format!("ipxn{slot}"));
            if Path::new("/sys/class/net").join(&host_if).exists() || subnet_in_use(slot) {
                continue;
            }
            // Creating the link is the atomic claim: it fails if another process won the race.
            let add = [
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ];
            if try_ip(&[&add[..], &["netns", &name]].concat()).is_ok() {
                created = Some((slot, host_if, ns_if));
                break;
            }
        }
        let Some((slot, host_if, ns_if)) = created else {
            let _ = try_ip(&["netns", "del", &name]);
            panic!("no free 198.18.0.0/15 slot for a fake internet");
        };
        let inner = Arc::new(Inner {
            dns: Mutex::new(Dnsmasq::new(&name, dir.path().join("dnsmasq"))),
            name,
            slot,
            host_if,
            ns_if,
            next_host: AtomicU8::new(10),
            dir,
            ca,
        });
        // From here on, Inner's Drop cleans up if a step panics.
        let net = Self { inner };
        net.configure();
        net
    }

    fn configure(&self) {
        let i = &*self.inner;
        let (h4, h6) = (self.host_side_v4(), self.host_side_v6());
        let (n4, n6) = (self.ns_side_v4(), self.ns_side_v6());
        ip(&["addr", "add", &format!("{h4}/24"), "dev", &i.host_if]);
        ip(&[
            "-6",
            "addr",
            "add",
            &format!("{h6}/64"),
            "dev",
            &i.host_if,
            "nodad",
        ]);
        ip(&["link", "set", &i.host_if, "up"]);
        let ns = ["-n", i.name.as_str()];
        ip(&[&ns[..], &["link", "set", "lo", "up"]].concat());
        ip(&[
            &ns[..],
            &["addr", "add", &format!("{n4}/24"), "dev", &i.ns_if],
        ]
        .concat());
        let v6 = format!("{n6}/64");
        ip(&[
            &ns[..],
            &["-6", "addr", "add", &v6, "dev", &i.ns_if, "nodad"],
        ]
        .concat());
        ip(&[&ns[..], &["link", "set", &i.ns_if, "up"]].concat());
    }

    /// The namespace name (`ipx-<pid>-<n>`), for `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The veth interface in the root namespace.
    pub fn host_interface(&self) -> &str {
        &self.inner.host_if
    }

    fn v4(&self, last: u8) -> Ipv4Addr {
        let k = self.inner.slot;
        // slot < 512, so both octets fit.
        Ipv4Addr::new(198, 18 + (k / 256) as u8, (k % 256) as u8, last)
    }

    fn v6(&self, last: u8) -> Ipv6Addr {
        Ipv6Addr::new(
            0xfdaa,
            self.inner.slot as u16,
            0,
            0,
            0,
            0,
            0,
            u16::from(last),
        )
    }

    /// Host (root namespace) side of the veth, `198.18.x.1`.
    pub fn host_side_v4(&self) -> Ipv4Addr {
        self.v4(1)
    }

    /// Host side of the veth, `fdaa:k::1`.
    pub fn host_side_v6(&self) -> Ipv6Addr {
        self.v6(1)
    }

    /// Namespace side of the veth, `198.18.x.2` (where the fake DNS listens).
    pub fn ns_side_v4(&self) -> Ipv4Addr {
        self.v4(2)
    }

    /// Namespace side of the veth, `fdaa:k::2`.
    pub fn ns_side_v6(&self) -> Ipv6Addr {
        self.v6(2)
    }

    /// Adds a fresh address pair inside the namespace (`.10`, `.11`, ... up to `.250`).
    pub fn add_host(&self) -> Host {
        let n = self.inner.next_host.fetch_add(1, Ordering::Relaxed);
        assert!(
            (10..=250).contains(&n),
            "too many hosts in one fake internet"
        );
        let host = Host {
            v4: self.v4(n),
            v6: self.v6(n),
        };
        let (name, dev) = (self.inner.name.as_str(), self.inner.ns_if.as_str());
        ip(&[
            "-n",
            name,
            "addr",
            "add",
            &format!("{}/24", host.v4),
            "dev",
            dev,
        ]);
        let v6 = format!("{}/64", host.v6);
        ip(&["-n", name, "-6", "addr", "add", &v6, "dev", dev, "nodad"]);
        host
    }

    /// A host whose TCP SYNs the namespace drops unanswered (an nft table inside the
    /// namespace, gone with it): a connect to it hangs until the dialer gives up.
    pub fn add_silent_host(&self) -> Host {
        let host = self.add_host();
        let table = format!(
            "table inet iron_silent_{n} {{\n chain input {{\n type filter hook input priority 0\n \
             ip daddr {v4} tcp flags syn drop\n ip6 daddr {v6} tcp flags syn drop\n }}\n}}\n",
            n = host.v4.octets()[3],
            v4 = host.v4,
            v6 = host.v6,
        );
        let out = self
            .command("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(table.as_bytes())?;
                c.wait_with_output()
            })
            .expect("running nft in the namespace");
        assert!(
            out.status.success(),
            "nft in the namespace: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        host
    }

    /// A `Command` that runs `program` inside the namespace (`ip netns exec NAME program`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.inner.name]).arg(program);
        cmd
    }

    /// Spawns `cmd` (built with [`FakeInternet::command`]); the process is stopped when the
    /// returned guard drops, and the namespace outlives it.
    pub fn spawn(&self, name: &str, cmd: &mut Command) -> NetProcess {
        NetProcess {
            child: ChildGuard::spawn(name, cmd),
            _net: self.clone(),
        }
    }

    /// Runs `script` (a path under the repository's `tests/`) with the test virtualenv's
    /// Python on a fresh host of this fake internet, and waits until it accepts TCP on
    /// `port` there (60 s). `args` adds the script's arguments, knowing the host; the
    /// process is stopped when the returned guard drops.
    pub fn python_peer(
        &self,
        script: &str,
        port: u16,
        args: impl FnOnce(&Host, &mut Command),
    ) -> (NetProcess, std::net::SocketAddr) {
        self.peer(
            self.command(crate::paths::venv_python()),
            script,
            port,
            args,
        )
    }

    /// [`FakeInternet::python_peer`] for a Node script, with the test packages
    /// ([`crate::paths::node_modules`]) on `NODE_PATH`.
    pub fn node_peer(
        &self,
        script: &str,
        port: u16,
        args: impl FnOnce(&Host, &mut Command),
    ) -> (NetProcess, std::net::SocketAddr) {
        let mut cmd = self.command("node");
        cmd.env("NODE_PATH", crate::paths::node_modules());
        self.peer(cmd, script, port, args)
    }

    fn peer(
        &self,
        mut cmd: Command,
        script: &str,
        port: u16,
        args: impl FnOnce(&Host, &mut Command),
    ) -> (NetProcess, std::net::SocketAddr) {
        let host = self.add_host();
        let addr = std::net::SocketAddr::new(IpAddr::V4(host.v4), port);
        cmd.arg(crate::paths::repo_root().join("tests").join(script));
        args(&host, &mut cmd);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let proc = self.spawn(script, &mut cmd);
        crate::wait_until(
            std::time::Duration::from_secs(60),
            &format!("{script} to listen"),
            || {
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200))
                    .ok()
            },
        );
        (proc, addr)
    }

    /// Scratch directory for this fake internet (certificates, logs), removed on drop.
    pub fn dir(&self) -> &Path {
        self.inner.dir.path()
    }

    /// The CA that signs every upstream's certificate.
    pub fn ca(&self) -> &TestCa {
        &self.inner.ca
    }

    /// PEM bundle of the upstream CA: give it to the proxy as `SSL_CERT_FILE`, and to clients
    /// that talk to upstreams directly (`curl --cacert`).
    pub fn ca_bundle(&self) -> PathBuf {
        self.inner.ca.cert_path()
    }

    /// The fake DNS server (dnsmasq in the namespace); see [`Dnsmasq`].
    pub fn dns(&self) -> MutexGuard<'_, Dnsmasq> {
        self.inner.dns.lock().expect("dns lock")
    }

    /// Address of the fake DNS server, for the proxy's `dns.upstream_resolver`. Starts dnsmasq
    /// if it is not running yet.
    pub fn resolver(&self) -> SocketAddr {
        let addr = SocketAddr::new(IpAddr::V4(self.ns_side_v4()), 53);
        self.dns().ensure_running(addr);
        addr
    }
}

impl Default for FakeInternet {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Ok(mut dns) = self.dns.lock() {
            dns.stop();
        }
        kill_namespace_processes(&self.name);
        let _ = try_ip(&["link", "del", &self.host_if]);
        let _ = try_ip(&["netns", "del", &self.name]);
    }
}

/// A process running inside a fake internet; stopped (by PID) on drop.
#[derive(Debug)]
pub struct NetProcess {
    /// The process itself.
    pub child: ChildGuard,
    _net: FakeInternet,
}

/// Kills what is still running in our namespace: only we start processes there.
fn kill_namespace_processes(name: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// The creator PID in `ipx-<pid>-...`, if `name` is one of ours.
fn creator_pid(name: &str) -> Option<u32> {
    name.strip_prefix(NS_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Removes namespaces, scratch dirs and `hung_fs.py` mounts left by earlier test processes
/// that died without cleaning up (their creator PID, part of the name, no longer exists).
fn sweep_stale_namespaces() {
    // First, so that a dead run's scratch dir holds no mount when it is removed.
    crate::hung_fs::detach_stale_mounts();
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if creator_pid(&name).is_some_and(|pid| !pid_alive(pid)) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if creator_pid(name).is_some_and(|pid| !pid_alive(pid)) {
            eprintln!("removing stale test namespace {name}");
            kill_namespace_processes(name);
            let _ = try_ip(&["netns", "del", name]);
        }
    }
}

/// Whether some interface already holds an address in slot `k`'s /24 (someone else's).
fn subnet_in_use(slot: u32) -> bool {
    let net = format!("198.{}.{}.0/24", 18 + slot / 256, slot % 256);
    Command::new("ip")
        .args(["-o", "-4", "addr", "show", "to", &net])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(true)
}

/// Runs `ip ARGS`, returning stderr on failure.
pub(crate) fn try_ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Runs `ip ARGS`, panicking with the command and its error on failure.
pub(crate) fn ip(args: &[&str]) {
    if let Err(e) = try_ip(args) {
        panic!("`ip {}` failed: {e}", args.join(" "));
    }
}
