//! Time each Go probe program spends per hit, from the kernel's own accounting: with BPF run
//! statistics on (`BPF_ENABLE_STATS`), every program's `run_time_ns` and `run_cnt` grow by the
//! time and count of its runs, so driving a known set of requests and dividing the deltas gives
//! nanoseconds per invocation, free of the scheduling and trap noise a throughput ratio carries.
//! The floor is `uprobe_floor`'s empty program at the same points, in the same run.
//!
//! The programs are those `cargo xtask build-ebpf` wrote (`target/ebpf/...`), loaded here, given
//! the process's offsets in `GO_PROCESSES` and attached where `GoProbes::attach` puts them, with
//! the span ring drained by a thread: the same instructions odiglet embeds, measured without
//! rebuilding odiglet after each change to them (the `go_http` bench runs the real `GoProbes`).
//!
//! Targets: a Go 1.25 server (swiss-table header maps) and, when `cargo xtask setup` installed
//! it, a Go 1.22 one (bucket maps), each serving `/hello` and `/call` (which makes one outgoing
//! `net/http` request to its own `/hello`: server, client and connection probes all run).
//! Needs root, Go and the eBPF objects (`cargo xtask build-ebpf`).
//! `cargo bench -p odiglet --bench go_probe_cost`; with `GO_PROBE_COST_COMPARE=<object>`, a
//! second Go object (one built before a change) takes turns with the built one in the same
//! rounds, and the table of their ratios is the before/after figure.
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::{
    io::{BufReader, Write},
    net::{TcpListener, TcpStream},
    num::NonZeroU32,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

#[allow(dead_code, reason = "this bench builds its own target")]
mod common;
#[path = "common/floor.rs"]
mod floor;
#[allow(dead_code, reason = "this bench loads the programs itself")]
#[path = "common/go.rs"]
mod go_arms;

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap as BpfHashMap, MapData, RingBuf},
    programs::{
        UProbe, loaded_programs,
        uprobe::{UProbeAttachLocation, UProbeScope},
    },
    sys::Stats,
};
use floor::{attach_floor, floor_object};
use go_arms::median;
use odiglet::instrument::{ALL_LIBRARIES, ProcessTargets, resolve_targets};
use odiglet_common::go::GoOffsets;

const ROUNDS: usize = 5;
/// Requests per shape per arm: enough that a program's mean is stable to a few ns.
const REQUESTS: u64 = 4000;

/// The Go programs measured, as `GoProbes` names them.
const PROGRAMS: [&str; 5] = [
    "odiglet_go_http_server_entry",
    "odiglet_go_http_server_return",
    "odiglet_go_http_client_entry",
    "odiglet_go_http_client_return",
    "odiglet_go_http_conn_entry",
];

/// `hello <port>`: `/hello` answers at once; `/call` GETs `/hello` through `http.Get` first.
const TARGET: &str = r#"package main

import (
	"io"
	"net/http"
	"os"
)

func main() {
	hello := "http://127.0.0.1:" + os.Args[1] + "/hello"
	http.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	http.HandleFunc("/call", func(w http.ResponseWriter, r *http.Request) {
		resp, err := http.Get(hello)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		io.WriteString(w, "called")
	})
	http.ListenAndServe("127.0.0.1:"+os.Args[1], nil)
}
"#;

const TRACEPARENT: &str =
    "traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n";
/// What a browser sends besides `Host`: seven headers.
const BROWSER: &str = "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101\r\n\
    Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.5\r\n\
    Accept-Encoding: gzip, deflate\r\nCookie: session=0123456789abcdef\r\n\
    Cache-Control: no-cache\r\nX-Request-Id: 7f1c2a9e\r\n";
/// Sixteen more, so the map outgrows one group or bucket.
const MANY: &str = "X-A: 1\r\nX-B: 2\r\nX-C: 3\r\nX-D: 4\r\nX-E: 5\r\nX-F: 6\r\nX-G: 7\r\nX-H: 8\r\n\
    X-I: 9\r\nX-J: 10\r\nX-K: 11\r\nX-L: 12\r\nX-M: 13\r\nX-N: 14\r\nX-O: 15\r\nX-P: 16\r\n";

/// A request shape: its label, path and headers besides `Host`.
struct Shape(&'static str, &'static str, &'static [&'static str]);

const SHAPES: [Shape; 5] = [
    Shape("no headers", "/hello", &[]),
    Shape("7 headers", "/hello", &[BROWSER]),
    Shape("7 + traceparent", "/hello", &[BROWSER, TRACEPARENT]),
    Shape("23 + traceparent", "/hello", &[BROWSER, MANY, TRACEPARENT]),
    Shape("outgoing call", "/call", &[]),
];

/// The Go object `cargo xtask build-ebpf` built.
fn go_object(root: &Path) -> PathBuf {
    root.join("target/ebpf/bpfel-unknown-none/release/go_http")
}

/// The net/http programs of the Go object attached to `pid` with `libraries` enabled, and a
/// thread draining the span ring while it lives.
struct GoPrograms {
    ebpf: Ebpf,
    processes: BpfHashMap<MapData, u32, GoOffsets>,
    stop: Arc<AtomicBool>,
    drain: Option<JoinHandle<u64>>,
}

impl GoPrograms {
    fn attach(object: &Path, pid: u32, targets: &ProcessTargets) -> Self {
        let mut ebpf = EbpfLoader::new()
            .btf(None)
            .map_max_entries("GO_SPANS", 1 << 22)
            .load_file(object)
            .expect("load the Go object");
        let mut processes: BpfHashMap<_, u32, GoOffsets> =
            BpfHashMap::try_from(ebpf.take_map("GO_PROCESSES").expect("GO_PROCESSES"))
                .expect("hash map");
        processes
            .insert(pid, targets.offsets, 0)
            .expect("publish offsets");
        let scope = UProbeScope::OneProcess(NonZeroU32::new(pid).expect("pid"));
        let functions = [
            (&targets.http_server, PROGRAMS[0], Some(PROGRAMS[1])),
            (&targets.http_client, PROGRAMS[2], Some(PROGRAMS[3])),
            (&targets.connection, PROGRAMS[4], None),
        ];
        for (function, entry, ret) in functions {
            let function = function.as_ref().expect("a net/http function");
            let returns = ret
                .iter()
                .flat_map(|ret| function.returns.iter().map(move |at| (*ret, *at)));
            for (name, offset) in std::iter::once((entry, function.entry)).chain(returns) {
                let probe: &mut UProbe = ebpf
                    .program_mut(name)
                    .expect("program")
                    .try_into()
                    .expect("a uprobe");
                if probe.fd().is_err() {
                    probe.load().expect("load program");
                }
                probe
                    .attach(
                        UProbeAttachLocation::AbsoluteOffset(offset),
                        &targets.exe,
                        scope,
                    )
                    .expect("attach");
            }
        }
        let mut ring =
            RingBuf::try_from(ebpf.take_map("GO_SPANS").expect("GO_SPANS")).expect("ring");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let drain = std::thread::spawn(move || {
            let mut spans = 0;
            while !stopped.load(Ordering::Relaxed) {
                while ring.next().is_some() {
                    spans += 1;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            spans
        });
        Self {
            ebpf,
            processes,
            stop,
            drain: Some(drain),
        }
    }

    /// Instructions the verifier processed to load each program: its budget is 1M.
    fn verified(&self) -> Vec<u32> {
        PROGRAMS
            .iter()
            .map(|name| {
                let info = self.ebpf.program(name).expect("program").info();
                info.expect("program info")
                    .verified_instruction_count()
                    .unwrap_or(0)
            })
            .collect()
    }

    fn ids(&self) -> Vec<u32> {
        PROGRAMS
            .iter()
            .map(|name| program_id(&self.ebpf, name))
            .collect()
    }

    fn set_libraries(&mut self, pid: u32, libraries: u32) {
        let mut offsets = self.processes.get(&pid, 0).expect("offsets");
        offsets.enabled_libraries = libraries;
        self.processes
            .insert(pid, offsets, 0)
            .expect("publish offsets");
    }

    /// Detaches and returns the spans drained.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.drain
            .take()
            .expect("drain thread")
            .join()
            .expect("drain")
    }
}

fn program_id(ebpf: &Ebpf, name: &str) -> u32 {
    ebpf.program(name)
        .expect("program")
        .info()
        .expect("program info")
        .id()
}

/// Run time and count of the program `id`, summed over CPUs by the kernel.
fn run_stats(id: u32) -> (u64, u64) {
    let info = loaded_programs()
        .filter_map(Result::ok)
        .find(|info| info.id() == id)
        .expect("a loaded program");
    (info.run_time().as_nanos() as u64, info.run_count())
}

/// Keep-alive requests of `shape`, `count` of them, on one connection.
fn drive(port: u16, shape: &Shape, count: u64) {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{}\r\n",
        shape.1,
        shape.2.concat()
    );
    for _ in 0..count {
        writer.write_all(request.as_bytes()).expect("send");
        let status = go_arms::read_response(&mut reader);
        assert!(status.contains(" 200 "), "request failed: {status}");
    }
}

/// Nanoseconds per run and runs per request of each of `ids` over one `drive`.
fn measure(port: u16, shape: &Shape, ids: &[u32]) -> Vec<(f64, f64)> {
    let before: Vec<_> = ids.iter().map(|&id| run_stats(id)).collect();
    drive(port, shape, REQUESTS);
    ids.iter()
        .zip(before)
        .map(|(&id, (time_before, runs_before))| {
            let (time, runs) = run_stats(id);
            let runs = runs - runs_before;
            let ns = if runs == 0 {
                f64::NAN
            } else {
                (time - time_before) as f64 / runs as f64
            };
            (ns, runs as f64 / REQUESTS as f64)
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

/// One object's measurements on one target.
struct Arm {
    label: &'static str,
    object: PathBuf,
    /// [shape][program] ns per run, one sample per round.
    samples: Vec<Vec<Vec<f64>>>,
    /// [shape][program] runs per request.
    hits: Vec<Vec<f64>>,
    /// [program] ns per run with every library off.
    off: Vec<Vec<f64>>,
    verified: Vec<u32>,
    spans: u64,
}

impl Arm {
    fn new(label: &'static str, object: PathBuf) -> Self {
        Self {
            label,
            object,
            samples: vec![vec![vec![]; PROGRAMS.len()]; SHAPES.len()],
            hits: vec![vec![0.0; PROGRAMS.len()]; SHAPES.len()],
            off: vec![vec![]; PROGRAMS.len()],
            verified: vec![],
            spans: 0,
        }
    }

    /// One round: attach, every shape, then every library off, detach.
    fn round(&mut self, port: u16, pid: u32, targets: &ProcessTargets) {
        let mut go = GoPrograms::attach(&self.object, pid, targets);
        let ids = go.ids();
        self.verified = go.verified();
        for (s, shape) in SHAPES.iter().enumerate() {
            for (p, (ns, per_request)) in measure(port, shape, &ids).into_iter().enumerate() {
                self.samples[s][p].push(ns);
                self.hits[s][p] = per_request;
            }
        }
        go.set_libraries(pid, 0);
        for (p, (ns, _)) in measure(port, &SHAPES[4], &ids).into_iter().enumerate() {
            self.off[p].push(ns);
        }
        self.spans += go.finish();
    }

    /// [program][shape] medians.
    fn cells(&self) -> Vec<Vec<f64>> {
        (0..PROGRAMS.len())
            .map(|p| {
                self.samples
                    .iter()
                    .map(|shape| median(shape[p].clone()))
                    .collect()
            })
            .collect()
    }

    fn print(&self, floor: &[f64]) {
        let floor_all = median(floor.to_vec());
        let cells = self.cells();
        println!(
            "  {} ({}): ns per run (runs per request)",
            self.label,
            self.object.display()
        );
        print!("  {:<32}", "program");
        for shape in &SHAPES {
            print!(" {:>18}", shape.0);
        }
        println!(" {:>18} {:>10}", "libraries off*", "verified");
        print!("  {:<32}", "floor_empty (same points)");
        for ns in floor {
            print!(" {:>18}", format!("{ns:.0}"));
        }
        println!();
        for (p, name) in PROGRAMS.iter().enumerate() {
            print!("  {name:<32}");
            for (ns, per_request) in cells[p].iter().zip(&self.hits) {
                let cell = if ns.is_nan() {
                    "-".to_owned()
                } else {
                    format!("{ns:.0} ({:.0})", per_request[p])
                };
                print!(" {cell:>18}");
            }
            println!(
                " {:>18} {:>10}",
                format!("{:.0}", median(self.off[p].clone())),
                self.verified[p]
            );
        }
        print!("  {:<32}", "server entry / floor");
        for ns in &cells[0] {
            print!(" {:>18}", format!("{:.1}", ns / floor_all));
        }
        println!("\n  spans drained: {}", self.spans);
    }
}

/// One target's tables: ns per run of every program for every shape and object, medians over
/// rounds in which the floor and the objects take turns.
fn bench_target(root: &Path, go: &Path, label: &str, compare: Option<&Path>) {
    let binary = common::build_go(
        go,
        &root.join(format!("target/bench-probe-cost-{label}")),
        TARGET,
    );
    let port = free_port();
    let target = go_arms::start_target(&binary, &[port.to_string()], port);
    let pid = target.0.id();
    let targets = resolve_targets(Path::new("/proc"), pid, ALL_LIBRARIES)
        .expect("targets")
        .targets;
    for shape in &SHAPES {
        drive(port, shape, 500); // warm up
    }

    let mut arms = vec![Arm::new("built", go_object(root))];
    if let Some(object) = compare {
        arms.push(Arm::new("compared", object.to_owned()));
    }
    let mut floor = vec![vec![]; SHAPES.len()];
    for _ in 0..ROUNDS {
        let empty = attach_floor(&floor_object(root), "floor_empty", pid, &targets);
        let floor_id = program_id(&empty, "floor_empty");
        for (s, shape) in SHAPES.iter().enumerate() {
            floor[s].push(measure(port, shape, &[floor_id])[0].0);
        }
        drop(empty);
        for arm in &mut arms {
            arm.round(port, pid, &targets);
        }
    }

    let floor: Vec<f64> = floor.into_iter().map(median).collect();
    println!("\n{label}: medians of {ROUNDS} rounds x {REQUESTS} requests per shape");
    for arm in &arms {
        arm.print(&floor);
    }
    if let [built, compared] = &arms[..] {
        println!("  built / compared, ns per run");
        let (new, old) = (built.cells(), compared.cells());
        for (p, name) in PROGRAMS.iter().enumerate() {
            print!("  {name:<32}");
            for (n, o) in new[p].iter().zip(&old[p]) {
                let cell = if n.is_nan() {
                    "-".to_owned()
                } else {
                    format!("{:.2}", n / o)
                };
                print!(" {cell:>18}");
            }
            println!();
        }
    }
    println!("  * libraries off: the outgoing-call shape with every library bit cleared");
}

fn main() {
    let Some((root, go)) = common::privileged_go("go_probe_cost") else {
        return;
    };
    if !floor_object(&root).exists() || !go_object(&root).exists() {
        println!("SKIPPED: eBPF objects missing: run `cargo xtask build-ebpf`");
        return;
    }
    // Run statistics stay on while this descriptor is open.
    let _stats = aya::sys::enable_stats(Stats::RunTime).expect("enable BPF run statistics");
    // A second object (say, the one built before a change) measured in the same rounds.
    let compare = std::env::var_os("GO_PROBE_COST_COMPARE").map(PathBuf::from);
    bench_target(&root, &go, "go1.25", compare.as_deref());
    let go122 = root.join("target/tools/go-1.22.10/bin/go");
    if go122.exists() {
        bench_target(&root, &go122, "go1.22", compare.as_deref());
    } else {
        println!("\ngo1.22: skipped ({} missing)", go122.display());
    }
}
