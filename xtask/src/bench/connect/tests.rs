//! Tests of the connect() micro-benchmark's pure parts.

use super::*;

#[test]
fn nft_names_the_cgroup_relative_to_sys_fs_cgroup() {
    // Hybrid layout (this VM): v2 mounted at /sys/fs/cgroup/unified.
    let rule = nft_rule(
        Path::new("/sys/fs/cgroup/unified/iron-bench-1-0"),
        Path::new("/sys/fs/cgroup/unified"),
        4242,
    )
    .expect("rule");
    assert!(
        rule.contains(r#"socket cgroupv2 level 1 "unified/iron-bench-1-0" redirect to :4242"#),
        "{rule}"
    );
    // Unified layout.
    let rule = nft_rule(
        Path::new("/sys/fs/cgroup/a/iron-bench-1-0"),
        Path::new("/sys/fs/cgroup"),
        1,
    )
    .expect("rule");
    assert!(rule.contains(r#"level 2 "a/iron-bench-1-0""#), "{rule}");
    // A mount elsewhere cannot be named.
    assert!(nft_rule(Path::new("/mnt/cg2/x"), Path::new("/mnt/cg2"), 1).is_err());
}

#[test]
fn overhead_is_relative_to_direct() {
    let setup = |name: &str, p50: f64| ConnectSetup {
        name: name.into(),
        runs: vec![ConnectRun::default()],
        p50_ns: Some(p50),
        ..Default::default()
    };
    let mut r = ConnectResult {
        setups: vec![setup("direct", 10_000.0), setup("ebpf", 10_500.0)],
        ..Default::default()
    };
    let pct = r.overhead_pct("ebpf", |s| s.p50_ns).expect("measured");
    assert!((pct - 5.0).abs() < 1e-9, "{pct}");
    r.setups[1].skipped = Some("no".into());
    assert_eq!(r.overhead_pct("ebpf", |s| s.p50_ns), None);
}

#[test]
fn the_bench_deny_list_parses_and_spares_loopback() {
    let nets: Vec<ipnet::IpNet> = crate::bench::BENCH_DENY
        .iter()
        .map(|c| c.parse().expect("a valid CIDR"))
        .collect();
    assert_eq!(nets.len(), crate::bench::BENCH_DENY.len());
    for lo in ["127.0.0.1", "::1"] {
        let ip: std::net::IpAddr = lo.parse().expect("ip");
        assert!(!nets.iter().any(|n| n.contains(&ip)), "{lo} is denied");
    }
    let yaml: Vec<String> =
        serde_yaml_ng::from_str(&crate::bench::bench_deny_yaml()).expect("YAML");
    assert_eq!(yaml, crate::bench::BENCH_DENY);
}
