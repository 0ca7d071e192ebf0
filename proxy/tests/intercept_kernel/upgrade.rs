//! Taking over pins left by a build whose maps had another layout (an
//! upgrade that added a counter, say): the old maps are moved aside and
//! replaced, the links switch to the new programs, and a workload stays
//! intercepted throughout, with no `detach` needed.

use aya::maps::MapData;
use iron_proxy::intercept::Interceptor;

use super::support::*;
use super::{attach, settings};

#[test]
fn takeover_replaces_a_map_whose_layout_changed() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new();
    let pins = TestPins::new();
    let proxy = Server::proxy("127.0.0.1:0", &pins.path);
    let direct = Server::direct("127.0.0.2:0");
    let port = direct.port().to_string();
    let s = settings(&cg, &pins, proxy.addr);
    drop(attach(&s));
    let before = Interceptor::status(&pins.path).expect("status");

    // Fake an older build's counters map: pin a map of another type and size
    // under its name (the old one stays referenced by the attached programs).
    let maps = pins.path.join("maps");
    let counters = maps.join("iron_counters");
    std::fs::remove_file(&counters).expect("unpin counters");
    MapData::from_pin(maps.join("iron_proxy_socks"))
        .expect("open a map of another layout")
        .pin(&counters)
        .expect("pin it as iron_counters");
    let ran = run_workload(&cg, None, &["tcp", "127.0.0.2", &port]);
    assert_eq!(
        ran.lines,
        vec![format!("tcp ok 127.0.0.2 {port} proxy|127.0.0.2:{port}")],
        "the old programs still intercept"
    );

    let _ic = attach(&s);
    let after = Interceptor::status(&pins.path).expect("status");
    for (b, a) in before.links.iter().zip(&after.links) {
        assert_eq!(b.link_id, a.link_id, "{}: the link is kept", a.hook);
        assert_ne!(b.prog_id, a.prog_id, "{} got the new program", a.hook);
    }
    let leftovers: Vec<_> = std::fs::read_dir(&maps)
        .expect("maps dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with("_replaced"))
        .collect();
    assert!(leftovers.is_empty(), "replaced pins removed: {leftovers:?}");

    let ran = run_workload(&cg, None, &["tcp", "127.0.0.2", &port]);
    assert_eq!(
        ran.lines,
        vec![format!("tcp ok 127.0.0.2 {port} proxy|127.0.0.2:{port}")],
        "intercepted by the new programs"
    );
    let counters = Interceptor::status(&pins.path)
        .expect("status")
        .counters
        .expect("a fresh counters map of the right layout");
    assert_eq!(counters.redirected, 1, "counters restart with the new map");
}
