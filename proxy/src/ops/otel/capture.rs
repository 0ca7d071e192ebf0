//! What a collector rejected in a request it otherwise accepted (OTLP
//! `partial_success`). The exporter library does not return it: it only
//! reports it as one of its internal log events (`HttpLogsClient.PartialSuccess`,
//! `TonicLogsClient.PartialSuccess`, with the `internal-logs` feature). The
//! worker runs under [`Capture`], a dispatcher that takes those events,
//! drops the library's other internal events (the worker reports failures
//! itself, rate-limited) and passes everything else to the process's own
//! subscriber unchanged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span;
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Metadata, Subscriber};

/// The longest collector message kept for the log line.
const MAX_MESSAGE: usize = 256;

/// Records rejected since the last [`Rejections::take`], and the collector's last message.
#[derive(Debug, Default)]
pub(super) struct Rejections {
    records: AtomicU64,
    message: Mutex<String>,
}

impl Rejections {
    /// The records rejected since the last call, and the collector's message.
    pub(super) fn take(&self) -> (u64, String) {
        let n = self.records.swap(0, Ordering::AcqRel);
        let msg = std::mem::take(&mut *self.message.lock().unwrap_or_else(|p| p.into_inner()));
        (n, msg)
    }

    fn add(&self, n: u64, message: String) {
        self.records.fetch_add(n, Ordering::AcqRel);
        if !message.is_empty() {
            *self.message.lock().unwrap_or_else(|p| p.into_inner()) = message;
        }
    }
}

/// The dispatcher the worker runs under; see the module docs.
pub(super) struct Capture {
    inner: Dispatch,
    rejections: Arc<Rejections>,
}

impl Capture {
    /// Passes on to the dispatcher in effect now (the process's subscriber).
    pub(super) fn dispatch(rejections: Arc<Rejections>) -> Dispatch {
        let inner = tracing::dispatcher::get_default(Dispatch::clone);
        Dispatch::new(Capture { inner, rejections })
    }
}

/// An internal event of the OpenTelemetry crates.
fn is_library(m: &Metadata<'_>) -> bool {
    m.target().starts_with("opentelemetry")
}

fn is_partial_success(m: &Metadata<'_>) -> bool {
    is_library(m) && m.name().ends_with("LogsClient.PartialSuccess")
}

impl Subscriber for Capture {
    fn register_callsite(&self, m: &'static Metadata<'static>) -> Interest {
        if is_partial_success(m) {
            Interest::always()
        } else if is_library(m) {
            Interest::never()
        } else {
            // The process's answer, so its disabled callsites stay cheap.
            self.inner.register_callsite(m)
        }
    }

    fn enabled(&self, m: &Metadata<'_>) -> bool {
        if is_library(m) {
            is_partial_success(m)
        } else {
            self.inner.enabled(m)
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        // The events taken here are WARN; the process's subscriber is
        // registered on its own and brings its own hint.
        Some(LevelFilter::WARN)
    }

    fn event(&self, e: &Event<'_>) {
        if is_partial_success(e.metadata()) {
            let mut v = PartialSuccess::default();
            e.record(&mut v);
            self.rejections.add(v.rejected, v.message);
        } else if !is_library(e.metadata()) {
            self.inner.event(e);
        }
    }

    fn new_span(&self, a: &span::Attributes<'_>) -> span::Id {
        self.inner.new_span(a)
    }

    fn record(&self, s: &span::Id, v: &span::Record<'_>) {
        self.inner.record(s, v)
    }

    fn record_follows_from(&self, s: &span::Id, f: &span::Id) {
        self.inner.record_follows_from(s, f)
    }

    fn enter(&self, s: &span::Id) {
        self.inner.enter(s)
    }

    fn exit(&self, s: &span::Id) {
        self.inner.exit(s)
    }

    fn clone_span(&self, s: &span::Id) -> span::Id {
        self.inner.clone_span(s)
    }

    fn try_close(&self, s: span::Id) -> bool {
        self.inner.try_close(s)
    }

    // `current_span` keeps its default (none): `tracing` does not re-export
    // its type, and the process's layers find the current span through their
    // own registry, which sees every enter and exit above.
}

/// The fields of a `*LogsClient.PartialSuccess` event.
#[derive(Default)]
struct PartialSuccess {
    rejected: u64,
    message: String,
}

impl Visit for PartialSuccess {
    fn record_i64(&mut self, f: &Field, v: i64) {
        if f.name() == "rejected_log_records" {
            self.rejected = u64::try_from(v).unwrap_or(0);
        }
    }

    fn record_u64(&mut self, f: &Field, v: u64) {
        if f.name() == "rejected_log_records" {
            self.rejected = v;
        }
    }

    fn record_str(&mut self, f: &Field, v: &str) {
        if f.name() == "error_message" {
            let mut end = v.len().min(MAX_MESSAGE);
            while !v.is_char_boundary(end) {
                end -= 1;
            }
            self.message = v[..end].to_string();
        }
    }

    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        if f.name() == "error_message" && self.message.is_empty() {
            let mut s = format!("{v:?}");
            s.truncate(
                s.char_indices()
                    .nth(MAX_MESSAGE)
                    .map_or(s.len(), |(i, _)| i),
            );
            self.message = s;
        }
    }
}
