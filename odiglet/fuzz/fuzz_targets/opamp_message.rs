//! Fuzzes OpAMP message handling end to end: bounded decode of an `AgentToServer`, then the
//! session rules (identity, config offer, disconnect, sweep) on a shared agent table, then
//! encoding the reply. Any panic, overflow or unbounded allocation is a bug.
#![no_main]

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use libfuzzer_sys::fuzz_target;
use odiglet::opamp::{
    ConfigStore, InstanceQueue, NoDeviceLookup, ServedConfig,
    identity::DeviceOwnerCache,
    session::Sessions,
    wire::decode_agent_to_server,
};
use prost::Message;

struct World {
    rt: tokio::runtime::Runtime,
    sessions: Sessions,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("runtime");
        let sessions = Sessions::new(
            Arc::new(ConfigStore::new(ServedConfig::default())),
            DeviceOwnerCache::new(Box::new(NoDeviceLookup), Duration::from_millis(10)),
            InstanceQueue::disabled(),
            "node".into(),
            Duration::from_secs(75),
        );
        World { rt, sessions }
    })
}

fuzz_target!(|data: &[u8]| {
    // First byte picks whether a device-id header accompanies the message.
    let (device_id, body) = match data.split_first() {
        Some((flag, rest)) if flag & 1 == 1 => (Some("dev-fuzz"), rest),
        Some((_, rest)) => (None, rest),
        None => (None, data),
    };
    let Ok(msg) = decode_agent_to_server(body) else { return };
    let w = world();
    let reply = w.rt.block_on(w.sessions.handle(msg, device_id));
    let _ = reply.encode_to_vec();
    if w.sessions.len() > 10_000 {
        w.sessions.sweep();
    }
});
