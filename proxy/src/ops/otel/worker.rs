//! The task that batches queued audit records and exports them, off the
//! request path: [`super::OtelExporter::observe`] only queues.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::logs::LoggerProvider as _;
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogRecord, SdkLogger, SdkLoggerProvider};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::capture::Rejections;
use super::connect::FailureCause;
use super::convert::{self, Converted};
use crate::audit::AuditRecord;
use crate::ops::warn_every::WarnEvery;

/// Messages from [`super::OtelExporter`] to its worker.
pub(super) enum Control {
    /// Export what is queued, shut the exporter down, then answer.
    Shutdown(oneshot::Sender<()>),
}

/// A queued record, and the bytes it counts against the queue's bound.
pub(super) struct Queued {
    pub(super) record: AuditRecord,
    pub(super) size: usize,
}

/// Turns queued records into OTLP export requests, one at a time.
pub(super) struct Worker<E> {
    pub(super) rx: mpsc::Receiver<Queued>,
    /// Bytes in the queue ([`Queued::size`]); released as records are taken.
    pub(super) queued_bytes: Arc<AtomicUsize>,
    /// Records queued or in a batch, not yet delivered or counted as dropped.
    pub(super) pending: Arc<AtomicU64>,
    pub(super) control: mpsc::UnboundedReceiver<Control>,
    pub(super) exporter: E,
    pub(super) provider: SdkLoggerProvider,
    pub(super) scope: InstrumentationScope,
    /// Records per export request, at most.
    pub(super) max_batch: usize,
    /// Encoded bytes per export request, at most (estimated from above).
    pub(super) max_batch_bytes: usize,
    pub(super) flush_interval: Duration,
    pub(super) export_timeout: Duration,
    pub(super) dropped: Counter,
    pub(super) failing: bool,
    /// When the last export request ended.
    pub(super) last_export: Instant,
    /// Rate limit of the warning about a record too large to export.
    pub(super) oversized: WarnEvery,
    /// What the collector rejected in accepted requests (`partial_success`).
    pub(super) rejections: Arc<Rejections>,
    /// Rate limit of the warning about rejected records.
    pub(super) rejected_warning: WarnEvery,
    /// Why the last HTTP request without a response failed (the library
    /// says only "network error").
    pub(super) cause: Arc<FailureCause>,
}

/// Converted records waiting for the next export request.
#[derive(Default)]
struct Batch {
    records: Vec<SdkLogRecord>,
    /// Their estimated encoded size.
    bytes: usize,
}

impl<E: LogExporter + 'static> Worker<E> {
    pub(super) async fn run(mut self) {
        let logger = self.provider.logger_with_scope(self.scope.clone());
        let mut batch = Batch::default();
        // Not a fixed tick: after an export slower than the interval, a tick
        // would already be due and send the few records taken since, while
        // thousands wait in the queue. The interval runs from the end of the
        // last export instead, so a backlog goes out in full batches.
        loop {
            let next_flush = self.last_export + self.flush_interval;
            tokio::select! {
                ctl = self.control.recv() => {
                    self.rx.close();
                    while let Ok(q) = self.rx.try_recv() {
                        self.take(&logger, &mut batch, q).await;
                    }
                    self.export(&mut batch).await;
                    if let Err(e) = self.exporter.shutdown() {
                        tracing::debug!(error = %e, "otel exporter shutdown");
                    }
                    if let Some(Control::Shutdown(done)) = ctl {
                        let _ = done.send(());
                    }
                    return;
                }
                r = self.rx.recv() => match r {
                    Some(q) => self.take(&logger, &mut batch, q).await,
                    None => {
                        self.export(&mut batch).await;
                        return;
                    }
                },
                _ = tokio::time::sleep_until(next_flush), if !batch.records.is_empty() => {
                    self.export(&mut batch).await;
                }
            }
        }
    }

    /// Takes `q` off the queue's byte count and adds it to the batch.
    async fn take(&mut self, logger: &SdkLogger, batch: &mut Batch, q: Queued) {
        self.queued_bytes.fetch_sub(q.size, Ordering::AcqRel);
        self.add(logger, batch, &q.record).await;
    }

    /// Converts `r` into the batch, exporting first when it would take the
    /// request over [`Worker::max_batch_bytes`], and after when the batch is full.
    async fn add(&mut self, logger: &SdkLogger, batch: &mut Batch, r: &AuditRecord) {
        let observed = SystemTime::now();
        let Converted { record, size } =
            match convert::log_record(logger, r, observed, self.max_batch_bytes) {
                Ok(c) => c,
                Err(e) => return self.drop_oversized(r, e),
            };
        if batch.bytes + size > self.max_batch_bytes {
            self.export(batch).await;
        }
        batch.records.push(record);
        batch.bytes += size;
        if batch.records.len() >= self.max_batch {
            self.export(batch).await;
        }
    }

    /// A record that cannot be cut to fit one request: counted and named.
    fn drop_oversized(&self, r: &AuditRecord, e: convert::Oversized) {
        let lost = self.settle(1);
        self.dropped.inc_by(lost);
        if let Some(held_back) = self.oversized.due(std::time::Instant::now()) {
            tracing::warn!(
                request_id = %r.request_id,
                size = e.size,
                limit = self.max_batch_bytes,
                held_back,
                "audit record too large for an otlp export request even with its long values cut; not exported (warned at most once a minute)"
            );
        }
    }

    async fn export(&mut self, batch: &mut Batch) {
        if batch.records.is_empty() {
            return;
        }
        let records = std::mem::take(&mut batch.records);
        batch.bytes = 0;
        let n = records.len() as u64;
        let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            records.iter().map(|r| (r, &self.scope)).collect();
        // Whatever an earlier request left behind is not this one's cause.
        self.cause.take();
        let result = tokio::time::timeout(
            self.export_timeout,
            self.exporter.export(LogBatch::new(&refs)),
        )
        .await;
        let cause = self.cause.take();
        let err = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(match cause {
                Some(c) => format!("{e}: {c}"),
                None => e.to_string(),
            }),
            Err(_) => Some(match cause {
                Some(c) => format!("export timed out; the last attempt: {c}"),
                None => "export timed out".to_string(),
            }),
        };
        self.last_export = Instant::now();
        let (rejected, message) = self.rejections.take();
        let ours = self.settle(n);
        match err {
            None => {
                if self.failing {
                    self.failing = false;
                    tracing::info!("otel export recovered");
                }
                self.count_rejected(rejected.min(ours), &message);
            }
            Some(mut e) => {
                self.dropped.inc_by(ours);
                if !self.failing {
                    self.failing = true;
                    // Once per failing spell: a collector that wants a client
                    // certificate shows only as a dropped connection.
                    if let Some(why) = self.cause.diagnose(self.export_timeout).await {
                        e = format!("{e}; {why}");
                    }
                    tracing::warn!(error = %e, records = n, "otel export failing; records are dropped until it recovers");
                }
            }
        }
    }

    /// Takes `n` records off the pending count; returns how many of them
    /// are still this worker's to count (none once shutdown gave up waiting
    /// and counted them all as dropped).
    fn settle(&self, n: u64) -> u64 {
        match self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |p| {
                Some(p.saturating_sub(n))
            }) {
            Ok(before) | Err(before) => before.min(n),
        }
    }

    /// Records the collector took but rejected (OTLP `partial_success`) are
    /// lost as surely as a failed request's: counted, and warned about.
    fn count_rejected(&self, rejected: u64, message: &str) {
        if rejected == 0 {
            return;
        }
        self.dropped.inc_by(rejected);
        if let Some(held_back) = self.rejected_warning.due(std::time::Instant::now()) {
            tracing::warn!(
                records = rejected,
                error_message = message,
                held_back,
                "otel collector rejected records of an accepted export request; they are dropped (warned at most once a minute)"
            );
        }
    }
}
