//! Spans straight to protobuf: [`SpanEncoder`] writes the OTLP `Span` message as
//! [`super::span::build_span`] hands it the fields, with `prost::encoding` primitives, so a
//! span costs no `String`, `Vec` or `KeyValue` of the prost model. Decoding the bytes with
//! prost gives exactly [`super::to_otlp_span`]'s `Span` (tested in `encode_tests.rs`).
//!
//! Field numbers are those of `opentelemetry/proto/trace/v1/trace.proto` and
//! `common/v1/common.proto`. As prost does, fields at their default value are left out.

use bytes::BufMut;
use odiglet_common::GoSpanRecord;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use super::span::{SpanFields, build_span};
use crate::time::BootClock;

// `Span` fields.
const SPAN_TRACE_ID: u32 = 1;
const SPAN_SPAN_ID: u32 = 2;
const SPAN_PARENT_SPAN_ID: u32 = 4;
const SPAN_NAME: u32 = 5;
const SPAN_KIND: u32 = 6;
const SPAN_START_TIME: u32 = 7;
const SPAN_END_TIME: u32 = 8;
const SPAN_ATTRIBUTES: u32 = 9;
const SPAN_STATUS: u32 = 15;
const SPAN_FLAGS: u32 = 16;
// `KeyValue`, `AnyValue` and `Status` fields.
const KEY_VALUE_KEY: u32 = 1;
const KEY_VALUE_VALUE: u32 = 2;
const ANY_VALUE_STRING: u32 = 1;
const ANY_VALUE_INT: u32 = 3;
const STATUS_MESSAGE: u32 = 2;
const STATUS_CODE: u32 = 3;

/// Writes the protobuf encoding of `record`'s OTLP `Span` (the message itself, without a
/// field key or length in front) to `buf`.
pub fn encode_span(record: &GoSpanRecord, clock: &BootClock, buf: &mut impl BufMut) {
    build_span(record, clock, &mut SpanEncoder { buf });
}

/// [`SpanFields`] into protobuf bytes.
pub struct SpanEncoder<'a, B> {
    buf: &'a mut B,
}

impl<B: BufMut> SpanFields for SpanEncoder<'_, B> {
    fn context(
        &mut self,
        trace_id: &[u8; 16],
        span_id: &[u8; 8],
        parent_span_id: Option<&[u8; 8]>,
        flags: u32,
    ) {
        put_bytes(SPAN_TRACE_ID, trace_id, self.buf);
        put_bytes(SPAN_SPAN_ID, span_id, self.buf);
        if let Some(parent) = parent_span_id {
            put_bytes(SPAN_PARENT_SPAN_ID, parent, self.buf);
        }
        if flags != 0 {
            encode_key(SPAN_FLAGS, WireType::ThirtyTwoBit, self.buf);
            self.buf.put_u32_le(flags);
        }
    }

    fn times(&mut self, start_unix_nano: u64, end_unix_nano: u64) {
        for (tag, nanos) in [
            (SPAN_START_TIME, start_unix_nano),
            (SPAN_END_TIME, end_unix_nano),
        ] {
            if nanos != 0 {
                encode_key(tag, WireType::SixtyFourBit, self.buf);
                self.buf.put_u64_le(nanos);
            }
        }
    }

    fn kind(&mut self, kind: SpanKind) {
        put_varint_field(SPAN_KIND, kind as i32 as u64, self.buf);
    }

    fn name(&mut self, parts: &[&str]) {
        let len = joined_len(parts);
        if len != 0 {
            put_header(SPAN_NAME, len, self.buf);
            put_parts(parts, self.buf);
        }
    }

    fn joined(&mut self, key: &'static str, parts: &[&str]) {
        let value = field_len(ANY_VALUE_STRING, joined_len(parts));
        put_attribute_header(key, value, self.buf);
        put_header(ANY_VALUE_STRING, joined_len(parts), self.buf);
        put_parts(parts, self.buf);
    }

    fn int(&mut self, key: &'static str, value: i64) {
        // int64 is encoded as the varint of its two's complement.
        let value = value as u64;
        put_attribute_header(
            key,
            key_len(ANY_VALUE_INT) + encoded_len_varint(value),
            self.buf,
        );
        encode_key(ANY_VALUE_INT, WireType::Varint, self.buf);
        encode_varint(value, self.buf);
    }

    fn error(&mut self, message: &str) {
        let code = StatusCode::Error as i32 as u64;
        let mut len = key_len(STATUS_CODE) + encoded_len_varint(code);
        if !message.is_empty() {
            len += field_len(STATUS_MESSAGE, message.len());
        }
        put_header(SPAN_STATUS, len, self.buf);
        if !message.is_empty() {
            put_header(STATUS_MESSAGE, message.len(), self.buf);
            self.buf.put_slice(message.as_bytes());
        }
        put_varint_field(STATUS_CODE, code, self.buf);
    }
}

/// The key, length, `key` field and `value` field header of one `KeyValue` attribute whose
/// `AnyValue` body is `value_len` bytes; the caller writes that body.
fn put_attribute_header(key: &str, value_len: usize, buf: &mut impl BufMut) {
    let len = field_len(KEY_VALUE_KEY, key.len()) + field_len(KEY_VALUE_VALUE, value_len);
    put_header(SPAN_ATTRIBUTES, len, buf);
    put_header(KEY_VALUE_KEY, key.len(), buf);
    buf.put_slice(key.as_bytes());
    put_header(KEY_VALUE_VALUE, value_len, buf);
}

fn joined_len(parts: &[&str]) -> usize {
    parts.iter().map(|part| part.len()).sum()
}

fn put_parts(parts: &[&str], buf: &mut impl BufMut) {
    for part in parts {
        buf.put_slice(part.as_bytes());
    }
}

fn put_bytes(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
    put_header(tag, bytes.len(), buf);
    buf.put_slice(bytes);
}

fn put_varint_field(tag: u32, value: u64, buf: &mut impl BufMut) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

/// Bytes a length-delimited field `tag` with a body of `len` bytes takes.
pub(crate) fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The key and length of a length-delimited field `tag`; the caller writes the `len` bytes.
pub(crate) fn put_header(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
