//! Pure conversion of one decoded Go span record into an OTLP span with OpenTelemetry HTTP
//! semantic-convention attributes.
//!
//! Every string field is cut to its buffer before reading (a corrupt length never reads past
//! the record) and decoded as lossy UTF-8: the probes copy raw user memory.

use odiglet_common::{
    GoSpanRecord,
    go::{
        HttpClientSpan, HttpServerSpan, SPAN_FLAG_ERROR, SPAN_FLAG_HAS_PARENT,
        SPAN_FLAG_PARENT_REMOTE, SpanHeader,
    },
};
use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::{Span, Status, span::SpanKind, status::StatusCode},
};

use crate::time::BootClock;

/// Instrumentation scope of the `net/http` server and client spans.
pub const SCOPE_NET_HTTP: &str = "odiglet/go/net/http";

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
    }
}

fn header(record: &GoSpanRecord) -> &SpanHeader {
    match record {
        GoSpanRecord::HttpServer(span) => &span.header,
        GoSpanRecord::HttpClient(span) => &span.header,
    }
}

/// Converts one record to an OTLP span; `clock` turns boot-time stamps into wall-clock ones.
pub fn to_otlp_span(record: &GoSpanRecord, clock: &BootClock) -> Span {
    match record {
        GoSpanRecord::HttpServer(span) => server_span(span, clock),
        GoSpanRecord::HttpClient(span) => client_span(span, clock),
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
