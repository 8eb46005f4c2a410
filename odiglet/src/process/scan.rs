//! The start-up scan: processes that were already running when the probe attached.

use std::{fs, io::Read, path::Path};

use procfs::process::Process;

use super::{ProcessEvent, ProcessEventKind, container::ContainerResolver, filter::ProcessFilter};

/// `/proc/<pid>/environ` bytes read for the filter; environments beyond this are cut, as the
/// kernel-side scan is.
const MAX_ENVIRON_BYTES: u64 = 1 << 20;

/// Running processes under `proc_root` that pass `filter`, as `Existing` events.
///
/// Kernel threads (no executable) and processes that vanish mid-scan are skipped.
pub(crate) fn existing_processes(
    proc_root: &Path,
    filter: &ProcessFilter,
    containers: &mut ContainerResolver,
    ts_unix_nano: u64,
) -> Vec<ProcessEvent> {
    let Ok(entries) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter()
        .filter_map(|pid| describe(proc_root, pid, filter, containers, ts_unix_nano))
        .collect()
}

fn describe(
    proc_root: &Path,
    pid: u32,
    filter: &ProcessFilter,
    containers: &mut ContainerResolver,
    ts_unix_nano: u64,
) -> Option<ProcessEvent> {
    let dir = proc_root.join(pid.to_string());
    let process = Process::new_with_root(dir.clone()).ok()?;
    let exe = process.exe().ok()?; // kernel threads have none
    if filter.ignores_exe(&exe) {
        return None;
    }
    if filter.env_var().is_some() {
        let mut environ = Vec::new();
        fs::File::open(dir.join("environ"))
            .ok()?
            .take(MAX_ENVIRON_BYTES)
            .read_to_end(&mut environ)
            .ok()?;
        if !filter.env_matches(&environ) {
            return None;
        }
    }
    let status = process.status().ok()?;
    let vpid = status
        .nstgid
        .as_ref()
        .and_then(|ns| ns.last().copied())
        .unwrap_or(status.tgid);
    let (cgroup_id, container_id) = containers.describe(pid);
    Some(ProcessEvent {
        kind: ProcessEventKind::Existing,
        pid,
        vpid: u32::try_from(vpid).unwrap_or(0),
        ppid: u32::try_from(status.ppid).unwrap_or(0),
        comm: status.name,
        exe: Some(exe.to_string_lossy().into_owned()),
        cmdline: process.cmdline().ok(),
        cgroup_id,
        container_id,
        ts_unix_nano,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_this_test_process() {
        let mut containers = ContainerResolver::new(Path::new("/proc"));
        let filter = ProcessFilter::standalone();
        let events = existing_processes(Path::new("/proc"), &filter, &mut containers, 1);
        let me = std::process::id();
        let ours = events
            .iter()
            .find(|e| e.pid == me)
            .expect("the scan sees this process");
        assert_eq!(ours.kind, ProcessEventKind::Existing);
        assert_eq!(ours.ppid, nix::unistd::getppid().as_raw() as u32);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(ours.exe.as_deref(), Some(exe.to_str().unwrap()));
        assert!(events.iter().all(|e| e.exe.as_deref() != Some("/pause")));
    }

    #[test]
    fn env_filter_applies_to_the_scan() {
        let mut containers = ContainerResolver::new(Path::new("/proc"));
        let filter = ProcessFilter::new(Some("ODIGLET_TEST_NO_SUCH_VAR"), &[]).unwrap();
        let events = existing_processes(Path::new("/proc"), &filter, &mut containers, 1);
        assert!(
            events.is_empty(),
            "no process carries the variable: {events:?}"
        );
    }

    #[test]
    fn missing_proc_root_is_empty() {
        let mut containers = ContainerResolver::new(Path::new("/nonexistent"));
        let filter = ProcessFilter::standalone();
        assert!(
            existing_processes(Path::new("/nonexistent"), &filter, &mut containers, 1).is_empty()
        );
    }
}
