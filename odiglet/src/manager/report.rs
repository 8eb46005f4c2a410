//! Each instrumented process as an `InstrumentationInstance` (odigos.md §5.4, reporter): name
//! `<pod>-<hostpid>`, `identifyingAttributes = [process.pid]`, one of Odigos' four reasons,
//! healthy only when loaded, and one component per library the binary links.

use serde::Serialize;

use super::{ContainerKey, libraries::LIBRARIES};
use crate::{
    instrument::skipped_as_absent,
    opamp::{InstanceTask, health::Health},
};

/// Odigos' eBPF reporter reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum InstanceReason {
    /// The binary could not be analysed (no offsets, nothing instrumentable).
    FailedToInitialize,
    /// The probes could not be attached.
    FailedToLoad,
    LoadedSuccessfully,
    /// The probes were attached but could not be kept in step (reconfiguration failed).
    FailedToRun,
}

impl InstanceReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FailedToInitialize => "FailedToInitialize",
            Self::FailedToLoad => "FailedToLoad",
            Self::LoadedSuccessfully => "LoadedSuccessfully",
            Self::FailedToRun => "FailedToRun",
        }
    }
}

/// What the report of one process is made from.
pub struct InstanceReport<'a> {
    pub key: &'a ContainerKey,
    pub pid: u32,
    pub reason: InstanceReason,
    pub error: Option<&'a str>,
    /// Libraries the binary supports, those switched on, and why the others are missing.
    pub available: u32,
    pub enabled: u32,
    pub skipped: &'a [String],
}

impl InstanceReport<'_> {
    pub fn upsert(&self) -> InstanceTask {
        let healthy = self.reason == InstanceReason::LoadedSuccessfully;
        let message = match self.error {
            Some(error) => error.to_owned(),
            None if healthy => format!(
                "Successfully loaded eBPF probes to pod: {} container: {}",
                self.key.pod, self.key.container
            ),
            None => String::new(),
        };
        let components = if healthy {
            self.components()
        } else {
            Vec::new()
        };
        InstanceTask::Upsert {
            namespace: self.key.namespace.clone(),
            pod: self.key.pod.clone(),
            container: self.key.container.clone(),
            pid: i64::from(self.pid),
            identifying_attributes: vec![("process.pid".to_owned(), self.pid.to_string())],
            health: Some(Health {
                healthy,
                status: self.reason.as_str().to_owned(),
                last_error: message,
                components,
            }),
        }
    }

    /// One component per library the binary links: enabled or disabled by config (JSON
    /// status), or present but not instrumentable (the reason as text, unhealthy). Libraries
    /// the binary does not contain are left out, as Odigos lists only what it instruments.
    fn components(&self) -> Vec<(String, bool, String)> {
        LIBRARIES
            .iter()
            .filter_map(|library| {
                let name = library.name.to_owned();
                if self.available & library.bit == 0 {
                    let why = self
                        .skipped
                        .iter()
                        .find(|s| s.starts_with(library.resolve_label))?;
                    return (!skipped_as_absent(why)).then(|| (name, false, why.clone()));
                }
                let enabled = self.enabled & library.bit != 0;
                Some((name, true, format!(r#"{{"enabled":"{enabled}"}}"#)))
            })
            .collect()
    }
}

/// The deletion of a process's instance (exit, removal, shutdown).
pub fn delete(key: &ContainerKey, pid: u32) -> InstanceTask {
    InstanceTask::Delete {
        namespace: key.namespace.clone(),
        pod: key.pod.clone(),
        pid: i64::from(pid),
    }
}

#[cfg(test)]
mod tests {
    use odiglet_common::go::{GO_LIBRARY_HTTP_CLIENT, GO_LIBRARY_HTTP_SERVER};

    use super::*;

    fn key() -> ContainerKey {
        ContainerKey {
            namespace: "shop".into(),
            pod: "cart-7d9f-x2".into(),
            container: "app".into(),
        }
    }

    #[test]
    fn loaded_is_healthy_with_one_component_per_linked_library() {
        let key = key();
        let skipped = [
            "net/http client: `net/http.(*Transport).roundTrip` is not in the binary".to_owned(),
            "database/sql: struct offsets unknown (no DWARF, and the shipped table has none for it)"
                .to_owned(),
        ];
        let task = InstanceReport {
            key: &key,
            pid: 4242,
            reason: InstanceReason::LoadedSuccessfully,
            error: None,
            available: GO_LIBRARY_HTTP_SERVER,
            enabled: GO_LIBRARY_HTTP_SERVER,
            skipped: &skipped,
        }
        .upsert();
        let InstanceTask::Upsert {
            pid,
            identifying_attributes,
            health: Some(health),
            ..
        } = task
        else {
            panic!("an upsert with health");
        };
        assert_eq!(
            InstanceTask::object_name(&key.pod, pid),
            "cart-7d9f-x2-4242"
        );
        assert_eq!(
            identifying_attributes,
            [("process.pid".to_owned(), "4242".to_owned())]
        );
        assert!(health.healthy);
        assert_eq!(health.status, "LoadedSuccessfully");
        assert_eq!(
            health.last_error,
            "Successfully loaded eBPF probes to pod: cart-7d9f-x2 container: app"
        );
        // The server is loaded; the client is not linked (left out); database/sql is linked
        // but has no offsets (unhealthy, with why); the rest have no reason (not linked).
        assert_eq!(
            health.components,
            [
                (
                    "net/http.server".to_owned(),
                    true,
                    r#"{"enabled":"true"}"#.to_owned()
                ),
                ("database/sql".to_owned(), false, skipped[1].clone()),
            ]
        );
    }

    #[test]
    fn failures_are_unhealthy_with_the_error() {
        let key = key();
        let task = InstanceReport {
            key: &key,
            pid: 7,
            reason: InstanceReason::FailedToLoad,
            error: Some("cannot attach"),
            available: GO_LIBRARY_HTTP_SERVER | GO_LIBRARY_HTTP_CLIENT,
            enabled: 0,
            skipped: &[],
        }
        .upsert();
        let InstanceTask::Upsert {
            health: Some(health),
            ..
        } = task
        else {
            panic!("an upsert with health");
        };
        assert!(!health.healthy);
        assert_eq!(
            (health.status.as_str(), health.last_error.as_str()),
            ("FailedToLoad", "cannot attach")
        );
        assert_eq!(
            delete(&key, 7),
            InstanceTask::Delete {
                namespace: "shop".into(),
                pod: "cart-7d9f-x2".into(),
                pid: 7
            }
        );
    }
}
