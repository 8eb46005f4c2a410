//! The span pipeline: Go probe records from a ring buffer → OTLP spans with their process's
//! resource → a [`SpanSink`] (the exporter).
//!
//! ```text
//! ring buffer ─bytes─▶ reader ─▶ decode (record → ProcessSpan) ─▶ SpanSink::offer
//!                                  ├ span: semantic-convention attributes, wall-clock times,
//!                                  │       encoded straight to OTLP protobuf
//!                                  └ resource: per-PID attributes the attach manager registers
//! ```
//! [`span::build_span`] is the one semantic-convention mapping; it feeds both the protobuf
//! encoder the exporter uses ([`encode`]) and the prost model ([`to_otlp_span`]).
//! The pipeline knows nothing of how spans are exported: it hands them to a [`SpanSink`],
//! which must never block.

use std::sync::Arc;

use bytes::Bytes;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

pub mod decode;
pub mod encode;
pub mod reader;
pub mod resource;
pub mod span;
pub mod sql;

pub use decode::{RecordConverter, convert_record, record_bytes};
pub use reader::{ReaderCounters, ReaderCountersSnapshot, SpanReader};
pub use resource::{
    K8sAttributes, ProcessResource, ResourceAttributes, ResourceRegistry, Workload, WorkloadKind,
};
pub use span::{
    SCOPE_DATABASE_SQL, SCOPE_GRPC, SCOPE_NET_HTTP, SpanFields, build_span, to_otlp_span,
};

/// One finished span with the resource of the process that made it.
#[derive(Clone, Debug)]
pub struct ProcessSpan {
    pub resource: Arc<ProcessResource>,
    /// Instrumentation scope name (`SCOPE_*`).
    pub scope: &'static str,
    /// The protobuf encoding of the OTLP `Span` message (without a field key or length).
    pub span: Bytes,
}

impl ProcessSpan {
    /// The span in the prost model (tests and debugging; export ships the bytes).
    pub fn decode_span(&self) -> Result<Span, prost::DecodeError> {
        Span::decode(self.span.clone())
    }
}

/// Where the pipeline delivers spans. `offer` must not block: a full consumer drops (and
/// counts) instead.
pub trait SpanSink: Send + Sync + 'static {
    fn offer(&self, span: ProcessSpan);
}
