//! HTTP/2 streams the client resets after the proxy took them on ("Rapid Reset",
//! CVE-2023-44487, after acceptance): a client that keeps doing it is sent GOAWAY and its
//! connection closed, the close counted in `iron_proxy_http2_rapid_reset_closes_total` and
//! logged with the client's address; every stream it reset still has its one audit record; a
//! client that cancels a normal number of streams among its requests is served to the end.
//!
//! The client is the Python `h2` library over TLS to `https_listen`, driving streams by hand:
//! it opens a batch of requests to an upstream that answers only after 30 s, sends a PING and
//! waits for its answer (the proxy has read, and taken, every stream opened before it), then
//! resets the batch (CANCEL). No assertion is on time: the bound is a rate (a burst of 200,
//! then 100 a second, docs/operations.md), and the attacking client resets streams far faster
//! than that; it would go on to 4,000 before giving up.

use super::*;

/// An HTTP/2 client over TLS to the proxy's HTTPS listener (SNI and `:authority` = HOST).
///
/// MODE `attack`: batches of 50 `GET /delay/30.<stream id>` (a 30 s wait upstream, a path of
/// its own per stream), each followed by a PING; once the PING is answered, the batch is
/// reset. Until a GOAWAY, the connection's end, or 4,000 streams reset.
///
/// MODE `normal`: 10 rounds of 40 `GET /anything/normal-<stream id>` read to their end and
/// 10 `/delay/30.<stream id>` reset as above, then one more `GET /anything/last`.
///
/// Prints `{"local": ADDR, "reset": [ids], "opened": [ids], "answered": {id: status},
/// "goaway": [code, last stream id] or null, "closed": bool}`; `closed`: the proxy closed the
/// connection (after a GOAWAY, read to its end for up to 20 s).
///
/// usage: ADDR PORT HOST CA MODE
const H2_CLIENT: &str = r#"
import json, socket, ssl, sys
import h2.config, h2.connection, h2.errors, h2.events, h2.exceptions
import hyperframe.frame

addr, port, host, ca, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["h2"])
sock = ctx.wrap_socket(socket.create_connection((addr, port), timeout=20), server_hostname=host)
if sock.selected_alpn_protocol() != "h2":
    sys.exit("the proxy did not negotiate h2: %r" % sock.selected_alpn_protocol())
local = "%s:%d" % sock.getsockname()[:2]
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
conn.initiate_connection()
sock.sendall(conn.data_to_send())

st = {"goaway": None, "closed": False}
acks, answered, ended, opened, reset = set(), {}, set(), [], []
received = bytearray()

def goaway_in(buf):
    """The first GOAWAY among the whole frames of what the proxy sent, as [code, last id]."""
    at = 0
    while at + 9 <= len(buf):
        header, length = hyperframe.frame.Frame.parse_frame_header(memoryview(buf[at:at + 9]))
        if at + 9 + length > len(buf):
            return None
        if isinstance(header, hyperframe.frame.GoAwayFrame):
            header.parse_body(memoryview(buf[at + 9:at + 9 + length]))
            return [header.error_code, header.last_stream_id]
        at += 9 + length
    return None

def pump(done):
    """Reads and handles frames until done(), a GOAWAY or the end of the connection."""
    while not done() and st["goaway"] is None and not st["closed"]:
        data = sock.recv(65536)
        if not data:
            st["closed"] = True
            return
        received.extend(data)
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            # h2 refuses any frame after a GOAWAY (the proxy's PING, which is part of its
            # graceful shutdown); the GOAWAY is in what came.
            st["goaway"] = goaway_in(received)
            if st["goaway"] is None:
                raise
            return
        for ev in events:
            if isinstance(ev, h2.events.ResponseReceived):
                answered[ev.stream_id] = dict(ev.headers)[":status"]
            elif isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                ended.add(ev.stream_id)
            elif isinstance(ev, h2.events.PingAckReceived):
                acks.add(ev.ping_data)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                st["goaway"] = [int(ev.error_code), ev.last_stream_id]
        if st["goaway"] is None:
            out = conn.data_to_send()
            if out:
                sock.sendall(out)

def get(path):
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, [(":method", "GET"), (":scheme", "https"), (":authority", host),
                            (":path", path(sid))], end_stream=True)
    opened.append(sid)
    return sid

rounds = 0
def round_trip(slow, fast):
    """Opens `slow` held and `fast` answered streams, waits for a PING's answer, resets the
    held ones; returns the fast ones, or None when the connection ended first."""
    global rounds
    rounds += 1
    held = [get(lambda s: "/delay/30.%06d" % s) for _ in range(slow)]
    quick = [get(lambda s: "/anything/normal-%d" % s) for _ in range(fast)]
    ping = rounds.to_bytes(8, "big")
    conn.ping(ping)
    sock.sendall(conn.data_to_send())
    pump(lambda: ping in acks)
    if ping not in acks:
        return None
    for sid in held:
        conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
        reset.append(sid)
    sock.sendall(conn.data_to_send())
    return quick

if mode == "attack":
    while len(reset) < 4000 and round_trip(50, 0) is not None:
        pass
else:
    for _ in range(10):
        quick = round_trip(10, 40)
        if quick is None:
            break
        pump(lambda: all(s in ended for s in quick))
    last = get(lambda s: "/anything/last")
    sock.sendall(conn.data_to_send())
    pump(lambda: last in ended)

if st["goaway"] is not None and not st["closed"]:
    # h2's state machine is done after a GOAWAY: read the rest as bytes, to the close.
    try:
        while sock.recv(65536):
            pass
        st["closed"] = True
    except (socket.timeout, OSError):
        pass
print(json.dumps({"local": local, "reset": reset, "opened": opened, "answered": answered,
                  "goaway": st["goaway"], "closed": st["closed"]}))
"#;

/// What the client printed.
struct Run {
    local: String,
    reset: Vec<u64>,
    opened: Vec<u64>,
    answered: serde_json::Map<String, serde_json::Value>,
    goaway: Option<(u64, u64)>,
    closed: bool,
}

fn run_client(px: &ProxyProcess, mode: &str) -> Run {
    let https = px.https_addr();
    let args = [
        https.ip().to_string(),
        https.port().to_string(),
        "httpbin.test".to_string(),
        px.ca().to_string(),
        mode.to_string(),
    ];
    let r = python(H2_CLIENT, args);
    r.assert_ok();
    let v = r.json();
    let ids = |k: &str| -> Vec<u64> {
        v[k].as_array()
            .unwrap_or_else(|| panic!("{k} in {v}"))
            .iter()
            .filter_map(|i| i.as_u64())
            .collect()
    };
    Run {
        local: v["local"].as_str().expect("local").to_string(),
        reset: ids("reset"),
        opened: ids("opened"),
        answered: v["answered"].as_object().cloned().unwrap_or_default(),
        goaway: v["goaway"].as_array().map(|g| {
            (
                g[0].as_u64().expect("code"),
                g[1].as_u64().expect("last stream id"),
            )
        }),
        closed: v["closed"].as_bool().unwrap_or(false),
    }
}

/// `iron_proxy_http2_rapid_reset_closes_total` as the proxy's `/metrics` says it.
fn rapid_reset_closes(px: &ProxyProcess) -> f64 {
    let r = Curl::get(&format!("http://{}/metrics", px.metrics_addr())).run();
    assert_eq!(r.exit, 0, "scraping /metrics: {}", r.stderr);
    let name = "iron_proxy_http2_rapid_reset_closes_total ";
    r.body
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name:?} in /metrics:\n{}", r.body))
}

/// The records of stream `id`'s request among `records`: its path names the stream.
fn records_of(records: &[AuditRecord], id: u64) -> usize {
    let path = format!("/delay/30.{id:06}");
    records.iter().filter(|a| a.path() == Some(&path)).count()
}

/// A client that resets stream after stream the proxy took on is sent GOAWAY after a few
/// hundred and its connection is closed; the close is counted and logged with the client's
/// address, and every stream it reset has exactly one record (`client_closed`). Before, the
/// proxy served all 4,000 (and sent 4,000 requests upstream) without a word.
#[test]
fn a_client_resetting_streams_the_proxy_took_is_sent_goaway_and_closed() {
    require_root!();
    let (_net, up, px) = mitm_with("httpbin.test");
    let run = run_client(&px, "attack");
    let (code, _) = run
        .goaway
        .unwrap_or_else(|| panic!("no GOAWAY after {} streams reset", run.reset.len()));
    assert_eq!(code, 0, "GOAWAY NO_ERROR (hyper's graceful shutdown)");
    assert!(
        run.closed,
        "the proxy closed the connection after its GOAWAY"
    );
    // Over the burst of 200; far short of the 4,000 the client would have reset.
    assert!(
        run.reset.len() > 200 && run.reset.len() < 2000,
        "{} streams reset before the GOAWAY",
        run.reset.len()
    );
    assert_eq!(rapid_reset_closes(&px), 1.0, "the close is counted");
    px.wait_for_log(|l| l.contains("Rapid Reset") && l.contains(&run.local));

    // One record per stream reset, none twice; none for a stream the client never opened.
    let records = px.wait_for_audits(run.reset.len(), |a| {
        a.str("remote_addr") == Some(run.local.as_str())
    });
    for id in &run.reset {
        assert_eq!(records_of(&records, *id), 1, "stream {id}: one record");
    }
    for r in &records {
        assert_eq!(r.action(), Some("error"), "{r}");
        assert_eq!(r.str("reason"), Some("client_closed"), "{r}");
        let id: u64 = r
            .path()
            .and_then(|p| p.strip_prefix("/delay/30."))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a record of no stream the client opened: {r}"));
        assert!(run.opened.contains(&id), "{r}");
        assert_eq!(records_of(&records, id), 1, "{r}");
    }
    assert_still_serving(&px, &up, "after-rapid-reset");
}

/// A client that cancels 100 streams (10 at a time) among 400 ordinary requests on one
/// connection, as a browser or gRPC client gives up on requests, is served to the end: every
/// request answered, no GOAWAY, nothing counted; its cancelled streams have their records.
#[test]
fn a_client_cancelling_a_few_streams_among_many_is_not_cut_off() {
    require_root!();
    let (_net, _up, px) = mitm_with("httpbin.test");
    let run = run_client(&px, "normal");
    assert_eq!(run.goaway, None, "no GOAWAY");
    assert!(!run.closed, "the connection stayed open");
    assert_eq!(run.reset.len(), 100);
    let ok = run
        .answered
        .values()
        .filter(|s| s.as_str() == Some("200"))
        .count();
    assert_eq!(ok, 401, "every ordinary request answered 200");
    assert_eq!(rapid_reset_closes(&px), 0.0);
    let records = px.wait_for_audits(run.reset.len() + 401, |a| {
        a.str("remote_addr") == Some(run.local.as_str())
    });
    for id in &run.reset {
        assert_eq!(records_of(&records, *id), 1, "stream {id}: one record");
    }
}
