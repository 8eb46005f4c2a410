//! Pure conversion of one decoded Go span record into an OTLP span with OpenTelemetry
//! semantic-convention attributes (HTTP, database, RPC).
//!
//! Every string field is cut to its buffer before reading (a corrupt length never reads past
//! the record) and decoded as lossy UTF-8: the probes copy raw user memory.

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
    header(record).pid
}

/// The instrumentation scope name of `record`.
pub fn record_scope(record: &GoSpanRecord) -> &'static str {
    match record {
        GoSpanRecord::HttpServer(_) | GoSpanRecord::HttpClient(_) => SCOPE_NET_HTTP,
        GoSpanRecord::Db(_) => SCOPE_DATABASE_SQL,
        GoSpanRecord::GrpcServer(_) | GoSpanRecord::GrpcClient(_) => SCOPE_GRPC,
    }
}

fn header(record: &GoSpanRecord) -> &SpanHeader {
    match record {
        GoSpanRecord::HttpServer(span) => &span.header,
        GoSpanRecord::HttpClient(span) => &span.header,
        GoSpanRecord::Db(span) => &span.header,
        GoSpanRecord::GrpcServer(span) => &span.header,
        GoSpanRecord::GrpcClient(span) => &span.header,
    }
}

/// Converts one record to an OTLP span; `clock` turns boot-time stamps into wall-clock ones.
pub fn to_otlp_span(record: &GoSpanRecord, clock: &BootClock) -> Span {
    match record {
        GoSpanRecord::HttpServer(span) => server_span(span, clock),
        GoSpanRecord::HttpClient(span) => client_span(span, clock),
        GoSpanRecord::Db(span) => db_span(span, clock),
        GoSpanRecord::GrpcServer(span) => grpc_server_span(span, clock),
        GoSpanRecord::GrpcClient(span) => grpc_client_span(span, clock),
    }
}

/// The fields every span shares: ids, flags, times. Name, kind, attributes and status are
/// the caller's.
fn base_span(header: &SpanHeader, clock: &BootClock) -> Span {
    let has_parent = header.flags & SPAN_FLAG_HAS_PARENT != 0;
    let mut flags = u32::from(header.context.trace_flags) | FLAG_CONTEXT_HAS_IS_REMOTE;
    if has_parent && header.flags & SPAN_FLAG_PARENT_REMOTE != 0 {
        flags |= FLAG_CONTEXT_IS_REMOTE;
    }
    let start = clock.boot_to_unix_nanos(header.start_boot_ns);
    // A span never ends before it starts, even if the probe's stamps are off.
    let end = clock.boot_to_unix_nanos(header.end_boot_ns).max(start);
    Span {
        trace_id: header.context.trace_id.to_vec(),
        span_id: header.context.span_id.to_vec(),
        parent_span_id: if has_parent {
            header.parent.span_id.to_vec()
        } else {
            Vec::new()
        },
        flags,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Span::default()
    }
}

fn server_span(record: &HttpServerSpan, clock: &BootClock) -> Span {
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

    let mut span = base_span(&record.header, clock);
    span.kind = SpanKind::Server as i32;
    span.name = if route.is_empty() {
        method.clone()
    } else {
        format!("{method} {route}")
    };
    let mut attributes = Vec::with_capacity(10);
    attributes.push(string("http.request.method", method));
    attributes.push(string("url.path", path));
    if !route.is_empty() {
        attributes.push(string("http.route", route));
    }
    attributes.push(int("http.response.status_code", i64::from(status)));
    let (host_name, host_port) = into_host_port(host);
    if !host_name.is_empty() {
        attributes.push(string("server.address", host_name));
    }
    if let Some(port) = host_port {
        attributes.push(int("server.port", i64::from(port)));
    }
    let (peer, peer_port) = into_host_port(remote);
    if !peer.is_empty() {
        attributes.push(string("client.address", peer));
    }
    if let Some(port) = peer_port {
        attributes.push(int("client.port", i64::from(port)));
    }
    if let Some(version) = protocol_version(&proto) {
        attributes.push(string("network.protocol.version", version.to_owned()));
    }
    span.attributes = attributes;
    span.status = (status >= 500).then(|| error_status(status));
    span
}

fn client_span(record: &HttpClientSpan, clock: &BootClock) -> Span {
    let method = text(&record.method, record.method_len);
    let scheme = text(&record.scheme, record.scheme_len);
    let host = text(&record.host, record.host_len);
    let path = text(&record.path, record.path_len);
    let proto = text(&record.proto, record.proto_len);
    let failed = record.header.flags & SPAN_FLAG_ERROR != 0;

    let mut span = base_span(&record.header, clock);
    span.kind = SpanKind::Client as i32;
    span.name.clone_from(&method);
    let mut attributes = Vec::with_capacity(8);
    attributes.push(string("http.request.method", method));
    let scheme_or_http = if scheme.is_empty() { "http" } else { &scheme };
    let full = format!("{scheme_or_http}://{host}{path}");
    attributes.push(string("url.full", full));
    let (host_name, host_port) = split_host_port(&host);
    if !host_name.is_empty() {
        attributes.push(string("server.address", host_name.to_owned()));
    }
    // The port is implied by the scheme when the URL has none.
    let port = host_port.or(match scheme_or_http {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    });
    if let Some(port) = port {
        attributes.push(int("server.port", i64::from(port)));
    }
    if record.status_code != 0 {
        attributes.push(int(
            "http.response.status_code",
            i64::from(record.status_code),
        ));
    }
    if let Some(version) = protocol_version(&proto) {
        attributes.push(string("network.protocol.version", version.to_owned()));
    }
    span.attributes = attributes;
    span.status = if record.status_code >= 400 {
        Some(error_status(record.status_code))
    } else if failed {
        Some(Status {
            message: "request failed".to_owned(),
            code: StatusCode::Error as i32,
        })
    } else {
        None
    };
    span
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

fn db_span(record: &DbSpan, clock: &BootClock) -> Span {
    let query = sql::sanitize(&text(&record.query, record.query_len));
    let (operation, collection) = sql::summarize(&query);
    let system = db_system_name(record.db_system);
    let mut span = base_span(&record.header, clock);
    span.kind = SpanKind::Client as i32;
    span.name = match (&operation, &collection) {
        (Some(operation), Some(collection)) => format!("{operation} {collection}"),
        (Some(operation), None) => operation.clone(),
        _ => system.to_owned(),
    };
    let mut attributes = Vec::with_capacity(5);
    attributes.push(string("db.system.name", system.to_owned()));
    if let Some(operation) = operation {
        attributes.push(string("db.operation.name", operation));
    }
    if let Some(collection) = collection {
        attributes.push(string("db.collection.name", collection));
    }
    attributes.push(string("db.query.text", query));
    span.attributes = attributes;
    if record.header.flags & SPAN_FLAG_ERROR != 0 {
        let call = if record.header.flags & SPAN_FLAG_DB_EXEC != 0 {
            "exec"
        } else {
            "query"
        };
        span.status = Some(Status {
            message: format!("{call} failed"),
            code: StatusCode::Error as i32,
        });
    }
    span
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
fn grpc_base(header: &SpanHeader, method: &str, status: u32, clock: &BootClock) -> Span {
    let (service, name) = split_grpc_method(method);
    let mut span = base_span(header, clock);
    span.name = method.strip_prefix('/').unwrap_or(method).to_owned();
    span.attributes = vec![
        string("rpc.system", "grpc".to_owned()),
        string("rpc.service", service.to_owned()),
        string("rpc.method", name.to_owned()),
        int("rpc.grpc.status_code", i64::from(status)),
    ];
    span
}

fn grpc_error(status: u32) -> Status {
    let name = GRPC_CODES
        .get(status as usize)
        .copied()
        .unwrap_or("UNKNOWN");
    Status {
        message: format!("gRPC {name}"),
        code: StatusCode::Error as i32,
    }
}

fn grpc_server_span(record: &GrpcServerSpan, clock: &BootClock) -> Span {
    let method = text(&record.method, record.method_len);
    let mut span = grpc_base(&record.header, &method, record.status_code, clock);
    span.kind = SpanKind::Server as i32;
    let ip = record
        .peer_ip
        .get(..usize::from(record.peer_ip_len))
        .and_then(ip_address);
    if let Some(ip) = ip {
        span.attributes
            .push(string("client.address", ip.to_string()));
        span.attributes
            .push(int("client.port", i64::from(record.peer_port)));
    }
    // Server side, only these codes mean the server failed (semantic conventions).
    span.status = matches!(record.status_code, 2 | 4 | 12 | 13 | 14 | 15)
        .then(|| grpc_error(record.status_code));
    span
}

fn grpc_client_span(record: &GrpcClientSpan, clock: &BootClock) -> Span {
    let method = text(&record.method, record.method_len);
    let target = text(&record.target, record.target_len);
    let mut span = grpc_base(&record.header, &method, record.status_code, clock);
    span.kind = SpanKind::Client as i32;
    let (host, port) = split_host_port(grpc_target_authority(&target));
    if !host.is_empty() {
        span.attributes
            .push(string("server.address", host.to_owned()));
    }
    if let Some(port) = port {
        span.attributes.push(int("server.port", i64::from(port)));
    }
    let failed = record.status_code != 0 || record.header.flags & SPAN_FLAG_ERROR != 0;
    span.status = failed.then(|| grpc_error(record.status_code));
    span
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

fn error_status(http_status: u32) -> Status {
    Status {
        message: format!("HTTP {http_status}"),
        code: StatusCode::Error as i32,
    }
}

/// The first `len` bytes of `buffer` (clamped to it), stopping at a NUL, as lossy UTF-8.
pub(crate) fn text(buffer: &[u8], len: u16) -> String {
    let bytes = buffer.get(..usize::from(len)).unwrap_or(buffer);
    let bytes = match bytes.iter().position(|b| *b == 0) {
        Some(end) => bytes.get(..end).unwrap_or(bytes),
        None => bytes,
    };
    String::from_utf8_lossy(bytes).into_owned()
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

/// [`split_host_port`] reusing `value`'s allocation for the host.
fn into_host_port(mut value: String) -> (String, Option<u16>) {
    let (host, port) = split_host_port(&value);
    let (start, len) = (host.as_ptr() as usize - value.as_ptr() as usize, host.len());
    value.truncate(start + len);
    value.drain(..start);
    (value, port)
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
