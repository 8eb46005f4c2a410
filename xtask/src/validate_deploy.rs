//! `cargo xtask validate-deploy`: renders the two kustomizations of `deploy/` (privileged and
//! unprivileged), validates every object against the upstream OpenAPI schemas of each
//! Kubernetes version odiglet supports, and scans the objects and the Dockerfile with checkov.
//! The findings a privileged node agent cannot avoid are skipped in the files themselves
//! (`checkov.io/skipN` annotations, a `checkov:skip` comment), each justified in
//! deploy/README.md; any other finding fails.

use std::{fs, path::PathBuf, process::Command};

use anyhow::Context;

use crate::{exec, setup};

/// The Kubernetes versions odiglet's manifests must be valid for (README.md "Deploy").
pub const KUBERNETES_VERSIONS: &[&str] =
    &["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0"];

/// Kustomization directories and the name of their rendered output.
const KUSTOMIZATIONS: &[(&str, &str)] = &[
    ("deploy/kubernetes", "privileged.yaml"),
    ("deploy/kubernetes-unprivileged", "unprivileged.yaml"),
];

pub fn run() -> anyhow::Result<()> {
    setup::deploy_checks()?;
    let root = exec::workspace_root();
    let bin = setup::deploy_checks_dir().join("bin");
    let rendered_dir = root.join("target/deploy");
    fs::create_dir_all(&rendered_dir)
        .with_context(|| format!("cannot create {}", rendered_dir.display()))?;

    let mut rendered: Vec<PathBuf> = Vec::new();
    for (dir, name) in KUSTOMIZATIONS {
        println!("validate-deploy: kubectl kustomize {dir}");
        let yaml = exec::output(
            Command::new(bin.join("kubectl"))
                .arg("kustomize")
                .arg(root.join(dir)),
        )?;
        let path = rendered_dir.join(name);
        fs::write(&path, yaml).with_context(|| format!("cannot write {}", path.display()))?;
        rendered.push(path);
    }

    for version in KUBERNETES_VERSIONS {
        println!("validate-deploy: kubernetes-validate --strict for Kubernetes {version}");
        exec::run(
            Command::new(bin.join("kubernetes-validate"))
                .args(["--strict", "--quiet", "-k", version])
                .args(&rendered),
        )?;
    }

    println!("validate-deploy: checkov (kubernetes, dockerfile)");
    let mut checkov = Command::new(bin.join("checkov"));
    for path in &rendered {
        checkov.arg("--file").arg(path);
    }
    checkov
        .arg("--file")
        .arg(root.join("deploy/Dockerfile"))
        .args(["--framework", "kubernetes", "dockerfile"])
        // Offline: no guideline download from the vendor's platform.
        .args([
            "--skip-download",
            "--compact",
            "--quiet",
            "--output",
            "json",
        ])
        .current_dir(&rendered_dir);
    // Exit code 1 means findings; the report says which (and whether anything was scanned).
    let out = checkov
        .output()
        .context("cannot start checkov (run `cargo xtask setup`)")?;
    check_checkov_report(&String::from_utf8_lossy(&out.stdout))
}

/// Fails on any finding, and on a scan that parsed nothing: checkov passes files it cannot
/// parse without a word.
fn check_checkov_report(json: &str) -> anyhow::Result<()> {
    let report: serde_json::Value =
        serde_json::from_str(json).context("checkov printed no JSON report")?;
    let runs = match report {
        serde_json::Value::Array(runs) => runs,
        run => vec![run],
    };
    let mut findings = Vec::new();
    for framework in ["kubernetes", "dockerfile"] {
        let run = runs
            .iter()
            .find(|r| r["check_type"] == framework)
            .with_context(|| format!("checkov reported no {framework} scan"))?;
        let summary = &run["summary"];
        println!(
            "validate-deploy: checkov {framework}: {} resources, {} passed, {} skipped (deploy/README.md), {} failed",
            summary["resource_count"], summary["passed"], summary["skipped"], summary["failed"]
        );
        if summary["resource_count"].as_u64().unwrap_or(0) == 0
            || summary["parsing_errors"].as_u64().unwrap_or(1) != 0
        {
            anyhow::bail!("checkov could not parse the {framework} files: {summary}");
        }
        for check in run["results"]["failed_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            findings.push(format!(
                "{} {} ({} in {})",
                check["check_id"].as_str().unwrap_or("?"),
                check["check_name"].as_str().unwrap_or("?"),
                check["resource"].as_str().unwrap_or("?"),
                check["file_path"].as_str().unwrap_or("?"),
            ));
        }
    }
    if !findings.is_empty() {
        anyhow::bail!(
            "checkov findings (fix them, or skip one in the file with a justification in deploy/README.md):\n  {}",
            findings.join("\n  ")
        );
    }
    Ok(())
}
