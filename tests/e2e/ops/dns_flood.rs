//! A client flooding the DNS server's UDP socket: while the server is behind, the flood's
//! queries over its share are dropped as they are read, and another client's `dig` is
//! answered (docs/dns.md, "Fairness over UDP"). The client is the address, or for a query
//! redirected by eBPF interception (every one from loopback), the workload that sent it.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use iron_proxy_tests::cgroup::system_python;
use iron_proxy_tests::process::ChildGuard;
use iron_proxy_tests::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use super::metrics::{sample, scrape};
use crate::intercept::lab::Lab;

/// Sends N A queries for an intercepted name to `ip:port` from one socket (bound to the
/// address `argv[4]` when given), prints `sent`, waits for a line on stdin, then counts the
/// answers that arrive (until none has for 3 s) and prints it.
const FLOODER: &str = r#"
import socket, struct, sys
ip, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE: room for every answer
if len(sys.argv) > 4:
    s.bind((sys.argv[4], 0))
name = b''.join(bytes([len(l)]) + l for l in (b'flood', b'test')) + b'\0'
for i in range(n):
    s.sendto(struct.pack('>HHHHHH', i & 0xffff, 0x0100, 1, 0, 0, 0) + name + struct.pack('>HH', 1, 1), (ip, port))
print('sent', flush=True)
sys.stdin.readline()
s.settimeout(3)
got = 0
try:
    while True:
        s.recv(512)
        got += 1
except socket.timeout:
    pass
print(got, flush=True)
"#;

/// Queries the flooder sends: the server's per-client burst (4,000) and 4,500 more (the budget
/// refills at 2,000 a second while the server works through them; 8,500 small datagrams take
/// about 7 MB of the socket's 8 MiB receive buffer).
const FLOOD: u32 = 8_500;

/// `(rx_queue bytes, drops)` of the UDP socket bound to `addr`, from `/proc/net/udp`.
/// Starts the flooder `cmd` (its stdin and stdout piped) and waits until its queries are
/// sent; checks that the held server's socket at `dns` queued every one of them. Returns the
/// flooder and its output, for [`flood_accounted`], and the bytes queued on the socket.
fn flood(
    cmd: &mut Command,
    name: &str,
    dns: SocketAddr,
) -> (ChildGuard, BufReader<std::process::ChildStdout>, u64) {
    let mut flooder = ChildGuard::spawn(name, cmd);
    let mut out = BufReader::new(flooder.child_mut().stdout.take().expect("flooder stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("the flooder's `sent`");
    assert_eq!(line.trim(), "sent");
    let (queued, drops) = udp_socket_queue(dns);
    assert_eq!(
        drops, 0,
        "the DNS socket's receive buffer did not hold the flood ({queued} bytes queued); the \
         test needs net.core.rmem_max of 4 MiB or more"
    );
    (flooder, out, queued)
}

/// Once the server has shed queries, releases the flooder and checks its count: fewer than
/// [`FLOOD`] answered, and every one of its queries answered or counted as shed (none of
/// another client's).
fn flood_accounted(px: &ProxyProcess, flooder: &mut ChildGuard, out: &mut impl BufRead) {
    let shed = wait_until(Duration::from_secs(10), "queries to be shed", || {
        sample(
            &scrape(px),
            "iron_proxy_dns_queries_total",
            &[("outcome", "shed")],
        )
        .filter(|n| *n > 0.0)
    });
    flooder
        .child_mut()
        .stdin
        .take()
        .expect("flooder stdin")
        .write_all(b"count\n")
        .expect("release the flooder");
    let mut line = String::new();
    out.read_line(&mut line).expect("the flooder's count");
    let got: f64 = line.trim().parse().expect("a count");
    assert!(
        got < f64::from(FLOOD),
        "the flood over its share went unanswered: {got} of {FLOOD} answered, {shed} shed"
    );
    assert_eq!(
        got + shed,
        f64::from(FLOOD),
        "every flood query answered or counted as shed, none of another client's"
    );
}

fn udp_socket_queue(addr: SocketAddr) -> (u64, u64) {
    let SocketAddr::V4(v4) = addr else {
        panic!("the DNS listener is IPv4 here: {addr}")
    };
    let local = format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    );
    let table = std::fs::read_to_string("/proc/net/udp").expect("reading /proc/net/udp");
    let line = table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
        .unwrap_or_else(|| panic!("no UDP socket at {addr} ({local}) in /proc/net/udp"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    let rx = fields[4].split(':').nth(1).expect("tx:rx queues");
    (
        u64::from_str_radix(rx, 16).expect("rx_queue"),
        fields[12].parse().expect("drops"),
    )
}

/// The proxy is held (SIGSTOP) while a flooder queues 8,500 queries and a `dig` from another
/// address queues one behind them; then it runs on with a backlog, as a server that cannot keep
/// up with a flood does. The flood gets its burst answered and the rest dropped as read (the
/// `shed` count), and the `dig` is answered. Before, every queued query was answered in turn:
/// under a sustained flood the server fell behind and the kernel dropped the other clients'
/// queries as readily as the flood's (measured: a `dig` from another address answered 16 times
/// in 30 while two Python flooders sent 70,000 queries a second).
#[test]
fn a_flooding_client_loses_its_queries_over_its_share_and_another_is_answered() {
    require_root!();
    let mut px = Proxy::with("dns:\n  listen: auto\n").start();
    let dns = px.dns_addr();
    px.signal(Signal::SIGSTOP);
    let resume = Resume::of(&px);

    let mut cmd = Command::new(system_python());
    cmd.args([
        "-c",
        FLOODER,
        &dns.ip().to_string(),
        &dns.port().to_string(),
        &FLOOD.to_string(),
        "127.0.0.2",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let (mut flooder, mut out, queued) = flood(&mut cmd, "dns flooder", dns);

    // The victim's query queues behind the flood.
    let mut dig = Command::new("dig");
    dig.args([
        "-b",
        "127.0.0.3",
        &format!("@{}", dns.ip()),
        "-p",
        &dns.port().to_string(),
        "victim.test",
        "A",
        "+short",
        "+tries=1",
        "+time=30",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut dig = ChildGuard::spawn("victim dig", &mut dig);
    let mut dig_out = dig.child_mut().stdout.take().expect("dig stdout");
    wait_until(
        Duration::from_secs(10),
        "the dig's query to be queued",
        || (udp_socket_queue(dns).0 > queued).then_some(()),
    );

    drop(resume);
    let mut answered = String::new();
    std::io::Read::read_to_string(&mut dig_out, &mut answered).expect("dig's output");
    assert_eq!(
        answered.trim(),
        dns.ip().to_string(),
        "the victim's dig is answered"
    );
    flood_accounted(&px, &mut flooder, &mut out);
}

/// The cgroup ids the kernel's map of redirected DNS senders (`iron_dns_senders`) names, read
/// through its pin as the proxy reads it.
fn dns_senders(pins: &PinGuard) -> Vec<u64> {
    let path = pins
        .path()
        .join("maps")
        .join(ebpf_common::map::IRON_DNS_SENDERS);
    let data = aya::maps::MapData::from_pin(&path)
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let map: aya::maps::HashMap<_, ebpf_common::Tuple, ebpf_common::Sender> =
        aya::maps::HashMap::try_from(aya::maps::Map::LruHashMap(data))
            .expect("iron_dns_senders is an LRU hash of a tuple to a sender");
    map.iter()
        .map(|kv| kv.expect("reading iron_dns_senders").1.cgroup_id)
        .collect()
}

/// Runs a stopped proxy again when dropped, whatever failed (a stopped process ignores SIGTERM).
struct Resume(Pid);

impl Resume {
    fn of(px: &ProxyProcess) -> Self {
        Resume(Pid::from_raw(i32::try_from(px.pid()).expect("a pid")))
    }
}

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// The same with eBPF interception, two workloads in two test cgroups: one floods queries at
/// a fake-internet resolver's port 53, the other runs `dig` at it; the programs send both to
/// the DNS listener, from loopback. While the proxy is held the flood queues 8,500 queries and
/// the `dig`'s one behind them; run on, the server sheds the flood over its share and answers
/// the `dig`. Before, a datagram's client was its address, so both workloads shared
/// loopback's budget and the `dig`'s query was shed with the flood's (it timed out).
#[test]
fn a_flooding_workload_loses_its_queries_over_its_share_and_another_workload_is_answered() {
    require_root!();
    let net = FakeInternet::new();
    let other = TestCgroup::new();
    let mut lab = Lab::start_with(&net, |c| {
        c["intercept"]["cgroups"]
            .as_array_mut()
            .expect("cgroups list")
            .push(json!(other.path()));
    });
    let dns = lab.px.dns_addr();
    let resolver = net.add_host().v4.to_string();
    lab.px.signal(Signal::SIGSTOP);
    let resume = Resume::of(&lab.px);

    let mut cmd = Command::new(system_python());
    cmd.args(["-c", FLOODER, &resolver, "53", &FLOOD.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    lab.cg.enter(&mut cmd, None);
    let (mut flooder, mut out, queued) = flood(&mut cmd, "dns flooder workload", dns);

    // The other workload's query queues behind the flood, from the same loopback address.
    let mut dig = Command::new("dig");
    dig.args([
        &format!("@{resolver}"),
        "victim.test",
        "A",
        "+short",
        "+tries=1",
        "+time=30",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    other.enter(&mut dig, None);
    let mut dig = ChildGuard::spawn("victim dig workload", &mut dig);
    let mut dig_out = dig.child_mut().stdout.take().expect("dig stdout");
    wait_until(
        Duration::from_secs(10),
        "the dig's query to be queued",
        || (udp_socket_queue(dns).0 > queued).then_some(()),
    );

    drop(resume);
    let mut answered = String::new();
    std::io::Read::read_to_string(&mut dig_out, &mut answered).expect("dig's output");
    assert_eq!(
        answered.trim(),
        net.host_side_v4().to_string(),
        "the other workload's dig is answered (dns.proxy_ip)"
    );
    let recorded = dns_senders(&lab.pins);
    for cg in [&lab.cg, &other] {
        let id = std::fs::metadata(cg.path()).expect("cgroup").ino();
        assert!(
            recorded.contains(&id),
            "the kernel recorded the sockets of cgroup {} ({id}) sending to the DNS listener: \
             {recorded:?}",
            cg.relative()
        );
    }
    flood_accounted(&lab.px, &mut flooder, &mut out);
    drop(flooder);
    drop(lab);
}
