//! `odiglet init`: the DaemonSet's init container. Installs or updates the agents shipped in
//! the image into the host directory pods mount, without breaking agents in use.

use std::{ffi::OsString, path::PathBuf};

use anyhow::Context;
use clap::Args;

use super::{CliError, output};
use crate::agents_dir::{self, SyncConfig};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The agents as shipped in odiglet's image.
    #[arg(long, value_name = "DIR", default_value = "/instrumentations")]
    source: PathBuf,
    /// The host directory that pods mount (created when missing).
    #[arg(long, value_name = "DIR", default_value = "/var/odigos")]
    target: PathBuf,
    /// A top-level entry of the target that is not an agent and is left alone (repeatable;
    /// replaces the default).
    #[arg(long, value_name = "NAME", default_value = "exchange")]
    preserve: Vec<OsString>,
    /// Root of the proc filesystem, to find agent files that processes hold.
    #[arg(long, env = "ODIGOS_PROC_DIR", default_value = "/proc")]
    proc_dir: PathBuf,
    /// Print what the sync did as one JSON object.
    #[arg(long)]
    json: bool,
}

pub fn execute(args: InitArgs) -> Result<(), CliError> {
    if !args.source.is_dir() {
        return Err(CliError::Usage(anyhow::anyhow!(
            "--source {} is not a directory",
            args.source.display()
        )));
    }
    let config = SyncConfig {
        preserve: args.preserve,
        proc_root: args.proc_dir,
        ..SyncConfig::new(args.source, args.target)
    };
    let report = agents_dir::sync(&config)
        .with_context(|| format!("cannot install the agents into {}", config.target.display()))
        .map_err(CliError::Runtime)?;
    if args.json {
        let line = serde_json::to_string(&report)
            .context("cannot encode the report")
            .map_err(CliError::Runtime)?;
        output::line(&line)
            .context("cannot write the report")
            .map_err(CliError::Runtime)?;
    }
    Ok(())
}
