//! `InstrumentationConfig` (odigos.io/v1alpha1), the fields odiglet reads and the status it
//! writes, compatible with Odigos' schema (`api/odigos/v1alpha1/instrumentationconfig_types.go`).
//! Unknown fields are tolerated everywhere; inside a container's config and the status entries
//! they are kept, so a container config is served to agents whole and a status merge never
//! drops what other controllers wrote.

use std::borrow::Cow;

use k8s_openapi::{NamespaceResourceScope, apimachinery::pkg::apis::meta::v1::ObjectMeta};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub const GROUP: &str = "odigos.io";
pub const VERSION: &str = "v1alpha1";
/// The condition odiglet owns in `status.conditions`.
pub const RUNTIME_DETECTION: &str = "RuntimeDetection";

/// One workload's instrumentation, named `<lowercase kind>-<workload>`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InstrumentationConfig {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: InstrumentationConfigSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<InstrumentationConfigStatus>,
}

impl kube::Resource for InstrumentationConfig {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "InstrumentationConfig".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "instrumentationconfigs".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl InstrumentationConfig {
    /// The config entry of a container, if the workload lists it.
    pub fn container(&self, name: &str) -> Option<&ContainerAgentConfig> {
        self.spec
            .containers
            .iter()
            .find(|c| c.container_name == name)
    }

    /// `status.runtimeDetailsByContainer`, empty when there is no status yet.
    pub fn runtime_details(&self) -> &[RuntimeDetailsByContainer] {
        self.status
            .as_ref()
            .map_or(&[], |s| s.runtime_details_by_container.as_slice())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct InstrumentationConfigSpec {
    /// `service.name` of the workload's telemetry; empty means the workload name.
    pub service_name: String,
    /// Whether Odigos injects agents into this workload's pods at all.
    pub agent_injection_enabled: bool,
    pub containers: Vec<ContainerAgentConfig>,
}

/// `spec.containers[]`: how one container is instrumented. Served to native agents as their
/// `container_config` file, unknown fields included.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerAgentConfig {
    #[serde(default)]
    pub container_name: String,
    #[serde(default)]
    pub agent_enabled: bool,
    /// The Odigos distro (`golang-community`, `python-community`, ...); none: not instrumented.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otel_distro_name: Option<String>,
    /// Present (even `{}`) means traces are collected; absent or null means they are off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traces: Option<Value>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct InstrumentationConfigStatus {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub runtime_details_by_container: Vec<RuntimeDetailsByContainer>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// `status.runtimeDetailsByContainer[]`: what inspection found in one container.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeDetailsByContainer {
    #[serde(default)]
    pub container_name: String,
    /// Odigos' `ProgrammingLanguage` word (`go`, `java`, ..., `unknown`).
    #[serde(default)]
    pub language: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub runtime_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_vars: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_agent: Option<OtherAgent>,
    /// `glibc` or `musl`.
    #[serde(default, rename = "libCType", skip_serializing_if = "Option::is_none")]
    pub libc_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure_execution_mode: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cri_error_message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from_container_runtime: Vec<EnvVar>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherAgent {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

/// `metav1.Condition`, with times kept as the API server's RFC 3339 text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub last_transition_time: String,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn reads_odigos_objects_and_keeps_unknown_fields() {
        let object = json!({
            "apiVersion": "odigos.io/v1alpha1", "kind": "InstrumentationConfig",
            "metadata": {"name": "deployment-web", "namespace": "shop", "generation": 3},
            "spec": {
                "serviceName": "web", "agentInjectionEnabled": true, "agentsMetaHash": "abc",
                "containers": [{
                    "containerName": "app", "agentEnabled": true,
                    "otelDistroName": "golang-community",
                    "traces": {"headSampling": {"fallbackFraction": 1.0}},
                    "distroParams": {"libc": "glibc"}
                }]
            },
            "status": {
                "workloadRolloutHash": "h",
                "runtimeDetailsByContainer": [{
                    "containerName": "app", "language": "go", "runtimeVersion": "1.22.4",
                    "libCType": "glibc", "secureExecutionMode": false,
                    "otherAgent": {"name": "Datadog Agent"}, "runtimeUpdateState": "Succeeded"
                }],
                "conditions": [{"type": "RuntimeDetection", "status": "True",
                    "lastTransitionTime": "2026-01-01T00:00:00Z", "reason": "DetectedSuccessfully",
                    "message": "ok"}]
            }
        });
        let ic: InstrumentationConfig = serde_json::from_value(object).expect("decodes");
        let app = ic.container("app").expect("container");
        assert_eq!(app.otel_distro_name.as_deref(), Some("golang-community"));
        assert_eq!(app.other["distroParams"], json!({"libc": "glibc"}));
        let served = serde_json::to_value(app).expect("encodes");
        assert_eq!(served["traces"]["headSampling"]["fallbackFraction"], 1.0);
        assert_eq!(served["distroParams"]["libc"], "glibc");
        let details = &ic.runtime_details()[0];
        assert_eq!(details.libc_type.as_deref(), Some("glibc"));
        assert_eq!(details.other["runtimeUpdateState"], "Succeeded");
        let status = serde_json::to_value(ic.status.as_ref().expect("status")).expect("encodes");
        assert_eq!(status["workloadRolloutHash"], "h");
        assert_eq!(status["runtimeDetailsByContainer"][0]["libCType"], "glibc");
        assert_eq!(status["conditions"][0]["type"], "RuntimeDetection");
    }

    #[test]
    fn tolerates_sparse_objects() {
        let ic: InstrumentationConfig = serde_json::from_value(
            json!({"metadata": {"name": "x"}, "spec": {"containers": [{}]}}),
        )
        .expect("decodes");
        assert!(!ic.spec.containers[0].agent_enabled);
        assert!(ic.runtime_details().is_empty());
        let cc = serde_json::to_value(&ic.spec.containers[0]).expect("encodes");
        assert_eq!(cc, json!({"containerName": "", "agentEnabled": false}));
    }
}
