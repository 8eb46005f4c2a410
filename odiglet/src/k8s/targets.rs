//! What should be instrumented on this node: every container of a pod here whose workload's
//! InstrumentationConfig enables an eBPF distro, as [`ContainerTarget`]s, and the
//! [`ManagerRequest`]s that move the manager from one such state to the next (changes only).
//! Pure functions over the watched objects, so every rule is unit-tested.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use super::{
    crd::{ContainerAgentConfig, InstrumentationConfig},
    workload::{PodWorkload, pod_workload},
};
use crate::manager::{ContainerKey, ContainerTarget, ManagerRequest, TracesConfig};

/// Distros odiglet implements itself with eBPF; others belong to native agents (OpAMP).
pub const EBPF_DISTROS: [&str; 1] = ["golang-community"];

/// InstrumentationConfigs by (namespace, name).
pub type ConfigIndex<'a> = HashMap<(String, String), &'a InstrumentationConfig>;

/// Indexes configs for lookups by workload.
pub fn index<'a>(configs: impl IntoIterator<Item = &'a InstrumentationConfig>) -> ConfigIndex<'a> {
    configs
        .into_iter()
        .filter_map(|ic| {
            let namespace = ic.metadata.namespace.clone()?;
            let name = ic.metadata.name.clone()?;
            Some(((namespace, name), ic))
        })
        .collect()
}

/// The pod's workload and that workload's InstrumentationConfig, if both exist.
pub fn config_of<'a>(
    pod: &Pod,
    configs: &ConfigIndex<'a>,
) -> Option<(PodWorkload, &'a InstrumentationConfig)> {
    let workload = pod_workload(pod)?;
    let config = configs.get(&(workload.namespace.clone(), workload.config_name()))?;
    Some((workload, *config))
}

/// A pod whose containers may run: not finished.
fn may_run(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed"))
}

/// `containerd://<id>` → `<id>`.
pub fn bare_container_id(id: &str) -> &str {
    id.rsplit("://").next().unwrap_or(id)
}

/// The runtime's id of a container, once the pod status has one.
pub fn container_id(pod: &Pod, container: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|s| s.name == container)?
        .container_id
        .as_deref()
        .map(bare_container_id)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
}

/// Libraries switched off in `traces.traceVerbosity.disabledLibraries` (names, or objects with
/// a `name`/`libraryName`).
fn disabled_libraries(traces: &Value) -> Vec<String> {
    let list = traces
        .pointer("/traceVerbosity/disabledLibraries")
        .and_then(Value::as_array);
    let mut names: Vec<String> = list
        .into_iter()
        .flatten()
        .filter_map(|entry| match entry {
            Value::String(name) => Some(name.clone()),
            Value::Object(map) => map
                .get("name")
                .or_else(|| map.get("libraryName"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => None,
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The traces settings of a container config.
pub fn traces_config(config: &ContainerAgentConfig) -> TracesConfig {
    match &config.traces {
        None => TracesConfig {
            enabled: false,
            disabled_libraries: Vec::new(),
        },
        Some(traces) => TracesConfig {
            enabled: true,
            disabled_libraries: disabled_libraries(traces),
        },
    }
}

/// The eBPF distro of a container config, when the agent is enabled with one.
pub fn ebpf_distro(config: &ContainerAgentConfig) -> Option<&str> {
    let distro = config.otel_distro_name.as_deref()?;
    (config.agent_enabled && EBPF_DISTROS.contains(&distro)).then_some(distro)
}

/// The service name of a workload: `spec.serviceName`, else the workload name.
pub fn service_name(workload: &PodWorkload, config: &InstrumentationConfig) -> String {
    if config.spec.service_name.is_empty() {
        workload.name.clone()
    } else {
        config.spec.service_name.clone()
    }
}

/// The eBPF targets among `pods` given their workloads' configs.
pub fn desired<'p>(
    pods: impl IntoIterator<Item = &'p Pod>,
    configs: &ConfigIndex<'_>,
) -> BTreeMap<ContainerKey, ContainerTarget> {
    let mut targets = BTreeMap::new();
    for pod in pods {
        if !may_run(pod) {
            continue;
        }
        let Some((workload, config)) = config_of(pod, configs) else {
            continue;
        };
        if !config.spec.agent_injection_enabled {
            continue;
        }
        let (Some(namespace), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name) else {
            continue;
        };
        let containers = pod.spec.iter().flat_map(|s| &s.containers);
        for container in containers {
            let Some(agent) = config.container(&container.name) else {
                continue;
            };
            let Some(distro) = ebpf_distro(agent) else {
                continue;
            };
            let key = ContainerKey {
                namespace: namespace.clone(),
                pod: name.clone(),
                container: container.name.clone(),
            };
            let target = ContainerTarget {
                key: key.clone(),
                pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
                container_id: container_id(pod, &container.name),
                qos_class: pod.status.as_ref().and_then(|s| s.qos_class.clone()),
                workload: workload.resource(),
                service_name: service_name(&workload, config),
                distro: distro.to_owned(),
                traces: traces_config(agent),
            };
            targets.insert(key, target);
        }
    }
    targets
}

/// The requests that turn `previous` into `next`: `Apply` for new or changed targets, then
/// `Remove` for vanished ones; nothing for unchanged ones.
pub fn changes(
    previous: &BTreeMap<ContainerKey, ContainerTarget>,
    next: &BTreeMap<ContainerKey, ContainerTarget>,
) -> Vec<ManagerRequest> {
    let applies = next
        .iter()
        .filter(|(key, target)| previous.get(*key) != Some(*target))
        .map(|(_, target)| ManagerRequest::Apply(target.clone()));
    let removes = previous
        .keys()
        .filter(|key| !next.contains_key(*key))
        .map(|key| ManagerRequest::Remove(key.clone()));
    applies.chain(removes).collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, rs: &str, containers: &[(&str, Option<&str>)]) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                    "uid": "rs", "controller": true}]},
            "spec": {"containers": containers.iter().map(|(n, _)| json!({"name": n})).collect::<Vec<_>>()},
            "status": {"phase": "Running", "qosClass": "BestEffort",
                "containerStatuses": containers.iter().filter(|(_, id)| id.is_some()).map(|(n, id)| json!({
                    "name": n, "ready": true, "restartCount": 0, "image": "i", "imageID": "",
                    "containerID": id})).collect::<Vec<_>>()}
        }))
        .expect("pod")
    }

    fn config(name: &str, containers: serde_json::Value) -> InstrumentationConfig {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"agentInjectionEnabled": true, "containers": containers}
        }))
        .expect("config")
    }

    fn go(container: &str) -> serde_json::Value {
        json!({"containerName": container, "agentEnabled": true,
            "otelDistroName": "golang-community", "traces": {}})
    }

    #[test]
    fn targets_only_enabled_ebpf_containers_of_configured_workloads() {
        let pods = [
            pod(
                "web-7d4b9c8f6-aaaaa",
                "web-7d4b9c8f6",
                &[
                    ("app", Some("containerd://abc")),
                    ("py", Some("containerd://def")),
                    ("off", None),
                ],
            ),
            pod("other-5f5f-bbbbb", "other-5f5f", &[("app", None)]),
        ];
        let configs = [config(
            "deployment-web",
            json!([go("app"),
                {"containerName": "py", "agentEnabled": true, "otelDistroName": "python-community"},
                {"containerName": "off", "agentEnabled": false, "otelDistroName": "golang-community"}]),
        )];
        let index = index(&configs);
        let targets = desired(&pods, &index);
        assert_eq!(targets.len(), 1, "{targets:?}");
        let target = targets.values().next().expect("one");
        assert_eq!(target.key.pod, "web-7d4b9c8f6-aaaaa");
        assert_eq!(target.key.container, "app");
        assert_eq!(target.container_id.as_deref(), Some("abc"));
        assert_eq!(target.qos_class.as_deref(), Some("BestEffort"));
        assert_eq!(target.service_name, "web");
        assert_eq!(target.pod_uid, "uid-web-7d4b9c8f6-aaaaa");
        assert_eq!(
            target.workload.as_ref().map(|w| w.name.as_str()),
            Some("web")
        );
        assert!(target.traces.enabled);
    }

    #[test]
    fn injection_disabled_finished_pods_and_service_name() {
        let running = pod("web-1-aaaaa", "web-1", &[("app", Some("docker://x"))]);
        let mut off = config("deployment-web", json!([go("app")]));
        off.spec.agent_injection_enabled = false;
        assert!(desired([&running], &index([&off])).is_empty());

        let mut named = config("deployment-web", json!([go("app")]));
        named.spec.service_name = "storefront".into();
        let targets = desired([&running], &index([&named]));
        assert_eq!(
            targets.values().next().map(|t| t.service_name.as_str()),
            Some("storefront")
        );

        let mut done = running.clone();
        if let Some(status) = done.status.as_mut() {
            status.phase = Some("Succeeded".into());
        }
        assert!(desired([&done], &index([&named])).is_empty());
    }

    #[test]
    fn traces_settings() {
        let mut c: ContainerAgentConfig = serde_json::from_value(json!({
            "containerName": "app", "agentEnabled": true, "otelDistroName": "golang-community",
            "traces": {"traceVerbosity": {"disabledLibraries": ["net/http", {"name": "database/sql"}, "net/http"]}}
        }))
        .expect("config");
        assert_eq!(
            traces_config(&c),
            TracesConfig {
                enabled: true,
                disabled_libraries: vec!["database/sql".into(), "net/http".into()]
            }
        );
        c.traces = None;
        assert!(!traces_config(&c).enabled);
    }

    #[test]
    fn changes_send_only_differences() {
        let configs = [config("deployment-web", json!([go("app")]))];
        let index = index(&configs);
        let pending = pod("web-1-aaaaa", "web-1", &[("app", None)]);
        let started = pod("web-1-aaaaa", "web-1", &[("app", Some("containerd://c1"))]);
        let empty = BTreeMap::new();

        let first = desired([&pending], &index);
        let requests = changes(&empty, &first);
        assert!(
            matches!(requests.as_slice(), [ManagerRequest::Apply(t)] if t.container_id.is_none())
        );
        assert!(changes(&first, &desired([&pending], &index)).is_empty());

        let second = desired([&started], &index);
        assert!(matches!(changes(&first, &second).as_slice(),
            [ManagerRequest::Apply(t)] if t.container_id.as_deref() == Some("c1")));

        let gone = changes(&second, &empty);
        assert!(matches!(gone.as_slice(), [ManagerRequest::Remove(k)] if k.container == "app"));
    }
}
