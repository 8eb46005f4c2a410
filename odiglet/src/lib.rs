//! odiglet: Odigos' node agent, in Rust.
//!
//! One privileged process per Kubernetes node. This crate is the daemon's library; `main.rs`
//! only parses the command line and calls [`cli::dispatch`].
//!
//! # Architecture
//! ```text
//! process ─ProcessEvent─▶ instrument ─span ring─▶ pipeline ─ProcessSpan─▶ export ─OTLP─▶ collector
//!    ▲ lifecycle probe     ▲ uses goelf (Go binary analysis) and inspect (runtime detection)
//! manager: composes the chain above per container (ManagerRequest in, instances out)
//! edge servers: device_plugin (kubelet gRPC), opamp (native agents over HTTP),
//!               ops (health port: healthz, readyz, metrics, status)
//! k8s: watches (pods of this node, InstrumentationConfigs) → manager requests, OpAMP config,
//!      runtime-detection status writes
//! leaves: ebpf_objects (embedded objects), ring (async ring buffers), heap (the allocator's
//! fixed thresholds), time, telemetry, metrics,
//! agents_dir and node_setup (`odiglet init`: the agents into the host directory pods mount,
//! the node labelled and its start-up taint lifted)
//! cli: one module per subcommand, the only place that composes the others
//! ```
//! Modules own one job each and data flows one way through bounded channels: upstream
//! modules never import downstream ones, and edge servers declare the narrow traits they need
//! (`opamp::identity::DeviceOwnerLookup`) for the composition code to implement.
// Unsafe code is denied; the exceptions (tokio fd registration in `ring`, glibc's
// allocator calls in `heap`) say why.
#![deny(unsafe_code)]

pub mod agents_dir;
pub mod cli;
pub mod device_plugin;
pub mod ebpf_objects;
pub mod export;
pub mod goelf;
pub mod heap;
pub mod inspect;
pub mod instrument;
pub mod k8s;
pub mod manager;
pub mod metrics;
pub mod node_setup;
pub mod opamp;
pub mod ops;
pub mod pipeline;
pub mod process;
pub mod ring;
pub mod telemetry;
pub mod time;
