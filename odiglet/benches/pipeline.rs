//! Span pipeline throughput on one thread: raw ring-buffer record bytes (synthesized
//! `HttpServerSpan` records, as the Go probe writes them) → decode → OTLP span with its
//! process's resource → grouped, encoded `ExportTraceServiceRequest`.
//! `cargo bench -p odiglet --bench pipeline`. No privileges needed.
//!
//! Two ways to the same request bytes: the pipeline's (spans encoded straight from the
//! record, copied behind pre-encoded resources) and, for comparison, the prost object model
//! it replaced (`to_otlp_span`, grouped into `ResourceSpans`, prost-encoded). The benchmark
//! checks that both give the same request before timing them.
//!
//! Arms run interleaved in rounds; the ratios to the baselines measured in the same run are
//! what to read (absolute figures on these shared VMs are noisy).
#![expect(clippy::print_stdout, reason = "a benchmark reports on stdout")]

use std::{
    hint::black_box,
    time::{Duration, Instant},
};

use nix::sys::resource::{UsageWho, getrusage};
use odiglet::{
    export::{build_request, model_request},
    pipeline::{
        RecordConverter, ResourceAttributes, ResourceRegistry, record_bytes,
        span::{record_pid, record_scope},
        to_otlp_span,
    },
    time::BootClock,
};
use odiglet_common::{
    GoSpanRecord, decode_go_span,
    go::{
        GO_SPAN_HTTP_SERVER, HTTP_ADDR_LEN, HTTP_HOST_LEN, HTTP_METHOD_LEN, HTTP_PATH_LEN,
        HTTP_PROTO_LEN, HTTP_ROUTE_LEN, HttpServerSpan, SPAN_FLAG_HAS_PARENT, SpanContext,
        SpanHeader,
    },
};
use prost::Message;

const RECORDS: usize = 200_000;
const PROCESSES: u32 = 16;
const BATCH: usize = 512;
const ROUNDS: usize = 7;

fn fill<const N: usize>(value: &str) -> ([u8; N], u16) {
    let mut buffer = [0u8; N];
    let len = value.len().min(N);
    buffer[..len].copy_from_slice(&value.as_bytes()[..len]);
    (buffer, len as u16)
}

/// Realistic records: 16 processes, varied paths and statuses, half with a parent.
fn records() -> Vec<Vec<u8>> {
    (0..RECORDS)
        .map(|i| {
            let n = i as u64;
            let (method, method_len) =
                fill::<HTTP_METHOD_LEN>(if i % 4 == 0 { "POST" } else { "GET" });
            let (path, path_len) = fill::<HTTP_PATH_LEN>(&format!("/api/v1/items/{}", i % 1000));
            let (route, route_len) = fill::<HTTP_ROUTE_LEN>("/api/v1/items/{id}");
            let (host, host_len) = fill::<HTTP_HOST_LEN>("checkout.shop.svc.cluster.local:8080");
            let (remote_addr, remote_addr_len) = fill::<HTTP_ADDR_LEN>(&format!(
                "10.244.{}.{}:{}",
                i % 7,
                i % 250,
                30000 + i % 30000
            ));
            let (proto, proto_len) = fill::<HTTP_PROTO_LEN>("HTTP/1.1");
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&n.to_le_bytes());
            record_bytes(&GoSpanRecord::HttpServer(HttpServerSpan {
                header: SpanHeader {
                    kind: GO_SPAN_HTTP_SERVER,
                    pid: 1000 + (i as u32 % PROCESSES),
                    flags: if i % 2 == 0 { SPAN_FLAG_HAS_PARENT } else { 0 },
                    reserved: 0,
                    start_boot_ns: 1_000_000 + n * 1000,
                    end_boot_ns: 1_250_000 + n * 1000,
                    goroutine: 0xc000_0000 + n,
                    context: SpanContext {
                        trace_id,
                        span_id: n.to_be_bytes(),
                        trace_flags: 1,
                        reserved: [0; 7],
                    },
                    parent: SpanContext {
                        trace_id,
                        span_id: (!n).to_be_bytes(),
                        trace_flags: 1,
                        reserved: [0; 7],
                    },
                },
                status_code: if i % 50 == 0 { 500 } else { 200 },
                method_len,
                path_len,
                route_len,
                host_len,
                remote_addr_len,
                proto_len,
                method,
                path,
                route,
                host,
                remote_addr,
                proto,
            }))
        })
        .collect()
}

fn cpu_time() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(usage.user_time()) + tv(usage.system_time())
}

/// Wall and CPU time of one arm over every record.
fn measure(mut arm: impl FnMut() -> usize) -> (Duration, Duration) {
    let cpu = cpu_time();
    let wall = Instant::now();
    black_box(arm());
    (wall.elapsed(), cpu_time() - cpu)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    let records = records();
    let resources = ResourceRegistry::new();
    for pid in 1000..1000 + PROCESSES {
        resources.register(
            pid,
            ResourceAttributes {
                service_name: Some(format!("service-{pid}")),
                executable_path: Some("/app/server".into()),
                ..ResourceAttributes::default()
            },
        );
    }
    let clock = BootClock::now();

    // Baseline 1: copy each record out of the ring (what `RingBuf::next` + a copy costs).
    let memcpy = || {
        let mut buffer = Vec::with_capacity(1024);
        let mut total = 0;
        for record in &records {
            buffer.clear();
            buffer.extend_from_slice(record);
            total += black_box(&buffer).len();
        }
        total
    };
    // Baseline 2: decode only.
    let decode = || {
        records
            .iter()
            .filter(|record| black_box(decode_go_span(record)).is_ok())
            .count()
    };
    // The pipeline: decode + encode span + resource + group into an encoded request, batch
    // by batch, as the reader and the exporter's worker do.
    let encoded_batches = || {
        let mut converter = RecordConverter::new();
        let mut requests = Vec::new();
        for chunk in records.chunks(BATCH) {
            let mut batch = Vec::with_capacity(BATCH);
            batch.extend(
                chunk
                    .iter()
                    .filter_map(|record| converter.convert(record, &clock, &resources).ok()),
            );
            requests.push(build_request(batch));
        }
        requests
    };
    let encoded = || {
        let mut converter = RecordConverter::new();
        let mut bytes = 0;
        for chunk in records.chunks(BATCH) {
            let mut batch = Vec::with_capacity(BATCH);
            batch.extend(
                chunk
                    .iter()
                    .filter_map(|record| converter.convert(record, &clock, &resources).ok()),
            );
            bytes += black_box(build_request(batch)).bytes().len();
        }
        bytes
    };
    // The prost object model the pipeline used before: a `Span` per record, grouped into
    // `ResourceSpans` (one resource clone per group), prost-encoded.
    let model_request = |chunk: &[Vec<u8>]| {
        model_request(
            chunk
                .iter()
                .filter_map(|record| decode_go_span(record).ok())
                .map(|record| {
                    (
                        resources.resolve(record_pid(&record)),
                        record_scope(&record),
                        to_otlp_span(&record, &clock),
                    )
                }),
        )
    };
    let model = || {
        let mut encoded = Vec::with_capacity(1 << 20);
        let mut bytes = 0;
        for chunk in records.chunks(BATCH) {
            encoded.clear();
            model_request(chunk)
                .encode(&mut encoded)
                .expect("buffer grows");
            bytes += black_box(&encoded).len();
        }
        bytes
    };

    // Both paths build the same requests.
    for (request, chunk) in encoded_batches().iter().zip(records.chunks(BATCH)) {
        assert_eq!(
            request.decode().expect("valid protobuf"),
            model_request(chunk),
            "the encoded request differs from the model's"
        );
    }
    // Warm-up, and the size of the output for scale.
    let encoded_bytes = black_box(encoded());
    assert_eq!(black_box(model()), encoded_bytes);
    black_box(memcpy());
    black_box(decode());

    let mut results: [(Vec<Duration>, Vec<Duration>); 4] = Default::default();
    for _ in 0..ROUNDS {
        for (index, arm) in [
            &memcpy as &dyn Fn() -> usize,
            &decode as &dyn Fn() -> usize,
            &model as &dyn Fn() -> usize,
            &encoded as &dyn Fn() -> usize,
        ]
        .into_iter()
        .enumerate()
        {
            let (wall, cpu) = measure(arm);
            results[index].0.push(wall);
            results[index].1.push(cpu);
        }
    }

    let names = [
        "memcpy of the record bytes (baseline)",
        "decode only (baseline)",
        "before: decode + prost model Span + group + prost-encode",
        "pipeline: decode + encode span + group into encoded request",
    ];
    let rate = |d: Duration| RECORDS as f64 / d.as_secs_f64();
    let medians: Vec<(Duration, Duration)> = results
        .into_iter()
        .map(|(wall, cpu)| (median(wall), median(cpu)))
        .collect();
    println!(
        "{RECORDS} HttpServerSpan records ({} bytes each), {PROCESSES} processes, batches of {BATCH}, {ROUNDS} rounds, medians; {:.1} bytes of OTLP protobuf per span",
        records[0].len(),
        encoded_bytes as f64 / RECORDS as f64
    );
    println!(
        "| arm | wall ns/span | spans/s (wall) | spans/s (cpu) | cost vs memcpy | cost vs decode |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, (wall, cpu)) in names.iter().zip(&medians) {
        println!(
            "| {name} | {:.1} | {:.0} | {:.0} | {:.1}x | {:.1}x |",
            wall.as_nanos() as f64 / RECORDS as f64,
            rate(*wall),
            rate(*cpu),
            wall.as_secs_f64() / medians[0].0.as_secs_f64(),
            wall.as_secs_f64() / medians[1].0.as_secs_f64(),
        );
    }
    let (pipeline_wall, pipeline_cpu) = medians[3];
    let (model_wall, model_cpu) = medians[2];
    println!(
        "pipeline vs prost model: {:.2}x faster (wall), {:.2}x (cpu)",
        model_wall.as_secs_f64() / pipeline_wall.as_secs_f64(),
        model_cpu.as_secs_f64() / pipeline_cpu.as_secs_f64(),
    );
    let cpu_rate = rate(pipeline_cpu);
    println!(
        "pipeline: {cpu_rate:.0} spans per CPU-second on one thread, {:.0} spans/s of wall time (target >= 500000 on one core): {}",
        rate(pipeline_wall),
        if cpu_rate >= 500_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
