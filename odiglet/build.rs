//! Embeds the eBPF objects that `cargo xtask build-ebpf` produced.
//!
//! When an object is missing (a plain `cargo build`, `clippy` or `doc` on a machine without
//! bpf-linker) an empty placeholder is embedded instead and odiglet refuses to load it at run
//! time with one line naming the command to run. This keeps host-only work independent of the
//! eBPF toolchain, as aya's own integration tests do.

use std::{env, fs, path::PathBuf};

/// Program objects, by the `[[bin]]` names of `odiglet-ebpf`.
const OBJECTS: &[&str] = &["lifecycle", "go_http"];

fn main() {
    // Relative relocations packed (DT_RELR; glibc 2.36+, as in the image's Debian bookworm,
    // and a linker that knows it: rust-lld, GNU ld 2.38+). ld.so reads the whole table at
    // every start, so its pages stay resident: 0.9 MiB as RELA, a few KiB packed
    // (BENCHMARKS.md, `odiglet run`).
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu")
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    // `cargo xtask build-ebpf` always builds into this directory, whatever CARGO_TARGET_DIR is.
    let ebpf_dir = manifest_dir.join("../target/ebpf/bpfel-unknown-none/release");
    for name in OBJECTS {
        let built = ebpf_dir.join(name);
        println!("cargo:rerun-if-changed={}", built.display());
        let embedded = out_dir.join(format!("{name}.bpf.o"));
        match fs::read(&built) {
            Ok(bytes) => fs::write(&embedded, bytes).expect("write embedded eBPF object"),
            Err(_) => {
                println!(
                    "cargo:warning=eBPF object `{name}` not built: run `cargo xtask build-ebpf` \
                     (odiglet will refuse to load it)"
                );
                fs::write(&embedded, []).expect("write eBPF placeholder");
            }
        }
    }
}
