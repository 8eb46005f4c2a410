//! The remote configuration served to agents: named JSON "files" `SDK` (2024 agents),
//! `InstrumentationLibraries` and `container_config` (current agents), a deterministic hash,
//! and the standalone config file that feeds them (reloaded when it changes).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, SystemTime},
};

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::{
    identity::AgentIdentity,
    wire::{AgentConfigFile, AgentConfigMap, AgentRemoteConfig},
};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the OpAMP config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the OpAMP config file {path} is not valid JSON for this schema")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// What the operator configures (standalone mode: a JSON file; cluster mode: built from
/// InstrumentationConfigs). Every field is optional.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ServedConfig {
    /// `container_config` for containers without an override.
    pub default_container_config: Option<Value>,
    /// Body of `InstrumentationLibraries` (default `[]`).
    pub instrumentation_libraries: Option<Value>,
    pub signals: Signals,
    pub overrides: Vec<Override>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Signals {
    pub traces: bool,
    pub metrics: bool,
    pub logs: bool,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            traces: true,
            metrics: false,
            logs: false,
        }
    }
}

/// Settings for the containers matching `namespace` and, when given, `pod` and `container`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Override {
    pub namespace: String,
    pub pod: Option<String>,
    pub container: Option<String>,
    pub service_name: Option<String>,
    pub container_config: Option<Value>,
    /// The owning workload's kind as Odigos spells it (`Deployment`, `Rollout`, ...) and name;
    /// without them the workload is guessed from the pod name.
    pub workload_kind: Option<String>,
    pub workload_name: Option<String>,
}

/// The resource attribute naming a workload of this kind (`configresolvers`).
pub fn workload_key(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Deployment" => "k8s.deployment.name",
        "StatefulSet" => "k8s.statefulset.name",
        "DaemonSet" => "k8s.daemonset.name",
        "CronJob" => "k8s.cronjob.name",
        "Job" => "k8s.job.name",
        "Rollout" => "k8s.argoproj.rollout.name",
        _ => return None,
    })
}

impl ServedConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// The first override for this agent's container.
    pub fn matching(&self, id: &AgentIdentity) -> Option<&Override> {
        self.overrides.iter().find(|o| {
            o.namespace == id.namespace
                && o.pod.as_ref().is_none_or(|p| *p == id.pod)
                && o.container.as_ref().is_none_or(|c| *c == id.container)
        })
    }
}

/// The current config and a generation that bumps on every change, so each agent rebuilds its
/// files lazily on its next poll instead of the store walking all agents.
pub struct ConfigStore {
    current: RwLock<(u64, Arc<ServedConfig>)>,
}

impl ConfigStore {
    pub fn new(config: ServedConfig) -> Self {
        Self {
            current: RwLock::new((1, Arc::new(config))),
        }
    }

    pub fn get(&self) -> (u64, Arc<ServedConfig>) {
        let guard = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (guard.0, guard.1.clone())
    }

    /// Replaces the config; returns whether it changed.
    pub fn set(&self, config: ServedConfig) -> bool {
        let mut guard = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *guard.1 == config {
            return false;
        }
        *guard = (guard.0 + 1, Arc::new(config));
        true
    }

    /// Polls `path` every `every` and loads it when its modification time or size changes.
    /// A broken file is logged and the last good config stays.
    pub async fn watch_file(self: Arc<Self>, path: PathBuf, every: Duration) {
        let stamp = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .map(|m| (m.modified().ok(), m.len()))
        };
        let mut last: Option<(Option<SystemTime>, u64)> = stamp(&path);
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = stamp(&path);
            if now == last {
                continue;
            }
            last = now;
            match ServedConfig::load(&path) {
                Ok(config) => {
                    if self.set(config) {
                        info!(path = %path.display(), "OpAMP config file changed; agents get it on their next poll");
                    }
                }
                Err(error) => {
                    warn!(error = %anyhow::Error::new(error), "keeping the previous OpAMP config")
                }
            }
        }
    }
}

/// The workload attribute key and name, inferred from the pod name as the owner chain does
/// (ReplicaSet `<deployment>-<hash>` → Deployment, `<sts>-<ordinal>` → StatefulSet).
pub fn workload_of(pod: &str) -> (&'static str, &str) {
    let alnum = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let parts: Vec<&str> = pod.rsplitn(3, '-').collect();
    match parts.as_slice() {
        [suffix, hash, name]
            if suffix.len() == 5
                && alnum(suffix)
                && (5..=10).contains(&hash.len())
                && alnum(hash) =>
        {
            ("k8s.deployment.name", name)
        }
        [ordinal, ..] if !ordinal.is_empty() && ordinal.bytes().all(|b| b.is_ascii_digit()) => (
            "k8s.statefulset.name",
            &pod[..pod.len() - ordinal.len() - 1],
        ),
        _ => ("k8s.pod.name", pod),
    }
}

/// Builds the files for one agent and their hash.
pub fn build(config: &ServedConfig, id: &AgentIdentity, node_name: &str) -> AgentRemoteConfig {
    let matched = config.matching(id);
    let known = matched.and_then(|o| {
        let key = workload_key(o.workload_kind.as_deref()?)?;
        Some((key, o.workload_name.as_deref()?))
    });
    let (workload_key, workload) = known.unwrap_or_else(|| workload_of(&id.pod));
    let service_name = matched
        .and_then(|o| o.service_name.clone())
        .unwrap_or_else(|| workload.to_owned());
    let mut resource = BTreeMap::new();
    resource.insert("k8s.node.name", node_name);
    resource.insert("k8s.namespace.name", &id.namespace);
    resource.insert("k8s.pod.name", &id.pod);
    resource.insert("k8s.container.name", &id.container);
    resource.insert(workload_key, workload);
    resource.insert("service.name", &service_name);
    let signal = |on: bool| json!({"enabled": on, "defaultEnabledValue": on});
    let sdk = json!({
        "remoteResourceAttributes": resource.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
        "traceSignal": signal(config.signals.traces),
        "metricsSignal": signal(config.signals.metrics),
        "logsSignal": signal(config.signals.logs),
    });
    let mut container = matched
        .and_then(|o| o.container_config.clone())
        .or_else(|| config.default_container_config.clone())
        .unwrap_or_else(|| json!({"agentEnabled": true, "traces": {}}));
    if let Value::Object(map) = &mut container {
        map.insert("containerName".into(), Value::String(id.container.clone()));
    }
    let libraries = config
        .instrumentation_libraries
        .clone()
        .unwrap_or_else(|| json!([]));
    let files = [
        ("SDK", sdk),
        ("InstrumentationLibraries", libraries),
        ("container_config", container),
    ];
    let config_map: std::collections::HashMap<String, AgentConfigFile> = files
        .into_iter()
        .map(|(name, body)| {
            let file = AgentConfigFile {
                // serde_json maps are sorted (no preserve_order), so bodies are deterministic.
                body: body.to_string().into_bytes(),
                content_type: "application/json".into(),
            };
            (name.to_owned(), file)
        })
        .collect();
    let config_hash = hash(&config_map);
    AgentRemoteConfig {
        config: Some(AgentConfigMap { config_map }),
        config_hash,
    }
}

/// SHA-256 over the files sorted by name, each as length-prefixed name, content type, body.
pub fn hash(files: &std::collections::HashMap<String, AgentConfigFile>) -> Vec<u8> {
    let mut sorted: Vec<_> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut digest = Sha256::new();
    for (name, file) in sorted {
        for part in [name.as_bytes(), file.content_type.as_bytes(), &file.body] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part);
        }
    }
    digest.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opamp::identity::IdentitySource;

    fn id(pod: &str) -> AgentIdentity {
        AgentIdentity {
            namespace: "ns".into(),
            pod: pod.into(),
            container: "app".into(),
            pid: 1,
            language: "python".into(),
            source: IdentitySource::Attributes,
        }
    }

    #[test]
    fn workloads_from_pod_names() {
        assert_eq!(
            workload_of("web-7d4b9c8f6-x2k4z"),
            ("k8s.deployment.name", "web")
        );
        assert_eq!(workload_of("db-0"), ("k8s.statefulset.name", "db"));
        assert_eq!(workload_of("standalone"), ("k8s.pod.name", "standalone"));
    }

    #[test]
    fn hash_is_deterministic_and_follows_content() {
        let config = ServedConfig::default();
        let a = build(&config, &id("web-7d4b9c8f6-x2k4z"), "node-1");
        let b = build(&config, &id("web-7d4b9c8f6-x2k4z"), "node-1");
        assert_eq!(a.config_hash, b.config_hash);
        assert_eq!(a.config_hash.len(), 32);
        let c = build(&config, &id("web-7d4b9c8f6-x2k4z"), "node-2");
        assert_ne!(a.config_hash, c.config_hash);
        let sdk = &a.config.as_ref().expect("map").config_map["SDK"];
        let sdk: Value = serde_json::from_slice(&sdk.body).expect("json");
        assert!(
            sdk["remoteResourceAttributes"]
                .to_string()
                .contains("k8s.deployment.name")
        );
    }

    #[test]
    fn overrides_and_store_generation() {
        let store = ConfigStore::new(ServedConfig::default());
        assert!(!store.set(ServedConfig::default()));
        let changed: ServedConfig = serde_json::from_value(json!({
            "overrides": [{"namespace": "ns", "serviceName": "svc", "containerConfig": {"traces": null}}]
        }))
        .expect("schema");
        assert!(store.set(changed));
        let (generation, config) = store.get();
        assert_eq!(generation, 2);
        let built = build(&config, &id("p"), "n");
        let files = &built.config.expect("map").config_map;
        let cc: Value = serde_json::from_slice(&files["container_config"].body).expect("json");
        assert_eq!(cc, json!({"traces": null, "containerName": "app"}));
        assert!(String::from_utf8_lossy(&files["SDK"].body).contains("\"svc\""));
    }
}
