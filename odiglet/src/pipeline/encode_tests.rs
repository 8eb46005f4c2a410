//! The encoder against the prost model: every span it writes must decode (prost) to exactly
//! the `Span` that [`to_otlp_span`] builds from the same record, and take as many bytes as
//! prost's own encoding of it.

use std::mem::size_of;

use odiglet_common::{
    from_bytes,
    go::{
        DB_SYSTEM_MYSQL, DB_SYSTEM_OTHER, DB_SYSTEM_POSTGRESQL, GO_SPAN_DB, GO_SPAN_GRPC_CLIENT,
        GO_SPAN_GRPC_SERVER, GO_SPAN_HTTP_CLIENT, GO_SPAN_HTTP_SERVER, GRPC_METHOD_LEN,
        GRPC_TARGET_LEN, GrpcClientSpan, SPAN_FLAG_DB_EXEC, SPAN_FLAG_ERROR, SPAN_FLAG_HAS_PARENT,
        SPAN_FLAG_PARENT_REMOTE,
    },
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use super::*;
use crate::{
    export::{build_request, model_request},
    pipeline::{
        RecordConverter, ResourceAttributes, ResourceRegistry, record_bytes,
        resource::tests::full as full_resource,
        span::{
            record_header, record_pid, record_scope,
            tests::{client, db, fill, grpc_server, header, server},
        },
        to_otlp_span,
    },
};

fn clock() -> BootClock {
    BootClock::fixed(1_700_000_000_000_000_000, 1_000)
}

fn encoded(record: &GoSpanRecord) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_span(record, &clock(), &mut buf);
    buf
}

#[track_caller]
fn assert_same_as_model(record: &GoSpanRecord) {
    let bytes = encoded(record);
    let model = to_otlp_span(record, &clock());
    let decoded = Span::decode(bytes.as_slice())
        .unwrap_or_else(|error| panic!("invalid protobuf for {record:?}: {error}"));
    assert_eq!(decoded, model, "{record:?}");
    assert_eq!(bytes.len(), model.encoded_len(), "{record:?}");
}

fn grpc_client(method: &[u8], target: &[u8], status: u32, flags: u32) -> GrpcClientSpan {
    let (method, method_len) = fill::<GRPC_METHOD_LEN>(method);
    let (target, target_len) = fill::<GRPC_TARGET_LEN>(target);
    GrpcClientSpan {
        header: header(GO_SPAN_GRPC_CLIENT, flags),
        status_code: status,
        method_len,
        target_len,
        method,
        target,
    }
}

/// Every kind of span, with and without parent, errors, odd addresses and bad text.
fn cases() -> Vec<GoSpanRecord> {
    let mut records = Vec::new();
    let parents = [
        0,
        SPAN_FLAG_HAS_PARENT,
        SPAN_FLAG_HAS_PARENT | SPAN_FLAG_PARENT_REMOTE,
    ];
    for flags in parents {
        for (route, status) in [("/items/{id}", 200), ("", 0), ("/x", 503), ("", 404)] {
            let mut record = server("GET", "/items/7", route, "shop:8080", "10.0.0.1:5", status);
            record.header.flags = flags;
            records.push(GoSpanRecord::HttpServer(record));
        }
        let mut record = server("POST", "/", "", "[::1]:80", "[fe80::1]:9", 200);
        record.header.flags = flags;
        records.push(GoSpanRecord::HttpServer(record));
        for (scheme, host, status, error) in [
            ("http", "api:8080", 200, 0),
            ("https", "api", 404, 0),
            ("", "api", 0, SPAN_FLAG_ERROR),
            ("ftp", "::1", 500, 0),
        ] {
            let mut record = client("GET", scheme, host, "/v1/x?q=1", status);
            record.header.flags = flags | error;
            records.push(GoSpanRecord::HttpClient(record));
        }
        let mut v4_in_v6 = [0u8; 16];
        v4_in_v6[10..].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 9]);
        let v6 = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        for (ip, status) in [
            (&[127, 0, 0, 1][..], 0),
            (&v4_in_v6[..], 13),
            (&v6[..], 5),
            (&[][..], 99),
        ] {
            let mut record = grpc_server("/pkg.Svc/Call", status, ip, 4242);
            record.header.flags = flags;
            records.push(GoSpanRecord::GrpcServer(record));
        }
        for (target, status, error) in [
            (&b"dns:///greeter:50051"[..], 0, 0),
            (b"127.0.0.1:7", 5, SPAN_FLAG_ERROR),
            (b"passthrough:///[::1]:9", 0, SPAN_FLAG_ERROR),
            (b"unix", 0, 0),
        ] {
            records.push(GoSpanRecord::GrpcClient(grpc_client(
                b"/pkg.Greeter/SayHello",
                target,
                status,
                flags | error,
            )));
        }
        for (query, system, error) in [
            (
                "SELECT name FROM users WHERE id = 1",
                DB_SYSTEM_POSTGRESQL,
                0,
            ),
            (
                "insert into t values ('x')",
                DB_SYSTEM_MYSQL,
                SPAN_FLAG_ERROR,
            ),
            (
                "UPDATE t SET a = 1",
                DB_SYSTEM_OTHER,
                SPAN_FLAG_ERROR | SPAN_FLAG_DB_EXEC,
            ),
            ("", 77, 0),
        ] {
            records.push(GoSpanRecord::Db(db(query, system, flags | error)));
        }
    }
    // Invalid UTF-8, NULs and lengths beyond the buffers: lossy text, still valid protobuf.
    let mut record = server("G\u{e9}T", "/a\0b", "/r", "h\u{fc}st:1", "c:x", 200);
    record.method[1] = 0xff;
    record.path_len = u16::MAX;
    record.route_len = u16::MAX;
    records.push(GoSpanRecord::HttpServer(record));
    let mut record = client("GET", "http", "host", "/p", 200);
    record.host[0] = 0xc3;
    record.path_len = u16::MAX;
    records.push(GoSpanRecord::HttpClient(record));
    records.push(GoSpanRecord::GrpcClient(grpc_client(
        b"\xff/\xfe",
        b"dns://\xc0",
        2,
        0,
    )));
    let mut record = db("SELECT \u{2603} FROM t", DB_SYSTEM_POSTGRESQL, 0);
    record.query[7] = 0x80;
    record.query_len = u16::MAX;
    records.push(GoSpanRecord::Db(record));
    records
}

#[test]
fn every_span_kind_decodes_to_the_model_span() {
    let cases = cases();
    for kind in [
        GO_SPAN_HTTP_SERVER,
        GO_SPAN_HTTP_CLIENT,
        GO_SPAN_GRPC_SERVER,
        GO_SPAN_GRPC_CLIENT,
        GO_SPAN_DB,
    ] {
        assert!(
            cases
                .iter()
                .any(|record| record_header(record).kind == kind),
            "kind {kind} is covered"
        );
    }
    for record in &cases {
        assert_same_as_model(record);
    }
    // The cases exercise what they claim: errors, parents and replaced bytes.
    let models: Vec<Span> = cases.iter().map(|r| to_otlp_span(r, &clock())).collect();
    assert!(models.iter().any(|span| span.status.is_some()));
    assert!(models.iter().any(|span| span.parent_span_id.is_empty()));
    assert!(models.iter().any(|span| span.flags & 0x200 != 0));
    assert!(models.iter().any(|span| span.name.contains('\u{fffd}')));
}

/// xorshift64: a reproducible stream of bytes for the property test.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Mostly the characters addresses, paths and queries are made of, some NULs and bytes
    /// that are not UTF-8.
    fn byte(&mut self) -> u8 {
        const TEXT: &[u8] = b"aZ09:/.[]?=' _-%{}\\x";
        match self.below(20) {
            0 => 0,
            1 => 0x80 | self.below(0x80) as u8,
            _ => TEXT[self.below(TEXT.len() as u64) as usize],
        }
    }
}

/// A record of `kind` made of random bytes, with lengths and codes in interesting ranges.
fn random_record(random: &mut Random, kind: u32) -> GoSpanRecord {
    fn random_span<T: aya::Pod>(random: &mut Random) -> T {
        let bytes: Vec<u8> = (0..size_of::<T>()).map(|_| random.byte()).collect();
        from_bytes(&bytes).expect("as many bytes as the span")
    }
    let mut record = match kind {
        GO_SPAN_HTTP_SERVER => GoSpanRecord::HttpServer(random_span(random)),
        GO_SPAN_HTTP_CLIENT => GoSpanRecord::HttpClient(random_span(random)),
        GO_SPAN_GRPC_SERVER => GoSpanRecord::GrpcServer(random_span(random)),
        GO_SPAN_GRPC_CLIENT => GoSpanRecord::GrpcClient(random_span(random)),
        _ => GoSpanRecord::Db(random_span(random)),
    };
    match &mut record {
        GoSpanRecord::HttpServer(span) => span.header.kind = kind,
        GoSpanRecord::HttpClient(span) => span.header.kind = kind,
        GoSpanRecord::GrpcServer(span) => span.header.kind = kind,
        GoSpanRecord::GrpcClient(span) => span.header.kind = kind,
        GoSpanRecord::Db(span) => span.header.kind = GO_SPAN_DB,
    }
    let status = u32::try_from(random.below(600)).unwrap_or(0);
    let flags = u32::try_from(random.below(32)).unwrap_or(0);
    let mut len = |max: usize| random.below(max as u64 + 8) as u16;
    match &mut record {
        GoSpanRecord::HttpServer(span) => {
            span.header.flags = flags;
            span.status_code = status;
            span.method_len = len(span.method.len());
            span.path_len = len(span.path.len());
            span.route_len = len(span.route.len());
            span.host_len = len(span.host.len());
            span.remote_addr_len = len(span.remote_addr.len());
            span.proto_len = len(span.proto.len());
        }
        GoSpanRecord::HttpClient(span) => {
            span.header.flags = flags;
            span.status_code = status;
            span.method_len = len(span.method.len());
            span.scheme_len = len(span.scheme.len());
            span.host_len = len(span.host.len());
            span.path_len = len(span.path.len());
            span.proto_len = len(span.proto.len());
        }
        GoSpanRecord::GrpcServer(span) => {
            span.header.flags = flags;
            span.status_code = status % 20;
            span.method_len = len(span.method.len());
            span.peer_ip_len = [0, 4, 16, 7][(status % 4) as usize];
        }
        GoSpanRecord::GrpcClient(span) => {
            span.header.flags = flags;
            span.status_code = status % 20;
            span.method_len = len(span.method.len());
            span.target_len = len(span.target.len());
        }
        GoSpanRecord::Db(span) => {
            span.header.flags = flags;
            span.db_system = status % 5;
            span.query_len = len(span.query.len());
        }
    }
    record
}

#[test]
fn random_records_decode_to_the_model_span() {
    let mut random = Random(0x9e37_79b9_7f4a_7c15);
    for i in 0..2_000u32 {
        let kind = [
            GO_SPAN_HTTP_SERVER,
            GO_SPAN_HTTP_CLIENT,
            GO_SPAN_GRPC_SERVER,
            GO_SPAN_GRPC_CLIENT,
            GO_SPAN_DB,
        ][(i % 5) as usize];
        assert_same_as_model(&random_record(&mut random, kind));
    }
}

fn registry() -> ResourceRegistry {
    let resources = ResourceRegistry::new();
    resources.register(4242, full_resource());
    resources.register(
        7,
        ResourceAttributes {
            service_name: Some("cart".into()),
            ..ResourceAttributes::default()
        },
    );
    resources
}

#[test]
fn encoded_requests_decode_to_the_model_request() {
    let resources = registry();
    // Three processes (one unregistered), every scope, interleaved.
    let records: Vec<GoSpanRecord> = cases()
        .into_iter()
        .enumerate()
        .map(|(i, mut record)| {
            let header = match &mut record {
                GoSpanRecord::HttpServer(span) => &mut span.header,
                GoSpanRecord::HttpClient(span) => &mut span.header,
                GoSpanRecord::Db(span) => &mut span.header,
                GoSpanRecord::GrpcServer(span) => &mut span.header,
                GoSpanRecord::GrpcClient(span) => &mut span.header,
            };
            header.pid = [4242, 7, 99][i % 3];
            record
        })
        .collect();
    let mut converter = RecordConverter::new();
    let batch = records
        .iter()
        .map(|record| {
            converter
                .convert(&record_bytes(record), &clock(), &resources)
                .unwrap()
        })
        .collect();
    let request = build_request(batch);
    let want = model_request(records.iter().map(|record| {
        (
            resources.resolve(record_pid(record)),
            record_scope(record),
            to_otlp_span(record, &clock()),
        )
    }));
    assert_eq!(request.spans(), records.len());
    assert_eq!(request.decode().unwrap(), want);
    assert_eq!(request.bytes().len(), want.encoded_len());
    assert_eq!(want.resource_spans.len(), 3, "one group per process");
    assert!(
        want.resource_spans
            .iter()
            .all(|rs| rs.scope_spans.len() == 3),
        "every scope in every group"
    );
}

#[test]
fn converted_spans_share_chunks_and_outlive_them() {
    let resources = ResourceRegistry::new();
    let mut converter = RecordConverter::new();
    let record = GoSpanRecord::HttpServer(server("GET", "/", "/", "h:1", "c:2", 200));
    let bytes = record_bytes(&record);
    let spans: Vec<_> = (0..200)
        .map(|_| converter.convert(&bytes, &clock(), &resources).unwrap())
        .collect();
    let model = to_otlp_span(&record, &clock());
    for span in &spans {
        assert_eq!(span.decode_span().unwrap(), model);
    }
    // Neighbours are adjacent slices of one allocation.
    let adjacent = spans
        .windows(2)
        .filter(|pair| pair[0].span.as_ptr_range().end == pair[1].span.as_ptr())
        .count();
    assert!(adjacent > 150, "{adjacent} of 199 neighbours share a chunk");
    // The spans own their bytes: the converter can go.
    drop(converter);
    assert_eq!(spans[199].decode_span().unwrap(), model);
}
