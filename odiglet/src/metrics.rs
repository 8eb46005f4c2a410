//! Helpers for metrics read from live state at scrape time (`prometheus_client` collectors):
//! each component encodes its own families with these, the ops server encodes the registry.

use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

/// Encodes one counter or gauge family: `(labels, value)` rows under one descriptor.
pub fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    rows: Vec<(Vec<(&str, String)>, M)>,
) -> std::fmt::Result {
    let Some((_, first)) = rows.first() else {
        return Ok(());
    };
    let mut metric = encoder.encode_descriptor(name, help, None, first.metric_type())?;
    for (labels, value) in &rows {
        value.encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

pub fn counter(value: u64) -> ConstCounter<u64> {
    ConstCounter::new(value)
}

pub fn gauge(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}
