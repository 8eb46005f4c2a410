//! Go binary analysis (pure, no root): what a Go executable says about itself.
//!
//! [`buildinfo`] reads the Go version and the module list from `.go.buildinfo`, which survives
//! `-ldflags=-s -w`. [`probe_points`] gives the file offsets uprobes attach at (function entry
//! and every RET), from `.symtab` or, when stripped, `.gopclntab`. [`go_offsets`] gives the
//! struct field offsets the probes read, from the binary's DWARF or the shipped table.
//! Executables are untrusted: every length read from them is bounded.
#![deny(clippy::indexing_slicing, clippy::cast_possible_truncation)]

pub mod buildinfo;
pub mod dwarf;
pub mod fields;
pub mod offsets_table;
pub mod pclntab;
pub mod returns;
pub mod symbols;

use std::path::{Path, PathBuf};

use odiglet_common::go::GoOffsets;
use thiserror::Error;

pub use buildinfo::{BuildInfo, BuildInfoError, GoModule};
pub use fields::{GoVersion, MapLayout};

use crate::inspect::elf::{ElfError, ElfImage};

/// Longest function whose bytes are read for RET decoding.
pub const MAX_FUNCTION: u64 = 1 << 20;
/// `PF_X`.
const PF_X: u32 = 1;

/// Why a Go binary could not be analyzed. Every variant names the binary.
#[derive(Debug, Error)]
pub enum GoElfError {
    #[error("cannot read {path}")]
    Elf {
        path: PathBuf,
        #[source]
        source: ElfError,
    },
    #[error("{path}: unsupported architecture (ELF machine {machine})")]
    Architecture { path: PathBuf, machine: u16 },
    #[error("{path}: cannot resolve functions")]
    Symbols {
        path: PathBuf,
        #[source]
        source: symbols::SymbolError,
    },
    #[error("{path}: function {function} at {entry:#x}..{end:#x} is not in an executable segment")]
    NotMapped {
        path: PathBuf,
        function: String,
        entry: u64,
        end: u64,
    },
    #[error("{path}: function {function} is {size} bytes, more than {MAX_FUNCTION}")]
    FunctionTooLarge {
        path: PathBuf,
        function: String,
        size: u64,
    },
    #[error("{path}: cannot read function {function}")]
    FunctionBytes {
        path: PathBuf,
        function: String,
        #[source]
        source: ElfError,
    },
    #[error("{path}: no Go build information")]
    BuildInfo {
        path: PathBuf,
        #[source]
        source: BuildInfoError,
    },
    #[error("{path}: unrecognized Go version {version:?}")]
    UnknownVersion { path: PathBuf, version: String },
    #[error("{path}: Go {version} is not supported (the probes need Go >= 1.17)")]
    GoTooOld { path: PathBuf, version: GoVersion },
    #[error(
        "{path}: no struct offsets for Go {version}: {dwarf}, and the offsets table has no Go {minor}"
    )]
    NoOffsets {
        path: PathBuf,
        version: GoVersion,
        minor: String,
        /// Why the binary's DWARF did not do (or that it has none).
        dwarf: String,
    },
}

/// Where uprobes attach for one function: file offsets in the binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbePoints {
    pub function: String,
    pub entry_offset: u64,
    pub return_offsets: Vec<u64>,
}

/// Where [`ResolvedOffsets`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSource {
    /// The binary's own DWARF.
    Dwarf,
    /// The table shipped with odiglet, by Go version.
    Table,
}

/// Struct field offsets for one binary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedOffsets {
    pub offsets: GoOffsets,
    /// As embedded, e.g. `go1.25.5`.
    pub go_version: String,
    pub source: OffsetSource,
    /// The modules compiled in (empty for GOPATH-mode builds), for library version gates.
    pub modules: Vec<GoModule>,
    /// Libraries (module paths) whose offsets came from neither the DWARF nor the table, each
    /// with why the table has none for this binary.
    pub table_gaps: Vec<(&'static str, String)>,
    /// How the binary's maps are laid out, with that layout's offsets in `offsets`; `Err` says
    /// why they are unknown (no map field is then set: incoming trace context is off).
    pub map_layout: Result<MapLayout, String>,
}

/// The libraries whose offsets the table keys by library version.
const TABLE_LIBRARIES: &[&str] = &[fields::GRPC_MODULE];

fn open(binary: &Path) -> Result<ElfImage, GoElfError> {
    ElfImage::open(binary).map_err(|source| GoElfError::Elf {
        path: binary.to_owned(),
        source,
    })
}

/// Entry and RET file offsets of `functions` in `binary`. Functions the binary does not have
/// are absent from the result.
pub fn probe_points(binary: &Path, functions: &[&str]) -> Result<Vec<ProbePoints>, GoElfError> {
    let image = open(binary)?;
    let path = || binary.to_owned();
    let machine = image
        .reader
        .read_exact_at(18, 2)
        .ok()
        .and_then(|b| <[u8; 2]>::try_from(b.as_slice()).ok())
        .map(|b| {
            if image.little_endian {
                u16::from_le_bytes(b)
            } else {
                u16::from_be_bytes(b)
            }
        })
        .unwrap_or(0);
    let arch = returns::Arch::from_machine(machine).ok_or_else(|| GoElfError::Architecture {
        path: path(),
        machine,
    })?;
    let (ranges, _) =
        symbols::resolve(&image, functions).map_err(|source| GoElfError::Symbols {
            path: path(),
            source,
        })?;
    let mut points = Vec::with_capacity(ranges.len());
    for range in ranges {
        let size = range.end - range.entry;
        if size > MAX_FUNCTION {
            return Err(GoElfError::FunctionTooLarge {
                path: path(),
                function: range.name,
                size,
            });
        }
        let Some(entry_offset) = code_offset(&image, range.entry, size) else {
            return Err(GoElfError::NotMapped {
                path: path(),
                function: range.name,
                entry: range.entry,
                end: range.end,
            });
        };
        let code = image
            .reader
            .read_exact_at(entry_offset, size)
            .map_err(|source| GoElfError::FunctionBytes {
                path: path(),
                function: range.name.clone(),
                source,
            })?;
        let return_offsets = returns::return_addresses(arch, &code, range.entry)
            .into_iter()
            .map(|vaddr| entry_offset + (vaddr - range.entry))
            .collect();
        points.push(ProbePoints {
            function: range.name,
            entry_offset,
            return_offsets,
        });
    }
    Ok(points)
}

/// File offset of `[vaddr, vaddr + size)` through the executable `PT_LOAD` that holds it
/// whole (what uprobes attach at).
pub fn code_offset(image: &ElfImage, vaddr: u64, size: u64) -> Option<u64> {
    image
        .segments
        .iter()
        .filter(|s| s.flags & PF_X != 0)
        .find_map(|s| {
            let delta = vaddr.checked_sub(s.vaddr)?;
            (delta.checked_add(size)? <= s.filesz).then(|| s.offset.checked_add(delta))?
        })
}

/// Struct field offsets for `binary`: its DWARF when present, else the shipped table by Go
/// version. Go < 1.17 is refused.
pub fn go_offsets(binary: &Path) -> Result<ResolvedOffsets, GoElfError> {
    let image = open(binary)?;
    let path = || binary.to_owned();
    let info = buildinfo::read(&image).map_err(|source| GoElfError::BuildInfo {
        path: path(),
        source,
    })?;
    let version = GoVersion::parse(&info.version).ok_or_else(|| GoElfError::UnknownVersion {
        path: path(),
        version: info.version.clone(),
    })?;
    if version < fields::MIN_GO {
        return Err(GoElfError::GoTooOld {
            path: path(),
            version,
        });
    }
    // The build info says which map layout the binary has; its DWARF, where it has the
    // runtime's map structs, can only confirm that.
    let claimed = MapLayout::from_build(version, &info.experiments());
    let resolved = |offsets, source, table_gaps, map_layout: Result<MapLayout, String>| {
        let map_layout = map_layout.and_then(|layout| {
            if fields::has_map_layout(&offsets, layout) {
                Ok(layout)
            } else {
                Err(format!(
                    "neither its DWARF nor the shipped table has the offsets of its {layout} \
                     for Go {}",
                    version.minor_key()
                ))
            }
        });
        ResolvedOffsets {
            offsets: fields::only_map_layout(offsets, map_layout.as_ref().ok().copied()),
            go_version: info.version.clone(),
            source,
            modules: info.modules.clone(),
            table_gaps,
            map_layout,
        }
    };
    let table = |map: &Result<MapLayout, String>| {
        offsets_table::shipped().lookup(version, map.as_ref().ok().copied())
    };
    let (dwarf, map_layout) = match dwarf::read_partial(&image, version, claimed.clone().ok()) {
        Ok(Some(mut partial)) => {
            let map_layout = confirmed_by_dwarf(claimed, &partial.map_layouts);
            if map_layout.is_err() {
                // Not the layout it claims: none of the claimed layout's fields is missing,
                // none is used.
                partial.missing.retain(|f| f.map.is_none());
            }
            if partial.missing.is_empty() {
                return Ok(resolved(
                    partial.offsets,
                    OffsetSource::Dwarf,
                    Vec::new(),
                    map_layout,
                ));
            }
            // Standard fields the linker dropped with unused code: the table gives them, the
            // DWARF still gives the modules' (which the table has not).
            if let Some(table) = table(&map_layout) {
                return Ok(resolved(
                    with_module_fields(table, &partial.offsets),
                    OffsetSource::Table,
                    Vec::new(),
                    map_layout,
                ));
            }
            let lacks: Vec<String> = partial
                .missing
                .iter()
                .map(|f| format!("{}.{}", f.structure, f.member))
                .collect();
            (format!("its DWARF lacks {}", lacks.join(", ")), map_layout)
        }
        Ok(None) => ("the binary has no DWARF".to_owned(), claimed),
        Err(error) => (
            format!("its DWARF does not do ({})", error_chain(&error)),
            claimed,
        ),
    };
    match table(&map_layout) {
        Some(mut offsets) => {
            // No DWARF for the libraries either: the table by their versions.
            let mut table_gaps = Vec::new();
            for library in TABLE_LIBRARIES {
                let filled =
                    offsets_table::shipped().fill_library(library, &info.modules, &mut offsets);
                if let Err(why) = filled {
                    table_gaps.push((*library, why));
                }
            }
            Ok(resolved(
                offsets,
                OffsetSource::Table,
                table_gaps,
                map_layout,
            ))
        }
        None => Err(GoElfError::NoOffsets {
            path: path(),
            version,
            minor: version.minor_key(),
            dwarf,
        }),
    }
}

/// The layout the build info claims, unless the DWARF has the runtime structs of another
/// layout only.
fn confirmed_by_dwarf(
    claimed: Result<MapLayout, String>,
    in_dwarf: &[MapLayout],
) -> Result<MapLayout, String> {
    let claimed = claimed?;
    match in_dwarf {
        [only] if *only != claimed => Err(format!(
            "its build info says {claimed} but its DWARF has {only}"
        )),
        _ => Ok(claimed),
    }
}

/// `table` with the module (non-standard) fields taken from `dwarf`.
fn with_module_fields(mut table: GoOffsets, dwarf: &GoOffsets) -> GoOffsets {
    for field in fields::FIELDS.iter().filter(|f| f.module.is_some()) {
        if let (Some(slot), Some(value)) = (
            fields::slot(&mut table, field.key),
            fields::get(dwarf, field.key),
        ) {
            *slot = value;
        }
    }
    table
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests;
