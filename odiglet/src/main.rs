//! The `odiglet` binary: parse the command line, set up logging, run the subcommand.

use std::process::ExitCode;

use clap::Parser;
use odiglet::{cli, heap, telemetry};

fn main() -> ExitCode {
    heap::configure();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let usage = error.use_stderr();
            // Help and version go to stdout and succeed; usage errors exit 64 (EX_USAGE).
            let _ = error.print();
            return if usage {
                ExitCode::from(cli::EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(error) = telemetry::init(&cli.log) {
        cli::report_error(&error.into());
        return ExitCode::from(cli::EXIT_USAGE);
    }
    cli::dispatch(cli)
}
