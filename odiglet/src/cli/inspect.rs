//! `odiglet inspect --pid PID [--json]`: what runs in one process (language, runtime version,
//! libc, environment, other agents, Go build info). With `--pod-uid` and `--container-id`
//! instead, the same for a whole container, found through its cgroup.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::{CliError, output};
use crate::inspect::{
    Inspector, RuntimeDetails,
    cgroup::{CgroupConfig, ContainerRef, PidSource, QosClass},
};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Process to inspect (host PID).
    #[arg(long, required_unless_present = "pod_uid", conflicts_with = "pod_uid")]
    pid: Option<u32>,
    /// Inspect a container instead: its pod's UID (with --container-id).
    #[arg(long, requires = "container_id")]
    pod_uid: Option<String>,
    /// The container's id, bare or as in the pod status (`containerd://<id>`).
    #[arg(long)]
    container_id: Option<String>,
    /// The container's name (for the mountinfo fallback).
    #[arg(long, default_value = "")]
    container_name: String,
    /// The pod's QoS class, which names its cgroup.
    #[arg(long, value_enum, default_value_t = Qos::Burstable)]
    qos: Qos,
    /// Root of the cgroup hierarchies.
    #[arg(long, env = "ODIGOS_CGROUP_ROOT", default_value = "/sys/fs/cgroup")]
    cgroup_root: PathBuf,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Root of the proc filesystem.
    #[arg(long, env = "ODIGOS_PROC_DIR", default_value = "/proc")]
    proc_dir: PathBuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Qos {
    Guaranteed,
    Burstable,
    Besteffort,
}

pub fn execute(args: InspectArgs) -> Result<(), CliError> {
    let Some(pid) = args.pid else {
        return container(args);
    };
    let details = Inspector::new(&args.proc_dir)
        .inspect(pid)
        .map_err(|error| {
            // One line naming the pid: the error's own message already does.
            CliError::Runtime(anyhow::Error::new(error).context("inspect"))
        })?;
    let text = if args.json {
        serde_json::to_string(&details)
            .context("cannot encode JSON")
            .map_err(CliError::Runtime)?
    } else {
        text(&details)
    };
    output::line(&text)
        .context("cannot write to stdout")
        .map_err(CliError::Runtime)
}

fn container(args: InspectArgs) -> Result<(), CliError> {
    let (Some(pod_uid), Some(container_id)) = (args.pod_uid, args.container_id) else {
        return Err(CliError::Usage(anyhow::anyhow!(
            "--pod-uid needs --container-id"
        )));
    };
    let qos = match args.qos {
        Qos::Guaranteed => QosClass::Guaranteed,
        Qos::Burstable => QosClass::Burstable,
        Qos::Besteffort => QosClass::BestEffort,
    };
    let container = ContainerRef {
        pod_uid,
        qos,
        container_id,
        container_name: args.container_name,
    };
    let config = CgroupConfig {
        cgroup_root: args.cgroup_root,
        proc_root: args.proc_dir.clone(),
    };
    let (runtime, source) = Inspector::new(&args.proc_dir)
        .inspect_container(&config, &container)
        .map_err(|e| CliError::Runtime(anyhow::Error::new(e).context("inspect container")))?;
    let mut json = serde_json::to_value(&runtime)
        .context("cannot encode JSON")
        .map_err(CliError::Runtime)?;
    let source = match source {
        PidSource::Cgroup(path) => path.display().to_string(),
        PidSource::Mountinfo => "mountinfo".to_owned(),
    };
    if let Some(object) = json.as_object_mut() {
        object.insert("pids_from".to_owned(), source.into());
    }
    output::line(&json.to_string())
        .context("cannot write to stdout")
        .map_err(CliError::Runtime)
}

/// Readable multi-line form.
fn text(details: &RuntimeDetails) -> String {
    let mut lines = vec![
        format!("pid:                   {}", details.pid),
        format!("exe:                   {}", details.exe),
        format!("language:              {}", details.language.as_str()),
        format!(
            "runtime version:       {}",
            details.runtime_version.as_deref().unwrap_or("-")
        ),
        format!(
            "libc:                  {}",
            details
                .libc
                .and_then(|l| serde_json::to_value(l).ok())
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| "-".to_owned())
        ),
        format!("secure execution mode: {}", details.secure_execution_mode),
    ];
    for (name, value) in &details.env {
        lines.push(format!("env:                   {name}={value}"));
    }
    for agent in &details.other_agents {
        lines.push(format!("other agent:           {agent}"));
    }
    if let Some(go) = &details.go {
        lines.push(format!("go version:            {}", go.version));
        lines.push(format!("go main module:        {}", go.main_module));
        for module in &go.modules {
            lines.push(format!(
                "go module:             {} {}",
                module.path, module.version
            ));
        }
    }
    lines.join("\n")
}
