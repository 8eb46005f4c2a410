//! A container's processes (odigos.md §4.2): the kubelet puts each container in a cgroup named
//! from the pod's QoS class, the pod UID and the container id, so its PIDs are that cgroup's
//! `cgroup.procs`. Both cgroup drivers (systemd, cgroupfs), the runtimes' scope prefixes, and
//! cgroup v2, hybrid and v1 hierarchies are tried; when no cgroup matches, every process's
//! `mountinfo` is searched for the kubelet's per-container mounts.

use std::{
    fs,
    io::{self, Read},
    path::{Path, PathBuf},
};

use thiserror::Error;

/// Default cgroup root (`ODIGOS_CGROUP_ROOT`; the manifest mounts the host's at
/// `/host/sys/fs/cgroup`).
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// PIDs read from one `cgroup.procs`; a container with more is not one we can inspect whole.
const MAX_PIDS: usize = 65_536;
/// Bytes of one process's `mountinfo` searched by the fallback.
const MAX_MOUNTINFO: u64 = 1 << 20;
/// Hierarchies under the root to look in: v2 at the root, v2 in hybrid mode, then v1
/// hierarchies every kubelet creates pod cgroups in.
const HIERARCHIES: [&str; 6] = ["", "unified", "systemd", "pids", "memory", "cpu,cpuacct"];
/// Scope prefixes of the runtimes under the systemd driver.
const SCOPE_PREFIXES: [&str; 4] = ["cri-containerd", "crio", "docker", "libpod"];

#[derive(Debug, Error)]
pub enum CgroupError {
    #[error("invalid container id {0:?}")]
    InvalidContainerId(String),
    #[error("invalid pod uid {0:?}")]
    InvalidPodUid(String),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A pod's quality-of-service class, which names its parent cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl QosClass {
    fn slice_name(self) -> Option<&'static str> {
        match self {
            Self::Guaranteed => None,
            Self::Burstable => Some("burstable"),
            Self::BestEffort => Some("besteffort"),
        }
    }
}

/// Which container to find.
#[derive(Clone, Debug)]
pub struct ContainerRef {
    pub pod_uid: String,
    pub qos: QosClass,
    /// As in the pod status (`containerd://<id>`) or bare.
    pub container_id: String,
    pub container_name: String,
}

/// Where cgroups and processes are (`ODIGOS_CGROUP_ROOT`, `ODIGOS_PROC_DIR`).
#[derive(Clone, Debug)]
pub struct CgroupConfig {
    pub cgroup_root: PathBuf,
    pub proc_root: PathBuf,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        Self {
            cgroup_root: DEFAULT_CGROUP_ROOT.into(),
            proc_root: "/proc".into(),
        }
    }
}

/// How the PIDs were found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PidSource {
    Cgroup(PathBuf),
    Mountinfo,
}

fn is_token(s: &str, extra: char) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == extra)
}

/// The container's cgroup paths relative to a hierarchy, for both drivers and every runtime.
pub fn cgroup_candidates(container: &ContainerRef) -> Result<Vec<PathBuf>, CgroupError> {
    let id = container
        .container_id
        .rsplit("://")
        .next()
        .unwrap_or_default();
    if !is_token(id, '_') {
        return Err(CgroupError::InvalidContainerId(
            container.container_id.clone(),
        ));
    }
    if !is_token(&container.pod_uid, '-') {
        return Err(CgroupError::InvalidPodUid(container.pod_uid.clone()));
    }
    let uid = &container.pod_uid;
    let systemd_uid = uid.replace('-', "_");
    let mut candidates = Vec::new();
    // systemd driver: kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/<prefix>-<id>.scope
    let pod_slice = match container.qos.slice_name() {
        None => PathBuf::from(format!("kubepods.slice/kubepods-pod{systemd_uid}.slice")),
        Some(qos) => PathBuf::from(format!(
            "kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{systemd_uid}.slice"
        )),
    };
    for prefix in SCOPE_PREFIXES {
        candidates.push(pod_slice.join(format!("{prefix}-{id}.scope")));
    }
    // cgroupfs driver: kubepods/<qos>/pod<uid>/<id>
    let pod_dir = match container.qos.slice_name() {
        None => PathBuf::from(format!("kubepods/pod{uid}")),
        Some(qos) => PathBuf::from(format!("kubepods/{qos}/pod{uid}")),
    };
    candidates.push(pod_dir.join(id));
    Ok(candidates)
}

/// PIDs listed in `<cgroup>/cgroup.procs`.
pub fn cgroup_pids(cgroup: &Path) -> Result<Vec<u32>, CgroupError> {
    let path = cgroup.join("cgroup.procs");
    let text = fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })?;
    Ok(text
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .take(MAX_PIDS)
        .collect())
}

/// The container's PIDs, from its cgroup or, failing that, from mountinfo.
pub fn container_pids(
    config: &CgroupConfig,
    container: &ContainerRef,
) -> Result<(Vec<u32>, PidSource), CgroupError> {
    let candidates = cgroup_candidates(container)?;
    for hierarchy in HIERARCHIES {
        let base = config.cgroup_root.join(hierarchy);
        for relative in &candidates {
            let cgroup = base.join(relative);
            if cgroup.join("cgroup.procs").exists() {
                let pids = cgroup_pids(&cgroup)?;
                return Ok((pids, PidSource::Cgroup(cgroup)));
            }
        }
    }
    tracing::debug!(pod_uid = %container.pod_uid, container = %container.container_name,
        "no container cgroup found; searching mountinfo");
    let pids = pids_by_mountinfo(
        &config.proc_root,
        &container.pod_uid,
        &container.container_name,
    )?;
    Ok((pids, PidSource::Mountinfo))
}

/// Processes with a mount from `<pod_uid>/containers/<container_name>/` (the kubelet's
/// termination-log and etc-hosts mounts), in PID order.
pub fn pids_by_mountinfo(
    proc_root: &Path,
    pod_uid: &str,
    container_name: &str,
) -> Result<Vec<u32>, CgroupError> {
    let needle = format!("{pod_uid}/containers/{container_name}/");
    let entries = fs::read_dir(proc_root).map_err(|source| CgroupError::Read {
        path: proc_root.to_owned(),
        source,
    })?;
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            let mut text = String::new();
            fs::File::open(proc_root.join(format!("{pid}/mountinfo")))
                .and_then(|file| file.take(MAX_MOUNTINFO).read_to_string(&mut text))
                .is_ok_and(|_| text.contains(&needle))
        })
        .take(MAX_PIDS)
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(qos: QosClass) -> ContainerRef {
        ContainerRef {
            pod_uid: "0a1b2c3d-1111-2222-3333-444455556666".to_owned(),
            qos,
            container_id: "containerd://abc123".to_owned(),
            container_name: "app".to_owned(),
        }
    }

    #[test]
    fn paths_for_both_drivers_and_qos_classes() {
        let paths = cgroup_candidates(&container(QosClass::Burstable)).unwrap();
        let uid_ = "0a1b2c3d_1111_2222_3333_444455556666";
        assert!(paths.contains(&PathBuf::from(format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice/cri-containerd-abc123.scope"
        ))));
        assert!(paths.contains(&PathBuf::from(
            "kubepods/burstable/pod0a1b2c3d-1111-2222-3333-444455556666/abc123"
        )));
        let guaranteed = cgroup_candidates(&container(QosClass::Guaranteed)).unwrap();
        assert!(guaranteed.contains(&PathBuf::from(format!(
            "kubepods.slice/kubepods-pod{uid_}.slice/crio-abc123.scope"
        ))));
        assert!(
            guaranteed
                .iter()
                .any(|p| p.starts_with("kubepods/pod0a1b2c3d-1111-2222-3333-444455556666"))
        );
    }

    #[test]
    fn rejects_ids_that_would_escape_the_hierarchy() {
        let mut bad = container(QosClass::BestEffort);
        bad.container_id = "docker://../../etc".to_owned();
        assert!(matches!(
            cgroup_candidates(&bad),
            Err(CgroupError::InvalidContainerId(_))
        ));
        let mut bad = container(QosClass::BestEffort);
        bad.pod_uid = "x/../y".to_owned();
        assert!(matches!(
            cgroup_candidates(&bad),
            Err(CgroupError::InvalidPodUid(_))
        ));
    }

    #[test]
    fn finds_pids_in_a_fake_cgroupfs_tree_and_falls_back_to_mountinfo() {
        let root = tempfile::tempdir().unwrap();
        let wanted = container(QosClass::BestEffort);
        let dir = root
            .path()
            .join("pids/kubepods/besteffort/pod0a1b2c3d-1111-2222-3333-444455556666/abc123");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("cgroup.procs"), "12\n34\n").unwrap();
        let proc_root = root.path().join("proc");
        fs::create_dir_all(proc_root.join("77")).unwrap();
        let config = CgroupConfig {
            cgroup_root: root.path().to_owned(),
            proc_root: proc_root.clone(),
        };
        let (pids, source) = container_pids(&config, &wanted).unwrap();
        assert_eq!(
            (pids, source),
            (vec![12, 34], PidSource::Cgroup(dir.clone()))
        );

        fs::remove_dir_all(root.path().join("pids")).unwrap();
        let mount = "1 2 0:3 /var/lib/kubelet/pods/0a1b2c3d-1111-2222-3333-444455556666/containers/app/f00 /dev/termination-log rw - ext4 /dev/sda rw\n";
        fs::write(proc_root.join("77/mountinfo"), mount).unwrap();
        let (pids, source) = container_pids(&config, &wanted).unwrap();
        assert_eq!((pids, source), (vec![77], PidSource::Mountinfo));
    }
}
