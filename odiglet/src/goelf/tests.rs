//! `go_offsets` version gates and table fallback on ELF files written by `object`, with a
//! `.go.buildinfo` section and no DWARF.

use std::io::Write;

use object::write;

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
        offsets_table::shipped().lookup(GoVersion::new(1, 22, 3))
    );
    // No module list (as in a GOPATH build): no grpc-go version to key its offsets by.
    assert!(
        matches!(resolved.table_gaps.as_slice(),
            [(fields::GRPC_MODULE, why)] if why.contains("module list")),
        "{:?}",
        resolved.table_gaps
    );
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
