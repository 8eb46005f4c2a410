//! `cargo xtask run`: the main job with embedded defaults. Sets up the eBPF toolchain,
//! builds, and runs odiglet (as root: it loads eBPF programs).

use anyhow::bail;

use crate::{build_ebpf, exec, setup};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if !exec::is_root() {
        bail!("odiglet loads eBPF programs and needs root: run `sudo -E cargo xtask run`");
    }
    setup::ebpf_toolchain()?;
    build_ebpf::run()?;
    let default = ["processes".to_owned()];
    let args = if args.is_empty() { &default[..] } else { args };
    println!("run: odiglet {}", args.join(" "));
    exec::run(
        exec::cargo()
            .args(["run", "--locked", "--release", "-p", "odiglet", "--"])
            .args(args),
    )
}
