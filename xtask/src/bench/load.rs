//! The load client: tokio + hyper (HTTP/1.1) + tokio-rustls, TCP_NODELAY.
//! Two modes: keep-alive (N connections, each sending requests back to back)
//! and new-connection (N loops, each opening a connection, doing one request
//! and closing it, so every request pays a TCP and a full TLS handshake).
//! Reaches the upstream directly, through a listener that sees the TLS
//! ClientHello (iron-proxy's `https_listen`), or through an HTTP CONNECT tunnel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::procstat::{CpuSample, Watch};

/// How the client reaches the upstream.
#[derive(Clone, Debug)]
pub struct Route {
    /// Where the TCP connection goes.
    pub addr: SocketAddr,
    /// `host:port` for an HTTP CONNECT, when going through a tunnel.
    pub connect: Option<String>,
    /// The TLS server name (and Host header).
    pub host: String,
}

/// A connected HTTP/1.1 sender.
pub type Sender = SendRequest<Empty<Bytes>>;

/// A client for one route.
#[derive(Clone)]
pub struct Client {
    route: Arc<Route>,
    tls: TlsConnector,
    sni: ServerName<'static>,
}

/// Keep-alive or a new connection for every request.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Connections are opened once and reused.
    KeepAlive,
    /// Each request opens (and then drops) its own connection.
    NewConn,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Keep-alive or new connections.
    pub mode: Mode,
    /// Concurrent connections (keep-alive) or loops (new-connection).
    pub conns: usize,
    /// `/1k` or `/64k`.
    pub path: &'static str,
    /// Time before measuring starts (connections open, caches warm).
    pub warmup: Duration,
    /// Measured time.
    pub measure: Duration,
}

/// The outcome of one run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunResult {
    /// Requests completed inside the measured window.
    pub requests: u64,
    /// Failed requests or connections (whole run).
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Requests (or new connections) per second.
    pub rate: f64,
    /// Latency percentiles and mean, in microseconds.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Proxy CPU time per request in microseconds (utime+stime delta / requests).
    pub proxy_cpu_us_per_req: Option<f64>,
    /// Proxy CPU use over the window, in cores (1.0 = one core busy).
    pub proxy_cores: Option<f64>,
    /// The kernel's share (0 to 1) of that CPU time (stime over utime +
    /// stime): the proxy's system calls with the loopback delivery and
    /// wake-ups they carry.
    pub proxy_sys_share: Option<f64>,
}

impl Client {
    /// A client for `route`, with the given TLS config.
    pub fn new(route: Route, tls: Arc<rustls::ClientConfig>) -> Result<Self> {
        let sni = ServerName::try_from(route.host.clone()).context("server name")?;
        Ok(Client {
            route: Arc::new(route),
            tls: TlsConnector::from(tls),
            sni,
        })
    }

    /// Opens one connection: TCP, the CONNECT exchange when tunnelled, TLS, HTTP/1.1.
    pub async fn open(&self) -> Result<Sender> {
        let mut tcp = TcpStream::connect(self.route.addr)
            .await
            .with_context(|| format!("connecting to {}", self.route.addr))?;
        tcp.set_nodelay(true)?;
        if let Some(target) = &self.route.connect {
            connect_tunnel(&mut tcp, target).await?;
        }
        let tls = self
            .tls
            .connect(self.sni.clone(), tcp)
            .await
            .context("TLS handshake")?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// One GET; returns the number of body bytes read.
    pub async fn get(&self, sender: &mut Sender, path: &str) -> Result<usize> {
        sender.ready().await?;
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, self.route.host.as_str())
            .body(Empty::<Bytes>::new())?;
        let mut rsp = sender.send_request(req).await?;
        if !rsp.status().is_success() {
            bail!("status {}", rsp.status());
        }
        let mut n = 0;
        while let Some(frame) = rsp.body_mut().frame().await {
            if let Ok(data) = frame?.into_data() {
                n += data.len();
            }
        }
        Ok(n)
    }

    /// Runs `spec`, sampling `watch`'s CPU time around the measured window.
    pub async fn run(&self, spec: &Spec, watch: Option<&Watch>) -> Result<RunResult> {
        let start = Instant::now();
        let measure_from = start + spec.warmup;
        let end = measure_from + spec.measure;
        let mut tasks = Vec::with_capacity(spec.conns);
        for _ in 0..spec.conns {
            let me = self.clone();
            let spec = spec.clone();
            tasks.push(tokio::spawn(async move {
                me.worker(&spec, measure_from, end).await
            }));
        }
        tokio::time::sleep_until(measure_from.into()).await;
        let before = watch.map(Watch::sample).transpose()?;
        tokio::time::sleep_until(end.into()).await;
        let after = watch.map(Watch::sample).transpose()?;
        let secs = end.duration_since(measure_from).as_secs_f64();

        let mut lat = Vec::new();
        let mut result = RunResult::default();
        for t in tasks {
            // A task still stuck 10s after the end is a broken peer: count it as an error.
            match tokio::time::timeout(Duration::from_secs(10), t).await {
                Ok(Ok(w)) => {
                    lat.extend(w.latencies_us);
                    result.errors += w.errors;
                    if result.first_error.is_none() {
                        result.first_error = w.first_error;
                    }
                }
                Ok(Err(e)) => bail!("load task panicked: {e}"),
                Err(_) => result.errors += 1,
            }
        }
        lat.sort_unstable();
        result.requests = lat.len() as u64;
        result.rate = lat.len() as f64 / secs;
        result.p50_us = percentile(&lat, 0.50);
        result.p90_us = percentile(&lat, 0.90);
        result.p99_us = percentile(&lat, 0.99);
        result.mean_us = if lat.is_empty() {
            0.0
        } else {
            lat.iter().map(|&v| f64::from(v)).sum::<f64>() / lat.len() as f64
        };
        if let (Some(b), Some(a)) = (before, after) {
            let cpu = CpuSample::delta_us(&b, &a);
            result.proxy_cores = Some(cpu / 1e6 / secs);
            result.proxy_sys_share = CpuSample::sys_share(&b, &a);
            if result.requests > 0 {
                result.proxy_cpu_us_per_req = Some(cpu / result.requests as f64);
            }
        }
        Ok(result)
    }

    async fn worker(&self, spec: &Spec, measure_from: Instant, end: Instant) -> WorkerOut {
        let mut out = WorkerOut::default();
        let mut sender: Option<Sender> = None;
        while Instant::now() < end {
            let t0 = Instant::now();
            let res = async {
                let mut s = match (spec.mode, sender.take()) {
                    (Mode::KeepAlive, Some(s)) => s,
                    _ => self.open().await?,
                };
                self.get(&mut s, spec.path).await?;
                if spec.mode == Mode::KeepAlive {
                    sender = Some(s);
                }
                anyhow::Ok(())
            }
            .await;
            let t1 = Instant::now();
            match res {
                Ok(()) if t0 >= measure_from && t1 <= end => {
                    let us = t1.duration_since(t0).as_micros();
                    out.latencies_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                }
                Ok(()) => {}
                Err(e) => {
                    out.errors += 1;
                    if out.first_error.is_none() {
                        out.first_error = Some(format!("{e:#}"));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        out
    }

    /// Opens `n` connections (at most `parallel` at a time), each doing one
    /// request, and returns them open and idle, with the number that failed.
    pub async fn open_idle(
        &self,
        n: usize,
        parallel: usize,
        path: &'static str,
    ) -> (Vec<Sender>, u64, Option<String>) {
        let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let me = self.clone();
            let sem = sem.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                let mut s = me.open().await?;
                me.get(&mut s, path).await?;
                anyhow::Ok(s)
            }));
        }
        let (mut open, mut failed, mut first) = (Vec::with_capacity(n), 0, None);
        for t in tasks {
            match t.await {
                Ok(Ok(s)) => open.push(s),
                Ok(Err(e)) => {
                    failed += 1;
                    first.get_or_insert_with(|| format!("{e:#}"));
                }
                Err(e) => {
                    failed += 1;
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
        (open, failed, first)
    }
}

#[derive(Default)]
struct WorkerOut {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
}

/// Sends `CONNECT target` and reads the proxy's answer up to the blank line.
async fn connect_tunnel(tcp: &mut TcpStream, target: &str) -> Result<()> {
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    tcp.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            bail!("proxy closed the connection during CONNECT");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if pos + 4 != buf.len() {
                bail!("proxy sent data after its CONNECT answer");
            }
            break;
        }
        if buf.len() > 16 * 1024 {
            bail!("CONNECT answer too long");
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        let line = head.lines().next().unwrap_or("").to_string();
        bail!("CONNECT {target} refused: {line}");
    }
    Ok(())
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1])
}
