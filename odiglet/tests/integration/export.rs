//! Span export over real sockets: pipeline records → exporter → an in-test OTLP/gRPC
//! receiver. Needs no privileges.

use std::time::Duration;

use odiglet::{
    export::{Exporter, ExporterConfig, OtlpGrpcExporter},
    pipeline::{
        K8sAttributes, ResourceAttributes, ResourceRegistry, SCOPE_NET_HTTP, SpanSink, Workload,
        WorkloadKind, convert_record, record_bytes,
    },
    time::BootClock,
};
use odiglet_common::{
    GoSpanRecord,
    go::{
        GO_SPAN_HTTP_SERVER, HTTP_ADDR_LEN, HTTP_HOST_LEN, HTTP_METHOD_LEN, HTTP_PATH_LEN,
        HTTP_PROTO_LEN, HTTP_ROUTE_LEN, HttpServerSpan, SpanContext, SpanHeader,
    },
};
use tokio::time::Instant;
use tonic::Code;

use crate::support::otlp::{OtlpReceiver, attribute};

fn fill<const N: usize>(value: &str) -> ([u8; N], u16) {
    let mut buffer = [0u8; N];
    let len = value.len().min(N);
    buffer[..len].copy_from_slice(&value.as_bytes()[..len]);
    (buffer, len as u16)
}

/// The bytes the Go server probe would write for one request of `pid`.
fn server_record(pid: u32, seq: u8, path: &str, status: u32) -> Vec<u8> {
    let (method, method_len) = fill::<HTTP_METHOD_LEN>("GET");
    let (path, path_len) = fill::<HTTP_PATH_LEN>(path);
    let (route, route_len) = fill::<HTTP_ROUTE_LEN>("/items/{id}");
    let (host, host_len) = fill::<HTTP_HOST_LEN>("shop.local:8080");
    let (remote_addr, remote_addr_len) = fill::<HTTP_ADDR_LEN>("10.1.2.3:40000");
    let (proto, proto_len) = fill::<HTTP_PROTO_LEN>("HTTP/1.1");
    let context = SpanContext {
        trace_id: [seq; 16],
        span_id: [seq; 8],
        trace_flags: 1,
        reserved: [0; 7],
    };
    record_bytes(&GoSpanRecord::HttpServer(HttpServerSpan {
        header: SpanHeader {
            kind: GO_SPAN_HTTP_SERVER,
            pid,
            flags: 0,
            reserved: 0,
            start_boot_ns: 1_000,
            end_boot_ns: 2_000,
            goroutine: 1,
            context,
            parent: SpanContext::default(),
        },
        status_code: status,
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
}

fn fast_config() -> ExporterConfig {
    ExporterConfig {
        queue_capacity: 64,
        max_batch_size: 16,
        batch_interval: Duration::from_millis(50),
        export_timeout: Duration::from_secs(5),
        max_retries: 5,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        shutdown_timeout: Duration::from_secs(5),
    }
}

fn offer(exporter: &Exporter, resources: &ResourceRegistry, bytes: &[u8]) {
    let clock = BootClock::fixed(1_700_000_000_000_000_000, 0);
    let span = convert_record(bytes, &clock, resources).expect("synthesized record decodes");
    exporter.handle().offer(span);
}

#[tokio::test]
async fn spans_arrive_grouped_by_resource_with_all_attributes() {
    let receiver = OtlpReceiver::start().await;
    let exporter = Exporter::start(
        OtlpGrpcExporter::new(&receiver.endpoint()).unwrap(),
        fast_config(),
    );
    let resources = ResourceRegistry::new();
    resources.register(
        100,
        ResourceAttributes {
            service_name: Some("checkout".into()),
            executable_path: Some("/app/checkout".into()),
            command: None,
            vpid: Some(1),
            k8s: Some(K8sAttributes {
                namespace: Some("shop".into()),
                pod_name: Some("checkout-abc".into()),
                container_name: Some("app".into()),
                node_name: Some("node-1".into()),
                workload: Some(Workload {
                    kind: WorkloadKind::Deployment,
                    name: "checkout".into(),
                }),
            }),
            extra: Vec::new(),
        },
    );
    offer(
        &exporter,
        &resources,
        &server_record(100, 1, "/items/1", 200),
    );
    offer(
        &exporter,
        &resources,
        &server_record(200, 2, "/items/2", 500),
    );
    offer(&exporter, &resources, &server_record(100, 3, "/items/3", 0));

    let spans = receiver.wait_for_spans(3).await;
    assert_eq!(spans.len(), 3);
    let requests = receiver.requests();
    let groups: usize = requests.iter().map(|r| r.resource_spans.len()).sum();
    assert_eq!(groups, 2, "one ResourceSpans per process: {requests:#?}");

    let checkout: Vec<_> = spans
        .iter()
        .filter(|s| attribute(&s.resource, "process.pid").as_deref() == Some("100"))
        .collect();
    assert_eq!(checkout.len(), 2);
    for (key, want) in [
        ("service.name", "checkout"),
        ("process.executable.path", "/app/checkout"),
        ("process.vpid", "1"),
        ("telemetry.sdk.language", "go"),
        ("k8s.namespace.name", "shop"),
        ("k8s.pod.name", "checkout-abc"),
        ("k8s.container.name", "app"),
        ("k8s.node.name", "node-1"),
        ("k8s.deployment.name", "checkout"),
    ] {
        assert_eq!(
            attribute(&checkout[0].resource, key).as_deref(),
            Some(want),
            "{key}"
        );
    }
    let span = &checkout[0].span;
    assert_eq!(checkout[0].scope, SCOPE_NET_HTTP);
    assert_eq!(span.name, "GET /items/{id}");
    assert_eq!(span.trace_id, vec![1; 16]);
    assert_eq!(span.start_time_unix_nano, 1_700_000_000_000_001_000);
    for (key, want) in [
        ("http.request.method", "GET"),
        ("url.path", "/items/1"),
        ("http.route", "/items/{id}"),
        ("http.response.status_code", "200"),
        ("server.address", "shop.local"),
        ("server.port", "8080"),
        ("client.address", "10.1.2.3"),
        ("client.port", "40000"),
        ("network.protocol.version", "1.1"),
    ] {
        assert_eq!(
            attribute(&span.attributes, key).as_deref(),
            Some(want),
            "{key}"
        );
    }

    let unknown: Vec<_> = spans
        .iter()
        .filter(|s| attribute(&s.resource, "process.pid").as_deref() == Some("200"))
        .collect();
    assert_eq!(unknown.len(), 1);
    assert_eq!(
        unknown[0].resource.len(),
        1,
        "unknown pid: process.pid only"
    );
    assert_eq!(unknown[0].span.status.as_ref().map(|s| s.code), Some(2));

    let counters = exporter.shutdown().await;
    assert_eq!(counters.exported, 3);
    assert_eq!(counters.export_errors, 0);
}

#[tokio::test]
async fn unavailable_receiver_is_retried_and_spans_arrive_once() {
    let receiver = OtlpReceiver::start_failing(vec![
        Code::Unavailable,
        Code::Unavailable,
        Code::Unavailable,
    ])
    .await;
    let exporter = Exporter::start(
        OtlpGrpcExporter::new(&receiver.endpoint()).unwrap(),
        fast_config(),
    );
    let resources = ResourceRegistry::new();
    for seq in 0..5 {
        offer(&exporter, &resources, &server_record(7, seq, "/", 200));
    }
    receiver.wait_for_spans(5).await;
    let counters = exporter.shutdown().await;
    let spans = receiver.spans();
    assert_eq!(spans.len(), 5, "delivered exactly once");
    let mut ids: Vec<_> = spans.iter().map(|s| s.span.span_id.clone()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5);
    assert_eq!(receiver.attempts(), 4, "three failures, then success");
    assert_eq!(counters.exported, 5);
    assert_eq!(counters.export_errors, 3);
    assert_eq!(counters.dropped_after_retries, 0);
}

#[tokio::test]
async fn receiver_down_drops_are_counted_and_the_queue_stays_bounded() {
    // A port nobody listens on: connections are refused (UNAVAILABLE).
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let config = ExporterConfig {
        queue_capacity: 8,
        max_batch_size: 4,
        max_retries: 1,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(5),
        shutdown_timeout: Duration::from_secs(2),
        ..fast_config()
    };
    let exporter = Exporter::start(
        OtlpGrpcExporter::new(&format!("http://{closed}")).unwrap(),
        config,
    );
    let resources = ResourceRegistry::new();
    let offered = 200u64;
    let started = Instant::now();
    for seq in 0..offered {
        offer(
            &exporter,
            &resources,
            &server_record(7, seq as u8, "/", 200),
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "offering never blocks"
    );
    let counters = exporter.counters();
    // Bounded: at most one batch in flight plus a full queue was ever accepted.
    assert!(
        counters.snapshot().dropped_queue_full >= offered - 8 - 4,
        "{:?}",
        counters.snapshot()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while counters.snapshot().dropped_after_retries == 0 {
        assert!(Instant::now() < deadline, "{:?}", counters.snapshot());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let final_counts = exporter.shutdown().await;
    assert_eq!(final_counts.exported, 0);
    assert!(final_counts.export_errors >= 2, "{final_counts:?}");
    assert_eq!(
        final_counts.dropped_queue_full
            + final_counts.dropped_after_retries
            + final_counts.dropped_at_shutdown,
        offered,
        "every span is accounted for: {final_counts:?}"
    );
}

#[tokio::test]
async fn shutdown_flushes_pending_spans_within_the_bound() {
    let receiver = OtlpReceiver::start().await;
    let config = ExporterConfig {
        queue_capacity: 1024,
        max_batch_size: 100,
        batch_interval: Duration::from_secs(3600),
        shutdown_timeout: Duration::from_secs(3),
        ..fast_config()
    };
    let exporter = Exporter::start(OtlpGrpcExporter::new(&receiver.endpoint()).unwrap(), config);
    let resources = ResourceRegistry::new();
    for seq in 0..250u32 {
        offer(
            &exporter,
            &resources,
            &server_record(9, seq as u8, "/", 200),
        );
    }
    let started = Instant::now();
    let counters = exporter.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(counters.exported, 250, "{counters:?}");
    assert_eq!(receiver.spans().len(), 250);
}
