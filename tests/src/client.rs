//! Real clients: curl and Python (in the test virtualenv).
//!
//! ```no_run
//! # use iron_proxy_tests::*;
//! # let px: ProxyProcess = todo!();
//! let r = Curl::get("https://httpbin.test/get").via(&px).run();
//! assert_eq!(r.status, 200, "{r}");
//! let r = curl(["--cacert", px.ca(), "--connect-to", &px.connect_to_https(), "https://httpbin.test/get"]);
//! ```

use std::ffi::OsString;
use std::fmt;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

pub mod stream;

pub use stream::CurlStream;

use crate::netns::FakeInternet;
use crate::process::run_with_timeout;
use crate::proxy::ProxyProcess;

/// Proxy-related environment variables scrubbed from every client (and workload, and the
/// proxy itself) unless the test sets them.
pub const PROXY_ENV: [&str; 8] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
];

/// What curl did.
#[derive(Clone, Debug)]
pub struct CurlResult {
    /// HTTP status (0 when no response, e.g. connection refused).
    pub status: u16,
    /// Body as text (lossy UTF-8).
    pub body: String,
    /// Body bytes.
    pub body_bytes: Vec<u8>,
    /// Response headers of the last response, in order.
    pub headers: Vec<(String, String)>,
    /// curl's stderr (`-sS` prints errors only).
    pub stderr: String,
    /// curl's exit code (0 ok, 7 refused, 28 timeout, 35/60 TLS, 52 empty reply, 56 recv).
    pub exit: i32,
}

impl CurlResult {
    /// The body parsed as JSON; panics with the body when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("curl body is not JSON ({e}):\n{self}"))
    }

    /// The first value of response header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Panics unless the status is `status`.
    pub fn expect_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "unexpected status:\n{self}");
        self
    }
}

impl fmt::Display for CurlResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let body: String = self.body.chars().take(2000).collect();
        write!(
            f,
            "curl exit {} status {}\nstderr: {}\nheaders: {:?}\nbody: {body}",
            self.exit,
            self.status,
            self.stderr.trim(),
            self.headers
        )
    }
}

/// Builder for one curl run.
#[derive(Debug)]
pub struct Curl {
    args: Vec<OsString>,
    netns: Option<FakeInternet>,
    env: Vec<(String, String)>,
    max_time: u32,
}

impl Curl {
    /// curl with these arguments (plus the harness's `-sS --noproxy '*' --max-time ...`).
    pub fn new<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Self {
            args: args.into_iter().map(Into::into).collect(),
            netns: None,
            env: Vec::new(),
            max_time: 20,
        }
    }

    /// `curl URL`.
    pub fn get(url: &str) -> Self {
        Self::new([url])
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds `-H "name: value"`.
    pub fn header(self, name: &str, value: &str) -> Self {
        self.args(["-H".to_string(), format!("{name}: {value}")])
    }

    /// Sends the connection to the proxy's plain listeners (`--connect-to` for both schemes,
    /// so the URL, SNI and Host stay the upstream's) and trusts its MITM CA.
    pub fn via(self, px: &ProxyProcess) -> Self {
        self.args([
            "--cacert".to_string(),
            px.ca().to_string(),
            "--connect-to".to_string(),
            format!(":443:{}", sock(px.https_addr())),
            "--connect-to".to_string(),
            format!(":80:{}", sock(px.http_addr())),
        ])
    }

    /// Uses the proxy's tunnel listener as an HTTP CONNECT proxy (`-x`), trusting its CA.
    pub fn through_connect(self, px: &ProxyProcess) -> Self {
        self.args([
            "--cacert".to_string(),
            px.ca().to_string(),
            "--proxy".to_string(),
            format!("http://{}", sock(px.tunnel_addr())),
        ])
    }

    /// Uses the proxy's tunnel listener as a SOCKS5 proxy with remote name resolution.
    pub fn through_socks5(self, px: &ProxyProcess) -> Self {
        self.args([
            "--cacert".to_string(),
            px.ca().to_string(),
            "--proxy".to_string(),
            format!("socks5h://{}", sock(px.tunnel_addr())),
        ])
    }

    /// Runs curl inside `net`'s namespace.
    pub fn in_netns(mut self, net: &FakeInternet) -> Self {
        self.netns = Some(net.clone());
        self
    }

    /// Sets an environment variable for curl.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// `--max-time` in seconds (default 20).
    pub fn max_time(mut self, secs: u32) -> Self {
        self.max_time = secs;
        self
    }

    fn command(&self) -> Command {
        let mut cmd = match &self.netns {
            Some(net) => net.command("curl"),
            None => Command::new("curl"),
        };
        let proxied = self.args.iter().any(|a| {
            let a = a.to_string_lossy();
            a == "-x" || a == "--proxy" || a.starts_with("--socks") || a == "--preproxy"
        });
        cmd.args(["-sS", "--max-time", &self.max_time.to_string()]);
        if !proxied {
            cmd.args(["--noproxy", "*"]);
        }
        for var in PROXY_ENV {
            cmd.env_remove(var);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Starts curl with `-N` and returns while the transfer runs; the body is read line by
    /// line (see [`CurlStream`]).
    pub fn spawn(self) -> CurlStream {
        let dir = crate::paths::scratch_dir("curl");
        let head_path = dir.path().join("headers");
        let mut cmd = self.command();
        cmd.arg("-N").arg("-D").arg(&head_path).args(&self.args);
        CurlStream::start(cmd, dir, head_path)
    }

    /// Runs curl to completion.
    pub fn run(self) -> CurlResult {
        let dir = crate::paths::scratch_dir("curl");
        let (body_path, head_path) = (dir.path().join("body"), dir.path().join("headers"));
        let mut cmd = self.command();
        cmd.arg("-o").arg(&body_path).arg("-D").arg(&head_path);
        cmd.args(["-w", "%{http_code}"]).args(&self.args);
        let out = run_with_timeout(
            "curl",
            &mut cmd,
            Duration::from_secs(u64::from(self.max_time) + 10),
        );
        let body_bytes = std::fs::read(&body_path).unwrap_or_default();
        let heads = std::fs::read_to_string(&head_path).unwrap_or_default();
        CurlResult {
            status: String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0),
            body: String::from_utf8_lossy(&body_bytes).into_owned(),
            body_bytes,
            headers: last_header_block(&heads),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            exit: out.exit,
        }
    }
}

fn sock(a: std::net::SocketAddr) -> String {
    match a {
        std::net::SocketAddr::V4(v4) => v4.to_string(),
        std::net::SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

/// Parses the last response's headers out of a `-D` dump (which holds every response,
/// including 1xx and CONNECT replies).
fn last_header_block(dump: &str) -> Vec<(String, String)> {
    let mut blocks: Vec<Vec<(String, String)>> = Vec::new();
    for line in dump.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("HTTP/") {
            blocks.push(Vec::new());
        } else if let (Some(block), Some((k, v))) = (blocks.last_mut(), line.split_once(':')) {
            block.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    blocks.pop().unwrap_or_default()
}

/// `curl ARGS` with the harness defaults; see [`Curl`].
pub fn curl<I, S>(args: I) -> CurlResult
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    Curl::new(args).run()
}

/// What a Python script did.
#[derive(Clone, Debug)]
pub struct PyResult {
    /// Exit code (-1 when killed).
    pub exit: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl PyResult {
    /// Panics with the output unless the script exited 0.
    pub fn assert_ok(&self) -> &Self {
        assert_eq!(self.exit, 0, "python failed:\n{self}");
        self
    }

    /// The last non-empty stdout line parsed as JSON.
    pub fn json(&self) -> Value {
        let last = self
            .stdout
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        serde_json::from_str(last)
            .unwrap_or_else(|e| panic!("python output is not JSON ({e}):\n{self}"))
    }
}

impl fmt::Display for PyResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit {}\nstdout:\n{}\nstderr:\n{}",
            self.exit, self.stdout, self.stderr
        )
    }
}

/// Runs `script` with the virtualenv's Python (`python -c script args...`), 60 s limit, proxy
/// variables scrubbed. The venv is created on first use.
pub fn python<I, S>(script: &str, args: I) -> PyResult
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    python_with(Command::new(crate::paths::venv_python()), script, args)
}

/// Like [`python`], inside `net`'s namespace.
pub fn python_in<I, S>(net: &FakeInternet, script: &str, args: I) -> PyResult
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    python_with(net.command(crate::paths::venv_python()), script, args)
}

fn python_with<I, S>(mut cmd: Command, script: &str, args: I) -> PyResult
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    cmd.arg("-c")
        .arg(script)
        .args(args.into_iter().map(Into::into))
        .env("PYTHONUNBUFFERED", "1");
    for var in PROXY_ENV {
        cmd.env_remove(var);
    }
    let out = run_with_timeout("python", &mut cmd, Duration::from_secs(60));
    PyResult {
        exit: out.exit,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_header_block() {
        let dump = "HTTP/1.1 200 Connection established\r\n\r\nHTTP/2 200\r\ncontent-type: application/json\r\nx-a: b:c\r\n\r\n";
        assert_eq!(
            last_header_block(dump),
            vec![
                ("content-type".to_string(), "application/json".to_string()),
                ("x-a".to_string(), "b:c".to_string())
            ]
        );
    }
}

/// An `/etc/hosts` for one client: [`HostsFile::command`] runs a program in a private mount
/// namespace (`unshare -m`) where this file is bind-mounted over `/etc/hosts`, so a client that
/// resolves names itself (git, pip, npm, Node) reaches the proxy's listeners the way DNS
/// interception would send it there, without touching the machine's own `/etc/hosts`.
#[derive(Debug)]
pub struct HostsFile {
    path: std::path::PathBuf,
}

impl HostsFile {
    /// Writes `dir/hosts` mapping each name to its address (plus localhost).
    pub fn new(dir: &std::path::Path, names: &[(&str, std::net::IpAddr)]) -> Self {
        let mut text = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (name, ip) in names {
            text.push_str(&format!("{ip} {name}\n"));
        }
        let path = dir.join("hosts");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        Self { path }
    }

    /// `program` under this hosts file (arguments and environment are added by the caller).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/hosts && exec "$@""#)
            .arg(&self.path)
            .arg(program);
        cmd
    }
}

/// A TCP connection to `to` from the loopback address `from` (bound before connecting), so
/// that the per-client bounds count it apart from the harness's own connections.
pub fn connect_from(from: std::net::Ipv4Addr, to: std::net::SocketAddr) -> std::net::TcpStream {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let std::net::SocketAddr::V4(to) = to else {
        panic!("an IPv4 listener: {to}");
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    bind(
        fd.as_raw_fd(),
        &SockaddrIn::from(std::net::SocketAddrV4::new(from, 0)),
    )
    .expect("binding a loopback address");
    connect(fd.as_raw_fd(), &SockaddrIn::from(to)).expect("connect");
    std::net::TcpStream::from(fd)
}
