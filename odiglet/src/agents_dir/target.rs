//! A directory of the target tree, operated on through its file descriptor: every lookup,
//! create, rename and removal is relative to the open directory and never follows a symlink,
//! so nothing placed in the target (by a previous version or by anyone else) can redirect a
//! write outside the tree.

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    os::{
        fd::{AsFd, OwnedFd},
        unix::ffi::OsStrExt,
    },
    path::{Path, PathBuf},
};

use nix::{
    dir::Dir,
    errno::Errno,
    fcntl::{OFlag, openat, readlinkat, renameat},
    sys::stat::{FileStat, Mode, SFlag, fchmod, fstatat, mkdirat},
    unistd::{UnlinkatFlags, symlinkat, unlinkat},
};

use super::{AgentsDirError, MAX_DEPTH};

/// What a name in a target directory is, without following symlinks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    /// Sockets, FIFOs, devices: never ours to replace or remove.
    Other,
}

/// An entry's kind with the stat fields the sync compares.
#[derive(Clone, Copy, Debug)]
pub struct EntryStat {
    pub kind: EntryKind,
    pub size: u64,
    pub permissions: u32,
    pub device: u64,
    pub inode: u64,
}

impl EntryStat {
    fn from_stat(stat: &FileStat) -> Self {
        let format = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
        let kind = match format {
            SFlag::S_IFDIR => EntryKind::Dir,
            SFlag::S_IFREG => EntryKind::File,
            SFlag::S_IFLNK => EntryKind::Symlink,
            _ => EntryKind::Other,
        };
        Self {
            kind,
            size: u64::try_from(stat.st_size).unwrap_or(0),
            permissions: stat.st_mode & 0o7777,
            device: stat.st_dev,
            inode: stat.st_ino,
        }
    }
}

/// An open directory of the target tree and its path (for messages only: operations go
/// through the descriptor).
#[derive(Debug)]
pub struct TargetDir {
    fd: OwnedFd,
    path: PathBuf,
    depth: usize,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl TargetDir {
    /// Opens (creating it and its parents when missing) the root of the target. The root path
    /// itself is the operator's choice and may go through symlinks; nothing below it may.
    pub fn open_root(path: &Path) -> Result<Self, AgentsDirError> {
        std::fs::create_dir_all(path).map_err(|source| AgentsDirError::Io {
            action: "create",
            path: path.to_owned(),
            source,
        })?;
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| errno_error("open", path, errno))?;
        Ok(Self {
            fd,
            path: path.to_owned(),
            depth: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn child_path(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    fn error(&self, action: &'static str, name: &OsStr, errno: Errno) -> AgentsDirError {
        errno_error(action, &self.child_path(name), errno)
    }

    /// The names in this directory (not `.` and `..`), sorted for a deterministic order.
    pub fn names(&self) -> Result<Vec<OsString>, AgentsDirError> {
        let mut dir = Dir::openat(self.fd.as_fd(), ".", DIR_FLAGS, Mode::empty())
            .map_err(|errno| errno_error("list", &self.path, errno))?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry.map_err(|errno| errno_error("list", &self.path, errno))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// The entry `name`, without following a symlink; `None` when it does not exist.
    pub fn stat(&self, name: &OsStr) -> Result<Option<EntryStat>, AgentsDirError> {
        match fstatat(
            self.fd.as_fd(),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(stat) => Ok(Some(EntryStat::from_stat(&stat))),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(self.error("stat", name, errno)),
        }
    }

    /// Sets this directory's permissions (directories are 0755 so non-root pods can enter).
    pub fn set_permissions(&self, permissions: u32) -> Result<(), AgentsDirError> {
        fchmod(self.fd.as_fd(), Mode::from_bits_truncate(permissions))
            .map_err(|errno| errno_error("chmod", &self.path, errno))
    }

    /// Opens the subdirectory `name`; fails on a symlink instead of following it.
    pub fn open_dir(&self, name: &OsStr) -> Result<Self, AgentsDirError> {
        if self.depth >= MAX_DEPTH {
            return Err(AgentsDirError::TooDeep {
                path: self.child_path(name),
            });
        }
        let fd = openat(self.fd.as_fd(), name, DIR_FLAGS, Mode::empty())
            .map_err(|errno| self.error("open", name, errno))?;
        Ok(Self {
            fd,
            path: self.child_path(name),
            depth: self.depth + 1,
        })
    }

    /// Creates the subdirectory `name` with `permissions` (not masked by the umask) and opens it.
    pub fn create_dir(&self, name: &OsStr, permissions: u32) -> Result<Self, AgentsDirError> {
        mkdirat(self.fd.as_fd(), name, Mode::from_bits_truncate(0o700))
            .map_err(|errno| self.error("create", name, errno))?;
        let dir = self.open_dir(name)?;
        dir.set_permissions(permissions)?;
        Ok(dir)
    }

    /// Opens the regular file `name` for reading; fails on a symlink.
    pub fn open_file(&self, name: &OsStr) -> Result<File, AgentsDirError> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        openat(self.fd.as_fd(), name, flags, Mode::empty())
            .map(File::from)
            .map_err(|errno| self.error("open", name, errno))
    }

    /// Creates the file `name`, which must not exist, for writing (owner-only until renamed
    /// into place with its final mode).
    pub fn create_file(&self, name: &OsStr) -> Result<File, AgentsDirError> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        openat(
            self.fd.as_fd(),
            name,
            flags,
            Mode::from_bits_truncate(0o600),
        )
        .map(File::from)
        .map_err(|errno| self.error("create", name, errno))
    }

    /// Creates the symlink `name` pointing at `destination`.
    pub fn create_symlink(&self, destination: &Path, name: &OsStr) -> Result<(), AgentsDirError> {
        symlinkat(destination, self.fd.as_fd(), name)
            .map_err(|errno| self.error("create symlink", name, errno))
    }

    /// Where the symlink `name` points.
    pub fn read_symlink(&self, name: &OsStr) -> Result<OsString, AgentsDirError> {
        readlinkat(self.fd.as_fd(), name).map_err(|errno| self.error("read symlink", name, errno))
    }

    /// Atomically replaces `to` (a file or symlink, or nothing) with `from`: a process that
    /// has the old file open or mapped keeps the old inode.
    pub fn rename(&self, from: &OsStr, to: &OsStr) -> Result<(), AgentsDirError> {
        renameat(self.fd.as_fd(), from, self.fd.as_fd(), to)
            .map_err(|errno| self.error("rename into", to, errno))
    }

    /// Removes the file or symlink `name` (never a directory); a missing one is fine.
    pub fn remove_file(&self, name: &OsStr) -> Result<(), AgentsDirError> {
        match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(errno) => Err(self.error("remove", name, errno)),
        }
    }

    /// Removes the empty directory `name`; `false` when it is not empty.
    pub fn remove_empty_dir(&self, name: &OsStr) -> Result<bool, AgentsDirError> {
        match unlinkat(self.fd.as_fd(), name, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(true),
            Err(Errno::ENOTEMPTY | Errno::EEXIST) => Ok(false),
            Err(errno) => Err(self.error("remove", name, errno)),
        }
    }

    /// Removes the directory `name` and everything in it, without following symlinks.
    pub fn remove_tree(&self, name: &OsStr) -> Result<(), AgentsDirError> {
        let dir = self.open_dir(name)?;
        for child in dir.names()? {
            match dir.stat(&child)?.map(|s| s.kind) {
                Some(EntryKind::Dir) => dir.remove_tree(&child)?,
                Some(_) => dir.remove_file(&child)?,
                None => {}
            }
        }
        drop(dir);
        if self.remove_empty_dir(name)? {
            Ok(())
        } else {
            Err(self.error("remove", name, Errno::ENOTEMPTY))
        }
    }

    /// Flushes every pending write of the target's filesystem to disk.
    pub fn sync_filesystem(&self) -> Result<(), AgentsDirError> {
        nix::unistd::syncfs(self.fd.as_fd()).map_err(|errno| errno_error("sync", &self.path, errno))
    }
}

fn errno_error(action: &'static str, path: &Path, errno: Errno) -> AgentsDirError {
    AgentsDirError::Io {
        action,
        path: path.to_owned(),
        source: std::io::Error::from(errno),
    }
}
