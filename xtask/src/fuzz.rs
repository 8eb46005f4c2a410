//! `cargo xtask fuzz`: runs every cargo-fuzz target under `odiglet/fuzz` for a bounded time.
//! Parsers of hostile input (ELF, Go buildinfo, OpAMP messages) must survive this in CI.

use std::process::Command;

use anyhow::Context;

use crate::exec;

/// Seconds per target in CI: long enough to catch shallow crashes, short enough for the budget.
pub const CI_SECONDS_PER_TARGET: u32 = 30;

pub fn run(seconds: u32) -> anyhow::Result<()> {
    let dir = exec::workspace_root().join("odiglet/fuzz");
    if !dir.join("Cargo.toml").exists() {
        println!("fuzz: no fuzz targets yet");
        return Ok(());
    }
    let list = exec::output(nightly_cargo(&dir).args(["fuzz", "list"]))
        .context("cannot list fuzz targets (run `cargo xtask setup` for cargo-fuzz)")?;
    for target in list.lines().map(str::trim).filter(|t| !t.is_empty()) {
        println!("fuzz: {target} for {seconds} s");
        // No sanitizer and no optimizations: the parsers are safe Rust (ASan adds little), and
        // libFuzzer still catches panics, timeouts and memory blow-ups, while the build of the
        // whole odiglet crate under the fuzzer stays short enough for CI.
        exec::run(
            nightly_cargo(&dir)
                .args(["fuzz", "run", "--sanitizer", "none", "--dev", target, "--"])
                .args([
                    format!("-max_total_time={seconds}"),
                    // Bounded memory per input: a parser that allocates without bound fails here.
                    "-rss_limit_mb=2048".to_owned(),
                ]),
        )?;
    }
    Ok(())
}

fn nightly_cargo(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.current_dir(dir)
        .args(["run", "nightly", "cargo"])
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN");
    cmd
}
