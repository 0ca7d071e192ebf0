//! The fake upstream server (binary `fake-upstream`): an httpbin-like HTTP/1.1 + HTTP/2 server
//! over TLS (ALPN) and plain TCP, run inside a [`crate::FakeInternet`].
//!
//! Endpoints are in [`endpoints`]. Every request is appended to a JSON-lines log (`--log`) so a
//! test can prove a request did, or did not, reach the upstream. Prints `ready` on stdout once
//! every listener is bound.

pub mod endpoints;
mod grpc;
pub mod tap;
mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use self::tap::{HeadQueue, Tap};

/// The most HTTP/2 streams one connection to the fake upstream may have open at a time
/// (`SETTINGS_MAX_CONCURRENT_STREAMS`).
pub const HTTP2_MAX_STREAMS: u32 = 100;
/// How many header fields an HTTP/1 head may have: more than the proxy's bound
/// (`H1_MAX_HEADERS`, 512; hyper's default is 100), so tests meet the proxy's.
const MAX_HEADERS: usize = 16 * 1024;

/// Command line of `fake-upstream`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "fake-upstream",
    about = "httpbin-like server for the iron-proxy e2e suite"
)]
pub struct Args {
    /// TLS listen address (repeatable), e.g. 198.18.3.10:443.
    #[arg(long = "listen")]
    pub listen: Vec<SocketAddr>,
    /// Plain-HTTP listen address (repeatable), e.g. 198.18.3.10:80.
    #[arg(long = "listen-plain")]
    pub listen_plain: Vec<SocketAddr>,
    /// PEM certificate chain for the TLS listeners.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for the TLS listeners.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// JSON-lines request log.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Name reported in the `x-fake-upstream` header and the log.
    #[arg(long, default_value = "fake-upstream")]
    pub name: String,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A TLS listener was requested without `--tls-cert` and `--tls-key`.
    #[error("--listen needs --tls-cert and --tls-key")]
    MissingCert,
    /// The certificate or key file could not be read or parsed.
    #[error("loading {path}")]
    LoadPem {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// rustls rejected the certificate and key.
    #[error("building the TLS config")]
    Tls(#[from] rustls::Error),
    /// Binding a listener or opening the log failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Shared by every connection: the request log and the server's name.
#[derive(Debug)]
pub struct Shared {
    /// Name for `x-fake-upstream` and the log.
    pub name: String,
    /// The open request log.
    pub log: Option<Mutex<std::fs::File>>,
}

/// What the service knows about the connection a request came on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener's address.
    pub local: SocketAddr,
    /// SNI the client sent (TLS listeners only).
    pub sni: Option<String>,
    /// Negotiated ALPN protocol.
    pub alpn: Option<String>,
    /// Whether this is a TLS listener.
    pub tls: bool,
    /// HTTP/1 heads as received (see [`tap`]).
    pub heads: HeadQueue,
}

fn tls_config(args: &Args) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Err(ServerError::MissingCert);
    };
    fn load(path: &Path) -> impl Fn(rustls::pki_types::pem::Error) -> ServerError + '_ {
        move |source| ServerError::LoadPem {
            path: path.to_path_buf(),
            source,
        }
    }
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(load(cert))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(load(cert))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(load(key))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Binds every listener, prints `listening ...` and `ready`, then serves forever.
pub async fn run(args: Args) -> Result<(), ServerError> {
    let io_err = |what: String| move |source| ServerError::Io { what, source };
    let acceptor = if args.listen.is_empty() {
        None
    } else {
        Some(TlsAcceptor::from(tls_config(&args)?))
    };
    let log = match &args.log {
        Some(path) => Some(Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(io_err(format!("opening {}", path.display())))?,
        )),
        None => None,
    };
    let shared = Arc::new(Shared {
        name: args.name.clone(),
        log,
    });
    let mut bound = Vec::new();
    for (addr, tls) in args
        .listen
        .iter()
        .map(|a| (a, acceptor.clone()))
        .chain(args.listen_plain.iter().map(|a| (a, None)))
    {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(io_err(format!("binding {addr}")))?;
        let local = listener.local_addr().map_err(io_err("local_addr".into()))?;
        let kind = if tls.is_some() { "tls" } else { "plain" };
        println!("listening {kind} {local}");
        bound.push((listener, tls));
    }
    println!("ready");
    let mut tasks = tokio::task::JoinSet::new();
    for (listener, tls) in bound {
        tasks.spawn(accept_loop(listener, tls, shared.clone()));
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let local = tcp.local_addr().unwrap_or(peer);
        let tls = tls.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut info = ConnInfo {
                peer,
                local,
                sni: None,
                alpn: None,
                tls: tls.is_some(),
                heads: HeadQueue::default(),
            };
            match tls {
                None => serve(tcp, info, shared).await,
                Some(acceptor) => {
                    let hs = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp));
                    let Ok(Ok(stream)) = hs.await else {
                        return;
                    };
                    let (_, conn) = stream.get_ref();
                    info.sni = conn.server_name().map(str::to_string);
                    info.alpn = conn
                        .alpn_protocol()
                        .map(|p| String::from_utf8_lossy(p).into_owned());
                    serve(stream, info, shared).await;
                }
            }
        });
    }
}

async fn serve<IO>(io: IO, info: ConnInfo, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tapped = Tap::new(io, info.heads.clone());
    let service = service_fn(move |req| {
        let head = req.method() == http::Method::HEAD;
        let rsp = endpoints::handle(req, info.clone(), shared.clone());
        async move { Ok::<_, std::convert::Infallible>(without_body_on_head(head, rsp.await?)) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Heads as large as the proxy forwards (hyper's defaults, 100 fields and
    // a 16 KiB HTTP/2 header list, are below them): a refusal the tests see
    // is then the proxy's.
    builder
        .http1()
        .preserve_header_case(true)
        .max_headers(MAX_HEADERS);
    // HTTP/2 as servers on the internet commonly set it up: at most 100
    // streams at a time (nginx 128, Go 250, most CDNs 100), and a connection
    // window well above the stream window (hyper's default is 1 MiB for
    // both), so that one stream whose upload `/hold` leaves unread does not
    // block the other streams of the same upstream connection: a stall the
    // tests then see is the proxy's, not this server's.
    // Streams the proxy resets before this server took them (a client's
    // Rapid Reset the proxy passes on, tests/e2e/tls/rapid_reset.rs) are not
    // held against the connection: past h2's default of 20 this server sends
    // GOAWAY (ENHANCE_YOUR_CALM), which fails a stream in flight with
    // `upstream_error` where the test checks the proxy's own bound (the likely
    // cause of one such failure in a loaded full run).
    builder
        .http2()
        .max_header_list_size(1 << 20)
        .max_concurrent_streams(HTTP2_MAX_STREAMS)
        .max_pending_accept_reset_streams(100_000)
        .initial_connection_window_size(16 << 20);
    let _ = builder
        .serve_connection_with_upgrades(TokioIo::new(tapped), service)
        .await;
}

/// The answer to a HEAD: the headers a GET gets, Content-Length included, and no body
/// (RFC 9110 §9.3.2). hyper drops the body on HTTP/1 only: its HTTP/2 server would send the
/// DATA frames, which an HTTP/2 client must treat as a malformed response (RFC 9113 §8.1.1).
fn without_body_on_head(
    head: bool,
    rsp: http::Response<endpoints::Body>,
) -> http::Response<endpoints::Body> {
    if !head {
        return rsp;
    }
    let (mut parts, body) = rsp.into_parts();
    if !parts.headers.contains_key(http::header::CONTENT_LENGTH) {
        if let Some(len) = hyper::body::Body::size_hint(&body).exact() {
            parts
                .headers
                .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
        }
    }
    http::Response::from_parts(parts, endpoints::full(bytes::Bytes::new()))
}
