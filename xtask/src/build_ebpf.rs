//! `cargo xtask build-ebpf`: builds odiglet-ebpf's objects into `target/ebpf`, where
//! `odiglet/build.rs` embeds them from.

use std::process::Command;

use anyhow::Context;

use crate::exec;

/// `--cfg bpf_target_arch` selects aya-ebpf's pt_regs layout; `--btf` makes bpf-linker emit
/// BTF for maps and globals (needed for ring buffers and `.rodata` patching).
const RUSTFLAGS: &[&str] = &[
    "--cfg=bpf_target_arch=\"x86_64\"",
    "-Cdebuginfo=2",
    "-Clink-arg=--btf",
];

pub fn run() -> anyhow::Result<()> {
    let root = exec::workspace_root();
    println!("build-ebpf: building odiglet-ebpf for bpfel-unknown-none");
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root.join("odiglet-ebpf"))
        .args(["run", "nightly", "cargo", "build", "--release", "--locked"])
        .args(["--package", "odiglet-ebpf", "--bins"])
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(root.join("target/ebpf"))
        .env("CARGO_ENCODED_RUSTFLAGS", RUSTFLAGS.join("\x1f"))
        // The outer (stable) cargo's settings must not leak into the nightly build.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN");
    exec::run(&mut cmd).context("eBPF build failed (run `cargo xtask setup` first?)")
}
