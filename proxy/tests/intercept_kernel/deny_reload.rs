//! The kernel deny list follows a reload: [`Interceptor::update_deny`] swaps
//! the pinned trie's entries while interception stays attached.

use iron_proxy::intercept::{DenyCidr, Interceptor};

use super::support::*;
use super::{attach, settings, EPERM, LINKS_PER_CGROUP};

#[test]
fn update_deny_moves_the_kernel_deny_list() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new();
    let pins = TestPins::new();
    let proxy = Server::proxy("127.0.0.1:0", &pins.path);
    let cidr = |c: &str| DenyCidr::all(c.parse().expect("cidr"));
    let mut s = settings(&cg, &pins, proxy.addr);
    s.deny = vec![cidr("127.0.0.3/32"), cidr("127.0.0.5/32")];
    let _ic = attach(&s);
    let ops = [
        "tcp",
        "127.0.0.3",
        "443",
        "tcp",
        "127.0.0.4",
        "443",
        "tcp",
        "127.0.0.5",
        "443",
    ];

    let ran = run_workload(&cg, None, &ops);
    assert_eq!(
        ran.lines,
        vec![
            format!("tcp err {EPERM}"),
            "tcp ok 127.0.0.4 443 proxy|127.0.0.4:443".to_owned(),
            format!("tcp err {EPERM}"),
        ],
        "before: 127.0.0.3 and .5 denied"
    );

    // Both lists share 127.0.0.5/32: it is never removed, only re-inserted.
    let new = [cidr("127.0.0.4/32"), cidr("127.0.0.5/32")];
    let entries = Interceptor::update_deny(&pins.path, &new).expect("update_deny");
    assert_eq!(entries, 2);

    let ran = run_workload(&cg, None, &ops);
    assert_eq!(
        ran.lines,
        vec![
            "tcp ok 127.0.0.3 443 proxy|127.0.0.3:443".to_owned(),
            format!("tcp err {EPERM}"),
            format!("tcp err {EPERM}"),
        ],
        "after: 127.0.0.3 redirected as usual, 127.0.0.4 and .5 denied"
    );
    let status = Interceptor::status(&pins.path).expect("status");
    assert_eq!(
        status.links.len(),
        LINKS_PER_CGROUP,
        "links untouched: {status}"
    );
    assert!(status.links.iter().all(|l| l.attached), "{status}");
}

/// `n` /32 deny entries, `10.<second>.x.y`.
fn many(second: u8, n: u16) -> Vec<DenyCidr> {
    (0..n)
        .map(|i| {
            let [hi, lo] = i.to_be_bytes();
            DenyCidr::all(format!("10.{second}.{hi}.{lo}/32").parse().expect("cidr"))
        })
        .collect()
}

/// A new deny list that fits the trie (4,096 entries) alone but not next to the old one it
/// replaces (new entries go in before stale ones go) is refused before anything is written:
/// the old list stays whole and none of the new one is enforced. Before, the change ran out
/// of room halfway (ENOSPC) and left the old entries plus part of the new ones.
#[test]
fn a_deny_change_that_cannot_fit_beside_the_old_list_changes_nothing() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new();
    let pins = TestPins::new();
    let proxy = Server::proxy("127.0.0.1:0", &pins.path);
    let mut s = settings(&cg, &pins, proxy.addr);
    s.deny = many(0, 3000);
    let _ic = attach(&s);
    let ops = ["tcp", "10.0.0.1", "443", "tcp", "10.1.0.1", "443"];
    let before = vec![
        format!("tcp err {EPERM}"),
        "tcp ok 10.1.0.1 443 proxy|10.1.0.1:443".to_owned(),
    ];
    assert_eq!(run_workload(&cg, None, &ops).lines, before);

    let err = Interceptor::update_deny(&pins.path, &many(1, 3000))
        .expect_err("3,000 new entries beside 3,000 old ones do not fit");
    let text = iron_proxy::error_chain(&err);
    assert!(text.contains("nothing was changed"), "{text}");
    assert_eq!(
        run_workload(&cg, None, &ops).lines,
        before,
        "the old list is enforced whole, none of the new one"
    );

    // A change that fits beside the old list goes through.
    let entries = Interceptor::update_deny(&pins.path, &many(1, 1000)).expect("update_deny");
    assert_eq!(entries, 1000);
    assert_eq!(
        run_workload(&cg, None, &ops).lines,
        vec![
            "tcp ok 10.0.0.1 443 proxy|10.0.0.1:443".to_owned(),
            format!("tcp err {EPERM}"),
        ]
    );
}
