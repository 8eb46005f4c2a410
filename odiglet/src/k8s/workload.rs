//! Which workload owns a pod, decided by owner-reference *names* exactly as Odigos does it
//! (odigos.md §3.2, `k8sutils/pkg/workload/ownerreference.go`): no API calls, so a pod maps to
//! its workload from the pod alone. The InstrumentationConfig of a workload is named
//! `<lowercase kind>-<name>`; `InstrumentationInstance` labels use the same string.

use std::fmt;

use k8s_openapi::api::core::v1::Pod;

use crate::pipeline::{Workload, WorkloadKind as ResourceKind};

/// Pod label Argo Rollouts puts on the pods of its ReplicaSets.
pub const ARGO_ROLLOUT_LABEL: &str = "rollouts-pod-template-hash";
/// Annotation the kubelet puts on mirror pods of static pods.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The workload kinds Odigos instruments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    DaemonSet,
    StatefulSet,
    CronJob,
    Job,
    DeploymentConfig,
    /// Argo Rollout (`argoproj.io/v1alpha1`).
    Rollout,
    StaticPod,
}

impl WorkloadKind {
    /// The kind as Odigos spells it (`k8sconsts.WorkloadKind`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::DaemonSet => "DaemonSet",
            Self::StatefulSet => "StatefulSet",
            Self::CronJob => "CronJob",
            Self::Job => "Job",
            Self::DeploymentConfig => "DeploymentConfig",
            Self::Rollout => "Rollout",
            Self::StaticPod => "StaticPod",
        }
    }

    /// An owner kind used as-is (`WorkloadKindFromString`, case-insensitive as in Odigos).
    pub fn from_owner_kind(kind: &str) -> Option<Self> {
        [
            Self::Deployment,
            Self::DaemonSet,
            Self::StatefulSet,
            Self::CronJob,
            Self::Job,
            Self::DeploymentConfig,
            Self::Rollout,
            Self::StaticPod,
        ]
        .into_iter()
        .find(|k| k.as_str().eq_ignore_ascii_case(kind))
    }

    /// The kind carried in span resources (`k8s.<kind>.name`), for the kinds that have one.
    pub fn resource_kind(self) -> Option<ResourceKind> {
        match self {
            Self::Deployment => Some(ResourceKind::Deployment),
            Self::DaemonSet => Some(ResourceKind::DaemonSet),
            Self::StatefulSet => Some(ResourceKind::StatefulSet),
            Self::CronJob => Some(ResourceKind::CronJob),
            Self::Job => Some(ResourceKind::Job),
            Self::DeploymentConfig | Self::Rollout | Self::StaticPod => None,
        }
    }
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The workload a pod belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodWorkload {
    pub namespace: String,
    pub kind: WorkloadKind,
    pub name: String,
}

impl PodWorkload {
    /// Name of the workload's InstrumentationConfig (and the `instrumented-app` label value).
    pub fn config_name(&self) -> String {
        config_name(self.kind, &self.name)
    }

    /// The workload as span resources carry it, when its kind has an attribute.
    pub fn resource(&self) -> Option<Workload> {
        Some(Workload {
            kind: self.kind.resource_kind()?,
            name: self.name.clone(),
        })
    }
}

/// `<lowercase kind>-<name>` (`CalculateWorkloadRuntimeObjectName`).
pub fn config_name(kind: WorkloadKind, name: &str) -> String {
    format!("{}-{name}", kind.as_str()).to_ascii_lowercase()
}

/// Why an owner reference does not name a workload.
#[derive(Debug, PartialEq, Eq)]
enum OwnerError {
    /// A kind Odigos does not instrument: the next owner reference is tried.
    Unsupported,
    /// A supported kind whose name cannot be resolved: the pod has no workload.
    Unresolvable,
}

/// Everything after the last `-` removed (ReplicaSet, Job and ReplicationController names
/// carry a generated suffix).
fn strip_suffix(name: &str) -> Result<&str, OwnerError> {
    name.rfind('-')
        .map(|at| &name[..at])
        .ok_or(OwnerError::Unresolvable)
}

fn from_owner(
    owner_kind: &str,
    owner_name: &str,
    pod: &Pod,
) -> Result<(WorkloadKind, String), OwnerError> {
    let with_suffix =
        |kind: WorkloadKind| strip_suffix(owner_name).map(|name| (kind, name.to_owned()));
    match owner_kind {
        "ReplicaSet" => {
            let rollout = pod
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(ARGO_ROLLOUT_LABEL));
            with_suffix(if rollout {
                WorkloadKind::Rollout
            } else {
                WorkloadKind::Deployment
            })
        }
        "ReplicationController" => with_suffix(WorkloadKind::DeploymentConfig),
        "Job" => with_suffix(WorkloadKind::CronJob),
        "Node" => {
            let mirror = pod
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION));
            let name = pod.metadata.name.clone().unwrap_or_default();
            if mirror && !name.is_empty() {
                Ok((WorkloadKind::StaticPod, name))
            } else {
                Err(OwnerError::Unresolvable)
            }
        }
        other => WorkloadKind::from_owner_kind(other)
            .map(|kind| (kind, owner_name.to_owned()))
            .ok_or(OwnerError::Unsupported),
    }
}

/// The pod's workload: the first owner reference of a supported kind decides; a pod without
/// one (bare pod, unsupported owner, unparsable name) has none.
pub fn pod_workload(pod: &Pod) -> Option<PodWorkload> {
    let namespace = pod.metadata.namespace.clone()?;
    for owner in pod.metadata.owner_references.iter().flatten() {
        match from_owner(&owner.kind, &owner.name, pod) {
            Ok((kind, name)) => {
                return Some(PodWorkload {
                    namespace,
                    kind,
                    name,
                });
            }
            Err(OwnerError::Unsupported) => continue,
            Err(OwnerError::Unresolvable) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    use super::*;

    fn pod(owners: &[(&str, &str)], labels: &[(&str, &str)], annotations: &[&str]) -> Pod {
        let owner_references = owners
            .iter()
            .map(|(kind, name)| OwnerReference {
                api_version: "apps/v1".into(),
                kind: (*kind).into(),
                name: (*name).into(),
                uid: "u".into(),
                controller: Some(true),
                block_owner_deletion: None,
            })
            .collect();
        Pod {
            metadata: ObjectMeta {
                name: Some("kube-apiserver-node-1".into()),
                namespace: Some("ns".into()),
                owner_references: Some(owner_references),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).into(), (*v).into()))
                        .collect(),
                ),
                annotations: Some(
                    annotations
                        .iter()
                        .map(|k| ((*k).into(), "x".into()))
                        .collect::<BTreeMap<_, _>>(),
                ),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn resolved(p: &Pod) -> Option<(WorkloadKind, String, String)> {
        pod_workload(p).map(|w| (w.kind, w.name.clone(), w.config_name()))
    }

    #[test]
    fn replicaset_is_a_deployment_or_a_rollout() {
        use WorkloadKind::*;
        assert_eq!(
            resolved(&pod(&[("ReplicaSet", "web-api-7d4b9c8f6")], &[], &[])),
            Some((Deployment, "web-api".into(), "deployment-web-api".into()))
        );
        assert_eq!(
            resolved(&pod(
                &[("ReplicaSet", "canary-6c5d")],
                &[(ARGO_ROLLOUT_LABEL, "6c5d")],
                &[]
            )),
            Some((Rollout, "canary".into(), "rollout-canary".into()))
        );
        // A bare ReplicaSet without a hyphen: Odigos gives up on the pod.
        assert_eq!(resolved(&pod(&[("ReplicaSet", "bare")], &[], &[])), None);
    }

    #[test]
    fn jobs_controllers_and_plain_kinds() {
        use WorkloadKind::*;
        assert_eq!(
            resolved(&pod(&[("Job", "nightly-report-29047520")], &[], &[])),
            Some((
                CronJob,
                "nightly-report".into(),
                "cronjob-nightly-report".into()
            ))
        );
        // Odigos strips the last segment of every Job name, even a hand-made one.
        assert_eq!(
            resolved(&pod(&[("Job", "db-migrate")], &[], &[])),
            Some((CronJob, "db".into(), "cronjob-db".into()))
        );
        assert_eq!(
            resolved(&pod(&[("ReplicationController", "legacy-3")], &[], &[])),
            Some((
                DeploymentConfig,
                "legacy".into(),
                "deploymentconfig-legacy".into()
            ))
        );
        assert_eq!(
            resolved(&pod(&[("StatefulSet", "db")], &[], &[])),
            Some((StatefulSet, "db".into(), "statefulset-db".into()))
        );
        assert_eq!(
            resolved(&pod(&[("DaemonSet", "Agent")], &[], &[])),
            Some((DaemonSet, "Agent".into(), "daemonset-agent".into()))
        );
    }

    #[test]
    fn static_pods_unsupported_owners_and_bare_pods() {
        use WorkloadKind::*;
        assert_eq!(
            resolved(&pod(&[("Node", "node-1")], &[], &[MIRROR_POD_ANNOTATION])),
            Some((
                StaticPod,
                "kube-apiserver-node-1".into(),
                "staticpod-kube-apiserver-node-1".into()
            ))
        );
        assert_eq!(resolved(&pod(&[("Node", "node-1")], &[], &[])), None);
        // An unsupported owner is skipped; the next one decides.
        assert_eq!(
            resolved(&pod(&[("Widget", "w"), ("DaemonSet", "ds")], &[], &[])),
            Some((DaemonSet, "ds".into(), "daemonset-ds".into()))
        );
        assert_eq!(resolved(&pod(&[("Widget", "w")], &[], &[])), None);
        assert_eq!(resolved(&pod(&[], &[], &[])), None);
    }

    #[test]
    fn resource_kinds() {
        let w = |kind| PodWorkload {
            namespace: "ns".into(),
            kind,
            name: "n".into(),
        };
        assert_eq!(
            w(WorkloadKind::CronJob).resource().map(|r| r.kind),
            Some(ResourceKind::CronJob)
        );
        assert_eq!(w(WorkloadKind::Rollout).resource(), None);
    }
}
