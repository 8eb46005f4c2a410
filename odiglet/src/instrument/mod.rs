//! eBPF instrumentation of Go processes: loads the Go probe object once, attaches its uprobes
//! to each instrumented process at the function entries and RETs that Go binary analysis
//! found, and hands per-process struct offsets to the probes through a map.
//!
//! What to instrument (which processes, which libraries) is decided upstream; this module owns
//! all aya attach state and gives the span ring buffer to the pipeline once. [`LIBRARIES`]
//! names the libraries as users configure them (`disabledLibraries`).

mod libraries;
mod probes;
mod targets;
mod uprobe_multi;

pub use libraries::{LIBRARIES, library_bits};
pub use probes::{
    AttachError, ClosingLinks, FunctionOffsets, GoCounters, GoProbes, ProcessTargets,
    ReleasedLinks, UprobeLinks,
};
pub use targets::{
    ALL_LIBRARIES, ResolvedTargets, TargetError, resolve as resolve_targets, skipped_as_absent,
};

/// `net/http` server entry point: runs the handler for one request.
pub const HTTP_SERVER_FUNCTION: &str = "net/http.serverHandler.ServeHTTP";
/// `net/http` client round trip.
pub const HTTP_CLIENT_FUNCTION: &str = "net/http.(*Transport).roundTrip";
/// Sends a client request on a chosen connection: where its ports become known.
pub const CONNECTION_FUNCTION: &str = "net/http.(*persistConn).roundTrip";
/// `database/sql`: every query and exec of `DB`, `Conn` and `Tx`, with the statement text.
pub const SQL_QUERY_FUNCTION: &str = "database/sql.(*DB).queryDC";
pub const SQL_EXEC_FUNCTION: &str = "database/sql.(*DB).execDC";
/// `database/sql`: every use of a prepared statement, whichever `DB`, `Conn` or `Tx` made it.
pub const SQL_STMT_QUERY_FUNCTION: &str = "database/sql.(*Stmt).QueryContext";
pub const SQL_STMT_EXEC_FUNCTION: &str = "database/sql.(*Stmt).ExecContext";
/// gRPC server: runs one stream's handler.
pub const GRPC_SERVER_FUNCTION: &str = "google.golang.org/grpc.(*Server).handleStream";
/// gRPC server: writes a stream's status (on the handler's goroutine).
pub const GRPC_STATUS_FUNCTION: &str =
    "google.golang.org/grpc/internal/transport.(*http2Server).WriteStatus";
/// gRPC server: decodes a new stream's HEADERS (its metadata carries `traceparent`).
pub const GRPC_HEADERS_FUNCTION: &str =
    "google.golang.org/grpc/internal/transport.(*http2Server).operateHeaders";
/// gRPC client: one unary call.
pub const GRPC_CLIENT_FUNCTION: &str = "google.golang.org/grpc.(*ClientConn).Invoke";
/// gRPC client: opens the call's stream on a chosen transport (where its ports become known).
pub const GRPC_STREAM_FUNCTION: &str =
    "google.golang.org/grpc/internal/transport.(*http2Client).NewStream";
