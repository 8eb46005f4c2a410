//! Cluster mode: applies [`InstanceTask`]s to `InstrumentationInstance` objects
//! (odigos.io/v1alpha1) with the `kube` client: name `<pod>-<pid>`, controller owner reference
//! to the Pod, labels `instrumented-app` and `ownerPodName`, at most 16 per pod, status through
//! the status subresource, re-read and retry on conflict (odigos.md §3.4).

use kube::{
    Api, Client,
    api::{DeleteParams, DynamicObject, ListParams, PostParams},
    core::{ApiResource, GroupVersionKind},
};
use serde_json::{Value, json};
use tracing::{debug, warn};

use super::{
    health::{Health, InstanceSink, InstanceTask},
    identity::BoxFuture,
    remote_config::workload_of,
};

/// Odigos' cap on instances per pod.
pub const MAX_INSTANCES_PER_POD: usize = 16;
/// Attempts on conflict (client-go's `retry.DefaultBackoff` has 6 steps).
const ATTEMPTS: usize = 6;

/// Writes InstrumentationInstances; one is used by the single queue worker.
pub struct KubeInstanceWriter {
    client: Client,
    resource: ApiResource,
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

impl KubeInstanceWriter {
    pub fn new(client: Client) -> Self {
        let gvk = GroupVersionKind::gvk("odigos.io", "v1alpha1", "InstrumentationInstance");
        Self {
            client,
            resource: ApiResource::from_gvk_with_plural(&gvk, "instrumentationinstances"),
        }
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &self.resource)
    }

    async fn upsert(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        pid: i64,
        attributes: &[(String, String)],
        health: Option<&Health>,
    ) -> Result<(), kube::Error> {
        let api = self.api(namespace);
        let name = InstanceTask::object_name(pod, pid);
        for attempt in 1..=ATTEMPTS {
            let mut object = match api.get_opt(&name).await? {
                Some(object) => object,
                None => match self.create(&api, namespace, pod, container, &name).await? {
                    Some(object) => object,
                    None => return Ok(()),
                },
            };
            let status = status_json(attributes, health);
            object.data["status"] = status;
            match api
                .replace_status(&name, &PostParams::default(), &object)
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if is_status(&e, 409) && attempt < ATTEMPTS => {
                    debug!(%name, attempt, "status update conflicted; re-reading");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Creates the object, unless the pod already has the maximum or is gone (`None`).
    async fn create(
        &self,
        api: &Api<DynamicObject>,
        namespace: &str,
        pod: &str,
        container: &str,
        name: &str,
    ) -> Result<Option<DynamicObject>, kube::Error> {
        let existing = api
            .list(&ListParams::default().labels(&format!("ownerPodName={pod}")))
            .await?;
        if existing.items.len() >= MAX_INSTANCES_PER_POD {
            warn!(%namespace, %pod, "pod already has {MAX_INSTANCES_PER_POD} InstrumentationInstances; not creating {name}");
            return Ok(None);
        }
        let pods: Api<k8s_openapi::api::core::v1::Pod> =
            Api::namespaced(self.client.clone(), namespace);
        let Some(owner) = pods.get_opt(pod).await? else {
            debug!(%namespace, %pod, "pod is gone; no InstrumentationInstance");
            return Ok(None);
        };
        // The pod's owners name the workload exactly; the pod name is only a fallback.
        let app = crate::k8s::workload::pod_workload(&owner)
            .map(|w| w.config_name())
            .unwrap_or_else(|| {
                let (kind, workload) = workload_of(pod);
                let kind = kind.trim_start_matches("k8s.").trim_end_matches(".name");
                format!("{kind}-{workload}")
            });
        let mut object = DynamicObject::new(name, &self.resource)
            .within(namespace)
            .data(json!({"spec": {"containerName": container}}));
        object.metadata.labels = Some(
            [
                ("instrumented-app".to_owned(), app),
                ("ownerPodName".to_owned(), pod.to_owned()),
            ]
            .into(),
        );
        object.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: pod.into(),
                uid: owner.metadata.uid.unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: None,
            },
        ]);
        match api.create(&PostParams::default(), &object).await {
            Ok(created) => Ok(Some(created)),
            // Created concurrently: use it.
            Err(e) if is_status(&e, 409) => api.get_opt(name).await,
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, namespace: &str, pod: &str, pid: i64) -> Result<(), kube::Error> {
        let name = InstanceTask::object_name(pod, pid);
        match self
            .api(namespace)
            .delete(&name, &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 404) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The status Odigos writes: attributes as strings, health, and one component per library
/// (its status parsed as JSON attributes when it is JSON).
pub fn status_json(attributes: &[(String, String)], health: Option<&Health>) -> Value {
    let now = crate::time::now_rfc3339();
    let kvs = |pairs: &[(String, String)]| -> Vec<Value> {
        pairs
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect()
    };
    let mut status = json!({
        "identifyingAttributes": kvs(attributes),
        "nonIdentifyingAttributes": [],
        "lastStatusTime": now,
    });
    if let Some(h) = health {
        status["healthy"] = json!(h.healthy);
        status["reason"] = json!(h.status);
        status["message"] = json!(h.last_error);
        let components: Vec<Value> = h
            .components
            .iter()
            .map(|(name, healthy, detail)| {
                let mut c = json!({"name": name, "type": "instrumentation", "healthy": healthy, "lastStatusTime": now});
                match serde_json::from_str::<serde_json::Map<String, Value>>(detail) {
                    Ok(map) => {
                        let attrs: Vec<(String, String)> = map
                            .into_iter()
                            .map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                            .collect();
                        c["nonIdentifyingAttributes"] = json!(kvs(&attrs));
                    }
                    Err(_) => {
                        c["reason"] = json!("instrumentation.details");
                        c["message"] = json!(detail);
                    }
                }
                c
            })
            .collect();
        status["components"] = json!(components);
    }
    status
}

impl InstanceSink for KubeInstanceWriter {
    fn apply(&self, task: InstanceTask) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let result = match &task {
                InstanceTask::Upsert {
                    namespace,
                    pod,
                    container,
                    pid,
                    identifying_attributes,
                    health,
                } => {
                    self.upsert(
                        namespace,
                        pod,
                        container,
                        *pid,
                        identifying_attributes,
                        health.as_ref(),
                    )
                    .await
                }
                InstanceTask::Delete {
                    namespace,
                    pod,
                    pid,
                } => self.delete(namespace, pod, *pid).await,
            };
            result.map_err(|e| format!("{:#}", anyhow::Error::new(e)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shape() {
        let health = Health {
            healthy: true,
            status: "Healthy".into(),
            last_error: String::new(),
            components: vec![
                ("flask".into(), true, r#"{"version":"3.0"}"#.into()),
                ("raw".into(), false, "not json".into()),
            ],
        };
        let s = status_json(&[("k8s.pod.name".into(), "p".into())], Some(&health));
        assert_eq!(
            s["identifyingAttributes"][0],
            json!({"key": "k8s.pod.name", "value": "p"})
        );
        assert_eq!(
            (s["healthy"].as_bool(), s["reason"].as_str()),
            (Some(true), Some("Healthy"))
        );
        assert_eq!(
            s["components"][0]["nonIdentifyingAttributes"],
            json!([{"key": "version", "value": "3.0"}])
        );
        assert_eq!(s["components"][1]["reason"], "instrumentation.details");
        let time = s["lastStatusTime"].as_str().expect("time");
        assert!(
            time.len() == 20 && time.ends_with('Z') && time.starts_with("20"),
            "{time}"
        );
    }
}
