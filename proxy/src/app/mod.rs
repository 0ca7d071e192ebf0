//! Startup, reload and shutdown: turn a [`Config`] into running listeners.
//! Startup is fail-closed: listeners answer 503 until the pipeline, the
//! listeners and interception are all in place; only then is the proxy ready
//! (`/readyz`, systemd `READY=1`).

mod build;
mod cgroup_watch;
mod intercept;
mod listeners;
mod reload;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::audit::AuditSink;
use crate::config::{self, Config, ListenAddr, TlsConfig};
use crate::config_source::ConfigSource;
use crate::dns::{DnsServer, DnsSettings, StaticRecord};
use crate::intercept::Interceptor;
use crate::listen::sniffed::{Intake, TlsHandling};
use crate::listen::transparent::{OriginLookup, Redirected, SockoptLookup};
use crate::listen::workers::Workers;
use crate::ops::{self, Drain, Metrics};
use crate::secrets::http::{BackendNet, OwnListeners};
use crate::secrets::{Sources, SourcesOptions};
use crate::state::Shared;
use crate::upstream::{Dialer, Resolver, Upstream};

pub use build::{build_policy, check_build};
pub use listeners::ListenError;
use listeners::Listeners;

/// Why the proxy could not start (or a reload could not build).
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The config file is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigErrors),
    /// A transform's config could not be turned into a running transform.
    #[error("transforms[{index}] ({name}): {detail}")]
    Transform {
        /// Position in `transforms`.
        index: usize,
        /// Transform name.
        name: &'static str,
        /// The field at fault within the transform's `config`.
        field: String,
        /// What failed.
        detail: String,
    },
    /// The CA or another TLS piece failed to load (the error with its causes).
    #[error("tls: {0}")]
    Tls(String),
    /// The upstream resolver could not be built.
    #[error("upstream resolver")]
    Resolver(#[from] crate::upstream::resolve::ResolveError),
    /// The connection workers could not start.
    #[error(transparent)]
    Workers(#[from] crate::listen::workers::WorkersError),
    /// The DNS server failed to start (the error with its causes).
    #[error("dns: {0}")]
    Dns(String),
    /// Interception failed to start (the error with its causes).
    #[error("intercept: {0}")]
    Intercept(String),
    /// A listener could not be opened (named with where its field was set:
    /// `proxy.*_listen`, `metrics.listen`, `intercept.listen`, `dns.listen`,
    /// `management.listen`).
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The metrics, management or OTLP endpoints failed to start.
    #[error("{0}")]
    Ops(String),
}

/// Why the CA of a config does not load, at the field naming the file at
/// fault.
#[derive(Debug)]
pub struct CaLoadError {
    /// Where that field was set (`proxy.yaml:3:11`).
    pub location: String,
    /// `tls.ca_cert` or `tls.ca_key`, unless the message starts with it.
    pub field: Option<&'static str>,
    /// Why, with its causes.
    pub message: String,
}

impl CaLoadError {
    /// The error as a line, with `label` (`"error: "` for `validate`'s
    /// style) between the location and the field.
    pub fn with_label(&self, label: &str) -> String {
        match self.field {
            Some(f) => format!("{}: {label}{f}: {}", self.location, self.message),
            None => format!("{}: {label}{}", self.location, self.message),
        }
    }
}

/// The CA of `m` as the proxy loads it at start-up: `run` before anything
/// starts, `validate`, and a reload (which keeps the running CA, but
/// refuses a config the next start would refuse).
pub fn load_ca(
    cfg: &config::Config,
    m: &config::MitmConfig,
) -> Result<crate::tls::CertificateAuthority, CaLoadError> {
    let (cert, key) = m.ca_paths().map_err(|e| CaLoadError {
        location: cfg.locate(&format!("tls.{}", e.field)).to_string(),
        field: None,
        message: e.to_string(),
    })?;
    crate::tls::CertificateAuthority::load(cert, key).map_err(|e| {
        let field = match e.file() {
            crate::tls::CaFile::Cert => "tls.ca_cert",
            crate::tls::CaFile::Key => "tls.ca_key",
        };
        CaLoadError {
            location: cfg.locate(field).to_string(),
            field: Some(field),
            message: crate::error_chain(&e),
        }
    })
}

/// Binds every address of the listen spec `spec` of `cfg`'s `field` (`:80`
/// means IPv4 and IPv6); an error names where the field was set.
fn bind(
    cfg: &Config,
    field: &'static str,
    spec: &ListenAddr,
) -> Result<Vec<TcpListener>, ListenError> {
    spec.socket_addrs()
        .into_iter()
        .map(|addr| {
            bind_addr(addr).map_err(|source| ListenError::Bind {
                at: listeners::placed(cfg, field),
                field,
                addr,
                source,
            })
        })
        .collect()
}

/// How long a client may leave the proxy's data unread or unacknowledged
/// before its connection is cut (`TCP_USER_TIMEOUT` on the listening
/// sockets, inherited by accepted ones): 90 s, the keepalive's own bound
/// (30 s idle, then 4 probes 15 s apart).
pub(crate) const CLIENT_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(90);

/// Binds one listening socket of the data plane.
///
/// TCP_NODELAY is set on the listening socket: Linux copies it to every
/// socket accepted from it, so the client leg never waits on Nagle and
/// delayed ACKs (40 ms stalls) without a `setsockopt` per connection.
/// TCP keepalive likewise (the upstream leg's settings): a client that
/// vanished without a FIN or RST (a killed sandbox, a dropped NAT entry)
/// behind a WebSocket, a passthrough or a tunnel, which no idle timer
/// covers, is found dead within two minutes instead of never. And
/// `TCP_USER_TIMEOUT` ([`CLIENT_SEND_TIMEOUT`]): a client that stops reading
/// (a zero window its kernel keeps acknowledging, which keepalive never
/// ends) or whose data goes unacknowledged is cut off after that long, as
/// nginx's `send_timeout` does, instead of holding its connection, its
/// upstream connection and their buffers for ever.
pub(crate) fn bind_addr(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.set_nodelay(true)?;
    sock.set_tcp_keepalive(&crate::upstream::dial::keepalive())?;
    sock.set_tcp_user_timeout(Some(CLIENT_SEND_TIMEOUT))?;
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    let std: std::net::TcpListener = sock.into();
    TcpListener::from_std(std)
}

/// The TLS handling `cfg` asks for; `ca` is its CA when the caller already
/// loaded it (`cmd::run`, which reports a CA that does not load at its field),
/// else it is loaded here. With the CA's fingerprint, for a reload to tell
/// a CA rotated in its files from the one in force.
fn tls_handling(
    cfg: &Config,
    metrics: &Metrics,
    ca: Option<crate::tls::CertificateAuthority>,
) -> Result<(TlsHandling, Option<reload::CaFingerprint>), AppError> {
    match &cfg.tls {
        TlsConfig::SniOnly => Ok((TlsHandling::SniOnly, None)),
        TlsConfig::Mitm(m) => {
            let tls_err = |e: &dyn std::error::Error| AppError::Tls(crate::error_chain(e));
            let ca = match ca {
                Some(ca) => ca,
                None => {
                    let (cert, key) = m.ca_paths().map_err(|e| tls_err(&e))?;
                    crate::tls::CertificateAuthority::load(cert, key).map_err(|e| tls_err(&e))?
                }
            };
            metrics.set_ca_expiry(SystemTime::from(ca.not_after()));
            let fingerprint = reload::CaFingerprint::of(&ca);
            let lifetime = Duration::from_secs(u64::from(m.leaf_cert_expiry_hours) * 3600);
            let minter =
                crate::tls::LeafMinter::new(Arc::new(ca), lifetime).map_err(|e| tls_err(&e))?;
            let cache = Arc::new(crate::tls::LeafCache::new(minter, m.cert_cache_size as u64));
            let stats_cache = cache.clone();
            let _ = metrics.register_cert_cache(Box::new(move || {
                let s = stats_cache.stats();
                vec![
                    (vec!["hit".into()], s.hits),
                    (vec!["miss".into()], s.misses),
                    (vec!["mint".into()], s.mints),
                    (vec!["mint_error".into()], s.mint_errors),
                    (vec!["refused_mint".into()], s.refused_mints),
                    (vec!["displaced".into()], s.displaced),
                ]
            }));
            let queue = cache.queue().clone();
            let _ =
                metrics.register_cert_mint_waits(Box::new(move || vec![(vec![], queue.waits())]));
            let queue = cache.queue().clone();
            let _ = metrics
                .register_cert_mints_waiting(Box::new(move || vec![(vec![], queue.waiting())]));
            let resolver = Arc::new(crate::tls::SniResolver::new(cache.clone()));
            let config = crate::tls::server_config(resolver, crate::tls::ALPN_SERVED);
            Ok((TlsHandling::Mitm { config, cache }, Some(fingerprint)))
        }
    }
}

/// The DNS server's settings; `mark_as_proxy` when interception sends the
/// workloads' DNS to it (the programs then check the mark).
fn dns_settings(
    d: &config::DnsConfig,
    mark_as_proxy: bool,
    clients: &Arc<crate::client_acl::ClientAcl>,
) -> DnsSettings {
    DnsSettings {
        mark_as_proxy,
        clients: clients.clone(),
        listen: d.listen.socket_addrs(),
        proxy_ip: d.proxy_ip,
        proxy_ip6: d.proxy_ip6,
        upstream: d.upstream_resolver,
        passthrough: d.passthrough.clone(),
        records: d
            .records
            .iter()
            .map(|r| match &r.value {
                config::DnsRecordValue::A(ip) => StaticRecord::A {
                    name: r.name.clone(),
                    ip: *ip,
                },
                config::DnsRecordValue::Cname(t) => StaticRecord::Cname {
                    name: r.name.clone(),
                    target: t.clone(),
                },
            })
            .collect(),
    }
}

/// Looks up original destinations in the eBPF maps, falling back to `SO_ORIGINAL_DST`.
struct BpfLookup(crate::intercept::OriginalDst);

impl OriginLookup for BpfLookup {
    fn lookup(
        &self,
        stream: &tokio::net::TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Option<Redirected> {
        match self.0.lookup(peer, local) {
            Some(o) => {
                // The name, when cached; otherwise the connection's task walks the
                // hierarchy for it off the worker thread (`name_cgroup`).
                let cgroup = crate::intercept::cgroup_name_cached(o.cgroup_id);
                Some(Redirected {
                    dst: o.dst,
                    unnamed_cgroup: cgroup.is_none().then_some(o.cgroup_id),
                    workload: Some(crate::intercept::Workload::from(&o)),
                    client: Some(crate::audit::ClientProcess {
                        pid: o.tgid,
                        uid: o.uid,
                        comm: o.comm,
                        cgroup: cgroup.unwrap_or_default(),
                    }),
                })
            }
            None => SockoptLookup.lookup(stream, peer, local),
        }
    }
}

/// A running proxy.
pub struct App {
    /// Shared state (policy, upstream, audit).
    pub shared: Arc<Shared>,
    /// Where the config was read from (a reload reads it there again).
    pub config_source: ConfigSource,
    /// Bound addresses of the listeners fixed at startup (DNS,
    /// interception, management), by listener name.
    fixed: Vec<(&'static str, SocketAddr)>,
    /// The listeners a reload can move.
    listeners: Arc<Listeners>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// In-flight request tracking for graceful shutdown.
    pub drain: Drain,
    tasks: Vec<JoinHandle<()>>,
    dns: Option<DnsServer>,
    otel: Option<Arc<ops::OtelExporter>>,
    _interceptor: Option<Interceptor>,
}

impl App {
    /// Starts everything the config asks for, in an order that never lets
    /// traffic through unchecked: the pipeline is built first, listeners answer
    /// 503 until everything is up, and interception attaches last (its
    /// redirects land on listeners that already exist).
    /// `bytes` is the config as read from `source`, which `cfg` was parsed from;
    /// `ca` its CA when the caller loaded it already (else it is loaded here).
    pub async fn start(
        cfg: Config,
        source: ConfigSource,
        bytes: &[u8],
        audit: AuditSink,
        ca: Option<crate::tls::CertificateAuthority>,
    ) -> Result<App, AppError> {
        let metrics = Arc::new(Metrics::new());
        metrics.config_loaded(SystemTime::now());
        audit.add_observer(metrics.observer());
        audit.count_drops_in(metrics.audit_dropped_counter());
        let write_errors = audit.write_errors();
        // Only a name taken twice fails, which a test would have caught.
        let _ = metrics.register_counter_source(
            "audit_write_errors",
            "Writes of audit records and log lines to stderr that failed (the lines are kept and \
             written again once it works; see audit_dropped_records for lines lost)",
            &[],
            Box::new(move || vec![(Vec::new(), write_errors())]),
        );
        // Never fails: a bad OTEL_* value is logged and export goes on without it (or off).
        let otel = ops::OtelExporter::start_from_env(metrics.otel_dropped_counter());
        if let Some(exporter) = &otel {
            audit.add_observer(exporter.clone());
        }
        // One resolver for the data plane and the proxy's own backend calls
        // (secret sources, token mints, the judge): `dns` is fixed at
        // startup, so neither needs rebuilding on reload.
        let resolver = Resolver::new(cfg.dns.as_ref().and_then(|d| d.upstream_resolver))?;
        let counted = resolver.clone();
        let _ = metrics
            .register_resolver_in_flight(Box::new(move || vec![(vec![], counted.in_flight())]));
        let counted = resolver.clone();
        let _ = metrics.register_resolver_busy(Box::new(move || vec![(vec![], counted.busy())]));
        // Filled as listeners bind (below); backend calls refuse these.
        let own = OwnListeners::new();
        if let Some(d) = &cfg.dns {
            own.add_proxy_ip(d.proxy_ip.into());
            if let Some(ip6) = d.proxy_ip6 {
                own.add_proxy_ip(ip6.into());
            }
        }
        let failures = metrics.clone();
        let sources = Sources::new(SourcesOptions {
            prefetch: true,
            on_fetch_failure: Some(Arc::new(move |kind| {
                failures.secret_resolution_failed(kind)
            })),
            backend: BackendNet {
                resolver: Some(resolver.clone()),
                own: own.clone(),
            },
            ..SourcesOptions::default()
        });
        let staged = sources.stage();
        let (policy, deny) = build_policy(&cfg, staged.sources(), Some(&metrics))?;
        // Fetched now, in the background, so values are usually there before traffic.
        staged.commit();
        let stale = sources.clone();
        let _ = metrics.register_secret_staleness(Box::new(move || {
            stale
                .staleness()
                .into_iter()
                .map(|(kind, name, d)| (vec![kind.to_string(), name], d.as_secs()))
                .collect()
        }));
        let (tls, ca_fingerprint) = tls_handling(&cfg, &metrics, ca)?;
        let upstream_tls = crate::tls::upstream_client_config()
            .map_err(|e| AppError::Tls(crate::error_chain(&e)))?;
        let deny = Arc::new(ArcSwap::from_pointee(deny));
        let dialer = Dialer::new(resolver, deny.clone(), upstream_tls).refusing(own.clone());
        let drain = Drain::new();
        let workers = Workers::start(Workers::default_count())?;
        let shared = Arc::new(
            Shared::new(
                policy,
                deny,
                Upstream::new(dialer),
                audit,
                drain.clone(),
                workers.clone(),
            )
            .with_client_limit(cfg.proxy.max_connections_per_client),
        );
        let total = max_connections(&cfg.proxy);
        shared.client_limit.set_max_total(total);
        shared.client_acl.set(cfg.proxy.client_cidrs.clone());
        tracing::info!(
            max = %total.map_or("none".into(), |n| n.to_string()),
            source = if cfg.proxy.max_connections.is_some() { "config" } else { "open-file limit" },
            "proxy.max_connections"
        );
        shared
            .client_limit
            .count_into(metrics.client_connections_gauges());
        // Only a name taken twice fails, which a test would have caught.
        let _ = metrics.register_connection_gauges(&shared);
        let intake = Intake {
            shared: shared.clone(),
            tls,
        };

        let mut tasks = Vec::new();
        let mut bound = Vec::new();
        fn push(bound: &mut Vec<(&'static str, SocketAddr)>, name: &'static str, l: &TcpListener) {
            if let Ok(a) = l.local_addr() {
                bound.push((name, a));
            }
        }
        let ready_shared = shared.clone();
        let listeners = Arc::new(Listeners::new(listeners::Serving {
            workers: workers.clone(),
            intake: intake.clone(),
            metrics: metrics.clone(),
            ready: Arc::new(move || ready_shared.is_ready()),
            drain: drain.clone(),
            own: own.clone(),
        }));
        let data = listeners.prepare(&cfg, &listeners::Kind::DATA)?;
        listeners.commit(data).await;
        let dns = match &cfg.dns {
            Some(d) => {
                let redirected = cfg
                    .intercept
                    .as_ref()
                    .is_some_and(|ic| ic.dns_enabled(&cfg));
                let server = DnsServer::start(dns_settings(d, redirected, &shared.client_acl))
                    .await
                    .map_err(|e| match e {
                        e @ (crate::dns::DnsError::Bind { .. }
                        | crate::dns::DnsError::Mark { .. }) => {
                            AppError::Listen(ListenError::Dns {
                                at: listeners::placed(&cfg, "dns.listen"),
                                source: e,
                            })
                        }
                        e => AppError::Dns(crate::error_chain(&e)),
                    })?;
                for a in server.local_addrs() {
                    bound.push(("dns", *a));
                }
                let stats = server.stats();
                let _ = metrics.register_dns_queries(Box::new(move || {
                    let s = stats.snapshot();
                    [
                        ("intercepted", s.intercepted),
                        ("passthrough", s.passthrough),
                        ("record", s.record),
                        ("refused", s.refused),
                        ("failed", s.failed),
                        ("shed", s.shed),
                        ("client_not_allowed", s.client_not_allowed),
                    ]
                    .into_iter()
                    .map(|(k, v)| (vec![k.to_string()], v))
                    .collect()
                }));
                Some(server)
            }
            None => None,
        };

        let mut interceptor = None;
        let mut kernel_deny = None;
        if let Some(ic) = &cfg.intercept {
            let relink;
            let listeners = bind(&cfg, "intercept.listen", &ic.listen)?;
            for l in &listeners {
                crate::intercept::mark_listener(l).map_err(|e| {
                    AppError::Intercept(format!(
                        "{}intercept.listen: marking the transparent listener (SO_PRIORITY, \
                         needs CAP_NET_ADMIN): {e}",
                        listeners::placed(&cfg, "intercept.listen")
                    ))
                })?;
            }
            let transparent: Vec<SocketAddr> = listeners
                .iter()
                .filter_map(|l| l.local_addr().ok())
                .collect();
            let dns_addrs: Vec<SocketAddr> = match (&dns, ic.dns_enabled(&cfg)) {
                (Some(server), true) => server.local_addrs().to_vec(),
                _ => Vec::new(),
            };
            let settings = intercept::settings(&cfg, ic, &transparent, &dns_addrs)?;
            // Before the attach: a cgroup made again while it runs is then
            // a change the watcher sees.
            let ids_before_attach = cgroup_watch::ids(&settings.cgroups);
            let lookup: Arc<dyn OriginLookup> = if ic.mode == config::InterceptMode::Nftables {
                let lookup = intercept::start_nftables(&settings, &metrics)?;
                let shared_settings = Arc::new(std::sync::Mutex::new(settings.clone()));
                relink = Some(intercept::nft_relink(shared_settings.clone()));
                kernel_deny = Some(reload::KernelDeny::Nft(shared_settings));
                lookup
            } else {
                let attached = Interceptor::attach_in_child(&settings)
                    .map_err(|e| AppError::Intercept(crate::error_chain(&e)))?;
                let pin = settings.pin_path.clone();
                intercept::register_events(&metrics, true, move || {
                    Interceptor::status(&pin).ok().and_then(|s| s.counters)
                });
                kernel_deny = Some(reload::KernelDeny::Bpf(attached.pin_path().to_owned()));
                relink = Some(intercept::bpf_relink(
                    attached.pin_path().to_owned(),
                    settings.cgroups.clone(),
                ));
                if let (Some(server), false) = (&dns, dns_addrs.is_empty()) {
                    server.identify_clients(
                        Arc::new(attached.original_dst()),
                        Arc::new(attached.dns_senders()),
                    );
                }
                let lookup = Arc::new(BpfLookup(attached.original_dst()));
                interceptor = Some(attached);
                lookup
            };
            // Selected cgroups (not UID mode's cgroup v2 root) can be
            // removed and made again.
            if let (Some(relink), false) = (relink, ic.cgroups.is_empty()) {
                let counts = Arc::new(cgroup_watch::RelinkCounts::default());
                let read = counts.clone();
                let _ = metrics.register_counter_source(
                    "intercept_relinks",
                    "Interception linked again to selected cgroups that were made again, by result",
                    &["result"],
                    Box::new(move || read.series()),
                );
                tasks.push(cgroup_watch::spawn(
                    settings.cgroups.clone(),
                    ids_before_attach,
                    relink,
                    shared.clone(),
                    counts,
                ));
            }
            for l in listeners {
                push(&mut bound, "transparent", &l);
                let (i, lookup) = (intake.clone(), lookup.clone());
                tasks.extend(workers.accept_on_each(l, move |l| {
                    crate::listen::transparent::run(l, i.clone(), lookup.clone())
                })?);
            }
        }

        let metrics_listener = listeners.prepare(&cfg, &[listeners::Kind::Metrics])?;
        listeners.commit(metrics_listener).await;
        let sources_for_reload = sources.clone();
        let controller = reload::controller(
            source.clone(),
            reload::Started {
                config: cfg.clone(),
                bytes,
                ca: ca_fingerprint,
            },
            shared.clone(),
            sources_for_reload,
            metrics.clone(),
            kernel_deny,
            listeners.clone(),
        );
        if let Some(m) = &cfg.management {
            let (addr, _) = ops::management::start(
                m.listen.to_socket_addr(),
                &m.api_key_env,
                controller.clone(),
                drain.stopping(),
            )
            .map_err(|e| match e {
                ops::management::ManagementError::Bind { addr, source } => {
                    AppError::Listen(ListenError::Bind {
                        at: listeners::placed(&cfg, "management.listen"),
                        field: "management.listen",
                        addr,
                        source,
                    })
                }
                e => AppError::Ops(format!("management: {e}")),
            })?;
            bound.push(("management", addr));
        }
        ops::signals::spawn_reload_on_sighup(controller)
            .map_err(|e| AppError::Ops(e.to_string()))?;
        ops::signals::spawn_reopen_logs_on_sigusr1().map_err(|e| AppError::Ops(e.to_string()))?;
        // A burst's memory goes back to the OS once the burst is over, on
        // the workers' heaps and on the main runtime's (DNS, control plane).
        tasks.extend(workers.spawn_on_each(crate::alloc::purge_idle_memory));
        tasks.push(tokio::spawn(crate::alloc::purge_idle_memory()));

        // Start-up is over: what it alone touched need not stay mapped. Done
        // before readiness, so that `xtask link-order`'s profile, dumped when
        // this returns, counts no served request as start-up.
        crate::resident::release_after("start-up");
        // Before readiness, so no request-driven backend call (a token mint)
        // can miss one. Earlier calls (secret prefetches) find the listeners
        // unbound or answering 503.
        // (The listeners a reload can move are in it already.)
        for (_, addr) in &bound {
            own.add_listener(*addr);
        }
        shared.set_ready(true);
        ops::signals::notify_ready();
        let app = App {
            shared,
            config_source: source,
            fixed: bound,
            listeners,
            metrics,
            drain,
            tasks,
            dns,
            otel,
            _interceptor: interceptor,
        };
        for (name, addr) in app.bound() {
            tracing::info!(listener = name, addr = %addr, "listening");
        }
        Ok(app)
    }

    /// Bound listener addresses, by listener name: those a reload can move
    /// as they are now, then DNS, interception and management.
    pub fn bound(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut out = self.listeners.bound();
        out.extend(self.fixed.iter().copied());
        out
    }

    /// Graceful shutdown: stop accepting, let in-flight requests finish up to
    /// `grace` (or until `hurry` resolves: a second SIGTERM/SIGINT), flush
    /// the OTLP exporter. Interception stays pinned (fail closed). Exchanges
    /// still running after that are cut, and their records say so
    /// (`reason: shutdown`).
    pub async fn shutdown(
        mut self,
        grace: Duration,
        hurry: impl std::future::Future<Output = &'static str>,
    ) {
        ops::signals::notify_stopping();
        self.shared.set_stopping();
        self.listeners.stop_data_plane();
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let outcome = tokio::select! {
            o = self.drain.drain(grace) => o,
            signal = hurry => {
                let in_flight = self.drain.in_flight();
                tracing::warn!(signal, in_flight, "second signal; ending the grace period now");
                ops::signals::DrainOutcome::TimedOut { in_flight }
            }
        };
        match outcome {
            ops::signals::DrainOutcome::Drained => tracing::info!("in-flight requests drained"),
            ops::signals::DrainOutcome::TimedOut { in_flight } => {
                tracing::warn!(in_flight, "shutdown grace period over; dropping requests")
            }
        }
        // Records of what is cut from here on (exchanges past the grace
        // period, tunnels granted and not used yet, handshakes) say the
        // proxy ended them, not the client.
        self.shared.audit.abandon_in_flight();
        // The metrics endpoint (`/readyz` answering 503) stops here.
        self.drain.finish();
        // Connections still open (idle keep-alive, or past the grace period) end here.
        let workers = self.shared.workers.clone();
        let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
        if let Some(dns) = self.dns.take() {
            let _ = dns.shutdown().await;
        }
        if let Some(otel) = self.otel.take() {
            otel.shutdown(Duration::from_secs(5)).await;
        }
    }
}

/// `proxy.max_connections` as configured, or its default from the
/// open-file limit when unset.
pub(crate) fn max_connections(proxy: &config::ProxyConfig) -> Option<std::num::NonZeroU32> {
    proxy
        .max_connections
        .or_else(crate::ops::fd_limit::default_max_connections)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client leg's TCP_NODELAY and keepalive come from the listening
    /// socket (no per-connection setsockopt), so this checks the kernel
    /// copies them to accepted sockets, for IPv4 and IPv6.
    #[tokio::test]
    async fn accepted_sockets_inherit_tcp_nodelay_and_keepalive_from_the_listener() {
        for spec in ["127.0.0.1:0", "[::1]:0"] {
            let spec: ListenAddr = spec.parse().expect("listen spec");
            let bound: std::io::Result<Vec<TcpListener>> =
                spec.socket_addrs().into_iter().map(bind_addr).collect();
            let Ok(listeners) = bound else {
                assert!(spec.to_string().contains("::1"), "IPv4 loopback binds");
                continue; // no IPv6 on this host
            };
            for l in listeners {
                let addr = l.local_addr().expect("addr");
                let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let (accepted, _) = l.accept().await.expect("accept");
                assert!(
                    accepted.nodelay().expect("getsockopt"),
                    "{addr}: accepted socket has TCP_NODELAY"
                );
                // TCP keepalive too, with the upstream leg's timers.
                let sock = socket2::SockRef::from(&accepted);
                assert!(sock.keepalive().expect("SO_KEEPALIVE"), "{addr}");
                assert_eq!(
                    sock.keepalive_time().expect("TCP_KEEPIDLE"),
                    std::time::Duration::from_secs(30)
                );
                assert_eq!(
                    sock.keepalive_interval().expect("TCP_KEEPINTVL"),
                    std::time::Duration::from_secs(15)
                );
                assert_eq!(sock.keepalive_retries().expect("TCP_KEEPCNT"), 4);
                // And the bound on unread or unacknowledged data.
                assert_eq!(
                    sock.tcp_user_timeout().expect("TCP_USER_TIMEOUT"),
                    Some(CLIENT_SEND_TIMEOUT),
                    "{addr}"
                );
                assert!(
                    !socket2::SockRef::from(&client)
                        .keepalive()
                        .expect("SO_KEEPALIVE"),
                    "keepalive is not on by default"
                );
                assert!(
                    !client.nodelay().expect("getsockopt"),
                    "the option is not on by default"
                );
            }
        }
    }
}
