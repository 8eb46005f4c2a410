//! Writes the Go struct offsets table (`odiglet/src/goelf/offsets_table.json`) from the DWARF
//! of Go programs built by `cargo xtask gen-offsets`:
//! `gen-offsets-table TABLE.json BINARY...`. Every binary must have DWARF. One that links
//! grpc-go gives that grpc-go version's entry (its module fields); the others give their Go
//! minor version's standard-library entry, with the map internals of their layout (a
//! `GOEXPERIMENT=noswissmap` build gives Go 1.24-1.25's bucket maps). Releases of one Go minor must agree, and so must
//! the Go releases building one grpc-go version.
#![expect(clippy::print_stdout, reason = "a tool that reports on the terminal")]

use std::path::PathBuf;

use anyhow::{Context, bail};
use odiglet::{
    goelf::{self, GoVersion, OffsetSource, fields::GRPC_MODULE, offsets_table::OffsetsTable},
    inspect::elf::ElfImage,
};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let out = args
        .next()
        .context("usage: gen-offsets-table TABLE.json BINARY...")?;
    let mut table = OffsetsTable {
        generated_by: "cargo xtask gen-offsets (DWARF of Go programs built with each release)"
            .to_owned(),
        ..OffsetsTable::default()
    };
    for binary in args {
        if record_library(&mut table, &binary)? {
            continue;
        }
        let resolved = goelf::go_offsets(&binary)
            .with_context(|| format!("offsets of {}", binary.display()))?;
        if resolved.source != OffsetSource::Dwarf {
            bail!("{}: offsets did not come from its DWARF", binary.display());
        }
        let version = GoVersion::parse(&resolved.go_version)
            .with_context(|| format!("{}: version {}", binary.display(), resolved.go_version))?;
        let map = resolved
            .map_layout
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("{}: map layout", binary.display()))?;
        table
            .record(version, map, &resolved.offsets)
            .map_err(anyhow::Error::msg)?;
        println!("gen-offsets: go {version} ({map}): {:?}", resolved.offsets);
    }
    std::fs::write(&out, table.to_json())
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}

/// Records the grpc-go entry of `binary` when it links grpc-go; false when it does not.
fn record_library(table: &mut OffsetsTable, binary: &std::path::Path) -> anyhow::Result<bool> {
    let image =
        ElfImage::open(binary).with_context(|| format!("cannot read {}", binary.display()))?;
    let info = goelf::buildinfo::read(&image)
        .with_context(|| format!("{}: build information", binary.display()))?;
    if !info.modules.iter().any(|m| m.path == GRPC_MODULE) {
        return Ok(false);
    }
    let version = GoVersion::parse(&info.version)
        .with_context(|| format!("{}: version {}", binary.display(), info.version))?;
    let partial = goelf::dwarf::read_partial(&image, version, None)
        .with_context(|| format!("{}: DWARF", binary.display()))?
        .with_context(|| format!("{}: no DWARF", binary.display()))?;
    table
        .record_library(GRPC_MODULE, version, &info.modules, &partial.offsets)
        .map_err(anyhow::Error::msg)?;
    println!(
        "gen-offsets: go {version}, {GRPC_MODULE}: {:?}",
        partial.offsets
    );
    Ok(true)
}
