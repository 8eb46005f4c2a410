//! `.gopclntab`: Go's own function table, present even in stripped binaries (Go source
//! `debug/gosym/pclntab.go`). Layouts: Go 1.16/1.17 (magic `0xFFFFFFFA`), 1.18/1.19
//! (`0xFFFFFFF0`) and 1.20+ (`0xFFFFFFF1`, same layout as 1.18).
//!
//! Only the functions asked for are looked at by name: for each function the name bytes are
//! compared in place, and nothing else is materialized. Every offset read from the table is
//! checked against the section, and reads go through a [`PclnSource`] that bounds total I/O.

use thiserror::Error;

const MAGIC_116: u32 = 0xFFFF_FFFA;
const MAGIC_118: u32 = 0xFFFF_FFF0;
const MAGIC_120: u32 = 0xFFFF_FFF1;
/// Header: magic, two zero bytes, `minLC`, `ptrSize`, then pointer-sized words.
const HEADER_FIXED: u64 = 8;

/// Why a `.gopclntab` could not be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PclntabError {
    #[error("unknown .gopclntab magic {0:#010x} (Go < 1.16 or not Go)")]
    UnknownMagic(u32),
    #[error("unsupported pointer size {0}")]
    PointerSize(u8),
    #[error("{what} out of the table ({len} bytes at offset {offset}, table of {size} bytes)")]
    OutOfRange {
        what: &'static str,
        offset: u64,
        len: u64,
        size: u64,
    },
    #[error("function count {nfunc} does not fit a table of {size} bytes")]
    TooManyFunctions { nfunc: u64, size: u64 },
    #[error("read budget of {0} bytes exhausted")]
    Budget(u64),
    #[error("cannot read {len} bytes of the table at offset {offset}")]
    Read { offset: u64, len: u64 },
    #[error("header padding is not zero")]
    Padding,
    #[error("function {name} ends ({end:#x}) before it starts ({entry:#x})")]
    EmptyFunction { name: String, entry: u64, end: u64 },
}

/// Byte access to a `.gopclntab` image; offsets are relative to the table's start.
pub trait PclnSource {
    /// Table size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; the caller has checked the range against [`Self::size`].
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), PclntabError>;
}

impl PclnSource for &[u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), PclntabError> {
        let start = usize::try_from(offset).map_err(|_| out_of_range("read", offset, buf, self))?;
        let end = start.checked_add(buf.len());
        let bytes = end
            .and_then(|end| self.get(start..end))
            .ok_or_else(|| out_of_range("read", offset, buf, self))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

fn out_of_range(what: &'static str, offset: u64, buf: &[u8], table: &[u8]) -> PclntabError {
    PclntabError::OutOfRange {
        what,
        offset,
        len: buf.len() as u64,
        size: table.len() as u64,
    }
}

/// A function found in the table: `[entry, end)` in virtual addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PclnFunction {
    pub name: String,
    pub entry: u64,
    pub end: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Go116,
    Go118,
}

/// The parsed header.
#[derive(Clone, Copy, Debug)]
struct Header {
    layout: Layout,
    ptr_size: u8,
    nfunc: u64,
    text_start: u64,
    funcname: u64,
    pcln: u64,
}

impl Header {
    /// Size of one functab field: `u32` offsets from 1.18, pointers before.
    fn field_size(&self) -> u64 {
        match self.layout {
            Layout::Go116 => u64::from(self.ptr_size),
            Layout::Go118 => 4,
        }
    }
}

/// Reads table bytes with range checks against the table size.
struct Table<'s, S: PclnSource> {
    source: &'s mut S,
    size: u64,
    little_endian: bool,
}

impl<S: PclnSource> Table<'_, S> {
    fn check(&self, what: &'static str, offset: u64, len: u64) -> Result<(), PclntabError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(PclntabError::OutOfRange {
                what,
                offset,
                len,
                size: self.size,
            }),
        }
    }

    fn read<const N: usize>(
        &mut self,
        what: &'static str,
        offset: u64,
    ) -> Result<[u8; N], PclntabError> {
        self.check(what, offset, N as u64)?;
        let mut buf = [0u8; N];
        self.source.read_at(offset, &mut buf)?;
        Ok(buf)
    }

    fn u32(&mut self, what: &'static str, offset: u64) -> Result<u32, PclntabError> {
        let bytes = self.read::<4>(what, offset)?;
        Ok(if self.little_endian {
            u32::from_le_bytes(bytes)
        } else {
            u32::from_be_bytes(bytes)
        })
    }

    fn word(&mut self, what: &'static str, offset: u64, size: u8) -> Result<u64, PclntabError> {
        if size == 4 {
            return self.u32(what, offset).map(u64::from);
        }
        let bytes = self.read::<8>(what, offset)?;
        Ok(if self.little_endian {
            u64::from_le_bytes(bytes)
        } else {
            u64::from_be_bytes(bytes)
        })
    }
}

/// Finds `names` in the table. `text_fallback` replaces a zero `textStart` (an unrelocated
/// position-independent binary). Functions not in the table are absent from the result.
pub fn find_functions<S: PclnSource>(
    source: &mut S,
    names: &[&str],
    text_fallback: u64,
) -> Result<Vec<PclnFunction>, PclntabError> {
    let size = source.size();
    let magic_bytes = {
        let mut table = Table {
            source: &mut *source,
            size,
            little_endian: true,
        };
        table.read::<4>("header", 0)?
    };
    // The magic tells the byte order too: Go writes it in the target's order.
    let (magic, little_endian) = match (
        u32::from_le_bytes(magic_bytes),
        u32::from_be_bytes(magic_bytes),
    ) {
        (m @ (MAGIC_116 | MAGIC_118 | MAGIC_120), _) => (m, true),
        (_, m @ (MAGIC_116 | MAGIC_118 | MAGIC_120)) => (m, false),
        (m, _) => return Err(PclntabError::UnknownMagic(m)),
    };
    let mut table = Table {
        source,
        size,
        little_endian,
    };
    let header = parse_header(&mut table, magic, text_fallback)?;
    let wanted_len = names.iter().map(|n| n.len()).max().unwrap_or(0);
    let mut found: Vec<PclnFunction> = Vec::new();
    if names.is_empty() {
        return Ok(found);
    }
    let field = header.field_size();
    let mut name_buf = vec![0u8; wanted_len + 1];
    for index in 0..header.nfunc {
        // functab[index] = {entry, funcoff}; functab[index + 1].entry ends the function.
        let at = header.pcln + index * 2 * field;
        let func_off = table.word("functab", at + field, field_width(field))?;
        let func_at = header
            .pcln
            .checked_add(func_off)
            .ok_or(PclntabError::OutOfRange {
                what: "_func",
                offset: func_off,
                len: 0,
                size,
            })?;
        let name_off = match header.layout {
            Layout::Go116 => {
                table.u32("_func", func_at.saturating_add(u64::from(header.ptr_size)))?
            }
            Layout::Go118 => table.u32("_func", func_at.saturating_add(4))?,
        };
        // `nameoff` is an `int32`; a negative one is malformed.
        let name_at = header
            .funcname
            .checked_add(u64::from(name_off))
            .filter(|_| i32::try_from(name_off).is_ok())
            .ok_or(PclntabError::OutOfRange {
                what: "function name",
                offset: u64::from(name_off),
                len: 0,
                size,
            })?;
        let available = size.saturating_sub(name_at).min(name_buf.len() as u64);
        let Some(buf) = usize::try_from(available)
            .ok()
            .and_then(|n| name_buf.get_mut(..n))
        else {
            continue;
        };
        if buf.is_empty() {
            return Err(PclntabError::OutOfRange {
                what: "function name",
                offset: name_at,
                len: 1,
                size,
            });
        }
        table.source.read_at(name_at, buf)?;
        let Some(name) = names
            .iter()
            .find(|n| buf.starts_with(n.as_bytes()) && buf.get(n.len()) == Some(&0))
        else {
            continue;
        };
        if found.iter().any(|f| f.name == *name) {
            continue;
        }
        let entry = entry_pc(&mut table, &header, at)?;
        let end = entry_pc(&mut table, &header, at + 2 * field)?;
        if end <= entry {
            return Err(PclntabError::EmptyFunction {
                name: (*name).to_owned(),
                entry,
                end,
            });
        }
        found.push(PclnFunction {
            name: (*name).to_owned(),
            entry,
            end,
        });
        if found.len() == names.len() {
            break;
        }
    }
    Ok(found)
}

fn field_width(field: u64) -> u8 {
    if field == 4 { 4 } else { 8 }
}

fn entry_pc<S: PclnSource>(
    table: &mut Table<'_, S>,
    header: &Header,
    at: u64,
) -> Result<u64, PclntabError> {
    let field = header.field_size();
    let value = table.word("functab", at, field_width(field))?;
    Ok(match header.layout {
        Layout::Go116 => value,
        Layout::Go118 => header.text_start.wrapping_add(value),
    })
}

fn parse_header<S: PclnSource>(
    table: &mut Table<'_, S>,
    magic: u32,
    text_fallback: u64,
) -> Result<Header, PclntabError> {
    let [_, _, _, _, pad0, pad1, _min_lc, ptr_size] = table.read::<8>("header", 0)?;
    if pad0 != 0 || pad1 != 0 {
        return Err(PclntabError::Padding);
    }
    if ptr_size != 4 && ptr_size != 8 {
        return Err(PclntabError::PointerSize(ptr_size));
    }
    let layout = if magic == MAGIC_116 {
        Layout::Go116
    } else {
        Layout::Go118
    };
    let ptr = u64::from(ptr_size);
    let mut word = |index: u64| table.word("header", HEADER_FIXED + index * ptr, ptr_size);
    let nfunc = word(0)?;
    let (text_start, funcname, pcln) = match layout {
        Layout::Go116 => (0, word(2)?, word(6)?),
        Layout::Go118 => (word(2)?, word(3)?, word(7)?),
    };
    let text_start = if layout == Layout::Go118 && text_start == 0 {
        text_fallback
    } else {
        text_start
    };
    let header = Header {
        layout,
        ptr_size,
        nfunc,
        text_start,
        funcname,
        pcln,
    };
    // The functab (`2 * nfunc + 1` fields) must fit the table: this bounds the loop.
    let functab_len = nfunc
        .checked_mul(2)
        .and_then(|n| n.checked_add(1))
        .and_then(|n| n.checked_mul(header.field_size()));
    match functab_len.and_then(|len| pcln.checked_add(len)) {
        Some(end) if end <= table.size => {}
        _ => {
            return Err(PclntabError::TooManyFunctions {
                nfunc,
                size: table.size,
            });
        }
    }
    if funcname >= table.size {
        return Err(PclntabError::OutOfRange {
            what: "function name table",
            offset: funcname,
            len: 0,
            size: table.size,
        });
    }
    Ok(header)
}

#[cfg(test)]
mod tests;
