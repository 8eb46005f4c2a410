//! The stand-in's objects: one resource version counter for everything (as etcd's revision),
//! a bounded history of changes for watches that resume from a version, label and field
//! selectors, and JSON merge patches (RFC 7386).

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value, json};

/// Changes kept for resuming watches; older versions get 410 Gone, as after compaction.
const HISTORY: usize = 4096;

/// The resources served: (plural, apiVersion, kind, namespaced).
pub const RESOURCES: [(&str, &str, &str, bool); 5] = [
    ("pods", "v1", "Pod", true),
    ("configmaps", "v1", "ConfigMap", true),
    ("nodes", "v1", "Node", false),
    (
        "instrumentationconfigs",
        "odigos.io/v1alpha1",
        "InstrumentationConfig",
        true,
    ),
    (
        "instrumentationinstances",
        "odigos.io/v1alpha1",
        "InstrumentationInstance",
        true,
    ),
];

pub fn api_version_kind(resource: &str) -> Option<(&'static str, &'static str)> {
    RESOURCES
        .iter()
        .find(|(plural, ..)| *plural == resource)
        .map(|(_, api_version, kind, _)| (*api_version, *kind))
}

/// Whether objects of `resource` live in a namespace (Nodes do not).
pub fn namespaced(resource: &str) -> bool {
    RESOURCES
        .iter()
        .any(|(plural, .., namespaced)| *plural == resource && *namespaced)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, as watches see it.
#[derive(Clone, Debug)]
pub struct Change {
    pub version: u64,
    pub resource: String,
    pub kind: EventType,
    pub before: Option<Value>,
    pub after: Value,
}

/// Why a write was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteError {
    NotFound,
    AlreadyExists,
    Conflict,
    Invalid(String),
}

pub struct Objects {
    /// resource plural → (namespace, name) → object.
    pub by_resource: BTreeMap<String, BTreeMap<(String, String), Value>>,
    pub version: u64,
    /// Changes kept; a test lowers it to make resuming watches fail with 410.
    pub history_limit: usize,
    history: VecDeque<Change>,
}

impl Default for Objects {
    fn default() -> Self {
        Self {
            by_resource: BTreeMap::new(),
            version: 0,
            history_limit: HISTORY,
            history: VecDeque::new(),
        }
    }
}

fn key(namespace: &str, name: &str) -> (String, String) {
    (namespace.to_owned(), name.to_owned())
}

fn now() -> String {
    // Good enough for creationTimestamp: kube only parses it.
    "2026-01-01T00:00:00Z".to_owned()
}

impl Objects {
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<&Value> {
        self.by_resource.get(resource)?.get(&key(namespace, name))
    }

    /// Oldest version a watch can resume from.
    pub fn oldest_resumable(&self) -> u64 {
        self.history
            .front()
            .map_or(self.version, |c| c.version.saturating_sub(1))
    }

    pub fn changes_since(&self, version: u64) -> impl Iterator<Item = &Change> {
        self.history.iter().filter(move |c| c.version > version)
    }

    fn record(&mut self, change: Change) -> Change {
        while self.history.len() >= self.history_limit.max(1) {
            self.history.pop_front();
        }
        self.history.push_back(change.clone());
        change
    }

    /// Stores `object` under a new version, creating or replacing; returns the change.
    pub fn store(&mut self, resource: &str, mut object: Value) -> Result<Change, WriteError> {
        let namespace = if namespaced(resource) {
            object["metadata"]["namespace"]
                .as_str()
                .ok_or_else(|| WriteError::Invalid("metadata.namespace is required".into()))?
                .to_owned()
        } else {
            String::new()
        };
        let name = object["metadata"]["name"]
            .as_str()
            .ok_or_else(|| WriteError::Invalid("metadata.name is required".into()))?
            .to_owned();
        let (api_version, kind) = api_version_kind(resource)
            .ok_or_else(|| WriteError::Invalid(format!("unknown resource {resource}")))?;
        self.version += 1;
        let before = self.get(resource, &namespace, &name).cloned();
        object["apiVersion"] = json!(api_version);
        object["kind"] = json!(kind);
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(self.version.to_string());
        match &before {
            Some(old) => {
                meta["uid"] = old["metadata"]["uid"].clone();
                meta["creationTimestamp"] = old["metadata"]["creationTimestamp"].clone();
                let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
                let bumped = old.get("spec") != object.get("spec");
                object["metadata"]["generation"] = json!(generation + i64::from(bumped));
            }
            None => {
                if meta["uid"].as_str().is_none_or(str::is_empty) {
                    meta["uid"] = json!(format!("uid-{}-{}", name, self.version));
                }
                meta["creationTimestamp"] = json!(now());
                meta["generation"] = json!(1);
            }
        }
        self.by_resource
            .entry(resource.to_owned())
            .or_default()
            .insert(key(&namespace, &name), object.clone());
        let kind = if before.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        Ok(self.record(Change {
            version: self.version,
            resource: resource.to_owned(),
            kind,
            before,
            after: object,
        }))
    }

    pub fn delete(
        &mut self,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Change, WriteError> {
        let mut object = self
            .by_resource
            .get_mut(resource)
            .and_then(|objects| objects.remove(&key(namespace, name)))
            .ok_or(WriteError::NotFound)?;
        self.version += 1;
        object["metadata"]["resourceVersion"] = json!(self.version.to_string());
        Ok(self.record(Change {
            version: self.version,
            resource: resource.to_owned(),
            kind: EventType::Deleted,
            before: Some(object.clone()),
            after: object,
        }))
    }

    /// Checks an incoming `metadata.resourceVersion` (absent: unconditional).
    pub fn check_version(current: &Value, incoming: &Value) -> Result<(), WriteError> {
        match incoming["metadata"]["resourceVersion"].as_str() {
            Some(version) if Some(version) != current["metadata"]["resourceVersion"].as_str() => {
                Err(WriteError::Conflict)
            }
            _ => Ok(()),
        }
    }
}

/// RFC 7386: objects merge key by key, `null` deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (k, v) in patch {
            if v.is_null() {
                map.remove(k);
            } else {
                merge_patch(map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// A parsed `labelSelector` or `fieldSelector`: `k=v`, `k==v`, `k!=v`, `k` (label exists).
#[derive(Clone, Debug, Default)]
pub struct Selector {
    terms: Vec<(String, Option<(bool, String)>)>,
}

impl Selector {
    pub fn parse(text: &str) -> Self {
        let terms = text
            .split(',')
            .filter(|t| !t.is_empty())
            .map(|term| {
                if let Some((k, v)) = term.split_once("!=") {
                    (k.to_owned(), Some((false, v.to_owned())))
                } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('='))
                {
                    (k.to_owned(), Some((true, v.to_owned())))
                } else {
                    (term.to_owned(), None)
                }
            })
            .collect();
        Self { terms }
    }

    /// Labels are looked up in `metadata.labels`; fields by dotted path.
    pub fn matches(&self, object: &Value, labels: bool) -> bool {
        self.terms.iter().all(|(k, want)| {
            let found = if labels {
                object["metadata"]["labels"][k.as_str()].as_str()
            } else {
                k.split('.').fold(object, |v, part| &v[part]).as_str()
            };
            match want {
                None => found.is_some(),
                Some((true, v)) => found.unwrap_or("") == v,
                Some((false, v)) => found.unwrap_or("") != v,
            }
        })
    }
}

/// What a list or watch asks for.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub namespace: Option<String>,
    pub labels: Selector,
    pub fields: Selector,
}

impl Query {
    pub fn matches(&self, object: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| object["metadata"]["namespace"] == ns)
            && self.labels.matches(object, true)
            && self.fields.matches(object, false)
    }
}
