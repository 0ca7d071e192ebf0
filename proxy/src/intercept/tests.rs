//! Unit tests that need no privileges: key layouts, deny merging, parsing.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use ebpf_common::{class, flags};

use super::maps::{build_config, deny_entries};
use super::origin::{socket_addr, tuple_key};
use super::*;

fn settings() -> InterceptSettings {
    InterceptSettings {
        cgroups: vec![PathBuf::from("/sys/fs/cgroup/w")],
        uids: vec![],
        uid_ranges: Vec::new(),
        listen_v4: SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 15001),
        listen_v6: None,
        dns_v4: Some(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 15053)),
        dns_v6: None,
        dns_answers: Vec::new(),
        deny: vec![],
        proxy: ProxyIdentity {
            tgid: Some(42),
            cgroup_id: None,
            uid: Some(7),
        },
        getsockopt_cgroups: vec![],
        pin_path: PathBuf::from("/sys/fs/bpf/x"),
        listener_priority: false,
        dns_listener_priority: false,
    }
}

#[test]
fn config_is_network_order() {
    let c = build_config(&settings());
    assert_eq!(c.listen_v4.to_ne_bytes(), [127, 0, 0, 1]);
    assert_eq!(c.listen_v4_port.to_ne_bytes(), 15001u16.to_be_bytes());
    assert_eq!(c.dns_v4_port.to_ne_bytes(), 15053u16.to_be_bytes());
    assert_eq!(
        c.flags,
        flags::IRON_F_CONFIGURED | flags::IRON_F_DNS_V4 | flags::IRON_F_PROXY_UID
    );
    assert_eq!((c.proxy_tgid, c.proxy_uid), (42, 7));
}

#[test]
fn uid_filter_flag_follows_uids() {
    let mut s = settings();
    s.uids = vec![65534];
    assert_ne!(build_config(&s).flags & flags::IRON_F_UID_FILTER, 0);
}

#[test]
fn deny_v4_is_v4_mapped_and_inherits_classes() {
    let deny = vec![
        DenyCidr::workload("127.0.0.0/8".parse().expect("cidr")),
        DenyCidr {
            net: "127.0.0.3/32".parse().expect("cidr"),
            workload: false,
            proxy: true,
        },
        DenyCidr::all("10.1.2.3/8".parse().expect("cidr")),
        DenyCidr::all("fd00::/8".parse().expect("cidr")),
    ];
    let e = deny_entries(&deny);
    let key = |ip: Ipv4Addr, len: u32| (96 + len, ip.to_ipv6_mapped().octets());
    assert_eq!(
        e.get(&key(Ipv4Addr::new(127, 0, 0, 0), 8)),
        Some(&class::IRON_CLASS_WORKLOAD)
    );
    assert_eq!(
        e.get(&key(Ipv4Addr::new(127, 0, 0, 3), 32)),
        Some(&(class::IRON_CLASS_WORKLOAD | class::IRON_CLASS_PROXY)),
        "the /32 inside 127/8 must keep the workload class"
    );
    assert!(
        e.contains_key(&key(Ipv4Addr::new(10, 0, 0, 0), 8)),
        "host bits are cleared"
    );
    let mut fd00 = [0u8; 16];
    fd00[0] = 0xfd;
    assert!(e.contains_key(&(8, fd00)));
    assert_eq!(e.len(), 4);
}

#[test]
fn tuple_key_normalizes_v4_mapped() {
    let v4: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
    let mapped: SocketAddr = "[::ffff:127.0.0.1]:40000".parse().expect("addr");
    let local: SocketAddr = "127.0.0.1:15001".parse().expect("addr");
    assert_eq!(tuple_key(v4, local), tuple_key(mapped, local));
    let k = tuple_key(v4, local);
    assert_eq!(k.src_port.to_ne_bytes(), 40000u16.to_be_bytes());
    assert_eq!(&k.src_addr[10..], &[0xff, 0xff, 127, 0, 0, 1]);
}

#[test]
fn origin_reports_v4_mapped_as_v4() {
    let a = addr16("127.0.0.2".parse().expect("ip"));
    assert_eq!(
        socket_addr(a, 443),
        "127.0.0.2:443".parse::<SocketAddr>().expect("addr")
    );
    let b = addr16("::1".parse().expect("ip"));
    assert_eq!(
        socket_addr(b, 80),
        "[::1]:80".parse::<SocketAddr>().expect("addr")
    );
}

#[test]
fn origin_comm_stops_at_nul() {
    let mut raw = ebpf_common::Origin::default();
    raw.comm[..4].copy_from_slice(b"curl");
    raw.addr = addr16("127.0.0.2".parse().expect("ip"));
    raw.port = 8080u16.to_be();
    let o = Origin::from_raw(&raw);
    assert_eq!(o.comm, "curl");
    assert_eq!(o.dst, "127.0.0.2:8080".parse::<SocketAddr>().expect("addr"));
}

#[test]
fn mountinfo_finds_cgroup2_with_escapes() {
    let text = "21 1 0:19 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                41 31 0:38 / /sys/fs/cgroup/my\\040dir rw,relatime shared:9 - cgroup2 cgroup2 rw\n";
    assert_eq!(
        cgroup::parse_cgroup2_mount(text),
        Some(PathBuf::from("/sys/fs/cgroup/my dir"))
    );
    assert_eq!(
        cgroup::parse_cgroup2_mount("1 2 0:1 / / rw - ext4 /dev/sda rw\n"),
        None
    );
}

#[test]
fn resolve_cgroup_joins_relative_and_refuses_dotdot() {
    let m = Path::new("/sys/fs/cgroup/unified");
    assert_eq!(
        resolve_cgroup(m, Path::new("a/b")).expect("ok"),
        m.join("a/b")
    );
    assert_eq!(resolve_cgroup(m, Path::new("/a")).expect("ok"), m.join("a"));
    assert_eq!(resolve_cgroup(m, &m.join("x")).expect("ok"), m.join("x"));
    assert!(resolve_cgroup(m, Path::new("a/../../etc")).is_err());
}

#[test]
fn release_parsing() {
    assert_eq!(sys::parse_release("6.18.44-fc-v669"), Some((6, 18)));
    assert_eq!(sys::parse_release("5.8.0"), Some((5, 8)));
    assert_eq!(sys::parse_release("garbage"), None);
}

#[test]
fn numeric_users_resolve_without_lookup() {
    assert_eq!(resolve_user("65534").expect("numeric"), 65534);
    assert_eq!(resolve_user("root").expect("root exists"), 0);
    assert!(resolve_user("no-such-user-iron-proxy").is_err());
}

#[test]
fn uid_ranges_are_merged_and_capped_without_losing_a_uid() {
    use super::maps::kernel_uid_ranges;
    use super::UidRange;
    let r = |start, count| UidRange { start, count };
    // Touching and overlapping ranges merge; empty ones go.
    assert_eq!(
        kernel_uid_ranges(&[r(165536, 65536), r(100000, 65536), r(150000, 10), r(5, 0)]),
        vec![r(100000, 131072)]
    );
    // More than the kernel holds: the last slot covers the rest.
    let many: Vec<UidRange> = (0..10).map(|i| r(100000 + i * 100000, 10)).collect();
    let k = kernel_uid_ranges(&many);
    assert_eq!(k.len(), ebpf_common::limits::IRON_UID_RANGES as usize);
    for uid in many.iter().flat_map(|x| x.start..x.start + x.count) {
        assert!(k.iter().any(|x| uid - x.start < x.count), "{uid} lost");
    }
    // A range running past the last uid is cut before uid_t -1.
    assert_eq!(
        kernel_uid_ranges(&[r(u32::MAX - 2, 10)]),
        vec![r(u32::MAX - 2, 2)]
    );
    assert_eq!(kernel_uid_ranges(&[r(u32::MAX, 1)]), vec![]);
    assert!(r(5, 3).contains(7) && !r(5, 3).contains(8) && !r(5, 3).contains(4));
    // Into the config, only with a uid filter.
    let mut s = settings();
    s.uid_ranges = vec![r(100000, 65536)];
    assert_eq!(build_config(&s).uid_range_count, [0; 8]);
    s.uids = vec![1000];
    let c = build_config(&s);
    assert_eq!(
        (c.uid_range_start[0], c.uid_range_count[0]),
        (100000, 65536)
    );
}

#[test]
fn a_pin_directory_that_cannot_be_looked_at_is_an_error_not_absent() {
    use std::io::{Error, ErrorKind};
    let pin = Path::new("/sys/fs/bpf/private/iron-proxy");
    assert!(!super::presence(pin, Err(Error::from(ErrorKind::NotFound))).unwrap());
    assert!(super::presence(pin, Ok(())).unwrap());
    let err = super::presence(pin, Err(Error::from_raw_os_error(libc::EACCES)))
        .expect_err("EACCES is not \"nothing pinned\"");
    let text = crate::error_chain(&err);
    assert!(
        text.contains("/sys/fs/bpf/private/iron-proxy") && text.contains("Permission denied"),
        "{text}"
    );
}

#[test]
fn a_missing_pin_directory_is_nothing_pinned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let pin = dir.path().join("absent");
    assert!(
        !Interceptor::detach(&pin).expect("detach"),
        "nothing was pinned"
    );
    assert!(!Interceptor::status(&pin).expect("status").pinned);
}
