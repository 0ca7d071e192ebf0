//! A selected cgroup removed and made again (systemd restarting a unit whose
//! own cgroup is selected): the kernel detaches the old cgroup's links, and
//! `Interceptor::reattach` links the pinned programs to the new one.

use super::*;

fn in_cgroup(lab: &Lab, port: &str) -> Vec<String> {
    run_workload(&lab.cg, None, &["tcp", "127.0.0.2", port]).lines
}

/// Calls `reattach` until no link of a removed cgroup lingers (the kernel
/// detaches them when it releases the cgroup, a moment after `rmdir`);
/// returns the pins dropped meanwhile.
fn drop_lingering(reattach: &dyn Fn() -> intercept::Reattached) -> usize {
    let mut dropped = 0;
    for _ in 0..250 {
        let done = reattach();
        dropped += done.dropped;
        if done.lingering == 0 {
            return dropped;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("links of a removed cgroup still attached after 5 s");
}

#[test]
fn a_recreated_cgroup_is_intercepted_again_once_reattached() {
    let Some(lab) = Lab::start() else {
        return;
    };
    let port = lab.direct.port().to_string();
    let (proxied, direct) = (
        vec![format!("tcp ok 127.0.0.2 {port} proxy|127.0.0.2:{port}")],
        vec![format!("tcp ok 127.0.0.2 {port} direct")],
    );
    let s = lab.settings();
    drop(attach(&s));
    let progs = lab.pins.path.join("progs");
    assert_eq!(
        std::fs::read_dir(&progs).expect("progs pinned").count(),
        LINKS_PER_CGROUP + 1,
        "every workload hook's program and getsockopt's are pinned"
    );
    assert_eq!(in_cgroup(&lab, &port), proxied);
    let reattach = || {
        Interceptor::reattach(&lab.pins.path, &s.cgroups, &[])
            .unwrap_or_else(|e| panic!("reattach: {e} ({e:?})"))
    };
    assert_eq!(
        reattach(),
        intercept::Reattached::default(),
        "nothing to do while every link is attached"
    );

    let old_id = lab.cg.id();
    lab.cg.remove();
    lab.cg.make_again();
    assert_ne!(lab.cg.id(), old_id, "a new cgroup under the same path");
    // The kernel fact the watcher exists for: the new cgroup runs without
    // the programs.
    assert_eq!(in_cgroup(&lab, &port), direct);
    let status = Interceptor::status(&lab.pins.path).expect("status");
    assert!(status.links.iter().all(|l| !l.attached), "{status}");

    let done = reattach();
    assert_eq!(
        (done.linked, done.absent.len()),
        (LINKS_PER_CGROUP, 0),
        "{done:?}"
    );
    assert_eq!(
        done.dropped + drop_lingering(&reattach),
        LINKS_PER_CGROUP,
        "the old cgroup's pins go once the kernel detached them"
    );
    assert_eq!(in_cgroup(&lab, &port), proxied);
    let status = Interceptor::status(&lab.pins.path).expect("status");
    assert_eq!(status.links.len(), LINKS_PER_CGROUP, "{status}");
    assert!(
        status
            .links
            .iter()
            .all(|l| l.attached && l.cgroup_id == lab.cg.id()),
        "{status}"
    );
    assert_eq!(reattach(), intercept::Reattached::default());

    // Removed and not yet made again: reported absent, the dead links'
    // pins dropped; linked once it is back.
    lab.cg.remove();
    let done = reattach();
    assert_eq!((done.linked, done.absent), (0, vec![lab.cg.path.clone()]));
    assert_eq!(done.dropped + drop_lingering(&reattach), LINKS_PER_CGROUP);
    assert!(Interceptor::status(&lab.pins.path)
        .expect("status")
        .links
        .is_empty());
    lab.cg.make_again();
    assert_eq!(reattach().linked, LINKS_PER_CGROUP);
    assert_eq!(in_cgroup(&lab, &port), proxied);

    // A restart's takeover replaces the pinned programs too, and the
    // reattached links get the new ones.
    let before = Interceptor::status(&lab.pins.path).expect("status");
    drop(attach(&s));
    let after = Interceptor::status(&lab.pins.path).expect("status");
    for (b, a) in before.links.iter().zip(&after.links) {
        assert_eq!((b.link_id, &b.hook), (a.link_id, &a.hook));
        assert_ne!(b.prog_id, a.prog_id, "{} got the new program", a.hook);
    }
    assert_eq!(
        std::fs::read_dir(&progs).expect("progs").count(),
        LINKS_PER_CGROUP + 1,
        "the programs' pins were swapped, none left over"
    );
    assert_eq!(in_cgroup(&lab, &port), proxied);
}
