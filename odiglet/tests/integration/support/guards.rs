//! RAII cleanup for what tests create: child processes (killed and reaped) and cgroups
//! (processes moved out, directory removed), so a failing assertion leaves nothing behind.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// A child process killed and reaped on drop.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    what: String,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed and output discarded unless `ODIGLET_TEST_OUTPUT` is set.
    pub fn spawn(what: &str, cmd: &mut Command) -> Self {
        if std::env::var_os("ODIGLET_TEST_OUTPUT").is_none() {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Self {
            child,
            what: what.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics with the exit status if the child already exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited early: {status}", self.what);
        }
    }

    /// Waits until `ready` holds for the child, checking it is still alive.
    pub fn wait_until(&mut self, timeout: Duration, mut ready: impl FnMut(u32) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_running();
            if ready(self.pid()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready after {timeout:?}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cgroup v2 directory created for a test and removed on drop.
#[derive(Debug)]
pub struct CgroupGuard {
    path: PathBuf,
}

impl CgroupGuard {
    pub fn create(parent: &Path, name: &str) -> Self {
        let path = parent.join(name);
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn add(&self, pid: u32) {
        fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("cannot move {pid} into {}: {e}", self.path.display()));
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        // A cgroup with live processes cannot be removed: move them to the parent first.
        if let (Ok(procs), Some(parent)) = (
            fs::read_to_string(self.path.join("cgroup.procs")),
            self.path.parent(),
        ) {
            for pid in procs.lines() {
                let _ = fs::write(parent.join("cgroup.procs"), pid);
            }
        }
        let _ = fs::remove_dir(&self.path);
    }
}

/// A kubelet-style container cgroup (systemd driver, Burstable pod) under a fresh root that a
/// test passes as `ODIGOS_CGROUP_ROOT`: `<root>/kubepods.slice/kubepods-burstable.slice/
/// kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope`. Removed on drop, innermost
/// first.
#[derive(Debug)]
pub struct ContainerCgroup {
    root: CgroupGuard,
    levels: Vec<CgroupGuard>,
}

impl ContainerCgroup {
    pub fn create(mount: &Path, name: &str, pod_uid: &str, container_id: &str) -> Self {
        let root = CgroupGuard::create(mount, name);
        let uid_ = pod_uid.replace('-', "_");
        let slices = [
            "kubepods.slice".to_owned(),
            "kubepods-burstable.slice".to_owned(),
            format!("kubepods-burstable-pod{uid_}.slice"),
            format!("cri-containerd-{container_id}.scope"),
        ];
        let mut levels: Vec<CgroupGuard> = Vec::new();
        for slice in slices {
            let parent = levels
                .last()
                .map_or(root.path(), CgroupGuard::path)
                .to_owned();
            levels.push(CgroupGuard::create(&parent, &slice));
        }
        Self { root, levels }
    }

    /// The root to pass as the cgroup root.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The container's own cgroup.
    pub fn scope(&self) -> &CgroupGuard {
        self.levels.last().expect("four levels")
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        while let Some(level) = self.levels.pop() {
            drop(level);
        }
    }
}

/// The cgroup v2 mount, or `None` (with a skip line) where there is none.
pub fn cgroup2_mount(test: &str) -> Option<PathBuf> {
    if !super::runtimes::root(test) {
        return None;
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").expect("own mountinfo");
    let mount = odiglet::process::cgroup2_mount_from_mountinfo(&mountinfo);
    assert!(
        mount.is_some() || std::env::var("CI").as_deref() != Ok("true"),
        "{test}: no cgroup2 mount"
    );
    mount
}
