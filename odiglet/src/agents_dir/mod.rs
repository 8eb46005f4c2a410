//! AGENTS DIRECTORY: installs the instrumentation agents shipped in odiglet's image (for
//! example `/instrumentations`) into the host directory that pods mount (`/var/odigos`), as
//! Odigos' init phase does (odigos.md §7 "Agents directory copy").
//!
//! A sync runs in three steps so that it never breaks an agent a process is using:
//! 1. **stage**: walk the source; every new or changed file is written next to its final name
//!    under a temporary name, created exclusively (never truncating an existing file);
//! 2. **flush**: one `syncfs` so no rename can expose a file whose data is not on disk;
//! 3. **commit**: rename every staged file over its final name. A process that has the old
//!    file open or mapped keeps the old inode; new opens see the new file.
//!
//! Files no longer in the source are removed unless a process holds them ([`in_use`]).
//! Directories get mode 0755 and files 0644, or 0755 when the source file is executable, so
//! non-root pods can read them (Odigos issue #4769). Symlinks are copied as symlinks when they
//! stay inside the tree and skipped otherwise; the target is only ever operated on through
//! directory descriptors without following symlinks ([`target`]).

pub mod in_use;
pub mod target;

use std::{
    ffi::{OsStr, OsString},
    fs::{self, File},
    io::{self, Read},
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Component, Path, PathBuf},
    rc::Rc,
};

use serde::Serialize;
use tracing::{debug, info, warn};

use self::{
    in_use::InUseFiles,
    target::{EntryKind, EntryStat, TargetDir},
};

/// Deepest directory nesting accepted, in the source and in the target.
pub const MAX_DEPTH: usize = 64;
/// Most entries (files, directories, symlinks) accepted in the source.
pub const MAX_ENTRIES: usize = 500_000;
/// Prefix of staged files; leftovers of an interrupted sync are removed by the next one.
const STAGING_PREFIX: &str = ".odiglet-sync.";

/// Mode of every directory and of non-executable files.
pub const DIR_MODE: u32 = 0o755;
pub const FILE_MODE: u32 = 0o644;
pub const EXECUTABLE_MODE: u32 = 0o755;

#[derive(Debug, thiserror::Error)]
pub enum AgentsDirError {
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error(
        "{target_dir} and {source_dir} overlap: the target must be outside the source and vice versa"
    )]
    Overlap {
        source_dir: PathBuf,
        target_dir: PathBuf,
    },
    #[error("{path} is nested more than {MAX_DEPTH} directories deep")]
    TooDeep { path: PathBuf },
    #[error("the source has more than {MAX_ENTRIES} entries (at {path})")]
    TooManyEntries { path: PathBuf },
    #[error("{path} uses the reserved name prefix `{STAGING_PREFIX}`")]
    ReservedName { path: PathBuf },
}

/// What to sync and how.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// The agents as shipped in the image.
    pub source: PathBuf,
    /// The host directory pods mount.
    pub target: PathBuf,
    /// Top-level target entries that are not agents and must be left alone (the OpAMP
    /// `exchange` directory, mounted into odiglet and holding its Unix socket).
    pub preserve: Vec<OsString>,
    /// Root of the proc filesystem, for finding the files processes hold.
    pub proc_root: PathBuf,
}

impl SyncConfig {
    pub fn new(source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        Self {
            source: source.into(),
            target: target.into(),
            preserve: vec!["exchange".into()],
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// Whether the target held agents before the sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// The target was empty: a full copy.
    Full,
    /// The target held a previous version: updated in place.
    Update,
}

/// What a sync did, counted per entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    pub mode: SyncMode,
    /// Files and symlinks that did not exist in the target.
    pub created: u64,
    /// Files and symlinks whose content or destination changed.
    pub replaced: u64,
    /// Files and symlinks already identical (their mode fixed if needed).
    pub unchanged: u64,
    /// Entries whose mode was corrected in place.
    pub permissions_fixed: u64,
    /// Directories created.
    pub directories_created: u64,
    /// Stale entries removed (files, symlinks, emptied directories, leftovers of an earlier
    /// interrupted sync).
    pub removed: u64,
    /// Stale files kept because a process holds them.
    pub kept_in_use: u64,
    /// Source symlinks skipped because they point outside the tree, and source entries that
    /// are neither files, directories nor symlinks.
    pub skipped: u64,
    /// Bytes written to staged files.
    pub bytes_written: u64,
}

impl SyncReport {
    fn new(mode: SyncMode) -> Self {
        Self {
            mode,
            created: 0,
            replaced: 0,
            unchanged: 0,
            permissions_fixed: 0,
            directories_created: 0,
            removed: 0,
            kept_in_use: 0,
            skipped: 0,
            bytes_written: 0,
        }
    }
}

/// Installs or updates the agents of `config.source` in `config.target`.
pub fn sync(config: &SyncConfig) -> Result<SyncReport, AgentsDirError> {
    let source_meta = fs::metadata(&config.source).map_err(|source| AgentsDirError::Io {
        action: "read",
        path: config.source.clone(),
        source,
    })?;
    if !source_meta.is_dir() {
        return Err(AgentsDirError::NotADirectory {
            path: config.source.clone(),
        });
    }
    check_disjoint(&config.source, &config.target)?;
    let root = TargetDir::open_root(&config.target)?;
    root.set_permissions(DIR_MODE)?;

    let existing = root.names()?;
    let mode = if existing.iter().all(|n| config.preserve.contains(n)) {
        SyncMode::Full
    } else {
        SyncMode::Update
    };
    let mut sync = Sync {
        config,
        report: SyncReport::new(mode),
        staged: Vec::new(),
        entries: 0,
        in_use: None,
        temp_counter: 0,
    };
    let root = Rc::new(root);
    let result = sync
        .directory(&config.source, &root, true)
        .and_then(|()| sync.commit(&root));
    if result.is_err() {
        sync.discard_staged();
    }
    result?;
    info!(
        source = %config.source.display(),
        target = %config.target.display(),
        mode = ?sync.report.mode,
        created = sync.report.created,
        replaced = sync.report.replaced,
        unchanged = sync.report.unchanged,
        removed = sync.report.removed,
        kept_in_use = sync.report.kept_in_use,
        "agents directory synced"
    );
    Ok(sync.report)
}

/// The source and the target must not contain each other, or the walk would copy its own
/// output.
fn check_disjoint(source: &Path, target: &Path) -> Result<(), AgentsDirError> {
    let resolve_error = |path: &Path, e| AgentsDirError::Io {
        action: "resolve",
        path: path.to_owned(),
        source: e,
    };
    let s = fs::canonicalize(source).map_err(|e| resolve_error(source, e))?;
    // The target may not exist yet: resolve its closest existing ancestor.
    let mut missing = Vec::new();
    let mut existing = target;
    let t = loop {
        match fs::canonicalize(existing) {
            Ok(resolved) => break resolved.join(missing.iter().rev().collect::<PathBuf>()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    return Err(resolve_error(target, e));
                };
                missing.push(name);
                existing = parent;
            }
            Err(e) => return Err(resolve_error(target, e)),
        }
    };
    if s.starts_with(&t) || t.starts_with(&s) {
        return Err(AgentsDirError::Overlap {
            source_dir: source.to_owned(),
            target_dir: target.to_owned(),
        });
    }
    Ok(())
}

/// A file or symlink written under a temporary name, to be renamed over `name`.
struct Staged {
    dir: Rc<TargetDir>,
    temp: OsString,
    name: OsString,
}

struct Sync<'a> {
    config: &'a SyncConfig,
    report: SyncReport,
    staged: Vec<Staged>,
    entries: usize,
    /// Scanned on the first stale file: a full copy never needs it.
    in_use: Option<InUseFiles>,
    temp_counter: u64,
}

impl Sync<'_> {
    /// Syncs the source directory `source` into the open target directory `target`.
    fn directory(
        &mut self,
        source: &Path,
        target: &Rc<TargetDir>,
        is_root: bool,
    ) -> Result<(), AgentsDirError> {
        let source_names = source_names(source)?;
        // Stale entries first: the staged files created below are not in the source either.
        for name in target.names()? {
            let preserved = is_root && self.config.preserve.contains(&name);
            if !preserved && source_names.binary_search(&name).is_err() {
                self.remove_stale(target, &name)?;
            }
        }
        for name in &source_names {
            self.entries += 1;
            if self.entries > MAX_ENTRIES {
                return Err(AgentsDirError::TooManyEntries {
                    path: source.join(name),
                });
            }
            if name.as_bytes().starts_with(STAGING_PREFIX.as_bytes()) {
                return Err(AgentsDirError::ReservedName {
                    path: source.join(name),
                });
            }
            if is_root && self.config.preserve.contains(name) {
                warn!(name = %name.to_string_lossy(), "the source has an entry named like a preserved one; not copied");
                self.report.skipped += 1;
                continue;
            }
            self.entry(source, target, name)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        source_dir: &Path,
        target: &Rc<TargetDir>,
        name: &OsStr,
    ) -> Result<(), AgentsDirError> {
        let source = source_dir.join(name);
        let meta = fs::symlink_metadata(&source).map_err(|e| AgentsDirError::Io {
            action: "read",
            path: source.clone(),
            source: e,
        })?;
        let existing = target.stat(name)?;
        let file_type = meta.file_type();
        if file_type.is_dir() {
            let dir = match existing.map(|e| e.kind) {
                Some(EntryKind::Dir) => {
                    let dir = target.open_dir(name)?;
                    if existing.is_some_and(|e| e.permissions != DIR_MODE) {
                        dir.set_permissions(DIR_MODE)?;
                        self.report.permissions_fixed += 1;
                    }
                    dir
                }
                other => {
                    // A file or symlink that became a directory: the old one is obsolete and
                    // unlinking it does not disturb a process that holds it open.
                    if other.is_some() {
                        target.remove_file(name)?;
                        self.report.removed += 1;
                    }
                    self.report.directories_created += 1;
                    target.create_dir(name, DIR_MODE)?
                }
            };
            self.directory(&source, &Rc::new(dir), false)
        } else if file_type.is_file() {
            let permissions = file_mode(meta.permissions().mode());
            let same_file = existing.filter(|e| e.kind == EntryKind::File && e.size == meta.len());
            if let Some(found) = same_file
                && same_content(&source, target, name)?
            {
                if found.permissions != permissions {
                    set_file_permissions(target, name, permissions)?;
                    self.report.permissions_fixed += 1;
                }
                self.report.unchanged += 1;
                return Ok(());
            }
            self.clear_for_replacement(target, name, existing)?;
            let temp = self.stage_file(&source, &meta, target, permissions)?;
            self.push_staged(target, temp, name, existing.is_some());
            Ok(())
        } else if file_type.is_symlink() {
            self.symlink(source_dir, &source, target, name, existing)
        } else {
            warn!(path = %source.display(), "not a file, directory or symlink; skipped");
            self.report.skipped += 1;
            Ok(())
        }
    }

    fn symlink(
        &mut self,
        source_dir: &Path,
        source: &Path,
        target: &Rc<TargetDir>,
        name: &OsStr,
        existing: Option<EntryStat>,
    ) -> Result<(), AgentsDirError> {
        let destination = fs::read_link(source).map_err(|e| AgentsDirError::Io {
            action: "read symlink",
            path: source.to_owned(),
            source: e,
        })?;
        let relative_dir = source_dir
            .strip_prefix(&self.config.source)
            .unwrap_or(Path::new(""));
        if !stays_inside(relative_dir, &destination) {
            warn!(path = %source.display(), destination = %destination.display(), "symlink points outside the agents directory; skipped");
            self.report.skipped += 1;
            return Ok(());
        }
        if existing.is_some_and(|e| e.kind == EntryKind::Symlink)
            && target.read_symlink(name)? == destination.as_os_str()
        {
            self.report.unchanged += 1;
            return Ok(());
        }
        self.clear_for_replacement(target, name, existing)?;
        let temp = self.temp_name();
        target.create_symlink(&destination, &temp)?;
        self.push_staged(target, temp, name, existing.is_some());
        Ok(())
    }

    /// A rename can replace a file or symlink but not a directory: a directory where the
    /// source now has a file goes now.
    fn clear_for_replacement(
        &mut self,
        target: &TargetDir,
        name: &OsStr,
        existing: Option<EntryStat>,
    ) -> Result<(), AgentsDirError> {
        match existing.map(|e| e.kind) {
            Some(EntryKind::Dir) => {
                target.remove_tree(name)?;
                self.report.removed += 1;
            }
            Some(EntryKind::Other) => {
                target.remove_file(name)?;
                self.report.removed += 1;
            }
            _ => {}
        }
        Ok(())
    }

    fn push_staged(
        &mut self,
        target: &Rc<TargetDir>,
        temp: OsString,
        name: &OsStr,
        replaces: bool,
    ) {
        if replaces {
            self.report.replaced += 1;
        } else {
            self.report.created += 1;
        }
        self.staged.push(Staged {
            dir: Rc::clone(target),
            temp,
            name: name.to_owned(),
        });
    }

    fn temp_name(&mut self) -> OsString {
        self.temp_counter += 1;
        format!(
            "{STAGING_PREFIX}{}.{}",
            std::process::id(),
            self.temp_counter
        )
        .into()
    }

    /// Copies `source` into a new temporary file of `target` with its final mode and
    /// modification time; returns the temporary name.
    fn stage_file(
        &mut self,
        source: &Path,
        meta: &fs::Metadata,
        target: &TargetDir,
        permissions: u32,
    ) -> Result<OsString, AgentsDirError> {
        let temp = self.temp_name();
        let mut output = target.create_file(&temp)?;
        let write_error = |action, e| AgentsDirError::Io {
            action,
            path: target.path().join(&temp),
            source: e,
        };
        let result = (|| {
            let mut input = File::open(source).map_err(|e| AgentsDirError::Io {
                action: "read",
                path: source.to_owned(),
                source: e,
            })?;
            let written = io::copy(&mut input, &mut output).map_err(|e| write_error("write", e))?;
            output
                .set_permissions(fs::Permissions::from_mode(permissions))
                .map_err(|e| write_error("chmod", e))?;
            if let Ok(modified) = meta.modified() {
                output
                    .set_modified(modified)
                    .map_err(|e| write_error("set the time of", e))?;
            }
            Ok(written)
        })();
        match result {
            Ok(written) => {
                self.report.bytes_written += written;
                Ok(temp)
            }
            Err(error) => {
                // Not staged yet: remove the partial file here.
                let _ = target.remove_file(&temp);
                Err(error)
            }
        }
    }

    fn remove_stale(&mut self, target: &TargetDir, name: &OsStr) -> Result<(), AgentsDirError> {
        let Some(stat) = target.stat(name)? else {
            return Ok(());
        };
        if name.as_bytes().starts_with(STAGING_PREFIX.as_bytes()) {
            debug!(path = %target.path().join(name).display(), "removing a leftover of an interrupted sync");
            match stat.kind {
                EntryKind::Dir => target.remove_tree(name)?,
                _ => target.remove_file(name)?,
            }
            self.report.removed += 1;
            return Ok(());
        }
        match stat.kind {
            EntryKind::Dir => {
                let dir = target.open_dir(name)?;
                for child in dir.names()? {
                    self.remove_stale(&dir, &child)?;
                }
                drop(dir);
                if target.remove_empty_dir(name)? {
                    self.report.removed += 1;
                }
            }
            EntryKind::File => {
                let in_use = self
                    .in_use
                    .get_or_insert_with(|| InUseFiles::scan(&self.config.proc_root));
                if in_use.contains(stat.device, stat.inode) {
                    info!(path = %target.path().join(name).display(), "stale agent file is in use; kept");
                    self.report.kept_in_use += 1;
                } else {
                    target.remove_file(name)?;
                    self.report.removed += 1;
                }
            }
            EntryKind::Symlink => {
                target.remove_file(name)?;
                self.report.removed += 1;
            }
            // A socket or FIFO someone placed there: not an agent file, not ours.
            EntryKind::Other => {}
        }
        Ok(())
    }

    /// Flushes the staged data, then renames every staged entry into place.
    fn commit(&mut self, root: &TargetDir) -> Result<(), AgentsDirError> {
        if self.staged.is_empty() {
            return Ok(());
        }
        root.sync_filesystem()?;
        let mut pending = std::mem::take(&mut self.staged).into_iter();
        while let Some(staged) = pending.next() {
            if let Err(error) = staged.dir.rename(&staged.temp, &staged.name) {
                // Left for `discard_staged`: the staged file that failed and those after it.
                self.staged = std::iter::once(staged).chain(pending).collect();
                return Err(error);
            }
        }
        Ok(())
    }

    fn discard_staged(&mut self) {
        for staged in self.staged.drain(..) {
            let _ = staged.dir.remove_file(&staged.temp);
        }
    }
}

/// The names in a source directory, sorted (the stale-entry check binary-searches them).
fn source_names(dir: &Path) -> Result<Vec<OsString>, AgentsDirError> {
    let read_error = |e| AgentsDirError::Io {
        action: "list",
        path: dir.to_owned(),
        source: e,
    };
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_error)? {
        names.push(entry.map_err(read_error)?.file_name());
        if names.len() > MAX_ENTRIES {
            return Err(AgentsDirError::TooManyEntries {
                path: dir.to_owned(),
            });
        }
    }
    names.sort();
    Ok(names)
}

/// 0755 for a file executable by anyone in the source, 0644 otherwise.
pub fn file_mode(source_mode: u32) -> u32 {
    if source_mode & 0o111 != 0 {
        EXECUTABLE_MODE
    } else {
        FILE_MODE
    }
}

fn set_file_permissions(
    target: &TargetDir,
    name: &OsStr,
    permissions: u32,
) -> Result<(), AgentsDirError> {
    let file = target.open_file(name)?;
    file.set_permissions(fs::Permissions::from_mode(permissions))
        .map_err(|e| AgentsDirError::Io {
            action: "chmod",
            path: target.path().join(name),
            source: e,
        })
}

/// True when the target file `name` has the same bytes as `source` (sizes already match).
fn same_content(source: &Path, target: &TargetDir, name: &OsStr) -> Result<bool, AgentsDirError> {
    let mut a = File::open(source).map_err(|e| AgentsDirError::Io {
        action: "read",
        path: source.to_owned(),
        source: e,
    })?;
    let mut b = target.open_file(name)?;
    let mut buf_a = vec![0_u8; 64 << 10];
    let mut buf_b = vec![0_u8; 64 << 10];
    loop {
        let n = read_full(&mut a, &mut buf_a).map_err(|e| AgentsDirError::Io {
            action: "read",
            path: source.to_owned(),
            source: e,
        })?;
        let m = read_full(&mut b, &mut buf_b).map_err(|e| AgentsDirError::Io {
            action: "read",
            path: target.path().join(name),
            source: e,
        })?;
        if buf_a.get(..n) != buf_b.get(..m) {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the end of the file; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|r| !r.is_empty()) {
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// True when a symlink in `link_dir` (relative to the tree's root) pointing at `destination`
/// resolves inside the tree. `..` may only lead the destination: climbing from the link's own
/// directory (a real directory, so lexical and physical resolution agree) but never above the
/// root. After a name, `..` could climb out of whatever that name is a symlink to, so it is
/// refused; every symlink copied obeys the same rule, so chains of them stay inside too.
fn stays_inside(link_dir: &Path, destination: &Path) -> bool {
    let mut depth = link_dir.components().count();
    let mut descending = false;
    for component in destination.components() {
        match component {
            Component::Normal(_) => {
                descending = true;
                depth += 1;
            }
            Component::CurDir => {}
            Component::ParentDir if !descending && depth > 0 => depth -= 1,
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests;
