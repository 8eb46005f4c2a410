//! `odiglet init`: the DaemonSet's init container. Installs or updates the agents shipped in
//! the image into the host directory pods mount, without breaking agents in use; then, given
//! the node's name, labels the node for Odigos and lifts its start-up taint.

use std::{ffi::OsString, path::PathBuf};

use anyhow::Context;
use clap::Args;

use super::{CliError, output};
use crate::{
    agents_dir::{self, SyncConfig},
    node_setup,
};

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
    /// This node: once the agents are in place, label it `odigos.io/odiglet-oss-installed`
    /// and remove its `odigos.io/needs-init` taint (needs API access; skipped when unset).
    #[arg(long, env = "NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// The node is on GKE Autopilot, which forbids changing nodes (also detected by name).
    #[arg(long, env = "GKE_AUTOPILOT")]
    gke_autopilot: bool,
    /// Print what was done as one JSON object.
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
    let node = match &args.node_name {
        Some(node) => Some(set_up_node(node, args.gke_autopilot)?),
        None => None,
    };
    if args.json {
        let line = serde_json::json!({"agents": report, "node": node}).to_string();
        output::line(&line)
            .context("cannot write the report")
            .map_err(CliError::Runtime)?;
    }
    Ok(())
}

fn set_up_node(node: &str, autopilot: bool) -> Result<node_setup::NodeSetupOutcome, CliError> {
    super::runtime()?
        .block_on(async {
            let client = kube::Client::try_default()
                .await
                .context("no access to the API server (in-cluster or kubeconfig)")?;
            node_setup::set_up_node(client, node, autopilot)
                .await
                .map_err(anyhow::Error::new)
        })
        .map_err(CliError::Runtime)
}
