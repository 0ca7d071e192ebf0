//! Test harness for the privileged interception tests: a test cgroup and a
//! bpffs pin directory behind Drop guards, a workload runner (python3 in the
//! test cgroup, optionally as another uid), a fake proxy listener that looks
//! up origins, a "direct" server and a UDP "DNS" echo.

use std::ffi::CString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use iron_proxy::intercept::{self, InterceptSettings, Interceptor, Origin, OriginalDst};

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

/// Whether privileged tests run. Not root: fail, unless IRON_SKIP_PRIVILEGED=1.
pub fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("IRON_SKIP_PRIVILEGED").as_deref() == Ok("1") {
        eprintln!("skipping privileged interception test (IRON_SKIP_PRIVILEGED=1)");
        return false;
    }
    panic!("the interception kernel tests need root (set IRON_SKIP_PRIVILEGED=1 to skip them)");
}

/// A cgroup created for one test; on drop its remaining processes (ours)
/// are killed by pid and the directory removed.
pub struct TestCgroup {
    pub path: PathBuf,
}

impl TestCgroup {
    pub fn new() -> Self {
        let mount = intercept::cgroup2_mount().expect("cgroup2 mount");
        let path = mount.join(unique("iron-proxy-test"));
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self { path }
    }

    pub fn id(&self) -> u64 {
        intercept::cgroup_id(&self.path).expect("cgroup id")
    }

    /// Removes the (empty) cgroup directory, as systemd does when a unit
    /// stops; [`TestCgroup::make_again`] creates it again under the same path.
    pub fn remove(&self) {
        std::fs::remove_dir(&self.path)
            .unwrap_or_else(|e| panic!("removing {}: {e}", self.path.display()));
    }

    /// Creates the directory again after [`TestCgroup::remove`]: a new cgroup
    /// (a new id) at the same path.
    pub fn make_again(&self) {
        std::fs::create_dir(&self.path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", self.path.display()));
    }

    /// Spawns `cmd` inside this cgroup, switching to `uid` (and gid) after
    /// joining when given.
    pub fn spawn(&self, cmd: &mut Command, uid: Option<u32>) -> Child {
        let procs = CString::new(
            self.path
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )
        .expect("path without NUL");
        // SAFETY: the closure runs between fork and exec and only makes
        // async-signal-safe calls (open, write, close, set*id) on data
        // prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                libc::close(fd);
                if !ok {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(uid) = uid {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(uid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        cmd.spawn().expect("spawning into the test cgroup")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            let procs = std::fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
            let pids: Vec<i32> = procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if pids.is_empty() {
                break;
            }
            // Only processes this test started can be in its fresh cgroup.
            for pid in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGKILL,
                );
                let _ = nix::sys::wait::waitpid(
                    nix::unistd::Pid::from_raw(pid),
                    Some(nix::sys::wait::WaitPidFlag::WNOHANG),
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for _ in 0..100 {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        eprintln!(
            "warning: could not remove test cgroup {}",
            self.path.display()
        );
    }
}

/// A pin directory under /sys/fs/bpf for one test; on drop interception is
/// detached and every pin removed.
pub struct TestPins {
    pub path: PathBuf,
}

impl TestPins {
    pub fn new() -> Self {
        Self {
            path: PathBuf::from("/sys/fs/bpf").join(unique("iron-proxy-test")),
        }
    }
}

impl Drop for TestPins {
    fn drop(&mut self) {
        if let Err(e) = Interceptor::detach(&self.path) {
            eprintln!("warning: detach {}: {e}", self.path.display());
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The python3 workload: each operation prints one line,
/// `<op> ok <details>` or `<op> err <errno>`.
const WORKLOAD: &str = r#"
import socket, sys
def fam(h): return socket.AF_INET6 if ':' in h else socket.AF_INET
def out(*a): print(*a, flush=True)
def recv_all(s):
    data = b''
    while True:
        d = s.recv(4096)
        if not d: return data
        data += d
args = sys.argv[1:]
i = 0
while i < len(args):
    op = args[i]; i += 1
    if op == 'wait':
        sys.stdin.readline(); continue
    try:
        if op in ('tcp', 'udp', 'udpconn'):
            h, p = args[i], int(args[i + 1]); i += 2
        if op == 'tcp':
            s = socket.socket(fam(h), socket.SOCK_STREAM); s.settimeout(5)
            s.connect((h, p)); peer = s.getpeername()
            s.sendall(b'hello\n')
            data = recv_all(s).decode().strip().replace(' ', '|')
            s.close()
            out('tcp', 'ok', peer[0], peer[1], data)
        elif op == 'udp':
            s = socket.socket(fam(h), socket.SOCK_DGRAM); s.settimeout(5)
            s.sendto(b'query', (h, p))
            data, addr = s.recvfrom(4096)
            out('udp', 'ok', addr[0], addr[1], data.decode())
        elif op == 'udpconn':
            s = socket.socket(fam(h), socket.SOCK_DGRAM); s.settimeout(5)
            s.connect((h, p)); s.send(b'query')
            data = s.recv(4096); peer = s.getpeername()
            out('udpconn', 'ok', peer[0], peer[1], data.decode())
        elif op == 'raw':
            socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); out('raw', 'ok')
        elif op == 'raw6':
            socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6); out('raw6', 'ok')
        elif op == 'udplite':
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM, 136); out('udplite', 'ok')
        elif op == 'mptcp':
            socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262); out('mptcp', 'ok')
        elif op == 'ping':
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); out('ping', 'ok')
        elif op == 'many':
            base, n = int(args[i]), int(args[i + 1]); i += 2
            socks = []
            for k in range(n):
                h = '127.0.0.%d' % (2 + k % 5)
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM); s.settimeout(20)
                s.connect((h, base + k)); s.sendall(('%s:%d\n' % (h, base + k)).encode())
                socks.append((h, base + k, s))
            good = 0
            for h, p, s in socks:
                if recv_all(s).decode().strip() == 'proxy %s:%d' % (h, p): good += 1
                s.close()
            out('many', 'ok', good)
        else:
            out(op, 'err', 'unknown-op')
    except OSError as e:
        out(op, 'err', e.errno if e.errno is not None else type(e).__name__)
"#;

pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// A finished workload: its pid and output lines.
pub struct Ran {
    pub pid: u32,
    pub lines: Vec<String>,
}

/// Runs the python workload with `ops` in `cg`, as `uid` when given.
pub fn run_workload(cg: &TestCgroup, uid: Option<u32>, ops: &[&str]) -> Ran {
    let mut cmd = Command::new(python());
    cmd.arg("-c")
        .arg(WORKLOAD)
        .args(ops)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    finish(cg.spawn(&mut cmd, uid))
}

/// Waits for a workload and returns its lines; panics if it failed.
fn finish(child: Child) -> Ran {
    let pid = child.id();
    let out = child.wait_with_output().expect("workload output");
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert!(
        out.status.success(),
        "workload failed: {}\nstdout: {lines:?}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ran { pid, lines }
}

/// [`run_workload`] for `ops` that start with `wait`: the workload is spawned
/// first, `settings` (given its pid) are attached while it waits, then it goes on.
pub fn run_workload_attached(
    cg: &TestCgroup,
    ops: &[&str],
    settings: impl FnOnce(u32) -> InterceptSettings,
) -> (Interceptor, Ran) {
    assert_eq!(
        ops.first(),
        Some(&"wait"),
        "the workload must wait to be attached"
    );
    let mut cmd = Command::new(python());
    cmd.arg("-c")
        .arg(WORKLOAD)
        .args(ops)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cg.spawn(&mut cmd, None);
    let ic = Interceptor::attach(&settings(child.id())).unwrap_or_else(|e| panic!("attach: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release the workload");
    (ic, finish(child))
}

/// One connection the fake proxy accepted.
#[derive(Debug, Clone)]
pub struct Seen {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub origin: Option<Origin>,
}

/// A TCP server on a thread. As the fake proxy it looks up each accepted
/// connection's origin and answers `proxy <original dst>`; as the direct
/// server it answers `direct`.
pub struct Server {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    pub fn proxy(bind: &str, pins: &Path) -> Self {
        Self::start(bind, Some(pins.to_owned()), false)
    }

    /// The fake proxy with its listener marked as the real one marks it
    /// ([`iron_proxy::intercept::mark_listener`]).
    pub fn marked_proxy(bind: &str, pins: &Path) -> Self {
        Self::start(bind, Some(pins.to_owned()), true)
    }

    pub fn direct(bind: &str) -> Self {
        Self::start(bind, None, false)
    }

    fn start(bind: &str, pins: Option<PathBuf>, mark: bool) -> Self {
        let addr: SocketAddr = bind.parse().expect("bind address");
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            None,
        )
        .expect("socket");
        sock.set_reuse_address(true).expect("reuseaddr");
        if mark {
            iron_proxy::intercept::mark_listener(&sock).expect("mark the listener");
        }
        sock.bind(&addr.into()).expect("bind");
        sock.listen(1024).expect("listen");
        let listener: TcpListener = sock.into();
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen2, stop2) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut lookup: Option<OriginalDst> = None;
            while !stop2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, peer)) => {
                        if let Some(pins) = &pins {
                            if lookup.is_none() {
                                lookup = OriginalDst::open(pins).ok();
                            }
                        }
                        serve(conn, peer, lookup.as_ref(), pins.is_some(), &seen2);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        });
        Self {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }
}

fn serve(
    mut conn: TcpStream,
    peer: SocketAddr,
    lookup: Option<&OriginalDst>,
    proxy: bool,
    seen: &Mutex<Vec<Seen>>,
) {
    conn.set_nonblocking(false).expect("blocking");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let local = conn.local_addr().expect("local");
    let origin = lookup.and_then(|l| l.lookup(peer, local));
    let mut line = String::new();
    let _ = BufReader::new(&mut conn).read_line(&mut line);
    let reply = if proxy {
        match &origin {
            Some(o) => format!("proxy {}\n", o.dst),
            None => "proxy unknown\n".to_owned(),
        }
    } else {
        "direct\n".to_owned()
    };
    let _ = conn.write_all(reply.as_bytes());
    seen.lock().expect("seen lock").push(Seen {
        peer,
        local,
        origin,
    });
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP echo answering `pong` from `bind`, standing in for the DNS server.
pub struct UdpEcho {
    pub addr: SocketAddr,
    /// Datagrams received.
    pub received: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    pub fn start(bind: &str) -> Self {
        Self::start_with(bind, false)
    }

    /// The echo with its socket marked as the proxy's DNS sockets are
    /// ([`iron_proxy::intercept::mark_listener`]).
    pub fn marked(bind: &str) -> Self {
        Self::start_with(bind, true)
    }

    fn start_with(bind: &str, mark: bool) -> Self {
        let sock = UdpSocket::bind(bind).expect("udp bind");
        if mark {
            iron_proxy::intercept::mark_listener(&sock).expect("mark the udp socket");
        }
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .expect("timeout");
        let addr = sock.local_addr().expect("udp addr");
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicUsize::new(0));
        let (stop2, received2) = (stop.clone(), received.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !stop2.load(Ordering::SeqCst) {
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    received2.fetch_add(1, Ordering::SeqCst);
                    let _ = sock.send_to(b"pong", from);
                }
            }
        });
        Self {
            addr,
            received,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects from this (unintercepted) process and returns the reply.
pub fn connect_here(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"hello\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.trim().to_owned())
}
