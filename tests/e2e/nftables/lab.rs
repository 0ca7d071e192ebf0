//! The nftables-mode fixture: a proxy intercepting a fresh test cgroup through its own
//! `inet` table ([`NftLab`]), deleted on drop ([`NftTable`]), and helpers.

use std::time::Duration;

use iron_proxy::intercept::nft::{table_name, NftInterceptor};
use iron_proxy_tests::*;
use serde_json::{json, Value};

use crate::intercept::lab::{
    audit_for, base_config, intercept_cmd, start_intercepting, workload_curl,
};

/// This test's nft table (named from a unique pin path); deleted on drop.
pub(crate) struct NftTable {
    pub pin: PinGuard,
}

impl NftTable {
    pub fn new() -> Self {
        Self {
            pin: PinGuard::new(),
        }
    }

    pub fn name(&self) -> String {
        table_name(self.pin.path())
    }

    pub fn exists(&self) -> bool {
        std::process::Command::new("nft")
            .args(["list", "table", "inet", &self.name()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for NftTable {
    fn drop(&mut self) {
        if let Err(e) = NftInterceptor::detach(self.pin.path()) {
            eprintln!("warning: deleting nft table {}: {e}", self.name());
        }
    }
}

/// A proxy intercepting one test cgroup through nftables. Drops in order: the proxy stops,
/// the table is deleted, the cgroup is removed.
pub(crate) struct NftLab {
    pub px: ProxyProcess,
    pub table: NftTable,
    pub cg: TestCgroup,
    pub config: Value,
}

impl NftLab {
    pub fn start(net: &FakeInternet) -> Self {
        Self::start_with(net, |_| {})
    }

    pub fn start_with(net: &FakeInternet, edit: impl FnOnce(&mut Value)) -> Self {
        let cg = TestCgroup::new();
        let table = NftTable::new();
        let mut config = base_config(net, &cg, &table.pin);
        config["intercept"]["mode"] = json!("nftables");
        edit(&mut config);
        let px = start_intercepting(Proxy::with(config.clone()).resolver(net));
        assert!(table.exists(), "table inet {} after start", table.name());
        Self {
            px,
            table,
            cg,
            config,
        }
    }

    pub fn curl(&self, args: &[&str]) -> WorkloadCurl {
        workload_curl(&self.px, &self.cg, args)
    }

    pub fn audit_for(&self, path: &str) -> AuditRecord {
        audit_for(&self.px, path)
    }

    /// `iron-proxy intercept ACTION -config <the proxy's config>`: (exit, stdout+stderr).
    pub fn intercept_cmd(&self, action: &str) -> (i32, String) {
        intercept_cmd(&self.px, action)
    }
}

/// Sends one ICMP echo request from a raw socket; prints `"ok"` or the errno.
pub(crate) const RAW_ECHO: &str = r#"
import json, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
try:
    s.sendto(b'\x08\x00\xf7\xff\x00\x00\x00\x00', (sys.argv[1], 0))
    print(json.dumps('ok'))
except OSError as e:
    print(json.dumps(e.errno))
"#;

/// Starts a proxy with `intercept` (nftables mode) and an empty `PATH`, expecting it to refuse.
pub(crate) fn refused_start(net: &FakeInternet, intercept: Value) -> String {
    let empty = tempfile::tempdir().expect("temp dir");
    let path = empty.path().to_str().expect("utf-8 temp path").to_owned();
    let config = json!({
        "transforms": [{"name": "allowlist", "config": {"domains": ["httpbin.test"]}}],
        "intercept": intercept,
    });
    let (status, logs) = Proxy::with(config)
        .resolver(net)
        .env("PATH", &path)
        .run_to_exit(Duration::from_secs(20));
    assert!(
        !status.success(),
        "the proxy must refuse to start:\n{}",
        logs.join("\n")
    );
    logs.join("\n")
}
