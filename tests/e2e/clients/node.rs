//! Node through the MITM (tests/node_client.js): the `https` module and `fetch` (undici's
//! with its ProxyAgent through CONNECT; Node's global one through `https_listen`), trusting
//! the proxy's CA by NODE_EXTRA_CA_CERTS. Keep-alive reuse, a POST with a length and a
//! streamed (chunked) one, a streaming response, and a refused host.

use super::*;

const ORIGIN: &str = "node.test";
const DENIED: &str = "denied.test";

const TRANSFORMS: &str = r#"
  - name: allowlist
    config:
      domains: ["node.test"]
"#;

fn node(via: Via) {
    let net = FakeInternet::new();
    let origin = Origin::start(&net, &[ORIGIN]);
    for client in ["https", "fetch"] {
        write(
            &origin
                .static_root()
                .join(format!("files/{client}/hello.txt")),
            b"hello\n",
        );
    }
    let px = Px::start_for(&net, via, TRANSFORMS);
    let script = paths::repo_root().join("tests/node_client.js");
    let mode = match via {
        Via::Connect => "connect",
        Via::HttpsListen | Via::Transparent { .. } => "direct",
    };
    let mut cmd = px.command(via, &[ORIGIN, DENIED], "node");
    cmd.arg(&script)
        .arg(mode)
        .arg(px.proxy_url())
        .arg(format!("https://{ORIGIN}"))
        .arg(format!("https://{DENIED}"))
        .env("NODE_EXTRA_CA_CERTS", px.client_ca())
        .env("NODE_PATH", paths::node_modules());
    let out = ok(run(&mut cmd));
    let result: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("node printed no JSON ({e}):\n{}", text(&out)));

    for client in ["https", "fetch"] {
        let r = &result[client];
        let gets = r["gets"].as_array().expect("gets");
        assert_eq!(gets.len(), 3, "{client}: {r}");
        for g in gets {
            assert_eq!(g["status"], 200, "{client}: {r}");
            assert_eq!(g["body"], "hello\n", "{client}: {r}");
        }
        for kind in ["post", "chunked"] {
            let p = &r[kind];
            assert_eq!(p["status"], 200, "{client} {kind}: {p}");
            assert_eq!(p["echo"]["len"], p["len"], "{client} {kind}: {p}");
            assert_eq!(p["echo"]["sha256"], p["sha256"], "{client} {kind}: {p}");
        }
        // The streamed upload reached the origin chunked, the other with its length.
        assert_eq!(
            r["chunked"]["echo"]["transfer_encoding"], "chunked",
            "{client}: {r}"
        );
        assert!(
            r["post"]["echo"]["content_length"].is_string(),
            "{client}: {r}"
        );
        // The first line came through while the origin held the rest back.
        assert_eq!(
            r["stream"]["seen"],
            serde_json::json!(["first\n", "released 200", "last\n"]),
            "{client}: the response streams: {r}"
        );
        // The refusal: CONNECT to the host is answered 403; through https_listen the
        // request gets the policy response.
        let d = &r["denied"];
        match (via, client) {
            (Via::Connect, "https") => assert_eq!(d["status"], 403, "{client}: {d}"),
            (Via::Connect, _) => {
                assert!(
                    d["error"].as_str().unwrap_or("").contains("403"),
                    "{client}: {d}"
                )
            }
            (Via::HttpsListen | Via::Transparent { .. }, _) => {
                assert_eq!(d["status"], 403, "{client}: {d}");
                assert_eq!(d["blocked"], "1", "{client}: {d}");
                assert!(
                    d["body"]
                        .as_str()
                        .unwrap_or("")
                        .contains("Blocked by iron-proxy policy"),
                    "{client}: {d}"
                );
            }
        }
        // Keep-alive: the `https` agent (one socket) sends the three GETs on one client
        // connection; undici keeps two in its pool and alternates (it does so without a
        // proxy too), so there some connection carries more than one.
        // (The records may still be on their way: the client does not wait for them.)
        let path = format!("/files/{client}/hello.txt");
        let addrs: Vec<String> = wait_until(Duration::from_secs(10), "the GETs' records", || {
            let addrs: Vec<String> = px
                .audit()
                .iter()
                .filter(|a| a.path() == Some(path.as_str()))
                .map(|a| a.str("remote_addr").unwrap_or("").to_string())
                .collect();
            (addrs.len() >= 3).then_some(addrs)
        });
        assert_eq!(addrs.len(), 3, "{client}: {addrs:?}");
        let mut distinct = addrs.clone();
        distinct.sort();
        distinct.dedup();
        match client {
            "https" => assert_eq!(distinct.len(), 1, "{client}: one connection: {addrs:?}"),
            _ => assert!(
                distinct.len() < 3,
                "{client}: a connection reused: {addrs:?}"
            ),
        }
    }
    assert_audit_matches_origin(&px, &origin, ORIGIN, &[]);
    // The refused host: one record each, rejected by the allowlist.
    assert_refused_by_allowlist(&px, DENIED, 2);
}

#[test]
fn node_https_and_fetch_through_connect() {
    require_root!();
    node(Via::Connect);
}

#[test]
fn node_https_and_fetch_through_https_listen() {
    require_root!();
    node(Via::HttpsListen);
}

/// As an unprivileged user selected by `intercept.uids` inside the test cgroup.
#[test]
fn node_https_and_fetch_under_uid_interception() {
    require_root!();
    node(Via::Transparent { uid: Some(NOBODY) });
}
