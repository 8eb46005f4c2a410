//! The `odiglet` binary's command-line contracts, run as a child process.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::Value;

use crate::support::{events::marker, privileges::privileged};

const ODIGLET: &str = env!("CARGO_BIN_EXE_odiglet");
const DEADLINE: Duration = Duration::from_secs(30);

/// Kills the child if the test fails midway.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of the child's stdout, read on a thread so the test can wait with deadlines.
fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_json(lines: &mpsc::Receiver<String>, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {what} line"));
        let value: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
        if pred(&value) {
            return value;
        }
    }
}

#[test]
fn processes_json_streams_events_until_interrupted() {
    if !privileged("processes_json_streams_events_until_interrupted") {
        return;
    }
    let child = Command::new(ODIGLET)
        .args(["processes", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut odiglet = Running(child);
    let lines = stdout_lines(&mut odiglet.0);
    // The start-up scan runs after the probe attached: its lines mean events are flowing.
    let me = std::process::id();
    let existing = next_json(&lines, "existing", |v| {
        v["event"] == "existing" && v["pid"] == me
    });
    assert_eq!(existing["container_id"], Value::Null);

    let marker = marker("cli");
    let status = Command::new("/bin/echo")
        .arg(&marker)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let exec = next_json(&lines, "exec", |v| {
        v["event"] == "exec"
            && v["cmdline"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == &*marker))
    });
    assert_eq!(exec["exe"], "/bin/echo");
    assert_eq!(exec["comm"], "echo");
    assert_eq!(exec["ppid"], me);
    for (key, check) in [
        ("pid", Value::is_u64 as fn(&Value) -> bool),
        ("vpid", Value::is_u64),
        ("cgroup_id", Value::is_u64),
        ("ts_unix_nano", Value::is_u64),
    ] {
        assert!(check(&exec[key]), "{key} in {exec}");
    }
    let keys: Vec<&String> = exec.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 10, "exactly the contract's fields: {keys:?}");
    let pid = exec["pid"].clone();
    next_json(&lines, "exit", |v| v["event"] == "exit" && v["pid"] == pid);

    kill(Pid::from_raw(odiglet.0.id() as i32), Signal::SIGINT).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = odiglet.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "odiglet did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "SIGINT is a clean stop: {status}");
}

#[test]
fn invalid_configuration_exits_64_with_one_line() {
    let out = Command::new(ODIGLET)
        .args(["processes", "--env-filter", "HAS=EQUALS"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("HAS=EQUALS"), "{stderr}");

    let out = Command::new(ODIGLET)
        .args(["processes", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
