//! Test helpers: a Python virtualenv with the official Prometheus and OTLP
//! libraries, the OTLP receiver process, and a one-shot HTTP client.
//!
//! The venv lives in `<target dir>/venv` and is created on first use
//! (`python3 -m venv` + `pip install prometheus_client opentelemetry-proto grpcio protobuf
//! hyperframe hpack`).
//! Set `IRON_PROXY_TEST_PYTHON` to use another interpreter that has them.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

const PACKAGES: [&str; 6] = [
    "prometheus_client",
    "opentelemetry-proto",
    "grpcio",
    "protobuf",
    "hyperframe",
    "hpack",
];
const PROBE: &str = "import prometheus_client, grpc, hyperframe, hpack, \
                     opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc";

/// The interpreter, with the packages installed.
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        if let Ok(p) = std::env::var("IRON_PROXY_TEST_PYTHON") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("test binary path");
        // <target>/debug/deps/<test binary>
        let target = exe
            .ancestors()
            .nth(3)
            .expect("target dir above the test binary");
        let venv = target.join("venv");
        let py = venv.join("bin/python");
        let works = |py: &PathBuf| {
            Command::new(py)
                .args(["-c", PROBE])
                .status()
                .is_ok_and(|s| s.success())
        };
        if !works(&py) {
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "python3 -m venv {} failed", venv.display());
            let ok = Command::new(venv.join("bin/pip"))
                .args(["install", "-q"])
                .args(PACKAGES)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "pip install {PACKAGES:?} into {} failed",
                venv.display()
            );
            assert!(
                works(&py),
                "{} still cannot import the packages",
                py.display()
            );
        }
        py
    })
    .clone()
}

/// Runs a Python snippet with `input` on stdin; returns stdout, panics on failure.
pub fn run_python(script: &str, input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("write to python");
    let out = child.wait_with_output().expect("python output");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8 from python")
}

/// `tests/otlp_receiver.py`, running; killed on drop.
pub struct Receiver {
    child: Child,
    /// OTLP/HTTP port.
    pub http_port: u16,
    /// OTLP/gRPC port.
    pub grpc_port: u16,
    /// The JSON-lines file it writes.
    pub out: PathBuf,
    _dir: tempfile::TempDir,
}

impl Receiver {
    /// Starts the receiver and waits until both ports are bound.
    pub fn start() -> Receiver {
        Self::start_with(&[])
    }

    /// [`Receiver::start`] with extra arguments (`--reject-all`).
    pub fn start_with(args: &[&str]) -> Receiver {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("records.jsonl");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/otlp_receiver.py");
        let mut child = Command::new(python())
            .arg(&script)
            .arg("--out")
            .arg(&out)
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn otlp receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("receiver ports line");
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                let _ = child.kill();
                panic!("receiver did not start ({e}): {line:?}");
            }
        };
        let port = |k: &str| {
            v[k].as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .expect("port")
        };
        Receiver {
            http_port: port("http_port"),
            grpc_port: port("grpc_port"),
            child,
            out,
            _dir: dir,
        }
    }

    /// Every record received so far.
    pub fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("receiver wrote JSON"))
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A response: status, headers, body text.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// One HTTP/1.1 request over a fresh connection.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let io = hyper_util::rt::TokioIo::new(tcp);
    let (mut send, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = send
        .send_request(req.body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("response");
    let status = rsp.status().as_u16();
    let headers = rsp.headers().clone();
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}
