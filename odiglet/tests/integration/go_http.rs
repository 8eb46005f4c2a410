//! Go `net/http` instrumentation against the real kernel and real Go programs built by the test
//! with several toolchains, with DWARF and stripped: spans, their attributes and links, incoming
//! and outgoing trace context, detach and exit clean-up.

use std::{
    net::TcpStream,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use odiglet::instrument::{AttachError, GoProbes, UprobeLinks};
use odiglet_common::{
    GoSpanRecord,
    go::{HttpClientSpan, HttpServerSpan, SPAN_FLAG_HAS_PARENT, SPAN_FLAG_PARENT_REMOTE},
};

use crate::support::{
    build,
    go::{
        LogLines, Odiglet, Traced, enable_propagation, exit_status, free_port, get, hex, spans_of,
        text, trace_command,
    },
    guards::ChildGuard,
    privileges::privileged,
};

const SERVICE: &str = r#"package main

import (
	"io"
	"net/http"
	"os"
	"strconv"
	"time"
)

func get(url string, header string) int {
	req, _ := http.NewRequest("GET", url, nil)
	if header != "" {
		req.Header.Set("traceparent", header)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

func main() {
	self := "http://127.0.0.1:" + os.Args[1]
	http.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(201)
		io.WriteString(w, "hi")
	})
	http.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(503)
	})
	http.HandleFunc("/call", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(get(self+"/hello", r.URL.Query().Get("tp")))
	})
	http.HandleFunc("/load", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		for i := 0; i < n; i++ {
			get(self+"/hello", "")
			time.Sleep(50 * time.Microsecond)
		}
	})
	http.ListenAndServe("127.0.0.1:"+os.Args[1], nil)
}
"#;

/// The Go service of [`SERVICE`]: `<binary> <port>` serves `/hello`, `/fail`, `/call`, `/load`.
pub(crate) fn service_binary(go: &Path, stripped: bool) -> std::path::PathBuf {
    service_binary_with(go, stripped, None)
}

/// [`service_binary`] built with `GOEXPERIMENT` `experiment`.
fn service_binary_with(go: &Path, stripped: bool, experiment: Option<&str>) -> std::path::PathBuf {
    let (variant, flags): (&str, &[&str]) = if stripped {
        ("stripped", &["-ldflags=-s -w"])
    } else {
        ("full", &[])
    };
    let variant = match experiment {
        Some(experiment) => format!("{variant}-{experiment}"),
        None => variant.to_owned(),
    };
    build::go_std_program_with("gohttp", &variant, go, SERVICE, flags, experiment)
}

/// Spawns `cmd` (a service on `port`) and waits until it listens.
pub(crate) fn spawn_service(what: &str, cmd: &mut Command, port: u16) -> ChildGuard {
    // go.mod says 1.19, which keeps Go >= 1.22 on the old ServeMux without patterns; the new
    // mux gives routes (Go 1.19 ignores the setting).
    let mut child = ChildGuard::spawn(
        what,
        cmd.env("GODEBUG", "httpmuxgo121=0").stdout(Stdio::null()),
    );
    child.wait_until(Duration::from_secs(30), |_| {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    child
}

/// A Go service built from [`SERVICE`] and listening.
fn start_service(go: &Path, stripped: bool) -> (ChildGuard, u16) {
    start_service_with(go, stripped, None)
}

/// [`start_service`] of a build with `GOEXPERIMENT` `experiment`.
fn start_service_with(go: &Path, stripped: bool, experiment: Option<&str>) -> (ChildGuard, u16) {
    let binary = service_binary_with(go, stripped, experiment);
    let port = free_port();
    let child = spawn_service(
        "go service",
        Command::new(&binary).arg(port.to_string()),
        port,
    );
    (child, port)
}

fn servers(spans: &[GoSpanRecord], path: &str) -> Vec<HttpServerSpan> {
    spans_of::<HttpServerSpan>(spans)
        .into_iter()
        .filter(|s| text(&s.path, s.path_len) == path)
        .collect()
}

/// What a net/http-only program cannot have: database/sql is linked in by nothing here, nor gRPC.
const NO_SQL_OR_GRPC: &[&str] = &[
    "database/sql",
    "google.golang.org/grpc server",
    "google.golang.org/grpc client",
    "google.golang.org/grpc traceparent propagation",
];

const TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_ID: &str = "b7ad6b7169203331";
const MANY_TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Requests with [`MANY_HEADERS`] filler headers (a `traceparent` among them or not): enough
/// that `Request.Header` spans several buckets (Go < 1.24, and `GOEXPERIMENT=noswissmap`) or a
/// swiss-table directory with tables and groups (Go >= 1.24) instead of one small group.
async fn check_many_headers(what: &str, port: u16, traced: &mut Traced) {
    const MANY_HEADERS: usize = 30;
    let names: Vec<String> = (0..MANY_HEADERS)
        .map(|i| format!("X-Filler-{i:02}"))
        .collect();
    let mut headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "value")).collect();
    assert_eq!(get(port, "/many-root", &headers), 404);
    let incoming = format!("00-{MANY_TRACE_ID}-{PARENT_ID}-01");
    headers.insert(MANY_HEADERS / 2, ("traceparent", &incoming));
    assert_eq!(get(port, "/many", &headers), 404);
    traced
        .wait_for(&format!("{what}: many headers"), 1, |s| {
            servers(s, "/many").len()
        })
        .await;
    traced
        .wait_for(&format!("{what}: many headers, no traceparent"), 1, |s| {
            servers(s, "/many-root").len()
        })
        .await;
    let many = servers(&traced.spans, "/many")[0];
    assert_eq!(
        hex(&many.header.context.trace_id),
        MANY_TRACE_ID,
        "{what}: traceparent among {MANY_HEADERS} headers continued"
    );
    assert_eq!(hex(&many.header.parent.span_id), PARENT_ID, "{what}");
    assert_eq!(
        many.header.flags & SPAN_FLAG_PARENT_REMOTE,
        SPAN_FLAG_PARENT_REMOTE,
        "{what}"
    );
    let root = servers(&traced.spans, "/many-root")[0];
    assert_eq!(
        root.header.flags & SPAN_FLAG_HAS_PARENT,
        0,
        "{what}: no traceparent, a new trace"
    );
    assert_ne!(hex(&root.header.context.trace_id), MANY_TRACE_ID, "{what}");
    assert_eq!(
        traced.probes.counters().traceparent_unsearched,
        0,
        "{what}: header maps searched fully"
    );
}

/// Every behaviour on one target: server and client spans, incoming context, injection; the
/// target built with `GOEXPERIMENT` `experiment` if any.
async fn check_target(minor: &str, go: &Path, stripped: bool, experiment: Option<&str>) {
    let what = format!(
        "go {minor}{} {}",
        experiment.map_or(String::new(), |e| format!(" GOEXPERIMENT={e}")),
        if stripped { "stripped" } else { "with DWARF" }
    );
    let (mut service, port) = start_service_with(go, stripped, experiment);
    let mut traced = Traced::load(1 << 22);
    enable_propagation(&mut traced.probes);
    traced.attach(service.pid(), NO_SQL_OR_GRPC);

    for _ in 0..5 {
        assert_eq!(get(port, "/hello", &[]), 201);
    }
    assert_eq!(get(port, "/fail", &[]), 503);
    traced
        .wait_for(&format!("{what}: /hello spans"), 5, |s| {
            servers(s, "/hello").len()
        })
        .await;
    traced
        .wait_for(&format!("{what}: /fail span"), 1, |s| {
            servers(s, "/fail").len()
        })
        .await;
    let hello = servers(&traced.spans, "/hello");
    assert_eq!(hello.len(), 5, "{what}: exactly one span per request");
    for span in &hello {
        assert_eq!(text(&span.method, span.method_len), "GET", "{what}");
        assert_eq!(text(&span.proto, span.proto_len), "HTTP/1.1", "{what}");
        assert_eq!(
            text(&span.host, span.host_len),
            format!("127.0.0.1:{port}"),
            "{what}"
        );
        assert!(
            text(&span.remote_addr, span.remote_addr_len).starts_with("127.0.0.1:"),
            "{what}"
        );
        assert_eq!(span.status_code, 201, "{what}");
        let duration = span
            .header
            .end_boot_ns
            .saturating_sub(span.header.start_boot_ns);
        assert!(
            duration > 0 && duration < 5_000_000_000,
            "{what}: duration {duration} ns"
        );
        assert_eq!(
            span.header.flags & SPAN_FLAG_HAS_PARENT,
            0,
            "{what}: a root span"
        );
        // ServeMux patterns exist from Go 1.22.
        let route = text(&span.route, span.route_len);
        assert_eq!(route, if minor == "1.19" { "" } else { "/hello" }, "{what}");
    }
    assert_eq!(
        servers(&traced.spans, "/fail")[0].status_code,
        503,
        "{what}"
    );
    check_many_headers(&what, port, &mut traced).await;

    // An incoming traceparent is continued; the client call made while serving is a child of
    // the server span; the callee receives our injected traceparent and joins the trace.
    let incoming = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    assert_eq!(get(port, "/call", &[("traceparent", &incoming)]), 201);
    traced
        .wait_for(&format!("{what}: /call"), 1, |s| servers(s, "/call").len())
        .await;
    traced
        .wait_for(&format!("{what}: downstream"), 6, |s| {
            servers(s, "/hello").len()
        })
        .await;
    let call = servers(&traced.spans, "/call")[0];
    assert_eq!(
        hex(&call.header.context.trace_id),
        TRACE_ID,
        "{what}: incoming trace continued"
    );
    assert_eq!(hex(&call.header.parent.span_id), PARENT_ID, "{what}");
    assert_eq!(
        call.header.flags & SPAN_FLAG_PARENT_REMOTE,
        SPAN_FLAG_PARENT_REMOTE,
        "{what}"
    );
    let client = spans_of::<HttpClientSpan>(&traced.spans)[0];
    assert_eq!(
        client.header.parent.span_id, call.header.context.span_id,
        "{what}: client parent"
    );
    assert_eq!(hex(&client.header.context.trace_id), TRACE_ID, "{what}");
    assert_eq!(
        text(&client.host, client.host_len),
        format!("127.0.0.1:{port}"),
        "{what}"
    );
    assert_eq!(text(&client.path, client.path_len), "/hello", "{what}");
    assert_eq!(client.status_code, 201, "{what}");
    let downstream = servers(&traced.spans, "/hello")
        .into_iter()
        .find(|s| hex(&s.header.context.trace_id) == TRACE_ID)
        .unwrap_or_else(|| panic!("{what}: the callee did not join the trace"));
    assert_eq!(
        downstream.header.parent.span_id, client.header.context.span_id,
        "{what}"
    );
    assert!(
        traced.probes.counters().injected >= 1,
        "{what}: {:?}",
        traced.probes.counters()
    );

    // An application that sets its own traceparent keeps it: we leave the request alone.
    let own = "00-11111111111111111111111111111111-2222222222222222-01";
    assert_eq!(get(port, &format!("/call?tp={own}"), &[]), 201);
    traced
        .wait_for(&format!("{what}: app header"), 7, |s| {
            servers(s, "/hello").len()
        })
        .await;
    assert!(
        servers(&traced.spans, "/hello")
            .iter()
            .any(|s| hex(&s.header.context.trace_id) == "11111111111111111111111111111111"),
        "{what}: the application's own traceparent was replaced"
    );
    assert!(traced.probes.counters().inject_skipped >= 1, "{what}");

    // Detach: no more spans, nothing left in flight.
    let pid = service.pid();
    traced.probes.detach(pid);
    assert_eq!(traced.probes.in_flight(pid), 0, "{what}");
    assert_eq!(get(port, "/hello", &[]), 201);
    assert_eq!(traced.settle().await, 0, "{what}: spans after detach");
    service.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_context_across_go_versions_with_and_without_dwarf() {
    if !privileged("spans_and_context_across_go_versions_with_and_without_dwarf") {
        return;
    }
    let toolchains = build::go_toolchains("go_http");
    assert!(toolchains.len() >= 3 || std::env::var("CI").as_deref() != Ok("true"));
    for (minor, go) in toolchains {
        // Go 1.24-1.25 can still build with the bucket maps of earlier releases.
        let experiments: &[Option<&str>] = if ("1.24"..="1.25").contains(&minor) {
            &[None, Some("noswissmap")]
        } else {
            &[None]
        };
        for experiment in experiments {
            for stripped in [false, true] {
                check_target(minor, &go, stripped, *experiment).await;
            }
        }
    }
}

/// Two independent loads of the Go probes (two odiglets), each with propagation enabled on the
/// whole cgroup hierarchy and each instrumenting its own service: both inject. Before socket
/// filing was limited to an instance's own processes, the instance whose `sock_ops` ran first
/// filed the other's client sockets in its sockmap, whose `sk_msg` had nothing to inject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_both_inject_into_their_own_processes() {
    if !privileged("two_instances_both_inject_into_their_own_processes") {
        return;
    }
    let Some((_, go)) = build::go_toolchains("go_http").pop() else {
        return;
    };
    let mut instances = Vec::new();
    for _ in 0..2 {
        let (service, port) = start_service(&go, false);
        let mut traced = Traced::load(1 << 20);
        enable_propagation(&mut traced.probes);
        traced.attach(service.pid(), NO_SQL_OR_GRPC);
        instances.push((service, port, traced));
    }
    for (which, (service, port, traced)) in instances.iter_mut().enumerate() {
        let what = format!("instance {which}");
        assert_eq!(get(*port, "/call", &[]), 201, "{what}");
        traced
            .wait_for(&what, 2, |s| {
                servers(s, "/hello").len() + servers(s, "/call").len()
            })
            .await;
        let client = spans_of::<HttpClientSpan>(&traced.spans)[0];
        let downstream = servers(&traced.spans, "/hello")[0];
        assert_eq!(
            downstream.header.parent.span_id,
            client.header.context.span_id,
            "{what}: the callee joined through the injected traceparent ({:?})",
            traced.probes.counters()
        );
        let counters = traced.probes.counters();
        assert_eq!(
            (counters.injected, counters.inject_failed),
            (1, 0),
            "{what}"
        );
        service.assert_running();
    }
}

/// Detaching makes a process's probes inert at once, before its links are closed (which
/// takes the kernel a grace period each and happens off the hot path): another process of the
/// same executable is unaffected, and the released links are exactly the detached ones. Both
/// kinds of uprobe links; a uprobe-multi link covers a program's entry or all its RETs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_is_immediate_and_hands_over_the_links_to_close() {
    if !privileged("detach_is_immediate_and_hands_over_the_links_to_close") {
        return;
    }
    let Some((_, go)) = build::go_toolchains("go_http").pop() else {
        return;
    };
    let mut links_per_process = Vec::new();
    for links in [UprobeLinks::Multi, UprobeLinks::PerfEvent] {
        links_per_process.push(detach_with(&go, links).await);
    }
    assert!(
        links_per_process[0] < links_per_process[1],
        "one multi link per program, one perf event per point: {links_per_process:?}"
    );
}

/// The detach test with `links`; returns the links one process needed.
async fn detach_with(go: &Path, links: UprobeLinks) -> usize {
    let what = format!("{links:?}");
    let replicas = [start_service(go, false), start_service(go, false)];
    let pid = |(child, _): &(ChildGuard, u16)| child.pid();
    let mut traced = Traced::load_for(1 << 20, Some(links));
    assert_eq!(traced.probes.link_kind(), links);
    traced.attach(pid(&replicas[0]), NO_SQL_OR_GRPC);
    let per_process = traced.probes.uprobe_links();
    assert!(per_process >= 2, "{what}: entry and returns: {per_process}");
    traced.attach(pid(&replicas[1]), NO_SQL_OR_GRPC);
    assert_eq!(traced.probes.uprobe_links(), 2 * per_process, "{what}");
    for (_, port) in &replicas {
        assert_eq!(get(*port, "/hello", &[]), 201);
    }
    traced
        .wait_for(&format!("{what}: a span per replica"), 2, |s| {
            servers(s, "/hello").len()
        })
        .await;
    assert_eq!(traced.settle().await, 0, "{what}: one span per request");

    traced.probes.detach(pid(&replicas[0]));
    let released = traced.probes.take_released();
    assert_eq!(released.len(), per_process, "{what}");
    assert_eq!(traced.probes.uprobe_links(), per_process, "{what}");
    assert!(
        traced.probes.take_released().is_empty(),
        "{what}: handed over once"
    );
    // Its links are still open, yet the detached replica yields nothing; the other one does.
    assert_eq!(get(replicas[0].1, "/hello", &[]), 201);
    assert_eq!(get(replicas[1].1, "/hello", &[]), 201);
    traced
        .wait_for(&format!("{what}: the attached replica"), 3, |s| {
            servers(s, "/hello").len()
        })
        .await;
    assert_eq!(
        traced.settle().await,
        0,
        "{what}: a span from the detached replica"
    );
    assert_eq!(
        servers(&traced.spans, "/hello")[2].header.pid,
        pid(&replicas[1]),
        "{what}"
    );
    released.close_in_background().finished().await;
    assert_eq!(get(replicas[0].1, "/hello", &[]), 201);
    assert_eq!(
        traced.settle().await,
        0,
        "{what}: a span after the links closed"
    );
    let counters = traced.probes.counters();
    assert_eq!(
        (counters.double_entry, counters.missing_entry),
        (0, 0),
        "{what}"
    );

    traced.probes.detach(pid(&replicas[1]));
    assert_eq!(traced.probes.take_released().len(), per_process, "{what}");
    assert_eq!(traced.probes.uprobe_links(), 0, "{what}");
    per_process
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_give_ten_thousand_spans_and_exit_cleans_up() {
    if !privileged("ten_thousand_requests_give_ten_thousand_spans_and_exit_cleans_up") {
        return;
    }
    const REQUESTS: usize = 10_000;
    let Some((_, go)) = build::go_toolchains("go_http").pop() else {
        return;
    };
    let (service, port) = start_service(&go, false);
    let mut traced = Traced::load(1 << 24);
    traced.attach(service.pid(), NO_SQL_OR_GRPC);
    assert_eq!(get(port, &format!("/load?n={REQUESTS}"), &[]), 200);
    traced
        .wait_for("/load", 1, |s| servers(s, "/load").len())
        .await;
    traced
        .wait_for("all /hello spans", REQUESTS, |s| servers(s, "/hello").len())
        .await;
    assert_eq!(servers(&traced.spans, "/hello").len(), REQUESTS);
    assert_eq!(spans_of::<HttpClientSpan>(&traced.spans).len(), REQUESTS);
    let counters = traced.probes.counters();
    assert_eq!(counters.ringbuf_full, 0, "{counters:?}");

    // The process exits: detaching then leaves nothing behind in the maps.
    let pid = service.pid();
    drop(service);
    traced.probes.detach(pid);
    assert_eq!(traced.probes.in_flight(pid), 0);
    assert_eq!(traced.probes.attached().count(), 0);
}

#[test]
fn go_probes_pass_the_verifier_and_hand_out_their_ring_buffer_once() {
    if !privileged("go_probes_pass_the_verifier_and_hand_out_their_ring_buffer_once") {
        return;
    }
    let mut probes = GoProbes::load(1 << 20).expect("every Go program loads");
    if kernel_at_least(6, 6) {
        assert_eq!(
            probes.link_kind(),
            UprobeLinks::Multi,
            "Linux 6.6+ has uprobe-multi"
        );
    }
    probes.take_spans().expect("the ring buffer is there");
    assert!(matches!(probes.take_spans(), Err(AttachError::SpansTaken)));
    // Detaching a process never attached is a no-op, and nothing is in flight.
    probes.detach(4_000_000);
    assert_eq!(probes.in_flight(4_000_000), 0);
    assert_eq!(probes.counters(), Default::default());
    assert_eq!(probes.attached().count(), 0);

    // The socket programs (sock_ops + sk_msg with bpf_loop scans) load and attach to the
    // cgroup v2 root; enabling twice is a no-op.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cgroup2 = odiglet::process::cgroup2_mount_from_mountinfo(&mountinfo)
        .expect("a cgroup v2 hierarchy is mounted");
    probes
        .enable_propagation(&cgroup2)
        .expect("sock_ops and sk_msg attach");
    probes.enable_propagation(&cgroup2).expect("idempotent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_command_exports_linked_spans_over_otlp_grpc_and_stops_with_its_process() {
    use crate::support::otlp::{OtlpReceiver, attribute};

    if !privileged("trace_command_exports_linked_spans_over_otlp_grpc_and_stops_with_its_process") {
        return;
    }
    let Some((_, go)) = build::go_toolchains("go_http").pop() else {
        return;
    };
    let (service, port) = start_service(&go, false);
    let receiver = OtlpReceiver::start().await;
    let mut odiglet = trace_command(service.pid(), &receiver.endpoint(), &[]);

    assert_eq!(get(port, "/call", &[]), 201);
    let spans = receiver.wait_for_spans(3).await;
    let find = |name: &str, path: &str| {
        spans
            .iter()
            .find(|s| {
                s.span.name == name
                    && attribute(&s.span.attributes, "url.path").as_deref() == Some(path)
            })
            .unwrap_or_else(|| panic!("no {name} {path} span in {spans:#?}"))
    };
    let call = find("GET /call", "/call");
    let client = spans
        .iter()
        .find(|s| s.span.kind == 3)
        .expect("a client span");
    let downstream = find("GET /hello", "/hello");
    assert_eq!(
        attribute(&call.span.attributes, "http.route").as_deref(),
        Some("/call")
    );
    assert_eq!(
        attribute(&call.span.attributes, "http.response.status_code").as_deref(),
        Some("201")
    );
    assert_eq!(
        attribute(&call.resource, "process.pid"),
        Some(service.pid().to_string())
    );
    assert!(attribute(&call.resource, "service.name").is_some_and(|n| n.starts_with("gohttp")));
    assert_eq!(
        client.span.parent_span_id, call.span.span_id,
        "client is the server's child"
    );
    assert_eq!(
        downstream.span.parent_span_id, client.span.span_id,
        "callee joins the trace"
    );
    assert_eq!(downstream.span.trace_id, call.span.trace_id);

    // The traced process exits: odiglet detaches, flushes and stops by itself.
    drop(service);
    let status = exit_status(&mut odiglet).await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_exe_instruments_processes_that_start_later() {
    use crate::support::otlp::{OtlpReceiver, attribute};

    if !privileged("trace_exe_instruments_processes_that_start_later") {
        return;
    }
    let Some((_, go)) = build::go_toolchains("go_http").pop() else {
        return;
    };
    // A copy of its own: `--exe` must not instrument the other tests' services, which run the
    // shared build of the same program.
    let shared = build::go_std_program("gohttp", "full", &go, SERVICE, &[]);
    let binary = shared.with_file_name("gohttp-late-starter");
    std::fs::copy(&shared, &binary).unwrap();
    let receiver = OtlpReceiver::start().await;
    let odiglet = Command::new(env!("CARGO_BIN_EXE_odiglet"))
        .args([
            "--log-format",
            "json",
            "trace",
            "--service-name",
            "late-starter",
            "--exe",
        ])
        .arg(&binary)
        // One page: an exec burst overflows it, as a storm does the default ring.
        .args(["--lifecycle-ring-bytes", "4096"])
        .arg("--otlp-endpoint")
        .arg(receiver.endpoint())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut odiglet = Odiglet(odiglet);
    let log = LogLines::new(&mut odiglet.0);
    log.wait_for("watching for processes of the executable");

    // Three processes of the executable, one after the other, each started after odiglet; the
    // last amid an exec burst that loses its exec record, so a rescan must find it.
    for round in 0..3 {
        let port = free_port();
        let burst: Vec<_> = (0..if round == 2 { 8 } else { 0 })
            .map(|_| {
                std::thread::spawn(|| {
                    for _ in 0..100 {
                        let _ = Command::new("/bin/true").status();
                    }
                })
            })
            .collect();
        if !burst.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
        let service = spawn_service(
            "late starter",
            Command::new(&binary).arg(port.to_string()),
            port,
        );
        for spawner in burst {
            spawner.join().unwrap();
        }
        log.wait_for_pid("attached Go probes", service.pid());
        let pid = service.pid().to_string();
        let path = "/hello";
        assert_eq!(get(port, path, &[]), 201);
        let spans = receiver.wait_for_spans(round + 1).await;
        let span = spans
            .iter()
            .find(|s| attribute(&s.resource, "process.pid").as_deref() == Some(pid.as_str()))
            .unwrap_or_else(|| panic!("no span of pid {pid} in {spans:#?}"));
        assert_eq!(span.span.name, "GET /hello");
        assert_eq!(span.span.kind, 2, "a server span");
        assert_eq!(
            attribute(&span.resource, "service.name").as_deref(),
            Some("late-starter")
        );
        assert_eq!(
            attribute(&span.span.attributes, "url.path").as_deref(),
            Some(path)
        );
        let exited = service.pid();
        drop(service);
        log.wait_for_pid("traced process exited; detached", exited);
    }

    // With --exe, odiglet waits for more processes until interrupted, then flushes and exits.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(odiglet.0.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = exit_status(&mut odiglet.0).await;
    assert!(status.success(), "{status}");
}

/// Whether the running kernel's release is at least `major.minor`.
fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (major, minor)
}
