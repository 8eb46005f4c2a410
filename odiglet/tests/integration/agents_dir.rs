//! `odiglet init` as the init container runs it: the agents copied into an empty target,
//! then updated while other processes hold the old files.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers: a failure panics with its backtrace"
)]

use std::{
    fs,
    io::Read,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
    process::{Child, Command, Output, Stdio},
};

use serde_json::Value;

const ODIGLET: &str = env!("CARGO_BIN_EXE_odiglet");

fn write(root: &Path, relative: &str, content: &str, mode: u32) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, content).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn init(source: &Path, target: &Path) -> Output {
    Command::new(ODIGLET)
        .arg("init")
        .arg("--source")
        .arg(source)
        .arg("--target")
        .arg(target)
        .arg("--json")
        .env_remove("NODE_NAME")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Runs `odiglet init` and returns its JSON report.
fn init_report(source: &Path, target: &Path) -> Value {
    let out = init(source, target);
    assert!(
        out.status.success(),
        "odiglet init failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON report ({e}): {stdout}"));
    assert_eq!(
        report["node"],
        Value::Null,
        "no node set-up without a node name"
    );
    report["agents"].clone()
}

/// A child that holds `path` open (as its stdin) until dropped.
struct Holder(Child);

impl Holder {
    fn new(path: &Path) -> Self {
        let file = fs::File::open(path).unwrap();
        Self(Command::new("sleep").arg("60").stdin(file).spawn().unwrap())
    }

    /// What the child reads through the descriptor it holds.
    fn content(&self) -> String {
        fs::read_to_string(format!("/proc/{}/fd/0", self.0.id())).unwrap()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn init_copies_then_updates_without_breaking_files_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("instrumentations");
    let target = dir.path().join("var/odigos");
    write(&source, "java/javaagent.jar", "jar version 1", 0o600);
    write(
        &source,
        "python/opentelemetry/sdk/__init__.py",
        "sdk 1",
        0o644,
    );
    write(&source, "python/old/held.py", "held", 0o644);
    write(&source, "python/old/unused.py", "unused", 0o644);
    write(&source, "loader/loader.so", "loader 1", 0o755);
    fs::set_permissions(source.join("java"), fs::Permissions::from_mode(0o700)).unwrap();

    // An empty target: a full copy, readable by non-root pods.
    let report = init_report(&source, &target);
    assert_eq!(report["mode"], "full");
    assert_eq!(report["created"], 5);
    assert_eq!(mode(&target), 0o755);
    assert_eq!(mode(&target.join("java")), 0o755);
    assert_eq!(mode(&target.join("python/opentelemetry/sdk")), 0o755);
    assert_eq!(mode(&target.join("java/javaagent.jar")), 0o644);
    assert_eq!(mode(&target.join("loader/loader.so")), 0o755);
    assert_eq!(
        fs::read_to_string(target.join("python/opentelemetry/sdk/__init__.py")).unwrap(),
        "sdk 1"
    );

    // A new version while an application has the jar open and a removed module loaded.
    let jar = target.join("java/javaagent.jar");
    let mut ours = fs::File::open(&jar).unwrap();
    let app = Holder::new(&jar);
    let loaded = Holder::new(&target.join("python/old/held.py"));
    write(&source, "java/javaagent.jar", "jar version 2", 0o644);
    fs::remove_dir_all(source.join("python/old")).unwrap();
    let report = init_report(&source, &target);
    assert_eq!(report["mode"], "update");
    assert_eq!(report["replaced"], 1);
    assert_eq!(report["unchanged"], 2);
    assert_eq!(report["removed"], 1);
    assert_eq!(report["kept_in_use"], 1);
    assert_eq!(fs::read_to_string(&jar).unwrap(), "jar version 2");
    assert_eq!(app.content(), "jar version 1");
    let mut old = String::new();
    ours.read_to_string(&mut old).unwrap();
    assert_eq!(old, "jar version 1");
    assert_ne!(
        ours.metadata().unwrap().ino(),
        fs::metadata(&jar).unwrap().ino()
    );
    assert_eq!(loaded.content(), "held");
    assert!(target.join("python/old/held.py").exists());
    assert!(!target.join("python/old/unused.py").exists());

    // Once nobody holds it, the stale module goes; the rest is left as it is.
    drop(loaded);
    drop(app);
    let report = init_report(&source, &target);
    assert_eq!(report["replaced"], 0);
    assert_eq!(report["created"], 0);
    assert_eq!(report["unchanged"], 3);
    assert_eq!(report["removed"], 2);
    assert!(!target.join("python/old").exists());
    let report = init_report(&source, &target);
    assert_eq!(
        (report["unchanged"].clone(), report["removed"].clone()),
        (3.into(), 0.into())
    );
}

#[test]
fn init_without_a_source_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = init(&dir.path().join("missing"), &dir.path().join("target"));
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is not a directory"), "{stderr}");
    assert!(!dir.path().join("target").exists());
}
