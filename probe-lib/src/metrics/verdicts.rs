//! The verdict collector: renders the node's and pods' verdict series (`podnet_pod_problem`,
//! `podnet_node_problem`, pod and route counts) from the latest snapshot at scrape time, and
//! calls the other verdict encoders (probes, remote blocks, connects, peers, services).

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::sync::watch;

use super::blocks::encode_remote_blocks;
use super::probes::encode_probe_verdicts;
use super::{calico, connects, controlplane, gauge, peers, services};
use crate::model::NodeReason;
use crate::snapshot::Snapshot;
use crate::util::clock::unix_seconds;

/// Renders the verdict series from the latest snapshot, per-pod series for at most `max_pods`.
#[derive(Debug)]
pub(super) struct VerdictCollector {
    pub(super) snapshots: watch::Receiver<Arc<Snapshot>>,
    pub(super) max_pods: usize,
}

/// Which pods get per-pod series: the first `max` pods (in snapshot order) that have any.
/// Returns a mask by pod index and how many pods were left out.
fn series_budget(snap: &Snapshot, max: usize) -> (Vec<bool>, usize) {
    let mut left = max;
    let mut truncated = 0;
    let mask = snap
        .verdicts
        .pods
        .iter()
        .map(|pv| {
            let has = !pv.problems.is_empty() || pv.probes.iter().any(|t| t.is_pod_failure());
            if !has {
                return false;
            }
            if left == 0 {
                truncated += 1;
                return false;
            }
            left -= 1;
            true
        })
        .collect();
    (mask, truncated)
}

impl Collector for VerdictCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let snap = Arc::clone(&self.snapshots.borrow());
        let v = &snap.verdicts;
        let (exported, truncated) = series_budget(&snap, self.max_pods);
        gauge(
            &mut encoder,
            "podnet_pod_series_truncated",
            "Pods whose per-pod series were left out by --max-pod-series (the node-level gauges still count them)",
            truncated as i64,
        )?;
        gauge(
            &mut encoder,
            "podnet_local_pods",
            "Pods on this node whose wiring is being checked",
            v.pods.len() as i64,
        )?;
        gauge(
            &mut encoder,
            "podnet_broken_pods",
            "Pods on this node with at least one wiring problem",
            v.pods_with_problems() as i64,
        )?;
        calico::encode_calico_node(&mut encoder, &snap)?;
        {
            let mut e = encoder.encode_descriptor(
                "podnet_pod_problem",
                "1 while a pod's host wiring has this problem; absent when healthy",
                None,
                MetricType::Gauge,
            )?;
            for (pod, _) in v.pods.iter().zip(&exported).filter(|(_, e)| **e) {
                for p in &pod.problems {
                    let ip = p.ip.map(|i| i.to_string()).unwrap_or_default();
                    let labels = [
                        ("namespace", pod.pod.id.namespace.as_str()),
                        ("pod", pod.pod.id.name.as_str()),
                        ("interface", pod.pod.interface.as_str()),
                        ("ip", ip.as_str()),
                        ("reason", p.reason.as_str()),
                    ];
                    ConstGauge::new(1).encode(e.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut e = encoder.encode_descriptor(
                "podnet_node_problem",
                "1 while the node has this problem; absent otherwise",
                None,
                MetricType::Gauge,
            )?;
            // `target_unreachable` names its target (a configured one, so bounded): one dead
            // target can then be silenced or aggregated across nodes. Other reasons carry no
            // target; their detail (e.g. `ipv4`) stays in /status.
            let mut series: Vec<(&str, &str)> = v
                .node
                .iter()
                .map(|p| {
                    let target = if p.reason == NodeReason::TargetUnreachable {
                        p.detail.as_str()
                    } else {
                        ""
                    };
                    (p.reason.as_str(), target)
                })
                .collect();
            // Not only adjacent duplicates: one series per reason (and target).
            series.sort_unstable();
            series.dedup();
            for (reason, target) in series {
                if target.is_empty() {
                    ConstGauge::new(1).encode(e.encode_family(&[("reason", reason)])?)?;
                } else {
                    let labels = [("reason", reason), ("target", target)];
                    ConstGauge::new(1).encode(e.encode_family(&labels)?)?;
                }
            }
        }
        encode_probe_verdicts(&mut encoder, &snap, &exported)?;
        encode_remote_blocks(&mut encoder, &snap)?;
        connects::encode(&mut encoder, &snap)?;
        peers::encode(&mut encoder, &snap)?;
        controlplane::encode_control_plane(&mut encoder, &snap)?;
        services::encode(&mut encoder, &snap)?;
        gauge(
            &mut encoder,
            "podnet_synced",
            "1 once the first full read of the node's network state completed",
            i64::from(snap.synced),
        )?;
        gauge(
            &mut encoder,
            "podnet_netlink_routes",
            "Main-table routes on the host",
            snap.routes as i64,
        )?;
        if let Some(t) = snap.last_full_sync {
            let secs = unix_seconds(t);
            let e = encoder.encode_descriptor(
                "podnet_netlink_last_resync_timestamp_seconds",
                "When the last full re-dump completed",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(secs).encode(e)?;
        }
        Ok(())
    }
}
