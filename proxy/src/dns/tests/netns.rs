//! getaddrinfo from real programs (`getent`, Python) resolving through the server.
//!
//! resolv.conf cannot name a port, so the server must listen on port 53 and
//! the system resolver must point at it, without touching the host. The test
//! re-runs this test binary under `unshare --net --mount`: in that fresh
//! network namespace only a private loopback exists, so binding 127.0.0.1:53
//! is harmless, and in the private mount namespace a temporary resolv.conf is
//! bind-mounted over /etc/resolv.conf. Both namespaces vanish with the child.

use std::net::Ipv6Addr;
use std::process::Command;

use super::*;

const CHILD_ENV: &str = "IRON_DNS_NETNS_CHILD";
const CHILD_OK: &str = "NETNS-CHILD-OK";

#[test]
fn getaddrinfo_resolves_through_the_server() {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new("unshare")
        .args(["--net", "--mount", "--"])
        .arg(exe)
        .args([
            "--exact",
            "dns::tests::netns::netns_child",
            "--ignored",
            "--nocapture",
        ])
        .args(["--test-threads=1"])
        .env(CHILD_ENV, "1")
        .output()
        .expect("unshare runs (needs root)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(CHILD_OK),
        "netns child failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

/// Runs only inside the namespaces made by the test above.
#[tokio::test]
#[ignore = "run by getaddrinfo_resolves_through_the_server inside unshare"]
async fn netns_child() {
    if std::env::var(CHILD_ENV).as_deref() != Ok("1") {
        return;
    }
    // Refuse to bind port 53 unless this really is a fresh network namespace.
    let dev = std::fs::read_to_string("/proc/net/dev").expect("read /proc/net/dev");
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, vec!["lo"], "not in a fresh network namespace");
    run("ip", &["link", "set", "lo", "up"]);

    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("resolv.conf");
    std::fs::write(
        &conf,
        "nameserver 127.0.0.1\noptions timeout:2 attempts:2\n",
    )
    .expect("write resolv.conf");
    run(
        "mount",
        &["--bind", &conf.display().to_string(), "/etc/resolv.conf"],
    );

    let mut s = settings(&[], None);
    s.listen = vec![(std::net::Ipv4Addr::LOCALHOST, 53).into()];
    s.proxy_ip6 = Some(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x53));
    s.records = vec![a_record("db.internal.test", [10, 9, 9, 9])];
    let (server, _) = start(s).await;

    let out = output("getent", &["ahosts", "workload.example.com"]).await;
    assert!(
        out.contains("10.11.12.13") && out.contains("fd00::53"),
        "getent ahosts: {out}"
    );
    // ahostsv4 would set AI_ADDRCONFIG, which fails with only loopback configured.
    let out = output("getent", &["ahosts", "db.internal.test"]).await;
    assert!(
        out.contains("10.9.9.9") && !out.contains("fd00"),
        "getent static record: {out}"
    );
    let py = "import socket; print(sorted({a[4][0] for a in socket.getaddrinfo('api.example.org', 443)}))";
    let out = output("python3", &["-c", py]).await;
    assert!(
        out.contains("'10.11.12.13'") && out.contains("'fd00::53'"),
        "python getaddrinfo: {out}"
    );

    assert!(server.stats().snapshot().intercepted >= 4);
    server.shutdown().await.expect("shutdown");
    println!("{CHILD_OK}");
}

fn run(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(st.success(), "{cmd} {args:?} failed: {st}");
}

/// Runs a program without blocking the runtime that serves its DNS queries.
async fn output(cmd: &str, args: &[&str]) -> String {
    let out = tokio::process::Command::new(cmd)
        .args(args)
        .output()
        .await
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
