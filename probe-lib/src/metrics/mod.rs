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
use crate::model::{NodeReason, ProbeSkip, WorkerState, Workers};
pub use crate::model::{NotifyMetrics, WriteObject};
use crate::snapshot::Snapshot;
use crate::util::clock::unix_seconds;

/// Labels of `podnet_build_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
    revision: String,
}

/// The agent's registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    monitor: MonitorMetrics,
    probe: ProbeMetrics,
}

impl Metrics {
    /// Register every metric except the verdict series (see [`Metrics::serve_snapshots`]);
    /// the source revision is "unknown".
    pub fn new(version: &str) -> Self {
        Self::with_revision(version, "unknown")
    }

    /// As [`Metrics::new`], with the source revision (a git commit) in `podnet_build_info`.
    pub fn with_revision(version: &str, revision: &str) -> Self {
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
            "podnet_log_lines_suppressed",
            "Problem-change log lines left out by the rate limit",
            monitor.log_suppressed.clone(),
        );
        registry.register(
            "podnet_pod_problems_raised",
            "Pod problems that appeared (a pod IP gained this reason), by reason: flapping \
             shows here even when every scrape falls between the flaps",
            monitor.problems_raised.clone(),
        );
        registry.register(
            "podnet_pod_routes_removed",
            "Pod host routes removed while the pod and its interface lived (after they had \
             appeared): on Calico, felix deleting routes of endpoints it does not know",
            monitor.routes_removed.clone(),
        );
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: version.to_owned(),
                revision: revision.to_owned(),
            })
            .set(1);
        registry.register(
            "podnet_build_info",
            "Always 1; the agent's version and source revision",
            build,
        );
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
        registry.register(
            "podnet_probe_scope_ignored",
            "Pods' probe labels and annotations (podnet.io/probes, podnet.io/skip-probes) \
             ignored because they were not understood, by reason; counted once per pod and value",
            probe.scope_ignored.clone(),
        );
        Metrics {
            registry,
            monitor,
            probe,
        }
    }

    /// Render the verdict series from the latest snapshot on every scrape, with per-pod
    /// series for at most [`DEFAULT_POD_SERIES_LIMIT`] pods.
    pub fn serve_snapshots(&mut self, snapshots: watch::Receiver<Arc<Snapshot>>) {
        self.serve_snapshots_capped(snapshots, DEFAULT_POD_SERIES_LIMIT);
    }

    /// As [`Metrics::serve_snapshots`], with per-pod series (`podnet_pod_problem`,
    /// `podnet_pod_probe_failing`) for at most `max_pods` pods; the pods left out are counted
    /// in `podnet_pod_series_truncated`. Node-level gauges always count every pod.
    pub fn serve_snapshots_capped(
        &mut self,
        snapshots: watch::Receiver<Arc<Snapshot>>,
        max_pods: usize,
    ) {
        self.registry.register_collector(Box::new(VerdictCollector {
            snapshots,
            max_pods,
        }));
    }

    /// Export `podnet_worker_up{worker}` from the registry of workers.
    pub fn watch_workers(&mut self, workers: Workers) {
        self.registry
            .register_collector(Box::new(WorkerCollector { workers }));
    }

    /// Export felix as the snapshot's verdicts saw it (`--cni calico` with a felix endpoint).
    pub fn watch_felix(&mut self, snapshots: watch::Receiver<Arc<Snapshot>>) {
        self.registry
            .register_collector(Box::new(FelixCollector { snapshots }));
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

    /// Register the node condition's and Events' write counters (when either is on) and
    /// return their handles.
    pub fn notify(&mut self) -> NotifyMetrics {
        let m = NotifyMetrics::default();
        self.registry.register(
            "podnet_kube_writes",
            "Writes to the Kubernetes API (node condition, Events), by object and result",
            m.writes.clone(),
        );
        self.registry.register(
            "podnet_events_dropped",
            "Events not written: over the rate limit, or too many problems tracked",
            m.events_dropped.clone(),
        );
        self.registry.register(
            "podnet_events_pending",
            "Problem starts held back by the Event rate limit, told when tokens return",
            m.events_pending.clone(),
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

/// Pods with per-pod series at most, unless configured otherwise.
pub const DEFAULT_POD_SERIES_LIMIT: usize = 2000;

#[derive(Debug)]
struct VerdictCollector {
    snapshots: watch::Receiver<Arc<Snapshot>>,
    max_pods: usize,
}

#[derive(Debug)]
struct FelixCollector {
    snapshots: watch::Receiver<Arc<Snapshot>>,
}

impl Collector for FelixCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        // Unread until the first snapshot: all zero, never healthy.
        let s = self.snapshots.borrow().felix.clone().unwrap_or_default();
        let up = "1 while calico-node's felix health endpoint on this node answers";
        gauge(
            &mut encoder,
            "podnet_calico_felix_up",
            up,
            i64::from(s.health_up),
        )?;
        let ready =
            "1 while felix reports ready; 0 when not ready or not readable (never 1 unread)";
        let is_ready = s.ready == Some(true);
        gauge(
            &mut encoder,
            "podnet_calico_felix_ready",
            ready,
            i64::from(is_ready),
        )?;
        let live = "1 while felix reports live; 0 when not live or not readable";
        let is_live = s.live == Some(true);
        gauge(
            &mut encoder,
            "podnet_calico_felix_live",
            live,
            i64::from(is_live),
        )?;
        let mup = "1 while felix's Prometheus endpoint answers (off by default in Calico)";
        gauge(
            &mut encoder,
            "podnet_calico_felix_metrics_up",
            mup,
            i64::from(s.metrics_up),
        )?;
        if let Some(n) = s.active_local_endpoints {
            let help = "felix_active_local_endpoints: workloads felix knows on this node; absent when unread";
            gauge(
                &mut encoder,
                "podnet_calico_felix_active_local_endpoints",
                help,
                n as i64,
            )?;
        }
        if let Some(n) = s.resync_state {
            let help = "felix_resync_state (1 wait for datastore, 2 resyncing, 3 in sync); absent when unread";
            gauge(
                &mut encoder,
                "podnet_calico_felix_resync_state",
                help,
                i64::from(n),
            )?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct WorkerCollector {
    workers: Workers,
}

impl Collector for WorkerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut e = encoder.encode_descriptor(
            "podnet_worker_up",
            "1 while this worker (task or thread) runs and makes progress; 0 once it stopped, panicked or stalled",
            None,
            MetricType::Gauge,
        )?;
        for (name, state) in self.workers.states(std::time::Instant::now()) {
            let up = i64::from(state == WorkerState::Running);
            ConstGauge::new(up).encode(e.encode_family(&[("worker", name)])?)?;
        }
        Ok(())
    }
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

/// `podnet_target_failing_pods{target}` (every target, always: how many pods fail it, whatever
/// the explanation) and `podnet_pod_probe_failing{…}` (only pod alarms: failures not explained
/// at node level by `target_unreachable` or `forwarding_disabled`).
///
/// Linear in pods × their probes: duplicates are found within one pod (a pod's targets are
/// few and bounded by configuration), never by searching every alarm of the node.
/// Most `podnet_remote_block_problem` series: a node that lost every route (thousands of
/// blocks) must not explode the scrape; `podnet_remote_block_problems` keeps the full count.
const MAX_BLOCK_SERIES: usize = 500;

/// Failing remote blocks only: one series per block with its node and reason.
fn encode_remote_blocks(encoder: &mut DescriptorEncoder, snap: &Snapshot) -> fmt::Result {
    gauge(
        encoder,
        "podnet_remote_blocks",
        "Other nodes' pod blocks whose routes are checked (0 when the check is off)",
        snap.remote_blocks_checked as i64,
    )?;
    gauge(
        encoder,
        "podnet_remote_block_problems",
        "Other nodes' pod blocks not routed toward their node",
        snap.remote_blocks.len() as i64,
    )?;
    let mut e = encoder.encode_descriptor(
        "podnet_remote_block_problem",
        "1 while another node's pod block is not routed toward that node; absent when healthy",
        None,
        MetricType::Gauge,
    )?;
    for p in snap.remote_blocks.iter().take(MAX_BLOCK_SERIES) {
        let block = p.block.to_string();
        let labels = [
            ("block", block.as_str()),
            // Not `node`: scrapes label every series with the agent's own node.
            ("remote_node", p.node.as_str()),
            ("reason", p.reason.as_str()),
        ];
        ConstGauge::new(1).encode(e.encode_family(&labels)?)?;
    }
    Ok(())
}

fn encode_probe_verdicts(
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

mod calico;
mod connects;
mod controlplane;
mod peers;
mod process;
mod services;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
