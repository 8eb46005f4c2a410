//! The command line: one module per subcommand. Each turns its arguments into the owning
//! module's configuration, validates it once, and runs.

mod device_plugin;
mod init;
mod inspect;
mod opamp_server;
mod output;
mod processes;
mod run;
mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::telemetry::LogOptions;

/// Exit code for invalid usage or configuration (sysexits' EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Exit code for failures while running.
pub const EXIT_FAILURE: u8 = 1;

/// odiglet: Odigos' node agent.
#[derive(Debug, Parser)]
#[command(name = "odiglet", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogOptions,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Stream process exec, fork and exit events from the lifecycle probe until interrupted.
    Processes(processes::ProcessesArgs),
    /// Inspect one process: language, runtime version, libc, environment, Go build info.
    Inspect(inspect::InspectArgs),
    /// Run only the kubelet device plugin (Odigos runs it as its own container).
    DevicePlugin(device_plugin::DevicePluginArgs),
    /// Instrument local Go processes with eBPF and export their spans (OTLP or stdout JSON).
    Trace(trace::TraceArgs),
    /// Run only the OpAMP server for native agents (standalone unless wired into `run`).
    OpampServer(opamp_server::OpampServerArgs),
    /// Run the node agent: device plugin, OpAMP server, Kubernetes watches, runtime detection
    /// and eBPF instrumentation, until SIGTERM.
    Run(Box<run::RunArgs>),
    /// Install or update the agents in the host directory pods mount (the init container).
    Init(init::InitArgs),
}

/// Why a subcommand failed: invalid configuration (exit 64) or a runtime failure (exit 1).
#[derive(Debug)]
pub enum CliError {
    Usage(anyhow::Error),
    Runtime(anyhow::Error),
}

impl From<crate::telemetry::TelemetryError> for CliError {
    fn from(error: crate::telemetry::TelemetryError) -> Self {
        Self::Usage(error.into())
    }
}

/// Runs the parsed command and maps its outcome to an exit code.
pub fn dispatch(cli: Cli) -> ExitCode {
    let result = match cli.command {
        Command::Processes(args) => processes::execute(args),
        Command::Inspect(args) => inspect::execute(args),
        Command::DevicePlugin(args) => device_plugin::execute(args),
        Command::Trace(args) => trace::execute(args),
        Command::OpampServer(args) => opamp_server::execute(args),
        Command::Run(args) => run::execute(*args),
        Command::Init(args) => init::execute(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            report_error(&error);
            match error {
                CliError::Usage(_) => ExitCode::from(EXIT_USAGE),
                CliError::Runtime(_) => ExitCode::from(EXIT_FAILURE),
            }
        }
    }
}

/// Prints an error and its causes as one line.
pub fn report_error(error: &CliError) {
    let (CliError::Usage(error) | CliError::Runtime(error)) = error;
    output::error_line(&format!("odiglet: {error:#}"));
}

/// Smallest ring buffer accepted: one page.
const PAGE_BYTES: u32 = 4096;

/// Value parser of the `--*-ring-bytes` flags: the kernel wants a power of two, at least a page.
fn ring_bytes(value: &str) -> Result<u32, String> {
    let bytes: u32 = value.parse().map_err(|e| format!("{e}"))?;
    if bytes.is_power_of_two() && bytes >= PAGE_BYTES {
        Ok(bytes)
    } else {
        Err(format!("must be a power of two of at least {PAGE_BYTES}"))
    }
}

/// `--uprobe-links`: how the Go uprobes attach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
enum UprobeLinksArg {
    /// uprobe-multi links where the kernel has them (Linux 6.6+), else perf events.
    #[default]
    Auto,
    /// uprobe-multi links only.
    Multi,
    /// One perf event per probe point.
    PerfEvent,
}

impl UprobeLinksArg {
    fn links(self) -> Option<crate::instrument::UprobeLinks> {
        use crate::instrument::UprobeLinks;
        match self {
            Self::Auto => None,
            Self::Multi => Some(UprobeLinks::Multi),
            Self::PerfEvent => Some(UprobeLinks::PerfEvent),
        }
    }
}

/// Worker threads at most, unless `TOKIO_WORKER_THREADS` says otherwise. The span path is two
/// tasks (ring reader, exporter) and the rest is control-plane work, while each worker costs
/// resident memory (its stack, its malloc arena): 0.06-0.1 MiB, so tokio's default of one per
/// CPU would be 4-6 MiB on a 64-CPU node (BENCHMARKS.md, `odiglet run`).
const MAX_WORKERS: usize = 4;

/// A multi-threaded runtime for long-running subcommands.
fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        builder.worker_threads(cpus.min(MAX_WORKERS));
    }
    builder
        .enable_all()
        .build()
        .map_err(|e| CliError::Runtime(anyhow::Error::new(e).context("cannot start the runtime")))
}

/// SIGTERM and SIGINT, caught from registration on: one that arrives while a command is still
/// starting is acted on once it waits, instead of killing it before its cleanup.
struct Interrupted {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Interrupted {
    /// Catches the signals from now on. Needs a tokio runtime.
    fn register() -> anyhow::Result<Self> {
        use anyhow::Context as _;
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot catch SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot catch SIGINT")?,
        })
    }

    /// Resolves when SIGINT or SIGTERM has arrived since registration.
    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
