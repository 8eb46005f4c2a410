//! The OpAMP server's configuration in cluster mode: for every pod on this node whose workload
//! has an InstrumentationConfig, its service name, its workload, and each container's
//! `ContainerAgentConfig` as the agent's `container_config` file (odigos.md §3.5). Rebuilt
//! whenever a pod or config changes; the store bumps its generation only on a real change, and
//! agents pick the new files up on their next poll.

use k8s_openapi::api::core::v1::Pod;

use super::targets::{ConfigIndex, config_of, service_name};
use crate::opamp::remote_config::{Override, ServedConfig};

/// `base` (defaults and signals) plus one override per configured container of every pod,
/// then one per pod for containers the config does not list. Sorted, so the same cluster
/// state always gives an equal config.
pub fn served_config<'p>(
    base: &ServedConfig,
    pods: impl IntoIterator<Item = &'p Pod>,
    configs: &ConfigIndex<'_>,
) -> ServedConfig {
    let mut containers = Vec::new();
    let mut pod_wide = Vec::new();
    for pod in pods {
        let Some((workload, config)) = config_of(pod, configs) else {
            continue;
        };
        let (Some(namespace), Some(pod_name)) = (&pod.metadata.namespace, &pod.metadata.name)
        else {
            continue;
        };
        let common = Override {
            namespace: namespace.clone(),
            pod: Some(pod_name.clone()),
            container: None,
            service_name: Some(service_name(&workload, config)),
            container_config: None,
            workload_kind: Some(workload.kind.as_str().to_owned()),
            workload_name: Some(workload.name.clone()),
        };
        for container in &config.spec.containers {
            containers.push(Override {
                container: Some(container.container_name.clone()),
                container_config: serde_json::to_value(container).ok(),
                ..common.clone()
            });
        }
        pod_wide.push(common);
    }
    let key = |o: &Override| (o.namespace.clone(), o.pod.clone(), o.container.clone());
    containers.sort_by_key(key);
    pod_wide.sort_by_key(key);
    let mut served = base.clone();
    served.overrides = containers
        .into_iter()
        .chain(pod_wide)
        .chain(base.overrides.iter().cloned())
        .collect();
    served
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        k8s::{crd::InstrumentationConfig, targets::index},
        opamp::{
            identity::{AgentIdentity, IdentitySource},
            remote_config::build,
        },
    };

    fn identity(pod: &str, container: &str) -> AgentIdentity {
        AgentIdentity {
            namespace: "shop".into(),
            pod: pod.into(),
            container: container.into(),
            pid: 9,
            language: "python".into(),
            source: IdentitySource::Attributes,
        }
    }

    fn files(config: &ServedConfig, id: &AgentIdentity) -> (Value, Value, Vec<u8>) {
        let built = build(config, id, "node-1");
        let map = built.config.expect("files").config_map;
        let body = |name: &str| serde_json::from_slice(&map[name].body).expect("json");
        (body("container_config"), body("SDK"), built.config_hash)
    }

    #[test]
    fn containers_get_their_config_service_name_and_workload() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {
            "name": "cart-0", "namespace": "shop",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "cart", "uid": "u"}]}}))
        .expect("pod");
        let mut ic: InstrumentationConfig = serde_json::from_value(json!({
            "metadata": {"name": "statefulset-cart", "namespace": "shop"},
            "spec": {"serviceName": "cart-svc", "containers": [{"containerName": "app",
                "agentEnabled": true, "otelDistroName": "python-community", "traces": {}}]}}))
        .expect("ic");
        let served = served_config(&ServedConfig::default(), [&pod], &index([&ic]));
        let (cc, sdk, hash) = files(&served, &identity("cart-0", "app"));
        assert_eq!(cc["otelDistroName"], "python-community");
        assert_eq!(cc["containerName"], "app");
        let attrs = sdk["remoteResourceAttributes"].to_string();
        assert!(
            attrs.contains(r#"{"key":"k8s.statefulset.name","value":"cart"}"#),
            "{attrs}"
        );
        assert!(
            attrs.contains(r#"{"key":"service.name","value":"cart-svc"}"#),
            "{attrs}"
        );
        // An unlisted container still gets the workload's service name, with the default file.
        let (cc, sdk, _) = files(&served, &identity("cart-0", "sidecar"));
        assert_eq!(cc["agentEnabled"], true);
        assert!(sdk.to_string().contains("cart-svc"));

        // A config change changes the file and its hash; the same state gives an equal config.
        assert_eq!(
            served,
            served_config(&ServedConfig::default(), [&pod], &index([&ic]))
        );
        ic.spec.containers[0].traces = None;
        let changed = served_config(&ServedConfig::default(), [&pod], &index([&ic]));
        let (cc, _, new_hash) = files(&changed, &identity("cart-0", "app"));
        assert!(cc.get("traces").is_none());
        assert_ne!(hash, new_hash);
    }
}
