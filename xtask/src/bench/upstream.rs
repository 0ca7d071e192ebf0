//! The bench upstream: a hyper + rustls HTTPS/1.1 server on a loopback
//! address, port 443 (iron-proxy's `https_listen` always dials 443), serving
//! fixed bodies: `/1k` (1 KiB) and `/64k` (64 KiB). It runs on its own tokio
//! runtime so that it is the same server in every topology, next to the
//! bench DNS responder that points every name at it.

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use anyhow::{bail, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A running upstream; stops when dropped.
pub struct Upstream {
    /// Where it listens (`127.0.0.x:443`).
    pub addr: SocketAddr,
    /// The bench DNS responder, which resolves every name to the upstream.
    pub dns: SocketAddr,
    rt: Option<tokio::runtime::Runtime>,
}

impl Upstream {
    /// Binds the first free `127.0.0.x:443` for x in 2..=40.
    pub fn bind() -> Result<std::net::TcpListener> {
        for last in 2..=40u8 {
            let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
            if let Ok(l) = std::net::TcpListener::bind((ip, 443)) {
                l.set_nonblocking(true)?;
                return Ok(l);
            }
        }
        bail!("no free 127.0.0.x:443 for the upstream (x = 2..40)")
    }

    /// Serves on `listener` (from [`Upstream::bind`]) with `threads` workers.
    pub fn start(
        listener: std::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
        threads: usize,
    ) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("bench-upstream")
            .enable_all()
            .build()?;
        let addr = listener.local_addr()?;
        let listener = {
            let _guard = rt.enter();
            TcpListener::from_std(listener)?
        };
        rt.spawn(serve(listener, TlsAcceptor::from(tls)));
        let IpAddr::V4(ip) = addr.ip() else {
            bail!("upstream bound to a non-IPv4 address");
        };
        let dns = rt.block_on(super::dns::start(ip))?;
        Ok(Upstream {
            addr,
            dns,
            rt: Some(rt),
        })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

async fn serve(listener: TcpListener, acceptor: TlsAcceptor) {
    let small = Bytes::from(vec![b'a'; 1024]);
    let large = Bytes::from(vec![b'b'; 64 * 1024]);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let (small, large) = (small.clone(), large.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let body = match req.uri().path() {
                    "/1k" => Some(small.clone()),
                    "/64k" => Some(large.clone()),
                    _ => None,
                };
                async move {
                    let rsp = match body {
                        Some(b) => Response::new(Full::new(b)),
                        None => {
                            let mut r = Response::new(Full::new(Bytes::from_static(b"not found")));
                            *r.status_mut() = StatusCode::NOT_FOUND;
                            r
                        }
                    };
                    Ok::<_, Infallible>(rsp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}
