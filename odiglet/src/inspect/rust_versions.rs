//! Rust releases by the rustc commit embedded in standard-library paths (`/rustc/<commit>/`).
//! Odigos ships a generated table of every release; this one holds the releases we build with
//! and is extended as toolchains are added. Unknown commits are reported as the commit.

/// (commit, release).
const RELEASES: &[(&str, &str)] = &[("59807616e1fa2540724bfbac14d7976d7e4a3860", "1.95.0")];

pub fn release(commit: &str) -> Option<&'static str> {
    RELEASES
        .iter()
        .find(|(c, _)| *c == commit)
        .map(|(_, release)| *release)
}
