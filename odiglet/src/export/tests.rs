use std::sync::Mutex;

use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::Notify;

use super::*;
use crate::pipeline::ResourceAttributes;

fn span(resource: &Arc<ProcessResource>, scope: &'static str, name: &str) -> ProcessSpan {
    ProcessSpan {
        resource: Arc::clone(resource),
        scope,
        span: Span {
            name: name.to_owned(),
            ..Span::default()
        }
        .encode_to_vec()
        .into(),
    }
}

fn named(pid: u32, service: &str) -> Arc<ProcessResource> {
    Arc::new(ProcessResource::new(
        pid,
        &ResourceAttributes {
            service_name: Some(service.to_owned()),
            ..ResourceAttributes::default()
        },
    ))
}

#[test]
fn batch_is_grouped_by_resource_then_scope_in_order() {
    let a = named(1, "a");
    let b = named(2, "b");
    let a_again = named(1, "a");
    let a_reused = named(1, "other");
    let request = build_request(vec![
        span(&a, "s1", "1"),
        span(&b, "s1", "2"),
        span(&a_again, "s2", "3"),
        span(&a, "s1", "4"),
        span(&a_reused, "s1", "5"),
        ProcessSpan {
            resource: Arc::new(ProcessResource::unknown(3)),
            ..span(&a, "s1", "6")
        },
        ProcessSpan {
            resource: Arc::new(ProcessResource::unknown(3)),
            ..span(&a, "s1", "7")
        },
    ])
    .decode()
    .unwrap();
    type Summary = Vec<(Vec<String>, Vec<(String, Vec<String>)>)>;
    let summary: Summary = request
        .resource_spans
        .iter()
        .map(|rs| {
            (
                rs.resource
                    .as_ref()
                    .unwrap()
                    .attributes
                    .iter()
                    .take(1)
                    .map(|kv| format!("{}={:?}", kv.key, kv.value.as_ref().unwrap().value))
                    .collect(),
                rs.scope_spans
                    .iter()
                    .map(|ss| {
                        (
                            ss.scope.as_ref().unwrap().name.clone(),
                            ss.spans.iter().map(|s| s.name.clone()).collect(),
                        )
                    })
                    .collect(),
            )
        })
        .collect();
    assert_eq!(summary.len(), 4, "{summary:#?}");
    assert_eq!(
        summary[0].1,
        vec![
            ("s1".to_owned(), vec!["1".to_owned(), "4".to_owned()]),
            ("s2".to_owned(), vec!["3".to_owned()])
        ],
        "equal resources merge even as distinct allocations"
    );
    assert_eq!(summary[1].1, vec![("s1".to_owned(), vec!["2".to_owned()])]);
    assert!(
        summary[2].0[0].contains("other"),
        "re-registered pid is its own resource"
    );
    assert_eq!(
        summary[3].1,
        vec![("s1".to_owned(), vec!["6".to_owned(), "7".to_owned()])],
        "unknown pids group too"
    );
}

/// A backend that fails with scripted errors, then records what it gets.
#[derive(Clone, Default)]
struct Fake {
    script: Arc<Mutex<Vec<ExportError>>>,
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    attempts: Arc<AtomicU64>,
    /// When set, every attempt waits for a notification first.
    gate: Option<Arc<Notify>>,
    hang: bool,
}

impl SpanExporter for Fake {
    async fn export(&mut self, request: EncodedRequest) -> Result<u64, ExportError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if let Some(gate) = &self.gate {
            gate.notified().await;
        }
        if self.hang {
            std::future::pending::<()>().await;
        }
        if let Some(error) = self.script.lock().unwrap().pop() {
            return Err(error);
        }
        self.received
            .lock()
            .unwrap()
            .push(request.decode().unwrap());
        Ok(0)
    }
}

impl Fake {
    fn spans(&self) -> usize {
        self.received
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .map(|ss| ss.spans.len())
            .sum()
    }
}

fn retryable() -> ExportError {
    ExportError::Retryable {
        backend: "fake",
        message: "down".into(),
    }
}

fn fast() -> ExporterConfig {
    ExporterConfig {
        queue_capacity: 16,
        max_batch_size: 4,
        batch_interval: Duration::from_millis(20),
        export_timeout: Duration::from_secs(2),
        max_retries: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        shutdown_timeout: Duration::from_secs(2),
    }
}

async fn eventually(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn batches_by_size_and_by_interval() {
    let fake = Fake::default();
    let exporter = Exporter::start(fake.clone(), fast());
    let handle = exporter.handle();
    let resource = named(1, "a");
    for i in 0..5 {
        assert!(handle.try_offer(span(&resource, "s", &i.to_string())));
    }
    // Four go at once (size), the fifth after the interval.
    eventually("both batches", || fake.received.lock().unwrap().len() == 2).await;
    assert_eq!(fake.spans(), 5);
    let counters = exporter.shutdown().await;
    assert_eq!(counters.exported, 5);
    assert_eq!(counters.export_errors, 0);
}

#[tokio::test]
async fn retryable_failures_are_retried_then_dropped_and_counted() {
    let fake = Fake::default();
    fake.script
        .lock()
        .unwrap()
        .extend([retryable(), retryable()]);
    let exporter = Exporter::start(fake.clone(), fast());
    let resource = named(1, "a");
    for _ in 0..4 {
        exporter.handle().try_offer(span(&resource, "s", "x"));
    }
    eventually("delivery after retries", || fake.spans() == 4).await;
    assert_eq!(fake.attempts.load(Ordering::SeqCst), 3);

    // More failures than retries: the batch is dropped.
    fake.script
        .lock()
        .unwrap()
        .extend((0..4).map(|_| retryable()));
    for _ in 0..4 {
        exporter.handle().try_offer(span(&resource, "s", "y"));
    }
    let counters = exporter.counters();
    eventually("drop after retries", || {
        counters.snapshot().dropped_after_retries == 4
    })
    .await;
    // A permanent failure is not retried.
    fake.script.lock().unwrap().push(ExportError::Permanent {
        backend: "fake",
        message: "bad".into(),
    });
    let before = fake.attempts.load(Ordering::SeqCst);
    for _ in 0..4 {
        exporter.handle().try_offer(span(&resource, "s", "z"));
    }
    eventually("permanent drop", || {
        counters.snapshot().dropped_after_retries == 8
    })
    .await;
    assert_eq!(fake.attempts.load(Ordering::SeqCst), before + 1);
    let counters = exporter.shutdown().await;
    assert_eq!(counters.exported, 4);
    assert_eq!(counters.export_errors, 2 + 4 + 1);
}

#[tokio::test]
async fn full_queue_drops_without_blocking() {
    let gate = Arc::new(Notify::new());
    let fake = Fake {
        gate: Some(Arc::clone(&gate)),
        ..Fake::default()
    };
    let exporter = Exporter::start(fake.clone(), fast());
    let handle = exporter.handle();
    let resource = named(1, "a");
    // The worker takes one batch of 4 and blocks in export; the queue then holds 16.
    for _ in 0..4 {
        assert!(handle.try_offer(span(&resource, "s", "x")));
    }
    eventually("worker busy", || fake.attempts.load(Ordering::SeqCst) == 1).await;
    let accepted = (0..100)
        .filter(|_| handle.try_offer(span(&resource, "s", "x")))
        .count();
    assert_eq!(accepted, 16);
    assert_eq!(exporter.counters().snapshot().dropped_queue_full, 84);
    // Release every export; shutdown flushes the queue.
    let releaser = tokio::spawn(async move {
        loop {
            gate.notify_one();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    let counters = exporter.shutdown().await;
    releaser.abort();
    assert_eq!(counters.exported, 20);
    assert_eq!(fake.spans(), 20);
}

#[tokio::test]
async fn shutdown_flushes_pending_spans_before_the_interval() {
    let fake = Fake::default();
    let config = ExporterConfig {
        batch_interval: Duration::from_secs(3600),
        max_batch_size: 1000,
        ..fast()
    };
    let exporter = Exporter::start(fake.clone(), config);
    let resource = named(1, "a");
    for _ in 0..10 {
        exporter.handle().try_offer(span(&resource, "s", "x"));
    }
    let started = Instant::now();
    let counters = exporter.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(counters.exported, 10);
    assert_eq!(fake.spans(), 10);
}

#[tokio::test]
async fn shutdown_is_bounded_when_the_backend_hangs() {
    let fake = Fake {
        hang: true,
        ..Fake::default()
    };
    let config = ExporterConfig {
        shutdown_timeout: Duration::from_millis(300),
        ..fast()
    };
    let exporter = Exporter::start(fake.clone(), config);
    let resource = named(1, "a");
    for _ in 0..12 {
        exporter.handle().try_offer(span(&resource, "s", "x"));
    }
    eventually("export started", || {
        fake.attempts.load(Ordering::SeqCst) >= 1
    })
    .await;
    let started = Instant::now();
    let counters = exporter.shutdown().await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    assert_eq!(counters.exported, 0);
    assert_eq!(counters.dropped_at_shutdown, 12, "{counters:?}");
}
