//! Prometheus metrics (names and meaning: `docs/metrics.md`).
//!
//! Verdict-derived series are not stored in metric families: a collector renders them from
//! the latest [`Snapshot`] at scrape time, so a repaired problem or a deleted pod can never
//! leave a stale series behind, and a scrape always sees one consistent view.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::host::ResyncCause;
use crate::snapshot::Snapshot;

/// `cause` label of the re-sync counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    /// [`ResyncCause::as_str`].
    pub cause: &'static str,
}

/// `version` label of `podnet_build_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

/// The handles the monitor updates.
#[derive(Debug, Clone)]
pub struct MonitorMetrics {
    resyncs: Family<CauseLabels, Counter>,
    resync_duration: Histogram,
    resync_errors: Counter,
    events: Counter,
}

impl MonitorMetrics {
    /// Count one completed re-sync and how long it took.
    pub fn resynced(&self, cause: ResyncCause, seconds: f64) {
        self.resyncs
            .get_or_create(&CauseLabels {
                cause: cause.as_str(),
            })
            .inc();
        self.resync_duration.observe(seconds);
    }

    /// Count a failed re-sync attempt.
    pub fn resync_failed(&self) {
        self.resync_errors.inc();
    }

    /// Count kernel events applied.
    pub fn events_applied(&self, n: u64) {
        self.events.inc_by(n);
    }

    /// Completed re-syncs so far for one cause (for tests and logs).
    pub fn resync_count(&self, cause: ResyncCause) -> u64 {
        self.resyncs
            .get_or_create(&CauseLabels {
                cause: cause.as_str(),
            })
            .get()
    }
}

/// The agent's registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    monitor: MonitorMetrics,
}

impl Metrics {
    /// Register every metric except the verdict series (see [`Metrics::serve_snapshots`]).
    pub fn new(version: &str) -> Self {
        let mut registry = Registry::default();
        let monitor = MonitorMetrics {
            resyncs: Family::default(),
            resync_duration: Histogram::new(exponential_buckets(0.0005, 4.0, 8)),
            resync_errors: Counter::default(),
            events: Counter::default(),
        };
        for cause in ResyncCause::ALL {
            // Present at zero from the start, so rate() works from the first scrape.
            let _ = monitor.resyncs.get_or_create(&CauseLabels {
                cause: cause.as_str(),
            });
        }
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
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: version.to_owned(),
            })
            .set(1);
        registry.register("podnet_build_info", "Always 1; the agent's version", build);
        Metrics { registry, monitor }
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
            let secs = t
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
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

#[cfg(test)]
mod tests;
