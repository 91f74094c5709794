//! Probe verdict series: `podnet_pods_probes_skipped`, `podnet_target_failing_pods` and
//! `podnet_pod_probe_failing`.

use std::fmt;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::model::ProbeSkip;
use crate::snapshot::Snapshot;

/// `podnet_target_failing_pods{target}` (every target, always: how many pods fail it, whatever
/// the explanation) and `podnet_pod_probe_failing{…}` (only pod alarms: failures not explained
/// at node level by `target_unreachable` or `forwarding_disabled`).
///
/// Linear in pods × their probes: duplicates are found within one pod (a pod's targets are
/// few and bounded by configuration), never by searching every alarm of the node.
pub(super) fn encode_probe_verdicts(
    encoder: &mut DescriptorEncoder,
    snap: &Snapshot,
    exported: &[bool],
) -> Result<(), fmt::Error> {
    if snap.probe_targets.is_empty() {
        return Ok(());
    }
    let mut counts: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    // (pod index, target) → result of its first failing destination.
    let mut alarms: Vec<(usize, &str, &'static str)> = Vec::new();
    for (i, pv) in snap.verdicts.pods.iter().enumerate() {
        let mut counted: Vec<&str> = Vec::new();
        let first_alarm = alarms.len();
        for t in pv.probes.iter().filter(|t| t.failing) {
            let target = t.state.target.as_str();
            if !counted.contains(&target) {
                counted.push(target);
                *counts.entry(target).or_default() += 1;
            }
            if t.is_pod_failure()
                && exported.get(i).copied().unwrap_or(false)
                && !alarms[first_alarm..]
                    .iter()
                    .any(|(_, name, _)| *name == target)
            {
                alarms.push((i, target, t.state.last.as_str()));
            }
        }
    }
    {
        let mut e = encoder.encode_descriptor(
            "podnet_pods_probes_skipped",
            "Pods on this node not probed at all because they or their namespace opted out, by \
             reason; their wiring is still checked",
            None,
            MetricType::Gauge,
        )?;
        for &reason in ProbeSkip::ALL {
            let n = snap
                .verdicts
                .pods
                .iter()
                .filter(|p| p.probes_skipped == Some(reason))
                .count() as i64;
            ConstGauge::new(n).encode(e.encode_family(&[("reason", reason.as_str())])?)?;
        }
    }
    {
        let mut e = encoder.encode_descriptor(
            "podnet_target_failing_pods",
            "Pods on this node failing to reach this target",
            None,
            MetricType::Gauge,
        )?;
        for target in &snap.probe_targets {
            let n = counts.get(target.as_str()).copied().unwrap_or(0);
            ConstGauge::new(n).encode(e.encode_family(&[("target", target.as_str())])?)?;
        }
    }
    let mut e = encoder.encode_descriptor(
        "podnet_pod_probe_failing",
        "1 while this pod fails to reach this target and the node does not explain it; absent otherwise",
        None,
        MetricType::Gauge,
    )?;
    for (i, target, result) in alarms {
        let pv = &snap.verdicts.pods[i];
        let labels = [
            ("namespace", pv.pod.id.namespace.as_str()),
            ("pod", pv.pod.id.name.as_str()),
            ("interface", pv.pod.interface.as_str()),
            ("target", target),
            ("result", result),
        ];
        ConstGauge::new(1).encode(e.encode_family(&labels)?)?;
    }
    Ok(())
}
