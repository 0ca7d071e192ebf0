//! Shared end-to-end harness: runs the real `iron-proxy` binary against a fake internet.
//!
//! The pieces read like a small language:
//!
//! ```no_run
//! use iron_proxy_tests::*;
//! let net = FakeInternet::new();
//! let up = Upstream::https("httpbin.test").start(&net);
//! let px = Proxy::with("transforms: []").resolver(&net).start();
//! // The URL, SNI and Host stay the upstream's; the connection goes to the proxy's listener.
//! let r = Curl::get("https://httpbin.test/get").via(&px).run();
//! assert_eq!(r.status, 200, "{r}");
//! up.wait_for_request(|r| r.path() == "/get");
//! assert!(px.wait_for_audit(|a| a.host() == Some("httpbin.test")).is_allowed());
//! ```
//!
//! - [`FakeInternet`] is a network namespace joined to the host by a veth pair, addressed from
//!   198.18.0.0/15 and a ULA; "hosts" are extra addresses inside it.
//! - [`Upstream`] runs the `fake-upstream` server (httpbin-like) on one of those hosts, with a
//!   certificate from the fake internet's CA, and registers its name in the fake DNS
//!   ([`dnsmasq`]).
//! - [`Proxy`] renders a config, starts the proxy binary and parses its audit log ([`audit`])
//!   and its JSON operational log lines ([`logs`]).
//! - [`client`] runs real clients (curl, Python in a virtualenv).
//! - [`cgroup`] runs workloads in a test cgroup under eBPF interception ([`TestCgroup`],
//!   [`PinGuard`]).
//!
//! Harness functions panic with a message that says what failed: they are test code, and a
//! panic points at the failing line. Every privileged resource sits behind a Drop guard.

pub mod audit;
pub mod ca;
pub mod cgroup;
pub mod client;
pub mod dnsmasq;
pub mod fake_upstream;
pub mod hung_fs;
pub mod logs;
pub mod moto;
pub mod netns;
pub mod paths;
pub mod ports;
pub mod process;
pub mod proxy;
pub mod timed_read;
pub mod upstream;

pub use audit::{Audit, AuditRecord};
pub use ca::TestCa;
pub use cgroup::{PinGuard, TestCgroup, Workload, WorkloadCurl};
pub use client::{connect_from, curl, python, python_in, Curl, CurlResult, HostsFile, PyResult};
pub use hung_fs::{hung_fs_mounts, HungFs};
pub use logs::{json_lines, LogLine};
pub use moto::Moto;
pub use netns::{FakeInternet, Host};
pub use proxy::{Proxy, ProxyProcess};
pub use upstream::{Upstream, UpstreamHandle};

use std::time::{Duration, Instant};

/// Whether privileged tests should be skipped (`IRON_SKIP_PRIVILEGED=1` and not root).
///
/// Privileged tests start with [`require_root!`]; this is its implementation.
pub fn skip_privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    if std::env::var("IRON_SKIP_PRIVILEGED").is_ok_and(|v| v == "1") {
        eprintln!("skipping privileged test: not root and IRON_SKIP_PRIVILEGED=1");
        return true;
    }
    panic!(
        "this end-to-end test needs root (network namespaces, veth, dnsmasq); run the suite as \
         root, or set IRON_SKIP_PRIVILEGED=1 to skip privileged tests"
    );
}

/// First line of a privileged test: returns early when skipping is allowed, panics with a clear
/// message when not root.
#[macro_export]
macro_rules! require_root {
    () => {
        if $crate::skip_privileged() {
            return;
        }
    };
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout` with `what`.
pub fn wait_until<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
