//! The readiness registry: named conditions that the components flip, ready only when every
//! registered condition holds (`/readyz`).

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
};

/// The OpAMP listeners are bound and serving.
pub const OPAMP_LISTENER: &str = "opamp-listener";
/// The Kubernetes watches (Pods, InstrumentationConfigs) have listed once.
pub const WATCHES_SYNCED: &str = "kubernetes-watches-synced";
/// The eBPF programs (lifecycle and Go probes) are loaded.
pub const EBPF_LOADED: &str = "ebpf-programs-loaded";

type Conditions = Arc<Mutex<BTreeMap<String, bool>>>;

/// Shared, cheaply cloned set of conditions.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    conditions: Conditions,
}

/// One condition, held by the component that decides it.
#[derive(Clone, Debug)]
pub struct ReadinessCondition {
    name: String,
    conditions: Conditions,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `name`, not ready until set. Registering a name twice returns the same
    /// condition and keeps its state.
    pub fn condition(&self, name: &str) -> ReadinessCondition {
        lock(&self.conditions)
            .entry(name.to_owned())
            .or_insert(false);
        ReadinessCondition {
            name: name.to_owned(),
            conditions: Arc::clone(&self.conditions),
        }
    }

    /// Every condition and whether it holds, by name.
    pub fn check(&self) -> Vec<(String, bool)> {
        lock(&self.conditions)
            .iter()
            .map(|(name, ready)| (name.clone(), *ready))
            .collect()
    }

    pub fn is_ready(&self) -> bool {
        lock(&self.conditions).values().all(|ready| *ready)
    }
}

impl ReadinessCondition {
    pub fn set(&self, ready: bool) {
        lock(&self.conditions).insert(self.name.clone(), ready);
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

fn lock(conditions: &Conditions) -> std::sync::MutexGuard<'_, BTreeMap<String, bool>> {
    conditions.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_condition_holds() {
        let readiness = Readiness::new();
        assert!(readiness.is_ready(), "nothing registered");
        let opamp = readiness.condition(OPAMP_LISTENER);
        let ebpf = readiness.condition(EBPF_LOADED);
        assert!(!readiness.is_ready());
        opamp.set(true);
        assert!(!readiness.is_ready());
        ebpf.set(true);
        assert!(readiness.is_ready());
        // Registering again does not reset it.
        let again = readiness.condition(EBPF_LOADED);
        assert!(readiness.is_ready());
        again.set(false);
        assert_eq!(
            readiness.check(),
            [
                (EBPF_LOADED.to_owned(), false),
                (OPAMP_LISTENER.to_owned(), true)
            ]
        );
    }
}
