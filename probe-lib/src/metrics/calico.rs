//! `podnet_calico_node_info`: the calico-node pod on this node and whether its Calico version
//! has the incident's looping watch bug (calico#6032, < v3.23.1). One series at most, its
//! labels bounded (a version is rendered from three numbers, never copied from the image).

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::snapshot::Snapshot;

/// Encode the info series when the pod watch saw a calico-node pod on this node.
pub(super) fn encode_calico_node(
    encoder: &mut DescriptorEncoder,
    snap: &Snapshot,
) -> Result<(), fmt::Error> {
    let Some(c) = snap.kube.as_ref().and_then(|k| k.calico_node.as_ref()) else {
        return Ok(());
    };
    let mut e = encoder.encode_descriptor(
        "podnet_calico_node_info",
        "Always 1 while the pod watch sees a calico-node pod on this node: its Calico version \
         (\"unknown\" without a readable tag) and whether that version has the looping watch \
         bug calico#6032 (before v3.23.1)",
        None,
        MetricType::Gauge,
    )?;
    let version = c
        .version
        .map_or_else(|| "unknown".to_owned(), |v| v.to_string());
    let labels = [
        ("version", version.as_str()),
        (
            "known_watch_bug",
            if c.known_watch_bug { "true" } else { "false" },
        ),
    ];
    ConstGauge::new(1).encode(e.encode_family(&labels)?)
}
