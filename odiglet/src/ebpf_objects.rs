//! The eBPF objects embedded at build time (see `build.rs`), and the loader they load with.

use aya::{EbpfLoader, include_bytes_aligned};

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
