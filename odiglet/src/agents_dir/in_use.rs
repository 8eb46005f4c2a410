//! Which files running processes hold: open descriptors and memory-mapped files of every
//! process under the proc root (odiglet's pod shares the host PID namespace). The sync keeps a
//! stale agent file that some process holds, as Odigos' keep-list of in-use files does.
//!
//! Files are identified as `stat` does, by device and inode: descriptors through
//! `/proc/<pid>/fd/N`, mappings through `/proc/<pid>/map_files/` (which needs
//! CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE). Without access to `map_files`, a mapping is known
//! only by the inode number `/proc/<pid>/maps` shows (its device there differs from `stat`'s
//! on btrfs), and any file with that inode number counts as held: a collision with another
//! filesystem only keeps a stale file one more update, the safe side.

use std::{collections::HashSet, fs, io::Read, os::unix::fs::MetadataExt, path::Path};

/// Bounds of the scan: a node has far fewer processes, and a process far fewer descriptors
/// and mappings.
const MAX_PROCESSES: usize = 1 << 20;
const MAX_FDS_PER_PROCESS: usize = 1 << 16;
const MAX_MAPS_BYTES: u64 = 16 << 20;

/// The files held by running processes.
#[derive(Debug, Default)]
pub struct InUseFiles {
    /// `(st_dev, st_ino)` of held files.
    files: HashSet<(u64, u64)>,
    /// Inode numbers of mappings whose file could not be stat'ed.
    mapped_inodes: HashSet<u64>,
}

impl InUseFiles {
    /// Scans every process under `proc_root`. Processes that exit meanwhile or cannot be read
    /// are skipped: the scan is best effort and never fails the sync.
    pub fn scan(proc_root: &Path) -> Self {
        let mut held = Self::default();
        let Ok(entries) = fs::read_dir(proc_root) else {
            tracing::warn!(proc_root = %proc_root.display(), "cannot list processes; no agent file counts as in use");
            return held;
        };
        for entry in entries.flatten().take(MAX_PROCESSES) {
            let name = entry.file_name();
            let is_pid = name
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
            if is_pid {
                let dir = entry.path();
                held.add_open_files(&dir);
                held.add_mapped_files(&dir);
            }
        }
        held
    }

    /// True when a process holds the file with this device and inode.
    pub fn contains(&self, device: u64, inode: u64) -> bool {
        self.files.contains(&(device, inode)) || self.mapped_inodes.contains(&inode)
    }

    pub fn len(&self) -> usize {
        self.files.len() + self.mapped_inodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn add_open_files(&mut self, process: &Path) {
        let Ok(fds) = fs::read_dir(process.join("fd")) else {
            return;
        };
        for fd in fds.flatten().take(MAX_FDS_PER_PROCESS) {
            let path = fd.path();
            // Sockets, pipes and anonymous inodes link to `type:[n]`, not to a path.
            let is_file = fs::read_link(&path).is_ok_and(|target| target.is_absolute());
            if let Some(metadata) = is_file.then(|| fs::metadata(&path).ok()).flatten() {
                self.files.insert((metadata.dev(), metadata.ino()));
            }
        }
    }

    fn add_mapped_files(&mut self, process: &Path) {
        let Ok(file) = fs::File::open(process.join("maps")) else {
            return;
        };
        let mut text = String::new();
        if file.take(MAX_MAPS_BYTES).read_to_string(&mut text).is_err() {
            return;
        }
        let map_files = process.join("map_files");
        // A library is mapped several times (text, data, ...): stat each file once.
        let mut seen = HashSet::new();
        for mapping in text.lines().filter_map(FileMapping::parse) {
            if !seen.insert((mapping.device, mapping.inode)) {
                continue;
            }
            match fs::metadata(map_files.join(mapping.range)) {
                Ok(metadata) => {
                    self.files.insert((metadata.dev(), metadata.ino()));
                }
                Err(_) => {
                    self.mapped_inodes.insert(mapping.inode);
                }
            }
        }
    }
}

/// One file-backed line of `/proc/<pid>/maps`:
/// `start-end perms offset major:minor inode [path]`.
#[derive(Debug, PartialEq, Eq)]
struct FileMapping<'a> {
    range: &'a str,
    device: &'a str,
    inode: u64,
}

impl<'a> FileMapping<'a> {
    /// `None` for anonymous memory (inode 0) and malformed lines.
    fn parse(line: &'a str) -> Option<Self> {
        let mut fields = line.split_ascii_whitespace();
        let range = fields.next()?;
        let device = fields.nth(2)?;
        let inode: u64 = fields.next()?.parse().ok()?;
        (inode != 0).then_some(Self {
            range,
            device,
            inode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lines() {
        assert_eq!(
            FileMapping::parse(
                "7f1c2a000000-7f1c2a022000 r--p 00000000 fd:01 1835043    /usr/lib/libc.so.6"
            ),
            Some(FileMapping {
                range: "7f1c2a000000-7f1c2a022000",
                device: "fd:01",
                inode: 1_835_043
            })
        );
        assert_eq!(
            FileMapping::parse("7ffd1b5c4000-7ffd1b5e5000 rw-p 00000000 00:00 0    [stack]"),
            None
        );
        assert_eq!(FileMapping::parse("garbage"), None);
    }

    #[test]
    fn own_open_and_mapped_files_are_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held");
        fs::write(&path, b"x").unwrap();
        let held = fs::File::open(&path).unwrap();
        let metadata = held.metadata().unwrap();
        let in_use = InUseFiles::scan(Path::new("/proc"));
        assert!(in_use.contains(metadata.dev(), metadata.ino()));
        // This test binary maps itself.
        let exe = fs::metadata("/proc/self/exe").unwrap();
        assert!(in_use.contains(exe.dev(), exe.ino()));
    }

    #[test]
    fn missing_proc_root_is_empty() {
        assert!(InUseFiles::scan(Path::new("/nonexistent/proc")).is_empty());
    }
}
