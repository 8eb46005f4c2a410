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

#[cfg(test)]
mod tests {
    use prometheus_client::{collector::Collector, registry::Registry};

    use super::*;

    #[derive(Debug)]
    struct Fixed;

    impl Collector for Fixed {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
            family(
                &mut encoder,
                "things",
                "Things seen",
                vec![
                    (vec![("kind", "a".to_owned())], counter(2)),
                    (vec![("kind", "b\"c".to_owned())], counter(3)),
                ],
            )?;
            family(
                &mut encoder,
                "level",
                "A level",
                vec![(Vec::new(), gauge(7))],
            )?;
            family::<ConstGauge<i64>>(&mut encoder, "absent", "No rows", Vec::new())
        }
    }

    #[test]
    fn families_encode_as_openmetrics_text() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert_eq!(
            text,
            "# HELP things Things seen\n# TYPE things counter\nthings_total{kind=\"a\"} 2\n\
             things_total{kind=\"b\\\"c\"} 3\n# HELP level A level\n# TYPE level gauge\n\
             level 7\n# EOF\n"
        );
    }
}
