//! OTLP/gRPC backend: `TraceService/Export` to the node collector (`--otlp-endpoint`,
//! `http://localhost:4317` by default), over one lazily connected, reconnecting channel.
//!
//! Requests are already protobuf-encoded ([`EncodedRequest`]): a pass-through codec writes
//! their bytes as the gRPC message, and prost decodes the response.

use std::time::Duration;

use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::{
    Code, GrpcMethod, Status,
    client::Grpc,
    codec::{BufferSettings, Codec, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::{Channel, Endpoint},
};
use tonic_prost::{ProstCodec, ProstDecoder};

use super::{EncodedRequest, ExportError, SpanExporter};

/// Where odiglet sends spans unless told otherwise: the collector on the same node.
pub const DEFAULT_OTLP_ENDPOINT: &str = "http://localhost:4317";

const BACKEND: &str = "otlp/grpc";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const SERVICE: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

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
    client: Grpc<Channel>,
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
            client: Grpc::new(channel),
        })
    }
}

impl SpanExporter for OtlpGrpcExporter {
    async fn export(&mut self, request: EncodedRequest) -> Result<u64, ExportError> {
        match self.call(request.bytes().clone()).await {
            Ok(response) => {
                let rejected = response
                    .partial_success
                    .map_or(0, |partial| partial.rejected_spans);
                Ok(u64::try_from(rejected).unwrap_or(0))
            }
            Err(status) => Err(classify(&status)),
        }
    }
}

impl OtlpGrpcExporter {
    /// `TraceService/Export` with an encoded request, as the generated client makes it.
    async fn call(&mut self, request: Bytes) -> Result<ExportTraceServiceResponse, Status> {
        self.client
            .ready()
            .await
            .map_err(|error| Status::unknown(format!("service was not ready: {error}")))?;
        let mut request = tonic::Request::new(request);
        request
            .extensions_mut()
            .insert(GrpcMethod::new(SERVICE, "Export"));
        let path = PathAndQuery::from_static(EXPORT_PATH);
        let response = self.client.unary(request, path, EncodedCodec).await?;
        Ok(response.into_inner())
    }
}

/// Sends an encoded `ExportTraceServiceRequest` as is; decodes the response with prost.
#[derive(Clone, Copy, Debug, Default)]
pub struct EncodedCodec;

impl Codec for EncodedCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = BytesEncoder;
    type Decoder = ProstDecoder<ExportTraceServiceResponse>;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<ExportTraceServiceResponse, ExportTraceServiceResponse>::raw_decoder(
            BufferSettings::default(),
        )
    }
}

/// Writes a message's bytes unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
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
