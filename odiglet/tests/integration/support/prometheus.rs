//! A strict reader of the OpenMetrics text exposition (what `/metrics` serves): every line
//! must be a well-formed descriptor or sample of the family declared just before it, the
//! exposition ends with `# EOF`; anything else panics with the line.

use std::collections::HashSet;

/// One sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

const TYPES: [&str; 8] = [
    "counter",
    "gauge",
    "histogram",
    "gaugehistogram",
    "summary",
    "info",
    "stateset",
    "unknown",
];

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Which sample names a family of `kind` may have.
fn belongs(family: &str, kind: &str, name: &str) -> bool {
    let suffixes: &[&str] = match kind {
        "counter" => &["_total", "_created"],
        "histogram" | "gaugehistogram" => {
            &["_bucket", "_count", "_sum", "_created", "_gcount", "_gsum"]
        }
        "summary" => &["", "_count", "_sum", "_created"],
        "info" => &["_info"],
        _ => &[""],
    };
    suffixes
        .iter()
        .any(|suffix| name.strip_suffix(suffix) == Some(family))
}

/// `{k="v",...}`: returns the labels and the rest of the line.
fn labels<'a>(text: &'a str, line: &str) -> (Vec<(String, String)>, &'a str) {
    let mut labels = Vec::new();
    let mut rest = text;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return (labels, after);
        }
        let (name, after) = rest
            .split_once("=\"")
            .unwrap_or_else(|| panic!("bad label in {line:?}"));
        assert!(is_label_name(name), "bad label name {name:?} in {line:?}");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        assert!(
            !labels.iter().any(|(n, _)| n == name),
            "duplicate label {name} in {line:?}"
        );
        labels.push((name.to_owned(), value));
        rest = &after[end + 1..];
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else {
            assert!(rest.starts_with('}'), "bad label list in {line:?}");
        }
    }
}

fn number(text: &str, line: &str) -> f64 {
    match text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => text
            .parse()
            .unwrap_or_else(|_| panic!("bad value {text:?} in {line:?}")),
    }
}

/// Parses `text`, panicking on the first violation.
pub fn parse(text: &str) -> Vec<Sample> {
    let body = text
        .strip_suffix("# EOF\n")
        .unwrap_or_else(|| panic!("the exposition must end with `# EOF`: {text}"));
    let mut samples = Vec::new();
    let mut declared = HashSet::new();
    let mut family: Option<(String, String)> = None;
    for line in body.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (Some(keyword), Some(name)) = (parts.next(), parts.next()) else {
                panic!("bad descriptor {line:?}");
            };
            assert!(is_metric_name(name), "bad family name in {line:?}");
            match keyword {
                "TYPE" => {
                    let kind = parts.next().unwrap_or_default();
                    assert!(TYPES.contains(&kind), "bad type in {line:?}");
                    assert!(declared.insert(name.to_owned()), "{name} declared twice");
                    family = Some((name.to_owned(), kind.to_owned()));
                }
                "HELP" | "UNIT" => {}
                _ => panic!("unknown descriptor {line:?}"),
            }
            continue;
        }
        assert!(!line.is_empty(), "empty line in the exposition");
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("sample without value: {line:?}"),
        };
        assert!(is_metric_name(name), "bad sample name in {line:?}");
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(after) => labels(after, line),
            None => (Vec::new(), rest),
        };
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("no space before the value in {line:?}"));
        assert!(!value.contains(' '), "trailing fields in {line:?}");
        let value = number(value, line);
        let (family_name, kind) = family
            .as_ref()
            .unwrap_or_else(|| panic!("sample before any TYPE: {line:?}"));
        assert!(
            belongs(family_name, kind, name),
            "{name} is not in family {family_name} ({kind})"
        );
        if kind == "counter" {
            assert!(value >= 0.0, "negative counter in {line:?}");
        }
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

/// The value of the sample `name` whose labels include `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
}

#[test]
fn reads_a_valid_exposition_and_rejects_broken_ones() {
    let good = "# HELP a_total Things.\n# TYPE a counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n# TYPE b gauge\nb 2.5\n# EOF\n";
    let samples = parse(good);
    assert_eq!(value(&samples, "a_total", &[("y", "q\"")]), Some(3.0));
    assert_eq!(value(&samples, "b", &[]), Some(2.5));
    for bad in [
        "# TYPE a counter\na_total 1\n",
        "# TYPE a counter\na 1\n# EOF\n",
        "# TYPE a gauge\na{x=1} 1\n# EOF\n",
        "b 1\n# EOF\n",
        "# TYPE a gauge\na 1 2 3\n# EOF\n",
        "# TYPE a counter\na_total -1\n# EOF\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse(bad)).is_err(),
            "accepted {bad:?}"
        );
    }
}
