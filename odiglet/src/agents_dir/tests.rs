use std::{
    fs,
    io::{Read, Seek},
    os::unix::fs::{MetadataExt, PermissionsExt, symlink},
    path::Path,
};

use super::*;

/// A source and a target directory in one temporary directory.
struct Dirs {
    _root: tempfile::TempDir,
    source: PathBuf,
    target: PathBuf,
    outside: PathBuf,
}

impl Dirs {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let source = root.path().join("instrumentations");
        let target = root.path().join("var-odigos");
        let outside = root.path().join("outside");
        fs::create_dir_all(&source).unwrap();
        fs::create_dir_all(&outside).unwrap();
        Self {
            _root: root,
            source,
            target,
            outside,
        }
    }

    fn config(&self) -> SyncConfig {
        SyncConfig::new(&self.source, &self.target)
    }

    fn sync(&self) -> SyncReport {
        sync(&self.config()).unwrap()
    }

    fn write(&self, relative: &str, content: &str, mode: u32) {
        let path = self.source.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn read(&self, relative: &str) -> String {
        fs::read_to_string(self.target.join(relative)).unwrap()
    }
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A small agents tree: nested directories, a private source file, an executable.
fn agents(dirs: &Dirs) {
    dirs.write("python/opentelemetry/__init__.py", "v1 init", 0o600);
    dirs.write("python/opentelemetry/sdk/trace.py", "v1 trace", 0o644);
    dirs.write("java/javaagent.jar", "v1 jar", 0o640);
    dirs.write("loader/loader.so", "v1 loader", 0o700);
    fs::set_permissions(dirs.source.join("java"), fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn full_copy_into_an_empty_target_with_readable_modes() {
    let dirs = Dirs::new();
    agents(&dirs);
    let report = dirs.sync();
    assert_eq!(report.mode, SyncMode::Full);
    assert_eq!(report.created, 4);
    assert_eq!(report.directories_created, 5);
    assert_eq!(report.bytes_written, 30);
    assert_eq!(dirs.read("python/opentelemetry/sdk/trace.py"), "v1 trace");
    assert_eq!(dirs.read("java/javaagent.jar"), "v1 jar");
    // Odigos #4769: a 0700 source directory still becomes enterable by non-root pods.
    assert_eq!(mode(&dirs.target), DIR_MODE);
    assert_eq!(mode(&dirs.target.join("java")), DIR_MODE);
    assert_eq!(
        mode(&dirs.target.join("python/opentelemetry/sdk")),
        DIR_MODE
    );
    assert_eq!(
        mode(&dirs.target.join("python/opentelemetry/__init__.py")),
        FILE_MODE
    );
    assert_eq!(mode(&dirs.target.join("java/javaagent.jar")), FILE_MODE);
    assert_eq!(mode(&dirs.target.join("loader/loader.so")), EXECUTABLE_MODE);
    // The source's modification time is kept.
    let source_time = fs::metadata(dirs.source.join("java/javaagent.jar"))
        .unwrap()
        .mtime();
    let target_time = fs::metadata(dirs.target.join("java/javaagent.jar"))
        .unwrap()
        .mtime();
    assert_eq!(source_time, target_time);
    // Nothing staged is left behind.
    assert_no_staging_leftovers(&dirs.target);
}

fn assert_no_staging_leftovers(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        assert!(
            !name.as_bytes().starts_with(STAGING_PREFIX.as_bytes()),
            "leftover {}",
            entry.path().display()
        );
        if entry.file_type().unwrap().is_dir() {
            assert_no_staging_leftovers(&entry.path());
        }
    }
}

#[test]
fn second_sync_changes_nothing() {
    let dirs = Dirs::new();
    agents(&dirs);
    dirs.sync();
    let inode = fs::metadata(dirs.target.join("java/javaagent.jar"))
        .unwrap()
        .ino();
    let report = dirs.sync();
    assert_eq!(
        report,
        SyncReport {
            mode: SyncMode::Update,
            unchanged: 4,
            ..SyncReport::new(SyncMode::Update)
        }
    );
    assert_eq!(
        fs::metadata(dirs.target.join("java/javaagent.jar"))
            .unwrap()
            .ino(),
        inode,
        "an unchanged file is not rewritten"
    );
}

#[test]
fn update_keeps_the_old_content_readable_through_an_open_descriptor() {
    let dirs = Dirs::new();
    agents(&dirs);
    dirs.sync();
    let path = dirs.target.join("java/javaagent.jar");
    let mut held = fs::File::open(&path).unwrap();
    // Same size, different bytes: only a content comparison notices.
    dirs.write("java/javaagent.jar", "v2 jar", 0o644);
    dirs.write(
        "python/opentelemetry/sdk/trace.py",
        "v2 trace, longer",
        0o644,
    );
    let report = dirs.sync();
    assert_eq!(report.mode, SyncMode::Update);
    assert_eq!(report.replaced, 2);
    assert_eq!(report.unchanged, 2);
    assert_eq!(dirs.read("java/javaagent.jar"), "v2 jar");
    assert_eq!(
        dirs.read("python/opentelemetry/sdk/trace.py"),
        "v2 trace, longer"
    );
    let mut old = String::new();
    held.rewind().unwrap();
    held.read_to_string(&mut old).unwrap();
    assert_eq!(
        old, "v1 jar",
        "the open file was not truncated or rewritten"
    );
    assert_ne!(
        held.metadata().unwrap().ino(),
        fs::metadata(&path).unwrap().ino()
    );
    assert_eq!(mode(&path), FILE_MODE);
}

#[test]
fn modes_are_fixed_in_place_without_rewriting() {
    let dirs = Dirs::new();
    agents(&dirs);
    dirs.sync();
    let jar = dirs.target.join("java/javaagent.jar");
    let inode = fs::metadata(&jar).unwrap().ino();
    // What Go odiglet before 1.32 left behind (Odigos #4769).
    fs::set_permissions(dirs.target.join("java"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(&jar, fs::Permissions::from_mode(0o600)).unwrap();
    let report = dirs.sync();
    assert_eq!(report.permissions_fixed, 2);
    assert_eq!(report.unchanged, 4);
    assert_eq!(mode(&dirs.target.join("java")), DIR_MODE);
    assert_eq!(mode(&jar), FILE_MODE);
    assert_eq!(fs::metadata(&jar).unwrap().ino(), inode);
}

#[test]
fn stale_files_go_unless_a_process_holds_them() {
    let dirs = Dirs::new();
    agents(&dirs);
    dirs.write("python/old/module.py", "old module", 0o644);
    dirs.write("python/old/held.py", "held module", 0o644);
    dirs.sync();
    let held = fs::File::open(dirs.target.join("python/old/held.py")).unwrap();
    fs::remove_dir_all(dirs.source.join("python/old")).unwrap();
    let report = dirs.sync();
    assert_eq!(report.removed, 1);
    assert_eq!(report.kept_in_use, 1);
    assert!(!dirs.target.join("python/old/module.py").exists());
    assert_eq!(dirs.read("python/old/held.py"), "held module");
    drop(held);
    let report = dirs.sync();
    // The file, then its emptied directory.
    assert_eq!(report.removed, 2);
    assert_eq!(report.kept_in_use, 0);
    assert!(!dirs.target.join("python/old").exists());
    assert_eq!(dirs.read("python/opentelemetry/sdk/trace.py"), "v1 trace");
}

#[test]
fn preserved_entries_are_left_alone_and_do_not_make_the_target_non_empty() {
    let dirs = Dirs::new();
    agents(&dirs);
    fs::create_dir_all(dirs.target.join("exchange")).unwrap();
    let socket =
        std::os::unix::net::UnixListener::bind(dirs.target.join("exchange/exchange.sock")).unwrap();
    fs::write(dirs.target.join("exchange/notes"), "odiglet's").unwrap();
    let report = dirs.sync();
    assert_eq!(report.mode, SyncMode::Full);
    assert_eq!(dirs.read("exchange/notes"), "odiglet's");
    assert!(dirs.target.join("exchange/exchange.sock").exists());
    drop(socket);
    assert_eq!(dirs.sync().removed, 0);
}

#[test]
fn type_changes_between_versions() {
    let dirs = Dirs::new();
    dirs.write("a/inner.txt", "dir before", 0o644);
    dirs.write("b", "file before", 0o644);
    dirs.sync();
    fs::remove_dir_all(dirs.source.join("a")).unwrap();
    fs::remove_file(dirs.source.join("b")).unwrap();
    dirs.write("a", "file now", 0o644);
    dirs.write("b/inner.txt", "dir now", 0o644);
    dirs.sync();
    assert_eq!(dirs.read("a"), "file now");
    assert_eq!(dirs.read("b/inner.txt"), "dir now");
    assert_eq!(dirs.sync().unchanged, 2);
}

#[test]
fn symlinks_inside_the_tree_are_copied_and_others_skipped() {
    let dirs = Dirs::new();
    dirs.write("nodejs/node_modules/pkg/bin/cli.js", "cli", 0o755);
    fs::create_dir_all(dirs.source.join("nodejs/node_modules/.bin")).unwrap();
    symlink(
        "../pkg/bin/cli.js",
        dirs.source.join("nodejs/node_modules/.bin/cli"),
    )
    .unwrap();
    symlink("/etc/passwd", dirs.source.join("absolute")).unwrap();
    symlink("../../outside", dirs.source.join("nodejs/escaping")).unwrap();
    let report = dirs.sync();
    assert_eq!(report.created, 2);
    assert_eq!(report.skipped, 2);
    let link = dirs.target.join("nodejs/node_modules/.bin/cli");
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("../pkg/bin/cli.js")
    );
    assert_eq!(fs::read_to_string(&link).unwrap(), "cli");
    assert!(fs::symlink_metadata(dirs.target.join("absolute")).is_err());
    assert!(fs::symlink_metadata(dirs.target.join("nodejs/escaping")).is_err());
    assert_eq!(dirs.sync().unchanged, 2);
}

#[test]
fn symlinks_planted_in_the_target_are_never_followed() {
    let dirs = Dirs::new();
    dirs.write("java/javaagent.jar", "jar", 0o644);
    dirs.write("python/sitecustomize.py", "py", 0o644);
    dirs.write("dotnet/stale-here", "x", 0o644);
    dirs.sync();
    fs::remove_file(dirs.source.join("dotnet/stale-here")).unwrap();
    let victim = dirs.outside.join("victim");
    fs::write(&victim, "untouched").unwrap();
    fs::set_permissions(&victim, fs::Permissions::from_mode(0o600)).unwrap();
    // A directory replaced by a symlink to the outside, and a file replaced by one.
    fs::remove_dir_all(dirs.target.join("java")).unwrap();
    symlink(&dirs.outside, dirs.target.join("java")).unwrap();
    fs::remove_file(dirs.target.join("python/sitecustomize.py")).unwrap();
    symlink(&victim, dirs.target.join("python/sitecustomize.py")).unwrap();
    // A stale directory replaced by a symlink to the outside.
    fs::remove_dir_all(dirs.target.join("dotnet")).unwrap();
    symlink(&dirs.outside, dirs.target.join("dotnet")).unwrap();
    // A stale symlink to the outside: removed, not followed.
    symlink(&dirs.outside, dirs.target.join("planted")).unwrap();
    dirs.sync();
    assert!(fs::symlink_metadata(dirs.target.join("planted")).is_err());
    assert_eq!(fs::read_to_string(&victim).unwrap(), "untouched");
    assert_eq!(mode(&victim), 0o600);
    assert_eq!(
        fs::read_dir(&dirs.outside).unwrap().count(),
        1,
        "nothing written to or removed from the outside directory"
    );
    assert!(
        fs::symlink_metadata(dirs.target.join("java"))
            .unwrap()
            .is_dir()
    );
    assert_eq!(dirs.read("java/javaagent.jar"), "jar");
    assert!(
        fs::symlink_metadata(dirs.target.join("python/sitecustomize.py"))
            .unwrap()
            .is_file()
    );
    assert_eq!(dirs.read("python/sitecustomize.py"), "py");
}

#[test]
fn leftovers_of_an_interrupted_sync_are_removed() {
    let dirs = Dirs::new();
    agents(&dirs);
    dirs.sync();
    let leftover = dirs.target.join(format!("java/{STAGING_PREFIX}123.4"));
    fs::write(&leftover, "partial").unwrap();
    let report = dirs.sync();
    assert_eq!(report.removed, 1);
    assert!(!leftover.exists());
}

#[test]
fn bounded_and_clear_errors() {
    let dirs = Dirs::new();
    let mut deep = dirs.source.clone();
    for _ in 0..=MAX_DEPTH {
        deep.push("d");
    }
    fs::create_dir_all(&deep).unwrap();
    let error = sync(&dirs.config()).unwrap_err();
    assert!(matches!(error, AgentsDirError::TooDeep { .. }), "{error}");

    let missing = SyncConfig::new(dirs.source.join("missing"), &dirs.target);
    let error = sync(&missing).unwrap_err().to_string();
    assert!(error.contains("missing"), "{error}");

    let nested = SyncConfig::new(&dirs.source, dirs.source.join("d"));
    assert!(matches!(
        sync(&nested).unwrap_err(),
        AgentsDirError::Overlap { .. }
    ));

    let dirs = Dirs::new();
    dirs.write(&format!("{STAGING_PREFIX}x"), "", 0o644);
    assert!(matches!(
        sync(&dirs.config()).unwrap_err(),
        AgentsDirError::ReservedName { .. }
    ));
}

#[test]
fn symlink_containment_rule() {
    let inside = |dir: &str, dest: &str| stays_inside(Path::new(dir), Path::new(dest));
    assert!(inside("nodejs/node_modules/.bin", "../pkg/bin/cli.js"));
    assert!(inside("", "java/javaagent.jar"));
    assert!(!inside("a", "./b/../../c"));
    assert!(inside("a/b", "../../c"));
    assert!(!inside("a/b", "../../../c"));
    assert!(!inside("", "../x"));
    assert!(!inside("a", "/etc/passwd"));
    // `..` after a name could climb out of whatever that name links to.
    assert!(!inside("a", "b/../c"));
    assert!(inside("a", "."));
}

#[test]
fn file_modes() {
    assert_eq!(file_mode(0o600), FILE_MODE);
    assert_eq!(file_mode(0o100), EXECUTABLE_MODE);
    assert_eq!(file_mode(0o4755), EXECUTABLE_MODE);
}
