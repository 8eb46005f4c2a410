//! What the cluster wants instrumented, one entry per container. Built by the Kubernetes glue
//! from a Pod and its workload's `InstrumentationConfig`; applied by the manager. The types
//! carry no Kubernetes API objects, so the manager is tested without an API server.

use crate::pipeline::Workload;

/// A container of a pod on this node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerKey {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// Traces settings of one container (`ContainerAgentConfig.traces` in the
/// InstrumentationConfig).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracesConfig {
    /// Traces on at all; off detaches nothing but stops spans (every library disabled).
    pub enabled: bool,
    /// Instrumentation libraries switched off, by Go import path (`net/http`,
    /// `google.golang.org/grpc`, `database/sql`), from `traceVerbosity.disabledLibraries`.
    pub disabled_libraries: Vec<String>,
}

impl Default for TracesConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            disabled_libraries: Vec::new(),
        }
    }
}

/// One container whose processes should carry eBPF instrumentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerTarget {
    pub key: ContainerKey,
    pub pod_uid: String,
    /// The runtime's container id without its `containerd://`-style prefix, once the pod
    /// status has it; with the pod UID and QoS class it names the container's cgroup.
    pub container_id: Option<String>,
    /// The pod's QoS class (`Guaranteed`, `Burstable`, `BestEffort`).
    pub qos_class: Option<String>,
    /// The owning workload, when it is a kind Odigos names in resource attributes.
    pub workload: Option<Workload>,
    /// `spec.serviceName` of the InstrumentationConfig, else the workload name.
    pub service_name: String,
    /// Odigos distro of this container, e.g. `golang-community`.
    pub distro: String,
    pub traces: TracesConfig,
}

/// A change the Kubernetes glue asks of the manager. Requests are idempotent: the glue sends
/// the desired state, and the manager attaches, reconfigures or detaches to match it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManagerRequest {
    /// Instrument this container's processes, or apply a changed config to them.
    Apply(ContainerTarget),
    /// Stop instrumenting this container: detach its processes and delete their instances.
    Remove(ContainerKey),
}
