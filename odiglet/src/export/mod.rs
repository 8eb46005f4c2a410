//! Span export: a bounded queue between the pipeline and one backend (OTLP/gRPC or
//! stdout JSON), batching by size and interval, grouping by resource and scope, retrying
//! with capped exponential backoff, counting every span it drops, and flushing on shutdown
//! within a time bound.
//!
//! ```text
//! SpanSink::offer ─try_send─▶ [bounded queue] ─▶ worker: batch ─▶ group ─▶ backend.export
//!        full: dropped_queue_full++                         retry / dropped_after_retries++
//! ```
//! Export knows nothing of eBPF: it consumes [`ProcessSpan`]s.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::InstrumentationScope,
    trace::v1::{ResourceSpans, ScopeSpans},
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::{Instrument, debug, info_span, warn};

use crate::pipeline::{ProcessResource, ProcessSpan, SpanSink};

pub mod otlp_grpc;
pub mod stdout_json;

pub use otlp_grpc::{DEFAULT_OTLP_ENDPOINT, OtlpGrpcError, OtlpGrpcExporter};
pub use stdout_json::{StdoutJsonExporter, to_otlp_json};

/// Why one export attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Worth retrying (the receiver is down, overloaded or slow).
    #[error("{backend} export failed, will retry: {message}")]
    Retryable {
        backend: &'static str,
        message: String,
    },
    /// Retrying would fail the same way.
    #[error("{backend} export failed: {message}")]
    Permanent {
        backend: &'static str,
        message: String,
    },
}

/// A destination for batches of spans.
pub trait SpanExporter: Send + 'static {
    /// Sends one request. `Ok(rejected)` carries the spans the receiver reported rejecting.
    fn export(
        &mut self,
        request: ExportTraceServiceRequest,
    ) -> impl Future<Output = Result<u64, ExportError>> + Send;
}

/// Queue, batching, retry and shutdown settings.
#[derive(Clone, Debug)]
pub struct ExporterConfig {
    /// Spans waiting for export at most; more are dropped and counted.
    pub queue_capacity: usize,
    /// A batch is sent once it holds this many spans...
    pub max_batch_size: usize,
    /// ...or this long after its first span arrived.
    pub batch_interval: Duration,
    /// Time limit of one export attempt.
    pub export_timeout: Duration,
    /// Retries of a batch after its first attempt.
    pub max_retries: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// How long [`Exporter::shutdown`] may spend flushing.
    pub shutdown_timeout: Duration,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 8192,
            max_batch_size: 512,
            batch_interval: Duration::from_secs(1),
            export_timeout: Duration::from_secs(10),
            max_retries: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
        }
    }
}

/// Export counters, shared with whoever reports metrics.
#[derive(Debug, Default)]
pub struct ExportCounters {
    exported: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_after_retries: AtomicU64,
    dropped_at_shutdown: AtomicU64,
    rejected: AtomicU64,
    export_errors: AtomicU64,
}

/// A point-in-time copy of [`ExportCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportCountersSnapshot {
    /// Spans the backend accepted.
    pub exported: u64,
    /// Spans dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Spans dropped after their batch failed every retry, or failed permanently.
    pub dropped_after_retries: u64,
    /// Spans still queued or unsent when the shutdown time bound ran out.
    pub dropped_at_shutdown: u64,
    /// Spans the receiver accepted the request for but reported rejecting (partial success).
    pub rejected: u64,
    /// Failed export attempts (each retry counts).
    pub export_errors: u64,
}

impl ExportCounters {
    pub fn snapshot(&self) -> ExportCountersSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ExportCountersSnapshot {
            exported: load(&self.exported),
            dropped_queue_full: load(&self.dropped_queue_full),
            dropped_after_retries: load(&self.dropped_after_retries),
            dropped_at_shutdown: load(&self.dropped_at_shutdown),
            rejected: load(&self.rejected),
            export_errors: load(&self.export_errors),
        }
    }

    fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The producer side of the queue; cheap to clone, never blocks.
#[derive(Clone)]
pub struct ExporterHandle {
    queue: mpsc::Sender<ProcessSpan>,
    counters: Arc<ExportCounters>,
}

impl ExporterHandle {
    /// Queues `span`; returns false (and counts a drop) when the queue is full or closed.
    pub fn try_offer(&self, span: ProcessSpan) -> bool {
        match self.queue.try_send(span) {
            Ok(()) => true,
            Err(_) => {
                ExportCounters::add(&self.counters.dropped_queue_full, 1);
                false
            }
        }
    }
}

impl SpanSink for ExporterHandle {
    fn offer(&self, span: ProcessSpan) {
        self.try_offer(span);
    }
}

/// A running exporter: the queue and the worker task that drains it.
pub struct Exporter {
    handle: ExporterHandle,
    shutdown: watch::Sender<Option<Instant>>,
    worker: JoinHandle<()>,
    shutdown_timeout: Duration,
}

impl Exporter {
    /// Starts the worker in the current tokio runtime.
    pub fn start<E: SpanExporter>(backend: E, config: ExporterConfig) -> Self {
        let (queue, receiver) = mpsc::channel(config.queue_capacity.max(1));
        let counters = Arc::new(ExportCounters::default());
        let (shutdown, shutdown_rx) = watch::channel(None);
        let shutdown_timeout = config.shutdown_timeout;
        let worker = Worker {
            backend,
            queue: receiver,
            config,
            counters: Arc::clone(&counters),
            shutdown: shutdown_rx,
            detached: false,
        };
        let worker = tokio::spawn(worker.run().instrument(info_span!("span_exporter")));
        Self {
            handle: ExporterHandle { queue, counters },
            shutdown,
            worker,
            shutdown_timeout,
        }
    }

    /// A producer handle for the pipeline.
    pub fn handle(&self) -> ExporterHandle {
        self.handle.clone()
    }

    pub fn counters(&self) -> Arc<ExportCounters> {
        Arc::clone(&self.handle.counters)
    }

    /// Stops accepting spans, exports what is queued within the configured shutdown
    /// timeout, counts the rest as dropped, and returns the final counters.
    pub async fn shutdown(self) -> ExportCountersSnapshot {
        let deadline = Instant::now() + self.shutdown_timeout;
        self.shutdown.send_replace(Some(deadline));
        let mut worker = self.worker;
        // The worker honours the deadline itself; the margin only guards against a backend
        // that ignores cancellation.
        let margin = Duration::from_millis(200);
        if tokio::time::timeout_at(deadline + margin, &mut worker)
            .await
            .is_err()
        {
            warn!("span exporter missed its shutdown deadline; aborting it");
            worker.abort();
        }
        self.handle.counters.snapshot()
    }
}

struct Worker<E> {
    backend: E,
    queue: mpsc::Receiver<ProcessSpan>,
    config: ExporterConfig,
    counters: Arc<ExportCounters>,
    shutdown: watch::Receiver<Option<Instant>>,
    /// The [`Exporter`] was dropped without a shutdown: run until every handle is gone.
    detached: bool,
}

impl<E: SpanExporter> Worker<E> {
    async fn run(mut self) {
        let max = self.config.max_batch_size.max(1);
        let mut batch: Vec<ProcessSpan> = Vec::with_capacity(max);
        let mut flush_at: Option<Instant> = None;
        loop {
            if self.deadline().is_some() {
                break;
            }
            let timer = async move {
                match flush_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                changed = self.shutdown.changed(), if !self.detached => {
                    self.detached = changed.is_err();
                    continue;
                }
                received = self.queue.recv() => match received {
                    Some(span) => {
                        if batch.is_empty() {
                            flush_at = Some(Instant::now() + self.config.batch_interval);
                        }
                        batch.push(span);
                        if batch.len() >= max {
                            self.send(std::mem::take(&mut batch)).await;
                            flush_at = None;
                        }
                    }
                    None => break,
                },
                () = timer => {
                    self.send(std::mem::take(&mut batch)).await;
                    flush_at = None;
                }
            }
        }
        // Flush: no more spans are accepted; everything queued goes out before the deadline.
        self.queue.close();
        while let Ok(span) = self.queue.try_recv() {
            batch.push(span);
            if batch.len() >= max {
                self.send(std::mem::take(&mut batch)).await;
            }
        }
        if !batch.is_empty() {
            self.send(batch).await;
        }
        debug!(counters = ?self.counters.snapshot(), "span exporter stopped");
    }

    fn deadline(&self) -> Option<Instant> {
        *self.shutdown.borrow()
    }

    /// Exports one batch, retrying retryable failures with capped exponential backoff. Once
    /// a shutdown is requested, nothing (attempt or backoff) runs past its deadline.
    async fn send(&mut self, batch: Vec<ProcessSpan>) {
        let count = batch.len();
        if count == 0 {
            return;
        }
        if self
            .deadline()
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            ExportCounters::add(&self.counters.dropped_at_shutdown, count);
            return;
        }
        let request = build_request(batch);
        let mut backoff = self.config.initial_backoff;
        let mut attempt = 0u32;
        loop {
            let outcome = tokio::select! {
                outcome = tokio::time::timeout(
                    self.config.export_timeout,
                    self.backend.export(request.clone()),
                ) => outcome.unwrap_or_else(|_| Err(ExportError::Retryable {
                    backend: "exporter",
                    message: format!("no answer within {:?}", self.config.export_timeout),
                })),
                () = deadline_passed(&mut self.shutdown) => {
                    ExportCounters::add(&self.counters.dropped_at_shutdown, count);
                    return;
                }
            };
            let error = match outcome {
                Ok(rejected) => {
                    let rejected = usize::try_from(rejected).unwrap_or(count).min(count);
                    ExportCounters::add(&self.counters.exported, count - rejected);
                    ExportCounters::add(&self.counters.rejected, rejected);
                    return;
                }
                Err(error) => error,
            };
            ExportCounters::add(&self.counters.export_errors, 1);
            let retryable = matches!(error, ExportError::Retryable { .. });
            if !retryable || attempt >= self.config.max_retries {
                warn!(%error, spans = count, attempts = attempt + 1, "dropping span batch");
                ExportCounters::add(&self.counters.dropped_after_retries, count);
                return;
            }
            attempt += 1;
            debug!(%error, attempt, ?backoff, "span export failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = deadline_passed(&mut self.shutdown) => {
                    ExportCounters::add(&self.counters.dropped_at_shutdown, count);
                    return;
                }
            }
            backoff = (backoff * 2).min(self.config.max_backoff);
        }
    }
}

/// Completes when a shutdown has been requested and its deadline has passed; never if the
/// [`Exporter`] is dropped without one.
async fn deadline_passed(shutdown: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *shutdown.borrow_and_update();
        if let Some(deadline) = deadline {
            tokio::time::sleep_until(deadline).await;
            return;
        }
        if shutdown.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The scope spans of one resource.
struct ResourceGroup {
    resource: Arc<ProcessResource>,
    /// Scope name and the number of spans it gets.
    scopes: Vec<(&'static str, usize)>,
}

/// Groups a batch by resource, then by scope, into one export request. Spans keep their
/// relative order within a group.
pub fn build_request(batch: Vec<ProcessSpan>) -> ExportTraceServiceRequest {
    // First pass: assign every span its (group, scope) slot and count, so the second pass
    // moves each span once into a vector of exactly the right size.
    let mut groups: Vec<ResourceGroup> = Vec::new();
    // PID → indices of the groups with that PID (more than one only if a PID was
    // re-registered with other attributes within the batch).
    let mut by_pid: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut slots: Vec<(usize, usize)> = Vec::with_capacity(batch.len());
    for item in &batch {
        let candidates = by_pid.entry(item.resource.pid()).or_default();
        let found = candidates.iter().copied().find(|&index| {
            groups.get(index).is_some_and(|group| {
                Arc::ptr_eq(&group.resource, &item.resource) || *group.resource == *item.resource
            })
        });
        let group_index = found.unwrap_or_else(|| {
            groups.push(ResourceGroup {
                resource: Arc::clone(&item.resource),
                scopes: Vec::new(),
            });
            candidates.push(groups.len() - 1);
            groups.len() - 1
        });
        let Some(group) = groups.get_mut(group_index) else {
            continue;
        };
        let scope_index = match group
            .scopes
            .iter()
            .position(|(name, _)| *name == item.scope)
        {
            Some(index) => index,
            None => {
                group.scopes.push((item.scope, 0));
                group.scopes.len() - 1
            }
        };
        if let Some((_, count)) = group.scopes.get_mut(scope_index) {
            *count += 1;
        }
        slots.push((group_index, scope_index));
    }
    let mut resource_spans: Vec<ResourceSpans> = groups
        .iter()
        .map(|group| ResourceSpans {
            resource: Some(group.resource.proto().clone()),
            scope_spans: group
                .scopes
                .iter()
                .map(|&(name, count)| ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: name.to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..InstrumentationScope::default()
                    }),
                    spans: Vec::with_capacity(count),
                    schema_url: String::new(),
                })
                .collect(),
            schema_url: String::new(),
        })
        .collect();
    for (item, (group, scope)) in batch.into_iter().zip(slots) {
        if let Some(scope_spans) = resource_spans
            .get_mut(group)
            .and_then(|rs| rs.scope_spans.get_mut(scope))
        {
            scope_spans.spans.push(item.span);
        }
    }
    ExportTraceServiceRequest { resource_spans }
}

/// Where `odiglet trace` sends spans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportTarget {
    /// OTLP/gRPC to this endpoint (`--otlp-endpoint`).
    OtlpGrpc { endpoint: String },
    /// One OTLP/JSON line per batch on standard output (`--stdout json`).
    StdoutJson,
}

impl Exporter {
    /// Starts an exporter for `target` in the current tokio runtime.
    pub fn for_target(
        target: &ExportTarget,
        config: ExporterConfig,
    ) -> Result<Self, OtlpGrpcError> {
        Ok(match target {
            ExportTarget::OtlpGrpc { endpoint } => {
                Self::start(OtlpGrpcExporter::new(endpoint)?, config)
            }
            ExportTarget::StdoutJson => Self::start(StdoutJsonExporter::stdout(), config),
        })
    }
}

#[cfg(test)]
mod tests;
