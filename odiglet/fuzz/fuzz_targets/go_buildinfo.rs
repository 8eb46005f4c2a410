//! Arbitrary bytes as the data start of a Go binary: the header search, inline strings and the
//! pre-1.18 pointer format (pointers resolved into the same bytes) must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use odiglet::goelf::buildinfo;

fuzz_target!(|data: &[u8]| {
    let deref = |vaddr: u64, len: u64| -> Option<Vec<u8>> {
        let start = usize::try_from(vaddr).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        data.get(start..end).map(<[u8]>::to_vec)
    };
    if let Ok(info) = buildinfo::parse(data, deref) {
        let _ = info.semver();
    }
});
