//! Named functions to `[entry, end)` virtual ranges: from `.symtab` when the binary has one,
//! else from `.gopclntab` (stripped binaries keep it: the Go runtime needs it).

use object::{
    Endianness,
    elf::{STT_FUNC, Sym32, Sym64},
    read::elf::Sym,
};
use thiserror::Error;

use super::pclntab::{self, PclnSource, PclntabError};
use crate::inspect::elf::{ElfError, ElfImage, MAX_READ, SCAN_BUDGET};

/// Bytes per cached window of a file-backed `.gopclntab`.
const WINDOW: u64 = 64 << 10;
/// Windows kept: the functab, `_func` records and names are read as three nearly sequential
/// streams.
const WINDOWS: usize = 4;

/// Why functions could not be resolved.
#[derive(Debug, Error)]
pub enum SymbolError {
    #[error("cannot read .symtab")]
    Symtab(#[source] ElfError),
    #[error("malformed .symtab: {0}")]
    MalformedSymtab(&'static str),
    #[error("malformed .gopclntab")]
    Pclntab(#[source] PclntabError),
    #[error("neither .symtab nor .gopclntab")]
    NoTable,
}

/// Where the ranges came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SymbolSource {
    Symtab,
    Pclntab,
}

/// A function's virtual address range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionRange {
    pub name: String,
    pub entry: u64,
    pub end: u64,
}

/// Resolves `names`: `.symtab` when present, else `.gopclntab`. Missing functions are absent.
pub fn resolve(
    image: &ElfImage,
    names: &[&str],
) -> Result<(Vec<FunctionRange>, SymbolSource), SymbolError> {
    if image
        .section(".symtab")
        .is_some_and(|s| s.file_range.is_some())
    {
        // An unreadable `.symtab` (too large, cut) still leaves `.gopclntab` to try.
        return match from_symtab(image, names) {
            Ok(found) => Ok((found, SymbolSource::Symtab)),
            Err(error) => from_pclntab(image, names)
                .map(|found| (found, SymbolSource::Pclntab))
                .map_err(|_| error),
        };
    }
    Ok((from_pclntab(image, names)?, SymbolSource::Pclntab))
}

/// `names` from `.symtab` (functions with a size only).
pub fn from_symtab(image: &ElfImage, names: &[&str]) -> Result<Vec<FunctionRange>, SymbolError> {
    let range = |name: &str| {
        image
            .section(name)
            .and_then(|s| s.file_range)
            .ok_or(SymbolError::MalformedSymtab("no .symtab or .strtab"))
    };
    let (sym_offset, sym_size) = range(".symtab")?;
    let (str_offset, str_size) = range(".strtab")?;
    let symtab = image
        .reader
        .read_exact_at(sym_offset, sym_size)
        .map_err(SymbolError::Symtab)?;
    let strtab = image
        .reader
        .read_exact_at(str_offset, str_size)
        .map_err(SymbolError::Symtab)?;
    let endian = if image.little_endian {
        Endianness::Little
    } else {
        Endianness::Big
    };
    if image.is_64 {
        symbols::<Sym64<Endianness>>(&symtab, &strtab, endian, names)
    } else {
        symbols::<Sym32<Endianness>>(&symtab, &strtab, endian, names)
    }
}

fn symbols<S: Sym<Endian = Endianness>>(
    symtab: &[u8],
    strtab: &[u8],
    endian: Endianness,
    names: &[&str],
) -> Result<Vec<FunctionRange>, SymbolError> {
    let count = symtab.len() / size_of::<S>();
    let (entries, _) = object::pod::slice_from_bytes::<S>(symtab, count)
        .map_err(|()| SymbolError::MalformedSymtab("symbol entries"))?;
    let strings = object::read::StringTable::new(strtab, 0, strtab.len() as u64);
    let mut found: Vec<FunctionRange> = Vec::new();
    for symbol in entries {
        if symbol.st_type() != STT_FUNC {
            continue;
        }
        let Ok(name) = symbol.name(endian, strings) else {
            continue;
        };
        let Some(wanted) = names.iter().find(|n| n.as_bytes() == name) else {
            continue;
        };
        let entry: u64 = symbol.st_value(endian).into();
        let size: u64 = symbol.st_size(endian).into();
        let Some(end) = entry.checked_add(size).filter(|_| size > 0) else {
            continue;
        };
        if !found.iter().any(|f| f.name == *wanted) {
            found.push(FunctionRange {
                name: (*wanted).to_owned(),
                entry,
                end,
            });
        }
    }
    Ok(found)
}

/// `names` from `.gopclntab`, read in bounded windows.
pub fn from_pclntab(image: &ElfImage, names: &[&str]) -> Result<Vec<FunctionRange>, SymbolError> {
    // Position-independent binaries keep it in `.data.rel.ro.gopclntab`.
    let (offset, size) = [".gopclntab", ".data.rel.ro.gopclntab"]
        .iter()
        .find_map(|name| image.section(name).and_then(|s| s.file_range))
        .ok_or(SymbolError::NoTable)?;
    let text = image.section(".text").map_or(0, |s| s.address);
    let mut source = FileSource {
        image,
        offset,
        size,
        windows: Vec::new(),
        tick: 0,
        spent: 0,
    };
    let functions =
        pclntab::find_functions(&mut source, names, text).map_err(SymbolError::Pclntab)?;
    Ok(functions
        .into_iter()
        .map(|f| FunctionRange {
            name: f.name,
            entry: f.entry,
            end: f.end,
        })
        .collect())
}

/// A cached window: (table offset, bytes, last use).
struct Window {
    start: u64,
    bytes: Vec<u8>,
    used: u64,
}

/// `.gopclntab` bytes from the file: a few LRU windows, total I/O capped at [`SCAN_BUDGET`].
struct FileSource<'a> {
    image: &'a ElfImage,
    offset: u64,
    size: u64,
    windows: Vec<Window>,
    tick: u64,
    spent: u64,
}

impl FileSource<'_> {
    fn window_for(&mut self, offset: u64, len: u64) -> Result<usize, PclntabError> {
        self.tick += 1;
        let tick = self.tick;
        let hit = self
            .windows
            .iter()
            .position(|w| offset >= w.start && offset + len <= w.start + w.bytes.len() as u64);
        if let Some(index) = hit {
            if let Some(window) = self.windows.get_mut(index) {
                window.used = tick;
            }
            return Ok(index);
        }
        let want = WINDOW.max(len).min(MAX_READ).min(self.size - offset);
        self.spent = self.spent.saturating_add(want);
        if self.spent > SCAN_BUDGET {
            return Err(PclntabError::Budget(SCAN_BUDGET));
        }
        let bytes = self
            .image
            .reader
            .read_exact_at(self.offset + offset, want)
            .map_err(|_| PclntabError::Read { offset, len: want })?;
        let window = Window {
            start: offset,
            bytes,
            used: tick,
        };
        if self.windows.len() < WINDOWS {
            self.windows.push(window);
            return Ok(self.windows.len() - 1);
        }
        let oldest = self
            .windows
            .iter()
            .enumerate()
            .min_by_key(|(_, w)| w.used)
            .map_or(0, |(i, _)| i);
        if let Some(slot) = self.windows.get_mut(oldest) {
            *slot = window;
        }
        Ok(oldest)
    }
}

impl PclnSource for FileSource<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), PclntabError> {
        let (len, size) = (buf.len() as u64, self.size);
        let out_of_range = || PclntabError::OutOfRange {
            what: "read",
            offset,
            len,
            size,
        };
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(out_of_range());
        }
        let index = self.window_for(offset, len)?;
        let window = self.windows.get(index).ok_or_else(out_of_range)?;
        let start = usize::try_from(offset - window.start).map_err(|_| out_of_range())?;
        let bytes = start
            .checked_add(buf.len())
            .and_then(|end| window.bytes.get(start..end))
            .ok_or_else(out_of_range)?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}
