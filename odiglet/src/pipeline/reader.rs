//! The async task that drains the Go probes' ring buffer into a [`SpanSink`].

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info_span, trace, warn};

use super::{SpanSink, decode::RecordConverter, resource::ResourceRegistry};
use crate::{
    ring::{self, AsyncRingBuf},
    time::BootClock,
};

/// What the reader saw; shared with whoever reports metrics.
#[derive(Debug, Default)]
pub struct ReaderCounters {
    records: AtomicU64,
    decode_errors: AtomicU64,
}

/// A point-in-time copy of [`ReaderCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderCountersSnapshot {
    /// Records read from the ring buffer.
    pub records: u64,
    /// Records that could not be decoded (and were dropped).
    pub decode_errors: u64,
}

impl ReaderCounters {
    pub fn snapshot(&self) -> ReaderCountersSnapshot {
        ReaderCountersSnapshot {
            records: self.records.load(Ordering::Relaxed),
            decode_errors: self.decode_errors.load(Ordering::Relaxed),
        }
    }
}

/// Reads span records from one ring buffer and offers the spans to a sink.
pub struct SpanReader<S> {
    ring: AsyncRingBuf,
    resources: ResourceRegistry,
    sink: S,
    converter: RecordConverter,
    counters: Arc<ReaderCounters>,
}

impl<S: SpanSink> SpanReader<S> {
    /// `ring` is the Go probes' span ring buffer, registered with [`crate::ring::register`].
    pub fn new(ring: AsyncRingBuf, resources: ResourceRegistry, sink: S) -> Self {
        Self {
            ring,
            resources,
            sink,
            converter: RecordConverter::new(),
            counters: Arc::new(ReaderCounters::default()),
        }
    }

    pub fn counters(&self) -> Arc<ReaderCounters> {
        Arc::clone(&self.counters)
    }

    /// Drains the ring buffer on readiness and every [`ring::DRAIN_INTERVAL`] (the probes
    /// skip most wakeups) until `shutdown` completes, then drains it once more (so spans
    /// committed before the probes were detached are not lost) and returns.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut timer = ring::drain_timer();
        loop {
            tokio::select! {
                ready = ring::wait_ready_or_tick(&mut self.ring, &mut timer) => {
                    if let Err(error) = ready {
                        warn!(%error, "span ring buffer poll failed; stopping");
                        return;
                    }
                    self.drain();
                }
                () = &mut shutdown => {
                    self.drain();
                    debug!(counters = ?self.counters.snapshot(), "span reader stopped");
                    return;
                }
            }
        }
    }

    fn drain(&mut self) {
        // One clock reading per drain: the wall clock can be stepped between batches.
        let clock = BootClock::now();
        let ring = self.ring.get_mut();
        while let Some(item) = ring.next() {
            handle_record(
                &item,
                &clock,
                &self.resources,
                &mut self.converter,
                &self.sink,
                &self.counters,
            );
        }
    }

    /// Runs [`Self::run`] as a task in the current runtime.
    pub fn spawn(self, shutdown: impl Future<Output = ()> + Send + 'static) -> JoinHandle<()>
    where
        S: Send,
    {
        tokio::spawn(self.run(shutdown).instrument(info_span!("span_reader")))
    }
}

/// The per-record work: count, decode, convert, offer. Undecodable records are counted.
pub(crate) fn handle_record(
    bytes: &[u8],
    clock: &BootClock,
    resources: &ResourceRegistry,
    converter: &mut RecordConverter,
    sink: &impl SpanSink,
    counters: &ReaderCounters,
) {
    counters.records.fetch_add(1, Ordering::Relaxed);
    match converter.convert(bytes, clock, resources) {
        Ok(span) => sink.offer(span),
        Err(error) => {
            counters.decode_errors.fetch_add(1, Ordering::Relaxed);
            trace!(%error, "undecodable span record");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use odiglet_common::GoSpanRecord;

    use super::*;
    use crate::pipeline::{ProcessSpan, ResourceAttributes, span::tests::server};

    #[derive(Default)]
    struct Collect(Mutex<Vec<ProcessSpan>>);

    impl SpanSink for Arc<Collect> {
        fn offer(&self, span: ProcessSpan) {
            self.0.lock().unwrap().push(span);
        }
    }

    fn bytes(record: &odiglet_common::go::HttpServerSpan) -> Vec<u8> {
        crate::pipeline::decode::record_bytes(&GoSpanRecord::HttpServer(*record))
    }

    #[test]
    fn records_become_spans_with_their_resource_and_bad_ones_are_counted() {
        let resources = ResourceRegistry::new();
        resources.register(
            4242,
            ResourceAttributes {
                service_name: Some("web".into()),
                ..ResourceAttributes::default()
            },
        );
        let sink = Arc::new(Collect::default());
        let counters = ReaderCounters::default();
        let mut converter = RecordConverter::new();
        let clock = BootClock::fixed(1_000_000, 0);
        let good = bytes(&server("GET", "/a", "", "h:1", "c:2", 200));
        handle_record(&good, &clock, &resources, &mut converter, &sink, &counters);
        handle_record(
            &good[..50],
            &clock,
            &resources,
            &mut converter,
            &sink,
            &counters,
        );
        handle_record(
            &[9, 0, 0, 0],
            &clock,
            &resources,
            &mut converter,
            &sink,
            &counters,
        );
        handle_record(&[], &clock, &resources, &mut converter, &sink, &counters);
        assert_eq!(
            counters.snapshot(),
            ReaderCountersSnapshot {
                records: 4,
                decode_errors: 3
            }
        );
        let spans = sink.0.lock().unwrap();
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].decode_span().unwrap().name, "GET");
        assert_eq!(spans[0].resource.pid(), 4242);
        assert!(Arc::ptr_eq(
            &spans[0].resource,
            &resources.get(4242).unwrap()
        ));
        assert_eq!(
            spans[0].decode_span().unwrap().start_time_unix_nano,
            1_002_000
        );
    }
}
