//! `proxy.max_connections_per_client` under eBPF interception: every redirected connection
//! reaches the transparent listener from loopback, so the cap counts each workload (its uid
//! and cgroup, from the interception record) rather than the address they all share.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use iron_proxy_tests::cgroup::system_python;
use iron_proxy_tests::process::ChildGuard;
use iron_proxy_tests::*;
use serde_json::json;

use super::lab::*;

/// Opens N TCP connections to `host:port` (redirected to the transparent listener), prints a
/// line once they are all open, then holds them until a line arrives on stdin.
const HOG: &str = r#"
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
conns = [socket.create_connection((host, port), timeout=10) for _ in range(n)]
print(len(conns), flush=True)
sys.stdin.readline()
"#;

/// The cap per client.
const CAP: u32 = 4;

/// A workload holding its `proxy.max_connections_per_client` connections (and refused its
/// next one) leaves another workload, in another cgroup, served. Before, both were
/// 127.0.0.1 to the cap: the second workload's connection was closed as soon as it was
/// accepted.
#[test]
fn one_workload_at_its_connection_cap_leaves_the_others_served() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let other = TestCgroup::new();
    let lab = Lab::start_with(&net, |c| {
        c["intercept"]["cgroups"]
            .as_array_mut()
            .expect("cgroups list")
            .push(json!(other.path()));
        c["proxy"] = json!({"max_connections_per_client": CAP});
    });

    // The hog opens one more than the cap: the last is refused and audited as its workload's.
    let mut cmd = Command::new(system_python());
    cmd.args([
        "-c",
        HOG,
        &up.ip().to_string(),
        "80",
        &(CAP + 1).to_string(),
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    lab.cg.enter(&mut cmd, None);
    let mut hog = ChildGuard::spawn("connection hog", &mut cmd);
    let out = hog.child_mut().stdout.take().expect("hog stdout");
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .expect("the hog's count");
    assert_eq!(line.trim(), (CAP + 1).to_string(), "the hog's connects");
    let refused = lab
        .px
        .wait_for_audit(|a| a.str("reason") == Some("client_connection_limit"));
    // The hog holds its connections open: a workload in another cgroup is still served.
    let r = workload_curl(
        &lab.px,
        &other,
        &[
            "--resolve",
            &resolve("httpbin.test", 80, up.ip()),
            "http://httpbin.test/anything/other-workload",
        ],
    );
    r.expect_status(200);
    let rec = lab.audit_for("/anything/other-workload");
    assert!(rec.is_allowed(), "{rec}");
    assert_eq!(
        rec.pointer("/client/cgroup").and_then(|v| v.as_str()),
        Some(other.relative()),
        "{rec}"
    );
    // The refusal was the hog's, named as its workload's.
    assert_eq!(refused.str("mode"), Some("transparent"), "{refused}");
    // The process is named as interception recorded it (its cgroup's name only once cached:
    // the refusal walks no cgroup hierarchy on the accept loop).
    assert_eq!(
        refused.pointer("/client/comm").and_then(|v| v.as_str()),
        Some("python3"),
        "the refusal names the hog's process: {refused}"
    );
    assert_eq!(refused.pointer("/client/uid"), Some(&json!(0)), "{refused}");
    let error = refused.str("error").unwrap_or_default();
    assert!(
        error.starts_with(&format!(
            "{CAP} connections already open from the workload of uid 0 in cgroup id "
        )),
        "{refused}"
    );

    let refusals = lab
        .px
        .audit()
        .iter()
        .filter(|a| a.str("reason") == Some("client_connection_limit"))
        .count();
    assert_eq!(
        refusals, 1,
        "only the hog's connection over the cap was refused"
    );

    hog.child_mut()
        .stdin
        .take()
        .expect("hog stdin")
        .write_all(b"done\n")
        .expect("release the hog");
    drop(hog);
    drop(lab);
}
