//! Types shared byte for byte by odiglet's eBPF programs (`odiglet-ebpf`) and user space.
//!
//! Everything here is `#[repr(C)]` plain data: `u32` kind constants and `u8`/`u32` flags
//! instead of Rust enums or `bool` (any bit pattern the kernel writes must be a valid value),
//! fixed-length arrays, and a compile-time size assertion per type so a layout change on one
//! side cannot go unnoticed. The only logic is the `traceparent` parser both the probes and
//! the host tests run, and the length-checked decoder behind the `user` feature, which also
//! adds the `aya::Pod` impls user space needs to read and write maps.
#![no_std]

pub mod go;
pub mod lifecycle;
pub mod traceparent;

#[cfg(feature = "user")]
mod decode;
#[cfg(feature = "user")]
pub use decode::{
    DecodeError, GoSpanRecord, LifecycleRecord, RecordBytes, bytes_of, decode_go_span,
    decode_record, from_bytes, pack_go_span,
};
