//! The process-lifecycle probe against the real kernel: processes started by the tests must be
//! reported with the right identity, exactly once, and filtered as configured.

use std::{collections::HashMap, process::Stdio, time::Duration};

use odiglet::process::{ProcessEventKind, ProcessFilter, WatcherConfig};
use tokio::process::Command;

use crate::support::{
    events::{Events, has_arg, marker},
    privileges::privileged,
};

fn standalone() -> WatcherConfig {
    WatcherConfig::standalone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_exit_of_a_child_are_reported() {
    if !privileged("exec_and_exit_of_a_child_are_reported") {
        return;
    }
    let mut events = Events::start(standalone());
    let marker = marker("exec");
    let mut child = Command::new("/bin/echo")
        .args([marker.as_str(), "two words"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    assert!(child.wait().await.unwrap().success());

    let exec = events
        .wait_for("exec of /bin/echo", |e| has_arg(e, &marker))
        .await;
    assert_eq!(exec.kind, ProcessEventKind::Exec);
    assert_eq!(exec.pid, pid);
    assert_eq!(exec.ppid, std::process::id());
    assert_eq!(exec.comm, "echo");
    assert_eq!(exec.exe.as_deref(), Some("/bin/echo"));
    assert_eq!(
        exec.cmdline,
        Some(vec![
            "/bin/echo".to_owned(),
            marker.clone(),
            "two words".to_owned()
        ])
    );
    assert_ne!(exec.cgroup_id, 0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let age = now.as_nanos().abs_diff(u128::from(exec.ts_unix_nano));
    assert!(
        age < Duration::from_secs(60).as_nanos(),
        "timestamp is wall-clock time"
    );

    let exit = events
        .wait_for("exit", |e| e.kind == ProcessEventKind::Exit && e.pid == pid)
        .await;
    assert_eq!(exit.ppid, std::process::id());
    assert!(exit.ts_unix_nano >= exec.ts_unix_nano);
    assert_eq!(exit.exe, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_filter_keeps_only_processes_with_the_variable() {
    if !privileged("env_filter_keeps_only_processes_with_the_variable") {
        return;
    }
    let name = format!("ODIGLET_TEST_{}", std::process::id());
    let filter = ProcessFilter::new(Some(&name), &[]).unwrap();
    let mut events = Events::start(WatcherConfig {
        filter,
        ..standalone()
    });

    let long = "x".repeat(3000);
    // A variable whose value holds `NAME=` exactly where the scan's second chunk of this
    // string starts: it must not count as the variable.
    let trick = format!("{}{name}=1", "y".repeat(255 - "C_TRICK=".len()));
    let with = marker("with");
    let without = marker("without");
    for (arg, has_var) in [(&with, true), (&without, false)] {
        let mut cmd = Command::new("/bin/echo");
        cmd.arg(arg)
            .stdout(Stdio::null())
            .env_clear()
            .env("A_LONG", &long)
            .env("C_TRICK", &trick);
        if has_var {
            cmd.env(&name, "pod-1");
        }
        assert!(cmd.status().await.unwrap().success());
    }
    events
        .drain_with_sentinel(&[(name.as_str(), "pod-1")])
        .await;

    let reported = events
        .wait_for("exec with the variable", |e| has_arg(e, &with))
        .await;
    assert_eq!(reported.kind, ProcessEventKind::Exec);
    assert!(
        !events.seen.iter().any(|e| has_arg(e, &without)),
        "a process without {name} was reported"
    );
    assert!(events.watcher.counters().env_filtered >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shells_are_ignored_but_their_children_are_not() {
    if !privileged("shells_are_ignored_but_their_children_are_not") {
        return;
    }
    let mut events = Events::start(standalone());
    let marker = marker("shell");
    let script = format!("/bin/echo {marker}; true");
    let mut child = Command::new("/bin/sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let shell_pid = child.id().unwrap();
    assert!(child.wait().await.unwrap().success());

    let echo = events
        .wait_for("exec of the shell's child", |e| has_arg(e, &marker))
        .await;
    assert_eq!(echo.ppid, shell_pid);
    events.drain_with_sentinel(&[]).await;
    assert!(
        !events
            .seen
            .iter()
            .any(|e| e.kind == ProcessEventKind::Exec && e.pid == shell_pid),
        "the shell's exec was reported"
    );
    assert!(events.watcher.counters().ignored >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_short_lived_processes_is_seen_exactly_once() {
    if !privileged("burst_of_short_lived_processes_is_seen_exactly_once") {
        return;
    }
    const PROCESSES: usize = 1000;
    const PARALLEL: usize = 8;
    let mut events = Events::start(standalone());
    let mut spawners = Vec::new();
    for _ in 0..PARALLEL {
        spawners.push(tokio::spawn(async {
            let mut pids = Vec::new();
            for _ in 0..PROCESSES / PARALLEL {
                let mut child = Command::new("/bin/true").spawn().unwrap();
                pids.push(child.id().unwrap());
                assert!(child.wait().await.unwrap().success());
            }
            pids
        }));
    }
    let mut pids = Vec::new();
    for spawner in spawners {
        pids.extend(spawner.await.unwrap());
    }
    assert_eq!(pids.len(), PROCESSES);
    // Waiting for the last exit of each would be O(n^2) through wait_for; the sentinel orders
    // the ring buffer instead: everything before it has been delivered once it is seen.
    events.drain_with_sentinel(&[]).await;

    let mut execs: HashMap<u32, usize> = HashMap::new();
    let mut exits: HashMap<u32, usize> = HashMap::new();
    for event in &events.seen {
        match event.kind {
            ProcessEventKind::Exec => *execs.entry(event.pid).or_default() += 1,
            ProcessEventKind::Exit => *exits.entry(event.pid).or_default() += 1,
            _ => {}
        }
    }
    let bad: Vec<_> = pids
        .iter()
        .filter(|pid| execs.get(pid) != Some(&1) || exits.get(pid) != Some(&1))
        .map(|pid| (pid, execs.get(pid), exits.get(pid)))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {PROCESSES} not seen exactly once: {:?}",
        bad.len(),
        &bad[..bad.len().min(10)]
    );
    let counters = events.watcher.counters();
    assert_eq!(counters.lost(), 0, "{counters:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vpid_is_the_pid_inside_a_new_pid_namespace() {
    if !privileged("vpid_is_the_pid_inside_a_new_pid_namespace") {
        return;
    }
    let mut events = Events::start(standalone());
    let marker = marker("pidns");
    let status = Command::new("unshare")
        .args(["--pid", "--fork", "/bin/echo", &marker])
        .stdout(Stdio::null())
        .status()
        .await
        .expect("unshare (util-linux) runs; `cargo xtask setup` installs it");
    assert!(status.success());
    // `unshare`'s own exec carries the marker too: wait for the echo inside the namespace.
    let exec = events
        .wait_for("exec inside the namespace", |e| {
            e.exe.as_deref() == Some("/bin/echo") && has_arg(e, &marker)
        })
        .await;
    assert_eq!(
        exec.vpid, 1,
        "first process of a new PID namespace is its PID 1"
    );
    assert_ne!(exec.pid, 1);
    let exit = events
        .wait_for("exit inside the namespace", |e| {
            e.kind == ProcessEventKind::Exit && e.pid == exec.pid
        })
        .await;
    assert_eq!(exit.vpid, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_scan_reports_running_processes_and_tracks_their_exit() {
    if !privileged("startup_scan_reports_running_processes_and_tracks_their_exit") {
        return;
    }
    let marker = marker("existing");
    // `sleep` ignores the extra argument's meaning only if it is a number: use a shell-free
    // long sleep whose command line carries the marker through argv[0].
    let mut child = std::process::Command::new("/bin/sleep");
    std::os::unix::process::CommandExt::arg0(&mut child, &marker);
    let mut child = child.arg("60").spawn().unwrap();
    let pid = child.id();
    // Wait until the child has exec'd, so the scan sees the sleep image and not our fork.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .map_or(true, |c| !c.contains(&marker))
    {
        assert!(std::time::Instant::now() < deadline, "child did not exec");
        std::thread::yield_now();
    }

    let mut events = Events::start(standalone());
    let existing = events
        .wait_for("existing event", |e| {
            e.kind == ProcessEventKind::Existing && e.pid == pid
        })
        .await;
    assert_eq!(existing.exe.as_deref(), Some("/usr/bin/sleep"));
    assert_eq!(
        existing.cmdline,
        Some(vec![marker.clone(), "60".to_owned()])
    );
    assert_eq!(existing.ppid, std::process::id());
    assert_eq!(existing.vpid, pid, "same PID namespace as the test");
    assert_ne!(existing.cgroup_id, 0);

    child.kill().unwrap();
    child.wait().unwrap();
    events
        .wait_for("exit of the scanned process", |e| {
            e.kind == ProcessEventKind::Exit && e.pid == pid
        })
        .await;
}
