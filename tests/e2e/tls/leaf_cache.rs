//! Leaf minting under load: 200 concurrent handshakes for one name the proxy has never seen
//! all get the same leaf. Leaves carry random serials, so one certificate means one mint.
//! And made-up names cannot push another client's leaf out of the cache: neither names no
//! rule allows (each still gets a leaf of its own, so the client reads its 403) nor names
//! made up under an allowed wildcard.

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

/// argv: proxy host, port, CA, source address, request (`get` or `handshake`), names. For
/// each name in turn: connects from the source address, handshakes verifying the leaf for
/// that name against the proxy's CA, then sends `GET /` and reads the status (`get`) or
/// closes (`handshake`). Prints the statuses (0 after a handshake only) and any errors.
const NAMES: &str = r#"
import json, socket, ssl, sys
host, port, ca, source, what = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
statuses, errors = [], []
for name in sys.argv[6:]:
    try:
        s = socket.create_connection((host, port), timeout=30, source_address=(source, 0))
        with ctx.wrap_socket(s, server_hostname=name) as t:
            if what == "get":
                t.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
                head = b""
                while b"\r\n" not in head:
                    chunk = t.recv(4096)
                    if not chunk:
                        break
                    head += chunk
                statuses.append(int(head.split(b" ")[1]))
            else:
                statuses.append(0)
    except Exception as e:
        errors.append(f"{name}: {e!r}")
print(json.dumps({"statuses": statuses, "errors": errors}))
"#;

/// A proxy whose allowlist has one name and one wildcard, with a leaf cache of 8.
fn small_cache_proxy() -> ProxyProcess {
    let config = r#"
transforms:
  - name: allowlist
    config:
      domains: ["kept.test", "*.wild.test"]
"#;
    Proxy::with(config)
        .env("IRON_TLS_CERT_CACHE_SIZE", "8")
        .start()
}

/// Runs [`NAMES`] from `source` for `names`; panics on any error.
fn connect_names(px: &ProxyProcess, source: &str, what: &str, names: &[String]) -> Vec<u64> {
    let https = px.https_addr();
    let mut args = vec![
        https.ip().to_string(),
        https.port().to_string(),
        px.ca().to_string(),
        source.to_string(),
        what.to_string(),
    ];
    args.extend(names.iter().cloned());
    let v = python(NAMES, args).assert_ok().json();
    assert_eq!(v["errors"], serde_json::json!([]), "{v}");
    v["statuses"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
        .unwrap_or_default()
}

/// `iron_proxy_cert_cache_total{result}` from `/metrics`, waiting for the metrics server.
fn cert_cache(px: &ProxyProcess, result: &str) -> f64 {
    let url = format!("http://{}/metrics", hostport(px.metrics_addr()));
    let label = format!("result=\"{result}\"");
    wait_until(Duration::from_secs(10), "the leaf cache's metrics", || {
        let r = Curl::get(&url).max_time(5).run();
        r.body
            .lines()
            .find(|l| l.starts_with("iron_proxy_cert_cache_total") && l.contains(&label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    })
}

/// One client (127.0.0.2) connects with 30 made-up names `name(i)`; another client's leaf,
/// for `kept.test`, is still cached afterwards: its next connection is a hit, not a mint.
fn flood_keeps_the_other_clients_leaf(
    what: &str,
    name: impl Fn(usize) -> String,
) -> (ProxyProcess, Vec<u64>) {
    let px = small_cache_proxy();
    let kept = ["kept.test".to_string()];
    connect_names(&px, "127.0.0.1", "handshake", &kept);
    assert_eq!(cert_cache(&px, "mint"), 1.0, "kept.test's leaf minted");

    let names: Vec<String> = (0..30).map(name).collect();
    let statuses = connect_names(&px, "127.0.0.2", what, &names);
    assert_eq!(
        cert_cache(&px, "mint"),
        31.0,
        "a leaf per made-up name (each handshake verified its own name)"
    );

    let hits = cert_cache(&px, "hit");
    connect_names(&px, "127.0.0.1", "handshake", &kept);
    assert_eq!(
        cert_cache(&px, "mint"),
        31.0,
        "kept.test's leaf is still cached: no mint for 127.0.0.1's next connection"
    );
    assert_eq!(cert_cache(&px, "hit"), hits + 1.0, "a hit instead");
    (px, statuses)
}

#[test]
fn names_no_rule_allows_do_not_push_another_clients_leaf_out() {
    let (px, statuses) =
        flood_keeps_the_other_clients_leaf("get", |i| format!("made-up-{i}.denied.test"));
    assert!(
        statuses.len() == 30 && statuses.iter().all(|&s| s == 403),
        "each refused name's client read its 403 over a leaf for its name: {statuses:?}"
    );
    assert_eq!(
        cert_cache(&px, "refused_mint"),
        30.0,
        "their leaves went to the refused names' cache"
    );
}

#[test]
fn names_made_up_under_an_allowed_wildcard_do_not_push_another_clients_leaf_out() {
    let (px, _) =
        flood_keeps_the_other_clients_leaf("handshake", |i| format!("made-up-{i}.wild.test"));
    assert_eq!(
        cert_cache(&px, "refused_mint"),
        0.0,
        "the wildcard allows them"
    );
    // 127.0.0.2 filled the 7 free places of the 8, then each of its 23 other names took
    // the place of its own oldest leaf: it held more than its share (8 / 2 clients).
    assert_eq!(cert_cache(&px, "displaced"), 23.0);
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

/// A client minting its first name in a full cache takes the place of the oldest leaf of the
/// client holding the most, not of the least recently used leaf (here another client's,
/// within its share).
#[test]
fn a_new_clients_first_name_takes_the_place_of_the_flooders_leaf() {
    let px = small_cache_proxy();
    let kept = ["kept.test".to_string()];
    connect_names(&px, "127.0.0.1", "handshake", &kept);
    let names: Vec<String> = (0..30).map(|i| format!("made-up-{i}.wild.test")).collect();
    connect_names(&px, "127.0.0.2", "handshake", &names);
    // kept.test is now the least recently used leaf; 127.0.0.2 holds the 7 others.
    connect_names(
        &px,
        "127.0.0.3",
        "handshake",
        &["new.wild.test".to_string()],
    );
    assert_eq!(cert_cache(&px, "mint"), 32.0, "one leaf per name");

    connect_names(&px, "127.0.0.1", "handshake", &kept);
    assert_eq!(
        cert_cache(&px, "mint"),
        32.0,
        "kept.test's leaf is still cached: no mint for 127.0.0.1's next connection"
    );
    // 23 of 127.0.0.2's own, then its oldest for 127.0.0.3's name. (With plain LRU the
    // eviction moka applies lazily may come after kept.test's hit above, and take another
    // leaf: this count is what tells the two apart here.)
    assert_eq!(cert_cache(&px, "displaced"), 24.0);
}
