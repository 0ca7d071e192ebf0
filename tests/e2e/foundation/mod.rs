//! The foundation, end to end: allowlist decisions (domains, CIDRs, rules, warn
//! mode), `upstream_deny_cidrs`, upstream failure mapping (502/504), HTTP
//! hygiene on `http_listen` (absolute form, Host ports, hop-by-hop headers,
//! header case, dot segments), request body limits, and the shares one client
//! gets of the proxy's body budget and resolver lookups. Every case checks its
//! audit record: action, status_code, rejected_by, reason and level.

mod allowlist;
mod bodies;
mod deny_cidrs;
mod failures;
mod fairness;
mod hygiene;
mod idn;

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iron_proxy_tests::*;

/// What an audit record must say.
pub struct Expect<'a> {
    pub action: &'a str,
    pub status: u16,
    pub rejected_by: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub level: &'a str,
}

/// An allowed request that reached its upstream and got `status`.
pub fn allowed(status: u16) -> Expect<'static> {
    Expect {
        action: "allow",
        status,
        rejected_by: None,
        reason: None,
        level: "INFO",
    }
}

/// A request the allowlist refused.
pub const NOT_ALLOWLISTED: Expect<'static> = Expect {
    action: "reject",
    status: 403,
    rejected_by: Some("allowlist"),
    reason: Some("not_allowlisted"),
    level: "WARN",
};

/// A hygiene refusal (no transform involved).
pub fn refused(status: u16, reason: &'static str) -> Expect<'static> {
    Expect {
        action: "reject",
        status,
        rejected_by: None,
        reason: Some(reason),
        level: "WARN",
    }
}

/// An upstream-side error.
pub fn failed(status: u16, reason: &'static str) -> Expect<'static> {
    Expect {
        action: "error",
        status,
        rejected_by: None,
        reason: Some(reason),
        level: "ERROR",
    }
}

/// Waits for the record of `host` + `path` and checks it against `e`.
pub fn audited(px: &ProxyProcess, host: &str, path: &str, e: &Expect<'_>) -> AuditRecord {
    let rec = px.wait_for_audit(|a| a.host() == Some(host) && a.path() == Some(path));
    check(&rec, e);
    rec
}

/// Waits for the record of `path` (whatever its host spelling) and checks it against `e`.
pub fn audited_path(px: &ProxyProcess, path: &str, e: &Expect<'_>) -> AuditRecord {
    let rec = px.wait_for_audit(|a| a.path() == Some(path));
    check(&rec, e);
    rec
}

fn check(rec: &AuditRecord, e: &Expect<'_>) {
    assert_eq!(rec.action(), Some(e.action), "action of {rec}");
    assert_eq!(rec.status_code(), Some(e.status), "status_code of {rec}");
    assert_eq!(rec.rejected_by(), e.rejected_by, "rejected_by of {rec}");
    assert_eq!(rec.str("reason"), e.reason, "reason of {rec}");
    assert_eq!(rec.str("level"), Some(e.level), "level of {rec}");
}

/// Panics unless `r` is a 403 carrying iron-proxy's policy body.
pub fn assert_policy_refusal(r: &CurlResult) {
    assert_eq!(r.status, 403, "{r}");
    assert!(
        r.body.contains("Blocked by iron-proxy policy"),
        "the refusal must name iron-proxy policy:\n{r}"
    );
    assert_eq!(r.header("x-iron-proxy-blocked"), Some("1"), "{r}");
}

/// `curl http://...` through the proxy's `http_listen`, whatever the URL's port.
pub fn plain(px: &ProxyProcess, url: &str) -> Curl {
    Curl::get(url).args(["--connect-to", &px.connect_to_http()])
}

/// A tiny HTTP/1.1 server on 127.0.0.1 (loopback only): answers every request
/// `200 loopback` and records each connection's request head (empty when the
/// client sent nothing). Stops on drop.
pub struct LoopbackServer {
    pub port: u16,
    heads: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

/// The loopback server's answer: 200 with an 8-byte body.
const WHOLE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nloopback";

/// An answer that promises 100 bytes and closes after 8.
pub const TRUNCATED: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nloopback";

impl LoopbackServer {
    pub fn start() -> Self {
        Self::answering(WHOLE)
    }

    /// A server that sends `answer` to every request, then closes.
    pub fn answering(answer: &'static [u8]) -> Self {
        Self::serving(answer, false)
    }

    /// Like [`LoopbackServer::answering`], keeping what follows each head too (a body, its
    /// trailers): whatever arrives until the client pauses for 300 ms.
    pub fn answering_whole(answer: &'static [u8]) -> Self {
        Self::serving(answer, true)
    }

    fn serving(answer: &'static [u8], whole: bool) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let port = listener.local_addr().expect("local addr").port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (heads.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                let Ok((s, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                // The head is kept before the answer goes out: a client that has the
                // answer finds its request in `heads`.
                respond(s, answer, whole, |head| {
                    seen.lock().expect("heads lock").push(head)
                });
            }
        });
        LoopbackServer { port, heads, stop }
    }

    /// Every request head received so far.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().expect("heads lock").clone()
    }
}

fn respond(mut s: std::net::TcpStream, answer: &[u8], whole: bool, keep: impl FnOnce(String)) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match iron_proxy_tests::timed_read::read_some(&mut s, &mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    if whole {
        let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
        while let Ok(n @ 1..) = iron_proxy_tests::timed_read::read_some(&mut s, &mut chunk) {
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    keep(String::from_utf8_lossy(&buf).into_owned());
    let _ = s.write_all(answer);
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
