//! Logging set-up: `tracing` to stderr, plain or JSON, level from `ODIGOS_LOG_LEVEL`, with
//! `log` records (aya, aya-log) bridged in. The filter can be replaced while running
//! ([`set_directives`]): `odiglet run` follows Odigos' `effective-config` log levels.

use std::{io::IsTerminal, sync::OnceLock};

use clap::{Args, ValueEnum};
use tracing::info;
use tracing_subscriber::{
    Registry,
    filter::{LevelFilter, Targets},
    fmt,
    prelude::*,
    reload,
};

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
    #[error("logging is not initialized")]
    NotInitialized,
    #[error("cannot replace the log filter")]
    Reload(#[source] reload::Error),
}

/// The installed filter: the start-up directives and the handle that replaces them.
struct LiveFilter {
    base: String,
    current: std::sync::Mutex<String>,
    handle: reload::Handle<Targets, Registry>,
}

static LIVE: OnceLock<LiveFilter> = OnceLock::new();

/// Comma-separated `level`, `target` or `target=level` directives, the most specific target
/// winning, as `EnvFilter` reads them: empty ones are skipped and none at all logs nothing.
/// `Targets` instead of `EnvFilter`, whose span and field-value filters (unused here) pull in
/// a regex DFA builder: about 110 KiB of code (BENCHMARKS.md, `odiglet run`).
fn parse(directives: &str) -> Result<Targets, TelemetryError> {
    let kept: Vec<&str> = directives.split(',').filter(|d| !d.is_empty()).collect();
    if kept.is_empty() {
        return Ok(Targets::new());
    }
    kept.join(",")
        .parse()
        .map_err(|source| TelemetryError::Level {
            level: directives.to_owned(),
            source,
        })
}

/// Installs the global subscriber. Call once, before anything logs.
pub fn init(options: &LogOptions) -> Result<(), TelemetryError> {
    let (filter, handle) = reload::Layer::new(parse(&options.level)?);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match options.format {
        LogFormat::Plain => registry
            .with(
                fmt::layer()
                    // Colour codes only for a terminal, not for `kubectl logs` or files.
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
    };
    installed.map_err(|_| TelemetryError::AlreadyInitialized)?;
    let _ = LIVE.set(LiveFilter {
        base: options.level.clone(),
        current: std::sync::Mutex::new(options.level.clone()),
        handle,
    });
    Ok(())
}

/// The directives logging started with (`--log-level`/`ODIGOS_LOG_LEVEL`), if initialized.
pub fn base_directives() -> Option<&'static str> {
    LIVE.get().map(|live| live.base.as_str())
}

/// Replaces the filter; `None` goes back to the start-up directives. A change is logged under
/// the more verbose of the old and new filters, so raising or lowering the level both leave a
/// line saying so. Returns whether anything changed.
pub fn set_directives(directives: Option<&str>) -> Result<bool, TelemetryError> {
    let live = LIVE.get().ok_or(TelemetryError::NotInitialized)?;
    let wanted = directives.unwrap_or(&live.base);
    let filter = parse(wanted)?;
    let mut current = live
        .current
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *current == wanted {
        return Ok(false);
    }
    let verbosity = |f: &Targets| {
        tracing_subscriber::layer::Layer::<Registry>::max_level_hint(f)
            .unwrap_or(LevelFilter::TRACE)
    };
    let quieter = verbosity(&filter) < verbosity(&parse(&current)?);
    let announce = || info!(from = %current, to = %wanted, "log level changed");
    if quieter {
        announce();
    }
    live.handle.reload(filter).map_err(TelemetryError::Reload)?;
    if !quieter {
        announce();
    }
    *current = wanted.to_owned();
    Ok(true)
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    fn max_level(filter: &Targets) -> Option<LevelFilter> {
        tracing_subscriber::layer::Layer::<Registry>::max_level_hint(filter)
    }

    #[test]
    fn a_bare_level_applies_to_every_target() {
        let filter = parse("warn").expect("valid");
        assert!(filter.would_enable("odiglet::run", &Level::WARN));
        assert!(filter.would_enable("aya::bpf", &Level::ERROR));
        assert!(!filter.would_enable("odiglet::run", &Level::INFO));
        assert_eq!(max_level(&filter), Some(LevelFilter::WARN));
    }

    #[test]
    fn the_most_specific_target_wins_and_others_are_off() {
        let filter = parse("odiglet=trace,aya=warn").expect("valid");
        assert!(filter.would_enable("odiglet::instrument", &Level::TRACE));
        assert!(filter.would_enable("aya::bpf", &Level::WARN));
        assert!(!filter.would_enable("aya::bpf", &Level::INFO));
        assert!(!filter.would_enable("h2::codec", &Level::ERROR));

        // What `k8s::log_level` builds for a device-plugin-only level.
        let filter = parse("info,odiglet::device_plugin=debug").expect("valid");
        assert!(filter.would_enable("odiglet::device_plugin::server", &Level::DEBUG));
        assert!(!filter.would_enable("odiglet::run", &Level::DEBUG));
        assert!(filter.would_enable("odiglet::run", &Level::INFO));
        // A later directive for the same target replaces the earlier one.
        let filter = parse("info,odiglet=error,odiglet=debug").expect("valid");
        assert!(filter.would_enable("odiglet::run", &Level::DEBUG));
    }

    #[test]
    fn empty_directives_are_skipped_and_none_logs_nothing() {
        let filter = parse("info,,").expect("valid");
        assert!(filter.would_enable("odiglet", &Level::INFO));
        let filter = parse("").expect("valid");
        assert!(!filter.would_enable("odiglet", &Level::ERROR));
        assert_eq!(max_level(&filter), Some(LevelFilter::OFF));
    }

    #[test]
    fn an_unknown_level_is_an_error_naming_it() {
        let error = parse("odiglet=loud").expect_err("invalid");
        assert_eq!(error.to_string(), "invalid log level `odiglet=loud`");
        assert!(parse("a=b=c").is_err());
    }
}
