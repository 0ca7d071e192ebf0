//! Real peers for the tests: `dig` as the client and `dnsmasq` as the
//! upstream resolver (or a caching resolver in front), all on 127.0.0.1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::free_port;

/// dnsmasq's TTL for its local answers (`--local-ttl`).
pub(super) const DNSMASQ_TTL: u32 = 4321;

/// What dig printed, parsed.
#[derive(Debug)]
pub(super) struct Dig {
    pub(super) status: String,
    pub(super) flags: Vec<String>,
    /// (name, ttl, type, rdata)
    pub(super) answers: Vec<(String, u32, String, String)>,
    /// The authority section, as `answers`.
    pub(super) authorities: Vec<(String, u32, String, String)>,
    /// The size of the answer on the wire (`;; MSG SIZE  rcvd: N`).
    pub(super) size: usize,
    pub(super) raw: String,
}

impl Dig {
    pub(super) fn rdata(&self, rtype: &str) -> Vec<&str> {
        self.answers
            .iter()
            .filter(|a| a.2 == rtype)
            .map(|a| a.3.as_str())
            .collect()
    }
}

pub(super) async fn dig(server: SocketAddr, args: &[&str]) -> Dig {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args([
            "-p",
            &server.port().to_string(),
            "+time=5",
            "+tries=1",
            "+nocookie",
        ])
        .args(args)
        .output()
        .await
        .expect("dig runs (apt-get install dnsutils)");
    let raw = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = raw
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output:\n{raw}"))
        .to_string();
    let flags = raw
        .split(";; flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let size = raw
        .split(";; MSG SIZE  rcvd: ")
        .nth(1)
        .and_then(|s| s.lines().next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no MSG SIZE in dig output:\n{raw}"));
    Dig {
        status,
        flags,
        answers: section(&raw, "ANSWER"),
        authorities: section(&raw, "AUTHORITY"),
        size,
        raw,
    }
}

/// The records of one section of dig's output: (name, ttl, type, rdata).
fn section(raw: &str, name: &str) -> Vec<(String, u32, String, String)> {
    let mut out = Vec::new();
    if let Some(section) = raw.split(&format!(";; {name} SECTION:\n")).nth(1) {
        for line in section.lines().take_while(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if let [name, ttl, _class, rtype, rest @ ..] = f.as_slice() {
                let ttl = ttl.parse().unwrap_or_else(|_| panic!("ttl in {line:?}"));
                out.push((name.to_string(), ttl, rtype.to_string(), rest.join(" ")));
            }
        }
    }
    out
}

/// A dnsmasq child on 127.0.0.1, killed by PID on drop.
pub(super) struct Dnsmasq {
    child: Child,
    pub(super) addr: SocketAddr,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dnsmasq {
    pub(super) async fn start(extra: &[String]) -> Dnsmasq {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("dnsmasq.log");
        let port = free_port();
        let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let child = Command::new("dnsmasq")
            .args([
                "--no-daemon",
                "--conf-file=/dev/null",
                "--pid-file=",
                "--user=root",
                &format!("--port={port}"),
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                "--address=/pass.test/198.18.0.10",
                "--txt-record=pass.test,hello",
                &format!("--local-ttl={DNSMASQ_TTL}"),
                "--log-queries",
                &format!("--log-facility={}", log.display()),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("dnsmasq runs (apt-get install dnsmasq-base)");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let guard = Dnsmasq {
            child,
            addr,
            log,
            dir,
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return guard;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let err = std::fs::read_to_string(guard.dir.path().join("stderr")).unwrap_or_default();
        panic!("dnsmasq did not start listening on {addr}: {err}");
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the query log mentions `needle` (dnsmasq writes it asynchronously).
    pub(super) async fn wait_log(&self, needle: &str) -> String {
        for _ in 0..100 {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("dnsmasq log never mentioned {needle:?}:\n{}", self.log());
    }
}
