//! `odiglet processes`: stream the lifecycle probe's events.

use std::{io, path::PathBuf};

use anyhow::Context;
use clap::Args;
use tracing::{info, warn};

use super::{CliError, output};
use crate::process::{
    DEFAULT_IGNORED_EXES, ProcessEvent, ProcessFilter, ProcessWatcher, VMLINUX_BTF, WatcherConfig,
};

#[derive(Debug, Args)]
pub struct ProcessesArgs {
    /// One JSON object per line instead of text.
    #[arg(long)]
    json: bool,
    /// Report only processes whose environment holds this variable (checked in the kernel).
    /// Off by default, as in standalone mode; cluster mode uses ODIGOS_POD_NAME.
    #[arg(long, value_name = "NAME")]
    env_filter: Option<String>,
    /// Executables never reported (repeatable); replaces the default list of `/pause` and shells.
    #[arg(long = "ignore-exe", value_name = "PATH")]
    ignore_exes: Vec<String>,
    /// Do not report processes that are already running at start-up.
    #[arg(long)]
    no_scan: bool,
    /// Root of the proc filesystem.
    #[arg(long, env = "ODIGOS_PROC_DIR", default_value = "/proc")]
    proc_dir: PathBuf,
    /// Kernel BTF used to resolve kernel structure offsets.
    #[arg(long, default_value = VMLINUX_BTF)]
    btf: PathBuf,
    /// Ring-buffer size in bytes (a power of two, at least a page).
    #[arg(long, default_value_t = 8 << 20, value_parser = super::ring_bytes)]
    ring_buffer_bytes: u32,
}

impl ProcessesArgs {
    fn config(self) -> Result<(WatcherConfig, bool), CliError> {
        let ignored: Vec<String> = if self.ignore_exes.is_empty() {
            DEFAULT_IGNORED_EXES.iter().map(|s| s.to_string()).collect()
        } else {
            self.ignore_exes
        };
        let filter = ProcessFilter::new(self.env_filter.as_deref(), &ignored)
            .map_err(|e| CliError::Usage(e.into()))?;
        let config = WatcherConfig {
            proc_root: self.proc_dir,
            btf_path: self.btf,
            filter,
            ring_buffer_bytes: self.ring_buffer_bytes,
            scan_existing: !self.no_scan,
            ..WatcherConfig::standalone()
        };
        Ok((config, self.json))
    }
}

pub fn execute(args: ProcessesArgs) -> Result<(), CliError> {
    let (config, json) = args.config()?;
    super::runtime()?
        .block_on(stream(config, json))
        .map_err(CliError::Runtime)
}

async fn stream(config: WatcherConfig, json: bool) -> anyhow::Result<()> {
    let mut interrupted = super::Interrupted::register()?;
    let mut watcher = ProcessWatcher::start(config).context("cannot start the lifecycle probe")?;
    info!("lifecycle probe attached; streaming process events");
    loop {
        let event = tokio::select! {
            event = watcher.next() => event,
            () = interrupted.wait() => break,
        };
        let Some(event) = event else { break };
        let line = if json {
            serde_json::to_string(&event)?
        } else {
            text(&event)
        };
        match output::line(&line) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
            Err(e) => return Err(e).context("cannot write to stdout"),
        }
    }
    let counters = watcher.counters();
    if counters.lost() > 0 {
        warn!(?counters, "some process events were lost");
    } else {
        info!(?counters, "stopped");
    }
    Ok(())
}

fn text(event: &ProcessEvent) -> String {
    let kind = serde_json::to_value(event.kind).ok();
    let kind = kind.as_ref().and_then(|k| k.as_str()).unwrap_or("?");
    let mut line = format!(
        "{kind:<8} pid={} vpid={} ppid={} comm={}",
        event.pid, event.vpid, event.ppid, event.comm
    );
    if let Some(exe) = &event.exe {
        line.push_str(&format!(" exe={exe}"));
    }
    if let Some(args) = &event.cmdline {
        line.push_str(&format!(" args={args:?}"));
    }
    if let Some(id) = &event.container_id {
        line.push_str(&format!(" container={}", &id[..id.len().min(12)]));
    }
    line
}
