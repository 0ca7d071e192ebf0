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
