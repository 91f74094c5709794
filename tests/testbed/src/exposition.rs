//! A small parser for the Prometheus text format, enough to assert on the agent's metrics.

use std::collections::{BTreeMap, BTreeSet};

/// One sample: name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// All samples of one scrape.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<Sample>);

impl Samples {
    /// Parse an exposition; lines that do not parse are skipped.
    pub fn parse(text: &str) -> Self {
        Samples(text.lines().filter_map(parse_line).collect())
    }

    /// Samples of one metric.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.0.iter().filter(move |s| s.name == name)
    }

    /// Value of an unlabelled metric (or the first sample of it).
    pub fn value(&self, name: &str) -> Option<f64> {
        self.named(name).next().map(|s| s.value)
    }

    /// Value of the sample with these label values.
    pub fn value_with(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.named(name)
            .find(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
            })
            .map(|s| s.value)
    }

    /// `podnet_pod_problem` series as `(interface, ip, reason)`.
    pub fn problems(&self) -> BTreeSet<(String, String, String)> {
        self.named("podnet_pod_problem")
            .filter(|s| s.value == 1.0)
            .map(|s| {
                let l = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
                (l("interface"), l("ip"), l("reason"))
            })
            .collect()
    }

    /// `podnet_node_problem` reasons.
    pub fn node_problems(&self) -> BTreeSet<String> {
        self.named("podnet_node_problem")
            .filter(|s| s.value == 1.0)
            .filter_map(|s| s.labels.get("reason").cloned())
            .collect()
    }

    /// Samples of per-pod series (those labelled with a pod's interface). With every pod
    /// healthy there are none: series must not grow with the number of pods.
    pub fn pod_series(&self) -> Vec<&Sample> {
        self.0
            .iter()
            .filter(|s| s.labels.contains_key("interface"))
            .collect()
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// No samples.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let close = line.rfind('}')?;
            (
                &line[..open],
                parse_labels(&line[open + 1..close])?,
                &line[close + 1..],
            )
        }
        None => {
            let sp = line.find(' ')?;
            (&line[..sp], BTreeMap::new(), &line[sp..])
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

fn parse_labels(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Some(out);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if chars.next()? != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim().to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples() {
        let s = Samples::parse(
            "# HELP x y\nplain 3\nlab{a=\"1\",b=\"x\\\"y\"} 1\nh_bucket{le=\"+Inf\"} 2\n",
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s.value("plain"), Some(3.0));
        assert_eq!(s.value_with("lab", &[("b", "x\"y")]), Some(1.0));
        assert_eq!(s.value_with("h_bucket", &[("le", "+Inf")]), Some(2.0));
    }
}
