//! The manager's Prometheus metrics, read from live state at each scrape. Odigos' names where
//! it has them (odigos.md §7: `odigos_ebpf_instrumentation_manager_*` with
//! `telemetry_distro_name` and `telemetry_sdk_language` labels), `odiglet_*` otherwise.

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder, registry::Registry};

use super::ManagerHandle;
use crate::metrics::{counter, family, gauge};

const SDK_LANGUAGE: &str = "go";

struct ManagerCollector(ManagerHandle);

impl std::fmt::Debug for ManagerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ManagerCollector")
    }
}

fn by_distro(distro: &str) -> Vec<(&'static str, String)> {
    vec![
        ("telemetry_distro_name", distro.to_owned()),
        ("telemetry_sdk_language", SDK_LANGUAGE.to_owned()),
    ]
}

impl Collector for ManagerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let stats = self.0.stats();
        // Always present, so dashboards see 0 before the first process.
        let mut instrumented: Vec<_> = stats
            .instrumented
            .iter()
            .map(|(distro, n)| (by_distro(distro), gauge(*n)))
            .collect();
        if instrumented.is_empty() {
            instrumented.push((Vec::new(), gauge(0)));
        }
        family(
            &mut encoder,
            "odigos_ebpf_instrumentation_manager_instrumented_processes",
            "Processes with eBPF instrumentation loaded",
            instrumented,
        )?;
        let mut failed: Vec<_> = stats
            .failed
            .iter()
            .map(|(distro, n)| (by_distro(distro), counter(*n)))
            .collect();
        if failed.is_empty() {
            failed.push((Vec::new(), counter(0)));
        }
        family(
            &mut encoder,
            "odigos_ebpf_instrumentation_manager_failed_instrumentations",
            "eBPF instrumentations that failed to initialize, load or run",
            failed,
        )?;
        let plain = |value| vec![(Vec::new(), counter(value))];
        family(
            &mut encoder,
            "odiglet_instrumentation_attached",
            "Processes the Go probes were attached to",
            plain(stats.attached_total),
        )?;
        family(
            &mut encoder,
            "odiglet_instrumentation_detached",
            "Processes the Go probes were detached from",
            plain(stats.detached_total),
        )?;
        family(
            &mut encoder,
            "odiglet_instrumentation_skipped_not_go",
            "Processes of instrumented containers that are not Go",
            plain(stats.skipped_not_go_total),
        )?;
        family(
            &mut encoder,
            "odiglet_spans_exported",
            "Spans the OTLP receiver accepted",
            plain(stats.export.exported),
        )?;
        let export = stats.export;
        family(
            &mut encoder,
            "odiglet_spans_dropped",
            "Spans dropped before or during export, by reason",
            [
                ("queue_full", export.dropped_queue_full),
                ("after_retries", export.dropped_after_retries),
                ("at_shutdown", export.dropped_at_shutdown),
                ("rejected", export.rejected),
            ]
            .into_iter()
            .map(|(reason, n)| (vec![("reason", reason.to_owned())], counter(n)))
            .collect(),
        )?;
        family(
            &mut encoder,
            "odiglet_span_export_errors",
            "Failed OTLP export attempts (each retry counts)",
            plain(export.export_errors),
        )?;
        family(
            &mut encoder,
            "odiglet_ebpf_ringbuf_lost_spans",
            "Spans lost because the span ring buffer was full",
            plain(stats.probes.ringbuf_full),
        )?;
        family(
            &mut encoder,
            "odiglet_ebpf_span_records",
            "Span records read from the ring buffer",
            plain(stats.reader.records),
        )?;
        family(
            &mut encoder,
            "odiglet_ebpf_span_decode_errors",
            "Span records that could not be decoded",
            plain(stats.reader.decode_errors),
        )?;
        family(
            &mut encoder,
            "odiglet_traceparent_unsearched",
            "Incoming requests whose header map exceeded the search bounds, traceparent not found",
            plain(stats.probes.traceparent_unsearched),
        )?;
        family(
            &mut encoder,
            "odiglet_traceparent_injections",
            "Outgoing traceparent headers, by outcome",
            [
                ("injected", stats.probes.injected),
                ("skipped", stats.probes.inject_skipped),
                ("failed", stats.probes.inject_failed),
            ]
            .into_iter()
            .map(|(outcome, n)| (vec![("outcome", outcome.to_owned())], counter(n)))
            .collect(),
        )
    }
}

impl ManagerHandle {
    /// Registers the manager's metrics; their values are read at each scrape.
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(ManagerCollector(self.clone())));
    }
}
