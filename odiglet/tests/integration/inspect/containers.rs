//! Container inspection: PIDs from a cgroup the test creates (systemd and cgroupfs layouts)
//! or from mountinfo, then one answer for the container.
use std::{fs, process::Command};

use odiglet::inspect::{
    Inspector, Language,
    cgroup::{CgroupConfig, ContainerRef, PidSource, QosClass},
    container::DetectionReason,
};

use super::{READY, start_and_inspect, tempdir};
use crate::support::{
    build,
    guards::{CgroupGuard, ChildGuard, ContainerCgroup, cgroup2_mount},
    runtimes::find,
};

const POD_UID: &str = "6f1c2d3e-aaaa-bbbb-cccc-0123456789ab";
const CONTAINER_ID: &str = "9d8c7b6a5f4e3d2c1b0a9d8c7b6a5f4e3d2c1b0a9d8c7b6a5f4e3d2c1b0a9d8c";

fn container(qos: QosClass) -> ContainerRef {
    ContainerRef {
        pod_uid: POD_UID.to_owned(),
        qos,
        container_id: format!("containerd://{CONTAINER_ID}"),
        container_name: "app".to_owned(),
    }
}

#[test]
fn systemd_layout_resolves_python_over_cplusplus() {
    let test = "systemd_layout_resolves_python_over_cplusplus";
    let Some(mount) = cgroup2_mount(test) else {
        return;
    };
    let (Some(python), Some(gxx)) = (
        find(test, &["/usr/bin/python3"]),
        find(test, &["/usr/bin/g++"]),
    ) else {
        return;
    };
    // Our own root (as ODIGOS_CGROUP_ROOT would be), holding the kubelet's systemd layout.
    let cgroup = ContainerCgroup::create(
        &mount,
        &format!("odiglet-test-{}-systemd", std::process::id()),
        POD_UID,
        CONTAINER_ID,
    );
    let scope = cgroup.scope();

    let source = "#include <iostream>\n#include <unistd.h>\nint main() { std::cout << 1 << std::endl; for (;;) pause(); }\n";
    let cpp = build::c_program("cplusplus", &gxx, "cc", source, &[]);
    let (cpp_child, _) = start_and_inspect(
        "c++ sidecar",
        &mut Command::new(&cpp),
        &cpp,
        Some("libstdc++"),
    );
    let mut cmd = Command::new(&python);
    cmd.args(["-c", "import time; time.sleep(60)"])
        .env("PYTHON_VERSION", "3.11.9");
    let (python_child, _) = start_and_inspect("python app", &mut cmd, &python, None);
    scope.add(cpp_child.pid());
    scope.add(python_child.pid());

    let config = CgroupConfig {
        cgroup_root: cgroup.root().to_owned(),
        proc_root: "/proc".into(),
    };
    let (runtime, source) = Inspector::new("/proc")
        .inspect_container(&config, &container(QosClass::Burstable))
        .unwrap();
    assert_eq!(source, PidSource::Cgroup(scope.path().to_owned()));
    let mut expected = vec![cpp_child.pid(), python_child.pid()];
    expected.sort_unstable();
    assert_eq!(runtime.pids, expected);
    assert_eq!(runtime.language, Language::Python);
    assert_eq!(
        runtime.reason,
        DetectionReason::ResolvedFromMultipleLanguages
    );
    assert_eq!(runtime.runtime_version.as_deref(), Some("3.11.9"));
    assert_eq!(
        runtime.env.get("PYTHON_VERSION").map(String::as_str),
        Some("3.11.9")
    );
}

#[test]
fn cgroupfs_layout_and_mountinfo_fallback() {
    let test = "cgroupfs_layout_and_mountinfo_fallback";
    let Some(mount) = cgroup2_mount(test) else {
        return;
    };
    let Some(python) = find(test, &["/usr/bin/python3"]) else {
        return;
    };
    let root = CgroupGuard::create(
        &mount,
        &format!("odiglet-test-{}-cgroupfs", std::process::id()),
    );
    let kubepods = CgroupGuard::create(root.path(), "kubepods");
    let qos = CgroupGuard::create(kubepods.path(), "besteffort");
    let pod = CgroupGuard::create(qos.path(), &format!("pod{POD_UID}"));
    let scope = CgroupGuard::create(pod.path(), CONTAINER_ID);
    let sleep = ["-c", "import time; time.sleep(60)"];
    let (child, _) = start_and_inspect("python", Command::new(&python).args(sleep), &python, None);
    scope.add(child.pid());
    let config = CgroupConfig {
        cgroup_root: root.path().to_owned(),
        proc_root: "/proc".into(),
    };
    let inspector = Inspector::new("/proc");
    let (runtime, source) = inspector
        .inspect_container(&config, &container(QosClass::BestEffort))
        .unwrap();
    assert_eq!(source, PidSource::Cgroup(scope.path().to_owned()));
    assert_eq!(
        (runtime.pids, runtime.language),
        (vec![child.pid()], Language::Python)
    );

    // The same through the CLI's container mode.
    let out = Command::new(env!("CARGO_BIN_EXE_odiglet"))
        .args([
            "inspect",
            "--pod-uid",
            POD_UID,
            "--container-id",
            CONTAINER_ID,
            "--qos",
            "besteffort",
        ])
        .arg("--cgroup-root")
        .arg(root.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["language"], "python");
    assert_eq!(json["pids"], serde_json::json!([child.pid()]));
    assert_eq!(json["reason"], "DetectedSuccessfully");
    assert_eq!(json["pids_from"], scope.path().display().to_string());

    // No cgroup for the container: the kubelet's per-container mount gives it away.
    let Some(unshare) = find(test, &["/usr/bin/unshare"]) else {
        return;
    };
    let dir = tempdir();
    let log = dir.path().join(format!("pods/{POD_UID}/containers/app/0"));
    fs::create_dir_all(log.parent().expect("has a parent")).unwrap();
    fs::write(&log, "").unwrap();
    let target = dir.path().join("termination-log");
    fs::write(&target, "").unwrap();
    let script = format!(
        "mount --bind {} {} && exec {} -c 'import time; time.sleep(60)'",
        log.display(),
        target.display(),
        python.display()
    );
    let mut cmd = Command::new(unshare);
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    let mut mounted = ChildGuard::spawn("python in its own mount namespace", &mut cmd);
    let real_python = fs::canonicalize(&python).unwrap();
    mounted.wait_until(READY, |pid| {
        fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == real_python)
    });
    let empty = tempdir();
    let config = CgroupConfig {
        cgroup_root: empty.path().to_owned(),
        proc_root: "/proc".into(),
    };
    let (runtime, source) = inspector
        .inspect_container(&config, &container(QosClass::BestEffort))
        .unwrap();
    assert_eq!(source, PidSource::Mountinfo);
    assert_eq!(
        (runtime.pids, runtime.language),
        (vec![mounted.pid()], Language::Python)
    );
    drop((scope, pod, qos, kubepods));
}
