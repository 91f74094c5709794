//! The counters sources update, as plain handles in the vocabulary: the monitor, the prober and
//! the Kubernetes watch count into these, and `metrics` registers and encodes them. Sources
//! therefore never import the exporter, and every label value comes from a label enum (targets
//! are bounded by configuration).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use super::{
    Direction, Observation, PodReason, ProbeResult, Protocol, RestartReason, ResyncCause,
    ScopeIgnored,
};
use crate::util::clock::unix_seconds;

/// `cause` label of the re-sync counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CauseLabels {
    cause: &'static str,
}

/// Labels of `podnet_probes_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProbeLabels {
    target: String,
    protocol: &'static str,
    direction: &'static str,
    result: &'static str,
}

/// Labels of `podnet_probe_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProbeTargetLabels {
    target: String,
    protocol: &'static str,
    direction: &'static str,
}

/// Labels of `podnet_kube_watch_restarts_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    reason: &'static str,
}

/// Labels of `podnet_kube_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct VerbLabels {
    verb: &'static str,
}

pub(crate) type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn probe_histogram() -> Histogram {
    // 50 µs to ~1.6 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

/// The handles the prober updates.
#[derive(Debug, Clone)]
pub struct ProbeMetrics {
    pub(crate) probes: Family<ProbeLabels, Counter>,
    pub(crate) duration: HistogramFamily<ProbeTargetLabels>,
    pub(crate) scope_ignored: Family<ReasonLabels, Counter>,
}

impl Default for ProbeMetrics {
    fn default() -> Self {
        let scope_ignored = Family::<ReasonLabels, Counter>::default();
        for r in ScopeIgnored::ALL {
            let _ = scope_ignored.get_or_create(&ReasonLabels { reason: r.as_str() });
        }
        ProbeMetrics {
            probes: Family::default(),
            duration: Family::new_with_constructor(probe_histogram),
            scope_ignored,
        }
    }
}

impl ProbeMetrics {
    /// Count a pod's probe scoping that was not understood and ignored.
    pub fn scope_ignored(&self, reason: ScopeIgnored) {
        self.scope_ignored
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Ignored scoping counted so far (for tests).
    pub fn scope_ignored_count(&self, reason: ScopeIgnored) -> u64 {
        self.scope_ignored
            .get(&ReasonLabels {
                reason: reason.as_str(),
            })
            .map_or(0, |c| c.get())
    }

    /// Count one probe to `target` and, if it was answered, its round-trip time.
    pub fn observe(
        &self,
        target: &str,
        protocol: Protocol,
        direction: Direction,
        obs: &Observation,
    ) {
        self.probes
            .get_or_create(&ProbeLabels {
                target: target.to_owned(),
                protocol: protocol.as_str(),
                direction: direction.as_str(),
                result: obs.result.as_str(),
            })
            .inc();
        if let Some(rtt) = obs.rtt {
            self.duration
                .get_or_create(&ProbeTargetLabels {
                    target: target.to_owned(),
                    protocol: protocol.as_str(),
                    direction: direction.as_str(),
                })
                .observe(rtt.as_secs_f64());
        }
    }

    /// Create every possible series of one target at zero (no `refused` for ICMP), so their
    /// number never changes at run time and `rate()` works from the first scrape.
    pub fn register_target(&self, target: &str, protocol: Protocol, direction: Direction) {
        for &result in ProbeResult::ALL.iter().filter(|r| r.possible_for(protocol)) {
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
        for protocol in Protocol::ALL {
            for direction in Direction::ALL {
                let labels = ProbeLabels {
                    target: target.to_owned(),
                    protocol: protocol.as_str(),
                    direction: direction.as_str(),
                    result: result.as_str(),
                };
                total += self.probes.get(&labels).map_or(0, |c| c.get());
            }
        }
        total
    }
}

/// The handles the Kubernetes watch updates.
#[derive(Debug, Clone)]
pub struct KubeMetrics {
    pub(crate) healthy: Gauge,
    pub(crate) restarts: Family<ReasonLabels, Counter>,
    pub(crate) last_event: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub(crate) requests: Family<VerbLabels, Counter>,
}

impl Default for KubeMetrics {
    /// Every restart reason and verb present at zero.
    fn default() -> Self {
        let m = KubeMetrics {
            healthy: Gauge::default(),
            restarts: Family::default(),
            last_event: Gauge::default(),
            requests: Family::default(),
        };
        for reason in RestartReason::ALL {
            let _ = m.restarts.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        for verb in Self::VERBS {
            let _ = m.requests.get_or_create(&VerbLabels { verb });
        }
        m
    }
}

impl KubeMetrics {
    /// The `verb` label values.
    pub const VERBS: [&'static str; 2] = ["list", "watch"];

    /// The watch is (un)healthy.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.set(i64::from(healthy));
    }

    /// Count a restart.
    pub fn restarted(&self, reason: RestartReason) {
        self.restarts
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Restarts counted so far for one reason (for tests).
    pub fn restart_count(&self, reason: RestartReason) -> u64 {
        self.restarts
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .get()
    }

    /// The healthy gauge (for tests).
    pub fn is_healthy(&self) -> bool {
        self.healthy.get() == 1
    }

    /// Something arrived from the API (list, event, bookmark).
    pub fn event_seen(&self) {
        self.last_event
            .set(unix_seconds(std::time::SystemTime::now()));
    }

    /// Count a request to the API; `verb` is one of [`KubeMetrics::VERBS`].
    pub fn request(&self, verb: &'static str) {
        self.requests.get_or_create(&VerbLabels { verb }).inc();
    }

    /// Requests counted so far for one verb (for tests).
    pub fn request_count(&self, verb: &'static str) -> u64 {
        self.requests.get_or_create(&VerbLabels { verb }).get()
    }
}

/// The handles the monitor updates.
#[derive(Debug, Clone)]
pub struct MonitorMetrics {
    pub(crate) resyncs: Family<CauseLabels, Counter>,
    pub(crate) resync_duration: Histogram,
    pub(crate) resync_errors: Counter,
    pub(crate) events: Counter,
    pub(crate) log_suppressed: Counter,
    pub(crate) problems_raised: Family<ReasonLabels, Counter>,
    pub(crate) routes_removed: Counter,
}

impl Default for MonitorMetrics {
    /// Every cause present at zero, so `rate()` works from the first scrape.
    fn default() -> Self {
        let m = MonitorMetrics {
            resyncs: Family::default(),
            resync_duration: Histogram::new(exponential_buckets(0.0005, 4.0, 8)),
            resync_errors: Counter::default(),
            events: Counter::default(),
            log_suppressed: Counter::default(),
            problems_raised: Family::default(),
            routes_removed: Counter::default(),
        };
        for cause in ResyncCause::ALL {
            let _ = m.resyncs.get_or_create(&CauseLabels {
                cause: cause.as_str(),
            });
        }
        for reason in PodReason::ALL {
            let _ = m.problems_raised.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        m
    }
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

    /// Count log lines left out by the rate limit.
    pub fn log_lines_suppressed(&self, n: u64) {
        self.log_suppressed.inc_by(n);
    }

    /// Log lines suppressed so far (for tests).
    pub fn suppressed_count(&self) -> u64 {
        self.log_suppressed.get()
    }

    /// Count a pod problem that appeared (a pod IP gained `reason`).
    pub fn problem_raised(&self, reason: PodReason) {
        self.problems_raised
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Pod problems raised so far for one reason (for tests).
    pub fn problems_raised(&self, reason: PodReason) -> u64 {
        self.problems_raised
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .get()
    }

    /// Completed re-syncs so far for one cause (for tests and logs).
    pub fn resync_count(&self, cause: ResyncCause) -> u64 {
        self.resyncs
            .get_or_create(&CauseLabels {
                cause: cause.as_str(),
            })
            .get()
    }

    /// Count pods whose host route was removed while the pod and its interface lived.
    pub fn pod_routes_removed(&self, n: u64) {
        self.routes_removed.inc_by(n);
    }

    /// Such removals so far (for tests).
    pub fn pod_routes_removed_count(&self) -> u64 {
        self.routes_removed.get()
    }
}
