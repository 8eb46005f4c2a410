//! Pure conversion of one decoded Go span record into an OTLP span with OpenTelemetry
//! semantic-convention attributes (HTTP, database, RPC).
//!
//! Every string field is cut to its buffer before reading (a corrupt length never reads past
//! the record) and decoded as lossy UTF-8: the probes copy raw user memory.

use std::borrow::Cow;

use odiglet_common::{
    GoSpanRecord,
    go::{
        DB_SYSTEM_MYSQL, DB_SYSTEM_POSTGRESQL, DB_SYSTEM_SQLITE, DbSpan, GrpcClientSpan,
        GrpcServerSpan, HttpClientSpan, HttpServerSpan, SPAN_FLAG_DB_EXEC, SPAN_FLAG_ERROR,
        SPAN_FLAG_HAS_PARENT, SPAN_FLAG_PARENT_REMOTE, SpanHeader,
    },
};
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::{Span, Status, span::SpanKind, status::StatusCode},
};

use super::sql;
use crate::time::BootClock;

/// Instrumentation scope of the `net/http` server and client spans.
pub const SCOPE_NET_HTTP: &str = "odiglet/go/net/http";
/// Instrumentation scope of the `database/sql` spans.
pub const SCOPE_DATABASE_SQL: &str = "odiglet/go/database/sql";
/// Instrumentation scope of the gRPC server and client spans.
pub const SCOPE_GRPC: &str = "odiglet/go/google.golang.org/grpc";

/// OTLP `SpanFlags`: the span's context says whether its parent is remote.
const FLAG_CONTEXT_HAS_IS_REMOTE: u32 = 0x100;
/// OTLP `SpanFlags`: the parent is remote.
const FLAG_CONTEXT_IS_REMOTE: u32 = 0x200;

/// The host PID that produced `record`.
pub fn record_pid(record: &GoSpanRecord) -> u32 {
    record_header(record).pid
}

/// The instrumentation scope name of `record`.
pub fn record_scope(record: &GoSpanRecord) -> &'static str {
    match record {
        GoSpanRecord::HttpServer(_) | GoSpanRecord::HttpClient(_) => SCOPE_NET_HTTP,
        GoSpanRecord::Db(_) => SCOPE_DATABASE_SQL,
        GoSpanRecord::GrpcServer(_) | GoSpanRecord::GrpcClient(_) => SCOPE_GRPC,
    }
}

/// The header every record starts with.
pub(crate) fn record_header(record: &GoSpanRecord) -> &SpanHeader {
    match record {
        GoSpanRecord::HttpServer(span) => &span.header,
        GoSpanRecord::HttpClient(span) => &span.header,
        GoSpanRecord::Db(span) => &span.header,
        GoSpanRecord::GrpcServer(span) => &span.header,
        GoSpanRecord::GrpcClient(span) => &span.header,
    }
}

/// Receives the fields of one span as [`build_span`] produces them, in the order of the
/// calls. [`build_span`] is the only place that decides what a span holds; [`SpanModel`]
/// collects it into the prost model, [`super::encode::SpanEncoder`] writes it straight as
/// protobuf.
pub trait SpanFields {
    fn context(
        &mut self,
        trace_id: &[u8; 16],
        span_id: &[u8; 8],
        parent_span_id: Option<&[u8; 8]>,
        flags: u32,
    );
    fn times(&mut self, start_unix_nano: u64, end_unix_nano: u64);
    fn kind(&mut self, kind: SpanKind);
    /// The span name is the concatenation of `parts` (`"{method} {route}"` needs no
    /// allocation).
    fn name(&mut self, parts: &[&str]);
    /// A string attribute whose value is the concatenation of `parts`.
    fn joined(&mut self, key: &'static str, parts: &[&str]);
    fn int(&mut self, key: &'static str, value: i64);
    /// An error status with `message`; called at most once per span.
    fn error(&mut self, message: &str);

    /// A string attribute.
    fn string(&mut self, key: &'static str, value: &str) {
        self.joined(key, &[value]);
    }
}

/// [`SpanFields`] into the prost model `Span`.
#[derive(Debug, Default)]
pub struct SpanModel(pub Span);

impl SpanFields for SpanModel {
    fn context(
        &mut self,
        trace_id: &[u8; 16],
        span_id: &[u8; 8],
        parent_span_id: Option<&[u8; 8]>,
        flags: u32,
    ) {
        self.0.trace_id = trace_id.to_vec();
        self.0.span_id = span_id.to_vec();
        self.0.parent_span_id = parent_span_id.map_or_else(Vec::new, |id| id.to_vec());
        self.0.flags = flags;
    }

    fn times(&mut self, start_unix_nano: u64, end_unix_nano: u64) {
        self.0.start_time_unix_nano = start_unix_nano;
        self.0.end_time_unix_nano = end_unix_nano;
    }

    fn kind(&mut self, kind: SpanKind) {
        self.0.kind = kind as i32;
    }

    fn name(&mut self, parts: &[&str]) {
        self.0.name = parts.concat();
    }

    fn joined(&mut self, key: &'static str, parts: &[&str]) {
        self.0.attributes.push(string(key, parts.concat()));
    }

    fn int(&mut self, key: &'static str, value: i64) {
        self.0.attributes.push(int(key, value));
    }

    fn error(&mut self, message: &str) {
        self.0.status = Some(Status {
            message: message.to_owned(),
            code: StatusCode::Error as i32,
        });
    }
}

/// Converts one record to an OTLP span in the prost model; `clock` turns boot-time stamps
/// into wall-clock ones. The exporter encodes spans directly instead
/// ([`super::encode::encode_span`]); both come from [`build_span`].
pub fn to_otlp_span(record: &GoSpanRecord, clock: &BootClock) -> Span {
    let mut model = SpanModel::default();
    build_span(record, clock, &mut model);
    model.0
}

/// The semantic-convention mapping: hands every field of `record`'s span to `out`.
pub fn build_span(record: &GoSpanRecord, clock: &BootClock, out: &mut impl SpanFields) {
    match record {
        GoSpanRecord::HttpServer(span) => server_span(span, clock, out),
        GoSpanRecord::HttpClient(span) => client_span(span, clock, out),
        GoSpanRecord::Db(span) => db_span(span, clock, out),
        GoSpanRecord::GrpcServer(span) => grpc_server_span(span, clock, out),
        GoSpanRecord::GrpcClient(span) => grpc_client_span(span, clock, out),
    }
}

/// The fields every span shares: ids, flags, times. Name, kind, attributes and status are
/// the caller's.
fn base_span(header: &SpanHeader, clock: &BootClock, out: &mut impl SpanFields) {
    let has_parent = header.flags & SPAN_FLAG_HAS_PARENT != 0;
    let mut flags = u32::from(header.context.trace_flags) | FLAG_CONTEXT_HAS_IS_REMOTE;
    if has_parent && header.flags & SPAN_FLAG_PARENT_REMOTE != 0 {
        flags |= FLAG_CONTEXT_IS_REMOTE;
    }
    let start = clock.boot_to_unix_nanos(header.start_boot_ns);
    // A span never ends before it starts, even if the probe's stamps are off.
    let end = clock.boot_to_unix_nanos(header.end_boot_ns).max(start);
    out.context(
        &header.context.trace_id,
        &header.context.span_id,
        has_parent.then_some(&header.parent.span_id),
        flags,
    );
    out.times(start, end);
}

fn server_span(record: &HttpServerSpan, clock: &BootClock, out: &mut impl SpanFields) {
    let method = text(&record.method, record.method_len);
    let path = text(&record.path, record.path_len);
    let route = text(&record.route, record.route_len);
    let host = text(&record.host, record.host_len);
    let remote = text(&record.remote_addr, record.remote_addr_len);
    let proto = text(&record.proto, record.proto_len);
    // Go sends 200 when the handler never wrote a header.
    let status = if record.status_code == 0 {
        200
    } else {
        record.status_code
    };

    base_span(&record.header, clock, out);
    out.kind(SpanKind::Server);
    if route.is_empty() {
        out.name(&[&method]);
    } else {
        out.name(&[&method, " ", &route]);
    }
    out.string("http.request.method", &method);
    out.string("url.path", &path);
    if !route.is_empty() {
        out.string("http.route", &route);
    }
    out.int("http.response.status_code", i64::from(status));
    let (host_name, host_port) = split_host_port(&host);
    if !host_name.is_empty() {
        out.string("server.address", host_name);
    }
    if let Some(port) = host_port {
        out.int("server.port", i64::from(port));
    }
    let (peer, peer_port) = split_host_port(&remote);
    if !peer.is_empty() {
        out.string("client.address", peer);
    }
    if let Some(port) = peer_port {
        out.int("client.port", i64::from(port));
    }
    if let Some(version) = protocol_version(&proto) {
        out.string("network.protocol.version", version);
    }
    if status >= 500 {
        out.error(&http_error(status));
    }
}

fn client_span(record: &HttpClientSpan, clock: &BootClock, out: &mut impl SpanFields) {
    let method = text(&record.method, record.method_len);
    let scheme = text(&record.scheme, record.scheme_len);
    let host = text(&record.host, record.host_len);
    let path = text(&record.path, record.path_len);
    let proto = text(&record.proto, record.proto_len);
    let failed = record.header.flags & SPAN_FLAG_ERROR != 0;

    base_span(&record.header, clock, out);
    out.kind(SpanKind::Client);
    out.name(&[&method]);
    out.string("http.request.method", &method);
    let scheme_or_http = if scheme.is_empty() { "http" } else { &scheme };
    out.joined("url.full", &[scheme_or_http, "://", &host, &path]);
    let (host_name, host_port) = split_host_port(&host);
    if !host_name.is_empty() {
        out.string("server.address", host_name);
    }
    // The port is implied by the scheme when the URL has none.
    let port = host_port.or(match scheme_or_http {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    });
    if let Some(port) = port {
        out.int("server.port", i64::from(port));
    }
    if record.status_code != 0 {
        out.int("http.response.status_code", i64::from(record.status_code));
    }
    if let Some(version) = protocol_version(&proto) {
        out.string("network.protocol.version", version);
    }
    if record.status_code >= 400 {
        out.error(&http_error(record.status_code));
    } else if failed {
        out.error("request failed");
    }
}

/// `db.system.name` values (OpenTelemetry semantic conventions) of `DB_SYSTEM_*`.
fn db_system_name(system: u32) -> &'static str {
    match system {
        DB_SYSTEM_POSTGRESQL => "postgresql",
        DB_SYSTEM_MYSQL => "mysql",
        DB_SYSTEM_SQLITE => "sqlite",
        _ => "other_sql",
    }
}

fn db_span(record: &DbSpan, clock: &BootClock, out: &mut impl SpanFields) {
    let query = sql::sanitize(&text(&record.query, record.query_len));
    let (operation, collection) = sql::summarize(&query);
    let system = db_system_name(record.db_system);
    base_span(&record.header, clock, out);
    out.kind(SpanKind::Client);
    match (&operation, &collection) {
        (Some(operation), Some(collection)) => out.name(&[operation, " ", collection]),
        (Some(operation), None) => out.name(&[operation]),
        _ => out.name(&[system]),
    }
    out.string("db.system.name", system);
    if let Some(operation) = &operation {
        out.string("db.operation.name", operation);
    }
    if let Some(collection) = &collection {
        out.string("db.collection.name", collection);
    }
    out.string("db.query.text", &query);
    if record.header.flags & SPAN_FLAG_ERROR != 0 {
        if record.header.flags & SPAN_FLAG_DB_EXEC != 0 {
            out.error("exec failed");
        } else {
            out.error("query failed");
        }
    }
}

/// gRPC status codes by number, as `rpc.grpc.status_code` documents them.
const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// `/package.Service/Method` → (`package.Service`, `Method`).
fn split_grpc_method(full: &str) -> (&str, &str) {
    let trimmed = full.strip_prefix('/').unwrap_or(full);
    trimmed.rsplit_once('/').unwrap_or((trimmed, ""))
}

/// Name and `rpc.*` attributes shared by gRPC server and client spans.
fn grpc_base(
    header: &SpanHeader,
    method: &str,
    status: u32,
    clock: &BootClock,
    out: &mut impl SpanFields,
) {
    let (service, name) = split_grpc_method(method);
    base_span(header, clock, out);
    out.name(&[method.strip_prefix('/').unwrap_or(method)]);
    out.string("rpc.system", "grpc");
    out.string("rpc.service", service);
    out.string("rpc.method", name);
    out.int("rpc.grpc.status_code", i64::from(status));
}

fn grpc_error(status: u32) -> String {
    let name = GRPC_CODES
        .get(status as usize)
        .copied()
        .unwrap_or("UNKNOWN");
    format!("gRPC {name}")
}

fn grpc_server_span(record: &GrpcServerSpan, clock: &BootClock, out: &mut impl SpanFields) {
    let method = text(&record.method, record.method_len);
    grpc_base(&record.header, &method, record.status_code, clock, out);
    out.kind(SpanKind::Server);
    let ip = record
        .peer_ip
        .get(..usize::from(record.peer_ip_len))
        .and_then(ip_address);
    if let Some(ip) = ip {
        out.string("client.address", &ip.to_string());
        out.int("client.port", i64::from(record.peer_port));
    }
    // Server side, only these codes mean the server failed (semantic conventions).
    if matches!(record.status_code, 2 | 4 | 12 | 13 | 14 | 15) {
        out.error(&grpc_error(record.status_code));
    }
}

fn grpc_client_span(record: &GrpcClientSpan, clock: &BootClock, out: &mut impl SpanFields) {
    let method = text(&record.method, record.method_len);
    let target = text(&record.target, record.target_len);
    grpc_base(&record.header, &method, record.status_code, clock, out);
    out.kind(SpanKind::Client);
    let (host, port) = split_host_port(grpc_target_authority(&target));
    if !host.is_empty() {
        out.string("server.address", host);
    }
    if let Some(port) = port {
        out.int("server.port", i64::from(port));
    }
    if record.status_code != 0 || record.header.flags & SPAN_FLAG_ERROR != 0 {
        out.error(&grpc_error(record.status_code));
    }
}

/// The `host:port` of a gRPC dial target: `dns:///h:p`, `dns://resolver/h:p`,
/// `passthrough:///h:p` or a bare `h:p`.
fn grpc_target_authority(target: &str) -> &str {
    match target.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or(rest, |(_, endpoint)| endpoint),
        None => target,
    }
}

/// A Go `net.IP` (4 or 16 bytes; IPv4 in IPv6 shown as IPv4).
fn ip_address(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(|b| {
            let v6 = std::net::Ipv6Addr::from(b);
            v6.to_ipv4_mapped()
                .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4)
        }),
        _ => None,
    }
}

fn http_error(http_status: u32) -> String {
    format!("HTTP {http_status}")
}

/// The first `len` bytes of `buffer` (clamped to it), stopping at a NUL, as lossy UTF-8:
/// borrowed from the record unless invalid bytes had to be replaced.
pub(crate) fn text(buffer: &[u8], len: u16) -> Cow<'_, str> {
    let bytes = buffer.get(..usize::from(len)).unwrap_or(buffer);
    let bytes = match bytes.iter().position(|b| *b == 0) {
        Some(end) => bytes.get(..end).unwrap_or(bytes),
        None => bytes,
    };
    String::from_utf8_lossy(bytes)
}

/// Splits `host[:port]`, `[v6]:port` or a bare IPv6 address. A port that is not a number is
/// left in the host.
pub(crate) fn split_host_port(value: &str) -> (&str, Option<u16>) {
    if let Some(rest) = value.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (host, port);
        }
        return (value, None);
    }
    match value.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address, no port.
        Some((host, _)) if host.contains(':') => (value, None),
        Some((host, port)) => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (value, None),
        },
        None => (value, None),
    }
}

/// `"HTTP/1.1"` → `"1.1"`; `None` for an empty or unknown protocol string.
pub(crate) fn protocol_version(proto: &str) -> Option<&str> {
    match proto.strip_prefix("HTTP/") {
        Some("2.0") => Some("2"),
        Some("3.0") => Some("3"),
        Some(version) if !version.is_empty() => Some(version),
        _ => None,
    }
}

pub(crate) fn string(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value)),
        }),
        ..KeyValue::default()
    }
}

pub(crate) fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}

#[cfg(test)]
#[path = "span_tests.rs"]
pub(crate) mod tests;
