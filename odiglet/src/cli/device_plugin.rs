//! `odiglet device-plugin`: run only the kubelet device plugin until SIGTERM.

use std::{net::IpAddr, path::PathBuf};

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

use super::CliError;
use crate::device_plugin::{DevicePluginConfig, DevicePlugins, ResourceConfig, resources};

#[derive(Debug, Args)]
pub struct DevicePluginArgs {
    /// Kubelet's root directory; sockets go in its `device-plugins/` subdirectory.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/kubelet")]
    kubelet_dir: PathBuf,
    /// Host directory holding the instrumentation agents, mounted into pods.
    #[arg(long, value_name = "DIR", default_value = "/var/odigos")]
    agents_dir: PathBuf,
    /// This node's IP, handed to agents for the OpAMP and OTLP endpoints.
    #[arg(long, value_name = "IP", env = "NODE_IP")]
    node_ip: Option<IpAddr>,
    /// JSON file with `resources` ([{"name", "language"}]) and `devices_per_resource`;
    /// omitted keys keep their defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// The `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    resources: Option<Vec<ResourceConfig>>,
    devices_per_resource: Option<u32>,
}

impl DevicePluginArgs {
    fn config(self) -> anyhow::Result<DevicePluginConfig> {
        let node_ip = self.node_ip.context("--node-ip or NODE_IP is required")?;
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                serde_json::from_str::<FileConfig>(&text)
                    .with_context(|| format!("invalid config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let mut config = DevicePluginConfig::new(&self.kubelet_dir, self.agents_dir, node_ip);
        if let Some(list) = file.resources {
            config.resources = list;
        }
        config.device_count = file
            .devices_per_resource
            .unwrap_or(resources::DEFAULT_DEVICE_COUNT);
        Ok(config)
    }
}

pub fn execute(args: DevicePluginArgs) -> Result<(), CliError> {
    let config = args.config().map_err(CliError::Usage)?;
    super::runtime()?.block_on(async move {
        let mut interrupted = super::Interrupted::register().map_err(CliError::Runtime)?;
        let plugins = DevicePlugins::start(config).map_err(|e| CliError::Usage(e.into()))?;
        interrupted.wait().await;
        // Leave kubelet an empty list and no stale sockets.
        plugins.shutdown().await;
        Ok(())
    })
}
