//! Operations: the management API (reload, status), Prometheus metrics with
//! health and readiness, OTLP export of audit records, and process lifecycle
//! (signals, graceful drain, `sd_notify`).
//!
//! Nothing here is on the request path except two [`crate::audit::AuditObserver`]s
//! ([`metrics::MetricsObserver`] and [`otel::OtelExporter`]), both of which
//! only touch atomics or a bounded queue.

pub mod management;
pub mod metrics;
pub mod otel;
pub mod signals;

#[cfg(test)]
mod testutil;

pub use management::{ApiKey, ReloadController, ReloadSummary, Reloader, Trigger};
pub use metrics::{Metrics, MetricsObserver, ReadyFn};
pub use otel::{OtelExporter, OtelSettings};
pub use signals::{Drain, ShutdownSignal};
