//! From a process to what to attach: its executable's probe points and struct offsets (Go
//! binary analysis), narrowed to the libraries that are both wanted and possible. A library
//! that cannot be instrumented in a binary (function inlined or absent, offsets unknown,
//! version not supported) is skipped with its reason; the others go ahead.

use std::path::{Path, PathBuf};

use odiglet_common::go::{
    DB_SYSTEM_MYSQL, DB_SYSTEM_OTHER, DB_SYSTEM_POSTGRESQL, DB_SYSTEM_SQLITE,
    GO_LIBRARY_GRPC_CLIENT, GO_LIBRARY_GRPC_PROPAGATION, GO_LIBRARY_GRPC_SERVER,
    GO_LIBRARY_HTTP_CLIENT, GO_LIBRARY_HTTP_PROPAGATION, GO_LIBRARY_HTTP_SERVER, GO_LIBRARY_SQL,
    GoOffsets, OFFSET_NONE,
};

use super::{
    CONNECTION_FUNCTION, FunctionOffsets, GRPC_CLIENT_FUNCTION, GRPC_HEADERS_FUNCTION,
    GRPC_SERVER_FUNCTION, GRPC_STATUS_FUNCTION, GRPC_STREAM_FUNCTION, HTTP_CLIENT_FUNCTION,
    HTTP_SERVER_FUNCTION, ProcessTargets, SQL_EXEC_FUNCTION, SQL_QUERY_FUNCTION,
    SQL_STMT_EXEC_FUNCTION, SQL_STMT_QUERY_FUNCTION,
};
use crate::goelf::{self, GoElfError, GoModule, GoVersion, OffsetSource, ProbePoints};

/// Every Go library this build can instrument.
pub const ALL_LIBRARIES: u32 = GO_LIBRARY_HTTP_SERVER
    | GO_LIBRARY_HTTP_CLIENT
    | GO_LIBRARY_HTTP_PROPAGATION
    | GO_LIBRARY_SQL
    | GO_LIBRARY_GRPC_SERVER
    | GO_LIBRARY_GRPC_CLIENT
    | GO_LIBRARY_GRPC_PROPAGATION;

/// grpc-go releases from this one on split `transport.Stream` into client and server streams,
/// which the probes do not read yet.
const GRPC_UNSUPPORTED_FROM: GoVersion = GoVersion::new(1, 69, 0);

/// grpc-go releases from this one on pass a context before the frame to `operateHeaders`.
const GRPC_HEADERS_CONTEXT_FROM: GoVersion = GoVersion::new(1, 60, 0);

/// A function each SQL driver's connection type has (as the `database/sql` driver interfaces
/// need), and the `db.system.name` its presence means.
const SQL_DRIVERS: &[(&str, u32)] = &[
    (
        "github.com/lib/pq.(*conn).QueryContext",
        DB_SYSTEM_POSTGRESQL,
    ),
    (
        "github.com/jackc/pgx/v4/stdlib.(*Conn).QueryContext",
        DB_SYSTEM_POSTGRESQL,
    ),
    (
        "github.com/jackc/pgx/v5/stdlib.(*Conn).QueryContext",
        DB_SYSTEM_POSTGRESQL,
    ),
    (
        "github.com/go-sql-driver/mysql.(*mysqlConn).QueryContext",
        DB_SYSTEM_MYSQL,
    ),
    (
        "github.com/mattn/go-sqlite3.(*SQLiteConn).QueryContext",
        DB_SYSTEM_SQLITE,
    ),
    ("modernc.org/sqlite.(*conn).QueryContext", DB_SYSTEM_SQLITE),
];

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("pid {pid}: cannot analyze {}", exe.display())]
    Analysis {
        pid: u32,
        exe: PathBuf,
        #[source]
        source: GoElfError,
    },
    #[error("pid {pid}: none of the wanted Go libraries can be instrumented ({why})")]
    NothingToInstrument { pid: u32, why: String },
}

/// What can be attached to one Go process, and why some of what was wanted cannot.
#[derive(Clone, Debug)]
pub struct ResolvedTargets {
    pub targets: ProcessTargets,
    /// As the binary says, e.g. `go1.25.5`.
    pub go_version: String,
    pub offsets_source: OffsetSource,
    /// Wanted libraries left out, each with the reason (missing symbol or offsets).
    pub skipped: Vec<String>,
}

/// Resolves the targets of `pid` for the `wanted` libraries (`GO_LIBRARY_*` bits).
pub fn resolve(proc_root: &Path, pid: u32, wanted: u32) -> Result<ResolvedTargets, TargetError> {
    let exe = proc_root.join(pid.to_string()).join("exe");
    let analysis = |source| TargetError::Analysis {
        pid,
        exe: exe.clone(),
        source,
    };
    let resolved = goelf::go_offsets(&exe).map_err(analysis)?;
    let mut names = vec![
        HTTP_SERVER_FUNCTION,
        HTTP_CLIENT_FUNCTION,
        CONNECTION_FUNCTION,
        SQL_QUERY_FUNCTION,
        SQL_EXEC_FUNCTION,
        SQL_STMT_QUERY_FUNCTION,
        SQL_STMT_EXEC_FUNCTION,
        GRPC_SERVER_FUNCTION,
        GRPC_STATUS_FUNCTION,
        GRPC_HEADERS_FUNCTION,
        GRPC_CLIENT_FUNCTION,
        GRPC_STREAM_FUNCTION,
    ];
    names.extend(SQL_DRIVERS.iter().map(|(name, _)| *name));
    let points = goelf::probe_points(&exe, &names).map_err(analysis)?;
    let function = |name: &str| function(&points, name);
    let offsets = GoOffsets {
        db_system: db_system(&points),
        ..resolved.offsets
    };
    let o = &offsets;

    let mut plan = Plan {
        wanted,
        enabled: 0,
        skipped: Vec::new(),
    };
    let server = function(HTTP_SERVER_FUNCTION);
    let client = function(HTTP_CLIENT_FUNCTION);
    let connection = function(CONNECTION_FUNCTION);
    plan.consider(
        GO_LIBRARY_HTTP_SERVER,
        "net/http server",
        missing(
            &server,
            HTTP_SERVER_FUNCTION,
            &[o.request_method, o.response_status],
            OFFSETS_UNKNOWN,
        ),
    );
    plan.consider(
        GO_LIBRARY_HTTP_CLIENT,
        "net/http client",
        missing(
            &client,
            HTTP_CLIENT_FUNCTION,
            &[o.request_method, o.url_path],
            OFFSETS_UNKNOWN,
        ),
    );
    let http_propagation = if client.is_none() {
        Some("needs the net/http client".to_owned())
    } else {
        missing(
            &connection,
            CONNECTION_FUNCTION,
            &connection_fields(o, o.persist_conn_conn),
            OFFSETS_UNKNOWN,
        )
    };
    plan.consider(
        GO_LIBRARY_HTTP_PROPAGATION,
        "net/http traceparent propagation",
        http_propagation,
    );

    let (query, exec) = (function(SQL_QUERY_FUNCTION), function(SQL_EXEC_FUNCTION));
    let (stmt_query, stmt_exec) = (
        function(SQL_STMT_QUERY_FUNCTION),
        function(SQL_STMT_EXEC_FUNCTION),
    );
    // The linker drops whichever of these the program never calls.
    let sql_missing = [&query, &exec, &stmt_query, &stmt_exec]
        .iter()
        .all(|f| f.is_none())
        .then(|| {
            format!(
                "none of `{SQL_QUERY_FUNCTION}`, `{SQL_EXEC_FUNCTION}` and the `Stmt` \
                 methods is in the binary"
            )
        });
    plan.consider(GO_LIBRARY_SQL, "database/sql", sql_missing);
    let stmt_present = stmt_query.is_some() || stmt_exec.is_some();
    let stmt_unknown = o.sql_stmt_query == OFFSET_NONE;
    let (stmt_query, stmt_exec) = if stmt_unknown {
        (None, None)
    } else {
        (stmt_query, stmt_exec)
    };

    let grpc_gate = grpc_version_gate(&resolved.modules);
    let grpc_unknown = resolved
        .table_gaps
        .iter()
        .find(|(library, _)| *library == goelf::fields::GRPC_MODULE)
        .map_or(OFFSETS_UNKNOWN.to_owned(), |(_, why)| {
            format!("no DWARF, and {why}")
        });
    let grpc_server = function(GRPC_SERVER_FUNCTION);
    let grpc_status = function(GRPC_STATUS_FUNCTION);
    let grpc_client = function(GRPC_CLIENT_FUNCTION);
    let grpc_stream = function(GRPC_STREAM_FUNCTION);
    let status_fields = [o.grpc_status_proto, o.rpc_status_code];
    plan.consider(
        GO_LIBRARY_GRPC_SERVER,
        "google.golang.org/grpc server",
        grpc_gate.clone().or_else(|| {
            missing(
                &grpc_server,
                GRPC_SERVER_FUNCTION,
                &[o.grpc_stream_id, o.grpc_stream_method],
                &grpc_unknown,
            )
            .or_else(|| {
                missing(
                    &grpc_status,
                    GRPC_STATUS_FUNCTION,
                    &status_fields,
                    &grpc_unknown,
                )
            })
        }),
    );
    plan.consider(
        GO_LIBRARY_GRPC_CLIENT,
        "google.golang.org/grpc client",
        grpc_gate.clone().or_else(|| {
            missing(
                &grpc_client,
                GRPC_CLIENT_FUNCTION,
                &[
                    o.grpc_client_conn_target,
                    o.grpc_error_proto,
                    o.rpc_status_code,
                ],
                &grpc_unknown,
            )
        }),
    );
    let grpc_propagation = if grpc_client.is_none() {
        Some("needs the gRPC client".to_owned())
    } else {
        grpc_gate.or_else(|| {
            missing(
                &grpc_stream,
                GRPC_STREAM_FUNCTION,
                &connection_fields(o, o.grpc_client_transport_conn),
                &grpc_unknown,
            )
        })
    };
    plan.consider(
        GO_LIBRARY_GRPC_PROPAGATION,
        "google.golang.org/grpc traceparent propagation",
        grpc_propagation,
    );

    let Plan {
        enabled, skipped, ..
    } = plan;
    if enabled == 0 {
        return Err(TargetError::NothingToInstrument {
            pid,
            why: skipped.join("; "),
        });
    }
    let with = |library: u32, offsets: Option<FunctionOffsets>| {
        if enabled & library != 0 {
            offsets
        } else {
            None
        }
    };
    // Incoming metadata is optional to gRPC server spans: without its offsets they are roots.
    let metadata_known = [
        o.http2_meta_headers_frame,
        o.http2_meta_fields,
        o.http2_headers_frame_header,
        o.http2_frame_stream_id,
    ]
    .iter()
    .all(|o| *o != OFFSET_NONE);
    let metadata_layout =
        grpc_version(&resolved.modules).is_none_or(|version| version < GRPC_HEADERS_CONTEXT_FROM);
    let grpc_headers =
        function(GRPC_HEADERS_FUNCTION).filter(|_| metadata_known && metadata_layout);
    let mut skipped = skipped;
    if enabled & GO_LIBRARY_SQL != 0 && stmt_present && stmt_unknown {
        skipped.push(format!(
            "database/sql prepared statements: `Stmt.query` offset unknown ({OFFSETS_UNKNOWN})"
        ));
    }
    if enabled & GO_LIBRARY_HTTP_SERVER != 0
        && let Err(why) = &resolved.map_layout
    {
        // The header map cannot be walked without knowing its layout: no offsets rather than
        // wrong ones (the probe then finds no `traceparent`).
        skipped.push(format!(
            "incoming net/http trace context: the binary's map layout is unknown ({why}); \
             net/http server spans start new traces"
        ));
    }
    if enabled & GO_LIBRARY_GRPC_SERVER != 0 && grpc_headers.is_none() {
        skipped.push(
            "incoming gRPC metadata: not read for this grpc-go (offsets or argument layout \
             unknown); gRPC server spans start new traces"
                .to_owned(),
        );
    }
    Ok(ResolvedTargets {
        targets: ProcessTargets {
            exe,
            offsets: GoOffsets {
                enabled_libraries: enabled,
                ..offsets
            },
            // Incoming trace context only matters to server spans.
            http_server: with(GO_LIBRARY_HTTP_SERVER, server),
            http_client: with(GO_LIBRARY_HTTP_CLIENT, client),
            connection: with(GO_LIBRARY_HTTP_PROPAGATION, connection),
            sql_query: with(GO_LIBRARY_SQL, query),
            sql_exec: with(GO_LIBRARY_SQL, exec),
            sql_stmt_query: with(GO_LIBRARY_SQL, stmt_query),
            sql_stmt_exec: with(GO_LIBRARY_SQL, stmt_exec),
            grpc_server: with(GO_LIBRARY_GRPC_SERVER, grpc_server),
            grpc_status: with(GO_LIBRARY_GRPC_SERVER, grpc_status),
            grpc_headers: with(GO_LIBRARY_GRPC_SERVER, grpc_headers),
            grpc_client: with(GO_LIBRARY_GRPC_CLIENT, grpc_client),
            grpc_stream: with(GO_LIBRARY_GRPC_PROPAGATION, grpc_stream),
        },
        go_version: resolved.go_version,
        offsets_source: resolved.source,
        skipped,
    })
}

/// Which wanted libraries can be enabled, and why the others cannot.
struct Plan {
    wanted: u32,
    enabled: u32,
    skipped: Vec<String>,
}

impl Plan {
    fn consider(&mut self, library: u32, name: &str, missing: Option<String>) {
        if self.wanted & library == 0 {
            return;
        }
        match missing {
            None => self.enabled |= library,
            Some(why) => self.skipped.push(format!("{name}: {why}")),
        }
    }
}

fn function(points: &[ProbePoints], name: &str) -> Option<FunctionOffsets> {
    points
        .iter()
        .find(|p| p.function == name)
        .map(|p| FunctionOffsets {
            entry: p.entry_offset,
            returns: p.return_offsets.clone(),
        })
}

/// The offsets from a `net.Conn` field to its ports (outgoing propagation).
fn connection_fields(o: &GoOffsets, conn: u32) -> [u32; 5] {
    [
        conn,
        o.tcp_conn_fd,
        o.net_fd_laddr,
        o.net_fd_raddr,
        o.tcp_addr_port,
    ]
}

/// The SQL driver linked into the binary; `other_sql` when none we know, or several.
fn db_system(points: &[ProbePoints]) -> u32 {
    let mut systems = SQL_DRIVERS
        .iter()
        .filter(|(name, _)| points.iter().any(|p| p.function == *name))
        .map(|(_, system)| *system);
    match systems.next() {
        Some(first) if systems.all(|s| s == first) => first,
        _ => DB_SYSTEM_OTHER,
    }
}

/// Why the linked grpc-go cannot be instrumented, by its version (when the binary has a
/// module list; GOPATH builds have none and rely on the DWARF check of every field).
fn grpc_version_gate(modules: &[GoModule]) -> Option<String> {
    let version = grpc_version(modules)?;
    (version >= GRPC_UNSUPPORTED_FROM)
        .then(|| format!("grpc-go {version} is not supported (its stream layout changed in 1.69)"))
}

/// The grpc-go version compiled in, when the binary has a module list.
fn grpc_version(modules: &[GoModule]) -> Option<GoVersion> {
    let module = modules
        .iter()
        .find(|m| m.path == goelf::fields::GRPC_MODULE)?;
    GoVersion::parse(module.version.trim_start_matches('v'))
}

/// The end of a skip reason saying the library's function is not in the binary.
const NOT_IN_BINARY: &str = "is not in the binary";

/// Whether a skip reason of [`ResolvedTargets::skipped`] says the library is absent from the
/// binary (not linked, or its function inlined away) rather than present but unsupported.
pub fn skipped_as_absent(reason: &str) -> bool {
    reason.ends_with(NOT_IN_BINARY)
}

/// Why offsets are unknown when nothing more precise is known.
const OFFSETS_UNKNOWN: &str = "no DWARF, and the shipped table has none for it";

/// Why a library cannot be instrumented, if it cannot: its function is not in the binary
/// (inlined or not linked) or one of its required offsets is unknown (`unknown` says why).
fn missing(
    function: &Option<FunctionOffsets>,
    name: &str,
    required: &[u32],
    unknown: &str,
) -> Option<String> {
    if function.is_none() {
        return Some(format!("`{name}` {NOT_IN_BINARY}"));
    }
    if required.contains(&OFFSET_NONE) {
        return Some(format!("struct offsets unknown ({unknown})"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(path: &str, version: &str) -> GoModule {
        GoModule {
            path: path.to_owned(),
            version: version.to_owned(),
        }
    }

    #[test]
    fn grpc_versions_from_1_69_are_refused_and_unknown_ones_left_to_dwarf() {
        assert_eq!(grpc_version_gate(&[]), None);
        let old = [module("google.golang.org/grpc", "v1.33.3")];
        assert_eq!(grpc_version_gate(&old), None);
        let new = [module("google.golang.org/grpc", "v1.70.0")];
        assert!(grpc_version_gate(&new).is_some_and(|why| why.contains("1.70.0")));
        let with_context = [module("google.golang.org/grpc", "v1.62.1")];
        assert_eq!(grpc_version_gate(&with_context), None);
        assert!(grpc_version(&with_context).is_some_and(|v| v >= GRPC_HEADERS_CONTEXT_FROM));
    }

    #[test]
    fn one_known_driver_names_the_database_system() {
        let point = |name: &str| ProbePoints {
            function: name.to_owned(),
            entry_offset: 0,
            return_offsets: Vec::new(),
        };
        assert_eq!(db_system(&[]), DB_SYSTEM_OTHER);
        let pq = point("github.com/lib/pq.(*conn).QueryContext");
        let pgx = point("github.com/jackc/pgx/v5/stdlib.(*Conn).QueryContext");
        let mysql = point("github.com/go-sql-driver/mysql.(*mysqlConn).QueryContext");
        assert_eq!(db_system(std::slice::from_ref(&pq)), DB_SYSTEM_POSTGRESQL);
        assert_eq!(db_system(&[pq.clone(), pgx]), DB_SYSTEM_POSTGRESQL);
        assert_eq!(db_system(&[pq, mysql]), DB_SYSTEM_OTHER);
    }
}
