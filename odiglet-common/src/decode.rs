//! Length-checked decoding of ring-buffer records into the shared types.

use core::fmt;

use crate::{
    go::{
        DbSpan, GO_SPAN_DB, GO_SPAN_GRPC_CLIENT, GO_SPAN_GRPC_SERVER, GO_SPAN_HTTP_CLIENT,
        GO_SPAN_HTTP_SERVER, GrpcClientSpan, GrpcServerSpan, HttpClientSpan, HttpServerSpan,
    },
    lifecycle::{ExecRecord, PROCESS_EXEC, PROCESS_EXIT, PROCESS_FORK, ProcessHeader},
};

/// A decoded lifecycle record.
#[expect(
    clippy::large_enum_variant,
    reason = "no_std without alloc, and exec records dominate the stream anyway"
)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LifecycleRecord {
    Exec(ExecRecord),
    Fork(ProcessHeader),
    Exit(ProcessHeader),
}

/// Why a record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The record is shorter than its kind requires.
    Truncated { kind: u32, len: usize, need: usize },
    /// The record's kind is not one this build knows.
    UnknownKind(u32),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { kind, len, need } => {
                write!(f, "record of kind {kind} is {len} bytes, need {need}")
            }
            Self::UnknownKind(kind) => write!(f, "unknown record kind {kind}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Reads a `T` from the front of `bytes` if it is long enough.
fn read_prefix<T: aya::Pod>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    let need = core::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Truncated {
            kind,
            len: bytes.len(),
            need,
        });
    }
    // SAFETY: `bytes` holds at least `size_of::<T>()` bytes (checked above), `read_unaligned`
    // has no alignment requirement, and `T: Pod` makes any bit pattern a valid `T`.
    Ok(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The kind every record starts with (a native-endian `u32`).
fn record_kind(bytes: &[u8]) -> Result<u32, DecodeError> {
    match bytes.get(..4) {
        Some(&[a, b, c, d]) => Ok(u32::from_ne_bytes([a, b, c, d])),
        _ => Err(DecodeError::Truncated {
            kind: 0,
            len: bytes.len(),
            need: 4,
        }),
    }
}

/// The bytes of a record exactly as the kernel writes them: the inverse of the decoders, for
/// code that synthesizes ring-buffer records (tests, benchmarks).
pub fn bytes_of<T: aya::Pod>(value: &T) -> &[u8] {
    // SAFETY: `T: Pod` has no padding and no invalid bit patterns; the slice covers exactly
    // the value and lives as long as the borrow.
    unsafe {
        core::slice::from_raw_parts((value as *const T).cast::<u8>(), core::mem::size_of::<T>())
    }
}

/// Decodes one lifecycle ring-buffer record.
pub fn decode_record(bytes: &[u8]) -> Result<LifecycleRecord, DecodeError> {
    let kind = record_kind(bytes)?;
    match kind {
        PROCESS_EXEC => read_prefix::<ExecRecord>(bytes, kind).map(LifecycleRecord::Exec),
        PROCESS_FORK => read_prefix::<ProcessHeader>(bytes, kind).map(LifecycleRecord::Fork),
        PROCESS_EXIT => read_prefix::<ProcessHeader>(bytes, kind).map(LifecycleRecord::Exit),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// A decoded Go span record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoSpanRecord {
    HttpServer(HttpServerSpan),
    HttpClient(HttpClientSpan),
    Db(DbSpan),
    GrpcServer(GrpcServerSpan),
    GrpcClient(GrpcClientSpan),
}

/// Decodes one record of the Go probes' ring buffer.
pub fn decode_go_span(bytes: &[u8]) -> Result<GoSpanRecord, DecodeError> {
    let kind = record_kind(bytes)?;
    match kind {
        GO_SPAN_HTTP_SERVER => read_prefix(bytes, kind).map(GoSpanRecord::HttpServer),
        GO_SPAN_HTTP_CLIENT => read_prefix(bytes, kind).map(GoSpanRecord::HttpClient),
        GO_SPAN_DB => read_prefix(bytes, kind).map(GoSpanRecord::Db),
        GO_SPAN_GRPC_SERVER => read_prefix(bytes, kind).map(GoSpanRecord::GrpcServer),
        GO_SPAN_GRPC_CLIENT => read_prefix(bytes, kind).map(GoSpanRecord::GrpcClient),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::{ARGS_LEN, EXE_LEN};

    fn header(kind: u32) -> ProcessHeader {
        ProcessHeader {
            kind,
            pid: 42,
            ppid: 1,
            vpid: 7,
            cgroup_id: 99,
            boot_ns: 123,
            comm: *b"true\0\0\0\0\0\0\0\0\0\0\0\0",
        }
    }

    #[test]
    fn decodes_fork_and_exit_headers() {
        for (kind, want) in [(PROCESS_FORK, 'f'), (PROCESS_EXIT, 'x')] {
            let h = header(kind);
            let got = decode_record(bytes_of(&h)).unwrap();
            match (got, want) {
                (LifecycleRecord::Fork(g), 'f') | (LifecycleRecord::Exit(g), 'x') => {
                    assert_eq!(g, h)
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn decodes_exec_record() {
        let mut exec = ExecRecord {
            header: header(PROCESS_EXEC),
            flags: 0,
            exe_len: 9,
            args_len: 0,
            exe: [0; EXE_LEN],
            args: [0; ARGS_LEN],
        };
        exec.exe[..9].copy_from_slice(b"/bin/true");
        assert_eq!(
            decode_record(bytes_of(&exec)).unwrap(),
            LifecycleRecord::Exec(exec)
        );
    }

    #[test]
    fn rejects_truncated_and_unknown_records() {
        let exec_header = header(PROCESS_EXEC);
        // An exec kind with only a header's worth of bytes is truncated, not misread.
        assert!(matches!(
            decode_record(bytes_of(&exec_header)),
            Err(DecodeError::Truncated {
                kind: PROCESS_EXEC,
                ..
            })
        ));
        assert!(matches!(
            decode_record(&[1, 0]),
            Err(DecodeError::Truncated { .. })
        ));
        assert_eq!(
            decode_record(&[]),
            Err(DecodeError::Truncated {
                kind: 0,
                len: 0,
                need: 4
            })
        );
        let unknown = header(77);
        assert_eq!(
            decode_record(bytes_of(&unknown)),
            Err(DecodeError::UnknownKind(77))
        );
    }

    #[test]
    fn decodes_go_spans_and_refuses_short_ones() {
        use crate::go::{SpanContext, SpanHeader};
        let header = SpanHeader {
            kind: GO_SPAN_HTTP_SERVER,
            pid: 9,
            flags: 0,
            reserved: 0,
            start_boot_ns: 1,
            end_boot_ns: 2,
            goroutine: 0xc000,
            context: SpanContext::default(),
            parent: SpanContext::default(),
        };
        // SAFETY: all-zero bytes are a valid HttpServerSpan (plain integers and arrays).
        let mut span: HttpServerSpan = unsafe { core::mem::zeroed() };
        span.header = header;
        span.status_code = 204;
        let bytes = bytes_of(&span);
        assert_eq!(decode_go_span(bytes), Ok(GoSpanRecord::HttpServer(span)));
        assert!(matches!(
            decode_go_span(&bytes[..100]),
            Err(DecodeError::Truncated {
                kind: GO_SPAN_HTTP_SERVER,
                ..
            })
        ));
        let mut other = span;
        other.header.kind = 99;
        assert_eq!(
            decode_go_span(bytes_of(&other)),
            Err(DecodeError::UnknownKind(99))
        );
    }
}
