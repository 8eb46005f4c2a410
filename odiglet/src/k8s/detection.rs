//! Runtime detection in cluster mode: inspect the processes of a workload's containers on this
//! node and record the result in its InstrumentationConfig's status (odigos.md §4.1, §4.6).
//!
//! Jobs arrive through a bounded queue (the triggers are in `controller`) and one worker runs
//! them: inspection on the blocking pool (it reads `/proc` and ELF files), then a JSON merge
//! patch of the status subresource carrying the `resourceVersion` read, so a concurrent writer
//! makes it fail with 409 and the worker re-reads, re-merges and retries. Before the write,
//! the image's own values of the variables Odigos' agents append to are asked of the container
//! runtime (CRI); when that fails and the process shows such a variable, the reason is
//! recorded instead (`criErrorMessage`), as Odigos does.

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{
    crd::{EnvVar, InstrumentationConfig, RuntimeDetailsByContainer},
    runtime_details::{self, merge, overall_reason},
    targets::container_id,
};
use crate::inspect::{
    Inspector,
    cgroup::{CgroupConfig, ContainerRef, QosClass},
    container::DetectionReason,
    cri::{Cri, CriSocket},
};

/// Pending detection jobs; beyond this a trigger is dropped with a warning (the next pod
/// readiness change or restart scan brings it back).
pub const QUEUE_CAPACITY: usize = 256;
/// Status write attempts: 100 ms doubling, as Odigos' start-up scan retries.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// What inspection needs of a pod: where its containers' cgroups are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSnapshot {
    pub name: String,
    pub uid: String,
    pub qos: QosClass,
    /// (container name, runtime container id) of the containers that have started.
    pub containers: Vec<(String, String)>,
}

impl PodSnapshot {
    pub fn of(pod: &Pod) -> Option<Self> {
        let qos = match pod.status.as_ref()?.qos_class.as_deref() {
            Some("Guaranteed") => QosClass::Guaranteed,
            Some("Burstable") => QosClass::Burstable,
            _ => QosClass::BestEffort,
        };
        let containers = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .filter_map(|c| Some((c.name.clone(), container_id(pod, &c.name)?)))
            .collect();
        Some(Self {
            name: pod.metadata.name.clone()?,
            uid: pod.metadata.uid.clone()?,
            qos,
            containers,
        })
    }
}

/// Inspect these pods of one workload and record the result in its config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectionJob {
    pub namespace: String,
    /// The InstrumentationConfig's name.
    pub config: String,
    pub pods: Vec<PodSnapshot>,
}

/// One inspected container: its status entry and the runtime id it was found under.
#[derive(Clone, Debug, PartialEq)]
pub struct InspectedContainer {
    pub details: RuntimeDetailsByContainer,
    pub container_id: String,
}

/// Inspects a workload's pods: per container, the first pod where processes were found
/// decides. Containers without a live process are left out (nothing to record yet).
pub fn inspect_pods(
    inspector: &Inspector,
    cgroups: &CgroupConfig,
    pods: &[PodSnapshot],
) -> (Vec<InspectedContainer>, DetectionReason) {
    let mut details: Vec<InspectedContainer> = Vec::new();
    let mut reasons = Vec::new();
    for pod in pods {
        for (name, id) in &pod.containers {
            if details.iter().any(|d| d.details.container_name == *name) {
                continue;
            }
            let container = ContainerRef {
                pod_uid: pod.uid.clone(),
                qos: pod.qos,
                container_id: id.clone(),
                container_name: name.clone(),
            };
            match inspector.inspect_container(cgroups, &container) {
                Ok((runtime, _)) if !runtime.pids.is_empty() => {
                    reasons.push(runtime.reason);
                    details.push(InspectedContainer {
                        details: runtime_details::from_container(name, &runtime),
                        container_id: id.clone(),
                    });
                }
                Ok(_) => debug!(pod = %pod.name, container = %name, "no processes found yet"),
                Err(error) => {
                    warn!(pod = %pod.name, container = %name, error = %error, "cannot find the container's processes")
                }
            }
        }
    }
    (details, overall_reason(reasons))
}

/// What a status write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The status was written.
    Written,
    /// Nothing new to record.
    Unchanged,
    /// The config no longer exists.
    Gone,
}

/// Writes runtime details through the status subresource.
#[derive(Clone)]
pub struct StatusWriter {
    client: Client,
}

impl StatusWriter {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Merges `fresh` into the config's status and writes it when it changed, retrying on
    /// conflict with a fresh read each time.
    pub async fn write(
        &self,
        namespace: &str,
        name: &str,
        fresh: &[RuntimeDetailsByContainer],
        reason: DetectionReason,
    ) -> Result<WriteOutcome, kube::Error> {
        let api: Api<InstrumentationConfig> = Api::namespaced(self.client.clone(), namespace);
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let Some(current) = api.get_opt(name).await? else {
                return Ok(WriteOutcome::Gone);
            };
            let Some(details) = merge(current.runtime_details(), fresh) else {
                return Ok(WriteOutcome::Unchanged);
            };
            let mut conditions = current
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            runtime_details::set_detection_condition(
                &mut conditions,
                reason,
                current.metadata.generation,
                &crate::time::now_rfc3339(),
            );
            // Lists are replaced whole by a merge patch; the resourceVersion makes it
            // conditional on the object we merged into.
            let patch = json!({
                "metadata": {"resourceVersion": current.metadata.resource_version},
                "status": {"runtimeDetailsByContainer": details, "conditions": conditions},
            });
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(WriteOutcome::Written),
                Err(kube::Error::Api(status)) if status.code == 409 && attempt < ATTEMPTS => {
                    debug!(%namespace, %name, attempt, "status write conflicted; re-reading");
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Sends jobs to the detection worker without ever waiting.
#[derive(Clone)]
pub struct DetectionQueue {
    tx: mpsc::Sender<DetectionJob>,
}

impl DetectionQueue {
    /// Queues a job; a full queue drops it with a warning.
    pub fn push(&self, job: DetectionJob) {
        if job.pods.is_empty() {
            return;
        }
        if let Err(error) = self.tx.try_send(job) {
            warn!(%error, "runtime detection queue full or closed; dropping a job");
        }
    }
}

/// The variables whose image value is recorded for a language: `LD_PRELOAD` and the one its
/// Odigos agent appends to (`common/envOverwrite`).
fn image_env_names(language: &str) -> &'static [&'static str] {
    match language {
        "javascript" => &["LD_PRELOAD", "NODE_OPTIONS"],
        "python" => &["LD_PRELOAD", "PYTHONPATH"],
        "java" => &["LD_PRELOAD", "JAVA_TOOL_OPTIONS"],
        _ => &["LD_PRELOAD"],
    }
}

/// Fills `envFromContainerRuntime` from the image, or `criErrorMessage` when the runtime
/// cannot say and the process has one of the variables (an image value may hide behind it).
async fn add_image_env(cri: Result<&Cri, &str>, inspected: &mut InspectedContainer) {
    let details = &mut inspected.details;
    let names = image_env_names(&details.language);
    let image_env = match cri {
        Ok(cri) => cri
            .image_env(&inspected.container_id)
            .await
            .map_err(|error| format!("{:#}", anyhow::Error::new(error))),
        Err(error) => Err(error.to_owned()),
    };
    match image_env {
        Ok(env) => {
            details.env_from_container_runtime = env
                .into_iter()
                .filter(|(name, _)| names.contains(&name.as_str()))
                .map(|(name, value)| EnvVar { name, value })
                .collect();
        }
        Err(error) => {
            let shown = details
                .env_vars
                .iter()
                .any(|e| names.contains(&e.name.as_str()) && !e.value.is_empty());
            if shown {
                warn!(container = %details.container_name, %error, "cannot read the image's environment");
                details.cri_error_message = Some(error);
            } else {
                debug!(container = %details.container_name, %error, "no image environment (not needed)");
            }
        }
    }
}

/// Everything the worker needs.
pub struct DetectionWorker {
    pub inspector: Inspector,
    pub cgroups: CgroupConfig,
    pub writer: StatusWriter,
    /// The container runtime's CRI socket (image env).
    pub cri: CriSocket,
}

impl DetectionWorker {
    /// Starts the worker; it ends when every [`DetectionQueue`] is dropped.
    pub fn start(self, capacity: usize) -> (DetectionQueue, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity);
        let task = tokio::spawn(self.run(rx));
        (DetectionQueue { tx }, task)
    }

    async fn run(self, mut jobs: mpsc::Receiver<DetectionJob>) {
        let this = Arc::new(self);
        while let Some(job) = jobs.recv().await {
            let worker = this.clone();
            let pods = job.pods.clone();
            let inspected = tokio::task::spawn_blocking(move || {
                inspect_pods(&worker.inspector, &worker.cgroups, &pods)
            })
            .await;
            let Ok((mut inspected, reason)) = inspected else {
                warn!(namespace = %job.namespace, config = %job.config, "inspection task failed");
                continue;
            };
            if inspected.is_empty() {
                debug!(namespace = %job.namespace, config = %job.config, "no container processes to record");
                continue;
            }
            let cri = Cri::connect(&this.cri)
                .await
                .map_err(|error| format!("{:#}", anyhow::Error::new(error)));
            for container in &mut inspected {
                add_image_env(cri.as_ref().map_err(String::as_str), container).await;
            }
            let details: Vec<RuntimeDetailsByContainer> =
                inspected.into_iter().map(|c| c.details).collect();
            match this
                .writer
                .write(&job.namespace, &job.config, &details, reason)
                .await
            {
                Ok(WriteOutcome::Written) => {
                    info!(namespace = %job.namespace, config = %job.config,
                    containers = details.len(), "runtime details recorded")
                }
                Ok(outcome) => {
                    debug!(namespace = %job.namespace, config = %job.config, ?outcome, "runtime details not written")
                }
                Err(error) => warn!(namespace = %job.namespace, config = %job.config,
                    error = %anyhow::Error::new(error), "cannot write runtime details"),
            }
        }
    }
}
