//! Project tasks. `cargo xtask ci` is what `.ci/run` calls; every step installs or builds what
//! it needs and says so in one line.
#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "xtask reports progress on the terminal"
)]

mod bench;
mod build_ebpf;
mod debian_go;
mod demo;
mod exec;
mod fuzz;
mod gen_offsets;
mod lint;
mod run;
mod setup;
mod test;
mod validate_deploy;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "odiglet project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install, idempotently, the eBPF toolchain and what the tests need.
    Setup,
    /// Build the eBPF objects (odiglet-ebpf) for bpfel-unknown-none.
    BuildEbpf,
    /// cargo fmt --check, clippy for the host and for the eBPF target.
    Lint,
    /// Run every test (privileged ones too when root).
    Test,
    /// Validate deploy/: manifests against Kubernetes 1.29-1.34 schemas, checkov scan.
    ValidateDeploy,
    /// What CI runs: setup, build-ebpf, lint, validate-deploy, test, fuzz.
    Ci,
    /// The main job: build two Go services, trace them with odiglet, print the traces.
    Demo,
    /// Run the benchmarks (see BENCHMARKS.md).
    Bench,
    /// Run every fuzz target for a bounded time.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = fuzz::CI_SECONDS_PER_TARGET)]
        seconds: u32,
    },
    /// Regenerate odiglet's Go struct offsets table from Go 1.19 and 1.21-1.27 and Debian's
    /// grpc-go (slow; not in CI).
    GenOffsets {
        /// Regenerate into target/gen-offsets/ and fail if the committed table differs.
        #[arg(long)]
        check: bool,
    },
    /// Set up, build and run odiglet (default: `processes`, streaming process events).
    Run {
        /// Arguments for odiglet.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::BuildEbpf => build_ebpf::run(),
        Task::Lint => lint::run(),
        Task::Test => test::run(),
        Task::ValidateDeploy => validate_deploy::run(),
        Task::Ci => ci(),
        Task::Demo => demo::run(),
        Task::Bench => bench::run(),
        Task::Fuzz { seconds } => fuzz::run(seconds),
        Task::GenOffsets { check } => gen_offsets::run(check),
        Task::Run { args } => run::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn ci() -> anyhow::Result<()> {
    setup::run()?;
    build_ebpf::run()?;
    lint::run()?;
    validate_deploy::run()?;
    test::run()?;
    fuzz::run(fuzz::CI_SECONDS_PER_TARGET)
}
