//! The instrumentation manager of `odiglet run`: turns "this container should be instrumented
//! with this config" into attached eBPF probes on its processes (now and as they start), keeps
//! them in step with config changes, detaches on removal or exit, and reports each process as
//! an `InstrumentationInstance`.
//!
//! The Kubernetes glue (`k8s`) decides *what* is wanted and sends [`ManagerRequest`]s; this
//! module owns *how*: it is the only composer of process, inspect, instrument, pipeline and
//! export in the daemon.

mod desired;

pub use desired::{ContainerKey, ContainerTarget, ManagerRequest, TracesConfig};
