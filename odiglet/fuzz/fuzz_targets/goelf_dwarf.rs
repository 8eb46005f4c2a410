//! DWARF struct offset extraction from arbitrary `.debug_info`/`.debug_abbrev`/`.debug_str`
//! bytes (DWARF 4 and 5): errors, never panics.
#![no_main]

use gimli::SectionId;
use libfuzzer_sys::fuzz_target;
use odiglet::goelf::{GoVersion, dwarf, fields::MapLayout};

fuzz_target!(|data: &[u8]| {
    // Two length bytes each for the abbreviations and strings, then `.debug_info`.
    let (Some(&[a0, a1, s0, s1]), Some(rest)) = (data.get(..4), data.get(4..)) else {
        return;
    };
    let abbrev_len = usize::from(u16::from_le_bytes([a0, a1])).min(rest.len());
    let (abbrev, rest) = rest.split_at(abbrev_len);
    let str_len = usize::from(u16::from_le_bytes([s0, s1])).min(rest.len());
    let (strings, info) = rest.split_at(str_len);
    for (version, map) in [
        (GoVersion::new(1, 22, 0), MapLayout::Buckets),
        (GoVersion::new(1, 25, 0), MapLayout::Swiss),
        (GoVersion::new(1, 25, 0), MapLayout::Buckets),
    ] {
        let _ = dwarf::extract(
            |id| match id {
                SectionId::DebugInfo => info,
                SectionId::DebugAbbrev => abbrev,
                SectionId::DebugStr | SectionId::DebugLineStr => strings,
                _ => &[],
            },
            version,
            Some(map),
        );
    }
});
