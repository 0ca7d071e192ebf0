//! `/metrics` parsed by the official `prometheus_client` parser, `/healthz` and `/readyz`;
//! the counts agree with the audit log (by action, reason and status class), and the open
//! connections gauge returns to zero.

use std::time::Duration;

use iron_proxy_tests::*;
use serde_json::Value;

use super::status_of;

/// Every sample of the proxy's `/metrics`, parsed by the official `prometheus_client` parser:
/// `(sample name, labels, value)`.
pub(super) fn scrape(px: &ProxyProcess) -> Vec<(String, Value, f64)> {
    let script = r#"
import json, sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
out = [[s.name, s.labels, s.value] for f in text_string_to_metric_families(text) for s in f.samples]
print(json.dumps(out))
"#;
    let r = python(script, [format!("http://{}/metrics", px.metrics_addr())]);
    r.assert_ok();
    r.json()
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            (
                s[0].as_str().unwrap_or_default().to_string(),
                s[1].clone(),
                s[2].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect()
}

/// The value of sample `name` whose labels include `labels`.
pub(super) fn sample(
    samples: &[(String, Value, f64)],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l[*k] == *v))
        .map(|(_, _, v)| *v)
}

#[test]
fn metrics_count_requests_by_action_and_health_endpoints_answer() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("httpbin.test").start(&net);
    let px = Proxy::with(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["httpbin.test", "nxdomain.test"]
"#,
    )
    .resolver(&net)
    .start();

    let get = |path: &str| Curl::get(&format!("http://{}{path}", px.metrics_addr())).run();
    assert_eq!(get("/healthz").status, 200);
    assert_eq!(get("/readyz").status, 200);

    let before = scrape(&px);
    for (name, labels) in [
        (
            "iron_proxy_requests_total",
            vec![("action", "allow"), ("mode", "https")],
        ),
        (
            "iron_proxy_requests_total",
            vec![("action", "error"), ("mode", "https")],
        ),
        ("iron_proxy_reloads_total", vec![("result", "success")]),
    ] {
        assert_eq!(
            sample(&before, name, &labels),
            Some(0.0),
            "{name}{labels:?} starts at zero"
        );
    }
    assert!(
        sample(&before, "iron_proxy_build_info", &[]).is_some(),
        "build_info exported: {before:?}"
    );

    for _ in 0..3 {
        assert_eq!(status_of(&px, "httpbin.test"), 200);
    }
    for _ in 0..2 {
        assert_eq!(status_of(&px, "evil.test"), 403);
    }
    assert_eq!(
        status_of(&px, "nxdomain.test"),
        502,
        "allowed but does not resolve"
    );

    // The harness's readiness probe (a connect without data) is audited as a reject too, so
    // the expected counts come from the audit log: the metrics must agree with it exactly.
    let audited = |action: &str| {
        px.audit()
            .iter()
            .filter(|r| r.action() == Some(action) && r.str("mode") == Some("https"))
            .count() as f64
    };
    let count = |s: &[(String, Value, f64)], action: &str| {
        sample(
            s,
            "iron_proxy_requests_total",
            &[("action", action), ("mode", "https")],
        )
    };
    let after = wait_until(
        Duration::from_secs(10),
        "metrics to agree with the audit log",
        || {
            let s = scrape(&px);
            ["allow", "reject", "error"]
                .iter()
                .all(|a| count(&s, a) == Some(audited(a)))
                .then_some(s)
        },
    );
    let probes = px
        .audit()
        .iter()
        .filter(|r| r.str("reason") == Some("no_client_data"))
        .count() as f64;
    assert_eq!(count(&after, "allow"), Some(3.0), "{after:?}");
    assert_eq!(count(&after, "reject"), Some(2.0 + probes), "{after:?}");
    assert_eq!(count(&after, "error"), Some(1.0), "{after:?}");
    assert_eq!(
        sample(
            &after,
            "iron_proxy_upstream_errors_total",
            &[("reason", "dns_failure")]
        ),
        Some(1.0),
        "{after:?}"
    );
    let timed = |action: &str| {
        sample(
            &after,
            "iron_proxy_request_duration_seconds_count",
            &[("action", action), ("mode", "https")],
        )
    };
    assert_eq!(timed("allow"), Some(3.0), "{after:?}");
    assert_eq!(timed("reject"), Some(2.0 + probes), "{after:?}");
    assert_eq!(timed("error"), Some(1.0), "{after:?}");
    // Refusals by reason, and what the clients got by status class.
    assert_eq!(
        sample(
            &after,
            "iron_proxy_rejections_total",
            &[("reason", "not_allowlisted")]
        ),
        Some(2.0),
        "{after:?}"
    );
    let class = |c: &str| sample(&after, "iron_proxy_responses_total", &[("code", c)]);
    assert_eq!(class("2xx"), Some(3.0), "{after:?}");
    assert_eq!(class("4xx"), Some(2.0), "{after:?}");
    assert_eq!(class("5xx"), Some(1.0), "{after:?}");
    assert_eq!(class("3xx"), Some(0.0), "at zero from the start: {after:?}");

    // Open client connections: one held open, then none.
    let open = |s: &[(String, Value, f64)]| {
        sample(s, "iron_proxy_client_connections", &[("listener", "http")])
    };
    let held = std::net::TcpStream::connect(px.http_addr()).expect("connect");
    wait_until(
        Duration::from_secs(10),
        "the held connection counted",
        || (open(&scrape(&px)) == Some(1.0)).then_some(()),
    );
    drop(held);
    wait_until(Duration::from_secs(20), "the gauge back to zero", || {
        (open(&scrape(&px)) == Some(0.0)).then_some(())
    });
    assert_eq!(get("/readyz").status, 200, "still ready");
}
