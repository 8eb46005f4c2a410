//! odiglet: Odigos' node agent, in Rust.
//!
//! One privileged process per Kubernetes node. This crate is the daemon's library; `main.rs`
//! only parses the command line and calls [`cli::dispatch`].
//!
//! # Architecture
//! ```text
//! process ─ProcessEvent─▶ (instrumentation manager) ─▶ (span pipeline) ─▶ (OTLP export)
//!    ▲ lifecycle probe: tracepoints sched_process_{exec,fork,exit} → ring buffer → AsyncFd
//! ebpf_objects: the eBPF objects embedded at build time (odiglet-ebpf, via `cargo xtask build-ebpf`)
//! time: kernel boot-time stamps → wall clock
//! cli: one module per subcommand; telemetry: logging set-up
//! ```
//! Modules own one job each, and data flows one way through bounded channels; see the
//! README for the full map as the other components (device plugin, OpAMP server, runtime
//! inspection, Go instrumentation, Kubernetes glue) land.
// Unsafe code is denied; the single exception (tokio fd registration, `ring`) says why.
#![deny(unsafe_code)]

pub mod cli;
pub mod device_plugin;
pub mod ebpf_objects;
pub mod export;
pub mod goelf;
pub mod inspect;
pub mod instrument;
pub mod opamp;
pub mod pipeline;
pub mod process;
pub mod ring;
pub mod telemetry;
pub mod time;
