//! eBPF instrumentation of Go processes: loads the Go probe object once, attaches its uprobes
//! to each instrumented process at the function entries and RETs that Go binary analysis
//! found, and hands per-process struct offsets to the probes through a map.
//!
//! What to instrument (which processes, which libraries) is decided upstream; this module owns
//! all aya attach state and gives the span ring buffer to the pipeline once.

mod probes;
mod targets;

pub use probes::{AttachError, FunctionOffsets, GoCounters, GoProbes, ProcessTargets};
pub use targets::{ALL_LIBRARIES, ResolvedTargets, TargetError, resolve as resolve_targets};

/// `net/http` server entry point: runs the handler for one request.
pub const HTTP_SERVER_FUNCTION: &str = "net/http.serverHandler.ServeHTTP";
/// `net/http` client round trip.
pub const HTTP_CLIENT_FUNCTION: &str = "net/http.(*Transport).roundTrip";
/// Reads one header line; its result carries an incoming `traceparent`.
pub const HEADER_LINE_FUNCTION: &str = "net/textproto.(*Reader).readContinuedLineSlice";
/// Sends a client request on a chosen connection: where its ports become known.
pub const CONNECTION_FUNCTION: &str = "net/http.(*persistConn).roundTrip";
