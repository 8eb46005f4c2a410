//! `odiglet inspect --pid PID [--json]`: what runs in one process (language, runtime version,
//! libc, environment, other agents, Go build info).

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::{CliError, output};
use crate::inspect::{Inspector, RuntimeDetails};

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Process to inspect (host PID).
    #[arg(long)]
    pid: u32,
    /// One JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Root of the proc filesystem.
    #[arg(long, env = "ODIGOS_PROC_DIR", default_value = "/proc")]
    proc_dir: PathBuf,
}

pub fn execute(args: InspectArgs) -> Result<(), CliError> {
    let details = Inspector::new(&args.proc_dir)
        .inspect(args.pid)
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
