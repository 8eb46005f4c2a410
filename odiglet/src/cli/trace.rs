//! `odiglet trace`: standalone eBPF instrumentation of local Go processes, by PID or by
//! executable (then also the processes that start later, through the lifecycle probe).
//! Spans go to the node collector over OTLP/gRPC, or to stdout as OTLP/JSON lines.

use std::{
    collections::HashSet,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use clap::{ArgGroup, Args, ValueEnum};
use tracing::{info, warn};

use super::CliError;
use crate::{
    export::{DEFAULT_OTLP_ENDPOINT, ExportTarget, ExporterConfig},
    instrument::{GoCounters, LIBRARIES, library_bits, resolve_targets},
    manager::{DEFAULT_SPAN_RING_BYTES, Engine},
    pipeline::ResourceAttributes,
    process::{
        DEFAULT_LIFECYCLE_RING_BYTES, ProcessEvent, ProcessEventKind, ProcessWatcher, WatcherConfig,
    },
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StdoutFormat {
    /// One OTLP/JSON `ExportTraceServiceRequest` per line, as the collector's file exporter.
    Json,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("targets").required(true).args(["pids", "exe"])))]
pub struct TraceArgs {
    /// A Go process to instrument (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,
    /// Instrument every process running this executable, now and as they start.
    #[arg(long, value_name = "PATH", conflicts_with = "pids")]
    exe: Option<PathBuf>,
    /// `service.name` of the spans (default: the executable's file name).
    #[arg(long)]
    service_name: Option<String>,
    /// OTLP/gRPC endpoint to export to (the node collector).
    #[arg(long, default_value = DEFAULT_OTLP_ENDPOINT)]
    otlp_endpoint: String,
    /// Write spans to stdout instead of exporting them.
    #[arg(long, value_enum)]
    stdout: Option<StdoutFormat>,
    /// Do not inject `traceparent` into outgoing HTTP/1 requests and gRPC calls.
    #[arg(long)]
    no_propagation: bool,
    /// A Go library not to instrument, by import path: `net/http`, `google.golang.org/grpc`
    /// or `database/sql` (repeatable).
    #[arg(long = "disable-library", value_name = "IMPORT_PATH", value_parser = known_library)]
    disabled_libraries: Vec<String>,
    /// Root of the proc filesystem.
    #[arg(long, env = "ODIGOS_PROC_DIR", default_value = "/proc")]
    proc_dir: PathBuf,
    /// Span ring-buffer size in bytes (a power of two, at least a page).
    #[arg(long, env = "ODIGLET_SPAN_RING_BYTES", alias = "ring-buffer-bytes",
        default_value_t = DEFAULT_SPAN_RING_BYTES, value_parser = super::ring_bytes)]
    span_ring_bytes: u32,
    /// Lifecycle-event ring-buffer size in bytes (a power of two, at least a page).
    #[arg(long, env = "ODIGLET_LIFECYCLE_RING_BYTES",
        default_value_t = DEFAULT_LIFECYCLE_RING_BYTES, value_parser = super::ring_bytes)]
    lifecycle_ring_bytes: u32,
    /// How the Go uprobes attach.
    #[arg(long, env = "ODIGLET_UPROBE_LINKS", value_enum, default_value_t)]
    uprobe_links: super::UprobeLinksArg,
}

fn known_library(name: &str) -> Result<String, String> {
    if LIBRARIES.iter().any(|(known, _)| *known == name) {
        return Ok(name.to_owned());
    }
    let known: Vec<&str> = LIBRARIES.iter().map(|(known, _)| *known).collect();
    Err(format!("unknown library (known: {})", known.join(", ")))
}

pub fn execute(args: TraceArgs) -> Result<(), CliError> {
    if let Some(exe) = &args.exe
        && let Err(error) = std::fs::metadata(exe)
    {
        let error = anyhow::Error::new(error).context(format!("--exe {}", exe.display()));
        return Err(CliError::Usage(error));
    }
    super::runtime()?
        .block_on(trace(args))
        .map_err(CliError::Runtime)
}

/// How often probe drop counters are checked while tracing.
const COUNTER_CHECK_INTERVAL: Duration = Duration::from_secs(10);

async fn trace(args: TraceArgs) -> anyhow::Result<()> {
    let mut interrupted = super::Interrupted::register()?;
    let target = match args.stdout {
        Some(StdoutFormat::Json) => ExportTarget::StdoutJson,
        None => ExportTarget::OtlpGrpc {
            endpoint: args.otlp_endpoint.clone(),
        },
    };
    let engine = Engine::start(
        args.span_ring_bytes,
        args.uprobe_links.links(),
        &target,
        ExporterConfig::default(),
    )?;

    // The lifecycle probe notices the traced processes' exits and, with --exe, new ones.
    let watcher = ProcessWatcher::start(WatcherConfig {
        proc_root: args.proc_dir.clone(),
        // The scan registers running processes with the probe, so their exits are reported.
        scan_existing: true,
        ring_buffer_bytes: args.lifecycle_ring_bytes,
        ..WatcherConfig::standalone()
    })
    .context("cannot start the process-lifecycle probe")?;
    if !args.no_propagation
        && let Err(error) = engine.enable_propagation(Path::new("/proc/self/mountinfo"))
    {
        let error = anyhow::Error::new(error);
        warn!(error = %format!("{error:#}"), "outgoing traceparent injection is off");
    }
    let mut tracer = Tracer {
        engine,
        libraries: library_bits(&args.disabled_libraries),
        proc_root: args.proc_dir.clone(),
        service_name: args.service_name.clone(),
        attached: HashSet::new(),
        last_counters: GoCounters::default(),
    };
    for pid in &args.pids {
        tracer.attach(*pid);
    }
    if !args.pids.is_empty() && tracer.attached.is_empty() {
        anyhow::bail!("none of the given processes could be instrumented");
    }
    let wanted = args.exe.as_deref().map(file_identity).transpose()?;
    if let Some(exe) = &args.exe {
        // The lifecycle probe is attached: from here every exec of the executable is seen.
        info!(exe = %exe.display(), "watching for processes of the executable");
    }
    let result = tracer.run(watcher, wanted, &mut interrupted).await;

    tracer.detach_all();
    // The probes are inert for the detached processes already: their links' slow closing (a
    // kernel grace period each) overlaps the flush.
    let closing = tracer.engine.probes().take_released().close_in_background();
    let totals = tracer.engine.shutdown().await;
    closing.finished().await;
    info!(
        exported = ?totals.exported,
        reader = ?totals.reader,
        probes = ?totals.probes,
        "stopped"
    );
    result
}

/// (device, inode) of a file: what "the same executable" means across paths and symlinks.
fn file_identity(path: &Path) -> anyhow::Result<(u64, u64)> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    Ok((meta.dev(), meta.ino()))
}

struct Tracer {
    engine: Engine,
    /// `GO_LIBRARY_*` bits to instrument.
    libraries: u32,
    proc_root: PathBuf,
    service_name: Option<String>,
    attached: HashSet<u32>,
    last_counters: GoCounters,
}

impl Tracer {
    /// Runs until interrupted or, when tracing PIDs, until they have all exited.
    async fn run(
        &mut self,
        mut watcher: ProcessWatcher,
        wanted: Option<(u64, u64)>,
        interrupted: &mut super::Interrupted,
    ) -> anyhow::Result<()> {
        let mut check = tokio::time::interval(COUNTER_CHECK_INTERVAL);
        let mut lifecycle_lost = watcher.counters().lost();
        loop {
            tokio::select! {
                () = interrupted.wait() => return Ok(()),
                event = watcher.next() => match event {
                    Some(event) => self.on_event(&event, wanted),
                    None => anyhow::bail!("the process-lifecycle probe stopped"),
                },
                _ = check.tick() => {
                    self.report_drops();
                    // A lost exec record (a full ring buffer in an exec storm) would leave its
                    // process untraced for good: look for the executable's processes again.
                    let lost = watcher.counters().lost();
                    if let Some(wanted) = wanted
                        && lost > lifecycle_lost
                    {
                        self.rescan(&watcher, wanted);
                    }
                    lifecycle_lost = lost;
                }
            }
            if wanted.is_none() && self.attached.is_empty() {
                info!("every traced process exited");
                return Ok(());
            }
        }
    }

    fn on_event(&mut self, event: &ProcessEvent, wanted: Option<(u64, u64)>) {
        match event.kind {
            ProcessEventKind::Exit if self.attached.remove(&event.pid) => {
                let released = {
                    let mut probes = self.engine.probes();
                    probes.detach(event.pid);
                    probes.take_released()
                };
                if !released.is_empty() {
                    tokio::task::spawn_blocking(move || released.close());
                }
                self.engine.resources().unregister(event.pid);
                info!(pid = event.pid, "traced process exited; detached");
            }
            ProcessEventKind::Exec | ProcessEventKind::Existing => {
                let Some(wanted) = wanted else { return };
                let exe = self.proc_root.join(event.pid.to_string()).join("exe");
                if file_identity(&exe).is_ok_and(|identity| identity == wanted) {
                    self.attach(event.pid);
                }
            }
            _ => {}
        }
    }

    /// Attaches to the running processes of the `wanted` executable not traced yet.
    fn rescan(&mut self, watcher: &ProcessWatcher, wanted: (u64, u64)) {
        let Ok(entries) = std::fs::read_dir(&self.proc_root) else {
            return;
        };
        let pids: Vec<u32> = entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .filter(|pid| !self.attached.contains(pid))
            .collect();
        for pid in pids {
            let exe = self.proc_root.join(pid.to_string()).join("exe");
            if file_identity(&exe).is_ok_and(|identity| identity == wanted) {
                info!(pid, "found by a rescan after lost process events");
                self.attach(pid);
                // Its exit must be reported though its exec was not.
                if self.attached.contains(&pid)
                    && let Err(error) = watcher.track(pid)
                {
                    warn!(pid, %error, "cannot track the process; its exit may be missed");
                }
            }
        }
    }

    /// Attaches to `pid`; a process that cannot be instrumented is a logged error, not fatal.
    fn attach(&mut self, pid: u32) {
        let resolved = match resolve_targets(&self.proc_root, pid, self.libraries) {
            Ok(resolved) => resolved,
            Err(error) => {
                warn!(pid, error = %format!("{:#}", anyhow::Error::new(error)), "cannot instrument process");
                return;
            }
        };
        for skipped in &resolved.skipped {
            warn!(pid, skipped = %skipped, "library not instrumented");
        }
        if let Err(error) = self.engine.probes().attach(pid, &resolved.targets) {
            warn!(pid, error = %format!("{:#}", anyhow::Error::new(error)), "cannot attach Go probes");
            return;
        }
        let exe = std::fs::read_link(&resolved.targets.exe).ok();
        let executable_path = exe.as_ref().map(|p| p.to_string_lossy().into_owned());
        let service_name = self.service_name.clone().or_else(|| {
            exe.as_ref()
                .and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
        });
        self.engine.resources().register(
            pid,
            ResourceAttributes {
                service_name,
                executable_path,
                ..ResourceAttributes::default()
            },
        );
        self.attached.insert(pid);
        info!(
            pid,
            go = %resolved.go_version,
            offsets = ?resolved.offsets_source,
            libraries = resolved.targets.offsets.enabled_libraries,
            "attached Go probes"
        );
    }

    fn detach_all(&mut self) {
        for pid in self.attached.drain() {
            self.engine.probes().detach(pid);
            self.engine.resources().unregister(pid);
        }
    }

    /// Warns when the probes lost spans since the last check: never silent.
    fn report_drops(&mut self) {
        let now = self.engine.probes().counters();
        if now.ringbuf_full > self.last_counters.ringbuf_full {
            warn!(
                lost = now.ringbuf_full - self.last_counters.ringbuf_full,
                "span ring buffer full"
            );
        }
        if now.inject_failed > self.last_counters.inject_failed {
            warn!(failed = now.inject_failed, "traceparent injections failed");
        }
        if now.traceparent_unsearched > self.last_counters.traceparent_unsearched {
            warn!(
                requests = now.traceparent_unsearched,
                "header maps too large to search fully for traceparent"
            );
        }
        self.last_counters = now;
    }
}
