#![expect(
    clippy::indexing_slicing,
    clippy::cast_possible_truncation,
    reason = "fixtures are built by index from known-good sizes"
)]

use std::io::Write;

use object::write;

use super::*;
use crate::inspect::elf::{BoundedReader, ElfImage};

const SENTINEL: [u8; 16] = *b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6";

fn uvarint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn framed(modinfo: &str) -> Vec<u8> {
    let mut framed = SENTINEL.to_vec();
    framed.extend_from_slice(modinfo.as_bytes());
    framed.extend_from_slice(&SENTINEL);
    framed
}

/// A Go >= 1.18 header with inline strings.
fn inline_blob(version: &str, modinfo: &str) -> Vec<u8> {
    let mut blob = MAGIC.to_vec();
    blob.extend_from_slice(&[8, FLAG_INLINE]);
    blob.resize(HEADER_LEN, 0);
    uvarint(version.len(), &mut blob);
    blob.extend_from_slice(version.as_bytes());
    let modinfo = framed(modinfo);
    uvarint(modinfo.len(), &mut blob);
    blob.extend_from_slice(&modinfo);
    blob
}

const MODINFO: &str = "path\texample.com/app/cmd/server\nmod\texample.com/app\t(devel)\t\n\
    dep\tgolang.org/x/net\tv0.17.0\th1:abc=\n\
    dep\tgoogle.golang.org/grpc\tv1.33.0\th1:def=\n=>\tgithub.com/fork/grpc\tv1.33.9\th1:ghi=\n\
    dep\tgithub.com/local/thing\tv1.0.0\t\n=>\t../thing\t(devel)\t\nbuild\t-compiler=gc\n\
    build\t-ldflags=\"-s -w\"\nbuild\tGOEXPERIMENT=nocoverageredesign,noswissmap\n";

fn no_memory(_: u64, _: u64) -> Option<Vec<u8>> {
    None
}

#[test]
fn inline_strings_and_modules() {
    let mut window = vec![0u8; 48]; // the header sits at an aligned offset, not at zero
    window.extend(inline_blob("go1.25.5 X:nocoverageredesign", MODINFO));
    let info = parse(&window, no_memory).unwrap();
    assert_eq!(info.version, "go1.25.5 X:nocoverageredesign");
    assert_eq!(info.semver().as_deref(), Some("1.25.5"));
    assert_eq!(info.main_module, "example.com/app");
    let modules: Vec<(&str, &str)> = info
        .modules
        .iter()
        .map(|m| (m.path.as_str(), m.version.as_str()))
        .collect();
    assert_eq!(
        modules,
        [
            ("golang.org/x/net", "v0.17.0"),
            ("google.golang.org/grpc", "v1.33.9"),
            ("github.com/local/thing", "v1.0.0"),
        ]
    );
    assert_eq!(info.setting("-compiler"), Some("gc"));
    assert_eq!(info.setting("-ldflags"), Some("-s -w"));
    assert_eq!(
        info.experiments(),
        ["nocoverageredesign", "nocoverageredesign,noswissmap"]
    );
}

#[test]
fn gopath_build_without_modules() {
    let info = parse(
        &inline_blob("go1.19.8", "path\tcommand-line-arguments\n"),
        no_memory,
    )
    .unwrap();
    assert_eq!(info.semver().as_deref(), Some("1.19.8"));
    assert_eq!(info.main_module, "command-line-arguments");
    // No build settings: only the version string speaks of experiments.
    assert_eq!(info.experiments(), [""]);
    // Without sentinels the modinfo is ignored, as Go does.
    let bare = inline_blob("go1.19", "");
    let info = parse(&bare, no_memory).unwrap();
    assert_eq!(
        (info.semver().as_deref(), info.main_module.as_str()),
        (Some("1.19"), "")
    );
}

#[test]
fn pointer_format_before_go_1_18() {
    // Header pointers at 0x1000 and 0x1010 point to string headers; strings at 0x2000.
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&[8, 0]);
    header.extend_from_slice(&0x1000u64.to_le_bytes());
    header.extend_from_slice(&0x1010u64.to_le_bytes());
    let modinfo = framed("path\tx\nmod\tex.com/old\tv1\t\n");
    let deref = move |vaddr: u64, len: u64| -> Option<Vec<u8>> {
        let string = |ptr: u64, n: usize| [ptr.to_le_bytes(), (n as u64).to_le_bytes()].concat();
        let bytes = match vaddr {
            0x1000 => string(0x2000, 9),
            0x1010 => string(0x3000, modinfo.len()),
            0x2000 => b"go1.16.15".to_vec(),
            0x3000 => modinfo.clone(),
            _ => return None,
        };
        (bytes.len() as u64 == len).then_some(bytes)
    };
    let info = parse(&header, deref).unwrap();
    assert_eq!(
        (info.version.as_str(), info.main_module.as_str()),
        ("go1.16.15", "ex.com/old")
    );
}

#[test]
fn hostile_blobs_are_errors() {
    assert_eq!(parse(b"", no_memory), Err(BuildInfoError::NotGo));
    // Unaligned magic is not a header.
    let mut unaligned = vec![0u8; 3];
    unaligned.extend(inline_blob("go1.22.0", ""));
    assert_eq!(parse(&unaligned, no_memory), Err(BuildInfoError::NotGo));
    // Header cut short.
    assert_eq!(
        parse(&inline_blob("go1.22.0", "")[..20], no_memory),
        Err(BuildInfoError::NotGo)
    );
    // Version longer than the data.
    let mut long = inline_blob("go1.22.0", "");
    long.truncate(HEADER_LEN + 4);
    assert!(matches!(
        parse(&long, no_memory),
        Err(BuildInfoError::Truncated(_))
    ));
    // A 10-byte varint that overflows, and a 1 GiB length.
    let mut overflow = inline_blob("", "");
    overflow.truncate(HEADER_LEN);
    overflow.extend_from_slice(&[0xff; 11]);
    assert!(matches!(
        parse(&overflow, no_memory),
        Err(BuildInfoError::Invalid(_))
    ));
    let mut huge = inline_blob("", "");
    huge.truncate(HEADER_LEN);
    uvarint(1 << 30, &mut huge);
    assert!(matches!(
        parse(&huge, no_memory),
        Err(BuildInfoError::Invalid(_))
    ));
    // Empty version: not Go.
    assert_eq!(
        parse(&inline_blob("", ""), no_memory),
        Err(BuildInfoError::NotGo)
    );
    // Pointer format with bogus pointers and sizes.
    let mut pointers = MAGIC.to_vec();
    pointers.extend_from_slice(&[3, 0]);
    pointers.resize(HEADER_LEN, 0xff);
    assert!(matches!(
        parse(&pointers, no_memory),
        Err(BuildInfoError::Invalid(_))
    ));
    pointers[14] = 8;
    assert!(matches!(
        parse(&pointers, no_memory),
        Err(BuildInfoError::Truncated(_))
    ));
}

fn image_of(bytes: &[u8]) -> Result<ElfImage, crate::inspect::elf::ElfError> {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(bytes).unwrap();
    ElfImage::from_reader(BoundedReader::new(file).unwrap())
}

/// An ELF object with a `.go.buildinfo` section, written by `object`.
fn elf_with_section(contents: &[u8]) -> Vec<u8> {
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
    obj.append_section_data(section, contents, 16);
    obj.write().unwrap()
}

/// A minimal ELF64 executable with one writable `PT_LOAD` at vaddr 0x400000 and no section
/// headers, as a stripped-of-sections binary looks.
fn elf_without_sections(payload: &[u8]) -> Vec<u8> {
    let mut elf = vec![0u8; 64 + 56];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4..8].copy_from_slice(&[2, 1, 1, 0]); // 64-bit, little-endian, version 1
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    elf[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    let ph = 64;
    elf[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    elf[ph + 4..ph + 8].copy_from_slice(&6u32.to_le_bytes()); // PF_R | PF_W
    elf[ph + 8..ph + 16].copy_from_slice(&128u64.to_le_bytes()); // p_offset
    elf[ph + 16..ph + 24].copy_from_slice(&0x400000u64.to_le_bytes()); // p_vaddr
    let size = payload.len() as u64;
    elf[ph + 32..ph + 40].copy_from_slice(&size.to_le_bytes());
    elf[ph + 40..ph + 48].copy_from_slice(&size.to_le_bytes());
    elf.resize(128, 0);
    elf.extend_from_slice(payload);
    elf
}

#[test]
fn reads_the_section_of_an_elf_file() {
    let image = image_of(&elf_with_section(&inline_blob("go1.22.10", MODINFO))).unwrap();
    let info = read(&image).unwrap();
    assert_eq!(
        (info.version.as_str(), info.modules.len()),
        ("go1.22.10", 3)
    );
}

#[test]
fn falls_back_to_the_data_segment_without_section_headers() {
    let image = image_of(&elf_without_sections(&inline_blob("go1.25.5", MODINFO))).unwrap();
    assert!(image.sections.is_empty());
    assert_eq!(read(&image).unwrap().semver().as_deref(), Some("1.25.5"));
}

#[test]
fn truncated_and_hostile_elf_files_are_errors_not_panics() {
    let whole = elf_with_section(&inline_blob("go1.22.10", MODINFO));
    for len in (0..whole.len()).step_by(7) {
        if let Ok(image) = image_of(&whole[..len]) {
            let _ = read(&image);
        }
    }
    // e_shnum = 0 with e_shoff set: the real count comes from section 0's sh_size, here huge.
    let mut huge = elf_without_sections(&[0u8; 64]);
    let shoff = huge.len() as u64;
    huge[40..48].copy_from_slice(&shoff.to_le_bytes());
    let mut section0 = vec![0u8; 64];
    section0[32..40].copy_from_slice(&u64::MAX.to_le_bytes()); // sh_size: section count
    huge.extend_from_slice(&section0);
    assert!(image_of(&huge).is_err());
    // Program headers claiming more bytes than the file holds.
    let mut bogus = elf_without_sections(&[0u8; 8]);
    bogus[56..58].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(image_of(&bogus).is_err());
    // Not an ELF file at all.
    assert!(image_of(b"#!/bin/sh\necho hi\n").is_err());
}
