//! Struct member offsets from a Go binary's own DWARF (`gimli`): `DW_TAG_structure_type`
//! named `net/http.Request` etc., then each `DW_TAG_member`'s `DW_AT_data_member_location`.
//!
//! Handles compressed `.debug_*` sections (`SHF_COMPRESSED` zlib, as Go writes them, and the
//! older `.zdebug_*`) and DWARF 4 and 5 (Go >= 1.25). Decompressed sizes are capped.

use std::{collections::HashMap, io::Read};

use gimli::{EndianSlice, LittleEndian, SectionId};
use object::{CompressionFormat, Object, ObjectSection, read::elf::ElfFile64};
use odiglet_common::go::GoOffsets;
use thiserror::Error;

use super::fields::{self, FIELDS, GoVersion, MapLayout};
use crate::inspect::elf::ElfImage;

/// Largest `.debug_*` section accepted, compressed or not.
pub const MAX_SECTION: u64 = 128 << 20;

/// Why a binary's DWARF gave no offsets.
#[derive(Debug, Error)]
pub enum DwarfError {
    #[error("cannot read section {section}")]
    Section {
        section: &'static str,
        #[source]
        source: object::Error,
    },
    #[error("section {section} is compressed with {format:?}, which is not supported")]
    Compression {
        section: &'static str,
        format: CompressionFormat,
    },
    #[error("cannot decompress section {section}")]
    Decompress {
        section: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("section {section} is larger than {MAX_SECTION} bytes ({size})")]
    TooLarge { section: &'static str, size: u64 },
    #[error("malformed DWARF")]
    Parse(#[from] gimli::Error),
    #[error("no member {member} in DWARF struct {structure}")]
    MissingField {
        structure: &'static str,
        member: &'static str,
    },
    #[error("member {structure}.{member} at offset {offset}, beyond a 32-bit offset")]
    OffsetTooLarge {
        structure: &'static str,
        member: &'static str,
        offset: u64,
    },
}

/// The sections struct offsets need; the rest load as empty.
const NEEDED: &[SectionId] = &[
    SectionId::DebugInfo,
    SectionId::DebugAbbrev,
    SectionId::DebugStr,
    SectionId::DebugStrOffsets,
    SectionId::DebugLineStr,
];

/// Offsets from the binary's DWARF, with the map internals of layout `map` (`None`: none);
/// `Ok(None)` when it has no `.debug_info`.
pub fn read_offsets(
    image: &ElfImage,
    version: GoVersion,
    map: Option<MapLayout>,
) -> Result<Option<GoOffsets>, DwarfError> {
    read_partial(image, version, map)?
        .map(Partial::complete)
        .transpose()
}

/// What the DWARF has of the wanted fields, even when some standard-library ones are missing
/// (the linker drops the types of code it drops: no HTTP client, no `persistConn`).
#[derive(Clone, Debug)]
pub struct Partial {
    pub offsets: GoOffsets,
    /// Standard-library fields the DWARF lacks (their slots are `OFFSET_NONE`).
    pub missing: Vec<&'static fields::Field>,
    /// The map layouts whose runtime structs the DWARF has (of those the Go version can
    /// have): evidence of the binary's real layout.
    pub map_layouts: Vec<MapLayout>,
}

impl Partial {
    /// The offsets when nothing standard is missing, else the first missing field.
    pub fn complete(self) -> Result<GoOffsets, DwarfError> {
        match self.missing.first() {
            None => Ok(self.offsets),
            Some(field) => Err(DwarfError::MissingField {
                structure: field.structure,
                member: field.member,
            }),
        }
    }
}

/// [`read_offsets`] without the completeness check.
pub fn read_partial(
    image: &ElfImage,
    version: GoVersion,
    map: Option<MapLayout>,
) -> Result<Option<Partial>, DwarfError> {
    with_sections(image, |get| extract_partial(get, version, map))
}

/// `(struct, member) -> offset` for the named members the DWARF has; `Ok(None)` without
/// DWARF. For checks of layouts the probes do not read through [`FIELDS`].
pub fn struct_members(
    image: &ElfImage,
    wanted: &[(&'static str, &'static str)],
) -> Result<Option<MemberOffsets>, DwarfError> {
    let fields: Vec<fields::Field> = wanted
        .iter()
        .map(|&(structure, member)| fields::Field {
            key: "",
            structure,
            member,
            since: (1, 17),
            until: None,
            module: None,
            library: None,
            optional: false,
            map: None,
        })
        .collect();
    let refs: Vec<&fields::Field> = fields.iter().collect();
    with_sections(image, |get| member_offsets(get, &refs))
}

/// Runs `read` over the image's DWARF sections (decompressed); `Ok(None)` without DWARF.
fn with_sections<T>(
    image: &ElfImage,
    read: impl for<'a> FnOnce(&dyn Fn(SectionId) -> &'a [u8]) -> Result<T, DwarfError>,
) -> Result<Option<T>, DwarfError> {
    if image.section(".debug_info").is_none() && image.section(".zdebug_info").is_none() {
        return Ok(None);
    }
    let file = ElfFile64::<object::Endianness, _>::parse(&image.reader).map_err(|source| {
        DwarfError::Section {
            section: ".debug_info",
            source,
        }
    })?;
    let mut sections: HashMap<SectionId, Vec<u8>> = HashMap::new();
    for id in NEEDED {
        if let Some(section) = file.section_by_name(id.name()) {
            sections.insert(*id, section_bytes(&section, id.name())?);
        }
    }
    let get = |id: SectionId| sections.get(&id).map_or(&[][..], Vec::as_slice);
    read(&get).map(Some)
}

/// A section's bytes, decompressed when needed.
fn section_bytes<'data>(
    section: &impl ObjectSection<'data>,
    name: &'static str,
) -> Result<Vec<u8>, DwarfError> {
    let compressed = section
        .compressed_data()
        .map_err(|source| DwarfError::Section {
            section: name,
            source,
        })?;
    let size = compressed.uncompressed_size;
    if size > MAX_SECTION {
        return Err(DwarfError::TooLarge {
            section: name,
            size,
        });
    }
    match compressed.format {
        CompressionFormat::None => Ok(compressed.data.to_vec()),
        CompressionFormat::Zlib => {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(compressed.data)
                .take(size)
                .read_to_end(&mut out)
                .map_err(|source| DwarfError::Decompress {
                    section: name,
                    source,
                })?;
            if out.len() as u64 != size {
                return Err(DwarfError::Decompress {
                    section: name,
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
            Ok(out)
        }
        format => Err(DwarfError::Compression {
            section: name,
            format,
        }),
    }
}

/// Fills [`GoOffsets`] from raw (uncompressed, little-endian) DWARF sections. Fields the Go
/// version (or map layout `map`) does not use stay `OFFSET_NONE`; a used standard-library one
/// missing from the DWARF is an error, a missing module one (gRPC) stays `OFFSET_NONE`.
pub fn extract<'a>(
    section: impl Fn(SectionId) -> &'a [u8],
    version: GoVersion,
    map: Option<MapLayout>,
) -> Result<GoOffsets, DwarfError> {
    extract_partial(section, version, map)?.complete()
}

/// [`extract`] without the completeness check.
pub fn extract_partial<'a>(
    section: impl Fn(SectionId) -> &'a [u8],
    version: GoVersion,
    map: Option<MapLayout>,
) -> Result<Partial, DwarfError> {
    // Every map field the version can have is looked up, whatever `map` says: which of them
    // the DWARF has tells the binary's layout.
    let looked_up: Vec<_> = FIELDS
        .iter()
        .filter(|f| f.applies_to(version, map) || (f.map.is_some() && f.exists_in(version)))
        .collect();
    let found = member_offsets(section, &looked_up)?;
    let mut map_layouts = Vec::new();
    for field in &looked_up {
        if let Some(layout) = field.map
            && !map_layouts.contains(&layout)
            && found.contains_key(&(field.structure, field.member))
        {
            map_layouts.push(layout);
        }
    }
    let mut offsets = fields::empty_offsets();
    let mut missing = Vec::new();
    for field in looked_up.into_iter().filter(|f| f.applies_to(version, map)) {
        let offset = match found.get(&(field.structure, field.member)) {
            Some(offset) => *offset,
            // A module the binary does not link (or a version without the field): its
            // library is skipped, the others keep their offsets.
            None if field.module.is_some() || field.optional => continue,
            None => {
                missing.push(field);
                continue;
            }
        };
        let offset = u32::try_from(offset)
            .ok()
            .filter(|o| *o != odiglet_common::go::OFFSET_NONE)
            .ok_or(DwarfError::OffsetTooLarge {
                structure: field.structure,
                member: field.member,
                offset,
            })?;
        if let Some(slot) = fields::slot(&mut offsets, field.key) {
            *slot = offset;
        }
    }
    Ok(Partial {
        offsets,
        missing,
        map_layouts,
    })
}

/// `(struct, member) -> offset`.
pub type MemberOffsets = HashMap<(&'static str, &'static str), u64>;

/// `(struct, member) -> offset` for the members of `wanted`; each struct's first definition.
fn member_offsets<'a>(
    section: impl Fn(SectionId) -> &'a [u8],
    wanted: &[&fields::Field],
) -> Result<MemberOffsets, DwarfError> {
    let sections = gimli::DwarfSections::load(|id| Ok::<_, gimli::Error>(section(id)))?;
    let dwarf = sections.borrow(|bytes| EndianSlice::new(bytes, LittleEndian));
    let mut found = MemberOffsets::new();
    let mut structs_left: Vec<&'static str> = Vec::new();
    for field in wanted {
        if !structs_left.contains(&field.structure) {
            structs_left.push(field.structure);
        }
    }
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        if structs_left.is_empty() {
            break;
        }
        // Not `Dwarf::unit`: it parses the line program, which would need `.debug_line`.
        let abbreviations = dwarf.abbreviations(&header)?;
        let mut entries = header.entries(&abbreviations);
        let mut strings = Strings {
            dwarf: &dwarf,
            format: header.format(),
            base: None,
        };
        // The struct being read and its depth, while inside one we want.
        let mut current: Option<(&'static str, isize)> = None;
        while let Some(entry) = entries.next_dfs()? {
            let depth = entry.depth();
            if depth == 0 {
                strings.base = match entry.attr_value(gimli::DW_AT_str_offsets_base) {
                    Some(gimli::AttributeValue::DebugStrOffsetsBase(base)) => Some(base),
                    _ => None,
                };
            }
            if let Some((structure, struct_depth)) = current {
                if depth > struct_depth {
                    if depth == struct_depth + 1 && entry.tag() == gimli::DW_TAG_member {
                        record_member(&strings, entry, structure, wanted, &mut found);
                    }
                    continue;
                }
                current = None;
            }
            if entry.tag() != gimli::DW_TAG_structure_type {
                continue;
            }
            let Some(name) = strings.name(entry) else {
                continue;
            };
            if let Some(index) = structs_left.iter().position(|s| s.as_bytes() == name) {
                current = Some((structs_left.swap_remove(index), depth));
            }
        }
    }
    Ok(found)
}

type Reader<'a> = EndianSlice<'a, LittleEndian>;
type Entry<'a> = gimli::DebuggingInformationEntry<Reader<'a>>;

/// Resolves `DW_AT_name` in one unit: inline, `.debug_str`, `.debug_line_str` or `strx`.
struct Strings<'d, 'a> {
    dwarf: &'d gimli::Dwarf<Reader<'a>>,
    format: gimli::Format,
    base: Option<gimli::DebugStrOffsetsBase<usize>>,
}

impl<'a> Strings<'_, 'a> {
    fn name(&self, entry: &Entry<'a>) -> Option<&'a [u8]> {
        let name = match entry.attr_value(gimli::DW_AT_name)? {
            gimli::AttributeValue::String(name) => name,
            gimli::AttributeValue::DebugStrRef(offset) => {
                self.dwarf.debug_str.get_str(offset).ok()?
            }
            gimli::AttributeValue::DebugLineStrRef(offset) => {
                self.dwarf.debug_line_str.get_str(offset).ok()?
            }
            gimli::AttributeValue::DebugStrOffsetsIndex(index) => {
                let offset = self
                    .dwarf
                    .debug_str_offsets
                    .get_str_offset(self.format, self.base?, index)
                    .ok()?;
                self.dwarf.debug_str.get_str(offset).ok()?
            }
            _ => return None,
        };
        Some(name.slice())
    }
}

fn record_member<'a>(
    strings: &Strings<'_, 'a>,
    entry: &Entry<'a>,
    structure: &'static str,
    wanted: &[&fields::Field],
    found: &mut MemberOffsets,
) {
    let Some(name) = strings.name(entry) else {
        return;
    };
    let Some(field) = wanted
        .iter()
        .find(|f| f.structure == structure && f.member.as_bytes() == name)
    else {
        return;
    };
    let Some(location) = entry.attr_value(gimli::DW_AT_data_member_location) else {
        return;
    };
    let offset = match location {
        gimli::AttributeValue::Exprloc(expression) => plus_uconst(expression.0.slice()),
        value => value.udata_value(),
    };
    if let Some(offset) = offset {
        found.entry((structure, field.member)).or_insert(offset);
    }
}

/// A DWARF 2 style location: `DW_OP_plus_uconst <uleb128>`.
fn plus_uconst(expression: &[u8]) -> Option<u64> {
    let (&op, rest) = expression.split_first()?;
    if op != gimli::DW_OP_plus_uconst.0 {
        return None;
    }
    gimli::leb128::read::unsigned(&mut EndianSlice::new(rest, LittleEndian)).ok()
}

#[cfg(test)]
mod tests;
