//! Real language runtimes the inspection tests start: skip with a loud line when one is
//! missing, or fail under `CI=true`, where `cargo xtask setup` must have installed it.

use std::path::{Path, PathBuf};

/// The first of `candidates` that exists, or `None` after printing the skip line (panics
/// under `CI=true`).
#[must_use]
pub fn find(test: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(found) = candidates.iter().map(Path::new).find(|p| p.exists()) {
        return Some(found.to_owned());
    }
    let reason = format!(
        "{} not installed: run `cargo xtask setup`",
        candidates.join(" or ")
    );
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {reason}");
    }
    #[expect(clippy::print_stderr, reason = "the skip must be loud in test output")]
    {
        eprintln!("SKIPPED (missing runtime): {test}: {reason}");
    }
    None
}

/// True when running as root (cgroups, setuid binaries, other users' processes).
#[must_use]
pub fn root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root but CI=true");
    }
    #[expect(clippy::print_stderr, reason = "the skip must be loud in test output")]
    {
        eprintln!("SKIPPED (needs root): {test}");
    }
    false
}
