//! `cargo xtask demo`: the main job, end to end. Builds two small Go services (frontend calls
//! backend over HTTP, backend queries its inventory through `database/sql`), runs them, runs `odiglet trace` against both, drives requests, and prints
//! the traces odiglet exported as a tree (service, span, duration, status). Everything it
//! starts is stopped when it returns, on success or failure.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde_json::Value;

use crate::{build_ebpf, exec, setup};

const FRONTEND_PORT: u16 = 18_480;
const BACKEND_PORT: u16 = 18_481;
const REQUESTS: usize = 3;
/// The Go toolchain the demo services are built with.
const GO_VERSION: &str = "1.25.5";

/// A child process killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run() -> anyhow::Result<()> {
    if !exec::is_root() {
        bail!("the demo loads eBPF programs and needs root: run `sudo -E cargo xtask demo`");
    }
    setup::ebpf_toolchain()?;
    let go = setup::go_bin(GO_VERSION)?;
    build_ebpf::run()?;
    println!("demo: building odiglet");
    exec::run(exec::cargo().args(["build", "--locked", "--release", "-p", "odiglet"]))?;
    let root = exec::workspace_root();
    let out = root.join("target/demo");
    for service in ["frontend", "backend"] {
        println!("demo: building the {service} Go service");
        build_go(
            &go,
            &root.join("xtask/demo").join(service),
            &out.join(service),
            &out,
        )?;
    }

    let backend = Running(spawn(&out.join("backend"), &[&BACKEND_PORT.to_string()])?);
    let frontend = Running(spawn(
        &out.join("frontend"),
        &[&FRONTEND_PORT.to_string(), &BACKEND_PORT.to_string()],
    )?);
    wait_listening(FRONTEND_PORT)?;
    wait_listening(BACKEND_PORT)?;

    println!("demo: running odiglet trace on both services");
    let mut odiglet = Running(
        Command::new(root.join("target/release/odiglet"))
            .args(["trace", "--stdout", "json"])
            .args(["--pid", &frontend.0.id().to_string()])
            .args(["--pid", &backend.0.id().to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start odiglet")?,
    );
    let batches = collect_lines(odiglet.0.stdout.take().context("odiglet stdout")?);
    wait_attached(odiglet.0.stderr.take().context("odiglet stderr")?, 2)?;

    for _ in 0..REQUESTS {
        println!(
            "demo: GET /checkout -> {}",
            get(FRONTEND_PORT, "/checkout")?
        );
    }
    println!("demo: GET /broken -> {}", get(FRONTEND_PORT, "/broken")?);

    // SIGINT: odiglet detaches and flushes what it has before exiting.
    exec::run(Command::new("kill").args(["-INT", &odiglet.0.id().to_string()]))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while odiglet.0.try_wait()?.is_none() {
        if Instant::now() > deadline {
            bail!("odiglet did not stop within 15 s of SIGINT");
        }
        thread::sleep(Duration::from_millis(50));
    }
    let spans = parse_spans(&batches.try_iter().collect::<Vec<_>>())?;
    if spans.is_empty() {
        bail!("odiglet exported no spans");
    }
    print_traces(&spans);
    drop((frontend, backend));
    Ok(())
}

fn build_go(go: &Path, source: &Path, output: &Path, out_dir: &Path) -> anyhow::Result<()> {
    exec::run(
        Command::new(go)
            .current_dir(source)
            .args(["build", "-o"])
            .arg(output)
            .arg(".")
            // Standard library only: no module download, no network.
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOCACHE", out_dir.join("gocache")),
    )
}

fn spawn(binary: &Path, args: &[&str]) -> anyhow::Result<Child> {
    Command::new(binary)
        .args(args)
        // The ServeMux with patterns, so spans carry routes (GOPATH builds default to the old one).
        .env("GODEBUG", "httpmuxgo121=0")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))
}

fn wait_listening(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nothing listens on port {port} after 20 s");
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Reads lines on a thread so waiting never blocks on a pipe.
fn collect_lines(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits for odiglet's "attached" log line for each of `processes`, echoing its log.
fn wait_attached(stderr: impl Read + Send + 'static, processes: usize) -> anyhow::Result<()> {
    let lines = collect_lines(stderr);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attached = 0;
    while attached < processes {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .context("odiglet did not attach within 60 s")?;
        println!("  odiglet: {line}");
        if line.contains("attached") && line.contains("pid") {
            attached += 1;
        }
    }
    thread::spawn(move || lines.iter().for_each(|line| println!("  odiglet: {line}")));
    Ok(())
}

/// One HTTP/1.1 GET; returns the status line.
fn get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response.lines().next().unwrap_or_default().to_owned())
}

/// What the tree needs of one exported span.
#[derive(Debug)]
struct DemoSpan {
    service: String,
    trace_id: String,
    span_id: String,
    parent_id: String,
    name: String,
    kind: &'static str,
    start: u64,
    end: u64,
    status: &'static str,
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// OTLP/JSON writes 64-bit integers as strings; accept numbers too.
fn number(value: &Value, key: &str) -> u64 {
    match value.get(key) {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(v) => v.as_u64().unwrap_or(0),
        None => 0,
    }
}

/// Spans from OTLP/JSON lines (`ExportTraceServiceRequest`, one per line).
fn parse_spans(lines: &[String]) -> anyhow::Result<Vec<DemoSpan>> {
    let mut spans = Vec::new();
    for line in lines {
        let request: Value = serde_json::from_str(line).context("odiglet wrote invalid JSON")?;
        for resource_spans in request["resourceSpans"].as_array().into_iter().flatten() {
            let service = resource_spans["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .map(|a| text(&a["value"], "stringValue").to_owned())
                .unwrap_or_default();
            for scope in resource_spans["scopeSpans"]
                .as_array()
                .into_iter()
                .flatten()
            {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    spans.push(DemoSpan {
                        service: service.clone(),
                        trace_id: text(span, "traceId").to_owned(),
                        span_id: text(span, "spanId").to_owned(),
                        parent_id: text(span, "parentSpanId").to_owned(),
                        name: text(span, "name").to_owned(),
                        kind: match span["kind"].as_u64() {
                            Some(2) => "server",
                            Some(3) => "client",
                            _ => "span",
                        },
                        start: number(span, "startTimeUnixNano"),
                        end: number(span, "endTimeUnixNano"),
                        status: match span["status"]["code"].as_u64() {
                            Some(2) => "ERROR",
                            Some(1) => "OK",
                            _ => "unset",
                        },
                    });
                }
            }
        }
    }
    Ok(spans)
}

fn print_traces(spans: &[DemoSpan]) {
    let mut traces: BTreeMap<&str, Vec<&DemoSpan>> = BTreeMap::new();
    for span in spans {
        traces.entry(&span.trace_id).or_default().push(span);
    }
    let mut traces: Vec<_> = traces.into_values().collect();
    traces.sort_by_key(|t| t.iter().map(|s| s.start).min());
    println!("\n{} spans in {} traces:", spans.len(), traces.len());
    for trace in traces {
        println!("\ntrace {}", trace[0].trace_id);
        let known = |id: &str| trace.iter().any(|s| s.span_id == id);
        let mut roots: Vec<_> = trace.iter().filter(|s| !known(&s.parent_id)).collect();
        roots.sort_by_key(|s| s.start);
        for root in roots {
            print_span(root, &trace, 1);
        }
    }
}

fn print_span(span: &DemoSpan, trace: &[&DemoSpan], depth: usize) {
    let duration_ms = span.end.saturating_sub(span.start) as f64 / 1e6;
    let label = format!("{}{}  {}", "  ".repeat(depth), span.service, span.name);
    println!(
        "{label:<48} {:<6} {duration_ms:>9.3} ms  {}",
        span.kind, span.status
    );
    let mut children: Vec<_> = trace
        .iter()
        .filter(|s| s.parent_id == span.span_id)
        .collect();
    children.sort_by_key(|s| s.start);
    for child in children {
        print_span(child, trace, depth + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_otlp_json_lines_into_linked_spans() {
        let line = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"frontend"}}]},"scopeSpans":[{"scope":{"name":"odiglet"},"spans":[
            {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","name":"GET /checkout","kind":2,"startTimeUnixNano":"1000","endTimeUnixNano":"5000000","status":{}},
            {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"00f067aa0ba902b7","parentSpanId":"b7ad6b7169203331","name":"GET","kind":3,"startTimeUnixNano":2000,"endTimeUnixNano":3000,"status":{"code":2}}
        ]}]}]}"#;
        let spans = parse_spans(&[line.replace('\n', "")]).unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].service, "frontend");
        assert_eq!(
            (spans[0].kind, spans[0].start, spans[0].end),
            ("server", 1000, 5_000_000)
        );
        assert_eq!((spans[1].kind, spans[1].status), ("client", "ERROR"));
        assert_eq!(spans[1].parent_id, spans[0].span_id);
        assert!(parse_spans(&["not json".to_owned()]).is_err());
    }
}
