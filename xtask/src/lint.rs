//! `cargo xtask lint`: formatting and clippy, host and eBPF.

use std::process::Command;

use crate::exec;

pub fn run() -> anyhow::Result<()> {
    println!("lint: cargo fmt --check");
    exec::run(exec::cargo().args(["fmt", "--all", "--check"]))?;
    println!("lint: cargo clippy --all-targets -- -D warnings");
    exec::run(exec::cargo().args([
        "clippy",
        "--locked",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    println!("lint: clippy for bpfel-unknown-none (odiglet-ebpf)");
    let root = exec::workspace_root();
    exec::run(
        Command::new("rustup")
            .current_dir(root.join("odiglet-ebpf"))
            .args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "--locked",
                "--package",
                "odiglet-ebpf",
            ])
            .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
            .arg("--target-dir")
            .arg(root.join("target/ebpf-clippy"))
            .args(["--", "-D", "warnings"])
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                "--cfg=bpf_target_arch=\"x86_64\"",
            )
            .env_remove("RUSTC")
            .env_remove("RUSTC_WRAPPER")
            .env_remove("CARGO")
            .env_remove("RUSTUP_TOOLCHAIN"),
    )
}
