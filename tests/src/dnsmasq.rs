//! The fake internet's DNS: dnsmasq inside the namespace, answering only for the names the
//! test registered (`--address=/name/ip`, no upstream servers, no /etc/hosts). It serves as
//! the proxy's `dns.upstream_resolver`. Names it does not know get NXDOMAIN. Queries are logged
//! to a file, so a test can prove the proxy did (or did not) resolve a name.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::process::{ChildGuard, Lines};

/// dnsmasq in a fake internet. Owned by [`crate::FakeInternet`]; reach it with `net.dns()`.
#[derive(Debug)]
pub struct Dnsmasq {
    netns: String,
    dir: PathBuf,
    records: BTreeMap<String, Vec<IpAddr>>,
    listen: Option<SocketAddr>,
    child: Option<(ChildGuard, Lines)>,
}

impl Dnsmasq {
    pub(crate) fn new(netns: &str, dir: PathBuf) -> Self {
        Self {
            netns: netns.to_string(),
            dir,
            records: BTreeMap::new(),
            listen: None,
            child: None,
        }
    }

    /// Answers `name` (and its subdomains) with `ips` (A and AAAA records), replacing what it
    /// answered before. Restarts dnsmasq if it is running.
    pub fn set(&mut self, name: &str, ips: &[IpAddr]) {
        self.records.insert(
            name.trim_end_matches('.').to_ascii_lowercase(),
            ips.to_vec(),
        );
        self.reload();
    }

    /// Sets several names at once, restarting dnsmasq (if running) only once.
    pub fn set_all(&mut self, records: &[(&str, Vec<IpAddr>)]) {
        for (name, ips) in records {
            self.records
                .insert(name.trim_end_matches('.').to_ascii_lowercase(), ips.clone());
        }
        self.reload();
    }

    /// Stops answering for `name` (it becomes NXDOMAIN).
    pub fn remove(&mut self, name: &str) {
        self.records
            .remove(&name.trim_end_matches('.').to_ascii_lowercase());
        self.reload();
    }

    /// The names registered and what they resolve to.
    pub fn records(&self) -> &BTreeMap<String, Vec<IpAddr>> {
        &self.records
    }

    /// Where dnsmasq listens, once started.
    pub fn addr(&self) -> Option<SocketAddr> {
        self.listen
    }

    /// The query log (`--log-queries`).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("dnsmasq.log")
    }

    /// Names that were queried so far (lowercase, in order, with repeats).
    pub fn queries(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        log.lines()
            .filter_map(|l| {
                // "dnsmasq[123]: query[A] httpbin.test from 198.18.3.1"
                let rest = &l[l.find("query[")?..];
                let name = rest.split_whitespace().nth(1)?;
                Some(name.to_ascii_lowercase())
            })
            .collect()
    }

    /// Whether `name` was queried at least once.
    pub fn was_queried(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.queries().contains(&name)
    }

    pub(crate) fn ensure_running(&mut self, addr: SocketAddr) {
        self.listen = Some(addr);
        if self.child.is_none() {
            self.start();
        }
    }

    fn reload(&mut self) {
        if self.child.is_some() {
            self.stop();
            self.start();
        }
    }

    /// Restarts dnsmasq, e.g. after the test changed records.
    pub fn restart(&mut self) {
        self.stop();
        self.start();
    }

    pub(crate) fn stop(&mut self) {
        if let Some((mut child, _)) = self.child.take() {
            child.stop(Duration::from_secs(2));
        }
    }

    fn start(&mut self) {
        let addr = self.listen.expect("dnsmasq started without an address");
        std::fs::create_dir_all(&self.dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", self.dir.display()));
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, "dnsmasq"])
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--user=root",
                "--group=root",
                "--cache-size=0",
                "--no-negcache",
                "--local-ttl=1",
                "--log-queries",
            ])
            .arg(format!("--listen-address={}", addr.ip()))
            .arg(format!("--port={}", addr.port()))
            .arg(format!(
                "--pid-file={}",
                self.dir.join("dnsmasq.pid").display()
            ))
            .arg(format!("--log-facility={}", self.log_path().display()))
            // Anything not registered: NXDOMAIN (more specific --address entries win).
            .arg("--address=/#/");
        for (name, ips) in &self.records {
            for ip in ips {
                cmd.arg(format!("--address=/{name}/{ip}"));
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = ChildGuard::spawn("dnsmasq", &mut cmd);
        let stderr = child.child_mut().stderr.take().expect("piped stderr");
        let (lines, _) = Lines::capture(stderr, |_| {});
        let deadline = Instant::now() + Duration::from_secs(10);
        while !probe(addr) {
            if let Some(status) = child.try_status() {
                panic!(
                    "dnsmasq exited ({status}) at startup:\n{}",
                    lines.snapshot().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not answer on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some((child, lines));
    }
}

/// Sends one A query for `probe.invalid` to `addr`; true on any reply.
fn probe(addr: SocketAddr) -> bool {
    let bind: SocketAddr = match addr {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let Ok(sock) = UdpSocket::bind(bind) else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    if sock.send_to(&query("probe.invalid"), addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    // A timed read a signal interrupted is retried (see `timed_read`).
    loop {
        match sock.recv_from(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other.is_ok(),
        }
    }
}

/// A minimal DNS query (id 0x1234, RD set) for `name`, type A, class IN.
fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        // Labels here are short literals.
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}
