//! Arbitrary bytes as an executable: the bounded ELF summary, Go build info and the string
//! scans must return errors, never panic, loop or allocate without bound.
#![no_main]

use std::io::{Seek, Write};

use libfuzzer_sys::fuzz_target;
use odiglet::{
    goelf::buildinfo,
    inspect::elf::{self, BoundedReader, ElfImage},
};

fuzz_target!(|data: &[u8]| {
    // The reader works on files (pread, no mmap), as it does on /proc/<pid>/exe.
    let Ok(mut file) = tempfile::tempfile_in("/dev/shm").or_else(|_| tempfile::tempfile()) else {
        return;
    };
    if file.write_all(data).and_then(|()| file.rewind()).is_err() {
        return;
    }
    let Ok(reader) = BoundedReader::new(file) else { return };
    let Ok(image) = ElfImage::from_reader(reader) else { return };
    let _ = buildinfo::read(&image);
    let mut budget = elf::SCAN_BUDGET;
    let _ = image.section_contains(".strtab", b"__rust_", &mut budget);
    for range in elf::data_sections(&image) {
        let _ = image.scan(range, b"/rustc/", 41, &mut budget, |hit| hit.get(7..47).map(<[u8]>::to_vec));
    }
    for segment in &image.segments {
        let _ = image.vaddr_to_offset(segment.vaddr.wrapping_add(segment.filesz / 2));
    }
});
