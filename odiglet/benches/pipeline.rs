//! Span pipeline throughput on one thread: raw ring-buffer record bytes (synthesized
//! `HttpServerSpan` records, as the Go probe writes them) → decode → OTLP span with its
//! process's resource → grouped `ExportTraceServiceRequest` → prost-encoded bytes.
//! `cargo bench -p odiglet --bench pipeline`. No privileges needed.
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
    export::build_request,
    pipeline::{ResourceAttributes, ResourceRegistry, convert_record, record_bytes},
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
    // The pipeline: decode + convert + resource + group + encode, batch by batch.
    let full = || {
        let mut encoded = Vec::with_capacity(1 << 20);
        let mut bytes = 0;
        for chunk in records.chunks(BATCH) {
            // The exporter's worker collects into a vector of the batch size, as here.
            let mut batch = Vec::with_capacity(BATCH);
            batch.extend(
                chunk
                    .iter()
                    .filter_map(|record| convert_record(record, &clock, &resources).ok()),
            );
            let request = build_request(batch);
            encoded.clear();
            request.encode(&mut encoded).expect("buffer grows");
            bytes += black_box(&encoded).len();
        }
        bytes
    };

    // Warm-up, and the size of the output for scale.
    let encoded_bytes = black_box(full());
    black_box(memcpy());
    black_box(decode());

    let mut results: [(Vec<Duration>, Vec<Duration>); 3] = Default::default();
    for _ in 0..ROUNDS {
        for (index, arm) in [
            &memcpy as &dyn Fn() -> usize,
            &decode as &dyn Fn() -> usize,
            &full as &dyn Fn() -> usize,
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
        "decode + convert + group + prost-encode",
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
    let full_rate = rate(medians[2].0);
    println!(
        "pipeline: {full_rate:.0} spans/s on one thread (target >= 500000): {}",
        if full_rate >= 500_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
