//! The agent table: one entry per live agent instance, keyed by raw `instance_uid`, and the
//! OpAMP rules applied to each message (first message, ReportFullState, exec replacement,
//! config resend, disconnect, stale sweep).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tracing::{debug, info};

use super::{
    health::{Health, HealthWord, InstanceQueue, InstanceTask},
    identity::{AgentIdentity, DeviceOwnerCache, IdentitySource, identity},
    remote_config::{self, ConfigStore},
    wire::{
        AgentToServer, FLAG_REPORT_FULL_STATE, RetryInfo, SERVER_CAPABILITIES, ServerErrorResponse,
        ServerToAgent, agent_caps,
    },
};

/// One identified agent. Kept small (the config itself is rebuilt when sent, only its hash
/// is stored) so a node with thousands of agents stays cheap.
#[derive(Debug)]
struct Agent {
    identity: AgentIdentity,
    service_name: String,
    capabilities: u64,
    last_seq: u64,
    last_seen: Instant,
    last_seen_unix_ms: u64,
    health: Option<Health>,
    config_generation: u64,
    config_hash: Vec<u8>,
    /// Last hash the agent reported (an absent status means it did not change).
    reported_hash: Vec<u8>,
    /// Last hash we sent.
    sent_hash: Vec<u8>,
}

/// One row of `GET /v1/agents`.
#[derive(Debug, serde::Serialize)]
pub struct AgentStatus {
    pub instance_uid: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub pid: i64,
    pub language: String,
    pub service_name: String,
    pub healthy: Option<bool>,
    pub status: Option<String>,
    pub last_error: Option<String>,
    pub last_seen_unix_ms: u64,
    pub config_hash: String,
    pub identity: IdentitySource,
    /// Beyond the contract, for diagnosis: the hash the agent last reported, its capabilities.
    pub reported_config_hash: String,
    pub capabilities: u64,
}

/// Counters for tests, benchmarks and metrics.
#[derive(Debug, Default)]
pub struct Counters {
    pub messages: AtomicU64,
    pub configs_sent: AtomicU64,
    pub full_state_requests: AtomicU64,
}

/// The agent table and what it needs to answer.
pub struct Sessions {
    agents: Mutex<HashMap<Vec<u8>, Agent>>,
    store: Arc<ConfigStore>,
    devices: DeviceOwnerCache,
    queue: InstanceQueue,
    node_name: String,
    stale_after: Duration,
    pub counters: Counters,
}

/// How long a client should wait after `Unavailable` (the spec's recommended minimum).
const RETRY_AFTER: Duration = Duration::from_secs(30);

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    pub fn new(
        store: Arc<ConfigStore>,
        devices: DeviceOwnerCache,
        queue: InstanceQueue,
        node_name: String,
        stale_after: Duration,
    ) -> Self {
        Self {
            agents: Mutex::new(HashMap::new()),
            store,
            devices,
            queue,
            node_name,
            stale_after,
            counters: Counters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Agent>> {
        self.agents.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Answers one `AgentToServer`. Never waits on the API server; a device-id lookup goes to
    /// the cache (bounded in time) only for an agent seen for the first time.
    pub async fn handle(&self, msg: AgentToServer, device_id: Option<&str>) -> ServerToAgent {
        let reply = self.answer(msg, device_id).await;
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
        if reply.remote_config.is_some() {
            self.counters.configs_sent.fetch_add(1, Ordering::Relaxed);
        }
        if reply.flags & FLAG_REPORT_FULL_STATE != 0 {
            self.counters
                .full_state_requests
                .fetch_add(1, Ordering::Relaxed);
        }
        reply
    }

    async fn answer(&self, msg: AgentToServer, device_id: Option<&str>) -> ServerToAgent {
        let mut reply = ServerToAgent {
            instance_uid: msg.instance_uid.clone(),
            capabilities: SERVER_CAPABILITIES,
            ..Default::default()
        };
        if msg.agent_disconnect.is_some() {
            self.disconnect(&msg);
            return reply;
        }
        let known = self.lock().contains_key(&msg.instance_uid);
        // Identify outside the lock: a device-id miss may ask the kubelet.
        let new_identity = match (&msg.agent_description, known) {
            (Some(description), _) => {
                let owner = match (device_id, identity(description, None)) {
                    (Some(id), None) => self.devices.resolve(id).await,
                    _ => None,
                };
                identity(description, owner)
            }
            (None, _) => None,
        };
        if !known {
            let Some(description) = &msg.agent_description else {
                // Restarted server or lost first message: ask for everything, cache nothing.
                debug!(uid = %super::wire::uid_text(&msg.instance_uid), "unknown agent without description; ReportFullState");
                reply.flags |= FLAG_REPORT_FULL_STATE;
                return reply;
            };
            let Some(identity) = new_identity else {
                reply.error_response = Some(unidentified(device_id.is_some()));
                return reply;
            };
            self.register(&msg, description, identity, &mut reply);
            return reply;
        }
        let mut agents = self.lock();
        // Removed concurrently (sweep or disconnect): treat as unknown next time.
        let Some(agent) = agents.get_mut(&msg.instance_uid) else {
            reply.flags |= FLAG_REPORT_FULL_STATE;
            return reply;
        };
        if msg.sequence_num > agent.last_seq.saturating_add(1) && msg.agent_description.is_none() {
            debug!(
                last = agent.last_seq,
                got = msg.sequence_num,
                "sequence gap; ReportFullState"
            );
            reply.flags |= FLAG_REPORT_FULL_STATE;
        }
        agent.last_seq = msg.sequence_num;
        agent.last_seen = Instant::now();
        agent.last_seen_unix_ms = unix_ms();
        if msg.capabilities != 0 {
            agent.capabilities = msg.capabilities;
        }
        if let Some(identity) = new_identity {
            agent.identity = identity;
            agent.config_generation = 0;
        }
        if let Some(health) = &msg.health {
            agent.health = Some(health.into());
        }
        self.offer_config(agent, &msg, &mut reply);
        if msg.agent_description.is_some() || msg.health.is_some() {
            self.queue.push(upsert(agent, &msg));
        }
        reply
    }

    fn register(
        &self,
        msg: &AgentToServer,
        description: &super::wire::AgentDescription,
        identity: AgentIdentity,
        reply: &mut ServerToAgent,
    ) {
        // The agent's own name, else the configured one (the workload's InstrumentationConfig
        // in cluster mode), else the workload guessed from the pod name.
        let service_name = description
            .attribute("service.name")
            .map(|v| v.to_text())
            .filter(|s| !s.is_empty())
            .or_else(|| {
                let (_, config) = self.store.get();
                config
                    .matching(&identity)
                    .and_then(|o| o.service_name.clone())
            })
            .unwrap_or_else(|| remote_config::workload_of(&identity.pod).1.to_owned());
        let mut agent = Agent {
            identity,
            service_name,
            capabilities: msg.capabilities,
            last_seq: msg.sequence_num,
            last_seen: Instant::now(),
            last_seen_unix_ms: unix_ms(),
            health: msg.health.as_ref().map(Health::from),
            config_generation: 0,
            config_hash: Vec::new(),
            reported_hash: Vec::new(),
            sent_hash: Vec::new(),
        };
        self.offer_config(&mut agent, msg, reply);
        let mut agents = self.lock();
        // An exec'd process keeps its pid and pod but starts a new agent: replace the old one.
        if agent.identity.pid != 0 {
            agents.retain(|uid, old| {
                let same = old.identity.pid == agent.identity.pid
                    && old.identity.pod == agent.identity.pod
                    && old.identity.namespace == agent.identity.namespace;
                if same {
                    info!(old = %super::wire::uid_text(uid), pod = %old.identity.pod, pid = old.identity.pid, "replacing agent of an exec'd process");
                }
                !same
            });
        }
        info!(
            uid = %super::wire::uid_text(&msg.instance_uid),
            namespace = %agent.identity.namespace, pod = %agent.identity.pod,
            container = %agent.identity.container, pid = agent.identity.pid,
            identity = ?agent.identity.source, "agent registered"
        );
        self.queue.push(upsert(&agent, msg));
        agents.insert(msg.instance_uid.clone(), agent);
    }

    /// Refreshes the agent's config if the served config changed and attaches it when the
    /// agent does not have it. An absent `remote_config_status` means "unchanged".
    fn offer_config(&self, agent: &mut Agent, msg: &AgentToServer, reply: &mut ServerToAgent) {
        let (generation, config) = self.store.get();
        let rebuild = agent.config_generation != generation;
        let built =
            rebuild.then(|| remote_config::build(&config, &agent.identity, &self.node_name));
        if let Some(built) = &built {
            agent.config_generation = generation;
            agent.config_hash.clone_from(&built.config_hash);
        }
        if let Some(status) = &msg.remote_config_status {
            agent
                .reported_hash
                .clone_from(&status.last_remote_config_hash);
        }
        // Odigos agents announce no capabilities yet need config: 0 means "legacy Odigos".
        let accepts =
            agent.capabilities == 0 || agent.capabilities & agent_caps::ACCEPTS_REMOTE_CONFIG != 0;
        let stale = agent.reported_hash != agent.config_hash
            && (msg.remote_config_status.is_some() || agent.sent_hash != agent.config_hash);
        if accepts && stale {
            let built = built
                .unwrap_or_else(|| remote_config::build(&config, &agent.identity, &self.node_name));
            agent.sent_hash.clone_from(&built.config_hash);
            reply.remote_config = Some(built);
        }
    }

    fn disconnect(&self, msg: &AgentToServer) {
        let Some(agent) = self.lock().remove(&msg.instance_uid) else {
            return; // Already gone: disconnects are idempotent.
        };
        let health = msg
            .health
            .as_ref()
            .map(Health::from)
            .or(agent.health.clone());
        info!(uid = %super::wire::uid_text(&msg.instance_uid), pod = %agent.identity.pod, ?health, "agent disconnected");
        // Healthy (or silent) exit deletes the record; an unhealthy one is kept for diagnosis.
        match health {
            Some(h) if !h.healthy => {
                let mut agent = agent;
                agent.health = Some(h);
                self.queue.push(upsert(&agent, msg));
            }
            _ => self.queue.push(delete(&agent)),
        }
    }

    /// Removes agents silent for longer than the stale timeout, except those that reported
    /// `NoConnectionToOpAMPServer` (kept so users can see them). Returns how many were removed.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut removed = Vec::new();
        self.lock().retain(|uid, agent| {
            let word = agent.health.as_ref().map(|h| HealthWord::parse(&h.status));
            let keep = now.duration_since(agent.last_seen) < self.stale_after
                || word == Some(HealthWord::NoConnectionToOpAMPServer);
            if !keep {
                info!(uid = %super::wire::uid_text(uid), pod = %agent.identity.pod, "agent stale; removed");
                removed.push(delete(agent));
            }
            keep
        });
        let count = removed.len();
        removed.into_iter().for_each(|task| self.queue.push(task));
        count
    }

    /// Runs [`Self::sweep`] every `every` until the task is dropped.
    pub async fn sweep_forever(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sweep();
        }
    }

    pub fn status(&self) -> Vec<AgentStatus> {
        let mut rows: Vec<AgentStatus> = self
            .lock()
            .iter()
            .map(|(uid, a)| AgentStatus {
                instance_uid: super::wire::uid_text(uid),
                namespace: a.identity.namespace.clone(),
                pod: a.identity.pod.clone(),
                container: a.identity.container.clone(),
                pid: a.identity.pid,
                language: a.identity.language.clone(),
                service_name: a.service_name.clone(),
                healthy: a.health.as_ref().map(|h| h.healthy),
                status: a.health.as_ref().map(|h| h.status.clone()),
                last_error: a.health.as_ref().map(|h| h.last_error.clone()),
                last_seen_unix_ms: a.last_seen_unix_ms,
                config_hash: hex(&a.config_hash),
                identity: a.identity.source,
                reported_config_hash: hex(&a.reported_hash),
                capabilities: a.capabilities,
            })
            .collect();
        rows.sort_by(|a, b| (&a.namespace, &a.pod, a.pid).cmp(&(&b.namespace, &b.pod, b.pid)));
        rows
    }
}

fn unidentified(had_device_id: bool) -> ServerErrorResponse {
    if had_device_id {
        // The kubelet may not know a fresh allocation yet: the agent should retry later.
        ServerErrorResponse {
            r#type: super::wire::ERROR_UNAVAILABLE,
            error_message: "device id not (yet) known to the kubelet".into(),
            retry_info: Some(RetryInfo {
                retry_after_nanoseconds: RETRY_AFTER.as_nanos() as u64,
            }),
        }
    } else {
        ServerErrorResponse {
            r#type: super::wire::ERROR_BAD_REQUEST,
            error_message: "cannot identify the agent: send k8s.namespace.name, k8s.pod.name and k8s.container.name, or X-Odigos-DeviceId".into(),
            retry_info: None,
        }
    }
}

fn upsert(agent: &Agent, msg: &AgentToServer) -> InstanceTask {
    let identifying_attributes = msg
        .agent_description
        .iter()
        .flat_map(|d| &d.identifying_attributes)
        .map(|kv| {
            (
                kv.key.clone(),
                kv.value.as_ref().map(|v| v.to_text()).unwrap_or_default(),
            )
        })
        .collect();
    InstanceTask::Upsert {
        namespace: agent.identity.namespace.clone(),
        pod: agent.identity.pod.clone(),
        container: agent.identity.container.clone(),
        pid: agent.identity.pid,
        identifying_attributes,
        health: agent.health.clone(),
    }
}

fn delete(agent: &Agent) -> InstanceTask {
    InstanceTask::Delete {
        namespace: agent.identity.namespace.clone(),
        pod: agent.identity.pod.clone(),
        pid: agent.identity.pid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opamp::{
        identity::NoDeviceLookup,
        remote_config::ServedConfig,
        wire::{AgentDescription, AnyValue, ComponentHealth, KeyValue, any_value::Value},
    };

    fn sessions(stale: Duration) -> Sessions {
        Sessions::new(
            Arc::new(ConfigStore::new(ServedConfig::default())),
            DeviceOwnerCache::new(Box::new(NoDeviceLookup), Duration::from_millis(10)),
            InstanceQueue::disabled(),
            "node".into(),
            stale,
        )
    }

    fn hello(uid: u8, caps: u64) -> AgentToServer {
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(v.into())),
            }),
        };
        AgentToServer {
            instance_uid: vec![uid; 16],
            capabilities: caps,
            agent_description: Some(AgentDescription {
                identifying_attributes: vec![
                    kv("k8s.namespace.name", "ns"),
                    kv("k8s.pod.name", &format!("pod-{uid}")),
                    kv("k8s.container.name", "c"),
                ],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn capabilities_gate_config_and_repeats_are_quiet() {
        let s = sessions(Duration::from_secs(60));
        // Announces capabilities but not AcceptsRemoteConfig: no config offered.
        let reply = s.handle(hello(1, agent_caps::REPORTS_STATUS), None).await;
        assert!(reply.remote_config.is_none());
        assert_eq!(reply.capabilities, SERVER_CAPABILITIES);
        // capabilities == 0 (Odigos agents): config offered.
        assert!(s.handle(hello(2, 0), None).await.remote_config.is_some());
        // A repeated or older sequence number is not a gap.
        let beat = AgentToServer {
            instance_uid: vec![2; 16],
            sequence_num: 0,
            ..Default::default()
        };
        assert_eq!(s.handle(beat, None).await.flags, 0);
        // No identity at all: BadRequest, nothing cached.
        let mut anonymous = hello(3, 0);
        anonymous.agent_description = Some(AgentDescription::default());
        let reply = s.handle(anonymous, None).await;
        assert_eq!(
            reply.error_response.map(|e| e.r#type),
            Some(super::super::wire::ERROR_BAD_REQUEST)
        );
        assert_eq!(s.len(), 2);
    }

    #[tokio::test]
    async fn sweep_keeps_no_connection_agents_and_disconnect_is_idempotent() {
        let s = sessions(Duration::ZERO);
        let mut kept = hello(1, 0);
        kept.health = Some(ComponentHealth {
            status: "NoConnectionToOpAMPServer".into(),
            ..Default::default()
        });
        s.handle(kept, None).await;
        s.handle(hello(2, 0), None).await;
        assert_eq!(s.sweep(), 1);
        assert_eq!(s.status()[0].pod, "pod-1");
        let bye = AgentToServer {
            instance_uid: vec![1; 16],
            agent_disconnect: Some(Default::default()),
            ..Default::default()
        };
        s.handle(bye.clone(), None).await;
        s.handle(bye, None).await;
        assert!(s.is_empty());
    }
}
