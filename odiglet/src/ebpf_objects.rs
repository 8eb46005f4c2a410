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

/// The loader for our objects: without kernel BTF, and with the heap its parse used given back.
///
/// Our objects have no CO-RE relocations (offsets are resolved in user space), so aya has
/// nothing to relocate with the kernel's BTF. But aya 0.14's `EbpfLoader::new()` parses
/// `/sys/kernel/btf/vmlinux` before `.btf(None)` can say so (aya-rs/aya#1172): a 5.5 MiB read
/// and some 100 000 small allocations, 19 MiB at the peak here, dropped at once by `.btf(None)`.
/// glibc keeps those freed pages in its heap, where later allocations pin them, so they stayed
/// resident: 22 MiB of an idle `odiglet run` for the two objects. `malloc_trim` returns every
/// free page of every arena to the kernel.
pub fn loader() -> EbpfLoader<'static> {
    let mut loader = EbpfLoader::new();
    loader.btf(None);
    heap::release_free();
    loader
}
