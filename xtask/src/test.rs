//! `cargo xtask test`: every test of the default members. As root the privileged tests load
//! real eBPF programs; otherwise they print a loud skip (and fail when `CI=true`).

use crate::exec;

pub fn run() -> anyhow::Result<()> {
    if !exec::is_root() {
        println!("test: not root: privileged tests will SKIP (run `sudo -E cargo xtask test`)");
    }
    println!("test: cargo test");
    exec::run(exec::cargo().args(["test", "--locked", "--no-fail-fast"]))
}
