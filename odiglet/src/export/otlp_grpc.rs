//! OTLP/gRPC backend: `TraceService/Export` to the node collector (`--otlp-endpoint`,
//! `http://localhost:4317` by default), over one lazily connected, reconnecting channel.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, trace_service_client::TraceServiceClient,
};
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};

use super::{ExportError, SpanExporter};

/// Where odiglet sends spans unless told otherwise: the collector on the same node.
pub const DEFAULT_OTLP_ENDPOINT: &str = "http://localhost:4317";

const BACKEND: &str = "otlp/grpc";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum OtlpGrpcError {
    #[error("invalid OTLP endpoint `{endpoint}`")]
    InvalidEndpoint {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// Sends batches to an OTLP/gRPC receiver.
#[derive(Clone, Debug)]
pub struct OtlpGrpcExporter {
    client: TraceServiceClient<Channel>,
}

impl OtlpGrpcExporter {
    /// A client for `endpoint` (`http://host:port`). Connects on first use and reconnects
    /// after failures, so a collector that starts later is picked up. Must be called inside
    /// a tokio runtime.
    pub fn new(endpoint: &str) -> Result<Self, OtlpGrpcError> {
        let channel = Endpoint::from_shared(endpoint.to_owned())
            .map_err(|source| OtlpGrpcError::InvalidEndpoint {
                endpoint: endpoint.to_owned(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect_lazy();
        Ok(Self {
            client: TraceServiceClient::new(channel),
        })
    }
}

impl SpanExporter for OtlpGrpcExporter {
    async fn export(&mut self, request: ExportTraceServiceRequest) -> Result<u64, ExportError> {
        match self.client.export(request).await {
            Ok(response) => {
                let rejected = response
                    .into_inner()
                    .partial_success
                    .map_or(0, |partial| partial.rejected_spans);
                Ok(u64::try_from(rejected).unwrap_or(0))
            }
            Err(status) => Err(classify(&status)),
        }
    }
}

/// Whether a gRPC status is worth retrying, per the OTLP specification's list.
pub fn is_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    )
}

fn classify(status: &tonic::Status) -> ExportError {
    let message = format!("{:?}: {}", status.code(), status.message());
    if is_retryable(status.code()) {
        ExportError::Retryable {
            backend: BACKEND,
            message,
        }
    } else {
        ExportError::Permanent {
            backend: BACKEND,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_codes_follow_the_otlp_spec() {
        for code in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
            Code::Cancelled,
            Code::Aborted,
        ] {
            assert!(is_retryable(code), "{code:?}");
            assert!(matches!(
                classify(&tonic::Status::new(code, "x")),
                ExportError::Retryable { .. }
            ));
        }
        for code in [
            Code::InvalidArgument,
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::Unimplemented,
        ] {
            assert!(!is_retryable(code), "{code:?}");
            assert!(matches!(
                classify(&tonic::Status::new(code, "x")),
                ExportError::Permanent { .. }
            ));
        }
    }

    #[tokio::test]
    async fn bad_endpoints_are_refused() {
        assert!(matches!(
            OtlpGrpcExporter::new("not a uri"),
            Err(OtlpGrpcError::InvalidEndpoint { .. })
        ));
        assert!(OtlpGrpcExporter::new(DEFAULT_OTLP_ENDPOINT).is_ok());
    }
}
