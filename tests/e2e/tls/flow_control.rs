//! HTTP/2 flow control through MITM: a stream the proxy cannot move (its upstream leaves the
//! upload unread, or its client leaves the download unread) must not stall other streams:
//! neither the same client connection's other streams, nor another client connection's
//! requests to the same upstream host. Real HTTP/2 peers: the Python `h2` library as client
//! (it exposes the flow-control windows and lets a test leave data unread), curl `--http2`,
//! and the fake upstream's hyper server.
//!
//! No timing is asserted: each request that must get through has a generous bound (20 s) and
//! fails with what was stuck; a stalled proxy would keep it waiting for the response-header
//! timeout (set to 120 s here) or forever.

use std::path::Path;

use super::*;

/// Allows the test host, with a response-header timeout far above the tests' bounds, so that
/// a stalled stream stays stalled for the whole test instead of ending in a 504.
const FLOW: &str = r#"
proxy:
  upstream_response_header_timeout: 120s
transforms:
  - name: allowlist
    config:
      domains: ["flow.test"]
"#;

/// An HTTP/2 client over TLS to the proxy's HTTPS listener (SNI and `:authority` = HOST), with
/// the `h2` library, one thread, one connection.
///
/// usage: ADDR PORT HOST CA MODE FLAGS_DIR
///
/// - `upload`: stream 1 POSTs a 32 MiB body to `/hold` (the upstream reads none of it), sending
///   whatever flow control lets it until that stops moving (no window left on stream 1, and
///   nothing from the proxy for 2 s); then
///   stream 3 POSTs 64 KiB to `/post`, which the upstream reads and echoes. Prints the outcome
///   of stream 3, or what was stuck when it did not complete within 20 s.
/// - `stall-N`: opens N streams GETting `/bytes/16777216` and reads none of their data (the
///   connection's receive window, 64 KiB, fills and stays full); once every stream has its
///   response head and the window is full, writes FLAGS_DIR/stalled, then keeps the connection
///   open, answering nothing, until FLAGS_DIR/done appears (at most 90 s).
/// - `hold-N`: opens N streams GETting `/delay/60` (the upstream answers none of them for 60 s);
///   once the upstream has them all (FLAGS_DIR/upstream-has-them, written by the test), writes
///   FLAGS_DIR/stalled, then waits as `stall-N` does.
const H2_CLIENT: &str = r#"
import json, os, socket, ssl, sys, time
import h2.config, h2.connection, h2.events

addr, port, host, ca, mode, flags = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
ctx = ssl.create_default_context(cafile=ca)
ctx.set_alpn_protocols(["h2"])
sock = ctx.wrap_socket(socket.create_connection((addr, port), timeout=10), server_hostname=host)
if sock.selected_alpn_protocol() != "h2":
    sys.exit("the proxy did not negotiate h2: %r" % sock.selected_alpn_protocol())
conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
conn.initiate_connection()

def flush():
    data = conn.data_to_send()
    if data:
        sock.settimeout(20)
        sock.sendall(data)

def pump(wait=0.1):
    """Reads what the proxy sent within `wait`; returns the h2 events."""
    flush()
    sock.settimeout(wait)
    try:
        data = sock.recv(65536)
    except (socket.timeout, ssl.SSLWantReadError):
        return []
    if not data:
        sys.exit("the proxy closed the connection")
    events = conn.receive_data(data)
    flush()
    return events

def request(method, path, length=None):
    sid = conn.get_next_available_stream_id()
    headers = [(":method", method), (":scheme", "https"), (":authority", host), (":path", path)]
    if length is not None:
        headers.append(("content-length", str(length)))
    conn.send_headers(sid, headers, end_stream=length is None)
    flush()
    return sid

def wait_flag(name, bound):
    deadline = time.time() + bound
    while not os.path.exists(os.path.join(flags, name)) and time.time() < deadline:
        time.sleep(0.05)

def hold_open():
    """Keeps the connection open, reading and answering nothing, until the test is done."""
    open(os.path.join(flags, "stalled"), "w").close()
    wait_flag("done", 90)

if mode == "upload":
    total, chunk = 32 << 20, b"x" * 16384
    s1 = request("POST", "/hold?secs=100", total)
    sent1, last_move, deadline = 0, time.time(), time.time() + 30
    # Stalled: no room to send on stream 1, and none opened for 2 s.
    while sent1 < total and (conn.local_flow_control_window(s1) > 0 or time.time() - last_move < 2):
        if time.time() > deadline:
            sys.exit("stream 1 kept moving for 30 s (sent %d bytes): the upstream is not holding it" % sent1)
        n = min(conn.local_flow_control_window(s1), conn.max_outbound_frame_size, total - sent1)
        if n > 0:
            conn.send_data(s1, chunk[:n])
            sent1 += n
            last_move = time.time()
            flush()
        else:
            if pump():
                last_move = time.time()
    if sent1 >= total:
        sys.exit("the whole upload went through: the upstream did not hold it")
    stalled = {"sent1": sent1, "window1": conn.local_flow_control_window(s1),
               "conn_window": conn.outbound_flow_control_window}
    length = 65536
    s3 = request("POST", "/post", length)
    sent3, status, body, ended = 0, None, b"", False
    deadline = time.time() + 20
    while not ended and time.time() < deadline:
        n = min(conn.local_flow_control_window(s3), conn.max_outbound_frame_size, length - sent3)
        if n > 0:
            conn.send_data(s3, b"y" * n, end_stream=sent3 + n == length)
            sent3 += n
        for ev in pump():
            if getattr(ev, "stream_id", None) != s3:
                continue
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers).get(":status")
            elif isinstance(ev, h2.events.DataReceived):
                body += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, s3)
            elif isinstance(ev, h2.events.StreamEnded):
                ended = True
            elif isinstance(ev, h2.events.StreamReset):
                sys.exit("stream 3 was reset: %r" % ev)
    out = dict(stalled, ended=ended, status=status, sent3=sent3,
               conn_window_now=conn.outbound_flow_control_window)
    if ended:
        out["echo_body_len"] = json.loads(body)["body_len"]
    print(json.dumps(out))
elif mode.startswith("stall-") or mode.startswith("hold-"):
    kind, n = mode.split("-")
    path = "/bytes/16777216" if kind == "stall" else "/delay/60"
    sids = [request("GET", path) for _ in range(int(n))]
    heads, unread, deadline = set(), 0, time.time() + 30
    while time.time() < deadline:
        for ev in pump():
            if isinstance(ev, h2.events.ResponseReceived):
                heads.add(ev.stream_id)
            elif isinstance(ev, h2.events.DataReceived):
                unread += ev.flow_controlled_length
            elif isinstance(ev, h2.events.StreamReset):
                sys.exit("stream %d was reset" % ev.stream_id)
        if kind == "stall" and len(heads) == len(sids) and conn.inbound_flow_control_window == 0:
            break
        if kind == "hold" and os.path.exists(os.path.join(flags, "upstream-has-them")):
            break
    else:
        sys.exit("not stalled after 30 s: %d response heads, %d bytes unread" % (len(heads), unread))
    hold_open()
    print(json.dumps({"streams": len(sids), "unread": unread}))
else:
    sys.exit("unknown mode " + mode)
"#;

/// Runs [`H2_CLIENT`] in `mode` against `px` for `flow.test`, on a thread.
fn h2_client(px: &ProxyProcess, mode: &str, flags: &Path) -> std::thread::JoinHandle<PyResult> {
    let https = px.https_addr();
    let args = [
        https.ip().to_string(),
        https.port().to_string(),
        "flow.test".to_string(),
        px.ca().to_string(),
        mode.to_string(),
        flags.to_str().expect("utf-8 temp path").to_string(),
    ];
    std::thread::spawn(move || python(H2_CLIENT, args))
}

/// Waits until `client` wrote `<flags>/stalled`; panics with its output if it gave up.
fn wait_stalled(client: &std::thread::JoinHandle<PyResult>, flags: &Path) {
    let stalled = flags.join("stalled");
    wait_until(
        Duration::from_secs(60),
        "client A to stall its streams",
        || (stalled.exists() || client.is_finished()).then_some(()),
    );
    assert!(stalled.exists(), "client A gave up before stalling");
}

/// Curl over HTTP/2 through the MITM listener, bounded so that a stalled exchange fails
/// the test instead of hanging it.
fn curl_h2(px: &ProxyProcess, path: &str) -> CurlResult {
    Curl::get(&format!("https://flow.test{path}"))
        .args(["--http2"])
        .max_time(20)
        .via(px)
        .run()
}

#[test]
fn an_upload_its_upstream_leaves_unread_does_not_stall_the_connections_other_streams() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("flow.test").start(&net);
    let px = Proxy::with(FLOW).resolver(&net).start();
    let flags = tempfile::tempdir().expect("temp dir");

    let out = h2_client(&px, "upload", flags.path())
        .join()
        .expect("client thread");
    let v = out.assert_ok().json();
    up.wait_for_request(|q| q.path() == "/hold");
    assert_eq!(
        v["ended"], true,
        "stream 3 did not complete within 20 s while stream 1's upload was stalled (the proxy \
         let one stream take the whole connection window): {out}"
    );
    assert_eq!(v["status"], "200", "{out}");
    assert_eq!(v["echo_body_len"], 65536, "{out}");
}

#[test]
fn a_client_that_stops_reading_does_not_stall_another_clients_streams_to_the_same_host() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("flow.test").start(&net);
    let px = Proxy::with(FLOW).resolver(&net).start();
    // B first: its HTTP/2 upstream connection exists before A's streams start.
    let r = curl_h2(&px, "/get");
    assert_eq!(r.exit, 0, "{r}");
    assert_eq!(r.status, 200, "{r}");

    // A: four 16 MiB downloads it reads none of.
    let flags = tempfile::tempdir().expect("temp dir");
    let a = h2_client(&px, "stall-4", flags.path());
    wait_stalled(&a, flags.path());
    // Let the upstream fill whatever the proxy lets it (not an assertion: the check below
    // has its own bound).
    std::thread::sleep(Duration::from_secs(1));

    // B again, twice: a body to download, over a new connection each time.
    for round in 0..2 {
        let r = curl_h2(&px, "/bytes/300000");
        assert_eq!(
            r.exit, 0,
            "round {round}: client B's download did not complete within 20 s while client A \
             left its downloads from the same host unread: {r}"
        );
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body_bytes.len(), 300_000, "round {round}");
    }
    std::fs::write(flags.path().join("done"), "").expect("writing the done flag");
    let out = a.join().expect("client A thread");
    out.assert_ok();
}

#[test]
fn a_client_holding_every_upstream_stream_does_not_queue_another_clients_requests() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("flow.test").start(&net);
    let px = Proxy::with(FLOW).resolver(&net).start();
    let r = curl_h2(&px, "/get");
    assert_eq!(r.status, 200, "{r}");

    // A: as many requests as the upstream allows streams on one connection, none answered
    // for 60 s.
    let n = iron_proxy_tests::fake_upstream::HTTP2_MAX_STREAMS as usize;
    let flags = tempfile::tempdir().expect("temp dir");
    let a = h2_client(&px, &format!("hold-{n}"), flags.path());
    wait_until(
        Duration::from_secs(30),
        "the upstream to receive client A's requests",
        || {
            let held = up
                .requests()
                .iter()
                .filter(|q| q.path() == "/delay/60")
                .count();
            (held >= n || a.is_finished()).then_some(())
        },
    );
    std::fs::write(flags.path().join("upstream-has-them"), "").expect("writing a flag");
    wait_stalled(&a, flags.path());

    let r = curl_h2(&px, "/get?from=b");
    assert_eq!(
        r.exit, 0,
        "client B's request did not complete within 20 s while client A held every stream \
         the upstream allows: {r}"
    );
    assert_eq!(r.status, 200, "{r}");
    std::fs::write(flags.path().join("done"), "").expect("writing the done flag");
    let out = a.join().expect("client A thread");
    out.assert_ok();
}

/// A client that reads as fast as it can gets a bulk HTTP/2 download whole through MITM, with
/// the send queue towards it bounded (64 KiB per stream, `listen::H2_MAX_SEND_BUF`). Checked by
/// bytes (every byte, in order), never by time; the rate is printed, to compare builds by hand
/// (`--nocapture`).
#[test]
fn a_fast_reader_gets_a_bulk_http2_download_whole() {
    require_root!();
    let net = FakeInternet::new();
    let _up = Upstream::https("flow.test").start(&net);
    let px = Proxy::with(FLOW).resolver(&net).start();
    let n: usize = 256 << 20;
    let started = std::time::Instant::now();
    let r = Curl::get(&format!("https://flow.test/bytes/{n}"))
        .args(["--http2"])
        .max_time(300)
        .via(&px)
        .run();
    let took = started.elapsed();
    assert_eq!(r.exit, 0, "{}", r.stderr);
    assert_eq!(r.status, 200, "{}", r.stderr);
    assert_eq!(r.body_bytes.len(), n);
    let wrong = r
        .body_bytes
        .iter()
        .enumerate()
        .position(|(i, b)| usize::from(*b) != i % 251);
    assert_eq!(wrong, None, "the first byte out of place");
    eprintln!(
        "HTTP/2 bulk download through the proxy: {n} bytes in {took:?} ({:.0} MB/s)",
        n as f64 / took.as_secs_f64() / 1e6
    );
}
