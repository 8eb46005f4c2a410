//! Span export: a bounded queue between the pipeline and one backend (OTLP/gRPC or
//! stdout JSON), batching by size and interval, grouping by resource and scope, retrying
//! with capped exponential backoff, counting every span it drops, and flushing on shutdown
//! within a time bound.
//!
//! ```text
//! SpanSink::offer ─try_send─▶ [bounded queue] ─▶ worker: batch ─▶ group ─▶ backend.export
//!        full: dropped_queue_full++                         retry / dropped_after_retries++
//! ```
//! Export knows nothing of eBPF: it consumes [`ProcessSpan`]s, whose spans arrive
//! protobuf-encoded. Grouping copies them behind pre-encoded resources and scopes into one
//! encoded `ExportTraceServiceRequest` ([`EncodedRequest`]), which the OTLP/gRPC backend ships
//! as is and the JSON backend decodes with prost.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::InstrumentationScope,
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::Instant,
};
use tracing::{Instrument, debug, info_span, warn};

use crate::pipeline::{
    ProcessResource, ProcessSpan, SpanSink,
    encode::{field_len, put_header},
};

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
        request: EncodedRequest,
    ) -> impl Future<Output = Result<u64, ExportError>> + Send;
}

/// One protobuf-encoded `ExportTraceServiceRequest`; cheap to clone (retries resend it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedRequest {
    bytes: Bytes,
    spans: usize,
}

impl EncodedRequest {
    /// The encoded message.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// How many spans it holds.
    pub fn spans(&self) -> usize {
        self.spans
    }

    /// The request in the prost model.
    pub fn decode(&self) -> Result<ExportTraceServiceRequest, prost::DecodeError> {
        ExportTraceServiceRequest::decode(self.bytes.clone())
    }
}

impl From<&ExportTraceServiceRequest> for EncodedRequest {
    fn from(request: &ExportTraceServiceRequest) -> Self {
        Self {
            bytes: request.encode_to_vec().into(),
            spans: request
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum(),
        }
    }
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

// Field numbers of `ExportTraceServiceRequest`, `ResourceSpans` and `ScopeSpans`
// (opentelemetry/proto/collector/trace/v1 and trace/v1).
const REQUEST_RESOURCE_SPANS: u32 = 1;
const RESOURCE_SPANS_RESOURCE: u32 = 1;
const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
const SCOPE_SPANS_SCOPE: u32 = 1;
const SCOPE_SPANS_SPANS: u32 = 2;

/// The spans of one resource, by scope.
struct ResourceGroup {
    resource: Arc<ProcessResource>,
    scopes: Vec<ScopeGroup>,
}

/// The spans of one scope within a resource.
struct ScopeGroup {
    /// The encoded `InstrumentationScope`.
    scope: Vec<u8>,
    name: &'static str,
    /// Indices into the batch, in arrival order.
    spans: Vec<usize>,
    /// Encoded length of the `ScopeSpans` message.
    len: usize,
}

impl ResourceGroup {
    /// Encoded length of the `ResourceSpans` message.
    fn len(&self) -> usize {
        field_len(RESOURCE_SPANS_RESOURCE, self.resource.encoded().len())
            + self
                .scopes
                .iter()
                .map(|scope| field_len(RESOURCE_SPANS_SCOPE_SPANS, scope.len))
                .sum::<usize>()
    }
}

/// The instrumentation scope `name` at odiglet's version.
fn instrumentation_scope(name: &str) -> InstrumentationScope {
    InstrumentationScope {
        name: name.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..InstrumentationScope::default()
    }
}

fn scope_group(name: &'static str) -> ScopeGroup {
    let scope = instrumentation_scope(name).encode_to_vec();
    ScopeGroup {
        len: field_len(SCOPE_SPANS_SCOPE, scope.len()),
        scope,
        name,
        spans: Vec::new(),
    }
}

/// Groups a batch by resource, then by scope, into one encoded export request. Spans keep
/// their relative order within a group; their bytes are copied once, into a buffer of
/// exactly the request's size.
pub fn build_request(batch: Vec<ProcessSpan>) -> EncodedRequest {
    let mut groups: Vec<ResourceGroup> = Vec::new();
    // PID → indices of the groups with that PID (more than one only if a PID was
    // re-registered with other attributes within the batch).
    let mut by_pid: HashMap<u32, Vec<usize>> = HashMap::new();
    for (index, item) in batch.iter().enumerate() {
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
        let scope_index = match group.scopes.iter().position(|s| s.name == item.scope) {
            Some(index) => index,
            None => {
                group.scopes.push(scope_group(item.scope));
                group.scopes.len() - 1
            }
        };
        if let Some(scope) = group.scopes.get_mut(scope_index) {
            scope.spans.push(index);
            scope.len += field_len(SCOPE_SPANS_SPANS, item.span.len());
        }
    }

    let total = groups
        .iter()
        .map(|group| field_len(REQUEST_RESOURCE_SPANS, group.len()))
        .sum();
    let mut out = BytesMut::with_capacity(total);
    for group in &groups {
        put_header(REQUEST_RESOURCE_SPANS, group.len(), &mut out);
        let resource = group.resource.encoded();
        put_header(RESOURCE_SPANS_RESOURCE, resource.len(), &mut out);
        out.put_slice(resource);
        for scope in &group.scopes {
            put_header(RESOURCE_SPANS_SCOPE_SPANS, scope.len, &mut out);
            put_header(SCOPE_SPANS_SCOPE, scope.scope.len(), &mut out);
            out.put_slice(&scope.scope);
            for span in scope.spans.iter().filter_map(|&index| batch.get(index)) {
                put_header(SCOPE_SPANS_SPANS, span.span.len(), &mut out);
                out.put_slice(&span.span);
            }
        }
    }
    debug_assert_eq!(out.len(), total);
    EncodedRequest {
        bytes: out.freeze(),
        spans: batch.len(),
    }
}

/// [`build_request`] in the prost model, from model spans (resource, scope, span): the
/// reference the encoded path is tested and benchmarked against. Same grouping: by equal
/// resource in order of first appearance, then by scope.
pub fn model_request(
    batch: impl IntoIterator<Item = (Arc<ProcessResource>, &'static str, Span)>,
) -> ExportTraceServiceRequest {
    let mut groups: Vec<(Arc<ProcessResource>, ResourceSpans)> = Vec::new();
    for (resource, scope, span) in batch {
        let index = groups
            .iter()
            .position(|(seen, _)| Arc::ptr_eq(seen, &resource) || **seen == *resource)
            .unwrap_or_else(|| {
                let spans = ResourceSpans {
                    resource: Some(resource.proto().clone()),
                    ..ResourceSpans::default()
                };
                groups.push((resource, spans));
                groups.len() - 1
            });
        let Some((_, resource_spans)) = groups.get_mut(index) else {
            continue;
        };
        let scopes = &mut resource_spans.scope_spans;
        let position = scopes
            .iter()
            .position(|s| s.scope.as_ref().is_some_and(|s| s.name == scope));
        let index = position.unwrap_or_else(|| {
            scopes.push(ScopeSpans {
                scope: Some(instrumentation_scope(scope)),
                ..ScopeSpans::default()
            });
            scopes.len() - 1
        });
        if let Some(scope_spans) = scopes.get_mut(index) {
            scope_spans.spans.push(span);
        }
    }
    ExportTraceServiceRequest {
        resource_spans: groups.into_iter().map(|(_, spans)| spans).collect(),
    }
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
