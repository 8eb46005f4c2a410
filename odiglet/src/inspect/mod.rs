//! Runtime inspection (sync, no eBPF): what runs in a process. [`Inspector::inspect`] reads
//! `/proc/<pid>` (root configurable, `ODIGOS_PROC_DIR`) and the executable's ELF and returns
//! [`RuntimeDetails`]: language and runtime version ([`language`]), libc ([`libc`]), secure
//! execution, the kept environment and other agents ([`environ`]), and Go build info.
//! [`cgroup`] finds a container's processes; [`container`] resolves one answer for them.
//!
//! Executables and `/proc` contents are untrusted: every read is bounded ([`elf`]).
#![deny(clippy::indexing_slicing, clippy::cast_possible_truncation)]

pub mod cgroup;
pub mod container;
pub mod cri;
pub mod elf;
pub mod environ;
pub mod language;
pub mod libc;
mod rust_versions;

use std::{
    cell::{Cell, OnceCell},
    collections::BTreeMap,
    fs::File,
    io::{self, Read},
    path::{Path, PathBuf},
};

use serde::Serialize;
use thiserror::Error;

use crate::goelf::{self, BuildInfo, GoModule};
pub use elf::ElfImage;
pub use language::{Detection, Language, Stage};
pub use libc::Libc;

/// Bytes of `environ`, `cmdline` and `maps` read per process; beyond this they are cut.
const MAX_PROC_FILE: u64 = 4 << 20;

/// Why a process could not be inspected. Anything found about a live process is an answer
/// (possibly `unknown`), not an error.
#[derive(Debug, Error)]
pub enum InspectError {
    #[error("no such process: {pid}")]
    NoSuchProcess { pid: u32 },
    #[error("process {pid} has no executable (a kernel thread or a zombie)")]
    NoExecutable { pid: u32 },
    #[error("permission denied inspecting process {pid} (run as root or with CAP_SYS_PTRACE)")]
    PermissionDenied { pid: u32 },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Go build information as reported for a process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GoDetails {
    pub version: String,
    pub main_module: String,
    pub modules: Vec<GoModule>,
}

/// What runs in one process. Serializes to the `odiglet inspect --json` contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuntimeDetails {
    pub pid: u32,
    pub exe: String,
    pub language: Language,
    pub runtime_version: Option<String>,
    pub libc: Option<Libc>,
    pub secure_execution_mode: bool,
    pub env: BTreeMap<String, String>,
    pub other_agents: Vec<String>,
    pub go: Option<GoDetails>,
    /// Which scan decided the language (not part of the JSON contract).
    #[serde(skip)]
    pub stage: Stage,
}

/// Inspects processes under one proc root.
#[derive(Clone, Debug)]
pub struct Inspector {
    proc_root: PathBuf,
}

impl Inspector {
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
        }
    }

    pub fn proc_root(&self) -> &Path {
        &self.proc_root
    }

    /// Inspects `pid`.
    pub fn inspect(&self, pid: u32) -> Result<RuntimeDetails, InspectError> {
        let ctx = ProcessContext::open(&self.proc_root, pid)?;
        let detection = language::detect(&ctx);
        let go = ctx.buildinfo().map(|info| GoDetails {
            version: info.version.clone(),
            main_module: info.main_module.clone(),
            modules: info.modules.clone(),
        });
        let other_agents = environ::other_agents(detection.language, &ctx.env, &ctx.cmdline, |n| {
            ctx.maps_contain(n)
        });
        let word = if ctx.image().is_some_and(|i| !i.is_64) {
            4
        } else {
            8
        };
        let auxv = ctx.read_proc_file("auxv").unwrap_or_default();
        Ok(RuntimeDetails {
            pid,
            exe: ctx.exe.to_string_lossy().into_owned(),
            language: detection.language,
            runtime_version: detection.runtime_version.filter(|v| !v.is_empty()),
            libc: ctx.image().and_then(libc::detect),
            secure_execution_mode: environ::secure_execution(&auxv, word),
            env: ctx.env.clone(),
            other_agents,
            go,
            stage: detection.stage,
        })
    }
}

/// One process being inspected: what was read so far, each source read at most once.
#[derive(Debug)]
pub struct ProcessContext {
    pub pid: u32,
    dir: PathBuf,
    /// `/proc/<pid>/exe` resolved.
    pub exe: PathBuf,
    pub exe_name: String,
    /// Arguments joined by spaces.
    pub cmdline: String,
    /// The kept variables ([`environ::filter_environ`]).
    pub env: BTreeMap<String, String>,
    maps: OnceCell<String>,
    image: OnceCell<Option<ElfImage>>,
    buildinfo: OnceCell<Option<BuildInfo>>,
    scan_budget: Cell<u64>,
}

impl ProcessContext {
    pub fn open(proc_root: &Path, pid: u32) -> Result<Self, InspectError> {
        let dir = proc_root.join(pid.to_string());
        let exe = std::fs::read_link(dir.join("exe")).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound if !dir.exists() => InspectError::NoSuchProcess { pid },
            io::ErrorKind::NotFound => InspectError::NoExecutable { pid },
            io::ErrorKind::PermissionDenied => InspectError::PermissionDenied { pid },
            _ => InspectError::Read {
                path: dir.join("exe"),
                source,
            },
        })?;
        let exe_name = exe
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .trim_end_matches(" (deleted)")
                    .to_owned()
            })
            .unwrap_or_default();
        let mut ctx = Self {
            pid,
            dir,
            exe,
            exe_name,
            cmdline: String::new(),
            env: BTreeMap::new(),
            maps: OnceCell::new(),
            image: OnceCell::new(),
            buildinfo: OnceCell::new(),
            scan_budget: Cell::new(elf::SCAN_BUDGET),
        };
        let cmdline = ctx.read_proc_file("cmdline").map_err(|e| ctx.classify(e))?;
        ctx.cmdline = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(" ");
        let environ = ctx.read_proc_file("environ").map_err(|e| ctx.classify(e))?;
        ctx.env = environ::filter_environ(&environ);
        Ok(ctx)
    }

    fn classify(&self, error: InspectError) -> InspectError {
        match error {
            InspectError::Read { source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                InspectError::PermissionDenied { pid: self.pid }
            }
            InspectError::Read { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                InspectError::NoSuchProcess { pid: self.pid }
            }
            other => other,
        }
    }

    /// Reads `/proc/<pid>/<name>`, up to [`MAX_PROC_FILE`] bytes.
    pub fn read_proc_file(&self, name: &str) -> Result<Vec<u8>, InspectError> {
        let path = self.dir.join(name);
        let read = |path: &Path| -> io::Result<Vec<u8>> {
            let mut bytes = Vec::new();
            File::open(path)?
                .take(MAX_PROC_FILE)
                .read_to_end(&mut bytes)?;
            Ok(bytes)
        };
        read(&path).map_err(|source| InspectError::Read { path, source })
    }

    /// `/proc/<pid>/comm`: the name the process was started by (or set itself).
    pub fn comm(&self) -> String {
        let bytes = self.read_proc_file("comm").unwrap_or_default();
        String::from_utf8_lossy(&bytes).trim_end().to_owned()
    }

    pub fn env(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str)
    }

    /// `/proc/<pid>/maps`, empty when unreadable.
    pub fn maps(&self) -> &str {
        self.maps.get_or_init(|| {
            let bytes = self.read_proc_file("maps").unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        })
    }

    pub fn maps_contain(&self, needle: &str) -> bool {
        self.maps().contains(needle)
    }

    /// Paths of mapped files (the sixth field of each maps line).
    pub fn maps_paths(&self) -> impl Iterator<Item = &str> {
        self.maps()
            .lines()
            .filter_map(|line| line.splitn(6, ' ').nth(5))
            .map(str::trim_start)
    }

    /// The executable, parsed once through `/proc/<pid>/exe` (works across mount namespaces);
    /// `None` when it is not a readable ELF file.
    pub fn image(&self) -> Option<&ElfImage> {
        self.image
            .get_or_init(|| match ElfImage::open(&self.dir.join("exe")) {
                Ok(image) => Some(image),
                Err(error) => {
                    tracing::debug!(pid = self.pid, error = %error, "executable not readable as ELF");
                    None
                }
            })
            .as_ref()
    }

    pub fn buildinfo(&self) -> Option<&BuildInfo> {
        self.buildinfo
            .get_or_init(|| {
                self.image()
                    .and_then(|image| goelf::buildinfo::read(image).ok())
            })
            .as_ref()
    }

    pub fn needs_library(&self, prefix: &str) -> bool {
        self.image()
            .is_some_and(|image| image.needed.iter().any(|n| n.starts_with(prefix)))
    }

    fn with_budget<T>(&self, f: impl FnOnce(&ElfImage, &mut u64) -> T) -> Option<T> {
        let image = self.image()?;
        let mut budget = self.scan_budget.get();
        let result = f(image, &mut budget);
        self.scan_budget.set(budget);
        Some(result)
    }

    /// `needle` in the dynamic string table (`.dynstr`).
    pub fn dynamic_strings_contain(&self, needle: &[u8]) -> bool {
        self.with_budget(|image, budget| image.section_contains(".dynstr", needle, budget))
            .unwrap_or(false)
    }

    /// `needle` in a symbol name: the static (`.strtab`) or dynamic (`.dynstr`) string tables.
    pub fn symbol_strings_contain(&self, needle: &[u8]) -> bool {
        self.with_budget(|image, budget| {
            image.section_contains(".strtab", needle, budget)
                || image.section_contains(".dynstr", needle, budget)
        })
        .unwrap_or(false)
    }

    /// The dotted version that follows `prefix` in a data section (`X-Powered-By: PHP/8.2.7`).
    pub fn rodata_version(&self, prefix: &[u8]) -> Option<String> {
        self.with_budget(|image, budget| {
            elf::data_sections(image).find_map(|range| {
                image.scan(range, prefix, 32, budget, |hit| {
                    let tail = hit.get(prefix.len()..)?;
                    let end = tail
                        .iter()
                        .position(|b| !(b.is_ascii_digit() || *b == b'.'))?;
                    let version = std::str::from_utf8(tail.get(..end)?)
                        .ok()?
                        .trim_end_matches('.');
                    (version.split('.').count() >= 2).then(|| version.to_owned())
                })
            })
        })
        .flatten()
    }

    /// The Rust release of the standard library paths (`/rustc/<commit>/`) in data sections;
    /// the commit itself when the release is not in our table.
    pub fn rustc_version(&self) -> Option<String> {
        const PREFIX: &[u8] = b"/rustc/";
        let commit = self
            .with_budget(|image, budget| {
                elf::data_sections(image).find_map(|range| {
                    image.scan(range, PREFIX, 41, budget, |hit| {
                        let hash = hit.get(PREFIX.len()..PREFIX.len() + 40)?;
                        let valid = hash
                            .iter()
                            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
                            && hit.get(PREFIX.len() + 40) == Some(&b'/');
                        valid.then(|| String::from_utf8_lossy(hash).into_owned())
                    })
                })
            })
            .flatten()?;
        Some(rust_versions::release(&commit).map_or(commit, str::to_owned))
    }

    /// `JAVA_VERSION` from the `release` file of the JDK the `java` executable belongs to
    /// (`<home>/bin/java` → `<home>/release`), read inside the process's root.
    pub fn java_release_version(&self) -> Option<String> {
        let home = self.exe.parent()?.parent()?;
        let release = self
            .dir
            .join("root")
            .join(home.strip_prefix("/").ok()?)
            .join("release");
        let mut text = String::new();
        File::open(release)
            .ok()?
            .take(64 << 10)
            .read_to_string(&mut text)
            .ok()?;
        text.lines().find_map(|line| {
            let value = line.strip_prefix("JAVA_VERSION=")?.trim_matches('"');
            (!value.is_empty()).then(|| value.to_owned())
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, os::unix::fs::symlink};

    use super::*;

    /// A proc root of our own (as `ODIGOS_PROC_DIR` gives): its `exe` links to this test
    /// binary, a Rust program, so only the deep scan can recognize it.
    #[test]
    fn inspects_under_a_configured_proc_root() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("4242");
        fs::create_dir(&dir).unwrap();
        symlink(std::env::current_exe().unwrap(), dir.join("exe")).unwrap();
        fs::write(dir.join("cmdline"), b"/app/server\0--port\x008080\0").unwrap();
        fs::write(
            dir.join("environ"),
            b"PATH=/bin\0NEW_RELIC_CONFIG_FILE=/nr.yml\0",
        )
        .unwrap();
        fs::write(dir.join("maps"), "").unwrap();
        let auxv: Vec<u8> = [23u64, 1, 0, 0]
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .collect();
        fs::write(dir.join("auxv"), auxv).unwrap();

        let details = Inspector::new(root.path()).inspect(4242).unwrap();
        assert_eq!(
            (details.language, details.stage),
            (Language::Rust, Stage::Deep)
        );
        assert!(
            details.runtime_version.is_some(),
            "rustc commit or release from the binary"
        );
        assert_eq!(details.libc, Some(Libc::Glibc));
        assert!(details.secure_execution_mode);
        assert_eq!(details.other_agents, ["New Relic Agent"]);
        assert_eq!(
            details.env.keys().collect::<Vec<_>>(),
            ["NEW_RELIC_CONFIG_FILE"]
        );
        assert!(details.go.is_none());

        let inspector = Inspector::new(root.path());
        assert!(matches!(
            inspector.inspect(1),
            Err(InspectError::NoSuchProcess { pid: 1 })
        ));
        fs::create_dir(root.path().join("7")).unwrap();
        assert!(matches!(
            inspector.inspect(7),
            Err(InspectError::NoExecutable { pid: 7 })
        ));
    }
}
