//! The offsets table shipped with odiglet for binaries without DWARF (`-ldflags=-s -w`):
//! `offsets_table.json`, keyed by Go `major.minor`, written by `cargo xtask gen-offsets` from
//! the DWARF of programs built with each toolchain. Standard-library struct layouts do not
//! change within a minor release; each entry records the exact releases it was checked on.

use std::{collections::BTreeMap, sync::OnceLock};

use odiglet_common::go::{GoOffsets, OFFSET_NONE};
use serde::{Deserialize, Serialize};

use super::fields::{self, FIELDS, GoVersion};

/// The table as checked in.
pub const TABLE_JSON: &str = include_str!("offsets_table.json");

/// The file: one entry per Go minor release.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetsTable {
    /// How the file was made.
    pub generated_by: String,
    /// `major.minor` -> entry.
    pub versions: BTreeMap<String, TableEntry>,
}

/// Offsets for one Go minor release.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// Exact Go releases whose DWARF gave these offsets.
    pub checked: Vec<String>,
    /// [`fields::Field::key`] -> offset; absent (or `null`) means the field does not exist.
    pub offsets: BTreeMap<String, Option<u32>>,
}

impl OffsetsTable {
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The entry for `version`'s minor release, as [`GoOffsets`] gated by version.
    pub fn lookup(&self, version: GoVersion) -> Option<GoOffsets> {
        let entry = self.versions.get(&version.minor_key())?;
        let mut offsets = fields::empty_offsets();
        for field in FIELDS.iter().filter(|f| f.applies_to(version)) {
            let value = entry.offsets.get(field.key).copied().flatten();
            // Module fields (gRPC) are optional: the table holds the standard library's.
            let value = match (value, field.module) {
                (Some(value), _) => value,
                (None, Some(_)) => continue,
                (None, None) => return None,
            };
            *fields::slot(&mut offsets, field.key)? = value;
        }
        Some(offsets)
    }

    /// Records the standard library's `offsets`, found in the DWARF of Go `version`. Fails when another release of the
    /// same minor gave different offsets (the table's key would then be wrong).
    pub fn record(&mut self, version: GoVersion, offsets: &GoOffsets) -> Result<(), String> {
        let values: BTreeMap<String, Option<u32>> = FIELDS
            .iter()
            .filter(|f| f.module.is_none())
            .map(|f| {
                let value = fields::get(offsets, f.key).filter(|v| *v != OFFSET_NONE);
                (f.key.to_owned(), value)
            })
            .collect();
        let entry = self.versions.entry(version.minor_key()).or_default();
        if !entry.checked.is_empty() && entry.offsets != values {
            return Err(format!(
                "Go {version} and {} have different offsets: key the table by patch release",
                entry.checked.join(", ")
            ));
        }
        entry.offsets = values;
        let exact = version.to_string();
        if !entry.checked.contains(&exact) {
            entry.checked.push(exact);
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        let mut json = serde_json::to_string_pretty(self).unwrap_or_default();
        json.push('\n');
        json
    }
}

/// The shipped table, parsed once; empty if it does not parse (a unit test makes sure it does).
pub fn shipped() -> &'static OffsetsTable {
    static TABLE: OnceLock<OffsetsTable> = OnceLock::new();
    TABLE.get_or_init(|| OffsetsTable::parse(TABLE_JSON).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_table_parses_and_covers_go_1_19_and_1_21_to_1_27() {
        let table = OffsetsTable::parse(TABLE_JSON).expect("offsets_table.json parses");
        for minor in [19, 21, 22, 23, 24, 25, 26, 27] {
            let version = GoVersion::new(1, minor, 0);
            let entry = table.versions.get(&version.minor_key());
            let entry = entry.unwrap_or_else(|| panic!("no entry for Go 1.{minor}"));
            assert!(
                !entry.checked.is_empty(),
                "Go 1.{minor}: no checked release"
            );
            let offsets = table
                .lookup(version)
                .unwrap_or_else(|| panic!("Go 1.{minor}: incomplete entry"));
            assert_eq!(offsets.request_method, 0, "Go 1.{minor}: Method is first");
            assert_ne!(offsets.url_path, OFFSET_NONE);
            assert_eq!(offsets.request_pattern == OFFSET_NONE, minor < 23);
            assert_eq!(offsets.request_pat == OFFSET_NONE, minor != 22);
            assert_eq!(offsets.pattern_str == OFFSET_NONE, minor != 22);
        }
        assert!(table.lookup(GoVersion::new(1, 99, 0)).is_none());
    }

    #[test]
    fn record_round_trips_and_refuses_conflicts() {
        let mut offsets = fields::empty_offsets();
        for (index, field) in FIELDS.iter().enumerate() {
            if field.applies_to(GoVersion::new(1, 22, 0)) && field.module.is_none() {
                let value = u32::try_from(index * 8).expect("small");
                *fields::slot(&mut offsets, field.key).expect("slot") = value;
            }
        }
        let mut table = OffsetsTable::default();
        table
            .record(GoVersion::new(1, 22, 10), &offsets)
            .expect("first");
        table
            .record(GoVersion::new(1, 22, 3), &offsets)
            .expect("same");
        let parsed = OffsetsTable::parse(&table.to_json()).expect("round trip");
        assert_eq!(parsed, table);
        assert_eq!(parsed.lookup(GoVersion::new(1, 22, 1)), Some(offsets));
        offsets.url_path += 8;
        assert!(table.record(GoVersion::new(1, 22, 4), &offsets).is_err());
    }
}
