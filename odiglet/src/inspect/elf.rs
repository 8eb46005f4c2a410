//! Bounded reads of executables from untrusted images: a [`BoundedReader`] that `object`
//! parses through (every read capped, a total byte budget per file), an [`ElfImage`] summary
//! (interpreter, needed libraries, sections, segments) and chunked string searches.
//!
//! Nothing here maps a file: reads go through `object::read::ReadCache` or `pread`, so a
//! hostile file can cost at most [`READ_BUDGET`] bytes of memory and [`SCAN_BUDGET`] bytes of I/O.

use std::{
    cell::{Cell, RefCell},
    collections::HashSet,
    fs::File,
    io,
    ops::Range,
    os::unix::fs::FileExt,
    path::Path,
};

use object::{
    FileKind, Object, ObjectSection, ReadCache, ReadRef,
    elf::{PT_INTERP, PT_LOAD, SHF_ALLOC, SHF_EXECINSTR, SHT_DYNAMIC},
    read::elf::{Dyn, ElfFile, FileHeader, ProgramHeader, SectionHeader},
};
use thiserror::Error;

/// Largest single read `object` may make (section headers, a string table, a symbol table).
pub const MAX_READ: u64 = 16 << 20;
/// Bytes all reads of one file may return together; bounds the read cache's memory.
pub const READ_BUDGET: u64 = 48 << 20;
/// Bytes a chunked search may scan in one file.
pub const SCAN_BUDGET: u64 = 256 << 20;
/// Sections and segments kept in the summary; real executables have a few dozen.
const MAX_SECTIONS: usize = 4096;
const MAX_NEEDED: usize = 512;
const DT_NULL: i64 = 0;
const DT_NEEDED: i64 = 1;
/// Longest interpreter path or needed-library name we keep.
const MAX_NAME: usize = 4096;
/// Block size for string lookups (a power of two).
const STRING_BLOCK: u64 = 4096;
/// Chunk size of [`ElfImage::scan`]; small enough to stay in cache.
const SCAN_CHUNK: usize = 256 << 10;

/// Why an executable could not be read as an ELF file.
#[derive(Debug, Error)]
pub enum ElfError {
    #[error("cannot open {path}")]
    Open {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("not an ELF executable ({kind})")]
    NotElf { kind: String },
    #[error("malformed ELF: {0}")]
    Malformed(#[from] object::Error),
    #[error("ELF data out of the file ({len} bytes at offset {offset})")]
    Truncated { offset: u64, len: u64 },
    #[error("ELF {what} exceeds the limit of {limit}")]
    TooLarge { what: &'static str, limit: u64 },
}

// === impl BoundedReader ===

/// A [`ReadRef`] over a file that refuses reads past [`MAX_READ`] each or [`READ_BUDGET`] in
/// total, so `object` cannot be driven into allocating without bound by bogus sizes.
#[derive(Debug)]
pub struct BoundedReader {
    cache: ReadCache<File>,
    file: File,
    len: u64,
    spent: Cell<u64>,
    /// String blocks read so far, charged once each.
    blocks: RefCell<HashSet<(u64, u64)>>,
}

impl BoundedReader {
    pub fn open(path: &Path) -> Result<Self, ElfError> {
        let open_error = |source| ElfError::Open {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(open_error)?;
        Self::new(file).map_err(open_error)
    }

    pub fn new(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        // A second handle for `pread`-based scans; ReadCache seeks its own before every read.
        let cache = ReadCache::new(file.try_clone()?);
        Ok(Self {
            cache,
            file,
            len,
            spent: Cell::new(0),
            blocks: RefCell::default(),
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn charge(&self, size: u64) -> Result<(), ()> {
        let spent = self.spent.get().saturating_add(size);
        if size > MAX_READ || spent > READ_BUDGET {
            return Err(());
        }
        self.spent.set(spent);
        Ok(())
    }

    /// Reads `len` bytes at `offset` directly (not cached), up to [`MAX_READ`].
    pub fn read_exact_at(&self, offset: u64, len: u64) -> Result<Vec<u8>, ElfError> {
        if len > MAX_READ {
            return Err(ElfError::TooLarge {
                what: "read",
                limit: MAX_READ,
            });
        }
        let end = offset.checked_add(len).filter(|end| *end <= self.len);
        let (Some(_), Ok(size)) = (end, usize::try_from(len)) else {
            return Err(ElfError::Truncated { offset, len });
        };
        let mut buf = vec![0; size];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|_| ElfError::Truncated { offset, len })?;
        Ok(buf)
    }
}

impl<'a> ReadRef<'a> for &'a BoundedReader {
    fn len(self) -> Result<u64, ()> {
        Ok(self.len)
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        self.charge(size)?;
        (&self.cache).read_bytes_at(offset, size)
    }

    fn read_bytes_at_until(self, range: Range<u64>, delimiter: u8) -> Result<&'a [u8], ()> {
        // Names are looked up one by one (section names, needed libraries); ReadCache would
        // make a read call for each. Reading aligned blocks once makes those cache hits.
        let block_start = range.start & !(STRING_BLOCK - 1);
        let block_end = range
            .end
            .min(block_start.saturating_add(STRING_BLOCK))
            .min(self.len);
        if block_start < block_end {
            let key = (block_start, block_end);
            if !self.blocks.borrow().contains(&key) {
                self.charge(block_end - block_start)?;
                self.blocks.borrow_mut().insert(key);
            }
            let block = (&self.cache).read_bytes_at(block_start, block_end - block_start)?;
            let from = usize::try_from(range.start - block_start).map_err(|_| ())?;
            if let Some(tail) = block.get(from..)
                && let Some(len) = memchr::memchr(delimiter, tail)
            {
                return tail.get(..len).ok_or(());
            }
        }
        let bytes = (&self.cache).read_bytes_at_until(range, delimiter)?;
        // ReadCache reads at most 4 KiB per string; charge what it returned.
        self.charge(bytes.len() as u64)?;
        Ok(bytes)
    }
}

// === impl ElfImage ===

/// One section: where it is in the file and in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SectionInfo {
    pub name: String,
    pub address: u64,
    pub file_range: Option<(u64, u64)>,
    /// Allocated (`SHF_ALLOC`) and not code (`SHF_EXECINSTR`): where string literals live.
    pub alloc_data: bool,
}

/// One `PT_LOAD` segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    pub vaddr: u64,
    pub memsz: u64,
    pub offset: u64,
    pub filesz: u64,
    pub flags: u32,
}

/// What the inspectors need from an executable, read once.
#[derive(Debug)]
pub struct ElfImage {
    pub reader: BoundedReader,
    /// `PT_INTERP`, when dynamically linked.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` entries.
    pub needed: Vec<String>,
    pub sections: Vec<SectionInfo>,
    pub segments: Vec<LoadSegment>,
    pub is_64: bool,
    pub little_endian: bool,
}

impl ElfImage {
    pub fn open(path: &Path) -> Result<Self, ElfError> {
        Self::from_reader(BoundedReader::open(path)?)
    }

    pub fn from_reader(reader: BoundedReader) -> Result<Self, ElfError> {
        let kind = FileKind::parse(&reader)?;
        let parts = match kind {
            FileKind::Elf32 => summarize::<object::elf::FileHeader32<object::Endianness>>(&reader)?,
            FileKind::Elf64 => summarize::<object::elf::FileHeader64<object::Endianness>>(&reader)?,
            other => {
                return Err(ElfError::NotElf {
                    kind: format!("{other:?}"),
                });
            }
        };
        Ok(parts.with_reader(reader))
    }

    pub fn section(&self, name: &str) -> Option<&SectionInfo> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// File offset of virtual address `vaddr`, and how many bytes of file data follow it in its
    /// segment.
    pub fn vaddr_to_offset(&self, vaddr: u64) -> Option<(u64, u64)> {
        self.segments.iter().find_map(|s| {
            let delta = vaddr.checked_sub(s.vaddr)?;
            (delta < s.filesz).then(|| (s.offset.saturating_add(delta), s.filesz - delta))
        })
    }

    /// Calls `found` on each chunk-wise match of `needle` in `range` until it returns
    /// `Some`. Matches straddling chunks are seen: chunks overlap by `needle.len() + tail`
    /// bytes, `tail` being how much a caller reads after the needle.
    pub fn scan<T>(
        &self,
        range: (u64, u64),
        needle: &[u8],
        tail: usize,
        budget: &mut u64,
        mut found: impl FnMut(&[u8]) -> Option<T>,
    ) -> Option<T> {
        let finder = memchr::memmem::Finder::new(needle);
        let overlap = (needle.len() + tail) as u64;
        let (mut offset, end) = (
            range.0,
            range.0.saturating_add(range.1).min(self.reader.len),
        );
        let mut buf = vec![0u8; SCAN_CHUNK];
        while offset < end && *budget > 0 {
            let want = (end - offset).min(SCAN_CHUNK as u64).min(*budget);
            let chunk = buf.get_mut(..usize::try_from(want).ok()?)?;
            self.reader.file.read_exact_at(chunk, offset).ok()?;
            *budget -= want;
            for at in finder.find_iter(chunk) {
                if let Some(hit) = chunk.get(at..).and_then(&mut found) {
                    return Some(hit);
                }
            }
            if offset + want >= end {
                break;
            }
            offset += want.saturating_sub(overlap).max(1);
        }
        None
    }

    /// True when `needle` occurs in the section named `name`.
    pub fn section_contains(&self, name: &str, needle: &[u8], budget: &mut u64) -> bool {
        let Some(range) = self.section(name).and_then(|s| s.file_range) else {
            return false;
        };
        self.scan(range, needle, 0, budget, |_| Some(())).is_some()
    }
}

/// [`ElfImage`] without its reader, so the summary can be built while the reader is borrowed.
struct ElfImageParts {
    interpreter: Option<String>,
    needed: Vec<String>,
    sections: Vec<SectionInfo>,
    segments: Vec<LoadSegment>,
    is_64: bool,
    little_endian: bool,
}

impl ElfImageParts {
    fn with_reader(self, reader: BoundedReader) -> ElfImage {
        ElfImage {
            reader,
            interpreter: self.interpreter,
            needed: self.needed,
            sections: self.sections,
            segments: self.segments,
            is_64: self.is_64,
            little_endian: self.little_endian,
        }
    }
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes.get(..MAX_NAME).unwrap_or(bytes)).into_owned()
}

fn summarize<Elf: FileHeader<Endian = object::Endianness>>(
    reader: &BoundedReader,
) -> Result<ElfImageParts, ElfError> {
    let file = ElfFile::<Elf, &BoundedReader>::parse(reader)?;
    let endian = file.endian();
    let data = file.data();
    let headers = file.elf_program_headers();
    if headers.len() > MAX_SECTIONS {
        return Err(ElfError::TooLarge {
            what: "program header count",
            limit: MAX_SECTIONS as u64,
        });
    }
    let mut interpreter = None;
    let mut segments = Vec::new();
    for header in headers {
        match header.p_type(endian) {
            PT_INTERP => {
                interpreter = header.interpreter(endian, data)?.map(lossy);
            }
            PT_LOAD => segments.push(LoadSegment {
                vaddr: header.p_vaddr(endian).into(),
                memsz: header.p_memsz(endian).into(),
                offset: header.p_offset(endian).into(),
                filesz: header.p_filesz(endian).into(),
                flags: header.p_flags(endian),
            }),
            _ => {}
        }
    }
    let table = file.elf_section_table();
    if table.len() > MAX_SECTIONS {
        return Err(ElfError::TooLarge {
            what: "section count",
            limit: MAX_SECTIONS as u64,
        });
    }
    let mut sections = Vec::with_capacity(table.len());
    let mut needed = Vec::new();
    for section in file.sections() {
        let header = section.elf_section_header();
        let flags: u64 = header.sh_flags(endian).into();
        sections.push(SectionInfo {
            name: section.name_bytes().map(lossy).unwrap_or_default(),
            address: section.address(),
            file_range: section.file_range(),
            alloc_data: flags & u64::from(SHF_ALLOC) != 0 && flags & u64::from(SHF_EXECINSTR) == 0,
        });
        if header.sh_type(endian) == SHT_DYNAMIC && needed.is_empty() {
            needed = needed_libraries::<Elf>(&file, header)?;
        }
    }
    Ok(ElfImageParts {
        interpreter,
        needed,
        sections,
        segments,
        is_64: file.is_64(),
        little_endian: file.is_little_endian(),
    })
}

fn needed_libraries<'a, Elf: FileHeader<Endian = object::Endianness>>(
    file: &ElfFile<'a, Elf, &'a BoundedReader>,
    header: &Elf::SectionHeader,
) -> Result<Vec<String>, ElfError> {
    let endian = file.endian();
    let Some((entries, link)) = header.dynamic(endian, file.data())? else {
        return Ok(Vec::new());
    };
    let strings = file
        .elf_section_table()
        .strings(endian, file.data(), link)?;
    let mut needed = Vec::new();
    for entry in entries {
        let tag: i64 = entry.d_tag(endian).into();
        if tag == DT_NULL {
            break;
        }
        if tag == DT_NEEDED
            && needed.len() < MAX_NEEDED
            && let Ok(name) = entry.string(endian, strings)
        {
            needed.push(lossy(name));
        }
    }
    Ok(needed)
}

/// The allocated, non-code sections of `image`, where string literals live.
pub fn data_sections(image: &ElfImage) -> impl Iterator<Item = (u64, u64)> + '_ {
    image
        .sections
        .iter()
        .filter(|s| s.alloc_data)
        .filter_map(|s| s.file_range)
}
