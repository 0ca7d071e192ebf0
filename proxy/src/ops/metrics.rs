//! Prometheus metrics, `/healthz` and `/readyz`, served on `metrics.listen`.
//!
//! [`Metrics`] owns every `iron_proxy_*` metric. Request counters are fed by
//! [`MetricsObserver`], an [`AuditObserver`], so each audited request is counted
//! exactly once, in the one place that always runs. Counters owned by other
//! modules (DNS, certificate cache, eBPF per-CPU maps, the idle upstream pool)
//! are read at scrape time through callbacks
//! ([`Metrics::register_counter_source`], [`Metrics::register_gauge_source`]),
//! so those modules only expose a cheap `stats()` and never depend on this
//! one; so are the data plane's byte counts and upstream timings, atomics in
//! [`crate::traffic`].
//!
//! Label values are bounded: they come from enums, from config (transform
//! names) or from the proxy's own reason codes, and every free-text label is
//! capped in length and in distinct values. Hosts and paths are never labels.
//!
//! `/metrics` speaks the classic Prometheus text format (0.0.4), or OpenMetrics
//! when the scraper asks for it in `Accept`.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::audit::{Action, AuditObserver, AuditRecord, Mode};

mod exposition;
mod handles;
mod histogram;
mod labels;
mod process;
mod server;
mod sources;
#[cfg(test)]
mod tests;
mod traffic;

use crate::histogram::Buckets;
use handles::{HandleCache, TransformHandles};
use histogram::SharedHistogram;
use labels::*;
pub use server::{router, serve, start};
use sources::{BoundedLabel, CallbackSource};

/// Errors from the metrics module.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A callback metric name is not `[a-z_][a-z0-9_]*`, or is already taken.
    #[error("invalid or duplicate metric name {0:?}")]
    BadName(String),
    /// The listen address could not be bound.
    #[error("binding the metrics endpoint to {addr}")]
    Bind {
        /// `metrics.listen`.
        addr: std::net::SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Reads a module's counters at scrape time: one `(label values, value)` per series,
/// label values in the order given at registration. Must be quick (atomics, no I/O).
pub type CounterSourceFn = Box<dyn Fn() -> Vec<(Vec<String>, u64)> + Send + Sync>;

/// Tells `/readyz` whether the proxy may receive traffic.
pub type ReadyFn = Arc<dyn Fn() -> bool + Send + Sync>;

/// Histogram buckets for whole requests, in seconds.
const REQUEST_BUCKETS: Buckets = Buckets::new(&[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
]);
/// Histogram buckets for one transform, in seconds.
const TRANSFORM_BUCKETS: Buckets = Buckets::new(&[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 2.0,
]);
/// Longest free-text label value kept.
const MAX_LABEL_LEN: usize = 64;
/// Distinct values kept per free-text label; later ones become `other`.
const MAX_LABEL_VALUES: usize = 64;

type HistogramFamily<L> = Family<L, SharedHistogram, fn() -> SharedHistogram>;

fn request_histogram() -> SharedHistogram {
    SharedHistogram::new(&REQUEST_BUCKETS)
}

fn transform_histogram() -> SharedHistogram {
    SharedHistogram::new(&TRANSFORM_BUCKETS)
}

/// Every `iron_proxy_*` metric. Share it as `Arc<Metrics>`; updates are atomic
/// and take no lock beyond the label map's read lock.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// The unprefixed `process_*` family ([`process::ProcessCollector`]).
    process: Registry,
    names: Mutex<HashSet<String>>,
    requests: Family<RequestLabels, Counter>,
    request_duration: HistogramFamily<RequestLabels>,
    upstream_errors: Family<ReasonLabel, Counter>,
    rejections: Family<ReasonLabel, Counter>,
    responses: Family<CodeLabel, Counter>,
    client_connections: Family<ListenerLabel, Gauge>,
    transform_decisions: Family<DecisionLabels, Counter>,
    transform_duration: HistogramFamily<TransformLabel>,
    secret_failures: Family<SourceLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    last_reload_success: Gauge<f64, AtomicU64>,
    /// 1 while the last load (start-up or reload) succeeded, 0 after a failed reload.
    last_reload_ok: Gauge,
    ca_expiry: Gauge,
    otel_dropped: Counter,
    audit_dropped: Counter,
    reasons: BoundedLabel,
    reject_reasons: BoundedLabel,
    transforms: BoundedLabel,
    transform_handles: HandleCache,
    sources: BoundedLabel,
    /// `requests` and `request_duration` handles by [`Action`] and [`Mode`]
    /// ([`action_slot`], [`mode_slot`]), taken from the families on first use, so that
    /// counting a request does not hash labels under the families' lock.
    request_handles: [[OnceLock<Counter>; MODES]; ACTIONS],
    duration_handles: [[OnceLock<SharedHistogram>; MODES]; ACTIONS],
    /// `responses` handles by status class ([`CODE_CLASSES`]).
    code_handles: [OnceLock<Counter>; 5],
}

/// How many [`Mode`]s and [`Action`]s there are (the handle arrays' sizes).
const MODES: usize = 5;
const ACTIONS: usize = 3;

/// A mode's index in the handle arrays (exhaustive: a new mode fails to compile here).
fn mode_slot(m: Mode) -> usize {
    match m {
        Mode::Http => 0,
        Mode::Https => 1,
        Mode::Tunnel => 2,
        Mode::Transparent => 3,
        Mode::SniOnly => 4,
    }
}

/// An action's index in the handle arrays.
fn action_slot(a: Action) -> usize {
    match a {
        Action::Allow => 0,
        Action::Reject => 1,
        Action::Error => 2,
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// All metrics registered, at zero; `build_info` is set to this crate's
    /// version. The data-plane figures are the process's ([`crate::traffic::TRAFFIC`]).
    pub fn new() -> Self {
        Self::with_traffic(&crate::traffic::TRAFFIC)
    }

    /// [`Metrics::new`] with the data-plane figures of `traffic` (a test's own).
    pub fn with_traffic(figures: &'static crate::traffic::Traffic) -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("iron_proxy")),
            process: {
                let mut r = Registry::default();
                r.register_collector(Box::new(process::ProcessCollector));
                r
            },
            names: Mutex::new(HashSet::new()),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(request_histogram),
            upstream_errors: Family::default(),
            rejections: Family::default(),
            responses: Family::default(),
            client_connections: Family::default(),
            transform_decisions: Family::default(),
            transform_duration: Family::new_with_constructor(transform_histogram),
            secret_failures: Family::default(),
            reloads: Family::default(),
            last_reload_success: Gauge::default(),
            last_reload_ok: Gauge::default(),
            ca_expiry: Gauge::default(),
            otel_dropped: Counter::default(),
            audit_dropped: Counter::default(),
            reasons: BoundedLabel::default(),
            reject_reasons: BoundedLabel::default(),
            transforms: BoundedLabel::default(),
            transform_handles: HandleCache::default(),
            sources: BoundedLabel::default(),
            request_handles: Default::default(),
            duration_handles: Default::default(),
            code_handles: Default::default(),
        };
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        {
            let mut r = m.registry();
            r.register(
                "requests",
                "Audited requests and connections, by outcome and how they arrived",
                m.requests.clone(),
            );
            r.register(
                "request_duration_seconds",
                "Wall time of audited requests, by outcome and how they arrived",
                m.request_duration.clone(),
            );
            r.register(
                "upstream_errors",
                "Requests that ended in an error (upstream, client or shutdown), by reason",
                m.upstream_errors.clone(),
            );
            r.register(
                "rejections",
                "Requests and connections refused, by reason",
                m.rejections.clone(),
            );
            r.register(
                "responses",
                "Audited requests by the status class the client got (records without a status are not counted)",
                m.responses.clone(),
            );
            r.register(
                "client_connections",
                "Client connections open now, by listener (tunnels and WebSockets included); \
                 proxy.max_connections caps their sum",
                m.client_connections.clone(),
            );
            r.register(
                "transform_decisions",
                "Transform verdicts, by transform and action",
                m.transform_decisions.clone(),
            );
            r.register(
                "transform_duration_seconds",
                "Time spent in one transform hook, by transform and phase (request, response)",
                m.transform_duration.clone(),
            );
            r.register(
                "secret_resolution_failures",
                "Secrets that could not be resolved, by source type",
                m.secret_failures.clone(),
            );
            r.register(
                "reloads",
                "Configuration reloads, by result",
                m.reloads.clone(),
            );
            r.register(
                "last_reload_success_timestamp_seconds",
                "Unix time of the last successful configuration load",
                m.last_reload_success.clone(),
            );
            r.register(
                "last_reload_successful",
                "1 if the last configuration load (start-up or reload) succeeded, 0 if it failed \
                 (the proxy serves the config in force before it)",
                m.last_reload_ok.clone(),
            );
            r.register(
                "ca_expiry_timestamp_seconds",
                "Unix time at which the interception CA certificate expires",
                m.ca_expiry.clone(),
            );
            r.register(
                "otel_dropped_records",
                "Audit records not delivered to the OTLP collector (queue full, export failed or records rejected)",
                m.otel_dropped.clone(),
            );
            r.register(
                "audit_dropped_records",
                "Audit records not written to stderr: it took nothing for the stall limit while the queue was full",
                m.audit_dropped.clone(),
            );
            r.register("build_info", "Build information", build_info);
            r.register_collector(Box::new(traffic::TrafficCollector(figures)));
        }
        // Known label combinations start at zero so rate() and absent() work from the first scrape.
        for action in [Action::Allow, Action::Reject, Action::Error] {
            for mode in [
                Mode::Http,
                Mode::Https,
                Mode::Tunnel,
                Mode::Transparent,
                Mode::SniOnly,
            ] {
                let _ = m.requests.get_or_create(&RequestLabels {
                    action: action_label(action),
                    mode: mode_label(mode),
                });
            }
        }
        for result in ["success", "failure"] {
            let _ = m.reloads.get_or_create(&ResultLabel { result });
        }
        for code in CODE_CLASSES {
            let _ = m.responses.get_or_create(&CodeLabel { code });
        }
        for mode in crate::listen::per_client::LISTENERS {
            let _ = m.client_connections.get_or_create(&ListenerLabel {
                listener: mode_label(mode),
            });
        }
        // Connections refused by proxy.max_connections(_per_client), from the
        // first scrape: an alert on them needs no `or vector(0)`.
        for reason in [
            crate::listen::per_client::TOTAL_REASON,
            crate::listen::per_client::REASON,
        ] {
            let reason = m.reject_reasons.admit(reason);
            let _ = m.rejections.get_or_create(&ReasonLabel { reason });
        }
        for source in ["env", "aws_sm", "aws_ssm", "1password", "1password_connect"] {
            let source = m.sources.admit(source);
            let _ = m.secret_failures.get_or_create(&SourceLabel { source });
        }
        let names = [
            "requests",
            "request_duration_seconds",
            "upstream_errors",
            "rejections",
            "responses",
            "client_connections",
            "transform_decisions",
            "transform_duration_seconds",
            "secret_resolution_failures",
            "reloads",
            "last_reload_success_timestamp_seconds",
            "last_reload_successful",
            "ca_expiry_timestamp_seconds",
            "otel_dropped_records",
            "audit_dropped_records",
            "build_info",
        ];
        m.names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(names.iter().chain(&traffic::NAMES).map(|n| n.to_string()));
        // A process-wide count kept by the listeners, from the first scrape.
        let _ = m.register_counter_source(
            "http2_rapid_reset_closes",
            "HTTP/2 client connections shut down because the client cancelled streams the proxy \
             had started faster than allowed (Rapid Reset, CVE-2023-44487)",
            &[],
            Box::new(|| vec![(Vec::new(), crate::listen::cancels::closed_connections())]),
        );
        m
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while encoding leaves the registry intact; keep serving.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An audit observer that feeds this registry; add it to the `AuditSink` once.
    pub fn observer(self: &Arc<Self>) -> Arc<dyn AuditObserver> {
        Arc::new(MetricsObserver(self.clone()))
    }

    /// Counts one finished audit record (what [`MetricsObserver`] does).
    pub fn record_request(&self, r: &AuditRecord) {
        let mode = mode_label(r.mode);
        self.request_handles[action_slot(r.action)][mode_slot(r.mode)]
            .get_or_init(|| {
                self.requests
                    .get_or_create(&RequestLabels {
                        action: action_label(r.action),
                        mode,
                    })
                    .clone()
            })
            .inc();
        self.duration_handles[action_slot(r.action)][mode_slot(r.mode)]
            .get_or_init(|| {
                self.request_duration
                    .get_or_create(&RequestLabels {
                        action: action_label(r.action),
                        mode,
                    })
                    .clone()
            })
            .observe(match r.duration_us {
                // Records timed by their exchange have microseconds; the
                // rest (connection-level refusals) whole milliseconds.
                0 => Duration::from_millis(r.duration_ms),
                us => Duration::from_micros(us),
            });
        if let Some(class) = (r.status_code / 100).checked_sub(1) {
            if let Some(code) = CODE_CLASSES.get(usize::from(class)) {
                self.code_handles[usize::from(class)]
                    .get_or_init(|| self.responses.get_or_create(&CodeLabel { code }).clone())
                    .inc();
            }
        }
        match r.action {
            Action::Error => {
                let reason = self.reasons.admit(r.reason.as_deref().unwrap_or("unknown"));
                self.upstream_errors
                    .get_or_create(&ReasonLabel { reason })
                    .inc();
            }
            Action::Reject => {
                let reason = self
                    .reject_reasons
                    .admit(r.reason.as_deref().unwrap_or("unknown"));
                self.rejections.get_or_create(&ReasonLabel { reason }).inc();
            }
            Action::Allow => {}
        }
        for t in r.request_transforms.iter().chain(&r.response_transforms) {
            let h = self.transform(&t.name);
            let labels = || DecisionLabels {
                transform: h.label.clone(),
                action: t.action,
            };
            match h.decision(t.action, || {
                self.transform_decisions.get_or_create(&labels()).clone()
            }) {
                Some(c) => c.inc(),
                None => self.transform_decisions.get_or_create(&labels()).inc(),
            };
        }
    }

    /// Records the time one transform hook took (`response`: its response
    /// hook); the pipeline uses [`Metrics::transform_timer`] instead.
    pub fn observe_transform(&self, name: &str, response: bool, took: Duration) {
        self.transform_timer(name).observe(response, took);
    }

    /// The gauges of open client connections (`client_connections`), one per
    /// listener in the order of [`crate::listen::per_client::LISTENERS`], for
    /// the connection counter to keep.
    pub fn client_connections_gauges(&self) -> [Gauge; 4] {
        crate::listen::per_client::LISTENERS.map(|mode| {
            self.client_connections
                .get_or_create(&ListenerLabel {
                    listener: mode_label(mode),
                })
                .clone()
        })
    }

    /// The duration histogram of the transform called `name`, for a caller
    /// that records many (the pipeline resolves one per transform when it is
    /// built, so a request looks nothing up).
    pub fn transform_timer(&self, name: &str) -> TransformTimer {
        TransformTimer(self.transform(name))
    }

    /// The metric handles of the transform called `name`.
    fn transform(&self, name: &str) -> Arc<TransformHandles> {
        self.transform_handles.get(name, || {
            let transform = self.transforms.admit(name);
            let duration = ["request", "response"].map(|phase| {
                self.transform_duration
                    .get_or_create(&TransformLabel {
                        transform: transform.clone(),
                        phase,
                    })
                    .clone()
            });
            TransformHandles::new(transform, duration)
        })
    }

    /// Counts a secret that failed to resolve; `source` is the source type (`env`, `aws_sm`, ...).
    pub fn secret_resolution_failed(&self, source: &str) {
        let source = self.sources.admit(source);
        self.secret_failures
            .get_or_create(&SourceLabel { source })
            .inc();
    }

    /// Counts a reload; a success also sets the last-success timestamp to now.
    pub fn reload_finished(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.reloads.get_or_create(&ResultLabel { result }).inc();
        if success {
            self.config_loaded(SystemTime::now());
        } else {
            self.last_reload_ok.set(0);
        }
    }

    /// Sets the last-success timestamp, and the last load as successful,
    /// without counting a reload (the initial load).
    pub fn config_loaded(&self, at: SystemTime) {
        self.last_reload_success.set(unix_seconds(at));
        self.last_reload_ok.set(1);
    }

    /// Sets the CA certificate's expiry time.
    pub fn set_ca_expiry(&self, not_after: SystemTime) {
        self.ca_expiry.set(unix_seconds(not_after) as i64);
    }

    /// The counter OTLP export increments for each record it could not deliver.
    pub fn otel_dropped_counter(&self) -> Counter {
        self.otel_dropped.clone()
    }

    /// The counter of audit records the stderr writer dropped, for
    /// [`crate::audit::AuditSink::count_drops_in`].
    pub fn audit_dropped_counter(&self) -> Counter {
        self.audit_dropped.clone()
    }

    /// Adds a counter family read at scrape time, exposed as `iron_proxy_<name>_total`.
    /// `name` is given without prefix and without `_total`.
    pub fn register_counter_source(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        read: CounterSourceFn,
    ) -> Result<(), MetricsError> {
        self.register_source(name, help, labels, read, false)
    }

    /// Adds a gauge family read at scrape time, exposed as `iron_proxy_<name>`;
    /// a read that returns no series leaves the family empty (a limit not set).
    pub fn register_gauge_source(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        read: CounterSourceFn,
    ) -> Result<(), MetricsError> {
        self.register_source(name, help, labels, read, true)
    }

    fn register_source(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        read: CounterSourceFn,
        gauge: bool,
    ) -> Result<(), MetricsError> {
        let valid = |s: &str| {
            s.bytes().next().is_some_and(|b| !b.is_ascii_digit())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        if !valid(name) || name.ends_with("_total") || !labels.iter().all(|l| valid(l)) {
            return Err(MetricsError::BadName(name.to_string()));
        }
        if !self
            .names
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string())
        {
            return Err(MetricsError::BadName(name.to_string()));
        }
        self.registry().register_collector(Box::new(CallbackSource {
            name: name.to_string(),
            help: help.to_string(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            read,
            gauge,
        }));
        Ok(())
    }

    /// `iron_proxy_secret_stale_seconds{source,name}`: per secret source in
    /// use (its type and name, never a value), how long the value it serves
    /// has been stale (its refresh failing, the last good value served past
    /// its `ttl`), 0 while fresh; read from the sources' registry.
    pub fn register_secret_staleness(&self, read: CounterSourceFn) -> Result<(), MetricsError> {
        self.register_gauge_source(
            "secret_stale_seconds",
            "Seconds the value a secret source serves has been stale (its refresh or re-read \
             failing since, the last good value still served), 0 when fresh; by source type \
             and name",
            &["source", "name"],
            read,
        )
    }

    /// `iron_proxy_dns_queries_total{outcome}` from the DNS server's stats.
    pub fn register_dns_queries(&self, read: CounterSourceFn) -> Result<(), MetricsError> {
        self.register_counter_source(
            "dns_queries",
            "DNS queries answered, by outcome",
            &["outcome"],
            read,
        )
    }

    /// `iron_proxy_cert_cache_total{result=hit|miss|mint|mint_error|refused_mint|displaced}`
    /// from the leaf cache's stats.
    pub fn register_cert_cache(&self, read: CounterSourceFn) -> Result<(), MetricsError> {
        self.register_counter_source(
            "cert_cache",
            "Leaf certificate cache lookups, by result",
            &["result"],
            read,
        )
    }

    /// `iron_proxy_cert_mint_waits_total`: leaf mints that waited for their
    /// turn (`tls::mint_queue`), read from the queue.
    pub fn register_cert_mint_waits(&self, read: CounterSourceFn) -> Result<(), MetricsError> {
        self.register_counter_source(
            "cert_mint_waits",
            "Leaf certificate mints that waited for their client's previous mint or for a slot",
            &[],
            read,
        )
    }

    /// `iron_proxy_cert_mints_waiting`: leaf mints waiting for their turn now.
    pub fn register_cert_mints_waiting(&self, read: CounterSourceFn) -> Result<(), MetricsError> {
        self.register_gauge_source(
            "cert_mints_waiting",
            "Leaf certificate mints waiting now for their client's previous mint or for a slot",
            &[],
            read,
        )
    }

    /// `iron_proxy_resolver_lookups_in_flight`: the proxy's own resolver's
    /// lookups holding a place now (`upstream::resolve`).
    pub fn register_resolver_in_flight(&self, read: CounterSourceFn) -> Result<(), MetricsError> {
        self.register_gauge_source(
            "resolver_lookups_in_flight",
            "Lookups of upstream names the proxy's resolver has in flight now",
            &[],
            read,
        )
    }

    /// `iron_proxy_resolver_lookups_busy_total`: lookups refused for want of
    /// a place (`dns_lookup_busy`).
    pub fn register_resolver_busy(&self, read: CounterSourceFn) -> Result<(), MetricsError> {
        self.register_counter_source(
            "resolver_lookups_busy",
            "Lookups of upstream names refused because their client's share of the lookups in \
             flight, or all of them, stayed taken",
            &[],
            read,
        )
    }

    /// `iron_proxy_intercept_events_total{event}` from the eBPF per-CPU counters
    /// (`redirected`, `denied`, `udp_refused`, `dns_redirected`, `raw_refused`,
    /// `backstop_dropped`, `foreign_listener`).
    pub fn register_intercept_events(&self, read: CounterSourceFn) -> Result<(), MetricsError> {
        self.register_counter_source(
            "intercept_events",
            "eBPF interception events, summed over CPUs",
            &["event"],
            read,
        )
    }

    /// The OpenMetrics text of every metric.
    pub fn encode_openmetrics(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let encoded = encode_registry(&mut out, &self.registry())
            .and_then(|()| encode_registry(&mut out, &self.process))
            .and_then(|()| encode_eof(&mut out));
        if let Err(e) = encoded {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }

    /// The classic Prometheus text format (0.0.4) of every metric.
    pub fn encode_prometheus(&self) -> String {
        exposition::openmetrics_to_prometheus(&self.encode_openmetrics())
    }
}

/// One transform's `iron_proxy_transform_duration_seconds` series, resolved
/// once ([`Metrics::transform_timer`]).
#[derive(Clone)]
pub struct TransformTimer(Arc<TransformHandles>);

impl TransformTimer {
    /// Records one run of the transform's request hook (or, with
    /// `response`, its response hook) that took `took`.
    pub fn observe(&self, response: bool, took: Duration) {
        self.0.duration[usize::from(response)].observe(took);
    }
}

/// Feeds [`Metrics`] from the audit sink: one count per audited request.
pub struct MetricsObserver(pub Arc<Metrics>);

impl AuditObserver for MetricsObserver {
    fn observe(&self, record: &AuditRecord) {
        self.0.record_request(record);
    }
}
