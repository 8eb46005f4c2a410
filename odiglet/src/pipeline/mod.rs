//! The span pipeline: Go probe records from a ring buffer → OTLP spans with their process's
//! resource → a [`SpanSink`] (the exporter).
//!
//! ```text
//! ring buffer ─bytes─▶ reader ─▶ decode (record → ProcessSpan) ─▶ SpanSink::offer
//!                                  ├ span: semantic-convention attributes, wall-clock times
//!                                  └ resource: per-PID attributes the attach manager registers
//! ```
//! The pipeline knows nothing of how spans are exported: it hands them to a [`SpanSink`],
//! which must never block.

use std::sync::Arc;

use opentelemetry_proto::tonic::trace::v1::Span;

pub mod decode;
pub mod reader;
pub mod resource;
pub mod span;
pub mod sql;

pub use decode::{convert_record, record_bytes};
pub use reader::{ReaderCounters, ReaderCountersSnapshot, SpanReader};
pub use resource::{
    K8sAttributes, ProcessResource, ResourceAttributes, ResourceRegistry, Workload, WorkloadKind,
};
pub use span::{SCOPE_DATABASE_SQL, SCOPE_GRPC, SCOPE_NET_HTTP, to_otlp_span};

/// One finished span with the resource of the process that made it.
#[derive(Clone, Debug)]
pub struct ProcessSpan {
    pub resource: Arc<ProcessResource>,
    /// Instrumentation scope name (`SCOPE_*`).
    pub scope: &'static str,
    pub span: Span,
}

/// Where the pipeline delivers spans. `offer` must not block: a full consumer drops (and
/// counts) instead.
pub trait SpanSink: Send + Sync + 'static {
    fn offer(&self, span: ProcessSpan);
}
