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

/// How a binary's runtime stores maps: what the incoming-traceparent probe walks in
/// `Request.Header`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapLayout {
    /// `runtime.hmap` and its buckets: Go < 1.24, and 1.24-1.25 built with
    /// `GOEXPERIMENT=noswissmap`.
    Buckets,
    /// `internal/runtime/maps.Map` swiss tables: the default since Go 1.24, the only one
    /// since 1.26.
    Swiss,
}

/// First release with swiss tables (by default), and the last one with the `noswissmap`
/// experiment.
const SWISS_SINCE: (u32, u32) = (1, 24);
const NOSWISSMAP_UNTIL: (u32, u32) = (1, 25);

impl MapLayout {
    /// The layout of a Go `version` binary built with the experiment lists `experiments`: the
    /// ` X:` part of its version string and its `GOEXPERIMENT` build setting, each a
    /// `GOEXPERIMENT`-style comma list (empty: the release's defaults). `Err` says why it
    /// cannot be known: the lists disagree, or one names an experiment `version` lacks.
    pub fn from_build(version: GoVersion, experiments: &[&str]) -> Result<Self, String> {
        let v = version.minor_version();
        let has_experiment = v >= SWISS_SINCE && v <= NOSWISSMAP_UNTIL;
        let mut layouts = Vec::with_capacity(experiments.len());
        for list in experiments {
            // The last mention wins, as when Go parses GOEXPERIMENT; `none` turns every
            // experiment off, swissmap included where it is one.
            let mut swiss = v >= SWISS_SINCE;
            for name in list.split(',').map(str::trim) {
                let claim = match name {
                    "swissmap" => true,
                    "noswissmap" => false,
                    "none" if has_experiment => false,
                    _ => continue,
                };
                if !has_experiment && claim != swiss {
                    return Err(format!(
                        "its build info says GOEXPERIMENT={name}, which Go {version} does not have"
                    ));
                }
                swiss = claim;
            }
            layouts.push(if swiss { Self::Swiss } else { Self::Buckets });
        }
        let first = layouts.first().copied().unwrap_or(if v >= SWISS_SINCE {
            Self::Swiss
        } else {
            Self::Buckets
        });
        if layouts.iter().any(|l| *l != first) {
            return Err(format!(
                "its build info disagrees with itself on the swissmap experiment ({})",
                experiments
                    .iter()
                    .map(|l| format!("{l:?}"))
                    .collect::<Vec<_>>()
                    .join(" vs ")
            ));
        }
        Ok(first)
    }
}

impl fmt::Display for MapLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Buckets => "bucket maps (runtime.hmap)",
            Self::Swiss => "swiss-table maps (internal/runtime/maps.Map)",
        })
    }
}

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
    /// For the runtime's map internals: the map layout the field belongs to.
    pub map: Option<MapLayout>,
}

impl Field {
    /// Whether the probes use this field for a `version` binary with maps laid out as `map`
    /// (`None`: unknown, so no map field applies); outside, it is [`OFFSET_NONE`].
    pub fn applies_to(&self, version: GoVersion, map: Option<MapLayout>) -> bool {
        self.exists_in(version) && self.map.is_none_or(|layout| map == Some(layout))
    }

    /// Whether Go `version` can have this field at all (whatever its map layout).
    pub fn exists_in(&self, version: GoVersion) -> bool {
        let v = version.minor_version();
        v >= self.since && self.until.is_none_or(|until| v <= until)
    }
}

/// The fields of map layout `layout`.
pub fn map_fields(layout: MapLayout) -> impl Iterator<Item = &'static Field> {
    FIELDS.iter().filter(move |f| f.map == Some(layout))
}

/// Whether `offsets` has every field of map layout `layout`.
pub fn has_map_layout(offsets: &GoOffsets, layout: MapLayout) -> bool {
    map_fields(layout).all(|f| get(offsets, f.key).is_some_and(|v| v != OFFSET_NONE))
}

/// `offsets` with every map field [`OFFSET_NONE`] but those of `keep`.
pub fn only_map_layout(mut offsets: GoOffsets, keep: Option<MapLayout>) -> GoOffsets {
    for field in FIELDS.iter().filter(|f| f.map.is_some() && f.map != keep) {
        if let Some(slot) = slot(&mut offsets, field.key) {
            *slot = OFFSET_NONE;
        }
    }
    offsets
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
        map: None,
    }
}

/// A field of the runtime's map internals for maps laid out as `map`.
const fn map_field(
    map: MapLayout,
    key: &'static str,
    structure: &'static str,
    member: &'static str,
) -> Field {
    let (since, until) = match map {
        MapLayout::Buckets => ((1, 17), Some(NOSWISSMAP_UNTIL)),
        MapLayout::Swiss => (SWISS_SINCE, None),
    };
    Field {
        since,
        until,
        map: Some(map),
        ..field(key, structure, member)
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
/// Bucket maps and swiss-table maps ([`MapLayout`]).
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
    // Incoming traceparent: the header map and the runtime's map internals, of the layout
    // the binary has (`MapLayout`).
    field("request_header", REQUEST, "Header"),
    map_field(MapLayout::Buckets, "hmap_flags", HMAP, "flags"),
    map_field(MapLayout::Buckets, "hmap_b", HMAP, "B"),
    map_field(MapLayout::Buckets, "hmap_buckets", HMAP, "buckets"),
    map_field(MapLayout::Buckets, "hmap_oldbuckets", HMAP, "oldbuckets"),
    map_field(MapLayout::Swiss, "swiss_dir_ptr", SWISS_MAP, "dirPtr"),
    map_field(MapLayout::Swiss, "swiss_dir_len", SWISS_MAP, "dirLen"),
    map_field(
        MapLayout::Swiss,
        "swiss_table_groups",
        "internal/runtime/maps.table",
        "groups",
    ),
    map_field(MapLayout::Swiss, "swiss_groups_data", SWISS_GROUPS, "data"),
    map_field(
        MapLayout::Swiss,
        "swiss_groups_length_mask",
        SWISS_GROUPS,
        "lengthMask",
    ),
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
        assert!(!pattern.applies_to(GoVersion::new(1, 22, 10), None));
        assert!(pattern.applies_to(GoVersion::new(1, 23, 0), None));
        assert!(pat.applies_to(GoVersion::new(1, 22, 0), None));
        assert!(!pat.applies_to(GoVersion::new(1, 21, 13), None));
        assert!(!pat.applies_to(GoVersion::new(1, 23, 0), None));
    }

    #[test]
    fn map_layout_follows_the_release_and_the_swissmap_experiment() {
        let v = |minor| GoVersion::new(1, minor, 3);
        let layout = |minor, lists: &[&str]| MapLayout::from_build(v(minor), lists);
        assert_eq!(layout(23, &["", ""]), Ok(MapLayout::Buckets));
        assert_eq!(layout(24, &[""]), Ok(MapLayout::Swiss));
        assert_eq!(layout(27, &[]), Ok(MapLayout::Swiss));
        assert_eq!(
            layout(25, &["noswissmap", "noswissmap"]),
            Ok(MapLayout::Buckets)
        );
        assert_eq!(
            layout(24, &["nocoverageredesign,noswissmap"]),
            Ok(MapLayout::Buckets)
        );
        assert_eq!(layout(25, &["noswissmap,swissmap"]), Ok(MapLayout::Swiss));
        assert_eq!(layout(25, &["none"]), Ok(MapLayout::Buckets));
        assert_eq!(layout(23, &["noswissmap"]), Ok(MapLayout::Buckets));
        // The version string and the build setting disagree: unknown.
        let why = layout(25, &["noswissmap", ""]).expect_err("disagreement");
        assert!(why.contains("disagrees"), "{why}");
        // Experiments a release does not have.
        let why = layout(26, &["noswissmap"]).expect_err("gone in 1.26");
        assert!(
            why.contains("noswissmap") && why.contains("1.26.3"),
            "{why}"
        );
        assert!(layout(23, &["swissmap"]).is_err());
        let hmap = FIELDS
            .iter()
            .find(|f| f.key == "hmap_buckets")
            .expect("hmap");
        let swiss = FIELDS
            .iter()
            .find(|f| f.key == "swiss_dir_ptr")
            .expect("swiss");
        assert!(hmap.applies_to(v(25), Some(MapLayout::Buckets)));
        assert!(!hmap.applies_to(v(25), Some(MapLayout::Swiss)));
        assert!(!hmap.applies_to(v(26), Some(MapLayout::Buckets)));
        assert!(!swiss.applies_to(v(25), None));
        assert!(!swiss.applies_to(v(23), Some(MapLayout::Swiss)));
        assert_eq!(map_fields(MapLayout::Buckets).count(), 4);
        assert_eq!(map_fields(MapLayout::Swiss).count(), 5);
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
