//! Go binary analysis (pure, no root): what a Go executable says about itself.
//!
//! [`buildinfo`] reads the Go version and the module list from `.go.buildinfo`, which survives
//! `-ldflags=-s -w`. Symbols, `.gopclntab` and DWARF offsets for the eBPF instrumentation will
//! live beside it. Executables are untrusted: every length read from them is bounded.
#![deny(clippy::indexing_slicing, clippy::cast_possible_truncation)]

pub mod buildinfo;

pub use buildinfo::{BuildInfo, BuildInfoError, GoModule};
