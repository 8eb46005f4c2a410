//! From a process to what to attach: its executable's probe points and struct offsets (Go
//! binary analysis), narrowed to the libraries that are both wanted and possible.

use std::path::{Path, PathBuf};

use odiglet_common::go::{
    GO_LIBRARY_HTTP_CLIENT, GO_LIBRARY_HTTP_PROPAGATION, GO_LIBRARY_HTTP_SERVER, GoOffsets,
    OFFSET_NONE,
};

use super::{
    CONNECTION_FUNCTION, FunctionOffsets, HEADER_LINE_FUNCTION, HTTP_CLIENT_FUNCTION,
    HTTP_SERVER_FUNCTION, ProcessTargets,
};
use crate::goelf::{self, GoElfError, OffsetSource};

/// Every Go library this build can instrument.
pub const ALL_LIBRARIES: u32 =
    GO_LIBRARY_HTTP_SERVER | GO_LIBRARY_HTTP_CLIENT | GO_LIBRARY_HTTP_PROPAGATION;

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
    let points = goelf::probe_points(
        &exe,
        &[
            HTTP_SERVER_FUNCTION,
            HTTP_CLIENT_FUNCTION,
            HEADER_LINE_FUNCTION,
            CONNECTION_FUNCTION,
        ],
    )
    .map_err(analysis)?;
    let function = |name: &str| {
        points
            .iter()
            .find(|p| p.function == name)
            .map(|p| FunctionOffsets {
                entry: p.entry_offset,
                returns: p.return_offsets.clone(),
            })
    };
    let (server, client) = (
        function(HTTP_SERVER_FUNCTION),
        function(HTTP_CLIENT_FUNCTION),
    );
    let (header_line, connection) = (
        function(HEADER_LINE_FUNCTION),
        function(CONNECTION_FUNCTION),
    );
    let offsets = resolved.offsets;

    let mut enabled = 0;
    let mut skipped = Vec::new();
    let mut consider = |library: u32, name: &str, missing: Option<String>| {
        if wanted & library == 0 {
            return;
        }
        match missing {
            None => enabled |= library,
            Some(why) => skipped.push(format!("{name}: {why}")),
        }
    };
    consider(
        GO_LIBRARY_HTTP_SERVER,
        "net/http server",
        missing(
            &server,
            HTTP_SERVER_FUNCTION,
            &[offsets.request_method, offsets.response_status],
        ),
    );
    consider(
        GO_LIBRARY_HTTP_CLIENT,
        "net/http client",
        missing(
            &client,
            HTTP_CLIENT_FUNCTION,
            &[offsets.request_method, offsets.url_path],
        ),
    );
    let propagation_missing = if client.is_none() {
        Some("needs the net/http client".to_owned())
    } else {
        missing(
            &connection,
            CONNECTION_FUNCTION,
            &[
                offsets.persist_conn_conn,
                offsets.tcp_conn_fd,
                offsets.net_fd_laddr,
                offsets.net_fd_raddr,
                offsets.tcp_addr_port,
            ],
        )
    };
    consider(
        GO_LIBRARY_HTTP_PROPAGATION,
        "traceparent propagation",
        propagation_missing,
    );
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
    Ok(ResolvedTargets {
        targets: ProcessTargets {
            exe,
            offsets: GoOffsets {
                enabled_libraries: enabled,
                ..offsets
            },
            // Incoming trace context only matters to server spans.
            header_line: with(GO_LIBRARY_HTTP_SERVER, header_line),
            http_server: with(GO_LIBRARY_HTTP_SERVER, server),
            http_client: with(GO_LIBRARY_HTTP_CLIENT, client),
            connection: with(GO_LIBRARY_HTTP_PROPAGATION, connection),
        },
        go_version: resolved.go_version,
        offsets_source: resolved.source,
        skipped,
    })
}

/// Why a library cannot be instrumented, if it cannot: its function is not in the binary
/// (inlined or not linked) or one of its required offsets is unknown.
fn missing(function: &Option<FunctionOffsets>, name: &str, required: &[u32]) -> Option<String> {
    if function.is_none() {
        return Some(format!("`{name}` is not in the binary"));
    }
    if required.contains(&OFFSET_NONE) {
        return Some("struct offsets unknown for this Go version".to_owned());
    }
    None
}
