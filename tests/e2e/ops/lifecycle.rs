//! Shutdown: SIGTERM stops accepting, drains the in-flight request, exits 0.

use std::time::Duration;

use iron_proxy_tests::*;
use nix::sys::signal::Signal;

#[test]
fn sigterm_drains_an_in_flight_request_then_exits_0() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let mut px = Proxy::with(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test"]
"#,
    )
    .resolver(&net)
    .start();

    let slow = Curl::get("https://httpbin.test/delay/2").via(&px).spawn();
    up.wait_for_request(|r| r.path() == "/delay/2");
    px.signal(Signal::SIGTERM);

    // New connections are refused while the slow one is still running...
    let https = px.https_addr();
    wait_until(Duration::from_secs(10), "the listener to close", || {
        std::net::TcpStream::connect_timeout(&https, Duration::from_millis(200))
            .is_err()
            .then_some(())
    });
    let metrics = px.metrics_addr();
    assert!(
        std::net::TcpStream::connect_timeout(&metrics, Duration::from_millis(200)).is_err()
            || Curl::get(&format!("http://{metrics}/readyz")).run().status != 200,
        "not ready while draining"
    );
    assert!(px.is_running(), "the proxy waits for the in-flight request");

    // ...and the in-flight one completes.
    let (r, _) = slow.finish();
    assert_eq!(r.status, 200, "{r}");
    assert!(r.body.contains("/delay/2"), "the whole body arrived: {r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/delay/2"));
    assert!(rec.is_allowed(), "{rec}");

    let status = wait_until(Duration::from_secs(15), "the proxy to exit", || {
        (!px.is_running()).then(|| px.stop())
    });
    let status = status.expect("an exit status");
    assert_eq!(
        status.code(),
        Some(0),
        "clean exit after the drain: {status}"
    );
    px.wait_for_log(|l| l.contains("in-flight requests drained"));
}
