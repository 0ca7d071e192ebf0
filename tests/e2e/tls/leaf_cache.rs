//! Leaf minting under load: 200 concurrent handshakes for one name the proxy has never seen
//! all get the same leaf. Leaves carry random serials, so one certificate means one mint.

use super::*;

/// argv: proxy host, port, CA, server name, count. Opens `count` TCP connections, then
/// handshakes on all of them at once; prints the distinct leaf digests and any errors.
const HANDSHAKES: &str = r#"
import hashlib, json, socket, ssl, sys, threading
host, port, ca, name, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = ssl.create_default_context(cafile=ca)
socks = [socket.create_connection((host, port), timeout=30) for _ in range(n)]
start = threading.Barrier(n)
lock = threading.Lock()
digests, serials, errors = [], set(), []
def handshake(s):
    try:
        start.wait(timeout=30)
        with ctx.wrap_socket(s, server_hostname=name) as t:
            der = t.getpeercert(binary_form=True)
            serial = t.getpeercert()["serialNumber"]
        with lock:
            digests.append(hashlib.sha256(der).hexdigest())
            serials.add(serial)
    except Exception as e:
        with lock:
            errors.append(repr(e))
threads = [threading.Thread(target=handshake, args=(s,)) for s in socks]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({"ok": len(digests), "distinct": sorted(set(digests)),
                  "serials": sorted(serials), "errors": errors[:5]}))
"#;

fn handshakes(px: &ProxyProcess, name: &str, n: usize) -> serde_json::Value {
    let https = px.https_addr();
    let out = python(
        HANDSHAKES,
        [
            https.ip().to_string(),
            https.port().to_string(),
            px.ca().to_string(),
            name.to_string(),
            n.to_string(),
        ],
    );
    out.assert_ok().json()
}

#[test]
fn two_hundred_concurrent_handshakes_for_a_new_name_mint_one_leaf() {
    require_root!();
    let net = FakeInternet::new();
    let px = Proxy::with(MITM).resolver(&net).start();

    let v = handshakes(&px, "fresh.httpbin.test", 200);
    assert_eq!(v["ok"], 200, "every handshake succeeds: {v}");
    let distinct = v["distinct"].as_array().map_or(0, Vec::len);
    assert_eq!(
        distinct, 1,
        "200 concurrent handshakes for one new name must share one minted leaf: {v}"
    );
    assert_eq!(v["serials"].as_array().map_or(0, Vec::len), 1, "{v}");
    if let Some(mints) = cert_cache_mints(&px) {
        assert_eq!(mints, 1.0, "iron_proxy_cert_cache_total{{result=\"mint\"}}");
    }

    // The cache keeps it; another name gets its own leaf.
    let again = handshakes(&px, "fresh.httpbin.test", 1);
    assert_eq!(
        again["distinct"], v["distinct"],
        "the cached leaf is reused"
    );
    let other = handshakes(&px, "other.httpbin.test", 1);
    assert_ne!(other["distinct"], v["distinct"], "a leaf per name");
}

/// `iron_proxy_cert_cache_total{result="mint"}` from `/metrics`, once the metrics server
/// exposes the leaf cache (`None` until then, or when the listener is not up).
fn cert_cache_mints(px: &ProxyProcess) -> Option<f64> {
    let url = format!("http://{}/metrics", hostport(px.metrics_addr()));
    let r = Curl::get(&url).max_time(5).run();
    if r.status != 200 {
        eprintln!(
            "no /metrics yet ({}); relying on the leaf serials",
            r.status
        );
        return None;
    }
    r.body
        .lines()
        .find(|l| l.starts_with("iron_proxy_cert_cache_total") && l.contains(r#"result="mint""#))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
