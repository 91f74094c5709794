//! Prometheus metrics (names and meaning: `docs/metrics.md`). An exporter: it registers the
//! counters the sources update (defined in [`crate::model`], so no source imports this module)
//! and renders everything else from the snapshot.
//!
//! Verdict-derived series are not stored in metric families: a collector renders them from
//! the latest [`Snapshot`] at scrape time, so a repaired problem or a deleted pod can never
//! leave a stale series behind, and a scrape always sees one consistent view.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

pub use crate::model::{KubeMetrics, MonitorMetrics, ProbeMetrics};
use crate::snapshot::Snapshot;
use crate::util::clock::unix_seconds;

/// `version` label of `podnet_build_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

/// The agent's registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    monitor: MonitorMetrics,
    probe: ProbeMetrics,
}

impl Metrics {
    /// Register every metric except the verdict series (see [`Metrics::serve_snapshots`]).
    pub fn new(version: &str) -> Self {
        let mut registry = Registry::default();
        let monitor = MonitorMetrics::default();
        registry.register(
            "podnet_netlink_resyncs",
            "Full re-dumps of links, routes and netconf, by cause",
            monitor.resyncs.clone(),
        );
        registry.register(
            "podnet_netlink_resync_duration_seconds",
            "Time a full re-dump took",
            monitor.resync_duration.clone(),
        );
        registry.register(
            "podnet_netlink_resync_errors",
            "Full re-dumps that failed (retried with backoff)",
            monitor.resync_errors.clone(),
        );
        registry.register(
            "podnet_netlink_events",
            "Kernel link, route, address and netconf notifications applied",
            monitor.events.clone(),
        );
        registry.register(
            "podnet_pod_problems_raised",
            "Pod problems that appeared (a pod IP gained this reason), by reason: flapping \
             shows here even when every scrape falls between the flaps",
            monitor.problems_raised.clone(),
        );
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: version.to_owned(),
            })
            .set(1);
        registry.register("podnet_build_info", "Always 1; the agent's version", build);
        registry.register_collector(Box::new(process::ProcessCollector));
        let probe = ProbeMetrics::default();
        registry.register(
            "podnet_probes",
            "Probes sent, by target, protocol, direction and result",
            probe.probes.clone(),
        );
        registry.register(
            "podnet_probe_duration_seconds",
            "Round-trip time of answered probes, over all pods",
            probe.duration.clone(),
        );
        Metrics {
            registry,
            monitor,
            probe,
        }
    }

    /// Render the verdict series from the latest snapshot on every scrape.
    pub fn serve_snapshots(&mut self, snapshots: watch::Receiver<Arc<Snapshot>>) {
        self.registry
            .register_collector(Box::new(VerdictCollector { snapshots }));
    }

    /// Handles for the monitor.
    pub fn monitor(&self) -> MonitorMetrics {
        self.monitor.clone()
    }

    /// Handles for the prober.
    pub fn probe(&self) -> ProbeMetrics {
        self.probe.clone()
    }

    /// Register the Kubernetes watch's metrics (only when pods come from the API) and return
    /// their handles.
    pub fn kube(&mut self) -> KubeMetrics {
        let m = KubeMetrics::default();
        self.registry.register(
            "podnet_kube_watch_healthy",
            "1 while listing and watching this node's pods works",
            m.healthy.clone(),
        );
        self.registry.register(
            "podnet_kube_watch_restarts",
            "Times the pod watch started over, by reason",
            m.restarts.clone(),
        );
        self.registry.register(
            "podnet_kube_last_event_timestamp_seconds",
            "When the last list, watch event or bookmark arrived",
            m.last_event.clone(),
        );
        self.registry.register(
            "podnet_kube_requests",
            "Requests to the Kubernetes API, by verb",
            m.requests.clone(),
        );
        m
    }

    /// Render in the Prometheus text format (0.0.4).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Content type of [`Metrics::encode`]'s output.
    pub const CONTENT_TYPE: &'static str = "text/plain; version=0.0.4; charset=utf-8";
}

#[derive(Debug)]
struct VerdictCollector {
    snapshots: watch::Receiver<Arc<Snapshot>>,
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), fmt::Error> {
    let e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(e)
}

impl Collector for VerdictCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let snap = Arc::clone(&self.snapshots.borrow());
        let v = &snap.verdicts;
        gauge(
            &mut encoder,
            "podnet_local_pods",
            "Pods on this node whose wiring is being checked",
            v.pods.len() as i64,
        )?;
        gauge(
            &mut encoder,
            "podnet_pods_with_route_problem",
            "Pods on this node with at least one wiring problem",
            v.pods_with_problems() as i64,
        )?;
        {
            let mut e = encoder.encode_descriptor(
                "podnet_pod_route_problem",
                "1 while a pod's host wiring has this problem; absent when healthy",
                None,
                MetricType::Gauge,
            )?;
            for pod in &v.pods {
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
            let mut reasons: Vec<&str> = v.node.iter().map(|p| p.reason.as_str()).collect();
            reasons.dedup();
            for reason in reasons {
                ConstGauge::new(1).encode(e.encode_family(&[("reason", reason)])?)?;
            }
        }
        encode_probe_verdicts(&mut encoder, &snap)?;
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

/// `podnet_pods_probe_failing{target}` (every target, always: how many pods fail it, whatever
/// the explanation) and `podnet_pod_probe_failing{…}` (only pod alarms: failures not explained
/// at node level by `target_unreachable` or `forwarding_disabled`).
fn encode_probe_verdicts(
    encoder: &mut DescriptorEncoder,
    snap: &Snapshot,
) -> Result<(), fmt::Error> {
    if snap.probe_targets.is_empty() {
        return Ok(());
    }
    let mut counts: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
    // (pod index, target) → result of its first failing destination.
    let mut alarms: Vec<(usize, &str, &'static str)> = Vec::new();
    for (i, pv) in snap.verdicts.pods.iter().enumerate() {
        let mut counted: Vec<&str> = Vec::new();
        for t in pv.probes.iter().filter(|t| t.failing) {
            let target = t.state.target.as_str();
            if !counted.contains(&target) {
                counted.push(target);
                *counts.entry(target).or_default() += 1;
            }
            if t.is_pod_failure() && !alarms.iter().any(|(j, name, _)| *j == i && *name == target) {
                alarms.push((i, target, t.state.last.as_str()));
            }
        }
    }
    {
        let mut e = encoder.encode_descriptor(
            "podnet_pods_probe_failing",
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

mod process;

#[cfg(test)]
mod tests;
