//! Shared by the benchmarks that measure the daemon's footprint (manager, run): memory and CPU
//! of a process from `/proc`, kubelet-style container cgroups, child processes killed on drop.

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

/// The memory lines of `/proc/<pid>/status`, in KiB.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss: u64,
    pub anon: u64,
    pub file: u64,
    pub shmem: u64,
}

/// Memory of `pid` ("self" for this process).
pub fn memory(pid: &str) -> Memory {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss: field("VmRSS:"),
        anon: field("RssAnon:"),
        file: field("RssFile:"),
        shmem: field("RssShmem:"),
    }
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Children killed on drop.
pub struct Children(pub Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One container of a pod, as the kubelet's systemd driver lays it out.
pub struct ContainerCgroup {
    pub pod_uid: String,
    pub container_id: String,
}

/// The kubelet's systemd layout (Burstable pods) under our own root; every level removed
/// (innermost first, processes moved out) on drop.
pub struct Cgroups {
    root: PathBuf,
    scopes: Vec<PathBuf>,
    /// Every directory created, parents before children.
    levels: Vec<PathBuf>,
}

impl Cgroups {
    pub fn create(mount: &Path, containers: &[ContainerCgroup]) -> Self {
        let root = mount.join(format!("odiglet-bench-{}", std::process::id()));
        let qos = root.join("kubepods.slice/kubepods-burstable.slice");
        let mut levels = vec![root.clone(), root.join("kubepods.slice"), qos.clone()];
        let mut scopes = Vec::new();
        for container in containers {
            let pod = qos.join(format!(
                "kubepods-burstable-pod{}.slice",
                container.pod_uid.replace('-', "_")
            ));
            let scope = pod.join(format!("cri-containerd-{}.scope", container.container_id));
            if !levels.contains(&pod) {
                levels.push(pod);
            }
            levels.push(scope.clone());
            scopes.push(scope);
        }
        for level in &levels {
            fs::create_dir_all(level).expect("create cgroup");
        }
        Self {
            root,
            scopes,
            levels,
        }
    }

    /// What `--cgroup-root` / `ManagerConfig::cgroup_root` point at.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The container scopes, in the order given to [`Cgroups::create`].
    pub fn scopes(&self) -> &[PathBuf] {
        &self.scopes
    }

    /// Moves `pid` into container `index`.
    pub fn enter(&self, index: usize, pid: u32) {
        fs::write(self.scopes[index].join("cgroup.procs"), pid.to_string()).expect("move");
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        let parent = self.root.parent().map(Path::to_owned);
        for level in self.levels.iter().rev() {
            if let (Ok(procs), Some(parent)) = (
                fs::read_to_string(level.join("cgroup.procs")),
                parent.as_ref(),
            ) {
                for pid in procs.lines() {
                    let _ = fs::write(parent.join("cgroup.procs"), pid);
                }
            }
            let _ = fs::remove_dir(level);
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what} not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `/bin/sh` script that runs `cycles` exec/exit cycles of `/bin/true` inside `scope`.
pub fn exec_churn_script(scope: &Path, cycles: usize) -> String {
    format!(
        "echo $$ > {}/cgroup.procs; i=0; while [ $i -lt {cycles} ]; do /bin/true; i=$((i+1)); done",
        scope.display()
    )
}
