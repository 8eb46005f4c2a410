//! One answer for a container from its processes (odigos.md §4.3, end): the languages found
//! decide, C++ and nginx give way to another language, the runtime version counts only when
//! every relevant process agrees, and the first relevant process supplies env, libc,
//! secure-execution and other agents.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::{
    GoDetails, InspectError, Inspector, Language, Libc, RuntimeDetails,
    cgroup::{self, CgroupConfig, CgroupError, ContainerRef, PidSource},
};

/// The `RuntimeDetection` condition's reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum DetectionReason {
    DetectedSuccessfully,
    ResolvedFromMultipleLanguages,
    UnresolvedMultipleLanguages,
}

/// Runtime details of a whole container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ContainerRuntime {
    pub language: Language,
    pub runtime_version: Option<String>,
    pub libc: Option<Libc>,
    pub secure_execution_mode: bool,
    pub env: BTreeMap<String, String>,
    pub other_agents: Vec<String>,
    pub go: Option<GoDetails>,
    pub reason: DetectionReason,
    /// The PIDs inspected (processes that exited meanwhile are left out).
    pub pids: Vec<u32>,
}

/// Resolves a container from its processes' details, in PID order.
pub fn resolve(processes: &[RuntimeDetails]) -> ContainerRuntime {
    let known: BTreeSet<Language> = processes
        .iter()
        .map(|p| p.language)
        .filter(|l| *l != Language::Unknown)
        .collect();
    let helpers = [Language::Cplusplus, Language::Nginx];
    let (language, reason) = match known.iter().copied().collect::<Vec<_>>().as_slice() {
        [] => (Language::Unknown, DetectionReason::DetectedSuccessfully),
        [one] => (*one, DetectionReason::DetectedSuccessfully),
        [a, b] if helpers.contains(a) && !helpers.contains(b) => {
            (*b, DetectionReason::ResolvedFromMultipleLanguages)
        }
        [a, b] if helpers.contains(b) && !helpers.contains(a) => {
            (*a, DetectionReason::ResolvedFromMultipleLanguages)
        }
        _ => (
            Language::Unknown,
            DetectionReason::UnresolvedMultipleLanguages,
        ),
    };
    let relevant: Vec<&RuntimeDetails> = if language == Language::Unknown {
        processes.iter().collect()
    } else {
        processes
            .iter()
            .filter(|p| p.language == language)
            .collect()
    };
    let versions: BTreeSet<Option<&str>> = relevant
        .iter()
        .map(|p| p.runtime_version.as_deref())
        .collect();
    let runtime_version = match versions.into_iter().collect::<Vec<_>>().as_slice() {
        [Some(one)] => Some((*one).to_owned()),
        _ => None,
    };
    let first = relevant.first();
    ContainerRuntime {
        language,
        runtime_version,
        libc: first.and_then(|p| p.libc),
        secure_execution_mode: first.is_some_and(|p| p.secure_execution_mode),
        env: first.map(|p| p.env.clone()).unwrap_or_default(),
        other_agents: first.map(|p| p.other_agents.clone()).unwrap_or_default(),
        go: first.and_then(|p| p.go.clone()),
        reason,
        pids: processes.iter().map(|p| p.pid).collect(),
    }
}

impl Inspector {
    /// Finds the container's processes and resolves one answer for it. Processes that exit
    /// or cannot be read meanwhile are skipped.
    pub fn inspect_container(
        &self,
        config: &CgroupConfig,
        container: &ContainerRef,
    ) -> Result<(ContainerRuntime, PidSource), CgroupError> {
        let (mut pids, source) = cgroup::container_pids(config, container)?;
        pids.sort_unstable();
        let details: Vec<RuntimeDetails> = pids
            .into_iter()
            .filter_map(|pid| match self.inspect(pid) {
                Ok(details) => Some(details),
                Err(InspectError::NoSuchProcess { .. }) => None,
                Err(error) => {
                    tracing::debug!(pid, error = %error, "skipping a container process");
                    None
                }
            })
            .collect();
        Ok((resolve(&details), source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inspect::Stage;

    fn process(pid: u32, language: Language, version: Option<&str>) -> RuntimeDetails {
        RuntimeDetails {
            pid,
            exe: format!("/bin/{pid}"),
            language,
            runtime_version: version.map(str::to_owned),
            libc: Some(Libc::Glibc),
            secure_execution_mode: pid == 2,
            env: BTreeMap::from([("PID".to_owned(), pid.to_string())]),
            other_agents: Vec::new(),
            go: None,
            stage: Stage::Quick,
        }
    }

    #[test]
    fn single_language_helpers_and_conflicts() {
        use Language::*;
        let none = resolve(&[process(1, Unknown, None)]);
        assert_eq!(
            (none.language, none.reason),
            (Unknown, DetectionReason::DetectedSuccessfully)
        );

        let with_nginx = resolve(&[process(1, Nginx, None), process(2, Python, Some("3.12"))]);
        assert_eq!(with_nginx.language, Python);
        assert_eq!(
            with_nginx.reason,
            DetectionReason::ResolvedFromMultipleLanguages
        );
        // The first relevant process (the Python one, pid 2) supplies env and flags.
        assert_eq!(with_nginx.env.get("PID").map(String::as_str), Some("2"));
        assert!(with_nginx.secure_execution_mode);
        assert_eq!(with_nginx.runtime_version.as_deref(), Some("3.12"));

        let conflict = resolve(&[process(1, Java, None), process(2, Python, None)]);
        assert_eq!(
            (conflict.language, conflict.reason),
            (Unknown, DetectionReason::UnresolvedMultipleLanguages)
        );
    }

    #[test]
    fn version_only_when_all_relevant_processes_agree() {
        use Language::*;
        let agree = resolve(&[
            process(1, Javascript, Some("20")),
            process(3, Javascript, Some("20")),
        ]);
        assert_eq!(agree.runtime_version.as_deref(), Some("20"));
        let differ = resolve(&[
            process(1, Javascript, Some("20")),
            process(3, Javascript, Some("22")),
        ]);
        assert_eq!(differ.runtime_version, None);
        let partly = resolve(&[
            process(1, Javascript, Some("20")),
            process(3, Javascript, None),
        ]);
        assert_eq!(partly.runtime_version, None);
    }
}
