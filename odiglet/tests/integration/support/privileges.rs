//! Skip-or-fail for tests that need root and a working BPF subsystem.

/// True when the test may run. Otherwise prints `SKIPPED (needs root/BPF): <reason>` and
/// returns false, or panics when `CI=true`: CI must never skip these tests.
#[must_use]
pub fn privileged(test: &str) -> bool {
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("not running as root".to_owned())
    } else if !std::path::Path::new(odiglet::process::VMLINUX_BTF).exists() {
        Some(format!(
            "{} is missing (kernel without BTF)",
            odiglet::process::VMLINUX_BTF
        ))
    } else if let Err(missing) = odiglet::ebpf_objects::lifecycle() {
        Some(missing.to_string())
    } else {
        None
    };
    match reason {
        None => true,
        Some(reason) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: needs root/BPF but CI=true: {reason}")
        }
        Some(reason) => {
            #[expect(clippy::print_stderr, reason = "the skip must be loud in test output")]
            {
                eprintln!("SKIPPED (needs root/BPF): {test}: {reason}");
            }
            false
        }
    }
}
