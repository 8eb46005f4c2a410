//! `--stdout json` backend: each batch as one line of OTLP/JSON, the protobuf JSON mapping
//! of `ExportTraceServiceRequest` as the collector's file exporter writes it.
//!
//! The mapping (OTLP/JSON, opentelemetry-proto `docs/specification.md`): lowerCamelCase field
//! names; trace and span ids as lowercase hex (not base64); enums as integers; 64-bit
//! integers (`startTimeUnixNano`, `intValue`) as decimal strings; fields at their default
//! value omitted, except that `resource`, `scope` and `status` are always written, as the
//! collector does. Written by hand: the opentelemetry-proto serde derive emits every
//! default field.

use std::{
    fmt::Write as _,
    io::{self, Write},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::ExportTraceServiceRequest,
    common::v1::{AnyValue, KeyValue, any_value::Value},
    trace::v1::{Span, Status},
};

use super::{EncodedRequest, ExportError, SpanExporter};

const BACKEND: &str = "stdout/json";

/// Writes each batch as one OTLP/JSON line to a writer (stdout by default).
pub struct StdoutJsonExporter {
    writer: Box<dyn Write + Send>,
    line: String,
}

impl StdoutJsonExporter {
    /// Writes to the process's standard output.
    pub fn stdout() -> Self {
        Self::new(Box::new(io::stdout()))
    }

    pub fn new(writer: Box<dyn Write + Send>) -> Self {
        Self {
            writer,
            line: String::new(),
        }
    }
}

impl SpanExporter for StdoutJsonExporter {
    async fn export(&mut self, request: EncodedRequest) -> Result<u64, ExportError> {
        // JSON is not the hot path: the model comes from decoding the bytes the gRPC backend
        // would send, so both backends always carry the same spans.
        let request = request.decode().map_err(|error| ExportError::Permanent {
            backend: BACKEND,
            message: format!("undecodable request: {error}"),
        })?;
        self.line.clear();
        write_request(&mut self.line, &request);
        self.line.push('\n');
        self.writer
            .write_all(self.line.as_bytes())
            .and_then(|()| self.writer.flush())
            .map_err(|error| ExportError::Permanent {
                backend: BACKEND,
                message: error.to_string(),
            })?;
        Ok(0)
    }
}

/// The OTLP/JSON encoding of `request`, without a trailing newline.
pub fn to_otlp_json(request: &ExportTraceServiceRequest) -> String {
    let mut out = String::with_capacity(1024);
    write_request(&mut out, request);
    out
}

fn write_request(out: &mut String, request: &ExportTraceServiceRequest) {
    out.push_str("{\"resourceSpans\":[");
    for (i, resource_spans) in request.resource_spans.iter().enumerate() {
        comma(out, i);
        out.push_str("{\"resource\":{");
        if let Some(resource) = &resource_spans.resource {
            let mut fields = Fields::new(out);
            fields.attributes(&resource.attributes);
            fields.uint("droppedAttributesCount", resource.dropped_attributes_count);
        }
        out.push('}');
        if !resource_spans.scope_spans.is_empty() {
            out.push_str(",\"scopeSpans\":[");
            for (j, scope_spans) in resource_spans.scope_spans.iter().enumerate() {
                comma(out, j);
                out.push_str("{\"scope\":{");
                if let Some(scope) = &scope_spans.scope {
                    let mut fields = Fields::new(out);
                    fields.string("name", &scope.name);
                    fields.string("version", &scope.version);
                    fields.attributes(&scope.attributes);
                    fields.uint("droppedAttributesCount", scope.dropped_attributes_count);
                }
                out.push('}');
                if !scope_spans.spans.is_empty() {
                    out.push_str(",\"spans\":[");
                    for (k, span) in scope_spans.spans.iter().enumerate() {
                        comma(out, k);
                        write_span(out, span);
                    }
                    out.push(']');
                }
                if !scope_spans.schema_url.is_empty() {
                    out.push_str(",\"schemaUrl\":");
                    quoted(out, &scope_spans.schema_url);
                }
                out.push('}');
            }
            out.push(']');
        }
        if !resource_spans.schema_url.is_empty() {
            out.push_str(",\"schemaUrl\":");
            quoted(out, &resource_spans.schema_url);
        }
        out.push('}');
    }
    out.push_str("]}");
}

fn write_span(out: &mut String, span: &Span) {
    out.push('{');
    let mut fields = Fields::new(out);
    fields.hex("traceId", &span.trace_id);
    fields.hex("spanId", &span.span_id);
    fields.string("traceState", &span.trace_state);
    fields.hex("parentSpanId", &span.parent_span_id);
    fields.uint("flags", span.flags);
    fields.string("name", &span.name);
    fields.int("kind", span.kind);
    fields.u64_string("startTimeUnixNano", span.start_time_unix_nano);
    fields.u64_string("endTimeUnixNano", span.end_time_unix_nano);
    fields.attributes(&span.attributes);
    fields.uint("droppedAttributesCount", span.dropped_attributes_count);
    fields.uint("droppedEventsCount", span.dropped_events_count);
    fields.uint("droppedLinksCount", span.dropped_links_count);
    let out = fields.key("status");
    write_status(out, span.status.as_ref());
    out.push('}');
}

fn write_status(out: &mut String, status: Option<&Status>) {
    out.push('{');
    if let Some(status) = status {
        let mut fields = Fields::new(out);
        fields.string("message", &status.message);
        fields.int("code", status.code);
    }
    out.push('}');
}

/// Writes the members of one object, skipping default values and placing commas.
struct Fields<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Fields<'a> {
    fn new(out: &'a mut String) -> Self {
        Self { out, first: true }
    }

    fn key(&mut self, key: &str) -> &mut String {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
        self.out
    }

    fn string(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            quoted(self.key(key), value);
        }
    }

    fn hex(&mut self, key: &str, bytes: &[u8]) {
        if !bytes.is_empty() {
            let out = self.key(key);
            out.push('"');
            for byte in bytes {
                let _ = write!(out, "{byte:02x}");
            }
            out.push('"');
        }
    }

    fn uint(&mut self, key: &str, value: u32) {
        if value != 0 {
            let _ = write!(self.key(key), "{value}");
        }
    }

    fn int(&mut self, key: &str, value: i32) {
        if value != 0 {
            let _ = write!(self.key(key), "{value}");
        }
    }

    fn u64_string(&mut self, key: &str, value: u64) {
        if value != 0 {
            let _ = write!(self.key(key), "\"{value}\"");
        }
    }

    fn attributes(&mut self, attributes: &[KeyValue]) {
        if !attributes.is_empty() {
            write_key_values(self.key("attributes"), attributes);
        }
    }
}

fn write_key_values(out: &mut String, attributes: &[KeyValue]) {
    out.push('[');
    for (i, kv) in attributes.iter().enumerate() {
        comma(out, i);
        out.push_str("{\"key\":");
        quoted(out, &kv.key);
        out.push_str(",\"value\":");
        write_any_value(out, kv.value.as_ref());
        out.push('}');
    }
    out.push(']');
}

fn write_any_value(out: &mut String, value: Option<&AnyValue>) {
    let Some(value) = value.and_then(|v| v.value.as_ref()) else {
        out.push_str("{}");
        return;
    };
    match value {
        Value::StringValue(s) => {
            out.push_str("{\"stringValue\":");
            quoted(out, s);
        }
        Value::BoolValue(b) => {
            let _ = write!(out, "{{\"boolValue\":{b}");
        }
        Value::IntValue(i) => {
            let _ = write!(out, "{{\"intValue\":\"{i}\"");
        }
        Value::DoubleValue(d) => {
            out.push_str("{\"doubleValue\":");
            if d.is_nan() {
                out.push_str("\"NaN\"");
            } else if d.is_infinite() {
                out.push_str(if *d > 0.0 {
                    "\"Infinity\""
                } else {
                    "\"-Infinity\""
                });
            } else {
                let _ = write!(out, "{d}");
            }
        }
        Value::BytesValue(bytes) => {
            out.push_str("{\"bytesValue\":\"");
            base64(out, bytes);
            out.push('"');
        }
        Value::ArrayValue(array) => {
            out.push_str("{\"arrayValue\":{\"values\":[");
            for (i, item) in array.values.iter().enumerate() {
                comma(out, i);
                write_any_value(out, Some(item));
            }
            out.push_str("]}");
        }
        Value::KvlistValue(list) => {
            out.push_str("{\"kvlistValue\":{\"values\":");
            write_key_values(out, &list.values);
            out.push('}');
        }
        Value::StringValueStrindex(index) => {
            let _ = write!(out, "{{\"stringValueStrindex\":{index}");
        }
    }
    out.push('}');
}

fn comma(out: &mut String, index: usize) {
    if index > 0 {
        out.push(',');
    }
}

/// A JSON string literal.
fn quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Standard base64 with padding (proto3 JSON `bytes`).
fn base64(out: &mut String, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let symbol = |index: u32| char::from(ALPHABET[(index & 63) as usize]);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        out.push(symbol(n >> 18));
        out.push(symbol(n >> 12));
        out.push(if chunk.len() > 1 { symbol(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { symbol(n) } else { '=' });
    }
}

#[cfg(test)]
#[path = "stdout_json_tests.rs"]
mod tests;
