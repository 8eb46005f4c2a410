//! The eBPF objects embedded at build time (see `build.rs`).

use aya::include_bytes_aligned;

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
