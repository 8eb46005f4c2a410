//! Who an agent is: (namespace, pod, container, pid, language), from its identifying
//! attributes (current Odigos agents) or from the `X-Odigos-DeviceId` header resolved through
//! the kubelet pod-resources API (2024 agents).
//!
//! The pod-resources client lives elsewhere; this module only declares the narrow
//! [`DeviceOwnerLookup`] it needs and puts a cache in front of it (refreshed on a miss).

use std::{collections::HashMap, future::Future, pin::Pin, sync::Mutex, time::Duration};

use tracing::{debug, warn};

use super::wire::AgentDescription;

/// The container a device id was allocated to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceOwner {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// A boxed future, so the trait stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Resolves a device id to the container it was allocated to (the kubelet pod-resources
/// `List`). `Ok(None)`: the kubelet does not know the id. Called only on a cache miss.
pub trait DeviceOwnerLookup: Send + Sync + 'static {
    fn owner<'a>(
        &'a self,
        device_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<DeviceOwner>, String>>;
}

/// No pod-resources access (tests, or a node without the device plugin).
pub struct NoDeviceLookup;

impl DeviceOwnerLookup for NoDeviceLookup {
    fn owner<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Option<DeviceOwner>, String>> {
        Box::pin(async { Ok(None) })
    }
}

/// Caches device id → owner. Device ids are allocated once per container, so a hit never goes
/// stale while the container lives; a miss asks the lookup again, bounded in time so the
/// agent's first reply is never late.
pub struct DeviceOwnerCache {
    lookup: Box<dyn DeviceOwnerLookup>,
    cache: Mutex<HashMap<String, DeviceOwner>>,
    timeout: Duration,
}

/// Cap on cached device ids (a node has at most a few hundred containers).
const MAX_CACHED_DEVICES: usize = 4096;

impl DeviceOwnerCache {
    pub fn new(lookup: Box<dyn DeviceOwnerLookup>, timeout: Duration) -> Self {
        Self {
            lookup,
            cache: Mutex::new(HashMap::new()),
            timeout,
        }
    }

    pub async fn resolve(&self, device_id: &str) -> Option<DeviceOwner> {
        if let Some(hit) = self.lock().get(device_id) {
            return Some(hit.clone());
        }
        debug!(device_id, "device id not cached; asking the kubelet");
        match tokio::time::timeout(self.timeout, self.lookup.owner(device_id)).await {
            Ok(Ok(Some(owner))) => {
                let mut cache = self.lock();
                if cache.len() >= MAX_CACHED_DEVICES {
                    cache.clear();
                }
                cache.insert(device_id.to_owned(), owner.clone());
                Some(owner)
            }
            Ok(Ok(None)) => None,
            Ok(Err(error)) => {
                warn!(device_id, %error, "pod-resources lookup failed");
                None
            }
            Err(_) => {
                warn!(device_id, timeout = ?self.timeout, "pod-resources lookup timed out");
                None
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, DeviceOwner>> {
        // A panic while holding the lock cannot leave the map inconsistent: take it anyway.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How the agent's pod was found, as reported by the status API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdentitySource {
    Attributes,
    DeviceId,
}

/// An identified agent process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentIdentity {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// `process.vpid` (or `process.pid`); 0 when the agent sends neither.
    pub pid: i64,
    pub language: String,
    pub source: IdentitySource,
}

/// The pod fields from attributes, if all three are present and non-empty.
pub fn from_attributes(description: &AgentDescription) -> Option<DeviceOwner> {
    let get = |key| {
        description
            .attribute(key)
            .map(|v| v.to_text())
            .filter(|s| !s.is_empty() && s.len() <= 253)
    };
    Some(DeviceOwner {
        namespace: get("k8s.namespace.name")?,
        pod: get("k8s.pod.name")?,
        container: get("k8s.container.name")?,
    })
}

/// Builds the identity: attributes win (current agents); the device id is the fallback.
pub fn identity(
    description: &AgentDescription,
    device_owner: Option<DeviceOwner>,
) -> Option<AgentIdentity> {
    let (owner, source) = match from_attributes(description) {
        Some(owner) => (owner, IdentitySource::Attributes),
        None => (device_owner?, IdentitySource::DeviceId),
    };
    let pid = description
        .attribute("process.vpid")
        .or_else(|| description.attribute("process.pid"))
        .and_then(|v| v.to_int())
        .unwrap_or(0);
    let language = description
        .attribute("telemetry.sdk.language")
        .map(|v| v.to_text())
        .unwrap_or_default();
    Some(AgentIdentity {
        namespace: owner.namespace,
        pod: owner.pod,
        container: owner.container,
        pid,
        language,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opamp::wire::{AnyValue, KeyValue, any_value::Value};

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
        }
    }

    #[test]
    fn attributes_win_over_device_id() {
        let mut d = AgentDescription {
            identifying_attributes: vec![
                kv("k8s.namespace.name", Value::StringValue("ns".into())),
                kv("k8s.pod.name", Value::StringValue("p".into())),
                kv("process.vpid", Value::IntValue(7)),
                kv(
                    "telemetry.sdk.language",
                    Value::StringValue("python".into()),
                ),
            ],
            ..Default::default()
        };
        let dev = DeviceOwner {
            namespace: "d".into(),
            pod: "dp".into(),
            container: "dc".into(),
        };
        let id = identity(&d, Some(dev.clone())).expect("device id fallback");
        assert_eq!(
            (id.source, id.pod.as_str(), id.pid),
            (IdentitySource::DeviceId, "dp", 7)
        );
        d.identifying_attributes
            .push(kv("k8s.container.name", Value::StringValue("c".into())));
        let id = identity(&d, Some(dev)).expect("attributes");
        assert_eq!(
            (id.source, id.pod.as_str()),
            (IdentitySource::Attributes, "p")
        );
        assert!(identity(&AgentDescription::default(), None).is_none());
    }

    struct Counting(std::sync::atomic::AtomicUsize);
    impl DeviceOwnerLookup for Counting {
        fn owner<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<DeviceOwner>, String>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let found = (id == "dev-1").then(|| DeviceOwner {
                namespace: "ns".into(),
                pod: "p".into(),
                container: "c".into(),
            });
            Box::pin(async move { Ok(found) })
        }
    }

    #[tokio::test]
    async fn cache_hits_and_refreshes_on_miss() {
        let lookup = std::sync::Arc::new(Counting(Default::default()));
        struct Shared(std::sync::Arc<Counting>);
        impl DeviceOwnerLookup for Shared {
            fn owner<'a>(
                &'a self,
                id: &'a str,
            ) -> BoxFuture<'a, Result<Option<DeviceOwner>, String>> {
                self.0.owner(id)
            }
        }
        let cache = DeviceOwnerCache::new(Box::new(Shared(lookup.clone())), Duration::from_secs(1));
        assert!(cache.resolve("dev-1").await.is_some());
        assert!(cache.resolve("dev-1").await.is_some());
        assert!(cache.resolve("dev-2").await.is_none());
        assert!(cache.resolve("dev-2").await.is_none());
        assert_eq!(lookup.0.load(std::sync::atomic::Ordering::SeqCst), 3);
    }
}
