//! `Upstream`: a fake server in a [`FakeInternet`], reachable by name through the fake DNS.
//!
//! ```no_run
//! # use iron_proxy_tests::*;
//! let net = FakeInternet::new();
//! let up = Upstream::https("httpbin.test").alias("api.httpbin.test").start(&net);
//! // ... drive traffic through the proxy ...
//! up.wait_for_request(|r| r.path() == "/get");
//! up.assert_no_request(|r| r.path() == "/admin");
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::ca::{self_signed_leaf, Leaf};
use crate::netns::{FakeInternet, Host};
use crate::process::{ChildGuard, Lines};

static SERIAL: AtomicU32 = AtomicU32::new(0);

/// Builder for a fake upstream server.
#[derive(Clone, Debug)]
pub struct Upstream {
    names: Vec<String>,
    tls: bool,
    cert_names: Option<Vec<String>>,
    self_signed: bool,
    register: bool,
    aaaa: bool,
    tls_port: u16,
    plain_port: u16,
}

impl Upstream {
    /// An HTTPS server for `name` on port 443 (HTTP/1.1 and h2 by ALPN), plus plain HTTP on 80.
    pub fn https(name: &str) -> Self {
        Self {
            names: vec![name.to_string()],
            tls: true,
            cert_names: None,
            self_signed: false,
            register: true,
            aaaa: true,
            tls_port: 443,
            plain_port: 80,
        }
    }

    /// A plain-HTTP server for `name` on port 80 only.
    pub fn http(name: &str) -> Self {
        Self {
            tls: false,
            ..Self::https(name)
        }
    }

    /// Another name for the same server (in DNS and in its certificate).
    pub fn alias(mut self, name: &str) -> Self {
        self.names.push(name.to_string());
        self
    }

    /// Presents a certificate for these names instead (for name-mismatch tests).
    pub fn cert_names(mut self, names: &[&str]) -> Self {
        self.cert_names = Some(names.iter().map(|s| s.to_string()).collect());
        self
    }

    /// Presents a self-signed certificate that the proxy does not trust.
    pub fn untrusted_cert(mut self) -> Self {
        self.self_signed = true;
        self
    }

    /// Keeps the name out of DNS (the server is reachable by IP only).
    pub fn unregistered(mut self) -> Self {
        self.register = false;
        self
    }

    /// Registers only the A record (no AAAA).
    pub fn ipv4_only(mut self) -> Self {
        self.aaaa = false;
        self
    }

    /// TLS port (default 443).
    pub fn tls_port(mut self, port: u16) -> Self {
        self.tls_port = port;
        self
    }

    /// Plain-HTTP port (default 80).
    pub fn plain_port(mut self, port: u16) -> Self {
        self.plain_port = port;
        self
    }

    /// Starts the server on a fresh host of `net`, waits until it listens, and registers its
    /// names in `net`'s DNS.
    pub fn start(self, net: &FakeInternet) -> UpstreamHandle {
        let host = net.add_host();
        let n = SERIAL.fetch_add(1, Ordering::Relaxed);
        let name = self.names[0].clone();
        let dir = net.dir().join(format!("upstream-{n}-{name}"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let log = dir.join("requests.jsonl");
        std::fs::write(&log, "").unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));

        let mut cmd = net.command(crate::paths::fake_upstream_bin());
        cmd.arg("--name").arg(&name).arg("--log").arg(&log);
        for ip in host.ips() {
            cmd.arg("--listen-plain")
                .arg(SocketAddr::new(ip, self.plain_port).to_string());
        }
        if self.tls {
            let mut cert_names = self
                .cert_names
                .clone()
                .unwrap_or_else(|| self.names.clone());
            if self.cert_names.is_none() {
                cert_names.extend(host.ips().iter().map(IpAddr::to_string));
            }
            let Leaf { cert, key } = if self.self_signed {
                self_signed_leaf(&cert_names, &dir, "server")
            } else {
                net.ca().issue(&cert_names, &dir, "server")
            };
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
            for ip in host.ips() {
                cmd.arg("--listen")
                    .arg(SocketAddr::new(ip, self.tls_port).to_string());
            }
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = ChildGuard::spawn(&format!("fake-upstream {name}"), &mut cmd);
        let stdout = child.child_mut().stdout.take().expect("piped stdout");
        let stderr = child.child_mut().stderr.take().expect("piped stderr");
        let (out, _) = Lines::capture(stdout, |_| {});
        let (err, _) = Lines::capture(stderr, |_| {});
        if out
            .wait_for(Duration::from_secs(10), |l| l == "ready")
            .is_none()
        {
            let status = child.try_status();
            panic!(
                "fake-upstream {name} did not become ready (exit: {status:?}):\n{}\n{}",
                out.snapshot().join("\n"),
                err.snapshot().join("\n")
            );
        }
        if self.register {
            let mut ips = vec![IpAddr::V4(host.v4)];
            if self.aaaa {
                ips.push(IpAddr::V6(host.v6));
            }
            let records: Vec<_> = self
                .names
                .iter()
                .map(|n| (n.as_str(), ips.clone()))
                .collect();
            net.dns().set_all(&records);
            net.resolver();
        }
        UpstreamHandle {
            names: self.names,
            host,
            tls: self.tls,
            tls_port: self.tls_port,
            plain_port: self.plain_port,
            log,
            child,
            _stderr: err,
            _net: net.clone(),
        }
    }
}

/// A running fake upstream. Stopped (by PID) on drop.
#[derive(Debug)]
pub struct UpstreamHandle {
    names: Vec<String>,
    host: Host,
    tls: bool,
    tls_port: u16,
    plain_port: u16,
    log: PathBuf,
    child: ChildGuard,
    _stderr: Lines,
    _net: FakeInternet,
}

/// One request as the upstream logged it.
#[derive(Clone, Debug, PartialEq)]
pub struct LoggedRequest(pub Value);

impl LoggedRequest {
    /// Request method.
    pub fn method(&self) -> &str {
        self.0["method"].as_str().unwrap_or("")
    }

    /// URL path (without query).
    pub fn path(&self) -> &str {
        self.0["path"].as_str().unwrap_or("")
    }

    /// Host header (HTTP/1) or `:authority` (h2).
    pub fn host(&self) -> &str {
        self.0["host"].as_str().unwrap_or("")
    }

    /// SNI the upstream saw, if TLS.
    pub fn sni(&self) -> Option<&str> {
        self.0["sni"].as_str()
    }

    /// The source port of the connection the request came on: one
    /// connection, one port.
    pub fn origin_port(&self) -> Option<u64> {
        self.0["origin_port"].as_u64()
    }

    /// `HTTP/1.1`, `HTTP/2`, ...
    pub fn http_version(&self) -> &str {
        self.0["http_version"].as_str().unwrap_or("")
    }

    /// Header fields as received: (name with original case, value).
    pub fn headers(&self) -> Vec<(&str, &str)> {
        self.0["headers"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|p| Some((p.get(0)?.as_str()?, p.get(1)?.as_str()?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers()
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The body as text (first 64 KiB).
    pub fn body(&self) -> &str {
        self.0["body"].as_str().unwrap_or("")
    }
}

impl std::fmt::Display for LoggedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl UpstreamHandle {
    /// The primary name.
    pub fn name(&self) -> &str {
        &self.names[0]
    }

    /// Every name (primary first).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The server's addresses in the fake internet.
    pub fn host(&self) -> Host {
        self.host
    }

    /// IPv4 address.
    pub fn ip(&self) -> Ipv4Addr {
        self.host.v4
    }

    /// IPv6 address.
    pub fn ipv6(&self) -> Ipv6Addr {
        self.host.v6
    }

    /// TLS port.
    pub fn tls_port(&self) -> u16 {
        self.tls_port
    }

    /// Plain-HTTP port.
    pub fn plain_port(&self) -> u16 {
        self.plain_port
    }

    /// `https://<name>[:port]<path>` (or `http://` for a plain server).
    pub fn url(&self, path: &str) -> String {
        let (scheme, port, default) = if self.tls {
            ("https", self.tls_port, 443)
        } else {
            ("http", self.plain_port, 80)
        };
        match port == default {
            true => format!("{scheme}://{}{path}", self.name()),
            false => format!("{scheme}://{}:{port}{path}", self.name()),
        }
    }

    /// `http://<name>[:port]<path>`, the plain listener.
    pub fn http_url(&self, path: &str) -> String {
        match self.plain_port {
            80 => format!("http://{}{path}", self.name()),
            p => format!("http://{}:{p}{path}", self.name()),
        }
    }

    /// `name:port:ip` for `curl --resolve`, to reach the upstream directly (not via a proxy).
    pub fn curl_resolve(&self) -> String {
        let port = if self.tls {
            self.tls_port
        } else {
            self.plain_port
        };
        format!("{}:{port}:{}", self.name(), self.host.v4)
    }

    /// The request log path (JSON lines).
    pub fn log_path(&self) -> &PathBuf {
        &self.log
    }

    /// Every request logged so far.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .map(LoggedRequest)
            .collect()
    }

    /// Waits (up to 10 s) for a logged request matching `pred` and returns it.
    pub fn wait_for_request(&self, pred: impl Fn(&LoggedRequest) -> bool) -> LoggedRequest {
        crate::wait_until(
            Duration::from_secs(10),
            &format!("a matching request at upstream {}", self.name()),
            || self.requests().into_iter().find(|r| pred(r)),
        )
    }

    /// Panics if any logged request matches `pred`: proves a request did NOT reach upstream.
    /// Call it after the client finished.
    pub fn assert_no_request(&self, pred: impl Fn(&LoggedRequest) -> bool) {
        if let Some(r) = self.requests().into_iter().find(|r| pred(r)) {
            panic!("upstream {} unexpectedly received: {r}", self.name());
        }
    }

    /// Panics if the upstream received anything at all.
    pub fn assert_untouched(&self) {
        self.assert_no_request(|_| true);
    }

    /// Stops the server (to test an upstream that went away); its names stay in DNS.
    pub fn stop(&mut self) {
        self.child.stop(Duration::from_secs(2));
    }
}
