//! Length-checked decoding of ring-buffer records into the shared types.

use core::fmt;

use crate::{
    go::{
        DB_QUERY_LEN, DB_QUERY_OFFSET, DbSpan, GO_SPAN_DB, GO_SPAN_GRPC_CLIENT,
        GO_SPAN_GRPC_SERVER, GO_SPAN_HTTP_CLIENT, GO_SPAN_HTTP_SERVER, GO_SPAN_RECORD_MAX,
        GRPC_CLIENT_TARGET_OFFSET, GRPC_METHOD_LEN, GRPC_SERVER_METHOD_OFFSET, GRPC_TARGET_LEN,
        GrpcClientSpan, GrpcServerSpan, HTTP_CLIENT_STRINGS, HTTP_CLIENT_STRINGS_OFFSET,
        HTTP_SERVER_STRINGS, HTTP_SERVER_STRINGS_OFFSET, HttpClientSpan, HttpServerSpan,
        SpanHeader,
    },
    lifecycle::{
        ARGS_LEN, EXEC_ARGS_OFFSET, ExecRecord, PROCESS_EXEC, PROCESS_EXIT, PROCESS_FORK,
        ProcessHeader,
    },
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
    /// A string length is larger than its field can hold.
    StringTooLong { kind: u32, len: u16, cap: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { kind, len, need } => {
                write!(f, "record of kind {kind} is {len} bytes, need {need}")
            }
            Self::UnknownKind(kind) => write!(f, "unknown record kind {kind}"),
            Self::StringTooLong { kind, len, cap } => {
                write!(
                    f,
                    "record of kind {kind} has a {len}-byte string for {cap} bytes"
                )
            }
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

/// A `T` from exactly its bytes (`None` for any other length).
pub fn from_bytes<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() != core::mem::size_of::<T>() {
        return None;
    }
    read_prefix(bytes, 0).ok()
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
        PROCESS_EXEC => read_trimmed(
            bytes,
            kind,
            EXEC_ARGS_OFFSET,
            ARGS_LEN,
            |exec: &ExecRecord| exec.args_len,
        )
        .map(LifecycleRecord::Exec),
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
        GO_SPAN_HTTP_SERVER => {
            decode_packed(bytes, kind, HTTP_SERVER_STRINGS_OFFSET, http_server_fields)
                .map(GoSpanRecord::HttpServer)
        }
        GO_SPAN_HTTP_CLIENT => {
            decode_packed(bytes, kind, HTTP_CLIENT_STRINGS_OFFSET, http_client_fields)
                .map(GoSpanRecord::HttpClient)
        }
        GO_SPAN_DB => read_trimmed(
            bytes,
            kind,
            DB_QUERY_OFFSET,
            DB_QUERY_LEN,
            |span: &DbSpan| span.query_len,
        )
        .map(GoSpanRecord::Db),
        GO_SPAN_GRPC_SERVER => read_trimmed(
            bytes,
            kind,
            GRPC_SERVER_METHOD_OFFSET,
            GRPC_METHOD_LEN,
            |span: &GrpcServerSpan| span.method_len,
        )
        .map(GoSpanRecord::GrpcServer),
        GO_SPAN_GRPC_CLIENT => read_trimmed(
            bytes,
            kind,
            GRPC_CLIENT_TARGET_OFFSET,
            GRPC_TARGET_LEN,
            |span: &GrpcClientSpan| span.target_len,
        )
        .and_then(|span| {
            // The method is a fixed buffer before the target: its length is checked too.
            if usize::from(span.method_len) > GRPC_METHOD_LEN {
                return Err(DecodeError::StringTooLong {
                    kind,
                    len: span.method_len,
                    cap: GRPC_METHOD_LEN,
                });
            }
            Ok(span)
        })
        .map(GoSpanRecord::GrpcClient),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// The parts of a decoded span that a packed record holds: the header, the status and the
/// strings as (length, buffer) in the record's index order.
struct PackedFields<'a, const K: usize> {
    header: &'a mut SpanHeader,
    status_code: &'a mut u32,
    strings: [(&'a mut u16, &'a mut [u8]); K],
}

/// An [`HttpServerSpan`]'s packed parts, its strings in `HTTP_SERVER_*` index order.
fn http_server_fields(span: &mut HttpServerSpan) -> PackedFields<'_, HTTP_SERVER_STRINGS> {
    PackedFields {
        header: &mut span.header,
        status_code: &mut span.status_code,
        strings: [
            (&mut span.method_len, &mut span.method),
            (&mut span.path_len, &mut span.path),
            (&mut span.host_len, &mut span.host),
            (&mut span.remote_addr_len, &mut span.remote_addr),
            (&mut span.proto_len, &mut span.proto),
            (&mut span.route_len, &mut span.route),
        ],
    }
}

/// An [`HttpClientSpan`]'s packed parts, its strings in `HTTP_CLIENT_*` index order.
fn http_client_fields(span: &mut HttpClientSpan) -> PackedFields<'_, HTTP_CLIENT_STRINGS> {
    PackedFields {
        header: &mut span.header,
        status_code: &mut span.status_code,
        strings: [
            (&mut span.method_len, &mut span.method),
            (&mut span.scheme_len, &mut span.scheme),
            (&mut span.host_len, &mut span.host),
            (&mut span.path_len, &mut span.path),
            (&mut span.proto_len, &mut span.proto),
        ],
    }
}

/// Where the fixed fields of a packed record sit, the same in both packed records
/// ([`HttpServerRecord`](crate::go::HttpServerRecord),
/// [`HttpClientRecord`](crate::go::HttpClientRecord); asserted in `go`): the header, the
/// status right after it, then the string lengths.
const PACKED_STATUS_AT: usize = size_of::<SpanHeader>();
const PACKED_LENS_AT: usize = PACKED_STATUS_AT + 4;

/// Decodes a packed record (fixed fields, then `K` strings back to back from `strings_offset`)
/// into its span type.
fn decode_packed<S: aya::Pod, const K: usize>(
    bytes: &[u8],
    kind: u32,
    strings_offset: usize,
    fields: fn(&mut S) -> PackedFields<'_, K>,
) -> Result<S, DecodeError> {
    if bytes.len() < strings_offset {
        return Err(DecodeError::Truncated {
            kind,
            len: bytes.len(),
            need: strings_offset,
        });
    }
    // SAFETY: all-zero bytes are a valid `S: Pod`.
    let mut span: S = unsafe { core::mem::zeroed() };
    let parts = fields(&mut span);
    *parts.header = read_prefix(bytes, kind)?;
    *parts.status_code = read_prefix(&bytes[PACKED_STATUS_AT..], kind)?;
    let lens: [u16; K] = read_prefix(&bytes[PACKED_LENS_AT..], kind)?;
    let mut at = strings_offset;
    for ((len_field, buffer), len) in parts.strings.into_iter().zip(lens) {
        let n = usize::from(len);
        if n > buffer.len() {
            return Err(DecodeError::StringTooLong {
                kind,
                len,
                cap: buffer.len(),
            });
        }
        let Some(value) = bytes.get(at..at + n) else {
            return Err(DecodeError::Truncated {
                kind,
                len: bytes.len(),
                need: at + n,
            });
        };
        buffer[..n].copy_from_slice(value);
        *len_field = len;
        at += n;
    }
    Ok(span)
}

/// The inverse of [`decode_packed`]: `span`'s fixed fields, then its strings back to back
/// (each cut to its buffer, as the probes cap them).
fn pack_packed<S: Copy, const K: usize>(
    span: &S,
    strings_offset: usize,
    fields: fn(&mut S) -> PackedFields<'_, K>,
) -> RecordBytes {
    let mut span = *span;
    let parts = fields(&mut span);
    let mut out = RecordBytes {
        bytes: [0; GO_SPAN_RECORD_MAX],
        len: 0,
    };
    out.bytes[..PACKED_STATUS_AT].copy_from_slice(bytes_of(parts.header));
    out.bytes[PACKED_STATUS_AT..PACKED_LENS_AT].copy_from_slice(&parts.status_code.to_ne_bytes());
    let mut end = strings_offset;
    for (index, (len, buffer)) in parts.strings.into_iter().enumerate() {
        let n = usize::from(*len).min(buffer.len());
        out.bytes[end..end + n].copy_from_slice(&buffer[..n]);
        let len_at = PACKED_LENS_AT + 2 * index;
        out.bytes[len_at..len_at + 2].copy_from_slice(&(n as u16).to_ne_bytes());
        end += n;
    }
    out.len = end;
    out
}

/// Reads a record that ends after its last field's bytes (`tail_offset` plus the length
/// `tail_len` gives, at most `cap`): the part of `T` not sent reads as zeros.
fn read_trimmed<T: aya::Pod>(
    bytes: &[u8],
    kind: u32,
    tail_offset: usize,
    cap: usize,
    tail_len: impl Fn(&T) -> u16,
) -> Result<T, DecodeError> {
    if bytes.len() < tail_offset {
        return Err(DecodeError::Truncated {
            kind,
            len: bytes.len(),
            need: tail_offset,
        });
    }
    let sent = bytes.len().min(size_of::<T>());
    // SAFETY: all-zero bytes are a valid `T: Pod`.
    let mut value: T = unsafe { core::mem::zeroed() };
    // SAFETY: `sent <= size_of::<T>()` bytes into `value`, from `bytes`, which has them; any
    // bit pattern is a valid `T: Pod`.
    unsafe {
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), (&raw mut value).cast::<u8>(), sent);
    }
    let len = tail_len(&value);
    if usize::from(len) > cap {
        return Err(DecodeError::StringTooLong { kind, len, cap });
    }
    let need = tail_offset + usize::from(len);
    if bytes.len() < need {
        return Err(DecodeError::Truncated {
            kind,
            len: bytes.len(),
            need,
        });
    }
    Ok(value)
}

/// A record as the probes submit it: at most the largest record's bytes.
#[derive(Clone, Copy)]
pub struct RecordBytes {
    bytes: [u8; GO_SPAN_RECORD_MAX],
    len: usize,
}

impl RecordBytes {
    fn of<T: aya::Pod>(record: &T, len: usize) -> Self {
        let mut bytes = [0; GO_SPAN_RECORD_MAX];
        let len = len.min(size_of::<T>());
        bytes[..len].copy_from_slice(&bytes_of(record)[..len]);
        Self { bytes, len }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// The bytes the probes submit for `record` (native endian, `#[repr(C)]` order, each record
/// cut after its last string; lengths past their buffers clamped as the probes cap them): the
/// inverse of [`decode_go_span`], for code that synthesizes ring-buffer records (tests,
/// benchmarks).
pub fn pack_go_span(record: &GoSpanRecord) -> RecordBytes {
    match record {
        GoSpanRecord::HttpServer(span) => {
            pack_packed(span, HTTP_SERVER_STRINGS_OFFSET, http_server_fields)
        }
        GoSpanRecord::HttpClient(span) => {
            pack_packed(span, HTTP_CLIENT_STRINGS_OFFSET, http_client_fields)
        }
        GoSpanRecord::Db(span) => {
            let mut span = *span;
            span.query_len = span.query_len.min(DB_QUERY_LEN as u16);
            RecordBytes::of(&span, DB_QUERY_OFFSET + usize::from(span.query_len))
        }
        GoSpanRecord::GrpcServer(span) => {
            let mut span = *span;
            span.method_len = span.method_len.min(GRPC_METHOD_LEN as u16);
            let len = GRPC_SERVER_METHOD_OFFSET + usize::from(span.method_len);
            RecordBytes::of(&span, len)
        }
        GoSpanRecord::GrpcClient(span) => {
            let mut span = *span;
            span.method_len = span.method_len.min(GRPC_METHOD_LEN as u16);
            span.target_len = span.target_len.min(GRPC_TARGET_LEN as u16);
            let len = GRPC_CLIENT_TARGET_OFFSET + usize::from(span.target_len);
            RecordBytes::of(&span, len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::go::HttpServerRecord;
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
        // The probe sends the record up to its last argument byte.
        exec.args[..8].copy_from_slice(b"true\0-v\0");
        exec.args_len = 8;
        let sent = &bytes_of(&exec)[..EXEC_ARGS_OFFSET + 8];
        assert_eq!(decode_record(sent).unwrap(), LifecycleRecord::Exec(exec));
        assert!(matches!(
            decode_record(&sent[..sent.len() - 1]),
            Err(DecodeError::Truncated { kind: PROCESS_EXEC, need, .. }) if need == sent.len()
        ));
        exec.args_len = ARGS_LEN as u16 + 1;
        assert!(matches!(
            decode_record(bytes_of(&exec)),
            Err(DecodeError::StringTooLong {
                kind: PROCESS_EXEC,
                ..
            })
        ));
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

    fn span_header(kind: u32) -> crate::go::SpanHeader {
        crate::go::SpanHeader {
            kind,
            pid: 9,
            flags: 0,
            reserved: 0,
            start_boot_ns: 1,
            end_boot_ns: 2,
            goroutine: 0xc000,
            context: crate::go::SpanContext::default(),
            parent: crate::go::SpanContext::default(),
        }
    }

    fn set(buffer: &mut [u8], len: &mut u16, value: &[u8]) {
        buffer[..value.len()].copy_from_slice(value);
        *len = value.len() as u16;
    }

    fn server_span() -> HttpServerSpan {
        // SAFETY: all-zero bytes are a valid HttpServerSpan (plain integers and arrays).
        let mut span: HttpServerSpan = unsafe { core::mem::zeroed() };
        span.header = span_header(GO_SPAN_HTTP_SERVER);
        span.status_code = 204;
        set(&mut span.method, &mut span.method_len, b"GET");
        set(&mut span.path, &mut span.path_len, b"/users/7");
        set(&mut span.route, &mut span.route_len, b"/users/{id}");
        set(&mut span.host, &mut span.host_len, b"api:8080");
        set(
            &mut span.remote_addr,
            &mut span.remote_addr_len,
            b"10.0.0.2:5123",
        );
        set(&mut span.proto, &mut span.proto_len, b"HTTP/1.1");
        span
    }

    /// The ring bytes of `record`.
    fn packed(record: GoSpanRecord) -> RecordBytes {
        pack_go_span(&record)
    }

    #[test]
    fn packed_server_records_carry_only_their_strings_and_decode_back() {
        let span = server_span();
        let record = packed(GoSpanRecord::HttpServer(span));
        let bytes = record.as_slice();
        let strings = 3 + 8 + 8 + 13 + 8 + 11;
        assert_eq!(bytes.len(), HTTP_SERVER_STRINGS_OFFSET + strings);
        // Index order: method, path, host, remote address, proto, route.
        assert_eq!(
            &bytes[HTTP_SERVER_STRINGS_OFFSET..],
            b"GET/users/7api:808010.0.0.2:5123HTTP/1.1/users/{id}"
        );
        assert_eq!(decode_go_span(bytes), Ok(GoSpanRecord::HttpServer(span)));
        // Bytes after the last string (a probe cutting nothing) are ignored.
        let mut longer = [0xaa; GO_SPAN_RECORD_MAX];
        longer[..bytes.len()].copy_from_slice(bytes);
        assert_eq!(decode_go_span(&longer), Ok(GoSpanRecord::HttpServer(span)));
    }

    #[test]
    fn packed_client_records_decode_back() {
        // SAFETY: all-zero bytes are a valid HttpClientSpan.
        let mut span: HttpClientSpan = unsafe { core::mem::zeroed() };
        span.header = span_header(GO_SPAN_HTTP_CLIENT);
        span.status_code = 503;
        set(&mut span.method, &mut span.method_len, b"POST");
        set(&mut span.scheme, &mut span.scheme_len, b"http");
        set(&mut span.host, &mut span.host_len, b"backend:80");
        set(
            &mut span.path,
            &mut span.path_len,
            &[b'p'; crate::go::HTTP_PATH_LEN],
        );
        let record = packed(GoSpanRecord::HttpClient(span));
        assert_eq!(
            record.as_slice().len(),
            HTTP_CLIENT_STRINGS_OFFSET + 4 + 4 + 10 + crate::go::HTTP_PATH_LEN
        );
        assert_eq!(
            decode_go_span(record.as_slice()),
            Ok(GoSpanRecord::HttpClient(span))
        );
    }

    #[test]
    fn db_and_grpc_records_end_after_their_last_string() {
        // SAFETY: all-zero bytes are valid DbSpan, GrpcServerSpan and GrpcClientSpan values.
        let (mut db, mut server, mut client): (DbSpan, GrpcServerSpan, GrpcClientSpan) =
            unsafe { core::mem::zeroed() };
        db.header = span_header(GO_SPAN_DB);
        db.db_system = crate::go::DB_SYSTEM_POSTGRESQL;
        set(&mut db.query, &mut db.query_len, b"SELECT 1");
        server.header = span_header(GO_SPAN_GRPC_SERVER);
        server.peer_ip[..4].copy_from_slice(&[10, 0, 0, 2]);
        server.peer_ip_len = 4;
        set(&mut server.method, &mut server.method_len, b"/pkg.Svc/Get");
        client.header = span_header(GO_SPAN_GRPC_CLIENT);
        set(&mut client.method, &mut client.method_len, b"/pkg.Svc/Get");
        set(
            &mut client.target,
            &mut client.target_len,
            b"dns:///svc:50051",
        );
        for (record, len) in [
            (GoSpanRecord::Db(db), DB_QUERY_OFFSET + 8),
            (
                GoSpanRecord::GrpcServer(server),
                GRPC_SERVER_METHOD_OFFSET + 12,
            ),
            (
                GoSpanRecord::GrpcClient(client),
                GRPC_CLIENT_TARGET_OFFSET + 16,
            ),
        ] {
            let bytes = packed(record);
            let bytes = bytes.as_slice();
            assert_eq!(bytes.len(), len, "{record:?}");
            assert_eq!(decode_go_span(bytes), Ok(record));
            assert!(
                matches!(
                    decode_go_span(&bytes[..len - 1]),
                    Err(DecodeError::Truncated { need, .. }) if need == len
                ),
                "{record:?}"
            );
        }
        // Lengths past their buffers are refused, not clamped.
        db.query_len = DB_QUERY_LEN as u16 + 1;
        assert!(matches!(
            decode_go_span(bytes_of(&db)),
            Err(DecodeError::StringTooLong {
                kind: GO_SPAN_DB,
                ..
            })
        ));
        client.method_len = GRPC_METHOD_LEN as u16 + 1;
        assert!(matches!(
            decode_go_span(bytes_of(&client)),
            Err(DecodeError::StringTooLong {
                kind: GO_SPAN_GRPC_CLIENT,
                ..
            })
        ));
    }

    #[test]
    fn packed_records_with_lengths_beyond_their_bytes_or_buffers_are_refused() {
        let record = packed(GoSpanRecord::HttpServer(server_span()));
        let len = record.as_slice().len();
        let mut wire = [0u8; GO_SPAN_RECORD_MAX];
        wire[..len].copy_from_slice(record.as_slice());
        for cut in [0, 4, HTTP_SERVER_STRINGS_OFFSET - 1, len - 1] {
            assert!(
                matches!(
                    decode_go_span(&wire[..cut]),
                    Err(DecodeError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
        let lens_at = core::mem::offset_of!(HttpServerRecord, lens);
        let set_len = |wire: &mut [u8], index: usize, len: u16| {
            let at = lens_at + 2 * index;
            wire[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        };
        // A method length past the method buffer, though the area would hold it.
        set_len(
            &mut wire,
            crate::go::HTTP_SERVER_METHOD,
            crate::go::HTTP_METHOD_LEN as u16 + 1,
        );
        assert_eq!(
            decode_go_span(&wire),
            Err(DecodeError::StringTooLong {
                kind: GO_SPAN_HTTP_SERVER,
                len: crate::go::HTTP_METHOD_LEN as u16 + 1,
                cap: crate::go::HTTP_METHOD_LEN,
            })
        );
        // Lengths that each fit their buffer but together run past the record.
        for (index, len) in [16, 256, 128, 64, 16, 128].into_iter().enumerate() {
            set_len(&mut wire, index, len);
        }
        assert!(matches!(
            decode_go_span(&wire[..len]),
            Err(DecodeError::Truncated { .. })
        ));
        wire[..4].copy_from_slice(&99u32.to_ne_bytes());
        assert_eq!(decode_go_span(&wire), Err(DecodeError::UnknownKind(99)));
    }
}
