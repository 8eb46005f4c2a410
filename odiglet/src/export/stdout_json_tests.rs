use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::{
    common::v1::{ArrayValue, InstrumentationScope, KeyValueList},
    resource::v1::Resource,
    trace::v1::{ResourceSpans, ScopeSpans, span::SpanKind, status::StatusCode},
};

use super::*;

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn request() -> ExportTraceServiceRequest {
    let server = Span {
        trace_id: vec![0x0a; 16],
        span_id: vec![0x0b; 8],
        parent_span_id: vec![0x0c; 8],
        flags: 0x301,
        name: "GET /users/{id}".to_owned(),
        kind: SpanKind::Server as i32,
        start_time_unix_nano: 1_700_000_000_000_000_123,
        end_time_unix_nano: 1_700_000_000_000_456_789,
        attributes: vec![
            kv("http.request.method", Value::StringValue("GET".into())),
            kv("http.response.status_code", Value::IntValue(503)),
            kv("quote", Value::StringValue("a\"b\\c\nd\u{1}é".into())),
        ],
        status: Some(Status {
            message: "HTTP 503".to_owned(),
            code: StatusCode::Error as i32,
        }),
        ..Span::default()
    };
    let client = Span {
        trace_id: vec![0x0a; 16],
        span_id: vec![0xff; 8],
        flags: 0x101,
        name: "GET".to_owned(),
        kind: SpanKind::Client as i32,
        start_time_unix_nano: 5,
        end_time_unix_nano: 6,
        ..Span::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", Value::StringValue("web".into())),
                    kv("process.pid", Value::IntValue(42)),
                    kv("ok", Value::BoolValue(true)),
                    kv("ratio", Value::DoubleValue(0.5)),
                    kv("raw", Value::BytesValue(b"hi!?".to_vec())),
                    kv(
                        "list",
                        Value::ArrayValue(ArrayValue {
                            values: vec![AnyValue {
                                value: Some(Value::IntValue(-1)),
                            }],
                        }),
                    ),
                    kv(
                        "map",
                        Value::KvlistValue(KeyValueList {
                            values: vec![kv("k", Value::StringValue("v".into()))],
                        }),
                    ),
                ],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "odiglet/go/net/http".to_owned(),
                    version: "0.1.0".to_owned(),
                    ..InstrumentationScope::default()
                }),
                spans: vec![server, client],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

const GOLDEN: &str = concat!(
    r#"{"resourceSpans":[{"resource":{"attributes":["#,
    r#"{"key":"service.name","value":{"stringValue":"web"}},"#,
    r#"{"key":"process.pid","value":{"intValue":"42"}},"#,
    r#"{"key":"ok","value":{"boolValue":true}},"#,
    r#"{"key":"ratio","value":{"doubleValue":0.5}},"#,
    r#"{"key":"raw","value":{"bytesValue":"aGkhPw=="}},"#,
    r#"{"key":"list","value":{"arrayValue":{"values":[{"intValue":"-1"}]}}},"#,
    r#"{"key":"map","value":{"kvlistValue":{"values":[{"key":"k","value":{"stringValue":"v"}}]}}}]},"#,
    r#""scopeSpans":[{"scope":{"name":"odiglet/go/net/http","version":"0.1.0"},"spans":["#,
    r#"{"traceId":"0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a","spanId":"0b0b0b0b0b0b0b0b","#,
    r#""parentSpanId":"0c0c0c0c0c0c0c0c","flags":769,"name":"GET /users/{id}","kind":2,"#,
    r#""startTimeUnixNano":"1700000000000000123","endTimeUnixNano":"1700000000000456789","#,
    r#""attributes":[{"key":"http.request.method","value":{"stringValue":"GET"}},"#,
    r#"{"key":"http.response.status_code","value":{"intValue":"503"}},"#,
    r#"{"key":"quote","value":{"stringValue":"a\"b\\c\nd\u0001é"}}],"#,
    r#""status":{"message":"HTTP 503","code":2}},"#,
    r#"{"traceId":"0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a","spanId":"ffffffffffffffff","flags":257,"#,
    r#""name":"GET","kind":3,"startTimeUnixNano":"5","endTimeUnixNano":"6","status":{}}"#,
    r#"]}]}]}"#,
);

#[test]
fn request_matches_the_golden_otlp_json_line() {
    let line = to_otlp_json(&request());
    assert_eq!(line, GOLDEN);
    // Valid JSON, one line.
    let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert!(!line.contains('\n'));
    assert_eq!(
        parsed["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"][2]["value"]["stringValue"],
        "a\"b\\c\nd\u{1}é"
    );
}

#[test]
fn empty_request_and_special_doubles() {
    assert_eq!(
        to_otlp_json(&ExportTraceServiceRequest::default()),
        r#"{"resourceSpans":[]}"#
    );
    let mut out = String::new();
    write_any_value(
        &mut out,
        Some(&AnyValue {
            value: Some(Value::DoubleValue(f64::NAN)),
        }),
    );
    write_any_value(&mut out, None);
    assert_eq!(out, r#"{"doubleValue":"NaN"}{}"#);
    let mut out = String::new();
    base64(&mut out, b"");
    base64(&mut out, b"f");
    base64(&mut out, b"fo");
    base64(&mut out, b"foo");
    assert_eq!(out, "Zg==Zm8=Zm9v");
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn each_batch_is_one_line() {
    let buffer = Shared::default();
    let mut exporter = StdoutJsonExporter::new(Box::new(buffer.clone()));
    exporter.export((&request()).into()).await.unwrap();
    exporter.export((&request()).into()).await.unwrap();
    let written = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines, vec![GOLDEN, GOLDEN]);
    assert!(written.ends_with('\n'));
}
