//! A reload that removes a host cuts the spliced connections to it: a WebSocket and an
//! sni-only passthrough are checked when admitted and then carry bytes the proxy does not
//! parse, so without a check at each policy swap they kept reaching the host for as long as
//! their ends kept them open. A reload that keeps the host leaves them alone. So does a
//! reload that denies the upstream's address (`proxy.upstream_deny_cidrs`) or takes the
//! client's out of `proxy.client_cidrs`: the splice is cut too.

use std::time::Duration;

use iron_proxy_tests::*;

use super::{managed_proxy, policy, policy_file, reload, API_KEY};

/// Opens a long-lived connection through the proxy and exchanges one message on it
/// (`ws`: a WebSocket echo at `wss://<name>/ws`; `tls`: an HTTP/1.1 keep-alive request
/// over TLS to `https://<name>/get`), touching `<flags>/first`; once `<flags>/go-second`
/// exists, exchanges another and touches `<flags>/second`; then waits up to 30 s for the
/// connection to end without sending anything. Prints the replies and how the wait ended:
/// the exception's name, `eof`, or `TimeoutError` when the connection stayed open.
const HELD_OPEN: &str = r#"
import asyncio, http.client, json, os, socket, ssl, sys, time
mode, host, port, ca, flags, name = sys.argv[1:7]
port = int(port)
def touch(n): open(os.path.join(flags, n), "w").close()
def ready(n): return os.path.exists(os.path.join(flags, n))
ctx = ssl.create_default_context(cafile=ca)

async def ws():
    from websockets.asyncio.client import connect
    sock = socket.create_connection((host, port), timeout=10)
    got = []
    async with connect(f"wss://{name}/ws", sock=sock, ssl=ctx, server_hostname=name,
                       open_timeout=10, ping_interval=None, close_timeout=1) as c:
        for step in ("first", "second"):
            deadline = time.time() + 60
            while step == "second" and not ready("go-second") and time.time() < deadline:
                await asyncio.sleep(0.02)
            await c.send(step)
            got.append(await asyncio.wait_for(c.recv(), 10))
            touch(step)
        try:
            await asyncio.wait_for(c.recv(), 30)
            got.append("message")
        except Exception as e:
            got.append(type(e).__name__)
    return got

def tls():
    conn = http.client.HTTPSConnection(name, 443, context=ctx, timeout=10)
    conn.sock = ctx.wrap_socket(socket.create_connection((host, port), timeout=10),
                                server_hostname=name)
    got = []
    for step in ("first", "second"):
        deadline = time.time() + 60
        while step == "second" and not ready("go-second") and time.time() < deadline:
            time.sleep(0.02)
        conn.request("GET", "/get")
        r = conn.getresponse()
        r.read()
        got.append(r.status)
        touch(step)
    conn.sock.settimeout(30)
    try:
        got.append("eof" if conn.sock.recv(1) == b"" else "data")
    except Exception as e:
        got.append(type(e).__name__)
    return got

print(json.dumps({"got": asyncio.run(ws()) if mode == "ws" else tls()}))
"#;

/// Runs [`HELD_OPEN`] through `px` at `addr`, reloads with `keeping` (the host still
/// allowed), checks the connection carries another message, reloads with `removing`, and
/// returns what the client saw.
fn hold_across_reloads(
    px: &mut ProxyProcess,
    mode: &str,
    name: &str,
    ca: String,
    keeping: String,
    removing: String,
) -> serde_json::Value {
    let flags = tempfile::tempdir().expect("temp dir");
    let dir = flags.path().to_str().expect("utf-8 temp path").to_string();
    let addr = px.https_addr();
    let args = [
        mode.to_string(),
        addr.ip().to_string(),
        addr.port().to_string(),
        ca,
        dir,
        name.to_string(),
    ];
    let client = std::thread::spawn(move || python(HELD_OPEN, args));
    let flag = |n: &str| flags.path().join(n);
    let until = |n: &str| {
        wait_until(Duration::from_secs(30), n, || {
            (flag(n).exists() || client.is_finished()).then_some(())
        })
    };
    until("first");
    assert!(
        flag("first").exists(),
        "the client gave up before its first exchange"
    );

    px.rewrite_config(keeping);
    let r = reload(px);
    assert_eq!(r.status, 200, "{r}");
    std::fs::write(flag("go-second"), "").expect("writing a flag");
    until("second");
    assert!(
        flag("second").exists(),
        "a reload that keeps the host cut the connection"
    );

    px.rewrite_config(removing);
    let r = reload(px);
    assert_eq!(r.status, 200, "{r}");
    let out = client.join().expect("client thread");
    out.assert_ok().json()["got"].clone()
}

#[test]
fn a_reload_that_removes_its_host_cuts_an_open_websocket() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("ws.test").start(&net);
    let mut px = managed_proxy(&policy(&["ws.test", "other.test"]), &net);
    let ca = px.ca().to_string();
    let got = hold_across_reloads(
        &mut px,
        "ws",
        "ws.test",
        ca,
        policy_file(&["other.test", "ws.test", "third.test"]),
        policy_file(&["other.test"]),
    );
    assert_ws_cut(&got, "the reload");
    up.wait_for_request(|q| q.path() == "/ws");

    let rec = px.wait_for_audit(|a| a.path() == Some("/ws"));
    assert_eq!(rec.str("reason"), Some("revoked"), "{rec}");
    assert_eq!(rec.action(), Some("reject"), "{rec}");
    assert_eq!(rec.rejected_by(), Some("allowlist"), "{rec}");
    assert_eq!(
        rec.status_code(),
        Some(101),
        "the status already sent: {rec}"
    );
    let error = rec.str("error").unwrap_or_default();
    assert!(
        error.contains("ws.test:443") && error.contains("upgraded connection"),
        "{rec}"
    );
    let sent = rec.pointer("/bytes_sent").and_then(|v| v.as_u64());
    assert!(sent.is_some_and(|n| n > 0), "the bytes moved: {rec}");
    assert!(
        px.wait_for_log(|l| l.contains("no longer allows it"))
            .contains("ws.test:443"),
        "one log line names the cut"
    );
}

#[test]
fn a_reload_that_removes_its_host_cuts_an_sni_only_passthrough() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("api.test").start(&net);
    let mut px = managed_proxy(&sni_only(policy(&["api.test", "other.test"])), &net);
    let ca = net.ca_bundle().to_str().expect("utf-8 path").to_string();
    let got = hold_across_reloads(
        &mut px,
        "tls",
        "api.test",
        ca,
        sni_only(policy_file(&["api.test", "other.test"])),
        sni_only(policy_file(&["other.test"])),
    );
    assert_passthrough_cut(&got);
    assert_eq!(
        up.requests().iter().filter(|q| q.path() == "/get").count(),
        2
    );

    let rec = px.wait_for_audit(|a| a.host() == Some("api.test"));
    assert_eq!(rec.str("mode"), Some("sni-only"), "{rec}");
    assert_eq!(rec.str("reason"), Some("revoked"), "{rec}");
    assert_eq!(rec.rejected_by(), Some("allowlist"), "{rec}");
    let received = rec.pointer("/bytes_received").and_then(|v| v.as_u64());
    assert!(received.is_some_and(|n| n > 0), "the bytes moved: {rec}");
}

/// [`policy_file`] with `proxy.upstream_deny_cidrs` set to `up`'s addresses.
fn denying(up: &UpstreamHandle, domains: &[&str]) -> String {
    format!(
        "proxy:\n  upstream_deny_cidrs: [\"{}/32\", \"{}/128\"]\n{}",
        up.ip(),
        up.ipv6(),
        policy_file(domains)
    )
}

/// `policy` served in `sni-only` mode.
fn sni_only(policy: String) -> String {
    format!("tls:\n  mode: sni-only\n{policy}")
}

/// What [`hold_across_reloads`] saw on a WebSocket cut by the second reload: both messages
/// echoed, then the connection closed (`by` says what closed it).
fn assert_ws_cut(got: &serde_json::Value, by: &str) {
    assert_eq!(got[0], "first", "{got}");
    assert_eq!(got[1], "second", "{got}");
    assert_eq!(
        got[2], "ConnectionClosedError",
        "the WebSocket must be closed by {by}, not stay open: {got}"
    );
}

/// What [`hold_across_reloads`] saw on an sni-only passthrough cut by the second reload: two
/// answers, then the connection ended.
fn assert_passthrough_cut(got: &serde_json::Value) {
    assert_eq!((&got[0], &got[1]), (&200.into(), &200.into()), "{got}");
    assert!(
        got[2] == "eof" || got[2] == "ConnectionResetError",
        "the passthrough must be closed by the reload, not stay open: {got}"
    );
}

#[test]
fn a_reload_that_denies_its_upstream_address_cuts_an_open_websocket() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("ws.test").start(&net);
    let mut px = managed_proxy(&policy(&["ws.test"]), &net);
    let ca = px.ca().to_string();
    let got = hold_across_reloads(
        &mut px,
        "ws",
        "ws.test",
        ca,
        policy_file(&["ws.test", "other.test"]),
        denying(&up, &["ws.test", "other.test"]),
    );
    assert_ws_cut(&got, "the reload that denies its upstream");
    let rec = px.wait_for_audit(|a| a.path() == Some("/ws"));
    assert_eq!(rec.str("reason"), Some("revoked"), "{rec}");
    assert_eq!(rec.rejected_by(), None, "no transform refused: {rec}");
    assert_eq!(rec.status_code(), Some(101), "{rec}");
    let error = rec.str("error").unwrap_or_default();
    assert!(
        error.contains("proxy.upstream_deny_cidrs denies the address")
            && error.contains("ws.test:443")
            && error.contains("upgraded connection"),
        "{rec}"
    );
    // And a new request is refused by the dialer, as before.
    assert_eq!(super::status_of(&px, "ws.test"), 502);
}

#[test]
fn a_reload_that_denies_its_upstream_address_cuts_an_sni_only_passthrough() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("api.test").start(&net);
    let mut px = managed_proxy(&sni_only(policy(&["api.test"])), &net);
    let ca = net.ca_bundle().to_str().expect("utf-8 path").to_string();
    let got = hold_across_reloads(
        &mut px,
        "tls",
        "api.test",
        ca,
        sni_only(policy_file(&["api.test", "other.test"])),
        sni_only(denying(&up, &["api.test", "other.test"])),
    );
    assert_passthrough_cut(&got);
    let rec = px.wait_for_audit(|a| a.host() == Some("api.test"));
    assert_eq!(rec.str("reason"), Some("revoked"), "{rec}");
    let error = rec.str("error").unwrap_or_default();
    assert!(
        error.contains("proxy.upstream_deny_cidrs denies the address"),
        "{rec}"
    );
}

/// A WebSocket from the host's own (non-loopback) address, which the reload takes out of
/// `proxy.client_cidrs`, is cut.
#[test]
fn a_reload_that_drops_its_client_from_client_cidrs_cuts_an_open_websocket() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("ws.test").start(&net);
    let host = net.host_side_v4();
    let outsider = net.ns_side_v4();
    let with_clients =
        |cidr: String, p: String| format!("proxy:\n  client_cidrs: [\"{cidr}\"]\n{p}");
    let mut px = Proxy::with(with_clients(format!("{host}/32"), policy(&["ws.test"])))
        .listen_ip(host.into())
        .resolver(&net)
        .env("IRON_E2E_MGMT_KEY", API_KEY)
        .start();
    let ca = px.ca().to_string();
    let got = hold_across_reloads(
        &mut px,
        "ws",
        "ws.test",
        ca,
        with_clients(
            format!("{host}/32"),
            policy_file(&["ws.test", "other.test"]),
        ),
        with_clients(
            format!("{outsider}/32"),
            policy_file(&["ws.test", "other.test"]),
        ),
    );
    assert_ws_cut(&got, "the reload that drops its client");
    let rec = px.wait_for_audit(|a| a.path() == Some("/ws"));
    assert_eq!(rec.str("reason"), Some("revoked"), "{rec}");
    let error = rec.str("error").unwrap_or_default();
    assert!(
        error.contains(&format!(
            "client address {host} is not in proxy.client_cidrs"
        )),
        "{rec}"
    );
}
