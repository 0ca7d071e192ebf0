//! The task that batches queued audit records and exports them, off the
//! request path: [`super::OtelExporter::observe`] only queues.

use std::time::{Duration, SystemTime};

use opentelemetry::logs::LoggerProvider as _;
use opentelemetry::InstrumentationScope;
use opentelemetry_sdk::logs::{LogBatch, LogExporter, SdkLogRecord, SdkLogger, SdkLoggerProvider};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};

use super::convert;
use crate::audit::AuditRecord;

/// Messages from [`super::OtelExporter`] to its worker.
pub(super) enum Control {
    /// Export what is queued, shut the exporter down, then answer.
    Shutdown(oneshot::Sender<()>),
}

pub(super) struct Worker<E> {
    pub(super) rx: mpsc::Receiver<AuditRecord>,
    pub(super) control: mpsc::UnboundedReceiver<Control>,
    pub(super) exporter: E,
    pub(super) provider: SdkLoggerProvider,
    pub(super) scope: InstrumentationScope,
    pub(super) max_batch: usize,
    pub(super) flush_interval: Duration,
    pub(super) export_timeout: Duration,
    pub(super) dropped: Counter,
    pub(super) failing: bool,
}

impl<E: LogExporter + 'static> Worker<E> {
    pub(super) async fn run(mut self) {
        let logger = self.provider.logger_with_scope(self.scope.clone());
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut tick = tokio::time::interval(self.flush_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ctl = self.control.recv() => {
                    self.rx.close();
                    while let Ok(r) = self.rx.try_recv() {
                        batch.push(r);
                        if batch.len() >= self.max_batch {
                            self.export(&logger, &mut batch).await;
                        }
                    }
                    self.export(&logger, &mut batch).await;
                    if let Err(e) = self.exporter.shutdown() {
                        tracing::debug!(error = %e, "otel exporter shutdown");
                    }
                    if let Some(Control::Shutdown(done)) = ctl {
                        let _ = done.send(());
                    }
                    return;
                }
                r = self.rx.recv() => match r {
                    Some(r) => {
                        batch.push(r);
                        if batch.len() >= self.max_batch {
                            self.export(&logger, &mut batch).await;
                        }
                    }
                    None => {
                        self.export(&logger, &mut batch).await;
                        return;
                    }
                },
                _ = tick.tick() => self.export(&logger, &mut batch).await,
            }
        }
    }

    async fn export(&mut self, logger: &SdkLogger, batch: &mut Vec<AuditRecord>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let observed = SystemTime::now();
        let records: Vec<SdkLogRecord> = batch
            .drain(..)
            .map(|r| convert::log_record(logger, &r, observed))
            .collect();
        let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            records.iter().map(|r| (r, &self.scope)).collect();
        let result = tokio::time::timeout(
            self.export_timeout,
            self.exporter.export(LogBatch::new(&refs)),
        )
        .await;
        let err = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("export timed out".to_string()),
        };
        match err {
            None if self.failing => {
                self.failing = false;
                tracing::info!("otel export recovered");
            }
            None => {}
            Some(e) => {
                self.dropped.inc_by(n);
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(error = %e, records = n, "otel export failing; records are dropped until it recovers");
                }
            }
        }
    }
}
