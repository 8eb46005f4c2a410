//! Which container a process runs in, from its cgroup: the container id that runtimes put in
//! cgroup path names, and the cgroup v2 id the probe reports.

use std::{
    collections::HashMap,
    fs,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Length of the hex container ids of Docker, containerd, CRI-O and Podman.
const CONTAINER_ID_LEN: usize = 64;

/// The container id in a cgroup path, if any. Handles the systemd driver's
/// `.../docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`
/// and the cgroupfs driver's `.../<id>` and `/docker/<id>`.
pub fn container_id_from_cgroup_path(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|component| {
        let name = component.strip_suffix(".scope").unwrap_or(component);
        // `crio-conmon-<id>` is the monitor next to the container, not the container.
        if name.starts_with("crio-conmon-") {
            return None;
        }
        let candidate = name.rsplit(['-', ':']).next()?;
        let is_id = candidate.len() == CONTAINER_ID_LEN
            && candidate
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        is_id.then(|| candidate.to_owned())
    })
}

/// The cgroup v2 path of a process from the text of `/proc/<pid>/cgroup` (`0::/path`), or, on
/// v1-only hosts, the first hierarchy's path.
pub fn cgroup_path_from_proc(text: &str) -> Option<&str> {
    let mut fallback = None;
    for line in text.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(_controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id == "0" {
            return Some(path);
        }
        fallback.get_or_insert(path);
    }
    fallback
}

/// Where the cgroup v2 hierarchy is mounted, from `mountinfo` text (field 5 is the mount
/// point; the filesystem type follows the ` - ` separator).
pub fn cgroup2_mount_from_mountinfo(text: &str) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// Resolves and caches container ids by cgroup id, so exit events (whose `/proc` entry is
/// gone) still get the id their cgroup was seen with.
#[derive(Debug)]
pub struct ContainerResolver {
    proc_root: PathBuf,
    cgroup2_mount: Option<PathBuf>,
    by_cgroup_id: HashMap<u64, Option<String>>,
}

/// Cgroups remembered at once; a node has far fewer, so hitting this means churn, and
/// starting over is cheaper than tracking recency.
const MAX_CACHED_CGROUPS: usize = 16_384;

impl ContainerResolver {
    pub fn new(proc_root: &Path) -> Self {
        let cgroup2_mount = fs::read_to_string(proc_root.join("self/mountinfo"))
            .ok()
            .and_then(|text| cgroup2_mount_from_mountinfo(&text));
        Self {
            proc_root: proc_root.to_owned(),
            cgroup2_mount,
            by_cgroup_id: HashMap::new(),
        }
    }

    /// Container id of `pid`, whose cgroup v2 id is `cgroup_id`.
    pub fn container_id(&mut self, pid: u32, cgroup_id: u64) -> Option<String> {
        if let Some(cached) = self.by_cgroup_id.get(&cgroup_id) {
            return cached.clone();
        }
        let text = fs::read_to_string(self.proc_root.join(format!("{pid}/cgroup"))).ok()?;
        let id = cgroup_path_from_proc(&text).and_then(container_id_from_cgroup_path);
        if self.by_cgroup_id.len() >= MAX_CACHED_CGROUPS {
            self.by_cgroup_id.clear();
        }
        self.by_cgroup_id.insert(cgroup_id, id.clone());
        id
    }

    /// Cgroup v2 id (the directory's inode number) and container id of a running process.
    pub fn describe(&mut self, pid: u32) -> (u64, Option<String>) {
        let Ok(text) = fs::read_to_string(self.proc_root.join(format!("{pid}/cgroup"))) else {
            return (0, None);
        };
        let Some(path) = cgroup_path_from_proc(&text) else {
            return (0, None);
        };
        let container_id = container_id_from_cgroup_path(path);
        let cgroup_id = self
            .cgroup2_mount
            .as_ref()
            .and_then(|mount| fs::metadata(mount.join(path.trim_start_matches('/'))).ok())
            .map_or(0, |meta| meta.ino());
        if cgroup_id != 0 && self.by_cgroup_id.len() < MAX_CACHED_CGROUPS {
            self.by_cgroup_id.insert(cgroup_id, container_id.clone());
        }
        (cgroup_id, container_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f2b9c6a1e0d8b7c3a5f6e9d2c1b0a8f7e6d5c4b3a291807f6e5d4c3b2a19080";

    #[test]
    fn container_ids_from_runtime_cgroup_layouts() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{ID}.scope"
            ),
            format!("/kubepods.slice/kubepods-pod2.slice/crio-{ID}.scope"),
            format!("/kubepods/burstable/pod0a1b/{ID}"),
            format!("/docker/{ID}"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
        ] {
            assert_eq!(
                container_id_from_cgroup_path(&path).as_deref(),
                Some(ID),
                "{path}"
            );
        }
        assert_eq!(
            container_id_from_cgroup_path("/user.slice/session-2.scope"),
            None
        );
        assert_eq!(
            container_id_from_cgroup_path(&format!("/x/crio-conmon-{ID}.scope")),
            None
        );
        assert_eq!(
            container_id_from_cgroup_path(&format!("/x/{}", ID.to_uppercase())),
            None
        );
    }

    #[test]
    fn cgroup_path_prefers_v2() {
        let hybrid = "12:cpu,cpuacct:/docker/abc\n0::/system.slice/foo.service\n";
        assert_eq!(
            cgroup_path_from_proc(hybrid),
            Some("/system.slice/foo.service")
        );
        assert_eq!(
            cgroup_path_from_proc("4:memory:/kubepods/x\n"),
            Some("/kubepods/x")
        );
        assert_eq!(cgroup_path_from_proc("garbage"), None);
    }

    #[test]
    fn finds_cgroup2_mount() {
        let mountinfo = "25 30 0:22 / /sys rw,nosuid shared:7 - sysfs sysfs rw\n\
            35 26 0:30 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount_from_mountinfo(mountinfo),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount_from_mountinfo("1 2 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }

    #[test]
    fn own_cgroup_id_matches_the_kernel_view() {
        // Our own process is alive, so describe() must find a cgroup and its inode.
        let mut resolver = ContainerResolver::new(Path::new("/proc"));
        if resolver.cgroup2_mount.is_none() {
            return; // a v1-only host: nothing to compare
        }
        let (cgroup_id, _) = resolver.describe(std::process::id());
        assert_ne!(cgroup_id, 0);
    }
}
