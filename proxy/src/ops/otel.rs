//! OTLP export of audit records as OpenTelemetry log records, configured only
//! by the standard `OTEL_*` environment variables (see [`OtelSettings::from_env`]).
//! A bad `OTEL_*` value never stops the proxy: it is logged and ignored, or,
//! for the endpoint and for TLS files that cannot be used, turns export off
//! with an error (see [`OtelExporter::start_from_env`]).
//!
//! [`OtelExporter`] is an [`AuditObserver`]. `observe()` clones the record into
//! a bounded queue with `try_send` and returns: it never waits for the
//! collector. A worker task batches the queue and exports with the official
//! `opentelemetry-otlp` exporter (HTTP/protobuf or gRPC). Records that find the
//! queue full, or whose export fails, are counted in
//! `iron_proxy_otel_dropped_records_total`. We do not use the SDK's
//! `BatchLogProcessor` because it counts its drops privately.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::logs::{LogExporter, SdkLoggerProvider};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};

use crate::audit::{AuditObserver, AuditRecord};
use capture::{Capture, Rejections};
use connect::FailureCause;
use tracing::instrument::WithSubscriber as _;
use worker::{Control, Queued, Worker};

mod capture;
mod client_auth;
mod connect;
mod convert;
mod settings;
#[cfg(test)]
mod tests;
mod tls;
mod worker;

pub use settings::{
    take_header_variables, trim_compression_variables, Compression, FileVar, OtelEnv, OtelExport,
    OtelSettings, OtlpProtocol, TlsFiles,
};
pub use tls::TlsError;

/// Errors from OTLP export setup.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// An `OTEL_*` variable could not be parsed.
    #[error("invalid {var}: {detail}")]
    BadVariable {
        /// The variable.
        var: &'static str,
        /// What is wrong (never the value of a header or an endpoint).
        detail: String,
    },
    /// The TLS files cannot be used (unreadable, not PEM, a key without
    /// its certificate) or there are no roots to verify the collector with.
    #[error("otlp tls settings")]
    Tls(#[source] tls::TlsError),
    /// The OTLP exporter could not be built.
    #[error("building the otlp exporter")]
    Build(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// Exports audit records to an OTLP collector without ever slowing requests.
pub struct OtelExporter {
    tx: mpsc::Sender<Queued>,
    /// Bytes queued ([`convert::queued_size`]), shared with the worker.
    queued_bytes: Arc<AtomicUsize>,
    max_queue_bytes: usize,
    /// Records queued or being exported, not yet delivered or counted as
    /// dropped; shared with the worker, taken whole when shutdown gives up.
    pending: Arc<AtomicU64>,
    control: Mutex<Option<mpsc::UnboundedSender<Control>>>,
    closed: AtomicBool,
    dropped: Counter,
}

impl fmt::Debug for OtelExporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtelExporter").finish_non_exhaustive()
    }
}

impl OtelExporter {
    /// Reads the `OTEL_*` variables and starts exporting when they ask for it;
    /// needs a tokio runtime. Never fails: ignored values are logged as
    /// warnings, and an endpoint that is not an http(s) URL, or an exporter
    /// that cannot be built (TLS files that cannot be used among others), is
    /// logged as an error and leaves export off.
    pub fn start_from_env(dropped: Counter) -> Option<Arc<Self>> {
        Self::start_with(OtelSettings::from_env(), dropped)
    }

    /// [`OtelExporter::start_from_env`] for already-read variables.
    pub fn start_with(env: OtelEnv, dropped: Counter) -> Option<Arc<Self>> {
        for w in &env.warnings {
            tracing::warn!(error = %w, "ignoring an invalid otel setting");
        }
        match env.export {
            OtelExport::Enabled(s) => match Self::start(s, dropped) {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::error!(error = %crate::error_chain(&e), "otel export disabled: the exporter could not be built");
                    None
                }
            },
            OtelExport::Unset => None,
            OtelExport::SdkDisabled => {
                tracing::info!("otel export disabled by OTEL_SDK_DISABLED=true");
                None
            }
            OtelExport::ExporterNone => {
                tracing::info!("otel export disabled by OTEL_LOGS_EXPORTER=none");
                None
            }
            OtelExport::InvalidEndpoint(e) => {
                tracing::error!(error = %e, "otel export disabled: invalid endpoint; audit records are not exported");
                None
            }
        }
    }

    /// Builds the exporter and starts its worker; needs a tokio runtime.
    /// `dropped` is incremented for every record not delivered
    /// (pass [`crate::ops::metrics::Metrics::otel_dropped_counter`]).
    pub fn start(settings: OtelSettings, dropped: Counter) -> Result<Arc<Self>, OtelError> {
        // The library's internal events (an ignored OTEL_* value it reads
        // itself) are dropped here as in the worker: ours name the variable.
        let quiet = Capture::dispatch(Arc::default());
        let (exporter, cause) =
            tracing::dispatcher::with_default(&quiet, || connect::build_exporter(&settings))?;
        let tls = if settings.plaintext() {
            "none (plaintext http://)".to_string()
        } else {
            tls::describe(&settings.tls)
        };
        // The names of the headers sent on every export (never their
        // values): with the warnings about skipped entries, all that the
        // header variables put on the wire.
        let headers: Vec<&str> = settings.headers.iter().map(|(k, _)| k.as_str()).collect();
        tracing::info!(
            endpoint = %settings.endpoint_for_log(),
            endpoint_var = settings.endpoint_var,
            protocol = settings.protocol.as_str(),
            timeout_ms = settings.export_timeout.as_millis(),
            service_name = %settings.service_name,
            compression = settings.compression.as_str(),
            tls = %tls,
            headers = %headers.join(","),
            "otel exporter enabled"
        );
        Ok(Self::spawn(&settings, exporter, cause, dropped))
    }

    /// Starts the worker around `exporter` (tests pass their own), which
    /// notes in `cause` why its requests fail.
    fn spawn<E: LogExporter + 'static>(
        settings: &OtelSettings,
        mut exporter: E,
        cause: Arc<FailureCause>,
        dropped: Counter,
    ) -> Arc<Self> {
        let resource = settings.resource();
        exporter.set_resource(&resource);
        let (tx, rx) = mpsc::channel(settings.queue_size.max(1));
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let rejections = Arc::new(Rejections::default());
        let pending = Arc::new(AtomicU64::new(0));
        let worker = Worker {
            rx,
            queued_bytes: queued_bytes.clone(),
            pending: pending.clone(),
            control: ctl_rx,
            exporter,
            provider: SdkLoggerProvider::builder().with_resource(resource).build(),
            scope: InstrumentationScope::builder("iron-proxy")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            max_batch: settings.max_batch.max(1),
            max_batch_bytes: settings.max_batch_bytes,
            flush_interval: settings.flush_interval,
            export_timeout: settings.export_timeout,
            dropped: dropped.clone(),
            failing: false,
            last_export: tokio::time::Instant::now(),
            oversized: crate::ops::warn_every::WarnEvery::new(Duration::from_secs(60)),
            rejections: rejections.clone(),
            rejected_warning: crate::ops::warn_every::WarnEvery::new(Duration::from_secs(60)),
            cause,
        };
        tokio::spawn(worker.run().with_subscriber(Capture::dispatch(rejections)));
        Arc::new(OtelExporter {
            tx,
            queued_bytes,
            max_queue_bytes: settings.max_queue_bytes,
            pending,
            control: Mutex::new(Some(ctl_tx)),
            closed: AtomicBool::new(false),
            dropped,
        })
    }

    /// Records not delivered so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Exports what is queued, shuts the exporter down and stops the worker,
    /// waiting at most `timeout`. Records observed afterwards count as dropped.
    pub async fn shutdown(&self, timeout: Duration) {
        self.closed.store(true, Ordering::Release);
        let ctl = self
            .control
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(ctl) = ctl else { return };
        let (done_tx, done_rx) = oneshot::channel();
        if ctl.send(Control::Shutdown(done_tx)).is_err() {
            return;
        }
        if tokio::time::timeout(timeout, done_rx).await.is_err() {
            // The process exits next: what the worker still holds is lost.
            // Taking the count whole leaves the worker nothing to count twice.
            let lost = self.pending.swap(0, Ordering::AcqRel);
            self.dropped.inc_by(lost);
            tracing::warn!(
                records = lost,
                "otel exporter did not flush within the shutdown timeout; records still queued or being exported are dropped"
            );
        }
    }
}

impl AuditObserver for OtelExporter {
    fn observe(&self, record: &AuditRecord) {
        if self.closed.load(Ordering::Acquire) {
            self.dropped.inc();
            return;
        }
        // Reserve first so a full queue costs no clone.
        let Ok(permit) = self.tx.try_reserve() else {
            self.dropped.inc();
            return;
        };
        let size = convert::queued_size(record);
        if !self.reserve_bytes(size) {
            self.dropped.inc();
            return;
        }
        self.pending.fetch_add(1, Ordering::AcqRel);
        permit.send(Queued {
            record: record.clone(),
            size,
        });
    }
}

impl OtelExporter {
    /// Counts `size` more bytes in the queue unless that would pass its
    /// bound. An empty queue takes any one record (it is cut to size when
    /// exported), so no record is too large to queue.
    fn reserve_bytes(&self, size: usize) -> bool {
        let max = self.max_queue_bytes;
        self.queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                let n = q.checked_add(size)?;
                (q == 0 || n <= max).then_some(n)
            })
            .is_ok()
    }
}
