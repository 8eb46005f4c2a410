//! The per-record work of the reader: bytes → decoded record → [`ProcessSpan`] with its
//! span already protobuf-encoded.

use bytes::BytesMut;
use odiglet_common::{DecodeError, GoSpanRecord, decode_go_span, pack_go_span};

use super::{
    ProcessSpan,
    encode::encode_span,
    resource::ResourceRegistry,
    span::{record_pid, record_scope},
};
use crate::time::BootClock;

/// Spans are encoded into chunks of this size and split off it, so a span shares one
/// allocation with its neighbours instead of owning one. Small enough that a chunk kept
/// alive by one queued span holds little (a span is about 400 bytes).
const CHUNK: usize = 16 * 1024;
/// A new chunk is started when less than this is left (a span rarely needs more; one that
/// does grows the buffer).
const SPAN_RESERVE: usize = 2 * 1024;

/// Turns ring-buffer records into [`ProcessSpan`]s; keep one per reader.
#[derive(Debug, Default)]
pub struct RecordConverter {
    buffer: BytesMut,
}

impl RecordConverter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes one record and encodes its span, with its process's resource.
    pub fn convert(
        &mut self,
        bytes: &[u8],
        clock: &BootClock,
        resources: &ResourceRegistry,
    ) -> Result<ProcessSpan, DecodeError> {
        let record = decode_go_span(bytes)?;
        if self.buffer.capacity() < SPAN_RESERVE {
            self.buffer.reserve(CHUNK);
        }
        encode_span(&record, clock, &mut self.buffer);
        Ok(ProcessSpan {
            resource: resources.resolve(record_pid(&record)),
            scope: record_scope(&record),
            span: self.buffer.split().freeze(),
        })
    }
}

/// [`RecordConverter::convert`] with a buffer of its own, for one-off records.
pub fn convert_record(
    bytes: &[u8],
    clock: &BootClock,
    resources: &ResourceRegistry,
) -> Result<ProcessSpan, DecodeError> {
    RecordConverter::new().convert(bytes, clock, resources)
}

/// The bytes the probes submit for `record` ([`pack_go_span`]), for tests and benchmarks that
/// synthesize ring-buffer records.
pub fn record_bytes(record: &GoSpanRecord) -> Vec<u8> {
    pack_go_span(record).as_slice().to_vec()
}

#[cfg(test)]
mod tests {
    use odiglet_common::go::{HttpClientSpan, HttpServerSpan, SpanHeader};

    use super::*;
    use crate::pipeline::span::tests::server;

    #[test]
    fn encoded_records_decode_back_and_have_the_kernel_size() {
        let record = GoSpanRecord::HttpServer(server("GET", "/", "/", "h", "a:1", 200));
        let bytes = record_bytes(&record);
        // The fixed fields, then "GET", "/", "h", "a:1", "HTTP/1.1" and "/" back to back.
        let strings: usize = match record {
            GoSpanRecord::HttpServer(span) => [
                span.method_len,
                span.path_len,
                span.host_len,
                span.remote_addr_len,
                span.proto_len,
                span.route_len,
            ]
            .into_iter()
            .map(usize::from)
            .sum(),
            _ => unreachable!(),
        };
        assert_eq!(
            bytes.len(),
            odiglet_common::go::HTTP_SERVER_STRINGS_OFFSET + strings
        );
        assert!(bytes.len() < size_of::<HttpServerSpan>() / 2);
        assert_eq!(decode_go_span(&bytes), Ok(record));
        let GoSpanRecord::HttpServer(server) = record else {
            unreachable!()
        };
        let client = HttpClientSpan {
            header: SpanHeader {
                kind: odiglet_common::go::GO_SPAN_HTTP_CLIENT,
                ..server.header
            },
            status_code: 500,
            method_len: 3,
            scheme_len: 4,
            host_len: 1,
            path_len: 1,
            proto_len: 0,
            reserved: 0,
            method: server.method,
            scheme: crate::pipeline::span::tests::fill(b"xxxx").0,
            host: server.host,
            path: server.path,
            proto: [0; 16],
        };
        let bytes = record_bytes(&GoSpanRecord::HttpClient(client));
        assert_eq!(
            bytes.len(),
            odiglet_common::go::HTTP_CLIENT_STRINGS_OFFSET + 3 + 4 + 1 + 1
        );
        assert_eq!(decode_go_span(&bytes), Ok(GoSpanRecord::HttpClient(client)));
    }

    #[test]
    fn convert_record_resolves_the_resource_and_refuses_garbage() {
        let resources = ResourceRegistry::new();
        let record = GoSpanRecord::HttpServer(server("GET", "/", "", "h", "a:1", 200));
        let span =
            convert_record(&record_bytes(&record), &BootClock::fixed(0, 0), &resources).unwrap();
        assert_eq!(span.resource.pid(), 4242);
        assert_eq!(span.scope, crate::pipeline::SCOPE_NET_HTTP);
        assert_eq!(span.decode_span().unwrap().name, "GET");
        assert!(convert_record(&[1, 0, 0, 0, 5], &BootClock::fixed(0, 0), &resources).is_err());
    }
}
