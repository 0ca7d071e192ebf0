//! The data plane's metrics with real clients, scraped and parsed by the official
//! `prometheus_client` parser: body bytes equal to what curl and Python requests sent and
//! got (through `https_listen` and a CONNECT tunnel), one upstream connect for requests
//! that share a pooled connection while every request gets its response-head time,
//! splice bytes equal to the audit records' `bytes_sent`/`bytes_received` (a WebSocket, an
//! sni-only passthrough through CONNECT, a response the client cut short), the open
//! connection gauges by listener, and connections refused by
//! `proxy.max_connections_per_client` counted as the audit log records them.

use std::io::{Read, Write};
use std::time::Duration;

use iron_proxy_tests::*;
use serde_json::Value;

use super::metrics::{sample, scrape};

type Samples = Vec<(String, Value, f64)>;

/// `name` with `labels` in `s`, or 0 for a series not there (the old binary has none).
fn at(s: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(s, name, labels).unwrap_or(0.0)
}

/// How much `name{labels}` grew from `before` to `after`; fails when the series is absent
/// from `after`.
fn delta(before: &Samples, after: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let now = sample(after, name, labels)
        .unwrap_or_else(|| panic!("no series {name}{labels:?} in the scrape: {after:?}"));
    now - at(before, name, labels)
}

/// The proxy's metrics once `ready` holds for them (scraped again until it does, for at most
/// `secs` seconds).
fn scrape_when(
    px: &ProxyProcess,
    secs: u64,
    what: &str,
    ready: impl Fn(&Samples) -> bool,
) -> Samples {
    wait_until(Duration::from_secs(secs), what, || {
        let s = scrape(px);
        ready(&s).then_some(s)
    })
}

const REQUEST_BODY: &str = "iron_proxy_request_body_bytes_total";
const RESPONSE_BODY: &str = "iron_proxy_response_body_bytes_total";
const SPLICED: &str = "iron_proxy_spliced_bytes_total";
const CONNECTS: &str = "iron_proxy_upstream_connect_duration_seconds_count";
const HEADS: &str = "iron_proxy_upstream_response_header_duration_seconds_count";

/// POSTs `argv[3]` bytes to `https://bytes.test/anything`, then GETs `/bytes/argv[4]`,
/// through the CONNECT proxy `argv[1]` trusting the CA `argv[2]`, on one keep-alive
/// connection; prints the raw (undecoded) body sizes it got.
const REQUESTS_VIA_CONNECT: &str = r#"
import json, sys, requests
proxy, ca, upload, download = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
s = requests.Session()
s.trust_env = False
s.proxies = {"https": "http://" + proxy}
s.verify = ca
got = []
for method, url, data in [("POST", "https://bytes.test/anything", b"u" * upload),
                          ("GET", "https://bytes.test/bytes/%d" % download, None)]:
    r = s.request(method, url, data=data, stream=True, timeout=20)
    r.raise_for_status()
    got.append(len(b"".join(r.raw.stream(65536, decode_content=False))))
print(json.dumps({"sizes": got}))
"#;

#[test]
fn body_bytes_match_what_clients_sent_and_got_and_a_pooled_connection_is_dialed_once() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("bytes.test").start(&net);
    let px = Proxy::with(
        r#"
proxy:
  tunnel_listen: auto
transforms:
  - name: allowlist
    config:
      domains: ["bytes.test"]
"#,
    )
    .resolver(&net)
    .start();
    let before = scrape(&px);

    // curl over https_listen, HTTP/1.1 (so the upstream leg is HTTP/1 and pooled), one
    // process after another: an upload of a known size, then downloads.
    let dir = tempfile::tempdir().expect("temp dir");
    let upload = dir.path().join("upload");
    let upload_len = 300_000usize;
    std::fs::write(&upload, vec![b'x'; upload_len]).expect("upload file");
    let mut got = 0usize;
    let post = Curl::get(&up.url("/anything/upload"))
        .args(["--http1.1", "--data-binary"])
        .args([format!("@{}", upload.display())])
        .via(&px)
        .run();
    assert_eq!(post.status, 200, "{post}");
    got += post.body_bytes.len();
    for n in [100_000usize, 1] {
        let r = Curl::get(&up.url(&format!("/bytes/{n}")))
            .args(["--http1.1"])
            .via(&px)
            .run();
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body_bytes.len(), n, "{r}");
        got += n;
    }
    // Python requests through a CONNECT tunnel (MITM inside), on one keep-alive connection.
    let py = python(
        REQUESTS_VIA_CONNECT,
        [
            px.tunnel_addr().to_string(),
            px.ca().to_string(),
            "12345".to_string(),
            "70000".to_string(),
        ],
    );
    let sizes: Vec<usize> = py.assert_ok().json()["sizes"]
        .as_array()
        .expect("sizes")
        .iter()
        .map(|v| v.as_u64().expect("a size") as usize)
        .collect();
    assert_eq!(sizes.get(1), Some(&70_000), "{py:?}");
    got += sizes.iter().sum::<usize>();
    let requests = 5.0;
    px.wait_for_audits(5, |a| a.host() == Some("bytes.test") && a.is_allowed());

    let after = scrape_when(&px, 10, "the counts to settle", |s| {
        delta(&before, s, HEADS, &[]) >= requests
    });
    assert_eq!(
        delta(&before, &after, REQUEST_BODY, &[]),
        (upload_len + 12_345) as f64,
        "the request bodies, each counted once: {after:?}"
    );
    assert_eq!(
        delta(&before, &after, RESPONSE_BODY, &[]),
        got as f64,
        "the response bodies the clients got: {after:?}"
    );
    assert_eq!(
        delta(&before, &after, HEADS, &[]),
        requests,
        "one response head per request: {after:?}"
    );
    // Every request went out on the one upstream connection, handed from client connection
    // to client connection through the idle pool: one dial, not one per request.
    let success = [("outcome", "success")];
    assert_eq!(
        delta(&before, &after, CONNECTS, &success),
        1.0,
        "one dial for five requests on a pooled connection: {after:?}"
    );
    assert_eq!(
        delta(&before, &after, CONNECTS, &[("outcome", "connect_failed")]),
        0.0
    );
    let open = |p: &str| {
        at(
            &after,
            "iron_proxy_upstream_connections",
            &[("protocol", p)],
        )
    };
    assert_eq!((open("http1"), open("http2")), (1.0, 0.0), "{after:?}");
    assert_eq!(
        sample(&after, "iron_proxy_upstream_idle_connections", &[]),
        Some(1.0),
        "back in the idle pool: {after:?}"
    );
    for kind in ["websocket", "passthrough"] {
        for direction in ["sent", "received"] {
            let labels = [("kind", kind), ("direction", direction)];
            assert_eq!(delta(&before, &after, SPLICED, &labels), 0.0, "{labels:?}");
        }
    }
    assert_eq!(
        up.requests()
            .iter()
            .filter(|q| q.path().starts_with("/anything"))
            .count(),
        2,
        "each upload reached the upstream once"
    );

    // An allowed host whose port refuses connections: one failed dial, as the record says.
    let refused = Curl::get("https://bytes.test:8443/get")
        .through_connect(&px)
        .run();
    assert_eq!(refused.status, 502, "{refused}");
    let rec = px.wait_for_audit(|a| a.str("reason") == Some("connect_failed"));
    assert_eq!(rec.host(), Some("bytes.test"), "{rec}");
    let failed = scrape_when(&px, 10, "the failed dial counted", |s| {
        at(s, CONNECTS, &[("outcome", "connect_failed")]) >= 1.0
    });
    assert_eq!(
        delta(&before, &failed, CONNECTS, &[("outcome", "connect_failed")]),
        1.0,
        "{failed:?}"
    );
    assert_eq!(
        delta(&before, &failed, HEADS, &[]),
        requests,
        "no response head from an upstream never reached"
    );
}

/// Connects to `wss://ws.test/ws` over a socket to `argv[1]:argv[2]` (the proxy's
/// `https_listen`) trusting the CA `argv[3]`, echoes a text and a binary message, and closes.
/// The asyncio client: see "WebSockets from Python" in tests/README.md.
const WS_ECHO: &str = r#"
import asyncio, json, socket, ssl, sys
from websockets.asyncio.client import connect
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
async def main():
    ctx = ssl.create_default_context(cafile=ca)
    sock = socket.create_connection((host, port), timeout=10)
    got = []
    async with connect("wss://ws.test/ws", sock=sock, ssl=ctx, server_hostname="ws.test",
                       open_timeout=10, compression=None) as ws:
        for msg in ["t" * 300, b"\x00" * 5000]:
            await ws.send(msg)
            got.append(len(await asyncio.wait_for(ws.recv(), 10)))
    return got
print(json.dumps({"got": asyncio.run(main())}))
"#;

/// The splice counters of `kind`: (sent, received) from `before` to `after`.
fn spliced(before: &Samples, after: &Samples, kind: &str) -> (f64, f64) {
    let d = |direction| {
        delta(
            before,
            after,
            SPLICED,
            &[("kind", kind), ("direction", direction)],
        )
    };
    (d("sent"), d("received"))
}

/// The scrape once the `kind` splice is counted, after checking that the counters moved, byte
/// for byte, what `rec` says it carried.
fn spliced_as_recorded(
    px: &ProxyProcess,
    before: &Samples,
    kind: &str,
    rec: &AuditRecord,
) -> Samples {
    let after = scrape_when(px, 10, "the splice counted", |s| {
        at(s, SPLICED, &[("kind", kind), ("direction", "received")]) > 0.0
    });
    assert_eq!(
        spliced(before, &after, kind),
        record_bytes(rec),
        "the counters and the record, byte for byte: {rec}"
    );
    after
}

/// A record's `(bytes_sent, bytes_received)`.
fn record_bytes(rec: &AuditRecord) -> (f64, f64) {
    let b = |k: &str| {
        rec.pointer(k)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("no {k} in {rec}")) as f64
    };
    (b("/bytes_sent"), b("/bytes_received"))
}

#[test]
fn a_websocket_and_an_sni_only_tunnel_count_the_bytes_their_records_carry() {
    require_root!();
    let net = FakeInternet::new();
    let _ws = Upstream::https("ws.test").start(&net);
    let px = Proxy::with(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["ws.test"]
"#,
    )
    .resolver(&net)
    .start();
    let before = scrape(&px);
    let https = px.https_addr();
    let out = python(
        WS_ECHO,
        [
            https.ip().to_string(),
            https.port().to_string(),
            px.ca().to_string(),
        ],
    );
    assert_eq!(
        out.assert_ok().json()["got"],
        serde_json::json!([300, 5000])
    );
    let rec = px.wait_for_audit(|a| a.path() == Some("/ws"));
    assert_eq!(rec.status_code(), Some(101), "{rec}");
    let (sent, received) = record_bytes(&rec);
    // The client's frames carry 300 + 5000 payload bytes (masked, so more on the wire).
    assert!(sent > 5300.0 && received > 5300.0, "{rec}");
    let after = spliced_as_recorded(&px, &before, "websocket", &rec);
    assert_eq!(spliced(&before, &after, "passthrough"), (0.0, 0.0));
    assert_eq!(
        delta(&before, &after, RESPONSE_BODY, &[]),
        0.0,
        "a 101 has no body, and the frames are not HTTP bodies"
    );
    assert_eq!(delta(&before, &after, REQUEST_BODY, &[]), 0.0);
    assert_eq!(
        delta(&before, &after, HEADS, &[]),
        1.0,
        "the 101 is a response head"
    );
    drop(px);

    // sni-only passthrough through a CONNECT tunnel: the TLS bytes, as the record counts them.
    let up = Upstream::https("bytes.test").start(&net);
    let px = Proxy::with(
        r#"
proxy:
  tunnel_listen: auto
tls:
  mode: sni-only
transforms:
  - name: allowlist
    config:
      domains: ["bytes.test"]
"#,
    )
    .resolver(&net)
    .start();
    let before = scrape(&px);
    let ca = net.ca_bundle();
    let r = Curl::new([
        "--cacert".to_string(),
        ca.to_str().expect("utf-8 path").to_string(),
        "--proxy".to_string(),
        format!("http://{}", px.tunnel_addr()),
        up.url("/bytes/200000"),
    ])
    .run();
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body_bytes.len(), 200_000, "{r}");
    let rec = px.wait_for_audit(|a| a.str("mode") == Some("sni-only") && a.is_allowed());
    let (_, received) = record_bytes(&rec);
    assert!(received > 200_000.0, "the body, in TLS records: {rec}");
    let after = spliced_as_recorded(&px, &before, "passthrough", &rec);
    assert_eq!(
        delta(&before, &after, RESPONSE_BODY, &[]),
        0.0,
        "passed through, not counted again as an HTTP body"
    );
    assert_eq!(
        delta(&before, &after, CONNECTS, &[("outcome", "success")]),
        1.0,
        "the passthrough's TCP connect"
    );
}

#[test]
fn a_response_the_client_cut_short_counts_what_its_record_says_was_sent() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("bytes.test").start(&net);
    let px = Proxy::with(
        r#"
transforms:
  - name: allowlist
    config:
      domains: ["bytes.test"]
"#,
    )
    .resolver(&net)
    .start();
    let before = scrape(&px);
    // 64 MiB asked for, 256 KiB read, then the connection closed (an HTTP/1.1 client over
    // TLS; the proxy's CA trusted).
    let script = r#"
import socket, ssl, sys
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
s = ctx.wrap_socket(socket.create_connection((host, port), timeout=10), server_hostname="bytes.test")
s.sendall(b"GET /bytes/67108864 HTTP/1.1\r\nHost: bytes.test\r\n\r\n")
n = 0
while n < 262144:
    d = s.recv(65536)
    if not d:
        break
    n += len(d)
s.close()
print(n)
"#;
    let https = px.https_addr();
    python(
        script,
        [
            https.ip().to_string(),
            https.port().to_string(),
            px.ca().to_string(),
        ],
    )
    .assert_ok();
    let rec = px.wait_for_audit(|a| a.path() == Some("/bytes/67108864"));
    let cut = rec
        .pointer("/bytes_received")
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("a cut response says how much went out: {rec}"));
    assert!(cut < 64 << 20, "{rec}");
    let after = scrape(&px);
    assert_eq!(
        delta(&before, &after, RESPONSE_BODY, &[]),
        cut as f64,
        "the counter and the record: {rec}"
    );
}

#[test]
fn open_connections_by_listener_and_refusals_over_the_per_client_cap() {
    require_root!();
    let net = FakeInternet::new();
    let px = Proxy::with(
        r#"
proxy:
  tunnel_listen: auto
  max_connections: 50
  max_connections_per_client: 2
transforms:
  - name: allowlist
    config:
      domains: ["nothing.test"]
"#,
    )
    .resolver(&net)
    .start();
    let s = scrape(&px);
    assert_eq!(
        sample(&s, "iron_proxy_max_connections", &[]),
        Some(50.0),
        "{s:?}"
    );
    for reason in ["connection_limit", "client_connection_limit"] {
        assert!(
            sample(&s, "iron_proxy_rejections_total", &[("reason", reason)]).is_some(),
            "from the first scrape: {s:?}"
        );
    }
    let open = |s: &Samples, listener: &str| {
        sample(
            s,
            "iron_proxy_client_connections",
            &[("listener", listener)],
        )
    };
    let refused = |s: &Samples| {
        sample(
            s,
            "iron_proxy_rejections_total",
            &[("reason", "client_connection_limit")],
        )
    };
    let audited = || {
        px.audit()
            .iter()
            .filter(|a| a.str("reason") == Some("client_connection_limit"))
            .count() as f64
    };
    // From an address of its own: two held open (one per listener), a third refused at once.
    let client = std::net::Ipv4Addr::new(127, 0, 0, 77);
    let mut held = vec![
        connect_from(client, px.http_addr()),
        connect_from(client, px.tunnel_addr()),
    ];
    let s = scrape_when(&px, 10, "both counted", |s| {
        open(s, "http") >= Some(1.0) && open(s, "tunnel") == Some(1.0)
    });
    assert_eq!(open(&s, "https"), Some(0.0), "{s:?}");
    assert_eq!(open(&s, "transparent"), Some(0.0), "{s:?}");
    let before = audited();
    let mut third = connect_from(client, px.http_addr());
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: nothing.test\r\n\r\n");
    let mut buf = Vec::new();
    let _ = third.read_to_end(&mut buf);
    assert!(buf.is_empty(), "refused without an answer: {buf:?}");
    let rec = px.wait_for_audit(|a| {
        a.str("reason") == Some("client_connection_limit")
            && a.str("remote_addr")
                .is_some_and(|r| r.starts_with("127.0.0.77:"))
    });
    assert_eq!(rec.action(), Some("reject"), "{rec}");
    assert_eq!(audited(), before + 1.0, "one refusal of ours");
    let s = scrape_when(&px, 10, "the refusals counted as audited", |s| {
        refused(s) == Some(audited())
    });
    assert_eq!(
        open(&s, "tunnel"),
        Some(1.0),
        "a refused connection is not open: {s:?}"
    );
    held.clear();
    drop(third);
    scrape_when(&px, 20, "the gauges back to zero", |s| {
        ["http", "https", "tunnel", "transparent"]
            .iter()
            .all(|l| open(s, l) == Some(0.0))
    });
}
