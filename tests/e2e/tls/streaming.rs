//! Streaming through MITM: server-sent events arrive as they are sent, and a WebSocket is
//! spliced and audited once, when it closes, with status 101.

use std::path::Path;

use super::*;

#[test]
fn sse_events_arrive_before_the_upstream_finishes() {
    require_root!();
    let (_net, up, px) = mitm_with("sse.test");

    let sse_records = || {
        px.audit()
            .iter()
            .filter(|a| a.path() == Some("/sse"))
            .count()
    };
    for (round, flag) in ["--http1.1", "--http2"].into_iter().enumerate() {
        let stream = Curl::get(&up.url("/sse?count=3&interval_ms=1500"))
            .args([flag])
            .via(&px)
            .spawn();
        let (first, _) = stream.wait_for_line(Duration::from_secs(10), |l| l.contains(r#""n":0"#));
        assert!(first.starts_with("data:"), "{first}");
        // The upstream sends the last event 3 s after the first: it cannot be here yet, and
        // the exchange is not over, so it is not audited yet.
        let lines = stream.lines();
        assert!(
            !lines.iter().any(|l| l.contains(r#""n":2"#)),
            "curl {flag}: the whole stream arrived at once: {lines:?}"
        );
        assert_eq!(
            sse_records(),
            round,
            "curl {flag}: audited before the stream ended:\n{}",
            px.audit()
        );
        let (r, _) = stream.finish();
        assert_eq!(r.exit, 0, "{r}");
        assert!(r.body.contains(r#""n":2"#), "{r}");
        wait_until(Duration::from_secs(10), "the SSE audit record", || {
            (sse_records() == round + 1).then_some(())
        });
        let audit = px.audit();
        let rec = audit
            .iter()
            .rfind(|a| a.path() == Some("/sse"))
            .expect("just counted");
        assert!(rec.is_allowed(), "{rec}");
        assert_eq!(rec.status_code(), Some(200), "{rec}");
    }
}

/// Connects to `wss://ws.test/ws` over a socket to the proxy's HTTPS listener, echoes two
/// messages, writes `<dir>/echoed`, waits for `<dir>/close`, then closes. The asyncio client,
/// not `websockets.sync`: see "WebSockets from Python" in tests/README.md.
const WS_CLIENT: &str = r#"
import asyncio, json, os, socket, ssl, sys, time
from websockets.asyncio.client import connect
host, port, ca, flags = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
async def main():
    ctx = ssl.create_default_context(cafile=ca)
    sock = socket.create_connection((host, port), timeout=10)
    got = []
    async with connect("wss://ws.test/ws", sock=sock, ssl=ctx, server_hostname="ws.test",
                       open_timeout=10) as ws:
        for msg in ["hello", "world"]:
            await ws.send(msg)
            got.append(await asyncio.wait_for(ws.recv(), 10))
        await ws.send(b"\x00\x01binary")
        got.append(repr(await asyncio.wait_for(ws.recv(), 10)))
        open(os.path.join(flags, "echoed"), "w").close()
        deadline = time.time() + 30
        while not os.path.exists(os.path.join(flags, "close")) and time.time() < deadline:
            await asyncio.sleep(0.02)
    return got
print(json.dumps({"got": asyncio.run(main())}))
"#;

/// Starts [`WS_CLIENT`] against `px`'s `https_listen` and waits until its WebSocket has
/// echoed (the flag file `echoed`). Returns the flags directory (write `close` there to end
/// the WebSocket) and the client's thread.
type OpenWebSocket = (tempfile::TempDir, std::thread::JoinHandle<PyResult>);

fn open_websocket(px: &ProxyProcess) -> OpenWebSocket {
    try_open_websocket(px).unwrap_or_else(|out| panic!("the WebSocket client gave up:\n{out}"))
}

/// Opens the WebSocket once; the client's output when it gave up.
fn try_open_websocket(px: &ProxyProcess) -> Result<OpenWebSocket, PyResult> {
    let flags = tempfile::tempdir().expect("temp dir");
    let dir = flags.path().to_str().expect("utf-8 temp path").to_string();
    let https = px.https_addr();
    let ca = px.ca().to_string();
    let client = std::thread::spawn(move || {
        python(
            WS_CLIENT,
            [https.ip().to_string(), https.port().to_string(), ca, dir],
        )
    });
    let echoed = Path::new(flags.path()).join("echoed");
    wait_until(Duration::from_secs(30), "the WebSocket echo", || {
        (echoed.exists() || client.is_finished()).then_some(())
    });
    if !echoed.exists() {
        return Err(client.join().expect("client thread"));
    }
    Ok((flags, client))
}

#[test]
fn websocket_echoes_through_mitm_and_is_audited_once_when_it_closes() {
    require_root!();
    let (_net, up, px) = mitm_with("ws.test");
    let (flags, client) = open_websocket(&px);
    up.wait_for_request(|q| q.path() == "/ws");
    assert!(
        px.audit().find(|a| a.path() == Some("/ws")).is_none(),
        "the WebSocket was audited while still open:\n{}",
        px.audit()
    );
    std::fs::write(flags.path().join("close"), "").expect("writing the close flag");
    let out = client.join().expect("client thread");
    let v = out.assert_ok().json();
    assert_eq!(
        v["got"],
        serde_json::json!(["hello", "world", "b'\\x00\\x01binary'"]),
        "{out}"
    );

    let rec = px.wait_for_audit(|a| a.path() == Some("/ws"));
    assert!(rec.is_allowed(), "{rec}");
    assert_eq!(rec.status_code(), Some(101), "{rec}");
    assert_eq!(rec.host(), Some("ws.test"), "{rec}");
    let sent = rec.pointer("/bytes_sent").and_then(|v| v.as_u64());
    let received = rec.pointer("/bytes_received").and_then(|v| v.as_u64());
    assert!(
        sent.is_some_and(|n| n > 0) && received.is_some_and(|n| n > 0),
        "the record counts the spliced bytes: {rec}"
    );
    let n = px
        .audit()
        .iter()
        .filter(|a| a.path() == Some("/ws"))
        .count();
    assert_eq!(n, 1, "exactly one record:\n{}", px.audit());
}

/// With `proxy.max_connections_per_client: 1`, an open WebSocket is its client's one
/// connection for as long as it is open (after the upgrade, hyper hands the socket to the
/// splice, and the connection's own task ends): another connection from the same address is
/// refused (`client_connection_limit`) until the WebSocket closes.
#[test]
fn an_open_websocket_counts_against_its_clients_connection_cap() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("ws.test").start(&net);
    let config = MITM.replace("proxy:\n", "proxy:\n  max_connections_per_client: 1\n");
    let px = Proxy::with(config.as_str()).resolver(&net).start();
    // The harness's readiness probes were connections from 127.0.0.1 too: until the proxy has
    // seen them close, the one slot may still be theirs, so a WebSocket refused now is tried again.
    let mut refusals = Vec::new();
    let (flags, client) = loop {
        match try_open_websocket(&px) {
            Ok(open) => break open,
            Err(out) if refusals.len() < 2 => {
                refusals.push(out);
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(out) => panic!(
                "the WebSocket was refused more often than the probes explain:\n{}\n{out}",
                refusals
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            ),
        }
    };
    // The WebSocket is open: a second connection from 127.0.0.1 is refused.
    let r = Curl::get("https://ws.test/get").via(&px).run();
    assert_eq!(r.status, 0, "refused while the WebSocket is open: {r:?}");
    // (The harness's own probes of the other listeners may be refused too.)
    px.wait_for_audit(|a| {
        a.str("reason") == Some("client_connection_limit") && a.str("mode") == Some("https")
    });
    // Closed, it no longer counts.
    std::fs::write(flags.path().join("close"), "").expect("writing the close flag");
    client.join().expect("client thread").assert_ok();
    let r = wait_until(
        Duration::from_secs(10),
        "served once the WebSocket closed",
        || {
            let r = Curl::get("https://ws.test/get").via(&px).run();
            (r.status != 0).then_some(r)
        },
    );
    assert_eq!(r.status, 200, "{r:?}");
}
