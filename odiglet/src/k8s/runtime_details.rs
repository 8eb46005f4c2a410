//! `status.runtimeDetailsByContainer` and the `RuntimeDetection` condition from inspection
//! results, with Odigos' write-once-then-merge rules (odigos.md §4.6):
//!
//! - the first write sets every inspected container;
//! - later results only merge into an existing entry, and a write happens only when something
//!   changed: `LD_PRELOAD` appearing (never one containing `odigos`, never removed once
//!   recorded, so a jittering value cannot cause rollout loops), secure-execution becoming
//!   true, a new runtime version, the language going from unknown to known, the other agent
//!   changing;
//! - a result with a different known language is ignored for that container.
//!
//! Two deliberate differences: a container missing from an existing status is added (Odigos
//! never fills it in), and a vanished `LD_PRELOAD` is not a change (Odigos rewrites the same
//! status then).

use std::collections::BTreeSet;

use super::crd::{Condition, EnvVar, OtherAgent, RUNTIME_DETECTION, RuntimeDetailsByContainer};
use crate::inspect::{
    Libc,
    container::{ContainerRuntime, DetectionReason},
    environ::OVERWRITE_VARS,
};

const LD_PRELOAD: &str = "LD_PRELOAD";
const UNKNOWN: &str = "unknown";

/// The status entry for one inspected container.
pub fn from_container(name: &str, runtime: &ContainerRuntime) -> RuntimeDetailsByContainer {
    let env_vars = runtime
        .env
        .iter()
        .filter(|(key, _)| OVERWRITE_VARS.contains(&key.as_str()))
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: value.clone(),
        })
        .collect();
    RuntimeDetailsByContainer {
        container_name: name.to_owned(),
        language: runtime.language.as_str().to_owned(),
        runtime_version: runtime.runtime_version.clone().unwrap_or_default(),
        env_vars,
        other_agent: runtime
            .other_agents
            .first()
            .map(|name| OtherAgent { name: name.clone() }),
        libc_type: match runtime.libc {
            Some(Libc::Glibc) => Some("glibc".to_owned()),
            Some(Libc::Musl) => Some("musl".to_owned()),
            Some(Libc::Static) | None => None,
        },
        secure_execution_mode: Some(runtime.secure_execution_mode),
        ..Default::default()
    }
}

fn ld_preload(env: &[EnvVar]) -> Option<&str> {
    env.iter()
        .find(|e| e.name == LD_PRELOAD)
        .map(|e| e.value.as_str())
}

/// Adds a newly seen `LD_PRELOAD` to `existing`; returns whether it did.
fn merge_ld_preload(
    fresh: &[EnvVar],
    existing: &mut Vec<EnvVar>,
    skip_containing: Option<&str>,
) -> bool {
    match (ld_preload(fresh), ld_preload(existing)) {
        (Some(value), None) if skip_containing.is_none_or(|skip| !value.contains(skip)) => {
            existing.push(EnvVar {
                name: LD_PRELOAD.to_owned(),
                value: value.to_owned(),
            });
            true
        }
        _ => false,
    }
}

/// Merges a fresh result into an existing entry of the same container; returns whether the
/// entry changed.
pub fn merge_one(
    existing: &mut RuntimeDetailsByContainer,
    fresh: &RuntimeDetailsByContainer,
) -> bool {
    let unknown_to_known = existing.language == UNKNOWN && fresh.language != UNKNOWN;
    if fresh.language != existing.language && !unknown_to_known {
        return false;
    }
    let mut changed = merge_ld_preload(&fresh.env_vars, &mut existing.env_vars, Some("odigos"));
    changed |= merge_ld_preload(
        &fresh.env_from_container_runtime,
        &mut existing.env_from_container_runtime,
        None,
    );
    if fresh.secure_execution_mode == Some(true) && existing.secure_execution_mode != Some(true) {
        existing.secure_execution_mode = Some(true);
        changed = true;
    }
    if !fresh.runtime_version.is_empty() && fresh.runtime_version != existing.runtime_version {
        existing.runtime_version.clone_from(&fresh.runtime_version);
        changed = true;
    }
    if unknown_to_known {
        existing.language.clone_from(&fresh.language);
        changed = true;
    }
    if fresh.other_agent != existing.other_agent {
        existing.other_agent.clone_from(&fresh.other_agent);
        changed = true;
    }
    changed
}

/// The new `runtimeDetailsByContainer` when `fresh` results change `existing`, else `None`.
pub fn merge(
    existing: &[RuntimeDetailsByContainer],
    fresh: &[RuntimeDetailsByContainer],
) -> Option<Vec<RuntimeDetailsByContainer>> {
    if fresh.is_empty() {
        return None;
    }
    if existing.is_empty() {
        return Some(fresh.to_vec());
    }
    let mut merged = existing.to_vec();
    let mut changed = false;
    for new in fresh {
        match merged
            .iter_mut()
            .find(|e| e.container_name == new.container_name)
        {
            Some(entry) => changed |= merge_one(entry, new),
            None => {
                merged.push(new.clone());
                changed = true;
            }
        }
    }
    changed.then_some(merged)
}

/// The `RuntimeDetection` reason for a set of container results: the worst one wins.
pub fn overall_reason(reasons: impl IntoIterator<Item = DetectionReason>) -> DetectionReason {
    let seen: BTreeSet<u8> = reasons
        .into_iter()
        .map(|r| match r {
            DetectionReason::DetectedSuccessfully => 0,
            DetectionReason::ResolvedFromMultipleLanguages => 1,
            DetectionReason::UnresolvedMultipleLanguages => 2,
        })
        .collect();
    match seen.last() {
        Some(2) => DetectionReason::UnresolvedMultipleLanguages,
        Some(1) => DetectionReason::ResolvedFromMultipleLanguages,
        _ => DetectionReason::DetectedSuccessfully,
    }
}

fn reason_text(reason: DetectionReason) -> (&'static str, &'static str) {
    match reason {
        DetectionReason::DetectedSuccessfully => (
            "DetectedSuccessfully",
            "runtime detection completed successfully",
        ),
        DetectionReason::ResolvedFromMultipleLanguages => (
            "ResolvedFromMultipleLanguages",
            "a container runs several languages; the main one was chosen",
        ),
        DetectionReason::UnresolvedMultipleLanguages => (
            "UnresolvedMultipleLanguages",
            "a container runs several languages and none could be chosen",
        ),
    }
}

/// Sets the `RuntimeDetection` condition as `meta.SetStatusCondition` does: the transition
/// time moves only when the status changes.
pub fn set_detection_condition(
    conditions: &mut Vec<Condition>,
    reason: DetectionReason,
    generation: Option<i64>,
    now: &str,
) {
    let (reason, message) = reason_text(reason);
    let fresh = Condition {
        type_: RUNTIME_DETECTION.to_owned(),
        status: "True".to_owned(),
        observed_generation: generation,
        last_transition_time: now.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
    };
    match conditions.iter_mut().find(|c| c.type_ == RUNTIME_DETECTION) {
        Some(existing) => {
            if existing.status == fresh.status && !existing.last_transition_time.is_empty() {
                let since = std::mem::take(&mut existing.last_transition_time);
                *existing = Condition {
                    last_transition_time: since,
                    ..fresh
                };
            } else {
                *existing = fresh;
            }
        }
        None => conditions.push(fresh),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::inspect::Language;

    fn entry(container: &str, language: &str) -> RuntimeDetailsByContainer {
        RuntimeDetailsByContainer {
            container_name: container.into(),
            language: language.into(),
            secure_execution_mode: Some(false),
            ..Default::default()
        }
    }

    fn env(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn first_write_sets_everything_and_empty_results_write_nothing() {
        let fresh = vec![entry("a", "go"), entry("b", "python")];
        assert_eq!(merge(&[], &fresh), Some(fresh.clone()));
        assert_eq!(merge(&fresh, &[]), None);
        assert_eq!(merge(&[], &[]), None);
    }

    #[test]
    fn identical_results_are_not_written_again() {
        let existing = vec![entry("a", "go")];
        assert_eq!(merge(&existing, &existing), None);
    }

    #[test]
    fn ld_preload_appears_but_never_goes_away_and_odigos_values_are_skipped() {
        let existing = vec![entry("a", "java")];
        let mut with = entry("a", "java");
        with.env_vars = vec![
            env("JAVA_TOOL_OPTIONS", "-x"),
            env(LD_PRELOAD, "/lib/libdd.so"),
        ];
        let merged = merge(&existing, &[with]).expect("LD_PRELOAD is a change");
        // Only LD_PRELOAD is taken over; other env vars stay as first recorded.
        assert_eq!(merged[0].env_vars, vec![env(LD_PRELOAD, "/lib/libdd.so")]);

        assert_eq!(merge(&merged, &existing), None, "removal is not a change");
        let mut changed = merged.clone();
        changed[0].env_vars[0].value = "/other.so".into();
        assert_eq!(
            merge(&merged, &changed),
            None,
            "a changed value is kept as first seen"
        );

        let mut ours = entry("a", "java");
        ours.env_vars = vec![env(LD_PRELOAD, "/var/odigos/loader/loader.so")];
        assert_eq!(merge(&existing, &[ours]), None);

        let mut image = entry("a", "java");
        image.env_from_container_runtime = vec![env(LD_PRELOAD, "/var/odigos/x.so")];
        let merged = merge(&existing, &[image]).expect("the image's LD_PRELOAD always counts");
        assert_eq!(merged[0].env_from_container_runtime.len(), 1);
    }

    #[test]
    fn secure_execution_only_turns_on() {
        let existing = vec![entry("a", "go")];
        let mut on = entry("a", "go");
        on.secure_execution_mode = Some(true);
        let merged = merge(&existing, &[on]).expect("turning on is a change");
        assert_eq!(merged[0].secure_execution_mode, Some(true));
        assert_eq!(merge(&merged, &existing), None, "turning off is ignored");
    }

    #[test]
    fn runtime_version_and_other_agent_follow_the_latest_result() {
        let mut old = entry("a", "python");
        old.runtime_version = "3.11".into();
        let mut newer = old.clone();
        newer.runtime_version = "3.12".into();
        let merged = merge(&[old.clone()], &[newer]).expect("new version");
        assert_eq!(merged[0].runtime_version, "3.12");
        let mut versionless = old.clone();
        versionless.runtime_version.clear();
        assert_eq!(merge(&[old.clone()], &[versionless]), None);

        let mut agent = old.clone();
        agent.other_agent = Some(OtherAgent {
            name: "New Relic Agent".into(),
        });
        let merged = merge(&[old.clone()], &[agent.clone()]).expect("agent appeared");
        assert_eq!(merged[0].other_agent, agent.other_agent);
        assert_eq!(
            merge(&merged, &[old.clone()]).map(|m| m[0].other_agent.clone()),
            Some(None),
            "and disappeared"
        );
    }

    #[test]
    fn language_unknown_to_known_only() {
        let unknown = vec![entry("a", UNKNOWN)];
        let merged = merge(&unknown, &[entry("a", "go")]).expect("unknown → known");
        assert_eq!(merged[0].language, "go");
        assert_eq!(
            merge(&merged, &[entry("a", "java")]),
            None,
            "known → other known"
        );
        assert_eq!(
            merge(&merged, &[entry("a", UNKNOWN)]),
            None,
            "known → unknown"
        );
        // A different language blocks every other merge for that container too.
        let mut java = entry("a", "java");
        java.secure_execution_mode = Some(true);
        assert_eq!(merge(&merged, &[java]), None);
    }

    #[test]
    fn containers_missing_from_the_status_are_added() {
        let existing = vec![entry("a", "go")];
        let merged =
            merge(&existing, &[entry("a", "go"), entry("b", "python")]).expect("new container");
        assert_eq!(
            merged
                .iter()
                .map(|e| e.container_name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn unknown_fields_of_existing_entries_survive_a_merge() {
        let mut existing = entry("a", UNKNOWN);
        existing
            .other
            .insert("runtimeUpdateState".into(), "Succeeded".into());
        let merged = merge(&[existing], &[entry("a", "go")]).expect("merge");
        assert_eq!(merged[0].other["runtimeUpdateState"], "Succeeded");
    }

    #[test]
    fn entries_from_inspection() {
        let runtime = ContainerRuntime {
            language: Language::Python,
            runtime_version: Some("3.12.1".into()),
            libc: Some(Libc::Musl),
            secure_execution_mode: false,
            env: BTreeMap::from([
                ("PYTHONPATH".into(), "/app".into()),
                ("PYTHON_VERSION".into(), "3.12.1".into()),
            ]),
            other_agents: vec!["Datadog Agent".into()],
            go: None,
            reason: DetectionReason::DetectedSuccessfully,
            pids: vec![1],
        };
        let e = from_container("app", &runtime);
        assert_eq!(
            (
                e.language.as_str(),
                e.runtime_version.as_str(),
                e.libc_type.as_deref()
            ),
            ("python", "3.12.1", Some("musl"))
        );
        assert_eq!(e.env_vars, vec![env("PYTHONPATH", "/app")]);
        assert_eq!(
            e.other_agent.map(|a| a.name).as_deref(),
            Some("Datadog Agent")
        );
        assert_eq!(e.secure_execution_mode, Some(false));
    }

    #[test]
    fn condition_reason_and_transition_time() {
        use DetectionReason::*;
        assert_eq!(
            overall_reason([DetectedSuccessfully, ResolvedFromMultipleLanguages]),
            ResolvedFromMultipleLanguages
        );
        assert_eq!(
            overall_reason([UnresolvedMultipleLanguages, DetectedSuccessfully]),
            UnresolvedMultipleLanguages
        );
        assert_eq!(overall_reason([]), DetectedSuccessfully);

        let other = Condition {
            type_: "AgentEnabled".into(),
            status: "False".into(),
            ..Default::default()
        };
        let mut conditions = vec![other.clone()];
        set_detection_condition(&mut conditions, DetectedSuccessfully, Some(2), "t1");
        set_detection_condition(
            &mut conditions,
            ResolvedFromMultipleLanguages,
            Some(3),
            "t2",
        );
        assert_eq!(conditions.len(), 2);
        assert_eq!(conditions[0], other);
        let detection = &conditions[1];
        assert_eq!(
            (
                detection.reason.as_str(),
                detection.last_transition_time.as_str(),
                detection.observed_generation
            ),
            ("ResolvedFromMultipleLanguages", "t1", Some(3))
        );
    }
}
