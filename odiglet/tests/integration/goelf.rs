//! Go binary analysis on real Go binaries built here from our own source with Go 1.19, 1.22
//! and 1.25 (and 1.25 with `GOEXPERIMENT=noswissmap`), each with DWARF and stripped: symbols
//! from `.gopclntab` match `.symtab`, every return offset is a RET in the file, DWARF offsets
//! match the shipped table, and stripped binaries fall back to the table.

use std::{fs, path::PathBuf};

use odiglet::{
    goelf::{
        self, GoElfError, GoVersion, OffsetSource, offsets_table,
        symbols::{self, SymbolSource},
    },
    inspect::elf::ElfImage,
};

use crate::support::build;

/// A server and a client, so the probed functions and the structs they read are linked in.
const SERVER_AND_CLIENT: &str = r#"package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s %s %s %s\n", r.Method, r.URL.Path, r.Host, r.RemoteAddr)
	})
	if len(os.Args) > 1 {
		resp, err := http.Get(os.Args[1])
		if err == nil {
			fmt.Println(resp.StatusCode, resp.Proto)
			resp.Body.Close()
		}
		return
	}
	_ = http.ListenAndServe("127.0.0.1:0", mux)
}
"#;

const STRIP: &str = "-ldflags=-s -w";

const FUNCTIONS: &[&str] = &[
    "net/http.serverHandler.ServeHTTP",
    "net/http.(*Transport).roundTrip",
    "net/textproto.(*Reader).readContinuedLineSlice",
];

/// (version, binary with DWARF, stripped binary) per toolchain.
fn binaries() -> Vec<(&'static str, PathBuf, PathBuf)> {
    build::go_toolchains("goelf")
        .into_iter()
        .map(|(version, go)| {
            let full = build::go_std_program("goelf", "full", &go, SERVER_AND_CLIENT, &[]);
            let stripped =
                build::go_std_program("goelf", "stripped", &go, SERVER_AND_CLIENT, &[STRIP]);
            (version, full, stripped)
        })
        .collect()
}

#[test]
fn pclntab_symbols_equal_symtab_symbols() {
    for (version, full, stripped) in binaries() {
        let image = ElfImage::open(&full).expect("readable ELF");
        let from_symtab = symbols::from_symtab(&image, FUNCTIONS).expect("symtab");
        let from_pclntab = symbols::from_pclntab(&image, FUNCTIONS).expect("pclntab");
        assert_eq!(
            from_symtab.len(),
            FUNCTIONS.len(),
            "go {version}: {from_symtab:?}"
        );
        assert_eq!(from_pclntab.len(), FUNCTIONS.len(), "go {version}");
        for function in FUNCTIONS {
            let symtab = from_symtab
                .iter()
                .find(|f| f.name == *function)
                .expect("found");
            let pclntab = from_pclntab
                .iter()
                .find(|f| f.name == *function)
                .expect("found");
            assert_eq!(symtab.entry, pclntab.entry, "go {version} {function}");
            // `.gopclntab` ends a function where the next begins: alignment padding included.
            assert!(
                symtab.end <= pclntab.end && pclntab.end - symtab.end < 64,
                "go {version} {function}: symtab {symtab:?}, pclntab {pclntab:?}"
            );
        }
        let stripped_image = ElfImage::open(&stripped).expect("readable ELF");
        assert!(stripped_image.section(".symtab").is_none(), "go {version}");
        let (ranges, source) = symbols::resolve(&stripped_image, FUNCTIONS).expect("pclntab");
        assert_eq!(source, SymbolSource::Pclntab, "go {version}");
        assert_eq!(ranges.len(), FUNCTIONS.len(), "go {version}: {ranges:?}");
    }
}

#[test]
fn position_independent_binaries_resolve_through_pclntab_too() {
    let Some((version, go)) = build::go_toolchains("goelf").pop() else {
        return;
    };
    let pie = build::go_std_program("goelf", "pie", &go, SERVER_AND_CLIENT, &["-buildmode=pie"]);
    let pie_stripped = build::go_std_program(
        "goelf",
        "pie-stripped",
        &go,
        SERVER_AND_CLIENT,
        &["-buildmode=pie", STRIP],
    );
    let image = ElfImage::open(&pie).expect("readable ELF");
    let from_symtab = symbols::from_symtab(&image, FUNCTIONS).expect("symtab");
    let from_pclntab = symbols::from_pclntab(&image, FUNCTIONS).expect("pclntab");
    let entries = |ranges: &[symbols::FunctionRange]| -> Vec<(String, u64)> {
        let mut entries: Vec<_> = ranges.iter().map(|r| (r.name.clone(), r.entry)).collect();
        entries.sort();
        entries
    };
    assert_eq!(from_symtab.len(), FUNCTIONS.len(), "go {version} pie");
    assert_eq!(
        entries(&from_symtab),
        entries(&from_pclntab),
        "go {version} pie"
    );
    let points = goelf::probe_points(&pie, FUNCTIONS).expect("probe points");
    let stripped_points = goelf::probe_points(&pie_stripped, FUNCTIONS).expect("probe points");
    assert_eq!(points, stripped_points, "go {version} pie");
    let bytes = fs::read(&pie_stripped).expect("readable binary");
    for offset in stripped_points.iter().flat_map(|p| &p.return_offsets) {
        let at = usize::try_from(*offset).expect("64-bit");
        assert_eq!(bytes.get(at), Some(&0xC3), "go {version} pie: {offset:#x}");
    }
}

#[test]
fn every_return_offset_is_a_ret_opcode_in_the_file() {
    for (version, full, stripped) in binaries() {
        let mut all = Vec::new();
        for binary in [&full, &stripped] {
            let bytes = fs::read(binary).expect("readable binary");
            let mut wanted = FUNCTIONS.to_vec();
            wanted.push("no.such/function");
            let points = goelf::probe_points(binary, &wanted).expect("probe points");
            assert_eq!(points.len(), FUNCTIONS.len(), "go {version}: {points:?}");
            for point in &points {
                let what = format!("go {version} {} {}", binary.display(), point.function);
                let entry = usize::try_from(point.entry_offset).expect("64-bit");
                assert!(entry < bytes.len(), "{what}");
                assert!(!point.return_offsets.is_empty(), "{what}: no RET");
                for offset in &point.return_offsets {
                    let at = usize::try_from(*offset).expect("64-bit");
                    assert!(at > entry, "{what}: RET at {offset:#x} before the entry");
                    assert_eq!(bytes.get(at), Some(&0xC3), "{what}: {offset:#x}");
                }
            }
            all.push(points);
        }
        // Stripping removes symbols, not code: same offsets either way.
        assert_eq!(all[0], all[1], "go {version}");
    }
}

#[test]
fn dwarf_offsets_agree_with_the_table_and_stripped_binaries_use_it() {
    let table = offsets_table::shipped();
    for (version, full, stripped) in binaries() {
        let from_dwarf = goelf::go_offsets(&full).expect("offsets from DWARF");
        assert_eq!(from_dwarf.source, OffsetSource::Dwarf, "go {version}");
        assert!(
            from_dwarf.go_version.starts_with(&format!("go{version}")),
            "go {version}"
        );
        let go = GoVersion::parse(&from_dwarf.go_version).expect("version");
        let map = from_dwarf
            .map_layout
            .clone()
            .expect("a default build's map layout");
        let shipped = table
            .lookup(go, Some(map))
            .expect("the table covers this Go version");
        // An optional field (a type the linker dropped because the program never uses it)
        // is unknown to this binary's DWARF, while the table has it from a program that does.
        let mut expected = from_dwarf.offsets;
        for field in goelf::fields::FIELDS.iter().filter(|f| f.optional) {
            let (Some(slot), Some(value)) = (
                goelf::fields::slot(&mut expected, field.key),
                goelf::fields::get(&shipped, field.key),
            ) else {
                continue;
            };
            if *slot == odiglet_common::go::OFFSET_NONE {
                *slot = value;
            }
        }
        assert_eq!(
            expected, shipped,
            "go {version}: DWARF vs table (rerun `cargo xtask gen-offsets`?)"
        );
        let from_table = goelf::go_offsets(&stripped).expect("offsets from the table");
        assert_eq!(from_table.source, OffsetSource::Table, "go {version}");
        assert_eq!(from_table.offsets, expected, "go {version}");
        assert_eq!(from_table.map_layout, Ok(map), "go {version}");
    }
}

/// Go 1.24 and 1.25 built with `GOEXPERIMENT=noswissmap` keep the bucket maps: the build
/// info says so, the DWARF has `runtime.hmap` (no swiss table), and both the DWARF and, when
/// stripped, the table give the hmap offsets; none of the swiss-table ones.
#[test]
fn noswissmap_builds_get_bucket_map_offsets_with_dwarf_and_stripped() {
    use goelf::{MapLayout, fields};
    use odiglet_common::go::OFFSET_NONE;

    let toolchains: Vec<_> = build::go_toolchains("goelf noswissmap")
        .into_iter()
        .filter(|(version, _)| ("1.24"..="1.25").contains(version))
        .collect();
    assert!(!toolchains.is_empty() || std::env::var("CI").as_deref() != Ok("true"));
    let table = offsets_table::shipped();
    for (version, go) in toolchains {
        let build = |variant, flags: &[&str]| {
            build::go_std_program_with(
                "goelf",
                variant,
                &go,
                SERVER_AND_CLIENT,
                flags,
                Some("noswissmap"),
            )
        };
        let (full, stripped) = (
            build("full-noswissmap", &[]),
            build("stripped-noswissmap", &[STRIP]),
        );
        let from_dwarf = goelf::go_offsets(&full).expect("offsets from DWARF");
        assert_eq!(from_dwarf.source, OffsetSource::Dwarf, "go {version}");
        assert!(
            from_dwarf.go_version.ends_with(" X:noswissmap"),
            "go {version}: {}",
            from_dwarf.go_version
        );
        assert_eq!(
            from_dwarf.map_layout,
            Ok(MapLayout::Buckets),
            "go {version}"
        );
        let offsets = from_dwarf.offsets;
        assert!(
            fields::has_map_layout(&offsets, MapLayout::Buckets),
            "go {version}: {offsets:?}"
        );
        assert_eq!(
            (offsets.swiss_dir_ptr, offsets.swiss_groups_data),
            (OFFSET_NONE, OFFSET_NONE),
            "go {version}"
        );
        let image = ElfImage::open(&full).expect("readable ELF");
        let hmap = goelf::dwarf::struct_members(
            &image,
            &[
                ("runtime.hmap", "buckets"),
                ("internal/runtime/maps.Map", "dirPtr"),
            ],
        )
        .expect("DWARF reads")
        .expect("a binary with DWARF");
        assert_eq!(
            hmap.get(&("runtime.hmap", "buckets")).copied(),
            Some(u64::from(offsets.hmap_buckets)),
            "go {version}"
        );
        assert!(
            !hmap.contains_key(&("internal/runtime/maps.Map", "dirPtr")),
            "go {version}: a noswissmap build has no swiss table"
        );
        let go_version = GoVersion::parse(&from_dwarf.go_version).expect("version");
        let shipped = table
            .lookup(go_version, Some(MapLayout::Buckets))
            .expect("the table covers this Go version");
        let mut expected = offsets;
        for field in fields::FIELDS.iter().filter(|f| f.optional) {
            if let (Some(slot), Some(value)) = (
                fields::slot(&mut expected, field.key),
                fields::get(&shipped, field.key),
            ) && *slot == OFFSET_NONE
            {
                *slot = value;
            }
        }
        assert_eq!(
            expected, shipped,
            "go {version}: DWARF vs table (rerun `cargo xtask gen-offsets`?)"
        );

        let from_table = goelf::go_offsets(&stripped).expect("offsets from the table");
        assert_eq!(from_table.source, OffsetSource::Table, "go {version}");
        assert_eq!(
            from_table.map_layout,
            Ok(MapLayout::Buckets),
            "go {version}"
        );
        assert_eq!(from_table.offsets, expected, "go {version} stripped");
    }
}

/// The header-map layout the Go probes assume (`odiglet_common::go::GO_BUCKET_*`,
/// `GO_GROUP_*`) against the compiler's own types, in the binaries whose DWARF has them (the
/// linker synthesizes them for some programs only: Go 1.19's and 1.25's here), and the entry
/// count they read first (`GO_MAP_COUNT`) against the runtime's map headers, in every binary.
#[test]
fn header_map_layout_constants_match_the_compilers_types() {
    use odiglet_common::go::{
        GO_BUCKET_ELEMS, GO_BUCKET_KEYS, GO_BUCKET_OVERFLOW, GO_GROUP_SLOT_ELEM,
        GO_GROUP_SLOTS_OFFSET, GO_MAP_COUNT,
    };
    const BUCKET: &str = "noalg.map.bucket[string][]string";
    const GROUP: &str = "noalg.map.group[string][]string";
    const SLOT: &str = "noalg.struct { key string; elem []string }";
    const HMAP: &str = "runtime.hmap";
    const SWISS_MAP: &str = "internal/runtime/maps.Map";
    let mut checked = Vec::new();
    let binaries = binaries();
    for (version, full, _) in &binaries {
        let image = ElfImage::open(full).expect("readable ELF");
        let members = goelf::dwarf::struct_members(
            &image,
            &[
                (BUCKET, "keys"),
                (BUCKET, "elems"),
                (BUCKET, "overflow"),
                (GROUP, "slots"),
                (SLOT, "elem"),
                (HMAP, "count"),
                (SWISS_MAP, "used"),
            ],
        )
        .expect("DWARF reads")
        .expect("a binary with DWARF");
        let at = |structure, member| members.get(&(structure, member)).map(|o| *o as usize);
        // The header of the map layout this version uses.
        let count = if *version >= "1.24" {
            at(SWISS_MAP, "used")
        } else {
            at(HMAP, "count")
        };
        assert_eq!(count, Some(GO_MAP_COUNT as usize), "go {version}");
        if let Some(keys) = at(BUCKET, "keys") {
            assert_eq!(keys, GO_BUCKET_KEYS, "go {version}");
            assert_eq!(at(BUCKET, "elems"), Some(GO_BUCKET_ELEMS), "go {version}");
            assert_eq!(
                at(BUCKET, "overflow"),
                Some(GO_BUCKET_OVERFLOW),
                "go {version}"
            );
            checked.push(format!("{version} buckets"));
        }
        if let Some(slots) = at(GROUP, "slots") {
            assert_eq!(slots, GO_GROUP_SLOTS_OFFSET, "go {version}");
            assert_eq!(at(SLOT, "elem"), Some(GO_GROUP_SLOT_ELEM), "go {version}");
            checked.push(format!("{version} groups"));
        }
    }
    let versions: Vec<_> = binaries.iter().map(|(v, _, _)| *v).collect();
    if versions.contains(&"1.19") {
        assert!(
            checked.iter().any(|c| c.ends_with("buckets")),
            "{checked:?}"
        );
    }
    if versions.iter().any(|v| *v >= "1.24") {
        assert!(checked.iter().any(|c| c.ends_with("groups")), "{checked:?}");
    }
}

#[test]
fn non_go_and_missing_binaries_give_errors_naming_the_binary() {
    let this = std::env::current_exe().expect("test binary");
    let error = goelf::go_offsets(&this).expect_err("not Go");
    assert!(matches!(error, GoElfError::BuildInfo { .. }), "{error}");
    assert!(error.to_string().contains(&this.display().to_string()));
    let points = goelf::probe_points(&this, FUNCTIONS).expect("an ELF with a symtab");
    assert!(points.is_empty(), "{points:?}");
    let missing = PathBuf::from("/nonexistent/goelf-binary");
    let error = goelf::probe_points(&missing, FUNCTIONS).expect_err("missing");
    assert!(
        error.to_string().contains("/nonexistent/goelf-binary"),
        "{error}"
    );
}
