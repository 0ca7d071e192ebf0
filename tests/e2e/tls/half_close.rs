//! Half-close through passthrough tunnels (`tls.mode: sni-only`, CONNECT and SOCKS5): a
//! client that sends what it has, shuts its write side (`shutdown(SHUT_WR)`) and then reads
//! the answer gets the whole answer, and a peer that shuts its write side first still gets
//! everything the client sends afterwards. The peers answer only once the other side's end
//! of stream reached them, so the proxy must pass each FIN on by itself and keep the other
//! direction open until it ends too.

use std::io::Read;
use std::net::{IpAddr, Shutdown};
use std::path::{Path, PathBuf};

use super::*;

/// Port 443: echoes until end of stream, then sends `TRAILER <n>` (the bytes it got) and
/// closes. Port 8443: sends `BANNER` and shuts its write side at once, then reads to the end
/// and appends the byte count to the log file. Arguments: address, log file.
const PEER: &str = r#"
import socket, sys, threading
host, log = sys.argv[1], sys.argv[2]
def echo(c):
    n = 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        n += len(d)
        c.sendall(d)
    c.sendall(b"TRAILER %d\n" % n)
    c.close()
def server_first(c):
    c.sendall(b"BANNER\n")
    c.shutdown(socket.SHUT_WR)
    n = 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        n += len(d)
    c.close()
    with open(log, "a") as f:
        f.write("%d\n" % n)
def listen(port, serve):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, port))
    srv.listen(64)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()
threading.Thread(target=listen, args=(8443, server_first), daemon=True).start()
listen(443, echo)
"#;

const NAME: &str = "echo.test";

/// [`PEER`] on a fresh host of the fake internet, answering for [`NAME`].
struct Peer {
    _proc: iron_proxy_tests::netns::NetProcess,
    log: PathBuf,
}

impl Peer {
    fn start(net: &FakeInternet) -> Self {
        let host = net.add_host();
        let log = net.dir().join("half-close-peer.log");
        std::fs::write(&log, "").expect("peer log");
        let mut cmd = net.command(iron_proxy_tests::cgroup::system_python());
        cmd.arg("-c")
            .arg(PEER)
            .arg(host.v4.to_string())
            .arg(&log)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let proc = net.spawn("half-close peer", &mut cmd);
        for port in [443, 8443] {
            let addr = host.v4_addr(port);
            wait_until(Duration::from_secs(20), "the peer to listen", || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
            });
        }
        net.dns().set(NAME, &[IpAddr::V4(host.v4)]);
        Self { _proc: proc, log }
    }

    /// The byte counts of the server-first connections that ended, waiting for `n`.
    fn server_first_counts(&self, n: usize) -> Vec<usize> {
        wait_until(Duration::from_secs(20), "the peer's counts", || {
            let counts = read_counts(&self.log);
            (counts.len() >= n).then_some(counts)
        })
    }
}

fn read_counts(log: &Path) -> Vec<usize> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

const SNI_ONLY_TUNNEL: &str = r#"
proxy:
  tunnel_listen: auto
tls:
  mode: sni-only
transforms:
  - name: allowlist
    config:
      domains: ["echo.test"]
"#;

/// How the tunnel is asked for.
#[derive(Clone, Copy, Debug)]
enum Ask {
    /// CONNECT, waiting for its answer before sending (read by the proxy itself).
    Connect,
    /// CONNECT with the client's first bytes right behind it (hyper's CONNECT path).
    ConnectEager,
    /// SOCKS5 with a domain target.
    Socks5,
}

/// Opens a tunnel to `NAME:port` and sends `payload` through it (right behind the request
/// for [`Ask::ConnectEager`]); returns the stream, positioned after the tunnel's answer.
fn open(px: &ProxyProcess, ask: Ask, port: u16, payload: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(px.tunnel_addr()).expect("connecting to the tunnel listener");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");
    let connect = format!("CONNECT {NAME}:{port} HTTP/1.1\r\nHost: {NAME}:{port}\r\n\r\n");
    match ask {
        Ask::Connect | Ask::ConnectEager => {
            let mut first = connect.into_bytes();
            if matches!(ask, Ask::ConnectEager) {
                first.extend_from_slice(payload);
            }
            s.write_all(&first).expect("CONNECT");
            let head = iron_proxy_tests::timed_read::read_head(&mut s, "the CONNECT answer");
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        }
        Ask::Socks5 => {
            s.write_all(&[5, 1, 0]).expect("SOCKS5 greeting");
            let mut method = [0u8; 2];
            s.read_exact(&mut method).expect("SOCKS5 method");
            assert_eq!(method, [5, 0]);
            let mut req = vec![5, 1, 0, 3, NAME.len() as u8];
            req.extend_from_slice(NAME.as_bytes());
            req.extend_from_slice(&port.to_be_bytes());
            s.write_all(&req).expect("SOCKS5 request");
            let mut reply = [0u8; 10];
            s.read_exact(&mut reply).expect("SOCKS5 reply");
            assert_eq!(reply[1], 0, "SOCKS5 granted: {reply:?}");
        }
    }
    if !matches!(ask, Ask::ConnectEager) {
        s.write_all(payload).expect("sending through the tunnel");
    }
    s
}

fn read_to_end(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap_or_else(|e| {
        panic!(
            "{what}: reading to the end: {e} (after {} bytes)",
            got.len()
        )
    });
    got
}

/// The tail of `b`, for failure messages.
fn tail(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[b.len().saturating_sub(32)..]).into_owned()
}

#[test]
fn half_close_passes_through_sni_only_connect_and_socks5_tunnels_both_ways() {
    require_root!();
    let net = FakeInternet::new();
    let peer = Peer::start(&net);
    let px = Proxy::with(SNI_ONLY_TUNNEL).resolver(&net).start();
    // A ClientHello (the proxy checks its SNI), then more than the socket buffers hold.
    let mut payload = client_hello(NAME);
    payload.extend_from_slice(&[0x17; 300 << 10]);
    let mut answer = payload.clone();
    answer.extend_from_slice(format!("TRAILER {}\n", payload.len()).as_bytes());

    let asks = [Ask::Connect, Ask::ConnectEager, Ask::Socks5];
    for ask in asks {
        // The client ends first: it gets the echo and the trailer the peer sends after.
        let mut s = open(&px, ask, 443, &payload);
        s.shutdown(Shutdown::Write).expect("shutdown(SHUT_WR)");
        let got = read_to_end(&mut s, &format!("{ask:?}"));
        assert!(
            got == answer,
            "{ask:?}, client ends first: got {} of {} bytes, ending {:?}",
            got.len(),
            answer.len(),
            tail(&got)
        );

        // The peer ends first: the client reads its banner to the end, then sends the rest.
        let mut s = open(&px, ask, 8443, &payload[..payload.len() / 2]);
        let got = read_to_end(&mut s, &format!("{ask:?}, peer first"));
        assert_eq!(got, b"BANNER\n", "{ask:?}");
        s.write_all(&payload[payload.len() / 2..])
            .expect("sending after the peer's end of stream");
        drop(s);
    }
    let counts = peer.server_first_counts(asks.len());
    assert_eq!(
        counts,
        vec![payload.len(); asks.len()],
        "the peer that ended first got everything sent after"
    );

    // One record per tunnel, with what moved each way and no error.
    let records = wait_until(Duration::from_secs(10), "the tunnels' records", || {
        let recs: Vec<AuditRecord> = px.audit().for_host(NAME).into_iter().cloned().collect();
        (recs.len() >= 2 * asks.len()).then_some(recs)
    });
    assert_eq!(records.len(), 2 * asks.len(), "{records:?}");
    for rec in &records {
        assert!(rec.is_allowed(), "{rec}");
        assert_eq!(rec.str("mode"), Some("sni-only"), "{rec}");
        assert_eq!(rec.str("error"), None, "{rec}");
        let bytes = |k: &str| rec.pointer(k).and_then(|v| v.as_u64());
        let banner = bytes("/bytes_received") == Some(7);
        let want = if banner {
            (payload.len(), 7)
        } else {
            (payload.len(), answer.len())
        };
        assert_eq!(
            (bytes("/bytes_sent"), bytes("/bytes_received")),
            (Some(want.0 as u64), Some(want.1 as u64)),
            "{rec}"
        );
    }
}
