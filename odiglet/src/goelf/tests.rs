//! `go_offsets` version gates and table fallback on ELF files written by `object`, with a
//! `.go.buildinfo` section and no DWARF.

use std::io::Write;

use object::write;
use odiglet_common::go::OFFSET_NONE;

use super::*;

/// An ELF object whose `.go.buildinfo` says `version` (inline format).
fn go_binary(version: &str) -> tempfile::NamedTempFile {
    let mut blob = b"\xff Go buildinf:\x08\x02".to_vec();
    blob.resize(32, 0);
    blob.push(u8::try_from(version.len()).expect("short version"));
    blob.extend(version.as_bytes());
    blob.push(0);
    let mut obj = write::Object::new(
        object::BinaryFormat::Elf,
        object::Architecture::X86_64,
        object::Endianness::Little,
    );
    let section = obj.add_section(
        Vec::new(),
        b".go.buildinfo".to_vec(),
        object::SectionKind::Data,
    );
    obj.append_section_data(section, &blob, 16);
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(&obj.write().expect("ELF"))
        .expect("temp file");
    file
}

#[test]
fn go_before_1_17_is_refused_with_the_binary_named() {
    let binary = go_binary("go1.16.15");
    let error = go_offsets(binary.path()).expect_err("too old");
    assert!(matches!(error, GoElfError::GoTooOld { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains(&binary.path().display().to_string()),
        "{message}"
    );
    assert!(message.contains("1.16.15"), "{message}");
}

#[test]
fn without_dwarf_the_table_answers_by_minor_version() {
    let binary = go_binary("go1.22.3");
    let resolved = go_offsets(binary.path()).expect("table entry for 1.22");
    assert_eq!(resolved.source, OffsetSource::Table);
    assert_eq!(resolved.go_version, "go1.22.3");
    assert_eq!(
        Some(resolved.offsets),
        offsets_table::shipped().lookup(GoVersion::new(1, 22, 3), Some(MapLayout::Buckets))
    );
    assert_eq!(resolved.map_layout, Ok(MapLayout::Buckets));
    // No module list (as in a GOPATH build): no grpc-go version to key its offsets by.
    assert!(
        matches!(resolved.table_gaps.as_slice(),
            [(fields::GRPC_MODULE, why)] if why.contains("module list")),
        "{:?}",
        resolved.table_gaps
    );
}

/// Go 1.24-1.25 binaries built with `GOEXPERIMENT=noswissmap` say so in their version string:
/// bucket-map offsets for them, swiss-table ones for default builds; a claim the release
/// cannot make leaves the map layout unknown and every map offset out, the rest intact.
#[test]
fn without_dwarf_the_map_layout_follows_the_build_info() {
    let resolve = |version| go_offsets(go_binary(version).path()).expect("table entry");
    let default = resolve("go1.25.5");
    assert_eq!(default.map_layout, Ok(MapLayout::Swiss));
    assert!(fields::has_map_layout(&default.offsets, MapLayout::Swiss));
    assert_eq!(default.offsets.hmap_buckets, OFFSET_NONE);

    for version in [
        "go1.24.11 X:noswissmap",
        "go1.25.5 X:nocoverageredesign,noswissmap",
    ] {
        let noswiss = resolve(version);
        assert_eq!(noswiss.source, OffsetSource::Table, "{version}");
        assert_eq!(noswiss.map_layout, Ok(MapLayout::Buckets), "{version}");
        let offsets = noswiss.offsets;
        assert!(
            fields::has_map_layout(&offsets, MapLayout::Buckets),
            "{version}"
        );
        assert_eq!(offsets.swiss_dir_ptr, OFFSET_NONE, "{version}");
        assert_eq!(
            (offsets.hmap_flags, offsets.hmap_b, offsets.hmap_buckets),
            (8, 9, 16),
            "{version}: the hmap of every release since 1.17"
        );
    }

    let odd = resolve("go1.26.1 X:noswissmap");
    let why = odd.map_layout.expect_err("Go 1.26 has no noswissmap");
    assert!(why.contains("noswissmap"), "{why}");
    assert_eq!(odd.offsets, fields::only_map_layout(odd.offsets, None));
    assert_eq!(odd.offsets.swiss_dir_ptr, OFFSET_NONE);
    assert_ne!(odd.offsets.request_header, OFFSET_NONE);
}

#[test]
fn a_version_no_source_covers_is_a_clear_error() {
    let binary = go_binary("go1.99.1");
    let error = go_offsets(binary.path()).expect_err("no source");
    let message = error.to_string();
    assert!(matches!(error, GoElfError::NoOffsets { .. }), "{message}");
    assert!(
        message.contains("no DWARF") && message.contains("1.99"),
        "{message}"
    );
    let garbage = tempfile::NamedTempFile::new().expect("temp file");
    assert!(matches!(
        go_offsets(garbage.path()),
        Err(GoElfError::Elf { .. })
    ));
    assert!(matches!(
        probe_points(garbage.path(), &["main.main"]),
        Err(GoElfError::Elf { .. })
    ));
}

#[test]
fn functions_outside_executable_segments_are_refused() {
    // A relocatable object has no `PT_LOAD`: nothing can be attached.
    let binary = go_binary("go1.25.5");
    let image = ElfImage::open(binary.path()).expect("ELF");
    assert_eq!(code_offset(&image, 0, 1), None);
}
