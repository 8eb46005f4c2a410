//! Go instrumentation: span records the Go probes emit, the per-process struct offsets user
//! space hands them, and the sizes both sides agree on.
//!
//! Strings are copied with an explicit length and a cap per field; a length equal to the cap
//! means the value may have been cut (`SPAN_FLAG_TRUNCATED`). A record on the ring carries
//! only the bytes it uses: the `net/http` probes submit packed records ([`HttpServerRecord`],
//! [`HttpClientRecord`]: the strings back to back, the record cut after the last), and the
//! `database/sql` and gRPC records end after their last string ([`DbSpan`],
//! [`GrpcServerSpan`], [`GrpcClientSpan`]). A typical request's span takes about 200 bytes of
//! the ring rather than up to 728; user space decodes records into the fixed-buffer span types.

/// `SpanHeader::kind`: a `net/http` server request (`serverHandler.ServeHTTP`).
pub const GO_SPAN_HTTP_SERVER: u32 = 1;
/// `SpanHeader::kind`: a `net/http` client request (`(*Transport).roundTrip`).
pub const GO_SPAN_HTTP_CLIENT: u32 = 2;
/// `SpanHeader::kind`: a `database/sql` query or exec (`(*DB).queryDC`, `(*DB).execDC`).
pub const GO_SPAN_DB: u32 = 3;
/// `SpanHeader::kind`: a gRPC server call (`(*Server).handleStream`).
pub const GO_SPAN_GRPC_SERVER: u32 = 4;
/// `SpanHeader::kind`: a gRPC unary client call (`(*ClientConn).Invoke`).
pub const GO_SPAN_GRPC_CLIENT: u32 = 5;

pub const HTTP_METHOD_LEN: usize = 16;
pub const HTTP_PATH_LEN: usize = 256;
pub const HTTP_ROUTE_LEN: usize = 128;
pub const HTTP_HOST_LEN: usize = 128;
pub const HTTP_ADDR_LEN: usize = 64;
pub const HTTP_PROTO_LEN: usize = 16;
pub const HTTP_SCHEME_LEN: usize = 16;
/// Bytes of SQL kept: enough for the statement's shape, which is all the span shows.
pub const DB_QUERY_LEN: usize = 512;
/// Bytes of a gRPC full method (`/package.Service/Method`) and of a client's dial target.
pub const GRPC_METHOD_LEN: usize = 128;
pub const GRPC_TARGET_LEN: usize = 128;
/// Bytes of a peer IP (`net.IP`: 4 or 16).
pub const IP_LEN: usize = 16;

/// `SpanHeader::flags`: `parent` is set.
pub const SPAN_FLAG_HAS_PARENT: u32 = 1 << 0;
/// `SpanHeader::flags`: the parent came from another process (an incoming `traceparent`).
pub const SPAN_FLAG_PARENT_REMOTE: u32 = 1 << 1;
/// `SpanHeader::flags`: at least one string field was cut to its buffer.
pub const SPAN_FLAG_TRUNCATED: u32 = 1 << 2;
/// `SpanHeader::flags`: the probe returned an error (client: a non-nil `error`).
pub const SPAN_FLAG_ERROR: u32 = 1 << 3;

/// `SpanHeader::flags`: the `database/sql` call was an exec (`execDC`), not a query.
pub const SPAN_FLAG_DB_EXEC: u32 = 1 << 4;

/// `DbSpan::db_system` (and `GoOffsets::db_system`): the SQL driver linked into the binary,
/// found by user space from its symbols. `DB_SYSTEM_OTHER` when unknown or ambiguous.
pub const DB_SYSTEM_OTHER: u32 = 0;
pub const DB_SYSTEM_POSTGRESQL: u32 = 1;
pub const DB_SYSTEM_MYSQL: u32 = 2;
pub const DB_SYSTEM_SQLITE: u32 = 3;

/// gRPC status codes are 0..=16; anything else read from memory is reported as UNKNOWN.
pub const GRPC_STATUS_MAX: u32 = 16;
pub const GRPC_STATUS_UNKNOWN: u32 = 2;

/// A field absent from this binary's Go or module version (`GoOffsets`).
pub const OFFSET_NONE: u32 = u32::MAX;

/// W3C trace context of one span.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub trace_flags: u8,
    pub reserved: [u8; 7],
}

/// Fields common to every Go span record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanHeader {
    /// `GO_SPAN_*`.
    pub kind: u32,
    /// Host PID (thread-group id) of the instrumented process.
    pub pid: u32,
    /// `SPAN_FLAG_*`.
    pub flags: u32,
    pub reserved: u32,
    /// `bpf_ktime_get_boot_ns()` at entry and at return.
    pub start_boot_ns: u64,
    pub end_boot_ns: u64,
    /// The goroutine (`g` pointer) that ran the call.
    pub goroutine: u64,
    pub context: SpanContext,
    /// Meaningful when `SPAN_FLAG_HAS_PARENT` is set.
    pub parent: SpanContext,
}

/// A `net/http` server span, decoded (the probe submits an [`HttpServerRecord`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpServerSpan {
    pub header: SpanHeader,
    /// `response.status`; 0 when the handler never wrote a header (Go then sends 200).
    pub status_code: u32,
    pub method_len: u16,
    pub path_len: u16,
    pub route_len: u16,
    pub host_len: u16,
    pub remote_addr_len: u16,
    pub proto_len: u16,
    pub method: [u8; HTTP_METHOD_LEN],
    /// `Request.URL.Path`.
    pub path: [u8; HTTP_PATH_LEN],
    /// The `ServeMux` pattern (`Request.Pattern`, Go >= 1.22), empty before.
    pub route: [u8; HTTP_ROUTE_LEN],
    /// `Request.Host` (`host[:port]`).
    pub host: [u8; HTTP_HOST_LEN],
    /// `Request.RemoteAddr` (`ip:port`).
    pub remote_addr: [u8; HTTP_ADDR_LEN],
    /// `Request.Proto` (`HTTP/1.1`).
    pub proto: [u8; HTTP_PROTO_LEN],
}

/// A `net/http` client span, decoded (the probe submits an [`HttpClientRecord`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpClientSpan {
    pub header: SpanHeader,
    /// `Response.StatusCode`; 0 when the round trip failed.
    pub status_code: u32,
    pub method_len: u16,
    pub scheme_len: u16,
    pub host_len: u16,
    pub path_len: u16,
    pub proto_len: u16,
    pub reserved: u16,
    pub method: [u8; HTTP_METHOD_LEN],
    /// `Request.URL.Scheme`.
    pub scheme: [u8; HTTP_SCHEME_LEN],
    /// `Request.URL.Host` (`host[:port]`).
    pub host: [u8; HTTP_HOST_LEN],
    /// `Request.URL.Path`.
    pub path: [u8; HTTP_PATH_LEN],
    /// `Response.Proto`, when there is a response.
    pub proto: [u8; HTTP_PROTO_LEN],
}

/// Strings of an [`HttpServerRecord`], by index: the order its string area holds them in.
pub const HTTP_SERVER_METHOD: usize = 0;
pub const HTTP_SERVER_PATH: usize = 1;
pub const HTTP_SERVER_HOST: usize = 2;
pub const HTTP_SERVER_REMOTE_ADDR: usize = 3;
pub const HTTP_SERVER_PROTO: usize = 4;
/// Last: the route is read at the return, after the others.
pub const HTTP_SERVER_ROUTE: usize = 5;
pub const HTTP_SERVER_STRINGS: usize = 6;
pub const HTTP_SERVER_STRINGS_LEN: usize = HTTP_METHOD_LEN
    + HTTP_PATH_LEN
    + HTTP_HOST_LEN
    + HTTP_ADDR_LEN
    + HTTP_PROTO_LEN
    + HTTP_ROUTE_LEN;

/// A `net/http` server span as the probe submits it: [`HttpServerSpan`]'s fields with its
/// strings packed. The record on the ring ends after the last string's bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpServerRecord {
    pub header: SpanHeader,
    pub status_code: u32,
    /// Bytes of each string, indexed by `HTTP_SERVER_*`.
    pub lens: [u16; HTTP_SERVER_STRINGS],
    /// The strings back to back in index order, each cut to its `HttpServerSpan` buffer.
    pub strings: [u8; HTTP_SERVER_STRINGS_LEN],
}

/// Strings of an [`HttpClientRecord`], by index.
pub const HTTP_CLIENT_METHOD: usize = 0;
pub const HTTP_CLIENT_SCHEME: usize = 1;
pub const HTTP_CLIENT_HOST: usize = 2;
pub const HTTP_CLIENT_PATH: usize = 3;
/// Last: the response's proto is read at the return.
pub const HTTP_CLIENT_PROTO: usize = 4;
pub const HTTP_CLIENT_STRINGS: usize = 5;
pub const HTTP_CLIENT_STRINGS_LEN: usize =
    HTTP_METHOD_LEN + HTTP_SCHEME_LEN + HTTP_HOST_LEN + HTTP_PATH_LEN + HTTP_PROTO_LEN;

/// A `net/http` client span as the probe submits it: [`HttpClientSpan`]'s fields with its
/// strings packed, the record ending after the last string's bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpClientRecord {
    pub header: SpanHeader,
    pub status_code: u32,
    /// Bytes of each string, indexed by `HTTP_CLIENT_*`.
    pub lens: [u16; HTTP_CLIENT_STRINGS],
    pub reserved: u16,
    pub strings: [u8; HTTP_CLIENT_STRINGS_LEN],
}

/// Where a packed record's strings start: the bytes a record has before its strings.
pub const HTTP_SERVER_STRINGS_OFFSET: usize = core::mem::offset_of!(HttpServerRecord, strings);
pub const HTTP_CLIENT_STRINGS_OFFSET: usize = core::mem::offset_of!(HttpClientRecord, strings);
/// The bytes of a [`DbSpan`] record before its query (the record ends after the query).
pub const DB_QUERY_OFFSET: usize = core::mem::offset_of!(DbSpan, query);
/// The bytes of a [`GrpcServerSpan`] record before its method, of a [`GrpcClientSpan`] before
/// its target: each record ends after that string.
pub const GRPC_SERVER_METHOD_OFFSET: usize = core::mem::offset_of!(GrpcServerSpan, method);
pub const GRPC_CLIENT_TARGET_OFFSET: usize = core::mem::offset_of!(GrpcClientSpan, target);
/// The largest span record.
pub const GO_SPAN_RECORD_MAX: usize = size_of::<HttpServerRecord>();

/// A `database/sql` client span: one query or exec. Its record on the ring ends after the
/// query's bytes ([`DB_QUERY_OFFSET`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DbSpan {
    pub header: SpanHeader,
    /// `DB_SYSTEM_*`.
    pub db_system: u32,
    pub query_len: u16,
    pub reserved: u16,
    /// The statement as the application passed it (literals are removed in user space).
    pub query: [u8; DB_QUERY_LEN],
}

/// A gRPC server span.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcServerSpan {
    pub header: SpanHeader,
    /// The status the server wrote (`WriteStatus`); 0 (OK) when none was seen.
    pub status_code: u32,
    pub method_len: u16,
    /// 4 or 16 when the peer's IP was read, else 0.
    pub peer_ip_len: u16,
    pub peer_port: u32,
    pub reserved: u32,
    pub peer_ip: [u8; IP_LEN],
    /// `/package.Service/Method`. Last: the record on the ring ends after its bytes.
    pub method: [u8; GRPC_METHOD_LEN],
}

/// A gRPC unary client span.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GrpcClientSpan {
    pub header: SpanHeader,
    /// From the returned status error; 0 (OK) when the call succeeded.
    pub status_code: u32,
    pub method_len: u16,
    pub target_len: u16,
    pub method: [u8; GRPC_METHOD_LEN],
    /// `ClientConn.target`, the dial target (`host:port`, `dns:///host:port`, ...). Last: the
    /// record on the ring ends after its bytes.
    pub target: [u8; GRPC_TARGET_LEN],
}

/// Byte offsets of the Go struct fields the probes read, for one process. `OFFSET_NONE`
/// marks a field its Go version does not have. Written by user space into a map keyed by PID.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoOffsets {
    // net/http.Request
    pub request_method: u32,
    pub request_url: u32,
    pub request_proto: u32,
    pub request_host: u32,
    pub request_remote_addr: u32,
    /// `Request.Pattern string` (Go >= 1.23).
    pub request_pattern: u32,
    /// `Request.pat *pattern` (Go 1.22 only) and `pattern.str string` behind it.
    pub request_pat: u32,
    pub pattern_str: u32,
    // net/url.URL
    pub url_scheme: u32,
    pub url_host: u32,
    pub url_path: u32,
    // net/http.response (the server's ResponseWriter)
    pub response_status: u32,
    // net/http.Response (the client's result)
    pub client_response_status_code: u32,
    pub client_response_proto: u32,
    // Outgoing propagation: the connection a client request goes out on.
    /// `net/http.persistConn.conn` (a `net.Conn` interface).
    pub persist_conn_conn: u32,
    /// `net.TCPConn`'s embedded `conn.fd` (`*netFD`).
    pub tcp_conn_fd: u32,
    /// `net.netFD.laddr` and `raddr` (`net.Addr` interfaces holding `*TCPAddr`).
    pub net_fd_laddr: u32,
    pub net_fd_raddr: u32,
    /// `net.TCPAddr.Port`.
    pub tcp_addr_port: u32,
    /// `net.TCPAddr.IP` (a `[]byte`).
    pub tcp_addr_ip: u32,
    /// `database/sql.Stmt.query`, a prepared statement's text.
    pub sql_stmt_query: u32,
    // google.golang.org/grpc (absent unless the binary links it)
    /// `transport.Stream.id` and `.method`.
    pub grpc_stream_id: u32,
    pub grpc_stream_method: u32,
    /// `transport.http2Server.remoteAddr` (a `net.Addr` interface).
    pub grpc_server_remote_addr: u32,
    /// `internal/status.Status.s` and `internal/status.Error.e` (`*spb.Status` both).
    pub grpc_status_proto: u32,
    pub grpc_error_proto: u32,
    /// `genproto/googleapis/rpc/status.Status.Code`.
    pub rpc_status_code: u32,
    /// `grpc.ClientConn.target`.
    pub grpc_client_conn_target: u32,
    /// `transport.http2Client.conn` (a `net.Conn` interface): outgoing propagation.
    pub grpc_client_transport_conn: u32,
    /// `http2.MetaHeadersFrame.HeadersFrame` (a pointer), `.Fields` (a slice), and
    /// `http2.HeadersFrame.FrameHeader` + `FrameHeader.StreamID`: incoming metadata.
    pub http2_meta_headers_frame: u32,
    pub http2_meta_fields: u32,
    pub http2_headers_frame_header: u32,
    pub http2_frame_stream_id: u32,
    // Incoming `traceparent`: `Request.Header` (a `map[string][]string`) and the runtime's map
    // internals. Before Go 1.24 (`runtime.hmap`):
    pub request_header: u32,
    pub hmap_flags: u32,
    pub hmap_b: u32,
    pub hmap_buckets: u32,
    pub hmap_oldbuckets: u32,
    /// Go >= 1.24 swiss tables: `internal/runtime/maps.Map.dirPtr` and `.dirLen`,
    /// `maps.table.groups` and `maps.groupsReference.data` and `.lengthMask`.
    pub swiss_dir_ptr: u32,
    pub swiss_dir_len: u32,
    pub swiss_table_groups: u32,
    pub swiss_groups_data: u32,
    pub swiss_groups_length_mask: u32,
    /// `DB_SYSTEM_*` of the SQL driver linked in (not an offset: copied into `DbSpan`).
    pub db_system: u32,
    /// `GO_LIBRARY_*` bits of the instrumentation enabled for this process.
    pub enabled_libraries: u32,
}

/// Key of per-call state: a goroutine of a process. `g` pointers are reused after a goroutine
/// exits, which is harmless here because a call's state lives only from entry to return.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GoroutineKey {
    pub pid: u32,
    pub reserved: u32,
    pub goroutine: u64,
}

/// A server call in flight: the span being built and the pointers its return probe reads.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerCall {
    pub span: HttpServerRecord,
    /// `*http.Request`.
    pub request: u64,
    /// The `*http.response` behind the `ResponseWriter` interface.
    pub response: u64,
}

/// A client call in flight.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientCall {
    pub span: HttpClientRecord,
    /// `*http.Request`.
    pub request: u64,
}

/// `GoOffsets::enabled_libraries`: `net/http` server spans.
pub const GO_LIBRARY_HTTP_SERVER: u32 = 1 << 0;
/// `GoOffsets::enabled_libraries`: `net/http` client spans.
pub const GO_LIBRARY_HTTP_CLIENT: u32 = 1 << 1;
/// `GoOffsets::enabled_libraries`: `traceparent` injected into outgoing HTTP/1 requests.
pub const GO_LIBRARY_HTTP_PROPAGATION: u32 = 1 << 2;

/// `GoOffsets::enabled_libraries`: `database/sql` client spans.
pub const GO_LIBRARY_SQL: u32 = 1 << 3;
/// `GoOffsets::enabled_libraries`: gRPC server spans (with incoming `traceparent` metadata).
pub const GO_LIBRARY_GRPC_SERVER: u32 = 1 << 4;
/// `GoOffsets::enabled_libraries`: gRPC unary client spans.
pub const GO_LIBRARY_GRPC_CLIENT: u32 = 1 << 5;
/// `GoOffsets::enabled_libraries`: `traceparent` added to outgoing gRPC HEADERS frames.
pub const GO_LIBRARY_GRPC_PROPAGATION: u32 = 1 << 6;

/// `hpack.HeaderField` is `{Name, Value string; Sensitive bool}`: 40 bytes on 64-bit Go.
pub const HPACK_HEADER_FIELD_SIZE: u64 = 40;
/// Header fields of one incoming HEADERS frame searched for `traceparent`.
pub const GRPC_METADATA_SCAN_MAX: u32 = 32;

/// Bytes of the HPACK field added to an outgoing HEADERS frame: a literal without indexing
/// with a new name (`0x00`), the name's length and bytes, the value's length and bytes.
pub const TRACEPARENT_HPACK_LEN: usize = 1 + 1 + 11 + 1 + 55;

/// Outgoing requests waiting for their `traceparent`, keyed by connection ports
/// (`local << 16 | remote`, host order).
pub const GO_OUTGOING_MAX: u32 = 4096;

/// The connection key `sock_ops` files sockets under and the Go probe records contexts under.
pub const fn connection_key(local_port: u16, remote_port: u16) -> u32 {
    (local_port as u32) << 16 | remote_port as u32
}

/// Bytes of the header line injected: `traceparent: 00-<32 hex>-<16 hex>-<2 hex>\r\n`.
pub const TRACEPARENT_HEADER_LEN: usize = 70;

/// Index in `GO_COUNTERS`: spans lost because the ring buffer was full.
pub const GO_COUNTER_RINGBUF_FULL: u32 = 0;
/// Index: an entry probe found its goroutine already in flight (morestack re-entry).
pub const GO_COUNTER_DOUBLE_ENTRY: u32 = 1;
/// Index: a return probe found no matching entry (attached mid-call, or evicted).
pub const GO_COUNTER_MISSING_ENTRY: u32 = 2;
/// Index: user-memory reads that failed.
pub const GO_COUNTER_READ_FAILED: u32 = 3;
/// Index: `traceparent` headers injected into outgoing requests.
pub const GO_COUNTER_INJECTED: u32 = 4;
/// Index: outgoing requests that already carried a `traceparent` (left alone).
pub const GO_COUNTER_INJECT_SKIPPED: u32 = 5;
/// Index: injections that failed (not HTTP/1, buffer too short, helper errors).
pub const GO_COUNTER_INJECT_FAILED: u32 = 6;
/// Index: requests whose header map was larger than the probe searches (`HEADER_MAP_*`), with no
/// `traceparent` found in the part searched.
pub const GO_COUNTER_TRACEPARENT_UNSEARCHED: u32 = 7;
pub const GO_COUNTERS_LEN: u32 = 8;

// The layout of a `map[string][]string` (`http.Header`) entry container. The compiler builds it
// from the runtime's map ABI (8 entries per bucket or group; `string` 16 bytes, `[]string` 24)
// and names it only in synthesized DWARF types (`noalg.map.bucket[string][]string`,
// `noalg.map.group[string][]string`) that recent linkers often leave out; the goelf
// integration tests check these numbers against those types where a binary has them.

/// Offset of a map's entry count: `runtime.hmap.count` (Go < 1.24) and
/// `internal/runtime/maps.Map.used` (swiss tables) are both the struct's first field.
pub const GO_MAP_COUNT: u32 = 0;
/// Entries per bucket (Go < 1.24) or group (swiss tables).
pub const GO_MAP_SLOTS: usize = 8;
/// Bucket: `tophash [8]uint8`, `keys [8]string`, `elems [8][]string`, `overflow *bucket`.
pub const GO_BUCKET_KEYS: usize = 8;
pub const GO_BUCKET_ELEMS: usize = GO_BUCKET_KEYS + GO_MAP_SLOTS * 16;
pub const GO_BUCKET_OVERFLOW: usize = GO_BUCKET_ELEMS + GO_MAP_SLOTS * 24;
pub const GO_BUCKET_SIZE: usize = GO_BUCKET_OVERFLOW + 8;
/// Group: `ctrl uint64` (one byte per slot), then 8 slots of `{key string; elem []string}`.
pub const GO_GROUP_SLOTS_OFFSET: usize = 8;
pub const GO_GROUP_SLOT_ELEM: usize = 16;
pub const GO_GROUP_SLOT_SIZE: usize = GO_GROUP_SLOT_ELEM + 24;
pub const GO_GROUP_SIZE: usize = GO_GROUP_SLOTS_OFFSET + GO_MAP_SLOTS * GO_GROUP_SLOT_SIZE;

/// Bounds of the header-map search: bucket visits (main and overflow buckets, old buckets
/// during growth; 64 buckets hold about 400 headers at Go's load factor), and for swiss tables
/// the directory entries and groups visited (8 tables, 128 groups: 1024 slots).
pub const HEADER_MAP_BUCKETS_MAX: u32 = 64;
pub const HEADER_MAP_TABLES_MAX: u32 = 8;
pub const HEADER_MAP_GROUPS_MAX: u32 = 128;

/// Calls in flight at once per probe (LRU: goroutines that never return are evicted).
pub const GO_INFLIGHT_MAX: u32 = 4096;
/// Instrumented processes at once.
pub const GO_PROCESSES_MAX: u32 = 4096;

const _: () = assert!(core::mem::size_of::<SpanContext>() == 32);
const _: () = assert!(core::mem::size_of::<SpanHeader>() == 4 * 4 + 3 * 8 + 2 * 32);
const _: () = assert!(
    core::mem::size_of::<HttpServerSpan>()
        == 104
            + 4
            + 6 * 2
            + HTTP_METHOD_LEN
            + HTTP_PATH_LEN
            + HTTP_ROUTE_LEN
            + HTTP_HOST_LEN
            + HTTP_ADDR_LEN
            + HTTP_PROTO_LEN
);
const _: () = assert!(
    core::mem::size_of::<HttpClientSpan>()
        == 104
            + 4
            + 6 * 2
            + HTTP_METHOD_LEN
            + HTTP_SCHEME_LEN
            + HTTP_HOST_LEN
            + HTTP_PATH_LEN
            + HTTP_PROTO_LEN
);
const _: () = assert!(core::mem::size_of::<GoOffsets>() == 45 * 4);
const _: () = assert!(core::mem::size_of::<DbSpan>() == 104 + 8 + DB_QUERY_LEN);
const _: () =
    assert!(core::mem::size_of::<GrpcServerSpan>() == 104 + 16 + GRPC_METHOD_LEN + IP_LEN);
const _: () =
    assert!(core::mem::size_of::<GrpcClientSpan>() == 104 + 8 + GRPC_METHOD_LEN + GRPC_TARGET_LEN);
const _: () = assert!(core::mem::size_of::<DbSpan>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<GrpcServerSpan>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<GrpcClientSpan>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<GoroutineKey>() == 16);
const _: () =
    assert!(core::mem::size_of::<HttpServerRecord>() == 104 + 4 + 6 * 2 + HTTP_SERVER_STRINGS_LEN);
const _: () =
    assert!(core::mem::size_of::<HttpClientRecord>() == 104 + 4 + 6 * 2 + HTTP_CLIENT_STRINGS_LEN);
const _: () = assert!(core::mem::size_of::<HttpServerRecord>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<HttpClientRecord>().is_multiple_of(8));
// The decoder reads both packed records' fixed fields at the same places.
const _: () = assert!(
    core::mem::offset_of!(HttpServerRecord, status_code) == size_of::<SpanHeader>()
        && core::mem::offset_of!(HttpClientRecord, status_code) == size_of::<SpanHeader>()
        && core::mem::offset_of!(HttpServerRecord, lens) == size_of::<SpanHeader>() + 4
        && core::mem::offset_of!(HttpClientRecord, lens) == size_of::<SpanHeader>() + 4
);
const _: () = assert!(
    GO_SPAN_RECORD_MAX >= size_of::<HttpClientRecord>()
        && GO_SPAN_RECORD_MAX >= size_of::<DbSpan>()
        && GO_SPAN_RECORD_MAX >= size_of::<GrpcServerSpan>()
        && GO_SPAN_RECORD_MAX >= size_of::<GrpcClientSpan>()
);
const _: () =
    assert!(core::mem::size_of::<ServerCall>() == core::mem::size_of::<HttpServerRecord>() + 16);
const _: () =
    assert!(core::mem::size_of::<ClientCall>() == core::mem::size_of::<HttpClientRecord>() + 8);
const _: () = assert!(core::mem::size_of::<HttpServerSpan>().is_multiple_of(8));
const _: () = assert!(core::mem::size_of::<HttpClientSpan>().is_multiple_of(8));

#[cfg(feature = "user")]
mod pod {
    use super::{
        ClientCall, DbSpan, GoOffsets, GoroutineKey, GrpcClientSpan, GrpcServerSpan,
        HttpClientRecord, HttpClientSpan, HttpServerRecord, HttpServerSpan, ServerCall,
        SpanContext, SpanHeader,
    };

    // SAFETY: `#[repr(C)]`, integers and integer arrays only, no padding (sizes asserted
    // above), every bit pattern valid.
    unsafe impl aya::Pod for SpanContext {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SpanHeader {}
    // SAFETY: as above.
    unsafe impl aya::Pod for HttpServerSpan {}
    // SAFETY: as above.
    unsafe impl aya::Pod for HttpClientSpan {}
    // SAFETY: as above.
    unsafe impl aya::Pod for HttpServerRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for HttpClientRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for GoOffsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for GoroutineKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ServerCall {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ClientCall {}
    // SAFETY: as above.
    unsafe impl aya::Pod for DbSpan {}
    // SAFETY: as above.
    unsafe impl aya::Pod for GrpcServerSpan {}
    // SAFETY: as above.
    unsafe impl aya::Pod for GrpcClientSpan {}
}
