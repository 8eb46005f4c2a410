//! Hand-assembled DWARF 4 and 5 units (both member location encodings) and hostile bytes.
#![expect(
    clippy::indexing_slicing,
    reason = "fixtures are patched at known offsets"
)]

use odiglet_common::go::OFFSET_NONE;

use super::*;

const DW_FORM_STRING: u8 = 0x08;
const DW_FORM_UDATA: u8 = 0x0f;
const DW_FORM_EXPRLOC: u8 = 0x18;

/// Abbreviations: 1 compile unit, 2 struct, 3 member (udata offset), 4 member (exprloc).
fn abbrev() -> Vec<u8> {
    vec![
        1,
        0x11,
        1,
        0x03,
        DW_FORM_STRING,
        0,
        0, // compile_unit
        2,
        0x13,
        1,
        0x03,
        DW_FORM_STRING,
        0,
        0, // structure_type
        3,
        0x0d,
        0,
        0x03,
        DW_FORM_STRING,
        0x38,
        DW_FORM_UDATA,
        0,
        0, // member
        4,
        0x0d,
        0,
        0x03,
        DW_FORM_STRING,
        0x38,
        DW_FORM_EXPRLOC,
        0,
        0, // member, DWARF 2 style
        0,
    ]
}

fn string(out: &mut Vec<u8>, text: &str) {
    out.extend(text.as_bytes());
    out.push(0);
}

/// One unit holding `structs` (offsets < 128: one ULEB128 byte) (name, members (name, offset)); DWARF `version` 4 or 5.
fn info(version: u16, structs: &[(&str, &[(&str, u8)])]) -> Vec<u8> {
    let mut dies = vec![1];
    string(&mut dies, "net/http");
    for (index, (name, members)) in structs.iter().enumerate() {
        dies.push(2);
        string(&mut dies, name);
        for (member, offset) in *members {
            // Alternate the two encodings of the location.
            if index % 2 == 0 {
                dies.push(3);
                string(&mut dies, member);
                dies.push(*offset);
            } else {
                dies.push(4);
                string(&mut dies, member);
                dies.extend([2, gimli::DW_OP_plus_uconst.0, *offset]);
            }
        }
        dies.push(0);
    }
    dies.push(0);
    let mut header = version.to_le_bytes().to_vec();
    if version >= 5 {
        header.extend([gimli::DW_UT_compile.0, 8]);
        header.extend(0u32.to_le_bytes());
    } else {
        header.extend(0u32.to_le_bytes());
        header.push(8);
    }
    let mut out = u32::try_from(header.len() + dies.len())
        .expect("small")
        .to_le_bytes()
        .to_vec();
    out.extend(header);
    out.extend(dies);
    out
}

const REQUEST: &[(&str, u8)] = &[
    ("Method", 0),
    ("URL", 16),
    ("Proto", 24),
    ("Header", 56),
    ("Host", 100),
    ("RemoteAddr", 110),
    ("Pattern", 118),
    ("pat", 126),
];

fn go_structs() -> Vec<(&'static str, &'static [(&'static str, u8)])> {
    vec![
        ("net/url.Userinfo", &[("Path", 99)][..]),
        ("net/http.Request", REQUEST),
        (
            "net/url.URL",
            &[("Scheme", 0), ("Host", 40), ("Path", 56)][..],
        ),
        ("net/http.response", &[("w", 8), ("status", 96)][..]),
        (
            "net/http.Response",
            &[("Status", 0), ("StatusCode", 16), ("Proto", 24)][..],
        ),
        ("net/http.pattern", &[("str", 0)][..]),
        ("net/http.persistConn", &[("alt", 0), ("conn", 80)][..]),
        ("net.conn", &[("fd", 0)][..]),
        ("net.netFD", &[("laddr", 96), ("raddr", 112)][..]),
        ("net.TCPAddr", &[("IP", 0), ("Port", 24)][..]),
        (
            "runtime.hmap",
            &[("flags", 8), ("B", 9), ("buckets", 16), ("oldbuckets", 24)][..],
        ),
    ]
}

fn run(info: &[u8], version: GoVersion) -> Result<GoOffsets, DwarfError> {
    let abbrev = abbrev();
    extract(
        |id| match id {
            SectionId::DebugInfo => info,
            SectionId::DebugAbbrev => &abbrev,
            _ => &[],
        },
        version,
        Some(MapLayout::from_build(version, &[]).expect("a default layout")),
    )
}

#[test]
fn member_offsets_from_dwarf_4_and_5() {
    for dwarf_version in [4, 5] {
        let info = info(dwarf_version, &go_structs());
        let offsets = run(&info, GoVersion::new(1, 23, 0)).expect("complete DWARF");
        assert_eq!(offsets.request_method, 0);
        assert_eq!(offsets.request_url, 16);
        assert_eq!(offsets.request_remote_addr, 110);
        assert_eq!(offsets.request_pattern, 118);
        // The header map: Go 1.23 still has bucket maps, no swiss tables.
        assert_eq!(offsets.request_header, 56);
        assert_eq!(
            (offsets.hmap_flags, offsets.hmap_b, offsets.hmap_buckets),
            (8, 9, 16)
        );
        assert_eq!(offsets.hmap_oldbuckets, 24);
        assert_eq!(offsets.swiss_dir_ptr, OFFSET_NONE);
        // `pat` exists in the DWARF, but the probes use it for Go 1.22 only.
        assert_eq!(offsets.request_pat, OFFSET_NONE);
        assert_eq!(offsets.pattern_str, OFFSET_NONE);
        assert_eq!(
            (offsets.url_scheme, offsets.url_host, offsets.url_path),
            (0, 40, 56)
        );
        assert_eq!(offsets.response_status, 96);
        assert_eq!(offsets.client_response_status_code, 16);
        assert_eq!(offsets.client_response_proto, 24);
        assert_eq!((offsets.persist_conn_conn, offsets.tcp_conn_fd), (80, 0));
        assert_eq!(
            (
                offsets.net_fd_laddr,
                offsets.net_fd_raddr,
                offsets.tcp_addr_port
            ),
            (96, 112, 24)
        );
        assert_eq!(offsets.enabled_libraries, 0);
        let go122 = run(&info, GoVersion::new(1, 22, 10)).expect("complete DWARF");
        assert_eq!(
            (go122.request_pattern, go122.request_pat),
            (OFFSET_NONE, 126)
        );
        assert_eq!(go122.pattern_str, 0);
    }
}

/// A Go 1.25 `GOEXPERIMENT=noswissmap` build: its DWARF has `runtime.hmap`, no swiss table.
#[test]
fn go_1_25_bucket_maps_are_read_and_told_apart_from_swiss_tables() {
    let info = info(5, &go_structs());
    let abbrev = abbrev();
    let partial = |map| {
        extract_partial(
            |id| match id {
                SectionId::DebugInfo => &info[..],
                SectionId::DebugAbbrev => &abbrev,
                _ => &[],
            },
            GoVersion::new(1, 25, 5),
            map,
        )
        .expect("DWARF reads")
    };
    let buckets = partial(Some(MapLayout::Buckets));
    assert!(buckets.missing.is_empty(), "{:?}", buckets.missing);
    assert_eq!(buckets.map_layouts, [MapLayout::Buckets]);
    let offsets = buckets.offsets;
    assert_eq!(
        (offsets.hmap_flags, offsets.hmap_b, offsets.hmap_buckets),
        (8, 9, 16)
    );
    assert_eq!(offsets.hmap_oldbuckets, 24);
    assert_eq!(offsets.swiss_dir_ptr, OFFSET_NONE);
    // Asked for swiss tables, this DWARF lacks them and says it has buckets.
    let swiss = partial(Some(MapLayout::Swiss));
    assert_eq!(swiss.map_layouts, [MapLayout::Buckets]);
    let missing: Vec<_> = swiss.missing.iter().map(|f| f.key).collect();
    assert!(missing.contains(&"swiss_dir_ptr"), "{missing:?}");
    assert_eq!(swiss.offsets.hmap_buckets, OFFSET_NONE);
    // Layout unknown: no map field at all, nothing missing.
    let unknown = partial(None);
    assert!(unknown.missing.is_empty());
    assert_eq!(
        (unknown.offsets.hmap_buckets, unknown.offsets.swiss_dir_ptr),
        (OFFSET_NONE, OFFSET_NONE)
    );
    assert_eq!(unknown.offsets.request_header, 56);
}

#[test]
fn a_missing_member_or_struct_is_an_error() {
    let mut structs = go_structs();
    structs[3] = ("net/http.response", &[("w", 8)][..]);
    let error = run(&info(4, &structs), GoVersion::new(1, 21, 13)).expect_err("no status");
    assert!(
        matches!(
            error,
            DwarfError::MissingField {
                structure: "net/http.response",
                member: "status"
            }
        ),
        "{error}"
    );
    structs.remove(3);
    assert!(run(&info(4, &structs), GoVersion::new(1, 21, 13)).is_err());
}

#[test]
fn malformed_dwarf_is_an_error_never_a_panic() {
    let valid = info(5, &go_structs());
    for len in 0..valid.len() {
        let _ = run(&valid[..len], GoVersion::new(1, 25, 5));
    }
    for at in 0..valid.len() {
        for value in [0x00, 0x05, 0x7F, 0x80, 0xFF] {
            let mut bytes = valid.clone();
            bytes[at] = value;
            let _ = run(&bytes, GoVersion::new(1, 25, 5));
        }
    }
    assert!(run(&[], GoVersion::new(1, 25, 5)).is_err());
}
