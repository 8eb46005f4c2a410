//! The Go struct fields the probes read ([`GoOffsets`]), where each lives (`package.Struct`,
//! member) and which Go versions have it. DWARF extraction and the shipped table both fill
//! [`GoOffsets`] through this one list.

use std::fmt;

use odiglet_common::go::{GoOffsets, OFFSET_NONE};

/// A Go release, `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GoVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl GoVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }

    /// Parses `1.22`, `1.22.10`, `go1.22.10`, `go1.25.5 X:nocoverageredesign`.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.trim();
        let rest = rest
            .find("go")
            .map_or(rest, |at| rest.get(at + 2..).unwrap_or(""));
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let mut parts = rest.get(..end)?.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        Some(Self::new(major, minor, patch))
    }

    /// `major.minor`, the key of the offsets table.
    pub fn minor_key(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }

    fn minor_version(&self) -> (u32, u32) {
        (self.major, self.minor)
    }
}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Oldest Go with the register ABI the probes read arguments from.
pub const MIN_GO: GoVersion = GoVersion::new(1, 17, 0);

/// One field of [`GoOffsets`].
#[derive(Clone, Copy, Debug)]
pub struct Field {
    /// The `GoOffsets` field name, also the table's key.
    pub key: &'static str,
    /// DWARF name of the struct: `net/http.Request`.
    pub structure: &'static str,
    pub member: &'static str,
    /// First and last `major.minor` the probes use it for (inclusive).
    pub since: (u32, u32),
    pub until: Option<(u32, u32)>,
    /// The module the struct belongs to when it is not the standard library's: such fields
    /// are optional (most binaries do not link the module; its library is then skipped).
    pub module: Option<&'static str>,
    /// For a module field, the library whose probes read it (the offsets table keys the field
    /// by that library's version).
    pub library: Option<&'static str>,
    /// A standard-library field the DWARF may lack (the linker drops the types of unused
    /// code): only the probe that reads it is left out, the rest of the binary's offsets hold.
    pub optional: bool,
}

impl Field {
    /// Whether the probes use this field for `version`; outside, it is [`OFFSET_NONE`].
    pub fn applies_to(&self, version: GoVersion) -> bool {
        let v = version.minor_version();
        v >= self.since && self.until.is_none_or(|until| v <= until)
    }
}

const fn field(key: &'static str, structure: &'static str, member: &'static str) -> Field {
    Field {
        key,
        structure,
        member,
        since: (1, 17),
        until: None,
        module: None,
        library: None,
        optional: false,
    }
}

/// A field the gRPC probes read, of a struct in `module` (grpc-go or a module it uses).
const fn grpc_field(
    module: &'static str,
    key: &'static str,
    structure: &'static str,
    member: &'static str,
) -> Field {
    Field {
        module: Some(module),
        library: Some(GRPC_MODULE),
        ..field(key, structure, member)
    }
}

/// The gRPC module and the modules whose structs its probes read.
pub const GRPC_MODULE: &str = "google.golang.org/grpc";
const GENPROTO_MODULE: &str = "google.golang.org/genproto";
const X_NET_MODULE: &str = "golang.org/x/net";

const REQUEST: &str = "net/http.Request";
const URL: &str = "net/url.URL";
/// Go < 1.24 maps; Go >= 1.24 swiss-table maps (the default since 1.24).
const HMAP: &str = "runtime.hmap";
const SWISS_MAP: &str = "internal/runtime/maps.Map";
const SWISS_GROUPS: &str = "internal/runtime/maps.groupsReference";

/// Every offset `GoOffsets` carries, in its field order.
pub const FIELDS: &[Field] = &[
    field("request_method", REQUEST, "Method"),
    field("request_url", REQUEST, "URL"),
    field("request_proto", REQUEST, "Proto"),
    field("request_host", REQUEST, "Host"),
    field("request_remote_addr", REQUEST, "RemoteAddr"),
    Field {
        since: (1, 23),
        ..field("request_pattern", REQUEST, "Pattern")
    },
    Field {
        since: (1, 22),
        until: Some((1, 22)),
        ..field("request_pat", REQUEST, "pat")
    },
    Field {
        since: (1, 22),
        until: Some((1, 22)),
        ..field("pattern_str", "net/http.pattern", "str")
    },
    field("url_scheme", URL, "Scheme"),
    field("url_host", URL, "Host"),
    field("url_path", URL, "Path"),
    field("response_status", "net/http.response", "status"),
    field(
        "client_response_status_code",
        "net/http.Response",
        "StatusCode",
    ),
    field("client_response_proto", "net/http.Response", "Proto"),
    // Outgoing propagation: the connection behind a client request.
    field("persist_conn_conn", "net/http.persistConn", "conn"),
    // `net.TCPConn` embeds `net.conn` as its first field, so `conn.fd` is `TCPConn`'s too.
    field("tcp_conn_fd", "net.conn", "fd"),
    field("net_fd_laddr", "net.netFD", "laddr"),
    field("net_fd_raddr", "net.netFD", "raddr"),
    field("tcp_addr_port", "net.TCPAddr", "Port"),
    field("tcp_addr_ip", "net.TCPAddr", "IP"),
    // database/sql prepared statements; a program that prepares none lacks the type.
    Field {
        optional: true,
        ..field("sql_stmt_query", "database/sql.Stmt", "query")
    },
    // gRPC (grpc-go before 1.69, where `transport.Stream` split into client and server types).
    grpc_field(
        GRPC_MODULE,
        "grpc_stream_id",
        "google.golang.org/grpc/internal/transport.Stream",
        "id",
    ),
    grpc_field(
        GRPC_MODULE,
        "grpc_stream_method",
        "google.golang.org/grpc/internal/transport.Stream",
        "method",
    ),
    grpc_field(
        GRPC_MODULE,
        "grpc_server_remote_addr",
        "google.golang.org/grpc/internal/transport.http2Server",
        "remoteAddr",
    ),
    grpc_field(
        GRPC_MODULE,
        "grpc_status_proto",
        "google.golang.org/grpc/internal/status.Status",
        "s",
    ),
    grpc_field(
        GRPC_MODULE,
        "grpc_error_proto",
        "google.golang.org/grpc/internal/status.Error",
        "e",
    ),
    grpc_field(
        GENPROTO_MODULE,
        "rpc_status_code",
        "google.golang.org/genproto/googleapis/rpc/status.Status",
        "Code",
    ),
    grpc_field(
        GRPC_MODULE,
        "grpc_client_conn_target",
        "google.golang.org/grpc.ClientConn",
        "target",
    ),
    grpc_field(
        GRPC_MODULE,
        "grpc_client_transport_conn",
        "google.golang.org/grpc/internal/transport.http2Client",
        "conn",
    ),
    grpc_field(
        X_NET_MODULE,
        "http2_meta_headers_frame",
        "golang.org/x/net/http2.MetaHeadersFrame",
        "HeadersFrame",
    ),
    grpc_field(
        X_NET_MODULE,
        "http2_meta_fields",
        "golang.org/x/net/http2.MetaHeadersFrame",
        "Fields",
    ),
    grpc_field(
        X_NET_MODULE,
        "http2_headers_frame_header",
        "golang.org/x/net/http2.HeadersFrame",
        "FrameHeader",
    ),
    grpc_field(
        X_NET_MODULE,
        "http2_frame_stream_id",
        "golang.org/x/net/http2.FrameHeader",
        "StreamID",
    ),
    // Incoming traceparent: the header map and the runtime's map internals.
    field("request_header", REQUEST, "Header"),
    Field {
        until: Some((1, 23)),
        ..field("hmap_flags", HMAP, "flags")
    },
    Field {
        until: Some((1, 23)),
        ..field("hmap_b", HMAP, "B")
    },
    Field {
        until: Some((1, 23)),
        ..field("hmap_buckets", HMAP, "buckets")
    },
    Field {
        until: Some((1, 23)),
        ..field("hmap_oldbuckets", HMAP, "oldbuckets")
    },
    Field {
        since: (1, 24),
        ..field("swiss_dir_ptr", SWISS_MAP, "dirPtr")
    },
    Field {
        since: (1, 24),
        ..field("swiss_dir_len", SWISS_MAP, "dirLen")
    },
    Field {
        since: (1, 24),
        ..field(
            "swiss_table_groups",
            "internal/runtime/maps.table",
            "groups",
        )
    },
    Field {
        since: (1, 24),
        ..field("swiss_groups_data", SWISS_GROUPS, "data")
    },
    Field {
        since: (1, 24),
        ..field("swiss_groups_length_mask", SWISS_GROUPS, "lengthMask")
    },
];

/// Offsets with every field [`OFFSET_NONE`] (and no library enabled).
pub fn empty_offsets() -> GoOffsets {
    GoOffsets {
        request_method: OFFSET_NONE,
        request_url: OFFSET_NONE,
        request_proto: OFFSET_NONE,
        request_host: OFFSET_NONE,
        request_remote_addr: OFFSET_NONE,
        request_pattern: OFFSET_NONE,
        request_pat: OFFSET_NONE,
        pattern_str: OFFSET_NONE,
        url_scheme: OFFSET_NONE,
        url_host: OFFSET_NONE,
        url_path: OFFSET_NONE,
        response_status: OFFSET_NONE,
        client_response_status_code: OFFSET_NONE,
        client_response_proto: OFFSET_NONE,
        persist_conn_conn: OFFSET_NONE,
        tcp_conn_fd: OFFSET_NONE,
        net_fd_laddr: OFFSET_NONE,
        net_fd_raddr: OFFSET_NONE,
        tcp_addr_port: OFFSET_NONE,
        tcp_addr_ip: OFFSET_NONE,
        sql_stmt_query: OFFSET_NONE,
        grpc_stream_id: OFFSET_NONE,
        grpc_stream_method: OFFSET_NONE,
        grpc_server_remote_addr: OFFSET_NONE,
        grpc_status_proto: OFFSET_NONE,
        grpc_error_proto: OFFSET_NONE,
        rpc_status_code: OFFSET_NONE,
        grpc_client_conn_target: OFFSET_NONE,
        grpc_client_transport_conn: OFFSET_NONE,
        http2_meta_headers_frame: OFFSET_NONE,
        http2_meta_fields: OFFSET_NONE,
        http2_headers_frame_header: OFFSET_NONE,
        http2_frame_stream_id: OFFSET_NONE,
        request_header: OFFSET_NONE,
        hmap_flags: OFFSET_NONE,
        hmap_b: OFFSET_NONE,
        hmap_buckets: OFFSET_NONE,
        hmap_oldbuckets: OFFSET_NONE,
        swiss_dir_ptr: OFFSET_NONE,
        swiss_dir_len: OFFSET_NONE,
        swiss_table_groups: OFFSET_NONE,
        swiss_groups_data: OFFSET_NONE,
        swiss_groups_length_mask: OFFSET_NONE,
        db_system: odiglet_common::go::DB_SYSTEM_OTHER,
        enabled_libraries: 0,
    }
}

/// The `GoOffsets` slot named `key` (a [`Field::key`]).
pub fn slot<'a>(offsets: &'a mut GoOffsets, key: &str) -> Option<&'a mut u32> {
    Some(match key {
        "request_method" => &mut offsets.request_method,
        "request_url" => &mut offsets.request_url,
        "request_proto" => &mut offsets.request_proto,
        "request_host" => &mut offsets.request_host,
        "request_remote_addr" => &mut offsets.request_remote_addr,
        "request_pattern" => &mut offsets.request_pattern,
        "request_pat" => &mut offsets.request_pat,
        "pattern_str" => &mut offsets.pattern_str,
        "url_scheme" => &mut offsets.url_scheme,
        "url_host" => &mut offsets.url_host,
        "url_path" => &mut offsets.url_path,
        "response_status" => &mut offsets.response_status,
        "client_response_status_code" => &mut offsets.client_response_status_code,
        "client_response_proto" => &mut offsets.client_response_proto,
        "persist_conn_conn" => &mut offsets.persist_conn_conn,
        "tcp_conn_fd" => &mut offsets.tcp_conn_fd,
        "net_fd_laddr" => &mut offsets.net_fd_laddr,
        "net_fd_raddr" => &mut offsets.net_fd_raddr,
        "tcp_addr_port" => &mut offsets.tcp_addr_port,
        "tcp_addr_ip" => &mut offsets.tcp_addr_ip,
        "sql_stmt_query" => &mut offsets.sql_stmt_query,
        "grpc_stream_id" => &mut offsets.grpc_stream_id,
        "grpc_stream_method" => &mut offsets.grpc_stream_method,
        "grpc_server_remote_addr" => &mut offsets.grpc_server_remote_addr,
        "grpc_status_proto" => &mut offsets.grpc_status_proto,
        "grpc_error_proto" => &mut offsets.grpc_error_proto,
        "rpc_status_code" => &mut offsets.rpc_status_code,
        "grpc_client_conn_target" => &mut offsets.grpc_client_conn_target,
        "grpc_client_transport_conn" => &mut offsets.grpc_client_transport_conn,
        "http2_meta_headers_frame" => &mut offsets.http2_meta_headers_frame,
        "http2_meta_fields" => &mut offsets.http2_meta_fields,
        "http2_headers_frame_header" => &mut offsets.http2_headers_frame_header,
        "http2_frame_stream_id" => &mut offsets.http2_frame_stream_id,
        "request_header" => &mut offsets.request_header,
        "hmap_flags" => &mut offsets.hmap_flags,
        "hmap_b" => &mut offsets.hmap_b,
        "hmap_buckets" => &mut offsets.hmap_buckets,
        "hmap_oldbuckets" => &mut offsets.hmap_oldbuckets,
        "swiss_dir_ptr" => &mut offsets.swiss_dir_ptr,
        "swiss_dir_len" => &mut offsets.swiss_dir_len,
        "swiss_table_groups" => &mut offsets.swiss_table_groups,
        "swiss_groups_data" => &mut offsets.swiss_groups_data,
        "swiss_groups_length_mask" => &mut offsets.swiss_groups_length_mask,
        _ => return None,
    })
}

/// The value of slot `key`.
pub fn get(offsets: &GoOffsets, key: &str) -> Option<u32> {
    let mut copy = *offsets;
    slot(&mut copy, key).map(|v| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_a_slot_and_gates_follow_go_releases() {
        let mut offsets = empty_offsets();
        for (index, field) in FIELDS.iter().enumerate() {
            let slot = slot(&mut offsets, field.key).expect(field.key);
            *slot = u32::try_from(index).expect("few fields");
        }
        assert_eq!(offsets.request_method, 0);
        assert_eq!(offsets.client_response_proto, 13);
        assert_eq!(offsets.tcp_addr_port, 18);
        assert_eq!(offsets.sql_stmt_query, 20);
        assert_eq!(offsets.http2_frame_stream_id, 32);
        assert!(
            FIELDS
                .iter()
                .filter(|f| f.module.is_some())
                .all(|f| f.key != "tcp_addr_ip")
        );
        let pattern = FIELDS.iter().find(|f| f.key == "request_pattern");
        let pat = FIELDS.iter().find(|f| f.key == "request_pat");
        let (pattern, pat) = (pattern.expect("pattern"), pat.expect("pat"));
        assert!(!pattern.applies_to(GoVersion::new(1, 22, 10)));
        assert!(pattern.applies_to(GoVersion::new(1, 23, 0)));
        assert!(pat.applies_to(GoVersion::new(1, 22, 0)));
        assert!(!pat.applies_to(GoVersion::new(1, 21, 13)));
        assert!(!pat.applies_to(GoVersion::new(1, 23, 0)));
    }

    #[test]
    fn versions_parse_from_buildinfo_strings() {
        assert_eq!(
            GoVersion::parse("go1.25.5 X:nocoverageredesign"),
            Some(GoVersion::new(1, 25, 5))
        );
        assert_eq!(GoVersion::parse("go1.22"), Some(GoVersion::new(1, 22, 0)));
        assert_eq!(GoVersion::parse("1.19.8"), Some(GoVersion::new(1, 19, 8)));
        assert_eq!(GoVersion::parse("devel +abc"), None);
        assert!(GoVersion::new(1, 16, 15) < MIN_GO);
    }
}
