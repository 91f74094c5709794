//! The unanswered-connect series: per pod and class, and one per destination (bounded by
//! the prober's per-node limit, `MAX_NODE_UNANSWERED`).

use std::collections::BTreeMap;
use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::model::ConnectClass;
use crate::snapshot::Snapshot;

/// `podnet_pod_unanswered_connects{namespace,pod,interface,class}` (destinations) and
/// `podnet_pod_unanswered_connect{…,destination,owner}` (sockets).
pub(super) fn encode(encoder: &mut DescriptorEncoder, snap: &Snapshot) -> fmt::Result {
    let mut per_pod: BTreeMap<(&str, &str, &str, ConnectClass), i64> = BTreeMap::new();
    for c in &snap.unanswered_connects {
        *per_pod
            .entry((
                c.pod.namespace.as_str(),
                c.pod.name.as_str(),
                c.interface.as_str(),
                c.class,
            ))
            .or_default() += 1;
    }
    let mut e = encoder.encode_descriptor(
        "podnet_pod_unanswered_connects",
        "Destinations a pod keeps failing to connect to (SYN_SENT sockets retransmitting in consecutive rounds), by class; absent when none",
        None,
        MetricType::Gauge,
    )?;
    for ((namespace, pod, interface, class), n) in per_pod {
        let labels = [
            ("namespace", namespace),
            ("pod", pod),
            ("interface", interface),
            ("class", class.as_str()),
        ];
        ConstGauge::new(n).encode(e.encode_family(&labels)?)?;
    }
    let mut e = encoder.encode_descriptor(
        "podnet_pod_unanswered_connect",
        "SYN_SENT sockets of a pod to one unanswered destination, with the pod it belonged to where known",
        None,
        MetricType::Gauge,
    )?;
    for c in &snap.unanswered_connects {
        let destination = c.destination.to_string();
        let labels = [
            ("namespace", c.pod.namespace.as_str()),
            ("pod", c.pod.name.as_str()),
            ("interface", c.interface.as_str()),
            ("class", c.class.as_str()),
            ("destination", destination.as_str()),
            ("owner", c.owner.as_deref().unwrap_or("")),
        ];
        ConstGauge::new(i64::from(c.sockets)).encode(e.encode_family(&labels)?)?;
    }
    let e = encoder.encode_descriptor(
        "podnet_unanswered_connects_dropped",
        "Unanswered destinations (sockets, where a pod's dump was cut short) left out by the per-pod and per-node bounds",
        None,
        MetricType::Gauge,
    )?;
    ConstGauge::new(i64::try_from(snap.unanswered_dropped).unwrap_or(i64::MAX)).encode(e)?;
    Ok(())
}
