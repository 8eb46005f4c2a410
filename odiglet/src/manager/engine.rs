//! The span path every eBPF instrumentation shares: the Go probes loaded once, their span ring
//! drained by a [`SpanReader`] into an [`Exporter`], and the per-PID resource registry the
//! reader consults. `odiglet trace` and the manager both run on one [`Engine`].

use std::{
    path::Path,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use tokio::{sync::oneshot, task::JoinHandle};

use crate::{
    export::{ExportCounters, ExportCountersSnapshot, ExportTarget, Exporter, ExporterConfig},
    instrument::{AttachError, GoCounters, GoProbes, UprobeLinks},
    pipeline::{ReaderCounters, ReaderCountersSnapshot, ResourceRegistry, SpanReader},
    process::cgroup2_mount_from_mountinfo,
    ring,
};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot load the Go probes")]
    Probes(#[source] AttachError),
    #[error("cannot poll the span ring buffer")]
    Ring(#[source] std::io::Error),
    #[error("cannot set up the span exporter")]
    Exporter(#[source] crate::export::OtlpGrpcError),
    #[error("cannot read {path}")]
    Mountinfo {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no cgroup v2 hierarchy is mounted (outgoing propagation needs one)")]
    NoCgroup2,
    #[error("cannot attach the propagation programs")]
    Propagation(#[source] AttachError),
}

/// What an engine did over its life, returned by [`Engine::shutdown`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineTotals {
    pub exported: ExportCountersSnapshot,
    pub reader: ReaderCountersSnapshot,
    pub probes: GoCounters,
}

/// Loaded probes plus the running reader and exporter.
pub struct Engine {
    /// Shared so metrics can read the probes' counters while the owner attaches.
    probes: Arc<Mutex<GoProbes>>,
    resources: ResourceRegistry,
    exporter: Exporter,
    reader: JoinHandle<()>,
    stop_reader: oneshot::Sender<()>,
    reader_counters: Arc<ReaderCounters>,
}

impl Engine {
    /// Loads the probes and starts draining spans to `target`. Needs a tokio runtime.
    pub fn start(
        ring_buffer_bytes: u32,
        links: Option<UprobeLinks>,
        target: &ExportTarget,
        exporter: ExporterConfig,
    ) -> Result<Self, EngineError> {
        let mut probes =
            GoProbes::load_for(ring_buffer_bytes, links).map_err(EngineError::Probes)?;
        let spans = probes.take_spans().map_err(EngineError::Probes)?;
        let spans = ring::register(spans).map_err(EngineError::Ring)?;
        let exporter = Exporter::for_target(target, exporter).map_err(EngineError::Exporter)?;
        let resources = ResourceRegistry::new();
        let reader = SpanReader::new(spans, resources.clone(), exporter.handle());
        let reader_counters = reader.counters();
        let (stop_reader, reader_stopped) = oneshot::channel::<()>();
        let reader = reader.spawn(async move {
            let _ = reader_stopped.await;
        });
        Ok(Self {
            probes: Arc::new(Mutex::new(probes)),
            resources,
            exporter,
            reader,
            stop_reader,
            reader_counters,
        })
    }

    /// The probes, locked for attach, detach or reconfiguration (short, synchronous calls).
    pub fn probes(&self) -> MutexGuard<'_, GoProbes> {
        self.probes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A handle on the probes for readers of their counters.
    pub fn shared_probes(&self) -> Arc<Mutex<GoProbes>> {
        Arc::clone(&self.probes)
    }

    pub fn resources(&self) -> &ResourceRegistry {
        &self.resources
    }

    pub fn export_counters(&self) -> Arc<ExportCounters> {
        self.exporter.counters()
    }

    pub fn reader_counters(&self) -> Arc<ReaderCounters> {
        Arc::clone(&self.reader_counters)
    }

    /// Turns on outgoing `traceparent` injection for the whole host cgroup tree, found through
    /// `mountinfo` (normally `/proc/self/mountinfo`).
    pub fn enable_propagation(&self, mountinfo: &Path) -> Result<(), EngineError> {
        let text = std::fs::read_to_string(mountinfo).map_err(|source| EngineError::Mountinfo {
            path: mountinfo.display().to_string(),
            source,
        })?;
        let cgroup2 = cgroup2_mount_from_mountinfo(&text).ok_or(EngineError::NoCgroup2)?;
        self.probes()
            .enable_propagation(&cgroup2)
            .map_err(EngineError::Propagation)
    }

    /// Stops the reader after a last drain, flushes the exporter and returns the totals. The
    /// caller detaches first, so no span is committed after the last drain.
    pub async fn shutdown(self) -> EngineTotals {
        let _ = self.stop_reader.send(());
        let _ = self.reader.await;
        let probes = self
            .probes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .counters();
        let exported = self.exporter.shutdown().await;
        EngineTotals {
            exported,
            reader: self.reader_counters.snapshot(),
            probes,
        }
    }
}
