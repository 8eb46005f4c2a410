//! Agent health (Odigos' status words) and the InstrumentationInstance write queue: updates go
//! through a bounded channel to one worker, so the request path never waits on the API server.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{identity::BoxFuture, wire::ComponentHealth};

/// `ComponentHealth.status` words of Odigos agents; anything else is `Unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum HealthWord {
    Healthy,
    Starting,
    UnsupportedRuntimeVersion,
    ProcessTerminated,
    AgentFailure,
    NoConnectionToOpAMPServer,
    Unknown,
}

impl HealthWord {
    pub fn parse(status: &str) -> Self {
        match status {
            "Healthy" => Self::Healthy,
            "Starting" => Self::Starting,
            "UnsupportedRuntimeVersion" => Self::UnsupportedRuntimeVersion,
            "ProcessTerminated" => Self::ProcessTerminated,
            "AgentFailure" => Self::AgentFailure,
            "NoConnectionToOpAMPServer" => Self::NoConnectionToOpAMPServer,
            _ => Self::Unknown,
        }
    }
}

/// The last health an agent reported.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Health {
    pub healthy: bool,
    /// The raw `status` string (Odigos word, or free text such as "instrumentation libraries report").
    pub status: String,
    pub last_error: String,
    /// Per instrumentation library: (name, healthy, status — often JSON).
    pub components: Vec<(String, bool, String)>,
}

impl From<&ComponentHealth> for Health {
    fn from(h: &ComponentHealth) -> Self {
        let mut components: Vec<_> = h
            .component_health_map
            .iter()
            .map(|(name, c)| (name.clone(), c.healthy, c.status.clone()))
            .collect();
        components.sort();
        Self {
            healthy: h.healthy,
            status: h.status.clone(),
            last_error: h.last_error.clone(),
            components,
        }
    }
}

/// One InstrumentationInstance change (odigos.md §3.4). The object is `<pod>-<pid>`.
#[derive(Clone, Debug, PartialEq)]
pub enum InstanceTask {
    /// Create or update the instance and its status.
    Upsert {
        namespace: String,
        pod: String,
        container: String,
        pid: i64,
        identifying_attributes: Vec<(String, String)>,
        health: Option<Health>,
    },
    /// Delete it (healthy disconnect, or stale agent).
    Delete {
        namespace: String,
        pod: String,
        pid: i64,
    },
}

impl InstanceTask {
    pub fn object_name(pod: &str, pid: i64) -> String {
        format!("{pod}-{pid}")
    }
}

/// Applies tasks to the cluster. Standalone mode has none; cluster mode writes with kube.
pub trait InstanceSink: Send + Sync + 'static {
    fn apply(&self, task: InstanceTask) -> BoxFuture<'_, Result<(), String>>;
}

/// The producer side of the queue; cloning is cheap.
#[derive(Clone)]
pub struct InstanceQueue {
    tx: Option<mpsc::Sender<InstanceTask>>,
}

/// Odigos' queue size: beyond it, updates are dropped with a warning.
pub const QUEUE_CAPACITY: usize = 1000;

impl InstanceQueue {
    /// No writes (standalone mode).
    pub fn disabled() -> Self {
        Self { tx: None }
    }

    /// Starts the single worker that applies tasks in order.
    pub fn start(sink: Arc<dyn InstanceSink>, capacity: usize) -> Self {
        let (tx, mut rx) = mpsc::channel::<InstanceTask>(capacity);
        tokio::spawn(async move {
            while let Some(task) = rx.recv().await {
                if let Err(error) = sink.apply(task.clone()).await {
                    warn!(%error, ?task, "InstrumentationInstance write failed");
                }
            }
            debug!("InstrumentationInstance worker stopped");
        });
        Self { tx: Some(tx) }
    }

    pub fn push(&self, task: InstanceTask) {
        let Some(tx) = &self.tx else { return };
        if let Err(error) = tx.try_send(task) {
            warn!(%error, "InstrumentationInstance queue full or closed; update dropped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words() {
        assert_eq!(
            HealthWord::parse("NoConnectionToOpAMPServer"),
            HealthWord::NoConnectionToOpAMPServer
        );
        assert_eq!(HealthWord::parse("healthy"), HealthWord::Unknown);
    }

    struct Recorder(tokio::sync::mpsc::UnboundedSender<InstanceTask>);
    impl InstanceSink for Recorder {
        fn apply(&self, task: InstanceTask) -> BoxFuture<'_, Result<(), String>> {
            let sent = self.0.send(task).map_err(|e| e.to_string());
            Box::pin(async move { sent })
        }
    }

    #[tokio::test]
    async fn queue_applies_in_order() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let queue = InstanceQueue::start(Arc::new(Recorder(tx)), 4);
        for pid in 0..3 {
            queue.push(InstanceTask::Delete {
                namespace: "n".into(),
                pod: "p".into(),
                pid,
            });
        }
        for pid in 0..3 {
            assert_eq!(
                rx.recv().await,
                Some(InstanceTask::Delete {
                    namespace: "n".into(),
                    pod: "p".into(),
                    pid
                })
            );
        }
        InstanceQueue::disabled().push(InstanceTask::Delete {
            namespace: "n".into(),
            pod: "p".into(),
            pid: 9,
        });
    }
}
