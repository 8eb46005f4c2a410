//! Logging set-up: `tracing` to stderr, plain or JSON, level from `ODIGOS_LOG_LEVEL`, with
//! `log` records (aya, aya-log) bridged in.

use clap::{Args, ValueEnum};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

/// Logging options shared by every subcommand.
#[derive(Clone, Debug, Args)]
pub struct LogOptions {
    /// Log level or filter directives (`info`, `debug`, `odiglet=trace,aya=warn`).
    #[arg(
        long = "log-level",
        env = "ODIGOS_LOG_LEVEL",
        default_value = "info",
        global = true
    )]
    pub level: String,
    /// Log line format.
    #[arg(long = "log-format", value_enum, default_value_t, global = true)]
    pub format: LogFormat,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid log level `{level}`")]
    Level {
        level: String,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    #[error("logging is already initialized")]
    AlreadyInitialized,
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(options: &LogOptions) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_new(&options.level).map_err(|source| TelemetryError::Level {
        level: options.level.clone(),
        source,
    })?;
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match options.format {
        LogFormat::Plain => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
    };
    installed.map_err(|_| TelemetryError::AlreadyInitialized)
}
