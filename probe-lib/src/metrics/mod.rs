//! Prometheus metrics (names and meaning: `docs/metrics.md`). An exporter: it registers the
//! counters the sources update (defined in [`crate::model`], so no source imports this module)
//! and renders everything else from the snapshot.
//!
//! Verdict-derived series are not stored in metric families: a collector renders them from
//! the latest [`Snapshot`] at scrape time, so a repaired problem or a deleted pod can never
//! leave a stale series behind, and a scrape always sees one consistent view.

use std::fmt;
use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::model::Workers;
pub use crate::model::{KubeMetrics, MonitorMetrics, ProbeMetrics};
pub use crate::model::{NotifyMetrics, WriteObject};
use crate::snapshot::Snapshot;
use felix::FelixCollector;
use verdicts::VerdictCollector;
use workers::WorkerCollector;

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

/// Encode one unlabelled gauge (help text and value) in one call.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), fmt::Error> {
    let e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(value).encode(e)
}

mod blocks;
mod calico;
mod connects;
mod controlplane;
mod felix;
mod peers;
mod probes;
mod process;
mod services;
mod verdicts;
mod workers;

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
