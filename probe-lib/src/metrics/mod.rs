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
use crate::probe::outcome::{Observation, ProbeResult};
use crate::probe::plan::PlannedProbe;
use crate::probe::target::{Direction, Protocol};
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

/// Labels of `podnet_probes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    target: String,
    protocol: &'static str,
    direction: &'static str,
    result: &'static str,
}

/// Labels of `podnet_probe_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeTargetLabels {
    target: String,
    protocol: &'static str,
    direction: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn probe_histogram() -> Histogram {
    // 50 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

/// The handles the prober updates.
#[derive(Debug, Clone)]
pub struct ProbeMetrics {
    probes: Family<ProbeLabels, Counter>,
    duration: HistogramFamily<ProbeTargetLabels>,
}

impl ProbeMetrics {
    /// Count one probe and, if it was answered, its round-trip time.
    pub fn observe(&self, p: &PlannedProbe, obs: &Observation) {
        self.probes
            .get_or_create(&ProbeLabels {
                target: p.target.clone(),
                protocol: p.protocol.as_str(),
                direction: p.direction.as_str(),
                result: obs.result.as_str(),
            })
            .inc();
        if let Some(rtt) = obs.rtt {
            self.duration
                .get_or_create(&ProbeTargetLabels {
                    target: p.target.clone(),
                    protocol: p.protocol.as_str(),
                    direction: p.direction.as_str(),
                })
                .observe(rtt.as_secs_f64());
        }
    }

    /// Create every series of one target at zero, so their number never changes at run time
    /// and `rate()` works from the first scrape.
    pub fn register_target(&self, target: &str, protocol: Protocol, direction: Direction) {
        for result in ProbeResult::ALL {
            let _ = self.probes.get_or_create(&ProbeLabels {
                target: target.to_owned(),
                protocol: protocol.as_str(),
                direction: direction.as_str(),
                result: result.as_str(),
            });
        }
        let _ = self.duration.get_or_create(&ProbeTargetLabels {
            target: target.to_owned(),
            protocol: protocol.as_str(),
            direction: direction.as_str(),
        });
    }

    /// Probes counted so far for a target and result (for tests).
    pub fn count(&self, target: &str, result: ProbeResult) -> u64 {
        let mut total = 0;
        for protocol in ["icmp", "tcp"] {
            for direction in ["pod_to_target", "host_to_pod"] {
                let labels = ProbeLabels {
                    target: target.to_owned(),
                    protocol,
                    direction,
                    result: result.as_str(),
                };
                total += self.probes.get(&labels).map_or(0, |c| c.get());
            }
        }
        total
    }
}

/// Labels of `podnet_kube_watch_restarts_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Labels of `podnet_kube_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: &'static str,
}

/// The handles the Kubernetes watch updates.
#[derive(Debug, Clone, Default)]
pub struct KubeMetrics {
    healthy: Gauge,
    restarts: Family<ReasonLabels, Counter>,
    last_event: Gauge<f64, std::sync::atomic::AtomicU64>,
    requests: Family<VerbLabels, Counter>,
}

impl KubeMetrics {
    /// The watch is (un)healthy.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.set(i64::from(healthy));
    }

    /// Count a restart.
    pub fn restarted(&self, reason: &'static str) {
        self.restarts.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Something arrived from the API (list, event, bookmark).
    pub fn event_seen(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.last_event.set(now);
    }

    /// Count a request to the API.
    pub fn request(&self, verb: &'static str) {
        self.requests.get_or_create(&VerbLabels { verb }).inc();
    }
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
    probe: ProbeMetrics,
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
        registry.register_collector(Box::new(process::ProcessCollector));
        let probe = ProbeMetrics {
            probes: Family::default(),
            duration: Family::new_with_constructor(probe_histogram),
        };
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
        for reason in crate::kube::RESTART_REASONS {
            let _ = m.restarts.get_or_create(&ReasonLabels { reason });
        }
        for verb in ["list", "watch"] {
            let _ = m.requests.get_or_create(&VerbLabels { verb });
        }
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
