//! The offsets table shipped with odiglet for binaries without DWARF (`-ldflags=-s -w`):
//! `offsets_table.json`, written by `cargo xtask gen-offsets` from the DWARF of programs built
//! with each toolchain (`cargo xtask gen-offsets --check` tells whether it is current).
//! Standard-library offsets are keyed by Go `major.minor` (layouts do not change within a
//! minor release); each entry records the exact releases it was checked on. A library's
//! offsets (grpc-go's) are keyed by the library's exact version from the binary's module list,
//! and hold only if the other modules whose structs they cover (genproto, x/net) are at the
//! versions they were read from: anything else is unknown, never guessed.

use std::{collections::BTreeMap, sync::OnceLock};

use odiglet_common::go::{GoOffsets, OFFSET_NONE};
use serde::{Deserialize, Serialize};

use super::{
    buildinfo::GoModule,
    fields::{self, FIELDS, GoVersion, MapLayout},
};

/// The table as checked in.
pub const TABLE_JSON: &str = include_str!("offsets_table.json");

/// The file: one entry per Go minor release.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetsTable {
    /// How the file was made.
    pub generated_by: String,
    /// `major.minor` -> entry.
    pub versions: BTreeMap<String, TableEntry>,
    /// Library module path (`google.golang.org/grpc`) -> its version (`v1.33.3`) -> entry.
    #[serde(default)]
    pub libraries: BTreeMap<String, BTreeMap<String, LibraryEntry>>,
}

/// Offsets for one release of a library, good for every Go release it was checked on (the
/// generator refuses to write one whose offsets depend on the Go release).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LibraryEntry {
    /// Exact Go releases whose builds gave these offsets.
    pub checked_go: Vec<String>,
    /// The other modules whose structs are in `offsets` -> the version they were read from.
    pub modules: BTreeMap<String, String>,
    /// [`fields::Field::key`] -> offset.
    pub offsets: BTreeMap<String, Option<u32>>,
}

/// The version `modules` lists for module `path`.
fn module_version<'a>(modules: &'a [GoModule], path: &str) -> Option<&'a str> {
    modules
        .iter()
        .find(|m| m.path == path)
        .map(|m| m.version.as_str())
}

/// Offsets for one Go minor release.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// Exact Go releases whose DWARF gave these offsets (default builds).
    pub checked: Vec<String>,
    /// Exact Go releases whose `GOEXPERIMENT=noswissmap` builds gave the bucket-map offsets
    /// (Go 1.24-1.25, whose default builds have swiss tables).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checked_noswissmap: Vec<String>,
    /// [`fields::Field::key`] -> offset; absent (or `null`) means the field does not exist.
    pub offsets: BTreeMap<String, Option<u32>>,
}

impl OffsetsTable {
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// The entry for `version`'s minor release, as [`GoOffsets`] gated by version, with the
    /// map internals of layout `map`. Those are all [`OFFSET_NONE`] when the entry lacks one
    /// (`map` unknown, or no build with that layout was read): only the incoming-context
    /// probe needs them ([`fields::has_map_layout`] tells).
    pub fn lookup(&self, version: GoVersion, map: Option<MapLayout>) -> Option<GoOffsets> {
        let entry = self.versions.get(&version.minor_key())?;
        let mut offsets = fields::empty_offsets();
        let mut map_known = true;
        for field in FIELDS.iter().filter(|f| f.applies_to(version, map)) {
            let value = entry.offsets.get(field.key).copied().flatten();
            // Module fields (gRPC) are optional: the table holds the standard library's.
            let value = match value {
                Some(value) => value,
                None if field.module.is_some() || field.optional => continue,
                None if field.map.is_some() => {
                    map_known = false;
                    continue;
                }
                None => return None,
            };
            *fields::slot(&mut offsets, field.key)? = value;
        }
        Some(fields::only_map_layout(offsets, map.filter(|_| map_known)))
    }

    /// Records the standard library's `offsets`, found in the DWARF of a Go `version` build
    /// whose maps are laid out as `map`: the map fields of that layout and every other
    /// standard field. Fails when another release of the same minor gave different offsets
    /// (the table's key would then be wrong).
    pub fn record(
        &mut self,
        version: GoVersion,
        map: MapLayout,
        offsets: &GoOffsets,
    ) -> Result<(), String> {
        let default_build = MapLayout::from_build(version, &[]) == Ok(map);
        let entry = self.versions.entry(version.minor_key()).or_default();
        let mut values = entry.offsets.clone();
        let mut conflicts = Vec::new();
        for field in FIELDS.iter().filter(|f| f.module.is_none()) {
            let value = fields::get(offsets, field.key).filter(|v| *v != OFFSET_NONE);
            let Some(layout) = field.map else {
                // Both kinds of build of a release read the same structs.
                let checked = !entry.checked.is_empty() || !entry.checked_noswissmap.is_empty();
                if checked && entry.offsets.get(field.key) != Some(&value) {
                    conflicts.push(field.key);
                }
                values.insert(field.key.to_owned(), value);
                continue;
            };
            if layout != map {
                values.entry(field.key.to_owned()).or_insert(None);
                continue;
            }
            let checked = if default_build {
                &entry.checked
            } else {
                &entry.checked_noswissmap
            };
            if !checked.is_empty() && entry.offsets.get(field.key) != Some(&value) {
                conflicts.push(field.key);
            }
            values.insert(field.key.to_owned(), value);
        }
        if !conflicts.is_empty() {
            let mut releases = entry.checked.clone();
            releases.extend(entry.checked_noswissmap.iter().cloned());
            return Err(format!(
                "Go {version} and {} have different offsets ({}): key the table by patch \
                 release",
                releases.join(", "),
                conflicts.join(", ")
            ));
        }
        entry.offsets = values;
        let checked = if default_build {
            &mut entry.checked
        } else {
            &mut entry.checked_noswissmap
        };
        let exact = version.to_string();
        if !checked.contains(&exact) {
            checked.push(exact);
        }
        Ok(())
    }

    /// Fills `offsets` with the module fields of `library`'s entry for the version `modules`
    /// (the binary's module list) names. `Err` says why the table cannot give them; `offsets`
    /// is then untouched.
    pub fn fill_library(
        &self,
        library: &str,
        modules: &[GoModule],
        offsets: &mut GoOffsets,
    ) -> Result<(), String> {
        let known = || {
            let versions: Vec<&str> = self
                .libraries
                .get(library)
                .into_iter()
                .flat_map(|entries| entries.keys().map(String::as_str))
                .collect();
            if versions.is_empty() {
                "none".to_owned()
            } else {
                versions.join(", ")
            }
        };
        let version = module_version(modules, library).ok_or_else(|| {
            format!("the binary's module list does not name its {library} version")
        })?;
        let entry = self
            .libraries
            .get(library)
            .and_then(|entries| entries.get(version))
            .ok_or_else(|| {
                format!(
                    "the shipped table has no {library} {version} (it has {})",
                    known()
                )
            })?;
        for (module, checked) in &entry.modules {
            let linked = module_version(modules, module).unwrap_or("none");
            if linked != checked {
                return Err(format!(
                    "the shipped table's {library} {version} offsets were read with {module} \
                     {checked}, the binary links {linked}"
                ));
            }
        }
        let mut filled = *offsets;
        for field in library_fields(library) {
            if let (Some(slot), Some(Some(value))) = (
                fields::slot(&mut filled, field.key),
                entry.offsets.get(field.key),
            ) {
                *slot = *value;
            }
        }
        *offsets = filled;
        Ok(())
    }

    /// Records `library`'s offsets, found in the DWARF of a binary built by Go `go` whose
    /// module list is `modules`. Fails when another Go release gave different offsets or other
    /// module versions for the same library version.
    pub fn record_library(
        &mut self,
        library: &str,
        go: GoVersion,
        modules: &[GoModule],
        offsets: &GoOffsets,
    ) -> Result<(), String> {
        let version = module_version(modules, library)
            .ok_or_else(|| format!("the binary does not link {library}"))?;
        let values: BTreeMap<String, Option<u32>> = library_fields(library)
            .map(|f| {
                let value = fields::get(offsets, f.key).filter(|v| *v != OFFSET_NONE);
                (f.key.to_owned(), value)
            })
            .collect();
        let others: BTreeMap<String, String> = library_fields(library)
            .filter_map(|f| f.module.filter(|m| *m != library))
            .filter_map(|m| Some((m.to_owned(), module_version(modules, m)?.to_owned())))
            .collect();
        let entry = self
            .libraries
            .entry(library.to_owned())
            .or_default()
            .entry(version.to_owned())
            .or_default();
        if !entry.checked_go.is_empty() && (entry.offsets != values || entry.modules != others) {
            return Err(format!(
                "{library} {version}: Go {go} and {} give different offsets or modules: key \
                 its entries by Go release too",
                entry.checked_go.join(", ")
            ));
        }
        entry.offsets = values;
        entry.modules = others;
        let exact = go.to_string();
        if !entry.checked_go.contains(&exact) {
            entry.checked_go.push(exact);
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        let mut json = serde_json::to_string_pretty(self).unwrap_or_default();
        json.push('\n');
        json
    }
}

/// The module fields `library`'s probes read (its own structs and those of the modules it
/// uses).
fn library_fields(library: &str) -> impl Iterator<Item = &'static fields::Field> + '_ {
    FIELDS.iter().filter(move |f| f.library == Some(library))
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
            let default = MapLayout::from_build(version, &[]).expect("a default layout");
            let offsets = table
                .lookup(version, Some(default))
                .unwrap_or_else(|| panic!("Go 1.{minor}: incomplete entry"));
            assert!(
                fields::has_map_layout(&offsets, default),
                "Go 1.{minor}: {default}"
            );
            // Go 1.24 and 1.25 also build with `GOEXPERIMENT=noswissmap`: bucket maps.
            let buckets = table.lookup(version, Some(MapLayout::Buckets));
            let buckets = buckets.unwrap_or_else(|| panic!("Go 1.{minor}: incomplete entry"));
            assert_eq!(
                fields::has_map_layout(&buckets, MapLayout::Buckets),
                minor <= 25,
                "Go 1.{minor}: bucket maps"
            );
            assert_eq!(buckets.swiss_dir_ptr, OFFSET_NONE, "Go 1.{minor}");
            assert_eq!(
                entry.checked_noswissmap.is_empty(),
                !(24..=25).contains(&minor),
                "Go 1.{minor}"
            );
            // Layout unknown: the rest of the offsets, no map field.
            let unknown = table.lookup(version, None).expect("the same entry");
            assert_eq!(unknown, fields::only_map_layout(offsets, None));
            assert_eq!(unknown.request_header, offsets.request_header);
            assert_eq!(offsets.request_method, 0, "Go 1.{minor}: Method is first");
            assert_ne!(offsets.url_path, OFFSET_NONE);
            assert_eq!(offsets.request_pattern == OFFSET_NONE, minor < 23);
            assert_eq!(offsets.request_pat == OFFSET_NONE, minor != 22);
            assert_eq!(offsets.pattern_str == OFFSET_NONE, minor != 22);
        }
        assert!(table.lookup(GoVersion::new(1, 99, 0), None).is_none());
    }

    #[test]
    fn shipped_table_is_in_the_generators_format() {
        // Not a regeneration (`cargo xtask gen-offsets --check` is): catches hand edits that
        // change the layout, order or formatting the generator writes.
        let table = OffsetsTable::parse(TABLE_JSON).expect("offsets_table.json parses");
        assert!(
            TABLE_JSON == table.to_json(),
            "run `cargo xtask gen-offsets`"
        );
        assert!(
            table
                .versions
                .values()
                .all(|e| e.offsets.contains_key("tcp_addr_ip"))
        );
    }

    fn module(path: &str, version: &str) -> GoModule {
        GoModule {
            path: path.to_owned(),
            version: version.to_owned(),
        }
    }

    /// The module list of a build against Debian's grpc-go (`golang-google-grpc-dev`).
    fn debian_grpc_modules() -> Vec<GoModule> {
        vec![
            module("golang.org/x/net", "v0.7.0"),
            module(
                "google.golang.org/genproto",
                "v0.0.0-20200413000000-b5235f6",
            ),
            module(fields::GRPC_MODULE, "v1.33.3"),
        ]
    }

    #[test]
    fn grpc_offsets_come_by_the_linked_grpc_version_and_nothing_else() {
        let table = shipped();
        let grpc_fields = || {
            FIELDS
                .iter()
                .filter(|f| f.library == Some(fields::GRPC_MODULE))
        };
        let mut offsets = fields::empty_offsets();
        table
            .fill_library(fields::GRPC_MODULE, &debian_grpc_modules(), &mut offsets)
            .expect("grpc-go v1.33.3 is in the table");
        for field in grpc_fields() {
            assert_ne!(
                fields::get(&offsets, field.key),
                Some(OFFSET_NONE),
                "{}",
                field.key
            );
        }
        assert_eq!(
            offsets.request_method, OFFSET_NONE,
            "only the library's fields"
        );

        let untouched = fields::empty_offsets();
        let refuse = |modules: &[GoModule]| {
            let mut offsets = untouched;
            let why = table
                .fill_library(fields::GRPC_MODULE, modules, &mut offsets)
                .expect_err("not covered");
            assert_eq!(offsets, untouched, "{why}");
            why
        };
        let with = |path: &str, version: &str| {
            let mut modules = debian_grpc_modules();
            for module in modules.iter_mut().filter(|m| m.path == path) {
                module.version = version.to_owned();
            }
            modules
        };
        let why = refuse(&with(fields::GRPC_MODULE, "v1.34.0"));
        assert!(why.contains("v1.34.0") && why.contains("v1.33.3"), "{why}");
        let why = refuse(&with("golang.org/x/net", "v0.8.0"));
        assert!(
            why.contains("golang.org/x/net") && why.contains("v0.8.0"),
            "{why}"
        );
        let why = refuse(&[]);
        assert!(why.contains("module list"), "{why}");
    }

    #[test]
    fn library_entries_refuse_go_releases_that_disagree() {
        let mut offsets = fields::empty_offsets();
        offsets.grpc_stream_id = 8;
        offsets.rpc_status_code = 0;
        let modules = debian_grpc_modules();
        let mut table = OffsetsTable::default();
        for go in [GoVersion::new(1, 19, 8), GoVersion::new(1, 25, 5)] {
            table
                .record_library(fields::GRPC_MODULE, go, &modules, &offsets)
                .expect("same offsets");
        }
        let entry = table
            .libraries
            .get(fields::GRPC_MODULE)
            .and_then(|entries| entries.get("v1.33.3"))
            .expect("the entry");
        assert_eq!(entry.checked_go, ["1.19.8", "1.25.5"]);
        assert_eq!(
            entry.modules.get("golang.org/x/net").map(String::as_str),
            Some("v0.7.0")
        );
        assert_eq!(
            OffsetsTable::parse(&table.to_json()).expect("round trip"),
            table
        );
        offsets.grpc_stream_id = 16;
        let conflict = table.record_library(
            fields::GRPC_MODULE,
            GoVersion::new(1, 22, 1),
            &modules,
            &offsets,
        );
        assert!(conflict.is_err());
        assert!(
            table
                .record_library(fields::GRPC_MODULE, GoVersion::new(1, 22, 1), &[], &offsets)
                .is_err()
        );
    }

    #[test]
    fn record_round_trips_and_refuses_conflicts() {
        let go122 = GoVersion::new(1, 22, 0);
        let mut offsets = fields::empty_offsets();
        for (index, field) in FIELDS.iter().enumerate() {
            if field.applies_to(go122, Some(MapLayout::Buckets)) && field.module.is_none() {
                let value = u32::try_from(index * 8).expect("small");
                *fields::slot(&mut offsets, field.key).expect("slot") = value;
            }
        }
        let mut table = OffsetsTable::default();
        let buckets = MapLayout::Buckets;
        table
            .record(GoVersion::new(1, 22, 10), buckets, &offsets)
            .expect("first");
        table
            .record(GoVersion::new(1, 22, 3), buckets, &offsets)
            .expect("same");
        let parsed = OffsetsTable::parse(&table.to_json()).expect("round trip");
        assert_eq!(parsed, table);
        assert_eq!(
            parsed.lookup(GoVersion::new(1, 22, 1), Some(buckets)),
            Some(offsets)
        );
        offsets.url_path += 8;
        let conflict = table.record(GoVersion::new(1, 22, 4), buckets, &offsets);
        assert!(conflict.is_err_and(|why| why.contains("url_path")));
    }

    /// Go 1.25's default build (swiss tables) and its `GOEXPERIMENT=noswissmap` build (bucket
    /// maps) fill one entry; each keeps the other's map fields, and both must agree on the rest.
    #[test]
    fn default_and_noswissmap_builds_share_an_entry() {
        let go125 = GoVersion::new(1, 25, 5);
        let with = |map: MapLayout| {
            let mut offsets = fields::empty_offsets();
            for (index, field) in FIELDS.iter().enumerate() {
                if field.applies_to(go125, Some(map)) && field.module.is_none() {
                    let value = u32::try_from(index * 8 + 1).expect("small");
                    *fields::slot(&mut offsets, field.key).expect("slot") = value;
                }
            }
            offsets
        };
        let (swiss, buckets) = (with(MapLayout::Swiss), with(MapLayout::Buckets));
        for order in [
            [MapLayout::Swiss, MapLayout::Buckets],
            [MapLayout::Buckets, MapLayout::Swiss],
        ] {
            let mut table = OffsetsTable::default();
            for map in order {
                let offsets = if map == MapLayout::Swiss {
                    &swiss
                } else {
                    &buckets
                };
                table.record(go125, map, offsets).expect("agreeing builds");
            }
            let entry = table.versions.get("1.25").expect("entry");
            assert_eq!(entry.checked, ["1.25.5"]);
            assert_eq!(entry.checked_noswissmap, ["1.25.5"]);
            assert_eq!(table.lookup(go125, Some(MapLayout::Swiss)), Some(swiss));
            assert_eq!(table.lookup(go125, Some(MapLayout::Buckets)), Some(buckets));
            assert_eq!(
                OffsetsTable::parse(&table.to_json()).expect("round trip"),
                table
            );
        }
        // A noswissmap build whose `Request` differs from the default build's: refused.
        let mut table = OffsetsTable::default();
        table
            .record(go125, MapLayout::Swiss, &swiss)
            .expect("first");
        let mut odd = buckets;
        odd.request_host += 8;
        assert!(table.record(go125, MapLayout::Buckets, &odd).is_err());
        // Without a noswissmap build, bucket maps are unknown: no map field, the rest holds.
        let only_swiss = table
            .lookup(go125, Some(MapLayout::Buckets))
            .expect("entry");
        assert!(!fields::has_map_layout(&only_swiss, MapLayout::Buckets));
        assert_eq!(only_swiss, fields::only_map_layout(swiss, None));
    }
}
