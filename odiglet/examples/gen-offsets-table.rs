//! Writes the Go struct offsets table (`odiglet/src/goelf/offsets_table.json`) from the DWARF
//! of Go programs built by `cargo xtask gen-offsets`:
//! `gen-offsets-table TABLE.json BINARY...`. Every binary must have DWARF; releases of one
//! minor version must agree.
#![expect(clippy::print_stdout, reason = "a tool that reports on the terminal")]

use std::path::PathBuf;

use anyhow::{Context, bail};
use odiglet::goelf::{self, GoVersion, OffsetSource, offsets_table::OffsetsTable};

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
        let resolved = goelf::go_offsets(&binary)
            .with_context(|| format!("offsets of {}", binary.display()))?;
        if resolved.source != OffsetSource::Dwarf {
            bail!("{}: offsets did not come from its DWARF", binary.display());
        }
        let version = GoVersion::parse(&resolved.go_version)
            .with_context(|| format!("{}: version {}", binary.display(), resolved.go_version))?;
        table
            .record(version, &resolved.offsets)
            .map_err(anyhow::Error::msg)?;
        println!("gen-offsets: go {version}: {:?}", resolved.offsets);
    }
    std::fs::write(&out, table.to_json())
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}
