use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use super::owner::{find_in_table, parse_addr};
use super::ruleset::{nft_cgroup, selectors};
use super::status::{from_listing, NftStatus};
use super::*;
use crate::intercept::{Counters, DenyCidr, ProxyIdentity, UidRange};

fn settings(cgroups: &[&str], uids: &[u32]) -> InterceptSettings {
    InterceptSettings {
        cgroups: cgroups.iter().map(PathBuf::from).collect(),
        uids: uids.to_vec(),
        uid_ranges: Vec::new(),
        listen_v4: "127.0.0.1:15001".parse().expect("literal"),
        listen_v6: None,
        dns_v4: Some("127.0.0.1:5353".parse::<SocketAddrV4>().expect("literal")),
        dns_v6: None,
        dns_answers: Vec::new(),
        deny: vec![
            DenyCidr::all("169.254.0.0/16".parse().expect("literal")),
            DenyCidr::workload("fd00::/8".parse().expect("literal")),
        ],
        proxy: ProxyIdentity::default(),
        getsockopt_cgroups: Vec::new(),
        pin_path: PathBuf::from("/sys/fs/bpf/iron-proxy"),
        listener_priority: false,
        dns_listener_priority: false,
    }
}

const MOUNT: &str = "/sys/fs/cgroup/unified";

#[test]
fn table_names_are_per_pin_path() {
    assert_eq!(
        table_name(Path::new("/sys/fs/bpf/iron-proxy")),
        "iron_proxy"
    );
    let a = table_name(Path::new("/sys/fs/bpf/test-a"));
    assert!(
        a.starts_with("iron_proxy_") && a.len() == "iron_proxy_".len() + 8,
        "{a}"
    );
    assert_eq!(a, table_name(Path::new("/sys/fs/bpf/test-a")));
    assert_ne!(a, table_name(Path::new("/sys/fs/bpf/test-b")));
}

#[test]
fn cgroup_paths_are_relative_to_what_nft_prefixes() {
    let m = Path::new(MOUNT);
    assert_eq!(
        nft_cgroup(m, Path::new("/sys/fs/cgroup/unified/ci.slice/job")).expect("valid"),
        (2, "unified/ci.slice/job".into(), "/ci.slice/job".into())
    );
    let other = Path::new("/mnt/cg2");
    assert_eq!(
        nft_cgroup(other, Path::new("/mnt/cg2/a")).expect("valid"),
        (1, "../../../mnt/cg2/a".into(), "/a".into())
    );
    assert!(nft_cgroup(m, Path::new("/elsewhere/a")).is_err());
    assert!(nft_cgroup(m, Path::new("/sys/fs/cgroup/unified/a\"b")).is_err());
}

#[test]
fn uid_mode_selects_by_uid_alone() {
    let s = settings(&[MOUNT], &[1001, 1002]);
    let sel = selectors(&s, Path::new(MOUNT)).expect("uids");
    assert_eq!(sel.len(), 1);
    assert_eq!(sel[0].cgroup, None);
    let text = render("t", &s, &sel);
    assert!(
        text.contains("\t\tmeta skuid { 1001, 1002 } jump nat_workload"),
        "{text}"
    );
    assert!(!text.contains("cgroupv2"), "{text}");
    // The users' subordinate uids are selected with them.
    let mut s = settings(&[MOUNT], &[1001]);
    s.uid_ranges = vec![UidRange {
        start: 100000,
        count: 65536,
    }];
    let sel = selectors(&s, Path::new(MOUNT)).expect("uids");
    let text = render("t", &s, &sel);
    assert!(
        text.contains("\t\tmeta skuid { 1001, 100000-165535 } jump nat_workload"),
        "{text}"
    );
    // Overlapping lines merge, a range running to 2^32 stops before uid_t -1, and a
    // selected uid inside a range is left to it (nft refuses overlapping set elements).
    s.uids = vec![1001, 100005];
    s.uid_ranges = vec![
        UidRange {
            start: 100000,
            count: 65536,
        },
        UidRange {
            start: 150000,
            count: 65536,
        },
        UidRange {
            start: 4294900000,
            count: 100000,
        },
    ];
    let text = render("t", &s, &selectors(&s, Path::new(MOUNT)).expect("uids"));
    assert!(
        text.contains("\t\tmeta skuid { 1001, 100000-215535, 4294900000-4294967294 } jump"),
        "{text}"
    );
    // Only uids that ranges hold: still a uid match, never "every uid".
    s.uids = vec![100005];
    let text = render("t", &s, &selectors(&s, Path::new(MOUNT)).expect("uids"));
    assert!(
        text.contains("\t\tmeta skuid { 100000-215535, 4294900000-4294967294 } jump"),
        "{text}"
    );
    assert!(selectors(&settings(&[MOUNT], &[]), Path::new(MOUNT)).is_err());
}

#[test]
fn ruleset_selects_redirects_and_locks_down() {
    let s = settings(&["/sys/fs/cgroup/unified/ci"], &[1001]);
    let sel = selectors(&s, Path::new(MOUNT)).expect("cgroup");
    let text = render("iron_proxy_x", &s, &sel);
    let expect = [
        // Atomic replace: create-if-missing, delete, define, in one script.
        "table inet iron_proxy_x {}\ndelete table inet iron_proxy_x\ntable inet iron_proxy_x {\n",
        "set deny4 { type ipv4_addr; flags interval; elements = { 169.254.0.0/16 }; }",
        "set deny6 { type ipv6_addr; flags interval; elements = { fd00::/8 }; }",
        "type nat hook output priority -100; policy accept;",
        "socket cgroupv2 level 1 \"unified/ci\" meta skuid { 1001 } jump nat_workload comment \"iron:select cgroup=/ci uids=1001\"",
        "type filter hook output priority -150; policy accept;",
        "ip daddr 127.0.0.1 tcp dport 15001 return",
        "ip daddr 127.0.0.1 udp dport 5353 return",
        "meta nfproto ipv4 udp dport 53 counter redirect to :5353 comment \"iron:dns_redirected\"",
        "meta nfproto ipv4 tcp dport 53 counter redirect to :5353 comment \"iron:dns_redirected\"",
        "meta nfproto ipv4 meta l4proto tcp counter redirect to :15001 comment \"iron:redirected\"",
        // No IPv6 listener: native IPv6 is refused, not sent to [::1] on the v4 port.
        "meta nfproto ipv6 meta l4proto tcp counter reject with tcp reset comment \"iron:denied\"",
        "ct direction reply return",
        "ip daddr @deny4 meta l4proto tcp counter reject with icmpx admin-prohibited comment \"iron:denied\"",
        "ip6 daddr @deny6 counter drop comment \"iron:denied\"",
        "meta nfproto ipv4 udp dport 53 return",
        "meta l4proto udp counter drop comment \"iron:udp_refused\"",
        "counter drop comment \"iron:raw_refused\"",
    ];
    for e in expect {
        assert!(text.contains(e), "missing {e:?} in\n{text}");
    }
    assert!(
        !text.contains("meta nfproto ipv6 meta l4proto tcp counter redirect"),
        "{text}"
    );
    // No DNS listener for IPv6: its UDP 53 falls through to the UDP drop.
    assert!(!text.contains("meta nfproto ipv6 udp dport 53"), "{text}");
    // The deny rules come before the TCP/UDP returns, but after DNS's, so a stub
    // resolver on 127.0.0.53 is redirected rather than denied.
    let deny = text.find("@deny4").expect("deny");
    assert!(deny < text.find("meta l4proto tcp return").expect("tcp return"));
    let dns = text
        .find("meta nfproto ipv4 udp dport 53 return")
        .expect("dns");
    assert!(dns > text.find("ct direction reply return").expect("reply"));
    assert!(dns < deny, "{text}");
    assert!(
        !text.contains("daddr 127.0.0.1 meta l4proto tcp return"),
        "{text}"
    );
}

#[test]
fn tcp_to_the_dns_answer_passes_before_the_deny_rules() {
    let mut s = settings(&["/sys/fs/cgroup/unified/ci"], &[]);
    s.dns_answers = vec!["127.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")];
    let text = render("t", &s, &selectors(&s, Path::new(MOUNT)).expect("cgroup"));
    // No IPv6 listener: native IPv6 TCP is reset, the IPv6 answer included.
    assert!(
        text.contains("ip daddr 127.0.0.1 meta l4proto tcp return"),
        "{text}"
    );
    assert!(
        !text.contains("ip6 daddr ::1 meta l4proto tcp return"),
        "{text}"
    );
    s.listen_v6 = Some("[::1]:15001".parse().expect("addr"));
    let text = render("t", &s, &selectors(&s, Path::new(MOUNT)).expect("cgroup"));
    let deny = text.find("@deny4").expect("deny");
    for rule in [
        "ip daddr 127.0.0.1 meta l4proto tcp return",
        "ip6 daddr ::1 meta l4proto tcp return",
    ] {
        let at = text
            .find(rule)
            .unwrap_or_else(|| panic!("missing {rule:?} in\n{text}"));
        assert!(at < deny, "{rule:?} after the deny rules:\n{text}");
    }
}

#[test]
fn without_dns_all_udp_is_refused() {
    let mut s = settings(&["/sys/fs/cgroup/unified/ci"], &[]);
    s.dns_v4 = None;
    s.deny.clear();
    let text = render("t", &s, &selectors(&s, Path::new(MOUNT)).expect("cgroup"));
    assert!(!text.contains("dport 53"), "{text}");
    assert!(!text.contains("elements"), "{text}");
}

#[test]
fn delete_is_one_json_batch_that_tolerates_absence() {
    let json = serde_json::to_value(nft_cmd::delete_batch("iron_proxy_ab")).expect("serializes");
    assert_eq!(
        json,
        serde_json::json!({"nftables": [
            {"add": {"table": {"family": "inet", "name": "iron_proxy_ab"}}},
            {"delete": {"table": {"family": "inet", "name": "iron_proxy_ab"}}},
        ]})
    );
}

#[test]
fn proc_net_tcp_addresses_parse() {
    let v4 = parse_addr("0100007F:3A99").expect("v4");
    assert_eq!(
        v4,
        "127.0.0.1:15001".parse::<SocketAddr>().expect("literal")
    );
    let v6 = parse_addr("0000000000000000FFFF00000100007F:0050").expect("mapped");
    assert_eq!(
        v6,
        "[::ffff:127.0.0.1]:80"
            .parse::<SocketAddr>()
            .expect("literal")
    );
    assert!(parse_addr("zz:1").is_none());
}

#[test]
fn socket_is_found_by_tuple() {
    let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:A000 0300007F:0050 01 00000000:00000000 00:00000000 00000000  1001        0 4242 1 0 20 4 30 10 -1\n";
    let local = "127.0.0.1:40960".parse().expect("literal");
    let remote = "127.0.0.3:80".parse().expect("literal");
    assert_eq!(find_in_table(table, local, remote), Some((1001, 4242)));
    assert_eq!(find_in_table(table, remote, local), None);
}

#[test]
fn counters_are_summed_by_comment() {
    let listing = serde_json::json!({"nftables": [
        {"metainfo": {"version": "1.0.6"}},
        {"rule": {"chain": "nat_select", "comment": "iron:select cgroup=/ci", "expr": []}},
        {"rule": {"chain": "filter_select", "comment": "iron:select cgroup=/ci", "expr": []}},
        {"rule": {"chain": "nat_workload", "comment": "iron:redirected", "expr": [{"counter": {"packets": 3, "bytes": 180}}]}},
        {"rule": {"chain": "nat_workload", "comment": "iron:redirected", "expr": [{"counter": {"packets": 2, "bytes": 120}}]}},
        {"rule": {"chain": "filter_workload", "comment": "iron:denied", "expr": [{"counter": {"packets": 1, "bytes": 60}}]}},
        {"rule": {"chain": "filter_workload", "comment": "iron:udp_refused", "expr": [{"counter": {"packets": 4, "bytes": 60}}]}},
    ]});
    let mut st = NftStatus {
        table: "t".into(),
        present: true,
        selection: Vec::new(),
        counters: Counters::default(),
    };
    from_listing(&listing, &mut st);
    assert_eq!(st.selection, ["cgroup=/ci"]);
    assert_eq!(
        (
            st.counters.redirected,
            st.counters.denied,
            st.counters.udp_refused
        ),
        (5, 1, 4)
    );
    assert!(st.to_string().contains("mode nftables, table inet t"));
}
