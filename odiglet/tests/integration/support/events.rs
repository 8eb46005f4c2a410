//! Collecting process events with deadlines.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use odiglet::process::{ProcessEvent, ProcessEventKind, ProcessWatcher, WatcherConfig};
use tokio::time::{Instant, timeout_at};

/// How long a test waits for an event it expects.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(30);

/// A watcher plus everything it delivered so far.
pub struct Events {
    pub watcher: ProcessWatcher,
    pub seen: Vec<ProcessEvent>,
}

impl Events {
    pub fn start(config: WatcherConfig) -> Self {
        let watcher = ProcessWatcher::start(config).expect("lifecycle probe loads and attaches");
        Self {
            watcher,
            seen: Vec::new(),
        }
    }

    /// Waits until an event matching `pred` has been delivered and returns it.
    pub async fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&ProcessEvent) -> bool,
    ) -> ProcessEvent {
        if let Some(found) = self.seen.iter().find(|e| pred(e)) {
            return found.clone();
        }
        let deadline = Instant::now() + EVENT_DEADLINE;
        loop {
            match timeout_at(deadline, self.watcher.next()).await {
                Ok(Some(event)) => {
                    let hit = pred(&event);
                    self.seen.push(event);
                    if hit {
                        return self.seen.last().cloned().expect("just pushed");
                    }
                }
                Ok(None) => panic!("watcher stopped while waiting for {what}"),
                Err(_) => panic!(
                    "no {what} within {EVENT_DEADLINE:?}; {} events seen, last: {:?}",
                    self.seen.len(),
                    self.seen.iter().rev().take(5).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Runs a sentinel process and waits for its exit: events the kernel produced before it
    /// have been delivered by then, so "never seen" assertions after this are meaningful.
    pub async fn drain_with_sentinel(&mut self, env: &[(&str, &str)]) {
        let marker = marker("sentinel");
        let mut cmd = tokio::process::Command::new("/bin/echo");
        cmd.arg(&marker).stdout(std::process::Stdio::null());
        for (key, value) in env {
            cmd.env(key, value);
        }
        let status = cmd.status().await.expect("sentinel runs");
        assert!(status.success());
        let exec = self
            .wait_for("sentinel exec", |e| has_arg(e, &marker))
            .await;
        self.wait_for("sentinel exit", |e| {
            e.kind == ProcessEventKind::Exit && e.pid == exec.pid
        })
        .await;
    }
}

/// True when the event's command line contains `arg`.
pub fn has_arg(event: &ProcessEvent, arg: &str) -> bool {
    event
        .cmdline
        .as_ref()
        .is_some_and(|args| args.iter().any(|a| a == arg))
}

/// A marker for command lines, unique across the tests running in this process.
pub fn marker(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("odiglet-{test}-{}-{n}", std::process::id())
}
