//! Shared by the benchmarks that need a Go target.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// `hello <port> [exit]`: serves `GET /hello` on 127.0.0.1:<port>; with a second argument it
/// exits after 50 ms (a short-lived process for exec/exit churn).
const SERVER: &str = "package main\n\nimport (\n\t\"io\"\n\t\"net/http\"\n\t\"os\"\n\t\"time\"\n)\n\n\
    func main() {\n\tif len(os.Args) > 2 {\n\t\tgo func() { time.Sleep(50 * time.Millisecond); \
    os.Exit(0) }()\n\t}\n\thttp.HandleFunc(\"/hello\", func(w http.ResponseWriter, r *http.Request) \
    { io.WriteString(w, \"hello\") })\n\thttp.ListenAndServe(\"127.0.0.1:\"+os.Args[1], nil)\n}\n";

/// The workspace root and the Go 1.25.5 the benchmarks build their targets with; `None`, after
/// saying why, when benchmark `name` cannot run here (not root, or Go not set up).
pub fn privileged_go(name: &str) -> Option<(PathBuf, PathBuf)> {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED (needs root/BPF): {name} benchmark");
        return None;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let go = root.join("target/tools/go-1.25.5/bin/go");
    if !go.exists() {
        println!("SKIPPED: {} missing: run `cargo xtask setup`", go.display());
        return None;
    }
    Some((root, go))
}

/// Builds the hello server with `go` in `dir`.
pub fn build_go_server(go: &Path, dir: &Path) -> PathBuf {
    build_go(go, dir, SERVER)
}

/// Builds the Go program `source` (standard library only) with `go` in `dir`.
pub fn build_go(go: &Path, dir: &Path, source: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("bench dir");
    std::fs::write(dir.join("main.go"), source).expect("write main.go");
    std::fs::write(dir.join("go.mod"), "module example.com/hello\n\ngo 1.19\n").expect("go.mod");
    let out = dir.join("hello");
    let status = Command::new(go)
        .current_dir(dir)
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .status()
        .expect("go build runs");
    assert!(status.success(), "go build failed");
    out
}
