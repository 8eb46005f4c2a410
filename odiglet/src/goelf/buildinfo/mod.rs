//! `.go.buildinfo`: the Go version and module list the linker embeds in every Go executable
//! (Go source `debug/buildinfo`). Works on stripped binaries and, without section headers, on
//! the first writable `PT_LOAD` segment.

use serde::Serialize;
use thiserror::Error;

use crate::inspect::elf::ElfImage;

/// `"\xff Go buildinf:"`, at a 16-byte aligned offset.
const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
const ALIGN: usize = 16;
const HEADER_LEN: usize = 32;
/// How much of the data start is searched for the header, as Go does.
const SEARCH_LEN: u64 = 64 << 10;
/// Flag bit: version and modinfo follow the header inline (Go >= 1.18).
const FLAG_INLINE: u8 = 0x2;
/// Longest version or modinfo string accepted; real modinfo of large programs is ~100 KiB.
const MAX_STRING: u64 = 4 << 20;
/// Modules kept; beyond this the binary is not a real Go program.
const MAX_MODULES: usize = 100_000;
/// `PF_X` and `PF_W`.
const PF_X: u32 = 1;
const PF_W: u32 = 2;

/// Why a file has no readable Go build information.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BuildInfoError {
    #[error("not a Go executable (no build information)")]
    NotGo,
    #[error("truncated Go build information ({0})")]
    Truncated(&'static str),
    #[error("invalid Go build information ({0})")]
    Invalid(&'static str),
}

/// One module compiled into the binary.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GoModule {
    pub path: String,
    /// The version compiled in: a replacement's version when the module was replaced with one.
    pub version: String,
}

/// What `.go.buildinfo` says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BuildInfo {
    /// As embedded, e.g. `go1.25.5` (may carry ` X:<experiments>`).
    pub version: String,
    /// The main module's path (`mod` line), else the main package path (`path`, GOPATH builds).
    pub main_module: String,
    /// Dependencies (`dep` lines), in binary order.
    pub modules: Vec<GoModule>,
    /// Build settings (`build` lines: `GOEXPERIMENT`, `CGO_ENABLED`, `-ldflags`...) as (key,
    /// value), in binary order; empty without module information (Go < 1.18, some builders).
    #[serde(skip)]
    pub settings: Vec<(String, String)>,
}

impl BuildInfo {
    /// The value of build setting `key`.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// What the binary says of its `GOEXPERIMENT`s, each a comma list of the experiments that
    /// differ from its release's defaults (empty: none do): the ` X:` part of the version
    /// string, which the linker always writes, and the `GOEXPERIMENT` setting when the binary
    /// has build settings at all.
    pub fn experiments(&self) -> Vec<&str> {
        let from_version = self
            .version
            .split_whitespace()
            .find_map(|part| part.strip_prefix("X:"))
            .unwrap_or("");
        let mut lists = vec![from_version];
        if !self.settings.is_empty() {
            lists.push(self.setting("GOEXPERIMENT").unwrap_or(""));
        }
        lists
    }

    /// `x.y.z` (or `x.y`) from the version, as Odigos' `go(\d+\.\d+\.\d+)` does.
    pub fn semver(&self) -> Option<String> {
        let start = self.version.find("go")? + 2;
        let rest = self.version.get(start..)?;
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let version = rest.get(..end)?.trim_end_matches('.');
        (version.split('.').count() >= 2 && version.split('.').all(|p| !p.is_empty()))
            .then(|| version.to_owned())
    }
}

/// Reads the build information of a Go executable.
pub fn read(image: &ElfImage) -> Result<BuildInfo, BuildInfoError> {
    let (start, size) = data_start(image).ok_or(BuildInfoError::NotGo)?;
    let window = image
        .reader
        .read_exact_at(
            start,
            size.min(SEARCH_LEN)
                .min(image.reader.len().saturating_sub(start)),
        )
        .map_err(|_| BuildInfoError::Truncated("data start"))?;
    let deref = |vaddr: u64, len: u64| -> Option<Vec<u8>> {
        let (offset, available) = image.vaddr_to_offset(vaddr)?;
        (len <= available).then_some(())?;
        image.reader.read_exact_at(offset, len).ok()
    };
    parse(&window, deref)
}

/// The `.go.buildinfo` section, or the first writable, non-executable `PT_LOAD` segment when the
/// section headers are gone: (file offset, size).
fn data_start(image: &ElfImage) -> Option<(u64, u64)> {
    if let Some(range) = image.section(".go.buildinfo").and_then(|s| s.file_range) {
        return Some(range);
    }
    // The Go linker has written the section since Go 1.13: with section headers present and no
    // such section, this is not Go, and searching its data would only cost time.
    if !image.sections.is_empty() {
        return None;
    }
    let segment = image
        .segments
        .iter()
        .find(|s| s.flags & (PF_X | PF_W) == PF_W)?;
    Some((segment.offset, segment.filesz))
}

/// Parses the header found in `window`; `deref(vaddr, len)` reads memory for the pre-1.18
/// pointer format.
pub fn parse(
    window: &[u8],
    deref: impl Fn(u64, u64) -> Option<Vec<u8>>,
) -> Result<BuildInfo, BuildInfoError> {
    let header = find_header(window).ok_or(BuildInfoError::NotGo)?;
    let pointer_size = *header.get(14).ok_or(BuildInfoError::Truncated("header"))?;
    let flags = *header.get(15).ok_or(BuildInfoError::Truncated("header"))?;
    let (version, modinfo) = if flags & FLAG_INLINE != 0 {
        let rest = header
            .get(HEADER_LEN..)
            .ok_or(BuildInfoError::Truncated("header"))?;
        let (version, rest) = decode_string(rest)?;
        let (modinfo, _) = decode_string(rest)?;
        (version.to_vec(), modinfo.to_vec())
    } else {
        // Before Go 1.18 the flags byte is only the byte order.
        let big_endian = flags != 0;
        let read_pointer = |at: usize| read_pointer(header, at, pointer_size, big_endian);
        let version = read_go_string(read_pointer(16)?, pointer_size, big_endian, &deref)?;
        let modinfo_at = 16 + usize::from(pointer_size);
        let modinfo = read_go_string(read_pointer(modinfo_at)?, pointer_size, big_endian, &deref)?;
        (version, modinfo)
    };
    if version.is_empty() {
        return Err(BuildInfoError::NotGo);
    }
    let version = String::from_utf8_lossy(&version).into_owned();
    let modinfo = strip_sentinels(&modinfo);
    let (main_module, modules, settings) = parse_modinfo(&String::from_utf8_lossy(modinfo))?;
    Ok(BuildInfo {
        version,
        main_module,
        modules,
        settings,
    })
}

/// The header at the first 16-byte aligned magic with a full header after it.
fn find_header(window: &[u8]) -> Option<&[u8]> {
    let finder = memchr::memmem::Finder::new(MAGIC);
    finder
        .find_iter(window)
        .filter(|at| at % ALIGN == 0)
        .find_map(|at| window.get(at..).filter(|rest| rest.len() >= HEADER_LEN))
}

/// A uvarint length and that many bytes.
fn decode_string(data: &[u8]) -> Result<(&[u8], &[u8]), BuildInfoError> {
    let mut len: u64 = 0;
    let mut shift = 0u32;
    let mut used = 0usize;
    loop {
        let byte = *data
            .get(used)
            .ok_or(BuildInfoError::Truncated("string length"))?;
        used += 1;
        if shift > 63 {
            return Err(BuildInfoError::Invalid("string length overflows"));
        }
        len |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    if len > MAX_STRING {
        return Err(BuildInfoError::Invalid("string too long"));
    }
    let len = usize::try_from(len).map_err(|_| BuildInfoError::Invalid("string too long"))?;
    let end = used
        .checked_add(len)
        .ok_or(BuildInfoError::Invalid("string too long"))?;
    let string = data
        .get(used..end)
        .ok_or(BuildInfoError::Truncated("string"))?;
    Ok((string, data.get(end..).unwrap_or_default()))
}

fn read_pointer(data: &[u8], at: usize, size: u8, big_endian: bool) -> Result<u64, BuildInfoError> {
    let bytes = data
        .get(at..at + usize::from(size))
        .ok_or(BuildInfoError::Truncated("pointer"))?;
    match (size, big_endian) {
        (4, false) => Ok(u32::from_le_bytes(bytes.try_into().map_err(|_| bad_pointer())?).into()),
        (4, true) => Ok(u32::from_be_bytes(bytes.try_into().map_err(|_| bad_pointer())?).into()),
        (8, false) => Ok(u64::from_le_bytes(
            bytes.try_into().map_err(|_| bad_pointer())?,
        )),
        (8, true) => Ok(u64::from_be_bytes(
            bytes.try_into().map_err(|_| bad_pointer())?,
        )),
        _ => Err(bad_pointer()),
    }
}

fn bad_pointer() -> BuildInfoError {
    BuildInfoError::Invalid("pointer size")
}

/// A Go string header `{ptr, len}` at `vaddr`, then its bytes.
fn read_go_string(
    vaddr: u64,
    pointer_size: u8,
    big_endian: bool,
    deref: &impl Fn(u64, u64) -> Option<Vec<u8>>,
) -> Result<Vec<u8>, BuildInfoError> {
    let header_len = 2 * u64::from(pointer_size);
    let header = deref(vaddr, header_len).ok_or(BuildInfoError::Truncated("string header"))?;
    let data = read_pointer(&header, 0, pointer_size, big_endian)?;
    let len = read_pointer(&header, usize::from(pointer_size), pointer_size, big_endian)?;
    if len > MAX_STRING {
        return Err(BuildInfoError::Invalid("string too long"));
    }
    if len == 0 {
        return Ok(Vec::new());
    }
    deref(data, len).ok_or(BuildInfoError::Truncated("string data"))
}

/// Modinfo is framed by 16-byte sentinels; without them there is no module information.
fn strip_sentinels(modinfo: &[u8]) -> &[u8] {
    let len = modinfo.len();
    if len >= 33 && modinfo.get(len - 17) == Some(&b'\n') {
        modinfo.get(16..len - 16).unwrap_or_default()
    } else {
        &[]
    }
}

/// (main module, modules, settings) of the build settings.
type Modinfo = (String, Vec<GoModule>, Vec<(String, String)>);

/// `path`, `mod`, `dep`, `=>` and `build` lines (Go's `debug.ParseBuildInfo`).
fn parse_modinfo(text: &str) -> Result<Modinfo, BuildInfoError> {
    let mut main_module = String::new();
    let mut modules: Vec<GoModule> = Vec::new();
    let mut settings = Vec::new();
    let mut last_was_dep = false;
    for line in text.lines() {
        let mut fields = line.split('\t');
        match fields.next() {
            // The module path wins over the main package path (GOPATH builds have only `path`).
            Some("path") if main_module.is_empty() => {
                main_module = fields.next().unwrap_or_default().to_owned();
            }
            Some("mod") => {
                main_module = fields.next().unwrap_or_default().to_owned();
                last_was_dep = false;
            }
            Some("dep") => {
                if modules.len() >= MAX_MODULES {
                    return Err(BuildInfoError::Invalid("too many modules"));
                }
                let path = fields.next().unwrap_or_default().to_owned();
                let version = fields.next().unwrap_or_default().to_owned();
                modules.push(GoModule { path, version });
                last_was_dep = true;
            }
            Some("=>") => {
                let _replacement_path = fields.next();
                let version = fields.next().unwrap_or_default();
                // A local-directory replacement has no version (empty, or `(devel)`): keep
                // the required one, the best claim about the code compiled in.
                let versioned = !version.is_empty() && version != "(devel)";
                if let (true, Some(last), true) = (last_was_dep, modules.last_mut(), versioned) {
                    last.version = version.to_owned();
                }
                last_was_dep = false;
            }
            Some("build") => {
                if settings.len() >= MAX_MODULES {
                    return Err(BuildInfoError::Invalid("too many build settings"));
                }
                // `key=value`; Go quotes a value with spaces (`-ldflags="-s -w"`).
                let setting = fields.next().unwrap_or_default();
                if let Some((key, value)) = setting.split_once('=') {
                    let value = value
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(value);
                    settings.push((key.to_owned(), value.to_owned()));
                }
                last_was_dep = false;
            }
            _ => {}
        }
    }
    Ok((main_module, modules, settings))
}

#[cfg(test)]
mod tests;
