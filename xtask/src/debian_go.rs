//! Go programs built offline in module mode against Debian's Go library sources
//! (`golang-*-dev` under `/usr/share/gocode`): the build directory gets a `go.mod` requiring
//! every module the program imports (transitively) at the version of its Debian package, and
//! a `vendor/` of symlinks into the Debian tree with its `modules.txt`. The binary's module
//! list then names real versions (`google.golang.org/grpc v1.33.3`), which GOPATH-mode builds
//! lack and odiglet's version gates and offsets table need.
//!
//! Standard library only: `cargo xtask gen-offsets` and the integration tests (which include
//! this file by path) both build with it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// Where Debian installs Go library sources; a GOPATH.
pub const DEBIAN_GOPATH: &str = "/usr/share/gocode";
/// Debian's Go, the toolchain that lists packages in GOPATH mode.
pub const DEBIAN_GO: &str = "/usr/lib/go-1.19/bin/go";

/// One Debian-packaged Go module a program uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VendoredModule {
    /// `google.golang.org/grpc`.
    pub path: String,
    /// The Go version of the Debian package's version: `v1.33.3`.
    pub version: String,
    /// The language version of the module's `go.mod`.
    pub go: String,
    /// The module's packages the program imports.
    pub packages: Vec<String>,
}

/// The Go module version a Debian package version stands for: `1.33.3-2` is `v1.33.3`,
/// `1:0.7.0+dfsg-1` is `v0.7.0`, the snapshot `0.0~git20200413.b5235f6-3` becomes the
/// pseudo-version `v0.0.0-20200413000000-b5235f6` (Debian keeps neither the commit time nor
/// the full hash, so this one never matches an upstream build's).
pub fn go_version_of_debian(debian: &str) -> Option<String> {
    let upstream = debian.split_once(':').map_or(debian, |(_, rest)| rest);
    let upstream = upstream.rsplit_once('-').map_or(upstream, |(v, _)| v);
    let upstream = upstream.split('+').next()?;
    let (base, snapshot) = match upstream.split_once("~git") {
        Some((base, snapshot)) => (base, Some(snapshot)),
        None => (upstream, None),
    };
    let mut parts: Vec<&str> = base.split('.').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    parts.resize(3, "0");
    let version = format!("v{}", parts.join("."));
    match snapshot {
        None => Some(version),
        Some(snapshot) => {
            let (date, hash) = snapshot.split_once('.')?;
            (date.len() == 8 && date.bytes().all(|b| b.is_ascii_digit()))
                .then(|| format!("{version}-{date}000000-{hash}"))
        }
    }
}

/// The Debian modules `main.go` in `dir` imports, with their packages, found by listing its
/// dependencies in GOPATH mode.
pub fn modules(dir: &Path) -> Result<Vec<VendoredModule>, String> {
    let output = Command::new(DEBIAN_GO)
        .current_dir(dir)
        .args([
            "list",
            "-deps",
            "-f",
            "{{if not .Standard}}{{.ImportPath}} {{.Dir}}{{end}}",
            "main.go",
        ])
        .env("GOPATH", DEBIAN_GOPATH)
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .output()
        .map_err(|e| format!("cannot run {DEBIAN_GO}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "go list (GOPATH mode) failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let src = Path::new(DEBIAN_GOPATH).join("src");
    let mut modules: Vec<VendoredModule> = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some((package, package_dir)) = line.split_once(' ') else {
            continue;
        };
        let package_dir = Path::new(package_dir);
        if !package_dir.starts_with(&src) {
            continue; // the program itself
        }
        let root = module_root(&src, package_dir)
            .ok_or_else(|| format!("{package}: no go.mod in {}", package_dir.display()))?;
        let path = root
            .strip_prefix(&src)
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        match modules.iter_mut().find(|m| m.path == path) {
            Some(module) => module.packages.push(package.to_owned()),
            None => modules.push(VendoredModule {
                version: debian_version(&root)?,
                go: go_directive(&root.join("go.mod")).unwrap_or_else(|| "1.16".to_owned()),
                packages: vec![package.to_owned()],
                path,
            }),
        }
    }
    modules.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(modules)
}

/// Writes `go.mod` (module `example.com/<name>`) and `vendor/` for `modules` into `dir`.
pub fn write_vendor(dir: &Path, name: &str, modules: &[VendoredModule]) -> Result<(), String> {
    let io = |what: &Path, e: std::io::Error| format!("cannot write {}: {e}", what.display());
    let mut go_mod = format!("module example.com/{name}\n\ngo 1.19\n\nrequire (\n");
    let mut modules_txt = String::new();
    for module in modules {
        go_mod.push_str(&format!("\t{} {}\n", module.path, module.version));
        modules_txt.push_str(&format!(
            "# {} {}\n## explicit; go {}\n",
            module.path, module.version, module.go
        ));
        for package in &module.packages {
            modules_txt.push_str(package);
            modules_txt.push('\n');
        }
        let link = dir.join("vendor").join(&module.path);
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        }
        let target = Path::new(DEBIAN_GOPATH).join("src").join(&module.path);
        std::os::unix::fs::symlink(&target, &link).map_err(|e| io(&link, e))?;
    }
    go_mod.push_str(")\n");
    let go_mod_path = dir.join("go.mod");
    fs::write(&go_mod_path, go_mod).map_err(|e| io(&go_mod_path, e))?;
    let txt = dir.join("vendor/modules.txt");
    fs::write(&txt, modules_txt).map_err(|e| io(&txt, e))
}

/// `go build` of the vendored module in `dir` (see [`write_vendor`]) with `flags`, offline.
pub fn build_command(go: &Path, dir: &Path, out: &Path, flags: &[&str]) -> Command {
    let mut cmd = Command::new(go);
    cmd.current_dir(dir)
        .args(["build", "-o"])
        .arg(out)
        .args(flags)
        .arg(".")
        .env("GOFLAGS", "-mod=vendor")
        .env("GOPROXY", "off")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0");
    cmd
}

/// Writes `main` into `dir` with its vendored Debian modules; returns the modules.
pub fn prepare(dir: &Path, name: &str, main: &str) -> Result<Vec<VendoredModule>, String> {
    let main_go = dir.join("main.go");
    fs::write(&main_go, main).map_err(|e| format!("cannot write {}: {e}", main_go.display()))?;
    let modules = modules(dir)?;
    write_vendor(dir, name, &modules)?;
    Ok(modules)
}

/// The nearest directory from `dir` up (within `src`) with a `go.mod`.
fn module_root(src: &Path, dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .take_while(|d| d.starts_with(src) && *d != src)
        .find(|d| d.join("go.mod").is_file())
        .map(Path::to_owned)
}

/// The `go` directive of a `go.mod`.
fn go_directive(go_mod: &Path) -> Option<String> {
    let text = fs::read_to_string(go_mod).ok()?;
    text.lines()
        .find_map(|line| line.trim().strip_prefix("go "))
        .map(|v| v.trim().to_owned())
}

/// The Go version of the Debian package that installed `dir`.
fn debian_version(dir: &Path) -> Result<String, String> {
    let query = |args: &[&str]| -> Result<String, String> {
        let output = Command::new("dpkg-query")
            .args(args)
            .output()
            .map_err(|e| format!("cannot run dpkg-query: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "dpkg-query {args:?}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let dir_text = dir.to_string_lossy();
    let owners = query(&["-S", &dir_text])?;
    let package = owners
        .lines()
        .find_map(|line| line.split_once(": ").filter(|(_, p)| *p == dir_text))
        .map(|(package, _)| package.to_owned())
        .ok_or_else(|| format!("no Debian package installed {dir_text}"))?;
    let version = query(&["-W", "-f", "${Version}", &package])?;
    go_version_of_debian(&version)
        .ok_or_else(|| format!("{package} {version}: not a version Go understands"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_versions_become_go_module_versions() {
        assert_eq!(go_version_of_debian("1.33.3-2").as_deref(), Some("v1.33.3"));
        assert_eq!(
            go_version_of_debian("1:0.7.0+dfsg-1").as_deref(),
            Some("v0.7.0")
        );
        assert_eq!(
            go_version_of_debian("0.0~git20200413.b5235f6-3").as_deref(),
            Some("v0.0.0-20200413000000-b5235f6")
        );
        assert_eq!(go_version_of_debian("1.10-1").as_deref(), Some("v1.10.0"));
        assert_eq!(go_version_of_debian("abc-1"), None);
    }
}
