//! A socket at the transparent listener's address that is not the proxy's
//! (another local user bound the port while the proxy was down) receives no
//! redirected connection: with `listener_priority`, the connect programs
//! look the listener up and refuse the connect (EPERM) unless it carries
//! the proxy's mark.

use super::*;

#[test]
fn a_listener_without_the_proxys_mark_receives_nothing() {
    if !privileged() {
        return;
    }
    let cg = TestCgroup::new();
    let pins = TestPins::new();
    let direct = Server::direct("127.0.0.2:0");
    let target = direct.port().to_string();

    // The proxy's own, marked listener: served as always.
    let marked = Server::marked_proxy("127.0.0.1:0", &pins.path);
    let mut s = settings(&cg, &pins, marked.addr);
    s.listener_priority = true;
    let ic = attach(&s);
    let ran = run_workload(&cg, None, &["tcp", "127.0.0.2", &target]);
    assert_eq!(
        ran.lines,
        vec![format!("tcp ok 127.0.0.2 {target} proxy|{}", direct.addr)]
    );
    assert_eq!(marked.seen().len(), 1);

    // A squatter: an unmarked socket where the redirect points. (A socket of its
    // own on a port it holds from the start: rebinding the marked listener's port
    // after closing it races with the other tests' ephemeral ports.) Before the check
    // it received the workload's connection.
    drop(marked);
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    squatter.set_nonblocking(true).expect("nonblocking");
    let SocketAddr::V4(at) = squatter.local_addr().expect("addr") else {
        panic!("v4")
    };
    s.listen_v4 = at;
    drop(ic);
    let ic = attach(&s);
    let ran = run_workload(&cg, None, &["tcp", "127.0.0.2", &target]);
    assert_eq!(ran.lines, vec![format!("tcp err {EPERM}")]);
    assert!(
        squatter.accept().is_err(),
        "the squatter must not receive the connection"
    );
    let counters = Interceptor::status(&pins.path)
        .expect("status")
        .counters
        .expect("counters");
    assert_eq!(counters.foreign_listener, 1, "{counters:?}");

    // Nobody there: the connect meets a closed port, as before.
    drop(squatter);
    let ran = run_workload(&cg, None, &["tcp", "127.0.0.2", &target]);
    assert_eq!(ran.lines, vec![format!("tcp err {ECONNREFUSED}")]);

    // Without the flag (a loader that does not mark its listener) nothing
    // is checked: an unmarked listener is served.
    let unmarked = Server::proxy("127.0.0.1:0", &pins.path);
    let SocketAddr::V4(at) = unmarked.addr else {
        panic!("v4")
    };
    s.listen_v4 = at;
    s.listener_priority = false;
    drop(ic);
    let ic = attach(&s);
    let ran = run_workload(&cg, None, &["tcp", "127.0.0.2", &target]);
    assert_eq!(
        ran.lines,
        vec![format!("tcp ok 127.0.0.2 {target} proxy|{}", direct.addr)]
    );
    assert_eq!(unmarked.seen().len(), 1);
    drop(ic);
}
