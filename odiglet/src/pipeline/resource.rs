//! Per-process resource attributes, held in a registry keyed by host PID that the attach
//! manager fills and the span reader reads.
//!
//! An unregistered PID keeps its attributes for a grace period, so spans still in the ring
//! buffer when a process exits are exported with them; a new registration of the same PID
//! (PID reuse) replaces them at once.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use bytes::Bytes;
use opentelemetry_proto::tonic::{common::v1::KeyValue, resource::v1::Resource};
use prost::Message;

use super::span::{int, string};

/// `telemetry.sdk.name` of the spans odiglet makes.
pub const SDK_NAME: &str = "odiglet";
/// `telemetry.distro.name`.
pub const DISTRO_NAME: &str = "odigos";
/// How long an unregistered PID's attributes stay available to late spans.
pub const UNREGISTER_GRACE: Duration = Duration::from_secs(10);

/// The Kubernetes workload kinds whose name becomes a `k8s.<kind>.name` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
    CronJob,
    Job,
}

impl WorkloadKind {
    /// The semantic-convention attribute holding this kind's name.
    pub fn name_key(self) -> &'static str {
        match self {
            Self::Deployment => "k8s.deployment.name",
            Self::StatefulSet => "k8s.statefulset.name",
            Self::DaemonSet => "k8s.daemonset.name",
            Self::CronJob => "k8s.cronjob.name",
            Self::Job => "k8s.job.name",
        }
    }

    /// The kind as Odigos writes it in `odigos.workload.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::CronJob => "CronJob",
            Self::Job => "Job",
        }
    }
}

/// The owning workload of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub name: String,
}

/// Where a process runs in Kubernetes; every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct K8sAttributes {
    pub namespace: Option<String>,
    pub pod_name: Option<String>,
    pub container_name: Option<String>,
    pub node_name: Option<String>,
    pub workload: Option<Workload>,
}

/// What the attach manager knows about one instrumented process.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceAttributes {
    /// `service.name`; `unknown_service:<executable name>` when absent.
    pub service_name: Option<String>,
    /// `process.executable.path`.
    pub executable_path: Option<String>,
    /// `process.command`: the first word of the command line.
    pub command: Option<String>,
    /// `process.vpid`: the PID inside the container's namespace, when it differs.
    pub vpid: Option<u32>,
    pub k8s: Option<K8sAttributes>,
    /// Further attributes (for example the process's `OTEL_RESOURCE_ATTRIBUTES`); a key
    /// already set above wins.
    pub extra: Vec<(String, String)>,
}

/// The resource of one process's spans, built (and protobuf-encoded) once per registration.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessResource {
    pid: u32,
    proto: Resource,
    /// `proto` encoded: what every export request containing this process's spans copies.
    encoded: Bytes,
}

impl ProcessResource {
    /// The full resource of a registered process.
    pub fn new(pid: u32, attributes: &ResourceAttributes) -> Self {
        let mut kv = Vec::with_capacity(16);
        let service_name = attributes.service_name.clone().unwrap_or_else(|| {
            let exe = attributes
                .executable_path
                .as_deref()
                .and_then(|path| path.rsplit('/').next())
                .filter(|name| !name.is_empty());
            match exe {
                Some(name) => format!("unknown_service:{name}"),
                None => "unknown_service".to_owned(),
            }
        });
        kv.push(string("service.name", service_name));
        kv.push(int("process.pid", i64::from(pid)));
        if let Some(vpid) = attributes.vpid {
            kv.push(int("process.vpid", i64::from(vpid)));
        }
        if let Some(path) = &attributes.executable_path {
            kv.push(string("process.executable.path", path.clone()));
        }
        if let Some(command) = &attributes.command {
            kv.push(string("process.command", command.clone()));
        }
        kv.push(string("telemetry.sdk.language", "go".to_owned()));
        kv.push(string("telemetry.sdk.name", SDK_NAME.to_owned()));
        kv.push(string(
            "telemetry.sdk.version",
            env!("CARGO_PKG_VERSION").to_owned(),
        ));
        kv.push(string("telemetry.distro.name", DISTRO_NAME.to_owned()));
        kv.push(string(
            "telemetry.distro.version",
            env!("CARGO_PKG_VERSION").to_owned(),
        ));
        if let Some(k8s) = &attributes.k8s {
            let mut push = |key: &str, value: &Option<String>| {
                if let Some(value) = value {
                    kv.push(string(key, value.clone()));
                }
            };
            push("k8s.namespace.name", &k8s.namespace);
            push("k8s.pod.name", &k8s.pod_name);
            push("k8s.container.name", &k8s.container_name);
            push("k8s.node.name", &k8s.node_name);
            if let Some(workload) = &k8s.workload {
                kv.push(string(workload.kind.name_key(), workload.name.clone()));
                kv.push(string(
                    "odigos.workload.kind",
                    workload.kind.as_str().to_owned(),
                ));
                kv.push(string("odigos.workload.name", workload.name.clone()));
            }
        }
        for (key, value) in &attributes.extra {
            if !kv.iter().any(|existing| existing.key == *key) {
                kv.push(string(key, value.clone()));
            }
        }
        Self::from_proto(
            pid,
            Resource {
                attributes: kv,
                ..Resource::default()
            },
        )
    }

    /// The resource of a process nobody registered: `process.pid` only.
    pub fn unknown(pid: u32) -> Self {
        Self::from_proto(
            pid,
            Resource {
                attributes: vec![int("process.pid", i64::from(pid))],
                ..Resource::default()
            },
        )
    }

    fn from_proto(pid: u32, proto: Resource) -> Self {
        let encoded = proto.encode_to_vec().into();
        Self {
            pid,
            proto,
            encoded,
        }
    }

    /// The host PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The OTLP resource.
    pub fn proto(&self) -> &Resource {
        &self.proto
    }

    /// The protobuf encoding of [`Self::proto`].
    pub fn encoded(&self) -> &Bytes {
        &self.encoded
    }

    /// The attributes, in the order they are exported.
    pub fn attributes(&self) -> &[KeyValue] {
        &self.proto.attributes
    }
}

struct Entry {
    resource: Arc<ProcessResource>,
    /// When `unregister` was called; the entry goes after `UNREGISTER_GRACE`.
    removed_at: Option<Instant>,
}

/// Shared, cheaply cloned map from host PID to resource.
#[derive(Clone, Default)]
pub struct ResourceRegistry {
    entries: Arc<RwLock<HashMap<u32, Entry>>>,
}

impl ResourceRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the attributes of `pid`'s spans, replacing any earlier registration.
    pub fn register(&self, pid: u32, attributes: ResourceAttributes) {
        let resource = Arc::new(ProcessResource::new(pid, &attributes));
        let mut entries = self.write();
        sweep(&mut entries, Instant::now());
        entries.insert(
            pid,
            Entry {
                resource,
                removed_at: None,
            },
        );
    }

    /// Forgets `pid` after the grace period. Returns whether it was registered.
    pub fn unregister(&self, pid: u32) -> bool {
        let now = Instant::now();
        let mut entries = self.write();
        sweep(&mut entries, now);
        match entries.get_mut(&pid) {
            Some(entry) if entry.removed_at.is_none() => {
                entry.removed_at = Some(now);
                true
            }
            _ => false,
        }
    }

    /// The registered resource of `pid`, if any (including one in its grace period).
    pub fn get(&self, pid: u32) -> Option<Arc<ProcessResource>> {
        self.read()
            .get(&pid)
            .map(|entry| Arc::clone(&entry.resource))
    }

    /// The resource for `pid`'s spans: the registered one, or `process.pid` only.
    pub fn resolve(&self, pid: u32) -> Arc<ProcessResource> {
        self.get(pid)
            .unwrap_or_else(|| Arc::new(ProcessResource::unknown(pid)))
    }

    /// Registered PIDs, not counting those in their grace period.
    pub fn len(&self) -> usize {
        self.read()
            .values()
            .filter(|entry| entry.removed_at.is_none())
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u32, Entry>> {
        // A panic while holding the lock cannot leave the map half-written (single inserts
        // and removals), so a poisoned lock is still usable.
        self.entries
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u32, Entry>> {
        self.entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn sweep(entries: &mut HashMap<u32, Entry>, now: Instant) {
    entries.retain(|_, entry| {
        entry
            .removed_at
            .is_none_or(|at| now.duration_since(at) < UNREGISTER_GRACE)
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;

    use super::*;

    fn value<'a>(resource: &'a ProcessResource, key: &str) -> Option<&'a Value> {
        resource
            .attributes()
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    fn text<'a>(resource: &'a ProcessResource, key: &str) -> Option<&'a str> {
        match value(resource, key) {
            Some(Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    /// A pod's process with every attribute set (other modules' tests use it too).
    pub(crate) fn full() -> ResourceAttributes {
        ResourceAttributes {
            service_name: Some("checkout".into()),
            executable_path: Some("/app/server".into()),
            command: Some("/app/server".into()),
            vpid: Some(1),
            k8s: Some(K8sAttributes {
                namespace: Some("shop".into()),
                pod_name: Some("checkout-7d9f".into()),
                container_name: Some("app".into()),
                node_name: Some("node-1".into()),
                workload: Some(Workload {
                    kind: WorkloadKind::Deployment,
                    name: "checkout".into(),
                }),
            }),
            extra: vec![
                ("deployment.environment".into(), "prod".into()),
                ("service.name".into(), "ignored".into()),
            ],
        }
    }

    #[test]
    fn registered_process_has_all_attributes() {
        let resource = ProcessResource::new(4242, &full());
        assert_eq!(text(&resource, "service.name"), Some("checkout"));
        assert_eq!(
            value(&resource, "process.pid"),
            Some(&Value::IntValue(4242))
        );
        assert_eq!(value(&resource, "process.vpid"), Some(&Value::IntValue(1)));
        assert_eq!(
            text(&resource, "process.executable.path"),
            Some("/app/server")
        );
        assert_eq!(text(&resource, "process.command"), Some("/app/server"));
        assert_eq!(text(&resource, "telemetry.sdk.language"), Some("go"));
        assert_eq!(text(&resource, "telemetry.sdk.name"), Some(SDK_NAME));
        assert_eq!(text(&resource, "telemetry.distro.name"), Some(DISTRO_NAME));
        assert_eq!(text(&resource, "k8s.namespace.name"), Some("shop"));
        assert_eq!(text(&resource, "k8s.pod.name"), Some("checkout-7d9f"));
        assert_eq!(text(&resource, "k8s.container.name"), Some("app"));
        assert_eq!(text(&resource, "k8s.node.name"), Some("node-1"));
        assert_eq!(text(&resource, "k8s.deployment.name"), Some("checkout"));
        assert_eq!(text(&resource, "odigos.workload.kind"), Some("Deployment"));
        assert_eq!(text(&resource, "deployment.environment"), Some("prod"));
        let names = resource
            .attributes()
            .iter()
            .filter(|kv| kv.key == "service.name")
            .count();
        assert_eq!(names, 1, "extra attributes never override known ones");
    }

    #[test]
    fn service_name_defaults_to_the_executable() {
        let attributes = ResourceAttributes {
            executable_path: Some("/usr/bin/web".into()),
            ..ResourceAttributes::default()
        };
        let resource = ProcessResource::new(1, &attributes);
        assert_eq!(text(&resource, "service.name"), Some("unknown_service:web"));
        let resource = ProcessResource::new(1, &ResourceAttributes::default());
        assert_eq!(text(&resource, "service.name"), Some("unknown_service"));
        assert_eq!(value(&resource, "k8s.pod.name"), None);
    }

    #[test]
    fn unknown_pid_has_process_pid_only() {
        let registry = ResourceRegistry::new();
        let resource = registry.resolve(99);
        assert_eq!(resource.pid(), 99);
        assert_eq!(resource.attributes().len(), 1);
        assert_eq!(value(&resource, "process.pid"), Some(&Value::IntValue(99)));
    }

    #[test]
    fn registry_registers_replaces_and_unregisters_with_grace() {
        let registry = ResourceRegistry::new();
        registry.register(7, full());
        assert_eq!(registry.len(), 1);
        assert_eq!(text(&registry.resolve(7), "service.name"), Some("checkout"));
        registry.register(
            7,
            ResourceAttributes {
                service_name: Some("reused".into()),
                ..ResourceAttributes::default()
            },
        );
        assert_eq!(text(&registry.resolve(7), "service.name"), Some("reused"));
        assert!(registry.unregister(7));
        assert!(!registry.unregister(7), "already unregistered");
        assert!(!registry.unregister(8), "never registered");
        assert!(registry.is_empty());
        assert_eq!(
            text(&registry.resolve(7), "service.name"),
            Some("reused"),
            "late spans still get the attributes during the grace period"
        );
        let clone = registry.clone();
        clone.register(9, full());
        assert!(registry.get(9).is_some(), "clones share the map");
    }

    #[test]
    fn sweep_drops_entries_after_the_grace_period() {
        let mut entries = HashMap::new();
        let now = Instant::now();
        entries.insert(
            1,
            Entry {
                resource: Arc::new(ProcessResource::unknown(1)),
                removed_at: Some(now),
            },
        );
        entries.insert(
            2,
            Entry {
                resource: Arc::new(ProcessResource::unknown(2)),
                removed_at: None,
            },
        );
        sweep(&mut entries, now + UNREGISTER_GRACE / 2);
        assert_eq!(entries.len(), 2);
        sweep(&mut entries, now + UNREGISTER_GRACE);
        assert!(entries.contains_key(&2) && !entries.contains_key(&1));
    }
}
