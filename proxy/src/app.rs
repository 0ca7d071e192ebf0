//! Startup and shutdown: turn a [`Config`] into running listeners. Building
//! the policy (pipeline, limits, deny list) is separate so that reloads reuse
//! it: a reload builds everything first and swaps only when all of it worked.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::audit::AuditSink;
use crate::config::{self, Config, ListenAddr, TlsConfig, TransformConfig};
use crate::listen::sniffed::{Intake, TlsHandling};
use crate::pipeline::{Pipeline, Transform};
use crate::state::{Limits, Policy, Shared};
use crate::transforms::allowlist::Allowlist;
use crate::upstream::{DenyList, Dialer, Resolver, Upstream};

/// Why the proxy could not start (or a reload could not build).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The config file is invalid.
    #[error("{0}")]
    Config(#[from] config::ConfigErrors),
    /// A transform whose implementation has not landed yet.
    #[error("transforms[{index}]: transform '{name}' is not supported yet by this build (validate accepts its config)")]
    NotSupported {
        /// Position in `transforms`.
        index: usize,
        /// Transform name.
        name: &'static str,
    },
    /// A transform's config could not be turned into a running transform.
    #[error("transforms[{index}] ({name}): {detail}")]
    Transform {
        /// Position in `transforms`.
        index: usize,
        /// Transform name.
        name: &'static str,
        /// What failed.
        detail: String,
    },
    /// The CA or another TLS piece failed to load.
    #[error("tls: {0}")]
    Tls(String),
    /// The upstream resolver could not be built.
    #[error("upstream resolver: {0}")]
    Resolver(#[from] crate::upstream::resolve::ResolveError),
    /// A listener could not be bound.
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The DNS server failed to start.
    #[error("dns: {0}")]
    Dns(String),
    /// eBPF or nftables interception failed to start.
    #[error("intercept: {0}")]
    Intercept(String),
}

/// Builds the swappable part of the proxy from a config.
pub fn build_policy(cfg: &Config) -> Result<(Policy, DenyList), AppError> {
    let mut transforms: Vec<Arc<dyn Transform>> = Vec::with_capacity(cfg.transforms.len());
    for (index, t) in cfg.transforms.iter().enumerate() {
        transforms.push(build_transform(index, t)?);
    }
    let limits = Limits {
        max_request_body_bytes: usize::try_from(cfg.proxy.max_request_body_bytes)
            .unwrap_or(usize::MAX),
        max_response_body_bytes: usize::try_from(cfg.proxy.max_response_body_bytes)
            .unwrap_or(usize::MAX),
        upstream_response_header_timeout: cfg.proxy.upstream_response_header_timeout.get(),
    };
    let deny = DenyList::new(cfg.proxy.upstream_deny_cidrs.clone());
    Ok((
        Policy {
            pipeline: Pipeline::new(transforms),
            limits,
        },
        deny,
    ))
}

fn build_transform(index: usize, t: &TransformConfig) -> Result<Arc<dyn Transform>, AppError> {
    match t {
        TransformConfig::Allowlist(c) => Ok(Arc::new(Allowlist::new(
            c.domains.clone(),
            c.cidrs.clone(),
            c.rules.clone(),
            c.warn,
        ))),
        other => Err(AppError::NotSupported {
            index,
            name: other.name(),
        }),
    }
}

/// Binds every address of a listen spec (`:80` means IPv4 and IPv6).
pub fn bind(what: &'static str, spec: &ListenAddr) -> Result<Vec<TcpListener>, AppError> {
    let mut out = Vec::new();
    for addr in spec.socket_addrs() {
        let err = |source| AppError::Bind { what, addr, source };
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .map_err(err)?;
        if addr.is_ipv6() {
            sock.set_only_v6(true).map_err(err)?;
        }
        sock.set_reuse_address(true).map_err(err)?;
        sock.set_nonblocking(true).map_err(err)?;
        sock.bind(&addr.into()).map_err(err)?;
        sock.listen(1024).map_err(err)?;
        let std: std::net::TcpListener = sock.into();
        out.push(TcpListener::from_std(std).map_err(err)?);
    }
    Ok(out)
}

fn tls_handling(cfg: &Config) -> Result<TlsHandling, AppError> {
    match &cfg.tls {
        TlsConfig::SniOnly => Ok(TlsHandling::SniOnly),
        TlsConfig::Mitm(m) => {
            let ca = crate::tls::CertificateAuthority::load(&m.ca_cert, &m.ca_key)
                .map_err(|e| AppError::Tls(e.to_string()))?;
            let lifetime = Duration::from_secs(u64::from(m.leaf_cert_expiry_hours) * 3600);
            let minter = crate::tls::LeafMinter::new(Arc::new(ca), lifetime)
                .map_err(|e| AppError::Tls(e.to_string()))?;
            let cache = Arc::new(crate::tls::LeafCache::new(minter, m.cert_cache_size as u64));
            let resolver = Arc::new(crate::tls::SniResolver::new(cache.clone()));
            let config = crate::tls::server_config(resolver, crate::tls::ALPN_H2_HTTP11);
            Ok(TlsHandling::Mitm { config, cache })
        }
    }
}

/// A running proxy.
pub struct App {
    /// Shared state (policy, upstream, audit).
    pub shared: Arc<Shared>,
    /// The config file it was started from.
    pub config_path: PathBuf,
    /// Bound listener addresses, by listener name (for tests and status).
    pub bound: Vec<(&'static str, SocketAddr)>,
    tasks: Vec<JoinHandle<()>>,
}

impl App {
    /// Starts everything the config asks for. Traffic is refused (503) until
    /// every piece is in place; then the proxy reports ready.
    pub async fn start(cfg: Config, config_path: &Path, audit: AuditSink) -> Result<App, AppError> {
        let (policy, deny) = build_policy(&cfg)?;
        let tls = tls_handling(&cfg)?;
        let upstream_tls =
            crate::tls::upstream_client_config().map_err(|e| AppError::Tls(e.to_string()))?;
        let resolver = Resolver::new(cfg.dns.as_ref().and_then(|d| d.upstream_resolver))?;
        let deny = Arc::new(ArcSwap::from_pointee(deny));
        let dialer = Dialer::new(resolver, deny.clone(), upstream_tls);
        let shared = Arc::new(Shared::new(policy, deny, Upstream::new(dialer), audit));
        let intake = Intake {
            shared: shared.clone(),
            tls,
        };

        let mut tasks = Vec::new();
        let mut bound = Vec::new();
        for l in bind("http_listen", &cfg.proxy.http_listen)? {
            bound.push((
                "http",
                l.local_addr().map_err(|e| AppError::Tls(e.to_string()))?,
            ));
            tasks.push(tokio::spawn(crate::listen::http::run(l, shared.clone())));
        }
        for l in bind("https_listen", &cfg.proxy.https_listen)? {
            bound.push((
                "https",
                l.local_addr().map_err(|e| AppError::Tls(e.to_string()))?,
            ));
            tasks.push(tokio::spawn(crate::listen::https::run(l, intake.clone())));
        }
        if let Some(t) = &cfg.proxy.tunnel_listen {
            for l in bind("tunnel_listen", t)? {
                bound.push((
                    "tunnel",
                    l.local_addr().map_err(|e| AppError::Tls(e.to_string()))?,
                ));
                tasks.push(tokio::spawn(crate::listen::tunnel::run(l, intake.clone())));
            }
        }
        shared.set_ready(true);
        for (name, addr) in &bound {
            tracing::info!(listener = name, addr = %addr, "listening");
        }
        Ok(App {
            shared,
            config_path: config_path.to_path_buf(),
            bound,
            tasks,
        })
    }

    /// Stops accepting new connections.
    pub fn stop_accepting(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}
