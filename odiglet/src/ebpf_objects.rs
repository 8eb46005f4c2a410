//! The eBPF objects embedded at build time (see `build.rs`), and the loader they load with.

use aya::{EbpfLoader, include_bytes_aligned, programs::ProgramError};
use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
use tracing::debug;

use crate::heap;

/// An embedded object is an empty placeholder: the build ran without `cargo xtask build-ebpf`.
#[derive(Debug, thiserror::Error)]
#[error(
    "odiglet was built without its eBPF object `{0}`: run `cargo xtask build-ebpf`, then rebuild"
)]
pub struct MissingObject(pub &'static str);

static LIFECYCLE: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/lifecycle.bpf.o"));

static GO_HTTP: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/go_http.bpf.o"));

/// The Go instrumentation object (`net/http` server and client).
pub fn go_http() -> Result<&'static [u8], MissingObject> {
    non_empty("go_http", GO_HTTP)
}

/// The process-lifecycle probe object.
pub fn lifecycle() -> Result<&'static [u8], MissingObject> {
    non_empty("lifecycle", LIFECYCLE)
}

fn non_empty(name: &'static str, bytes: &'static [u8]) -> Result<&'static [u8], MissingObject> {
    if bytes.is_empty() {
        Err(MissingObject(name))
    } else {
        Ok(bytes)
    }
}

/// The loader for our objects: without kernel BTF, and with the heap freed so far given back.
///
/// Our objects have no CO-RE relocations (offsets are resolved in user space), so aya has
/// nothing to relocate with the kernel's BTF. The vendored aya parses `/sys/kernel/btf/vmlinux`
/// only for a loader not given `.btf(...)` (vendor/README.md); aya 0.14's `EbpfLoader::new()`
/// parsed it anyway (aya-rs/aya#1172), a 19 MiB heap peak here. `malloc_trim` still returns
/// the pages freed by start-up (configuration, watches syncing, the first object's load) that
/// glibc would keep below later allocations: 0.2-0.4 MiB of the idle daemon's heap.
pub fn loader() -> EbpfLoader<'static> {
    heap::release_free();
    let mut loader = EbpfLoader::new();
    loader.btf(None);
    loader
}

/// Verifier runs interrupted by a pending signal (the kernel returns `EAGAIN`, as libbpf
/// knows) are retried this many times.
const LOAD_ATTEMPTS: usize = 5;

/// Runs `load` (one program's `load()`), retrying when a signal interrupted the verifier: in a
/// process that gets signals (`SIGCHLD`s where tokio reaps children) long verifications would
/// otherwise fail at random, the more so the busier the machine. A failed load leaves the
/// program loadable again.
pub fn load_retrying(
    mut load: impl FnMut() -> Result<(), ProgramError>,
) -> Result<(), ProgramError> {
    // Signals blocked on this thread are delivered to another one and do not interrupt the
    // verifier; the retry covers signals aimed at this thread itself.
    let mut previous = SigSet::empty();
    let masked = pthread_sigmask(
        SigmaskHow::SIG_BLOCK,
        Some(&SigSet::all()),
        Some(&mut previous),
    );
    let mut attempt = 1;
    let result = loop {
        match load() {
            Err(ProgramError::LoadError { io_error, .. })
                if io_error.raw_os_error() == Some(libc::EAGAIN) && attempt < LOAD_ATTEMPTS =>
            {
                debug!(
                    attempt,
                    "verifier interrupted by a signal; retrying the load"
                );
                attempt += 1;
            }
            other => break other,
        }
    };
    if masked.is_ok() {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&previous), None);
    }
    result
}
