//! `cargo xtask bench`: builds the eBPF objects and runs the benchmarks. Figures go into
//! BENCHMARKS.md with the command that produced them.

use crate::{build_ebpf, exec};

pub fn run() -> anyhow::Result<()> {
    build_ebpf::run()?;
    println!("bench: cargo bench -p odiglet");
    exec::run(exec::cargo().args(["bench", "--locked", "-p", "odiglet"]))
}
